//! The checks `up`, `plan` and the fleet share before anything is written: the quotas of
//! each account and region against what the environments there still need, and whether EKS
//! still creates the stack's Kubernetes version at the price the stack agreed to; and whether
//! the stack's IAM roles belong to a stack of the same name in another region.

use crate::aws::AwsClients;
use crate::config::Stack;
use crate::engine::graph::StageId;
use crate::quotas::{self, Check};
use crate::versions::{self, KubernetesSupport};

use super::usage;

/// Environments that share an account and region (one for a single stack).
pub(crate) struct QuotaGroup<'a> {
    /// Clients in that account and region (their calls are counted there).
    pub aws: &'a AwsClients,
    pub account: &'a str,
    pub stacks: Vec<&'a Stack>,
    /// The environments' zones (they share the stack file, so their zones).
    pub zones: Vec<String>,
}

/// Reads what each group holds and its limits, and refuses (a usage error: exit 2, before any
/// write) with the table and what would make it fit when a group does not fit; with
/// `ignore` it warns instead. Usage-based quotas known only by their default warn. Returns
/// each group's check.
///
/// # Errors
/// A refusal, or an AWS call failing while reading the usage.
pub(crate) async fn check_quotas(
    groups: &[QuotaGroup<'_>],
    selected: &[StageId],
    ignore: bool,
) -> anyhow::Result<Vec<Check>> {
    let checks = read_checks(groups, selected).await?;
    gate(&checks, groups, ignore)?;
    Ok(checks)
}

/// Each group's check, read-only.
///
/// # Errors
/// An AWS call failing.
pub(crate) async fn read_checks(
    groups: &[QuotaGroup<'_>],
    selected: &[StageId],
) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();
    for g in groups {
        checks.push(read_check(g, selected).await?);
    }
    Ok(checks)
}

/// The refusal (or, with `ignore`, the warning) for `checks` that do not fit; warnings for
/// the doubtful ones. `groups` in the same order as `checks`.
///
/// # Errors
/// The refusal, a usage error: exit 2.
pub(crate) fn gate(
    checks: &[Check],
    groups: &[QuotaGroup<'_>],
    ignore: bool,
) -> anyhow::Result<()> {
    let refused: Vec<(&Check, &QuotaGroup)> = checks
        .iter()
        .zip(groups)
        .filter(|(c, _)| !c.fits())
        .collect();
    for c in checks {
        for r in c.doubts() {
            eprintln!(
                "warning: {} ({}/{}) may be too low in account {}, region {}: in use {} + needed \
                 {} > {}, AWS's default for new accounts; Service Quotas did not give this \
                 account's value, and AWS raises it as accounts are used",
                r.name, r.service, r.code, c.account, c.region, r.in_use, r.needed, r.limit
            );
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for (c, g) in &refused {
        text.push_str(&c.table());
        let advice = c.advice(g.stacks[0], &g.zones);
        if !advice.is_empty() {
            text.push_str("to make it fit:\n");
            for a in advice {
                text.push_str(&format!("  - {a}\n"));
            }
        }
    }
    if ignore {
        eprintln!(
            "warning: --ignore-quotas: going on although this does not fit the quotas as \
             Service Quotas reports them:\n{}",
            text.trim_end()
        );
        return Ok(());
    }
    Err(usage(format!(
        "refusing to start: this does not fit the account's quotas, and nothing has been \
         written\n{}\n(--ignore-quotas goes on anyway, for quotas raised in ways the API does \
         not show)",
        text.trim_end()
    )))
}

/// One group's check: its usage, what its environments need, and the limits of what is
/// needed.
async fn read_check(g: &QuotaGroup<'_>, selected: &[StageId]) -> anyhow::Result<Check> {
    let stages: Vec<&str> = selected.to_vec();
    let mut usage = crate::aws::quotas::observe(g.aws, &g.stacks, &stages).await?;
    let needs: Vec<quotas::Need> = g
        .stacks
        .iter()
        .map(|s| quotas::need(s, &g.zones, &stages, &usage))
        .collect();
    let keys = quotas::needed_quotas(&needs);
    let limits = if keys.is_empty() {
        quotas::Limits::new()
    } else {
        crate::aws::quotas::complete(g.aws, &mut usage, &needs).await?;
        crate::aws::quotas::limits(g.aws, &keys).await
    };
    let envs: Vec<String> = g.stacks.iter().map(|s| s.name.clone()).collect();
    Ok(Check::new(
        g.account,
        &g.aws.region,
        &envs,
        &needs,
        &usage,
        &limits,
    ))
}

/// Where the stack's Kubernetes version stands on EKS today: from EKS itself
/// (`DescribeClusterVersions`) when there are clients and it answers, else from the built-in
/// calendar ([`versions::EKS_CALENDAR`], whose source and date the result names).
pub(crate) async fn kubernetes_support(
    aws: Option<&AwsClients>,
    stack: &Stack,
) -> anyhow::Result<Result<KubernetesSupport, versions::VersionError>> {
    let live = match aws {
        Some(aws) => crate::aws::account::eks_calendar(aws)
            .await
            .map_err(|e| anyhow::Error::new(e).context("preflight"))?
            .map(|calendar| {
                let source = versions::CalendarSource::Eks {
                    region: aws.region.clone(),
                };
                (calendar, source)
            }),
        None => None,
    };
    let (calendar, source) = live.unwrap_or_else(|| {
        let source = versions::CalendarSource::BuiltIn {
            checked: versions::EKS_CALENDAR_CHECKED,
        };
        (versions::EKS_CALENDAR.to_vec(), source)
    });
    Ok(versions::check_kubernetes_support(
        stack.kubernetes_minor(),
        stack.cluster.support,
        &calendar,
        source,
        versions::Day::today(),
    ))
}

/// [`kubernetes_support`], refusing (exit 2, before any write) a version EKS would not create
/// at the price the stack agreed to, when `selected` creates the cluster.
///
/// # Errors
/// The refusal, naming `kubernetes_version` (or `cluster.support`) and the versions that
/// work; or the EKS call failing.
pub(crate) async fn check_kubernetes(
    aws: Option<&AwsClients>,
    stack: &Stack,
    selected: &[StageId],
) -> anyhow::Result<Option<KubernetesSupport>> {
    match kubernetes_support(aws, stack).await? {
        Ok(found) => Ok(Some(found)),
        Err(e) if selected.contains(&crate::stages::cluster::ID) => Err(usage(format!(
            "refusing to start, nothing has been written: {e}"
        ))),
        Err(e) => {
            eprintln!("warning: {e}");
            Ok(None)
        }
    }
}

/// Refuses (exit 2, before any write) when a stack of the same name in another region owns
/// `stack`'s IAM roles, naming that region: IAM names are account-wide, and building here
/// would rewrite the roles the other region's cluster uses (issue 21, item 3). Nothing is
/// read when nothing is pending.
///
/// # Errors
/// The refusal, or an IAM read failing.
pub(crate) async fn check_iam_region(
    aws: &AwsClients,
    stack: &Stack,
    pending: &[StageId],
) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let taken = crate::stages::iam::owned_elsewhere(aws, stack)
        .await
        .map_err(anyhow::Error::new)?;
    let Some((_, region)) = taken.first() else {
        return Ok(());
    };
    let roles: Vec<&str> = taken.iter().map(|(r, _)| r.as_str()).collect();
    Err(usage(format!(
        "stack `{}` already exists in region {region}: its IAM roles ({}) are tagged {}={region}, \
         and IAM names are account-wide, so one stack name serves one region per account; \
         choose another `name:` for {}, or run in {region}",
        stack.name,
        roles.join(", "),
        crate::aws::REGION_TAG,
        aws.region
    )))
}
