//! `meshstack pods` and `meshstack verify`: looking at the running demo.
//!
//! `pods` reads the cluster's nodes and the app's pods and hands them to
//! [`crate::locality::placement`]. `verify` optionally sends load — graphql queries, and
//! `GET /v1/orders/products` for orders-2's own products calls — through the ingress gateway's
//! load balancer (or straight to the pods when the gateway cannot be reached), after checking
//! that graphql serves `GET /v1/test`; it reads Envoy's `/clusters` counters from the sidecar
//! of every graphql and orders pod before and after, and hands the difference, with how the
//! app answered, to [`crate::locality::report`]. The app's answers matter because graphql
//! answers HTTP 200 even when a call behind it failed (see [`graphql_answer`]), and a call
//! dropped by `internalTrafficPolicy: Local` reaches no endpoint, so the counters alone cannot
//! show it. Saved dumps (`--clusters-dump ZONE=FILE`) go through the same report offline.
//! Both commands can also draw what they found ([`verify_page`], [`pods_page`], through
//! [`crate::locality::page`]).
//!
//! Everything that touches a pod's port goes through [`PodHttp`], so the tests put a stand-in
//! sidecar behind it; the Kubernetes reads go through a real `kube::Client` (the in-memory API
//! server in tests).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};

use crate::config::Stack;
use crate::k8s::apply::{lb_address, Readiness};
use crate::k8s::pod_http::{HttpRequest, HttpResponse, PodHttp, PodHttpError};
use crate::locality::envoy::{self, Endpoint, ParseError};
use crate::locality::page;
use crate::locality::placement::{Placement, PodInfo, PodsReport};
use crate::locality::report::{
    self, CallerDump, ErrorCount, Inputs, Report, RequestCheck, Thresholds,
};
use crate::stages::locality::observe_placement;
use crate::stages::{app, istio, StageError};

/// Envoy's admin port in every Istio sidecar (listening on the pod's loopback only).
pub const ENVOY_ADMIN_PORT: u16 = 15000;
/// graphql's container port.
pub const GRAPHQL_PORT: u16 = 3002;
/// The ingress gateway's HTTP port.
pub const GATEWAY_PORT: u16 = 80;
/// The graphql route, the same on the gateway and on the pod (the VirtualService does not
/// rewrite it).
pub const GRAPHQL_PATH: &str = "/v1/graphql";
/// What `verify --requests` sends unless told otherwise: one query that makes graphql call
/// orders once, products once for the list and once more per order (`Order.product`).
pub const DEFAULT_QUERY: &str =
    "{ orders { id orderFor product { id name } } products { id name } }";
/// graphql's liveness path: answers without calling anything.
pub const GRAPHQL_TEST_PATH: &str = "/v1/test";
/// orders' container port.
pub const ORDERS_PORT: u16 = 3003;
/// orders-2's path that calls products once per order (orders-1 answers 404 there).
pub const ORDERS_PRODUCTS_PATH: &str = "/v1/orders/products";
/// The orders and products Services, as Envoy names their clusters.
pub const ORDERS_HOST: &str = "orders-service.ecommerce.svc.cluster.local";
pub const PRODUCTS_HOST: &str = "products-service.ecommerce.svc.cluster.local";
/// The deployments whose sidecars call orders or products.
const CALLERS: [&str; 3] = ["graphql", "orders-1", "orders-2"];
/// Requests in flight at once while sending traffic, and sidecars read at once.
const CONCURRENCY: usize = 4;

/// Why `verify` could not measure.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Cluster(#[from] StageError),
    #[error("reading Envoy's /clusters from {pod}")]
    Admin {
        pod: String,
        #[source]
        source: PodHttpError,
    },
    #[error("{origin}: {source}")]
    Parse {
        origin: String,
        #[source]
        source: ParseError,
    },
    #[error("{pod}: Envoy's admin endpoint answered HTTP {status}")]
    AdminStatus { pod: String, status: u16 },
    #[error("no graphql or orders pod is running and Ready in namespace `ecommerce`; run `meshstack up` and check `meshstack pods`")]
    NoCallers,
    #[error("cannot send traffic: {0}")]
    Traffic(String),
    #[error("{0}")]
    Input(String),
}

/// The `pods` report of the cluster.
pub async fn pods(client: &kube::Client) -> Result<PodsReport, StageError> {
    Ok(observe_placement(client).await?.report())
}

/// How one kind of load was sent, and how it was answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrafficStats {
    /// Where the requests went: `gateway <address>` or `pods <name>, ...`.
    pub target: String,
    pub sent: u64,
    /// Answered as the app answers when everything behind it worked (see [`graphql_answer`],
    /// [`orders_products_answer`]).
    pub succeeded: u64,
    /// `--orders-products` only: answered 404 by orders-1, which has no such path; neither a
    /// success nor a failure, and no products call behind it.
    #[serde(skip_serializing_if = "is_zero")]
    pub not_found: u64,
    /// No answer, an error status, or an answer with `errors` or missing data.
    pub failed: u64,
    /// The most frequent error messages first.
    pub errors: Vec<ErrorCount>,
    /// Request plus response body bytes of the successful requests, on average.
    pub bytes_per_request: Option<u64>,
    /// How long each answered request took, as the client saw it, in microseconds
    /// (`meshstack demo`'s latency).
    #[serde(skip)]
    pub latencies_us: Vec<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What `verify` measured: the report, and the traffic it sent first (if any).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    /// The graphql queries (`--requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficStats>,
    /// `GET /v1/orders/products` (`--orders-products`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orders_products: Option<TrafficStats>,
    #[serde(flatten)]
    pub report: Report,
    /// Zones, nodes and pods when measured live (for the page; `meshstack pods` prints them).
    #[serde(skip)]
    pub pods: Option<PodsReport>,
    /// The region the counters' endpoints report, when the stack does not say.
    #[serde(skip)]
    pub region_seen: Option<String>,
    /// The counters the report was made from, one dump per caller (deltas over the load when
    /// there was one): what `demo --save-dumps` writes.
    #[serde(skip)]
    pub dumps: Vec<CallerDump>,
}

