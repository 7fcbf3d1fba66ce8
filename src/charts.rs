//! Every helm chart meshstack installs: where it lives, which version the stack gets, and the
//! one setting that points them all somewhere else (a private mirror, an air-gapped account's
//! registry, the tests' local repository).
//!
//! Addresses go stale — Istio's charts left Google Cloud Storage in December 2026 — so each
//! default repository names its source and the day it was checked, and `doctor` pulls each
//! pinned chart from its repository and checks it against its digest.
//!
//! # Where a chart comes from
//! In this order: the stack's `charts.repositories.<chart>`; `MESHSTACK_CHART_MIRROR`; the
//! stack's `charts.mirror`; the default below. A repository is an `https://` (or `http://`)
//! helm repository holding `index.yaml`, or an `oci://` prefix under which the chart is
//! `<prefix>/<chart>`.
//!
//! # Which bytes are installed
//! Every chart is verified against a pinned sha256 of its archive ([`DIGESTS`]: what a helm
//! repository's `index.yaml` lists as `digest`, and what an OCI registry stores as the chart
//! layer's digest). helm pulls the chart into a private folder, meshstack hashes the file,
//! and installs that file ([`crate::k8s::helm`]). A mismatch refuses the chart when the pin is
//! upstream's own archive ([`Provenance::Published`]) or the stack's; a pin that is meshstack's
//! rebuild ([`Provenance::Rebuilt`]) cannot match what upstream's honest repository serves, so
//! there a mismatch is a warning and the chart is installed unverified, until its row holds
//! upstream's digest. A stack that installs a version meshstack has
//! no digest for names one (`charts.digests.<chart>: sha256:<hex>`) or is refused before
//! any write: trusting whatever a repository serves on first use would make the pin
//! meaningless exactly where it matters, on a version nobody has checked.

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
    /// `charts.digests.<chart>`: the sha256 (64 lowercase hex digits, no prefix) of the
    /// archive the stack installs, in place of [`DIGESTS`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
}

impl ChartSources {
    /// Nothing set: every chart from its default.
    pub fn is_default(&self) -> bool {
        self.mirror.is_none() && self.repositories.is_empty() && self.digests.is_empty()
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

/// Where a pinned digest comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provenance {
    /// The archive the chart's maintainers published, byte for byte.
    Published,
    /// meshstack's rebuild of the chart from the upstream release tag, repeating the
    /// release's own packaging steps: the same files as upstream's archive, but not the same
    /// bytes (tar times, gzip), so upstream's own repository serves a different digest.
    Rebuilt,
    /// The stack's `charts.digests.<chart>`.
    Stack,
}

/// A chart archive's pinned sha256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownDigest {
    pub chart: &'static str,
    pub version: &'static str,
    /// 64 lowercase hex digits.
    pub sha256: &'static str,
    pub provenance: Provenance,
}

const fn known(
    chart: &'static str,
    version: &'static str,
    sha256: &'static str,
    provenance: Provenance,
) -> KnownDigest {
    KnownDigest {
        chart,
        version,
        sha256,
        provenance,
    }
}

