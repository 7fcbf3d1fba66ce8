//! Stage `istio-base`: Istio's `base` chart, release `istio-base` in `istio-system` at the
//! stack's `istio.version` (values `stacks/istio/base-values.yaml`): Istio's CRDs, its cluster
//! roles, the istiod service account and the default revision's validating webhook. The first
//! of Istio's charts in the order Istio's helm guide gives; the `istio` stage installs the
//! others (istiod, the gateway) once this is done and there are nodes.
//!
//! The chart makes no pods, so nothing in it waits for a node: helm's `--wait` waits for
//! Pods, Deployments, StatefulSets, DaemonSets, PVCs and Services, and the base chart has none
//! of them (istio/istio `manifests/charts/base/templates`: CRDs, ClusterRole(Binding)s,
//! ServiceAccount, ValidatingWebhookConfiguration `istiod-default-validator`). So it installs
//! as soon as the cluster's API answers, while the node group is still being created.
//!
//! `down` uninstalls it after the `istio` stage's releases are gone (they depend on it).

use async_trait::async_trait;

use super::istio::{self, BASE_RELEASE, NAMESPACE, TEMPLATED_CRDS};
use super::kubernetes;
use super::{cluster, outcome, Change, Context, Stage, StageError};
use crate::config::Stack;
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::k8s::apply;
use crate::k8s::helm::Release;
use crate::render::RenderedFile;

pub const ID: StageId = "istio-base";

pub struct IstioBase;

/// The base chart's release, at the stack's Istio version, with the rendered values.
fn release(stack: &Stack, files: &[RenderedFile]) -> Result<Release, StageError> {
    istio::releases(stack, files)?
        .into_iter()
        .find(|r| r.name == BASE_RELEASE)
        .ok_or_else(|| StageError::Missing(format!("the {BASE_RELEASE} release")))
}

#[async_trait]
impl Stage for IstioBase {
    fn id(&self) -> StageId {
        ID
    }

    /// `cluster`: its API takes the CRDs and roles. Not `nodegroup`: the chart has no pods
    /// (see the module docs), so it installs while the node group is being created.
    fn depends_on(&self) -> &'static [StageId] {
        &[cluster::ID]
    }

    fn in_cluster(&self) -> bool {
        true
    }

    fn uses_helm(&self) -> bool {
        true
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        kubernetes::plan_release(cx, &release(&cx.stack, &files)?).await
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        Ok(vec![kubernetes::plan_delete_release(&release(
            &cx.stack, &files,
        )?)])
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let files = cx.rendered().await?;
        let kube = cx.kube().await?;
        // From 1.24 the base chart templates its CRDs; those an older base installed from its
        // `crds/` folder belong to no release, and helm would refuse to take them over. Istio's
        // upgrade notes give this one-time adoption ("CRDs ... label/annotate").
        if cx.stack.istio.version >= TEMPLATED_CRDS {
            let adopted =
                apply::adopt_crds(&kube.client, &["*.istio.io"], BASE_RELEASE, NAMESPACE).await?;
            if !adopted.is_empty() {
                h.step(format!(
                    "handed {} Istio CRDs to helm release {NAMESPACE}/{BASE_RELEASE}",
                    adopted.len()
                ));
            }
        }
        let changes = kubernetes::ensure_release(cx, h, &release(&cx.stack, &files)?).await?;
        Ok(outcome(&changes.into_iter().collect::<Vec<_>>()))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        if kubernetes::for_teardown(cx, h).await.is_none() {
            return Ok(Outcome::Unchanged);
        }
        let files = cx.rendered().await?;
        let removed = kubernetes::remove_release(cx, h, &release(&cx.stack, &files)?).await?;
        Ok(super::deleted(usize::from(removed)))
    }
}
