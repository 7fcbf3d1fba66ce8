//! The stack file: what meshstack builds, read from YAML and checked before any AWS call.
//!
//! Two layers, as ripgrep splits low-level from high-level arguments: the private `Raw*`
//! structs mirror the YAML (every key optional, unknown keys rejected), and [`Stack`] holds
//! validated values with defaults applied, so a stage never sees a missing or unchecked
//! setting. A mistake is reported once, here, as `{file}: {field}: {message}` with a dotted
//! field path (`network.vpc_cidr`, `zones[1]`) and a message that says how to fix it.
//!
//! Adding a section (say `karpenter:`) takes a `RawKarpenter` with `deny_unknown_fields`, a
//! public `KarpenterSpec`, a `resolve` from one to the other, and one field on `RawStack`,
//! `Stack` and the struct literal in `RawStack::resolve`.
//!
//! The parts, one file each: [`raw`] (the YAML shapes), [`resolve`] (raw -> [`Stack`], every
//! rule and default), [`errors`] (what a file did wrong, serde_yaml's messages with the field
//! path and a did-you-mean), [`cidr`] (IPv4 blocks) and [`state`] (where the journal lives).
//! Version facts — which Kubernetes, Karpenter and Istio releases exist and work together —
//! are data in [`crate::versions`], which this module reads and which never reads it.

mod access;
mod cidr;
mod errors;
mod raw;
mod resolve;
mod state;
#[cfg(test)]
mod tests;

pub use crate::versions::{ReleaseVersion, DEFAULT_KARPENTER_VERSION};
pub use access::{AccessPolicy, AccessSpec};
pub use cidr::{Ipv4Cidr, ParseCidrError};
pub use errors::ConfigError;
pub use state::{S3Location, StateLocation, StateSpec};

pub use crate::charts::ChartSources;

use crate::charts;
use errors::{closest, invalid, yaml_error, yaml_scalar, Check};
use raw::RawStack;
use resolve::name_problem;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::versions::{self, DEFAULT_ISTIO_VERSION, DEFAULT_KUBERNETES_VERSION};

/// Where `meshstack` looks for the stack file when none is given.
pub const DEFAULT_STACK_PATH: &str = "stacks/demo.yaml";

/// The default stack, compiled in so the binary works outside a checkout.
pub const DEFAULT_STACK_YAML: &str = include_str!("../../stacks/demo.yaml");

/// What error messages call the built-in stack.
const EMBEDDED_ORIGIN: &str = "stacks/demo.yaml (built in)";

/// The longest stack name. The name prefixes IAM role and other AWS resource names, several of
/// which are capped at 64 characters or fewer; 24 leaves room for the longest suffix meshstack
/// appends. A fleet's environments are stacks too, so a fleet's stack name must leave room for
/// the environment suffix as well ([`fleet_env_name`]).
pub const NAME_MAX_LEN: usize = 24;

/// The longest `expires_in:` / `--expires-in`: a workshop environment that outlives a year is
/// a typo.
const LIFETIME_MAX: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// Stack files larger than this are refused unread: a stack file is a few dozen lines.
pub const STACK_FILE_MAX_BYTES: u64 = 1024 * 1024;

// EKS needs subnets in at least two zones; the VPC layout carves at most six private
// subnets (see `Stack::subnet_cidrs`).
const ZONES_MIN: usize = 2;
const ZONES_MAX: usize = 6;
const DEFAULT_ZONES: usize = 3;

// /16 is the largest VPC AWS allows; /20 still leaves each zone a /23 for pods, which the
// VPC CNI gives real VPC addresses.
const VPC_PREFIX_MIN: u8 = 16;
const VPC_PREFIX_MAX: u8 = 20;
const DEFAULT_VPC_CIDR: Ipv4Cidr = Ipv4Cidr {
    addr: Ipv4Addr::new(10, 0, 0, 0),
    prefix: 16,
};
/// RFC 1918 plus the RFC 6598 shared range, which AWS also accepts for VPCs.
const PRIVATE_RANGES: [Ipv4Cidr; 4] = [
    Ipv4Cidr {
        addr: Ipv4Addr::new(10, 0, 0, 0),
        prefix: 8,
    },
    Ipv4Cidr {
        addr: Ipv4Addr::new(172, 16, 0, 0),
        prefix: 12,
    },
    Ipv4Cidr {
        addr: Ipv4Addr::new(192, 168, 0, 0),
        prefix: 16,
    },
    Ipv4Cidr {
        addr: Ipv4Addr::new(100, 64, 0, 0),
        prefix: 10,
    },
];
const EVERYWHERE: Ipv4Cidr = Ipv4Cidr {
    addr: Ipv4Addr::new(0, 0, 0, 0),
    prefix: 0,
};

