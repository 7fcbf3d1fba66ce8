//! The parallel walk over the stage graph.
//!
//! [`run`] starts every selected stage as soon as the stages it waits on have
//! succeeded, runs independent stages concurrently (bounded by
//! [`RunOptions::max_parallel`]), skips whatever waits on a failure, and stops
//! starting stages once cancelled. All stage futures are polled from the
//! calling task through a `FuturesUnordered`, so stages may borrow from the
//! caller (no `'static`, no `tokio::spawn`) and one slow stage never blocks
//! the scheduling of the others.
//!
//! Stages report progress through their [`StageHandle`]; the engine turns
//! that into [`Event`]s for a [`Reporter`] and never renders anything itself.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;

use super::graph::{Graph, StageId};
use super::progress::{Event, EventKind, Reporter};

/// Which way edges point during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Build: a stage starts after the stages it depends on.
    Forward,
    /// Teardown: a stage starts after the stages that depend on it.
    Reverse,
}

/// A cancellation flag shared by the engine and every stage; cloning shares it. Cancelling
/// stops the engine from starting more stages, and a running stage stops at its next wait
/// (see [`crate::retry`]): one Ctrl-C during a 15-minute wait ends the run in moments.
pub use crate::retry::CancelToken;

/// How to walk the graph.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Build or teardown order.
    pub direction: Direction,
    /// Most stages running at once; 0 means no limit.
    pub max_parallel: usize,
    /// Shared with every stage; once cancelled no further stage starts.
    pub cancel: CancelToken,
}

impl Default for RunOptions {
    /// Forward, unlimited parallelism, a fresh token.
    fn default() -> Self {
        RunOptions {
            direction: Direction::Forward,
            max_parallel: 0,
            cancel: CancelToken::new(),
        }
    }
}

/// What a successful stage did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It changed something; a one-line summary, e.g. "created 14 resources".
    Changed(String),
    /// Everything was already as desired.
    Unchanged,
}

/// How one stage ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum StageResult {
    /// The stage's work returned `Ok`.
    Succeeded {
        /// What it did.
        outcome: Outcome,
        /// Time the stage ran.
        elapsed_ms: u64,
    },
    /// The stage's work returned `Err`.
    Failed {
        /// `stage `<id>` failed: <error chain>`.
        error: String,
        /// Time the stage ran.
        elapsed_ms: u64,
    },
    /// The stage never started.
    Skipped {
        /// `dependency `x` failed`, `dependent `x` failed` or `cancelled`.
        reason: String,
    },
}

/// The result of a whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// One entry per selected stage, in the order each ended (skipped stages
    /// when they were skipped). Serialized as an array of
    /// `{"stage": id, "status": ..., ...}`.
    #[serde(serialize_with = "serialize_results")]
    pub results: Vec<(StageId, StageResult)>,
    /// Wall time of the whole run.
    pub elapsed_ms: u64,
}

impl RunReport {
    /// Whether every selected stage succeeded (a skipped stage is not a
    /// success: it only happens after a failure or a cancellation).
    pub fn ok(&self) -> bool {
        self.results
            .iter()
            .all(|(_, r)| matches!(r, StageResult::Succeeded { .. }))
    }

