//! The Kubernetes half on a real control plane (`tests/support/local_cluster.rs`): a real
//! kube-apiserver, controller manager and scheduler with kwok nodes in three zones, the real
//! pinned helm (3 and 4), the real charts of `../shared/charts` served as a chart repository
//! (`MESHSTACK_CHART_MIRROR`), and meshstack's EKS token checked by the API server against the
//! test's moto, as EKS checks it. AWS is moto; the cluster meshstack creates there is the one
//! whose name the token carries, and `MESHSTACK_KUBE_API` points the binary at this API server.
//!
//! What the stand-ins do not model is in `testenv/README.md`; the ones these tests meet: pods
//! run no containers (kwok marks them Running and Ready), an admission stand-in plays istiod's
//! webhooks, a controller gives LoadBalancer Services an address, and a stand-in does what the
//! Kiali operator does for meshstack (a Deployment per Kiali CR, its finalizer).

use std::collections::BTreeMap;
use std::process::Output;

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{ApiResource, Discovery};

use crate::support::local_cluster::LocalCluster;
use crate::support::{describe, Meshstack, Moto};

struct Env {
    moto: Moto,
    cluster: LocalCluster,
    ms: Meshstack,
    stack: String,
}

impl Env {
    fn start(name: &str, helm_major: u8) -> Env {
        let moto = Moto::start();
        let cluster = LocalCluster::start_for_eks(name, &moto.endpoint(), helm_major);
        let mut ms = Meshstack::with_moto(&moto);
        for key in [
            "PATH",
            "MESHSTACK_KUBE_API",
            "MESHSTACK_KUBE_CA_FILE",
            "HELM_CONFIG_HOME",
            "HELM_CACHE_HOME",
            "HELM_DATA_HOME",
        ] {
            ms.extra_env
                .push((key.to_string(), cluster.var(key).to_string()));
        }
        // The pinned charts of ../shared/charts, served locally; a clone without them (and
        // with internet) installs the same versions from the charts' own repositories.
        match cluster.var_opt("MESHSTACK_CHART_MIRROR") {
            Some(mirror) => ms
                .extra_env
                .push(("MESHSTACK_CHART_MIRROR".into(), mirror.to_string())),
            None => eprintln!(
                "no ../shared/charts beside the repository: charts come from their own \
                 repositories"
            ),
        }
        // meshstack's own waits (not helm's), scaled: a Kubernetes wait gives up after 30 s.
        ms.extra_env
            .push(("MESHSTACK_WAIT_SCALE".into(), "20".into()));
        let stack = ms
            .stack_file(
                "stack.yaml",
                &format!("name: {name}\nregion: us-east-1\nkubernetes_version: \"1.36\"\n"),
            )
            .display()
            .to_string();
        Env {
            moto,
            cluster,
            ms,
            stack,
        }
    }

    fn run(&self, verb: &str, more: &[&str]) -> Output {
        let mut args: Vec<&str> = vec![verb, "--stack", &self.stack, "-o", "json"];
        args.extend_from_slice(more);
        self.ms.run(&args)
    }

    fn ok(&self, verb: &str, more: &[&str]) -> Output {
        let out = self.run(verb, more);
        assert!(out.status.success(), "{verb}: {}", describe(&out));
        out
    }
}

/// `kind namespace/name` -> resourceVersion of every object the rendered manifests name.
async fn versions(env: &Env) -> BTreeMap<String, String> {
    let client = env.cluster.admin().await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut found = BTreeMap::new();
    for o in crate::support::rendered_manifests(&env.ms, &env.stack) {
        let types = o.types.clone().unwrap();
        let Some((ar, _)) =
            discovery.resolve_gvk(&kube::core::GroupVersionKind::try_from(&types).unwrap())
        else {
            continue; // a kind whose CRD this stack does not install (Karpenter's v1alpha5)
        };
        let ns = o.metadata.namespace.clone();
        let api: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let name = o.metadata.name.clone().unwrap();
        if let Some(live) = api.get_opt(&name).await.unwrap() {
            found.insert(
                format!("{} {}/{}", types.kind, ns.unwrap_or_default(), name),
                live.metadata.resource_version.unwrap_or_default(),
            );
        }
    }
    found
}

/// Whether any namespace in `names` still exists.
async fn namespaces_left(env: &Env, names: &[&str]) -> Vec<String> {
    let client = env.cluster.admin().await;
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let all = api.list(&ListParams::default()).await.unwrap();
    all.items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .filter(|n| names.contains(&n.as_str()))
        .collect()
}

