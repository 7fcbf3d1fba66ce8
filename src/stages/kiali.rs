//! Stage `kiali`: the Kiali CR from `observability/kiali.yaml` — once the `kialis.kiali.io`
//! CRD (which the `kiali-operator` stage's chart installs) is established — which points Kiali
//! at the `istio` stage's mesh, the `prometheus` stage's Prometheus and Grafana and the
//! `jaeger` stage's query service. `up` ends when the operator has deployed Kiali (its
//! Deployment Available).
//!
//! The operator's chart is a stage of its own ([`crate::stages::kiali_operator`]): it needs
//! only nodes, so it installs while Istio's charts do; only this CR refers to Istio,
//! Prometheus and Jaeger.
//!
//! Kiali is not exposed outside the cluster; [`crate::names::port_forwards`] gives the commands
//! `meshstack status` prints for Kiali, Jaeger and Grafana.
//!
//! `down` deletes the CR and waits for it to be gone: the operator's finalizer on it removes
//! what the operator made (the Kiali Deployment, Service, roles), and it can only do so while
//! the operator still runs — the `kiali-operator` stage is torn down after this one.

use async_trait::async_trait;

use super::kubernetes::{self, objects};
use super::{deleted, istio, jaeger, kiali_operator, outcome, prometheus};
use super::{Change, Context, Stage, StageError};
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::k8s::apply::{self, ObjectRef, Wait};

pub const ID: StageId = "kiali";
/// Where the Kiali CR, and so Kiali itself, lives.
pub const NAMESPACE: &str = istio::NAMESPACE;
/// The CRD the CR needs; the operator's chart installs it (from its `crds/`, which helm never
/// upgrades or deletes).
pub const CRD: &str = "kialis.kiali.io";
/// The Deployment the operator makes for the CR (`deployment.instance_name`, default `kiali`).
pub const DEPLOYMENT: &str = crate::names::KIALI_DEPLOYMENT;
const CR: &str = "observability/kiali.yaml";

pub struct Kiali;

/// The CR. `up` waits for the Kiali Deployment the operator makes for it (else `up` could end
/// before the service `status` tells the user to port-forward to exists); `down` waits for the
/// CR to be gone, so that the operator's finalizer has removed what it made before the
/// operator is uninstalled.
#[async_trait]
impl Stage for Kiali {
    fn id(&self) -> StageId {
        ID
    }

    /// `kiali-operator`: the CRD, and the operator that acts on the CR. `istio`: Kiali reads
    /// the mesh (istiod) and its CR names `istio-system`. `prometheus`, `jaeger`: the CR points
    /// Kiali at their services.
    fn depends_on(&self) -> &'static [StageId] {
        &[kiali_operator::ID, istio::ID, prometheus::ID, jaeger::ID]
    }

    fn in_cluster(&self) -> bool {
        true
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        kubernetes::plan_objects(cx, &objects(&files, &[CR])?).await
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        Ok(kubernetes::plan_delete_objects(&objects(&files, &[CR])?))
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let files = cx.rendered().await?;
        kubernetes::wait_crds(cx, h, &[CRD]).await?;
        let changes = kubernetes::apply(cx, h, &objects(&files, &[CR])?).await?;
        kubernetes::wait_deployments(cx, h, &[(NAMESPACE, DEPLOYMENT)]).await?;
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let Some(kube) = kubernetes::for_teardown(cx, h).await else {
            return Ok(Outcome::Unchanged);
        };
        let files = cx.rendered().await?;
        let manifests = objects(&files, &[CR])?;
        let removed = kubernetes::delete(cx, h, &manifests).await?;
        let progress = |line: &str| h.step(line.to_string());
        let wait = Wait {
            backoff: cx.waits.kubernetes,
            progress: &progress,
        };
        let refs: Vec<ObjectRef> = manifests.iter().map(ObjectRef::of).collect();
        apply::wait_gone(&kube.client, kube.resolver.as_ref(), &refs, wait).await?;
        Ok(deleted(removed))
    }
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
