//! Which versions work together: Kubernetes, Karpenter, Istio and the node AMI. Pure tables and
//! rules, applied by stack validation ([`crate::config`]), so that a pair that cannot work is
//! refused before any API call — for `plan`, `up` and `render` alike — instead of after the
//! VPC, the cluster and the node group have been built.
//!
//! Every table names its source; update it when a pin moves (see the README's "Checked against
//! upstream").

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A `MAJOR.MINOR.PATCH` release number, like `1.8.1`; ordered numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl ReleaseVersion {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> ReleaseVersion {
        ReleaseVersion {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for ReleaseVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Parses `MAJOR.MINOR.PATCH`; the error says what is wrong, without a fix.
impl FromStr for ReleaseVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<ReleaseVersion, String> {
        if s.starts_with(['v', 'V']) {
            return Err(format!("`{s}`: write the version without the 'v'"));
        }
        if s.contains(['-', '+']) {
            return Err(format!(
                "`{s}` is a pre-release or build version; meshstack installs released versions only"
            ));
        }
        let number = |p: &str| {
            let digits = !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit());
            (digits && (p == "0" || !p.starts_with('0')))
                .then(|| p.parse::<u32>().ok())
                .flatten()
        };
        match s.split('.').map(number).collect::<Vec<_>>()[..] {
            [Some(major), Some(minor), Some(patch)] => Ok(ReleaseVersion::new(major, minor, patch)),
            [Some(_), Some(_)] => Err(format!("`{s}` has no patch number")),
            _ => Err(format!(
                "`{s}` is not a release version (three numbers separated by dots)"
            )),
        }
    }
}

impl Serialize for ReleaseVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// Defaults. Each names its source and the day it was last checked; `doctor` checks the live truth.

/// Kubernetes 1.36: EKS standard support until 2027-08-02, the newest minor EKS offers and
/// Karpenter 1.14 accepts (sources: [`EKS_CALENDAR`], [`KARPENTER_MAX_KUBERNETES`]; checked
/// 2026-12-06).
pub const DEFAULT_KUBERNETES_VERSION: &str = "1.36";

/// Karpenter 1.14.1, the newest release on 2026-12-06 (aws/karpenter-provider-aws tag v1.14.1,
/// 2026-08-20), the first line whose controller accepts Kubernetes 1.36 being 1.13.
pub const DEFAULT_KARPENTER_VERSION: ReleaseVersion = ReleaseVersion::new(1, 14, 1);

/// Istio 1.18.7, the last 1.18 patch release (istio/istio tag 1.18.7): the demo this project
/// reproduces was built on Istio 1.18. It does not support Kubernetes 1.36
/// ([`istio_support_warning`] says so, and names the pair that is supported).
pub const DEFAULT_ISTIO_VERSION: ReleaseVersion = ReleaseVersion::new(1, 18, 7);

// ---------------------------------------------------------------------------------------
// EKS's Kubernetes calendar
// ---------------------------------------------------------------------------------------

/// A calendar day in UTC, the unit of EKS's support windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day {
    /// Year, like 2026.
    pub year: u16,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
}

impl Day {
    /// `year-month-day`.
    pub const fn new(year: u16, month: u8, day: u8) -> Day {
        Day { year, month, day }
    }

    /// The UTC day of `unix_secs`.
    pub fn from_unix(unix_secs: u64) -> Day {
        let (y, m, d) = crate::clock::civil_from_days(unix_secs / 86_400);
        Day::new(y as u16, m as u8, d as u8)
    }

    /// Today in UTC, by the system clock; `MESHSTACK_TODAY=YYYY-MM-DD` overrides it, so that
    /// tests (and a presenter rehearsing next month's talk) can ask what a day will bring.
    pub fn today() -> Day {
        if let Some(day) = std::env::var("MESHSTACK_TODAY")
            .ok()
            .and_then(|text| text.parse().ok())
        {
            return day;
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Day::from_unix(secs)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// `YYYY-MM-DD`, or the date of an RFC 3339 timestamp.
impl FromStr for Day {
    type Err = String;

    fn from_str(s: &str) -> Result<Day, String> {
        let date = s.get(..10).unwrap_or(s);
        let parts: Vec<&str> = date.split('-').collect();
        let bad = || format!("`{s}` is not a date like 2026-12-06");
        let [y, m, d] = parts[..] else {
            return Err(bad());
        };
        let (Ok(year), Ok(month), Ok(day)) = (y.parse::<u16>(), m.parse::<u8>(), d.parse::<u8>())
        else {
            return Err(bad());
        };
        if y.len() != 4 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return Err(bad());
        }
        Ok(Day::new(year, month, day))
    }
}

impl Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One Kubernetes minor's support window on EKS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EksVersion {
    /// The `N` of `1.N`.
    pub minor: u32,
    /// The first day billed at the extended-support price (AWS bills extended support "from
    /// the beginning of the day that the version reaches end of standard support", UTC).
    pub end_of_standard: Day,
    /// The first day EKS no longer runs (nor creates) clusters of this version.
    pub end_of_extended: Day,
}

/// Where [`EKS_CALENDAR`] comes from.
pub const EKS_CALENDAR_SOURCE: &str = "Amazon EKS User Guide, \"Amazon EKS Kubernetes release \
     calendar\" (docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html, as \
     scraped by endoflife.date's release-data, releases/amazon-eks.json, 2026-08-18)";

/// When [`EKS_CALENDAR`] was last compared with its source. `plan` prints it: past the newest
/// end date in the table, a check against `DescribeClusterVersions` is the only truth.
pub const EKS_CALENDAR_CHECKED: Day = Day::new(2026, 12, 6);

/// EKS's standard and extended support windows by Kubernetes minor, from
/// [`EKS_CALENDAR_SOURCE`], checked [`EKS_CALENDAR_CHECKED`]. Used when meshstack cannot ask
/// EKS (`DescribeClusterVersions`): without credentials, or offline. 1.37 is not here: no
/// source of that day showed EKS offering it.
pub const EKS_CALENDAR: &[EksVersion] = &[
    eks(29, (2025, 3, 23), (2026, 3, 23)),
    eks(30, (2025, 7, 23), (2026, 7, 23)),
    eks(31, (2025, 11, 26), (2026, 11, 26)),
    eks(32, (2026, 3, 23), (2027, 3, 23)),
    eks(33, (2026, 7, 29), (2027, 7, 29)),
    eks(34, (2026, 12, 2), (2027, 12, 2)),
    eks(35, (2027, 3, 27), (2028, 3, 27)),
    eks(36, (2027, 8, 2), (2028, 8, 2)),
];

const fn eks(minor: u32, standard: (u16, u8, u8), extended: (u16, u8, u8)) -> EksVersion {
    EksVersion {
        minor,
        end_of_standard: Day::new(standard.0, standard.1, standard.2),
        end_of_extended: Day::new(extended.0, extended.1, extended.2),
    }
}

/// Which support the stack pays for: `cluster.support`, sent to EKS as
/// `upgradePolicy.supportType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SupportType {
    /// Standard support only: the cluster is upgraded by EKS when standard support ends, and
    /// a version already past it is refused.
    #[default]
    Standard,
    /// Extended support: a version past standard support is allowed, at the extended price.
    Extended,
}

