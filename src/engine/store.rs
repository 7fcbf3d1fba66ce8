//! Where a stack's journal and lock are kept: the seam between the engine and a storage
//! backend.
//!
//! The engine ([`super::state::Journal`]) decides *what* to record and *when*; a
//! [`StateStore`] only keeps bytes and a lock. Two stores exist: a local folder
//! ([`super::state::StateDir`], the default) and an S3 prefix shared by every machine that
//! works on the stack (`src/aws/state.rs`). The engine knows nothing of AWS: a store reports
//! versions as opaque tokens (S3's ETags) and failures as [`StateError`]s.
//!
//! The seam is synchronous on purpose. The journal is written from inside the stages'
//! `cx.begin(...)` / `cx.complete(...)`, which are plain calls; a remote store bridges to its
//! own runtime internally (see `src/aws/state.rs`), so no stage changes with the backend.
//!
//! # The two kinds of lock
//! - A **local** lock names a process on this host; it is live while that process runs. The
//!   process is recognised by its pid *and* its start time (Linux: field 22 of
//!   `/proc/<pid>/stat`), so a pid reused by another process after a kill does not keep a
//!   dead run's lock alive.
//! - A **shared** lock (S3) is a lease: live until `lease_expires_at`, which the holder pushes
//!   forward while it runs. Another machine cannot look at the holder's processes (host names
//!   repeat across containers, pids repeat everywhere), so only the lease decides.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::state::{format_utc, StateError};

/// Who holds (or asks for) a stack's lock: the content of the lock file or object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The lock's ID, what `--force-unlock LOCK_ID` must name. Empty in lock files written
    /// by meshstack versions that had no IDs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The holder's AWS identity (the caller ARN), for shared state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    /// Process id.
    pub pid: u32,
    /// When the process started, in clock ticks after boot (Linux: `/proc/<pid>/stat` field
    /// 22); tells the holder from a later process that got the same pid. Absent in old locks
    /// and on other systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// Host name of the machine the process runs on.
    pub host: String,
    /// The meshstack subcommand, e.g. "up".
    pub command: String,
    /// When the lock was taken, unix seconds.
    pub started_at: u64,
    /// Shared locks: the lease's end, unix seconds; the holder renews it while it runs, and
    /// a lock whose lease has ended is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<u64>,
}

impl LockInfo {
    /// This process, about to take the lock for `command`, with a fresh lock ID.
    pub fn me(command: &str) -> LockInfo {
        let pid = std::process::id();
        LockInfo {
            id: new_lock_id(),
            who: None,
            pid,
            pid_start: process_start(pid),
            host: hostname(),
            command: command.to_string(),
            started_at: unix_now(),
            lease_expires_at: None,
        }
    }

    /// A local lock's holder may still be running. Only a process on this host can be
    /// checked; anything else counts as alive, because wrongly breaking a live lock is worse
    /// than asking the user. A recorded start time must match the running process's.
    pub fn process_alive(&self) -> bool {
        if self.host != hostname() {
            return true;
        }
        match self.pid_start {
            Some(start) => {
                process_start(self.pid).map_or(!cfg!(target_os = "linux"), |s| s == start)
            }
            None => pid_alive(self.pid),
        }
    }

    /// A shared lock's lease has ended (by this machine's clock): the holder stopped renewing
    /// it. A lock without a lease never expires.
    pub fn lease_expired(&self, now_ms: u128) -> bool {
        self.lease_expires_at
            .is_some_and(|end| now_ms > u128::from(end) * 1000)
    }

    /// What the journal records about the run that writes it.
    pub fn writer(&self) -> Writer {
        Writer {
            lock_id: self.id.clone(),
            who: self.who.clone(),
            host: self.host.clone(),
            pid: self.pid,
            command: self.command.clone(),
            at: 0,
        }
    }
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} on host {}", self.pid, self.host)?;
        if let Some(who) = &self.who {
            write!(f, " as {who}")?;
        }
        write!(
            f,
            " (meshstack {}, started {}",
            self.command,
            format_utc(self.started_at)
        )?;
        if !self.id.is_empty() {
            write!(f, ", lock ID {}", self.id)?;
        }
        write!(f, ")")
    }
}

/// The run that last wrote a journal, recorded in it, so that a write that finds the journal
/// changed can name both writers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// The writer's lock ID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lock_id: String,
    /// The writer's AWS identity, for shared state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The meshstack subcommand.
    pub command: String,
    /// When it wrote, unix seconds.
    pub at: u64,
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} on host {}", self.pid, self.host)?;
        if let Some(who) = &self.who {
            write!(f, " as {who}")?;
        }
        write!(f, " (meshstack {}", self.command)?;
        if !self.lock_id.is_empty() {
            write!(f, ", lock ID {}", self.lock_id)?;
        }
        write!(f, ") at {}", format_utc(self.at))
    }
}

