//! Where a stack's state is, for every verb that opens it, and `meshstack state init | show |
//! pull | push | migrate`.
//!
//! The location is `--state`, else the stack file's `state:`, else the local state folder
//! (`--state-dir`). Local state is a folder per stack; S3 state is `PREFIX/<stack>/` in a
//! bucket that `state init` creates and nothing else ever deletes, so one prefix can hold
//! every stack of a team (or of a fleet).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use super::run::Interrupts;
use super::{load_stack, load_stack_path, usage};
use crate::aws::state::{Encryption, S3Store, Versioning};
use crate::cli::{
    Output, StackArgs, StateInitArgs, StateMigrateArgs, StatePullArgs, StatePushArgs,
};
use crate::config::{S3Location, Stack, StateLocation};
use crate::engine::state::{
    format_utc, Journal, JournalData, LockInfo, StateDir, StateError, StateStore, Unlock,
};
use crate::engine::store::{unix_now_ms, Written};

/// A stack's state store, opened where the state is.
pub(crate) struct Opened {
    pub store: Arc<dyn StateStore>,
    /// The same store when it is S3, for its request count.
    pub s3: Option<S3Store>,
}

/// `--state`, else the stack file's `state:`, else local.
pub(crate) fn location(args: &StackArgs, stack: &Stack) -> StateLocation {
    args.state
        .clone()
        .or_else(|| stack.state.location.clone())
        .unwrap_or(StateLocation::Local)
}

fn encryption(stack: &Stack, kms_key: Option<String>) -> Encryption {
    match kms_key.or_else(|| stack.state.kms_key.clone()) {
        Some(key) => Encryption::Kms(key),
        None => Encryption::S3,
    }
}

fn open_s3(s3: &S3Location, stack: &Stack) -> anyhow::Result<S3Store> {
    S3Store::open(s3, &stack.name, stack.region(), encryption(stack, None)).map_err(usage)
}

/// Opens the state at `loc` for a command that writes it: a local folder is created; an S3
/// bucket's versioning is checked (a warning, or with `state_require_versioning: true` a
/// refusal, exit 2). Failures to reach S3 at all (no credentials, no region) are usage
/// errors: nothing has been written.
pub(crate) fn open_for_writing(
    args: &StackArgs,
    stack: &Stack,
    loc: &StateLocation,
) -> anyhow::Result<Opened> {
    match loc {
        StateLocation::Local => Ok(Opened {
            store: Arc::new(StateDir::open(&args.state_dir, &stack.name)?),
            s3: None,
        }),
        StateLocation::S3(s3) => {
            let store = open_s3(s3, stack)?;
            let versioning = store.versioning()?;
            if versioning != Versioning::Enabled {
                let state = match versioning {
                    Versioning::Suspended => "suspended",
                    _ => "off",
                };
                let fix = format!(
                    "turn it on with `meshstack state init {}` (it keeps what exists)",
                    StateLocation::S3(s3.clone())
                );
                if stack.state.require_versioning {
                    return Err(usage(format!(
                        "state bucket {} has versioning {state}, and the stack file sets \
                         state_require_versioning: true; {fix}",
                        s3.bucket
                    )));
                }
                eprintln!(
                    "warning: state bucket {} has versioning {state}: an overwritten or deleted \
                     journal cannot be recovered; {fix}",
                    s3.bucket
                );
            }
            Ok(Opened {
                store: Arc::new(store.clone()),
                s3: Some(store),
            })
        }
    }
}

/// The journal at `loc` for a command that only reads it; `None` when there is none (a local
/// folder is not created for that).
pub(crate) fn read_journal(
    args: &StackArgs,
    stack: &Stack,
    loc: &StateLocation,
) -> anyhow::Result<Option<Journal>> {
    match open_for_reading(args, stack, loc)? {
        // A missing journal reads as an empty one: every stage pending.
        Some(store) => Ok(Some(Journal::open(store, &stack.name)?)),
        None => Ok(None),
    }
}

/// `--force-unlock [LOCK_ID]` as the store understands it.
pub(crate) fn unlock(flag: &Option<String>) -> Unlock {
    match flag.as_deref() {
        None => Unlock::No,
        Some("") => Unlock::Stale,
        Some(id) => Unlock::Id(id.to_string()),
    }
}