/// What `verify` sends before reading the counters a second time.
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    /// graphql queries to `POST /v1/graphql`.
    pub requests: u64,
    pub query: &'a str,
    /// `GET /v1/orders/products` requests (orders-2's products calls).
    pub orders_products: u64,
}

/// `verify` against the cluster: optionally send load, then read every caller sidecar's
/// counters. With load, only what changed while it ran is counted, and a request the app
/// answered with an error fails the verdict (beyond `locality.verify.failed_requests_max`).
pub async fn verify_live(
    client: &kube::Client,
    http: &dyn PodHttp,
    stack: &Stack,
    load: Load<'_>,
    progress: &(dyn Fn(u64, u64) + Sync),
    warn: &(dyn Fn(String) + Sync),
) -> Result<Verification, VerifyError> {
    let placement = observe_placement(client).await?;
    let callers = callers(&placement);
    if callers.is_empty() {
        return Err(VerifyError::NoCallers);
    }
    let mut traffic = None;
    let mut orders_products = None;
    let mut link_problems = Vec::new();
    let dumps = if load.requests == 0 && load.orders_products == 0 {
        read_dumps(http, &callers).await?
    } else {
        let graphql = ready_pods(&placement, "graphql");
        if load.requests > 0 {
            check_graphql_serves(http, &graphql).await?;
            link_problems = read_service_link_problems(client).await;
            for p in &link_problems {
                warn(p.clone());
            }
        }
        let before = read_dumps(http, &callers).await?;
        let gateway = gateway_address(client).await;
        let total = load.requests + load.orders_products;
        let done = AtomicU64::new(0);
        let tick = || progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
        if load.requests > 0 {
            if graphql.is_empty() {
                return Err(VerifyError::Traffic(
                    "no graphql pod is Ready to take the requests".into(),
                ));
            }
            let strict = load.query.trim() == DEFAULT_QUERY;
            let body = serde_json::json!({ "query": load.query }).to_string();
            let classify = |r: &HttpResponse| graphql_answer(r.status, &r.body, strict);
            let sent = send(
                http,
                &Send {
                    what: "graphql queries",
                    request: HttpRequest::post(GRAPHQL_PATH, "application/json", body.as_bytes()),
                    gateway: gateway.as_deref(),
                    pods: &graphql,
                    port: GRAPHQL_PORT,
                    n: load.requests,
                    classify: &classify,
                },
                &tick,
                warn,
            )
            .await?;
            traffic = Some(sent);
        }
        if load.orders_products > 0 {
            let orders2 = ready_pods(&placement, "orders-2");
            if orders2.is_empty() && gateway.is_none() {
                return Err(VerifyError::Traffic(
                    "--orders-products: no orders-2 pod is Ready and the ingress gateway has no \
                     address"
                        .into(),
                ));
            }
            let classify = |r: &HttpResponse| orders_products_answer(r.status, &r.body);
            let sent = send(
                http,
                &Send {
                    what: "orders/products requests",
                    request: HttpRequest::get(ORDERS_PRODUCTS_PATH),
                    gateway: gateway.as_deref(),
                    pods: &orders2,
                    port: ORDERS_PORT,
                    n: load.orders_products,
                    classify: &classify,
                },
                &tick,
                warn,
            )
            .await?;
            if sent.succeeded == 0 && sent.failed == 0 {
                warn(format!(
                    "none of the {} orders/products requests reached orders-2 (orders-1 answered \
                     404 to all of them); orders-2's products calls are not measured",
                    sent.sent
                ));
            }
            orders_products = Some(sent);
        }
        let after = read_dumps(http, &callers).await?;
        difference(before, after)
    };
    let mut check = request_check(traffic.as_ref(), orders_products.as_ref());
    // Requests failed and graphql may lack its service links: likely why.
    if let Some(c) = check.as_mut().filter(|c| c.failed > 0) {
        c.hints.extend(link_problems);
    }
    let node_of_ip = placement.node_of_ip();
    let zones = placement.zones_in_use();
    let bytes = traffic.as_ref().and_then(|t| t.bytes_per_request);
    let report = report::analyze(&Inputs {
        callers: &dumps,
        orders_host: ORDERS_HOST,
        products_host: PRODUCTS_HOST,
        node_of_ip: Some(&node_of_ip),
        zones: &zones,
        bytes_per_request: bytes,
        requests: check.as_ref(),
        thresholds: thresholds(stack),
    });
    Ok(Verification {
        traffic,
        orders_products,
        report,
        pods: Some(placement.report()),
        region_seen: region_seen(&dumps),
        dumps,
    })
}

/// Every Ready caller sidecar's `/clusters` as it is now, with the placement it was read in
/// (`meshstack demo` waits on them for a policy change to arrive).
pub async fn read_sidecars(
    client: &kube::Client,
    http: &dyn PodHttp,
) -> Result<(Placement, Vec<CallerDump>), VerifyError> {
    let placement = observe_placement(client).await?;
    let callers = callers(&placement);
    if callers.is_empty() {
        return Err(VerifyError::NoCallers);
    }
    let dumps = read_dumps(http, &callers).await?;
    Ok((placement, dumps))
}

