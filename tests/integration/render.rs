//! `meshstack render` through the real binary: the default stack's render matches the
//! golden files in tests/golden/default byte for byte, every rendered manifest is a
//! well-formed Kubernetes object, and every IAM document is written under `iam/`. (What the
//! files must agree with upstream is in `contracts`.)
//!
//! After an intended change to a template (or to what feeds it), regenerate the golden files
//! with
//!
//! ```sh
//! MESHSTACK_BLESS=1 cargo test --test integration render
//! ```
//!
//! and review the diff: it is exactly what `up` would apply differently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use crate::support::{describe, Meshstack};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/default");

/// Kinds that live in a namespace, and the cluster-scoped ones; a rendered kind in neither
/// list fails the test, so a new kind gets classified.
const NAMESPACED: &[&str] = &[
    "ServiceAccount",
    "Service",
    "Deployment",
    "ConfigMap",
    "PodMonitor",
    "ServiceMonitor",
    "Kiali",
    "Gateway",
    "VirtualService",
    "DestinationRule",
];
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "NodePool",
    "EC2NodeClass",
    "Provisioner",
    "AWSNodeTemplate",
];

/// Every regular file under `dir`, by path relative to it (with `/`), with its bytes.
pub fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.insert(rel.join("/"), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.is_dir() {
        walk(dir, dir, &mut out);
    }
    out
}

