//! `meshstack demo --compare`: the three locality modes on one environment, same traffic.
//!
//! 1. **no policy**: the orders rule with locality load balancing disabled, products-service at
//!    `internalTrafficPolicy: Cluster`, no `trafficDistribution`;
//! 2. **the 2023 pattern**: the `locality` stage's orders DestinationRule (failover, or the
//!    stack's `distribute`) and `internalTrafficPolicy: Local`, after the stage's safety check;
//! 3. then one node that runs a products client (graphql's, when it can) loses its products
//!    pod — its products Deployment scaled to zero, which a real cluster and the test's
//!    stand-in both honour — and the 2023 pattern is measured again: `Local` drops that node's
//!    products calls;
//! 4. **trafficDistribution** with that pod still gone (the rule deleted, the Services'
//!    `PreferSameZone`/`PreferSameNode`, no `Local`): the calls fall back to another node;
//! 5. the products pod back (the Deployment at its replicas again, Ready), trafficDistribution
//!    measured with every pod in place.
//!
//! Each switch leaves nothing of the previous phase's objects (the rule deleted, the field
//! taken off, as the `locality` stage switches modes), and each phase waits until every
//! caller sidecar's `/clusters` shows its policies. Ending — also by Ctrl-C or an error — puts
//! the products pod back and the stack's own mode's policies on, as `up` left them.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams};

use super::demo::{
    phase_of, private_dir, profile_bytes, say_step, send_load, stdin_lines, wait_sidecars,
};
use super::inspect::{now_utc, region, write_page};
use super::run::Interrupts;
use super::{read_only_context, usage};
use crate::cli::{DemoArgs, Output};
use crate::config::{LocalityMode, Stack};
use crate::inspect::{self, PageMeta, Verification};
use crate::k8s::apply;
use crate::k8s::pod_http::PortForward;
use crate::locality::demo::{self as figures, Expected, OrdersSeen, ProductsSeen, Profile};
use crate::locality::placement::Placement;
use crate::stages::kubernetes::KubeAccess;
use crate::stages::locality::{self, Switch, FIELD_MANAGER};
use crate::stages::{app, Context};

/// The locality policies of one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    None,
    Pattern,
    Distribution,
}

/// The objects each policy applies.
struct Sets {
    /// The 2023 pattern, on and off (the stack's mode, or failover for a
    /// traffic-distribution stack).
    pattern: Switch,
    pattern_orders: OrdersSeen,
    /// The Services with `trafficDistribution`.
    distribution: Vec<DynamicObject>,
}

/// The products Deployment scaled away, and its replicas before.
#[derive(Debug, Clone)]
struct Scaled {
    deployment: String,
    node: String,
    replicas: i32,
}

/// The phases a comparison measures: (id, column label, policy, products pod gone).
const PHASES: [(&str, &str, Policy, bool); 5] = [
    ("none", "no policy", Policy::None, false),
    ("pattern-2023", "2023 pattern", Policy::Pattern, false),
    (
        "pattern-2023-products-gone",
        "2023 pattern, products gone",
        Policy::Pattern,
        true,
    ),
    (
        "traffic-distribution-products-gone",
        "trafficDistribution, products gone",
        Policy::Distribution,
        true,
    ),
    (
        "traffic-distribution",
        "trafficDistribution",
        Policy::Distribution,
        false,
    ),
];

/// The order the table and the page show them in.
const SHOWN: [&str; 5] = [
    "none",
    "pattern-2023",
    "traffic-distribution",
    "pattern-2023-products-gone",
    "traffic-distribution-products-gone",
];

/// The phases whose thresholds decide the exit code.
const JUDGED: [&str; 2] = ["pattern-2023", "traffic-distribution"];

