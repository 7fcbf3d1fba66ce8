//! Stage `iam`: the EKS cluster role, the node role (shared by the managed node group and
//! Karpenter's nodes), the Karpenter controller role and the Karpenter node instance profile.
//!
//! IAM names are deterministic (`<stack>-cluster`, ...), so observation is by name; a role of
//! that name without the stack's tag belongs to someone else and is never adopted or deleted.
//! The controller role's trust (IRSA) needs the cluster's OIDC issuer, so this stage creates it
//! with a deny-all trust and the `cluster` stage completes it.
//!
//! IAM is global and the names are not region-unique, so each role carries the region of the
//! stack that owns it ([`REGION_TAG`]): the same stack name in another region is refused
//! before any write ([`owned_elsewhere`], called by the commands' preflight), and a teardown
//! there leaves the roles alone. Roles of an earlier meshstack without the tag are adopted
//! (tagged) unless their IRSA trust names another region's cluster.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use super::{outcome, Action, Change, Context, Plan, Stage, StageError};
use crate::aws::{same_json, sdk_err, tags, Answer, AwsClients, REGION_TAG, STACK_TAG};
use crate::config::Stack;
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::names::{self, Role};
use crate::policies::{self, initial_trust, managed_policies, managed_policy_arn};

pub const ID: StageId = "iam";

pub struct Iam;

/// What dependents need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamFacts {
    pub cluster_role_arn: String,
    pub node_role_arn: String,
    pub karpenter_role_arn: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeenRole {
    pub arn: String,
    pub ours: bool,
    pub trust: String,
    pub attached: BTreeSet<String>,
    /// The Karpenter controller policy document, if present.
    pub inline: Option<String>,
    /// The region of the stack that owns it: its [`REGION_TAG`], else the region of the EKS
    /// OIDC issuer its trust names (roles of an earlier meshstack); `None` if neither says.
    pub region: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeenProfile {
    pub ours: bool,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    pub roles: BTreeMap<Role, SeenRole>,
    pub profile: Option<SeenProfile>,
    /// Whether the account has EC2 Spot's service-linked role.
    pub spot_role: bool,
    /// The region this run works in (empty: unknown, as offline).
    pub region: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreateRole(Role),
    Attach(Role, String),
    /// A managed policy an earlier meshstack attached and this one no longer wants.
    Detach(Role, String),
    PutKarpenterPolicy,
    CreateProfile,
    AddRoleToProfile,
    /// The legacy instance profile, unused by Karpenter 1.x (which makes its own).
    DeleteProfile,
    /// EC2 Spot's service-linked role, without which CreateFleet cannot launch spot.
    CreateSpotRole,
    /// A role of an earlier meshstack, without [`REGION_TAG`]: adopted for this region.
    TagRegion(Role),
}

/// The service that EC2 Spot's service-linked role belongs to.
pub const SPOT_SERVICE: &str = "spot.amazonaws.com";
/// The role's name in AWS (account-wide; meshstack creates it when missing, never deletes it).
pub const SPOT_ROLE: &str = "AWSServiceRoleForEC2Spot";
/// Where IAM keeps it: service-linked roles live under `/aws-service-role/<service>/`.
const SPOT_ROLE_PATH: &str = "/aws-service-role/spot.amazonaws.com/";

/// Whether the stack's Karpenter may buy spot, which needs [`SPOT_ROLE`].
fn wants_spot(stack: &Stack) -> bool {
    stack
        .karpenter
        .capacity_types
        .contains(&crate::config::CapacityType::Spot)
}

/// Whether the stack uses the legacy instance profile (a v1alpha5 AWSNodeTemplate names one).
fn wants_profile(stack: &Stack) -> bool {
    stack.karpenter_api() == crate::versions::KarpenterApi::V1Alpha5
}

/// Whether `role` is owned by a stack in another region than `region` (never when either is
/// unknown).
fn elsewhere(role: &SeenRole, region: &str) -> bool {
    !region.is_empty() && role.region.as_deref().is_some_and(|r| r != region)
}

/// The region of the EKS OIDC issuer a trust policy names (`oidc.eks.<region>.amazonaws.com`).
fn trust_region(trust: &str) -> Option<String> {
    // The document may come URL-encoded from IAM.
    let trust = trust.replace("%2F", "/").replace("%3A", ":");
    let after = trust.split("oidc.eks.").nth(1)?;
    let region: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!region.is_empty()).then_some(region)
}

