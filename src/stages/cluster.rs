//! Stage `cluster`: the EKS control plane on the stack's subnets, the IAM OIDC provider for its
//! issuer (IRSA), and the Karpenter controller role's trust in that provider.
//!
//! Creation takes 10–15 minutes on AWS; the wait polls with back-off starting at 2 s, and a
//! killed run that finds the cluster still CREATING simply resumes waiting.
//!
//! `down` also removes what the cluster made on its own and tagged with its name, not the
//! stack's: the load balancers of Services of type LoadBalancer and the instances Karpenter
//! launched ([`crate::aws::sweep`]). That needs only AWS APIs and the cluster's name, so it
//! works when the cluster is gone already or its API cannot be reached.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_eks::types::{
    AuthenticationMode, ClusterStatus, CreateAccessConfigRequest, UpgradePolicyRequest,
    VpcConfigRequest,
};

use super::iam;
use super::{deletion, network, outcome, Action, Change, Context, Plan, Stage, StageError};
use crate::aws::sweep::{self, Owner};
use crate::aws::teardown::{Swept, Teardown};
use crate::aws::{
    resource_tags, same_json, sdk_err, tags, wait_for, Answer, AwsClients, AwsError, STACK_TAG,
};
use crate::config::Stack;
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::names::Role;
use crate::policies::{
    issuer_host_path, karpenter_irsa_trust as karpenter_trust, oidc_provider_arn,
};
use crate::retry::retry_while;

pub const ID: StageId = "cluster";

/// The Kubernetes service account Karpenter's controller runs as (namespace `karpenter`).
use crate::names::KARPENTER_SERVICE_ACCOUNT;

pub struct Cluster;

