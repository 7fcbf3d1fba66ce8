//! The parts of a cluster that act on their own, played by the local API server so that the
//! binary's waits end as they would on EKS. Each pass looks at the stored objects and writes
//! only what is missing or stale, so a converged cluster sees no write from here either (the
//! "0 changed objects" checks depend on it). Writes go straight to the store, not through
//! HTTP: they are not counted as API requests.
//!
//! - **helm's side of the charts** (with [`super::Options::charts`], the recording helm's
//!   folder): a release the stand-in helm records as deployed gets its release Secret
//!   (`sh.helm.release.v1.<name>.v1`, as helm's storage driver keeps it), its chart's CRDs
//!   and, for the ingress gateway chart, its LoadBalancer Service; an uninstalled release
//!   loses its Secret and Service (CRDs stay: helm never deletes a chart's `crds/`).
//! - **the CRD controller**: a CRD is NamesAccepted and Established once it has been stored
//!   for its delay ([`super::Faults::crd_delays`], none by default).
//! - **the Deployment controller and scheduler**: a Deployment's status catches up with its
//!   generation, Available; the app's (namespace `ecommerce`) first get their pods on the
//!   Karpenter nodes of the zones in [`super::Options::placement`], Ready, with an IP.
//! - **the cloud's load balancer controller**: a LoadBalancer Service gets
//!   [`super::Options::lb_address`] after [`super::Faults::lb_delay`].
//! - **Karpenter** (while its release is installed): one Ready node per zone for each
//!   NodePool, removed with the pool.
//! - **the Kiali operator** (while its release is installed): the `kiali` Deployment for each
//!   Kiali CR, removed with the CR.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{json, Value};

use super::Shared;

/// A CRD a chart installs: (group, versions served, kind, plural, namespaced).
pub type CrdSpec = (
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
    bool,
);

/// The CRDs of each chart meshstack installs, as far as meshstack uses them. The karpenter
/// chart installs none: meshstack installs it with `--skip-crds`, its CRDs coming from the
/// `karpenter-crd` chart (whose templates they are: see [`templated_crds`]).
pub fn chart_crds(release: &str) -> &'static [CrdSpec] {
    match release {
        "karpenter-crd" => &[
            ("karpenter.sh", &["v1"], "NodePool", "nodepools", false),
            (
                "karpenter.k8s.aws",
                &["v1"],
                "EC2NodeClass",
                "ec2nodeclasses",
                false,
            ),
        ],
        "prom" => &[
            (
                "monitoring.coreos.com",
                &["v1"],
                "PodMonitor",
                "podmonitors",
                true,
            ),
            (
                "monitoring.coreos.com",
                &["v1"],
                "ServiceMonitor",
                "servicemonitors",
                true,
            ),
        ],
        "istio-base" => &[
            (
                "networking.istio.io",
                &["v1beta1", "v1", "v1alpha3"],
                "Gateway",
                "gateways",
                true,
            ),
            (
                "networking.istio.io",
                &["v1beta1", "v1", "v1alpha3"],
                "VirtualService",
                "virtualservices",
                true,
            ),
            (
                "networking.istio.io",
                &["v1beta1", "v1", "v1alpha3"],
                "DestinationRule",
                "destinationrules",
                true,
            ),
        ],
        "kiali-operator" => &[("kiali.io", &["v1alpha1"], "Kiali", "kialis", true)],
        _ => &[],
    }
}

const GATEWAY_RELEASE: &str = "istio-ingressgateway";
const GATEWAY_NAMESPACE: &str = "istio-system";
const APP_NAMESPACE: &str = "ecommerce";
const POD_TEMPLATE_HASH: &str = "5f7d8c";
const NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";

/// A release the stand-in helm holds as deployed: (namespace, name, its `helm list` entry).
fn recorded_releases(dir: &std::path::Path) -> Vec<(String, String, String)> {
    let Ok(entries) = std::fs::read_dir(dir.join("releases")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some((ns, name)) = file.split_once('.') else {
            continue;
        };
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        out.push((ns.to_string(), name.to_string(), text));
    }
    out.sort();
    out
}

