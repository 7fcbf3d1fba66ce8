//! Carrying out `up`'s steps. Every create tags the resource in the call itself
//! (`TagSpecifications`) and records its intent in the journal first and its id after.

use std::future::Future;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, NatGatewayState, ResourceType, Tag, TagSpecification,
};

use super::plan::{
    nat_owns, resource_name, Seen, SeenIgw, SeenNat, SeenRouteTable, SeenSubnet, SeenVpc, Step,
    Target,
};
use super::ID;
use crate::aws::{
    resource_tags, retry_codes, sdk_err, wait_for, Answer, AwsClients, AwsError, Backoff,
};
use crate::config::{Ipv4Cidr, Stack};
use crate::engine::run::StageHandle;
use crate::stages::{Context, StageError};

type Ec2 = aws_sdk_ec2::Client;

/// Carry out one step, recording what it created in `seen` so later steps can refer to it.
pub(crate) async fn execute(
    cx: &Context,
    aws: &AwsClients,
    step: &Step,
    seen: &mut Seen,
    h: &StageHandle,
) -> Result<(), StageError> {
    let ec2 = &aws.ec2;
    match step {
        Step::CreateVpc => create_vpc(cx, ec2, seen).await,
        Step::EnableDns => enable_dns(cx, ec2, &vpc_id(seen)?, h).await,
        Step::CreateIgw => create_igw(cx, ec2, seen).await,
        Step::AttachIgw => attach_igw(cx, ec2, seen, h).await,
        Step::CreateSubnet {
            key, zone, cidr, ..
        } => create_subnet(cx, ec2, seen, key, zone, cidr).await,
        Step::MapPublicIp { key } => map_public_ip(cx, ec2, &subnet_id(seen, key)?, h).await,
        Step::CreateRouteTable { key } => create_route_table(cx, ec2, seen, key).await,
        Step::DefaultRoute {
            table,
            target,
            replace,
        } => {
            let target_id = route_target(cx, aws, target, seen, h).await?;
            default_route(cx, ec2, seen, table, target, target_id, *replace, h).await
        }
        Step::Associate { table, subnet } => associate(cx, ec2, seen, table, subnet, h).await,
        Step::AllocateEip { key } => allocate_eip(cx, ec2, seen, key).await,
        Step::CreateNat { key, subnet, eip } => {
            create_nat(cx, ec2, seen, key, subnet, eip, h).await
        }
    }
}

/// `op`, a call naming resources created moments ago, retried while EC2 answers one of
/// `codes` (`InvalidVpcID.NotFound`, ...): EC2 is eventually consistent, and a resource its
/// create call returned may be unknown to the next call for a while ("Eventual consistency in
/// the Amazon EC2 API"). Bounded by `cx.waits.ec2_consistency`; any other error at once.
async fn after_create<T, F, Fut>(
    cx: &Context,
    h: &StageHandle,
    what: &str,
    codes: &[&str],
    op: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    retry_codes(cx.waits.ec2_consistency, codes, h, what, op).await
}

async fn create_vpc(cx: &Context, ec2: &Ec2, seen: &mut Seen) -> Result<(), StageError> {
    let stack = &cx.stack;
    let cidr = stack.network.vpc_cidr.to_string();
    let id = create(cx, "vpc", |_| async {
        let out = ec2
            .create_vpc()
            .cidr_block(&cidr)
            .tag_specifications(tag_spec(stack, ResourceType::Vpc, "vpc"))
            .send()
            .await
            .map_err(sdk_err("ec2:CreateVpc"))?;
        let vpc = out
            .vpc()
            .ok_or_else(|| AwsError::new("ec2:CreateVpc", None, "no VPC in the answer"))?;
        Ok(vpc.vpc_id().unwrap_or_default().to_string())
    })
    .await?;
    seen.vpc = Some(SeenVpc {
        id,
        cidr,
        dns_support: true,
        dns_hostnames: false,
    });
    Ok(())
}

async fn enable_dns(cx: &Context, ec2: &Ec2, vpc: &str, h: &StageHandle) -> Result<(), StageError> {
    let on = || AttributeBooleanValue::builder().value(true).build();
    let codes = &["InvalidVpcID.NotFound"];
    // One attribute per call: the API refuses both at once.
    after_create(cx, h, "enable DNS support", codes, || {
        let support = ec2.modify_vpc_attribute().vpc_id(vpc);
        async move {
            support
                .enable_dns_support(on())
                .send()
                .await
                .ack("ec2:ModifyVpcAttribute")
        }
    })
    .await?;
    after_create(cx, h, "enable DNS hostnames", codes, || {
        let hostnames = ec2.modify_vpc_attribute().vpc_id(vpc);
        async move {
            hostnames
                .enable_dns_hostnames(on())
                .send()
                .await
                .ack("ec2:ModifyVpcAttribute")
        }
    })
    .await?;
    Ok(())
}

