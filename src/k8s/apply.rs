//! Putting meshstack's manifests on a cluster and taking them off again: parsing, server-side
//! apply, delete, lookups and the waits on conditions the Kubernetes stages need.
//!
//! # How an object is applied
//! Every object is applied with server-side apply under the field manager [`FIELD_MANAGER`],
//! *forcing* conflicts: meshstack owns the objects in its manifests, so a field someone changed
//! by hand (`kubectl edit`, a chart that once owned the object) is taken back instead of making
//! every later `up` fail with a conflict until a human steps in — the Kubernetes docs'
//! recommendation for controllers. The price: a manifest must leave out fields another
//! controller owns for good (a Deployment's `replicas` under an autoscaler), or meshstack and
//! that controller take turns.
//!
//! `up` run twice must not change anything, so before applying, the live object is read and the
//! apply is skipped when it already holds everything the manifest says. The applied body carries
//! a hash of the manifest in the [`HASH_ANNOTATION`], so a field *removed* from a manifest also
//! makes the object differ (and the apply then drops it, as server-side apply does for fields
//! the manager no longer sends). When an apply is made, the object counts as changed if its
//! `resourceVersion` moved: a real API server keeps it on a no-op apply.
//!
//! # Kinds
//! A [`Resolver`] maps `apiVersion` + `kind` to the resource's URL path and scope:
//! [`DiscoveryResolver`] asks the cluster (custom resources included), [`StaticResolver`] is a
//! table for tests and offline use.
//!
//! # What kube-fake-client (the tests' API server, 0.3) does and does not do
//! The stage tests rely on this. Read from its source; the behaviours marked (t) are pinned by
//! `tests/integration/k8s_apply.rs`, so that a release that changes them fails there first.
//! - Knows every built-in kind of Kubernetes 1.32–1.36 with its true scope; a custom resource
//!   only if its Rust type is registered with `ClientBuilder::with_resource::<K>()`, and a
//!   registered kind is always treated as **namespaced**, so a cluster-scoped custom resource (a
//!   Karpenter `NodePool`, `EC2NodeClass`) is refused. Creating a `CustomResourceDefinition`
//!   object does *not* register its kind.
//! - Cannot address a Namespace by name: it reads `/api/v1/namespaces/<name>` as a path inside
//!   namespace `<name>` and answers "Invalid path" (t).
//! - `tests/support/k8s.rs` repairs both: `fake_cluster` routes Namespace requests so that they
//!   work, `fake_cluster_with(builder, &["karpenter.sh/v1/nodepools"])` makes the named custom
//!   resources cluster-scoped (t). Stage tests use those, never the bare builder.
//! - Serves no discovery endpoints: use [`StaticResolver`].
//! - Server-side apply is a JSON merge patch of the body into the stored object plus
//!   `managedFields` bookkeeping: one entry per manager, conflicts with other managers'
//!   fields, `force` transferring them (t). Lists are replaced whole, fields left out of a later
//!   apply are **not** removed, nothing is defaulted or validated.
//! - Every write bumps `resourceVersion` and `metadata.generation`, a no-op apply included (t)
//!   (a real server bumps neither); the skip-when-converged check above is what keeps a second
//!   apply from writing at all, on both (t).
//! - Nothing sets status. A test makes a Deployment Available, a CRD Established or a
//!   Service's load balancer appear with `Api::patch_status` (a merge patch), which keeps
//!   `metadata.generation` (t).
//! - Namespaces are labels: an object can be created in a namespace that does not exist, and
//!   deleting a Namespace leaves what is in it. Delete is immediate (finalizers are not
//!   honoured, nothing is ever `Terminating`); owner references do cascade.
//! - `managedFields` are returned over HTTP (t); the builder's `with_return_managed_fields`
//!   concerns only its in-process typed API.
//! - Its `validation` feature (schema checks against an OpenAPI document you supply) checks
//!   only objects written through its in-process API, not requests from a `kube::Client`; the
//!   locality tests call its validator on what the stage stored (Istio's DestinationRule).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{GroupVersion, GroupVersionKind};
use kube::discovery::{ApiResource, Scope};
use kube::Client;
use serde::Deserialize as _;
use serde_json::Value;

use crate::retry::Backoff;

/// The field manager of everything meshstack applies.
pub const FIELD_MANAGER: &str = "meshstack";

/// Annotation holding a hash of the manifest an object was last applied from, by
/// [`FIELD_MANAGER`].
pub const HASH_ANNOTATION: &str = "meshstack.io/manifest-hash";

/// The hash annotation of `field_manager`: [`HASH_ANNOTATION`] for [`FIELD_MANAGER`],
/// `HASH_ANNOTATION.<manager>` for another. Two managers sharing one object (the `app`
/// stage's Service and the `locality` stage's single field of it) then each keep their own
/// hash, instead of overwriting each other's and re-applying on every run.
pub fn hash_annotation(field_manager: &str) -> std::borrow::Cow<'static, str> {
    if field_manager == FIELD_MANAGER {
        HASH_ANNOTATION.into()
    } else {
        format!("{HASH_ANNOTATION}.{field_manager}").into()
    }
}

/// Why applying, reading, deleting or waiting failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A manifest document is not a Kubernetes object (the user's or a meshstack bug: the
    /// message names the file and the document, counted from 1).
    #[error("{origin}: document {index}: {reason}")]
    Parse {
        origin: String,
        index: usize,
        reason: String,
    },
    /// The cluster does not serve this kind (for a custom resource: its CRD is not installed or
    /// not yet Established).
    #[error("the cluster does not serve {kind} in {api_version}: {reason}")]
    UnknownKind {
        api_version: String,
        kind: String,
        reason: String,
    },
    /// A namespaced object without `metadata.namespace`: meshstack never guesses one.
    #[error("{object} is namespaced but has no metadata.namespace; set it in the manifest")]
    MissingNamespace { object: ObjectRef },
    /// A cluster-scoped object with a `metadata.namespace`, which the API server would refuse.
    #[error("{object} is cluster-scoped; remove metadata.namespace from the manifest")]
    UnexpectedNamespace { object: ObjectRef },
    /// The API server refused or failed a request.
    #[error("cannot {action} {object}")]
    Api {
        action: &'static str,
        object: ObjectRef,
        #[source]
        source: Box<kube::Error>,
    },
    /// Discovery failed for another reason than an unknown kind.
    #[error("cannot look up {api_version} in the cluster's API")]
    Discovery {
        api_version: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// A wait ran out of time; nothing is undone, and a re-run continues the wait.
    #[error(
        "timed out after {after:?} waiting for {what} (last seen: {last}); re-run to keep waiting"
    )]
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
    /// A wait saw a state it cannot recover from by waiting.
    #[error("{what}: {reason}")]
    Failed { what: String, reason: String },
}

