//! `meshstack fleet plan | up | down | status | handout`: many environments of one stack
//! file, for a workshop.
//!
//! Each environment is an ordinary stack (`src/fleet.rs` names them) run through the same
//! steps as `up` and `down` (`run.rs`: lock, selection check, expiry, [`execute`]), each in
//! its own task, `--parallel` at a time, so one failing never stops the others. Before any
//! of them starts: every input is checked, each account (`--accounts`, through STS
//! AssumeRole) is connected once with the account guard applied, and the quotas of each
//! account and region are checked against what all its environments still need.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};

use super::checks::{
    check_iam_region, check_kubernetes, check_quotas, gate, read_checks, QuotaGroup,
};
use super::run::{
    calls_line, check_down, check_up, execute, settle_expiry, take_state, Held, Interrupts, Ran,
};
use super::state::{location, open_for_writing, read_journal};
use super::{check_helm, credentials, find, load_stack, mode, preflight, selection, usage};
use crate::aws::account::{Identity, Zone};
use crate::aws::{AwsClients, CallStats, FLEET_TAG};
use crate::cli::{
    FleetArgs, FleetDownArgs, FleetHandoutArgs, FleetPlanArgs, FleetStatusArgs, FleetUpArgs,
    Output, StackArgs, TokenCommand,
};
use crate::config::Stack;
use crate::engine::fleet_progress::{EnvEvent, FleetProgress};
use crate::engine::graph::{Graph, StageId};
use crate::engine::progress::error_detail;
use crate::engine::run::{CancelToken, Direction, StageResult};
use crate::engine::state::{Journal, StageStatus, Unlock};
use crate::fleet::{self as model, AccountRole, EnvResult, Members, Outcome};
use crate::stages::{self, Context, Stage};

/// One environment of the fleet.
#[derive(Clone)]
pub(super) struct Env {
    pub name: String,
    /// The stack file's settings under the environment's name, tagged with the fleet.
    pub stack: Stack,
    /// The role to build it through, with `--accounts`.
    pub role: Option<AccountRole>,
}

/// The fleet as the flags describe it, checked.
struct Fleet {
    /// The stack file's stack (its name is the fleet's).
    stack: Stack,
    envs: Vec<Env>,
}

fn load_fleet(args: &FleetArgs) -> anyhow::Result<Fleet> {
    let stack = load_stack(&args.stack)?;
    if stack.existing_cluster().is_some() {
        return Err(usage(
            "a fleet builds one cluster per environment; `cluster.existing` names one cluster \
             that is already there: use `meshstack up` with this stack, or remove \
             cluster.existing for a fleet",
        ));
    }
    let members = match (&args.count, &args.names) {
        (Some(n), None) => Members::Count(*n),
        (None, Some(names)) => Members::Names(model::parse_names(names)),
        _ => return Err(usage("give --count N or --names A,B,C")),
    };
    let names = model::env_names(&stack.name, &members).map_err(usage)?;
    let roles: Vec<Option<AccountRole>> = match &args.accounts {
        None => vec![None; names.len()],
        Some(path) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("{origin}: cannot read the accounts file: {e}")))?;
            let accounts = model::parse_accounts(&text, &origin).map_err(usage)?;
            model::assign(&names, &accounts, &origin)
                .map_err(usage)?
                .into_iter()
                .map(|a| Some(a.clone()))
                .collect()
        }
    };
    let mut envs = Vec::new();
    for (name, role) in names.into_iter().zip(roles) {
        let mut env_stack = stack.renamed(&name).map_err(usage)?;
        env_stack.set_own_tag(FLEET_TAG, &stack.name);
        // Each environment gets an attendee role of its own unless the stack file says not.
        env_stack.access.attendee_role.get_or_insert(true);
        envs.push(Env {
            name,
            stack: env_stack,
            role,
        });
    }
    Ok(Fleet { stack, envs })
}

/// Environment `env`'s journal, where the fleet's state flags put it (`None`: never run).
fn env_journal(state: &StackArgs, env: &Env) -> anyhow::Result<Option<Journal>> {
    read_journal(state, &env.stack, &location(state, &env.stack))
}

/// The environments that share an account (one role, or the caller's own credentials):
/// connected once, preflighted once.
pub(super) struct Group {
    pub role: Option<AccountRole>,
    /// The group's own clients (preflight, quotas, discovery), counted apart; the
    /// environments' are their siblings.
    pub aws: AwsClients,
    pub identity: Identity,
    pub zones: Vec<Zone>,
    /// Indices into the fleet's environments.
    pub envs: Vec<usize>,
}

impl Group {
    fn label(&self) -> String {
        match &self.role {
            Some(r) => format!("account {} (role {})", self.identity.account, r.role_arn),
            None => format!("account {}", self.identity.account),
        }
    }
}

