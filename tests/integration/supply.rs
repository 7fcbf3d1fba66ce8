//! The supply chain of the charts (issue 23 item 7; issue 21 "Test honesty"): every chart is
//! installed from a file whose sha256 matches its pin, a repository serving other bytes gets
//! nothing installed, a version without a digest is refused before any write, and the
//! recording helm refuses what helm refuses. The real-helm half is in `real_cluster.rs`
//! (`a_tampered_chart_is_refused_with_real_helm_*`).

use std::path::Path;
use std::process::{Command, Output};

use crate::binary_k8s::Cluster;
use crate::support::apiserver::{ApiServer, Options};
use crate::support::chart_repo::ChartRepo;
use crate::support::k8s::{
    builtin_pin_verified, fake_helm, helm_calls, served_digest, unverified_warnings,
};
use crate::support::{describe, Meshstack, Moto};

/// istiod 1.18.7, the default stack's, as `src/charts.rs` pins it (meshstack's rebuild).
const ISTIOD_PIN: &str = "90dba11ef37a49a3ac34b62d75243409116e0d21843c558f96763cc3015ba9e1";

/// Appends `charts.digests` for every chart to the stack file at `path`, each the sha256 of
/// the archive the pinned chart folder serves for the stack's version of it
/// ([`served_digest`]): pins the stack names are enforced whatever their provenance, so
/// every intact chart of the folder is verified and any other bytes are refused, whether the
/// folder is meshstack's rebuild or upstream's archives.
pub(crate) fn pin_every_chart_in(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let stack = meshstack::config::Stack::parse(&text, "test stack").unwrap();
    let mut out = text.trim_end().to_string();
    out.push_str("\ncharts:\n  digests:\n");
    for name in meshstack::charts::name::ALL {
        let version = stack.chart_pin(name).version;
        let digest = served_digest(name, &version);
        out.push_str(&format!("    {name}: sha256:{digest}\n"));
    }
    std::fs::write(path, out).unwrap();
}

/// A mirror serving other bytes for istiod (its index agreeing with them): `up` fails with
/// a message naming chart, version, repository and both digests; istiod is never installed
/// (no `helm upgrade` of it, no release, no release Secret), while the charts the mirror
/// serves intact are installed from it.
#[test]
fn a_tampered_chart_from_a_mirror_is_refused_and_nothing_of_it_is_installed() {
    let repo = ChartRepo::tampered(&["istiod"]);
    let tampered = repo.digest("istiod-1.18.7.tgz");
    // What the stack pins for istiod: the pinned chart folder's archive.
    let pinned = served_digest("istiod", "1.18.7");
    assert_ne!(tampered, pinned);
    let mut c = Cluster::start("tampered", Options::default());
    // The stack names istiod's digest: enforced (the built-in pin, meshstack's rebuild of the
    // chart, only warns; see the end of this test).
    pin_every_chart_in(Path::new(&c.stack));
    c.ms.extra_env
        .push(("MESHSTACK_CHART_MIRROR".into(), repo.url.clone()));
    let out = c.run("up", &[]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mirror = repo.url.trim_end_matches('/');
    for part in [
        format!("chart istiod 1.18.7 from {mirror} is not the pinned chart"),
        format!("sha256:{tampered}"),
        format!("sha256:{pinned}"),
        "nothing was installed".to_string(),
    ] {
        assert!(text.contains(&part), "no {part:?} in {}", describe(&out));
    }
    let calls = helm_calls(&c.helm_dir);
    assert!(
        calls.iter().any(|c| c[0] == "pull" && c[1] == "istiod"),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c[0] == "upgrade" && c[2] == "istiod"),
        "istiod was installed: {calls:?}"
    );
    assert!(!c.helm_dir.join("releases/istio-system.istiod").exists());
    let objects = c.server.objects();
    assert!(
        !objects.contains_key("Secret istio-system/sh.helm.release.v1.istiod.v1"),
        "helm recorded istiod"
    );
    // The mirror's intact charts went in, from the verified files.
    let installed: Vec<&Vec<String>> = calls.iter().filter(|c| c[0] == "upgrade").collect();
    assert!(!installed.is_empty(), "{calls:?}");
    assert!(
        installed.iter().all(|c| c[3].ends_with(".tgz")),
        "{installed:?}"
    );

    // With the built-in pins only, istiod's is meshstack's rebuild, not upstream's archive:
    // upstream's honest repository serves other bytes, so a mismatch installs the chart with
    // a warning that names what it is and how to pin it, instead of failing every real run.
    let plain = c.ms.stack_file(
        "plain.yaml",
        "name: tampered\nregion: us-east-1\nkubernetes_version: \"1.36\"\n",
    );
    let before = helm_calls(&c.helm_dir).len();
    let out =
        c.ms.run(&["up", "--stack", plain.to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "chart istiod 1.18.7 from {mirror} is installed unverified: it is sha256:{tampered}, \
             and meshstack's pin (sha256:{ISTIOD_PIN})"
        )) && err.contains(&format!("charts.digests.istiod: sha256:{tampered}")),
        "{}",
        describe(&out)
    );
    // Every other chart this `up` pulled is verified exactly when its built-in pin is the
    // pinned folder's bytes (meshstack's rebuild); upstream's archives of a rebuilt chart
    // are installed with the same warning.
    let pulled: Vec<String> = helm_calls(&c.helm_dir)[before..]
        .iter()
        .filter(|call| call[0] == "pull")
        .map(|call| {
            let name = call[1].rsplit('/').next().unwrap();
            let at = call.iter().position(|a| a == "--version").unwrap();
            format!("{name} {}", call[at + 1])
        })
        .collect();
    assert!(
        pulled.iter().any(|p| p == "istiod 1.18.7"),
        "{pulled:?}\n{}",
        describe(&out)
    );
    let expected: std::collections::BTreeSet<String> = pulled
        .iter()
        .filter(|p| {
            let (chart, version) = p.split_once(' ').unwrap();
            chart == "istiod" || !builtin_pin_verified(chart, version)
        })
        .cloned()
        .collect();
    assert_eq!(unverified_warnings(&err), expected, "{}", describe(&out));
}