pub fn release_secret_name(release: &str) -> String {
    format!("sh.helm.release.v1.{release}.v1")
}

/// One pass of every controller. Errors are reported on stderr and retried next pass.
pub async fn reconcile(shared: &Shared) {
    let installed = match charts(shared).await {
        Ok(installed) => installed,
        Err(e) => {
            eprintln!("apiserver: charts: {e}");
            None
        }
    };
    let running = |release: &str| installed.as_ref().is_none_or(|i| i.contains(release));
    for (what, result) in [
        ("crds", crds(shared).await),
        ("load balancers", load_balancers(shared).await),
        (
            "karpenter",
            if running("karpenter") {
                karpenter(shared).await
            } else {
                Ok(())
            },
        ),
        (
            "kiali operator",
            if running("kiali-operator") {
                kiali_operator(shared).await
            } else {
                Ok(())
            },
        ),
        ("deployments", deployments(shared).await),
    ] {
        if let Err(e) = result {
            if shared.closing.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            eprintln!("apiserver: {what}: {e}");
        }
    }
}

type Result<T> = std::result::Result<T, kube::Error>;

async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await
}

/// helm's side of the charts; the set of installed releases, or `None` when the server plays
/// no charts.
async fn charts(shared: &Shared) -> Result<Option<BTreeSet<String>>> {
    let Some(dir) = &shared.options.charts else {
        return Ok(None);
    };
    let client = &shared.store;
    let recorded = recorded_releases(dir);
    let mut installed = BTreeSet::new();
    for (ns, name, entry) in &recorded {
        installed.insert(name.clone());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let status = if entry.contains("\"status\":\"deployed\"") {
            "deployed"
        } else {
            "pending"
        };
        let data = base64::engine::general_purpose::STANDARD.encode(entry);
        if let Some(mut live) = get_opt(&secrets, &release_secret_name(name)).await? {
            // Helm rewrites its record as the release moves on (pending, then deployed).
            let stored = live
                .data
                .as_ref()
                .and_then(|d| d.get("release"))
                .map(|b| base64::engine::general_purpose::STANDARD.encode(&b.0));
            if stored.as_deref() != Some(data.as_str()) {
                let bytes = k8s_openapi::ByteString(entry.as_bytes().to_vec());
                live.data
                    .get_or_insert_with(Default::default)
                    .insert("release".into(), bytes);
                live.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert("status".into(), status.into());
                live.metadata.managed_fields = None;
                secrets
                    .replace(&release_secret_name(name), &PostParams::default(), &live)
                    .await?;
            }
            continue;
        }
        let owner = templated_crds(name).then_some((name.as_str(), ns.as_str()));
        for crd in chart_crds(name) {
            ensure_crd(client, crd, owner).await?;
        }
        if name == GATEWAY_RELEASE {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": GATEWAY_RELEASE, "namespace": GATEWAY_NAMESPACE,
                             "labels": {"istio": "ingressgateway"}},
                "spec": {"type": "LoadBalancer", "selector": {"istio": "ingressgateway"},
                         "ports": [{"name": "http2", "port": 80, "targetPort": 8080}]}
            }))
            .unwrap();
            let api: Api<Service> = Api::namespaced(client.clone(), GATEWAY_NAMESPACE);
            if get_opt(&api, GATEWAY_RELEASE).await?.is_none() {
                api.create(&PostParams::default(), &svc).await?;
            }
        }
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": release_secret_name(name), "namespace": ns,
                         "labels": {"owner": "helm", "name": name, "status": status,
                                    "version": "1"}},
            "type": "helm.sh/release.v1",
            "data": {"release": data},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await?;
    }
    // Uninstalled: a release Secret whose release the stand-in no longer holds.
    let all: Api<Secret> = Api::all(client.clone());
    for s in all
        .list(&ListParams::default().labels("owner=helm"))
        .await?
        .items
    {
        let labels = s.metadata.labels.clone().unwrap_or_default();
        let Some(name) = labels.get("name") else {
            continue;
        };
        if installed.contains(name) {
            continue;
        }
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        if name == GATEWAY_RELEASE {
            let api: Api<Service> = Api::namespaced(client.clone(), GATEWAY_NAMESPACE);
            delete_opt(&api, GATEWAY_RELEASE).await?;
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        delete_opt(&api, s.metadata.name.as_deref().unwrap_or_default()).await?;
    }
    Ok(Some(installed))
}

