//! The state of one stack: a lock and a journal, kept in a local folder by default.
//!
//! The journal (`state.json`) records what meshstack did and meant to do:
//! per-stage status and outputs, and an *intent* written before each remote
//! create so that a run that died half-way resumes with the same idempotency
//! token instead of creating a twin. It is a record and a speed-up, never the
//! only truth: stages find their resources in the cloud by deterministic name
//! or tag, so a lost or corrupt journal costs time, not resources.
//!
//! The lock keeps two meshstack processes from working on the same stack at
//! once, and says who holds it when it refuses.
//!
//! Where the two are kept is a [`StateStore`](super::store::StateStore): this
//! module holds the journal logic and the local store, [`StateDir`]; the
//! shared S3 store lives in `src/aws/state.rs`. Local writes are atomic (temp
//! file, fsync, rename, fsync the directory) and the files are private to the
//! user (0700 directory, 0600 files): outputs may include account ids and
//! endpoints. Unix only.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::store::{unix_now, HeldLock, Stored, Written};
pub use super::store::{LockGuard, LockInfo, StateStore, Unlock, Writer};

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const JOURNAL_VERSION: u32 = 1;

/// Why a stack's state could not be read, written or locked.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The stack name cannot be used as a directory name.
    #[error("invalid stack name `{name}`: it names the state directory, so it must be a single non-empty path component")]
    InvalidStackName {
        /// The name as given.
        name: String,
    },
    /// A filesystem operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done, e.g. "create state directory".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A request to a remote store failed (after its retries).
    #[error("cannot {action} {location}: {detail}")]
    Remote {
        /// What was being done, e.g. "read the journal".
        action: &'static str,
        /// The object or bucket concerned.
        location: String,
        /// What the store answered, and the fix when there is one.
        detail: String,
    },
    /// Another live meshstack process holds the lock.
    #[error(
        "stack is locked by {holder}{}; wait for it to finish",
        lease_note(holder)
    )]
    Locked {
        /// Who holds it.
        holder: Box<LockInfo>,
    },
    /// The lock's holder is gone (it crashed or was killed), or its lease ran out.
    #[error("{}", stale_message(holder))]
    StaleLock {
        /// Who held it.
        holder: Box<LockInfo>,
    },
    /// The lock exists but does not say who holds it.
    #[error("lock {location} is unreadable ({detail}); if no other meshstack is working on this stack, re-run with `--force-unlock`")]
    UnreadableLock {
        /// The lock file or object.
        location: String,
        /// What is wrong with it.
        detail: String,
    },
    /// `--force-unlock LOCK_ID` named a lock other than the one there.
    #[error("--force-unlock {given} does not match the lock on this stack, which is {holder}; nothing was removed")]
    WrongLockId {
        /// The ID given.
        given: String,
        /// The lock that is there.
        holder: Box<LockInfo>,
    },
    /// This process's shared lock was taken from it (its lease ran out and another run
    /// broke it); the journal is no longer written.
    #[error("lost the lock on {location}: {detail}; stopped writing the journal so as not to overwrite another run's")]
    LockLost {
        /// The lock object.
        location: String,
        /// What happened.
        detail: String,
    },
    /// The journal changed behind this run: a write found another version than the one it
    /// expected, and wrote nothing.
    #[error("{0}")]
    Conflict(Box<Conflict>),
    /// The journal is not valid JSON of the expected shape.
    #[error("state file {location} is corrupt ({detail}); {fix} and re-run: meshstack finds its resources in the cloud, so nothing is lost")]
    Corrupt {
        /// The journal file or object.
        location: String,
        /// The parse error.
        detail: String,
        /// How to move it aside, where it is.
        fix: String,
    },
    /// The journal was written by a newer meshstack.
    #[error("state file {location} has format version {version}, this meshstack reads version {JOURNAL_VERSION}; use a newer meshstack")]
    UnsupportedVersion {
        /// The journal file or object.
        location: String,
        /// The version it declares.
        version: u32,
    },
}

fn lease_note(holder: &LockInfo) -> String {
    match holder.lease_expires_at {
        Some(end) => format!(
            "; its lease ends at {} unless the holder renews it, which it does while it runs",
            format_utc(end)
        ),
        None => String::new(),
    }
}

fn stale_message(holder: &LockInfo) -> String {
    match holder.lease_expires_at {
        Some(end) => format!(
            "stale lock: stack is locked by {holder}, but its lease ended at {} without being \
             renewed (the holder was killed, crashed or lost its connection); if no other \
             meshstack is working on this stack, re-run with `--force-unlock {}`",
            format_utc(end),
            holder.id
        ),
        None => format!(
            "stale lock: stack is locked by {holder}, but that process is gone; if no other \
             meshstack is working on this stack, re-run with `--force-unlock`"
        ),
    }
}

/// A journal write that found the journal changed: who this run is, and who wrote the
/// version that is there now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The journal.
    pub journal: String,
    /// This run.
    pub ours: Option<Writer>,
    /// The version this run expected (ETag).
    pub expected: Option<String>,
    /// The version there now; `None` with `deleted` when the journal is gone.
    pub found: Option<String>,
    /// Who wrote the version there now, if it says.
    pub theirs: Option<Writer>,
    /// The journal was deleted.
    pub deleted: bool,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ours = self.ours.as_ref().map_or("this run".to_string(), |w| {
            format!("this run, {}", writer_who(w))
        });
        let tag = |v: &Option<String>| v.as_deref().unwrap_or("none").to_string();
        write!(
            f,
            "the journal {} changed behind this run: {ours} expected the version with ETag {}, ",
            self.journal,
            tag(&self.expected)
        )?;
        if self.deleted {
            write!(f, "but it was deleted")?;
        } else {
            let theirs = self
                .theirs
                .as_ref()
                .map_or("a writer that did not record itself".to_string(), |w| {
                    w.to_string()
                });
            write!(
                f,
                "but found ETag {}, written by {theirs}",
                tag(&self.found)
            )?;
        }
        write!(
            f,
            "; nothing was overwritten (with bucket versioning on, S3 keeps both versions) and \
             the run stopped; find out who else works on this stack, then re-run"
        )
    }
}

