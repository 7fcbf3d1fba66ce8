//! Stage `prometheus`: kube-prometheus-stack as helm release `prom` in namespace `prometheus`
//! (values: `observability/prometheus-values.yaml`), then, once its CRDs are established,
//! `observability/monitoring.yaml` — the PodMonitor for the Envoy sidecars' stats and the
//! ServiceMonitor for istiod — so Kiali and Grafana see the mesh's traffic.
//!
//! It is a [`ChartStage`]: its [`ChartSpec`] says all this, and `stages/chart.rs` does it.

use std::time::Duration;

use super::chart::{ChartSpec, ChartStage};
use super::nodegroup;
use crate::engine::graph::StageId;

pub const ID: StageId = "prometheus";
pub const RELEASE: &str = crate::names::PROMETHEUS_RELEASE;
pub const NAMESPACE: &str = crate::names::namespace::PROMETHEUS;
const VALUES: &str = "observability/prometheus-values.yaml";
const MONITORS: &str = "observability/monitoring.yaml";
/// The CRDs the monitors need; the chart installs them.
pub const CRDS: [&str; 2] = [
    "podmonitors.monitoring.coreos.com",
    "servicemonitors.monitoring.coreos.com",
];

pub struct Prometheus;

/// The chart, then the monitors; nothing else to wait for on the way up or down.
impl ChartStage for Prometheus {
    const SPEC: ChartSpec = ChartSpec {
        id: ID,
        depends_on: &[nodegroup::ID],
        release: RELEASE,
        namespace: NAMESPACE,
        chart: crate::charts::name::PROMETHEUS,
        values: VALUES,
        timeout: Duration::from_secs(15 * 60),
        crds: &CRDS,
        manifests: &[MONITORS],
        deployment: None,
        await_deletion: false,
    };
}
