//! Test support: a moto server per test (on a free localhost port), the meshstack binary with
//! an environment pointing at it, and an inventory of what a stack left in moto, by tag.
//!
//! moto is installed by `scripts/test` into `.venv/`; `MESHSTACK_MOTO_SERVER` overrides the
//! path. If it cannot start, the test fails — AWS tests are never silently skipped.

#![allow(dead_code)] // each test module uses a different part

pub mod access_entries;
pub mod apiserver;
pub mod browser;
pub mod chart_repo;
pub mod fault_proxy;
pub mod k8s;
pub mod local_cluster;
pub mod upstream;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const STACK_TAG: &str = "meshstack.io/stack";

/// A running moto server, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    recording: PathBuf,
    _dir: tempfile::TempDir,
}

fn moto_server_path() -> PathBuf {
    match std::env::var_os("MESHSTACK_MOTO_SERVER") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    /// Start moto on a free port and wait until it answers.
    pub fn start() -> Moto {
        let server = moto_server_path();
        assert!(
            server.exists(),
            "moto server not found at {} — run the tests through scripts/test, which installs it",
            server.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let recording = dir.path().join("recording.jsonl");
        for _attempt in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
            let child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
                .env("MOTO_RECORDER_FILEPATH", &recording)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
            let mut moto = Moto {
                child,
                port,
                recording: recording.clone(),
                _dir: tempfile::tempdir().unwrap(),
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = moto.child.try_wait() {
                    break; // exited: port taken? try another
                }
                if moto.http("GET", "/moto-api/data.json").is_some() {
                    moto._dir = dir;
                    return moto;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = moto.child.kill();
        }
        let log = std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default();
        panic!("moto server did not start; its log:\n{log}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The CPU time moto's process has used so far (user + system), from /proc; `None` off
    /// Linux. Benchmarks read it to tell the emulator's time from meshstack's.
    pub fn cpu_time(&self) -> Option<Duration> {
        // Fields 14 and 15 of /proc/PID/stat, in clock ticks: USER_HZ, 100 on Linux's ABIs.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        let after_name = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }

    /// A bare HTTP/1.1 request to moto's own API; the body, if it answered 200.
    fn http(&self, method: &str, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let ok = buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200");
        ok.then(|| {
            buf.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default()
        })
    }

    /// Start recording every request moto receives (moto's own recorder, independent of
    /// meshstack's counter).
    pub fn start_recording(&self) {
        std::fs::write(&self.recording, "").unwrap();
        self.http("POST", "/moto-api/recorder/start-recording")
            .expect("start recording");
    }

    /// The operations recorded since `start_recording`, as (operation, is_write).
    pub fn recorded(&self) -> Vec<(String, bool)> {
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(classify)
            .collect()
    }

    /// The recorded requests as moto's recorder wrote them (method, url, headers, body), with
    /// the body decoded.
    pub fn recorded_requests(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                if let (Some(b), Some(true)) = (v["body"].as_str(), v["body_encoded"].as_bool()) {
                    v["body"] = String::from_utf8_lossy(&base64_decode(b))
                        .into_owned()
                        .into();
                }
                v
            })
            .collect()
    }

    /// Just the writes.
    pub fn recorded_writes(&self) -> Vec<String> {
        self.recorded()
            .into_iter()
            .filter(|(_, w)| *w)
            .map(|(op, _)| op)
            .collect()
    }

    /// SDK clients pointed at this moto.
    pub async fn clients(&self) -> Clients {
        Clients::at(&self.endpoint()).await
    }

    /// Load balancer clients pointed at this moto (apart from [`Clients`], which other tests
    /// build field by field).
    pub async fn lb_clients(&self) -> LbClients {
        let creds =
            aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
        let sdk = meshstack::aws::sdk_defaults()
            .region(aws_config::Region::new(REGION))
            .credentials_provider(creds)
            .endpoint_url(self.endpoint())
            .load()
            .await;
        LbClients {
            elb: aws_sdk_elasticloadbalancing::Client::new(&sdk),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One recorded request -> (operation, is_write). Query protocols (EC2, IAM, STS) carry
/// `Action=` in the body, JSON protocols (SQS, EventBridge) an `X-Amz-Target` header; EKS is
/// REST, where GET reads.
fn classify(line: &str) -> (String, bool) {
    let v: serde_json::Value = serde_json::from_str(line).expect("recording line is JSON");
    let headers = &v["headers"];
    let target = headers
        .as_object()
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
        })
        .and_then(|(_, v)| v.as_str());
    let body = match (v["body"].as_str(), v["body_encoded"].as_bool()) {
        (Some(b), Some(true)) => String::from_utf8_lossy(&base64_decode(b)).into_owned(),
        (Some(b), _) => b.to_string(),
        _ => String::new(),
    };
    let op = if let Some(t) = target {
        t.rsplit('.').next().unwrap_or(t).to_string()
    } else if let Some(action) = body.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
        action.to_string()
    } else {
        let method = v["method"].as_str().unwrap_or("");
        let url = v["url"].as_str().unwrap_or("");
        return (format!("{method} {url}"), method != "GET");
    };
    let read = ["Describe", "Get", "List"]
        .iter()
        .any(|p| op.starts_with(p));
    (op, !read)
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let Some(val) = ALPHABET.iter().position(|a| *a == c) else {
            continue;
        };
        acc = (acc << 6) | val as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub eks: aws_sdk_eks::Client,
    pub iam: aws_sdk_iam::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
}

/// Classic and v2 load balancer clients, for what a cluster makes behind meshstack's back.
pub struct LbClients {
    pub elb: aws_sdk_elasticloadbalancing::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
}

fn tag_filter(stack: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{STACK_TAG}"))
        .values(stack)
        .build()
}

impl Clients {
    /// SDK clients pointed at `endpoint` (a moto, or a proxy in front of one).
    pub async fn at(endpoint: &str) -> Clients {
        let creds =
            aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
        let sdk = meshstack::aws::sdk_defaults()
            .region(aws_config::Region::new(REGION))
            .credentials_provider(creds)
            .endpoint_url(endpoint)
            .load()
            .await;
        Clients {
            ec2: aws_sdk_ec2::Client::new(&sdk),
            eks: aws_sdk_eks::Client::new(&sdk),
            iam: aws_sdk_iam::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            events: aws_sdk_eventbridge::Client::new(&sdk),
        }
    }

    /// Every resource in moto carrying `meshstack.io/stack=<stack>`, counted by kind. Kinds with
    /// nothing are absent, so an empty map means "nothing left".
    pub async fn inventory(&self, stack: &str) -> BTreeMap<&'static str, usize> {
        let mut inv = BTreeMap::new();
        let mut put = |k: &'static str, n: usize| {
            if n > 0 {
                inv.insert(k, n);
            }
        };
        let ec2 = &self.ec2;
        put(
            "vpc",
            ec2.describe_vpcs()
                .filters(tag_filter(stack))
                .send()
                .await
                .unwrap()
                .vpcs()
                .len(),
        );
        put(
            "subnet",
            ec2.describe_subnets()
                .filters(tag_filter(stack))
                .send()
                .await
                .unwrap()
                .subnets()
                .len(),
        );
        put(
            "internet-gateway",
            ec2.describe_internet_gateways()
                .filters(tag_filter(stack))
                .send()
                .await
                .unwrap()
                .internet_gateways()
                .len(),
        );
        let nats = ec2
            .describe_nat_gateways()
            .filter(tag_filter(stack))
            .send()
            .await
            .unwrap();
        // moto ignores `tag:` filters on DescribeNatGateways: check the tag here too.
        put(
            "nat-gateway",
            nats.nat_gateways()
                .iter()
                .filter(|n| n.state() != Some(&aws_sdk_ec2::types::NatGatewayState::Deleted))
                .filter(|n| {
                    n.tags()
                        .iter()
                        .any(|t| t.key() == Some(STACK_TAG) && t.value() == Some(stack))
                })
                .count(),
        );
        put(
            "elastic-ip",
            ec2.describe_addresses()
                .filters(tag_filter(stack))
                .send()
                .await
                .unwrap()
                .addresses()
                .len(),
        );
        put(
            "route-table",
            ec2.describe_route_tables()
                .filters(tag_filter(stack))
                .send()
                .await
                .unwrap()
                .route_tables()
                .len(),
        );

        let mut roles = 0;
        for r in self.iam.list_roles().send().await.unwrap().roles() {
            let tags = self
                .iam
                .list_role_tags()
                .role_name(r.role_name())
                .send()
                .await
                .unwrap();
            if tags
                .tags()
                .iter()
                .any(|t| t.key() == STACK_TAG && t.value() == stack)
            {
                roles += 1;
            }
        }
        put("iam-role", roles);
        let mut profiles = 0;
        for p in self
            .iam
            .list_instance_profiles()
            .send()
            .await
            .unwrap()
            .instance_profiles()
        {
            // The stack's own, or Karpenter's for the stack's cluster in this region (moto
            // lists tags).
            let cluster_tag = format!("kubernetes.io/cluster/{stack}");
            let has = |k: &str, v: &str| p.tags().iter().any(|t| t.key() == k && t.value() == v);
            if has(STACK_TAG, stack)
                || (has(&cluster_tag, "owned") && has("topology.kubernetes.io/region", REGION))
            {
                profiles += 1;
            }
        }
        put("instance-profile", profiles);
        let mut oidc = 0;
        for p in self
            .iam
            .list_open_id_connect_providers()
            .send()
            .await
            .unwrap()
            .open_id_connect_provider_list()
        {
            let got = self
                .iam
                .get_open_id_connect_provider()
                .open_id_connect_provider_arn(p.arn().unwrap())
                .send()
                .await
                .unwrap();
            if got
                .tags()
                .iter()
                .any(|t| t.key() == STACK_TAG && t.value() == stack)
            {
                oidc += 1;
            }
        }
        put("iam-oidc-provider", oidc);

        let mut clusters = 0;
        let mut nodegroups = 0;
        for name in self.eks.list_clusters().send().await.unwrap().clusters() {
            let c = self.eks.describe_cluster().name(name).send().await.unwrap();
            let ours = |tags: Option<&std::collections::HashMap<String, String>>| {
                tags.and_then(|t| t.get(STACK_TAG)).map(String::as_str) == Some(stack)
            };
            if ours(c.cluster().and_then(|c| c.tags())) {
                clusters += 1;
            }
            for ng in self
                .eks
                .list_nodegroups()
                .cluster_name(name)
                .send()
                .await
                .unwrap()
                .nodegroups()
            {
                let d = self
                    .eks
                    .describe_nodegroup()
                    .cluster_name(name)
                    .nodegroup_name(ng)
                    .send()
                    .await
                    .unwrap();
                if ours(d.nodegroup().and_then(|n| n.tags())) {
                    nodegroups += 1;
                }
            }
        }
        put("eks-cluster", clusters);
        put("eks-nodegroup", nodegroups);

        let mut queues = 0;
        for url in self.sqs.list_queues().send().await.unwrap().queue_urls() {
            let tags = self
                .sqs
                .list_queue_tags()
                .queue_url(url)
                .send()
                .await
                .unwrap();
            if tags
                .tags()
                .and_then(|t| t.get(STACK_TAG))
                .map(String::as_str)
                == Some(stack)
            {
                queues += 1;
            }
        }
        put("sqs-queue", queues);
        let mut rules = 0;
        for r in self.events.list_rules().send().await.unwrap().rules() {
            let tags = self
                .events
                .list_tags_for_resource()
                .resource_arn(r.arn().unwrap())
                .send()
                .await
                .unwrap();
            if tags
                .tags()
                .iter()
                .any(|t| t.key() == STACK_TAG && t.value() == stack)
            {
                rules += 1;
            }
        }
        put("eventbridge-rule", rules);
        inv
    }
}

/// What a complete AWS `up` of a 3-zone, per-zone-NAT stack leaves, by kind.
pub fn expected_full_inventory() -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("vpc", 1),
        ("subnet", 6),
        ("internet-gateway", 1),
        ("nat-gateway", 3),
        ("elastic-ip", 3),
        ("route-table", 4),
        ("iam-role", 3),
        ("iam-oidc-provider", 1),
        ("eks-cluster", 1),
        ("eks-nodegroup", 1),
        ("sqs-queue", 1),
        ("eventbridge-rule", 5),
    ])
}

