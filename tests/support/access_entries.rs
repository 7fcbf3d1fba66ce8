//! EKS access entries and their access policies, which moto does not implement (moto 5.2.5,
//! the version `scripts/lib/moto-venv.sh` pins: its `moto/eks` has clusters, node groups and
//! Fargate profiles and no access entries, read 2026-12-07): answered by
//! the fault proxy ([`super::fault_proxy`]) from this in-memory model, the way the EKS API
//! Reference (API version 2017-11-01) describes CreateAccessEntry, DescribeAccessEntry,
//! ListAccessEntries, DeleteAccessEntry, AssociateAccessPolicy, ListAssociatedAccessPolicies
//! and DisassociateAccessPolicy: their paths, JSON bodies and answers, and their errors
//! (`ResourceNotFoundException`, 404, for a missing cluster, entry or association;
//! `ResourceInUseException`, 409, for a second entry of one principal;
//! `InvalidParameterException`, 400, for a principal ARN that is not an IAM role or user, an
//! STS session among them, and for an access scope or policy ARN that cannot be).
//!
//! The cluster must exist: the proxy asks moto (DescribeCluster, with the request's own
//! credentials, so in the caller's account) and keys the entries by the cluster's ARN. Deleting
//! a cluster deletes its entries, as on AWS.
//!
//! Not modelled: the entry EKS makes for the cluster's creator
//! (`bootstrapClusterCreatorAdminPermissions`), so ListAccessEntries lists only what was
//! created through the API; whether the principal exists in IAM (AWS refuses one that does
//! not, or has not propagated yet); `kubernetesGroups`, `username` and `type` other than
//! echoing them; paging (`maxResults`, `nextToken`: everything comes in one page); which
//! policies exist beyond the ARN's form; and what an entry grants inside Kubernetes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};

/// One access entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub principal_arn: String,
    pub tags: BTreeMap<String, String>,
    pub entry_type: String,
    pub client_request_token: Option<String>,
    pub created_at: f64,
    /// Policy ARN -> access scope (`{"type": ..., "namespaces": [...]}`).
    pub policies: BTreeMap<String, Value>,
}

/// Every cluster's entries: cluster ARN -> principal ARN -> entry.
#[derive(Debug, Default)]
pub struct AccessEntries {
    clusters: Mutex<BTreeMap<String, BTreeMap<String, Entry>>>,
}

/// The operations modelled, as the proxy names them.
pub const OPERATIONS: &[&str] = &[
    "eks:CreateAccessEntry",
    "eks:DescribeAccessEntry",
    "eks:ListAccessEntries",
    "eks:DeleteAccessEntry",
    "eks:AssociateAccessPolicy",
    "eks:ListAssociatedAccessPolicies",
    "eks:DisassociateAccessPolicy",
];

/// One call, as the proxy read it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// `eks:CreateAccessEntry`, ...
    pub op: &'a str,
    pub cluster_name: &'a str,
    /// The cluster's ARN, `None` if it does not exist.
    pub cluster: Option<&'a str>,
    /// The path's principal ARN and policy ARN, decoded.
    pub principal: Option<&'a str>,
    pub policy: Option<&'a str>,
    pub query: &'a [(String, String)],
    /// The JSON body.
    pub body: &'a [u8],
}