/// Connects to every account of `envs` and runs the preflight there (identity, account
/// guard, and with `zones` the zones). Errors here are the user's to fix and nothing has been
/// written: usage errors (exit 2).
pub(super) async fn connect_groups(
    stack: &Stack,
    envs: &[Env],
    zones: bool,
) -> anyhow::Result<Vec<Group>> {
    let (base, sdk) = AwsClients::from_env(stack.region()).await.map_err(usage)?;
    credentials(&sdk).await.map_err(usage)?;
    let mut groups: Vec<Group> = Vec::new();
    for (i, env) in envs.iter().enumerate() {
        let key = env.role.as_ref().map(|r| (&r.role_arn, &r.external_id));
        if let Some(g) = groups
            .iter_mut()
            .find(|g| g.role.as_ref().map(|r| (&r.role_arn, &r.external_id)) == key)
        {
            g.envs.push(i);
            continue;
        }
        let aws = match &env.role {
            None => base.sibling(),
            Some(role) => {
                let session = format!("meshstack-fleet-{}", stack.name);
                let assumed = AwsClients::assume_role(
                    &sdk,
                    &role.role_arn,
                    role.external_id.as_deref(),
                    &session,
                )
                .await;
                AwsClients::from_sdk(&assumed, &base.region)
            }
        };
        let who = env
            .role
            .as_ref()
            .map(|r| format!("environment {} through {}: ", env.name, r.role_arn))
            .unwrap_or_default();
        let (identity, zone_list) = if zones {
            preflight(&aws, &env.stack)
                .await
                .map_err(|e| usage(format!("{who}{e:#}")))?
        } else {
            let identity = crate::aws::account::identify(&aws, &env.stack)
                .await
                .map_err(|e| usage(format!("{who}{e:#}")))?;
            (identity, Vec::new())
        };
        if let Some(role) = &env.role {
            if identity.account != role.account {
                return Err(usage(format!(
                    "{who}STS says the credentials are account {}'s, not {}'s",
                    identity.account, role.account
                )));
            }
        }
        groups.push(Group {
            role: env.role.clone(),
            aws,
            identity,
            zones: zone_list,
            envs: vec![i],
        });
    }
    Ok(groups)
}

fn quota_groups<'a>(groups: &'a [Group], envs: &'a [Env]) -> Vec<QuotaGroup<'a>> {
    groups
        .iter()
        .map(|g| QuotaGroup {
            aws: &g.aws,
            account: &g.identity.account,
            stacks: g.envs.iter().map(|i| &envs[*i].stack).collect(),
            zones: g.zones.iter().map(|z| z.name.clone()).collect(),
        })
        .collect()
}

/// One environment's run, owned, for its own task.
pub(super) struct Job {
    pub env: Env,
    pub state: StackArgs,
    pub aws: AwsClients,
    pub identity: Identity,
    pub zones: Vec<Zone>,
    pub direction: Direction,
    pub selected: Vec<StageId>,
    pub all: Arc<Vec<Box<dyn Stage>>>,
    pub graph: Arc<Graph>,
    pub force_unlock: bool,
}

/// What `--force-unlock` means for one environment: a local lock whose process is gone, or
/// an S3 lock whose lease has ended (by its ID, so a lock taken meanwhile survives).
fn stale_unlock(state: &StackArgs, stack: &Stack) -> anyhow::Result<Unlock> {
    let opened = open_for_writing(state, stack, &location(state, stack))?;
    if !opened.store.shared() {
        return Ok(Unlock::Stale);
    }
    Ok(match opened.store.read_lock()? {
        Some(Ok(info)) if info.lease_expired(crate::engine::store::unix_now_ms()) => {
            Unlock::Id(info.id)
        }
        _ => Unlock::No,
    })
}

