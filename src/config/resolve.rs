//! Raw -> validated: each raw section resolved into its spec, with defaults applied and every
//! rule checked, a failure named by its dotted field path.

use super::raw::*;
use super::state::resolve_state;
use super::*;

// ---------------------------------------------------------------------------------------
// Raw -> validated
// ---------------------------------------------------------------------------------------

impl RawStack {
    pub(super) fn resolve(self) -> Check<Stack> {
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
            charts: self.charts.unwrap_or_default().resolve()?,
            state: resolve_state(
                self.state,
                self.state_require_versioning,
                self.state_kms_key,
            )?,
            expires_in: self
                .expires_in
                .map(|RawLifetime(text)| text.parse().map_err(|e| invalid("expires_in", e)))
                .transpose()?,
            images: resolve_images(self.images)?,
            access: self.access.unwrap_or_default().resolve()?,
            zones,
        };
        if stack.cluster.existing.is_some() && stack.expires_in.is_some() {
            return Err(invalid(
                "expires_in",
                "applies to stacks meshstack builds in AWS (`meshstack reap` finds them by tag); \
                 an existing cluster (`cluster.existing`) is never removed by meshstack: remove \
                 the key",
            ));
        }
        // The version rules that span several settings, so that a pair that cannot work is
        // refused now, not after 20 billable minutes of VPC, cluster and node group.
        let minor = stack.kubernetes_minor();
        let version_error = |e: versions::VersionError| invalid(e.field, e.message);
        versions::check_karpenter(stack.karpenter.version, minor).map_err(version_error)?;
        versions::kiali_operator(stack.istio.version).map_err(version_error)?;
        if !stack.locality.mode.uses_destination_rule() {
            // An existing cluster's own version is checked when meshstack reaches it.
            versions::check_traffic_distribution(
                minor,
                stack.istio.version,
                "the stack's kubernetes_version",
            )
            .map_err(version_error)?;
        }
        versions::node_ami_type(minor, &stack.node_group.instance_types).map_err(version_error)?;
        Ok(stack)
    }
}

