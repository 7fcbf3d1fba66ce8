//! A full `up` of every stage under the times AWS and the charts really take, scaled down: does
//! meshstack overlap what can overlap and start each stage as soon as what it needs is ready?
//!
//! # The model
//! Every delay below is divided by `MESHSTACK_BENCH_SCALE` (default 60: a minute becomes a
//! second), and so are the binary's own poll intervals and deadlines (`MESHSTACK_WAIT_SCALE`).
//! - AWS, through the tests' fault-injecting proxy in front of moto: the EKS cluster answers
//!   CREATING for 15 minutes after its first ACTIVE answer, the node group for 4, the NAT
//!   gateways `pending` for 2 (`CreateNatGateway` answers `pending` too, as AWS does; moto
//!   answers `available` at once).
//! - helm, the recording stand-in (`MESHSTACK_FAKE_HELM_DELAYS`): `upgrade --install --wait`
//!   holds the release pending for as long as the real chart typically takes to come up —
//!   kube-prometheus-stack 2 minutes, istiod 1, every other chart (karpenter, Istio's base and
//!   gateway, kiali-operator) 1.
//! - the cluster, the tests' local API server: a CRD becomes Established 10 s after it
//!   appears, the ingress gateway's LoadBalancer Service gets its address 1 minute after the
//!   Service appears.
//!
//! # The critical path, computed from the graph
//! 1. An undisturbed run first (same setup, no delay): each stage's duration there, `plain(s)`
//!    (from its `started` to its `succeeded` event), and the time the process spends outside
//!    the stages (`outside`: start-up, preflight, lock, summary, exit = wall − the last
//!    stage's end).
//! 2. Each stage's modeled duration `d(s) = waits(s) + plain(s)`, where `waits(s)` is the sum
//!    of what the stage itself waits for, one after the other:
//!    - its AWS resource: `nat` the NAT gateways (2 min: they are created together and
//!      waited for before the private routes), `cluster` the cluster (15), `nodegroup` the
//!      node group (4);
//!    - for each chart it installs (as its `helm upgrade --install` steps in the undisturbed
//!      run name them, in order): `max(chart, CRD, LB)` — the chart's wait; its CRDs appear
//!      when helm starts and are Established 10 s later, inside that wait; the gateway chart's
//!      Service appears then too and its address comes 1 minute later, also inside it.
//! 3. Earliest finish `EF(s) = max(EF(p) for p in depends_on(s), 0) + d(s)`, with
//!    `depends_on` from `meshstack::stages::all()` — the stages' own code, not a copy.
//! 4. Critical path = `max EF(s) + outside`. Ratio = wall of the delayed run ÷ critical path
//!    (goal <= 1.1).
//!
//! # The floor, from the work rather than the graph
//! The longest chain of waits that cannot overlap, whatever the graph says (issue 21, "Time
//! on a real account"; goal: wall <= 1.05 × floor), with the same `d(s)`:
//! `outside + d(network) + d(cluster) + d(nodegroup) + max over FLOOR_TAILS of Σ d(s)`:
//! - `network` (the subnets, no wait): EKS's CreateCluster names subnets;
//! - `cluster` (15 min): the node group is created in a cluster that is ACTIVE;
//! - `nodegroup` (4 min): every chart with pods needs nodes; the NAT gateways' 2 minutes
//!   (which the nodes need too) run inside the cluster's 15, Istio's base chart (no pods)
//!   inside the node group's 4;
//! - then the longest of [`FLOOR_TAILS`], the chains of what needs nodes, each stage after
//!   what it cannot do without (see there).
//!
//! Each of `MESHSTACK_BENCH_RUNS` rounds (default 3, after one uncounted warm-up) runs an
//! undisturbed `up` and a delayed one, on fresh proxies, API servers and helms, one moto; the
//! ratio of a round uses that round's undisturbed run. Printed: each round's figures, the
//! median ratio, and the median round's timeline — when each stage started and ended against
//! its modeled earliest start and finish, how long after its last dependency it started and
//! how much longer than modeled it ran — so a stage that starts late or runs serially shows.
//!
//! Run by `scripts/bench` (`cargo bench --bench delays`).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod support;

#[allow(dead_code)]
mod common;

use std::collections::{BTreeMap, HashMap};

