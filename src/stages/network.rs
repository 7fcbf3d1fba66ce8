//! Stage `network`: a VPC over the chosen zones with one public and one private subnet per
//! zone, an internet gateway, NAT gateway(s) with Elastic IPs (one per zone by default, so no
//! traffic crosses zones to reach the internet), and route tables.
//!
//! Every resource is tagged at creation (`TagSpecifications`), so a create that succeeded is
//! observable even if the process died before the journal was written; that is what makes a
//! killed `up` resumable without duplicates.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, Filter, NatGatewayState, ResourceType, Tag,
    TagSpecification, VpcAttributeName,
};

use super::{outcome, refuse_conflicts, Action, Change, Context, Stage, StageError};
use crate::aws::sweep::{self, Owner, Swept};
use crate::aws::{
    resource_tags, retry_codes, sdk_err, wait_for, AwsClients, AwsError, RESOURCE_TAG, STACK_TAG,
};
use crate::config::{Ipv4Cidr, NatMode, Stack};
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};

pub const ID: StageId = "network";

pub struct Network;

/// What dependents need from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    pub vpc_id: String,
    /// In zone order.
    pub public_subnets: Vec<String>,
    /// In zone order.
    pub private_subnets: Vec<String>,
}

/// The network as found in the account, by resource key.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Seen {
    pub vpc: Option<SeenVpc>,
    pub igw: Option<SeenIgw>,
    pub subnets: BTreeMap<String, SeenSubnet>,
    pub eips: BTreeMap<String, String>,
    pub nats: BTreeMap<String, SeenNat>,
    pub route_tables: BTreeMap<String, SeenRouteTable>,
    /// Resources carrying a key that another resource already has (a crash between create and
    /// journal in a tool without tags would make these; meshstack reports them).
    pub duplicates: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeenVpc {
    pub id: String,
    pub cidr: String,
    pub dns_support: bool,
    pub dns_hostnames: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeenIgw {
    pub id: String,
    pub attached_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeenSubnet {
    pub id: String,
    pub zone: String,
    pub cidr: String,
    pub map_public_ip: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeenNat {
    pub id: String,
    pub available: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeenRouteTable {
    pub id: String,
    /// Target of the 0.0.0.0/0 route: an internet gateway or NAT gateway id.
    pub default_target: Option<String>,
    /// Subnet ids explicitly associated.
    pub subnets: Vec<String>,
}

/// Where a default route points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Igw,
    Nat(String),
}

/// One step of `up`, in execution order. Keys name resources that may not exist yet when the
/// plan is made; they are resolved when the step runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    CreateVpc,
    EnableDns,
    CreateIgw,
    AttachIgw,
    CreateSubnet {
        key: String,
        zone: String,
        cidr: Ipv4Cidr,
        public: bool,
    },
    MapPublicIp {
        key: String,
    },
    CreateRouteTable {
        key: String,
    },
    /// Create (`replace: false`) or repoint the default route of a route table.
    DefaultRoute {
        table: String,
        target: Target,
        replace: bool,
    },
    Associate {
        table: String,
        subnet: String,
    },
    AllocateEip {
        key: String,
    },
    CreateNat {
        key: String,
        subnet: String,
        eip: String,
    },
    Conflict {
        resource: &'static str,
        name: String,
        detail: String,
    },
}

fn subnet_key(public: bool, zone: &str) -> String {
    format!(
        "subnet/{}/{zone}",
        if public { "public" } else { "private" }
    )
}

fn nat_key_for(stack: &Stack, zones: &[String], zone: &str) -> String {
    match stack.network.nat {
        NatMode::PerZone => format!("nat/{zone}"),
        NatMode::Single => format!("nat/{}", zones[0]),
    }
}

/// The pure diff: what `up` must do to turn `seen` into the stack's network.
pub fn plan(stack: &Stack, zones: &[String], seen: &Seen) -> Vec<Step> {
    let mut steps = Vec::new();
    match &seen.vpc {
        None => steps.extend([Step::CreateVpc, Step::EnableDns]),
        Some(vpc) => {
            if vpc.cidr != stack.network.vpc_cidr.to_string() {
                steps.push(Step::Conflict {
                    resource: "vpc",
                    name: vpc.id.clone(),
                    detail: format!(
                        "has CIDR {} but the stack wants {}; run `meshstack down` first to change it",
                        vpc.cidr, stack.network.vpc_cidr
                    ),
                });
                return steps;
            }
            if !(vpc.dns_support && vpc.dns_hostnames) {
                steps.push(Step::EnableDns);
            }
        }
    }
    let vpc_id = seen.vpc.as_ref().map(|v| v.id.as_str());
    match &seen.igw {
        None => steps.extend([Step::CreateIgw, Step::AttachIgw]),
        Some(igw) if vpc_id.is_none_or(|v| !igw.attached_to.iter().any(|a| a == v)) => {
            steps.push(Step::AttachIgw)
        }
        Some(_) => {}
    }

    for (i, zone) in zones.iter().enumerate() {
        let (public_cidr, private_cidr) = stack.subnet_cidrs(i);
        for (public, cidr) in [(true, public_cidr), (false, private_cidr)] {
            let key = subnet_key(public, zone);
            match seen.subnets.get(&key) {
                None => {
                    steps.push(Step::CreateSubnet { key: key.clone(), zone: zone.clone(), cidr, public });
                    if public {
                        steps.push(Step::MapPublicIp { key });
                    }
                }
                Some(s) if s.cidr != cidr.to_string() || &s.zone != zone => steps.push(Step::Conflict {
                    resource: "subnet",
                    name: format!("{key} ({})", s.id),
                    detail: format!(
                        "is {} in {} but the stack wants {cidr} in {zone}; run `meshstack down` first",
                        s.cidr, s.zone
                    ),
                }),
                Some(s) if public && !s.map_public_ip => steps.push(Step::MapPublicIp { key }),
                Some(_) => {}
            }
        }
    }

    // Public routing: one table for all public subnets, default route to the internet gateway.
    let igw_id = seen.igw.as_ref().map(|g| g.id.as_str());
    route_table_steps(
        &mut steps,
        seen,
        "rt/public",
        Target::Igw,
        igw_id,
        zones.iter().map(|z| subnet_key(true, z)),
    );

    // NAT gateways and their addresses.
    let mut nat_keys: Vec<String> = zones.iter().map(|z| nat_key_for(stack, zones, z)).collect();
    nat_keys.dedup();
    for nat in &nat_keys {
        let zone = nat.trim_start_matches("nat/");
        if !seen.nats.contains_key(nat) {
            let eip = format!("eip/{zone}");
            if !seen.eips.contains_key(&eip) {
                steps.push(Step::AllocateEip { key: eip.clone() });
            }
            steps.push(Step::CreateNat {
                key: nat.clone(),
                subnet: subnet_key(true, zone),
                eip,
            });
        }
    }

    // Private routing: a table per zone, default route to that zone's NAT gateway (or the one).
    for zone in zones {
        let nat = nat_key_for(stack, zones, zone);
        let nat_id = seen.nats.get(&nat).map(|n| n.id.as_str());
        route_table_steps(
            &mut steps,
            seen,
            &format!("rt/private/{zone}"),
            Target::Nat(nat),
            nat_id,
            std::iter::once(subnet_key(false, zone)),
        );
    }
    steps
}

fn route_table_steps(
    steps: &mut Vec<Step>,
    seen: &Seen,
    table: &str,
    target: Target,
    target_id: Option<&str>,
    subnets: impl Iterator<Item = String>,
) {
    let table_seen = seen.route_tables.get(table);
    if table_seen.is_none() {
        steps.push(Step::CreateRouteTable {
            key: table.to_string(),
        });
    }
    let current = table_seen.and_then(|t| t.default_target.as_deref());
    match (current, target_id) {
        (None, _) => steps.push(Step::DefaultRoute {
            table: table.to_string(),
            target,
            replace: false,
        }),
        (Some(have), Some(want)) if have == want => {}
        (Some(_), _) => steps.push(Step::DefaultRoute {
            table: table.to_string(),
            target,
            replace: true,
        }),
    }
    for subnet in subnets {
        let subnet_id = seen.subnets.get(&subnet).map(|s| s.id.as_str());
        let associated = match (table_seen, subnet_id) {
            (Some(t), Some(id)) => t.subnets.iter().any(|s| s == id),
            _ => false,
        };
        if !associated {
            steps.push(Step::Associate {
                table: table.to_string(),
                subnet,
            });
        }
    }
}

impl Step {
    /// How `plan` shows this step.
    pub fn change(&self, stack: &Stack) -> Change {
        let name = |key: &str| resource_name(stack, key);
        match self {
            Step::CreateVpc => Change::new(Action::Create, "vpc", name("vpc"))
                .detail(stack.network.vpc_cidr.to_string()),
            Step::EnableDns => Change::new(Action::Update, "vpc", name("vpc"))
                .detail("enable DNS support and hostnames"),
            Step::CreateIgw => Change::new(Action::Create, "internet-gateway", name("igw")),
            Step::AttachIgw => Change::new(Action::Update, "internet-gateway", name("igw"))
                .detail("attach to the VPC"),
            Step::CreateSubnet {
                key, zone, cidr, ..
            } => {
                Change::new(Action::Create, "subnet", name(key)).detail(format!("{cidr} in {zone}"))
            }
            Step::MapPublicIp { key } => {
                Change::new(Action::Update, "subnet", name(key)).detail("map public IPs on launch")
            }
            Step::CreateRouteTable { key } => Change::new(Action::Create, "route-table", name(key)),
            Step::DefaultRoute {
                table,
                target,
                replace,
            } => Change::new(
                if *replace {
                    Action::Update
                } else {
                    Action::Create
                },
                "route",
                format!("{} 0.0.0.0/0", name(table)),
            )
            .detail(match target {
                Target::Igw => format!("via {}", name("igw")),
                Target::Nat(k) => format!("via {}", name(k)),
            }),
            Step::Associate { table, subnet } => Change::new(
                Action::Create,
                "route-table-association",
                format!("{} -> {}", name(subnet), name(table)),
            ),
            Step::AllocateEip { key } => Change::new(Action::Create, "elastic-ip", name(key)),
            Step::CreateNat { key, subnet, .. } => {
                Change::new(Action::Create, "nat-gateway", name(key))
                    .detail(format!("in {}", name(subnet)))
            }
            Step::Conflict {
                resource,
                name,
                detail,
            } => Change::new(Action::Conflict, resource, name.clone()).detail(detail.clone()),
        }
    }
}

/// The `Name` tag of a resource: the stack name, then the key with `/` as `-`.
pub fn resource_name(stack: &Stack, key: &str) -> String {
    if key == "vpc" {
        stack.name.clone()
    } else {
        format!("{}-{}", stack.name, key.replace('/', "-"))
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

fn stack_filter(stack: &Stack) -> Filter {
    Filter::builder()
        .name(format!("tag:{STACK_TAG}"))
        .values(&stack.name)
        .build()
}

/// Whether `tags` carry this stack's tag.
fn tagged_for(tags: &[Tag], stack: &Stack) -> bool {
    tags.iter()
        .any(|t| t.key() == Some(STACK_TAG) && t.value() == Some(stack.name.as_str()))
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

fn zone_names(cx: &Context) -> Vec<String> {
    cx.zones.iter().map(|z| z.name.clone()).collect()
}

/// The facts dependents need, from the run's cache or by observing.
pub async fn facts(cx: &Context) -> Result<NetworkFacts, StageError> {
    if let Some(f) = cx.facts().network.clone() {
        return Ok(f);
    }
    let seen = observe(cx).await?;
    let f = facts_from(&seen, &zone_names(cx)).ok_or_else(|| {
        StageError::Missing(format!(
            "the network of stack `{}` (VPC and subnets tagged {STACK_TAG})",
            cx.stack.name
        ))
    })?;
    cx.facts().network = Some(f.clone());
    Ok(f)
}

fn facts_from(seen: &Seen, zones: &[String]) -> Option<NetworkFacts> {
    let subnet = |public, zone: &String| {
        seen.subnets
            .get(&subnet_key(public, zone))
            .map(|s| s.id.clone())
    };
    Some(NetworkFacts {
        vpc_id: seen.vpc.as_ref()?.id.clone(),
        public_subnets: zones
            .iter()
            .map(|z| subnet(true, z))
            .collect::<Option<_>>()?,
        private_subnets: zones
            .iter()
            .map(|z| subnet(false, z))
            .collect::<Option<_>>()?,
    })
}

#[async_trait]
impl Stage for Network {
    fn id(&self) -> StageId {
        ID
    }

    fn depends_on(&self) -> &'static [StageId] {
        &[]
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let seen = observe(cx).await?;
        Ok(plan(&cx.stack, &zone_names(cx), &seen)
            .iter()
            .map(|s| s.change(&cx.stack))
            .collect())
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let Some(aws) = &cx.aws else {
            return Ok(Vec::new());
        };
        let items = inventory(aws, &cx.stack).await?;
        let mut changes = Vec::new();
        // What the cluster left in the VPC goes first, as in `down`.
        for vpc in items.iter().filter(|t| t.kind == "vpc") {
            changes.extend(
                sweep::find_in_vpc(aws, Owner::of(&cx.stack), &vpc.id)
                    .await?
                    .iter()
                    .map(|f| Change::new(Action::Delete, f.kind, f.label()).detail(f.why)),
            );
        }
        changes.extend(
            items
                .iter()
                .map(|t| Change::new(Action::Delete, t.kind, t.label())),
        );
        Ok(changes)
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let zones = zone_names(cx);
        h.step("observing");
        let mut seen = observe(cx).await?;
        for d in &seen.duplicates {
            h.warn(format!("duplicate network resource tagged for this stack: {d}; `meshstack down` removes it"));
        }
        let steps = plan(&cx.stack, &zones, &seen);
        let changes: Vec<Change> = steps.iter().map(|s| s.change(&cx.stack)).collect();
        refuse_conflicts(&changes)?;
        for (step, change) in steps.iter().zip(&changes) {
            h.step(change.to_string());
            execute(cx, aws, step, &mut seen, h).await?;
        }
        let f = facts_from(&seen, &zones)
            .ok_or_else(|| StageError::Missing("subnets after create".into()))?;
        cx.set_output(ID, "vpc_id", f.vpc_id.clone().into())?;
        cx.set_output(ID, "zones", serde_json::json!(zones))?;
        cx.facts().network = Some(f);
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        teardown(cx, cx.aws()?, h).await
    }
}

/// Carry out one step, recording what it created in `seen` so later steps can refer to it.
async fn execute(
    cx: &Context,
    aws: &AwsClients,
    step: &Step,
    seen: &mut Seen,
    h: &StageHandle,
) -> Result<(), StageError> {
    let stack = &cx.stack;
    let ec2 = &aws.ec2;
    let vpc_id = |seen: &Seen| {
        seen.vpc
            .as_ref()
            .map(|v| v.id.clone())
            .ok_or_else(|| StageError::Missing("VPC".into()))
    };
    let subnet_id = |seen: &Seen, key: &str| {
        seen.subnets
            .get(key)
            .map(|s| s.id.clone())
            .ok_or_else(|| StageError::Missing(format!("subnet {key}")))
    };
    let table_id = |seen: &Seen, key: &str| {
        seen.route_tables
            .get(key)
            .map(|t| t.id.clone())
            .ok_or_else(|| StageError::Missing(format!("route table {key}")))
    };
    match step {
        Step::CreateVpc => {
            cx.begin(ID, "vpc")?;
            let out = ec2
                .create_vpc()
                .cidr_block(stack.network.vpc_cidr.to_string())
                .tag_specifications(tag_spec(stack, ResourceType::Vpc, "vpc"))
                .send()
                .await
                .map_err(sdk_err("ec2:CreateVpc"))?;
            let vpc = out
                .vpc()
                .ok_or_else(|| AwsError::new("ec2:CreateVpc", None, "no VPC in the answer"))?;
            let id = vpc.vpc_id().unwrap_or_default().to_string();
            cx.complete(ID, "vpc", &id)?;
            seen.vpc = Some(SeenVpc {
                id,
                cidr: stack.network.vpc_cidr.to_string(),
                dns_support: true,
                dns_hostnames: false,
            });
        }
        Step::EnableDns => {
            let id = vpc_id(seen)?;
            // One attribute per call: the API refuses both at once.
            ec2.modify_vpc_attribute()
                .vpc_id(&id)
                .enable_dns_support(AttributeBooleanValue::builder().value(true).build())
                .send()
                .await
                .map_err(sdk_err("ec2:ModifyVpcAttribute"))?;
            ec2.modify_vpc_attribute()
                .vpc_id(&id)
                .enable_dns_hostnames(AttributeBooleanValue::builder().value(true).build())
                .send()
                .await
                .map_err(sdk_err("ec2:ModifyVpcAttribute"))?;
        }
        Step::CreateIgw => {
            cx.begin(ID, "igw")?;
            let out = ec2
                .create_internet_gateway()
                .tag_specifications(tag_spec(stack, ResourceType::InternetGateway, "igw"))
                .send()
                .await
                .map_err(sdk_err("ec2:CreateInternetGateway"))?;
            let id = out
                .internet_gateway()
                .and_then(|g| g.internet_gateway_id())
                .unwrap_or_default()
                .to_string();
            cx.complete(ID, "igw", &id)?;
            seen.igw = Some(SeenIgw {
                id,
                attached_to: vec![],
            });
        }
        Step::AttachIgw => {
            let vpc = vpc_id(seen)?;
            let igw = seen
                .igw
                .as_mut()
                .ok_or_else(|| StageError::Missing("internet gateway".into()))?;
            let res = ec2
                .attach_internet_gateway()
                .internet_gateway_id(&igw.id)
                .vpc_id(&vpc)
                .send()
                .await;
            match res.map_err(sdk_err("ec2:AttachInternetGateway")) {
                Ok(_) => {}
                // Attached already (a killed run got this far): adopt.
                Err(e) if e.is("Resource.AlreadyAssociated") => {}
                Err(e) => return Err(e.into()),
            }
            igw.attached_to.push(vpc);
        }
        Step::CreateSubnet {
            key, zone, cidr, ..
        } => {
            cx.begin(ID, key)?;
            let out = ec2
                .create_subnet()
                .vpc_id(vpc_id(seen)?)
                .cidr_block(cidr.to_string())
                .availability_zone(zone)
                .tag_specifications(subnet_tags(stack, key))
                .send()
                .await
                .map_err(sdk_err("ec2:CreateSubnet"))?;
            let id = out
                .subnet()
                .and_then(|s| s.subnet_id())
                .unwrap_or_default()
                .to_string();
            cx.complete(ID, key, &id)?;
            seen.subnets.insert(
                key.clone(),
                SeenSubnet {
                    id,
                    zone: zone.clone(),
                    cidr: cidr.to_string(),
                    map_public_ip: false,
                },
            );
        }
        Step::MapPublicIp { key } => {
            ec2.modify_subnet_attribute()
                .subnet_id(subnet_id(seen, key)?)
                .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
                .send()
                .await
                .map_err(sdk_err("ec2:ModifySubnetAttribute"))?;
        }
        Step::CreateRouteTable { key } => {
            let token = cx.begin(ID, key)?;
            let mut req = ec2
                .create_route_table()
                .vpc_id(vpc_id(seen)?)
                .tag_specifications(tag_spec(stack, ResourceType::RouteTable, key));
            if !token.is_empty() {
                req = req.client_token(token);
            }
            let out = req.send().await.map_err(sdk_err("ec2:CreateRouteTable"))?;
            let id = out
                .route_table()
                .and_then(|t| t.route_table_id())
                .unwrap_or_default()
                .to_string();
            cx.complete(ID, key, &id)?;
            seen.route_tables.insert(
                key.clone(),
                SeenRouteTable {
                    id,
                    default_target: None,
                    subnets: vec![],
                },
            );
        }
        Step::DefaultRoute {
            table,
            target,
            replace,
        } => {
            let table_id = table_id(seen, table)?;
            let target_id = match target {
                Target::Igw => seen
                    .igw
                    .as_ref()
                    .map(|g| g.id.clone())
                    .ok_or_else(|| StageError::Missing("internet gateway".into()))?,
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
                        wait_nat_available(aws, &nat.id, cx.waits.nat).await?;
                        nat.available = true;
                    }
                    nat.id.clone()
                }
            };
            let is_nat = matches!(target, Target::Nat(_));
            if *replace {
                let mut req = ec2
                    .replace_route()
                    .route_table_id(&table_id)
                    .destination_cidr_block("0.0.0.0/0");
                req = if is_nat {
                    req.nat_gateway_id(&target_id)
                } else {
                    req.gateway_id(&target_id)
                };
                req.send().await.map_err(sdk_err("ec2:ReplaceRoute"))?;
            } else {
                let mut req = ec2
                    .create_route()
                    .route_table_id(&table_id)
                    .destination_cidr_block("0.0.0.0/0");
                req = if is_nat {
                    req.nat_gateway_id(&target_id)
                } else {
                    req.gateway_id(&target_id)
                };
                match req.send().await.map_err(sdk_err("ec2:CreateRoute")) {
                    Ok(_) => {}
                    Err(e) if e.is("RouteAlreadyExists") => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(t) = seen.route_tables.get_mut(table) {
                t.default_target = Some(target_id);
            }
        }
        Step::Associate { table, subnet } => {
            let table_id = table_id(seen, table)?;
            let subnet_id = subnet_id(seen, subnet)?;
            match ec2
                .associate_route_table()
                .route_table_id(&table_id)
                .subnet_id(&subnet_id)
                .send()
                .await
                .map_err(sdk_err("ec2:AssociateRouteTable"))
            {
                Ok(_) => {}
                Err(e) if e.is("Resource.AlreadyAssociated") => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(t) = seen.route_tables.get_mut(table) {
                t.subnets.push(subnet_id);
            }
        }
        Step::AllocateEip { key } => {
            cx.begin(ID, key)?;
            let out = ec2
                .allocate_address()
                .domain(DomainType::Vpc)
                .tag_specifications(tag_spec(stack, ResourceType::ElasticIp, key))
                .send()
                .await
                .map_err(sdk_err("ec2:AllocateAddress"))?;
            let id = out.allocation_id().unwrap_or_default().to_string();
            cx.complete(ID, key, &id)?;
            seen.eips.insert(key.clone(), id);
        }
        Step::CreateNat { key, subnet, eip } => {
            let token = cx.begin(ID, key)?;
            let allocation = seen
                .eips
                .get(eip)
                .cloned()
                .ok_or_else(|| StageError::Missing(format!("Elastic IP {eip}")))?;
            let mut req = ec2
                .create_nat_gateway()
                .subnet_id(subnet_id(seen, subnet)?)
                .allocation_id(allocation)
                .tag_specifications(tag_spec(stack, ResourceType::Natgateway, key));
            if !token.is_empty() {
                req = req.client_token(token);
            }
            let out = req.send().await.map_err(sdk_err("ec2:CreateNatGateway"))?;
            let nat = out.nat_gateway();
            let id = nat
                .and_then(|n| n.nat_gateway_id())
                .unwrap_or_default()
                .to_string();
            let available = nat.and_then(|n| n.state()) == Some(&NatGatewayState::Available);
            cx.complete(ID, key, &id)?;
            seen.nats.insert(key.clone(), SeenNat { id, available });
        }
        Step::Conflict { .. } => unreachable!("conflicts are refused before execution"),
    }
    Ok(())
}

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

async fn wait_nat_available(
    aws: &AwsClients,
    id: &str,
    backoff: crate::aws::Backoff,
) -> Result<(), StageError> {
    let ready = wait_for(backoff, || async {
        let out = aws
            .ec2
            .describe_nat_gateways()
            .nat_gateway_ids(id)
            .send()
            .await
            .map_err(sdk_err("ec2:DescribeNatGateways"))?;
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

/// A resource tagged for the stack, as `down` sees it.
#[derive(Debug, Clone)]
struct Tagged {
    kind: &'static str,
    id: String,
    /// Its `Name` tag, for people.
    name: String,
}

impl Tagged {
    fn new(kind: &'static str, id: Option<&str>, tags: &[Tag]) -> Self {
        let name = tags
            .iter()
            .find(|t| t.key() == Some("Name"))
            .and_then(|t| t.value())
            .unwrap_or_default();
        Tagged {
            kind,
            id: id.unwrap_or_default().to_string(),
            name: name.to_string(),
        }
    }

    fn label(&self) -> String {
        if self.name.is_empty() {
            self.id.clone()
        } else {
            format!("{} ({})", self.name, self.id)
        }
    }
}

/// Everything tagged for this stack, in deletion order.
async fn inventory(aws: &AwsClients, stack: &Stack) -> Result<Vec<Tagged>, StageError> {
    let ec2 = &aws.ec2;
    let f = || stack_filter(stack);
    let mut out = Vec::new();
    let nats = ec2
        .describe_nat_gateways()
        .filter(f())
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeNatGateways"))?;
    out.extend(
        nats.nat_gateways()
            .iter()
            .filter(|n| n.state() != Some(&NatGatewayState::Deleted))
            // The tag again, client-side: an emulator (moto) that ignores the filter must
            // never make one stack's teardown delete another's NAT gateways.
            .filter(|n| tagged_for(n.tags(), stack))
            .map(|n| Tagged::new("nat-gateway", n.nat_gateway_id(), n.tags())),
    );
    let eips = ec2
        .describe_addresses()
        .filters(f())
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeAddresses"))?;
    out.extend(
        eips.addresses()
            .iter()
            .map(|a| Tagged::new("elastic-ip", a.allocation_id(), a.tags())),
    );
    let rts = ec2
        .describe_route_tables()
        .filters(f())
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeRouteTables"))?;
    out.extend(
        rts.route_tables()
            .iter()
            .map(|t| Tagged::new("route-table", t.route_table_id(), t.tags())),
    );
    let igws = ec2
        .describe_internet_gateways()
        .filters(f())
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeInternetGateways"))?;
    out.extend(
        igws.internet_gateways()
            .iter()
            .map(|g| Tagged::new("internet-gateway", g.internet_gateway_id(), g.tags())),
    );
    let subnets = ec2
        .describe_subnets()
        .filters(f())
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeSubnets"))?;
    out.extend(
        subnets
            .subnets()
            .iter()
            .map(|s| Tagged::new("subnet", s.subnet_id(), s.tags())),
    );
    let vpcs = ec2
        .describe_vpcs()
        .filters(f())
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeVpcs"))?;
    out.extend(
        vpcs.vpcs()
            .iter()
            .map(|v| Tagged::new("vpc", v.vpc_id(), v.tags())),
    );
    Ok(out)
}

/// Delete everything tagged for the stack, dependents first. Only resources carrying the stack
/// tag are touched, and in the stack's VPC what the cluster left there ([`sweep::find_in_vpc`]).
async fn teardown(cx: &Context, aws: &AwsClients, h: &StageHandle) -> Result<Outcome, StageError> {
    let ec2 = &aws.ec2;
    h.step("observing");
    let items = inventory(aws, &cx.stack).await?;
    if items.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    let deps = cx.waits.dependency;
    const RETRY: &[&str] = &[
        "DependencyViolation",
        "InvalidIPAddress.InUse",
        "AuthFailure.AddressInUse",
    ];
    let mut remaining = Vec::new();

    let nat_ids: Vec<&String> = items
        .iter()
        .filter(|t| t.kind == "nat-gateway")
        .map(|t| &t.id)
        .collect();
    for id in &nat_ids {
        h.step(format!("deleting NAT gateway {id}"));
        match ec2
            .delete_nat_gateway()
            .nat_gateway_id(*id)
            .send()
            .await
            .map_err(sdk_err("ec2:DeleteNatGateway"))
        {
            Ok(_) => {}
            Err(e) if crate::aws::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for id in &nat_ids {
        h.step(format!("waiting for NAT gateway {id} to be deleted"));
        let gone = wait_for(cx.waits.nat, || async {
            let out = ec2
                .describe_nat_gateways()
                .nat_gateway_ids(*id)
                .send()
                .await
                .map_err(sdk_err("ec2:DescribeNatGateways"));
            match out {
                Ok(o) => Ok(o
                    .nat_gateways()
                    .first()
                    .is_none_or(|n| n.state() == Some(&NatGatewayState::Deleted))
                    .then_some(())),
                Err(e) if crate::aws::is_not_found(&e) => Ok(Some(())),
                Err(e) => Err(e),
            }
        })
        .await?;
        if gone.is_none() {
            remaining.push(format!("nat-gateway {id} (still deleting)"));
        }
    }

    // Load balancers' security groups and detached interfaces keep the subnets and the VPC
    // from being deleted; they carry the cluster's tags or names, not the stack's.
    let mut swept = Swept::default();
    for vpc in items.iter().filter(|t| t.kind == "vpc") {
        h.step(format!(
            "looking for what the cluster left in VPC {}",
            vpc.id
        ));
        let found = sweep::find_in_vpc(aws, Owner::of(&cx.stack), &vpc.id).await?;
        swept.merge(sweep::delete_in_vpc(aws, &found, deps, h).await);
    }
    remaining.extend(swept.remaining);
    // Interfaces keep letting go while the teardown runs (a load balancer's, the VPC CNI's):
    // when a subnet or the VPC still has dependencies, look in the VPC again before the next
    // try. One attempt per leftover here; the delete's own back-off paces the rounds.
    let swept_again = std::sync::Mutex::new(0usize);
    let vpc_ids: Vec<&str> = items
        .iter()
        .filter(|t| t.kind == "vpc")
        .map(|t| t.id.as_str())
        .collect();
    let resweep = |res: Result<(), AwsError>| {
        let (vpc_ids, swept_again) = (&vpc_ids, &swept_again);
        async move {
            if res.as_ref().is_err_and(|e| e.is("DependencyViolation")) {
                let once =
                    crate::retry::Backoff::new(Duration::ZERO, Duration::ZERO, Duration::ZERO);
                for vpc in vpc_ids {
                    if let Ok(found) = sweep::find_in_vpc(aws, Owner::of(&cx.stack), vpc).await {
                        let swept = sweep::delete_in_vpc(aws, &found, once, h).await;
                        *swept_again.lock().unwrap_or_else(|e| e.into_inner()) += swept.deleted;
                    }
                }
            }
            res
        }
    };

    for item in &items {
        let (kind, id) = (item.kind, &item.id);
        let res: Result<(), AwsError> = match kind {
            "elastic-ip" => {
                h.step(format!("releasing Elastic IP {id}"));
                retry_codes(deps, RETRY, h, "release Elastic IP", || async {
                    ec2.release_address()
                        .allocation_id(id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(sdk_err("ec2:ReleaseAddress"))
                })
                .await
            }
            "route-table" => {
                h.step(format!("deleting route table {id}"));
                delete_route_table(aws, id, deps, h).await
            }
            "internet-gateway" => {
                h.step(format!("deleting internet gateway {id}"));
                delete_igw(aws, id, deps, h).await
            }
            "subnet" => {
                h.step(format!("deleting subnet {id}"));
                retry_codes(deps, RETRY, h, "delete subnet", || async {
                    resweep(
                        ec2.delete_subnet()
                            .subnet_id(id)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(sdk_err("ec2:DeleteSubnet")),
                    )
                    .await
                })
                .await
            }
            "vpc" => {
                h.step(format!("deleting VPC {id}"));
                retry_codes(deps, RETRY, h, "delete VPC", || async {
                    resweep(
                        ec2.delete_vpc()
                            .vpc_id(id)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(sdk_err("ec2:DeleteVpc")),
                    )
                    .await
                })
                .await
            }
            _ => Ok(()),
        };
        match res {
            Ok(()) => {}
            Err(e) if crate::aws::is_not_found(&e) => {}
            Err(e) => remaining.push(format!("{kind} {} ({e})", item.label())),
        }
    }
    let swept_again = swept_again.into_inner().unwrap_or_else(|e| e.into_inner());
    if remaining.is_empty() {
        Ok(Outcome::Changed(format!(
            "deleted {}",
            items.len() + swept.deleted + swept_again
        )))
    } else {
        Err(StageError::Remaining(remaining.join("; ")))
    }
}

async fn delete_route_table(
    aws: &AwsClients,
    id: &str,
    deps: crate::aws::Backoff,
    h: &StageHandle,
) -> Result<(), AwsError> {
    let ec2 = &aws.ec2;
    let out = ec2
        .describe_route_tables()
        .route_table_ids(id)
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeRouteTables"))?;
    for t in out.route_tables() {
        for a in t.associations() {
            if a.main() == Some(true) {
                continue;
            }
            if let Some(assoc) = a.route_table_association_id() {
                match ec2
                    .disassociate_route_table()
                    .association_id(assoc)
                    .send()
                    .await
                    .map_err(sdk_err("ec2:DisassociateRouteTable"))
                {
                    Ok(_) => {}
                    Err(e) if crate::aws::is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    retry_codes(
        deps,
        &["DependencyViolation"],
        h,
        "delete route table",
        || async {
            ec2.delete_route_table()
                .route_table_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(sdk_err("ec2:DeleteRouteTable"))
        },
    )
    .await
}

async fn delete_igw(
    aws: &AwsClients,
    id: &str,
    deps: crate::aws::Backoff,
    h: &StageHandle,
) -> Result<(), AwsError> {
    let ec2 = &aws.ec2;
    let out = ec2
        .describe_internet_gateways()
        .internet_gateway_ids(id)
        .send()
        .await
        .map_err(sdk_err("ec2:DescribeInternetGateways"))?;
    for g in out.internet_gateways() {
        for a in g.attachments() {
            if let Some(vpc) = a.vpc_id() {
                retry_codes(
                    deps,
                    &["DependencyViolation"],
                    h,
                    "detach internet gateway",
                    || async {
                        ec2.detach_internet_gateway()
                            .internet_gateway_id(id)
                            .vpc_id(vpc)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(sdk_err("ec2:DetachInternetGateway"))
                    },
                )
                .await?;
            }
        }
    }
    ec2.delete_internet_gateway()
        .internet_gateway_id(id)
        .send()
        .await
        .map(|_| ())
        .map_err(sdk_err("ec2:DeleteInternetGateway"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(extra: &str) -> Stack {
        Stack::parse(&format!("name: demo\n{extra}"), "t.yaml").unwrap()
    }

    fn zones() -> Vec<String> {
        vec!["z-1a".into(), "z-1b".into(), "z-1c".into()]
    }

    /// The network as it looks after a complete `up`, built by running the plan's steps on paper.
    fn converged(stack: &Stack, zones: &[String]) -> Seen {
        let mut seen = Seen::default();
        let mut n = 0;
        let mut id = |p: &str| {
            n += 1;
            format!("{p}-{n}")
        };
        for step in plan(stack, zones, &Seen::default()) {
            match step {
                Step::CreateVpc => {
                    seen.vpc = Some(SeenVpc {
                        id: id("vpc"),
                        cidr: stack.network.vpc_cidr.to_string(),
                        dns_support: true,
                        dns_hostnames: true,
                    })
                }
                Step::CreateIgw => {
                    seen.igw = Some(SeenIgw {
                        id: id("igw"),
                        attached_to: vec![seen.vpc.clone().unwrap().id],
                    })
                }
                Step::CreateSubnet {
                    key,
                    zone,
                    cidr,
                    public,
                } => {
                    seen.subnets.insert(
                        key,
                        SeenSubnet {
                            id: id("subnet"),
                            zone,
                            cidr: cidr.to_string(),
                            map_public_ip: public,
                        },
                    );
                }
                Step::AllocateEip { key } => {
                    seen.eips.insert(key, id("eipalloc"));
                }
                Step::CreateNat { key, .. } => {
                    seen.nats.insert(
                        key,
                        SeenNat {
                            id: id("nat"),
                            available: true,
                        },
                    );
                }
                Step::CreateRouteTable { key } => {
                    seen.route_tables.insert(
                        key,
                        SeenRouteTable {
                            id: id("rtb"),
                            default_target: None,
                            subnets: vec![],
                        },
                    );
                }
                Step::DefaultRoute { table, target, .. } => {
                    let t = match target {
                        Target::Igw => seen.igw.clone().unwrap().id,
                        Target::Nat(k) => seen.nats[&k].id.clone(),
                    };
                    seen.route_tables.get_mut(&table).unwrap().default_target = Some(t);
                }
                Step::Associate { table, subnet } => {
                    let s = seen.subnets[&subnet].id.clone();
                    seen.route_tables.get_mut(&table).unwrap().subnets.push(s);
                }
                Step::EnableDns
                | Step::AttachIgw
                | Step::MapPublicIp { .. }
                | Step::Conflict { .. } => {}
            }
        }
        seen
    }

    fn count(steps: &[Step], f: impl Fn(&Step) -> bool) -> usize {
        steps.iter().filter(|s| f(s)).count()
    }

    #[test]
    fn empty_account_plans_the_whole_network() {
        let s = stack("");
        let steps = plan(&s, &zones(), &Seen::default());
        assert_eq!(count(&steps, |s| matches!(s, Step::CreateVpc)), 1);
        assert_eq!(count(&steps, |s| matches!(s, Step::CreateSubnet { .. })), 6);
        assert_eq!(count(&steps, |s| matches!(s, Step::CreateNat { .. })), 3);
        assert_eq!(count(&steps, |s| matches!(s, Step::AllocateEip { .. })), 3);
        assert_eq!(
            count(&steps, |s| matches!(s, Step::CreateRouteTable { .. })),
            4
        );
        assert_eq!(count(&steps, |s| matches!(s, Step::Associate { .. })), 6);
        assert_eq!(
            count(&steps, |s| matches!(
                s,
                Step::DefaultRoute { replace: false, .. }
            )),
            4
        );
        // Each private table routes to its own zone's NAT gateway.
        for z in zones() {
            assert!(steps.contains(&Step::DefaultRoute {
                table: format!("rt/private/{z}"),
                target: Target::Nat(format!("nat/{z}")),
                replace: false
            }));
        }
    }

    #[test]
    fn single_nat_routes_every_zone_through_the_first() {
        let s = stack("network:\n  nat: single\n");
        let steps = plan(&s, &zones(), &Seen::default());
        assert_eq!(count(&steps, |s| matches!(s, Step::CreateNat { .. })), 1);
        assert_eq!(count(&steps, |s| matches!(s, Step::AllocateEip { .. })), 1);
        assert!(steps.contains(&Step::DefaultRoute {
            table: "rt/private/z-1c".into(),
            target: Target::Nat("nat/z-1a".into()),
            replace: false
        }));
    }

    #[test]
    fn converged_network_plans_nothing() {
        for extra in ["", "network:\n  nat: single\n"] {
            let s = stack(extra);
            let seen = converged(&s, &zones());
            assert_eq!(plan(&s, &zones(), &seen), vec![], "stack {extra:?}");
        }
    }

    #[test]
    fn drift_plans_only_the_repair() {
        let s = stack("");
        let mut seen = converged(&s, &zones());
        let gone = seen.subnets.remove("subnet/private/z-1b").unwrap();
        for t in seen.route_tables.values_mut() {
            t.subnets.retain(|id| id != &gone.id);
        }
        let steps = plan(&s, &zones(), &seen);
        assert_eq!(
            steps,
            vec![
                Step::CreateSubnet {
                    key: "subnet/private/z-1b".into(),
                    zone: "z-1b".into(),
                    cidr: s.subnet_cidrs(1).1,
                    public: false
                },
                Step::Associate {
                    table: "rt/private/z-1b".into(),
                    subnet: "subnet/private/z-1b".into()
                },
            ]
        );

        let mut seen = converged(&s, &zones());
        seen.route_tables
            .get_mut("rt/private/z-1a")
            .unwrap()
            .default_target = None;
        assert_eq!(
            plan(&s, &zones(), &seen),
            vec![Step::DefaultRoute {
                table: "rt/private/z-1a".into(),
                target: Target::Nat("nat/z-1a".into()),
                replace: false
            }]
        );
    }

    #[test]
    fn a_killed_run_resumes_without_recreating() {
        // The VPC, IGW and two subnets were made before the kill.
        let s = stack("");
        let full = converged(&s, &zones());
        let mut seen = Seen {
            vpc: full.vpc.clone(),
            igw: full.igw.clone(),
            ..Seen::default()
        };
        for k in ["subnet/public/z-1a", "subnet/private/z-1a"] {
            seen.subnets.insert(k.into(), full.subnets[k].clone());
        }
        let steps = plan(&s, &zones(), &seen);
        assert_eq!(
            count(&steps, |s| matches!(s, Step::CreateVpc | Step::CreateIgw)),
            0
        );
        assert_eq!(count(&steps, |s| matches!(s, Step::CreateSubnet { .. })), 4);
    }

    #[test]
    fn a_subnet_with_another_cidr_is_a_conflict_not_a_silent_change() {
        let s = stack("");
        let mut seen = converged(&s, &zones());
        seen.subnets.get_mut("subnet/public/z-1a").unwrap().cidr = "10.0.250.0/24".into();
        let steps = plan(&s, &zones(), &seen);
        assert!(
            matches!(
                &steps[..],
                [Step::Conflict {
                    resource: "subnet",
                    ..
                }]
            ),
            "{steps:?}"
        );
        let changes: Vec<Change> = steps.iter().map(|st| st.change(&s)).collect();
        assert!(refuse_conflicts(&changes)
            .unwrap_err()
            .to_string()
            .contains("10.0.250.0/24"));
    }
}
