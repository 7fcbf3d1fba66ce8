//! Quotas before anything is written: what a stack (or a fleet of them) still needs of each AWS
//! quota that a workshop runs into, against what the account has in use and its limit.
//!
//! The AWS side (`src/aws/quotas.rs`) reads the usage and the limits; this module is pure:
//! [`need`] says what one environment still lacks (what already exists for it, found by tag
//! or name, needs nothing more, so a converged stack needs nothing), [`Check`] adds it up per
//! account and region and says whether it fits, and [`Check::advice`] says what would make it
//! fit. A limit the Service Quotas API did not give is AWS's documented default, labelled as
//! such.
//!
//! On-demand vCPUs are the exception to "a default refuses": AWS raises that quota per account
//! as the account is used, without a request, so its documented default (5 vCPUs, a new
//! account's) says little about an account the API did not answer for; it then warns instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{CapacityType, NatMode, Stack};

/// Where a quota applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Per account and region.
    Region,
    /// Per availability zone.
    Zone,
    /// Per account (IAM is global).
    Account,
}

/// The quotas meshstack checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaKey {
    Vpcs,
    InternetGateways,
    ElasticIps,
    NatGatewaysPerZone,
    EksClusters,
    OnDemandVcpus,
    IamRoles,
}

/// One AWS quota: its name and code as Service Quotas knows them, and AWS's documented
/// default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quota {
    pub key: QuotaKey,
    /// As the Service Quotas console names it.
    pub name: &'static str,
    /// Service Quotas' service code.
    pub service: &'static str,
    /// Service Quotas' quota code.
    pub code: &'static str,
    /// AWS's documented default value.
    pub default: u64,
    pub scope: Scope,
    /// AWS adjusts it per account with use, so a default does not refuse (module docs).
    pub usage_based: bool,
    /// The stage whose resources count against it.
    pub stage: &'static str,
}

/// Every quota checked, in table order. Defaults: the Amazon VPC, Amazon EC2, Amazon EKS and
/// IAM quota pages of AWS's documentation (and the Service Quotas console's "AWS default
/// quota value").
pub const QUOTAS: [Quota; 7] = [
    Quota {
        key: QuotaKey::Vpcs,
        name: "VPCs per Region",
        service: "vpc",
        code: "L-F678F1CE",
        default: 5,
        scope: Scope::Region,
        usage_based: false,
        stage: "network",
    },
    Quota {
        key: QuotaKey::InternetGateways,
        name: "Internet gateways per Region",
        service: "vpc",
        code: "L-A4707A72",
        default: 5,
        scope: Scope::Region,
        usage_based: false,
        stage: "network",
    },
    Quota {
        key: QuotaKey::ElasticIps,
        name: "EC2-VPC Elastic IPs",
        service: "ec2",
        code: "L-0263D0A3",
        default: 5,
        scope: Scope::Region,
        usage_based: false,
        stage: "nat",
    },
    Quota {
        key: QuotaKey::NatGatewaysPerZone,
        name: "NAT gateways per Availability Zone",
        service: "vpc",
        code: "L-FE5A380F",
        default: 5,
        scope: Scope::Zone,
        usage_based: false,
        stage: "nat",
    },
    Quota {
        key: QuotaKey::EksClusters,
        name: "Clusters (Amazon EKS)",
        service: "eks",
        code: "L-1194D53C",
        default: 100,
        scope: Scope::Region,
        usage_based: false,
        stage: "cluster",
    },
    Quota {
        key: QuotaKey::OnDemandVcpus,
        name: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances (vCPUs)",
        service: "ec2",
        code: "L-1216C47A",
        default: 5,
        scope: Scope::Region,
        usage_based: true,
        stage: "nodegroup",
    },
    Quota {
        key: QuotaKey::IamRoles,
        name: "Roles per account",
        service: "iam",
        code: "L-FE177D64",
        default: 1000,
        scope: Scope::Account,
        usage_based: false,
        stage: "iam",
    },
];

/// The definition of `key`.
pub fn quota(key: QuotaKey) -> &'static Quota {
    QUOTAS
        .iter()
        .find(|q| q.key == key)
        .expect("every key is in QUOTAS")
}

