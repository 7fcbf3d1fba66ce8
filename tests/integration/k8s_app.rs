//! The `karpenter` and `app` stages on a real `kube::Client` over the in-memory API server,
//! with the recording stand-in for helm: up creates what the stage owns, a second up writes
//! nothing (no helm install, no API write), down removes it, a second down is a no-op.
//!
//! What the fake cannot do is played by the test, each time said where: the chart's CRDs are
//! seeded Established (the Karpenter chart installs them), and a small loop stands in for the
//! Deployment controller, reporting the app's Deployments Available once it sees them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube_fake_client::{interceptor, ClientBuilder};
use meshstack::config::Stack;
use meshstack::engine::run::{Direction, Outcome, StageResult};
use meshstack::k8s::apply::{self, ObjectRef, StaticResolver};
use meshstack::stages::kubernetes::objects;
use meshstack::stages::{app, karpenter, Context, Stage};
use serde_json::json;

use crate::support::k8s::{
    custom_resource, fake_cluster_with, helm_calls, is_read, outcome, placement, run_stage,
    stage_context,
};

custom_resource!(
    NodePool,
    "karpenter.sh",
    "v1",
    "NodePool",
    "nodepools",
    Cluster
);
custom_resource!(
    EC2NodeClass,
    "karpenter.k8s.aws",
    "v1",
    "EC2NodeClass",
    "ec2nodeclasses",
    Cluster
);
custom_resource!(
    Gateway,
    "networking.istio.io",
    "v1beta1",
    "Gateway",
    "gateways",
    Namespaced
);
custom_resource!(
    VirtualService,
    "networking.istio.io",
    "v1beta1",
    "VirtualService",
    "virtualservices",
    Namespaced
);

/// The node role of the default stack in the account a context without AWS reports.
const NODE_ROLE: &str = "arn:aws:iam::000000000000:role/meshstack-demo-node";
/// Someone else's mapping in aws-auth, which must survive every step.
const ADMIN_ROLE: &str = "- rolearn: arn:aws:iam::000000000000:role/ops-admin\n  username: ops-admin\n  groups:\n    - system:masters\n";
const MAP_USERS: &str = "- userarn: arn:aws:iam::000000000000:user/alice\n  username: alice\n  groups:\n    - system:masters\n";

/// Every write request the fake receives (not status updates, which stand in for controllers),
/// as `verb namespace/name @ <helm calls so far>`: the count places each write among the helm
/// calls, to check the order of a teardown.
#[derive(Clone)]
struct Writes {
    log: Arc<Mutex<Vec<String>>>,
    helm_dir: std::path::PathBuf,
}

