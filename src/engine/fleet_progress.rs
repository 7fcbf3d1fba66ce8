//! Progress of many runs at once (a fleet's environments), each labelled: one live line per
//! environment on a terminal ([`FleetProgress`] with bars), lines prefixed with a timestamp
//! and the environment's name otherwise, and JSON lines carrying `env` for programs.
//!
//! Each environment's run gets an [`EnvReporter`], an ordinary [`Reporter`], so the engine
//! runs a fleet's stacks exactly as it runs one; the shared [`FleetProgress`] renders. Like
//! the rest of `progress`, write errors are ignored and nothing here knows about AWS.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
use serde::Serialize;

use super::graph::StageId;
use super::progress::{
    error_detail, human_duration, style, time_of_day, Event, EventKind, OutputMode, Reporter, Sink,
    Tally,
};
use super::run::{RunReport, StageResult};

/// What happened to an environment outside its stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvEvent {
    /// Its run began (it got one of the `--parallel` slots).
    Started,
    /// A message about the environment as a whole (a warning, a note).
    Info,
    /// It could not run or ended in error outside a stage (its lock, its journal); message is
    /// why.
    Failed,
}

/// Renders the progress of a fleet; shared by the environments' [`EnvReporter`]s.
pub struct FleetProgress {
    kind: Kind,
    start: Instant,
}

enum Kind {
    Json(Mutex<Sink>),
    Plain(Mutex<Sink>),
    Bars(Box<Bars>),
}

struct Bars {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    lines: Mutex<HashMap<String, Line>>,
}

/// What one environment's bar shows.
#[derive(Default)]
struct Line {
    /// Stage -> its last step, for the stages running now.
    running: BTreeMap<StageId, String>,
    ended: usize,
    total: usize,
    started_ms: Option<u64>,
}

const TICK: Duration = Duration::from_millis(150);

impl FleetProgress {
    /// The renderer for `mode` on this process's terminal: bars on stderr when stdout and
    /// stderr are terminals, timestamped lines on stderr otherwise, JSON lines on stdout.
    /// `envs` are the environments in the order to show them; `stages` how many stages each
    /// runs.
    pub fn new(mode: OutputMode, envs: &[String], stages: usize) -> Arc<FleetProgress> {
        match mode {
            OutputMode::Json => FleetProgress::json(Box::new(std::io::stdout())),
            OutputMode::Text
                if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() =>
            {
                FleetProgress::bars(envs, stages, ProgressDrawTarget::stderr())
            }
            OutputMode::Text => FleetProgress::plain(Box::new(std::io::stderr())),
            // -q: no progress lines; each environment's result is in the final table.
            OutputMode::Quiet => FleetProgress::plain(Box::new(std::io::sink())),
        }
    }

    /// JSON lines to `out`: every stage event and each environment's summary, with `env`.
    pub fn json(out: Sink) -> Arc<FleetProgress> {
        Arc::new(FleetProgress {
            kind: Kind::Json(Mutex::new(out)),
            start: Instant::now(),
        })
    }

    /// `HH:MM:SS <env> [<stage>] <text>` lines to `out`.
    pub fn plain(out: Sink) -> Arc<FleetProgress> {
        Arc::new(FleetProgress {
            kind: Kind::Plain(Mutex::new(out)),
            start: Instant::now(),
        })
    }

    /// One live line per environment, drawn on `target`.
    pub fn bars(envs: &[String], stages: usize, target: ProgressDrawTarget) -> Arc<FleetProgress> {
        let multi = MultiProgress::with_draw_target(target);
        let width = envs.iter().map(String::len).max().unwrap_or(0);
        let mut bars = HashMap::new();
        let mut lines = HashMap::new();
        for env in envs {
            let bar = multi.add(
                ProgressBar::new_spinner()
                    .with_style(style("  {prefix} {msg:.dim}"))
                    .with_prefix(format!("{env:<width$}"))
                    .with_message("waiting"),
            );
            bar.tick();
            bars.insert(env.clone(), bar);
            lines.insert(
                env.clone(),
                Line {
                    total: stages,
                    ..Line::default()
                },
            );
        }
        Arc::new(FleetProgress {
            kind: Kind::Bars(Box::new(Bars {
                multi,
                bars,
                lines: Mutex::new(lines),
            })),
            start: Instant::now(),
        })
    }

