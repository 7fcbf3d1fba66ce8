//! IAM documents: linted by parliament (an independent IAM linter, with its own copy of AWS's
//! action, resource-type and condition-key tables), and the Karpenter controller policy, the
//! interruption queue's policy, the node role and the EventBridge rules compared with
//! upstream's getting-started CloudFormation for the pinned Karpenter release.
//!
//! parliament lints identity policies statement by statement. Its findings that do not apply,
//! each accepted only in the exact form described ([`accepted`]):
//!
//! - trust policies: `MALFORMED` "neither Resource nor NotResource". A role's trust policy is
//!   a resource policy on the role itself; IAM refuses a `Resource` element in it ("Has
//!   prohibited field Resource").
//! - the Karpenter role's trust: `UNKNOWN_FEDERATION_SOURCE` for an IAM OIDC provider ARN
//!   (`arn:<partition>:iam::<account>:oidc-provider/oidc.eks.<region>.amazonaws.com/id/<ID>`).
//!   parliament knows web-identity providers by host name and SAML providers by ARN, not the
//!   OIDC providers EKS's IRSA uses.
//! - `RESOURCE_MISMATCH` pairs (action, required resource type) that another Allow statement
//!   of the same document grants: IAM authorises each resource of a request against every
//!   statement, and upstream grants `ec2:RunInstances`' resource types over three statements
//!   with different conditions. A pair no statement grants is a real finding.
//! - `RESOURCE_MISMATCH` for `ssm:GetParameter` on `arn:<partition>:ssm:<region>::parameter/
//!   aws/service/*`: AWS's public parameters (the EKS AMI IDs Karpenter resolves) belong to no
//!   account, so their ARN has an empty account field; parliament's matcher wants one.
//! - `RESOURCE_STAR` for `arc-zonal-shift:GetManagedResource` (Karpenter 1.13 and later): its
//!   resource types are ALB and NLB, while Karpenter asks about its EKS cluster, which is
//!   neither; upstream grants it on `*` narrowed by `arc-zonal-shift:ResourceIdentifier` to the
//!   cluster, and the statement must keep that condition.
//! - community auditors on the controller policy: `PERMISSIONS_MANAGEMENT_ACTIONS` when every
//!   action it names is one upstream's controller policy grants (Karpenter passes the node role
//!   and manages its nodes' instance profiles), and `PRIVILEGE_ESCALATION` of type
//!   `CreateEC2WithExistingIP` (`iam:PassRole` + `ec2:RunInstances`: launching nodes with the
//!   node role is what Karpenter is for; the comparison with upstream holds PassRole to that
//!   one role and to EC2).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use serde_yaml::Value as Yaml;

use super::Violation;

/// The parliament version scripts/lib/moto-venv.sh pins.
pub fn pinned_parliament() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/moto-venv.sh");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("PARLIAMENT_VERSION="))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("scripts/lib/moto-venv.sh pins PARLIAMENT_VERSION")
}

/// What a document is, for the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Trust,
    Identity,
    Resource,
}

/// One IAM document to lint: its file (as `render` writes it), kind and content.
#[derive(Debug, Clone)]
pub struct Doc {
    pub file: String,
    pub kind: Kind,
    pub document: Value,
}

impl Doc {
    /// The kind of a file `render` wrote under `iam/`, from its name.
    pub fn from_rendered(file: &str, document: Value) -> Doc {
        let kind = if file.ends_with("-trust.json") {
            Kind::Trust
        } else if file.ends_with("-queue-policy.json") {
            Kind::Resource
        } else {
            Kind::Identity
        };
        Doc {
            file: file.to_owned(),
            kind,
            document,
        }
    }
}

