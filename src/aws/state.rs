//! Shared state in S3: one stack's journal and lock under `s3://BUCKET/PREFIX/<stack>/`, for
//! teams that build an environment on one machine and repair or tear it down from another.
//!
//! - **Lock** `lock.json`: created with `PutObject` + `If-None-Match: *`, so exactly one
//!   creator wins. It names its holder (lock ID, caller ARN, host, pid, command, start) and a
//!   lease that a background task renews (`If-Match` on the lock's ETag) while the run goes
//!   on. A lock whose lease has ended is stale; `--force-unlock LOCK_ID` removes it only if the
//!   ID matches, with `If-Match` on the ETag just read, so a lock taken in between survives.
//! - **Journal** `state.json`: every write is a `PutObject` with `If-Match` on the ETag of the
//!   version last read or written (`If-None-Match: *` for the first). A mismatch writes
//!   nothing and is reported by the engine as a conflict naming both writers.
//! - Objects are written with server-side encryption: SSE-S3 unless a KMS key is given.
//!
//! The engine's store seam is synchronous, and the journal is written from inside the stages'
//! calls; so this store owns a small runtime of its own (one worker thread) on which every S3
//! request and the lease renewal run. A caller blocks for the one request it makes (a few
//! milliseconds to S3); the renewal never waits for the caller's runtime, however busy.
//!
//! The bucket itself is never created or deleted by `up` or `down`: [`S3Store::init_bucket`]
//! (`meshstack state init`) does that once.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, ServerSideEncryption};
use aws_smithy_runtime_api::http::Response as HttpResponse;

use crate::aws::{sdk_loader, wait_scale, CallCounter, CallStats, CountingInterceptor};
use crate::config::S3Location;
use crate::engine::state::{LockGuard, LockInfo, StateError, StateStore, Unlock};
use crate::engine::store::{unix_now_ms, HeldLock, Stored, Written};

/// The journal's object name under the stack's prefix.
pub const JOURNAL_OBJECT: &str = "state.json";
/// The lock's object name under the stack's prefix.
pub const LOCK_OBJECT: &str = "lock.json";
/// How long a lock lives without renewal (divided by `MESHSTACK_WAIT_SCALE`). Two minutes
/// ride out a few failed renewals and a laptop's short sleep; a killed run's lock is stale
/// that long after its last renewal.
pub const LEASE: Duration = Duration::from_secs(120);
/// How often the holder renews its lease (divided by `MESHSTACK_WAIT_SCALE`).
pub const RENEW_EVERY: Duration = Duration::from_secs(30);
/// The tag `state init` puts on the bucket.
pub const PURPOSE_TAG: (&str, &str) = ("meshstack.io/purpose", "state");
/// Longest a single S3 request attempt may take before it is retried (at most the operation's
/// timeout, [`request_timeouts`]).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// `(attempt, operation)` timeouts of every S3 request for a lease of `lease`: one request,
/// its retries included, takes at most half the lease, so that a renewal stuck in back-off
/// (AWS calls may retry for minutes, `aws::MAX_ATTEMPTS`) gives up, and says so, while the
/// lease still holds. Scaled with the lease (`MESHSTACK_WAIT_SCALE`), so the tests' short
/// leases keep the same guarantee.
pub fn request_timeouts(lease: Duration) -> (Duration, Duration) {
    let operation = lease / 2;
    (ATTEMPT_TIMEOUT.min(operation), operation)
}

/// A runtime that shuts down in the background when dropped.
struct BackgroundDrop(Option<tokio::runtime::Runtime>);

impl BackgroundDrop {
    fn take(mut self) -> Option<tokio::runtime::Runtime> {
        self.0.take()
    }
}

impl std::ops::Deref for BackgroundDrop {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("taken only when the store is built")
    }
}