/// What `--force-unlock` asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Unlock {
    /// Nothing: a held lock is an error.
    #[default]
    No,
    /// `--force-unlock` without an ID: take over a local lock whose process is gone (or
    /// that cannot be read). Shared locks need the ID.
    Stale,
    /// `--force-unlock LOCK_ID`: remove a stale lock, only if it has this ID.
    Id(String),
}

/// The journal as a store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The bytes, exactly as written.
    pub body: Vec<u8>,
    /// The store's version token for them (S3: the ETag); `None` where the store keeps none.
    pub version: Option<String>,
}

/// What a conditional journal write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written; the new version token.
    Ok(Option<String>),
    /// Not written: the journal is no longer the version the writer expected. What it holds
    /// now (`None`: it was deleted).
    Conflict(Option<Stored>),
}

/// A stack's journal and lock, wherever they are kept.
///
/// # Guarantees
/// - [`StateStore::write_journal`] never overwrites a version other than the one expected
///   (stores that keep versions); a journal is replaced whole or not at all.
/// - [`StateStore::lock`] gives the lock to one caller at a time, and never breaks a live lock.
pub trait StateStore: Send + Sync + fmt::Debug {
    /// Where the stack's state is, for messages: a folder, or `s3://bucket/prefix/stack/`.
    fn location(&self) -> String;

    /// The journal's own name (path or URL), for messages.
    fn journal_name(&self) -> String;

    /// How to get rid of a corrupt journal here, for [`StateError::Corrupt`].
    fn corrupt_fix(&self) -> String;

    /// Reads the journal; `None` if there is none.
    ///
    /// # Errors
    /// [`StateError::Io`] or [`StateError::Remote`].
    fn read_journal(&self) -> Result<Option<Stored>, StateError>;

    /// Writes the journal if it still is at `expected` (`None`: if there is none), as one
    /// atomic replacement. Stores that keep no versions ignore `expected`.
    ///
    /// # Errors
    /// [`StateError::Io`] or [`StateError::Remote`]; [`StateError::LockLost`] if this
    /// process's lock on a shared store was taken from it.
    fn write_journal(&self, body: &[u8], expected: Option<&str>) -> Result<Written, StateError>;

    /// Removes the journal if it still is at `expected` (after a `state migrate`).
    ///
    /// # Errors
    /// As [`StateStore::write_journal`]; a conflict is [`StateError::Remote`].
    fn remove_journal(&self, expected: Option<&str>) -> Result<(), StateError>;

    /// Takes the stack's lock as `me` until the guard is dropped.
    ///
    /// # Errors
    /// [`StateError::Locked`] while a live holder has it (whatever `unlock` says);
    /// [`StateError::StaleLock`] / [`StateError::UnreadableLock`] for a dead holder unless
    /// `unlock` takes it over; [`StateError::WrongLockId`] if `unlock` names another lock.
    fn lock(&self, me: LockInfo, unlock: &Unlock) -> Result<LockGuard, StateError>;

    /// The current lock, if any (`Err` detail if it cannot be parsed).
    ///
    /// # Errors
    /// [`StateError::Io`] or [`StateError::Remote`].
    fn read_lock(&self) -> Result<Option<Result<LockInfo, String>>, StateError>;

    /// Whether a lock here is a lease (shared) rather than a local process.
    fn shared(&self) -> bool;
}

/// A lock as its store holds it: released by [`HeldLock::release`].
pub trait HeldLock: Send + Sync {
    /// Who holds it: this process.
    fn info(&self) -> &LockInfo;
    /// Removes the lock if it is still ours; never fails (a lock left behind is reported
    /// as stale to the next run).
    fn release(&self);
}

/// Holds a stack's lock; dropping it releases the lock.
pub struct LockGuard {
    held: Box<dyn HeldLock>,
}

impl LockGuard {
    /// Wraps a store's lock.
    pub fn new(held: Box<dyn HeldLock>) -> LockGuard {
        LockGuard { held }
    }

    /// Who holds it (this process), with its lock ID.
    pub fn info(&self) -> &LockInfo {
        self.held.info()
    }

    /// Removes the lock if it is still ours (someone may have broken it with
    /// `--force-unlock` while this process was stopped). Dropping the guard does the same;
    /// this is for a process about to exit without running destructors.
    pub fn release(&self) {
        self.held.release();
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.held.release();
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("info", self.info())
            .finish()
    }
}

