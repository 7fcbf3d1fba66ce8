//! The apply layer (`meshstack::k8s::apply`) on a real `kube::Client` over kube-fake-client's
//! in-memory API server: apply creates what the manifests say, a second apply writes nothing,
//! delete removes it all and a second delete is a no-op — for built-in kinds and a custom
//! resource — plus the waits on conditions.
//!
//! What the fake does and does not model is listed in `src/k8s/apply.rs`; the last test here
//! pins the one behaviour the apply layer works around (a no-op apply bumps resourceVersion).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::Client;
use kube_fake_client::{interceptor, ClientBuilder};
use meshstack::aws::Backoff;
use meshstack::k8s::apply::{
    apply_all, delete_all, get_opt, observe_all, parse_manifests, wait_crd_established,
    wait_deployment_available, wait_gone, wait_service_lb_address, ApplyError, Effect, ObjectRef,
    State, StaticResolver, Wait, FIELD_MANAGER,
};
use serde_json::json;

use crate::support::k8s::{custom_resource, fake_cluster_with};

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
  namespace: ecommerce
  labels: {app: frontend}
spec:
  replicas: 2
  selector:
    matchLabels: {app: frontend}
  template:
    metadata:
      labels: {app: frontend}
    spec:
      serviceAccountName: frontend
      containers:
        - name: frontend
          image: example.com/frontend:1.0
          ports:
            - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: frontend
  namespace: ecommerce
spec:
  selector: {app: frontend}
  ports:
    - name: http
      port: 80
      targetPort: 8080
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: frontend
  namespace: ecommerce
---
apiVersion: v1
kind: Namespace
metadata:
  name: ecommerce
  labels:
    istio-injection: enabled
"#;

/// The requests that write, as `verb namespace/name`, in the order the fake saw them.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<String>>>);

impl Writes {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    fn interceptors(&self) -> interceptor::Funcs {
        let (p, d) = (self.0.clone(), self.0.clone());
        interceptor::Funcs::new()
            .patch(move |cx| {
                p.lock()
                    .unwrap()
                    .push(format!("patch {}/{}", cx.namespace, cx.name));
                Ok(None)
            })
            .delete(move |cx| {
                d.lock()
                    .unwrap()
                    .push(format!("delete {}/{}", cx.namespace, cx.name));
                Ok(None)
            })
    }
}

async fn fake(writes: &Writes) -> Client {
    fake_cluster_with(
        ClientBuilder::new()
            .with_interceptor_funcs(writes.interceptors())
            .with_resource::<VirtualService>()
            .with_resource::<NodePool>(),
        &["karpenter.sh/v1/nodepools"],
    )
    .await
}

fn resolver() -> StaticResolver {
    StaticResolver::builtin()
        .with(
            "networking.istio.io/v1beta1",
            "VirtualService",
            "virtualservices",
            true,
        )
        .with("karpenter.sh/v1", "NodePool", "nodepools", false)
}

fn quick(progress: &(dyn Fn(&str) + Send + Sync)) -> Wait<'_> {
    Wait {
        backoff: Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(10),
            Duration::from_secs(5),
        ),
        progress,
    }
}

fn no_progress(_: &str) {}

/// resourceVersion of every object in `objects`, as the cluster has it.
async fn versions(
    client: &Client,
    r: &StaticResolver,
    objects: &[DynamicObject],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for o in objects {
        let object = ObjectRef::of(o);
        let live = get_opt(client, r, &object).await.unwrap().expect("exists");
        out.insert(object.to_string(), live.metadata.resource_version.unwrap());
    }
    out
}

fn effects(applied: &[meshstack::k8s::apply::Applied]) -> Vec<(String, Effect)> {
    applied
        .iter()
        .map(|a| (a.object.to_string(), a.effect))
        .collect()
}