/// The IAM role the `iam` stage creates once per account when Karpenter may buy spot.
pub const SPOT_ROLE: &str = "AWSServiceRoleForEC2Spot";

/// Where a limit came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum Source {
    /// Service Quotas' `GetServiceQuota`: the account's applied value.
    Api,
    /// AWS's documented default, because the API did not answer; `why` says what it said.
    Default { why: String },
}

/// What an account and region hold, as far as the quotas go. The resources' owners are
/// their `meshstack.io/stack` tag (`None`: not a meshstack stack's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub vpcs: Vec<Option<String>>,
    pub internet_gateways: Vec<Option<String>>,
    pub elastic_ips: Vec<Option<String>>,
    /// (zone, owner) of each NAT gateway that is pending or available.
    pub nat_gateways: Vec<(String, Option<String>)>,
    /// Every EKS cluster name.
    pub clusters: BTreeSet<String>,
    /// Clusters that have their stack's node group (`<cluster>-system`).
    pub with_node_group: BTreeSet<String>,
    /// Every IAM role name in the account.
    pub roles: BTreeSet<String>,
    /// vCPUs of the running and pending on-demand instances of the standard families.
    pub vcpus: u64,
    /// vCPUs by instance type, for the stacks' node groups.
    pub vcpus_per_type: BTreeMap<String, u64>,
}

/// What one environment still needs: what it would create, less what already exists for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Need {
    pub vpcs: u64,
    pub internet_gateways: u64,
    pub elastic_ips: u64,
    /// Zone -> NAT gateways.
    pub nat_gateways: BTreeMap<String, u64>,
    pub eks_clusters: u64,
    pub vcpus: u64,
    /// Roles named after the stack.
    pub iam_roles: u64,
    /// Whether it would create the account's spot service-linked role (counted once per
    /// account however many environments want it).
    pub spot_role: bool,
}

impl Need {
    /// The need of `key` (for the zone-scoped NAT quota, of `zone`).
    pub fn of(&self, key: QuotaKey, zone: Option<&str>) -> u64 {
        match key {
            QuotaKey::Vpcs => self.vpcs,
            QuotaKey::InternetGateways => self.internet_gateways,
            QuotaKey::ElasticIps => self.elastic_ips,
            QuotaKey::NatGatewaysPerZone => zone
                .map(|z| self.nat_gateways.get(z).copied().unwrap_or(0))
                .unwrap_or_else(|| self.nat_gateways.values().sum()),
            QuotaKey::EksClusters => self.eks_clusters,
            QuotaKey::OnDemandVcpus => self.vcpus,
            QuotaKey::IamRoles => self.iam_roles,
        }
    }

    /// Whether it needs nothing at all.
    pub fn is_empty(&self) -> bool {
        *self == Need::default()
    }
}

/// vCPUs one node of the node group takes: the largest of its instance types (EKS may launch
/// any of them). `None` when one of them is unknown.
fn node_vcpus(stack: &Stack, usage: &Usage) -> Option<u64> {
    stack
        .node_group
        .instance_types
        .iter()
        .map(|t| usage.vcpus_per_type.get(t).copied())
        .try_fold(0, |max, v| v.map(|v| max.max(v)))
}

/// Whether an instance type counts against the standard on-demand quota (families A, C, D,
/// H, I, M, R, T, Z; not the accelerated, Inferentia, Trainium, DL or HPC ones).
pub fn standard_family(instance_type: &str) -> bool {
    let family: String = instance_type
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let first = family.chars().next().unwrap_or(' ');
    "acdhimrtz".contains(first)
        && !["inf", "dl", "hpc", "trn", "mac"]
            .iter()
            .any(|p| family.starts_with(p))
}