/// Which object: enough to find it, and to name it in messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn of(obj: &DynamicObject) -> Self {
        let (api_version, kind) = obj
            .types
            .as_ref()
            .map(|t| (t.api_version.clone(), t.kind.clone()))
            .unwrap_or_default();
        ObjectRef {
            api_version,
            kind,
            namespace: obj.metadata.namespace.clone(),
            name: obj.metadata.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What [`apply_all`] did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Created,
    Updated,
    /// Already as the manifest says: no write was made, or the server made none.
    Unchanged,
}

/// One object [`apply_all`] handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub object: ObjectRef,
    pub effect: Effect,
}

impl Applied {
    pub fn changed(&self) -> bool {
        self.effect != Effect::Unchanged
    }
}

/// One object [`delete_all`] handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    pub object: ObjectRef,
    /// `false`: it was already gone (or its kind is no longer served).
    pub existed: bool,
}

/// How an object compares with its manifest, for `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not there (or its kind is not served yet): `up` creates it.
    Missing,
    /// There, but not as the manifest says: `up` applies it.
    Differs,
    /// As the manifest says: `up` leaves it alone.
    Converged,
}

/// Parse a multi-document YAML manifest into objects, skipping empty documents.
///
/// # Errors
/// [`ApplyError::Parse`] naming `origin` and the document (counted from 1) that is not YAML,
/// not a mapping, lacks `apiVersion`, `kind` or `metadata.name`, or is a `List`.
pub fn parse_manifests(yaml: &str, origin: &str) -> Result<Vec<DynamicObject>, ApplyError> {
    let mut objects = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let index = i + 1;
        let fail = |reason: String| ApplyError::Parse {
            origin: origin.to_string(),
            index,
            reason,
        };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| fail(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let json = serde_json::to_value(&value).map_err(|e| fail(e.to_string()))?;
        let map = json.as_object().ok_or_else(|| {
            fail("not a mapping (a Kubernetes object starts with apiVersion:)".into())
        })?;
        let field = |path: &[&str]| -> Option<&str> {
            let mut v = map.get(path[0])?;
            for key in &path[1..] {
                v = v.get(key)?;
            }
            v.as_str().filter(|s| !s.is_empty())
        };
        let kind = field(&["kind"]).ok_or_else(|| fail("kind is missing".into()))?;
        let what = |reason: &str| match field(&["metadata", "name"]) {
            Some(name) => fail(format!("{kind} {name}: {reason}")),
            None => fail(format!("{kind}: {reason}")),
        };
        match field(&["apiVersion"]) {
            None => return Err(what("apiVersion is missing")),
            Some(v) if !valid_api_version(v) => {
                return Err(what(&format!(
                    "apiVersion {v:?} is not <version> or <group>/<version>"
                )))
            }
            Some(_) => {}
        }
        if kind.ends_with("List") && map.contains_key("items") {
            return Err(what(
                "lists are not supported; write each item as its own document",
            ));
        }
        if field(&["metadata", "name"]).is_none() {
            return Err(what("metadata.name is missing"));
        }
        let obj: DynamicObject =
            serde_json::from_value(json.clone()).map_err(|e| what(&e.to_string()))?;
        objects.push(obj);
    }
    Ok(objects)
}

/// `v1` or `apps/v1`: one or two non-empty parts.
fn valid_api_version(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() <= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.contains(char::is_whitespace))
}

/// Maps a kind to where the API serves it.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// The resource and its scope.
    ///
    /// # Errors
    /// [`ApplyError::UnknownKind`] when the kind is not served; others when asking failed.
    async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, Scope), ApplyError>;
}

/// Asks the cluster's discovery API, one group-version at a time, and remembers the answers.
///
/// Only kinds found are remembered: a kind that is unknown is asked for again next time, and
/// once more after a short pause, because the API server publishes a just-Established CRD's kind
/// a moment after the condition turns true.
pub struct DiscoveryResolver {
    client: Client,
    retry_after: Duration,
    known: Mutex<HashMap<(String, String), (ApiResource, Scope)>>,
}

impl DiscoveryResolver {
    pub fn new(client: Client) -> Self {
        DiscoveryResolver {
            client,
            retry_after: Duration::from_secs(1),
            known: Mutex::new(HashMap::new()),
        }
    }

    async fn discover(&self, gvk: &GroupVersionKind) -> Result<(ApiResource, Scope), ApplyError> {
        let unknown = |reason: String| ApplyError::UnknownKind {
            api_version: gvk.api_version(),
            kind: gvk.kind.clone(),
            reason,
        };
        match kube::discovery::pinned_kind(&self.client, gvk).await {
            Ok((ar, caps)) => Ok((ar, caps.scope)),
            // A group-version nobody serves: kube-apiserver answers a plain-text "404 page not
            // found" (no Status, so no reason), which kube reports as a failure with code 404.
            Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 404 => {
                Err(unknown(format!("{} is not served", gvk.api_version())))
            }
            Err(kube::Error::Discovery(e)) => Err(unknown(e.to_string())),
            Err(source) => Err(ApplyError::Discovery {
                api_version: gvk.api_version(),
                source: Box::new(source),
            }),
        }
    }
}

#[async_trait]
impl Resolver for DiscoveryResolver {
    async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, Scope), ApplyError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(hit) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(hit.clone());
        }
        let gv: GroupVersion = api_version
            .parse()
            .ok()
            .filter(|_| valid_api_version(api_version))
            .ok_or_else(|| ApplyError::UnknownKind {
                api_version: api_version.into(),
                kind: kind.into(),
                reason: "not a valid apiVersion".into(),
            })?;
        let gvk = gv.with_kind(kind);
        let found = match self.discover(&gvk).await {
            Err(ApplyError::UnknownKind { .. }) => {
                crate::retry::pause(self.retry_after).await;
                self.discover(&gvk).await?
            }
            other => other?,
        };
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, found.clone());
        Ok(found)
    }
}

/// A fixed table of kinds: the built-ins meshstack applies, plus what a test or stage adds with
/// [`StaticResolver::with`]. For the in-memory test API server, which serves no discovery.
#[derive(Debug, Clone)]
pub struct StaticResolver {
    table: HashMap<(String, String), (ApiResource, Scope)>,
}

/// The scope of a k8s-openapi type, as discovery would report it.
trait ScopeOf {
    const SCOPE: Scope;
}

impl ScopeOf for k8s_openapi::NamespaceResourceScope {
    const SCOPE: Scope = Scope::Namespaced;
}

impl ScopeOf for k8s_openapi::ClusterResourceScope {
    const SCOPE: Scope = Scope::Cluster;
}

impl StaticResolver {
    /// No kinds at all.
    pub fn empty() -> Self {
        StaticResolver {
            table: HashMap::new(),
        }
    }

