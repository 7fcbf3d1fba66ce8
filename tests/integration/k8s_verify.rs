//! `meshstack pods` and `meshstack verify` end to end on the in-memory API server: nodes and
//! pods seeded as the scheduler would leave them, and a stand-in for the sidecars and the app
//! behind the `PodHttp` seam (the real one port-forwards to Envoy's admin port).
//!
//! The stand-in mesh plays Istio and the app as the app's source behaves (see the seed's
//! notes): a graphql query calls orders once (`/v1/orders`, two orders), products once for the
//! list and once more per order when the query asks for `product`; `GET /v1/orders/products`
//! on orders-2 calls products once per order, and orders-1 answers 404 there; `GET /v1/test`
//! on graphql calls nothing. graphql answers HTTP 200 with an `errors` array when a call
//! behind it fails, orders-2 answers 503. Every sidecar counts per endpoint as Envoy does,
//! serving the counters in Envoy's `/clusters` text format on port 15000; a call dropped by
//! `internalTrafficPolicy: Local` (no products pod on the caller's node) reaches no endpoint
//! and is counted nowhere. How the mesh picks endpoints is the test's knob: as meshstack's
//! policies make Istio do (same zone, same node), or as the seed's rule did (80% of orders
//! calls to one zone, products anywhere).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use kube_fake_client::ClientBuilder;
use meshstack::config::Stack;
use meshstack::inspect::{self, Load};
use meshstack::k8s::pod_http::{HttpRequest, HttpResponse, PodHttp, PodHttpError};
use meshstack::locality::placement;
use serde_json::{json, Value};

use crate::support::k8s::{fake_cluster, placement as seed};

const ORDERS: &str = "outbound|3003||orders-service.ecommerce.svc.cluster.local";
const PRODUCTS: &str = "outbound|3004||products-service.ecommerce.svc.cluster.local";
const REGION: &str = "us-east-1";
/// The orders every orders pod answers with: two, each naming a product.
const ORDER_PRODUCTS: [&str; 2] = ["1a", "1b"];

/// How the stand-in mesh routes.
#[derive(Clone, Copy, PartialEq)]
enum Routing {
    /// meshstack's policies: orders in the caller's zone, products on the caller's node
    /// (internalTrafficPolicy: Local: dropped when the node has none).
    Local,
    /// The seed's rule: 4 of 5 orders calls to the first zone, products round-robin.
    Seed,
}

/// One pod of the app, as the mesh sees it.
#[derive(Clone)]
struct MeshPod {
    name: String,
    deployment: String,
    ip: String,
    zone: String,
    node: String,
}

/// One sidecar's requests per (cluster, endpoint IP).
type Counters = BTreeMap<(String, String), u64>;

struct Mesh {
    pods: Vec<MeshPod>,
    routing: Routing,
    gateway_up: bool,
    /// graphql started after the Services, so it has their service-link variables; without
    /// them it calls `undefined/v1/orders`, which ends at 127.0.0.1:80.
    service_links: bool,
    /// graphql answers `GET /v1/test`.
    graphql_serves: bool,
    /// caller pod -> (cluster, endpoint ip) -> requests.
    counters: Mutex<BTreeMap<String, Counters>>,
    turn: Mutex<usize>,
    /// Round-robin over products, apart from `turn` so that it does not fall into step.
    products_turn: Mutex<usize>,
    /// The gateway's round-robin over the pods behind a route, on its own for the same reason.
    gateway_turn: Mutex<usize>,
    /// Every request the seam received: `pod NAME:PORT METHOD PATH` or `address HOST:PORT ...`.
    log: Mutex<Vec<String>>,
}

impl Mesh {
    fn new(pods: Vec<MeshPod>, routing: Routing, gateway_up: bool) -> Self {
        Mesh {
            pods,
            routing,
            gateway_up,
            service_links: true,
            graphql_serves: true,
            counters: Mutex::default(),
            turn: Mutex::new(0),
            products_turn: Mutex::new(0),
            gateway_turn: Mutex::new(0),
            log: Mutex::default(),
        }
    }

    fn next(&self) -> usize {
        let mut t = self.turn.lock().unwrap();
        *t += 1;
        *t
    }

    /// The gateway's next pick among `n` pods.
    fn gateway_pick(&self, n: usize) -> usize {
        let mut t = self.gateway_turn.lock().unwrap();
        *t += 1;
        *t % n
    }