// The seed's products-1 deployment pins m5.large, so the default nodes must be that type.
const DEFAULT_INSTANCE_TYPE: &str = "m5.large";
const SIZE_MIN: i64 = 1;
const SIZE_MAX: i64 = 100;
const DEFAULT_SIZE: u32 = 3;
// The EKS-optimized AMIs need 20 GiB; the cap catches a typo before it costs money.
const DISK_MIN: i64 = 20;
const DISK_MAX: i64 = 1000;
const DEFAULT_DISK: u32 = 20;

const DEFAULT_KARPENTER_CAPACITY: [CapacityType; 2] = [CapacityType::Spot, CapacityType::OnDemand];
// Istio's sampling is a percentage of requests traced; the demo traces every request.
const DEFAULT_TRACING_SAMPLING: f64 = 100.0;

// The seed's orders DestinationRule: its connection pool and outlier detection are sound;
// its distribute weights are not (see `LocalitySpec`).
const DEFAULT_LOCAL_WEIGHT: u32 = 80;
const DEFAULT_HTTP2_MAX_REQUESTS: u32 = 10;
const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u32 = 10;
const DEFAULT_CONSECUTIVE_GATEWAY_ERRORS: u32 = 1;
const DEFAULT_OUTLIER_INTERVAL: &str = "1m";
const DEFAULT_BASE_EJECTION_TIME: &str = "30s";
// In failover mode all orders traffic should stay in its zone; 80% leaves room for the
// requests a fresh proxy sends before it knows the localities and for ejected endpoints.
const DEFAULT_ORDERS_IN_ZONE_MIN_FAILOVER: f64 = 80.0;
// In distribute mode the measured share scatters around local_weight.
const DISTRIBUTE_TOLERANCE: f64 = 5.0;
// internalTrafficPolicy: Local has no fallback: anything below 100% means calls went
// off-node, i.e. the policy is not in force.
const DEFAULT_PRODUCTS_ON_NODE_MIN: f64 = 100.0;
// A request the app answered with an error is the failure the demo is about (a products call
// dropped under internalTrafficPolicy: Local): none is tolerated unless the stack says so.
const DEFAULT_FAILED_REQUESTS_MAX: f64 = 0.0;

// AWS allows 50 tags per resource; meshstack adds its own, so users get fewer.
const TAGS_MAX: usize = 20;
const TAG_KEY_MAX: usize = 128;
const TAG_VALUE_MAX: usize = 256;
const RESERVED_TAG_PREFIXES: [(&str, &str); 2] = [
    ("aws:", "reserved by AWS"),
    (
        "meshstack.io/",
        "reserved for the tags meshstack sets itself",
    ),
];

// ---------------------------------------------------------------------------------------
// Validated types
// ---------------------------------------------------------------------------------------