/// An answer: HTTP status, the error type (for `x-amzn-ErrorType`) if it is an error, and the
/// JSON body.
pub type Reply = (u16, Option<&'static str>, String);

fn error(status: u16, code: &'static str, message: String) -> Reply {
    (
        status,
        Some(code),
        json!({ "message": message }).to_string(),
    )
}

fn ok(body: Value) -> Reply {
    (200, None, body.to_string())
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `arn:<partition>:iam::<account>:role/<name>` or `.../user/<name>`.
fn valid_principal(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", p, "iam", "", account, resource]
        if !p.is_empty()
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && (resource.starts_with("role/") || resource.starts_with("user/"))
            && resource.len() > 5)
}

impl AccessEntries {
    /// A snapshot: cluster ARN -> principal ARN -> entry.
    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, Entry>> {
        self.clusters.lock().unwrap().clone()
    }

    /// The cluster `cluster_arn` was deleted: its entries go with it.
    pub fn cluster_deleted(&self, cluster_arn: &str) {
        self.clusters.lock().unwrap().remove(cluster_arn);
    }

    /// Answer one call.
    pub fn answer(&self, call: &Call<'_>) -> Reply {
        let Call {
            op,
            cluster_name,
            cluster,
            principal,
            policy,
            query,
            body,
        } = *call;
        let Some(cluster_arn) = cluster else {
            return error(
                404,
                "ResourceNotFoundException",
                format!("No cluster found for name: {cluster_name}."),
            );
        };
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return error(400, "InvalidParameterException", format!("bad JSON: {e}")),
            }
        };
        let mut all = self.clusters.lock().unwrap();
        let entries = all.entry(cluster_arn.to_string()).or_default();
        let not_found = |p: &str| {
            error(
                404,
                "ResourceNotFoundException",
                format!("The specified access entry resource is not found: {p}"),
            )
        };
        let describe = |e: &Entry| {
            let account = cluster_arn.split(':').nth(4).unwrap_or_default();
            let region = cluster_arn.split(':').nth(3).unwrap_or_default();
            json!({
                "clusterName": cluster_name,
                "principalArn": e.principal_arn,
                "kubernetesGroups": [],
                "accessEntryArn": format!(
                    "arn:aws:eks:{region}:{account}:access-entry/{cluster_name}/{}",
                    e.principal_arn.rsplit(':').next().unwrap_or_default()
                ),
                "createdAt": e.created_at,
                "modifiedAt": e.created_at,
                "tags": e.tags,
                "username": e.principal_arn,
                "type": e.entry_type,
            })
        };
        match op {
            "eks:CreateAccessEntry" => {
                let p = body["principalArn"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if !valid_principal(&p) {
                    return error(
                        400,
                        "InvalidParameterException",
                        format!("The specified principalArn is invalid: {p}"),
                    );
                }
                let token = body["clientRequestToken"].as_str().map(str::to_string);
                if let Some(e) = entries.get(&p) {
                    // The same request again (same idempotency token) is answered as the first.
                    if token.is_some() && e.client_request_token == token {
                        return ok(json!({ "accessEntry": describe(e) }));
                    }
                    return error(
                        409,
                        "ResourceInUseException",
                        "The specified access entry resource is already in use on this cluster."
                            .to_string(),
                    );
                }
                let tags = body["tags"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let e = Entry {
                    principal_arn: p.clone(),
                    tags,
                    entry_type: body["type"].as_str().unwrap_or("STANDARD").to_string(),
                    client_request_token: token,
                    created_at: now(),
                    policies: BTreeMap::new(),
                };
                let answer = ok(json!({ "accessEntry": describe(&e) }));
                entries.insert(p, e);
                answer
            }
            "eks:DescribeAccessEntry" => match principal.and_then(|p| entries.get(p)) {
                Some(e) => ok(json!({ "accessEntry": describe(e) })),
                None => not_found(principal.unwrap_or_default()),
            },
            "eks:ListAccessEntries" => {
                let filter = query
                    .iter()
                    .find(|(k, _)| k == "associatedPolicyArn")
                    .map(|(_, v)| v.as_str());
                let list: Vec<&String> = entries
                    .iter()
                    .filter(|(_, e)| filter.is_none_or(|f| e.policies.contains_key(f)))
                    .map(|(p, _)| p)
                    .collect();
                ok(json!({ "accessEntries": list }))
            }
            "eks:DeleteAccessEntry" => match principal.and_then(|p| entries.remove(p)) {
                Some(_) => ok(json!({})),
                None => not_found(principal.unwrap_or_default()),
            },
            "eks:AssociateAccessPolicy" => {
                let p = principal.unwrap_or_default();
                let Some(e) = entries.get_mut(p) else {
                    return not_found(p);
                };
                let policy_arn = body["policyArn"].as_str().unwrap_or_default().to_string();
                if !policy_arn.contains(":eks::aws:cluster-access-policy/") {
                    return error(
                        400,
                        "InvalidParameterException",
                        format!("The policy arn {policy_arn} is not a valid access policy."),
                    );
                }
                let scope = &body["accessScope"];
                let namespaces = scope["namespaces"].as_array().cloned().unwrap_or_default();
                match scope["type"].as_str() {
                    Some("cluster") if namespaces.is_empty() => {}
                    Some("namespace") if !namespaces.is_empty() => {}
                    _ => {
                        return error(
                            400,
                            "InvalidParameterException",
                            "accessScope: type must be cluster (without namespaces) or \
                             namespace (with some)"
                                .to_string(),
                        )
                    }
                }
                let scope = json!({"type": scope["type"], "namespaces": namespaces});
                // Associating a policy again replaces its scope.
                e.policies.insert(policy_arn.clone(), scope.clone());
                let t = now();
                ok(json!({
                    "clusterName": cluster_name,
                    "principalArn": p,
                    "associatedAccessPolicy": {
                        "policyArn": policy_arn,
                        "accessScope": scope,
                        "associatedAt": t,
                        "modifiedAt": t,
                    }
                }))
            }
            "eks:ListAssociatedAccessPolicies" => {
                let p = principal.unwrap_or_default();
                let Some(e) = entries.get(p) else {
                    return not_found(p);
                };
                let list: Vec<Value> = e
                    .policies
                    .iter()
                    .map(|(arn, scope)| {
                        json!({
                            "policyArn": arn,
                            "accessScope": scope,
                            "associatedAt": e.created_at,
                            "modifiedAt": e.created_at,
                        })
                    })
                    .collect();
                ok(json!({
                    "clusterName": cluster_name,
                    "principalArn": p,
                    "associatedAccessPolicies": list,
                }))
            }
            "eks:DisassociateAccessPolicy" => {
                let p = principal.unwrap_or_default();
                let Some(e) = entries.get_mut(p) else {
                    return not_found(p);
                };
                match e.policies.remove(policy.unwrap_or_default()) {
                    Some(_) => ok(json!({})),
                    None => error(
                        404,
                        "ResourceNotFoundException",
                        format!(
                            "The access policy {} is not associated with {p}",
                            policy.unwrap_or_default()
                        ),
                    ),
                }
            }
            other => error(
                400,
                "InvalidParameterException",
                format!("not modelled: {other}"),
            ),
        }
    }
}
