//! Tearing the network down: what the stage tags, as a table of kinds in deletion order
//! ([`KINDS`]: how each is found by the stack's tag, and how it is deleted), and what others
//! put in the stack's VPC: VPC endpoints and their security groups
//! ([`sweep::find_vpc_endpoints`]: GuardDuty's runtime monitoring adds one), and what the
//! cluster left there ([`sweep::find_in_vpc`]).

use std::time::Duration;

use aws_sdk_ec2::types::{Filter, NatGatewayState, Tag};
use futures::future::BoxFuture;

use super::observe::stack_filter;
use super::plan::nat_owns;
use crate::aws::sweep::{self, Owner};
use crate::aws::teardown::{Found, Kind, Swept, Teardown, Verb};
use crate::aws::{sdk_err, Answer, AwsClients, AwsError, Backoff, RESOURCE_TAG};
use crate::config::Stack;
use crate::engine::run::{Outcome, StageHandle};
use crate::stages::{deletion, Change, Context, StageError};

/// "Not yet" answers while what uses an address, a subnet or the VPC lets go.
const IN_USE: &[&str] = &[
    "DependencyViolation",
    "InvalidIPAddress.InUse",
    "AuthFailure.AddressInUse",
];
const DEPENDENCY: &[&str] = &["DependencyViolation"];

/// Lists the (id, `Name` tag, resource key) of what of a kind carries the stack's tag (the
/// filter).
type Describe = for<'a> fn(
    &'a AwsClients,
    Filter,
) -> BoxFuture<'a, Result<Vec<(String, String, String)>, AwsError>>;

/// A kind the stage tags: how `down` finds it, and how it deletes it.
struct Tagged {
    kind: &'static Kind,
    describe: Describe,
}

/// Everything the stage tags, in deletion order. A NAT gateway holds its Elastic IP and its
/// subnet until it is gone, so its deletion is waited for, and a failure ends `down` at once;
/// subnets and the VPC go last, when nothing in them is left.
const KINDS: [Tagged; 6] = [
    Tagged {
        kind: NAT_GATEWAY,
        describe: |aws, tagged| {
            Box::pin(async move {
                let req = aws.ec2.describe_nat_gateways().filter(tagged.clone());
                let out = req
                    .send()
                    .await
                    .map_err(sdk_err("ec2:DescribeNatGateways"))?;
                let live = out.nat_gateways().iter();
                let live = live.filter(|n| n.state() != Some(&NatGatewayState::Deleted));
                // The tag again, client-side: an emulator (moto) ignores this filter, and one
                // stack's teardown must never delete another's NAT gateways.
                let live = live.filter(|n| carries(n.tags(), &tagged));
                Ok(live.map(|n| named(n.nat_gateway_id(), n.tags())).collect())
            })
        },
    },
    Tagged {
        kind: ELASTIC_IP,
        describe: |aws, tagged| {
            Box::pin(async move {
                let req = aws.ec2.describe_addresses().filters(tagged);
                let out = req.send().await.map_err(sdk_err("ec2:DescribeAddresses"))?;
                let all = out.addresses().iter();
                Ok(all.map(|a| named(a.allocation_id(), a.tags())).collect())
            })
        },
    },
    Tagged {
        kind: ROUTE_TABLE,
        describe: |aws, tagged| {
            Box::pin(async move {
                let req = aws.ec2.describe_route_tables().filters(tagged);
                let out = req
                    .send()
                    .await
                    .map_err(sdk_err("ec2:DescribeRouteTables"))?;
                let all = out.route_tables().iter();
                Ok(all.map(|t| named(t.route_table_id(), t.tags())).collect())
            })
        },
    },
    Tagged {
        kind: INTERNET_GATEWAY,
        describe: |aws, tagged| {
            Box::pin(async move {
                let req = aws.ec2.describe_internet_gateways().filters(tagged);
                let out = req
                    .send()
                    .await
                    .map_err(sdk_err("ec2:DescribeInternetGateways"))?;
                let all = out.internet_gateways().iter();
                Ok(all
                    .map(|g| named(g.internet_gateway_id(), g.tags()))
                    .collect())
            })
        },
    },
    Tagged {
        kind: SUBNET,
        describe: |aws, tagged| {
            Box::pin(async move {
                let req = aws.ec2.describe_subnets().filters(tagged);
                let out = req.send().await.map_err(sdk_err("ec2:DescribeSubnets"))?;
                let all = out.subnets().iter();
                Ok(all.map(|s| named(s.subnet_id(), s.tags())).collect())
            })
        },
    },
    Tagged {
        kind: VPC,
        describe: |aws, tagged| {
            Box::pin(async move {
                let req = aws.ec2.describe_vpcs().filters(tagged);
                let out = req.send().await.map_err(sdk_err("ec2:DescribeVpcs"))?;
                let all = out.vpcs().iter();
                Ok(all.map(|v| named(v.vpc_id(), v.tags())).collect())
            })
        },
    },
];