impl Drop for BackgroundDrop {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The account in an ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:...`).
fn account_of(arn: &str) -> Option<&str> {
    arn.split(':')
        .nth(4)
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
}

/// Adds `x-amz-expected-bucket-owner` to every S3 request but `CreateBucket` (which has no
/// such parameter): S3 answers 403 when another account owns the bucket, so the journal and
/// lock never go to a bucket someone else created under the expected name ("Verifying bucket
/// ownership with bucket owner condition", Amazon S3 User Guide).
#[derive(Debug, Clone)]
struct ExpectedOwner(String);

impl aws_smithy_runtime_api::client::interceptors::Intercept for ExpectedOwner {
    fn name(&self) -> &'static str {
        "meshstack-expected-bucket-owner"
    }

    fn modify_before_signing(
        &self,
        context: &mut aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use aws_smithy_runtime_api::client::orchestrator::Metadata;
        if cfg.load::<Metadata>().map(Metadata::name) != Some("CreateBucket") {
            context
                .request_mut()
                .headers_mut()
                .insert("x-amz-expected-bucket-owner", self.0.clone());
        }
        Ok(())
    }
}

/// How state objects are encrypted at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-S3 (AES256 with S3's own keys): the default.
    S3,
    /// SSE-KMS with this key (ID, ARN or alias).
    Kms(String),
}

/// A bucket's versioning, as `GetBucketVersioning` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// On: every overwritten or deleted journal stays as an older version.
    Enabled,
    /// Was on, now suspended.
    Suspended,
    /// Never turned on.
    Off,
}

/// One stack's state in an S3 prefix. See the module documentation.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.location())
            .finish()
    }
}

struct Inner {
    /// The store's own runtime; taken (and shut down in the background) on drop, which is
    /// allowed from inside another runtime.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    s3: aws_sdk_s3::Client,
    sts: aws_sdk_sts::Client,
    bucket: String,
    region: String,
    /// `PREFIX/<stack>/`
    stack_prefix: String,
    encryption: Encryption,
    calls: Arc<CallCounter>,
    lease: Duration,
    renew_every: Duration,
    /// The lock this process holds, if any.
    held: Mutex<Option<Lease>>,
    /// The caller's ARN, looked up once.
    who: Mutex<Option<Option<String>>>,
    /// The account every request expects to own the bucket.
    owner: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let runtime = self
            .runtime
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rt) = runtime {
            rt.shutdown_background();
        }
    }
}

/// The lock as this process last wrote it.
#[derive(Debug, Clone)]
struct Lease {
    etag: String,
    info: LockInfo,
    /// Why the lock is no longer ours, once it is not.
    lost: Option<String>,
    renewer: Option<tokio::task::AbortHandle>,
}

/// A failed S3 request, classified.
#[derive(Debug)]
struct Fail {
    status: Option<u16>,
    code: Option<String>,
    message: String,
    /// The answer's body, when it was read.
    body: Option<String>,
}

impl Fail {
    fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Fail
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let body = err
            .raw_response()
            .and_then(|r| r.body().bytes())
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let code = err.code().map(str::to_string);
        let message = match (&code, err.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.clone(),
            // An answer without an error code (or one the SDK could not parse): the status
            // says enough; the SDK's full context would dump the raw response.
            _ => match status {
                Some(s) => format!("HTTP {s}, an answer the AWS SDK could not read"),
                None => DisplayErrorContext(&err).to_string(),
            },
        };
        Fail {
            status,
            code,
            message,
            body,
        }
    }

    fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// `If-Match` / `If-None-Match` did not hold.
    fn precondition(&self) -> bool {
        self.status == Some(412) || self.is("PreconditionFailed")
    }

    /// Another conditional write to the same key is in flight.
    fn in_progress(&self) -> bool {
        self.status == Some(409) && !self.is("BucketAlreadyOwnedByYou")
            || self.is("ConditionalRequestConflict")
    }

    /// The versioning status in a 200 answer to `GetBucketVersioning` the SDK could not
    /// parse: S3-compatible servers (moto) name the root element differently from S3's
    /// `VersioningConfiguration`; the `Status` element is the same.
    fn versioning_in_body(&self) -> Option<Versioning> {
        if self.status != Some(200) || self.code.is_some() {
            return None;
        }
        let body = self.body.as_deref()?;
        Some(if body.contains("<Status>Enabled</Status>") {
            Versioning::Enabled
        } else if body.contains("<Status>Suspended</Status>") {
            Versioning::Suspended
        } else {
            Versioning::Off
        })
    }

    fn not_found(&self) -> bool {
        self.is("NoSuchKey")
            || self.is("NotFound")
            || (self.status == Some(404) && !self.is("NoSuchBucket"))
    }
}

/// Runs `fut` on `handle`'s runtime and waits for it from this thread, whatever runtime (if
/// any) this thread belongs to. Inside a multi-thread runtime the wait is announced with
/// `block_in_place`, so that runtime moves its other tasks elsewhere meanwhile.
fn block_on<F, T>(handle: &tokio::runtime::Handle, fut: F) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let join = handle.spawn(fut);
    let wait = move || match futures::executor::block_on(join) {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("state request task cancelled: {e}"),
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

impl S3Store {
    /// Clients for the state under `loc` of stack `stack`. Makes no request to S3: the bucket
    /// is first touched by [`S3Store::versioning`], the lock or the journal. The bucket's
    /// region is `?region=` of the URL, else `stack_region`, else the environment's.
    ///
    /// # Errors
    /// [`StateError::Remote`] when there is no region or no credentials.
    pub fn open(
        loc: &S3Location,
        stack: &str,
        stack_region: Option<&str>,
        encryption: Encryption,
    ) -> Result<S3Store, StateError> {
        let url = loc.url_of(&loc.key(stack, ""));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("meshstack-state")
            .enable_all()
            .build()
            .map_err(|e| StateError::Remote {
                action: "start the runtime for",
                location: url.clone(),
                detail: e.to_string(),
            })?;
        // Dropped on an early return, the runtime shuts down without blocking (a blocking
        // drop panics inside the caller's runtime).
        let runtime = BackgroundDrop(Some(runtime));
        let handle = runtime.handle().clone();
        let region = loc.region.clone().or(stack_region.map(str::to_string));
        let sdk = block_on(&handle, async move {
            sdk_loader(region.as_deref()).load().await
        });
        let remote = |detail: String| StateError::Remote {
            action: "reach",
            location: url.clone(),
            detail,
        };
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            remote(
                "no AWS region for the state bucket: add ?region=REGION to the state URL, set \
                 `region:` in the stack file, or AWS_REGION"
                    .into(),
            )
        })?;
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| remote("no AWS credentials provider configured".into()))?;
        let found = block_on(&handle, async move {
            tokio::time::timeout(Duration::from_secs(5), provider.provide_credentials()).await
        });
        if !matches!(found, Ok(Ok(_))) {
            return Err(remote(
                "no AWS credentials found (environment, profile, SSO, container or instance \
                 metadata); state in S3 needs them, even for `status`"
                    .into(),
            ));
        }
        let calls = Arc::new(CallCounter::default());
        let counter = CountingInterceptor(calls.clone());
        let scale = wait_scale();
        let lease = LEASE / scale;
        let (attempt, operation) = request_timeouts(lease);
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(attempt)
            .operation_timeout(operation)
            .build();
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .timeout_config(timeouts.clone())
                .build(),
        );
        // Whose bucket it must be: `?owner=`, else the caller's own account.
        let (owner, who) = match &loc.owner {
            Some(owner) => (owner.clone(), None),
            None => {
                let caller = block_on(&handle, {
                    let sts = sts.clone();
                    async move { sts.get_caller_identity().send().await }
                });
                let (arn, error) = match caller {
                    Ok(out) => (out.arn().map(str::to_string), None),
                    Err(e) => (None, Some(Fail::from_sdk(e).message)),
                };
                let Some(account) = arn.as_deref().and_then(account_of) else {
                    return Err(remote(format!(
                        "could not learn your AWS account, which the state bucket must belong \
                         to (STS GetCallerIdentity: {}); check the credentials, or name the \
                         bucket's account with ?owner=ACCOUNT in the state URL",
                        error.unwrap_or_else(|| "no ARN in the answer".into())
                    )));
                };
                (account.to_string(), Some(arn))
            }
        };
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .interceptor(ExpectedOwner(owner.clone()))
                .timeout_config(timeouts)
                // Emulators (moto, LocalStack, MinIO) behind AWS_ENDPOINT_URL do not resolve
                // bucket host names.
                .force_path_style(sdk.endpoint_url().is_some())
                // A checksum only where S3 demands one: plain bodies, which every S3 and
                // emulator reads the same way.
                .request_checksum_calculation(
                    aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                )
                .response_checksum_validation(
                    aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
                )
                .build(),
        );
        Ok(S3Store {
            inner: Arc::new(Inner {
                runtime: Mutex::new(runtime.take()),
                handle,
                s3,
                sts,
                bucket: loc.bucket.clone(),
                region,
                stack_prefix: loc.key(stack, ""),
                encryption,
                calls,
                lease,
                renew_every: RENEW_EVERY / scale,
                held: Mutex::new(None),
                who: Mutex::new(who),
                owner,
            }),
        })
    }

    /// The requests this store has made (every attempt, retries included).
    pub fn calls(&self) -> CallStats {
        self.inner.calls.snapshot()
    }

    /// The bucket's region (where requests go).
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The bucket's versioning.
    ///
    /// # Errors
    /// [`StateError::Remote`], naming `meshstack state init` when the bucket does not exist.
    pub fn versioning(&self) -> Result<Versioning, StateError> {
        let inner = self.inner.clone();
        let bucket = inner.bucket.clone();
        let res = block_on(&self.inner.handle, async move {
            inner.s3.get_bucket_versioning().bucket(bucket).send().await
        });
        match res.map_err(Fail::from_sdk) {
            Ok(out) => Ok(match out.status() {
                Some(BucketVersioningStatus::Enabled) => Versioning::Enabled,
                Some(BucketVersioningStatus::Suspended) => Versioning::Suspended,
                _ => Versioning::Off,
            }),
            Err(f) => match f.versioning_in_body() {
                Some(v) => Ok(v),
                None => Err(self.bucket_error("read the versioning of", f)),
            },
        }
    }

    fn bucket_error(&self, action: &'static str, fail: Fail) -> StateError {
        let detail = if fail.is("NoSuchBucket") {
            format!(
                "{}; create it with `meshstack state init s3://{}/` (or check the bucket name \
                 and the region, {})",
                fail.message, self.inner.bucket, self.inner.region
            )
        } else if fail.is("PermanentRedirect") || fail.status == Some(301) {
            format!(
                "{}; the bucket is in another region than {}: add ?region=REGION to the state URL",
                fail.message, self.inner.region
            )
        } else if fail.status == Some(403) {
            format!(
                "{}; every request expects the bucket to belong to account {} (S3 refuses it \
                 when another account owns it): if the bucket is in an account you trust, \
                 name it with ?owner=ACCOUNT in the state URL",
                fail.message, self.inner.owner
            )
        } else {
            fail.message
        };
        StateError::Remote {
            action,
            location: format!("bucket {}", self.inner.bucket),
            detail,
        }
    }

    fn url(&self, object: &str) -> String {
        format!(
            "s3://{}/{}{object}",
            self.inner.bucket, self.inner.stack_prefix
        )
    }

    /// Creates the state bucket if it is missing and makes sure of its settings: versioning
    /// on, every public access blocked, default encryption, and the [`PURPOSE_TAG`] plus
    /// `tags`. What exists already is kept (an existing default encryption is never
    /// replaced). Returns one line per setting saying what was done.
    ///
    /// # Errors
    /// [`StateError::Remote`] for a name another account owns, or a refused request.
    pub fn init_bucket(&self, tags: &[(String, String)]) -> Result<Vec<String>, StateError> {
        let inner = self.inner.clone();
        let tags = tags.to_vec();
        block_on(
            &self.inner.handle,
            async move { inner.init_bucket(tags).await },
        )
        .map_err(|(action, fail)| self.bucket_error(action, fail))
    }

    /// Runs an async step on the store's runtime and waits for it.
    fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        block_on(&self.inner.handle, f(self.inner.clone()))
    }
}

