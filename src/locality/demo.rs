//! `meshstack demo`'s arithmetic: one phase's figures from its [`Report`] (the counters' deltas
//! over that phase only) and the client-side latencies, the before/after comparison with
//! cross-zone GB per million requests and what they cost a month for a traffic profile, and
//! the side-by-side table. Pure: the command measures, this module only computes and writes.
//!
//! "A request" is one client request (a graphql query): the ones meshstack sent when it sent
//! them, else (saved dumps) the orders calls counted, since each default query calls orders
//! exactly once. Each cross-zone call is taken to move as many bytes as one client request
//! and its answer (the same approximation as `verify`'s cost line), charged on both sides at
//! the inter-AZ price ([`crate::prices::INTER_AZ`]).

use std::fmt::Write as _;

use serde::Serialize;

use super::report::{dollars, share_text, CallerDump, Report};
use crate::prices::TransferPrice;

/// The traffic profile's requests per second unless `--rps` says otherwise.
pub const DEFAULT_RPS: f64 = 100.0;
/// Hours in a month, as AWS's pricing pages count them.
pub const HOURS_PER_MONTH: f64 = 730.0;
const GB: f64 = 1e9;

/// Client-side latency of the requests meshstack sent, in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub samples: usize,
}

/// The nearest-rank percentiles of `samples_ms`; `None` without samples.
pub fn latency(samples_ms: &[f64]) -> Option<Latency> {
    if samples_ms.is_empty() {
        return None;
    }
    let mut sorted = samples_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[i.clamp(1, sorted.len()) - 1]
    };
    Some(Latency {
        p50_ms: rank(50.0),
        p95_ms: rank(95.0),
        p99_ms: rank(99.0),
        samples: sorted.len(),
    })
}

/// What one phase measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseFigures {
    /// `before` or `after`.
    pub phase: String,
    /// Client requests: sent by meshstack, or (saved dumps) the orders calls counted.
    pub requests: u64,
    /// True when `requests` was counted from the orders calls (saved dumps).
    pub requests_from_orders_calls: bool,
    /// Requests the app answered with an error; `None` when not known (saved dumps).
    pub failed: Option<u64>,
    pub orders_calls: u64,
    pub orders_cross_zone: u64,
    pub orders_cross_zone_pct: Option<f64>,
    pub products_calls: u64,
    /// `None` without a pod -> node map (saved dumps).
    pub products_on_node: Option<u64>,
    pub products_off_node: Option<u64>,
    /// Orders and products calls that left their caller's zone.
    pub cross_zone_calls: u64,
    /// Cross-zone GB per million requests; `None` without requests.
    pub cross_zone_gb_per_million: Option<f64>,
    pub latency: Option<Latency>,
    /// The stack's verify thresholds, met or not.
    pub pass: bool,
    pub failures: Vec<String>,
}

/// A phase's figures from its report.
pub fn phase_figures(
    phase: &str,
    report: &Report,
    sent: Option<(u64, u64)>,
    latencies_ms: &[f64],
    bytes_per_request: u64,
) -> PhaseFigures {
    let t = &report.totals;
    let (requests, failed) = match sent {
        Some((sent, failed)) => (sent, Some(failed)),
        None => (t.orders_total, None),
    };
    let cross = report.cost.cross_zone_requests;
    PhaseFigures {
        phase: phase.to_string(),
        requests,
        requests_from_orders_calls: sent.is_none(),
        failed,
        orders_calls: t.orders_total,
        orders_cross_zone: t.orders_total - t.orders_in_zone,
        orders_cross_zone_pct: pct(t.orders_total - t.orders_in_zone, t.orders_total),
        products_calls: t.products_total,
        products_on_node: t.products_on_node,
        products_off_node: t.products_on_node.map(|n| t.products_total - n),
        cross_zone_calls: cross,
        cross_zone_gb_per_million: (requests > 0)
            .then(|| cross as f64 / requests as f64 * bytes_per_request as f64 * 1e6 / GB),
        latency: latency(latencies_ms),
        pass: report.verdict.pass,
        failures: report.verdict.failures.clone(),
    }
}

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// The presenter's traffic profile and the price it is costed at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub rps: f64,
    pub bytes_per_request: u64,
    /// How `bytes_per_request` was chosen: `--bytes-per-request`, measured, or assumed.
    pub bytes_per_request_from: String,
    pub price: TransferPrice,
}

