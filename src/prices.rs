//! What a stack costs while it runs: an estimate per hour and per day from a price table
//! shipped with meshstack (`prices/aws.yaml`, region, date and source stated in it), or one
//! given with `--prices FILE` in the same format.
//!
//! Counted: the EKS control plane, the NAT gateways (hourly), the public IPv4 addresses (the
//! NAT gateways' Elastic IPs and the ingress load balancer's, one per zone), the node group's
//! instances by type, and the ingress gateway's load balancer — a Network Load Balancer, as
//! `stacks/istio/gateway-values.yaml` asks the in-tree controller for (`aws-load-balancer-type:
//! nlb`): its hour, and one NLCU-hour for a demo's traffic. Not counted, and said so: data
//! processed and transferred beyond that NLCU, EBS volumes, and the nodes Karpenter adds on
//! demand. Pure: no AWS calls.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{NatMode, Stack};

/// The built-in table.
pub const BUILTIN_YAML: &str = include_str!("../prices/aws.yaml");

/// A data-transfer price, USD per GB, with where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TransferPrice {
    /// Charged on each side of a transfer: a GB that crosses zones costs twice this.
    pub dollars_per_gb_each_way: f64,
    pub source: &'static str,
    /// When it was checked.
    pub date: &'static str,
}

/// Data transfer between availability zones of one region (EC2, EKS pods and load balancers
/// alike): $0.01/GB out of the sending zone and $0.01/GB into the receiving one. The same in
/// every commercial region the price table lists, so it is kept here and not per region.
pub const INTER_AZ: TransferPrice = TransferPrice {
    dollars_per_gb_each_way: 0.01,
    source: "Amazon EC2 On-Demand pricing, \"Data Transfer within the same AWS Region\" \
             (aws.amazon.com/ec2/pricing/on-demand/): $0.01/GB in and $0.01/GB out between \
             Availability Zones",
    date: "2026-11-30",
};

/// The region whose prices stand in for a region the table does not have.
pub const FALLBACK_REGION: &str = "us-east-1";

/// A price table: USD per hour, by region.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Where the prices come from.
    pub source: String,
    /// When they were taken.
    pub date: String,
    pub regions: BTreeMap<String, RegionPrices>,
    /// The file it was read from, or "built in".
    #[serde(skip)]
    pub origin: String,
}

/// One region's prices, USD per hour.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionPrices {
    /// An EKS cluster-hour in standard support.
    pub eks_cluster: f64,
    /// An EKS cluster-hour in extended support (standard + the extended-support fee); a
    /// table without it leaves such a cluster unpriced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eks_cluster_extended: Option<f64>,
    pub nat_gateway: f64,
    pub public_ipv4: f64,
    /// A Network Load Balancer-hour (the ingress gateway's). A table without it leaves the
    /// load balancer unpriced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_load_balancer: Option<f64>,
    /// A Network Load Balancer Capacity Unit-hour (NLCU: 800 new TCP flows a second, 100,000
    /// active flows, or 1 GB processed in the hour, whichever is highest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlcu: Option<f64>,
    /// A Classic Load Balancer-hour: what earlier tables priced the gateway as, before it was
    /// known to be an NLB. Accepted so that those tables still load; not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<f64>,
    #[serde(default)]
    pub instances: BTreeMap<String, f64>,
}

impl PriceTable {
    /// The table built into meshstack.
    pub fn builtin() -> PriceTable {
        PriceTable::parse(BUILTIN_YAML, "built in").expect("prices/aws.yaml is valid (tested)")
    }

    /// `--prices FILE`, or the built-in table.
    ///
    /// # Errors
    /// The file cannot be read or is not a price table; the message names the file.
    pub fn load(path: Option<&Path>) -> Result<PriceTable, String> {
        match path {
            None => Ok(PriceTable::builtin()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("{}: cannot read the price table: {e}", p.display()))?;
                PriceTable::parse(&text, &p.display().to_string())
            }
        }
    }

    /// Parses a table; `origin` names it in errors.
    ///
    /// # Errors
    /// Not YAML of the expected shape, or a negative price.
    pub fn parse(text: &str, origin: &str) -> Result<PriceTable, String> {
        let mut table: PriceTable = serde_yaml::from_str(text).map_err(|e| {
            format!(
                "{origin}: not a price table ({e}); see prices/aws.yaml in meshstack's repository \
                 for the format"
            )
        })?;
        for (region, p) in &table.regions {
            let all = [p.eks_cluster, p.nat_gateway, p.public_ipv4];
            let optional = [
                p.eks_cluster_extended,
                p.network_load_balancer,
                p.nlcu,
                p.load_balancer,
            ];
            if all
                .iter()
                .chain(optional.iter().flatten())
                .chain(p.instances.values())
                .any(|v| !v.is_finite() || *v < 0.0)
            {
                return Err(format!(
                    "{origin}: regions.{region}: prices must be 0 or more"
                ));
            }
        }
        table.origin = origin.to_string();
        Ok(table)
    }
}

