//! Before any stage: who we are (STS), whether this account is allowed, and which zones to use.

use aws_sdk_ec2::types::{Filter, LocationType};

use super::{sdk_err, AwsClients, AwsError};
use crate::config::{Stack, ZoneSpec};
use crate::versions::EksVersion;

/// Zones EKS refuses for control-plane subnets, by zone *ID* (names are shuffled per account).
/// Source: the EKS user guide, "Subnet requirements and considerations".
pub const EKS_UNSUPPORTED_ZONE_IDS: &[&str] = &["use1-az3", "usw1-az2", "cac1-az3"];

/// The caller, as STS reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub account: String,
    pub arn: String,
    /// `aws`, `aws-cn`, `aws-us-gov`: needed to build ARNs of AWS managed policies.
    pub partition: String,
}

/// An availability zone chosen for the stack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Zone {
    pub name: String,
    pub id: String,
}

/// Why the account or its zones cannot host the stack. All of these are the user's to fix, so
/// they map to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The account is not one of the stack's `allowed_account_ids`.
    #[error("account {account} is not in allowed_account_ids ({allowed}) of the stack; check your AWS profile/credentials")]
    AccountNotAllowed { account: String, allowed: String },
    /// Not enough zones qualify.
    #[error("region {region}: {message}")]
    Zones { region: String, message: String },
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// EKS's own calendar for standard clusters in the client's region (`DescribeClusterVersions`,
/// every version, every status): what it will create today and until when at which price.
/// `Ok(None)` when EKS does not answer the call (an emulator without it, or a principal
/// without `eks:DescribeClusterVersions`): the caller falls back to the built-in calendar and
/// says so.
///
/// # Errors
/// Any other failure of the call.
pub async fn eks_calendar(aws: &AwsClients) -> Result<Option<Vec<EksVersion>>, AwsError> {
    let mut versions = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let out = aws
            .eks
            .describe_cluster_versions()
            .include_all(true)
            .set_next_token(next.take())
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                // An endpoint without the operation (moto) answers a bare 404.
                let status = e.raw_response().map(|r| r.status().as_u16());
                let e = sdk_err("eks:DescribeClusterVersions")(e);
                if calendar_unavailable(&e) || (e.code.is_none() && status == Some(404)) {
                    return Ok(None);
                }
                return Err(e);
            }
        };
        for v in out.cluster_versions() {
            let day = |d: Option<&aws_smithy_types::DateTime>| {
                d.and_then(|d| u64::try_from(d.secs()).ok())
                    .map(crate::versions::Day::from_unix)
            };
            let minor = v
                .cluster_version()
                .and_then(|s| s.strip_prefix("1."))
                .and_then(|m| m.parse().ok());
            if let (Some(minor), Some(end_of_standard), Some(end_of_extended)) = (
                minor,
                day(v.end_of_standard_support_date()),
                day(v.end_of_extended_support_date()),
            ) {
                versions.push(EksVersion {
                    minor,
                    end_of_standard,
                    end_of_extended,
                });
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_string()),
            _ => break,
        }
    }
    versions.sort_by_key(|v| v.minor);
    Ok((!versions.is_empty()).then_some(versions))
}

/// Answers that mean "this endpoint or principal cannot tell", not "something broke": moto has
/// no DescribeClusterVersions, and a least-privilege role may lack the permission.
fn calendar_unavailable(e: &AwsError) -> bool {
    e.is("AccessDeniedException")
        || e.is("AccessDenied")
        || e.is("UnknownOperationException")
        || e.is("NotImplemented")
        || e.message.contains("not yet implemented")
        || e.message.contains("is not implemented")
}

/// Ask STS who we are and apply the account guard.
pub async fn identify(aws: &AwsClients, stack: &Stack) -> Result<Identity, PreflightError> {
    let out = aws
        .sts
        .get_caller_identity()
        .send()
        .await
        .map_err(sdk_err("sts:GetCallerIdentity"))?;
    let account = out.account().unwrap_or_default().to_string();
    let arn = out.arn().unwrap_or_default().to_string();
    let partition = arn.split(':').nth(1).unwrap_or("aws").to_string();
    check_account(stack, &account)?;
    Ok(Identity {
        account,
        arn,
        partition,
    })
}

/// The account guard on its own, so it can be tested without AWS.
pub fn check_account(stack: &Stack, account: &str) -> Result<(), PreflightError> {
    if stack.allowed_account_ids.is_empty()
        || stack.allowed_account_ids.iter().any(|a| a == account)
    {
        Ok(())
    } else {
        Err(PreflightError::AccountNotAllowed {
            account: account.to_string(),
            allowed: stack.allowed_account_ids.join(", "),
        })
    }
}