    /// The built-in kinds meshstack's manifests use, from the k8s-openapi types (so plural and
    /// scope are Kubernetes' own, not typed in here).
    pub fn builtin() -> Self {
        use k8s_openapi::api::{
            apps::v1 as apps, core::v1 as core, policy::v1 as policy, rbac::v1 as rbac,
        };
        StaticResolver::empty()
            .with_type::<core::Namespace>()
            .with_type::<core::ServiceAccount>()
            .with_type::<core::Service>()
            .with_type::<core::ConfigMap>()
            .with_type::<core::Secret>()
            .with_type::<apps::Deployment>()
            .with_type::<apps::DaemonSet>()
            .with_type::<apps::StatefulSet>()
            .with_type::<rbac::ClusterRole>()
            .with_type::<rbac::ClusterRoleBinding>()
            .with_type::<rbac::Role>()
            .with_type::<rbac::RoleBinding>()
            .with_type::<policy::PodDisruptionBudget>()
            .with_type::<CustomResourceDefinition>()
    }

    /// Add a kind (a custom resource, typically): `with("networking.istio.io/v1beta1",
    /// "VirtualService", "virtualservices", true)`.
    pub fn with(mut self, api_version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        let ar = ApiResource {
            group,
            version,
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let scope = if namespaced {
            Scope::Namespaced
        } else {
            Scope::Cluster
        };
        self.table
            .insert((api_version.into(), kind.into()), (ar, scope));
        self
    }

    fn with_type<K>(mut self) -> Self
    where
        K: k8s_openapi::Resource,
        K::Scope: ScopeOf,
    {
        let ar = ApiResource {
            group: K::GROUP.into(),
            version: K::VERSION.into(),
            api_version: K::API_VERSION.into(),
            kind: K::KIND.into(),
            plural: K::URL_PATH_SEGMENT.into(),
        };
        self.table.insert(
            (K::API_VERSION.into(), K::KIND.into()),
            (ar, K::Scope::SCOPE),
        );
        self
    }
}

impl Default for StaticResolver {
    fn default() -> Self {
        StaticResolver::builtin()
    }
}

#[async_trait]
impl Resolver for StaticResolver {
    async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, Scope), ApplyError> {
        self.table
            .get(&(api_version.to_string(), kind.to_string()))
            .cloned()
            .ok_or_else(|| ApplyError::UnknownKind {
                api_version: api_version.into(),
                kind: kind.into(),
                reason: "not in the resolver's table".into(),
            })
    }
}

/// The order kinds are applied in (helm's install order, trimmed): namespaces and CRDs first,
/// then what workloads refer to, then workloads; kinds not listed (custom resources) last.
/// Deletes go in reverse.
const KIND_ORDER: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "PriorityClass",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Deployment",
    "StatefulSet",
    "Job",
    "CronJob",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "IngressClass",
    "Ingress",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

fn kind_rank(kind: &str) -> usize {
    KIND_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KIND_ORDER.len())
}

/// `objects` in apply order: by kind (see the module docs), keeping the manifests' order within
/// a kind.
pub fn apply_order(objects: &[DynamicObject]) -> Vec<&DynamicObject> {
    let mut sorted: Vec<&DynamicObject> = objects.iter().collect();
    sorted.sort_by_key(|o| kind_rank(&ObjectRef::of(o).kind));
    sorted
}

/// The `Api` for one object, checking its namespace against its kind's scope.
async fn api_for(
    client: &Client,
    resolver: &dyn Resolver,
    object: &ObjectRef,
) -> Result<Api<DynamicObject>, ApplyError> {
    let (ar, scope) = resolver.resolve(&object.api_version, &object.kind).await?;
    match (scope, object.namespace.as_deref()) {
        (Scope::Namespaced, Some(ns)) => Ok(Api::namespaced_with(client.clone(), ns, &ar)),
        (Scope::Namespaced, None) => Err(ApplyError::MissingNamespace {
            object: object.clone(),
        }),
        (Scope::Cluster, None) => Ok(Api::all_with(client.clone(), &ar)),
        (Scope::Cluster, Some(_)) => Err(ApplyError::UnexpectedNamespace {
            object: object.clone(),
        }),
    }
}

fn api_error<'a>(
    action: &'static str,
    object: &'a ObjectRef,
) -> impl FnOnce(kube::Error) -> ApplyError + 'a {
    move |source| ApplyError::Api {
        action,
        object: object.clone(),
        source: Box::new(source),
    }
}

/// The body `field_manager` applies for a manifest object: the manifest without `status`
/// (never meshstack's to set), annotated with the manifest's hash.
pub fn desired_body(obj: &DynamicObject, field_manager: &str) -> Value {
    let mut body = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(map) = body.as_object_mut() {
        map.remove("status");
    }
    let hash = fingerprint(&body);
    let metadata = body.as_object_mut().map(|m| {
        m.entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()))
    });
    if let Some(Value::Object(meta)) = metadata {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if !annotations.is_object() {
            // `annotations:` left empty in YAML is null.
            *annotations = Value::Object(Default::default());
        }
        if let Value::Object(a) = annotations {
            a.insert(
                hash_annotation(field_manager).into_owned(),
                Value::String(hash),
            );
        }
    }
    body
}

/// FNV-1a over the canonical JSON (keys sorted): stable across runs, key order and serde_json
/// features. Not a security boundary.
fn fingerprint(v: &Value) -> String {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    canonical(v, &mut text);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Does `live` hold everything `desired` says? Maps: every key of `desired` is in `live` with a
/// contained value (extra keys in `live` — defaults, status, server metadata — are fine; a
/// `null` in `desired` means "absent"). Lists: the same length, element by element (servers
/// default fields inside list items, such as a container's `imagePullPolicy`). Numbers compare
/// by value (`1` and `1.0` are the same).
///
/// A false "no" only costs one apply, which a real server turns into a no-op; a false "yes"
/// would skip a needed apply, so when in doubt this says no.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (_, Value::Null) => live.is_null(),
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => contains(lv, dv),
            None => dv.is_null(),
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        (Value::Number(l), Value::Number(d)) => {
            l == d || (l.as_f64().is_some() && l.as_f64() == d.as_f64())
        }
        (l, d) => l == d,
    }
}

/// Is `live` what applying `obj` as `field_manager` would make it?
pub fn converged(obj: &DynamicObject, live: &DynamicObject, field_manager: &str) -> bool {
    serde_json::to_value(live).is_ok_and(|l| contains(&l, &desired_body(obj, field_manager)))
}