/// The namespaces meshstack makes (through helm's `--create-namespace` or its manifests).
const NAMESPACES: [&str; 5] = [
    "ecommerce",
    "karpenter",
    "prometheus",
    "kiali-operator",
    "istio-system",
];

/// Issue 20, done-when: for each helm major, the whole graph goes up on the real control plane
/// with the real charts; a second `up` makes no helm install or upgrade (every release still
/// at revision 1) and no API write (resourceVersions unchanged), `plan` and `status` are clean,
/// and the same holds with the journal deleted; `down` leaves no release and none of
/// meshstack's namespaces; `up` again works.
fn converges_and_tears_down(helm_major: u8) {
    let env = Env::start(&format!("real{helm_major}"), helm_major);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = std::time::Instant::now();
    let out = env.ok("up", &[]);
    let full = started.elapsed();
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["event"] == "summary")
        .unwrap();
    let results = summary["results"].as_array().unwrap();
    assert_eq!(results.len(), 12, "all twelve stages: {summary}");
    assert!(
        results.iter().all(|r| r["status"] == "succeeded"),
        "{summary}"
    );
    let releases = env.cluster.releases();
    assert_eq!(releases.len(), 7, "{releases:?}");
    for (name, (status, revision, _)) in &releases {
        assert_eq!(status, "deployed", "{name}: {releases:?}");
        assert_eq!(revision, "1", "{name}: {releases:?}");
    }
    let before = rt.block_on(versions(&env));
    assert!(before.len() > 20, "{before:?}");

    // Converged: nothing written anywhere.
    let check_converged = |what: &str| {
        env.moto.start_recording();
        let started = std::time::Instant::now();
        env.ok("up", &[]);
        let took = started.elapsed();
        assert_eq!(env.moto.recorded_writes(), Vec::<String>::new(), "{what}");
        assert_eq!(env.cluster.releases(), releases, "{what}: helm changed");
        assert_eq!(
            rt.block_on(versions(&env)),
            before,
            "{what}: objects changed"
        );
        let plan = env.ok("plan", &[]);
        let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
        assert_eq!(plan["summary"]["create"], 0, "{what}: {plan}");
        assert_eq!(plan["summary"]["update"], 0, "{what}: {plan}");
        let status = env.run("status", &[]);
        assert_eq!(
            status.status.code(),
            Some(0),
            "{what}: {}",
            describe(&status)
        );
        took
    };
    let converged = check_converged("a converged up");
    std::fs::remove_dir_all(env.ms.state_dir()).unwrap();
    check_converged("an up with the journal lost");

    let started = std::time::Instant::now();
    env.ok("down", &["--yes"]);
    let down = started.elapsed();
    assert_eq!(env.cluster.releases(), BTreeMap::new());
    // Namespaces terminate through their finalizers (the namespace controller runs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let left = rt.block_on(namespaces_left(&env, &NAMESPACES));
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "namespaces still there: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    env.ok("up", &[]);
    eprintln!(
        "helm {helm_major}: full up {full:?}, converged up {converged:?}, down {down:?} \
         on the real control plane"
    );
}

#[test]
fn the_kubernetes_half_converges_and_tears_down_on_a_real_control_plane_with_helm_3() {
    converges_and_tears_down(3);
}

#[test]
fn the_kubernetes_half_converges_and_tears_down_on_a_real_control_plane_with_helm_4() {
    converges_and_tears_down(4);
}

/// The API server checks meshstack's EKS token as EKS does: a token for another cluster is
/// refused, so the whole graph above ran on tokens the server verified against moto.
#[test]
fn the_api_server_refuses_a_token_for_another_cluster() {
    let moto = Moto::start();
    let cluster = LocalCluster::start_for_eks("mine", &moto.endpoint(), 3);
    let ms = Meshstack::with_moto(&moto);
    let out = ms.run(&["token", "--cluster", "theirs", "--region", "us-east-1"]);
    assert!(out.status.success(), "{}", describe(&out));
    let cred: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = cred["status"]["token"].as_str().unwrap().to_string();
    let ca = std::fs::read(cluster.var("MESHSTACK_KUBE_CA_FILE")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async {
        meshstack::k8s::client::install_crypto_provider();
        let mut config = kube::Config::new(cluster.var("MESHSTACK_KUBE_API").parse().unwrap());
        config.root_cert = Some(vec![pem_der(&ca)]);
        config.auth_info.token = Some(token.into());
        let client = kube::Client::try_from(config).unwrap();
        let api: Api<DynamicObject> = Api::all_with(
            client,
            &ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()),
        );
        match api.list(&ListParams::default()).await {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(e) => panic!("{e}"),
        }
    });
    assert_eq!(code, 401, "a token for another cluster must be refused");
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(pem);
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap()
}

