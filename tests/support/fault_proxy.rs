//! A seeded, fault-injecting HTTP proxy between the AWS SDK (or the meshstack binary) and moto.
//!
//! moto makes every resource ready at once and never throttles; real AWS does both. Tests put
//! this proxy in front of moto (`AWS_ENDPOINT_URL` / `endpoint_url` = [`FaultProxy::endpoint`])
//! and choose what goes wrong with [`Faults`]:
//!
//! - throttling at a rate (and/or for the first N calls of an operation), answered the way each
//!   AWS protocol does it, so the SDK classifies it as throttling and retries;
//! - latency added to every answer;
//! - `DependencyViolation` for the first N calls of an EC2 delete, or while a condition on the
//!   world holds (a VPC endpoint still in the VPC: moto deletes a VPC and its subnets whatever
//!   is left in them, AWS refuses);
//! - "still creating": a forwarded, successful answer rewritten from ready to not-ready
//!   (cluster/node group `CREATING`, NAT gateway `pending`), for N answers or for a duration.
//!
//! It also answers, always, what moto lacks and meshstack needs: EKS access entries and their
//! access policies, from the model in [`super::access_entries`] (whose comment says what it
//! does not model). Faults apply to those calls as to the forwarded ones.
//!
//! # Guarantees
//! - Deterministic: every request draws exactly one number from a PRNG seeded with
//!   [`Faults::seed`], and all decisions are taken in arrival order under one lock, so a
//!   sequential client sending the same requests sees the same faults.
//! - A forwarded request reaches moto byte for byte except for its `Host` header (the SigV4
//!   signature covers the headers; moto does not check it, but nothing else is touched).
//! - One request per connection: every answer carries `Connection: close`; the SDK reconnects.
//!
//! std only: a thread per connection, blocking I/O. Set `MESHSTACK_PROXY_LOG=1` to print one
//! line per request on stderr, and for a forwarded one a second with its status and how long
//! the proxy held it (moto's time, mostly).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::access_entries::{self, AccessEntries};

/// What goes wrong, and how often. `Faults::default()` injects nothing.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Seeds the PRNG behind `throttle_rate`: same seed + same request sequence -> same faults.
    pub seed: u64,
    /// Share of requests (0.0..=1.0) answered with a throttling error instead of forwarded.
    pub throttle_rate: f64,
    /// Operation (`"ec2:DescribeVpcs"`) -> answer its first N calls with a throttling error,
    /// whatever the rate: a deterministic way to make one call need retries.
    pub throttles: BTreeMap<String, u32>,
    /// Added before every answer (forwarded or injected).
    pub latency: Duration,
    /// S3 bucket -> the account that owns it. A request to one of these buckets that carries
    /// `x-amz-expected-bucket-owner` naming another account is answered 403 AccessDenied, as
    /// S3 does ("Verifying bucket ownership with bucket owner condition"; moto ignores the
    /// header). Buckets not named here are taken to be the caller's. Not modelled: the
    /// `x-amz-source-expected-bucket-owner` of copies, and CreateBucket (which has no such
    /// parameter).
    pub bucket_owners: BTreeMap<String, String>,
    /// EC2 operation (`"ec2:DeleteVpc"`) -> answer its first N calls with `DependencyViolation`.
    pub dependency_violations: BTreeMap<String, u32>,
    /// EC2 operation (`"ec2:DeleteVpc"`) -> answer it with `DependencyViolation` while this
    /// holds (asked before each call, outside the proxy's lock): what AWS refuses while
    /// something is left in a VPC or subnet, which moto deletes regardless.
    pub dependency_while: BTreeMap<String, Guard>,
    /// Operation from [`NOT_READY`] -> rewrite its first N ready answers to "not ready yet".
    pub still_creating: BTreeMap<String, u32>,
    /// Operation from [`NOT_READY`] -> rewrite its ready answers to "not ready yet" until this
    /// long after the first ready answer (resources that take minutes to create, scaled down).
    pub creating_for: BTreeMap<String, Duration>,
    /// Operation -> answer its first N calls with this error, in the operation's protocol:
    /// `(N, code, message)`, like AWS's transient answers while a new IAM role propagates.
    pub errors: BTreeMap<String, (u32, String, String)>,
    /// Operation -> rewrite its first N successful answers, replacing `from` with `to`
    /// (a cluster that answers UPDATING, say).
    pub rewrites: BTreeMap<String, (u32, String, String)>,
    /// Operation -> run this once, before the proxy handles the operation's first call: the
    /// world changing under a running `meshstack` (an interface appearing mid-teardown).
    pub on_first: BTreeMap<String, Hook>,
    /// Operation -> rewrite every successful answer's body with this function: moto's
    /// answers made more like AWS's (one OIDC issuer per EKS cluster, where moto gives every
    /// cluster of a process the same one).
    pub transforms: BTreeMap<String, Transform>,
    /// Answer with an error the calls that carry a given parameter value (one stack's
    /// `CreateVpc`, by its tag), while armed: a fault for one environment of a fleet.
    pub matched_errors: Vec<MatchedError>,
    /// AWS's request token buckets, per account and region: a call that finds its bucket
    /// empty is answered with the service's throttling error, as EC2 documents for its API
    /// (mutating actions: 200 tokens, refilled at 5 a second). Many stacks in one account
    /// share them, as a workshop fleet does.
    pub buckets: Vec<RateBucket>,
    /// Operation -> answer every call with HTTP 200 and this JSON body instead of forwarding
    /// it: an operation moto does not implement, answered the way AWS's API reference shows
    /// (EKS `DescribeClusterVersions`, whose calendar moto has no notion of). Only the body
    /// given is modelled: no paging, no filtering by the request's parameters.
    pub answers: BTreeMap<String, String>,
    /// Errors for the calls that follow a create: EC2's eventual consistency, where a call
    /// naming a resource created moments ago is answered `*.NotFound`.
    pub after_create: Vec<AfterCreate>,
}

