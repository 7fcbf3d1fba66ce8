//! The mesh stages — `istio-base`, `istio`, `jaeger`, `kiali-operator`, `kiali` — on a real
//! `kube::Client` over the in-memory API server, with the recording stand-in for helm: up
//! installs and applies what the stage owns (exact helm argument lists, in order), a second up
//! changes nothing (only `helm list`, no object written), down removes it in the right order,
//! a second down is a no-op.
//!
//! The fake API server runs no controllers and the stand-in helm installs nothing, so the tests
//! play their parts, each where the real one would act:
//! - [`Charts`] wraps the recording helm and does to the cluster what the charts would: the
//!   `gateway` chart's LoadBalancer Service appears on install and goes on uninstall (unless the
//!   test makes its load balancer stuck), the kiali-operator chart's CRD appears, Established,
//!   on install and stays on uninstall (helm never deletes `crds/`). It also notes what the
//!   cluster held at each uninstall, which is how the order of `down` is checked.
//! - The cloud's load balancer controller, the Deployment controller and the Kiali operator are
//!   tasks that act once the stage reports it is waiting for them (a step line from the wait),
//!   so each test also shows that the stage waits rather than finding things ready.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_fake_client::ClientBuilder;
use meshstack::aws::Backoff;
use meshstack::config::Stack;
use meshstack::engine::progress::{Event, EventKind, Reporter};
use meshstack::engine::run::{Direction, Outcome, RunReport, StageResult};
use meshstack::engine::state::{Journal, StateDir};
use meshstack::k8s::apply::StaticResolver;
use meshstack::k8s::helm::{Helm, HelmCli, HelmError, Listed, Release};
use meshstack::stages::kubernetes::KubeAccess;
use meshstack::stages::{istio, istio_base, jaeger, kiali, kiali_operator, Action, Context, Stage};
use serde_json::json;
use tokio::sync::oneshot;

use crate::support::k8s::{
    custom_resource, fake_cluster, fake_helm, helm_calls, is_read, outcome, run_stage_with,
};
use crate::support::{describe, Meshstack};

custom_resource!(KialiCr, "kiali.io", "v1alpha1", "Kiali", "kialis", Namespaced);

const ISTIO_REPO: &str = meshstack::charts::ISTIO_REPO;
const LB_HOSTNAME: &str = "a1b2c3-istio-ingressgateway.elb.us-east-1.amazonaws.com";

/// What the stand-in charts do besides recording.
#[derive(Clone, Copy)]
struct Behaviour {
    /// The kiali-operator chart installs its CRD.
    kiali_crd: bool,
    /// The gateway's load balancer cannot be deleted, so its Service outlives the release.
    stuck_load_balancer: bool,
}

const CHARTS: Behaviour = Behaviour {
    kiali_crd: true,
    stuck_load_balancer: false,
};

/// What the cluster held when a release was uninstalled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AtUninstall {
    release: String,
    gateway_service: bool,
    kiali_cr: bool,
}

/// The recording helm, plus what the charts do to the cluster (see the module docs).
struct Charts {
    cli: HelmCli,
    client: kube::Client,
    behaviour: Behaviour,
    uninstalls: Mutex<Vec<AtUninstall>>,
}

impl Charts {
    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), istio::NAMESPACE)
    }
}

#[async_trait]
impl Helm for Charts {
    async fn find(&self, name: &str, namespace: &str) -> Result<Option<Listed>, HelmError> {
        self.cli.find(name, namespace).await
    }

    async fn user_values(
        &self,
        name: &str,
        namespace: &str,
    ) -> Result<Option<serde_json::Value>, HelmError> {
        self.cli.user_values(name, namespace).await
    }

