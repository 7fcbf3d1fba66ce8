//! Stage `nodegroup`: the EKS managed node group for system workloads (Karpenter's controller,
//! Istio, Prometheus), spread over the private subnets. The demo app itself runs on
//! Karpenter's nodes.

use async_trait::async_trait;
use aws_sdk_eks::types::{AmiTypes, CapacityTypes, NodegroupScalingConfig};

use super::{
    cluster, iam, nat, network, outcome, Action, Change, Context, Plan, Stage, StageError,
};
use crate::aws::{
    is_not_found, resource_tags, sdk_err, tags, wait_for, Answer, AwsClients, AwsError, STACK_TAG,
};
use crate::config::{CapacityType, Stack};
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::policies::managed_policy_arn;
use crate::retry::retry_while;

pub const ID: StageId = "nodegroup";

/// ECR's read-only policy: what EKS's check on a node role named before ECR's pull-only policy
/// existed (see [`create`]).
const ECR_READ_ONLY: &str = "AmazonEC2ContainerRegistryReadOnly";

/// CreateNodegroup, with the node role as the `iam` stage made it: ECR pull-only, the least
/// privilege, as the EKS User Guide's "Amazon EKS node IAM role" (create-node-role; read
/// 2026-12-06) lists for managed and self-managed nodes alike — its CLI procedure attaches
/// AmazonEKSWorkerNodePolicy and AmazonEC2ContainerRegistryPullOnly as "two required IAM
/// managed policies" — and as eksctl (0.210.0, PR #8386, tested on AL2023 and Bottlerocket
/// managed node groups) and Karpenter's CloudFormation create node groups with.
///
/// Not settled by AWS in so many words: CreateNodegroup used to refuse a role without ECR's
/// read-only policy ("The provided role doesn't have the Amazon EKS Managed Policies associated
/// with it. Please ensure the following policies [..., AmazonEC2ContainerRegistryReadOnly] are
/// attached", aws/containers-roadmap#1610, 2021, before the pull-only policy existed), and a
/// February 2025 pull request to the user guide (awsdocs/amazon-eks-user-guide#880) said
/// creation still wanted it; AWS closed it without that change, and no API reference states
/// the check. So: pull-only first; if EKS refuses the role naming the read-only policy,
/// attach that policy to the stack's own node role, say so, and try again while it
/// propagates. The `iam` stage takes it off again on the next `up` (pull-only covers what the
/// nodes pull; the check is on creation).
///
/// # Errors
/// What CreateNodegroup answers, once the read-only policy (if EKS asked for it) has had the
/// IAM propagation deadline to show; a failed AttachRolePolicy.
async fn create(
    cx: &Context,
    aws: &AwsClients,
    h: &StageHandle,
    req: &aws_sdk_eks::operation::create_nodegroup::builders::CreateNodegroupFluentBuilder,
    node_role_arn: &str,
) -> Result<aws_sdk_eks::operation::create_nodegroup::CreateNodegroupOutput, StageError> {
    let attached = std::sync::atomic::AtomicBool::new(false);
    let refused = |e: &AwsError| {
        e.is("InvalidParameterException") && e.message.contains("Amazon EKS Managed Policies")
    };
    let propagating = |e: &StageError| match e {
        StageError::Aws(e) if refused(e) => {
            Some("the node role's managed policies have not propagated yet".to_string())
        }
        _ => None,
    };
    retry_while(
        cx.waits.iam_propagation,
        propagating,
        h,
        "create node group",
        || {
            let (req, attached) = (req.clone(), &attached);
            async move {
                let e = match req.send().await.map_err(sdk_err("eks:CreateNodegroup")) {
                    Ok(out) => return Ok(out),
                    Err(e) => e,
                };
                let wants_read_only = refused(&e) && e.message.contains(ECR_READ_ONLY);
                if wants_read_only && !attached.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    let role = node_role_arn.rsplit('/').next().unwrap_or(node_role_arn);
                    h.warn(format!(
                        "EKS refuses the node role without {ECR_READ_ONLY} (\"{}\"); attaching it \
                         to {role} and trying again",
                        e.message
                    ));
                    aws.iam
                        .attach_role_policy()
                        .role_name(role)
                        .policy_arn(managed_policy_arn(cx.partition(), ECR_READ_ONLY))
                        .send()
                        .await
                        .map_err(sdk_err("iam:AttachRolePolicy"))?;
                }
                Err(e.into())
            }
        },
    )
    .await
}

