//! Stage `prometheus`: kube-prometheus-stack as helm release `prom` in namespace `prometheus`
//! (values: `observability/prometheus-values.yaml`), then, once its CRDs are established,
//! `observability/monitoring.yaml` — the PodMonitor for the Envoy sidecars' stats and the
//! ServiceMonitor for istiod — so Kiali and Grafana see the mesh's traffic.

use std::time::Duration;

use async_trait::async_trait;

use super::kubernetes::{self, objects};
use super::{nodegroup, outcome, Change, Context, Stage, StageError};
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};

use crate::k8s::helm::{Chart, Release};
use crate::render::RenderedFile;

pub const ID: StageId = "prometheus";
pub const RELEASE: &str = crate::names::PROMETHEUS_RELEASE;
pub const NAMESPACE: &str = crate::names::namespace::PROMETHEUS;
/// kube-prometheus-stack, pinned (Prometheus Operator 0.85; supports Kubernetes >= 1.19).
pub const CHART_VERSION: &str = "77.1.1";
const VALUES: &str = "observability/prometheus-values.yaml";
const MONITORS: &str = "observability/monitoring.yaml";
/// The CRDs the monitors need; the chart installs them.
pub const CRDS: [&str; 2] = [
    "podmonitors.monitoring.coreos.com",
    "servicemonitors.monitoring.coreos.com",
];

pub struct Prometheus;

/// The helm release, with the rendered values.
pub fn release(files: &[RenderedFile]) -> Result<Release, StageError> {
    Ok(Release {
        name: RELEASE.into(),
        namespace: NAMESPACE.into(),
        chart: Chart {
            repo: "https://prometheus-community.github.io/helm-charts".into(),
            name: "kube-prometheus-stack".into(),
            version: CHART_VERSION.into(),
        },
        values: kubernetes::file(files, VALUES)?.to_string(),
        timeout: Duration::from_secs(15 * 60),
    })
}

#[async_trait]
impl Stage for Prometheus {
    fn id(&self) -> StageId {
        ID
    }

    fn depends_on(&self) -> &'static [StageId] {
        &[nodegroup::ID]
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
        changes.extend(kubernetes::plan_objects(cx, &objects(&files, &[MONITORS])?).await?);
        Ok(changes)
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        let mut changes = kubernetes::plan_delete_objects(&objects(&files, &[MONITORS])?);
        changes.push(kubernetes::plan_delete_release(&release(&files)?));
        Ok(changes)
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let files = cx.rendered().await?;
        let mut changes: Vec<Change> = kubernetes::ensure_release(cx, h, &release(&files)?)
            .await?
            .into_iter()
            .collect();
        kubernetes::wait_crds(cx, h, &CRDS).await?;
        changes.extend(kubernetes::apply(cx, h, &objects(&files, &[MONITORS])?).await?);
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        if kubernetes::for_teardown(cx, h).await.is_none() {
            return Ok(Outcome::Unchanged);
        }
        let files = cx.rendered().await?;
        let mut removed = kubernetes::delete(cx, h, &objects(&files, &[MONITORS])?).await?;
        if kubernetes::remove_release(cx, h, &release(&files)?).await? {
            removed += 1;
        }
        Ok(super::deleted(removed))
    }
}