/// A validated stack file: everything meshstack builds, with defaults applied.
///
/// # Guarantees
/// A `Stack` from [`Stack::load`] or [`Stack::parse`] satisfies every rule in this module;
/// in particular [`Stack::subnet_cidrs`] works for every zone index below
/// [`Stack::zone_count`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stack {
    /// Stack name (`[a-z][a-z0-9-]*`, at most 24); prefixes AWS resource names and tags.
    pub name: String,
    /// The explicit region, or the one implied by an explicit zone list.
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    /// How many availability zones to use, or exactly which.
    pub zones: ZoneSpec,
    /// EKS minor version, like `"1.34"`.
    pub kubernetes_version: String,
    /// The VPC.
    pub network: NetworkSpec,
    /// The EKS managed node group.
    pub node_group: NodeGroupSpec,
    /// The EKS control plane's API endpoint.
    pub cluster: ClusterSpec,
    /// If non-empty, meshstack refuses to act in any other AWS account.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_account_ids: Vec<String>,
    /// Extra tags for every AWS resource meshstack creates.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The Karpenter release and what its NodePool may buy.
    pub karpenter: KarpenterSpec,
    /// The Istio release and its tracing.
    pub istio: IstioSpec,
    /// The orders DestinationRule's locality load balancing and what `verify` expects of it.
    pub locality: LocalitySpec,
    /// `charts:`: where the helm charts come from when not from their defaults.
    #[serde(skip_serializing_if = "ChartSources::is_default")]
    pub charts: ChartSources,
    /// Where the journal and lock live (`state`, `state_require_versioning`,
    /// `state_kms_key`).
    #[serde(skip_serializing_if = "StateSpec::is_default")]
    pub state: StateSpec,
    /// `expires_in:`: how long after its creation the stack may live; `up` then tags every
    /// resource with `meshstack.io/expires-at` and `meshstack reap` finds it once that passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<Lifetime>,
    /// `images:`: the app's images pinned by digest, by key (`graphql`, `orders-v1`, ...);
    /// the others run by their default tags (`crate::images`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// `access:`: attendees' access to the cluster (the `access` stage).
    #[serde(skip_serializing_if = "access_is_default")]
    pub access: AccessSpec,
}

fn access_is_default(a: &AccessSpec) -> bool {
    *a == AccessSpec::default()
}

/// How deep `[`/`{` may nest in a stack file: the deepest setting needs 3.
pub const MAX_NESTING: usize = 32;

/// The line where YAML flow brackets first nest deeper than [`MAX_NESTING`], if they do
/// (brackets inside quotes and comments do not count).
fn too_deep(yaml: &str) -> Option<usize> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    let mut chars = yaml.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\n') => {
                line += 1;
                comment = false;
            }
            _ if comment => {}
            (Some('"'), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if prev.is_whitespace() => comment = true,
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(line);
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    None
}

/// A lifetime such as `8h`, `90m`, `1h30m` or `2d` (`expires_in:`, `--expires-in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lifetime(std::time::Duration);

impl Lifetime {
    /// The duration.
    pub fn duration(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Lifetime {
    type Err = String;

    /// Whole numbers with units `d`, `h`, `m`, `s`, largest first (`1h30m`); more than zero
    /// and at most a year.
    fn from_str(text: &str) -> Result<Lifetime, String> {
        let hint = "write a duration with units, like 8h, 90m, 1h30m or 2d";
        let t = text.trim();
        if t.is_empty() {
            return Err(format!("is empty; {hint}"));
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        let mut last_unit = u64::MAX;
        for c in t.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                'd' => 86_400,
                'h' => 3_600,
                'm' => 60,
                's' => 1,
                _ => {
                    return Err(format!(
                        "`{text}` is not a duration ({c:?} is not a unit); {hint}"
                    ))
                }
            };
            if digits.is_empty() {
                return Err(format!(
                    "`{text}` is not a duration (a unit without a number); {hint}"
                ));
            }
            if unit >= last_unit {
                return Err(format!(
                    "`{text}` is not a duration (give each unit once, largest first); {hint}"
                ));
            }
            last_unit = unit;
            let n: u64 = digits
                .parse()
                .map_err(|_| format!("`{text}` is too long a duration; {hint}"))?;
            digits.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("`{text}` is too long a duration; {hint}"))?;
        }
        if !digits.is_empty() {
            return Err(format!(
                "`{text}` has no unit after {digits}; {hint} (a bare number is ambiguous)"
            ));
        }
        let d = std::time::Duration::from_secs(total);
        if d.is_zero() {
            return Err(format!(
                "`{text}` is zero; an environment needs some time to live"
            ));
        }
        if d > LIFETIME_MAX {
            return Err(format!("`{text}` is more than a year; {hint}"));
        }
        Ok(Lifetime(d))
    }
}

impl fmt::Display for Lifetime {
    /// The shortest form with the same value: `8h`, `1h30m`, `2d`, `45s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0.as_secs();
        for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if rest >= secs {
                write!(f, "{}{unit}", rest / secs)?;
                rest %= secs;
            }
        }
        Ok(())
    }
}

