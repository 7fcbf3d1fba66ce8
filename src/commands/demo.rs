//! `meshstack demo`: the pattern before and after, for a presenter in front of a room.
//!
//! Live, on a stack that is up: the locality policies off (the `locality` stage's own objects
//! with locality load balancing disabled and products-service at `internalTrafficPolicy:
//! Cluster`, applied under the stage's field manager), a wait until every graphql and orders
//! sidecar's `/clusters` shows it, the load `verify` sends, measured as deltas over the phase;
//! then the policies on again exactly as `up` applies them (after the stage's safety check),
//! the same wait and load; then both side by side with the cross-zone GB and their monthly
//! cost ([`crate::locality::demo`]). Ending — also by Ctrl-C or an error at any point — puts
//! the policies back on, as `up` left them; `--reset` puts the "before" state back.
//!
//! Offline (`--before-dump`/`--after-dump`), the same report from saved `/clusters` dumps.
//!
//! `--compare` ([`super::compare`]): no policy, the 2023 pattern and `trafficDistribution` on
//! the same environment, plus both policies with one node's products pod scaled away.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::inspect::{check_page_path, now_utc, region, write_page};
use super::run::Interrupts;
use super::{load_stack_path, quiet, read_only_context, usage};
use crate::cli::{DemoArgs, Output};
use crate::config::{LocalityMode, Stack};
use crate::inspect::{self, Load, PageMeta, Verification, VerifyError, ORDERS_HOST, PRODUCTS_HOST};
use crate::k8s::apply;
use crate::k8s::pod_http::{PodHttp, PortForward};
use crate::locality::demo::{
    self as figures, Comparison, Expected, OrdersSeen, ProductsSeen, Profile,
};
use crate::locality::envoy;
use crate::locality::placement::Placement;
use crate::locality::report::DEFAULT_BYTES_PER_REQUEST;
use crate::stages::kubernetes::KubeAccess;
use crate::stages::locality::{self, Switch, FIELD_MANAGER};

pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack_path(args.stack.stack.as_deref())?;
    check_page_path(args.html.as_deref())?;
    if !args.rps.is_finite() || args.rps < 0.0 {
        return Err(usage(format!(
            "--rps {}: requests per second must be 0 or more",
            args.rps
        )));
    }
    if !args.before_dump.is_empty() {
        return replay(&args, &stack);
    }
    if args.compare {
        return super::compare::demo_compare(&args, &stack).await;
    }
    if !stack.locality.mode.uses_destination_rule() {
        return Err(usage(format!(
            "locality.mode: {}: the live demo switches the 2023 pattern (the orders \
             DestinationRule and internalTrafficPolicy: Local) off and on, which this mode does \
             not use; run it with `locality.mode: failover` or `distribute`, or replay saved \
             dumps with --before-dump/--after-dump",
            stack.locality.mode
        )));
    }
    let cx = read_only_context(stack.clone()).await?;
    let kube = cx.kube().await.context("connecting to the cluster")?;
    let http = PortForward {
        client: kube.client.clone(),
        timeout: inspect::HTTP_TIMEOUT,
    };
    let placement = locality::observe_placement(&kube.client).await?;
    let switch = locality::switch(&cx, &placement).await?;
    let timeout = Duration::from_secs(args.sidecar_timeout);
    if args.reset {
        set(kube, &switch, false).await?;
        let took = wait_sidecars(kube, &http, off(), timeout).await?;
        eprintln!(
            "the before state is back: locality load balancing off, products-service at \
             internalTrafficPolicy: Cluster (every sidecar showed it after {:.1} s); `meshstack \
             demo` or `meshstack up` turns the policies on again",
            took.as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Nothing changes when the after phase could not be applied as `up` applies it.
    let unsafe_nodes = placement.unsafe_nodes();
    if !unsafe_nodes.is_empty() {
        return Err(anyhow::anyhow!(locality::unsafe_message(&unsafe_nodes))
            .context("the demo would end with the policies off, so it does not start"));
    }
    if let Some(dir) = &args.save_dumps {
        private_dir(dir)?;
    }
    let interrupts = Interrupts::watch();
    let show = Show {
        args: &args,
        stack: &stack,
        kube,
        http: &http,
        switch: &switch,
        timeout,
        prompts: args.pause.then(stdin_lines),
    };
    let outcome = interrupts.unless_signalled(show.run()).await;
    // However it ended, the policies go back on, as `up` left them.
    let restored = restore(kube, &switch).await;
    match outcome {
        None => {
            restored?;
            eprintln!("stopped; the locality policies are on again, as `meshstack up` left them");
            Ok(ExitCode::from(interrupts.signalled().unwrap_or(130)))
        }
        Some(Err(e)) => {
            if let Err(r) = restored {
                eprintln!("warning: could not put the locality policies back on: {r:#}");
            }
            Err(e)
        }
        Some(Ok(code)) => {
            restored?;
            Ok(code)
        }
    }
}

/// What the sidecars show with the policies off.
fn off() -> Expected {
    Expected {
        orders: OrdersSeen::Even,
        products: ProductsSeen::Cluster,
    }
}

/// What they show with the policies on; `distribute` weighs localities, which `/clusters`
/// does not print, so only failover is waited for on the orders side.
pub(super) fn on(stack: &Stack) -> Expected {
    Expected {
        orders: match stack.locality.mode {
            LocalityMode::Failover => OrdersSeen::Failover,
            LocalityMode::Distribute | LocalityMode::TrafficDistribution => OrdersSeen::Unseen,
        },
        products: ProductsSeen::Local,
    }
}

/// Applies the policies on or off, under the `locality` stage's field manager.
async fn set(kube: &KubeAccess, switch: &Switch, policies_on: bool) -> anyhow::Result<()> {
    let objects: Vec<_> = if policies_on {
        switch
            .rule_on
            .iter()
            .chain(&switch.service_on)
            .cloned()
            .collect()
    } else {
        switch
            .rule_off
            .iter()
            .chain(&switch.service_off)
            .cloned()
            .collect()
    };
    apply::apply_all(
        &kube.client,
        kube.resolver.as_ref(),
        &objects,
        FIELD_MANAGER,
    )
    .await
    .context("applying the locality policies")?;
    Ok(())
}

/// The policies on again as `up` applies them: the rule always; products-service's
/// `internalTrafficPolicy: Local` only when the stage's safety check passes now.
async fn restore(kube: &KubeAccess, switch: &Switch) -> anyhow::Result<()> {
    apply::apply_all(
        &kube.client,
        kube.resolver.as_ref(),
        &switch.rule_on,
        FIELD_MANAGER,
    )
    .await
    .context("putting the orders DestinationRule back")?;
    let placement = locality::observe_placement(&kube.client).await?;
    let unsafe_nodes = placement.unsafe_nodes();
    if !unsafe_nodes.is_empty() {
        anyhow::bail!(locality::unsafe_message(&unsafe_nodes));
    }
    apply::apply_all(
        &kube.client,
        kube.resolver.as_ref(),
        &switch.service_on,
        FIELD_MANAGER,
    )
    .await
    .context("putting internalTrafficPolicy: Local back on products-service")?;
    Ok(())
}

/// Polls every caller sidecar's `/clusters` until each shows `expected`, starting at 100 ms
/// and backing off to 2 s; how long it took.
pub(super) async fn wait_sidecars(
    kube: &KubeAccess,
    http: &dyn PodHttp,
    expected: Expected,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let (placement, dumps) = inspect::read_sidecars(&kube.client, http).await?;
        let lag = lagging(&placement, &dumps, expected);
        if lag.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            anyhow::bail!(
                "after {} s not every sidecar shows the change: {}; check `istioctl \
                 proxy-status` (istiod may not be pushing), or raise --sidecar-timeout",
                timeout.as_secs(),
                lag.join("; ")
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// The sidecars that do not show `expected` yet, one sentence each.
fn lagging(
    placement: &Placement,
    dumps: &[crate::locality::report::CallerDump],
    expected: Expected,
) -> Vec<String> {
    let node_of_ip = placement.node_of_ip();
    let products_nodes: Vec<&str> = placement
        .pods
        .iter()
        .filter(|p| {
            p.ready
                && p.deployment
                    .as_deref()
                    .is_some_and(|d| d.starts_with("products"))
        })
        .filter_map(|p| p.node.as_deref())
        .collect();
    dumps
        .iter()
        .filter_map(|d| {
            let elsewhere = products_nodes.iter().any(|n| Some(*n) != d.node.as_deref());
            figures::sidecar_lag(
                d,
                expected,
                ORDERS_HOST,
                PRODUCTS_HOST,
                &node_of_ip,
                elsewhere,
            )
        })
        .collect()
}

/// Lines typed on stdin, read by a thread of their own (a blocked read must not keep the
/// runtime from ending); the channel closes at end of input.
pub(super) fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    rx
}

/// One live demo.
struct Show<'a> {
    args: &'a DemoArgs,
    stack: &'a Stack,
    kube: &'a KubeAccess,
    http: &'a PortForward,
    switch: &'a Switch,
    timeout: Duration,
    prompts: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
}

/// One phase's measurement and how long the sidecars took to show its policies.
struct Measured {
    verification: Verification,
    sidecars_took: Duration,
}

impl Show<'_> {
    /// Says what the next step shows and why; with `--pause`, waits for Enter (end of input
    /// goes on).
    async fn step(&mut self, line: &str) {
        say_step(&mut self.prompts, line).await;
    }

    async fn run(mut self) -> anyhow::Result<ExitCode> {
        let n = self.args.requests;
        self.step(
            "before: turning the locality policies off (orders rule without locality load \
             balancing, products-service at internalTrafficPolicy: Cluster), to show where \
             traffic goes without them",
        )
        .await;
        let before = self.phase(false).await?;
        self.emit_phase("before", &before)?;
        self.step(
            "after: turning the policies on as `meshstack up` applies them (the locality \
             stage's objects, after its safety check), to keep orders calls in their zone and \
             products calls on their node",
        )
        .await;
        let after = self.phase(true).await?;
        self.emit_phase("after", &after)?;
        self.step(&format!(
            "difference: both phases side by side ({n} queries each), with what the \
             cross-zone traffic costs a month at {} requests per second",
            self.args.rps
        ))
        .await;
        let comparison = compare(
            &before.verification,
            &after.verification,
            self.args.rps,
            self.args.bytes_per_request,
        );
        self.finish(&before.verification, &after.verification, &comparison)
    }

    async fn phase(&mut self, policies_on: bool) -> anyhow::Result<Measured> {
        let name = if policies_on { "after" } else { "before" };
        if policies_on {
            let placement = locality::observe_placement(&self.kube.client).await?;
            let unsafe_nodes = placement.unsafe_nodes();
            if !unsafe_nodes.is_empty() {
                anyhow::bail!(locality::unsafe_message(&unsafe_nodes));
            }
        }
        set(self.kube, self.switch, policies_on).await?;
        let expected = if policies_on { on(self.stack) } else { off() };
        let took = wait_sidecars(self.kube, self.http, expected, self.timeout).await?;
        self.step(&format!(
            "{name}: every sidecar shows it after {:.1} s; sending {} queries and reading every \
             sidecar's counters, to measure cross-zone orders calls, off-node products calls, \
             failures and latency over this phase only",
            took.as_secs_f64(),
            self.args.requests
        ))
        .await;
        let verification = send_load(self.kube, self.http, self.stack, self.args, name).await?;
        Ok(Measured {
            verification,
            sidecars_took: took,
        })
    }

    fn emit_phase(&self, name: &str, m: &Measured) -> anyhow::Result<()> {
        let bytes = profile_bytes(&m.verification, None, self.args.bytes_per_request).0;
        let f = phase_of(name, &m.verification, bytes);
        let mut out = std::io::stdout().lock();
        match self.args.stack.output {
            Output::Json => writeln!(
                out,
                "{}",
                serde_json::json!({
                    "phase": name,
                    "sidecars_showed_change_ms": m.sidecars_took.as_millis() as u64,
                    "figures": f,
                    "verification": m.verification,
                })
            )?,
            Output::Text => writeln!(
                out,
                "{name}: {} of {} orders calls crossed zones, {} of {} products calls left \
                 their node, {} of {} requests failed{}",
                f.orders_cross_zone,
                f.orders_calls,
                f.products_off_node
                    .map_or("?".to_string(), |n| n.to_string()),
                f.products_calls,
                f.failed.unwrap_or(0),
                f.requests,
                f.latency.map_or(String::new(), |l| format!(
                    ", p50 {:.1} ms, p99 {:.1} ms",
                    l.p50_ms, l.p99_ms
                ))
            )?,
        }
        Ok(())
    }

    fn finish(
        &self,
        before: &Verification,
        after: &Verification,
        c: &Comparison,
    ) -> anyhow::Result<ExitCode> {
        report(self.args, self.stack, before, after, c)?;
        if let Some(dir) = &self.args.save_dumps {
            eprintln!(
                "saved the phases' counters in {}; replay with: meshstack demo {}",
                dir.display(),
                replay_args(dir, before, after).join(" ")
            );
        }
        Ok(exit(c))
    }
}

