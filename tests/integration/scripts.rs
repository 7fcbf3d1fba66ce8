//! The repository's own commands, `scripts/test` and `.ci/run`, run from a copy of the
//! repository in an empty folder (a newcomer's fresh clone, with nothing beside it).
//!
//! What the copy does not model: `cargo` is a stand-in on PATH that records the environment it
//! was started with (the real one would run every test) and whose `build` links the binary
//! these tests run as `target/debug/meshstack` (the real one would compile it), `.venv/` is a
//! link to this repository's (the real script would install it), helm is the pinned helm 3
//! named by `MESHSTACK_HELM` (the real script builds it with `scripts/local-cluster build`),
//! and the internet is a `file://` mirror of the upstream files laid out like
//! raw.githubusercontent.com (`MESHSTACK_UPSTREAM_MIRROR`) and a local chart repository
//! standing in for the charts' own (`MESHSTACK_TEST_CHARTS_FROM`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::upstream::{upstream, verify};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A copy of what the two commands read, in `<tmp>/clone`, with `<tmp>` otherwise empty.
struct Clone {
    tmp: tempfile::TempDir,
}

impl Clone {
    fn new() -> Clone {
        let tmp = tempfile::tempdir().unwrap();
        let clone = tmp.path().join("clone");
        for file in [
            "scripts/test",
            "scripts/fetch-upstream",
            "scripts/lib/moto-venv.sh",
            ".ci/run",
            "tests/upstream/index.tsv",
        ] {
            let to = clone.join(file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(Path::new(REPO).join(file), &to).unwrap();
        }
        let venv = std::fs::canonicalize(Path::new(REPO).join(".venv")).unwrap();
        std::os::unix::fs::symlink(venv, clone.join(".venv")).unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let cargo = bin.join("cargo");
        std::fs::write(
            &cargo,
            "#!/bin/sh\necho \"cargo $*\" >> \"$CARGO_LOG\"\n\
             echo \"MESHSTACK_UPSTREAM_DIR=${MESHSTACK_UPSTREAM_DIR:-}\" >> \"$CARGO_LOG\"\n\
             echo \"MESHSTACK_TEST_CHARTS=${MESHSTACK_TEST_CHARTS:-}\" >> \"$CARGO_LOG\"\n\
             if [ \"$1\" = build ]; then mkdir -p target/debug && \
             ln -sf \"$MESHSTACK_BIN\" target/debug/meshstack; fi\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        Clone { tmp }
    }

    fn path(&self) -> PathBuf {
        self.tmp.path().join("clone")
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }

    /// What the stand-in `cargo` recorded ("" when it did not run).
    fn cargo_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("cargo.log")).unwrap_or_default()
    }

    /// Runs `command` (relative to the clone) with a clean environment for these knobs.
    fn run(&self, command: &str, env: &[(&str, &str)]) -> Output {
        self.run_without(command, env, &[])
    }

