//! What listens inside the app's pods, for port-forwards to reach: local TCP servers standing
//! in for each pod's ports — the Istio sidecar's Envoy admin port (15000, in every app pod)
//! serving `/clusters`, and graphql's port (3002, graphql pods only) answering queries.
//!
//! Behind them, [`Mesh`] plays Istio from what is stored, read at every request: a query
//! reaching a graphql pod makes its sidecar call one orders endpoint chosen by the orders
//! DestinationRule the store holds ([`OrdersRouting`]), an orders-2 pod that gets the call then
//! calls products itself, and graphql calls products twice, each products call chosen by the
//! products Service's stored `internalTrafficPolicy` ([`ProductsRouting`]: `Local` keeps it on
//! the caller's node and fails it when the node has no products endpoint, as kube-proxy and
//! Istio drop it; `Cluster` takes any products endpoint). Without a rule that turns locality
//! on, `trafficDistribution` on the Services counts as Kubernetes and Istio 1.27+ apply it:
//! `PreferSameZone` on orders-service keeps orders calls in the zone while it has endpoints,
//! `PreferSameNode` on products-service keeps products calls on the node while it has one. Every sidecar counts per endpoint as
//! Envoy does and serves the counters in Envoy's `/clusters` text format, with what Istio would
//! push: orders endpoints of other zones at priority 1 under locality failover, and only the
//! node's own products endpoints under `Local`. Where pods run is read from the store too (the
//! controllers' placement).
//!
//! Istio honours `internalTrafficPolicy: Local` in what it pushes to each sidecar since 1.17
//! (istio/istio#42551: only the endpoints on the proxy's node), which is what the `/clusters`
//! here shows.
//!
//! Not modelled: Envoy's real load balancers (a shared round-robin counter and a weighted
//! round-robin over `distribute`'s percentages stand in for them), outlier detection and
//! ejection, failover to a zone other than the caller's when its zone still has endpoints,
//! health checks, connection pools, retries, Istio's propagation delay (a stored change is seen
//! by every sidecar at once), `Sidecar` resources and mesh-wide `meshConfig.localityLbSetting`
//! (taken as Istio's default: enabled), sub-zones and regions (one region). And one liberty
//! with the app: orders-2 calls products for the order it returns to graphql (the real
//! orders 0.3.7-alpha does so only on `/v1/orders/products`), so that a products client off
//! graphql's node is exercised; port 3003 is not served.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

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

/// How orders calls are routed, from the orders DestinationRule in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrdersRouting {
    /// No rule for orders-service, a rule without `outlierDetection` (Istio applies locality
    /// load balancing only with it), or `localityLbSetting.enabled: false`: every orders
    /// endpoint alike, whatever its zone.
    Even,
    /// Locality failover (a rule with outlier detection whose `localityLbSetting` is absent or
    /// enabled without `distribute`, Istio's default): the caller's zone while it has
    /// endpoints, else any.
    Failover,
    /// `distribute`: per caller zone, destination zone -> percent.
    Distribute(BTreeMap<String, Vec<(String, u32)>>),
}

/// How products calls are routed, from products-service's stored `internalTrafficPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductsRouting {
    /// Only the caller's node; no endpoint there and the call fails.
    Local,
    /// Any products endpoint (also when the Service or the field is missing: the default).
    Cluster,
    /// `trafficDistribution: PreferSameNode` (without `Local`): the caller's node while it has
    /// an endpoint, else any; every endpoint listed, the node's own at priority 0.
    PreferNode,
}

/// The two policies as the store holds them now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policies {
    pub orders: OrdersRouting,
    pub products: ProductsRouting,
}

impl Policies {
    /// What a rule's `spec` means for orders calls, Istio's way.
    pub fn orders_from_rule(spec: Option<&serde_json::Value>) -> OrdersRouting {
        let Some(spec) = spec else {
            return OrdersRouting::Even;
        };
        let policy = &spec["trafficPolicy"];
        if policy.get("outlierDetection").is_none_or(|o| o.is_null()) {
            return OrdersRouting::Even;
        }
        let setting = &policy["loadBalancer"]["localityLbSetting"];
        if setting.get("enabled") == Some(&serde_json::Value::Bool(false)) {
            return OrdersRouting::Even;
        }
        let Some(rows) = setting.get("distribute").and_then(|d| d.as_array()) else {
            return OrdersRouting::Failover;
        };
        let zone = |locality: &str| locality.split('/').nth(1).unwrap_or_default().to_string();
        let table = rows
            .iter()
            .filter_map(|row| {
                let from = zone(row.get("from")?.as_str()?);
                let to = row
                    .get("to")?
                    .as_object()?
                    .iter()
                    .filter_map(|(l, w)| Some((zone(l), u32::try_from(w.as_u64()?).ok()?)))
                    .collect();
                Some((from, to))
            })
            .collect();
        OrdersRouting::Distribute(table)
    }