/// One item of an estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub item: String,
    pub count: u64,
    /// USD per hour each; `None` when the table has no price for it.
    pub unit: Option<f64>,
    /// `count × unit`.
    pub per_hour: Option<f64>,
    /// What the count is made of, when that is not obvious.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a stack costs per hour, item by item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// The stack's region.
    pub region: String,
    /// The region whose prices were used (another when the table lacks the stack's).
    pub priced_as: String,
    pub source: String,
    pub date: String,
    pub origin: String,
    pub lines: Vec<Line>,
    /// The sum of the lines that have a price.
    pub per_hour: f64,
    pub per_day: f64,
    /// Items without a price (then the totals are too low).
    pub unpriced: Vec<String>,
}

/// Which stages' resources are counted: those selected.
///
/// `eks_extended`: the cluster's Kubernetes version is in EKS extended support, and its
/// control plane is priced as such.
pub fn estimate(
    stack: &Stack,
    region: &str,
    stages: &[&str],
    table: &PriceTable,
    eks_extended: bool,
) -> Estimate {
    let (priced_as, prices) = match table.regions.get(region) {
        Some(p) => (region.to_string(), Some(p)),
        None => (
            FALLBACK_REGION.to_string(),
            table.regions.get(FALLBACK_REGION),
        ),
    };
    let zones = stack.zone_count() as u64;
    let mut lines = Vec::new();
    let mut add = |item: String, count: u64, unit: Option<f64>, note: Option<String>| {
        if count > 0 {
            lines.push(Line {
                item,
                count,
                unit,
                per_hour: unit.map(|u| u * count as f64),
                note,
            });
        }
    };
    let has = |s: &str| stages.contains(&s);
    if has("cluster") {
        if eks_extended {
            add(
                "EKS control plane (extended support)".into(),
                1,
                prices.and_then(|p| p.eks_cluster_extended),
                Some(format!(
                    "Kubernetes {} is past EKS standard support",
                    stack.kubernetes_version
                )),
            );
        } else {
            add(
                "EKS control plane".into(),
                1,
                prices.map(|p| p.eks_cluster),
                None,
            );
        }
    }
    let nats = if has("nat") {
        match stack.network.nat {
            NatMode::PerZone => zones,
            NatMode::Single => 1,
        }
    } else {
        0
    };
    add(
        "NAT gateways (hourly)".into(),
        nats,
        prices.map(|p| p.nat_gateway),
        None,
    );
    if has("nodegroup") {
        let t = &stack.node_group.instance_types[0];
        let note = (stack.node_group.instance_types.len() > 1).then(|| {
            format!(
                "priced as the first of {}",
                stack.node_group.instance_types.join(", ")
            )
        });
        let note = match stack.node_group.capacity_type {
            crate::config::CapacityType::Spot => {
                Some("spot: on-demand price shown; spot is usually well below it".to_string())
            }
            crate::config::CapacityType::OnDemand => note,
        };
        add(
            format!("node group: {t}"),
            u64::from(stack.node_group.size),
            prices.and_then(|p| p.instances.get(t).copied()),
            note,
        );
    }
    let lb = has("istio");
    let lb_addresses = if lb { zones } else { 0 };
    add(
        "public IPv4 addresses".into(),
        nats + lb_addresses,
        prices.map(|p| p.public_ipv4),
        Some(match (nats, lb_addresses) {
            (n, 0) => format!("{n} NAT Elastic IP{}", if n == 1 { "" } else { "s" }),
            (0, l) => format!("{l} of the ingress load balancer"),
            (n, l) => format!(
                "{n} NAT Elastic IP{}, {l} of the ingress load balancer",
                if n == 1 { "" } else { "s" }
            ),
        }),
    );
    if lb {
        // The gateway's Service asks the in-tree controller for an NLB
        // (stacks/istio/gateway-values.yaml): billed by the hour and by the NLCU-hour.
        add(
            "ingress load balancer (Network)".into(),
            1,
            prices.and_then(|p| p.network_load_balancer),
            None,
        );
        add(
            "ingress load balancer NLCU".into(),
            1,
            prices.and_then(|p| p.nlcu),
            Some("a demo's traffic fits in one; more traffic, more NLCUs".into()),
        );
    }
    let per_hour: f64 = lines.iter().filter_map(|l| l.per_hour).sum();
    let unpriced = lines
        .iter()
        .filter(|l| l.unit.is_none())
        .map(|l| l.item.clone())
        .collect();
    Estimate {
        region: region.to_string(),
        priced_as,
        source: table.source.clone(),
        date: table.date.clone(),
        origin: table.origin.clone(),
        lines,
        per_hour,
        per_day: per_hour * 24.0,
        unpriced,
    }
}

