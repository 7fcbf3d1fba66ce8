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

use std::time::Duration;

use async_trait::async_trait;

use super::kubernetes::{self, objects};
use super::{istio, jaeger, outcome, prometheus, Change, Context, Stage, StageError};
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::k8s::apply::{self, ObjectRef, Wait};
use crate::k8s::helm::{Chart, Release};
use crate::render::RenderedFile;

pub const ID: StageId = "kiali";
pub const RELEASE: &str = "kiali-operator";
pub const OPERATOR_NAMESPACE: &str = crate::names::namespace::KIALI_OPERATOR;
/// Where the Kiali CR, and so Kiali itself, lives.
pub const NAMESPACE: &str = istio::NAMESPACE;
/// The kiali-operator chart, pinned to the Kiali 1.73 line: kiali.io's documentation pairs
/// Istio 1.18 with Kiali 1.73 ("v1.73 [istio v1.18]"), and 1.73.2 is the last chart of that
/// line in https://kiali.org/helm-charts (Kiali 2.x dropped `accessible_namespaces`, which
/// `observability/kiali.yaml` uses).
pub const CHART_VERSION: &str = "1.73.2";
/// The CRD the CR needs; the chart installs it (from its `crds/`, which helm never upgrades or
/// deletes).
pub const CRD: &str = "kialis.kiali.io";
/// The Deployment the operator makes for the CR (`deployment.instance_name`, default `kiali`).
pub const DEPLOYMENT: &str = crate::names::KIALI_DEPLOYMENT;
const VALUES: &str = "observability/kiali-operator-values.yaml";
const CR: &str = "observability/kiali.yaml";

pub struct Kiali;

/// The helm release, with the rendered values.
pub fn release(files: &[RenderedFile]) -> Result<Release, StageError> {
    Ok(Release {
        name: RELEASE.into(),
        namespace: OPERATOR_NAMESPACE.into(),
        chart: Chart {
            repo: "https://kiali.org/helm-charts".into(),
            name: "kiali-operator".into(),
            version: CHART_VERSION.into(),
        },
        values: kubernetes::file(files, VALUES)?.to_string(),
        timeout: Duration::from_secs(10 * 60),
    })
}

#[async_trait]
impl Stage for Kiali {
    fn id(&self) -> StageId {
        ID
    }

    fn depends_on(&self) -> &'static [StageId] {
        &[istio::ID, prometheus::ID, jaeger::ID]
    }

    fn in_cluster(&self) -> bool {
        true
    }

    fn uses_helm(&self) -> bool {
        true
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        let mut changes = kubernetes::plan_release(cx, &release(&files)?).await?;
        changes.extend(kubernetes::plan_objects(cx, &objects(&files, &[CR])?).await?);
        Ok(changes)
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        let mut changes = kubernetes::plan_delete_objects(&objects(&files, &[CR])?);
        changes.push(kubernetes::plan_delete_release(&release(&files)?));
        Ok(changes)
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let files = cx.rendered().await?;
        let mut changes: Vec<Change> = kubernetes::ensure_release(cx, h, &release(&files)?)
            .await?
            .into_iter()
            .collect();
        let kube = cx.kube().await?;
        let progress = |line: &str| h.step(line.to_string());
        let wait = Wait {
            backoff: cx.waits.kubernetes,
            progress: &progress,
        };
        apply::wait_crd_established(&kube.client, CRD, wait).await?;
        changes.extend(kubernetes::apply(cx, h, &objects(&files, &[CR])?).await?);
        // The operator reconciles the CR on its own time; without this, `up` could end before
        // the service `status` tells the user to port-forward to exists.
        apply::wait_deployment_available(&kube.client, NAMESPACE, DEPLOYMENT, wait).await?;
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let Some(kube) = kubernetes::for_teardown(cx, h).await else {
            return Ok(Outcome::Unchanged);
        };
        let files = cx.rendered().await?;
        let cr = objects(&files, &[CR])?;
        let mut removed = kubernetes::delete(cx, h, &cr).await?;
        let progress = |line: &str| h.step(line.to_string());
        let wait = Wait {
            backoff: cx.waits.kubernetes,
            progress: &progress,
        };
        let refs: Vec<ObjectRef> = cr.iter().map(ObjectRef::of).collect();
        apply::wait_gone(&kube.client, kube.resolver.as_ref(), &refs, wait).await?;
        if kubernetes::remove_release(cx, h, &release(&files)?).await? {
            removed += 1;
        }
        Ok(super::deleted(removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