/// parliament's findings for each document, raw (see `tests/support/iam_lint.py`).
pub fn parliament(docs: &[Doc]) -> Vec<(String, Vec<Value>)> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} not found: run the tests through scripts/test, which installs parliament into .venv/",
        python.display()
    );
    let input: Vec<Value> = docs
        .iter()
        .map(|d| json!({"name": d.file, "document": d.document}))
        .collect();
    let mut child = Command::new(&python)
        .arg(repo.join("tests/support/iam_lint.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    serde_json::to_writer(child.stdin.take().unwrap(), &input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "parliament failed (scripts/test installs it; is .venv/ current?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["parliament"].as_str(),
        Some(pinned_parliament().as_str()),
        "parliament in .venv/ is not the version scripts/lib/moto-venv.sh pins; run scripts/test"
    );
    result["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["findings"].as_array().unwrap().clone(),
            )
        })
        .collect()
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Value::Bool(b) => vec![b.to_string()],
        Value::Number(n) => vec![n.to_string()],
        _ => vec![],
    }
}

fn is_oidc_provider_arn(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:") else {
        return false;
    };
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    let [partition, "iam", "", account, resource] = parts.as_slice() else {
        return false;
    };
    let Some(provider) = resource.strip_prefix("oidc-provider/oidc.eks.") else {
        return false;
    };
    let Some((host, id)) = provider.split_once("/id/") else {
        return false;
    };
    partition.starts_with("aws")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"))
        && id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a finding is one the module doc explains; `upstream_actions` are the actions
/// upstream's controller policy grants, lower-case.
pub fn accepted(doc: &Doc, finding: &Value, upstream_actions: &BTreeSet<String>) -> bool {
    let issue = finding["issue"].as_str().unwrap_or("");
    let statement = finding["statement"]
        .as_u64()
        .and_then(|i| doc.document["Statement"].get(i as usize));
    match issue {
        "MALFORMED" => {
            doc.kind == Kind::Trust
                && finding["detail"] == "Statement contains neither Resource nor NotResource"
        }
        "UNKNOWN_FEDERATION_SOURCE" => {
            doc.kind == Kind::Trust && finding["detail"].as_str().is_some_and(is_oidc_provider_arn)
        }
        "RESOURCE_MISMATCH" => finding["pairs"].as_array().is_some_and(|pairs| {
            pairs.iter().all(|p| {
                let granted = p["granted_by"].as_array().is_some_and(|g| !g.is_empty());
                let public_parameter = p["action"] == "ssm:GetParameter"
                    && statement.is_some_and(|s| {
                        let resources = list(&s["Resource"]);
                        !resources.is_empty()
                            && resources.iter().all(|r| {
                                let parts: Vec<&str> = r.splitn(6, ':').collect();
                                matches!(
                                    parts.as_slice(),
                                    ["arn", _, "ssm", _, "", "parameter/aws/service/*"]
                                )
                            })
                    });
                granted || public_parameter
            })
        }),
        "RESOURCE_STAR" => {
            finding["detail"] == json!(["arc-zonal-shift:GetManagedResource"])
                && statement.is_some_and(|s| {
                    s["Condition"]["StringEquals"]["arc-zonal-shift:ResourceIdentifier"]
                        .as_str()
                        .is_some_and(|c| c.contains(":eks:") && c.contains(":cluster/"))
                })
        }
        "PERMISSIONS_MANAGEMENT_ACTIONS" => {
            doc.kind == Kind::Identity
                && finding["location"]["actions"].as_array().is_some_and(|a| {
                    a.iter().all(|x| {
                        x.as_str()
                            .is_some_and(|x| upstream_actions.contains(&x.to_lowercase()))
                    })
                })
        }
        "PRIVILEGE_ESCALATION" => {
            doc.kind == Kind::Identity
                && finding["location"]["type"] == "CreateEC2WithExistingIP"
                && finding["location"]["actions"] == json!(["iam:passrole", "ec2:runinstances"])
        }
        _ => false,
    }
}

/// parliament's findings the module doc does not explain, as violations naming the file, the
/// statement and the field.
pub fn lint(docs: &[Doc], upstream_actions: &BTreeSet<String>) -> Vec<Violation> {
    let mut out = Vec::new();
    for (doc, (name, findings)) in docs.iter().zip(parliament(docs)) {
        assert_eq!(doc.file, name);
        for f in findings {
            if accepted(doc, &f, upstream_actions) {
                continue;
            }
            out.push(explain(doc, &f));
        }
    }
    out
}

