//! Sweeps: what the cluster makes in the account on its own, which meshstack's tags do not
//! cover and `down` must still remove, or the VPC cannot be deleted and the account keeps
//! paying: the load balancers of Services of type LoadBalancer (the Istio ingress gateway),
//! their target groups, the EC2 instances Karpenter launched, and — in the stack's VPC only —
//! the `k8s-elb-*` security groups, the network interfaces left `available`, and the VPC
//! endpoints other services put there (GuardDuty's runtime monitoring) with their security
//! groups.
//!
//! These carry the cluster's tags, not the stack's, so they are found by the cluster's own
//! conventions. Which of the described things are ours to delete is decided by pure functions
//! ([`Owner`]'s methods, table-tested below), apart from the SDK calls that describe them; how
//! each kind is deleted is a [`Kind`] (below the finders), which
//! [`Teardown::delete`](super::teardown::Teardown::delete) carries out.
//!
//! # Guarantees
//! - Nothing carrying another stack's `meshstack.io/stack` tag, or tagged as owned by another
//!   cluster, is ever selected.
//! - `kubernetes.io/cluster/<cluster>` counts only with the value `owned`: `shared` is the
//!   Kubernetes convention for "the cluster may use this, someone else owns it".
//! - Security groups, network interfaces and VPC endpoints are selected only inside the VPC
//!   they are asked for (the stack's, found by its tag), and a VPC's `default` group never.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;

use super::teardown::{Found, Kind, Verb};
use super::{is_not_found, optional, sdk_err, tags, Answer, AwsClients, AwsError, STACK_TAG};
use crate::config::Stack;

/// The in-tree cloud provider's (and EKS's, and Karpenter's) ownership tag: this prefix, the
/// cluster name, and the value `owned`.
pub const CLUSTER_TAG_PREFIX: &str = "kubernetes.io/cluster/";
/// The AWS Load Balancer Controller's tag; its value is the cluster name.
pub const ELBV2_CLUSTER_TAG: &str = "elbv2.k8s.aws/cluster";
/// Karpenter (>= 0.33) tags its instances with the NodePool that launched them.
pub const NODEPOOL_TAG: &str = "karpenter.sh/nodepool";
/// Karpenter (< 0.33) tagged them with the Provisioner instead.
pub const PROVISIONER_TAG: &str = "karpenter.sh/provisioner-name";
/// The tag by which Karpenter finds the cluster's subnets and security groups; its value is the
/// cluster name.
pub const DISCOVERY_TAG: &str = "karpenter.sh/discovery";
/// The tag EKS (and Karpenter >= 1.0) puts on what belongs to a cluster; its value is the name.
pub const EKS_CLUSTER_NAME_TAG: &str = "eks:eks-cluster-name";
/// The prefix of the security groups the in-tree cloud provider makes for classic ELBs.
pub const ELB_GROUP_PREFIX: &str = "k8s-elb-";

/// Instance states in which an instance still runs, or could be started again.
const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];
/// DescribeTags takes at most 20 load balancers per call, in both APIs.
const TAG_BATCH: usize = 20;

/// The tags Karpenter puts on the instance profiles it makes for an EC2NodeClass.
pub const NODECLASS_TAG: &str = "karpenter.k8s.aws/ec2nodeclass";
pub const REGION_TAG: &str = "topology.kubernetes.io/region";

/// A resource's tags, as the pure selection functions see them (a missing value is `""`).
pub type Tags = BTreeMap<String, String>;

/// Whose leftovers a sweep looks for: a stack and its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub stack: &'a str,
    pub cluster: &'a str,
}

/// A security group as described, for [`Owner::security_group`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub vpc_id: String,
    pub tags: Tags,
}

/// A network interface as described, for [`Owner::interface`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub id: String,
    pub vpc_id: String,
    pub status: String,
    pub description: String,
    pub tags: Tags,
}

impl<'a> Owner<'a> {
    pub fn of(stack: &'a Stack) -> Self {
        Owner {
            stack: &stack.name,
            cluster: stack.cluster_name(),
        }
    }

    fn owned_by_cluster(&self, tags: &Tags) -> bool {
        tags.get(&format!("{CLUSTER_TAG_PREFIX}{}", self.cluster))
            .is_some_and(|v| v == "owned")
    }

    /// Tagged for another stack, or as owned by another cluster (and not also by ours).
    fn someone_elses(&self, tags: &Tags) -> bool {
        if tags.get(STACK_TAG).is_some_and(|s| s != self.stack) {
            return true;
        }
        if self.owned_by_cluster(tags) {
            return false;
        }
        let other_cluster = tags.iter().any(|(k, v)| {
            k.strip_prefix(CLUSTER_TAG_PREFIX)
                .is_some_and(|c| c != self.cluster && v == "owned")
        });
        other_cluster
            || tags
                .get(ELBV2_CLUSTER_TAG)
                .is_some_and(|c| c != self.cluster)
    }

