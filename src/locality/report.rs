//! What the sidecars' counters say about the pattern: per caller zone, where orders and
//! products requests went (also as a caller zone × destination zone [`matrix`]), the orders
//! in-zone share, the products on-node share (and per caller node), what the cross-zone part
//! costs, and whether the stack's thresholds are met — including how many of the requests
//! `verify` sent the app answered with an error ([`RequestCheck`]).
//!
//! Everything here is arithmetic on plain values, so `meshstack verify` can feed it live
//! counters (a [`delta`] of two reads around the traffic it sent) or saved dumps, and the
//! numbers can be table-tested without a cluster.
//!
//! Conservative by design: a request to an endpoint whose zone or node is unknown counts as
//! leaving the caller's zone or node, and a share that cannot be measured is reported as such,
//! never as 0 or 100.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use super::envoy::{outbound_host, Endpoint};

/// Request plus response bytes assumed when none were measured: headers and a small JSON body
/// each way.
pub const DEFAULT_BYTES_PER_REQUEST: u64 = 2048;

/// AWS inter-AZ data transfer inside a region, charged once on each side (the price table's
/// [`crate::prices::INTER_AZ`], which names its source and date).
pub const DOLLARS_PER_GB_EACH_WAY: f64 = crate::prices::INTER_AZ.dollars_per_gb_each_way;

/// The bucket for endpoints (or callers) without a zone.
pub const UNKNOWN_ZONE: &str = "unknown";

/// One caller sidecar's `/clusters` counters and where the caller runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerDump {
    /// Pod name (or the dump's file name offline).
    pub pod: String,
    /// The caller's zone; empty means unknown.
    pub zone: String,
    /// The caller's node; `None` offline.
    pub node: Option<String>,
    pub endpoints: Vec<Endpoint>,
}

/// What [`analyze`] needs; the caller gathers it from the cluster or from saved dumps.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub callers: &'a [CallerDump],
    /// e.g. `orders-service.ecommerce.svc.cluster.local`; every subset cluster of it counts.
    pub orders_host: &'a str,
    pub products_host: &'a str,
    /// Endpoint IP -> node name; `None` offline (then on-node shares are not measured).
    pub node_of_ip: Option<&'a BTreeMap<IpAddr, String>>,
    /// Zones the app runs in, the baseline for "without locality"; when empty, the zones seen
    /// in the counters are used.
    pub zones: &'a [String],
    /// Measured request + response bytes; `None` -> [`DEFAULT_BYTES_PER_REQUEST`], and the
    /// report says it was assumed.
    pub bytes_per_request: Option<u64>,
    /// How the requests `verify` sent were answered; `None` when it sent none (a plain read
    /// of the counters, or saved dumps).
    pub requests: Option<&'a RequestCheck>,
    pub thresholds: Thresholds,
}

/// Minimum shares and the tolerated failures, in percent (0..=100).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Thresholds {
    pub orders_in_zone_min: f64,
    pub products_on_node_min: f64,
    /// Most requests that may fail, in percent of those sent.
    pub failed_requests_max: f64,
}

/// At most this many distinct error messages are kept (the most frequent).
pub const MAX_ERRORS: usize = 3;

/// How the requests `verify` sent were answered, as far as the verdict is concerned: a
/// request failed when it got no answer, an error status, or (graphql) an answer with
/// `errors` or missing data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCheck {
    pub sent: u64,
    pub failed: u64,
    /// The most frequent error messages first, at most [`MAX_ERRORS`].
    pub errors: Vec<ErrorCount>,
    /// What recognised errors mean and how to fix them.
    pub hints: Vec<String>,
}

/// One error message and how many requests failed with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorCount {
    pub message: String,
    pub count: u64,
}

impl RequestCheck {
    /// Counts one failure with `message`; keeps every distinct message until [`Self::finish`].
    pub fn fail(&mut self, message: &str) {
        self.failed += 1;
        match self.errors.iter_mut().find(|e| e.message == message) {
            Some(e) => e.count += 1,
            None => self.errors.push(ErrorCount {
                message: message.to_string(),
                count: 1,
            }),
        }
    }

    /// Adds `other`'s counts and messages to this one.
    pub fn merge(&mut self, other: &RequestCheck) {
        self.sent += other.sent;
        self.failed += other.failed;
        for e in &other.errors {
            match self.errors.iter_mut().find(|m| m.message == e.message) {
                Some(m) => m.count += e.count,
                None => self.errors.push(e.clone()),
            }
        }
        for h in &other.hints {
            if !self.hints.contains(h) {
                self.hints.push(h.clone());
            }
        }
    }

    /// Keeps the [`MAX_ERRORS`] most frequent messages (ties by first seen).
    pub fn finish(&mut self) {
        self.errors.sort_by_key(|e| std::cmp::Reverse(e.count));
        self.errors.truncate(MAX_ERRORS);
    }
}

/// The whole report; field names are stable (`meshstack verify -o json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// One entry per caller zone, sorted by zone.
    pub zones: Vec<ZoneTraffic>,
    /// All caller zones together.
    pub totals: Traffic,
    /// Per caller node, sorted by node; empty without an endpoint-to-node map.
    pub nodes: Vec<NodeTraffic>,
    pub cost: Cost,
    pub thresholds: Thresholds,
    pub verdict: Verdict,
}

/// The products calls of the callers on one node: what the picture shows per node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeTraffic {
    pub node: String,
    /// The callers' zone ([`UNKNOWN_ZONE`] when unknown).
    pub zone: String,
    /// Caller pods on the node, sorted.
    pub callers: Vec<String>,
    pub products_total: u64,
    /// Answered by a products pod on this node.
    pub products_on_node: u64,
    /// Answered elsewhere, or by an endpoint whose node is unknown.
    pub products_off_node: u64,
}

/// The traffic of the callers in one zone.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ZoneTraffic {
    /// The callers' zone ([`UNKNOWN_ZONE`] when a dump did not say).
    pub zone: String,
    /// Caller pods, sorted.
    pub callers: Vec<String>,
    #[serde(flatten)]
    pub traffic: Traffic,
}

/// Request counts and shares for a set of callers.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Traffic {
    /// Orders requests per destination zone ([`UNKNOWN_ZONE`] for endpoints without one).
    pub orders: BTreeMap<String, u64>,
    pub orders_total: u64,
    /// Orders requests that stayed in the caller's zone.
    pub orders_in_zone: u64,
    /// `None` when no orders request was counted.
    pub orders_in_zone_pct: Option<f64>,
    /// Products requests per destination zone.
    pub products: BTreeMap<String, u64>,
    pub products_total: u64,
    pub products_in_zone: u64,
    /// Products requests to an endpoint on the caller's own node; `None` when not measured
    /// (no endpoint-to-node map, or a caller with products traffic has no known node).
    pub products_on_node: Option<u64>,
    /// `None` when not measured or no products request was counted.
    pub products_on_node_pct: Option<f64>,
    /// Products requests to endpoints whose node is unknown (counted as off-node).
    pub products_node_unknown: u64,
}