impl Serialize for Lifetime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Environment `suffix` of a fleet of `stack_name`: `<stack_name>-<suffix>`, checked against
/// the stack-name rules. The error says how long the stack name may be for this suffix.
pub fn fleet_env_name(stack_name: &str, suffix: &str) -> Result<String, String> {
    let env = format!("{stack_name}-{suffix}");
    if env.chars().count() > NAME_MAX_LEN {
        let room = NAME_MAX_LEN.saturating_sub(suffix.chars().count() + 1);
        return Err(format!(
            "environment `{env}` would be {} characters long, and environments are stacks,              whose names may have at most {NAME_MAX_LEN}: with the suffix `-{suffix}` the stack              name `{stack_name}` ({} characters) may have at most {room}; shorten `name:` in              the stack file{}",
            env.chars().count(),
            stack_name.chars().count(),
            if suffix.chars().all(|c| c.is_ascii_digit()) {
                " or make the fleet smaller"
            } else {
                " or use shorter --names"
            }
        ));
    }
    match name_problem(&env) {
        None => Ok(env),
        Some(problem) => Err(format!("environment name {problem}")),
    }
}

/// Which availability zones the VPC and cluster span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ZoneSpec {
    /// The first `n` zones the region offers (2..=6).
    Count(usize),
    /// Exactly these zones, in this order (2..=6, all in one region).
    Names(Vec<String>),
}

/// The VPC meshstack creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkSpec {
    /// The VPC's CIDR block: private range, prefix /16 to /20, no host bits.
    pub vpc_cidr: Ipv4Cidr,
    /// How private subnets reach the internet.
    pub nat: NatMode,
}

/// NAT gateway layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatMode {
    /// One NAT gateway per zone: no cross-zone NAT traffic, survives a zone outage.
    #[default]
    PerZone,
    /// One NAT gateway for all zones: cheaper, but traffic from other zones crosses zones.
    Single,
}

/// The EKS managed node group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeGroupSpec {
    /// EC2 instance types, most preferred first; never empty, no duplicates.
    pub instance_types: Vec<String>,
    /// Desired number of nodes (1..=100).
    pub size: u32,
    /// Root volume size in GiB (20..=1000).
    pub disk_size_gib: u32,
    /// On-demand or spot capacity.
    pub capacity_type: CapacityType,
}

/// How the node group buys EC2 capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    /// Regular instances.
    #[default]
    OnDemand,
    /// Spot instances: cheaper, can be reclaimed at two minutes' notice.
    Spot,
}

/// The EKS API server endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSpec {
    /// Reachable from the internet (limited to `public_access_cidrs`).
    pub endpoint_public_access: bool,
    /// Reachable from inside the VPC.
    pub endpoint_private_access: bool,
    /// Who may reach the public endpoint; never empty, no host bits.
    pub public_access_cidrs: Vec<Ipv4Cidr>,
    /// `support:`: the EKS support the stack pays for (`standard`, the default, or
    /// `extended`), sent as `upgradePolicy.supportType`; a Kubernetes version past standard
    /// support is refused unless this says `extended`.
    pub support: versions::SupportType,
    /// `existing:`: run the Kubernetes half on a cluster meshstack does not build (and never
    /// removes); then the AWS stages are off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing: Option<ExistingCluster>,
}

/// A cluster meshstack did not build, reached through a kubeconfig (exec plugins work).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExistingCluster {
    /// The kubeconfig context; `None`: the kubeconfig's current context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The kubeconfig file; `None`: `KUBECONFIG`, else `~/.kube/config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<std::path::PathBuf>,
}

/// Karpenter, installed by the `karpenter` stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KarpenterSpec {
    /// Helm chart (= controller) version. Format-checked here; whether it suits the
    /// stack's Kubernetes version is checked by `render`, which also picks the API by it.
    pub version: ReleaseVersion,
    /// Capacity types the NodePool may launch; never empty, no duplicates.
    pub capacity_types: Vec<CapacityType>,
}