impl SupportType {
    /// The EKS API's `supportType` value.
    pub fn api_value(self) -> &'static str {
        match self {
            SupportType::Standard => "STANDARD",
            SupportType::Extended => "EXTENDED",
        }
    }

    /// The stack-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SupportType::Standard => "standard",
            SupportType::Extended => "extended",
        }
    }
}

/// Where a version's support window was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "from")]
pub enum CalendarSource {
    /// EKS's own `DescribeClusterVersions`, in the region the stack uses.
    Eks {
        /// The region asked.
        region: String,
    },
    /// meshstack's built-in table: [`EKS_CALENDAR`].
    BuiltIn {
        /// When the table was checked.
        checked: Day,
    },
}

impl fmt::Display for CalendarSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalendarSource::Eks { region } => write!(f, "EKS DescribeClusterVersions in {region}"),
            CalendarSource::BuiltIn { checked } => write!(
                f,
                "meshstack's built-in EKS calendar, checked {checked} (source: {EKS_CALENDAR_SOURCE})"
            ),
        }
    }
}

/// Where a Kubernetes minor stands on EKS on a given day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SupportStatus {
    /// In standard support: created and billed at the standard price.
    Standard,
    /// Past standard, in extended support: billed at the extended price.
    Extended,
    /// Past extended support: EKS creates no cluster of it.
    Ended,
    /// Not in the calendar: EKS does not offer it (yet, or any more).
    NotOffered,
}

impl fmt::Display for SupportStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SupportStatus::Standard => "standard support",
            SupportStatus::Extended => "extended support",
            SupportStatus::Ended => "past end of support",
            SupportStatus::NotOffered => "not offered by EKS",
        })
    }
}

/// A Kubernetes minor's support on EKS on one day, and where that was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KubernetesSupport {
    /// `1.N`.
    pub version: String,
    /// Where it stands.
    pub status: SupportStatus,
    /// The window, when the calendar has the version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_of_standard: Option<Day>,
    /// The window's end, when the calendar has the version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_of_extended: Option<Day>,
    /// Where the window was read.
    pub source: CalendarSource,
}

impl KubernetesSupport {
    /// The day the version's current support ends: standard support's end while in it,
    /// extended support's end while in that.
    pub fn ends(&self) -> Option<Day> {
        match self.status {
            SupportStatus::Standard => self.end_of_standard,
            SupportStatus::Extended => self.end_of_extended,
            SupportStatus::Ended | SupportStatus::NotOffered => None,
        }
    }

    /// One line for `plan`, `status` and `doctor`: `Kubernetes 1.36: standard support until
    /// 2027-08-02`.
    pub fn summary(&self) -> String {
        let version = &self.version;
        match (self.status, self.ends()) {
            (SupportStatus::Standard, Some(end)) => format!(
                "Kubernetes {version}: standard support until {end} (extended support to {})",
                self.end_of_extended
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ),
            (SupportStatus::Extended, Some(end)) => format!(
                "Kubernetes {version}: EXTENDED support (billed at the extended price) until {end}"
            ),
            (status, _) => format!("Kubernetes {version}: {status}"),
        }
    }
}

/// Where `1.<minor>` stands on `today` by `calendar`.
pub fn kubernetes_support(
    minor: u32,
    calendar: &[EksVersion],
    source: CalendarSource,
    today: Day,
) -> KubernetesSupport {
    let row = calendar.iter().find(|v| v.minor == minor);
    let status = match row {
        None => SupportStatus::NotOffered,
        Some(v) if today < v.end_of_standard => SupportStatus::Standard,
        Some(v) if today < v.end_of_extended => SupportStatus::Extended,
        Some(_) => SupportStatus::Ended,
    };
    KubernetesSupport {
        version: format!("1.{minor}"),
        status,
        end_of_standard: row.map(|v| v.end_of_standard),
        end_of_extended: row.map(|v| v.end_of_extended),
        source,
    }
}