impl Profile {
    /// Dollars a month for `gb_per_million` cross-zone GB per million requests.
    pub fn monthly(&self, gb_per_million: f64) -> f64 {
        let requests = self.rps * 3600.0 * HOURS_PER_MONTH;
        gb_per_million * requests / 1e6 * 2.0 * self.price.dollars_per_gb_each_way
    }
}

/// Before against after.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub before: PhaseFigures,
    pub after: PhaseFigures,
    pub profile: Profile,
    pub monthly_before: Option<f64>,
    pub monthly_after: Option<f64>,
    /// Before minus after; negative when the policies cost more.
    pub monthly_saving: Option<f64>,
    /// After minus before, per percentile; negative is faster.
    pub latency_change_ms: Option<LatencyChange>,
    /// The after phase meets the stack's thresholds.
    pub pass: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyChange {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

pub fn compare(before: PhaseFigures, after: PhaseFigures, profile: Profile) -> Comparison {
    let monthly_before = before.cross_zone_gb_per_million.map(|g| profile.monthly(g));
    let monthly_after = after.cross_zone_gb_per_million.map(|g| profile.monthly(g));
    let latency_change_ms = match (before.latency, after.latency) {
        (Some(b), Some(a)) => Some(LatencyChange {
            p50_ms: a.p50_ms - b.p50_ms,
            p95_ms: a.p95_ms - b.p95_ms,
            p99_ms: a.p99_ms - b.p99_ms,
        }),
        _ => None,
    };
    Comparison {
        monthly_saving: monthly_before.zip(monthly_after).map(|(b, a)| b - a),
        pass: after.pass,
        before,
        after,
        profile,
        monthly_before,
        monthly_after,
        latency_change_ms,
    }
}

fn share(part: Option<u64>, whole: u64) -> String {
    match part {
        Some(p) if whole > 0 => format!("{} ({p}/{whole})", share_text(p, whole)),
        Some(_) => "-".into(),
        None => "not measured".into(),
    }
}

fn points(before: Option<f64>, after: Option<f64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!("{:+.1} pts", a - b),
        _ => "-".into(),
    }
}

fn ms(l: Option<Latency>) -> String {
    l.map_or("-".into(), |l| {
        format!("{:.1} / {:.1} / {:.1}", l.p50_ms, l.p95_ms, l.p99_ms)
    })
}

fn gb(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

fn money(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| {
        if v < 0.0 {
            format!("-${:.2}", -v)
        } else {
            format!("${v:.2}")
        }
    })
}