    /// Stages that failed, in the order they failed.
    pub fn failed(&self) -> Vec<StageId> {
        self.results
            .iter()
            .filter(|(_, r)| matches!(r, StageResult::Failed { .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    /// How stage `id` ended; `None` if it was not selected.
    pub fn result(&self, id: &str) -> Option<&StageResult> {
        self.results.iter().find(|(s, _)| *s == id).map(|(_, r)| r)
    }
}

fn serialize_results<S: serde::Serializer>(
    results: &[(StageId, StageResult)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Entry<'a> {
        stage: StageId,
        #[serde(flatten)]
        result: &'a StageResult,
    }
    serializer.collect_seq(
        results
            .iter()
            .map(|(stage, result)| Entry { stage, result }),
    )
}

/// A stage's way to report progress and see cancellation. Cheap to clone;
/// it stays usable (its events are then dropped) after the run has ended.
#[derive(Clone)]
pub struct StageHandle {
    id: StageId,
    events: mpsc::UnboundedSender<Event>,
    run_start: Instant,
    cancel: CancelToken,
}

impl StageHandle {
    /// The stage this handle belongs to.
    pub fn id(&self) -> StageId {
        self.id
    }

    /// Announces the step now under way ("creating subnet 2/3"); shown on the
    /// stage's progress line.
    pub fn step(&self, msg: impl Into<String>) {
        self.emit(EventKind::Step, msg.into());
    }

    /// Something worth a log line that is not the current step.
    pub fn info(&self, msg: impl Into<String>) {
        self.emit(EventKind::Info, msg.into());
    }

    /// Something the user should look at even though the stage goes on.
    pub fn warn(&self, msg: impl Into<String>) {
        self.emit(EventKind::Warn, msg.into());
    }

    /// The run's cancellation token.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    fn emit(&self, event: EventKind, message: String) {
        // A send fails only once the run is over and nobody listens any more.
        let _ = self.events.send(Event {
            stage: Some(self.id),
            event,
            message,
            elapsed_ms: millis(self.run_start.elapsed()),
        });
    }
}

impl crate::retry::Progress for StageHandle {
    fn step(&self, message: String) {
        StageHandle::step(self, message);
    }
}

impl fmt::Debug for StageHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageHandle").field("id", &self.id).finish()
    }
}

/// What woke the scheduler.
enum Wake<T> {
    Event(Event),
    Ended(T),
    Cancelled,
}

#[derive(Clone, Copy, PartialEq)]
enum Slot {
    Waiting,
    Running,
    Ended,
}

/// Runs `work` for every stage in `selected` and reports how each ended.
///
/// # Guarantees
/// - Edges are the graph's, restricted to `selected` *through* unselected
///   stages: if `c` depends on `b` depends on `a` and only `a` and `c` are
///   selected, `c` still waits for `a`. A dependency outside the selection
///   counts as satisfied (the caller checks that it exists).
/// - [`Direction::Forward`]: a stage starts once every selected stage it
///   (transitively) depends on has succeeded. [`Direction::Reverse`]: once
///   every selected stage that (transitively) depends on it has succeeded.
/// - Among stages ready at once, the one declared first starts first; at most
///   `max_parallel` run at a time (0 = unlimited).
/// - A failure skips everything that waits on it, with the reason
///   "dependency `x` failed" (reverse: "dependent `x` failed"); unrelated
///   stages still run to completion.
/// - After cancellation no stage starts (the rest are skipped as
///   "cancelled"); a running stage goes on until its next wait ([`crate::retry::pause`],
///   [`crate::retry::or_park`]) and is dropped there, reported failed with "interrupted":
///   never in the middle of a call.
/// - The error of a failed stage is reported as
///   "stage `x` failed: {err:#}".
/// - Every selected stage appears exactly once in the report, and
///   [`Reporter::finish`] is called with it before this returns. Ids not in
///   `graph` are ignored.
pub async fn run<F, Fut>(
    graph: &Graph,
    selected: &[StageId],
    opts: RunOptions,
    reporter: &dyn Reporter,
    work: F,
) -> RunReport
where
    F: Fn(StageId, StageHandle) -> Fut,
    Fut: Future<Output = Result<Outcome, anyhow::Error>>,
{
    let run_start = Instant::now();

    // Local indices follow declaration order, so scanning 0..n for ready
    // stages gives the declared start order for free.
    let mut positions: Vec<usize> = selected
        .iter()
        .filter_map(|id| graph.position(id))
        .collect();
    positions.sort_unstable();
    positions.dedup();
    let all = graph.ids();
    let ids: Vec<StageId> = positions.iter().map(|&p| all[p]).collect();
    let local: HashMap<StageId, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let n = ids.len();

    // waits_on[i]: what stage i waits for; waiters[j]: who waits for j.
    let mut waits_on: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiters: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, id) in ids.iter().enumerate() {
        for anc in graph.ancestors(id) {
            if let Some(&a) = local.get(anc) {
                let (stage, waits_for) = match opts.direction {
                    Direction::Forward => (i, a),
                    Direction::Reverse => (a, i),
                };
                waits_on[stage].push(waits_for);
                waiters[waits_for].push(stage);
            }
        }
    }
    let mut remaining: Vec<usize> = waits_on.iter().map(Vec::len).collect();
    let skip_reason = |failed: StageId| match opts.direction {
        Direction::Forward => format!("dependency `{failed}` failed"),
        Direction::Reverse => format!("dependent `{failed}` failed"),
    };

    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let mut slots = vec![Slot::Waiting; n];
    let mut results: Vec<(StageId, StageResult)> = Vec::with_capacity(n);
    let mut running = FuturesUnordered::new();
    let mut cancel_seen = false;

