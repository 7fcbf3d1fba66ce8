//! `meshstack up` and `meshstack down`: take the lock, check the selection against the
//! journal, connect, check the quotas (up), then walk the graph forwards or backwards.
//!
//! The steps are separate functions because a fleet's environments (`fleet.rs`) and `reap`
//! take the very same ones for each stack: [`take_state`], [`check_up`] / [`check_down`],
//! [`settle_expiry`] and [`execute`], with [`Interrupts`] watching the signals for all of them.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::checks::{check_iam_region, check_kubernetes, check_quotas, QuotaGroup};
use super::{
    check_helm, connect, existing_reachable, existing_zones, find, load_stack, mode, preflight,
    preflight_error, selection, status_word, usage,
};
use crate::aws::state::S3Store;
use crate::aws::{account, AwsClients, CallStats};
use crate::cli::StackArgs;
use crate::cli::{DownArgs, Output, RunArgs};
use crate::config::Stack;
use crate::engine::graph::{Graph, StageId};
use crate::engine::progress::{self, Reporter};
use crate::engine::run::{self, CancelToken, Direction, RunOptions, RunReport};
use crate::engine::state::{
    Journal, LockGuard, LockInfo, SharedJournal, StageStatus, StateError, Unlock,
};
use crate::stages::{self, Context, Stage};

use super::state::{location, open_for_writing, unlock};

/// Opens the stack's state where it is, takes its lock for `command`, and reads the journal,
/// which then records this run as its writer.
pub(crate) fn take_state(
    args: &StackArgs,
    stack: &Stack,
    command: &str,
    unlock: &Unlock,
) -> anyhow::Result<(Arc<LockGuard>, Journal, Option<S3Store>)> {
    let opened = open_for_writing(args, stack, &location(args, stack))?;
    let lock = opened
        .store
        .lock(LockInfo::me(command), unlock)
        .map_err(anyhow::Error::new)?;
    let mut journal = Journal::open(opened.store.clone(), &stack.name)?;
    journal.set_writer(lock.info().writer());
    Ok((Arc::new(lock), journal, opened.s3))
}

