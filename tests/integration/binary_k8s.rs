//! The whole graph through the binary: moto for AWS, the local API server
//! (`tests/support/apiserver.rs`) for the cluster, the recording helm (`MESHSTACK_HELM`).
//! The first test checks the server itself over HTTPS with a real `kube::Client`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use meshstack::k8s::apply::{ApplyError, DiscoveryResolver, ObjectRef, Resolver};
use serde_json::json;

use crate::support::apiserver::pods::ORDERS_CLUSTER;
use crate::support::apiserver::{ApiServer, Conflict, Faults, Options, Rejection};
use crate::support::k8s::{fake_helm, helm_calls};
use crate::support::{describe, Meshstack, Moto};

/// A token of the shape EKS accepts (the server checks the shape, not the signature).
fn eks_token() -> String {
    use base64::Engine as _;
    let url = "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Signature=abc";
    format!(
        "k8s-aws-v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    )
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                                  "data": {"k": "v"}}))
    .unwrap()
}

#[test]
fn the_local_api_server_serves_the_api_over_https_and_keeps_its_state_across_a_restart() {
    let mut server = ApiServer::start(Options::default());
    let client = server.https_client(&eks_token());
    let version = server.block_on(client.apiserver_version()).unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34")
    );

    // Only an EKS token gets in.
    let stranger = server.https_client("not-an-eks-token");
    let err = server.block_on(stranger.apiserver_version()).unwrap_err();
    assert!(
        err.to_string().contains("401") || err.to_string().contains("Unauthorized"),
        "{err}"
    );
    assert_eq!(server.counts().unauthorized, 1);

    // Objects, Namespaces included, through the fake; a webhook refuses the first write of a kind.
    server.set_faults(Faults {
        rejections: vec![Rejection {
            kind: "ConfigMap".into(),
            times: 1,
        }],
        ..Faults::default()
    });
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let err = server
        .block_on(cms.create(&PostParams::default(), &config_map("a")))
        .unwrap_err();
    assert!(err.to_string().contains("denied the request"), "{err}");
    server
        .block_on(cms.create(&PostParams::default(), &config_map("a")))
        .unwrap();
    let ns: Api<Namespace> = Api::all(client.clone());
    let shop: Namespace = serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap();
    server
        .block_on(ns.create(&PostParams::default(), &shop))
        .unwrap();
    assert!(server.block_on(ns.get_opt("shop")).unwrap().is_some());
    let counts = server.counts();
    assert_eq!(counts.verb("create"), 3, "{counts:?}");
    assert_eq!(counts.writes.len(), 3, "{counts:?}");
    assert_eq!(counts.injected.get(&400), Some(&1), "{counts:?}");

    // Discovery: built-in kinds at once; a custom kind once its CRD is Established, which the
    // server's CRD controller does after the delay the test sets.
    let resolver = DiscoveryResolver::new(client.clone());
    let (deployments, _) = server
        .block_on(resolver.resolve("apps/v1", "Deployment"))
        .unwrap();
    assert_eq!(deployments.plural, "deployments");
    server.set_faults(Faults {
        crd_delays: [(
            "gateways.networking.istio.io".to_string(),
            Duration::from_millis(1500),
        )]
        .into(),
        ..Faults::default()
    });
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "gateways.networking.istio.io"},
        "spec": {"group": "networking.istio.io", "scope": "Namespaced",
                 "names": {"kind": "Gateway", "plural": "gateways"},
                 "versions": [{"name": "v1beta1", "served": true, "storage": true}]}
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    server
        .block_on(crds.create(&PostParams::default(), &crd))
        .unwrap();
    let early = server.block_on(resolver.resolve("networking.istio.io/v1beta1", "Gateway"));
    assert!(
        matches!(early, Err(ApplyError::UnknownKind { .. })),
        "{early:?}"
    );
    std::thread::sleep(Duration::from_millis(1600));
    let (gateways, _) = server
        .block_on(resolver.resolve("networking.istio.io/v1beta1", "Gateway"))
        .unwrap();
    assert_eq!(gateways.plural, "gateways");

    // Throttling: kube retries 429s (it honours Retry-After), so the reads still succeed.
    server.set_faults(Faults {
        throttle: 0.5,
        ..Faults::default()
    });
    for _ in 0..10 {
        server.block_on(cms.get("a")).unwrap();
    }
    assert!(server.counts().injected.get(&429).copied().unwrap_or(0) > 0);
    server.set_faults(Faults::default());

    // Stopped: nothing answers. Restarted: same port, same objects.
    server.stop();
    assert!(server.block_on(client.apiserver_version()).is_err());
    // Hung: connections are accepted and never answered.
    server.hang();
    let hung = server.block_on(async {
        tokio::time::timeout(Duration::from_millis(500), client.apiserver_version()).await
    });
    assert!(hung.is_err(), "a hung server answered: {hung:?}");
    server.stop();
    server.restart();
    let client = server.https_client(&eks_token());
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    assert_eq!(
        server.block_on(cms.get("a")).unwrap().data.unwrap()["k"],
        "v"
    );
}

/// moto, the local API server playing the charts the recording helm records, and the binary
/// pointed at both, with waits scaled down.
pub(crate) struct Cluster {
    moto: Moto,
    pub(crate) server: ApiServer,
    pub(crate) ms: Meshstack,
    pub(crate) helm_dir: PathBuf,
    pub(crate) stack: String,
}

/// Waits divided by this: the Kubernetes waits poll every 50 ms and give up after 30 s.
const WAIT_SCALE: &str = "20";

