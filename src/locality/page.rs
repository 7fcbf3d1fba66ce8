//! The picture of the pattern: one self-contained HTML page (inline CSS and SVG, no script,
//! no font, image or style sheet fetched from anywhere) that shows where the app's pods run
//! and where the measured traffic went, for a projector or a workshop handout.
//!
//! - zones as columns; in each, its nodes (name, instance type, capacity type, Karpenter pool
//!   or node group) and in each node its pods, coloured by deployment (service and version);
//! - the orders calls as arrows between the zone columns, width by the share of the caller
//!   zone's calls, labelled with the percentage and the request count;
//! - the products calls per node: kept on the node (green) or not (red, with the count), and
//!   nodes where a products client has no local products endpoint marked;
//! - the verdict against the stack's thresholds, the cross-AZ cost per million requests
//!   (measured and spread evenly), and a footer with stack, region, time and version.
//!
//! Pure: it turns a [`PodsReport`] and a [`Report`] into a string. The numbers are the
//! report's, formatted by the same functions as the text output ([`report::share_text`]), so
//! the page and the terminal always agree.
//!
//! The markup carries what a test needs to read it back: `section.zone[data-zone]`,
//! `div.node[data-node]`, `div.pod[data-deployment]`, and `text.arrow-label` with
//! `data-from`, `data-to`, `data-pct` and `data-count`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::placement::{NodeReport, PodsReport, UNKNOWN_ZONE};
use super::report::{self, dollars, matrix, Report, Service};

/// The widest a zone column gets, the narrowest, and the gap between columns, in CSS pixels;
/// the traffic band's SVG uses the same grid so that arrows start and end over their columns.
const COLUMN_MAX: f64 = 300.0;
const COLUMN_MIN: f64 = 180.0;
const GAP: f64 = 16.0;
/// What the zone columns may fill: a 1280-pixel projector less the page's margins.
const FIT_WIDTH: f64 = 1232.0;

/// What the page shows.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The stack's name.
    pub stack: &'a str,
    pub region: Option<&'a str>,
    /// When the numbers were taken, as it should be printed (UTC).
    pub measured_at: &'a str,
    /// meshstack's version.
    pub version: &'a str,
    /// Zones, nodes and pods; `None` when unknown (saved dumps).
    pub pods: Option<&'a PodsReport>,
    /// The traffic measurement; `None` for a placement-only page (`meshstack pods`).
    pub report: Option<&'a Report>,
    /// One line per load `verify` sent, as the text output says it.
    pub load: &'a [String],
    /// What the page could not show, one sentence each.
    pub missing: &'a [String],
}

/// The page, as one HTML document.
pub fn render(page: &Page) -> String {
    let title = match page.report {
        Some(_) => format!("meshstack verify: {}", page.stack),
        None => format!("meshstack pods: {}", page.stack),
    };
    let mut out = String::with_capacity(16 * 1024);
    head(&mut out, &title, "");
    let _ = writeln!(out, "<header><h1>{}</h1>", esc(&title));
    body(&mut out, page);
    footer(&mut out, page);
    out.push_str("</body>\n</html>\n");
    out
}

/// The document's head, `<body>` opened.
fn head(out: &mut String, title: &str, extra_css: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}{extra_css}</style>\n</head>\n<body>\n",
        esc(title)
    );
}

/// Everything after the header's title: load lines, verdict, placement, traffic and cost.
fn body(out: &mut String, page: &Page) {
    let zones = zones(page);
    for line in page.load {
        let _ = writeln!(out, "<p class=\"load\">{}</p>", esc(line));
    }
    out.push_str("</header>\n");
    if let Some(r) = page.report {
        verdict(out, r);
    }
    if !page.missing.is_empty() {
        out.push_str("<div class=\"missing\"><b>Not shown:</b><ul>");
        for m in page.missing {
            let _ = write!(out, "<li>{}</li>", esc(m));
        }
        out.push_str("</ul></div>\n");
    }
    legend(out, page.pods);
    let width = grid_width(zones.len());
    let _ = writeln!(out, "<main style=\"width:{width}px\">");
    if let Some(r) = page.report {
        traffic_band(out, r, &zones);
    }
    let _ = writeln!(
        out,
        "<div class=\"zones\" style=\"grid-template-columns:repeat({}, {}px);column-gap:{GAP}px\">",
        zones.len().max(1),
        column(zones.len())
    );
    for zone in &zones {
        zone_column(out, page, zone);
    }
    out.push_str("</div>\n</main>\n");
    if let Some(r) = page.report {
        cost(out, r);
    }
}

fn footer(out: &mut String, page: &Page) {
    let _ = writeln!(
        out,
        "<footer>stack <b>{}</b> · region <b>{}</b> · measured {} · meshstack {}</footer>",
        esc(page.stack),
        esc(page.region.unwrap_or("unknown")),
        esc(page.measured_at),
        esc(page.version)
    );
}

