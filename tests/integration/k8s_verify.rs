//! `meshstack pods` and `meshstack verify` end to end on the in-memory API server: nodes and
//! pods seeded as the scheduler would leave them, and a stand-in for the sidecars behind the
//! `PodHttp` seam (the real one port-forwards to Envoy's admin port).
//!
//! The stand-in mesh plays Istio: a graphql query reaching a graphql pod makes its sidecar
//! call one orders endpoint and one products endpoint, an orders-2 pod then calls products
//! itself, and every sidecar counts per endpoint as Envoy does, serving the counters in
//! Envoy's `/clusters` text format on port 15000. How the mesh picks endpoints is the test's
//! knob: as meshstack's policies make Istio do (same zone, same node), or as the seed's rule
//! did (80% of orders calls to one zone, products anywhere).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use kube_fake_client::ClientBuilder;
use meshstack::config::Stack;
use meshstack::inspect;
use meshstack::k8s::pod_http::{HttpRequest, HttpResponse, PodHttp, PodHttpError};
use meshstack::locality::placement;

use crate::support::k8s::{fake_cluster, placement as seed};

const ORDERS: &str = "outbound|3003||orders-service.ecommerce.svc.cluster.local";
const PRODUCTS: &str = "outbound|3004||products-service.ecommerce.svc.cluster.local";
const REGION: &str = "us-east-1";

/// How the stand-in mesh routes.
#[derive(Clone, Copy, PartialEq)]
enum Routing {
    /// meshstack's policies: orders in the caller's zone, products on the caller's node.
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
    /// caller pod -> (cluster, endpoint ip) -> requests.
    counters: Mutex<BTreeMap<String, Counters>>,
    turn: Mutex<usize>,
    /// Round-robin over products, apart from `turn` so that it does not fall into step.
    products_turn: Mutex<usize>,
    /// Every request the seam received: `pod NAME:PORT METHOD PATH` or `address HOST:PORT ...`.
    log: Mutex<Vec<String>>,
}

impl Mesh {
    fn new(pods: Vec<MeshPod>, routing: Routing, gateway_up: bool) -> Self {
        Mesh {
            pods,
            routing,
            gateway_up,
            counters: Mutex::default(),
            turn: Mutex::new(0),
            products_turn: Mutex::new(0),
            log: Mutex::default(),
        }
    }

    fn next(&self) -> usize {
        let mut t = self.turn.lock().unwrap();
        *t += 1;
        *t
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

    fn products_for(&self, caller: &MeshPod) -> MeshPod {
        let products = self.of("products");
        match self.routing {
            Routing::Local => products
                .into_iter()
                .find(|p| p.node == caller.node)
                .expect("the placement puts products next to every client")
                .clone(),
            Routing::Seed => {
                let mut t = self.products_turn.lock().unwrap();
                *t += 1;
                products[*t % products.len()].clone()
            }
        }
    }

    /// graphql pod `pod` serves one query.
    fn query(&self, pod: &MeshPod) -> HttpResponse {
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
        if target.deployment == "orders-2" {
            let products = self.products_for(&target);
            self.count(&target, PRODUCTS, &products);
        }
        let products = self.products_for(pod);
        self.count(pod, PRODUCTS, &products);
        HttpResponse {
            status: 200,
            body: br#"{"data":{"orders":[{"id":"1"}],"products":[{"id":"7"}]}}"#.to_vec(),
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
            (3002, "POST", "/v1/graphql") if me.deployment == "graphql" => Ok(self.query(me)),
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
        let graphql = self.of("graphql");
        let pod = graphql[self.next() % graphql.len()].clone();
        Ok(self.query(&pod))
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
    let client = fake_cluster(ClientBuilder::new()).await;
    seed_gateway(&client).await;
    for (i, zone) in ZONES.iter().enumerate() {
        seed::node(&client, &format!("node-{i}"), zone).await;
    }
    let specs: Vec<seed::PodSpec> = LAYOUT
        .iter()
        .map(|(d, n, ip)| (*d, *n, *ip, true))
        .collect();
    let names = seed::pods(&client, &specs).await;
    let pods = LAYOUT
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

fn stack() -> Stack {
    Stack::parse("name: verify-test\nregion: us-east-1\n", "test.yaml").unwrap()
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

    // A graphql pod lands on a node without products: marked.
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
}

#[tokio::test]
async fn verify_sends_traffic_through_the_gateway_and_passes_when_traffic_stays_local() {
    let (client, mesh) = demo(Routing::Local, true).await;
    let stack = stack();
    // Traffic from before the run must not count: one query answered earlier by each graphql.
    for p in mesh.of("graphql").into_iter().cloned().collect::<Vec<_>>() {
        mesh.query(&p);
    }
    let progressed = Mutex::new(Vec::new());
    let progress = |done: u64, total: u64| progressed.lock().unwrap().push((done, total));
    let warn = |w: String| panic!("unexpected warning: {w}");
    let v = inspect::verify_live(
        &client,
        &mesh,
        &stack,
        40,
        "{ orders { id } }",
        &progress,
        &warn,
    )
    .await
    .unwrap();

    let traffic = v.traffic.as_ref().unwrap();
    assert_eq!(traffic.target, format!("gateway {GATEWAY}"));
    assert_eq!((traffic.sent, traffic.succeeded), (40, 40));
    assert!(traffic.bytes_per_request.unwrap() > 50);
    assert_eq!(progressed.lock().unwrap().last(), Some(&(40, 40)));
    // Exactly the 40 queries: 40 orders calls from graphql.
    assert_eq!(v.report.totals.orders_total, 40);
    assert_eq!(v.report.totals.orders_in_zone_pct, Some(100.0));
    assert_eq!(v.report.totals.products_on_node_pct, Some(100.0));
    assert!(v.report.verdict.pass, "{:?}", v.report.verdict);
    // The sidecars read: every graphql and orders pod, twice (before and after).
    let log = mesh.log.lock().unwrap().clone();
    let reads = log
        .iter()
        .filter(|l| l.ends_with(":15000 GET /clusters"))
        .count();
    assert_eq!(reads, 2 * 5);
    let text = inspect::render_text(&v);
    assert!(
        text.contains("sent 40 graphql queries to gateway"),
        "{text}"
    );
}

#[tokio::test]
async fn verify_falls_back_to_a_graphql_pod_and_fails_the_seeds_routing_naming_the_zone() {
    let (client, mesh) = demo(Routing::Seed, false).await;
    let warnings = Mutex::new(Vec::new());
    let warn = |w: String| warnings.lock().unwrap().push(w);
    let v = inspect::verify_live(
        &client,
        &mesh,
        &stack(),
        50,
        inspect::DEFAULT_QUERY,
        &|_, _| {},
        &warn,
    )
    .await
    .unwrap();
    let traffic = v.traffic.as_ref().unwrap();
    assert!(
        traffic.target.starts_with("pod graphql-"),
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
    // All the traffic enters one graphql pod, in us-east-1a, the zone the seed's rule favours,
    // so its orders calls mostly stay home; but products calls go anywhere, and the on-node
    // share fails.
    assert!(failures.contains("products"), "{failures}");
    let cost = &v.report.cost;
    assert!(cost.cross_zone_requests > 0);
}

#[tokio::test]
async fn verify_offline_reads_saved_dumps_and_the_verdict_follows_the_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mesh) = demo(Routing::Seed, true).await;
    let graphql: Vec<MeshPod> = mesh.of("graphql").into_iter().cloned().collect();
    for _ in 0..100 {
        mesh.query(&graphql[1]);
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
    ] {
        let out = ms.run(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", describe(&out));
    }
}