/// Istio, installed from its helm charts by the `istio` stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IstioSpec {
    /// Chart version of base, istiod and gateway.
    pub version: ReleaseVersion,
    /// Share of requests the sidecars trace, in percent (0..=100).
    pub tracing_sampling: Percent,
    /// `ingress_source_ranges`: who may reach the ingress gateway's load balancer (its
    /// Service's `loadBalancerSourceRanges`); empty: anyone (`plan` warns).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress_source_ranges: Vec<Ipv4Cidr>,
}

/// The locality policies the `locality` stage applies and the shares `verify` demands.
///
/// The seed's rule sent 80% of the orders traffic from *every* zone to one zone; here each
/// zone keeps its own traffic (`failover`) or `local_weight` percent of it (`distribute`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalitySpec {
    /// How the orders DestinationRule spreads traffic over zones.
    pub mode: LocalityMode,
    /// Percent of a zone's orders calls that stay in it (1..=100), the rest spread evenly
    /// over the other zones; `Some` exactly in `distribute` mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_weight: Option<u32>,
    /// `distribute` mode: explicit weights, `from zone -> to zone -> percent`, each row
    /// adding up to 100; zones without a row get `local_weight`. Empty unless set.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub distribute: BTreeMap<String, BTreeMap<String, u32>>,
    /// The orders rule's HTTP connection pool.
    pub connection_pool: ConnectionPoolSpec,
    /// The orders rule's outlier detection, without which Istio ignores locality settings.
    pub outlier_detection: OutlierDetectionSpec,
    /// What `meshstack verify` demands of the measured traffic.
    pub verify: LocalityVerifySpec,
}

/// How the orders DestinationRule uses zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocalityMode {
    /// Stay in the caller's zone; fail over to other zones of the region only when the local
    /// endpoints are ejected by outlier detection.
    #[default]
    Failover,
    /// Keep `local_weight` percent in the caller's zone, spread the rest over the others.
    Distribute,
    /// Kubernetes' own field instead of the 2023 pattern: `trafficDistribution:
    /// PreferSameZone` on orders-service and `PreferSameNode` on products-service, no
    /// DestinationRule and no `internalTrafficPolicy: Local`. Local endpoints are preferred
    /// and others used when there are none (a fallback, where `Local` drops the call).
    TrafficDistribution,
}

/// Istio `ConnectionPoolSettings.http` values for the orders rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionPoolSpec {
    /// `http2MaxRequests`: concurrent requests to one orders endpoint (>= 1).
    pub http2_max_requests: u32,
    /// `maxRequestsPerConnection` (>= 1).
    pub max_requests_per_connection: u32,
}

/// Istio `OutlierDetection` values for the orders rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierDetectionSpec {
    /// `consecutiveGatewayErrors`: 502/503/504s before an endpoint is ejected (>= 1).
    pub consecutive_gateway_errors: u32,
    /// `interval` between ejection sweeps, an Istio duration like `1m` or `10s`.
    pub interval: String,
    /// `baseEjectionTime`, an Istio duration like `30s`.
    pub base_ejection_time: String,
}

/// The shares `meshstack verify` demands, in percent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalityVerifySpec {
    /// Minimum share of orders calls that stay in the caller's zone, per zone.
    pub orders_in_zone_min: Percent,
    /// Minimum share of products calls answered on the caller's node.
    pub products_on_node_min: Percent,
    /// Most requests `verify` may see fail (an error status, or graphql's HTTP 200 with an
    /// `errors` array), in percent of the requests it sent; default 0.
    pub failed_requests_max: Percent,
}

/// A percentage, 0 to 100.
///
/// # Guarantees
/// Never NaN (validation refuses it), which is what makes the `Eq` impl sound.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
pub struct Percent(f64);

// ---------------------------------------------------------------------------------------
// Stack
// ---------------------------------------------------------------------------------------

