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
///
/// # Guarantees
/// `expires_at` and `fleet` come only from the resource that defines the stack — its EKS
/// cluster (named after the stack and tagged with it), else its one VPC — never from any
/// other resource: whoever can tag one Elastic IP must not be able to schedule a stack's
/// deletion or enrol it in a fleet (issue 23, item 3). A stack with neither (two VPCs claim
/// it, or a teardown left only addresses or roles) has no expiry and no fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Found {
    pub stack: String,
    /// The defining resource's `meshstack.io/expires-at` (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The defining resource's `meshstack.io/fleet`, for a fleet's environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// The kinds of resource it was found by (`vpc`, `eks-cluster`, `iam-role`, ...).
    pub found_by: BTreeSet<&'static str>,
    /// The resource `expires_at` and `fleet` were read from: `eks-cluster` or `vpc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defined_by: Option<&'static str>,
    /// The tags of each VPC and of the stack's own cluster, until [`settle`] picks one.
    #[serde(skip)]
    vpcs: Vec<BTreeMap<String, String>>,
    #[serde(skip)]
    cluster: Option<BTreeMap<String, String>>,
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

/// What a resource is to the stack its tag names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role<'a> {
    /// Found by it, nothing more.
    Member,
    /// A VPC: defines the stack when it is the only one tagged for it.
    Vpc,
    /// An EKS cluster of this name: defines the stack when the name is the stack's.
    Cluster(&'a str),
}

fn note<'a>(
    found: &mut BTreeMap<String, Found>,
    kind: &'static str,
    role: Role<'_>,
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
    let owned = || {
        tags.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    match role {
        Role::Member => {}
        Role::Vpc => entry.vpcs.push(owned()),
        // The stack tag agrees with the name the stack gives its cluster.
        Role::Cluster(name) if name == *stack => entry.cluster = Some(owned()),
        Role::Cluster(_) => {}
    }
}

/// Reads each stack's expiry and fleet from its defining resource (see [`Found`]).
fn settle(found: &mut BTreeMap<String, Found>) {
    for f in found.values_mut() {
        let defining = match (&f.cluster, f.vpcs.as_slice()) {
            (Some(tags), _) => Some(("eks-cluster", tags)),
            (None, [only]) => Some(("vpc", only)),
            _ => None,
        };
        if let Some((kind, tags)) = defining {
            f.defined_by = Some(kind);
            f.expires_at = tags.get(EXPIRES_TAG).cloned();
            f.fleet = tags.get(FLEET_TAG).cloned();
        }
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
            note(&mut found, "vpc", Role::Vpc, tags);
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
        note(&mut found, "elastic-ip", Role::Member, tags);
    }
    for n in live_nat_gateways(aws, Some(has_stack_tag())).await? {
        let tags = n.tags().iter().filter_map(|t| Some((t.key()?, t.value()?)));
        note(&mut found, "nat-gateway", Role::Member, tags);
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
                note(&mut found, "eks-cluster", Role::Cluster(name), tags);
            }
        }
    }
    let suffixes: Vec<String> = crate::names::Role::ALL
        .iter()
        .map(|r| r.suffix())
        .chain([crate::names::ATTENDEE_ROLE_SUFFIX])
        .map(|s| format!("-{s}"))
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
            note(&mut found, "iam-role", Role::Member, tags);
        }
    }
    settle(&mut found);
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
    fn a_stack_is_gathered_from_its_resources_and_defined_by_its_cluster_or_vpc() {
        let mut found = BTreeMap::new();
        let at = |t: &'static str| (EXPIRES_TAG, t);
        note(
            &mut found,
            "vpc",
            Role::Vpc,
            [
                (STACK_TAG, "a"),
                at("2026-11-30T18:00:00Z"),
                (FLEET_TAG, "demo"),
            ]
            .into_iter(),
        );
        // Anyone who can tag an address or a role: believed for nothing.
        note(
            &mut found,
            "elastic-ip",
            Role::Member,
            [
                (STACK_TAG, "a"),
                at("2026-11-30T17:00:00Z"),
                (FLEET_TAG, "x"),
            ]
            .into_iter(),
        );
        note(
            &mut found,
            "iam-role",
            Role::Member,
            [(STACK_TAG, "b")].into_iter(),
        );
        note(
            &mut found,
            "vpc",
            Role::Vpc,
            [("Name", "foreign")].into_iter(),
        );
        // c: its cluster defines it, over its VPC; a cluster of another name does not.
        note(
            &mut found,
            "vpc",
            Role::Vpc,
            [(STACK_TAG, "c"), at("2026-11-30T10:00:00Z")].into_iter(),
        );
        note(
            &mut found,
            "eks-cluster",
            Role::Cluster("c"),
            [(STACK_TAG, "c"), at("2026-11-30T19:00:00Z")].into_iter(),
        );
        note(
            &mut found,
            "eks-cluster",
            Role::Cluster("other"),
            [(STACK_TAG, "c"), at("2026-11-30T01:00:00Z")].into_iter(),
        );
        // d: two VPCs claim it, so neither defines it.
        for t in ["2026-11-30T01:00:00Z", "2026-11-30T02:00:00Z"] {
            note(
                &mut found,
                "vpc",
                Role::Vpc,
                [(STACK_TAG, "d"), at(t)].into_iter(),
            );
        }
        settle(&mut found);
        assert_eq!(found.len(), 4);
        let a = &found["a"];
        assert_eq!(a.expires_at.as_deref(), Some("2026-11-30T18:00:00Z"));
        assert_eq!(a.fleet.as_deref(), Some("demo"));
        assert_eq!(a.defined_by, Some("vpc"));
        assert!(!a.global_only());
        assert!(found["b"].global_only());
        assert_eq!(found["b"].expires_at, None);
        assert_eq!(
            found["c"].expires_at.as_deref(),
            Some("2026-11-30T19:00:00Z")
        );
        assert_eq!(found["c"].defined_by, Some("eks-cluster"));
        assert_eq!(found["d"].expires_at, None);
        let t = crate::clock::parse_rfc3339("2026-11-30T18:00:00Z").unwrap();
        assert!(a.expired(t));
        assert!(!a.expired(t - 1));
        assert!(!found["b"].expired(u64::MAX), "no expiry never expires");
    }
}