    /// Whether a load balancer (classic or v2) with these tags is the cluster's: the in-tree
    /// provider tags `kubernetes.io/cluster/<cluster>=owned`, the AWS Load Balancer Controller
    /// `elbv2.k8s.aws/cluster=<cluster>`. Returns why, for `plan`.
    pub fn load_balancer(&self, tags: &Tags) -> Option<&'static str> {
        if self.someone_elses(tags) {
            None
        } else if self.owned_by_cluster(tags) {
            Some("tagged kubernetes.io/cluster/<cluster>=owned")
        } else if tags.get(ELBV2_CLUSTER_TAG).map(String::as_str) == Some(self.cluster) {
            Some("tagged elbv2.k8s.aws/cluster=<cluster>")
        } else {
            None
        }
    }

    /// Whether a target group with these tags is one of the cluster's load balancers': both the
    /// in-tree service controller (`ensureTargetGroup` in kubernetes/cloud-provider-aws
    /// `pkg/providers/v1/aws_loadbalancer.go`: the load balancer's own tags,
    /// `kubernetes.io/service-name=<namespace>/<name>` and
    /// `kubernetes.io/cluster/<cluster>=owned`) and the AWS Load Balancer Controller
    /// (`elbv2.k8s.aws/cluster=<cluster>`, `service.k8s.aws/stack=<namespace>/<name>`) tag
    /// them as they tag the load balancer. Returns why, for `plan`.
    pub fn target_group(&self, tags: &Tags) -> Option<&'static str> {
        if self.someone_elses(tags) {
            None
        } else if self.owned_by_cluster(tags) {
            Some("a load balancer's target group, tagged kubernetes.io/cluster/<cluster>=owned")
        } else if tags.get(ELBV2_CLUSTER_TAG).map(String::as_str) == Some(self.cluster) {
            Some("a load balancer's target group, tagged elbv2.k8s.aws/cluster=<cluster>")
        } else {
            None
        }
    }

    /// Whether a VPC endpoint is one to delete before the stack's VPC `vpc_id`: any endpoint
    /// in that VPC that is not gone already and not tagged for another stack or cluster.
    /// meshstack makes none; another service does (GuardDuty's runtime monitoring adds one to
    /// every VPC with a monitored EKS cluster), and the subnets and the VPC cannot be deleted
    /// while it is there.
    pub fn vpc_endpoint(&self, vpc_id: &str, e: &Endpoint) -> Option<&'static str> {
        (e.vpc_id == vpc_id
            && !ENDPOINT_GONE.contains(&e.state.as_str())
            && !self.someone_elses(&e.tags))
        .then_some(
            "not meshstack's: a VPC endpoint another service (GuardDuty's runtime monitoring, \
                 say) put in the stack's VPC; the VPC cannot be deleted while it is there",
        )
    }

    /// Whether a security group used by a VPC endpoint [`Owner::vpc_endpoint`] selected goes
    /// with it (GuardDuty's `GuardDutyManagedSecurityGroup-<vpc>`): in the stack's VPC, not
    /// the `default` group, not another stack's or cluster's.
    pub fn endpoint_group(&self, vpc_id: &str, g: &Group) -> Option<&'static str> {
        (g.vpc_id == vpc_id && g.name != "default" && !self.someone_elses(&g.tags)).then_some(
            "not meshstack's: the security group of a VPC endpoint in the stack's VPC; the VPC \
             cannot be deleted while it is there",
        )
    }

    /// Whether an instance in `state` with these tags was launched by Karpenter for this
    /// cluster (or stack) and still runs or could run again.
    pub fn instance(&self, state: &str, tags: &Tags) -> Option<&'static str> {
        let karpenter = tags.contains_key(NODEPOOL_TAG) || tags.contains_key(PROVISIONER_TAG);
        let is = |key: &str, want: &str| tags.get(key).is_some_and(|v| v == want);
        let for_us = self.owned_by_cluster(tags)
            || is(DISCOVERY_TAG, self.cluster)
            || is(EKS_CLUSTER_NAME_TAG, self.cluster)
            || is(STACK_TAG, self.stack);
        (LIVE_STATES.contains(&state) && karpenter && for_us && !self.someone_elses(tags))
            .then_some("launched by Karpenter for the cluster")
    }

    /// Whether an instance profile is one Karpenter made for this cluster in `region`: it tags
    /// them `kubernetes.io/cluster/<cluster>=owned`, `karpenter.k8s.aws/ec2nodeclass` and
    /// `topology.kubernetes.io/region` (its IAM policy allows no others).
    pub fn instance_profile(&self, region: &str, tags: &Tags) -> Option<&'static str> {
        (self.owned_by_cluster(tags)
            && tags.contains_key(NODECLASS_TAG)
            && tags.get(REGION_TAG).is_some_and(|r| r == region)
            && !self.someone_elses(tags))
        .then_some("made by Karpenter for the cluster")
    }

    /// Whether an instance profile's name or path could be Karpenter's for this cluster:
    /// `<cluster>_<hash>`, under `/karpenter/<region>/<cluster>/` when Karpenter uses paths.
    /// Only these have their tags read.
    fn maybe_karpenter_profile(&self, region: &str, name: &str, path: &str) -> bool {
        name.strip_prefix(self.cluster)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|hash| !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_digit()))
            || path.starts_with(&format!("/karpenter/{region}/{}/", self.cluster))
    }

    /// Whether a security group is a load balancer's leftover in the stack's VPC `vpc_id`.
    pub fn security_group(&self, vpc_id: &str, g: &Group) -> Option<&'static str> {
        if g.vpc_id != vpc_id || g.name == "default" || self.someone_elses(&g.tags) {
            None
        } else if g.name.starts_with(ELB_GROUP_PREFIX) {
            Some("named k8s-elb-* in the stack's VPC")
        } else if self.owned_by_cluster(&g.tags) {
            Some("tagged kubernetes.io/cluster/<cluster>=owned in the stack's VPC")
        } else if g.tags.get(ELBV2_CLUSTER_TAG).map(String::as_str) == Some(self.cluster) {
            Some("tagged elbv2.k8s.aws/cluster=<cluster> in the stack's VPC")
        } else {
            None
        }
    }

    /// Whether a network interface is a detached leftover in the stack's VPC `vpc_id`.
    pub fn interface(&self, vpc_id: &str, i: &Interface) -> Option<&'static str> {
        (i.vpc_id == vpc_id && i.status == "available" && !self.someone_elses(&i.tags))
            .then_some("available (detached) in the stack's VPC")
    }
}

