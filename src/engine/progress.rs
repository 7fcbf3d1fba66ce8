//! Rendering the engine's events for people and for programs.
//!
//! The engine and the stages only produce [`Event`]s; a [`Reporter`] decides
//! how they look: live spinner lines on a terminal ([`BarsReporter`]),
//! timestamped log lines when the output is a file or a CI log
//! ([`PlainReporter`]), or one JSON object per line for scripts
//! ([`JsonReporter`]). Keeping indicatif out of the stages means a stage can
//! be tested with a [`RecordingReporter`] and logs never contain escape codes.
//!
//! Write errors are ignored everywhere here: a closed pipe on stdout must not
//! turn a half-built environment into a crashed run.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::graph::StageId;
use super::run::{Outcome, RunReport, StageResult};

/// Something that happened during a run.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The stage it concerns; `None` for the run as a whole.
    pub stage: Option<StageId>,
    /// What happened.
    pub event: EventKind,
    /// The step, the log line, the outcome summary, the error or the skip
    /// reason, depending on `event`.
    pub message: String,
    /// Milliseconds since the run started (one clock for every event, so
    /// events sort by it).
    pub elapsed_ms: u64,
}

/// The kinds of [`Event`]. A started stage ends with exactly one of
/// `Succeeded`, `Unchanged` or `Failed`; a stage that never starts gets
/// `Skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The stage began; message is "started".
    Started,
    /// The stage's current step.
    Step,
    /// A log line from the stage.
    Info,
    /// A warning from the stage; the run goes on.
    Warn,
    /// The stage changed something; message is its summary.
    Succeeded,
    /// The stage succeeded and had nothing to do.
    Unchanged,
    /// The stage failed; message is the full error.
    Failed,
    /// The stage did not run; message is why.
    Skipped,
    /// The run's final tally (JSON output only).
    Summary,
}

/// Receives a run's events as they happen and its report at the end.
pub trait Reporter: Send + Sync {
    /// One event; called from the task driving the run, in order.
    fn event(&self, ev: &Event);
    /// The run is over; render the summary.
    fn finish(&self, report: &RunReport);
}

/// How the user asked for output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// For people: spinner lines on a terminal, log lines otherwise.
    Text,
    /// For programs: JSON lines on stdout (and nothing else there).
    Json,
    /// Text with no progress: only warnings and failures on stderr, the result on stdout.
    Quiet,
}

/// The reporter for `mode` and the current stdout/stderr. Text output gets
/// live bars only when both stdout and stderr are terminals (anything
/// redirected is better served by plain lines). Either way progress and
/// warnings go to stderr and only the result — the tally and the table of
/// stages — to stdout, so `meshstack up > result.txt` keeps just the result.
/// JSON output is a stream of events that ends with the result: all of it on
/// stdout.
///
/// `title` names the run in headers and summaries ("meshstack up");
/// `stages` are the selected stages in the order to list them.
pub fn reporter(mode: OutputMode, title: &str, stages: &[StageId]) -> Box<dyn Reporter> {
    match mode {
        OutputMode::Json => Box::new(JsonReporter::new(Box::new(std::io::stdout()))),
        OutputMode::Text if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() => {
            Box::new(BarsReporter::new(
                title,
                stages,
                ProgressDrawTarget::stderr(),
                Box::new(std::io::stdout()),
            ))
        }
        OutputMode::Text => Box::new(PlainReporter::new(
            title,
            stages,
            Box::new(std::io::stderr()),
            Box::new(std::io::stdout()),
        )),
        OutputMode::Quiet => Box::new(
            PlainReporter::new(
                title,
                stages,
                Box::new(std::io::stderr()),
                Box::new(std::io::stdout()),
            )
            .quiet(),
        ),
    }
}

/// Where a reporter writes.
pub type Sink = Box<dyn Write + Send>;

/// One JSON object per line: every [`Event`], then a summary line
/// `{"stage": null, "event": "summary", "message", "ok", "results", "elapsed_ms"}`.
pub struct JsonReporter {
    out: Mutex<Sink>,
}