/// Where `1.<minor>` stands today by the built-in calendar: for the commands that do not ask
/// EKS (a fleet's status, an offline plan).
pub fn builtin_support(minor: u32) -> KubernetesSupport {
    kubernetes_support(
        minor,
        EKS_CALENDAR,
        CalendarSource::BuiltIn {
            checked: EKS_CALENDAR_CHECKED,
        },
        Day::today(),
    )
}

/// Whether EKS will create `1.<minor>` for a stack that pays for `support`, on `today`.
///
/// # Errors
/// A [`VersionError`] naming `kubernetes_version` when EKS no longer (or does not yet)
/// create the version, or naming `cluster.support` when the version is in extended support
/// and the stack did not opt in; each lists the versions that work.
pub fn check_kubernetes_support(
    minor: u32,
    support: SupportType,
    calendar: &[EksVersion],
    source: CalendarSource,
    today: Day,
) -> Result<KubernetesSupport, VersionError> {
    let found = kubernetes_support(minor, calendar, source.clone(), today);
    let standard: Vec<String> = offered(calendar, &source, today, SupportStatus::Standard);
    let extended: Vec<String> = offered(calendar, &source, today, SupportStatus::Extended);
    let versions = |list: &[String]| match list {
        [] => "none".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    };
    let working = if extended.is_empty() {
        format!("use {} (standard support)", versions(&standard))
    } else {
        format!(
            "use {} (standard support), or {} with `cluster.support: extended`",
            versions(&standard),
            versions(&extended)
        )
    };
    let from = format!("(per {source})");
    match found.status {
        SupportStatus::Standard => Ok(found),
        SupportStatus::Extended if support == SupportType::Extended => Ok(found),
        SupportStatus::Extended => Err(VersionError {
            field: "kubernetes_version",
            message: format!(
                "Kubernetes 1.{minor} left EKS standard support on {}; a cluster of it is billed \
                 at the extended-support price until {} {from}; set `cluster: {{support: \
                 extended}}` in the stack to accept that, or {}",
                found.end_of_standard.expect("in the calendar"),
                found.end_of_extended.expect("in the calendar"),
                format_args!("use {} (standard support)", versions(&standard))
            ),
        }),
        SupportStatus::Ended => Err(VersionError {
            field: "kubernetes_version",
            message: format!(
                "Kubernetes 1.{minor} reached the end of EKS extended support on {}: EKS \
                 creates no cluster of it {from}; {working}",
                found.end_of_extended.expect("in the calendar"),
            ),
        }),
        SupportStatus::NotOffered => Err(VersionError {
            field: "kubernetes_version",
            message: format!("EKS does not offer Kubernetes 1.{minor} {from}; {working}"),
        }),
    }
}

fn offered(
    calendar: &[EksVersion],
    source: &CalendarSource,
    today: Day,
    status: SupportStatus,
) -> Vec<String> {
    let mut minors: Vec<u32> = calendar
        .iter()
        .filter(|v| kubernetes_support(v.minor, calendar, source.clone(), today).status == status)
        .map(|v| v.minor)
        .collect();
    minors.sort_unstable();
    minors.into_iter().map(|m| format!("\"1.{m}\"")).collect()
}

/// A version rule the stack breaks: the field to change and why, with what to use instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct VersionError {
    /// The stack setting to change, like `karpenter.version`.
    pub field: &'static str,
    /// Why it cannot work and what to use instead.
    pub message: String,
}

/// Which Karpenter API a release serves, which decides the manifests it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KarpenterApi {
    /// Before 0.33: `karpenter.sh/v1alpha5` Provisioner + AWSNodeTemplate.
    V1Alpha5,
    /// 0.33 to 0.37: `karpenter.sh/v1beta1` NodePool + EC2NodeClass, which meshstack has no
    /// manifests for.
    V1Beta1,
    /// 1.0 and later: `karpenter.sh/v1` NodePool + `karpenter.k8s.aws/v1` EC2NodeClass.
    V1,
}

/// The API `version` serves.
pub fn karpenter_api(version: ReleaseVersion) -> KarpenterApi {
    if version < ReleaseVersion::new(0, 33, 0) {
        KarpenterApi::V1Alpha5
    } else if version.major == 0 {
        KarpenterApi::V1Beta1
    } else {
        KarpenterApi::V1
    }
}

/// The oldest Karpenter release that supports Kubernetes `1.<minor>`, per Karpenter's
/// compatibility matrix (aws/karpenter-provider-aws, website/content/en/docs/upgrading/
/// compatibility.md; 1.29 from the v1.6 docs' copy of the table). `None` for a version the
/// table does not cover.
pub fn karpenter_minimum(kubernetes_minor: u32) -> Option<ReleaseVersion> {
    let v = ReleaseVersion::new;
    Some(match kubernetes_minor {
        25 => v(0, 25, 0),
        26 | 27 => v(0, 28, 0),
        28 => v(0, 31, 0),
        29 => v(0, 34, 0),
        30 => v(0, 37, 0),
        31 => v(1, 0, 5),
        32 => v(1, 2, 0),
        33 => v(1, 5, 0),
        34 => v(1, 6, 0),
        35 => v(1, 9, 0),
        36 => v(1, 13, 0),
        _ => return None,
    })
}