/// Server-side apply `objects` in [`apply_order`], as `field_manager` with conflicts forced,
/// skipping those already converged.
///
/// CRDs and their custom resources in one call work only with a resolver that already knows
/// the custom kinds: with discovery, apply the CRDs, [`wait_crd_established`], then the rest.
///
/// # Guarantees
/// Idempotent: on a converged cluster it reads each object and writes nothing. Stops at the
/// first failure; the objects before it are applied.
///
/// # Errors
/// The first object that cannot be resolved, has a wrong namespace, or is refused.
pub async fn apply_all(
    client: &Client,
    resolver: &dyn Resolver,
    objects: &[DynamicObject],
    field_manager: &str,
) -> Result<Vec<Applied>, ApplyError> {
    let params = PatchParams::apply(field_manager).force();
    let mut applied = Vec::with_capacity(objects.len());
    for obj in apply_order(objects) {
        let object = ObjectRef::of(obj);
        let api = api_for(client, resolver, &object).await?;
        let live = api
            .get_opt(&object.name)
            .await
            .map_err(api_error("read", &object))?;
        if live
            .as_ref()
            .is_some_and(|l| converged(obj, l, field_manager))
        {
            applied.push(Applied {
                object,
                effect: Effect::Unchanged,
            });
            continue;
        }
        let after = api
            .patch(
                &object.name,
                &params,
                &Patch::Apply(desired_body(obj, field_manager)),
            )
            .await
            .map_err(api_error("apply", &object))?;
        let effect = match live {
            None => Effect::Created,
            Some(l) if l.metadata.resource_version != after.metadata.resource_version => {
                Effect::Updated
            }
            Some(_) => Effect::Unchanged,
        };
        applied.push(Applied { object, effect });
    }
    Ok(applied)
}

/// Compare each object with the cluster, for `plan`: read-only.
pub async fn observe_all(
    client: &Client,
    resolver: &dyn Resolver,
    objects: &[DynamicObject],
    field_manager: &str,
) -> Result<Vec<(ObjectRef, State)>, ApplyError> {
    let mut seen = Vec::with_capacity(objects.len());
    for obj in apply_order(objects) {
        let object = ObjectRef::of(obj);
        let state = match get_opt(client, resolver, &object).await? {
            None => State::Missing,
            Some(live) if converged(obj, &live, field_manager) => State::Converged,
            Some(_) => State::Differs,
        };
        seen.push((object, state));
    }
    Ok(seen)
}

/// Delete `objects` in reverse [`apply_order`]. Idempotent: an object already gone, or whose
/// kind is no longer served (its CRD was deleted, which deletes it too), counts as deleted.
///
/// Deletion is requested in the background: objects with finalizers (a LoadBalancer Service,
/// a Namespace) may still exist when this returns; [`wait_gone`] waits for them.
pub async fn delete_all(
    client: &Client,
    resolver: &dyn Resolver,
    objects: &[DynamicObject],
) -> Result<Vec<Deleted>, ApplyError> {
    let mut deleted = Vec::with_capacity(objects.len());
    for obj in apply_order(objects).into_iter().rev() {
        let object = ObjectRef::of(obj);
        let api = match api_for(client, resolver, &object).await {
            Ok(api) => api,
            Err(ApplyError::UnknownKind { .. }) => {
                deleted.push(Deleted {
                    object,
                    existed: false,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let existed = match api.delete(&object.name, &DeleteParams::background()).await {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.is_not_found() => false,
            Err(source) => {
                return Err(ApplyError::Api {
                    action: "delete",
                    object,
                    source: Box::new(source),
                })
            }
        };
        deleted.push(Deleted { object, existed });
    }
    Ok(deleted)
}

/// The object as the cluster has it, if it does (a kind the cluster does not serve has no
/// objects).
pub async fn get_opt(
    client: &Client,
    resolver: &dyn Resolver,
    object: &ObjectRef,
) -> Result<Option<DynamicObject>, ApplyError> {
    let api = match api_for(client, resolver, object).await {
        Ok(api) => api,
        Err(ApplyError::UnknownKind { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    api.get_opt(&object.name)
        .await
        .map_err(api_error("read", object))
}

/// Every object `api` lists; `namespace` (the api's, if any) names the list in errors.
pub async fn list_all<K>(api: &Api<K>, namespace: Option<&str>) -> Result<Vec<K>, ApplyError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + fmt::Debug,
{
    let what = ObjectRef {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        namespace: namespace.map(str::to_owned),
        name: "*".to_owned(),
    };
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(api_error("list", &what))?;
    Ok(list.items)
}

/// Waits until no Node carries any of the label keys `labels`: the nodes Karpenter launched
/// for a NodePool (or Provisioner) that is being deleted, which its controller drains and
/// terminates.
pub async fn wait_nodes_gone(
    client: &Client,
    labels: &[&str],
    wait: Wait<'_>,
) -> Result<(), ApplyError> {
    let api: Api<Node> = Api::all(client.clone());
    let what = ObjectRef {
        api_version: "v1".into(),
        kind: "Node".into(),
        namespace: None,
        name: labels.join(" or "),
    };
    wait_until(
        format!("nodes labelled {}", labels.join(" or ")),
        wait,
        || async {
            let mut names = Vec::new();
            for key in labels {
                let list = api
                    .list(&kube::api::ListParams::default().labels(key))
                    .await
                    .map_err(api_error("list", &what))?;
                names.extend(list.items.into_iter().filter_map(|n| n.metadata.name));
            }
            names.sort();
            names.dedup();
            Ok(if names.is_empty() {
                Readiness::Ready(())
            } else {
                Readiness::Pending(format!(
                    "{} still there ({})",
                    names.len(),
                    names.join(", ")
                ))
            })
        },
    )
    .await
}

/// What a condition check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness<T = ()> {
    Ready(T),
    /// Not yet; the text says what is awaited (shown as progress).
    Pending(String),
    /// Never will be without a change; the text says why.
    Failed(String),
}

/// How a wait polls (the back-off's deadline ends it) and where it reports progress.
#[derive(Clone, Copy)]
pub struct Wait<'a> {
    pub backoff: Backoff,
    /// Called with a line such as `Deployment ecommerce/frontend: 1 of 3 replicas available`
    /// before each pause.
    pub progress: &'a (dyn Fn(&str) + Send + Sync),
}

/// Poll `check` until it is ready, fails, or the back-off's deadline passes.
async fn wait_until<T, F, Fut>(what: String, wait: Wait<'_>, mut check: F) -> Result<T, ApplyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Readiness<T>, ApplyError>>,
{
    let mut delays = wait.backoff.delays();
    loop {
        match check().await? {
            Readiness::Ready(v) => return Ok(v),
            Readiness::Failed(reason) => return Err(ApplyError::Failed { what, reason }),
            Readiness::Pending(state) => match delays.next() {
                Some(delay) => {
                    (wait.progress)(&format!("{what}: {state}"));
                    crate::retry::pause(delay).await;
                }
                None => {
                    return Err(ApplyError::Timeout {
                        what,
                        after: wait.backoff.deadline,
                        last: state,
                    })
                }
            },
        }
    }
}

/// Is the CRD's kind served? `Established` true; `NamesAccepted` false (a name clash with another
/// CRD) will not resolve by waiting.
pub fn crd_readiness(crd: &CustomResourceDefinition) -> Readiness {
    let conditions = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c.type_ == t);
    if let Some(c) = find("NamesAccepted").filter(|c| c.status == "False") {
        return Readiness::Failed(format!(
            "names not accepted: {}",
            c.message.as_deref().unwrap_or("no message")
        ));
    }
    match find("Established") {
        Some(c) if c.status == "True" => Readiness::Ready(()),
        Some(c) => Readiness::Pending(format!(
            "not established yet ({})",
            c.message.as_deref().unwrap_or(&c.status)
        )),
        None => Readiness::Pending("not established yet".into()),
    }
}

/// Has the Deployment's current spec rolled out and is it available? As `kubectl rollout
/// status` decides, plus the `Available` condition: the controller has seen this generation,
/// every replica runs the current template and is available. A rollout past its progress
/// deadline has failed.
pub fn deployment_readiness(d: &Deployment) -> Readiness {
    let Some(status) = d.status.as_ref() else {
        return Readiness::Pending("no status yet".into());
    };
    let generation = d.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Readiness::Pending("waiting for the controller to see the new spec".into());
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let condition = |t: &str| conditions.iter().find(|c| c.type_ == t);
    if let Some(c) =
        condition("Progressing").filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
    {
        return Readiness::Failed(format!(
            "rollout exceeded its progress deadline: {}",
            c.message.as_deref().unwrap_or("no message")
        ));
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return Readiness::Pending(format!("{updated} of {want} replicas updated"));
    }
    if total > updated {
        return Readiness::Pending(format!(
            "{} old replicas still terminating",
            total - updated
        ));
    }
    if available < updated {
        return Readiness::Pending(format!("{available} of {updated} replicas available"));
    }
    match condition("Available") {
        Some(c) if c.status == "True" => Readiness::Ready(()),
        _ => Readiness::Pending("not Available yet".into()),
    }
}

/// The address of a LoadBalancer Service's load balancer (hostname on AWS, else IP).
pub fn lb_address(svc: &Service) -> Readiness<String> {
    let ty = svc
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP");
    if ty != "LoadBalancer" {
        return Readiness::Failed(format!(
            "it is of type {ty}, which never gets a load balancer"
        ));
    }
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();
    ingress
        .iter()
        .find_map(|i| {
            i.hostname
                .clone()
                .filter(|h| !h.is_empty())
                .or_else(|| i.ip.clone().filter(|ip| !ip.is_empty()))
        })
        .map_or_else(
            || Readiness::Pending("no load balancer address yet".into()),
            Readiness::Ready,
        )
}

/// Hands the CRDs of the API groups `groups` (exact, or `*.suffix`) that no helm release owns
/// to helm release `release` in `namespace`, the way helm itself marks what it owns (label
/// `app.kubernetes.io/managed-by: Helm`, annotations `meta.helm.sh/release-name` and
/// `-namespace`), so that a chart that now templates CRDs a chart's `crds/` folder installed
/// earlier can take them over instead of stopping at "invalid ownership metadata". This is the
/// migration Karpenter's upgrade guide gives for its `karpenter-crd` chart and Istio's for the
/// base chart from 1.24. A CRD another release owns is left alone (helm then names it).
/// Returns the names adopted.
///
/// # Errors
/// Listing or patching the CRDs fails.
pub async fn adopt_crds(
    client: &Client,
    groups: &[&str],
    release: &str,
    namespace: &str,
) -> Result<Vec<String>, ApplyError> {
    const RELEASE_NAME: &str = "meta.helm.sh/release-name";
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let matches = |group: &str| {
        groups.iter().any(|g| match g.strip_prefix('*') {
            Some(suffix) => group.ends_with(suffix),
            None => group == *g,
        })
    };
    let mut adopted = Vec::new();
    for crd in list_all(&api, None).await? {
        let owned = crd
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(RELEASE_NAME));
        if owned || !matches(&crd.spec.group) {
            continue;
        }
        let name = crd.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {RELEASE_NAME: release, "meta.helm.sh/release-namespace": namespace},
        }});
        let object = typed_ref::<CustomResourceDefinition>(None, &name);
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error("adopt", &object))?;
        adopted.push(name);
    }
    Ok(adopted)
}