/// Answer the first `n` calls of `op` made after `create` was first called with
/// `(code, message)`, in `op`'s protocol (calls of `op` before it go through untouched).
#[derive(Clone, Debug)]
pub struct AfterCreate {
    pub create: String,
    pub op: String,
    pub n: u32,
    pub code: String,
    pub message: String,
}

/// One request token bucket: the calls of `service` (writes only, or every call) each take a
/// token; `refill_per_sec` tokens come back every second, up to `capacity`.
#[derive(Clone, Debug)]
pub struct RateBucket {
    /// `"ec2"`, `"iam"`, ...
    pub service: String,
    /// Only mutating calls (not `Describe*`, `Get*`, `List*`) take tokens.
    pub writes_only: bool,
    pub capacity: f64,
    pub refill_per_sec: f64,
}

impl RateBucket {
    fn applies_to(&self, op: &str) -> bool {
        let Some((service, action)) = op.split_once(':') else {
            return false;
        };
        // AWS's own split (EC2's "non-mutating actions"), kept apart from meshstack's
        // `is_read_operation` on purpose: the model must not share the binary's mistakes.
        let read = ["Describe", "Get", "List"]
            .iter()
            .any(|p| action.starts_with(p));
        service == self.service && !(self.writes_only && read)
    }
}

/// A test's rewrite for [`Faults::transforms`].
#[derive(Clone)]
pub struct Transform(pub Arc<dyn Fn(&str) -> String + Send + Sync>);

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transform")
    }
}

/// An error for the calls of `op` with a query parameter whose value is `value`, while
/// `armed` holds (the test disarms it to let the next run through).
#[derive(Clone, Debug)]
pub struct MatchedError {
    pub op: String,
    pub value: String,
    pub code: String,
    pub message: String,
    pub armed: Arc<AtomicBool>,
}

/// A test's condition for [`Faults::dependency_while`].
#[derive(Clone)]
pub struct Guard(pub Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

/// A test's action for [`Faults::on_first`].
#[derive(Clone)]
pub struct Hook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// `(operation, ready text, not-ready text)`: what a "still creating" fault replaces in a
/// successful answer. Answers without the ready text are passed on untouched and not counted.
pub const NOT_READY: &[(&str, &str, &str)] = &[
    (
        "eks:DescribeCluster",
        r#""status": "ACTIVE""#,
        r#""status": "CREATING""#,
    ),
    (
        "eks:DescribeNodegroup",
        r#""status": "ACTIVE""#,
        r#""status": "CREATING""#,
    ),
    (
        "ec2:DescribeNatGateways",
        "<state>available</state>",
        "<state>pending</state>",
    ),
];

/// What the proxy has seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Requests received (every SDK attempt is one).
    pub requests: u64,
    /// Requests sent on to moto.
    pub forwarded: u64,
    /// Requests answered with a throttling error.
    pub throttled: u64,
    /// Requests answered with `DependencyViolation`.
    pub dependency_violations: u64,
    /// Forwarded answers rewritten to "not ready yet".
    pub rewritten: u64,
    /// Requests the SDK marked as a retry (`amz-sdk-request: attempt=2` or more).
    pub retries: u64,
    /// `service:Operation` -> requests received.
    pub ops: BTreeMap<String, u64>,
    /// Requests answered with an injected error from `Faults::errors`.
    pub injected: u64,
    /// Every request's operation, in arrival order.
    pub sequence: Vec<String>,
    /// Requests answered from the access-entries model.
    pub modelled: u64,
}

