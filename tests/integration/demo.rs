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
        let mut cmd = c.ms.command(&[
            "demo",
            "--stack",
            &c.stack,
            "--pause",
            "--requests",
            requests,
        ]);
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
        (5_000..README_PNG_MAX).contains(&size),
        "{} is {size} bytes; it must be under {README_PNG_MAX}",
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
