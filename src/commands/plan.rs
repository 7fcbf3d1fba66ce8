//! `meshstack plan`: what `up` (or, with `--destroy`, `down`) would change, read-only.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use super::checks::{check_kubernetes, gate, read_checks, QuotaGroup};
use super::state::{location, read_journal};
use super::{
    connect, existing_zones, find, load_stack, offline_region, offline_zones, preflight, selection,
    stage_file,
};
use crate::cli::{Output, PlanArgs};
use crate::engine::graph::{Graph, StageId};
use crate::engine::state::Journal;
use crate::stages::{self, Action, Change, Context};

/// What the stack leaves open to the whole internet, each as a warning with the setting that
/// closes it.
fn exposure(stack: &crate::config::Stack) -> Vec<String> {
    let mut open = Vec::new();
    let cluster = &stack.cluster;
    let everywhere = cluster
        .public_access_cidrs
        .iter()
        .any(|c| c.to_string() == "0.0.0.0/0");
    if cluster.existing.is_none() && cluster.endpoint_public_access && everywhere {
        open.push(
            "the cluster's API endpoint is reachable from the whole internet (0.0.0.0/0; it \
             still needs credentials); limit it with cluster.public_access_cidrs, like \
             [203.0.113.7/32] for your own address"
                .to_string(),
        );
    }
    if stack.istio.ingress_source_ranges.is_empty() {
        open.push(
            "the ingress gateway's load balancer is reachable from the whole internet (plain \
             HTTP, and GraphQL's playground); limit it with istio.ingress_source_ranges"
                .to_string(),
        );
    }
    open
}

/// The app's images that run by a tag their owner can move, as one warning.
fn images_by_tag(stack: &crate::config::Stack) -> Option<String> {
    let by_tag = crate::images::by_tag(&stack.images);
    if by_tag.is_empty() {
        return None;
    }
    let keys: Vec<&str> = by_tag.iter().map(|(k, _)| *k).collect();
    Some(format!(
        "{} of the app's {} images run by tag, which their owner can move to other code ({}); \
         pin them by digest under `images:`",
        by_tag.len(),
        crate::images::APP_IMAGES.len(),
        keys.join(", ")
    ))
}

#[derive(serde::Serialize)]
struct StagePlan {
    stage: StageId,
    file: String,
    changes: Vec<Change>,
}