/// The running proxy, listening on a free localhost port; stops accepting on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Start a proxy forwarding to `upstream` (`http://127.0.0.1:PORT`).
    ///
    /// # Panics
    /// On an upstream that is not `http://host:port`, a `dependency_violations` operation
    /// outside EC2, or a `still_creating`/`creating_for` operation missing from [`NOT_READY`]:
    /// a test's mistake, reported at once rather than as a fault that silently never happens.
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("upstream {upstream:?} is not http://host:port"))
            .trim_end_matches('/')
            .to_string();
        assert!(
            (0.0..=1.0).contains(&faults.throttle_rate),
            "throttle_rate {} is not within 0.0..=1.0",
            faults.throttle_rate
        );
        for op in faults
            .dependency_violations
            .keys()
            .chain(faults.dependency_while.keys())
        {
            assert!(
                op.starts_with("ec2:"),
                "DependencyViolation is an EC2 error; {op} is not an EC2 operation"
            );
        }
        for op in faults
            .still_creating
            .keys()
            .chain(faults.creating_for.keys())
        {
            assert!(
                NOT_READY.iter().any(|(o, _, _)| o == op),
                "no not-ready rewrite for {op}; add one to NOT_READY"
            );
        }
        let buckets = faults
            .buckets
            .iter()
            .map(|b| (b.capacity, Instant::now()))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().unwrap();
        let after_create_used = vec![0; faults.after_create.len()];
        let shared = Arc::new(Shared {
            access: AccessEntries::default(),
            upstream,
            log: std::env::var_os("MESHSTACK_PROXY_LOG").is_some(),
            state: Mutex::new(State {
                rng: SplitMix(faults.seed),
                faults,
                stats: ProxyStats::default(),
                calls: BTreeMap::new(),
                ready_answers: BTreeMap::new(),
                first_ready: BTreeMap::new(),
                after_create_used,
                buckets,
            }),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        if let Err(e) = shared.serve(conn) {
                            if shared.log {
                                eprintln!("fault-proxy: connection error: {e}");
                            }
                        }
                    });
                }
            })
        };
        FaultProxy {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL` or an SDK `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        self.shared.state().stats.clone()
    }

    /// The EKS access entries the proxy holds: cluster ARN -> principal ARN -> entry.
    pub fn access_entries(&self) -> BTreeMap<String, BTreeMap<String, access_entries::Entry>> {
        self.shared.access.snapshot()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// splitmix64: small, fast, and the same everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Shared {
    /// `host:port`
    upstream: String,
    /// EKS access entries, which moto lacks.
    access: AccessEntries,
    log: bool,
    state: Mutex<State>,
}

struct State {
    faults: Faults,
    rng: SplitMix,
    stats: ProxyStats,
    /// Operation -> requests received, for the "first N calls" faults.
    calls: BTreeMap<String, u32>,
    /// Operation -> ready answers seen, for `still_creating`.
    ready_answers: BTreeMap<String, u32>,
    /// Operation -> when its first ready answer went by, for `creating_for`.
    first_ready: BTreeMap<String, Instant>,
    /// Tokens left in each of `faults.buckets`, and when they were last counted.
    buckets: Vec<(f64, Instant)>,
    /// Errors answered so far for each of `faults.after_create`.
    after_create_used: Vec<u32>,
}