    fn of(&self, deployment_prefix: &str) -> Vec<&MeshPod> {
        self.pods
            .iter()
            .filter(|p| p.deployment.starts_with(deployment_prefix))
            .collect()
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

    /// One call from `caller` to products: counted at the endpoint that answers, or `Err` with
    /// the message the app sees when the call is dropped (no local endpoint under `Local`).
    fn call_products(&self, caller: &MeshPod) -> Result<(), String> {
        let products = self.of("products");
        let target = match self.routing {
            Routing::Local => products
                .into_iter()
                .find(|p| p.node == caller.node)
                .cloned(),
            Routing::Seed => {
                let mut t = self.products_turn.lock().unwrap();
                *t += 1;
                Some(products[*t % products.len()].clone())
            }
        };
        match target {
            Some(target) => {
                self.count(caller, PRODUCTS, &target);
                Ok(())
            }
            None => Err("connect ECONNREFUSED 10.100.73.12:3004".into()),
        }
    }

    /// One call from graphql pod `pod` to orders.
    fn call_orders(&self, pod: &MeshPod) {
        let orders = self.of("orders");
        let target = match self.routing {
            Routing::Local => {
                let local: Vec<&MeshPod> = orders
                    .iter()
                    .copied()
                    .filter(|o| o.zone == pod.zone)
                    .collect();
                local[self.next() % local.len()].clone()
            }
            Routing::Seed => {
                let first_zone = orders.iter().map(|o| &o.zone).min().unwrap().clone();
                let (home, away): (Vec<&MeshPod>, Vec<&MeshPod>) =
                    orders.iter().partition(|o| o.zone == first_zone);
                let n = self.next();
                if !n.is_multiple_of(5) || away.is_empty() {
                    home[n % home.len()].clone()
                } else {
                    away[n % away.len()].clone()
                }
            }
        };
        self.count(pod, ORDERS, &target);
    }

    /// graphql pod `pod` serves one query, as express-graphql does: HTTP 200, with `errors`
    /// and nulls for what failed.
    fn query(&self, pod: &MeshPod, query: &str) -> HttpResponse {
        let words: Vec<&str> = query
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let mut errors = Vec::new();
        let mut data = serde_json::Map::new();
        if words.contains(&"orders") {
            if self.service_links {
                self.call_orders(pod);
                let orders: Vec<Value> = ORDER_PRODUCTS
                    .iter()
                    .enumerate()
                    .map(|(i, product)| {
                        let mut order = json!({"id": format!("{}", i + 1), "orderFor": "Lukonde"});
                        if words.contains(&"product") {
                            match self.call_products(pod) {
                                Ok(()) => order["product"] = json!({"id": product, "name": "Sneakers"}),
                                Err(message) => {
                                    order["product"] = Value::Null;
                                    errors.push(json!({"message": message, "path": ["orders", i, "product"]}));
                                }
                            }
                        }
                        order
                    })
                    .collect();
                data.insert("orders".into(), json!(orders));
            } else {
                errors.push(
                    json!({"message": "connect ECONNREFUSED 127.0.0.1:80", "path": ["orders"]}),
                );
                data.insert("orders".into(), Value::Null);
            }
        }
        if words.contains(&"products") {
            let result = if self.service_links {
                self.call_products(pod)
            } else {
                Err("connect ECONNREFUSED 127.0.0.1:80".into())
            };
            match result {
                Ok(()) => {
                    data.insert(
                        "products".into(),
                        json!([{"id": "1a", "name": "Sneakers"}, {"id": "1b", "name": "Hoodie"}]),
                    );
                }
                Err(message) => {
                    errors.push(json!({"message": message, "path": ["products"]}));
                    data.insert("products".into(), Value::Null);
                }
            }
        }
        let mut body = json!({"data": data});
        if !errors.is_empty() {
            body["errors"] = json!(errors);
        }
        HttpResponse {
            status: 200,
            body: body.to_string().into_bytes(),
        }
    }

    /// `GET /v1/orders/products` on orders pod `pod`: orders-1 has no such path; orders-2
    /// calls products once per order and answers 503 when one of those calls fails.
    fn orders_products(&self, pod: &MeshPod) -> HttpResponse {
        if pod.deployment != "orders-2" {
            return HttpResponse {
                status: 404,
                body: b"Cannot GET /v1/orders/products".to_vec(),
            };
        }
        for _ in ORDER_PRODUCTS {
            if let Err(message) = self.call_products(pod) {
                return HttpResponse {
                    status: 503,
                    body: json!({"error": message}).to_string().into_bytes(),
                };
            }
        }
        HttpResponse {
            status: 200,
            body: br#"[{"id":"1","product":{"id":"1a"}},{"id":"2","product":{"id":"1b"}}]"#
                .to_vec(),
        }
    }

    /// Envoy's `/clusters` for `caller`: every orders and products endpoint, with locality and
    /// counters, plus cluster-level lines.
    fn clusters(&self, caller: &str) -> String {
        let counters = self.counters.lock().unwrap();
        let mine = counters.get(caller);
        let mut out = String::new();
        for (cluster, prefix, port) in [(ORDERS, "orders", 3003), (PRODUCTS, "products", 3004)] {
            out.push_str(&format!("{cluster}::observability_name::{cluster}\n"));
            out.push_str(&format!(
                "{cluster}::default_priority::max_connections::4294967295\n"
            ));
            out.push_str(&format!("{cluster}::added_via_api::true\n"));
            for p in self.of(prefix) {
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

/// The query in a `POST /v1/graphql` body.
fn query_of(req: &HttpRequest<'_>) -> String {
    let body: Value = serde_json::from_slice(req.body).expect("a JSON body");
    body["query"].as_str().expect("a query").to_owned()
}

#[async_trait]
impl PodHttp for Mesh {
    async fn pod(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
        req: &HttpRequest<'_>,
    ) -> Result<HttpResponse, PodHttpError> {
        assert_eq!(namespace, "ecommerce");
        self.log
            .lock()
            .unwrap()
            .push(format!("pod {pod}:{port} {} {}", req.method, req.path));
        let me = self
            .pods
            .iter()
            .find(|p| p.name == pod)
            .unwrap_or_else(|| panic!("no pod {pod}"));
        match (port, req.method, req.path) {
            (15000, "GET", "/clusters") => Ok(HttpResponse {
                status: 200,
                body: self.clusters(pod).into_bytes(),
            }),
            (3002, "POST", "/v1/graphql") if me.deployment == "graphql" => {
                Ok(self.query(me, &query_of(req)))
            }
            (3002, "GET", "/v1/test") if me.deployment == "graphql" => Ok(HttpResponse {
                status: if self.graphql_serves { 200 } else { 500 },
                body: b"test".to_vec(),
            }),
            (3003, "GET", "/v1/orders/products") if me.deployment.starts_with("orders") => {
                Ok(self.orders_products(me))
            }
            other => panic!("unexpected request {other:?} to {pod}"),
        }
    }

    async fn address(
        &self,
        host: &str,
        port: u16,
        req: &HttpRequest<'_>,
    ) -> Result<HttpResponse, PodHttpError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("address {host}:{port} {} {}", req.method, req.path));
        if !self.gateway_up {
            return Err(PodHttpError::Connect {
                target: format!("{host}:{port}"),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            });
        }
        // The gateway's routes: /v1/graphql to graphql-service, the /v1/orders prefix to
        // orders-service (both versions).
        match (req.method, req.path) {
            ("POST", "/v1/graphql") => {
                let graphql = self.of("graphql");
                let pod = graphql[self.gateway_pick(graphql.len())].clone();
                Ok(self.query(&pod, &query_of(req)))
            }
            ("GET", "/v1/orders/products") => {
                let orders = self.of("orders");
                let pod = orders[self.gateway_pick(orders.len())].clone();
                Ok(self.orders_products(&pod))
            }
            other => panic!("the gateway has no route for {other:?}"),
        }
    }
}

/// Three zones, one node each; the pods the app's placement rules produce, with IPs.
const LAYOUT: [(&str, &str, &str); 7] = [
    ("products-1", "node-0", "10.0.0.11"),
    ("graphql", "node-0", "10.0.0.12"),
    ("orders-1", "node-0", "10.0.0.13"),
    ("products-2", "node-1", "10.0.1.11"),
    ("orders-2", "node-1", "10.0.1.12"),
    ("graphql", "node-1", "10.0.1.14"),
    ("orders-1", "node-2", "10.0.2.13"),
];
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// The cluster seeded with LAYOUT, and the mesh's view of the same pods.
async fn demo(routing: Routing, gateway_up: bool) -> (kube::Client, Mesh) {
    demo_with(&LAYOUT, routing, gateway_up).await
}

/// The cluster seeded with `layout` (nodes `node-<i>` in `ZONES[i]`), and the mesh's view.
async fn demo_with(
    layout: &[(&str, &str, &str)],
    routing: Routing,
    gateway_up: bool,
) -> (kube::Client, Mesh) {
    let client = fake_cluster(ClientBuilder::new()).await;
    seed_gateway(&client).await;
    for (i, zone) in ZONES.iter().enumerate() {
        seed::node(&client, &format!("node-{i}"), zone).await;
    }
    let specs: Vec<seed::PodSpec> = layout
        .iter()
        .map(|(d, n, ip)| (*d, *n, *ip, true))
        .collect();
    let names = seed::pods(&client, &specs).await;
    let pods = layout
        .iter()
        .zip(names)
        .map(|((deployment, node, ip), name)| MeshPod {
            name,
            deployment: (*deployment).to_owned(),
            ip: (*ip).to_owned(),
            zone: ZONES[node[5..].parse::<usize>().unwrap()].to_owned(),
            node: (*node).to_owned(),
        })
        .collect();
    (client, Mesh::new(pods, routing, gateway_up))
}

/// The ingress gateway's Service with the load balancer address AWS would give it.
async fn seed_gateway(client: &kube::Client) {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    let api: Api<Service> = Api::namespaced(client.clone(), "istio-system");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http2", "port": 80}]},
    }))
    .unwrap();
    api.create(&PostParams::default(), &svc).await.unwrap();
    let status =
        serde_json::json!({"status": {"loadBalancer": {"ingress": [{"hostname": GATEWAY}]}}});
    api.patch_status(
        "istio-ingressgateway",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();
}

const GATEWAY: &str = "a1b2c3-123.us-east-1.elb.amazonaws.com";

/// The orders and products Services, created at `created` (RFC 3339; the fake keeps it).
async fn seed_services(client: &kube::Client, created: &str) {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, PostParams};
    let api: Api<Service> = Api::namespaced(client.clone(), "ecommerce");
    for (name, port) in [("orders-service", 3003), ("products-service", 3004)] {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ecommerce", "creationTimestamp": created},
            "spec": {"ports": [{"name": "http", "port": port}]},
        }))
        .unwrap();
        api.create(&PostParams::default(), &svc).await.unwrap();
    }
}

