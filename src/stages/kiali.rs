//! Stage `kiali`: the Kiali operator as helm release `kiali-operator` (namespace
//! `kiali-operator`, values `observability/kiali-operator-values.yaml`), then — once the chart's
//! `kialis.kiali.io` CRD is established — the Kiali CR from `observability/kiali.yaml`, which
//! points Kiali at the `prometheus` stage's Prometheus and Grafana and the `jaeger` stage's
//! query service. `up` ends when the operator has deployed Kiali (its Deployment Available).
//!
//! Kiali is not exposed outside the cluster; [`crate::names::port_forwards`] gives the commands
//! `meshstack status` prints for Kiali, Jaeger and Grafana.
//!
//! `down` deletes the CR first and waits for it to be gone: the operator's finalizer on it
//! removes what the operator made (the Kiali Deployment, Service, roles), and it can only do so
//! while the operator still runs. Then the operator is uninstalled.
//!
//! It is a [`ChartStage`]: its [`ChartSpec`] says all this, and `stages/chart.rs` does it.

use std::time::Duration;

use super::chart::{ChartSpec, ChartStage};
use super::{istio, jaeger, prometheus};
use crate::engine::graph::StageId;

pub const ID: StageId = "kiali";
pub const RELEASE: &str = "kiali-operator";
pub const OPERATOR_NAMESPACE: &str = crate::names::namespace::KIALI_OPERATOR;
/// Where the Kiali CR, and so Kiali itself, lives.
pub const NAMESPACE: &str = istio::NAMESPACE;
/// The CRD the CR needs; the chart installs it (from its `crds/`, which helm never upgrades or
/// deletes).
pub const CRD: &str = "kialis.kiali.io";
/// The Deployment the operator makes for the CR (`deployment.instance_name`, default `kiali`).
pub const DEPLOYMENT: &str = crate::names::KIALI_DEPLOYMENT;
const VALUES: &str = "observability/kiali-operator-values.yaml";
const CR: &str = "observability/kiali.yaml";

pub struct Kiali;

/// The operator's chart, then the CR. `up` waits for the Kiali Deployment the operator makes
/// for it (else `up` could end before the service `status` tells the user to port-forward to
/// exists); `down` waits for the CR to be gone before it uninstalls the operator, whose
/// finalizer on the CR removes what the operator made.
impl ChartStage for Kiali {
    const SPEC: ChartSpec = ChartSpec {
        id: ID,
        depends_on: &[istio::ID, prometheus::ID, jaeger::ID],
        release: RELEASE,
        namespace: OPERATOR_NAMESPACE,
        chart: crate::charts::name::KIALI_OPERATOR,
        values: VALUES,
        timeout: Duration::from_secs(10 * 60),
        crds: &[CRD],
        manifests: &[CR],
        deployment: Some((NAMESPACE, DEPLOYMENT)),
        await_deletion: true,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::apply::{self, ObjectRef};
    use crate::names::port_forwards;

    #[test]
    fn port_forwards_reach_the_services_the_manifests_define() {
        let got = port_forwards();
        let names: Vec<&str> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["kiali", "jaeger", "grafana"]);
        for ((_, command), want) in got.iter().zip([
            "kubectl -n istio-system port-forward svc/kiali 20001:20001",
            "kubectl -n istio-system port-forward svc/tracing 16686:80",
            "kubectl -n prometheus port-forward svc/prom-grafana 3000:80",
        ]) {
            assert!(command.starts_with(want), "{command}");
        }
        assert!(
            got[1].1.ends_with("http://localhost:16686/jaeger"),
            "{got:?}"
        );
    }

    #[test]
    fn the_forwarded_services_and_ports_are_in_the_manifests() {
        let find = |file: &str, yaml: &str, kind: &str, name: &str| {
            apply::parse_manifests(yaml, file)
                .unwrap()
                .into_iter()
                .find(|o| ObjectRef::of(o).kind == kind && o.metadata.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{file} has no {kind} {name}"))
        };
        let jaeger = include_str!("../../observability/jaeger.yaml");
        // Port 80 of `tracing` reaches the query UI, which serves under BASE_PATH.
        let tracing = find("jaeger.yaml", jaeger, "Service", jaeger::QUERY_SERVICE);
        let ports = tracing.data["spec"]["ports"].as_array().unwrap();
        assert!(
            ports
                .iter()
                .any(|p| p["port"] == 80 && p["targetPort"] == 16686),
            "{ports:?}"
        );
        let deployment = find("jaeger.yaml", jaeger, "Deployment", jaeger::DEPLOYMENT);
        let env = deployment.data["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap();
        assert!(env
            .iter()
            .any(|e| e["name"] == "QUERY_BASE_PATH" && e["value"] == jaeger::BASE_PATH));
        // Kiali's Grafana links open the local end of the Grafana port-forward.
        let kiali = find(
            "kiali.yaml",
            include_str!("../../observability/kiali.yaml"),
            "Kiali",
            "kiali",
        );
        assert_eq!(
            kiali.data["spec"]["external_services"]["grafana"]["url"],
            "http://localhost:3000"
        );
        assert_eq!(kiali.metadata.namespace.as_deref(), Some(NAMESPACE));
    }
}