/// The stack's roles that a stack of the same name in another region owns, as
/// `(role, region)`: `up` and `fleet up` refuse these before any write.
///
/// # Errors
/// An IAM read failing.
pub async fn owned_elsewhere(
    aws: &AwsClients,
    stack: &Stack,
) -> Result<Vec<(String, String)>, StageError> {
    let mut out = Vec::new();
    // The `access` stage's attendee role is named and tagged the same way.
    let role_names = Role::ALL
        .iter()
        .map(|k| k.name(stack))
        .chain([names::attendee_role(stack)]);
    for name in role_names {
        if let Some(r) = find_role(aws, stack, &name).await? {
            if r.ours && elsewhere(&r, &aws.region) {
                out.push((name, r.region.unwrap_or_default()));
            }
        }
    }
    Ok(out)
}

/// The pure diff. `karpenter_policy` is the wanted inline policy of the controller role.
pub fn plan(
    stack: &Stack,
    partition: &str,
    karpenter_policy: &serde_json::Value,
    seen: &Seen,
) -> Plan<Step> {
    let mut steps = Plan::new();
    for kind in Role::ALL {
        let name = kind.name(stack);
        let role = seen.roles.get(&kind);
        match role {
            Some(r) if !r.ours => {
                steps.conflict(
                    "iam",
                    name,
                    format!("exists without the tag {STACK_TAG}={}; meshstack will not adopt it — rename the stack or delete the role", stack.name),
                );
                continue;
            }
            Some(r) if elsewhere(r, &seen.region) => {
                steps.conflict(
                    "iam",
                    name,
                    format!(
                        "belongs to stack `{}` in region {} ({REGION_TAG}): IAM names are \
                         account-wide, so a stack name is per account; use another name here, \
                         or work on it in {}",
                        stack.name,
                        r.region.as_deref().unwrap_or_default(),
                        r.region.as_deref().unwrap_or_default()
                    ),
                );
                continue;
            }
            None => steps.push(Step::CreateRole(kind)),
            Some(r) if r.region.is_none() && !seen.region.is_empty() => {
                steps.push(Step::TagRegion(kind))
            }
            Some(_) => {}
        }
        for policy in managed_policies(kind) {
            let arn = managed_policy_arn(partition, policy);
            if !role.is_some_and(|r| r.attached.contains(&arn)) {
                steps.push(Step::Attach(kind, arn));
            }
        }
        for policy in policies::formerly_attached(kind) {
            let arn = managed_policy_arn(partition, policy);
            if role.is_some_and(|r| r.attached.contains(&arn)) {
                steps.push(Step::Detach(kind, arn));
            }
        }
        if kind == Role::Karpenter
            && !role
                .and_then(|r| r.inline.as_deref())
                .is_some_and(|doc| same_json(doc, karpenter_policy))
        {
            steps.push(Step::PutKarpenterPolicy);
        }
    }
    let node_role = Role::Node.name(stack);
    match &seen.profile {
        Some(p) if !p.ours && wants_profile(stack) => steps.conflict(
            "iam",
            names::instance_profile(stack),
            format!(
                "instance profile exists without the tag {STACK_TAG}={}",
                stack.name
            ),
        ),
        Some(p) if !p.ours => {} // not ours and not wanted: none of our business
        None if wants_profile(stack) => steps.extend([Step::CreateProfile, Step::AddRoleToProfile]),
        None => {}
        Some(_) if !wants_profile(stack) => steps.push(Step::DeleteProfile),
        Some(p) if !p.roles.contains(&node_role) => steps.push(Step::AddRoleToProfile),
        Some(_) => {}
    }
    if wants_spot(stack) && !seen.spot_role {
        steps.push(Step::CreateSpotRole);
    }
    steps
}