impl JsonReporter {
    /// Writes to `out`.
    pub fn new(out: Sink) -> Self {
        JsonReporter {
            out: Mutex::new(out),
        }
    }

    fn line(&self, value: &impl Serialize) {
        let Ok(mut line) = serde_json::to_string(value) else {
            return;
        };
        line.push('\n');
        let mut out = lock(&self.out);
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

impl Reporter for JsonReporter {
    fn event(&self, ev: &Event) {
        self.line(ev);
    }

    fn finish(&self, report: &RunReport) {
        #[derive(Serialize)]
        struct SummaryLine<'a> {
            stage: Option<StageId>,
            event: EventKind,
            message: String,
            ok: bool,
            #[serde(flatten)]
            report: &'a RunReport,
        }
        self.line(&SummaryLine {
            stage: None,
            event: EventKind::Summary,
            message: Tally::of(report).to_string(),
            ok: report.ok(),
            report,
        });
    }
}

/// Timestamped log lines (`HH:MM:SS [network] creating subnet`), UTC, for
/// files and CI logs; the tally and a table of results at the end, to a sink
/// of their own.
pub struct PlainReporter {
    title: String,
    stages: Vec<StageId>,
    /// Only warnings and failures as they happen.
    quiet: bool,
    state: Mutex<PlainState>,
}

struct PlainState {
    out: Sink,
    summary: Sink,
    header_done: bool,
    /// Run-relative start of each started stage, for per-stage durations.
    started: HashMap<StageId, u64>,
}

impl PlainReporter {
    /// Writes the log lines to `out` and the result to `summary`; see
    /// [`reporter`] for `title` and `stages`.
    pub fn new(title: &str, stages: &[StageId], out: Sink, summary: Sink) -> Self {
        PlainReporter {
            title: title.to_string(),
            stages: stages.to_vec(),
            quiet: false,
            state: Mutex::new(PlainState {
                out,
                summary,
                header_done: false,
                started: HashMap::new(),
            }),
        }
    }

    /// Logs only warnings and failures (`-q`); the result is written as ever.
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    fn header(&self, state: &mut PlainState) {
        if !state.header_done {
            state.header_done = true;
            let line = format!(
                "{} {}: {}\n",
                time_of_day(SystemTime::now()),
                self.title,
                self.stages.join(", ")
            );
            let _ = state.out.write_all(line.as_bytes());
        }
    }
}

impl Reporter for PlainReporter {
    fn event(&self, ev: &Event) {
        if self.quiet && !matches!(ev.event, EventKind::Warn | EventKind::Failed) {
            return;
        }
        let mut state = lock(&self.state);
        if !self.quiet {
            self.header(&mut state);
        }
        let took = |state: &PlainState| {
            let start = ev.stage.and_then(|s| state.started.get(s)).copied();
            human_duration(ev.elapsed_ms.saturating_sub(start.unwrap_or(ev.elapsed_ms)))
        };
        let text = match ev.event {
            EventKind::Started => {
                if let Some(stage) = ev.stage {
                    state.started.insert(stage, ev.elapsed_ms);
                }
                "started".to_string()
            }
            EventKind::Step | EventKind::Info | EventKind::Summary => ev.message.clone(),
            EventKind::Warn => format!("warning: {}", ev.message),
            EventKind::Succeeded => format!("done in {}: {}", took(&state), ev.message),
            EventKind::Unchanged => format!("unchanged ({})", took(&state)),
            EventKind::Failed => format!(
                "failed after {}: {}",
                took(&state),
                error_detail(ev.stage, &ev.message)
            ),
            EventKind::Skipped => format!("skipped: {}", ev.message),
        };
        let stage = ev.stage.map(|s| format!("[{s}] ")).unwrap_or_default();
        let line = format!("{} {stage}{text}\n", time_of_day(SystemTime::now()));
        let _ = state.out.write_all(line.as_bytes());
        let _ = state.out.flush();
    }