/// What environment `stack` (its `name`, zones `zones`) still needs of each quota, for the
/// `stages` that will run, given what the account holds.
pub fn need(stack: &Stack, zones: &[String], stages: &[&str], usage: &Usage) -> Need {
    let mine = |owners: &[Option<String>]| {
        owners
            .iter()
            .filter(|o| o.as_deref() == Some(stack.name.as_str()))
            .count() as u64
    };
    let mut need = Need::default();
    if stages.contains(&"network") {
        need.vpcs = u64::from(mine(&usage.vpcs) == 0);
        need.internet_gateways = u64::from(mine(&usage.internet_gateways) == 0);
    }
    if stages.contains(&"nat") {
        let nat_zones: Vec<&String> = match stack.network.nat {
            NatMode::PerZone => zones.iter().collect(),
            NatMode::Single => zones.iter().take(1).collect(),
        };
        need.elastic_ips = (nat_zones.len() as u64).saturating_sub(mine(&usage.elastic_ips));
        for zone in nat_zones {
            let have = usage
                .nat_gateways
                .iter()
                .any(|(z, o)| z == zone && o.as_deref() == Some(stack.name.as_str()));
            if !have {
                need.nat_gateways.insert(zone.clone(), 1);
            }
        }
    }
    if stages.contains(&"cluster") && !usage.clusters.contains(stack.cluster_name()) {
        need.eks_clusters = 1;
    }
    if stages.contains(&"nodegroup")
        && stack.node_group.capacity_type == CapacityType::OnDemand
        && !usage.with_node_group.contains(stack.cluster_name())
        && stack
            .node_group
            .instance_types
            .iter()
            .all(|t| standard_family(t))
    {
        need.vcpus = u64::from(stack.node_group.size) * node_vcpus(stack, usage).unwrap_or(0);
    }
    if stages.contains(&"iam") {
        need.iam_roles = crate::names::Role::ALL
            .iter()
            .filter(|r| !usage.roles.contains(&r.name(stack)))
            .count() as u64;
        need.spot_role = stack.karpenter.capacity_types.contains(&CapacityType::Spot)
            && !usage.roles.contains(SPOT_ROLE);
    }
    if stages.contains(&"access")
        && stack.access.wants_role(false)
        && !usage.roles.contains(&crate::names::attendee_role(stack))
    {
        need.iam_roles += 1;
    }
    need
}

/// One line of the quota table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub quota: QuotaKey,
    pub name: &'static str,
    pub service: &'static str,
    pub code: &'static str,
    /// The zone, for the per-zone quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub limit: u64,
    #[serde(flatten)]
    pub source: Source,
    pub in_use: u64,
    pub needed: u64,
    /// In use plus needed is over the limit.
    pub over: bool,
    /// ... and the check refuses for it (not a usage-based quota known only by its default).
    pub refuses: bool,
}

/// The quotas of one account and region against what a set of environments needs there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub account: String,
    pub region: String,
    /// The environments counted here.
    pub envs: Vec<String>,
    pub rows: Vec<Row>,
    /// What each of `envs` needs.
    #[serde(skip)]
    pub needs: Vec<Need>,
}

/// The limits Service Quotas gave, or the defaults; by quota.
pub type Limits = BTreeMap<QuotaKey, (u64, Source)>;

/// The quotas some environment needs at all (only those are looked up).
pub fn needed_quotas(needs: &[Need]) -> BTreeSet<QuotaKey> {
    let mut keys = BTreeSet::new();
    for q in &QUOTAS {
        if needs
            .iter()
            .any(|n| n.of(q.key, None) > 0 || (q.key == QuotaKey::IamRoles && n.spot_role))
        {
            keys.insert(q.key);
        }
    }
    keys
}

