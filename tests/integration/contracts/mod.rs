//! The contract layer: what `meshstack render --out DIR` writes, held to the upstream files of
//! the releases meshstack pins (`tests/upstream/index.tsv`, found and hash-checked by
//! `support::upstream`), so that a manifest field the API server would prune, a values key
//! helm would ignore, or an IAM grant AWS would deny fails here rather than on a paid account.
//!
//! - [`check_custom_resources`]: every custom resource against its CRD's `openAPIV3Schema` for
//!   the served version, strictly ([`schema`]).
//! - [`check_core_objects`]: every Kubernetes kind against k8s-openapi's types for the stack's
//!   Kubernetes version ([`core`]).
//! - [`check_values`]: every helm values key against the pinned chart's defaults ([`values`]).
//! - [`iam`]: every IAM document through parliament; the controller policy, queue policy, node
//!   role and EventBridge rules against upstream's CloudFormation.
//!
//! The checkers are pure functions from rendered files and upstream files to [`Violation`]s
//! (file, object, field, why); the tests feed them the binary's output, and the mutation tests
//! feed them the same output with one deliberate mistake and expect it named.

pub mod core;
pub mod iam;
pub mod schema;
pub mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::render::{files_under, render_default};
use crate::support::upstream::{upstream, Upstream};
use crate::support::{describe, Meshstack};
use core::K8sType;
use schema::Schema;
use values::Chart;

/// One broken contract: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rendered file, like `karpenter/nodepool.yaml` or `iam/x-trust.json`.
    pub file: String,
    /// The object in it, like `NodePool ecommerce`, `values for karpenter 1.8.1`, `statement X`.
    pub object: String,
    /// The field, dotted, like `spec.template.spec.requirements[0].key`.
    pub field: String,
    pub message: String,
}

impl Violation {
    pub fn new(
        file: &str,
        object: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Violation {
            file: file.to_owned(),
            object: object.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: {}",
            self.file, self.object, self.field, self.message
        )
    }
}

/// `a.b` + `c` -> `a.b.c`.
pub fn join_field(at: &str, key: &str) -> String {
    match (at.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => at.to_owned(),
        _ => format!("{at}.{key}"),
    }
}

