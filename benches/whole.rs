//! The whole graph through the binary: a full `up` of every stage on an empty account and cluster,
//! a converged `up` right after it, and the `down` that follows — against moto, the tests'
//! local Kubernetes API server and the recording helm (see `common`), the binary's waits at
//! their real pace (no `MESHSTACK_WAIT_SCALE`), as a user runs it.
//!
//! Per scenario, over `MESHSTACK_BENCH_RUNS` runs (default 5), each on a fresh API server,
//! helm and state folder and a new stack name in one moto (warmed up by one uncounted run):
//! the wall time of the process (median, min, max); AWS calls as the `api-calls` line counts
//! them (every attempt); the API server's requests by verb and its writes; helm's calls by
//! command. Counts are medians too: the number of polls in a wait depends on timing.
//! Printed as a Markdown table for BENCHMARKS.md.
//!
//! Run by `scripts/bench` (`cargo bench --bench whole`).

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, unused_macros)]
mod support;

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;

use common::{env_number, median, Sample, World};
use support::Moto;

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let runs = env_number("MESHSTACK_BENCH_RUNS", 5) as usize;
    let moto = Moto::start();
    let mut scenarios: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    // Run 0 warms moto up (its first request of each service loads models) and is not counted.
    for i in 0..=runs {
        let world = World::new(&moto.endpoint(), &format!("whole-{i}"), &[]);
        let samples = [
            ("1 full `up` (empty account and cluster)", world.run("up")),
            ("2 converged `up` (nothing to do)", world.run("up")),
            ("3 `down` (everything)", world.run("down")),
        ];
        let line: Vec<String> = samples
            .iter()
            .map(|(name, s)| format!("{} {:.0} ms", &name[2..], s.wall.as_secs_f64() * 1e3))
            .collect();
        eprintln!(
            "run {i}{}: {}",
            if i == 0 { " (warm-up)" } else { "" },
            line.join("; ")
        );
        if i > 0 {
            for (name, s) in samples {
                scenarios.entry(name).or_default().push(s);
            }
        }
    }

    println!("| scenario | runs | median ms | min ms | max ms | AWS reads | AWS writes | API requests (by verb) | API writes | helm calls (by command) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, samples) in &scenarios {
        let walls: Vec<f64> = samples.iter().map(|s| s.wall.as_secs_f64() * 1e3).collect();
        let med = |f: &dyn Fn(&Sample) -> u64| {
            median(&samples.iter().map(|s| f(s) as f64).collect::<Vec<_>>())
        };
        let mut verbs: Vec<&String> = samples.iter().flat_map(|s| s.api.by_verb.keys()).collect();
        verbs.sort();
        verbs.dedup();
        let by_verb: Vec<String> = verbs
            .iter()
            .map(|v| format!("{v} {}", med(&|s| s.api.verb(v))))
            .collect();
        let mut commands: Vec<String> = samples
            .iter()
            .flat_map(|s| s.helm.iter().map(|c| helm_command(c)))
            .collect();
        commands.sort();
        commands.dedup();
        let by_command: Vec<String> = commands
            .iter()
            .map(|c| {
                let n = med(&|s| {
                    s.helm
                        .iter()
                        .filter(|call| helm_command(call) == *c)
                        .count() as u64
                });
                format!("{c} {n}")
            })
            .collect();
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} ({}) | {} | {} ({}) |",
            &name[2..],
            samples.len(),
            median(&walls),
            walls.iter().copied().fold(f64::INFINITY, f64::min),
            walls.iter().copied().fold(0.0, f64::max),
            med(&|s| s.aws_reads),
            med(&|s| s.aws_writes),
            med(&|s| s.api.requests()),
            by_verb.join(", "),
            med(&|s| s.api.writes.len() as u64),
            med(&|s| s.helm.len() as u64),
            by_command.join(", "),
        );
    }

    // Where the time goes: each stage's time in the run with the median wall time.
    let medians: Vec<(&str, &Sample)> = scenarios
        .iter()
        .map(|(name, samples)| {
            let mut sorted: Vec<&Sample> = samples.iter().collect();
            sorted.sort_by_key(|s| s.wall);
            (&name[2..], sorted[sorted.len() / 2])
        })
        .collect();
    println!();
    println!(
        "| stage (ms, in the median run) | {} |",
        medians
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(medians.len()));
    for stage in meshstack::stages::all() {
        let cells: Vec<String> = medians
            .iter()
            .map(|(_, s)| {
                s.stages
                    .get(stage.id())
                    .map_or("-".to_string(), |(a, b)| format!("{:.0}", (b - a) * 1e3))
            })
            .collect();
        println!("| {} | {} |", stage.id(), cells.join(" | "));
    }
    let outside: Vec<String> = medians
        .iter()
        .map(|(_, s)| format!("{:.0}", s.outside_stages() * 1e3))
        .collect();
    println!(
        "| outside the stages (start-up, preflight, lock, exit) | {} |",
        outside.join(" | ")
    );
}

/// `upgrade`, `list`, `get values`, ...: what a recorded helm call did.
fn helm_command(call: &[String]) -> String {
    match call {
        [get, what, ..] if get == "get" => format!("get {what}"),
        [cmd, ..] => cmd.clone(),
        [] => String::new(),
    }
}