impl Stack {
    /// Reads, parses and validates the stack file at `path`.
    ///
    /// # Errors
    /// [`ConfigError::Io`] if the file cannot be read; otherwise as [`Stack::parse`], with
    /// `path` as the file name.
    pub fn load(path: &Path) -> Result<Stack, ConfigError> {
        use std::io::Read;
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // Read one byte past the cap: enough to know the file is too big, without reading a
        // huge (or endless, like /dev/zero) file whole.
        let mut bytes = Vec::new();
        file.take(STACK_FILE_MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > STACK_FILE_MAX_BYTES {
            return Err(ConfigError::File {
                file: path.display().to_string(),
                message: format!(
                    "is larger than {} KiB; a stack file is a few dozen lines (see \
                     {DEFAULT_STACK_PATH}) — is this the right file?",
                    STACK_FILE_MAX_BYTES / 1024
                ),
            });
        }
        let yaml = String::from_utf8(bytes)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Stack::parse(&yaml, &path.display().to_string())
    }

    /// Parses and validates stack YAML; `origin` is what error messages call the file.
    ///
    /// # Errors
    /// [`ConfigError::File`] for YAML syntax errors, an empty document or a document that is
    /// not a mapping; [`ConfigError::Field`] for an unknown key, a wrong type or a value
    /// that breaks a rule. Only the first problem is reported.
    pub fn parse(yaml: &str, origin: &str) -> Result<Stack, ConfigError> {
        // Refused before the YAML parser sees it: deep nesting costs that parser seconds per
        // level-thousand before it gives up at its own recursion limit.
        if let Some(line) = too_deep(yaml) {
            return Err(ConfigError::File {
                file: origin.to_owned(),
                message: format!(
                    "nests brackets more than {MAX_NESTING} deep (line {line}); a stack file \
                     nests a few levels (see {DEFAULT_STACK_PATH})"
                ),
            });
        }
        // A generic parse first: it reports syntax errors and duplicate keys (which a typed
        // parse would report as type errors, or silently merge inside `tags`).
        let doc: serde_yaml::Value =
            serde_yaml::from_str(yaml).map_err(|e| yaml_error(origin, yaml, &e))?;
        let found = match &doc {
            serde_yaml::Value::Mapping(_) => None,
            serde_yaml::Value::Null => {
                return Err(ConfigError::File {
                    file: origin.to_owned(),
                    message: format!(
                        "the file is empty; a stack needs at least `name: <stack-name>` \
                         (see {DEFAULT_STACK_PATH} for every setting)"
                    ),
                })
            }
            serde_yaml::Value::Sequence(_) => Some("a list".to_owned()),
            serde_yaml::Value::Tagged(t) => Some(format!("a value tagged {}", t.tag)),
            other => Some(format!("the single value `{}`", yaml_scalar(other))),
        };
        if let Some(found) = found {
            return Err(ConfigError::File {
                file: origin.to_owned(),
                message: format!(
                    "expected a mapping of settings like `name: meshstack-demo`, found {found}"
                ),
            });
        }
        let raw: RawStack = serde_yaml::from_str(yaml).map_err(|e| yaml_error(origin, yaml, &e))?;
        raw.resolve().map_err(|e| ConfigError::Field {
            file: origin.to_owned(),
            field: e.field,
            message: e.message,
        })
    }

    /// The built-in default stack ([`DEFAULT_STACK_YAML`]).
    pub fn embedded_default() -> Stack {
        Stack::parse(DEFAULT_STACK_YAML, EMBEDDED_ORIGIN)
            .expect("the built-in stacks/demo.yaml is valid (tested)")
    }

    /// This stack under another name (a fleet's environment): every setting kept, the name
    /// checked against the stack-name rules.
    ///
    /// # Errors
    /// What is wrong with `name`, as the `name:` field would report it.
    pub fn renamed(&self, name: &str) -> Result<Stack, String> {
        if let Some(problem) = name_problem(name) {
            return Err(format!("stack name {problem}"));
        }
        Ok(Stack {
            name: name.to_string(),
            ..self.clone()
        })
    }

    /// The stack `name` in `region` with every other setting at its default: enough to tear
    /// it down, because `down` finds everything by tag and by the names derived from `name`
    /// (`meshstack down --name NAME --region R`, `meshstack reap`).
    ///
    /// # Errors
    /// When `name` or `region` break the stack file's rules (reported as for a file called
    /// `origin`).
    pub fn for_teardown(
        name: &str,
        region: Option<&str>,
        origin: &str,
    ) -> Result<Stack, ConfigError> {
        // Through the YAML parser so that the very same rules apply; quoted so that nothing
        // in the values is read as YAML syntax.
        let quote = |v: &str| serde_json::to_string(v).expect("a string serializes");
        let mut yaml = format!("name: {}\n", quote(name));
        if let Some(region) = region {
            yaml.push_str(&format!("region: {}\n", quote(region)));
        }
        Stack::parse(&yaml, origin)
    }

    /// Adds one of the tags meshstack sets itself (`meshstack.io/...`, which the stack file
    /// may not use) to every resource the stack creates from now on: the expiry, the fleet.
    pub fn set_own_tag(&mut self, key: &str, value: &str) {
        debug_assert!(key.starts_with("meshstack.io/"), "{key} is not meshstack's");
        self.tags.insert(key.to_string(), value.to_string());
    }

    /// The explicit `region`, or the one implied by an explicit zone list; `None` means
    /// "whatever the AWS environment (AWS_REGION, profile) says".
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// How many availability zones the stack spans.
    pub fn zone_count(&self) -> usize {
        match &self.zones {
            ZoneSpec::Count(n) => *n,
            ZoneSpec::Names(names) => names.len(),
        }
    }

    /// The `N` of the stack's `1.N` Kubernetes version.
    pub fn kubernetes_minor(&self) -> u32 {
        self.kubernetes_version
            .strip_prefix("1.")
            .and_then(|m| m.parse().ok())
            .expect("validated as 1.N")
    }

    /// The Karpenter API the stack's `karpenter.version` serves (validated to work with its
    /// Kubernetes version).
    pub fn karpenter_api(&self) -> versions::KarpenterApi {
        versions::check_karpenter(self.karpenter.version, self.kubernetes_minor())
            .expect("validated with the stack")
    }

    /// The Karpenter controller policy for the stack's `karpenter.version` (validated to
    /// exist).
    pub fn karpenter_policy(&self) -> versions::ControllerPolicy {
        versions::controller_policy(self.karpenter.version).expect("validated with the stack")
    }

    /// The node group's AMI type (validated to exist for the stack's Kubernetes version and
    /// instance types).
    pub fn node_ami_type(&self) -> versions::AmiType {
        versions::node_ami_type(self.kubernetes_minor(), &self.node_group.instance_types)
            .expect("validated with the stack")
    }

    /// `chart` (a [`charts::name`]) at the version and from the repository this stack uses.
    pub fn chart_pin(&self, chart: &str) -> charts::Pin {
        charts::pin(&self.charts, self.chart_releases(), chart)
    }

    /// `chart` as helm installs it for this stack.
    pub fn chart(&self, chart: &str) -> crate::k8s::helm::Chart {
        self.chart_pin(chart).chart()
    }

    /// `chart` at `version` from where this stack takes its charts, with the stack's digest
    /// when `version` is the one it installs, else meshstack's pin of that version.
    pub fn chart_pin_at(&self, chart: &str, version: &str) -> charts::Pin {
        let own = self.chart_pin(chart).version == version;
        charts::pin_other_version(&self.charts, chart, version, own)
    }

    /// Every chart the stack installs, for `plan` and `doctor`.
    pub fn chart_pins(&self) -> Vec<charts::Pin> {
        charts::name::ALL
            .iter()
            .map(|c| self.chart_pin(c))
            .collect()
    }

    fn chart_releases(&self) -> charts::Releases {
        charts::Releases {
            istio: self.istio.version,
            karpenter: self.karpenter.version,
        }
    }

    /// A warning when the stack's Istio release does not support its Kubernetes version.
    pub fn istio_support_warning(&self) -> Option<String> {
        versions::istio_support_warning(self.istio.version, self.kubernetes_minor())
    }

    /// The EKS cluster name, which is the stack name.
    /// The existing cluster the stack runs on, if it names one (`cluster.existing`).
    pub fn existing_cluster(&self) -> Option<&ExistingCluster> {
        self.cluster.existing.as_ref()
    }

    pub fn cluster_name(&self) -> &str {
        &self.name
    }

    /// `(public, private)` subnet CIDRs for zone `zone_index`, carved from the VPC CIDR.
    ///
    /// The VPC is cut into 8 blocks of `prefix + 3`: private subnets are blocks
    /// `0..zones`, and the last block is cut into 8 public subnets of `prefix + 6` (public
    /// subnets hold only load balancers and NAT gateways; pods live in private ones).
    /// For 10.0.0.0/16: private 10.0.0.0/19, 10.0.32.0/19, ...; public 10.0.224.0/22,
    /// 10.0.228.0/22, ... No two subnets overlap.
    ///
    /// # Panics
    /// If `zone_index >= self.zone_count()`, or if the public fields were changed after
    /// validation so that the VPC CIDR cannot be carved.
    pub fn subnet_cidrs(&self, zone_index: usize) -> (Ipv4Cidr, Ipv4Cidr) {
        assert!(
            zone_index < self.zone_count(),
            "zone index {zone_index} out of range: the stack has {} zones",
            self.zone_count()
        );
        let vpc = self.network.vpc_cidr;
        let index = u32::try_from(zone_index).expect("at most 6 zones");
        let carve = || {
            let private = vpc.subnet(vpc.prefix.checked_add(3)?, index)?;
            let public_block = vpc.subnet(vpc.prefix + 3, 7)?;
            let public = public_block.subnet(vpc.prefix + 6, index)?;
            // Block 7 is reserved for public subnets; a private subnet there would overlap.
            (index < 7).then_some((public, private))
        };
        carve().unwrap_or_else(|| panic!("cannot carve zone {zone_index} subnets from {vpc}"))
    }
}

// ---------------------------------------------------------------------------------------
// Small types
// ---------------------------------------------------------------------------------------

impl NatMode {
    /// The stack-file spelling: `per-zone` or `single`.
    pub fn as_str(self) -> &'static str {
        match self {
            NatMode::PerZone => "per-zone",
            NatMode::Single => "single",
        }
    }
}

