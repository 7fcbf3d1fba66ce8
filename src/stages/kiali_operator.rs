//! Stage `kiali-operator`: the Kiali operator as helm release `kiali-operator` (namespace
//! `kiali-operator`, values `observability/kiali-operator-values.yaml`, `cr.create: false`).
//! The chart brings the `kialis.kiali.io` CRD (from its `crds/`), the operator's Deployment
//! and its roles; nothing in it refers to Istio, Prometheus or Jaeger (its ClusterRole names
//! Istio's API groups, which RBAC accepts before they exist). The `kiali` stage applies the CR
//! that does.
//!
//! It is a [`ChartStage`] with no manifests: `stages/chart.rs` installs and uninstalls it.

use std::time::Duration;

use super::chart::{ChartSpec, ChartStage};
use super::nodegroup;
use crate::engine::graph::StageId;

pub const ID: StageId = "kiali-operator";
pub const RELEASE: &str = "kiali-operator";
pub const NAMESPACE: &str = crate::names::namespace::KIALI_OPERATOR;
const VALUES: &str = "observability/kiali-operator-values.yaml";

pub struct KialiOperator;

/// `depends_on`: `nodegroup` only — helm's `--wait` waits for the operator's pod, which needs
/// a node; not `istio`, `prometheus` or `jaeger` (see the module docs), so it installs while
/// their charts do.
impl ChartStage for KialiOperator {
    const SPEC: ChartSpec = ChartSpec {
        id: ID,
        depends_on: &[nodegroup::ID],
        release: RELEASE,
        namespace: NAMESPACE,
        chart: crate::charts::name::KIALI_OPERATOR,
        values: VALUES,
        timeout: Duration::from_secs(10 * 60),
        crds: &[],
        manifests: &[],
        deployment: None,
        await_deletion: false,
    };
}