/// Runs one environment: its lock, its selection check, its expiry (up), its stages.
async fn run_job(
    job: Job,
    progress: Arc<FleetProgress>,
    cancel: CancelToken,
    interrupts: Arc<Interrupts>,
) -> (EnvResult, CallStats) {
    let started = Instant::now();
    let name = job.env.name.clone();
    let account = Some(job.identity.account.clone());
    let failed = |reason: String, calls: CallStats| {
        progress.env_event(&name, EnvEvent::Failed, &reason);
        (
            EnvResult {
                env: name.clone(),
                account: account.clone(),
                result: Outcome::Failed,
                failed_stage: None,
                reason: Some(reason),
                elapsed_ms: millis(started),
                reads: calls.reads,
                writes: calls.writes,
            },
            calls,
        )
    };
    if cancel.is_cancelled() {
        return (
            EnvResult {
                env: name.clone(),
                account: account.clone(),
                result: Outcome::Interrupted,
                failed_stage: None,
                reason: Some("not started: interrupted".into()),
                elapsed_ms: 0,
                reads: 0,
                writes: 0,
            },
            CallStats::default(),
        );
    }
    progress.env_event(&name, EnvEvent::Started, "");
    let mut stack = job.env.stack.clone();
    let command = match job.direction {
        Direction::Forward => "fleet up",
        Direction::Reverse => "fleet down",
    };
    let unlock = if job.force_unlock {
        match stale_unlock(&job.state, &stack) {
            Ok(u) => u,
            Err(e) => return failed(format!("{e:#}"), CallStats::default()),
        }
    } else {
        Unlock::No
    };
    let (lock, mut journal, s3) = match take_state(&job.state, &stack, command, &unlock) {
        Ok(held) => held,
        Err(e) => {
            let mut reason = format!("{e:#}");
            if reason.contains("--force-unlock") {
                reason.push_str(&format!(
                    " (for the fleet: `meshstack {command} ... --force-unlock`)"
                ));
            }
            return failed(reason, CallStats::default());
        }
    };
    interrupts.register(&lock);
    let checked = match job.direction {
        Direction::Forward => check_up(&job.graph, &job.selected, &journal),
        Direction::Reverse => check_down(&job.graph, &job.selected, &journal),
    };
    if let Err(e) = checked {
        return failed(format!("{e:#}"), job.aws.calls.snapshot());
    }
    if job.direction == Direction::Forward {
        if let Err(e) = settle_expiry(&mut stack, &mut journal, &job.aws).await {
            return failed(format!("{e:#}"), job.aws.calls.snapshot());
        }
    }
    let journal = Arc::new(Mutex::new(journal));
    let cx = Context::new(
        stack,
        Some(job.aws.clone()),
        Some(job.identity.clone()),
        job.zones.clone(),
        Some(journal.clone()),
    );
    let reporter = progress.reporter(&name);
    let ran: Ran = execute(
        &cx,
        &job.all,
        &job.graph,
        &job.selected,
        job.direction,
        &reporter,
        cancel.clone(),
        Held { journal, lock, s3 },
    )
    .await;
    let first_failure = ran.report.results.iter().find_map(|(id, r)| match r {
        StageResult::Failed { error, .. } => {
            Some((id.to_string(), error_detail(Some(id), error).to_string()))
        }
        _ => None,
    });
    let (result, failed_stage, reason) = match (&ran.stopped, &first_failure) {
        (Some(e), _) => (Outcome::Failed, None, Some(e.to_string())),
        (None, _) if cancel.is_cancelled() && !ran.report.ok() => {
            (Outcome::Interrupted, None, Some("interrupted".to_string()))
        }
        (None, Some((stage, why))) => (Outcome::Failed, Some(stage.clone()), Some(why.clone())),
        (None, None) if ran.report.ok() => (Outcome::Done, None, None),
        (None, None) => (Outcome::Failed, None, Some("stages were skipped".into())),
    };
    (
        EnvResult {
            env: name,
            account,
            result,
            failed_stage,
            reason,
            elapsed_ms: millis(started),
            reads: ran.calls.reads,
            writes: ran.calls.writes,
        },
        ran.calls,
    )
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs `jobs`, `parallel` at a time, each in its own task; results in the jobs' order.
pub(super) async fn run_jobs(
    jobs: Vec<Job>,
    parallel: usize,
    progress: Arc<FleetProgress>,
    interrupts: Arc<Interrupts>,
) -> Vec<(EnvResult, CallStats)> {
    let slots = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let cancel = interrupts.token();
    let mut tasks = Vec::new();
    for job in jobs {
        let (slots, progress, cancel, interrupts) = (
            slots.clone(),
            progress.clone(),
            cancel.clone(),
            interrupts.clone(),
        );
        let name = job.env.name.clone();
        let account = job.identity.account.clone();
        let task = tokio::spawn(async move {
            // A cancelled fleet starts no environment that is still waiting for a slot.
            let permit = tokio::select! {
                p = slots.acquire_owned() => p.ok(),
                () = cancel.cancelled() => None,
            };
            let out = run_job(job, progress, cancel, interrupts).await;
            drop(permit);
            out
        });
        tasks.push((name, account, task));
    }
    let mut out = Vec::new();
    for (name, account, task) in tasks {
        out.push(task.await.unwrap_or_else(|e| {
            (
                EnvResult {
                    env: name,
                    account: Some(account),
                    result: Outcome::Failed,
                    failed_stage: None,
                    reason: Some(format!(
                        "meshstack failed inside this environment's run: {e}"
                    )),
                    elapsed_ms: 0,
                    reads: 0,
                    writes: 0,
                },
                CallStats::default(),
            )
        }));
    }
    progress.finish();
    out
}

/// Prints the final table (stdout) and the call counts, and returns the exit code: the
/// signal's, 1 if any environment failed, else 0.
pub(super) fn report(
    verb: &str,
    output: Output,
    results: &[(EnvResult, CallStats)],
    group_calls: CallStats,
    elapsed: Instant,
    interrupts: &Interrupts,
    rerun_hint: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let envs: Vec<EnvResult> = results.iter().map(|(r, _)| r.clone()).collect();
    let mut total = group_calls.clone();
    for (_, c) in results {
        add_calls(&mut total, c);
    }
    match output {
        Output::Json => {
            println!(
                "{}",
                serde_json::json!({
                    "event": "fleet-summary",
                    "verb": verb,
                    "ok": envs.iter().all(|e| e.result == Outcome::Done),
                    "elapsed_ms": millis(elapsed),
                    "envs": envs,
                })
            );
            let mut v = serde_json::to_value(&total)?;
            v["event"] = "api-calls".into();
            v["fleet"] = serde_json::to_value(&group_calls)?;
            v["envs"] = results
                .iter()
                .map(|(r, c)| (r.env.clone(), serde_json::to_value(c).unwrap_or_default()))
                .collect::<serde_json::Map<String, serde_json::Value>>()
                .into();
            println!("{v}");
        }
        Output::Text => {
            print!("{}", model::table(verb, &envs, millis(elapsed)));
            eprintln!(
                "{} ({} environments; {} reads, {} writes before they started: accounts, \
                 quotas)",
                calls_line(&total),
                envs.len(),
                group_calls.reads,
                group_calls.writes
            );
            let unfinished = envs.iter().filter(|e| e.result != Outcome::Done).count();
            if let (Some(hint), true) = (rerun_hint, unfinished > 0) {
                eprintln!(
                    "{unfinished} environment{} not finished: run `{hint}` again to continue \
                     them (the finished ones are left as they are)",
                    if unfinished == 1 { "" } else { "s" }
                );
            }
        }
    }
    if let Some(code) = interrupts.signalled() {
        return Ok(ExitCode::from(code));
    }
    Ok(if envs.iter().all(|e| e.result == Outcome::Done) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn add_calls(total: &mut CallStats, c: &CallStats) {
    total.reads += c.reads;
    total.writes += c.writes;
    total.retries += c.retries;
    for (op, n) in &c.writes_by_operation {
        *total.writes_by_operation.entry(op.clone()).or_default() += n;
    }
}

fn groups_calls(groups: &[Group]) -> CallStats {
    let mut total = CallStats::default();
    for g in groups {
        add_calls(&mut total, &g.aws.calls.snapshot());
    }
    total
}

fn with_expiry(fleet: &mut Fleet, requested: Option<crate::config::Lifetime>) {
    if let Some(l) = requested {
        fleet.stack.expires_in = Some(l);
        for e in &mut fleet.envs {
            e.stack.expires_in = Some(l);
        }
    }
}

fn fleet_hint(verb: &str, args: &FleetArgs) -> String {
    let mut s = format!("meshstack fleet {verb}");
    if let Some(p) = &args.stack.stack {
        s.push_str(&format!(" --stack {}", p.display()));
    }
    match (&args.count, &args.names) {
        (Some(n), _) => s.push_str(&format!(" --count {n}")),
        (_, Some(names)) => s.push_str(&format!(" --names {names}")),
        _ => {}
    }
    if let Some(a) = &args.accounts {
        s.push_str(&format!(" --accounts {}", a.display()));
    }
    s.push_str(" ...");
    s
}

pub async fn fleet_up(args: FleetUpArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut fleet = load_fleet(&args.fleet)?;
    with_expiry(&mut fleet, args.expires_in);
    let all = stages::all();
    let graph = Graph::new(stages::specs(&all))?;
    let selected = selection(&graph, &args.selection)?;
    check_helm(&fleet.stack, &all, &selected).await?;
    // Every environment's selection against its journal, before any API call (read-only;
    // checked again under each lock). The stages some environment has still to do are the
    // ones whose quotas are looked at.
    let mut pending: Vec<StageId> = Vec::new();
    for env in &fleet.envs {
        let journal = env_journal(&args.fleet.stack, env)?;
        if let Some(j) = journal {
            check_up(&graph, &selected, &j)
                .map_err(|e| usage(format!("environment {}: {e:#}", env.name)))?;
            for id in super::run::not_done(&selected, &j) {
                if !pending.contains(&id) {
                    pending.push(id);
                }
            }
        } else {
            pending.clone_from(&selected);
            check_up(
                &graph,
                &selected,
                &Journal::snapshot(crate::engine::state::JournalData::empty(&env.name)),
            )
            .map_err(|e| usage(format!("environment {}: {e:#}", env.name)))?;
        }
    }
    let groups = connect_groups(&fleet.stack, &fleet.envs, true).await?;
    for g in &groups {
        check_kubernetes(Some(&g.aws), &fleet.stack, &pending).await?;
        for &i in &g.envs {
            check_iam_region(&g.aws, &fleet.envs[i].stack, &pending).await?;
        }
    }
    check_quotas(
        &quota_groups(&groups, &fleet.envs),
        &pending,
        args.ignore_quotas,
    )
    .await?;
    let run = Walk {
        fleet: &args.fleet,
        envs: &fleet.envs,
        groups: &groups,
        selected: &selected,
        force_unlock: args.force_unlock,
        started,
    };
    run.walk(Direction::Forward, all, graph).await
}

#[allow(clippy::too_many_arguments)]
fn jobs(
    envs: &[Env],
    groups: &[Group],
    state: &StackArgs,
    direction: Direction,
    selected: &[StageId],
    all: Arc<Vec<Box<dyn Stage>>>,
    graph: Arc<Graph>,
    force_unlock: bool,
) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (i, env) in envs.iter().enumerate() {
        let g = groups
            .iter()
            .find(|g| g.envs.contains(&i))
            .expect("every environment is in a group");
        jobs.push(Job {
            env: env.clone(),
            state: state.clone(),
            // Clients of its own: its calls are counted apart, over the group's connections
            // and within the group's share of AWS's rate limits.
            aws: g.aws.sibling(),
            identity: g.identity.clone(),
            zones: g.zones.clone(),
            direction,
            selected: selected.to_vec(),
            all: all.clone(),
            graph: graph.clone(),
            force_unlock,
        });
    }
    jobs
}

pub async fn fleet_down(args: FleetDownArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let fleet = load_fleet(&args.fleet)?;
    let all = stages::all();
    let graph = Graph::new(stages::specs(&all))?;
    let selected = selection(&graph, &args.selection)?;
    super::confirm::require_yes_or_terminal("fleet down", args.yes)?;
    for env in &fleet.envs {
        if let Some(j) = env_journal(&args.fleet.stack, env)? {
            check_down(&graph, &selected, &j)
                .map_err(|e| usage(format!("environment {}: {e:#}", env.name)))?;
        }
    }
    let mut envs = fleet.envs.clone();
    let mut groups = connect_groups(&fleet.stack, &envs, false).await?;
    // Environments of this fleet that the flags do not name (a larger --count earlier, other
    // --names), found by the fleet's tag in each account.
    let mut extra = Vec::new();
    // Named environments whose resources say they are not this fleet's (issue 23, item 3):
    // a stack `demo-02` made on its own is not environment 02 of fleet `demo`.
    let mut foreign = BTreeSet::new();
    for (gi, g) in groups.iter().enumerate() {
        let found = crate::aws::discover::stacks(&g.aws)
            .await
            .context("looking for the fleet's environments by tag")?;
        for &i in &g.envs {
            let Some(f) = found.get(&envs[i].name) else {
                continue; // nothing of it in this account: nothing to prove, nothing to delete
            };
            if f.fleet.as_deref() == Some(fleet.stack.name.as_str()) {
                continue;
            }
            let why = match (f.defined_by, &f.fleet) {
                (Some(by), Some(other)) => format!("its {by} is tagged {FLEET_TAG}={other}"),
                (Some(by), None) => format!("its {by} carries no {FLEET_TAG} tag"),
                (None, _) => "it has no VPC or cluster of its own to prove it".to_string(),
            };
            eprintln!(
                "left alone: {} is not an environment of fleet `{}` ({why}) in {};                  `meshstack down --name {}` tears it down on its own",
                f.stack,
                fleet.stack.name,
                g.label(),
                f.stack
            );
            foreign.insert(i);
        }
        for f in found.values() {
            if f.fleet.as_deref() == Some(fleet.stack.name.as_str())
                && !envs.iter().any(|e| e.name == f.stack)
                && !extra.iter().any(|(_, e): &(usize, Env)| e.name == f.stack)
            {
                let mut stack = fleet.stack.renamed(&f.stack).map_err(usage)?;
                stack.set_own_tag(FLEET_TAG, &fleet.stack.name);
                extra.push((
                    gi,
                    Env {
                        name: f.stack.clone(),
                        stack,
                        role: g.role.clone(),
                    },
                ));
            }
        }
    }
    for (gi, env) in extra {
        eprintln!(
            "also tearing down {}: tagged {FLEET_TAG}={} in {}",
            env.name,
            fleet.stack.name,
            groups[gi].label()
        );
        groups[gi].envs.push(envs.len());
        envs.push(env);
    }
    if !foreign.is_empty() {
        let mut index = vec![None; envs.len()];
        let mut kept = Vec::new();
        for (i, env) in envs.into_iter().enumerate() {
            if !foreign.contains(&i) {
                index[i] = Some(kept.len());
                kept.push(env);
            }
        }
        envs = kept;
        for g in &mut groups {
            g.envs = g.envs.iter().filter_map(|i| index[*i]).collect();
        }
    }
    let accounts: Vec<String> = groups.iter().map(Group::label).collect();
    let region = groups
        .first()
        .map(|g| g.aws.region.clone())
        .unwrap_or_default();
    let what = super::confirm::Deletion {
        command: "fleet down",
        place: super::confirm::aws_place(&accounts.join(", "), &region),
        stacks: envs
            .iter()
            .map(|e| (e.name.clone(), format!("fleet `{}`", fleet.stack.name)))
            .collect(),
        scope: format!("stages {}", selected.join(", ")),
    };
    if !super::confirm::confirm(&what, args.yes).await? {
        return Ok(ExitCode::FAILURE);
    }
    let run = Walk {
        fleet: &args.fleet,
        envs: &envs,
        groups: &groups,
        selected: &selected,
        force_unlock: args.force_unlock,
        started,
    };
    run.walk(Direction::Reverse, all, graph).await
}

/// What `fleet up` and `fleet down` walk: every environment, `--parallel` at a time.
struct Walk<'a> {
    fleet: &'a FleetArgs,
    envs: &'a [Env],
    groups: &'a [Group],
    selected: &'a [StageId],
    force_unlock: bool,
    started: Instant,
}

impl Walk<'_> {
    /// Runs the selected stages of every environment in `direction` (`up` or `down`) and
    /// reports the fleet's results.
    async fn walk(
        &self,
        direction: Direction,
        all: Vec<Box<dyn Stage>>,
        graph: Graph,
    ) -> anyhow::Result<ExitCode> {
        let verb = match direction {
            Direction::Forward => "up",
            Direction::Reverse => "down",
        };
        let interrupts = Arc::new(Interrupts::watch());
        let names: Vec<String> = self.envs.iter().map(|e| e.name.clone()).collect();
        let output = self.fleet.stack.output;
        let progress = FleetProgress::new(mode(output), &names, self.selected.len());
        let jobs = jobs(
            self.envs,
            self.groups,
            &self.fleet.stack,
            direction,
            self.selected,
            Arc::new(all),
            Arc::new(graph),
            self.force_unlock,
        );
        let parallel = self.fleet.parallel.into();
        let results = run_jobs(jobs, parallel, progress, interrupts.clone()).await;
        report(
            verb,
            output,
            &results,
            groups_calls(self.groups),
            self.started,
            &interrupts,
            Some(&fleet_hint(verb, self.fleet)),
        )
    }
}