/// Every graphql pod's container (and its sidecar) as the kubelet reports them started at
/// `started`.
async fn graphql_started(client: &kube::Client, mesh: &Mesh, started: &str) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<Pod> = Api::namespaced(client.clone(), "ecommerce");
    for pod in mesh.of("graphql") {
        let running = |name: &str| {
            json!({"name": name, "ready": true, "restartCount": 0, "image": "x", "imageID": "",
                   "state": {"running": {"startedAt": started}}})
        };
        let status = json!({"status": {"startTime": started, "containerStatuses": [
            running("istio-proxy"), running("graphql-container")]}});
        api.patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }
}

fn stack() -> Stack {
    Stack::parse("name: verify-test\nregion: us-east-1\n", "test.yaml").unwrap()
}

/// `n` queries of `query`, no orders/products requests.
fn queries(n: u64, query: &str) -> Load<'_> {
    Load {
        requests: n,
        query,
        orders_products: 0,
    }
}

fn no_warnings(w: String) {
    panic!("unexpected warning: {w}")
}

#[tokio::test]
async fn pods_groups_the_app_by_zone_and_node_and_marks_a_node_without_local_products() {
    let (client, _) = demo(Routing::Local, true).await;
    let report = inspect::pods(&client).await.unwrap();
    let zones: Vec<&str> = report.zones.iter().map(|z| z.zone.as_str()).collect();
    assert_eq!(zones, ZONES);
    let node0 = &report.zones[0].nodes[0];
    assert_eq!(node0.name, "node-0");
    assert_eq!(node0.origin, "karpenter:ecommerce");
    let deployments: Vec<_> = node0.pods.iter().map(|p| p.deployment.clone()).collect();
    assert_eq!(deployments.len(), 3, "{deployments:?}");
    assert!(!report
        .zones
        .iter()
        .flat_map(|z| &z.nodes)
        .any(|n| n.missing_local_products));
    assert_eq!(report.summary.unsafe_nodes, 0);
    let text = placement::render_text(&report);
    assert!(
        text.contains("us-east-1b") && text.contains("orders-2"),
        "{text}"
    );
    assert!(!text.contains('!'), "{text}");

    // A graphql pod lands on a node without products: marked, in the text and on the page.
    seed::node(&client, "node-3", "us-east-1c").await;
    seed::pods(&client, &[("graphql", "node-3", "10.0.2.40", true)]).await;
    let report = inspect::pods(&client).await.unwrap();
    assert_eq!(report.summary.unsafe_nodes, 1);
    let marked: Vec<_> = report
        .zones
        .iter()
        .flat_map(|z| &z.nodes)
        .filter(|n| n.missing_local_products)
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(marked, ["node-3"]);
    assert!(placement::render_text(&report).contains("! "));
    let page = inspect::pods_page(
        &report,
        inspect::PageMeta {
            stack: "verify-test",
            region: Some(REGION),
            measured_at: "2026-11-30 12:00:00 UTC",
        },
    );
    assert_eq!(page.matches("<section class=\"zone\"").count(), 3);
    assert_eq!(page.matches("<div class=\"node").count(), 4);
    assert_eq!(
        page.matches("<div class=\"node unsafe\" data-node=\"node-3\"")
            .count(),
        1,
        "{page}"
    );
    assert!(
        !page.contains("data-verdict"),
        "a placement page has no verdict"
    );
}