    let emit = |stage: StageId, event: EventKind, message: String| {
        reporter.event(&Event {
            stage: Some(stage),
            event,
            message,
            elapsed_ms: millis(run_start.elapsed()),
        });
    };

    loop {
        if opts.cancel.is_cancelled() {
            for i in 0..n {
                if slots[i] == Slot::Waiting {
                    slots[i] = Slot::Ended;
                    let reason = "cancelled".to_string();
                    emit(ids[i], EventKind::Skipped, reason.clone());
                    results.push((ids[i], StageResult::Skipped { reason }));
                }
            }
        } else {
            for i in 0..n {
                let room = opts.max_parallel == 0 || running.len() < opts.max_parallel;
                if !room {
                    break;
                }
                if slots[i] != Slot::Waiting || remaining[i] > 0 {
                    continue;
                }
                slots[i] = Slot::Running;
                emit(ids[i], EventKind::Started, "started".to_string());
                let handle = StageHandle {
                    id: ids[i],
                    events: tx.clone(),
                    run_start,
                    cancel: opts.cancel.clone(),
                };
                let fut = crate::retry::interruptible(opts.cancel.clone(), work(ids[i], handle));
                let started = Instant::now();
                running.push(async move {
                    let result = fut.await.unwrap_or_else(|| {
                        Err(anyhow::anyhow!(
                            "interrupted while waiting; run the command again to continue"
                        ))
                    });
                    (i, result, started.elapsed())
                });
            }
        }

        if running.is_empty() {
            // Nothing runs and nothing could start: every stage has ended
            // (a waiting stage always has a running or failed ancestor).
            break;
        }

        // Progress first, so a step reported just before a stage ends is not
        // rendered after the stage's end.
        let wake = tokio::select! {
            biased;
            Some(event) = rx.recv() => Wake::Event(event),
            Some(done) = running.next() => Wake::Ended(done),
            // Wake up so the skips show now rather than when the running
            // stages end; the top of the loop does the skipping.
            () = opts.cancel.cancelled(), if !cancel_seen => Wake::Cancelled,
        };
        let (i, result, elapsed) = match wake {
            Wake::Event(event) => {
                reporter.event(&event);
                continue;
            }
            Wake::Cancelled => {
                cancel_seen = true;
                continue;
            }
            Wake::Ended(done) => done,
        };
        while let Ok(event) = rx.try_recv() {
            reporter.event(&event);
        }
        slots[i] = Slot::Ended;
        let elapsed_ms = millis(elapsed);
        match result {
            Ok(outcome) => {
                let (kind, message) = match &outcome {
                    Outcome::Changed(summary) => (EventKind::Succeeded, summary.clone()),
                    Outcome::Unchanged => (EventKind::Unchanged, "no changes".to_string()),
                };
                emit(ids[i], kind, message);
                results.push((
                    ids[i],
                    StageResult::Succeeded {
                        outcome,
                        elapsed_ms,
                    },
                ));
                for &w in &waiters[i] {
                    remaining[w] -= 1;
                }
            }
            Err(err) => {
                let error = format!("stage `{}` failed: {err:#}", ids[i]);
                emit(ids[i], EventKind::Failed, error.clone());
                results.push((ids[i], StageResult::Failed { error, elapsed_ms }));
                // Edges are transitive already, so the direct waiters are
                // everything downstream.
                for &w in &waiters[i] {
                    if slots[w] == Slot::Waiting {
                        slots[w] = Slot::Ended;
                        let reason = skip_reason(ids[i]);
                        emit(ids[w], EventKind::Skipped, reason.clone());
                        results.push((ids[w], StageResult::Skipped { reason }));
                    }
                }
            }
        }
    }
    while let Ok(event) = rx.try_recv() {
        reporter.event(&event);
    }
    debug_assert!(slots.iter().all(|s| *s == Slot::Ended));

    let report = RunReport {
        results,
        elapsed_ms: millis(run_start.elapsed()),
    };
    reporter.finish(&report);
    report
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use anyhow::{anyhow, Context};

    use super::super::graph::StageSpec;
    use super::super::progress::RecordingReporter;
    use super::*;