/// A VPC endpoint as described, for [`Owner::vpc_endpoint`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub vpc_id: String,
    pub state: String,
    pub service: String,
    pub tags: Tags,
}

/// States of a VPC endpoint that is gone, or going on its own (nothing to delete; the
/// subnets' and the VPC's `DependencyViolation` retries wait for a `deleting` one).
const ENDPOINT_GONE: &[&str] = &["deleted", "deleting"];

fn name_tag(tags: &Tags) -> String {
    tags.get("Name").cloned().unwrap_or_default()
}

/// The cluster's load balancers, classic and v2, by their tags, then the target groups of its
/// v2 ones ([`find_target_groups`]), in deletion order: a target group a listener still
/// forwards to cannot be deleted, and the listeners go with their load balancer.
pub async fn find_load_balancers(
    aws: &AwsClients,
    owner: Owner<'_>,
) -> Result<Vec<Found>, AwsError> {
    let mut found = Vec::new();

    let mut names = Vec::new();
    let mut pages = aws.elb.describe_load_balancers().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("elb:DescribeLoadBalancers"))?;
        names.extend(
            page.load_balancer_descriptions()
                .iter()
                .filter_map(|d| d.load_balancer_name().map(str::to_string)),
        );
    }
    for batch in names.chunks(TAG_BATCH) {
        for (name, tags) in classic_tags(aws, batch).await? {
            if let Some(why) = owner.load_balancer(&tags) {
                found.push(Found {
                    kind: CLASSIC_LB,
                    id: name,
                    name: String::new(),
                    why,
                });
            }
        }
    }

    let mut lbs: Vec<(String, String)> = Vec::new();
    let mut pages = aws.elbv2.describe_load_balancers().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("elbv2:DescribeLoadBalancers"))?;
        lbs.extend(page.load_balancers().iter().filter_map(|lb| {
            Some((
                lb.load_balancer_arn()?.to_string(),
                lb.load_balancer_name().unwrap_or_default().to_string(),
            ))
        }));
    }
    for batch in lbs.chunks(TAG_BATCH) {
        let arns: Vec<String> = batch.iter().map(|(arn, _)| arn.clone()).collect();
        let req = aws.elbv2.describe_tags().set_resource_arns(Some(arns));
        // One of the batch went away since it was listed; the next `down` looks again.
        let Some(out) = req.send().await.lookup("elbv2:DescribeTags")? else {
            continue;
        };
        for d in out.tag_descriptions() {
            let Some(arn) = d.resource_arn() else {
                continue;
            };
            if let Some(why) = owner.load_balancer(&tags::map(d.tags())) {
                let name = batch
                    .iter()
                    .find(|(a, _)| a == arn)
                    .map(|(_, n)| n.clone())
                    .unwrap_or_default();
                found.push(Found {
                    kind: LB_V2,
                    id: arn.to_string(),
                    name,
                    why,
                });
            }
        }
    }
    found.extend(find_target_groups(aws, owner).await?);
    Ok(found)
}

/// The target groups of the cluster's NLBs and ALBs, by their tags ([`Owner::target_group`]).
/// Deleting a load balancer leaves its target groups behind: the controller that made them
/// deletes them after the load balancer, and when the sweep deletes the load balancer (the
/// cluster's API unreachable, or the controller gone first) nothing else would.
pub async fn find_target_groups(
    aws: &AwsClients,
    owner: Owner<'_>,
) -> Result<Vec<Found>, AwsError> {
    let mut groups: Vec<(String, String)> = Vec::new();
    let mut pages = aws.elbv2.describe_target_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("elbv2:DescribeTargetGroups"))?;
        groups.extend(page.target_groups().iter().filter_map(|g| {
            Some((
                g.target_group_arn()?.to_string(),
                g.target_group_name().unwrap_or_default().to_string(),
            ))
        }));
    }
    let mut found = Vec::new();
    for batch in groups.chunks(TAG_BATCH) {
        let arns: Vec<String> = batch.iter().map(|(arn, _)| arn.clone()).collect();
        let req = aws.elbv2.describe_tags().set_resource_arns(Some(arns));
        // One of the batch went away since it was listed; the next `down` looks again.
        let Some(out) = req.send().await.lookup("elbv2:DescribeTags")? else {
            continue;
        };
        for d in out.tag_descriptions() {
            let Some(arn) = d.resource_arn() else {
                continue;
            };
            if let Some(why) = owner.target_group(&tags::map(d.tags())) {
                let name = batch.iter().find(|(a, _)| a == arn).map(|(_, n)| n.clone());
                found.push(Found {
                    kind: TARGET_GROUP,
                    id: arn.to_string(),
                    name: name.unwrap_or_default(),
                    why,
                });
            }
        }
    }
    Ok(found)
}