    /// Read from the store; what cannot be read counts as absent.
    async fn read(store: &kube::Client, namespace: &str) -> Policies {
        let rules = Api::<DynamicObject>::namespaced_with(
            store.clone(),
            namespace,
            &ApiResource::from_gvk(&GroupVersionKind::gvk(
                "networking.istio.io",
                "v1beta1",
                "DestinationRule",
            )),
        );
        let hosts = [
            "orders-service".to_string(),
            format!("orders-service.{namespace}"),
            format!("orders-service.{namespace}.svc.cluster.local"),
        ];
        let rule = rules.list(&ListParams::default()).await.ok().and_then(|l| {
            l.items.into_iter().find(|r| {
                r.data["spec"]["host"]
                    .as_str()
                    .is_some_and(|h| hosts.iter().any(|x| x == h))
            })
        });
        // `spec` as JSON: `trafficDistribution` may be newer than the Kubernetes types.
        let services = Api::<Service>::namespaced(store.clone(), namespace);
        let spec = |name: &'static str| {
            let services = services.clone();
            async move {
                match services.get_opt(name).await {
                    Ok(Some(s)) => serde_json::to_value(s.spec).unwrap_or_default(),
                    _ => serde_json::Value::Null,
                }
            }
        };
        let (orders_svc, products_svc) =
            (spec("orders-service").await, spec("products-service").await);
        let mut orders = Policies::orders_from_rule(rule.as_ref().map(|r| &r.data["spec"]));
        // Kubernetes' own field, which Istio follows too (1.27+): zone first, then any.
        let prefers = |spec: &serde_json::Value, values: &[&str]| {
            spec["trafficDistribution"]
                .as_str()
                .is_some_and(|v| values.contains(&v))
        };
        if orders == OrdersRouting::Even && prefers(&orders_svc, &["PreferSameZone", "PreferClose"])
        {
            orders = OrdersRouting::Failover;
        }
        let products = match products_svc["internalTrafficPolicy"].as_str() {
            Some("Local") => ProductsRouting::Local,
            _ if prefers(&products_svc, &["PreferSameNode"]) => ProductsRouting::PreferNode,
            _ => ProductsRouting::Cluster,
        };
        Policies { orders, products }
    }
}

/// The stand-in mesh: counters and a log of what the pods served.
#[derive(Default)]
pub struct Mesh {
    counters: Mutex<BTreeMap<String, Counters>>,
    orders_turn: AtomicUsize,
    products_turn: AtomicUsize,
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