    /// `--only`, `--skip`, and the stages expected to run.
    type SelectCase = (
        Option<&'static [StageId]>,
        &'static [StageId],
        &'static [StageId],
    );

    fn graph(specs: &[(StageId, &[StageId])]) -> Graph {
        Graph::new(
            specs
                .iter()
                .map(|(id, deps)| StageSpec {
                    id,
                    depends_on: deps.to_vec(),
                })
                .collect(),
        )
        .unwrap()
    }

    /// network and iam are independent; cluster needs both; nodegroup and
    /// karpenter-infra need cluster; dns needs nothing and nobody needs it.
    fn demo() -> Graph {
        graph(&[
            ("network", &[]),
            ("iam", &[]),
            ("cluster", &["network", "iam"]),
            ("nodegroup", &["cluster"]),
            ("karpenter-infra", &["cluster"]),
            ("dns", &[]),
        ])
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Mark {
        Start,
        End,
    }

    /// What each fake stage did, in the order it happened.
    #[derive(Default)]
    struct Log(Mutex<Vec<(StageId, Mark, Instant)>>);

    impl Log {
        fn push(&self, id: StageId, mark: Mark) {
            self.0.lock().unwrap().push((id, mark, Instant::now()));
        }
        fn started(&self) -> Vec<StageId> {
            self.marks(Mark::Start)
        }
        fn marks(&self, mark: Mark) -> Vec<StageId> {
            let log = self.0.lock().unwrap();
            log.iter()
                .filter(|(_, m, _)| *m == mark)
                .map(|(id, _, _)| *id)
                .collect()
        }
        fn at(&self, id: StageId, mark: Mark) -> Instant {
            let log = self.0.lock().unwrap();
            log.iter()
                .find(|(s, m, _)| *s == id && *m == mark)
                .map(|(_, _, t)| *t)
                .unwrap_or_else(|| panic!("{id} has no {mark:?}"))
        }
        /// Position of `id`'s `mark` in the log.
        fn index(&self, id: StageId, mark: Mark) -> usize {
            let log = self.0.lock().unwrap();
            log.iter()
                .position(|(s, m, _)| *s == id && *m == mark)
                .unwrap_or_else(|| panic!("{id} has no {mark:?}"))
        }
    }

    /// How a fake stage behaves.
    #[derive(Clone, Copy)]
    enum Fake {
        Ok(u64),
        Unchanged,
        Fail(u64),
        /// Sleep, then cancel the run and succeed.
        CancelAfter(u64),
        /// Wait for cancellation (up to 5s) and fail with "interrupted".
        AwaitCancel,
    }

    async fn fake(
        log: &Log,
        behaviour: &HashMap<StageId, Fake>,
        id: StageId,
        h: StageHandle,
    ) -> anyhow::Result<Outcome> {
        log.push(id, Mark::Start);
        h.step(format!("working on {id}"));
        let ms = |ms| tokio::time::sleep(Duration::from_millis(ms));
        let result = match behaviour.get(id).copied().unwrap_or(Fake::Ok(10)) {
            Fake::Ok(t) => {
                ms(t).await;
                Ok(Outcome::Changed(format!("made {id}")))
            }
            Fake::Unchanged => Ok(Outcome::Unchanged),
            Fake::Fail(t) => {
                ms(t).await;
                Err(anyhow!("root cause")).context("creating vpc")
            }
            Fake::CancelAfter(t) => {
                ms(t).await;
                h.cancel_token().cancel();
                Ok(Outcome::Changed("cancelled the run".into()))
            }
            Fake::AwaitCancel => {
                tokio::select! {
                    () = h.cancel_token().cancelled() => Err(anyhow!("interrupted")),
                    () = ms(5000) => Ok(Outcome::Changed("not cancelled".into())),
                }
            }
        };
        log.push(id, Mark::End);
        result
    }

    async fn go(
        g: &Graph,
        selected: &[StageId],
        opts: RunOptions,
        behaviour: &[(StageId, Fake)],
    ) -> (RunReport, Log, RecordingReporter) {
        let log = Log::default();
        let behaviour: HashMap<StageId, Fake> = behaviour.iter().copied().collect();
        let reporter = RecordingReporter::default();
        let report = run(g, selected, opts, &reporter, |id, h| {
            fake(&log, &behaviour, id, h)
        })
        .await;
        (report, log, reporter)
    }

    fn reverse() -> RunOptions {
        RunOptions {
            direction: Direction::Reverse,
            ..RunOptions::default()
        }
    }

    fn assert_edges_respected(g: &Graph, log: &Log, ids: &[StageId], direction: Direction) {
        for &id in ids {
            for &dep in g.depends_on(id) {
                if !ids.contains(&dep) {
                    continue;
                }
                let (first, then) = match direction {
                    Direction::Forward => (dep, id),
                    Direction::Reverse => (id, dep),
                };
                assert!(
                    log.index(first, Mark::End) < log.index(then, Mark::Start),
                    "{first} must end before {then} starts"
                );
            }
        }
    }

    #[tokio::test]
    async fn forward_runs_every_stage_after_its_dependencies() {
        let g = demo();
        let all = g.select(None, &[]);
        let (report, log, _) = go(&g, &all, RunOptions::default(), &[]).await;
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.results.len(), all.len());
        assert_edges_respected(&g, &log, &all, Direction::Forward);
        // Ready together at the start, so started in declaration order.
        assert_eq!(log.started()[..3], ["network", "iam", "dns"]);
    }

