//! A `kube::Client` for an EKS cluster, built from what the `cluster` stage knows — its endpoint
//! and CA — and a source of bearer tokens: no kubeconfig, no aws CLI.
//!
//! EKS accepts a token (a presigned STS URL, see [`crate::k8s::token`]) for 15 minutes. The
//! client asks its [`TokenSource`] for a fresh one before the first request after the one it
//! holds turned [`TOKEN_REUSE`] (10 minutes) old, so one client serves a whole run, including
//! waits longer than a token lives, without the stages having to rebuild it. The source is
//! async so that it can ask the SDK's credentials provider each time (assumed-role and SSO
//! credentials expire during long runs too):
//!
//! ```text
//! let creds = sdk_config.credentials_provider().unwrap();
//! let tokens: TokenSource = Arc::new(move || {
//!     let (creds, cluster, region) = (creds.clone(), cluster.clone(), region.clone());
//!     Box::pin(async move {
//!         let c = creds.provide_credentials().await?;
//!         Ok(token::eks_token(&cluster, &region, &c, SystemTime::now())?.token)
//!     })
//! });
//! let client = client::client(&endpoint, &ca_data, tokens)?;
//! ```
//!
//! TLS is rustls with the cluster's own CA only (the system roots are not consulted for a
//! cluster endpoint).
//!
//! # Another API server
//! [`api_override`] reads [`API_ENV`] and [`CA_FILE_ENV`]: with them set, the Kubernetes
//! stages, `pods` and `verify` talk to that endpoint, trusting that CA, instead of the EKS
//! cluster's, as `AWS_ENDPOINT_URL` does for AWS. Everything else stays as it is: the cluster
//! must still exist in the account (its name signs the token), the token is still the EKS
//! token, and helm gets the same private kubeconfig, with the overridden server and CA. The
//! tests point the binary at a local API server this way.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::HeaderValue;
use tower::BoxError;

/// Why a token could not be made.
pub type TokenError = Box<dyn std::error::Error + Send + Sync>;

/// Makes a bearer token for the cluster (for EKS: `k8s-aws-v1.<base64url presigned URL>`).
/// Called at most once per [`TOKEN_REUSE`] while requests are being made.
pub type TokenSource =
    Arc<dyn Fn() -> BoxFuture<'static, Result<String, TokenError>> + Send + Sync>;

/// How long a token is reused before a new one is made: well inside the 15 minutes EKS accepts
/// one, so that a request built just before the switch still arrives with a valid token.
pub const TOKEN_REUSE: Duration = Duration::from_secs(10 * 60);

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a URL (the `cluster` stage records what EKS reports).
    #[error("invalid cluster endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    /// The CA is not base64-encoded PEM certificates, as EKS's `certificateAuthority.data` is.
    #[error("invalid cluster CA data: {0}")]
    CaData(String),
    /// [`API_ENV`] / [`CA_FILE_ENV`] are unusable; the message names the variable and the fix.
    #[error("{0}")]
    Override(String),
    /// kube could not set up its HTTP stack (TLS configuration).
    #[error("cannot build the Kubernetes client")]
    Build(#[source] kube::Error),
}

/// The cluster API endpoint to use instead of the EKS cluster's (`https://host:port`).
pub const API_ENV: &str = "MESHSTACK_KUBE_API";
/// The PEM file with the CA that signed [`API_ENV`]'s certificate; required with it.
pub const CA_FILE_ENV: &str = "MESHSTACK_KUBE_CA_FILE";

/// Where the cluster's API is reached when [`API_ENV`] is set: the endpoint, and the CA as EKS
/// hands it out (base64 of PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiOverride {
    pub endpoint: String,
    pub ca_data: String,
}

/// The override from the environment, if [`API_ENV`] is set.
///
/// # Errors
/// [`ClientError::Override`], naming the variable and the fix: [`API_ENV`] without
/// [`CA_FILE_ENV`], a CA file that cannot be read or holds no PEM certificate, or an endpoint
/// that is not `https://host[:port]`.
pub fn api_override() -> Result<Option<ApiOverride>, ClientError> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    api_override_from(
        var(API_ENV).map(|v| v.to_string_lossy().into_owned()),
        var(CA_FILE_ENV).map(std::path::PathBuf::from),
    )
}

