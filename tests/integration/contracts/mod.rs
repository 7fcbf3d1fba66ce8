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
//! Karpenter's files are chosen by the Karpenter release the rendered stack installs
//! ([`karpenter_files`]): the default stack (1.14.1) against 1.14.1's, and a stack on
//! `karpenter.version: 1.8.1` and Kubernetes 1.34 against 1.8.1's, so both lines stay pinned.
//! `pins_equal_the_upstream_files_they_are_compared_with` holds each product pin to the
//! release of the files its checks read, so a bump cannot pass against the old files.
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

/// The upstream files of one Karpenter release, as the index names them.
#[derive(Debug)]
pub struct KarpenterFiles {
    /// The release, like `1.14.1`; its index rows are tagged `v1.14.1`.
    pub version: &'static str,
    /// The getting-started CloudFormation: node role, controller policy, queue, rules.
    pub cloudformation: &'static str,
    /// The CRDs: NodePool and EC2NodeClass (what meshstack renders), and NodeClaim where the
    /// index carries it.
    pub crds: &'static [&'static str],
    /// The chart's `values.yaml`.
    pub values: &'static str,
}

/// The Karpenter releases the index carries: the default, and 1.8.1, the last line whose
/// controller policy upstream published as one managed policy, which a stack on
/// `karpenter.version: 1.8.1` is still compared with.
pub const KARPENTER_FILES: &[KarpenterFiles] = &[
    KarpenterFiles {
        version: "1.14.1",
        cloudformation: "aws/karpenter-getting-started-cloudformation-1.14.1.yaml",
        crds: &[
            "crds/karpenter.sh_nodepools-1.14.1.yaml",
            "crds/karpenter.sh_nodeclaims-1.14.1.yaml",
            "crds/karpenter.k8s.aws_ec2nodeclasses-1.14.1.yaml",
        ],
        values: "values/karpenter-1.14.1.yaml",
    },
    KarpenterFiles {
        version: "1.8.1",
        cloudformation: "aws/karpenter-getting-started-cloudformation-1.8.1.yaml",
        crds: &[
            "crds/karpenter.sh_nodepools.yaml",
            "crds/karpenter.k8s.aws_ec2nodeclasses.yaml",
        ],
        values: "values/karpenter-1.8.1.yaml",
    },
];

/// The upstream files of Karpenter `version`.
///
/// # Panics
/// When the index carries none: a stack on a Karpenter release without pinned files is not
/// checked against another release's.
pub fn karpenter_files(version: &str) -> &'static KarpenterFiles {
    KARPENTER_FILES
        .iter()
        .find(|k| k.version == version)
        .unwrap_or_else(|| {
            panic!(
                "no upstream files for Karpenter {version}: add its rows to \
                 tests/upstream/index.tsv and a line to contracts::KARPENTER_FILES"
            )
        })
}

// The files of the other pinned releases the checks read, each named once so that
// `pins_equal_the_upstream_files_they_are_compared_with` holds the same names to the pins.
const ISTIO_CRDS: &str = "crds/networking.istio.io-1.18.7.yaml";
const ISTIO_BASE_VALUES: &str = "values/istio-base-1.18.7.yaml";
const ISTIOD_VALUES: &str = "values/istiod-1.18.7.yaml";
const ISTIO_GATEWAY_VALUES: &str = "values/istio-gateway-1.18.7.yaml";
const ISTIO_GATEWAY_SCHEMA: &str = "values/istio-gateway-1.18.7.schema.json";
const ISTIO_MESH_CONFIG: &str = "istio-api/istio.mesh.v1alpha1.gen.json";
const PROMETHEUS_VALUES: &str = "values/kube-prometheus-stack-77.1.1.yaml";
const PODMONITOR_CRD: &str = "crds/monitoring.coreos.com_podmonitors.yaml";
const SERVICEMONITOR_CRD: &str = "crds/monitoring.coreos.com_servicemonitors.yaml";
const KIALI_OPERATOR_VALUES: &str = "values/kiali-operator-1.73.2.yaml";
const KIALI_CRD: &str = "crds/kiali.io_kialis.yaml";