#[tokio::test]
async fn apply_converges_and_delete_is_idempotent() {
    let writes = Writes::default();
    let client = fake(&writes).await;
    let r = resolver();
    let objects = parse_manifests(APP, "app.yaml").unwrap();

    // Nothing there yet.
    let seen = observe_all(&client, &r, &objects, FIELD_MANAGER)
        .await
        .unwrap();
    assert!(seen.iter().all(|(_, s)| *s == State::Missing), "{seen:?}");

    // First apply: everything created, namespace first, workload last.
    let applied = apply_all(&client, &r, &objects, FIELD_MANAGER)
        .await
        .unwrap();
    assert_eq!(
        effects(&applied),
        [
            ("Namespace ecommerce".to_string(), Effect::Created),
            ("ServiceAccount ecommerce/frontend".into(), Effect::Created),
            ("Service ecommerce/frontend".into(), Effect::Created),
            ("Deployment ecommerce/frontend".into(), Effect::Created),
        ]
    );
    assert_eq!(
        writes.take(),
        [
            "patch /ecommerce",
            "patch ecommerce/frontend",
            "patch ecommerce/frontend",
            "patch ecommerce/frontend"
        ]
    );

    // The objects hold the manifests' fields, owned by meshstack.
    let deployment = Api::<Deployment>::namespaced(client.clone(), "ecommerce")
        .get("frontend")
        .await
        .unwrap();
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let container = &spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("example.com/frontend:1.0"));
    let managers = deployment.metadata.managed_fields.as_ref().unwrap();
    assert_eq!(managers.len(), 1, "{managers:?}");
    assert_eq!(managers[0].manager.as_deref(), Some(FIELD_MANAGER));
    assert_eq!(managers[0].operation.as_deref(), Some("Apply"));
    let annotations = deployment.metadata.annotations.as_ref().unwrap();
    assert!(annotations.contains_key("meshstack.io/manifest-hash"));
    let svc = Api::<Service>::namespaced(client.clone(), "ecommerce")
        .get("frontend")
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 80);
    let ns = get_opt(&client, &r, &ObjectRef::of(&objects[3]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ns.metadata.labels.unwrap()["istio-injection"], "enabled");
    assert_eq!(ns.metadata.namespace, None);

    // Second apply: nothing written, nothing changed.
    let before = versions(&client, &r, &objects).await;
    let applied = apply_all(&client, &r, &objects, FIELD_MANAGER)
        .await
        .unwrap();
    assert!(applied.iter().all(|a| !a.changed()), "{applied:?}");
    assert_eq!(writes.take(), Vec::<String>::new(), "no mutating call");
    assert_eq!(versions(&client, &r, &objects).await, before);
    let seen = observe_all(&client, &r, &objects, FIELD_MANAGER)
        .await
        .unwrap();
    assert!(seen.iter().all(|(_, s)| *s == State::Converged), "{seen:?}");

    // A changed manifest: only that object is written.
    let scaled = parse_manifests(&APP.replace("replicas: 2", "replicas: 3"), "app.yaml").unwrap();
    let seen = observe_all(&client, &r, &scaled, FIELD_MANAGER)
        .await
        .unwrap();
    assert_eq!(seen[3], (ObjectRef::of(&scaled[0]), State::Differs));
    let applied = apply_all(&client, &r, &scaled, FIELD_MANAGER)
        .await
        .unwrap();
    let changed: Vec<String> = applied
        .iter()
        .filter(|a| a.changed())
        .map(|a| a.object.to_string())
        .collect();
    assert_eq!(changed, ["Deployment ecommerce/frontend"]);
    assert_eq!(applied[3].effect, Effect::Updated);
    assert_eq!(writes.take(), ["patch ecommerce/frontend"]);

    // Delete: reverse order, everything gone.
    let deleted = delete_all(&client, &r, &scaled).await.unwrap();
    assert!(deleted.iter().all(|d| d.existed), "{deleted:?}");
    assert_eq!(
        writes.take(),
        [
            "delete ecommerce/frontend",
            "delete ecommerce/frontend",
            "delete ecommerce/frontend",
            "delete /ecommerce"
        ]
    );
    assert_eq!(deleted[0].object.kind, "Deployment");
    assert_eq!(deleted[3].object.kind, "Namespace");
    for o in &objects {
        assert!(get_opt(&client, &r, &ObjectRef::of(o))
            .await
            .unwrap()
            .is_none());
    }
    let refs: Vec<ObjectRef> = objects.iter().map(ObjectRef::of).collect();
    wait_gone(&client, &r, &refs, quick(&no_progress))
        .await
        .unwrap();

    // Delete again: no error, nothing existed.
    let deleted = delete_all(&client, &r, &scaled).await.unwrap();
    assert!(deleted.iter().all(|d| !d.existed), "{deleted:?}");
}