pub(super) async fn demo_compare(args: &DemoArgs, stack: &Stack) -> anyhow::Result<ExitCode> {
    let refuse = |e: crate::versions::VersionError| {
        usage(format!(
            "--compare runs the traffic-distribution mode, which this stack's versions cannot: \
             {}: {}",
            e.field, e.message
        ))
    };
    if stack.existing_cluster().is_none() {
        crate::versions::check_traffic_distribution(
            stack.kubernetes_minor(),
            stack.istio.version,
            "the stack's kubernetes_version",
        )
        .map_err(refuse)?;
    }
    let cx = read_only_context(stack.clone()).await?;
    let kube = cx.kube().await.context("connecting to the cluster")?;
    if stack.existing_cluster().is_some() {
        let info = kube.client.apiserver_version().await?;
        let minor: String = info
            .minor
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        crate::versions::check_traffic_distribution(
            minor.parse().unwrap_or(0),
            stack.istio.version,
            "the existing cluster's API server",
        )
        .map_err(refuse)?;
    }
    let http = PortForward {
        client: kube.client.clone(),
        timeout: inspect::HTTP_TIMEOUT,
    };
    let placement = locality::observe_placement(&kube.client).await?;
    let pattern_mode = match stack.locality.mode {
        LocalityMode::TrafficDistribution => LocalityMode::Failover,
        mode => mode,
    };
    let sets = Sets {
        pattern: locality::switch_of(&cx, &placement, pattern_mode).await?,
        pattern_orders: match pattern_mode {
            LocalityMode::Failover => OrdersSeen::Failover,
            _ => OrdersSeen::Unseen,
        },
        distribution: locality::distribution(&cx).await?,
    };
    // Nothing changes when a phase could not run as planned.
    let unsafe_nodes = placement.unsafe_nodes();
    if !unsafe_nodes.is_empty() {
        return Err(anyhow::anyhow!(locality::unsafe_message(&unsafe_nodes))
            .context("the comparison needs the 2023 pattern applied as `up` applies it"));
    }
    let Some((node, deployment)) = products_to_scale(&placement) else {
        anyhow::bail!(
            "no node runs a products client and a products pod while another node has one \
             too, so the case without products on a node cannot be shown; `meshstack pods` \
             shows where everything runs"
        );
    };
    if let Some(dir) = &args.save_dumps {
        private_dir(dir)?;
    }
    let scaled = Mutex::new(None);
    let interrupts = Interrupts::watch();
    let show = Show {
        args,
        stack,
        cx: &cx,
        kube,
        http: &http,
        sets: &sets,
        timeout: Duration::from_secs(args.sidecar_timeout),
        prompts: args.pause.then(stdin_lines),
        target: (node, deployment),
        scaled: &scaled,
    };
    let outcome = interrupts.unless_signalled(show.run()).await;
    let taken = scaled.lock().unwrap().clone();
    let restored = restore(
        &cx,
        kube,
        &sets,
        taken.as_ref(),
        Duration::from_secs(args.sidecar_timeout),
    )
    .await;
    match outcome {
        None => {
            restored?;
            eprintln!(
                "stopped; every products pod is back and the stack's locality policies are on \
                 again, as `meshstack up` left them"
            );
            Ok(ExitCode::from(interrupts.signalled().unwrap_or(130)))
        }
        Some(Err(e)) => {
            if let Err(r) = restored {
                eprintln!("warning: could not put the environment back as `up` left it: {r:#}");
            }
            Err(e)
        }
        Some(Ok(code)) => {
            restored?;
            Ok(code)
        }
    }
}

/// The node to take products from and the products Deployment whose pod runs there: a node
/// with a products client (graphql's first) and a Ready products pod, while a Ready products
/// pod of another Deployment runs on another node (to fall back to).
fn products_to_scale(placement: &Placement) -> Option<(String, String)> {
    let ready_products: Vec<(&str, &str)> = placement
        .pods
        .iter()
        .filter(|p| p.is_products() && p.ready)
        .filter_map(|p| Some((p.node.as_deref()?, p.deployment.as_deref()?)))
        .collect();
    let mut clients: Vec<(bool, &str)> = placement
        .pods
        .iter()
        .filter(|p| p.is_products_client())
        .filter_map(|p| {
            Some((
                p.deployment.as_deref() != Some("graphql"),
                p.node.as_deref()?,
            ))
        })
        .collect();
    clients.sort();
    clients.into_iter().find_map(|(_, node)| {
        let (_, deployment) = ready_products.iter().find(|(n, _)| *n == node)?;
        let elsewhere = ready_products
            .iter()
            .any(|(n, d)| *n != node && d != deployment);
        // Every pod of that Deployment runs on this node, so scaling it away empties only it.
        let only_here = ready_products
            .iter()
            .filter(|(_, d)| d == deployment)
            .all(|(n, _)| *n == node);
        (elsewhere && only_here).then(|| (node.to_string(), deployment.to_string()))
    })
}

