//! The helm seam: charts are installed through the `helm` CLI (the ecosystem convention), behind
//! a trait small enough that tests can put a recording stand-in executable in its place.
//!
//! Whether a release is converged is decided from the cluster's own record of it, as helm keeps
//! it there: its status and chart version (`helm list`) and its user-supplied values (`helm get
//! values`), compared with what meshstack would pass. The journal is not consulted: a lost or
//! foreign state folder changes nothing, and `plan` and `status` (which hold no journal) see
//! what `up` sees. A converged `up` runs `helm list` and `helm get values` and nothing else
//! (no pull either).
//!
//! Every install and upgrade is of a verified file: `helm pull` into a private folder, the
//! archive's sha256 compared with the chart's pin ([`crate::charts::DIGESTS`] or the stack's
//! `charts.digests`), and only then `helm upgrade --install` of that file. A repository or
//! mirror serving other bytes for the pinned version gets nothing installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// Oldest helm meshstack supports: 3.8 made OCI registries generally available (the Karpenter
/// chart is published only there).
pub const MIN_HELM: (u64, u64) = (3, 8);

/// Where a chart comes from, pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    /// `https://...` repository URL (holding `index.yaml`), or an `oci://...` prefix under
    /// which the chart is `<repo>/<name>`.
    pub repo: String,
    pub name: String,
    pub version: String,
    /// The sha256 of the chart archive (64 lowercase hex digits) that alone may be installed;
    /// `None`: nothing to verify against, so nothing is installed.
    pub digest: Option<String>,
    /// Whether a mismatch refuses the chart. `false` only for a pin that is not upstream's
    /// archive (`charts::Provenance::Rebuilt`): upstream's honest repository serves other
    /// bytes, so a mismatch there is a warning, and the chart is installed unverified.
    pub digest_enforced: bool,
}

impl Chart {
    /// The chart argument of `helm pull` and `helm show`, and, for HTTP repositories, `--repo`.
    fn install_args(&self) -> Vec<String> {
        if self.repo.starts_with("oci://") {
            vec![format!("{}/{}", self.repo, self.name)]
        } else {
            vec![self.name.clone(), "--repo".into(), self.repo.clone()]
        }
    }

    /// How `helm list` shows an installed chart: `<name>-<version>`.
    pub fn listed_as(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

/// One release meshstack manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub chart: Chart,
    /// The values, fully rendered (written to a private temp file for the call).
    pub values: String,
    pub timeout: Duration,
    /// `--skip-crds`: the chart's `crds/` folder is left out, because another release (a
    /// CRD chart) owns those CRDs and upgrades them, which helm never does for `crds/`.
    pub skip_crds: bool,
}

impl Release {
    /// The values as data, for comparing with what helm holds (`{}` for none).
    ///
    /// # Errors
    /// [`HelmError::Output`] when the rendered values are not YAML (a template bug; the render
    /// tests parse every values file).
    pub fn values_data(&self) -> Result<serde_json::Value, HelmError> {
        let v: serde_json::Value =
            serde_yaml::from_str(&self.values).map_err(|e| HelmError::Output {
                args: format!("values of {}/{}", self.namespace, self.name),
                reason: e.to_string(),
            })?;
        Ok(empty_as_map(v))
    }
}

/// helm reports "no user-supplied values" as `null`; meshstack's empty values file is `{}`.
fn empty_as_map(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        v => v,
    }
}

/// A release as `helm list` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Listed {
    pub name: String,
    pub namespace: String,
    /// `deployed`, `failed`, `pending-install`, `pending-upgrade`, `pending-rollback`, ...
    pub status: String,
    /// `<chart>-<version>`.
    pub chart: String,
    #[serde(default)]
    pub revision: String,
}

impl Listed {
    pub fn is_pending(&self) -> bool {
        self.status.starts_with("pending-")
    }
}