impl Cluster {
    pub(crate) fn start(name: &str, options: Options) -> Cluster {
        let moto = Moto::start();
        let mut ms = Meshstack::with_moto(&moto);
        let helm_dir = ms.dir.path().join("helm");
        std::fs::create_dir_all(&helm_dir).unwrap();
        let helm = fake_helm(&helm_dir);
        let server = ApiServer::start(Options {
            charts: Some(helm_dir.clone()),
            ..options
        });
        ms.extra_env.extend(server.env());
        ms.extra_env
            .push(("MESHSTACK_HELM".into(), helm.display().to_string()));
        ms.extra_env
            .push(("MESHSTACK_WAIT_SCALE".into(), WAIT_SCALE.into()));
        // The binary's own temp folder, to see what it leaves there.
        let tmp = ms.dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        ms.extra_env
            .push(("TMPDIR".into(), tmp.display().to_string()));
        let stack = ms
            .stack_file(
                "stack.yaml",
                &format!("name: {name}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n"),
            )
            .display()
            .to_string();
        Cluster {
            moto,
            server,
            ms,
            helm_dir,
            stack,
        }
    }

    pub(crate) fn run(&self, verb: &str, extra: &[&str]) -> Output {
        let mut args = vec![verb, "--stack", &self.stack, "-o", "json"];
        args.extend_from_slice(extra);
        self.ms.run(&args)
    }

    /// `up`, which must succeed with every stage.
    pub(crate) fn up(&self) -> Output {
        let out = self.run("up", &[]);
        assert!(out.status.success(), "{}", describe(&out));
        let summary = json_lines(&out)
            .into_iter()
            .find(|l| l["event"] == "summary")
            .unwrap_or_else(|| panic!("no summary in {}", describe(&out)));
        let results = summary["results"].as_array().unwrap();
        assert_eq!(results.len(), meshstack::stages::all().len(), "{summary}");
        for r in results {
            assert_eq!(r["status"], "succeeded", "{r}\n{}", describe(&out));
        }
        out
    }
}

