//! `meshstack reap`: the stacks in an account and region whose `meshstack.io/expires-at` has
//! passed, found by tag alone; with `--yes`, each torn down as `meshstack down --name NAME
//! --region R` would (the fleet's runner, `--parallel` at a time).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use super::fleet::{report, run_jobs, Env, Job};
use super::run::Interrupts;
use super::{credentials, mode, usage};
use crate::aws::AwsClients;
use crate::cli::{Output, ReapArgs, StackArgs};
use crate::config::Stack;
use crate::engine::fleet_progress::FleetProgress;
use crate::engine::graph::Graph;
use crate::engine::run::Direction;
use crate::stages;

pub async fn reap(args: ReapArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if let Some(r) = &args.region {
        // The same rules as a stack file's `region:`.
        Stack::for_teardown("reap", Some(r), "--region")
            .map_err(|e| usage(format!("{:#}", anyhow::Error::new(e))))?;
    }
    let (aws, sdk) = AwsClients::from_env(args.region.as_deref())
        .await
        .map_err(usage)?;
    credentials(&sdk).await.map_err(usage)?;
    let mut probe = Stack::for_teardown("reap", Some(&aws.region), "--region")
        .map_err(|e| usage(format!("{:#}", anyhow::Error::new(e))))?;
    super::confirm::guard_accounts(&mut probe, &args.accounts.allowed_account_ids)?;
    let identity = crate::aws::account::identify(&aws, &probe)
        .await
        .map_err(super::preflight_error)?;
    let found = crate::aws::discover::stacks(&aws)
        .await
        .context("looking for stacks by tag")?;
    let now = u64::try_from(crate::engine::store::unix_now_ms() / 1000).unwrap_or(0);
    let with_expiry: Vec<&crate::aws::discover::Found> =
        found.values().filter(|f| f.expires_at.is_some()).collect();
    let expired: Vec<&crate::aws::discover::Found> = with_expiry
        .iter()
        .copied()
        .filter(|f| f.expired(now))
        .collect();
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "event": "reap",
                "account": identity.account,
                "region": aws.region,
                "stacks": with_expiry.iter().map(|f| serde_json::json!({
                    "stack": f.stack,
                    "expires_at": f.expires_at,
                    "expired": f.expired(now),
                    "found_by": f.found_by,
                    "fleet": f.fleet,
                    "expiry_from": f.defined_by,
                })).collect::<Vec<_>>(),
                "tearing_down": args.yes,
            })
        ),
        Output::Text => {
            println!(
                "stacks with an expiry in account {}, region {}: {} ({} expired)",
                identity.account,
                aws.region,
                with_expiry.len(),
                expired.len()
            );
            for f in &with_expiry {
                let at = f.expires_at.as_deref().unwrap_or("");
                let when = match crate::clock::parse_rfc3339(at) {
                    Some(t) if t <= now => {
                        format!("expired {} ago", crate::prices::uptime(now - t))
                    }
                    Some(t) => format!("expires in {}", crate::prices::uptime(t - now)),
                    None => "unreadable expiry".to_string(),
                };
                let kinds: Vec<&str> = f.found_by.iter().copied().collect();
                println!(
                    "  {:<24}  {at}  {when:<22}  on its {}; found by {}{}",
                    f.stack,
                    f.defined_by.unwrap_or("?"),
                    kinds.join(", "),
                    if f.global_only() {
                        " (IAM only: its region is not known)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    if expired.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    // Without --yes: ask on a terminal; elsewhere only list (as reap always has).
    if !args.yes {
        if super::confirm::require_yes_or_terminal("reap", false).is_err() {
            if args.output == Output::Text {
                println!("run `meshstack reap --yes` to tear the expired ones down");
            }
            return Ok(ExitCode::SUCCESS);
        }
        let what = super::confirm::Deletion {
            command: "reap",
            place: super::confirm::aws_place(&format!("account {}", identity.account), &aws.region),
            stacks: expired
                .iter()
                .map(|f| {
                    (
                        f.stack.clone(),
                        format!("expired at {}", f.expires_at.as_deref().unwrap_or("?")),
                    )
                })
                .collect(),
            scope: "every stage: everything tagged for each stack".into(),
        };
        if !super::confirm::confirm(&what, false).await? {
            return Ok(ExitCode::FAILURE);
        }
    }
    let all = stages::all();
    let graph = Graph::new(stages::specs(&all))?;
    let selected = graph.topo_order();
    let state = StackArgs {
        stack: None,
        state_dir: args.state_dir.clone(),
        state: args.state.clone(),
        output: args.output,
    };
    let (all, graph) = (Arc::new(all), Arc::new(graph));
    let mut jobs = Vec::new();
    for f in &expired {
        let stack = Stack::for_teardown(&f.stack, Some(&aws.region), "a tag").map_err(|e| {
            usage(format!(
                "stack `{}` found by tag: {:#}",
                f.stack,
                anyhow::Error::new(e)
            ))
        })?;
        jobs.push(Job {
            env: Env {
                name: f.stack.clone(),
                stack,
                role: None,
            },
            state: state.clone(),
            aws: aws.sibling(),
            identity: identity.clone(),
            zones: Vec::new(),
            direction: Direction::Reverse,
            selected: selected.clone(),
            all: all.clone(),
            graph: graph.clone(),
            force_unlock: false,
        });
    }
    let names: Vec<String> = expired.iter().map(|f| f.stack.clone()).collect();
    let interrupts = Arc::new(Interrupts::watch());
    let progress = FleetProgress::new(mode(args.output), &names, selected.len());
    let results = run_jobs(jobs, args.parallel.into(), progress, interrupts.clone()).await;
    report(
        "reap",
        args.output,
        &results,
        aws.calls.snapshot(),
        started,
        &interrupts,
        Some("meshstack reap --yes"),
    )
}