    #[tokio::test]
    async fn independent_stages_overlap() {
        let g = graph(&[("a", &[]), ("b", &[])]);
        let (report, log, _) = go(
            &g,
            &["a", "b"],
            RunOptions::default(),
            &[("a", Fake::Ok(100)), ("b", Fake::Ok(100))],
        )
        .await;
        assert!(report.ok());
        let (a0, a1) = (log.at("a", Mark::Start), log.at("a", Mark::End));
        let (b0, b1) = (log.at("b", Mark::Start), log.at("b", Mark::End));
        assert!(a0 < b1 && b0 < a1, "a and b did not run at the same time");
    }

    #[tokio::test]
    async fn max_parallel_one_serializes_in_declaration_order() {
        let g = graph(&[("c", &[]), ("a", &[]), ("b", &[])]);
        let opts = RunOptions {
            max_parallel: 1,
            ..RunOptions::default()
        };
        let (report, log, _) = go(&g, &g.ids(), opts, &[]).await;
        assert!(report.ok());
        assert_eq!(log.started(), ["c", "a", "b"]);
        for pair in ["c", "a", "b"].windows(2) {
            assert!(log.at(pair[0], Mark::End) <= log.at(pair[1], Mark::Start));
        }
    }

    #[tokio::test]
    async fn a_failure_skips_dependents_but_not_independent_stages() {
        let g = demo();
        let all = g.select(None, &[]);
        // dns outlives the failure, so "still runs" is not a head start.
        let (report, log, rec) = go(
            &g,
            &all,
            RunOptions::default(),
            &[("network", Fake::Fail(5)), ("dns", Fake::Ok(80))],
        )
        .await;
        assert!(!report.ok());
        assert_eq!(report.failed(), ["network"]);
        match report.result("network") {
            Some(StageResult::Failed { error, .. }) => {
                assert_eq!(error, "stage `network` failed: creating vpc: root cause");
            }
            other => panic!("network: {other:?}"),
        }
        for id in ["cluster", "nodegroup", "karpenter-infra"] {
            match report.result(id) {
                Some(StageResult::Skipped { reason }) => {
                    assert_eq!(reason, "dependency `network` failed", "{id}");
                }
                other => panic!("{id}: {other:?}"),
            }
        }
        assert!(matches!(
            report.result("iam"),
            Some(StageResult::Succeeded { .. })
        ));
        assert!(matches!(
            report.result("dns"),
            Some(StageResult::Succeeded { .. })
        ));
        assert!(log.index("network", Mark::End) < log.index("dns", Mark::End));
        assert_eq!(log.started(), ["network", "iam", "dns"]);
        let failed: Vec<_> = rec
            .events()
            .into_iter()
            .filter(|e| e.event == EventKind::Failed)
            .collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(
            failed[0].message,
            "stage `network` failed: creating vpc: root cause"
        );
    }

