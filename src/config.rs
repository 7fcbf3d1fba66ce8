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

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::versions;

/// Where `meshstack` looks for the stack file when none is given.
pub const DEFAULT_STACK_PATH: &str = "stacks/demo.yaml";

/// The default stack, compiled in so the binary works outside a checkout.
pub const DEFAULT_STACK_YAML: &str = include_str!("../stacks/demo.yaml");

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

// The EKS versions meshstack's manifests are tested against (standard + extended support).
const K8S_MINOR_MIN: u32 = 29;
const K8S_MINOR_MAX: u32 = 36;
const DEFAULT_K8S_VERSION: &str = "1.34";

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

// Karpenter 1.8.1: a 1.x release whose compatibility matrix covers Kubernetes 1.34 (1.34 needs
// >= 1.6, 1.35 needs >= 1.9; source: aws/karpenter-provider-aws,
// website/content/en/docs/upgrading/compatibility.md). `render` checks the pair.
pub const DEFAULT_KARPENTER_VERSION: ReleaseVersion = ReleaseVersion::new(1, 8, 1);
const DEFAULT_KARPENTER_CAPACITY: [CapacityType; 2] = [CapacityType::Spot, CapacityType::OnDemand];
// The last Istio 1.18 patch release; the demo was built on Istio 1.18.
const DEFAULT_ISTIO_VERSION: ReleaseVersion = ReleaseVersion::new(1, 18, 7);
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
    /// Where the journal and lock live (`state`, `state_require_versioning`,
    /// `state_kms_key`).
    #[serde(skip_serializing_if = "StateSpec::is_default")]
    pub state: StateSpec,
    /// `expires_in:`: how long after its creation the stack may live; `up` then tags every
    /// resource with `meshstack.io/expires-at` and `meshstack reap` finds it once that passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<Lifetime>,
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

/// A percentage, 0 to 100.
///
/// # Guarantees
/// Never NaN (validation refuses it), which is what makes the `Eq` impl sound.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
pub struct Percent(f64);

/// An IPv4 CIDR block such as `10.0.0.0/16`.
///
/// Parsing accepts host bits (`10.0.0.1/16`) so that validation can say which network was
/// meant; [`Ipv4Cidr::network`] clears them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    /// The address; for a well-formed block, the network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a stack file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{}: cannot read the stack file", path.display())]
    Io {
        /// The path as given.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// One setting is wrong: bad value, wrong type or unknown key.
    #[error("{file}: {field}: {message}")]
    Field {
        /// What the caller called the file (a path, or a description for built-in text).
        file: String,
        /// Dotted path with list indices, like `node_group.instance_types[0]`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The file as a whole is wrong: not YAML, empty, or not a mapping.
    #[error("{file}: {message}")]
    File {
        /// What the caller called the file.
        file: String,
        /// What is wrong and how to fix it; YAML syntax errors include the line.
        message: String,
    },
}

impl ConfigError {
    /// The dotted path of the offending setting, when the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Field { field, .. } => Some(field),
            ConfigError::Io { .. } | ConfigError::File { .. } => None,
        }
    }
}

/// Why a string is not an IPv4 CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not an IPv4 CIDR block ({reason}); write it like 10.0.0.0/16")]
pub struct ParseCidrError {
    input: String,
    reason: &'static str,
}

/// A validation failure before the file name is attached.
#[derive(Debug)]
struct Invalid {
    field: String,
    message: String,
}

type Check<T> = Result<T, Invalid>;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

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

    /// A warning when the stack's Istio release does not support its Kubernetes version.
    pub fn istio_support_warning(&self) -> Option<String> {
        versions::istio_support_warning(self.istio.version, self.kubernetes_minor())
    }

    /// The EKS cluster name, which is the stack name.
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
// Raw layer: the YAML as written
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStack {
    name: Option<String>,
    region: Option<String>,
    zones: Option<RawZones>,
    kubernetes_version: Option<RawVersion>,
    network: Option<RawNetwork>,
    node_group: Option<RawNodeGroup>,
    cluster: Option<RawCluster>,
    allowed_account_ids: Option<Vec<RawAccountId>>,
    // Option values so that `key:` and `key: ~` mean an empty value, not the string "~".
    tags: Option<BTreeMap<String, Option<String>>>,
    karpenter: Option<RawKarpenter>,
    istio: Option<RawIstio>,
    locality: Option<RawLocality>,
    state: Option<String>,
    state_require_versioning: Option<bool>,
    state_kms_key: Option<String>,
    expires_in: Option<RawLifetime>,
}

/// `expires_in:`; a bare number has no unit, so numbers are refused.
#[derive(Debug)]
struct RawLifetime(String);

