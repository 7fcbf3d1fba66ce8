//! Stage `access`: workshop attendees' access to the cluster, as EKS access entries scoped to
//! this one cluster — for the attendee role meshstack creates (`<stack>-attendee`, with no IAM
//! permission at all, assumable by `access.trust`) and for the principals `access.attendees`
//! names — each with the stack's `access.policy` on the whole cluster.
//!
//! The builder stays the only cluster admin (EKS's bootstrap entry for the creator); what
//! `fleet handout` gives attendees is the attendee role's kubeconfig, never the builder's
//! identity. The role is found by name and owned only with the stack's tag and this region's
//! [`REGION_TAG`], as the `iam` stage's roles are; an entry is meshstack's only with the stack's
//! tag, so an entry someone else made for the same principal is refused, never adopted, and
//! never deleted.
//!
//! `down` deletes the stack's entries (the cluster's deletion would remove them too) and the
//! role. It asks EKS about entries only when there is something of the stack's to look for
//! (the role exists, or the stack names attendees).

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use aws_sdk_eks::types::{AccessScope, AccessScopeType};

use super::iam::{self, SeenRole};
use super::{cluster, outcome, Action, Change, Context, Plan, Stage, StageError};
use crate::aws::{
    resource_tags, same_json, sdk_err, tags, Answer, AwsClients, AwsError, REGION_TAG, STACK_TAG,
};
use crate::config::{AccessPolicy, Stack};
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::names;
use crate::policies;
use crate::retry::retry_while;

pub const ID: StageId = "access";

pub struct Access;

/// The kinds of resource, as `plan` shows them.
const ROLE: &str = "iam-role";
const ENTRY: &str = "eks-access-entry";

/// What the stack asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// The attendee role, if the stack has one: its trust document.
    pub role_trust: Option<serde_json::Value>,
    /// The attendee role's ARN (also when the stack has none: to find its entry).
    pub role_arn: String,
    /// Every principal that gets an entry: the role (if wanted), then `access.attendees`.
    pub principals: Vec<String>,
    /// The access policy ARN each entry gets.
    pub policy_arn: String,
    /// Every policy ARN meshstack may have associated (removed when no longer wanted).
    pub managed_policies: Vec<String>,
}

impl Wanted {
    /// For `stack` in `partition`/`account`; `fleet_default`: whether the attendee role is on
    /// when the stack does not say (it is for a fleet's environments).
    pub fn of(stack: &Stack, partition: &str, account: &str, fleet_default: bool) -> Wanted {
        let role_arn = names::attendee_role_arn(stack, partition, account);
        let wants_role = stack.access.wants_role(fleet_default);
        let mut principals = Vec::new();
        if wants_role {
            principals.push(role_arn.clone());
        }
        principals.extend(stack.access.attendees_for(&stack.name));
        let trust = stack.access.trust_for(&stack.name);
        Wanted {
            role_trust: wants_role.then(|| policies::attendee_trust(partition, account, &trust)),
            role_arn,
            principals,
            policy_arn: stack.access.policy.arn(partition),
            managed_policies: AccessPolicy::ALL.iter().map(|p| p.arn(partition)).collect(),
        }
    }
}

/// One access entry as EKS reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenEntry {
    /// It carries the stack's tag.
    pub ours: bool,
    /// The associated policies: ARN -> whether the scope is the whole cluster.
    pub policies: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// The region this run works in (empty: unknown, as offline).
    pub region: String,
    pub role: Option<SeenRole>,
    /// Whether the stack's cluster exists (entries live on it).
    pub cluster: bool,
    /// Entries by principal ARN: the wanted principals' and the stack's own.
    pub entries: BTreeMap<String, SeenEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateRole,
    UpdateTrust,
    CreateEntry(String),
    Associate(String),
    /// A policy an entry of ours has and the stack no longer asks for.
    Disassociate(String, String),
    /// An entry of ours for a principal the stack no longer names.
    DeleteEntry(String),
    /// The attendee role, which the stack no longer wants.
    DeleteRole,
}

fn elsewhere(role: &SeenRole, region: &str) -> bool {
    !region.is_empty() && role.region.as_deref().is_some_and(|r| r != region)
}