/// What every caller sidecar shows under `policy`.
fn expected(sets: &Sets, policy: Policy) -> Expected {
    match policy {
        Policy::None => Expected {
            orders: OrdersSeen::Even,
            products: ProductsSeen::Cluster,
        },
        Policy::Pattern => Expected {
            orders: sets.pattern_orders,
            products: ProductsSeen::Local,
        },
        Policy::Distribution => Expected {
            orders: OrdersSeen::Failover,
            products: ProductsSeen::PreferNode,
        },
    }
}

async fn apply(kube: &KubeAccess, objects: &[DynamicObject], what: &str) -> anyhow::Result<()> {
    apply::apply_all(&kube.client, kube.resolver.as_ref(), objects, FIELD_MANAGER)
        .await
        .with_context(|| format!("applying {what}"))?;
    Ok(())
}

/// Puts `policy` on and takes off what the others left, as the `locality` stage switches
/// modes. The 2023 pattern's `Local` goes on only when `checked`: after the safety check.
async fn set(
    cx: &Context,
    kube: &KubeAccess,
    sets: &Sets,
    policy: Policy,
    checked: bool,
) -> anyhow::Result<()> {
    let pattern = &sets.pattern;
    match policy {
        Policy::None => {
            locality::take_distribution_off(cx, kube).await?;
            apply(kube, &pattern.rule_off, "the orders rule without locality").await?;
            apply(kube, &pattern.service_off, "internalTrafficPolicy: Cluster").await?;
        }
        Policy::Pattern => {
            locality::take_distribution_off(cx, kube).await?;
            apply(kube, &pattern.rule_on, "the orders DestinationRule").await?;
            if checked {
                let placement = locality::observe_placement(&kube.client).await?;
                let unsafe_nodes = placement.unsafe_nodes();
                if !unsafe_nodes.is_empty() {
                    anyhow::bail!(locality::unsafe_message(&unsafe_nodes));
                }
                apply(kube, &pattern.service_on, "internalTrafficPolicy: Local").await?;
            }
        }
        Policy::Distribution => {
            // The rule goes first, so no moment has both policies on orders.
            apply::delete_all(&kube.client, kube.resolver.as_ref(), &pattern.rule_on)
                .await
                .context("deleting the orders DestinationRule")?;
            apply(kube, &pattern.service_off, "internalTrafficPolicy: Cluster").await?;
            apply(kube, &sets.distribution, "trafficDistribution").await?;
        }
    }
    Ok(())
}

fn deployments(kube: &KubeAccess) -> Api<Deployment> {
    Api::namespaced(kube.client.clone(), app::NAMESPACE)
}

/// The field manager of the replicas `--compare` sets (the `app` stage's apply, forced, takes
/// them back).
const SCALE_MANAGER: &str = "meshstack-demo";

async fn scale(kube: &KubeAccess, deployment: &str, replicas: i32) -> anyhow::Result<()> {
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    let params = PatchParams {
        field_manager: Some(SCALE_MANAGER.into()),
        ..PatchParams::default()
    };
    deployments(kube)
        .patch(deployment, &params, &Patch::Merge(&patch))
        .await
        .with_context(|| format!("scaling Deployment {deployment} to {replicas}"))?;
    Ok(())
}