pub(crate) fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `Kind namespace/name` of every object in the manifests `meshstack render` writes (the
/// helm values files aside): what a full `up` must leave in the cluster.
fn rendered_objects(c: &Cluster) -> BTreeSet<String> {
    let objects: BTreeSet<String> = crate::support::rendered_manifests(&c.ms, &c.stack)
        .iter()
        .map(|o| {
            let o = ObjectRef::of(o);
            match o.namespace {
                Some(ns) => format!("{} {ns}/{}", o.kind, o.name),
                None => format!("{} {}", o.kind, o.name),
            }
        })
        .collect();
    assert!(objects.len() > 20, "{objects:?}");
    objects
}

/// The releases meshstack installs, as `namespace/name`.
const RELEASES: [&str; 7] = [
    "istio-system/istio-base",
    "istio-system/istio-ingressgateway",
    "istio-system/istiod",
    "karpenter/karpenter",
    "karpenter/karpenter-crd",
    "kiali-operator/kiali-operator",
    "prometheus/prom",
];

#[test]
fn up_builds_all_twelve_stages_and_a_second_up_writes_nothing() {
    let c = Cluster::start("whole", Options::default());
    let started = std::time::Instant::now();
    c.up();
    let full = started.elapsed();
    // helm's kubeconfig, values and registry config lived in private folders (0700, the
    // recording helm checked each), all removed: nothing left in the temp folder.
    let tmp = c.ms.dir.path().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    let calls = helm_calls(&c.helm_dir);
    let private: Vec<&Vec<String>> = calls
        .iter()
        .filter(|call| call[0] == "private-files")
        .collect();
    assert!(!private.is_empty(), "{calls:?}");
    for call in &private {
        assert!(
            call[1..].iter().all(|m| m == "700"),
            "{call:?} in {calls:?}"
        );
    }
    // Karpenter's chart (public ECR) is pulled with an empty registry config: a stale login of
    // the user's cannot break it.
    let karpenter = calls
        .iter()
        .find(|call| call[0] == "pull" && call[1].ends_with("/karpenter"))
        .unwrap_or_else(|| panic!("{calls:?}"));
    let at = karpenter
        .iter()
        .position(|a| a == "--registry-config")
        .unwrap_or_else(|| panic!("{karpenter:?}"));
    assert!(
        karpenter[at + 1].ends_with("registry.json"),
        "{karpenter:?}"
    );
    assert!(
        calls
            .iter()
            .filter(|call| call[0] == "pull" && call[1] == "istiod")
            .all(|call| !call.contains(&"--registry-config".to_string())),
        "only public registries are pulled anonymously"
    );
    // Every chart was pulled, then installed from the pulled (verified) file, never by
    // repository and version.
    let upgrades: Vec<&Vec<String>> = calls.iter().filter(|c| c[0] == "upgrade").collect();
    assert_eq!(upgrades.len(), RELEASES.len(), "{calls:?}");
    for call in &upgrades {
        assert!(call[3].ends_with(".tgz"), "{call:?}");
        assert!(
            !call.contains(&"--repo".to_string()) && !call.contains(&"--version".to_string()),
            "{call:?}"
        );
    }
    assert_eq!(
        calls.iter().filter(|c| c[0] == "pull").count(),
        RELEASES.len(),
        "{calls:?}"
    );

    // Every manifest's object is in the cluster, and every release: recorded by helm and
    // stored as helm stores it.
    let objects = c.server.objects();
    let missing: Vec<String> = rendered_objects(&c)
        .into_iter()
        .filter(|o| !objects.contains_key(o))
        .collect();
    assert!(missing.is_empty(), "not in the cluster: {missing:?}");
    let aws_auth = &objects["ConfigMap kube-system/aws-auth"];
    assert!(
        aws_auth["data"]["mapRoles"]
            .as_str()
            .unwrap()
            .contains("role/whole-node"),
        "{aws_auth}"
    );
    let products = &objects["Service ecommerce/products-service"];
    assert_eq!(products["spec"]["internalTrafficPolicy"], "Local");
    for release in RELEASES {
        let (ns, name) = release.split_once('/').unwrap();
        assert!(
            c.helm_dir
                .join("releases")
                .join(format!("{ns}.{name}"))
                .exists(),
            "helm has no release {release}"
        );
        let secret = format!("Secret {ns}/sh.helm.release.v1.{name}.v1");
        assert!(objects.contains_key(&secret), "no {secret}");
    }
    let counts = c.server.counts();
    assert!(counts.verb("patch") > 20, "{counts:?}");
    assert!(counts.verb("discovery") > 0, "{counts:?}");

    // Again: no AWS write (moto's own record), no helm install, no API write, no object
    // changed (resourceVersions included).
    let started = std::time::Instant::now();
    let (counts, new_helm) = up_changes_nothing(&c, &objects, "a converged up");
    let converged = started.elapsed();
    eprintln!(
        "full up {full:?}; converged up {converged:?}: {} API requests ({:?}), {} helm calls",
        counts.requests(),
        counts.by_verb,
        new_helm.len()
    );

    // plan is empty and status says every stage is done, none drifted: the releases are
    // judged by what helm holds in the cluster, not by a journal (plan and status hold none).
    assert_converged_view(&c);

    // The journal lost: plan still empty, up still changes nothing anywhere.
    std::fs::remove_dir_all(c.ms.state_dir()).unwrap();
    assert_plan_is_empty(&c);
    let (counts, new_helm) = up_changes_nothing(&c, &objects, "an up with the journal lost");
    eprintln!(
        "journal lost: plan empty; up: 0 AWS writes (moto's recorder), {} helm calls, none a write; {} API requests, 0 writes",
        new_helm.len(),
        counts.requests()
    );
}

/// `up` again: no AWS write (moto's own record), only reads of helm (`version` — `up` checks
/// helm first — `list`, `get values`), no API write, every object as it was (resourceVersions
/// included). The API server's counts and the helm calls of the run.
fn up_changes_nothing(
    c: &Cluster,
    objects: &BTreeMap<String, serde_json::Value>,
    what: &str,
) -> (crate::support::apiserver::Counts, Vec<Vec<String>>) {
    c.moto.start_recording();
    c.server.reset_counts();
    let helm_before = helm_calls(&c.helm_dir).len();
    let out = c.up();
    assert_eq!(
        c.moto.recorded_writes(),
        Vec::<String>::new(),
        "{what}: {}",
        describe(&out)
    );
    let new_helm: Vec<Vec<String>> = helm_calls(&c.helm_dir).split_off(helm_before);
    assert!(
        new_helm
            .iter()
            .all(|call| call[0] == "version" || crate::support::k8s::is_read(call)),
        "{what}: helm calls {new_helm:?}"
    );
    let counts = c.server.counts();
    assert_eq!(counts.writes, Vec::<String>::new(), "{what}: {counts:?}");
    assert!(counts.requests() > 0);
    assert_eq!(&c.server.objects(), objects, "{what} changed objects");
    (counts, new_helm)
}

/// `plan` lists no change in any stage.
fn assert_plan_is_empty(c: &Cluster) {
    let out = c.run("plan", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes: Vec<&serde_json::Value> = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["changes"].as_array().unwrap())
        .collect();
    assert!(
        changes.is_empty(),
        "plan on a converged stack: {changes:#?}"
    );
}

/// `plan` is empty and `status` shows every stage done, none drifted.
fn assert_converged_view(c: &Cluster) {
    assert_plan_is_empty(c);
    let out = c.run("status", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = status["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(rows.len(), meshstack::stages::all().len(), "{status}");
    for row in rows {
        assert_eq!(row["state"], "done", "{row}");
    }
}

/// Zone of each app pod IP, and of each app pod name, as the server placed them.
fn app_zones(server: &ApiServer) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let objects = server.objects();
    let zone_of_node = |node: &str| {
        objects[&format!("Node {node}")]["metadata"]["labels"]["topology.kubernetes.io/zone"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (mut by_ip, mut by_name) = (BTreeMap::new(), BTreeMap::new());
    for (key, pod) in objects.range("Pod ecommerce/".to_string().."Pod ecommerce0".to_string()) {
        let zone = zone_of_node(pod["spec"]["nodeName"].as_str().unwrap());
        by_ip.insert(
            pod["status"]["podIP"].as_str().unwrap().to_string(),
            zone.clone(),
        );
        by_name.insert(key.trim_start_matches("Pod ecommerce/").to_string(), zone);
    }
    (by_ip, by_name)
}

#[test]
fn pods_and_verify_go_over_the_servers_port_forward_and_report_the_sidecars_counters() {
    let c = Cluster::start("looking", Options::default());
    c.up();

    // pods: the app's five pods where the server's scheduler put them, no unsafe node.
    let out = c.run("pods", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let placed: BTreeMap<String, Vec<String>> = report["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            let mut pods: Vec<String> = z["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|n| {
                    assert_eq!(n["missing_local_products"], false, "{n}");
                    n["pods"].as_array().unwrap().clone()
                })
                .map(|p| p["deployment"].as_str().unwrap_or_default().to_string())
                .collect();
            pods.sort();
            (z["zone"].as_str().unwrap().to_string(), pods)
        })
        .collect();
    assert_eq!(
        placed,
        BTreeMap::from([
            (
                "us-east-1a".to_string(),
                vec![
                    "graphql".to_string(),
                    "orders-1".into(),
                    "products-1".into()
                ]
            ),
            (
                "us-east-1b".to_string(),
                vec!["orders-2".to_string(), "products-2".into()]
            ),
        ]),
        "{report}"
    );

    // pods --html: the same placement drawn, through the binary; self-contained.
    let page = c.ms.dir.path().join("pods.html");
    let out = c.run("pods", &["--html", page.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        again["zones"], report["zones"],
        "the report still goes to stdout"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    for part in [
        "<html",
        "us-east-1a",
        "us-east-1b",
        "products-1",
        "orders-2",
    ] {
        assert!(html.contains(part), "{part} not in the page");
    }
    for fetch in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(fetch), "the page fetches something: {fetch}");
    }

    // verify: the gateway's address refuses, so the queries go to graphql's pod; both they
    // and the /clusters reads go through the server's port-forward.
    c.server.reset_counts();
    let out = c.run("verify", &["--requests", "50"]);
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not answer"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["traffic"]["sent"], 50, "{v}");
    assert_eq!(v["traffic"]["succeeded"], 50, "{v}");
    assert!(
        v["traffic"]["target"]
            .as_str()
            .unwrap()
            .starts_with("pod graphql-"),
        "{v}"
    );
    let served = c.server.mesh().served();
    let queries = served
        .iter()
        .filter(|l| l.contains(":3002 POST /v1/graphql"))
        .count();
    let reads = served
        .iter()
        .filter(|l| l.contains(":15000 GET /clusters"))
        .count();
    assert_eq!(queries, 50, "{served:?}");
    // Before and after, from each caller: graphql, orders-1, orders-2.
    assert_eq!(reads, 6, "{served:?}");
    // graphql's liveness check comes first, once per graphql pod.
    let checks = served
        .iter()
        .filter(|l| l.contains(":3002 GET /v1/test"))
        .count();
    assert_eq!(checks, 1, "{served:?}");
    assert_eq!(
        c.server.counts().verb("portforward"),
        (queries + reads + checks) as u64,
        "{:?}",
        c.server.counts()
    );

    // The report is the stand-in sidecars' counters, by caller zone and target zone.
    let (zone_of_ip, zone_of_pod) = app_zones(&c.server);
    let mut want: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut products: BTreeMap<String, u64> = BTreeMap::new();
    for (caller, counters) in c.server.mesh().counters() {
        let from = zone_of_pod[&caller].clone();
        for ((cluster, ip), n) in counters {
            if cluster == ORDERS_CLUSTER {
                *want
                    .entry(from.clone())
                    .or_default()
                    .entry(zone_of_ip[&ip].clone())
                    .or_default() += n;
            } else {
                *products.entry(from.clone()).or_default() += n;
            }
        }
    }
    let got: BTreeMap<String, BTreeMap<String, u64>> = v["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            let orders: BTreeMap<String, u64> =
                serde_json::from_value(z["orders"].clone()).unwrap();
            assert_eq!(
                z["products_total"].as_u64(),
                products
                    .get(z["zone"].as_str().unwrap())
                    .copied()
                    .or(Some(0)),
                "{z}"
            );
            (z["zone"].as_str().unwrap().to_string(), orders)
        })
        .filter(|(_, orders)| !orders.is_empty())
        .collect();
    assert_eq!(got, want, "{v}");
    assert_eq!(want["us-east-1a"]["us-east-1a"], 50);
    assert_eq!(v["totals"]["orders_in_zone_pct"], 100.0, "{v}");
    assert_eq!(v["totals"]["products_on_node_pct"], 100.0, "{v}");
    assert_eq!(v["verdict"]["pass"], true, "{v}");
}

/// The stand-in mesh routes by what is stored: without the orders DestinationRule, graphql's
/// orders calls spread over both zones and `verify` fails naming the zone; with
/// products-service back at `internalTrafficPolicy: Cluster`, products calls leave the node;
/// with the Services' `trafficDistribution` instead, both stay home again.
#[test]
fn verify_follows_the_stored_policies_and_fails_once_they_are_gone() {
    use kube::api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    };
    let c = Cluster::start("unpolicied", Options::default());
    c.up();
    let verify = |what: &str| {
        let out = c.run("verify", &["--requests", "40"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{what}: {}", describe(&out)));
        (out.status.code(), v)
    };
    let (code, v) = verify("with the policies");
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["totals"]["orders_in_zone_pct"], 100.0, "{v}");

    let rules = Api::<DynamicObject>::namespaced_with(
        c.server.store(),
        "ecommerce",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "networking.istio.io",
            "v1beta1",
            "DestinationRule",
        )),
    );
    c.server
        .block_on(rules.delete("orders-destination-rule", &DeleteParams::default()))
        .unwrap();
    let (code, v) = verify("without the rule");
    assert_eq!(code, Some(1), "{v}");
    // graphql runs in us-east-1a; orders-1 there, orders-2 in us-east-1b: half and half.
    assert_eq!(v["totals"]["orders_in_zone_pct"], 50.0, "{v}");
    assert_eq!(v["totals"]["products_on_node_pct"], 100.0, "{v}");
    let failures = v["verdict"]["failures"].to_string();
    assert!(failures.contains("us-east-1a"), "{failures}");

    // up puts the rule back; then products-service at Cluster spreads products calls.
    c.up();
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(c.server.store(), "ecommerce");
    c.server
        .block_on(services.patch(
            "products-service",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"internalTrafficPolicy": "Cluster"}})),
        ))
        .unwrap();
    let (code, v) = verify("products at Cluster");
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["totals"]["orders_in_zone_pct"], 100.0, "{v}");
    let on_node = v["totals"]["products_on_node_pct"].as_f64().unwrap();
    assert!(on_node < 100.0 && on_node > 0.0, "{v}");

    // Kubernetes' own field instead (locality.mode: traffic-distribution): no rule, no
    // `Local`, and the traffic stays home again.
    c.server
        .block_on(rules.delete("orders-destination-rule", &DeleteParams::default()))
        .unwrap();
    for (service, preference) in [
        ("orders-service", "PreferSameZone"),
        ("products-service", "PreferSameNode"),
    ] {
        c.server
            .block_on(services.patch(
                service,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"trafficDistribution": preference}})),
            ))
            .unwrap();
    }
    let (code, v) = verify("trafficDistribution");
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["totals"]["orders_in_zone_pct"], 100.0, "{v}");
    assert_eq!(v["totals"]["products_on_node_pct"], 100.0, "{v}");
}