impl Writes {
    fn new(helm_dir: &std::path::Path) -> Self {
        Writes {
            log: Arc::default(),
            helm_dir: helm_dir.to_path_buf(),
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn interceptors(&self) -> interceptor::Funcs {
        let record = |w: &Writes| {
            let w = w.clone();
            move |verb: &str, namespace: &str, name: &str| {
                let at = helm_calls(&w.helm_dir).len();
                w.log
                    .lock()
                    .unwrap()
                    .push(format!("{verb} {namespace}/{name} @ {at}"));
            }
        };
        let (create, replace, update, patch, delete) = (
            record(self),
            record(self),
            record(self),
            record(self),
            record(self),
        );
        let name_of =
            |v: &serde_json::Value| v["metadata"]["name"].as_str().unwrap_or("").to_string();
        interceptor::Funcs::new()
            .create(move |cx| {
                create("create", cx.namespace, &name_of(cx.object));
                Ok(None)
            })
            .replace(move |cx| {
                replace("replace", cx.namespace, cx.name);
                Ok(None)
            })
            .update(move |cx| {
                if !cx.is_status {
                    update("update", cx.namespace, &name_of(cx.object));
                }
                Ok(None)
            })
            .patch(move |cx| {
                patch("patch", cx.namespace, cx.name);
                Ok(None)
            })
            .delete(move |cx| {
                delete("delete", cx.namespace, cx.name);
                Ok(None)
            })
    }
}

/// The writes in `log` other than deletes. A second `down` asks to delete each object once
/// more (the apply layer does not read first; "not found" means done), which changes nothing.
fn not_deletes(log: Vec<String>) -> Vec<String> {
    log.into_iter()
        .filter(|l| !l.starts_with("delete "))
        .collect()
}

/// The in-memory API server, knowing the Karpenter (cluster-scoped) and Istio kinds.
async fn cluster(writes: &Writes) -> kube::Client {
    fake_cluster_with(
        ClientBuilder::new()
            .with_interceptor_funcs(writes.interceptors())
            .with_resource::<NodePool>()
            .with_resource::<EC2NodeClass>()
            .with_resource::<Gateway>()
            .with_resource::<VirtualService>(),
        &[
            "karpenter.sh/v1/nodepools",
            "karpenter.k8s.aws/v1/ec2nodeclasses",
        ],
    )
    .await
}

fn resolver() -> StaticResolver {
    StaticResolver::builtin()
        .with("karpenter.sh/v1", "NodePool", "nodepools", false)
        .with(
            "karpenter.k8s.aws/v1",
            "EC2NodeClass",
            "ec2nodeclasses",
            false,
        )
        .with("networking.istio.io/v1beta1", "Gateway", "gateways", true)
        .with(
            "networking.istio.io/v1beta1",
            "VirtualService",
            "virtualservices",
            true,
        )
}

/// A stage context for `stack` over `client` and the stand-in helm in `dir`, with waits that
/// give up after `deadline`.
fn context(
    stack: Stack,
    client: kube::Client,
    dir: &std::path::Path,
    deadline: Duration,
) -> Context {
    stage_context(stack, client, resolver(), dir, deadline)
}

fn failure(result: StageResult) -> String {
    match result {
        StageResult::Failed { error, .. } => error,
        other => panic!("expected the stage to fail, got {other:?}"),
    }
}

/// What the Karpenter chart installs before its custom resources can be applied: the CRDs,
/// Established (the fake has no API server machinery to establish them).
async fn seed_established_crds(client: &kube::Client, crds: &[(&str, &str, &str)]) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (group, plural, kind) in crds {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {"group": group, "scope": "Cluster",
                     "names": {"kind": kind, "plural": plural},
                     "versions": [{"name": "v1", "served": true, "storage": true}]}
        }))
        .unwrap();
        api.create(&PostParams::default(), &crd).await.unwrap();
        let status = json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}});
        api.patch_status(
            &format!("{plural}.{group}"),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    }
}

const KARPENTER_CRDS: [(&str, &str, &str); 2] = [
    ("karpenter.sh", "nodepools", "NodePool"),
    ("karpenter.k8s.aws", "ec2nodeclasses", "EC2NodeClass"),
];

/// aws-auth as EKS leaves it, with `map_roles`.
async fn seed_aws_auth(client: &kube::Client, map_roles: &str) {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "aws-auth", "namespace": "kube-system"},
        "data": {"mapRoles": map_roles, "mapUsers": MAP_USERS}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

async fn aws_auth(client: &kube::Client) -> ConfigMap {
    Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .get("aws-auth")
        .await
        .unwrap()
}

/// The role ARNs `mapRoles` maps, in order.
fn mapped_roles(cm: &ConfigMap) -> Vec<String> {
    let roles: Vec<serde_yaml::Value> =
        serde_yaml::from_str(&cm.data.as_ref().unwrap()["mapRoles"]).unwrap();
    roles
        .iter()
        .map(|r| r["rolearn"].as_str().unwrap().to_string())
        .collect()
}

fn annotation(cm: &ConfigMap) -> Option<&str> {
    cm.metadata
        .annotations
        .as_ref()?
        .get(karpenter::MAPPED_ROLES_ANNOTATION)
        .map(String::as_str)
}