#[tokio::test]
async fn verify_sends_traffic_through_the_gateway_and_passes_when_traffic_stays_local() {
    let (client, mesh) = demo(Routing::Local, true).await;
    // The Services came first, graphql after them: no service-link warning.
    seed_services(&client, "2026-06-01T00:00:00Z").await;
    graphql_started(&client, &mesh, "2026-06-01T00:05:00Z").await;
    let stack = stack();
    // Traffic from before the run must not count: one query answered earlier by each graphql.
    for p in mesh.of("graphql").into_iter().cloned().collect::<Vec<_>>() {
        mesh.query(&p, inspect::DEFAULT_QUERY);
    }
    let progressed = Mutex::new(Vec::new());
    let progress = |done: u64, total: u64| progressed.lock().unwrap().push((done, total));
    let load = Load {
        requests: 40,
        query: inspect::DEFAULT_QUERY,
        orders_products: 20,
    };
    let v = inspect::verify_live(&client, &mesh, &stack, load, &progress, &no_warnings)
        .await
        .unwrap();

    let traffic = v.traffic.as_ref().unwrap();
    assert_eq!(traffic.target, format!("gateway {GATEWAY}"));
    assert_eq!(
        (traffic.sent, traffic.succeeded, traffic.failed),
        (40, 40, 0)
    );
    assert!(traffic.bytes_per_request.unwrap() > 100);
    // orders/products: the gateway balances over both orders versions; orders-1's 404s are
    // neither successes nor failures.
    let op = v.orders_products.as_ref().unwrap();
    assert_eq!(op.sent, 20);
    assert_eq!(op.failed, 0);
    assert_eq!(op.succeeded + op.not_found, 20);
    assert!(op.succeeded > 0 && op.not_found > 0, "{op:?}");
    assert_eq!(progressed.lock().unwrap().last(), Some(&(60, 60)));
    // Exactly the 40 queries: 40 orders calls from graphql; products once for the list and
    // once per order (two), plus two per orders/products answered by orders-2.
    assert_eq!(v.report.totals.orders_total, 40);
    assert_eq!(v.report.totals.products_total, 40 * 3 + 2 * op.succeeded);
    assert_eq!(v.report.totals.orders_in_zone_pct, Some(100.0));
    assert_eq!(v.report.totals.products_on_node_pct, Some(100.0));
    assert!(v.report.verdict.pass, "{:?}", v.report.verdict);
    // orders-2's own products calls are measured on its node.
    let orders2_node = v.report.nodes.iter().find(|n| n.node == "node-1").unwrap();
    assert!(orders2_node
        .callers
        .iter()
        .any(|c| c.starts_with("orders-2")));
    assert_eq!(orders2_node.products_off_node, 0);
    // graphql is asked GET /v1/test, each pod, before any load; the sidecars are read twice.
    let log = mesh.log.lock().unwrap().clone();
    let tests: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, l)| l.ends_with(":3002 GET /v1/test"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(tests.len(), 2, "{log:?}");
    let first_load = log.iter().position(|l| l.starts_with("address ")).unwrap();
    assert!(tests.iter().all(|&i| i < first_load), "{log:?}");
    let reads = log
        .iter()
        .filter(|l| l.ends_with(":15000 GET /clusters"))
        .count();
    assert_eq!(reads, 2 * 5);
    let text = inspect::render_text(&v, false);
    assert!(
        text.contains("sent 40 graphql queries to gateway"),
        "{text}"
    );
    assert!(text.contains("40 succeeded, 0 failed"), "{text}");
    assert!(!text.contains('\x1b'), "no colour unless asked: {text}");

    // The live page: every zone and node, the orders arrows (all in zone), products on node.
    let page = inspect::verify_page(
        &v,
        inspect::PageMeta {
            stack: "verify-test",
            region: None,
            measured_at: "2026-11-30 12:00:00 UTC",
        },
    );
    assert_eq!(page.matches("<section class=\"zone\"").count(), 3);
    assert_eq!(page.matches("<div class=\"node\"").count(), 3);
    // graphql runs in us-east-1a and 1b: one loop each, all their orders calls kept home.
    assert_eq!(page.matches("class=\"arrow-label\"").count(), 2, "{page}");
    assert_eq!(page.matches("data-pct=\"100.0%\"").count(), 2);
    assert!(
        page.contains("region <b>us-east-1</b>"),
        "the endpoints' region"
    );
    assert!(page.contains("sent 40 graphql queries to gateway"));
    assert!(page.contains("products calls: all"));
    assert!(!page.contains("left this node"));
    assert!(
        !page.contains("Not shown"),
        "nothing missing when live with load"
    );
}

