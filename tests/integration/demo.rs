//! `meshstack demo` through the binary: live on the local API server's stand-in mesh (whose
//! routing follows the DestinationRule and `internalTrafficPolicy` stored, see
//! `tests/support/apiserver/pods.rs`), and offline from saved dumps, with the page in
//! headless Chromium.
//!
//! The placement the server's scheduler gives the app: us-east-1a runs graphql, orders-1 and
//! products-1 (graphql's node has products-1), us-east-1b runs orders-2 and products-2. So
//! with the policies off, graphql's orders calls alternate between the zones (half cross) and
//! products calls spread over both products pods; with them on, none cross and none leave
//! the node.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use serde_json::Value;

use crate::binary_k8s::{json_lines, Cluster};
use crate::support::apiserver::Options;
use crate::support::browser::Browser;
use crate::support::{describe, Meshstack};

fn rules(c: &Cluster) -> Api<DynamicObject> {
    Api::namespaced_with(
        c.server.store(),
        "ecommerce",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "networking.istio.io",
            "v1beta1",
            "DestinationRule",
        )),
    )
}

/// The stored policies: the rule's `localityLbSetting` (`null` without a rule) and
/// products-service's `internalTrafficPolicy`.
fn stored(c: &Cluster) -> (Value, Value) {
    let rule = c
        .server
        .block_on(rules(c).get_opt("orders-destination-rule"))
        .unwrap();
    let setting = rule.map_or(Value::Null, |r| {
        r.data["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"].clone()
    });
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(c.server.store(), "ecommerce");
    let svc = c.server.block_on(services.get("products-service")).unwrap();
    (
        setting,
        Value::from(svc.spec.unwrap().internal_traffic_policy),
    )
}

fn assert_policies_on(c: &Cluster) {
    let (setting, itp) = stored(c);
    assert_eq!(setting, serde_json::json!({"enabled": true}));
    assert_eq!(itp, "Local");
    let out = c.run("status", &[]);
    assert!(out.status.success(), "status: {}", describe(&out));
}

