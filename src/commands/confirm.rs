//! Asking before deleting (issue 23, item 4). `down`, `fleet down` and `reap` show what they
//! are about to delete — which stacks, in which account and region — and ask on a terminal;
//! without a terminal to ask on they need `--yes`, and refuse (exit 2) before any call to AWS
//! when it is missing. A workshop host runs these by hand and in scripts; a forgotten stack
//! file or a shell in the wrong account must not be enough to delete an environment.
//!
//! Also here: `--allowed-account-ids` for the commands that delete without a stack file
//! (`down --name`, `reap`), so that the account guard applies to them as well.

use std::io::{BufRead, IsTerminal, Write};

use super::usage;
use crate::cli::DownArgs;
use crate::config::{Stack, DEFAULT_STACK_PATH};
use crate::engine::graph::StageId;

/// Whether the process can ask: its stdin and stderr are a terminal.
fn can_ask() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Before anything else: a command that deletes needs `--yes` when it cannot ask.
///
/// # Errors
/// A [`super::UsageError`] (exit 2) naming the flag, when `yes` is false and there is no
/// terminal.
pub(crate) fn require_yes_or_terminal(command: &str, yes: bool) -> anyhow::Result<()> {
    if yes || can_ask() {
        return Ok(());
    }
    Err(usage(format!(
        "`meshstack {command}` deletes what it finds and asks first on a terminal; there is no \
         terminal here, so pass --yes to confirm (nothing was deleted)"
    )))
}

/// What a teardown is about to delete, shown before the question (and, with `--yes`, as a
/// plain statement).
pub(crate) struct Deletion<'a> {
    pub command: &'a str,
    /// Where: `account 123456789012, region eu-west-1 (and the stacks' IAM roles)`, or the
    /// existing cluster.
    pub place: String,
    /// The stacks, each with a note (its fleet, its expiry, where it was named).
    pub stacks: Vec<(String, String)>,
    /// What is deleted in each (the stages, or "everything tagged for it").
    pub scope: String,
}

impl Deletion<'_> {
    fn describe(&self) -> String {
        let mut text = format!("`meshstack {}` deletes in {}:\n", self.command, self.place);
        for (name, note) in &self.stacks {
            text.push_str(&format!("  stack `{name}`"));
            if !note.is_empty() {
                text.push_str(&format!(" ({note})"));
            }
            text.push('\n');
        }
        text.push_str(&format!("  {}\n", self.scope));
        text
    }
}

/// Shows `what` and, unless `yes`, asks on the terminal. `Ok(true)`: go ahead.
///
/// # Errors
/// No terminal and no `--yes` (exit 2: [`require_yes_or_terminal`] should have said so
/// first); reading the answer failing.
pub(crate) async fn confirm(what: &Deletion<'_>, yes: bool) -> anyhow::Result<bool> {
    if yes {
        eprint!("{}", what.describe());
        return Ok(true);
    }
    require_yes_or_terminal(what.command, yes)?;
    let question = format!("{}Delete? Type `yes` to go on: ", what.describe());
    // A blocking read on its own thread: the caller stays able to notice a signal.
    let answer = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut err = std::io::stderr().lock();
        err.write_all(question.as_bytes())?;
        err.flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line)
    })
    .await??;
    let yes = matches!(answer.trim().to_ascii_lowercase().as_str(), "yes" | "y");
    if !yes {
        eprintln!("not confirmed: nothing was deleted");
    }
    Ok(yes)
}

/// The place of an AWS teardown: `account A, region R (and the stacks' IAM roles)`;
/// `account` may name several accounts (a fleet's).
pub(crate) fn aws_place(account: &str, region: &str) -> String {
    format!("{account}, region {region} (and the stacks' IAM roles)")
}

/// `down`'s question: the stack, where it came from, the place (`(region, account)`, or `None`
/// for an existing cluster), the stages. `Ok(true)`: go ahead.
///
/// # Errors
/// As [`confirm`].
pub(crate) async fn confirm_down(
    args: &DownArgs,
    stack: &Stack,
    place: Option<(&str, &str)>,
    selected: &[StageId],
) -> anyhow::Result<bool> {
    let note = if args.name.is_some() {
        "named by --name: everything found by its tags and derived names".to_string()
    } else if let Some(file) = &args.stack.stack {
        format!("from {}", file.display())
    } else if std::path::Path::new(DEFAULT_STACK_PATH).is_file() {
        format!("from {DEFAULT_STACK_PATH}")
    } else {
        // The case that must never pass unnoticed: no stack file anywhere.
        "the built-in demo stack: no --stack given and no stacks/demo.yaml here".to_string()
    };
    let place = match (place, stack.existing_cluster()) {
        (Some((region, account)), _) => aws_place(&format!("account {account}"), region),
        (None, Some(existing)) => format!(
            "the existing cluster (kubeconfig {}, context {}; the cluster itself stays)",
            existing
                .kubeconfig
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "KUBECONFIG or ~/.kube/config".into()),
            existing.context.as_deref().unwrap_or("the current one")
        ),
        (None, None) => "the stack's cluster".into(),
    };
    let what = Deletion {
        command: "down",
        place,
        stacks: vec![(stack.name.clone(), note)],
        scope: format!("stages {}", selected.join(", ")),
    };
    confirm(&what, args.yes).await
}

/// `--allowed-account-ids`: adds the guard to `stack` (a stack made from a name alone), or
/// narrows a stack file's own list to the accounts both allow.
///
/// # Errors
/// An ID that is not 12 digits (exit 2).
pub(crate) fn guard_accounts(stack: &mut Stack, ids: &[String]) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    if let Some(bad) = ids
        .iter()
        .find(|id| id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(usage(format!(
            "--allowed-account-ids: `{bad}` is not an AWS account ID (12 digits)"
        )));
    }
    if stack.allowed_account_ids.is_empty() {
        stack.allowed_account_ids = ids.to_vec();
    } else {
        stack.allowed_account_ids.retain(|a| ids.contains(a));
        if stack.allowed_account_ids.is_empty() {
            return Err(usage(
                "--allowed-account-ids and the stack file's allowed_account_ids have no \
                 account in common: nothing may be deleted",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_adds_a_guard_or_narrows_the_files() {
        let mut s = Stack::for_teardown("x", None, "t").unwrap();
        guard_accounts(&mut s, &["111111111111".into()]).unwrap();
        assert_eq!(s.allowed_account_ids, ["111111111111"]);
        let mut s = Stack::parse(
            "name: x\nallowed_account_ids: [\"111111111111\", \"222222222222\"]\n",
            "t",
        )
        .unwrap();
        guard_accounts(&mut s, &["222222222222".into()]).unwrap();
        assert_eq!(s.allowed_account_ids, ["222222222222"]);
        assert!(guard_accounts(&mut s, &["333333333333".into()]).is_err());
        assert!(guard_accounts(&mut s, &["12".into()]).is_err());
        guard_accounts(&mut s, &[]).unwrap();
    }

    #[test]
    fn the_deletion_names_account_region_and_stacks() {
        let d = Deletion {
            command: "down",
            place: aws_place("account 123456789012", "eu-west-1"),
            stacks: vec![("demo".into(), "the built-in demo stack".into())],
            scope: "every stage".into(),
        };
        let text = d.describe();
        for part in ["123456789012", "eu-west-1", "`demo`", "built-in"] {
            assert!(text.contains(part), "{text}");
        }
    }
}