    #[tokio::test]
    async fn only_and_skip_run_just_the_selection_in_order() {
        let g = demo();
        let cases: &[SelectCase] = &[
            (Some(&["cluster", "network"]), &[], &["network", "cluster"]),
            (
                None,
                &["iam", "dns", "karpenter-infra"],
                &["network", "cluster", "nodegroup"],
            ),
            // cluster is not selected, but nodegroup still waits for network.
            (
                Some(&["network", "nodegroup"]),
                &[],
                &["network", "nodegroup"],
            ),
        ];
        for (only, skip, want) in cases {
            let selected = g.select(*only, skip);
            let opts = RunOptions::default();
            let (report, log, _) = go(&g, &selected, opts, &[("network", Fake::Ok(30))]).await;
            assert!(report.ok());
            let mut ran = log.started();
            assert_eq!(ran, *want);
            ran.sort();
            let mut reported: Vec<_> = report.results.iter().map(|(id, _)| *id).collect();
            reported.sort();
            assert_eq!(ran, reported);
            for pair in want.windows(2) {
                assert!(log.index(pair[0], Mark::End) < log.index(pair[1], Mark::Start));
            }
        }
    }

    #[tokio::test]
    async fn reverse_tears_down_dependents_first() {
        let g = demo();
        let all = g.select(None, &[]);
        let (report, log, _) = go(&g, &all, reverse(), &[]).await;
        assert!(report.ok());
        assert_edges_respected(&g, &log, &all, Direction::Reverse);
        // Leaves of the forward graph are ready first, in declaration order.
        assert_eq!(log.started()[..3], ["nodegroup", "karpenter-infra", "dns"]);
        assert_eq!(log.marks(Mark::Start)[3], "cluster");
    }

    #[tokio::test]
    async fn reverse_failure_keeps_what_others_still_need() {
        let g = demo();
        let all = g.select(None, &[]);
        let (report, log, _) = go(&g, &all, reverse(), &[("nodegroup", Fake::Fail(5))]).await;
        assert_eq!(report.failed(), ["nodegroup"]);
        for id in ["cluster", "network", "iam"] {
            match report.result(id) {
                Some(StageResult::Skipped { reason }) => {
                    assert_eq!(reason, "dependent `nodegroup` failed", "{id}");
                }
                other => panic!("{id}: {other:?}"),
            }
        }
        assert_eq!(log.started(), ["nodegroup", "karpenter-infra", "dns"]);
    }

    #[tokio::test]
    async fn cancellation_skips_stages_not_yet_started() {
        let g = graph(&[("a", &[]), ("b", &["a"]), ("c", &[])]);
        let opts = RunOptions {
            max_parallel: 1,
            ..RunOptions::default()
        };
        let cancel = opts.cancel.clone();
        let (report, log, _) = go(&g, &g.ids(), opts, &[("a", Fake::CancelAfter(5))]).await;
        assert!(cancel.is_cancelled());
        assert_eq!(log.started(), ["a"]);
        assert!(matches!(
            report.result("a"),
            Some(StageResult::Succeeded { .. })
        ));
        for id in ["b", "c"] {
            assert!(
                matches!(report.result(id), Some(StageResult::Skipped { reason }) if reason == "cancelled"),
                "{id}: {:?}",
                report.result(id)
            );
        }
        assert!(!report.ok());
    }

    #[tokio::test]
    async fn running_stages_see_cancellation_and_are_awaited() {
        let g = graph(&[("slow", &[]), ("trigger", &[]), ("after", &["trigger"])]);
        let (report, log, rec) = go(
            &g,
            &g.ids(),
            RunOptions::default(),
            &[
                ("slow", Fake::AwaitCancel),
                ("trigger", Fake::CancelAfter(10)),
            ],
        )
        .await;
        assert_eq!(
            log.marks(Mark::End).len(),
            2,
            "both running stages ran to their end"
        );
        match report.result("slow") {
            Some(StageResult::Failed { error, elapsed_ms }) => {
                assert_eq!(error, "stage `slow` failed: interrupted");
                assert!(
                    *elapsed_ms < 4000,
                    "slow waited for its timeout, not the token"
                );
            }
            other => panic!("slow: {other:?}"),
        }
        assert!(
            matches!(report.result("after"), Some(StageResult::Skipped { reason }) if reason == "cancelled")
        );
        // The skip is reported when the cancel happens, before slow ends.
        let events = rec.events();
        let pos = |kind, stage| {
            events
                .iter()
                .position(|e| e.event == kind && e.stage == Some(stage))
                .unwrap()
        };
        assert!(pos(EventKind::Skipped, "after") < pos(EventKind::Failed, "slow"));
    }

