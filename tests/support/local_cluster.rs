//! The real local control plane of `scripts/local-cluster` (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok nodes in three zones, the pinned helm 3 and 4,
//! a chart repository serving the pinned chart folder: `MESHSTACK_TEST_CHARTS`, else
//! `../shared/charts`, as [`super::k8s::pinned_charts`]), started for one test and stopped
//! when the [`LocalCluster`] is dropped.
//!
//! What it does not run (kwok starts no containers) and the stand-ins it has instead are
//! listed in `testenv/README.md`: an istiod admission stand-in, a LoadBalancer address
//! controller, EKS token authentication checked against the test's moto.
//!
//! The binaries are built from pinned Go modules and cached by version (needs Go, which the
//! project's machines have): the first test to start a cluster builds what is missing, once
//! per test run (about 17 minutes cold on two cores, nothing when cached); `start` then takes
//! seconds.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running local control plane in a private folder.
pub struct LocalCluster {
    pub dir: tempfile::TempDir,
    /// What `source DIR/env` exports, `PATH` expanded: the pinned helm first.
    pub env: Vec<(String, String)>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/local-cluster")
}

/// `scripts/local-cluster build`, once per test process: tests that start clusters at the same
/// time must not build the same binaries twice. Each pinned binary's path, by name (`helm3`,
/// `kube_apiserver`, …), as the script prints them.
fn ensure_built() -> &'static std::collections::BTreeMap<String, PathBuf> {
    static BUILT: std::sync::OnceLock<Result<std::collections::BTreeMap<String, PathBuf>, String>> =
        std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let started = std::time::Instant::now();
        let out = Command::new(script())
            .arg("build")
            .output()
            .map_err(|e| format!("cannot run scripts/local-cluster: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        eprintln!(
            "local control plane binaries ready in {:?} (built or found in the cache)",
            started.elapsed()
        );
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(name, path)| (name.to_string(), PathBuf::from(path)))
            .collect())
    });
    match built {
        Ok(paths) => paths,
        Err(why) => panic!(
            "scripts/local-cluster build failed (it needs Go 1.26 and the Go module proxy):\n{why}"
        ),
    }
}

/// The pinned binary `name` (`helm3`, `helm4`, `kwok`, …), built or found in the cache.
pub fn pinned_binary(name: &str) -> PathBuf {
    ensure_built()
        .get(name)
        .unwrap_or_else(|| panic!("scripts/local-cluster build names no {name}"))
        .clone()
}

impl LocalCluster {
    /// Starts a cluster whose API server accepts the EKS tokens meshstack signs for cluster
    /// `cluster_name`, checking each against the STS of `moto_endpoint`; `helm_major` picks
    /// which pinned helm is `helm` on the `PATH` it exports.
    pub fn start_for_eks(cluster_name: &str, moto_endpoint: &str, helm_major: u8) -> LocalCluster {
        Self::start_with(
            &[
                "--cluster-name",
                cluster_name,
                "--sts-endpoint",
                moto_endpoint,
                "--aws-secret-access-key",
                "testing",
            ],
            helm_major,
        )
    }

    /// Starts a cluster reached only through its admin kubeconfig (`DIR/kubeconfig`): an
    /// existing cluster, as far as meshstack knows.
    pub fn start(helm_major: u8) -> LocalCluster {
        Self::start_with(&[], helm_major)
    }

    fn start_with(args: &[&str], helm_major: u8) -> LocalCluster {
        ensure_built();
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .args(args)
            .env("MESHSTACK_HELM_MAJOR", helm_major.to_string())
            .output()
            .expect("scripts/local-cluster runs");
        assert!(
            out.status.success(),
            "scripts/local-cluster start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.path().join("env")).unwrap();
        let env = parse_env(&text, &std::env::var("PATH").unwrap_or_default());
        LocalCluster { dir, env }
    }

    /// The value `DIR/env` exports for `key`, if it does.
    pub fn var_opt(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value `DIR/env` exports for `key`.
    pub fn var(&self, key: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{key} is not in the cluster's env"))
    }

    /// An admin client (the cluster's own admin kubeconfig), for reading what meshstack did.
    pub async fn admin(&self) -> kube::Client {
        meshstack::k8s::client::install_crypto_provider();
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.dir.path().join("kubeconfig")).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// `helm` (the pinned one this cluster put first on its PATH) with `args`, against this
    /// cluster; its stdout.
    pub fn helm(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(self.dir.path().join("bin/helm"));
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("the pinned helm runs");
        assert!(
            out.status.success(),
            "helm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Where the API server's audit log ends now (its size), for [`LocalCluster::requests_since`].
    pub fn audit_mark(&self) -> u64 {
        std::fs::metadata(self.dir.path().join("audit.log")).map_or(0, |m| m.len())
    }

    /// The requests the audit log recorded after `mark`, by client: `(user agent's product
    /// — "meshstack", "Helm", "kube-controller-manager", ... — verb)` -> count.
    pub fn requests_since(&self, mark: u64) -> std::collections::BTreeMap<(String, String), usize> {
        use std::io::{Read, Seek};
        let mut file = std::fs::File::open(self.dir.path().join("audit.log")).unwrap();
        file.seek(std::io::SeekFrom::Start(mark)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        let mut counts = std::collections::BTreeMap::new();
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue; // a line being written as we read
            };
            let agent = event["userAgent"].as_str().unwrap_or("");
            let product = agent.split('/').next().unwrap_or("").to_string();
            let verb = event["verb"].as_str().unwrap_or("").to_string();
            *counts.entry((product, verb)).or_insert(0) += 1;
        }
        counts
    }

    /// Every release helm holds, any state: `namespace/name` -> (status, revision, chart).
    pub fn releases(&self) -> std::collections::BTreeMap<String, (String, String, String)> {
        let out = self.helm(&[
            "list",
            "--deployed",
            "--failed",
            "--pending",
            "--uninstalling",
            "--superseded",
            "--uninstalled",
            "--all-namespaces",
            "--output",
            "json",
        ]);
        let list: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
        list.iter()
            .map(|r| {
                let s = |k: &str| match &r[k] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (
                    format!("{}/{}", s("namespace"), s("name")),
                    (s("status"), s("revision"), s("chart")),
                )
            })
            .collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// The `export K=V ...` lines of `DIR/env`, with `"$PATH"` replaced by `path`.
fn parse_env(text: &str, path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("export ") else {
            continue;
        };
        for assignment in rest.split_whitespace() {
            let Some((k, v)) = assignment.split_once('=') else {
                continue;
            };
            let v = v.replace("\"$PATH\"", path).replace('"', "");
            out.push((k.to_string(), v));
        }
    }
    out
}

#[test]
fn env_files_parse_as_the_shell_reads_them() {
    let env = parse_env(
        "# comment\nexport KUBECONFIG=/d/kubeconfig\nexport PATH=/d/bin:\"$PATH\"\nexport A=/a B=/b\n",
        "/usr/bin",
    );
    assert_eq!(
        env,
        [
            ("KUBECONFIG".to_string(), "/d/kubeconfig".to_string()),
            ("PATH".into(), "/d/bin:/usr/bin".into()),
            ("A".into(), "/a".into()),
            ("B".into(), "/b".into()),
        ]
    );
}
