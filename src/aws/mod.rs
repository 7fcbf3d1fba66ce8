//! The AWS side: one bundle of SDK clients, the call counter behind `--output json` and the
//! benchmarks, error classification, tags and polling.
//!
//! Stages call the SDK directly (the SDK is already the thin layer); what lives here is what
//! every stage needs the same way: "is this error a not-found?", "how do I tag this?", "wait
//! for this with back-off". The shared state store in S3 (`state`) lives here too: it is the
//! engine's state seam implemented with the S3 SDK.

pub mod account;
pub mod discover;
pub mod quotas;
pub mod state;
pub mod sweep;
pub mod tags;
pub mod teardown;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_ec2::config::retry::{RetryPartition, TokenBucket};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::config::Stack;
use crate::retry::Progress;
pub use crate::retry::{wait_for, Backoff};

/// The tag key that marks every AWS resource meshstack creates; its value is the stack name.
pub const STACK_TAG: &str = "meshstack.io/stack";
/// The tag key naming a resource's role in the stack (`subnet/private/us-east-1a`), so that
/// observation maps what it finds back to what the stack wants without the journal.
pub const RESOURCE_TAG: &str = "meshstack.io/resource";
/// The tag key holding when a stack may be removed (UTC, RFC 3339), on every resource of a
/// stack made with `--expires-in` or `expires_in:`; `meshstack reap` looks for it.
pub const EXPIRES_TAG: &str = "meshstack.io/expires-at";
/// The tag key naming the fleet (its stack file's `name`) an environment belongs to, so that
/// `meshstack fleet down` finds environments whose journal is gone.
pub const FLEET_TAG: &str = "meshstack.io/fleet";
/// On IAM roles (account-wide): the region whose stack owns them. IAM names are global, so a
/// stack name is per account; the same name in a second region is refused before any write,
/// and a teardown there leaves the roles alone (issue 21, item 3).
pub const REGION_TAG: &str = "meshstack.io/region";

/// All SDK clients a run needs, built from one shared configuration.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub ec2: aws_sdk_ec2::Client,
    pub eks: aws_sdk_eks::Client,
    /// Classic load balancers (the in-tree cloud provider's), found by the sweeps.
    pub elb: aws_sdk_elasticloadbalancing::Client,
    /// NLBs and ALBs (the AWS Load Balancer Controller's), found by the sweeps.
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub iam: aws_sdk_iam::Client,
    pub sts: aws_sdk_sts::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub region: String,
    pub calls: Arc<CallCounter>,
    /// The account's share of AWS's request rate limits, shared by every client made for it.
    throttling: Throttling,
    /// The credentials chain, for what signs its own requests (EKS tokens).
    pub credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    /// The configuration the clients were built from, for clients made later (Service
    /// Quotas) and for roles assumed from these credentials.
    pub sdk: aws_config::SdkConfig,
}

