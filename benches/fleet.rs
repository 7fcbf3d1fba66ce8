//! A workshop fleet under AWS's creation times, scaled down: do 30 environments in one
//! process take little longer than one, and does a converged fleet cost no more reads per
//! environment than a single stack?
//!
//! The delay model is `benches/delays.rs`'s — the EKS cluster CREATING for ~15 minutes, the
//! node group for ~4, NAT gateways pending for ~2, each divided by `MESHSTACK_BENCH_SCALE`
//! (default 60), the binary's polls divided by the same factor — but timed per resource (from
//! the first answer naming it), since 30 clusters are created at different moments. The same
//! transform gives each moto cluster an OIDC issuer of its own, as AWS does (moto gives every
//! cluster of a server the same one). Each scenario gets a fresh moto; the fleets run with
//! `--ignore-quotas` (30 environments do not fit AWS's default quotas, nor moto's).
//!
//! Measured: one environment (`meshstack up`) vs a fleet of 30 with `--parallel 30` (goal
//! <= 1.5x) and `--parallel 10` (goal <= 3.5x); a converged `fleet up` of 30 (reads per
//! environment vs a converged single `up`, writes: goal 0); the peak RSS of the 30-environment
//! run (goal < 150 MiB), read from /proc (VmHWM) every 20 ms while it runs. With each run it
//! prints moto's CPU time over the run and, for fleets, the shortest and longest environment:
//! one moto process serves the whole fleet, and what it spends is time no environment saves by
//! running beside the others (BENCHMARKS.md, "Where the rest went").
//!
//! Run by `scripts/bench` (`cargo bench --bench fleet`). `MESHSTACK_BENCH_FLEET=N` changes the
//! fleet's size (default 30).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::fault_proxy::{FaultProxy, Faults, Transform};
use support::{describe, Meshstack, Moto};

const AWS_STAGES: &str = "network,nat,iam,cluster,nodegroup,karpenter-infra";
const MINUTE: Duration = Duration::from_secs(60);

/// How long each resource stays "creating", by kind, timed from its first answer.
#[derive(Clone, Copy)]
struct Delays {
    cluster: Duration,
    nodegroup: Duration,
    nat: Duration,
}

/// Resource -> when an answer first named it.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn still_creating(seen: &Seen, key: String, delay: Duration) -> bool {
    let mut seen = seen.lock().unwrap();
    let first = *seen.entry(key).or_insert_with(Instant::now);
    first.elapsed() < delay
}