pub async fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let mut stack = load_stack(&args.stack)?;
    if let Some(l) = args.expires_in {
        stack.expires_in = Some(l);
    }
    let prices = crate::prices::PriceTable::load(args.prices.as_deref()).map_err(super::usage)?;
    let all = stages::for_stack(&stack);
    let graph = Graph::new(stages::specs(&all))?;
    let mut selected = selection(&graph, &args.selection)?;

    let existing = stack.existing_cluster().cloned();
    // On an existing cluster nothing of AWS is planned: the journal and the cluster say it all.
    let mut existing_problem = None;
    let (aws, offline_reason) = if existing.is_some() {
        (None, None)
    } else if args.offline {
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
        None if existing.is_some() => {
            let (region, _) = offline_region(&stack);
            // What `up` would refuse, shown, and planned against what is known.
            let zones = match existing_zones(&stack).await {
                Ok(zones) => zones,
                Err(e) => {
                    existing_problem = Some(format!("{e:#}"));
                    Vec::new()
                }
            };
            let journal = read_journal(&args.stack, &stack, &location(&args.stack, &stack))
                .ok()
                .flatten()
                .map(|j| Arc::new(Mutex::new(Journal::snapshot(j.data().clone()))));
            (
                Context::new(stack.clone(), None, None, zones, journal),
                region,
                None,
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

    // The quotas, against what this stack still needs (read-only; only with credentials).
    let checks = match (&cx.aws, &account, args.destroy) {
        (Some(aws), Some(acct), false) => {
            let groups = [QuotaGroup {
                aws,
                account: acct,
                stacks: vec![&cx.stack],
                zones: cx.zones.iter().map(|z| z.name.clone()).collect(),
            }];
            let checks = read_checks(&groups, &selected).await?;
            let fits = checks.iter().all(|c| c.fits());
            Some((checks, fits))
        }
        _ => None,
    };
    // Whether EKS creates the version at the price the stack agreed to; refused before the
    // plan is shown when it does not (as `up` refuses before any write).
    let support = if args.destroy || existing.is_some() {
        None
    } else {
        check_kubernetes(cx.aws.as_ref(), &stack, &selected).await?
    };
    let extended = support
        .as_ref()
        .is_some_and(|s| s.status == crate::versions::SupportStatus::Extended);
    let estimate = (!args.destroy && existing.is_none()).then(|| {
        let ids: Vec<&str> = selected.to_vec();
        crate::prices::estimate(&stack, &region, &ids, &prices, extended)
    });
    let expiry = match (&cx.journal, stack.expires_in) {
        (Some(j), _)
            if j.lock()
                .unwrap_or_else(|e| e.into_inner())
                .data()
                .expires_at
                .is_some() =>
        {
            j.lock()
                .unwrap_or_else(|e| e.into_inner())
                .data()
                .expires_at
                .clone()
                .map(|at| (at, true))
        }
        (_, Some(l)) => {
            let now = u64::try_from(crate::engine::store::unix_now_ms() / 1000).unwrap_or(0);
            Some((crate::clock::rfc3339(now + l.duration().as_secs()), false))
        }
        _ => None,
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
                "quotas": checks.as_ref().map(|(c, _)| c),
                "cost": estimate,
                "kubernetes": support,
                "charts": stack.chart_pins(),
                "expires_at": expiry.as_ref().map(|(at, _)| at),
                "exposure": exposure(&stack),
                "images_by_tag": crate::images::by_tag(&stack.images)
                    .into_iter()
                    .map(|(key, reference)| serde_json::json!({"image": key, "reference": reference}))
                    .collect::<Vec<_>>(),
                "existing_cluster": existing.as_ref().map(|e| serde_json::json!({
                    "context": e.context,
                    "kubeconfig": e.kubeconfig,
                    "stages_off": stages::left_out(&stack),
                    "problem": existing_problem,
                })),
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
            if let Some(e) = &existing {
                writeln!(
                    out,
                    "  existing cluster: context {}, kubeconfig {}",
                    e.context.as_deref().unwrap_or("(the current one)"),
                    e.kubeconfig.as_ref().map_or_else(
                        || "from KUBECONFIG (else ~/.kube/config)".to_string(),
                        |p| p.display().to_string()
                    )
                )?;
                writeln!(
                    out,
                    "  AWS stages off: {} (the cluster exists; meshstack never removes it)",
                    stages::left_out(&stack).join(", ")
                )?;
                if let Some(problem) = &existing_problem {
                    writeln!(out, "  `up` would stop here: {problem}")?;
                }
            }
            let zone_names: Vec<&str> = cx.zones.iter().map(|z| z.name.as_str()).collect();
            writeln!(out, "  zones: {}", zone_names.join(", "))?;
            writeln!(out, "  locality: {}", stack.locality.mode.explain())?;
            for warning in exposure(&stack).into_iter().chain(images_by_tag(&stack)) {
                writeln!(out, "  warning: {warning}")?;
            }
            if let Some(s) = &support {
                writeln!(out, "  {} (per {})", s.summary(), s.source)?;
            }
            for pin in stack.chart_pins() {
                writeln!(out, "  {pin}")?;
                if let Some(problem) = crate::charts::digest_problem(&pin) {
                    writeln!(out, "  warning: `up` will refuse: {problem}")?;
                }
            }
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
            if let Some(e) = &estimate {
                writeln!(out)?;
                writeln!(out, "Estimated cost while it runs:")?;
                write!(out, "{}", e.render(1))?;
            }
            match &checks {
                Some((checks, true)) => {
                    writeln!(out)?;
                    for c in checks {
                        write!(out, "{}", c.table())?;
                    }
                }
                Some((_, false)) => {}
                None if !args.destroy && existing.is_none() => {
                    writeln!(out)?;
                    writeln!(out, "quotas: not checked (no credentials)")?;
                }
                None => {}
            }
            if let Some((at, recorded)) = &expiry {
                writeln!(out)?;
                writeln!(
                    out,
                    "expires at {at}{}",
                    if *recorded {
                        " (recorded when the stack was created)"
                    } else {
                        " if created now"
                    }
                )?;
            }
        }
    }
    out.flush()?;
    drop(out);
    if let (Some((checks, false)), Some(aws), Some(acct)) = (&checks, &cx.aws, &account) {
        let groups = [QuotaGroup {
            aws,
            account: acct,
            stacks: vec![&cx.stack],
            zones: cx.zones.iter().map(|z| z.name.clone()).collect(),
        }];
        gate(checks, &groups, args.ignore_quotas)?;
    }
    Ok(ExitCode::SUCCESS)
}
