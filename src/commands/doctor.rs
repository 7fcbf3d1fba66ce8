//! `meshstack doctor`: credentials, region and the tools the stages need; the version matrix
//! of the stack (Kubernetes on EKS today, Karpenter, Istio, Kiali, helm — each with what it
//! supports); and whether every chart repository answers and holds the pinned version.

use std::process::ExitCode;

use super::{connect, existing_zones, helm_version, load_stack_path};
use crate::aws::{account, AwsClients};
use crate::cli::{DoctorArgs, Output};
use crate::config::Stack;
use crate::k8s::helm::{self, HelmCli, HelmError};
use crate::versions::{self, SupportStatus};

/// One row of the version matrix.
#[derive(Debug, serde::Serialize)]
struct Row {
    component: &'static str,
    version: String,
    /// Whether this pair is supported; `false` is a warning (Istio 1.18 on 1.36) or an error
    /// (a Kubernetes version EKS will not create), as `detail` says.
    supported: bool,
    detail: String,
}

/// An existing cluster's `major.minor` and zones, checked as `up` checks them.
async fn existing_cluster(stack: &Stack) -> anyhow::Result<(String, Vec<String>)> {
    let zones = existing_zones(stack).await?;
    let cx = crate::stages::Context::new(stack.clone(), None, None, Vec::new(), None);
    let kube = cx.kube().await?;
    let info = kube.client.apiserver_version().await?;
    let minor: String = info
        .minor
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Ok((
        format!("{}.{minor}", info.major),
        zones.into_iter().map(|z| z.name).collect(),
    ))
}