    /// The products endpoints `caller`'s sidecar knows: under `Local`, its node's only.
    fn products_seen<'a>(
        caller: &MeshPod,
        pods: &'a [MeshPod],
        routing: ProductsRouting,
    ) -> Vec<&'a MeshPod> {
        pods.iter()
            .filter(|p| p.deployment.starts_with("products"))
            .filter(|p| routing != ProductsRouting::Local || p.node == caller.node)
            .collect()
    }

    /// One products call from `caller`: the endpoint, or the error the app reports.
    fn call_products(
        &self,
        caller: &MeshPod,
        pods: &[MeshPod],
        routing: ProductsRouting,
    ) -> Result<(), String> {
        let mut seen = Mesh::products_seen(caller, pods, routing);
        if routing == ProductsRouting::PreferNode && seen.iter().any(|p| p.node == caller.node) {
            seen.retain(|p| p.node == caller.node);
        }
        if seen.is_empty() {
            // Dropped: nothing listens behind the Service's address for this node.
            return Err("connect ECONNREFUSED products-service:3004".into());
        }
        let target = seen[self.products_turn.fetch_add(1, Ordering::Relaxed) % seen.len()];
        self.count(caller, PRODUCTS_CLUSTER, target);
        Ok(())
    }

    /// The orders endpoint for one call from `caller`.
    fn pick_orders<'a>(
        &self,
        caller: &MeshPod,
        pods: &'a [MeshPod],
        routing: &OrdersRouting,
    ) -> Option<&'a MeshPod> {
        let orders: Vec<&MeshPod> = pods
            .iter()
            .filter(|p| p.deployment.starts_with("orders"))
            .collect();
        let turn = self.orders_turn.fetch_add(1, Ordering::Relaxed);
        let in_zone = |zone: &str| -> Vec<&'a MeshPod> {
            orders.iter().copied().filter(|o| o.zone == zone).collect()
        };
        let pool = match routing {
            OrdersRouting::Even => orders.clone(),
            OrdersRouting::Failover => in_zone(&caller.zone),
            OrdersRouting::Distribute(table) => match table.get(&caller.zone) {
                // Weighted round robin over the row's zones, by percent.
                Some(row) if !row.is_empty() => {
                    let total: u32 = row.iter().map(|(_, w)| w).sum::<u32>().max(1);
                    let mut slot = (turn as u32) % total;
                    let zone = row
                        .iter()
                        .find(|(_, w)| {
                            let hit = slot < *w;
                            slot = slot.saturating_sub(*w);
                            hit
                        })
                        .map_or(caller.zone.as_str(), |(z, _)| z.as_str());
                    in_zone(zone)
                }
                _ => in_zone(&caller.zone),
            },
        };
        let pool = if pool.is_empty() { orders } else { pool };
        (!pool.is_empty()).then(|| pool[turn % pool.len()])
    }

    /// graphql pod `caller` serves one query.
    fn query(&self, caller: &MeshPod, pods: &[MeshPod], policies: &Policies) -> (u16, String) {
        let Some(target) = self.pick_orders(caller, pods, &policies.orders) else {
            return (503, "no healthy upstream".into());
        };
        self.count(caller, ORDERS_CLUSTER, target);
        let mut errors = Vec::new();
        // orders-2 calls products for the order it returns (orders-1 does not).
        if target.deployment == "orders-2" {
            if let Err(e) = self.call_products(target, pods, policies.products) {
                errors.push((
                    format!("Request failed with status code 503: {e}"),
                    "orders",
                ));
            }
        }
        // As the app's graphql resolves the default query: `products` once for the list and
        // once per order (one order here) for `Order.product`.
        for path in ["products", "orders.0.product"] {
            if let Err(e) = self.call_products(caller, pods, policies.products) {
                errors.push((e, path));
            }
        }
        if errors.is_empty() {
            return (
                200,
                r#"{"data":{"orders":[{"id":"1","orderFor":"ann","product":{"id":"1a","name":"Apple"}}],"products":[{"id":"1a","name":"Apple"}]}}"#
                    .into(),
            );
        }
        // graphql answers 200 with `errors` and nulls where the data would be.
        let errors: Vec<serde_json::Value> = errors
            .iter()
            .map(|(message, path)| {
                let path: Vec<serde_json::Value> = path
                    .split('.')
                    .map(|p| p.parse::<u64>().map_or_else(|_| p.into(), Into::into))
                    .collect();
                serde_json::json!({ "message": message, "path": path })
            })
            .collect();
        (
            200,
            serde_json::json!({
                "errors": errors,
                "data": { "orders": [{"id": "1", "orderFor": "ann", "product": null}], "products": null },
            })
            .to_string(),
        )
    }

    /// Envoy's `/clusters` for `caller`: the orders and products endpoints its sidecar would be
    /// given under `policies`, with locality, priority and counters, plus cluster-level lines.
    fn clusters(&self, caller: &MeshPod, pods: &[MeshPod], policies: &Policies) -> String {
        let counters = self.counters.lock().unwrap();
        let mine = counters.get(&caller.name);
        let mut out = String::new();
        let orders: Vec<&MeshPod> = pods
            .iter()
            .filter(|p| p.deployment.starts_with("orders"))
            .collect();
        let products = Mesh::products_seen(caller, pods, policies.products);
        for (cluster, endpoints, port) in [
            (ORDERS_CLUSTER, orders, 3003),
            (PRODUCTS_CLUSTER, products, 3004),
        ] {
            out.push_str(&format!("{cluster}::observability_name::{cluster}\n"));
            out.push_str(&format!(
                "{cluster}::default_priority::max_connections::4294967295\n"
            ));
            out.push_str(&format!("{cluster}::added_via_api::true\n"));
            for p in endpoints {
                let n = mine
                    .and_then(|m| m.get(&(cluster.to_owned(), p.ip.clone())))
                    .copied()
                    .unwrap_or(0);
                // Locality failover puts the other zones at priority 1; distribute weighs
                // localities instead, at one priority.
                let priority = match (&policies.orders, policies.products, cluster) {
                    (OrdersRouting::Failover, _, ORDERS_CLUSTER) if p.zone != caller.zone => 1,
                    (_, ProductsRouting::PreferNode, PRODUCTS_CLUSTER) if p.node != caller.node => {
                        1
                    }
                    _ => 0,
                };
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
                    ("priority", priority.to_string()),
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
        let policies = Policies::read(store, namespace).await;
        let me = pods.iter().find(|p| p.name == *pod);
        let (status, body) = match (*port, method.as_str(), path.as_str(), me) {
            (_, _, _, None) => (503, "gone".into()),
            (ENVOY_ADMIN_PORT, "GET", "/clusters", Some(me)) => {
                (200, self.mesh.clusters(me, &pods, &policies))
            }
            // graphql's liveness answer, which calls nothing else.
            (GRAPHQL_PORT, "GET", "/v1/test", _) => (200, "test".into()),
            (GRAPHQL_PORT, "POST", "/v1/graphql", Some(me)) => {
                self.mesh.query(me, &pods, &policies)
            }
            _ => (404, "not found".into()),
        };
        hyper::Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }
}