    fn finish(&self, report: &RunReport) {
        let mut state = lock(&self.state);
        if !self.quiet {
            self.header(&mut state);
        }
        let mut text = format!(
            "{} {} finished in {}: {}\n",
            time_of_day(SystemTime::now()),
            self.title,
            human_duration(report.elapsed_ms),
            Tally::of(report)
        );
        text.push_str(&summary_table(&self.stages, report));
        let _ = state.out.flush();
        let _ = state.summary.write_all(text.as_bytes());
        let _ = state.summary.flush();
    }
}

/// Live lines on a terminal, one per stage: state, elapsed time and the
/// current step. Warnings and info lines scroll above the bars; once the run
/// is over the tally and the full text of each error (a bar line is cut at
/// the terminal's width) go to the sink.
pub struct BarsReporter {
    title: String,
    multi: MultiProgress,
    bars: HashMap<StageId, ProgressBar>,
    width: usize,
    started: Mutex<HashMap<StageId, u64>>,
    out: Mutex<Sink>,
}

const TICK: Duration = Duration::from_millis(120);

impl BarsReporter {
    /// Draws on `target` (normally `ProgressDrawTarget::stderr()`; `hidden()`
    /// in tests) and writes the summary to `out`.
    pub fn new(title: &str, stages: &[StageId], target: ProgressDrawTarget, out: Sink) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let width = stages.iter().map(|s| s.len()).max().unwrap_or(0);
        let bars = stages
            .iter()
            .map(|&id| {
                let bar = ProgressBar::new_spinner()
                    .with_style(style("  {prefix} {msg:.dim}"))
                    .with_prefix(format!("{id:<width$}"))
                    .with_message("waiting");
                let bar = multi.add(bar);
                // A bar is not drawn until its first tick; waiting stages
                // should be visible from the start.
                bar.tick();
                (id, bar)
            })
            .collect();
        BarsReporter {
            title: title.to_string(),
            multi,
            bars,
            width,
            started: Mutex::new(HashMap::new()),
            out: Mutex::new(out),
        }
    }

    /// A stage the bars were not built for gets a line of its own, so no
    /// event is lost.
    fn bar(&self, stage: StageId) -> ProgressBar {
        self.bars.get(stage).cloned().unwrap_or_else(|| {
            let width = self.width;
            self.multi.add(
                ProgressBar::new_spinner()
                    .with_style(style("  {prefix} {msg:.dim}"))
                    .with_prefix(format!("{stage:<width$}")),
            )
        })
    }

    fn end(&self, bar: &ProgressBar, template: &str, state: &str, took: Option<u64>, text: &str) {
        bar.disable_steady_tick();
        bar.set_style(style(template));
        let took = took.map(human_duration).unwrap_or_default();
        bar.finish_with_message(format!("{state:<9} {took:>6}  {text}"));
    }
}

impl Reporter for BarsReporter {
    fn event(&self, ev: &Event) {
        let Some(stage) = ev.stage else {
            let _ = self.multi.println(&ev.message);
            return;
        };
        let bar = self.bar(stage);
        let took = || {
            let started = lock(&self.started).get(stage).copied();
            started.map(|s| ev.elapsed_ms.saturating_sub(s))
        };
        match ev.event {
            EventKind::Started => {
                lock(&self.started).insert(stage, ev.elapsed_ms);
                bar.set_style(style(
                    "{spinner:.cyan} {prefix:.bold} running   {elapsed:>6}  {wide_msg}",
                ));
                bar.reset_elapsed();
                bar.set_message("");
                bar.enable_steady_tick(TICK);
            }
            EventKind::Step => bar.set_message(ev.message.clone()),
            EventKind::Info | EventKind::Summary => {
                let _ = self.multi.println(format!("[{stage}] {}", ev.message));
            }
            EventKind::Warn => {
                let _ = self
                    .multi
                    .println(format!("warning: [{stage}] {}", ev.message));
            }
            EventKind::Succeeded => {
                self.end(
                    &bar,
                    "✔ {prefix:.green} {wide_msg}",
                    "done",
                    took(),
                    &ev.message,
                );
            }
            EventKind::Unchanged => {
                self.end(&bar, "✔ {prefix} {wide_msg:.dim}", "unchanged", took(), "");
            }
            EventKind::Failed => {
                self.end(
                    &bar,
                    "✘ {prefix:.red} {wide_msg}",
                    "failed",
                    took(),
                    error_detail(Some(stage), &ev.message),
                );
            }
            EventKind::Skipped => {
                self.end(
                    &bar,
                    "- {prefix:.yellow} {wide_msg}",
                    "skipped",
                    None,
                    &ev.message,
                );
            }
        }
    }