pub(super) fn resolve_name(name: Option<String>) -> Check<String> {
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
pub(super) fn name_problem(name: &str) -> Option<String> {
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
pub(super) fn suggest_name(name: &str) -> Option<String> {
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

pub(super) fn check_region(region: String) -> Check<String> {
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
pub(super) fn is_region(s: &str) -> bool {
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
pub(super) fn zone_region(zone: &str) -> Option<&str> {
    let region = zone.strip_suffix(|c: char| c.is_ascii_lowercase())?;
    is_region(region).then_some(region)
}

pub(super) fn resolve_zones(
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

pub(super) fn zone_name_problem(zone: &str) -> String {
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

impl RawCharts {
    pub(super) fn resolve(self) -> Check<ChartSources> {
        let mirror = match self.mirror {
            Some(m) => match charts::repository_problem(&m) {
                Some(problem) => return Err(invalid("charts.mirror", problem)),
                None => Some(m),
            },
            None => None,
        };
        let known_chart = |field: &str, chart: &str| -> Check<()> {
            if charts::name::ALL.contains(&chart) {
                return Ok(());
            }
            let hint = closest(chart, charts::name::ALL.iter().copied())
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            Err(invalid(
                field,
                format!(
                    "meshstack installs no chart `{chart}`; {hint}the charts are {}",
                    charts::name::ALL.join(", ")
                ),
            ))
        };
        let mut repositories = BTreeMap::new();
        for (chart, repo) in self.repositories.unwrap_or_default() {
            let field = format!("charts.repositories.{chart}");
            known_chart(&field, &chart)?;
            if let Some(problem) = charts::repository_problem(&repo) {
                return Err(invalid(field, problem));
            }
            repositories.insert(chart, repo);
        }
        let mut digests = BTreeMap::new();
        for (chart, digest) in self.digests.unwrap_or_default() {
            let field = format!("charts.digests.{chart}");
            known_chart(&field, &chart)?;
            let hex = charts::parse_digest(&digest).map_err(|e| invalid(&field, e))?;
            digests.insert(chart, hex);
        }
        Ok(ChartSources {
            mirror,
            repositories,
            digests,
        })
    }
}

pub(super) fn resolve_k8s_version(raw: Option<RawVersion>) -> Check<String> {
    let Some(RawVersion(version)) = raw else {
        return Ok(DEFAULT_KUBERNETES_VERSION.to_owned());
    };
    let minor = version
        .strip_prefix("1.")
        .filter(|m| (1..=3).contains(&m.len()) && !m.starts_with('0'))
        .filter(|m| m.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|m| m.parse::<u32>().ok());
    let known = versions::EKS_CALENDAR;
    if minor.is_some_and(|m| known.iter().any(|v| v.minor == m)) {
        return Ok(version);
    }
    // Which of these EKS still creates depends on the day: `plan`, `up` and `doctor` check
    // that against EKS (or the calendar) before any write. Here: versions meshstack knows.
    let (first, last) = (known[0].minor, known[known.len() - 1].minor);
    let accepted = format!(
        "meshstack knows Kubernetes 1.{first} to 1.{last} (EKS's calendar, checked {}); use one \
         that EKS still supports, like \"{DEFAULT_KUBERNETES_VERSION}\"",
        versions::EKS_CALENDAR_CHECKED
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
    pub(super) fn resolve(self) -> Check<NetworkSpec> {
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
pub(super) fn parse_network(field: &str, text: &str) -> Check<Ipv4Cidr> {
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
    pub(super) fn resolve(self) -> Check<NodeGroupSpec> {
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

pub(super) fn in_range(
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

pub(super) fn check_instance_types(types: &[String]) -> Check<()> {
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
pub(super) fn is_instance_type(s: &str) -> bool {
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
    pub(super) fn resolve(self) -> Check<ClusterSpec> {
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
        let existing = self.existing.map(RawExisting::resolve).transpose()?;
        Ok(ClusterSpec {
            endpoint_public_access,
            endpoint_private_access,
            public_access_cidrs,
            support: self.support.unwrap_or_default(),
            existing,
        })
    }
}

impl RawExisting {
    fn resolve(self) -> Check<ExistingCluster> {
        let context = match self.context {
            Some(c) if c.trim().is_empty() => {
                return Err(invalid(
                    "cluster.existing.context",
                    "is empty; name a context of the kubeconfig, or remove the key to use its \
                     current context",
                ))
            }
            other => other,
        };
        let kubeconfig = match self.kubeconfig {
            Some(k) if k.trim().is_empty() => {
                return Err(invalid(
                    "cluster.existing.kubeconfig",
                    "is empty; give the kubeconfig's path, or remove the key to use \
                     KUBECONFIG (else ~/.kube/config)",
                ))
            }
            Some(k) => Some(expand_home(&k)),
            None => None,
        };
        Ok(ExistingCluster {
            context,
            kubeconfig,
        })
    }
}

/// `~/x` -> `$HOME/x`, as a shell would; anything else as written.
fn expand_home(path: &str) -> std::path::PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => std::path::PathBuf::from(home).join(rest),
        _ => std::path::PathBuf::from(path),
    }
}

pub(super) fn resolve_account_ids(raw: Option<Vec<RawAccountId>>) -> Check<Vec<String>> {
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

pub(super) fn resolve_tags(
    raw: Option<BTreeMap<String, Option<String>>>,
) -> Check<BTreeMap<String, String>> {
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
    pub(super) fn resolve(self) -> Check<KarpenterSpec> {
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
    pub(super) fn resolve(self) -> Check<IstioSpec> {
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
        let ingress_source_ranges = match self.ingress_source_ranges {
            None => Vec::new(),
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    "istio.ingress_source_ranges",
                    "is empty; list the CIDR blocks that may reach the ingress gateway, like \
                     [203.0.113.0/24], or remove the key to leave it open",
                ))
            }
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, text)| parse_network(&format!("istio.ingress_source_ranges[{i}]"), text))
                .collect::<Check<_>>()?,
        };
        Ok(IstioSpec {
            version,
            tracing_sampling,
            ingress_source_ranges,
        })
    }
}

impl RawLocality {
    pub(super) fn resolve(self, zones: &ZoneSpec) -> Check<LocalitySpec> {
        let mode = self.mode.unwrap_or_default();
        if mode != LocalityMode::Distribute {
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
        if !mode.uses_destination_rule() {
            for (key, set) in [
                ("connection_pool", self.connection_pool.is_some()),
                ("outlier_detection", self.outlier_detection.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        format!("locality.{key}"),
                        "belongs to the orders DestinationRule, which `mode: \
                         traffic-distribution` does not use; remove the key or pick mode \
                         failover or distribute",
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
pub(super) fn resolve_distribute(
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
pub(super) fn resolve_duration(field: &str, raw: Option<String>, default: &str) -> Check<String> {
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

pub(super) fn resolve_release(
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

/// `images:`: each key one of the app's images, each value a reference by digest.
pub(super) fn resolve_images(
    raw: Option<BTreeMap<String, String>>,
) -> Check<BTreeMap<String, String>> {
    let images = raw.unwrap_or_default();
    for (key, reference) in &images {
        let field = format!("images.{key}");
        if !crate::images::APP_IMAGES.iter().any(|i| i.key == key) {
            let keys: Vec<&str> = crate::images::APP_IMAGES.iter().map(|i| i.key).collect();
            return Err(invalid(
                &field,
                format!(
                    "is not one of the app's images; the keys are {}",
                    keys.join(", ")
                ),
            ));
        }
        if let Some(problem) = crate::images::pin_problem(reference) {
            return Err(invalid(&field, problem));
        }
    }
    Ok(images)
}
