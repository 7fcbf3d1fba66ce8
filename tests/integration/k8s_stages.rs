//! The Kubernetes stages on a real `kube::Client` over the in-memory API server, with a
//! recording stand-in for helm: up creates what the stage owns, a second up changes nothing
//! (no helm install, no object written), down removes it, a second down is a no-op.

use std::sync::{Arc, Mutex};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube_fake_client::ClientBuilder;
use meshstack::config::Stack;
use meshstack::engine::run::{Direction, Outcome, StageResult};
use meshstack::engine::state::{Journal, StateDir};
use meshstack::k8s::apply::StaticResolver;
use meshstack::k8s::helm::HelmCli;
use meshstack::stages::kubernetes::KubeAccess;
use meshstack::stages::{prometheus, Context};
use serde_json::json;

use crate::support::k8s::{
    custom_resource, fake_cluster, fake_helm, helm_calls, is_read, outcome, run_stage,
};

custom_resource!(
    PodMonitor,
    "monitoring.coreos.com",
    "v1",
    "PodMonitor",
    "podmonitors",
    Namespaced
);
custom_resource!(
    ServiceMonitor,
    "monitoring.coreos.com",
    "v1",
    "ServiceMonitor",
    "servicemonitors",
    Namespaced
);

/// A stage context over `client` and the stand-in helm in `dir`, with a journal in `dir`.
fn context(client: kube::Client, dir: &std::path::Path) -> Context {
    let state = StateDir::open(&dir.join("state"), "k8s-test").unwrap();
    let journal = Arc::new(Mutex::new(Journal::load(&state).unwrap()));
    let resolver = StaticResolver::builtin()
        .with(
            "monitoring.coreos.com/v1",
            "PodMonitor",
            "podmonitors",
            true,
        )
        .with(
            "monitoring.coreos.com/v1",
            "ServiceMonitor",
            "servicemonitors",
            true,
        );
    let helm = HelmCli {
        binary: fake_helm(dir).display().to_string(),
        kubeconfig: None,
        kube_context: None,
        workdir: None,
    };
    Context::new(
        Stack::embedded_default(),
        None,
        None,
        Vec::new(),
        Some(journal),
    )
    .with_kube(KubeAccess {
        client,
        resolver: Arc::new(resolver),
        helm: Arc::new(helm),
    })
}

/// What the chart would install before the monitors can be applied: the two CRDs, established.
async fn seed_established_crds(client: &kube::Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (plural, kind) in [
        ("podmonitors", "PodMonitor"),
        ("servicemonitors", "ServiceMonitor"),
    ] {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
            "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural},
                     "versions": [{"name": "v1", "served": true, "storage": true}]}
        }))
        .unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
        let status = json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}});
        crds.patch_status(
            &crd.metadata.name.clone().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn prometheus_installs_the_chart_then_the_monitors_idempotently_and_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let builder = ClientBuilder::new()
        .with_resource::<PodMonitor>()
        .with_resource::<ServiceMonitor>();
    let client = fake_cluster(builder).await;
    seed_established_crds(&client).await;
    let cx = context(client.clone(), dir.path());
    let stage = prometheus::Prometheus;

    // up: one pinned, waited install of the chart with the repo's values, then the monitors.
    let first = run_stage(&cx, &stage, Direction::Forward).await;
    assert!(matches!(outcome(&first), Outcome::Changed(_)), "{first:?}");
    let installs: Vec<Vec<String>> =
        crate::support::k8s::installs_by_repository(&helm_calls(dir.path()))
            .into_iter()
            .filter(|c| c[0] == "upgrade")
            .collect();
    assert_eq!(installs.len(), 1, "{installs:?}");
    let args = &installs[0];
    assert_eq!(
        args[..9],
        [
            "upgrade",
            "--install",
            "prom",
            "kube-prometheus-stack",
            "--repo",
            "https://prometheus-community.github.io/helm-charts",
            "--version",
            meshstack::charts::PROMETHEUS_VERSION,
            "--namespace"
        ]
    );
    assert_eq!(args[9], "prometheus");
    assert!(args.contains(&"--wait".to_string()) && args.contains(&"--timeout".to_string()));
    assert!(
        args.iter().any(|a| a.ends_with("prometheus-prom.yaml")),
        "values from a file: {args:?}"
    );

    let pod_monitors: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "prometheus",
        &kube::api::ApiResource::erase::<PodMonitor>(&()),
    );
    let monitor = pod_monitors.get("envoy-stats-monitor").await.unwrap();
    let managers: Vec<_> = monitor
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"meshstack".to_string()), "{managers:?}");
    assert_eq!(monitor.metadata.labels.as_ref().unwrap()["release"], "prom");
    let version = monitor.metadata.resource_version.clone();

    // up again: helm is only asked for the release's state; nothing is written.
    let calls_before = helm_calls(dir.path()).len();
    let second = run_stage(&cx, &stage, Direction::Forward).await;
    assert_eq!(outcome(&second), &Outcome::Unchanged, "{second:?}");
    let new_calls: Vec<Vec<String>> = helm_calls(dir.path())
        .into_iter()
        .skip(calls_before)
        .collect();
    assert!(new_calls.iter().all(|c| is_read(c)), "{new_calls:?}");
    let again = pod_monitors.get("envoy-stats-monitor").await.unwrap();
    assert_eq!(
        again.metadata.resource_version, version,
        "a converged up rewrote the PodMonitor"
    );

    // down: the monitors and the release are gone; down again is a no-op.
    let down = run_stage(&cx, &stage, Direction::Reverse).await;
    assert!(matches!(outcome(&down), Outcome::Changed(_)), "{down:?}");
    assert!(pod_monitors
        .get_opt("envoy-stats-monitor")
        .await
        .unwrap()
        .is_none());
    assert!(helm_calls(dir.path())
        .iter()
        .any(|c| c[..2] == ["uninstall", "prom"]));
    let uninstalls = helm_calls(dir.path())
        .iter()
        .filter(|c| c[0] == "uninstall")
        .count();
    let again = run_stage(&cx, &stage, Direction::Reverse).await;
    assert_eq!(outcome(&again), &Outcome::Unchanged, "{again:?}");
    assert_eq!(
        helm_calls(dir.path())
            .iter()
            .filter(|c| c[0] == "uninstall")
            .count(),
        uninstalls
    );
}

#[tokio::test]
async fn prometheus_waits_for_its_crds_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let builder = ClientBuilder::new()
        .with_resource::<PodMonitor>()
        .with_resource::<ServiceMonitor>();
    let client = fake_cluster(builder).await;
    let mut cx = context(client, dir.path());
    cx.waits.kubernetes = meshstack::aws::Backoff::new(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_millis(5),
        std::time::Duration::from_millis(50),
    );
    let result = run_stage(&cx, &prometheus::Prometheus, Direction::Forward).await;
    match result {
        StageResult::Failed { error, .. } => {
            assert!(
                error.contains("podmonitors.monitoring.coreos.com"),
                "{error}"
            )
        }
        other => panic!("expected a timeout naming the CRD, got {other:?}"),
    }
}