/// Polls the placement (100 ms, backing off to 2 s) until `done` holds; how long it took.
async fn wait_placement(
    kube: &KubeAccess,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Placement) -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let placement = locality::observe_placement(&kube.client).await?;
        if done(&placement) {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            anyhow::bail!(
                "after {} s {what}; `meshstack pods` shows where everything runs",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Every products pod back: the Deployment at its replicas and no node with a products client
/// left without a Ready products pod.
async fn bring_back(kube: &KubeAccess, s: &Scaled, timeout: Duration) -> anyhow::Result<()> {
    scale(kube, &s.deployment, s.replicas).await?;
    let deployment = s.deployment.as_str();
    wait_placement(
        kube,
        timeout,
        &format!("Deployment {deployment} has no Ready pod on a node that needs one"),
        |p| {
            p.unsafe_nodes().is_empty()
                && p.pods
                    .iter()
                    .any(|x| x.ready && x.deployment.as_deref() == Some(deployment))
        },
    )
    .await?;
    Ok(())
}

/// The environment as `up` left it: the products pod back, then the stack's own mode's
/// policies (the 2023 pattern after the safety check, or trafficDistribution), nothing of the
/// other mode left.
async fn restore(
    cx: &Context,
    kube: &KubeAccess,
    sets: &Sets,
    scaled: Option<&Scaled>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let back = match scaled {
        Some(s) => bring_back(kube, s, timeout).await,
        None => Ok(()),
    };
    let policy = match cx.stack.locality.mode {
        LocalityMode::TrafficDistribution => Policy::Distribution,
        _ => Policy::Pattern,
    };
    // The rule (or the field) goes back even when the pod did not; `Local` only after it did.
    set(cx, kube, sets, policy, back.is_ok()).await?;
    back
}

/// One live comparison.
struct Show<'a> {
    args: &'a DemoArgs,
    stack: &'a Stack,
    cx: &'a Context,
    kube: &'a KubeAccess,
    http: &'a PortForward,
    sets: &'a Sets,
    timeout: Duration,
    prompts: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
    /// (node, products Deployment) to take away.
    target: (String, String),
    /// Set before the products Deployment is scaled, for the restore.
    scaled: &'a Mutex<Option<Scaled>>,
}

/// One phase's measurement.
struct Measured {
    id: &'static str,
    label: &'static str,
    gone_from: Option<String>,
    verification: Verification,
    sidecars_took: Duration,
}

impl Show<'_> {
    async fn step(&mut self, line: &str) {
        say_step(&mut self.prompts, line).await;
    }

    async fn run(mut self) -> anyhow::Result<ExitCode> {
        let mut measured = Vec::new();
        for (id, label, policy, gone) in PHASES {
            let products_gone = self.scaled.lock().unwrap().is_some();
            if gone && !products_gone {
                self.take_products().await?;
            }
            if !gone && products_gone {
                self.return_products().await?;
            }
            self.step(&format!("{label}: {}", explain(policy, gone)))
                .await;
            let m = self.phase(id, label, policy, gone).await?;
            self.emit_phase(&m)?;
            measured.push(m);
        }
        self.step(&format!(
            "comparison: the phases side by side ({} queries each), with what the cross-zone \
             traffic costs a month at {} requests per second",
            self.args.requests, self.args.rps
        ))
        .await;
        measured.sort_by_key(|m| SHOWN.iter().position(|s| *s == m.id));
        let c = comparison(&measured, self.args);
        self.report(&measured, &c)?;
        if c.pass {
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!(
                "a policy misses the stack's verify thresholds with every products pod in place"
            );
            Ok(ExitCode::FAILURE)
        }
    }

    async fn take_products(&mut self) -> anyhow::Result<()> {
        let (node, deployment) = self.target.clone();
        let replicas = deployments(self.kube)
            .get(&deployment)
            .await
            .with_context(|| format!("reading Deployment {deployment}"))?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        self.step(&format!(
            "products gone: scaling Deployment {deployment} to zero, so that {node} runs a \
             products client but no products pod (what the 2023 pattern's safety check guards \
             against; a node drained or a pod evicted does the same)"
        ))
        .await;
        *self.scaled.lock().unwrap() = Some(Scaled {
            deployment: deployment.clone(),
            node: node.clone(),
            replicas,
        });
        scale(self.kube, &deployment, 0).await?;
        let took = wait_placement(
            self.kube,
            self.timeout,
            &format!("a pod of Deployment {deployment} is still there"),
            |p| {
                !p.pods
                    .iter()
                    .any(|x| x.deployment.as_deref() == Some(deployment.as_str()))
            },
        )
        .await?;
        self.step(&format!(
            "products gone: no pod of {deployment} after {:.1} s",
            took.as_secs_f64()
        ))
        .await;
        Ok(())
    }

    async fn return_products(&mut self) -> anyhow::Result<()> {
        let s = self.scaled.lock().unwrap().clone();
        if let Some(s) = s {
            self.step(&format!(
                "products back: scaling Deployment {} to {} again and waiting until {} has a \
                 Ready products pod",
                s.deployment, s.replicas, s.node
            ))
            .await;
            bring_back(self.kube, &s, self.timeout).await?;
            *self.scaled.lock().unwrap() = None;
        }
        Ok(())
    }

    async fn phase(
        &mut self,
        id: &'static str,
        label: &'static str,
        policy: Policy,
        gone: bool,
    ) -> anyhow::Result<Measured> {
        // The 2023 pattern is applied while every node is safe; with the pod gone it stays on.
        set(self.cx, self.kube, self.sets, policy, !gone).await?;
        let took = wait_sidecars(
            self.kube,
            self.http,
            expected(self.sets, policy),
            self.timeout,
        )
        .await?;
        self.step(&format!(
            "{label}: every sidecar shows it after {:.1} s; sending {} queries and reading \
             every sidecar's counters over this phase only",
            took.as_secs_f64(),
            self.args.requests
        ))
        .await;
        let verification = send_load(self.kube, self.http, self.stack, self.args, id).await?;
        Ok(Measured {
            id,
            label,
            gone_from: gone.then(|| self.target.0.clone()),
            verification,
            sidecars_took: took,
        })
    }

    fn emit_phase(&self, m: &Measured) -> anyhow::Result<()> {
        let bytes = profile_bytes(&m.verification, None, self.args.bytes_per_request).0;
        let f = phase_of(m.id, &m.verification, bytes);
        let mut out = std::io::stdout().lock();
        match self.args.stack.output {
            Output::Json => writeln!(
                out,
                "{}",
                serde_json::json!({
                    "phase": m.id,
                    "label": m.label,
                    "products_gone_from": m.gone_from,
                    "sidecars_showed_change_ms": m.sidecars_took.as_millis() as u64,
                    "figures": f,
                    "verification": m.verification,
                })
            )?,
            Output::Text => writeln!(
                out,
                "{}: {} of {} orders calls crossed zones, {} of {} products calls left their \
                 node, {} of {} requests failed{}",
                m.label,
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

    fn report(&self, measured: &[Measured], c: &figures::ModesComparison) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match self.args.stack.output {
            Output::Text => write!(out, "\n{}", figures::render_modes_text(c))?,
            Output::Json => writeln!(
                out,
                "{}",
                serde_json::json!({ "phase": "comparison", "comparison": c })
            )?,
        }
        drop(out);
        if let Some(path) = &self.args.html {
            let phases: Vec<(&str, &str, &Verification)> = measured
                .iter()
                .map(|m| (m.id, m.label, &m.verification))
                .collect();
            let region = region(self.stack);
            let page = inspect::compare_page(
                &phases,
                c,
                PageMeta {
                    stack: &self.stack.name,
                    region: region.as_deref(),
                    measured_at: &now_utc(),
                },
            );
            write_page(path, &page)?;
        }
        Ok(())
    }
}

/// What a phase shows and why, in one line.
fn explain(policy: Policy, gone: bool) -> &'static str {
    match (policy, gone) {
        (Policy::None, _) => {
            "no policy (orders rule without locality load balancing, products-service at \
             internalTrafficPolicy: Cluster, no trafficDistribution), to show where traffic \
             goes without one"
        }
        (Policy::Pattern, false) => {
            "the 2023 pattern as `meshstack up` applies it (the orders rule's locality \
             failover, internalTrafficPolicy: Local after the safety check)"
        }
        (Policy::Pattern, true) => {
            "the 2023 pattern with a node's products pod gone: Local drops that node's \
             products calls"
        }
        (Policy::Distribution, true) => {
            "trafficDistribution (PreferSameZone on orders-service, PreferSameNode on \
             products-service; the rule deleted, Local off) with the products pod still gone: \
             the calls fall back to another node"
        }
        (Policy::Distribution, false) => {
            "trafficDistribution with every products pod back, Kubernetes' own field instead \
             of the 2023 pattern"
        }
    }
}

fn comparison(measured: &[Measured], args: &DemoArgs) -> figures::ModesComparison {
    let (bytes, from) = match args.bytes_per_request {
        Some(b) => (b, "--bytes-per-request".to_string()),
        None => {
            let judged = measured.iter().filter(|m| JUDGED.contains(&m.id));
            let first = judged.map(|m| &m.verification).next();
            match first {
                Some(v) => profile_bytes(v, None, None),
                None => (
                    crate::locality::report::DEFAULT_BYTES_PER_REQUEST,
                    "assumed, none measured".into(),
                ),
            }
        }
    };
    let phases = measured
        .iter()
        .map(|m| {
            (
                m.id.to_string(),
                m.label.to_string(),
                m.gone_from.clone(),
                phase_of(m.id, &m.verification, bytes),
            )
        })
        .collect();
    figures::compare_modes(
        phases,
        Profile {
            rps: args.rps,
            bytes_per_request: bytes,
            bytes_per_request_from: from,
            price: crate::prices::INTER_AZ,
        },
        &JUDGED,
    )
}
