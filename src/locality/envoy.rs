//! Envoy's admin `/clusters` text output, read into one [`Endpoint`] per upstream host.
//!
//! `meshstack verify` reads it from every caller's sidecar (or from a saved dump) because it is
//! the only place that says, per upstream endpoint, which locality Envoy placed it in and how
//! many requests it sent there. The format is Envoy's (`source/server/admin/clusters_handler.cc`):
//! one `name::key::value` line per fact, cluster-level facts as `CLUSTER::KEY::...` and per-host
//! facts as `CLUSTER::ADDRESS::STAT::VALUE`. An IPv6 address is printed in brackets and holds
//! `::` itself (`[fd00:10:244::5]:3004`), so fields are split on `::` outside brackets only.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// One upstream host of one cluster, as a sidecar sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    /// Envoy's cluster name, e.g. `outbound|3003||orders-service.ecommerce.svc.cluster.local`.
    pub cluster: String,
    /// The address as Envoy prints it: `10.0.1.5:3003`, `[fd00:10:244::5]:3003`, a unix socket
    /// path or an `envoy://` internal address.
    pub address: String,
    /// The IP of `address`; `None` for unix sockets and internal addresses.
    pub ip: Option<IpAddr>,
    /// Locality; `None` when Envoy printed it empty (static clusters, endpoints without labels).
    pub region: Option<String>,
    pub zone: Option<String>,
    pub sub_zone: Option<String>,
    /// The load-balancing priority (locality failover puts other zones at 1, 2, ...).
    pub priority: u32,
    /// True when Envoy reports no health flag at all (`health_flags::healthy`).
    pub healthy: bool,
    /// Envoy's flags verbatim: `healthy` or e.g. `/failed_active_hc/failed_outlier_check`.
    pub health_flags: String,
    /// Counters since the sidecar started.
    pub rq_total: u64,
    pub rq_success: u64,
    pub rq_error: u64,
}

impl Endpoint {
    fn new(cluster: &str, address: &str) -> Self {
        Endpoint {
            cluster: cluster.to_string(),
            address: address.to_string(),
            ip: ip_of(address),
            region: None,
            zone: None,
            sub_zone: None,
            priority: 0,
            // Until its `health_flags` line says otherwise; Envoy prints one for every host.
            healthy: true,
            health_flags: "healthy".into(),
            rq_total: 0,
            rq_success: 0,
            rq_error: 0,
        }
    }
}

/// A line of the dump that is not in Envoy's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the Envoy /clusters output: {reason}: `{text}`")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    /// The offending line (cut to 200 characters).
    pub text: String,
    pub reason: String,
}

/// Per-host stats Envoy prints; a line naming one of them after something that is not an
/// address has a corrupt address rather than being a cluster-level fact.
const HOST_STATS: &[&str] = &[
    "cx_active",
    "cx_connect_fail",
    "cx_total",
    "rq_active",
    "rq_error",
    "rq_success",
    "rq_timeout",
    "rq_total",
    "hostname",
    "health_flags",
    "weight",
    "region",
    "zone",
    "sub_zone",
    "canary",
    "priority",
    "success_rate",
    "local_origin_success_rate",
];

/// Every upstream host in an Envoy `/clusters` text dump, sorted by (cluster, address).
///
/// A line is per-host when its second field is an address; every other line is a cluster-level
/// fact (`observability_name`, `outlier::...`, `default_priority::...`, `added_via_api`, ...)
/// and skipped, including ones this parser has never seen: Envoy adds them across versions
/// (`observability_name` and `eds_service_name` came late). Unknown per-host stats are ignored.
/// Empty input gives an empty list.
///
/// # Errors
/// A line without `::`, with fewer than three fields, a per-host line without a value, a
/// known stat after something that is not an address, or a non-numeric `rq_total`,
/// `rq_success`, `rq_error` or `priority`.
pub fn parse_clusters(text: &str) -> Result<Vec<Endpoint>, ParseError> {
    let mut hosts: BTreeMap<(String, String), Endpoint> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: &str| ParseError {
            line: i + 1,
            text: line.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        let (cluster, rest) = split_field(line).ok_or_else(|| err("no `::` separator"))?;
        let (second, rest) =
            split_field(rest).ok_or_else(|| err("expected at least `name::key::value`"))?;
        // The stat name never holds `::`; the value may (a hostname could be an IPv6 literal).
        let (stat, value) = match rest.split_once("::") {
            Some((stat, value)) => (stat, Some(value)),
            None => (rest, None),
        };
        if !looks_like_address(second) {
            if HOST_STATS.contains(&stat) {
                return Err(err(&format!("`{second}` is not an address")));
            }
            continue;
        }
        let value = value.ok_or_else(|| err("per-host line without a value"))?;
        let host = hosts
            .entry((cluster.to_string(), second.to_string()))
            .or_insert_with(|| Endpoint::new(cluster, second));
        let number = |what: &str| -> Result<u64, ParseError> {
            value
                .parse::<u64>()
                .map_err(|_| err(&format!("{what} `{value}` is not a whole number")))
        };
        match stat {
            "rq_total" => host.rq_total = number(stat)?,
            "rq_success" => host.rq_success = number(stat)?,
            "rq_error" => host.rq_error = number(stat)?,
            "priority" => {
                host.priority = u32::try_from(number(stat)?)
                    .map_err(|_| err(&format!("priority `{value}` is out of range")))?
            }
            "health_flags" => {
                host.healthy = value == "healthy";
                host.health_flags = value.to_string();
            }
            "region" => host.region = non_empty(value),
            "zone" => host.zone = non_empty(value),
            "sub_zone" => host.sub_zone = non_empty(value),
            _ => {}
        }
    }
    Ok(hosts.into_values().collect())
}