/// `up --only`: a stage whose dependencies are outside the selection needs them done already.
pub(crate) fn check_up(
    graph: &Graph,
    selected: &[StageId],
    journal: &Journal,
) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for id in selected {
        for dep in graph.ancestors(id) {
            if !selected.contains(&dep) && journal.status(dep) != StageStatus::Done {
                missing.push(format!(
                    "`{id}` needs `{dep}` ({})",
                    status_word(journal.status(dep))
                ));
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing.dedup();
    Err(usage(format!(
        "cannot run the selected stages: {}; include them in --only or run `meshstack up` for them first",
        missing.join(", ")
    )))
}

/// `down --only`/`--skip`: a stage still up that depends on a selected one blocks it.
pub(crate) fn check_down(
    graph: &Graph,
    selected: &[StageId],
    journal: &Journal,
) -> anyhow::Result<()> {
    let mut blocking = Vec::new();
    for id in selected {
        for dependent in graph
            .ids()
            .into_iter()
            .filter(|d| graph.ancestors(d).contains(id))
        {
            if !selected.contains(&dependent) && journal.status(dependent) == StageStatus::Done {
                blocking.push(format!("`{dependent}` (depends on `{id}`) is still up"));
            }
        }
    }
    if blocking.is_empty() {
        return Ok(());
    }
    blocking.dedup();
    Err(usage(format!(
        "cannot tear down the selected stages: {}; select it too, or drop --only/--skip",
        blocking.join(", ")
    )))
}

/// Fixes the stack's expiry and tags the stack with it (`meshstack.io/expires-at` on every
/// resource it creates). The expiry is the one the stack was created with — the journal's,
/// else (journal lost) its VPC's tag — so that every resource carries the same one and a
/// converged `up` changes nothing; only a stack created now gets now + `expires_in` (a later
/// `--expires-in` does not move an expiry that is on the resources already). Returns the
/// expiry, if any.
pub(crate) async fn settle_expiry(
    stack: &mut Stack,
    journal: &mut Journal,
    aws: &AwsClients,
) -> anyhow::Result<Option<String>> {
    let recorded = journal.data().expires_at.clone();
    let at = match (recorded, stack.expires_in) {
        (Some(at), _) => Some(at),
        (None, None) => None,
        (None, Some(lifetime)) => {
            let found = crate::aws::discover::expiry_of(aws, &stack.name).await?;
            Some(found.unwrap_or_else(|| {
                let now = crate::engine::store::unix_now_ms() / 1000;
                crate::clock::rfc3339(
                    u64::try_from(now).unwrap_or(u64::MAX) + lifetime.duration().as_secs(),
                )
            }))
        }
    };
    if let Some(at) = &at {
        journal.set_expires_at(at)?;
        stack.set_own_tag(crate::aws::EXPIRES_TAG, at);
    }
    Ok(at)
}

/// The stages of `selected` the journal does not record as done.
pub(crate) fn not_done(selected: &[StageId], journal: &Journal) -> Vec<StageId> {
    selected
        .iter()
        .copied()
        .filter(|id| journal.status(id) != StageStatus::Done)
        .collect()
}

pub async fn up(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut stack = load_stack(&args.stack)?;
    if let Some(l) = args.expires_in {
        stack.expires_in = Some(l);
    }
    let all = stages::for_stack(&stack);
    let graph = Graph::new(stages::specs(&all))?;
    let selected = selection(&graph, &args.selection)?;
    check_helm(&stack, &all, &selected).await?;
    // Signals are caught from before the lock is taken: one during the preflight releases it.
    let interrupts = Interrupts::watch();
    // With S3 state the lock is a write to a bucket: the account guard comes first.
    super::state::guard_s3(&stack, &[&location(&args.stack, &stack)]).await?;
    let (lock, mut journal, s3) =
        take_state(&args.stack, &stack, "up", &unlock(&args.force_unlock))?;
    interrupts.register(&lock);
    check_up(&graph, &selected, &journal)?;
    let prepared = interrupts.unless_signalled(async {
        // Only now the first API calls: everything above is input checking.
        if stack.existing_cluster().is_some() {
            // No AWS at all: the cluster is there, and its nodes say the zones.
            return anyhow::Ok((None, None, existing_zones(&stack).await?));
        }
        let aws = connect(&stack).await.map_err(usage)?;
        let (identity, zones) = preflight(&aws, &stack).await?;
        // Quotas for what is still to be built: stages the journal has done need nothing more,
        // and are not even looked at (a resumed or converged `up` starts its stages at once).
        let pending = not_done(&selected, &journal);
        check_kubernetes(Some(&aws), &stack, &pending).await?;
        check_iam_region(&aws, &stack, &pending).await?;
        check_quotas(
            &[QuotaGroup {
                aws: &aws,
                account: &identity.account,
                stacks: vec![&stack],
                zones: zones.iter().map(|z| z.name.clone()).collect(),
            }],
            &pending,
            args.ignore_quotas,
        )
        .await?;
        let expires = settle_expiry(&mut stack, &mut journal, &aws).await?;
        if let (Some(at), Output::Text) = (&expires, args.stack.output) {
            eprintln!("expires at {at} (`meshstack reap` removes it after that)");
        }
        anyhow::Ok((Some(aws), Some(identity), zones))
    });
    let Some(prepared) = prepared.await else {
        return Ok(interrupts.stop_before_stages(&lock));
    };
    let (aws, identity, zones) = prepared?;
    let journal = Arc::new(Mutex::new(journal));
    let mut cx = Context::new(stack, aws, identity, zones, Some(journal.clone()));
    if args.force {
        eprintln!(
            "warning: --force is now --allow-unsafe-locality (it only ever overrode the locality \
             safety check); the old name goes away in the next release"
        );
    }
    cx.allow_unsafe_locality = args.allow_unsafe_locality || args.force;
    let reporter = progress::reporter(mode(args.stack.output), "meshstack up", &selected);
    let ran = execute(
        &cx,
        &all,
        &graph,
        &selected,
        Direction::Forward,
        reporter.as_ref(),
        interrupts.token(),
        Held { journal, lock, s3 },
    )
    .await;
    let code = finish(args.stack.output, ran, &interrupts)?;
    let demo_ready = code == ExitCode::SUCCESS
        && selected.contains(&stages::locality::ID)
        && args.stack.output == Output::Text;
    if demo_ready {
        eprintln!(
            "next: `meshstack pods` shows where the app runs; `meshstack verify --requests 200` \
             measures how much traffic stays in its zone and on its node"
        );
    }
    Ok(code)
}

/// The stack `down` works on: the stack file, or with `--name` the named stack alone,
/// everything found by tag.
fn down_stack(args: &DownArgs) -> anyhow::Result<Stack> {
    match &args.name {
        None => load_stack(&args.stack),
        Some(_) if args.stack.stack.is_some() => Err(usage(
            "--name tears a stack down without its stack file; give --name or --stack, not both",
        )),
        Some(name) => Stack::for_teardown(name, args.region.as_deref(), "--name/--region")
            .map_err(|e| usage(format!("{:#}", anyhow::Error::new(e)))),
    }
}

pub async fn down(args: DownArgs) -> anyhow::Result<ExitCode> {
    let mut stack = down_stack(&args)?;
    super::confirm::guard_accounts(&mut stack, &args.accounts.allowed_account_ids)?;
    let all = stages::for_stack(&stack);
    let graph = Graph::new(stages::specs(&all))?;
    let selected = selection(&graph, &args.selection)?;
    super::confirm::require_yes_or_terminal("down", args.yes)?;
    let interrupts = Interrupts::watch();
    super::state::guard_s3(&stack, &[&location(&args.stack, &stack)]).await?;
    let (lock, journal, s3) = take_state(&args.stack, &stack, "down", &unlock(&args.force_unlock))?;
    interrupts.register(&lock);
    check_down(&graph, &selected, &journal)?;
    let prepared = interrupts.unless_signalled(async {
        if stack.existing_cluster().is_some() {
            existing_reachable(&stack).await?;
            let go = super::confirm::confirm_down(&args, &stack, None, &selected).await?;
            return anyhow::Ok((None, None, go));
        }
        let aws = connect(&stack).await.map_err(usage)?;
        let identity = account::identify(&aws, &stack)
            .await
            .map_err(preflight_error)?;
        let place = Some((aws.region.as_str(), identity.account.as_str()));
        let go = super::confirm::confirm_down(&args, &stack, place, &selected).await?;
        anyhow::Ok((Some(aws), Some(identity), go))
    });
    let Some(prepared) = prepared.await else {
        return Ok(interrupts.stop_before_stages(&lock));
    };
    let (aws, identity, go) = prepared?;
    if !go {
        return Ok(ExitCode::FAILURE);
    }
    let journal = Arc::new(Mutex::new(journal));
    let cx = Context::new(stack, aws, identity, Vec::new(), Some(journal.clone()));
    let reporter = progress::reporter(mode(args.stack.output), "meshstack down", &selected);
    let ran = execute(
        &cx,
        &all,
        &graph,
        &selected,
        Direction::Reverse,
        reporter.as_ref(),
        interrupts.token(),
        Held { journal, lock, s3 },
    )
    .await;
    finish(args.stack.output, ran, &interrupts)
}

/// What a run of a stack's stages holds while they run.
pub(crate) struct Held {
    pub journal: SharedJournal,
    pub lock: Arc<LockGuard>,
    /// The S3 state store, when the state is there: its requests are reported.
    pub s3: Option<S3Store>,
}

/// How a run of one stack's stages ended.
pub(crate) struct Ran {
    pub report: RunReport,
    /// The stages' AWS calls.
    pub calls: CallStats,
    /// The state's own S3 requests: (location, counts).
    pub state: Option<(String, CallStats)>,
    /// Why the journal stopped writing, if it did (exit 1 with this error).
    pub stopped: Option<StateError>,
}

/// Walks `selected` in `direction` with the stages' `up` or `down`, recording each stage in
/// the journal; the lock is released before this returns. Stops starting stages once
/// `cancel` is cancelled or the journal stops writing.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn execute(
    cx: &Context,
    all: &[Box<dyn Stage>],
    graph: &Graph,
    selected: &[StageId],
    direction: Direction,
    reporter: &dyn Reporter,
    cancel: CancelToken,
    held: Held,
) -> Ran {
    let journal = &held.journal;
    let opts = RunOptions {
        direction,
        max_parallel: 0,
        cancel: cancel.clone(),
    };
    let set = |id: StageId, status: StageStatus, msg: Option<String>| -> anyhow::Result<()> {
        let mut j = journal.lock().unwrap_or_else(|e| e.into_inner());
        let res = j.set_status(id, status, msg);
        // A journal that changed behind this run, or a lost lock, stops the run: nothing new
        // starts (the stages already running fail at their next journal write).
        if j.stopped().is_some() {
            cancel.cancel();
        }
        Ok(res?)
    };
    let report = run::run(graph, selected, opts, reporter, |id, h| {
        let stage = find(all, id);
        let set = &set;
        async move {
            set(id, StageStatus::Running, None)?;
            let res = match direction {
                Direction::Forward => stage.up(cx, &h).await,
                Direction::Reverse if stage.in_cluster() => {
                    let res = stage.down(cx, &h).await;
                    stages::kubernetes::tolerate_lost_api(cx, &h, res).await
                }
                Direction::Reverse => stage.down(cx, &h).await,
            };
            match res {
                Ok(outcome) => {
                    match direction {
                        Direction::Forward => set(id, StageStatus::Done, None)?,
                        Direction::Reverse => {
                            journal
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .forget_stage(id)?;
                        }
                    }
                    Ok(outcome)
                }
                Err(e) => {
                    set(id, StageStatus::Failed, Some(format!("{e:#}")))?;
                    Err(anyhow::Error::new(e))
                }
            }
        }
    })
    .await;
    let stopped = journal.lock().unwrap_or_else(|e| e.into_inner()).stopped();
    // Released before the counts are taken, so that they include the release.
    held.lock.release();
    let calls = cx
        .aws
        .as_ref()
        .map(|a| a.calls.snapshot())
        .unwrap_or_default();
    let state = held.s3.as_ref().map(|s| {
        use crate::engine::state::StateStore;
        (s.location(), s.calls())
    });
    Ran {
        report,
        calls,
        state,
        stopped,
    }
}

/// The single-stack verbs' ending: the call counts, then the exit code (the journal's stop
/// as an error; a signal's code; 1 if a stage failed).
fn finish(output: Output, ran: Ran, interrupts: &Interrupts) -> anyhow::Result<ExitCode> {
    print_calls(output, &ran.calls, ran.state.as_ref())?;
    if let Some(err) = ran.stopped {
        return Err(err.into());
    }
    if let Some(code) = interrupts.signalled() {
        return Ok(ExitCode::from(code));
    }
    Ok(if ran.report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) fn print_calls(
    output: Output,
    calls: &CallStats,
    state: Option<&(String, CallStats)>,
) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let mut v = serde_json::to_value(calls)?;
            v["event"] = "api-calls".into();
            // The state's own S3 requests, apart from the stages' calls.
            if let Some((location, state_calls)) = state {
                let mut s = serde_json::to_value(state_calls)?;
                s["location"] = location.clone().into();
                v["state"] = s;
            }
            println!("{v}");
        }
        Output::Text => {
            eprintln!("{}", calls_line(calls));
            if let Some((location, c)) = state {
                eprintln!(
                    "state requests ({location}): {} reads, {} writes{}",
                    c.reads,
                    c.writes,
                    match c.retries {
                        0 => String::new(),
                        n => format!("; {n} retried"),
                    }
                );
            }
        }
    }
    Ok(())
}