fn explain(doc: &Doc, f: &Value) -> Violation {
    let issue = f["issue"].as_str().unwrap_or("?");
    let object = match (f["sid"].as_str(), f["statement"].as_u64()) {
        (Some(sid), _) => format!("statement {sid}"),
        (None, Some(i)) => format!("statement {i}"),
        (None, None) => "the policy".to_owned(),
    };
    let (field, message) = match issue {
        "RESOURCE_MISMATCH" => {
            let pairs: Vec<String> = f["pairs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["granted_by"].as_array().is_none_or(|g| g.is_empty()))
                .map(|p| {
                    let (action, format) = (
                        p["action"].as_str().unwrap_or("?"),
                        p["required_format"].as_str().unwrap_or("?"),
                    );
                    if format == "*" {
                        format!(
                            "{action} has no resource type, so IAM authorises it only on \
                             \"Resource\": \"*\""
                        )
                    } else {
                        format!(
                            "{action} needs a resource like {format}, which no statement grants"
                        )
                    }
                })
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect();
            ("Resource".to_owned(), pairs.join("; "))
        }
        "UNKNOWN_ACTION" | "UNKNOWN_PREFIX" => ("Action".to_owned(), f["detail"].to_string()),
        "UNKNOWN_CONDITION_FOR_ACTION" | "UNKNOWN_OPERATOR" | "MISMATCHED_TYPE" => {
            ("Condition".to_owned(), f["detail"].to_string())
        }
        "RESOURCE_STAR" | "RESOURCE_EFFECTIVELY_STAR" => {
            ("Resource".to_owned(), f["detail"].to_string())
        }
        _ => (
            f["location"]["string"].as_str().unwrap_or("").to_owned(),
            f["detail"].to_string(),
        ),
    };
    Violation::new(
        &doc.file,
        &object,
        field,
        format!(
            "parliament {issue} ({}): {message}",
            f["title"].as_str().unwrap_or("")
        ),
    )
}

/// What a CloudFormation template of upstream's names, and what meshstack calls the same
/// thing: its own resources stand in for upstream's (the queue, the node role).
pub struct Substitutions(pub BTreeMap<String, String>);

impl Substitutions {
    fn apply(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .map(|e| start + e)
                .unwrap_or_else(|| panic!("unclosed ${{ in {text}"));
            let name = &rest[start + 2..end];
            let value = self
                .0
                .get(name)
                .unwrap_or_else(|| panic!("upstream's CloudFormation names ${{{name}}}, which the contract tests do not map"));
            out.push_str(value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// A CloudFormation value with its intrinsic functions (`!Sub`, `!GetAtt`, `!Ref`)
    /// resolved, as JSON.
    pub fn resolve(&self, v: &Yaml) -> Value {
        match v {
            Yaml::Tagged(t) => {
                let tag = t.tag.to_string();
                let arg = t
                    .value
                    .as_str()
                    .unwrap_or_else(|| panic!("{tag} with a non-string"));
                match tag.as_str() {
                    "!Sub" => Value::String(self.apply(arg)),
                    "!GetAtt" | "!Ref" => Value::String(self.apply(&format!("${{{arg}}}"))),
                    other => panic!(
                        "upstream's CloudFormation uses {other}, which the tests do not resolve"
                    ),
                }
            }
            Yaml::Mapping(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), self.resolve(v)))
                    .collect(),
            ),
            Yaml::Sequence(s) => Value::Array(s.iter().map(|v| self.resolve(v)).collect()),
            Yaml::String(s) => Value::String(s.clone()),
            Yaml::Bool(b) => Value::Bool(*b),
            Yaml::Number(n) => serde_json::to_value(n).unwrap(),
            Yaml::Null => Value::Null,
        }
    }
}

/// The parts of upstream's getting-started CloudFormation meshstack mirrors, resolved.
#[derive(Debug)]
pub struct Upstream {
    /// The logical ids of the controller's `AWS::IAM::ManagedPolicy` resources, in template
    /// order: one (`KarpenterControllerPolicy`) in 1.8.1, six in 1.14.1 (NodeLifecycle,
    /// IAMIntegration, EKSIntegration, Interruption, ZonalShift, ResourceDiscovery).
    pub controller_policy_names: Vec<String>,
    /// Every `AWS::IAM::ManagedPolicy`'s statements, merged into one policy in template order
    /// (meshstack carries one inline policy).
    pub controller_policy: Value,
    pub queue_policy: Value,
    pub node_trust: Value,
    /// The node role's managed policies, by name.
    pub node_managed_policies: BTreeSet<String>,
    /// The EventBridge rules: (logical id, event pattern), in template order.
    pub rules: Vec<(String, Value)>,
}