#[tokio::test]
async fn verify_fails_when_products_calls_are_dropped_although_the_counters_look_perfect() {
    // A second graphql pod on node-2, which has no products pod: under internalTrafficPolicy:
    // Local its products calls are dropped. graphql still answers HTTP 200, with `errors`.
    let mut layout = LAYOUT.to_vec();
    layout.push(("graphql", "node-2", "10.0.2.12"));
    let (client, mesh) = demo_with(&layout, Routing::Local, true).await;
    let v = inspect::verify_live(
        &client,
        &mesh,
        &stack(),
        queries(60, inspect::DEFAULT_QUERY),
        &|_, _| {},
        &no_warnings,
    )
    .await
    .unwrap();
    let r = &v.report;
    // What the counters alone say: every orders call in zone, every products call that was
    // made answered on its node. Counting any 2xx as a success, this run passed.
    assert_eq!(r.totals.orders_in_zone_pct, Some(100.0));
    assert_eq!(r.totals.products_on_node_pct, Some(100.0));
    // The answers tell the truth: a third of the queries failed.
    let traffic = v.traffic.as_ref().unwrap();
    assert_eq!((traffic.sent, traffic.failed), (60, 20), "{traffic:?}");
    assert!(!r.verdict.pass);
    assert_eq!(r.verdict.failures.len(), 1, "{:?}", r.verdict.failures);
    let failure = &r.verdict.failures[0];
    assert!(
        failure.starts_with("20 of 60 requests failed (33.4%), above the tolerated 0%"),
        "{failure}"
    );
    assert!(
        failure.contains("connect ECONNREFUSED 10.100.73.12:3004 (at orders.0.product)"),
        "{failure}"
    );
    assert!(
        r.verdict
            .hints
            .iter()
            .any(|h| h.contains("internalTrafficPolicy: Local")),
        "{:?}",
        r.verdict.hints
    );
    let text = inspect::render_text(&v, false);
    assert!(text.contains("verdict: FAIL"), "{text}");
    assert!(text.contains("20x connect ECONNREFUSED"), "{text}");

    // The stack may tolerate some failures; 20 of 60 is above 30%, not above 40%.
    for (max, pass) in [(30.0, false), (40.0, true)] {
        let tolerant = Stack::parse(
            &format!("name: verify-test\nregion: us-east-1\nlocality: {{verify: {{failed_requests_max: {max}}}}}\n"),
            "test.yaml",
        )
        .unwrap();
        let v = inspect::verify_live(
            &client,
            &mesh,
            &tolerant,
            queries(60, inspect::DEFAULT_QUERY),
            &|_, _| {},
            &no_warnings,
        )
        .await
        .unwrap();
        assert_eq!(v.report.verdict.pass, pass, "{max}: {:?}", v.report.verdict);
    }

    // A custom query that asks for orders only makes no products call: it succeeds.
    let v = inspect::verify_live(
        &client,
        &mesh,
        &stack(),
        queries(30, "{ orders { id } }"),
        &|_, _| {},
        &no_warnings,
    )
    .await
    .unwrap();
    assert_eq!(v.traffic.as_ref().unwrap().failed, 0);
    assert!(v.report.verdict.pass, "{:?}", v.report.verdict);
}