/// The newest Kubernetes minor each Karpenter line's controller accepts: `MaxK8sVersion` in
/// aws/karpenter-provider-aws pkg/providers/version/version.go (v1.8.1: 1.34; v1.12.0-2: 1.35;
/// v1.13.0 to v1.14.1: 1.36; read 2026-12-06 from the tags). For lines not read there (1.9 to
/// 1.11) the compatibility matrix gives the same bound: 1.35 needs 1.9, 1.36 needs 1.13.
/// Beyond it, Karpenter starts anyway and only logs "karpenter is not compatible with
/// kubernetes version".
const KARPENTER_MAX_KUBERNETES: &[(ReleaseVersion, u32)] = &[
    (ReleaseVersion::new(1, 13, 0), 36),
    (ReleaseVersion::new(1, 9, 0), 35),
    (ReleaseVersion::new(1, 6, 0), 34),
];

/// The newest Kubernetes minor `version`'s controller accepts, when meshstack knows it.
pub fn karpenter_maximum(version: ReleaseVersion) -> Option<u32> {
    KARPENTER_MAX_KUBERNETES
        .iter()
        .find(|(from, _)| version >= *from)
        .map(|(_, max)| *max)
}

/// The Karpenter controller policies meshstack carries, one per upstream policy: each is the
/// statement set of Karpenter's getting-started CloudFormation
/// (website/content/en/v1.X/getting-started/getting-started-with-karpenter/cloudformation.yaml)
/// for the releases it covers, merged into one inline policy where upstream splits it into
/// several managed policies (from 1.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerPolicy {
    /// 1.8.0 to 1.9.x: adds `iam:ListInstanceProfiles` on `*` (instance-profile garbage
    /// collection).
    V1_8,
    /// 1.10.0 to 1.11.x: `capacity-reservation` leaves the tag-conditioned create statement.
    V1_10,
    /// 1.12.x: placement groups.
    V1_12,
    /// 1.13.0 to 1.14.x: `ec2:DescribeInstanceStatus`, `arc-zonal-shift:GetManagedResource`.
    V1_13,
}

impl ControllerPolicy {
    /// The policy template's path in the repository.
    pub fn path(self) -> &'static str {
        match self {
            ControllerPolicy::V1_8 => "karpenter/controller-policy-1.8.json",
            ControllerPolicy::V1_10 => "karpenter/controller-policy-1.10.json",
            ControllerPolicy::V1_12 => "karpenter/controller-policy-1.12.json",
            ControllerPolicy::V1_13 => "karpenter/controller-policy-1.13.json",
        }
    }
}

/// The oldest and the first unsupported Karpenter release meshstack carries a policy for.
const POLICY_RANGE: (ReleaseVersion, ReleaseVersion) =
    (ReleaseVersion::new(1, 8, 0), ReleaseVersion::new(1, 15, 0));

/// The controller policy for `version`, or `None` when meshstack carries none for it.
pub fn controller_policy(version: ReleaseVersion) -> Option<ControllerPolicy> {
    let v = |minor| ReleaseVersion::new(1, minor, 0);
    Some(match version {
        x if x < POLICY_RANGE.0 || x >= POLICY_RANGE.1 => return None,
        x if x < v(10) => ControllerPolicy::V1_8,
        x if x < v(12) => ControllerPolicy::V1_10,
        x if x < v(13) => ControllerPolicy::V1_12,
        _ => ControllerPolicy::V1_13,
    })
}

/// Whether `version` watches capacity-reservation interruptions, which needs a fifth
/// EventBridge rule (upstream's CloudFormation adds it in 1.11).
pub fn capacity_reservation_interruptions(version: ReleaseVersion) -> bool {
    version >= ReleaseVersion::new(1, 11, 0)
}

/// The Karpenter API the stack gets, or why `version` cannot work with Kubernetes
/// `1.<kubernetes_minor>`.
///
/// # Errors
/// A [`VersionError`] naming `karpenter.version` when the release is older than Karpenter's
/// compatibility matrix allows for the Kubernetes version (which rules out every pre-0.33
/// release for Kubernetes 1.29 and newer), when it serves only `v1beta1` (0.33 to 0.37, for
/// which meshstack has no manifests), or when meshstack carries no controller policy for it;
/// naming `kubernetes_version` when the matrix does not cover it.
pub fn check_karpenter(
    version: ReleaseVersion,
    kubernetes_minor: u32,
) -> Result<KarpenterApi, VersionError> {
    let k8s = kubernetes_minor;
    let unsupported = |message: String| VersionError {
        field: "karpenter.version",
        message,
    };
    let Some(minimum) = karpenter_minimum(k8s) else {
        return Err(VersionError {
            field: "kubernetes_version",
            message: format!(
                "meshstack does not know which Karpenter release supports Kubernetes 1.{k8s}; \
                 check https://karpenter.sh/docs/upgrading/compatibility/ and use a \
                 kubernetes_version meshstack knows (1.29 to 1.36)"
            ),
        });
    };
    // meshstack's manifests need the v1 API and its policies start at 1.8.
    let lowest = minimum.max(POLICY_RANGE.0);
    let fix = format!(
        "use {lowest} or newer, up to 1.14.x (remove the key for the default, {})",
        DEFAULT_KARPENTER_VERSION
    );
    match karpenter_api(version) {
        KarpenterApi::V1Alpha5 if version < minimum => Err(unsupported(format!(
            "Karpenter {version} predates 0.33 and serves only the v1alpha5 Provisioner API \
             (karpenter/provisioner.yaml), and no release before {minimum} supports \
             Kubernetes 1.{k8s} (the stack's kubernetes_version), per Karpenter's \
             compatibility matrix; {fix}"
        ))),
        KarpenterApi::V1Beta1 => Err(unsupported(format!(
            "Karpenter {version} serves only the v1beta1 NodePool API, but meshstack's \
             karpenter/nodepool.yaml and ec2nodeclass.yaml use v1, served from Karpenter \
             1.0; {fix}"
        ))),
        _ if version < minimum => Err(unsupported(format!(
            "Karpenter {version} does not support Kubernetes 1.{k8s} (the stack's \
             kubernetes_version): Karpenter's compatibility matrix asks for {minimum} or \
             newer{}; {fix}",
            match karpenter_maximum(version) {
                Some(max) => format!(
                    ", and its controller accepts Kubernetes up to 1.{max} (it would start \
                     and only log that it is incompatible)"
                ),
                None => String::new(),
            }
        ))),
        KarpenterApi::V1 if controller_policy(version).is_none() => Err(unsupported(format!(
            "meshstack carries Karpenter's IAM controller policy for releases {} to 1.14.x \
             only (each release line needs its own permissions, from upstream's \
             getting-started CloudFormation), and not for {version}; {fix}",
            POLICY_RANGE.0
        ))),
        api => Ok(api),
    }
}

