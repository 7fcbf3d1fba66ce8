//! The commands: load the stack, find credentials and zones, then hand the stages to the
//! engine. Errors the user must fix (stack file, flags, account, region) are [`UsageError`]s,
//! which `main` turns into exit code 2 — always before any mutating API call.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use aws_credential_types::provider::ProvideCredentials;

use crate::aws::account::{self, PreflightError, Zone};
use crate::aws::{AwsClients, CallStats};
use crate::cli::{
    DoctorArgs, DownArgs, Output, PlanArgs, RunArgs, Selection, StackArgs, VerifyArgs,
};
use crate::config::{ConfigError, Stack, ZoneSpec, DEFAULT_STACK_PATH};
use crate::engine::graph::{Graph, StageId};
use crate::engine::progress::{self, OutputMode};
use crate::engine::run::{self, CancelToken, Direction, RunOptions};
use crate::engine::state::{Journal, LockGuard, StageStatus, StateDir, StateError};
use crate::k8s::helm::{version_at_least, HelmCli, MIN_HELM};
use crate::stages::{self, Action, Change, Context, Stage};

/// A mistake in the input (stack file, flags, environment): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UsageError(e.to_string()).into()
}

/// The stack named by `--stack`, else `stacks/demo.yaml` in the working folder, else the copy
/// built into the binary (so `plan` works from anywhere).
pub fn load_stack(args: &StackArgs) -> anyhow::Result<Stack> {
    load_stack_path(args.stack.as_deref())
}

fn load_stack_path(path: Option<&Path>) -> anyhow::Result<Stack> {
    // `UsageError` is text only: spell out the whole chain, or the OS error behind "cannot
    // read the stack file" (not found? a directory? no permission?) is lost.
    let config_usage = |e: ConfigError| usage(format!("{:#}", anyhow::Error::new(e)));
    match path {
        Some(p) => Stack::load(p).map_err(config_usage),
        None if Path::new(DEFAULT_STACK_PATH).is_file() => {
            Stack::load(Path::new(DEFAULT_STACK_PATH)).map_err(config_usage)
        }
        None => Ok(Stack::embedded_default()),
    }
}

fn selection(graph: &Graph, sel: &Selection) -> anyhow::Result<Vec<StageId>> {
    let only = sel
        .only
        .as_deref()
        .map(|s| graph.parse_ids(s))
        .transpose()
        .map_err(usage)?;
    let skip = sel
        .skip
        .as_deref()
        .map(|s| graph.parse_ids(s))
        .transpose()
        .map_err(usage)?
        .unwrap_or_default();
    let selected = graph.select(only.as_deref(), &skip);
    if selected.is_empty() {
        return Err(usage(
            "no stage selected: --only/--skip leave nothing to run",
        ));
    }
    Ok(selected)
}

fn mode(output: Output) -> OutputMode {
    match output {
        Output::Text => OutputMode::Text,
        Output::Json => OutputMode::Json,
    }
}

fn stage_file(id: StageId) -> String {
    format!("src/stages/{}.rs", id.replace('-', "_"))
}

/// AWS clients with credentials that resolve, or why not.
async fn connect(stack: &Stack) -> Result<AwsClients, String> {
    let (aws, sdk) = AwsClients::from_env(stack.region()).await?;
    let provider = sdk
        .credentials_provider()
        .ok_or("no credentials provider configured")?;
    match tokio::time::timeout(Duration::from_secs(5), provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(aws),
        // The chain's error lists every provider it tried; the one-line version is what helps.
        Ok(Err(_)) => Err(
            "no AWS credentials found (environment, profile, SSO, container or instance metadata)"
                .into(),
        ),
        Err(_) => Err("no AWS credentials (looking for them timed out after 5 s)".into()),
    }
}

fn preflight_error(e: PreflightError) -> anyhow::Error {
    match e {
        PreflightError::Aws(e) => anyhow::Error::new(e).context("preflight"),
        other => usage(other),
    }
}

