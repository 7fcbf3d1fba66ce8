//! A local Kubernetes API server for driving the *binary* the way it talks to EKS: HTTPS on a
//! free localhost port, kube-fake-client's in-memory API behind it (with the path repairs of
//! [`super::k8s`]: Namespaces, cluster-scoped custom resources), plus what the fake does not
//! serve — discovery and `/version` ([`discovery`]), `pods/portforward` over a websocket
//! ([`portforward`]) to stand-in pods ([`pods`]) — and the cluster's own controllers
//! ([`controllers`]: CRDs Established, Deployments Available, a load balancer address,
//! Karpenter's nodes, the Kiali operator, helm's side of the charts).
//!
//! # Pointing the binary at it
//! [`ApiServer::env`] gives `MESHSTACK_KUBE_API=https://127.0.0.1:PORT` and
//! `MESHSTACK_KUBE_CA_FILE` (a CA generated for this server, which signed its certificate for
//! `127.0.0.1`). The cluster must still exist in moto: meshstack signs its EKS token with the
//! cluster's name, and the server accepts only such tokens (`Bearer k8s-aws-v1.<presigned
//! STS GetCallerIdentity URL>`), answering anything else 401. HTTPS, not plain HTTP: meshstack
//! refuses non-https endpoints, as it should for a cluster.
//!
//! # Stopping and restarting
//! [`ApiServer::stop`] closes the listener and cuts every open connection (port-forwards
//! included): the port then refuses connections. [`ApiServer::restart`] listens again on the
//! same port with the same certificate and the **same state**: the store lives in the test
//! process, not in the listener, and the controllers keep running while it is stopped (as a
//! cluster's do while its API endpoint is unreachable). A fresh state is a new `ApiServer`.
//! [`ApiServer::hang`] instead accepts connections and never answers, for client timeouts.
//!
//! # Faults
//! [`Faults`], changeable at any time with [`ApiServer::set_faults`]: a share of requests
//! answered 429 with `Retry-After` or 500, 409 conflicts on chosen writes, added latency, CRDs
//! that become Established only after a delay, a load balancer address that comes late, and a
//! webhook-style rejection of the first N writes of a kind. Shares are drawn from a seeded
//! generator ([`Options::seed`]), so a failing run can be repeated. Port-forwards are exempt
//! from the shares (their upgrade is not retried by any client); latency applies to them too.
//!
//! # Observing
//! [`ApiServer::counts`]: requests by verb (`get`, `list`, `watch`, `create`, `update`,
//! `patch`, `delete`, `discovery`, `portforward`), the writes one by one, and the faults
//! injected. [`ApiServer::store`]: an in-process client on the store for reading objects
//! (not counted, not faulted). [`ApiServer::mesh`]: the stand-in sidecars' counters.

pub mod controllers;
pub mod discovery;
pub mod pods;
pub mod portforward;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube_fake_client::ClientBuilder;
use serde_json::json;

use super::k8s::{custom_resource, fake_cluster_with};

custom_resource!(
    NodePool,
    "karpenter.sh",
    "v1",
    "NodePool",
    "nodepools",
    Cluster
);
custom_resource!(
    EC2NodeClass,
    "karpenter.k8s.aws",
    "v1",
    "EC2NodeClass",
    "ec2nodeclasses",
    Cluster
);
custom_resource!(
    PodMonitor,
    "monitoring.coreos.com",
    "v1",
    "PodMonitor",
    "podmonitors",
    Namespaced
);
custom_resource!(
    ServiceMonitor,
    "monitoring.coreos.com",
    "v1",
    "ServiceMonitor",
    "servicemonitors",
    Namespaced
);
custom_resource!(
    Gateway,
    "networking.istio.io",
    "v1beta1",
    "Gateway",
    "gateways",
    Namespaced
);
custom_resource!(
    VirtualService,
    "networking.istio.io",
    "v1beta1",
    "VirtualService",
    "virtualservices",
    Namespaced
);
custom_resource!(
    DestinationRule,
    "networking.istio.io",
    "v1beta1",
    "DestinationRule",
    "destinationrules",
    Namespaced
);
custom_resource!(Kiali, "kiali.io", "v1alpha1", "Kiali", "kialis", Namespaced);