/// Pick the zones: available, offering at least one of the node instance types, and accepted by
/// EKS for control planes. A count takes the first eligible zones by name (stable across runs);
/// an explicit list is checked as given.
pub async fn choose_zones(aws: &AwsClients, stack: &Stack) -> Result<Vec<Zone>, PreflightError> {
    let azs = aws
        .ec2
        .describe_availability_zones()
        .filters(
            Filter::builder()
                .name("zone-type")
                .values("availability-zone")
                .build(),
        )
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeAvailabilityZones"))?;
    let all: Vec<Zone> = azs
        .availability_zones()
        .iter()
        .filter_map(|z| {
            Some(Zone {
                name: z.zone_name()?.to_string(),
                id: z.zone_id().unwrap_or_default().to_string(),
            })
        })
        .collect();

    let mut offering = std::collections::BTreeSet::new();
    let mut pages = aws
        .ec2
        .describe_instance_type_offerings()
        .location_type(LocationType::AvailabilityZone)
        .filters(
            Filter::builder()
                .name("instance-type")
                .set_values(Some(stack.node_group.instance_types.clone()))
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(sdk_err("ec2:DescribeInstanceTypeOfferings"))?;
        for o in page.instance_type_offerings() {
            if let Some(loc) = o.location() {
                offering.insert(loc.to_string());
            }
        }
    }
    select_zones(stack, &aws.region, all, &offering)
}

/// The pure part of [`choose_zones`].
pub fn select_zones(
    stack: &Stack,
    region: &str,
    mut all: Vec<Zone>,
    offering: &std::collections::BTreeSet<String>,
) -> Result<Vec<Zone>, PreflightError> {
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let why_not = |z: &Zone| -> Option<String> {
        if EKS_UNSUPPORTED_ZONE_IDS.contains(&z.id.as_str()) {
            Some(format!(
                "{} ({}) is not supported by EKS for control planes",
                z.name, z.id
            ))
        } else if !offering.contains(&z.name) {
            Some(format!(
                "{} does not offer {}",
                z.name,
                stack.node_group.instance_types.join(" or ")
            ))
        } else {
            None
        }
    };
    let err = |message: String| PreflightError::Zones {
        region: region.to_string(),
        message,
    };
    match &stack.zones {
        ZoneSpec::Names(names) => names
            .iter()
            .map(|name| {
                let zone = all.iter().find(|z| &z.name == name).ok_or_else(|| {
                    err(format!("zone {name} does not exist or is not available"))
                })?;
                match why_not(zone) {
                    Some(reason) => Err(err(format!("zones: {reason}; pick another zone"))),
                    None => Ok(zone.clone()),
                }
            })
            .collect(),
        ZoneSpec::Count(n) => {
            let eligible: Vec<Zone> = all
                .iter()
                .filter(|z| why_not(z).is_none())
                .cloned()
                .collect();
            if eligible.len() < *n {
                let rejected: Vec<String> = all.iter().filter_map(why_not).collect();
                return Err(err(format!(
                    "the stack wants {n} zones but only {} qualify{}{}",
                    eligible.len(),
                    if rejected.is_empty() { "" } else { "; " },
                    rejected.join("; ")
                )));
            }
            Ok(eligible.into_iter().take(*n).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, id: &str) -> Zone {
        Zone {
            name: name.into(),
            id: id.into(),
        }
    }

    fn stack(zones: &str) -> Stack {
        Stack::parse(&format!("name: t\nzones: {zones}\n"), "test.yaml").unwrap()
    }

    #[test]
    fn count_skips_eks_exceptions_and_zones_without_the_instance_type() {
        let all = vec![
            zone("us-east-1e", "use1-az3"),
            zone("us-east-1a", "use1-az6"),
            zone("us-east-1b", "use1-az1"),
            zone("us-east-1c", "use1-az2"),
            zone("us-east-1d", "use1-az4"),
        ];
        let offering = ["us-east-1a", "us-east-1c", "us-east-1d", "us-east-1e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let got = select_zones(&stack("3"), "us-east-1", all, &offering).unwrap();
        let names: Vec<&str> = got.iter().map(|z| z.name.as_str()).collect();
        assert_eq!(names, ["us-east-1a", "us-east-1c", "us-east-1d"]);
    }

    #[test]
    fn too_few_eligible_zones_explains_each_rejection() {
        let all = vec![
            zone("us-east-1a", "use1-az6"),
            zone("us-east-1e", "use1-az3"),
        ];
        let offering = ["us-east-1a", "us-east-1e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let err = select_zones(&stack("2"), "us-east-1", all, &offering)
            .unwrap_err()
            .to_string();
        assert!(err.contains("only 1 qualify"), "{err}");
        assert!(
            err.contains("us-east-1e (use1-az3) is not supported by EKS"),
            "{err}"
        );
    }

    #[test]
    fn explicit_zone_list_is_checked() {
        let all = vec![
            zone("us-east-1a", "use1-az6"),
            zone("us-east-1b", "use1-az1"),
            zone("us-east-1e", "use1-az3"),
        ];
        let offering = ["us-east-1a", "us-east-1b", "us-east-1e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ok = select_zones(
            &stack("[us-east-1b, us-east-1a]"),
            "us-east-1",
            all.clone(),
            &offering,
        )
        .unwrap();
        assert_eq!(ok[0].name, "us-east-1b", "the user's order is kept");
        let err = select_zones(
            &stack("[us-east-1a, us-east-1e]"),
            "us-east-1",
            all,
            &offering,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not supported by EKS"), "{err}");
    }

    #[test]
    fn account_guard() {
        let s = Stack::parse(
            "name: t\nallowed_account_ids: [\"123456789012\"]\n",
            "t.yaml",
        )
        .unwrap();
        assert!(check_account(&s, "123456789012").is_ok());
        let err = check_account(&s, "000000000000").unwrap_err().to_string();
        assert!(
            err.contains("000000000000") && err.contains("123456789012"),
            "{err}"
        );
        assert!(check_account(&stack("3"), "000000000000").is_ok());
    }
}