/// The objects with what differs between two equal clusters taken out: identities,
/// versions, timestamps and field-manager bookkeeping.
fn normalized(objects: BTreeMap<String, serde_json::Value>) -> BTreeMap<String, serde_json::Value> {
    objects
        .into_iter()
        .map(|(key, mut o)| {
            if let Some(meta) = o["metadata"].as_object_mut() {
                for field in [
                    "resourceVersion",
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "managedFields",
                ] {
                    meta.remove(field);
                }
            }
            (key, o)
        })
        .collect()
}

#[test]
fn up_converges_through_throttling_conflicts_and_a_slow_crd_to_the_same_objects() {
    let calm = Cluster::start("weather", Options::default());
    calm.up();
    let want = normalized(calm.server.objects());
    drop(calm);

    let stormy = Cluster::start("weather", Options::default());
    stormy.server.set_faults(Faults {
        throttle: 0.3,
        retry_after_secs: 1,
        // aws-auth does not exist yet: its create loses a race twice.
        conflicts: vec![Conflict {
            verb: "create",
            path_contains: "/configmaps".into(),
            times: 2,
        }],
        crd_delays: [
            ("nodepools.karpenter.sh".to_string(), Duration::from_secs(2)),
            ("kialis.kiali.io".to_string(), Duration::from_secs(1)),
        ]
        .into(),
        lb_delay: Duration::from_secs(1),
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    stormy.up();
    let counts = stormy.server.counts();
    eprintln!(
        "up through faults: {:?}, {} requests, {:?} injected",
        started.elapsed(),
        counts.requests(),
        counts.injected
    );
    assert!(
        counts.injected.get(&429).copied().unwrap_or(0) > 10,
        "{counts:?}"
    );
    assert_eq!(counts.injected.get(&409), Some(&2), "{counts:?}");
    assert_eq!(normalized(stormy.server.objects()), want);
}

/// An admission webhook refuses the app's first VirtualService (as Istio's validating webhook
/// does while istiod is not serving it yet): the refusal is not retried blindly — `up` fails
/// the `app` stage naming the webhook's message and skips `locality`, which needs it, while
/// every other stage completes. The next `up` converges to the objects of an undisturbed run,
/// each release installed once.
#[test]
fn a_webhook_rejection_fails_the_stage_naming_it_and_the_next_up_converges() {
    let calm = Cluster::start("webhook", Options::default());
    calm.up();
    let want = normalized(calm.server.objects());
    drop(calm);

    let c = Cluster::start("webhook", Options::default());
    c.server.set_faults(Faults {
        rejections: vec![Rejection {
            kind: "VirtualService".into(),
            times: 1,
        }],
        ..Faults::default()
    });
    let out = c.run("up", &[]);
    assert!(!out.status.success(), "{}", describe(&out));
    let summary = json_lines(&out)
        .into_iter()
        .find(|l| l["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {}", describe(&out)));
    let status: BTreeMap<String, String> = summary["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["stage"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(status.len(), meshstack::stages::all().len(), "{summary}");
    for (stage, s) in &status {
        let expected = match stage.as_str() {
            "app" => "failed",
            "locality" => "skipped",
            _ => "succeeded",
        };
        assert_eq!(s, expected, "{stage}: {summary}");
    }
    assert!(
        summary.to_string().contains("denied the request"),
        "the webhook's message is not named: {summary}"
    );
    assert_eq!(c.server.counts().injected.get(&400), Some(&1));

    let started = std::time::Instant::now();
    c.up();
    eprintln!(
        "after the webhook's rejection: the next up took {:?}",
        started.elapsed()
    );
    assert_eq!(normalized(c.server.objects()), want);
    let upgrades: Vec<String> = helm_calls(&c.helm_dir)
        .into_iter()
        .filter(|call| call[0] == "upgrade")
        .map(|call| call[2].clone())
        .collect();
    let unique: BTreeSet<&String> = upgrades.iter().collect();
    assert_eq!(upgrades.len(), unique.len(), "{upgrades:?}");
    assert_eq!(upgrades.len(), RELEASES.len(), "{upgrades:?}");
}

#[test]
fn down_with_the_api_server_stopped_still_tears_down_aws_and_warns_once() {
    let mut c = Cluster::start("orphan", Options::default());
    c.up();
    c.server.stop();
    let started = std::time::Instant::now();
    let out = c.run("down", &["--yes"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", describe(&out));
    let aws = c.server.block_on(c.moto.clients());
    assert_eq!(
        c.server.block_on(aws.inventory("orphan")),
        BTreeMap::new(),
        "{}",
        describe(&out)
    );
    let address = format!("127.0.0.1:{}", c.server.port());
    let warnings: Vec<String> = json_lines(&out)
        .into_iter()
        .filter(|l| l["event"] == "warn")
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .filter(|m| m.contains("API"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}\n{}", describe(&out));
    assert!(warnings[0].contains(&address), "{warnings:?}");
    eprintln!(
        "down with the API stopped: {took:?}, {} warning, moto holds nothing tagged",
        warnings.len()
    );
}

/// The API goes away halfway through `down` (after its first delete): the Kubernetes stages
/// still running or still to come skip their teardown with one warning, and the AWS teardown
/// runs to the end.
#[test]
fn down_with_the_api_server_stopped_halfway_still_tears_down_aws_and_warns_once() {
    let mut c = Cluster::start("halfway", Options::default());
    c.up();
    c.server.reset_counts();
    let started = std::time::Instant::now();
    let child =
        c.ms.command(&["down", "--yes", "--stack", &c.stack, "-o", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !c
        .server
        .counts()
        .writes
        .iter()
        .any(|w| w.starts_with("DELETE"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no delete within 60 s: {:?}",
            c.server.counts()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let writes_before_stop = c.server.counts().writes.len();
    c.server.stop();
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", describe(&out));
    let aws = c.server.block_on(c.moto.clients());
    assert_eq!(
        c.server.block_on(aws.inventory("halfway")),
        BTreeMap::new(),
        "{}",
        describe(&out)
    );
    let warnings: Vec<String> = json_lines(&out)
        .into_iter()
        .filter(|l| l["event"] == "warn")
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .filter(|m| m.contains("API"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}\n{}", describe(&out));
    assert!(
        warnings[0].contains(&format!("127.0.0.1:{}", c.server.port())),
        "{warnings:?}"
    );
    eprintln!(
        "down with the API stopped after {writes_before_stop} API write(s): {took:?}, {} warning, moto holds nothing tagged",
        warnings.len()
    );
}

/// The releases the recording helm holds: name -> its `helm list` status.
fn release_states(c: &Cluster) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(c.helm_dir.join("releases")) else {
        return out; // helm has not run yet
    };
    for e in entries.flatten() {
        // A file being rewritten reads as empty for a moment; it is there next time.
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        out.insert(
            v[0]["name"].as_str().unwrap().to_string(),
            v[0]["status"].as_str().unwrap().to_string(),
        );
    }
    out
}

/// Wait (up to a minute) until `ready` holds, the child still running.
fn wait_until(child: &mut std::process::Child, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not {what} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn send(child: &std::process::Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig}");
}

/// Sends `sig` to the process group `child` leads.
fn send_group(child: &std::process::Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} of the group");
}

/// Issue 10: `up` killed with SIGKILL inside the Kubernetes stages — while a release is pending
/// (helm's `--wait`), and between two applies — then `up` again: it converges, with every
/// release deployed exactly once, none left pending, and the same objects as an undisturbed
/// run. `MESHSTACK_K8S_KILL_POINTS` adds seeded kill points (scripts/soak runs more).
#[test]
fn a_kill_inside_the_kubernetes_stages_resumes_without_a_pending_or_duplicate_release() {
    let (reference, total_writes) = {
        let c = Cluster::start("killed", Options::default());
        c.up();
        (
            normalized(c.server.objects()),
            c.server.counts().writes.len() as u64,
        )
    };
    // Kill points: (what, when). A pending release, a given number of API writes.
    let mut points: Vec<(String, u64)> = vec![("pending".into(), 0), ("writes".into(), 25)];
    let extra: u64 = std::env::var("MESHSTACK_K8S_KILL_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..extra {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Strictly inside the run: a kill point past its last write would never be reached.
        points.push(("writes".into(), 1 + seed % (total_writes - 1)));
    }
    for (what, n) in points {
        let mut c = Cluster::start("killed", Options::default());
        // Each chart "waits" a second (scaled), so a kill can land while one is pending.
        c.ms.extra_env
            .push(("MESHSTACK_FAKE_HELM_DELAYS".into(), "*=20".into()));
        // Its own process group, killed whole: the machine or session dies, helm with it. (A
        // helm left running after meshstack alone is killed may finish the release on its own,
        // and then there is nothing to recover.)
        let mut child = {
            use std::os::unix::process::CommandExt;
            c.ms.command(&["up", "--stack", &c.stack, "-o", "json"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap()
        };
        match what.as_str() {
            "pending" => wait_until(&mut child, "a release pending", || {
                release_states(&c)
                    .values()
                    .any(|s| s.starts_with("pending"))
            }),
            _ => wait_until(&mut child, &format!("{n} API writes"), || {
                c.server.counts().writes.len() as u64 >= n
            }),
        }
        send_group(&child, "KILL");
        let _ = child.wait();
        let left = release_states(&c);
        if what == "pending" {
            assert!(
                left.values().any(|s| s.starts_with("pending")),
                "the kill left no release pending: {left:?}"
            );
        }

        c.ms.extra_env
            .retain(|(k, _)| k != "MESHSTACK_FAKE_HELM_DELAYS");
        let out = c.run("up", &["--force-unlock"]);
        assert!(out.status.success(), "{what} {n}: {}", describe(&out));
        let states = release_states(&c);
        assert_eq!(states.len(), RELEASES.len(), "{what} {n}: {states:?}");
        assert!(
            states.values().all(|s| s == "deployed"),
            "{what} {n}: left {left:?}, now {states:?}"
        );
        // A release the kill left pending was recovered (uninstalled or rolled back), not
        // installed over.
        for (name, state) in &left {
            if state.starts_with("pending") {
                let recovered = helm_calls(&c.helm_dir).iter().any(|call| {
                    (call[0] == "uninstall" || call[0] == "rollback") && &call[1] == name
                });
                assert!(
                    recovered,
                    "{what} {n}: {name} was {state} and not recovered"
                );
            }
        }
        // The stand-in controllers settle on their own time (helm's record of a recovered
        // release, say): compare once they have.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while normalized(c.server.objects()) != reference && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let now = normalized(c.server.objects());
        let differ: Vec<&String> = reference
            .keys()
            .chain(now.keys())
            .filter(|k| reference.get(*k) != now.get(*k))
            .collect();
        assert!(
            differ.is_empty(),
            "{what} {n}: objects differ from an undisturbed run: {differ:?}"
        );
    }
}

/// Issue 10: one Ctrl-C while helm waits on a chart stops the wait (and helm) at once; the stage
/// is recorded as interrupted, the lock released; the next `up` recovers the pending release and
/// converges.
#[test]
fn one_ctrl_c_during_helms_wait_stops_at_once_and_the_next_up_recovers_the_release() {
    let mut c = Cluster::start("hurried", Options::default());
    // kube-prometheus-stack "waits" an hour.
    c.ms.extra_env.push((
        "MESHSTACK_FAKE_HELM_DELAYS".into(),
        "kube-prometheus-stack=72000".into(),
    ));
    let mut child =
        c.ms.command(&["up", "--stack", &c.stack, "-o", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    wait_until(&mut child, "prom pending", || {
        release_states(&c)
            .get("prom")
            .is_some_and(|s| s == "pending-install")
    });
    let signalled = std::time::Instant::now();
    send(&child, "INT");
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after Ctrl-C"
    );
    eprintln!("exit {took:?} after Ctrl-C during helm's wait");
    let status = c.run("status", &[]);
    assert_eq!(
        status.status.code(),
        Some(3),
        "interrupted: {}",
        describe(&status)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let prometheus = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "prometheus")
        .unwrap()
        .clone();
    assert_eq!(prometheus["journal"], "interrupted", "{prometheus}");

    c.ms.extra_env
        .retain(|(k, _)| k != "MESHSTACK_FAKE_HELM_DELAYS");
    c.up();
    assert!(
        helm_calls(&c.helm_dir)
            .iter()
            .any(|call| call[0] == "uninstall" && call[1] == "prom"),
        "the pending prom was not recovered"
    );
    assert!(release_states(&c).values().all(|s| s == "deployed"));
}

/// Issue 19: versions change on a live environment. Built with Karpenter 1.8.1 and Istio
/// 1.18.7 on Kubernetes 1.34 (in extended support since 2026-12-02, which the stack accepts),
/// by a meshstack whose Karpenter CRDs came from the controller chart's `crds/` (unowned, as
/// the CRDs of Istio 1.18's base chart are), the stack moves to Karpenter 1.14.1 and Istio
/// 1.30.3. The CRDs are handed to the releases that now own them before those are upgraded,
/// the CRD chart before the controller's, Kiali moves to Istio 1.30's operator with its CR in
/// Kiali 2's shape; then `plan`/`status` are clean and a rerun changes nothing.
///
/// The recording helm does not refuse to take over unowned objects as real helm does
/// ("invalid ownership metadata"); what this checks is that meshstack marks them first. The
/// real refusal is checked against real helm on the local control plane.
#[test]
fn karpenter_and_istio_move_to_newer_releases_on_a_live_environment() {
    let mut c = Cluster::start("moving", Options::default());
    c.ms.extra_env
        .push(("MESHSTACK_TODAY".into(), "2026-12-06".into()));
    let stack = |karpenter: &str, istio: &str| {
        format!(
            "name: moving\nregion: us-east-1\nkubernetes_version: \"1.34\"\n\
             cluster: {{support: extended}}\nkarpenter: {{version: {karpenter}}}\n\
             istio: {{version: {istio}}}\n"
        )
    };
    c.stack =
        c.ms.stack_file("old.yaml", &stack("1.8.1", "1.18.7"))
            .display()
            .to_string();
    c.up();
    // What an older meshstack left: Karpenter's CRDs without helm's ownership.
    let crds: Api<CustomResourceDefinition> = Api::all(c.server.store());
    for name in ["nodepools.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws"] {
        let mut crd = c.server.block_on(crds.get(name)).unwrap();
        crd.metadata.annotations = None;
        crd.metadata.labels = None;
        crd.metadata.managed_fields = None;
        c.server
            .block_on(crds.replace(name, &PostParams::default(), &crd))
            .unwrap();
    }
    let istio_crds = |c: &Cluster| -> Vec<CustomResourceDefinition> {
        c.server
            .block_on(crds.list(&Default::default()))
            .unwrap()
            .items
            .into_iter()
            .filter(|crd| crd.spec.group.ends_with(".istio.io"))
            .collect()
    };
    assert!(!istio_crds(&c).is_empty());
    let owner = |crd: &CustomResourceDefinition| {
        crd.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("meta.helm.sh/release-name").cloned())
    };
    assert!(istio_crds(&c).iter().all(|crd| owner(crd).is_none()));

    c.stack =
        c.ms.stack_file("new.yaml", &stack("1.14.1", "1.30.3"))
            .display()
            .to_string();
    let before = helm_calls(&c.helm_dir).len();
    c.up();
    let upgrades: Vec<(String, String)> =
        crate::support::k8s::installs_by_repository(&helm_calls(&c.helm_dir).split_off(before))
            .into_iter()
            .filter(|call| call[0] == "upgrade")
            .map(|call| {
                let at = call.iter().position(|a| a == "--version").unwrap();
                (call[2].clone(), call[at + 1].clone())
            })
            .collect();
    let pos = |name: &str| upgrades.iter().position(|(n, _)| n == name);
    for (name, version) in [
        ("karpenter-crd", "1.14.1"),
        ("karpenter", "1.14.1"),
        ("istio-base", "1.30.3"),
        ("istiod", "1.30.3"),
        ("istio-ingressgateway", "1.30.3"),
        ("kiali-operator", "2.26.0"),
    ] {
        assert!(
            upgrades.contains(&(name.to_string(), version.to_string())),
            "{name} {version} not in {upgrades:?}"
        );
    }
    assert!(pos("karpenter-crd") < pos("karpenter"), "{upgrades:?}");
    assert!(pos("istio-base") < pos("istiod"), "{upgrades:?}");
    for name in ["nodepools.karpenter.sh", "ec2nodeclasses.karpenter.k8s.aws"] {
        let crd = c.server.block_on(crds.get(name)).unwrap();
        assert_eq!(owner(&crd).as_deref(), Some("karpenter-crd"), "{name}");
    }
    for crd in istio_crds(&c) {
        assert_eq!(
            owner(&crd).as_deref(),
            Some("istio-base"),
            "{:?}",
            crd.metadata.name
        );
    }
    let objects = c.server.objects();
    let kiali = &objects["Kiali istio-system/kiali"];
    assert_eq!(
        kiali["spec"]["deployment"]["cluster_wide_access"], false,
        "{kiali}"
    );
    assert!(
        kiali["spec"]["deployment"]["discovery_selectors"]["default"].is_array(),
        "{kiali}"
    );
    // A real API server's server-side apply also removes `accessible_namespaces`, which
    // meshstack owned and no longer applies; this in-memory server keeps such fields (it does
    // not model field removal), so that is checked against the real API server.

    assert_converged_view(&c);
    up_changes_nothing(&c, &objects, "an up after the versions moved");
}

/// Issue 20, defect 2: a `down` killed inside `helm uninstall` (the whole process group, as a
/// Ctrl-C or a closed terminal does) leaves the release `uninstalling`, which helm refuses to
/// upgrade ("has no deployed releases"). The next `up` finishes the uninstall and installs it
/// again; every release ends deployed, and a further `up` changes nothing.
#[test]
fn a_down_killed_inside_helm_uninstall_does_not_block_the_next_up() {
    let mut c = Cluster::start("halfdown", Options::default());
    c.up();
    // Each uninstall "takes" three seconds (scaled), so the kill lands inside one.
    c.ms.extra_env
        .push(("MESHSTACK_FAKE_HELM_UNINSTALL_DELAYS".into(), "*=60".into()));
    let mut child = {
        use std::os::unix::process::CommandExt;
        c.ms.command(&["down", "--yes", "--stack", &c.stack, "-o", "json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    wait_until(&mut child, "a release uninstalling", || {
        release_states(&c).values().any(|s| s == "uninstalling")
    });
    send_group(&child, "KILL");
    let _ = child.wait();
    let left = release_states(&c);
    // One release, or two when the kill lands while independent stages (`down` runs them in
    // parallel, as `up` does) are each inside an uninstall.
    let stuck: Vec<String> = left
        .iter()
        .filter(|(_, s)| *s == "uninstalling")
        .map(|(n, _)| n.clone())
        .collect();
    assert!(!stuck.is_empty(), "{left:?}");

    c.ms.extra_env
        .retain(|(k, _)| k != "MESHSTACK_FAKE_HELM_UNINSTALL_DELAYS");
    let before = helm_calls(&c.helm_dir).len();
    let out = c.run("up", &["--force-unlock"]);
    assert!(out.status.success(), "{}", describe(&out));
    let states = release_states(&c);
    assert_eq!(states.len(), RELEASES.len(), "{states:?}");
    assert!(states.values().all(|s| s == "deployed"), "{states:?}");
    let calls: Vec<Vec<String>> = helm_calls(&c.helm_dir).split_off(before);
    let at = |verb: &str, release: &String| {
        calls
            .iter()
            .position(|call| call[0] == verb && call[..].contains(release))
            .unwrap_or_else(|| panic!("no {verb} of {release} in {calls:?}"))
    };
    for release in &stuck {
        assert!(
            at("uninstall", release) < at("upgrade", release),
            "{release}: {calls:?}"
        );
    }
    let objects = c.server.objects();
    up_changes_nothing(&c, &objects, "an up after the recovery");
}