/// The pure diff.
pub fn plan(stack: &Stack, want: &Wanted, seen: &Seen) -> Plan<Step> {
    let name = names::attendee_role(stack);
    let mut steps = Plan::new();
    let role_ours = match &seen.role {
        Some(r) if !r.ours => {
            if want.role_trust.is_some() {
                steps.conflict(
                    ROLE,
                    &name,
                    format!(
                        "exists without the tag {STACK_TAG}={}; meshstack will not adopt it — \
                         rename the stack or delete the role",
                        stack.name
                    ),
                );
            }
            false
        }
        Some(r) if elsewhere(r, &seen.region) => {
            if want.role_trust.is_some() {
                steps.conflict(
                    ROLE,
                    &name,
                    format!(
                        "belongs to stack `{}` in region {} ({REGION_TAG}): IAM names are \
                         account-wide; use another stack name here",
                        stack.name,
                        r.region.as_deref().unwrap_or_default()
                    ),
                );
            }
            false
        }
        Some(_) => true,
        None => false,
    };
    if let Some(trust) = &want.role_trust {
        match &seen.role {
            None => steps.push(Step::CreateRole),
            Some(r) if role_ours && !same_json(&r.trust, trust) => steps.push(Step::UpdateTrust),
            Some(_) => {}
        }
    }
    for p in &want.principals {
        if *p == want.role_arn && want.role_trust.is_some() && seen.role.is_some() && !role_ours {
            continue; // the role is refused above
        }
        match seen.entries.get(p) {
            None => {
                steps.push(Step::CreateEntry(p.clone()));
                steps.push(Step::Associate(p.clone()));
            }
            Some(e) if !e.ours => steps.conflict(
                ENTRY,
                p,
                format!(
                    "the cluster has an access entry for this principal without the tag \
                     {STACK_TAG}={}; meshstack does not take over access it did not grant — \
                     delete that entry, or leave the principal out of `access`",
                    stack.name
                ),
            ),
            Some(e) => {
                if e.policies.get(&want.policy_arn) != Some(&true) {
                    steps.push(Step::Associate(p.clone()));
                }
                for other in e.policies.keys() {
                    if *other != want.policy_arn && want.managed_policies.contains(other) {
                        steps.push(Step::Disassociate(p.clone(), other.clone()));
                    }
                }
            }
        }
    }
    for (p, e) in &seen.entries {
        if e.ours && !want.principals.contains(p) {
            steps.push(Step::DeleteEntry(p.clone()));
        }
    }
    if want.role_trust.is_none() && role_ours {
        steps.push(Step::DeleteRole);
    }
    steps
}

fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

impl Step {
    fn change(&self, stack: &Stack) -> Change {
        let role = names::attendee_role(stack);
        match self {
            Step::CreateRole => Change::new(Action::Create, ROLE, role)
                .detail("attendees assume it; no IAM permissions"),
            Step::UpdateTrust => {
                Change::new(Action::Update, ROLE, role).detail("trust: who may assume it")
            }
            Step::CreateEntry(p) => Change::new(Action::Create, ENTRY, p.clone())
                .detail(format!("on cluster {}", stack.cluster_name())),
            Step::Associate(p) => Change::new(Action::Update, ENTRY, p.clone()).detail(format!(
                "associate {} on the whole cluster",
                stack.access.policy.policy_name()
            )),
            Step::Disassociate(p, arn) => Change::new(Action::Update, ENTRY, p.clone())
                .detail(format!("disassociate {}", short(arn))),
            Step::DeleteEntry(p) => {
                Change::new(Action::Delete, ENTRY, p.clone()).detail("no longer in `access`")
            }
            Step::DeleteRole => {
                Change::new(Action::Delete, ROLE, role).detail("`access.attendee_role` is off")
            }
        }
    }
}

/// The access entry of `principal` on the stack's cluster, if there is one (`None` too when
/// the cluster is gone: EKS answers ResourceNotFoundException for both), with its policies.
async fn find_entry(
    aws: &AwsClients,
    stack: &Stack,
    principal: &str,
) -> Result<Option<SeenEntry>, StageError> {
    match entry_is_ours(aws, stack, principal).await? {
        Some(ours) => Ok(Some(SeenEntry {
            ours,
            policies: associated(aws, stack, principal).await?,
        })),
        None => Ok(None),
    }
}

