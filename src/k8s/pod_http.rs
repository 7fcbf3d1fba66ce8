//! HTTP/1.1 to a port of a pod through the Kubernetes API (port-forward), and to a plain
//! address: how `meshstack verify` reads Envoy's admin endpoint and sends test traffic.
//!
//! Envoy's admin endpoint (`:15000` in the `istio-proxy` container) listens on 127.0.0.1 inside
//! the pod, so the API server's pod *proxy* subresource, which dials the pod IP, cannot reach
//! it; a port-forward, which the kubelet opens inside the pod's network namespace, can. No
//! kubectl subprocess: kube's websocket port-forward gives a byte stream, and hyper's
//! connection-level client speaks HTTP/1.1 over it (and over a TCP socket for an address such as
//! the ingress gateway's load balancer).
//!
//! Everything runs inside the call: hyper's connection future is driven in place rather than
//! spawned, and the port-forward's task is aborted and joined before returning, so a timeout
//! or an error leaves no task behind.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{FusedFuture, FutureExt};
use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// How long, after an HTTP exchange through a port-forward failed, to wait for the reason the
/// kubelet sends on the port's error channel (it can arrive just after the data stream closed).
const FORWARD_ERROR_GRACE: Duration = Duration::from_secs(2);

/// One HTTP response, body read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One HTTP request: sent with `Host`, `Connection: close` and, when there is a body (or the
/// method carries one), `Content-Length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    /// `GET` or `POST` (any valid method token is sent as given).
    pub method: &'a str,
    /// Origin form: starts with `/`, may carry a query (`/clusters?format=json`).
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

impl<'a> HttpRequest<'a> {
    /// `GET path`, no body.
    pub fn get(path: &'a str) -> Self {
        HttpRequest {
            method: "GET",
            path,
            content_type: None,
            body: &[],
        }
    }

    /// `POST path` with `body` of type `content_type`.
    pub fn post(path: &'a str, content_type: &'a str, body: &'a [u8]) -> Self {
        HttpRequest {
            method: "POST",
            path,
            content_type: Some(content_type),
            body,
        }
    }
}

/// Why no response was read. Each message names the pod and port, or the address.
#[derive(Debug, thiserror::Error)]
pub enum PodHttpError {
    /// The request cannot be sent as given (a bad method, path or header value): a bug in the
    /// caller, found before anything is sent.
    #[error("invalid request to {target}: {reason}")]
    InvalidRequest { target: String, reason: String },
    /// The API server did not open the port-forward: the pod does not exist, RBAC denies
    /// `pods/portforward`, or the connection to the API server failed.
    #[error("cannot open a port-forward to {target}")]
    PortForward {
        target: String,
        // Boxed: kube's error is large, and this enum travels in every `Result` here.
        #[source]
        source: Box<kube::Error>,
    },
    /// The port-forward was opened but failed on the pod's side; `reason` is what the kubelet
    /// reported (typically that nothing listens on the port inside the pod).
    #[error("port-forward to {target} failed: {reason}")]
    Forwarded { target: String, reason: String },
    /// No TCP connection to the address (refused, unreachable, or the name does not resolve).
    #[error("cannot connect to {target}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// Connected, but the HTTP exchange failed: the peer closed early or did not speak HTTP/1.1.
    #[error("HTTP exchange with {target} failed")]
    Http {
        target: String,
        #[source]
        source: hyper::Error,
    },
    /// No complete response (connection, request, whole body) within the timeout.
    #[error("no complete HTTP response from {target} within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
}

/// The seam `verify` uses; tests put a stand-in behind it.
///
/// A response with any status is `Ok`: what a 4xx or 5xx means is the caller's business.
#[async_trait]
pub trait PodHttp: Send + Sync {
    /// `req` to `port` of `pod` in `namespace`, as seen from inside the pod (127.0.0.1
    /// listeners included). `Host: localhost`.
    async fn pod(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
        req: &HttpRequest<'_>,
    ) -> Result<HttpResponse, PodHttpError>;

    /// `req` to `host:port` (an IP address or a DNS name) over plain TCP. `Host` is the host,
    /// with `:port` unless the port is 80.
    async fn address(
        &self,
        host: &str,
        port: u16,
        req: &HttpRequest<'_>,
    ) -> Result<HttpResponse, PodHttpError>;
}