/// The first region an endpoint in the counters names.
fn region_seen(dumps: &[CallerDump]) -> Option<String> {
    dumps
        .iter()
        .flat_map(|d| &d.endpoints)
        .find_map(|e| e.region.clone().filter(|r| !r.is_empty()))
}

/// The verdict's view of both loads: every request sent, every failure, and what the
/// failures' messages mean.
fn request_check(
    traffic: Option<&TrafficStats>,
    orders_products: Option<&TrafficStats>,
) -> Option<RequestCheck> {
    if traffic.is_none() && orders_products.is_none() {
        return None;
    }
    let mut check = RequestCheck::default();
    for t in traffic.into_iter().chain(orders_products) {
        check.merge(&RequestCheck {
            sent: t.sent,
            failed: t.failed,
            errors: t.errors.clone(),
            hints: Vec::new(),
        });
    }
    check.finish();
    let messages: Vec<&str> = check.errors.iter().map(|e| e.message.as_str()).collect();
    check.hints = hints(&messages);
    Some(check)
}

/// `verify --clusters-dump ZONE=FILE ...`: the same report from saved `/clusters` dumps, one
/// caller per file. Without pods there is no IP -> node map: products on-node is not measured.
pub fn verify_offline(
    dumps: &[(String, PathBuf)],
    stack: &Stack,
    bytes_per_request: Option<u64>,
) -> Result<Verification, VerifyError> {
    let mut callers = Vec::new();
    for (zone, path) in dumps {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| VerifyError::Input(format!("cannot read {origin}: {e}")))?;
        let endpoints = envoy::parse_clusters(&text).map_err(|source| VerifyError::Parse {
            origin: origin.clone(),
            source,
        })?;
        callers.push(CallerDump {
            pod: origin,
            zone: zone.clone(),
            node: None,
            endpoints,
        });
    }
    let report = report::analyze(&Inputs {
        callers: &callers,
        orders_host: ORDERS_HOST,
        products_host: PRODUCTS_HOST,
        node_of_ip: None,
        // The zones the dumps' endpoints are in: a few callers' dumps may not cover every
        // zone the app runs in.
        zones: &[],
        bytes_per_request,
        requests: None,
        thresholds: thresholds(stack),
    });
    Ok(Verification {
        traffic: None,
        orders_products: None,
        report,
        pods: None,
        region_seen: region_seen(&callers),
        dumps: callers,
    })
}

/// `ZONE=FILE`, as `--clusters-dump` takes it.
pub fn parse_dump_arg(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((zone, file)) if !zone.is_empty() && !file.is_empty() => {
            Ok((zone.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "`{arg}` is not ZONE=FILE; save a sidecar's counters with `kubectl exec POD -c \
             istio-proxy -- curl -s localhost:15000/clusters > FILE` and pass the caller's \
             zone, like us-east-1a=FILE"
        )),
    }
}

fn thresholds(stack: &Stack) -> Thresholds {
    Thresholds {
        orders_in_zone_min: stack.locality.verify.orders_in_zone_min.get(),
        products_on_node_min: stack.locality.verify.products_on_node_min.get(),
        failed_requests_max: stack.locality.verify.failed_requests_max.get(),
    }
}

/// The scheduled, Ready pods whose sidecars call orders or products, with zone and node.
fn callers(placement: &Placement) -> Vec<(&PodInfo, String, String)> {
    let zone_of = |node: &str| {
        placement
            .nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| n.zone.clone())
            .unwrap_or_default()
    };
    let mut callers: Vec<_> = placement
        .pods
        .iter()
        .filter(|p| p.ready)
        .filter(|p| {
            p.deployment
                .as_deref()
                .is_some_and(|d| CALLERS.contains(&d))
        })
        .filter_map(|p| {
            let node = p.node.clone()?;
            Some((p, zone_of(&node), node))
        })
        .collect();
    callers.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    callers
}

/// The Services graphql finds through Kubernetes' service-link variables
/// (`ORDERS_SERVICE_PORT`, `PRODUCTS_SERVICE_PORT`).
const LINKED_SERVICES: [&str; 2] = ["orders-service", "products-service"];

/// Why graphql pods may lack, or hold stale, service-link variables: the kubelet sets them
/// when a container starts, from the Services that exist then, so a graphql container that
/// started before one of [`LINKED_SERVICES`] was created (or re-created, with a new cluster
/// IP) calls `undefined/...` or an old address; and a pod with `enableServiceLinks: false`
/// gets none. One sentence per problem, with the fix.
pub fn service_link_problems(pods: &[Pod], services: &[Service]) -> Vec<String> {
    let mut out = Vec::new();
    let graphql = pods.iter().filter(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app"))
            .is_some_and(|a| a == "graphql")
            && p.metadata.deletion_timestamp.is_none()
    });
    for pod in graphql {
        let name = pod.metadata.name.as_deref().unwrap_or("graphql");
        let restart = format!(
            "restart it: `kubectl -n {} rollout restart deployment graphql`",
            app::NAMESPACE
        );
        if pod.spec.as_ref().and_then(|s| s.enable_service_links) == Some(false) {
            out.push(format!(
                "graphql pod {name} has enableServiceLinks: false, so it gets no \
                 ORDERS_SERVICE_PORT / PRODUCTS_SERVICE_PORT and calls `undefined/...`; turn \
                 service links back on and {restart}"
            ));
            continue;
        }
        // When graphql's own container (not the sidecar) last started.
        let status = pod.status.as_ref();
        let started = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name != "istio-proxy"))
            .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.clone())
            .or_else(|| status.and_then(|s| s.start_time.clone()));
        let Some(started) = started else { continue };
        for svc in services {
            let (Some(svc_name), Some(created)) = (
                svc.metadata.name.as_deref(),
                svc.metadata.creation_timestamp.as_ref(),
            ) else {
                continue;
            };
            if *created > started {
                out.push(format!(
                    "graphql pod {name} started ({}) before Service {svc_name} was created ({}), \
                     so its service-link variable for it is missing or holds an old address \
                     and its calls fail; {restart}",
                    started.0, created.0
                ));
            }
        }
    }
    out
}