/// The digest of every chart version meshstack pins, as its test chart repository serves
/// it. Source: that repository's README (its sha256 column, and `index.yaml`'s `digest`),
/// copies of the upstream repositories of 2026-08-22, recorded here and re-hashed
/// 2026-12-07. Each row says where its bytes come from:
///
/// - kiali-operator 1.73.2 and 2.26.0: the published archives (kiali/helm-charts `docs/`,
///   at f80aa878d20f and cf9152aede79); their sha256 equals the `digest` of kiali's own
///   `docs/index.yaml`, so kiali's repository serves exactly these bytes.
/// - every other row: a rebuild from the release tag (istio/istio 1.18.7 2afa2f36166a and
///   1.30.3 56df41f63e51; aws/karpenter-provider-aws v1.8.1 1ad0d78f8fa4 and v1.14.1
///   bde00654cd31; prometheus-community/helm-charts kube-prometheus-stack-77.1.1
///   98d2747d0708), packed with `helm package` after the release's own edits. The upstream
///   archives could not be downloaded when these were recorded (no internet), so their
///   digests are not known here: against the upstream repositories these charts are
///   refused with a digest mismatch until the row is replaced by upstream's digest (`doctor`
///   shows both) or the stack names it in `charts.digests`. The error says so.
pub const DIGESTS: &[KnownDigest] = &[
    known(
        "base",
        "1.18.7",
        "dd79902204de4fb7439cec99a36ef1abae8c11a0e79f0dac7764f6e65b172f3e",
        Provenance::Rebuilt,
    ),
    known(
        "istiod",
        "1.18.7",
        "90dba11ef37a49a3ac34b62d75243409116e0d21843c558f96763cc3015ba9e1",
        Provenance::Rebuilt,
    ),
    known(
        "gateway",
        "1.18.7",
        "7ffc618582ed35be07ad93283fc4f1495dbdc8d4780ca9607190013832586a4d",
        Provenance::Rebuilt,
    ),
    known(
        "base",
        "1.30.3",
        "3b939c9da60b283bcc4d9a46317a33738701fb7d84112a6b2e3c7a87dfd410ca",
        Provenance::Rebuilt,
    ),
    known(
        "istiod",
        "1.30.3",
        "01df731c5139ea6673a02dc7270cbb81fd13e011784061cdd083c3c8cf6509f1",
        Provenance::Rebuilt,
    ),
    known(
        "gateway",
        "1.30.3",
        "e9b8c1e692b9166e4edec2d9e7449414ef4eefd2fa78e65d622eec887fc32699",
        Provenance::Rebuilt,
    ),
    known(
        "karpenter",
        "1.8.1",
        "4e7e2cde84ac6527029e62caa020fa3b2c4d9d1669f7a1da7ac9bbdc996d29c2",
        Provenance::Rebuilt,
    ),
    known(
        "karpenter-crd",
        "1.8.1",
        "a0018f446f188067f7c70bb425b19c9966f28a176e4b47c08898dcdafff1cd69",
        Provenance::Rebuilt,
    ),
    known(
        "karpenter",
        "1.14.1",
        "ac29be31a003e1355a2726b14d84bee5afa2af5ef9cab7f5396d5afbda5b0208",
        Provenance::Rebuilt,
    ),
    known(
        "karpenter-crd",
        "1.14.1",
        "7fc2cb7d8f60eed3f9258f35f92f36a4dba78364737fdeb4a701597d740990f6",
        Provenance::Rebuilt,
    ),
    known(
        "kube-prometheus-stack",
        "77.1.1",
        "85e8688b028509a89f955e06e21ae9751de202b49b1b8ebac0de78c0694adb40",
        Provenance::Rebuilt,
    ),
    known(
        "kiali-operator",
        "1.73.2",
        "9bf23f009e4b0599d0df0b542e4a9e1d17a5dc0ddd013c0c9f033441007069c6",
        Provenance::Published,
    ),
    known(
        "kiali-operator",
        "2.26.0",
        "3941d6aab78cc9d19d08ec9c6b06efa2843eb6c9f4154c191a64c57797e353ce",
        Provenance::Published,
    ),
];

/// The pinned digest of `chart` at `version`, if meshstack has one.
pub fn known_digest(chart: &str, version: &str) -> Option<&'static KnownDigest> {
    DIGESTS
        .iter()
        .find(|d| d.chart == chart && d.version == version)
}

