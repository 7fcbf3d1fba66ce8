//! Finding stacks by their tags alone, without a stack file or a journal: `meshstack reap`
//! (stacks whose `meshstack.io/expires-at` has passed), `meshstack fleet down` (environments
//! tagged with the fleet whose journal is gone), and an expiry recorded only in the cloud.
//!
//! A stack is found by any of its tagged resources that outlive a half-finished teardown: the
//! VPC, the Elastic IPs, the NAT gateways, the EKS cluster, and the IAM roles named after it
//! (IAM is global: a stack found only by its roles is listed in every region).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::Filter;

use super::{sdk_err, AwsClients, AwsError, EXPIRES_TAG, FLEET_TAG, STACK_TAG};

/// A stack found by its tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Found {
    pub stack: String,
    /// The earliest `meshstack.io/expires-at` on its resources (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `meshstack.io/fleet`, for a fleet's environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// The kinds of resource it was found by (`vpc`, `eks-cluster`, `iam-role`, ...).
    pub found_by: BTreeSet<&'static str>,
}

impl Found {
    /// Whether only global resources (IAM roles) were found: the stack's region is unknown.
    pub fn global_only(&self) -> bool {
        self.found_by.iter().all(|k| *k == "iam-role")
    }

    /// Whether it has expired at `now` (unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at
            .as_deref()
            .and_then(crate::clock::parse_rfc3339)
            .is_some_and(|at| at <= now)
    }
}

fn note<'a>(
    found: &mut BTreeMap<String, Found>,
    kind: &'static str,
    tags: impl Iterator<Item = (&'a str, &'a str)>,
) {
    let tags: BTreeMap<&str, &str> = tags.collect();
    let Some(stack) = tags.get(STACK_TAG) else {
        return;
    };
    let entry = found.entry(stack.to_string()).or_insert_with(|| Found {
        stack: stack.to_string(),
        ..Found::default()
    });
    entry.found_by.insert(kind);
    if let Some(at) = tags.get(EXPIRES_TAG) {
        // The earliest, compared as instants (all are written the same way, but be safe).
        let earlier = match &entry.expires_at {
            None => true,
            Some(have) => crate::clock::parse_rfc3339(at) < crate::clock::parse_rfc3339(have),
        };
        if earlier {
            entry.expires_at = Some(at.to_string());
        }
    }
    if let Some(fleet) = tags.get(FLEET_TAG) {
        entry.fleet = Some(fleet.to_string());
    }
}

/// The NAT gateways that exist or are coming (`pending`, `available`: not those deleting or
/// deleted), all pages, narrowed by `filter` if given. moto ignores tag filters here, so a
/// caller that filters by tag checks the tags itself.
///
/// # Errors
/// The first `DescribeNatGateways` that fails.
pub(crate) async fn live_nat_gateways(
    aws: &AwsClients,
    filter: Option<Filter>,
) -> Result<Vec<aws_sdk_ec2::types::NatGateway>, AwsError> {
    let mut pages = aws
        .ec2
        .describe_nat_gateways()
        .set_filter(Some(
            filter
                .into_iter()
                .chain([Filter::builder()
                    .name("state")
                    .values("pending")
                    .values("available")
                    .build()])
                .collect(),
        ))
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("ec2:DescribeNatGateways"))?;
        out.extend(page.nat_gateways().iter().cloned());
    }
    Ok(out)
}

fn has_stack_tag() -> Filter {
    Filter::builder().name("tag-key").values(STACK_TAG).build()
}