use common::{env_number, median, secs, Sample, World};
use meshstack::engine::graph::StageId;
use support::apiserver::controllers::chart_crds;
use support::apiserver::Faults as ApiFaults;
use support::fault_proxy::{FaultProxy, Faults};
use support::Moto;

const MIN: f64 = 60.0;
/// (stage, what it waits for, seconds): the AWS resources each stage polls until ready.
const AWS_WAITS: [(&str, &str, f64); 3] = [
    ("nat", "NAT gateways pending", 2.0 * MIN),
    ("cluster", "cluster CREATING", 15.0 * MIN),
    ("nodegroup", "node group CREATING", 4.0 * MIN),
];
/// (chart, seconds helm waits for it); every other chart: [`OTHER_CHART`].
const CHARTS: [(&str, f64); 2] = [("kube-prometheus-stack", 2.0 * MIN), ("istiod", MIN)];
const OTHER_CHART: f64 = MIN;
/// A CRD is Established this long after it appears.
const CRD: f64 = 10.0;
/// The gateway's LoadBalancer Service gets its address this long after it appears.
const LB: f64 = MIN;
/// The releases whose charts install CRDs (the API server's stand-in charts).
const RELEASES_WITH_CRDS: [&str; 4] = ["karpenter", "prom", "istio-base", "kiali-operator"];