/// `(bytes per request, where it came from)`: the flag, else measured (after, then before),
/// else the default.
pub(super) fn profile_bytes(
    after: &Verification,
    before: Option<&Verification>,
    flag: Option<u64>,
) -> (u64, String) {
    if let Some(b) = flag {
        return (b, "--bytes-per-request".into());
    }
    let measured = [Some(after), before]
        .into_iter()
        .flatten()
        .find_map(|v| v.traffic.as_ref().and_then(|t| t.bytes_per_request));
    match measured {
        Some(b) => (b, "measured".into()),
        None => (DEFAULT_BYTES_PER_REQUEST, "assumed, none measured".into()),
    }
}

pub(super) fn phase_of(name: &str, v: &Verification, bytes: u64) -> figures::PhaseFigures {
    let sent = v.traffic.as_ref().map(|t| (t.sent, t.failed));
    let latencies: Vec<f64> = v
        .traffic
        .as_ref()
        .map(|t| t.latencies_us.iter().map(|u| *u as f64 / 1000.0).collect())
        .unwrap_or_default();
    figures::phase_figures(name, &v.report, sent, &latencies, bytes)
}

fn compare(before: &Verification, after: &Verification, rps: f64, flag: Option<u64>) -> Comparison {
    let (bytes, from) = profile_bytes(after, Some(before), flag);
    figures::compare(
        phase_of("before", before, bytes),
        phase_of("after", after, bytes),
        Profile {
            rps,
            bytes_per_request: bytes,
            bytes_per_request_from: from,
            price: crate::prices::INTER_AZ,
        },
    )
}