/// Takes a token for `op` from the bucket that applies to it, refilled for the time since it
/// was last counted; false if that bucket is empty. Calls no bucket applies to always pass.
fn take_token(buckets: &[RateBucket], left: &mut [(f64, Instant)], op: &str) -> bool {
    let Some(i) = buckets.iter().position(|b| b.applies_to(op)) else {
        return true;
    };
    let (b, (tokens, counted)) = (&buckets[i], &mut left[i]);
    let now = Instant::now();
    *tokens =
        (*tokens + now.duration_since(*counted).as_secs_f64() * b.refill_per_sec).min(b.capacity);
    *counted = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

/// What to do with one request, decided in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Forward,
    Throttle,
    DependencyViolation,
    Error,
    /// An error from `Faults::matched_errors` (its index).
    Matched(usize),
    /// A canned success from `Faults::answers`.
    Answer,
    /// An error from `Faults::after_create` (its index).
    AfterCreate(usize),
    /// S3's 403 for a bucket another account owns (`Faults::bucket_owners`).
    NotOwner,
    /// Answered from the access-entries model.
    Modelled,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(&self, client: TcpStream) -> io::Result<()> {
        client.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut reader = BufReader::new(client.try_clone()?);
        let Some(head) = read_head(&mut reader)? else {
            return Ok(()); // connected and left (or our own wake-up on drop)
        };
        let (raw_body, body) = read_body(&mut reader, &head, false)?;
        let arrived = Instant::now();
        let mut req = Request::parse(&head, &body);
        let hook = {
            let mut st = self.state();
            match st.calls.get(&req.op) {
                None | Some(0) => st.faults.on_first.remove(&req.op),
                Some(_) => None,
            }
        };
        if let Some(Hook(hook)) = hook {
            hook();
        }
        let guard = self.state().faults.dependency_while.get(&req.op).cloned();
        let held = guard.is_some_and(|Guard(holds)| holds());
        let verdict;
        (verdict, req.number) = self.decide(&req, held);
        if self.log {
            eprintln!(
                "fault-proxy: #{} {} {:?} {} {}",
                req.number, req.op, verdict, req.method, req.target
            );
        }
        let latency = self.state().faults.latency;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let answer = match verdict {
            Verdict::Throttle => throttling_answer(&req),
            Verdict::DependencyViolation => dependency_violation_answer(&req),
            Verdict::Error => {
                let (_, code, message) = self.state().faults.errors[&req.op].clone();
                error_answer(&req, &code, &message)
            }
            Verdict::Matched(i) => {
                let m = self.state().faults.matched_errors[i].clone();
                error_answer(&req, &m.code, &m.message)
            }
            Verdict::Answer => {
                let body = self.state().faults.answers[&req.op].clone();
                Answer::new(
                    200,
                    "OK",
                    &[
                        ("Content-Type", "application/json"),
                        ("x-amzn-RequestId", &req.request_id()),
                    ],
                    body,
                )
            }
            Verdict::AfterCreate(i) => {
                let a = self.state().faults.after_create[i].clone();
                error_answer(&req, &a.code, &a.message)
            }
            Verdict::NotOwner => {
                let id = req.request_id();
                Answer::new(
                    403,
                    "Forbidden",
                    &[
                        ("Content-Type", "application/xml"),
                        ("x-amz-request-id", &id),
                    ],
                    format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied\
                         </Code><Message>Access Denied</Message><RequestId>{id}</RequestId>\
                         </Error>"
                    ),
                )
            }
            Verdict::Modelled => self.access_answer(&head, &req, &body),
            Verdict::Forward => match self.forward(&head, &raw_body) {
                Ok(mut answer) => {
                    if self.log {
                        eprintln!(
                            "fault-proxy: #{} {} answered {} in {:.1} ms",
                            req.number,
                            req.op,
                            answer.status,
                            arrived.elapsed().as_secs_f64() * 1000.0
                        );
                    }
                    self.maybe_not_ready(&req, &mut answer);
                    if req.op == "eks:DeleteCluster" && (200..300).contains(&answer.status) {
                        let v: serde_json::Value =
                            serde_json::from_slice(&answer.body).unwrap_or_default();
                        if let Some(arn) = v["cluster"]["arn"].as_str() {
                            self.access.cluster_deleted(arn);
                        }
                    }
                    let transform = self.state().faults.transforms.get(&req.op).cloned();
                    if let (Some(Transform(f)), true) =
                        (transform, (200..300).contains(&answer.status))
                    {
                        answer.body = f(&String::from_utf8_lossy(&answer.body)).into_bytes();
                    }
                    answer
                }
                Err(e) => Answer::text(502, "Bad Gateway", &format!("fault proxy: {e}")),
            },
        };
        let mut client = client;
        client.write_all(&answer.to_bytes())?;
        client.flush()?;
        let _ = client.shutdown(std::net::Shutdown::Both);
        Ok(())
    }

    /// The verdict and the request's arrival number; `held`: a [`Faults::dependency_while`]
    /// condition holds for this request.
    fn decide(&self, req: &Request, held: bool) -> (Verdict, u64) {
        let mut st = self.state();
        let st = &mut *st;
        st.stats.requests += 1;
        *st.stats.ops.entry(req.op.clone()).or_default() += 1;
        st.stats.sequence.push(req.op.clone());
        if req.attempt > 1 {
            st.stats.retries += 1;
        }
        let calls = st.calls.entry(req.op.clone()).or_default();
        *calls += 1;
        let nth = *calls;
        // Always one draw per request, so the sequence does not depend on which faults apply.
        let draw = st.rng.unit();
        let first_n = |m: &BTreeMap<String, u32>| m.get(&req.op).is_some_and(|n| nth <= *n);
        let matched = st.faults.matched_errors.iter().position(|m| {
            m.op == req.op
                && m.armed.load(Ordering::SeqCst)
                && req.params.iter().any(|(_, v)| *v == m.value)
        });
        let not_owner = match (&req.expected_owner, req.bucket()) {
            (Some(expected), Some(bucket)) => st
                .faults
                .bucket_owners
                .get(bucket)
                .is_some_and(|owner| owner != expected),
            _ => false,
        };
        let verdict = if let Some(i) = matched {
            st.stats.injected += 1;
            Verdict::Matched(i)
        } else if not_owner {
            st.stats.injected += 1;
            Verdict::NotOwner
        } else if st.faults.answers.contains_key(&req.op) {
            st.stats.injected += 1;
            Verdict::Answer
        } else if first_n(&st.faults.throttles)
            || draw < st.faults.throttle_rate
            || !take_token(&st.faults.buckets, &mut st.buckets, &req.op)
        {
            st.stats.throttled += 1;
            Verdict::Throttle
        } else if first_n(&st.faults.dependency_violations) || held {
            st.stats.dependency_violations += 1;
            Verdict::DependencyViolation
        } else if st
            .faults
            .errors
            .get(&req.op)
            .is_some_and(|(n, ..)| nth <= *n)
        {
            st.stats.injected += 1;
            Verdict::Error
        } else if let Some(i) = st
            .faults
            .after_create
            .iter()
            .enumerate()
            .position(|(i, a)| {
                a.op == req.op
                    && st.calls.get(&a.create).is_some_and(|n| *n > 0)
                    && st.after_create_used[i] < a.n
            })
        {
            st.after_create_used[i] += 1;
            st.stats.injected += 1;
            Verdict::AfterCreate(i)
        } else if access_entries::OPERATIONS.contains(&req.op.as_str()) {
            st.stats.modelled += 1;
            Verdict::Modelled
        } else {
            st.stats.forwarded += 1;
            Verdict::Forward
        };
        (verdict, st.stats.requests)
    }

    /// An access-entry call, answered from the model for the cluster moto says exists.
    fn access_answer(&self, head: &Head, req: &Request, body: &[u8]) -> Answer {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(path_decode)
            .collect();
        let name = segs.get(1).cloned().unwrap_or_default();
        let cluster = match self.cluster_arn(head, &name) {
            Ok(c) => c,
            Err(e) => return Answer::text(502, "Bad Gateway", &format!("fault proxy: {e}")),
        };
        let query = parse_form(query);
        let (status, code, text) = self.access.answer(&access_entries::Call {
            op: &req.op,
            cluster_name: &name,
            cluster: cluster.as_deref(),
            principal: segs.get(3).map(String::as_str),
            policy: segs.get(5).map(String::as_str),
            query: &query,
            body,
        });
        let id = req.request_id();
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", id.as_str()),
        ];
        if let Some(code) = code {
            headers.push(("x-amzn-ErrorType", code));
        }
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            409 => "Conflict",
            _ => "Error",
        };
        Answer::new(status, reason, &headers, text)
    }

    /// The ARN of EKS cluster `name` as moto reports it to the request's own credentials (so
    /// in the caller's account); `None` if there is no such cluster.
    fn cluster_arn(&self, head: &Head, name: &str) -> io::Result<Option<String>> {
        let mut synthetic = Head {
            start: format!("GET /clusters/{name} HTTP/1.1\r\n").into_bytes(),
            lines: Vec::new(),
        };
        for line in &head.lines {
            let n = header_name(line);
            let dropped = [
                "content-length",
                "content-type",
                "transfer-encoding",
                "host",
            ];
            if !dropped.iter().any(|d| n.eq_ignore_ascii_case(d)) {
                synthetic.lines.push(line.clone());
            }
        }
        synthetic
            .lines
            .push(format!("Host: {}\r\nContent-Length: 0\r\n", self.upstream).into_bytes());
        let answer = self.forward(&synthetic, &[])?;
        if answer.status != 200 {
            return Ok(None);
        }
        let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        Ok(v["cluster"]["arn"].as_str().map(str::to_string))
    }

    /// Send the request on, on a fresh connection, and read the whole answer.
    fn forward(&self, head: &Head, raw_body: &[u8]) -> io::Result<Answer> {
        let mut up = TcpStream::connect(&self.upstream)?;
        up.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut out = Vec::with_capacity(1024 + raw_body.len());
        out.extend_from_slice(&head.start);
        for line in &head.lines {
            if header_name(line).eq_ignore_ascii_case("host") {
                out.extend_from_slice(format!("Host: {}\r\n", self.upstream).as_bytes());
            } else {
                out.extend_from_slice(line);
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(raw_body);
        up.write_all(&out)?;
        up.flush()?;
        let no_body = head.method() == "HEAD";
        let mut reader = BufReader::new(up);
        loop {
            let head = read_head(&mut reader)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed without answering",
                )
            })?;
            let status = head.status();
            if (100..200).contains(&status) {
                continue; // 100 Continue and friends: the real answer follows
            }
            let (_, body) = read_body(&mut reader, &head, !no_body)?;
            return Ok(Answer {
                start: head.start.clone(),
                status,
                headers: head.lines.clone(),
                body,
            });
        }
    }

    /// Apply a "still creating" fault, or a rewrite, to a successful forwarded answer.
    fn maybe_not_ready(&self, req: &Request, answer: &mut Answer) {
        if !(200..300).contains(&answer.status) {
            return;
        }
        {
            let mut st = self.state();
            let st = &mut *st;
            if let Some((n, from, to)) = st.faults.rewrites.get_mut(&req.op) {
                let text = String::from_utf8_lossy(&answer.body);
                if *n > 0 && text.contains(from.as_str()) {
                    *n -= 1;
                    st.stats.rewritten += 1;
                    answer.body = text.replace(from.as_str(), to).into_bytes();
                    return;
                }
            }
        }
        let Some((_, from, to)) = NOT_READY.iter().find(|(o, _, _)| *o == req.op) else {
            return;
        };
        let text = String::from_utf8_lossy(&answer.body);
        if !text.contains(from) {
            return;
        }
        let mut st = self.state();
        let st = &mut *st;
        let seen = st.ready_answers.entry(req.op.clone()).or_default();
        *seen += 1;
        let by_count = st
            .faults
            .still_creating
            .get(&req.op)
            .is_some_and(|n| *seen <= *n);
        let by_time = st.faults.creating_for.get(&req.op).is_some_and(|d| {
            let since = *st
                .first_ready
                .entry(req.op.clone())
                .or_insert_with(Instant::now);
            since.elapsed() < *d
        });
        if by_count || by_time {
            st.stats.rewritten += 1;
            answer.body = text.replace(from, to).into_bytes();
        }
    }
}