/// `meshstack demo --html`: the before and after pictures side by side (each the page
/// [`render`] draws, in its own column), and above them the difference as a table of
/// `(what, before, after, change)` rows with one line of notes each (price, profile, verdict).
///
/// The markup adds `section.phase[data-phase=before|after]` around each picture and
/// `table.difference tr[data-row]` for a test to read back.
pub fn render_pair(
    stack: &str,
    before: &Page,
    after: &Page,
    difference: &[[String; 4]],
    notes: &[String],
    pass: bool,
) -> String {
    let title = format!("meshstack demo: {stack}");
    let mut out = String::with_capacity(48 * 1024);
    head(&mut out, &title, PAIR_CSS);
    let _ = writeln!(out, "<h1>{}</h1>", esc(&title));
    let _ = writeln!(
        out,
        "<div class=\"verdict {}\">after: {}</div>",
        if pass { "pass" } else { "fail" },
        if pass {
            "PASS, the stack's verify thresholds are met"
        } else {
            "FAIL, the stack's verify thresholds are not met"
        }
    );
    out.push_str("<table class=\"difference\"><tr><th></th><th>before (policies off)</th><th>after (policies on)</th><th>change</th></tr>\n");
    for (i, row) in difference.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr data-row=\"{i}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&row[0]),
            esc(&row[1]),
            esc(&row[2]),
            esc(&row[3])
        );
    }
    out.push_str("</table>\n");
    for n in notes {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", esc(n));
    }
    out.push_str("<div class=\"pair\">\n");
    for (phase, label, page) in [
        ("before", "Before: policies off", before),
        ("after", "After: policies on", after),
    ] {
        let mut one = String::new();
        let _ = writeln!(
            one,
            "<section class=\"phase\" data-phase=\"{phase}\"><header><h2>{label}</h2>"
        );
        body(&mut one, page);
        one.push_str("</section>\n");
        // Both pictures define the same SVG markers; each column keeps its own.
        out.push_str(
            &one.replace("id=\"head-", &format!("id=\"{phase}-head-"))
                .replace("url(#head-", &format!("url(#{phase}-head-")),
        );
    }
    out.push_str("</div>\n");
    footer(&mut out, after);
    out.push_str("</body>\n</html>\n");
    out
}