impl Check {
    /// Adds up `needs` (one per environment, named `envs`) against `usage` and `limits`.
    /// Quotas nothing needs are left out: a converged fleet has an empty table.
    pub fn new(
        account: &str,
        region: &str,
        envs: &[String],
        needs: &[Need],
        usage: &Usage,
        limits: &Limits,
    ) -> Check {
        let mut rows = Vec::new();
        for q in &QUOTAS {
            let (limit, source) = limits.get(&q.key).cloned().unwrap_or_else(|| {
                (
                    q.default,
                    Source::Default {
                        why: "not looked up".into(),
                    },
                )
            });
            let mut push = |zone: Option<String>, in_use: u64, needed: u64| {
                if needed == 0 {
                    return;
                }
                let over = in_use + needed > limit;
                let by_default = matches!(source, Source::Default { .. });
                rows.push(Row {
                    quota: q.key,
                    name: q.name,
                    service: q.service,
                    code: q.code,
                    zone,
                    limit,
                    source: source.clone(),
                    in_use,
                    needed,
                    over,
                    refuses: over && !(q.usage_based && by_default),
                });
            };
            let sum = |zone: Option<&str>| needs.iter().map(|n| n.of(q.key, zone)).sum::<u64>();
            match q.key {
                QuotaKey::Vpcs => push(None, usage.vpcs.len() as u64, sum(None)),
                QuotaKey::InternetGateways => {
                    push(None, usage.internet_gateways.len() as u64, sum(None))
                }
                QuotaKey::ElasticIps => push(None, usage.elastic_ips.len() as u64, sum(None)),
                QuotaKey::NatGatewaysPerZone => {
                    let zones: BTreeSet<&String> =
                        needs.iter().flat_map(|n| n.nat_gateways.keys()).collect();
                    for zone in zones {
                        let in_use =
                            usage.nat_gateways.iter().filter(|(z, _)| z == zone).count() as u64;
                        push(Some(zone.clone()), in_use, sum(Some(zone)));
                    }
                }
                QuotaKey::EksClusters => push(None, usage.clusters.len() as u64, sum(None)),
                QuotaKey::OnDemandVcpus => push(None, usage.vcpus, sum(None)),
                QuotaKey::IamRoles => {
                    let spot = u64::from(needs.iter().any(|n| n.spot_role));
                    push(None, usage.roles.len() as u64, sum(None) + spot)
                }
            }
        }
        Check {
            account: account.to_string(),
            region: region.to_string(),
            envs: envs.to_vec(),
            rows,
            needs: needs.to_vec(),
        }
    }

    /// Whether nothing refuses.
    pub fn fits(&self) -> bool {
        !self.rows.iter().any(|r| r.refuses)
    }

