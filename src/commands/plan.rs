//! `meshstack plan`: what `up` (or, with `--destroy`, `down`) would change, read-only.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use super::state::{location, read_journal};
use super::{
    connect, find, load_stack, offline_region, offline_zones, preflight, selection, stage_file,
};
use crate::cli::{Output, PlanArgs};
use crate::engine::graph::{Graph, StageId};
use crate::engine::state::Journal;
use crate::stages::{self, Action, Change, Context};

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
            // The journal, wherever it is, as a snapshot: what it records (helm values
            // fingerprints) informs the plan; nothing is written back.
            let journal = match read_journal(&args.stack, &stack, &location(&args.stack, &stack)) {
                Ok(j) => j.map(|j| Arc::new(Mutex::new(Journal::snapshot(j.data().clone())))),
                Err(e) => {
                    eprintln!("warning: planning without the journal: {e:#}");
                    None
                }
            };
            (
                Context::new(stack.clone(), Some(aws), Some(identity), zones, journal),
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