/// The chains of stages that need nodes, each after what it cannot do without, from the end of
/// the node group: the floor's tail is the longest.
const FLOOR_TAILS: [&[&str]; 5] = [
    // istiod needs nodes; the gateway needs istiod's injection webhook (its LB address comes
    // inside its wait); Jaeger lives in Istio's namespace; the Kiali CR names them.
    &["istio", "jaeger", "kiali"],
    // The Kiali CR points Kiali at Prometheus and Grafana.
    &["prometheus", "kiali"],
    // The Kiali CR needs the operator's CRD and the operator to act on it.
    &["kiali-operator", "kiali"],
    // The app's pods are injected by istiod and scheduled on Karpenter's nodes; the locality
    // policies are for the app's services.
    &["istio", "app", "locality"],
    &["karpenter", "app", "locality"],
];

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let scale = env_number("MESHSTACK_BENCH_SCALE", 60);
    let runs = env_number("MESHSTACK_BENCH_RUNS", 3) as usize;
    let s = f64::from(scale);
    let graph: HashMap<StageId, Vec<StageId>> = meshstack::stages::specs(&meshstack::stages::all())
        .into_iter()
        .map(|spec| (spec.id, spec.depends_on))
        .collect();
    let order: Vec<StageId> = meshstack::stages::all().iter().map(|st| st.id()).collect();

    println!(
        "scale 1/{scale}: cluster {:.2} s, node group {:.2} s, NAT {:.2} s; charts {} s, other charts {:.2} s; CRD {:.3} s; LB {:.2} s",
        15.0 * MIN / s,
        4.0 * MIN / s,
        2.0 * MIN / s,
        CHARTS
            .iter()
            .map(|(c, d)| format!("{c} {:.2}", d / s))
            .collect::<Vec<_>>()
            .join(", "),
        OTHER_CHART / s,
        CRD / s,
        LB / s
    );

    let moto = Moto::start();
    let mut rounds = Vec::new();
    for i in 0..=runs {
        let plain = run(&moto, &format!("plain-{i}"), scale, false);
        let delayed = run(&moto, &format!("delayed-{i}"), scale, true);
        let round = Round::new(plain, delayed, &graph, &order, s);
        println!(
            "round {i}{}: undisturbed {:.2} s (outside the stages {:.2} s); delayed {:.2} s; critical path {:.2} s; ratio {:.3}; floor {:.2} s; wall / floor {:.3}",
            if i == 0 { " (warm-up, not counted)" } else { "" },
            round.plain.wall.as_secs_f64(),
            round.plain.outside_stages(),
            round.delayed.wall.as_secs_f64(),
            round.critical,
            round.ratio(),
            round.floor,
            round.over_floor()
        );
        if i > 0 {
            rounds.push(round);
        }
    }
    rounds.sort_by(|a, b| a.ratio().partial_cmp(&b.ratio()).unwrap());
    let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
    let r = &rounds[rounds.len() / 2];
    println!();
    println!(
        "median of {} rounds: ratio {:.3} (min {:.3}, max {:.3}; goal <= 1.1); wall {:.2} s, critical path {:.2} s",
        rounds.len(),
        median(&ratios),
        ratios[0],
        ratios[ratios.len() - 1],
        median(&rounds.iter().map(|r| r.delayed.wall.as_secs_f64()).collect::<Vec<_>>()),
        median(&rounds.iter().map(|r| r.critical).collect::<Vec<_>>()),
    );
    let over: Vec<f64> = rounds.iter().map(Round::over_floor).collect();
    let (lo, hi) = over
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    println!(
        "median of {} rounds: wall / floor {:.3} (min {lo:.3}, max {hi:.3}; goal <= 1.05); floor {:.2} s (min {:.2}, max {:.2})",
        rounds.len(),
        median(&over),
        median(&rounds.iter().map(|r| r.floor).collect::<Vec<_>>()),
        rounds.iter().map(|r| r.floor).fold(f64::MAX, f64::min),
        rounds.iter().map(|r| r.floor).fold(f64::MIN, f64::max),
    );
    println!(
        "walls: {}",
        rounds
            .iter()
            .map(|r| format!("{:.2}", r.delayed.wall.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("critical path: {}", r.path.join(" -> "));
    println!(
        "floor: network -> cluster -> nodegroup -> {}",
        r.floor_tail.join(" -> ")
    );
    println!();
    println!("The median round (s; times from the engine's start, modeled = from the graph):");
    println!("| stage | modeled: waits + undisturbed = d | modeled start | modeled end | start | end | started after its last dependency | ran longer than modeled |");
    println!("|---|---|---|---|---|---|---|---|");
    for id in &order {
        let m = &r.model[id];
        let (start, end) = r.delayed.stages[*id];
        let ready = graph[id]
            .iter()
            .map(|p| r.delayed.stages[*p].1)
            .fold(0.0, f64::max);
        let waits: Vec<String> = m
            .waits
            .iter()
            .map(|(what, d)| format!("{what} {d:.2}"))
            .collect();
        println!(
            "| {id} | {} + {:.2} = {:.2} | {:.2} | {:.2} | {start:.2} | {end:.2} | {:+.2} | {:+.2} |",
            if waits.is_empty() {
                "0".to_string()
            } else {
                waits.join(" + ")
            },
            m.plain,
            m.d,
            m.start,
            m.end,
            start - ready,
            (end - start) - m.d,
        );
    }
}

/// One undisturbed and one delayed `up`, and what the graph makes of them.
struct Round {
    plain: Sample,
    delayed: Sample,
    model: HashMap<StageId, Modeled>,
    /// Seconds: the longest path plus the time outside the stages.
    critical: f64,
    path: Vec<StageId>,
    /// Seconds: the floor (see the module docs) and its tail.
    floor: f64,
    floor_tail: Vec<&'static str>,
}

/// A stage's modeled duration and its earliest start and finish.
struct Modeled {
    waits: Vec<(String, f64)>,
    plain: f64,
    d: f64,
    start: f64,
    end: f64,
}

impl Round {
    fn new(
        plain: Sample,
        delayed: Sample,
        graph: &HashMap<StageId, Vec<StageId>>,
        order: &[StageId],
        scale: f64,
    ) -> Round {
        let mut model: HashMap<StageId, Modeled> = HashMap::new();
        // Declaration order is a topological order (the engine's tie-break relies on it too).
        for id in order {
            let (start, end) = plain.stages[*id];
            let waits: Vec<(String, f64)> = waits(id, &plain)
                .into_iter()
                .map(|(what, d)| (what, d / scale))
                .collect();
            let d = waits.iter().map(|(_, w)| w).sum::<f64>() + (end - start);
            let es = graph[id].iter().map(|p| model[p].end).fold(0.0, f64::max);
            model.insert(
                *id,
                Modeled {
                    waits,
                    plain: end - start,
                    d,
                    start: es,
                    end: es + d,
                },
            );
        }
        let last = *order
            .iter()
            .max_by(|a, b| model[*a].end.partial_cmp(&model[*b].end).unwrap())
            .unwrap();
        let mut path = vec![last];
        let mut at = last;
        while let Some(p) = graph[at]
            .iter()
            .max_by(|a, b| model[*a].end.partial_cmp(&model[*b].end).unwrap())
        {
            path.push(*p);
            at = p;
        }
        path.reverse();
        let critical = model[last].end + plain.outside_stages();
        let d = |id: &str| model.get(id).map_or(0.0, |m| m.d);
        let (tail, tail_d) = FLOOR_TAILS
            .iter()
            .map(|chain| (chain.to_vec(), chain.iter().map(|s| d(s)).sum::<f64>()))
            .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap())
            .unwrap();
        let floor = plain.outside_stages() + d("network") + d("cluster") + d("nodegroup") + tail_d;
        Round {
            plain,
            delayed,
            model,
            critical,
            path,
            floor,
            floor_tail: tail,
        }
    }

    fn over_floor(&self) -> f64 {
        self.delayed.wall.as_secs_f64() / self.floor
    }

    fn ratio(&self) -> f64 {
        self.delayed.wall.as_secs_f64() / self.critical
    }
}

/// What `stage` waits for under the model, unscaled: its AWS resource, then each chart it
/// installed in the undisturbed run, in order (see the module docs).
fn waits(stage: &str, plain: &Sample) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = AWS_WAITS
        .iter()
        .filter(|(s, _, _)| *s == stage)
        .map(|(_, what, d)| (what.to_string(), *d))
        .collect();
    for ev in &plain.events {
        if ev["stage"] != stage || ev["event"] != "step" {
            continue;
        }
        // "helm upgrade --install NAMESPACE/RELEASE (CHART-VERSION)"
        let Some(rest) = ev["message"]
            .as_str()
            .and_then(|m| m.strip_prefix("helm upgrade --install "))
        else {
            continue;
        };
        let (release, chart) = rest.split_once(" (").unwrap();
        let release = release.rsplit('/').next().unwrap();
        let chart = chart.trim_end_matches(')').rsplit_once('-').unwrap().0;
        let mut wait = chart_wait(chart);
        if RELEASES_WITH_CRDS.contains(&release) {
            wait = wait.max(CRD);
        }
        if release == meshstack::stages::istio::GATEWAY {
            wait = wait.max(LB);
        }
        out.push((format!("chart {chart}"), wait));
    }
    out
}