impl Inner {
    fn key(&self, object: &str) -> String {
        format!("{}{object}", self.stack_prefix)
    }

    async fn get(&self, object: &str) -> Result<Option<Stored>, Fail> {
        let res = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(object))
            .send()
            .await;
        match res {
            Ok(out) => {
                let version = out.e_tag().map(str::to_string);
                let body = out.body.collect().await.map_err(|e| Fail {
                    status: None,
                    code: None,
                    message: format!("reading the object's body: {e}"),
                    body: None,
                })?;
                Ok(Some(Stored {
                    body: body.into_bytes().to_vec(),
                    version,
                }))
            }
            Err(e) => {
                let fail = Fail::from_sdk(e);
                if fail.not_found() {
                    Ok(None)
                } else {
                    Err(fail)
                }
            }
        }
    }

    /// A conditional put: `If-Match: etag`, or `If-None-Match: *` without one. The new ETag.
    async fn put(
        &self,
        object: &str,
        body: Vec<u8>,
        if_match: Option<&str>,
    ) -> Result<String, Fail> {
        let mut req = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(object))
            .content_type("application/json")
            .body(ByteStream::from(body));
        req = match if_match {
            Some(etag) => req.if_match(etag),
            None => req.if_none_match("*"),
        };
        req = match &self.encryption {
            Encryption::S3 => req.server_side_encryption(ServerSideEncryption::Aes256),
            Encryption::Kms(key) => req
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(key),
        };
        match req.send().await {
            Ok(out) => Ok(out.e_tag().unwrap_or_default().to_string()),
            Err(e) => Err(Fail::from_sdk(e)),
        }
    }

    async fn delete(&self, object: &str, if_match: Option<&str>) -> Result<(), Fail> {
        let mut req = self
            .s3
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(object));
        if let Some(etag) = if_match {
            req = req.if_match(etag);
        }
        req.send().await.map(|_| ()).map_err(Fail::from_sdk)
    }

    async fn who(&self) -> Option<String> {
        if let Some(who) = self.who.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return who;
        }
        let who = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .ok()
            .and_then(|o| o.arn().map(str::to_string));
        *self.who.lock().unwrap_or_else(|e| e.into_inner()) = Some(who.clone());
        who
    }

    fn lease_end(&self) -> u64 {
        let end_ms = unix_now_ms() + self.lease.as_millis();
        // Whole seconds, rounded up: a lease never ends before it should.
        end_ms.div_ceil(1000) as u64
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Lease>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes the held lease forward, `If-Match` on the lock's ETag. A lock that is no longer
    /// ours (replaced, removed) marks the lease lost; any other failure only does once the
    /// lease has ended without a renewal.
    async fn renew(&self) {
        let Some(lease) = self.held().clone() else {
            return;
        };
        if lease.lost.is_some() {
            return;
        }
        let mut info = lease.info.clone();
        info.lease_expires_at = Some(self.lease_end());
        let body = serde_json::to_vec_pretty(&info).expect("a LockInfo always serializes");
        let mut res = self.put(LOCK_OBJECT, body, Some(&lease.etag)).await;
        if matches!(&res, Err(f) if f.precondition()) {
            // A renewal whose answer was lost (a timeout after S3 applied it) leaves the lock
            // ours under an ETag we never saw: the lock ID, unique to this run, tells.
            if let Ok(Some(stored)) = self.get(LOCK_OBJECT).await {
                let still_ours = serde_json::from_slice::<LockInfo>(&stored.body)
                    .is_ok_and(|seen| seen.id == lease.info.id);
                if let (true, Some(etag)) = (still_ours, stored.version) {
                    let body =
                        serde_json::to_vec_pretty(&info).expect("a LockInfo always serializes");
                    res = self.put(LOCK_OBJECT, body, Some(&etag)).await;
                }
            }
        }
        let mut held = self.held();
        let Some(current) = held.as_mut() else {
            return; // released meanwhile
        };
        match res {
            Ok(etag) => {
                current.etag = etag;
                current.info = info;
            }
            Err(f) if f.precondition() || f.not_found() => {
                current.lost = Some(
                    "the lock was replaced or removed by someone else (after its lease ran out, \
                     `--force-unlock` may break it)"
                        .into(),
                );
            }
            Err(f) if lease.info.lease_expired(unix_now_ms()) => {
                current.lost = Some(format!(
                    "its lease ran out while renewing it failed: {}",
                    f.message
                ));
            }
            Err(_) => {} // the next renewal tries again
        }
    }

    async fn init_bucket(
        &self,
        extra_tags: Vec<(String, String)>,
    ) -> Result<Vec<String>, (&'static str, Fail)> {
        use aws_sdk_s3::types::{
            BucketLocationConstraint, CreateBucketConfiguration, PublicAccessBlockConfiguration,
            ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
            ServerSideEncryptionRule, Tag, Tagging, VersioningConfiguration,
        };
        let b = self.bucket.as_str();
        let mut report = Vec::new();

        // CreateBucket succeeds on a bucket its owner has already in us-east-1; ask first, so
        // that the report says which it was.
        let exists = match self.s3.head_bucket().bucket(b).send().await {
            Ok(_) => true,
            Err(e) => {
                let f = Fail::from_sdk(e);
                match f.status {
                    Some(404) => false,
                    Some(403) => {
                        return Err((
                            "use",
                            Fail {
                                message: "403 Forbidden: the bucket belongs to another account, \
                                          or these credentials may not use it (bucket names \
                                          are global; choose another)"
                                    .into(),
                                ..f
                            },
                        ))
                    }
                    _ => return Err(("look for", f)),
                }
            }
        };
        if exists {
            report.push(format!("bucket {b}: exists already (yours)"));
        } else {
            let mut create = self.s3.create_bucket().bucket(b);
            if self.region != "us-east-1" {
                create = create.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                        .build(),
                );
            }
            match create.send().await.map_err(Fail::from_sdk) {
                Ok(_) => report.push(format!("bucket {b}: created in {}", self.region)),
                Err(f) if f.is("BucketAlreadyOwnedByYou") => {
                    report.push(format!("bucket {b}: exists already (yours)"))
                }
                Err(f) if f.is("BucketAlreadyExists") => {
                    return Err((
                        "create",
                        Fail {
                            message: format!(
                                "{}: the name is taken by another AWS account (bucket names \
                                 are global); choose another",
                                f.message
                            ),
                            ..f
                        },
                    ))
                }
                Err(f) => return Err(("create", f)),
            }
        }

        let enabled = match self.s3.get_bucket_versioning().bucket(b).send().await {
            Ok(out) => out.status() == Some(&BucketVersioningStatus::Enabled),
            Err(e) => {
                let f = Fail::from_sdk(e);
                match f.versioning_in_body() {
                    Some(v) => v == Versioning::Enabled,
                    None => return Err(("read the versioning of", f)),
                }
            }
        };
        if enabled {
            report.push("versioning: on already".into());
        } else {
            self.s3
                .put_bucket_versioning()
                .bucket(b)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| ("turn on versioning of", Fail::from_sdk(e)))?;
            report.push("versioning: turned on".into());
        }

        let blocked = match self.s3.get_public_access_block().bucket(b).send().await {
            Ok(out) => out.public_access_block_configuration().is_some_and(|c| {
                c.block_public_acls() == Some(true)
                    && c.ignore_public_acls() == Some(true)
                    && c.block_public_policy() == Some(true)
                    && c.restrict_public_buckets() == Some(true)
            }),
            Err(e) => {
                let f = Fail::from_sdk(e);
                if f.is("NoSuchPublicAccessBlockConfiguration") {
                    false
                } else {
                    return Err(("read the public access block of", f));
                }
            }
        };
        if blocked {
            report.push("public access: blocked already".into());
        } else {
            self.s3
                .put_public_access_block()
                .bucket(b)
                .public_access_block_configuration(
                    PublicAccessBlockConfiguration::builder()
                        .block_public_acls(true)
                        .ignore_public_acls(true)
                        .block_public_policy(true)
                        .restrict_public_buckets(true)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| ("block public access to", Fail::from_sdk(e)))?;
            report.push("public access: blocked".into());
        }

        let existing = match self.s3.get_bucket_encryption().bucket(b).send().await {
            Ok(out) => out
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .and_then(|r| r.apply_server_side_encryption_by_default())
                .map(|d| {
                    let mut s = d.sse_algorithm().as_str().to_string();
                    if let Some(k) = d.kms_master_key_id() {
                        s.push_str(&format!(" with key {k}"));
                    }
                    s
                }),
            Err(e) => {
                let f = Fail::from_sdk(e);
                if f.is("ServerSideEncryptionConfigurationNotFoundError") {
                    None
                } else {
                    return Err(("read the encryption of", f));
                }
            }
        };
        match existing {
            Some(what) => report.push(format!("default encryption: {what} already (kept)")),
            None => {
                let mut default = ServerSideEncryptionByDefault::builder();
                default = match &self.encryption {
                    Encryption::S3 => default.sse_algorithm(ServerSideEncryption::Aes256),
                    Encryption::Kms(key) => default
                        .sse_algorithm(ServerSideEncryption::AwsKms)
                        .kms_master_key_id(key),
                };
                let rule = ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(
                        default.build().expect("the algorithm is set"),
                    )
                    .build();
                self.s3
                    .put_bucket_encryption()
                    .bucket(b)
                    .server_side_encryption_configuration(
                        ServerSideEncryptionConfiguration::builder()
                            .rules(rule)
                            .build()
                            .expect("a rule is set"),
                    )
                    .send()
                    .await
                    .map_err(|e| ("turn on default encryption of", Fail::from_sdk(e)))?;
                report.push(match &self.encryption {
                    Encryption::S3 => "default encryption: SSE-S3 (AES256) turned on".into(),
                    Encryption::Kms(k) => format!("default encryption: SSE-KMS with {k} turned on"),
                });
            }
        }

        let mut have: Vec<(String, String)> =
            match self.s3.get_bucket_tagging().bucket(b).send().await {
                Ok(out) => out
                    .tag_set()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string()))
                    .collect(),
                Err(e) => {
                    let f = Fail::from_sdk(e);
                    if f.is("NoSuchTagSet") || f.is("NoSuchTagSetError") {
                        Vec::new()
                    } else {
                        return Err(("read the tags of", f));
                    }
                }
            };
        let want: Vec<(String, String)> =
            std::iter::once((PURPOSE_TAG.0.to_string(), PURPOSE_TAG.1.to_string()))
                .chain(extra_tags)
                .collect();
        let missing: Vec<&(String, String)> = want.iter().filter(|t| !have.contains(t)).collect();
        if missing.is_empty() {
            report.push("tags: in place already".into());
        } else {
            let shown: Vec<String> = missing.iter().map(|(k, v)| format!("{k}={v}")).collect();
            for (k, v) in &want {
                have.retain(|(hk, _)| hk != k);
                have.push((k.clone(), v.clone()));
            }
            let set: Vec<Tag> = have
                .iter()
                .map(|(k, v)| {
                    Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .expect("key and value set")
                })
                .collect();
            self.s3
                .put_bucket_tagging()
                .bucket(b)
                .tagging(
                    Tagging::builder()
                        .set_tag_set(Some(set))
                        .build()
                        .expect("tags set"),
                )
                .send()
                .await
                .map_err(|e| ("tag", Fail::from_sdk(e)))?;
            report.push(format!("tags: set {}", shown.join(", ")));
        }
        Ok(report)
    }
}