/// The VPC endpoints in VPC `vpc_id` that meshstack did not make and must delete before the
/// VPC ([`Owner::vpc_endpoint`]), then the security groups they use
/// ([`Owner::endpoint_group`]), in deletion order: a group goes once its endpoint has.
pub async fn find_vpc_endpoints(
    aws: &AwsClients,
    owner: Owner<'_>,
    vpc_id: &str,
) -> Result<Vec<Found>, AwsError> {
    let in_vpc = Filter::builder().name("vpc-id").values(vpc_id).build();
    let mut endpoints = Vec::new();
    let mut group_ids: Vec<String> = Vec::new();
    let mut pages = aws
        .ec2
        .describe_vpc_endpoints()
        .filters(in_vpc)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("ec2:DescribeVpcEndpoints"))?;
        for e in page.vpc_endpoints() {
            let endpoint = Endpoint {
                id: e.vpc_endpoint_id().unwrap_or_default().to_string(),
                vpc_id: e.vpc_id().unwrap_or_default().to_string(),
                state: e
                    .state()
                    .map(|s| s.as_str().to_ascii_lowercase())
                    .unwrap_or_default(),
                service: e.service_name().unwrap_or_default().to_string(),
                tags: tags::map(e.tags()),
            };
            // The VPC again, client-side: the filter is all that keeps another VPC's
            // endpoints out, and an emulator may ignore it.
            if let Some(why) = owner.vpc_endpoint(vpc_id, &endpoint) {
                for g in e.groups() {
                    let id = g.group_id().unwrap_or_default().to_string();
                    if !id.is_empty() && !group_ids.contains(&id) {
                        group_ids.push(id);
                    }
                }
                endpoints.push(Found {
                    kind: VPC_ENDPOINT,
                    id: endpoint.id,
                    name: endpoint.service,
                    why,
                });
            }
        }
    }
    let mut groups = Vec::new();
    if !group_ids.is_empty() {
        let req = aws
            .ec2
            .describe_security_groups()
            .set_group_ids(Some(group_ids));
        // A group deleted since the endpoint was described: nothing left to delete.
        let described = req.send().await.lookup("ec2:DescribeSecurityGroups")?;
        for g in described.iter().flat_map(|o| o.security_groups()) {
            let group = Group {
                id: g.group_id().unwrap_or_default().to_string(),
                name: g.group_name().unwrap_or_default().to_string(),
                vpc_id: g.vpc_id().unwrap_or_default().to_string(),
                tags: tags::map(g.tags()),
            };
            if let Some(why) = owner.endpoint_group(vpc_id, &group) {
                groups.push(Found {
                    kind: SECURITY_GROUP,
                    id: group.id,
                    name: group.name,
                    why,
                });
            }
        }
    }
    endpoints.extend(groups);
    Ok(endpoints)
}

/// The tags of classic load balancers `names`. DescribeTags fails the whole batch if one of
/// them was deleted since it was listed; then ask one at a time, skipping the missing.
async fn classic_tags(aws: &AwsClients, names: &[String]) -> Result<Vec<(String, Tags)>, AwsError> {
    let describe = |names: Vec<String>| async {
        let out = aws
            .elb
            .describe_tags()
            .set_load_balancer_names(Some(names))
            .send()
            .await
            .map_err(sdk_err("elb:DescribeTags"))?;
        Ok::<_, AwsError>(
            out.tag_descriptions()
                .iter()
                .filter_map(|d| Some((d.load_balancer_name()?.to_string(), tags::map(d.tags()))))
                .collect::<Vec<_>>(),
        )
    };
    match describe(names.to_vec()).await {
        Err(e) if is_not_found(&e) => {
            let mut all = Vec::new();
            for name in names {
                if let Some(tags) = optional(describe(vec![name.clone()]).await)? {
                    all.extend(tags);
                }
            }
            Ok(all)
        }
        other => other,
    }
}

/// The instances Karpenter launched for the cluster that are not terminated yet.
pub async fn find_karpenter_instances(
    aws: &AwsClients,
    owner: Owner<'_>,
) -> Result<Vec<Found>, AwsError> {
    let mut found = Vec::new();
    let mut pages = aws
        .ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag-key")
                .values(NODEPOOL_TAG)
                .values(PROVISIONER_TAG)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("ec2:DescribeInstances"))?;
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            let tags = tags::map(i.tags());
            let state = i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str())
                .unwrap_or("");
            if let (Some(why), Some(id)) = (owner.instance(state, &tags), i.instance_id()) {
                found.push(Found {
                    kind: INSTANCE,
                    id: id.to_string(),
                    name: name_tag(&tags),
                    why,
                });
            }
        }
    }
    Ok(found)
}

/// The instance profiles Karpenter made for the cluster in `region` ([`Owner::instance_profile`]).
/// Karpenter removes them itself when an EC2NodeClass goes; these are what it could not remove
/// (its controller gone first, the cluster's API unreachable).
pub async fn find_karpenter_instance_profiles(
    aws: &AwsClients,
    owner: Owner<'_>,
    region: &str,
) -> Result<Vec<Found>, AwsError> {
    let mut found = Vec::new();
    let mut pages = aws.iam.list_instance_profiles().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("iam:ListInstanceProfiles"))?;
        for p in page.instance_profiles() {
            let name = p.instance_profile_name();
            if !owner.maybe_karpenter_profile(region, name, p.path()) {
                continue;
            }
            // IAM lists profiles without their tags; GetInstanceProfile has them.
            let req = aws.iam.get_instance_profile().instance_profile_name(name);
            let got = req.send().await.lookup("iam:GetInstanceProfile")?;
            let Some(profile) = got.and_then(|g| g.instance_profile) else {
                continue;
            };
            if let Some(why) = owner.instance_profile(region, &tags::map(profile.tags())) {
                found.push(Found {
                    kind: INSTANCE_PROFILE,
                    id: name.to_string(),
                    name: String::new(),
                    why,
                });
            }
        }
    }
    Ok(found)
}