fn writer_who(w: &Writer) -> String {
    let mut s = format!("pid {} on host {}", w.pid, w.host);
    if let Some(who) = &w.who {
        s.push_str(&format!(" as {who}"));
    }
    if !w.lock_id.is_empty() {
        s.push_str(&format!(" (lock ID {})", w.lock_id));
    }
    s
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The local store: a directory holding one stack's lock and journal.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
    stack: String,
}

impl StateDir {
    /// Opens `root/stack_name`, creating it with mode 0700 if needed. If this
    /// call creates `root` too, `root` gets mode 0700 as well; an existing
    /// `root` is left as the user set it.
    ///
    /// # Errors
    /// [`StateError::InvalidStackName`] for a name that is not one path
    /// component; [`StateError::Io`] if a directory cannot be created.
    pub fn open(root: &Path, stack_name: &str) -> Result<StateDir, StateError> {
        let mut components = Path::new(stack_name).components();
        let single_normal = matches!(
            (components.next(), components.next()),
            (Some(std::path::Component::Normal(_)), None)
        );
        if !single_normal || stack_name.contains('/') {
            return Err(StateError::InvalidStackName {
                name: stack_name.to_string(),
            });
        }
        if !root.exists() {
            fs::create_dir_all(root).map_err(io_err("create state root", root))?;
            set_mode(root, 0o700)?;
        }
        let path = root.join(stack_name);
        match DirBuilder::new().mode(0o700).create(&path) {
            // The umask may have narrowed the mode; set it exactly.
            Ok(()) => set_mode(&path, 0o700)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(e) => return Err(io_err("create state directory", &path)(e)),
        }
        Ok(StateDir {
            path,
            stack: stack_name.to_string(),
        })
    }

    /// The stack's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stack's name.
    pub fn stack(&self) -> &str {
        &self.stack
    }

    fn journal_path(&self) -> PathBuf {
        self.path.join(STATE_FILE)
    }

    fn link_lock(&self, tmp: &Path, path: &Path, unlock: &Unlock) -> Result<(), StateError> {
        // Each retry follows a lock that vanished or was removed as stale;
        // a few are plenty unless several processes race for the same stack.
        for _ in 0..4 {
            match fs::hard_link(tmp, path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create lock file", path)(e)),
            }
            let holder = match fs::read(path) {
                Ok(bytes) => serde_json::from_slice::<LockInfo>(&bytes).map_err(|e| e.to_string()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read lock file", path)(e)),
            };
            match (holder, unlock) {
                (Ok(holder), _) if holder.process_alive() => {
                    return Err(StateError::Locked {
                        holder: Box::new(holder),
                    })
                }
                // A local holder provably gone (this host, and its pid dead or another
                // process's): nobody can be working on the stack, so no --force-unlock is
                // asked for. A lock naming a lease is a shared one's; it keeps its rules.
                (Ok(holder), Unlock::No) if holder.lease_expires_at.is_none() => {
                    eprintln!(
                        "warning: taking over the lock on stack `{}` from {holder}: that \
                         process is gone (killed or crashed)",
                        self.stack
                    );
                    match fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err("remove stale lock file", path)(e)),
                    }
                }
                (Ok(holder), Unlock::No) => {
                    return Err(StateError::StaleLock {
                        holder: Box::new(holder),
                    })
                }
                (Ok(holder), Unlock::Id(id)) if holder.id != *id => {
                    return Err(StateError::WrongLockId {
                        given: id.clone(),
                        holder: Box::new(holder),
                    })
                }
                (Err(detail), Unlock::No | Unlock::Id(_)) => {
                    return Err(StateError::UnreadableLock {
                        location: path.display().to_string(),
                        detail,
                    })
                }
                _ => match fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove stale lock file", path)(e)),
                },
            }
        }
        Err(io_err("take lock", path)(io::Error::other(
            "the lock file kept changing; is another meshstack starting on this stack?",
        )))
    }
}

impl StateStore for StateDir {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn journal_name(&self) -> String {
        self.journal_path().display().to_string()
    }

    fn corrupt_fix(&self) -> String {
        let p = self.journal_path();
        format!("move it aside (e.g. `mv {p} {p}.bad`)", p = p.display())
    }

    fn read_journal(&self) -> Result<Option<Stored>, StateError> {
        let path = self.journal_path();
        match fs::read(&path) {
            Ok(body) => Ok(Some(Stored {
                body,
                version: None,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read state file", &path)(e)),
        }
    }

    /// Atomically: a temp file (mode 0600) in the same directory, fsync, rename over
    /// `state.json`, fsync the directory. A crash at any point leaves either the old or the
    /// new journal. The local lock is the only guard: `expected` is not checked.
    fn write_journal(&self, body: &[u8], _expected: Option<&str>) -> Result<Written, StateError> {
        let path = self.journal_path();
        let tmp = self
            .path
            .join(format!("{STATE_FILE}.tmp-{}", std::process::id()));
        write_private(&tmp, body, "write state file")?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("replace state file", &path)(e));
        }
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync state directory", &self.path))?;
        Ok(Written::Ok(None))
    }

    fn remove_journal(&self, _expected: Option<&str>) -> Result<(), StateError> {
        let path = self.journal_path();
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove state file", &path)(e)),
        }
    }

    /// The lock file appears atomically with its content (written to a private temp file,
    /// then hard-linked into place), so nobody ever reads a half-written lock and mistakes
    /// a live holder for a broken one. A holder on another host counts as live: its process
    /// cannot be checked from here.
    fn lock(&self, me: LockInfo, unlock: &Unlock) -> Result<LockGuard, StateError> {
        let path = self.path.join(LOCK_FILE);
        let tmp = self.path.join(format!("{LOCK_FILE}.tmp-{}", me.pid));
        let body = serde_json::to_vec_pretty(&me).expect("a LockInfo always serializes");
        write_private(&tmp, &body, "write lock file")?;
        let result = self.link_lock(&tmp, &path, unlock);
        let _ = fs::remove_file(&tmp);
        result?;
        Ok(LockGuard::new(Box::new(LocalLock { path, me })))
    }

