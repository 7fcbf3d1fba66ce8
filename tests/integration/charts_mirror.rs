//! `meshstack charts mirror` through the binary, with the pinned helm 3 (real `helm pull` and
//! `helm repo index`) against a local chart repository: what it copies, what it refuses, what
//! a re-run changes (nothing), and what it will not write through. `scripts/test` relies on it
//! on a clone with nothing beside it (`scripts::scripts_test_on_a_fresh_clone_mirrors_…`).

use std::path::Path;
use std::process::Output;

use crate::support::chart_repo::{sha256, ChartRepo};
use crate::support::local_cluster::pinned_binary;
use crate::support::{describe, Meshstack};

/// The binary in a fresh folder, with the pinned helm, its own helm homes, and every chart from
/// `repo`.
fn mirror_env(repo: &ChartRepo) -> Meshstack {
    let mut ms = Meshstack::new(None);
    let home = ms.dir.path().join("helm-home");
    ms.extra_env.extend([
        (
            "MESHSTACK_HELM".to_string(),
            pinned_binary("helm3").display().to_string(),
        ),
        ("MESHSTACK_CHART_MIRROR".to_string(), repo.url.clone()),
        (
            "HELM_CONFIG_HOME".into(),
            home.join("config").display().to_string(),
        ),
        (
            "HELM_CACHE_HOME".into(),
            home.join("cache").display().to_string(),
        ),
        (
            "HELM_DATA_HOME".into(),
            home.join("data").display().to_string(),
        ),
    ]);
    ms
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The built-in stack's seven charts, as `(chart, version, file, built-in pin)`.
fn default_charts() -> Vec<(String, String, String, String)> {
    let stack = meshstack::config::Stack::embedded_default();
    stack
        .chart_pins()
        .into_iter()
        .map(|p| {
            (
                p.chart.clone(),
                p.version.clone(),
                format!("{}-{}.tgz", p.chart, p.version),
                p.digest.expect("a built-in pin"),
            )
        })
        .collect()
}

/// A repository serving other bytes for istiod (one of meshstack's rebuilds: its pin is not
/// enforced) is mirrored with `up`'s warning; every archive is what the repository served and
/// is indexed with its digest; a re-run pulls only what is not its pin and writes nothing.
/// The repository is a copy of the pinned chart folder: meshstack's rebuild, where every other
/// chart is its pin, or upstream's archives, where only kiali's is.
#[test]
fn a_mirror_holds_what_up_would_install_and_a_rerun_changes_nothing() {
    let repo = ChartRepo::tampered(&["istiod"]);
    let ms = mirror_env(&repo);
    let dir = ms.dir.path().join("charts");
    let dir_arg = dir.to_str().unwrap();
    let out = ms.run(&["charts", "mirror", dir_arg]);
    assert!(out.status.success(), "{}", describe(&out));
    let charts = default_charts();
    assert_eq!(charts.len(), 7);
    let index = std::fs::read_to_string(dir.join("index.yaml")).unwrap();
    let mut verified_charts = Vec::new();
    for (chart, version, file, pin) in &charts {
        let served = repo.digest(file);
        let held = sha256(&std::fs::read(dir.join(file)).unwrap());
        assert_eq!(held, served, "{file}");
        assert!(
            index.contains(&format!("digest: {served}")),
            "{file}: {index}"
        );
        assert!(
            index.contains(&format!("- {file}\n")),
            "relative URL of {file}"
        );
        let verified = served == *pin;
        let untampered =
            chart != "istiod" && crate::support::k8s::builtin_pin_verified(chart, version);
        assert_eq!(verified, untampered, "{file}");
        if verified {
            verified_charts.push(chart.clone());
        }
    }
    assert!(verified_charts.contains(&"kiali-operator".to_string()));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "pulled     istiod 1.18.7 from {}",
            repo.url.trim_end_matches('/')
        )) && text.contains("istiod-1.18.7.tgz (UNVERIFIED)"),
        "{}",
        describe(&out)
    );
    assert_eq!(
        text.matches("(its pin)").count(),
        verified_charts.len(),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("warning: chart istiod 1.18.7 from")
            && stderr(&out).contains("is in the mirror unverified")
            && stderr(&out).contains(&format!(
                "`charts.digests.istiod: sha256:{}`",
                repo.digest("istiod-1.18.7.tgz")
            )),
        "{}",
        describe(&out)
    );
    assert!(
        text.contains("index.yaml: written (7 chart archives"),
        "{text}"
    );
    // Only archives and the index; readable by a web server, writable by nobody else.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = charts.iter().map(|(_, _, f, _)| f.clone()).collect();
    want.push("index.yaml".into());
    want.sort();
    assert_eq!(names, want);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o755);
    assert_eq!(mode(&dir.join("index.yaml")), 0o644);

    // Again: the archives that are their pins are kept (not pulled), the others (istiod at
    // least) are pulled and found unchanged, and the index is left as it was.
    let before = snapshot(&dir);
    let out = ms.run(&["charts", "mirror", dir_arg, "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes: Vec<(String, String, bool)> = report["charts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["chart"].as_str().unwrap().to_string(),
                c["outcome"].as_str().unwrap().to_string(),
                c["written"].as_bool().unwrap(),
            )
        })
        .collect();
    for (chart, outcome, written) in &outcomes {
        let want = if verified_charts.contains(chart) {
            "kept"
        } else {
            "unverified"
        };
        assert_eq!(
            (outcome.as_str(), *written),
            (want, false),
            "{chart}: {report}"
        );
    }
    assert_eq!(report["index"]["written"], false, "{report}");
    assert_eq!(
        snapshot(&dir),
        before,
        "a re-run with nothing to do changed the folder"
    );
}

/// Each file's name, bytes and modification time.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, std::time::SystemTime)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
                std::fs::metadata(&p).unwrap().modified().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Kiali's pin is upstream's own archive, enforced: other bytes are left out of the mirror,
/// and the command fails naming both digests; the other charts are mirrored and indexed.
/// A symlink planted where an archive goes is neither followed nor replaced, and a folder
/// other users can write into is refused before anything is pulled.
#[test]
fn a_mirror_refuses_what_up_refuses_and_writes_through_no_symlink() {
    let repo = ChartRepo::tampered(&["kiali-operator"]);
    let ms = mirror_env(&repo);
    let dir = ms.dir.path().join("charts");
    std::fs::create_dir(&dir).unwrap();
    let victim = ms.dir.path().join("victim");
    std::fs::write(&victim, "not a chart").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("base-1.18.7.tgz")).unwrap();
    let out = ms.run(&["charts", "mirror", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    let kiali = "kiali-operator-1.73.2.tgz";
    assert!(
        err.contains(&format!(
            "its sha256 is sha256:{}, the pin is sha256:",
            repo.digest(kiali)
        )),
        "{}",
        describe(&out)
    );
    assert!(
        err.contains("is a symlink; meshstack does not write through one"),
        "{}",
        describe(&out)
    );
    assert!(
        err.contains("2 chart version(s) are not in the mirror"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not a chart");
    assert!(!dir.join(kiali).exists());
    let index = std::fs::read_to_string(dir.join("index.yaml")).unwrap();
    assert!(!index.contains("kiali-operator"), "{index}");
    assert!(index.contains("istiod-1.18.7.tgz"), "{index}");
    // The symlink is not an archive of the mirror: not indexed.
    assert!(!index.contains("base-1.18.7.tgz"), "{index}");

    // A folder others can write into: refused, nothing pulled into it.
    let shared = ms.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = ms.run(&["charts", "mirror", shared.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("can be written by other users"),
        "{}",
        describe(&out)
    );
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
}
