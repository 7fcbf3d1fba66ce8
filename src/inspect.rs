//! `meshstack pods` and `meshstack verify`: looking at the running demo.
//!
//! `pods` reads the cluster's nodes and the app's pods and hands them to
//! [`crate::locality::placement`]. `verify` optionally sends traffic (through the ingress
//! gateway's load balancer, or straight into a graphql pod when the gateway cannot be reached),
//! reads Envoy's `/clusters` counters from the sidecar of every graphql and orders pod before
//! and after, and hands the difference to [`crate::locality::report`]. Saved dumps
//! (`--clusters-dump ZONE=FILE`) go through the same report offline.
//!
//! Everything that touches a pod's port goes through [`PodHttp`], so the tests put a stand-in
//! sidecar behind it; the Kubernetes reads go through a real `kube::Client` (the in-memory API
//! server in tests).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;

use crate::config::Stack;
use crate::k8s::apply::{lb_address, Readiness};
use crate::k8s::pod_http::{HttpRequest, HttpResponse, PodHttp, PodHttpError};
use crate::locality::envoy::{self, Endpoint, ParseError};
use crate::locality::placement::{Placement, PodInfo, PodsReport};
use crate::locality::report::{self, CallerDump, Inputs, Report, Thresholds};
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
/// both orders and products.
pub const DEFAULT_QUERY: &str = "{ orders { id } products { id } }";
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

/// How `verify` sends traffic, and what came of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrafficStats {
    /// Where the requests went: `gateway <address>` or `pod <name>`.
    pub target: String,
    pub sent: u64,
    /// Answered with a 2xx status.
    pub succeeded: u64,
    /// Request plus response body bytes, on average.
    pub bytes_per_request: Option<u64>,
}

/// What `verify` measured: the report, and the traffic it sent first (if any).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficStats>,
    #[serde(flatten)]
    pub report: Report,
}

/// `verify` against the cluster: optionally send `requests` graphql queries, then read every
/// caller sidecar's counters. With traffic, only what changed while it ran is counted.
pub async fn verify_live(
    client: &kube::Client,
    http: &dyn PodHttp,
    stack: &Stack,
    requests: u64,
    query: &str,
    progress: &(dyn Fn(u64, u64) + Sync),
    warn: &(dyn Fn(String) + Sync),
) -> Result<Verification, VerifyError> {
    let placement = observe_placement(client).await?;
    let callers = callers(&placement);
    if callers.is_empty() {
        return Err(VerifyError::NoCallers);
    }
    let (dumps, traffic) = if requests == 0 {
        (read_dumps(http, &callers).await?, None)
    } else {
        let before = read_dumps(http, &callers).await?;
        let gateway = gateway_address(client).await;
        let stats = send_traffic(
            http,
            gateway.as_deref(),
            &graphql_pod(&placement)?,
            requests,
            query,
            progress,
            warn,
        )
        .await?;
        let after = read_dumps(http, &callers).await?;
        (difference(before, after), Some(stats))
    };
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
        thresholds: thresholds(stack),
    });
    Ok(Verification { traffic, report })
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
        thresholds: thresholds(stack),
    });
    Ok(Verification {
        traffic: None,
        report,
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

fn graphql_pod(placement: &Placement) -> Result<String, VerifyError> {
    placement
        .pods
        .iter()
        .filter(|p| p.ready && p.deployment.as_deref() == Some("graphql"))
        .map(|p| p.name.clone())
        .min()
        .ok_or_else(|| VerifyError::Traffic("no graphql pod is Ready to take the requests".into()))
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

/// Send `n` graphql queries through the gateway at `gateway`, or, when it has no address or
/// its first request fails to connect, straight to the graphql pod's port.
async fn send_traffic(
    http: &dyn PodHttp,
    gateway: Option<&str>,
    graphql_pod: &str,
    n: u64,
    query: &str,
    progress: &(dyn Fn(u64, u64) + Sync),
    warn: &(dyn Fn(String) + Sync),
) -> Result<TrafficStats, VerifyError> {
    let body = serde_json::json!({ "query": query }).to_string();
    let request = HttpRequest {
        method: "POST",
        path: GRAPHQL_PATH,
        content_type: Some("application/json"),
        body: body.as_bytes(),
    };
    let (done, ok, bytes) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let record = |response: &HttpResponse| {
        if (200..300).contains(&response.status) {
            ok.fetch_add(1, Ordering::Relaxed);
            let size = request.body.len() + response.body.len();
            bytes.fetch_add(size as u64, Ordering::Relaxed);
        }
        progress(done.fetch_add(1, Ordering::Relaxed) + 1, n);
    };
    // The first request tells whether the gateway answers; it counts as one of the `n`.
    let mut via_gateway = false;
    if let Some(address) = gateway {
        match http.address(address, GATEWAY_PORT, &request).await {
            Ok(response) => {
                record(&response);
                via_gateway = true;
            }
            Err(e) => warn(format!(
                "the ingress gateway {address} does not answer ({e}); sending the requests \
                 straight to graphql pod {graphql_pod} instead"
            )),
        }
    }
    let target = match (via_gateway, gateway) {
        (true, Some(address)) => format!("gateway {address}"),
        _ => format!("pod {graphql_pod}"),
    };
    let mut last_error = None;
    let remaining = n - done.load(Ordering::Relaxed);
    let results: Vec<Result<(), PodHttpError>> = stream::iter(0..remaining)
        .map(|_| async {
            let response = match (via_gateway, gateway) {
                (true, Some(address)) => http.address(address, GATEWAY_PORT, &request).await,
                _ => {
                    http.pod(app::NAMESPACE, graphql_pod, GRAPHQL_PORT, &request)
                        .await
                }
            };
            match response {
                Ok(response) => {
                    record(&response);
                    Ok(())
                }
                Err(e) => {
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, n);
                    Err(e)
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for r in results {
        if let Err(e) = r {
            last_error = Some(e.to_string());
        }
    }
    let succeeded = ok.load(Ordering::Relaxed);
    if succeeded == 0 {
        return Err(VerifyError::Traffic(format!(
            "none of the {n} requests to {target} succeeded{}; check the query (--query) and \
             `meshstack pods`",
            last_error
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        )));
    }
    if succeeded < n {
        warn(format!(
            "{} of {n} requests to {target} failed",
            n - succeeded
        ));
    }
    Ok(TrafficStats {
        target,
        sent: n,
        succeeded,
        bytes_per_request: Some(bytes.load(Ordering::Relaxed) / succeeded),
    })
}

/// How long a sidecar read or a test request may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The report as a person reads it: the traffic sent (if any), then the report.
pub fn render_text(v: &Verification) -> String {
    let mut out = String::new();
    if let Some(t) = &v.traffic {
        out.push_str(&format!(
            "sent {} graphql queries to {} ({} succeeded, {} bytes each on average)\n\n",
            t.sent,
            t.target,
            t.succeeded,
            t.bytes_per_request.unwrap_or(0)
        ));
    }
    out.push_str(&report::render_text(&v.report));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