    async fn upgrade_install(&self, release: &Release) -> Result<(), HelmError> {
        self.cli.upgrade_install(release).await?;
        if release.name == istio::GATEWAY
            && self
                .services()
                .get_opt(istio::GATEWAY)
                .await
                .unwrap()
                .is_none()
        {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": istio::GATEWAY, "namespace": istio::NAMESPACE,
                             "labels": {"istio": "ingressgateway"}},
                "spec": {"type": "LoadBalancer", "selector": {"istio": "ingressgateway"},
                         "ports": [{"name": "http2", "port": 80, "targetPort": 8080}]}
            }))
            .unwrap();
            self.services()
                .create(&PostParams::default(), &svc)
                .await
                .unwrap();
        }
        if release.name == kiali_operator::RELEASE && self.behaviour.kiali_crd {
            seed_established_crd(&self.client, "kialis", "Kiali", "kiali.io", "v1alpha1").await;
        }
        Ok(())
    }

    async fn rollback(&self, name: &str, namespace: &str) -> Result<(), HelmError> {
        self.cli.rollback(name, namespace).await
    }

    async fn uninstall(&self, name: &str, namespace: &str) -> Result<(), HelmError> {
        let crs: Api<KialiCr> = Api::namespaced(self.client.clone(), kiali::NAMESPACE);
        let seen = AtUninstall {
            release: name.to_string(),
            gateway_service: self
                .services()
                .get_opt(istio::GATEWAY)
                .await
                .unwrap()
                .is_some(),
            kiali_cr: crs.get_opt("kiali").await.unwrap().is_some(),
        };
        self.uninstalls.lock().unwrap().push(seen);
        self.cli.uninstall(name, namespace).await?;
        if name == istio::GATEWAY && !self.behaviour.stuck_load_balancer {
            // helm deletes the chart's Service; the cloud controller then deletes the load
            // balancer and lifts the Service's finalizer (the fake deletes at once).
            let _ = self
                .services()
                .delete(istio::GATEWAY, &DeleteParams::default())
                .await;
        }
        Ok(())
    }
}

/// A CRD as a chart's `crds/` would install it, Established.
async fn seed_established_crd(
    client: &kube::Client,
    plural: &str,
    kind: &str,
    group: &str,
    version: &str,
) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = format!("{plural}.{group}");
    if crds.get_opt(&name).await.unwrap().is_some() {
        return;
    }
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural},
                 "versions": [{"name": version, "served": true, "storage": true}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let status = json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}});
    crds.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

struct Fixture {
    cx: Context,
    charts: Arc<Charts>,
    client: kube::Client,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new(behaviour: Behaviour) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let client = fake_cluster(ClientBuilder::new().with_resource::<KialiCr>()).await;
        let state = StateDir::open(&dir.path().join("state"), "k8s-mesh-test").unwrap();
        let journal = Arc::new(Mutex::new(Journal::load(&state).unwrap()));
        let charts = Arc::new(Charts {
            cli: HelmCli {
                binary: fake_helm(dir.path()).display().to_string(),
                kubeconfig: None,
                kube_context: None,
                workdir: None,
            },
            client: client.clone(),
            behaviour,
            uninstalls: Mutex::new(Vec::new()),
        });
        let resolver = StaticResolver::builtin().with("kiali.io/v1alpha1", "Kiali", "kialis", true);
        let mut cx = Context::new(
            Stack::embedded_default(),
            None,
            None,
            Vec::new(),
            Some(journal),
        )
        .with_kube(KubeAccess {
            client: client.clone(),
            resolver: Arc::new(resolver),
            helm: charts.clone(),
        });
        // Polls start small; the deadline only matters to the tests that expect a timeout.
        cx.waits.kubernetes = Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(10),
            Duration::from_secs(20),
        );
        Fixture {
            cx,
            charts,
            client,
            dir,
        }
    }

    fn helm_calls(&self) -> Vec<Vec<String>> {
        helm_calls(self.dir.path())
    }

    /// The `upgrade` calls, with the values file's private folder (one per call) left out.
    fn installs(&self) -> Vec<Vec<String>> {
        crate::support::k8s::installs_by_repository(&self.helm_calls())
            .into_iter()
            .filter(|c| c[0] == "upgrade")
            .map(|mut c| {
                if let Some(i) = c.iter().position(|a| a == "--values") {
                    let name = std::path::Path::new(&c[i + 1]).file_name().unwrap();
                    c[i + 1] = name.to_string_lossy().into_owned();
                }
                c
            })
            .collect()
    }

    fn uninstalls(&self) -> Vec<AtUninstall> {
        self.charts.uninstalls.lock().unwrap().clone()
    }

    fn output(&self, stage: &str, key: &str) -> Option<serde_json::Value> {
        self.cx
            .journal
            .as_ref()
            .unwrap()
            .lock()
            .unwrap()
            .output(stage, key)
            .cloned()
    }

    /// Run one stage through the engine; its result and the events it reported.
    async fn run(&self, stage: &dyn Stage, direction: Direction, reporter: &Watch) -> StageResult {
        run_stage_with(&self.cx, stage, direction, reporter).await
    }

    /// Up, which must change something.
    async fn up_changed(&self, stage: &dyn Stage, reporter: &Watch) -> StageResult {
        let first = self.run(stage, Direction::Forward, reporter).await;
        assert!(matches!(outcome(&first), Outcome::Changed(_)), "{first:?}");
        first
    }
}

