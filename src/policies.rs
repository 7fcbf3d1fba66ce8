//! Every IAM document meshstack writes, built in one pure module: the roles' trust policies,
//! the Karpenter controller's inline policy (one per Karpenter release line, from
//! `karpenter/controller-policy-*.json`), and the interruption queue's resource policy.
//!
//! The stages send these documents; `meshstack render` writes them to `DIR/iam/` for a person
//! to audit before `up`; the contract tests lint them (parliament) and hold the controller
//! policy to upstream's CloudFormation for the pinned Karpenter release.

use serde_json::{json, Value};

use crate::config::Stack;
use crate::names::{self, Role, KARPENTER_SERVICE_ACCOUNT};
use crate::versions::ControllerPolicy;

/// Where the documents are: the account, region and partition they name.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub partition: &'a str,
    pub region: &'a str,
    pub account: &'a str,
}

/// The AWS managed policies each role gets, by name (Karpenter's node role as in upstream's
/// getting-started CloudFormation, which the managed node group shares).
///
/// The node role's ECR policy is pull-only, the least privilege: the EKS User Guide's "Amazon
/// EKS node IAM role" (create-node-role, read 2026-12-06) names AmazonEC2ContainerRegistryPullOnly
/// for managed node groups and self-managed nodes alike, and eksctl (0.210.0) and Karpenter's
/// CloudFormation make node groups with it. Whether CreateNodegroup still checks for the older
/// read-only policy is not stated in AWS's documentation; the `nodegroup` stage attaches it if
/// EKS refuses the role naming it (`stages/nodegroup.rs`, `create`), so creation works either way.
pub fn managed_policies(role: Role) -> &'static [&'static str] {
    match role {
        Role::Cluster => &["AmazonEKSClusterPolicy"],
        Role::Node => &[
            "AmazonEKSWorkerNodePolicy",
            "AmazonEKS_CNI_Policy",
            "AmazonEC2ContainerRegistryPullOnly",
            "AmazonSSMManagedInstanceCore",
        ],
        Role::Karpenter => &[],
    }
}

/// Managed policies an earlier meshstack attached to `role` and this one no longer wants:
/// `up` detaches them (the node role had ECR's read-only policy; upstream grants pull only).
pub fn formerly_attached(role: Role) -> &'static [&'static str] {
    match role {
        Role::Node => &["AmazonEC2ContainerRegistryReadOnly"],
        Role::Cluster | Role::Karpenter => &[],
    }
}

/// The ARN of an AWS managed policy.
pub fn managed_policy_arn(partition: &str, name: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/{name}")
}

fn service_trust(service: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]
    })
}

/// The trust policy a role is created with. The Karpenter role starts trusting nobody: its
/// IRSA trust ([`karpenter_irsa_trust`]) needs the cluster's OIDC issuer, so the `cluster`
/// stage writes it once the provider exists.
pub fn initial_trust(role: Role) -> Value {
    match role {
        Role::Cluster => service_trust("eks.amazonaws.com"),
        Role::Node => service_trust("ec2.amazonaws.com"),
        Role::Karpenter => json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "PendingIrsaTrust",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": "sts:AssumeRole"
            }]
        }),
    }
}

/// `https://oidc.eks.../id/X` -> `oidc.eks.../id/X`, the form IAM uses in ARNs and conditions.
pub fn issuer_host_path(issuer: &str) -> &str {
    issuer.trim_start_matches("https://")
}

/// The ARN of the IAM OIDC provider for `issuer`.
pub fn oidc_provider_arn(partition: &str, account: &str, issuer: &str) -> String {
    format!(
        "arn:{partition}:iam::{account}:oidc-provider/{}",
        issuer_host_path(issuer)
    )
}

/// The Karpenter controller role's IRSA trust: only the `karpenter/karpenter` service account
/// of the cluster whose OIDC issuer is `issuer`.
pub fn karpenter_irsa_trust(partition: &str, account: &str, issuer: &str) -> Value {
    let host = issuer_host_path(issuer);
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": oidc_provider_arn(partition, account, issuer)},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                format!("{host}:aud"): "sts.amazonaws.com",
                format!("{host}:sub"): KARPENTER_SERVICE_ACCOUNT
            }}
        }]
    })
}

/// The attendee role's trust: `trust` (the stack's `access.trust`), or when that is empty the
/// stack's own account, may assume it. The role has no permission policy: an EKS token is a
/// presigned `sts:GetCallerIdentity`, which needs none, and the cluster's access entry says
/// what it may do in Kubernetes.
pub fn attendee_trust(partition: &str, account: &str, trust: &[String]) -> Value {
    let principals: Vec<String> = if trust.is_empty() {
        vec![format!("arn:{partition}:iam::{account}:root")]
    } else {
        trust.to_vec()
    };
    // One principal as a string, the form IAM gives back, so that a converged role compares
    // equal to what `up` wants.
    let principals = match principals.as_slice() {
        [one] => Value::String(one.clone()),
        _ => json!(principals),
    };
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AttendeesAssume",
            "Effect": "Allow",
            "Principal": {"AWS": principals},
            "Action": "sts:AssumeRole"
        }]
    })
}