/// One environment's plan, in counts.
#[derive(serde::Serialize)]
struct EnvPlan {
    env: String,
    account: Option<String>,
    region: String,
    create: usize,
    update: usize,
    delete: usize,
    conflict: usize,
}

pub async fn fleet_plan(args: FleetPlanArgs) -> anyhow::Result<ExitCode> {
    use crate::stages::Action;
    let mut fleet = load_fleet(&args.fleet)?;
    with_expiry(&mut fleet, args.expires_in);
    let prices = crate::prices::PriceTable::load(args.prices.as_deref()).map_err(usage)?;
    let all = stages::all();
    let graph = Graph::new(stages::specs(&all))?;
    let selected = selection(&graph, &args.selection)?;
    let groups = match connect_groups(&fleet.stack, &fleet.envs, true).await {
        Ok(g) => Some(g),
        // Without credentials: the names, the prices; no plan against an account, no quotas.
        Err(e)
            if e.downcast_ref::<super::UsageError>().is_some() && args.fleet.accounts.is_none() =>
        {
            let why = format!("{e:#}");
            if why.contains("credentials") || why.contains("region") {
                eprintln!("warning: {why}: planning every environment against an empty account, without quotas");
                None
            } else {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    };
    let region = groups
        .as_ref()
        .and_then(|g| g.first())
        .map(|g| g.aws.region.clone())
        .unwrap_or_else(|| super::offline_region(&fleet.stack).0);
    // Each environment's plan reads its account; --parallel of them at once, in order.
    let (groups_ref, all_ref, selected_ref, region_ref) = (&groups, &all, &selected, &region);
    let stack_args = &args.fleet.stack;
    let plans: Vec<EnvPlan> = futures::stream::iter(fleet.envs.iter().enumerate())
        .map(|(i, env)| async move {
            let (cx, account) = match groups_ref {
                Some(groups) => {
                    let g = groups
                        .iter()
                        .find(|g| g.envs.contains(&i))
                        .expect("grouped");
                    let journal = env_journal(stack_args, env)
                        .ok()
                        .flatten()
                        .map(|j| Arc::new(Mutex::new(Journal::snapshot(j.data().clone()))));
                    (
                        Context::new(
                            env.stack.clone(),
                            Some(g.aws.sibling()),
                            Some(g.identity.clone()),
                            g.zones.clone(),
                            journal,
                        ),
                        Some(g.identity.account.clone()),
                    )
                }
                None => (
                    Context::new(
                        env.stack.clone(),
                        None,
                        None,
                        super::offline_zones(&env.stack, region_ref),
                        None,
                    ),
                    None,
                ),
            };
            let mut tally: BTreeMap<Action, usize> = BTreeMap::new();
            for id in selected_ref {
                let changes = find(all_ref, id)
                    .plan_up(&cx)
                    .await
                    .with_context(|| format!("environment {}: planning stage `{id}`", env.name))?;
                for c in changes {
                    *tally.entry(c.action).or_default() += 1;
                }
            }
            let count = |a| tally.get(&a).copied().unwrap_or(0);
            anyhow::Ok(EnvPlan {
                env: env.name.clone(),
                account,
                region: region_ref.clone(),
                create: count(Action::Create),
                update: count(Action::Update),
                delete: count(Action::Delete),
                conflict: count(Action::Conflict),
            })
        })
        .buffered(args.fleet.parallel.into())
        .try_collect()
        .await?;
    let checks = match &groups {
        Some(g) => Some(read_checks(&quota_groups(g, &fleet.envs), &selected).await?),
        None => None,
    };
    let ids: Vec<&str> = selected.to_vec();
    let support = check_kubernetes(None, &fleet.stack, &selected).await?;
    let extended = support.is_some_and(|s| s.status == crate::versions::SupportStatus::Extended);
    let estimate = crate::prices::estimate(&fleet.envs[0].stack, &region, &ids, &prices, extended);
    let n = fleet.envs.len();
    let now = u64::try_from(crate::engine::store::unix_now_ms() / 1000).unwrap_or(0);
    let expires = fleet
        .stack
        .expires_in
        .map(|l| crate::clock::rfc3339(now + l.duration().as_secs()));
    match args.fleet.stack.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "fleet": fleet.stack.name,
                "environments": plans,
                "cost": {
                    "per_environment": estimate,
                    "per_hour": estimate.per_hour * n as f64,
                    "per_day": estimate.per_day * n as f64,
                },
                "quotas": checks,
                "expires_at": expires,
            })
        ),
        Output::Text => {
            println!(
                "meshstack fleet plan — stack `{}`, {n} environment{}{}",
                fleet.stack.name,
                if n == 1 { "" } else { "s" },
                if groups.is_none() {
                    " (no credentials: planned against an empty account)"
                } else {
                    ""
                }
            );
            let w = plans.iter().map(|p| p.env.len()).max().unwrap_or(0).max(11);
            println!(
                "  {:<w$}  {:<12}  {:<14}  {:>6}  {:>6}  {:>6}",
                "environment", "account", "region", "create", "update", "delete"
            );
            for p in &plans {
                println!(
                    "  {:<w$}  {:<12}  {:<14}  {:>6}  {:>6}  {:>6}{}",
                    p.env,
                    p.account.as_deref().unwrap_or("-"),
                    p.region,
                    p.create,
                    p.update,
                    p.delete,
                    if p.conflict > 0 {
                        format!("  {} conflicts", p.conflict)
                    } else {
                        String::new()
                    }
                );
            }
            println!();
            println!("Estimated cost while it runs, per environment:");
            print!("{}", estimate.render(n as u64));
            if let Some(checks) = &checks {
                if checks.iter().all(|c| c.fits()) {
                    println!();
                    for c in checks {
                        print!("{}", c.table());
                    }
                }
            } else {
                println!();
                println!("quotas: not checked (no credentials)");
            }
            if let Some(at) = &expires {
                println!();
                println!("environments created now would expire at {at}");
            }
        }
    }
    if let (Some(checks), Some(groups)) = (&checks, &groups) {
        gate(
            checks,
            &quota_groups(groups, &fleet.envs),
            args.ignore_quotas,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn fleet_status(args: FleetStatusArgs) -> anyhow::Result<ExitCode> {
    let fleet = load_fleet(&args.fleet)?;
    let prices = crate::prices::PriceTable::load(args.prices.as_deref()).map_err(usage)?;
    let all = stages::all();
    let graph = Graph::new(stages::specs(&all))?;
    let ids = graph.topo_order();
    let region = super::offline_region(&fleet.stack).0;
    let extended = crate::versions::builtin_support(fleet.stack.kubernetes_minor()).status
        == crate::versions::SupportStatus::Extended;
    let now = u64::try_from(crate::engine::store::unix_now_ms() / 1000).unwrap_or(0);
    let mut rows = Vec::new();
    let mut total_so_far = 0.0;
    let mut total_per_hour = 0.0;
    let mut worst = Converged::Done;
    for env in &fleet.envs {
        let journal = env_journal(&args.fleet.stack, env)?;
        let status = |id: &str| {
            journal
                .as_ref()
                .map_or(StageStatus::Pending, |j| j.status(id))
        };
        let done: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| status(id) == StageStatus::Done)
            .collect();
        let failed: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| status(id) == StageStatus::Failed)
            .collect();
        let running: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| status(id) == StageStatus::Running)
            .collect();
        let estimate = crate::prices::estimate(&env.stack, &region, &done, &prices, extended);
        let since = journal.as_ref().and_then(|j| j.data().first_create());
        let uptime = since
            .filter(|_| !done.is_empty())
            .map(|t| now.saturating_sub(t));
        let so_far = uptime.map(|u| estimate.per_hour * u as f64 / 3600.0);
        total_so_far += so_far.unwrap_or(0.0);
        if uptime.is_some() {
            total_per_hour += estimate.per_hour;
        }
        let state = if journal.is_none() {
            "no journal".to_string()
        } else if !failed.is_empty() {
            format!("failed: {}", failed.join(", "))
        } else if !running.is_empty() {
            format!("interrupted: {}", running.join(", "))
        } else {
            format!("{}/{} done", done.len(), ids.len())
        };
        worst = worst.max(if !failed.is_empty() {
            Converged::Failed
        } else if done.len() == ids.len() {
            Converged::Done
        } else {
            Converged::Pending
        });
        rows.push(serde_json::json!({
            "env": env.name,
            "account": env.role.as_ref().map(|r| r.account.clone()),
            "state": state,
            "done": done,
            "failed": failed,
            "up_since": since.map(crate::clock::rfc3339),
            "uptime_s": uptime,
            "cost_per_hour": estimate.per_hour,
            "cost_so_far": so_far,
            "expires_at": journal.as_ref().and_then(|j| j.data().expires_at.clone()),
        }));
    }
    match args.fleet.stack.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "fleet": fleet.stack.name,
                "environments": rows,
                "cost_so_far": total_so_far,
                "cost_per_hour": total_per_hour,
                "prices": crate::prices::estimate(&fleet.stack, &region, &[], &prices, false).provenance(),
            })
        ),
        Output::Text => {
            let w = fleet
                .envs
                .iter()
                .map(|e| e.name.len())
                .max()
                .unwrap_or(0)
                .max(11);
            println!(
                "  {:<w$}  {:<24}  {:>9}  {:>10}  expires",
                "environment", "state", "uptime", "cost so far"
            );
            for r in &rows {
                let uptime = r["uptime_s"]
                    .as_u64()
                    .map_or("-".to_string(), crate::prices::uptime);
                let cost = r["cost_so_far"]
                    .as_f64()
                    .map_or("-".to_string(), crate::prices::dollars);
                println!(
                    "  {:<w$}  {:<24}  {:>9}  {:>10}  {}",
                    r["env"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or(""),
                    uptime,
                    cost,
                    r["expires_at"].as_str().unwrap_or("never")
                );
            }
            println!(
                "fleet: about {} so far, {}/h now ({})",
                crate::prices::dollars(total_so_far),
                crate::prices::dollars(total_per_hour),
                crate::prices::estimate(&fleet.stack, &region, &[], &prices, false).provenance()
            );
        }
    }
    // As `status` for one stack: 0 every environment converged, 1 one has a failed stage, 3
    // `fleet up` has work to do in one.
    Ok(match worst {
        Converged::Done => ExitCode::SUCCESS,
        Converged::Failed => ExitCode::FAILURE,
        Converged::Pending => ExitCode::from(3),
    })
}