    fn read_lock(&self) -> Result<Option<Result<LockInfo, String>>, StateError> {
        let path = self.path.join(LOCK_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice::<LockInfo>(&bytes).map_err(|e| e.to_string()),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read lock file", &path)(e)),
        }
    }

    fn shared(&self) -> bool {
        false
    }
}

/// A local lock file held by this process.
struct LocalLock {
    path: PathBuf,
    me: LockInfo,
}

impl HeldLock for LocalLock {
    fn info(&self) -> &LockInfo {
        &self.me
    }

    fn release(&self) {
        let ours = fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LockInfo>(&b).ok())
            .is_some_and(|h| h.id == self.me.id && h.pid == self.me.pid && h.host == self.me.host);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Where a stage stands, as last recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageStatus {
    /// Never run (or no record).
    Pending,
    /// Started and not yet ended — or the run died while it ran.
    Running,
    /// Last apply succeeded.
    Done,
    /// Last apply or destroy failed.
    Failed,
    /// Torn down.
    Destroyed,
}

/// What the journal knows about one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Last recorded status.
    pub status: StageStatus,
    /// When the record last changed, unix seconds.
    pub updated_at: u64,
    /// Free text, e.g. the error of a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Values later stages or the user need (ids, endpoints).
    #[serde(default)]
    pub outputs: BTreeMap<String, serde_json::Value>,
}

/// A remote create that was begun; kept after completion as a record until
/// the next `begin` for the same key or the stage is forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The stage that creates the resource.
    pub stage: String,
    /// The resource's key within the stage, e.g. "vpc" or "subnet/a".
    pub key: String,
    /// The idempotency (client request) token for the create call.
    pub token: String,
    /// When the intent was recorded, unix seconds.
    pub started_at: u64,
    /// The created resource's id, once known.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// Whether the create is known to have succeeded.
    #[serde(default)]
    pub completed: bool,
}

/// The serialized journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalData {
    /// Format version; this code reads and writes 1.
    pub version: u32,
    /// The stack's name.
    pub stack: String,
    /// When anything last changed, unix seconds.
    pub updated_at: u64,
    /// Per-stage records, by stage id.
    #[serde(default)]
    pub stages: BTreeMap<String, StageRecord>,
    /// Remote creates begun, in order.
    #[serde(default)]
    pub intents: Vec<Intent>,
    /// The run that wrote this version (absent in journals of older meshstack versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<Writer>,
    /// When the stack may be removed (UTC, RFC 3339): fixed by the first run made with an
    /// expiry, so that every resource, whenever created, carries the same
    /// `meshstack.io/expires-at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Just the writer of a journal, read from a version this run did not write.
#[derive(Deserialize)]
struct WrittenBy {
    #[serde(default)]
    written_by: Option<Writer>,
}

impl JournalData {
    /// An empty journal for `stack`.
    pub fn empty(stack: &str) -> JournalData {
        JournalData {
            version: JOURNAL_VERSION,
            stack: stack.to_string(),
            updated_at: unix_now(),
            stages: BTreeMap::new(),
            intents: Vec::new(),
            written_by: None,
            expires_at: None,
        }
    }

    /// When the stack's first recorded create began (unix seconds): the start of its uptime,
    /// as far as the journal knows.
    pub fn first_create(&self) -> Option<u64> {
        self.intents.iter().map(|i| i.started_at).min()
    }

    /// Parses a journal's bytes; `location` and `fix` go into the errors.
    ///
    /// # Errors
    /// [`StateError::UnsupportedVersion`] for another format version (checked first, so a
    /// newer format is reported as such rather than as corruption), else
    /// [`StateError::Corrupt`].
    pub fn parse(bytes: &[u8], location: &str, fix: &str) -> Result<JournalData, StateError> {
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let corrupt = |e: serde_json::Error| StateError::Corrupt {
            location: location.to_string(),
            detail: e.to_string(),
            fix: fix.to_string(),
        };
        let probe: Probe = serde_json::from_slice(bytes).map_err(corrupt)?;
        if probe.version != JOURNAL_VERSION {
            return Err(StateError::UnsupportedVersion {
                location: location.to_string(),
                version: probe.version,
            });
        }
        serde_json::from_slice(bytes).map_err(corrupt)
    }
}

/// Why a journal stopped writing.
#[derive(Debug, Clone)]
enum Stop {
    Conflict(Box<Conflict>),
    Lost { location: String, detail: String },
}

impl Stop {
    fn error(&self) -> StateError {
        match self {
            Stop::Conflict(c) => StateError::Conflict(c.clone()),
            Stop::Lost { location, detail } => StateError::LockLost {
                location: location.clone(),
                detail: detail.clone(),
            },
        }
    }
}

/// One stack's journal, saved on every change to its store.
#[derive(Debug, Clone)]
pub struct Journal {
    /// `None`: a read-only snapshot (`plan`), whose changes stay in memory.
    store: Option<Arc<dyn StateStore>>,
    /// The store's version of what this journal last read or wrote.
    version: Option<String>,
    /// Stamped into every write, so that a conflicting writer can be named.
    writer: Option<Writer>,
    /// What stopped this journal's writes (a conflict, a lost lock): every later save
    /// refuses with it, without a request.
    stopped: Option<Stop>,
    data: JournalData,
}

/// A journal shared by the stages of one run.
pub type SharedJournal = std::sync::Arc<std::sync::Mutex<Journal>>;

