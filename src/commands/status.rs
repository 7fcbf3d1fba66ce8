//! `meshstack status`: each stage's state, from the journal and a read-only look.

use std::process::ExitCode;

use anyhow::Context as _;

use super::state::{location, read_journal};
use super::{connect, find, load_stack, preflight, status_word};
use crate::cli::{Output, StackArgs};
use crate::engine::graph::Graph;
use crate::engine::state::StageStatus;
use crate::stages::{self, Context};

pub async fn status(args: StackArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack(&args)?;
    let all = stages::all();
    let graph = Graph::new(stages::specs(&all))?;
    // Wherever the state is: the local folder, or S3 (read with the same credentials).
    let journal = read_journal(&args, &stack, &location(&args, &stack))?;

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
    // For scripts: 0 converged, 1 a stage failed, 3 anything `up` would still do.
    let code = if rows.iter().any(|r| r["state"] == "failed") {
        ExitCode::FAILURE
    } else if rows.iter().all(|r| r["state"] == "done") {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    };
    // The UIs are not exposed outside the cluster; these commands reach them.
    let forwards = crate::names::port_forwards();
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
    Ok(code)
}