/// A request line or status line, and the header lines, kept as received (CRLF included).
struct Head {
    start: Vec<u8>,
    lines: Vec<Vec<u8>>,
}

impl Head {
    fn start_str(&self) -> String {
        String::from_utf8_lossy(&self.start).trim_end().to_string()
    }

    fn method(&self) -> String {
        self.start_str()
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    fn status(&self) -> u16 {
        self.start_str()
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.lines
            .iter()
            .find(|l| header_name(l).eq_ignore_ascii_case(name))
            .map(|l| {
                let l = String::from_utf8_lossy(l);
                l.split_once(':')
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_default()
            })
    }
}

fn header_name(line: &[u8]) -> &str {
    let end = line.iter().position(|b| *b == b':').unwrap_or(0);
    std::str::from_utf8(&line[..end]).unwrap_or("").trim()
}

/// The head of a request or answer; `None` on a connection closed before its first byte.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut start = Vec::new();
    if r.read_until(b'\n', &mut start)? == 0 {
        return Ok(None);
    }
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside the headers",
            ));
        }
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(Head { start, lines }));
        }
        lines.push(line);
    }
}

/// The body as received (for forwarding byte for byte) and decoded (chunked framing removed).
/// An answer without length or chunking runs to the end of the connection (`until_close`);
/// a request without either has no body.
fn read_body(
    r: &mut impl BufRead,
    head: &Head,
    until_close: bool,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let status = head.status();
    if until_close && (status == 204 || status == 304) {
        return Ok((Vec::new(), Vec::new()));
    }
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let (mut raw, mut body) = (Vec::new(), Vec::new());
        loop {
            let mut size_line = Vec::new();
            r.read_until(b'\n', &mut size_line)?;
            raw.extend_from_slice(&size_line);
            let size_text = String::from_utf8_lossy(&size_line);
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let mut line = Vec::new();
                    if r.read_until(b'\n', &mut line)? == 0 {
                        break;
                    }
                    raw.extend_from_slice(&line);
                    if line == b"\r\n" || line == b"\n" {
                        break;
                    }
                }
                return Ok((raw, body));
            }
            let mut chunk = vec![0; size + 2]; // data + CRLF
            r.read_exact(&mut chunk)?;
            raw.extend_from_slice(&chunk);
            body.extend_from_slice(&chunk[..size]);
        }
    }
    if let Some(len) = head.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        return Ok((body.clone(), body));
    }
    let mut body = Vec::new();
    if until_close {
        r.read_to_end(&mut body)?;
    }
    Ok((body.clone(), body))
}