/// A stack pinning an Istio release meshstack has no chart digests for is refused by `up`
/// before any AWS call, naming the field that fixes it; `plan` still plans.
#[test]
fn a_version_without_a_digest_is_refused_before_any_write() {
    let moto = Moto::start();
    let mut ms = Meshstack::with_moto(&moto);
    // A helm that works, so that nothing but the missing digests stops `up`.
    let helm_dir = ms.dir.path().join("helm");
    std::fs::create_dir_all(&helm_dir).unwrap();
    let helm = fake_helm(&helm_dir);
    ms.extra_env
        .push(("MESHSTACK_HELM".into(), helm.display().to_string()));
    let stack = ms.stack_file(
        "stack.yaml",
        "name: unpinned\nregion: us-east-1\nkubernetes_version: \"1.36\"\n\
         istio: {version: 1.18.3}\n",
    );
    let stack = stack.to_str().unwrap();
    moto.start_recording();
    let out = ms.run(&["up", "--stack", stack]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for part in [
        "no pinned digest for chart base 1.18.3",
        "charts.digests.base: sha256:",
        "chart istiod 1.18.3",
        "chart gateway 1.18.3",
    ] {
        assert!(err.contains(part), "no {part:?} in {}", describe(&out));
    }
    assert_eq!(moto.recorded_writes(), Vec::<String>::new());
    assert_eq!(helm_calls(&helm_dir), Vec::<Vec<String>>::new());
    // `plan` plans, and says so ahead.
    let out = ms.run(&["plan", "--stack", stack]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "warning: `up` will refuse: meshstack has no pinned digest for chart istiod 1.18.3"
        ),
        "{}",
        describe(&out)
    );

    // With the digests named, `up` gets past the check (and on to its AWS preflight): here
    // `plan -o json` shows them, as the stack's.
    let digest = "ab".repeat(32);
    let named = ms.stack_file(
        "named.yaml",
        &format!(
            "name: unpinned\nregion: us-east-1\nkubernetes_version: \"1.36\"\n\
             istio: {{version: 1.18.3}}\ncharts:\n  digests:\n    base: sha256:{digest}\n    \
             istiod: sha256:{digest}\n    gateway: sha256:{digest}\n"
        ),
    );
    let out = ms.run(&["plan", "--stack", named.to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let base = doc["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chart"] == "base")
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(base["digest"], format!("sha256:{digest}"), "{doc}");
    assert_eq!(base["digest_provenance"], "stack", "{doc}");
    let kiali = doc["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chart"] == "kiali-operator")
        .unwrap();
    assert_eq!(kiali["digest_provenance"], "published", "{doc}");
    // A malformed digest is a stack error naming the field.
    let bad = ms.stack_file(
        "bad.yaml",
        "name: unpinned\nregion: us-east-1\ncharts:\n  digests:\n    istiod: sha256:1234\n",
    );
    let out = ms.run(&["plan", "--stack", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("charts.digests.istiod") && err.contains("not a sha256 digest"),
        "{}",
        describe(&out)
    );
}

/// The recording helm in `dir`, run with `args`.
fn fake(dir: &Path, args: &[&str]) -> Output {
    Command::new(dir.join("helm")).args(args).output().unwrap()
}

const ISTIO: &str = "https://blob.istio.io/istio-release/charts";
const PROMETHEUS: &str = "https://prometheus-community.github.io/helm-charts";

/// The recording helm finds charts as helm does: an unknown version, an unknown chart and a
/// chart asked of the wrong repository fail with helm's own message (helm v3.21.4 and v4.3.2
/// print exactly these), for `pull` and for `upgrade --install` alike, recording nothing;
/// `pull` writes the pinned archive byte for byte; an http repository is asked for real.
#[test]
fn the_recording_helm_refuses_what_helm_refuses() {
    let dir = tempfile::tempdir().unwrap();
    fake_helm(dir.path());
    let dest = dir.path().join("pulled");
    std::fs::create_dir(&dest).unwrap();
    let d = dest.to_str().unwrap();
    for (chart, repo, version) in [
        ("istiod", ISTIO, "9.9.9"),
        ("nochart", ISTIO, "1.18.7"),
        ("istiod", PROMETHEUS, "1.18.7"),
    ] {
        let want = format!(
            "Error: chart \"{chart}\" version \"{version}\" not found in {repo} repository"
        );
        let out = fake(
            dir.path(),
            &[
                "pull",
                chart,
                "--repo",
                repo,
                "--version",
                version,
                "--destination",
                d,
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), want);
        let out = fake(
            dir.path(),
            &[
                "upgrade",
                "--install",
                "x",
                chart,
                "--repo",
                repo,
                "--version",
                version,
                "--namespace",
                "ns",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), want);
        assert!(!dir.path().join("releases/ns.x").exists());
    }
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);

    let out = fake(
        dir.path(),
        &[
            "pull",
            "istiod",
            "--repo",
            ISTIO,
            "--version",
            "1.18.7",
            "--destination",
            d,
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let pulled = std::fs::read(dest.join("istiod-1.18.7.tgz")).unwrap();
    assert_eq!(
        crate::support::chart_repo::sha256(&pulled),
        served_digest("istiod", "1.18.7")
    );

    // An http repository is read over HTTP: its bytes, whatever they are.
    let repo = ChartRepo::tampered(&["istiod"]);
    let other = tempfile::tempdir().unwrap();
    let out = fake(
        dir.path(),
        &[
            "pull",
            "istiod",
            "--repo",
            &repo.url,
            "--version",
            "1.18.7",
            "--destination",
            other.path().to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let pulled = std::fs::read(other.path().join("istiod-1.18.7.tgz")).unwrap();
    assert_eq!(
        crate::support::chart_repo::sha256(&pulled),
        repo.digest("istiod-1.18.7.tgz")
    );
    // An installed archive is listed by the name and version in its Chart.yaml.
    let out = fake(
        dir.path(),
        &[
            "upgrade",
            "--install",
            "istiod",
            dest.join("istiod-1.18.7.tgz").to_str().unwrap(),
            "--namespace",
            "istio-system",
            "--values",
            "/dev/null",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let listed = std::fs::read_to_string(dir.path().join("releases/istio-system.istiod")).unwrap();
    assert!(listed.contains("\"chart\":\"istiod-1.18.7\""), "{listed}");
    assert_eq!(
        helm_calls(dir.path())
            .iter()
            .filter(|c| c[0] == "upgrade")
            .count(),
        4
    );
}

/// With `--kubeconfig`, the recording helm authenticates to the API server as helm does: it
/// runs the kubeconfig user's exec plugin and sends its token; a token the server refuses
/// fails the command with helm's "Kubernetes cluster unreachable", and the server counts the
/// refusal.
#[test]
fn the_recording_helm_authenticates_with_the_kubeconfig_exec_plugin() {
    let server = ApiServer::start(Options::default());
    let dir = tempfile::tempdir().unwrap();
    fake_helm(dir.path());
    let ca = std::fs::read(&server.env()[1].1).unwrap();
    let kubeconfig = |token: &str| {
        use base64::Engine as _;
        let credential = serde_json::json!({
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "kind": "ExecCredential",
            "status": {"token": token}
        });
        // JSON is YAML: helm (and the recording one) read it as a kubeconfig.
        let text = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "c",
            "clusters": [{"name": "k", "cluster": {
                "server": server.endpoint(),
                "certificate-authority-data":
                    base64::engine::general_purpose::STANDARD.encode(&ca)}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "users": [{"name": "u", "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "sh",
                // client-go sets KUBERNETES_EXEC_INFO; a plugin may insist on it.
                "args": ["-c", format!(
                    "test -n \"$KUBERNETES_EXEC_INFO\" && echo '{credential}'"
                )]}}}]
        })
        .to_string();
        let path = dir.path().join(format!("kubeconfig-{}", token.len()));
        std::fs::write(&path, text).unwrap();
        path
    };
    let list = |kubeconfig: &Path| {
        fake(
            dir.path(),
            &[
                "list",
                "--namespace",
                "ns",
                "--filter",
                "^x$",
                "--output",
                "json",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
            ],
        )
    };
    let good = kubeconfig(&eks_token());
    let out = list(&good);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(server.counts().unauthorized, 0);
    let bad = kubeconfig("not-an-eks-token");
    let out = list(&bad);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(
            "Error: Kubernetes cluster unreachable: the server has asked for the client to provide credentials"
        ),
        "{}",
        describe(&out)
    );
    assert_eq!(server.counts().unauthorized, 1);
}

/// A token of the shape the test API server accepts (it checks the shape, as far as it can).
fn eks_token() -> String {
    use base64::Engine as _;
    let url = "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Signature=abc";
    format!(
        "k8s-aws-v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    )
}

/// The pinned chart folder and meshstack's pins agree: every chart version the folder's index
/// lists is pinned and every pin is in the folder; the index's `digest` of each is the sha256
/// of its archive, which is that chart at that version (its Chart.yaml says so); each pin of
/// upstream's own archive (`Published`) is the served digest.
///
/// A pin of meshstack's rebuild (`Rebuilt`) names bytes only that rebuild has: upstream's
/// honest repository serves the same chart as other bytes. So either the folder is the
/// rebuild, and every such pin is its digest, or it holds upstream's archives, and none is
/// (a mix means a stale pin or a folder put together from both: a failure). In the second
/// case those pins cannot be checked against anything here, and the test says which.
#[test]
fn every_pinned_digest_is_the_pinned_repository_s() {
    use meshstack::charts::Provenance;
    let dir = crate::support::k8s::pinned_charts();
    let served = crate::support::k8s::served_charts();
    let mut listed: Vec<(String, String)> = served
        .iter()
        .map(|s| (s.chart.clone(), s.version.clone()))
        .collect();
    listed.sort();
    let mut pinned: Vec<(String, String)> = meshstack::charts::DIGESTS
        .iter()
        .map(|d| (d.chart.to_string(), d.version.to_string()))
        .collect();
    pinned.sort();
    assert_eq!(listed, pinned, "the chart versions of {}", dir.display());

    let (mut rebuilt_equal, mut rebuilt_other) = (Vec::new(), Vec::new());
    for s in &served {
        let named = format!("{} {}", s.chart, s.version);
        let sha256 = s.sha256();
        assert_eq!(
            s.index_digest,
            sha256,
            "{named}: the index's digest is not its archive's ({})",
            s.archive.display()
        );
        assert_eq!(
            chart_yaml_name_version(&s.archive),
            (s.chart.clone(), s.version.clone()),
            "{named}: {} is another chart",
            s.archive.display()
        );
        let pin = meshstack::charts::known_digest(&s.chart, &s.version).unwrap();
        match pin.provenance {
            Provenance::Published => assert_eq!(
                pin.sha256, sha256,
                "{named}: meshstack pins upstream's published archive, the folder serves other bytes"
            ),
            Provenance::Rebuilt if pin.sha256 == sha256 => rebuilt_equal.push(named),
            Provenance::Rebuilt => rebuilt_other.push(format!(
                "{named} (pinned sha256:{}, served sha256:{sha256})",
                pin.sha256
            )),
            Provenance::Stack => unreachable!("a built-in pin"),
        }
    }
    assert!(
        rebuilt_equal.is_empty() || rebuilt_other.is_empty(),
        "{} is partly meshstack's rebuild ({}) and partly other bytes: {}; a pin of the \
         rebuild is stale, or the folder mixes the rebuild with upstream's archives",
        dir.display(),
        rebuilt_equal.join(", "),
        rebuilt_other.join(", ")
    );
    if rebuilt_other.is_empty() {
        assert!(
            !rebuilt_equal.is_empty(),
            "no rebuilt chart in {}",
            dir.display()
        );
    } else {
        eprintln!(
            "{} holds other archives than meshstack's rebuild (upstream's, presumably): these \
             pins of the rebuild could not be compared with the bytes they name, only the \
             charts' names and versions were checked, and `up` installs them unverified: {}",
            dir.display(),
            rebuilt_other.join("; ")
        );
    }
}

/// The `name` and `version` of the Chart.yaml at the top of a chart archive, read with `tar`.
fn chart_yaml_name_version(archive: &Path) -> (String, String) {
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "tar -tzf {}: {}",
        archive.display(),
        describe(&list)
    );
    let names = String::from_utf8_lossy(&list.stdout);
    let chart_yaml = names
        .lines()
        .find(|n| {
            let parts: Vec<&str> = n.trim_start_matches("./").split('/').collect();
            parts.len() == 2 && parts[1] == "Chart.yaml"
        })
        .unwrap_or_else(|| panic!("no Chart.yaml at the top of {}", archive.display()))
        .to_string();
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(archive)
        .arg(&chart_yaml)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -xzOf {}: {}",
        archive.display(),
        describe(&out)
    );
    let meta: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let field = |key: &str| match &meta[key] {
        serde_yaml::Value::String(s) => s.clone(),
        other => panic!("{}: Chart.yaml {key} is {other:?}", archive.display()),
    };
    (field("name"), field("version"))
}

/// `doctor` pulls each pinned chart and hashes it: a mirror serving other bytes for istiod is
/// named with both digests, and doctor fails; the intact charts are ok.
#[test]
fn doctor_names_a_repository_serving_other_bytes_than_the_pin() {
    let moto = Moto::start();
    let mut ms = Meshstack::with_moto(&moto);
    let helm_dir = ms.dir.path().join("helm");
    std::fs::create_dir_all(&helm_dir).unwrap();
    fake_helm(&helm_dir);
    let repo = ChartRepo::tampered(&["istiod"]);
    ms.extra_env.push((
        "PATH".into(),
        format!(
            "{}:{}",
            helm_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    ));
    ms.extra_env
        .push(("MESHSTACK_CHART_MIRROR".into(), repo.url.clone()));
    // The built-in pin of istiod is meshstack's rebuild: a warning, and `up` would install the
    // chart unverified.
    let out = ms.run(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mirror = repo.url.trim_end_matches('/');
    let served = repo.digest("istiod-1.18.7.tgz");
    let want = format!(
        "WARN chart istiod 1.18.7 from {mirror} (MESHSTACK_CHART_MIRROR): the repository serves \
         sha256:{served}; meshstack's pin sha256:{ISTIOD_PIN} is the digest of its own rebuild"
    );
    assert!(text.contains(&want), "no {want:?} in {}", describe(&out));
    assert!(
        text.contains(&format!("charts.digests.istiod: sha256:{served}")),
        "{}",
        describe(&out)
    );
    // The intact charts: ok where the built-in pin is the pinned folder's bytes (meshstack's
    // rebuild), WARN where the folder holds upstream's archive of a rebuilt chart; a warning
    // does not fail doctor.
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let rows = crate::support::k8s::doctor_chart_rows(&text);
    assert_eq!(rows.len(), 7, "{}", describe(&out));
    for (status, named) in &rows {
        let (chart, version) = named.split_once(' ').unwrap();
        let want = if chart != "istiod" && builtin_pin_verified(chart, version) {
            "ok"
        } else {
            "WARN"
        };
        assert_eq!(status, want, "{named}: {}", describe(&out));
    }
    // Pinned by the stack (each chart the pinned folder's bytes), the same bytes fail doctor:
    // `up` would refuse them; every intact chart is verified.
    let stack = ms.stack_file("pinned.yaml", "name: pinned\nregion: us-east-1\n");
    pin_every_chart_in(&stack);
    let pinned = served_digest("istiod", "1.18.7");
    let out = ms.run(&["doctor", "--stack", stack.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "FAIL chart istiod 1.18.7 from {mirror} (MESHSTACK_CHART_MIRROR): the repository serves \
         sha256:{served}, meshstack pins sha256:{pinned} (`up` refuses this chart)"
    );
    assert!(text.contains(&want), "no {want:?} in {}", describe(&out));
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("ok   chart "))
            .count(),
        6,
        "{}",
        describe(&out)
    );
}
