//! The user's kubeconfig: merging in a context for the stack's cluster whose user runs
//! `meshstack token` as an exec credential plugin, without disturbing anything else in the file.
//!
//! The file is someone else's: other tools' clusters, users, contexts and keys meshstack does
//! not know (`preferences`, `extensions`, ...) must survive. So the merge works on a
//! `serde_yaml::Value` rather than a struct that would drop what it does not model; the one loss
//! is comments, which serde_yaml cannot keep. The write is atomic (a temporary file renamed
//! over the old one) and the file is private (0600): it names credentials helpers and, for
//! other entries, often holds credentials outright.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::token::EXEC_CREDENTIAL_API_VERSION;

/// One cluster's access, as written into a kubeconfig. The cluster entry, the user entry and
/// the context all carry [`name`](Self::name), so they are easy to find and to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigEntry {
    /// Name of the context (and of its cluster and user entries).
    pub name: String,
    /// The API server URL (`https://...`).
    pub server: String,
    /// The cluster CA, base64 PEM, as EKS reports it.
    pub certificate_authority_data: String,
    /// The credential plugin the user entry runs.
    pub exec: ExecPlugin,
}

/// A kubeconfig `user.exec` stanza (client.authentication.k8s.io/v1beta1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPlugin {
    /// The program; an absolute path works without PATH changes.
    pub command: String,
    pub args: Vec<String>,
    /// Extra environment for the plugin, `(name, value)`.
    pub env: Vec<(String, String)>,
}

impl ExecPlugin {
    /// `<command> token --cluster <cluster> --region <region>`: `meshstack token` for an EKS
    /// cluster.
    pub fn meshstack_token(command: impl Into<String>, cluster: &str, region: &str) -> Self {
        ExecPlugin {
            command: command.into(),
            args: ["token", "--cluster", cluster, "--region", region]
                .map(String::from)
                .to_vec(),
            env: Vec::new(),
        }
    }

    /// The same plugin signing as `role_arn` (`meshstack token --role-arn`), assumed with the
    /// caller's own credentials.
    pub fn assuming(mut self, role_arn: &str) -> Self {
        self.args
            .extend(["--role-arn".to_string(), role_arn.to_string()]);
        self
    }

    /// `aws --region <region> eks get-token --cluster-name <cluster> --output json`, the
    /// plugin `aws eks update-kubeconfig` writes; with `role_arn`, the token is for that role
    /// (`--role-arn`), as for a fleet environment built in another account.
    pub fn aws_eks_get_token(cluster: &str, region: &str, role_arn: Option<&str>) -> Self {
        let mut args: Vec<String> = [
            "--region",
            region,
            "eks",
            "get-token",
            "--cluster-name",
            cluster,
            "--output",
            "json",
        ]
        .map(String::from)
        .to_vec();
        if let Some(role) = role_arn {
            args.extend(["--role-arn".to_string(), role.to_string()]);
        }
        ExecPlugin {
            command: "aws".into(),
            args,
            env: Vec::new(),
        }
    }
}