    /// The reporter for environment `env`'s run.
    pub fn reporter(self: &Arc<Self>, env: &str) -> EnvReporter {
        EnvReporter {
            env: env.to_string(),
            fleet: self.clone(),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Something about environment `env` as a whole.
    pub fn env_event(&self, env: &str, event: EnvEvent, message: &str) {
        match &self.kind {
            Kind::Json(out) => {
                #[derive(Serialize)]
                struct Line<'a> {
                    env: &'a str,
                    stage: Option<StageId>,
                    event: &'a str,
                    message: &'a str,
                    elapsed_ms: u64,
                }
                let event = match event {
                    EnvEvent::Started => "env-started",
                    EnvEvent::Info => "env-info",
                    EnvEvent::Failed => "env-failed",
                };
                json_line(
                    out,
                    &Line {
                        env,
                        stage: None,
                        event,
                        message,
                        elapsed_ms: self.elapsed_ms(),
                    },
                );
            }
            Kind::Plain(out) => {
                let text = match event {
                    EnvEvent::Started => "started".to_string(),
                    EnvEvent::Info => message.to_string(),
                    EnvEvent::Failed => format!("failed: {message}"),
                };
                plain_line(out, env, None, &text);
            }
            Kind::Bars(b) => match event {
                EnvEvent::Started => {
                    if let Some(bar) = b.bars.get(env) {
                        bar.set_style(style(
                            "{spinner:.cyan} {prefix:.bold} {elapsed:>6}  {wide_msg}",
                        ));
                        bar.reset_elapsed();
                        bar.set_message("starting");
                        bar.enable_steady_tick(TICK);
                    }
                    if let Some(line) = lock(&b.lines).get_mut(env) {
                        line.started_ms = Some(self.elapsed_ms());
                    }
                }
                EnvEvent::Info => {
                    let _ = b.multi.println(format!("[{env}] {message}"));
                }
                EnvEvent::Failed => {
                    if let Some(bar) = b.bars.get(env) {
                        bar.disable_steady_tick();
                        bar.set_style(style("✘ {prefix:.red} {wide_msg}"));
                        bar.finish_with_message(format!("failed  {message}"));
                    }
                }
            },
        }
    }

    fn stage_event(&self, env: &str, ev: &Event) {
        match &self.kind {
            Kind::Json(out) => {
                let Ok(mut v) = serde_json::to_value(ev) else {
                    return;
                };
                v["env"] = env.into();
                json_line(out, &v);
            }
            Kind::Plain(out) => {
                let text = match ev.event {
                    EventKind::Started => "started".to_string(),
                    EventKind::Step | EventKind::Info | EventKind::Summary => ev.message.clone(),
                    EventKind::Warn => format!("warning: {}", ev.message),
                    EventKind::Succeeded => format!("done: {}", ev.message),
                    EventKind::Unchanged => "unchanged".to_string(),
                    EventKind::Failed => format!("failed: {}", error_detail(ev.stage, &ev.message)),
                    EventKind::Skipped => format!("skipped: {}", ev.message),
                };
                plain_line(out, env, ev.stage, &text);
            }
            Kind::Bars(b) => {
                let Some(stage) = ev.stage else { return };
                match ev.event {
                    EventKind::Warn => {
                        let _ = b
                            .multi
                            .println(format!("warning: [{env}] [{stage}] {}", ev.message));
                        return;
                    }
                    EventKind::Info => {
                        let _ = b.multi.println(format!("[{env}] [{stage}] {}", ev.message));
                        return;
                    }
                    _ => {}
                }
                let mut lines = lock(&b.lines);
                let Some(line) = lines.get_mut(env) else {
                    return;
                };
                match ev.event {
                    EventKind::Started => {
                        line.running.insert(stage, String::new());
                    }
                    EventKind::Step => {
                        line.running.insert(stage, ev.message.clone());
                    }
                    EventKind::Succeeded
                    | EventKind::Unchanged
                    | EventKind::Failed
                    | EventKind::Skipped => {
                        line.running.remove(stage);
                        line.ended += 1;
                    }
                    _ => {}
                }
                let now: Vec<String> = line
                    .running
                    .iter()
                    .map(|(s, step)| {
                        if step.is_empty() {
                            s.to_string()
                        } else {
                            format!("{s}: {step}")
                        }
                    })
                    .collect();
                if let Some(bar) = b.bars.get(env) {
                    bar.set_message(format!(
                        "[{}/{}] {}",
                        line.ended,
                        line.total,
                        now.join("; ")
                    ));
                }
            }
        }
    }

    fn env_finished(&self, env: &str, report: &RunReport) {
        match &self.kind {
            Kind::Json(out) => {
                #[derive(Serialize)]
                struct SummaryLine<'a> {
                    env: &'a str,
                    stage: Option<StageId>,
                    event: EventKind,
                    message: String,
                    ok: bool,
                    #[serde(flatten)]
                    report: &'a RunReport,
                }
                json_line(
                    out,
                    &SummaryLine {
                        env,
                        stage: None,
                        event: EventKind::Summary,
                        message: Tally::of(report).to_string(),
                        ok: report.ok(),
                        report,
                    },
                );
            }
            Kind::Plain(out) => {
                let mut text = format!(
                    "finished in {}: {}",
                    human_duration(report.elapsed_ms),
                    Tally::of(report)
                );
                for (id, r) in &report.results {
                    if let StageResult::Failed { error, .. } = r {
                        text.push_str(&format!("; {id}: {}", error_detail(Some(id), error)));
                    }
                }
                plain_line(out, env, None, &text);
            }
            Kind::Bars(b) => {
                let Some(bar) = b.bars.get(env) else { return };
                bar.disable_steady_tick();
                let took = human_duration(report.elapsed_ms);
                if report.ok() {
                    bar.set_style(style("✔ {prefix:.green} {wide_msg}"));
                    bar.finish_with_message(format!("done    {took:>6}  {}", Tally::of(report)));
                } else {
                    let failed = report
                        .results
                        .iter()
                        .find_map(|(id, r)| match r {
                            StageResult::Failed { error, .. } => {
                                Some(format!("{id}: {}", error_detail(Some(id), error)))
                            }
                            _ => None,
                        })
                        .unwrap_or_else(|| "interrupted".to_string());
                    bar.set_style(style("✘ {prefix:.red} {wide_msg}"));
                    bar.finish_with_message(format!("failed  {took:>6}  {failed}"));
                }
            }
        }
    }