/// What the stand-in mesh routed, from its counters: (orders calls that crossed zones,
/// products calls that left the caller's node).
fn routed(c: &Cluster) -> (u64, u64) {
    use crate::support::apiserver::pods::{ORDERS_CLUSTER, PRODUCTS_CLUSTER};
    let objects = c.server.objects();
    let zone_of_node = |node: &str| {
        objects[&format!("Node {node}")]["metadata"]["labels"]["topology.kubernetes.io/zone"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (mut node_of_ip, mut node_of_pod) = (
        std::collections::BTreeMap::new(),
        std::collections::BTreeMap::new(),
    );
    for (key, pod) in objects.range("Pod ecommerce/".to_string().."Pod ecommerce0".to_string()) {
        let node = pod["spec"]["nodeName"].as_str().unwrap().to_string();
        node_of_ip.insert(
            pod["status"]["podIP"].as_str().unwrap().to_string(),
            node.clone(),
        );
        node_of_pod.insert(key.trim_start_matches("Pod ecommerce/").to_string(), node);
    }
    let (mut orders_cross, mut products_off) = (0, 0);
    for (caller, counters) in c.server.mesh().counters() {
        let from = &node_of_pod[&caller];
        for ((cluster, ip), n) in counters {
            let to = &node_of_ip[&ip];
            if cluster == ORDERS_CLUSTER && zone_of_node(to) != zone_of_node(from) {
                orders_cross += n;
            }
            if cluster == PRODUCTS_CLUSTER && to != from {
                products_off += n;
            }
        }
    }
    (orders_cross, products_off)
}

/// The three JSON objects `demo -o json` streams: before, after, difference.
fn phases(out: &std::process::Output) -> (Value, Value, Value) {
    let lines = json_lines(out);
    let find = |p: &str| {
        lines
            .iter()
            .find(|l| l["phase"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("no {p} phase in {}", describe(out)))
    };
    (find("before"), find("after"), find("difference"))
}

#[test]
fn demo_shows_the_spread_before_and_the_locality_after_and_ends_with_the_policies_on() {
    let c = Cluster::start("show", Options::default());
    c.up();
    let page = c.ms.dir.path().join("demo.html");
    let dumps = c.ms.dir.path().join("dumps");
    c.server.reset_counts();
    let started = Instant::now();
    let out = c.run(
        "demo",
        &[
            "--requests",
            "60",
            "--html",
            page.to_str().unwrap(),
            "--save-dumps",
            dumps.to_str().unwrap(),
            "--rps",
            "1000",
        ],
    );
    let took = started.elapsed();
    let counts = c.server.counts();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // The policies off (rule, Service) and on again: four patches, nothing else written (the
    // final restore finds them on already and writes nothing).
    assert_eq!(counts.writes.len(), 4, "{:?}", counts.writes);
    for object in [
        "/services/products-service",
        "/destinationrules/orders-destination-rule",
    ] {
        let n = counts
            .writes
            .iter()
            .filter(|w| w.starts_with("PATCH ") && w.ends_with(object))
            .count();
        assert_eq!(n, 2, "{object}: {:?}", counts.writes);
    }
    let (before, after, diff) = phases(&out);
    let (b, a) = (&before["figures"], &after["figures"]);
    // Before: graphql's orders calls alternate over the zones; products spread off the node.
    assert_eq!(b["requests"], 60, "{b}");
    assert_eq!(b["orders_calls"], 60, "{b}");
    assert_eq!(b["orders_cross_zone"], 30, "{b}");
    assert_eq!(b["failed"], 0, "{b}");
    let off = b["products_off_node"].as_u64().unwrap();
    let total = b["products_calls"].as_u64().unwrap();
    // graphql twice per query, orders-2 once per call it gets.
    assert_eq!(total, 60 * 2 + 30, "{b}");
    assert!(off > 0 && off < total, "{b}");
    assert!(b["latency"]["p99_ms"].as_f64().unwrap() > 0.0, "{b}");
    // After: nothing crosses, nothing leaves the node, nothing fails.
    assert_eq!(a["orders_cross_zone"], 0, "{a}");
    assert_eq!(a["products_off_node"], 0, "{a}");
    assert_eq!(a["failed"], 0, "{a}");
    assert_eq!(a["cross_zone_gb_per_million"], 0.0, "{a}");
    assert_eq!(a["pass"], true, "{a}");
    let c_ = &diff["comparison"];
    let gb_before = c_["before"]["cross_zone_gb_per_million"].as_f64().unwrap();
    assert!(gb_before > 0.0, "{c_}");
    // The monthly figure is the GB at 1000 rps, 730 h, $0.01/GB each way.
    let want = gb_before * 1000.0 * 3600.0 * 730.0 / 1e6 * 0.02;
    let saving = c_["monthly_saving"].as_f64().unwrap();
    assert!((saving - want).abs() < 1e-6, "{saving} vs {want}: {c_}");
    assert_eq!(c_["profile"]["price"]["dollars_per_gb_each_way"], 0.01);
    assert!(before["sidecars_showed_change_ms"].is_u64(), "{before}");
    // The figures are the stand-in's routing: what its sidecars counted (this demo's traffic
    // only, both phases), placed by the stored pods and nodes.
    let (orders_cross, products_off) = routed(&c);
    assert_eq!(
        orders_cross, 30,
        "orders calls the stand-in sent across zones"
    );
    assert_eq!(
        products_off, off,
        "products calls the stand-in sent off the node"
    );

    // The page: both pictures, the difference.
    let html = std::fs::read_to_string(&page).unwrap();
    for part in [
        "data-phase=\"before\"",
        "data-phase=\"after\"",
        "table class=\"difference\"",
        "saves $",
    ] {
        assert!(html.contains(part), "{part} not in the page");
    }

    // Ended as `up` left it: policies on, status clean.
    assert_policies_on(&c);

    // The saved dumps replay to the same orders figures, offline.
    let mut args: Vec<String> = vec!["demo".into(), "-o".into(), "json".into()];
    for phase in ["before", "after"] {
        for f in std::fs::read_dir(dumps.join(phase)).unwrap() {
            let f = f.unwrap().path();
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                f.metadata().unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                f.display()
            );
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let zone = name.split("--").next().unwrap().to_string();
            args.push(format!("--{phase}-dump"));
            args.push(format!("{zone}={}", f.display()));
        }
    }
    let replay = Meshstack::new(None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = replay.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (rb, ra, _) = phases(&out);
    assert_eq!(rb["figures"]["orders_cross_zone"], 30, "{rb}");
    assert_eq!(rb["figures"]["orders_calls"], 60, "{rb}");
    assert_eq!(ra["figures"]["orders_cross_zone"], 0, "{ra}");
    eprintln!(
        "demo of 2 x 60 queries: {took:?}; sidecars showed the change after {} ms (before) and \
         {} ms (after); API requests {} ({} port-forwards, {} writes): {:?}",
        before["sidecars_showed_change_ms"],
        after["sidecars_showed_change_ms"],
        counts.requests(),
        counts.verb("portforward"),
        counts.writes.len(),
        counts.by_verb
    );
}

#[test]
fn reset_puts_the_before_state_back_and_a_rerun_gives_the_same_report() {
    let c = Cluster::start("again", Options::default());
    c.up();
    let first = c.run("demo", &["--requests", "40"]);
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    let out = c.run("demo", &["--reset"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (setting, itp) = stored(&c);
    assert_eq!(setting, serde_json::json!({"enabled": false}));
    assert_eq!(itp, "Cluster");
    // With the policies off, verify sees the spread and fails.
    let out = c.run("verify", &["--requests", "20"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let second = c.run("demo", &["--requests", "40"]);
    assert_eq!(second.status.code(), Some(0), "{}", describe(&second));
    let figures = |out: &std::process::Output| {
        let (b, a, _) = phases(out);
        let keep = |f: &Value| {
            let mut f = f["figures"].clone();
            f.as_object_mut().unwrap().remove("latency");
            f
        };
        (keep(&b), keep(&a))
    };
    assert_eq!(figures(&first), figures(&second));
    assert_policies_on(&c);
}

/// A running `demo --pause`: its stderr lines, and Enter on its stdin.
struct Paused {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Paused {
    fn start(c: &Cluster, requests: &str) -> Paused {
        Paused::start_with(c, requests, &[])
    }

    fn start_with(c: &Cluster, requests: &str, extra: &[&str]) -> Paused {
        let mut args = vec![
            "demo",
            "--stack",
            &c.stack,
            "--pause",
            "--requests",
            requests,
        ];
        args.extend_from_slice(extra);
        let mut cmd = c.ms.command(&args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Paused {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the step line starting with `prefix` (after `> `).
    fn until_step(&mut self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.starts_with(&format!("> {prefix}"));
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no step `{prefix}` within 60 s: {:#?}", self.seen),
            }
        }
    }

    fn enter(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn interrupt(&self) {
        let status = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Exit code and the rest of stderr.
    fn wait(mut self) -> (Option<i32>, Vec<String>, String) {
        let status = self.child.wait().unwrap();
        let mut stdout = String::new();
        use std::io::Read as _;
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        self.seen.extend(self.lines.try_iter());
        (status.code(), self.seen, stdout)
    }
}

#[test]
fn ctrl_c_in_either_phase_puts_the_policies_back_on() {
    let c = Cluster::start("interrupted", Options::default());
    c.up();
    // Before: stopped at the step after the policies went off and the sidecars showed it.
    let mut demo = Paused::start(&c, "20");
    demo.until_step("before: turning");
    demo.enter();
    demo.until_step("before: every sidecar shows it");
    let (setting, itp) = stored(&c);
    assert_eq!(
        (setting, itp),
        (serde_json::json!({"enabled": false}), "Cluster".into())
    );
    demo.interrupt();
    let (code, lines, _) = demo.wait();
    assert_eq!(code, Some(130), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("policies are on again")),
        "{lines:#?}"
    );
    assert_policies_on(&c);

    // After: stopped once the after phase has put them on, before its traffic.
    let mut demo = Paused::start(&c, "20");
    for step in ["before: turning", "before: every sidecar", "after: turning"] {
        demo.until_step(step);
        demo.enter();
    }
    demo.until_step("after: every sidecar shows it");
    demo.interrupt();
    let (code, lines, _) = demo.wait();
    assert_eq!(code, Some(130), "{lines:#?}");
    assert_policies_on(&c);
}

#[test]
fn the_rule_deleted_during_the_after_phase_fails_it_with_the_reason() {
    let c = Cluster::start("sabotaged", Options::default());
    c.up();
    let mut demo = Paused::start(&c, "40");
    for step in ["before: turning", "before: every sidecar", "after: turning"] {
        demo.until_step(step);
        demo.enter();
    }
    demo.until_step("after: every sidecar shows it");
    c.server
        .block_on(rules(&c).delete("orders-destination-rule", &DeleteParams::default()))
        .unwrap();
    demo.enter();
    demo.until_step("difference");
    demo.enter();
    let (code, lines, stdout) = demo.wait();
    assert_eq!(code, Some(1), "{lines:#?}\n{stdout}");
    let reason = lines
        .iter()
        .find(|l| l.contains("misses the stack's verify thresholds"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(reason.contains("us-east-1a"), "{reason}");
    assert!(stdout.contains("after: FAIL"), "{stdout}");
    // The rule is back, as `up` left it.
    assert_policies_on(&c);
}

fn fixture(file: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/locality")
        .join(file)
        .display()
        .to_string()
}

/// Before: the seed's rule seen from af-south-1b; after: failover from af-south-1a and the
/// IPv6 dump from af-south-1c (the fixtures `verify --clusters-dump` is tested with).
fn replay_args(page: &Path) -> Vec<String> {
    vec![
        "demo".into(),
        "--before-dump".into(),
        format!("af-south-1b={}", fixture("clusters-graphql-1b-seed.txt")),
        "--after-dump".into(),
        format!(
            "af-south-1a={}",
            fixture("clusters-graphql-1a-failover.txt")
        ),
        "--after-dump".into(),
        format!("af-south-1c={}", fixture("clusters-ipv6.txt")),
        "--bytes-per-request".into(),
        "1000".into(),
        "--html".into(),
        page.display().to_string(),
    ]
}

#[tokio::test]
async fn the_replay_from_fixture_dumps_gives_fixed_numbers_and_a_page_a_browser_draws() {
    let ms = Meshstack::new(None);
    let page = ms.dir.path().join("replay.html");
    let args = replay_args(&page);
    let mut json: Vec<&str> = args.iter().map(String::as_str).collect();
    json.extend(["-o", "json"]);
    let out = ms.run(&json);
    let (before, after, diff) = phases(&out);
    let text_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = ms.run(&text_args);
    let stdout = String::from_utf8_lossy(&text.stdout).to_string();
    eprintln!("{stdout}");
    // Pinned from the fixtures' counters.
    let b = &before["figures"];
    let a = &after["figures"];
    let fixed = serde_json::json!({
        "before": [b["orders_calls"], b["orders_cross_zone"], b["cross_zone_calls"]],
        "after": [a["orders_calls"], a["orders_cross_zone"], a["cross_zone_calls"]],
        "pass": diff["comparison"]["pass"],
    });
    assert_eq!(
        fixed,
        serde_json::json!({
            // The seed's rule: 900 of 1000 orders calls from af-south-1b left it; 1202 of
            // its orders and products calls crossed zones.
            "before": [1000, 900, 1202],
            // Failover from 1a and 1c: 8 of 1316 crossed zones (failed over).
            "after": [1316, 8, 8],
            "pass": true,
        }),
        "{stdout}"
    );
    assert_eq!(
        out.status.code(),
        Some(if diff["comparison"]["pass"] == true {
            0
        } else {
            1
        }),
        "{}",
        describe(&out)
    );
    assert!(
        stdout.contains("cross-zone GB per million requests"),
        "{stdout}"
    );
    assert!(stdout.contains("2026-11-30"), "{stdout}");

    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(README_PNG);
    let Some(mut browser) = Browser::start().await else {
        // Skipped on purpose (MESHSTACK_NO_BROWSER=1); the committed picture is still checked.
        check_png(&committed);
        return;
    };
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/verify-pages/demo.png");
    let (loaded, probed) = browser.load(&page, 1920, PROBE, &shot).await;
    assert!(
        loaded.console_errors.is_empty(),
        "{:?}",
        loaded.console_errors
    );
    assert!(loaded.requests.is_empty(), "{:?}", loaded.requests);
    assert_eq!(
        probed["phases"],
        serde_json::json!(["before", "after"]),
        "{probed}"
    );
    assert_eq!(probed["visible"], true, "{probed}");
    assert_eq!(probed["side_by_side"], true, "{probed}");
    assert!(
        probed["saving"].as_str().unwrap().contains("saves $"),
        "{probed}"
    );
    assert_eq!(probed["scripts"], 0, "{probed}");
    assert_eq!(probed["fits"], true, "{probed}");
    // The README's picture is this page, as drawn here.
    if std::env::var("MESHSTACK_BLESS").as_deref() == Ok("1") {
        std::fs::copy(&shot, &committed).unwrap();
    }
    check_png(&committed);
}

/// The README's picture of the demo page, and its size limit.
const README_PNG: &str = "docs/demo-page.png";
const README_PNG_MAX: u64 = 300 * 1024;

fn check_png(path: &Path) {
    check_png_under(path, README_PNG_MAX);
}

fn check_png_under(path: &Path, max: u64) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `MESHSTACK_BLESS=1 cargo test --test integration demo::the_replay` \
             to draw it",
            path.display()
        )
    });
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    let size = bytes.len() as u64;
    assert!(
        (5_000..max).contains(&size),
        "{} is {size} bytes; it must be under {max}",
        path.display()
    );
}

const PROBE: &str = r#"(() => {
  const phases = [...document.querySelectorAll('section.phase')];
  const sized = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const [b, a] = phases.map(p => p.getBoundingClientRect());
  const rows = [...document.querySelectorAll('table.difference tr[data-row]')];
  const saving = rows.map(r => r.textContent).find(t => t.includes('a month')) || '';
  return {
    phases: phases.map(p => p.dataset.phase),
    visible: phases.length === 2 && phases.every(sized)
      && phases.every(p => p.querySelectorAll('section.zone').length > 0),
    side_by_side: !!(a && b && a.left >= b.right && Math.abs(a.top - b.top) < 2),
    saving,
    scripts: document.scripts.length,
    // Both columns fit a 1920-pixel projector.
    fits: document.documentElement.scrollWidth <= window.innerWidth,
  };
})()"#;

/// The live demo switches the 2023 pattern; a stack on Kubernetes' own field is told so before
/// anything is read or written (its saved dumps still replay).
#[test]
fn a_traffic_distribution_stack_is_refused_live_and_replays() {
    let ms = Meshstack::new(None);
    let stack = ms.stack_file(
        "td.yaml",
        "name: td\nistio: {version: 1.30.3}\nlocality: {mode: traffic-distribution}\n",
    );
    let stack = stack.to_str().unwrap();
    let out = ms.run(&["demo", "--stack", stack]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locality.mode: traffic-distribution"), "{err}");
    assert!(err.contains("--before-dump"), "{err}");
    let page = ms.dir.path().join("td.html");
    let mut args = replay_args(&page);
    args.extend(["--stack".to_string(), stack.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ms.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

/// `trafficDistribution` of the two Services as stored (`null` when absent).
fn distribution_stored(c: &Cluster) -> (Value, Value) {
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(c.server.store(), "ecommerce");
    let field = |name: &str| {
        let svc = c.server.block_on(services.get(name)).unwrap();
        serde_json::to_value(svc.spec.unwrap())
            .unwrap()
            .get("trafficDistribution")
            .cloned()
            .unwrap_or(Value::Null)
    };
    (field("orders-service"), field("products-service"))
}

/// The objects `demo --compare -o json` streams, by phase.
fn compare_phases(out: &std::process::Output) -> BTreeMap<String, Value> {
    json_lines(out)
        .into_iter()
        .filter_map(|l| Some((l["phase"].as_str()?.to_string(), l)))
        .collect()
}

use std::collections::BTreeMap;

const COMPARE_PROBE: &str = r#"(() => {
  const phases = [...document.querySelectorAll('section.phase')];
  const sized = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const rows = [...document.querySelectorAll('table.difference tr[data-row]')];
  const first = phases.slice(0, 3).map(p => p.getBoundingClientRect());
  return {
    phases: phases.map(p => p.dataset.phase),
    visible: phases.length > 0 && phases.every(sized)
      && phases.every(p => p.querySelectorAll('section.zone').length > 0),
    // The three modes side by side in one row.
    one_row: first.length === 3 && first[1].left >= first[0].right && first[2].left >= first[1].right
      && Math.abs(first[0].top - first[2].top) < 2,
    columns: document.querySelectorAll('table.difference tr:first-child th').length,
    failed_row: (rows.map(r => [...r.cells].map(c => c.textContent))
      .find(r => r[0] === 'failed requests') || []),
    scripts: document.scripts.length,
    fits: document.documentElement.scrollWidth <= window.innerWidth,
  };
})()"#;

/// The stand-in's placement: graphql with products-1 on us-east-1a's node, orders-2 with
/// products-2 on us-east-1b's. No policy spreads orders and products calls; the 2023 pattern
/// and trafficDistribution keep both local. With products-1 scaled away, `Local` fails every
/// query (graphql calls products twice per query, and its node has none) and
/// `PreferSameNode` sends those calls to products-2, across zones, failing none.
#[test]
fn compare_measures_the_three_modes_and_the_node_without_products_and_ends_as_up_left_it() {
    let c = Cluster::start("compare", Options::default());
    // trafficDistribution needs Istio 1.27+ (the default 1.18.7 is refused, below).
    std::fs::write(
        &c.stack,
        "name: compare\nregion: us-east-1\nkubernetes_version: \"1.36\"\n\
         istio: {version: 1.30.3}\n",
    )
    .unwrap();
    c.up();
    let page = c.ms.dir.path().join("compare.html");
    c.server.reset_counts();
    let started = Instant::now();
    let out = c.run(
        "demo",
        &[
            "--compare",
            "--requests",
            "60",
            "--html",
            page.to_str().unwrap(),
            "--rps",
            "1000",
        ],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let p = compare_phases(&out);
    let f = |id: &str| {
        p.get(id)
            .unwrap_or_else(|| panic!("no {id} in {}", describe(&out)))["figures"]
            .clone()
    };
    let (none, pattern, td) = (f("none"), f("pattern-2023"), f("traffic-distribution"));
    let (pattern_gone, td_gone) = (
        f("pattern-2023-products-gone"),
        f("traffic-distribution-products-gone"),
    );
    // No policy: half of graphql's orders calls cross; products calls spread over both pods.
    assert_eq!(none["orders_cross_zone"], 30, "{none}");
    let none_off = none["products_off_node"].as_u64().unwrap();
    assert!(
        none_off > 0 && none_off < none["products_calls"].as_u64().unwrap(),
        "{none}"
    );
    assert_eq!(none["failed"], 0, "{none}");
    // Both policies with every pod in place: all local, nothing failed.
    for (name, x) in [("2023", &pattern), ("td", &td)] {
        assert_eq!(x["orders_cross_zone"], 0, "{name}: {x}");
        assert_eq!(x["products_off_node"], 0, "{name}: {x}");
        assert_eq!(x["products_calls"], 120, "{name}: {x}");
        assert_eq!(x["failed"], 0, "{name}: {x}");
        assert_eq!(x["cross_zone_gb_per_million"], 0.0, "{name}: {x}");
        assert_eq!(x["pass"], true, "{name}: {x}");
    }
    // products-1 gone from graphql's node: Local drops every graphql products call, so every
    // query fails; PreferSameNode sends them to products-2 on the other node, none failing.
    assert_eq!(pattern_gone["failed"], 60, "{pattern_gone}");
    assert_eq!(pattern_gone["products_calls"], 0, "{pattern_gone}");
    assert_eq!(td_gone["failed"], 0, "{td_gone}");
    assert_eq!(td_gone["products_calls"], 120, "{td_gone}");
    assert_eq!(td_gone["products_off_node"], 120, "{td_gone}");
    assert_eq!(td_gone["orders_cross_zone"], 0, "{td_gone}");
    let node = p["pattern-2023-products-gone"]["products_gone_from"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        p["traffic-distribution-products-gone"]["products_gone_from"],
        node.as_str()
    );
    assert!(p["none"]["products_gone_from"].is_null());
    // The comparison: one column per phase, the three modes first, costed alike.
    let cmp = &p["comparison"]["comparison"];
    let ids: Vec<&str> = cmp["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "none",
            "pattern-2023",
            "traffic-distribution",
            "pattern-2023-products-gone",
            "traffic-distribution-products-gone"
        ]
    );
    assert_eq!(cmp["pass"], true, "{cmp}");
    let none_gb = cmp["phases"][0]["figures"]["cross_zone_gb_per_million"]
        .as_f64()
        .unwrap();
    let monthly = cmp["phases"][0]["monthly"].as_f64().unwrap();
    let want = none_gb * 1000.0 * 3600.0 * 730.0 / 1e6 * 0.02;
    assert!(none_gb > 0.0 && (monthly - want).abs() < 1e-6, "{cmp}");
    assert_eq!(cmp["phases"][1]["monthly"], 0.0, "{cmp}");
    // The figures are the stand-in's routing, over every phase.
    let (orders_cross, products_off) = routed(&c);
    assert_eq!(orders_cross, 30);
    assert_eq!(products_off, none_off + 120);
    // products-1 was scaled away and back; no other Deployment was touched.
    let counts = c.server.counts();
    let scaled: Vec<&String> = counts
        .writes
        .iter()
        .filter(|w| w.contains("/deployments/"))
        .collect();
    assert_eq!(scaled.len(), 2, "{:?}", counts.writes);
    assert!(
        scaled
            .iter()
            .all(|w| w.ends_with("/deployments/products-1")),
        "{scaled:?}"
    );

    // Ended as `up` left it: the 2023 pattern on, no trafficDistribution, every pod back,
    // status clean.
    assert_eq!(distribution_stored(&c), (Value::Null, Value::Null));
    let objects = c.server.objects();
    assert!(
        objects
            .keys()
            .any(|k| k.starts_with("Pod ecommerce/products-1-")),
        "products-1's pod is back"
    );
    assert_policies_on(&c);

    // The text table.
    let text =
        c.ms.run(&["demo", "--stack", &c.stack, "--compare", "--requests", "20"]);
    assert_eq!(text.status.code(), Some(0), "{}", describe(&text));
    let stdout = String::from_utf8_lossy(&text.stdout);
    for part in [
        "no policy",
        "2023 pattern",
        "trafficDistribution, products gone",
        "orders calls in the caller's zone",
        "failed requests",
        "20 of 20",
        "0 of 20",
        &format!("products pod on {node}"),
        "PASS",
    ] {
        assert!(stdout.contains(part), "{part} missing from\n{stdout}");
    }
    assert_policies_on(&c);
    eprintln!("{stdout}\ndemo --compare of 5 x 60 queries: {took:?}");

    // The page, in a browser: five pictures, the three modes in one row.
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("data-phase=\"traffic-distribution\""));
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(COMPARE_PNG);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let Some(mut browser) = Browser::start().await else {
            check_png_under(&committed, COMPARE_PNG_MAX);
            return;
        };
        let shot =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/verify-pages/compare.png");
        let (loaded, probed) = browser.load(&page, 1920, COMPARE_PROBE, &shot).await;
        assert!(
            loaded.console_errors.is_empty(),
            "{:?}",
            loaded.console_errors
        );
        assert!(loaded.requests.is_empty(), "{:?}", loaded.requests);
        assert_eq!(probed["phases"], serde_json::json!(ids), "{probed}");
        assert_eq!(probed["visible"], true, "{probed}");
        assert_eq!(probed["one_row"], true, "{probed}");
        assert_eq!(probed["columns"], 6, "{probed}");
        assert_eq!(
            probed["failed_row"],
            serde_json::json!([
                "failed requests",
                "0 of 60",
                "0 of 60",
                "0 of 60",
                "60 of 60",
                "0 of 60"
            ]),
            "{probed}"
        );
        assert_eq!(probed["scripts"], 0, "{probed}");
        assert_eq!(probed["fits"], true, "{probed}");
        // The README's picture is this page, as drawn here.
        if std::env::var("MESHSTACK_BLESS").as_deref() == Ok("1") {
            std::fs::copy(&shot, &committed).unwrap();
        }
        check_png_under(&committed, COMPARE_PNG_MAX);
    });
}

/// The README's picture of the `--compare` page (five pictures: a larger limit).
const COMPARE_PNG: &str = "docs/compare-page.png";
const COMPARE_PNG_MAX: u64 = 400 * 1024;

/// A traffic-distribution stack compares too, and ends in its own mode: no rule, no `Local`,
/// both Services' `trafficDistribution` back.
#[test]
fn compare_on_a_traffic_distribution_stack_ends_in_that_mode() {
    let c = Cluster::start("compare-td", Options::default());
    std::fs::write(
        &c.stack,
        "name: compare-td\nregion: us-east-1\nkubernetes_version: \"1.36\"\n\
         istio: {version: 1.30.3}\nlocality: {mode: traffic-distribution}\n",
    )
    .unwrap();
    c.up();
    let out = c.run("demo", &["--compare", "--requests", "20"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let p = compare_phases(&out);
    assert_eq!(p["pattern-2023-products-gone"]["figures"]["failed"], 20);
    assert_eq!(
        p["traffic-distribution-products-gone"]["figures"]["failed"],
        0
    );
    assert_eq!(
        distribution_stored(&c),
        (Value::from("PreferSameZone"), Value::from("PreferSameNode"))
    );
    let (setting, itp) = stored(&c);
    assert_eq!(setting, Value::Null, "the orders rule is gone");
    assert_ne!(itp, "Local");
    let out = c.run("status", &[]);
    assert!(out.status.success(), "status: {}", describe(&out));
}

/// Versions that cannot run trafficDistribution: refused before anything is read or written.
#[test]
fn compare_is_refused_where_traffic_distribution_cannot_run() {
    let ms = Meshstack::new(None);
    let stack = ms.stack_file(
        "old.yaml",
        "name: old\nregion: us-east-1\nkubernetes_version: \"1.34\"\n",
    );
    let out = ms.run(&["demo", "--compare", "--stack", stack.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--compare"), "{err}");
    assert!(err.contains("1.35"), "{err}");
    assert!(err.contains("1.34"), "{err}");
    // Kubernetes new enough, Istio (the default 1.18.7) not.
    let stack = ms.stack_file(
        "old-istio.yaml",
        "name: old\nregion: us-east-1\nkubernetes_version: \"1.36\"\n",
    );
    let out = ms.run(&["demo", "--compare", "--stack", stack.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Istio 1.27"), "{err}");
    assert!(err.contains("1.18.7"), "{err}");
}

/// Ctrl-C while a node's products pod is scaled away: the pod comes back and the stack's
/// policies go on again, `status` clean.
#[test]
fn ctrl_c_while_the_products_pod_is_gone_brings_it_back() {
    let c = Cluster::start("compare-stopped", Options::default());
    std::fs::write(
        &c.stack,
        "name: compare-stopped\nregion: us-east-1\nkubernetes_version: \"1.36\"\n\
         istio: {version: 1.30.3}\n",
    )
    .unwrap();
    c.up();
    let mut demo = Paused::start_with(&c, "10", &["--compare"]);
    for step in [
        "no policy: no policy",
        "no policy: every sidecar",
        "2023 pattern: the 2023",
        "2023 pattern: every sidecar",
        "products gone: scaling",
    ] {
        demo.until_step(step);
        demo.enter();
    }
    demo.until_step("products gone: no pod of products-1");
    let products_1 = |c: &Cluster| {
        c.server
            .objects()
            .keys()
            .any(|k| k.starts_with("Pod ecommerce/products-1-"))
    };
    assert!(
        !products_1(&c),
        "products-1's pod is gone while the demo waits"
    );
    demo.interrupt();
    let (code, lines, _) = demo.wait();
    assert_eq!(code, Some(130), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("every products pod is back")),
        "{lines:#?}"
    );
    assert!(products_1(&c), "products-1's pod is back");
    assert_eq!(distribution_stored(&c), (Value::Null, Value::Null));
    assert_policies_on(&c);
}
