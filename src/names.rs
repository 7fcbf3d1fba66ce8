//! Every name meshstack derives: AWS resource names from the stack name, and the Kubernetes
//! namespaces, services and service accounts the stages, `render`, `locality`, `status` and
//! `verify` agree on. One home, so that no adapter or pure module has to import a stage to
//! learn a name, and a rename happens in one place.
//!
//! AWS names are deterministic (`<stack>-node`, `<stack>-karpenter`, ...): stages find their
//! resources by these names (IAM, SQS, EventBridge) or by tag (EC2), never only from the
//! journal.

use crate::config::Stack;

/// An IAM role meshstack manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Assumed by EKS for the control plane.
    Cluster,
    /// The nodes' role: the managed node group's and Karpenter's nodes'.
    Node,
    /// The Karpenter controller's role, assumed through IRSA.
    Karpenter,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Cluster, Role::Node, Role::Karpenter];

    /// `cluster`, `node`, `karpenter`: what follows the stack name and a dash.
    pub fn suffix(self) -> &'static str {
        match self {
            Role::Cluster => "cluster",
            Role::Node => "node",
            Role::Karpenter => "karpenter",
        }
    }

    /// `<stack>-cluster`, `<stack>-node`, `<stack>-karpenter`.
    pub fn name(self, stack: &Stack) -> String {
        format!("{}-{}", stack.name, self.suffix())
    }

    /// The role's ARN in `account`.
    pub fn arn(self, stack: &Stack, partition: &str, account: &str) -> String {
        format!("arn:{partition}:iam::{account}:role/{}", self.name(stack))
    }
}

/// What follows the stack name in the attendee role's name (`<stack>-attendee`).
pub const ATTENDEE_ROLE_SUFFIX: &str = "attendee";

/// The role workshop attendees assume to reach the stack's cluster (the `access` stage): an
/// access entry on that cluster, and no IAM permission at all.
pub fn attendee_role(stack: &Stack) -> String {
    format!("{}-{ATTENDEE_ROLE_SUFFIX}", stack.name)
}

/// Its ARN in `account`.
pub fn attendee_role_arn(stack: &Stack, partition: &str, account: &str) -> String {
    format!(
        "arn:{partition}:iam::{account}:role/{}",
        attendee_role(stack)
    )
}

/// The inline policy of the Karpenter controller role.
pub const KARPENTER_POLICY: &str = "KarpenterControllerPolicy";

/// The instance profile for the nodes of a legacy (v1alpha5) Karpenter, whose
/// AWSNodeTemplate names a profile; Karpenter 1.x makes its own profiles from the
/// EC2NodeClass's `role`.
pub fn instance_profile(stack: &Stack) -> String {
    format!("{}-karpenter-node", stack.name)
}

/// The SQS queue Karpenter reads interruption events from.
pub fn interruption_queue(stack: &Stack) -> String {
    format!("{}-karpenter", stack.name)
}

/// The queue's ARN.
pub fn interruption_queue_arn(
    stack: &Stack,
    partition: &str,
    region: &str,
    account: &str,
) -> String {
    format!(
        "arn:{partition}:sqs:{region}:{account}:{}",
        interruption_queue(stack)
    )
}

/// An EventBridge rule feeding the queue, like `<stack>-karpenter-rebalance`.
pub fn interruption_rule(stack: &Stack, suffix: &str) -> String {
    format!("{}-karpenter-{suffix}", stack.name)
}

/// The EKS managed node group.
pub fn node_group(stack: &Stack) -> String {
    format!("{}-system", stack.name)
}

/// Kubernetes namespaces.
pub mod namespace {
    /// The demo app.
    pub const APP: &str = "ecommerce";
    /// The Karpenter controller (its service account is the IRSA subject).
    pub const KARPENTER: &str = "karpenter";
    /// Istio's control plane and ingress gateway, Jaeger, and the Kiali CR.
    pub const ISTIO: &str = "istio-system";
    /// kube-prometheus-stack.
    pub const PROMETHEUS: &str = "prometheus";
    /// The Kiali operator.
    pub const KIALI_OPERATOR: &str = "kiali-operator";
    /// Where EKS keeps `aws-auth`.
    pub const KUBE_SYSTEM: &str = "kube-system";
}

/// The service account the Karpenter controller runs as, as IRSA's `sub` claim names it.
pub const KARPENTER_SERVICE_ACCOUNT: &str = "system:serviceaccount:karpenter:karpenter";

/// The helm release of kube-prometheus-stack (its services are named after it).
pub const PROMETHEUS_RELEASE: &str = "prom";
/// Jaeger's query service and the path it serves its UI under.
pub const JAEGER_QUERY_SERVICE: &str = "tracing";
pub const JAEGER_BASE_PATH: &str = "/jaeger";
/// The Deployment (and Service) the Kiali operator makes for the CR.
pub const KIALI_DEPLOYMENT: &str = "kiali";

/// The commands that reach the UIs, which are not exposed outside the cluster: (UI, command).
pub fn port_forwards() -> Vec<(&'static str, String)> {
    vec![
        (
            "kiali",
            format!(
                "kubectl -n {} port-forward svc/{KIALI_DEPLOYMENT} 20001:20001  \
                 # then open http://localhost:20001/kiali",
                namespace::ISTIO
            ),
        ),
        (
            "jaeger",
            format!(
                "kubectl -n {} port-forward svc/{JAEGER_QUERY_SERVICE} 16686:80  \
                 # then open http://localhost:16686{JAEGER_BASE_PATH}",
                namespace::ISTIO
            ),
        ),
        (
            "grafana",
            format!(
                "kubectl -n {} port-forward svc/{PROMETHEUS_RELEASE}-grafana 3000:80  \
                 # then open http://localhost:3000",
                namespace::PROMETHEUS
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_stack_name() {
        let s = Stack::parse("name: shop\n", "t.yaml").unwrap();
        let names: Vec<String> = Role::ALL.iter().map(|r| r.name(&s)).collect();
        assert_eq!(names, ["shop-cluster", "shop-node", "shop-karpenter"]);
        assert_eq!(
            Role::Node.arn(&s, "aws", "123456789012"),
            "arn:aws:iam::123456789012:role/shop-node"
        );
        assert_eq!(interruption_queue(&s), "shop-karpenter");
        assert_eq!(
            interruption_queue_arn(&s, "aws", "eu-west-1", "1"),
            "arn:aws:sqs:eu-west-1:1:shop-karpenter"
        );
        assert_eq!(
            interruption_rule(&s, "rebalance"),
            "shop-karpenter-rebalance"
        );
        assert_eq!(instance_profile(&s), "shop-karpenter-node");
        assert_eq!(
            attendee_role_arn(&s, "aws", "1"),
            "arn:aws:iam::1:role/shop-attendee"
        );
    }
}
