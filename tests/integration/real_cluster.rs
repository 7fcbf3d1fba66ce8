//! The Kubernetes half on a real control plane (`tests/support/local_cluster.rs`): a real
//! kube-apiserver, controller manager and scheduler with kwok nodes in three zones, the real
//! pinned helm (3 and 4), the real charts of the pinned chart folder (`MESHSTACK_TEST_CHARTS`,
//! else `../shared/charts`; see `tests/support/k8s.rs::pinned_charts`) served as a chart
//! repository (`MESHSTACK_CHART_MIRROR`), and meshstack's EKS token checked by the API server against the
//! test's moto, as EKS checks it. AWS is moto; the cluster meshstack creates there is the one
//! whose name the token carries, and `MESHSTACK_KUBE_API` points the binary at this API server.
//!
//! What the stand-ins do not model is in `testenv/README.md`; the ones these tests meet: pods
//! run no containers (kwok marks them Running and Ready), an admission stand-in plays istiod's
//! webhooks, a controller gives LoadBalancer Services an address, and a stand-in does what the
//! Kiali operator does for meshstack (a Deployment per Kiali CR, its finalizer).

use std::collections::BTreeMap;
use std::process::Output;

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{ApiResource, Discovery};

use crate::support::local_cluster::LocalCluster;
use crate::support::{describe, Meshstack, Moto};

struct Env {
    /// The AWS half's moto; `None` for a stack on an existing cluster, which uses no AWS.
    moto: Option<Moto>,
    cluster: LocalCluster,
    ms: Meshstack,
    stack: String,
    helm_major: u8,
}

impl Env {
    /// The whole graph: moto for AWS, this control plane as the EKS cluster's API.
    fn start(name: &str, helm_major: u8) -> Env {
        let moto = Moto::start();
        let cluster = LocalCluster::start_for_eks(name, &moto.endpoint(), helm_major);
        let mut ms = Meshstack::with_moto(&moto);
        for key in ["MESHSTACK_KUBE_API", "MESHSTACK_KUBE_CA_FILE"] {
            ms.extra_env
                .push((key.to_string(), cluster.var(key).to_string()));
        }
        let yaml = format!("name: {name}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n");
        Env::with(Some(moto), cluster, ms, &yaml, helm_major)
    }

    /// A stack on this control plane as an existing cluster (`cluster.existing`): no AWS at
    /// all (no credentials, no endpoint), reached through a kubeconfig of the user's whose
    /// current context is elsewhere and whose user is an exec plugin ([`exec_kubeconfig`]).
    fn existing(name: &str, helm_major: u8) -> Env {
        let cluster = LocalCluster::start(helm_major);
        let ms = Meshstack::new(None);
        let kubeconfig = exec_kubeconfig(&cluster, ms.dir.path());
        let yaml = format!(
            "name: {name}\ncluster:\n  existing:\n    kubeconfig: {}\n    context: rehearsal\n",
            kubeconfig.display()
        );
        Env::with(None, cluster, ms, &yaml, helm_major)
    }

    fn with(
        moto: Option<Moto>,
        cluster: LocalCluster,
        mut ms: Meshstack,
        yaml: &str,
        helm_major: u8,
    ) -> Env {
        for key in [
            "PATH",
            "HELM_CONFIG_HOME",
            "HELM_CACHE_HOME",
            "HELM_DATA_HOME",
        ] {
            ms.extra_env
                .push((key.to_string(), cluster.var(key).to_string()));
        }
        // The pinned chart folder (MESHSTACK_TEST_CHARTS, else ../shared/charts), served
        // locally; without one (and with internet) the same versions come from the charts'
        // own repositories.
        match cluster.var_opt("MESHSTACK_CHART_MIRROR") {
            Some(mirror) => ms
                .extra_env
                .push(("MESHSTACK_CHART_MIRROR".into(), mirror.to_string())),
            None => eprintln!(
                "no pinned chart folder (MESHSTACK_TEST_CHARTS, or ../shared/charts beside the \
                 repository): charts come from their own repositories"
            ),
        }
        // meshstack's own waits (not helm's), scaled: a Kubernetes wait gives up after 30 s.
        ms.extra_env
            .push(("MESHSTACK_WAIT_SCALE".into(), "20".into()));
        let stack = ms.stack_file("stack.yaml", yaml).display().to_string();
        Env {
            moto,
            cluster,
            ms,
            stack,
            helm_major,
        }
    }

    fn run(&self, verb: &str, more: &[&str]) -> Output {
        let mut args: Vec<&str> = vec![verb, "--stack", &self.stack, "-o", "json"];
        args.extend_from_slice(more);
        self.ms.run(&args)
    }

    /// Whether meshstack's built-in pin of `chart` at `version` verifies what this run pulls:
    /// from the cluster's chart repository, the pinned chart folder's bytes
    /// ([`crate::support::k8s::builtin_pin_verified`]); without one, from upstream's own
    /// repositories, where only the pins of their published archives can match.
    fn builtin_pin_verified(&self, chart: &str, version: &str) -> bool {
        if self.cluster.var_opt("MESHSTACK_CHART_MIRROR").is_some() {
            return crate::support::k8s::builtin_pin_verified(chart, version);
        }
        let pin = meshstack::charts::known_digest(chart, version)
            .unwrap_or_else(|| panic!("meshstack pins no digest for {chart} {version}"));
        pin.provenance == meshstack::charts::Provenance::Published
    }