#[tokio::test]
async fn fields_another_manager_took_are_taken_back() {
    let writes = Writes::default();
    let client = fake(&writes).await;
    let r = resolver();
    let manifest =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: ecommerce}\ndata: {mode: demo}\n";
    let objects = parse_manifests(manifest, "cm.yaml").unwrap();
    apply_all(&client, &r, &objects, FIELD_MANAGER)
        .await
        .unwrap();

    // Someone applies a different value under their own manager (taking the field over).
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ecommerce");
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": "theirs"}});
    cms.patch(
        "settings",
        &PatchParams::apply("kubectl").force(),
        &Patch::Apply(&theirs),
    )
    .await
    .unwrap();
    let seen = observe_all(&client, &r, &objects, FIELD_MANAGER)
        .await
        .unwrap();
    assert_eq!(seen[0].1, State::Differs);

    // Without force, a server refuses meshstack's apply (this is what force avoids).
    let conflict = cms
        .patch(
            "settings",
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"mode": "demo"}})),
        )
        .await
        .unwrap_err();
    assert!(conflict.to_string().contains("conflict"), "{conflict}");

    writes.take();
    let applied = apply_all(&client, &r, &objects, FIELD_MANAGER)
        .await
        .unwrap();
    assert_eq!(applied[0].effect, Effect::Updated);
    let cm = cms.get("settings").await.unwrap();
    assert_eq!(cm.data.unwrap()["mode"], "demo");
    let owners: Vec<String> = cm
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:data/f:mode").is_some())
        })
        .map(|m| m.manager.clone().unwrap())
        .collect();
    assert_eq!(owners, [FIELD_MANAGER], "meshstack owns data.mode again");
}

custom_resource!(
    VirtualService,
    "networking.istio.io",
    "v1beta1",
    "VirtualService",
    "virtualservices",
    Namespaced
);
custom_resource!(
    NodePool,
    "karpenter.sh",
    "v1",
    "NodePool",
    "nodepools",
    Cluster
);

const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: frontend
  namespace: ecommerce
spec:
  hosts: ["*"]
  gateways: [ecommerce-gateway]
  http:
    - route:
        - destination: {host: frontend, port: {number: 80}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ecommerce}
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: default}
spec:
  template:
    metadata:
      labels: {managedBy: karpenter, billing-team: ecommerce}
  disruption: {consolidationPolicy: WhenEmptyOrUnderutilized}
"#;