/// What the proxy needs to know about a request.
struct Request {
    /// Arrival number (from 1), set once `decide` has counted it; makes request ids.
    number: u64,
    method: String,
    target: String,
    /// `service:Operation`
    op: String,
    /// The SDK's attempt number (`amz-sdk-request: attempt=N; max=M`), 1 when absent.
    attempt: u32,
    /// The query-protocol parameters (form body or query string), decoded.
    params: Vec<(String, String)>,
    /// awsJson (SQS, EventBridge): the operation came from `X-Amz-Target`.
    json_target: bool,
    /// S3's `x-amz-expected-bucket-owner`.
    expected_owner: Option<String>,
}

impl Request {
    fn parse(head: &Head, body: &[u8]) -> Request {
        let start = head.start_str();
        let mut parts = start.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let service = head
            .header("authorization")
            .and_then(|a| credential_scope_service(&a))
            .or_else(|| credential_scope_service(&percent_decode(query)))
            .unwrap_or_else(|| "unknown".to_string());
        let mut params = parse_form(query);
        let form = head
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if form {
            params.extend(parse_form(&String::from_utf8_lossy(body)));
        }
        let amz_target = head.header("x-amz-target");
        let operation = if let Some(t) = &amz_target {
            t.rsplit('.').next().unwrap_or(t).to_string()
        } else if let Some((_, action)) = params.iter().find(|(k, _)| k == "Action") {
            action.clone()
        } else if service == "eks" {
            eks_operation(&method, path).to_string()
        } else if service == "s3" {
            s3_operation(&method, path, query)
        } else {
            "Unknown".to_string()
        };
        let attempt = head
            .header("amz-sdk-request")
            .and_then(|v| {
                v.split(';')
                    .find_map(|kv| kv.trim().strip_prefix("attempt=").map(str::to_string))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        Request {
            number: 0,
            method,
            target,
            op: format!("{service}:{operation}"),
            attempt,
            params,
            json_target: amz_target.is_some(),
            expected_owner: head.header("x-amz-expected-bucket-owner"),
        }
    }

    /// An S3 request's bucket (path-style addressing, as emulators are reached).
    fn bucket(&self) -> Option<&str> {
        if self.service() != "s3" {
            return None;
        }
        let path = self.target.split('?').next().unwrap_or_default();
        path.trim_start_matches('/')
            .split('/')
            .next()
            .filter(|b| !b.is_empty())
    }

    fn service(&self) -> &str {
        self.op.split(':').next().unwrap_or_default()
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn request_id(&self) -> String {
        format!("fa017000-0000-4000-8000-{:012x}", self.number)
    }
}

/// `Credential=AKID/20261128/us-east-1/ec2/aws4_request` -> `ec2`.
fn credential_scope_service(text: &str) -> Option<String> {
    let cred = text.split("Credential=").nth(1)?;
    let scope: Vec<&str> = cred.split([',', ' ', '&']).next()?.split('/').collect();
    (scope.len() >= 5).then(|| scope[3].to_string())
}

/// EKS is REST: the operation is the method and the path.
fn eks_operation(method: &str, path: &str) -> &'static str {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segs.as_slice()) {
        ("GET", ["clusters"]) => "ListClusters",
        ("GET", ["cluster-versions"]) => "DescribeClusterVersions",
        ("POST", ["clusters"]) => "CreateCluster",
        ("GET", ["clusters", _]) => "DescribeCluster",
        ("DELETE", ["clusters", _]) => "DeleteCluster",
        ("POST", ["clusters", _, "update-config"]) => "UpdateClusterConfig",
        ("POST", ["clusters", _, "updates"]) => "UpdateClusterVersion",
        ("GET", ["clusters", _, "updates"]) => "ListUpdates",
        ("GET", ["clusters", _, "updates", _]) => "DescribeUpdate",
        ("POST", ["clusters", _, "node-groups"]) => "CreateNodegroup",
        ("GET", ["clusters", _, "node-groups"]) => "ListNodegroups",
        ("GET", ["clusters", _, "node-groups", _]) => "DescribeNodegroup",
        ("DELETE", ["clusters", _, "node-groups", _]) => "DeleteNodegroup",
        ("POST", ["clusters", _, "node-groups", _, "update-config"]) => "UpdateNodegroupConfig",
        ("POST", ["clusters", _, "node-groups", _, "update-version"]) => "UpdateNodegroupVersion",
        ("POST", ["clusters", _, "addons"]) => "CreateAddon",
        ("GET", ["clusters", _, "addons"]) => "ListAddons",
        ("GET", ["clusters", _, "addons", _]) => "DescribeAddon",
        ("DELETE", ["clusters", _, "addons", _]) => "DeleteAddon",
        ("POST", ["clusters", _, "access-entries"]) => "CreateAccessEntry",
        ("GET", ["clusters", _, "access-entries"]) => "ListAccessEntries",
        ("GET", ["clusters", _, "access-entries", _]) => "DescribeAccessEntry",
        ("DELETE", ["clusters", _, "access-entries", _]) => "DeleteAccessEntry",
        ("POST", ["clusters", _, "access-entries", _, "access-policies"]) => {
            "AssociateAccessPolicy"
        }
        ("GET", ["clusters", _, "access-entries", _, "access-policies"]) => {
            "ListAssociatedAccessPolicies"
        }
        ("DELETE", ["clusters", _, "access-entries", _, "access-policies", _]) => {
            "DisassociateAccessPolicy"
        }
        ("POST", ["tags", ..]) => "TagResource",
        ("GET", ["tags", ..]) => "ListTagsForResource",
        ("DELETE", ["tags", ..]) => "UntagResource",
        _ => "Unknown",
    }
}

/// S3 is REST too (path-style, as the SDK addresses moto). The SDK names most operations in
/// an `x-id` query parameter; the rest follow from the method, whether a key follows the
/// bucket, and the sub-resource in the query.
fn s3_operation(method: &str, path: &str, query: &str) -> String {
    let params = parse_form(query);
    if let Some((_, id)) = params.iter().find(|(k, _)| k == "x-id") {
        return id.clone();
    }
    let has_key = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    let sub = params.first().map(|(k, _)| k.as_str()).unwrap_or("");
    let op = match (method, has_key, sub) {
        ("GET", false, "") if path == "/" => "ListBuckets",
        ("GET", false, "versioning") => "GetBucketVersioning",
        ("PUT", false, "versioning") => "PutBucketVersioning",
        ("GET", false, "versions") => "ListObjectVersions",
        ("GET", false, "tagging") => "GetBucketTagging",
        ("PUT", false, "tagging") => "PutBucketTagging",
        ("GET", false, "encryption") => "GetBucketEncryption",
        ("PUT", false, "encryption") => "PutBucketEncryption",
        ("GET", false, "publicAccessBlock") => "GetPublicAccessBlock",
        ("PUT", false, "publicAccessBlock") => "PutPublicAccessBlock",
        ("GET", false, _) => "ListObjects",
        ("PUT", false, "") => "CreateBucket",
        ("HEAD", false, _) => "HeadBucket",
        ("DELETE", false, "") => "DeleteBucket",
        ("GET", true, "") => "GetObject",
        ("PUT", true, "") => "PutObject",
        ("HEAD", true, _) => "HeadObject",
        ("DELETE", true, "") => "DeleteObject",
        _ => "Unknown",
    };
    op.to_string()
}

fn parse_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// A URL path segment, decoded (`+` is itself in a path, unlike in a form).
fn path_decode(s: &str) -> String {
    percent_decode(&s.replace('+', "%2B"))
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An answer to write back: the status line and headers as received (or made here), the
/// decoded body; framing is redone on the way out.
struct Answer {
    start: Vec<u8>,
    status: u16,
    headers: Vec<Vec<u8>>,
    body: Vec<u8>,
}

impl Answer {
    fn new(status: u16, reason: &str, headers: &[(&str, &str)], body: String) -> Answer {
        Answer {
            start: format!("HTTP/1.1 {status} {reason}\r\n").into_bytes(),
            status,
            headers: headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}\r\n").into_bytes())
                .collect(),
            body: body.into_bytes(),
        }
    }

    fn text(status: u16, reason: &str, body: &str) -> Answer {
        Answer::new(
            status,
            reason,
            &[("Content-Type", "text/plain")],
            body.to_string(),
        )
    }

    /// Framing headers replaced: the body's own length, and `Connection: close`.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.start.clone();
        for line in &self.headers {
            let name = header_name(line);
            let framing = [
                "content-length",
                "transfer-encoding",
                "connection",
                "keep-alive",
            ];
            if !framing.iter().any(|f| name.eq_ignore_ascii_case(f)) {
                out.extend_from_slice(line);
            }
        }
        out.extend_from_slice(
            format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                self.body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&self.body);
        out
    }
}