fn assert_none(what: &str, found: &[Violation]) {
    assert!(
        found.is_empty(),
        "{what}: {} broken contract(s):\n  {}",
        found.len(),
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// The rendered files of one stack: path -> bytes.
pub type Rendered = BTreeMap<String, Vec<u8>>;

/// `meshstack render` of the default stack, through the binary.
pub fn render_default_stack() -> Rendered {
    let ms = Meshstack::new(None);
    render_default(&ms).1
}

/// `meshstack render --stack FILE` of `yaml`, through the binary.
pub fn render_stack(yaml: &str) -> Rendered {
    let ms = Meshstack::new(None);
    let stack = ms.stack_file("stack.yaml", yaml);
    let out_dir = ms.dir.path().join("out");
    let out = ms.run(&[
        "render",
        "--stack",
        stack.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "render: {}", describe(&out));
    files_under(&out_dir)
}

/// Every YAML document of a rendered file, as JSON.
pub fn documents(file: &str, bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// `Kind name` for messages.
pub fn object_name(obj: &Value) -> String {
    format!(
        "{} {}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The Kubernetes objects of the rendered manifests (not values files, not IAM documents):
/// (file, object).
pub fn objects(rendered: &Rendered) -> Vec<(String, Value)> {
    rendered
        .iter()
        .filter(|(f, _)| !f.ends_with("values.yaml") && !f.starts_with("iam/"))
        .flat_map(|(f, bytes)| documents(f, bytes).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

/// One served version of a CRD, compiled strictly.
pub struct CrdVersion {
    /// The upstream file it comes from.
    pub source: String,
    pub deprecated: Option<String>,
    pub schema: Schema,
}

/// Every CRD the upstream files define: (group, kind) -> version -> schema. Kiali's comes from
/// the documented schema (the chart's CRD keeps every field, so the API server checks
/// nothing; the operator ignores what the schema does not document).
pub struct Crds(BTreeMap<(String, String), BTreeMap<String, CrdVersion>>);

/// The CRD files among the upstream files, and the one that is not a contract.
pub const CRD_FILES: &[&str] = &[
    "crds/karpenter.sh_nodepools.yaml",
    "crds/karpenter.k8s.aws_ec2nodeclasses.yaml",
    "crds/monitoring.coreos.com_podmonitors.yaml",
    "crds/monitoring.coreos.com_servicemonitors.yaml",
    "crds/networking.istio.io-1.18.7.yaml",
    "crds/kiali.io_kialis.yaml",
];

impl Crds {
    pub fn load(up: &Upstream) -> Crds {
        let mut map: BTreeMap<(String, String), BTreeMap<String, CrdVersion>> = BTreeMap::new();
        for file in CRD_FILES {
            for crd in up.yaml_documents(file) {
                assert_eq!(crd["kind"], "CustomResourceDefinition", "{file}");
                let group = crd["spec"]["group"].as_str().unwrap().to_owned();
                let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
                for v in crd["spec"]["versions"].as_array().unwrap() {
                    if v["served"] != true {
                        continue;
                    }
                    let raw = &v["schema"]["openAPIV3Schema"];
                    assert!(
                        raw.is_object(),
                        "{file}: {kind} {} has no schema",
                        v["name"]
                    );
                    let schema = Schema::compile(&schema::strict(raw))
                        .unwrap_or_else(|e| panic!("{file}: {kind}: {e}"));
                    let deprecated = (v["deprecated"] == true).then(|| {
                        v["deprecationWarning"]
                            .as_str()
                            .unwrap_or("deprecated")
                            .to_owned()
                    });
                    map.entry((group.clone(), kind.clone()))
                        .or_default()
                        .insert(
                            v["name"].as_str().unwrap().to_owned(),
                            CrdVersion {
                                source: file.to_string(),
                                deprecated,
                                schema,
                            },
                        );
                }
            }
        }
        Crds(map)
    }

    /// Checks one custom resource: a CRD serves its version, not deprecated, the object fits
    /// the schema, and its metadata is ObjectMeta.
    pub fn check(&self, file: &str, obj: &Value) -> Vec<Violation> {
        let object = object_name(obj);
        let api = obj["apiVersion"].as_str().unwrap_or("");
        let (group, version) = api.split_once('/').unwrap_or(("", api));
        let kind = obj["kind"].as_str().unwrap_or("");
        let Some(versions) = self.0.get(&(group.to_owned(), kind.to_owned())) else {
            return vec![Violation::new(
                file,
                &object,
                "apiVersion",
                format!("no upstream CRD defines {group} {kind}; add its CRD to the index and CRD_FILES"),
            )];
        };
        let Some(crd) = versions.get(version) else {
            return vec![Violation::new(
                file,
                &object,
                "apiVersion",
                format!(
                    "{api}: the CRD serves {} only",
                    versions.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )];
        };
        let mut out = Vec::new();
        if let Some(why) = &crd.deprecated {
            out.push(Violation::new(
                file,
                &object,
                "apiVersion",
                format!("{api} is deprecated: {why}"),
            ));
        }
        out.extend(
            crd.schema
                .check(file, &object, "", obj)
                .into_iter()
                .map(|mut v| {
                    v.message = format!(
                        "{} (CRD {}; the API server prunes an undeclared field without a word)",
                        v.message, crd.source
                    );
                    v
                }),
        );
        out.extend(core::check_metadata(file, &object, obj));
        out
    }
}

/// Every custom resource in `rendered` against the CRDs.
pub fn check_custom_resources(crds: &Crds, rendered: &Rendered) -> Vec<Violation> {
    objects(rendered)
        .iter()
        .filter(|(_, o)| !core::is_core(o["apiVersion"].as_str().unwrap_or("")))
        .flat_map(|(f, o)| crds.check(f, o))
        .collect()
}

/// Every Kubernetes kind in `rendered` against k8s-openapi's types.
pub fn check_core_objects(rendered: &Rendered) -> Vec<Violation> {
    objects(rendered)
        .iter()
        .filter(|(_, o)| core::is_core(o["apiVersion"].as_str().unwrap_or("")))
        .flat_map(|(f, o)| core::check_object(f, &object_name(o), o))
        .collect()
}

/// The Istio MeshConfig schema (istio/api's generated OpenAPI), strict, compiled.
fn mesh_config_schema(up: &Upstream) -> Schema {
    let mut api = up.yaml("istio-api/istio.mesh.v1alpha1.gen.json");
    let components = api["components"]["schemas"].as_object_mut().unwrap();
    for s in components.values_mut() {
        *s = schema::strict_inner(s);
    }
    let root = json!({
        "$ref": "#/components/schemas/istio.mesh.v1alpha1.MeshConfig",
        "components": api["components"],
    });
    Schema::compile(&root).expect("Istio's MeshConfig schema compiles")
}

/// The charts meshstack installs, by the rendered values file that feeds each, with what each
/// accepts. The typed paths, schemas and free-form allow-lists are the only hand-written part,
/// each with why. No allow-list entry is needed today: every map meshstack fills freely
/// (annotations, labels, nodeSelector) defaults to `{}` in its chart.
pub fn charts(up: &Upstream) -> BTreeMap<&'static str, Chart> {
    let nothing_free = Vec::new;
    let mut kps = up.yaml("values/kube-prometheus-stack-77.1.1.yaml");
    values::merge_subchart(&mut kps, "grafana", up.yaml("values/grafana-9.4.3.yaml"));
    values::merge_subchart(
        &mut kps,
        "kube-state-metrics",
        up.yaml("values/kube-state-metrics-6.1.5.yaml"),
    );
    values::merge_subchart(
        &mut kps,
        "prometheus-node-exporter",
        up.yaml("values/prometheus-node-exporter-4.47.3.yaml"),
    );
    let gateway_schema = up.yaml("values/istio-gateway-1.18.7.schema.json");
    BTreeMap::from([
        (
            "karpenter/values.yaml",
            Chart {
                name: "karpenter 1.8.1".into(),
                defaults: up.yaml("values/karpenter-1.8.1.yaml"),
                free_form: nothing_free(),
                typed: vec![
                    ("affinity", K8sType::Affinity),
                    ("controller.resources", K8sType::Resources),
                    ("nodeSelector", K8sType::NodeSelector),
                    ("tolerations", K8sType::Tolerations),
                ],
                schemas: vec![],
                values_schema: None,
            },
        ),
        (
            "observability/prometheus-values.yaml",
            Chart {
                name: "kube-prometheus-stack 77.1.1".into(),
                defaults: kps,
                free_form: nothing_free(),
                typed: vec![
                    ("grafana.nodeSelector", K8sType::NodeSelector),
                    (
                        "prometheus.prometheusSpec.nodeSelector",
                        K8sType::NodeSelector,
                    ),
                    ("prometheus.prometheusSpec.resources", K8sType::Resources),
                    ("prometheusOperator.nodeSelector", K8sType::NodeSelector),
                    ("kube-state-metrics.nodeSelector", K8sType::NodeSelector),
                ],
                schemas: vec![],
                values_schema: None,
            },
        ),
        (
            "observability/kiali-operator-values.yaml",
            Chart {
                name: "kiali-operator 1.73.2".into(),
                defaults: up.yaml("values/kiali-operator-1.73.2.yaml"),
                free_form: nothing_free(),
                typed: vec![("nodeSelector", K8sType::NodeSelector)],
                schemas: vec![],
                values_schema: None,
            },
        ),
        (
            "stacks/istio/base-values.yaml",
            Chart {
                name: "istio base 1.18.7".into(),
                defaults: up.yaml("values/istio-base-1.18.7.yaml"),
                free_form: nothing_free(),
                typed: vec![],
                schemas: vec![],
                values_schema: None,
            },
        ),
        (
            "stacks/istio/istiod-values.yaml",
            Chart {
                name: "istiod 1.18.7".into(),
                defaults: up.yaml("values/istiod-1.18.7.yaml"),
                free_form: nothing_free(),
                typed: vec![
                    ("pilot.nodeSelector", K8sType::NodeSelector),
                    ("pilot.resources", K8sType::Resources),
                ],
                // The chart passes meshConfig through to istiod's mesh config as it is; its
                // values.yaml sets one key and points at the MeshConfig reference.
                schemas: vec![("meshConfig", mesh_config_schema(up))],
                values_schema: None,
            },
        ),
        (
            "stacks/istio/gateway-values.yaml",
            Chart {
                name: "istio gateway 1.18.7".into(),
                defaults: up.yaml("values/istio-gateway-1.18.7.yaml"),
                free_form: nothing_free(),
                typed: vec![("nodeSelector", K8sType::NodeSelector)],
                schemas: vec![],
                values_schema: Some(
                    Schema::compile(&gateway_schema).expect("gateway values.schema.json"),
                ),
            },
        ),
    ])
}

/// Every values file in `rendered` against its chart; a values file with no chart fails.
pub fn check_values(charts: &BTreeMap<&'static str, Chart>, rendered: &Rendered) -> Vec<Violation> {
    let mut out = Vec::new();
    for (file, bytes) in rendered.iter().filter(|(f, _)| f.ends_with("values.yaml")) {
        let docs = documents(file, bytes);
        match charts.get(file.as_str()) {
            Some(chart) => out.extend(chart.check(file, &docs[0])),
            None => out.push(Violation::new(
                file,
                "values",
                "",
                "no chart known for this values file: add it to contracts::charts",
            )),
        }
    }
    out
}

/// The IAM documents of `rendered`, as written.
pub fn iam_docs(rendered: &Rendered) -> Vec<iam::Doc> {
    rendered
        .iter()
        .filter_map(|(f, bytes)| {
            f.strip_prefix("iam/").map(|_| {
                let doc: Value =
                    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{f}: {e}"));
                iam::Doc::from_rendered(f, doc)
            })
        })
        .collect()
}

/// upstream's CloudFormation, resolved with meshstack's names for the default stack as
/// rendered offline: upstream's own queue and node role stand for meshstack's.
pub fn upstream_cfn(up: &Upstream) -> iam::Upstream {
    let subs = iam::Substitutions(BTreeMap::from(
        [
            ("AWS::Partition", "aws"),
            ("AWS::Region", "us-east-1"),
            ("AWS::AccountId", "000000000000"),
            ("AWS::URLSuffix", "amazonaws.com"),
            ("ClusterName", "meshstack-demo"),
            (
                "KarpenterInterruptionQueue.Arn",
                "arn:aws:sqs:us-east-1:000000000000:meshstack-demo-karpenter",
            ),
            (
                "KarpenterNodeRole.Arn",
                "arn:aws:iam::000000000000:role/meshstack-demo-node",
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    ));
    iam::upstream_cfn(
        &up.text("aws/karpenter-getting-started-cloudformation-1.8.1.yaml"),
        &subs,
    )
}

const CONTROLLER_POLICY: &str = "iam/meshstack-demo-karpenter-KarpenterControllerPolicy.json";
const QUEUE_POLICY: &str = "iam/meshstack-demo-karpenter-queue-policy.json";
const NODE_TRUST: &str = "iam/meshstack-demo-node-trust.json";

fn rendered_json(rendered: &Rendered, file: &str) -> Value {
    serde_json::from_slice(
        rendered
            .get(file)
            .unwrap_or_else(|| panic!("{file} not rendered")),
    )
    .unwrap()
}

/// A stack besides the default: the other locality mode, explicit zones, spot only, sampling
/// below 1%, one system node.
const VARIANT_STACK: &str = "name: shop\nregion: eu-west-1\nzones: [eu-west-1a, eu-west-1b]\n\
    node_group: {size: 1}\nkarpenter: {capacity_types: [spot]}\nistio: {tracing_sampling: 0.5}\n\
    locality: {mode: distribute, local_weight: 90}\n";

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    eprintln!("{what}: {:.2?}", start.elapsed());
    out
}

#[test]
fn upstream_files_are_found_and_match_the_index() {
    let up = upstream();
    eprintln!("upstream files from {} ({})", up.dir.display(), up.source);
    assert_eq!(up.entries.len(), 19, "tests/upstream/index.tsv rows");
    for e in &up.entries {
        assert!(
            e.url.contains(&e.commit) && e.url.ends_with(&e.path),
            "{e:?}"
        );
        assert_eq!(
            e.commit.len(),
            40,
            "{}: a full commit, so the URL never moves",
            e.file
        );
    }
    // Every CRD file and values file the checks read is in the index (up.path asserts it).
    for f in CRD_FILES {
        assert!(up.path(f).is_file());
    }
}

#[test]
fn custom_resources_fit_their_crds() {
    let up = upstream();
    let crds = timed("compile CRD schemas", || Crds::load(up));
    for rendered in [render_default_stack(), render_stack(VARIANT_STACK)] {
        let kinds: BTreeSet<String> = objects(&rendered)
            .iter()
            .filter(|(_, o)| !core::is_core(o["apiVersion"].as_str().unwrap()))
            .map(|(_, o)| o["kind"].as_str().unwrap().to_owned())
            .collect();
        let want = [
            "DestinationRule",
            "EC2NodeClass",
            "Gateway",
            "Kiali",
            "NodePool",
            "PodMonitor",
            "ServiceMonitor",
            "VirtualService",
        ];
        assert_eq!(
            kinds,
            want.iter().map(|k| k.to_string()).collect(),
            "the custom kinds rendered"
        );
        assert_none(
            "custom resources",
            &check_custom_resources(&crds, &rendered),
        );
    }
}

#[test]
fn kialis_chart_crd_checks_nothing_so_the_documented_schema_is_the_contract() {
    let up = upstream();
    let chart = up.yaml("crds/kiali.io_kialis-chart-1.73.2.yaml");
    let schema = &chart["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert_eq!(
        schema["x-kubernetes-preserve-unknown-fields"], true,
        "{schema}"
    );
    assert!(schema.get("properties").is_none(), "{schema}");
}

#[test]
fn core_objects_fit_kubernetes_schema_for_the_stacks_version() {
    let stack = meshstack::config::Stack::embedded_default();
    assert_eq!(
        stack.kubernetes_version.to_string(),
        core::SCHEMA_VERSION,
        "the default stack's kubernetes_version moved: enable k8s-openapi's matching feature \
         (Cargo.toml) and update contracts::core::SCHEMA_VERSION"
    );
    for rendered in [render_default_stack(), render_stack(VARIANT_STACK)] {
        let kinds: BTreeSet<String> = objects(&rendered)
            .iter()
            .filter(|(_, o)| core::is_core(o["apiVersion"].as_str().unwrap()))
            .map(|(_, o)| o["kind"].as_str().unwrap().to_owned())
            .collect();
        assert!(kinds.len() >= 4, "{kinds:?}");
        assert_none("core objects", &check_core_objects(&rendered));
    }
}

#[test]
fn values_keys_exist_in_the_pinned_charts() {
    let up = upstream();
    let charts = charts(up);
    for rendered in [render_default_stack(), render_stack(VARIANT_STACK)] {
        let files: BTreeSet<&str> = rendered
            .keys()
            .filter(|f| f.ends_with("values.yaml"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            files,
            charts.keys().copied().collect(),
            "every values file has its chart"
        );
        assert_none("helm values", &check_values(&charts, &rendered));
    }
}

/// The stacks whose controller policy differs: one per policy line meshstack carries.
const POLICY_LINES: &[(&str, &str)] = &[
    ("1.8.1", "1.34"),
    ("1.10.2", "1.34"),
    ("1.12.1", "1.34"),
    ("1.13.0", "1.36"),
];

#[test]
fn iam_documents_pass_parliament() {
    let up = upstream();
    let upstream_actions = iam::allowed_actions(&upstream_cfn(up).controller_policy);
    let mut docs = iam_docs(&render_default_stack());
    assert_eq!(docs.len(), 6);
    for (karpenter, k8s) in &POLICY_LINES[1..] {
        let rendered = render_stack(&format!(
            "name: meshstack-demo\nkubernetes_version: '{k8s}'\nkarpenter: {{version: '{karpenter}'}}\n"
        ));
        let mut policy = iam_docs(&rendered)
            .into_iter()
            .find(|d| d.file == CONTROLLER_POLICY)
            .unwrap();
        policy.file = format!("{CONTROLLER_POLICY} (karpenter {karpenter})");
        docs.push(policy);
    }
    let found = timed("parliament", || iam::lint(&docs, &upstream_actions));
    assert_none("parliament", &found);
}

#[test]
fn controller_policy_matches_upstreams_cloudformation() {
    let up = upstream();
    let cfn = upstream_cfn(up);
    let rendered = render_default_stack();
    let ours = rendered_json(&rendered, CONTROLLER_POLICY);
    assert_none(
        "controller policy vs upstream",
        &iam::compare_controller_policy(CONTROLLER_POLICY, &ours, &cfn.controller_policy),
    );
    // Same statements, so the same Sids in the same order: a reader can diff them.
    let sids = |p: &Value| -> Vec<String> {
        p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Sid"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(sids(&ours), sids(&cfn.controller_policy));
}

#[test]
fn queue_policy_node_role_and_rules_match_upstreams_cloudformation() {
    let up = upstream();
    let cfn = upstream_cfn(up);
    let rendered = render_default_stack();
    assert_none(
        "queue policy vs upstream",
        &iam::compare_exactly(
            QUEUE_POLICY,
            &rendered_json(&rendered, QUEUE_POLICY),
            &cfn.queue_policy,
        ),
    );
    assert_none(
        "node trust vs upstream",
        &iam::compare_exactly(
            NODE_TRUST,
            &rendered_json(&rendered, NODE_TRUST),
            &cfn.node_trust,
        ),
    );
    let ours: BTreeSet<String> =
        meshstack::policies::managed_policies(meshstack::names::Role::Node)
            .iter()
            .map(|s| s.to_string())
            .collect();
    assert_eq!(
        ours, cfn.node_managed_policies,
        "the node role's managed policies"
    );
    let stack = meshstack::config::Stack::embedded_default();
    let patterns = |v: Vec<Value>| -> BTreeSet<String> { v.iter().map(Value::to_string).collect() };
    let ours = patterns(
        meshstack::stages::karpenter_infra::rules(&stack)
            .into_iter()
            .map(|(_, p)| p)
            .collect(),
    );
    assert_eq!(
        ours,
        patterns(cfn.rule_patterns.clone()),
        "EventBridge rule patterns"
    );
}

/// Reads a rendered YAML file, changes its document of `kind` (the first; any kind when
/// empty), writes it back (for the mutation tests).
fn mutate_yaml(rendered: &mut Rendered, file: &str, kind: &str, change: impl FnOnce(&mut Value)) {
    let mut docs = documents(file, &rendered[file]);
    let doc = docs
        .iter_mut()
        .find(|d| kind.is_empty() || d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {file}"));
    change(doc);
    let text = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("---\n");
    rendered.insert(file.to_owned(), text.into_bytes());
}

fn names(found: &[Violation], file: &str, object: &str, field: &str) -> bool {
    found
        .iter()
        .any(|v| v.file == file && v.object == object && v.field == field)
}

#[test]
fn a_misspelt_values_key_is_named() {
    let up = upstream();
    let charts = charts(up);
    let mut rendered = render_default_stack();
    let file = "karpenter/values.yaml";
    mutate_yaml(&mut rendered, file, "", |v| {
        let q = v["settings"]
            .as_object_mut()
            .unwrap()
            .remove("interruptionQueue")
            .unwrap();
        v["settings"]["interruptionQueueName"] = q;
    });
    // ... and one under a subchart, and one under meshConfig, and one inside a typed value.
    mutate_yaml(
        &mut rendered,
        "observability/prometheus-values.yaml",
        "",
        |v| {
            v["grafana"]["nodeSelecter"] = json!({"a": "b"});
        },
    );
    mutate_yaml(&mut rendered, "stacks/istio/istiod-values.yaml", "", |v| {
        v["meshConfig"]["defaultConfig"]["tracing"]["sampleRate"] = json!(1.0);
    });
    mutate_yaml(&mut rendered, file, "", |v| {
        v["controller"]["resources"]["request"] = json!({"cpu": "1"});
    });
    let found = check_values(&charts, &rendered);
    eprintln!(
        "{}",
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        names(
            &found,
            file,
            "values for karpenter 1.8.1",
            "settings.interruptionQueueName"
        ),
        "{found:?}"
    );
    assert!(
        names(
            &found,
            "observability/prometheus-values.yaml",
            "values for kube-prometheus-stack 77.1.1",
            "grafana.nodeSelecter"
        ),
        "{found:?}"
    );
    assert!(
        names(
            &found,
            "stacks/istio/istiod-values.yaml",
            "values for istiod 1.18.7",
            "meshConfig.defaultConfig.tracing.sampleRate"
        ),
        "{found:?}"
    );
    assert!(
        names(
            &found,
            file,
            "values for karpenter 1.8.1",
            "controller.resources.request"
        ),
        "{found:?}"
    );
    assert_eq!(found.len(), 4, "exactly the four mistakes: {found:?}");
}

#[test]
fn an_unknown_crd_field_is_named() {
    let up = upstream();
    let crds = Crds::load(up);
    let mut rendered = render_default_stack();
    mutate_yaml(&mut rendered, "karpenter/nodepool.yaml", "", |v| {
        v["spec"]["template"]["spec"]["expireAfterr"] = json!("720h");
    });
    mutate_yaml(
        &mut rendered,
        "stacks/locality/orders-destination-rule.yaml",
        "",
        |v| {
            v["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["distributes"] =
                json!([]);
        },
    );
    // A wrong type is named too, and so is an unknown ObjectMeta field.
    mutate_yaml(&mut rendered, "observability/kiali.yaml", "", |v| {
        v["spec"]["external_services"]["prometheus"]["cache_duration"] = json!("ten");
        v["metadata"]["label"] = json!({"a": "b"});
    });
    let found = check_custom_resources(&crds, &rendered);
    eprintln!(
        "{}",
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        names(
            &found,
            "karpenter/nodepool.yaml",
            "NodePool ecommerce",
            "spec.template.spec.expireAfterr"
        ),
        "{found:?}"
    );
    assert!(
        names(
            &found,
            "stacks/locality/orders-destination-rule.yaml",
            "DestinationRule orders-destination-rule",
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distributes"
        ),
        "{found:?}"
    );
    assert!(
        names(
            &found,
            "observability/kiali.yaml",
            "Kiali kiali",
            "spec.external_services.prometheus.cache_duration"
        ),
        "{found:?}"
    );
    assert!(
        names(
            &found,
            "observability/kiali.yaml",
            "Kiali kiali",
            "metadata.label"
        ),
        "{found:?}"
    );
    assert_eq!(found.len(), 4, "{found:?}");

    // Core kinds: an unknown field and a type error, with their paths.
    let mut rendered = render_default_stack();
    mutate_yaml(
        &mut rendered,
        "stacks/ecommerce/products.yaml",
        "Service",
        |v| {
            v["spec"]["internalTraficPolicy"] = json!("Local");
        },
    );
    mutate_yaml(
        &mut rendered,
        "stacks/ecommerce/orders.yaml",
        "Service",
        |v| {
            v["spec"]["ports"][0]["port"] = json!("http");
        },
    );
    let found = check_core_objects(&rendered);
    eprintln!(
        "{}",
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        found
            .iter()
            .any(|v| v.file == "stacks/ecommerce/products.yaml"
                && v.field == "spec.internalTraficPolicy"),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|v| v.file == "stacks/ecommerce/orders.yaml" && v.field == "spec.ports[0].port"),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn a_scoped_star_only_action_and_a_broader_grant_are_named() {
    let up = upstream();
    let cfn = upstream_cfn(up);
    let upstream_actions = iam::allowed_actions(&cfn.controller_policy);
    let rendered = render_default_stack();
    let mut policy = rendered_json(&rendered, CONTROLLER_POLICY);
    for st in policy["Statement"].as_array_mut().unwrap() {
        match st["Sid"].as_str() {
            // issue 9's defect 1: a star-only action scoped to a resource
            Some("AllowUnscopedInstanceProfileListAction") => {
                st["Resource"] = json!("arn:aws:iam::000000000000:instance-profile/*");
            }
            // issue 9's defect 3: the instance-profile actions without upstream's tag conditions
            Some("AllowScopedInstanceProfileActions") => {
                st.as_object_mut().unwrap().remove("Condition");
            }
            _ => {}
        }
    }
    let doc = iam::Doc::from_rendered(CONTROLLER_POLICY, policy.clone());
    let found = iam::lint(&[doc], &upstream_actions);
    eprintln!(
        "{}",
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        names(
            &found,
            CONTROLLER_POLICY,
            "statement AllowUnscopedInstanceProfileListAction",
            "Resource"
        ),
        "{found:?}"
    );
    assert!(
        found[0]
            .message
            .contains("iam:ListInstanceProfiles has no resource type"),
        "{found:?}"
    );
    assert_eq!(found.len(), 1, "{found:?}");

    let found = iam::compare_controller_policy(CONTROLLER_POLICY, &policy, &cfn.controller_policy);
    eprintln!(
        "{}",
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        names(
            &found,
            CONTROLLER_POLICY,
            "upstream statement AllowUnscopedInstanceProfileListAction",
            "Action"
        ),
        "{found:?}"
    );
    for action in [
        "iam:AddRoleToInstanceProfile",
        "iam:RemoveRoleFromInstanceProfile",
        "iam:DeleteInstanceProfile",
    ] {
        assert!(
            found.iter().any(
                |v| v.object == "statement AllowScopedInstanceProfileActions"
                    && v.field == "Condition"
                    && v.message.contains(action)
                    && v.message
                        .contains("aws:ResourceTag/kubernetes.io/cluster/meshstack-demo")
            ),
            "{action}: {found:?}"
        );
    }
}

#[test]
fn the_fetch_script_reproduces_the_index_from_a_mirror() {
    // A stand-in for the network: each index URL's file laid out under a file:// base as
    // <owner>/<repo>/<commit>/<path>, from the upstream files themselves; Istio's CRD file
    // rebuilt as upstream publishes it (every CRD in one file), with decoy documents around
    // the three the script must keep.
    let up = upstream();
    let mirror = tempfile::tempdir().unwrap();
    for e in &up.entries {
        let text = up.text(&e.file);
        let content = if e.extract.is_empty() {
            text
        } else {
            let body: String = text.lines().skip(2).map(|l| format!("{l}\n")).collect();
            let decoy = |name: &str| {
                format!("---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {name}\nspec: {{}}\n\n")
            };
            let docs: Vec<&str> = body.split("---\n").filter(|d| !d.is_empty()).collect();
            assert_eq!(docs.len(), 3, "{}", e.file);
            format!(
                "# DO NOT EDIT - Generated\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: wasmplugins.extensions.istio.io\nspec: {{}}\n\n---\n{}{}---\n{}{}---\n{}{}---\n",
                docs[0],
                decoy("envoyfilters.networking.istio.io"),
                docs[1],
                decoy("proxyconfigs.networking.istio.io"),
                docs[2],
                decoy("workloadentries.networking.istio.io")
            )
        };
        let path = mirror
            .path()
            .join(&e.repository)
            .join(&e.commit)
            .join(&e.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let into = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-upstream");
    let run = |base: &Path| {
        std::process::Command::new("python3")
            .arg(&script)
            .args(["--base-url", &format!("file://{}", base.display())])
            .arg("--into")
            .arg(into.path())
            .output()
            .expect("python3 runs scripts/fetch-upstream")
    };
    let out = run(mirror.path());
    assert!(out.status.success(), "{}", describe(&out));
    crate::support::upstream::verify(into.path(), &up.entries).unwrap();
    // A file that does not match its hash is refused, named, and kept aside for review only.
    let grafana = up
        .entries
        .iter()
        .find(|e| e.file == "values/grafana-9.4.3.yaml")
        .unwrap();
    std::fs::remove_file(into.path().join(&grafana.file)).unwrap();
    let tampered = mirror
        .path()
        .join(&grafana.repository)
        .join(&grafana.commit)
        .join(&grafana.path);
    std::fs::write(&tampered, "grafana: changed\n").unwrap();
    let out = run(mirror.path());
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("values/grafana-9.4.3.yaml") && stderr.contains("sha256"),
        "{stderr}"
    );
    assert!(!into.path().join(&grafana.file).exists());
    let rejected = into.path().join(format!("{}.rejected", grafana.file));
    assert_eq!(
        std::fs::read_to_string(rejected).unwrap(),
        "grafana: changed\n"
    );
}

#[test]
fn without_upstream_files_the_tests_fail_saying_how_to_get_them() {
    // Through the locator, with every source absent: MESHSTACK_UPSTREAM_DIR pointing nowhere
    // is an error (no fallback), and so is a folder whose files do not match the index.
    let nowhere = tempfile::tempdir().unwrap();
    let missing = nowhere.path().join("none");
    let bad = crate::support::upstream::verify(nowhere.path(), &crate::support::upstream::index())
        .unwrap_err();
    assert!(bad.contains("crds/karpenter.sh_nodepools.yaml"), "{bad}");
    assert!(crate::support::upstream::HOW_TO_GET.contains("scripts/fetch-upstream"));
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "contracts::custom_resources_fit_their_crds",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MESHSTACK_UPSTREAM_DIR", &missing)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("is not a folder") && text.contains("scripts/fetch-upstream"),
        "{text}"
    );
}