async fn create_igw(cx: &Context, ec2: &Ec2, seen: &mut Seen) -> Result<(), StageError> {
    let id = create(cx, "igw", |_| async {
        let out = ec2
            .create_internet_gateway()
            .tag_specifications(tag_spec(&cx.stack, ResourceType::InternetGateway, "igw"))
            .send()
            .await
            .map_err(sdk_err("ec2:CreateInternetGateway"))?;
        let igw = out.internet_gateway().and_then(|g| g.internet_gateway_id());
        Ok(igw.unwrap_or_default().to_string())
    })
    .await?;
    seen.igw = Some(SeenIgw {
        id,
        attached_to: vec![],
    });
    Ok(())
}

async fn attach_igw(
    cx: &Context,
    ec2: &Ec2,
    seen: &mut Seen,
    h: &StageHandle,
) -> Result<(), StageError> {
    let vpc = vpc_id(seen)?;
    let igw = seen
        .igw
        .as_mut()
        .ok_or_else(|| StageError::Missing("internet gateway".into()))?;
    let codes = &["InvalidInternetGatewayID.NotFound", "InvalidVpcID.NotFound"];
    let res = after_create(cx, h, "attach internet gateway", codes, || {
        let req = ec2
            .attach_internet_gateway()
            .internet_gateway_id(&igw.id)
            .vpc_id(&vpc);
        async move { req.send().await.ack("ec2:AttachInternetGateway") }
    })
    .await;
    done_already(res, "Resource.AlreadyAssociated")?;
    igw.attached_to.push(vpc);
    Ok(())
}

async fn create_subnet(
    cx: &Context,
    ec2: &Ec2,
    seen: &mut Seen,
    key: &str,
    zone: &str,
    cidr: &Ipv4Cidr,
) -> Result<(), StageError> {
    let vpc = vpc_id(seen)?;
    let id = create(cx, key, |_| async {
        let out = ec2
            .create_subnet()
            .vpc_id(vpc)
            .cidr_block(cidr.to_string())
            .availability_zone(zone)
            .tag_specifications(subnet_tags(&cx.stack, key))
            .send()
            .await
            .map_err(sdk_err("ec2:CreateSubnet"))?;
        let subnet = out.subnet().and_then(|s| s.subnet_id());
        Ok(subnet.unwrap_or_default().to_string())
    })
    .await?;
    let subnet = SeenSubnet {
        id,
        zone: zone.to_string(),
        cidr: cidr.to_string(),
        map_public_ip: false,
    };
    seen.subnets.insert(key.to_string(), subnet);
    Ok(())
}

async fn map_public_ip(
    cx: &Context,
    ec2: &Ec2,
    subnet: &str,
    h: &StageHandle,
) -> Result<(), StageError> {
    let codes = &["InvalidSubnetID.NotFound"];
    let res = after_create(cx, h, "map public IPs", codes, || {
        let req = ec2
            .modify_subnet_attribute()
            .subnet_id(subnet)
            .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build());
        async move { req.send().await.ack("ec2:ModifySubnetAttribute") }
    });
    Ok(res.await?)
}

async fn create_route_table(
    cx: &Context,
    ec2: &Ec2,
    seen: &mut Seen,
    key: &str,
) -> Result<(), StageError> {
    let vpc = vpc_id(seen)?;
    let id = create(cx, key, |token| async move {
        let out = ec2
            .create_route_table()
            .vpc_id(vpc)
            .tag_specifications(tag_spec(&cx.stack, ResourceType::RouteTable, key))
            .set_client_token(token)
            .send()
            .await
            .map_err(sdk_err("ec2:CreateRouteTable"))?;
        let table = out.route_table().and_then(|t| t.route_table_id());
        Ok(table.unwrap_or_default().to_string())
    })
    .await?;
    let table = SeenRouteTable {
        id,
        default_target: None,
        subnets: vec![],
    };
    seen.route_tables.insert(key.to_string(), table);
    Ok(())
}