/// The real one: port-forward through the API server for `pod`, a TCP connection for `address`.
///
/// `timeout` bounds each call as a whole: opening the port-forward or connection, sending the
/// request and reading the whole body.
///
/// `pod` needs RBAC `create` on `pods/portforward`.
///
/// # Testing
/// `address` is tested against local sockets. `pod` itself is not: the in-memory API server
/// has no websocket endpoint. It is kept to opening the forward and ending it; the exchange
/// over the forwarded stream, with the error channel watched, is tested over an in-memory pipe.
pub struct PortForward {
    pub client: kube::Client,
    pub timeout: Duration,
}

#[async_trait]
impl PodHttp for PortForward {
    async fn pod(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
        req: &HttpRequest<'_>,
    ) -> Result<HttpResponse, PodHttpError> {
        let target = Target::Pod {
            namespace,
            pod,
            port,
        };
        let request = build_request(req, "localhost", &target)?;
        let deadline = Instant::now() + self.timeout;

        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), namespace);
        let mut forwarder = tokio::time::timeout_at(deadline, api.portforward(pod, &[port]))
            .await
            .map_err(|_| Failure::Timeout.at(&target, self.timeout))?
            .map_err(|source| PodHttpError::PortForward {
                target: target.to_string(),
                source: Box::new(source),
            })?;
        let result = match (forwarder.take_stream(port), forwarder.take_error(port)) {
            (Some(stream), Some(errors)) => {
                exchange_watching(stream, errors, request, deadline).await
            }
            // kube hands out one stream and one error channel per requested port.
            _ => Err(Failure::Forwarded(
                "kube returned no stream for the port".into(),
            )),
        };

        // The body has been read whole with `Connection: close`, or the exchange failed: nothing
        // more is wanted from the forward, so end it now rather than wait on the API server's
        // close handshake, and join so that its task is gone before returning.
        forwarder.abort();
        let ended = forwarder.join().await;
        match (result, ended) {
            // The forwarder failed on its own (e.g. the websocket broke): that is the cause.
            (Err(Failure::Http(_)), Err(e)) if !was_aborted(&e) => {
                Err(Failure::Forwarded(e.to_string()).at(&target, self.timeout))
            }
            (result, _) => result.map_err(|f| f.at(&target, self.timeout)),
        }
    }

    async fn address(
        &self,
        host: &str,
        port: u16,
        req: &HttpRequest<'_>,
    ) -> Result<HttpResponse, PodHttpError> {
        let target = Target::Address { host, port };
        let request = build_request(req, &host_header(host, port), &target)?;
        let outcome = tokio::time::timeout(self.timeout, async {
            let stream = tokio::net::TcpStream::connect((host, port))
                .await
                .map_err(|source| PodHttpError::Connect {
                    target: target.to_string(),
                    source,
                })?;
            exchange(stream, request)
                .await
                .map_err(|source| PodHttpError::Http {
                    target: target.to_string(),
                    source,
                })
        })
        .await;
        outcome.unwrap_or_else(|_| {
            Err(PodHttpError::Timeout {
                target: target.to_string(),
                timeout: self.timeout,
            })
        })
    }
}

/// How a port-forwarded exchange ended badly, before it is given a target.
#[derive(Debug)]
enum Failure {
    Http(hyper::Error),
    /// What the kubelet (or the forwarder) said went wrong.
    Forwarded(String),
    Timeout,
}

impl Failure {
    fn at(self, target: &Target<'_>, timeout: Duration) -> PodHttpError {
        let target = target.to_string();
        match self {
            Failure::Http(source) => PodHttpError::Http { target, source },
            Failure::Forwarded(reason) => PodHttpError::Forwarded { target, reason },
            Failure::Timeout => PodHttpError::Timeout { target, timeout },
        }
    }
}