/// The leftovers in VPC `vpc_id`: available network interfaces first, then the security
/// groups (which interfaces may still reference), in deletion order.
pub async fn find_in_vpc(
    aws: &AwsClients,
    owner: Owner<'_>,
    vpc_id: &str,
) -> Result<Vec<Found>, AwsError> {
    let in_vpc = || Filter::builder().name("vpc-id").values(vpc_id).build();
    let mut found = Vec::new();

    let mut pages = aws
        .ec2
        .describe_network_interfaces()
        .filters(in_vpc())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("ec2:DescribeNetworkInterfaces"))?;
        for n in page.network_interfaces() {
            let eni = Interface {
                id: n.network_interface_id().unwrap_or_default().to_string(),
                vpc_id: n.vpc_id().unwrap_or_default().to_string(),
                status: n
                    .status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                description: n.description().unwrap_or_default().to_string(),
                tags: tags::map(n.tag_set()),
            };
            if let Some(why) = owner.interface(vpc_id, &eni) {
                found.push(Found {
                    kind: NETWORK_INTERFACE,
                    id: eni.id,
                    name: eni.description,
                    why,
                });
            }
        }
    }

    let mut pages = aws
        .ec2
        .describe_security_groups()
        .filters(in_vpc())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("ec2:DescribeSecurityGroups"))?;
        for g in page.security_groups() {
            let group = Group {
                id: g.group_id().unwrap_or_default().to_string(),
                name: g.group_name().unwrap_or_default().to_string(),
                vpc_id: g.vpc_id().unwrap_or_default().to_string(),
                tags: tags::map(g.tags()),
            };
            if let Some(why) = owner.security_group(vpc_id, &group) {
                found.push(Found {
                    kind: SECURITY_GROUP,
                    id: group.id,
                    name: group.name,
                    why,
                });
            }
        }
    }
    Ok(found)
}

/// "Not yet" answers while an interface or a group is still in use.
const IN_USE: &[&str] = &["DependencyViolation", "InvalidNetworkInterface.InUse"];

/// A classic load balancer, by name. It takes a while to go, and holds its interfaces until
/// then (the VPC sweep retries what they hold up).
pub const CLASSIC_LB: &Kind = &Kind {
    present: Some(|aws, names| {
        Box::pin(each_present(names, move |name| async move {
            let req = aws.elb.describe_load_balancers().load_balancer_names(name);
            let out = req.send().await.lookup("elb:DescribeLoadBalancers")?;
            Ok(out.is_some_and(|o| !o.load_balancer_descriptions().is_empty()))
        }))
    }),
    ..Kind::new(
        "classic-load-balancer",
        "classic load balancer",
        |aws, name| {
            let req = aws.elb.delete_load_balancer().load_balancer_name(name);
            Box::pin(async { req.send().await.ack("elb:DeleteLoadBalancer") })
        },
    )
};

/// An NLB or ALB, by ARN; like [`CLASSIC_LB`].
pub const LB_V2: &Kind = &Kind {
    present: Some(|aws, arns| {
        Box::pin(each_present(arns, move |arn| async move {
            let req = aws.elbv2.describe_load_balancers().load_balancer_arns(arn);
            let out = req.send().await.lookup("elbv2:DescribeLoadBalancers")?;
            Ok(out.is_some_and(|o| !o.load_balancers().is_empty()))
        }))
    }),
    ..Kind::new("load-balancer", "load balancer", |aws, arn| {
        let req = aws.elbv2.delete_load_balancer().load_balancer_arn(arn);
        Box::pin(async { req.send().await.ack("elbv2:DeleteLoadBalancer") })
    })
};

/// A target group of an NLB or ALB, by ARN; in use until its load balancer's listeners are gone.
pub const TARGET_GROUP: &Kind = &Kind {
    retry: &["ResourceInUse"],
    ..Kind::new("target-group", "target group", |aws, arn| {
        let req = aws.elbv2.delete_target_group().target_group_arn(arn);
        Box::pin(async { req.send().await.ack("elbv2:DeleteTargetGroup") })
    })
};

/// A VPC endpoint in the stack's VPC. EC2 takes a while to remove one (it goes `deleting`,
/// its interfaces with it), so the teardown waits for it before deleting its security groups.
pub const VPC_ENDPOINT: &Kind = &Kind {
    present: Some(|aws, ids| Box::pin(endpoints_present(aws, ids))),
    ..Kind::new("vpc-endpoint", "VPC endpoint", |aws, id| {
        Box::pin(delete_vpc_endpoint(aws, id))
    })
};

/// DeleteVpcEndpoints answers success with the endpoints it could not delete listed in
/// `Unsuccessful`: that is this one's error.
async fn delete_vpc_endpoint(aws: &AwsClients, id: &str) -> Result<(), AwsError> {
    const OP: &str = "ec2:DeleteVpcEndpoints";
    let req = aws.ec2.delete_vpc_endpoints().vpc_endpoint_ids(id);
    let out = req.send().await.map_err(sdk_err(OP))?;
    match out.unsuccessful().iter().find_map(|u| u.error()) {
        None => Ok(()),
        Some(e) => Err(AwsError::new(
            OP,
            e.code().map(str::to_string),
            e.message().unwrap_or_default(),
        )),
    }
}