impl Step {
    fn change(&self, stack: &Stack) -> Change {
        match self {
            Step::CreateRole(k) => Change::new(Action::Create, "iam-role", k.name(stack)),
            Step::TagRegion(k) => Change::new(Action::Update, "iam-role", k.name(stack))
                .detail(format!("tag {REGION_TAG} (adopted for this region)")),
            Step::Attach(k, arn) => Change::new(Action::Update, "iam-role", k.name(stack))
                .detail(format!("attach {}", arn.rsplit('/').next().unwrap_or(arn))),
            Step::PutKarpenterPolicy => {
                Change::new(Action::Update, "iam-role", Role::Karpenter.name(stack))
                    .detail(format!("put inline policy {}", names::KARPENTER_POLICY))
            }
            Step::Detach(k, arn) => {
                Change::new(Action::Update, "iam-role", k.name(stack)).detail(format!(
                    "detach {} (attached by an earlier meshstack)",
                    arn.rsplit('/').next().unwrap_or(arn)
                ))
            }
            Step::DeleteProfile => Change::new(
                Action::Delete,
                "instance-profile",
                names::instance_profile(stack),
            )
            .detail("unused: Karpenter 1.x makes its own instance profiles"),
            Step::CreateSpotRole => Change::new(Action::Create, "service-linked-role", SPOT_ROLE)
                .detail(format!(
                    "{SPOT_SERVICE}, so Karpenter can launch spot; account-wide, kept on down"
                )),
            Step::CreateProfile => Change::new(
                Action::Create,
                "instance-profile",
                names::instance_profile(stack),
            ),
            Step::AddRoleToProfile => Change::new(
                Action::Update,
                "instance-profile",
                names::instance_profile(stack),
            )
            .detail(format!("add role {}", Role::Node.name(stack))),
        }
    }
}

fn region_tag(region: &str) -> aws_sdk_iam::types::Tag {
    aws_sdk_iam::types::Tag::builder()
        .key(REGION_TAG)
        .value(region)
        .build()
        .expect("key and value are set")
}

/// A role's tags: the stack's, and the region that owns it.
fn role_tags(stack: &Stack, key: &str, name: &str, region: &str) -> Vec<aws_sdk_iam::types::Tag> {
    let mut tags = tags::iam(stack, key, name);
    tags.push(region_tag(region));
    tags
}

/// Observe the roles and the profile by name.
pub async fn observe(cx: &Context) -> Result<Seen, StageError> {
    let Some(aws) = &cx.aws else {
        return Ok(Seen::default());
    };
    let stack = &cx.stack;
    let mut seen = Seen {
        region: aws.region.clone(),
        ..Seen::default()
    };
    for kind in Role::ALL {
        if let Some(role) = find_role(aws, stack, &kind.name(stack)).await? {
            let mut role = role;
            if role.ours && !managed_policies(kind).is_empty() {
                role.attached = attached_policies(aws, &kind.name(stack)).await?;
            }
            if role.ours && kind == Role::Karpenter {
                let req = aws
                    .iam
                    .get_role_policy()
                    .role_name(kind.name(stack))
                    .policy_name(names::KARPENTER_POLICY);
                let policy = req.send().await.lookup("iam:GetRolePolicy")?;
                role.inline = policy.map(|o| o.policy_document().to_string());
            }
            seen.roles.insert(kind, role);
        }
    }
    let req = aws
        .iam
        .get_instance_profile()
        .instance_profile_name(names::instance_profile(stack));
    let profile = req.send().await.lookup("iam:GetInstanceProfile")?;
    seen.profile = profile
        .and_then(|o| o.instance_profile().cloned())
        .map(|p| SeenProfile {
            ours: tags::of_stack(stack, p.tags()),
            roles: p
                .roles()
                .iter()
                .map(|r| r.role_name().to_string())
                .collect(),
        });
    if wants_spot(stack) {
        seen.spot_role = has_spot_role(aws).await?;
    }
    Ok(seen)
}

/// Whether EC2 Spot's service-linked role exists, found by its path (which IAM fixes for
/// service-linked roles) rather than by name.
async fn has_spot_role(aws: &AwsClients) -> Result<bool, StageError> {
    let out = aws
        .iam
        .list_roles()
        .path_prefix(SPOT_ROLE_PATH)
        .send()
        .await
        .map_err(sdk_err("iam:ListRoles"))?;
    Ok(!out.roles().is_empty())
}

