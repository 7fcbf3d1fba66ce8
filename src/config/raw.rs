//! The raw layer: the YAML as written, every key optional and unknown keys refused.

use super::*;

// ---------------------------------------------------------------------------------------
// Raw layer: the YAML as written
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStack {
    pub(super) name: Option<String>,
    pub(super) region: Option<String>,
    pub(super) zones: Option<RawZones>,
    pub(super) kubernetes_version: Option<RawVersion>,
    pub(super) network: Option<RawNetwork>,
    pub(super) node_group: Option<RawNodeGroup>,
    pub(super) cluster: Option<RawCluster>,
    pub(super) allowed_account_ids: Option<Vec<RawAccountId>>,
    // Option values so that `key:` and `key: ~` mean an empty value, not the string "~".
    pub(super) tags: Option<BTreeMap<String, Option<String>>>,
    pub(super) karpenter: Option<RawKarpenter>,
    pub(super) istio: Option<RawIstio>,
    pub(super) locality: Option<RawLocality>,
    pub(super) charts: Option<RawCharts>,
    pub(super) state: Option<String>,
    pub(super) state_require_versioning: Option<bool>,
    pub(super) state_kms_key: Option<String>,
    pub(super) expires_in: Option<RawLifetime>,
    pub(super) images: Option<BTreeMap<String, String>>,
    pub(super) access: Option<super::access::RawAccess>,
}

/// `expires_in:`; a bare number has no unit, so numbers are refused.
#[derive(Debug)]
pub(super) struct RawLifetime(pub(super) String);

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
pub(super) struct RawLocality {
    pub(super) mode: Option<LocalityMode>,
    pub(super) local_weight: Option<i64>,
    pub(super) distribute: Option<BTreeMap<String, BTreeMap<String, i64>>>,
    pub(super) connection_pool: Option<RawConnectionPool>,
    pub(super) outlier_detection: Option<RawOutlierDetection>,
    pub(super) verify: Option<RawLocalityVerify>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConnectionPool {
    pub(super) http2_max_requests: Option<i64>,
    pub(super) max_requests_per_connection: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawOutlierDetection {
    pub(super) consecutive_gateway_errors: Option<i64>,
    pub(super) interval: Option<String>,
    pub(super) base_ejection_time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLocalityVerify {
    pub(super) orders_in_zone_min: Option<f64>,
    pub(super) products_on_node_min: Option<f64>,
    pub(super) failed_requests_max: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawKarpenter {
    pub(super) version: Option<RawRelease>,
    pub(super) capacity_types: Option<Vec<CapacityType>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawIstio {
    pub(super) version: Option<RawRelease>,
    pub(super) tracing_sampling: Option<f64>,
    pub(super) ingress_source_ranges: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub(super) vpc_cidr: Option<String>,
    pub(super) nat: Option<NatMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawNodeGroup {
    pub(super) instance_types: Option<Vec<String>>,
    // Signed, so `size: -1` gets the range message rather than a type error.
    pub(super) size: Option<i64>,
    pub(super) disk_size_gib: Option<i64>,
    pub(super) capacity_type: Option<CapacityType>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCharts {
    pub(super) mirror: Option<String>,
    pub(super) repositories: Option<BTreeMap<String, String>>,
    pub(super) digests: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) endpoint_public_access: Option<bool>,
    pub(super) endpoint_private_access: Option<bool>,
    pub(super) public_access_cidrs: Option<Vec<String>>,
    pub(super) support: Option<versions::SupportType>,
    pub(super) existing: Option<RawExisting>,
}

/// `cluster.existing:`: a cluster meshstack does not build.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawExisting {
    pub(super) context: Option<String>,
    pub(super) kubeconfig: Option<String>,
}

/// `zones:` is a count or a list; a hand-written visitor gives a better message than an
/// untagged enum's "data did not match any variant".
#[derive(Debug)]
pub(super) enum RawZones {
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
pub(super) fn reject_number<E: serde::de::Error>(number: &str, hint: &str) -> E {
    E::custom(format!(
        "{number} is a number here, but this setting is text: {hint}"
    ))
}

/// `kubernetes_version:`; unquoted `1.30` is the float 1.3, so numbers are refused.
#[derive(Debug)]
pub(super) struct RawVersion(pub(super) String);

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
pub(super) struct RawRelease(pub(super) String);

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
pub(super) struct RawAccountId(pub(super) String);

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