/// A lock ID: 128 random bits as a UUID (version 4 layout), from the standard library's
/// per-process random hash keys, so no random-number crate is needed.
pub fn new_lock_id() -> String {
    let word = || {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    };
    let (a, b) = (word(), word());
    let bytes: Vec<u8> = a.to_be_bytes().into_iter().chain(b.to_be_bytes()).collect();
    let hex: String = bytes
        .iter()
        .enumerate()
        .map(|(i, b)| match i {
            6 => format!("{:02x}", (b & 0x0f) | 0x40),
            8 => format!("{:02x}", (b & 0x3f) | 0x80),
            _ => format!("{b:02x}"),
        })
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// When process `pid` started, in clock ticks after boot: field 22 of `/proc/<pid>/stat`.
/// `None` if there is no such process (or not on Linux).
pub fn process_start(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 is the command name in parentheses and may itself hold spaces and ')'; the
    // fields after the last ')' start with field 3.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(target_os = "linux")]
fn pid_alive(pid: u32) -> bool {
    pid != 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn pid_alive(_pid: u32) -> bool {
    true
}

/// This machine's host name, as lock files record it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now, in unix milliseconds (lease checks).
pub fn unix_now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_are_uuid_shaped_and_differ() {
        let a = new_lock_id();
        let b = new_lock_id();
        assert_ne!(a, b);
        for id in [&a, &b] {
            let parts: Vec<&str> = id.split('-').collect();
            let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
            assert_eq!(lens, [8, 4, 4, 4, 12], "{id}");
            assert!(
                id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
                "{id}"
            );
            assert_eq!(&parts[2][..1], "4", "{id}");
            assert!("89ab".contains(&parts[3][..1]), "{id}");
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_has_a_start_time_and_a_dead_pid_has_none() {
        let mine = process_start(std::process::id()).expect("our own start time");
        assert!(mine > 0);
        assert_eq!(process_start(std::process::id()), Some(mine), "stable");
        assert_eq!(process_start(4_194_305), None);
        assert_eq!(process_start(0), None);
    }

    fn me_at(start: Option<u64>) -> LockInfo {
        LockInfo {
            pid_start: start,
            ..LockInfo::me("up")
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_live_pid_with_another_start_time_is_not_the_holder() {
        let mine = process_start(std::process::id()).unwrap();
        assert!(me_at(Some(mine)).process_alive());
        assert!(me_at(None).process_alive(), "old locks: pid only");
        assert!(
            !me_at(Some(mine + 1)).process_alive(),
            "a reused pid must not keep a dead run's lock alive"
        );
        let gone = LockInfo {
            pid: 4_194_305,
            ..me_at(None)
        };
        assert!(!gone.process_alive());
        let elsewhere = LockInfo {
            host: "some-other-host.example".into(),
            ..gone
        };
        assert!(elsewhere.process_alive(), "other hosts cannot be checked");
    }

    #[test]
    fn leases_expire_after_their_end_and_locks_without_one_never() {
        let at = |end: Option<u64>| LockInfo {
            lease_expires_at: end,
            ..LockInfo::me("up")
        };
        assert!(!at(Some(1_000)).lease_expired(1_000_000));
        assert!(at(Some(1_000)).lease_expired(1_000_001));
        assert!(!at(None).lease_expired(u128::MAX));
    }

    #[test]
    fn holders_and_writers_are_named_with_their_ids() {
        let holder = LockInfo {
            id: "3f2a".into(),
            who: Some("arn:aws:iam::123456789012:user/ana".into()),
            pid: 42,
            pid_start: Some(7),
            host: "ci-7".into(),
            command: "up".into(),
            started_at: 1_795_887_600,
            lease_expires_at: Some(1_795_887_720),
        };
        assert_eq!(
            holder.to_string(),
            "pid 42 on host ci-7 as arn:aws:iam::123456789012:user/ana (meshstack up, \
             started 2026-11-28 17:40:00 UTC, lock ID 3f2a)"
        );
        let mut w = holder.writer();
        w.at = 1_795_887_660;
        assert_eq!(
            w.to_string(),
            "pid 42 on host ci-7 as arn:aws:iam::123456789012:user/ana (meshstack up, \
             lock ID 3f2a) at 2026-11-28 17:41:00 UTC"
        );
        let old = LockInfo {
            id: String::new(),
            who: None,
            ..holder
        };
        assert_eq!(
            old.to_string(),
            "pid 42 on host ci-7 (meshstack up, started 2026-11-28 17:40:00 UTC)"
        );
    }
}