impl fmt::Display for NatMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl LocalityMode {
    /// What the mode does, in one line (for `plan`).
    pub fn explain(self) -> &'static str {
        match self {
            LocalityMode::Failover => {
                "failover — an orders DestinationRule keeps each zone's calls in the zone (Istio \
                 fails over inside the region), internalTrafficPolicy: Local keeps products \
                 calls on the node and DROPS a call from a node with no products pod, hence the \
                 safety check"
            }
            LocalityMode::Distribute => {
                "distribute — an orders DestinationRule keeps local_weight percent of each \
                 zone's calls in it, internalTrafficPolicy: Local keeps products calls on the \
                 node (dropping them where the node has no products pod: safety check)"
            }
            LocalityMode::TrafficDistribution => {
                "traffic-distribution — Kubernetes' trafficDistribution: PreferSameZone on \
                 orders, PreferSameNode on products; local endpoints preferred, others used \
                 when there are none (a fallback, not a drop: no safety check), no Istio \
                 failover priorities"
            }
        }
    }

    /// Whether the mode is the 2023 pattern (an orders DestinationRule with locality settings
    /// and `internalTrafficPolicy: Local` on products-service), not `trafficDistribution`.
    pub fn uses_destination_rule(self) -> bool {
        self != LocalityMode::TrafficDistribution
    }

    /// The stack-file spelling: `failover`, `distribute` or `traffic-distribution`.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalityMode::Failover => "failover",
            LocalityMode::Distribute => "distribute",
            LocalityMode::TrafficDistribution => "traffic-distribution",
        }
    }
}

impl fmt::Display for LocalityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CapacityType {
    /// The stack-file spelling: `on-demand` or `spot`.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityType::OnDemand => "on-demand",
            CapacityType::Spot => "spot",
        }
    }

    /// The EKS API's spelling: `ON_DEMAND` or `SPOT`.
    pub fn as_eks_str(self) -> &'static str {
        match self {
            CapacityType::OnDemand => "ON_DEMAND",
            CapacityType::Spot => "SPOT",
        }
    }
}

impl fmt::Display for CapacityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Percent {
    /// `value` if it is a percentage (0 to 100, not NaN).
    pub fn new(value: f64) -> Option<Percent> {
        (0.0..=100.0).contains(&value).then_some(Percent(value))
    }

    /// The value, 0 to 100.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Eq for Percent {}