impl S3Store {
    fn remote(&self, action: &'static str, object: &str, fail: Fail) -> StateError {
        if fail.is("NoSuchBucket")
            || fail.is("PermanentRedirect")
            || matches!(fail.status, Some(301 | 403))
        {
            return self.bucket_error(action, fail);
        }
        StateError::Remote {
            action,
            location: self.url(object),
            detail: fail.message,
        }
    }

    /// `Err(LockLost)` once this process's lock is no longer its own; renews first when the
    /// lease has run out by this machine's clock (the process may have been suspended).
    fn check_lease(&self) -> Result<(), StateError> {
        let expired = match self.inner.held().as_ref() {
            None => return Ok(()),
            Some(l) => l.lost.is_none() && l.info.lease_expired(unix_now_ms()),
        };
        if expired {
            self.run(|inner| async move { inner.renew().await });
        }
        match self.inner.held().as_ref().and_then(|l| l.lost.clone()) {
            Some(detail) => Err(StateError::LockLost {
                location: self.url(LOCK_OBJECT),
                detail,
            }),
            None => Ok(()),
        }
    }
}

impl StateStore for S3Store {
    fn location(&self) -> String {
        self.url("")
    }

    fn journal_name(&self) -> String {
        self.url(JOURNAL_OBJECT)
    }