/// [`service_link_problems`] of the cluster; a read that fails finds none (the load will say).
async fn read_service_link_problems(client: &kube::Client) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), app::NAMESPACE);
    let services: Api<Service> = Api::namespaced(client.clone(), app::NAMESPACE);
    let Ok(pods) = pods
        .list(&ListParams::default().labels("app=graphql"))
        .await
    else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for name in LINKED_SERVICES {
        if let Ok(Some(svc)) = services.get_opt(name).await {
            found.push(svc);
        }
    }
    service_link_problems(&pods.items, &found)
}

/// The Ready pods of `deployment`, by name.
fn ready_pods(placement: &Placement, deployment: &str) -> Vec<String> {
    let mut pods: Vec<String> = placement
        .pods
        .iter()
        .filter(|p| p.ready && p.node.is_some() && p.deployment.as_deref() == Some(deployment))
        .map(|p| p.name.clone())
        .collect();
    pods.sort();
    pods
}

/// `GET /v1/test` on each graphql pod: it answers without calling anything, so a failure
/// here means graphql itself does not serve, whatever the mesh does.
async fn check_graphql_serves(http: &dyn PodHttp, pods: &[String]) -> Result<(), VerifyError> {
    for pod in pods {
        let answer = http
            .pod(
                app::NAMESPACE,
                pod,
                GRAPHQL_PORT,
                &HttpRequest::get(GRAPHQL_TEST_PATH),
            )
            .await;
        let why = match answer {
            Ok(r) if (200..300).contains(&r.status) => continue,
            Ok(r) => format!("it answered HTTP {}", r.status),
            Err(e) => error_chain(&e),
        };
        return Err(VerifyError::Traffic(format!(
            "graphql pod {pod} does not serve: GET {GRAPHQL_TEST_PATH} on port {GRAPHQL_PORT}, \
             which calls nothing else, failed ({why}); look at `kubectl -n {ns} logs {pod}` and \
             `kubectl -n {ns} describe pod {pod}`, then run verify again",
            ns = app::NAMESPACE
        )));
    }
    Ok(())
}

/// Every caller sidecar's `/clusters`, parsed, `CONCURRENCY` at a time.
async fn read_dumps(
    http: &dyn PodHttp,
    callers: &[(&PodInfo, String, String)],
) -> Result<Vec<CallerDump>, VerifyError> {
    let request = HttpRequest {
        method: "GET",
        path: "/clusters",
        content_type: None,
        body: &[],
    };
    stream::iter(callers.iter().map(|(pod, zone, node)| {
        let request = &request;
        async move {
            let response = http
                .pod(app::NAMESPACE, &pod.name, ENVOY_ADMIN_PORT, request)
                .await
                .map_err(|source| VerifyError::Admin {
                    pod: pod.name.clone(),
                    source,
                })?;
            if response.status != 200 {
                return Err(VerifyError::AdminStatus {
                    pod: pod.name.clone(),
                    status: response.status,
                });
            }
            let text = String::from_utf8_lossy(&response.body);
            let endpoints = envoy::parse_clusters(&text).map_err(|source| VerifyError::Parse {
                origin: format!("{} /clusters", pod.name),
                source,
            })?;
            Ok(CallerDump {
                pod: pod.name.clone(),
                zone: zone.clone(),
                node: Some(node.clone()),
                endpoints,
            })
        }
    }))
    .buffered(CONCURRENCY)
    .try_collect()
    .await
}

/// `after` minus `before`, caller by caller (a caller missing before counts from zero).
fn difference(before: Vec<CallerDump>, after: Vec<CallerDump>) -> Vec<CallerDump> {
    after
        .into_iter()
        .map(|mut dump| {
            let earlier: &[Endpoint] = before
                .iter()
                .find(|b| b.pod == dump.pod)
                .map_or(&[], |b| b.endpoints.as_slice());
            dump.endpoints = report::delta(earlier, &dump.endpoints);
            dump
        })
        .collect()
}

/// The ingress gateway's load balancer address, if it has one.
async fn gateway_address(client: &kube::Client) -> Option<String> {
    let api: Api<Service> = Api::namespaced(client.clone(), istio::NAMESPACE);
    let svc = api.get_opt(istio::GATEWAY).await.ok()??;
    match lb_address(&svc) {
        Readiness::Ready(address) => Some(address),
        _ => None,
    }
}

/// One load to send: `n` times `request`, through the gateway when it answers, else round
/// robin straight to `port` of `pods`.
struct Send<'a> {
    /// What the requests are, for messages: `graphql queries`.
    what: &'a str,
    request: HttpRequest<'a>,
    gateway: Option<&'a str>,
    pods: &'a [String],
    port: u16,
    n: u64,
    classify: &'a (dyn Fn(&HttpResponse) -> Answer + Sync),
}