const NAT_GATEWAY: &Kind = &Kind {
    present: Some(|aws, ids| Box::pin(nats_present(aws, ids))),
    fatal: true,
    ..Kind::new("nat-gateway", "NAT gateway", |aws, id| {
        let req = aws.ec2.delete_nat_gateway().nat_gateway_id(id);
        Box::pin(async { req.send().await.ack("ec2:DeleteNatGateway") })
    })
};

const ELASTIC_IP: &Kind = &Kind {
    verb: Verb::Release,
    retry: IN_USE,
    ..Kind::new("elastic-ip", "Elastic IP", |aws, id| {
        let req = aws.ec2.release_address().allocation_id(id);
        Box::pin(async { req.send().await.ack("ec2:ReleaseAddress") })
    })
};

/// Its subnets are disassociated first (the VPC's main association stays with the VPC).
const ROUTE_TABLE: &Kind = &Kind {
    retry: DEPENDENCY,
    detach: Some(|aws, id| Box::pin(disassociate(aws, id))),
    ..Kind::new("route-table", "route table", |aws, id| {
        let req = aws.ec2.delete_route_table().route_table_id(id);
        Box::pin(async { req.send().await.ack("ec2:DeleteRouteTable") })
    })
};

/// Detached from the VPC first.
const INTERNET_GATEWAY: &Kind = &Kind {
    retry: DEPENDENCY,
    detach: Some(|aws, id| Box::pin(detach_gateway(aws, id))),
    ..Kind::new("internet-gateway", "internet gateway", |aws, id| {
        let req = aws.ec2.delete_internet_gateway().internet_gateway_id(id);
        Box::pin(async { req.send().await.ack("ec2:DeleteInternetGateway") })
    })
};

const SUBNET: &Kind = &Kind {
    retry: IN_USE,
    resweep: true,
    ..Kind::new("subnet", "subnet", |aws, id| {
        let req = aws.ec2.delete_subnet().subnet_id(id);
        Box::pin(async { req.send().await.ack("ec2:DeleteSubnet") })
    })
};

const VPC: &Kind = &Kind {
    retry: IN_USE,
    resweep: true,
    ..Kind::new("vpc", "VPC", |aws, id| {
        let req = aws.ec2.delete_vpc().vpc_id(id);
        Box::pin(async { req.send().await.ack("ec2:DeleteVpc") })
    })
};

/// Whether `tags` satisfy a `tag:KEY` filter (one of its values).
fn carries(tags: &[Tag], filter: &Filter) -> bool {
    let Some(key) = filter.name().and_then(|n| n.strip_prefix("tag:")) else {
        return true;
    };
    tags.iter().any(|t| {
        t.key() == Some(key)
            && t.value()
                .is_some_and(|v| filter.values().iter().any(|w| w == v))
    })
}

/// A resource's id, its `Name` tag and its resource key (which stage owns it:
/// [`nat_owns`]).
fn named(id: Option<&str>, tags: &[Tag]) -> (String, String, String) {
    let tag = |key: &str| {
        let tag = tags.iter().find(|t| t.key() == Some(key));
        tag.and_then(|t| t.value()).unwrap_or_default().to_string()
    };
    (
        id.unwrap_or_default().to_string(),
        tag("Name"),
        tag(RESOURCE_TAG),
    )
}

/// Which of the stack's tagged network resources a teardown looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The `network` stage's: VPC, internet gateway, subnets, the public route table.
    Network,
    /// The `nat` stage's: NAT gateways, Elastic IPs, the private route tables.
    Nat,
    /// Both: the `network` stage's `down` deletes whatever of the `nat` stage's is left (a
    /// NAT gateway keeps its subnet, and so the VPC, from being deleted).
    All,
}