/// A role by name, with whether it carries this stack's tag.
pub async fn find_role(
    aws: &AwsClients,
    stack: &Stack,
    name: &str,
) -> Result<Option<SeenRole>, StageError> {
    let out = aws
        .iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .lookup("iam:GetRole")?;
    Ok(out.and_then(|o| o.role().cloned()).map(|r| {
        let trust = r
            .assume_role_policy_document()
            .unwrap_or_default()
            .to_string();
        let tagged = r
            .tags()
            .iter()
            .find(|t| t.key() == REGION_TAG)
            .map(|t| t.value().to_string());
        SeenRole {
            arn: r.arn().to_string(),
            ours: tags::of_stack(stack, r.tags()),
            region: tagged.or_else(|| trust_region(&trust)),
            trust,
            ..SeenRole::default()
        }
    }))
}

async fn attached_policies(aws: &AwsClients, role: &str) -> Result<BTreeSet<String>, StageError> {
    let out = aws
        .iam
        .list_attached_role_policies()
        .role_name(role)
        .send()
        .await
        .map_err(sdk_err("iam:ListAttachedRolePolicies"))?;
    Ok(out
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn().map(str::to_string))
        .collect())
}

/// The facts dependents need, from the run's cache or by observing.
pub async fn facts(cx: &Context) -> Result<IamFacts, StageError> {
    if let Some(f) = cx.facts().iam.clone() {
        return Ok(f);
    }
    let aws = cx.aws()?;
    let mut arns = Vec::new();
    for kind in Role::ALL {
        let name = kind.name(&cx.stack);
        let role = find_role(aws, &cx.stack, &name)
            .await?
            .filter(|r| r.ours)
            .ok_or_else(|| StageError::Missing(format!("IAM role {name}")))?;
        arns.push(role.arn);
    }
    let f = IamFacts {
        cluster_role_arn: arns[0].clone(),
        node_role_arn: arns[1].clone(),
        karpenter_role_arn: arns[2].clone(),
    };
    cx.facts().iam = Some(f.clone());
    Ok(f)
}

fn wanted_policy(cx: &Context) -> serde_json::Value {
    let region = cx.aws.as_ref().map_or("us-east-1", |a| a.region.as_str());
    policies::karpenter_controller(
        &cx.stack,
        policies::Scope {
            partition: cx.partition(),
            region,
            account: cx.account(),
        },
    )
}

#[async_trait]
impl Stage for Iam {
    fn id(&self) -> StageId {
        ID
    }