/// `sha256:<64 hex>` (or the bare hex) as 64 lowercase hex digits; what is wrong otherwise.
pub fn parse_digest(text: &str) -> Result<String, String> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{text}` is not a sha256 digest; write `sha256:` and the 64 hex digits of the chart \
             archive's sha256 (what the repository's index.yaml lists as `digest`, or \
             `sha256sum` of the .tgz that `helm pull` writes)"
        ))
    }
}

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
    /// The archive's sha256 (64 lowercase hex digits); `None`: meshstack has none for this
    /// version and the stack names none (stack validation refuses that).
    #[serde(serialize_with = "serialize_digest")]
    pub digest: Option<String>,
    /// Where the digest comes from; `None` with no digest.
    pub digest_provenance: Option<Provenance>,
}

fn serialize_digest<S: serde::Serializer>(d: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(hex) => s.collect_str(&format_args!("sha256:{hex}")),
        None => s.serialize_none(),
    }
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
    pin_version(sources, chart, version(releases, chart))
}

/// `chart` at `version` from where a stack with `sources` takes it, with the stack's digest
/// for it (`charts.digests.<chart>`, which names the stack's own version) only when `own` says
/// `version` is the stack's, else meshstack's pin of that version.
pub fn pin_other_version(sources: &ChartSources, chart: &str, version: &str, own: bool) -> Pin {
    if own {
        return pin_version(sources, chart, version.to_string());
    }
    let builtin = ChartSources {
        digests: BTreeMap::new(),
        ..sources.clone()
    };
    pin_version(&builtin, chart, version.to_string())
}

fn pin_version(sources: &ChartSources, chart: &str, version: String) -> Pin {
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
    let (digest, digest_provenance) = match sources.digests.get(chart) {
        Some(hex) => (Some(hex.clone()), Some(Provenance::Stack)),
        None => match known_digest(chart, &version) {
            Some(k) => (Some(k.sha256.to_string()), Some(k.provenance)),
            None => (None, None),
        },
    };
    Pin {
        chart: chart.to_string(),
        version,
        repository: repository.trim_end_matches('/').to_string(),
        origin,
        digest,
        digest_provenance,
    }
}

/// What is wrong with `pin` for an install: no digest to verify it against.
pub fn digest_problem(pin: &Pin) -> Option<String> {
    pin.digest.is_none().then(|| {
        format!(
            "meshstack has no pinned digest for chart {} {} and will not install a chart it \
             cannot verify; add `charts.digests.{}: sha256:<hex>` to the stack (the sha256 of \
             the chart archive: its `digest` in the repository's index.yaml, or `sha256sum` of \
             the file `helm pull {} --version {}` writes), or use a version meshstack pins",
            pin.chart, pin.version, pin.chart, pin.chart, pin.version
        )
    })
}

impl Pin {
    /// The chart as helm installs it.
    pub fn chart(self) -> Chart {
        Chart {
            repo: self.repository,
            name: self.chart,
            version: self.version,
            digest: self.digest,
            digest_enforced: self.digest_provenance != Some(Provenance::Rebuilt),
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
    fn digests_come_from_the_stack_then_the_table() {
        let releases = Releases {
            istio: ReleaseVersion::new(1, 18, 7),
            karpenter: ReleaseVersion::new(1, 14, 1),
        };
        let mut sources = ChartSources::default();
        let istiod = pin(&sources, releases, name::ISTIOD);
        assert_eq!(
            istiod.digest.as_deref(),
            Some("90dba11ef37a49a3ac34b62d75243409116e0d21843c558f96763cc3015ba9e1")
        );
        assert_eq!(istiod.digest_provenance, Some(Provenance::Rebuilt));
        assert_eq!(digest_problem(&istiod), None);
        // meshstack's rebuild: a mismatch warns; upstream's archive: a mismatch refuses.
        assert!(!istiod.chart().digest_enforced);
        let kiali = pin(&sources, releases, name::KIALI_OPERATOR);
        assert_eq!(kiali.digest_provenance, Some(Provenance::Published));
        assert!(kiali.chart().digest_enforced);

        // A version meshstack has no digest for: none, and the problem says how to give one.
        let other = Releases {
            istio: ReleaseVersion::new(1, 18, 3),
            ..releases
        };
        let base = pin(&sources, other, name::ISTIO_BASE);
        assert_eq!(base.digest, None);
        let problem = digest_problem(&base).unwrap();
        assert!(
            problem.contains("charts.digests.base: sha256:"),
            "{problem}"
        );
        // The stack's digest wins, for whichever version it installs.
        sources.digests.insert("base".into(), "ab".repeat(32));
        let base = pin(&sources, other, name::ISTIO_BASE);
        assert_eq!(base.digest, Some("ab".repeat(32)));
        assert_eq!(base.digest_provenance, Some(Provenance::Stack));
        assert_eq!(
            serde_json::to_value(&base).unwrap()["digest"],
            format!("sha256:{}", "ab".repeat(32))
        );
    }

    #[test]
    fn digests_are_parsed() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_digest(&format!("sha256:{hex}")), Ok("ab".repeat(32)));
        assert_eq!(parse_digest(&hex), Ok("ab".repeat(32)));
        for bad in [
            "sha256:1234",
            "sha512:ab",
            "",
            &format!("sha256:{}g", &hex[1..]),
        ] {
            assert!(parse_digest(bad).is_err(), "{bad}");
        }
        // Every row of the table is a well-formed digest, one per chart and version.
        for (i, d) in DIGESTS.iter().enumerate() {
            assert_eq!(parse_digest(d.sha256).as_deref(), Ok(d.sha256));
            assert!(name::ALL.contains(&d.chart), "{}", d.chart);
            assert!(!DIGESTS[..i]
                .iter()
                .any(|e| e.chart == d.chart && e.version == d.version));
        }
    }

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