/// The table (or the comparison as JSON) and the page.
fn report(
    args: &DemoArgs,
    stack: &Stack,
    before: &Verification,
    after: &Verification,
    c: &Comparison,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match args.stack.output {
        Output::Text => write!(out, "\n{}", figures::render_text(c))?,
        Output::Json => writeln!(
            out,
            "{}",
            serde_json::json!({ "phase": "difference", "comparison": c })
        )?,
    }
    drop(out);
    if let Some(path) = &args.html {
        let region = region(stack);
        let page = inspect::demo_page(
            before,
            after,
            c,
            PageMeta {
                stack: &stack.name,
                region: region.as_deref(),
                measured_at: &now_utc(),
            },
        );
        write_page(path, &page)?;
    }
    Ok(())
}

fn exit(c: &Comparison) -> ExitCode {
    if c.pass {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "the after phase misses the stack's verify thresholds: {}",
            c.after.failures.join("; ")
        );
        ExitCode::FAILURE
    }
}

/// `demo --before-dump ... --after-dump ...`: the report from saved dumps.
fn replay(args: &DemoArgs, stack: &Stack) -> anyhow::Result<ExitCode> {
    let read = |dumps: &[(String, PathBuf)]| {
        inspect::verify_offline(dumps, stack, args.bytes_per_request).map_err(|e| match e {
            VerifyError::Input(_) | VerifyError::Parse { .. } => usage(e),
            other => other.into(),
        })
    };
    let before = read(&args.before_dump)?;
    let after = read(&args.after_dump)?;
    let c = compare(&before, &after, args.rps, args.bytes_per_request);
    if args.stack.output == Output::Json {
        let mut out = std::io::stdout().lock();
        for (name, v) in [("before", &before), ("after", &after)] {
            let f = if name == "before" {
                &c.before
            } else {
                &c.after
            };
            writeln!(
                out,
                "{}",
                serde_json::json!({ "phase": name, "figures": f, "verification": v })
            )?;
        }
    }
    report(args, stack, &before, &after, &c)?;
    Ok(exit(&c))
}