/// A reporter that records every event and fires a signal at the first step line starting
/// with a given text — how the stand-in controllers know the stage is waiting for them.
#[derive(Default)]
struct Watch {
    events: Mutex<Vec<Event>>,
    triggers: Mutex<Vec<(String, oneshot::Sender<()>)>>,
}

impl Watch {
    fn on_step(&self, prefix: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.triggers.lock().unwrap().push((prefix.to_string(), tx));
        rx
    }

    fn messages(&self, kind: EventKind) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.event == kind)
            .map(|e| e.message.clone())
            .collect()
    }
}

impl Reporter for Watch {
    fn event(&self, ev: &Event) {
        self.events.lock().unwrap().push(ev.clone());
        if ev.event == EventKind::Step {
            let mut triggers = self.triggers.lock().unwrap();
            if let Some(i) = triggers.iter().position(|(p, _)| ev.message.starts_with(p)) {
                let (_, tx) = triggers.remove(i);
                let _ = tx.send(());
            }
        }
    }

    fn finish(&self, _: &RunReport) {}
}

fn failure(result: StageResult) -> String {
    match result {
        StageResult::Failed { error, .. } => error,
        other => panic!("expected the stage to fail, got {other:?}"),
    }
}

/// The exact `helm upgrade --install` argument list for a release from an HTTP repository.
fn install_args(
    release: &str,
    chart: &str,
    repo: &str,
    version: &str,
    namespace: &str,
    timeout_s: u64,
) -> Vec<String> {
    let values = format!("{namespace}-{release}.yaml");
    [
        "upgrade",
        "--install",
        release,
        chart,
        "--repo",
        repo,
        "--version",
        version,
        "--namespace",
        namespace,
        "--create-namespace",
        "--values",
        &values,
        "--wait",
        "--timeout",
        &format!("{timeout_s}s"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The cloud's load balancer controller: gives the gateway Service an address once the stage
/// waits for it.
fn cloud_lb_controller(
    client: &kube::Client,
    waiting: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), istio::NAMESPACE);
    tokio::spawn(async move {
        waiting.await.unwrap();
        let status = json!({"status": {"loadBalancer": {"ingress": [{"hostname": LB_HOSTNAME}]}}});
        services
            .patch_status(
                istio::GATEWAY,
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap();
    })
}

/// The Deployment controller: reports the Deployment's current generation rolled out and
/// Available once the stage waits for it.
fn deployment_controller(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    waiting: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let name = name.to_string();
    tokio::spawn(async move {
        waiting.await.unwrap();
        make_available(&deployments, &name).await;
    })
}

async fn make_available(deployments: &Api<Deployment>, name: &str) {
    let d = deployments.get(name).await.unwrap();
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = json!({"status": {"observedGeneration": d.metadata.generation, "replicas": replicas,
        "updatedReplicas": replicas, "availableReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True"}]}});
    deployments
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Wait for a stand-in controller to finish, which it does once the stage has waited for it.
async fn joined(task: tokio::task::JoinHandle<()>, what: &str) {
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(done) => done.unwrap(),
        Err(_) => panic!("the stage never waited for {what}"),
    }
}

fn resource_version<K: kube::Resource>(k: &K) -> Option<String> {
    k.meta().resource_version.clone()
}