    /// Rows over their limit that do not refuse (a usage-based quota known only by its
    /// default): warnings.
    pub fn doubts(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.over && !r.refuses)
    }

    /// The table: quota, code, limit, in use, needed; defaults marked and explained.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "quotas in account {}, region {} ({} environment{}):",
            self.account,
            self.region,
            self.envs.len(),
            if self.envs.len() == 1 { "" } else { "s" }
        );
        if self.rows.is_empty() {
            let _ = writeln!(out, "  nothing to create that counts against a quota");
            return out;
        }
        let label = |r: &Row| match &r.zone {
            Some(z) => format!("{} ({z})", r.name),
            None => r.name.to_string(),
        };
        let width = self
            .rows
            .iter()
            .map(|r| label(r).len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            out,
            "  {:<width$}  {:<15}  {:>6}  {:>6}  {:>6}",
            "quota", "code", "limit", "in use", "needed"
        );
        let mut defaults = Vec::new();
        for r in &self.rows {
            let mark = match &r.source {
                Source::Api => " ",
                Source::Default { why } => {
                    if !defaults.contains(why) {
                        defaults.push(why.clone());
                    }
                    "*"
                }
            };
            let verdict = match (r.over, r.refuses) {
                (false, _) => String::new(),
                (true, true) => format!("  over by {}", r.in_use + r.needed - r.limit),
                (true, false) => "  may be over (the limit is only AWS's default)".to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<width$}  {:<15}  {:>5}{mark}  {:>6}  {:>6}{verdict}",
                label(r),
                format!("{}/{}", r.service, r.code),
                r.limit,
                r.in_use,
                r.needed,
            );
        }
        for why in defaults {
            let _ = writeln!(
                out,
                "  * AWS's documented default: Service Quotas did not give this account's value ({why})"
            );
        }
        out
    }

    /// What would make it fit, one suggestion per line (empty when it fits): `network.nat:
    /// single` when NAT gateways or their addresses are short, fewer environments, and each
    /// quota increase with its code. `zones` are the environments' zones, in the stack's order.
    pub fn advice(&self, stack: &Stack, zones: &[String]) -> Vec<String> {
        let over: Vec<&Row> = self.rows.iter().filter(|r| r.refuses).collect();
        if over.is_empty() {
            return Vec::new();
        }
        let mut advice = Vec::new();
        let nat_bound = over
            .iter()
            .any(|r| matches!(r.quota, QuotaKey::ElasticIps | QuotaKey::NatGatewaysPerZone));
        if nat_bound && stack.network.nat == NatMode::PerZone && zones.len() > 1 {
            // With one NAT gateway each, every environment that builds its network needs one
            // address and one gateway, in the first zone.
            let k = self
                .needs
                .iter()
                .filter(|n| n.elastic_ips > 0 || !n.nat_gateways.is_empty())
                .count() as u64;
            let fits_with = |key: QuotaKey, zone: Option<&String>| {
                self.rows
                    .iter()
                    .find(|r| r.quota == key && r.zone.as_ref() == zone)
                    .is_none_or(|r| r.in_use + k <= r.limit)
            };
            let others_fit = over
                .iter()
                .all(|r| matches!(r.quota, QuotaKey::ElasticIps | QuotaKey::NatGatewaysPerZone));
            let fits = others_fit
                && fits_with(QuotaKey::ElasticIps, None)
                && fits_with(QuotaKey::NatGatewaysPerZone, zones.first());
            advice.push(format!(
                "set `network.nat: single` in the stack file: each environment then needs 1 NAT \
                 gateway and 1 Elastic IP instead of {}{}",
                zones.len(),
                if fits {
                    " (that alone would fit)"
                } else {
                    " (not enough on its own)"
                }
            ));
        }
        let envs = self.envs.len() as u64;
        if envs > 1 {
            let fit = over
                .iter()
                .map(|r| {
                    let per_env = r.needed.div_ceil(envs).max(1);
                    r.limit.saturating_sub(r.in_use) / per_env
                })
                .min()
                .unwrap_or(0);
            advice.push(format!(
                "fewer environments: at most {fit} of these {envs} fit in account {}, region {} \
                 (or spread them over more accounts with --accounts)",
                self.account, self.region
            ));
        }
        for r in over {
            let want = r.in_use + r.needed;
            let region = if r.scope_is_account() {
                "us-east-1".to_string()
            } else {
                self.region.clone()
            };
            advice.push(format!(
                "ask for more {}: `aws service-quotas request-service-quota-increase \
                 --service-code {} --quota-code {} --desired-value {want} --region {region}` \
                 (now {}; increases can take hours to days)",
                r.name, r.service, r.code, r.limit
            ));
        }
        advice
    }
}