async fn delete_opt<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a chart's CRDs are templates (helm stamps its ownership on them: label
/// `app.kubernetes.io/managed-by: Helm`, annotations `meta.helm.sh/release-name` and
/// `-namespace`, as helm's install action does for every templated resource) rather than files
/// of its `crds/` folder (which helm creates as they are, unowned). karpenter-crd templates
/// them; the other charts of the versions these tests install ship `crds/` (Istio's base
/// templates its CRDs only from 1.24).
fn templated_crds(release: &str) -> bool {
    release == "karpenter-crd"
}

async fn ensure_crd(
    client: &kube::Client,
    spec: &CrdSpec,
    owner: Option<(&str, &str)>,
) -> Result<()> {
    let (group, versions, kind, plural, namespaced) = *spec;
    let name = format!("{plural}.{group}");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    if get_opt(&api, &name).await?.is_some() {
        return Ok(());
    }
    let versions: Vec<Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"name": v, "served": true, "storage": i == 0,
                   "schema": {"openAPIV3Schema": {"type": "object",
                              "x-kubernetes-preserve-unknown-fields": true}},
                   "subresources": {"status": {}}})
        })
        .collect();
    let metadata = match owner {
        Some((release, namespace)) => json!({"name": name,
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": release,
                            "meta.helm.sh/release-namespace": namespace}}),
        None => json!({"name": name}),
    };
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": metadata,
        "spec": {"group": group, "scope": if namespaced { "Namespaced" } else { "Cluster" },
                 "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                           "listKind": format!("{kind}List")},
                 "versions": versions}
    }))
    .unwrap();
    api.create(&PostParams::default(), &crd).await?;
    Ok(())
}

fn condition(obj_conditions: Option<&Vec<Value>>, type_: &str) -> bool {
    obj_conditions
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

/// Established once stored for the CRD's delay.
async fn crds(shared: &Shared) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(shared.store.clone());
    for crd in api.list(&ListParams::default()).await?.items {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let status = serde_json::to_value(&crd.status).unwrap_or(Value::Null);
        if condition(status["conditions"].as_array(), "Established") {
            continue;
        }
        let delay = shared.faults().crd_delays.get(&name).copied();
        let first_seen = *shared
            .first_seen
            .lock()
            .unwrap()
            .entry(format!("crd/{name}"))
            .or_insert_with(Instant::now);
        if first_seen.elapsed() < delay.unwrap_or_default() {
            continue;
        }
        let status = json!({"status": {
        "acceptedNames": crd.spec.names,
        "storedVersions": [crd.spec.versions.first().map(|v| v.name.clone()).unwrap_or_default()],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "lastTransitionTime": now()},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "lastTransitionTime": now()},
        ]}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    Ok(())
}

fn now() -> String {
    // A fixed, valid timestamp: the controllers' writes need no clock.
    "2026-01-01T00:00:00Z".to_string()
}

async fn load_balancers(shared: &Shared) -> Result<()> {
    let api: Api<Service> = Api::all(shared.store.clone());
    for svc in api.list(&ListParams::default()).await?.items {
        let ty = svc.spec.as_ref().and_then(|s| s.type_.as_deref());
        if ty != Some("LoadBalancer") {
            continue;
        }
        let has_address = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref())
            .is_some_and(|i| !i.is_empty());
        if has_address {
            continue;
        }
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let first_seen = *shared
            .first_seen
            .lock()
            .unwrap()
            .entry(format!(
                "lb/{ns}/{name}/{}",
                svc.metadata.uid.clone().unwrap_or_default()
            ))
            .or_insert_with(Instant::now);
        if first_seen.elapsed() < shared.faults().lb_delay {
            continue;
        }
        let address = &shared.options.lb_address;
        let ingress = if address.parse::<std::net::IpAddr>().is_ok() {
            json!({"ip": address})
        } else {
            json!({"hostname": address})
        };
        let status = json!({"status": {"loadBalancer": {"ingress": [ingress]}}});
        Api::<Service>::namespaced(shared.store.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    Ok(())
}

fn nodepools(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "karpenter.sh".into(),
        version: "v1".into(),
        api_version: "karpenter.sh/v1".into(),
        kind: "NodePool".into(),
        plural: "nodepools".into(),
    };
    Api::all_with(client.clone(), &ar)
}

