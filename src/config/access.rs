//! `access:`: who besides the builder reaches the cluster, and with what Kubernetes rights
//! (the `access` stage makes it so; `fleet handout` hands it out).
//!
//! The builder (the cluster's creator) is its admin through EKS's bootstrap entry. Attendees
//! get EKS access entries of their own, scoped to this one cluster: for a role meshstack
//! creates per stack (`<stack>-attendee`, assumable by `trust`), and/or for principals that
//! already exist (`attendees`).
//!
//! `{env}` in an ARN of `trust` or `attendees` stands for the stack's name — in a fleet, each
//! environment's (`ws-alice`) — so that one stack file ties each environment to its own
//! attendee (`role/{env}` trusts `role/ws-alice` for `ws-alice` only) where the account-wide
//! default would let any principal allowed to assume roles into every environment.

use serde::{Deserialize, Serialize};

use super::errors::{invalid, Check};

/// `access:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAccess {
    pub(super) attendee_role: Option<bool>,
    pub(super) trust: Option<Vec<String>>,
    pub(super) attendees: Option<Vec<String>>,
    pub(super) policy: Option<AccessPolicy>,
}

/// Attendee access to the stack's cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AccessSpec {
    /// `attendee_role`: create the IAM role `<stack>-attendee` with an access entry on the
    /// cluster. `None` (unset): off for a stack, on for each environment of a fleet
    /// ([`AccessSpec::wants_role`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attendee_role: Option<bool>,
    /// `trust`: who may assume the attendee role (IAM principal ARNs). Empty: the stack's own
    /// account (`arn:<partition>:iam::<account>:root`), so that its principals allowed
    /// `sts:AssumeRole` on the role may.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trust: Vec<String>,
    /// `attendees`: existing IAM roles or users, each given an access entry of its own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attendees: Vec<String>,
    /// `policy`: the EKS access policy every attendee entry gets, on the whole cluster.
    pub policy: AccessPolicy,
}

/// What `{env}` in an ARN stands for.
pub const ENV_PLACEHOLDER: &str = "{env}";

impl AccessSpec {
    /// Whether the stack has the attendee role: as set, else `fleet_default`.
    pub fn wants_role(&self, fleet_default: bool) -> bool {
        self.attendee_role.unwrap_or(fleet_default)
    }

    /// `trust` for stack (or environment) `env`, `{env}` filled in.
    pub fn trust_for(&self, env: &str) -> Vec<String> {
        fill(&self.trust, env)
    }

    /// `attendees` for stack (or environment) `env`, `{env}` filled in.
    pub fn attendees_for(&self, env: &str) -> Vec<String> {
        fill(&self.attendees, env)
    }
}

fn fill(arns: &[String], env: &str) -> Vec<String> {
    arns.iter()
        .map(|a| a.replace(ENV_PLACEHOLDER, env))
        .collect()
}

/// The EKS access policies an attendee entry may get (AWS's "Review access policy
/// permissions", EKS User Guide, read 2026-12-07: each mirrors a Kubernetes user-facing
/// cluster role).
///
/// The default is `edit`: a workshop attendee runs `kubectl get`/`describe`/`logs`, restarts
/// and scales the demo's Deployments, and port-forwards to Kiali, Grafana and Jaeger, which
/// takes `create` on `pods/portforward` — in AmazonEKSEditPolicy (as in Kubernetes' `edit`),
/// not in AmazonEKSViewPolicy (`view`: read-only, no port-forward, no Secrets).
/// AmazonEKSAdminPolicy (`admin`) adds Roles and RoleBindings, rights to grant rights, which a
/// demo does not need. None of the three covers custom resources such as Istio's
/// DestinationRules (access policies cannot be extended), and none is cluster-admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessPolicy {
    View,
    #[default]
    Edit,
    Admin,
}

impl AccessPolicy {
    /// The policy's name, as in its ARN.
    pub fn policy_name(self) -> &'static str {
        match self {
            AccessPolicy::View => "AmazonEKSViewPolicy",
            AccessPolicy::Edit => "AmazonEKSEditPolicy",
            AccessPolicy::Admin => "AmazonEKSAdminPolicy",
        }
    }

    /// `arn:<partition>:eks::aws:cluster-access-policy/<name>`.
    pub fn arn(self, partition: &str) -> String {
        format!(
            "arn:{partition}:eks::aws:cluster-access-policy/{}",
            self.policy_name()
        )
    }

    /// Every policy meshstack may associate: an association of one of these that the stack
    /// no longer asks for is removed from the entries meshstack made.
    pub const ALL: [AccessPolicy; 3] =
        [AccessPolicy::View, AccessPolicy::Edit, AccessPolicy::Admin];
}