/// Why a helm call failed.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    /// The binary could not be run at all.
    #[error("cannot run `{binary}`: {reason}; install helm {}.{} or newer (https://helm.sh/docs/intro/install/) or set MESHSTACK_HELM", MIN_HELM.0, MIN_HELM.1)]
    NotFound { binary: String, reason: String },
    /// helm ran and failed.
    #[error("`helm {args}` failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    /// helm's output was not what we expected.
    #[error("cannot read the output of `helm {args}`: {reason}")]
    Output { args: String, reason: String },
    /// The repository served other bytes than the pinned ones: nothing was installed.
    #[error("{0}")]
    DigestMismatch(Box<DigestMismatch>),
    /// No pinned digest for the chart: nothing was installed.
    #[error(
        "chart {chart} {version}: no pinned digest to verify it against, so it is not \
         installed; name one in the stack with `charts.digests.{chart}: sha256:<hex>`"
    )]
    NoDigest { chart: String, version: String },
}

/// A chart whose archive is not the pinned one (boxed in [`HelmError`], which stays small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestMismatch {
    pub chart: String,
    pub version: String,
    pub repository: String,
    /// `sha256:<hex>`.
    pub expected: String,
    /// `sha256:<hex>`.
    pub found: String,
}

/// A chart archive [`HelmCli::fetch_verified`] pulled.
#[derive(Debug)]
pub struct Fetched {
    pub archive: PathBuf,
    /// Its bytes differ from a pin that is not enforced: installed unverified.
    pub unverified: Option<DigestMismatch>,
}

impl DigestMismatch {
    /// The warning for a pin that is not upstream's archive: installed, unverified.
    pub fn unverified(&self) -> String {
        format!(
            "chart {} {} from {} is installed unverified: it is {}, and meshstack's pin ({}) \
             is the digest of its own rebuild of the chart, not of the archive upstream \
             published; if you trust this repository, pin what it serves with \
             `charts.digests.{}: {}` in the stack, and a later change will be refused",
            self.chart,
            self.version,
            self.repository,
            self.found,
            self.expected,
            self.chart,
            self.found
        )
    }
}

impl std::fmt::Display for DigestMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chart {} {} from {} is not the pinned chart: its sha256 is {}, the pin is {}; \
             nothing was installed (a repository or mirror must serve the pinned archive byte \
             for byte)",
            self.chart, self.version, self.repository, self.found, self.expected
        )?;
        Ok(())
    }
}

/// What meshstack needs from helm.
#[async_trait]
pub trait Helm: Send + Sync {
    /// The release, if helm knows it (in any state).
    async fn find(&self, name: &str, namespace: &str) -> Result<Option<Listed>, HelmError>;
    /// The release's user-supplied values as helm recorded them (`helm get values -o json`);
    /// `None` when helm does not know the release.
    async fn user_values(
        &self,
        name: &str,
        namespace: &str,
    ) -> Result<Option<serde_json::Value>, HelmError>;
    /// `helm upgrade --install` with `--wait`.
    async fn upgrade_install(&self, release: &Release) -> Result<(), HelmError>;
    /// `helm rollback` to the last good revision (for a release stuck pending).
    async fn rollback(&self, name: &str, namespace: &str) -> Result<(), HelmError>;
    /// `helm uninstall --wait`; a missing release is not an error.
    async fn uninstall(&self, name: &str, namespace: &str) -> Result<(), HelmError>;
}

/// The real helm CLI.
#[derive(Debug, Clone)]
pub struct HelmCli {
    pub binary: String,
    /// The kubeconfig helm uses (meshstack writes one whose user runs `meshstack token`, so no
    /// secret is on disk or in helm's argument list).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context helm uses (`--kube-context`); `None`: the kubeconfig's current one.
    pub kube_context: Option<String>,
    /// The private folder the kubeconfig is in, removed when the last clone goes.
    pub workdir: Option<Arc<tempfile::TempDir>>,
}