    fn ok(&self, verb: &str, more: &[&str]) -> Output {
        let out = self.run(verb, more);
        assert!(out.status.success(), "{verb}: {}", describe(&out));
        out
    }
}

/// `kind namespace/name` -> resourceVersion of every object the rendered manifests name.
async fn versions(env: &Env) -> BTreeMap<String, String> {
    let client = env.cluster.admin().await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut found = BTreeMap::new();
    for o in crate::support::rendered_manifests(&env.ms, &env.stack) {
        let types = o.types.clone().unwrap();
        let Some((ar, _)) =
            discovery.resolve_gvk(&kube::core::GroupVersionKind::try_from(&types).unwrap())
        else {
            continue; // a kind whose CRD this stack does not install (Karpenter's v1alpha5)
        };
        let ns = o.metadata.namespace.clone();
        let api: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let name = o.metadata.name.clone().unwrap();
        if let Some(live) = api.get_opt(&name).await.unwrap() {
            found.insert(
                format!("{} {}/{}", types.kind, ns.unwrap_or_default(), name),
                live.metadata.resource_version.unwrap_or_default(),
            );
        }
    }
    found
}

/// Whether any namespace in `names` still exists.
async fn namespaces_left(env: &Env, names: &[&str]) -> Vec<String> {
    let client = env.cluster.admin().await;
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let all = api.list(&ListParams::default()).await.unwrap();
    all.items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .filter(|n| names.contains(&n.as_str()))
        .collect()
}

/// The namespaces meshstack makes (through helm's `--create-namespace` or its manifests).
const NAMESPACES: [&str; 5] = [
    "ecommerce",
    "karpenter",
    "prometheus",
    "kiali-operator",
    "istio-system",
];

/// Issue 20, done-when: for each helm major, the stack goes up on the real control plane with
/// the real charts (`stages` stages, `release_count` releases); a second `up` makes no helm
/// install or upgrade (every release still at revision 1) and no API write (resourceVersions
/// unchanged; no AWS write either), `plan` and `status` are clean, and the same holds with the
/// journal deleted; `down` leaves no release and none of meshstack's namespaces; `up` again
/// works.
fn converges_and_tears_down(env: &Env, stages: usize, release_count: usize) {
    let helm = env.helm_major;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = std::time::Instant::now();
    let out = env.ok("up", &[]);
    let full = started.elapsed();
    if env.moto.is_some() {
        // The EKS token goes to the API MESHSTACK_KUBE_API names: said on every run.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!(
                "MESHSTACK_KUBE_API is set: this run sends the cluster's EKS token to {}",
                env.cluster.var("MESHSTACK_KUBE_API")
            )),
            "{}",
            describe(&out)
        );
    }
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["event"] == "summary")
        .unwrap();
    let results = summary["results"].as_array().unwrap();
    assert_eq!(results.len(), stages, "every stage: {summary}");
    assert!(
        results.iter().all(|r| r["status"] == "succeeded"),
        "{summary}"
    );
    let releases = env.cluster.releases();
    assert_eq!(releases.len(), release_count, "{releases:?}");
    for (name, (status, revision, _)) in &releases {
        assert_eq!(status, "deployed", "{name}: {releases:?}");
        assert_eq!(revision, "1", "{name}: {releases:?}");
    }
    // Each chart went in verified where its built-in pin is the served bytes, and with the
    // "installed unverified" warning where it is not (upstream's archive of a chart meshstack
    // pins as its own rebuild).
    let unverified: std::collections::BTreeSet<String> = releases
        .values()
        .map(|(_, _, chart)| chart.rsplit_once('-').unwrap())
        .filter(|(chart, version)| !env.builtin_pin_verified(chart, version))
        .map(|(chart, version)| format!("{chart} {version}"))
        .collect();
    assert_eq!(
        crate::support::k8s::unverified_warnings(&String::from_utf8_lossy(&out.stderr)),
        unverified,
        "{}",
        describe(&out)
    );
    let before = rt.block_on(versions(env));
    assert!(before.len() > 20, "{before:?}");

    // Converged: nothing written anywhere.
    let check_converged = |what: &str| {
        if let Some(moto) = &env.moto {
            moto.start_recording();
        }
        let mark = env.cluster.audit_mark();
        let started = std::time::Instant::now();
        env.ok("up", &[]);
        let took = started.elapsed();
        // What meshstack and helm asked of the API server (its audit log), by verb: reads only.
        let asked = env.cluster.requests_since(mark);
        let by = |product: &str| -> BTreeMap<String, usize> {
            asked
                .iter()
                .filter(|((p, _), _)| p.eq_ignore_ascii_case(product))
                .map(|((_, verb), n)| (verb.clone(), *n))
                .collect()
        };
        let (ours, helms) = (by("meshstack"), by("helm"));
        for (who, verbs) in [("meshstack", &ours), ("helm", &helms)] {
            let writes: Vec<&String> = verbs
                .keys()
                .filter(|v| !matches!(v.as_str(), "get" | "list" | "watch"))
                .collect();
            assert!(writes.is_empty(), "{what}: {who} wrote: {verbs:?}");
        }
        assert!(
            !ours.is_empty(),
            "{what}: no request of meshstack's in the audit log"
        );
        eprintln!(
            "{what} (helm {}): API requests by meshstack {ours:?}, by helm {helms:?}",
            env.helm_major
        );
        if let Some(moto) = &env.moto {
            assert_eq!(moto.recorded_writes(), Vec::<String>::new(), "{what}");
        }
        assert_eq!(env.cluster.releases(), releases, "{what}: helm changed");
        assert_eq!(
            rt.block_on(versions(env)),
            before,
            "{what}: objects changed"
        );
        let plan = env.ok("plan", &[]);
        let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
        assert_eq!(plan["summary"]["create"], 0, "{what}: {plan}");
        assert_eq!(plan["summary"]["update"], 0, "{what}: {plan}");
        let status = env.run("status", &[]);
        assert_eq!(
            status.status.code(),
            Some(0),
            "{what}: {}",
            describe(&status)
        );
        took
    };
    let converged = check_converged("a converged up");
    std::fs::remove_dir_all(env.ms.state_dir()).unwrap();
    check_converged("an up with the journal lost");

    let started = std::time::Instant::now();
    env.ok("down", &["--yes"]);
    let down = started.elapsed();
    assert_eq!(env.cluster.releases(), BTreeMap::new());
    // Namespaces terminate through their finalizers (the namespace controller runs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let left = rt.block_on(namespaces_left(env, &NAMESPACES));
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "namespaces still there: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    env.ok("up", &[]);
    eprintln!(
        "helm {helm}: full up {full:?}, converged up {converged:?}, down {down:?} \
         on the real control plane ({stages} stages)"
    );
}

