//! What listens inside the app's pods, for port-forwards to reach: local TCP servers standing
//! in for each pod's ports — the Istio sidecar's Envoy admin port (15000, in every app pod)
//! serving `/clusters`, and graphql's port (3002, graphql pods only) answering queries.
//!
//! Behind them, [`Mesh`] plays Istio under meshstack's policies (as `tests/integration/
//! k8s_verify.rs`'s stand-in does in-process): a query reaching a graphql pod makes its
//! sidecar call an orders endpoint in its own zone (another zone only when its zone has
//! none), an orders-2 pod that gets the call then calls products itself, and each caller
//! calls the products pod on its own node; every sidecar counts per endpoint as Envoy does and
//! serves the counters in Envoy's `/clusters` text format. Where pods run is read from the
//! store at each request (the controllers' placement).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

pub const ENVOY_ADMIN_PORT: u16 = 15000;
pub const GRAPHQL_PORT: u16 = 3002;
pub const ORDERS_CLUSTER: &str = "outbound|3003||orders-service.ecommerce.svc.cluster.local";
pub const PRODUCTS_CLUSTER: &str = "outbound|3004||products-service.ecommerce.svc.cluster.local";
const REGION: &str = "us-east-1";

/// One caller's requests per (Envoy cluster, endpoint IP).
pub type Counters = BTreeMap<(String, String), u64>;

/// One app pod as the mesh sees it.
#[derive(Clone, Debug)]
pub struct MeshPod {
    pub name: String,
    pub deployment: String,
    pub ip: String,
    pub zone: String,
    pub node: String,
}

/// The stand-in mesh: counters and a log of what the pods served.
#[derive(Default)]
pub struct Mesh {
    counters: Mutex<BTreeMap<String, Counters>>,
    turn: AtomicUsize,
    /// `NAMESPACE/POD:PORT METHOD PATH`, one line per request a stand-in pod answered.
    served: Mutex<Vec<String>>,
}

impl Mesh {
    /// caller pod -> its counters.
    pub fn counters(&self) -> BTreeMap<String, Counters> {
        self.counters.lock().unwrap().clone()
    }

    pub fn served(&self) -> Vec<String> {
        self.served.lock().unwrap().clone()
    }

    fn count(&self, caller: &MeshPod, cluster: &str, target: &MeshPod) {
        *self
            .counters
            .lock()
            .unwrap()
            .entry(caller.name.clone())
            .or_default()
            .entry((cluster.to_owned(), target.ip.clone()))
            .or_default() += 1;
    }

    fn products_for<'a>(&self, caller: &MeshPod, pods: &'a [MeshPod]) -> Option<&'a MeshPod> {
        let products: Vec<&MeshPod> = pods
            .iter()
            .filter(|p| p.deployment.starts_with("products"))
            .collect();
        products
            .iter()
            .find(|p| p.node == caller.node)
            .or_else(|| products.first())
            .copied()
    }

    /// graphql pod `caller` serves one query.
    fn query(&self, caller: &MeshPod, pods: &[MeshPod]) -> (u16, String) {
        let orders: Vec<&MeshPod> = pods
            .iter()
            .filter(|p| p.deployment.starts_with("orders"))
            .collect();
        let local: Vec<&MeshPod> = orders
            .iter()
            .copied()
            .filter(|o| o.zone == caller.zone)
            .collect();
        let pool = if local.is_empty() { &orders } else { &local };
        let (Some(products), false) = (self.products_for(caller, pods), pool.is_empty()) else {
            return (503, "no healthy upstream".into());
        };
        let target = pool[self.turn.fetch_add(1, Ordering::Relaxed) % pool.len()];
        self.count(caller, ORDERS_CLUSTER, target);
        if target.deployment == "orders-2" {
            if let Some(p) = self.products_for(target, pods) {
                self.count(target, PRODUCTS_CLUSTER, p);
            }
        }
        // As the app's graphql resolves the default query: `products` once for the list and
        // once per order (one order here) for `Order.product`.
        self.count(caller, PRODUCTS_CLUSTER, products);
        self.count(caller, PRODUCTS_CLUSTER, products);
        (
            200,
            r#"{"data":{"orders":[{"id":"1","orderFor":"ann","product":{"id":"1a","name":"Apple"}}],"products":[{"id":"1a","name":"Apple"}]}}"#
                .into(),
        )
    }

    /// Envoy's `/clusters` for `caller`: every orders and products endpoint with its locality
    /// and counters, plus cluster-level lines.
    fn clusters(&self, caller: &str, pods: &[MeshPod]) -> String {
        let counters = self.counters.lock().unwrap();
        let mine = counters.get(caller);
        let mut out = String::new();
        for (cluster, prefix, port) in [
            (ORDERS_CLUSTER, "orders", 3003),
            (PRODUCTS_CLUSTER, "products", 3004),
        ] {
            out.push_str(&format!("{cluster}::observability_name::{cluster}\n"));
            out.push_str(&format!(
                "{cluster}::default_priority::max_connections::4294967295\n"
            ));
            out.push_str(&format!("{cluster}::added_via_api::true\n"));
            for p in pods.iter().filter(|p| p.deployment.starts_with(prefix)) {
                let n = mine
                    .and_then(|m| m.get(&(cluster.to_owned(), p.ip.clone())))
                    .copied()
                    .unwrap_or(0);
                let host = format!("{cluster}::{}:{port}", p.ip);
                for (stat, value) in [
                    ("cx_active", "1".to_owned()),
                    ("rq_error", "0".to_owned()),
                    ("rq_success", n.to_string()),
                    ("rq_total", n.to_string()),
                    ("hostname", String::new()),
                    ("health_flags", "healthy".to_owned()),
                    ("weight", "1".to_owned()),
                    ("region", REGION.to_owned()),
                    ("zone", p.zone.clone()),
                    ("sub_zone", String::new()),
                    ("canary", "false".to_owned()),
                    ("priority", "0".to_owned()),
                    ("success_rate", "-1".to_owned()),
                ] {
                    out.push_str(&format!("{host}::{stat}::{value}\n"));
                }
            }
        }
        out
    }
}