/// The meshstack binary with a working folder, a state folder and an environment pointing at
/// a moto server (or at nothing).
pub struct Meshstack {
    pub dir: tempfile::TempDir,
    pub endpoint: Option<String>,
    pub extra_env: Vec<(String, String)>,
}

impl Meshstack {
    pub fn new(endpoint: Option<String>) -> Self {
        Meshstack {
            dir: tempfile::tempdir().unwrap(),
            endpoint,
            extra_env: Vec::new(),
        }
    }

    pub fn with_moto(moto: &Moto) -> Self {
        Self::new(Some(moto.endpoint()))
    }

    /// Write a stack file into the working folder; returns its path.
    pub fn stack_file(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).unwrap();
        p
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join(".meshstack")
    }

    /// Runs the binary as [`Self::command`] would, on a pseudo-terminal (util-linux `script`),
    /// the way a person at a terminal sees it: its stdout and stderr are the terminal, and the
    /// output holds what was drawn there, escape codes included.
    pub fn run_on_terminal(&self, args: &[&str]) -> Output {
        let inner = self.command(args);
        let quote =
            |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
        let line = std::iter::once(inner.get_program())
            .chain(inner.get_args())
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-qfec", &line, "/dev/null"])
            .current_dir(self.dir.path())
            .env("TERM", "xterm-256color")
            .stdin(Stdio::null());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.output()
            .expect("util-linux `script` runs the binary on a pseudo-terminal; is it installed?")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshstack"));
        cmd.args(args).current_dir(self.dir.path());
        // A clean AWS environment: nothing of the developer's leaks in.
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.starts_with("MESHSTACK_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("no-aws-credentials"),
            )
            .env("NO_COLOR", "1");
        if let Some(endpoint) = &self.endpoint {
            cmd.env("AWS_ENDPOINT_URL", endpoint)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_REGION", REGION);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

/// Every object of the manifests `meshstack render --stack STACK` writes (the helm values files
/// aside), rendered by the binary in `ms`'s folder.
pub fn rendered_manifests(ms: &Meshstack, stack: &str) -> Vec<kube::api::DynamicObject> {
    let out_dir = ms.dir.path().join("rendered");
    let out = ms.run(&[
        "render",
        "--stack",
        stack,
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let mut objects = Vec::new();
    let mut dirs = vec![out_dir];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                dirs.push(path);
            } else if name.ends_with(".yaml") && !name.ends_with("values.yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                objects.extend(meshstack::k8s::apply::parse_manifests(&text, &name).unwrap());
            }
        }
    }
    objects
}

/// Exit code, stdout and stderr, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `api-calls` line of `--output json`.
pub fn api_calls(out: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "api-calls")
        .unwrap_or_else(|| panic!("no api-calls line in\n{}", describe(out)))
}