/// What the server's cluster looks like.
#[derive(Debug, Clone)]
pub struct Options {
    /// The zones Karpenter launches nodes in (one node per zone per NodePool).
    pub zones: Vec<String>,
    /// The recording helm's folder: play the charts it records as installed (see
    /// [`controllers`]). `None`: no charts; the operators run unconditionally.
    pub charts: Option<PathBuf>,
    /// The address LoadBalancer Services get: an IP (`status.loadBalancer.ingress[].ip`) or a
    /// hostname. The default, 127.0.0.1, refuses the gateway's port 80 on any test machine, so
    /// `verify` falls back to a port-forward.
    pub lb_address: String,
    /// (Deployment in `ecommerce`, index into `zones`): where the app's pods are scheduled.
    /// The default is a placement the manifests' rules allow, with an orders pod next to
    /// graphql: graphql, orders-1 and products-1 in the first zone, orders-2 and products-2 in
    /// the second.
    pub placement: Vec<(String, usize)>,
    /// Seeds the draws of the fault shares.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            zones: ["us-east-1a", "us-east-1b", "us-east-1c"]
                .map(String::from)
                .to_vec(),
            charts: None,
            lb_address: "127.0.0.1".into(),
            placement: [
                ("graphql", 0),
                ("orders-1", 0),
                ("products-1", 0),
                ("orders-2", 1),
                ("products-2", 1),
            ]
            .map(|(d, z)| (d.to_string(), z))
            .to_vec(),
            seed: 1,
        }
    }
}

/// 409 Conflict for the next `times` requests of `verb` whose path contains `path_contains`.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub verb: &'static str,
    pub path_contains: String,
    pub times: usize,
}

/// An admission webhook denying the next `times` writes (create, update, patch) of `kind`.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub kind: String,
    pub times: usize,
}

/// Faults to inject (see the module docs). The default injects none.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share (0..=1) of requests answered 429 Too Many Requests.
    pub throttle: f64,
    /// The `Retry-After` (seconds) of a 429.
    pub retry_after_secs: u64,
    /// Share of requests answered 500.
    pub server_errors: f64,
    pub conflicts: Vec<Conflict>,
    pub rejections: Vec<Rejection>,
    /// Added to every request before it is answered.
    pub latency: Duration,
    /// CRD name -> how long after it is stored it becomes Established.
    pub crd_delays: HashMap<String, Duration>,
    /// How long a LoadBalancer Service waits for its address.
    pub lb_delay: Duration,
}

/// What the server has been asked (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// verb -> requests (every request that passed authentication, faulted or not).
    pub by_verb: BTreeMap<String, u64>,
    /// Every write, as `VERB PATH`, in order.
    pub writes: Vec<String>,
    /// status code -> requests the faults answered with it (429, 500, 409, 400 for webhooks).
    pub injected: BTreeMap<u16, u64>,
    /// Requests refused for want of a valid EKS token.
    pub unauthorized: u64,
}

impl Counts {
    pub fn requests(&self) -> u64 {
        self.by_verb.values().sum()
    }

    pub fn verb(&self, verb: &str) -> u64 {
        self.by_verb.get(verb).copied().unwrap_or(0)
    }
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// State shared by the listener, the connections and the controllers.
pub struct Shared {
    pub store: kube::Client,
    pub options: Options,
    faults: Mutex<Faults>,
    counts: Mutex<Counts>,
    rng: Mutex<u64>,
    /// When a controller first saw something it acts on after a delay.
    pub first_seen: Mutex<HashMap<String, Instant>>,
    pub pods: Arc<pods::Pods>,
    /// Upgraded connections (port-forwards), which hyper no longer owns: cut on stop.
    pub upgraded: Mutex<Vec<tokio::task::AbortHandle>>,
    address: String,
    /// Set when the server is dropped: the controllers stop, quietly.
    pub closing: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap()
    }