/// The template of a controller policy line.
pub fn controller_policy_template(line: ControllerPolicy) -> &'static str {
    match line {
        ControllerPolicy::V1_8 => include_str!("../karpenter/controller-policy-1.8.json"),
        ControllerPolicy::V1_10 => include_str!("../karpenter/controller-policy-1.10.json"),
        ControllerPolicy::V1_12 => include_str!("../karpenter/controller-policy-1.12.json"),
        ControllerPolicy::V1_13 => include_str!("../karpenter/controller-policy-1.13.json"),
    }
}

/// The Karpenter controller policy for the stack's `karpenter.version`, filled in.
pub fn karpenter_controller(stack: &Stack, scope: Scope<'_>) -> Value {
    let text = controller_policy_template(stack.karpenter_policy())
        .replace("${PARTITION}", scope.partition)
        .replace("${REGION}", scope.region)
        .replace("${ACCOUNT_ID}", scope.account)
        .replace("${CLUSTER_NAME}", stack.cluster_name())
        .replace("${QUEUE_NAME}", &names::interruption_queue(stack))
        .replace("${NODE_ROLE_NAME}", &Role::Node.name(stack));
    serde_json::from_str(&text).expect("the controller policies are valid JSON (tested)")
}

/// The interruption queue's policy: EventBridge (and SQS) may deliver to it; plain HTTP is
/// refused (upstream's `KarpenterInterruptionQueuePolicy`).
pub fn interruption_queue(queue_arn: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Id": "EC2InterruptionPolicy",
        "Statement": [
            {
                "Sid": "EventBridgeDelivers",
                "Effect": "Allow",
                "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn
            },
            {
                "Sid": "DenyHTTP",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}
            }
        ]
    })
}

/// What a document is, for a reader of `render --out DIR/iam/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    /// A role's trust (assume-role) policy.
    Trust,
    /// A role's identity policy.
    Identity,
    /// A resource policy (the SQS queue's).
    Resource,
}

/// One IAM document, named as `render` writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// File stem, like `shop-karpenter-trust` or `shop-karpenter-KarpenterControllerPolicy`.
    pub name: String,
    pub kind: DocKind,
    pub document: Value,
}