#[tokio::test]
async fn istio_base_then_istio_install_base_istiod_gateway_in_order_record_the_address_and_uninstall_in_reverse(
) {
    let f = Fixture::new(CHARTS).await;
    // Istio's base chart is a stage of its own (it has no pods: it installs while the node
    // group is created); `istio` installs istiod and the gateway after it.
    let base = istio_base::IstioBase;
    let stage = istio::Istio;

    // plan on an empty cluster: the three releases, istiod carrying the support warning.
    let mut plan = base.plan_up(&f.cx).await.unwrap();
    assert_eq!(plan.len(), 1, "{plan:?}");
    plan.extend(stage.plan_up(&f.cx).await.unwrap());
    let names: Vec<&str> = plan.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "istio-system/istio-base",
            "istio-system/istiod",
            "istio-system/istio-ingressgateway"
        ]
    );
    assert!(plan.iter().all(|c| c.action == Action::Create), "{plan:?}");
    assert_eq!(plan[0].detail, "base-1.18.7");
    assert!(
        plan[1].detail.starts_with(
            "istiod-1.18.7; warning: Istio 1.18.7 supports Kubernetes 1.24 to 1.27 only"
        ),
        "{plan:?}"
    );

    // up: the three charts in order, then the load balancer's address, recorded.
    let watch = Watch::default();
    let lb = cloud_lb_controller(
        &f.client,
        watch.on_step("Service istio-system/istio-ingressgateway:"),
    );
    let first = f.run(&base, Direction::Forward, &watch).await;
    assert_eq!(
        outcome(&first),
        &Outcome::Changed("created 1".into()),
        "{first:?}"
    );
    let first = f.run(&stage, Direction::Forward, &watch).await;
    assert_eq!(
        outcome(&first),
        &Outcome::Changed("created 2".into()),
        "{first:?}"
    );
    joined(lb, "the load balancer").await;
    assert_eq!(
        f.installs(),
        [
            install_args(
                "istio-base",
                "base",
                ISTIO_REPO,
                "1.18.7",
                "istio-system",
                300
            ),
            install_args(
                "istiod",
                "istiod",
                ISTIO_REPO,
                "1.18.7",
                "istio-system",
                600
            ),
            install_args(
                "istio-ingressgateway",
                "gateway",
                ISTIO_REPO,
                "1.18.7",
                "istio-system",
                600
            ),
        ]
    );
    assert_eq!(
        f.output(istio::ID, istio::INGRESS_ADDRESS),
        Some(json!(LB_HOSTNAME))
    );
    let warnings = watch.messages(EventKind::Warn);
    assert!(
        warnings.len() == 1
            && warnings[0].contains("Istio 1.18.7 supports Kubernetes 1.24 to 1.27 only")
            && warnings[0].contains("istio.version"),
        "{warnings:?}"
    );
    let services: Api<Service> = Api::namespaced(f.client.clone(), istio::NAMESPACE);
    let version = resource_version(&services.get(istio::GATEWAY).await.unwrap());

    // Converged: plan is empty; up asks helm only for the releases' state, warns again, and
    // writes nothing.
    assert_eq!(base.plan_up(&f.cx).await.unwrap(), vec![]);
    assert_eq!(stage.plan_up(&f.cx).await.unwrap(), vec![]);
    let calls_before = f.helm_calls().len();
    let watch = Watch::default();
    let second = f.run(&base, Direction::Forward, &watch).await;
    assert_eq!(outcome(&second), &Outcome::Unchanged, "{second:?}");
    let second = f.run(&stage, Direction::Forward, &watch).await;
    assert_eq!(outcome(&second), &Outcome::Unchanged, "{second:?}");
    let new_calls: Vec<Vec<String>> = f.helm_calls().into_iter().skip(calls_before).collect();
    // Per release: `list`, and `get values` to compare what helm holds with what is wanted.
    assert_eq!(new_calls.len(), 6, "{new_calls:?}");
    assert!(new_calls.iter().all(|c| is_read(c)), "{new_calls:?}");
    assert_eq!(watch.messages(EventKind::Warn).len(), 1);
    assert_eq!(
        resource_version(&services.get(istio::GATEWAY).await.unwrap()),
        version
    );

    // down: gateway first, and istiod only once its Service (and so its load balancer) is
    // gone; then (the engine tears `istio-base` down after `istio`) the base chart.
    let down = f.run(&stage, Direction::Reverse, &Watch::default()).await;
    assert_eq!(
        outcome(&down),
        &Outcome::Changed("deleted 2".into()),
        "{down:?}"
    );
    let down = f.run(&base, Direction::Reverse, &Watch::default()).await;
    assert_eq!(
        outcome(&down),
        &Outcome::Changed("deleted 1".into()),
        "{down:?}"
    );
    let order: Vec<(String, bool)> = f
        .uninstalls()
        .into_iter()
        .map(|u| (u.release, u.gateway_service))
        .collect();
    assert_eq!(
        order,
        [
            ("istio-ingressgateway".to_string(), true),
            ("istiod".to_string(), false),
            ("istio-base".to_string(), false),
        ]
    );
    let uninstall_calls: Vec<Vec<String>> = f
        .helm_calls()
        .into_iter()
        .filter(|c| c[0] == "uninstall")
        .collect();
    assert_eq!(
        uninstall_calls,
        ["istio-ingressgateway", "istiod", "istio-base"].map(|r| [
            "uninstall",
            r,
            "--namespace",
            "istio-system",
            "--wait"
        ]
        .map(String::from)
        .to_vec())
    );
    assert!(services.get_opt(istio::GATEWAY).await.unwrap().is_none());

    for again in [
        f.run(&stage, Direction::Reverse, &Watch::default()).await,
        f.run(&base, Direction::Reverse, &Watch::default()).await,
    ] {
        assert_eq!(outcome(&again), &Outcome::Unchanged, "{again:?}");
    }
    assert_eq!(
        f.helm_calls()
            .iter()
            .filter(|c| c[0] == "uninstall")
            .count(),
        3
    );
}