/// `endpoints` in Envoy's `/clusters` text format, one line per fact [`parse_clusters`] reads,
/// so that `parse_clusters(&write_clusters(e)) == e` (`meshstack demo --save-dumps` writes
/// each phase's counters this way, for `--clusters-dump` and `demo --before-dump` to read).
pub fn write_clusters(endpoints: &[Endpoint]) -> String {
    let mut out = String::new();
    for e in endpoints {
        let host = format!("{}::{}", e.cluster, e.address);
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        for (stat, value) in [
            ("rq_error", e.rq_error.to_string()),
            ("rq_success", e.rq_success.to_string()),
            ("rq_total", e.rq_total.to_string()),
            ("health_flags", e.health_flags.clone()),
            ("region", text(&e.region)),
            ("zone", text(&e.zone)),
            ("sub_zone", text(&e.sub_zone)),
            ("priority", e.priority.to_string()),
        ] {
            out.push_str(&format!("{host}::{stat}::{value}\n"));
        }
    }
    out
}

/// The service host of an Istio outbound cluster, any subset:
/// `outbound|3003|v1|orders-service.ecommerce.svc.cluster.local` ->
/// `orders-service.ecommerce.svc.cluster.local`. `None` for inbound, passthrough and static
/// clusters.
pub fn outbound_host(cluster: &str) -> Option<&str> {
    let mut parts = cluster.split('|');
    let (Some("outbound"), Some(_port), Some(_subset), Some(host), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    (!host.is_empty()).then_some(host)
}

/// Splits `field::rest` at the first `::` outside square brackets.
fn split_field(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match bytes[i] {
            b'[' => depth += 1,
            b']' => depth = depth.saturating_sub(1),
            b':' if depth == 0 && bytes[i + 1] == b':' => return Some((&s[..i], &s[i + 2..])),
            _ => {}
        }
        i += 1;
    }
    None
}

/// What `Address::asString` prints: `ip:port`, `[ipv6]:port`, a pipe path (`/x`, `./x`,
/// abstract `@x`) or an internal listener (`envoy://name/id`).
fn looks_like_address(s: &str) -> bool {
    s.parse::<SocketAddr>().is_ok()
        || s.starts_with('[')
        || s.starts_with('/')
        || s.starts_with("./")
        || s.starts_with('@')
        || s.starts_with("envoy://")
}

