//! An in-memory Kubernetes API for the Kubernetes stage tests: kube-fake-client behind a real
//! `kube::Client`, with one repair.
//!
//! kube-fake-client 0.3 reads every path of the form `/api/v1/namespaces/<x>...` as "something
//! inside namespace <x>", so the Namespace objects themselves (`/api/v1/namespaces/<name>`)
//! answer "Invalid path". [`fake_cluster`] routes those requests to a resource it registers
//! under a plural the parser does not mistake (`namespace%73`, the same word percent-encoded),
//! with kind `Namespace`: the fake then stores, applies, tracks and deletes Namespaces like any
//! other cluster-scoped object.
//!
//! The fake also treats every custom resource it is taught (`with_resource::<K>()`) as
//! namespaced. For the cluster-scoped ones a test names in [`fake_cluster_with`] (Karpenter's
//! `nodepools`, `ec2nodeclasses`), requests are sent into a hidden namespace [`HIDDEN_NS`] and
//! that namespace is taken out of the responses again, so the client sees cluster-scoped
//! objects. Everything else goes through untouched.
//!
//! What the fake models and what it does not is listed in `src/k8s/apply.rs`.

use std::borrow::Cow;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::client::Body;
use kube_fake_client::ClientBuilder;

/// A `kube::Client` on `builder` (add custom resources, interceptors, fixtures first), with
/// Namespaces working.
pub async fn fake_cluster(builder: ClientBuilder) -> kube::Client {
    fake_cluster_with(builder, &[]).await
}

/// [`fake_cluster`], where the custom resources in `cluster_scoped` (`<group>/<version>/<plural>`,
/// each also registered on `builder` with `with_resource`) are cluster-scoped.
pub async fn fake_cluster_with(builder: ClientBuilder, cluster_scoped: &[&str]) -> kube::Client {
    let fake = builder
        .with_resource::<NamespaceRoute>()
        .build()
        .await
        .expect("the fake API server starts");
    let routes = Routes {
        cluster_scoped: cluster_scoped.iter().map(|s| s.to_string()).collect(),
    };
    kube::Client::new(NamespacePaths { fake, routes }, "default")
}

/// The namespace cluster-scoped custom resources are kept in, out of the client's sight.
pub const HIDDEN_NS: &str = "fake-cluster-scope";

#[derive(Clone, Debug, Default)]
struct Routes {
    cluster_scoped: Vec<String>,
}

impl Routes {
    /// The path to send `path` to, and whether the response must have [`HIDDEN_NS`] taken out.
    fn route(&self, path: &str) -> Option<(String, bool)> {
        if let Some(p) = route_namespace_path(path) {
            return Some((p, false));
        }
        self.cluster_scoped.iter().find_map(|gvr| {
            let (gv, plural) = gvr.rsplit_once('/')?;
            let rest = path.strip_prefix(&format!("/apis/{gv}/{plural}"))?;
            (rest.is_empty() || rest.starts_with('/')).then(|| {
                (
                    format!("/apis/{gv}/namespaces/{HIDDEN_NS}/{plural}{rest}"),
                    true,
                )
            })
        })
    }
}

/// The plural Namespace requests are routed to.
const ROUTED_PLURAL: &str = "namespace%73";

/// `/api/v1/namespaces[/<name>[/status|/finalize]]` → the routed plural; anything else: `None`.
pub fn route_namespace_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/v1/namespaces")?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let is_namespace_itself = match segments.as_slice() {
        [] | [_] => true,
        [_, sub] => matches!(*sub, "status" | "finalize"),
        _ => false,
    };
    (is_namespace_itself && (rest.is_empty() || rest.starts_with('/')))
        .then(|| format!("/api/v1/{ROUTED_PLURAL}{rest}"))
}

/// Rewrites paths (see the module docs), then hands the request to the fake's own client.
#[derive(Clone)]
struct NamespacePaths {
    fake: kube::Client,
    routes: Routes,
}