fn api_override_from(
    endpoint: Option<String>,
    ca_file: Option<std::path::PathBuf>,
) -> Result<Option<ApiOverride>, ClientError> {
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let ca_file = ca_file.ok_or_else(|| {
        ClientError::Override(format!(
            "{API_ENV} is set but {CA_FILE_ENV} is not; set it to the PEM file of the CA that \
             signed {endpoint}'s certificate"
        ))
    })?;
    let pem = std::fs::read(&ca_file).map_err(|e| {
        ClientError::Override(format!(
            "{CA_FILE_ENV}: cannot read {}: {e}",
            ca_file.display()
        ))
    })?;
    let ca_data = base64::engine::general_purpose::STANDARD.encode(pem);
    ca_certificates(&ca_data)
        .map_err(|e| ClientError::Override(format!("{CA_FILE_ENV}: {}: {e}", ca_file.display())))?;
    config(&endpoint, &ca_data).map_err(|e| ClientError::Override(format!("{API_ENV}: {e}")))?;
    Ok(Some(ApiOverride { endpoint, ca_data }))
}

/// How long connecting to the API server may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one read (or write) of a request may stall; meshstack makes no watch requests.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The [`kube::Config`] for a cluster: endpoint, CA, no credentials (those come from the token
/// layer that [`client`] adds).
pub fn config(endpoint: &str, ca_data: &str) -> Result<kube::Config, ClientError> {
    let uri: http::Uri =
        endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::Endpoint {
                endpoint: endpoint.into(),
                reason: e.to_string(),
            })?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(ClientError::Endpoint {
            endpoint: endpoint.into(),
            reason: "expected https://<host>".into(),
        });
    }
    let mut config = kube::Config::new(uri);
    config.root_cert = Some(ca_certificates(ca_data)?);
    // Bounded waits: an API server that is gone (connection refused) fails at once; one that
    // accepts and never answers fails after these, instead of hanging the run.
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.write_timeout = Some(READ_TIMEOUT);
    identify(&mut config);
    Ok(config)
}

/// The `User-Agent` meshstack's requests carry, so that an API server's audit log tells them
/// apart from kubectl's, helm's and the controllers'.
pub const USER_AGENT: &str = concat!("meshstack/", env!("CARGO_PKG_VERSION"));

/// Names meshstack in `config`'s requests ([`USER_AGENT`]).
pub fn identify(config: &mut kube::Config) {
    config.headers.push((
        http::header::USER_AGENT,
        HeaderValue::from_static(USER_AGENT),
    ));
}

/// A client for the cluster at `endpoint` (`https://...`), trusting only the CA in `ca_data`
/// (base64 of PEM, as EKS returns it), authenticating with tokens from `tokens`.
///
/// Call it inside the tokio runtime (the client spawns its request buffer there).
///
/// # Errors
/// A malformed endpoint or CA; no request is made here, so an unreachable cluster or a bad
/// token shows up on the first call. A token source that fails fails that request only; the
/// next request asks the source again.
pub fn client(
    endpoint: &str,
    ca_data: &str,
    tokens: TokenSource,
) -> Result<kube::Client, ClientError> {
    install_crypto_provider();
    let config = config(endpoint, ca_data)?;
    let layer = BearerLayer {
        source: tokens,
        reuse: TOKEN_REUSE,
    };
    Ok(kube::client::ClientBuilder::try_from(config)
        .map_err(ClientError::Build)?
        .with_layer(&layer)
        .build())
}