impl Row {
    fn scope_is_account(&self) -> bool {
        quota(self.quota).scope == Scope::Account
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(yaml: &str) -> Stack {
        Stack::parse(&format!("name: demo\n{yaml}"), "t.yaml").unwrap()
    }

    const ALL: [&str; 6] = [
        "network",
        "nat",
        "iam",
        "cluster",
        "nodegroup",
        "karpenter-infra",
    ];

    fn zones() -> Vec<String> {
        ["us-east-1a", "us-east-1b", "us-east-1c"]
            .map(String::from)
            .to_vec()
    }

    fn usage() -> Usage {
        Usage {
            vpcs: vec![None], // the default VPC
            vcpus_per_type: BTreeMap::from([("m5.large".to_string(), 2)]),
            ..Usage::default()
        }
    }

    /// The documented defaults, as if the API gave them; on-demand vCPUs as an account in use
    /// has them (AWS raises that one with use), so that they do not get in the way.
    fn api_limits() -> Limits {
        let mut limits: Limits = QUOTAS
            .iter()
            .map(|q| (q.key, (q.default, Source::Api)))
            .collect();
        limits.insert(QuotaKey::OnDemandVcpus, (1000, Source::Api));
        limits
    }

    #[test]
    fn an_empty_account_needs_everything_once() {
        let s = stack("");
        let n = need(&s, &zones(), &ALL, &usage());
        assert_eq!(n.vpcs, 1);
        assert_eq!(n.internet_gateways, 1);
        assert_eq!(n.elastic_ips, 3);
        assert_eq!(n.nat_gateways.len(), 3);
        assert_eq!(n.eks_clusters, 1);
        assert_eq!(n.vcpus, 3 * 2);
        assert_eq!(n.iam_roles, 3);
        assert!(n.spot_role);
        let single = need(
            &stack("network:\n  nat: single\n"),
            &zones(),
            &ALL,
            &usage(),
        );
        assert_eq!(single.elastic_ips, 1);
        assert_eq!(
            single.nat_gateways,
            BTreeMap::from([("us-east-1a".to_string(), 1)])
        );
    }

    #[test]
    fn a_converged_stack_needs_nothing_and_only_selected_stages_count() {
        let s = stack("");
        let me = Some("demo".to_string());
        let u = Usage {
            vpcs: vec![None, me.clone()],
            internet_gateways: vec![me.clone()],
            elastic_ips: vec![me.clone(); 3],
            nat_gateways: zones().into_iter().map(|z| (z, me.clone())).collect(),
            clusters: BTreeSet::from(["demo".to_string()]),
            with_node_group: BTreeSet::from(["demo".to_string()]),
            roles: ["demo-cluster", "demo-node", "demo-karpenter", SPOT_ROLE]
                .map(String::from)
                .into(),
            ..usage()
        };
        assert!(need(&s, &zones(), &ALL, &u).is_empty());
        // Someone else's resources are in use, but not ours.
        let other = Usage {
            vpcs: vec![Some("other".into())],
            ..usage()
        };
        assert_eq!(need(&s, &zones(), &ALL, &other).vpcs, 1);
        assert!(need(&s, &zones(), &["karpenter-infra"], &usage()).is_empty());
        let only_iam = need(&s, &zones(), &["iam"], &usage());
        assert_eq!((only_iam.vpcs, only_iam.iam_roles), (0, 3));
    }

    #[test]
    fn spot_and_other_families_do_not_count_as_standard_on_demand() {
        let spot = stack("node_group:\n  capacity_type: spot\n");
        assert_eq!(need(&spot, &zones(), &ALL, &usage()).vcpus, 0);
        for (t, standard) in [
            ("m5.large", true),
            ("t3.medium", true),
            ("c7g.xlarge", true),
            ("r6i.large", true),
            ("inf2.xlarge", false),
            ("g5.xlarge", false),
            ("p4d.24xlarge", false),
            ("dl1.24xlarge", false),
            ("x2idn.large", false),
        ] {
            assert_eq!(standard_family(t), standard, "{t}");
        }
    }

    fn fleet(n: usize, s: &Stack, u: &Usage, limits: &Limits) -> Check {
        let envs: Vec<String> = (1..=n).map(|i| format!("demo-{i}")).collect();
        let needs: Vec<Need> = envs
            .iter()
            .map(|e| need(&s.renamed(e).unwrap(), &zones(), &ALL, u))
            .collect();
        Check::new("123456789012", "us-east-1", &envs, &needs, u, limits)
    }

    #[test]
    fn five_environments_overrun_the_vpcs_beside_the_default_one() {
        let s = stack("network:\n  nat: single\n");
        let four = fleet(4, &s, &usage(), &api_limits());
        assert!(four.fits(), "{}", four.table());
        let five = fleet(5, &s, &usage(), &api_limits());
        assert!(!five.fits());
        let refusing: Vec<QuotaKey> = five
            .rows
            .iter()
            .filter(|r| r.refuses)
            .map(|r| r.quota)
            .collect();
        assert_eq!(refusing, [QuotaKey::Vpcs], "{}", five.table());
        let table = five.table();
        assert!(table.contains("VPCs per Region"), "{table}");
        assert!(table.contains("vpc/L-F678F1CE"), "{table}");
        assert!(table.contains("over by 1"), "{table}");
        let advice = five.advice(&s, &zones()).join("\n");
        assert!(advice.contains("at most 4 of these 5"), "{advice}");
        assert!(
            advice.contains("--quota-code L-F678F1CE --desired-value 6"),
            "{advice}"
        );
        assert!(!advice.contains("nat: single"), "already single: {advice}");
    }

    #[test]
    fn nat_per_zone_runs_out_of_elastic_ips_at_the_second_environment() {
        let s = stack("");
        let mut limits = api_limits();
        limits.insert(
            QuotaKey::ElasticIps,
            (
                5,
                Source::Default {
                    why: "NoSuchResourceException".into(),
                },
            ),
        );
        let two = fleet(2, &s, &usage(), &limits);
        assert!(!two.fits());
        let eip = two
            .rows
            .iter()
            .find(|r| r.quota == QuotaKey::ElasticIps)
            .unwrap();
        assert_eq!(
            (eip.limit, eip.in_use, eip.needed, eip.refuses),
            (5, 0, 6, true)
        );
        let table = two.table();
        assert!(table.contains("5*"), "{table}");
        assert!(table.contains("documented default"), "{table}");
        assert!(table.contains("NoSuchResourceException"), "{table}");
        let advice = two.advice(&s, &zones()).join("\n");
        assert!(advice.contains("network.nat: single"), "{advice}");
        assert!(advice.contains("that alone would fit"), "{advice}");
        assert!(advice.contains("at most 1 of these 2"), "{advice}");
        assert!(advice.contains("L-0263D0A3"), "{advice}");
        // One environment fits.
        assert!(fleet(1, &s, &usage(), &limits).fits());
    }

    #[test]
    fn a_usage_based_default_warns_instead_of_refusing() {
        let s = stack("");
        let mut limits = api_limits();
        limits.insert(
            QuotaKey::OnDemandVcpus,
            (
                5,
                Source::Default {
                    why: "NoSuchResourceException".into(),
                },
            ),
        );
        let one = fleet(1, &s, &usage(), &limits);
        assert!(one.fits(), "{}", one.table());
        assert_eq!(one.doubts().count(), 1);
        assert!(one.table().contains("may be over"), "{}", one.table());
        // The same limit from the API refuses.
        limits.insert(QuotaKey::OnDemandVcpus, (5, Source::Api));
        assert!(!fleet(1, &s, &usage(), &limits).fits());
    }

    #[test]
    fn nat_gateways_count_per_zone_and_roles_count_the_spot_role_once() {
        let s = stack("");
        let u = Usage {
            nat_gateways: vec![
                ("us-east-1a".into(), None),
                ("us-east-1a".into(), None),
                ("us-east-1b".into(), None),
            ],
            ..usage()
        };
        let c = fleet(2, &s, &u, &api_limits());
        let nat: Vec<(Option<&str>, u64, u64)> = c
            .rows
            .iter()
            .filter(|r| r.quota == QuotaKey::NatGatewaysPerZone)
            .map(|r| (r.zone.as_deref(), r.in_use, r.needed))
            .collect();
        assert_eq!(
            nat,
            [
                (Some("us-east-1a"), 2, 2),
                (Some("us-east-1b"), 1, 2),
                (Some("us-east-1c"), 0, 2)
            ]
        );
        let roles = c
            .rows
            .iter()
            .find(|r| r.quota == QuotaKey::IamRoles)
            .unwrap();
        assert_eq!(roles.needed, 2 * 3 + 1);
    }

    #[test]
    fn a_converged_fleet_has_an_empty_table_and_looks_nothing_up() {
        let s = stack("");
        let me = |n: &str| Some(n.to_string());
        let u = Usage {
            vpcs: vec![me("demo-1")],
            internet_gateways: vec![me("demo-1")],
            elastic_ips: vec![me("demo-1"); 3],
            nat_gateways: zones().into_iter().map(|z| (z, me("demo-1"))).collect(),
            clusters: BTreeSet::from(["demo-1".to_string()]),
            with_node_group: BTreeSet::from(["demo-1".to_string()]),
            roles: [
                "demo-1-cluster",
                "demo-1-node",
                "demo-1-karpenter",
                SPOT_ROLE,
            ]
            .map(String::from)
            .into(),
            ..usage()
        };
        let c = fleet(1, &s, &u, &api_limits());
        assert!(c.rows.is_empty() && c.fits());
        let needs = [need(&s.renamed("demo-1").unwrap(), &zones(), &ALL, &u)];
        assert!(needed_quotas(&needs).is_empty());
        assert!(c.table().contains("nothing to create"));
    }
}