pub struct NodeGroup;

/// The kind of resource, as `plan` names it.
const RESOURCE: &str = "eks-nodegroup";

pub fn nodegroup_name(stack: &Stack) -> String {
    crate::names::node_group(stack)
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Seen {
    pub status: String,
    pub ours: bool,
    pub instance_types: Vec<String>,
    /// `amiType`, like `AL2023_x86_64_STANDARD`.
    pub ami_type: String,
    pub desired: i32,
    pub min: i32,
    pub max: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Create,
    WaitActive,
    Scale,
}

/// Scaling bounds for a size: fixed at `size` so the demo's layout is predictable; the max
/// leaves room for a rolling update.
fn scaling(size: u32) -> (i32, i32, i32) {
    let size = size as i32;
    (size, size, size * 2)
}

pub fn plan(stack: &Stack, seen: Option<&Seen>) -> Plan<Step> {
    let Some(ng) = seen else {
        return vec![Step::Create, Step::WaitActive].into();
    };
    let name = nodegroup_name(stack);
    let mut steps = Plan::new();
    if !ng.ours {
        steps.conflict(
            RESOURCE,
            name,
            format!("exists without the tag {STACK_TAG}={}", stack.name),
        );
        return steps;
    }
    match ng.status.as_str() {
        "ACTIVE" | "UPDATING" => {}
        "CREATING" => steps.push(Step::WaitActive),
        other => {
            steps.conflict(
                RESOURCE,
                name,
                format!(
                    "node group is {other}; run `meshstack down --only nodegroup` and `up` again"
                ),
            );
            return steps;
        }
    }
    if ng.instance_types != stack.node_group.instance_types {
        steps.conflict(RESOURCE, &name, format!(
            "has instance types {:?} but the stack wants {:?}; node groups cannot change instance types — run `meshstack down --only nodegroup` first",
            ng.instance_types, stack.node_group.instance_types
        ));
    }
    let ami = stack.node_ami_type().as_str();
    if ng.ami_type != ami {
        steps.conflict(
            RESOURCE,
            &name,
            format!(
                "runs AMI type {} but the stack wants {ami}; a node group cannot change its AMI \
                 type — run `meshstack down --only nodegroup` first",
                if ng.ami_type.is_empty() {
                    "(unknown)"
                } else {
                    &ng.ami_type
                }
            ),
        );
    }
    let (desired, min, max) = scaling(stack.node_group.size);
    if (ng.desired, ng.min, ng.max) != (desired, min, max) {
        steps.push(Step::Scale);
    }
    steps
}

impl Step {
    fn change(&self, stack: &Stack) -> Change {
        let name = nodegroup_name(stack);
        match self {
            Step::Create => Change::new(Action::Create, RESOURCE, name).detail(format!(
                "{} x {}",
                stack.node_group.size,
                stack.node_group.instance_types.join("/")
            )),
            Step::WaitActive => {
                Change::new(Action::Wait, RESOURCE, name).detail("wait until ACTIVE")
            }
            Step::Scale => Change::new(Action::Update, RESOURCE, name)
                .detail(format!("scale to {}", stack.node_group.size)),
        }
    }
}

async fn observe(cx: &Context) -> Result<Option<Seen>, StageError> {
    let Some(aws) = &cx.aws else { return Ok(None) };
    describe(aws, &cx.stack).await
}

async fn describe(aws: &AwsClients, stack: &Stack) -> Result<Option<Seen>, StageError> {
    let req = aws
        .eks
        .describe_nodegroup()
        .cluster_name(stack.cluster_name())
        .nodegroup_name(nodegroup_name(stack));
    let out = req.send().await.lookup("eks:DescribeNodegroup")?;
    Ok(out.and_then(|o| o.nodegroup().cloned()).map(|ng| {
        let sc = ng.scaling_config();
        Seen {
            status: ng
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            ours: tags::of_stack(stack, ng.tags().into_iter().flatten()),
            instance_types: ng.instance_types().to_vec(),
            ami_type: ng
                .ami_type()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default(),
            desired: sc.and_then(|s| s.desired_size()).unwrap_or_default(),
            min: sc.and_then(|s| s.min_size()).unwrap_or_default(),
            max: sc.and_then(|s| s.max_size()).unwrap_or_default(),
        }
    }))
}

fn scaling_config(stack: &Stack) -> NodegroupScalingConfig {
    let (desired, min, max) = scaling(stack.node_group.size);
    NodegroupScalingConfig::builder()
        .desired_size(desired)
        .min_size(min)
        .max_size(max)
        .build()
}

#[async_trait]
impl Stage for NodeGroup {
    fn id(&self) -> StageId {
        ID
    }

    /// `cluster`: a node group belongs to a cluster. `nat`: its nodes are in the private
    /// subnets and reach the cluster's public endpoint and the image registries through the
    /// NAT gateways; without them they cannot join, and EKS fails the node group
    /// (NodeCreationFailure). The NAT gateways' minutes run while the cluster is created.
    fn depends_on(&self) -> &'static [StageId] {
        &[cluster::ID, nat::ID]
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        Ok(plan(&cx.stack, observe(cx).await?.as_ref()).changes(|s| s.change(&cx.stack)))
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        Ok(match observe(cx).await? {
            Some(ng) if ng.ours => vec![Change::new(
                Action::Delete,
                RESOURCE,
                nodegroup_name(&cx.stack),
            )],
            _ => vec![],
        })
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let stack = &cx.stack;
        h.step("observing");
        let seen = describe(aws, stack).await?;
        let steps = plan(stack, seen.as_ref()).refuse()?;
        let changes: Vec<Change> = steps.iter().map(|s| s.change(stack)).collect();
        for (step, change) in steps.iter().zip(&changes) {
            h.step(change.to_string());
            match step {
                Step::Create => {
                    let net = network::facts(cx).await?;
                    let roles = iam::facts(cx).await?;
                    let key = "nodegroup";
                    let token = cx.begin(ID, key)?;
                    let name = nodegroup_name(stack);
                    let mut req = aws
                        .eks
                        .create_nodegroup()
                        .cluster_name(stack.cluster_name())
                        .nodegroup_name(&name)
                        .set_subnets(Some(net.private_subnets.clone()))
                        .set_instance_types(Some(stack.node_group.instance_types.clone()))
                        // Explicit: EKS's default has changed over time and differs by
                        // Kubernetes version; validation checked AL2023 exists for it.
                        .ami_type(AmiTypes::from(stack.node_ami_type().as_str()))
                        .scaling_config(scaling_config(stack))
                        .disk_size(stack.node_group.disk_size_gib as i32)
                        .capacity_type(match stack.node_group.capacity_type {
                            CapacityType::OnDemand => CapacityTypes::OnDemand,
                            CapacityType::Spot => CapacityTypes::Spot,
                        })
                        .node_role(&roles.node_role_arn)
                        .labels("meshstack.io/pool", "system")
                        .set_tags(Some(resource_tags(stack, key, &name).into_iter().collect()));
                    if !token.is_empty() {
                        req = req.client_request_token(token);
                    }
                    match create(cx, aws, h, &req, &roles.node_role_arn).await {
                        Ok(out) => {
                            let arn = out
                                .nodegroup()
                                .and_then(|n| n.nodegroup_arn())
                                .unwrap_or_default()
                                .to_string();
                            cx.complete(ID, key, &arn)?;
                        }
                        Err(StageError::Aws(e)) if e.is("ResourceInUseException") => {
                            h.info("node group already being created; adopting it")
                        }
                        Err(e) => return Err(e),
                    }
                }
                Step::WaitActive => wait(cx, aws, h, true).await?,
                Step::Scale => {
                    aws.eks
                        .update_nodegroup_config()
                        .cluster_name(stack.cluster_name())
                        .nodegroup_name(nodegroup_name(stack))
                        .scaling_config(scaling_config(stack))
                        .send()
                        .await
                        .map_err(sdk_err("eks:UpdateNodegroupConfig"))?;
                }
            }
        }
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let stack = &cx.stack;
        h.step("observing");
        match describe(aws, stack).await? {
            None => Ok(Outcome::Unchanged),
            Some(ng) if !ng.ours => {
                h.warn(format!(
                    "node group {} is not tagged for this stack; left alone",
                    nodegroup_name(stack)
                ));
                Ok(Outcome::Unchanged)
            }
            Some(ng) => {
                if ng.status != "DELETING" {
                    h.step(format!("deleting node group {}", nodegroup_name(stack)));
                    let req = aws
                        .eks
                        .delete_nodegroup()
                        .cluster_name(stack.cluster_name())
                        .nodegroup_name(nodegroup_name(stack));
                    req.send().await.gone("eks:DeleteNodegroup")?;
                }
                wait(cx, aws, h, false).await?;
                Ok(Outcome::Changed("deleted 1".into()))
            }
        }
    }
}