/// The throttling error each protocol's real service sends, so that the SDK's retry
/// classifier sees a throttling code (and, for EC2, a 503).
fn throttling_answer(req: &Request) -> Answer {
    let id = req.request_id();
    if req.json_target {
        // awsJson. SQS is awsQuery-compatible: the SDK takes the code from x-amzn-query-error,
        // and SQS documents `RequestThrottled` as its throttling error.
        if req.service() == "sqs" {
            return Answer::new(
                400,
                "Bad Request",
                &[
                    ("Content-Type", "application/x-amz-json-1.0"),
                    ("x-amzn-RequestId", &id),
                    ("x-amzn-query-error", "RequestThrottled;Sender"),
                ],
                r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Rate exceeded"}"#
                    .to_string(),
            );
        }
        return Answer::new(
            400,
            "Bad Request",
            &[
                ("Content-Type", "application/x-amz-json-1.1"),
                ("x-amzn-RequestId", &id),
            ],
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_string(),
        );
    }
    match req.service() {
        "ec2" => Answer::new(
            503,
            "Service Unavailable",
            &[("Content-Type", "text/xml;charset=UTF-8")],
            ec2_error(
                "RequestLimitExceeded",
                "Request limit exceeded.",
                &req.request_id(),
            ),
        ),
        "eks" => Answer::new(
            429,
            "Too Many Requests",
            &[
                ("Content-Type", "application/json"),
                ("x-amzn-RequestId", &id),
                ("x-amzn-ErrorType", "TooManyRequestsException"),
            ],
            r#"{"message":"Too many requests"}"#.to_string(),
        ),
        // restXml, answered the way S3 slows a client down.
        "s3" => Answer::new(
            503,
            "Slow Down",
            &[
                ("Content-Type", "application/xml"),
                ("x-amz-request-id", &id),
            ],
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                 <Message>Please reduce your request rate.</Message><RequestId>{id}</RequestId>\
                 </Error>"
            ),
        ),
        // awsQuery: IAM, STS, ELB.
        _ => Answer::new(
            400,
            "Bad Request",
            &[("Content-Type", "text/xml"), ("x-amzn-RequestId", &id)],
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>\
                 <Message>Rate exceeded</Message></Error><RequestId>{id}</RequestId></ErrorResponse>"
            ),
        ),
    }
}