/// Cross-AZ transfer cost per million requests, orders and products together.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cost {
    pub bytes_per_request: u64,
    /// True when [`DEFAULT_BYTES_PER_REQUEST`] was used because nothing was measured.
    pub bytes_per_request_assumed: bool,
    pub dollars_per_gb_each_way: f64,
    /// Orders plus products requests counted.
    pub requests: u64,
    /// Of those, the ones that left the caller's zone (or went to an endpoint without a zone).
    pub cross_zone_requests: u64,
    /// `None` when no request was counted.
    pub cross_zone_pct: Option<f64>,
    /// Zones of the "without locality" baseline.
    pub zones_in_use: usize,
    /// `(n-1)/n` for `n` zones: requests spread evenly over the zones.
    pub without_locality_cross_zone_pct: f64,
    /// `None` when no request was counted.
    pub measured_per_million: Option<f64>,
    pub without_locality_per_million: f64,
    /// Without locality minus measured; negative when the measured pattern is worse.
    pub saving_per_million: Option<f64>,
}

/// Whether the thresholds are met.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub pass: bool,
    /// One line per unmet threshold, naming the zone, the measured share and the threshold.
    pub failures: Vec<String>,
    /// Checks that could not be made (not failures).
    pub not_checked: Vec<String>,
    /// What recognised errors in the answers mean, and how to fix them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

/// Counters accumulated between two reads, by (cluster, address), sorted.
///
/// An endpoint whose counters went down restarted (its sidecar or the endpoint came back), so
/// its `after` counters are all that happened since. Endpoints gone by `after` are dropped;
/// new ones count in full. Locality and health come from `after`.
pub fn delta(before: &[Endpoint], after: &[Endpoint]) -> Vec<Endpoint> {
    let earlier: BTreeMap<(&str, &str), &Endpoint> = before
        .iter()
        .map(|e| ((e.cluster.as_str(), e.address.as_str()), e))
        .collect();
    let mut out: Vec<Endpoint> = after
        .iter()
        .map(|a| {
            let mut d = a.clone();
            if let Some(b) = earlier.get(&(a.cluster.as_str(), a.address.as_str())) {
                let reset = a.rq_total < b.rq_total
                    || a.rq_success < b.rq_success
                    || a.rq_error < b.rq_error;
                if !reset {
                    d.rq_total = a.rq_total - b.rq_total;
                    d.rq_success = a.rq_success - b.rq_success;
                    d.rq_error = a.rq_error - b.rq_error;
                }
            }
            d
        })
        .collect();
    out.sort_by(|x, y| (&x.cluster, &x.address).cmp(&(&y.cluster, &y.address)));
    out
}

/// Per-zone counts, shares, cost and verdict from the callers' counters.
pub fn analyze(inputs: &Inputs) -> Report {
    let mut by_zone: BTreeMap<String, (BTreeSet<String>, Traffic)> = BTreeMap::new();
    for caller in inputs.callers {
        let zone = if caller.zone.is_empty() {
            UNKNOWN_ZONE.to_string()
        } else {
            caller.zone.clone()
        };
        let (pods, traffic) = by_zone.entry(zone.clone()).or_insert_with(|| {
            let traffic = Traffic {
                // Measured until a caller with products traffic turns out not to be.
                products_on_node: inputs.node_of_ip.map(|_| 0),
                ..Traffic::default()
            };
            (BTreeSet::new(), traffic)
        });
        pods.insert(caller.pod.clone());
        add_caller(traffic, caller, &zone, inputs);
    }

    let zones: Vec<ZoneTraffic> = by_zone
        .into_iter()
        .map(|(zone, (pods, mut traffic))| {
            fill_shares(&mut traffic);
            ZoneTraffic {
                zone,
                callers: pods.into_iter().collect(),
                traffic,
            }
        })
        .collect();

    let mut totals = Traffic {
        products_on_node: inputs.node_of_ip.map(|_| 0),
        ..Traffic::default()
    };
    for z in &zones {
        let t = &z.traffic;
        merge_counts(&mut totals.orders, &t.orders);
        merge_counts(&mut totals.products, &t.products);
        totals.orders_total += t.orders_total;
        totals.orders_in_zone += t.orders_in_zone;
        totals.products_total += t.products_total;
        totals.products_in_zone += t.products_in_zone;
        totals.products_node_unknown += t.products_node_unknown;
        totals.products_on_node = match (totals.products_on_node, t.products_on_node) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    fill_shares(&mut totals);

    let cost = cost(inputs, &zones, &totals);
    let verdict = verdict(
        &zones,
        &totals,
        &inputs.thresholds,
        inputs.node_of_ip.is_some(),
        inputs.requests,
    );
    Report {
        zones,
        totals,
        nodes: node_traffic(inputs),
        cost,
        thresholds: inputs.thresholds,
        verdict,
    }
}

/// Products calls per caller node; needs the endpoint-to-node map and the callers' nodes.
fn node_traffic(inputs: &Inputs) -> Vec<NodeTraffic> {
    let Some(map) = inputs.node_of_ip else {
        return Vec::new();
    };
    let mut nodes: BTreeMap<&str, NodeTraffic> = BTreeMap::new();
    for caller in inputs.callers {
        let Some(node) = caller.node.as_deref() else {
            continue;
        };
        let entry = nodes.entry(node).or_insert_with(|| NodeTraffic {
            node: node.to_string(),
            zone: if caller.zone.is_empty() {
                UNKNOWN_ZONE.to_string()
            } else {
                caller.zone.clone()
            },
            callers: Vec::new(),
            products_total: 0,
            products_on_node: 0,
            products_off_node: 0,
        });
        entry.callers.push(caller.pod.clone());
        for ep in caller.endpoints.iter().filter(|e| e.rq_total > 0) {
            if outbound_host(&ep.cluster) != Some(inputs.products_host) {
                continue;
            }
            entry.products_total += ep.rq_total;
            match ep.ip.and_then(|ip| map.get(&ip)) {
                Some(n) if n == node => entry.products_on_node += ep.rq_total,
                _ => entry.products_off_node += ep.rq_total,
            }
        }
    }
    nodes
        .into_values()
        .map(|mut n| {
            n.callers.sort();
            n
        })
        .collect()
}

fn add_caller(t: &mut Traffic, caller: &CallerDump, caller_zone: &str, inputs: &Inputs) {
    let mut products = 0u64;
    let mut on_node = 0u64;
    for ep in caller.endpoints.iter().filter(|e| e.rq_total > 0) {
        let Some(host) = outbound_host(&ep.cluster) else {
            continue;
        };
        let dest = ep.zone.as_deref().unwrap_or(UNKNOWN_ZONE);
        // An unknown zone never matches, not even an unknown caller zone.
        let in_zone = ep.zone.as_deref() == Some(caller_zone);
        if host == inputs.orders_host {
            *t.orders.entry(dest.to_string()).or_default() += ep.rq_total;
            t.orders_total += ep.rq_total;
            if in_zone {
                t.orders_in_zone += ep.rq_total;
            }
        } else if host == inputs.products_host {
            *t.products.entry(dest.to_string()).or_default() += ep.rq_total;
            t.products_total += ep.rq_total;
            products += ep.rq_total;
            if in_zone {
                t.products_in_zone += ep.rq_total;
            }
            if let Some(map) = inputs.node_of_ip {
                match ep.ip.and_then(|ip| map.get(&ip)) {
                    Some(node) if Some(node) == caller.node.as_ref() => on_node += ep.rq_total,
                    Some(_) => {}
                    None => t.products_node_unknown += ep.rq_total,
                }
            }
        }
    }
    t.products_on_node = match t.products_on_node {
        Some(n) if caller.node.is_some() => Some(n + on_node),
        Some(n) if products == 0 => Some(n),
        _ => None,
    };
}

fn merge_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (zone, n) in from {
        *into.entry(zone.clone()).or_default() += n;
    }
}