/// Every IAM document meshstack writes for the stack, in a stable order; `issuer` is the
/// cluster's OIDC issuer URL (a stand-in offline).
pub fn all(stack: &Stack, scope: Scope<'_>, issuer: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    for role in Role::ALL {
        let trust = match role {
            Role::Karpenter => karpenter_irsa_trust(scope.partition, scope.account, issuer),
            other => initial_trust(other),
        };
        docs.push(Document {
            name: format!("{}-trust", role.name(stack)),
            kind: DocKind::Trust,
            document: trust,
        });
    }
    docs.push(Document {
        name: format!("{}-pending-trust", Role::Karpenter.name(stack)),
        kind: DocKind::Trust,
        document: initial_trust(Role::Karpenter),
    });
    docs.push(Document {
        name: format!(
            "{}-{}",
            Role::Karpenter.name(stack),
            names::KARPENTER_POLICY
        ),
        kind: DocKind::Identity,
        document: karpenter_controller(stack, scope),
    });
    if stack.access.wants_role(false) {
        docs.push(Document {
            name: format!("{}-trust", names::attendee_role(stack)),
            kind: DocKind::Trust,
            document: attendee_trust(
                scope.partition,
                scope.account,
                &stack.access.trust_for(&stack.name),
            ),
        });
    }
    let queue = names::interruption_queue_arn(stack, scope.partition, scope.region, scope.account);
    docs.push(Document {
        name: format!("{}-queue-policy", names::interruption_queue(stack)),
        kind: DocKind::Resource,
        document: interruption_queue(&queue),
    });
    docs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReleaseVersion;

    fn scope() -> Scope<'static> {
        Scope {
            partition: "aws",
            region: "eu-west-1",
            account: "123456789012",
        }
    }

    fn as_list(v: &Value) -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
            _ => vec![],
        }
    }

    /// IAM actions that have no resource type (IAM authorises them only on `"Resource": "*"`,
    /// so scoping them to an ARN denies them), plus `arc-zonal-shift:GetManagedResource`, whose
    /// resource types are load balancers, never a cluster: upstream grants it on `*`, narrowed
    /// by the `arc-zonal-shift:ResourceIdentifier` condition. Every other action on `*` would be
    /// broader than needed. (Service Authorization Reference; the contract tests check the
    /// same with parliament's data.)
    const NO_RESOURCE_TYPE: &[&str] = &[
        "ec2:DescribeCapacityReservations",
        "ec2:DescribeImages",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceStatus",
        "ec2:DescribeInstanceTypeOfferings",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribePlacementGroups",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSpotPriceHistory",
        "ec2:DescribeSubnets",
        "pricing:GetProducts",
        "iam:ListInstanceProfiles",
        "arc-zonal-shift:GetManagedResource",
    ];

    fn every_line() -> Vec<Stack> {
        ["1.8.1", "1.10.2", "1.12.1", "1.13.0"]
            .iter()
            .map(|v| {
                let k8s = if v.starts_with("1.13") {
                    "1.36"
                } else {
                    "1.34"
                };
                Stack::parse(
                    &format!(
                        "name: shop\nkubernetes_version: '{k8s}'\nkarpenter: {{version: '{v}'}}\n"
                    ),
                    "t.yaml",
                )
                .unwrap()
            })
            .collect()
    }

    /// Least privilege: `Resource: *` only for the actions IAM defines without a resource type
    /// (and every one of those on `*`, or IAM denies it); no wildcard action anywhere.
    #[test]
    fn star_resources_are_exactly_the_actions_without_a_resource_type() {
        for stack in every_line() {
            let policy = karpenter_controller(&stack, scope());
            let text = policy.to_string();
            assert!(!text.contains("${"), "unsubstituted placeholder in {text}");
            for st in policy["Statement"].as_array().unwrap() {
                let actions = as_list(&st["Action"]);
                let resources = as_list(&st["Resource"]);
                assert!(
                    !actions.iter().any(|a| a == "*" || a.ends_with(":*")),
                    "{st}"
                );
                for a in &actions {
                    let unscoped = NO_RESOURCE_TYPE.contains(&a.as_str());
                    assert_eq!(
                        resources.iter().any(|r| r == "*"),
                        unscoped,
                        "{a} must be on Resource * exactly when IAM defines it without a \
                         resource type: {st}"
                    );
                }
            }
        }
        // The defect this guards against: ListInstanceProfiles scoped to instance-profile/*.
        let mut bad = karpenter_controller(&every_line()[0], scope());
        for st in bad["Statement"].as_array_mut().unwrap() {
            if st["Sid"] == "AllowUnscopedInstanceProfileListAction" {
                st["Resource"] = "arn:aws:iam::123456789012:instance-profile/*".into();
            }
        }
        let scoped_list = bad["Statement"].as_array().unwrap().iter().any(|st| {
            as_list(&st["Action"]).contains(&"iam:ListInstanceProfiles".to_string())
                && !as_list(&st["Resource"]).contains(&"*".to_string())
        });
        assert!(scoped_list, "the mutation is what the test above refuses");
    }

    #[test]
    fn instance_profiles_are_scoped_to_the_cluster_by_tag() {
        let policy = karpenter_controller(&every_line()[0], scope());
        for st in policy["Statement"].as_array().unwrap() {
            let actions = as_list(&st["Action"]);
            let mutating = actions.iter().any(|a| {
                a.starts_with("iam:")
                    && !a.starts_with("iam:Get")
                    && !a.starts_with("iam:List")
                    && a != "iam:PassRole"
            });
            if mutating {
                let cond = st["Condition"].to_string();
                assert!(cond.contains("kubernetes.io/cluster/shop"), "{st}");
                assert!(cond.contains("karpenter.k8s.aws/ec2nodeclass"), "{st}");
                assert!(cond.contains("topology.kubernetes.io/region"), "{st}");
            }
        }
    }

    #[test]
    fn inline_policy_fits_iams_size_limit() {
        // IAM counts a role's inline policies without whitespace, up to 10,240 characters.
        for stack in every_line() {
            let size = karpenter_controller(&stack, scope()).to_string().len();
            assert!(size < 10_240, "{}: {size}", stack.karpenter.version);
        }
    }

    #[test]
    fn every_document_is_listed_once_with_its_names_filled_in() {
        let stack = Stack::parse("name: shop\n", "t.yaml").unwrap();
        let docs = all(
            &stack,
            scope(),
            "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC",
        );
        let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "shop-cluster-trust",
                "shop-node-trust",
                "shop-karpenter-trust",
                "shop-karpenter-pending-trust",
                "shop-karpenter-KarpenterControllerPolicy",
                "shop-karpenter-queue-policy"
            ]
        );
        let irsa = docs[2].document.to_string();
        assert!(
            irsa.contains("oidc.eks.eu-west-1.amazonaws.com/id/ABC:sub"),
            "{irsa}"
        );
        assert!(irsa.contains(KARPENTER_SERVICE_ACCOUNT), "{irsa}");
        assert_eq!(
            stack.karpenter.version,
            ReleaseVersion::new(1, 14, 1),
            "the default pin"
        );
    }
}