/// How one answer counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ok,
    /// Neither a success nor a failure (orders-1's 404 on `/v1/orders/products`).
    NotFound,
    /// Failed, with the message to report.
    Failed(String),
}

/// Sends `s.n` requests (through the gateway at `s.gateway`, or, when it has no address or its
/// first request cannot connect, to the pods) and classifies each answer.
async fn send(
    http: &dyn PodHttp,
    s: &Send<'_>,
    tick: &(dyn Fn() + Sync),
    warn: &(dyn Fn(String) + Sync),
) -> Result<TrafficStats, VerifyError> {
    #[derive(Default)]
    struct Tally {
        check: RequestCheck,
        ok: u64,
        not_found: u64,
        answered: u64,
        bytes: u64,
        last_error: Option<String>,
        latencies_us: Vec<u64>,
    }
    let tally = Mutex::new(Tally::default());
    let record = |(result, took): (Result<HttpResponse, PodHttpError>, Duration)| {
        let mut t = tally.lock().expect("not poisoned");
        t.check.sent += 1;
        match result {
            Ok(response) => {
                t.answered += 1;
                t.latencies_us
                    .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
                match (s.classify)(&response) {
                    Answer::Ok => {
                        t.ok += 1;
                        t.bytes += (s.request.body.len() + response.body.len()) as u64;
                    }
                    Answer::NotFound => t.not_found += 1,
                    Answer::Failed(message) => t.check.fail(&message),
                }
            }
            Err(e) => {
                let message = error_chain(&e);
                t.check.fail(&message);
                t.last_error = Some(message);
            }
        }
        drop(t);
        tick();
    };
    // The first request tells whether the gateway answers; it counts as one of the `n`.
    let mut via_gateway = false;
    if let Some(address) = s.gateway {
        let start = Instant::now();
        match http.address(address, GATEWAY_PORT, &s.request).await {
            Ok(response) => {
                record((Ok(response), start.elapsed()));
                via_gateway = true;
            }
            Err(e) if s.pods.is_empty() => {
                return Err(VerifyError::Traffic(format!(
                    "the ingress gateway {address} does not answer ({}) and no pod can take \
                     the {} instead",
                    error_chain(&e),
                    s.what
                )))
            }
            Err(e) => warn(format!(
                "the ingress gateway {address} does not answer ({}); sending the {} straight \
                 to {} instead",
                error_chain(&e),
                s.what,
                s.pods.join(", ")
            )),
        }
    }
    let target = match (via_gateway, s.gateway) {
        (true, Some(address)) => format!("gateway {address}"),
        _ if s.pods.len() == 1 => format!("pod {}", s.pods[0]),
        _ => format!("pods {}", s.pods.join(", ")),
    };
    let remaining = s.n - tally.lock().expect("not poisoned").check.sent;
    stream::iter(0..remaining)
        .map(|i| async move {
            let start = Instant::now();
            let result = match (via_gateway, s.gateway) {
                (true, Some(address)) => http.address(address, GATEWAY_PORT, &s.request).await,
                _ => {
                    let pod = &s.pods[i as usize % s.pods.len()];
                    http.pod(app::NAMESPACE, pod, s.port, &s.request).await
                }
            };
            (result, start.elapsed())
        })
        .buffer_unordered(CONCURRENCY)
        .for_each(|result| {
            record(result);
            async {}
        })
        .await;
    let mut t = tally.into_inner().expect("not poisoned");
    if t.answered == 0 {
        return Err(VerifyError::Traffic(format!(
            "none of the {} {} to {target} got an answer{}; check `meshstack pods`",
            s.n,
            s.what,
            t.last_error
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        )));
    }
    t.check.finish();
    Ok(TrafficStats {
        target,
        sent: t.check.sent,
        succeeded: t.ok,
        not_found: t.not_found,
        failed: t.check.failed,
        errors: t.check.errors,
        bytes_per_request: (t.ok > 0).then(|| t.bytes / t.ok),
        latencies_us: t.latencies_us,
    })
}

/// An error and its causes in one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// How a graphql answer counts.
///
/// graphql (express-graphql) answers HTTP 200 even when a call behind it failed, with an
/// `errors` array and `null` where the data would be, so the status alone says little. Any
/// answer with `errors` failed; with `strict` (the default query), so did one whose
/// `data.orders` or `data.products` is missing or empty or where an order's `product` is
/// null. Otherwise a 2xx answer succeeded.
pub fn graphql_answer(status: u16, body: &[u8], strict: bool) -> Answer {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let first_error = json
        .as_ref()
        .and_then(|j| j.get("errors"))
        .and_then(|e| e.as_array())
        .and_then(|errors| errors.first())
        .map(graphql_error_text);
    if !(200..300).contains(&status) {
        let detail = first_error.unwrap_or_else(|| snippet(body));
        return Answer::Failed(format!("HTTP {status}: {detail}"));
    }
    if let Some(error) = first_error {
        return Answer::Failed(error);
    }
    if !strict {
        return Answer::Ok;
    }
    let Some(data) = json.as_ref().and_then(|j| j.get("data")) else {
        return Answer::Failed(format!("no `data` in the answer: {}", snippet(body)));
    };
    for list in ["orders", "products"] {
        match data.get(list).and_then(|v| v.as_array()) {
            Some(items) if !items.is_empty() => {}
            Some(_) => return Answer::Failed(format!("`data.{list}` is empty")),
            None => return Answer::Failed(format!("`data.{list}` is missing or null")),
        }
    }
    let orders = data["orders"].as_array().map_or(&[][..], Vec::as_slice);
    if let Some(i) = orders
        .iter()
        .position(|o| o.get("product").is_none_or(|p| p.is_null()))
    {
        return Answer::Failed(format!("`data.orders[{i}].product` is null"));
    }
    Answer::Ok
}