    fn depends_on(&self) -> &'static [StageId] {
        &[]
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let seen = observe(cx).await?;
        Ok(plan(&cx.stack, cx.partition(), &wanted_policy(cx), &seen)
            .changes(|s| s.change(&cx.stack)))
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let seen = observe(cx).await?;
        let mut changes: Vec<Change> = seen
            .roles
            .iter()
            .filter(|(_, r)| r.ours && !elsewhere(r, &seen.region))
            .map(|(k, _)| Change::new(Action::Delete, "iam-role", k.name(&cx.stack)))
            .collect();
        if seen.profile.as_ref().is_some_and(|p| p.ours) {
            changes.push(Change::new(
                Action::Delete,
                "instance-profile",
                names::instance_profile(&cx.stack),
            ));
        }
        Ok(changes)
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let stack = &cx.stack;
        h.step("observing");
        let mut seen = observe(cx).await?;
        let policy = wanted_policy(cx);
        let steps = plan(stack, cx.partition(), &policy, &seen).refuse()?;
        let changes: Vec<Change> = steps.iter().map(|s| s.change(stack)).collect();
        for (step, change) in steps.iter().zip(&changes) {
            h.step(change.to_string());
            match step {
                Step::CreateRole(kind) => {
                    let name = kind.name(stack);
                    let key = format!("role/{name}");
                    cx.begin(ID, &key)?;
                    let res = aws
                        .iam
                        .create_role()
                        .role_name(&name)
                        .assume_role_policy_document(initial_trust(*kind).to_string())
                        .description(format!("meshstack {}: {:?} role", stack.name, kind))
                        .set_tags(Some(role_tags(stack, &key, &name, &aws.region)))
                        .send()
                        .await
                        .map_err(sdk_err("iam:CreateRole"));
                    let arn = match res {
                        Ok(out) => out.role().map(|r| r.arn().to_string()).unwrap_or_default(),
                        // A killed run created it after our observation: adopt it if it is ours.
                        Err(e) if e.is("EntityAlreadyExists") => find_role(aws, stack, &name)
                            .await?
                            .filter(|r| r.ours)
                            .map(|r| r.arn)
                            .ok_or_else(|| {
                                StageError::Conflict(format!(
                                    "IAM role {name} exists and is not this stack's"
                                ))
                            })?,
                        Err(e) => return Err(e.into()),
                    };
                    cx.complete(ID, &key, &arn)?;
                    seen.roles.insert(
                        *kind,
                        SeenRole {
                            arn,
                            ours: true,
                            region: Some(aws.region.clone()),
                            ..SeenRole::default()
                        },
                    );
                }
                Step::TagRegion(kind) => {
                    aws.iam
                        .tag_role()
                        .role_name(kind.name(stack))
                        .tags(region_tag(&aws.region))
                        .send()
                        .await
                        .map_err(sdk_err("iam:TagRole"))?;
                }
                Step::Attach(kind, arn) => {
                    aws.iam
                        .attach_role_policy()
                        .role_name(kind.name(stack))
                        .policy_arn(arn)
                        .send()
                        .await
                        .map_err(sdk_err("iam:AttachRolePolicy"))?;
                }
                Step::PutKarpenterPolicy => {
                    aws.iam
                        .put_role_policy()
                        .role_name(Role::Karpenter.name(stack))
                        .policy_name(names::KARPENTER_POLICY)
                        .policy_document(policy.to_string())
                        .send()
                        .await
                        .map_err(sdk_err("iam:PutRolePolicy"))?;
                }
                Step::CreateProfile => {
                    let name = names::instance_profile(stack);
                    let key = format!("instance-profile/{name}");
                    cx.begin(ID, &key)?;
                    match aws
                        .iam
                        .create_instance_profile()
                        .instance_profile_name(&name)
                        .set_tags(Some(tags::iam(stack, &key, &name)))
                        .send()
                        .await
                        .map_err(sdk_err("iam:CreateInstanceProfile"))
                    {
                        Ok(_) => {}
                        Err(e) if e.is("EntityAlreadyExists") => {}
                        Err(e) => return Err(e.into()),
                    }
                    cx.complete(ID, &key, &name)?;
                }
                Step::AddRoleToProfile => {
                    match aws
                        .iam
                        .add_role_to_instance_profile()
                        .instance_profile_name(names::instance_profile(stack))
                        .role_name(Role::Node.name(stack))
                        .send()
                        .await
                        .map_err(sdk_err("iam:AddRoleToInstanceProfile"))
                    {
                        Ok(_) => {}
                        Err(e) if e.is("LimitExceeded") || e.is("EntityAlreadyExists") => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Step::Detach(kind, arn) => {
                    let req = aws.iam.detach_role_policy().role_name(kind.name(stack));
                    req.policy_arn(arn)
                        .send()
                        .await
                        .gone("iam:DetachRolePolicy")?;
                }
                Step::DeleteProfile => delete_profile(aws, stack, &seen, h).await?,
                Step::CreateSpotRole => {
                    match aws
                        .iam
                        .create_service_linked_role()
                        .aws_service_name(SPOT_SERVICE)
                        .send()
                        .await
                        .map_err(sdk_err("iam:CreateServiceLinkedRole"))
                    {
                        Ok(_) => {}
                        // Someone made it in between: AWS says the name "has been taken",
                        // moto says EntityAlreadyExists.
                        Err(e) if e.is("EntityAlreadyExists") => {}
                        Err(e) if e.is("InvalidInput") && e.message.contains("has been taken") => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        let arn = |k: Role| {
            seen.roles
                .get(&k)
                .map(|r| r.arn.clone())
                .unwrap_or_default()
        };
        let f = IamFacts {
            cluster_role_arn: arn(Role::Cluster),
            node_role_arn: arn(Role::Node),
            karpenter_role_arn: arn(Role::Karpenter),
        };
        cx.set_output(ID, "node_role_arn", f.node_role_arn.clone().into())?;
        cx.set_output(
            ID,
            "karpenter_role_arn",
            f.karpenter_role_arn.clone().into(),
        )?;
        cx.facts().iam = Some(f);
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let stack = &cx.stack;
        h.step("observing");
        let seen = observe(cx).await?;
        let mut deleted = 0;
        if seen.profile.as_ref().is_some_and(|p| p.ours) {
            delete_profile(aws, stack, &seen, h).await?;
            deleted += 1;
        }
        for (kind, role) in &seen.roles {
            if !role.ours {
                h.warn(format!(
                    "IAM role {} is not tagged for this stack; left alone",
                    kind.name(stack)
                ));
                continue;
            }
            if elsewhere(role, &seen.region) {
                h.warn(format!(
                    "IAM role {} belongs to stack `{}` in region {}; left alone",
                    kind.name(stack),
                    stack.name,
                    role.region.as_deref().unwrap_or_default()
                ));
                continue;
            }
            let name = kind.name(stack);
            h.step(format!("deleting IAM role {name}"));
            delete_role(aws, &name).await?;
            deleted += 1;
        }
        Ok(super::deleted(deleted))
    }
}

/// Delete the stack's instance profile (observed as ours in `seen`), its roles removed first.
async fn delete_profile(
    aws: &AwsClients,
    stack: &Stack,
    seen: &Seen,
    h: &StageHandle,
) -> Result<(), StageError> {
    let profile = names::instance_profile(stack);
    for role in seen.profile.iter().flat_map(|p| &p.roles) {
        h.step(format!(
            "removing role {role} from instance profile {profile}"
        ));
        let req = aws.iam.remove_role_from_instance_profile();
        let req = req.instance_profile_name(&profile).role_name(role);
        req.send().await.gone("iam:RemoveRoleFromInstanceProfile")?;
    }
    h.step(format!("deleting instance profile {profile}"));
    let req = aws.iam.delete_instance_profile();
    let req = req.instance_profile_name(&profile);
    Ok(req.send().await.gone("iam:DeleteInstanceProfile")?)
}

/// Delete a role with everything IAM wants gone first: attached and inline policies, and
/// membership in instance profiles (Karpenter may have made profiles of its own for it).
pub async fn delete_role(aws: &AwsClients, name: &str) -> Result<(), StageError> {
    let iam = &aws.iam;
    for arn in attached_policies(aws, name).await? {
        let req = iam.detach_role_policy().role_name(name).policy_arn(arn);
        req.send().await.gone("iam:DetachRolePolicy")?;
    }
    let inline = iam
        .list_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(sdk_err("iam:ListRolePolicies"))?;
    for policy in inline.policy_names() {
        let req = iam.delete_role_policy().role_name(name).policy_name(policy);
        req.send().await.gone("iam:DeleteRolePolicy")?;
    }
    let profiles = iam
        .list_instance_profiles_for_role()
        .role_name(name)
        .send()
        .await
        .map_err(sdk_err("iam:ListInstanceProfilesForRole"))?;
    for p in profiles.instance_profiles() {
        let req = iam.remove_role_from_instance_profile();
        let req = req.instance_profile_name(p.instance_profile_name());
        req.role_name(name)
            .send()
            .await
            .gone("iam:RemoveRoleFromInstanceProfile")?;
    }
    Ok(iam
        .delete_role()
        .role_name(name)
        .send()
        .await
        .gone("iam:DeleteRole")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> Stack {
        Stack::parse("name: demo\n", "t.yaml").unwrap()
    }

    fn converged(stack: &Stack, policy: &serde_json::Value) -> Seen {
        let mut seen = Seen::default();
        for kind in Role::ALL {
            seen.roles.insert(
                kind,
                SeenRole {
                    arn: format!("arn:aws:iam::1:role/{}", kind.name(stack)),
                    ours: true,
                    trust: String::new(),
                    attached: managed_policies(kind)
                        .iter()
                        .map(|p| managed_policy_arn("aws", p))
                        .collect(),
                    inline: (kind == Role::Karpenter).then(|| policy.to_string()),
                    region: None,
                },
            );
        }
        seen.spot_role = true;
        seen
    }

    fn policy(s: &Stack) -> serde_json::Value {
        policies::karpenter_controller(
            s,
            policies::Scope {
                partition: "aws",
                region: "us-east-1",
                account: "123456789012",
            },
        )
    }

    #[test]
    fn empty_account_creates_three_roles_and_the_spot_role_but_no_profile() {
        let s = stack();
        let steps = plan(&s, "aws", &policy(&s), &Seen::default());
        let count = |f: fn(&Step) -> bool| steps.iter().filter(|s| f(s)).count();
        assert_eq!(count(|s| matches!(s, Step::CreateRole(_))), 3);
        assert_eq!(count(|s| matches!(s, Step::Attach(..))), 5);
        assert!(steps.contains(&Step::PutKarpenterPolicy));
        // Karpenter 1.x makes its own instance profiles from the EC2NodeClass's role.
        assert!(!steps.contains(&Step::CreateProfile), "{steps:?}");
        // The default NodePool may buy spot: the account needs EC2 Spot's service-linked role.
        assert_eq!(steps.last(), Some(&Step::CreateSpotRole));

        let on_demand = Stack::parse(
            "name: demo\nkarpenter: {capacity_types: [on-demand]}\n",
            "t.yaml",
        )
        .unwrap();
        let steps = plan(&on_demand, "aws", &policy(&on_demand), &Seen::default());
        assert!(!steps.contains(&Step::CreateSpotRole), "{steps:?}");
    }

    #[test]
    fn converged_iam_plans_nothing() {
        let s = stack();
        assert_eq!(
            plan(&s, "aws", &policy(&s), &converged(&s, &policy(&s))),
            vec![]
        );
    }

    #[test]
    fn leftovers_of_earlier_versions_are_removed() {
        let s = stack();
        let mut seen = converged(&s, &policy(&s));
        let read_only = managed_policy_arn("aws", "AmazonEC2ContainerRegistryReadOnly");
        seen.roles
            .get_mut(&Role::Node)
            .unwrap()
            .attached
            .insert(read_only.clone());
        seen.profile = Some(SeenProfile {
            ours: true,
            roles: vec![Role::Node.name(&s)],
        });
        assert_eq!(
            plan(&s, "aws", &policy(&s), &seen),
            vec![Step::Detach(Role::Node, read_only), Step::DeleteProfile]
        );
        // A profile of that name that is not ours is left alone.
        seen.profile.as_mut().unwrap().ours = false;
        assert!(!plan(&s, "aws", &policy(&s), &seen).contains(&Step::DeleteProfile));
    }

    #[test]
    fn drift_is_repaired_and_foreign_roles_refused() {
        let s = stack();
        let policy = policy(&s);
        let mut seen = converged(&s, &policy);
        seen.roles
            .get_mut(&Role::Node)
            .unwrap()
            .attached
            .remove(&managed_policy_arn("aws", "AmazonEKS_CNI_Policy"));
        seen.roles.get_mut(&Role::Karpenter).unwrap().inline = Some("{}".into());
        assert_eq!(
            plan(&s, "aws", &policy, &seen),
            vec![
                Step::Attach(
                    Role::Node,
                    managed_policy_arn("aws", "AmazonEKS_CNI_Policy")
                ),
                Step::PutKarpenterPolicy
            ]
        );
        seen.roles.get_mut(&Role::Cluster).unwrap().ours = false;
        let steps = plan(&s, "aws", &policy, &seen);
        assert_eq!(
            steps.changes(|st| st.change(&s))[0].action,
            Action::Conflict
        );
    }

    #[test]
    fn roles_of_the_same_name_in_another_region_are_refused_and_old_ones_adopted() {
        let s = stack();
        let p = policy(&s);
        let mut seen = converged(&s, &p);
        seen.region = "eu-west-1".into();
        for r in seen.roles.values_mut() {
            r.region = Some("eu-west-1".into());
        }
        assert!(plan(&s, "aws", &p, &seen).is_empty(), "converged here");
        // Tagged for another region: refused, nothing else planned for it.
        let mut there = seen.clone();
        there.roles.get_mut(&Role::Node).unwrap().region = Some("us-east-1".into());
        let steps = plan(&s, "aws", &p, &there);
        assert!(steps.refuse().is_err());
        // An earlier meshstack's role, without the tag: adopted (tagged) here.
        let mut old = seen.clone();
        old.roles.get_mut(&Role::Cluster).unwrap().region = None;
        let steps = plan(&s, "aws", &p, &old).refuse().unwrap();
        assert_eq!(
            steps.iter().collect::<Vec<_>>(),
            [&Step::TagRegion(Role::Cluster)]
        );
        // The trust of an earlier meshstack's Karpenter role names its cluster's region.
        assert_eq!(
            trust_region(
                r#"{"Federated":"arn:aws:iam::1:oidc-provider/oidc.eks.ap-south-1.amazonaws.com/id/AB"}"#
            ),
            Some("ap-south-1".to_string())
        );
        assert_eq!(trust_region(r#"{"Service":"eks.amazonaws.com"}"#), None);
    }
}