/// The app's scheduled pods with an IP, with their zone, from the store.
async fn mesh_pods(store: &kube::Client, namespace: &str) -> Result<Vec<MeshPod>, kube::Error> {
    let nodes = Api::<Node>::all(store.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let zone_of = |node: &str| {
        nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node))
            .and_then(|n| {
                n.metadata
                    .labels
                    .as_ref()?
                    .get("topology.kubernetes.io/zone")
                    .cloned()
            })
            .unwrap_or_default()
    };
    let pods = Api::<Pod>::namespaced(store.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    Ok(pods
        .into_iter()
        .filter_map(|p| {
            let node = p.spec.as_ref()?.node_name.clone()?;
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            let owner = p.metadata.owner_references.as_ref()?.first()?.name.clone();
            let hash = p
                .metadata
                .labels
                .as_ref()?
                .get("pod-template-hash")?
                .clone();
            let deployment = owner.strip_suffix(&format!("-{hash}"))?.to_string();
            Some(MeshPod {
                name: p.metadata.name?,
                deployment,
                ip,
                zone: zone_of(&node),
                node,
            })
        })
        .collect())
}

/// The stand-in listeners, one per (namespace, pod, port), started on first use.
#[derive(Default)]
pub struct Pods {
    pub mesh: Arc<Mesh>,
    listeners: Mutex<HashMap<(String, String, u16), SocketAddr>>,
}

impl Pods {
    /// Where `port` of `pod` listens, starting its stand-in if needed; `None` when nothing
    /// listens there (no such pod, or a port its containers do not open).
    pub async fn address(
        self: &Arc<Self>,
        store: &kube::Client,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> Option<SocketAddr> {
        let key = (namespace.to_string(), pod.to_string(), port);
        if let Some(a) = self.listeners.lock().unwrap().get(&key) {
            return Some(*a);
        }
        let pods = mesh_pods(store, namespace).await.ok()?;
        let me = pods.iter().find(|p| p.name == pod)?;
        let opens =
            port == ENVOY_ADMIN_PORT || (port == GRAPHQL_PORT && me.deployment == "graphql");
        if !opens {
            return None;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
        let addr = listener.local_addr().ok()?;
        let this = self.clone();
        let store = store.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (this, store, key) = (this.clone(), store.clone(), key.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (this, store, key) = (this.clone(), store.clone(), key.clone());
                        async move { Ok::<_, Infallible>(this.answer(&store, &key, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        self.listeners
            .lock()
            .unwrap()
            .insert((namespace.to_string(), pod.to_string(), port), addr);
        Some(addr)
    }

    async fn answer(
        &self,
        store: &kube::Client,
        (namespace, pod, port): &(String, String, u16),
        req: hyper::Request<Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let (method, path) = (req.method().to_string(), req.uri().path().to_string());
        let _ = req.into_body().collect().await;
        self.mesh
            .served
            .lock()
            .unwrap()
            .push(format!("{namespace}/{pod}:{port} {method} {path}"));
        let pods = mesh_pods(store, namespace).await.unwrap_or_default();
        let (status, body) = match (*port, method.as_str(), path.as_str()) {
            (ENVOY_ADMIN_PORT, "GET", "/clusters") => (200, self.mesh.clusters(pod, &pods)),
            // graphql's liveness answer, which calls nothing else.
            (GRAPHQL_PORT, "GET", "/v1/test") => (200, "test".into()),
            (GRAPHQL_PORT, "POST", "/v1/graphql") => match pods.iter().find(|p| p.name == *pod) {
                Some(me) => self.mesh.query(me, &pods),
                None => (503, "gone".into()),
            },
            _ => (404, "not found".into()),
        };
        hyper::Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }
}