/// Parses upstream's CloudFormation template.
///
/// # Panics
/// When the template has no queue policy, not exactly one role (the node role), or a
/// resource of a type the contracts do not know how to read among the IAM ones.
pub fn upstream_cfn(text: &str, subs: &Substitutions) -> Upstream {
    let cfn: Yaml = serde_yaml::from_str(text).expect("upstream's CloudFormation parses");
    let resources = cfn["Resources"].as_mapping().expect("Resources");
    let mut controller_policy_names = Vec::new();
    let mut statements = Vec::new();
    let mut queue_policy = None;
    let mut node_trust = None;
    let mut node_managed_policies = BTreeSet::new();
    let mut rules = Vec::new();
    // serde_yaml's Mapping keeps the template's order, so the merged policy lists upstream's
    // statements as a reader of the template sees them.
    for (id, resource) in resources {
        let id = id.as_str().expect("logical ids are strings").to_owned();
        let props = &resource["Properties"];
        match resource["Type"].as_str().unwrap_or("") {
            "AWS::IAM::ManagedPolicy" => {
                let doc = match subs.resolve(&props["PolicyDocument"]) {
                    Value::String(json_text) => serde_json::from_str(&json_text)
                        .expect("the ManagedPolicy's document is JSON once substituted"),
                    doc => doc,
                };
                let own = doc["Statement"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{id}: a policy without statements"));
                statements.extend(own.iter().cloned());
                controller_policy_names.push(id);
            }
            "AWS::SQS::QueuePolicy" => queue_policy = Some(subs.resolve(&props["PolicyDocument"])),
            "AWS::IAM::Role" => {
                assert!(
                    node_trust.is_none(),
                    "upstream's CloudFormation has a second role, {id}: the contracts read \
                     only the node role's"
                );
                node_trust = Some(subs.resolve(&props["AssumeRolePolicyDocument"]));
                for arn in props["ManagedPolicyArns"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                {
                    let arn = subs.resolve(arn);
                    let name = arn.as_str().unwrap().rsplit('/').next().unwrap().to_owned();
                    node_managed_policies.insert(name);
                }
            }
            "AWS::Events::Rule" => rules.push((id, subs.resolve(&props["EventPattern"]))),
            "AWS::IAM::Policy" | "AWS::IAM::InstanceProfile" | "AWS::IAM::User" => {
                panic!(
                    "upstream's CloudFormation has {id}, an IAM resource the contracts do not read"
                )
            }
            _ => {}
        }
    }
    Upstream {
        controller_policy_names,
        controller_policy: json!({"Version": "2012-10-17", "Statement": statements}),
        queue_policy: queue_policy.expect("an AWS::SQS::QueuePolicy"),
        node_trust: node_trust.expect("an AWS::IAM::Role"),
        node_managed_policies,
        rules,
    }
}

/// The Sids of a policy's statements, in order (`#i` for a statement without one).
pub fn sids(policy: &Value) -> Vec<String> {
    statements(policy).into_iter().map(|s| s.sid).collect()
}

/// The controller policy lists upstream's statements in upstream's order, so that a reader
/// can diff the two; one violation at the first place they part.
pub fn compare_sid_order(file: &str, ours: &Value, upstream: &Value) -> Vec<Violation> {
    let (mine, theirs) = (sids(ours), sids(upstream));
    if mine == theirs {
        return vec![];
    }
    let at = mine
        .iter()
        .zip(&theirs)
        .position(|(a, b)| a != b)
        .unwrap_or(mine.len().min(theirs.len()));
    vec![Violation::new(
        file,
        "the policy",
        format!("Statement[{at}].Sid"),
        format!(
            "meshstack's statements are {mine:?}, upstream's (its managed policies in template \
             order) {theirs:?}: they part at {:?} vs {:?}",
            mine.get(at),
            theirs.get(at)
        ),
    )]
}

/// meshstack's EventBridge rule patterns against upstream's, both ways: each upstream rule
/// has a meshstack rule with the same pattern, and each meshstack rule an upstream one.
pub fn compare_rules(ours: &[(String, Value)], upstream: &[(String, Value)]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (id, pattern) in upstream {
        if !ours.iter().any(|(_, p)| p == pattern) {
            out.push(Violation::new(
                "EventBridge rules",
                &format!("upstream rule {id}"),
                "EventPattern",
                format!("meshstack has no rule with the pattern {pattern}"),
            ));
        }
    }
    for (name, pattern) in ours {
        if !upstream.iter().any(|(_, p)| p == pattern) {
            out.push(Violation::new(
                "EventBridge rules",
                &format!("rule {name}"),
                "EventPattern",
                format!("upstream has no rule with the pattern {pattern}"),
            ));
        }
    }
    out
}

/// Every action a policy allows, lower-case.
pub fn allowed_actions(policy: &Value) -> BTreeSet<String> {
    policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["Effect"] == "Allow")
        .flat_map(|s| list(&s["Action"]))
        .map(|a| a.to_lowercase())
        .collect()
}

/// A statement, normalised: sets of actions and resources, conditions as
/// (operator, key) -> set of values (booleans as text).
#[derive(Debug, Clone)]
struct Stmt {
    sid: String,
    effect: String,
    actions: BTreeSet<String>,
    resources: BTreeSet<String>,
    conditions: BTreeMap<(String, String), BTreeSet<String>>,
    principal: Value,
}

fn normalise_principal(p: &Value) -> Value {
    match p {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let set: BTreeSet<String> = list(v).into_iter().collect();
                    (k.clone(), json!(set))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn statements(policy: &Value) -> Vec<Stmt> {
    policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, s)| Stmt {
            sid: s["Sid"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("#{i}")),
            effect: s["Effect"].as_str().unwrap_or("").to_owned(),
            actions: list(&s["Action"]).into_iter().collect(),
            resources: list(&s["Resource"]).into_iter().collect(),
            conditions: s["Condition"]
                .as_object()
                .into_iter()
                .flatten()
                .flat_map(|(op, block)| {
                    block
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(move |(key, values)| {
                            (
                                (op.clone(), key.clone()),
                                list(values).into_iter().collect(),
                            )
                        })
                })
                .collect(),
            principal: normalise_principal(&s["Principal"]),
        })
        .collect()
}

fn show_conditions(c: &BTreeMap<(String, String), BTreeSet<String>>) -> String {
    if c.is_empty() {
        return "no condition".into();
    }
    c.iter()
        .map(|((op, key), values)| {
            format!(
                "{op} {key} = {}",
                values.iter().cloned().collect::<Vec<_>>().join("|")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `narrow` demands at least what `wide` does: every condition of `wide` is in `narrow`, with
/// the same operator and a subset of its values.
fn at_least_as_strict(
    narrow: &BTreeMap<(String, String), BTreeSet<String>>,
    wide: &BTreeMap<(String, String), BTreeSet<String>>,
) -> bool {
    wide.iter()
        .all(|(k, values)| narrow.get(k).is_some_and(|mine| mine.is_subset(values)))
}

/// The controller policy against upstream's, both ways: it grants each (action, resource)
/// upstream grants under conditions no stricter than upstream's, and grants nothing beyond
/// that — no (action, resource) upstream does not grant, and none without every condition
/// upstream puts on it.
pub fn compare_controller_policy(file: &str, ours: &Value, upstream: &Value) -> Vec<Violation> {
    let mine = statements(ours);
    let theirs = statements(upstream);
    let mut out = Vec::new();
    for u in theirs.iter().filter(|s| s.effect == "Allow") {
        for action in &u.actions {
            for resource in &u.resources {
                let granted = mine.iter().any(|m| {
                    m.effect == "Allow"
                        && m.actions.contains(action)
                        && (m.resources.contains(resource) || m.resources.contains("*"))
                        && at_least_as_strict(&u.conditions, &m.conditions)
                });
                if !granted {
                    let close = mine
                        .iter()
                        .find(|m| m.actions.contains(action))
                        .map(|m| {
                            format!(
                                "; meshstack's {} grants it on {} with {}",
                                m.sid,
                                m.resources.iter().cloned().collect::<Vec<_>>().join(", "),
                                show_conditions(&m.conditions)
                            )
                        })
                        .unwrap_or_else(|| "; meshstack's policy does not have the action".into());
                    out.push(Violation::new(
                        file,
                        &format!("upstream statement {}", u.sid),
                        "Action",
                        format!(
                            "upstream grants {action} on {resource} with {}, meshstack does not{close}",
                            show_conditions(&u.conditions)
                        ),
                    ));
                }
            }
        }
    }
    for m in &mine {
        if m.effect != "Allow" {
            out.push(Violation::new(
                file,
                &format!("statement {}", m.sid),
                "Effect",
                "upstream's controller policy has no Deny; compare it by hand",
            ));
            continue;
        }
        for action in &m.actions {
            for resource in &m.resources {
                let covering: Vec<&Stmt> = theirs
                    .iter()
                    .filter(|u| {
                        u.effect == "Allow"
                            && u.actions.contains(action)
                            && (u.resources.contains(resource) || u.resources.contains("*"))
                    })
                    .collect();
                if covering.is_empty() {
                    out.push(Violation::new(
                        file,
                        &format!("statement {}", m.sid),
                        "Resource",
                        format!(
                            "grants {action} on {resource}, which upstream's policy does not grant"
                        ),
                    ));
                } else if !covering
                    .iter()
                    .any(|u| at_least_as_strict(&m.conditions, &u.conditions))
                {
                    // Name the closest upstream statement: the same Sid, else the one whose
                    // conditions meshstack misses fewest of.
                    let missing_of = |u: &Stmt| -> BTreeMap<(String, String), BTreeSet<String>> {
                        u.conditions
                            .iter()
                            .filter(|(k, v)| {
                                !m.conditions.get(*k).is_some_and(|mv| mv.is_subset(v))
                            })
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    };
                    let u = covering
                        .iter()
                        .copied()
                        .min_by_key(|u| (u.sid != m.sid, missing_of(u).len()))
                        .expect("covering is not empty");
                    let missing = missing_of(u);
                    out.push(Violation::new(
                        file,
                        &format!("statement {}", m.sid),
                        "Condition",
                        format!(
                            "grants {action} on {resource} without upstream's {} (upstream's {})",
                            show_conditions(&missing),
                            u.sid
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// A resource policy against upstream's: the same statements, Sids, `Version` and `Id` aside
/// (upstream's queue policy has neither Version nor Sid on its first statement; meshstack's
/// says 2012-10-17).
pub fn compare_exactly(file: &str, ours: &Value, upstream: &Value) -> Vec<Violation> {
    let key = |s: &Stmt| {
        json!({
            "Effect": s.effect, "Principal": s.principal, "Action": s.actions,
            "Resource": s.resources,
            "Condition": s.conditions.iter().map(|((op, k), v)| format!("{op} {k} = {v:?}")).collect::<Vec<_>>(),
        })
    };
    let mine: Vec<(String, Value)> = statements(ours)
        .iter()
        .map(|s| (s.sid.clone(), key(s)))
        .collect();
    let theirs: Vec<(String, Value)> = statements(upstream)
        .iter()
        .map(|s| (s.sid.clone(), key(s)))
        .collect();
    let mut out = Vec::new();
    for (sid, k) in &mine {
        if !theirs.iter().any(|(_, t)| t == k) {
            out.push(Violation::new(
                file,
                &format!("statement {sid}"),
                "Statement",
                format!("upstream has no statement like {k}"),
            ));
        }
    }
    for (sid, k) in &theirs {
        if !mine.iter().any(|(_, t)| t == k) {
            out.push(Violation::new(
                file,
                &format!("upstream statement {sid}"),
                "Statement",
                format!("meshstack has no statement like {k}"),
            ));
        }
    }
    out
}