impl tower::Service<http::Request<Body>> for NamespacePaths {
    type Response = http::Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<http::Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), kube::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let mut hide = false;
        if let Some((path, hidden)) = self.routes.route(req.uri().path()) {
            hide = hidden;
            let path_and_query = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(path_and_query.parse().expect("a valid path"));
            *req.uri_mut() = http::Uri::from_parts(parts).expect("a valid URI");
        }
        let fake = self.fake.clone();
        Box::pin(async move {
            let response = fake.send(req).await?;
            if !hide {
                return Ok(response);
            }
            let (mut head, body) = response.into_parts();
            let bytes = body.collect_bytes().await?;
            let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(mut v) => {
                    unhide(&mut v);
                    head.headers.remove(http::header::CONTENT_LENGTH);
                    serde_json::to_vec(&v).expect("JSON re-encodes")
                }
                Err(_) => bytes.to_vec(),
            };
            Ok(http::Response::from_parts(head, Body::from(body)))
        })
    }
}

/// Take [`HIDDEN_NS`] out of an object, or out of each item of a list.
fn unhide(v: &mut serde_json::Value) {
    if let Some(items) = v.get_mut("items").and_then(|i| i.as_array_mut()) {
        items.iter_mut().for_each(unhide);
    }
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        if meta.get("namespace").and_then(|n| n.as_str()) == Some(HIDDEN_NS) {
            meta.remove("namespace");
        }
    }
}