fn fill_shares(t: &mut Traffic) {
    t.orders_in_zone_pct = pct(t.orders_in_zone, t.orders_total);
    t.products_on_node_pct = t.products_on_node.and_then(|n| pct(n, t.products_total));
}

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// Dollars per million requests when `cross_share` (0..=1) of them cross zones.
fn per_million(cross_share: f64, bytes: u64) -> f64 {
    const GB: f64 = 1e9;
    cross_share * bytes as f64 * 2.0 * DOLLARS_PER_GB_EACH_WAY / GB * 1e6
}

fn cost(inputs: &Inputs, zones: &[ZoneTraffic], totals: &Traffic) -> Cost {
    let bytes = inputs
        .bytes_per_request
        .unwrap_or(DEFAULT_BYTES_PER_REQUEST);
    let requests = totals.orders_total + totals.products_total;
    let cross = requests - totals.orders_in_zone - totals.products_in_zone;
    let mut in_use: BTreeSet<&str> = inputs.zones.iter().map(String::as_str).collect();
    if in_use.is_empty() {
        for z in zones {
            in_use.insert(&z.zone);
            in_use.extend(z.traffic.orders.keys().map(String::as_str));
            in_use.extend(z.traffic.products.keys().map(String::as_str));
        }
        in_use.remove(UNKNOWN_ZONE);
    }
    let n = in_use.len();
    let baseline = if n == 0 {
        0.0
    } else {
        (n - 1) as f64 / n as f64
    };
    let measured = (requests > 0).then(|| per_million(cross as f64 / requests as f64, bytes));
    let without = per_million(baseline, bytes);
    Cost {
        bytes_per_request: bytes,
        bytes_per_request_assumed: inputs.bytes_per_request.is_none(),
        dollars_per_gb_each_way: DOLLARS_PER_GB_EACH_WAY,
        requests,
        cross_zone_requests: cross,
        cross_zone_pct: pct(cross, requests),
        zones_in_use: n,
        without_locality_cross_zone_pct: baseline * 100.0,
        measured_per_million: measured,
        without_locality_per_million: without,
        saving_per_million: measured.map(|m| without - m),
    }
}

fn verdict(
    zones: &[ZoneTraffic],
    totals: &Traffic,
    th: &Thresholds,
    node_map: bool,
    requests: Option<&RequestCheck>,
) -> Verdict {
    let mut failures = Vec::new();
    let mut not_checked = Vec::new();
    let mut hints = Vec::new();
    if let Some(r) = requests.filter(|r| r.sent > 0) {
        // Compared exactly (failed * 100 > max * sent), so 1 of 1000 fails a 0.05% maximum.
        if r.failed as f64 * 100.0 > th.failed_requests_max * r.sent as f64 {
            let errors: Vec<String> = r
                .errors
                .iter()
                .map(|e| format!("`{}` ({}x)", e.message, e.count))
                .collect();
            failures.push(format!(
                "{} of {} requests failed ({}), above the tolerated {}%{}",
                r.failed,
                r.sent,
                share_text_up(r.failed, r.sent),
                th.failed_requests_max,
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(": {}", errors.join("; "))
                }
            ));
        }
        hints.extend(r.hints.iter().cloned());
    }
    if totals.orders_total == 0 {
        failures.push("no traffic measured; send some with --requests N".to_string());
    }
    for z in zones {
        let t = &z.traffic;
        match t.orders_in_zone_pct {
            Some(p) if p < th.orders_in_zone_min => failures.push(format!(
                "{}: orders in zone {} ({} of {}), below the minimum of {}%",
                z.zone,
                share_text(t.orders_in_zone, t.orders_total),
                t.orders_in_zone,
                t.orders_total,
                th.orders_in_zone_min
            )),
            Some(_) => {}
            // The zone-less case is already the failure above.
            None if totals.orders_total > 0 => not_checked.push(format!(
                "{}: orders in zone (no orders requests from this zone)",
                z.zone
            )),
            None => {}
        }
        match (t.products_on_node, t.products_on_node_pct) {
            // Said once below for all zones.
            (None, _) if !node_map => {}
            (None, _) => not_checked.push(format!(
                "{}: products on node (not measured: a caller's node is unknown)",
                z.zone
            )),
            (Some(_), None) => not_checked.push(format!(
                "{}: products on node (no products requests from this zone)",
                z.zone
            )),
            (Some(n), Some(p)) if p < th.products_on_node_min => failures.push(format!(
                "{}: products on node {} ({} of {}), below the minimum of {}%",
                z.zone,
                share_text(n, t.products_total),
                n,
                t.products_total,
                th.products_on_node_min
            )),
            (Some(_), Some(_)) => {}
        }
    }
    if !node_map && !zones.is_empty() {
        not_checked
            .push("products on node (not measured: no endpoint-to-node information)".to_string());
    }
    Verdict {
        pass: failures.is_empty(),
        failures,
        not_checked,
        hints,
    }
}

/// `part/whole` as a percentage with one decimal, rounded *down*, so that a printed `100.0%`
/// means every request and a share just under a threshold never prints as meeting it.
pub fn share_text(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    let permille = u128::from(part) * 1000 / u128::from(whole);
    format!("{}.{}%", permille / 10, permille % 10)
}

/// `part/whole` as a percentage with one decimal, rounded *up*: a failure share never prints
/// as smaller than it is (1 of 3000 is 0.1%, not 0.0%).
fn share_text_up(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    let (p, w) = (u128::from(part), u128::from(whole));
    let permille = (p * 1000).div_ceil(w);
    format!("{}.{}%", permille / 10, permille % 10)
}

/// Dollars with four decimals, the sign before the `$`.
pub fn dollars(v: f64) -> String {
    if v < 0.0 {
        format!("-${:.4}", -v)
    } else {
        format!("${v:.4}")
    }
}