/// How an answer to `GET /v1/orders/products` counts: 200 from orders-2 succeeded, 404 is
/// orders-1 (which has only `/v1/orders`), anything else failed (orders-2 answers 503 when
/// one of its products calls failed).
pub fn orders_products_answer(status: u16, body: &[u8]) -> Answer {
    match status {
        200..=299 => Answer::Ok,
        404 => Answer::NotFound,
        _ => Answer::Failed(format!("HTTP {status}: {}", snippet(body))),
    }
}

/// `message (at a.0.b)` from one entry of graphql's `errors`.
fn graphql_error_text(e: &serde_json::Value) -> String {
    let message = e
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or("an error without a message");
    let path: Vec<String> = e
        .get("path")
        .and_then(|p| p.as_array())
        .map(|p| {
            p.iter()
                .map(|s| match s {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{message} (at {})", path.join("."))
    }
}

/// The start of a body, on one line, for a message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &one_line[..i]),
        None if one_line.is_empty() => "(empty body)".into(),
        None => one_line,
    }
}

/// What recognised error messages mean, and how to fix it.
pub fn hints(messages: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let loopback_80 = |m: &str| {
        m.match_indices("127.0.0.1:80").any(|(i, found)| {
            !m[i + found.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
    };
    if messages
        .iter()
        .any(|m| m.contains("undefined/") || loopback_80(m))
    {
        out.push(format!(
            "graphql calls `undefined/...` (which ends up at 127.0.0.1:80): its pod started \
             before the orders-service and products-service Services existed, so Kubernetes \
             gave it no ORDERS_SERVICE_PORT / PRODUCTS_SERVICE_PORT variables (graphql finds \
             the services only through them). Restart it: `kubectl -n {ns} rollout restart \
             deployment graphql`. `meshstack up` applies the Services before the Deployments, \
             so this comes from Services deleted and re-created by hand, or from pods started \
             by other means",
            ns = app::NAMESPACE
        ));
    }
    let products_refused = messages.iter().any(|m| {
        let about_products = m.contains("product") || m.contains(":3004");
        let refused = [
            "ECONNREFUSED",
            "ECONNRESET",
            "no healthy upstream",
            "HTTP 503",
        ]
        .iter()
        .any(|w| m.contains(w));
        about_products && refused
    });
    if products_refused {
        out.push(
            "calls to products failed: with internalTrafficPolicy: Local on products-service, \
             a call from a node without a Ready products pod is dropped (graphql then answers \
             HTTP 200 with `errors`, orders-2 answers 503); `meshstack pods` marks such nodes \
             with !"
                .to_string(),
        );
    }
    out
}

/// How long a sidecar read or a test request may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// One line per load `verify` sent, as the text output and the page say it.
pub fn load_lines(v: &Verification) -> Vec<String> {
    let loads = [
        (&v.traffic, "graphql queries"),
        (&v.orders_products, "GET /v1/orders/products requests"),
    ];
    loads
        .iter()
        .filter_map(|(t, what)| {
            let t = t.as_ref()?;
            let mut line = format!(
                "sent {} {what} to {}: {} succeeded, {} failed",
                t.sent, t.target, t.succeeded, t.failed
            );
            if t.not_found > 0 {
                let _ = write!(
                    line,
                    ", {} answered 404 by orders-1 (it has no such path; not counted)",
                    t.not_found
                );
            }
            if let Some(b) = t.bytes_per_request {
                let _ = write!(line, "; {b} bytes each on average");
            }
            Some(line)
        })
        .collect()
}

/// The report as a person reads it: the load sent (if any) with its errors, then the report;
/// with `color`, the zone matrices' in-zone diagonal is highlighted.
pub fn render_text(v: &Verification, color: bool) -> String {
    let mut out = String::new();
    let lines = load_lines(v);
    let loads = v.traffic.iter().chain(&v.orders_products);
    for (line, t) in lines.iter().zip(loads) {
        let _ = writeln!(out, "{line}");
        for e in &t.errors {
            let _ = writeln!(out, "  {}x {}", e.count, e.message);
        }
    }
    if !lines.is_empty() {
        out.push('\n');
    }
    out.push_str(&report::render_text_styled(&v.report, color));
    out
}

/// What the page needs besides the measurement.
#[derive(Debug, Clone, Copy)]
pub struct PageMeta<'a> {
    pub stack: &'a str,
    pub region: Option<&'a str>,
    pub measured_at: &'a str,
}

/// What a verification's page cannot show, one sentence each.
fn page_missing(v: &Verification) -> Vec<String> {
    let mut missing = Vec::new();
    if v.pods.is_none() {
        missing.push(
            "nodes and pods: saved /clusters dumps carry no pod-to-node map, so this page shows \
             the zones and the traffic only"
                .to_string(),
        );
        missing.push(
            "products calls per node: not measured without that map (the zones' products \
             calls are shown)"
                .to_string(),
        );
    }
    if v.traffic.is_none() && v.orders_products.is_none() {
        missing.push(
            "request outcomes: no requests were sent, so the counters are everything the \
             sidecars counted since they started"
                .to_string(),
        );
    }
    missing
}

/// `verify --html`: the page for a verification.
pub fn verify_page(v: &Verification, meta: PageMeta<'_>) -> String {
    let missing = page_missing(v);
    let region = meta.region.or(v.region_seen.as_deref());
    page::render(&page::Page {
        stack: meta.stack,
        region,
        measured_at: meta.measured_at,
        version: env!("CARGO_PKG_VERSION"),
        pods: v.pods.as_ref(),
        report: Some(&v.report),
        load: &load_lines(v),
        missing: &missing,
    })
}

/// `demo --html`: both phases' pages side by side, under the difference table.
pub fn demo_page(
    before: &Verification,
    after: &Verification,
    c: &crate::locality::demo::Comparison,
    meta: PageMeta<'_>,
) -> String {
    let region = meta.region.or(after.region_seen.as_deref());
    // Saved dumps hold the counters of their phase (deltas, when `demo --save-dumps` wrote
    // them), not "everything since the sidecars started" as a bare `verify` read would.
    let missing = |v: &Verification| -> Vec<String> {
        page_missing(v)
            .into_iter()
            .map(|m| match m.starts_with("request outcomes") {
                true => "request outcomes and latency: saved dumps hold only the sidecars' \
                         counters"
                    .to_string(),
                false => m,
            })
            .collect()
    };
    let (missing_b, missing_a) = (missing(before), missing(after));
    let (load_b, load_a) = (load_lines(before), load_lines(after));
    fn page_of<'a>(
        v: &'a Verification,
        meta: &PageMeta<'a>,
        region: Option<&'a str>,
        load: &'a [String],
        missing: &'a [String],
    ) -> page::Page<'a> {
        page::Page {
            stack: meta.stack,
            region,
            measured_at: meta.measured_at,
            version: env!("CARGO_PKG_VERSION"),
            pods: v.pods.as_ref(),
            report: Some(&v.report),
            load,
            missing,
        }
    }
    let text = crate::locality::demo::render_text(c);
    // The table's notes: the lines after the table (price, profile), the verdict aside (the
    // page shows it above the table).
    let notes: Vec<String> = text
        .lines()
        .skip_while(|l| !l.is_empty())
        .filter(|l| !l.is_empty() && !l.starts_with("after: ") && !l.starts_with("  "))
        .map(str::to_string)
        .collect();
    page::render_pair(
        meta.stack,
        &page_of(before, &meta, region, &load_b, &missing_b),
        &page_of(after, &meta, region, &load_a, &missing_a),
        &crate::locality::demo::rows(c),
        &notes,
        c.pass,
    )
}

/// `pods --html`: the placement alone.
pub fn pods_page(r: &PodsReport, meta: PageMeta<'_>) -> String {
    page::render(&page::Page {
        stack: meta.stack,
        region: meta.region,
        measured_at: meta.measured_at,
        version: env!("CARGO_PKG_VERSION"),
        pods: Some(r),
        report: None,
        load: &[],
        missing: &[],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphql_answers_count_by_what_they_hold_not_by_their_status() {
        let ok = br#"{"data":{"orders":[{"id":"1","orderFor":"x","product":{"id":"1a","name":"n"}}],"products":[{"id":"1a","name":"n"}]}}"#;
        let dropped = br#"{"errors":[{"message":"connect ECONNREFUSED 10.0.0.9:3004","locations":[{"line":1,"column":3}],"path":["products"]}],"data":{"orders":[{"id":"1"}],"products":null}}"#;
        let per_order = br#"{"errors":[{"message":"Request failed with status code 503","path":["orders",1,"product"]}],"data":{"orders":[{"id":"1","product":{"id":"1a"}},{"id":"2","product":null}],"products":[{"id":"1a"}]}}"#;
        let null_product = br#"{"data":{"orders":[{"id":"1","product":{"id":"1a"}},{"id":"2","product":null}],"products":[{"id":"1a"}]}}"#;
        let no_product_field = br#"{"data":{"orders":[{"id":"1"}],"products":[{"id":"1a"}]}}"#;
        let empty_orders = br#"{"data":{"orders":[],"products":[{"id":"1a"}]}}"#;
        let no_products = br#"{"data":{"orders":[{"id":"1","product":{"id":"1a"}}]}}"#;
        let bad_query = br#"{"errors":[{"message":"Cannot query field nope on type Query."}]}"#;
        let failed = |m: &str| Answer::Failed(m.to_string());
        // (status, body, strict, answer)
        let cases: Vec<(u16, &[u8], bool, Answer)> = vec![
            (200, ok, true, Answer::Ok),
            (200, ok, false, Answer::Ok),
            (
                200,
                dropped,
                true,
                failed("connect ECONNREFUSED 10.0.0.9:3004 (at products)"),
            ),
            (
                200,
                dropped,
                false,
                failed("connect ECONNREFUSED 10.0.0.9:3004 (at products)"),
            ),
            (
                200,
                per_order,
                true,
                failed("Request failed with status code 503 (at orders.1.product)"),
            ),
            (
                200,
                null_product,
                true,
                failed("`data.orders[1].product` is null"),
            ),
            (200, null_product, false, Answer::Ok),
            (
                200,
                no_product_field,
                true,
                failed("`data.orders[0].product` is null"),
            ),
            (200, empty_orders, true, failed("`data.orders` is empty")),
            (
                200,
                no_products,
                true,
                failed("`data.products` is missing or null"),
            ),
            (
                200,
                b"<html>oops</html>",
                true,
                failed("no `data` in the answer: <html>oops</html>"),
            ),
            (200, b"<html>oops</html>", false, Answer::Ok),
            (
                400,
                bad_query,
                false,
                failed("HTTP 400: Cannot query field nope on type Query."),
            ),
            (
                503,
                b"no healthy upstream",
                false,
                failed("HTTP 503: no healthy upstream"),
            ),
            (502, b"", true, failed("HTTP 502: (empty body)")),
        ];
        for (i, (status, body, strict, want)) in cases.into_iter().enumerate() {
            assert_eq!(graphql_answer(status, body, strict), want, "case {i}");
        }
        assert_eq!(orders_products_answer(200, b"[]"), Answer::Ok);
        assert_eq!(orders_products_answer(404, b"Cannot GET"), Answer::NotFound);
        assert_eq!(
            orders_products_answer(503, b"{\"error\":\"x\"}"),
            failed("HTTP 503: {\"error\":\"x\"}")
        );
        let long = "x".repeat(300);
        assert_eq!(snippet(long.as_bytes()).len(), 123);
    }

    #[test]
    fn recognised_errors_come_with_what_they_mean() {
        let links = |m: &str| {
            hints(&[m])
                .iter()
                .any(|h| h.contains("rollout restart deployment graphql"))
        };
        assert!(links(
            "getaddrinfo ENOTFOUND undefined (at orders) undefined/v1/orders"
        ));
        assert!(links("connect ECONNREFUSED 127.0.0.1:80 (at orders)"));
        assert!(!links("connect ECONNREFUSED 127.0.0.1:8080 (at orders)"));
        assert!(!links("connect ECONNREFUSED 10.0.0.9:3004 (at products)"));
        let dropped = |m: &str| {
            hints(&[m])
                .iter()
                .any(|h| h.contains("internalTrafficPolicy: Local"))
        };
        assert!(dropped("connect ECONNREFUSED 10.0.0.9:3004 (at products)"));
        assert!(dropped("Request failed (at orders.0.product) ECONNRESET"));
        assert!(dropped(
            "HTTP 503: {\"error\":\"products: connect ECONNREFUSED\"}"
        ));
        assert!(!dropped("connect ECONNREFUSED 10.0.0.9:3003 (at orders)"));
        assert!(hints(&["`data.orders` is empty"]).is_empty());
    }

    #[test]
    fn graphql_needs_to_start_after_the_services_it_calls() {
        let service = |name: &str, created: &str| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "creationTimestamp": created}
            }))
            .unwrap()
        };
        let pod = |name: &str, app: &str, started: Option<&str>, links: Option<bool>| -> Pod {
            let mut p = serde_json::json!({
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"containers": []},
            });
            if let Some(l) = links {
                p["spec"]["enableServiceLinks"] = serde_json::json!(l);
            }
            if let Some(at) = started {
                // The sidecar started long before; graphql's own container counts.
                p["status"] = serde_json::json!({"containerStatuses": [
                    {"name": "istio-proxy", "ready": true, "restartCount": 0, "image": "", "imageID": "",
                     "state": {"running": {"startedAt": "2020-01-01T00:00:00Z"}}},
                    {"name": "graphql-container", "ready": true, "restartCount": 0, "image": "", "imageID": "",
                     "state": {"running": {"startedAt": at}}}]});
            }
            serde_json::from_value(p).unwrap()
        };
        let services = [
            service("orders-service", "2026-06-01T00:00:00Z"),
            service("products-service", "2026-06-02T00:00:00Z"),
        ];
        // (pods, problems naming)
        let cases: Vec<(Vec<Pod>, Vec<&str>)> = vec![
            (
                vec![pod("g", "graphql", Some("2026-06-03T00:00:00Z"), None)],
                vec![],
            ),
            (
                vec![pod("g", "graphql", Some("2026-06-01T12:00:00Z"), None)],
                vec![
                    "graphql pod g started (2026-06-01T12:00:00Z) before Service products-service",
                ],
            ),
            (
                vec![pod(
                    "g",
                    "graphql",
                    Some("2026-05-01T00:00:00Z"),
                    Some(true),
                )],
                vec![
                    "before Service orders-service",
                    "before Service products-service",
                ],
            ),
            (
                vec![pod(
                    "g",
                    "graphql",
                    Some("2026-06-03T00:00:00Z"),
                    Some(false),
                )],
                vec!["graphql pod g has enableServiceLinks: false"],
            ),
            // Not started yet: nothing to say. Not graphql: not its business.
            (vec![pod("g", "graphql", None, None)], vec![]),
            (
                vec![pod("o", "orders", Some("2026-05-01T00:00:00Z"), None)],
                vec![],
            ),
        ];
        for (i, (pods, want)) in cases.into_iter().enumerate() {
            let got = service_link_problems(&pods, &services);
            assert_eq!(got.len(), want.len(), "case {i}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.contains(w), "case {i}: {g}");
                assert!(g.contains("kubectl -n ecommerce rollout restart deployment graphql"));
            }
        }
    }

    #[test]
    fn dump_arguments() {
        assert_eq!(
            parse_dump_arg("us-east-1a=dumps/a.txt"),
            Ok(("us-east-1a".into(), PathBuf::from("dumps/a.txt")))
        );
        for bad in ["us-east-1a", "=a.txt", "us-east-1a=", ""] {
            let err = parse_dump_arg(bad).unwrap_err();
            assert!(err.contains("ZONE=FILE"), "{bad}: {err}");
        }
    }
}