    /// A uniform draw in [0, 1) from the seeded generator (splitmix64).
    fn draw(&self) -> f64 {
        let mut s = self.rng.lock().unwrap();
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The server; stopped (and its runtime shut down) on drop.
pub struct ApiServer {
    rt: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    port: u16,
    listener: Option<tokio::task::JoinHandle<()>>,
    acceptor: tokio_rustls::TlsAcceptor,
    ca_pem: String,
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl ApiServer {
    /// Start on a free localhost port.
    pub fn start(options: Options) -> ApiServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tls = tls::Tls::generate(dir.path());
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let store = rt.block_on(fake_cluster_with(
            ClientBuilder::new()
                .with_resource::<NodePool>()
                .with_resource::<EC2NodeClass>()
                .with_resource::<PodMonitor>()
                .with_resource::<ServiceMonitor>()
                .with_resource::<Gateway>()
                .with_resource::<VirtualService>()
                .with_resource::<DestinationRule>()
                .with_resource::<Kiali>(),
            &[
                "karpenter.sh/v1/nodepools",
                "karpenter.k8s.aws/v1/ec2nodeclasses",
            ],
        ));
        let shared = Arc::new(Shared {
            store,
            rng: Mutex::new(options.seed),
            options,
            faults: Mutex::default(),
            counts: Mutex::default(),
            first_seen: Mutex::default(),
            pods: Arc::default(),
            upgraded: Mutex::default(),
            address: format!("127.0.0.1:{port}"),
            closing: Default::default(),
        });
        let controllers = shared.clone();
        rt.spawn(async move {
            while !controllers
                .closing
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                controllers::reconcile(&controllers).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let mut server = ApiServer {
            rt: Some(rt),
            shared,
            port,
            listener: None,
            acceptor: tls.acceptor,
            ca_pem: tls.ca_pem,
            ca_file: tls.ca_file,
            _dir: dir,
        };
        server.listen(std_listener);
        server
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the server")
    }

    fn listen(&mut self, std_listener: std::net::TcpListener) {
        std_listener.set_nonblocking(true).unwrap();
        let (shared, acceptor) = (self.shared.clone(), self.acceptor.clone());
        let task = self.rt().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            // Dropped with this task on stop: every connection task is aborted with it.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (shared, acceptor) = (shared.clone(), acceptor.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .with_upgrades()
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        self.listener = Some(task);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The environment that points the binary at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("MESHSTACK_KUBE_API".into(), self.endpoint()),
            (
                "MESHSTACK_KUBE_CA_FILE".into(),
                self.ca_file.display().to_string(),
            ),
        ]
    }

    /// Stop listening and cut every open connection; the state stays (see the module docs).
    pub fn stop(&mut self) {
        if let Some(task) = self.listener.take() {
            task.abort();
            let _ = self.rt().block_on(task);
        }
        for t in self.shared.upgraded.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Listen again on the same port, with the same state.
    pub fn restart(&mut self) {
        assert!(self.listener.is_none(), "restart: the server is running");
        let listener = self.bind_again();
        self.listen(listener);
    }

    /// Stop, then accept connections on the same port and never answer (no TLS handshake,
    /// nothing): an endpoint that black-holes requests, for client timeouts. [`Self::stop`]
    /// then [`Self::restart`] bring the API back.
    pub fn hang(&mut self) {
        self.stop();
        let listener = self.bind_again();
        listener.set_nonblocking(true).unwrap();
        let task = self.rt().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let mut held = Vec::new();
            loop {
                if let Ok((tcp, _)) = listener.accept().await {
                    held.push(tcp);
                }
            }
        });
        self.listener = Some(task);
    }

    fn bind_again(&self) -> std::net::TcpListener {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::net::TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => return l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot listen on port {} again: {e}", self.port),
            }
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults() = faults;
    }

    pub fn counts(&self) -> Counts {
        self.shared.counts.lock().unwrap().clone()
    }

    pub fn reset_counts(&self) {
        *self.shared.counts.lock().unwrap() = Counts::default();
    }

    /// A client on the store itself: reads for assertions, not counted and never faulted.
    pub fn store(&self) -> kube::Client {
        self.shared.store.clone()
    }

    pub fn mesh(&self) -> &pods::Mesh {
        &self.shared.pods.mesh
    }

    /// Run `f` on the server's runtime (from a test's own thread, not from async code).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt().block_on(f)
    }

    /// A `kube::Client` over HTTPS, as the binary connects, with `token` as its bearer token.
    pub fn https_client(&self, token: &str) -> kube::Client {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let token = token.to_string();
        let tokens: meshstack::k8s::client::TokenSource = Arc::new(move || {
            let token = token.clone();
            Box::pin(async move { Ok(token) })
        });
        let _guard = self.rt().enter();
        meshstack::k8s::client::client(&self.endpoint(), &ca, tokens).unwrap()
    }