/// A fresh private folder: mode 0700, an unpredictable name, created exclusively (so nothing
/// another local user planted is followed or reused), removed when dropped.
///
/// # Errors
/// The folder cannot be created.
pub fn private_dir() -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    // tempfile's default is 0777 less the umask: 0755 for most users.
    tempfile::Builder::new()
        .prefix("meshstack-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
}

/// Writes `content` to a new file `name` in `dir` (mode 0600, created exclusively: an
/// existing file or symlink there is an error, never followed — `O_CREAT|O_EXCL` does not
/// follow a symlink in the last component).
///
/// # Errors
/// The file exists or cannot be written.
pub fn write_new_private(dir: &Path, name: &str, content: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    Ok(path)
}

/// Registries whose charts are public: pulled anonymously, with an empty registry config, so
/// that a stale login of the user's (an expired `public.ecr.aws` token is the classic case,
/// answered 403) cannot break the pull. Karpenter's own scripts log out of it first; this
/// leaves the user's logins alone instead.
const ANONYMOUS_REGISTRIES: [&str; 1] = ["oci://public.ecr.aws/"];

impl HelmCli {
    /// `MESHSTACK_HELM`, else `helm` from PATH.
    pub fn from_env(kubeconfig: Option<PathBuf>) -> Self {
        HelmCli {
            binary: std::env::var("MESHSTACK_HELM").unwrap_or_else(|_| "helm".into()),
            kubeconfig,
            kube_context: None,
            workdir: None,
        }
    }