/// [`exchange`] over a port-forward's stream, watching the port's error channel: `errors`
/// resolves with the kubelet's message (e.g. nothing listens on the port inside the pod), or
/// with `None` when the forwarder ended without one. A message fails the exchange at once; and
/// when the exchange fails first, a message that follows within [`FORWARD_ERROR_GRACE`]
/// replaces hyper's error, which says less ("connection closed before message completed").
async fn exchange_watching<S, E>(
    stream: S,
    errors: E,
    request: http::Request<Full<Bytes>>,
    deadline: Instant,
) -> Result<HttpResponse, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: Future<Output = Option<String>>,
{
    // Fused: it may have completed (with `None`) inside the select before it is awaited again.
    let mut errors = std::pin::pin!(errors.fuse());
    let outcome = tokio::time::timeout_at(deadline, async {
        let mut exchange = std::pin::pin!(exchange(stream, request));
        tokio::select! {
            done = &mut exchange => done.map_err(Failure::Http),
            // `None` disables this branch; the exchange goes on.
            Some(reason) = &mut errors => Err(Failure::Forwarded(reason)),
        }
    })
    .await;
    match outcome {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(Failure::Http(source))) if !errors.is_terminated() => {
            let grace = deadline.min(Instant::now() + FORWARD_ERROR_GRACE);
            match tokio::time::timeout_at(grace, errors).await {
                Ok(Some(reason)) => Err(Failure::Forwarded(reason)),
                _ => Err(Failure::Http(source)),
            }
        }
        Ok(done) => done,
    }
}

/// Whether the forwarder's task ended because [`kube::api::Portforwarder::abort`] cancelled
/// it (the normal end here) rather than failing on its own. kube's error type is private, but
/// its cause is tokio's `JoinError`.
fn was_aborted(e: &(dyn std::error::Error + 'static)) -> bool {
    e.source()
        .and_then(|s| s.downcast_ref::<tokio::task::JoinError>())
        .is_some_and(tokio::task::JoinError::is_cancelled)
}

/// What a message names: the pod and port, or the address.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Pod {
        namespace: &'a str,
        pod: &'a str,
        port: u16,
    },
    Address {
        host: &'a str,
        port: u16,
    },
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Pod {
                namespace,
                pod,
                port,
            } => write!(f, "pod {namespace}/{pod} port {port}"),
            Target::Address { host, port } => write!(f, "{}:{port}", bracketed(host)),
        }
    }
}

/// An IPv6 literal in brackets, as it must appear before `:port`.
fn bracketed(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]"),
        _ => host.to_string(),
    }
}

/// The `Host` header for `host:port` over plain HTTP (RFC 9110 7.2: the port is left out when
/// it is the scheme's default).
fn host_header(host: &str, port: u16) -> String {
    if port == 80 {
        bracketed(host)
    } else {
        format!("{}:{port}", bracketed(host))
    }
}

/// The request hyper sends, checked before any connection is made.
fn build_request(
    req: &HttpRequest<'_>,
    host: &str,
    target: &Target<'_>,
) -> Result<http::Request<Full<Bytes>>, PodHttpError> {
    let invalid = |reason: String| PodHttpError::InvalidRequest {
        target: target.to_string(),
        reason,
    };
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| invalid(format!("{:?} is not an HTTP method", req.method)))?;
    // Without this, `http://...` would pass as an absolute-form URI and be sent as such.
    if !req.path.starts_with('/') {
        return Err(invalid(format!(
            "path {:?} does not start with '/'",
            req.path
        )));
    }
    let host = HeaderValue::from_str(host)
        .map_err(|_| invalid(format!("host {host:?} is not a valid header value")))?;
    let mut builder = http::Request::builder()
        .method(method.clone())
        .uri(req.path)
        .header(HOST, host)
        .header(CONNECTION, "close");
    if let Some(content_type) = req.content_type {
        let value = HeaderValue::from_str(content_type).map_err(|_| {
            invalid(format!(
                "content type {content_type:?} is not a valid header value"
            ))
        })?;
        builder = builder.header(CONTENT_TYPE, value);
    }
    // Explicit, so that an empty POST says `Content-Length: 0` rather than leaving the server
    // to guess; GET and HEAD without a body send none.
    if !req.body.is_empty() || !matches!(method, Method::GET | Method::HEAD) {
        builder = builder.header(CONTENT_LENGTH, req.body.len());
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(req.body)))
        .map_err(|e| invalid(e.to_string()))
}