/// Identity and zones, before any stage.
async fn preflight(
    aws: &AwsClients,
    stack: &Stack,
) -> anyhow::Result<(account::Identity, Vec<Zone>)> {
    let identity = account::identify(aws, stack)
        .await
        .map_err(preflight_error)?;
    let zones = account::choose_zones(aws, stack)
        .await
        .map_err(preflight_error)?;
    Ok((identity, zones))
}

/// Zones to show in an offline plan: the explicit list, or `<region>a, b, c...` as stand-ins.
fn offline_zones(stack: &Stack, region: &str) -> Vec<Zone> {
    match &stack.zones {
        ZoneSpec::Names(names) => names
            .iter()
            .map(|n| Zone {
                name: n.clone(),
                id: String::new(),
            })
            .collect(),
        ZoneSpec::Count(n) => (0..*n)
            .map(|i| Zone {
                name: format!("{region}{}", (b'a' + i as u8) as char),
                id: String::new(),
            })
            .collect(),
    }
}

fn offline_region(stack: &Stack) -> (String, bool) {
    if let Some(r) = stack.region() {
        return (r.to_string(), false);
    }
    for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Ok(r) = std::env::var(var) {
            if !r.is_empty() {
                return (r, false);
            }
        }
    }
    ("us-east-1".to_string(), true)
}

// ---------------------------------------------------------------------------------------
// plan
// ---------------------------------------------------------------------------------------

#[derive(serde::Serialize)]
struct StagePlan {
    stage: StageId,
    file: String,
    changes: Vec<Change>,
}