#[tokio::test]
async fn istio_up_fails_naming_the_gateway_service_when_no_load_balancer_comes() {
    let mut f = Fixture::new(CHARTS).await;
    f.cx.waits.kubernetes = Backoff::new(
        Duration::from_millis(1),
        Duration::from_millis(5),
        Duration::from_millis(50),
    );
    let error = failure(
        f.run(&istio::Istio, Direction::Forward, &Watch::default())
            .await,
    );
    assert!(
        error.contains("Service istio-system/istio-ingressgateway"),
        "{error}"
    );
    assert!(error.contains("no load balancer address yet"), "{error}");
    assert_eq!(f.output(istio::ID, istio::INGRESS_ADDRESS), None);
}

#[tokio::test]
async fn istio_down_stops_while_the_gateway_load_balancer_remains() {
    let mut f = Fixture::new(Behaviour {
        stuck_load_balancer: true,
        ..CHARTS
    })
    .await;
    let watch = Watch::default();
    let lb = cloud_lb_controller(
        &f.client,
        watch.on_step("Service istio-system/istio-ingressgateway:"),
    );
    f.up_changed(&istio::Istio, &watch).await;
    joined(lb, "the load balancer").await;

    f.cx.waits.kubernetes = Backoff::new(
        Duration::from_millis(1),
        Duration::from_millis(5),
        Duration::from_millis(50),
    );
    let error = failure(
        f.run(&istio::Istio, Direction::Reverse, &Watch::default())
            .await,
    );
    assert!(
        error.contains("Service istio-system/istio-ingressgateway"),
        "{error}"
    );
    // istiod and base stay until a re-run sees the Service gone: the VPC teardown after
    // this stage must not start while the load balancer holds its subnets.
    let released: Vec<String> = f.uninstalls().into_iter().map(|u| u.release).collect();
    assert_eq!(released, ["istio-ingressgateway"]);
}

