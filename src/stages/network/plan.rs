//! What `up` must do to the network: the network as found ([`Seen`]), the steps, and the pure
//! diff between them ([`plan`]).

use std::collections::BTreeMap;

use crate::config::{Ipv4Cidr, NatMode, Stack};
use crate::stages::{Action, Change, Plan};

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
}

pub(super) fn subnet_key(public: bool, zone: &str) -> String {
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

/// The pure diff of the `network` stage: what `up` must do to turn `seen` into the stack's
/// VPC, internet gateway, subnets and public routing ([`plan_nat`] plans the rest).
pub fn plan(stack: &Stack, zones: &[String], seen: &Seen) -> Plan<Step> {
    let mut steps = Plan::new();
    match &seen.vpc {
        None => steps.extend([Step::CreateVpc, Step::EnableDns]),
        Some(vpc) => {
            if vpc.cidr != stack.network.vpc_cidr.to_string() {
                steps.conflict(
                    "vpc",
                    &vpc.id,
                    format!(
                        "has CIDR {} but the stack wants {}; run `meshstack down` first to change it",
                        vpc.cidr, stack.network.vpc_cidr
                    ),
                );
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
                Some(s) if s.cidr != cidr.to_string() || &s.zone != zone => steps.conflict(
                    "subnet",
                    format!("{key} ({})", s.id),
                    format!(
                        "is {} in {} but the stack wants {cidr} in {zone}; run `meshstack down` first",
                        s.cidr, s.zone
                    ),
                ),
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

    steps
}

/// Whether the resource `key` belongs to the `nat` stage: the Elastic IPs, the NAT gateways and
/// the private route tables (with their default routes and associations). The rest of what the
/// tag finds is the `network` stage's. Both stages find their resources by the same tags and
/// keys, so a network built when `network` made all of it (before the `nat` stage existed) is
/// adopted as it is.
pub fn nat_owns(key: &str) -> bool {
    key.starts_with("nat/") || key.starts_with("eip/") || key.starts_with("rt/private/")
}

/// The pure diff of the `nat` stage: the NAT gateways and their addresses, then the private
/// routing through them, to turn `seen` into the stack's.
pub fn plan_nat(stack: &Stack, zones: &[String], seen: &Seen) -> Plan<Step> {
    let mut steps = Plan::new();
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
    steps: &mut Plan<Step>,
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
        let empty = Seen::default();
        let network = plan(stack, zones, &empty).refuse().unwrap();
        for step in network
            .into_iter()
            .chain(plan_nat(stack, zones, &empty).refuse().unwrap())
        {
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
                Step::EnableDns | Step::AttachIgw | Step::MapPublicIp { .. } => {}
            }
        }
        seen
    }

    /// Both stages' steps: `network`'s, then `nat`'s.
    fn whole(stack: &Stack, zones: &[String], seen: &Seen) -> Vec<Step> {
        let mut steps = plan(stack, zones, seen).to_vec();
        steps.extend(plan_nat(stack, zones, seen).to_vec());
        steps
    }

    /// The key of the resource a step creates or changes.
    fn key(step: &Step) -> &str {
        match step {
            Step::CreateVpc | Step::EnableDns => "vpc",
            Step::CreateIgw | Step::AttachIgw => "igw",
            Step::CreateSubnet { key, .. }
            | Step::MapPublicIp { key }
            | Step::CreateRouteTable { key }
            | Step::AllocateEip { key }
            | Step::CreateNat { key, .. } => key,
            Step::DefaultRoute { table, .. } | Step::Associate { table, .. } => table,
        }
    }

    #[test]
    fn the_nat_stage_plans_exactly_what_it_owns() {
        for extra in ["", "network:\n  nat: single\n"] {
            let s = stack(extra);
            let network = plan(&s, &zones(), &Seen::default());
            let nat = plan_nat(&s, &zones(), &Seen::default());
            assert!(network.iter().all(|st| !nat_owns(key(st))), "{network:?}");
            assert!(
                !nat.is_empty() && nat.iter().all(|st| nat_owns(key(st))),
                "{nat:?}"
            );
            // The network's own steps need nothing of the NAT gateways: the cluster, which
            // depends on `network` only, gets its subnets without waiting for them.
            assert!(!network.iter().any(|st| matches!(
                st,
                Step::DefaultRoute {
                    target: Target::Nat(_),
                    ..
                }
            )));
        }
    }

    fn count(steps: &[Step], f: impl Fn(&Step) -> bool) -> usize {
        steps.iter().filter(|s| f(s)).count()
    }

    #[test]
    fn empty_account_plans_the_whole_network() {
        let s = stack("");
        let steps = whole(&s, &zones(), &Seen::default());
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
        let steps = whole(&s, &zones(), &Seen::default());
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
            assert_eq!(whole(&s, &zones(), &seen), vec![], "stack {extra:?}");
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
        let steps = whole(&s, &zones(), &seen);
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
            whole(&s, &zones(), &seen),
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
        let steps = whole(&s, &zones(), &seen);
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
            steps.is_empty()
                && matches!(
                    steps.conflicts(),
                    [crate::stages::Conflict {
                        resource: "subnet",
                        ..
                    }]
                ),
            "{steps:?}"
        );
        assert!(steps
            .refuse()
            .unwrap_err()
            .to_string()
            .contains("10.0.250.0/24"));
    }
}