/// `Some(whether it carries the stack's tag)` if `principal` has an entry on the cluster.
async fn entry_is_ours(
    aws: &AwsClients,
    stack: &Stack,
    principal: &str,
) -> Result<Option<bool>, StageError> {
    let req = aws.eks.describe_access_entry();
    let out = req
        .cluster_name(stack.cluster_name())
        .principal_arn(principal)
        .send()
        .await
        .lookup("eks:DescribeAccessEntry")?;
    Ok(out
        .and_then(|o| o.access_entry().cloned())
        .map(|e| tags::of_stack(stack, e.tags().into_iter().flatten())))
}

/// The policies associated with `principal`'s entry: ARN -> whether on the whole cluster.
async fn associated(
    aws: &AwsClients,
    stack: &Stack,
    principal: &str,
) -> Result<BTreeMap<String, bool>, StageError> {
    let cluster = stack.cluster_name();
    let mut policies = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let out = aws
            .eks
            .list_associated_access_policies()
            .cluster_name(cluster)
            .principal_arn(principal)
            .set_next_token(token.take())
            .send()
            .await
            .lookup("eks:ListAssociatedAccessPolicies")?;
        let Some(out) = out else { break };
        for a in out.associated_access_policies() {
            let whole = a
                .access_scope()
                .and_then(|s| s.r#type())
                .is_some_and(|t| *t == AccessScopeType::Cluster);
            if let Some(arn) = a.policy_arn() {
                policies.insert(arn.to_string(), whole);
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(policies)
}

/// Every principal with an entry on the stack's cluster (empty if it does not exist).
async fn list_entries(aws: &AwsClients, stack: &Stack) -> Result<Vec<String>, StageError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = aws
            .eks
            .list_access_entries()
            .cluster_name(stack.cluster_name())
            .set_next_token(token.take())
            .send()
            .await
            .lookup("eks:ListAccessEntries")?;
        let Some(page) = page else { break };
        out.extend(page.access_entries().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

/// Observe the role by name, and the entries of the wanted principals and the stack's own.
/// Offline (no clients): nothing exists.
pub async fn observe(cx: &Context, want: &Wanted) -> Result<Seen, StageError> {
    let Some(aws) = &cx.aws else {
        return Ok(Seen::default());
    };
    let stack = &cx.stack;
    let mut seen = Seen {
        region: aws.region.clone(),
        role: iam::find_role(aws, stack, &names::attendee_role(stack)).await?,
        ..Seen::default()
    };
    let role_ours = seen
        .role
        .as_ref()
        .is_some_and(|r| r.ours && !elsewhere(r, &seen.region));
    // Nothing to look for on the cluster: no EKS call at all.
    if want.principals.is_empty() && !role_ours {
        return Ok(seen);
    }
    seen.cluster = cluster::find(aws, stack)
        .await?
        .is_some_and(|(c, _)| c.ours);
    if !seen.cluster {
        return Ok(seen);
    }
    // Every entry is read (the builder's, the nodes' too) to find the stack's own; only the
    // stack's and the wanted principals' policies are.
    let listed: BTreeSet<String> = list_entries(aws, stack).await?.into_iter().collect();
    for p in &listed {
        let Some(ours) = entry_is_ours(aws, stack, p).await? else {
            continue; // deleted between the list and the read
        };
        if ours || want.principals.contains(p) {
            let policies = associated(aws, stack, p).await?;
            seen.entries.insert(p.clone(), SeenEntry { ours, policies });
        }
    }
    Ok(seen)
}

fn want_of(cx: &Context) -> Wanted {
    Wanted::of(&cx.stack, cx.partition(), cx.account(), false)
}

/// How an attendee reaches the cluster, for `fleet handout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttendeeAccess {
    /// The attendee role, with its entry on the cluster: kubeconfigs assume it.
    Role(String),
    /// No role, but these principals have entries: each attendee signs as themselves.
    Principals(Vec<String>),
    /// Nothing ready: why, and how to fix it.
    Missing(String),
}

/// Whether attendees can reach `stack`'s cluster without the builder's identity: the attendee
/// role (when the stack wants it; `fleet_default` as in [`Wanted::of`]) with an entry of the
/// stack's on the cluster, else the stack's `access.attendees` with theirs.
///
/// # Errors
/// An AWS read failing.
pub async fn attendee_access(
    aws: &AwsClients,
    stack: &Stack,
    partition: &str,
    account: &str,
    fleet_default: bool,
) -> Result<AttendeeAccess, StageError> {
    let want = Wanted::of(stack, partition, account, fleet_default);
    let has_entry = |e: Option<SeenEntry>, policy: &str| {
        e.is_some_and(|e| e.ours && e.policies.get(policy) == Some(&true))
    };
    let fix = "run `meshstack fleet up` (its `access` stage makes it)";
    if want.role_trust.is_some() {
        let name = names::attendee_role(stack);
        let role = iam::find_role(aws, stack, &name).await?;
        let Some(role) = role.filter(|r| r.ours) else {
            return Ok(AttendeeAccess::Missing(format!(
                "the attendee role {name} does not exist yet: {fix}"
            )));
        };
        if !has_entry(find_entry(aws, stack, &role.arn).await?, &want.policy_arn) {
            return Ok(AttendeeAccess::Missing(format!(
                "the attendee role {name} has no access entry on the cluster yet: {fix}"
            )));
        }
        return Ok(AttendeeAccess::Role(role.arn));
    }
    let attendees = stack.access.attendees_for(&stack.name);
    if attendees.is_empty() {
        return Ok(AttendeeAccess::Missing(
            "no attendee access: the stack turns the attendee role off and names no attendees; \
             set `access: {attendee_role: true}` (or list `access.attendees`) in the stack \
             file and run `meshstack fleet up` — handouts never carry the builder's identity"
                .to_string(),
        ));
    }
    for p in &attendees {
        if !has_entry(find_entry(aws, stack, p).await?, &want.policy_arn) {
            return Ok(AttendeeAccess::Missing(format!(
                "attendee {p} has no access entry on the cluster yet: {fix}"
            )));
        }
    }
    Ok(AttendeeAccess::Principals(attendees))
}

#[async_trait]
impl Stage for Access {
    fn id(&self) -> StageId {
        ID
    }

    fn depends_on(&self) -> &'static [StageId] {
        &[cluster::ID]
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let want = want_of(cx);
        let seen = observe(cx, &want).await?;
        Ok(plan(&cx.stack, &want, &seen).changes(|s| s.change(&cx.stack)))
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let seen = observe_down(cx).await?;
        let mut changes: Vec<Change> = seen
            .entries
            .keys()
            .map(|p| Change::new(Action::Delete, ENTRY, p.clone()))
            .collect();
        if seen.role.is_some() {
            changes.push(Change::new(
                Action::Delete,
                ROLE,
                names::attendee_role(&cx.stack),
            ));
        }
        Ok(changes)
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let stack = &cx.stack;
        h.step("observing");
        let want = want_of(cx);
        let seen = observe(cx, &want).await?;
        let steps = plan(stack, &want, &seen).refuse()?;
        let changes: Vec<Change> = steps.iter().map(|s| s.change(stack)).collect();
        if steps
            .iter()
            .any(|s| matches!(s, Step::CreateEntry(_) | Step::Associate(_)))
            && !seen.cluster
        {
            return Err(StageError::Missing(format!(
                "EKS cluster {}",
                stack.cluster_name()
            )));
        }
        let mut role_arn = seen.role.as_ref().map(|r| r.arn.clone());
        for (step, change) in steps.iter().zip(&changes) {
            h.step(change.to_string());
            match step {
                Step::CreateRole => role_arn = Some(create_role(cx, aws, &want).await?),
                Step::UpdateTrust => {
                    let trust = want.role_trust.as_ref().expect("planned with a trust");
                    aws.iam
                        .update_assume_role_policy()
                        .role_name(names::attendee_role(stack))
                        .policy_document(trust.to_string())
                        .send()
                        .await
                        .map_err(sdk_err("iam:UpdateAssumeRolePolicy"))?;
                }
                Step::CreateEntry(p) => create_entry(cx, aws, h, p).await?,
                Step::Associate(p) => {
                    let scope = AccessScope::builder()
                        .r#type(AccessScopeType::Cluster)
                        .build();
                    aws.eks
                        .associate_access_policy()
                        .cluster_name(stack.cluster_name())
                        .principal_arn(p)
                        .policy_arn(&want.policy_arn)
                        .access_scope(scope)
                        .send()
                        .await
                        .map_err(sdk_err("eks:AssociateAccessPolicy"))?;
                }
                Step::Disassociate(p, arn) => {
                    let req = aws.eks.disassociate_access_policy();
                    req.cluster_name(stack.cluster_name())
                        .principal_arn(p)
                        .policy_arn(arn)
                        .send()
                        .await
                        .gone("eks:DisassociateAccessPolicy")?;
                }
                Step::DeleteEntry(p) => delete_entry(aws, stack, p).await?,
                Step::DeleteRole => {
                    delete_entry(aws, stack, &want.role_arn).await?;
                    iam::delete_role(aws, &names::attendee_role(stack)).await?;
                    role_arn = None;
                }
            }
        }
        let output = match (&want.role_trust, role_arn) {
            (Some(_), Some(arn)) => arn.into(),
            _ => serde_json::Value::Null,
        };
        cx.set_output(ID, "attendee_role_arn", output)?;
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let stack = &cx.stack;
        h.step("observing");
        let seen = observe_down(cx).await?;
        let mut deleted = 0;
        for p in seen.entries.keys() {
            h.step(format!("deleting access entry {p}"));
            delete_entry(aws, stack, p).await?;
            deleted += 1;
        }
        if let Some(role) = &seen.role {
            let name = names::attendee_role(stack);
            h.step(format!("deleting IAM role {name}"));
            // Its entry too, should the cluster have listed it under another form of the ARN.
            delete_entry(aws, stack, &role.arn).await?;
            iam::delete_role(aws, &name).await?;
            deleted += 1;
        }
        Ok(super::deleted(deleted))
    }
}

/// What `down` deletes: the role if it is ours and this region's (warned about otherwise),
/// and the stack's entries for it and for the stack's attendees. A stack known only by name
/// (`down --name`, `reap`) names no attendees: their entries go with the cluster.
async fn observe_down(cx: &Context) -> Result<Seen, StageError> {
    let Some(aws) = &cx.aws else {
        return Ok(Seen::default());
    };
    let stack = &cx.stack;
    let mut seen = Seen {
        region: aws.region.clone(),
        ..Seen::default()
    };
    let role = iam::find_role(aws, stack, &names::attendee_role(stack)).await?;
    seen.role = role.filter(|r| r.ours && !elsewhere(r, &seen.region));
    let mut principals: Vec<String> = stack.access.attendees_for(&stack.name);
    if let Some(r) = &seen.role {
        principals.push(r.arn.clone());
    }
    for p in principals {
        if let Some(e) = find_entry(aws, stack, &p).await? {
            if e.ours {
                seen.entries.insert(p, e);
            }
        }
    }
    Ok(seen)
}

async fn create_role(cx: &Context, aws: &AwsClients, want: &Wanted) -> Result<String, StageError> {
    let stack = &cx.stack;
    let name = names::attendee_role(stack);
    let key = format!("role/{name}");
    cx.begin(ID, &key)?;
    let mut role_tags = tags::iam(stack, &key, &name);
    role_tags.push(
        aws_sdk_iam::types::Tag::builder()
            .key(REGION_TAG)
            .value(&aws.region)
            .build()
            .expect("key and value are set"),
    );
    let trust = want.role_trust.as_ref().expect("planned with a trust");
    let res = aws
        .iam
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(trust.to_string())
        .description(format!(
            "meshstack {}: workshop attendees reach cluster {} as this role",
            stack.name,
            stack.cluster_name()
        ))
        .set_tags(Some(role_tags))
        .send()
        .await
        .map_err(sdk_err("iam:CreateRole"));
    let arn = match res {
        Ok(out) => out.role().map(|r| r.arn().to_string()).unwrap_or_default(),
        // A killed run created it after our observation: adopt it if it is ours.
        Err(e) if e.is("EntityAlreadyExists") => iam::find_role(aws, stack, &name)
            .await?
            .filter(|r| r.ours)
            .map(|r| r.arn)
            .ok_or_else(|| {
                StageError::Conflict(format!("IAM role {name} exists and is not this stack's"))
            })?,
        Err(e) => return Err(e.into()),
    };
    cx.complete(ID, &key, &arn)?;
    Ok(arn)
}

async fn create_entry(
    cx: &Context,
    aws: &AwsClients,
    h: &StageHandle,
    principal: &str,
) -> Result<(), StageError> {
    let stack = &cx.stack;
    let key = format!("entry/{principal}");
    let token = cx.begin(ID, &key)?;
    let entry_tags: std::collections::HashMap<String, String> =
        resource_tags(stack, &key, stack.cluster_name())
            .into_iter()
            .collect();
    let mut req = aws
        .eks
        .create_access_entry()
        .cluster_name(stack.cluster_name())
        .principal_arn(principal)
        .r#type("STANDARD")
        .set_tags(Some(entry_tags));
    if !token.is_empty() {
        req = req.client_request_token(token);
    }
    // EKS checks that the principal exists; a role created moments ago may not be visible to
    // it yet ("The specified principalArn is invalid: invalid principal").
    let propagating = |e: &AwsError| {
        (e.is("InvalidParameterException") && e.message.to_lowercase().contains("principal"))
            .then(|| "the principal has not propagated in IAM yet".to_string())
    };
    let created = retry_while(
        cx.waits.iam_propagation,
        propagating,
        h,
        "create access entry",
        || {
            let req = req.clone();
            async move { req.send().await.map_err(sdk_err("eks:CreateAccessEntry")) }
        },
    )
    .await;
    let arn = match created {
        Ok(out) => out
            .access_entry()
            .and_then(|e| e.access_entry_arn())
            .unwrap_or_default()
            .to_string(),
        // Created by a run killed before it recorded it: adopt it only if it is ours.
        Err(e) if e.is("ResourceInUseException") => {
            match find_entry(aws, stack, principal).await? {
                Some(e) if e.ours => String::new(),
                _ => {
                    return Err(StageError::Conflict(format!(
                    "an access entry for {principal} exists on cluster {} and is not this stack's",
                    stack.cluster_name()
                )))
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    cx.complete(ID, &key, &arn)?;
    Ok(())
}

async fn delete_entry(aws: &AwsClients, stack: &Stack, principal: &str) -> Result<(), StageError> {
    let req = aws.eks.delete_access_entry();
    Ok(req
        .cluster_name(stack.cluster_name())
        .principal_arn(principal)
        .send()
        .await
        .gone("eks:DeleteAccessEntry")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";

    fn stack(access: &str) -> Stack {
        Stack::parse(&format!("name: ws-01\n{access}"), "t.yaml").unwrap()
    }

    fn role(want: &Wanted) -> SeenRole {
        SeenRole {
            arn: want.role_arn.clone(),
            ours: true,
            trust: want
                .role_trust
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            region: Some("us-east-1".into()),
            ..SeenRole::default()
        }
    }

    fn entry(want: &Wanted) -> SeenEntry {
        SeenEntry {
            ours: true,
            policies: BTreeMap::from([(want.policy_arn.clone(), true)]),
        }
    }

    fn converged(want: &Wanted) -> Seen {
        Seen {
            region: "us-east-1".into(),
            role: want.role_trust.as_ref().map(|_| role(want)),
            cluster: true,
            entries: want
                .principals
                .iter()
                .map(|p| (p.clone(), entry(want)))
                .collect(),
        }
    }

    #[test]
    fn a_fleet_environment_gets_its_role_and_one_entry_and_converged_plans_nothing() {
        let s = stack("");
        let want = Wanted::of(&s, "aws", ACCOUNT, true);
        assert_eq!(
            want.principals,
            [format!("arn:aws:iam::{ACCOUNT}:role/ws-01-attendee")]
        );
        let p = want.role_arn.clone();
        assert_eq!(
            plan(&s, &want, &Seen::default()),
            vec![
                Step::CreateRole,
                Step::CreateEntry(p.clone()),
                Step::Associate(p.clone())
            ]
        );
        assert_eq!(plan(&s, &want, &converged(&want)), vec![]);
        // A single stack does not get the role unless it asks.
        let single = Wanted::of(&s, "aws", ACCOUNT, false);
        assert!(single.principals.is_empty());
        assert_eq!(plan(&s, &single, &Seen::default()), vec![]);
    }

    #[test]
    fn env_in_an_arn_is_the_environments_name() {
        let s = stack(
            "access:\n  trust: ['arn:aws:iam::111122223333:role/{env}']\n  \
             attendees:\n    - arn:aws:iam::111122223333:user/{env}\n",
        );
        let want = Wanted::of(&s, "aws", ACCOUNT, true);
        assert_eq!(want.principals[1], "arn:aws:iam::111122223333:user/ws-01");
        assert_eq!(
            want.role_trust.unwrap()["Statement"][0]["Principal"]["AWS"],
            "arn:aws:iam::111122223333:role/ws-01"
        );
    }

    #[test]
    fn drift_is_repaired_and_what_is_no_longer_wanted_removed() {
        let s = stack(
            "access:\n  attendee_role: true\n  attendees: [arn:aws:iam::111122223333:role/alice]\n",
        );
        let want = Wanted::of(&s, "aws", ACCOUNT, false);
        let alice = "arn:aws:iam::111122223333:role/alice".to_string();
        let mut seen = converged(&want);
        assert_eq!(plan(&s, &want, &seen), vec![]);
        // Trust changed by hand, a policy swapped, a stale entry of ours.
        seen.role.as_mut().unwrap().trust = "{}".into();
        let view = AccessPolicy::View.arn("aws");
        seen.entries.get_mut(&alice).unwrap().policies = BTreeMap::from([(view.clone(), true)]);
        let bob = "arn:aws:iam::111122223333:role/bob".to_string();
        seen.entries.insert(bob.clone(), entry(&want));
        assert_eq!(
            plan(&s, &want, &seen),
            vec![
                Step::UpdateTrust,
                Step::Associate(alice.clone()),
                Step::Disassociate(alice.clone(), view),
                Step::DeleteEntry(bob),
            ]
        );
        // The role turned off and no attendees: every entry of ours and the role go.
        let off = stack("access:\n  attendee_role: false\n");
        let want_off = Wanted::of(&off, "aws", ACCOUNT, true);
        assert_eq!(
            plan(&off, &want_off, &converged(&want)),
            vec![
                Step::DeleteEntry(alice),
                Step::DeleteEntry(want.role_arn.clone()),
                Step::DeleteRole
            ]
        );
    }

    #[test]
    fn what_is_not_ours_is_refused_never_adopted() {
        let s = stack("access:\n  attendees: [arn:aws:iam::111122223333:role/alice]\n");
        let want = Wanted::of(&s, "aws", ACCOUNT, true);
        let mut seen = converged(&want);
        seen.role.as_mut().unwrap().ours = false;
        seen.entries
            .get_mut("arn:aws:iam::111122223333:role/alice")
            .unwrap()
            .ours = false;
        let steps = plan(&s, &want, &seen);
        let conflicts: Vec<&str> = steps.conflicts().iter().map(|c| c.resource).collect();
        assert_eq!(conflicts, [ROLE, ENTRY]);
        assert!(steps.refuse().is_err());
        // A role of another region's stack is neither used nor deleted.
        let mut there = converged(&want);
        there.role.as_mut().unwrap().region = Some("eu-west-1".into());
        assert!(plan(&s, &want, &there).refuse().is_err());
        let off = Wanted::of(
            &stack("access:\n  attendee_role: false\n"),
            "aws",
            ACCOUNT,
            true,
        );
        assert!(!plan(&s, &off, &there).contains(&Step::DeleteRole));
    }
}