/// The account guard before a write to S3 state (`state init`, `push`, `migrate`, and the
/// lock `up` and `down` take before their preflight): with
/// `allowed_account_ids` in the stack file, the credentials' account must be one of them,
/// checked with STS before the bucket is touched (issue 23, item 4). Local state touches no
/// account.
///
/// # Errors
/// The account not allowed (exit 2), or no credentials to ask STS with.
pub(crate) async fn guard_s3(stack: &Stack, locations: &[&StateLocation]) -> anyhow::Result<()> {
    if stack.allowed_account_ids.is_empty() {
        return Ok(());
    }
    let Some(s3) = locations.iter().find_map(|l| match l {
        StateLocation::S3(s3) => Some(s3),
        StateLocation::Local => None,
    }) else {
        return Ok(());
    };
    let region = s3.region.as_deref().or(stack.region());
    let (aws, sdk) = crate::aws::AwsClients::from_env(region)
        .await
        .map_err(usage)?;
    super::credentials(&sdk).await.map_err(usage)?;
    crate::aws::account::identify(&aws, stack)
        .await
        .map_err(super::preflight_error)?;
    Ok(())
}

pub async fn state_init(args: StateInitArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack_path(args.stack.as_deref())?;
    let loc = args.url.clone().or_else(|| stack.state.location.clone());
    let Some(StateLocation::S3(s3)) = loc else {
        return Err(usage(
            "state init needs an S3 location: `meshstack state init s3://BUCKET/PREFIX` (or \
             `state: s3://...` in the stack file); local state needs no set-up",
        ));
    };
    guard_s3(&stack, &[&StateLocation::S3(s3.clone())]).await?;
    let store = S3Store::open(
        &s3,
        &stack.name,
        stack.region(),
        encryption(&stack, args.kms_key),
    )
    .map_err(usage)?;
    let tags: Vec<(String, String)> = stack
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let report = store.init_bucket(&tags)?;
    let url = StateLocation::S3(s3.clone());
    let mut out = std::io::stdout().lock();
    writeln!(out, "state bucket {} ({}):", s3.bucket, store.region())?;
    for line in &report {
        writeln!(out, "  {line}")?;
    }
    eprintln!(
        "next: put `state: {url}` in the stack file (or pass --state {url}); `meshstack state \
         migrate --to {url}` moves a stack's local state there"
    );
    Ok(ExitCode::SUCCESS)
}

/// The lock's state for `show`: held, stale or unreadable.
fn lock_state(store: &dyn StateStore, lock: &Result<LockInfo, String>) -> &'static str {
    match lock {
        Err(_) => "unreadable",
        Ok(l) if store.shared() => {
            if l.lease_expires_at.is_none() || l.lease_expired(unix_now_ms()) {
                "stale"
            } else {
                "held"
            }
        }
        Ok(l) if l.process_alive() => "held",
        Ok(_) => "stale",
    }
}