/// Declares a type for a custom resource, to teach the fake its kind with
/// `ClientBuilder::with_resource::<T>()` and to read objects back through `Api<T>`:
/// `custom_resource!(NodePool, "karpenter.sh", "v1", "NodePool", "nodepools", Cluster);`
/// (the last word, `Namespaced` or `Cluster`, only documents: the fake itself treats every
/// custom kind as namespaced, unless routed by [`fake_cluster_with`]).
macro_rules! custom_resource {
    ($name:ident, $group:literal, $version:literal, $kind:literal, $plural:literal, Namespaced) => {
        $crate::support::k8s::custom_resource!(@impl $name, $group, $version, $kind, $plural, k8s_openapi::NamespaceResourceScope);
    };
    ($name:ident, $group:literal, $version:literal, $kind:literal, $plural:literal, Cluster) => {
        $crate::support::k8s::custom_resource!(@impl $name, $group, $version, $kind, $plural, k8s_openapi::ClusterResourceScope);
    };
    (@impl $name:ident, $group:literal, $version:literal, $kind:literal, $plural:literal, $scope:ty) => {
        #[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            #[serde(default)]
            pub spec: serde_json::Value,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<serde_json::Value>,
        }

        impl kube::Resource for $name {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use custom_resource;

/// Registers kind `Namespace` under the routed plural. Only its type-level names matter.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct NamespaceRoute {
    metadata: ObjectMeta,
}

impl kube::Resource for NamespaceRoute {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Namespace".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        ROUTED_PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[test]
fn cluster_scoped_custom_resources_go_to_the_hidden_namespace() {
    let routes = Routes {
        cluster_scoped: vec!["karpenter.sh/v1/nodepools".into()],
    };
    for (path, want) in [
        (
            "/apis/karpenter.sh/v1/nodepools",
            Some("/apis/karpenter.sh/v1/namespaces/fake-cluster-scope/nodepools"),
        ),
        (
            "/apis/karpenter.sh/v1/nodepools/default",
            Some("/apis/karpenter.sh/v1/namespaces/fake-cluster-scope/nodepools/default"),
        ),
        (
            "/apis/karpenter.sh/v1/nodepools/default/status",
            Some("/apis/karpenter.sh/v1/namespaces/fake-cluster-scope/nodepools/default/status"),
        ),
        ("/apis/karpenter.sh/v1/nodeclaims/x", None),
        ("/apis/karpenter.sh/v1/nodepoolsx", None),
        ("/api/v1/namespaces/x", Some("/api/v1/namespace%73/x")),
    ] {
        let got = routes.route(path);
        assert_eq!(got.as_ref().map(|(p, _)| p.as_str()), want, "{path}");
        if let Some((_, hide)) = got {
            assert_eq!(hide, path.starts_with("/apis/"), "{path}");
        }
    }
    let mut list = serde_json::json!({"items": [{"metadata": {"name": "a", "namespace": HIDDEN_NS}}, {"metadata": {"name": "b", "namespace": "other"}}]});
    unhide(&mut list);
    assert_eq!(
        list["items"][0]["metadata"],
        serde_json::json!({"name": "a"})
    );
    assert_eq!(list["items"][1]["metadata"]["namespace"], "other");
}

#[test]
fn only_paths_of_namespaces_themselves_are_routed() {
    for (path, want) in [
        ("/api/v1/namespaces", Some("/api/v1/namespace%73")),
        (
            "/api/v1/namespaces/ecommerce",
            Some("/api/v1/namespace%73/ecommerce"),
        ),
        (
            "/api/v1/namespaces/ecommerce/status",
            Some("/api/v1/namespace%73/ecommerce/status"),
        ),
        (
            "/api/v1/namespaces/ecommerce/finalize",
            Some("/api/v1/namespace%73/ecommerce/finalize"),
        ),
        ("/api/v1/namespaces/ecommerce/services", None),
        ("/api/v1/namespaces/ecommerce/services/frontend", None),
        ("/api/v1/namespacesx", None),
        ("/apis/apps/v1/namespaces/ecommerce", None),
        ("/api/v1/nodes/n1", None),
    ] {
        assert_eq!(route_namespace_path(path).as_deref(), want, "{path}");
    }
}

/// A recording stand-in `helm` in `dir` (see `tests/support/fake-helm.sh`); returns its path.
pub fn fake_helm(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    // The venv's python (scripts/test's, beside the moto server) has PyYAML for `get values`.
    let moto = std::env::var("MESHSTACK_MOTO_SERVER")
        .unwrap_or_else(|_| format!("{}/.venv/bin/moto_server", env!("CARGO_MANIFEST_DIR")));
    let python = std::path::Path::new(&moto).with_file_name("python");
    let charts = pinned_charts();
    let script = include_str!("fake-helm.sh")
        .replace("@DIR@", &dir.display().to_string())
        .replace("@CHARTS@", &charts.display().to_string())
        .replace("@PYTHON@", &python.display().to_string());
    let path = dir.join("helm");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The pinned chart repository the stand-in helm serves meshstack's default repositories
/// from: `MESHSTACK_TEST_CHARTS`, else the chart folder beside the repository
/// (`../shared/charts`); `scripts/local-cluster` serves the same folder to the real control
/// plane. It holds every chart version meshstack pins (`src/charts.rs`), in one of two forms:
///
/// - meshstack's own rebuild (`../shared/charts`): every archive is the bytes its built-in
///   pin names, so every chart is verified;
/// - upstream's archives (what `scripts/test` pulls on a clone without `../shared`): the same
///   charts, but for every pin of [`Provenance::Rebuilt`] other bytes, so `up` installs those
///   charts unverified, with a warning, and `doctor` says WARN. A pin of
///   [`Provenance::Published`] is upstream's archive and matches either way.
///
/// Tests that depend on which form it is ask [`builtin_pin_verified`] and [`served_digest`]
/// rather than assuming one.
///
/// [`Provenance::Rebuilt`]: meshstack::charts::Provenance::Rebuilt
/// [`Provenance::Published`]: meshstack::charts::Provenance::Published
pub fn pinned_charts() -> std::path::PathBuf {
    let dir = std::env::var_os("MESHSTACK_TEST_CHARTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/charts")
        });
    assert!(
        dir.join("index.yaml").is_file(),
        "the pinned chart repository is not at {} (set MESHSTACK_TEST_CHARTS to the folder \
         holding the charts' index.yaml and archives): the recording helm serves the charts \
         from it",
        dir.display()
    );
    dir
}

/// One chart version the pinned chart folder ([`pinned_charts`]) serves, as its `index.yaml`
/// lists it.
#[derive(Debug, Clone)]
pub struct ServedChart {
    pub chart: String,
    pub version: String,
    /// The index's `digest` for it (64 hex digits): what the folder says about its archive.
    pub index_digest: String,
    /// The archive the index points to (its first URL, relative to the folder).
    pub archive: std::path::PathBuf,
}

impl ServedChart {
    /// The sha256 of the archive itself: what helm pulls and meshstack hashes.
    pub fn sha256(&self) -> String {
        let bytes = std::fs::read(&self.archive)
            .unwrap_or_else(|e| panic!("{}: {e}", self.archive.display()));
        super::chart_repo::sha256(&bytes)
    }
}

/// Every chart version the pinned chart folder's `index.yaml` lists.
pub fn served_charts() -> Vec<ServedChart> {
    let dir = pinned_charts();
    let text = std::fs::read_to_string(dir.join("index.yaml")).unwrap();
    let index: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}/index.yaml: {e}", dir.display()));
    let entries = index["entries"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{}/index.yaml has no entries", dir.display()));
    let mut served = Vec::new();
    for (chart, versions) in entries {
        let chart = chart.as_str().unwrap().to_string();
        for v in versions.as_sequence().unwrap() {
            let field = |key: &str| {
                v[key].as_str().map(str::to_string).unwrap_or_else(|| {
                    panic!("{}/index.yaml: {chart} has no {key}: {v:?}", dir.display())
                })
            };
            let version = field("version");
            let url = v["urls"][0].as_str().unwrap_or_else(|| {
                panic!("{}/index.yaml: {chart} {version} has no URL", dir.display())
            });
            assert!(
                !url.contains("://") && !url.starts_with('/'),
                "{}/index.yaml: {chart} {version} points outside the folder ({url})",
                dir.display()
            );
            served.push(ServedChart {
                index_digest: field("digest"),
                archive: dir.join(url),
                chart: chart.clone(),
                version,
            });
        }
    }
    served
}

/// The sha256 of the archive the pinned chart folder serves for `chart` at `version` (what
/// the recording helm, and the real control plane's chart repository, hand to meshstack).
pub fn served_digest(chart: &str, version: &str) -> String {
    served_charts()
        .into_iter()
        .find(|s| s.chart == chart && s.version == version)
        .unwrap_or_else(|| {
            panic!(
                "the pinned chart folder {} has no {chart} {version}",
                pinned_charts().display()
            )
        })
        .sha256()
}

/// Whether meshstack's built-in pin of `chart` at `version` verifies what the pinned chart
/// folder serves. When it does not, the pin is meshstack's rebuild and the folder holds
/// upstream's archive: `up` installs the chart unverified with a warning, `doctor` says WARN.
/// A pin of upstream's own archive ([`Provenance::Published`]) must match whichever the
/// folder is: asserted here.
///
/// [`Provenance::Published`]: meshstack::charts::Provenance::Published
pub fn builtin_pin_verified(chart: &str, version: &str) -> bool {
    use meshstack::charts::Provenance;
    let pin = meshstack::charts::known_digest(chart, version)
        .unwrap_or_else(|| panic!("meshstack pins no digest for {chart} {version}"));
    let served = served_digest(chart, version);
    let verified = pin.sha256 == served;
    match pin.provenance {
        Provenance::Published => assert!(
            verified,
            "{chart} {version}: meshstack pins upstream's published archive \
             sha256:{}, but the pinned chart folder {} serves sha256:{served}",
            pin.sha256,
            pinned_charts().display()
        ),
        Provenance::Rebuilt => {}
        Provenance::Stack => unreachable!("a built-in pin is never the stack's"),
    }
    verified
}

/// The charts `meshstack up` warned it installed unverified (`warning: chart C V from R is
/// installed unverified: ...` on stderr), each as `chart version`.
pub fn unverified_warnings(stderr: &str) -> std::collections::BTreeSet<String> {
    stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("warning: chart "))
        .filter(|l| l.contains(" is installed unverified: "))
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// The chart rows of `meshstack doctor`'s text output (`  ok   chart C V from R`,
/// `  WARN chart ...`, `  FAIL chart ...`), each as (status, `chart version`).
pub fn doctor_chart_rows(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (status, rest) = l.trim_start().split_once(' ')?;
            let rest = rest.trim_start().strip_prefix("chart ")?;
            matches!(status, "ok" | "WARN" | "FAIL").then(|| {
                let named = rest.split(' ').take(2).collect::<Vec<_>>().join(" ");
                (status.to_string(), named)
            })
        })
        .collect()
}