    async fn run(&self, args: &[String]) -> Result<String, HelmError> {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(args);
        if let Some(k) = &self.kubeconfig {
            cmd.arg("--kubeconfig").arg(k);
        }
        if let Some(c) = &self.kube_context {
            cmd.arg("--kube-context").arg(c);
        }
        // Kept until helm is done: the empty registry config of an anonymous pull.
        let mut _anonymous = None;
        if args
            .iter()
            .any(|a| ANONYMOUS_REGISTRIES.iter().any(|r| a.starts_with(r)))
        {
            let output = |e: std::io::Error| HelmError::Output {
                args: args.join(" "),
                reason: format!("cannot write an empty registry config: {e}"),
            };
            let dir = private_dir().map_err(output)?;
            let config = write_new_private(dir.path(), "registry.json", "{}\n").map_err(output)?;
            cmd.arg("--registry-config").arg(config);
            _anonymous = Some(dir);
        }
        // `--wait` can take many minutes: an interrupted run stops waiting (and helm with it;
        // a release it leaves pending is recovered by the next `up`).
        cmd.kill_on_drop(true);
        let out = crate::retry::or_park(cmd.output())
            .await
            .map_err(|e| HelmError::NotFound {
                binary: self.binary.clone(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(HelmError::Failed {
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `helm show chart`: whether the chart's repository answers and holds the pinned version
    /// (its Chart.yaml, which names the version).
    ///
    /// # Errors
    /// [`HelmError::Failed`] with helm's own words when the repository does not answer or
    /// has no such chart or version.
    pub async fn show_chart(&self, chart: &Chart) -> Result<String, HelmError> {
        let mut args = vec!["show".to_string(), "chart".into()];
        args.extend(chart.install_args());
        args.extend(["--version".into(), chart.version.clone()]);
        self.run(&args).await
    }

    /// `helm pull` of `chart` into `dest` (an empty private folder); the archive's path.
    ///
    /// # Errors
    /// [`HelmError::Failed`] with helm's words when the repository does not answer or lacks
    /// the chart or version; [`HelmError::Output`] when helm wrote no single archive.
    pub async fn pull(&self, chart: &Chart, dest: &Path) -> Result<PathBuf, HelmError> {
        let mut args = vec!["pull".to_string()];
        args.extend(chart.install_args());
        args.extend([
            "--version".into(),
            chart.version.clone(),
            "--destination".into(),
            dest.display().to_string(),
        ]);
        self.run(&args).await?;
        // helm names the file after the repository's URL for it (`<chart>-<version>.tgz`
        // in practice, but an index may say otherwise): whatever it wrote, alone.
        let output = |reason: String| HelmError::Output {
            args: args.join(" "),
            reason,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dest)
            .map_err(|e| output(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        match files.len() {
            1 => Ok(files.remove(0)),
            n => Err(output(format!(
                "expected one chart archive in the destination, found {n}"
            ))),
        }
    }

    /// The chart pulled into `dest` and checked against its pinned digest: the archive, and
    /// the mismatch when the pin is not enforced (`Chart::digest_enforced`) and the bytes
    /// differ — installed then, unverified, with a warning.
    ///
    /// # Errors
    /// [`HelmError::NoDigest`] without a pin, [`HelmError::DigestMismatch`] when the bytes
    /// differ from an enforced pin, and [`HelmCli::pull`]'s errors.
    pub async fn fetch_verified(&self, chart: &Chart, dest: &Path) -> Result<Fetched, HelmError> {
        let Some(expected) = &chart.digest else {
            return Err(HelmError::NoDigest {
                chart: chart.name.clone(),
                version: chart.version.clone(),
            });
        };
        let archive = self.pull(chart, dest).await?;
        let found = sha256_file(&archive).map_err(|e| HelmError::Output {
            args: "pull".into(),
            reason: format!("cannot read the pulled archive {}: {e}", archive.display()),
        })?;
        if &found != expected {
            let mismatch = DigestMismatch {
                chart: chart.name.clone(),
                version: chart.version.clone(),
                repository: chart.repo.clone(),
                expected: format!("sha256:{expected}"),
                found: format!("sha256:{found}"),
            };
            if !chart.digest_enforced {
                return Ok(Fetched {
                    archive,
                    unverified: Some(mismatch),
                });
            }
            return Err(HelmError::DigestMismatch(Box::new(mismatch)));
        }
        Ok(Fetched {
            archive,
            unverified: None,
        })
    }

    /// `helm repo index DIR`: writes `DIR/index.yaml` listing every chart archive in `dir`,
    /// with URLs relative to it.
    ///
    /// # Errors
    /// helm fails.
    pub async fn repo_index(&self, dir: &Path) -> Result<(), HelmError> {
        self.run(&["repo".into(), "index".into(), dir.display().to_string()])
            .await
            .map(drop)
    }

    /// `helm version --short`.
    pub async fn version(&self) -> Result<String, HelmError> {
        Ok(self
            .run(&["version".into(), "--short".into()])
            .await?
            .trim()
            .to_string())
    }
}

/// The sha256 of a file, as 64 lowercase hex digits.
///
/// # Errors
/// The file cannot be read.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The argument list of `helm upgrade --install` for a release whose values are in `values`
/// and whose chart is the verified archive `archive`, for helm major version `major`.
///
/// The chart is a local file (pulled and checked against its digest first), so neither
/// `--repo` nor `--version` is passed: helm installs that file, whatever a repository
/// would serve now.
///
/// The apply method, conflict handling and wait are chosen explicitly, so that helm 3 and 4
/// behave alike. Helm 4 applies server-side and, by default, stops at a conflict; a field a
/// controller took over since (istiod sets its validating webhook's `failurePolicy` at run time)
/// would then fail every later upgrade, where helm 3's three-way merge simply puts the chart's
/// value back. So helm 4 gets `--server-side=true --force-conflicts` (the chart's values win,
/// as with helm 3), and `--wait=watcher` (kstatus readiness; helm 3's `--wait` checks the same
/// kinds of readiness), and never the deprecated `--atomic` (pkg/cmd/upgrade.go, flags.go at
/// helm v4.3.2).
pub fn upgrade_install_args(
    release: &Release,
    archive: &Path,
    values: &Path,
    major: u64,
) -> Vec<String> {
    let mut args = vec![
        "upgrade".to_string(),
        "--install".into(),
        release.name.clone(),
        archive.display().to_string(),
    ];
    args.extend([
        "--namespace".into(),
        release.namespace.clone(),
        "--create-namespace".into(),
        "--values".into(),
        values.display().to_string(),
    ]);
    if major >= 4 {
        args.extend([
            "--server-side=true".into(),
            "--force-conflicts".into(),
            "--wait=watcher".into(),
        ]);
    } else {
        args.push("--wait".into());
    }
    args.extend([
        "--timeout".into(),
        format!("{}s", release.timeout.as_secs()),
    ]);
    if release.skip_crds {
        args.push("--skip-crds".into());
    }
    args
}

/// The argument list of `helm list` narrowed to one release, in every state.
///
/// Every state by name, not `--all`: helm 4 dropped `--all` (its default is every state,
/// helm 3's is deployed and failed only; pkg/cmd/list.go at v3.21.4 and v4.3.2), while the
/// state flags mean the same in both. (`unknown`, which helm never sets itself, is the one
/// state they leave out.)
pub fn list_args(name: &str, namespace: &str) -> Vec<String> {
    [
        "list",
        "--deployed",
        "--failed",
        "--pending",
        "--uninstalling",
        "--superseded",
        "--uninstalled",
        "--namespace",
        namespace,
        "--filter",
        &format!("^{name}$"),
        "--output",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The argument list of `helm get values` (user-supplied values only, as JSON).
pub fn get_values_args(name: &str, namespace: &str) -> Vec<String> {
    [
        "get",
        "values",
        name,
        "--namespace",
        namespace,
        "--output",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[async_trait]
impl Helm for HelmCli {
    async fn find(&self, name: &str, namespace: &str) -> Result<Option<Listed>, HelmError> {
        let args = list_args(name, namespace);
        let out = self.run(&args).await?;
        let listed: Vec<Listed> =
            serde_json::from_str(out.trim()).map_err(|e| HelmError::Output {
                args: args.join(" "),
                reason: e.to_string(),
            })?;
        Ok(listed.into_iter().find(|l| l.name == name))
    }

    async fn user_values(
        &self,
        name: &str,
        namespace: &str,
    ) -> Result<Option<serde_json::Value>, HelmError> {
        let args = get_values_args(name, namespace);
        let out = match self.run(&args).await {
            Ok(out) => out,
            Err(HelmError::Failed { stderr, .. }) if stderr.contains("not found") => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        // JSON is YAML: the YAML parser reads helm's JSON and a stand-in's YAML alike.
        let v: serde_json::Value =
            serde_yaml::from_str(out.trim()).map_err(|e| HelmError::Output {
                args: args.join(" "),
                reason: e.to_string(),
            })?;
        Ok(Some(empty_as_map(v)))
    }

    async fn upgrade_install(&self, release: &Release) -> Result<(), HelmError> {
        // Values go to a private file: helm reads files, and `--set` would put them in argv.
        // One fresh private folder per call (calls for the same release may overlap), removed
        // when the call is done, however it ends.
        let output = |e: std::io::Error| HelmError::Output {
            args: "upgrade".into(),
            reason: format!("cannot write the values file: {e}"),
        };
        let dir = private_dir().map_err(output)?;
        let name = format!("{}-{}.yaml", release.namespace, release.name);
        let path = write_new_private(dir.path(), &name, &release.values).map_err(output)?;
        // The chart, pulled into its own empty folder beside the values and verified against
        // its pin before helm may install it; a mismatch installs nothing.
        let charts = dir.path().join("chart");
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&charts)
                .map_err(output)?;
        }
        let Fetched {
            archive,
            unverified,
        } = self.fetch_verified(&release.chart, &charts).await?;
        if let Some(mismatch) = unverified {
            eprintln!("warning: {}", mismatch.unverified());
        }
        let (major, _) = major_minor(&self.version().await?);
        self.run(&upgrade_install_args(release, &archive, &path, major))
            .await
            .map(|_| ())
    }

    async fn rollback(&self, name: &str, namespace: &str) -> Result<(), HelmError> {
        let args: Vec<String> = ["rollback", name, "--namespace", namespace, "--wait"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        self.run(&args).await.map(|_| ())
    }

    async fn uninstall(&self, name: &str, namespace: &str) -> Result<(), HelmError> {
        if self.find(name, namespace).await?.is_none() {
            return Ok(());
        }
        let args: Vec<String> = ["uninstall", name, "--namespace", namespace, "--wait"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        self.run(&args).await.map(|_| ())
    }
}

/// What `up` must do for a release, given what helm reports of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseStep {
    /// Deployed at this chart version with these values: nothing to do.
    Skip,
    /// Install or upgrade.
    Install,
    /// A killed run left it pending: roll back (it had a good revision) and install.
    RollbackThenInstall,
    /// A killed first install left it pending with no good revision, or a killed `helm
    /// uninstall` left it `uninstalling` (helm then refuses to upgrade it: "has no deployed
    /// releases", pkg/action/upgrade.go; a second `helm uninstall` finishes the job,
    /// pkg/action/uninstall.go): uninstall and install.
    UninstallThenInstall,
}

/// The pure decision behind [`ReleaseStep`]: `listed` is `helm list`'s entry, `live_values`
/// the user-supplied values helm holds for it, `wanted_values` what meshstack would pass.
pub fn decide(
    release: &Release,
    listed: Option<&Listed>,
    live_values: Option<&serde_json::Value>,
    wanted_values: &serde_json::Value,
) -> ReleaseStep {
    match listed {
        None => ReleaseStep::Install,
        Some(l) if l.is_pending() => {
            if l.status == "pending-install" || l.revision == "1" {
                ReleaseStep::UninstallThenInstall
            } else {
                ReleaseStep::RollbackThenInstall
            }
        }
        Some(l) if l.status == "uninstalling" => ReleaseStep::UninstallThenInstall,
        // Helm never leaves `unknown` in its own flows; treat it as an interrupted one.
        Some(l) if l.status == "unknown" && l.revision == "1" => ReleaseStep::UninstallThenInstall,
        Some(l) if l.status == "unknown" => ReleaseStep::RollbackThenInstall,
        Some(l)
            if l.status == "deployed"
                && l.chart == release.chart.listed_as()
                && live_values.is_some_and(|live| same_values(live, wanted_values)) =>
        {
            ReleaseStep::Skip
        }
        Some(_) => ReleaseStep::Install,
    }
}

/// Values equal as helm holds them: helm decodes values into Go's `interface{}` (every
/// number a float64) and `helm get values -o json` prints `100` for the `100.0` meshstack
/// wrote, so numbers compare by value, in both directions; everything else exactly.
pub fn same_values(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_values(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_values(v, w)))
        }
        _ => a == b,
    }
}

/// Whether `listed` could be skipped if its values match: only then are they worth reading.
pub fn values_matter(release: &Release, listed: Option<&Listed>) -> bool {
    listed.is_some_and(|l| l.status == "deployed" && l.chart == release.chart.listed_as())
}

/// `v3.14.2+gc309b6f` >= (3, 8)?
pub fn version_at_least(version: &str, min: (u64, u64)) -> bool {
    major_minor(version) >= min
}

/// `(major, minor)` of a version as `helm version --short` prints it (`v3.21.4+g5a1b...`);
/// `(0, 0)` for text without numbers.
pub fn major_minor(version: &str) -> (u64, u64) {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> Release {
        Release {
            skip_crds: false,
            name: "prom".into(),
            namespace: "prometheus".into(),
            chart: Chart {
                repo: "https://prometheus-community.github.io/helm-charts".into(),
                name: "kube-prometheus-stack".into(),
                version: "75.0.0".into(),
                digest: Some("ab".repeat(32)),
                digest_enforced: true,
            },
            values: "grafana:\n  enabled: true\n".into(),
            timeout: Duration::from_secs(600),
        }
    }

    #[test]
    fn upgrade_install_arguments_install_the_verified_file_and_wait() {
        let archive = Path::new("/p/chart/kube-prometheus-stack-75.0.0.tgz");
        let args = upgrade_install_args(&release(), archive, Path::new("/tmp/v.yaml"), 3);
        assert_eq!(
            args,
            [
                "upgrade",
                "--install",
                "prom",
                "/p/chart/kube-prometheus-stack-75.0.0.tgz",
                "--namespace",
                "prometheus",
                "--create-namespace",
                "--values",
                "/tmp/v.yaml",
                "--wait",
                "--timeout",
                "600s"
            ]
        );
        // The pull names the chart where it lives: `--repo` for HTTP, the reference for OCI.
        assert_eq!(
            release().chart.install_args(),
            [
                "kube-prometheus-stack",
                "--repo",
                "https://prometheus-community.github.io/helm-charts"
            ]
        );
        let mut oci = release();
        oci.chart.repo = "oci://public.ecr.aws/karpenter".into();
        oci.chart.name = "karpenter".into();
        assert_eq!(
            oci.chart.install_args(),
            ["oci://public.ecr.aws/karpenter/karpenter"]
        );
        assert_eq!(oci.chart.listed_as(), "karpenter-75.0.0");
        // Helm 4: server-side apply chosen outright, conflicts forced, kstatus wait.
        let four = upgrade_install_args(&release(), archive, Path::new("/v"), 4);
        for flag in ["--server-side=true", "--force-conflicts", "--wait=watcher"] {
            assert!(four.contains(&flag.to_string()), "{four:?}");
        }
        assert!(!four.contains(&"--wait".to_string()), "{four:?}");
        assert!(!four.iter().any(|a| a == "--atomic"), "{four:?}");
    }

    #[test]
    fn sha256_of_a_file() {
        let dir = private_dir().unwrap();
        let path = write_new_private(dir.path(), "x", "abc").unwrap();
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn values_compare_by_value_as_helm_stores_them() {
        // istiod's `sampling: 100.0`, as helm prints it back (`100`), and the other way.
        let ours: serde_json::Value = serde_yaml::from_str(
            "meshConfig:\n  defaultConfig:\n    tracing:\n      sampling: 100.0\n",
        )
        .unwrap();
        let helms: serde_json::Value = serde_json::from_str(
            r#"{"meshConfig":{"defaultConfig":{"tracing":{"sampling":100}}}}"#,
        )
        .unwrap();
        assert_ne!(ours, helms, "serde_json tells 100 from 100.0");
        assert!(same_values(&ours, &helms));
        assert!(same_values(&helms, &ours));
        let half: serde_json::Value = serde_json::json!({"a": [1, 2.5, "x"]});
        assert!(same_values(
            &half,
            &serde_json::json!({"a": [1.0, 2.5, "x"]})
        ));
        assert!(!same_values(&half, &serde_json::json!({"a": [1, 2.5]})));
        assert!(!same_values(
            &half,
            &serde_json::json!({"a": [1, 2.5, "x"], "b": 1})
        ));
        assert!(!same_values(
            &serde_json::json!("100"),
            &serde_json::json!(100)
        ));
    }

    #[test]
    fn decisions_follow_what_helm_holds() {
        let r = release();
        let wanted = r.values_data().unwrap();
        let listed = |status: &str, chart: &str, rev: &str| Listed {
            name: "prom".into(),
            namespace: "prometheus".into(),
            status: status.into(),
            chart: chart.into(),
            revision: rev.into(),
        };
        let deployed = listed("deployed", "kube-prometheus-stack-75.0.0", "3");
        assert_eq!(decide(&r, None, None, &wanted), ReleaseStep::Install);
        assert_eq!(
            decide(&r, Some(&deployed), Some(&wanted), &wanted),
            ReleaseStep::Skip
        );
        // The same values however helm writes them back (JSON, other key order).
        let from_helm: serde_json::Value =
            serde_yaml::from_str(r#"{"grafana": {"enabled": true}}"#).unwrap();
        assert_eq!(
            decide(&r, Some(&deployed), Some(&from_helm), &wanted),
            ReleaseStep::Skip
        );
        let other: serde_json::Value = serde_json::json!({"grafana": {"enabled": false}});
        assert_eq!(
            decide(&r, Some(&deployed), Some(&other), &wanted),
            ReleaseStep::Install,
            "values changed"
        );
        assert_eq!(
            decide(&r, Some(&deployed), None, &wanted),
            ReleaseStep::Install,
            "values unknown"
        );
        let old = listed("deployed", "kube-prometheus-stack-74.0.0", "3");
        assert!(!values_matter(&r, Some(&old)));
        assert_eq!(
            decide(&r, Some(&old), Some(&wanted), &wanted),
            ReleaseStep::Install,
            "chart version changed"
        );
        let failed = listed("failed", "kube-prometheus-stack-75.0.0", "3");
        assert_eq!(
            decide(&r, Some(&failed), Some(&wanted), &wanted),
            ReleaseStep::Install
        );
        let stuck = listed("pending-upgrade", "kube-prometheus-stack-75.0.0", "4");
        assert_eq!(
            decide(&r, Some(&stuck), Some(&wanted), &wanted),
            ReleaseStep::RollbackThenInstall
        );
        let first = listed("pending-install", "kube-prometheus-stack-75.0.0", "1");
        assert_eq!(
            decide(&r, Some(&first), None, &wanted),
            ReleaseStep::UninstallThenInstall
        );
        // A `down` killed inside `helm uninstall`.
        let uninstalling = listed("uninstalling", "kube-prometheus-stack-75.0.0", "3");
        assert_eq!(
            decide(&r, Some(&uninstalling), Some(&wanted), &wanted),
            ReleaseStep::UninstallThenInstall
        );
        let unknown = listed("unknown", "kube-prometheus-stack-75.0.0", "2");
        assert_eq!(
            decide(&r, Some(&unknown), Some(&wanted), &wanted),
            ReleaseStep::RollbackThenInstall
        );
        // No user-supplied values: helm says null, meshstack's empty file is {}.
        let mut bare = release();
        bare.values = "{}\n".into();
        assert_eq!(
            decide(
                &bare,
                Some(&deployed),
                Some(&empty_as_map(serde_json::Value::Null)),
                &bare.values_data().unwrap()
            ),
            ReleaseStep::Skip
        );
    }

    #[test]
    fn helm_versions() {
        for (v, ok) in [
            ("v3.14.2+gc309b6f", true),
            ("v3.8.0", true),
            ("v3.7.9", false),
            ("v2.17.0", false),
            ("v4.0.1", true),
            ("garbage", false),
        ] {
            assert_eq!(version_at_least(v, MIN_HELM), ok, "{v}");
        }
    }

    #[test]
    fn helm_list_output_parses() {
        let out = r#"[{"name":"prom","namespace":"prometheus","revision":"2","updated":"2026-11-28 10:00:00.0 +0000 UTC","status":"deployed","chart":"kube-prometheus-stack-75.0.0","app_version":"v0.83.0"}]"#;
        let listed: Vec<Listed> = serde_json::from_str(out).unwrap();
        assert_eq!(listed[0].chart, "kube-prometheus-stack-75.0.0");
        assert!(!listed[0].is_pending());
    }
}