fn ip_of(address: &str) -> Option<IpAddr> {
    if let Ok(sa) = address.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    // A scoped IPv6 address (`[fe80::1%eth0]:80`) does not parse as a SocketAddr; its IP is
    // still the part before `%`.
    let inner = address.strip_prefix('[')?.split(']').next()?;
    inner.split('%').next()?.parse().ok()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_clusters_read_back_the_same() {
        let text = "outbound|3003||orders.ns.svc.cluster.local::10.0.0.1:3003::rq_total::7\n\
            outbound|3003||orders.ns.svc.cluster.local::10.0.0.1:3003::rq_success::6\n\
            outbound|3003||orders.ns.svc.cluster.local::10.0.0.1:3003::rq_error::1\n\
            outbound|3003||orders.ns.svc.cluster.local::10.0.0.1:3003::zone::us-east-1a\n\
            outbound|3003||orders.ns.svc.cluster.local::10.0.0.1:3003::region::us-east-1\n\
            outbound|3003||orders.ns.svc.cluster.local::10.0.0.1:3003::priority::1\n\
            outbound|3004||p.ns.svc.cluster.local::[fd00:10:244::5]:3004::health_flags::/failed_outlier_check\n\
            outbound|3004||p.ns.svc.cluster.local::[fd00:10:244::5]:3004::rq_total::3\n";
        let endpoints = parse_clusters(text).unwrap();
        assert_eq!(endpoints.len(), 2);
        let again = parse_clusters(&write_clusters(&endpoints)).unwrap();
        assert_eq!(again, endpoints);
        assert_eq!(again[0].priority, 1);
        assert!(!again[1].healthy);
    }

    const FAILOVER_1A: &str =
        include_str!("../../tests/fixtures/locality/clusters-graphql-1a-failover.txt");
    const SEED_1B: &str =
        include_str!("../../tests/fixtures/locality/clusters-graphql-1b-seed.txt");
    const IPV6: &str = include_str!("../../tests/fixtures/locality/clusters-ipv6.txt");

    const ORDERS: &str = "orders-service.ecommerce.svc.cluster.local";
    const ORDERS_CLUSTER: &str = "outbound|3003||orders-service.ecommerce.svc.cluster.local";

    fn find<'a>(eps: &'a [Endpoint], cluster: &str, address: &str) -> &'a Endpoint {
        eps.iter()
            .find(|e| e.cluster == cluster && e.address == address)
            .unwrap_or_else(|| panic!("no {cluster} {address}"))
    }

    #[test]
    fn failover_dump_gives_every_host_with_locality_priority_and_counters() {
        let eps = parse_clusters(FAILOVER_1A).unwrap();
        let orders: Vec<_> = eps.iter().filter(|e| e.cluster == ORDERS_CLUSTER).collect();
        assert_eq!(orders.len(), 6);
        let by_priority = |p| orders.iter().filter(|e| e.priority == p).count();
        assert_eq!((by_priority(0), by_priority(1)), (2, 4));

        let local = find(&eps, ORDERS_CLUSTER, "10.0.1.37:3003");
        assert_eq!(local.ip, Some("10.0.1.37".parse().unwrap()));
        assert_eq!(local.region.as_deref(), Some("af-south-1"));
        assert_eq!(local.zone.as_deref(), Some("af-south-1a"));
        assert_eq!(local.sub_zone, None);
        assert_eq!(
            (local.rq_total, local.rq_success, local.rq_error),
            (398, 396, 2)
        );
        assert!(local.healthy);

        let ejected = find(&eps, ORDERS_CLUSTER, "10.0.2.33:3003");
        assert!(!ejected.healthy);
        assert_eq!(ejected.health_flags, "/failed_outlier_check");
        assert_eq!((ejected.priority, ejected.rq_error), (1, 1));

        // The subset cluster holds its own host entries and counters.
        let subset = find(
            &eps,
            "outbound|3003|v1|orders-service.ecommerce.svc.cluster.local",
            "10.0.1.21:3003",
        );
        assert_eq!(subset.rq_total, 5);

        // Static clusters: unix sockets parse, with no IP and no locality.
        let xds = find(&eps, "xds-grpc", "./etc/istio/proxy/XDS");
        assert_eq!((xds.ip, xds.zone.as_deref()), (None, None));
        assert!(find(&eps, "PassthroughCluster", "52.95.165.12:443")
            .ip
            .is_some());
        // Clusters without hosts contribute nothing.
        assert!(eps
            .iter()
            .all(|e| e.cluster != "BlackHoleCluster" && !e.cluster.starts_with("inbound|")));
        assert_eq!(eps.len(), 23);
    }

    #[test]
    fn output_is_sorted_whatever_order_envoy_printed() {
        for text in [FAILOVER_1A, SEED_1B, IPV6] {
            let eps = parse_clusters(text).unwrap();
            let keys: Vec<_> = eps.iter().map(|e| (&e.cluster, &e.address)).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(keys, sorted);
        }
        // Reversing the lines changes nothing.
        let reversed: Vec<&str> = SEED_1B.lines().rev().collect();
        assert_eq!(
            parse_clusters(&reversed.join("\n")).unwrap(),
            parse_clusters(SEED_1B).unwrap()
        );
    }

    #[test]
    fn ipv6_internal_and_unix_addresses() {
        let eps = parse_clusters(IPV6).unwrap();
        let v6 = find(&eps, ORDERS_CLUSTER, "[2406:da1c:f3:c04::18]:3003");
        assert_eq!(v6.ip, Some("2406:da1c:f3:c04::18".parse().unwrap()));
        assert_eq!((v6.rq_total, v6.rq_error), (250, 4));
        assert_eq!(v6.zone.as_deref(), Some("af-south-1c"));

        let prios: Vec<u32> = eps
            .iter()
            .filter(|e| e.cluster == ORDERS_CLUSTER)
            .map(|e| e.priority)
            .collect();
        assert_eq!(prios, [2, 2, 1, 0, 0]);

        let both = find(&eps, ORDERS_CLUSTER, "[2406:da1c:f3:c02::37]:3003");
        assert_eq!(both.health_flags, "/failed_active_hc/failed_outlier_check");
        assert!(!both.healthy);

        let products = "outbound|3004||products-service.ecommerce.svc.cluster.local";
        let internal = find(
            &eps,
            products,
            "envoy://connect_originate/[fd00:10:244::9]:3004",
        );
        assert_eq!((internal.ip, internal.rq_total), (None, 30));
        assert_eq!(internal.health_flags, "/degraded_eds_health");
        assert_eq!(
            find(&eps, products, "[fd00:10:244::5]:3004").ip,
            Some("fd00:10:244::5".parse().unwrap())
        );
        assert_eq!(
            find(
                &eps,
                "sds-grpc",
                "@/var/run/secrets/workload-spiffe-uds/socket"
            )
            .ip,
            None
        );
    }

    #[test]
    fn empty_and_cluster_level_only_input() {
        assert_eq!(parse_clusters("").unwrap(), []);
        assert_eq!(parse_clusters("\n\n").unwrap(), []);
        let heads = "BlackHoleCluster::observability_name::BlackHoleCluster\n\
                     BlackHoleCluster::default_priority::max_connections::1024\n\
                     BlackHoleCluster::added_via_api::true\n\
                     BlackHoleCluster::some_future_fact::42\n\
                     BlackHoleCluster::future_group::key::42\n";
        assert_eq!(parse_clusters(heads).unwrap(), []);
    }

    #[test]
    fn malformed_lines_name_their_number() {
        let good = "c::10.0.0.1:80::rq_total::1\n";
        for (bad, reason) in [
            ("no separator here", "no `::`"),
            ("c::only-two", "at least"),
            ("c::10.0.0.1:80::rq_total", "without a value"),
            ("c::10.0.0.1:80::rq_total::12x", "rq_total `12x`"),
            ("c::10.0.0.1:80::rq_success::-1", "rq_success"),
            ("c::10.0.0.1:80::rq_error::", "rq_error"),
            ("c::10.0.0.1:80::priority::one", "priority `one`"),
            ("c::10.0.0.1:80::priority::4294967296", "out of range"),
            ("c::10.0.0.1::rq_total::3", "not an address"),
        ] {
            let e = parse_clusters(&format!("{good}{bad}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{bad}");
            assert_eq!(e.text, bad);
            assert!(e.to_string().contains(reason), "{bad}: {e}");
            assert!(e.to_string().starts_with("line 2 "), "{e}");
        }
    }

    #[test]
    fn unknown_stats_are_ignored_and_values_may_hold_separators() {
        let text = "c::10.0.0.1:80::rq_new_thing::abc\n\
                    c::10.0.0.1:80::hostname::fd00::1\n\
                    c::10.0.0.1:80::rq_total::9\r\n";
        let eps = parse_clusters(text).unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].rq_total, 9);
        assert!(
            eps[0].healthy,
            "no health_flags line: nothing says otherwise"
        );
    }

    #[test]
    fn outbound_hosts() {
        for (cluster, host) in [
            (ORDERS_CLUSTER, Some(ORDERS)),
            (
                "outbound|3003|v1|orders-service.ecommerce.svc.cluster.local",
                Some(ORDERS),
            ),
            ("outbound|3003|||", None),
            ("outbound|3003||", None),
            ("inbound|3002||", None),
            ("PassthroughCluster", None),
            (
                "outbound_.3003_._.orders-service.ecommerce.svc.cluster.local",
                None,
            ),
            ("outbound|3003||a|b", None),
        ] {
            assert_eq!(outbound_host(cluster), host, "{cluster}");
        }
    }

    #[test]
    fn field_splitting_respects_brackets() {
        for (input, want) in [
            ("a::b", Some(("a", "b"))),
            (
                "[fd00::1]:80::rq_total::1",
                Some(("[fd00::1]:80", "rq_total::1")),
            ),
            (
                "envoy://x/[fd00::1]:80::zone::z",
                Some(("envoy://x/[fd00::1]:80", "zone::z")),
            ),
            ("a:b", None),
            ("[::", None),
            ("", None),
        ] {
            assert_eq!(split_field(input), want, "{input}");
        }
        assert_eq!(ip_of("[fe80::1%eth0]:80"), Some("fe80::1".parse().unwrap()));
    }
}