/// `meshstack render --out <tmp>/out` with a clean environment (no AWS, no stack file in the
/// working folder, so the built-in default stack); the rendered files.
pub fn render_default(ms: &Meshstack) -> (PathBuf, BTreeMap<String, Vec<u8>>) {
    let out_dir = ms.dir.path().join("out");
    let out = ms.run(&["render", "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "render: {}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Offline stand-ins are announced, and so is the Istio 1.18 support gap.
    for part in [
        "account 000000000000",
        "https://meshstack-demo.example.invalid",
        "region us-east-1",
        "OIDC issuer https://oidc.eks.us-east-1.amazonaws.com/id/00000000000000000000000000000000",
        "warning: Istio 1.18.7 supports Kubernetes 1.24 to 1.27 only",
    ] {
        assert!(
            stderr.contains(part),
            "want {part:?} on stderr: {}",
            describe(&out)
        );
    }
    let files = files_under(&out_dir);
    // stdout lists exactly the files written.
    let listed: Vec<&str> = stdout.lines().collect();
    assert_eq!(listed.len(), files.len(), "{}", describe(&out));
    for rel in files.keys() {
        let full = out_dir.join(rel);
        assert!(
            listed.contains(&full.to_str().unwrap()),
            "{rel} not listed: {}",
            describe(&out)
        );
    }
    (out_dir, files)
}

#[test]
fn render_matches_the_golden_files() {
    let ms = Meshstack::new(None);
    let (_, rendered) = render_default(&ms);
    assert!(rendered.len() >= 15, "only {} files", rendered.len());

    if std::env::var_os("MESHSTACK_BLESS").is_some_and(|v| v == "1") {
        let _ = std::fs::remove_dir_all(GOLDEN);
        for (rel, bytes) in &rendered {
            let path = Path::new(GOLDEN).join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        eprintln!("blessed {} files into {GOLDEN}", rendered.len());
        return;
    }

    let golden = files_under(Path::new(GOLDEN));
    let missing: Vec<&String> = golden
        .keys()
        .filter(|k| !rendered.contains_key(*k))
        .collect();
    let extra: Vec<&String> = rendered
        .keys()
        .filter(|k| !golden.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "golden files not rendered: {missing:?}; rendered files without a golden copy: \
         {extra:?} (MESHSTACK_BLESS=1 regenerates tests/golden/default)"
    );
    for (rel, bytes) in &rendered {
        let want = &golden[rel];
        if bytes != want {
            let (got, want) = (
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(want),
            );
            let line = got
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| got.lines().count().min(want.lines().count()));
            panic!(
                "{rel} differs from tests/golden/default/{rel} at line {}:\n  rendered: {:?}\n  \
                 golden:   {:?}\n(MESHSTACK_BLESS=1 regenerates the golden files after an \
                 intended change)",
                line + 1,
                got.lines().nth(line).unwrap_or("<end of file>"),
                want.lines().nth(line).unwrap_or("<end of file>"),
            );
        }
    }
}

/// Every YAML document of a file.
fn documents(rel: &str, bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{rel}: not UTF-8: {e}"));
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: not YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every string in a document, keys included.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Mapping(map) => {
            for (k, v) in map {
                strings(k, out);
                strings(v, out);
            }
        }
        Value::Tagged(t) => strings(&t.value, out),
        _ => {}
    }
}

#[test]
fn rendered_manifests_are_well_formed_objects() {
    let ms = Meshstack::new(None);
    let (_, rendered) = render_default(&ms);
    let mut objects: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut partials: Vec<Value> = Vec::new();
    let mut iam = Vec::new();
    for (rel, bytes) in &rendered {
        if let Some(name) = rel.strip_prefix("iam/") {
            // IAM documents: JSON, every placeholder filled in, at least one statement.
            let doc: serde_json::Value =
                serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{rel}: not JSON: {e}"));
            let text = doc.to_string();
            assert!(!text.contains("${"), "{rel}: {text}");
            let statements = doc["Statement"].as_array();
            assert!(statements.is_some_and(|s| !s.is_empty()), "{rel}: {text}");
            iam.push(name.to_owned());
            continue;
        }
        let docs = documents(rel, bytes);
        assert!(!docs.is_empty(), "{rel}: no YAML document");
        let mut all = Vec::new();
        docs.iter().for_each(|d| strings(d, &mut all));
        // The seed's unfilled placeholder, and ours, never reach a cluster.
        for s in &all {
            assert!(!s.contains("cluster-name"), "{rel}: {s:?}");
            assert!(!s.contains("${"), "{rel}: {s:?}");
        }
        if rel.ends_with("values.yaml") {
            // Helm values: a mapping, not objects.
            assert!(docs.len() == 1 && docs[0].is_mapping(), "{rel}");
            continue;
        }
        for (i, doc) in docs.iter().enumerate() {
            let at = format!("{rel} document {i}");
            let text = |v: &Value| v.as_str().map(str::to_owned);
            assert!(text(&doc["apiVersion"]).is_some(), "{at}: no apiVersion");
            let kind = text(&doc["kind"]).unwrap_or_else(|| panic!("{at}: no kind"));
            let name =
                text(&doc["metadata"]["name"]).unwrap_or_else(|| panic!("{at}: no metadata.name"));
            let namespace = text(&doc["metadata"]["namespace"]);
            if NAMESPACED.contains(&kind.as_str()) {
                assert!(namespace.is_some(), "{at}: {kind} {name} has no namespace");
            } else if CLUSTER_SCOPED.contains(&kind.as_str()) {
                assert!(
                    namespace.is_none(),
                    "{at}: cluster-scoped {kind} {name} has a namespace"
                );
            } else {
                panic!("{at}: kind {kind} is in neither NAMESPACED nor CLUSTER_SCOPED");
            }
            if rel.starts_with("stacks/locality/") && kind == "Service" {
                // The locality stage's one field of the app's Service, checked below.
                partials.push(doc.clone());
                continue;
            }
            let key = (kind.clone(), name.clone());
            assert!(
                objects.insert(key, doc.clone()).is_none(),
                "{at}: {kind} {name} rendered twice"
            );
        }
    }

    // Every document policies::all builds, each once.
    assert_eq!(
        iam,
        [
            "meshstack-demo-cluster-trust.json",
            "meshstack-demo-karpenter-KarpenterControllerPolicy.json",
            "meshstack-demo-karpenter-pending-trust.json",
            "meshstack-demo-karpenter-queue-policy.json",
            "meshstack-demo-karpenter-trust.json",
            "meshstack-demo-node-trust.json",
        ]
    );

    let get = |kind: &str, name: &str| {
        objects
            .get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
    };
    // The NodePool launches through the EC2NodeClass that is rendered alongside it.
    let pool = get("NodePool", "ecommerce");
    let class_ref = &pool["spec"]["template"]["spec"]["nodeClassRef"];
    assert_eq!(class_ref["group"], "karpenter.k8s.aws");
    assert_eq!(class_ref["kind"], "EC2NodeClass");
    let class = get("EC2NodeClass", class_ref["name"].as_str().unwrap());
    assert_eq!(class["apiVersion"], "karpenter.k8s.aws/v1");
    assert_eq!(class["spec"]["role"], "meshstack-demo-node");
    assert_eq!(
        pool["spec"]["disruption"]["consolidationPolicy"],
        "WhenEmptyOrUnderutilized"
    );
    let labels = &pool["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["managedBy"], "karpenter");
    assert_eq!(labels["billing-team"], "ecommerce");

    // The app leaves internalTrafficPolicy to the `locality` stage, whose partial object sets
    // exactly that field of the app's products Service.
    let products = get("Service", "products-service");
    assert!(products["spec"].get("internalTrafficPolicy").is_none());
    assert_eq!(partials.len(), 1);
    assert_eq!(partials[0]["metadata"], products["metadata"]);
    let spec = partials[0]["spec"].as_mapping().unwrap();
    assert_eq!(spec.len(), 1);
    assert_eq!(partials[0]["spec"]["internalTrafficPolicy"], "Local");
    // The orders rule is generated for the stack's zones and targets the orders Service.
    let rule = get("DestinationRule", "orders-destination-rule");
    assert_eq!(
        rule["spec"]["host"],
        "orders-service.ecommerce.svc.cluster.local"
    );
    assert_eq!(
        rule["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["enabled"],
        true
    );

    // Every node that runs a products client must run products: orders-2 requires a products
    // pod on its node, and graphql requires orders-2's node. Each in ONE term: the scheduler
    // counts a node for required pod affinity only where one pod matches every term, so a
    // second term (say "app=products" beside "app=orders") could never be met.
    let required_terms = |deployment: &str| -> Vec<serde_yaml::Value> {
        get("Deployment", deployment)["spec"]["template"]["spec"]["affinity"]["podAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{deployment}: no required podAffinity"))
            .clone()
    };
    let selects = |term: &serde_yaml::Value, key: &str, value: &str| {
        term["topologyKey"] == "kubernetes.io/hostname"
            && term["labelSelector"]["matchExpressions"]
                .as_sequence()
                .is_some_and(|m| {
                    m.iter().any(|e| {
                        e["key"] == key
                            && e["operator"] == "In"
                            && e["values"]
                                .as_sequence()
                                .is_some_and(|v| v.iter().any(|x| x == value))
                    })
                })
    };
    let orders2 = required_terms("orders-2");
    assert_eq!(orders2.len(), 1, "{orders2:?}");
    assert!(selects(&orders2[0], "app", "products"), "{orders2:?}");
    let graphql = required_terms("graphql");
    assert_eq!(graphql.len(), 1, "{graphql:?}");
    let orders2_labels = &get("Deployment", "orders-2")["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&graphql[0], "app", "orders"), "{graphql:?}");
    assert!(
        selects(
            &graphql[0],
            "version",
            orders2_labels["version"].as_str().unwrap()
        ),
        "graphql follows orders-2 (whose node has products), not any orders: {graphql:?}"
    );
    let orders1_labels = &get("Deployment", "orders-1")["spec"]["template"]["metadata"]["labels"];
    assert_ne!(orders1_labels["version"], orders2_labels["version"]);
    // ... and products-1 and products-2 are in different zones.
    for deployment in ["products-1", "products-2"] {
        let spec = &get("Deployment", deployment)["spec"];
        let anti = &spec["template"]["spec"]["affinity"]["podAntiAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(
            anti["topologyKey"], "topology.kubernetes.io/zone",
            "{deployment}"
        );
        assert_eq!(spec["strategy"]["type"], "Recreate", "{deployment}");
    }
}

/// `images:` pins the app's images by digest: the manifests name exactly those, `plan` counts
/// what still runs by tag, and a tag under `images:` is refused before anything happens.
#[test]
fn app_images_pinned_by_digest_are_what_the_manifests_run() {
    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let ms = Meshstack::new(None);
    let pinned = format!("registry.example/team/graphql@{DIGEST}");
    let stack = ms.stack_file(
        "pinned.yaml",
        &format!("name: pinned\nregion: us-east-1\nimages:\n  graphql: {pinned}\n"),
    );
    let out_dir = ms.dir.path().join("out");
    let out = ms.run(&[
        "render",
        "--stack",
        stack.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let graphql = std::fs::read_to_string(out_dir.join("stacks/ecommerce/graphql.yaml")).unwrap();
    assert!(
        graphql.contains(&format!("image: \"{pinned}\"")),
        "{graphql}"
    );
    assert!(
        !graphql.contains("lukondefmwila/ecommerce-graphql"),
        "{graphql}"
    );
    let orders = std::fs::read_to_string(out_dir.join("stacks/ecommerce/orders.yaml")).unwrap();
    assert!(
        orders.contains("lukondefmwila/ecommerce-orders:0.2.9"),
        "{orders}"
    );

    let out = ms.run(&["plan", "--stack", stack.to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_tag: Vec<&str> = plan["images_by_tag"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        by_tag,
        ["orders-v1", "orders-v2", "products-v1", "products-v2"]
    );

    let tagged = ms.stack_file(
        "tagged.yaml",
        "name: tagged\nregion: us-east-1\nimages:\n  graphql: lukondefmwila/ecommerce-graphql:0.1.6\n",
    );
    let out = ms.run(&["plan", "--stack", tagged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("images.graphql"), "{err}");
    assert!(err.contains("is not pinned by digest"), "{err}");
}