/// The first Kubernetes minor where a Service's `trafficDistribution` takes `PreferSameZone`
/// and `PreferSameNode` as GA values (KEP-3015: alpha 1.33, beta 1.34, GA 1.35; Kubernetes
/// 1.35 release notes; checked 2026-12-06).
pub const TRAFFIC_DISTRIBUTION_KUBERNETES: u32 = 35;

/// The first Istio release whose sidecars honour `PreferSameZone` and `PreferSameNode` (Istio
/// 1.27.0 change notes: "Added support for PreferSameNode and PreferSameZone in the
/// trafficDistribution field of the Kubernetes Service"; checked 2026-12-06).
pub const TRAFFIC_DISTRIBUTION_ISTIO: ReleaseVersion = ReleaseVersion::new(1, 27, 0);

/// Why `locality.mode: traffic-distribution` cannot work with Kubernetes 1.`kubernetes_minor`
/// and `istio`, naming the versions that work; `Ok` when both are new enough.
pub fn check_traffic_distribution(
    kubernetes_minor: u32,
    istio: ReleaseVersion,
    kubernetes_from: &str,
) -> Result<(), VersionError> {
    if kubernetes_minor < TRAFFIC_DISTRIBUTION_KUBERNETES {
        return Err(VersionError {
            field: "locality.mode",
            message: format!(
                "traffic-distribution needs Kubernetes 1.{TRAFFIC_DISTRIBUTION_KUBERNETES} or \
                 newer (PreferSameZone and PreferSameNode are GA from 1.35, KEP-3015), but \
                 {kubernetes_from} is 1.{kubernetes_minor}; use Kubernetes 1.35 or 1.36, or \
                 mode failover or distribute"
            ),
        });
    }
    if istio < TRAFFIC_DISTRIBUTION_ISTIO {
        return Err(VersionError {
            field: "locality.mode",
            message: format!(
                "traffic-distribution needs Istio {}.{} or newer (older sidecars ignore a \
                 Service's trafficDistribution), but istio.version is {istio}; set \
                 istio.version: 1.30.3 (the release documented for Kubernetes 1.36), or use \
                 mode failover or distribute",
                TRAFFIC_DISTRIBUTION_ISTIO.major, TRAFFIC_DISTRIBUTION_ISTIO.minor
            ),
        });
    }
    Ok(())
}

/// Istio minor releases and the Kubernetes minors they support, from istio.io's "Supported
/// Releases" table (as mirrored by endoflife.date, products/istio.md).
const ISTIO_KUBERNETES: &[(u32, u32, u32)] = &[
    (18, 24, 27),
    (19, 25, 28),
    (20, 25, 29),
    (21, 26, 29),
    (22, 27, 30),
    (23, 27, 30),
    (24, 28, 31),
    (25, 29, 32),
    (26, 29, 33),
    (27, 29, 33),
    (28, 30, 34),
    (29, 31, 35),
    (30, 32, 36),
];

/// A warning when `istio` does not support Kubernetes `1.<kubernetes_minor>`, with the
/// support range and the `istio.version` override; `None` when the pair is supported.
///
/// The demo was built on Istio 1.18, which supports Kubernetes 1.24 to 1.27 only, while EKS
/// (and meshstack) create nothing older than 1.29: the default stack gets this warning.
/// It is a warning, not an error, because the demo's features (sidecars, locality load
/// balancing, tracing) may well work; it is not a combination Istio tested.
pub fn istio_support_warning(istio: ReleaseVersion, kubernetes_minor: u32) -> Option<String> {
    let k8s = kubernetes_minor;
    let supporting: Vec<String> = ISTIO_KUBERNETES
        .iter()
        .filter(|(_, lo, hi)| (*lo..=*hi).contains(&k8s))
        .map(|(minor, _, _)| format!("1.{minor}"))
        .collect();
    let fix = match supporting.as_slice() {
        [] => String::new(),
        [one] => format!(
            "; to run a supported pair, set istio.version to a {one}.x release in the stack \
             file"
        ),
        [init @ .., last] => format!(
            "; to run a supported pair, set istio.version to a {} or {last} release (x.y.z) \
             in the stack file",
            init.join(", ")
        ),
    };
    let row = ISTIO_KUBERNETES
        .iter()
        .find(|(minor, _, _)| istio.major == 1 && *minor == istio.minor);
    match row {
        Some((_, lo, hi)) if (*lo..=*hi).contains(&k8s) => None,
        Some((_, lo, hi)) => Some(format!(
            "Istio {istio} supports Kubernetes 1.{lo} to 1.{hi} only (istio.io, Supported \
             Releases), but the stack's kubernetes_version is 1.{k8s}{}; the demo may work, \
             but Istio has not tested this pair{fix}",
            if *hi < 29 {
                " and EKS creates no cluster older than 1.29"
            } else {
                ""
            }
        )),
        None => Some(format!(
            "meshstack does not know which Kubernetes versions Istio {istio} supports; check \
             https://istio.io/latest/docs/releases/supported-releases/{fix}"
        )),
    }
}