/// Issue 19, on the real control plane with helm 4: a live environment built with Karpenter
/// 1.8.1 and Istio 1.18.7 (Kubernetes 1.34 in extended support, which the stack accepts) moves
/// to Karpenter 1.14.1 and Istio 1.30.3. Real helm refuses to take over objects another owner
/// holds ("invalid ownership metadata"), and Istio 1.18's base chart left its CRDs unowned
/// (they came from `crds/`), so this passes only if meshstack hands them to `istio-base`
/// first; helm 4 applies server-side, where istiod's run-time `failurePolicy` on its webhook
/// would conflict unless meshstack forces it. Then `status` is clean and a rerun changes
/// nothing.
#[test]
fn versions_move_on_a_live_environment_with_real_helm() {
    let mut env = Env::start("moving", 4);
    env.ms
        .extra_env
        .push(("MESHSTACK_TODAY".into(), "2026-12-06".into()));
    let stack = |karpenter: &str, istio: &str| {
        format!(
            "name: moving\nregion: us-east-1\nkubernetes_version: \"1.34\"\n\
             cluster: {{support: extended}}\nkarpenter: {{version: {karpenter}}}\n\
             istio: {{version: {istio}}}\n"
        )
    };
    env.stack = env
        .ms
        .stack_file("old.yaml", &stack("1.8.1", "1.18.7"))
        .display()
        .to_string();
    env.ok("up", &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let owners = || {
        rt.block_on(async {
            let client = env.cluster.admin().await;
            let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
                Api::all(client);
            api.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|c| c.spec.group.ends_with(".istio.io"))
                .map(|c| {
                    let owner = c
                        .metadata
                        .annotations
                        .unwrap_or_default()
                        .get("meta.helm.sh/release-name")
                        .cloned();
                    (c.metadata.name.unwrap_or_default(), owner)
                })
                .collect::<BTreeMap<_, _>>()
        })
    };
    let before = owners();
    assert!(!before.is_empty());
    assert!(
        before.values().all(Option::is_none),
        "Istio 1.18's CRDs come from crds/, unowned: {before:?}"
    );

    env.stack = env
        .ms
        .stack_file("new.yaml", &stack("1.14.1", "1.30.3"))
        .display()
        .to_string();
    env.ok("up", &[]);
    let releases = env.cluster.releases();
    for (release, chart) in [
        ("istio-system/istio-base", "base-1.30.3"),
        ("istio-system/istiod", "istiod-1.30.3"),
        ("karpenter/karpenter-crd", "karpenter-crd-1.14.1"),
        ("karpenter/karpenter", "karpenter-1.14.1"),
    ] {
        let (status, _, listed) = &releases[release];
        assert_eq!(
            (status.as_str(), listed.as_str()),
            ("deployed", chart),
            "{releases:?}"
        );
    }
    let after = owners();
    assert!(
        after.values().all(|o| o.as_deref() == Some("istio-base")),
        "{after:?}"
    );
    // Server-side apply on the real API server removes what meshstack owned and no longer
    // applies: Kiali 1's `accessible_namespaces` goes, Kiali 2's discovery selectors come.
    let kiali = rt.block_on(async {
        let client = env.cluster.admin().await;
        let ar = ApiResource {
            group: "kiali.io".into(),
            version: "v1alpha1".into(),
            api_version: "kiali.io/v1alpha1".into(),
            kind: "Kiali".into(),
            plural: "kialis".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client, "istio-system", &ar);
        api.get("kiali").await.unwrap()
    });
    let deployment = &kiali.data["spec"]["deployment"];
    assert!(
        deployment.get("accessible_namespaces").is_none(),
        "{deployment}"
    );
    assert_eq!(deployment["cluster_wide_access"], false, "{deployment}");
    let status = env.run("status", &[]);
    assert_eq!(status.status.code(), Some(0), "{}", describe(&status));
    let versions_before = rt.block_on(versions(&env));
    env.ok("up", &[]);
    assert_eq!(env.cluster.releases(), releases, "a rerun changed helm");
    assert_eq!(
        rt.block_on(versions(&env)),
        versions_before,
        "a rerun changed objects"
    );
}