impl Part {
    fn keeps(self, key: &str) -> bool {
        match self {
            Part::Network => !nat_owns(key),
            Part::Nat => nat_owns(key),
            Part::All => true,
        }
    }
}

async fn nats_present(aws: &AwsClients, ids: &[String]) -> Result<Vec<String>, AwsError> {
    let mut there = Vec::new();
    for id in ids {
        let req = aws.ec2.describe_nat_gateways().nat_gateway_ids(id);
        let out = req.send().await.lookup("ec2:DescribeNatGateways")?;
        let nat = out.as_ref().and_then(|o| o.nat_gateways().first());
        if nat.is_some_and(|n| n.state() != Some(&NatGatewayState::Deleted)) {
            there.push(id.clone());
        }
    }
    Ok(there)
}

/// Take route table `id`'s subnets off it.
async fn disassociate(aws: &AwsClients, id: &str) -> Result<(), AwsError> {
    let req = aws.ec2.describe_route_tables().route_table_ids(id);
    let out = req
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeRouteTables"))?;
    let associations = out.route_tables().iter().flat_map(|t| t.associations());
    for a in associations.filter(|a| a.main() != Some(true)) {
        if let Some(association) = a.route_table_association_id() {
            let req = aws
                .ec2
                .disassociate_route_table()
                .association_id(association);
            req.send().await.gone("ec2:DisassociateRouteTable")?;
        }
    }
    Ok(())
}

/// Detach internet gateway `id` from its VPC.
async fn detach_gateway(aws: &AwsClients, id: &str) -> Result<(), AwsError> {
    let req = aws
        .ec2
        .describe_internet_gateways()
        .internet_gateway_ids(id);
    let out = req
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeInternetGateways"))?;
    let attachments = out.internet_gateways().iter().flat_map(|g| g.attachments());
    for vpc in attachments.filter_map(|a| a.vpc_id()) {
        let req = aws
            .ec2
            .detach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(vpc);
        req.send().await.ack("ec2:DetachInternetGateway")?;
    }
    Ok(())
}

/// Everything tagged for this stack that `part` keeps, in deletion order.
async fn inventory(aws: &AwsClients, stack: &Stack, part: Part) -> Result<Vec<Found>, AwsError> {
    let mut all = Vec::new();
    for tagged in &KINDS {
        let described = (tagged.describe)(aws, stack_filter(stack)).await?;
        let kept = described.into_iter().filter(|(_, _, key)| part.keeps(key));
        all.extend(kept.map(|(id, name, _)| Found {
            kind: tagged.kind,
            id,
            name,
            why: "",
        }));
    }
    Ok(all)
}

/// What `plan --destroy` lists, in the order `down` deletes it: the VPC endpoints others put in
/// the stack's VPC and their security groups, and what the cluster left there (each with why,
/// as meshstack did not make them), then everything tagged for the stack.
///
/// `part`: [`Part::Network`] for the `network` stage, [`Part::Nat`] for the `nat` stage (which
/// lists only its own, and nothing others put in the VPC).
pub async fn plan(cx: &Context, part: Part) -> Result<Vec<Change>, StageError> {
    let Some(aws) = &cx.aws else {
        return Ok(Vec::new());
    };
    let items = inventory(aws, &cx.stack, part).await?;
    let mut changes = Vec::new();
    let owner = Owner::of(&cx.stack);
    for vpc in items.iter().filter(|f| f.kind == VPC) {
        let endpoints = sweep::find_vpc_endpoints(aws, owner, &vpc.id).await?;
        let found = sweep::find_in_vpc(aws, owner, &vpc.id).await?;
        changes.extend(endpoints.iter().chain(&found).map(deletion));
    }
    changes.extend(items.iter().map(deletion));
    Ok(changes)
}