#[tokio::test]
async fn verify_explains_graphql_started_before_the_services() {
    let (client, mut mesh) = demo(Routing::Local, true).await;
    // graphql's container started in May, the Services were made in June: graphql has no
    // service-link variables for them, and calls undefined/... (127.0.0.1:80).
    seed_services(&client, "2026-06-01T00:00:00Z").await;
    graphql_started(&client, &mesh, "2026-05-01T00:00:00Z").await;
    mesh.service_links = false;
    let warnings = Mutex::new(Vec::new());
    let warn = |w: String| warnings.lock().unwrap().push(w);
    let v = inspect::verify_live(
        &client,
        &mesh,
        &stack(),
        queries(10, inspect::DEFAULT_QUERY),
        &|_, _| {},
        &warn,
    )
    .await
    .unwrap();
    // Said before the load, once per graphql pod and Service.
    let warnings = warnings.into_inner().unwrap();
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    assert!(
        warnings[0].contains("before Service orders-service was created (2026-06-01T00:00:00Z)"),
        "{warnings:?}"
    );
    assert!(v.report.verdict.hints.iter().any(|h| h == &warnings[0]));
    assert!(!v.report.verdict.pass);
    assert_eq!(v.traffic.as_ref().unwrap().failed, 10);
    let hints = v.report.verdict.hints.join("\n");
    assert!(
        hints.contains("started before the orders-service and products-service Services"),
        "{hints}"
    );
    assert!(
        hints.contains("kubectl -n ecommerce rollout restart deployment graphql"),
        "{hints}"
    );
    assert!(inspect::render_text(&v, false).contains("why: graphql calls `undefined/...`"));
}

#[tokio::test]
async fn verify_stops_before_the_load_when_graphql_does_not_serve_its_test_path() {
    let (client, mut mesh) = demo(Routing::Local, true).await;
    mesh.graphql_serves = false;
    let err = inspect::verify_live(
        &client,
        &mesh,
        &stack(),
        queries(10, inspect::DEFAULT_QUERY),
        &|_, _| {},
        &no_warnings,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("GET /v1/test"), "{err}");
    assert!(err.contains("answered HTTP 500"), "{err}");
    assert!(err.contains("kubectl -n ecommerce logs graphql-"), "{err}");
    let log = mesh.log.lock().unwrap().clone();
    assert!(
        !log.iter().any(|l| l.contains("/v1/graphql")),
        "no load after a failed check: {log:?}"
    );
}