const PAIR_CSS: &str = "
.pair{display:flex;gap:24px;align-items:flex-start}
.pair section.phase{flex:0 0 auto;zoom:.85;border:1px solid #d6dae3;border-radius:6px;padding:8px;background:#fff}
h2{font-size:18px;margin:0 0 4px}
table.difference{border-collapse:collapse;margin:8px 0;font-size:14px}
table.difference td,table.difference th{padding:3px 10px;border-bottom:1px solid #e3e6ee;text-align:right}
table.difference td:first-child{text-align:left}
p.note{margin:2px 0;font-size:12px;color:#454b5a}
";

const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:24px;color:#1d2330;background:#fbfbfd}
h1{font-size:22px;margin:0 0 6px}
header p.load{margin:2px 0;color:#454b5a;font-size:13px}
.verdict{margin:14px 0;padding:10px 14px;border-radius:8px;font-size:14px}
.verdict.pass{background:#e7f5ea;border:2px solid #2e7d32}
.verdict.fail{background:#fdecea;border:2px solid #c62828}
.verdict h2{margin:0 0 4px;font-size:18px}
.verdict.pass h2{color:#2e7d32}.verdict.fail h2{color:#c62828}
.verdict ul{margin:4px 0 0 18px;padding:0}
.verdict .why{color:#6d4c00}
.verdict .unchecked{color:#555}
.missing{margin:10px 0;padding:8px 12px;background:#fff8e1;border:1px solid #f0c040;border-radius:6px;font-size:13px}
.missing ul{margin:4px 0 0 18px;padding:0}
.legend{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0;font-size:12px;align-items:center}
.legend .arrow-key{display:inline-flex;align-items:center;gap:4px}
.legend .line{display:inline-block;width:26px;height:4px;border-radius:2px}
main{margin-top:8px}
svg.traffic{display:block}
svg text{font-size:12px;font-family:inherit}
.zones{display:grid;align-items:start}
.zone{background:#fff;border:1px solid #c9cedb;border-radius:8px;padding:8px}
.zone h3{margin:0 0 4px;font-size:16px}
.zone .share{font-size:12px;margin:2px 0}
.ok{color:#2e7d32}.bad{color:#c62828;font-weight:600}.dim{color:#6b7080}
.node{border:1px solid #b7bfd0;border-radius:6px;margin:8px 0 0;padding:6px;background:#f5f7fb}
.node.unsafe{border:2px solid #c62828;background:#fdf1f0}
.node .name{font-weight:600;font-size:13px;word-break:break-all}
.node .facts{font-size:11px;color:#555}
.node .warn{font-size:12px;color:#c62828;font-weight:600;margin-top:3px}
.node .products{font-size:12px;margin-top:3px}
.pods{display:flex;flex-wrap:wrap;gap:4px;margin-top:5px}
.pod{font-size:11px;padding:2px 6px;border-radius:10px;border:1px solid rgba(0,0,0,.25)}
.pod.notready{border-style:dashed;opacity:.6}
.cost{margin:16px 0;font-size:14px}
.cost table{border-collapse:collapse}
.cost td{padding:2px 8px}
.cost .bar{height:14px;border-radius:3px}
footer{margin-top:18px;font-size:12px;color:#6b7080;border-top:1px solid #d6dae3;padding-top:6px}
";

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The zone columns: every zone with pods, every caller zone and every zone called; sorted,
/// [`UNKNOWN_ZONE`] last.
fn zones(page: &Page) -> Vec<String> {
    let mut set: BTreeSet<(bool, String)> = BTreeSet::new();
    let mut add = |z: &str| {
        set.insert((z == UNKNOWN_ZONE, z.to_string()));
    };
    if let Some(p) = page.pods {
        p.zones.iter().for_each(|z| add(&z.zone));
    }
    if let Some(r) = page.report {
        for service in [Service::Orders, Service::Products] {
            matrix(r, service).zones.iter().for_each(|z| add(z));
        }
    }
    set.into_iter().map(|(_, z)| z).collect()
}

/// The width of each of `n` zone columns: as wide as fits a projector, within bounds.
fn column(n: usize) -> f64 {
    let n = n.max(1) as f64;
    ((FIT_WIDTH - (n - 1.0) * GAP) / n)
        .floor()
        .clamp(COLUMN_MIN, COLUMN_MAX)
}

fn grid_width(n: usize) -> f64 {
    let (col, n) = (column(n), n.max(1) as f64);
    n * col + (n - 1.0) * GAP
}

/// The middle of column `i` of `n`.
fn center(i: usize, n: usize) -> f64 {
    let col = column(n);
    i as f64 * (col + GAP) + col / 2.0
}

/// Background and text colour of a deployment's pods: a hue per service, lighter for the
/// second version.
fn colour(deployment: &str) -> (&'static str, &'static str) {
    match deployment {
        "graphql" => ("#d9c8f0", "#3b1f66"),
        "orders-1" => ("#b9d3f5", "#0d3570"),
        "orders-2" => ("#dbe9fb", "#0d3570"),
        "products-1" => ("#bfe6c4", "#124d1b"),
        "products-2" => ("#e0f4e2", "#124d1b"),
        d if d.starts_with("orders") => ("#cfe0f8", "#0d3570"),
        d if d.starts_with("products") => ("#d3efd6", "#124d1b"),
        _ => ("#e4e6ec", "#333a48"),
    }
}

fn verdict(out: &mut String, r: &Report) {
    let v = &r.verdict;
    let (class, word) = if v.pass {
        ("pass", "PASS")
    } else {
        ("fail", "FAIL")
    };
    let _ = write!(
        out,
        "<div class=\"verdict {class}\" data-verdict=\"{word}\"><h2>verdict: {word}</h2>\
         <div>orders in zone at least {}% per caller zone; products on node at least {}%; \
         failed requests at most {}%</div>",
        r.thresholds.orders_in_zone_min,
        r.thresholds.products_on_node_min,
        r.thresholds.failed_requests_max
    );
    if !v.failures.is_empty() || !v.hints.is_empty() {
        out.push_str("<ul>");
        for f in &v.failures {
            let _ = write!(out, "<li class=\"failure\">{}</li>", esc(f));
        }
        for h in &v.hints {
            let _ = write!(out, "<li class=\"why\">why: {}</li>", esc(h));
        }
        out.push_str("</ul>");
    }
    if !v.not_checked.is_empty() {
        out.push_str("<div class=\"unchecked\">not checked:<ul>");
        for n in &v.not_checked {
            let _ = write!(out, "<li>{}</li>", esc(n));
        }
        out.push_str("</ul></div>");
    }
    out.push_str("</div>\n");
}

fn legend(out: &mut String, pods: Option<&PodsReport>) {
    let mut deployments: BTreeSet<(String, String)> = BTreeSet::new();
    if let Some(p) = pods {
        for pod in p.zones.iter().flat_map(|z| &z.nodes).flat_map(|n| &n.pods) {
            let d = pod.deployment.clone().unwrap_or_else(|| "other".into());
            deployments.insert((d, pod.version.clone().unwrap_or_default()));
        }
    }
    out.push_str("<div class=\"legend\">");
    for (d, version) in &deployments {
        let (bg, fg) = colour(d);
        let _ = write!(
            out,
            "<span class=\"pod\" style=\"background:{bg};color:{fg}\">{}{}</span>",
            esc(d),
            if version.is_empty() {
                String::new()
            } else {
                format!(" {}", esc(version))
            }
        );
    }
    let _ = write!(
        out,
        "<span class=\"arrow-key\"><span class=\"line\" style=\"background:{IN_ZONE}\"></span>orders calls that stay in the zone</span>\
         <span class=\"arrow-key\"><span class=\"line\" style=\"background:{CROSS_ZONE}\"></span>orders calls to another zone (width: share of the caller zone's calls)</span>"
    );
    out.push_str("</div>\n");
}

const IN_ZONE: &str = "#2e7d32";
const CROSS_ZONE: &str = "#e65100";
const UNKNOWN_DEST: &str = "#7a7f8c";

/// The orders calls between the zone columns, as SVG arrows over the columns.
fn traffic_band(out: &mut String, r: &Report, zones: &[String]) {
    let m = matrix(r, Service::Orders);
    let index = |z: &str| zones.iter().position(|x| x == z);
    // (from column, to column, count, share text, share 0..=1)
    let mut arrows = Vec::new();
    for row in &m.rows {
        let Some(from) = index(&row.from) else {
            continue;
        };
        for (i, dest) in m.zones.iter().enumerate() {
            let count = row.counts[i];
            if count == 0 {
                continue;
            }
            let Some(to) = index(dest) else { continue };
            let share = count as f64 / row.total as f64;
            arrows.push((from, to, dest.as_str(), count, row.share(i), share));
        }
    }
    let max_span = arrows.iter().map(|a| a.0.abs_diff(a.1)).max().unwrap_or(0) as f64;
    // The curves' apex is half their control height above the baseline.
    let base = (lift(max_span.max(1.0), false) / 2.0 + 30.0).max(90.0);
    let height = base + 8.0;
    let width = grid_width(zones.len());
    let _ = writeln!(
        out,
        "<svg class=\"traffic\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"orders calls between zones\">"
    );
    out.push_str("<defs>");
    for (id, colour) in [
        ("in", IN_ZONE),
        ("cross", CROSS_ZONE),
        ("unknown", UNKNOWN_DEST),
    ] {
        let _ = write!(
            out,
            "<marker id=\"head-{id}\" viewBox=\"0 0 10 10\" refX=\"8\" refY=\"5\" markerWidth=\"12\" markerHeight=\"12\" markerUnits=\"userSpaceOnUse\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{colour}\"/></marker>"
        );
    }
    out.push_str("</defs>\n");
    if arrows.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"dim\">no orders calls measured</text>",
            width / 2.0,
            base / 2.0
        );
    }
    for (from, to, dest, count, pct, share) in &arrows {
        let stroke = 1.5 + 12.0 * share;
        let (kind, colour) = if dest == &UNKNOWN_ZONE {
            ("unknown", UNKNOWN_DEST)
        } else if from == to {
            ("in", IN_ZONE)
        } else {
            ("cross", CROSS_ZONE)
        };
        let x = center(*from, zones.len());
        let (path, lx, ly) = if from == to {
            // A loop over the column: out and back into the same zone.
            (
                format!(
                    "M{:.1},{base:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{base:.1}",
                    x - 16.0,
                    x - 46.0,
                    base - 72.0,
                    x + 46.0,
                    base - 72.0,
                    x + 16.0
                ),
                x,
                base - 60.0,
            )
        } else {
            let forward = to > from;
            let lift = lift(from.abs_diff(*to) as f64, forward);
            let (x0, x1) = if forward {
                (x + 24.0, center(*to, zones.len()) - 24.0)
            } else {
                (x - 24.0, center(*to, zones.len()) + 24.0)
            };
            let mid = (x0 + x1) / 2.0;
            (
                format!(
                    "M{x0:.1},{base:.1} Q{mid:.1},{:.1} {x1:.1},{base:.1}",
                    base - lift
                ),
                mid,
                // Under the apex of the lower arc, over the apex of the higher one.
                if forward {
                    base - lift / 2.0 + 16.0
                } else {
                    base - lift / 2.0 - 6.0
                },
            )
        };
        let from_zone = &zones[*from];
        let _ = writeln!(
            out,
            "<path class=\"arrow {kind}\" d=\"{path}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{stroke:.1}\" stroke-opacity=\"0.85\" stroke-linecap=\"round\" marker-end=\"url(#head-{kind})\" data-from=\"{}\" data-to=\"{}\"/>",
            esc(from_zone),
            esc(dest)
        );
        let _ = writeln!(
            out,
            "<text class=\"arrow-label\" x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\" fill=\"{colour}\" stroke=\"#fbfbfd\" stroke-width=\"4\" paint-order=\"stroke\" font-weight=\"600\" data-from=\"{}\" data-to=\"{}\" data-pct=\"{}\" data-count=\"{count}\">{} · {count}</text>",
            esc(from_zone),
            esc(dest),
            esc(pct),
            esc(pct)
        );
    }
    out.push_str("</svg>\n");
}

/// How high an arrow between columns `span` apart bows (its control point above the
/// baseline; the curve's apex is half of it). Every arc clears the in-zone loops' labels, and
/// calls back to a lower column arc higher, so the two arrows of a pair do not overlap.
fn lift(span: f64, forward: bool) -> f64 {
    140.0 + (span - 1.0) * 50.0 + if forward { 0.0 } else { 60.0 }
}

fn zone_column(out: &mut String, page: &Page, zone: &str) {
    let _ = write!(
        out,
        "<section class=\"zone\" data-zone=\"{}\"><h3>{}</h3>",
        esc(zone),
        esc(zone)
    );
    if let Some(r) = page.report {
        match r.zones.iter().find(|z| z.zone == zone) {
            Some(z) => {
                let t = &z.traffic;
                let min = r.thresholds.orders_in_zone_min;
                let class = match t.orders_in_zone_pct {
                    Some(p) if p < min => "bad",
                    Some(_) => "ok",
                    None => "dim",
                };
                let _ = write!(
                    out,
                    "<div class=\"share {class}\">orders in zone {} ({} of {})</div>",
                    report::share_text(t.orders_in_zone, t.orders_total),
                    t.orders_in_zone,
                    t.orders_total
                );
                match t.products_on_node {
                    Some(n) => {
                        let class = match t.products_on_node_pct {
                            Some(p) if p < r.thresholds.products_on_node_min => "bad",
                            Some(_) => "ok",
                            None => "dim",
                        };
                        let _ = write!(
                            out,
                            "<div class=\"share {class}\">products on node {} ({n} of {})</div>",
                            report::share_text(n, t.products_total),
                            t.products_total
                        );
                    }
                    None => {
                        let _ = write!(
                            out,
                            "<div class=\"share dim\">products: {} calls, {} in zone; on node not measured</div>",
                            t.products_total,
                            report::share_text(t.products_in_zone, t.products_total)
                        );
                    }
                }
            }
            None => out.push_str("<div class=\"share dim\">no callers measured here</div>"),
        }
    }
    match page.pods {
        Some(p) => {
            let nodes = p
                .zones
                .iter()
                .find(|z| z.zone == zone)
                .map_or(&[][..], |z| z.nodes.as_slice());
            if nodes.is_empty() {
                out.push_str("<div class=\"share dim\">no app pods in this zone</div>");
            }
            for n in nodes {
                node_box(out, page.report, n);
            }
        }
        None => out.push_str("<div class=\"share dim\">nodes and pods: not known</div>"),
    }
    out.push_str("</section>\n");
}

fn node_box(out: &mut String, report: Option<&Report>, n: &NodeReport) {
    let _ = write!(
        out,
        "<div class=\"node{}\" data-node=\"{}\"><div class=\"name\">{}</div><div class=\"facts\">{} · {} · {}{}</div>",
        if n.missing_local_products { " unsafe" } else { "" },
        esc(&n.name),
        esc(&n.name),
        esc(n.instance_type.as_deref().unwrap_or("-")),
        esc(n.capacity_type.as_deref().unwrap_or("-")),
        esc(&n.origin),
        if n.ready { "" } else { " · not ready" }
    );
    if n.missing_local_products {
        let clients: Vec<&str> = n
            .pods
            .iter()
            .filter(|p| {
                p.deployment
                    .as_deref()
                    .is_some_and(|d| super::placement::PRODUCTS_CLIENTS.contains(&d))
            })
            .map(|p| p.name.as_str())
            .collect();
        let _ = write!(
            out,
            "<div class=\"warn\">no local products endpoint for {}: under internalTrafficPolicy: Local their products calls are dropped</div>",
            esc(&clients.join(", "))
        );
    }
    if let Some(t) = report.and_then(|r| r.nodes.iter().find(|t| t.node == n.name)) {
        if t.products_total > 0 {
            if t.products_off_node == 0 {
                let _ = write!(
                    out,
                    "<div class=\"products ok\" data-on-node=\"{}\" data-off-node=\"0\">products calls: all {} stayed on this node</div>",
                    t.products_on_node, t.products_on_node
                );
            } else {
                let _ = write!(
                    out,
                    "<div class=\"products bad\" data-on-node=\"{}\" data-off-node=\"{}\">products calls: {} left this node ({} stayed)</div>",
                    t.products_on_node, t.products_off_node, t.products_off_node, t.products_on_node
                );
            }
        }
    }
    out.push_str("<div class=\"pods\">");
    for p in &n.pods {
        let deployment = p.deployment.as_deref().unwrap_or("other");
        let (bg, fg) = colour(deployment);
        let _ = write!(
            out,
            "<div class=\"pod{}\" data-deployment=\"{}\" style=\"background:{bg};color:{fg}\" title=\"{}{}\">{}</div>",
            if p.ready { "" } else { " notready" },
            esc(deployment),
            esc(&p.name),
            p.version
                .as_deref()
                .map(|v| format!(" ({})", esc(v)))
                .unwrap_or_default(),
            esc(&p.name)
        );
    }
    out.push_str("</div></div>");
}

fn cost(out: &mut String, r: &Report) {
    let c = &r.cost;
    let measured = c.measured_per_million;
    let top = measured
        .unwrap_or(0.0)
        .max(c.without_locality_per_million)
        .max(f64::MIN_POSITIVE);
    let bar = |v: f64, colour: &str| {
        format!(
            "<div class=\"bar\" style=\"width:{:.0}px;background:{colour}\"></div>",
            (v / top * 260.0).max(2.0)
        )
    };
    let _ = write!(
        out,
        "<div class=\"cost\"><b>Cross-AZ transfer per million requests</b> (${}/GB each way, {} bytes per request{})<table>",
        c.dollars_per_gb_each_way,
        c.bytes_per_request,
        if c.bytes_per_request_assumed {
            ", assumed"
        } else {
            ", measured"
        }
    );
    match measured {
        Some(m) => {
            let _ = write!(
                out,
                "<tr data-cost=\"measured\"><td>measured</td><td>{}</td><td>{}</td><td>{} of {} requests crossed zones</td></tr>",
                bar(m, CROSS_ZONE),
                dollars(m),
                report::share_text(c.cross_zone_requests, c.requests),
                c.requests
            );
        }
        None => out.push_str(
            "<tr data-cost=\"measured\"><td>measured</td><td></td><td>-</td><td>no requests counted</td></tr>",
        ),
    }
    let _ = write!(
        out,
        "<tr data-cost=\"even\"><td>spread evenly</td><td>{}</td><td>{}</td><td>{} of requests over {} zones</td></tr>",
        bar(c.without_locality_per_million, UNKNOWN_DEST),
        dollars(c.without_locality_per_million),
        report::share_text(c.zones_in_use.saturating_sub(1) as u64, c.zones_in_use as u64),
        c.zones_in_use
    );
    if let Some(s) = c.saving_per_million {
        let _ = write!(
            out,
            "<tr data-cost=\"saving\"><td>saving</td><td></td><td>{}</td><td></td></tr>",
            dollars(s)
        );
    }
    out.push_str("</table></div>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locality::envoy::Endpoint;
    use crate::locality::placement::{PodRow, PodsSummary, ZoneReport};
    use crate::locality::report::{analyze, CallerDump, Inputs, RequestCheck, Thresholds};
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    const ORDERS: &str = "orders-service.ecommerce.svc.cluster.local";
    const PRODUCTS: &str = "products-service.ecommerce.svc.cluster.local";
    const TH: Thresholds = Thresholds {
        orders_in_zone_min: 80.0,
        products_on_node_min: 100.0,
        failed_requests_max: 0.0,
    };

    fn zone(i: usize) -> String {
        format!("eu-west-1{}", (b'a' + i as u8) as char)
    }

    fn ep(host: &str, port: u16, ip: &str, zone: &str, rq: u64) -> Endpoint {
        Endpoint {
            cluster: format!("outbound|{port}||{host}"),
            ip: ip.parse().ok(),
            address: format!("{ip}:{port}"),
            region: Some("eu-west-1".into()),
            zone: Some(zone.into()),
            sub_zone: None,
            priority: 0,
            healthy: true,
            health_flags: "healthy".into(),
            rq_total: rq,
            rq_success: rq,
            rq_error: 0,
        }
    }

    /// `n` zones, one node each (`node-<i>`, products at 10.0.<i>.11, orders at 10.0.<i>.13),
    /// one graphql caller per zone keeping `local` of 1000 orders calls and spreading the
    /// rest evenly; products calls stay on the node unless `stray` go to the next zone's node.
    struct Scenario {
        zones: Vec<String>,
        callers: Vec<CallerDump>,
        pods: PodsReport,
        node_of_ip: BTreeMap<IpAddr, String>,
    }

    fn scenario(n: usize, local: u64, stray: u64) -> Scenario {
        let zones: Vec<String> = (0..n).map(zone).collect();
        let mut callers = Vec::new();
        let mut node_of_ip = BTreeMap::new();
        let mut zone_reports = Vec::new();
        for i in 0..n {
            let node = format!("node-{i}");
            node_of_ip.insert(format!("10.0.{i}.11").parse().unwrap(), node.clone());
            node_of_ip.insert(format!("10.0.{i}.13").parse().unwrap(), node.clone());
            let away = (1000 - local) / (n as u64 - 1);
            let mut endpoints: Vec<Endpoint> = (0..n)
                .map(|j| {
                    let rq = if i == j { local } else { away };
                    ep(ORDERS, 3003, &format!("10.0.{j}.13"), &zones[j], rq)
                })
                .collect();
            endpoints.push(ep(PRODUCTS, 3004, &format!("10.0.{i}.11"), &zones[i], 300));
            if stray > 0 {
                let j = (i + 1) % n;
                endpoints.push(ep(
                    PRODUCTS,
                    3004,
                    &format!("10.0.{j}.11"),
                    &zones[j],
                    stray,
                ));
            }
            callers.push(CallerDump {
                pod: format!("graphql-{i}"),
                zone: zones[i].clone(),
                node: Some(node.clone()),
                endpoints,
            });
            let pod = |name: String, deployment: &str, version: &str| PodRow {
                name,
                deployment: Some(deployment.into()),
                version: Some(version.into()),
                ready: true,
            };
            zone_reports.push(ZoneReport {
                zone: zones[i].clone(),
                nodes: vec![NodeReport {
                    name: node,
                    instance_type: Some("m5.large".into()),
                    capacity_type: Some("spot".into()),
                    origin: "karpenter:ecommerce".into(),
                    ready: true,
                    missing_local_products: false,
                    pods: vec![
                        pod(format!("graphql-{i}"), "graphql", "0.1.6"),
                        pod(format!("orders-1-{i}"), "orders-1", "0.2.9"),
                        pod(format!("products-1-{i}"), "products-1", "0.1.5"),
                    ],
                }],
            });
        }
        let pods = PodsReport {
            steering: Vec::new(),
            zones: zone_reports,
            unscheduled: Vec::new(),
            summary: PodsSummary {
                pods: 3 * n,
                pods_per_zone: zones.iter().map(|z| (z.clone(), 3)).collect(),
                unscheduled: 0,
                unsafe_nodes: 0,
            },
        };
        Scenario {
            zones,
            callers,
            pods,
            node_of_ip,
        }
    }

    fn report(s: &Scenario, live: bool, requests: Option<&RequestCheck>) -> Report {
        analyze(&Inputs {
            callers: &s.callers,
            orders_host: ORDERS,
            products_host: PRODUCTS,
            node_of_ip: live.then_some(&s.node_of_ip),
            zones: &s.zones,
            bytes_per_request: Some(2000),
            requests,
            thresholds: TH,
        })
    }

    fn page(s: &Scenario, r: &Report, live: bool, missing: &[String]) -> String {
        render(&Page {
            stack: "meshstack-demo",
            region: Some("eu-west-1"),
            measured_at: "2026-11-30 12:00:00 UTC",
            version: "0.1.0",
            pods: live.then_some(&s.pods),
            report: Some(r),
            load: &["sent 200 graphql queries to gateway x: 200 succeeded, 0 failed".into()],
            missing,
        })
    }

    /// `(from, to, pct, count)` of every arrow label, in page order.
    fn labels(html: &str) -> Vec<(String, String, String, u64)> {
        let attr = |tag: &str, name: &str| {
            let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            tag[start..start + tag[start..].find('"').unwrap()].to_string()
        };
        html.split("<text class=\"arrow-label\"")
            .skip(1)
            .map(|rest| {
                let tag = &rest[..rest.find('>').unwrap()];
                (
                    attr(tag, "data-from"),
                    attr(tag, "data-to"),
                    attr(tag, "data-pct"),
                    attr(tag, "data-count").parse().unwrap(),
                )
            })
            .collect()
    }

    /// No reference a browser would fetch: no URL, no script, style sheet, image, frame or
    /// font, and `url(...)` only for the page's own SVG markers.
    fn assert_self_contained(html: &str) {
        for banned in [
            "http://",
            "https://",
            "//cdn",
            "<script",
            "<link",
            "<img",
            "<iframe",
            "<object",
            "<embed",
            "@import",
            "@font-face",
            " src=",
            "href=",
        ] {
            assert!(!html.contains(banned), "{banned} in the page");
        }
        for (i, _) in html.match_indices("url(") {
            assert!(html[i..].starts_with("url(#"), "{}", &html[i..i + 20]);
        }
    }

    #[test]
    fn the_demo_page_puts_both_pictures_side_by_side_each_with_its_own_markers() {
        let (spread, home) = (scenario(3, 400, 100), scenario(3, 1000, 0));
        let (rb, ra) = (report(&spread, true, None), report(&home, true, None));
        fn of<'a>(s: &'a Scenario, r: &'a Report) -> Page<'a> {
            Page {
                stack: "meshstack-demo",
                region: Some("eu-west-1"),
                measured_at: "2026-11-30 12:00:00 UTC",
                version: "0.1.0",
                pods: Some(&s.pods),
                report: Some(r),
                load: &[],
                missing: &[],
            }
        }
        let (before, after) = (of(&spread, &rb), of(&home, &ra));
        let rows = vec![[
            "orders calls across zones".to_string(),
            "60.0%".into(),
            "0.0%".into(),
            "-60.0 pts".into(),
        ]];
        let html = render_pair(
            "meshstack-demo",
            &before,
            &after,
            &rows,
            &["at $0.01 <per GB>".into()],
            false,
        );
        assert_self_contained(&html);
        let b = html.find("data-phase=\"before\"").unwrap();
        let a = html.find("data-phase=\"after\"").unwrap();
        assert!(b < a);
        assert_eq!(html.matches("<section class=\"phase\"").count(), 2);
        // Each picture's arrows, in order, as its own page draws them.
        let mut want = labels(&render(&before));
        want.extend(labels(&render(&after)));
        assert_eq!(labels(&html), want);
        // Every SVG marker is defined once, and every arrow points at a defined one.
        let ids: Vec<&str> = html
            .split("id=\"")
            .skip(1)
            .map(|r| &r[..r.find('"').unwrap()])
            .collect();
        let unique: std::collections::BTreeSet<&&str> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
        for r in html.split("url(#").skip(1) {
            let id = &r[..r.find(')').unwrap()];
            assert!(ids.contains(&id), "{id} not defined");
        }
        assert!(html.contains("<tr data-row=\"0\"><td>orders calls across zones</td>"));
        assert!(html.contains("at $0.01 &lt;per GB&gt;"));
        assert!(html.contains("after: FAIL"));
    }

    #[test]
    fn pages_for_2_3_and_4_zones_show_each_zone_node_and_arrow() {
        for n in [2, 3, 4] {
            // Failover: everything stays home.
            let s = scenario(n, 1000, 0);
            let r = report(&s, true, None);
            let html = page(&s, &r, true, &[]);
            assert_self_contained(&html);
            assert_eq!(html.matches("<section class=\"zone\"").count(), n, "{n}");
            assert_eq!(html.matches("<div class=\"node\"").count(), n, "{n}");
            assert_eq!(html.matches("<div class=\"pod\"").count(), 3 * n, "{n}");
            let got = labels(&html);
            let want: Vec<_> = s
                .zones
                .iter()
                .map(|z| (z.clone(), z.clone(), "100.0%".to_string(), 1000))
                .collect();
            assert_eq!(got, want, "{n} zones");
            assert_eq!(html.matches("class=\"arrow cross\"").count(), 0);
            assert!(html.contains("data-verdict=\"PASS\""));
            assert_eq!(
                html.matches("products calls: all 300 stayed on this node")
                    .count(),
                n
            );
            // The grid is as wide as the SVG over it.
            let width = grid_width(n);
            assert!(html.contains(&format!("<svg class=\"traffic\" width=\"{width}\"")));
            assert!(html.contains(&format!("<main style=\"width:{width}px\">")));
        }
    }

    #[test]
    fn up_to_four_zones_fit_a_projector_and_more_get_narrower_columns() {
        assert_eq!(column(1), COLUMN_MAX);
        assert_eq!(column(3), COLUMN_MAX);
        for n in 1..=4 {
            assert!(grid_width(n) <= FIT_WIDTH, "{n}");
        }
        assert!(column(4) < COLUMN_MAX && column(5) < column(4));
        assert_eq!(column(12), COLUMN_MIN);
        assert_eq!(center(1, 3) - center(0, 3), COLUMN_MAX + GAP);
    }

    #[test]
    fn a_distribute_measurement_draws_every_zone_pair_with_the_reports_shares() {
        let s = scenario(3, 800, 0);
        let r = report(&s, true, None);
        let html = page(&s, &r, true, &[]);
        let got = labels(&html);
        assert_eq!(got.len(), 9);
        let m = matrix(&r, Service::Orders);
        for (from, to, pct, count) in &got {
            let row = m.rows.iter().find(|row| &row.from == from).unwrap();
            let col = m.zones.iter().position(|z| z == to).unwrap();
            assert_eq!(
                (pct, *count),
                (&row.share(col), row.counts[col]),
                "{from} -> {to}"
            );
            let want = if from == to { "80.0%" } else { "10.0%" };
            assert_eq!(pct, want);
        }
        assert_eq!(html.matches("class=\"arrow cross\"").count(), 6);
        // 80% in zone meets the 80% minimum.
        assert!(html.contains("data-verdict=\"PASS\""));
        assert!(html.contains("orders in zone 80.0% (800 of 1000)"));
        // The cost: 20% crossed zones; spread evenly 2 in 3 would have.
        assert!(html.contains("<tr data-cost=\"measured\">"));
        assert!(
            html.contains("15.3% of 3900 requests crossed zones"),
            "{html}"
        );
        assert!(html.contains("66.6% of requests over 3 zones"), "{html}");
    }

    #[test]
    fn an_offline_page_shows_zones_and_traffic_and_says_what_it_cannot() {
        let s = scenario(3, 1000, 0);
        let r = report(&s, false, None);
        let missing = ["nodes and pods: saved dumps carry no pod-to-node map".to_string()];
        let html = page(&s, &r, false, &missing);
        assert_self_contained(&html);
        assert_eq!(html.matches("<section class=\"zone\"").count(), 3);
        assert_eq!(html.matches("<div class=\"node").count(), 0);
        assert_eq!(labels(&html).len(), 3);
        assert!(html.contains("<b>Not shown:</b>"));
        assert!(html.contains("saved dumps carry no pod-to-node map"));
        assert!(html.contains("nodes and pods: not known"));
        assert!(html.contains("on node not measured"));
    }

    #[test]
    fn a_failing_verdict_is_red_with_its_reasons_and_stray_products_calls_are_counted() {
        let s = scenario(2, 600, 40);
        let mut check = RequestCheck {
            sent: 200,
            ..RequestCheck::default()
        };
        check.fail("connect ECONNREFUSED 10.0.0.9:3004 (at products)");
        check.finish();
        check.hints = vec!["calls to products failed: <see pods>".into()];
        let r = report(&s, true, Some(&check));
        let html = page(&s, &r, true, &[]);
        assert_self_contained(&html);
        assert!(html.contains("<div class=\"verdict fail\" data-verdict=\"FAIL\">"));
        assert!(html
            .contains("eu-west-1a: orders in zone 60.0% (600 of 1000), below the minimum of 80%"));
        assert!(html.contains("1 of 200 requests failed (0.5%)"));
        // Text from the cluster is escaped, never markup.
        assert!(html.contains("why: calls to products failed: &lt;see pods&gt;"));
        assert_eq!(
            html.matches("products calls: 40 left this node (300 stayed)")
                .count(),
            2
        );
        assert_eq!(
            html.matches("<div class=\"share bad\">").count(),
            4,
            "{html}"
        );
    }

    #[test]
    fn a_placement_page_has_nodes_and_pods_and_no_traffic() {
        let mut s = scenario(2, 1000, 0);
        s.pods.zones[1].nodes[0].missing_local_products = true;
        s.pods.zones[1].nodes[0].pods[0].name = "graphql-<1>".into();
        let html = render(&Page {
            stack: "meshstack-demo",
            region: None,
            measured_at: "2026-11-30 12:00:00 UTC",
            version: "0.1.0",
            pods: Some(&s.pods),
            report: None,
            load: &[],
            missing: &[],
        });
        assert_self_contained(&html);
        assert!(!html.contains("<svg"));
        assert!(!html.contains("data-verdict"));
        assert_eq!(html.matches("<div class=\"node unsafe\"").count(), 1);
        assert!(html.contains("no local products endpoint for graphql-&lt;1&gt;"));
        assert!(html.contains("region <b>unknown</b>"));
        assert!(html.contains("meshstack 0.1.0</footer>"));
    }
}
