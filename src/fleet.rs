//! A fleet: many environments of one stack file, for a workshop (`meshstack fleet ...`).
//!
//! Each environment is an ordinary stack named `<stack>-<suffix>` — `-01` … `-30` for
//! `--count 30` (zero-padded to the width of the count), or `-alice`, `-bob` for `--names
//! alice,bob` — with its own journal and lock, so every single-stack command works on it.
//! This module is the pure part: the names, the accounts file, and the final table. The runs
//! themselves are `src/commands/fleet.rs`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::fleet_env_name;

/// The most environments one fleet may have: a typo guard (`--count 300` for 30).
pub const MAX_ENVIRONMENTS: usize = 200;

/// Which environments: `--count N` or `--names a,b,c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    Count(usize),
    Names(Vec<String>),
}

/// The environments' names, in order.
///
/// # Errors
/// A count of 0 or above [`MAX_ENVIRONMENTS`], an empty or repeated name, or a name that
/// breaks the stack-name rules (the message says how long the stack name may be).
pub fn env_names(stack_name: &str, members: &Members) -> Result<Vec<String>, String> {
    let suffixes: Vec<String> = match members {
        Members::Count(0) => return Err("--count must be at least 1".into()),
        Members::Count(n) if *n > MAX_ENVIRONMENTS => {
            return Err(format!(
                "--count {n} is more than the {MAX_ENVIRONMENTS} environments one fleet may have"
            ))
        }
        Members::Count(n) => {
            let width = n.to_string().len();
            (1..=*n).map(|i| format!("{i:0width$}")).collect()
        }
        Members::Names(names) => {
            if names.is_empty() {
                return Err("--names needs at least one name".into());
            }
            if names.len() > MAX_ENVIRONMENTS {
                return Err(format!(
                    "--names lists {} names; one fleet may have at most {MAX_ENVIRONMENTS}",
                    names.len()
                ));
            }
            let mut seen = BTreeSet::new();
            for n in names {
                if n.is_empty() {
                    return Err("--names has an empty name (two commas in a row?)".into());
                }
                if !seen.insert(n) {
                    return Err(format!("--names lists `{n}` twice"));
                }
            }
            names.clone()
        }
    };
    suffixes
        .iter()
        .map(|s| fleet_env_name(stack_name, s))
        .collect()
}

/// `--names a,b,c`.
pub fn parse_names(text: &str) -> Vec<String> {
    text.split(',').map(|s| s.trim().to_string()).collect()
}

/// One entry of `--accounts FILE`: the role to assume in an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRole {
    pub role_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The account ID in the ARN.
    pub account: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawAccount {
    Arn(String),
    Entry(RawEntry),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    role_arn: String,
    #[serde(default)]
    external_id: Option<String>,
}

/// `arn:<partition>:iam::<12 digits>:role/<name>` -> the account.
fn role_account(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "iam", "", account, resource]
            if !partition.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource
                    .strip_prefix("role/")
                    .is_some_and(|n| !n.is_empty()) =>
        {
            Some(account.to_string())
        }
        _ => None,
    }
}

/// Parses an accounts file: a YAML list whose entries are role ARNs, or mappings with
/// `role_arn` and an optional `external_id`.
///
/// # Errors
/// What is wrong, naming `origin` and the entry.
pub fn parse_accounts(text: &str, origin: &str) -> Result<Vec<AccountRole>, String> {
    let hint = "write a list of role ARNs, like\n  - arn:aws:iam::111111111111:role/workshop\n  \
                - role_arn: arn:aws:iam::222222222222:role/workshop\n    external_id: abc123";
    let raw: Vec<RawAccount> = serde_yaml::from_str(text)
        .map_err(|e| format!("{origin}: not a list of accounts ({e}); {hint}"))?;
    if raw.is_empty() {
        return Err(format!("{origin}: lists no accounts; {hint}"));
    }
    let mut out = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        let (role_arn, external_id) = match entry {
            RawAccount::Arn(a) => (a, None),
            RawAccount::Entry(e) => (e.role_arn, e.external_id),
        };
        let account = role_account(&role_arn).ok_or_else(|| {
            format!(
                "{origin}: entry {}: `{role_arn}` is not an IAM role ARN \
                 (arn:aws:iam::ACCOUNT:role/NAME)",
                i + 1
            )
        })?;
        if external_id.as_deref() == Some("") {
            return Err(format!("{origin}: entry {}: external_id is empty", i + 1));
        }
        out.push(AccountRole {
            role_arn,
            external_id,
            account,
        });
    }
    Ok(out)
}