/// Wait for the node group to be ACTIVE (`active`) or gone.
async fn wait(
    cx: &Context,
    aws: &AwsClients,
    h: &StageHandle,
    active: bool,
) -> Result<(), StageError> {
    let stack = &cx.stack;
    let started = std::time::Instant::now();
    let done = wait_for(cx.waits.nodegroup, || async {
        match describe(aws, stack).await {
            Ok(None) if !active => Ok(Some(())),
            Ok(Some(ng)) if active && ng.status == "ACTIVE" => Ok(Some(())),
            Ok(Some(ng)) if active && ng.status.ends_with("FAILED") => {
                Err(crate::aws::AwsError::new(
                    "eks:DescribeNodegroup",
                    Some("NodegroupFailed".into()),
                    format!(
                        "node group {} is {}; see its health issues in the EKS console",
                        nodegroup_name(stack),
                        ng.status
                    ),
                ))
            }
            Ok(seen) => {
                let status = seen.map_or("gone".to_string(), |s| s.status);
                h.step(format!(
                    "waiting for node group: {status} ({}s)",
                    started.elapsed().as_secs()
                ));
                Ok(None)
            }
            Err(StageError::Aws(e)) if is_not_found(&e) && !active => Ok(Some(())),
            Err(StageError::Aws(e)) => Err(e),
            Err(other) => Err(crate::aws::AwsError::new(
                "eks:DescribeNodegroup",
                None,
                other.to_string(),
            )),
        }
    })
    .await?;
    done.ok_or_else(|| StageError::Timeout {
        what: format!(
            "node group {} to be {}",
            nodegroup_name(stack),
            if active { "ACTIVE" } else { "deleted" }
        ),
        after: cx.waits.nodegroup.deadline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let s = Stack::parse("name: demo\n", "t.yaml").unwrap();
        assert_eq!(plan(&s, None), vec![Step::Create, Step::WaitActive]);
        let converged = Seen {
            status: "ACTIVE".into(),
            ours: true,
            instance_types: vec!["m5.large".into()],
            ami_type: "AL2023_x86_64_STANDARD".into(),
            desired: 3,
            min: 3,
            max: 6,
        };
        assert_eq!(plan(&s, Some(&converged)), vec![]);
        let small = Seen {
            desired: 2,
            min: 2,
            max: 4,
            ..converged.clone()
        };
        assert_eq!(plan(&s, Some(&small)), vec![Step::Scale]);
        let creating = Seen {
            status: "CREATING".into(),
            ..converged.clone()
        };
        assert_eq!(plan(&s, Some(&creating)), vec![Step::WaitActive]);
        let other_type = Seen {
            instance_types: vec!["t3.small".into()],
            ..converged.clone()
        };
        let steps = plan(&s, Some(&other_type));
        assert!(
            steps.is_empty() && matches!(steps.conflicts(), [c] if c.detail.contains("t3.small"))
        );
        // A group EKS built with its own default AMI (AL2 on older versions) is not what the
        // stack asks for, and cannot be changed in place.
        let al2 = Seen {
            ami_type: "AL2_x86_64".into(),
            ..converged
        };
        let steps = plan(&s, Some(&al2));
        assert!(
            steps.is_empty()
                && matches!(steps.conflicts(), [c] if c.detail.contains("AL2_x86_64") && c.detail.contains("AL2023_x86_64_STANDARD"))
        );
        let arm = Stack::parse(
            "name: demo\nnode_group: {instance_types: [m7g.large]}\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(arm.node_ami_type().as_str(), "AL2023_ARM_64_STANDARD");
    }
}
