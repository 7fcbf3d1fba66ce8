//! A full AWS `up` under AWS's real creation times, scaled down: does meshstack overlap what
//! can overlap and start each stage as soon as what it needs is ready?
//!
//! The binary talks to moto through the fault-injecting proxy of the tests, which reports the
//! EKS cluster as CREATING for ~15 minutes after it first exists, the node group for ~4 and the
//! NAT gateways as pending for ~2, each divided by `MESHSTACK_BENCH_SCALE` (default 60); the
//! binary's own poll intervals are divided by the same factor (`MESHSTACK_WAIT_SCALE`).
//! The critical path of the AWS stages is network -> cluster -> node group: the cluster needs
//! only the subnets, and nothing needs a NAT gateway to be available before the node group's
//! nodes boot, so the NAT wait, IAM, the interruption queue and its rules must all hide under
//! the cluster's 15 minutes. Printed: wall time, the critical path (cluster and node-group
//! creation plus the calls of an undisturbed run), their ratio (target <= 1.1), and when each
//! stage started and ended.
//!
//! Run by `scripts/bench` (`cargo bench --bench delays`). moto's clusters have no Kubernetes
//! API, so the Kubernetes stages (karpenter -> app -> locality) are not part of this run.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::fault_proxy::{FaultProxy, Faults};
use support::{describe, Meshstack, Moto};

const AWS_STAGES: &str = "network,iam,cluster,nodegroup,karpenter-infra";
const MINUTE: Duration = Duration::from_secs(60);

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let scale: u32 = std::env::var("MESHSTACK_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let (cluster, nodegroup, nat) = (15 * MINUTE / scale, 4 * MINUTE / scale, 2 * MINUTE / scale);

    let moto = Moto::start();
    // An undisturbed run first: what the calls themselves cost, without any waiting.
    let plain = run(&moto, "plain", Faults::default(), scale);

    let faults = Faults {
        creating_for: BTreeMap::from([
            ("eks:DescribeCluster".to_string(), cluster),
            ("eks:DescribeNodegroup".to_string(), nodegroup),
            ("ec2:DescribeNatGateways".to_string(), nat),
        ]),
        ..Faults::default()
    };
    let delayed = run(&moto, "delayed", faults, scale);

    let critical = cluster + nodegroup + plain.wall;
    let ratio = delayed.wall.as_secs_f64() / critical.as_secs_f64();
    println!("scale 1/{scale}: cluster {cluster:?}, node group {nodegroup:?}, NAT {nat:?}");
    println!(
        "undisturbed AWS up: {:.2} s; with delays: {:.2} s",
        plain.wall.as_secs_f64(),
        delayed.wall.as_secs_f64()
    );
    println!(
        "critical path (cluster + node group creation + undisturbed run): {:.2} s; ratio {ratio:.3} (target <= 1.1)",
        critical.as_secs_f64()
    );
    println!("stage timeline (s from start):");
    for (stage, (start, end)) in &delayed.stages {
        println!("  {stage:<16} {start:>7.2} -> {end:>7.2}");
    }
}

struct Run {
    wall: Duration,
    /// stage -> (started, ended), seconds from the run's start.
    stages: BTreeMap<String, (f64, f64)>,
}

fn run(moto: &Moto, name: &str, faults: Faults, scale: u32) -> Run {
    let proxy = FaultProxy::start(&moto.endpoint(), faults);
    let mut ms = Meshstack::new(Some(proxy.endpoint()));
    ms.extra_env
        .push(("MESHSTACK_WAIT_SCALE".into(), scale.to_string()));
    let stack = ms.stack_file(
        "stack.yaml",
        &format!("name: bench-{name}\nregion: us-east-1\nkubernetes_version: \"1.34\"\n"),
    );
    let stack = stack.to_str().unwrap();
    let started = Instant::now();
    let out = ms.run(&["up", "--only", AWS_STAGES, "--stack", stack, "-o", "json"]);
    let wall = started.elapsed();
    assert!(out.status.success(), "{}", describe(&out));
    let mut stages = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(stage), Some(ms)) = (ev["stage"].as_str(), ev["elapsed_ms"].as_u64()) else {
            continue;
        };
        let at = ms as f64 / 1000.0;
        let entry = stages.entry(stage.to_string()).or_insert((at, at));
        match ev["event"].as_str() {
            Some("started") => entry.0 = at,
            Some("succeeded" | "unchanged") => entry.1 = at,
            _ => {}
        }
    }
    let down = ms.run(&["down", "--stack", stack]);
    assert!(down.status.success(), "{}", describe(&down));
    Run { wall, stages }
}