    fn corrupt_fix(&self) -> String {
        format!(
            "replace it with a good copy (`meshstack state push FILE`) or delete the object \
             (with versioning on, S3 keeps the bad version for inspection) — {}",
            self.url(JOURNAL_OBJECT)
        )
    }

    fn read_journal(&self) -> Result<Option<Stored>, StateError> {
        self.run(|inner| async move { inner.get(JOURNAL_OBJECT).await })
            .map_err(|f| self.remote("read the journal", JOURNAL_OBJECT, f))
    }

    fn write_journal(&self, body: &[u8], expected: Option<&str>) -> Result<Written, StateError> {
        self.check_lease()?;
        let body = body.to_vec();
        let expected = expected.map(str::to_string);
        let res = self.run(|inner| async move {
            let mut res = inner
                .put(JOURNAL_OBJECT, body.clone(), expected.as_deref())
                .await;
            // 409: another conditional write to the key was in flight. Once it lands, ours
            // either holds or fails its precondition; one more try tells which.
            if res.as_ref().is_err_and(Fail::in_progress) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                res = inner.put(JOURNAL_OBJECT, body, expected.as_deref()).await;
            }
            match res {
                Ok(etag) => Ok(Written::Ok(Some(etag))),
                // If-Match on a deleted object: 404.
                Err(f) if f.precondition() || f.in_progress() || f.not_found() => {
                    inner.get(JOURNAL_OBJECT).await.map(Written::Conflict)
                }
                Err(f) => Err(f),
            }
        });
        res.map_err(|f| self.remote("write the journal", JOURNAL_OBJECT, f))
    }

    fn remove_journal(&self, expected: Option<&str>) -> Result<(), StateError> {
        let expected = expected.map(str::to_string);
        let res = self
            .run(|inner| async move { inner.delete(JOURNAL_OBJECT, expected.as_deref()).await });
        match res {
            Ok(()) => Ok(()),
            Err(f) if f.precondition() => Err(StateError::Remote {
                action: "remove the journal",
                location: self.url(JOURNAL_OBJECT),
                detail: "it changed since it was read; nothing was removed".into(),
            }),
            Err(f) => Err(self.remote("remove the journal", JOURNAL_OBJECT, f)),
        }
    }

    fn lock(&self, mut me: LockInfo, unlock: &Unlock) -> Result<LockGuard, StateError> {
        me.who = self.run(|inner| async move { inner.who().await });
        let lock_err = |f: Fail| self.remote("take the lock", LOCK_OBJECT, f);
        // Each retry follows a lock that vanished or was removed as stale.
        for _ in 0..4 {
            me.lease_expires_at = Some(self.inner.lease_end());
            let body = serde_json::to_vec_pretty(&me).expect("a LockInfo always serializes");
            match self.run(|inner| async move { inner.put(LOCK_OBJECT, body, None).await }) {
                Ok(etag) => return Ok(self.hold(me, etag)),
                Err(f) if f.precondition() || f.in_progress() => {}
                Err(f) => return Err(lock_err(f)),
            }
            let Some(current) = self
                .run(|inner| async move { inner.get(LOCK_OBJECT).await })
                .map_err(lock_err)?
            else {
                continue;
            };
            let etag = current.version.clone();
            let remove = || {
                let etag = etag.clone();
                self.run(|inner| async move { inner.delete(LOCK_OBJECT, etag.as_deref()).await })
            };
            match (serde_json::from_slice::<LockInfo>(&current.body), unlock) {
                (Err(_), Unlock::Stale) => match remove() {
                    Ok(()) => continue,
                    Err(f) if f.precondition() || f.not_found() => continue,
                    Err(f) => return Err(lock_err(f)),
                },
                (Err(e), _) => {
                    return Err(StateError::UnreadableLock {
                        location: self.url(LOCK_OBJECT),
                        detail: e.to_string(),
                    })
                }
                // A lock without a lease was not written by a meshstack run: stale.
                (Ok(holder), _)
                    if holder.lease_expires_at.is_some()
                        && !holder.lease_expired(unix_now_ms()) =>
                {
                    return Err(StateError::Locked {
                        holder: Box::new(holder),
                    });
                }
                (Ok(holder), Unlock::Id(id)) if *id == holder.id => match remove() {
                    Ok(()) => continue,
                    // Taken or renewed in between: look again.
                    Err(f) if f.precondition() || f.not_found() => continue,
                    Err(f) => return Err(lock_err(f)),
                },
                (Ok(holder), Unlock::Id(id)) => {
                    return Err(StateError::WrongLockId {
                        given: id.clone(),
                        holder: Box::new(holder),
                    })
                }
                (Ok(holder), _) => {
                    return Err(StateError::StaleLock {
                        holder: Box::new(holder),
                    })
                }
            }
        }
        Err(StateError::Remote {
            action: "take the lock",
            location: self.url(LOCK_OBJECT),
            detail: "the lock kept changing; is another meshstack starting on this stack?".into(),
        })
    }

    fn read_lock(&self) -> Result<Option<Result<LockInfo, String>>, StateError> {
        let current = self
            .run(|inner| async move { inner.get(LOCK_OBJECT).await })
            .map_err(|f| self.remote("read the lock", LOCK_OBJECT, f))?;
        Ok(current.map(|c| serde_json::from_slice::<LockInfo>(&c.body).map_err(|e| e.to_string())))
    }

    fn shared(&self) -> bool {
        true
    }
}