async fn endpoints_present(aws: &AwsClients, ids: &[String]) -> Result<Vec<String>, AwsError> {
    let mut there = Vec::new();
    for id in ids {
        let req = aws.ec2.describe_vpc_endpoints().vpc_endpoint_ids(id);
        let Some(out) = req.send().await.lookup("ec2:DescribeVpcEndpoints")? else {
            continue;
        };
        let state = |e: &aws_sdk_ec2::types::VpcEndpoint| {
            e.state().map(|s| s.as_str().to_ascii_lowercase())
        };
        if out
            .vpc_endpoints()
            .iter()
            .any(|e| state(e).as_deref() != Some("deleted"))
        {
            there.push(id.clone());
        }
    }
    Ok(there)
}

/// An instance Karpenter launched, terminated one call each: a single protected instance fails
/// a batch call as a whole.
pub const INSTANCE: &Kind = &Kind {
    verb: Verb::Terminate,
    present: Some(|aws, ids| Box::pin(instances_present(aws, ids))),
    ..Kind::new("ec2-instance", "Karpenter instance", |aws, id| {
        let req = aws.ec2.terminate_instances().instance_ids(id);
        Box::pin(async { req.send().await.ack("ec2:TerminateInstances") })
    })
};

/// An instance profile Karpenter made, by name; its role is removed first.
pub const INSTANCE_PROFILE: &Kind = &Kind {
    detach: Some(|aws, name| Box::pin(remove_profile_roles(aws, name))),
    ..Kind::new("instance-profile", "instance profile", |aws, name| {
        let req = aws
            .iam
            .delete_instance_profile()
            .instance_profile_name(name);
        Box::pin(async { req.send().await.ack("iam:DeleteInstanceProfile") })
    })
};

/// A network interface left `available` in the stack's VPC.
pub const NETWORK_INTERFACE: &Kind = &Kind {
    retry: IN_USE,
    ..Kind::new("network-interface", "network interface", |aws, id| {
        let req = aws.ec2.delete_network_interface().network_interface_id(id);
        Box::pin(async { req.send().await.ack("ec2:DeleteNetworkInterface") })
    })
};

/// A load balancer's security group in the stack's VPC; interfaces may still reference it.
pub const SECURITY_GROUP: &Kind = &Kind {
    retry: IN_USE,
    ..Kind::new("security-group", "security group", |aws, id| {
        let req = aws.ec2.delete_security_group().group_id(id);
        Box::pin(async { req.send().await.ack("ec2:DeleteSecurityGroup") })
    })
};

/// Which of `ids` are still there, asking `exists` about each.
async fn each_present<'a, F, Fut>(ids: &'a [String], exists: F) -> Result<Vec<String>, AwsError>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<bool, AwsError>>,
{
    let mut there = Vec::new();
    for id in ids {
        if exists(id).await? {
            there.push(id.clone());
        }
    }
    Ok(there)
}

async fn instances_present(aws: &AwsClients, ids: &[String]) -> Result<Vec<String>, AwsError> {
    let req = aws
        .ec2
        .describe_instances()
        .set_instance_ids(Some(ids.to_vec()));
    let Some(out) = req.send().await.lookup("ec2:DescribeInstances")? else {
        return Ok(Vec::new());
    };
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect())
}