/// Environment i's account: entry i.
///
/// # Errors
/// Fewer accounts than environments.
pub fn assign<'a>(
    envs: &[String],
    accounts: &'a [AccountRole],
    origin: &str,
) -> Result<Vec<&'a AccountRole>, String> {
    if accounts.len() < envs.len() {
        return Err(format!(
            "{origin} lists {} account{} for {} environments; environment i is built in \
             account i, so list one per environment (the same role may appear more than once)",
            accounts.len(),
            if accounts.len() == 1 { "" } else { "s" },
            envs.len()
        ));
    }
    Ok(accounts.iter().take(envs.len()).collect())
}

/// How an environment's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every selected stage succeeded.
    Done,
    /// A stage failed, or the environment could not start (its lock, its journal).
    Failed,
    /// Stopped by a signal before it finished.
    Interrupted,
}

/// One line of the final table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvResult {
    pub env: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub result: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub elapsed_ms: u64,
    /// AWS calls the environment made.
    pub reads: u64,
    pub writes: u64,
}

/// The final table, and a tally line first.
pub fn table(verb: &str, results: &[EnvResult], elapsed_ms: u64) -> String {
    let count = |o| results.iter().filter(|r| r.result == o).count();
    let mut out = format!(
        "meshstack fleet {verb}: {} environment{} in {}: {} done, {} failed, {} interrupted\n",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        crate::engine::progress::human_duration(elapsed_ms),
        count(Outcome::Done),
        count(Outcome::Failed),
        count(Outcome::Interrupted)
    );
    let w_env = results
        .iter()
        .map(|r| r.env.len())
        .max()
        .unwrap_or(0)
        .max(11);
    let w_acct = results
        .iter()
        .filter_map(|r| r.account.as_ref().map(String::len))
        .max()
        .unwrap_or(0);
    let w_stage = results
        .iter()
        .filter_map(|r| r.failed_stage.as_ref().map(String::len))
        .max()
        .unwrap_or(0)
        .max(12);
    let acct_head = if w_acct > 0 {
        format!("{:<w_acct$}  ", "account")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  {:<w_env$}  {acct_head}{:<11}  {:<w_stage$}  reason",
        "environment", "result", "failed stage"
    );
    for r in results {
        let acct = if w_acct > 0 {
            format!("{:<w_acct$}  ", r.account.as_deref().unwrap_or("-"))
        } else {
            String::new()
        };
        let result = match r.result {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        };
        let line = format!(
            "  {:<w_env$}  {acct}{result:<11}  {:<w_stage$}  {}",
            r.env,
            r.failed_stage.as_deref().unwrap_or(""),
            r.reason.as_deref().unwrap_or("")
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_zero_padded_to_their_width() {
        let three = env_names("demo", &Members::Count(3)).unwrap();
        assert_eq!(three, ["demo-1", "demo-2", "demo-3"]);
        let thirty = env_names("demo", &Members::Count(30)).unwrap();
        assert_eq!(thirty.first().unwrap(), "demo-01");
        assert_eq!(thirty.last().unwrap(), "demo-30");
        let hundred = env_names("demo", &Members::Count(100)).unwrap();
        assert_eq!(hundred[0], "demo-001");
        assert!(env_names("demo", &Members::Count(0)).is_err());
        assert!(env_names("demo", &Members::Count(201))
            .unwrap_err()
            .contains("200"));
    }

    #[test]
    fn names_are_suffixes_checked_like_stack_names() {
        let names = env_names("demo", &Members::Names(parse_names("alice, bob"))).unwrap();
        assert_eq!(names, ["demo-alice", "demo-bob"]);
        for (list, why) in [
            ("alice,alice", "twice"),
            ("alice,,bob", "empty name"),
            ("Alice", "lowercase"),
            ("al_ice", "lowercase"),
        ] {
            let err = env_names("demo", &Members::Names(parse_names(list))).unwrap_err();
            assert!(err.contains(why), "{list}: {err}");
        }
    }

    #[test]
    fn a_long_stack_name_is_refused_saying_how_long_it_may_be() {
        let name = "workshop-eu-central-22"; // 22 characters
        let err = env_names(name, &Members::Count(30)).unwrap_err();
        assert!(err.contains("may have at most 21"), "{err}");
        assert!(
            env_names(name, &Members::Count(9)).is_ok(),
            "22 + 2 = 24 fits"
        );
    }

    #[test]
    fn accounts_are_role_arns_with_optional_external_ids() {
        let text = "- arn:aws:iam::111111111111:role/workshop\n\
                    - role_arn: arn:aws:iam::222222222222:role/path/workshop\n  external_id: abc\n";
        let a = parse_accounts(text, "accounts.yaml").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].account, "111111111111");
        assert_eq!(a[0].external_id, None);
        assert_eq!(a[1].account, "222222222222");
        assert_eq!(a[1].external_id.as_deref(), Some("abc"));
        for (bad, why) in [
            ("", "no accounts"),
            ("role: x\n", "not a list"),
            ("[]", "no accounts"),
            ("- arn:aws:iam::1111:role/x\n", "entry 1"),
            ("- arn:aws:s3:::bucket\n", "not an IAM role ARN"),
            (
                "- arn:aws:iam::111111111111:user/x\n",
                "not an IAM role ARN",
            ),
            (
                "- role_arn: arn:aws:iam::111111111111:role/x\n  extid: 1\n",
                "not a list",
            ),
            (
                "- role_arn: arn:aws:iam::111111111111:role/x\n  external_id: \"\"\n",
                "empty",
            ),
        ] {
            let err = parse_accounts(bad, "a.yaml").unwrap_err();
            assert!(
                err.contains(why) && err.starts_with("a.yaml"),
                "{bad:?}: {err}"
            );
        }
        let envs: Vec<String> = (1..=3).map(|i| format!("e-{i}")).collect();
        let err = assign(&envs, &a, "accounts.yaml").unwrap_err();
        assert!(err.contains("2 accounts for 3 environments"), "{err}");
        assert_eq!(assign(&envs[..2], &a, "x").unwrap().len(), 2);
    }

    #[test]
    fn the_table_names_each_failure() {
        let r = |env: &str, result, stage: Option<&str>, reason: Option<&str>| EnvResult {
            env: env.into(),
            account: Some("123456789012".into()),
            result,
            failed_stage: stage.map(String::from),
            reason: reason.map(String::from),
            elapsed_ms: 1000,
            reads: 1,
            writes: 2,
        };
        let t = table(
            "up",
            &[
                r("demo-1", Outcome::Done, None, None),
                r(
                    "demo-2",
                    Outcome::Failed,
                    Some("network"),
                    Some("ec2:CreateVpc: denied"),
                ),
            ],
            61_000,
        );
        assert!(
            t.starts_with("meshstack fleet up: 2 environments in 1m01s: 1 done, 1 failed"),
            "{t}"
        );
        let line = t.lines().find(|l| l.contains("demo-2")).unwrap();
        assert!(
            line.contains("failed")
                && line.contains("network")
                && line.contains("ec2:CreateVpc: denied"),
            "{t}"
        );
        let done = t.lines().find(|l| l.contains("demo-1")).unwrap();
        assert!(done.ends_with("done"), "{done:?}");
    }
}