#[test]
fn the_kubernetes_half_converges_and_tears_down_on_a_real_control_plane_with_helm_3() {
    converges_and_tears_down(&Env::start("real3", 3), meshstack::stages::all().len(), 7);
}

#[test]
fn the_kubernetes_half_converges_and_tears_down_on_a_real_control_plane_with_helm_4() {
    converges_and_tears_down(&Env::start("real4", 4), meshstack::stages::all().len(), 7);
}

/// A kubeconfig as a user's may be: two contexts, the current one for a cluster that does not
/// answer, and `rehearsal` for `cluster`, whose user is an exec plugin handing out the admin's
/// client certificate (as `aws eks get-token` hands out a token). meshstack and helm must
/// both use `rehearsal`, and both must run the plugin.
fn exec_kubeconfig(cluster: &LocalCluster, dir: &std::path::Path) -> std::path::PathBuf {
    use base64::Engine as _;
    let admin: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(cluster.dir.path().join("kubeconfig")).unwrap(),
    )
    .unwrap();
    let pem = |key: &str| {
        let b64 = admin["users"][0]["user"][key].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    let credential = serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {
            "clientCertificateData": pem("client-certificate-data"),
            "clientKeyData": pem("client-key-data"),
        },
    });
    let credential_file = dir.join("credential.json");
    std::fs::write(&credential_file, credential.to_string()).unwrap();
    let cluster_entry = &admin["clusters"][0]["cluster"];
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {
                "server": cluster_entry["server"].as_str().unwrap(),
                "certificate-authority-data":
                    cluster_entry["certificate-authority-data"].as_str().unwrap(),
            }},
            {"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}},
        ],
        "users": [{"name": "by-plugin", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "cat",
            "args": [credential_file.display().to_string()],
            "interactiveMode": "Never",
        }}}],
        "contexts": [
            {"name": "elsewhere", "context": {"cluster": "nowhere", "user": "by-plugin"}},
            {"name": "rehearsal", "context": {"cluster": "local", "user": "by-plugin"}},
        ],
        "current-context": "elsewhere",
    });
    let path = dir.join("user-kubeconfig");
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    path
}