/// The rows of the side-by-side table: (what, before, after, change).
pub fn rows(c: &Comparison) -> Vec<[String; 4]> {
    let (b, a) = (&c.before, &c.after);
    let failed = |p: &PhaseFigures| match p.failed {
        Some(f) => format!("{f} of {}", p.requests),
        None => "not known".into(),
    };
    let on_node_pct = |p: &PhaseFigures| p.products_on_node.and_then(|n| pct(n, p.products_calls));
    vec![
        [
            "requests".into(),
            b.requests.to_string(),
            a.requests.to_string(),
            String::new(),
        ],
        [
            "orders calls across zones".into(),
            share(Some(b.orders_cross_zone), b.orders_calls),
            share(Some(a.orders_cross_zone), a.orders_calls),
            points(b.orders_cross_zone_pct, a.orders_cross_zone_pct),
        ],
        [
            "products calls on the caller's node".into(),
            share(b.products_on_node, b.products_calls),
            share(a.products_on_node, a.products_calls),
            points(on_node_pct(b), on_node_pct(a)),
        ],
        [
            "products calls off the node".into(),
            b.products_off_node
                .map_or("not measured".into(), |n| n.to_string()),
            a.products_off_node
                .map_or("not measured".into(), |n| n.to_string()),
            String::new(),
        ],
        [
            "failed requests".into(),
            failed(b),
            failed(a),
            String::new(),
        ],
        [
            "latency p50 / p95 / p99 (ms)".into(),
            ms(b.latency),
            ms(a.latency),
            c.latency_change_ms.map_or("-".into(), |d| {
                format!("{:+.1} / {:+.1} / {:+.1}", d.p50_ms, d.p95_ms, d.p99_ms)
            }),
        ],
        [
            "cross-zone GB per million requests".into(),
            gb(b.cross_zone_gb_per_million),
            gb(a.cross_zone_gb_per_million),
            match (b.cross_zone_gb_per_million, a.cross_zone_gb_per_million) {
                (Some(x), Some(y)) => format!("{:+.3}", y - x),
                _ => "-".into(),
            },
        ],
        [
            format!("cross-zone transfer a month at {} rps", c.profile.rps),
            money(c.monthly_before),
            money(c.monthly_after),
            c.monthly_saving
                .map_or("-".into(), |s| format!("saves {}", money(Some(s)))),
        ],
    ]
}

/// The comparison as a person reads it: the table, what it assumes, and the verdict.
pub fn render_text(c: &Comparison) -> String {
    let mut out = String::new();
    let mut all = vec![[
        String::new(),
        "before (policies off)".to_string(),
        "after (policies on)".to_string(),
        "change".to_string(),
    ]];
    all.extend(rows(c));
    let width = |i: usize| all.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let w: Vec<usize> = (0..4).map(width).collect();
    for r in &all {
        let line = format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let p = &c.profile;
    let _ = writeln!(
        out,
        "\ncosted at {} bytes per request ({}), {} hours a month, inter-AZ transfer {} per GB \
         each direction ({}, {})",
        p.bytes_per_request,
        p.bytes_per_request_from,
        HOURS_PER_MONTH,
        dollars(p.price.dollars_per_gb_each_way),
        p.price.source,
        p.price.date
    );
    if c.before.requests_from_orders_calls {
        out.push_str(
            "requests counted from the orders calls in the saved dumps (one per query); \
             products on-node and latency need a live run\n",
        );
    }
    if c.pass {
        out.push_str("after: PASS, the stack's verify thresholds are met\n");
    } else {
        out.push_str("after: FAIL, the stack's verify thresholds are not met:\n");
        for f in &c.after.failures {
            let _ = writeln!(out, "  {f}");
        }
    }
    out
}

/// What a sidecar's `/clusters` shows of the locality policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrdersSeen {
    /// Every orders endpoint at priority 0: no locality failover.
    Even,
    /// Orders endpoints of other zones at a lower priority than the caller's zone's.
    Failover,
    /// Not visible in `/clusters` (`distribute` weighs localities at one priority): not
    /// waited for.
    Unseen,
}

/// The state `meshstack demo` waits for every sidecar to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub orders: OrdersSeen,
    /// products-service under `internalTrafficPolicy: Local`: the sidecar lists only its
    /// node's products endpoints; under `Cluster` also others (when there are any).
    pub products_local: bool,
}

