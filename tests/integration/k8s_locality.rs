//! The `locality` stage on the in-memory API server: the orders rule is generated from the
//! zones of the nodes the app's pods run on and passes Istio's DestinationRule schema;
//! products-service gets `internalTrafficPolicy: Local` only when every products client has a
//! Ready products pod on its node (or with `--force`, with a warning); the field is owned by
//! the stage's own field manager; a second `up` writes nothing; `down` reverts both.
//!
//! What the fake cannot do is played by the test: nodes, pods and their status are seeded
//! (`support::k8s::placement`) as the scheduler and kubelets would leave them, and the
//! products Service is applied as the `app` stage applies it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject};
use kube_fake_client::ClientBuilder;
use meshstack::config::Stack;
use meshstack::engine::progress::{EventKind, RecordingReporter};
use meshstack::engine::run::{Direction, Outcome, StageResult};
use meshstack::k8s::apply::{self, StaticResolver};
use meshstack::render::{self, RenderInputs};
use meshstack::stages::kubernetes::objects;
use meshstack::stages::{app, locality, Context};
use serde_json::{json, Value};

use crate::contracts::{karpenter_files, Crds};
use crate::support::k8s::{
    custom_resource, fake_cluster, outcome, placement, run_stage, run_stage_with, stage_context,
};
use crate::support::upstream::upstream;

custom_resource!(
    DestinationRule,
    "networking.istio.io",
    "v1beta1",
    "DestinationRule",
    "destinationrules",
    Namespaced
);

/// The in-memory API server, knowing DestinationRules.
async fn cluster() -> kube::Client {
    fake_cluster(ClientBuilder::new().with_resource::<DestinationRule>()).await
}

/// The CRDs of the releases meshstack pins, Istio 1.18.7's DestinationRule among them, checked
/// strictly as the API server reads them (`contracts`). (The fake applies no schema to requests
/// from a `kube::Client`, so the test checks what the stage stored.)
fn istio_schema() -> &'static Crds {
    static CRDS: OnceLock<Crds> = OnceLock::new();
    CRDS.get_or_init(|| {
        let karpenter = meshstack::versions::DEFAULT_KARPENTER_VERSION.to_string();
        Crds::load(upstream(), karpenter_files(&karpenter))
    })
}