    fn finish(&self, report: &RunReport) {
        // A stage that never got an end event (there is none in a complete
        // report) must not keep a spinner thread alive.
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.disable_steady_tick();
                bar.finish();
            }
        }
        // The bars already show every stage's result; repeat only what they
        // may have cut short: the full errors.
        let mut text = format!(
            "{} finished in {}: {}\n",
            self.title,
            human_duration(report.elapsed_ms),
            Tally::of(report)
        );
        for (_, result) in &report.results {
            if let StageResult::Failed { error, .. } = result {
                text.push_str(&format!("error: {error}\n"));
            }
        }
        // All bars are finished, so nothing redraws over or under this.
        let mut out = lock(&self.out);
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// Keeps every event and the final report, for tests.
#[derive(Default)]
pub struct RecordingReporter {
    events: Mutex<Vec<Event>>,
    report: Mutex<Option<RunReport>>,
}

impl RecordingReporter {
    /// Events received so far, in order.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.events).clone()
    }

    /// The report passed to `finish`, if it was called.
    pub fn report(&self) -> Option<RunReport> {
        lock(&self.report).clone()
    }
}

impl Reporter for RecordingReporter {
    fn event(&self, ev: &Event) {
        lock(&self.events).push(ev.clone());
    }

    fn finish(&self, report: &RunReport) {
        *lock(&self.report) = Some(report.clone());
    }
}

/// Counts of how stages ended.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Tally {
    changed: usize,
    unchanged: usize,
    failed: usize,
    skipped: usize,
}

impl Tally {
    pub(crate) fn of(report: &RunReport) -> Tally {
        let mut t = Tally::default();
        for (_, result) in &report.results {
            match result {
                StageResult::Succeeded {
                    outcome: Outcome::Changed(_),
                    ..
                } => t.changed += 1,
                StageResult::Succeeded {
                    outcome: Outcome::Unchanged,
                    ..
                } => t.unchanged += 1,
                StageResult::Failed { .. } => t.failed += 1,
                StageResult::Skipped { .. } => t.skipped += 1,
            }
        }
        t
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} changed, {} unchanged, {} failed, {} skipped",
            self.changed, self.unchanged, self.failed, self.skipped
        )
    }
}

