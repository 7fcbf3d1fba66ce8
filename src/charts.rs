//! Every helm chart meshstack installs: where it lives, which version the stack gets, and the
//! one setting that points them all somewhere else (a private mirror, an air-gapped account's
//! registry, the tests' local repository).
//!
//! Addresses go stale — Istio's charts left Google Cloud Storage in December 2026 — so each
//! default repository names its source and the day it was checked, and `doctor` asks each
//! repository whether it still holds the pinned version.
//!
//! # Where a chart comes from
//! In this order: the stack's `charts.repositories.<chart>`; `MESHSTACK_CHART_MIRROR`; the
//! stack's `charts.mirror`; the default below. A repository is an `https://` (or `http://`)
//! helm repository holding `index.yaml`, or an `oci://` prefix under which the chart is
//! `<prefix>/<chart>`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::k8s::helm::Chart;
use crate::versions::{self, ReleaseVersion};

/// The stack's `charts:` section: where charts come from instead of their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChartSources {
    /// `charts.mirror`: every chart from this repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// `charts.repositories.<chart>`: one chart from its own repository.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub repositories: BTreeMap<String, String>,
}

impl ChartSources {
    /// Nothing set: every chart from its default.
    pub fn is_default(&self) -> bool {
        self.mirror.is_none() && self.repositories.is_empty()
    }
}

/// The releases whose versions decide the charts' versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Releases {
    pub istio: ReleaseVersion,
    pub karpenter: ReleaseVersion,
}

/// Istio's charts since their move off Google Cloud Storage: "every version of every chart"
/// (istio.io blog, "An update on our move to AWS", 2026-08-21; OCI:
/// `oci://ghcr.io/istio/release/charts`). Checked 2026-12-06.
pub const ISTIO_REPO: &str = "https://blob.istio.io/istio-release/charts";
/// Karpenter publishes its charts only as OCI artifacts (karpenter.sh, "Getting Started with
/// Karpenter", v1.14 docs). Checked 2026-12-06.
pub const KARPENTER_REPO: &str = "oci://public.ecr.aws/karpenter";
/// prometheus-community/helm-charts README ("Usage"). Checked 2026-12-06.
pub const PROMETHEUS_REPO: &str = "https://prometheus-community.github.io/helm-charts";
/// kiali.io, "Installation Guide: Install via Kiali Operator" (helm repo). Checked 2026-12-06.
pub const KIALI_REPO: &str = "https://kiali.org/helm-charts";

/// kube-prometheus-stack 77.1.1 (prometheus-community/helm-charts tag
/// kube-prometheus-stack-77.1.1): its Chart.yaml allows Kubernetes >= 1.25, so 1.36 included;
/// kept rather than moved, since nothing the demo uses changed since. Checked 2026-12-06.
pub const PROMETHEUS_VERSION: &str = "77.1.1";

/// The environment variable that points every chart at one repository (a mirror).
pub const MIRROR_ENV: &str = "MESHSTACK_CHART_MIRROR";

/// The charts, by their names in their repositories.
pub mod name {
    pub const ISTIO_BASE: &str = "base";
    pub const ISTIOD: &str = "istiod";
    pub const ISTIO_GATEWAY: &str = "gateway";
    pub const KARPENTER: &str = "karpenter";
    pub const KARPENTER_CRD: &str = "karpenter-crd";
    pub const PROMETHEUS: &str = "kube-prometheus-stack";
    pub const KIALI_OPERATOR: &str = "kiali-operator";
    /// Every chart, in the order `plan` lists them.
    pub const ALL: [&str; 7] = [
        KARPENTER_CRD,
        KARPENTER,
        PROMETHEUS,
        ISTIO_BASE,
        ISTIOD,
        ISTIO_GATEWAY,
        KIALI_OPERATOR,
    ];
}

/// The default repository of `chart`.
fn default_repo(chart: &str) -> &'static str {
    match chart {
        name::ISTIO_BASE | name::ISTIOD | name::ISTIO_GATEWAY => ISTIO_REPO,
        name::KARPENTER | name::KARPENTER_CRD => KARPENTER_REPO,
        name::PROMETHEUS => PROMETHEUS_REPO,
        name::KIALI_OPERATOR => KIALI_REPO,
        other => unreachable!("not a chart meshstack installs: {other}"),
    }
}