/// The name of the Karpenter node of `pool` in `zone`.
pub fn node_name(pool: &str, zone: &str) -> String {
    format!("{pool}-{zone}")
}

async fn karpenter(shared: &Shared) -> Result<()> {
    let client = &shared.store;
    let pools: Vec<String> = nodepools(client)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let nodes: Api<Node> = Api::all(client.clone());
    let existing = nodes
        .list(&ListParams::default().labels(NODEPOOL_LABEL))
        .await?
        .items;
    for pool in &pools {
        for zone in &shared.options.zones {
            let name = node_name(pool, zone);
            if existing
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(&name))
            {
                continue;
            }
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name,
                    "topology.kubernetes.io/zone": zone,
                    "node.kubernetes.io/instance-type": "m5.large",
                    NODEPOOL_LABEL: pool,
                    "karpenter.sh/capacity-type": "spot",
                }},
            }))
            .unwrap();
            nodes.create(&PostParams::default(), &node).await?;
            let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
            nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await?;
        }
    }
    for n in existing {
        let pool = n
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(NODEPOOL_LABEL))
            .cloned()
            .unwrap_or_default();
        if !pools.contains(&pool) {
            delete_opt(&nodes, n.metadata.name.as_deref().unwrap_or_default()).await?;
        }
    }
    Ok(())
}

fn kialis(client: &kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "kiali.io".into(),
        version: "v1alpha1".into(),
        api_version: "kiali.io/v1alpha1".into(),
        kind: "Kiali".into(),
        plural: "kialis".into(),
    };
    Api::all_with(client.clone(), &ar)
}

const MANAGED_BY_KIALI: &str = "app.kubernetes.io/managed-by=kiali-operator";

async fn kiali_operator(shared: &Shared) -> Result<()> {
    let client = &shared.store;
    let crs = kialis(client).list(&ListParams::default()).await?.items;
    let wanted: Vec<(String, String)> = crs
        .iter()
        .map(|cr| {
            let ns = cr.metadata.namespace.clone().unwrap_or_default();
            let name = cr.data["spec"]["deployment"]["instance_name"]
                .as_str()
                .unwrap_or("kiali")
                .to_string();
            (ns, name)
        })
        .collect();
    for (ns, name) in &wanted {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        if get_opt(&api, name).await?.is_some() {
            continue;
        }
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"app": "kiali", "app.kubernetes.io/managed-by": "kiali-operator"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "kiali"}},
                     "template": {"metadata": {"labels": {"app": "kiali"}},
                                  "spec": {"containers": [{"name": "kiali", "image": "quay.io/kiali/kiali"}]}}}
        }))
        .unwrap();
        api.create(&PostParams::default(), &d).await?;
    }
    let all: Api<Deployment> = Api::all(client.clone());
    for d in all
        .list(&ListParams::default().labels(MANAGED_BY_KIALI))
        .await?
        .items
    {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        if !wanted.contains(&(ns.clone(), name.clone())) {
            delete_opt(&Api::<Deployment>::namespaced(client.clone(), &ns), &name).await?;
        }
    }
    Ok(())
}

/// The labels the app's manifests give `deployment`'s pods: (app, version).
fn app_labels(deployment: &str) -> (&str, &str) {
    match deployment {
        "graphql" => ("graphql", "0.1.6"),
        "orders-1" => ("orders", "0.2.9"),
        "orders-2" => ("orders", "0.3.7-alpha"),
        "products-1" => ("products", "0.1.5"),
        "products-2" => ("products", "0.1.6-alpha"),
        other => (other, "0"),
    }
}

/// The name and IP of the app pod of `deployment` (one replica each, as in the manifests).
pub fn app_pod(deployment: &str, zone_index: usize, index: usize) -> (String, String) {
    (
        format!("{deployment}-{POD_TEMPLATE_HASH}-{index:05}"),
        format!("10.0.{zone_index}.{}", 11 + index),
    )
}