/// Delete everything tagged for the stack, dependents first. Only resources carrying the stack
/// tag are touched, and in the stack's VPC (found by that tag) the VPC endpoints others put
/// there with their security groups ([`sweep::find_vpc_endpoints`]) and what the cluster left
/// there ([`sweep::find_in_vpc`]).
pub(super) async fn down(
    cx: &Context,
    aws: &AwsClients,
    h: &StageHandle,
) -> Result<Outcome, StageError> {
    h.step("observing");
    let items = inventory(aws, &cx.stack, Part::All).await?;
    if items.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    let owner = Owner::of(&cx.stack);
    let deps = cx.waits.dependency;
    let (nats, rest): (Vec<Found>, Vec<Found>) =
        items.into_iter().partition(|f| f.kind == NAT_GATEWAY);
    let vpcs: Vec<&str> = rest
        .iter()
        .filter(|f| f.kind == VPC)
        .map(|f| f.id.as_str())
        .collect();

    let mut swept = Teardown {
        wait: cx.waits.nat,
        ..Teardown::new(aws, deps, h)
    }
    .delete(&nats)
    .await?;

    // A VPC endpoint holds interfaces in the subnets and its security group, and the VPC cannot
    // go while either is there: GuardDuty's runtime monitoring adds both to a monitored
    // cluster's VPC. EC2 takes a minute or two to remove an endpoint; its groups go after it,
    // the wait bounded by the dependency deadline.
    for vpc in &vpcs {
        let found = sweep::find_vpc_endpoints(aws, owner, vpc).await?;
        if found.is_empty() {
            continue;
        }
        h.step(format!(
            "deleting what others put in VPC {vpc}: {} VPC endpoint(s) and their security groups",
            found
                .iter()
                .filter(|f| f.kind == sweep::VPC_ENDPOINT)
                .count()
        ));
        let (endpoints, groups): (Vec<Found>, Vec<Found>) = found
            .into_iter()
            .partition(|f| f.kind == sweep::VPC_ENDPOINT);
        swept.merge(Teardown::new(aws, deps, h).delete(&endpoints).await?);
        swept.merge(Teardown::new(aws, deps, h).delete(&groups).await?);
    }

    // Load balancers' security groups and detached interfaces keep the subnets and the VPC
    // from being deleted; they carry the cluster's tags or names, not the stack's.
    for vpc in &vpcs {
        h.step(format!("looking for what the cluster left in VPC {vpc}"));
        let found = sweep::find_in_vpc(aws, owner, vpc).await?;
        swept.merge(Teardown::new(aws, deps, h).delete(&found).await?);
    }

    // Interfaces keep letting go while the teardown runs (a load balancer's, the VPC CNI's):
    // when a subnet or the VPC still has dependencies, look in the VPC again before the next
    // try. One attempt per leftover here; the delete's own back-off paces the rounds.
    let resweep = || -> BoxFuture<'_, usize> {
        Box::pin(async {
            let once = Backoff::new(Duration::ZERO, Duration::ZERO, Duration::ZERO);
            let mut deleted = 0;
            for vpc in &vpcs {
                if let Ok(found) = sweep::find_in_vpc(aws, owner, vpc).await {
                    let again = Teardown::new(aws, once, h).delete(&found).await;
                    deleted += again.map_or(0, |s: Swept| s.deleted);
                }
            }
            deleted
        })
    };
    let teardown = Teardown {
        resweep: Some(&resweep),
        ..Teardown::new(aws, deps, h)
    };
    swept.merge(teardown.delete(&rest).await?);

    if swept.remaining.is_empty() {
        Ok(Outcome::Changed(format!("deleted {}", swept.deleted)))
    } else {
        Err(StageError::Remaining(swept.remaining.join("; ")))
    }
}

/// The `nat` stage's teardown: its NAT gateways (waited for until deleted: each holds its
/// Elastic IP and its public subnet), then their Elastic IPs, then the private route tables
/// (their subnets disassociated first). Only resources carrying the stack tag and a key the
/// `nat` stage owns are touched.
pub async fn down_nat(
    cx: &Context,
    aws: &AwsClients,
    h: &StageHandle,
) -> Result<Outcome, StageError> {
    h.step("observing");
    let items = inventory(aws, &cx.stack, Part::Nat).await?;
    if items.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    let deps = cx.waits.dependency;
    let (nats, rest): (Vec<Found>, Vec<Found>) =
        items.into_iter().partition(|f| f.kind == NAT_GATEWAY);
    let mut swept = Teardown {
        wait: cx.waits.nat,
        ..Teardown::new(aws, deps, h)
    }
    .delete(&nats)
    .await?;
    swept.merge(Teardown::new(aws, deps, h).delete(&rest).await?);
    if swept.remaining.is_empty() {
        Ok(Outcome::Changed(format!("deleted {}", swept.deleted)))
    } else {
        Err(StageError::Remaining(swept.remaining.join("; ")))
    }
}