/// An error answer with `code` and `message`, in the protocol of the request's service.
fn error_answer(req: &Request, code: &str, message: &str) -> Answer {
    let id = req.request_id();
    let json_message = serde_json::to_string(message).unwrap();
    if req.json_target {
        return Answer::new(
            400,
            "Bad Request",
            &[
                ("Content-Type", "application/x-amz-json-1.1"),
                ("x-amzn-RequestId", &id),
            ],
            format!(r#"{{"__type":"{code}","message":{json_message}}}"#),
        );
    }
    let xml_message = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    match req.service() {
        "ec2" => Answer::new(
            400,
            "Bad Request",
            &[("Content-Type", "text/xml;charset=UTF-8")],
            ec2_error(code, message, &id),
        ),
        // restJson: the code in x-amzn-ErrorType.
        "eks" => Answer::new(
            400,
            "Bad Request",
            &[
                ("Content-Type", "application/json"),
                ("x-amzn-RequestId", &id),
                ("x-amzn-ErrorType", code),
            ],
            format!(r#"{{"message":{json_message}}}"#),
        ),
        // awsQuery: IAM, STS, ELB.
        _ => Answer::new(
            400,
            "Bad Request",
            &[("Content-Type", "text/xml"), ("x-amzn-RequestId", &id)],
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
                 <Message>{xml_message}</Message></Error><RequestId>{id}</RequestId></ErrorResponse>"
            ),
        ),
    }
}

/// EC2's `DependencyViolation`, worded as EC2 words it for the resource being deleted.
fn dependency_violation_answer(req: &Request) -> Answer {
    let operation = req.op.split(':').nth(1).unwrap_or_default();
    let id = |k: &str| req.param(k).unwrap_or("unknown").to_string();
    let message = match operation {
        "DeleteVpc" => format!(
            "The vpc '{}' has dependencies and cannot be deleted.",
            id("VpcId")
        ),
        "DeleteSubnet" => format!(
            "The subnet '{}' has dependencies and cannot be deleted.",
            id("SubnetId")
        ),
        "DeleteSecurityGroup" => format!("resource {} has a dependent object", id("GroupId")),
        "DetachInternetGateway" | "DeleteInternetGateway" => format!(
            "Network {} has some mapped public address(es). Please unmap those public \
             address(es) before detaching the gateway.",
            req.param("VpcId")
                .or(req.param("InternetGatewayId"))
                .unwrap_or("unknown")
        ),
        _ => {
            let first_id = req
                .params
                .iter()
                .find(|(k, _)| k.ends_with("Id"))
                .map(|(_, v)| v.as_str())
                .unwrap_or("unknown");
            format!("The resource '{first_id}' has dependencies and cannot be deleted.")
        }
    };
    Answer::new(
        400,
        "Bad Request",
        &[("Content-Type", "text/xml;charset=UTF-8")],
        ec2_error("DependencyViolation", &message, &req.request_id()),
    )
}

fn ec2_error(code: &str, message: &str, id: &str) -> String {
    let message = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>{id}</RequestID></Response>"
    )
}