/// Issue 19: `doctor` shows the version matrix and asks each chart's repository, with the real
/// helm, for the pinned version: against the real charts (the local repository of
/// `../shared/charts`) every chart of the default stack is found; a stack pinning a version
/// that repository lacks is named, and doctor fails.
#[test]
fn doctor_shows_the_version_matrix_and_finds_each_pinned_chart() {
    let env = Env::start("doctored", 3);
    let out = env.ms.run(&["doctor", "--stack", &env.stack, "-o", "json"]);
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));
    assert_eq!(out.status.code(), Some(0), "{doc}");
    let rows: BTreeMap<String, serde_json::Value> = doc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["component"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    assert_eq!(rows["kubernetes"]["version"], "1.36", "{doc}");
    assert!(
        rows["kubernetes"]["detail"]
            .as_str()
            .unwrap()
            .contains("standard support until 2027-08-02"),
        "{doc}"
    );
    assert!(rows["karpenter"]["detail"]
        .as_str()
        .unwrap()
        .contains("up to 1.36"));
    assert_eq!(
        rows["istio"]["supported"], false,
        "Istio 1.18 on 1.36: {doc}"
    );
    assert_eq!(rows["kiali"]["version"], "1.73.2");
    assert_eq!(rows["helm"]["supported"], true, "helm 3.21 on 1.36: {doc}");
    let charts = doc["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 7, "{doc}");
    assert!(charts.iter().all(|c| c["ok"] == true), "{doc}");

    // A pin the repository does not hold.
    let stack = env.ms.stack_file(
        "other.yaml",
        "name: doctored\nregion: us-east-1\nkubernetes_version: \"1.36\"\nistio: {version: 1.30.2}\n",
    );
    let out = env
        .ms
        .run(&["doctor", "--stack", stack.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let missing: Vec<&str> = doc["charts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["chart"]["chart"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["base", "istiod", "gateway"], "{doc}");
}

/// Issue 20: kill -9 (the whole process group: meshstack and the helm it runs) while real
/// helm is installing a chart, and while `down`'s `helm uninstall` runs; each rerun converges
/// with every release deployed once (no duplicate, none stuck pending or uninstalling), and
/// the final `down` leaves nothing.
#[test]
fn kills_inside_real_helm_install_and_uninstall_are_recovered() {
    let env = Env::start("killed", 3);
    let spawn = |verb: &str| {
        use std::os::unix::process::CommandExt;
        env.ms
            .command(&[verb, "--stack", &env.stack, "-o", "json"])
            .args(if verb == "down" { &["--yes"][..] } else { &[] })
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let kill_when = |mut child: std::process::Child, what: &str, state: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let hit = env
                .cluster
                .releases()
                .values()
                .any(|(status, _, _)| state(status));
            if hit {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before {what}"
            );
            assert!(
                std::time::Instant::now() < deadline,
                "no {what} in 2 minutes"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // `--`: util-linux kill would read a bare "-PGID" as an option.
        let status = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status()
            .unwrap();
        assert!(status.success(), "kill -KILL of the group");
        let _ = child.wait();
    };

    kill_when(spawn("up"), "a release pending", &|s| {
        s.starts_with("pending")
    });
    let left = env.cluster.releases();
    assert!(
        left.values().any(|(s, _, _)| s.starts_with("pending")),
        "{left:?}"
    );
    env.ok("up", &["--force-unlock"]);
    let releases = env.cluster.releases();
    assert_eq!(releases.len(), 7, "{releases:?}");
    assert!(
        releases.values().all(|(s, _, _)| s == "deployed"),
        "left {left:?}, now {releases:?}"
    );

    kill_when(spawn("down"), "a release uninstalling", &|s| {
        s == "uninstalling"
    });
    env.ok("up", &["--force-unlock"]);
    let again = env.cluster.releases();
    assert_eq!(again.len(), 7, "{again:?}");
    assert!(again.values().all(|(s, _, _)| s == "deployed"), "{again:?}");
    env.ok("down", &["--yes"]);
    assert_eq!(env.cluster.releases(), BTreeMap::new());
}