impl AwsClients {
    /// Build clients from the default chain (environment, profile, SSO, IMDS, ...), with the
    /// stack's region taking precedence. `AWS_ENDPOINT_URL` (moto, LocalStack) is honoured by
    /// the SDK itself.
    pub async fn from_env(region: Option<&str>) -> Result<(Self, aws_config::SdkConfig), String> {
        let sdk = sdk_loader(region).load().await;
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            "no AWS region: set `region:` in the stack file, AWS_REGION, or a profile region"
                .to_string()
        })?;
        let calls = Arc::new(CallCounter::default());
        Ok((
            Self::with_config(&sdk, region, calls, Throttling::default()),
            sdk,
        ))
    }

    /// Clients for another account (or the same one reached another way) from an already
    /// loaded configuration: a call counter and a share of the rate limits of their own.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, region: &str) -> Self {
        Self::with_config(
            sdk,
            region.to_string(),
            Arc::new(CallCounter::default()),
            Throttling::default(),
        )
    }

    /// Clients for the same account and region with a call counter of their own: one per
    /// environment of a fleet, so that each environment's calls are counted apart while they
    /// share the configuration, its connection pool and the account's throttling (AWS limits
    /// the request rate per account and region, not per environment).
    pub fn sibling(&self) -> Self {
        Self::with_config(
            &self.sdk,
            self.region.clone(),
            Arc::new(CallCounter::default()),
            self.throttling.clone(),
        )
    }

    /// The configuration of `base` with credentials from assuming `role_arn` (with
    /// `external_id` if given) through STS, refreshed as they expire. Nothing is called until
    /// the first request asks for credentials.
    pub async fn assume_role(
        base: &aws_config::SdkConfig,
        role_arn: &str,
        external_id: Option<&str>,
        session_name: &str,
    ) -> aws_config::SdkConfig {
        let mut builder = aws_config::sts::AssumeRoleProvider::builder(role_arn)
            .session_name(session_name)
            .configure(base);
        if let Some(id) = external_id {
            builder = builder.external_id(id);
        }
        let provider = builder.build().await;
        base.to_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build()
    }

    fn with_config(
        sdk: &aws_config::SdkConfig,
        region: String,
        calls: Arc<CallCounter>,
        throttling: Throttling,
    ) -> Self {
        let counter = CountingInterceptor(calls.clone());
        macro_rules! client {
            ($krate:ident, $service:ident) => {
                $krate::Client::from_conf(
                    $krate::config::Builder::from(sdk)
                        .interceptor(counter.clone())
                        .retry_classifier(NoRetryWhenRefused)
                        .retry_partition(throttling.$service.clone())
                        .build(),
                )
            };
        }
        AwsClients {
            ec2: client!(aws_sdk_ec2, ec2),
            eks: client!(aws_sdk_eks, eks),
            elb: client!(aws_sdk_elasticloadbalancing, elb),
            elbv2: client!(aws_sdk_elasticloadbalancingv2, elbv2),
            iam: client!(aws_sdk_iam, iam),
            sts: client!(aws_sdk_sts, sts),
            sqs: client!(aws_sdk_sqs, sqs),
            events: client!(aws_sdk_eventbridge, events),
            region,
            calls,
            throttling,
            credentials: sdk.credentials_provider(),
            sdk: sdk.clone(),
        }
    }
}

/// One account's retry partitions, one per service: AWS throttles per account and region, so
/// every client of one account shares one `Throttling` (a fleet's environments:
/// [`AwsClients::sibling`]) and another account gets its own, where the SDK would put every
/// client of the process in one partition per service.
///
/// The partitions' retry quota is unlimited. The SDK's default (a bucket of 500 tokens, 5 per
/// retried throttle, shared by the partition) is meant to fail fast under a broad outage;
/// shared by a fleet whose account EC2 throttles, it ran dry within seconds and failed calls
/// that waiting would have carried through (`fleet` test
/// `a_fleet_throttled_by_its_accounts_request_buckets_still_finishes_every_environment`).
/// Each call is still bounded by [`MAX_ATTEMPTS`].
///
/// Not the SDK's adaptive mode: its client-side limiter slows every call of the service down
/// to as little as one every two seconds after throttling it cannot attribute to the rate
/// (the 30% throttling scenario took 14 times as long), where more attempts cost nothing
/// while AWS does not throttle.
#[derive(Clone, Debug)]
struct Throttling {
    ec2: RetryPartition,
    eks: RetryPartition,
    elb: RetryPartition,
    elbv2: RetryPartition,
    iam: RetryPartition,
    sts: RetryPartition,
    sqs: RetryPartition,
    events: RetryPartition,
}

impl Default for Throttling {
    fn default() -> Self {
        let partition = |service: &'static str| {
            RetryPartition::custom(format!("meshstack-{service}"))
                .token_bucket(TokenBucket::unlimited())
                .build()
        };
        Throttling {
            ec2: partition("ec2"),
            eks: partition("eks"),
            elb: partition("elb"),
            elbv2: partition("elbv2"),
            iam: partition("iam"),
            sts: partition("sts"),
            sqs: partition("sqs"),
            events: partition("events"),
        }
    }
}

/// The HTTP client of every AWS SDK client meshstack makes (and of the credential providers
/// behind them: SSO, STS, instance metadata): the SDK's own hyper client, built the way its
/// default is — connector settings, sleep, proxy from the environment (`HTTPS_PROXY`,
/// `NO_PROXY`) — with rustls on ring instead of aws-lc, the one TLS provider in the tree.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::{tls, Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, runtime_components| {
        let mut conn_builder = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ));
        conn_builder.set_connector_settings(settings.cloned());
        if let Some(components) = runtime_components {
            conn_builder.set_sleep_impl(components.sleep_impl());
        }
        conn_builder.set_proxy_config(Some(ProxyConfig::from_env()));
        conn_builder.build()
    })
}

/// `aws_config::defaults` with meshstack's [`http_client`]: the start of every SDK
/// configuration, in the binary and in the tests.
pub fn sdk_defaults() -> aws_config::ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(http_client())
}