/// The stage's rendered objects with the resourceVersion each has in the cluster (`None`:
/// absent).
async fn versions(
    cx: &Context,
    client: &kube::Client,
    paths: &[&str],
) -> Vec<(String, Option<String>)> {
    let files = cx.rendered().await.unwrap();
    let mut out = Vec::new();
    for obj in objects(&files, paths).unwrap() {
        let r = ObjectRef::of(&obj);
        let live = apply::get_opt(client, &resolver(), &r).await.unwrap();
        out.push((
            r.to_string(),
            live.and_then(|l| l.metadata.resource_version),
        ));
    }
    out
}

fn cluster_scoped(client: &kube::Client, plural: &str) -> Api<DynamicObject> {
    let (api_version, kind) = match plural {
        "nodepools" => ("karpenter.sh/v1", "NodePool"),
        _ => ("karpenter.k8s.aws/v1", "EC2NodeClass"),
    };
    let (group, version) = api_version.split_once('/').unwrap();
    let ar = kube::api::ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::all_with(client.clone(), &ar)
}

#[tokio::test]
async fn karpenter_maps_its_node_role_installs_the_chart_and_the_pool_and_undoes_it_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let writes = Writes::new(dir.path());
    let client = cluster(&writes).await;
    seed_established_crds(&client, &KARPENTER_CRDS).await;
    seed_aws_auth(&client, ADMIN_ROLE).await;
    let cx = context(
        Stack::embedded_default(),
        client.clone(),
        dir.path(),
        Duration::from_secs(5),
    );
    let stage = karpenter::Karpenter;
    writes.take();

    // plan: the mapping, the release and the two objects; read-only.
    let plan: Vec<String> = stage
        .plan_up(&cx)
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        plan,
        [
            format!("~ aws-auth kube-system/aws-auth (map node role {NODE_ROLE})"),
            "+ helm-release karpenter/karpenter-crd (karpenter-crd-1.14.1)".into(),
            "+ helm-release karpenter/karpenter (karpenter-1.14.1)".into(),
            "+ k8s-object EC2NodeClass ecommerce".into(),
            "+ k8s-object NodePool ecommerce".into(),
        ]
    );
    assert_eq!(writes.take(), Vec::<String>::new(), "plan wrote");

    // up: the node role mapped next to the existing mapping, one pinned install, the pool.
    let first = run_stage(&cx, &stage, Direction::Forward).await;
    assert!(matches!(outcome(&first), Outcome::Changed(_)), "{first:?}");

    let cm = aws_auth(&client).await;
    assert_eq!(
        mapped_roles(&cm),
        ["arn:aws:iam::000000000000:role/ops-admin", NODE_ROLE]
    );
    let roles: Vec<serde_yaml::Value> =
        serde_yaml::from_str(&cm.data.as_ref().unwrap()["mapRoles"]).unwrap();
    assert_eq!(roles[1]["username"], "system:node:{{EC2PrivateDNSName}}");
    assert_eq!(
        roles[1]["groups"],
        serde_yaml::from_str::<serde_yaml::Value>("[system:bootstrappers, system:nodes]").unwrap()
    );
    assert_eq!(roles[0]["groups"][0], "system:masters");
    assert_eq!(cm.data.as_ref().unwrap()["mapUsers"], MAP_USERS);
    assert_eq!(annotation(&cm), Some(NODE_ROLE));

    let recorded = helm_calls(dir.path());
    // Public ECR is pulled with an empty registry config of its own (a stale login of the
    // user's cannot break it), in a private folder removed after the call.
    let pulls: Vec<&Vec<String>> = recorded.iter().filter(|c| c[0] == "pull").collect();
    assert_eq!(pulls.len(), 2, "{recorded:?}");
    for pull in &pulls {
        let at = pull
            .iter()
            .position(|a| a == "--registry-config")
            .unwrap_or_else(|| panic!("{pull:?}"));
        let config = &pull[at + 1];
        assert!(config.ends_with("/registry.json"), "{config}");
        assert!(
            !std::path::Path::new(config).exists(),
            "{config} left behind"
        );
    }
    let calls = crate::support::k8s::installs_by_repository(&recorded);
    let installs: Vec<&Vec<String>> = calls.iter().filter(|c| c[0] == "upgrade").collect();
    assert_eq!(installs.len(), 2, "{calls:?}");
    // The CRDs' chart first, then the controller's without its `crds/`.
    assert_eq!(
        installs[0][2..6],
        [
            "karpenter-crd",
            "oci://public.ecr.aws/karpenter/karpenter-crd",
            "--version",
            "1.14.1"
        ]
    );
    let mut args = installs[1].clone();
    assert!(
        args[10].ends_with("karpenter-karpenter.yaml"),
        "values from a private file: {args:?}"
    );
    args[10] = "VALUES".into();
    assert_eq!(
        args,
        [
            "upgrade",
            "--install",
            "karpenter",
            "oci://public.ecr.aws/karpenter/karpenter",
            "--version",
            "1.14.1",
            "--namespace",
            "karpenter",
            "--create-namespace",
            "--values",
            "VALUES",
            "--wait",
            "--timeout",
            "600s",
            "--skip-crds"
        ]
    );
    // The CRDs the test seeded stand for an older meshstack's, from the controller chart's
    // `crds/`: handed to the karpenter-crd release before it was installed.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["nodepools.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws"] {
        let crd = crds.get(name).await.unwrap();
        let annotations = crd.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations
                .get("meta.helm.sh/release-name")
                .map(String::as_str),
            Some("karpenter-crd"),
            "{name}"
        );
        assert_eq!(
            crd.metadata.labels.unwrap_or_default()["app.kubernetes.io/managed-by"],
            "Helm"
        );
    }

    let pools = cluster_scoped(&client, "nodepools");
    let classes = cluster_scoped(&client, "ec2nodeclasses");
    let pool = pools.get("ecommerce").await.unwrap();
    assert_eq!(
        pool.metadata.namespace, None,
        "a NodePool is cluster-scoped"
    );
    let managers: Vec<_> = pool
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"meshstack".to_string()), "{managers:?}");
    let template = &pool.data["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["managedBy"], "karpenter");
    assert_eq!(template["metadata"]["labels"]["billing-team"], "ecommerce");
    assert_eq!(template["spec"]["nodeClassRef"]["name"], "ecommerce");
    assert_eq!(
        pool.data["spec"]["disruption"]["consolidationPolicy"],
        "WhenEmptyOrUnderutilized"
    );
    let class = classes.get("ecommerce").await.unwrap();
    assert_eq!(class.data["spec"]["role"], "meshstack-demo-node");
    assert_eq!(
        class.data["spec"]["subnetSelectorTerms"][0]["tags"]["karpenter.sh/discovery"],
        "meshstack-demo"
    );

    // Converged: the plan is empty.
    let plan = stage.plan_up(&cx).await.unwrap();
    assert!(plan.is_empty(), "{plan:?}");

    // up again: helm is only asked for the release's state; nothing is written.
    let paths = karpenter::manifests(cx.stack.karpenter_api())
        .unwrap()
        .paths;
    let before = versions(&cx, &client, paths).await;
    let auth_version = cm.metadata.resource_version.clone();
    let calls_before = helm_calls(dir.path()).len();
    writes.take();
    let second = run_stage(&cx, &stage, Direction::Forward).await;
    assert_eq!(outcome(&second), &Outcome::Unchanged, "{second:?}");
    let new_calls: Vec<Vec<String>> = helm_calls(dir.path())
        .into_iter()
        .skip(calls_before)
        .collect();
    assert!(
        !new_calls.is_empty() && new_calls.iter().all(|c| is_read(c)),
        "{new_calls:?}"
    );
    assert_eq!(writes.take(), Vec::<String>::new(), "a converged up wrote");
    assert_eq!(versions(&cx, &client, paths).await, before);
    assert_eq!(
        aws_auth(&client).await.metadata.resource_version,
        auth_version
    );

    // down: pool and class deleted while the chart (whose controller drains the nodes and
    // drops the finalizers) is still installed; then the chart; then only meshstack's entry.
    let down = run_stage(&cx, &stage, Direction::Reverse).await;
    assert!(matches!(outcome(&down), Outcome::Changed(_)), "{down:?}");
    assert!(pools.get_opt("ecommerce").await.unwrap().is_none());
    assert!(classes.get_opt("ecommerce").await.unwrap().is_none());
    let calls = helm_calls(dir.path());
    let uninstall = calls
        .iter()
        .position(|c| c[..2] == ["uninstall", "karpenter"])
        .expect("the chart is uninstalled");
    let log = writes.take();
    let at = |prefix: &str| -> usize {
        let line = log
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {log:?}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // `@ n`: n helm calls had been made; the uninstall is call number `uninstall + 1`.
    assert!(
        at("delete fake-cluster-scope/ecommerce") <= uninstall,
        "{log:?} {calls:?}"
    );
    assert!(
        at("replace kube-system/aws-auth") > uninstall,
        "{log:?} {calls:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.starts_with("delete")).count(),
        3,
        "NodePool, EC2NodeClass and the namespace meshstack made for the charts: {log:?}"
    );
    assert!(
        at("delete /karpenter") > uninstall,
        "the namespace goes after its last release: {log:?} {calls:?}"
    );
    let cm = aws_auth(&client).await;
    assert_eq!(
        mapped_roles(&cm),
        ["arn:aws:iam::000000000000:role/ops-admin"]
    );
    assert_eq!(cm.data.as_ref().unwrap()["mapUsers"], MAP_USERS);
    assert_eq!(annotation(&cm), None);

    // down again: nothing to do.
    let uninstalls = calls.iter().filter(|c| c[0] == "uninstall").count();
    let auth_version = cm.metadata.resource_version.clone();
    let again = run_stage(&cx, &stage, Direction::Reverse).await;
    assert_eq!(outcome(&again), &Outcome::Unchanged, "{again:?}");
    assert_eq!(not_deletes(writes.take()), Vec::<String>::new());
    assert_eq!(
        aws_auth(&client).await.metadata.resource_version,
        auth_version
    );
    assert_eq!(
        helm_calls(dir.path())
            .iter()
            .filter(|c| c[0] == "uninstall")
            .count(),
        uninstalls
    );
}

#[tokio::test]
async fn karpenter_leaves_a_node_role_mapping_it_did_not_make() {
    // EKS maps the managed node group's role, which Karpenter's nodes share.
    let eks_entry = format!(
        "- rolearn: {NODE_ROLE}\n  username: system:node:{{{{EC2PrivateDNSName}}}}\n  groups:\n    - system:bootstrappers\n    - system:nodes\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let writes = Writes::new(dir.path());
    let client = cluster(&writes).await;
    seed_established_crds(&client, &KARPENTER_CRDS).await;
    seed_aws_auth(&client, &eks_entry).await;
    let seeded = aws_auth(&client).await;
    let cx = context(
        Stack::embedded_default(),
        client.clone(),
        dir.path(),
        Duration::from_secs(5),
    );

    let up = run_stage(&cx, &karpenter::Karpenter, Direction::Forward).await;
    assert!(matches!(outcome(&up), Outcome::Changed(_)), "{up:?}");
    let down = run_stage(&cx, &karpenter::Karpenter, Direction::Reverse).await;
    assert!(matches!(outcome(&down), Outcome::Changed(_)), "{down:?}");

    let after = aws_auth(&client).await;
    assert_eq!(
        after.metadata.resource_version,
        seeded.metadata.resource_version,
        "aws-auth was written: {:?}",
        writes.take()
    );
    assert_eq!(after.data, seeded.data);
}

/// Deleting the NodePool does not remove its nodes at once: Karpenter drains and terminates
/// them, which only its running controller can do. `down` waits for them before it uninstalls
/// the chart. A task stands in for Karpenter, deleting the node after a while.
#[tokio::test]
async fn karpenter_down_waits_for_its_nodes_before_uninstalling_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let writes = Writes::new(dir.path());
    let client = cluster(&writes).await;
    seed_established_crds(&client, &KARPENTER_CRDS).await;
    seed_aws_auth(&client, ADMIN_ROLE).await;
    let cx = context(
        Stack::embedded_default(),
        client.clone(),
        dir.path(),
        Duration::from_secs(5),
    );
    let up = run_stage(&cx, &karpenter::Karpenter, Direction::Forward).await;
    assert!(matches!(outcome(&up), Outcome::Changed(_)), "{up:?}");
    placement::node(&client, "ip-10-0-3-7", "us-east-1a").await;
    writes.take();

    let nodes: Api<Node> = Api::all(client.clone());
    let karpenter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        nodes
            .delete("ip-10-0-3-7", &Default::default())
            .await
            .unwrap();
    });
    let down = run_stage(&cx, &karpenter::Karpenter, Direction::Reverse).await;
    karpenter.await.unwrap();
    assert!(matches!(outcome(&down), Outcome::Changed(_)), "{down:?}");

    // The node went (the stand-in's delete) before the chart was uninstalled.
    let log = writes.take();
    let node_gone = log
        .iter()
        .position(|l| l.starts_with("delete /ip-10-0-3-7"))
        .unwrap_or_else(|| panic!("{log:?}"));
    let uninstalls_before: usize = log[node_gone]
        .rsplit(" @ ")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let calls = helm_calls(dir.path());
    let uninstall = calls
        .iter()
        .position(|c| c.first().map(String::as_str) == Some("uninstall"))
        .unwrap_or_else(|| panic!("{calls:?}"));
    assert!(
        uninstall >= uninstalls_before,
        "uninstalled (helm call {uninstall}) before the node was gone (after helm call {uninstalls_before}): {log:?}"
    );
}