/// Wait until the CRD `name` is Established (its custom resources can then be applied).
pub async fn wait_crd_established(
    client: &Client,
    name: &str,
    wait: Wait<'_>,
) -> Result<(), ApplyError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let object = &typed_ref::<CustomResourceDefinition>(None, name);
    let api = &api;
    wait_until(object.to_string(), wait, move || async move {
        let crd = api.get_opt(name).await.map_err(api_error("read", object))?;
        Ok(crd.map_or_else(
            || Readiness::Pending("not found".into()),
            |c| crd_readiness(&c),
        ))
    })
    .await
}

/// Wait until the Deployment has rolled out and is Available (see [`deployment_readiness`]).
pub async fn wait_deployment_available(
    client: &Client,
    namespace: &str,
    name: &str,
    wait: Wait<'_>,
) -> Result<(), ApplyError> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let object = &typed_ref::<Deployment>(Some(namespace), name);
    let api = &api;
    wait_until(object.to_string(), wait, move || async move {
        let d = api.get_opt(name).await.map_err(api_error("read", object))?;
        Ok(d.map_or_else(
            || Readiness::Pending("not found".into()),
            |d| deployment_readiness(&d),
        ))
    })
    .await
}

/// Wait until the LoadBalancer Service has an address, and return it.
pub async fn wait_service_lb_address(
    client: &Client,
    namespace: &str,
    name: &str,
    wait: Wait<'_>,
) -> Result<String, ApplyError> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let object = &typed_ref::<Service>(Some(namespace), name);
    let api = &api;
    wait_until(object.to_string(), wait, move || async move {
        let svc = api.get_opt(name).await.map_err(api_error("read", object))?;
        Ok(svc.map_or_else(
            || Readiness::Pending("not found".into()),
            |s| lb_address(&s),
        ))
    })
    .await
}

/// Wait until none of `objects` exists any more (after [`delete_all`], for objects with
/// finalizers).
pub async fn wait_gone(
    client: &Client,
    resolver: &dyn Resolver,
    objects: &[ObjectRef],
    wait: Wait<'_>,
) -> Result<(), ApplyError> {
    let what = match objects {
        [one] => one.to_string(),
        many => format!("{} objects to be deleted", many.len()),
    };
    wait_until(what, wait, move || async move {
        for object in objects {
            if get_opt(client, resolver, object).await?.is_some() {
                return Ok(Readiness::Pending(format!("{object} still exists")));
            }
        }
        Ok(Readiness::Ready(()))
    })
    .await
}

