//! Stages that install one helm chart and then, once the CRDs the chart brings are
//! established, apply manifests that use them: `prometheus` (its monitors) and `kiali` (the
//! Kiali CR). Such a stage is data, a [`ChartSpec`] — where they differ is in its fields — and
//! every [`ChartStage`] is a [`Stage`] the same way, below.

use std::time::Duration;

use async_trait::async_trait;

use super::kubernetes::{self, objects};
use super::{deleted, outcome, Change, Context, Stage, StageError};
use crate::config::Stack;
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::k8s::apply::{self, ObjectRef, Wait};
use crate::k8s::helm::Release;
use crate::render::RenderedFile;

/// A stage that installs a chart, then applies manifests that need its CRDs.
pub trait ChartStage: Send + Sync {
    const SPEC: ChartSpec;
}

/// What a [`ChartStage`] installs and applies, and what it waits for.
pub struct ChartSpec {
    pub id: StageId,
    pub depends_on: &'static [StageId],
    /// The helm release's name and namespace.
    pub release: &'static str,
    pub namespace: &'static str,
    /// The chart, a [`crate::charts::name`]: its repository and version are the stack's.
    pub chart: &'static str,
    /// The helm values, a rendered file.
    pub values: &'static str,
    /// helm's `--timeout`.
    pub timeout: Duration,
    /// The CRDs the manifests need; the chart installs them.
    pub crds: &'static [&'static str],
    /// Applied once the CRDs are established; deleted before the chart is uninstalled.
    pub manifests: &'static [&'static str],
    /// A Deployment (namespace, name) the chart's operator makes from the manifests, on its own
    /// time: `up` ends when it is available, not before what it serves exists.
    pub deployment: Option<(&'static str, &'static str)>,
    /// Whether `down` waits for the manifests' objects to be gone before it uninstalls the
    /// chart: their finalizers need the chart's operator to run.
    pub await_deletion: bool,
}

impl ChartSpec {
    /// The helm release, with the rendered values.
    pub fn release(&self, stack: &Stack, files: &[RenderedFile]) -> Result<Release, StageError> {
        Ok(Release {
            name: self.release.into(),
            namespace: self.namespace.into(),
            chart: stack.chart(self.chart),
            values: kubernetes::file(files, self.values)?.to_string(),
            timeout: self.timeout,
            skip_crds: false,
        })
    }
}

#[async_trait]
impl<T: ChartStage> Stage for T {
    fn id(&self) -> StageId {
        T::SPEC.id
    }

    fn depends_on(&self) -> &'static [StageId] {
        T::SPEC.depends_on
    }

    fn uses_helm(&self) -> bool {
        true
    }

    fn in_cluster(&self) -> bool {
        true
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let spec = &T::SPEC;
        let files = cx.rendered().await?;
        let mut changes = kubernetes::plan_release(cx, &spec.release(&cx.stack, &files)?).await?;
        changes.extend(kubernetes::plan_objects(cx, &objects(&files, spec.manifests)?).await?);
        Ok(changes)
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let spec = &T::SPEC;
        let files = cx.rendered().await?;
        let mut changes = kubernetes::plan_delete_objects(&objects(&files, spec.manifests)?);
        changes.push(kubernetes::plan_delete_release(
            &spec.release(&cx.stack, &files)?,
        ));
        Ok(changes)
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let spec = &T::SPEC;
        let files = cx.rendered().await?;
        let release = spec.release(&cx.stack, &files)?;
        let mut changes: Vec<Change> = kubernetes::ensure_release(cx, h, &release)
            .await?
            .into_iter()
            .collect();
        kubernetes::wait_crds(cx, h, spec.crds).await?;
        changes.extend(kubernetes::apply(cx, h, &objects(&files, spec.manifests)?).await?);
        if let Some(deployment) = spec.deployment {
            kubernetes::wait_deployments(cx, h, &[deployment]).await?;
        }
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let spec = &T::SPEC;
        let Some(kube) = kubernetes::for_teardown(cx, h).await else {
            return Ok(Outcome::Unchanged);
        };
        let files = cx.rendered().await?;
        let manifests = objects(&files, spec.manifests)?;
        let mut removed = kubernetes::delete(cx, h, &manifests).await?;
        if spec.await_deletion {
            let progress = |line: &str| h.step(line.to_string());
            let wait = Wait {
                backoff: cx.waits.kubernetes,
                progress: &progress,
            };
            let refs: Vec<ObjectRef> = manifests.iter().map(ObjectRef::of).collect();
            apply::wait_gone(&kube.client, kube.resolver.as_ref(), &refs, wait).await?;
        }
        if kubernetes::remove_release(cx, h, &spec.release(&cx.stack, &files)?).await? {
            removed += 1;
        }
        Ok(deleted(removed))
    }
}
