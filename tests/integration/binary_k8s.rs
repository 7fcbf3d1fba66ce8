//! The whole graph through the binary: moto for AWS, the local API server
//! (`tests/support/apiserver.rs`) for the cluster, the recording helm (`MESHSTACK_HELM`).
//! The first test checks the server itself over HTTPS with a real `kube::Client`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use meshstack::k8s::apply::{ApplyError, DiscoveryResolver, Resolver};
use serde_json::json;

use crate::support::apiserver::{ApiServer, Faults, Options, Rejection};

/// A token of the shape EKS accepts (the server checks the shape, not the signature).
fn eks_token() -> String {
    use base64::Engine as _;
    let url = "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Signature=abc";
    format!(
        "k8s-aws-v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    )
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                                  "data": {"k": "v"}}))
    .unwrap()
}

#[test]
fn the_local_api_server_serves_the_api_over_https_and_keeps_its_state_across_a_restart() {
    let mut server = ApiServer::start(Options::default());
    let client = server.https_client(&eks_token());
    let version = server.block_on(client.apiserver_version()).unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "34")
    );

    // Only an EKS token gets in.
    let stranger = server.https_client("not-an-eks-token");
    let err = server.block_on(stranger.apiserver_version()).unwrap_err();
    assert!(
        err.to_string().contains("401") || err.to_string().contains("Unauthorized"),
        "{err}"
    );
    assert_eq!(server.counts().unauthorized, 1);

    // Objects, Namespaces included, through the fake; a webhook refuses the first write of a kind.
    server.set_faults(Faults {
        rejections: vec![Rejection {
            kind: "ConfigMap".into(),
            times: 1,
        }],
        ..Faults::default()
    });
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let err = server
        .block_on(cms.create(&PostParams::default(), &config_map("a")))
        .unwrap_err();
    assert!(err.to_string().contains("denied the request"), "{err}");
    server
        .block_on(cms.create(&PostParams::default(), &config_map("a")))
        .unwrap();
    let ns: Api<Namespace> = Api::all(client.clone());
    let shop: Namespace = serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap();
    server
        .block_on(ns.create(&PostParams::default(), &shop))
        .unwrap();
    assert!(server.block_on(ns.get_opt("shop")).unwrap().is_some());
    let counts = server.counts();
    assert_eq!(counts.verb("create"), 3, "{counts:?}");
    assert_eq!(counts.writes.len(), 3, "{counts:?}");
    assert_eq!(counts.injected.get(&400), Some(&1), "{counts:?}");

    // Discovery: built-in kinds at once; a custom kind once its CRD is Established, which the
    // server's CRD controller does after the delay the test sets.
    let resolver = DiscoveryResolver::new(client.clone());
    let (deployments, _) = server
        .block_on(resolver.resolve("apps/v1", "Deployment"))
        .unwrap();
    assert_eq!(deployments.plural, "deployments");
    server.set_faults(Faults {
        crd_delays: [(
            "gateways.networking.istio.io".to_string(),
            Duration::from_millis(1500),
        )]
        .into(),
        ..Faults::default()
    });
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "gateways.networking.istio.io"},
        "spec": {"group": "networking.istio.io", "scope": "Namespaced",
                 "names": {"kind": "Gateway", "plural": "gateways"},
                 "versions": [{"name": "v1beta1", "served": true, "storage": true}]}
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    server
        .block_on(crds.create(&PostParams::default(), &crd))
        .unwrap();
    let early = server.block_on(resolver.resolve("networking.istio.io/v1beta1", "Gateway"));
    assert!(
        matches!(early, Err(ApplyError::UnknownKind { .. })),
        "{early:?}"
    );
    std::thread::sleep(Duration::from_millis(1600));
    let (gateways, _) = server
        .block_on(resolver.resolve("networking.istio.io/v1beta1", "Gateway"))
        .unwrap();
    assert_eq!(gateways.plural, "gateways");

    // Throttling: kube retries 429s (it honours Retry-After), so the reads still succeed.
    server.set_faults(Faults {
        throttle: 0.5,
        ..Faults::default()
    });
    for _ in 0..10 {
        server.block_on(cms.get("a")).unwrap();
    }
    assert!(server.counts().injected.get(&429).copied().unwrap_or(0) > 0);
    server.set_faults(Faults::default());

    // Stopped: nothing answers. Restarted: same port, same objects.
    server.stop();
    assert!(server.block_on(client.apiserver_version()).is_err());
    server.restart();
    let client = server.https_client(&eks_token());
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    assert_eq!(
        server.block_on(cms.get("a")).unwrap().data.unwrap()["k"],
        "v"
    );
}