/// Wait until namespace `name` is not terminating: absent, or there without a deletion
/// timestamp. A namespace being deleted refuses new objects ("unable to create new content in
/// namespace ... because it is being terminated"), so an `up` right after a `down` (or after a
/// killed one) waits for the namespace controller to finish, then creates it anew.
pub async fn wait_namespace_usable(
    client: &Client,
    name: &str,
    wait: Wait<'_>,
) -> Result<(), ApplyError> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: Api<Namespace> = Api::all(client.clone());
    let object = &typed_ref::<Namespace>(None, name);
    let api = &api;
    wait_until(object.to_string(), wait, move || async move {
        let ns = api.get_opt(name).await.map_err(api_error("read", object))?;
        Ok(match ns {
            Some(ns) if ns.metadata.deletion_timestamp.is_some() => {
                Readiness::Pending(format!("namespace {name} is still being deleted"))
            }
            _ => Readiness::Ready(()),
        })
    })
    .await
}

fn typed_ref<K: k8s_openapi::Resource>(namespace: Option<&str>, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: K::API_VERSION.into(),
        kind: K::KIND.into(),
        namespace: namespace.map(Into::into),
        name: name.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    const APP: &str = r#"
# leading comment document
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
  namespace: ecommerce
spec:
  replicas: 2
---
---
apiVersion: v1
kind: Namespace
metadata:
  name: ecommerce
  labels:
    istio-injection: enabled
"#;

    #[test]
    fn manifests_parse_skipping_empty_documents() {
        let objects = parse_manifests(APP, "stacks/ecommerce/app.yaml").unwrap();
        let refs: Vec<String> = objects
            .iter()
            .map(|o| ObjectRef::of(o).to_string())
            .collect();
        assert_eq!(
            refs,
            ["Deployment ecommerce/frontend", "Namespace ecommerce"]
        );
        assert_eq!(objects[0].data["spec"]["replicas"], 2);
        assert_eq!(
            objects[1].metadata.labels.as_ref().unwrap()["istio-injection"],
            "enabled"
        );
        assert!(parse_manifests("", "empty.yaml").unwrap().is_empty());
    }

    #[test]
    fn bad_documents_are_named_by_file_and_position() {
        let ok = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
        for (doc, want) in [
            (
                "apiVersion: v1\nkind: Namespace\nmetadata: {}\n",
                "document 2: Namespace: metadata.name is missing",
            ),
            (
                "kind: Namespace\nmetadata: {name: x}\n",
                "document 2: Namespace x: apiVersion is missing",
            ),
            (
                "apiVersion: v1\nmetadata: {name: x}\n",
                "document 2: kind is missing",
            ),
            ("- a\n- b\n", "document 2: not a mapping"),
            (
                "apiVersion: v1\nkind: ConfigMapList\nmetadata: {name: l}\nitems: []\n",
                "lists are not supported",
            ),
            ("apiVersion: v1\nkind: [\n", "f.yaml: document 2:"),
            (
                "apiVersion: a/b/c\nkind: X\nmetadata: {name: x}\n",
                "X x: apiVersion \"a/b/c\" is not",
            ),
            (
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels: 7\n",
                "Namespace x:",
            ),
        ] {
            let yaml = format!("{ok}---\n{doc}");
            let err = parse_manifests(&yaml, "f.yaml").unwrap_err().to_string();
            assert!(err.starts_with("f.yaml: document 2: "), "{err}");
            assert!(err.contains(want), "{doc:?}: {err}");
        }
    }

    #[test]
    fn apply_order_puts_namespaces_and_crds_first_and_custom_resources_last() {
        let yaml = [
            ("networking.istio.io/v1beta1", "VirtualService", "vs"),
            ("apps/v1", "Deployment", "d1"),
            ("v1", "Service", "s"),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition", "crd"),
            ("apps/v1", "Deployment", "d2"),
            ("v1", "Namespace", "ns"),
            ("v1", "ServiceAccount", "sa"),
        ]
        .iter()
        .map(|(a, k, n)| format!("apiVersion: {a}\nkind: {k}\nmetadata: {{name: {n}}}\n"))
        .collect::<Vec<_>>()
        .join("---\n");
        let objects = parse_manifests(&yaml, "t").unwrap();
        let names: Vec<String> = apply_order(&objects)
            .iter()
            .map(|o| o.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["ns", "crd", "sa", "s", "d1", "d2", "vs"]);
    }

    #[test]
    fn containment() {
        let live = json!({
            "metadata": {"name": "a", "resourceVersion": "7", "labels": {"x": "1"}},
            "spec": {"replicas": 2, "ratio": 1.0, "containers": [{"name": "c", "image": "i", "imagePullPolicy": "IfNotPresent"}]},
            "status": {"ready": true}
        });
        for (desired, want, why) in [
            (
                json!({"metadata": {"name": "a"}}),
                true,
                "extra live fields are fine",
            ),
            (
                json!({"spec": {"containers": [{"name": "c", "image": "i"}]}}),
                true,
                "defaults inside list items",
            ),
            (json!({"spec": {"replicas": 3}}), false, "changed scalar"),
            (
                json!({"spec": {"ratio": 1}}),
                true,
                "1 and 1.0 are the same number",
            ),
            (
                json!({"spec": {"replicas": "2"}}),
                false,
                "string is not number",
            ),
            (
                json!({"metadata": {"labels": {"y": "2"}}}),
                false,
                "missing key",
            ),
            (
                json!({"metadata": {"annotations": null}}),
                true,
                "null means absent",
            ),
            (
                json!({"metadata": {"labels": null}}),
                false,
                "null but present",
            ),
            (
                json!({"spec": {"containers": []}}),
                false,
                "list length differs",
            ),
            (
                json!({"spec": {"containers": [{"name": "c"}, {"name": "d"}]}}),
                false,
                "list grew",
            ),
            (
                json!({"spec": {"containers": {"name": "c"}}}),
                false,
                "list vs map",
            ),
            (json!({}), true, "empty desires nothing"),
        ] {
            assert_eq!(contains(&live, &desired), want, "{why}: {desired}");
        }
    }

    fn one(yaml: &str) -> DynamicObject {
        parse_manifests(yaml, "t").unwrap().remove(0)
    }

    #[test]
    fn the_applied_body_carries_a_hash_of_the_manifest_and_no_status() {
        let a = one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: n}\ndata: {k: v, j: w}\nstatus: {x: 1}\n");
        let body = desired_body(&a, FIELD_MANAGER);
        let hash = body["metadata"]["annotations"][HASH_ANNOTATION]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(hash.len(), 16);
        assert!(body.get("status").is_none());
        // Key order and status don't matter; content does.
        let reordered = one("kind: ConfigMap\napiVersion: v1\ndata: {j: w, k: v}\nmetadata: {namespace: n, name: c}\n");
        assert_eq!(
            desired_body(&reordered, FIELD_MANAGER)["metadata"]["annotations"][HASH_ANNOTATION],
            hash.as_str()
        );
        let changed = one(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: n}\ndata: {k: v}\n",
        );
        assert_ne!(
            desired_body(&changed, FIELD_MANAGER)["metadata"]["annotations"][HASH_ANNOTATION],
            hash.as_str()
        );
        // An empty `annotations:` still gets the hash.
        let empty = one("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations:\n");
        assert!(
            desired_body(&empty, FIELD_MANAGER)["metadata"]["annotations"][HASH_ANNOTATION]
                .is_string()
        );
        // Existing annotations are kept.
        let annotated =
            one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, annotations: {a: b}}\n");
        let body = desired_body(&annotated, FIELD_MANAGER);
        assert_eq!(body["metadata"]["annotations"]["a"], "b");
        assert!(body["metadata"]["annotations"][HASH_ANNOTATION].is_string());
    }

    #[test]
    fn an_object_converges_only_with_the_current_manifest_hash() {
        let manifest = one(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: n}\ndata: {k: v}\n",
        );
        let mut live_json = desired_body(&manifest, FIELD_MANAGER);
        live_json["metadata"]["resourceVersion"] = json!("12");
        let live: DynamicObject = serde_json::from_value(live_json.clone()).unwrap();
        assert!(converged(&manifest, &live, FIELD_MANAGER));
        // A field dropped from the manifest: the live object still has it, but the hash differs.
        let smaller = one("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: n}\n");
        assert!(contains(
            &live_json,
            &serde_json::to_value(&smaller).unwrap()
        ));
        assert!(!converged(&smaller, &live, FIELD_MANAGER));
        // Someone edited a field meshstack sets.
        live_json["data"]["k"] = json!("edited");
        let edited: DynamicObject = serde_json::from_value(live_json).unwrap();
        assert!(!converged(&manifest, &edited, FIELD_MANAGER));
    }

    #[tokio::test]
    async fn the_static_table_knows_builtins_with_their_real_plural_and_scope() {
        let r = StaticResolver::builtin().with(
            "networking.istio.io/v1beta1",
            "VirtualService",
            "virtualservices",
            true,
        );
        for (api_version, kind, plural, scope) in [
            ("v1", "Namespace", "namespaces", Scope::Cluster),
            ("v1", "ServiceAccount", "serviceaccounts", Scope::Namespaced),
            ("apps/v1", "Deployment", "deployments", Scope::Namespaced),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                Scope::Cluster,
            ),
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                Scope::Cluster,
            ),
            (
                "networking.istio.io/v1beta1",
                "VirtualService",
                "virtualservices",
                Scope::Namespaced,
            ),
        ] {
            let (ar, s) = r.resolve(api_version, kind).await.unwrap();
            assert_eq!((ar.plural.as_str(), s), (plural, scope), "{kind}");
            assert_eq!(ar.api_version, api_version);
        }
        let (ar, _) = r
            .resolve("networking.istio.io/v1beta1", "VirtualService")
            .await
            .unwrap();
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str()),
            ("networking.istio.io", "v1beta1")
        );
        assert!(matches!(
            r.resolve("v1", "Pod").await,
            Err(ApplyError::UnknownKind { .. })
        ));
    }

    /// A scripted discovery endpoint: the core group, and an Istio group whose
    /// `VirtualService` appears from the `istio_from`-th request for that group on (a CRD that
    /// just became Established). Records the paths asked for.
    #[derive(Clone)]
    struct Discovery {
        paths: Arc<Mutex<Vec<String>>>,
        istio_from: usize,
    }

    impl Discovery {
        fn client(istio_from: usize) -> (Client, Arc<Mutex<Vec<String>>>) {
            let paths = Arc::new(Mutex::new(Vec::new()));
            let svc = Discovery {
                paths: paths.clone(),
                istio_from,
            };
            (Client::new(svc, "default"), paths)
        }

        fn answer(&self, path: &str) -> (u16, Value) {
            let mut paths = self.paths.lock().unwrap();
            paths.push(path.to_string());
            let asked = paths.iter().filter(|p| *p == path).count();
            let resource = |name: &str, kind: &str, namespaced: bool| {
                json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
                       "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            };
            let list = |gv: &str, resources: Vec<Value>| json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources});
            let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"});
            match path {
                "/api/v1" => (
                    200,
                    list(
                        "v1",
                        vec![
                            resource("namespaces", "Namespace", false),
                            resource("namespaces/status", "Namespace", false),
                            resource("services", "Service", true),
                        ],
                    ),
                ),
                "/apis/networking.istio.io/v1beta1" if asked >= self.istio_from => (
                    200,
                    list(
                        "networking.istio.io/v1beta1",
                        vec![resource("virtualservices", "VirtualService", true)],
                    ),
                ),
                // What kube-apiserver answers for a group-version it does not serve.
                "/apis/kiali.io/v1alpha1" => (404, Value::String("404 page not found\n".into())),
                "/apis/broken.example.com/v1" => (
                    500,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd is down"}),
                ),
                _ => (404, not_found),
            }
        }
    }

    impl tower::Service<http::Request<kube::client::Body>> for Discovery {
        type Response = http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<http::Response<String>, std::convert::Infallible>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
            let (status, body) = self.answer(req.uri().path());
            let (content_type, body) = match body {
                Value::String(text) => ("text/plain; charset=utf-8", text),
                json => ("application/json", json.to_string()),
            };
            let response = http::Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(body)
                .unwrap();
            std::future::ready(Ok(response))
        }
    }

    fn quick_retry(client: Client) -> DiscoveryResolver {
        let mut r = DiscoveryResolver::new(client);
        r.retry_after = Duration::from_millis(1);
        r
    }

    #[tokio::test]
    async fn discovery_finds_kinds_and_remembers_them() {
        let (client, paths) = Discovery::client(1);
        let r = quick_retry(client);
        let (ar, scope) = r.resolve("v1", "Namespace").await.unwrap();
        assert_eq!((ar.plural.as_str(), scope), ("namespaces", Scope::Cluster));
        let (ar, scope) = r.resolve("v1", "Service").await.unwrap();
        assert_eq!((ar.plural.as_str(), scope), ("services", Scope::Namespaced));
        r.resolve("v1", "Namespace").await.unwrap();
        let (ar, _) = r
            .resolve("networking.istio.io/v1beta1", "VirtualService")
            .await
            .unwrap();
        assert_eq!(ar.group, "networking.istio.io");
        assert_eq!(
            paths.lock().unwrap().clone(),
            ["/api/v1", "/api/v1", "/apis/networking.istio.io/v1beta1"],
            "Namespace asked once"
        );
    }

    #[tokio::test]
    async fn discovery_asks_again_for_a_kind_that_just_appeared() {
        let (client, paths) = Discovery::client(2);
        let r = quick_retry(client);
        let (ar, scope) = r
            .resolve("networking.istio.io/v1beta1", "VirtualService")
            .await
            .unwrap();
        assert_eq!(
            (ar.plural.as_str(), scope),
            ("virtualservices", Scope::Namespaced)
        );
        assert_eq!(
            paths.lock().unwrap().len(),
            2,
            "404, then found on the retry"
        );
    }

    #[tokio::test]
    async fn discovery_reports_unknown_kinds_and_failures_apart() {
        let (client, paths) = Discovery::client(1);
        let r = quick_retry(client);
        for (api_version, kind) in [
            ("v1", "Widget"),
            ("example.com/v1", "Widget"),
            // A CRD never installed, as a real API server says it: plain text, no Status.
            ("kiali.io/v1alpha1", "Kiali"),
        ] {
            let err = r.resolve(api_version, kind).await.unwrap_err();
            assert!(matches!(err, ApplyError::UnknownKind { .. }), "{err}");
        }
        assert_eq!(paths.lock().unwrap().len(), 6, "each asked twice");
        // Unknown kinds are not remembered: the next call asks again.
        r.resolve("v1", "Widget").await.unwrap_err();
        assert_eq!(paths.lock().unwrap().len(), 8);
        let err = r
            .resolve("broken.example.com/v1", "Thing")
            .await
            .unwrap_err();
        assert!(matches!(err, ApplyError::Discovery { .. }), "{err}");
        assert!(format!("{:?}", std::error::Error::source(&err)).contains("etcd is down"));
        let err = r.resolve("a/b/c", "Thing").await.unwrap_err();
        assert!(err.to_string().contains("not a valid apiVersion"), "{err}");
    }

    fn deployment(v: Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn deployment_readiness_follows_rollout_status() {
        let cond = |t: &str, s: &str, reason: &str| json!({"type": t, "status": s, "reason": reason, "message": "m"});
        let d = |generation: i64, replicas: i64, status: Value| {
            deployment(
                json!({"metadata": {"name": "d", "generation": generation}, "spec": {"replicas": replicas, "selector": {}, "template": {}}, "status": status}),
            )
        };
        let available = cond("Available", "True", "MinimumReplicasAvailable");
        for (dep, want) in [
            (
                deployment(json!({"metadata": {"name": "d"}})),
                Readiness::Pending("no status yet".into()),
            ),
            (
                d(
                    2,
                    1,
                    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "conditions": [available]}),
                ),
                Readiness::Pending("waiting for the controller to see the new spec".into()),
            ),
            (
                d(
                    2,
                    3,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 1}),
                ),
                Readiness::Pending("1 of 3 replicas updated".into()),
            ),
            (
                d(
                    2,
                    2,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
                ),
                Readiness::Pending("1 old replicas still terminating".into()),
            ),
            (
                d(
                    2,
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
                ),
                Readiness::Pending("1 of 2 replicas available".into()),
            ),
            (
                d(
                    2,
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "conditions": [cond("Available", "False", "MinimumReplicasUnavailable")]}),
                ),
                Readiness::Pending("not Available yet".into()),
            ),
            (
                d(
                    2,
                    2,
                    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "conditions": [available]}),
                ),
                Readiness::Ready(()),
            ),
            (
                d(
                    3,
                    2,
                    json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1, "conditions": [cond("Progressing", "False", "ProgressDeadlineExceeded")]}),
                ),
                Readiness::Failed("rollout exceeded its progress deadline: m".into()),
            ),
        ] {
            assert_eq!(deployment_readiness(&dep), want, "{:?}", dep.status);
        }
        // No `replicas` in the spec means 1.
        let one_replica = deployment(
            json!({"metadata": {"name": "d", "generation": 1}, "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "conditions": [available]}}),
        );
        assert_eq!(deployment_readiness(&one_replica), Readiness::Ready(()));
    }

    #[test]
    fn crd_readiness_waits_for_established_and_fails_on_name_clash() {
        let crd = |conditions: Value| -> CustomResourceDefinition {
            serde_json::from_value(json!({
                "metadata": {"name": "virtualservices.networking.istio.io"},
                "spec": {"group": "networking.istio.io", "names": {"kind": "VirtualService", "plural": "virtualservices"}, "scope": "Namespaced", "versions": []},
                "status": {"conditions": conditions}
            }))
            .unwrap()
        };
        let c =
            |t: &str, s: &str| json!({"type": t, "status": s, "message": format!("{t} is {s}")});
        assert_eq!(
            crd_readiness(&crd(json!([]))),
            Readiness::Pending("not established yet".into())
        );
        assert_eq!(
            crd_readiness(&crd(json!([
                c("NamesAccepted", "True"),
                c("Established", "False")
            ]))),
            Readiness::Pending("not established yet (Established is False)".into())
        );
        assert_eq!(
            crd_readiness(&crd(json!([
                c("NamesAccepted", "True"),
                c("Established", "True")
            ]))),
            Readiness::Ready(())
        );
        assert_eq!(
            crd_readiness(&crd(json!([
                c("NamesAccepted", "False"),
                c("Established", "False")
            ]))),
            Readiness::Failed("names not accepted: NamesAccepted is False".into())
        );
    }

    #[test]
    fn a_load_balancer_address_is_its_hostname_or_ip() {
        let svc = |v: Value| -> Service { serde_json::from_value(v).unwrap() };
        let lb = |status: Value| {
            svc(
                json!({"metadata": {"name": "g"}, "spec": {"type": "LoadBalancer"}, "status": status}),
            )
        };
        for (s, want) in [
            (
                lb(json!({})),
                Readiness::Pending("no load balancer address yet".into()),
            ),
            (
                lb(json!({"loadBalancer": {}})),
                Readiness::Pending("no load balancer address yet".into()),
            ),
            (
                lb(json!({"loadBalancer": {"ingress": [{"hostname": "a.elb.amazonaws.com"}]}})),
                Readiness::Ready("a.elb.amazonaws.com".to_string()),
            ),
            (
                lb(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}})),
                Readiness::Ready("203.0.113.7".to_string()),
            ),
            (
                lb(json!({"loadBalancer": {"ingress": [{"hostname": ""}, {"ip": "203.0.113.8"}]}})),
                Readiness::Ready("203.0.113.8".to_string()),
            ),
            (
                svc(json!({"metadata": {"name": "g"}, "spec": {"type": "ClusterIP"}})),
                Readiness::Failed(
                    "it is of type ClusterIP, which never gets a load balancer".into(),
                ),
            ),
            (
                svc(json!({"metadata": {"name": "g"}})),
                Readiness::Failed(
                    "it is of type ClusterIP, which never gets a load balancer".into(),
                ),
            ),
        ] {
            assert_eq!(lb_address(&s), want, "{:?}", s.status);
        }
    }
}