/// `AWS API calls: 37 reads, 0 writes` with the writes by operation and the retries.
pub(crate) fn calls_line(calls: &CallStats) -> String {
    let writes = if calls.writes_by_operation.is_empty() {
        String::new()
    } else {
        let ops: Vec<String> = calls
            .writes_by_operation
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect();
        format!(" ({})", ops.join(", "))
    };
    let retries = match calls.retries {
        0 => String::new(),
        n => format!("; {n} retried after throttling or a server error"),
    };
    format!(
        "AWS API calls: {} reads, {} writes{writes}{retries}",
        calls.reads, calls.writes
    )
}

/// The signals that interrupt a run: Ctrl-C, and what CI runners and closing terminals send.
/// The exit code is 128 + the first one's number: 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal: its name and the exit code it gives.
    async fn next(&mut self) -> (&'static str, u8) {
        tokio::select! {
            _ = self.int.recv() => ("interrupted (SIGINT)", 130),
            _ = self.term.recv() => ("terminated (SIGTERM)", 143),
            _ = self.hup.recv() => ("hung up (SIGHUP)", 129),
        }
    }
}

/// Watches the signals for one run or a fleet of them. First signal: cancel the token, so
/// that nothing new starts and running stages stop at their next wait (and are recorded).
/// Second: release every registered lock and exit now (journals are written atomically, so
/// they are consistent at any instant; a call in flight is found by tag on the next run).
/// Stops watching when dropped.
pub(crate) struct Interrupts {
    cancel: CancelToken,
    /// 0 until a signal; then the exit code of the first.
    code: Arc<AtomicU8>,
    locks: Arc<Mutex<Vec<Weak<LockGuard>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Interrupts {
    /// Starts watching.
    ///
    /// # Guarantees
    /// The handlers are installed when this returns (not when the watching task first runs):
    /// from then on a signal never takes its default action, which would leave a lock behind.
    pub(crate) fn watch() -> Interrupts {
        let cancel = CancelToken::new();
        let code = Arc::new(AtomicU8::new(0));
        let locks: Arc<Mutex<Vec<Weak<LockGuard>>>> = Arc::default();
        let signals = Signals::new();
        let task = tokio::spawn({
            let (cancel, code, locks) = (cancel.clone(), code.clone(), locks.clone());
            async move {
                let Ok(mut signals) = signals else {
                    return;
                };
                let (what, first) = signals.next().await;
                code.store(first, Ordering::SeqCst);
                eprintln!("{what}: stopping running stages at their next wait (again to exit now)");
                cancel.cancel();
                signals.next().await;
                for lock in locks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    if let Some(lock) = lock.upgrade() {
                        lock.release();
                    }
                }
                std::process::exit(i32::from(first));
            }
        });
        Interrupts {
            cancel,
            code,
            locks,
            task,
        }
    }

    /// `work`, unless a signal comes first (or came already): then `None`, and `work` is
    /// dropped where it stands (a call in flight is found by tag on the next run).
    pub(crate) async fn unless_signalled<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            out = work => Some(out),
        }
    }

    /// After a signal before any stage started: releases `lock`, says so, and gives the
    /// signal's exit code.
    pub(crate) fn stop_before_stages(&self, lock: &LockGuard) -> ExitCode {
        lock.release();
        eprintln!("stopped before any stage started; the lock is released");
        ExitCode::from(self.signalled().unwrap_or(130))
    }

    /// The token the runs stop on.
    pub(crate) fn token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// A lock to release if a second signal exits at once.
    pub(crate) fn register(&self, lock: &Arc<LockGuard>) {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|l| l.strong_count() > 0);
        locks.push(Arc::downgrade(lock));
    }

    /// The exit code of the signal received, if one was.
    pub(crate) fn signalled(&self) -> Option<u8> {
        match self.code.load(Ordering::SeqCst) {
            0 => None,
            c => Some(c),
        }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.task.abort();
    }
}
