//! Observing the network by the stack's tag, for `up` and `plan`.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, NatGatewayState, Tag, VpcAttributeName};

use super::plan::{Seen, SeenIgw, SeenNat, SeenRouteTable, SeenSubnet, SeenVpc};
use crate::aws::{sdk_err, RESOURCE_TAG, STACK_TAG};
use crate::config::Stack;
use crate::stages::{Context, StageError};

/// Everything tagged for the stack.
pub(super) fn stack_filter(stack: &Stack) -> Filter {
    Filter::builder()
        .name(format!("tag:{STACK_TAG}"))
        .values(&stack.name)
        .build()
}

fn key_of(tags: &[Tag]) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(RESOURCE_TAG))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// Insert `value` under `key`, noting a duplicate instead of overwriting (first one wins; the
/// SDK lists in a stable order).
fn insert_once<V>(
    map: &mut BTreeMap<String, V>,
    dups: &mut Vec<String>,
    key: Option<String>,
    id: &str,
    value: V,
) {
    if let Some(key) = key {
        match map.entry(key) {
            std::collections::btree_map::Entry::Occupied(e) => {
                dups.push(format!("{} ({id})", e.key()))
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(value);
            }
        }
    }
}

/// Observe the network by tag.
pub async fn observe(cx: &Context) -> Result<Seen, StageError> {
    let Some(aws) = &cx.aws else {
        return Ok(Seen::default());
    };
    let stack = &cx.stack;
    let mut seen = Seen::default();

    let vpcs = aws
        .ec2
        .describe_vpcs()
        .filters(stack_filter(stack))
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeVpcs"))?;
    let mut vpcs: Vec<_> = vpcs
        .vpcs()
        .iter()
        .filter(|v| key_of(v.tags()).as_deref() == Some("vpc"))
        .collect();
    vpcs.sort_by_key(|v| v.vpc_id().unwrap_or_default().to_string());
    for extra in vpcs.iter().skip(1) {
        seen.duplicates
            .push(format!("vpc ({})", extra.vpc_id().unwrap_or_default()));
    }
    if let Some(vpc) = vpcs.first() {
        let id = vpc.vpc_id().unwrap_or_default().to_string();
        let attr = |name: VpcAttributeName| {
            aws.ec2
                .describe_vpc_attribute()
                .vpc_id(&id)
                .attribute(name)
                .send()
        };
        let support = attr(VpcAttributeName::EnableDnsSupport)
            .await
            .map_err(sdk_err("ec2:DescribeVpcAttribute"))?;
        let hostnames = attr(VpcAttributeName::EnableDnsHostnames)
            .await
            .map_err(sdk_err("ec2:DescribeVpcAttribute"))?;
        seen.vpc = Some(SeenVpc {
            cidr: vpc.cidr_block().unwrap_or_default().to_string(),
            dns_support: support
                .enable_dns_support()
                .and_then(|v| v.value())
                .unwrap_or(false),
            dns_hostnames: hostnames
                .enable_dns_hostnames()
                .and_then(|v| v.value())
                .unwrap_or(false),
            id,
        });
    }

    let igws = aws
        .ec2
        .describe_internet_gateways()
        .filters(stack_filter(stack))
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeInternetGateways"))?;
    for igw in igws.internet_gateways() {
        let id = igw.internet_gateway_id().unwrap_or_default().to_string();
        if key_of(igw.tags()).as_deref() != Some("igw") {
            continue;
        }
        if seen.igw.is_some() {
            seen.duplicates.push(format!("igw ({id})"));
            continue;
        }
        seen.igw = Some(SeenIgw {
            attached_to: igw
                .attachments()
                .iter()
                .filter_map(|a| a.vpc_id().map(str::to_string))
                .collect(),
            id,
        });
    }

    // Everything below lives in the VPC; without it there is nothing to find.
    let Some(vpc_id) = seen.vpc.as_ref().map(|v| v.id.clone()) else {
        return Ok(seen);
    };
    let in_vpc = Filter::builder().name("vpc-id").values(&vpc_id).build();

    let subnets = aws
        .ec2
        .describe_subnets()
        .filters(stack_filter(stack))
        .filters(in_vpc.clone())
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeSubnets"))?;
    for s in subnets.subnets() {
        let id = s.subnet_id().unwrap_or_default();
        let value = SeenSubnet {
            id: id.to_string(),
            zone: s.availability_zone().unwrap_or_default().to_string(),
            cidr: s.cidr_block().unwrap_or_default().to_string(),
            map_public_ip: s.map_public_ip_on_launch().unwrap_or(false),
        };
        insert_once(
            &mut seen.subnets,
            &mut seen.duplicates,
            key_of(s.tags()),
            id,
            value,
        );
    }

    let eips = aws
        .ec2
        .describe_addresses()
        .filters(stack_filter(stack))
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeAddresses"))?;
    for a in eips.addresses() {
        let id = a.allocation_id().unwrap_or_default();
        insert_once(
            &mut seen.eips,
            &mut seen.duplicates,
            key_of(a.tags()),
            id,
            id.to_string(),
        );
    }

    let nats = aws
        .ec2
        .describe_nat_gateways()
        .filter(stack_filter(stack))
        .filter(in_vpc.clone())
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeNatGateways"))?;
    for n in nats.nat_gateways() {
        let state = n.state().cloned();
        if matches!(
            state,
            Some(NatGatewayState::Deleted | NatGatewayState::Deleting | NatGatewayState::Failed)
        ) {
            continue;
        }
        let id = n.nat_gateway_id().unwrap_or_default();
        let value = SeenNat {
            id: id.to_string(),
            available: state == Some(NatGatewayState::Available),
        };
        insert_once(
            &mut seen.nats,
            &mut seen.duplicates,
            key_of(n.tags()),
            id,
            value,
        );
    }

    let tables = aws
        .ec2
        .describe_route_tables()
        .filters(stack_filter(stack))
        .filters(in_vpc)
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeRouteTables"))?;
    for t in tables.route_tables() {
        let id = t.route_table_id().unwrap_or_default();
        let default_target = t
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
            .and_then(|r| r.nat_gateway_id().or(r.gateway_id()))
            .map(str::to_string);
        let value = SeenRouteTable {
            id: id.to_string(),
            default_target,
            subnets: t
                .associations()
                .iter()
                .filter_map(|a| a.subnet_id().map(str::to_string))
                .collect(),
        };
        insert_once(
            &mut seen.route_tables,
            &mut seen.duplicates,
            key_of(t.tags()),
            id,
            value,
        );
    }
    Ok(seen)
}
