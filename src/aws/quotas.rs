//! The AWS side of the quota check (`src/quotas.rs`): what an account and region hold, and
//! its limits from Service Quotas, read-only.
//!
//! Reading is in two steps so that a converged stack costs few reads: [`observe`] finds what
//! already exists for the environments (enough to know what they still need), and only when
//! something is needed does [`complete`] look up the rest of the usage (the zones of other
//! NAT gateways, the running instances' vCPUs) and [`limits`] the quota values.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{Filter, Tag};
use aws_sdk_servicequotas::error::ProvideErrorMetadata;

use super::{sdk_err, AwsClients, AwsError, CountingInterceptor, RESOURCE_TAG, STACK_TAG};
use crate::config::Stack;
use crate::quotas::{quota, Limits, Need, QuotaKey, Scope, Source, Usage};

/// Region where Service Quotas keeps the quotas of global services (IAM).
const GLOBAL_QUOTAS_REGION: &str = "us-east-1";

/// Prefix of a NAT gateway's zone that [`observe`] could not tell yet: its subnet's ID.
const SUBNET_PREFIX: &str = "subnet:";

fn owner(tags: &[Tag]) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(STACK_TAG))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// What exists for `stacks` (the environments of one account and region) and how many of
/// each counted resource the account holds, for the `stages` about to run.
///
/// # Errors
/// The first AWS call that fails.
pub async fn observe(
    aws: &AwsClients,
    stacks: &[&Stack],
    stages: &[&str],
) -> Result<Usage, AwsError> {
    let mut usage = Usage::default();
    let ec2 = &aws.ec2;
    if stages.contains(&"network") {
        let mut pages = ec2.describe_vpcs().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_err("ec2:DescribeVpcs"))?;
            usage
                .vpcs
                .extend(page.vpcs().iter().map(|v| owner(v.tags())));
        }
        let mut pages = ec2.describe_internet_gateways().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_err("ec2:DescribeInternetGateways"))?;
            usage
                .internet_gateways
                .extend(page.internet_gateways().iter().map(|g| owner(g.tags())));
        }
    }
    if stages.contains(&"nat") {
        let eips = ec2
            .describe_addresses()
            .filters(Filter::builder().name("domain").values("vpc").build())
            .send()
            .await
            .map_err(sdk_err("ec2:DescribeAddresses"))?;
        usage
            .elastic_ips
            .extend(eips.addresses().iter().map(|a| owner(a.tags())));
        for n in super::discover::live_nat_gateways(aws, None).await? {
            let who = owner(n.tags());
            // meshstack's own NAT gateways say their zone in their resource tag.
            let tagged_zone = who.as_ref().and_then(|_| {
                n.tags()
                    .iter()
                    .find(|t| t.key() == Some(RESOURCE_TAG))
                    .and_then(|t| t.value())
                    .and_then(|v| v.strip_prefix("nat/"))
                    .map(str::to_string)
            });
            let zone = tagged_zone
                .unwrap_or_else(|| format!("{SUBNET_PREFIX}{}", n.subnet_id().unwrap_or_default()));
            usage.nat_gateways.push((zone, who));
        }
    }
    if stages.contains(&"cluster") || stages.contains(&"nodegroup") {
        let mut pages = aws.eks.list_clusters().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_err("eks:ListClusters"))?;
            usage.clusters.extend(page.clusters().iter().cloned());
        }
    }
    if stages.contains(&"nodegroup") {
        let mut lacking = false;
        for stack in stacks {
            let cluster = stack.cluster_name();
            if !usage.clusters.contains(cluster) {
                lacking = true;
                continue;
            }
            let groups = aws
                .eks
                .list_nodegroups()
                .cluster_name(cluster)
                .send()
                .await
                .map_err(sdk_err("eks:ListNodegroups"))?;
            if groups
                .nodegroups()
                .iter()
                .any(|g| *g == crate::names::node_group(stack))
            {
                usage.with_node_group.insert(cluster.to_string());
            } else {
                lacking = true;
            }
        }
        if lacking {
            let types: BTreeSet<String> = stacks
                .iter()
                .flat_map(|s| s.node_group.instance_types.iter().cloned())
                .collect();
            usage.vcpus_per_type = vcpus_of(aws, &types).await?;
        }
    }
    if stages.contains(&"iam") {
        let mut pages = aws.iam.list_roles().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_err("iam:ListRoles"))?;
            usage
                .roles
                .extend(page.roles().iter().map(|r| r.role_name().to_string()));
        }
    }
    Ok(usage)
}