/// The CRD files of everything but Karpenter (one release each).
pub const OTHER_CRD_FILES: &[&str] = &[PODMONITOR_CRD, SERVICEMONITOR_CRD, ISTIO_CRDS, KIALI_CRD];

impl Crds {
    /// The CRDs a stack installing Karpenter `karpenter` is checked against.
    pub fn load(up: &Upstream, karpenter: &KarpenterFiles) -> Crds {
        let mut map: BTreeMap<(String, String), BTreeMap<String, CrdVersion>> = BTreeMap::new();
        for file in karpenter.crds.iter().chain(OTHER_CRD_FILES) {
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
    let mut api = up.yaml(ISTIO_MESH_CONFIG);
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
/// (annotations, labels, nodeSelector) defaults to `{}` in its chart. Karpenter's chart is
/// `karpenter`'s, the release the stack installs.
pub fn charts(up: &Upstream, karpenter: &KarpenterFiles) -> BTreeMap<&'static str, Chart> {
    let nothing_free = Vec::new;
    let mut kps = up.yaml(PROMETHEUS_VALUES);
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
    let gateway_schema = up.yaml(ISTIO_GATEWAY_SCHEMA);
    BTreeMap::from([
        (
            "karpenter/values.yaml",
            Chart {
                name: format!("karpenter {}", karpenter.version),
                defaults: up.yaml(karpenter.values),
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
                defaults: up.yaml(KIALI_OPERATOR_VALUES),
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
                defaults: up.yaml(ISTIO_BASE_VALUES),
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
                defaults: up.yaml(ISTIOD_VALUES),
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
                defaults: up.yaml(ISTIO_GATEWAY_VALUES),
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

/// Karpenter `karpenter`'s getting-started CloudFormation, resolved with meshstack's names for
/// a stack named meshstack-demo as rendered offline: upstream's own queue and node role stand
/// for meshstack's.
pub fn upstream_cfn(up: &Upstream, karpenter: &KarpenterFiles) -> iam::Upstream {
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
    iam::upstream_cfn(&up.text(karpenter.cloudformation), &subs)
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

/// The default stack on the Karpenter line before the default: 1.8.1 on Kubernetes 1.34 (the
/// newest Kubernetes 1.8 accepts), compared with 1.8.1's files.
const KARPENTER_1_8_STACK: &str =
    "name: meshstack-demo\nkubernetes_version: '1.34'\nkarpenter: {version: '1.8.1'}\n";

/// A stack rendered through the binary, with the Karpenter release it installs (what picks
/// its Karpenter files).
pub struct RenderedStack {
    /// For messages: `default`, `variant`, `karpenter 1.8.1`.
    pub label: &'static str,
    pub stack: meshstack::config::Stack,
    pub files: Rendered,
}

impl RenderedStack {
    pub fn karpenter(&self) -> &'static KarpenterFiles {
        karpenter_files(&self.stack.karpenter.version.to_string())
    }
}

/// The default stack, as the binary renders it.
pub fn default_stack() -> RenderedStack {
    RenderedStack {
        label: "default",
        stack: meshstack::config::Stack::embedded_default(),
        files: render_default_stack(),
    }
}

fn rendered_stack(label: &'static str, yaml: &str) -> RenderedStack {
    RenderedStack {
        label,
        stack: meshstack::config::Stack::parse(yaml, label)
            .unwrap_or_else(|e| panic!("{label}: {e}")),
        files: render_stack(yaml),
    }
}

/// The default stack on Karpenter 1.8.1 (see [`KARPENTER_1_8_STACK`]).
pub fn karpenter_1_8_stack() -> RenderedStack {
    rendered_stack("karpenter 1.8.1", KARPENTER_1_8_STACK)
}

/// Every stack the manifest and values contracts check: the default, the variant, and the
/// default on Karpenter 1.8.1.
pub fn stacks_to_check() -> Vec<RenderedStack> {
    vec![
        default_stack(),
        rendered_stack("variant", VARIANT_STACK),
        karpenter_1_8_stack(),
    ]
}

/// The stacks whose IAM documents are compared with upstream's CloudFormation, each with its
/// Karpenter release's (both are named meshstack-demo, in the default region).
pub fn iam_stacks() -> Vec<RenderedStack> {
    vec![default_stack(), karpenter_1_8_stack()]
}

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
    assert_eq!(up.entries.len(), 24, "tests/upstream/index.tsv rows");
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
    for k in KARPENTER_FILES {
        for f in k.crds.iter().chain([&k.values, &k.cloudformation]) {
            assert!(up.path(f).is_file(), "{f}");
        }
    }
    for f in OTHER_CRD_FILES {
        assert!(up.path(f).is_file());
    }
}

#[test]
fn pins_equal_the_upstream_files_they_are_compared_with() {
    use meshstack::versions::{
        kiali_operator, DEFAULT_ISTIO_VERSION, DEFAULT_KARPENTER_VERSION,
        DEFAULT_KUBERNETES_VERSION,
    };
    let up = upstream();
    let row = |file: &str| {
        up.entries
            .iter()
            .find(|e| e.file == file)
            .unwrap_or_else(|| panic!("{file} is not in tests/upstream/index.tsv"))
    };
    // Each file the checks read for a product: the index row's tag is the pin's release, and
    // so is the version in the file's name where it has one.
    let holds = |product: &str, pin: &str, tag: &str, files: &[&str]| {
        for f in files {
            let e = row(f);
            assert_eq!(
                e.tag, tag,
                "{product} is pinned at {pin}, but the contracts compare it with {f}, from {} \
                 {}: add the pin's files to tests/upstream/index.tsv and point the checks at them",
                e.repository, e.tag
            );
            let name = f.rsplit('/').next().unwrap();
            let versioned = name
                .split(['-', '_'])
                .any(|part| part.starts_with(|c: char| c.is_ascii_digit()) && part.contains('.'));
            assert!(
                !versioned || name.contains(&format!("-{pin}.")),
                "{f}: the version in the name is not {product}'s pin {pin}"
            );
        }
    };

    // Karpenter: the default stack installs the pin, and its files are the pin's.
    let karpenter = DEFAULT_KARPENTER_VERSION.to_string();
    let stack = meshstack::config::Stack::embedded_default();
    assert_eq!(stack.karpenter.version, DEFAULT_KARPENTER_VERSION);
    let files = karpenter_files(&karpenter);
    let mut read = vec![files.cloudformation, files.values];
    read.extend(files.crds);
    holds("Karpenter", &karpenter, &format!("v{karpenter}"), &read);

    // Istio: the CRDs, the three charts' values, the gateway's values schema, MeshConfig's.
    let istio = DEFAULT_ISTIO_VERSION.to_string();
    holds(
        "Istio",
        &istio,
        &istio,
        &[
            ISTIO_CRDS,
            ISTIO_BASE_VALUES,
            ISTIOD_VALUES,
            ISTIO_GATEWAY_VALUES,
            ISTIO_GATEWAY_SCHEMA,
            ISTIO_MESH_CONFIG,
        ],
    );

    // kube-prometheus-stack: its values and the PodMonitor/ServiceMonitor CRDs it ships. Its
    // subcharts' values (grafana, kube-state-metrics, node-exporter) are pinned by the chart,
    // not by meshstack: their rows carry the versions 77.1.1's Chart.yaml asks for.
    let prometheus = meshstack::charts::PROMETHEUS_VERSION;
    holds(
        "kube-prometheus-stack",
        prometheus,
        &format!("kube-prometheus-stack-{prometheus}"),
        &[PROMETHEUS_VALUES, PODMONITOR_CRD, SERVICEMONITOR_CRD],
    );

    // kiali-operator, the release meshstack pairs with the default Istio.
    let kiali = kiali_operator(DEFAULT_ISTIO_VERSION)
        .expect("the default Istio has a Kiali")
        .to_string();
    holds(
        "kiali-operator",
        &kiali,
        &format!("v{kiali}"),
        &[
            KIALI_OPERATOR_VALUES,
            "crds/kiali.io_kialis-chart-1.73.2.yaml",
        ],
    );
    // A known gap, asserted so it cannot drift: the documented Kiali CR schema comes from
    // kiali/kiali-operator v1.73.1, because v1.73.2 is not tagged in the copy the files were
    // taken from (v1.73.1 and v1.73.3 differ in one description line; see the upstream
    // folder's README). Same minor as the pin; when the pin moves, this fails.
    assert_eq!(
        (row(KIALI_CRD).tag.as_str(), kiali.as_str()),
        ("v1.73.1", "1.73.2"),
        "the Kiali CR schema's release vs the kiali-operator pin"
    );

    // Kubernetes: the one check still behind its pin. The core-object check (contracts::core)
    // uses k8s-openapi's types, compiled for one Kubernetes minor by a Cargo feature: `v1_34`
    // in Cargo.toml, so SCHEMA_VERSION is 1.34 while the default stack asks EKS for 1.36. The
    // 1.36 objects are checked against the 1.34 schema: a field 1.35 or 1.36 added would be
    // reported as unknown (a false alarm, not a silent pass), but a field they removed would
    // pass. k8s-openapi 0.28, the version Cargo.lock has, offers `v1_36` (features v1_32 to
    // v1_36); moving is `features = ["v1_36"]` in Cargo.toml and SCHEMA_VERSION = "1.36" in
    // contracts/core.rs, not done here (Cargo.toml is not this change's). Asserted as the
    // exact pair, so the gap cannot widen or close unnoticed: when it closes, replace this
    // with assert_eq!(core::SCHEMA_VERSION, DEFAULT_KUBERNETES_VERSION).
    eprintln!(
        "known gap: core objects checked against Kubernetes {}'s schema, the default is {}",
        core::SCHEMA_VERSION,
        DEFAULT_KUBERNETES_VERSION
    );
    assert_eq!(
        (core::SCHEMA_VERSION, DEFAULT_KUBERNETES_VERSION),
        ("1.34", "1.36"),
        "the Kubernetes schema of the core-object check vs the default kubernetes_version \
         changed: if they are now equal, assert that instead of this pair; if the default \
         moved again, move k8s-openapi's feature (Cargo.toml) and contracts::core::SCHEMA_VERSION"
    );
    assert_eq!(
        stack.kubernetes_version.to_string(),
        DEFAULT_KUBERNETES_VERSION
    );
}

#[test]
fn custom_resources_fit_their_crds() {
    let up = upstream();
    for rendered in stacks_to_check() {
        let karpenter = rendered.karpenter();
        let crds = timed(
            &format!("compile CRD schemas (Karpenter {})", karpenter.version),
            || Crds::load(up, karpenter),
        );
        let kinds: BTreeSet<String> = objects(&rendered.files)
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
            "the custom kinds rendered ({})",
            rendered.label
        );
        assert_none(
            &format!(
                "custom resources ({}, Karpenter {})",
                rendered.label, karpenter.version
            ),
            &check_custom_resources(&crds, &rendered.files),
        );
    }
}

#[test]
fn the_default_stack_is_checked_against_the_default_karpenters_files() {
    // The CRDs and chart the default stack is held to are the default Karpenter's, not the
    // older line's: an EC2NodeClass field 1.14 has and 1.8 did not (placementGroupSelector)
    // fits 1.14.1's CRD and is named against 1.8.1's.
    let up = upstream();
    let default = default_stack();
    let karpenter = default.karpenter();
    assert_eq!(
        karpenter.version,
        meshstack::versions::DEFAULT_KARPENTER_VERSION.to_string()
    );
    let crds = Crds::load(up, karpenter);
    let old = Crds::load(up, karpenter_files("1.8.1"));
    let source = |crds: &Crds, group: &str, kind: &str| {
        crds.0[&(group.to_owned(), kind.to_owned())]["v1"]
            .source
            .clone()
    };
    assert_eq!(
        source(&crds, "karpenter.sh", "NodePool"),
        "crds/karpenter.sh_nodepools-1.14.1.yaml"
    );
    assert_eq!(
        source(&crds, "karpenter.k8s.aws", "EC2NodeClass"),
        "crds/karpenter.k8s.aws_ec2nodeclasses-1.14.1.yaml"
    );
    assert_eq!(
        source(&crds, "karpenter.sh", "NodeClaim"),
        "crds/karpenter.sh_nodeclaims-1.14.1.yaml"
    );
    assert_eq!(
        source(&old, "karpenter.sh", "NodePool"),
        "crds/karpenter.sh_nodepools.yaml"
    );
    let mut rendered = default.files;
    mutate_yaml(&mut rendered, "karpenter/ec2nodeclass.yaml", "", |v| {
        v["spec"]["placementGroupSelector"] = json!({"name": "meshstack"});
    });
    assert_none(
        "a 1.14 field against 1.14.1's CRD",
        &check_custom_resources(&crds, &rendered),
    );
    let found = check_custom_resources(&old, &rendered);
    eprintln!("{}", show(&found));
    assert!(
        names(
            &found,
            "karpenter/ec2nodeclass.yaml",
            "EC2NodeClass ecommerce",
            "spec.placementGroupSelector"
        ),
        "{found:?}"
    );
    assert_eq!(found.len(), 1, "{found:?}");
    let charts = charts(up, karpenter);
    assert_eq!(charts["karpenter/values.yaml"].name, "karpenter 1.14.1");
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
    // Against k8s-openapi's types for core::SCHEMA_VERSION (1.34), not the default stack's
    // 1.36: pins_equal_the_upstream_files_they_are_compared_with asserts that gap and says why.
    for rendered in stacks_to_check() {
        let kinds: BTreeSet<String> = objects(&rendered.files)
            .iter()
            .filter(|(_, o)| core::is_core(o["apiVersion"].as_str().unwrap()))
            .map(|(_, o)| o["kind"].as_str().unwrap().to_owned())
            .collect();
        assert!(kinds.len() >= 4, "{kinds:?}");
        assert_none(
            &format!("core objects ({})", rendered.label),
            &check_core_objects(&rendered.files),
        );
    }
}

#[test]
fn values_keys_exist_in_the_pinned_charts() {
    let up = upstream();
    for rendered in stacks_to_check() {
        let charts = charts(up, rendered.karpenter());
        let files: BTreeSet<&str> = rendered
            .files
            .keys()
            .filter(|f| f.ends_with("values.yaml"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            files,
            charts.keys().copied().collect(),
            "every values file has its chart"
        );
        assert_none(
            &format!(
                "helm values ({}, {})",
                rendered.label, charts["karpenter/values.yaml"].name
            ),
            &check_values(&charts, &rendered.files),
        );
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
    let default = default_stack();
    let upstream_actions =
        iam::allowed_actions(&upstream_cfn(up, default.karpenter()).controller_policy);
    let mut docs = iam_docs(&default.files);
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
    // The attendee role's trust, by default (the stack's account) and with `access.trust`.
    for trust in ["", "\n  trust: [arn:aws:iam::111122223333:role/workshop]"] {
        let rendered = render_stack(&format!(
            "name: meshstack-demo\naccess:\n  attendee_role: true{trust}\n"
        ));
        let mut attendee = iam_docs(&rendered)
            .into_iter()
            .find(|d| d.file == "iam/meshstack-demo-attendee-trust.json")
            .expect("render writes the attendee role's trust");
        attendee.file = format!(
            "{} ({})",
            attendee.file,
            if trust.is_empty() {
                "default"
            } else {
                "access.trust"
            }
        );
        docs.push(attendee);
    }
    let found = timed("parliament", || iam::lint(&docs, &upstream_actions));
    assert_none("parliament", &found);
}

#[test]
fn upstreams_cloudformation_is_read_whole() {
    // 1.14.1 splits the controller policy into six managed policies and adds a fifth rule;
    // every statement of every one of them is in the merged policy, in template order.
    let up = upstream();
    let cfn = upstream_cfn(up, karpenter_files("1.14.1"));
    assert_eq!(
        cfn.controller_policy_names,
        [
            "NodeLifecyclePolicy",
            "IAMIntegrationPolicy",
            "EKSIntegrationPolicy",
            "InterruptionPolicy",
            "ZonalShiftPolicy",
            "ResourceDiscoveryPolicy",
        ]
    );
    assert_eq!(iam::sids(&cfn.controller_policy).len(), 18);
    assert_eq!(
        cfn.rules
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        [
            "ScheduledChangeRule",
            "SpotInterruptionRule",
            "RebalanceRule",
            "InstanceStateChangeRule",
            "CapacityReservationInterruptionRule",
        ]
    );
    let old = upstream_cfn(up, karpenter_files("1.8.1"));
    assert_eq!(old.controller_policy_names, ["KarpenterControllerPolicy"]);
    assert_eq!(old.rules.len(), 4);
}

#[test]
fn controller_policy_matches_upstreams_cloudformation() {
    let up = upstream();
    for rendered in iam_stacks() {
        let cfn = upstream_cfn(up, rendered.karpenter());
        let ours = rendered_json(&rendered.files, CONTROLLER_POLICY);
        let what = format!(
            "controller policy ({}) vs upstream {}",
            rendered.label,
            rendered.karpenter().version
        );
        assert_none(
            &what,
            &iam::compare_controller_policy(CONTROLLER_POLICY, &ours, &cfn.controller_policy),
        );
        // Same statements, so the same Sids in the same order: a reader can diff them.
        assert_none(
            &what,
            &iam::compare_sid_order(CONTROLLER_POLICY, &ours, &cfn.controller_policy),
        );
    }
}

#[test]
fn queue_policy_node_role_and_rules_match_upstreams_cloudformation() {
    let up = upstream();
    for rendered in iam_stacks() {
        let cfn = upstream_cfn(up, rendered.karpenter());
        let what = |part: &str| {
            format!(
                "{part} ({}) vs upstream {}",
                rendered.label,
                rendered.karpenter().version
            )
        };
        assert_none(
            &what("queue policy"),
            &iam::compare_exactly(
                QUEUE_POLICY,
                &rendered_json(&rendered.files, QUEUE_POLICY),
                &cfn.queue_policy,
            ),
        );
        assert_none(
            &what("node trust"),
            &iam::compare_exactly(
                NODE_TRUST,
                &rendered_json(&rendered.files, NODE_TRUST),
                &cfn.node_trust,
            ),
        );
        let ours: BTreeSet<String> =
            meshstack::policies::managed_policies(meshstack::names::Role::Node)
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(
            ours,
            cfn.node_managed_policies,
            "{}",
            what("the node role's managed policies")
        );
        let rules = meshstack::stages::karpenter_infra::rules(&rendered.stack);
        assert_eq!(
            rules.len(),
            cfn.rules.len(),
            "{}",
            what("EventBridge rules")
        );
        assert_none(
            &what("EventBridge rules"),
            &iam::compare_rules(&rules, &cfn.rules),
        );
    }
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
    let default = default_stack();
    let charts = charts(up, default.karpenter());
    let mut rendered = default.files;
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
            "values for karpenter 1.14.1",
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
            "values for karpenter 1.14.1",
            "controller.resources.request"
        ),
        "{found:?}"
    );
    assert_eq!(found.len(), 4, "exactly the four mistakes: {found:?}");
}

#[test]
fn an_unknown_crd_field_is_named() {
    let up = upstream();
    let default = default_stack();
    let crds = Crds::load(up, default.karpenter());
    let mut rendered = default.files;
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
    // On both pinned lines: the default (1.14.1, six managed policies upstream) and 1.8.1.
    let up = upstream();
    for rendered in iam_stacks() {
        let cfn = upstream_cfn(up, rendered.karpenter());
        let line = rendered.karpenter().version;
        let upstream_actions = iam::allowed_actions(&cfn.controller_policy);
        let mut policy = rendered_json(&rendered.files, CONTROLLER_POLICY);
        for st in policy["Statement"].as_array_mut().unwrap() {
            match st["Sid"].as_str() {
                // issue 9's defect 1: a star-only action scoped to a resource
                Some("AllowUnscopedInstanceProfileListAction") => {
                    st["Resource"] = json!("arn:aws:iam::000000000000:instance-profile/*");
                }
                // issue 9's defect 3: the instance-profile actions without upstream's tag
                // conditions
                Some("AllowScopedInstanceProfileActions") => {
                    st.as_object_mut().unwrap().remove("Condition");
                }
                _ => {}
            }
        }
        let doc = iam::Doc::from_rendered(CONTROLLER_POLICY, policy.clone());
        let found = iam::lint(&[doc], &upstream_actions);
        eprintln!("{line}: {}", show(&found));
        assert!(
            names(
                &found,
                CONTROLLER_POLICY,
                "statement AllowUnscopedInstanceProfileListAction",
                "Resource"
            ),
            "{line}: {found:?}"
        );
        assert!(
            found[0]
                .message
                .contains("iam:ListInstanceProfiles has no resource type"),
            "{line}: {found:?}"
        );
        assert_eq!(found.len(), 1, "{line}: {found:?}");

        let found =
            iam::compare_controller_policy(CONTROLLER_POLICY, &policy, &cfn.controller_policy);
        eprintln!("{line}: {}", show(&found));
        assert!(
            names(
                &found,
                CONTROLLER_POLICY,
                "upstream statement AllowUnscopedInstanceProfileListAction",
                "Action"
            ),
            "{line}: {found:?}"
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
                "{line} {action}: {found:?}"
            );
        }
    }
}

fn show(found: &[Violation]) -> String {
    found
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The default stack's controller policy with one statement changed by `change`.
fn mutate_statement(policy: &mut Value, sid: &str, change: impl FnOnce(&mut Value)) {
    let st = policy["Statement"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("no statement {sid}"));
    change(st);
}

#[test]
fn a_dropped_action_a_wider_resource_and_a_lost_condition_are_named_against_1_14_1() {
    // Each of the six managed policies 1.14.1 splits the controller policy into stays in the
    // comparison: a mistake in a statement of ResourceDiscovery, EKSIntegration and
    // ZonalShift, each named with the statement and the field.
    let up = upstream();
    let default = default_stack();
    assert_eq!(default.karpenter().version, "1.14.1");
    let cfn = upstream_cfn(up, default.karpenter());
    let ours = rendered_json(&default.files, CONTROLLER_POLICY);
    let compare = |policy: &Value| {
        let found =
            iam::compare_controller_policy(CONTROLLER_POLICY, policy, &cfn.controller_policy);
        eprintln!("{}", show(&found));
        found
    };
    assert_none("unchanged", &compare(&ours));

    // Drop an action: DescribeInstanceStatus (1.13's addition) from the regional reads.
    let mut policy = ours.clone();
    mutate_statement(&mut policy, "AllowRegionalReadActions", |st| {
        st["Action"]
            .as_array_mut()
            .unwrap()
            .retain(|a| a != "ec2:DescribeInstanceStatus");
    });
    let found = compare(&policy);
    assert!(
        names(
            &found,
            CONTROLLER_POLICY,
            "upstream statement AllowRegionalReadActions",
            "Action"
        ) && found[0].message.contains("ec2:DescribeInstanceStatus"),
        "{found:?}"
    );
    assert_eq!(found.len(), 1, "{found:?}");

    // Widen a resource: DescribeCluster on every cluster, not the stack's.
    let mut policy = ours.clone();
    mutate_statement(&mut policy, "AllowAPIServerEndpointDiscovery", |st| {
        st["Resource"] = json!("arn:aws:eks:us-east-1:000000000000:cluster/*");
    });
    let found = compare(&policy);
    assert!(
        found
            .iter()
            .any(|v| v.object == "statement AllowAPIServerEndpointDiscovery"
                && v.field == "Resource"
                && v.message.contains(
                    "eks:DescribeCluster on arn:aws:eks:us-east-1:000000000000:cluster/*"
                )),
        "{found:?}"
    );
    // (and upstream's exact grant is no longer there as upstream spells it)
    assert!(
        names(
            &found,
            CONTROLLER_POLICY,
            "upstream statement AllowAPIServerEndpointDiscovery",
            "Action"
        ),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");

    // Remove a condition: zonal-shift status of any resource, not the stack's cluster. The
    // comparison names it, and so does parliament (RESOURCE_STAR is accepted only with it).
    let mut policy = ours.clone();
    mutate_statement(&mut policy, "AllowZonalShiftStatusReadOnly", |st| {
        st.as_object_mut().unwrap().remove("Condition");
    });
    let found = compare(&policy);
    assert!(
        found
            .iter()
            .any(|v| v.object == "statement AllowZonalShiftStatusReadOnly"
                && v.field == "Condition"
                && v.message.contains("arc-zonal-shift:ResourceIdentifier")
                && v.message.contains("AllowZonalShiftStatusReadOnly")),
        "{found:?}"
    );
    assert_eq!(found.len(), 1, "{found:?}");
    let upstream_actions = iam::allowed_actions(&cfn.controller_policy);
    let linted = iam::lint(
        &[iam::Doc::from_rendered(CONTROLLER_POLICY, policy)],
        &upstream_actions,
    );
    eprintln!("{}", show(&linted));
    assert!(
        names(
            &linted,
            CONTROLLER_POLICY,
            "statement AllowZonalShiftStatusReadOnly",
            "Resource"
        ),
        "{linted:?}"
    );
    assert_eq!(linted.len(), 1, "{linted:?}");

    // Move a statement: the grants are the same, the order is not upstream's.
    let mut policy = ours.clone();
    let statements = policy["Statement"].as_array_mut().unwrap();
    let moved = statements.remove(10);
    statements.push(moved);
    assert_none("reordered", &compare(&policy));
    let found = iam::compare_sid_order(CONTROLLER_POLICY, &policy, &cfn.controller_policy);
    eprintln!("{}", show(&found));
    assert!(
        names(&found, CONTROLLER_POLICY, "the policy", "Statement[10].Sid"),
        "{found:?}"
    );
}

#[test]
fn a_dropped_fifth_rule_and_a_changed_queue_or_node_statement_are_named() {
    let up = upstream();
    let default = default_stack();
    let cfn = upstream_cfn(up, default.karpenter());
    let rules = meshstack::stages::karpenter_infra::rules(&default.stack);
    assert_none("rules", &iam::compare_rules(&rules, &cfn.rules));

    // Drop the fifth rule (capacity-reservation interruptions, added upstream in 1.11).
    let four: Vec<(String, Value)> = rules
        .iter()
        .filter(|(_, p)| {
            p["detail-type"] != json!(["EC2 Capacity Reservation Instance Interruption Warning"])
        })
        .cloned()
        .collect();
    assert_eq!(four.len(), 4);
    let found = iam::compare_rules(&four, &cfn.rules);
    eprintln!("{}", show(&found));
    assert!(
        names(
            &found,
            "EventBridge rules",
            "upstream rule CapacityReservationInterruptionRule",
            "EventPattern"
        ),
        "{found:?}"
    );
    assert_eq!(found.len(), 1, "{found:?}");

    // A rule whose pattern is wider is named both ways.
    let mut changed = rules.clone();
    changed[0].1["source"] = json!(["aws.ec2", "aws.health"]);
    let found = iam::compare_rules(&changed, &cfn.rules);
    eprintln!("{}", show(&found));
    assert!(
        found
            .iter()
            .any(|v| v.object == format!("rule {}", changed[0].0)),
        "{found:?}"
    );
    assert_eq!(found.len(), 2, "{found:?}");

    // The queue policy without its DenyHTTP condition.
    let mut queue = rendered_json(&default.files, QUEUE_POLICY);
    for st in queue["Statement"].as_array_mut().unwrap() {
        if st["Sid"] == "DenyHTTP" {
            st.as_object_mut().unwrap().remove("Condition");
        }
    }
    let found = iam::compare_exactly(QUEUE_POLICY, &queue, &cfn.queue_policy);
    eprintln!("{}", show(&found));
    assert!(
        names(&found, QUEUE_POLICY, "statement DenyHTTP", "Statement")
            && names(
                &found,
                QUEUE_POLICY,
                "upstream statement DenyHTTP",
                "Statement"
            ),
        "{found:?}"
    );

    // The node role trusted by another service.
    let mut trust = rendered_json(&default.files, NODE_TRUST);
    trust["Statement"][0]["Principal"]["Service"] = json!("ecs-tasks.amazonaws.com");
    let found = iam::compare_exactly(NODE_TRUST, &trust, &cfn.node_trust);
    eprintln!("{}", show(&found));
    assert_eq!(found.len(), 2, "{found:?}");
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