/// Why the kubeconfig could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// The existing file is not YAML; it is left as it is.
    #[error("the kubeconfig is not valid YAML; fix or move it, or pass --kubeconfig")]
    Parse(#[source] serde_yaml::Error),
    /// The existing file is YAML but not a kubeconfig (its top level is not a mapping).
    #[error("the kubeconfig's top level is not a mapping; fix or move it, or pass --kubeconfig")]
    NotAMapping,
    /// A section that must be a list (`clusters`, `users`, `contexts`) is something else.
    #[error("the kubeconfig's `{0}` is not a list; fix or move the file, or pass --kubeconfig")]
    NotAList(&'static str),
    /// The merged document could not be serialized.
    #[error("cannot serialize the kubeconfig")]
    Serialize(#[source] serde_yaml::Error),
    /// Neither `--kubeconfig`, `KUBECONFIG` nor `HOME` names a file.
    #[error("no kubeconfig path: neither KUBECONFIG nor HOME is set; pass --kubeconfig")]
    NoPath,
    /// Reading the existing file failed (other than it not existing).
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Creating the folder, writing the temporary file or renaming it failed; the previous file,
    /// if any, is unchanged.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The file kubectl would write to: the first entry of `KUBECONFIG`, else `~/.kube/config`.
pub fn default_path() -> Result<PathBuf, KubeconfigError> {
    default_path_from(
        std::env::var_os("KUBECONFIG").as_deref(),
        std::env::var_os("HOME").as_deref(),
    )
    .ok_or(KubeconfigError::NoPath)
}

fn default_path_from(kubeconfig: Option<&OsStr>, home: Option<&OsStr>) -> Option<PathBuf> {
    // kubectl writes new entries to the first file of the list.
    if let Some(first) = kubeconfig
        .into_iter()
        .flat_map(std::env::split_paths)
        .find(|p| !p.as_os_str().is_empty())
    {
        return Some(first);
    }
    home.filter(|h| !h.is_empty())
        .map(|h| Path::new(h).join(".kube").join("config"))
}

fn key(k: &str) -> Value {
    Value::String(k.to_string())
}

fn named(name: &str, field: &str, body: Mapping) -> Value {
    let mut m = Mapping::new();
    m.insert(key("name"), key(name));
    m.insert(key(field), Value::Mapping(body));
    Value::Mapping(m)
}

impl KubeconfigEntry {
    fn cluster_item(&self) -> Value {
        let mut c = Mapping::new();
        c.insert(
            key("certificate-authority-data"),
            key(&self.certificate_authority_data),
        );
        c.insert(key("server"), key(&self.server));
        named(&self.name, "cluster", c)
    }

    fn user_item(&self) -> Value {
        let mut exec = Mapping::new();
        exec.insert(key("apiVersion"), key(EXEC_CREDENTIAL_API_VERSION));
        exec.insert(key("command"), key(&self.exec.command));
        exec.insert(
            key("args"),
            Value::Sequence(self.exec.args.iter().map(|a| key(a)).collect()),
        );
        if !self.exec.env.is_empty() {
            let env = self
                .exec
                .env
                .iter()
                .map(|(n, v)| {
                    let mut e = Mapping::new();
                    e.insert(key("name"), key(n));
                    e.insert(key("value"), key(v));
                    Value::Mapping(e)
                })
                .collect();
            exec.insert(key("env"), Value::Sequence(env));
        }
        // The token never asks for input; kubectl then runs it even without a terminal.
        exec.insert(key("interactiveMode"), key("Never"));
        exec.insert(key("provideClusterInfo"), Value::Bool(false));
        let mut user = Mapping::new();
        user.insert(key("exec"), Value::Mapping(exec));
        named(&self.name, "user", user)
    }

    fn context_item(&self) -> Value {
        let mut c = Mapping::new();
        c.insert(key("cluster"), key(&self.name));
        c.insert(key("user"), key(&self.name));
        named(&self.name, "context", c)
    }
}

/// Replace the item named `name` in `list` (keeping its position), or append it. Duplicates of
/// the name — which kubectl would never write — go, so exactly one remains.
fn upsert(list: &mut Vec<Value>, name: &str, item: Value) {
    let is_ours = |v: &Value| v.get("name").and_then(Value::as_str) == Some(name);
    match list.iter().position(is_ours) {
        Some(i) => {
            list[i] = item;
            let mut seen = 0;
            list.retain(|v| {
                if is_ours(v) {
                    seen += 1;
                    seen == 1
                } else {
                    true
                }
            });
        }
        None => list.push(item),
    }
}

fn parse(existing: Option<&str>) -> Result<Mapping, KubeconfigError> {
    let text = existing.unwrap_or("");
    match serde_yaml::from_str::<Value>(text).map_err(KubeconfigError::Parse)? {
        // An empty file (or one of only comments) is an empty kubeconfig, as for kubectl.
        Value::Null => Ok(Mapping::new()),
        Value::Mapping(m) => Ok(m),
        _ => Err(KubeconfigError::NotAMapping),
    }
}

/// `existing` (the file's text, `None` if there is no file) with `entry`'s cluster, user and
/// context added or replaced.
///
/// # Guarantees
/// - Clusters, users and contexts with other names are kept, in their order, unchanged;
///   same-named ones are replaced in place.
/// - `current-context` is set to the entry only when there was none (absent or empty):
///   meshstack does not switch a user's kubectl to another cluster behind their back.
/// - Every other top-level key is kept (comments are not: serde_yaml drops them).
///
/// # Errors
/// When `existing` is not YAML, not a mapping, or holds a `clusters`/`users`/`contexts` that is
/// not a list; the caller then must leave the file alone.
pub fn merge(existing: Option<&str>, entry: &KubeconfigEntry) -> Result<String, KubeconfigError> {
    let mut doc = parse(existing)?;
    let fresh = doc.is_empty();
    if fresh {
        // kubectl's own layout of a new file.
        doc.insert(key("apiVersion"), key("v1"));
        doc.insert(key("clusters"), Value::Sequence(Vec::new()));
        doc.insert(key("contexts"), Value::Sequence(Vec::new()));
        doc.insert(key("current-context"), key(""));
        doc.insert(key("kind"), key("Config"));
        doc.insert(key("preferences"), Value::Mapping(Mapping::new()));
        doc.insert(key("users"), Value::Sequence(Vec::new()));
    }
    for (k, v) in [("apiVersion", "v1"), ("kind", "Config")] {
        if !doc.contains_key(k) {
            doc.insert(key(k), key(v));
        }
    }
    for (section, item) in [
        ("clusters", entry.cluster_item()),
        ("users", entry.user_item()),
        ("contexts", entry.context_item()),
    ] {
        let slot = doc
            .entry(key(section))
            .or_insert(Value::Sequence(Vec::new()));
        if slot.is_null() {
            // kubectl writes `users: null` for an empty section.
            *slot = Value::Sequence(Vec::new());
        }
        let Value::Sequence(list) = slot else {
            return Err(KubeconfigError::NotAList(section));
        };
        upsert(list, &entry.name, item);
    }
    let current = doc.get("current-context").and_then(Value::as_str);
    if current.is_none_or(str::is_empty) {
        doc.insert(key("current-context"), key(&entry.name));
    }
    serde_yaml::to_string(&Value::Mapping(doc)).map_err(KubeconfigError::Serialize)
}

/// The `current-context` of a kubeconfig's text, if it names one.
pub fn current_context(text: &str) -> Result<Option<String>, KubeconfigError> {
    Ok(parse(Some(text))?
        .get("current-context")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_string))
}

/// The file's text, or `None` if it does not exist.
pub fn read(path: &Path) -> Result<Option<String>, KubeconfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KubeconfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replace `path`'s contents atomically: write a private (0600) temporary file next to it, then
/// rename it over the old one, so a reader (or a crash) sees the old file or the new one, never
/// half of one. A missing folder is created private (0700), as kubectl creates `~/.kube`. A
/// symlinked kubeconfig (dotfile managers) is written through to its target, not replaced.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), KubeconfigError> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let write_err = |source| KubeconfigError::Write {
        path: target.clone(),
        source,
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(write_err)?;
    }
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{file_name}.meshstack-{}.tmp", std::process::id()));
    // A leftover of a killed run with the same pid would make create_new fail.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        // The umask can only take bits away, but say exactly what we mean.
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> KubeconfigEntry {
        KubeconfigEntry {
            name: name.into(),
            server: "https://ABC.gr7.us-east-1.eks.amazonaws.com".into(),
            certificate_authority_data: "LS0tLS1CRUdJTg==".into(),
            exec: ExecPlugin::meshstack_token("/usr/local/bin/meshstack", "demo", "us-east-1"),
        }
    }

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    fn names(doc: &Value, section: &str) -> Vec<String> {
        doc[section]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn item<'a>(doc: &'a Value, section: &str, name: &str) -> &'a Value {
        doc[section]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no {section} entry {name}"))
    }

    const OTHER: &str = r#"apiVersion: v1