/// `$0.5780` style: four decimals under a dollar, two above.
pub fn dollars(v: f64) -> String {
    if v.abs() < 1.0 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

impl Estimate {
    /// Where the prices come from, in one line.
    pub fn provenance(&self) -> String {
        let mut s = format!(
            "prices for {} of {} ({}; {})",
            self.priced_as, self.date, self.source, self.origin
        );
        if self.priced_as != self.region {
            s.push_str(&format!(
                "; the table has no prices for {}, so {}'s stand in",
                self.region, self.priced_as
            ));
        }
        s
    }

    /// The breakdown, indented, with the totals and what is not included.
    pub fn render(&self, times: u64) -> String {
        let mut out = String::new();
        let width = self.lines.iter().map(|l| l.item.len()).max().unwrap_or(0);
        for l in &self.lines {
            let unit = l
                .unit
                .map_or("no price".to_string(), |u| format!("{}/h", dollars(u)));
            let total = l
                .per_hour
                .map_or("?".to_string(), |t| format!("{}/h", dollars(t)));
            let note = l
                .note
                .as_ref()
                .map(|n| format!("  ({n})"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<width$}  {:>3} × {:>12}  {:>11}{note}",
                l.item, l.count, unit, total
            );
        }
        let incomplete = if self.unpriced.is_empty() {
            String::new()
        } else {
            format!(" + unpriced: {}", self.unpriced.join(", "))
        };
        let _ = writeln!(
            out,
            "  total: {}/h, {}/day{incomplete}",
            dollars(self.per_hour),
            dollars(self.per_day)
        );
        if times > 1 {
            let _ = writeln!(
                out,
                "  fleet of {times}: {}/h, {}/day",
                dollars(self.per_hour * times as f64),
                dollars(self.per_day * times as f64)
            );
        }
        let _ = writeln!(
            out,
            "  not included: data processed by the NAT gateways, load balancer traffic beyond \
             one NLCU, data transfer, EBS volumes, Karpenter's nodes"
        );
        let _ = writeln!(out, "  {}", self.provenance());
        out
    }
}

/// Hours and minutes: `3h05m`, `12m`, `2d 4h`.
pub fn uptime(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, h) => format!("{h}h{m:02}m"),
        (d, h) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWS: [&str; 6] = [
        "network",
        "nat",
        "iam",
        "cluster",
        "nodegroup",
        "karpenter-infra",
    ];
    const ALL: [&str; 15] = [
        "network",
        "nat",
        "iam",
        "cluster",
        "nodegroup",
        "karpenter-infra",
        "karpenter",
        "prometheus",
        "istio-base",
        "istio",
        "jaeger",
        "kiali-operator",
        "kiali",
        "app",
        "locality",
    ];

    #[test]
    fn the_builtin_table_parses_and_covers_the_default_stack() {
        let t = PriceTable::builtin();
        assert!(!t.source.is_empty() && !t.date.is_empty());
        let s = Stack::embedded_default();
        for (region, p) in &t.regions {
            for ty in &s.node_group.instance_types {
                assert!(p.instances.contains_key(ty), "{region} lacks {ty}");
            }
        }
    }

    #[test]
    fn the_default_stack_in_us_east_1() {
        let s = Stack::embedded_default();
        let e = estimate(&s, "us-east-1", &ALL, &PriceTable::builtin(), false);
        let items: Vec<(&str, u64)> = e.lines.iter().map(|l| (l.item.as_str(), l.count)).collect();
        assert_eq!(
            items,
            [
                ("EKS control plane", 1),
                ("NAT gateways (hourly)", 3),
                ("node group: m5.large", 3),
                ("public IPv4 addresses", 6),
                ("ingress load balancer (Network)", 1),
                ("ingress load balancer NLCU", 1),
            ]
        );
        // 0.10 + 3 × 0.045 + 3 × 0.096 + 6 × 0.005 + 0.0225 + 0.006
        assert!((e.per_hour - 0.5815).abs() < 1e-9, "{}", e.per_hour);
        assert!((e.per_day - 0.5815 * 24.0).abs() < 1e-9);
        assert!(e.unpriced.is_empty());
        let text = e.render(30);
        assert!(text.contains("total: $0.5815/h, $13.96/day"), "{text}");
        assert!(
            text.contains("fleet of 30: $17.45/h, $418.68/day"),
            "{text}"
        );
        assert!(
            text.contains("prices for us-east-1 of 2026-11-30"),
            "{text}"
        );
    }

    #[test]
    fn only_the_selected_stages_count_and_single_nat_is_cheaper() {
        let s = Stack::parse("name: t\nnetwork:\n  nat: single\n", "t").unwrap();
        let e = estimate(&s, "eu-west-1", &AWS, &PriceTable::builtin(), false);
        assert!(!e.lines.iter().any(|l| l.item.contains("load balancer")));
        let ips = e.lines.iter().find(|l| l.item.contains("IPv4")).unwrap();
        assert_eq!(ips.count, 1);
        assert_eq!(ips.note.as_deref(), Some("1 NAT Elastic IP"));
        // 0.10 + 0.048 + 3 × 0.107 + 0.005
        assert!((e.per_hour - 0.474).abs() < 1e-9, "{}", e.per_hour);
    }

    #[test]
    fn an_unknown_region_or_type_is_said_so() {
        let s = Stack::parse(
            "name: t\nnode_group:\n  instance_types: [m5.large, m5a.large]\n",
            "t",
        )
        .unwrap();
        let e = estimate(&s, "ap-south-2", &AWS, &PriceTable::builtin(), false);
        assert_eq!(e.priced_as, "us-east-1");
        assert!(
            e.provenance().contains("no prices for ap-south-2"),
            "{}",
            e.provenance()
        );
        let ng = e
            .lines
            .iter()
            .find(|l| l.item.starts_with("node group"))
            .unwrap();
        assert_eq!(
            ng.note.as_deref(),
            Some("priced as the first of m5.large, m5a.large")
        );
        let odd =
            Stack::parse("name: t\nnode_group:\n  instance_types: [m5a.large]\n", "t").unwrap();
        let e = estimate(&odd, "us-east-1", &AWS, &PriceTable::builtin(), false);
        assert_eq!(e.unpriced, ["node group: m5a.large"]);
        assert!(e.render(1).contains("no price"), "{}", e.render(1));
    }

    #[test]
    fn a_price_file_must_be_a_price_table() {
        let ok = "source: mine\ndate: \"2026-01-01\"\nregions:\n  us-east-1:\n    eks_cluster: 0.1\n    nat_gateway: 0.05\n    public_ipv4: 0.005\n    load_balancer: 0.03\n";
        let t = PriceTable::parse(ok, "mine.yaml").unwrap();
        assert_eq!(t.origin, "mine.yaml");
        let err = PriceTable::parse("source: x\n", "bad.yaml").unwrap_err();
        assert!(err.starts_with("bad.yaml: not a price table"), "{err}");
        let neg = ok.replace("0.05", "-1");
        assert!(PriceTable::parse(&neg, "neg.yaml")
            .unwrap_err()
            .contains("0 or more"));
        // A table of before the NLB (a Classic price only) loads, and says what it lacks.
        let e = estimate(
            &Stack::embedded_default(),
            "us-east-1",
            &["istio"],
            &t,
            false,
        );
        assert_eq!(
            e.unpriced,
            [
                "ingress load balancer (Network)",
                "ingress load balancer NLCU"
            ]
        );
        let bad = ok.replace("load_balancer: 0.03", "nlcu: -0.006");
        assert!(PriceTable::parse(&bad, "bad.yaml")
            .unwrap_err()
            .contains("0 or more"));
    }

    /// The table prices the load balancer the gateway asks for: the annotation in the gateway's
    /// values is the in-tree controller's NLB.
    #[test]
    fn the_gateway_is_priced_as_the_load_balancer_it_asks_for() {
        // What the rendered gateway values ask of the in-tree cloud provider.
        let stack = crate::config::Stack::embedded_default();
        let inputs = crate::render::RenderInputs {
            account_id: "123456789012".into(),
            partition: "aws".into(),
            region: "us-east-1".into(),
            zones: vec!["us-east-1a".into(), "us-east-1b".into()],
            cluster_endpoint: "https://example.eks.amazonaws.com".into(),
        };
        let files = crate::render::render(&stack, &inputs).unwrap();
        let gateway = files
            .iter()
            .find(|f| f.path == "stacks/istio/gateway-values.yaml")
            .unwrap();
        let values: serde_yaml::Value = serde_yaml::from_str(&gateway.content).unwrap();
        assert_eq!(
            values["service"]["annotations"][crate::render::GATEWAY_LB_ANNOTATION],
            "nlb",
            "the gateway no longer asks for an NLB: change the price lines with it"
        );
        for (region, p) in PriceTable::builtin().regions {
            assert!(
                p.network_load_balancer.is_some() && p.nlcu.is_some(),
                "{region}"
            );
        }
    }

    #[test]
    fn money_and_time_read_well() {
        assert_eq!(dollars(0.578), "$0.5780");
        assert_eq!(dollars(13.872), "$13.87");
        assert_eq!(uptime(59), "0m");
        assert_eq!(uptime(3 * 3600 + 5 * 60), "3h05m");
        assert_eq!(uptime(2 * 86_400 + 4 * 3600 + 59), "2d 4h");
    }
}