/// How far an environment is from converged, worst last (`fleet status`'s exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Converged {
    Done,
    Pending,
    Failed,
}

pub async fn fleet_handout(args: FleetHandoutArgs) -> anyhow::Result<ExitCode> {
    use crate::k8s::kubeconfig::{self as kc, ExecPlugin, KubeconfigEntry};
    use stages::access::AttendeeAccess;
    let fleet = load_fleet(&args.fleet)?;
    let groups = connect_groups(&fleet.stack, &fleet.envs, false).await?;
    // Private (0700): the host hands it out by copying it, and no other user of this machine
    // can swap a kubeconfig in it meanwhile.
    crate::files::private_dir(&args.out)
        .map_err(|e| usage(format!("cannot use {}: {e}", args.out.display())))?;
    // One cluster lookup per environment, --parallel at once, in order.
    let (groups_ref, args_ref) = (&groups, &args);
    let entries: Vec<crate::handout::Entry> = futures::stream::iter(fleet.envs.iter().enumerate())
        .map(|(i, env)| async move {
            let (groups, args) = (groups_ref, args_ref);
            let g = groups
                .iter()
                .find(|g| g.envs.contains(&i))
                .expect("grouped");
            let journal = env_journal(&args.fleet.stack, env)?;
            let cluster = env.stack.cluster_name().to_string();
            let found = stages::cluster::find(&g.aws, &env.stack)
                .await
                .with_context(|| format!("environment {}: looking up its cluster", env.name))?;
            let mut note = None;
            let mut identity = None;
            // Who the kubeconfig signs as: the attendee role, or an attendee's own identity;
            // never the builder's (nor the role the builder reached the account through).
            let access = match &found {
                Some((seen, facts))
                    if seen.ours
                        && !facts.endpoint.is_empty()
                        && !facts.certificate_authority.is_empty() =>
                {
                    Some(
                        stages::access::attendee_access(
                            &g.aws,
                            &env.stack,
                            &g.identity.partition,
                            &g.identity.account,
                            true,
                        )
                        .await
                        .with_context(|| {
                            format!("environment {}: looking up attendee access", env.name)
                        })?,
                    )
                }
                _ => None,
            };
            let role = match &access {
                Some(AttendeeAccess::Missing(why)) => {
                    note = Some(why.clone());
                    None
                }
                Some(AttendeeAccess::Role(arn)) => {
                    identity = Some(format!(
                        "the attendee role {arn}, assumed with your own AWS credentials ({} \
                         on this cluster only)",
                        env.stack.access.policy.policy_name()
                    ));
                    Some(Some(arn.clone()))
                }
                Some(AttendeeAccess::Principals(list)) => {
                    identity = Some(format!(
                        "your own AWS identity, one of {} ({} on this cluster only)",
                        list.join(", "),
                        env.stack.access.policy.policy_name()
                    ));
                    Some(None)
                }
                None => None,
            };
            let kubeconfig = match (found, role) {
                (Some((seen, facts)), Some(role))
                    if seen.ours
                        && !facts.endpoint.is_empty()
                        && !facts.certificate_authority.is_empty() =>
                {
                    let exec = match args.token_command {
                        TokenCommand::Aws => {
                            ExecPlugin::aws_eks_get_token(&cluster, &g.aws.region, role.as_deref())
                        }
                        TokenCommand::Meshstack => {
                            let plugin =
                                ExecPlugin::meshstack_token("meshstack", &cluster, &g.aws.region);
                            match &role {
                                Some(arn) => plugin.assuming(arn),
                                None => plugin,
                            }
                        }
                    };
                    let entry = KubeconfigEntry {
                        name: env.name.clone(),
                        server: facts.endpoint,
                        certificate_authority_data: facts.certificate_authority,
                        exec,
                    };
                    let text = kc::merge(None, &entry)?;
                    let rel = format!("{}/kubeconfig", env.name);
                    let path = args.out.join(&rel);
                    let dir = args.out.join(&env.name);
                    crate::files::private_dir(&dir)
                        .and_then(|()| crate::files::write_file(&path, text.as_bytes(), 0o600))
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    Some(rel)
                }
                (_, None) if note.is_some() => None,
                (Some((seen, _)), _) if !seen.ours => {
                    note = Some(format!(
                    "an EKS cluster named {cluster} exists but is not tagged for this environment"
                ));
                    None
                }
                (Some((seen, _)), _) => {
                    note = Some(format!(
                        "the cluster is {} and has no API endpoint yet",
                        seen.status
                    ));
                    None
                }
                (None, _) => {
                    note = Some("the cluster does not exist yet: run `meshstack fleet up`".into());
                    None
                }
            };
            let ingress = journal
                .as_ref()
                .and_then(|j| {
                    j.output(stages::istio::ID, stages::istio::INGRESS_ADDRESS)
                        .cloned()
                })
                .and_then(|v| v.as_str().map(str::to_string))
                .filter(|a| !a.is_empty())
                .map(|a| format!("http://{a}/"));
            anyhow::Ok(crate::handout::Entry {
                env: env.name.clone(),
                account: g.identity.account.clone(),
                region: g.aws.region.clone(),
                cluster,
                kubeconfig,
                identity,
                ingress_url: ingress,
                port_forwards: crate::names::port_forwards()
                    .into_iter()
                    .map(|(n, c)| (n.to_string(), c))
                    .collect(),
                expires_at: journal.as_ref().and_then(|j| j.data().expires_at.clone()),
                note,
            })
        })
        .buffered(args.fleet.parallel.into())
        .try_collect()
        .await?;
    let generated = crate::engine::state::format_utc(
        u64::try_from(crate::engine::store::unix_now_ms() / 1000).unwrap_or(0),
    );
    let title = format!("meshstack workshop: {}", fleet.stack.name);
    let write = |name: &str, text: String| -> anyhow::Result<()> {
        let path = args.out.join(name);
        crate::files::write_file(&path, text.as_bytes(), 0o644)
            .with_context(|| format!("cannot write {}", path.display()))
    };
    write(
        "index.html",
        crate::handout::html(&title, &entries, &generated),
    )?;
    write(
        "README.md",
        crate::handout::markdown(&title, &entries, &generated),
    )?;
    let ready = entries.iter().filter(|e| e.kubeconfig.is_some()).count();
    match args.fleet.stack.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"out": args.out.display().to_string(), "environments": entries})
        ),
        Output::Text => {
            println!(
                "wrote {} with {} environment{} ({ready} with a kubeconfig): index.html, README.md",
                args.out.display(),
                entries.len(),
                if entries.len() == 1 { "" } else { "s" }
            );
            for e in entries.iter().filter(|e| e.kubeconfig.is_none()) {
                eprintln!(
                    "warning: {}: no kubeconfig: {}",
                    e.env,
                    e.note.as_deref().unwrap_or("unknown")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