/// The calls the stand-in helm in `dir` received, each as its argument list.
pub fn helm_calls(dir: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The recorded calls with each `helm upgrade --install NAME ARCHIVE` written as the chart it
/// installs, `NAME CHART --repo URL --version V` (`NAME oci://PREFIX/CHART --version V`), as
/// the `helm pull` that wrote ARCHIVE asked for it; the pulls themselves are left out. An
/// upgrade of an archive no recorded pull wrote (into the folder it is in) panics: meshstack
/// installs only what it pulled and verified.
pub fn installs_by_repository(calls: &[Vec<String>]) -> Vec<Vec<String>> {
    let value = |call: &[String], flag: &str| {
        call.iter()
            .position(|a| a == flag)
            .map(|i| call[i + 1].clone())
    };
    let mut out = Vec::new();
    for call in calls {
        match call.first().map(String::as_str) {
            Some("pull") => continue,
            Some("upgrade") => {
                let archive = std::path::Path::new(&call[3]);
                let folder = archive.parent().unwrap().display().to_string();
                let pull = calls
                    .iter()
                    .rev()
                    .find(|c| c[0] == "pull" && value(c, "--destination") == Some(folder.clone()))
                    .unwrap_or_else(|| panic!("no pull wrote {}: {calls:?}", archive.display()));
                let mut chart = vec![pull[1].clone()];
                if let Some(repo) = value(pull, "--repo") {
                    chart.extend(["--repo".to_string(), repo]);
                }
                chart.extend(["--version".to_string(), value(pull, "--version").unwrap()]);
                let mut rewritten = call[..3].to_vec();
                rewritten.extend(chart);
                rewritten.extend(call[4..].iter().cloned());
                out.push(rewritten);
            }
            _ => out.push(call.clone()),
        }
    }
    out
}

/// Whether a recorded helm call only reads what helm holds (`list`, `get values`): all a
/// converged `up` may call.
pub fn is_read(call: &[String]) -> bool {
    matches!(
        call.first().map(String::as_str),
        Some("list") | Some("get") | Some("private-files")
    )
}

/// Run one stage's `up` (Forward) or `down` (Reverse) through the engine, which hands it its
/// progress handle; its result. Events go to `reporter`.
pub async fn run_stage_with(
    cx: &meshstack::stages::Context,
    stage: &dyn meshstack::stages::Stage,
    direction: meshstack::engine::run::Direction,
    reporter: &dyn meshstack::engine::progress::Reporter,
) -> meshstack::engine::run::StageResult {
    use meshstack::engine::graph::{Graph, StageSpec};
    use meshstack::engine::run::{self, Direction, RunOptions};
    let graph = Graph::new(vec![StageSpec {
        id: stage.id(),
        depends_on: vec![],
    }])
    .unwrap();
    let opts = RunOptions {
        direction,
        ..RunOptions::default()
    };
    let report = run::run(&graph, &[stage.id()], opts, reporter, |_, h| async move {
        match direction {
            Direction::Forward => stage.up(cx, &h).await,
            Direction::Reverse => stage.down(cx, &h).await,
        }
        .map_err(anyhow::Error::from)
    })
    .await;
    report.result(stage.id()).unwrap().clone()
}

/// [`run_stage_with`], events recorded and dropped.
pub async fn run_stage(
    cx: &meshstack::stages::Context,
    stage: &dyn meshstack::stages::Stage,
    direction: meshstack::engine::run::Direction,
) -> meshstack::engine::run::StageResult {
    let reporter = meshstack::engine::progress::RecordingReporter::default();
    run_stage_with(cx, stage, direction, &reporter).await
}

/// The outcome of a stage that must have succeeded.
pub fn outcome(result: &meshstack::engine::run::StageResult) -> &meshstack::engine::run::Outcome {
    match result {
        meshstack::engine::run::StageResult::Succeeded { outcome, .. } => outcome,
        other => panic!("stage did not succeed: {other:?}"),
    }
}

/// A stage context for `stack` over `client`, with kinds from `resolver`, the stand-in helm
/// and a journal in `dir`, and Kubernetes waits that poll every few milliseconds and give up
/// after `deadline`. No AWS: what a stage needs from AWS comes from offline stand-ins.
pub fn stage_context(
    stack: meshstack::config::Stack,
    client: kube::Client,
    resolver: meshstack::k8s::apply::StaticResolver,
    dir: &std::path::Path,
    deadline: std::time::Duration,
) -> meshstack::stages::Context {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    let state = meshstack::engine::state::StateDir::open(&dir.join("state"), "k8s-test").unwrap();
    let journal = Arc::new(Mutex::new(
        meshstack::engine::state::Journal::load(&state).unwrap(),
    ));
    let helm = meshstack::k8s::helm::HelmCli {
        binary: fake_helm(dir).display().to_string(),
        kubeconfig: None,
        kube_context: None,
        workdir: None,
    };
    let mut cx = meshstack::stages::Context::new(stack, None, None, Vec::new(), Some(journal))
        .with_kube(meshstack::stages::kubernetes::KubeAccess {
            client,
            resolver: Arc::new(resolver),
            helm: Arc::new(helm),
        });
    cx.waits.kubernetes = meshstack::aws::Backoff::new(
        Duration::from_millis(2),
        Duration::from_millis(20),
        deadline,
    );
    cx
}

/// Where the app's pods run, for the `locality`, `pods` and `verify` tests: nodes with zone,
/// instance type and Karpenter labels, and app pods as a ReplicaSet makes them (owner
/// reference, `pod-template-hash`), scheduled, with an IP and a Ready condition. The fake has
/// no scheduler or kubelet; status is written with `patch_status`, as a kubelet would.
pub mod placement {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use serde_json::json;

    /// One app pod: (deployment, node, pod IP, ready).
    pub type PodSpec<'a> = (&'a str, &'a str, &'a str, bool);

    /// A Karpenter node `name` in `zone`, Ready.
    pub async fn node(client: &kube::Client, name: &str, zone: &str) {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "topology.kubernetes.io/zone": zone,
                "node.kubernetes.io/instance-type": "m5.large",
                "karpenter.sh/nodepool": "ecommerce",
                "karpenter.sh/capacity-type": "spot",
            }},
        }))
        .unwrap();
        let api: Api<Node> = Api::all(client.clone());
        api.create(&PostParams::default(), &node).await.unwrap();
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    /// The labels the app's manifests give `deployment`'s pods: (app, version).
    fn labels(deployment: &str) -> (&'static str, &'static str) {
        match deployment {
            "graphql" => ("graphql", "0.1.6"),
            "orders-1" => ("orders", "0.2.9"),
            "orders-2" => ("orders", "0.3.7-alpha"),
            "products-1" => ("products", "0.1.5"),
            "products-2" => ("products", "0.1.6-alpha"),
            other => panic!("no such deployment in the app: {other}"),
        }
    }

    /// Pods in `ecommerce`, named `<deployment>-5f7d8-<n>`; returns their names.
    pub async fn pods(client: &kube::Client, pods: &[PodSpec<'_>]) -> Vec<String> {
        let api: Api<Pod> = Api::namespaced(client.clone(), "ecommerce");
        let mut names = Vec::new();
        for (i, (deployment, node, ip, ready)) in pods.iter().enumerate() {
            let (app, version) = labels(deployment);
            let name = format!("{deployment}-5f7d8-{i:05}");
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {
                    "name": name, "namespace": "ecommerce",
                    "labels": {"app": app, "version": version, "pod-template-hash": "5f7d8"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": format!("{deployment}-5f7d8"), "uid": format!("rs-{deployment}"),
                        "controller": true}],
                },
                "spec": {"nodeName": node, "containers": [{"name": app, "image": "x"}]},
            }))
            .unwrap();
            api.create(&PostParams::default(), &pod).await.unwrap();
            let status = json!({"status": {
                "phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if *ready { "True" } else { "False" }}],
            }});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
            names.push(name);
        }
        names
    }

    /// Three zones, one node each, every products client next to a Ready products pod: the
    /// placement the app's manifests produce.
    pub async fn safe_three_zones(client: &kube::Client, zones: [&str; 3]) {
        for (i, zone) in zones.iter().enumerate() {
            node(client, &format!("node-{i}"), zone).await;
        }
        pods(
            client,
            &[
                ("products-1", "node-0", "10.0.0.11", true),
                ("graphql", "node-0", "10.0.0.12", true),
                ("orders-1", "node-0", "10.0.0.13", true),
                ("products-2", "node-1", "10.0.1.11", true),
                ("orders-2", "node-1", "10.0.1.12", true),
                ("orders-1", "node-2", "10.0.2.13", true),
            ],
        )
        .await;
    }
}
