//! Which versions work together: Kubernetes, Karpenter, Istio and the node AMI. Pure tables and
//! rules, applied by stack validation ([`crate::config`]), so that a pair that cannot work is
//! refused before any API call — for `plan`, `up` and `render` alike — instead of after the
//! VPC, the cluster and the node group have been built.
//!
//! Every table names its source; update it when a pin moves (see the README's "Checked against
//! upstream").

use crate::config::ReleaseVersion;

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
        crate::config::DEFAULT_KARPENTER_VERSION
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
             newer; {fix}"
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
