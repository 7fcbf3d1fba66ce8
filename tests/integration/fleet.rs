//! Workshop fleets (`meshstack fleet ...`, `reap`, `down --name`) end to end against moto,
//! through the real binary, on the AWS stages only.
//!
//! moto gives every EKS cluster of one server the same OIDC issuer, where AWS gives each its
//! own; several clusters in one account would then share one IAM OIDC provider, which is not
//! what happens on AWS. The tests that build more than one cluster in one account talk to
//! moto through the fault proxy with a transform that makes each cluster's issuer its own
//! ([`unique_issuers`]), and nothing else changed.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{FaultProxy, Faults, MatchedError, RateBucket, Transform};
use crate::support::{describe, expected_full_inventory, Clients, Meshstack, Moto, REGION};

const AWS_STAGES: &str = "network,nat,iam,cluster,nodegroup,karpenter-infra";
const EXPIRES_TAG: &str = "meshstack.io/expires-at";

fn stack_yaml(name: &str, nat: &str) -> String {
    format!(
        "name: {name}\nregion: us-east-1\nkubernetes_version: \"1.36\"\nnetwork:\n  nat: {nat}\n"
    )
}

/// What one environment with `network.nat: single` holds after the AWS stages.
fn single_nat_inventory() -> BTreeMap<&'static str, usize> {
    let mut inv = expected_full_inventory();
    inv.insert("nat-gateway", 1);
    inv.insert("elastic-ip", 1);
    inv
}

/// Rewrites an EKS answer's OIDC issuer to one derived from the cluster's name.
fn issuer_of_its_own(body: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_string();
    };
    let Some(cluster) = v.get_mut("cluster") else {
        return body.to_string();
    };
    let name = cluster["name"].as_str().unwrap_or_default().to_string();
    let id: String = name.bytes().map(|b| format!("{b:02X}")).collect();
    if let Some(issuer) = cluster.pointer_mut("/identity/oidc/issuer") {
        *issuer = format!("https://oidc.eks.{REGION}.amazonaws.com/id/{id}").into();
    }
    v.to_string()
}

pub(crate) fn unique_issuers() -> Faults {
    let t = Transform(Arc::new(issuer_of_its_own));
    Faults {
        transforms: BTreeMap::from([
            ("eks:DescribeCluster".to_string(), t.clone()),
            ("eks:CreateCluster".to_string(), t),
        ]),
        ..Faults::default()
    }
}

/// moto, the proxy in front of it, and the binary talking through the proxy with its waits
/// scaled down.
struct Fleet {
    moto: Moto,
    aws: Clients,
    _proxy: FaultProxy,
    ms: Meshstack,
}

impl Fleet {
    async fn start(faults: Faults) -> Fleet {
        let moto = Moto::start();
        let aws = moto.clients().await;
        let proxy = FaultProxy::start(&moto.endpoint(), faults);
        let mut ms = Meshstack::new(Some(proxy.endpoint()));
        ms.extra_env
            .push(("MESHSTACK_WAIT_SCALE".into(), "20".into()));
        Fleet {
            moto,
            aws,
            _proxy: proxy,
            ms,
        }
    }
}

/// The JSON lines of an output.
fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn fleet_summary(out: &std::process::Output) -> serde_json::Value {
    json_lines(out)
        .into_iter()
        .find(|v| v["event"] == "fleet-summary")
        .unwrap_or_else(|| panic!("no fleet-summary line in\n{}", describe(out)))
}

/// Environment -> (reads, writes) from the `api-calls` line of `fleet ... -o json`.
fn env_calls(out: &std::process::Output) -> BTreeMap<String, (u64, u64)> {
    let calls = json_lines(out)
        .into_iter()
        .find(|v| v["event"] == "api-calls")
        .unwrap_or_else(|| panic!("no api-calls line in\n{}", describe(out)));
    calls["envs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v["reads"].as_u64().unwrap(), v["writes"].as_u64().unwrap()),
            )
        })
        .collect()
}