/// What dependents need from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFacts {
    pub name: String,
    pub arn: String,
    pub endpoint: String,
    pub certificate_authority: String,
    pub oidc_issuer: String,
    /// The security group EKS creates for the cluster (moto reports none).
    pub security_group_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeenCluster {
    pub status: String,
    pub ours: bool,
    pub version: String,
    pub endpoint_public_access: bool,
    pub endpoint_private_access: bool,
    pub public_access_cidrs: Vec<String>,
    pub oidc_issuer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Seen {
    pub cluster: Option<SeenCluster>,
    /// `Some(ours)` when the OIDC provider for the issuer exists.
    pub oidc_provider: Option<bool>,
    /// The stack its tag names, when it exists and is not ours (for the refusal).
    pub oidc_owner: Option<String>,
    /// The Karpenter role's current trust document, if the role exists.
    pub karpenter_trust: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreateCluster,
    WaitActive,
    UpdateEndpointAccess,
    CreateOidcProvider,
    TrustKarpenterRole,
}

/// The kind of resource conflicts name, as `plan` shows them.
const RESOURCE: &str = "eks-cluster";

/// The pure diff. `wanted_trust` is the Karpenter role trust for the observed issuer (`None`
/// while there is no cluster to know the issuer of).
pub fn plan(stack: &Stack, seen: &Seen, wanted_trust: Option<&serde_json::Value>) -> Plan<Step> {
    let name = stack.cluster_name();
    let mut steps = Plan::new();
    match &seen.cluster {
        None => steps.extend([Step::CreateCluster, Step::WaitActive]),
        Some(c) if !c.ours => {
            steps.conflict(RESOURCE, name, format!(
                "an EKS cluster named {name} exists without the tag {STACK_TAG}={}; meshstack will not adopt it",
                stack.name
            ));
            return steps;
        }
        Some(c) => {
            match c.status.as_str() {
                "ACTIVE" => {}
                // An update in progress (endpoint access, version, logging) must finish before
                // the cluster is updated again or used: EKS refuses a second update, and a
                // node group created now waits on it.
                "CREATING" | "PENDING" | "UPDATING" => steps.push(Step::WaitActive),
                other => {
                    steps.conflict(
                        RESOURCE,
                        name,
                        format!("cluster is {other}; run `meshstack down` and `up` again"),
                    );
                    return steps;
                }
            }
            if c.version != stack.kubernetes_version {
                steps.conflict(RESOURCE, name, format!(
                    "cluster runs Kubernetes {} but the stack asks for {}; meshstack does not upgrade clusters in place — set kubernetes_version: \"{}\" or rebuild",
                    c.version, stack.kubernetes_version, c.version
                ));
            }
            let cidrs: Vec<String> = stack
                .cluster
                .public_access_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect();
            let mut have_cidrs = c.public_access_cidrs.clone();
            have_cidrs.sort();
            let mut want_cidrs = cidrs.clone();
            want_cidrs.sort();
            if c.endpoint_public_access != stack.cluster.endpoint_public_access
                || c.endpoint_private_access != stack.cluster.endpoint_private_access
                || (stack.cluster.endpoint_public_access
                    && !have_cidrs.is_empty()
                    && have_cidrs != want_cidrs)
            {
                steps.push(Step::UpdateEndpointAccess);
            }
        }
    }
    match seen.oidc_provider {
        None => steps.push(Step::CreateOidcProvider),
        Some(false) => steps.conflict(RESOURCE, name, foreign_oidc(seen.oidc_owner.as_deref())),
        Some(true) => {}
    }
    let trusted = match (seen.karpenter_trust.as_deref(), wanted_trust) {
        (Some(have), Some(want)) => same_json(have, want),
        _ => false,
    };
    if !trusted {
        steps.push(Step::TrustKarpenterRole);
    }
    steps
}

impl Step {
    fn change(&self, stack: &Stack) -> Change {
        let name = stack.cluster_name().to_string();
        match self {
            Step::CreateCluster => Change::new(Action::Create, RESOURCE, name).detail(format!(
                "Kubernetes {}, {} zones",
                stack.kubernetes_version,
                stack.zone_count()
            )),
            Step::WaitActive => {
                Change::new(Action::Wait, RESOURCE, name).detail("wait until ACTIVE")
            }
            Step::UpdateEndpointAccess => {
                Change::new(Action::Update, RESOURCE, name).detail(format!(
                    "endpoint access: public {}, private {}",
                    stack.cluster.endpoint_public_access, stack.cluster.endpoint_private_access
                ))
            }
            Step::CreateOidcProvider => Change::new(
                Action::Create,
                "iam-oidc-provider",
                format!("{name} issuer"),
            ),
            Step::TrustKarpenterRole => {
                Change::new(Action::Update, "iam-role", Role::Karpenter.name(stack)).detail(
                    format!(
                        "trust {KARPENTER_SERVICE_ACCOUNT} through the cluster's OIDC provider"
                    ),
                )
            }
        }
    }
}

struct Described {
    seen: SeenCluster,
    facts: ClusterFacts,
}

async fn describe(aws: &AwsClients, stack: &Stack) -> Result<Option<Described>, StageError> {
    let req = aws.eks.describe_cluster().name(stack.cluster_name());
    let out = req.send().await.lookup("eks:DescribeCluster")?;
    let Some(c) = out.and_then(|o| o.cluster().cloned()) else {
        return Ok(None);
    };
    let vpc = c.resources_vpc_config();
    let issuer = c
        .identity()
        .and_then(|i| i.oidc())
        .and_then(|o| o.issuer())
        .map(str::to_string);
    Ok(Some(Described {
        seen: SeenCluster {
            status: c
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            ours: tags::of_stack(stack, c.tags().into_iter().flatten()),
            version: c.version().unwrap_or_default().to_string(),
            endpoint_public_access: vpc.is_some_and(|v| v.endpoint_public_access()),
            endpoint_private_access: vpc.is_some_and(|v| v.endpoint_private_access()),
            public_access_cidrs: vpc
                .map(|v| v.public_access_cidrs().to_vec())
                .unwrap_or_default(),
            oidc_issuer: issuer.clone(),
        },
        facts: ClusterFacts {
            name: c.name().unwrap_or_default().to_string(),
            arn: c.arn().unwrap_or_default().to_string(),
            endpoint: c.endpoint().unwrap_or_default().to_string(),
            certificate_authority: c
                .certificate_authority()
                .and_then(|a| a.data())
                .unwrap_or_default()
                .to_string(),
            oidc_issuer: issuer.unwrap_or_default(),
            security_group_id: vpc
                .and_then(|v| v.cluster_security_group_id())
                .map(str::to_string),
        },
    }))
}

/// `Some(ours)` if the OIDC provider for `issuer` exists.
async fn find_oidc_provider(
    aws: &AwsClients,
    stack: &Stack,
    arn: &str,
) -> Result<Option<bool>, StageError> {
    let owner = oidc_provider_owner(aws, arn).await?;
    Ok(owner.map(|o| o.as_deref() == Some(stack.name.as_str())))
}

/// If the OIDC provider `arn` exists: the stack its stack tag names (`None` without one).
async fn oidc_provider_owner(
    aws: &AwsClients,
    arn: &str,
) -> Result<Option<Option<String>>, StageError> {
    let req = aws.iam.get_open_id_connect_provider();
    let req = req.open_id_connect_provider_arn(arn);
    let out = req.send().await.lookup("iam:GetOpenIDConnectProvider")?;
    Ok(out.map(|o| tags::map(o.tags()).remove(crate::aws::STACK_TAG)))
}

/// Why an OIDC provider that is not the stack's is refused, naming its owner if it has one.
/// Clusters that share an issuer (moto gives every cluster the same) would share it, and one
/// stack's `down` would delete it under the other.
fn foreign_oidc(owner: Option<&str>) -> String {
    match owner {
        Some(owner) => format!(
            "the IAM OIDC provider for this cluster's issuer belongs to stack `{owner}` (its {} \
             tag); meshstack does not adopt another stack's provider",
            crate::aws::STACK_TAG
        ),
        None => "the IAM OIDC provider for this cluster's issuer exists without the stack tag"
            .to_string(),
    }
}

async fn observe(cx: &Context) -> Result<(Seen, Option<ClusterFacts>), StageError> {
    let Some(aws) = &cx.aws else {
        return Ok((Seen::default(), None));
    };
    let stack = &cx.stack;
    let mut seen = Seen::default();
    let described = describe(aws, stack).await?;
    if let Some(issuer) = described.as_ref().and_then(|d| d.seen.oidc_issuer.clone()) {
        let arn = oidc_provider_arn(cx.partition(), cx.account(), &issuer);
        let owner = oidc_provider_owner(aws, &arn).await?;
        seen.oidc_provider = owner
            .as_ref()
            .map(|o| o.as_deref() == Some(stack.name.as_str()));
        seen.oidc_owner = owner.flatten().filter(|o| *o != stack.name);
    }
    seen.karpenter_trust = iam::find_role(aws, stack, &Role::Karpenter.name(stack))
        .await?
        .filter(|r| r.ours)
        .map(|r| r.trust);
    let facts = described.as_ref().map(|d| d.facts.clone());
    seen.cluster = described.map(|d| d.seen);
    Ok((seen, facts))
}

/// The stack's cluster as EKS reports it, for commands outside a run (`meshstack kubeconfig`):
/// `None` if there is no cluster of that name.
pub async fn find(
    aws: &AwsClients,
    stack: &Stack,
) -> Result<Option<(SeenCluster, ClusterFacts)>, StageError> {
    Ok(describe(aws, stack).await?.map(|d| (d.seen, d.facts)))
}

/// The facts dependents need, from the run's cache or by observing.
pub async fn facts(cx: &Context) -> Result<ClusterFacts, StageError> {
    if let Some(f) = cx.facts().cluster.clone() {
        return Ok(f);
    }
    let aws = cx.aws()?;
    let d = describe(aws, &cx.stack)
        .await?
        .filter(|d| d.seen.ours && d.seen.status == "ACTIVE")
        .ok_or_else(|| {
            StageError::Missing(format!("ACTIVE EKS cluster {}", cx.stack.cluster_name()))
        })?;
    cx.facts().cluster = Some(d.facts.clone());
    Ok(d.facts)
}

fn wanted_trust(cx: &Context, issuer: Option<&str>) -> Option<serde_json::Value> {
    issuer.map(|i| karpenter_trust(cx.partition(), cx.account(), i))
}

#[async_trait]
impl Stage for Cluster {
    fn id(&self) -> StageId {
        ID
    }

    /// `network`: the cluster's interfaces go in its subnets; not `nat`: the control plane
    /// runs in AWS's account and its interfaces need no route out, so creating the cluster
    /// (CreateCluster to ACTIVE) does not wait for the NAT gateways. `iam`: the cluster role.
    fn depends_on(&self) -> &'static [StageId] {
        &[network::ID, iam::ID]
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let (seen, _) = observe(cx).await?;
        let issuer = seen.cluster.as_ref().and_then(|c| c.oidc_issuer.clone());
        let trust = wanted_trust(cx, issuer.as_deref());
        Ok(plan(&cx.stack, &seen, trust.as_ref()).changes(|s| s.change(&cx.stack)))
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let (seen, _) = observe(cx).await?;
        let mut changes = Vec::new();
        if seen.cluster.as_ref().is_some_and(|c| c.ours) {
            changes.push(Change::new(
                Action::Delete,
                RESOURCE,
                cx.stack.cluster_name(),
            ));
        }
        if seen.oidc_provider == Some(true) {
            changes.push(Change::new(
                Action::Delete,
                "iam-oidc-provider",
                format!("{} issuer", cx.stack.cluster_name()),
            ));
        }
        // Same condition as `down`: not when a same-named cluster is someone else's.
        let foreign = seen.cluster.as_ref().is_some_and(|c| !c.ours);
        if let (Some(aws), false) = (&cx.aws, foreign) {
            let owner = Owner::of(&cx.stack);
            let (lbs, instances) = tokio::try_join!(
                sweep::find_load_balancers(aws, owner),
                sweep::find_karpenter_instances(aws, owner)
            )?;
            let profiles = sweep::find_karpenter_instance_profiles(aws, owner, &aws.region).await?;
            changes.extend(lbs.iter().chain(&instances).chain(&profiles).map(deletion));
        }
        Ok(changes)
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let stack = &cx.stack;
        h.step("observing");
        let (seen, mut facts) = observe(cx).await?;
        let issuer = seen.cluster.as_ref().and_then(|c| c.oidc_issuer.clone());
        let steps = plan(stack, &seen, wanted_trust(cx, issuer.as_deref()).as_ref()).refuse()?;
        let changes: Vec<Change> = steps.iter().map(|s| s.change(stack)).collect();
        for (step, change) in steps.iter().zip(&changes) {
            h.step(change.to_string());
            match step {
                Step::CreateCluster => create_cluster(cx, aws, h).await?,
                Step::WaitActive => {
                    facts = Some(wait_active(cx, aws, h).await?);
                }
                Step::UpdateEndpointAccess => {
                    aws.eks
                        .update_cluster_config()
                        .name(stack.cluster_name())
                        .resources_vpc_config(vpc_config(stack, None))
                        .send()
                        .await
                        .map_err(sdk_err("eks:UpdateClusterConfig"))?;
                    // The cluster is UPDATING now; the stages after this one use it.
                    facts = Some(wait_active(cx, aws, h).await?);
                }
                Step::CreateOidcProvider => {
                    let issuer = current_issuer(&facts)?;
                    let key = "oidc-provider";
                    cx.begin(ID, key)?;
                    let tags = tags::iam(stack, key, &format!("{}-oidc", stack.name));
                    let res = aws
                        .iam
                        .create_open_id_connect_provider()
                        .url(&issuer)
                        .client_id_list("sts.amazonaws.com")
                        .set_tags(Some(tags))
                        .send()
                        .await
                        .map_err(sdk_err("iam:CreateOpenIDConnectProvider"));
                    let arn = oidc_provider_arn(cx.partition(), cx.account(), &issuer);
                    match res {
                        Ok(_) => {}
                        // Ours if a killed run created it; another stack's (an issuer shared
                        // by clusters) is refused here as observe refuses it on the next run.
                        Err(e) if e.is("EntityAlreadyExists") => {
                            match oidc_provider_owner(aws, &arn).await? {
                                Some(Some(owner)) if owner == stack.name => {}
                                Some(owner) => {
                                    return Err(StageError::Conflict(format!(
                                        "{arn}: {}",
                                        foreign_oidc(owner.as_deref())
                                    )))
                                }
                                None => return Err(e.into()),
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                    cx.complete(ID, key, &arn)?;
                }
                Step::TrustKarpenterRole => {
                    let issuer = current_issuer(&facts)?;
                    let trust = karpenter_trust(cx.partition(), cx.account(), &issuer);
                    // IAM may not know the OIDC provider created a moment ago yet, and answers
                    // MalformedPolicyDocument ("Invalid principal") until it does.
                    let propagating = |e: &AwsError| {
                        e.is("MalformedPolicyDocument")
                            .then(|| "the new OIDC provider is not visible to IAM yet".to_string())
                    };
                    retry_while(
                        cx.waits.iam_propagation,
                        propagating,
                        h,
                        "trust the Karpenter role to the OIDC provider",
                        || async {
                            aws.iam
                                .update_assume_role_policy()
                                .role_name(Role::Karpenter.name(stack))
                                .policy_document(trust.to_string())
                                .send()
                                .await
                                .map_err(sdk_err("iam:UpdateAssumeRolePolicy"))
                        },
                    )
                    .await?;
                }
            }
        }
        let facts = match facts {
            Some(f) => f,
            None => describe(aws, stack)
                .await?
                .map(|d| d.facts)
                .ok_or_else(|| StageError::Missing("cluster after create".into()))?,
        };
        cx.set_output(ID, "endpoint", facts.endpoint.clone().into())?;
        cx.set_output(ID, "oidc_issuer", facts.oidc_issuer.clone().into())?;
        cx.facts().cluster = Some(facts);
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let stack = &cx.stack;
        h.step("observing");
        let described = describe(aws, stack).await?;
        let mut deleted = 0;
        let mut issuer = None;
        // A same-named cluster of someone else's means its tags name someone else's resources.
        let foreign = described.as_ref().is_some_and(|d| !d.seen.ours);
        let mut swept = Swept::default();
        if !foreign {
            swept = sweep_cluster(cx, aws, h).await?;
            deleted += swept.deleted;
        }
        if let Some(d) = described {
            if !d.seen.ours {
                h.warn(format!(
                    "EKS cluster {} is not tagged for this stack; left alone, and so are the \
                     load balancers and instances tagged with its name",
                    stack.cluster_name()
                ));
            } else {
                issuer = d.seen.oidc_issuer.clone();
                if d.seen.status != "DELETING" {
                    h.step(format!("deleting EKS cluster {}", stack.cluster_name()));
                    let req = aws.eks.delete_cluster().name(stack.cluster_name());
                    req.send().await.gone("eks:DeleteCluster")?;
                }
                h.step("waiting for the cluster to be deleted");
                let gone = wait_for(cx.waits.cluster, || async {
                    let out = aws
                        .eks
                        .describe_cluster()
                        .name(stack.cluster_name())
                        .send()
                        .await
                        .map_err(sdk_err("eks:DescribeCluster"));
                    match out {
                        Ok(_) => Ok(None),
                        Err(e) if crate::aws::is_not_found(&e) => Ok(Some(())),
                        Err(e) => Err(e),
                    }
                })
                .await?;
                if gone.is_none() {
                    return Err(StageError::Timeout {
                        what: format!("EKS cluster {} deletion", stack.cluster_name()),
                        after: cx.waits.cluster.deadline,
                    });
                }
                deleted += 1;
                // Until it was gone, its controllers (service controller, Karpenter) could
                // replace what the first sweep removed; look again. This pass's findings
                // supersede the first's.
                let again = sweep_cluster(cx, aws, h).await?;
                deleted += again.deleted;
                swept.remaining = again.remaining;
            }
        }
        // The provider outlives a cluster deleted behind our back; find it by tag then.
        let providers = aws
            .iam
            .list_open_id_connect_providers()
            .send()
            .await
            .map_err(sdk_err("iam:ListOpenIDConnectProviders"))?;
        for p in providers.open_id_connect_provider_list() {
            let Some(arn) = p.arn() else { continue };
            let matches_issuer = issuer
                .as_deref()
                .is_some_and(|i| arn.ends_with(issuer_host_path(i)));
            if !matches_issuer && issuer.is_some() {
                continue;
            }
            if find_oidc_provider(aws, stack, arn).await? == Some(true) {
                h.step(format!("deleting OIDC provider {arn}"));
                let req = aws.iam.delete_open_id_connect_provider();
                let req = req.open_id_connect_provider_arn(arn);
                req.send().await.gone("iam:DeleteOpenIDConnectProvider")?;
                deleted += 1;
            }
        }
        if !swept.remaining.is_empty() {
            return Err(StageError::Remaining(swept.remaining.join("; ")));
        }
        Ok(super::deleted(deleted))
    }
}

/// Delete the cluster's load balancers and terminate its Karpenter instances, found by the
/// cluster's tags; wait for both until the `dependency` deadline. What is left is returned, not
/// raised, so that the cluster is deleted even so (a re-run finds the rest by tag again).
async fn sweep_cluster(
    cx: &Context,
    aws: &AwsClients,
    h: &StageHandle,
) -> Result<Swept, StageError> {
    let owner = Owner::of(&cx.stack);
    let teardown = Teardown::new(aws, cx.waits.dependency, h);
    h.step("looking for the cluster's load balancers, Karpenter instances and profiles");
    let (lbs, instances) = tokio::try_join!(
        sweep::find_load_balancers(aws, owner),
        sweep::find_karpenter_instances(aws, owner)
    )?;
    let (mut swept, terminated) =
        tokio::try_join!(teardown.delete(&lbs), teardown.delete(&instances))?;
    swept.merge(terminated);
    // The instances are gone (or reported): their profiles can go too.
    let profiles = sweep::find_karpenter_instance_profiles(aws, owner, &aws.region).await?;
    swept.merge(teardown.delete(&profiles).await?);
    Ok(swept)
}

fn current_issuer(facts: &Option<ClusterFacts>) -> Result<String, StageError> {
    facts
        .as_ref()
        .map(|f| f.oidc_issuer.clone())
        .filter(|i| !i.is_empty())
        .ok_or_else(|| StageError::Missing("the cluster's OIDC issuer".into()))
}

fn vpc_config(stack: &Stack, subnets: Option<Vec<String>>) -> VpcConfigRequest {
    VpcConfigRequest::builder()
        .set_subnet_ids(subnets)
        .endpoint_public_access(stack.cluster.endpoint_public_access)
        .endpoint_private_access(stack.cluster.endpoint_private_access)
        .set_public_access_cidrs(stack.cluster.endpoint_public_access.then(|| {
            stack
                .cluster
                .public_access_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect()
        }))
        .build()
}

async fn create_cluster(cx: &Context, aws: &AwsClients, h: &StageHandle) -> Result<(), StageError> {
    let stack = &cx.stack;
    let net = network::facts(cx).await?;
    let roles = iam::facts(cx).await?;
    let key = "cluster";
    let token = cx.begin(ID, key)?;
    let tags: HashMap<String, String> = resource_tags(stack, key, stack.cluster_name())
        .into_iter()
        .collect();
    let subnets: Vec<String> = net
        .private_subnets
        .iter()
        .chain(&net.public_subnets)
        .cloned()
        .collect();
    let mut req = aws
        .eks
        .create_cluster()
        .name(stack.cluster_name())
        .version(&stack.kubernetes_version)
        .role_arn(&roles.cluster_role_arn)
        .resources_vpc_config(vpc_config(stack, Some(subnets)))
        .access_config(
            CreateAccessConfigRequest::builder()
                .authentication_mode(AuthenticationMode::ApiAndConfigMap)
                .bootstrap_cluster_creator_admin_permissions(true)
                .build(),
        )
        // Without it EKS defaults to EXTENDED: a cluster left running past the end of standard
        // support would be billed at six times the price without anyone choosing that.
        .upgrade_policy(
            UpgradePolicyRequest::builder()
                .support_type(stack.cluster.support.api_value().into())
                .build(),
        )
        .set_tags(Some(tags));
    if !token.is_empty() {
        req = req.client_request_token(token);
    }
    // A role created moments ago (by the `iam` stage) may not be assumable by EKS yet: EKS then
    // answers InvalidParameterException "... could not be assumed". The same request, with the
    // same client token, succeeds once IAM has propagated the role.
    // Likewise the policy attached to it (on a rerun whose `iam` stage has just attached it):
    // "The provided role doesn't have the Amazon EKS Managed Policies associated with it".
    let propagating = |e: &AwsError| {
        if !e.is("InvalidParameterException") {
            None
        } else if e.message.contains("could not be assumed") {
            Some("the cluster role is not assumable yet".to_string())
        } else if e.message.contains("Amazon EKS Managed Policies") {
            Some("the cluster role's managed policy has not propagated yet".to_string())
        } else {
            None
        }
    };
    let created = retry_while(
        cx.waits.iam_propagation,
        propagating,
        h,
        "create EKS cluster",
        || {
            let req = req.clone();
            async move { req.send().await.map_err(sdk_err("eks:CreateCluster")) }
        },
    )
    .await;
    match created {
        Ok(out) => {
            let arn = out
                .cluster()
                .and_then(|c| c.arn())
                .unwrap_or_default()
                .to_string();
            cx.complete(ID, key, &arn)?;
        }
        // Created by a run that was killed before it could record it: adopt (observe checks the tag).
        Err(e) if e.is("ResourceInUseException") => {
            h.info("cluster already being created; adopting it")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

async fn wait_active(
    cx: &Context,
    aws: &AwsClients,
    h: &StageHandle,
) -> Result<ClusterFacts, StageError> {
    let stack = &cx.stack;
    let started = std::time::Instant::now();
    let found = wait_for(cx.waits.cluster, || async {
        let d = describe(aws, stack).await.map_err(|e| match e {
            StageError::Aws(a) => a,
            other => crate::aws::AwsError::new("eks:DescribeCluster", None, other.to_string()),
        })?;
        match d {
            Some(d) if d.seen.status == ClusterStatus::Active.as_str() => Ok(Some(d.facts)),
            Some(d) if d.seen.status == ClusterStatus::Failed.as_str() => {
                Err(crate::aws::AwsError::new(
                    "eks:DescribeCluster",
                    Some("ClusterFailed".into()),
                    format!(
                        "cluster {} is FAILED; see the EKS console, then `meshstack down`",
                        stack.cluster_name()
                    ),
                ))
            }
            Some(d) => {
                h.step(format!(
                    "waiting for cluster: {} ({}s)",
                    d.seen.status,
                    started.elapsed().as_secs()
                ));
                Ok(None)
            }
            None => Ok(None),
        }
    })
    .await?;
    found.ok_or_else(|| StageError::Timeout {
        what: format!("EKS cluster {} to become ACTIVE", stack.cluster_name()),
        after: cx.waits.cluster.deadline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://oidc.eks.us-east-1.amazonaws.com/id/ABC";

    fn stack() -> Stack {
        Stack::parse("name: demo\n", "t.yaml").unwrap()
    }

    fn converged(stack: &Stack) -> Seen {
        Seen {
            cluster: Some(SeenCluster {
                status: "ACTIVE".into(),
                ours: true,
                version: stack.kubernetes_version.clone(),
                endpoint_public_access: true,
                endpoint_private_access: true,
                public_access_cidrs: vec!["0.0.0.0/0".into()],
                oidc_issuer: Some(ISSUER.into()),
            }),
            oidc_provider: Some(true),
            oidc_owner: None,
            karpenter_trust: Some(karpenter_trust("aws", "1", ISSUER).to_string()),
        }
    }

    #[test]
    fn plans() {
        let s = stack();
        let trust = karpenter_trust("aws", "1", ISSUER);
        assert_eq!(
            plan(&s, &Seen::default(), None),
            vec![
                Step::CreateCluster,
                Step::WaitActive,
                Step::CreateOidcProvider,
                Step::TrustKarpenterRole
            ]
        );
        assert_eq!(plan(&s, &converged(&s), Some(&trust)), vec![]);

        let mut creating = converged(&s);
        creating.cluster.as_mut().unwrap().status = "CREATING".into();
        assert_eq!(plan(&s, &creating, Some(&trust)), vec![Step::WaitActive]);

        // An update in progress is waited out before the cluster is changed or used.
        let mut updating = converged(&s);
        updating.cluster.as_mut().unwrap().status = "UPDATING".into();
        assert_eq!(plan(&s, &updating, Some(&trust)), vec![Step::WaitActive]);
        updating.cluster.as_mut().unwrap().endpoint_public_access = false;
        assert_eq!(
            plan(&s, &updating, Some(&trust)),
            vec![Step::WaitActive, Step::UpdateEndpointAccess]
        );

        let mut untrusted = converged(&s);
        untrusted.karpenter_trust = Some(iam_placeholder());
        assert_eq!(
            plan(&s, &untrusted, Some(&trust)),
            vec![Step::TrustKarpenterRole]
        );

        let mut private = converged(&s);
        private.cluster.as_mut().unwrap().endpoint_public_access = false;
        assert_eq!(
            plan(&s, &private, Some(&trust)),
            vec![Step::UpdateEndpointAccess]
        );

        let mut foreign = converged(&s);
        foreign.cluster.as_mut().unwrap().ours = false;
        let steps = plan(&s, &foreign, Some(&trust));
        assert!(steps.is_empty() && matches!(steps.conflicts(), [_]));

        let mut old = converged(&s);
        old.cluster.as_mut().unwrap().version = "1.29".into();
        let steps = plan(&s, &old, Some(&trust));
        assert!(steps.is_empty() && matches!(steps.conflicts(), [c] if c.detail.contains("1.29")));
    }

    fn iam_placeholder() -> String {
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#.into()
    }

    #[test]
    fn trust_is_scoped_to_karpenters_service_account() {
        let t = karpenter_trust("aws", "123456789012", ISSUER);
        let st = &t["Statement"][0];
        assert_eq!(
            st["Principal"]["Federated"],
            "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC"
        );
        assert_eq!(
            st["Condition"]["StringEquals"]["oidc.eks.us-east-1.amazonaws.com/id/ABC:sub"],
            KARPENTER_SERVICE_ACCOUNT
        );
        assert_eq!(
            st["Condition"]["StringEquals"]["oidc.eks.us-east-1.amazonaws.com/id/ABC:aud"],
            "sts.amazonaws.com"
        );
    }
}