/// The SDK's configuration loader as every meshstack client uses it: the default chain
/// (environment, profile, SSO, IMDS, ...), `region` taking precedence, and more patient retries.
pub(crate) fn sdk_loader(region: Option<&str>) -> aws_config::ConfigLoader {
    let mut loader = sdk_defaults();
    // The SDK's default of 3 attempts gives up on a throttled call within about 2 s; one
    // `up` makes a few hundred calls, and accounts shared by a workshop get throttled (see
    // `MAX_ATTEMPTS`). The environment's AWS_MAX_ATTEMPTS / AWS_RETRY_MODE still win.
    if std::env::var_os("AWS_MAX_ATTEMPTS").is_none()
        && std::env::var_os("AWS_RETRY_MODE").is_none()
    {
        loader = loader.retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_secs(1) / wait_scale())
                .with_max_backoff(MAX_BACKOFF / wait_scale()),
        );
    }
    // The SDK waits forever for an answer by default; an endpoint that accepts and never
    // answers would hang the run. No AWS control-plane call takes a minute per attempt, and
    // none, retries included, ten minutes.
    loader = loader.timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build(),
    );
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    loader
}

/// Divides every poll interval, deadline and retry back-off by N: for benchmarks and tests
/// that replay AWS's real timings scaled down by the same factor (`scripts/bench`).
pub const WAIT_SCALE_ENV: &str = "MESHSTACK_WAIT_SCALE";