/// The Kubernetes minors a helm release supports, by Helm's version-skew policy: a release
/// supports the minor of the client-go it is built with and the three before it
/// (helm.sh/docs/topics/version_skew, 2026-12-06: "3.20.x: 1.35.x - 1.32.x"; Helm 4 "n-3").
/// The client-go minor of each release line, from its go.mod: 3.19 -> 1.34, 3.20 -> 1.35, 3.21
/// (v3.21.4: client-go v0.36.2) -> 1.36; 4.0 -> 1.34 (the docs' example), 4.1 -> 1.35, 4.2 ->
/// 1.36, 4.3 (v4.3.2: client-go v0.37.2) -> 1.37. `None` for a line this table does not know.
pub fn helm_kubernetes_range(major: u64, minor: u64) -> Option<(u32, u32)> {
    let newest = match (major, minor) {
        (3, m @ 12..=21) => 15 + m as u32,
        (4, m @ 0..=3) => 34 + m as u32,
        _ => return None,
    };
    Some((newest - 3, newest))
}

/// Istio `istio`'s supported Kubernetes minors, from istio.io's "Supported Releases" table;
/// `None` for a release line the table does not have.
pub fn istio_kubernetes_range(istio: ReleaseVersion) -> Option<(u32, u32)> {
    ISTIO_KUBERNETES
        .iter()
        .find(|(minor, _, _)| istio.major == 1 && *minor == istio.minor)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// The kiali-operator chart for each Istio minor meshstack installs Kiali with: 1.73.2 for
/// Istio 1.18 (kiali.io's compatibility table: Kiali 1.73 with Istio 1.18), 2.26.0 for Istio
/// 1.30 (kiali.io's release menu labels v2.26 "istio v1.30"; istio/istio PR #60183 sets Istio
/// 1.30's Kiali addon to 2.26). Checked 2026-12-06.
const KIALI_FOR_ISTIO: &[(u32, ReleaseVersion)] = &[
    (18, ReleaseVersion::new(1, 73, 2)),
    (30, ReleaseVersion::new(2, 26, 0)),
];

/// The kiali-operator chart for `istio`.
///
/// # Errors
/// A [`VersionError`] naming `istio.version` for an Istio minor meshstack pairs with no Kiali.
pub fn kiali_operator(istio: ReleaseVersion) -> Result<ReleaseVersion, VersionError> {
    KIALI_FOR_ISTIO
        .iter()
        .find(|(minor, _)| istio.major == 1 && *minor == istio.minor)
        .map(|(_, kiali)| *kiali)
        .ok_or_else(|| VersionError {
            field: "istio.version",
            message: format!(
                "meshstack pairs Kiali with Istio {} only (each Istio line needs its own Kiali), \
                 not with {istio}; use a 1.18.x release (the demo's) or a 1.30.x release (one \
                 that supports Kubernetes 1.32 to 1.36)",
                KIALI_FOR_ISTIO
                    .iter()
                    .map(|(m, _)| format!("1.{m}"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        })
}

/// The AMI type of the managed node group, set explicitly rather than left to EKS's default
/// (which has changed over time and is AL2 for older clusters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AmiType {
    /// `AL2023_x86_64_STANDARD`.
    Al2023X86,
    /// `AL2023_ARM_64_STANDARD`, for Graviton instance types.
    Al2023Arm,
}

impl AmiType {
    /// The value of the EKS API's `amiType`.
    pub fn as_str(self) -> &'static str {
        match self {
            AmiType::Al2023X86 => "AL2023_x86_64_STANDARD",
            AmiType::Al2023Arm => "AL2023_ARM_64_STANDARD",
        }
    }
}

/// Kubernetes minors for which EKS publishes Amazon Linux 2023 node AMIs, per the EKS user
/// guide's "Amazon EKS optimized Amazon Linux AMIs" (AL2023 from 1.23; AL2 ends with 1.32).
const AL2023_MINORS: std::ops::RangeInclusive<u32> = 23..=36;

/// Whether an instance type runs on Graviton (arm64): the first-generation `a1`, or a family
/// whose generation digit is followed by `g` (`m6g`, `c7gn`, `t4g`, `im4gn`); not `g5`/`g4dn`,
/// whose `g` is the GPU family letter.
pub fn is_graviton(instance_type: &str) -> bool {
    let family = instance_type.split('.').next().unwrap_or_default();
    if family == "a1" {
        return true;
    }
    let letters = family.trim_start_matches(|c: char| c.is_ascii_lowercase());
    let after_digits = letters.trim_start_matches(|c: char| c.is_ascii_digit());
    letters.len() != after_digits.len() && after_digits.starts_with('g')
}

/// The node group's AMI type for Kubernetes `1.<kubernetes_minor>` and its instance types.
///
/// # Errors
/// A [`VersionError`] naming `kubernetes_version` when EKS publishes no AL2023 AMI for it,
/// or `node_group.instance_types` when the list mixes Graviton and x86 types (one node group
/// has one AMI).
pub fn node_ami_type(
    kubernetes_minor: u32,
    instance_types: &[String],
) -> Result<AmiType, VersionError> {
    if !AL2023_MINORS.contains(&kubernetes_minor) {
        return Err(VersionError {
            field: "kubernetes_version",
            message: format!(
                "EKS publishes no Amazon Linux 2023 node AMI for Kubernetes 1.{kubernetes_minor} \
                 (AL2023 AMIs exist for 1.{} to 1.{}); use one of those",
                AL2023_MINORS.start(),
                AL2023_MINORS.end()
            ),
        });
    }
    let arm: Vec<&str> = instance_types
        .iter()
        .map(String::as_str)
        .filter(|t| is_graviton(t))
        .collect();
    match arm.len() {
        0 => Ok(AmiType::Al2023X86),
        n if n == instance_types.len() => Ok(AmiType::Al2023Arm),
        _ => Err(VersionError {
            field: "node_group.instance_types",
            message: format!(
                "mixes Graviton (arm64: {}) and x86 instance types, but a node group runs one \
                 AMI; list types of one architecture",
                arm.join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: u32, b: u32, c: u32) -> ReleaseVersion {
        ReleaseVersion::new(a, b, c)
    }

    fn builtin() -> CalendarSource {
        CalendarSource::BuiltIn {
            checked: EKS_CALENDAR_CHECKED,
        }
    }

    #[test]
    fn support_follows_the_calendar_by_the_day() {
        let today = Day::new(2026, 12, 6);
        let check = |minor, support| {
            check_kubernetes_support(minor, support, EKS_CALENDAR, builtin(), today)
        };
        let ok = check(36, SupportType::Standard).unwrap();
        assert_eq!(ok.status, SupportStatus::Standard);
        assert_eq!(ok.ends(), Some(Day::new(2027, 8, 2)));
        assert!(
            ok.summary().contains("standard support until 2027-08-02"),
            "{}",
            ok.summary()
        );
        // 1.34 left standard support on 2026-12-02: refused unless the stack opts in.
        let e = check(34, SupportType::Standard).unwrap_err();
        assert_eq!(e.field, "kubernetes_version");
        for part in [
            "2026-12-02",
            "cluster: {support: extended}",
            "\"1.35\" or \"1.36\"",
        ] {
            assert!(e.message.contains(part), "want {part:?} in {e}");
        }
        let ext = check(33, SupportType::Extended).unwrap();
        assert_eq!(ext.status, SupportStatus::Extended);
        assert_eq!(ext.ends(), Some(Day::new(2027, 7, 29)));
        // 1.31's extended support ended 2026-11-26: refused whatever the stack says.
        let e = check(31, SupportType::Extended).unwrap_err();
        assert!(
            e.message
                .contains("end of EKS extended support on 2026-11-26"),
            "{e}"
        );
        assert!(
            e.message.contains("\"1.32\", \"1.33\" or \"1.34\" with"),
            "{e}"
        );
        let e = check(37, SupportType::Standard).unwrap_err();
        assert!(e.message.contains("does not offer Kubernetes 1.37"), "{e}");
        assert!(
            e.message
                .contains("built-in EKS calendar, checked 2026-12-06"),
            "{e}"
        );
        // The first day of extended billing is the day standard support ends.
        let on_the_day = kubernetes_support(34, EKS_CALENDAR, builtin(), Day::new(2026, 12, 2));
        assert_eq!(on_the_day.status, SupportStatus::Extended);
        let day_before = kubernetes_support(34, EKS_CALENDAR, builtin(), Day::new(2026, 12, 1));
        assert_eq!(day_before.status, SupportStatus::Standard);
    }

    #[test]
    fn the_default_kubernetes_version_is_in_standard_support_and_karpenter_accepts_it() {
        let minor: u32 = DEFAULT_KUBERNETES_VERSION[2..].parse().unwrap();
        let s = kubernetes_support(minor, EKS_CALENDAR, builtin(), EKS_CALENDAR_CHECKED);
        assert_eq!(s.status, SupportStatus::Standard);
        assert!(check_karpenter(DEFAULT_KARPENTER_VERSION, minor).is_ok());
        assert!(karpenter_maximum(DEFAULT_KARPENTER_VERSION) >= Some(minor));
        assert!(kiali_operator(DEFAULT_ISTIO_VERSION).is_ok());
        assert!(kiali_operator(ReleaseVersion::new(1, 30, 3)).is_ok());
        assert!(istio_support_warning(ReleaseVersion::new(1, 30, 3), minor).is_none());
    }

    #[test]
    fn karpenter_maximum_agrees_with_the_controllers_own_check() {
        // MaxK8sVersion in pkg/providers/version/version.go at these tags (see
        // KARPENTER_MAX_KUBERNETES).
        for (version, max) in [
            (v(1, 8, 1), 34),
            (v(1, 12, 0), 35),
            (v(1, 12, 2), 35),
            (v(1, 13, 0), 36),
            (v(1, 14, 1), 36),
        ] {
            assert_eq!(karpenter_maximum(version), Some(max), "{version}");
        }
        let e = check_karpenter(v(1, 8, 1), 36).unwrap_err();
        assert!(e.message.contains("1.13.0"), "{e}");
        assert!(e.message.contains("accepts Kubernetes up to 1.34"), "{e}");
    }

    #[test]
    fn days_parse_and_print() {
        assert_eq!("2027-08-02".parse::<Day>(), Ok(Day::new(2027, 8, 2)));
        assert_eq!(
            "2027-08-02T00:00:00Z".parse::<Day>(),
            Ok(Day::new(2027, 8, 2))
        );
        assert!("2027-13-02".parse::<Day>().is_err());
        assert_eq!(Day::from_unix(0).to_string(), "1970-01-01");
    }

    #[test]
    fn karpenter_api_by_version() {
        for (version, api) in [
            (v(0, 16, 3), KarpenterApi::V1Alpha5),
            (v(0, 32, 10), KarpenterApi::V1Alpha5),
            (v(0, 33, 0), KarpenterApi::V1Beta1),
            (v(0, 37, 7), KarpenterApi::V1Beta1),
            (v(1, 0, 0), KarpenterApi::V1),
            (v(1, 8, 1), KarpenterApi::V1),
            (v(2, 0, 0), KarpenterApi::V1),
        ] {
            assert_eq!(karpenter_api(version), api, "{version}");
        }
    }

    #[test]
    fn controller_policies_cover_1_8_to_1_14() {
        for (version, want) in [
            (v(1, 7, 9), None),
            (v(1, 8, 0), Some(ControllerPolicy::V1_8)),
            (v(1, 9, 2), Some(ControllerPolicy::V1_8)),
            (v(1, 10, 0), Some(ControllerPolicy::V1_10)),
            (v(1, 11, 3), Some(ControllerPolicy::V1_10)),
            (v(1, 12, 2), Some(ControllerPolicy::V1_12)),
            (v(1, 13, 0), Some(ControllerPolicy::V1_13)),
            (v(1, 14, 1), Some(ControllerPolicy::V1_13)),
            (v(1, 15, 0), None),
            (v(0, 32, 0), None),
        ] {
            assert_eq!(controller_policy(version), want, "{version}");
        }
        assert!(!capacity_reservation_interruptions(v(1, 10, 2)));
        assert!(capacity_reservation_interruptions(v(1, 11, 0)));
    }

    #[test]
    fn impossible_karpenter_pairs_are_refused_naming_the_field() {
        for (k8s, version, ok, message) in [
            (34, v(0, 32, 10), false, "v1alpha5"),
            (34, v(0, 16, 3), false, "no release before 1.6.0"),
            (34, v(0, 37, 0), false, "v1beta1"),
            (29, v(0, 36, 1), false, "use 1.8.0 or newer"),
            (34, v(1, 5, 4), false, "1.6.0 or newer"),
            (
                34,
                v(1, 6, 0),
                false,
                "controller policy for releases 1.8.0 to 1.14.x",
            ),
            (34, v(1, 8, 0), true, ""),
            (35, v(1, 8, 1), false, "1.9.0"),
            (35, v(1, 9, 0), true, ""),
            (36, v(1, 12, 9), false, "1.13.0"),
            (36, v(1, 13, 0), true, ""),
            (36, v(1, 15, 0), false, "not for 1.15.0"),
            (31, v(1, 0, 5), false, "controller policy"),
            (29, v(0, 32, 0), false, "v1alpha5"),
        ] {
            match check_karpenter(version, k8s) {
                Ok(_) => assert!(ok, "1.{k8s} + {version}: accepted"),
                Err(e) => {
                    assert!(!ok, "1.{k8s} + {version}: {e}");
                    assert_eq!(e.field, "karpenter.version");
                    let text = e.to_string();
                    assert!(text.starts_with("karpenter.version: "), "{text}");
                    assert!(text.contains(message), "want {message:?} in {text}");
                }
            }
        }
        let e = check_karpenter(v(1, 8, 1), 40).unwrap_err();
        assert_eq!(e.field, "kubernetes_version");
    }

    #[test]
    fn every_kubernetes_version_a_stack_allows_has_a_karpenter_and_an_ami() {
        for minor in 29..=36 {
            let min = karpenter_minimum(minor).unwrap();
            assert!(min <= v(1, 13, 0), "1.{minor}");
            assert!(
                node_ami_type(minor, &["m5.large".into()]).is_ok(),
                "1.{minor}"
            );
        }
    }

    #[test]
    fn istio_warning() {
        let warning = istio_support_warning(v(1, 18, 7), 34).unwrap();
        for part in [
            "Istio 1.18.7 supports Kubernetes 1.24 to 1.27 only",
            "kubernetes_version is 1.34",
            "EKS creates no cluster older than 1.29",
            "istio.version",
            "1.28, 1.29 or 1.30",
        ] {
            assert!(warning.contains(part), "want {part:?} in {warning}");
        }
        assert_eq!(istio_support_warning(v(1, 28, 2), 34), None);
        let unknown = istio_support_warning(v(1, 99, 0), 34).unwrap();
        assert!(unknown.contains("does not know"), "{unknown}");
    }

    #[test]
    fn ami_type_follows_the_architecture() {
        let types = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            node_ami_type(
                34,
                &types(&["m5.large", "m6i.large", "g5.xlarge", "g4dn.xlarge"])
            ),
            Ok(AmiType::Al2023X86)
        );
        assert_eq!(
            node_ami_type(
                34,
                &types(&["m6g.large", "c7gn.large", "t4g.medium", "a1.large"])
            ),
            Ok(AmiType::Al2023Arm)
        );
        let mixed = node_ami_type(34, &types(&["m5.large", "m7g.large"])).unwrap_err();
        assert_eq!(mixed.field, "node_group.instance_types");
        assert!(mixed.message.contains("m7g.large"), "{mixed}");
        assert_eq!(
            node_ami_type(22, &types(&["m5.large"])).unwrap_err().field,
            "kubernetes_version"
        );
        assert_eq!(AmiType::Al2023X86.as_str(), "AL2023_x86_64_STANDARD");
    }
}