/// Column alignment for [`table`].
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Rows padded to the widest cell of each column, two spaces apart, indented.
fn table(out: &mut String, indent: &str, aligns: &[Align], rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = indent.to_string();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = widths[c].saturating_sub(cell.chars().count());
            match aligns.get(c).copied().unwrap_or(Align::Left) {
                Align::Left => {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// `with_min`: show the thresholds (they apply per caller zone, not to the totals).
fn render_traffic(out: &mut String, t: &Traffic, th: &Thresholds, with_min: bool) {
    let dests: BTreeSet<&String> = t.orders.keys().chain(t.products.keys()).collect();
    let mut rows = vec![vec![
        "to zone".to_string(),
        "orders".into(),
        "products".into(),
    ]];
    for d in dests {
        rows.push(vec![
            d.clone(),
            t.orders.get(d).copied().unwrap_or(0).to_string(),
            t.products.get(d).copied().unwrap_or(0).to_string(),
        ]);
    }
    rows.push(vec![
        "total".into(),
        t.orders_total.to_string(),
        t.products_total.to_string(),
    ]);
    table(out, "  ", &[Align::Left, Align::Right, Align::Right], &rows);

    let mut shares = vec![vec![
        "orders in zone".to_string(),
        share_text(t.orders_in_zone, t.orders_total),
        format!("({} of {})", t.orders_in_zone, t.orders_total),
        format!("min {}%", th.orders_in_zone_min),
    ]];
    shares.push(match t.products_on_node {
        Some(n) => vec![
            "products on node".into(),
            share_text(n, t.products_total),
            format!("({n} of {})", t.products_total),
            format!("min {}%", th.products_on_node_min),
        ],
        None => vec!["products on node".into(), "-".into(), "not measured".into()],
    });
    if !with_min {
        for row in &mut shares {
            row.truncate(3);
        }
    }
    table(
        out,
        "  ",
        &[Align::Left, Align::Right, Align::Left, Align::Left],
        &shares,
    );
    if t.products_node_unknown > 0 {
        let _ = writeln!(
            out,
            "  ({} products requests went to endpoints on an unknown node; counted as off-node)",
            t.products_node_unknown
        );
    }
}

/// Which calls a [`Matrix`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Orders,
    Products,
}

/// Caller zone × destination zone: where the calls of each caller zone went.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Destination zones: every caller zone and every zone called, sorted, [`UNKNOWN_ZONE`]
    /// last.
    pub zones: Vec<String>,
    /// One row per caller zone, in [`Report::zones`] order.
    pub rows: Vec<MatrixRow>,
}

/// One caller zone's calls.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixRow {
    pub from: String,
    /// Requests to each of [`Matrix::zones`], in that order.
    pub counts: Vec<u64>,
    pub total: u64,
}

impl MatrixRow {
    /// The share of the row that went to destination column `i`, as [`share_text`] prints
    /// it; `-` for a row without calls.
    pub fn share(&self, i: usize) -> String {
        share_text(self.counts[i], self.total)
    }
}

/// The [`Matrix`] of `service` calls in `report`.
pub fn matrix(report: &Report, service: Service) -> Matrix {
    let of = |t: &Traffic| match service {
        Service::Orders => t.orders.clone(),
        Service::Products => t.products.clone(),
    };
    let mut zones: BTreeSet<(bool, String)> = BTreeSet::new();
    for z in &report.zones {
        zones.insert((z.zone == UNKNOWN_ZONE, z.zone.clone()));
        for dest in of(&z.traffic).into_keys() {
            zones.insert((dest == UNKNOWN_ZONE, dest));
        }
    }
    let zones: Vec<String> = zones.into_iter().map(|(_, z)| z).collect();
    let rows = report
        .zones
        .iter()
        .map(|z| {
            let counts = of(&z.traffic);
            let counts: Vec<u64> = zones
                .iter()
                .map(|d| counts.get(d).copied().unwrap_or(0))
                .collect();
            MatrixRow {
                from: z.zone.clone(),
                total: counts.iter().sum(),
                counts,
            }
        })
        .collect();
    Matrix { zones, rows }
}

const BOLD_GREEN: &str = "\x1b[1;32m";
const BOLD_RED: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