#[tokio::test]
async fn custom_resources_apply_converge_and_delete() {
    let writes = Writes::default();
    let client = fake(&writes).await;
    let r = resolver();
    let objects = parse_manifests(ROUTES, "routes.yaml").unwrap();

    let applied = apply_all(&client, &r, &objects, FIELD_MANAGER)
        .await
        .unwrap();
    assert_eq!(
        effects(&applied),
        [
            ("Namespace ecommerce".to_string(), Effect::Created),
            ("VirtualService ecommerce/frontend".into(), Effect::Created),
            ("NodePool default".into(), Effect::Created),
        ]
    );
    let pool = Api::<NodePool>::all(client.clone())
        .get("default")
        .await
        .unwrap();
    assert_eq!(pool.metadata.namespace, None, "cluster-scoped");
    assert_eq!(
        pool.spec["template"]["metadata"]["labels"]["billing-team"],
        "ecommerce"
    );
    let listed = Api::<NodePool>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.namespace, None);
    let vs = Api::<VirtualService>::namespaced(client.clone(), "ecommerce")
        .get("frontend")
        .await
        .unwrap();
    assert_eq!(vs.spec["gateways"], json!(["ecommerce-gateway"]));
    assert_eq!(
        vs.spec["http"][0]["route"][0]["destination"]["port"]["number"],
        80
    );
    writes.take();

    let applied = apply_all(&client, &r, &objects, FIELD_MANAGER)
        .await
        .unwrap();
    assert!(applied.iter().all(|a| !a.changed()), "{applied:?}");
    assert!(writes.take().is_empty());

    let deleted = delete_all(&client, &r, &objects).await.unwrap();
    assert!(deleted.iter().all(|d| d.existed));
    assert_eq!(deleted[2].object.kind, "Namespace", "deleted last");
    assert!(Api::<NodePool>::all(client.clone())
        .get_opt("default")
        .await
        .unwrap()
        .is_none());
    let deleted = delete_all(&client, &r, &objects).await.unwrap();
    assert!(deleted.iter().all(|d| !d.existed));
}

#[tokio::test]
async fn namespaces_are_checked_against_the_kind_before_any_request() {
    let writes = Writes::default();
    let client = fake(&writes).await;
    let r = resolver();
    for (yaml, want) in [
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
            "Deployment d is namespaced but has no metadata.namespace",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: n, namespace: x}\n",
            "Namespace x/n is cluster-scoped",
        ),
        (
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: x}\n",
            "the cluster does not serve Widget in example.com/v1",
        ),
    ] {
        let objects = parse_manifests(yaml, "t.yaml").unwrap();
        let err = apply_all(&client, &r, &objects, FIELD_MANAGER)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }
    assert!(writes.take().is_empty());
    // A kind the cluster does not serve has no objects: nothing to read, nothing to delete.
    let widget = parse_manifests(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: x}\n",
        "t",
    )
    .unwrap();
    assert!(get_opt(&client, &r, &ObjectRef::of(&widget[0]))
        .await
        .unwrap()
        .is_none());
    assert!(!delete_all(&client, &r, &widget).await.unwrap()[0].existed);
}