fn chart_wait(chart: &str) -> f64 {
    CHARTS
        .iter()
        .find(|(c, _)| *c == chart)
        .map_or(OTHER_CHART, |(_, d)| *d)
}

/// `MESHSTACK_FAKE_HELM_DELAYS`, unscaled seconds (the stand-in divides by the wait scale).
fn helm_delays() -> String {
    let mut spec: Vec<String> = CHARTS.iter().map(|(c, d)| format!("{c}={d}")).collect();
    spec.push(format!("*={OTHER_CHART}"));
    spec.join(",")
}

/// A full `up` (then a `down`, so that the next stack finds moto as empty as this one did),
/// delayed by the model at `scale` or undisturbed; the binary's waits are scaled in both.
fn run(moto: &Moto, name: &str, scale: u32, delayed: bool) -> Sample {
    let s = f64::from(scale);
    let faults = match delayed {
        false => Faults::default(),
        true => Faults {
            creating_for: BTreeMap::from([
                ("eks:DescribeCluster".to_string(), secs(15.0 * MIN / s)),
                ("eks:DescribeNodegroup".to_string(), secs(4.0 * MIN / s)),
                ("ec2:DescribeNatGateways".to_string(), secs(2.0 * MIN / s)),
            ]),
            rewrites: BTreeMap::from([(
                "ec2:CreateNatGateway".to_string(),
                (
                    u32::MAX,
                    "<state>available</state>".to_string(),
                    "<state>pending</state>".to_string(),
                ),
            )]),
            ..Faults::default()
        },
    };
    let proxy = FaultProxy::start(&moto.endpoint(), faults);
    let mut env = vec![("MESHSTACK_WAIT_SCALE", scale.to_string())];
    if delayed {
        env.push(("MESHSTACK_FAKE_HELM_DELAYS", helm_delays()));
    }
    let world = World::new(&proxy.endpoint(), name, &env);
    if delayed {
        let crd_delays = RELEASES_WITH_CRDS
            .iter()
            .flat_map(|r| chart_crds(r))
            .map(|(group, _, _, plural, _)| (format!("{plural}.{group}"), secs(CRD / s)))
            .collect();
        world.server.set_faults(ApiFaults {
            crd_delays,
            lb_delay: secs(LB / s),
            ..ApiFaults::default()
        });
    }
    let sample = world.run("up");
    world.run("down");
    sample
}