/// The matrix as a table: caller zones down, destination zones across, percentages of each
/// row, and the row's request count. With `color`, the in-zone diagonal is bold green (red
/// for orders below `orders_min`).
fn render_matrix(out: &mut String, title: &str, m: &Matrix, orders_min: Option<f64>, color: bool) {
    if m.rows.iter().all(|r| r.total == 0) {
        return;
    }
    let _ = writeln!(out, "{title}");
    let mut cells: Vec<Vec<String>> = vec![std::iter::once("from \\ to".to_string())
        .chain(m.zones.iter().cloned())
        .chain(std::iter::once("requests".to_string()))
        .collect()];
    for r in &m.rows {
        cells.push(
            std::iter::once(r.from.clone())
                .chain((0..m.zones.len()).map(|i| r.share(i)))
                .chain(std::iter::once(r.total.to_string()))
                .collect(),
        );
    }
    let cols = cells[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (ri, row) in cells.iter().enumerate() {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[c] - cell.chars().count());
            let text = if c == 0 {
                format!("{cell}{pad}")
            } else {
                format!("{pad}{cell}")
            };
            // Row ri (1-based past the header) is caller zone m.rows[ri - 1].
            let diagonal = ri > 0
                && c > 0
                && c <= m.zones.len()
                && m.zones[c - 1] == m.rows[ri - 1].from
                && m.zones[c - 1] != UNKNOWN_ZONE
                && m.rows[ri - 1].total > 0;
            if color && diagonal {
                let r = &m.rows[ri - 1];
                let below = orders_min
                    .is_some_and(|min| (r.counts[c - 1] as f64) * 100.0 < min * r.total as f64);
                let style = if below { BOLD_RED } else { BOLD_GREEN };
                line.push_str(&format!("{pad}{style}{cell}{RESET}"));
            } else {
                line.push_str(&text);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
}

/// The report as a person wants it in a terminal: where each zone's calls went (caller zone ×
/// destination zone), a table per caller zone, the totals, the cost estimate and the verdict.
/// No colour.
pub fn render_text(report: &Report) -> String {
    render_text_styled(report, false)
}

/// [`render_text`], with the matrices' in-zone diagonal highlighted when `color` (the caller
/// decides: a terminal, and `NO_COLOR` unset).
pub fn render_text_styled(report: &Report, color: bool) -> String {
    let mut out = String::new();
    if report.zones.is_empty() {
        out.push_str("no caller sidecars were read\n\n");
    }
    render_matrix(
        &mut out,
        "orders calls by zone, caller (rows) to destination (columns)",
        &matrix(report, Service::Orders),
        Some(report.thresholds.orders_in_zone_min),
        color,
    );
    render_matrix(
        &mut out,
        "products calls by zone, caller (rows) to destination (columns)",
        &matrix(report, Service::Products),
        None,
        color,
    );
    for z in &report.zones {
        let _ = writeln!(
            out,
            "from {} (callers: {})",
            z.zone,
            if z.callers.is_empty() {
                "-".to_string()
            } else {
                z.callers.join(", ")
            }
        );
        render_traffic(&mut out, &z.traffic, &report.thresholds, true);
        out.push('\n');
    }
    if report.zones.len() > 1 {
        out.push_str("all zones\n");
        render_traffic(&mut out, &report.totals, &report.thresholds, false);
        out.push('\n');
    }

    let c = &report.cost;
    let _ = writeln!(
        out,
        "cross-AZ transfer at ${}/GB each way, {} bytes per request{}",
        c.dollars_per_gb_each_way,
        c.bytes_per_request,
        if c.bytes_per_request_assumed {
            " (assumed, not measured)"
        } else {
            " (measured)"
        }
    );
    let measured = match c.measured_per_million {
        Some(m) => vec![
            "measured".to_string(),
            dollars(m),
            "per million requests".into(),
            format!(
                "({} of {} requests crossed zones)",
                share_text(c.cross_zone_requests, c.requests),
                c.requests
            ),
        ],
        None => vec!["measured".into(), "-".into(), "no requests counted".into()],
    };
    let mut rows = vec![
        measured,
        vec![
            "without locality".into(),
            dollars(c.without_locality_per_million),
            "per million requests".into(),
            format!(
                "({} if spread evenly over {} zone{})",
                share_text(
                    c.zones_in_use.saturating_sub(1) as u64,
                    c.zones_in_use as u64
                ),
                c.zones_in_use,
                if c.zones_in_use == 1 { "" } else { "s" }
            ),
        ],
    ];
    if let Some(s) = c.saving_per_million {
        rows.push(vec![
            "saving".into(),
            dollars(s),
            "per million requests".into(),
        ]);
    }
    table(
        &mut out,
        "  ",
        &[Align::Left, Align::Right, Align::Left, Align::Left],
        &rows,
    );
    out.push('\n');

    let v = &report.verdict;
    let _ = writeln!(out, "verdict: {}", if v.pass { "PASS" } else { "FAIL" });
    for f in &v.failures {
        let _ = writeln!(out, "  - {f}");
    }
    for h in &v.hints {
        let _ = writeln!(out, "  why: {h}");
    }
    if !v.not_checked.is_empty() {
        out.push_str("not checked:\n");
        for n in &v.not_checked {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locality::envoy::parse_clusters;

    const ORDERS: &str = "orders-service.ecommerce.svc.cluster.local";
    const PRODUCTS: &str = "products-service.ecommerce.svc.cluster.local";
    const TH: Thresholds = Thresholds {
        orders_in_zone_min: 80.0,
        products_on_node_min: 100.0,
        failed_requests_max: 0.0,
    };

    fn ep(cluster: &str, ip: &str, zone: &str, rq: u64) -> Endpoint {
        let address = format!("{ip}:1");
        Endpoint {
            cluster: cluster.into(),
            ip: ip.parse().ok(),
            address,
            region: Some("af-south-1".into()),
            zone: (!zone.is_empty()).then(|| zone.to_string()),
            sub_zone: None,
            priority: 0,
            healthy: true,
            health_flags: "healthy".into(),
            rq_total: rq,
            rq_success: rq,
            rq_error: 0,
        }
    }

    fn orders(ip: &str, zone: &str, rq: u64) -> Endpoint {
        ep(&format!("outbound|3003||{ORDERS}"), ip, zone, rq)
    }

    fn products(ip: &str, zone: &str, rq: u64) -> Endpoint {
        ep(&format!("outbound|3004||{PRODUCTS}"), ip, zone, rq)
    }

    fn caller(pod: &str, zone: &str, node: Option<&str>, endpoints: Vec<Endpoint>) -> CallerDump {
        CallerDump {
            pod: pod.into(),
            zone: zone.into(),
            node: node.map(String::from),
            endpoints,
        }
    }

    fn zones(n: usize) -> Vec<String> {
        ["af-south-1a", "af-south-1b", "af-south-1c", "af-south-1d"][..n]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn run(
        callers: &[CallerDump],
        nodes: Option<&BTreeMap<IpAddr, String>>,
        zones: &[String],
        bytes: Option<u64>,
    ) -> Report {
        analyze(&Inputs {
            callers,
            orders_host: ORDERS,
            products_host: PRODUCTS,
            node_of_ip: nodes,
            zones,
            bytes_per_request: bytes,
            requests: None,
            thresholds: TH,
        })
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn orders_shares_and_cost_for_2_3_and_4_zones() {
        // (zones, per destination zone: requests from a caller in 1a; expected in-zone %, cost
        // measured and without locality per million requests at 1000 bytes)
        let cases: &[(usize, &[u64], f64, f64, f64)] = &[
            (2, &[900, 100], 90.0, 0.002, 0.01),
            (3, &[800, 100, 100], 80.0, 0.004, 0.02 * 2.0 / 3.0),
            (4, &[700, 100, 100, 100], 70.0, 0.006, 0.015),
            (3, &[1000, 0, 0], 100.0, 0.0, 0.02 * 2.0 / 3.0),
            (3, &[0, 500, 500], 0.0, 0.02, 0.02 * 2.0 / 3.0),
        ];
        for &(n, counts, in_zone, measured, without) in cases {
            let zs = zones(n);
            let eps = zs
                .iter()
                .zip(counts)
                .enumerate()
                .map(|(i, (z, &c))| orders(&format!("10.0.{i}.5"), z, c))
                .collect();
            let r = run(
                &[caller("graphql-a", "af-south-1a", None, eps)],
                None,
                &zs,
                Some(1000),
            );
            let t = &r.zones[0].traffic;
            assert_eq!(t.orders_total, 1000, "{n} zones");
            assert!(close(t.orders_in_zone_pct.unwrap(), in_zone), "{n}: {t:?}");
            let c = &r.cost;
            assert_eq!(c.zones_in_use, n);
            assert!(close(c.measured_per_million.unwrap(), measured), "{c:?}");
            assert!(close(c.without_locality_per_million, without), "{c:?}");
            assert!(close(c.saving_per_million.unwrap(), without - measured));
            assert_eq!(r.verdict.failures.is_empty(), in_zone >= 80.0, "{r:?}");
            // Orders zones are sorted and only those with traffic appear.
            let keys: Vec<_> = t.orders.keys().cloned().collect();
            let want: Vec<_> = zs
                .iter()
                .zip(counts)
                .filter(|(_, &c)| c > 0)
                .map(|(z, _)| z.clone())
                .collect();
            assert_eq!(keys, want);
        }
    }

    #[test]
    fn per_million_arithmetic() {
        // 2048 bytes, every request crossing: 2.048 GB per million, charged on both sides.
        assert!(close(per_million(1.0, 2048), 0.04096));
        assert!(close(per_million(0.5, 1_000_000), 10.0));
        assert!(close(per_million(0.0, 1_000_000), 0.0));
    }

    #[test]
    fn shares_round_down_so_thresholds_read_honestly() {
        for (part, whole, text) in [
            (799, 1000, "79.9%"),
            (7999, 10000, "79.9%"),
            (2, 3, "66.6%"),
            (1, 3, "33.3%"),
            (999_999, 1_000_000, "99.9%"),
            (5, 5, "100.0%"),
            (0, 7, "0.0%"),
            (0, 0, "-"),
            (u64::MAX, u64::MAX, "100.0%"),
        ] {
            assert_eq!(share_text(part, whole), text, "{part}/{whole}");
        }
        // 79.96% fails an 80% threshold and says 79.9%, not 80.0%.
        let eps = vec![
            orders("10.0.0.5", "af-south-1a", 7996),
            orders("10.0.1.5", "af-south-1b", 2004),
        ];
        let r = run(
            &[caller("g", "af-south-1a", None, eps)],
            None,
            &zones(2),
            None,
        );
        assert!(!r.verdict.pass);
        assert!(
            r.verdict.failures[0].contains("orders in zone 79.9% (7996 of 10000)"),
            "{:?}",
            r.verdict.failures
        );
        assert!(r.verdict.failures[0].contains("minimum of 80%"));
    }

    #[test]
    fn subsets_count_other_clusters_do_not_and_unknown_zones_cross() {
        let mut v1 = orders("10.0.0.6", "af-south-1a", 5);
        v1.cluster = format!("outbound|3003|v1|{ORDERS}");
        let eps = vec![
            orders("10.0.0.5", "af-south-1a", 10),
            v1,
            orders("10.0.9.9", "", 5),
            ep(
                "outbound|3002||graphql-service.ecommerce.svc.cluster.local",
                "10.0.0.7",
                "af-south-1a",
                99,
            ),
            ep("PassthroughCluster", "52.95.1.1", "", 99),
            ep("inbound|3002||", "10.0.0.8", "af-south-1a", 99),
        ];
        let r = run(
            &[caller("g", "af-south-1a", None, eps)],
            None,
            &zones(3),
            None,
        );
        let t = &r.zones[0].traffic;
        assert_eq!(t.orders_total, 20);
        assert_eq!(t.orders_in_zone, 15);
        assert_eq!(t.orders.get(UNKNOWN_ZONE), Some(&5));
        assert_eq!(t.products_total, 0);
        assert_eq!(r.cost.cross_zone_requests, 5);

        // A caller without a zone never counts as in-zone, even towards zone-less endpoints.
        let r = run(
            &[caller("g", "", None, vec![orders("10.0.9.9", "", 5)])],
            None,
            &zones(3),
            None,
        );
        assert_eq!(r.zones[0].zone, UNKNOWN_ZONE);
        assert_eq!(r.zones[0].traffic.orders_in_zone, 0);
    }

    fn node_map() -> BTreeMap<IpAddr, String> {
        [
            ("10.0.0.44", "node-a1"),
            ("10.0.0.58", "node-a2"),
            ("10.0.1.60", "node-b1"),
            ("fd00:10:244::5", "node-c1"),
        ]
        .into_iter()
        .map(|(ip, n)| (ip.parse().unwrap(), n.to_string()))
        .collect()
    }

    #[test]
    fn products_on_node() {
        let map = node_map();
        let both = || {
            vec![
                products("10.0.0.44", "af-south-1a", 30),
                products("10.0.0.58", "af-south-1a", 10),
            ]
        };
        // (callers, node map?, on-node count, pct, failing?)
        type Case = (Vec<CallerDump>, bool, Option<u64>, Option<f64>, bool);
        let cases: Vec<Case> = vec![
            (
                vec![caller("g", "af-south-1a", Some("node-a1"), both())],
                true,
                Some(30),
                Some(75.0),
                true,
            ),
            (
                vec![caller(
                    "g",
                    "af-south-1a",
                    Some("node-a1"),
                    vec![products("10.0.0.44", "af-south-1a", 30)],
                )],
                true,
                Some(30),
                Some(100.0),
                false,
            ),
            // Offline: not measured, not a failure.
            (
                vec![caller("g", "af-south-1a", Some("node-a1"), both())],
                false,
                None,
                None,
                false,
            ),
            // Caller node unknown: not measured.
            (
                vec![caller("g", "af-south-1a", None, both())],
                true,
                None,
                None,
                false,
            ),
            // A node-less caller without products traffic does not spoil the zone.
            (
                vec![
                    caller("g", "af-south-1a", Some("node-a2"), both()),
                    caller("o", "af-south-1a", None, vec![]),
                ],
                true,
                Some(10),
                Some(25.0),
                true,
            ),
            // Two callers on two nodes, each hitting its own node.
            (
                vec![
                    caller(
                        "g",
                        "af-south-1a",
                        Some("node-a1"),
                        vec![products("10.0.0.44", "af-south-1a", 30)],
                    ),
                    caller(
                        "o",
                        "af-south-1a",
                        Some("node-a2"),
                        vec![products("10.0.0.58", "af-south-1a", 10)],
                    ),
                ],
                true,
                Some(40),
                Some(100.0),
                false,
            ),
        ];
        for (i, (callers, with_map, on_node, pct, failing)) in cases.into_iter().enumerate() {
            let mut callers = callers;
            // Orders traffic so that "no traffic" does not mask the products check.
            callers[0]
                .endpoints
                .push(orders("10.0.0.5", "af-south-1a", 1));
            let r = run(&callers, with_map.then_some(&map), &zones(3), None);
            let t = &r.zones[0].traffic;
            assert_eq!(t.products_on_node, on_node, "case {i}");
            assert_eq!(t.products_on_node_pct, pct, "case {i}");
            assert_eq!(r.totals.products_on_node, on_node, "case {i}");
            assert_eq!(!r.verdict.pass, failing, "case {i}: {:?}", r.verdict);
            if on_node.is_none() {
                let why = if with_map {
                    "af-south-1a: products on node (not measured: a caller's node is unknown)"
                } else {
                    "products on node (not measured: no endpoint-to-node information)"
                };
                assert_eq!(r.verdict.not_checked, [why], "case {i}");
                let text = render_text(&r);
                assert!(
                    text.contains("  products on node       -  not measured\n"),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn endpoints_on_unknown_nodes_count_as_off_node() {
        let map = node_map();
        let eps = vec![
            products("10.0.0.44", "af-south-1a", 6),
            products("10.0.0.99", "af-south-1a", 4),
            orders("10.0.0.5", "af-south-1a", 1),
        ];
        let r = run(
            &[caller("g", "af-south-1a", Some("node-a1"), eps)],
            Some(&map),
            &zones(2),
            None,
        );
        let t = &r.zones[0].traffic;
        assert_eq!((t.products_on_node, t.products_node_unknown), (Some(6), 4));
        assert!(
            render_text(&r).contains("4 products requests went to endpoints on an unknown node")
        );
    }

    #[test]
    fn no_traffic_fails_and_says_how_to_get_some() {
        for callers in [
            vec![],
            vec![caller(
                "g",
                "af-south-1a",
                None,
                vec![orders("10.0.0.5", "af-south-1a", 0)],
            )],
        ] {
            let r = run(&callers, None, &zones(3), None);
            assert!(!r.verdict.pass);
            assert_eq!(
                r.verdict.failures,
                ["no traffic measured; send some with --requests N"]
            );
            assert_eq!(r.cost.measured_per_million, None);
            assert_eq!(r.cost.saving_per_million, None);
            assert!(r.cost.bytes_per_request_assumed);
            assert_eq!(r.cost.bytes_per_request, DEFAULT_BYTES_PER_REQUEST);
            let text = render_text(&r);
            assert!(text.contains("verdict: FAIL"), "{text}");
            assert!(text.contains("no requests counted"), "{text}");
            assert!(text.contains("(assumed, not measured)"), "{text}");
        }
    }

    #[test]
    fn zones_without_orders_traffic_are_not_checked_not_failed() {
        let callers = [
            caller(
                "g",
                "af-south-1a",
                None,
                vec![orders("10.0.0.5", "af-south-1a", 10)],
            ),
            caller(
                "o",
                "af-south-1b",
                None,
                vec![products("10.0.1.60", "af-south-1b", 3)],
            ),
        ];
        let r = run(&callers, None, &zones(2), None);
        assert!(r.verdict.pass, "{:?}", r.verdict);
        assert!(r.verdict.not_checked.contains(
            &"af-south-1b: orders in zone (no orders requests from this zone)".to_string()
        ));
    }

    #[test]
    fn zones_in_use_fall_back_to_what_the_counters_show() {
        let eps = vec![
            orders("10.0.0.5", "af-south-1a", 1),
            orders("10.0.1.5", "af-south-1b", 1),
            orders("10.0.9.9", "", 1),
        ];
        let r = run(
            &[caller("g", "af-south-1a", None, eps)],
            None,
            &[],
            Some(1000),
        );
        assert_eq!(r.cost.zones_in_use, 2);
        assert!(close(r.cost.without_locality_cross_zone_pct, 50.0));
        let r = run(&[], None, &[], None);
        assert_eq!(r.cost.zones_in_use, 0);
        assert_eq!(r.cost.without_locality_per_million, 0.0);
        // Duplicates in the stack's list count once.
        let dup = ["a".to_string(), "a".to_string(), "b".to_string()];
        assert_eq!(run(&[], None, &dup, None).cost.zones_in_use, 2);
    }

    #[test]
    fn delta_subtracts_handles_resets_and_new_and_gone_endpoints() {
        let with = |e: Endpoint, total, success, error| Endpoint {
            rq_total: total,
            rq_success: success,
            rq_error: error,
            ..e
        };
        let a = orders("10.0.0.5", "af-south-1a", 0);
        let b = orders("10.0.1.5", "af-south-1b", 0);
        let c = orders("10.0.2.5", "af-south-1c", 0);
        let gone = orders("10.0.3.5", "af-south-1c", 0);
        let before = vec![
            with(a.clone(), 100, 90, 10),
            with(b.clone(), 50, 50, 0),
            with(gone, 7, 7, 0),
        ];
        let mut b_after = with(b.clone(), 5, 5, 0);
        b_after.health_flags = "/failed_outlier_check".into();
        let after = vec![
            with(c.clone(), 3, 3, 0),
            b_after,
            with(a.clone(), 130, 118, 12),
        ];
        let d = delta(&before, &after);
        let got: Vec<_> = d
            .iter()
            .map(|e| (e.address.as_str(), e.rq_total, e.rq_success, e.rq_error))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.5:1", 30, 28, 2),
                ("10.0.1.5:1", 5, 5, 0),
                ("10.0.2.5:1", 3, 3, 0)
            ]
        );
        assert_eq!(
            d[1].health_flags, "/failed_outlier_check",
            "state from `after`"
        );
        // A reset seen only in one counter still takes all of `after`.
        let d = delta(&[with(a.clone(), 10, 10, 0)], &[with(a.clone(), 12, 9, 3)]);
        assert_eq!((d[0].rq_total, d[0].rq_success, d[0].rq_error), (12, 9, 3));
        assert!(delta(&before, &[]).is_empty());
        assert_eq!(delta(&[], &before).len(), 3);
    }

    #[test]
    fn fixtures_before_and_after() {
        let failover = parse_clusters(include_str!(
            "../../tests/fixtures/locality/clusters-graphql-1a-failover.txt"
        ))
        .unwrap();
        let seed = parse_clusters(include_str!(
            "../../tests/fixtures/locality/clusters-graphql-1b-seed.txt"
        ))
        .unwrap();
        let ipv6 = parse_clusters(include_str!(
            "../../tests/fixtures/locality/clusters-ipv6.txt"
        ))
        .unwrap();
        let nodes: BTreeMap<IpAddr, String> = [
            ("10.0.1.44", "ip-10-0-1-10"),
            ("10.0.1.58", "ip-10-0-1-200"),
            ("10.0.2.60", "ip-10-0-2-20"),
            ("10.0.3.71", "ip-10-0-3-30"),
            ("fd00:10:244::5", "ip-10-0-3-31"),
        ]
        .into_iter()
        .map(|(ip, n)| (ip.parse().unwrap(), n.to_string()))
        .collect();
        let callers = [
            caller("graphql-1a", "af-south-1a", Some("ip-10-0-1-10"), failover),
            caller("graphql-1b", "af-south-1b", Some("ip-10-0-2-20"), seed),
            caller("graphql-1c", "af-south-1c", Some("ip-10-0-3-31"), ipv6),
        ];
        let r = run(&callers, Some(&nodes), &zones(3), Some(4096));

        let [a, b, c] = &r.zones[..] else {
            panic!("{:?}", r.zones)
        };
        // 1a, failover: 810 + 5 (v1 subset) in zone, 1 to the ejected 1b endpoint.
        assert_eq!(
            (a.traffic.orders_in_zone, a.traffic.orders_total),
            (815, 816)
        );
        assert_eq!(a.traffic.products_on_node, Some(377));
        // 1b, the seed's rule: 80% of orders to 1a, products spread over every zone.
        assert_eq!(
            b.traffic.orders,
            BTreeMap::from([
                ("af-south-1a".to_string(), 800),
                ("af-south-1b".to_string(), 100),
                ("af-south-1c".to_string(), 100),
            ])
        );
        assert!(close(b.traffic.orders_in_zone_pct.unwrap(), 10.0));
        assert_eq!(
            (b.traffic.products_on_node, b.traffic.products_total),
            (Some(98), 400)
        );
        // 1c, IPv6: 493 in zone, 7 to priority 2 in 1a; the internal address has no node.
        assert_eq!(
            (c.traffic.orders_in_zone, c.traffic.orders_total),
            (493, 500)
        );
        assert_eq!(
            (c.traffic.products_on_node, c.traffic.products_node_unknown),
            (Some(120), 30)
        );

        assert_eq!(r.totals.orders_total, 816 + 1000 + 500);
        assert_eq!(r.totals.products_on_node, Some(377 + 98 + 120));
        let fails = &r.verdict.failures;
        assert_eq!(fails.len(), 3, "{fails:?}");
        assert!(fails[0].starts_with("af-south-1b: orders in zone 10.0% (100 of 1000)"));
        assert!(fails[1].starts_with("af-south-1b: products on node 24.5% (98 of 400)"));
        assert!(fails[2].starts_with("af-south-1c: products on node 80.0% (120 of 150)"));
        assert!(!r.cost.bytes_per_request_assumed);

        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["zones"][1]["zone"], "af-south-1b");
        assert_eq!(json["zones"][1]["orders_in_zone"], 100);
        assert_eq!(json["verdict"]["pass"], false);
        assert_eq!(json["cost"]["zones_in_use"], 3);
        assert!(json["zones"][0].get("traffic").is_none(), "flattened");
    }

    #[test]
    fn text_is_aligned_and_complete() {
        let map = node_map();
        let callers = [
            caller(
                "graphql-a",
                "af-south-1a",
                Some("node-a1"),
                vec![
                    orders("10.0.0.5", "af-south-1a", 950),
                    orders("10.0.1.5", "af-south-1b", 50),
                    products("10.0.0.44", "af-south-1a", 400),
                ],
            ),
            caller(
                "graphql-b",
                "af-south-1b",
                Some("node-b1"),
                vec![
                    orders("10.0.1.5", "af-south-1b", 1000),
                    products("10.0.1.60", "af-south-1b", 400),
                ],
            ),
        ];
        let r = run(&callers, Some(&map), &zones(2), Some(1000));
        let want = "\
orders calls by zone, caller (rows) to destination (columns)
  from \\ to    af-south-1a  af-south-1b  requests
  af-south-1a        95.0%         5.0%      1000
  af-south-1b         0.0%       100.0%      1000

products calls by zone, caller (rows) to destination (columns)
  from \\ to    af-south-1a  af-south-1b  requests
  af-south-1a       100.0%         0.0%       400
  af-south-1b         0.0%       100.0%       400

from af-south-1a (callers: graphql-a)
  to zone      orders  products
  af-south-1a     950       400
  af-south-1b      50         0
  total          1000       400
  orders in zone     95.0%  (950 of 1000)  min 80%
  products on node  100.0%  (400 of 400)   min 100%

from af-south-1b (callers: graphql-b)
  to zone      orders  products
  af-south-1b    1000       400
  total          1000       400
  orders in zone    100.0%  (1000 of 1000)  min 80%
  products on node  100.0%  (400 of 400)    min 100%

all zones
  to zone      orders  products
  af-south-1a     950       400
  af-south-1b    1050       400
  total          2000       800
  orders in zone     97.5%  (1950 of 2000)
  products on node  100.0%  (800 of 800)

cross-AZ transfer at $0.01/GB each way, 1000 bytes per request (measured)
  measured          $0.0004  per million requests  (1.7% of 2800 requests crossed zones)
  without locality  $0.0100  per million requests  (50.0% if spread evenly over 2 zones)
  saving            $0.0096  per million requests

verdict: PASS
";
        assert_eq!(render_text(&r), want);
    }

    #[test]
    fn matrix_rows_are_caller_zones_and_colour_marks_only_the_diagonal() {
        let callers = [
            caller(
                "g-a",
                "af-south-1a",
                None,
                vec![
                    orders("10.0.0.5", "af-south-1a", 70),
                    orders("10.0.1.5", "af-south-1b", 30),
                ],
            ),
            caller(
                "g-b",
                "af-south-1b",
                None,
                vec![
                    orders("10.0.1.5", "af-south-1b", 90),
                    orders("10.0.9.9", "", 10),
                ],
            ),
        ];
        let r = run(&callers, None, &zones(2), None);
        let m = matrix(&r, Service::Orders);
        assert_eq!(m.zones, ["af-south-1a", "af-south-1b", UNKNOWN_ZONE]);
        assert_eq!(m.rows[0].counts, [70, 30, 0]);
        assert_eq!(m.rows[1].counts, [0, 90, 10]);
        assert_eq!(
            (m.rows[0].share(0), m.rows[1].share(2)),
            ("70.0%".into(), "10.0%".into())
        );
        assert!(matrix(&r, Service::Products)
            .rows
            .iter()
            .all(|r| r.total == 0));

        let plain = render_text_styled(&r, false);
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(
            !plain.contains("products calls by zone"),
            "no products, no matrix"
        );
        let coloured = render_text_styled(&r, true);
        // 1a keeps 70%, below the 80% minimum: red; 1b keeps 90%: green. Nothing else.
        assert!(coloured.contains("\x1b[1;31m70.0%\x1b[0m"), "{coloured}");
        assert!(coloured.contains("\x1b[1;32m90.0%\x1b[0m"), "{coloured}");
        assert_eq!(coloured.matches("\x1b[0m").count(), 2, "{coloured}");
        // Without the escapes, the coloured text is the plain text.
        let stripped = coloured
            .replace("\x1b[1;31m", "")
            .replace("\x1b[1;32m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn failed_requests_fail_the_verdict_beyond_the_tolerated_share() {
        let eps = vec![orders("10.0.0.5", "af-south-1a", 100)];
        let callers = [caller("g", "af-south-1a", None, eps)];
        let mut check = RequestCheck {
            sent: 3000,
            ..RequestCheck::default()
        };
        check.fail("connect ECONNREFUSED 10.0.0.9:3004 (at products)");
        check.fail("`data.orders` is empty");
        check.fail("connect ECONNREFUSED 10.0.0.9:3004 (at products)");
        check.finish();
        check.hints = vec!["a hint".into()];
        // (tolerated %, pass)
        for (max, pass) in [(0.0, false), (0.09, false), (0.1, true), (5.0, true)] {
            let r = analyze(&Inputs {
                callers: &callers,
                orders_host: ORDERS,
                products_host: PRODUCTS,
                node_of_ip: None,
                zones: &zones(1),
                bytes_per_request: None,
                requests: Some(&check),
                thresholds: Thresholds {
                    failed_requests_max: max,
                    ..TH
                },
            });
            assert_eq!(r.verdict.pass, pass, "{max}: {:?}", r.verdict);
            assert_eq!(r.verdict.hints, ["a hint"]);
            if !pass {
                assert_eq!(
                    r.verdict.failures,
                    [format!(
                        "3 of 3000 requests failed (0.1%), above the tolerated {max}%: \
                         `connect ECONNREFUSED 10.0.0.9:3004 (at products)` (2x); \
                         ``data.orders` is empty` (1x)"
                    )]
                );
                assert!(render_text(&r).contains("  why: a hint\n"));
            }
        }
        // Nothing sent, nothing to fail.
        let none = RequestCheck::default();
        let r = analyze(&Inputs {
            callers: &callers,
            orders_host: ORDERS,
            products_host: PRODUCTS,
            node_of_ip: None,
            zones: &zones(1),
            bytes_per_request: None,
            requests: Some(&none),
            thresholds: TH,
        });
        assert!(r.verdict.pass, "{:?}", r.verdict);
        assert_eq!(share_text_up(1, 3000), "0.1%");
        assert_eq!(share_text_up(0, 3000), "0.0%");
        assert_eq!(share_text_up(20, 60), "33.4%");
    }

    #[test]
    fn errors_keep_the_most_frequent_messages() {
        let mut a = RequestCheck::default();
        for m in ["x", "y", "y", "z", "w", "w", "w"] {
            a.fail(m);
        }
        a.sent = 7;
        let mut b = RequestCheck::default();
        b.fail("x");
        b.fail("x");
        b.sent = 2;
        a.merge(&b);
        a.finish();
        let got: Vec<(&str, u64)> = a
            .errors
            .iter()
            .map(|e| (e.message.as_str(), e.count))
            .collect();
        assert_eq!(got, [("x", 3), ("w", 3), ("y", 2)]);
        assert_eq!((a.sent, a.failed), (9, 9));
    }

    #[test]
    fn products_per_node() {
        let map = node_map();
        let callers = [
            caller(
                "g1",
                "af-south-1a",
                Some("node-a1"),
                vec![
                    products("10.0.0.44", "af-south-1a", 30),
                    products("10.0.0.58", "af-south-1a", 10),
                    products("10.0.0.99", "af-south-1a", 2),
                ],
            ),
            caller(
                "o2",
                "af-south-1a",
                Some("node-a2"),
                vec![products("10.0.0.58", "af-south-1a", 8)],
            ),
            caller(
                "gone",
                "af-south-1b",
                None,
                vec![products("10.0.1.60", "af-south-1b", 5)],
            ),
        ];
        let r = run(&callers, Some(&map), &zones(2), None);
        let got: Vec<(&str, u64, u64, u64)> = r
            .nodes
            .iter()
            .map(|n| {
                (
                    n.node.as_str(),
                    n.products_total,
                    n.products_on_node,
                    n.products_off_node,
                )
            })
            .collect();
        assert_eq!(got, [("node-a1", 42, 30, 12), ("node-a2", 8, 8, 0)]);
        assert!(
            run(&callers, None, &zones(2), None).nodes.is_empty(),
            "offline: no nodes"
        );
    }

    #[test]
    fn negative_saving_and_dollars() {
        assert_eq!(dollars(0.04096), "$0.0410");
        assert_eq!(dollars(-0.001), "-$0.0010");
        assert_eq!(dollars(0.0), "$0.0000");
    }
}