#[tokio::test]
async fn jaeger_applies_the_all_in_one_waits_until_available_and_removes_it() {
    let f = Fixture::new(CHARTS).await;
    let stage = jaeger::Jaeger;
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), jaeger::NAMESPACE);
    let services: Api<Service> = Api::namespaced(f.client.clone(), jaeger::NAMESPACE);

    let plan = stage.plan_up(&f.cx).await.unwrap();
    let mut names: Vec<&str> = plan.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Deployment istio-system/jaeger",
            "Service istio-system/tracing",
            "Service istio-system/zipkin"
        ]
    );

    // up: the objects, then a wait that ends only when the Deployment controller reports it
    // Available.
    let watch = Watch::default();
    let controller = deployment_controller(
        &f.client,
        jaeger::NAMESPACE,
        jaeger::DEPLOYMENT,
        watch.on_step("Deployment istio-system/jaeger:"),
    );
    let first = f.run(&stage, Direction::Forward, &watch).await;
    assert_eq!(
        outcome(&first),
        &Outcome::Changed("created 3".into()),
        "{first:?}"
    );
    joined(controller, "the Deployment").await;
    assert!(
        f.helm_calls().is_empty(),
        "jaeger is no chart: {:?}",
        f.helm_calls()
    );

    let deployment = deployments.get(jaeger::DEPLOYMENT).await.unwrap();
    let managers: Vec<String> = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"meshstack".to_string()), "{managers:?}");
    let container = &deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert!(
        container
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "QUERY_BASE_PATH" && e.value.as_deref() == Some("/jaeger")),
        "{container:?}"
    );
    let tracing = services.get("tracing").await.unwrap();
    let ports: Vec<i32> = tracing
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [80, 16685]);
    let zipkin = services.get("zipkin").await.unwrap();
    assert_eq!(
        zipkin.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        9411
    );
    let versions = (
        resource_version(&deployment),
        resource_version(&tracing),
        resource_version(&zipkin),
    );

    // Converged: nothing to plan, nothing written.
    assert_eq!(stage.plan_up(&f.cx).await.unwrap(), vec![]);
    let second = f.run(&stage, Direction::Forward, &Watch::default()).await;
    assert_eq!(outcome(&second), &Outcome::Unchanged, "{second:?}");
    assert_eq!(
        (
            resource_version(&deployments.get(jaeger::DEPLOYMENT).await.unwrap()),
            resource_version(&services.get("tracing").await.unwrap()),
            resource_version(&services.get("zipkin").await.unwrap()),
        ),
        versions
    );

    let down = f.run(&stage, Direction::Reverse, &Watch::default()).await;
    assert_eq!(
        outcome(&down),
        &Outcome::Changed("deleted 3".into()),
        "{down:?}"
    );
    assert!(deployments
        .get_opt(jaeger::DEPLOYMENT)
        .await
        .unwrap()
        .is_none());
    assert!(services.get_opt("tracing").await.unwrap().is_none());
    assert!(services.get_opt("zipkin").await.unwrap().is_none());
    let again = f.run(&stage, Direction::Reverse, &Watch::default()).await;
    assert_eq!(outcome(&again), &Outcome::Unchanged, "{again:?}");
}

#[tokio::test]
async fn kiali_operator_then_kiali_apply_the_cr_and_remove_the_cr_before_the_operator() {
    let f = Fixture::new(CHARTS).await;
    // The operator's chart is a stage of its own (it needs only nodes: it installs while
    // Istio's charts do); `kiali` applies the CR that refers to Istio, Prometheus and Jaeger.
    let operator_stage = kiali_operator::KialiOperator;
    let stage = kiali::Kiali;
    let crs: Api<KialiCr> = Api::namespaced(f.client.clone(), kiali::NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), kiali::NAMESPACE);

    // The Kiali operator: deploys Kiali for the CR once the stage waits for it.
    let watch = Watch::default();
    let waiting = watch.on_step("Deployment istio-system/kiali:");
    let operator = tokio::spawn({
        let (crs, deployments) = (crs.clone(), deployments.clone());
        async move {
            waiting.await.unwrap();
            assert!(
                crs.get_opt("kiali").await.unwrap().is_some(),
                "the stage waits for Kiali only after applying its CR"
            );
            let d: Deployment = serde_json::from_value(json!({
                "metadata": {"name": "kiali", "namespace": "istio-system"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "kiali"}},
                         "template": {"metadata": {"labels": {"app": "kiali"}},
                                      "spec": {"containers": [{"name": "kiali", "image": "quay.io/kiali/kiali:v1.73.2"}]}}}
            }))
            .unwrap();
            deployments
                .create(&PostParams::default(), &d)
                .await
                .unwrap();
            make_available(&deployments, "kiali").await;
        }
    });
    let first = f.run(&operator_stage, Direction::Forward, &watch).await;
    assert_eq!(
        outcome(&first),
        &Outcome::Changed("created 1".into()),
        "{first:?}"
    );
    let first = f.run(&stage, Direction::Forward, &watch).await;
    assert_eq!(
        outcome(&first),
        &Outcome::Changed("created 1".into()),
        "{first:?}"
    );
    joined(operator, "Kiali").await;
    assert_eq!(
        f.installs(),
        [install_args(
            "kiali-operator",
            "kiali-operator",
            "https://kiali.org/helm-charts",
            "1.73.2",
            "kiali-operator",
            600
        )]
    );
    let cr = crs.get("kiali").await.unwrap();
    let managers: Vec<String> = cr
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"meshstack".to_string()), "{managers:?}");
    let services = &cr.spec["external_services"];
    assert_eq!(
        services["prometheus"]["url"],
        "http://prom-kube-prometheus-stack-prometheus.prometheus:9090"
    );
    assert_eq!(
        services["tracing"]["in_cluster_url"],
        "http://tracing.istio-system:16685/jaeger"
    );
    assert_eq!(
        cr.spec["deployment"]["accessible_namespaces"],
        json!(["ecommerce"])
    );
    let version = resource_version(&cr);

    // Converged.
    assert_eq!(operator_stage.plan_up(&f.cx).await.unwrap(), vec![]);
    assert_eq!(stage.plan_up(&f.cx).await.unwrap(), vec![]);
    let calls_before = f.helm_calls().len();
    let second = f
        .run(&operator_stage, Direction::Forward, &Watch::default())
        .await;
    assert_eq!(outcome(&second), &Outcome::Unchanged, "{second:?}");
    let second = f.run(&stage, Direction::Forward, &Watch::default()).await;
    assert_eq!(outcome(&second), &Outcome::Unchanged, "{second:?}");
    let new_calls: Vec<Vec<String>> = f.helm_calls().into_iter().skip(calls_before).collect();
    assert!(
        !new_calls.is_empty() && new_calls.iter().all(|c| is_read(c)),
        "{new_calls:?}"
    );
    assert_eq!(resource_version(&crs.get("kiali").await.unwrap()), version);

    // down: the CR is gone before the operator, whose finalizer on it cleans up Kiali, goes
    // (the engine tears `kiali-operator` down after `kiali`, which depends on it).
    let down = f.run(&stage, Direction::Reverse, &Watch::default()).await;
    assert_eq!(
        outcome(&down),
        &Outcome::Changed("deleted 1".into()),
        "{down:?}"
    );
    assert!(crs.get_opt("kiali").await.unwrap().is_none());
    assert!(f.uninstalls().is_empty(), "the operator outlives the CR");
    let down = f
        .run(&operator_stage, Direction::Reverse, &Watch::default())
        .await;
    assert_eq!(
        outcome(&down),
        &Outcome::Changed("deleted 1".into()),
        "{down:?}"
    );
    let uninstalls = f.uninstalls();
    assert_eq!(uninstalls.len(), 1, "{uninstalls:?}");
    assert_eq!(
        (uninstalls[0].release.as_str(), uninstalls[0].kiali_cr),
        ("kiali-operator", false)
    );

    for again in [
        f.run(&stage, Direction::Reverse, &Watch::default()).await,
        f.run(&operator_stage, Direction::Reverse, &Watch::default())
            .await,
    ] {
        assert_eq!(outcome(&again), &Outcome::Unchanged, "{again:?}");
    }
    assert_eq!(f.uninstalls().len(), 1);
}