#[tokio::test]
async fn verify_falls_back_to_the_graphql_pods_and_fails_the_seeds_routing_naming_the_zone() {
    let (client, mesh) = demo(Routing::Seed, false).await;
    let warnings = Mutex::new(Vec::new());
    let warn = |w: String| warnings.lock().unwrap().push(w);
    let v = inspect::verify_live(
        &client,
        &mesh,
        &stack(),
        queries(50, inspect::DEFAULT_QUERY),
        &|_, _| {},
        &warn,
    )
    .await
    .unwrap();
    let traffic = v.traffic.as_ref().unwrap();
    assert!(
        traffic.target.starts_with("pods graphql-"),
        "{}",
        traffic.target
    );
    assert_eq!(traffic.succeeded, 50);
    assert!(
        warnings.lock().unwrap()[0].contains("does not answer"),
        "{:?}",
        warnings.lock().unwrap()
    );
    assert!(!v.report.verdict.pass);
    let failures = v.report.verdict.failures.join("\n");
    // Products calls go anywhere under the seed's routing: the on-node share fails.
    assert!(failures.contains("products on node"), "{failures}");
    let cost = &v.report.cost;
    assert!(cost.cross_zone_requests > 0);
}

#[tokio::test]
async fn verify_offline_reads_saved_dumps_and_the_verdict_follows_the_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mesh) = demo(Routing::Seed, true).await;
    let graphql: Vec<MeshPod> = mesh.of("graphql").into_iter().cloned().collect();
    for _ in 0..100 {
        mesh.query(&graphql[1], "{ orders { id } products { id } }");
    }
    // graphql[1] runs in us-east-1b, and the seed's rule sends 80% of its orders calls to 1a.
    let path = dir.path().join("b.txt");
    std::fs::write(&path, mesh.clusters(&graphql[1].name)).unwrap();
    let v = inspect::verify_offline(&[("us-east-1b".into(), path)], &stack(), None).unwrap();
    assert_eq!(v.report.totals.orders_total, 100);
    // At most the fifth the rule sends elsewhere can land in 1b.
    let in_zone = v.report.totals.orders_in_zone_pct.unwrap();
    assert!(in_zone <= 20.0, "{in_zone}");
    // The baseline spreads over the zones the dump's endpoints are in.
    assert_eq!(v.report.cost.zones_in_use, 3);
    assert!(
        v.report.cost.measured_per_million.unwrap() > v.report.cost.without_locality_per_million
    );
    assert!(!v.report.verdict.pass);
    assert!(
        v.report
            .verdict
            .failures
            .iter()
            .any(|f| f.contains("us-east-1b")),
        "{:?}",
        v.report.verdict.failures
    );
    // Offline, on-node is not measured: said, not failed.
    assert_eq!(v.report.totals.products_on_node_pct, None);
    assert!(v.report.cost.bytes_per_request_assumed);
    assert_eq!(v.region_seen.as_deref(), Some(REGION));
}

/// `up` never starts graphql before the Services it finds through service-link variables:
/// the apply layer the app stage goes through creates every Service before any Deployment.
#[tokio::test]
async fn the_app_stage_creates_the_services_before_the_deployments() {
    use kube_fake_client::interceptor;
    use meshstack::k8s::apply::{self, StaticResolver};
    use meshstack::render::{self, RenderInputs};
    use meshstack::stages::{app, kubernetes::objects};

    crate::support::k8s::custom_resource!(
        Gateway,
        "networking.istio.io",
        "v1beta1",
        "Gateway",
        "gateways",
        Namespaced
    );
    crate::support::k8s::custom_resource!(
        VirtualService,
        "networking.istio.io",
        "v1beta1",
        "VirtualService",
        "virtualservices",
        Namespaced
    );

    // Every object the apply writes, `Kind name`, in order.
    let created = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let log = created.clone();
    // Server-side apply is a PATCH, which creates what does not exist yet.
    let funcs = interceptor::Funcs::new().patch(move |cx| {
        let kind = cx.patch["kind"].as_str().unwrap_or("").to_string();
        log.lock().unwrap().push(format!("{kind} {}", cx.name));
        Ok(None)
    });
    let client = fake_cluster(
        ClientBuilder::new()
            .with_interceptor_funcs(funcs)
            .with_resource::<Gateway>()
            .with_resource::<VirtualService>(),
    )
    .await;
    let resolver = StaticResolver::builtin()
        .with("networking.istio.io/v1beta1", "Gateway", "gateways", true)
        .with(
            "networking.istio.io/v1beta1",
            "VirtualService",
            "virtualservices",
            true,
        );
    let stack = Stack::embedded_default();
    let inputs = RenderInputs {
        account_id: "123456789012".into(),
        region: REGION.into(),
        partition: "aws".into(),
        zones: ZONES.iter().map(|z| z.to_string()).collect(),
        cluster_endpoint: render::offline_endpoint(&stack),
    };
    let files = render::render(&stack, &inputs).unwrap();
    let objs = objects(&files, &app::MANIFESTS).unwrap();
    apply::apply_all(&client, &resolver, &objs, apply::FIELD_MANAGER)
        .await
        .unwrap();

    let created = created.lock().unwrap().clone();
    let position = |kind: &str, name: &str| {
        created
            .iter()
            .position(|c| c == &format!("{kind} {name}"))
            .unwrap_or_else(|| panic!("{kind} {name} was not created: {created:?}"))
    };
    let graphql = position("Deployment", "graphql");
    for service in ["orders-service", "products-service", "graphql-service"] {
        assert!(position("Service", service) < graphql, "{created:?}");
    }
    let last_service = created
        .iter()
        .rposition(|c| c.starts_with("Service "))
        .unwrap();
    let first_deployment = created
        .iter()
        .position(|c| c.starts_with("Deployment "))
        .unwrap();
    assert!(last_service < first_deployment, "{created:?}");
    // And nothing in the manifests turns service links off.
    for o in &objs {
        assert_ne!(
            o.data["spec"]["template"]["spec"]["enableServiceLinks"],
            serde_json::Value::Bool(false),
            "{:?}",
            o.metadata.name
        );
    }
}

