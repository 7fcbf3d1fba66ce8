//! `meshstack up` and `meshstack down`: take the lock, check the selection against the
//! journal, connect, then walk the graph forwards or backwards.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use super::{
    check_helm, connect, find, load_stack, mode, preflight, preflight_error, selection,
    status_word, usage,
};
use crate::aws::state::S3Store;
use crate::aws::{account, CallStats};
use crate::cli::StackArgs;
use crate::cli::{DownArgs, Output, RunArgs};
use crate::config::Stack;
use crate::engine::graph::{Graph, StageId};
use crate::engine::progress;
use crate::engine::run::{self, CancelToken, Direction, RunOptions};
use crate::engine::state::{Journal, LockGuard, LockInfo, StageStatus, StateError};
use crate::stages::{self, Context, Stage};

use super::state::{location, open_for_writing, unlock};

/// Opens the stack's state where it is, takes its lock for `command`, and reads the journal,
/// which then records this run as its writer.
fn take_state(
    args: &StackArgs,
    stack: &Stack,
    command: &str,
    force_unlock: &Option<String>,
) -> anyhow::Result<(Arc<LockGuard>, Journal, Option<S3Store>)> {
    let opened = open_for_writing(args, stack, &location(args, stack))?;
    let lock = opened
        .store
        .lock(LockInfo::me(command), &unlock(force_unlock))
        .map_err(lock_error)?;
    let mut journal = Journal::open(opened.store.clone(), &stack.name)?;
    journal.set_writer(lock.info().writer());
    Ok((Arc::new(lock), journal, opened.s3))
}