/// Take the roles out of instance profile `name` (IAM refuses to delete it with a role in it).
async fn remove_profile_roles(aws: &AwsClients, name: &str) -> Result<(), AwsError> {
    let profile = aws
        .iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .map_err(sdk_err("iam:GetInstanceProfile"))?;
    for role in profile
        .instance_profile()
        .map(|p| p.roles())
        .unwrap_or_default()
    {
        let req = aws.iam.remove_role_from_instance_profile();
        let req = req.instance_profile_name(name).role_name(role.role_name());
        req.send().await.gone("iam:RemoveRoleFromInstanceProfile")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: Owner<'static> = Owner {
        stack: "demo",
        cluster: "demo",
    };

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn instance_profiles_are_karpenters_for_this_cluster_and_region_only() {
        let karpenter = |extra: &[(&str, &str)]| {
            let mut t = tags(&[
                ("kubernetes.io/cluster/demo", "owned"),
                ("karpenter.k8s.aws/ec2nodeclass", "ecommerce"),
                ("topology.kubernetes.io/region", "us-east-1"),
                ("eks:eks-cluster-name", "demo"),
            ]);
            for (k, v) in extra {
                match v.is_empty() {
                    true => t.remove(*k),
                    false => t.insert(k.to_string(), v.to_string()),
                };
            }
            t
        };
        for (case, t, ours) in [
            ("Karpenter's", karpenter(&[]), true),
            (
                "another region's",
                karpenter(&[("topology.kubernetes.io/region", "eu-west-1")]),
                false,
            ),
            (
                "no node class",
                karpenter(&[("karpenter.k8s.aws/ec2nodeclass", "")]),
                false,
            ),
            (
                "shared, not owned",
                karpenter(&[("kubernetes.io/cluster/demo", "shared")]),
                false,
            ),
            (
                "another stack's",
                karpenter(&[("meshstack.io/stack", "other")]),
                false,
            ),
            ("untagged", tags(&[]), false),
        ] {
            assert_eq!(
                OWNER.instance_profile("us-east-1", &t).is_some(),
                ours,
                "{case}"
            );
        }
        for (name, path, candidate) in [
            ("demo_12345678901234", "/", true),
            ("x", "/karpenter/us-east-1/demo/uid/", true),
            ("demo_abc", "/", false),
            ("demo-karpenter-node", "/", false),
            ("demo2_123", "/", false),
            ("x", "/karpenter/us-east-1/demo2/uid/", false),
        ] {
            assert_eq!(
                OWNER.maybe_karpenter_profile("us-east-1", name, path),
                candidate,
                "{name} {path}"
            );
        }
    }

    #[test]
    fn load_balancers_are_the_clusters_by_its_tags_only() {
        for (case, t, ours) in [
            (
                "in-tree, owned",
                vec![("kubernetes.io/cluster/demo", "owned")],
                true,
            ),
            (
                "lb controller",
                vec![("elbv2.k8s.aws/cluster", "demo")],
                true,
            ),
            (
                "lb controller with both tags",
                vec![
                    ("elbv2.k8s.aws/cluster", "demo"),
                    ("kubernetes.io/cluster/demo", "owned"),
                ],
                true,
            ),
            (
                "shared is not owned",
                vec![("kubernetes.io/cluster/demo", "shared")],
                false,
            ),
            (
                "another cluster",
                vec![("kubernetes.io/cluster/other", "owned")],
                false,
            ),
            (
                "another cluster, v2",
                vec![("elbv2.k8s.aws/cluster", "other")],
                false,
            ),
            (
                "a cluster name sharing a prefix",
                vec![("kubernetes.io/cluster/demo2", "owned")],
                false,
            ),
            ("untagged", vec![], false),
            ("only the stack tag", vec![(STACK_TAG, "demo")], false),
            (
                "another stack's",
                vec![
                    ("kubernetes.io/cluster/demo", "owned"),
                    (STACK_TAG, "other"),
                ],
                false,
            ),
        ] {
            assert_eq!(
                OWNER.load_balancer(&tags(&t)).is_some(),
                ours,
                "{case}: {t:?}"
            );
        }
    }

    #[test]
    fn instances_are_karpenters_for_this_cluster_and_alive() {
        let pool = (NODEPOOL_TAG, "ecommerce");
        let owned = ("kubernetes.io/cluster/demo", "owned");
        for (case, state, t, ours) in [
            ("nodepool, cluster tag", "running", vec![pool, owned], true),
            (
                "legacy provisioner, discovery tag",
                "running",
                vec![(PROVISIONER_TAG, "default"), (DISCOVERY_TAG, "demo")],
                true,
            ),
            (
                "eks cluster-name tag",
                "running",
                vec![pool, (EKS_CLUSTER_NAME_TAG, "demo")],
                true,
            ),
            (
                "stack tag",
                "running",
                vec![pool, (STACK_TAG, "demo")],
                true,
            ),
            ("pending", "pending", vec![pool, owned], true),
            ("stopping", "stopping", vec![pool, owned], true),
            ("stopped", "stopped", vec![pool, owned], true),
            (
                "shutting down already",
                "shutting-down",
                vec![pool, owned],
                false,
            ),
            ("terminated", "terminated", vec![pool, owned], false),
            (
                "not Karpenter's (managed node group)",
                "running",
                vec![owned],
                false,
            ),
            ("Karpenter's, no cluster tag", "running", vec![pool], false),
            (
                "another cluster",
                "running",
                vec![pool, ("kubernetes.io/cluster/other", "owned")],
                false,
            ),
            (
                "another cluster's discovery",
                "running",
                vec![pool, (DISCOVERY_TAG, "other")],
                false,
            ),
            (
                "another stack",
                "running",
                vec![pool, (STACK_TAG, "other")],
                false,
            ),
            (
                "our cluster tag but another stack's",
                "running",
                vec![pool, owned, (STACK_TAG, "other")],
                false,
            ),
            ("untagged", "running", vec![], false),
        ] {
            assert_eq!(
                OWNER.instance(state, &tags(&t)).is_some(),
                ours,
                "{case}: {state} {t:?}"
            );
        }
    }

    #[test]
    fn security_groups_only_in_the_stacks_vpc_and_never_default() {
        let g = |name: &str, vpc: &str, t: &[(&str, &str)]| Group {
            id: "sg-1".into(),
            name: name.into(),
            vpc_id: vpc.into(),
            tags: tags(t),
        };
        for (case, group, ours) in [
            ("k8s-elb-*", g("k8s-elb-abc123", "vpc-ours", &[]), true),
            (
                "cluster-owned",
                g(
                    "eks-cluster-sg-demo",
                    "vpc-ours",
                    &[("kubernetes.io/cluster/demo", "owned")],
                ),
                true,
            ),
            (
                "lb controller's",
                g(
                    "k8s-traffic-demo-1a2b",
                    "vpc-ours",
                    &[("elbv2.k8s.aws/cluster", "demo")],
                ),
                true,
            ),
            (
                "k8s-elb-* in another VPC",
                g("k8s-elb-other", "vpc-other", &[]),
                false,
            ),
            (
                "cluster-owned in another VPC",
                g("x", "vpc-other", &[("kubernetes.io/cluster/demo", "owned")]),
                false,
            ),
            (
                "the default group, even if tagged",
                g(
                    "default",
                    "vpc-ours",
                    &[("kubernetes.io/cluster/demo", "owned")],
                ),
                false,
            ),
            ("someone's group", g("web", "vpc-ours", &[]), false),
            (
                "shared with the cluster",
                g(
                    "web",
                    "vpc-ours",
                    &[("kubernetes.io/cluster/demo", "shared")],
                ),
                false,
            ),
            (
                "another stack's k8s-elb-*",
                g("k8s-elb-x", "vpc-ours", &[(STACK_TAG, "other")]),
                false,
            ),
            (
                "another cluster's k8s-elb-*",
                g(
                    "k8s-elb-x",
                    "vpc-ours",
                    &[("kubernetes.io/cluster/other", "owned")],
                ),
                false,
            ),
        ] {
            assert_eq!(
                OWNER.security_group("vpc-ours", &group).is_some(),
                ours,
                "{case}: {group:?}"
            );
        }
    }

    #[test]
    fn interfaces_only_available_ones_in_the_stacks_vpc() {
        let i = |vpc: &str, status: &str, t: &[(&str, &str)]| Interface {
            id: "eni-1".into(),
            vpc_id: vpc.into(),
            status: status.into(),
            description: "aws-K8S-i-0123".into(),
            tags: tags(t),
        };
        for (case, eni, ours) in [
            ("available", i("vpc-ours", "available", &[]), true),
            (
                "the CNI's, tagged for the cluster",
                i(
                    "vpc-ours",
                    "available",
                    &[("cluster.k8s.amazonaws.com/name", "demo")],
                ),
                true,
            ),
            ("in use", i("vpc-ours", "in-use", &[]), false),
            ("attaching", i("vpc-ours", "attaching", &[]), false),
            ("another VPC", i("vpc-other", "available", &[]), false),
            (
                "another stack's",
                i("vpc-ours", "available", &[(STACK_TAG, "other")]),
                false,
            ),
        ] {
            assert_eq!(
                OWNER.interface("vpc-ours", &eni).is_some(),
                ours,
                "{case}: {eni:?}"
            );
        }
    }

    #[test]
    fn target_groups_are_the_clusters_load_balancers_by_the_same_tags() {
        let service = (
            "kubernetes.io/service-name",
            "istio-system/istio-ingressgateway",
        );
        for (case, t, ours) in [
            (
                "in-tree NLB's",
                vec![("kubernetes.io/cluster/demo", "owned"), service],
                true,
            ),
            (
                "lb controller's",
                vec![
                    ("elbv2.k8s.aws/cluster", "demo"),
                    ("service.k8s.aws/stack", "istio-system/istio-ingressgateway"),
                ],
                true,
            ),
            ("only a service name", vec![service], false),
            (
                "shared",
                vec![("kubernetes.io/cluster/demo", "shared")],
                false,
            ),
            (
                "another cluster's",
                vec![("kubernetes.io/cluster/other", "owned"), service],
                false,
            ),
            (
                "another stack's",
                vec![
                    ("kubernetes.io/cluster/demo", "owned"),
                    (STACK_TAG, "other"),
                ],
                false,
            ),
            ("untagged", vec![], false),
        ] {
            assert_eq!(
                OWNER.target_group(&tags(&t)).is_some(),
                ours,
                "{case}: {t:?}"
            );
        }
    }

    #[test]
    fn endpoints_and_their_groups_only_in_the_stacks_vpc() {
        let e = |vpc: &str, state: &str, t: &[(&str, &str)]| Endpoint {
            id: "vpce-1".into(),
            vpc_id: vpc.into(),
            state: state.into(),
            service: "com.amazonaws.us-east-1.guardduty-data".into(),
            tags: tags(t),
        };
        let guardduty = [("GuardDutyManaged", "true")];
        for (case, endpoint, ours) in [
            ("GuardDuty's", e("vpc-ours", "available", &guardduty), true),
            ("untagged", e("vpc-ours", "available", &[]), true),
            ("pending", e("vpc-ours", "pending", &[]), true),
            ("failed", e("vpc-ours", "failed", &[]), true),
            (
                "another VPC's",
                e("vpc-other", "available", &guardduty),
                false,
            ),
            ("deleting already", e("vpc-ours", "deleting", &[]), false),
            ("deleted", e("vpc-ours", "deleted", &[]), false),
            (
                "another stack's",
                e("vpc-ours", "available", &[(STACK_TAG, "other")]),
                false,
            ),
        ] {
            assert_eq!(
                OWNER.vpc_endpoint("vpc-ours", &endpoint).is_some(),
                ours,
                "{case}: {endpoint:?}"
            );
        }
        let g = |name: &str, vpc: &str, t: &[(&str, &str)]| Group {
            id: "sg-1".into(),
            name: name.into(),
            vpc_id: vpc.into(),
            tags: tags(t),
        };
        for (case, group, ours) in [
            (
                "GuardDuty's",
                g(
                    "GuardDutyManagedSecurityGroup-vpc-ours",
                    "vpc-ours",
                    &guardduty,
                ),
                true,
            ),
            ("default", g("default", "vpc-ours", &[]), false),
            ("another VPC's", g("x", "vpc-other", &[]), false),
            (
                "another cluster's",
                g("x", "vpc-ours", &[("kubernetes.io/cluster/other", "owned")]),
                false,
            ),
        ] {
            assert_eq!(
                OWNER.endpoint_group("vpc-ours", &group).is_some(),
                ours,
                "{case}: {group:?}"
            );
        }
    }

    #[test]
    fn labels_name_what_people_recognise() {
        let f = |id: &str, name: &str| Found {
            kind: SECURITY_GROUP,
            id: id.into(),
            name: name.into(),
            why: "",
        };
        assert_eq!(f("sg-1", "k8s-elb-a").label(), "k8s-elb-a (sg-1)");
        assert_eq!(f("sg-1", "").label(), "sg-1");
        assert_eq!(f("a1b2", "a1b2").label(), "a1b2");
    }
}