pub async fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack(&args.stack)?;
    let all = stages::all();
    let graph = Graph::new(stages::specs(&all))?;
    let mut selected = selection(&graph, &args.selection)?;

    let (aws, offline_reason) = if args.offline {
        (None, Some("--offline".to_string()))
    } else {
        match connect(&stack).await {
            Ok(aws) => (Some(aws), None),
            Err(why) => (None, Some(why)),
        }
    };
    let (cx, region, account) = match aws {
        Some(aws) => {
            let (identity, zones) = preflight(&aws, &stack).await?;
            let region = aws.region.clone();
            let account = identity.account.clone();
            (
                Context::new(stack.clone(), Some(aws), Some(identity), zones, None),
                region,
                Some(account),
            )
        }
        None => {
            let (region, _) = offline_region(&stack);
            let zones = offline_zones(&stack, &region);
            (
                Context::new(stack.clone(), None, None, zones, None),
                region,
                None,
            )
        }
    };

    if args.destroy {
        selected.reverse();
    }
    let mut plans = Vec::new();
    for id in &selected {
        let stage = find(&all, id);
        let changes = if args.destroy {
            stage.plan_down(&cx).await
        } else {
            stage.plan_up(&cx).await
        }
        .with_context(|| format!("planning stage `{id}`"))?;
        plans.push(StagePlan {
            stage: id,
            file: stage_file(id),
            changes,
        });
    }
    let calls = cx.aws.as_ref().map(|a| a.calls.snapshot());

    let mut tally: BTreeMap<Action, usize> = BTreeMap::new();
    for c in plans.iter().flat_map(|p| &p.changes) {
        *tally.entry(c.action).or_default() += 1;
    }
    let count = |a| tally.get(&a).copied().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    match args.stack.output {
        Output::Json => {
            let doc = serde_json::json!({
                "stack": stack.name,
                "region": region,
                "account": account,
                "offline": offline_reason.is_some(),
                "offline_reason": offline_reason,
                "zones": cx.zones,
                "direction": if args.destroy { "down" } else { "up" },
                "stages": plans,
                "summary": {"create": count(Action::Create), "update": count(Action::Update), "delete": count(Action::Delete), "conflict": count(Action::Conflict)},
                "api_calls": calls,
            });
            writeln!(out, "{doc}")?;
        }
        Output::Text => {
            writeln!(
                out,
                "meshstack plan{} — stack `{}`",
                if args.destroy { " --destroy" } else { "" },
                stack.name
            )?;
            match (&offline_reason, &account) {
                (Some(why), _) => {
                    writeln!(
                        out,
                        "  {why}: planning against an empty account in {region}"
                    )?;
                    writeln!(
                        out,
                        "  (set AWS credentials and a region to plan against your account)"
                    )?;
                }
                (None, Some(acct)) => writeln!(out, "  account {acct}, region {region}")?,
                (None, None) => {}
            }
            let zone_names: Vec<&str> = cx.zones.iter().map(|z| z.name.as_str()).collect();
            writeln!(out, "  zones: {}", zone_names.join(", "))?;
            for p in &plans {
                writeln!(out)?;
                if p.changes.is_empty() {
                    writeln!(out, "{} ({}): no changes", p.stage, p.file)?;
                    continue;
                }
                writeln!(out, "{} ({}):", p.stage, p.file)?;
                for c in &p.changes {
                    writeln!(out, "  {c}")?;
                }
            }
            writeln!(out)?;
            writeln!(
                out,
                "Plan: {} to create, {} to update, {} to delete{}.",
                count(Action::Create),
                count(Action::Update),
                count(Action::Delete),
                match count(Action::Conflict) {
                    0 => String::new(),
                    n => format!(", {n} conflicts (`up` will stop at them)"),
                }
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn find<'a>(all: &'a [Box<dyn Stage>], id: &str) -> &'a dyn Stage {
    all.iter()
        .find(|s| s.id() == id)
        .map(|s| s.as_ref())
        .expect("graph ids come from the stages")
}

// ---------------------------------------------------------------------------------------
// up / down
// ---------------------------------------------------------------------------------------

pub async fn up(args: RunArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack(&args.stack)?;
    let all = stages::all();
    let graph = Graph::new(stages::specs(&all))?;
    let selected = selection(&graph, &args.selection)?;
    let dir = StateDir::open(&args.stack.state_dir, &stack.name)?;
    let lock = Arc::new(dir.lock("up", args.force_unlock).map_err(lock_error)?);
    let journal = Journal::load(&dir)?;

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
    cx.force = args.force;
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
    let selected = selection(
        &graph,
        &Selection {
            only: args.only.clone(),
            skip: None,
        },
    )?;
    let dir = StateDir::open(&args.stack.state_dir, &stack.name)?;
    let lock = Arc::new(dir.lock("down", args.force_unlock).map_err(lock_error)?);
    let journal = Journal::load(&dir)?;
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
            "cannot tear down the selected stages: {}; include it in --only or omit --only",
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
        },
    )
    .await
}

fn lock_error(e: StateError) -> anyhow::Error {
    anyhow::Error::new(e)
}

fn status_word(s: StageStatus) -> &'static str {
    match s {
        StageStatus::Pending => "pending",
        StageStatus::Running => "interrupted",
        StageStatus::Done => "done",
        StageStatus::Failed => "failed",
        StageStatus::Destroyed => "destroyed",
    }
}