    /// [`Clone::run`], with the variables in `unset` unset after `env` is applied.
    fn run_without(&self, command: &str, env: &[(&str, &str)], unset: &[&str]) -> Output {
        let path = format!(
            "{}:{}",
            self.tmp.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(self.path().join(command));
        cmd.current_dir(self.path())
            .env("PATH", path)
            .env("HOME", self.home())
            .env("CARGO_LOG", self.tmp.path().join("cargo.log"))
            .env("MESHSTACK_NO_BROWSER", "1")
            .env("MESHSTACK_BIN", env!("CARGO_BIN_EXE_meshstack"))
            // The tests that are not about charts give the pinned folder.
            .env(
                "MESHSTACK_TEST_CHARTS",
                crate::support::k8s::pinned_charts(),
            )
            .env_remove("XDG_CACHE_HOME")
            .env_remove("MESHSTACK_CACHE")
            .env_remove("MESHSTACK_UPSTREAM_DIR")
            .env_remove("MESHSTACK_UPSTREAM_MIRROR")
            .env_remove("MESHSTACK_TEST_CHARTS_FROM")
            .env_remove("MESHSTACK_CHART_MIRROR")
            .env_remove("MESHSTACK_HELM")
            .env_remove("MESHSTACK_BLESS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        for k in unset {
            cmd.env_remove(k);
        }
        cmd.output().unwrap()
    }
}

/// A mirror of the upstream files laid out like raw.githubusercontent.com
/// (`<owner>/<repo>/<commit>/<path>`). An extract row's mirror file is the extract itself,
/// which the script's extraction reproduces byte for byte.
fn mirror() -> tempfile::TempDir {
    let up = upstream();
    let mirror = tempfile::tempdir().unwrap();
    for e in &up.entries {
        let to = mirror
            .path()
            .join(&e.repository)
            .join(&e.commit)
            .join(&e.path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(up.path(&e.file), to).unwrap();
    }
    mirror
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn scripts_test_on_a_fresh_clone_fetches_the_upstream_files_and_says_so() {
    let clone = Clone::new();
    let mirror = mirror();
    let url = format!("file://{}", mirror.path().display());
    let out = clone.run("scripts/test", &[("MESHSTACK_UPSTREAM_MIRROR", &url)]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cache = clone.home().join(".cache/meshstack/upstream");
    assert!(
        stderr.contains("running scripts/fetch-upstream") && stderr.contains("fetched"),
        "{}",
        text(&out)
    );
    verify(&cache, &upstream().entries).unwrap();
    let log = clone.cargo_log();
    assert!(
        log.contains(&format!("MESHSTACK_UPSTREAM_DIR={}", cache.display())),
        "the tests are pointed at the files fetched: {log}"
    );

    // Again: nothing to download, the same folder, no network needed.
    let offline = format!("file://{}", clone.home().join("nowhere").display());
    let out = clone.run("scripts/test", &[("MESHSTACK_UPSTREAM_MIRROR", &offline)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0 fetched"),
        "{}",
        text(&out)
    );
}

/// With no chart folder (no `MESHSTACK_TEST_CHARTS`, no `../shared/charts`), `scripts/test`
/// mirrors every pinned chart version into the cache with `meshstack charts mirror`, says so,
/// and points the tests at it; again, with the repository gone, nothing is downloaded.
#[test]
fn scripts_test_on_a_fresh_clone_mirrors_the_pinned_charts_and_says_so() {
    let clone = Clone::new();
    let repo = crate::support::chart_repo::ChartRepo::tampered(&[]);
    let helm = crate::support::local_cluster::pinned_binary("helm3")
        .display()
        .to_string();
    let upstream_dir = upstream().dir.display().to_string();
    let env = [
        ("MESHSTACK_UPSTREAM_DIR", upstream_dir.as_str()),
        ("MESHSTACK_HELM", helm.as_str()),
        ("MESHSTACK_TEST_CHARTS_FROM", repo.url.as_str()),
    ];
    let out = clone.run_without("scripts/test", &env, &["MESHSTACK_TEST_CHARTS"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cache = clone.home().join(".cache/meshstack/charts");
    assert!(
        stderr.contains("there is no ../shared/charts")
            && stderr.contains(&format!(
                "pinned charts: {} (from a mirror of the charts' own repositories)",
                cache.display()
            )),
        "{}",
        text(&out)
    );
    let served = meshstack::charts::DIGESTS.len();
    assert!(
        stderr.contains(&format!("index.yaml: written ({served} chart archives")),
        "{}",
        text(&out)
    );
    // Every pinned version, byte for byte what the repository served, indexed.
    let index = std::fs::read_to_string(cache.join("index.yaml")).unwrap();
    for known in meshstack::charts::DIGESTS {
        let file = format!("{}-{}.tgz", known.chart, known.version);
        let digest = repo.digest(&file);
        assert_eq!(
            crate::support::chart_repo::sha256(&std::fs::read(cache.join(&file)).unwrap()),
            digest,
            "{file}"
        );
        assert!(index.contains(&digest), "{file} not indexed: {index}");
    }
    let log = clone.cargo_log();
    assert!(
        log.contains(&format!("MESHSTACK_TEST_CHARTS={}", cache.display())),
        "the tests are pointed at the mirror: {log}"
    );

    // Again, with the repository unreachable: nothing is pulled. Every archive is kept: it is
    // its pin, or (upstream's archives) a rebuilt pin's chart, which a re-pull verifies no better.
    let gone = [
        ("MESHSTACK_UPSTREAM_DIR", upstream_dir.as_str()),
        ("MESHSTACK_HELM", helm.as_str()),
        ("MESHSTACK_TEST_CHARTS_FROM", "http://127.0.0.1:1/"),
    ];
    let out = clone.run_without("scripts/test", &gone, &["MESHSTACK_TEST_CHARTS"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("\nkept ").count(), served, "{}", text(&out));
    assert!(stderr.contains("index.yaml: up to date"), "{}", text(&out));

    // A repository serving other bytes than an enforced pin (kiali's is upstream's archive):
    // scripts/test stops before the tests, saying why.
    let clone = Clone::new();
    let tampered = crate::support::chart_repo::ChartRepo::tampered(&["kiali-operator"]);
    let env = [
        ("MESHSTACK_UPSTREAM_DIR", upstream_dir.as_str()),
        ("MESHSTACK_HELM", helm.as_str()),
        ("MESHSTACK_TEST_CHARTS_FROM", tampered.url.as_str()),
    ];
    let out = clone.run_without("scripts/test", &env, &["MESHSTACK_TEST_CHARTS"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("REFUSED    kiali-operator 1.73.2")
            && stderr.contains("the pinned charts could not be mirrored"),
        "{}",
        text(&out)
    );
    assert!(
        !clone.cargo_log().contains("cargo test"),
        "no test ran: {}",
        clone.cargo_log()
    );
}

#[test]
fn scripts_test_without_the_upstream_files_stops_before_the_tests_saying_why() {
    let clone = Clone::new();
    let offline = format!("file://{}", clone.home().join("nowhere").display());
    let out = clone.run("scripts/test", &[("MESHSTACK_UPSTREAM_MIRROR", &offline)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("could not get the upstream files")
            && stderr.contains("crds/karpenter.sh_nodepools.yaml")
            && stderr.contains("MESHSTACK_UPSTREAM_DIR"),
        "{}",
        text(&out)
    );
    assert_eq!(clone.cargo_log(), "", "no test ran");

    // A MESHSTACK_UPSTREAM_DIR that does not hold them is an error too, not a fallback.
    let empty = clone.home();
    let out = clone.run(
        "scripts/test",
        &[("MESHSTACK_UPSTREAM_DIR", empty.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("do not match"),
        "{}",
        text(&out)
    );
    assert_eq!(clone.cargo_log(), "", "no test ran");
}

#[test]
fn scripts_test_uses_shared_upstream_schemas_beside_the_clone_without_fetching() {
    let clone = Clone::new();
    let shared = clone.tmp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&upstream().dir, shared.join("upstream-schemas")).unwrap();
    let offline = format!("file://{}", clone.home().join("nowhere").display());
    let out = clone.run("scripts/test", &[("MESHSTACK_UPSTREAM_MIRROR", &offline)]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("../shared/upstream-schemas") && !stderr.contains("fetch-upstream --into"),
        "{}",
        text(&out)
    );
    let want = std::fs::canonicalize(shared.join("upstream-schemas")).unwrap();
    let log = clone.cargo_log();
    let got = log
        .lines()
        .find_map(|l| l.strip_prefix("MESHSTACK_UPSTREAM_DIR="))
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(std::fs::canonicalize(got).unwrap(), want, "{log}");
}

#[test]
fn ci_refuses_to_skip_the_browser_or_rewrite_goldens() {
    for knob in ["MESHSTACK_NO_BROWSER", "MESHSTACK_BLESS"] {
        let clone = Clone::new();
        let mut cmd = Command::new(clone.path().join(".ci/run"));
        cmd.current_dir(clone.path())
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    clone.tmp.path().join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("HOME", clone.home())
            .env("CARGO_LOG", clone.tmp.path().join("cargo.log"))
            .env_remove("MESHSTACK_NO_BROWSER")
            .env_remove("MESHSTACK_BLESS")
            .env(knob, "1");
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{knob}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(knob),
            "{knob}: {}",
            text(&out)
        );
        assert_eq!(clone.cargo_log(), "", "{knob}: nothing ran");
    }
}