/// Create (or, with `replace`, repoint) the default route of route table `table`.
#[allow(clippy::too_many_arguments)]
async fn default_route(
    cx: &Context,
    ec2: &Ec2,
    seen: &mut Seen,
    table: &str,
    target: &Target,
    target_id: String,
    replace: bool,
    h: &StageHandle,
) -> Result<(), StageError> {
    let table_id = table_id(seen, table)?;
    let (nat, gateway) = match target {
        Target::Nat(_) => (Some(target_id.clone()), None),
        Target::Igw => (None, Some(target_id.clone())),
    };
    let codes = &[
        "InvalidRouteTableID.NotFound",
        "InvalidNatGatewayID.NotFound",
        "InvalidGatewayID.NotFound",
    ];
    if replace {
        let req = ec2
            .replace_route()
            .route_table_id(&table_id)
            .destination_cidr_block("0.0.0.0/0")
            .set_nat_gateway_id(nat)
            .set_gateway_id(gateway);
        req.send().await.ack("ec2:ReplaceRoute")?;
    } else {
        let res = after_create(cx, h, "create the default route", codes, || {
            let req = ec2
                .create_route()
                .route_table_id(&table_id)
                .destination_cidr_block("0.0.0.0/0")
                .set_nat_gateway_id(nat.clone())
                .set_gateway_id(gateway.clone());
            async move { req.send().await.ack("ec2:CreateRoute") }
        })
        .await;
        done_already(res, "RouteAlreadyExists")?;
    }
    if let Some(t) = seen.route_tables.get_mut(table) {
        t.default_target = Some(target_id);
    }
    Ok(())
}

async fn associate(
    cx: &Context,
    ec2: &Ec2,
    seen: &mut Seen,
    table: &str,
    subnet: &str,
    h: &StageHandle,
) -> Result<(), StageError> {
    let table_id = table_id(seen, table)?;
    let subnet_id = subnet_id(seen, subnet)?;
    let codes = &["InvalidRouteTableID.NotFound", "InvalidSubnetID.NotFound"];
    let res = after_create(cx, h, "associate the route table", codes, || {
        let req = ec2
            .associate_route_table()
            .route_table_id(&table_id)
            .subnet_id(&subnet_id);
        async move { req.send().await.ack("ec2:AssociateRouteTable") }
    })
    .await;
    done_already(res, "Resource.AlreadyAssociated")?;
    if let Some(t) = seen.route_tables.get_mut(table) {
        t.subnets.push(subnet_id);
    }
    Ok(())
}

async fn allocate_eip(
    cx: &Context,
    ec2: &Ec2,
    seen: &mut Seen,
    key: &str,
) -> Result<(), StageError> {
    let id = create(cx, key, |_| async {
        let out = ec2
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(tag_spec(&cx.stack, ResourceType::ElasticIp, key))
            .send()
            .await
            .map_err(sdk_err("ec2:AllocateAddress"))?;
        Ok(out.allocation_id().unwrap_or_default().to_string())
    })
    .await?;
    seen.eips.insert(key.to_string(), id);
    Ok(())
}

async fn create_nat(
    cx: &Context,
    ec2: &Ec2,
    seen: &mut Seen,
    key: &str,
    subnet: &str,
    eip: &str,
    h: &StageHandle,
) -> Result<(), StageError> {
    let allocation = seen
        .eips
        .get(eip)
        .cloned()
        .ok_or_else(|| StageError::Missing(format!("Elastic IP {eip}")))?;
    let subnet = subnet_id(seen, subnet)?;
    let mut available = false;
    let state = &mut available;
    let codes = &["InvalidAllocationID.NotFound", "InvalidSubnetID.NotFound"];
    let id = create(cx, key, |token| async move {
        // The same client token on every try: one NAT gateway, however many tries.
        let out = after_create(cx, h, "create NAT gateway", codes, || {
            let req = ec2
                .create_nat_gateway()
                .subnet_id(&subnet)
                .allocation_id(&allocation)
                .tag_specifications(tag_spec(&cx.stack, ResourceType::Natgateway, key))
                .set_client_token(token.clone());
            async move { req.send().await.map_err(sdk_err("ec2:CreateNatGateway")) }
        })
        .await?;
        let nat = out.nat_gateway();
        *state = nat.and_then(|n| n.state()) == Some(&NatGatewayState::Available);
        let id = nat.and_then(|n| n.nat_gateway_id());
        Ok(id.unwrap_or_default().to_string())
    })
    .await?;
    seen.nats.insert(key.to_string(), SeenNat { id, available });
    Ok(())
}

/// Create the resource `key`, with the intent before and the id after in the journal, under
/// the stage that owns it ([`nat_owns`]).
/// `create` gets the client token to send, if there is one (the one a killed run sent, if it
/// got that far), and returns the new resource's id.
async fn create<F, Fut>(cx: &Context, key: &str, create: F) -> Result<String, StageError>
where
    F: FnOnce(Option<String>) -> Fut,
    Fut: Future<Output = Result<String, AwsError>>,
{
    let stage = if nat_owns(key) {
        // A killed run of the layout where `network` made these recorded them under it.
        cx.move_intent(ID, crate::stages::nat::ID, key)?;
        crate::stages::nat::ID
    } else {
        ID
    };
    let token = cx.begin(stage, key)?;
    let id = create(Some(token).filter(|t| !t.is_empty())).await?;
    cx.complete(stage, key, &id)?;
    Ok(id)
}