/// What `up` and `down` hold while their stages run.
struct Held {
    journal: Arc<Mutex<Journal>>,
    lock: Arc<LockGuard>,
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
    let watcher = tokio::spawn(watch_interrupts(cancel.clone(), lock));
    let opts = RunOptions {
        direction,
        max_parallel: 0,
        cancel: cancel.clone(),
    };
    let set = |id: StageId, status: StageStatus, msg: Option<String>| -> anyhow::Result<()> {
        journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_status(id, status, msg)?;
        Ok(())
    };
    let report = run::run(graph, selected, opts, reporter.as_ref(), |id, h| {
        let stage = find(all, id);
        async move {
            set(id, StageStatus::Running, None)?;
            let res = match direction {
                Direction::Forward => stage.up(cx, &h).await,
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
    let calls = cx
        .aws
        .as_ref()
        .map(|a| a.calls.snapshot())
        .unwrap_or_default();
    print_calls(output, &calls)?;
    if cancel.is_cancelled() {
        return Ok(ExitCode::from(130));
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_calls(output: Output, calls: &CallStats) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let mut v = serde_json::to_value(calls)?;
            v["event"] = "api-calls".into();
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
        }
    }
    Ok(())
}

/// First Ctrl-C: start nothing new, let running stages finish and record. Second: release the
/// lock and exit now (the journal is written atomically, so it is consistent at any instant;
/// a call in flight is found by tag on the next run).
async fn watch_interrupts(cancel: CancelToken, lock: Arc<LockGuard>) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("interrupted: finishing running stages (Ctrl-C again to exit now)");
    cancel.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        lock.release();
        std::process::exit(130);
    }
}

// ---------------------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------------------

pub async fn status(args: StackArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack(&args)?;
    let all = stages::all();
    let graph = Graph::new(stages::specs(&all))?;
    let state_path = args.state_dir.join(&stack.name);
    let journal = if state_path.is_dir() {
        Some(Journal::load(&StateDir::open(
            &args.state_dir,
            &stack.name,
        )?)?)
    } else {
        None
    };

    let (cx, note) = match connect(&stack).await {
        Ok(aws) => {
            let (identity, zones) = preflight(&aws, &stack).await?;
            (
                Some(Context::new(
                    stack.clone(),
                    Some(aws),
                    Some(identity),
                    zones,
                    None,
                )),
                None,
            )
        }
        Err(why) => (None, Some(why)),
    };
    let mut rows = Vec::new();
    for id in graph.topo_order() {
        let recorded = journal
            .as_ref()
            .map_or(StageStatus::Pending, |j| j.status(id));
        let message = journal
            .as_ref()
            .and_then(|j| j.data().stages.get(id))
            .and_then(|r| r.message.clone());
        let observed = match &cx {
            Some(cx) => Some(
                find(&all, id)
                    .plan_up(cx)
                    .await
                    .with_context(|| format!("observing stage `{id}`"))?,
            ),
            None => None,
        };
        let state = match (&observed, recorded) {
            (_, StageStatus::Failed) => "failed",
            (_, StageStatus::Running) => "interrupted",
            (Some(changes), StageStatus::Done) if !changes.is_empty() => "drifted",
            (Some(changes), _) if changes.is_empty() => "done",
            (_, StageStatus::Done) => "done",
            _ => "pending",
        };
        rows.push(serde_json::json!({
            "stage": id,
            "state": state,
            "journal": status_word(recorded),
            "changes_pending": observed.as_ref().map(|c| c.len()),
            "message": message,
            "outputs": journal.as_ref().and_then(|j| j.data().stages.get(id)).map(|r| &r.outputs),
        }));
    }
    // The UIs are not exposed outside the cluster; these commands reach them.
    let forwards = stages::kiali::port_forwards();
    let forwards_json: Vec<_> = forwards
        .iter()
        .map(|(name, command)| serde_json::json!({"name": name, "command": command}))
        .collect();
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"stack": stack.name, "observed": note.is_none(), "note": note, "stages": rows, "port_forwards": forwards_json})
        ),
        Output::Text => {
            println!(
                "stack `{}`{}",
                stack.name,
                note.map(|n| format!(" (journal only: {n})"))
                    .unwrap_or_default()
            );
            for r in &rows {
                let pending = match r["changes_pending"].as_u64() {
                    Some(0) | None => String::new(),
                    Some(n) => format!("  {n} changes pending"),
                };
                let msg = r["message"]
                    .as_str()
                    .map(|m| format!("  {m}"))
                    .unwrap_or_default();
                println!(
                    "  {:<16} {:<12}{pending}{msg}",
                    r["stage"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or("")
                );
            }
            println!("port-forwards (the UIs are not exposed outside the cluster):");
            for (name, command) in &forwards {
                println!("  {name:<8} {command}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// doctor
// ---------------------------------------------------------------------------------------

pub async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut ok = true;
    let mut report = |good: bool, what: &str, detail: String| {
        ok &= good;
        println!("{} {what}: {detail}", if good { "ok  " } else { "FAIL" });
    };
    let stack = match load_stack_path(args.stack.as_deref()) {
        Ok(s) => {
            report(true, "stack", format!("`{}`", s.name));
            Some(s)
        }
        Err(e) => {
            report(false, "stack", format!("{e:#}"));
            None
        }
    };
    if let Some(stack) = &stack {
        match connect(stack).await {
            Ok(aws) => {
                report(true, "region", aws.region.clone());
                match account::identify(&aws, stack).await {
                    Ok(id) => report(
                        true,
                        "credentials",
                        format!("{} (account {})", id.arn, id.account),
                    ),
                    Err(e) => report(false, "credentials", e.to_string()),
                }
            }
            Err(e) => report(
                false,
                "credentials",
                format!("{e}; configure them with `aws configure` or AWS_* variables"),
            ),
        }
    }
    match HelmCli::from_env(None).version().await {
        Ok(v) if version_at_least(&v, MIN_HELM) => report(true, "helm", v),
        Ok(v) => report(
            false,
            "helm",
            format!(
                "{v} is too old; install helm {}.{} or newer (https://helm.sh/docs/intro/install/)",
                MIN_HELM.0, MIN_HELM.1
            ),
        ),
        Err(e) => report(
            false,
            "helm",
            format!("{e} — the Kubernetes stages need it"),
        ),
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

// ---------------------------------------------------------------------------------------
// token / kubeconfig
// ---------------------------------------------------------------------------------------

/// `meshstack token`: the ExecCredential kubectl reads from its credential plugin. stdout
/// carries only the JSON document; the token is made locally, the only possible network use
/// being the credential chain itself (SSO, instance metadata, an assumed role).
pub async fn token(args: crate::cli::TokenArgs) -> anyhow::Result<ExitCode> {
    use crate::k8s::token::{eks_token, exec_credential_json, TokenError};

    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &args.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
        usage("no AWS region for the token: pass --region, or set AWS_REGION or a profile region")
    })?;
    let creds = credentials(&sdk).await.map_err(usage)?;
    let token = eks_token(&args.cluster, &region, &creds, std::time::SystemTime::now()).map_err(
        |e| match e {
            TokenError::Signing(_) => anyhow::Error::new(e),
            input => usage(input),
        },
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", exec_credential_json(&token))?;
    Ok(ExitCode::SUCCESS)
}

/// Credentials from the chain, or why there are none (the same wording as [`connect`]).
async fn credentials(
    sdk: &aws_config::SdkConfig,
) -> Result<aws_credential_types::Credentials, String> {
    let provider = sdk
        .credentials_provider()
        .ok_or("no credentials provider configured")?;
    match tokio::time::timeout(Duration::from_secs(5), provider.provide_credentials()).await {
        Ok(Ok(creds)) => Ok(creds),
        Ok(Err(_)) => Err(
            "no AWS credentials found (environment, profile, SSO, container or instance metadata)"
                .into(),
        ),
        Err(_) => Err("no AWS credentials (looking for them timed out after 5 s)".into()),
    }
}

/// `meshstack kubeconfig`: merge a context for the stack's cluster into the kubeconfig, its
/// user running this very binary's `token` command.
pub async fn kubeconfig(args: crate::cli::KubeconfigArgs) -> anyhow::Result<ExitCode> {
    use crate::k8s::kubeconfig::{self as kc, ExecPlugin, KubeconfigEntry};

    let stack = load_stack_path(args.stack.as_deref())?;
    let path = match args.kubeconfig {
        Some(p) => p,
        None => kc::default_path().map_err(usage)?,
    };
    let name = args.context.unwrap_or_else(|| stack.name.clone());
    if name.trim().is_empty() {
        return Err(usage("--context must not be empty"));
    }
    let file_error =
        |e: kc::KubeconfigError| usage(format!("{}: {:#}", path.display(), anyhow::Error::new(e)));
    // A file we could not merge into is reported before any API call.
    let existing = kc::read(&path)?;
    if let Some(text) = &existing {
        kc::current_context(text).map_err(file_error)?;
    }

    let aws = connect(&stack).await.map_err(usage)?;
    let cluster = stack.cluster_name();
    let where_ = format!(
        "stack `{}`: EKS cluster `{cluster}` in {}",
        stack.name, aws.region
    );
    let facts = match stages::cluster::find(&aws, &stack)
        .await
        .with_context(|| format!("looking up {where_}"))?
    {
        None => anyhow::bail!("{where_} does not exist; create it with `meshstack up`"),
        Some((seen, _)) if !seen.ours => anyhow::bail!(
            "{where_} is not tagged {}={}; meshstack writes kubeconfig entries only for clusters it manages",
            crate::aws::STACK_TAG,
            stack.name
        ),
        Some((seen, facts)) if facts.endpoint.is_empty() || facts.certificate_authority.is_empty() => {
            anyhow::bail!(
                "{where_} is {} and has no API endpoint yet; let `meshstack up` finish first",
                seen.status
            )
        }
        Some((_, facts)) => facts,
    };

    // The absolute path of this binary, so the entry works whatever kubectl's PATH is.
    let command = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or_else(|| "meshstack".to_string());
    let mut exec = ExecPlugin::meshstack_token(command, cluster, &aws.region);
    // kubectl runs the plugin with its own environment; pin the profile used now so the token
    // is signed by the identity that can reach the cluster, as `aws eks update-kubeconfig` does.
    if let Some(profile) = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()) {
        exec.env.push(("AWS_PROFILE".into(), profile));
    }
    let entry = KubeconfigEntry {
        name: name.clone(),
        server: facts.endpoint,
        certificate_authority_data: facts.certificate_authority,
        exec,
    };
    let merged = kc::merge(existing.as_deref(), &entry).map_err(file_error)?;
    kc::write_atomic(&path, &merged)?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "wrote context `{name}` for EKS cluster `{cluster}` ({}) to {}",
        aws.region,
        path.display()
    )?;
    match kc::current_context(&merged).map_err(file_error)? {
        Some(current) if current == name => writeln!(out, "current context: `{name}`")?,
        Some(current) => {
            // kubectl acts on the default file unless told otherwise.
            let flag = if kc::default_path().is_ok_and(|d| d == path) {
                String::new()
            } else {
                format!(" --kubeconfig {}", path.display())
            };
            writeln!(
                out,
                "current context stays `{current}`; switch with `kubectl config use-context {name}{flag}`"
            )?
        }
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// render
// ---------------------------------------------------------------------------------------

/// `meshstack render`: every manifest and helm values file the Kubernetes stages apply, filled
/// in from the stack, written under `--out`. Offline and deterministic: the account ID and
/// API endpoint are placeholders unless given, the region comes from the stack or the
/// environment (else us-east-1), and a zone count becomes `<region>a, b, ...`.
pub async fn render(args: crate::cli::RenderArgs) -> anyhow::Result<ExitCode> {
    use crate::render::{self, RenderInputs};

    let stack = load_stack_path(args.stack.as_deref())?;
    let (region, region_defaulted) = offline_region(&stack);
    let zones: Vec<String> = offline_zones(&stack, &region)
        .into_iter()
        .map(|z| z.name)
        .collect();
    let mut notes = Vec::new();
    if region_defaulted {
        notes.push(format!(
            "region {region} (no region in the stack or environment)"
        ));
    }
    if matches!(stack.zones, ZoneSpec::Count(_)) {
        notes.push(format!(
            "zones {} (the first zones by name; `up` asks AWS which zones to use)",
            zones.join(", ")
        ));
    }
    let account_id = args.account_id.clone().unwrap_or_else(|| {
        notes.push(format!(
            "account {} (pass --account-id for real ARNs)",
            render::OFFLINE_ACCOUNT_ID
        ));
        render::OFFLINE_ACCOUNT_ID.to_string()
    });
    let cluster_endpoint = args.endpoint.clone().unwrap_or_else(|| {
        let endpoint = render::offline_endpoint(&stack);
        notes.push(format!(
            "API endpoint {endpoint} (pass --endpoint for the cluster's)"
        ));
        endpoint
    });
    let inputs = RenderInputs {
        partition: render::partition_for_region(&region).to_string(),
        account_id,
        region,
        zones,
        cluster_endpoint,
    };
    let files = render::render(&stack, &inputs).map_err(|e| match e {
        // A setting in the stack file: say which file, as stack-file errors do.
        render::RenderError::Unsupported { .. } => {
            let origin = match &args.stack {
                Some(p) => p.display().to_string(),
                None if Path::new(DEFAULT_STACK_PATH).is_file() => DEFAULT_STACK_PATH.into(),
                None => format!("{DEFAULT_STACK_PATH} (built in)"),
            };
            usage(format!("{origin}: {e}"))
        }
        e => usage(e),
    })?;
    if !notes.is_empty() {
        eprintln!("rendering offline, with stand-ins for what only AWS knows:");
        for note in &notes {
            eprintln!("  {note}");
        }
    }
    if let Some(warning) = render::istio_support_warning(&stack) {
        eprintln!("warning: {warning}");
    }

    let mut out = std::io::stdout().lock();
    for file in &files {
        let path = args.out.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, &file.content)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "{}", path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// pods / verify
// ---------------------------------------------------------------------------------------

/// A read-only context for `stack` with credentials, identity and zones (no journal).
async fn read_only_context(stack: Stack) -> anyhow::Result<Context> {
    let aws = connect(&stack).await.map_err(usage)?;
    let (identity, zones) = preflight(&aws, &stack).await?;
    Ok(Context::new(stack, Some(aws), Some(identity), zones, None))
}

pub async fn pods(args: StackArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack(&args)?;
    let cx = read_only_context(stack).await?;
    let kube = cx.kube().await.context("connecting to the cluster")?;
    let report = crate::inspect::pods(&kube.client)
        .await
        .context("reading nodes and pods")?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Text => write!(out, "{}", crate::locality::placement::render_text(&report))?,
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack(&args.stack)?;
    let verification = if args.clusters_dump.is_empty() {
        let cx = read_only_context(stack.clone()).await?;
        let kube = cx.kube().await.context("connecting to the cluster")?;
        let http = crate::k8s::pod_http::PortForward {
            client: kube.client.clone(),
            timeout: crate::inspect::HTTP_TIMEOUT,
        };
        let bar = if args.stack.output == Output::Text && args.requests > 0 {
            indicatif::ProgressBar::new(args.requests)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message("sending graphql queries");
        let progress = |done: u64, _total: u64| bar.set_position(done);
        let warn = |message: String| bar.suspend(|| eprintln!("warning: {message}"));
        let result = crate::inspect::verify_live(
            &kube.client,
            &http,
            &stack,
            args.requests,
            &args.query,
            &progress,
            &warn,
        )
        .await;
        bar.finish_and_clear();
        result?
    } else {
        crate::inspect::verify_offline(&args.clusters_dump, &stack, args.bytes_per_request)
            .map_err(|e| match e {
                crate::inspect::VerifyError::Input(_)
                | crate::inspect::VerifyError::Parse { .. } => usage(e),
                other => other.into(),
            })?
    };
    let mut out = std::io::stdout().lock();
    match args.stack.output {
        Output::Text => write!(out, "{}", crate::inspect::render_text(&verification))?,
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&verification)?)?,
    }
    Ok(if verification.report.verdict.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_zones_follow_the_region() {
        let s = Stack::parse("name: t\nzones: 3\n", "t").unwrap();
        let z: Vec<String> = offline_zones(&s, "eu-west-1")
            .into_iter()
            .map(|z| z.name)
            .collect();
        assert_eq!(z, ["eu-west-1a", "eu-west-1b", "eu-west-1c"]);
    }
}