/// Issue 20, for users: the Kubernetes half on an existing cluster, with no AWS at all —
/// `plan` says the AWS stages are off, and a node layout that cannot run the demo is refused
/// before any write; then up, converged (journal or not), down, up again, for each helm
/// major. `down` removes what meshstack installed and never the cluster (its nodes stay).
fn existing_cluster(helm_major: u8) {
    let env = Env::existing(&format!("rehearse{helm_major}"), helm_major);
    let plan = env.ok("plan", &[]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        plan["existing_cluster"]["stages_off"],
        serde_json::json!([
            "network",
            "nat",
            "iam",
            "cluster",
            "access",
            "nodegroup",
            "karpenter-infra",
            "karpenter"
        ]),
        "{plan}"
    );
    let zones: Vec<&str> = plan["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["name"].as_str().unwrap())
        .collect();
    assert_eq!(zones.len(), 3, "the nodes' zones: {plan}");
    assert_eq!(plan["account"], serde_json::Value::Null, "{plan}");
    // doctor checks the cluster (no AWS credentials asked for) and the server's version.
    let doctor = env.ms.run(&["doctor", "--stack", &env.stack, "-o", "json"]);
    assert!(doctor.status.success(), "{}", describe(&doctor));
    let doctor: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let cluster = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "cluster")
        .unwrap_or_else(|| panic!("no cluster check: {doctor}"));
    assert!(
        cluster["detail"]
            .as_str()
            .unwrap()
            .contains("Kubernetes 1.36"),
        "{doctor}"
    );

    // A zone without a platform node: refused before anything is installed.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relabel = |value: Option<&str>| {
        rt.block_on(async {
            use k8s_openapi::api::core::v1::Node;
            let nodes: Api<Node> = Api::all(env.cluster.admin().await);
            let list = nodes.list(&ListParams::default()).await.unwrap();
            let node = list
                .items
                .iter()
                .find(|n| {
                    let l = n.metadata.labels.clone().unwrap_or_default();
                    l.get("topology.kubernetes.io/zone").map(String::as_str) == Some(zones[2])
                        // Removing: a node that has it; restoring: the one without.
                        && l.contains_key("meshstack.io/pool") == value.is_none()
                })
                .map(|n| n.metadata.name.clone().unwrap())
                .unwrap();
            let patch = serde_json::json!({"metadata": {"labels": {"meshstack.io/pool": value}}});
            nodes
                .patch(
                    &node,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .unwrap();
        })
    };
    relabel(None);
    let refused = env.run("up", &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains(&format!(
            "{}: no system node (meshstack.io/pool=system)",
            zones[2]
        )),
        "{text}"
    );
    assert_eq!(env.cluster.releases(), BTreeMap::new());
    relabel(Some("system"));

    let nodes = || {
        rt.block_on(async {
            let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.cluster.admin().await);
            api.list(&ListParams::default()).await.unwrap().items.len()
        })
    };
    let node_count = nodes();
    // The stages that need nothing of AWS; releases: prometheus, istio-base, istiod, the
    // gateway, kiali-operator; no Karpenter.
    let stages = meshstack::stages::all()
        .iter()
        .filter(|s| !s.needs_aws())
        .count();
    assert_eq!(stages, 8);
    converges_and_tears_down(&env, stages, 5);
    assert!(
        !env.cluster
            .releases()
            .keys()
            .any(|r| r.starts_with("karpenter/")),
        "Karpenter is off on an existing cluster"
    );
    env.ok("down", &["--yes"]);
    assert_eq!(nodes(), node_count, "the cluster and its nodes stay");
}

#[test]
fn the_kubernetes_half_runs_on_an_existing_cluster_with_helm_3() {
    existing_cluster(3);
}

#[test]
fn the_kubernetes_half_runs_on_an_existing_cluster_with_helm_4() {
    existing_cluster(4);
}