pub async fn up(args: RunArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack(&args.stack)?;
    let all = stages::all();
    let graph = Graph::new(stages::specs(&all))?;
    let selected = selection(&graph, &args.selection)?;
    check_helm(&all, &selected).await?;
    let (lock, journal, s3) = take_state(&args.stack, &stack, "up", &args.force_unlock)?;

    // --only: a stage whose dependencies are outside the selection needs them done already.
    let mut missing = Vec::new();
    for id in &selected {
        for dep in graph.ancestors(id) {
            if !selected.contains(&dep) && journal.status(dep) != StageStatus::Done {
                missing.push(format!(
                    "`{id}` needs `{dep}` ({})",
                    status_word(journal.status(dep))
                ));
            }
        }
    }
    if !missing.is_empty() {
        missing.dedup();
        return Err(usage(format!(
            "cannot run the selected stages: {}; include them in --only or run `meshstack up` for them first",
            missing.join(", ")
        )));
    }
    // Only now the first API calls: everything above is input checking.
    let aws = connect(&stack).await.map_err(usage)?;
    let (identity, zones) = preflight(&aws, &stack).await?;
    let journal = Arc::new(Mutex::new(journal));
    let mut cx = Context::new(
        stack,
        Some(aws),
        Some(identity),
        zones,
        Some(journal.clone()),
    );
    if args.force {
        eprintln!(
            "warning: --force is now --allow-unsafe-locality (it only ever overrode the locality \
             safety check); the old name goes away in the next release"
        );
    }
    cx.allow_unsafe_locality = args.allow_unsafe_locality || args.force;
    let code = execute(
        &cx,
        &all,
        &graph,
        &selected,
        Direction::Forward,
        args.stack.output,
        Held {
            journal: journal.clone(),
            lock,
            s3,
        },
    )
    .await?;
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

pub async fn down(args: DownArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack(&args.stack)?;
    let all = stages::all();
    let graph = Graph::new(stages::specs(&all))?;
    let selected = selection(&graph, &args.selection)?;
    let (lock, journal, s3) = take_state(&args.stack, &stack, "down", &args.force_unlock)?;
    let mut blocking = Vec::new();
    for id in &selected {
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
    if !blocking.is_empty() {
        blocking.dedup();
        return Err(usage(format!(
            "cannot tear down the selected stages: {}; select it too, or drop --only/--skip",
            blocking.join(", ")
        )));
    }
    let aws = connect(&stack).await.map_err(usage)?;
    let identity = account::identify(&aws, &stack)
        .await
        .map_err(preflight_error)?;
    let journal = Arc::new(Mutex::new(journal));
    let cx = Context::new(
        stack,
        Some(aws),
        Some(identity),
        Vec::new(),
        Some(journal.clone()),
    );
    execute(
        &cx,
        &all,
        &graph,
        &selected,
        Direction::Reverse,
        args.stack.output,
        Held {
            journal: journal.clone(),
            lock,
            s3,
        },
    )
    .await
}

fn lock_error(e: StateError) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// What `up` and `down` hold while their stages run.
struct Held {
    journal: Arc<Mutex<Journal>>,
    lock: Arc<LockGuard>,
    /// The S3 state store, when the state is there: its requests are reported.
    s3: Option<S3Store>,
}

async fn execute(
    cx: &Context,
    all: &[Box<dyn Stage>],
    graph: &Graph,
    selected: &[StageId],
    direction: Direction,
    output: Output,
    held: Held,
) -> anyhow::Result<ExitCode> {
    let (journal, lock) = (&held.journal, held.lock.clone());
    let title = match direction {
        Direction::Forward => "meshstack up",
        Direction::Reverse => "meshstack down",
    };
    let reporter = progress::reporter(mode(output), title, selected);
    let cancel = CancelToken::new();
    let signal_code = Arc::new(std::sync::atomic::AtomicU8::new(130));
    let watcher = tokio::spawn(watch_interrupts(cancel.clone(), lock, signal_code.clone()));
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
    let report = run::run(graph, selected, opts, reporter.as_ref(), |id, h| {
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
    watcher.abort();
    let stopped = journal.lock().unwrap_or_else(|e| e.into_inner()).stopped();
    // Released before the counts are printed, so that they include the release.
    held.lock.release();
    let calls = cx
        .aws
        .as_ref()
        .map(|a| a.calls.snapshot())
        .unwrap_or_default();
    print_calls(output, &calls, held.s3.as_ref())?;
    if let Some(err) = stopped {
        return Err(err.into());
    }
    if cancel.is_cancelled() {
        return Ok(ExitCode::from(
            signal_code.load(std::sync::atomic::Ordering::SeqCst),
        ));
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_calls(output: Output, calls: &CallStats, s3: Option<&S3Store>) -> anyhow::Result<()> {
    use crate::engine::state::StateStore;
    let state = s3.map(|s| (s.location(), s.calls()));
    match output {
        Output::Json => {
            let mut v = serde_json::to_value(calls)?;
            v["event"] = "api-calls".into();
            // The state's own S3 requests, apart from the stages' calls.
            if let Some((location, state_calls)) = &state {
                let mut s = serde_json::to_value(state_calls)?;
                s["location"] = location.clone().into();
                v["state"] = s;
            }
            println!("{v}");
        }
        Output::Text => {
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
            eprintln!(
                "AWS API calls: {} reads, {} writes{writes}{retries}",
                calls.reads, calls.writes
            );
            if let Some((location, c)) = &state {
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

/// First signal: start nothing new; running stages stop at their next wait (or finish the call
/// they are in) and are recorded. Second: release the lock and exit now (the journal is written
/// atomically, so it is consistent at any instant; a call in flight is found by tag on the next
/// run). The exit code of the first signal is stored in `code`.
async fn watch_interrupts(
    cancel: CancelToken,
    lock: Arc<LockGuard>,
    code: Arc<std::sync::atomic::AtomicU8>,
) {
    use std::sync::atomic::Ordering;
    let Ok(mut signals) = Signals::new() else {
        return;
    };
    let (what, first) = signals.next().await;
    code.store(first, Ordering::SeqCst);
    eprintln!("{what}: stopping running stages at their next wait (again to exit now)");
    cancel.cancel();
    signals.next().await;
    lock.release();
    std::process::exit(i32::from(first));
}