impl S3Store {
    /// Records the lock as held and starts renewing its lease.
    fn hold(&self, me: LockInfo, etag: String) -> LockGuard {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.renew_every;
        let renewer = self.inner.handle.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                inner.renew().await;
            }
        });
        *self.inner.held() = Some(Lease {
            etag,
            info: me.clone(),
            lost: None,
            renewer: Some(renewer.abort_handle()),
        });
        LockGuard::new(Box::new(S3Lock {
            store: self.clone(),
            me,
        }))
    }
}

/// The S3 lock held by this process.
struct S3Lock {
    store: S3Store,
    me: LockInfo,
}

impl HeldLock for S3Lock {
    fn info(&self) -> &LockInfo {
        &self.me
    }

    fn release(&self) {
        let Some(lease) = self.store.inner.held().take() else {
            return; // released already
        };
        if let Some(r) = &lease.renewer {
            r.abort();
        }
        if lease.lost.is_some() {
            return; // someone else's now
        }
        let etag = lease.etag.clone();
        let res = self
            .store
            .run(|inner| async move { inner.delete(LOCK_OBJECT, Some(&etag)).await });
        match res {
            Ok(()) => {}
            Err(f) if f.precondition() || f.not_found() => {}
            Err(f) => eprintln!(
                "warning: could not remove the lock {} ({}); the next run will find it stale \
                 once its lease ends",
                self.store.url(LOCK_OBJECT),
                f.message
            ),
        }
    }
}
