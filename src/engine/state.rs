//! Local state of one stack: a directory, a lock and a journal.
//!
//! The journal (`state.json`) records what meshstack did and meant to do:
//! per-stage status and outputs, and an *intent* written before each remote
//! create so that a run that died half-way resumes with the same idempotency
//! token instead of creating a twin. It is a record and a speed-up, never the
//! only truth: stages find their resources in the cloud by deterministic name
//! or tag, so a lost or corrupt journal costs time, not resources.
//!
//! The lock (`lock`) keeps two meshstack processes from working on the same
//! stack at once, and says who holds it when it refuses.
//!
//! Writes are atomic (temp file, fsync, rename, fsync the directory) and the
//! files are private to the user (0700 directory, 0600 files): outputs may
//! include account ids and endpoints. Unix only.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const JOURNAL_VERSION: u32 = 1;

/// Why local state could not be read, written or locked.
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
    /// Another live meshstack process holds the lock.
    #[error("stack is locked by {holder}; wait for it to finish")]
    Locked {
        /// Who holds it.
        holder: LockHolder,
    },
    /// The lock's holder is gone (it crashed or was killed).
    #[error("stale lock: stack is locked by {holder}, but that process is gone; if no other meshstack is working on this stack, re-run with `--force-unlock`")]
    StaleLock {
        /// Who held it.
        holder: LockHolder,
    },
    /// The lock file exists but does not say who holds it.
    #[error("lock file {} is unreadable ({detail}); if no other meshstack is working on this stack, re-run with `--force-unlock`", path.display())]
    UnreadableLock {
        /// The lock file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The journal is not valid JSON of the expected shape.
    #[error("state file {p} is corrupt ({detail}); move it aside (e.g. `mv {p} {p}.bad`) and re-run: meshstack finds its resources in the cloud, so nothing is lost", p = path.display())]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The parse error.
        detail: String,
    },
    /// The journal was written by a newer meshstack.
    #[error("state file {} has format version {version}, this meshstack reads version {JOURNAL_VERSION}; use a newer meshstack", path.display())]
    UnsupportedVersion {
        /// The journal file.
        path: PathBuf,
        /// The version it declares.
        version: u32,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The directory holding one stack's lock and journal.
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

    /// Takes the stack's lock for `command` (e.g. "up"; shown to others as
    /// "meshstack up"), held until the guard is dropped.
    ///
    /// The lock file appears atomically with its content (written to a
    /// private temp file, then hard-linked into place), so nobody ever reads
    /// a half-written lock and mistakes a live holder for a broken one.
    ///
    /// # Errors
    /// - [`StateError::Locked`] if a live process holds it (a holder on
    ///   another host counts as live: its pid cannot be checked from here).
    ///   `force_unlock` never overrides this.
    /// - [`StateError::StaleLock`] / [`StateError::UnreadableLock`] if the
    ///   holder is gone or unknown and `force_unlock` is false; with
    ///   `force_unlock` such a lock is taken over.
    /// - [`StateError::Io`] if the lock cannot be written.
    pub fn lock(&self, command: &str, force_unlock: bool) -> Result<LockGuard, StateError> {
        let path = self.path.join(LOCK_FILE);
        let me = LockHolder {
            pid: std::process::id(),
            host: hostname(),
            command: command.to_string(),
            started_at: unix_now(),
        };
        let tmp = self.path.join(format!("{LOCK_FILE}.tmp-{}", me.pid));
        let body = serde_json::to_vec_pretty(&me).expect("a LockHolder always serializes");
        write_private(&tmp, &body, "write lock file")?;
        let result = self.link_lock(&tmp, &path, force_unlock);
        let _ = fs::remove_file(&tmp);
        result?;
        Ok(LockGuard {
            path,
            pid: me.pid,
            host: me.host,
        })
    }

    fn link_lock(&self, tmp: &Path, path: &Path, force_unlock: bool) -> Result<(), StateError> {
        // Each retry follows a lock that vanished or was removed as stale;
        // a few are plenty unless several processes race for the same stack.
        for _ in 0..4 {
            match fs::hard_link(tmp, path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create lock file", path)(e)),
            }
            let holder = match fs::read(path) {
                Ok(bytes) => {
                    serde_json::from_slice::<LockHolder>(&bytes).map_err(|e| e.to_string())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read lock file", path)(e)),
            };
            match holder {
                Ok(holder) if holder.is_alive() => return Err(StateError::Locked { holder }),
                Ok(holder) if !force_unlock => return Err(StateError::StaleLock { holder }),
                Err(detail) if !force_unlock => {
                    return Err(StateError::UnreadableLock {
                        path: path.to_path_buf(),
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

/// Who holds a stack's lock; the content of the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// Host name of the machine the process runs on.
    pub host: String,
    /// The meshstack subcommand, e.g. "up".
    pub command: String,
    /// When the lock was taken, unix seconds.
    pub started_at: u64,
}

impl LockHolder {
    /// Whether the holder may still be running. Only a process on this host
    /// can be checked (Linux: `/proc/<pid>`); anything else counts as alive,
    /// because wrongly breaking a live lock is worse than asking the user.
    pub fn is_alive(&self) -> bool {
        if self.host != hostname() {
            return true;
        }
        pid_alive(self.pid)
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} on host {} (meshstack {}, started {})",
            self.pid,
            self.host,
            self.command,
            format_utc(self.started_at)
        )
    }
}

#[cfg(target_os = "linux")]
fn pid_alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn pid_alive(_pid: u32) -> bool {
    true
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Holds a stack's lock; dropping it releases the lock.
#[derive(Debug)]
pub struct LockGuard {
    path: PathBuf,
    pid: u32,
    host: String,
}

impl LockGuard {
    /// Remove the lock file if it is still ours (someone may have taken it over with
    /// --force-unlock while we were hung). Dropping the guard does the same; this is for a
    /// process about to exit without running destructors.
    pub fn release(&self) {
        let ours = fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LockHolder>(&b).ok())
            .is_some_and(|h| h.pid == self.pid && h.host == self.host);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.release();
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
}

/// One stack's journal, saved on every change.
#[derive(Debug, Clone, PartialEq)]
pub struct Journal {
    path: PathBuf,
    data: JournalData,
}

/// A journal shared by the stages of one run.
pub type SharedJournal = std::sync::Arc<std::sync::Mutex<Journal>>;

static TOKEN_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Journal {
    /// Reads the stack's journal; a missing file is an empty journal.
    ///
    /// # Errors
    /// [`StateError::Corrupt`] (naming the file and telling the user to move
    /// it aside), [`StateError::UnsupportedVersion`], or [`StateError::Io`].
    pub fn load(dir: &StateDir) -> Result<Journal, StateError> {
        let path = dir.path().join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Journal {
                    path,
                    data: JournalData {
                        version: JOURNAL_VERSION,
                        stack: dir.stack().to_string(),
                        updated_at: unix_now(),
                        stages: BTreeMap::new(),
                        intents: Vec::new(),
                    },
                });
            }
            Err(e) => return Err(io_err("read state file", &path)(e)),
        };
        // Version first, so a newer format is reported as such rather than
        // as corruption.
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let corrupt = |e: serde_json::Error| StateError::Corrupt {
            path: path.clone(),
            detail: e.to_string(),
        };
        let probe: Probe = serde_json::from_slice(&bytes).map_err(corrupt)?;
        if probe.version != JOURNAL_VERSION {
            return Err(StateError::UnsupportedVersion {
                path,
                version: probe.version,
            });
        }
        let data: JournalData = serde_json::from_slice(&bytes).map_err(corrupt)?;
        Ok(Journal { path, data })
    }

    /// The journal's content.
    pub fn data(&self) -> &JournalData {
        &self.data
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
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

    /// Writes the journal atomically: a temp file (mode 0600) in the same
    /// directory, fsync, rename over `state.json`, fsync the directory. A
    /// crash at any point leaves either the old or the new journal.
    ///
    /// Blocking I/O on a file of a few KiB; cheap enough to call from async
    /// code without `spawn_blocking`.
    ///
    /// # Errors
    /// [`StateError::Io`] naming the file that could not be written.
    pub fn save(&self) -> Result<(), StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!("{STATE_FILE}.tmp-{}", std::process::id()));
        let mut body =
            serde_json::to_vec_pretty(&self.data).expect("journal data always serializes");
        body.push(b'\n');
        write_private(&tmp, &body, "write state file")?;
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("replace state file", &self.path)(e));
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync state directory", dir))
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `unix_secs` as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_utc(unix_secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = crate::clock::utc_parts(unix_secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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

    fn write_lock(dir: &StateDir, holder: &LockHolder) {
        fs::write(
            dir.path().join(LOCK_FILE),
            serde_json::to_vec(holder).unwrap(),
        )
        .unwrap();
    }

    fn holder(pid: u32, host: &str) -> LockHolder {
        LockHolder {
            pid,
            host: host.to_string(),
            command: "up".to_string(),
            started_at: 1_795_887_600,
        }
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
        assert_eq!(reloaded, journal);
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
        let guard = dir.lock("up", false).unwrap();
        for force in [false, true] {
            let err = dir.lock("down", force).unwrap_err();
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
            assert!(msg.ends_with(" UTC); wait for it to finish"), "{msg}");
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
        let err = dir.lock("up", true).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
    }

    #[test]
    fn a_stale_lock_needs_force_unlock() {
        let (_tmp, dir) = open();
        let lock = dir.path().join(LOCK_FILE);
        write_lock(&dir, &holder(DEAD_PID, &hostname()));
        let err = dir.lock("up", false).unwrap_err();
        assert!(matches!(err, StateError::StaleLock { ref holder } if holder.pid == DEAD_PID));
        assert_eq!(
            err.to_string(),
            format!(
                "stale lock: stack is locked by pid {DEAD_PID} on host {} (meshstack up, started 2026-11-28 17:40:00 UTC), \
                 but that process is gone; if no other meshstack is working on this stack, re-run with `--force-unlock`",
                hostname()
            )
        );

        let guard = dir.lock("down", true).unwrap();
        let now: LockHolder = serde_json::from_slice(&fs::read(&lock).unwrap()).unwrap();
        assert_eq!(now.pid, std::process::id());
        assert_eq!(now.command, "down");
        assert_eq!(mode(&lock), 0o600);
        drop(guard);
        assert!(!lock.exists());
    }

    #[test]
    fn an_unreadable_lock_needs_force_unlock() {
        let (_tmp, dir) = open();
        let lock = dir.path().join(LOCK_FILE);
        fs::write(&lock, "").unwrap();
        let err = dir.lock("up", false).unwrap_err();
        assert!(matches!(err, StateError::UnreadableLock { .. }), "{err}");
        assert!(err.to_string().contains("--force-unlock"));
        let _guard = dir.lock("up", true).unwrap();
    }

    #[test]
    fn dropping_a_guard_leaves_a_lock_taken_over_by_someone_else() {
        let (_tmp, dir) = open();
        let lock = dir.path().join(LOCK_FILE);
        let guard = dir.lock("up", false).unwrap();
        write_lock(&dir, &holder(DEAD_PID, &hostname()));
        drop(guard);
        assert!(lock.exists());
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