static TOKEN_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Journal {
    /// Reads the stack's journal from a local state folder; a missing file is an empty
    /// journal.
    ///
    /// # Errors
    /// As [`Journal::open`].
    pub fn load(dir: &StateDir) -> Result<Journal, StateError> {
        Journal::open(Arc::new(dir.clone()), dir.stack())
    }

    /// Reads stack `stack`'s journal from `store`; a missing journal is an empty one.
    ///
    /// # Errors
    /// [`StateError::Corrupt`] (naming the journal and how to move it aside),
    /// [`StateError::UnsupportedVersion`], or the store's error.
    pub fn open(store: Arc<dyn StateStore>, stack: &str) -> Result<Journal, StateError> {
        let stored = store.read_journal()?;
        let (data, version) = match stored {
            None => (JournalData::empty(stack), None),
            Some(stored) => (
                JournalData::parse(&stored.body, &store.journal_name(), &store.corrupt_fix())?,
                stored.version,
            ),
        };
        Ok(Journal {
            store: Some(store),
            version,
            writer: None,
            stopped: None,
            data,
        })
    }

    /// A journal that is only read: changes stay in memory and are never written. For
    /// read-only commands that still want the recorded outputs (`plan`).
    pub fn snapshot(data: JournalData) -> Journal {
        Journal {
            store: None,
            version: None,
            writer: None,
            stopped: None,
            data,
        }
    }

    /// Records `writer` (this run, from its lock) in every later write.
    pub fn set_writer(&mut self, writer: Writer) {
        self.writer = Some(writer);
    }

    /// The conflict that stopped this journal's writes, if one did.
    pub fn conflict(&self) -> Option<&Conflict> {
        match &self.stopped {
            Some(Stop::Conflict(c)) => Some(c),
            _ => None,
        }
    }

    /// Why this journal no longer writes (a conflict, or a lost lock), as the error every
    /// save now returns; `None` while it writes. A run checks it to stop starting stages.
    pub fn stopped(&self) -> Option<StateError> {
        self.stopped.as_ref().map(Stop::error)
    }

    /// The journal's content.
    pub fn data(&self) -> &JournalData {
        &self.data
    }

    /// Where the journal is kept (path or URL); empty for a snapshot.
    pub fn location(&self) -> String {
        self.store
            .as_ref()
            .map_or_else(String::new, |s| s.journal_name())
    }

    /// The recorded status of `stage`; `Pending` if there is no record.
    pub fn status(&self, stage: &str) -> StageStatus {
        self.data
            .stages
            .get(stage)
            .map_or(StageStatus::Pending, |r| r.status)
    }

    /// Records `stage`'s status and message, and saves.
    ///
    /// # Errors
    /// As [`Journal::save`].
    pub fn set_status(
        &mut self,
        stage: &str,
        status: StageStatus,
        message: Option<String>,
    ) -> Result<(), StateError> {
        let now = unix_now();
        let record = self.record(stage, now);
        record.status = status;
        record.message = message;
        record.updated_at = now;
        self.data.updated_at = now;
        self.save()
    }

    /// A recorded output of `stage`.
    pub fn output(&self, stage: &str, key: &str) -> Option<&serde_json::Value> {
        self.data.stages.get(stage)?.outputs.get(key)
    }

    /// Records an output of `stage`; saves only if the value changed.
    ///
    /// # Errors
    /// As [`Journal::save`].
    pub fn set_output(
        &mut self,
        stage: &str,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StateError> {
        if self.output(stage, key) == Some(&value) {
            return Ok(());
        }
        let now = unix_now();
        let record = self.record(stage, now);
        record.outputs.insert(key.to_string(), value);
        record.updated_at = now;
        self.data.updated_at = now;
        self.save()
    }

    /// Records the stack's expiry (RFC 3339), and saves if it changed.
    ///
    /// # Errors
    /// As [`Journal::save`].
    pub fn set_expires_at(&mut self, at: &str) -> Result<(), StateError> {
        if self.data.expires_at.as_deref() == Some(at) {
            return Ok(());
        }
        self.data.expires_at = Some(at.to_string());
        self.data.updated_at = unix_now();
        self.save()
    }

    /// Records the intent to create resource `key` of `stage`, before the
    /// remote call, and returns the client token to send with it. An
    /// unfinished intent for the same key keeps its token, so a run resumed
    /// after a crash repeats the create idempotently instead of making a
    /// second resource. Saves when a new intent is recorded.
    ///
    /// # Errors
    /// As [`Journal::save`].
    pub fn begin(&mut self, stage: &str, key: &str) -> Result<String, StateError> {
        if let Some(intent) = self
            .data
            .intents
            .iter()
            .find(|i| i.stage == stage && i.key == key && !i.completed)
        {
            return Ok(intent.token.clone());
        }
        let token = new_token();
        let now = unix_now();
        // One record per key: the completed one this replaces has served.
        self.data
            .intents
            .retain(|i| !(i.stage == stage && i.key == key));
        self.data.intents.push(Intent {
            stage: stage.to_string(),
            key: key.to_string(),
            token: token.clone(),
            started_at: now,
            resource_id: None,
            completed: false,
        });
        self.data.updated_at = now;
        self.save()?;
        Ok(token)
    }

    /// Files an unfinished intent for `key` recorded under stage `from` under
    /// stage `to` instead, keeping its token, when `to` has none for `key`: a
    /// resource that moved to another stage (a stage split in two) is created
    /// with the token a killed run of the old layout sent. Saves when it moves
    /// one; returns whether it did.
    ///
    /// # Errors
    /// As [`Journal::save`].
    pub fn move_intent(&mut self, from: &str, to: &str, key: &str) -> Result<bool, StateError> {
        let open = |i: &Intent, stage: &str| i.stage == stage && i.key == key && !i.completed;
        if self.data.intents.iter().any(|i| open(i, to)) {
            return Ok(false);
        }
        let Some(intent) = self.data.intents.iter_mut().find(|i| open(i, from)) else {
            return Ok(false);
        };
        intent.stage = to.to_string();
        self.data.updated_at = unix_now();
        self.save()?;
        Ok(true)
    }

    /// Records that the create of `key` succeeded with `resource_id`, and
    /// saves. Without a prior [`Journal::begin`] the fact is still recorded
    /// (with an empty token).
    ///
    /// # Errors
    /// As [`Journal::save`].
    pub fn complete(
        &mut self,
        stage: &str,
        key: &str,
        resource_id: &str,
    ) -> Result<(), StateError> {
        let now = unix_now();
        match self
            .data
            .intents
            .iter_mut()
            .find(|i| i.stage == stage && i.key == key)
        {
            Some(intent) => {
                intent.completed = true;
                intent.resource_id = Some(resource_id.to_string());
            }
            None => self.data.intents.push(Intent {
                stage: stage.to_string(),
                key: key.to_string(),
                token: String::new(),
                started_at: now,
                resource_id: Some(resource_id.to_string()),
                completed: true,
            }),
        }
        self.data.updated_at = now;
        self.save()
    }

    /// Intents of `stage` begun but not completed: creates that may or may
    /// not have happened, to look for in the cloud.
    pub fn unfinished(&self, stage: &str) -> Vec<&Intent> {
        self.data
            .intents
            .iter()
            .filter(|i| i.stage == stage && !i.completed)
            .collect()
    }

    /// After a successful destroy: drops `stage`'s outputs and intents, marks
    /// it `Destroyed`, and saves.
    ///
    /// # Errors
    /// As [`Journal::save`].
    pub fn forget_stage(&mut self, stage: &str) -> Result<(), StateError> {
        let now = unix_now();
        let record = self.record(stage, now);
        record.status = StageStatus::Destroyed;
        record.message = None;
        record.outputs.clear();
        record.updated_at = now;
        self.data.intents.retain(|i| i.stage != stage);
        self.data.updated_at = now;
        self.save()
    }

    /// Writes the journal to its store as one replacement, on condition that the store
    /// still holds the version this journal last read or wrote (S3: `If-Match` on its ETag,
    /// `If-None-Match: *` for a first write). A snapshot saves nothing.
    ///
    /// Blocking I/O of a few KiB (a local file, or one request); cheap enough to call from
    /// async code without `spawn_blocking`.
    ///
    /// # Errors
    /// [`StateError::Conflict`] when the journal changed behind this run — then and on every
    /// later call, with nothing written; otherwise the store's error.
    pub fn save(&mut self) -> Result<(), StateError> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        if let Some(stop) = &self.stopped {
            return Err(stop.error());
        }
        self.data.written_by = self.writer.clone().map(|mut w| {
            w.at = unix_now();
            w
        });
        let mut body =
            serde_json::to_vec_pretty(&self.data).expect("journal data always serializes");
        body.push(b'\n');
        let written = match store.write_journal(&body, self.version.as_deref()) {
            Err(StateError::LockLost { location, detail }) => {
                self.stopped = Some(Stop::Lost { location, detail });
                return Err(self.stopped().expect("just set"));
            }
            other => other?,
        };
        match written {
            Written::Ok(version) => {
                self.version = version;
                Ok(())
            }
            Written::Conflict(now) => {
                let theirs = now
                    .as_ref()
                    .and_then(|s| serde_json::from_slice::<WrittenBy>(&s.body).ok())
                    .and_then(|w| w.written_by);
                let conflict = Conflict {
                    journal: store.journal_name(),
                    ours: self.data.written_by.clone(),
                    expected: self.version.clone(),
                    found: now.as_ref().and_then(|s| s.version.clone()),
                    theirs,
                    deleted: now.is_none(),
                };
                let conflict = Box::new(conflict);
                self.stopped = Some(Stop::Conflict(conflict.clone()));
                Err(StateError::Conflict(conflict))
            }
        }
    }

    fn record(&mut self, stage: &str, now: u64) -> &mut StageRecord {
        self.data
            .stages
            .entry(stage.to_string())
            .or_insert_with(|| StageRecord {
                status: StageStatus::Pending,
                updated_at: now,
                message: None,
                outputs: BTreeMap::new(),
            })
    }
}