/// One indented line per stage: `stages` order first, then any other stage
/// in the report.
fn summary_table(stages: &[StageId], report: &RunReport) -> String {
    let mut order: Vec<StageId> = stages
        .iter()
        .copied()
        .filter(|s| report.result(s).is_some())
        .collect();
    for (id, _) in &report.results {
        if !order.contains(id) {
            order.push(id);
        }
    }
    let width = order.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut text = String::new();
    for id in order {
        let Some(result) = report.result(id) else {
            continue;
        };
        let (state, took, detail) = match result {
            StageResult::Succeeded {
                outcome: Outcome::Changed(summary),
                elapsed_ms,
            } => ("changed", human_duration(*elapsed_ms), summary.as_str()),
            StageResult::Succeeded {
                outcome: Outcome::Unchanged,
                elapsed_ms,
            } => ("unchanged", human_duration(*elapsed_ms), ""),
            StageResult::Failed { error, elapsed_ms } => (
                "failed",
                human_duration(*elapsed_ms),
                error_detail(Some(id), error),
            ),
            StageResult::Skipped { reason } => ("skipped", String::new(), reason.as_str()),
        };
        let line = format!("  {id:<width$}  {state:<9} {took:>6}  {detail}");
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A failed stage's error without the engine's "stage `x` failed: " prefix,
/// for places where the stage is already named on the same line.
pub(crate) fn error_detail(stage: Option<StageId>, error: &str) -> &str {
    stage
        .and_then(|s| error.strip_prefix(&format!("stage `{s}` failed: ")))
        .unwrap_or(error)
}

/// `850ms`, `12.3s`, `4m05s`, `1h02m`.
pub fn human_duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{}.{}s", ms / 1000, ms % 1000 / 100),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// `HH:MM:SS` of `t` in UTC.
pub(crate) fn time_of_day(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

pub(crate) fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("progress templates are constants")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

/// Locks, shrugging off poisoning: a reporter that panicked mid-line should
/// not take every later line down with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A sink tests can read back after the reporter wrote to it.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn ev(stage: StageId, event: EventKind, message: &str, elapsed_ms: u64) -> Event {
        Event {
            stage: Some(stage),
            event,
            message: message.to_string(),
            elapsed_ms,
        }
    }

    /// A run where network changed things, iam had nothing to do, cluster
    /// failed and nodegroup was skipped.
    fn script() -> (Vec<Event>, RunReport) {
        let events = vec![
            ev("network", EventKind::Started, "started", 0),
            ev("iam", EventKind::Started, "started", 1),
            ev("network", EventKind::Step, "creating subnet", 5),
            ev("network", EventKind::Warn, "quota nearly used", 6),
            ev("iam", EventKind::Unchanged, "no changes", 40),
            ev(
                "network",
                EventKind::Succeeded,
                "created 14 resources",
                1_500,
            ),
            ev("cluster", EventKind::Started, "started", 1_501),
            ev(
                "cluster",
                EventKind::Failed,
                "stage `cluster` failed: boom",
                2_000,
            ),
            ev(
                "nodegroup",
                EventKind::Skipped,
                "dependency `cluster` failed",
                2_000,
            ),
        ];
        let report = RunReport {
            results: vec![
                (
                    "iam",
                    StageResult::Succeeded {
                        outcome: Outcome::Unchanged,
                        elapsed_ms: 39,
                    },
                ),
                (
                    "network",
                    StageResult::Succeeded {
                        outcome: Outcome::Changed("created 14 resources".into()),
                        elapsed_ms: 1_500,
                    },
                ),
                (
                    "cluster",
                    StageResult::Failed {
                        error: "stage `cluster` failed: boom".into(),
                        elapsed_ms: 499,
                    },
                ),
                (
                    "nodegroup",
                    StageResult::Skipped {
                        reason: "dependency `cluster` failed".into(),
                    },
                ),
            ],
            elapsed_ms: 2_001,
        };
        (events, report)
    }

    const STAGES: &[StageId] = &["network", "iam", "cluster", "nodegroup"];

    fn play(reporter: &dyn Reporter) {
        let (events, report) = script();
        for e in &events {
            reporter.event(e);
        }
        reporter.finish(&report);
    }

    #[test]
    fn json_lines_parse_and_end_with_the_summary() {
        let buf = Buf::default();
        play(&JsonReporter::new(Box::new(buf.clone())));
        let text = buf.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert_eq!(lines.len(), script().0.len() + 1);
        for line in &lines {
            for key in ["stage", "event", "message", "elapsed_ms"] {
                assert!(line.get(key).is_some(), "{line} lacks {key}");
            }
        }
        assert_eq!(lines[2]["stage"], "network");
        assert_eq!(lines[2]["event"], "step");
        assert_eq!(lines[2]["message"], "creating subnet");
        assert_eq!(lines[2]["elapsed_ms"], 5);
        let summary = lines.last().unwrap();
        assert_eq!(summary["event"], "summary");
        assert_eq!(summary["stage"], serde_json::Value::Null);
        assert_eq!(summary["ok"], false);
        assert_eq!(summary["elapsed_ms"], 2_001);
        assert_eq!(
            summary["message"],
            "1 changed, 1 unchanged, 1 failed, 1 skipped"
        );
        assert_eq!(summary["results"][2]["stage"], "cluster");
        assert_eq!(summary["results"][2]["status"], "failed");
    }

    #[test]
    fn plain_lines_are_timestamped_and_end_with_a_table() {
        let buf = Buf::default();
        let result = Buf::default();
        play(&PlainReporter::new(
            "meshstack up",
            STAGES,
            Box::new(buf.clone()),
            Box::new(result.clone()),
        ));
        assert!(
            result.text().contains("finished in") && !buf.text().contains("finished in"),
            "the result goes to its own sink"
        );
        let text = buf.text() + &result.text();
        let lines: Vec<&str> = text.lines().collect();
        let stamped: Vec<&str> = lines
            .iter()
            .filter(|l| !l.starts_with("  "))
            .map(|l| {
                let (stamp, rest) = l.split_at(9);
                let b = stamp.as_bytes();
                assert!(
                    b[..8].iter().enumerate().all(|(i, c)| if i % 3 == 2 {
                        *c == b':'
                    } else {
                        c.is_ascii_digit()
                    }) && b[8] == b' ',
                    "no HH:MM:SS stamp: {l}"
                );
                rest
            })
            .collect();
        assert_eq!(
            stamped,
            [
                "meshstack up: network, iam, cluster, nodegroup",
                "[network] started",
                "[iam] started",
                "[network] creating subnet",
                "[network] warning: quota nearly used",
                "[iam] unchanged (39ms)",
                "[network] done in 1.5s: created 14 resources",
                "[cluster] started",
                "[cluster] failed after 499ms: boom",
                "[nodegroup] skipped: dependency `cluster` failed",
                "meshstack up finished in 2.0s: 1 changed, 1 unchanged, 1 failed, 1 skipped",
            ]
        );
        let table: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("  "))
            .collect();
        assert_eq!(
            table,
            [
                "  network    changed     1.5s  created 14 resources",
                "  iam        unchanged   39ms",
                "  cluster    failed     499ms  boom",
                "  nodegroup  skipped           dependency `cluster` failed",
            ]
        );
        assert!(lines.last().unwrap().starts_with("  nodegroup"));
    }

    #[test]
    fn bars_track_each_stage_and_write_the_summary() {
        let buf = Buf::default();
        let bars = BarsReporter::new(
            "meshstack up",
            STAGES,
            ProgressDrawTarget::hidden(),
            Box::new(buf.clone()),
        );
        let (events, report) = script();
        for e in &events[..3] {
            bars.event(e);
        }
        assert_eq!(bars.bars["network"].message(), "creating subnet");
        assert!(!bars.bars["network"].is_finished());
        assert_eq!(bars.bars["nodegroup"].message(), "waiting");
        for e in &events[3..] {
            bars.event(e);
        }
        assert!(bars.bars.values().all(ProgressBar::is_finished));
        assert!(bars.bars["network"].message().starts_with("done"));
        assert!(bars.bars["iam"].message().starts_with("unchanged"));
        assert_eq!(bars.bars["cluster"].message(), "failed     499ms  boom");
        assert!(bars.bars["nodegroup"].message().starts_with("skipped"));
        bars.finish(&report);
        let text = buf.text();
        assert!(text.starts_with(
            "meshstack up finished in 2.0s: 1 changed, 1 unchanged, 1 failed, 1 skipped\n"
        ));
        assert!(
            text.ends_with("\nerror: stage `cluster` failed: boom\n"),
            "{text}"
        );
    }

    #[test]
    fn durations_read_naturally() {
        let cases = [
            (0, "0ms"),
            (999, "999ms"),
            (1_000, "1.0s"),
            (12_345, "12.3s"),
            (59_999, "59.9s"),
            (60_000, "1m00s"),
            (245_000, "4m05s"),
            (3_600_000, "1h00m"),
            (3_720_000, "1h02m"),
        ];
        for (ms, want) in cases {
            assert_eq!(human_duration(ms), want, "{ms}ms");
        }
    }

    #[test]
    fn time_of_day_is_utc() {
        let cases = [
            (0, "00:00:00"),
            (59, "00:00:59"),
            (3_661, "01:01:01"),
            (86_399, "23:59:59"),
            (1_795_887_600, "17:40:00"),
        ];
        for (secs, want) in cases {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(time_of_day(t), want, "{secs}");
        }
    }
}