#[tokio::test]
async fn kiali_waits_for_its_crd_before_applying_the_cr() {
    let mut f = Fixture::new(Behaviour {
        kiali_crd: false,
        ..CHARTS
    })
    .await;
    f.cx.waits.kubernetes = Backoff::new(
        Duration::from_millis(1),
        Duration::from_millis(5),
        Duration::from_millis(50),
    );
    f.run(
        &kiali_operator::KialiOperator,
        Direction::Forward,
        &Watch::default(),
    )
    .await;
    let error = failure(
        f.run(&kiali::Kiali, Direction::Forward, &Watch::default())
            .await,
    );
    assert!(error.contains("kialis.kiali.io"), "{error}");
    let crs: Api<KialiCr> = Api::namespaced(f.client.clone(), kiali::NAMESPACE);
    assert!(crs.get_opt("kiali").await.unwrap().is_none());
}

#[test]
fn status_prints_the_port_forwards() {
    let ms = Meshstack::new(None);
    // Nothing is up: exit 3.
    let text = ms.run(&["status"]);
    assert_eq!(text.status.code(), Some(3), "{}", describe(&text));
    let stdout = String::from_utf8_lossy(&text.stdout);
    for command in [
        "kubectl -n istio-system port-forward svc/kiali 20001:20001",
        "kubectl -n istio-system port-forward svc/tracing 16686:80",
        "kubectl -n prometheus port-forward svc/prom-grafana 3000:80",
    ] {
        assert!(stdout.contains(command), "{command}: {}", describe(&text));
    }

    let json_out = ms.run(&["status", "-o", "json"]);
    assert_eq!(json_out.status.code(), Some(3), "{}", describe(&json_out));
    let doc: serde_json::Value = serde_json::from_slice(&json_out.stdout).unwrap();
    let forwards: Vec<(String, String)> = doc["port_forwards"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc}"))
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["command"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = meshstack::names::port_forwards()
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
    assert_eq!(forwards, want);
}