/// The factor in [`WAIT_SCALE_ENV`], 1 unless it holds a whole number above 1.
pub fn wait_scale() -> u32 {
    std::env::var(WAIT_SCALE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// How long one attempt of an AWS call may take before it is abandoned (and retried).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one AWS call may take in all, its retries included: an endpoint that accepts and
/// never answers fails the call after this, however many attempts are left.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Attempts per AWS call before its error is final (throttling and 5xx are retried, with the
/// SDK's jittered exponential back-off, capped at [`MAX_BACKOFF`] between attempts): about
/// four minutes of patience, the Terraform AWS provider's convention. A workshop fleet of 30
/// in one account makes some 1,200 mutating EC2 calls at once, and EC2 refills its bucket for
/// them at 5 a second: minutes of throttling, that 10 attempts (about a minute) did not outlast.
pub const MAX_ATTEMPTS: u32 = 25;

/// The longest back-off between two attempts of a call (the SDK's default).
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// Counts API calls (every attempt, retries included), split into reads and writes by
/// operation name, so that "a converged `up` makes no mutating call" can be shown, not assumed.
#[derive(Debug, Default)]
pub struct CallCounter {
    reads: AtomicU64,
    writes: AtomicU64,
    /// Calls made (each counted once however many attempts it took).
    calls: AtomicU64,
    by_operation: Mutex<BTreeMap<String, u64>>,
}

/// A snapshot of [`CallCounter`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallStats {
    pub reads: u64,
    pub writes: u64,
    /// Attempts beyond each call's first: throttled or failed attempts the SDK retried.
    pub retries: u64,
    /// `service:Operation` -> count; writes only, so that a surprise write is easy to name.
    pub writes_by_operation: BTreeMap<String, u64>,
}

impl CallCounter {
    fn record(&self, service: &str, operation: &str) {
        if is_read_operation(operation) {
            self.reads.fetch_add(1, Ordering::Relaxed);
        } else {
            self.writes.fetch_add(1, Ordering::Relaxed);
            let mut map = self.by_operation.lock().unwrap_or_else(|e| e.into_inner());
            *map.entry(format!("{service}:{operation}")).or_default() += 1;
        }
    }

    pub fn snapshot(&self) -> CallStats {
        let reads = self.reads.load(Ordering::Relaxed);
        let writes = self.writes.load(Ordering::Relaxed);
        CallStats {
            reads,
            writes,
            retries: (reads + writes).saturating_sub(self.calls.load(Ordering::Relaxed)),
            writes_by_operation: self
                .by_operation
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Whether an AWS operation only reads. AWS names its read operations consistently.
pub fn is_read_operation(operation: &str) -> bool {
    const READ_PREFIXES: &[&str] = &["Describe", "Get", "List", "Lookup"];
    READ_PREFIXES.iter().any(|p| operation.starts_with(p))
}

/// Refuses to retry an attempt whose connection was refused: nothing listens at the endpoint
/// (a wrong `AWS_ENDPOINT_URL`, an emulator not started), and [`MAX_ATTEMPTS`] with back-off
/// would only make the user wait minutes for the same answer.
#[derive(Debug, Clone, Copy)]
struct NoRetryWhenRefused;

impl ClassifyRetry for NoRetryWhenRefused {
    fn name(&self) -> &'static str {
        "meshstack-no-retry-when-refused"
    }

    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(err)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let Some(connector) = err.as_connector_error() else {
            return RetryAction::NoActionIndicated;
        };
        if connection_refused(connector) {
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }
}

/// Whether `err`, or an error it wraps, is an I/O "connection refused".
fn connection_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Counts every call of the client it is added to in a [`CallCounter`].
#[derive(Debug, Clone)]
pub(crate) struct CountingInterceptor(pub(crate) Arc<CallCounter>);

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "meshstack-call-counter"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(meta) = cfg.load::<Metadata>() {
            self.0.record(meta.service(), meta.name());
        }
        Ok(())
    }
}

/// An AWS call that failed, with the operation named (the SDK's own messages often are not).
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct AwsError {
    pub operation: &'static str,
    /// The AWS error code (`DependencyViolation`, `NoSuchEntity`, ...), when the service sent one.
    pub code: Option<String>,
    pub message: String,
}

impl AwsError {
    pub fn new(operation: &'static str, code: Option<String>, message: impl Into<String>) -> Self {
        AwsError {
            operation,
            code,
            message: message.into(),
        }
    }

    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// Converts any SDK error into an [`AwsError`] naming the operation.
pub fn sdk_err<E, R>(
    operation: &'static str,
) -> impl FnOnce(aws_sdk_ec2::error::SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    move |err| {
        let code = err.code().map(str::to_string);
        let message = match (&code, err.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.clone(),
            _ if connection_refused(&err) => {
                let endpoint = std::env::var("AWS_ENDPOINT_URL")
                    .map(|e| format!(" at {e} (AWS_ENDPOINT_URL)"))
                    .unwrap_or_default();
                format!(
                    "connection refused: nothing answers{endpoint}; check the endpoint and \
                     your network (not retried)"
                )
            }
            _ => aws_sdk_ec2::error::DisplayErrorContext(&err).to_string(),
        };
        AwsError::new(operation, code, message)
    }
}

/// What meshstack makes of an SDK call's answer, with the operation named in the error.
pub trait Answer<T> {
    /// The output is not needed: `Ok(())`, or the error.
    fn ack(self, operation: &'static str) -> Result<(), AwsError>;
    /// A lookup: `None` when AWS says it is not there ([`optional`]).
    fn lookup(self, operation: &'static str) -> Result<Option<T>, AwsError>;
    /// A delete: `Ok` also when what it deletes was not there (gone already).
    fn gone(self, operation: &'static str) -> Result<(), AwsError>;
}

impl<T, E, R> Answer<T> for Result<T, aws_sdk_ec2::error::SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    fn ack(self, operation: &'static str) -> Result<(), AwsError> {
        self.map(|_| ()).map_err(sdk_err(operation))
    }

    fn lookup(self, operation: &'static str) -> Result<Option<T>, AwsError> {
        optional(self.map_err(sdk_err(operation)))
    }

    fn gone(self, operation: &'static str) -> Result<(), AwsError> {
        self.lookup(operation).map(|_| ())
    }
}

/// Error codes that mean "it is not there" across the services meshstack uses.
pub fn is_not_found(err: &AwsError) -> bool {
    match err.code.as_deref() {
        Some(code) => {
            code.ends_with(".NotFound")
                || code.ends_with("NotFound")
                || matches!(
                    code,
                    "NoSuchEntity"
                        | "ResourceNotFoundException"
                        | "AWS.SimpleQueueService.NonExistentQueue"
                        | "QueueDoesNotExist"
                        | "NotFoundException"
                )
        }
        None => false,
    }
}

/// `Ok(None)` for a not-found answer, so observations read as `find_*` -> `Option`.
pub fn optional<T>(res: Result<T, AwsError>) -> Result<Option<T>, AwsError> {
    match res {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The tags every resource of a stack carries: the stack tag, `Name`, the resource key and the
/// user's extra tags.
pub fn resource_tags(stack: &Stack, key: &str, name: &str) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = stack
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.push((STACK_TAG.to_string(), stack.name.clone()));
    tags.push((RESOURCE_TAG.to_string(), key.to_string()));
    tags.push(("Name".to_string(), name.to_string()));
    tags
}

/// Retry `op` while AWS answers one of `codes` (like `DependencyViolation` while a VPC's parts
/// let go), with back-off until the deadline, saying each retry and its reason on `progress`.
///
/// # Errors
/// Any other error at once; one of `codes` once the back-off's deadline has passed.
pub async fn retry_codes<T, F, Fut>(
    backoff: Backoff,
    codes: &[&str],
    progress: &dyn Progress,
    what: &str,
    op: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AwsError>>,
{
    let retryable = |e: &AwsError| e.code.clone().filter(|c| codes.contains(&c.as_str()));
    crate::retry::retry_while(backoff, retryable, progress, what, op).await
}

/// Decode the percent-encoding IAM applies to policy documents it returns.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Two JSON documents (policies, event patterns) are the same if they parse to equal values;
/// key order and whitespace don't matter. IAM may also return them percent-encoded.
pub fn same_json(have: &str, want: &serde_json::Value) -> bool {
    let decoded;
    let text = if have.trim_start().starts_with('%') || have.contains("%22") {
        decoded = percent_decode(have);
        decoded.as_str()
    } else {
        have
    };
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| normalize_json(v) == normalize_json(want.clone()))
        .unwrap_or(false)
}

/// IAM accepts a single string where a list of one is meant, and returns either; compare them
/// as equal.
fn normalize_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Array(items) if items.len() == 1 => {
            normalize_json(items.into_iter().next().expect("len 1"))
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_json).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, normalize_json(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint that refuses connections is tried once, not ten times with back-off; other
    /// connection failures keep the SDK's retries.
    #[tokio::test]
    async fn a_refused_connection_is_not_retried() {
        // A port that was free a moment ago: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sdk = sdk_defaults()
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "x", "x", None, None, "test",
            ))
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(1)),
            )
            .load()
            .await;
        let calls = Arc::new(CallCounter::default());
        let aws = AwsClients::with_config(
            &sdk,
            "us-east-1".into(),
            calls.clone(),
            Throttling::default(),
        );
        let err = aws
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(sdk_err("sts:GetCallerIdentity"))
            .unwrap_err();
        assert!(err.message.contains("connection refused"), "{err}");
        assert_eq!(
            calls.snapshot().reads,
            1,
            "attempts: {:?}",
            calls.snapshot()
        );

        // The same client without the classifier makes all three attempts.
        let plain = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&sdk)
                .interceptor(CountingInterceptor(calls.clone()))
                .build(),
        );
        let _ = plain.get_caller_identity().send().await;
        assert_eq!(calls.snapshot().reads, 1 + 3, "{:?}", calls.snapshot());
    }

    #[test]
    fn read_operations_are_classified() {
        for (op, read) in [
            ("DescribeVpcs", true),
            ("GetRole", true),
            ("ListAttachedRolePolicies", true),
            ("CreateVpc", false),
            ("ModifyVpcAttribute", false),
            ("PutRule", false),
            ("TagResource", false),
            ("AssumeRole", false),
        ] {
            assert_eq!(is_read_operation(op), read, "{op}");
        }
    }

    #[test]
    fn json_comparison_ignores_order_encoding_and_singletons() {
        let want = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["sts:AssumeRole"]}]});
        assert!(same_json(
            r#"{"Statement":[{"Action":"sts:AssumeRole","Effect":"Allow"}],"Version":"2012-10-17"}"#,
            &want
        ));
        assert!(same_json(
            "%7B%22Statement%22%3A%5B%7B%22Action%22%3A%22sts%3AAssumeRole%22%2C%22Effect%22%3A%22Allow%22%7D%5D%2C%22Version%22%3A%222012-10-17%22%7D",
            &want
        ));
        assert!(!same_json(
            r#"{"Statement":[],"Version":"2012-10-17"}"#,
            &want
        ));
    }

    #[test]
    fn not_found_codes() {
        for (code, nf) in [
            ("InvalidVpcID.NotFound", true),
            ("NoSuchEntity", true),
            ("ResourceNotFoundException", true),
            ("AWS.SimpleQueueService.NonExistentQueue", true),
            ("DependencyViolation", false),
            ("AccessDenied", false),
        ] {
            let e = AwsError::new("Op", Some(code.to_string()), "m");
            assert_eq!(is_not_found(&e), nf, "{code}");
        }
    }
}