/// Issue 23 item 7, with the real helm: a repository serving other bytes for every pinned
/// chart (its index agreeing with them) gets nothing installed. Real helm pulls each chart
/// from it; meshstack refuses the archive, naming chart, version, repository and both
/// digests; `up` fails and helm holds no release at all.
fn tampered_charts_with_real_helm(helm_major: u8) {
    let mut env = Env::existing(&format!("tampered{helm_major}"), helm_major);
    // Every chart pinned by the stack itself: a pin that is meshstack's own rebuild is only a
    // warning on a mismatch (upstream serves other bytes), a pin the stack names is enforced.
    crate::supply::pin_every_chart_in(std::path::Path::new(&env.stack));
    let repo = crate::support::chart_repo::ChartRepo::tampered(&meshstack::charts::name::ALL);
    // After the cluster's own mirror in the list: this one wins.
    env.ms
        .extra_env
        .push(("MESHSTACK_CHART_MIRROR".into(), repo.url.clone()));
    let out = env.run("up", &[]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let mirror = repo.url.trim_end_matches('/');
    assert!(
        text.contains(&format!("from {mirror} is not the pinned chart"))
            && text.contains("nothing was installed"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        env.cluster.releases(),
        BTreeMap::new(),
        "helm {helm_major} installed a tampered chart"
    );
}

#[test]
fn a_tampered_chart_is_refused_with_real_helm_3() {
    tampered_charts_with_real_helm(3);
}

#[test]
fn a_tampered_chart_is_refused_with_real_helm_4() {
    tampered_charts_with_real_helm(4);
}

/// The API server checks meshstack's EKS token as EKS does: a token for another cluster is
/// refused, so the whole graph above ran on tokens the server verified against moto.
#[test]
fn the_api_server_refuses_a_token_for_another_cluster() {
    let moto = Moto::start();
    let cluster = LocalCluster::start_for_eks("mine", &moto.endpoint(), 3);
    let ms = Meshstack::with_moto(&moto);
    let out = ms.run(&["token", "--cluster", "theirs", "--region", "us-east-1"]);
    assert!(out.status.success(), "{}", describe(&out));
    let cred: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = cred["status"]["token"].as_str().unwrap().to_string();
    let ca = std::fs::read(cluster.var("MESHSTACK_KUBE_CA_FILE")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async {
        meshstack::k8s::client::install_crypto_provider();
        let mut config = kube::Config::new(cluster.var("MESHSTACK_KUBE_API").parse().unwrap());
        config.root_cert = Some(vec![pem_der(&ca)]);
        config.auth_info.token = Some(token.into());
        let client = kube::Client::try_from(config).unwrap();
        let api: Api<DynamicObject> = Api::all_with(
            client,
            &ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()),
        );
        match api.list(&ListParams::default()).await {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(e) => panic!("{e}"),
        }
    });
    assert_eq!(code, 401, "a token for another cluster must be refused");
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(pem);
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap()
}

/// Issue 19, on the real control plane with helm 4: a live environment built with Karpenter
/// 1.8.1 and Istio 1.18.7 (Kubernetes 1.34 in extended support, which the stack accepts) moves
/// to Karpenter 1.14.1 and Istio 1.30.3. Real helm refuses to take over objects another owner
/// holds ("invalid ownership metadata"), and Istio 1.18's base chart left its CRDs unowned
/// (they came from `crds/`), so this passes only if meshstack hands them to `istio-base`
/// first; helm 4 applies server-side, where istiod's run-time `failurePolicy` on its webhook
/// would conflict unless meshstack forces it. Then `status` is clean and a rerun changes
/// nothing.
#[test]
fn versions_move_on_a_live_environment_with_real_helm() {
    let mut env = Env::start("moving", 4);
    env.ms
        .extra_env
        .push(("MESHSTACK_TODAY".into(), "2026-12-06".into()));
    let stack = |karpenter: &str, istio: &str| {
        format!(
            "name: moving\nregion: us-east-1\nkubernetes_version: \"1.34\"\n\
             cluster: {{support: extended}}\nkarpenter: {{version: {karpenter}}}\n\
             istio: {{version: {istio}}}\n"
        )
    };
    env.stack = env
        .ms
        .stack_file("old.yaml", &stack("1.8.1", "1.18.7"))
        .display()
        .to_string();
    env.ok("up", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let owners = || {
        rt.block_on(async {
            let client = env.cluster.admin().await;
            let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
                Api::all(client);
            api.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|c| c.spec.group.ends_with(".istio.io"))
                .map(|c| {
                    let owner = c
                        .metadata
                        .annotations
                        .unwrap_or_default()
                        .get("meta.helm.sh/release-name")
                        .cloned();
                    (c.metadata.name.unwrap_or_default(), owner)
                })
                .collect::<BTreeMap<_, _>>()
        })
    };
    let before = owners();
    assert!(!before.is_empty());
    assert!(
        before.values().all(Option::is_none),
        "Istio 1.18's CRDs come from crds/, unowned: {before:?}"
    );

    env.stack = env
        .ms
        .stack_file("new.yaml", &stack("1.14.1", "1.30.3"))
        .display()
        .to_string();
    env.ok("up", &[]);
    let releases = env.cluster.releases();
    for (release, chart) in [
        ("istio-system/istio-base", "base-1.30.3"),
        ("istio-system/istiod", "istiod-1.30.3"),
        ("karpenter/karpenter-crd", "karpenter-crd-1.14.1"),
        ("karpenter/karpenter", "karpenter-1.14.1"),
    ] {
        let (status, _, listed) = &releases[release];
        assert_eq!(
            (status.as_str(), listed.as_str()),
            ("deployed", chart),
            "{releases:?}"
        );
    }
    let after = owners();
    assert!(
        after.values().all(|o| o.as_deref() == Some("istio-base")),
        "{after:?}"
    );
    // Server-side apply on the real API server removes what meshstack owned and no longer
    // applies: Kiali 1's `accessible_namespaces` goes, Kiali 2's discovery selectors come.
    let kiali = rt.block_on(async {
        let client = env.cluster.admin().await;
        let ar = ApiResource {
            group: "kiali.io".into(),
            version: "v1alpha1".into(),
            api_version: "kiali.io/v1alpha1".into(),
            kind: "Kiali".into(),
            plural: "kialis".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client, "istio-system", &ar);
        api.get("kiali").await.unwrap()
    });
    let deployment = &kiali.data["spec"]["deployment"];
    assert!(
        deployment.get("accessible_namespaces").is_none(),
        "{deployment}"
    );
    assert_eq!(deployment["cluster_wide_access"], false, "{deployment}");
    let status = env.run("status", &[]);
    assert_eq!(status.status.code(), Some(0), "{}", describe(&status));
    let versions_before = rt.block_on(versions(&env));
    env.ok("up", &[]);
    assert_eq!(env.cluster.releases(), releases, "a rerun changed helm");
    assert_eq!(
        rt.block_on(versions(&env)),
        versions_before,
        "a rerun changed objects"
    );
}

/// Issue 19: `doctor` shows the version matrix and asks each chart's repository, with the real
/// helm, for the pinned version: against the real charts (the local repository of the pinned
/// chart folder) every chart of the default stack is found, verified where its built-in pin
/// is the folder's bytes and a warning where the folder holds upstream's archive of a chart
/// meshstack pins as its own rebuild; a stack pinning a version that repository lacks is
/// named, and doctor fails.
#[test]
fn doctor_shows_the_version_matrix_and_finds_each_pinned_chart() {
    let env = Env::start("doctored", 3);
    let out = env.ms.run(&["doctor", "--stack", &env.stack, "-o", "json"]);
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));
    assert_eq!(out.status.code(), Some(0), "{doc}");
    let rows: BTreeMap<String, serde_json::Value> = doc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["component"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    assert_eq!(rows["kubernetes"]["version"], "1.36", "{doc}");
    assert!(
        rows["kubernetes"]["detail"]
            .as_str()
            .unwrap()
            .contains("standard support until 2027-08-02"),
        "{doc}"
    );
    assert!(rows["karpenter"]["detail"]
        .as_str()
        .unwrap()
        .contains("up to 1.36"));
    assert_eq!(
        rows["istio"]["supported"], false,
        "Istio 1.18 on 1.36: {doc}"
    );
    assert_eq!(rows["kiali"]["version"], "1.73.2");
    assert_eq!(rows["helm"]["supported"], true, "helm 3.21 on 1.36: {doc}");
    let charts = doc["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 7, "{doc}");
    assert!(charts.iter().all(|c| c["ok"] == true), "{doc}");
    for c in charts {
        let (chart, version) = (
            c["chart"]["chart"].as_str().unwrap(),
            c["chart"]["version"].as_str().unwrap(),
        );
        let verified = env.builtin_pin_verified(chart, version);
        assert_eq!(c["verified"], verified, "{chart} {version}: {doc}");
    }

    // A pin the repository does not hold.
    let stack = env.ms.stack_file(
        "other.yaml",
        "name: doctored\nregion: us-east-1\nkubernetes_version: \"1.36\"\nistio: {version: 1.30.2}\n",
    );
    let out = env
        .ms
        .run(&["doctor", "--stack", stack.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let missing: Vec<&str> = doc["charts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["chart"]["chart"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["base", "istiod", "gateway"], "{doc}");
}

/// Issue 20: kill -9 (the whole process group: meshstack and the helm it runs) while real
/// helm is installing a chart, and while `down`'s `helm uninstall` runs, on an existing-cluster
/// stack; each rerun converges
/// with every release deployed once (no duplicate, none stuck pending or uninstalling), and
/// the final `down` leaves nothing.
#[test]
fn kills_inside_real_helm_install_and_uninstall_are_recovered() {
    let env = Env::existing("killed", 3);
    let spawn = |verb: &str| {
        use std::os::unix::process::CommandExt;
        env.ms
            .command(&[verb, "--stack", &env.stack, "-o", "json"])
            .args(if verb == "down" { &["--yes"][..] } else { &[] })
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    // `state(release, status)`: whether to kill now.
    let kill_when =
        |mut child: std::process::Child, what: &str, state: &dyn Fn(&str, &str) -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            loop {
                let hit = env
                    .cluster
                    .releases()
                    .iter()
                    .any(|(release, (status, _, _))| state(release, status));
                if hit {
                    break;
                }
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "the run ended before {what}"
                );
                assert!(
                    std::time::Instant::now() < deadline,
                    "no {what} in 2 minutes"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            // `--`: util-linux kill would read a bare "-PGID" as an option.
            let status = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status()
                .unwrap();
            assert!(status.success(), "kill -KILL of the group");
            let _ = child.wait();
        };

    // kube-prometheus-stack: its install waits for many objects (12-17 s), so the kill lands
    // inside it; a small chart such as istio-base may be deployed before the kill arrives.
    kill_when(spawn("up"), "prometheus pending", &|release, s| {
        release == "prometheus/prom" && s.starts_with("pending")
    });
    let left = env.cluster.releases();
    assert!(
        left.values().any(|(s, _, _)| s.starts_with("pending")),
        "{left:?}"
    );
    env.ok("up", &["--force-unlock"]);
    let releases = env.cluster.releases();
    assert_eq!(releases.len(), 5, "{releases:?}");
    assert!(
        releases.values().all(|(s, _, _)| s == "deployed"),
        "left {left:?}, now {releases:?}"
    );

    kill_when(spawn("down"), "a release uninstalling", &|_, s| {
        s == "uninstalling"
    });
    env.ok("up", &["--force-unlock"]);
    let again = env.cluster.releases();
    assert_eq!(again.len(), 5, "{again:?}");
    assert!(again.values().all(|(s, _, _)| s == "deployed"), "{again:?}");
    env.ok("down", &["--yes"]);
    assert_eq!(env.cluster.releases(), BTreeMap::new());
}

/// Issue 20: what meshstack relies on from server-side apply and CRD validation, on the real
/// API server (the in-memory one removes no field and validates nothing).
///
/// - **Conflicts**: someone else's manager takes fields meshstack owns — `kubectl` applies
///   `internalTrafficPolicy: Cluster` to products-service with `--force-conflicts`, and a
///   merge patch drops the orders rule's `localityLbSetting`. `status` sees the drift (exit 3),
///   `plan` names both objects, `up` takes the fields back (meshstack forces its conflicts, so
///   the other manager loses them), and a rerun writes nothing.
/// - **CEL**: the real Karpenter 1.14.1 CRDs enforce their `x-kubernetes-validations`: a
///   NodePool edit their rules forbid is refused, so meshstack's own NodePool, which the
///   server accepted, passed them.
#[test]
fn the_real_server_takes_back_drift_and_enforces_crd_rules() {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Patch, PatchParams};
    let env = Env::start("drift", 3);
    env.ok("up", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(env.cluster.admin());
    let services: Api<Service> = Api::namespaced(client.clone(), "ecommerce");
    let rules_ar = ApiResource {
        group: "networking.istio.io".into(),
        version: "v1beta1".into(),
        api_version: "networking.istio.io/v1beta1".into(),
        kind: "DestinationRule".into(),
        plural: "destinationrules".into(),
    };
    let rules: Api<DynamicObject> = Api::namespaced_with(client.clone(), "ecommerce", &rules_ar);
    let policy = |s: &Service| {
        s.spec
            .as_ref()
            .and_then(|s| s.internal_traffic_policy.clone())
            .unwrap_or_default()
    };
    let locality = |r: &DynamicObject| {
        r.data["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"].clone()
    };
    let (before_policy, before_rule) = rt.block_on(async {
        (
            policy(&services.get("products-service").await.unwrap()),
            locality(&rules.get("orders-destination-rule").await.unwrap()),
        )
    });
    assert_eq!(before_policy, "Local");
    assert!(before_rule.is_object(), "{before_rule}");

    rt.block_on(async {
        let edit = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "products-service", "namespace": "ecommerce"},
            "spec": {"internalTrafficPolicy": "Cluster"},
        });
        services
            .patch(
                "products-service",
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(&edit),
            )
            .await
            .unwrap();
        let drop = serde_json::json!({"spec": {"trafficPolicy": {"loadBalancer": {"localityLbSetting": null}}}});
        rules
            .patch(
                "orders-destination-rule",
                &PatchParams::default(),
                &Patch::Merge(&drop),
            )
            .await
            .unwrap();
    });
    let status = env.run("status", &[]);
    assert_eq!(status.status.code(), Some(3), "{}", describe(&status));
    let plan = env.ok("plan", &[]);
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        plan.contains("products-service") && plan.contains("orders-destination-rule"),
        "{plan}"
    );

    env.ok("up", &[]);
    let (after_policy, after_rule, owners) = rt.block_on(async {
        let s = services.get("products-service").await.unwrap();
        let owners: Vec<String> = s
            .metadata
            .managed_fields
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| {
                f.fields_v1
                    .as_ref()
                    .is_some_and(|v| v.0.pointer("/f:spec/f:internalTrafficPolicy").is_some())
            })
            .filter_map(|f| f.manager)
            .collect();
        (
            policy(&s),
            locality(&rules.get("orders-destination-rule").await.unwrap()),
            owners,
        )
    });
    assert_eq!(after_policy, "Local", "up takes the field back");
    assert_eq!(after_rule, before_rule, "up puts the locality setting back");
    assert!(
        owners.contains(&"meshstack-locality".to_string()) && !owners.contains(&"kubectl".into()),
        "the forced apply moves the field to meshstack: {owners:?}"
    );
    let settled = rt.block_on(versions(&env));
    env.ok("up", &[]);
    assert_eq!(
        rt.block_on(versions(&env)),
        settled,
        "a rerun writes nothing"
    );

    // CEL: Karpenter's CRD refuses a NodePool whose template carries a restricted label.
    let nodepools = ApiResource {
        group: "karpenter.sh".into(),
        version: "v1".into(),
        api_version: "karpenter.sh/v1".into(),
        kind: "NodePool".into(),
        plural: "nodepools".into(),
    };
    let refused = rt.block_on(async {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &nodepools);
        let name = api.list(&ListParams::default()).await.unwrap().items[0]
            .metadata
            .name
            .clone()
            .unwrap();
        let edit = serde_json::json!({"spec": {"template": {"metadata": {"labels": {"kubernetes.io/hostname": "pinned"}}}}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&edit))
            .await
    });
    match refused {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(
                s.message
                    .contains("label \"kubernetes.io/hostname\" is restricted"),
                "{s:?}"
            );
        }
        other => panic!("the CRD's CEL rule must refuse it: {other:?}"),
    }
}