/// Makes ring rustls's process-wide provider, which kube's TLS uses. rustls picks it on its
/// own when ring is its only provider, as in the binary; a build that also has aws-lc in the
/// tree (the tests': a dev-dependency's HTTP client brings it) must say which. Idempotent.
pub fn install_crypto_provider() {
    // Err only when a provider is already installed: then there is nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The DER certificates in base64-encoded PEM (one or more `CERTIFICATE` blocks).
pub fn ca_certificates(ca_data: &str) -> Result<Vec<Vec<u8>>, ClientError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let compact: String = ca_data.split_whitespace().collect();
    let pem = b64
        .decode(compact)
        .map_err(|e| ClientError::CaData(format!("not base64: {e}")))?;
    let pem = String::from_utf8(pem).map_err(|_| ClientError::CaData("not PEM text".into()))?;
    let mut certs = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        match (line, body.as_mut()) {
            ("-----BEGIN CERTIFICATE-----", None) => body = Some(String::new()),
            ("-----END CERTIFICATE-----", Some(b)) => {
                let der = b64.decode(b.as_bytes()).map_err(|e| {
                    ClientError::CaData(format!("certificate {}: {e}", certs.len() + 1))
                })?;
                certs.push(der);
                body = None;
            }
            (l, Some(_)) if l.starts_with("-----") => {
                return Err(ClientError::CaData(format!(
                    "unexpected {l:?} inside a certificate"
                )));
            }
            (l, Some(b)) => b.push_str(l),
            (_, None) => {}
        }
    }
    if body.is_some() {
        return Err(ClientError::CaData("unterminated certificate".into()));
    }
    if certs.is_empty() {
        return Err(ClientError::CaData("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The token in use and when it was made.
struct TokenState {
    reuse: Duration,
    held: Option<(HeaderValue, Instant)>,
}

impl TokenState {
    /// The `Authorization` header for a request sent at `now`, if the held token is young enough.
    fn current(&self, now: Instant) -> Option<&HeaderValue> {
        self.held
            .as_ref()
            .filter(|(_, made)| now.saturating_duration_since(*made) < self.reuse)
            .map(|(header, _)| header)
    }

    fn store(&mut self, token: &str, now: Instant) -> Result<(), TokenError> {
        let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token source returned a token that is not a valid header value")?;
        header.set_sensitive(true);
        self.held = Some((header, now));
        Ok(())
    }
}

/// Puts the current token on every request.
struct BearerLayer {
    source: TokenSource,
    reuse: Duration,
}

impl<S> tower::Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer {
            inner,
            source: self.source.clone(),
            state: TokenState {
                reuse: self.reuse,
                held: None,
            },
            refreshing: None,
            failed: None,
        }
    }
}

/// The token is fetched in `poll_ready` — being ready includes holding a valid token — so that
/// `call` can hand the request on at once without owning (cloning) the inner service. kube puts
/// one instance behind its request buffer, so concurrent requests share one token.
struct Bearer<S> {
    inner: S,
    source: TokenSource,
    state: TokenState,
    refreshing: Option<BoxFuture<'static, Result<String, TokenError>>>,
    /// A refresh failed: the next request fails with this, the one after asks again. (Failing
    /// `poll_ready` instead would close kube's buffer for good.)
    failed: Option<TokenError>,
}

impl<S, B> tower::Service<http::Request<B>> for Bearer<S>
where
    S: tower::Service<http::Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        if self.state.current(Instant::now()).is_none() {
            let source = &self.source;
            let refresh = self.refreshing.get_or_insert_with(|| source());
            let made = match refresh.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(made) => made,
            };
            self.refreshing = None;
            if let Err(e) = made.and_then(|token| self.state.store(&token, Instant::now())) {
                self.failed = Some(e);
                return Poll::Ready(Ok(()));
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(e) = self.failed.take() {
            return Box::pin(std::future::ready(Err(format!(
                "cannot make a cluster token: {e}"
            )
            .into())));
        }
        // `poll_ready` just stored a token; the reuse window only ends minutes later.
        if let Some((header, _)) = &self.state.held {
            req.headers_mut().insert(AUTHORIZATION, header.clone());
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tower::Layer as _;

    /// A real root certificate (ISRG Root X2, public), so that rustls accepts it as a root.
    const CERT_B64_BODY: &str =
        "MIICGzCCAaGgAwIBAgIQQdKd0XLq7qeAwSxs6S+HUjAKBggqhkjOPQQDAzBPMQsw\n\
CQYDVQQGEwJVUzEpMCcGA1UEChMgSW50ZXJuZXQgU2VjdXJpdHkgUmVzZWFyY2gg\n\
R3JvdXAxFTATBgNVBAMTDElTUkcgUm9vdCBYMjAeFw0yMDA5MDQwMDAwMDBaFw00\n\
MDA5MTcxNjAwMDBaME8xCzAJBgNVBAYTAlVTMSkwJwYDVQQKEyBJbnRlcm5ldCBT\n\
ZWN1cml0eSBSZXNlYXJjaCBHcm91cDEVMBMGA1UEAxMMSVNSRyBSb290IFgyMHYw\n\
EAYHKoZIzj0CAQYFK4EEACIDYgAEzZvVn4CDCuwJSvMWSj5cz3es3mcFDR0HttwW\n\
+1qLFNvicWDEukWVEYmO6gbf9yoWHKS5xcUy4APgHoIYOIvXRdgKam7mAHf7AlF9\n\
ItgKbppbd9/w+kHsOdx1ymgHDB/qo0IwQDAOBgNVHQ8BAf8EBAMCAQYwDwYDVR0T\n\
AQH/BAUwAwEB/zAdBgNVHQ4EFgQUfEKWrt5LSDv6kviejM9ti6lyN5UwCgYIKoZI\n\
zj0EAwMDaAAwZQIwe3lORlCEwkSHRhtFcP9Ymd70/aTSVaYgLXTWNLxBo1BfASdW\n\
tL4ndQavEi51mI38AjEAi/V3bNTIZargCyzuFJ0nN6T5U6VR5CmD1/iQMVtCnwr1\n\
/q4AaOeMSQ+2b1tbFfLn";
    /// Valid base64, not a certificate.
    const NOT_A_CERT: &str = "bm90IGEgY2VydGlmaWNhdGU=";

    fn pem(bodies: &[&str]) -> String {
        let text: String = bodies
            .iter()
            .map(|b| format!("-----BEGIN CERTIFICATE-----\n{b}\n-----END CERTIFICATE-----\n"))
            .collect();
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn ca_data_decodes_to_der_certificates() {
        let one = ca_certificates(&pem(&[CERT_B64_BODY])).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(
            one[0],
            base64::engine::general_purpose::STANDARD
                .decode(CERT_B64_BODY.replace('\n', ""))
                .unwrap()
        );
        // Wrapped at 76 columns the way EKS does is the same data.
        let wrapped = pem(&[CERT_B64_BODY]);
        let wrapped = format!("{}\n{}", &wrapped[..76], &wrapped[76..]);
        assert_eq!(ca_certificates(&wrapped).unwrap(), one);
        assert_eq!(
            ca_certificates(&pem(&[CERT_B64_BODY, CERT_B64_BODY]))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn bad_ca_data_is_refused_with_the_reason() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for (data, reason) in [
            ("%%%".to_string(), "not base64"),
            (b64("hello"), "no PEM certificate"),
            (b64("-----BEGIN CERTIFICATE-----\nAAAA\n"), "unterminated"),
            (
                b64("-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n"),
                "certificate 1",
            ),
            (
                b64("-----BEGIN CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n"),
                "unexpected",
            ),
        ] {
            let err = ca_certificates(&data).unwrap_err().to_string();
            assert!(err.contains(reason), "{data:?}: {err}");
        }
    }

    #[test]
    fn endpoints_must_be_https_urls() {
        let ca = pem(&[CERT_B64_BODY]);
        let cfg = config("https://abc.gr7.eu-west-1.eks.amazonaws.com", &ca).unwrap();
        assert_eq!(
            cfg.cluster_url.host(),
            Some("abc.gr7.eu-west-1.eks.amazonaws.com")
        );
        assert_eq!(cfg.root_cert.as_ref().map(Vec::len), Some(1));
        assert!(
            cfg.auth_info.token.is_none(),
            "credentials come from the token layer only"
        );
        for bad in ["", "http://plain.example", "not a url", "https://"] {
            assert!(
                matches!(config(bad, &ca), Err(ClientError::Endpoint { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn the_api_override_needs_an_https_endpoint_and_a_readable_ca_file() {
        assert_eq!(api_override_from(None, None).unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let text =
            format!("-----BEGIN CERTIFICATE-----\n{CERT_B64_BODY}\n-----END CERTIFICATE-----\n");
        std::fs::write(&ca, &text).unwrap();
        let got = api_override_from(Some("https://127.0.0.1:6443".into()), Some(ca.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(got.endpoint, "https://127.0.0.1:6443");
        assert_eq!(ca_certificates(&got.ca_data).unwrap().len(), 1);

        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        for (endpoint, file, want) in [
            ("https://127.0.0.1:6443", None, CA_FILE_ENV),
            (
                "https://127.0.0.1:6443",
                Some(dir.path().join("missing")),
                "cannot read",
            ),
            (
                "https://127.0.0.1:6443",
                Some(not_pem),
                "no PEM certificate",
            ),
            ("http://127.0.0.1:6443", Some(ca.clone()), API_ENV),
        ] {
            let err = api_override_from(Some(endpoint.into()), file).unwrap_err();
            assert!(matches!(err, ClientError::Override(_)), "{err:?}");
            assert!(err.to_string().contains(want), "{endpoint}: {err}");
        }
    }

    fn counting_source(count: Arc<AtomicUsize>) -> TokenSource {
        Arc::new(move || {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move { Ok(format!("k8s-aws-v1.token-{n}")) })
        })
    }

    #[test]
    fn a_token_is_current_until_it_is_ten_minutes_old() {
        let mut state = TokenState {
            reuse: TOKEN_REUSE,
            held: None,
        };
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert!(state.current(at(0)).is_none());
        state.store("one", at(0)).unwrap();
        assert_eq!(state.current(at(0)).unwrap(), "Bearer one");
        assert_eq!(state.current(at(599)).unwrap(), "Bearer one");
        assert!(state.current(at(600)).is_none());
        assert!(
            state.current(at(0)).unwrap().is_sensitive(),
            "kept out of debug logs"
        );
        assert!(state.store("line\nbreak", at(0)).is_err());
    }

    /// Records the `Authorization` header of each request it gets.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Option<String>>>>);

    impl tower::Service<http::Request<()>> for Recorder {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<()>) -> Self::Future {
            let auth = req
                .headers()
                .get(AUTHORIZATION)
                .map(|h| h.to_str().unwrap().to_string());
            self.0.lock().unwrap().push(auth);
            std::future::ready(Ok(()))
        }
    }

    async fn send<S>(svc: &mut S) -> Result<(), BoxError>
    where
        S: tower::Service<http::Request<()>, Response = (), Error = BoxError>,
    {
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
        let req = http::Request::builder()
            .header(AUTHORIZATION, "Bearer stale")
            .body(())
            .unwrap();
        svc.call(req).await
    }

    fn layer(source: TokenSource, reuse: Duration) -> BearerLayer {
        BearerLayer { source, reuse }
    }

    #[tokio::test]
    async fn every_request_carries_the_current_token_replacing_any_other() {
        let made = Arc::new(AtomicUsize::new(0));
        let recorder = Recorder::default();
        let mut svc = layer(counting_source(made.clone()), TOKEN_REUSE).layer(recorder.clone());
        for _ in 0..3 {
            send(&mut svc).await.unwrap();
        }
        let seen = recorder.0.lock().unwrap().clone();
        assert_eq!(seen, vec![Some("Bearer k8s-aws-v1.token-1".to_string()); 3]);
        assert_eq!(made.load(Ordering::SeqCst), 1, "one token for all three");

        // Once the reuse window is over, each request gets a new one.
        let mut svc = layer(counting_source(made.clone()), Duration::ZERO).layer(recorder.clone());
        send(&mut svc).await.unwrap();
        send(&mut svc).await.unwrap();
        let seen = recorder.0.lock().unwrap().clone();
        assert_eq!(
            seen[3..],
            [
                Some("Bearer k8s-aws-v1.token-2".into()),
                Some("Bearer k8s-aws-v1.token-3".into())
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_source_fails_one_request_and_is_asked_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let source: TokenSource = Arc::new(move || {
            let first = c.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if first {
                    Err("expired credentials".into())
                } else {
                    Ok("t".to_string())
                }
            })
        });
        let recorder = Recorder::default();
        let mut svc = layer(source, TOKEN_REUSE).layer(recorder.clone());
        let err = send(&mut svc).await.unwrap_err();
        assert!(err.to_string().contains("expired credentials"), "{err}");
        assert!(
            recorder.0.lock().unwrap().is_empty(),
            "nothing sent without a token"
        );
        send(&mut svc).await.unwrap();
        assert_eq!(
            recorder.0.lock().unwrap().clone(),
            [Some("Bearer t".to_string())]
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_client_builds_without_touching_the_network() {
        let source: TokenSource = Arc::new(|| panic!("no request is made while building"));
        let c = client(
            "https://example.eks.amazonaws.com",
            &pem(&[CERT_B64_BODY]),
            source.clone(),
        )
        .unwrap();
        assert_eq!(c.default_namespace(), "default");
        // A CA that is PEM but not a certificate fails here, not on the first request.
        let err = client(
            "https://example.eks.amazonaws.com",
            &pem(&[NOT_A_CERT]),
            source,
        )
        .err();
        assert!(matches!(err, Some(ClientError::Build(_))), "{err:?}");
    }
}