/// EKS answers: the issuer made the cluster's own; ACTIVE rewritten to CREATING until the
/// resource's delay has passed since its first answer.
fn eks_transform(seen: Seen, kind: &'static str, delay: Duration) -> Transform {
    Transform(Arc::new(move |body: &str| {
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(body) else {
            return body.to_string();
        };
        let Some(obj) = v.get_mut(kind) else {
            return body.to_string();
        };
        let name = match kind {
            "cluster" => obj["name"].as_str().unwrap_or_default().to_string(),
            _ => obj["nodegroupName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        };
        if kind == "cluster" {
            let id: String = name.bytes().map(|b| format!("{b:02X}")).collect();
            if let Some(issuer) = obj.pointer_mut("/identity/oidc/issuer") {
                *issuer = format!("https://oidc.eks.us-east-1.amazonaws.com/id/{id}").into();
            }
        }
        if obj["status"] == "ACTIVE" && still_creating(&seen, format!("{kind}/{name}"), delay) {
            obj["status"] = "CREATING".into();
        }
        v.to_string()
    }))
}

/// CreateNatGateway and DescribeNatGateways: each gateway `pending` until its delay has passed
/// since the first answer naming it.
fn nat_transform(seen: Seen, delay: Duration) -> Transform {
    Transform(Arc::new(move |body: &str| {
        const OPEN: &str = "<natGatewayId>";
        const READY: &str = "</natGatewayId><state>available</state>";
        let mut out = String::with_capacity(body.len());
        let mut rest = body;
        while let Some(i) = rest.find(OPEN) {
            out.push_str(&rest[..i + OPEN.len()]);
            rest = &rest[i + OPEN.len()..];
            let Some(end) = rest.find("</natGatewayId>") else {
                break;
            };
            let id = &rest[..end];
            out.push_str(id);
            rest = &rest[end..];
            if rest.starts_with(READY) && still_creating(&seen, format!("nat/{id}"), delay) {
                out.push_str("</natGatewayId><state>pending</state>");
                rest = &rest[READY.len()..];
            }
        }
        out.push_str(rest);
        out
    }))
}

fn faults(d: Delays) -> Faults {
    let seen: Seen = Arc::default();
    let cluster = eks_transform(seen.clone(), "cluster", d.cluster);
    Faults {
        transforms: BTreeMap::from([
            ("eks:DescribeCluster".to_string(), cluster.clone()),
            ("eks:CreateCluster".to_string(), cluster),
            (
                "eks:DescribeNodegroup".to_string(),
                eks_transform(seen.clone(), "nodegroup", d.nodegroup),
            ),
            // CreateNatGateway answers `pending` too, as AWS does (moto: `available`).
            (
                "ec2:CreateNatGateway".to_string(),
                nat_transform(seen.clone(), d.nat),
            ),
            (
                "ec2:DescribeNatGateways".to_string(),
                nat_transform(seen, d.nat),
            ),
        ]),
        ..Faults::default()
    }
}

/// A fresh moto, the proxy with the delays in front of it, and the binary.
struct World {
    moto: Moto,
    _proxy: FaultProxy,
    ms: Meshstack,
    stack: String,
}

fn world(name: &str, d: Delays, scale: u32) -> World {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint(), faults(d));
    let mut ms = Meshstack::new(Some(proxy.endpoint()));
    ms.extra_env
        .push(("MESHSTACK_WAIT_SCALE".into(), scale.to_string()));
    let stack = ms.stack_file(
        "stack.yaml",
        &format!("name: {name}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n"),
    );
    let stack = stack.to_str().unwrap().to_string();
    World {
        moto,
        _proxy: proxy,
        ms,
        stack,
    }
}

/// Runs the binary, sampling its peak RSS (VmHWM, KiB) until it exits.
fn timed(ms: &Meshstack, args: &[&str]) -> (Output, Duration, u64) {
    let started = Instant::now();
    let child = ms
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(text) = std::fs::read_to_string(&status_path) {
                    if let Some(kib) = text
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    {
                        peak = peak.max(kib);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let out = child.wait_with_output().unwrap();
    let wall = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    (out, wall, sampler.join().unwrap())
}

fn api_calls(out: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "api-calls")
        .unwrap_or_else(|| panic!("no api-calls line in\n{}", describe(out)))
}

/// What a timed run cost the emulator: moto's CPU time over the run, as a share of its wall.
fn moto_busy(w: &World, before: Option<Duration>, wall: Duration) -> String {
    match (before, w.moto.cpu_time()) {
        (Some(b), Some(a)) => format!(
            "moto busy {:.1} s ({:.0}% of one core)",
            (a - b).as_secs_f64(),
            100.0 * (a - b).as_secs_f64() / wall.as_secs_f64()
        ),
        _ => "moto's CPU time unknown".into(),
    }
}

/// The first and last environment's own elapsed time, from the fleet's summary line.
fn env_spread(out: &Output) -> String {
    let elapsed: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "fleet-summary")
        .map(|v| {
            v["envs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["elapsed_ms"].as_f64())
                .map(|ms| ms / 1000.0)
                .collect()
        })
        .unwrap_or_default();
    let min = elapsed.iter().copied().fold(f64::INFINITY, f64::min);
    let max = elapsed.iter().copied().fold(0.0, f64::max);
    format!("environments took {min:.1}-{max:.1} s each")
}

/// `fleet up` of `n` environments, `parallel` at once: its output, wall time, peak RSS and
/// what it cost moto ([`moto_busy`]).
fn fleet_up(w: &World, n: usize, parallel: usize) -> (Output, Duration, u64, String) {
    let (n, parallel) = (n.to_string(), parallel.to_string());
    let before = w.moto.cpu_time();
    let (out, wall, rss) = timed(
        &w.ms,
        &[
            "fleet",
            "up",
            "--stack",
            &w.stack,
            "--count",
            &n,
            "--parallel",
            &parallel,
            "--only",
            AWS_STAGES,
            "--ignore-quotas",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let busy = moto_busy(w, before, wall);
    (out, wall, rss, busy)
}

fn main() {
    let scale: u32 = std::env::var("MESHSTACK_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let n: usize = std::env::var("MESHSTACK_BENCH_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let d = Delays {
        cluster: 15 * MINUTE / scale,
        nodegroup: 4 * MINUTE / scale,
        nat: 2 * MINUTE / scale,
    };
    println!(
        "scale 1/{scale}: cluster {:?}, node group {:?}, NAT {:?}; fleet of {n}",
        d.cluster, d.nodegroup, d.nat
    );

    // One environment, then a converged up of it: the single stack's reads.
    let one = world("one", d, scale);
    let before = one.moto.cpu_time();
    let (out, wall_one, rss_one) = timed(
        &one.ms,
        &[
            "up", "--only", AWS_STAGES, "--stack", &one.stack, "-o", "json",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let busy_one = moto_busy(&one, before, wall_one);
    let (out, _, _) = timed(
        &one.ms,
        &[
            "up", "--only", AWS_STAGES, "--stack", &one.stack, "-o", "json",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let single_reads = api_calls(&out)["reads"].as_u64().unwrap();
    drop(one);
    println!(
        "one environment (up): {:.2} s, {busy_one}, peak RSS {:.1} MiB; converged up: {single_reads} reads",
        wall_one.as_secs_f64(),
        rss_one as f64 / 1024.0
    );

    // The fleet, all at once; then converged.
    let all = world("ws", d, scale);
    let (out, wall_all, rss_all, busy_all) = fleet_up(&all, n, n);
    println!(
        "fleet of {n}, --parallel {n}: {:.2} s = {:.2}x one (goal <= 1.5x); {}; {}; peak RSS {:.1} MiB (goal < 150)",
        wall_all.as_secs_f64(),
        wall_all.as_secs_f64() / wall_one.as_secs_f64(),
        env_spread(&out),
        busy_all,
        rss_all as f64 / 1024.0
    );
    let (out, wall_conv, rss_conv, busy_conv) = fleet_up(&all, n, n);
    let calls = api_calls(&out);
    let per_env: Vec<(u64, u64)> = calls["envs"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| (c["reads"].as_u64().unwrap(), c["writes"].as_u64().unwrap()))
        .collect();
    let max_reads = per_env.iter().map(|c| c.0).max().unwrap_or(0);
    let writes: u64 =
        per_env.iter().map(|c| c.1).sum::<u64>() + calls["fleet"]["writes"].as_u64().unwrap();
    println!(
        "converged fleet up of {n}: {:.2} s, {busy_conv}, peak RSS {:.1} MiB; reads per environment max {max_reads} \
         (single stack {single_reads}; goal <=), plus {} before they start (accounts, quotas); writes {writes} (goal 0)",
        wall_conv.as_secs_f64(),
        rss_conv as f64 / 1024.0,
        calls["fleet"]["reads"]
    );
    drop(all);

    // The fleet, ten at a time.
    let ten = world("wt", d, scale);
    let (out, wall_ten, rss_ten, busy_ten) = fleet_up(&ten, n, 10);
    println!(
        "fleet of {n}, --parallel 10: {:.2} s = {:.2}x one (goal <= 3.5x); {}; {}; peak RSS {:.1} MiB",
        wall_ten.as_secs_f64(),
        wall_ten.as_secs_f64() / wall_one.as_secs_f64(),
        env_spread(&out),
        busy_ten,
        rss_ten as f64 / 1024.0
    );
}