/// Issue 24 on the real control plane (an existing-cluster stack, Istio 1.30.3): the stack
/// moves failover -> traffic-distribution -> failover on a live environment. In
/// traffic-distribution mode the orders rule is gone, products-service is back at
/// `internalTrafficPolicy: Cluster` (server-side apply removed the field the stage no longer
/// applies), and the real EndpointSlice controller fills the hints Istio routes by —
/// `forZones` with each orders endpoint's own zone, `forNodes` with each products endpoint's
/// own node. Back in failover nothing of traffic-distribution is left; each rerun writes
/// nothing; `down` leaves neither mode's policies.
#[test]
fn locality_modes_switch_on_a_live_environment_and_the_real_controller_fills_hints() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let mut env = Env::existing("modes", 3);
    let existing = std::fs::read_to_string(&env.stack).unwrap();
    let stack_for = |mode: &str| {
        format!(
            "{existing}istio: {{version: 1.30.3, ingress_source_ranges: [10.0.0.0/8]}}\n\
             locality: {{mode: {mode}}}\n"
        )
    };
    env.stack = env
        .ms
        .stack_file("failover.yaml", &stack_for("failover"))
        .display()
        .to_string();
    let failover = env.stack.clone();
    let distribution = env
        .ms
        .stack_file("distribution.yaml", &stack_for("traffic-distribution"))
        .display()
        .to_string();
    env.ok("up", &[]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(env.cluster.admin());
    let services: Api<Service> = Api::namespaced(client.clone(), "ecommerce");
    let rule_ar = ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "DestinationRule".into(),
        plural: "destinationrules".into(),
    };
    let rules: Api<DynamicObject> = Api::namespaced_with(client.clone(), "ecommerce", &rule_ar);
    // (orders trafficDistribution, products trafficDistribution, products
    // internalTrafficPolicy, whether the orders rule exists)
    let policies = || {
        rt.block_on(async {
            let field =
                |s: &Service, f: fn(&k8s_openapi::api::core::v1::ServiceSpec) -> Option<String>| {
                    s.spec.as_ref().and_then(f).unwrap_or_default()
                };
            let orders = services.get("orders-service").await.unwrap();
            let products = services.get("products-service").await.unwrap();
            (
                field(&orders, |s| s.traffic_distribution.clone()),
                field(&products, |s| s.traffic_distribution.clone()),
                field(&products, |s| s.internal_traffic_policy.clone()),
                rules
                    .get_opt("orders-destination-rule")
                    .await
                    .unwrap()
                    .is_some(),
            )
        })
    };
    assert_eq!(policies(), ("".into(), "".into(), "Local".into(), true));
    // istio.ingress_source_ranges reaches the gateway's Service through the chart.
    let gateway = rt.block_on(async {
        let api: Api<Service> = Api::namespaced(client.clone(), "istio-system");
        api.get("istio-ingressgateway").await.unwrap()
    });
    assert_eq!(
        gateway.spec.unwrap().load_balancer_source_ranges,
        Some(vec!["10.0.0.0/8".to_string()])
    );

    // To traffic-distribution: plan says what goes, up does it, a rerun writes nothing.
    env.stack = distribution;
    let plan = env.ok("plan", &[]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["summary"]["delete"], 1, "the orders rule: {plan}");
    env.ok("up", &[]);
    assert_eq!(
        policies(),
        (
            "PreferSameZone".into(),
            "PreferSameNode".into(),
            "Cluster".into(),
            false
        )
    );
    // The hints, as the real EndpointSlice controller computed them (it may take a moment).
    let hints = |service: &str| {
        rt.block_on(async {
            let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "ecommerce");
            let params =
                ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
            let mut out = Vec::new();
            for slice in slices.list(&params).await.unwrap().items {
                for e in slice.endpoints {
                    let hints = e.hints.clone().unwrap_or_default();
                    let zones: Vec<String> = hints
                        .for_zones
                        .unwrap_or_default()
                        .into_iter()
                        .map(|z| z.name)
                        .collect();
                    let nodes: Vec<String> = hints
                        .for_nodes
                        .unwrap_or_default()
                        .into_iter()
                        .map(|n| n.name)
                        .collect();
                    out.push((e.zone.clone(), e.node_name.clone(), zones, nodes));
                }
            }
            out
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let orders = hints("orders-service");
        let products = hints("products-service");
        let zone_hinted = !orders.is_empty()
            && orders.iter().all(|(zone, _, zones, _)| {
                zone.as_ref()
                    .is_some_and(|z| zones == std::slice::from_ref(z))
            });
        let node_hinted = !products.is_empty()
            && products.iter().all(|(_, node, _, nodes)| {
                node.as_ref()
                    .is_some_and(|n| nodes == std::slice::from_ref(n))
            });
        if zone_hinted && node_hinted {
            eprintln!(
                "hints: {} orders endpoints forZones = own zone, {} products endpoints \
                 forNodes = own node",
                orders.len(),
                products.len()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hints in 60 s: orders {orders:?}, products {products:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // `pods` shows where the hints steer callers, endpoint by endpoint.
    let pods = env.ok("pods", &[]);
    let pods: serde_json::Value = serde_json::from_slice(&pods.stdout).unwrap();
    let steering = pods["steering"].as_array().unwrap();
    for (service, key, own) in [
        ("orders-service", "for_zones", "zone"),
        ("products-service", "for_nodes", "node"),
    ] {
        let mine: Vec<&serde_json::Value> = steering
            .iter()
            .filter(|s| s["service"] == service)
            .collect();
        assert!(!mine.is_empty(), "{service}: {pods}");
        for s in mine {
            assert_eq!(s[key], serde_json::json!([s[own].clone()]), "{s}");
        }
    }
    let settled = rt.block_on(versions(&env));
    env.ok("up", &[]);
    assert_eq!(
        rt.block_on(versions(&env)),
        settled,
        "a rerun writes nothing"
    );
    let status = env.run("status", &[]);
    assert_eq!(status.status.code(), Some(0), "{}", describe(&status));

    // Back to failover: nothing of traffic-distribution is left.
    env.stack = failover;
    env.ok("up", &[]);
    assert_eq!(policies(), ("".into(), "".into(), "Local".into(), true));
    let pods = env.ok("pods", &[]);
    let pods: serde_json::Value = serde_json::from_slice(&pods.stdout).unwrap();
    assert_eq!(
        pods.get("steering"),
        None,
        "no hints without trafficDistribution: {pods}"
    );
    let settled = rt.block_on(versions(&env));
    env.ok("up", &[]);
    assert_eq!(
        rt.block_on(versions(&env)),
        settled,
        "a rerun writes nothing"
    );

    // down from traffic-distribution leaves neither mode's policies.
    env.stack = env
        .ms
        .stack_file(
            "distribution-again.yaml",
            &stack_for("traffic-distribution"),
        )
        .display()
        .to_string();
    env.ok("up", &[]);
    env.ok("down", &["--yes"]);
    assert_eq!(env.cluster.releases(), BTreeMap::new());
}