/// The version of `chart` for `releases`.
fn version(releases: Releases, chart: &str) -> String {
    match chart {
        name::ISTIO_BASE | name::ISTIOD | name::ISTIO_GATEWAY => releases.istio.to_string(),
        name::KARPENTER | name::KARPENTER_CRD => karpenter_chart_version(releases.karpenter),
        name::PROMETHEUS => PROMETHEUS_VERSION.to_string(),
        name::KIALI_OPERATOR => versions::kiali_operator(releases.istio)
            .map(|v| v.to_string())
            .unwrap_or_else(|e| unreachable!("validated with the stack: {e}")),
        other => unreachable!("not a chart meshstack installs: {other}"),
    }
}

/// Karpenter's chart version tag: it dropped the `v` prefix in 0.35.
pub fn karpenter_chart_version(version: ReleaseVersion) -> String {
    if version < ReleaseVersion::new(0, 35, 0) {
        format!("v{version}")
    } else {
        version.to_string()
    }
}

/// Where a chart comes from, and why there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The upstream repository.
    Default,
    /// `charts.mirror` in the stack.
    StackMirror,
    /// `MESHSTACK_CHART_MIRROR`.
    EnvMirror,
    /// `charts.repositories.<chart>` in the stack.
    StackRepository,
}

/// One chart as the stack installs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    pub chart: String,
    pub version: String,
    pub repository: String,
    pub origin: Origin,
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chart {} {} from {}{}",
            self.chart,
            self.version,
            self.repository,
            match self.origin {
                Origin::Default => "",
                Origin::StackMirror => " (charts.mirror)",
                Origin::EnvMirror => " (MESHSTACK_CHART_MIRROR)",
                Origin::StackRepository => " (charts.repositories)",
            }
        )
    }
}

/// `chart` as a stack with `sources` and `releases` installs it.
pub fn pin(sources: &ChartSources, releases: Releases, chart: &str) -> Pin {
    let env = std::env::var(MIRROR_ENV).ok().filter(|m| !m.is_empty());
    let (repository, origin) = if let Some(repo) = sources.repositories.get(chart) {
        (repo.clone(), Origin::StackRepository)
    } else if let Some(mirror) = env {
        (mirror, Origin::EnvMirror)
    } else if let Some(mirror) = &sources.mirror {
        (mirror.clone(), Origin::StackMirror)
    } else {
        (default_repo(chart).to_string(), Origin::Default)
    };
    Pin {
        chart: chart.to_string(),
        version: version(releases, chart),
        repository: repository.trim_end_matches('/').to_string(),
        origin,
    }
}

impl Pin {
    /// The chart as helm installs it.
    pub fn chart(self) -> Chart {
        Chart {
            repo: self.repository,
            name: self.chart,
            version: self.version,
        }
    }
}

/// Whether `repo` is a repository address meshstack can hand to helm.
pub fn repository_problem(repo: &str) -> Option<String> {
    let rest = ["https://", "http://", "oci://"]
        .iter()
        .find_map(|scheme| repo.strip_prefix(scheme));
    match rest {
        None => Some(format!(
            "`{repo}` is not a chart repository; give an https:// helm repository (the folder \
             holding index.yaml) or an oci:// prefix (the chart is <prefix>/<chart>)"
        )),
        Some(host) if host.is_empty() || host.starts_with('/') => {
            Some(format!("`{repo}` names no host"))
        }
        Some(_) if repo.chars().any(char::is_whitespace) => {
            Some(format!("`{repo}` contains whitespace"))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_checked() {
        assert_eq!(repository_problem("https://blob.istio.io/x"), None);
        assert_eq!(
            repository_problem("oci://ghcr.io/istio/release/charts"),
            None
        );
        assert!(repository_problem("ghcr.io/istio").is_some());
        assert!(repository_problem("https://").is_some());
        let v = ReleaseVersion::new;
        for (version, tag) in [
            (v(1, 14, 1), "1.14.1"),
            (v(0, 35, 0), "0.35.0"),
            (v(0, 34, 9), "v0.34.9"),
            (v(0, 32, 10), "v0.32.10"),
        ] {
            assert_eq!(karpenter_chart_version(version), tag);
        }
    }
}