    /// Every stored object of every kind the stages apply or the charts make, as
    /// `Kind namespace/name` -> the object (JSON), for comparing clusters.
    pub fn objects(&self) -> BTreeMap<String, serde_json::Value> {
        self.block_on(snapshot(&self.shared.store))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(rt) = self.rt.take() {
            // Allowed anywhere, also inside a test's own runtime.
            rt.shutdown_background();
        }
    }
}

/// The kinds [`ApiServer::objects`] lists: (api_version, kind, plural, namespaced).
const SNAPSHOT_KINDS: [(&str, &str, &str, bool); 19] = [
    ("v1", "Namespace", "namespaces", false),
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "Secret", "secrets", true),
    ("v1", "Service", "services", true),
    ("v1", "ServiceAccount", "serviceaccounts", true),
    ("v1", "Node", "nodes", false),
    ("v1", "Pod", "pods", true),
    ("apps/v1", "Deployment", "deployments", true),
    (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
    ("karpenter.sh/v1", "NodePool", "nodepools", false),
    (
        "karpenter.k8s.aws/v1",
        "EC2NodeClass",
        "ec2nodeclasses",
        false,
    ),
    (
        "monitoring.coreos.com/v1",
        "PodMonitor",
        "podmonitors",
        true,
    ),
    (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        "servicemonitors",
        true,
    ),
    ("networking.istio.io/v1beta1", "Gateway", "gateways", true),
    (
        "networking.istio.io/v1beta1",
        "VirtualService",
        "virtualservices",
        true,
    ),
    (
        "networking.istio.io/v1beta1",
        "DestinationRule",
        "destinationrules",
        true,
    ),
    ("kiali.io/v1alpha1", "Kiali", "kialis", true),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true),
];

async fn snapshot(store: &kube::Client) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for (api_version, kind, plural, _) in SNAPSHOT_KINDS {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let ar = kube::api::ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<kube::api::DynamicObject> = Api::all_with(store.clone(), &ar);
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for o in list.items {
            let key = match &o.metadata.namespace {
                Some(ns) => format!(
                    "{kind} {ns}/{}",
                    o.metadata.name.clone().unwrap_or_default()
                ),
                None => format!("{kind} {}", o.metadata.name.clone().unwrap_or_default()),
            };
            out.insert(key, serde_json::to_value(&o).unwrap());
        }
    }
    out
}

/// The verb of a request, as kube-apiserver's audit log names it; `discovery` for the
/// discovery documents and `/version`.
pub fn verb(method: &str, path: &str, query: &str) -> &'static str {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segments.as_slice() {
        ["version"] | ["api"] | ["apis"] | ["api", _] | ["apis", _] | ["apis", _, _] => {
            return "discovery"
        }
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    let named = rest.len() >= 2;
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    match (method, named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "other",
    }
}

/// Whether `authorization` carries an EKS token: `Bearer k8s-aws-v1.` and the base64url of a
/// presigned STS `GetCallerIdentity` URL.
pub fn is_eks_token(authorization: &str) -> bool {
    let Some(token) = authorization.strip_prefix("Bearer k8s-aws-v1.") else {
        return false;
    };
    let Ok(url) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token) else {
        return false;
    };
    let url = String::from_utf8_lossy(&url);
    url.starts_with("https://sts.")
        && url.contains("Action=GetCallerIdentity")
        && url.contains("X-Amz-Signature=")
}

fn status(code: u16, reason: &str, message: &str) -> hyper::Response<Full<Bytes>> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Failure", "message": message, "reason": reason, "code": code});
    hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn json_response(value: serde_json::Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap()
}

/// `/api/v1/namespaces/<ns>/pods/<name>/portforward` -> (ns, name).
fn portforward_target(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (ns, rest) = rest.split_once("/pods/")?;
    let name = rest.strip_suffix("/portforward")?;
    (!ns.contains('/') && !name.contains('/')).then_some((ns, name))
}

