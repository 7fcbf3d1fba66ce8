//! The upstream files the contract tests hold meshstack to (CRDs, chart defaults, Karpenter's
//! CloudFormation, Istio's MeshConfig schema), found and verified against
//! `tests/upstream/index.tsv`.
//!
//! Where they come from, first found wins: `MESHSTACK_UPSTREAM_DIR`; else
//! `../shared/upstream-schemas` beside the repository; else the cache `scripts/fetch-upstream`
//! fills (`$XDG_CACHE_HOME/meshstack/upstream`, else `~/.cache/meshstack/upstream`). With none of
//! them, or with a file missing or not matching its sha256 in the index, [`upstream`] panics
//! with a message saying how to get the files: a contract test never passes without them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// One row of the index.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path in the upstream folder, like `crds/karpenter.sh_nodepools.yaml`.
    pub file: String,
    pub repository: String,
    pub tag: String,
    pub commit: String,
    pub path: String,
    pub url: String,
    pub sha256: String,
    pub extract: String,
}

/// The verified upstream folder.
#[derive(Debug)]
pub struct Upstream {
    pub dir: PathBuf,
    /// Where the folder was found, for messages: which rule picked it.
    pub source: &'static str,
    pub entries: Vec<Entry>,
}

/// `tests/upstream/index.tsv`, parsed.
///
/// # Panics
/// On a malformed row.
pub fn index() -> Vec<Entry> {
    let path = Path::new(REPO).join("tests/upstream/index.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut header: Option<Vec<String>> = None;
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(h) = line.strip_prefix('#').filter(|h| h.starts_with("file\t")) {
            header = Some(h.split('\t').map(str::to_owned).collect());
            continue;
        }
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let header = header
            .as_ref()
            .unwrap_or_else(|| panic!("index.tsv line {}: a row before the header", n + 1));
        let cells: Vec<&str> = line.split('\t').collect();
        assert_eq!(
            cells.len(),
            header.len(),
            "index.tsv line {}: {} columns, want {}",
            n + 1,
            cells.len(),
            header.len()
        );
        let row: BTreeMap<&str, &str> = header.iter().map(String::as_str).zip(cells).collect();
        let cell = |k: &str| row.get(k).map(|s| s.to_string()).unwrap_or_default();
        entries.push(Entry {
            file: cell("file"),
            repository: cell("repository"),
            tag: cell("tag"),
            commit: cell("commit"),
            path: cell("path"),
            url: cell("url"),
            sha256: cell("sha256"),
            extract: cell("extract"),
        });
    }
    entries
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cache `scripts/fetch-upstream` fills by default.
pub fn default_cache() -> Option<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(base) => Some(PathBuf::from(base)),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")),
    }
    .map(|base| base.join("meshstack/upstream"))
}

/// How to get the files, for every failure message.
pub const HOW_TO_GET: &str = "get them with `scripts/fetch-upstream` (downloads each file of \
    tests/upstream/index.tsv into the cache the tests read, checking its sha256), or point \
    MESHSTACK_UPSTREAM_DIR at a folder laid out like it (scripts/fetch-upstream --into DIR)";

/// Which folder the rules pick, and why; `Err` says what was looked at.
pub fn locate() -> Result<(PathBuf, &'static str), String> {
    if let Some(dir) = std::env::var_os("MESHSTACK_UPSTREAM_DIR").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_dir() {
            Ok((dir, "MESHSTACK_UPSTREAM_DIR"))
        } else {
            Err(format!(
                "MESHSTACK_UPSTREAM_DIR={} is not a folder",
                dir.display()
            ))
        };
    }
    let shared = Path::new(REPO).join("../shared/upstream-schemas");
    if shared.is_dir() {
        return Ok((shared, "../shared/upstream-schemas"));
    }
    let cache = default_cache();
    match &cache {
        Some(c) if c.is_dir() => Ok((c.clone(), "the fetch-upstream cache")),
        _ => Err(format!(
            "no upstream files: MESHSTACK_UPSTREAM_DIR is not set, there is no \
             ../shared/upstream-schemas beside the repository, and the cache {} does not exist",
            cache
                .map(|c| c.display().to_string())
                .unwrap_or_else(|| "(no HOME)".into())
        )),
    }
}

/// Checks every file of the index in `dir`: present, and with the index's sha256.
pub fn verify(dir: &Path, entries: &[Entry]) -> Result<(), String> {
    let mut bad = Vec::new();
    for e in entries {
        let path = dir.join(&e.file);
        match std::fs::read(&path) {
            Err(err) => bad.push(format!("{}: {err}", e.file)),
            Ok(bytes) => {
                let got = sha256_hex(&bytes);
                if got != e.sha256 {
                    bad.push(format!(
                        "{}: sha256 {got}, the index wants {} ({} at {})",
                        e.file, e.sha256, e.path, e.tag
                    ));
                }
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("\n  "))
    }
}

/// The upstream folder, found and verified once per test binary.
///
/// # Panics
/// When no folder is found or a file is missing or differs from the index, with a message
/// saying how to get the files.
pub fn upstream() -> &'static Upstream {
    static UPSTREAM: OnceLock<Result<Upstream, String>> = OnceLock::new();
    let found = UPSTREAM.get_or_init(|| {
        let entries = index();
        let (dir, source) = locate()?;
        verify(&dir, &entries).map_err(|bad| {
            format!(
                "the upstream files in {} (from {source}) do not match tests/upstream/index.tsv:\n  {bad}",
                dir.display()
            )
        })?;
        Ok(Upstream {
            dir,
            source,
            entries,
        })
    });
    match found {
        Ok(u) => u,
        Err(why) => panic!("{why}\n{HOW_TO_GET}"),
    }
}

impl Upstream {
    /// The path of an index file, like `crds/karpenter.sh_nodepools.yaml`.
    ///
    /// # Panics
    /// When the index has no such file (a test naming a file the index does not carry).
    pub fn path(&self, file: &str) -> PathBuf {
        assert!(
            self.entries.iter().any(|e| e.file == file),
            "{file} is not in tests/upstream/index.tsv"
        );
        self.dir.join(file)
    }

    /// An index file's text.
    pub fn text(&self, file: &str) -> String {
        let path = self.path(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every YAML document of an index file, as JSON values (null documents dropped).
    pub fn yaml_documents(&self, file: &str) -> Vec<serde_json::Value> {
        use serde::Deserialize;
        let text = self.text(file);
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde_json::Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
            .filter(|v| !v.is_null())
            .collect()
    }

    /// An index file that holds one YAML (or JSON) document.
    pub fn yaml(&self, file: &str) -> serde_json::Value {
        let mut docs = self.yaml_documents(file);
        assert_eq!(docs.len(), 1, "{file}: {} documents", docs.len());
        docs.remove(0)
    }
}