/// `Ok` also when AWS answers `code`: what the call would do is done already (a killed run got
/// this far).
fn done_already(res: Result<(), AwsError>, code: &str) -> Result<(), AwsError> {
    match res {
        Err(e) if e.is(code) => Ok(()),
        other => other,
    }
}

fn vpc_id(seen: &Seen) -> Result<String, StageError> {
    seen.vpc
        .as_ref()
        .map(|v| v.id.clone())
        .ok_or_else(|| StageError::Missing("VPC".into()))
}

fn subnet_id(seen: &Seen, key: &str) -> Result<String, StageError> {
    seen.subnets
        .get(key)
        .map(|s| s.id.clone())
        .ok_or_else(|| StageError::Missing(format!("subnet {key}")))
}

fn table_id(seen: &Seen, key: &str) -> Result<String, StageError> {
    seen.route_tables
        .get(key)
        .map(|t| t.id.clone())
        .ok_or_else(|| StageError::Missing(format!("route table {key}")))
}

/// The id a default route points at; a NAT gateway is waited for until it is available.
async fn route_target(
    cx: &Context,
    aws: &AwsClients,
    target: &Target,
    seen: &mut Seen,
    h: &StageHandle,
) -> Result<String, StageError> {
    match target {
        Target::Igw => seen
            .igw
            .as_ref()
            .map(|g| g.id.clone())
            .ok_or_else(|| StageError::Missing("internet gateway".into())),
        Target::Nat(key) => {
            let nat = seen
                .nats
                .get_mut(key)
                .ok_or_else(|| StageError::Missing(format!("NAT gateway {key}")))?;
            if !nat.available {
                h.step(format!(
                    "waiting for NAT gateway {} to become available",
                    nat.id
                ));
                wait_nat_available(aws, &nat.id, cx.waits.nat, cx.waits.ec2_consistency).await?;
                nat.available = true;
            }
            Ok(nat.id.clone())
        }
    }
}

fn tag_spec(stack: &Stack, kind: ResourceType, key: &str) -> TagSpecification {
    let tags = resource_tags(stack, key, &resource_name(stack, key))
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(tags))
        .build()
}

/// A subnet's tags: the stack's, and those by which load balancers and Karpenter find it.
fn subnet_tags(stack: &Stack, key: &str) -> TagSpecification {
    let mut spec = tag_spec(stack, ResourceType::Subnet, key);
    let extra: Vec<(String, String)> = if key.starts_with("subnet/public/") {
        vec![("kubernetes.io/role/elb".into(), "1".into())]
    } else {
        vec![
            ("kubernetes.io/role/internal-elb".into(), "1".into()),
            (
                "karpenter.sh/discovery".into(),
                stack.cluster_name().to_string(),
            ),
        ]
    };
    let mut tags = spec.tags.take().unwrap_or_default();
    tags.extend(
        extra
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build()),
    );
    spec.tags = Some(tags);
    spec
}

/// Polls NAT gateway `id` until it is available. Asked for by ID moments after its create,
/// EC2 may answer `NatGatewayNotFound` (eventual consistency): that counts as "not yet" for
/// the first `consistency.deadline`, an error after it.
pub(crate) async fn wait_nat_available(
    aws: &AwsClients,
    id: &str,
    backoff: Backoff,
    consistency: Backoff,
) -> Result<(), StageError> {
    let started = std::time::Instant::now();
    let ready = wait_for(backoff, || async {
        let out = aws
            .ec2
            .describe_nat_gateways()
            .nat_gateway_ids(id)
            .send()
            .await
            .map_err(sdk_err("ec2:DescribeNatGateways"));
        let out = match out {
            Err(e) if e.is("NatGatewayNotFound") && started.elapsed() < consistency.deadline => {
                return Ok(None)
            }
            other => other?,
        };
        match out.nat_gateways().first().and_then(|n| n.state()) {
            Some(NatGatewayState::Available) => Ok(Some(())),
            Some(NatGatewayState::Failed) => Err(AwsError::new(
                "ec2:DescribeNatGateways",
                Some("NatGatewayFailed".into()),
                format!(
                    "NAT gateway {id} failed: {}",
                    out.nat_gateways()[0]
                        .failure_message()
                        .unwrap_or("no reason given")
                ),
            )),
            _ => Ok(None),
        }
    })
    .await?;
    ready.ok_or_else(|| StageError::Timeout {
        what: format!("NAT gateway {id}"),
        after: backoff.deadline,
    })
}