/// Stands in for the Deployment controller: every Deployment in `ecommerce` whose current
/// generation it has not reported on gets a status — rolled out and Available, or, for the
/// names in `stuck`, rolled out with no replica available (pods that never get a node).
/// It reports a generation only `rollout` after first seeing it (pods take time to start), so
/// a stage that did not wait would return before its Deployments are Available. Like the real
/// controller it writes only when the generation moved, so a converged `up` sees no status
/// writes either.
fn deployment_controller(
    client: kube::Client,
    stuck: &'static [&'static str],
    rollout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Deployment> = Api::namespaced(client, app::NAMESPACE);
        let mut seen = std::collections::HashMap::new();
        loop {
            for d in api
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let name = d.metadata.name.clone().unwrap_or_default();
                let generation = d.metadata.generation.unwrap_or(0);
                if d.status.as_ref().and_then(|s| s.observed_generation) == Some(generation) {
                    continue;
                }
                let first_seen = *seen
                    .entry((name.clone(), generation))
                    .or_insert_with(std::time::Instant::now);
                if first_seen.elapsed() < rollout {
                    continue;
                }
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let (available, condition) = if stuck.contains(&name.as_str()) {
                    (
                        0,
                        json!({"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}),
                    )
                } else {
                    (
                        want,
                        json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}),
                    )
                };
                let status = json!({"status": {
                    "observedGeneration": generation, "replicas": want, "updatedReplicas": want,
                    "readyReplicas": available, "availableReplicas": available,
                    "conditions": [condition]}});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

#[tokio::test]
async fn app_applies_the_ecommerce_manifests_waits_for_its_deployments_and_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let writes = Writes::new(dir.path());
    let client = cluster(&writes).await;
    let controller = deployment_controller(client.clone(), &[], Duration::from_millis(200));
    let cx = context(
        Stack::embedded_default(),
        client.clone(),
        dir.path(),
        Duration::from_secs(10),
    );
    let stage = app::App;
    let plan = stage.plan_up(&cx).await.unwrap();
    assert_eq!(plan.len(), 16, "{plan:?}");
    assert!(
        plan.iter()
            .all(|c| c.to_string().starts_with("+ k8s-object ")),
        "{plan:?}"
    );

    // up: every object applied, and up returns only once the five Deployments are Available.
    let first = run_stage(&cx, &stage, Direction::Forward).await;
    assert!(matches!(outcome(&first), Outcome::Changed(_)), "{first:?}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), app::NAMESPACE);
    for name in [
        "graphql",
        "orders-1",
        "orders-2",
        "products-1",
        "products-2",
    ] {
        let d = deployments.get(name).await.unwrap();
        let available = d.status.and_then(|s| s.available_replicas);
        assert_eq!(available, Some(1), "{name}");
    }
    let ns = apply::get_opt(
        &client,
        &resolver(),
        &ObjectRef {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            namespace: None,
            name: "ecommerce".into(),
        },
    )
    .await
    .unwrap()
    .expect("the namespace");
    assert_eq!(ns.metadata.labels.unwrap()["istio-injection"], "enabled");
    let gateways: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        app::NAMESPACE,
        &kube::api::ApiResource::erase::<Gateway>(&()),
    );
    let gateway = gateways.get("ecommerce-gateway").await.unwrap();
    assert_eq!(gateway.data["spec"]["selector"]["istio"], "ingressgateway");
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        app::NAMESPACE,
        &kube::api::ApiResource::erase::<VirtualService>(&()),
    );
    let mut names: Vec<String> = routes
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.metadata.name.unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "graphql-virtualservice",
            "orders-virtualservice",
            "products-virtualservice"
        ]
    );
    let products = routes.get("products-virtualservice").await.unwrap();
    assert_eq!(products.data["spec"]["gateways"][0], "ecommerce-gateway");
    let before = versions(&cx, &client, &app::MANIFESTS).await;
    assert!(before.iter().all(|(_, v)| v.is_some()), "{before:?}");
    assert_eq!(before.len(), 16, "{before:?}");

    let plan = stage.plan_up(&cx).await.unwrap();
    assert!(plan.is_empty(), "converged: {plan:?}");

    // up again: nothing written, no helm at all.
    writes.take();
    let second = run_stage(&cx, &stage, Direction::Forward).await;
    assert_eq!(outcome(&second), &Outcome::Unchanged, "{second:?}");
    assert_eq!(writes.take(), Vec::<String>::new(), "a converged up wrote");
    assert_eq!(versions(&cx, &client, &app::MANIFESTS).await, before);
    assert_eq!(helm_calls(dir.path()), Vec::<Vec<String>>::new());

    // down: all gone, the Namespace last.
    let down = run_stage(&cx, &stage, Direction::Reverse).await;
    assert!(matches!(outcome(&down), Outcome::Changed(_)), "{down:?}");
    let after = versions(&cx, &client, &app::MANIFESTS).await;
    assert!(
        after.iter().all(|(_, v)| v.is_none()),
        "left behind: {after:?}"
    );
    let deletes: Vec<String> = writes
        .take()
        .into_iter()
        .filter(|l| l.starts_with("delete"))
        .collect();
    assert_eq!(deletes.len(), 16, "{deletes:?}");
    assert!(
        deletes.last().unwrap().starts_with("delete /ecommerce "),
        "the Namespace goes last: {deletes:?}"
    );

    let again = run_stage(&cx, &stage, Direction::Reverse).await;
    assert_eq!(outcome(&again), &Outcome::Unchanged, "{again:?}");
    assert_eq!(not_deletes(writes.take()), Vec::<String>::new());
    controller.abort();
}

#[tokio::test]
async fn app_up_fails_naming_a_deployment_that_never_becomes_available() {
    let dir = tempfile::tempdir().unwrap();
    let writes = Writes::new(dir.path());
    let client = cluster(&writes).await;
    let controller = deployment_controller(client.clone(), &["orders-2"], Duration::ZERO);
    let cx = context(
        Stack::embedded_default(),
        client.clone(),
        dir.path(),
        Duration::from_millis(300),
    );

    let error = failure(run_stage(&cx, &app::App, Direction::Forward).await);
    assert!(error.contains("Deployment ecommerce/orders-2"), "{error}");
    assert!(error.contains("0 of 1 replicas available"), "{error}");
    for fine in ["graphql", "orders-1", "products-1", "products-2"] {
        assert!(!error.contains(&format!("ecommerce/{fine}")), "{error}");
    }
    controller.abort();
}