/// Why `dump` does not show `expected` yet; `None` when it does. `node_of_ip` places the
/// endpoints; `products_elsewhere` says whether some products pod runs off the caller's node
/// (without one, `Local` and `Cluster` look the same).
pub fn sidecar_lag(
    dump: &CallerDump,
    expected: Expected,
    orders_host: &str,
    products_host: &str,
    node_of_ip: &std::collections::BTreeMap<std::net::IpAddr, String>,
    products_elsewhere: bool,
) -> Option<String> {
    fn of<'a>(
        dump: &'a CallerDump,
        host: &'a str,
    ) -> impl Iterator<Item = &'a super::envoy::Endpoint> + 'a {
        dump.endpoints
            .iter()
            .filter(move |e| super::envoy::outbound_host(&e.cluster) == Some(host))
    }
    let away = |e: &&super::envoy::Endpoint| e.zone.as_deref().unwrap_or_default() != dump.zone;
    match expected.orders {
        OrdersSeen::Even => {
            if let Some(e) = of(dump, orders_host).find(|e| e.priority > 0) {
                return Some(format!(
                    "{}: orders endpoint {} still at priority {} (locality failover on)",
                    dump.pod, e.address, e.priority
                ));
            }
        }
        OrdersSeen::Failover => {
            let home_has = of(dump, orders_host).any(|e| !away(&e));
            let flat = of(dump, orders_host).filter(away).find(|e| e.priority == 0);
            if let (true, Some(e)) = (home_has, flat) {
                return Some(format!(
                    "{}: orders endpoint {} in {} still at priority 0 (no locality failover yet)",
                    dump.pod,
                    e.address,
                    e.zone.as_deref().unwrap_or("no zone")
                ));
            }
        }
        OrdersSeen::Unseen => {}
    }
    let off_node = of(dump, products_host).find(|e| {
        let node = e.ip.and_then(|ip| node_of_ip.get(&ip));
        node.map(String::as_str) != dump.node.as_deref()
    });
    match (expected.products_local, off_node) {
        (true, Some(e)) => Some(format!(
            "{}: still lists products endpoint {} off its node (internalTrafficPolicy: Local \
             not seen yet)",
            dump.pod, e.address
        )),
        (false, None) if products_elsewhere => Some(format!(
            "{}: lists only its node's products endpoints (internalTrafficPolicy: Cluster not \
             seen yet)",
            dump.pod
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locality::envoy::Endpoint;
    use crate::locality::report::{analyze, Inputs, RequestCheck, Thresholds};
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    const ORDERS: &str = "orders-service.ecommerce.svc.cluster.local";
    const PRODUCTS: &str = "products-service.ecommerce.svc.cluster.local";

    fn endpoint(host: &str, ip: &str, zone: &str, n: u64) -> Endpoint {
        let port = if host == ORDERS { 3003 } else { 3004 };
        Endpoint {
            cluster: format!("outbound|{port}||{host}"),
            address: format!("{ip}:{port}"),
            ip: ip.parse().ok(),
            region: Some("us-east-1".into()),
            zone: Some(zone.into()),
            sub_zone: None,
            priority: 0,
            healthy: true,
            health_flags: "healthy".into(),
            rq_total: n,
            rq_success: n,
            rq_error: 0,
        }
    }

    /// graphql in 1a on node n1 (with products 10.0.0.3); orders in 1a and 1b; products 10.0.1.3
    /// on n2 in 1b.
    fn report(orders: (u64, u64), products: (u64, u64), failed: u64) -> Report {
        let callers = vec![CallerDump {
            pod: "graphql-1".into(),
            zone: "us-east-1a".into(),
            node: Some("n1".into()),
            endpoints: vec![
                endpoint(ORDERS, "10.0.0.2", "us-east-1a", orders.0),
                endpoint(ORDERS, "10.0.1.2", "us-east-1b", orders.1),
                endpoint(PRODUCTS, "10.0.0.3", "us-east-1a", products.0),
                endpoint(PRODUCTS, "10.0.1.3", "us-east-1b", products.1),
            ],
        }];
        let node_of_ip: BTreeMap<IpAddr, String> = [
            ("10.0.0.2", "n1"),
            ("10.0.0.3", "n1"),
            ("10.0.1.2", "n2"),
            ("10.0.1.3", "n2"),
        ]
        .iter()
        .map(|(ip, n)| (ip.parse().unwrap(), n.to_string()))
        .collect();
        let sent = orders.0 + orders.1;
        let mut check = RequestCheck {
            sent,
            ..RequestCheck::default()
        };
        for _ in 0..failed {
            check.fail("connect ECONNREFUSED products-service:3004 (at products)");
        }
        check.finish();
        analyze(&Inputs {
            callers: &callers,
            orders_host: ORDERS,
            products_host: PRODUCTS,
            node_of_ip: Some(&node_of_ip),
            zones: &["us-east-1a".into(), "us-east-1b".into()],
            bytes_per_request: Some(1000),
            requests: Some(&check),
            thresholds: Thresholds {
                orders_in_zone_min: 80.0,
                products_on_node_min: 100.0,
                failed_requests_max: 0.0,
            },
        })
    }

    fn profile() -> Profile {
        Profile {
            rps: 100.0,
            bytes_per_request: 1000,
            bytes_per_request_from: "measured".into(),
            price: crate::prices::INTER_AZ,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = latency(&samples).unwrap();
        assert_eq!(
            (l.p50_ms, l.p95_ms, l.p99_ms, l.samples),
            (50.0, 95.0, 99.0, 100)
        );
        let one = latency(&[7.0]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        // Order does not matter.
        let l = latency(&[30.0, 10.0, 20.0]).unwrap();
        assert_eq!((l.p50_ms, l.p95_ms), (20.0, 30.0));
        assert_eq!(latency(&[]), None);
    }

    #[test]
    fn a_phase_counts_what_crossed_zones_and_left_the_node() {
        // (orders in 1a, in 1b), (products on n1, on n2), failed -> cross-zone orders,
        // off-node products, cross-zone calls, GB per million, pass
        let cases = [
            ((50, 50), (100, 100), 0, 50, 100, 150, 1.5, false),
            ((100, 0), (200, 0), 0, 0, 0, 0, 0.0, true),
            ((100, 0), (200, 0), 3, 0, 0, 0, 0.0, false),
            ((90, 10), (200, 0), 0, 10, 0, 10, 0.1, true),
        ];
        for (i, (orders, products, failed, cross_orders, off, cross, gb, pass)) in
            cases.into_iter().enumerate()
        {
            let r = report(orders, products, failed);
            let f = phase_figures("x", &r, Some((100, failed)), &[], 1000);
            assert_eq!(f.orders_cross_zone, cross_orders, "case {i}");
            assert_eq!(f.products_off_node, Some(off), "case {i}");
            assert_eq!(f.cross_zone_calls, cross, "case {i}");
            let got = f.cross_zone_gb_per_million.unwrap();
            assert!((got - gb).abs() < 1e-9, "case {i}: {got}");
            assert_eq!(f.pass, pass, "case {i}: {:?}", f.failures);
            assert_eq!(f.failed, Some(failed));
        }
        // Saved dumps: requests are the orders calls, failures unknown.
        let f = phase_figures("x", &report((60, 40), (0, 0), 0), None, &[], 1000);
        assert_eq!((f.requests, f.failed), (100, None));
        assert!(f.requests_from_orders_calls);
    }

    #[test]
    fn the_saving_is_the_cross_zone_gigabytes_at_the_inter_az_price() {
        let before = phase_figures(
            "before",
            &report((50, 50), (100, 100), 0),
            Some((100, 0)),
            &[10.0, 20.0, 30.0],
            1000,
        );
        let after = phase_figures(
            "after",
            &report((100, 0), (200, 0), 0),
            Some((100, 0)),
            &[5.0, 10.0, 15.0],
            1000,
        );
        let c = compare(before, after, profile());
        // 1.5 GB per million requests; 100 rps is 262.8 million requests a month; $0.02/GB.
        let want = 1.5 * 262.8 * 0.02;
        assert!((c.monthly_before.unwrap() - want).abs() < 1e-6, "{c:?}");
        assert_eq!(c.monthly_after, Some(0.0));
        assert!((c.monthly_saving.unwrap() - want).abs() < 1e-6);
        let d = c.latency_change_ms.unwrap();
        assert_eq!((d.p50_ms, d.p95_ms), (-10.0, -15.0));
        assert!(c.pass);
        let text = render_text(&c);
        for part in [
            "orders calls across zones",
            "50.0% (50/100)",
            "0.0% (0/100)",
            "-50.0 pts",
            "products calls on the caller's node",
            "+50.0 pts",
            "1.500",
            "$7.88",
            "saves $7.88",
            "-10.0 / -15.0 / -15.0",
            "1000 bytes per request (measured)",
            "$0.0100 per GB each direction",
            "2026-11-30",
            "after: PASS",
        ] {
            assert!(text.contains(part), "{part} missing from\n{text}");
        }
        // An after phase that misses the thresholds says why.
        let bad = phase_figures(
            "after",
            &report((50, 50), (200, 0), 0),
            Some((100, 0)),
            &[],
            1000,
        );
        let good = phase_figures("before", &report((50, 50), (100, 100), 0), None, &[], 1000);
        let c = compare(good, bad, profile());
        assert!(!c.pass);
        let text = render_text(&c);
        assert!(text.contains("after: FAIL"), "{text}");
        assert!(text.contains("us-east-1a"), "{text}");
        assert!(text.contains("saves $5.26"), "{text}");
    }

    #[test]
    fn a_sidecar_shows_the_policies_by_priorities_and_the_products_it_lists() {
        let node_of_ip: BTreeMap<IpAddr, String> = [
            ("10.0.0.2", "n1"),
            ("10.0.0.3", "n1"),
            ("10.0.1.2", "n2"),
            ("10.0.1.3", "n2"),
        ]
        .iter()
        .map(|(ip, n)| (ip.parse().unwrap(), n.to_string()))
        .collect();
        let dump = |away_priority: u32, products_off_node: bool| {
            let mut away = endpoint(ORDERS, "10.0.1.2", "us-east-1b", 0);
            away.priority = away_priority;
            let mut endpoints = vec![
                endpoint(ORDERS, "10.0.0.2", "us-east-1a", 0),
                away,
                endpoint(PRODUCTS, "10.0.0.3", "us-east-1a", 0),
            ];
            if products_off_node {
                endpoints.push(endpoint(PRODUCTS, "10.0.1.3", "us-east-1b", 0));
            }
            CallerDump {
                pod: "graphql-1".into(),
                zone: "us-east-1a".into(),
                node: Some("n1".into()),
                endpoints,
            }
        };
        let on = Expected {
            orders: OrdersSeen::Failover,
            products_local: true,
        };
        let off = Expected {
            orders: OrdersSeen::Even,
            products_local: false,
        };
        let unseen = Expected {
            orders: OrdersSeen::Unseen,
            products_local: true,
        };
        // (dump, expected, products elsewhere, lag mentions)
        let cases = [
            (dump(1, false), on, true, None),
            (dump(0, false), on, true, Some("no locality failover yet")),
            (dump(1, true), on, true, Some("not seen yet")),
            (dump(0, true), off, true, None),
            (dump(1, true), off, true, Some("still at priority 1")),
            (
                dump(0, false),
                off,
                true,
                Some("internalTrafficPolicy: Cluster"),
            ),
            (dump(0, false), off, false, None),
            (dump(0, false), unseen, true, None),
        ];
        for (i, (d, expected, elsewhere, want)) in cases.into_iter().enumerate() {
            let got = sidecar_lag(&d, expected, ORDERS, PRODUCTS, &node_of_ip, elsewhere);
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(g)) if g.contains(w) && g.starts_with("graphql-1") => {}
                _ => panic!("case {i}: {got:?}, want {want:?}"),
            }
        }
    }
}