    /// The fleet is over: stop every spinner (an environment that never started keeps its
    /// line as it was).
    pub fn finish(&self) {
        if let Kind::Bars(b) = &self.kind {
            for bar in b.bars.values() {
                if !bar.is_finished() {
                    bar.disable_steady_tick();
                    bar.finish();
                }
            }
        }
    }
}

/// One environment's view of a [`FleetProgress`], as the engine's [`Reporter`].
pub struct EnvReporter {
    env: String,
    fleet: Arc<FleetProgress>,
}

impl Reporter for EnvReporter {
    fn event(&self, ev: &Event) {
        self.fleet.stage_event(&self.env, ev);
    }

    fn finish(&self, report: &RunReport) {
        self.fleet.env_finished(&self.env, report);
    }
}

fn json_line(out: &Mutex<Sink>, value: &impl Serialize) {
    let Ok(mut line) = serde_json::to_string(value) else {
        return;
    };
    line.push('\n');
    let mut out = lock(out);
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

fn plain_line(out: &Mutex<Sink>, env: &str, stage: Option<StageId>, text: &str) {
    let stage = stage.map(|s| format!("[{s}] ")).unwrap_or_default();
    let line = format!("{} {env} {stage}{text}\n", time_of_day(SystemTime::now()));
    let mut out = lock(out);
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::run::{Outcome, StageResult};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0)).into_owned()
        }
    }

    fn ev(stage: StageId, event: EventKind, message: &str) -> Event {
        Event {
            stage: Some(stage),
            event,
            message: message.into(),
            elapsed_ms: 5,
        }
    }

    fn report(failed: bool) -> RunReport {
        RunReport {
            results: vec![(
                "network",
                if failed {
                    StageResult::Failed {
                        error: "stage `network` failed: ec2:CreateVpc: denied".into(),
                        elapsed_ms: 3,
                    }
                } else {
                    StageResult::Succeeded {
                        outcome: Outcome::Changed("created 14".into()),
                        elapsed_ms: 3,
                    }
                },
            )],
            elapsed_ms: 10,
        }
    }

    #[test]
    fn json_lines_carry_the_environment() {
        let buf = Buf::default();
        let fleet = FleetProgress::json(Box::new(buf.clone()));
        let a = fleet.reporter("demo-1");
        let b = fleet.reporter("demo-2");
        fleet.env_event("demo-1", EnvEvent::Started, "");
        a.event(&ev("network", EventKind::Step, "creating VPC"));
        b.event(&ev("iam", EventKind::Started, "started"));
        a.finish(&report(false));
        fleet.env_event("demo-2", EnvEvent::Failed, "stack is locked");
        let lines: Vec<serde_json::Value> = buf
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert!(lines.iter().all(|l| l["env"].is_string()), "{lines:?}");
        assert_eq!(lines[1]["env"], "demo-1");
        assert_eq!(lines[1]["stage"], "network");
        assert_eq!(lines[1]["event"], "step");
        assert_eq!(lines[2]["env"], "demo-2");
        assert_eq!(lines[3]["event"], "summary");
        assert_eq!(lines[3]["ok"], true);
        assert_eq!(lines[4]["event"], "env-failed");
        assert_eq!(lines[4]["message"], "stack is locked");
    }

    #[test]
    fn plain_lines_are_timestamped_and_prefixed() {
        let buf = Buf::default();
        let fleet = FleetProgress::plain(Box::new(buf.clone()));
        let r = fleet.reporter("demo-07");
        r.event(&ev("network", EventKind::Step, "creating VPC"));
        r.event(&ev(
            "network",
            EventKind::Failed,
            "stage `network` failed: ec2:CreateVpc: denied",
        ));
        r.finish(&report(true));
        let text = buf.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for l in &lines {
            let (time, rest) = l.split_once(' ').unwrap();
            assert_eq!(time.len(), 8, "{l}");
            assert!(rest.starts_with("demo-07 "), "{l}");
        }
        assert!(
            lines[0].ends_with("demo-07 [network] creating VPC"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("[network] failed: ec2:CreateVpc: denied"),
            "{text}"
        );
        assert!(
            lines[2].contains("finished in 10ms: 0 changed, 0 unchanged, 1 failed"),
            "{text}"
        );
        assert!(
            lines[2].contains("network: ec2:CreateVpc: denied"),
            "{text}"
        );
    }

    #[test]
    fn bars_keep_one_line_per_environment() {
        let envs = ["demo-1".to_string(), "demo-2".to_string()];
        let fleet = FleetProgress::bars(&envs, 5, ProgressDrawTarget::hidden());
        let r = fleet.reporter("demo-1");
        fleet.env_event("demo-1", EnvEvent::Started, "");
        r.event(&ev("network", EventKind::Started, "started"));
        r.event(&ev("network", EventKind::Step, "creating VPC"));
        r.event(&ev("iam", EventKind::Started, "started"));
        let Kind::Bars(b) = &fleet.kind else { panic!() };
        assert_eq!(
            b.bars["demo-1"].message(),
            "[0/5] iam; network: creating VPC"
        );
        assert_eq!(b.bars["demo-2"].message(), "waiting");
        r.event(&ev("network", EventKind::Succeeded, "created"));
        assert_eq!(b.bars["demo-1"].message(), "[1/5] iam");
        r.finish(&report(true));
        assert!(b.bars["demo-1"].is_finished());
        assert!(b.bars["demo-1"]
            .message()
            .contains("network: ec2:CreateVpc: denied"));
        fleet.finish();
        assert!(b.bars["demo-2"].is_finished());
    }
}