/// `meshstack verify --clusters-dump` through the binary: no credentials, no cluster; exit 0
/// when the thresholds hold, 1 with the reason when they do not, 2 for a bad argument.
#[test]
fn verify_with_saved_dumps_exits_by_the_verdict() {
    use crate::support::{describe, Meshstack};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/locality");
    let dump = |zone: &str, file: &str| format!("{zone}={}", fixtures.join(file).display());
    let ms = Meshstack::new(None);

    // meshstack's failover rule, seen from graphql in af-south-1a: orders stay in the zone.
    let out = ms.run(&[
        "verify",
        "--clusters-dump",
        &dump("af-south-1a", "clusters-graphql-1a-failover.txt"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(text.contains("PASS"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no colour when not a terminal: {text}"
    );

    // The seed's rule, seen from af-south-1b: most orders calls leave the zone.
    let out = ms.run(&[
        "verify",
        "-o",
        "json",
        "--clusters-dump",
        &dump("af-south-1b", "clusters-graphql-1b-seed.txt"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verdict"]["pass"], false);
    let failures = json["verdict"]["failures"].to_string();
    assert!(failures.contains("af-south-1b"), "{failures}");

    for bad in [
        vec!["verify", "--clusters-dump", "no-equals-sign"],
        vec![
            "verify",
            "--clusters-dump",
            "af-south-1a=/nonexistent/dump.txt",
        ],
        vec!["verify", "--requests", "5", "--clusters-dump", "a=b"],
        vec!["verify", "--orders-products", "5", "--clusters-dump", "a=b"],
        vec![
            "verify",
            "--clusters-dump",
            &dump("af-south-1a", "clusters-graphql-1a-failover.txt"),
            "--html",
            "/nonexistent/folder/page.html",
        ],
    ] {
        let out = ms.run(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", describe(&out));
    }
}

/// On a terminal the matrix's in-zone diagonal is coloured; `NO_COLOR` turns that off, and so
/// does a pipe (the test above). The terminal is util-linux's `script`, which runs the binary
/// on a pseudo-terminal.
#[test]
fn verify_colours_the_diagonal_only_on_a_terminal_without_no_color() {
    use crate::support::Meshstack;
    let dump = format!(
        "af-south-1b={}",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/locality/clusters-graphql-1b-seed.txt")
            .display()
    );
    let command = format!(
        "{} verify --clusters-dump {dump}",
        env!("CARGO_BIN_EXE_meshstack")
    );
    // The same clean environment as every binary test, on a terminal.
    let ms = Meshstack::new(None);
    let on_a_terminal = |no_color: Option<&str>| {
        let base = ms.command(&[]);
        let mut cmd = std::process::Command::new("script");
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.current_dir(base.get_current_dir().unwrap());
        cmd.args(["-qec", &command, "/dev/null"])
            .env_remove("NO_COLOR")
            .env("TERM", "xterm");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd
            .output()
            .expect("util-linux `script` runs the binary on a pseudo-terminal");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let coloured = on_a_terminal(None);
    // 1b keeps 10% of its orders calls, below the 80% minimum: its diagonal cell is red.
    assert!(coloured.contains("\x1b[1;31m10.0%\x1b[0m"), "{coloured:?}");
    let plain = on_a_terminal(Some("1"));
    assert!(plain.contains("10.0%"), "{plain:?}");
    assert!(!plain.contains('\x1b'), "{plain:?}");
}