    #[tokio::test]
    async fn cancellation_is_reported_before_running_stages_end() {
        let g = graph(&[("a", &[]), ("b", &[]), ("c", &[])]);
        let opts = RunOptions {
            max_parallel: 2,
            ..RunOptions::default()
        };
        let cancel = opts.cancel.clone();
        let all = g.ids();
        // Cancelled from outside (as by Ctrl-C) while a and b run quietly, so
        // only the token itself can wake the engine before they end.
        let ((report, log, rec), ()) = tokio::join!(
            go(
                &g,
                &all,
                opts,
                &[("a", Fake::Ok(150)), ("b", Fake::Ok(150))]
            ),
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                cancel.cancel();
            }
        );
        assert_eq!(log.started(), ["a", "b"]);
        assert!(
            matches!(report.result("c"), Some(StageResult::Skipped { reason }) if reason == "cancelled")
        );
        let events = rec.events();
        let skipped = events
            .iter()
            .position(|e| e.event == EventKind::Skipped)
            .unwrap();
        let first_end = events
            .iter()
            .position(|e| e.event == EventKind::Succeeded)
            .unwrap();
        assert!(skipped < first_end, "{events:?}");
    }

    #[tokio::test]
    async fn events_follow_each_stage_and_finish_gets_the_report() {
        let g = graph(&[("a", &[]), ("b", &["a"])]);
        let (report, _, rec) = go(
            &g,
            &g.ids(),
            RunOptions::default(),
            &[("b", Fake::Unchanged)],
        )
        .await;
        let seen: Vec<(Option<StageId>, EventKind, String)> = rec
            .events()
            .into_iter()
            .map(|e| (e.stage, e.event, e.message))
            .collect();
        let want = [
            (Some("a"), EventKind::Started, "started"),
            (Some("a"), EventKind::Step, "working on a"),
            (Some("a"), EventKind::Succeeded, "made a"),
            (Some("b"), EventKind::Started, "started"),
            (Some("b"), EventKind::Step, "working on b"),
            (Some("b"), EventKind::Unchanged, "no changes"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(s, k, m)| (*s, *k, m.to_string()))
            .collect();
        assert_eq!(seen, want);
        let finished = rec.report().expect("finish was called");
        assert_eq!(finished.results.len(), report.results.len());
        let elapsed: Vec<u64> = rec.events().iter().map(|e| e.elapsed_ms).collect();
        assert!(elapsed.windows(2).all(|w| w[0] <= w[1]), "{elapsed:?}");
    }

    #[test]
    fn report_serializes_as_an_array_of_tagged_objects() {
        let report = RunReport {
            results: vec![
                (
                    "network",
                    StageResult::Succeeded {
                        outcome: Outcome::Changed("created 14 resources".into()),
                        elapsed_ms: 1200,
                    },
                ),
                (
                    "iam",
                    StageResult::Succeeded {
                        outcome: Outcome::Unchanged,
                        elapsed_ms: 3,
                    },
                ),
                (
                    "cluster",
                    StageResult::Failed {
                        error: "stage `cluster` failed: boom".into(),
                        elapsed_ms: 7,
                    },
                ),
                (
                    "nodegroup",
                    StageResult::Skipped {
                        reason: "dependency `cluster` failed".into(),
                    },
                ),
            ],
            elapsed_ms: 1300,
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "results": [
                    {"stage": "network", "status": "succeeded", "outcome": {"changed": "created 14 resources"}, "elapsed_ms": 1200},
                    {"stage": "iam", "status": "succeeded", "outcome": "unchanged", "elapsed_ms": 3},
                    {"stage": "cluster", "status": "failed", "error": "stage `cluster` failed: boom", "elapsed_ms": 7},
                    {"stage": "nodegroup", "status": "skipped", "reason": "dependency `cluster` failed"},
                ],
                "elapsed_ms": 1300,
            })
        );
        assert!(!report.ok());
        assert_eq!(report.failed(), ["cluster"]);
        assert!(report.result("dns").is_none());
    }

    #[tokio::test]
    async fn cancel_token_wakes_waiters() {
        let token = CancelToken::new();
        let waiter = token.clone();
        let wait = async move {
            waiter.cancelled().await;
            waiter.is_cancelled()
        };
        let (seen, ()) = tokio::join!(wait, async {
            tokio::task::yield_now().await;
            token.cancel();
        });
        assert!(seen);
        // Already cancelled: returns at once.
        tokio::time::timeout(Duration::from_secs(1), token.cancelled())
            .await
            .unwrap();
    }
}