/// `--save-dumps DIR`: DIR made (mode 0700 when new) and checked to be a real folder of its
/// own (`files::private_dir`).
pub(super) fn private_dir(dir: &Path) -> anyhow::Result<()> {
    crate::files::private_dir(dir)
        .map_err(|e| usage(format!("--save-dumps {}: {e}", dir.display())))
}

/// One file per caller sidecar, `ZONE--POD.clusters`, in Envoy's `/clusters` format.
/// One phase's traffic: `args.requests` queries as `verify` sends them, with a progress bar
/// on a terminal, measured over the phase; the counters saved under `--save-dumps DIR/name`.
pub(super) async fn send_load(
    kube: &KubeAccess,
    http: &PortForward,
    stack: &Stack,
    args: &DemoArgs,
    name: &str,
) -> anyhow::Result<Verification> {
    let text = args.stack.output == Output::Text && !quiet();
    let bar = if text {
        indicatif::ProgressBar::new(args.requests)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message(format!("{name}: sending requests"));
    let progress = |done: u64, _total: u64| bar.set_position(done);
    let warn = |message: String| bar.suspend(|| eprintln!("warning: {message}"));
    let result = inspect::verify_live(
        &kube.client,
        http,
        stack,
        Load {
            requests: args.requests,
            query: inspect::DEFAULT_QUERY,
            orders_products: 0,
        },
        &progress,
        &warn,
    )
    .await;
    bar.finish_and_clear();
    let verification = result.map_err(|e: VerifyError| anyhow::Error::new(e))?;
    if let Some(dir) = &args.save_dumps {
        save_dumps(&dir.join(name), &verification)?;
    }
    Ok(verification)
}

/// A step of the show: its line on stderr (also under `--quiet` when pausing); with
/// `--pause` (`prompts`), then waits for Enter (end of input goes on without waiting).
pub(super) async fn say_step(
    prompts: &mut Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
    line: &str,
) {
    if !quiet() || prompts.is_some() {
        eprintln!("> {line}");
    }
    if let Some(rx) = prompts.as_mut() {
        eprintln!("  (Enter to go on)");
        let _ = rx.recv().await;
    }
}

pub(super) fn save_dumps(dir: &Path, v: &Verification) -> anyhow::Result<()> {
    private_dir(dir)?;
    for d in &v.dumps {
        let path = dir.join(dump_name(d));
        write_private(&path, envoy::write_clusters(&d.endpoints).as_bytes())?;
    }
    Ok(())
}

fn dump_name(d: &crate::locality::report::CallerDump) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}--{}.clusters", safe(&d.zone), safe(&d.pod))
}

/// Writes a new file (mode 0600) through a temporary file and a rename, refusing a symlink
/// there (`files::write_file`).
fn write_private(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    crate::files::write_file(path, body, 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

/// The `--before-dump`/`--after-dump` arguments that replay the saved files.
fn replay_args(dir: &Path, before: &Verification, after: &Verification) -> Vec<String> {
    let mut out = Vec::new();
    for (name, v) in [("before", before), ("after", after)] {
        for d in &v.dumps {
            out.push(format!(
                "--{name}-dump {}={}",
                d.zone,
                dir.join(name).join(dump_name(d)).display()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_files_are_named_by_zone_and_pod_and_written_privately() {
        let d = crate::locality::report::CallerDump {
            pod: "graphql-5f/../x".into(),
            zone: "us-east-1a".into(),
            node: None,
            endpoints: Vec::new(),
        };
        assert_eq!(dump_name(&d), "us-east-1a--graphql-5f_.._x.clusters");
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("a.clusters");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // A symlink planted where a dump goes is refused, not followed.
        assert!(write_private(&link, b"new").is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let file = dir.path().join("b.clusters");
        write_private(&file, b"new").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // A folder that is a symlink is refused.
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        assert!(private_dir(&linked).is_err());
        assert!(private_dir(&dir.path().join("new/nested")).is_ok());
    }
}