fn results(out: &std::process::Output) -> BTreeMap<String, String> {
    fleet_summary(out)["envs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["env"].as_str().unwrap().to_string(),
                e["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_of_four_builds_each_its_own_converges_hands_out_and_goes_away() {
    let f = Fleet::start(unique_issuers()).await;
    let stack = f.ms.stack_file("fleet.yaml", &stack_yaml("ws", "single"));
    let stack = stack.to_str().unwrap();
    let fleet = |verb: &str, extra: &[&str]| {
        let mut args = vec!["fleet", verb, "--stack", stack, "--count", "4"];
        args.extend_from_slice(extra);
        f.ms.run(&args)
    };

    // plan: every environment, the quotas, the price per hour and per day, the fleet's total.
    let out = fleet("plan", &["--only", AWS_STAGES, "--parallel", "3"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for env in ["ws-1", "ws-2", "ws-3", "ws-4"] {
        assert!(text.contains(env), "{text}");
    }
    assert!(text.contains("/h") && text.contains("/day"), "{text}");
    assert!(text.contains("fleet of 4"), "{text}");
    assert!(text.contains("VPCs per Region"), "{text}");

    // up: four environments, each with exactly its own resources.
    let out = fleet(
        "up",
        &["--only", AWS_STAGES, "--parallel", "4", "-o", "json"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        results(&out).values().all(|r| r == "done"),
        "{}",
        describe(&out)
    );
    let events = json_lines(&out);
    assert!(
        events
            .iter()
            .any(|e| e["env"] == "ws-3" && e["stage"] == "network"),
        "progress events carry the environment"
    );
    for env in ["ws-1", "ws-2", "ws-3", "ws-4"] {
        assert_eq!(f.aws.inventory(env).await, single_nat_inventory(), "{env}");
        assert!(
            f.ms.state_dir().join(env).join("state.json").exists(),
            "{env} has its own journal"
        );
    }
    let vpcs = f.aws.ec2.describe_vpcs().send().await.unwrap();
    assert_eq!(
        vpcs.vpcs().len(),
        5,
        "the default VPC and one per environment"
    );

    // up again: no write at all, by meshstack's count and by moto's.
    f.moto.start_recording();
    let out = fleet("up", &["--only", AWS_STAGES, "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(f.moto.recorded_writes(), Vec::<String>::new());
    for (env, (_, writes)) in env_calls(&out) {
        assert_eq!(writes, 0, "{env}");
    }

    // One environment is an ordinary stack: its own status works, with the others untouched.
    // `fleet status` exits as `status` does: 3, the Kubernetes stages are still to do.
    let out = fleet("status", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("so far"), "{text}");

    // handout: a kubeconfig per environment that kube's own loader reads, one page listing all.
    // Its kubeconfigs assume each environment's attendee role, which the `access` stage makes
    // (`attendees` tests it in depth).
    let out = fleet("up", &["--only", "access"]);
    assert!(out.status.success(), "{}", describe(&out));
    let dir = f.ms.dir.path().join("handout");
    let out = fleet(
        "handout",
        &["--out", dir.to_str().unwrap(), "--parallel", "3"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    // Private to the host until it hands the folder out (no other local user can swap a
    // kubeconfig in it meanwhile).
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ws-1")), 0o700);
    assert_eq!(mode(&dir.join("ws-1/kubeconfig")), 0o600);
    let index = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for env in ["ws-1", "ws-2", "ws-3", "ws-4"] {
        let path = dir.join(env).join("kubeconfig");
        let kc = kube::config::Kubeconfig::read_from(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let cluster = &kc.clusters[0].cluster.as_ref().unwrap();
        assert!(cluster
            .server
            .as_deref()
            .unwrap_or("")
            .starts_with("https://"));
        let exec = kc.auth_infos[0]
            .auth_info
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap();
        assert_eq!(exec.command.as_deref(), Some("aws"));
        let args = exec.args.clone().unwrap_or_default();
        assert!(
            args.windows(2).any(|w| w == ["--cluster-name", env]),
            "{args:?}"
        );
        assert!(
            index.contains(env) && readme.contains(env),
            "{env} on the page"
        );
    }
    for ui in ["kiali", "jaeger", "grafana"] {
        assert!(index.contains(ui), "{ui}");
    }

    // down: nothing tagged left, in any environment — also ws-2, whose journal is gone, and
    // ws-4, which `--count 3` does not name (found by the fleet's tag).
    std::fs::remove_dir_all(f.ms.state_dir().join("ws-2")).unwrap();
    let out = f.ms.run(&[
        "fleet",
        "down",
        "--yes",
        "--stack",
        stack,
        "--count",
        "3",
        "--parallel",
        "4",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("also tearing down ws-4"),
        "{}",
        describe(&out)
    );
    for env in ["ws-1", "ws-2", "ws-3", "ws-4"] {
        assert_eq!(f.aws.inventory(env).await, Default::default(), "{env}");
    }
    let vpcs = f.aws.ec2.describe_vpcs().send().await.unwrap();
    assert_eq!(vpcs.vpcs().len(), 1, "only the default VPC");
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_refuse_a_fleet_that_does_not_fit_before_any_write() {
    let moto = Moto::start();
    let aws = moto.clients().await;
    let mut ms = Meshstack::with_moto(&moto);
    ms.extra_env
        .push(("MESHSTACK_WAIT_SCALE".into(), "20".into()));
    let single = ms.stack_file("single.yaml", &stack_yaml("qs", "single"));
    let per_zone = ms.stack_file("zones.yaml", &stack_yaml("qz", "per-zone"));

    // Five VPCs per region, one of them the default: a fleet of 5 does not fit.
    moto.start_recording();
    let out = ms.run(&[
        "fleet",
        "up",
        "--stack",
        single.to_str().unwrap(),
        "--count",
        "5",
        "--only",
        AWS_STAGES,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("VPCs per Region") && err.contains("L-F678F1CE"),
        "{err}"
    );
    assert!(err.contains("fewer environments"), "{err}");
    assert_eq!(moto.recorded_writes(), Vec::<String>::new());

    // A NAT gateway per zone: three Elastic IPs an environment, AWS's documented default of
    // five (moto does not know the EC2 quota codes), so a fleet of 2 does not fit.
    let out = ms.run(&[
        "fleet",
        "up",
        "--stack",
        per_zone.to_str().unwrap(),
        "--count",
        "2",
        "--only",
        AWS_STAGES,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let eip = err
        .lines()
        .find(|l| l.contains("L-0263D0A3"))
        .unwrap_or_else(|| panic!("no Elastic IP line in\n{err}"));
    assert!(
        eip.contains("Elastic IP") && eip.contains("over by 1"),
        "{eip}"
    );
    assert!(err.contains("documented default"), "{err}");
    assert!(err.contains("nat: single"), "{err}");
    assert!(
        !err.lines()
            .any(|l| l.contains("L-F678F1CE") && l.contains("over")),
        "two VPCs fit: {err}"
    );
    // plan says the same, with exit 2.
    let out = ms.run(&[
        "fleet",
        "plan",
        "--stack",
        per_zone.to_str().unwrap(),
        "--count",
        "2",
        "--only",
        AWS_STAGES,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("L-0263D0A3"));
    assert_eq!(moto.recorded_writes(), Vec::<String>::new());

    // --ignore-quotas turns the refusal into a warning (network and NAT only, to stay quick).
    let out = ms.run(&[
        "fleet",
        "up",
        "--stack",
        per_zone.to_str().unwrap(),
        "--count",
        "2",
        "--only",
        "network,nat",
        "--ignore-quotas",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));

    // The single-stack up gets the same check for one environment: with six Elastic IPs
    // taken (the two environments above), one more stack of three NAT gateways does not fit.
    let per_zone_one = ms.stack_file("one.yaml", &stack_yaml("qone", "per-zone"));
    moto.start_recording();
    let out = ms.run(&[
        "up",
        "--stack",
        per_zone_one.to_str().unwrap(),
        "--only",
        AWS_STAGES,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("L-0263D0A3"), "{err}");
    assert_eq!(moto.recorded_writes(), Vec::<String>::new());
    let out = ms.run(&[
        "plan",
        "--stack",
        per_zone_one.to_str().unwrap(),
        "--only",
        AWS_STAGES,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/h") && text.contains("/day"), "{text}");
    assert_eq!(aws.inventory("qone").await, Default::default());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_failing_environment_leaves_the_others_to_finish_and_the_rerun_finishes_it() {
    let armed = Arc::new(AtomicBool::new(true));
    let faults = Faults {
        matched_errors: vec![MatchedError {
            op: "ec2:CreateVpc".into(),
            // The VPC's stack tag: environment 4's only.
            value: "ff-4".into(),
            code: "UnauthorizedOperation".into(),
            message: "You are not authorized to perform this operation.".into(),
            armed: armed.clone(),
        }],
        ..unique_issuers()
    };
    let f = Fleet::start(faults).await;
    let stack = f.ms.stack_file("fleet.yaml", &stack_yaml("ff", "single"));
    let stack = stack.to_str().unwrap();
    let up = || {
        f.ms.run(&[
            "fleet", "up", "--stack", stack, "--count", "4", "--only", AWS_STAGES, "-o", "json",
        ])
    };
    let out = up();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let r = results(&out);
    assert_eq!(r["ff-4"], "failed", "{r:?}");
    for env in ["ff-1", "ff-2", "ff-3"] {
        assert_eq!(r[env], "done", "{r:?}");
        assert_eq!(f.aws.inventory(env).await, single_nat_inventory(), "{env}");
    }
    let failed = fleet_summary(&out)["envs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["env"] == "ff-4")
        .unwrap()
        .clone();
    assert_eq!(failed["failed_stage"], "network", "{failed}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("UnauthorizedOperation"),
        "{failed}"
    );
    assert!(!f.aws.inventory("ff-4").await.contains_key("vpc"));
    let status =
        f.ms.run(&["fleet", "status", "--stack", stack, "--count", "4"]);
    assert_eq!(status.status.code(), Some(1), "{}", describe(&status));

    // The text table names the failure too, and the exit code is 1.
    let out = f.ms.run(&[
        "fleet", "up", "--stack", stack, "--count", "4", "--only", AWS_STAGES,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table.lines().find(|l| l.contains("ff-4")).unwrap();
    assert!(
        line.contains("failed") && line.contains("network"),
        "{table}"
    );

    // The fault is gone: the rerun finishes ff-4 and writes nothing in the others.
    armed.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = up();
    assert!(out.status.success(), "{}", describe(&out));
    let calls = env_calls(&out);
    for env in ["ff-1", "ff-2", "ff-3"] {
        assert_eq!(calls[env].1, 0, "{env} written on the rerun");
    }
    assert!(calls["ff-4"].1 > 0);
    for env in ["ff-1", "ff-2", "ff-3", "ff-4"] {
        assert_eq!(f.aws.inventory(env).await, single_nat_inventory(), "{env}");
    }
}

/// SDK clients in the account of `role_arn`, through moto's STS.
async fn clients_in(moto: &Moto, role_arn: &str) -> Clients {
    let creds = aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
    let base = meshstack::aws::sdk_defaults()
        .region(aws_config::Region::new(REGION))
        .credentials_provider(creds)
        .endpoint_url(moto.endpoint())
        .load()
        .await;
    let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
        .session_name("tests")
        .configure(&base)
        .build()
        .await;
    let sdk = base
        .to_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build();
    Clients {
        ec2: aws_sdk_ec2::Client::new(&sdk),
        eks: aws_sdk_eks::Client::new(&sdk),
        iam: aws_sdk_iam::Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
        events: aws_sdk_eventbridge::Client::new(&sdk),
    }
}

/// EC2 throttles each account and region with request token buckets: mutating actions 200
/// tokens refilled at 5 a second, describes 100 at 20 a second (AWS's documented defaults).
/// A fleet of 30 with a NAT gateway per zone makes about 1,200 mutating EC2 calls within its
/// first minutes: some 200 s of backlog at 5 a second. Modelled here at a fifth of the fleet
/// (6 environments: capacities and refill divided by 5) and time divided by 20 (the binary's
/// waits and back-offs are, `MESHSTACK_WAIT_SCALE`; the refill is multiplied by the same).
fn ec2_account_buckets() -> Vec<RateBucket> {
    let (fifth, scale) = (5.0, 20.0);
    vec![
        RateBucket {
            service: "ec2".into(),
            writes_only: true,
            capacity: 200.0 / fifth,
            refill_per_sec: 5.0 * scale / fifth,
        },
        RateBucket {
            service: "ec2".into(),
            writes_only: false,
            capacity: 100.0 / fifth,
            refill_per_sec: 20.0 * scale / fifth,
        },
    ]
}

/// A workshop fleet in one account is throttled by AWS as a whole: every environment must still
/// finish, each with exactly its own resources (the retries wait for the account's bucket
/// instead of giving up on it), and `fleet down` must still remove them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_throttled_by_its_accounts_request_buckets_still_finishes_every_environment() {
    let f = Fleet::start(Faults {
        buckets: ec2_account_buckets(),
        ..unique_issuers()
    })
    .await;
    let stack = f.ms.stack_file("fleet.yaml", &stack_yaml("tb", "per-zone"));
    let stack = stack.to_str().unwrap();
    let out = f.ms.run(&[
        "fleet",
        "up",
        "--stack",
        stack,
        "--count",
        "6",
        "--parallel",
        "6",
        "--only",
        AWS_STAGES,
        "--ignore-quotas",
        "-o",
        "json",
    ]);
    let throttled = f._proxy.stats().throttled;
    assert!(
        out.status.success(),
        "{throttled} calls throttled\n{}",
        describe(&out)
    );
    assert!(
        throttled > 0,
        "the buckets never ran dry: nothing was tested"
    );
    for i in 1..=6 {
        let env = format!("tb-{i}");
        assert_eq!(
            f.aws.inventory(&env).await,
            expected_full_inventory(),
            "{env}"
        );
    }

    // The evening: `fleet down` under the same buckets removes everything.
    let before = f._proxy.stats().throttled;
    let out = f.ms.run(&[
        "fleet",
        "down",
        "--yes",
        "--stack",
        stack,
        "--count",
        "6",
        "--parallel",
        "6",
        "-o",
        "json",
    ]);
    let throttled = f._proxy.stats().throttled - before;
    assert!(
        out.status.success(),
        "{throttled} calls throttled\n{}",
        describe(&out)
    );
    assert!(
        throttled > 0,
        "the teardown was never throttled: nothing was tested"
    );
    for i in 1..=6 {
        let env = format!("tb-{i}");
        assert_eq!(f.aws.inventory(&env).await, Default::default(), "{env}");
    }
}

/// At a terminal, `fleet up` draws one live line per environment (redrawn in place) and ends
/// with the table.
#[tokio::test(flavor = "multi_thread")]
async fn at_a_terminal_fleet_up_draws_a_live_line_per_environment_then_the_table() {
    let f = Fleet::start(unique_issuers()).await;
    let stack = f.ms.stack_file("fleet.yaml", &stack_yaml("tt", "single"));
    let stack = stack.to_str().unwrap();
    let out = f.ms.run_on_terminal(&[
        "fleet",
        "up",
        "--stack",
        stack,
        "--count",
        "3",
        "--only",
        "network,iam",
    ]);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    // Redrawn in place: cursor movements and line erasures, not a scroll of lines.
    assert!(
        screen.contains("\x1b[1A") || screen.contains("\x1b[2K"),
        "no redraw on the terminal:\n{screen:?}"
    );
    for env in ["tt-1", "tt-2", "tt-3"] {
        // Its live line named it with what it was doing ...
        assert!(
            screen
                .split(['\r', '\n'])
                .any(|l| l.contains(env) && (l.contains("network") || l.contains("iam"))),
            "no live line for {env}:\n{screen:?}"
        );
        // ... and the table ends it.
        let row = screen
            .lines()
            .rev()
            .find(|l| l.contains(env))
            .unwrap_or_default();
        assert!(
            row.contains("done"),
            "{env}'s last line: {row:?}\n{screen:?}"
        );
    }
    // Not the plain timestamped lines of a pipe.
    assert!(
        !screen
            .lines()
            .any(|l| l.starts_with(|c: char| c.is_ascii_digit()) && l.contains("tt-1 [")),
        "{screen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_accounts_through_assume_role_each_hold_their_own_environment() {
    let moto = Moto::start();
    let mut ms = Meshstack::with_moto(&moto);
    ms.extra_env
        .push(("MESHSTACK_WAIT_SCALE".into(), "20".into()));
    let roles = [
        "arn:aws:iam::111111111111:role/workshop",
        "arn:aws:iam::222222222222:role/workshop",
        "arn:aws:iam::333333333333:role/workshop",
    ];
    let accounts = ms.stack_file(
        "accounts.yaml",
        &format!(
            "- {}\n- role_arn: {}\n  external_id: table-2\n- {}\n",
            roles[0], roles[1], roles[2]
        ),
    );
    let stack = ms.stack_file("fleet.yaml", &stack_yaml("acc", "per-zone"));
    let out = ms.run(&[
        "fleet",
        "up",
        "--stack",
        stack.to_str().unwrap(),
        "--count",
        "3",
        "--accounts",
        accounts.to_str().unwrap(),
        "--only",
        AWS_STAGES,
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let summary = fleet_summary(&out);
    let envs = summary["envs"].as_array().unwrap();
    for (i, account) in ["111111111111", "222222222222", "333333333333"]
        .iter()
        .enumerate()
    {
        assert_eq!(envs[i]["account"], *account, "{summary}");
    }
    // Each environment's resources are in its own account, and only there.
    let caller = moto.clients().await;
    for (i, role) in roles.iter().enumerate() {
        let aws = clients_in(&moto, role).await;
        for (j, env) in ["acc-1", "acc-2", "acc-3"].iter().enumerate() {
            let inv = aws.inventory(env).await;
            if i == j {
                assert_eq!(inv, expected_full_inventory(), "{env} in account {}", i + 1);
            } else {
                assert_eq!(
                    inv,
                    Default::default(),
                    "{env} leaked into account {}",
                    i + 1
                );
            }
        }
    }
    for env in ["acc-1", "acc-2", "acc-3"] {
        assert_eq!(
            caller.inventory(env).await,
            Default::default(),
            "{env} in the caller's"
        );
    }

    // fleet down tears each down in its own account.
    let out = ms.run(&[
        "fleet",
        "down",
        "--yes",
        "--stack",
        stack.to_str().unwrap(),
        "--count",
        "3",
        "--accounts",
        accounts.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    for (i, role) in roles.iter().enumerate() {
        let aws = clients_in(&moto, role).await;
        assert_eq!(
            aws.inventory(&format!("acc-{}", i + 1)).await,
            Default::default()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_nine_of_fleet_up_then_up_leaves_no_duplicates() {
    let faults = Faults {
        // Slow enough to be killed in the middle of it.
        latency: Duration::from_millis(15),
        ..unique_issuers()
    };
    let f = Fleet::start(faults).await;
    let stack = f.ms.stack_file("fleet.yaml", &stack_yaml("kl", "single"));
    let stack = stack.to_str().unwrap();
    let mut child =
        f.ms.command(&[
            "fleet", "up", "--stack", stack, "--count", "3", "--only", AWS_STAGES, "-o", "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once some environment is inside its cluster stage: the networks are (partly)
    // built, clusters are being created.
    let stdout = child.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed = false;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains("\"stage\":\"cluster\"") {
            child.kill().unwrap(); // SIGKILL
            killed = true;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no cluster stage within 2 minutes"
        );
    }
    child.wait().unwrap();
    assert!(killed, "fleet up ended before it reached a cluster stage");
    let before: Vec<_> = futures_inventory(&f.aws, &["kl-1", "kl-2", "kl-3"]).await;
    assert!(
        before.iter().any(|inv| inv != &single_nat_inventory()),
        "killed too late: everything was built already"
    );

    let out = f.ms.run(&[
        "fleet",
        "up",
        "--stack",
        stack,
        "--count",
        "3",
        "--only",
        AWS_STAGES,
        "--force-unlock",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    for env in ["kl-1", "kl-2", "kl-3"] {
        assert_eq!(f.aws.inventory(env).await, single_nat_inventory(), "{env}");
    }
}

async fn futures_inventory(aws: &Clients, envs: &[&str]) -> Vec<BTreeMap<&'static str, usize>> {
    let mut out = Vec::new();
    for env in envs {
        out.push(aws.inventory(env).await);
    }
    out
}

/// The `meshstack.io/expires-at` tag of a stack's VPC.
async fn vpc_expiry(aws: &Clients, stack: &str) -> Option<String> {
    let vpcs = aws
        .ec2
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:meshstack.io/stack")
                .values(stack)
                .build(),
        )
        .send()
        .await
        .unwrap();
    vpcs.vpcs()
        .first()?
        .tags()
        .iter()
        .find(|t| t.key() == Some(EXPIRES_TAG))
        .and_then(|t| t.value().map(String::from))
}

#[tokio::test(flavor = "multi_thread")]
async fn reap_removes_only_the_expired_stack_and_down_by_name_needs_nothing_local() {
    let f = Fleet::start(unique_issuers()).await;
    // One stack expiring in a second (from `--expires-in`), one in eight hours (from the
    // stack file's `expires_in:`).
    let soon = f.ms.stack_file("soon.yaml", &stack_yaml("soon", "single"));
    let later = f.ms.stack_file(
        "later.yaml",
        &format!("{}expires_in: 8h\n", stack_yaml("later", "single")),
    );
    let started = std::time::SystemTime::now();
    let out = f.ms.run(&[
        "up",
        "--stack",
        soon.to_str().unwrap(),
        "--only",
        AWS_STAGES,
        "--expires-in",
        "1s",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = f.ms.run(&[
        "up",
        "--stack",
        later.to_str().unwrap(),
        "--only",
        AWS_STAGES,
    ]);
    assert!(out.status.success(), "{}", describe(&out));

    // Every resource carries the expiry, in UTC RFC 3339.
    let at = vpc_expiry(&f.aws, "later")
        .await
        .expect("later's expiry tag");
    assert!(
        at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );
    let secs = |s: &str| -> u64 {
        // 2026-11-30T15:56:03Z -> seconds since the epoch, by days from civil.
        let (y, mo, d) = (
            s[0..4].parse::<i64>().unwrap(),
            s[5..7].parse::<i64>().unwrap(),
            s[8..10].parse::<i64>().unwrap(),
        );
        let (h, mi, se) = (
            s[11..13].parse::<u64>().unwrap(),
            s[14..16].parse::<u64>().unwrap(),
            s[17..19].parse::<u64>().unwrap(),
        );
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = (era * 146_097 + doe - 719_468) as u64;
        days * 86_400 + h * 3600 + mi * 60 + se
    };
    let t0 = started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let later_at = secs(&at);
    assert!(
        later_at >= t0 + 8 * 3600 - 5 && later_at <= t0 + 8 * 3600 + 120,
        "{at} is not about 8h from now"
    );
    assert!(vpc_expiry(&f.aws, "soon").await.is_some());
    let tagged_subnets = f
        .aws
        .ec2
        .describe_subnets()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{EXPIRES_TAG}"))
                .values(&at)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(tagged_subnets.subnets().len(), 6, "every subnet carries it");
    let cluster = f
        .aws
        .eks
        .describe_cluster()
        .name("later")
        .send()
        .await
        .unwrap();
    let tags = cluster.cluster().unwrap().tags().unwrap();
    assert_eq!(tags.get(EXPIRES_TAG), Some(&at), "the cluster carries it");
    let role_tags = f
        .aws
        .iam
        .list_role_tags()
        .role_name("later-node")
        .send()
        .await
        .unwrap();
    assert!(
        role_tags
            .tags()
            .iter()
            .any(|t| t.key() == EXPIRES_TAG && t.value() == at),
        "the node role carries it"
    );

    // The single-stack status: uptime and cost so far.
    // Exit 3: only the AWS stages are up.
    let out = f.ms.run(&["status", "--stack", later.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("so far"), "{text}");

    // With nothing local (no stack file, no journal), reap lists `soon` once its second has
    // passed (whole-second tags: polled, with a deadline), and `later` as not expired.
    std::fs::remove_dir_all(f.ms.state_dir()).unwrap();
    let line = |listed: &str, name: &str| {
        listed
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listed}"))
            .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let listed = loop {
        let out = f.ms.run(&["reap", "--region", REGION]);
        assert!(out.status.success(), "{}", describe(&out));
        let listed = String::from_utf8_lossy(&out.stdout).to_string();
        if line(&listed, "soon").contains("expired") {
            break listed;
        }
        assert!(Instant::now() < deadline, "soon never expired:\n{listed}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(line(&listed, "later").contains("expires in"), "{listed}");
    assert_eq!(
        f.aws.inventory("soon").await,
        single_nat_inventory(),
        "listing removes nothing"
    );

    let out = f.ms.run(&["reap", "--region", REGION, "--yes"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(f.aws.inventory("soon").await, Default::default());
    assert_eq!(f.aws.inventory("later").await, single_nat_inventory());

    // down --name --region: no stack file, no journal; everything found by tag.
    std::fs::remove_dir_all(f.ms.state_dir()).ok();
    let out =
        f.ms.run(&["down", "--yes", "--name", "later", "--region", REGION]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(f.aws.inventory("later").await, Default::default());
}