/// One HTTP/1.1 exchange over `io`, body read whole.
async fn exchange<S>(
    io: S,
    request: http::Request<Full<Bytes>>,
) -> Result<HttpResponse, hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let response = async move {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>(HttpResponse {
            status,
            body: body.to_vec(),
        })
    };
    // The connection future does the I/O. Driven here, not spawned, so that dropping this
    // future (on timeout) closes everything.
    let mut response = std::pin::pin!(response);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        done = &mut response => done,
        ended = &mut conn => {
            // A connection error is the root cause of the response's error; after a clean end
            // the response holds whatever was read.
            ended?;
            response.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    /// A `PortForward` whose client is never used (only `address` is exercised here).
    fn port_forward(timeout: Duration) -> PortForward {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        PortForward {
            client: {
                crate::k8s::client::install_crypto_provider();
                kube::Client::try_from(config).unwrap()
            },
            timeout,
        }
    }

    /// Serves one connection: reads a request (headers and a `Content-Length` body), answers
    /// `response` verbatim, closes. Yields the raw request.
    async fn serve_once(response: &'static [u8]) -> (u16, JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let request = read_request(&mut socket).await;
            socket.write_all(response).await.unwrap();
            socket.shutdown().await.unwrap();
            request
        });
        (port, task)
    }

    async fn read_request(socket: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                return request;
            }
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
                if request.len() >= end + 4 + length {
                    return request;
                }
            }
        }
    }

    /// Header lines of a raw request, lower-cased names, sorted.
    fn headers(raw: &[u8]) -> (String, Vec<String>, Vec<u8>) {
        let text = String::from_utf8_lossy(raw);
        let end = text.find("\r\n\r\n").unwrap();
        let mut lines = text[..end].split("\r\n");
        let request_line = lines.next().unwrap().to_string();
        let mut headers: Vec<String> = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                format!("{}: {}", k.to_ascii_lowercase(), v.trim())
            })
            .collect();
        headers.sort();
        (request_line, headers, raw[end + 4..].to_vec())
    }

    #[tokio::test]
    async fn reads_status_and_body_in_each_framing() {
        let cases: [(&str, &'static [u8], u16, &[u8]); 4] = [
            (
                "content-length",
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
                200,
                b"hello world",
            ),
            (
                "chunked",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
                200,
                b"hello world",
            ),
            (
                "until close",
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world",
                200,
                b"hello world",
            ),
            (
                "error status is a response",
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\n\r\nno!",
                503,
                b"no!",
            ),
        ];
        for (name, canned, status, body) in cases {
            let (port, server) = serve_once(canned).await;
            let response = port_forward(Duration::from_secs(5))
                .address("127.0.0.1", port, &HttpRequest::get("/clusters"))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(response.status, status, "{name}");
            assert_eq!(response.body, body, "{name}");
            let (request_line, headers, sent) = headers(&server.await.unwrap());
            assert_eq!(request_line, "GET /clusters HTTP/1.1", "{name}");
            assert_eq!(
                headers,
                [
                    "connection: close".to_string(),
                    format!("host: 127.0.0.1:{port}"),
                ],
                "{name}"
            );
            assert!(sent.is_empty(), "{name}");
        }
    }

    #[tokio::test]
    async fn post_body_and_headers_arrive_as_sent() {
        let (port, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await;
        let body = br#"{"query":"{ products { id } }"}"#;
        let req = HttpRequest::post("/graphql?x=1", "application/json", body);
        let response = port_forward(Duration::from_secs(5))
            .address("localhost", port, &req)
            .await
            .unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"{}"[..])
        );
        let (request_line, headers, sent) = headers(&server.await.unwrap());
        assert_eq!(request_line, "POST /graphql?x=1 HTTP/1.1");
        assert_eq!(
            headers,
            [
                "connection: close".to_string(),
                format!("content-length: {}", body.len()),
                "content-type: application/json".to_string(),
                format!("host: localhost:{port}"),
            ]
        );
        assert_eq!(sent, body);
    }

    #[tokio::test]
    async fn empty_post_says_content_length_zero() {
        let (port, server) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let req = HttpRequest {
            method: "POST",
            path: "/",
            content_type: None,
            body: &[],
        };
        let response = port_forward(Duration::from_secs(5))
            .address("127.0.0.1", port, &req)
            .await
            .unwrap();
        assert_eq!(response.status, 204);
        let (_, headers, _) = headers(&server.await.unwrap());
        assert!(
            headers.contains(&"content-length: 0".to_string()),
            "{headers:?}"
        );
    }

    #[tokio::test]
    async fn timeout_fires_against_a_server_that_never_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts and holds the connection open without answering.
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(socket);
        });
        let timeout = Duration::from_millis(200);
        // The outer deadline turns a timeout that never fires into a failure, not a hang.
        let http = port_forward(timeout);
        let req = HttpRequest::get("/");
        let call = http.address("127.0.0.1", port, &req);
        let err = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the call's own timeout did not fire")
            .unwrap_err();
        server.abort();
        assert!(matches!(err, PodHttpError::Timeout { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("no complete HTTP response from 127.0.0.1:{port} within 200ms")
        );
    }

    #[tokio::test]
    async fn connection_refused_names_the_address() {
        // A port that was just free: bind, note it, release it.
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = port_forward(Duration::from_secs(5))
            .address("127.0.0.1", port, &HttpRequest::get("/"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot connect to 127.0.0.1:{port}")
        );
        let PodHttpError::Connect { source, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn peer_that_is_not_http_is_an_http_error() {
        let (port, server) = serve_once(b"SSH-2.0-OpenSSH_9.6\r\n").await;
        let err = port_forward(Duration::from_secs(5))
            .address("127.0.0.1", port, &HttpRequest::get("/"))
            .await
            .unwrap_err();
        server.await.unwrap();
        assert_eq!(
            err.to_string(),
            format!("HTTP exchange with 127.0.0.1:{port} failed")
        );
        let PodHttpError::Http { source, .. } = err else {
            panic!("{err:?}")
        };
        // hyper's own words for the cause, which `{:#}` prints after the message.
        assert!(source.is_parse(), "{source}");
    }

    #[tokio::test]
    async fn invalid_requests_fail_before_connecting() {
        let cases = [
            (
                HttpRequest::get("clusters"),
                "path \"clusters\" does not start with '/'",
            ),
            (
                HttpRequest::get("http://evil/"),
                "path \"http://evil/\" does not start with '/'",
            ),
            (
                HttpRequest {
                    method: "GE T",
                    ..HttpRequest::get("/")
                },
                "\"GE T\" is not an HTTP method",
            ),
            (
                HttpRequest::post("/", "text/plain\r\nX: y", b"x"),
                "content type \"text/plain\\r\\nX: y\" is not a valid header value",
            ),
        ];
        // Port 9 on 127.0.0.1: nothing listens, so reaching the network would be a Connect error.
        for (req, reason) in cases {
            let err = port_forward(Duration::from_secs(5))
                .address("127.0.0.1", 9, &req)
                .await
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid request to 127.0.0.1:9: {reason}")
            );
        }
    }

    /// What the pod's end of a port-forward does once it has read the request.
    #[derive(Debug, Clone, Copy)]
    enum PodSide {
        Answers,
        /// The kubelet reports an error while the data stream stays open.
        ErrorWhileOpen,
        /// The data stream closes, and the kubelet's message follows.
        CloseThenError,
        CloseWithoutError,
        /// The error channel ends without a message (the client has seen it), then the pod
        /// side answers or closes.
        ErrorChannelEndsThenAnswers,
        ErrorChannelEndsThenClose,
        Silent,
    }

    const KUBELET_SAYS: &str = "error forwarding port 15000 to pod 1f2e, uid : failed to \
        connect to localhost:15000 inside namespace \"3a4b\", IPv4: dial tcp4 127.0.0.1:15000: \
        connect: connection refused IPv6 dial tcp6 [::1]:15000: connect: connection refused";

    async fn play(script: PodSide, deadline: Duration) -> Result<HttpResponse, Failure> {
        let (client_io, mut pod_io) = tokio::io::duplex(64 * 1024);
        let (error_tx, error_rx) = tokio::sync::oneshot::channel::<String>();
        // Tells the pod side that the client has seen the error channel end.
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
        let errors = async move {
            let message = error_rx.await.ok();
            let _ = seen_tx.send(());
            message
        };
        let pod_side = tokio::spawn(async move {
            let request = read_request(&mut pod_io).await;
            assert!(request.starts_with(b"GET /clusters HTTP/1.1\r\n"));
            match script {
                PodSide::Answers => {
                    pod_io
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    std::future::pending::<()>().await;
                }
                PodSide::ErrorWhileOpen => {
                    error_tx.send(KUBELET_SAYS.into()).unwrap();
                    std::future::pending::<()>().await;
                }
                PodSide::CloseThenError => {
                    drop(pod_io);
                    // Late on purpose, well inside the grace period.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = error_tx.send(KUBELET_SAYS.into());
                }
                PodSide::CloseWithoutError => drop((pod_io, error_tx)),
                PodSide::ErrorChannelEndsThenAnswers => {
                    drop(error_tx);
                    seen_rx.await.unwrap();
                    pod_io
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                    std::future::pending::<()>().await;
                }
                PodSide::ErrorChannelEndsThenClose => {
                    drop(error_tx);
                    seen_rx.await.unwrap();
                    drop(pod_io);
                }
                PodSide::Silent => std::future::pending::<()>().await,
            }
        });
        let target = Target::Pod {
            namespace: "ecommerce",
            pod: "graphql-1",
            port: 15000,
        };
        let request = build_request(&HttpRequest::get("/clusters"), "localhost", &target).unwrap();
        let deadline = Instant::now() + deadline;
        let outcome = exchange_watching(client_io, errors, request, deadline).await;
        pod_side.abort();
        if let Err(e) = pod_side.await {
            assert!(e.is_cancelled(), "{script:?}: pod side failed: {e}");
        }
        outcome
    }

    /// An outcome in a word or two, for the table below.
    fn describe(outcome: Result<HttpResponse, Failure>) -> String {
        match outcome {
            Ok(r) => format!("{} {}", r.status, String::from_utf8_lossy(&r.body)),
            Err(Failure::Forwarded(reason)) => format!("forwarded: {reason}"),
            Err(Failure::Http(_)) => "http".into(),
            Err(Failure::Timeout) => "timeout".into(),
        }
    }

    #[tokio::test]
    async fn the_error_channel_explains_a_failed_forward() {
        let kubelet = format!("forwarded: {KUBELET_SAYS}");
        let cases = [
            (PodSide::Answers, "200 ok"),
            (PodSide::ErrorWhileOpen, &kubelet),
            (PodSide::CloseThenError, &kubelet),
            (PodSide::CloseWithoutError, "http"),
            (PodSide::ErrorChannelEndsThenAnswers, "200 ok"),
            (PodSide::ErrorChannelEndsThenClose, "http"),
        ];
        for (script, expected) in cases {
            let started = std::time::Instant::now();
            let got = describe(play(script, Duration::from_secs(10)).await);
            assert_eq!(got, expected, "{script:?}");
            // Nothing here should wait out the deadline or the grace period (2s).
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{script:?} took {:?}",
                started.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn a_silent_forward_times_out() {
        let started = std::time::Instant::now();
        let outcome = describe(play(PodSide::Silent, Duration::from_millis(200)).await);
        assert_eq!(outcome, "timeout");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn targets_and_host_headers() {
        let cases = [
            ("10.0.0.1", 80, "10.0.0.1:80", "10.0.0.1"),
            ("10.0.0.1", 3002, "10.0.0.1:3002", "10.0.0.1:3002"),
            (
                "a.elb.amazonaws.com",
                80,
                "a.elb.amazonaws.com:80",
                "a.elb.amazonaws.com",
            ),
            ("2600:1f18::1", 80, "[2600:1f18::1]:80", "[2600:1f18::1]"),
            ("::1", 8080, "[::1]:8080", "[::1]:8080"),
        ];
        for (host, port, target, header) in cases {
            assert_eq!(Target::Address { host, port }.to_string(), target);
            assert_eq!(host_header(host, port), header, "{host}:{port}");
        }
        let pod = Target::Pod {
            namespace: "ecommerce",
            pod: "graphql-7d9f-abcde",
            port: 15000,
        };
        assert_eq!(
            pod.to_string(),
            "pod ecommerce/graphql-7d9f-abcde port 15000"
        );
    }

    #[tokio::test]
    async fn only_a_cancelled_task_counts_as_aborted() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapped(#[source] tokio::task::JoinError);

        let cancelled = tokio::spawn(std::future::pending::<()>());
        cancelled.abort();
        let cancelled = Wrapped(cancelled.await.unwrap_err());
        assert!(was_aborted(&cancelled));
        assert!(!was_aborted(&std::io::Error::other("x")));
    }
}