kind: Config
clusters:
- name: kind-dev
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
users:
- name: kind-dev
  user:
    token: secret
contexts:
- name: kind-dev
  context:
    cluster: kind-dev
    user: kind-dev
    namespace: work
current-context: kind-dev
preferences:
  colors: true
extensions:
- name: something
  extension: {a: 1}
"#;

    #[test]
    fn into_nothing_writes_a_complete_kubeconfig() {
        for existing in [None, Some(""), Some("# only a comment\n"), Some("null\n")] {
            let doc = yaml(&merge(existing, &entry("demo")).unwrap());
            assert_eq!(doc["apiVersion"], "v1", "{existing:?}");
            assert_eq!(doc["kind"], "Config");
            assert_eq!(doc["current-context"], "demo");
            let c = item(&doc, "clusters", "demo");
            assert_eq!(
                c["cluster"]["server"],
                "https://ABC.gr7.us-east-1.eks.amazonaws.com"
            );
            assert_eq!(
                c["cluster"]["certificate-authority-data"],
                "LS0tLS1CRUdJTg=="
            );
            let exec = &item(&doc, "users", "demo")["user"]["exec"];
            assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1beta1");
            assert_eq!(exec["command"], "/usr/local/bin/meshstack");
            assert_eq!(
                exec["args"],
                yaml("[token, --cluster, demo, --region, us-east-1]")
            );
            assert_eq!(exec["interactiveMode"], "Never");
            assert!(exec.get("env").is_none());
            let ctx = &item(&doc, "contexts", "demo")["context"];
            assert_eq!(ctx["cluster"], "demo");
            assert_eq!(ctx["user"], "demo");
        }
    }

    #[test]
    fn other_entries_and_unknown_keys_are_kept() {
        let out = merge(Some(OTHER), &entry("demo")).unwrap();
        let doc = yaml(&out);
        for section in ["clusters", "users", "contexts"] {
            assert_eq!(names(&doc, section), ["kind-dev", "demo"], "{section}");
        }
        let before = yaml(OTHER);
        for section in ["clusters", "users", "contexts"] {
            assert_eq!(
                item(&doc, section, "kind-dev"),
                item(&before, section, "kind-dev")
            );
        }
        assert_eq!(doc["preferences"], before["preferences"]);
        assert_eq!(doc["extensions"], before["extensions"]);
        // An existing current context is not switched.
        assert_eq!(doc["current-context"], "kind-dev");
        assert_eq!(current_context(&out).unwrap().as_deref(), Some("kind-dev"));
    }

    #[test]
    fn same_named_entries_are_replaced_in_place() {
        let mut e = entry("kind-dev");
        e.server = "https://new.example".into();
        let doc = yaml(&merge(Some(OTHER), &e).unwrap());
        for section in ["clusters", "users", "contexts"] {
            assert_eq!(names(&doc, section), ["kind-dev"], "{section}");
        }
        let c = &item(&doc, "clusters", "kind-dev")["cluster"];
        assert_eq!(c["server"], "https://new.example");
        assert!(
            c.get("insecure-skip-tls-verify").is_none(),
            "replaced whole"
        );
        assert!(item(&doc, "users", "kind-dev")["user"]
            .get("token")
            .is_none());

        // Merging twice is merging once.
        let once = merge(Some(OTHER), &entry("demo")).unwrap();
        let twice = merge(Some(&once), &entry("demo")).unwrap();
        assert_eq!(once, twice);

        // Duplicates (hand-edited files) collapse to one, at the first one's place.
        let dup = "contexts:\n- name: demo\n- name: x\n- name: demo\n";
        let doc = yaml(&merge(Some(dup), &entry("demo")).unwrap());
        assert_eq!(names(&doc, "contexts"), ["demo", "x"]);
    }

    #[test]
    fn current_context_is_set_only_when_there_is_none() {
        for (existing, want) in [
            ("current-context: other\n", "other"),
            ("current-context: \"\"\n", "demo"),
            ("current-context: null\n", "demo"),
            ("clusters: []\n", "demo"),
            ("current-context: demo\n", "demo"),
        ] {
            let out = merge(Some(existing), &entry("demo")).unwrap();
            assert_eq!(yaml(&out)["current-context"], want, "{existing}");
            assert_eq!(current_context(&out).unwrap().as_deref(), Some(want));
        }
    }

    #[test]
    fn null_sections_become_lists() {
        let doc = yaml(&merge(Some("clusters: null\nusers:\ncontexts: ~\n"), &entry("d")).unwrap());
        for section in ["clusters", "users", "contexts"] {
            assert_eq!(names(&doc, section), ["d"]);
        }
    }

    #[test]
    fn exec_env_is_written_when_given() {
        let mut e = entry("demo");
        e.exec.env = vec![("AWS_PROFILE".into(), "work".into())];
        let doc = yaml(&merge(None, &e).unwrap());
        assert_eq!(
            item(&doc, "users", "demo")["user"]["exec"]["env"],
            yaml("[{name: AWS_PROFILE, value: work}]")
        );
    }

    #[test]
    fn files_that_are_not_kubeconfigs_are_refused() {
        for (text, check) in [
            (
                "a: [unclosed\n",
                (|e: &KubeconfigError| matches!(e, KubeconfigError::Parse(_)))
                    as fn(&KubeconfigError) -> bool,
            ),
            ("- a\n- b\n", |e| matches!(e, KubeconfigError::NotAMapping)),
            ("clusters: {a: 1}\n", |e| {
                matches!(e, KubeconfigError::NotAList("clusters"))
            }),
            ("users: text\n", |e| {
                matches!(e, KubeconfigError::NotAList("users"))
            }),
        ] {
            let err = merge(Some(text), &entry("demo")).unwrap_err();
            assert!(check(&err), "{text:?}: {err:?}");
        }
    }

    #[test]
    fn default_path_follows_kubectl() {
        let p = |k: Option<&str>, h: Option<&str>| {
            default_path_from(k.map(OsStr::new), h.map(OsStr::new))
        };
        assert_eq!(
            p(Some("/a/one:/b/two"), Some("/home/u")),
            Some(PathBuf::from("/a/one"))
        );
        assert_eq!(
            p(Some(":/b/two"), Some("/home/u")),
            Some(PathBuf::from("/b/two"))
        );
        assert_eq!(
            p(Some(""), Some("/home/u")),
            Some(PathBuf::from("/home/u/.kube/config"))
        );
        assert_eq!(
            p(None, Some("/home/u")),
            Some(PathBuf::from("/home/u/.kube/config"))
        );
        assert_eq!(p(None, None), None);
        assert_eq!(p(None, Some("")), None);
    }

    #[cfg(unix)]
    #[test]
    fn writes_are_private_atomic_and_follow_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        // A missing ~/.kube is created 0700, the file 0600.
        let path = dir.path().join("home/.kube/config");
        write_atomic(&path, "a: 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a: 1\n");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        // An existing world-readable file ends up private; no temporary file is left.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, "b: 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b: 2\n");
        assert_eq!(mode(&path), 0o600);
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [OsStr::new("config")]);

        // A symlink stays a symlink; its target gets the new text.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        write_atomic(&link, "c: 3\n").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c: 3\n");

        assert_eq!(read(&dir.path().join("missing")).unwrap(), None);
    }
}