pub async fn doctor(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let text = args.output == Output::Text;
    let mut checks: Vec<(bool, &str, String)> = Vec::new();
    let mut report = |good: bool, what: &'static str, detail: String| {
        if text {
            println!("{} {what}: {detail}", if good { "ok  " } else { "FAIL" });
        }
        checks.push((good, what, detail));
    };
    let stack = match load_stack_path(args.stack.as_deref()) {
        Ok(s) => {
            report(true, "stack", format!("`{}`", s.name));
            Some(s)
        }
        Err(e) => {
            report(false, "stack", format!("{e:#}"));
            None
        }
    };
    let mut aws: Option<AwsClients> = None;
    let mut stack = stack;
    if let Some(stack) = stack.as_mut().filter(|s| s.existing_cluster().is_some()) {
        // No AWS: the cluster is the one to check, and its version is the server's.
        match existing_cluster(stack).await {
            Ok((version, zones)) => {
                report(
                    true,
                    "cluster",
                    format!(
                        "existing cluster, Kubernetes {version}, nodes in {}",
                        zones.join(", ")
                    ),
                );
                stack.kubernetes_version = version;
            }
            Err(e) => report(false, "cluster", format!("{e:#}")),
        }
    } else if let Some(stack) = &stack {
        match connect(stack).await {
            Ok(clients) => {
                report(true, "region", clients.region.clone());
                match account::identify(&clients, stack).await {
                    Ok(id) => report(
                        true,
                        "credentials",
                        format!("{} (account {})", id.arn, id.account),
                    ),
                    Err(e) => report(false, "credentials", e.to_string()),
                }
                aws = Some(clients);
            }
            Err(e) => report(
                false,
                "credentials",
                format!("{e}; configure them with `aws configure` or AWS_* variables"),
            ),
        }
    }
    let helm = helm_version().await;
    match &helm {
        Ok(v) => report(true, "helm", v.clone()),
        Err(why) => report(false, "helm", why.clone()),
    }

    let mut rows = Vec::new();
    let mut charts = Vec::new();
    if let Some(stack) = &stack {
        rows = matrix(aws.as_ref(), stack, helm.as_deref().ok()).await?;
        if let Some(k8s) = rows.first() {
            report(k8s.supported, "kubernetes version", k8s.detail.clone());
        }
        if text {
            println!();
            println!("versions:");
            for r in &rows {
                println!(
                    "  {:<11} {:<8} {} {}",
                    r.component,
                    r.version,
                    if r.supported { "ok  " } else { "WARN" },
                    r.detail
                );
            }
        }
        if helm.is_ok() {
            charts = chart_checks(stack).await;
            if text {
                println!();
                println!("chart repositories:");
            }
            for (pin, problem) in &charts {
                if text {
                    match problem {
                        None => println!("  ok   {pin}"),
                        Some(p) if p.fails => println!("  FAIL {pin}: {}", p.why),
                        Some(p) => println!("  WARN {pin}: {}", p.why),
                    }
                }
            }
            let missing: Vec<String> = charts
                .iter()
                .filter(|(_, p)| p.as_ref().is_some_and(|p| p.fails))
                .map(|(pin, _)| format!("{} {}", pin.chart, pin.version))
                .collect();
            let detail = if missing.is_empty() {
                format!(
                    "{} charts found at their pinned versions and digests",
                    charts.len()
                )
            } else {
                format!("not found or not the pinned bytes: {}", missing.join(", "))
            };
            checks.push((missing.is_empty(), "charts", detail));
        }
    }
    let ok = checks.iter().all(|(good, _, _)| *good);
    if args.output == Output::Json {
        let checks: Vec<_> = checks
            .iter()
            .map(|(good, what, detail)| serde_json::json!({"check": what, "ok": good, "detail": detail}))
            .collect();
        let charts: Vec<_> = charts
            .iter()
            .map(|(pin, problem)| {
                serde_json::json!({
                    "chart": pin,
                    "ok": problem.as_ref().is_none_or(|p| !p.fails),
                    "problem": problem.as_ref().map(|p| &p.why),
                    "verified": problem.is_none(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"ok": ok, "checks": checks, "versions": rows, "charts": charts})
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The stack's versions, each with what it supports: Kubernetes first (its support on EKS
/// today, from EKS where it answers), then Karpenter, Istio, Kiali and helm.
async fn matrix(
    aws: Option<&AwsClients>,
    stack: &Stack,
    helm: Option<&str>,
) -> anyhow::Result<Vec<Row>> {
    let minor = stack.kubernetes_minor();
    let prices = crate::prices::PriceTable::builtin();
    let region = aws
        .map(|a| a.region.clone())
        .or_else(|| stack.region().map(str::to_string))
        .unwrap_or_else(|| crate::prices::FALLBACK_REGION.to_string());
    let price = |extended: bool| {
        let p = prices
            .regions
            .get(&region)
            .or_else(|| prices.regions.get(crate::prices::FALLBACK_REGION));
        let hourly = p.and_then(|p| {
            if extended {
                p.eks_cluster_extended
            } else {
                Some(p.eks_cluster)
            }
        });
        hourly.map_or_else(
            || "price unknown".to_string(),
            |h| format!("{}/h", crate::prices::dollars(h)),
        )
    };
    let mut rows = Vec::new();
    let k8s = match super::checks::kubernetes_support(aws, stack).await? {
        _ if stack.existing_cluster().is_some() => Row {
            component: "kubernetes",
            version: stack.kubernetes_version.clone(),
            supported: true,
            detail: "the existing cluster's API server (its support and price are its owner's)"
                .to_string(),
        },
        Ok(s) => Row {
            component: "kubernetes",
            version: s.version.clone(),
            supported: true,
            detail: format!(
                "{}, {} (per {})",
                s.summary(),
                price(s.status == SupportStatus::Extended),
                s.source
            ),
        },
        Err(e) => Row {
            component: "kubernetes",
            version: stack.kubernetes_version.clone(),
            supported: false,
            detail: e.message,
        },
    };
    rows.push(k8s);
    let karpenter = stack.karpenter.version;
    rows.push(Row {
        component: "karpenter",
        version: karpenter.to_string(),
        supported: versions::karpenter_maximum(karpenter).is_some_and(|max| minor <= max),
        detail: match versions::karpenter_maximum(karpenter) {
            Some(max) => format!("its controller accepts Kubernetes up to 1.{max}"),
            None => "meshstack does not know which Kubernetes it accepts".into(),
        },
    });
    let istio = stack.istio.version;
    rows.push(Row {
        component: "istio",
        version: istio.to_string(),
        supported: stack.istio_support_warning().is_none(),
        detail: match versions::istio_kubernetes_range(istio) {
            Some((lo, hi)) => format!("supports Kubernetes 1.{lo} to 1.{hi} (istio.io)"),
            None => "meshstack does not know which Kubernetes it supports".into(),
        },
    });
    let kiali = versions::kiali_operator(istio).expect("validated with the stack");
    rows.push(Row {
        component: "kiali",
        version: kiali.to_string(),
        supported: true,
        detail: format!("kiali-operator paired with Istio 1.{}", istio.minor),
    });
    if let Some(v) = helm {
        let (major, helm_minor) = helm::major_minor(v);
        let range = versions::helm_kubernetes_range(major, helm_minor);
        rows.push(Row {
            component: "helm",
            version: v.to_string(),
            supported: range.is_some_and(|(lo, hi)| (lo..=hi).contains(&minor)),
            detail: match range {
                Some((lo, hi)) => format!(
                    "helm {major}.{helm_minor} supports Kubernetes 1.{lo} to 1.{hi} (Helm's \
                     version-skew policy){}",
                    if (lo..=hi).contains(&minor) {
                        String::new()
                    } else {
                        format!("; the stack's 1.{minor} is outside it")
                    }
                ),
                None => format!("meshstack does not know helm {major}.{helm_minor}'s skew"),
            },
        });
    }
    Ok(rows)
}

/// Each chart the stack installs, pulled from its repository (`helm pull` into a private
/// folder, removed after) and hashed, with what is wrong when the repository does not answer,
/// lacks the pinned version, or serves other bytes than the pin.
///
/// The served archive itself is hashed rather than the `digest` its repository's index.yaml
/// claims: that is what `up` installs, it works alike for HTTP repositories and OCI
/// registries (which have no index), and an index can be wrong about its own files.
async fn chart_checks(stack: &Stack) -> Vec<(crate::charts::Pin, Option<ChartProblem>)> {
    let helm = HelmCli::from_env(None);
    let checks = stack.chart_pins().into_iter().map(|pin| {
        let helm = helm.clone();
        async move {
            let chart = pin.clone().chart();
            let problem = match helm::private_dir() {
                Err(e) => Some(ChartProblem::fail(format!(
                    "cannot make a private folder to pull into: {e}"
                ))),
                Ok(dir) => match helm.fetch_verified(&chart, dir.path()).await {
                    Ok(fetched) => fetched.unverified.map(|m| ChartProblem {
                        fails: false,
                        why: format!(
                            "the repository serves {}; meshstack's pin {} is the digest of its own \
                             rebuild from the upstream tag, not of upstream's archive, so `up` \
                             installs this chart unverified (with a warning); pin what the \
                             repository serves with `charts.digests.{}: {}` to verify it",
                            m.found, m.expected, pin.chart, m.found
                        ),
                    }),
                    Err(HelmError::DigestMismatch(m)) => Some(ChartProblem::fail(format!(
                        "the repository serves {}, meshstack pins {} (`up` refuses this chart)",
                        m.found, m.expected
                    ))),
                    Err(e) => Some(ChartProblem::fail(first_line(&e.to_string()))),
                },
            };
            (pin, problem)
        }
    });
    futures::future::join_all(checks).await
}

/// What `doctor` found wrong with a chart: a failure, or a warning (a chart `up` installs
/// unverified).
#[derive(Debug, serde::Serialize)]
struct ChartProblem {
    fails: bool,
    why: String,
}

impl ChartProblem {
    fn fail(why: String) -> ChartProblem {
        ChartProblem { fails: true, why }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}