/// Schedules the app's pods (true when they are all there), as the scheduler would place
/// them under the manifests' rules: on the Karpenter node of the zone the placement names.
async fn schedule_app_pods(shared: &Shared, deployment: &str) -> Result<bool> {
    let client = &shared.store;
    let Some(index) = shared
        .options
        .placement
        .iter()
        .position(|(d, _)| d == deployment)
    else {
        return Ok(true); // not placed by the test: no pods, available at once
    };
    let zone_index = shared.options.placement[index].1;
    let Some(zone) = shared.options.zones.get(zone_index) else {
        return Ok(false);
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let on_zone = nodes
        .list(&ListParams::default().labels(NODEPOOL_LABEL))
        .await?
        .items
        .into_iter()
        .filter_map(|n| {
            let labels = n.metadata.labels?;
            (labels.get("topology.kubernetes.io/zone") == Some(zone)).then_some(n.metadata.name?)
        })
        .min();
    let Some(node) = on_zone else {
        return Ok(false); // no node there yet: Pending
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), APP_NAMESPACE);
    let (name, ip) = app_pod(deployment, zone_index, index);
    if get_opt(&pods, &name).await?.is_some() {
        return Ok(true);
    }
    let (app, version) = app_labels(deployment);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": name, "namespace": APP_NAMESPACE,
            "labels": {"app": app, "version": version, "pod-template-hash": POD_TEMPLATE_HASH},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{deployment}-{POD_TEMPLATE_HASH}"), "uid": format!("rs-{deployment}"),
                "controller": true}],
        },
        "spec": {"nodeName": node, "containers": [
            {"name": app, "image": "x"}, {"name": "istio-proxy", "image": "proxyv2"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await?;
    let status = json!({"status": {
        "phase": "Running", "podIP": ip,
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(true)
}

/// Deletes the app pods of `deployment` (scaled to zero replicas).
async fn delete_app_pods(shared: &Shared, deployment: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(shared.store.clone(), APP_NAMESPACE);
    let owner = format!("{deployment}-{POD_TEMPLATE_HASH}");
    for p in pods.list(&ListParams::default()).await?.items {
        let owned = p
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .is_some_and(|o| o.name == owner);
        if owned {
            delete_opt(&pods, p.metadata.name.as_deref().unwrap_or_default()).await?;
        }
    }
    Ok(())
}

async fn deployments(shared: &Shared) -> Result<()> {
    let client = &shared.store;
    let api: Api<Deployment> = Api::all(client.clone());
    let all = api.list(&ListParams::default()).await?.items;
    let mut app: BTreeMap<String, ()> = BTreeMap::new();
    for d in &all {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        if ns == APP_NAMESPACE {
            app.insert(name.clone(), ());
        }
        let generation = d.metadata.generation.unwrap_or(0);
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = serde_json::to_value(&d.status).unwrap_or(Value::Null);
        let current = status["observedGeneration"].as_i64() == Some(generation)
            && status["availableReplicas"].as_i64() == Some(replicas as i64)
            && condition(status["conditions"].as_array(), "Available");
        if current {
            continue;
        }
        if ns == APP_NAMESPACE && replicas == 0 {
            // Scaled to zero: its pod goes (as the ReplicaSet controller deletes it).
            delete_app_pods(shared, &name).await?;
        } else if ns == APP_NAMESPACE && !schedule_app_pods(shared, &name).await? {
            continue;
        }
        let status = json!({"status": {
        "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
        "readyReplicas": replicas, "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ]}});
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    // A Deployment's pods go with it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), APP_NAMESPACE);
    for p in pods.list(&ListParams::default()).await?.items {
        let deployment = p
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .and_then(|o| {
                o.name
                    .strip_suffix(&format!("-{POD_TEMPLATE_HASH}"))
                    .map(str::to_string)
            });
        if deployment.is_some_and(|d| !app.contains_key(&d)) {
            delete_opt(&pods, p.metadata.name.as_deref().unwrap_or_default()).await?;
        }
    }
    Ok(())
}