pub async fn state_show(args: StackArgs) -> anyhow::Result<ExitCode> {
    let stack = load_stack(&args)?;
    let loc = location(&args, &stack);
    let Some(store) = open_for_reading(&args, &stack, &loc)? else {
        println!(
            "stack `{}`: no state yet in {}",
            stack.name,
            args.state_dir.join(&stack.name).display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let lock = store.read_lock()?;
    let stored = store.read_journal()?;
    let data = stored
        .as_ref()
        .map(|s| JournalData::parse(&s.body, &store.journal_name(), &store.corrupt_fix()))
        .transpose()?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let lock_json = lock.as_ref().map(|l| {
                let mut v = match l {
                    Ok(info) => serde_json::to_value(info).expect("a LockInfo serializes"),
                    Err(detail) => serde_json::json!({ "error": detail }),
                };
                v["state"] = lock_state(store.as_ref(), l).into();
                v
            });
            let doc = serde_json::json!({
                "stack": stack.name,
                "location": store.location(),
                "journal": data,
                "etag": stored.as_ref().and_then(|s| s.version.clone()),
                "lock": lock_json,
            });
            writeln!(out, "{}", serde_json::to_string(&doc)?)?;
        }
        Output::Text => {
            writeln!(out, "stack `{}`: state in {}", stack.name, store.location())?;
            match &lock {
                None => writeln!(out, "lock: free")?,
                Some(l) => {
                    let state = lock_state(store.as_ref(), l);
                    match l {
                        Ok(info) => {
                            write!(out, "lock: {state}, by {info}")?;
                            if let Some(end) = info.lease_expires_at {
                                write!(out, "; lease ends {}", format_utc(end))?;
                            }
                            writeln!(out)?;
                        }
                        Err(detail) => writeln!(out, "lock: unreadable ({detail})")?,
                    }
                }
            }
            match &data {
                None => writeln!(out, "journal: none yet")?,
                Some(d) => {
                    write!(out, "journal: updated {}", format_utc(d.updated_at))?;
                    if let Some(w) = &d.written_by {
                        write!(out, " by {w}")?;
                    }
                    writeln!(out)?;
                    for (id, record) in &d.stages {
                        let status = serde_json::to_value(record.status)?;
                        writeln!(
                            out,
                            "  {id:<16} {:<10} {}",
                            status.as_str().unwrap_or(""),
                            format_utc(record.updated_at)
                        )?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn state_pull(args: StatePullArgs) -> anyhow::Result<ExitCode> {
    let args = Pull {
        stack: args.stack.into(),
        out: args.out,
    };
    let stack = load_stack(&args.stack)?;
    let loc = location(&args.stack, &stack);
    let Some(journal) = read_stored(&args.stack, &stack, &loc)? else {
        anyhow::bail!("no journal for stack `{}` in {loc} yet", stack.name);
    };
    match &args.out {
        Some(path) => {
            crate::files::write_file(path, &journal, 0o600)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            eprintln!("wrote {} bytes to {}", journal.len(), path.display());
        }
        None => std::io::stdout().lock().write_all(&journal)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The journal's bytes exactly as stored at `loc`, if any.
fn read_stored(
    args: &StackArgs,
    stack: &Stack,
    loc: &StateLocation,
) -> anyhow::Result<Option<Vec<u8>>> {
    match open_for_reading(args, stack, loc)? {
        Some(store) => Ok(store.read_journal()?.map(|s| s.body)),
        None => Ok(None),
    }
}

/// The store at `loc` for a command that only reads; `None` for a local folder that does not
/// exist (it is not created for a read).
fn open_for_reading(
    args: &StackArgs,
    stack: &Stack,
    loc: &StateLocation,
) -> anyhow::Result<Option<Arc<dyn StateStore>>> {
    Ok(Some(match loc {
        StateLocation::Local => {
            if !args.state_dir.join(&stack.name).is_dir() {
                return Ok(None);
            }
            Arc::new(StateDir::open(&args.state_dir, &stack.name)?)
        }
        StateLocation::S3(s3) => Arc::new(open_s3(s3, stack)?),
    }))
}

pub async fn state_push(args: StatePushArgs) -> anyhow::Result<ExitCode> {
    let args = Push {
        stack: args.stack.into(),
        file: args.file,
    };
    let stack = load_stack(&args.stack)?;
    let body = std::fs::read(&args.file)
        .map_err(|e| usage(format!("cannot read {}: {e}", args.file.display())))?;
    let name = args.file.display().to_string();
    let data = JournalData::parse(&body, &name, "fix the file").map_err(usage)?;
    if data.stack != stack.name {
        return Err(usage(format!(
            "{name} is the journal of stack `{}`, not of `{}`; push it with that stack's file",
            data.stack, stack.name
        )));
    }
    let loc = location(&args.stack, &stack);
    guard_s3(&stack, &[&loc]).await?;
    let opened = open_for_writing(&args.stack, &stack, &loc)?;
    let store = opened.store;
    let interrupts = Interrupts::watch();
    let lock = Arc::new(store.lock(LockInfo::me("state push"), &Unlock::No)?);
    interrupts.register(&lock);
    let current = store.read_journal()?;
    let expected = current.as_ref().and_then(|c| c.version.clone());
    match store.write_journal(&body, expected.as_deref())? {
        Written::Ok(_) => {}
        Written::Conflict(_) => {
            anyhow::bail!(
                "{} changed while it was being replaced; nothing was written, try again",
                store.journal_name()
            )
        }
    }
    println!(
        "pushed {} bytes to {} ({})",
        body.len(),
        store.journal_name(),
        if current.is_some() {
            "replacing the journal there"
        } else {
            "the first journal there"
        }
    );
    drop(lock);
    Ok(finished(&interrupts))
}

pub async fn state_migrate(args: StateMigrateArgs) -> anyhow::Result<ExitCode> {
    let args = Migrate {
        stack: args.stack.into(),
        to: args.to,
    };
    let stack = load_stack(&args.stack)?;
    let from = location(&args.stack, &stack);
    let to = args.to.clone();
    if from == to {
        return Err(usage(format!(
            "the state of stack `{}` is in {from} already",
            stack.name
        )));
    }
    guard_s3(&stack, &[&from, &to]).await?;
    let src = open_for_writing(&args.stack, &stack, &from)?.store;
    let dst = open_for_writing(&args.stack, &stack, &to)?.store;
    let interrupts = Interrupts::watch();
    let src_lock = Arc::new(src.lock(LockInfo::me("state migrate"), &Unlock::No)?);
    interrupts.register(&src_lock);
    let dst_lock = Arc::new(dst.lock(LockInfo::me("state migrate"), &Unlock::No)?);
    interrupts.register(&dst_lock);
    let Some(stored) = src.read_journal()? else {
        anyhow::bail!(
            "no journal for stack `{}` in {from}: nothing to migrate",
            stack.name
        );
    };
    JournalData::parse(&stored.body, &src.journal_name(), &src.corrupt_fix())?;
    if let Some(there) = dst.read_journal()? {
        let by = serde_json::from_slice::<JournalData>(&there.body)
            .ok()
            .and_then(|d| d.written_by)
            .map(|w| format!(", last written by {w}"))
            .unwrap_or_default();
        anyhow::bail!(
            "{} holds a journal already{by}; nothing was moved. To replace it, `meshstack state \
             push` a file there; to keep it, move nothing",
            dst.journal_name()
        );
    }
    if let Written::Conflict(_) = dst.write_journal(&stored.body, None)? {
        anyhow::bail!(
            "{} appeared while migrating; nothing was moved",
            dst.journal_name()
        );
    }
    let copied = dst.read_journal()?.map(|s| s.body);
    if copied.as_deref() != Some(stored.body.as_slice()) {
        return Err(StateError::Remote {
            action: "verify the copy at",
            location: dst.journal_name(),
            detail: "it does not read back byte for byte; the source is kept".into(),
        }
        .into());
    }
    src.remove_journal(stored.version.as_deref())?;
    println!(
        "moved the journal of stack `{}` ({} bytes) from {} to {}",
        stack.name,
        stored.body.len(),
        src.journal_name(),
        dst.journal_name()
    );
    let file = args
        .stack
        .stack
        .as_ref()
        .map_or("the stack file".to_string(), |p| p.display().to_string());
    match &to {
        StateLocation::Local => eprintln!(
            "next: remove `state:` from {file} (or pass --state local), so that every command \
             finds the state here"
        ),
        StateLocation::S3(_) => eprintln!(
            "next: put `state: {to}` in {file} (or pass --state {to}), so that every command, \
             on every machine, finds the state there"
        ),
    }
    drop((src_lock, dst_lock));
    Ok(finished(&interrupts))
}

/// A locking state verb's exit, its lock released: the code of a signal that came while it
/// ran (its one write had been made; a second signal exits at once, releasing the lock),
/// else success.
fn finished(interrupts: &Interrupts) -> ExitCode {
    interrupts
        .signalled()
        .map_or(ExitCode::SUCCESS, ExitCode::from)
}

/// The state verbs' arguments with the stack arguments every helper here takes.
struct Pull {
    stack: StackArgs,
    out: Option<std::path::PathBuf>,
}

struct Push {
    stack: StackArgs,
    file: std::path::PathBuf,
}

struct Migrate {
    stack: StackArgs,
    to: StateLocation,
}