/// Every meshstack stack with resources in the clients' region (and, by their IAM roles,
/// in the account), by name.
///
/// # Errors
/// The first AWS call that fails.
pub async fn stacks(aws: &AwsClients) -> Result<BTreeMap<String, Found>, AwsError> {
    let mut found = BTreeMap::new();
    let ec2 = &aws.ec2;
    let mut pages = ec2
        .describe_vpcs()
        .filters(has_stack_tag())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("ec2:DescribeVpcs"))?;
        for v in page.vpcs() {
            let tags = v.tags().iter().filter_map(|t| Some((t.key()?, t.value()?)));
            note(&mut found, "vpc", tags);
        }
    }
    let eips = ec2
        .describe_addresses()
        .filters(has_stack_tag())
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeAddresses"))?;
    for a in eips.addresses() {
        let tags = a.tags().iter().filter_map(|t| Some((t.key()?, t.value()?)));
        note(&mut found, "elastic-ip", tags);
    }
    for n in live_nat_gateways(aws, Some(has_stack_tag())).await? {
        let tags = n.tags().iter().filter_map(|t| Some((t.key()?, t.value()?)));
        note(&mut found, "nat-gateway", tags);
    }
    let mut pages = aws.eks.list_clusters().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("eks:ListClusters"))?;
        for name in page.clusters() {
            let c = aws
                .eks
                .describe_cluster()
                .name(name)
                .send()
                .await
                .map_err(sdk_err("eks:DescribeCluster"));
            // Deleted between the list and the describe: nothing to find.
            let c = match super::optional(c)? {
                Some(c) => c,
                None => continue,
            };
            if let Some(tags) = c.cluster().and_then(|c| c.tags()) {
                let tags = tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                note(&mut found, "eks-cluster", tags);
            }
        }
    }
    let suffixes: Vec<String> = crate::names::Role::ALL
        .iter()
        .map(|r| format!("-{}", r.suffix()))
        .collect();
    let mut pages = aws.iam.list_roles().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("iam:ListRoles"))?;
        for role in page.roles() {
            let name = role.role_name();
            if !suffixes.iter().any(|s| name.ends_with(s.as_str())) {
                continue;
            }
            let tags = aws
                .iam
                .list_role_tags()
                .role_name(name)
                .send()
                .await
                .map_err(sdk_err("iam:ListRoleTags"));
            let Some(tags) = super::optional(tags)? else {
                continue;
            };
            let tags = tags.tags().iter().map(|t| (t.key(), t.value()));
            note(&mut found, "iam-role", tags);
        }
    }
    Ok(found)
}

/// The `meshstack.io/expires-at` of stack `stack`'s VPC, if it has one: the expiry a stack
/// whose journal was lost was created with.
///
/// # Errors
/// The AWS call failing.
pub async fn expiry_of(aws: &AwsClients, stack: &str) -> Result<Option<String>, AwsError> {
    let vpcs = aws
        .ec2
        .describe_vpcs()
        .filters(
            Filter::builder()
                .name(format!("tag:{STACK_TAG}"))
                .values(stack)
                .build(),
        )
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeVpcs"))?;
    Ok(vpcs
        .vpcs()
        .iter()
        .flat_map(|v| v.tags())
        .find(|t| t.key() == Some(EXPIRES_TAG))
        .and_then(|t| t.value())
        .map(str::to_string))
}

/// When the EKS cluster `name` was created (unix seconds), if it exists: the start of a
/// stack's uptime when its journal does not know it.
///
/// # Errors
/// The AWS call failing (other than not found).
pub async fn cluster_created(aws: &AwsClients, name: &str) -> Result<Option<u64>, AwsError> {
    let got = aws
        .eks
        .describe_cluster()
        .name(name)
        .send()
        .await
        .map_err(sdk_err("eks:DescribeCluster"));
    Ok(super::optional(got)?
        .and_then(|c| c.cluster().and_then(|c| c.created_at()).map(|t| t.secs()))
        .and_then(|s| u64::try_from(s).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_is_gathered_from_its_resources_with_its_earliest_expiry() {
        let mut found = BTreeMap::new();
        note(
            &mut found,
            "vpc",
            [
                (STACK_TAG, "a"),
                (EXPIRES_TAG, "2026-11-30T18:00:00Z"),
                (FLEET_TAG, "demo"),
            ]
            .into_iter(),
        );
        note(
            &mut found,
            "iam-role",
            [(STACK_TAG, "a"), (EXPIRES_TAG, "2026-11-30T17:00:00Z")].into_iter(),
        );
        note(&mut found, "iam-role", [(STACK_TAG, "b")].into_iter());
        note(&mut found, "vpc", [("Name", "foreign")].into_iter());
        assert_eq!(found.len(), 2);
        let a = &found["a"];
        assert_eq!(a.expires_at.as_deref(), Some("2026-11-30T17:00:00Z"));
        assert_eq!(a.fleet.as_deref(), Some("demo"));
        assert!(!a.global_only());
        assert!(found["b"].global_only());
        let at = crate::clock::parse_rfc3339("2026-11-30T17:00:00Z").unwrap();
        assert!(a.expired(at));
        assert!(!a.expired(at - 1));
        assert!(!found["b"].expired(u64::MAX), "no expiry never expires");
    }
}