/// vCPUs of each instance type, as EC2 describes them.
async fn vcpus_of(
    aws: &AwsClients,
    types: &BTreeSet<String>,
) -> Result<BTreeMap<String, u64>, AwsError> {
    let mut out = BTreeMap::new();
    if types.is_empty() {
        return Ok(out);
    }
    let wanted: Vec<aws_sdk_ec2::types::InstanceType> = types
        .iter()
        .map(|t| aws_sdk_ec2::types::InstanceType::from(t.as_str()))
        .collect();
    // At most 100 types per call; a stack lists a handful.
    for chunk in wanted.chunks(100) {
        let got = aws
            .ec2
            .describe_instance_types()
            .set_instance_types(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(sdk_err("ec2:DescribeInstanceTypes"))?;
        for t in got.instance_types() {
            if let (Some(name), Some(v)) = (
                t.instance_type(),
                t.v_cpu_info().and_then(|v| v.default_v_cpus()),
            ) {
                out.insert(name.as_str().to_string(), u64::try_from(v).unwrap_or(0));
            }
        }
    }
    Ok(out)
}

/// The rest of the usage, for what `needs` want: the zones of NAT gateways that are not
/// meshstack's, and the vCPUs of the running on-demand instances.
///
/// # Errors
/// The first AWS call that fails.
pub async fn complete(aws: &AwsClients, usage: &mut Usage, needs: &[Need]) -> Result<(), AwsError> {
    let want_nat = needs.iter().any(|n| !n.nat_gateways.is_empty());
    let subnets: Vec<String> = usage
        .nat_gateways
        .iter()
        .filter_map(|(z, _)| z.strip_prefix(SUBNET_PREFIX).map(str::to_string))
        .filter(|s| !s.is_empty())
        .collect();
    if want_nat && !subnets.is_empty() {
        let mut zone_of = BTreeMap::new();
        for chunk in subnets.chunks(200) {
            let got = aws
                .ec2
                .describe_subnets()
                .filters(
                    Filter::builder()
                        .name("subnet-id")
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                )
                .send()
                .await
                .map_err(sdk_err("ec2:DescribeSubnets"))?;
            for s in got.subnets() {
                if let (Some(id), Some(zone)) = (s.subnet_id(), s.availability_zone()) {
                    zone_of.insert(id.to_string(), zone.to_string());
                }
            }
        }
        for (zone, _) in &mut usage.nat_gateways {
            if let Some(subnet) = zone.strip_prefix(SUBNET_PREFIX) {
                if let Some(z) = zone_of.get(subnet) {
                    *zone = z.clone();
                }
            }
        }
    }
    if needs.iter().any(|n| n.vcpus > 0) {
        let mut types_needed = BTreeSet::new();
        let mut running: Vec<(String, Option<u64>)> = Vec::new();
        let mut pages = aws
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(sdk_err("ec2:DescribeInstances"))?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                if i.instance_lifecycle().is_some() {
                    continue; // spot (or scheduled): not on-demand
                }
                let ty = i
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default();
                if !crate::quotas::standard_family(&ty) {
                    continue;
                }
                let vcpus = i.cpu_options().and_then(|c| {
                    Some(u64::try_from(c.core_count()? * c.threads_per_core()?).unwrap_or(0))
                });
                if vcpus.is_none() {
                    types_needed.insert(ty.clone());
                }
                running.push((ty, vcpus));
            }
        }
        let known = vcpus_of(aws, &types_needed).await?;
        usage.vcpus = running
            .iter()
            .map(|(ty, v)| v.or_else(|| known.get(ty).copied()).unwrap_or(0))
            .sum();
    }
    Ok(())
}

/// The account's value of each of `keys` from Service Quotas, else AWS's documented default
/// with what the API said. Never fails: a quota the API does not give falls back.
pub async fn limits(aws: &AwsClients, keys: &BTreeSet<QuotaKey>) -> Limits {
    let client_for = |region: &str| {
        aws_sdk_servicequotas::Client::from_conf(
            aws_sdk_servicequotas::config::Builder::from(&aws.sdk)
                .interceptor(CountingInterceptor(aws.calls.clone()))
                .region(aws_config::Region::new(region.to_string()))
                .build(),
        )
    };
    let regional = client_for(&aws.region);
    let global = client_for(GLOBAL_QUOTAS_REGION);
    let mut out = Limits::new();
    for key in keys {
        let q = quota(*key);
        let client = if q.scope == Scope::Account {
            &global
        } else {
            &regional
        };
        let got = client
            .get_service_quota()
            .service_code(q.service)
            .quota_code(q.code)
            .send()
            .await;
        let limit = match got {
            Ok(out) => match out.quota().and_then(|q| q.value()) {
                Some(v) if v >= 0.0 => (v as u64, Source::Api),
                _ => (
                    q.default,
                    Source::Default {
                        why: "the answer held no value".into(),
                    },
                ),
            },
            Err(e) => {
                let why = e
                    .code()
                    .map(str::to_string)
                    .unwrap_or_else(|| "no answer".to_string());
                (q.default, Source::Default { why })
            }
        };
        out.insert(*key, limit);
    }
    out
}
