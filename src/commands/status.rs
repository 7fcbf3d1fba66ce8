//! `meshstack status`: each stage's state, from the journal and a read-only look.

use std::process::ExitCode;

use anyhow::Context as _;

use super::state::{location, read_journal};
use super::{connect, existing_zones, find, load_stack, preflight, status_word};
use crate::cli::{Output, StatusArgs};
use crate::engine::graph::Graph;
use crate::engine::state::StageStatus;
use crate::stages::{self, Context};

pub async fn status(all_args: StatusArgs) -> anyhow::Result<ExitCode> {
    let args = &all_args.stack;
    let stack = load_stack(args)?;
    let prices =
        crate::prices::PriceTable::load(all_args.prices.as_deref()).map_err(super::usage)?;
    let all = stages::for_stack(&stack);
    let graph = Graph::new(stages::specs(&all))?;
    // Wherever the state is: the local folder, or S3 (read with the same credentials).
    let journal = read_journal(args, &stack, &location(args, &stack))?;

    let existing = stack.existing_cluster().is_some();
    let (cx, note) = if existing {
        match existing_zones(&stack).await {
            Ok(zones) => (
                Some(Context::new(stack.clone(), None, None, zones, None)),
                None,
            ),
            Err(e) => (None, Some(format!("{e:#}"))),
        }
    } else {
        match connect(&stack).await {
            Ok(aws) => {
                let (identity, zones) = preflight(&aws, &stack).await?;
                let cx = Context::new(stack.clone(), Some(aws), Some(identity), zones, None);
                (Some(cx), None)
            }
            Err(why) => (None, Some(why)),
        }
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
    // For scripts: 0 converged, 1 a stage failed, 3 anything `up` would still do.
    let code = if rows.iter().any(|r| r["state"] == "failed") {
        ExitCode::FAILURE
    } else if rows.iter().all(|r| r["state"] == "done") {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    };
    // Uptime and cost so far: since the first recorded create (or the cluster's creation
    // when the journal does not know), for what is built now.
    let built: Vec<&str> = rows
        .iter()
        .filter(|r| matches!(r["state"].as_str(), Some("done" | "drifted")))
        .filter_map(|r| r["stage"].as_str())
        .collect();
    let since = match journal.as_ref().and_then(|j| j.data().first_create()) {
        Some(t) => Some(t),
        None => match cx.as_ref().and_then(|c| c.aws.as_ref()) {
            Some(aws) => crate::aws::discover::cluster_created(aws, stack.cluster_name())
                .await
                .with_context(|| "looking up when the cluster was created")?,
            None => None,
        },
    };
    let region = cx
        .as_ref()
        .and_then(|c| c.aws.as_ref())
        .map(|a| a.region.clone())
        .or_else(|| stack.region().map(str::to_string))
        .unwrap_or_else(|| super::offline_region(&stack).0);
    // The cluster's version on EKS today (EKS's own calendar where it answers).
    let support =
        super::checks::kubernetes_support(cx.as_ref().and_then(|c| c.aws.as_ref()), &stack)
            .await?
            .unwrap_or_else(|e| {
                // Not creatable any more: still show where the running cluster stands.
                let mut s = crate::versions::builtin_support(stack.kubernetes_minor());
                s.version = format!("{} ({})", s.version, e.message);
                s
            });
    let extended = support.status == crate::versions::SupportStatus::Extended;
    let estimate = crate::prices::estimate(&stack, &region, &built, &prices, extended);
    let now = crate::engine::store::unix_now_ms() / 1000;
    let now = u64::try_from(now).unwrap_or(u64::MAX);
    let uptime = since
        .filter(|_| !built.is_empty())
        .map(|t| now.saturating_sub(t));
    let cost_so_far = uptime.map(|u| estimate.per_hour * u as f64 / 3600.0);
    let expires_at = journal.as_ref().and_then(|j| j.data().expires_at.clone());
    // The UIs are not exposed outside the cluster; these commands reach them.
    let forwards = crate::names::port_forwards();
    let forwards_json: Vec<_> = forwards
        .iter()
        .map(|(name, command)| serde_json::json!({"name": name, "command": command}))
        .collect();
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "stack": stack.name,
                "observed": note.is_none(),
                "note": note,
                "stages": rows,
                "port_forwards": forwards_json,
                "up_since": since.map(crate::clock::rfc3339),
                "uptime_s": uptime,
                "cost_per_hour": estimate.per_hour,
                "cost_so_far": cost_so_far,
                "prices": estimate.provenance(),
                "expires_at": expires_at,
                "kubernetes": (!existing).then_some(&support),
                "existing_cluster": existing,
            })
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
            if existing {
                println!(
                    "on an existing cluster: its version and cost are its owner's, and `down` \
                     removes only what meshstack installed"
                );
            } else {
                println!("{} (per {})", support.summary(), support.source);
            }
            match (since, uptime, cost_so_far) {
                _ if existing => {}
                (Some(t), Some(u), Some(cost)) => println!(
                    "up since {} ({}); cost so far about {} at {}/h, {}/day for what is built \
                     ({})",
                    crate::engine::state::format_utc(t),
                    crate::prices::uptime(u),
                    crate::prices::dollars(cost),
                    crate::prices::dollars(estimate.per_hour),
                    crate::prices::dollars(estimate.per_day),
                    estimate.provenance()
                ),
                _ => println!("not up: nothing built yet, so nothing to pay for"),
            }
            if let Some(at) = &expires_at {
                let left = crate::clock::parse_rfc3339(at).map(|t| t as i64 - now as i64);
                match left {
                    Some(s) if s > 0 => {
                        println!("expires at {at} (in {})", crate::prices::uptime(s as u64))
                    }
                    _ => println!(
                        "expired at {at}: `meshstack reap --yes` (or `meshstack down`) removes it"
                    ),
                }
            }
            println!("port-forwards (the UIs are not exposed outside the cluster):");
            for (name, command) in &forwards {
                println!("  {name:<8} {command}");
            }
        }
    }
    Ok(code)
}