/// Creates `path` afresh with mode 0600, writes `body` and fsyncs it; removes
/// it again on failure.
fn write_private(path: &Path, body: &[u8], action: &'static str) -> Result<(), StateError> {
    // A leftover from a crashed process that had our pid.
    let _ = fs::remove_file(path);
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| {
            f.write_all(body)?;
            f.sync_all()
        });
    result.map_err(|e| {
        let _ = fs::remove_file(path);
        io_err(action, path)(e)
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), StateError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err("set permissions of", path))
}

/// A client token unique enough for idempotency: time, pid and a process
/// counter, 32 hex digits.
fn new_token() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = TOKEN_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:016x}{:08x}{:08x}",
        nanos as u64,
        std::process::id(),
        count
    )
}

/// `unix_secs` as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_utc(unix_secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = crate::clock::utc_parts(unix_secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::store::{self, hostname};
    use super::*;

    /// A pid above Linux's maximum (2^22), so no process can have it.
    const DEAD_PID: u32 = 4_194_305;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn open() -> (tempfile::TempDir, StateDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("state"), "demo").unwrap();
        (tmp, dir)
    }

    fn write_lock(dir: &StateDir, holder: &LockInfo) {
        fs::write(
            dir.path().join(LOCK_FILE),
            serde_json::to_vec(holder).unwrap(),
        )
        .unwrap();
    }

    fn holder(pid: u32, host: &str) -> LockInfo {
        LockInfo {
            id: String::new(),
            who: None,
            pid,
            pid_start: None,
            host: host.to_string(),
            command: "up".to_string(),
            started_at: 1_795_887_600,
            lease_expires_at: None,
        }
    }

    fn lock(dir: &StateDir, command: &str, unlock: Unlock) -> Result<LockGuard, StateError> {
        dir.lock(LockInfo::me(command), &unlock)
    }

    #[test]
    fn open_creates_private_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("new-root");
        let dir = StateDir::open(&root, "demo").unwrap();
        assert_eq!(dir.path(), root.join("demo"));
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(dir.path()), 0o700);
        // Opening again is fine and changes nothing.
        StateDir::open(&root, "demo").unwrap();

        // A root the user already has keeps its mode.
        let existing = tmp.path().join("existing");
        fs::create_dir(&existing).unwrap();
        fs::set_permissions(&existing, fs::Permissions::from_mode(0o755)).unwrap();
        let dir = StateDir::open(&existing, "demo").unwrap();
        assert_eq!(mode(&existing), 0o755);
        assert_eq!(mode(dir.path()), 0o700);
    }

    #[test]
    fn open_rejects_names_that_are_not_one_component() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["", ".", "..", "a/b", "/abs", "demo/"] {
            let err = StateDir::open(tmp.path(), name).unwrap_err();
            assert!(
                matches!(err, StateError::InvalidStackName { .. }),
                "{name:?}: {err}"
            );
        }
    }

    #[test]
    fn save_is_atomic_private_and_round_trips() {
        let (_tmp, dir) = open();
        let mut journal = Journal::load(&dir).unwrap();
        assert_eq!(journal.status("network"), StageStatus::Pending);
        journal
            .set_status("network", StageStatus::Done, Some("created 14".into()))
            .unwrap();
        journal
            .set_output("network", "vpc_id", json!("vpc-123"))
            .unwrap();
        journal.begin("iam", "role/cluster").unwrap();

        let file = dir.path().join(STATE_FILE);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(dir.path()), 0o700);
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [STATE_FILE], "no temp file may be left behind");

        let reloaded = Journal::load(&dir).unwrap();
        assert_eq!(reloaded.data(), journal.data());
        assert_eq!(reloaded.status("network"), StageStatus::Done);
        assert_eq!(
            reloaded.output("network", "vpc_id"),
            Some(&json!("vpc-123"))
        );
        assert_eq!(reloaded.data().stack, "demo");
        assert_eq!(reloaded.unfinished("iam").len(), 1);
    }

    #[test]
    fn set_output_saves_only_on_change() {
        let (_tmp, dir) = open();
        let file = dir.path().join(STATE_FILE);
        let mut journal = Journal::load(&dir).unwrap();
        journal
            .set_output("cluster", "endpoint", json!("https://a"))
            .unwrap();
        fs::remove_file(&file).unwrap();
        journal
            .set_output("cluster", "endpoint", json!("https://a"))
            .unwrap();
        assert!(
            !file.exists(),
            "an unchanged output must not rewrite the file"
        );
        journal
            .set_output("cluster", "endpoint", json!("https://b"))
            .unwrap();
        assert!(file.exists());
        assert_eq!(
            Journal::load(&dir).unwrap().output("cluster", "endpoint"),
            Some(&json!("https://b"))
        );
    }

    #[test]
    fn unreadable_journals_are_reported_with_the_fix() {
        let (_tmp, dir) = open();
        let file = dir.path().join(STATE_FILE);
        let cases = [
            ("{not json", "is corrupt"),
            (r#"{"version": 1, "stack": 3}"#, "is corrupt"),
            (r#"{"stages": {}}"#, "is corrupt"),
            (r#"{"version": 2, "stack": "demo"}"#, "format version 2"),
        ];
        for (content, want) in cases {
            fs::write(&file, content).unwrap();
            let err = Journal::load(&dir).unwrap_err().to_string();
            assert!(err.contains(&file.display().to_string()), "{err}");
            assert!(err.contains(want), "{content}: {err}");
            if want == "is corrupt" {
                assert!(err.contains("move it aside"), "{err}");
                assert!(err.contains("nothing is lost"), "{err}");
            }
        }
    }

    #[test]
    fn begin_reuses_the_token_until_complete() {
        let (_tmp, dir) = open();
        let mut journal = Journal::load(&dir).unwrap();
        let first = journal.begin("network", "vpc").unwrap();
        assert_eq!(first.len(), 32);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(journal.begin("network", "vpc").unwrap(), first);
        let other = journal.begin("network", "subnet/a").unwrap();
        assert_ne!(other, first);

        // A resumed run (fresh load) gets the same token.
        let mut resumed = Journal::load(&dir).unwrap();
        assert_eq!(resumed.begin("network", "vpc").unwrap(), first);
        assert_eq!(resumed.unfinished("network").len(), 2);

        resumed.complete("network", "vpc", "vpc-123").unwrap();
        let left: Vec<&str> = resumed
            .unfinished("network")
            .iter()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(left, ["subnet/a"]);
        let done = &resumed.data().intents[0];
        assert!(done.completed);
        assert_eq!(done.resource_id.as_deref(), Some("vpc-123"));

        let again = resumed.begin("network", "vpc").unwrap();
        assert_ne!(
            again, first,
            "a completed intent's token must not be reused"
        );
        assert_eq!(resumed.data().intents.len(), 2);
    }

    #[test]
    fn an_unfinished_intent_moves_to_the_stage_that_now_owns_the_key() {
        let (_tmp, dir) = open();
        let mut journal = Journal::load(&dir).unwrap();
        let token = journal.begin("network", "nat/a").unwrap();
        journal.begin("network", "vpc").unwrap();
        assert!(journal.move_intent("network", "nat", "nat/a").unwrap());
        let mut resumed = Journal::load(&dir).unwrap();
        assert_eq!(resumed.begin("nat", "nat/a").unwrap(), token);
        assert_eq!(resumed.unfinished("network").len(), 1, "vpc stays");
        // Nothing to move: none unfinished under `from`, or `to` has its own.
        assert!(!resumed.move_intent("network", "nat", "nat/a").unwrap());
        resumed.begin("network", "nat/b").unwrap();
        let own = resumed.begin("nat", "nat/b").unwrap();
        assert!(!resumed.move_intent("network", "nat", "nat/b").unwrap());
        assert_eq!(resumed.begin("nat", "nat/b").unwrap(), own);
        resumed.complete("network", "vpc", "vpc-1").unwrap();
        assert!(!resumed.move_intent("network", "nat", "vpc").unwrap());
    }

    #[test]
    fn forget_stage_drops_outputs_and_intents() {
        let (_tmp, dir) = open();
        let mut journal = Journal::load(&dir).unwrap();
        journal
            .set_output("network", "vpc_id", json!("vpc-1"))
            .unwrap();
        journal.begin("network", "vpc").unwrap();
        journal.begin("iam", "role").unwrap();
        journal.forget_stage("network").unwrap();
        let journal = Journal::load(&dir).unwrap();
        assert_eq!(journal.status("network"), StageStatus::Destroyed);
        assert_eq!(journal.output("network", "vpc_id"), None);
        assert!(journal.unfinished("network").is_empty());
        assert_eq!(journal.unfinished("iam").len(), 1);
    }

    #[test]
    fn a_live_holder_keeps_the_lock_even_with_force() {
        let (_tmp, dir) = open();
        let guard = lock(&dir, "up", Unlock::No).unwrap();
        let id = guard.info().id.clone();
        for unlock in [Unlock::No, Unlock::Stale, Unlock::Id(id.clone())] {
            let err = lock(&dir, "down", unlock).unwrap_err();
            let StateError::Locked { holder } = &err else {
                panic!("want Locked, got {err}");
            };
            assert_eq!(holder.pid, std::process::id());
            assert_eq!(holder.command, "up");
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!(
                    "stack is locked by pid {} on host {} (meshstack up, started ",
                    std::process::id(),
                    hostname()
                )),
                "{msg}"
            );
            assert!(
                msg.ends_with(&format!(" UTC, lock ID {id}); wait for it to finish")),
                "{msg}"
            );
        }
        drop(guard);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(names.is_empty(), "no temp file may be left behind");
    }

    #[test]
    fn a_holder_on_another_host_counts_as_live() {
        let (_tmp, dir) = open();
        write_lock(&dir, &holder(DEAD_PID, "some-other-host.example"));
        let err = lock(&dir, "up", Unlock::Stale).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
    }

    #[test]
    fn a_dead_local_holder_is_taken_over_without_force_unlock() {
        let lock_file = |dir: &StateDir| dir.path().join(LOCK_FILE);
        for unlock in [Unlock::No, Unlock::Stale] {
            let (_tmp, dir) = open();
            write_lock(&dir, &holder(DEAD_PID, &hostname()));
            let guard = lock(&dir, "down", unlock).unwrap();
            let now: LockInfo =
                serde_json::from_slice(&fs::read(lock_file(&dir)).unwrap()).unwrap();
            assert_eq!(now.pid, std::process::id());
            assert_eq!(now.command, "down");
            assert_eq!(now.pid_start, store::process_start(std::process::id()));
            assert_eq!(mode(&lock_file(&dir)), 0o600);
            drop(guard);
            assert!(!lock_file(&dir).exists());
        }
        // A lock with a lease is a shared store's: only the lease decides, never the pid.
        let (_tmp, dir) = open();
        let leased = LockInfo {
            lease_expires_at: Some(1),
            ..holder(DEAD_PID, &hostname())
        };
        write_lock(&dir, &leased);
        let err = lock(&dir, "up", Unlock::No).unwrap_err();
        assert!(matches!(err, StateError::StaleLock { ref holder } if holder.pid == DEAD_PID));
        assert!(err.to_string().contains("--force-unlock"), "{err}");
    }

    #[test]
    fn an_unreadable_lock_needs_force_unlock() {
        let (_tmp, dir) = open();
        let lock_file = dir.path().join(LOCK_FILE);
        fs::write(&lock_file, "").unwrap();
        let err = lock(&dir, "up", Unlock::No).unwrap_err();
        assert!(matches!(err, StateError::UnreadableLock { .. }), "{err}");
        assert!(err.to_string().contains("--force-unlock"));
        let _guard = lock(&dir, "up", Unlock::Stale).unwrap();
    }

    #[test]
    fn dropping_a_guard_leaves_a_lock_taken_over_by_someone_else() {
        let (_tmp, dir) = open();
        let lock_file = dir.path().join(LOCK_FILE);
        let guard = lock(&dir, "up", Unlock::No).unwrap();
        write_lock(&dir, &holder(DEAD_PID, &hostname()));
        drop(guard);
        assert!(lock_file.exists());
    }

    #[test]
    fn a_live_pid_with_another_start_time_is_a_stale_lock_taken_over() {
        let (_tmp, dir) = open();
        let me = std::process::id();
        let Some(start) = store::process_start(me) else {
            panic!("no start time for our own pid: /proc/{me}/stat unreadable");
        };
        // A killed run's lock whose pid now belongs to a live process (this one).
        let reused = LockInfo {
            pid_start: Some(start + 1),
            ..holder(me, &hostname())
        };
        write_lock(&dir, &reused);
        let guard = lock(&dir, "up", Unlock::No).unwrap();
        assert_eq!(guard.info().pid_start, Some(start));
        drop(guard);
        // The same pid with its real start time is live.
        write_lock(
            &dir,
            &LockInfo {
                pid_start: Some(start),
                ..reused
            },
        );
        let err = lock(&dir, "up", Unlock::Stale).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
    }

    #[test]
    fn force_unlock_with_an_id_removes_only_that_stale_lock() {
        let (_tmp, dir) = open();
        let lock_file = dir.path().join(LOCK_FILE);
        let stale = LockInfo {
            id: "11111111-2222-4333-8444-555555555555".into(),
            ..holder(DEAD_PID, &hostname())
        };
        write_lock(&dir, &stale);
        let before = fs::read(&lock_file).unwrap();
        let err = lock(&dir, "up", Unlock::Id("not-this-one".into())).unwrap_err();
        assert!(matches!(err, StateError::WrongLockId { .. }), "{err}");
        assert!(err.to_string().contains(&stale.id), "{err}");
        assert!(err.to_string().contains("nothing was removed"), "{err}");
        assert_eq!(fs::read(&lock_file).unwrap(), before);

        let guard = lock(&dir, "up", Unlock::Id(stale.id.clone())).unwrap();
        let now: LockInfo = serde_json::from_slice(&fs::read(&lock_file).unwrap()).unwrap();
        assert_eq!(now.pid, std::process::id());
        assert_ne!(now.id, stale.id);
        assert_eq!(&now, guard.info());
    }

    /// An in-memory store that keeps versions and checks them, as S3 does with ETags.
    #[derive(Debug, Default)]
    struct Versioned {
        object: std::sync::Mutex<Option<Stored>>,
        writes: AtomicU32,
        counter: AtomicU32,
    }

    impl StateStore for Versioned {
        fn location(&self) -> String {
            "mem://demo/".into()
        }
        fn journal_name(&self) -> String {
            "mem://demo/state.json".into()
        }
        fn corrupt_fix(&self) -> String {
            "delete it".into()
        }
        fn read_journal(&self) -> Result<Option<Stored>, StateError> {
            Ok(self.object.lock().unwrap().clone())
        }
        fn write_journal(
            &self,
            body: &[u8],
            expected: Option<&str>,
        ) -> Result<Written, StateError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            let mut object = self.object.lock().unwrap();
            if object.as_ref().and_then(|o| o.version.as_deref()) != expected {
                return Ok(Written::Conflict(object.clone()));
            }
            let version = format!("v{}", self.counter.fetch_add(1, Ordering::SeqCst));
            *object = Some(Stored {
                body: body.to_vec(),
                version: Some(version.clone()),
            });
            Ok(Written::Ok(Some(version)))
        }
        fn remove_journal(&self, _expected: Option<&str>) -> Result<(), StateError> {
            unimplemented!("not used by these tests")
        }
        fn lock(&self, _me: LockInfo, _unlock: &Unlock) -> Result<LockGuard, StateError> {
            unimplemented!("not used by these tests")
        }
        fn read_lock(&self) -> Result<Option<Result<LockInfo, String>>, StateError> {
            Ok(None)
        }
        fn shared(&self) -> bool {
            true
        }
    }

    fn writer(pid: u32, host: &str) -> Writer {
        LockInfo {
            id: format!("lock-{pid}"),
            ..holder(pid, host)
        }
        .writer()
    }

    #[test]
    fn a_journal_changed_behind_a_writer_stops_it_naming_both_writers() {
        let store = Arc::new(Versioned::default());
        let mut ours = Journal::open(store.clone(), "demo").unwrap();
        ours.set_writer(writer(1, "laptop"));
        ours.set_status("network", StageStatus::Running, None)
            .unwrap();
        ours.set_status("network", StageStatus::Done, None).unwrap();

        // Someone else reads the current version and writes over it.
        let mut theirs = Journal::open(store.clone(), "demo").unwrap();
        theirs.set_writer(writer(2, "ci-runner"));
        theirs
            .set_status("iam", StageStatus::Running, None)
            .unwrap();
        let their_bytes = store.read_journal().unwrap().unwrap();

        let err = ours.set_status("iam", StageStatus::Done, None).unwrap_err();
        let StateError::Conflict(conflict) = &err else {
            panic!("want a conflict, got {err}");
        };
        assert_eq!(conflict.ours.as_ref().unwrap().host, "laptop");
        assert_eq!(conflict.theirs.as_ref().unwrap().host, "ci-runner");
        assert_eq!(conflict.expected.as_deref(), Some("v1"));
        assert_eq!(conflict.found.as_deref(), Some("v2"));
        let msg = err.to_string();
        for want in [
            "mem://demo/state.json changed behind this run",
            "pid 1 on host laptop (lock ID lock-1)",
            "written by pid 2 on host ci-runner (meshstack up, lock ID lock-2)",
            "ETag v1",
            "found ETag v2",
            "nothing was overwritten",
        ] {
            assert!(msg.contains(want), "{want:?} missing from: {msg}");
        }
        assert_eq!(
            store.read_journal().unwrap().unwrap(),
            their_bytes,
            "the other writer's version must survive"
        );

        // Every later write refuses at once, without a request.
        let writes = store.writes.load(Ordering::SeqCst);
        let again = ours.begin("network", "vpc").unwrap_err();
        assert!(matches!(again, StateError::Conflict(_)), "{again}");
        assert_eq!(store.writes.load(Ordering::SeqCst), writes);
        assert!(ours.conflict().is_some());
    }

    #[test]
    fn a_first_write_conflicts_with_a_journal_created_meanwhile_and_a_deleted_one_is_named() {
        let store = Arc::new(Versioned::default());
        let mut a = Journal::open(store.clone(), "demo").unwrap();
        let mut b = Journal::open(store.clone(), "demo").unwrap();
        a.set_status("network", StageStatus::Running, None).unwrap();
        let err = b
            .set_status("network", StageStatus::Running, None)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("written by a writer that did not record itself"),
            "{err}"
        );

        let mut c = Journal::open(store.clone(), "demo").unwrap();
        *store.object.lock().unwrap() = None;
        let err = c.set_status("iam", StageStatus::Done, None).unwrap_err();
        assert!(err.to_string().contains("but it was deleted"), "{err}");
    }

    #[test]
    fn writes_record_their_writer_and_snapshots_write_nothing() {
        let store = Arc::new(Versioned::default());
        let mut j = Journal::open(store.clone(), "demo").unwrap();
        j.set_writer(writer(7, "box"));
        j.set_output("network", "vpc_id", json!("vpc-1")).unwrap();
        let saved: JournalData =
            serde_json::from_slice(&store.read_journal().unwrap().unwrap().body).unwrap();
        let w = saved.written_by.clone().expect("a writer");
        assert_eq!(
            (w.pid, w.host.as_str(), w.lock_id.as_str()),
            (7, "box", "lock-7")
        );
        assert!(w.at > 0);

        let writes = store.writes.load(Ordering::SeqCst);
        let mut snap = Journal::snapshot(saved);
        snap.set_status("iam", StageStatus::Done, None).unwrap();
        assert_eq!(snap.status("iam"), StageStatus::Done);
        assert_eq!(store.writes.load(Ordering::SeqCst), writes);
        assert_eq!(snap.location(), "");
    }

    #[test]
    fn utc_formatting() {
        let cases = [
            (0, "1970-01-01 00:00:00 UTC"),
            (951_782_400, "2000-02-29 00:00:00 UTC"),
            (951_868_799, "2000-02-29 23:59:59 UTC"),
            (1_234_567_890, "2009-02-13 23:31:30 UTC"),
            (1_709_164_800, "2024-02-29 00:00:00 UTC"),
            (1_795_887_600, "2026-11-28 17:40:00 UTC"),
            (4_102_444_800, "2100-01-01 00:00:00 UTC"),
            (253_402_300_799, "9999-12-31 23:59:59 UTC"),
        ];
        for (secs, want) in cases {
            assert_eq!(format_utc(secs), want, "{secs}");
        }
    }
}
