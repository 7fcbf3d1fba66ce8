//! What the benchmarks share: the whole graph through the binary, as the tests drive it
//! (`tests/integration/binary_k8s.rs`) — moto for AWS (directly, or behind the tests' fault
//! proxy), the tests' local Kubernetes API server for the cluster, and the recording helm
//! (`MESHSTACK_HELM`) — plus what a run's `--output json` says: when each stage started and
//! ended, and the `api-calls` line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::apiserver::{ApiServer, Counts, Options};
use crate::support::k8s::{fake_helm, helm_calls};
use crate::support::{describe, Meshstack};

/// A positive whole number from the environment, or `default`.
pub fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// One stack: the binary pointed at an AWS endpoint and at its own local API server, with its
/// own recording helm and state folder.
pub struct World {
    pub server: ApiServer,
    pub ms: Meshstack,
    pub helm_dir: PathBuf,
    pub stack: String,
}

impl World {
    /// `aws`: where the binary's AWS calls go (moto, or a fault proxy in front of it). `env`:
    /// more environment for the binary (and so for the helm it runs).
    pub fn new(aws: &str, name: &str, env: &[(&str, String)]) -> World {
        let mut ms = Meshstack::new(Some(aws.to_string()));
        let helm_dir = ms.dir.path().join("helm");
        std::fs::create_dir_all(&helm_dir).unwrap();
        let helm = fake_helm(&helm_dir);
        let server = ApiServer::start(Options {
            charts: Some(helm_dir.clone()),
            ..Options::default()
        });
        ms.extra_env.extend(server.env());
        ms.extra_env
            .push(("MESHSTACK_HELM".into(), helm.display().to_string()));
        ms.extra_env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let stack = ms
            .stack_file(
                "stack.yaml",
                &format!("name: {name}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n"),
            )
            .display()
            .to_string();
        World {
            server,
            ms,
            helm_dir,
            stack,
        }
    }

    /// Run `verb` (`up`, `down`) on every stage with `--output json`; it must succeed, every
    /// stage with it. What the API server and helm saw are this run's alone.
    pub fn run(&self, verb: &str) -> Sample {
        self.server.reset_counts();
        let helm_before = helm_calls(&self.helm_dir).len();
        let started = Instant::now();
        let mut args = vec![verb, "--stack", &self.stack, "-o", "json"];
        if verb == "down" {
            args.push("--yes"); // no terminal to ask on
        }
        let out = self.ms.run(&args);
        let wall = started.elapsed();
        assert!(out.status.success(), "{verb}: {}", describe(&out));
        let events = json_lines(&out);
        let summary = events
            .iter()
            .find(|l| l["event"] == "summary")
            .unwrap_or_else(|| panic!("{verb}: no summary in {}", describe(&out)));
        let results = summary["results"].as_array().unwrap();
        assert_eq!(
            results.len(),
            meshstack::stages::all().len(),
            "{verb}: {summary}"
        );
        assert!(
            results.iter().all(|r| r["status"] == "succeeded"),
            "{verb}: {summary}"
        );
        let calls = events
            .iter()
            .find(|l| l["event"] == "api-calls")
            .unwrap_or_else(|| panic!("{verb}: no api-calls line in {}", describe(&out)));
        Sample {
            wall,
            stages: timeline(&events),
            aws_reads: calls["reads"].as_u64().unwrap(),
            aws_writes: calls["writes"].as_u64().unwrap(),
            api: self.server.counts(),
            helm: helm_calls(&self.helm_dir).split_off(helm_before),
            events,
        }
    }
}

/// What one run of the binary did.
pub struct Sample {
    /// From spawning the process to its exit.
    pub wall: Duration,
    /// Stage -> (started, ended), seconds from the engine's start (the events' `elapsed_ms`).
    pub stages: BTreeMap<String, (f64, f64)>,
    /// The `api-calls` line: AWS calls as meshstack counts them (every attempt).
    pub aws_reads: u64,
    pub aws_writes: u64,
    /// What the local API server was asked.
    pub api: Counts,
    /// The recording helm's calls, each as its arguments.
    pub helm: Vec<Vec<String>>,
    /// Every JSON line of stdout.
    pub events: Vec<serde_json::Value>,
}

impl Sample {
    /// When the last stage ended, on the events' clock.
    pub fn last_end(&self) -> f64 {
        self.stages.values().map(|(_, e)| *e).fold(0.0, f64::max)
    }

    /// The part of the wall time outside the engine's walk: start-up, preflight and lock
    /// before the first stage, summary, lock release and exit after the last.
    pub fn outside_stages(&self) -> f64 {
        self.wall.as_secs_f64() - self.last_end()
    }
}

pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Stage -> (started, ended) from the `started` and `succeeded`/`unchanged` events.
fn timeline(events: &[serde_json::Value]) -> BTreeMap<String, (f64, f64)> {
    let mut stages = BTreeMap::new();
    for ev in events {
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
    stages
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Seconds as a `Duration`, for the scaled delays.
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}