impl<'de> Deserialize<'de> for RawLifetime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        const HINT: &str = "give a unit, like expires_in: 8h (or 90m, 1h30m, 2d)";
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawLifetime;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like 8h")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawLifetime, E> {
                Ok(RawLifetime(v.to_owned()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawLifetime, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawLifetime, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawLifetime, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLocality {
    mode: Option<LocalityMode>,
    local_weight: Option<i64>,
    distribute: Option<BTreeMap<String, BTreeMap<String, i64>>>,
    connection_pool: Option<RawConnectionPool>,
    outlier_detection: Option<RawOutlierDetection>,
    verify: Option<RawLocalityVerify>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConnectionPool {
    http2_max_requests: Option<i64>,
    max_requests_per_connection: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawOutlierDetection {
    consecutive_gateway_errors: Option<i64>,
    interval: Option<String>,
    base_ejection_time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLocalityVerify {
    orders_in_zone_min: Option<f64>,
    products_on_node_min: Option<f64>,
    failed_requests_max: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawKarpenter {
    version: Option<RawRelease>,
    capacity_types: Option<Vec<CapacityType>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawIstio {
    version: Option<RawRelease>,
    tracing_sampling: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawNetwork {
    vpc_cidr: Option<String>,
    nat: Option<NatMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawNodeGroup {
    instance_types: Option<Vec<String>>,
    // Signed, so `size: -1` gets the range message rather than a type error.
    size: Option<i64>,
    disk_size_gib: Option<i64>,
    capacity_type: Option<CapacityType>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawCluster {
    endpoint_public_access: Option<bool>,
    endpoint_private_access: Option<bool>,
    public_access_cidrs: Option<Vec<String>>,
}

/// `zones:` is a count or a list; a hand-written visitor gives a better message than an
/// untagged enum's "data did not match any variant".
#[derive(Debug)]
enum RawZones {
    Count(i64),
    Names(Vec<String>),
}

impl<'de> Deserialize<'de> for RawZones {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawZones;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a zone count ({ZONES_MIN} to {ZONES_MAX}) or a list of zone names \
                     like [us-east-1a, us-east-1b]"
                )
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawZones, E> {
                Ok(RawZones::Count(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawZones, E> {
                Ok(RawZones::Count(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawZones, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(RawZones::Names(names))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A string that must be quoted in YAML because its unquoted form reads as a number.
fn reject_number<E: serde::de::Error>(number: &str, hint: &str) -> E {
    E::custom(format!(
        "{number} is a number here, but this setting is text: {hint}"
    ))
}

/// `kubernetes_version:`; unquoted `1.30` is the float 1.3, so numbers are refused.
#[derive(Debug)]
struct RawVersion(String);

impl<'de> Deserialize<'de> for RawVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        const HINT: &str = "YAML reads an unquoted 1.30 as 1.3, so quote the version, \
                            like kubernetes_version: \"1.34\"";
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawVersion;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quoted Kubernetes version like \"1.34\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawVersion, E> {
                Ok(RawVersion(v.to_owned()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawVersion, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawVersion, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawVersion, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A chart version like `1.8.1`; `1.8` unquoted is a number, so numbers are refused.
#[derive(Debug)]
struct RawRelease(String);

impl<'de> Deserialize<'de> for RawRelease {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        const HINT: &str = "quote the version and give all three parts, like version: \"1.8.1\"";
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawRelease;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a release version like \"1.8.1\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawRelease, E> {
                Ok(RawRelease(v.to_owned()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawRelease, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawRelease, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawRelease, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An entry of `allowed_account_ids:`; numbers are refused because YAML would drop an
/// account ID's leading zeros.
#[derive(Debug)]
struct RawAccountId(String);

impl<'de> Deserialize<'de> for RawAccountId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        const HINT: &str = "quote account IDs, like - \"123456789012\", because YAML drops \
                            the leading zeros of numbers";
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawAccountId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quoted 12-digit AWS account ID like \"123456789012\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawAccountId, E> {
                Ok(RawAccountId(v.to_owned()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RawAccountId, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawAccountId, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawAccountId, E> {
                Err(reject_number(&v.to_string(), HINT))
            }
        }
        d.deserialize_any(Visitor)
    }
}

// ---------------------------------------------------------------------------------------
// Raw -> validated
// ---------------------------------------------------------------------------------------

impl RawStack {
    fn resolve(self) -> Check<Stack> {
        let name = resolve_name(self.name)?;
        let explicit_region = match self.region {
            Some(region) => Some(check_region(region)?),
            None => None,
        };
        let (zones, region) = resolve_zones(self.zones, explicit_region)?;
        let stack = Stack {
            name,
            region,
            kubernetes_version: resolve_k8s_version(self.kubernetes_version)?,
            network: self.network.unwrap_or_default().resolve()?,
            node_group: self.node_group.unwrap_or_default().resolve()?,
            cluster: self.cluster.unwrap_or_default().resolve()?,
            allowed_account_ids: resolve_account_ids(self.allowed_account_ids)?,
            tags: resolve_tags(self.tags)?,
            karpenter: self.karpenter.unwrap_or_default().resolve()?,
            istio: self.istio.unwrap_or_default().resolve()?,
            locality: self.locality.unwrap_or_default().resolve(&zones)?,
            state: resolve_state(
                self.state,
                self.state_require_versioning,
                self.state_kms_key,
            )?,
            expires_in: self
                .expires_in
                .map(|RawLifetime(text)| text.parse().map_err(|e| invalid("expires_in", e)))
                .transpose()?,
            zones,
        };
        // The version rules that span several settings, so that a pair that cannot work is
        // refused now, not after 20 billable minutes of VPC, cluster and node group.
        let minor = stack.kubernetes_minor();
        let version_error = |e: versions::VersionError| invalid(e.field, e.message);
        versions::check_karpenter(stack.karpenter.version, minor).map_err(version_error)?;
        versions::node_ami_type(minor, &stack.node_group.instance_types).map_err(version_error)?;
        Ok(stack)
    }
}

fn resolve_name(name: Option<String>) -> Check<String> {
    let Some(name) = name else {
        return Err(invalid(
            "name",
            "is missing; every stack needs a name, like `name: meshstack-demo` \
             (it prefixes AWS resource names and tags)",
        ));
    };
    match name_problem(&name) {
        None => Ok(name),
        Some(problem) => {
            let fix = match suggest_name(&name) {
                Some(s) if s != name => format!("; did you mean `{s}`?"),
                _ => String::new(),
            };
            Err(invalid("name", format!("{problem}{fix}")))
        }
    }
}

/// What is wrong with a stack name, if anything.
fn name_problem(name: &str) -> Option<String> {
    let len = name.chars().count();
    if name.is_empty() {
        return Some("must not be empty; use something like `meshstack-demo`".to_owned());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Some(format!(
            "`{name}` may contain only lowercase letters, digits and '-', \
             because it becomes part of AWS resource names"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some(format!("`{name}` must start with a lowercase letter"));
    }
    if len > NAME_MAX_LEN {
        return Some(format!(
            "`{name}` is {len} characters long; use at most {NAME_MAX_LEN}, because it \
             prefixes AWS resource names that have tight length limits"
        ));
    }
    if name.ends_with('-') {
        return Some(format!("`{name}` must not end with '-'"));
    }
    if name.contains("--") {
        return Some(format!("`{name}` must not contain \"--\""));
    }
    None
}

/// A valid name close to `name`, for "did you mean"; none for a name that is only too
/// long, because a truncated name is a guess the user should make.
fn suggest_name(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    name_problem(&out).is_none().then_some(out)
}

fn check_region(region: String) -> Check<String> {
    if is_region(&region) {
        return Ok(region);
    }
    let message = match zone_region(&region) {
        Some(parent) => {
            format!("`{region}` is an availability zone, not a region; write region: {parent}")
        }
        None => format!(
            "`{region}` is not an AWS region name; regions look like us-east-1, \
             eu-central-2 or us-gov-west-1"
        ),
    };
    Err(invalid("region", message))
}

/// `[a-z]{2}(-gov)?-[a-z]+-[0-9]{1,2}`, like `us-east-1` or `us-gov-west-1`.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let (geo, direction, number) = match parts.as_slice() {
        [geo, "gov", direction, number] | [geo, direction, number] => (geo, direction, number),
        _ => return false,
    };
    let lowercase = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    geo.len() == 2
        && lowercase(geo)
        && lowercase(direction)
        && (1..=2).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// The region of an availability zone name (`us-east-1a` -> `us-east-1`).
fn zone_region(zone: &str) -> Option<&str> {
    let region = zone.strip_suffix(|c: char| c.is_ascii_lowercase())?;
    is_region(region).then_some(region)
}

fn resolve_zones(
    raw: Option<RawZones>,
    region: Option<String>,
) -> Check<(ZoneSpec, Option<String>)> {
    let range =
        format!("EKS needs at least {ZONES_MIN} zones and meshstack supports at most {ZONES_MAX}");
    let names = match raw {
        None => return Ok((ZoneSpec::Count(DEFAULT_ZONES), region)),
        Some(RawZones::Count(n)) => {
            return match usize::try_from(n) {
                Ok(n) if (ZONES_MIN..=ZONES_MAX).contains(&n) => Ok((ZoneSpec::Count(n), region)),
                _ => Err(invalid(
                    "zones",
                    format!(
                        "{n} is not a supported zone count; {range}; use a number from \
                         {ZONES_MIN} to {ZONES_MAX} (default {DEFAULT_ZONES})"
                    ),
                )),
            };
        }
        Some(RawZones::Names(names)) => names,
    };
    if !(ZONES_MIN..=ZONES_MAX).contains(&names.len()) {
        return Err(invalid(
            "zones",
            format!(
                "the list has {} {}; {range}; list {ZONES_MIN} to {ZONES_MAX} zones",
                names.len(),
                if names.len() == 1 { "entry" } else { "entries" }
            ),
        ));
    }
    // The first zone's index and region, when no region is given explicitly.
    let mut implied: Option<(usize, &str)> = None;
    for (i, zone) in names.iter().enumerate() {
        let field = format!("zones[{i}]");
        let Some(this_region) = zone_region(zone) else {
            return Err(invalid(field, zone_name_problem(zone)));
        };
        if let Some(j) = names[..i].iter().position(|z| z == zone) {
            return Err(invalid(
                field,
                format!("`{zone}` is listed twice (also zones[{j}]); list each zone once"),
            ));
        }
        match (&region, implied) {
            (Some(region), _) if this_region != region => {
                return Err(invalid(
                    field,
                    format!(
                        "`{zone}` is in {this_region}, but region is {region}; \
                         list zones of {region} (like {region}a) or change region"
                    ),
                ));
            }
            (None, Some((j, first))) if this_region != first => {
                return Err(invalid(
                    field,
                    format!(
                        "`{zone}` is in {this_region}, but zones[{j}] is in {first}; \
                         all zones must be in the same region"
                    ),
                ));
            }
            (None, None) => implied = Some((i, this_region)),
            _ => {}
        }
    }
    let region = region.or_else(|| implied.map(|(_, r)| r.to_owned()));
    Ok((ZoneSpec::Names(names), region))
}

fn zone_name_problem(zone: &str) -> String {
    if is_region(zone) {
        format!("`{zone}` is a region, not an availability zone; add the zone letter, like {zone}a")
    } else if zone.contains("-az") {
        format!(
            "`{zone}` looks like a zone ID; list zone names like us-east-1a instead \
             (`aws ec2 describe-availability-zones` shows both)"
        )
    } else {
        format!(
            "`{zone}` is not an availability zone name; zone names are a region and a \
             letter, like us-east-1a"
        )
    }
}

fn resolve_k8s_version(raw: Option<RawVersion>) -> Check<String> {
    let Some(RawVersion(version)) = raw else {
        return Ok(DEFAULT_K8S_VERSION.to_owned());
    };
    let minor = version
        .strip_prefix("1.")
        .filter(|m| (1..=3).contains(&m.len()) && !m.starts_with('0'))
        .filter(|m| m.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|m| m.parse::<u32>().ok());
    if minor.is_some_and(|m| (K8S_MINOR_MIN..=K8S_MINOR_MAX).contains(&m)) {
        return Ok(version);
    }
    let accepted = format!(
        "use a version from 1.{K8S_MINOR_MIN} to 1.{K8S_MINOR_MAX}, like \"{DEFAULT_K8S_VERSION}\""
    );
    let message = if minor.is_some() {
        format!("Kubernetes {version} is not supported; {accepted}")
    } else if version.starts_with(['v', 'V']) {
        format!("`{version}`: write the version without the 'v'; {accepted}")
    } else if version.matches('.').count() == 2 {
        format!("`{version}` is a patch version, but EKS takes only the minor version; {accepted}")
    } else {
        format!("`{version}` is not a supported Kubernetes version; {accepted}")
    };
    Err(invalid("kubernetes_version", message))
}

impl RawNetwork {
    fn resolve(self) -> Check<NetworkSpec> {
        let field = "network.vpc_cidr";
        let vpc_cidr = match self.vpc_cidr {
            None => DEFAULT_VPC_CIDR,
            Some(text) => {
                let cidr = parse_network(field, &text)?;
                if !(VPC_PREFIX_MIN..=VPC_PREFIX_MAX).contains(&cidr.prefix) {
                    return Err(invalid(
                        field,
                        format!(
                            "{cidr} has prefix /{}; use a prefix from /{VPC_PREFIX_MIN} \
                             (AWS's largest VPC) to /{VPC_PREFIX_MAX} (smallest that fits \
                             {ZONES_MAX} zones of subnets), like {DEFAULT_VPC_CIDR}",
                            cidr.prefix
                        ),
                    ));
                }
                if !PRIVATE_RANGES.iter().any(|r| r.contains(&cidr)) {
                    let ranges: Vec<String> =
                        PRIVATE_RANGES.iter().map(|r| r.to_string()).collect();
                    return Err(invalid(
                        field,
                        format!(
                            "{cidr} is not a private address range; use a block inside {}, \
                             like {DEFAULT_VPC_CIDR}",
                            ranges.join(", ")
                        ),
                    ));
                }
                cidr
            }
        };
        Ok(NetworkSpec {
            vpc_cidr,
            nat: self.nat.unwrap_or_default(),
        })
    }
}

/// Parses a CIDR block and insists that its host bits are zero.
fn parse_network(field: &str, text: &str) -> Check<Ipv4Cidr> {
    let cidr: Ipv4Cidr = text
        .parse()
        .map_err(|e: ParseCidrError| invalid(field, e.to_string()))?;
    if cidr != cidr.network() {
        return Err(invalid(
            field,
            format!("{cidr} has host bits set; did you mean {}?", cidr.network()),
        ));
    }
    Ok(cidr)
}

impl RawNodeGroup {
    fn resolve(self) -> Check<NodeGroupSpec> {
        let instance_types = match self.instance_types {
            None => vec![DEFAULT_INSTANCE_TYPE.to_owned()],
            Some(types) => {
                check_instance_types(&types)?;
                types
            }
        };
        Ok(NodeGroupSpec {
            instance_types,
            size: in_range("node_group.size", self.size, SIZE_MIN..=SIZE_MAX, "")?
                .unwrap_or(DEFAULT_SIZE),
            disk_size_gib: in_range(
                "node_group.disk_size_gib",
                self.disk_size_gib,
                DISK_MIN..=DISK_MAX,
                " GiB",
            )?
            .unwrap_or(DEFAULT_DISK),
            capacity_type: self.capacity_type.unwrap_or_default(),
        })
    }
}

fn in_range(
    field: &str,
    value: Option<i64>,
    range: std::ops::RangeInclusive<i64>,
    unit: &str,
) -> Check<Option<u32>> {
    match value {
        None => Ok(None),
        Some(v) if range.contains(&v) => Ok(Some(u32::try_from(v).expect("range fits u32"))),
        Some(v) => Err(invalid(
            field,
            format!(
                "{v}{unit} is out of range; use a number between {} and {}{unit}",
                range.start(),
                range.end()
            ),
        )),
    }
}

fn check_instance_types(types: &[String]) -> Check<()> {
    let field = "node_group.instance_types";
    if types.is_empty() {
        return Err(invalid(
            field,
            format!("is empty; list at least one instance type, like [{DEFAULT_INSTANCE_TYPE}]"),
        ));
    }
    for (i, ty) in types.iter().enumerate() {
        let field = format!("{field}[{i}]");
        if !is_instance_type(ty) {
            let lower = ty.to_ascii_lowercase();
            let fix = if lower != *ty && is_instance_type(&lower) {
                format!("; did you mean `{lower}`?")
            } else {
                String::new()
            };
            return Err(invalid(
                field,
                format!(
                    "`{ty}` is not an EC2 instance type; instance types are a family and a \
                     size, like m5.large or c6g.xlarge{fix}"
                ),
            ));
        }
        if let Some(j) = types[..i].iter().position(|t| t == ty) {
            return Err(invalid(
                field,
                format!("`{ty}` is listed twice (also [{j}]); list each type once"),
            ));
        }
    }
    Ok(())
}

/// `family.size`, family `[a-z][a-z0-9-]*` with a digit, size `[a-z0-9]+`.
fn is_instance_type(s: &str) -> bool {
    let Some((family, size)) = s.split_once('.') else {
        return false;
    };
    family.starts_with(|c: char| c.is_ascii_lowercase())
        && family
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && family.bytes().any(|b| b.is_ascii_digit())
        && !size.is_empty()
        && size
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl RawCluster {
    fn resolve(self) -> Check<ClusterSpec> {
        let endpoint_public_access = self.endpoint_public_access.unwrap_or(true);
        let endpoint_private_access = self.endpoint_private_access.unwrap_or(true);
        if !endpoint_public_access && !endpoint_private_access {
            return Err(invalid(
                "cluster",
                "endpoint_public_access and endpoint_private_access are both false, which \
                 would leave the Kubernetes API unreachable; set at least one to true",
            ));
        }
        let public_access_cidrs = match self.public_access_cidrs {
            None => vec![EVERYWHERE],
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    "cluster.public_access_cidrs",
                    "is empty; list at least one CIDR block, like [203.0.113.0/24], or \
                     remove the key to allow 0.0.0.0/0",
                ))
            }
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, text)| parse_network(&format!("cluster.public_access_cidrs[{i}]"), text))
                .collect::<Check<_>>()?,
        };
        Ok(ClusterSpec {
            endpoint_public_access,
            endpoint_private_access,
            public_access_cidrs,
        })
    }
}

fn resolve_account_ids(raw: Option<Vec<RawAccountId>>) -> Check<Vec<String>> {
    let Some(ids) = raw else {
        return Ok(Vec::new());
    };
    if ids.is_empty() {
        return Err(invalid(
            "allowed_account_ids",
            "is empty, which would allow no account; list account IDs, or remove the key \
             to allow any account",
        ));
    }
    ids.into_iter()
        .enumerate()
        .map(|(i, RawAccountId(id))| {
            if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
                Ok(id)
            } else if id.bytes().all(|b| b.is_ascii_digit()) {
                Err(invalid(
                    format!("allowed_account_ids[{i}]"),
                    format!(
                        "`{id}` has {} digits; AWS account IDs have exactly 12 digits \
                         (keep any leading zeros)",
                        id.len()
                    ),
                ))
            } else {
                Err(invalid(
                    format!("allowed_account_ids[{i}]"),
                    format!("`{id}` is not an AWS account ID; account IDs are 12 digits, like \"123456789012\""),
                ))
            }
        })
        .collect()
}

fn resolve_tags(raw: Option<BTreeMap<String, Option<String>>>) -> Check<BTreeMap<String, String>> {
    let tags: BTreeMap<String, String> = raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    if tags.len() > TAGS_MAX {
        return Err(invalid(
            "tags",
            format!(
                "has {} entries; at most {TAGS_MAX} are allowed, because meshstack adds its \
                 own tags and AWS allows 50 per resource",
                tags.len()
            ),
        ));
    }
    // IAM is the strictest tagging service meshstack uses: letters, digits, spaces and _.:/=+-@
    let allowed = |c: char| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c);
    for (key, value) in &tags {
        if key.is_empty() {
            return Err(invalid(
                "tags",
                "has an empty key; tag keys need 1 to 128 characters",
            ));
        }
        let field = format!("tags.{key}");
        if let Some((prefix, why)) = RESERVED_TAG_PREFIXES
            .iter()
            .find(|(p, _)| key.to_ascii_lowercase().starts_with(p))
        {
            return Err(invalid(
                field,
                format!("keys starting with `{prefix}` are {why}; rename the key"),
            ));
        }
        let (key_len, value_len) = (key.chars().count(), value.chars().count());
        if key_len > TAG_KEY_MAX {
            return Err(invalid(
                field,
                format!(
                    "the key is {key_len} characters long; tag keys may have at most {TAG_KEY_MAX}"
                ),
            ));
        }
        if value_len > TAG_VALUE_MAX {
            return Err(invalid(
                field,
                format!("the value is {value_len} characters long; tag values may have at most {TAG_VALUE_MAX}"),
            ));
        }
        if let Some(c) = key.chars().chain(value.chars()).find(|c| !allowed(*c)) {
            return Err(invalid(
                field,
                format!(
                    "{c:?} is not allowed in tags; use letters, digits, spaces and _ . : / = + - @"
                ),
            ));
        }
    }
    Ok(tags)
}

impl RawKarpenter {
    fn resolve(self) -> Check<KarpenterSpec> {
        let version =
            resolve_release("karpenter.version", self.version, DEFAULT_KARPENTER_VERSION)?;
        let field = "karpenter.capacity_types";
        let capacity_types = match self.capacity_types {
            None => DEFAULT_KARPENTER_CAPACITY.to_vec(),
            Some(types) if types.is_empty() => {
                return Err(invalid(
                    field,
                    "is empty, which would let Karpenter launch nothing; list spot, \
                     on-demand or both, or remove the key for [spot, on-demand]",
                ))
            }
            Some(types) => {
                for (i, ty) in types.iter().enumerate() {
                    if let Some(j) = types[..i].iter().position(|t| t == ty) {
                        return Err(invalid(
                            format!("{field}[{i}]"),
                            format!("`{ty}` is listed twice (also [{j}]); list each type once"),
                        ));
                    }
                }
                types
            }
        };
        Ok(KarpenterSpec {
            version,
            capacity_types,
        })
    }
}

impl RawIstio {
    fn resolve(self) -> Check<IstioSpec> {
        let version = resolve_release("istio.version", self.version, DEFAULT_ISTIO_VERSION)?;
        let tracing_sampling = match self.tracing_sampling {
            None => Percent(DEFAULT_TRACING_SAMPLING),
            Some(p) => Percent::new(p).ok_or_else(|| {
                invalid(
                    "istio.tracing_sampling",
                    format!(
                        "{p} is not a percentage; use a number from 0 to 100, like 1 (trace \
                         one request in a hundred) or 100 (every request)"
                    ),
                )
            })?,
        };
        Ok(IstioSpec {
            version,
            tracing_sampling,
        })
    }
}

impl RawLocality {
    fn resolve(self, zones: &ZoneSpec) -> Check<LocalitySpec> {
        let mode = self.mode.unwrap_or_default();
        if mode == LocalityMode::Failover {
            for (key, set) in [
                ("local_weight", self.local_weight.is_some()),
                ("distribute", self.distribute.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        format!("locality.{key}"),
                        "applies only to `mode: distribute`; set the mode or remove the key",
                    ));
                }
            }
        }
        let local_weight = in_range("locality.local_weight", self.local_weight, 1..=100, "%")?
            .or((mode == LocalityMode::Distribute).then_some(DEFAULT_LOCAL_WEIGHT));
        let distribute = resolve_distribute(self.distribute, zones)?;
        let pool = self.connection_pool.unwrap_or_default();
        let connection_pool = ConnectionPoolSpec {
            http2_max_requests: in_range(
                "locality.connection_pool.http2_max_requests",
                pool.http2_max_requests,
                1..=i64::from(i32::MAX),
                "",
            )?
            .unwrap_or(DEFAULT_HTTP2_MAX_REQUESTS),
            max_requests_per_connection: in_range(
                "locality.connection_pool.max_requests_per_connection",
                pool.max_requests_per_connection,
                1..=i64::from(i32::MAX),
                "",
            )?
            .unwrap_or(DEFAULT_MAX_REQUESTS_PER_CONNECTION),
        };
        let outlier = self.outlier_detection.unwrap_or_default();
        let outlier_detection = OutlierDetectionSpec {
            consecutive_gateway_errors: in_range(
                "locality.outlier_detection.consecutive_gateway_errors",
                outlier.consecutive_gateway_errors,
                1..=i64::from(i32::MAX),
                "",
            )?
            .unwrap_or(DEFAULT_CONSECUTIVE_GATEWAY_ERRORS),
            interval: resolve_duration(
                "locality.outlier_detection.interval",
                outlier.interval,
                DEFAULT_OUTLIER_INTERVAL,
            )?,
            base_ejection_time: resolve_duration(
                "locality.outlier_detection.base_ejection_time",
                outlier.base_ejection_time,
                DEFAULT_BASE_EJECTION_TIME,
            )?,
        };
        let verify = self.verify.unwrap_or_default();
        let orders_default = match local_weight {
            None => DEFAULT_ORDERS_IN_ZONE_MIN_FAILOVER,
            Some(weight) => (f64::from(weight) - DISTRIBUTE_TOLERANCE).max(0.0),
        };
        let percent = |field: &str, value: Option<f64>, default: f64| match value {
            None => Ok(Percent(default)),
            Some(p) => Percent::new(p).ok_or_else(|| {
                invalid(
                    field,
                    format!("{p} is not a percentage; use a number from 0 to 100"),
                )
            }),
        };
        Ok(LocalitySpec {
            mode,
            local_weight,
            distribute,
            connection_pool,
            outlier_detection,
            verify: LocalityVerifySpec {
                orders_in_zone_min: percent(
                    "locality.verify.orders_in_zone_min",
                    verify.orders_in_zone_min,
                    orders_default,
                )?,
                products_on_node_min: percent(
                    "locality.verify.products_on_node_min",
                    verify.products_on_node_min,
                    DEFAULT_PRODUCTS_ON_NODE_MIN,
                )?,
                failed_requests_max: percent(
                    "locality.verify.failed_requests_max",
                    verify.failed_requests_max,
                    DEFAULT_FAILED_REQUESTS_MAX,
                )?,
            },
        })
    }
}

/// `locality.distribute`: rows name the stack's listed zones and add up to 100.
fn resolve_distribute(
    raw: Option<BTreeMap<String, BTreeMap<String, i64>>>,
    zones: &ZoneSpec,
) -> Check<BTreeMap<String, BTreeMap<String, u32>>> {
    let Some(raw) = raw else {
        return Ok(BTreeMap::new());
    };
    let ZoneSpec::Names(names) = zones else {
        return Err(invalid(
            "locality.distribute",
            "names zones, so the stack must list its zones (`zones: [us-east-1a, ...]`) \
             instead of counting them; or remove the key and let `local_weight` set the weights",
        ));
    };
    let known = |zone: &str| names.iter().any(|z| z == zone);
    let unknown = |field: String, zone: &str| {
        let hint = closest(zone, names.iter().map(String::as_str))
            .map(|z| format!("; did you mean `{z}`?"))
            .unwrap_or_default();
        invalid(
            field,
            format!(
                "`{zone}` is not one of the stack's zones ({}){hint}",
                names.join(", ")
            ),
        )
    };
    let mut table = BTreeMap::new();
    for (from, row) in raw {
        let field = format!("locality.distribute.{from}");
        if !known(&from) {
            return Err(unknown(field, &from));
        }
        let mut weights = BTreeMap::new();
        for (to, weight) in row {
            if !known(&to) {
                return Err(unknown(format!("{field}.{to}"), &to));
            }
            let w = in_range(&format!("{field}.{to}"), Some(weight), 1..=100, "%")?
                .expect("Some in, Some out");
            weights.insert(to, w);
        }
        let sum: u32 = weights.values().sum();
        if sum != 100 {
            return Err(invalid(
                field,
                format!(
                    "weights add up to {sum}%; Istio needs each zone's weights to add up to \
                     exactly 100"
                ),
            ));
        }
        table.insert(from, weights);
    }
    Ok(table)
}

/// An Istio duration (`1m`, `30s`, `500ms`, `1h`): digits and one unit, at least 1 ms, as
/// Istio's validation demands of outlier-detection times.
fn resolve_duration(field: &str, raw: Option<String>, default: &str) -> Check<String> {
    let Some(text) = raw else {
        return Ok(default.to_owned());
    };
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ["ms", "s", "m", "h"].contains(&unit)
        && digits.parse::<u64>().is_ok_and(|n| n > 0);
    if ok {
        Ok(text)
    } else {
        Err(invalid(
            field,
            format!(
                "`{text}` is not a duration Istio accepts; write a positive whole number and \
                 a unit (ms, s, m or h), like \"{default}\""
            ),
        ))
    }
}

fn resolve_release(
    field: &str,
    raw: Option<RawRelease>,
    default: ReleaseVersion,
) -> Check<ReleaseVersion> {
    let Some(RawRelease(text)) = raw else {
        return Ok(default);
    };
    text.parse().map_err(|problem: String| {
        invalid(
            field,
            format!("{problem}; write a released version like \"{default}\""),
        )
    })
}

// ---------------------------------------------------------------------------------------
// serde_yaml errors -> ConfigError
// ---------------------------------------------------------------------------------------

/// Turns a serde_yaml error into a `ConfigError`, recovering the field path serde_yaml puts
/// in front of its message (`network.nat: unknown variant ...`).
fn yaml_error(file: &str, yaml: &str, err: &serde_yaml::Error) -> ConfigError {
    let text = err.to_string();
    // serde_yaml appends " at line L column C" (omitted for line 1 column 1); libyaml syntax
    // errors carry their positions inside the text, and those are left alone.
    let (body, location) = match err.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            match text.strip_suffix(&suffix) {
                Some(body) => (body.to_owned(), Some((loc.line(), loc.column()))),
                None if text.contains(" at line ") => (text.clone(), None),
                None => (text.clone(), Some((loc.line(), loc.column()))),
            }
        }
        None => (text.clone(), None),
    };
    let at = location
        .map(|(line, column)| format!(" (line {line}, column {column})"))
        .unwrap_or_default();
    let (path, body) = split_path(&body);
    let join = |key: &str| match path {
        Some(path) => format!("{path}.{key}"),
        None => key.to_owned(),
    };
    let field_error = |field: String, message: String| ConfigError::Field {
        file: file.to_owned(),
        field,
        message,
    };

    if body.starts_with("unknown field `") || body.starts_with("unknown variant `") {
        let mut ticked = backticked(body);
        let word = ticked.next().unwrap_or_default();
        let hint = closest(word, ticked)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        let field = if body.starts_with("unknown field") {
            join(word)
        } else {
            path.unwrap_or(".").to_owned()
        };
        return field_error(field, format!("{body}{at}{hint}"));
    }
    if let Some(key) = body
        .strip_prefix("duplicate entry with key \"")
        .and_then(|rest| rest.strip_suffix('"'))
    {
        // serde_yaml points at the mapping that holds the key twice, not at the key.
        let within = location
            .map(|(line, column)| format!(" in the mapping at line {line}, column {column}"))
            .unwrap_or_default();
        return field_error(
            join(key),
            format!("`{key}` appears more than once{within}; each key may appear only once"),
        );
    }
    if let Some(path) = path {
        return field_error(path.to_owned(), format!("{}{at}", humanize(body)));
    }
    let message = if body.contains("more than one document") {
        "the file holds more than one YAML document (`---` separators); a stack file holds \
         exactly one stack"
            .to_owned()
    } else {
        // libyaml's complaint about a tab ("cannot start any token") does not say "tab".
        let tabbed = err
            .location()
            .and_then(|loc| yaml.lines().nth(loc.line().saturating_sub(1)))
            .is_some_and(|line| line.starts_with(char::is_whitespace) && line.contains('\t'));
        let hint = if tabbed {
            "; indent with spaces, not tabs"
        } else {
            ""
        };
        format!("invalid YAML: {body}{at}{hint}")
    };
    ConfigError::File {
        file: file.to_owned(),
        message,
    }
}

/// Splits serde_yaml's `path: message` into its parts. A path never contains whitespace
/// or quotes, and none of serde's messages starts with a spaceless word and ": ".
fn split_path(text: &str) -> (Option<&str>, &str) {
    match text.split_once(": ") {
        Some((head, rest))
            if !head.is_empty()
                && !head.contains(|c: char| c.is_whitespace() || c == '`' || c == '"') =>
        {
            (Some(head), rest)
        }
        _ => (None, text),
    }
}

/// Replaces Rust type names in serde messages with words a stack author knows.
fn humanize(message: &str) -> String {
    let mut out = message.to_owned();
    while let Some(start) = out.find("struct Raw") {
        let rest = &out[start + "struct ".len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        out.replace_range(
            start..start + "struct ".len() + end,
            "a mapping of settings",
        );
    }
    for ty in ["u64", "i64", "u32", "usize"] {
        if let Some(head) = out.strip_suffix(&format!("expected {ty}")) {
            out = format!("{head}expected a whole number");
        }
    }
    if let Some(head) = out.strip_suffix("expected f64") {
        out = format!("{head}expected a number");
    }
    if out.ends_with("expected a boolean") {
        out.push_str(" (true or false)");
    }
    out
}

/// The `backticked` words of a serde message, in order.
fn backticked(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let word = norm(word);
    candidates
        .map(|c| (edit_distance(&word, &norm(c)), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, counting a swap of neighbours as two edits.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = prev[j] + usize::from(ca != *cb);
            cur.push(cost.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn yaml_scalar(value: &serde_yaml::Value) -> String {
    serde_yaml::to_string(value)
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
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
    /// The stack-file spelling: `failover` or `distribute`.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalityMode::Failover => "failover",
            LocalityMode::Distribute => "distribute",
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

impl Ipv4Cidr {
    fn mask(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    /// The block with its host bits cleared (`10.0.0.1/16` -> `10.0.0.0/16`).
    pub fn network(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(self.addr) & Self::mask(self.prefix)),
            prefix: self.prefix,
        }
    }

    /// Block number `index` of size `/new_prefix` inside this block, or `None` if
    /// `new_prefix` is shorter than this block's prefix or longer than 32, or `index` is
    /// past the last block.
    pub fn subnet(&self, new_prefix: u8, index: u32) -> Option<Ipv4Cidr> {
        if new_prefix < self.prefix || new_prefix > 32 {
            return None;
        }
        let count = 1u64 << (new_prefix - self.prefix);
        if u64::from(index) >= count {
            return None;
        }
        let offset = (u64::from(index) << (32 - new_prefix)) as u32;
        Some(Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(self.network().addr) + offset),
            prefix: new_prefix,
        })
    }

    /// Whether every address of `other` is inside this block.
    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix
            && u32::from(other.addr) & Self::mask(self.prefix) == u32::from(self.network().addr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ParseCidrError {
            input: s.to_owned(),
            reason,
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(|| fail("no /prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| fail("bad address"))?;
        // u8's parser would accept "+8" and "08".
        if prefix.is_empty()
            || prefix.len() > 2
            || !prefix.bytes().all(|b| b.is_ascii_digit())
            || (prefix.len() == 2 && prefix.starts_with('0'))
        {
            return Err(fail("the prefix must be a number from 0 to 32"));
        }
        let prefix: u8 = prefix.parse().map_err(|_| fail("bad prefix"))?;
        if prefix > 32 {
            return Err(fail("the prefix must be a number from 0 to 32"));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// ---------------------------------------------------------------------------------------
// State location
// ---------------------------------------------------------------------------------------

/// Where a stack's journal and lock live, and how S3 state is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateSpec {
    /// `state:`; `None` means the local state folder (`--state-dir`). `--state` wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<StateLocation>,
    /// `state_require_versioning: true`: refuse S3 state in a bucket without versioning
    /// (by default meshstack only warns).
    pub require_versioning: bool,
    /// `state_kms_key`: encrypt state objects with this KMS key (SSE-KMS) instead of S3's
    /// own keys (SSE-S3, the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
}

impl StateSpec {
    fn is_default(&self) -> bool {
        *self == StateSpec::default()
    }
}

/// A state location: the local folder, or an S3 prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// `local`: the state folder (`--state-dir`, default `.meshstack`).
    Local,
    /// `s3://BUCKET/PREFIX[?region=REGION]`.
    S3(S3Location),
}

/// An S3 prefix holding the state of many stacks: stack `NAME` keeps
/// `PREFIX/NAME/state.json` and `PREFIX/NAME/lock.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `?region=`: the bucket's region, when it is not the stack's.
    pub region: Option<String>,
}

impl S3Location {
    /// The key of `file` of stack `stack`: `PREFIX/STACK/FILE`.
    pub fn key(&self, stack: &str, file: &str) -> String {
        format!("{}{stack}/{file}", self.key_prefix())
    }

    /// `PREFIX/` (empty for a bucket's root).
    pub fn key_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    /// `s3://BUCKET/KEY`.
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

impl fmt::Display for StateLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateLocation::Local => write!(f, "local"),
            StateLocation::S3(s3) => {
                write!(f, "s3://{}", s3.bucket)?;
                if !s3.prefix.is_empty() {
                    write!(f, "/{}", s3.prefix)?;
                }
                if let Some(region) = &s3.region {
                    write!(f, "?region={region}")?;
                }
                Ok(())
            }
        }
    }
}

impl Serialize for StateLocation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for StateLocation {
    type Err = String;

    /// `local`, or `s3://BUCKET[/PREFIX][?region=REGION]`; the error says how to write it.
    fn from_str(text: &str) -> Result<StateLocation, String> {
        const FORM: &str = "write s3://BUCKET/PREFIX for state shared in S3 (e.g. \
                            s3://my-team-state/meshstack), or `local` for the state folder";
        if text == "local" {
            return Ok(StateLocation::Local);
        }
        let Some(rest) = text.strip_prefix("s3://") else {
            return Err(format!("`{text}` is not a state location; {FORM}"));
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        check_bucket(bucket).map_err(|why| format!("`{text}`: {why}"))?;
        let prefix = prefix.trim_end_matches('/');
        check_state_prefix(prefix).map_err(|why| format!("`{text}`: {why}"))?;
        let mut region = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("region", r)) if is_region(r) => region = Some(r.to_string()),
                Some(("region", r)) => {
                    return Err(format!(
                        "`{text}`: `{r}` is not an AWS region name; write ?region=eu-west-1"
                    ))
                }
                _ => {
                    return Err(format!(
                        "`{text}`: unknown option `{pair}`; the only option is ?region=REGION \
                         (the bucket's region, when it is not the stack's)"
                    ))
                }
            }
        }
        Ok(StateLocation::S3(S3Location {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            region,
        }))
    }
}

/// S3's bucket naming rules (general purpose buckets).
fn check_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("the bucket name is missing; write s3://BUCKET/PREFIX".into());
    }
    let len = bucket.len();
    if !(3..=63).contains(&len) {
        return Err(format!(
            "S3 bucket names have 3 to 63 characters; `{bucket}` has {len}"
        ));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "bucket name `{bucket}` contains {c:?}; S3 bucket names use lowercase letters, \
             digits, '-' and '.'"
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(bucket.chars().next()) || !edge_ok(bucket.chars().last()) {
        return Err(format!(
            "bucket name `{bucket}` must begin and end with a letter or digit"
        ));
    }
    if bucket.contains("..") {
        return Err(format!("bucket name `{bucket}` must not contain \"..\""));
    }
    if bucket.parse::<Ipv4Addr>().is_ok() {
        return Err(format!(
            "bucket name `{bucket}` is an IP address, which S3 does not allow"
        ));
    }
    Ok(())
}

/// Longest state prefix: S3 keys have at most 1024 bytes, and the stack name and file follow.
const STATE_PREFIX_MAX: usize = 960;

fn check_state_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.len() > STATE_PREFIX_MAX {
        return Err(format!(
            "the prefix has {} bytes; use at most {STATE_PREFIX_MAX}",
            prefix.len()
        ));
    }
    for segment in prefix.split('/') {
        if segment.is_empty() {
            return Err(format!(
                "the prefix `{prefix}` has an empty segment (\"//\" or a leading '/'); \
                 write it like team/meshstack"
            ));
        }
        if segment == "." || segment == ".." {
            return Err(format!(
                "the prefix `{prefix}` has a `{segment}` segment; S3 keys are not paths, write \
                 the prefix out"
            ));
        }
    }
    // AWS's "safe characters" for object keys.
    let safe = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()/".contains(c);
    if let Some(c) = prefix.chars().find(|c| !safe(*c)) {
        return Err(format!(
            "the prefix `{prefix}` contains {c:?}; use letters, digits and ! - _ . * ' ( ) /"
        ));
    }
    Ok(())
}

fn resolve_state(
    location: Option<String>,
    require_versioning: Option<bool>,
    kms_key: Option<String>,
) -> Check<StateSpec> {
    let location = location
        .map(|text| {
            text.parse::<StateLocation>()
                .map_err(|e| invalid("state", e))
        })
        .transpose()?;
    let kms_key = match kms_key {
        None => None,
        Some(key) if is_kms_key(&key) => Some(key),
        Some(key) => {
            return Err(invalid(
                "state_kms_key",
                format!(
                    "`{key}` is not a KMS key; give a key ID \
                     (1234abcd-12ab-34cd-56ef-1234567890ab), a key ARN \
                     (arn:aws:kms:REGION:ACCOUNT:key/ID) or an alias (alias/my-key)"
                ),
            ))
        }
    };
    Ok(StateSpec {
        location,
        require_versioning: require_versioning.unwrap_or(false),
        kms_key,
    })
}

/// A KMS key ID, multi-region key ID, key or alias ARN, or alias name.
fn is_kms_key(key: &str) -> bool {
    let id = |s: &str| {
        let parts: Vec<usize> = s.split('-').map(str::len).collect();
        parts == [8, 4, 4, 4, 12] && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
    };
    let mrk = |s: &str| {
        s.strip_prefix("mrk-")
            .is_some_and(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit()))
    };
    let alias = |s: &str| {
        s.strip_prefix("alias/").is_some_and(|a| {
            !a.is_empty()
                && !a.starts_with("aws/")
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c))
        })
    };
    if let Some(rest) = key.strip_prefix("arn:") {
        // arn:PARTITION:kms:REGION:ACCOUNT:key/ID or :alias/NAME
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        return parts.len() == 5
            && parts[1] == "kms"
            && is_region(parts[2])
            && parts[3].len() == 12
            && parts[3].bytes().all(|b| b.is_ascii_digit())
            && (parts[4]
                .strip_prefix("key/")
                .is_some_and(|k| id(k) || mrk(k))
                || alias(parts[4]));
    }
    id(key) || mrk(key) || alias(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Stack, ConfigError> {
        Stack::parse(yaml, "test.yaml")
    }

    fn err(yaml: &str) -> String {
        parse(yaml).expect_err(yaml).to_string()
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let stack = parse("name: x\n").unwrap();
        assert_eq!(
            stack,
            Stack {
                name: "x".into(),
                region: None,
                zones: ZoneSpec::Count(3),
                kubernetes_version: "1.34".into(),
                network: NetworkSpec {
                    vpc_cidr: cidr("10.0.0.0/16"),
                    nat: NatMode::PerZone,
                },
                node_group: NodeGroupSpec {
                    instance_types: vec!["m5.large".into()],
                    size: 3,
                    disk_size_gib: 20,
                    capacity_type: CapacityType::OnDemand,
                },
                cluster: ClusterSpec {
                    endpoint_public_access: true,
                    endpoint_private_access: true,
                    public_access_cidrs: vec![cidr("0.0.0.0/0")],
                },
                allowed_account_ids: vec![],
                tags: BTreeMap::new(),
                karpenter: KarpenterSpec {
                    version: ReleaseVersion::new(1, 8, 1),
                    capacity_types: vec![CapacityType::Spot, CapacityType::OnDemand],
                },
                istio: IstioSpec {
                    version: ReleaseVersion::new(1, 18, 7),
                    tracing_sampling: Percent(100.0),
                },
                locality: LocalitySpec {
                    mode: LocalityMode::Failover,
                    local_weight: None,
                    distribute: BTreeMap::new(),
                    connection_pool: ConnectionPoolSpec {
                        http2_max_requests: 10,
                        max_requests_per_connection: 10,
                    },
                    outlier_detection: OutlierDetectionSpec {
                        consecutive_gateway_errors: 1,
                        interval: "1m".into(),
                        base_ejection_time: "30s".into(),
                    },
                    verify: LocalityVerifySpec {
                        orders_in_zone_min: Percent(80.0),
                        products_on_node_min: Percent(100.0),
                        failed_requests_max: Percent(0.0),
                    },
                },
                state: StateSpec::default(),
                expires_in: None,
            }
        );
        assert_eq!(stack.cluster_name(), "x");
        assert_eq!(stack.zone_count(), 3);
        // Empty sections mean "all defaults", like absent ones.
        assert_eq!(
            parse(
                "name: x\nnetwork:\nnode_group: {}\ncluster: ~\nkarpenter: {}\nistio:\nlocality:\n"
            )
            .unwrap(),
            stack
        );
    }

    #[test]
    fn state_locations() {
        let s3 = |bucket: &str, prefix: &str, region: Option<&str>| {
            StateLocation::S3(S3Location {
                bucket: bucket.into(),
                prefix: prefix.into(),
                region: region.map(str::to_string),
            })
        };
        let good = [
            ("local", StateLocation::Local, "local"),
            ("s3://my-state", s3("my-state", "", None), "s3://my-state"),
            ("s3://my-state/", s3("my-state", "", None), "s3://my-state"),
            (
                "s3://my.state-1/team/meshstack/",
                s3("my.state-1", "team/meshstack", None),
                "s3://my.state-1/team/meshstack",
            ),
            (
                "s3://abc/p?region=eu-west-1",
                s3("abc", "p", Some("eu-west-1")),
                "s3://abc/p?region=eu-west-1",
            ),
        ];
        for (text, want, shown) in good {
            let got: StateLocation = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<StateLocation>().unwrap(), want, "round trip");
        }
        let bad = [
            (
                ".meshstack",
                "is not a state location; write s3://BUCKET/PREFIX",
            ),
            ("https://my-state/x", "is not a state location"),
            ("s3://", "the bucket name is missing"),
            (
                "s3://ab/x",
                "S3 bucket names have 3 to 63 characters; `ab` has 2",
            ),
            (
                "s3://My-State/x",
                "contains 'M'; S3 bucket names use lowercase",
            ),
            ("s3://my_state/x", "contains '_'"),
            ("s3://-state/x", "must begin and end with a letter or digit"),
            ("s3://a..b/x", "must not contain \"..\""),
            ("s3://10.0.0.1/x", "is an IP address"),
            ("s3://bucket//x", "has an empty segment"),
            ("s3://bucket/a/../b", "has a `..` segment"),
            ("s3://bucket/a b", "contains ' '"),
            (
                "s3://bucket/p?region=moon-1",
                "`moon-1` is not an AWS region name",
            ),
            (
                "s3://bucket/p?versioning=on",
                "unknown option `versioning=on`",
            ),
        ];
        for (text, want) in bad {
            let err = text.parse::<StateLocation>().expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
        let loc = S3Location {
            bucket: "b".into(),
            prefix: "team".into(),
            region: None,
        };
        assert_eq!(loc.key("demo", "state.json"), "team/demo/state.json");
        assert_eq!(
            loc.url_of(&loc.key("demo", "lock.json")),
            "s3://b/team/demo/lock.json"
        );
        let root = S3Location {
            prefix: String::new(),
            ..loc
        };
        assert_eq!(root.key("demo", "state.json"), "demo/state.json");
    }

    #[test]
    fn state_settings_in_the_stack_file() {
        let stack = parse(
            "name: x\nstate: s3://team-state/meshstack\nstate_require_versioning: true\n\
             state_kms_key: alias/meshstack-state\n",
        )
        .unwrap();
        assert_eq!(
            stack.state,
            StateSpec {
                location: Some("s3://team-state/meshstack".parse().unwrap()),
                require_versioning: true,
                kms_key: Some("alias/meshstack-state".into()),
            }
        );
        assert_eq!(parse("name: x\n").unwrap().state, StateSpec::default());
        for key in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:123456789012:alias/state",
        ] {
            assert!(is_kms_key(key), "{key}");
        }
        for key in ["", "my key", "alias/aws/s3", "arn:aws:s3:::bucket", "1234"] {
            assert!(!is_kms_key(key), "{key}");
        }
        let cases = [
            (
                "name: x\nstate: ./state\n",
                "state",
                "is not a state location",
            ),
            (
                "name: x\nstate: s3://Bad-state/x\n",
                "state",
                "S3 bucket names use lowercase",
            ),
            (
                "name: x\nstate_kms_key: my-key\n",
                "state_kms_key",
                "is not a KMS key",
            ),
            (
                "name: x\nstate_require_versioning: yes please\n",
                "state_require_versioning",
                "",
            ),
        ];
        for (yaml, field, want) in cases {
            let e = parse(yaml).expect_err(yaml);
            assert_eq!(e.field(), Some(field), "{yaml}: {e}");
            assert!(e.to_string().contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn locality_settings() {
        let zones = "zones: [us-east-1a, us-east-1b, us-east-1c]\n";
        let ok = |yaml: &str| parse(&format!("name: x\n{zones}{yaml}")).unwrap().locality;
        let distribute = ok("locality: {mode: distribute, local_weight: 90}");
        assert_eq!(distribute.mode, LocalityMode::Distribute);
        assert_eq!(distribute.local_weight, Some(90));
        // The verify threshold follows the weight unless set.
        assert_eq!(distribute.verify.orders_in_zone_min, Percent(85.0));
        let explicit = ok("locality:\n  mode: distribute\n  distribute:\n    \
                           us-east-1a: {us-east-1a: 70, us-east-1b: 30}\n");
        assert_eq!(
            explicit.distribute["us-east-1a"],
            BTreeMap::from([("us-east-1a".into(), 70), ("us-east-1b".into(), 30)])
        );
        let tuned = ok(
            "locality:\n  outlier_detection: {interval: 10s, base_ejection_time: 500ms}\n  \
                        verify: {orders_in_zone_min: 95, products_on_node_min: 99.5, \
                        failed_requests_max: 2.5}\n",
        );
        assert_eq!(tuned.outlier_detection.interval, "10s");
        assert_eq!(tuned.outlier_detection.base_ejection_time, "500ms");
        assert_eq!(tuned.verify.orders_in_zone_min, Percent(95.0));
        assert_eq!(tuned.verify.products_on_node_min, Percent(99.5));
        assert_eq!(tuned.verify.failed_requests_max, Percent(2.5));
        assert_eq!(distribute.verify.failed_requests_max, Percent(0.0));

        // (locality yaml, field, message part)
        let bad = [
            ("locality: {mode: distribute, local_weight: 0}", "locality.local_weight", "between 1 and 100"),
            ("locality: {mode: distribute, local_weight: 101}", "locality.local_weight", "between 1 and 100"),
            ("locality: {local_weight: 80}", "locality.local_weight", "mode: distribute"),
            ("locality: {mode: nearest}", "locality.mode", "failover"),
            (
                "locality:\n  mode: distribute\n  distribute:\n    us-east-1a: {us-east-1a: 80, us-east-1b: 30}\n",
                "locality.distribute.us-east-1a",
                "add up to 110%",
            ),
            (
                "locality:\n  mode: distribute\n  distribute:\n    us-east-1a: {us-east-1a: 80}\n",
                "locality.distribute.us-east-1a",
                "add up to 80%",
            ),
            (
                "locality:\n  mode: distribute\n  distribute:\n    us-east-1a: {us-east-1a: 150, us-east-1b: -50}\n",
                "locality.distribute.us-east-1a.us-east-1a",
                "between 1 and 100",
            ),
            (
                "locality:\n  mode: distribute\n  distribute:\n    us-east-1x: {us-east-1a: 100}\n",
                "locality.distribute.us-east-1x",
                "not one of the stack's zones",
            ),
            (
                "locality:\n  mode: distribute\n  distribute:\n    us-east-1a: {us-west-2a: 100}\n",
                "locality.distribute.us-east-1a.us-west-2a",
                "not one of the stack's zones",
            ),
            ("locality: {outlier_detection: {interval: 1 minute}}", "locality.outlier_detection.interval", "duration"),
            ("locality: {outlier_detection: {base_ejection_time: 0s}}", "locality.outlier_detection.base_ejection_time", "duration"),
            ("locality: {connection_pool: {http2_max_requests: 0}}", "locality.connection_pool.http2_max_requests", "between 1"),
            ("locality: {verify: {orders_in_zone_min: 120}}", "locality.verify.orders_in_zone_min", "percentage"),
            ("locality: {verify: {products_on_node: 100}}", "locality.verify.products_on_node", "did you mean `products_on_node_min`"),
            ("locality: {verify: {failed_requests_max: -1}}", "locality.verify.failed_requests_max", "percentage"),
            ("locality: {verify: {failed_requests: 1}}", "locality.verify.failed_requests", "did you mean `failed_requests_max`"),
        ];
        for (yaml, field, part) in bad {
            let err = parse(&format!("name: x\n{zones}{yaml}")).unwrap_err();
            assert_eq!(err.field(), Some(field), "{yaml}: {err}");
            assert!(err.to_string().contains(part), "{yaml}: {err}");
        }
        // Named weights need named zones.
        let err =
            parse("name: x\nzones: 3\nlocality: {mode: distribute, distribute: {a: {a: 100}}}")
                .unwrap_err();
        assert!(err.to_string().contains("list its zones"), "{err}");
    }

    #[test]
    fn embedded_default_is_the_demo_stack() {
        let stack = Stack::embedded_default();
        assert_eq!(stack.name, "meshstack-demo");
        assert_eq!(stack.region(), None);
        assert_eq!(stack.zone_count(), 3);
        assert_eq!(stack.node_group.instance_types, ["m5.large"]);
        assert_eq!(stack.node_group.size, 3);
        assert_eq!(stack.network.vpc_cidr, cidr("10.0.0.0/16"));
        assert_eq!(stack.network.nat, NatMode::PerZone);
        // The file says it shows every default; it must not drift from the code's.
        assert_eq!(stack, parse("name: meshstack-demo\n").unwrap());
    }

    #[test]
    fn a_full_file_is_read_field_by_field() {
        let stack = parse(
            r#"
name: shop
region: eu-west-1
zones: [eu-west-1a, eu-west-1c]
kubernetes_version: "1.33"
network: {vpc_cidr: 172.20.0.0/18, nat: single}
node_group:
  instance_types: [m6i.large, m5.large]
  size: 4
  disk_size_gib: 50
  capacity_type: spot
cluster:
  endpoint_public_access: true
  endpoint_private_access: false
  public_access_cidrs: [203.0.113.0/24, 198.51.100.7/32]
allowed_account_ids: ["012345678901"]
tags:
  team: payments
  cost-center: "42"
  empty:
  tilde: ~
"#,
        )
        .unwrap();
        assert_eq!(stack.region(), Some("eu-west-1"));
        assert_eq!(
            stack.zones,
            ZoneSpec::Names(vec!["eu-west-1a".into(), "eu-west-1c".into()])
        );
        assert_eq!(stack.kubernetes_version, "1.33");
        assert_eq!(stack.network.vpc_cidr, cidr("172.20.0.0/18"));
        assert_eq!(stack.network.nat, NatMode::Single);
        assert_eq!(stack.node_group.instance_types, ["m6i.large", "m5.large"]);
        assert_eq!(stack.node_group.size, 4);
        assert_eq!(stack.node_group.disk_size_gib, 50);
        assert_eq!(stack.node_group.capacity_type.as_eks_str(), "SPOT");
        assert!(!stack.cluster.endpoint_private_access);
        assert_eq!(
            stack.cluster.public_access_cidrs,
            [cidr("203.0.113.0/24"), cidr("198.51.100.7/32")]
        );
        assert_eq!(stack.allowed_account_ids, ["012345678901"]);
        assert_eq!(stack.tags["cost-center"], "42");
        assert_eq!(stack.tags["empty"], "");
        assert_eq!(stack.tags["tilde"], "");
    }

    #[test]
    fn zone_list_implies_region() {
        let stack = parse("name: x\nzones: [us-west-2b, us-west-2a, us-west-2d]\n").unwrap();
        assert_eq!(stack.region(), Some("us-west-2"));
        assert_eq!(stack.zone_count(), 3);
        let stack =
            parse("name: x\nregion: us-gov-west-1\nzones: [us-gov-west-1a, us-gov-west-1b]\n")
                .unwrap();
        assert_eq!(stack.region(), Some("us-gov-west-1"));
        assert_eq!(parse("name: x\nzones: 4\n").unwrap().region(), None);
    }

    #[test]
    fn region_and_zone_name_shapes() {
        for (region, ok) in [
            ("us-east-1", true),
            ("eu-central-2", true),
            ("us-gov-west-1", true),
            ("ap-southeast-4", true),
            ("cn-north-1", true),
            ("us-east", false),
            ("us-east-1a", false),
            ("US-EAST-1", false),
            ("use-east-1", false),
            ("us-gov-1-a", false),
            ("us--1", false),
            ("us-east-100", false),
            ("", false),
        ] {
            assert_eq!(is_region(region), ok, "{region}");
        }
        for (zone, region) in [
            ("us-east-1a", Some("us-east-1")),
            ("us-gov-west-1b", Some("us-gov-west-1")),
            ("us-east-1", None),
            ("us-east-1A", None),
            ("use1-az1", None),
            ("us-east-1ab", None),
        ] {
            assert_eq!(zone_region(zone), region, "{zone}");
        }
    }

    #[test]
    fn instance_type_shapes() {
        for (ty, ok) in [
            ("m5.large", true),
            ("c6gn.16xlarge", true),
            ("m7i-flex.large", true),
            ("u-6tb1.metal", true),
            ("t3.micro", true),
            ("m5large", false),
            ("M5.large", false),
            ("m.large", false),
            ("m5.", false),
            (".large", false),
            ("5m.large", false),
            ("m5.large.x", false),
            ("m5.Large", false),
        ] {
            assert_eq!(is_instance_type(ty), ok, "{ty}");
        }
    }

    #[test]
    fn kubernetes_versions() {
        for (version, ok) in [
            ("\"1.29\"", true),
            ("'1.34'", true),
            ("\"1.28\"", false),
            ("\"1.37\"", false),
            ("\"1.034\"", false),
            ("\"v1.34\"", false),
            ("\"1.34.1\"", false),
            ("\"1.\"", false),
            ("1.34", false),
            ("1", false),
        ] {
            let result = parse(&format!("name: x\nkubernetes_version: {version}\n"));
            assert_eq!(result.is_ok(), ok, "{version}: {result:?}");
        }
        // 1.36 needs a newer Karpenter than the default pin, and says so naming the field.
        let e = parse("name: x\nkubernetes_version: '1.36'\n").unwrap_err();
        assert_eq!(e.field(), Some("karpenter.version"), "{e}");
        assert!(e.to_string().contains("1.13.0 or newer"), "{e}");
        parse("name: x\nkubernetes_version: '1.36'\nkarpenter: {version: '1.13.0'}\n").unwrap();
    }

    #[test]
    fn names() {
        for (name, ok) in [
            ("a", true),
            ("meshstack-demo", true),
            ("a1-b2", true),
            ("abcdefghijklmnopqrstuvwx", true),
            ("abcdefghijklmnopqrstuvwxy", false),
            ("", false),
            ("a--b", false),
            ("a-", false),
            ("-a", false),
            ("1a", false),
            ("a_b", false),
            ("Ab", false),
        ] {
            assert_eq!(name_problem(name).is_none(), ok, "{name:?}");
        }
        assert_eq!(suggest_name("My_Stack").as_deref(), Some("my-stack"));
        assert_eq!(suggest_name("demo--"), Some("demo".into()));
        assert_eq!(suggest_name("1st"), None);
        assert_eq!(suggest_name("meshstack-demo-extra-long"), None);
    }

    #[test]
    fn cidr_parse_and_display() {
        for (text, parsed) in [
            ("10.0.0.0/16", Some(("10.0.0.0", 16))),
            ("0.0.0.0/0", Some(("0.0.0.0", 0))),
            ("203.0.113.7/32", Some(("203.0.113.7", 32))),
            ("10.0.0.1/16", Some(("10.0.0.1", 16))),
            ("10.0.0.0", None),
            ("10.0.0.0/", None),
            ("10.0.0.0/33", None),
            ("10.0.0.0/+8", None),
            ("10.0.0.0/08", None),
            ("10.0.0.0/16/1", None),
            ("10.0.0/16", None),
            ("10.0.0.256/16", None),
            ("010.0.0.0/16", None),
            (" 10.0.0.0/16", None),
            ("", None),
        ] {
            let result = text.parse::<Ipv4Cidr>();
            match parsed {
                Some((addr, prefix)) => {
                    let cidr = result.unwrap();
                    assert_eq!((cidr.addr, cidr.prefix), (addr.parse().unwrap(), prefix));
                    assert_eq!(cidr.to_string(), text);
                }
                None => assert!(result.is_err(), "{text} parsed as {result:?}"),
            }
        }
        assert_eq!(
            "10.0.0/16".parse::<Ipv4Cidr>().unwrap_err().to_string(),
            "`10.0.0/16` is not an IPv4 CIDR block (bad address); write it like 10.0.0.0/16"
        );
    }

    #[test]
    fn cidr_arithmetic() {
        let vpc = cidr("10.0.0.0/16");
        assert_eq!(cidr("10.0.3.4/16").network(), vpc);
        assert_eq!(cidr("1.2.3.4/0").network(), cidr("0.0.0.0/0"));
        assert_eq!(vpc.subnet(19, 1), Some(cidr("10.0.32.0/19")));
        assert_eq!(vpc.subnet(16, 0), Some(vpc));
        assert_eq!(vpc.subnet(19, 8), None);
        assert_eq!(vpc.subnet(15, 0), None);
        assert_eq!(vpc.subnet(33, 0), None);
        assert_eq!(
            cidr("0.0.0.0/0").subnet(32, u32::MAX),
            Some(cidr("255.255.255.255/32"))
        );
        assert!(vpc.contains(&cidr("10.0.255.0/24")));
        assert!(vpc.contains(&vpc));
        assert!(!vpc.contains(&cidr("10.1.0.0/24")));
        assert!(!vpc.contains(&cidr("10.0.0.0/8")));
        assert!(cidr("0.0.0.0/0").contains(&vpc));
    }

    #[test]
    fn subnet_carving_table() {
        for (vpc, zone, public, private) in [
            ("10.0.0.0/16", 0, "10.0.224.0/22", "10.0.0.0/19"),
            ("10.0.0.0/16", 1, "10.0.228.0/22", "10.0.32.0/19"),
            ("10.0.0.0/16", 2, "10.0.232.0/22", "10.0.64.0/19"),
            ("10.0.0.0/16", 5, "10.0.244.0/22", "10.0.160.0/19"),
            ("172.16.0.0/20", 0, "172.16.14.0/26", "172.16.0.0/23"),
            ("172.16.0.0/20", 3, "172.16.14.192/26", "172.16.6.0/23"),
            ("192.168.64.0/18", 1, "192.168.121.0/24", "192.168.72.0/21"),
        ] {
            let stack = parse(&format!(
                "name: x\nzones: 6\nnetwork: {{vpc_cidr: {vpc}}}\n"
            ))
            .unwrap();
            assert_eq!(
                stack.subnet_cidrs(zone),
                (cidr(public), cidr(private)),
                "{vpc} zone {zone}"
            );
        }
    }

    #[test]
    fn subnets_never_overlap() {
        for prefix in VPC_PREFIX_MIN..=VPC_PREFIX_MAX {
            for zones in ZONES_MIN..=ZONES_MAX {
                let yaml =
                    format!("name: x\nzones: {zones}\nnetwork: {{vpc_cidr: 10.0.0.0/{prefix}}}\n");
                let stack = parse(&yaml).unwrap();
                let vpc = stack.network.vpc_cidr;
                let all: Vec<Ipv4Cidr> = (0..zones)
                    .flat_map(|z| {
                        let (public, private) = stack.subnet_cidrs(z);
                        [public, private]
                    })
                    .collect();
                assert_eq!(all.len(), 2 * zones);
                for (i, a) in all.iter().enumerate() {
                    assert!(vpc.contains(a), "{a} outside {vpc}");
                    assert_eq!(*a, a.network(), "{a} has host bits");
                    for b in &all[i + 1..] {
                        assert!(
                            !a.contains(b) && !b.contains(a),
                            "{a} overlaps {b} in {vpc}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "zone index 3 out of range")]
    fn subnet_cidrs_rejects_a_zone_past_the_end() {
        parse("name: x\n").unwrap().subnet_cidrs(3);
    }

    #[test]
    fn display_formats_are_exact() {
        let field = ConfigError::Field {
            file: "f.yaml".into(),
            field: "network.vpc_cidr".into(),
            message: "m".into(),
        };
        assert_eq!(field.to_string(), "f.yaml: network.vpc_cidr: m");
        assert_eq!(field.field(), Some("network.vpc_cidr"));
        let file = ConfigError::File {
            file: "f.yaml".into(),
            message: "m".into(),
        };
        assert_eq!(file.to_string(), "f.yaml: m");
        assert_eq!(file.field(), None);

        for (yaml, expected) in [
            (
                "name: x\nnetwork:\n  vpc_cidr: 10.0.0.1/16\n",
                "test.yaml: network.vpc_cidr: 10.0.0.1/16 has host bits set; did you mean 10.0.0.0/16?",
            ),
            (
                "name: x\nnetwork:\n  natt: single\n",
                "test.yaml: network.natt: unknown field `natt`, expected `vpc_cidr` or `nat` \
                 (line 3, column 3); did you mean `nat`?",
            ),
            (
                "name: x\nnode_group:\n  size: three\n",
                "test.yaml: node_group.size: invalid type: string \"three\", expected a whole \
                 number (line 3, column 9)",
            ),
            (
                "name: x\nnetwork: 10.0.0.0/16\n",
                "test.yaml: network: invalid type: string \"10.0.0.0/16\", expected a mapping \
                 of settings (line 2, column 10)",
            ),
            (
                "name: x\nnode_group:\n  capacity_type: on_demand\n",
                "test.yaml: node_group.capacity_type: unknown variant `on_demand`, expected \
                 `on-demand` or `spot` (line 3, column 18); did you mean `on-demand`?",
            ),
            (
                "name: x\nname: y\n",
                "test.yaml: name: `name` appears more than once in the mapping at line 1, column 1; \
                 each key may appear only once",
            ),
            (
                "name: x\ntags:\n  a: b\n  a: c\n",
                "test.yaml: tags.a: `a` appears more than once in the mapping at line 3, column 3; \
                 each key may appear only once",
            ),
            (
                "name: x\nkubernetes_version: 1.30\n",
                "test.yaml: kubernetes_version: 1.3 is a number here, but this setting is \
                 text: YAML reads an unquoted 1.30 as 1.3, so quote the version, like \
                 kubernetes_version: \"1.34\" (line 2, column 21)",
            ),
            ("", "test.yaml: the file is empty; a stack needs at least `name: <stack-name>` (see stacks/demo.yaml for every setting)"),
            ("42\n", "test.yaml: expected a mapping of settings like `name: meshstack-demo`, found the single value `42`"),
            (
                "name: x\n  bad: 1\n",
                "test.yaml: invalid YAML: mapping values are not allowed in this context (line 2, column 6)",
            ),
            (
                "@\n",
                "test.yaml: invalid YAML: found character that cannot start any token, while \
                 scanning for the next token (line 1, column 1)",
            ),
        ] {
            assert_eq!(err(yaml), expected, "{yaml}");
        }
        let top = err("name: x\nregoin: us-east-1\n");
        assert!(
            top.starts_with(
                "test.yaml: regoin: unknown field `regoin`, expected one of `name`, `region`"
            ),
            "{top}"
        );
        assert!(
            top.ends_with("(line 2, column 1); did you mean `region`?"),
            "{top}"
        );
    }

    #[test]
    fn io_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.yaml");
        let error = Stack::load(&path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{}: cannot read the stack file", path.display())
        );
        let ConfigError::Io { source, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);

        let path = dir.path().join("ok.yaml");
        std::fs::write(&path, "name: from-disk\n").unwrap();
        assert_eq!(Stack::load(&path).unwrap().name, "from-disk");
        std::fs::write(&path, "name: Bad\n").unwrap();
        let error = Stack::load(&path).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{}: name: ", path.display())),
            "{error}"
        );
    }

    #[test]
    fn serialized_stack_parses_back_to_itself() {
        let full = parse(
            "name: x\nzones: [us-east-1a, us-east-1b]\nkubernetes_version: '1.30'\n\
             network: {nat: single}\nnode_group: {capacity_type: spot}\n\
             allowed_account_ids: ['000000000001']\ntags: {a: '1'}\n\
             karpenter: {version: 1.9.0, capacity_types: [on-demand]}\n\
             istio: {version: 1.18.1, tracing_sampling: 12.5}\n",
        )
        .unwrap();
        for stack in [Stack::embedded_default(), full] {
            let yaml = serde_yaml::to_string(&stack).unwrap();
            assert_eq!(Stack::parse(&yaml, "round trip").unwrap(), stack, "{yaml}");
        }
        let json = serde_json::to_value(Stack::embedded_default()).unwrap();
        assert_eq!(
            json["network"],
            serde_json::json!({"vpc_cidr": "10.0.0.0/16", "nat": "per-zone"})
        );
        assert_eq!(json["zones"], 3);
        assert_eq!(json["node_group"]["capacity_type"], "on-demand");
        assert_eq!(
            json["karpenter"],
            serde_json::json!({"version": "1.8.1", "capacity_types": ["spot", "on-demand"]})
        );
        assert_eq!(
            json["istio"],
            serde_json::json!({"version": "1.18.7", "tracing_sampling": 100.0})
        );
        assert!(json.get("region").is_none());
    }

    #[test]
    fn typo_suggestions() {
        assert_eq!(
            closest("regoin", ["name", "region"].into_iter()),
            Some("region")
        );
        assert_eq!(
            closest("node-group", ["node_group"].into_iter()),
            Some("node_group")
        );
        assert_eq!(closest("karpenter", ["name", "region"].into_iter()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn release_versions() {
        for (text, parsed) in [
            ("1.8.1", Some((1, 8, 1))),
            ("0.32.10", Some((0, 32, 10))),
            ("1.18.7", Some((1, 18, 7))),
            ("10.0.0", Some((10, 0, 0))),
            ("1.8", None),
            ("v1.8.1", None),
            ("1.8.1-rc.0", None),
            ("1.8.1+build", None),
            ("1.08.1", None),
            ("1.8.1.2", None),
            ("1..1", None),
            ("1.8.x", None),
            ("", None),
            ("1.8.9999999999", None),
        ] {
            let result = text.parse::<ReleaseVersion>();
            match parsed {
                Some((a, b, c)) => {
                    assert_eq!(result, Ok(ReleaseVersion::new(a, b, c)), "{text}");
                    assert_eq!(result.unwrap().to_string(), text);
                }
                None => assert!(result.is_err(), "{text} parsed as {result:?}"),
            }
        }
        assert!(ReleaseVersion::new(0, 33, 0) > ReleaseVersion::new(0, 32, 10));
        assert!(ReleaseVersion::new(1, 10, 0) > ReleaseVersion::new(1, 9, 5));
    }

    #[test]
    fn karpenter_and_istio_sections() {
        let stack = parse("name: x\n").unwrap();
        assert_eq!(stack.karpenter.version, ReleaseVersion::new(1, 8, 1));
        assert_eq!(
            stack.karpenter.capacity_types,
            [CapacityType::Spot, CapacityType::OnDemand]
        );
        assert_eq!(stack.istio.version, ReleaseVersion::new(1, 18, 7));
        assert_eq!(stack.istio.tracing_sampling.get(), 100.0);

        let stack = parse(
            "name: x\nkarpenter: {version: 1.9.0, capacity_types: [on-demand]}\n\
             istio: {version: 1.18.3, tracing_sampling: 0.5}\n",
        )
        .unwrap();
        assert_eq!(stack.karpenter.version, ReleaseVersion::new(1, 9, 0));
        assert_eq!(stack.karpenter.capacity_types, [CapacityType::OnDemand]);
        assert_eq!(stack.istio.version, ReleaseVersion::new(1, 18, 3));
        assert_eq!(stack.istio.tracing_sampling.get(), 0.5);
        // Whole numbers are percentages too.
        let stack = parse("name: x\nistio: {tracing_sampling: 0}\n").unwrap();
        assert_eq!(stack.istio.tracing_sampling.get(), 0.0);

        for (yaml, field, message) in [
            ("karpenter: {version: 1.8}", "karpenter.version", "quote"),
            (
                "karpenter: {version: v1.8.1}",
                "karpenter.version",
                "without the 'v'",
            ),
            (
                "karpenter: {version: '1.8'}",
                "karpenter.version",
                "no patch number",
            ),
            (
                "karpenter: {capacity_types: []}",
                "karpenter.capacity_types",
                "is empty",
            ),
            (
                "karpenter: {capacity_types: [spot, spot]}",
                "karpenter.capacity_types[1]",
                "listed twice",
            ),
            (
                "karpenter: {capacity_types: [reserved]}",
                "karpenter.capacity_types[0]",
                "unknown variant `reserved`",
            ),
            (
                "istio: {version: 1.18.7-beta.1}",
                "istio.version",
                "pre-release",
            ),
            (
                "istio: {tracing_sampling: 100.5}",
                "istio.tracing_sampling",
                "from 0 to 100",
            ),
            (
                "istio: {tracing_sampling: -1}",
                "istio.tracing_sampling",
                "from 0 to 100",
            ),
            (
                "istio: {tracing_sampling: .nan}",
                "istio.tracing_sampling",
                "from 0 to 100",
            ),
            (
                "istio: {tracing_sampling: all}",
                "istio.tracing_sampling",
                "expected a number",
            ),
            ("istio: {sampling: 1}", "istio.sampling", "unknown field"),
        ] {
            let error = parse(&format!("name: x\n{yaml}\n")).unwrap_err();
            assert_eq!(error.field(), Some(field), "{yaml}: {error}");
            assert!(error.to_string().contains(message), "{yaml}: {error}");
        }
    }

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bad-stacks");

    /// Every file in tests/fixtures/bad-stacks fails as expected.tsv says, and every
    /// fixture is listed there.
    #[test]
    fn bad_stack_fixtures_fail_with_the_expected_error() {
        let dir = Path::new(FIXTURES);
        let manifest = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
        let mut listed = Vec::new();
        for line in manifest
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let cols: Vec<&str> = line.split('\t').collect();
            let [file, field, message] = cols[..] else {
                panic!("expected.tsv: want 3 tab-separated columns: {line:?}")
            };
            listed.push(file.to_owned());
            let error = Stack::load(&dir.join(file)).expect_err(file);
            let shown = error.to_string();
            assert!(shown.contains(file), "{file}: {shown}");
            match field {
                "-" => assert_eq!(error.field(), None, "{file}: {shown}"),
                field => {
                    assert_eq!(error.field(), Some(field), "{file}: {shown}");
                    assert!(shown.contains(&format!(": {field}: ")), "{file}: {shown}");
                }
            }
            assert!(
                shown.contains(message),
                "{file}: want {message:?} in {shown}"
            );
        }
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".yaml"))
            .collect();
        on_disk.sort();
        listed.sort();
        assert_eq!(on_disk, listed, "fixtures on disk vs expected.tsv");
        assert!(listed.len() >= 34, "only {} fixtures", listed.len());
    }

    #[test]
    fn lifetimes_parse_print_and_refuse_what_is_ambiguous() {
        for (text, secs, shown) in [
            ("8h", 8 * 3600, "8h"),
            ("90m", 90 * 60, "1h30m"),
            ("1h30m", 90 * 60, "1h30m"),
            ("2d", 2 * 86_400, "2d"),
            ("45s", 45, "45s"),
            (" 1d2h3m4s ", 86_400 + 7_384, "1d2h3m4s"),
        ] {
            let l: Lifetime = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(l.duration().as_secs(), secs, "{text}");
            assert_eq!(l.to_string(), shown, "{text}");
        }
        for (text, why) in [
            ("", "empty"),
            ("8", "no unit"),
            ("h", "without a number"),
            ("8 hours", "not a unit"),
            ("30m1h", "largest first"),
            ("1h1h", "largest first"),
            ("0h", "zero"),
            ("400d", "more than a year"),
            ("99999999999999999999d", "too long"),
        ] {
            let err = text.parse::<Lifetime>().unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn expires_in_is_read_from_the_stack_file() {
        let s = Stack::parse("name: t\nexpires_in: 8h\n", "t.yaml").unwrap();
        assert_eq!(s.expires_in.unwrap().duration().as_secs(), 8 * 3600);
        assert_eq!(
            Stack::parse("name: t\n", "t.yaml").unwrap().expires_in,
            None
        );
        let err = Stack::parse("name: t\nexpires_in: 8\n", "t.yaml").unwrap_err();
        assert_eq!(err.field(), Some("expires_in"), "{err}");
    }

    #[test]
    fn fleet_names_leave_room_for_the_suffix_and_say_how_much() {
        assert_eq!(fleet_env_name("demo", "01").unwrap(), "demo-01");
        assert_eq!(fleet_env_name("demo", "alice").unwrap(), "demo-alice");
        // 21 + "-01" = 24: fits exactly.
        let name21 = "a".repeat(21);
        assert!(fleet_env_name(&name21, "01").is_ok());
        let name22 = "a".repeat(22);
        let err = fleet_env_name(&name22, "01").unwrap_err();
        assert!(err.contains("25 characters"), "{err}");
        assert!(err.contains("may have at most 21"), "{err}");
        assert!(err.contains("make the fleet smaller"), "{err}");
        let err = fleet_env_name("demo", "Alice").unwrap_err();
        assert!(err.contains("lowercase"), "{err}");
        let err = fleet_env_name("demo", "a-").unwrap_err();
        assert!(err.contains("must not end with '-'"), "{err}");
        let err = fleet_env_name(&"a".repeat(20), "alice").unwrap_err();
        assert!(err.contains("shorter --names"), "{err}");
    }

    #[test]
    fn renamed_keeps_settings_and_checks_the_name() {
        let s = Stack::parse("name: t\nnetwork:\n  nat: single\n", "t.yaml").unwrap();
        let e = s.renamed("t-01").unwrap();
        assert_eq!(e.name, "t-01");
        assert_eq!(e.network, s.network);
        assert!(s.renamed("T").is_err());
    }

    #[test]
    fn a_teardown_stack_needs_only_a_name_and_a_region() {
        let s = Stack::for_teardown("old-01", Some("eu-west-1"), "--name").unwrap();
        assert_eq!((s.name.as_str(), s.region()), ("old-01", Some("eu-west-1")));
        assert_eq!(
            Stack::for_teardown("old-01", None, "--name")
                .unwrap()
                .region(),
            None
        );
        let err = Stack::for_teardown("old-01", Some("eu-west-1a"), "--name").unwrap_err();
        assert_eq!(err.field(), Some("region"), "{err}");
        let err = Stack::for_teardown("Old\nx: 1", Some("eu-west-1"), "--name").unwrap_err();
        assert_eq!(err.field(), Some("name"), "{err}");
    }
}