/// What kind of IAM principal an ARN names, if it is one an access entry or a trust policy
/// can name: `arn:<partition>:iam::<12 digits>:root | role/<path/name> | user/<path/name>`.
fn principal_kind(arn: &str) -> Option<&'static str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", partition, "iam", "", account, resource] = parts.as_slice() else {
        return None;
    };
    if partition.is_empty() || account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let named = |prefix: &str| {
        resource.strip_prefix(prefix).is_some_and(|n| {
            !n.is_empty()
                && !n.ends_with('/')
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
        })
    };
    if *resource == "root" {
        Some("root")
    } else if named("role/") {
        Some("role")
    } else if named("user/") {
        Some("user")
    } else {
        None
    }
}

fn arn_list(
    field: &str,
    list: Option<Vec<String>>,
    allow_root: bool,
    example: &str,
) -> Check<Vec<String>> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let mut out: Vec<String> = Vec::new();
    for (i, arn) in list.into_iter().enumerate() {
        let at = format!("{field}[{i}]");
        if arn.contains(":sts::") && arn.contains(":assumed-role/") {
            return Err(invalid(
                at,
                format!(
                    "`{arn}` is a role session, which lasts an hour; name the role itself, \
                     like {example}"
                ),
            ));
        }
        // `{env}` becomes a stack name: letters, digits and '-', which IAM names allow.
        match principal_kind(&arn.replace(ENV_PLACEHOLDER, "env")) {
            Some("root") if !allow_root => {
                return Err(invalid(
                    at,
                    format!(
                        "`{arn}` is a whole account; an access entry names one role or user, \
                         like {example}"
                    ),
                ))
            }
            Some(_) => {}
            None => {
                return Err(invalid(
                    at,
                    format!(
                        "`{arn}` is not an IAM role, user or account ARN; write one like {example}"
                    ),
                ))
            }
        }
        if out.contains(&arn) {
            return Err(invalid(at, format!("lists `{arn}` twice")));
        }
        out.push(arn);
    }
    Ok(out)
}

impl RawAccess {
    pub(super) fn resolve(self) -> Check<AccessSpec> {
        let trust = arn_list(
            "access.trust",
            self.trust,
            true,
            "arn:aws:iam::111122223333:root or arn:aws:iam::111122223333:role/workshop",
        )?;
        if self.attendee_role == Some(false) && !trust.is_empty() {
            return Err(invalid(
                "access.trust",
                "says who may assume the attendee role, but `attendee_role: false` turns it \
                 off; remove one of the two",
            ));
        }
        Ok(AccessSpec {
            attendee_role: self.attendee_role,
            trust,
            attendees: arn_list(
                "access.attendees",
                self.attendees,
                false,
                "arn:aws:iam::111122223333:role/alice",
            )?,
            policy: self.policy.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_are_roles_users_or_accounts() {
        for (arn, kind) in [
            ("arn:aws:iam::111122223333:root", Some("root")),
            ("arn:aws:iam::111122223333:role/alice", Some("role")),
            ("arn:aws:iam::111122223333:role/team/alice", Some("role")),
            ("arn:aws-cn:iam::111122223333:user/bob", Some("user")),
            ("arn:aws:iam::1:role/alice", None),
            ("arn:aws:iam::111122223333:role/", None),
            ("arn:aws:iam::111122223333:group/devs", None),
            ("arn:aws:sts::111122223333:assumed-role/alice/s", None),
            ("alice", None),
        ] {
            assert_eq!(principal_kind(arn), kind, "{arn}");
        }
    }

    #[test]
    fn the_lists_are_checked_and_the_default_is_edit() {
        let raw = RawAccess {
            attendees: Some(vec!["arn:aws:iam::111122223333:root".into()]),
            ..RawAccess::default()
        };
        let e = raw.resolve().unwrap_err();
        assert_eq!(e.field, "access.attendees[0]");
        assert!(e.message.contains("whole account"), "{}", e.message);

        let raw = RawAccess {
            attendees: Some(vec![
                "arn:aws:sts::111122223333:assumed-role/alice/session".into()
            ]),
            ..RawAccess::default()
        };
        assert!(raw.resolve().unwrap_err().message.contains("role session"));

        let raw = RawAccess {
            attendee_role: Some(false),
            trust: Some(vec!["arn:aws:iam::111122223333:root".into()]),
            ..RawAccess::default()
        };
        assert_eq!(raw.resolve().unwrap_err().field, "access.trust");

        let raw = RawAccess {
            trust: Some(vec!["arn:aws:iam::111122223333:role/{env}".into()]),
            attendees: Some(vec!["arn:aws:iam::111122223333:user/{env}-lead".into()]),
            ..RawAccess::default()
        };
        let spec = raw.resolve().unwrap();
        assert_eq!(
            spec.trust_for("ws-alice"),
            ["arn:aws:iam::111122223333:role/ws-alice"]
        );
        assert_eq!(
            spec.attendees_for("ws-bob"),
            ["arn:aws:iam::111122223333:user/ws-bob-lead"]
        );

        let spec = RawAccess::default().resolve().unwrap();
        assert_eq!(spec.policy, AccessPolicy::Edit);
        assert!(!spec.wants_role(false) && spec.wants_role(true));
        assert_eq!(
            AccessPolicy::View.arn("aws"),
            "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"
        );
    }
}