/// Lines reported through a wait's progress callback; the first one also fires `first`.
struct Progress {
    lines: Mutex<Vec<String>>,
    first: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Progress {
    fn new() -> (Arc<Self>, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let p = Arc::new(Progress {
            lines: Mutex::new(Vec::new()),
            first: Mutex::new(Some(tx)),
        });
        (p, rx)
    }

    fn report(&self, line: &str) {
        self.lines.lock().unwrap().push(line.to_string());
        if let Some(tx) = self.first.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn waits_report_progress_until_the_condition_holds() {
    let writes = Writes::default();
    let client = fake(&writes).await;
    let r = resolver();
    let lb = "apiVersion: v1\nkind: Service\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  type: LoadBalancer\n  ports: [{port: 80}]\n";
    let objects = parse_manifests(&format!("{APP}---\n{lb}"), "app.yaml").unwrap();
    apply_all(&client, &r, &objects, FIELD_MANAGER)
        .await
        .unwrap();

    // The Deployment becomes Available once the wait has reported that it is not.
    let (progress, first) = Progress::new();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "ecommerce");
    let generation = deployments
        .get("frontend")
        .await
        .unwrap()
        .metadata
        .generation;
    let controller = tokio::spawn({
        let deployments = deployments.clone();
        async move {
            first.await.unwrap();
            let status = json!({"status": {"observedGeneration": generation, "replicas": 2, "updatedReplicas": 2,
                "availableReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]}});
            deployments
                .patch_status("frontend", &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    });
    let p = progress.clone();
    let report = move |line: &str| p.report(line);
    wait_deployment_available(&client, "ecommerce", "frontend", quick(&report))
        .await
        .unwrap();
    controller.await.unwrap();
    let lines = progress.lines.lock().unwrap().clone();
    assert_eq!(lines[0], "Deployment ecommerce/frontend: no status yet");

    // The load balancer's address is returned once it has one.
    let (progress, first) = Progress::new();
    let services: Api<Service> = Api::namespaced(client.clone(), "istio-system");
    let cloud = tokio::spawn({
        let services = services.clone();
        async move {
            first.await.unwrap();
            let status = json!({"status": {"loadBalancer": {"ingress": [{"hostname": "abc.elb.eu-west-1.amazonaws.com"}]}}});
            services
                .patch_status("gw", &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    });
    let p = progress.clone();
    let report = move |line: &str| p.report(line);
    let address = wait_service_lb_address(&client, "istio-system", "gw", quick(&report))
        .await
        .unwrap();
    cloud.await.unwrap();
    assert_eq!(address, "abc.elb.eu-west-1.amazonaws.com");
    assert_eq!(
        progress.lines.lock().unwrap()[0],
        "Service istio-system/gw: no load balancer address yet"
    );

    // A ClusterIP Service never gets one: fail at once instead of waiting out the deadline.
    let err = wait_service_lb_address(&client, "ecommerce", "frontend", quick(&no_progress))
        .await
        .unwrap_err();
    assert!(matches!(err, ApplyError::Failed { .. }), "{err}");
}

#[tokio::test]
async fn a_crd_is_waited_for_and_a_wait_times_out_with_the_last_state() {
    let writes = Writes::default();
    let client = fake(&writes).await;
    let r = resolver();
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object}}
"#;
    let objects = parse_manifests(crd, "crd.yaml").unwrap();
    apply_all(&client, &r, &objects, FIELD_MANAGER)
        .await
        .unwrap();

    let short = Wait {
        backoff: Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
            Duration::from_millis(30),
        ),
        progress: &no_progress,
    };
    let err = wait_crd_established(&client, "widgets.example.com", short)
        .await
        .unwrap_err();
    match &err {
        ApplyError::Timeout { what, last, .. } => {
            assert_eq!(what, "CustomResourceDefinition widgets.example.com");
            assert_eq!(last, "not established yet");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("re-run to keep waiting"), "{err}");

    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    let status = json!({"status": {"conditions": [{"type": "Established", "status": "True"}]}});
    crds.patch_status(
        "widgets.example.com",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();
    wait_crd_established(&client, "widgets.example.com", short)
        .await
        .unwrap();

    // Waiting for something that stays: times out naming it.
    let refs = [ObjectRef::of(&objects[0])];
    let err = wait_gone(&client, &r, &refs, short).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("CustomResourceDefinition widgets.example.com still exists"),
        "{err}"
    );
}

/// The fake's one divergence the apply layer works around: a server-side apply that changes
/// nothing still bumps resourceVersion (a real API server keeps it). If this starts failing, the
/// fake got closer to a real server; update the notes in `src/k8s/apply.rs`.
#[tokio::test]
async fn the_fake_bumps_resource_version_on_a_no_op_apply() {
    let client = ClientBuilder::new().build().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
    let pp = PatchParams::apply(FIELD_MANAGER);
    let first = cms.patch("c", &pp, &Patch::Apply(&body)).await.unwrap();
    let second = cms.patch("c", &pp, &Patch::Apply(&body)).await.unwrap();
    assert_ne!(
        first.metadata.resource_version,
        second.metadata.resource_version
    );
    assert_ne!(first.metadata.generation, second.metadata.generation);
}

/// Why `support::k8s::fake_cluster` routes Namespace paths: the bare fake cannot serve
/// `/api/v1/namespaces/<name>`. If this starts failing, the fake was fixed; drop the route.
#[tokio::test]
async fn the_bare_fake_cannot_serve_a_namespace_by_name() {
    let client = ClientBuilder::new().build().await.unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let err = namespaces.get_opt("ecommerce").await.unwrap_err();
    assert!(err.to_string().contains("Invalid path"), "{err}");
}