async fn handle(
    shared: Arc<Shared>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !is_eks_token(authorization) {
        shared.counts.lock().unwrap().unauthorized += 1;
        return status(401, "Unauthorized", "Unauthorized");
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let forward = portforward_target(&path).map(|(ns, pod)| (ns.to_string(), pod.to_string()));
    let verb = if forward.is_some() {
        "portforward"
    } else {
        verb(&method, &path, &query)
    };
    {
        let mut counts = shared.counts.lock().unwrap();
        *counts.by_verb.entry(verb.to_string()).or_default() += 1;
        if WRITE_VERBS.contains(&verb) {
            counts.writes.push(format!("{method} {path}"));
        }
    }
    let latency = shared.faults().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some((ns, pod)) = forward {
        return portforward::serve(shared, req, &ns, &pod).await;
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(400, "BadRequest", &format!("reading the body: {e}")),
    };
    if let Some(response) = injected(&shared, verb, &path, &body) {
        return response;
    }
    if verb == "discovery" {
        return discover(&shared, &path).await;
    }
    send_to_store(&shared, parts, body).await
}

/// The response a fault dictates for this request, if any (and counts it).
fn injected(
    shared: &Shared,
    verb: &str,
    path: &str,
    body: &[u8],
) -> Option<hyper::Response<Full<Bytes>>> {
    let mut faults = shared.faults();
    let count = |code: u16| {
        *shared
            .counts
            .lock()
            .unwrap()
            .injected
            .entry(code)
            .or_default() += 1;
    };
    if faults.throttle > 0.0 && shared.draw() < faults.throttle {
        count(429);
        let mut r = status(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        );
        r.headers_mut().insert(
            "retry-after",
            faults.retry_after_secs.to_string().parse().unwrap(),
        );
        return Some(r);
    }
    if faults.server_errors > 0.0 && shared.draw() < faults.server_errors {
        count(500);
        return Some(status(
            500,
            "InternalError",
            "an error on the server (\"injected\") has prevented the request from succeeding",
        ));
    }
    if let Some(c) = faults
        .conflicts
        .iter_mut()
        .find(|c| c.times > 0 && c.verb == verb && path.contains(&c.path_contains))
    {
        c.times -= 1;
        count(409);
        return Some(status(409, "Conflict", &format!("Operation cannot be fulfilled on {path}: the object has been modified; please apply your changes to the latest version and try again")));
    }
    if matches!(verb, "create" | "update" | "patch") {
        let kind = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_string))
            .unwrap_or_default();
        if let Some(r) = faults
            .rejections
            .iter_mut()
            .find(|r| r.times > 0 && r.kind == kind)
        {
            r.times -= 1;
            count(400);
            return Some(status(400, "BadRequest", &format!("admission webhook \"validate.test.meshstack.io\" denied the request: {kind} rejected by the test's webhook")));
        }
    }
    None
}

async fn discover(shared: &Shared, path: &str) -> hyper::Response<Full<Bytes>> {
    let crds = Api::<CustomResourceDefinition>::all(shared.store.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let found = match segments.as_slice() {
        ["version"] => Some(discovery::version()),
        ["api"] => Some(discovery::core_versions(&shared.address)),
        ["apis"] => Some(discovery::groups(&crds)),
        ["api", v] => discovery::resources("", v, &crds),
        ["apis", g, v] => discovery::resources(g, v, &crds),
        _ => None,
    };
    match found {
        Some(v) => json_response(v),
        None => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

async fn send_to_store(
    shared: &Shared,
    parts: http::request::Parts,
    body: Bytes,
) -> hyper::Response<Full<Bytes>> {
    let uri: http::Uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap();
    let mut req = http::Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::AUTHORIZATION {
            req = req.header(name, value);
        }
    }
    let req = req.body(kube::client::Body::from(body.to_vec())).unwrap();
    let response = match shared.store.send(req).await {
        Ok(r) => r,
        Err(e) => return status(500, "InternalError", &e.to_string()),
    };
    let (head, body) = response.into_parts();
    let bytes = match body.collect_bytes().await {
        Ok(b) => b,
        Err(e) => return status(500, "InternalError", &e.to_string()),
    };
    let mut out = hyper::Response::builder().status(head.status);
    if let Some(ct) = head.headers.get(http::header::CONTENT_TYPE) {
        out = out.header(http::header::CONTENT_TYPE, ct);
    }
    out.body(Full::new(bytes)).unwrap()
}