/// Checks `rule`'s spec (with `apiVersion`, `kind` and the name added: the test's typed
/// stand-in for the custom resource does not serialize them, and the stored object's server-set
/// metadata is not what the stage wrote).
fn check_rule(schema: &Crds, rule: &Value) -> Result<(), String> {
    let rule = json!({
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "DestinationRule",
        "metadata": {"name": "orders-destination-rule", "namespace": "ecommerce"},
        "spec": rule["spec"],
    });
    let found = schema.check(render::ORDERS_DESTINATION_RULE, &rule);
    if found.is_empty() {
        Ok(())
    } else {
        Err(found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

fn resolver() -> StaticResolver {
    StaticResolver::builtin().with(
        "networking.istio.io/v1beta1",
        "DestinationRule",
        "destinationrules",
        true,
    )
}

fn stack(locality: &str) -> Stack {
    Stack::parse(
        &format!("name: loc-test\nregion: eu-west-1\nzones: 3\n{locality}"),
        "test.yaml",
    )
    .unwrap()
}

fn context(stack: Stack, client: kube::Client, dir: &Path) -> Context {
    stage_context(stack, client, resolver(), dir, Duration::from_secs(5))
}

fn inputs(stack: &Stack, zones: &[&str]) -> RenderInputs {
    RenderInputs {
        account_id: "123456789012".into(),
        region: "eu-west-1".into(),
        partition: "aws".into(),
        zones: zones.iter().map(|z| (*z).to_owned()).collect(),
        cluster_endpoint: render::offline_endpoint(stack),
    }
}

/// products-service as the `app` stage applies it (field manager `meshstack`).
async fn apply_products_service(client: &kube::Client, stack: &Stack) {
    let files = render::render(stack, &inputs(stack, &["eu-west-1a", "eu-west-1b"])).unwrap();
    let services: Vec<DynamicObject> = objects(&files, &["stacks/ecommerce/products.yaml"])
        .unwrap()
        .into_iter()
        .filter(|o| o.types.as_ref().unwrap().kind == "Service")
        .collect();
    apply::apply_all(client, &resolver(), &services, apply::FIELD_MANAGER)
        .await
        .unwrap();
}

async fn products_service(client: &kube::Client) -> Service {
    Api::<Service>::namespaced(client.clone(), app::NAMESPACE)
        .get("products-service")
        .await
        .unwrap()
}

fn traffic_policy(svc: &Service) -> Option<String> {
    svc.spec.as_ref().unwrap().internal_traffic_policy.clone()
}

/// The managers of `svc` that own `spec.internalTrafficPolicy`.
fn policy_owners(svc: &Service) -> Vec<String> {
    svc.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:internalTrafficPolicy").is_some())
        })
        .filter_map(|m| m.manager.clone())
        .collect()
}

fn rules(client: &kube::Client) -> Api<DestinationRule> {
    Api::namespaced(client.clone(), app::NAMESPACE)
}

fn failure(result: StageResult) -> String {
    match result {
        StageResult::Failed { error, .. } => error,
        other => panic!("expected the stage to fail, got {other:?}"),
    }
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[tokio::test]
async fn locality_generates_the_rule_from_the_nodes_zones_sets_local_and_reverts_both() {
    let (_keep, dir) = tmp();
    let client = cluster().await;
    let stack = stack("locality: {mode: distribute, local_weight: 80}\n");
    apply_products_service(&client, &stack).await;
    assert_eq!(
        policy_owners(&products_service(&client).await),
        Vec::<String>::new()
    );
    // Not the zones a 3-zone eu-west-1 stack would name (a, b, c): the rule must follow the
    // nodes.
    placement::safe_three_zones(&client, ["eu-west-1b", "eu-west-1c", "eu-west-1d"]).await;
    let cx = context(stack.clone(), client.clone(), &dir);

    assert!(matches!(
        outcome(&run_stage(&cx, &locality::Locality, Direction::Forward).await),
        Outcome::Changed(_)
    ));
    let rule = rules(&client).get("orders-destination-rule").await.unwrap();
    check_rule(istio_schema(), &serde_json::to_value(&rule).unwrap()).unwrap();
    let l = |z: &str| format!("eu-west-1/{z}/*");
    let row = |from: &str, to: [(&str, u64); 3]| json!({"from": l(from), "to": to.iter().map(|(z, w)| (l(z), json!(w))).collect::<serde_json::Map<_, _>>()});
    assert_eq!(
        rule.spec["trafficPolicy"]["loadBalancer"]["localityLbSetting"],
        json!({"enabled": true, "distribute": [
            row("eu-west-1b", [("eu-west-1b", 80), ("eu-west-1c", 10), ("eu-west-1d", 10)]),
            row("eu-west-1c", [("eu-west-1b", 10), ("eu-west-1c", 80), ("eu-west-1d", 10)]),
            row("eu-west-1d", [("eu-west-1b", 10), ("eu-west-1c", 10), ("eu-west-1d", 80)]),
        ]})
    );
    assert_eq!(
        rule.spec["trafficPolicy"]["outlierDetection"],
        json!({"consecutiveGatewayErrors": 1, "interval": "1m", "baseEjectionTime": "30s"})
    );
    assert_eq!(
        rule.spec["trafficPolicy"]["connectionPool"],
        json!({"http": {"http2MaxRequests": 10, "maxRequestsPerConnection": 10}})
    );
    let svc = products_service(&client).await;
    assert_eq!(traffic_policy(&svc).as_deref(), Some("Local"));
    assert_eq!(policy_owners(&svc), [locality::FIELD_MANAGER]);
    // The rest of the Service is still the app's.
    assert_eq!(
        svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        3004
    );

    // The app stage re-applying its manifests does not take the field back: they leave it out.
    apply_products_service(&client, &stack).await;
    assert_eq!(
        traffic_policy(&products_service(&client).await).as_deref(),
        Some("Local")
    );

    // Converged: no write.
    let before = (
        products_service(&client).await.metadata.resource_version,
        rules(&client)
            .get("orders-destination-rule")
            .await
            .unwrap()
            .metadata
            .resource_version,
    );
    assert_eq!(
        outcome(&run_stage(&cx, &locality::Locality, Direction::Forward).await),
        &Outcome::Unchanged
    );
    let after = (
        products_service(&client).await.metadata.resource_version,
        rules(&client)
            .get("orders-destination-rule")
            .await
            .unwrap()
            .metadata
            .resource_version,
    );
    assert_eq!(before, after);

    assert!(matches!(
        outcome(&run_stage(&cx, &locality::Locality, Direction::Reverse).await),
        Outcome::Changed(_)
    ));
    assert_eq!(
        traffic_policy(&products_service(&client).await).as_deref(),
        Some("Cluster")
    );
    assert!(rules(&client)
        .get_opt("orders-destination-rule")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        outcome(&run_stage(&cx, &locality::Locality, Direction::Reverse).await),
        &Outcome::Unchanged
    );
}

#[tokio::test]
async fn locality_refuses_local_while_a_client_has_no_ready_products_pod_unless_forced() {
    let (_keep, dir) = tmp();
    let client = cluster().await;
    let stack = stack("");
    apply_products_service(&client, &stack).await;
    placement::node(&client, "node-a", "eu-west-1a").await;
    placement::node(&client, "node-b", "eu-west-1b").await;
    placement::pods(
        &client,
        &[
            ("products-1", "node-a", "10.0.0.11", true),
            ("orders-2", "node-a", "10.0.0.12", true),
            // graphql's only local products pod is not Ready: its calls would be dropped.
            ("products-2", "node-b", "10.0.1.11", false),
            ("graphql", "node-b", "10.0.1.12", true),
        ],
    )
    .await;
    let mut cx = context(stack, client.clone(), &dir);

    let error = failure(run_stage(&cx, &locality::Locality, Direction::Forward).await);
    for part in [
        "node-b (eu-west-1b: graphql-5f7d8-00003)",
        "1 node(s)",
        "--allow-unsafe-locality",
    ] {
        assert!(error.contains(part), "{part:?} not in: {error}");
    }
    assert_eq!(traffic_policy(&products_service(&client).await), None);
    // The orders rule is safe on its own, and failover mode keeps calls in their zone.
    let rule = rules(&client).get("orders-destination-rule").await.unwrap();
    assert_eq!(
        rule.spec["trafficPolicy"]["loadBalancer"]["localityLbSetting"],
        json!({"enabled": true})
    );

    cx.allow_unsafe_locality = true;
    let reporter = RecordingReporter::default();
    let result = run_stage_with(&cx, &locality::Locality, Direction::Forward, &reporter).await;
    assert!(matches!(outcome(&result), Outcome::Changed(_)));
    assert_eq!(
        traffic_policy(&products_service(&client).await).as_deref(),
        Some("Local")
    );
    let warnings: Vec<String> = reporter
        .events()
        .into_iter()
        .filter(|e| e.event == EventKind::Warn)
        .map(|e| e.message)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("--allow-unsafe-locality") && w.contains("node-b")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn the_rendered_orders_rule_passes_istios_schema_for_each_mode_and_zone_count() {
    let client = cluster().await;
    let schema = istio_schema();
    let zone_sets: [&[&str]; 3] = [
        &["eu-west-1a", "eu-west-1b"],
        &["eu-west-1a", "eu-west-1b", "eu-west-1c"],
        &["eu-west-1a", "eu-west-1b", "eu-west-1c", "eu-west-1d"],
    ];
    let modes = [
        "",
        "locality: {mode: distribute}\n",
        "locality: {mode: distribute, local_weight: 97}\n",
    ];
    for mode in modes {
        for zones in zone_sets {
            let stack = stack(mode);
            let files = render::render(&stack, &inputs(&stack, zones)).unwrap();
            let rule = objects(&files, &[render::ORDERS_DESTINATION_RULE]).unwrap();
            apply::apply_all(&client, &resolver(), &rule, locality::FIELD_MANAGER)
                .await
                .unwrap_or_else(|e| panic!("{mode:?} over {zones:?}: {e:?}"));
            let live = rules(&client).get("orders-destination-rule").await.unwrap();
            check_rule(schema, &serde_json::to_value(&live).unwrap())
                .unwrap_or_else(|e| panic!("{mode:?} over {zones:?}: {e}"));
            let setting = &live.spec["trafficPolicy"]["loadBalancer"]["localityLbSetting"];
            for row in setting["distribute"].as_array().into_iter().flatten() {
                let to = row["to"].as_object().unwrap();
                assert_eq!(to.len(), zones.len().min(to.len()));
                assert_eq!(to.values().map(|w| w.as_u64().unwrap()).sum::<u64>(), 100);
            }
        }
    }

    // The schema can say no: a weight written as a string, a misspelt field, a count as text.
    let rule = |policy: Value| {
        json!({
            "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
            "metadata": {"name": "bad", "namespace": "ecommerce"},
            "spec": {"host": "orders-service", "trafficPolicy": policy},
        })
    };
    let good = json!({"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "r/a/*", "to": {"r/a/*": 100}}]}}});
    check_rule(schema, &rule(good)).unwrap();
    for policy in [
        json!({"loadBalancer": {"localityLbSetting": {"distribute": [{"from": "r/a/*", "to": {"r/a/*": "100"}}]}}}),
        json!({"loadBalancer": {"localityLbSetting": {"enabled": true, "distributes": []}}}),
        json!({"connectionPool": {"http": {"http2MaxRequests": "10"}}}),
    ] {
        assert!(
            check_rule(schema, &rule(policy.clone())).is_err(),
            "{policy} was accepted"
        );
    }
}
