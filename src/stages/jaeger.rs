//! Stage `jaeger`: Jaeger all-in-one in `istio-system` from `observability/jaeger.yaml` — the
//! Deployment, the `tracing` query service (UI on 80, gRPC on 16685, base path `/jaeger`) and
//! the `zipkin` collector service (9411) that istiod's mesh config sends the sidecars' spans
//! to. `up` ends when the Deployment is Available.

use async_trait::async_trait;

use super::kubernetes::{self, objects};
use super::{istio, outcome, Change, Context, Stage, StageError};
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};

pub const ID: StageId = "jaeger";
pub const NAMESPACE: &str = istio::NAMESPACE;
/// The Deployment in the manifest.
pub const DEPLOYMENT: &str = "jaeger";
/// The query service (UI and API under [`BASE_PATH`]).
pub const QUERY_SERVICE: &str = crate::names::JAEGER_QUERY_SERVICE;
/// Jaeger's `QUERY_BASE_PATH` in the manifest.
pub const BASE_PATH: &str = crate::names::JAEGER_BASE_PATH;
const MANIFEST: &str = "observability/jaeger.yaml";

pub struct Jaeger;

#[async_trait]
impl Stage for Jaeger {
    fn id(&self) -> StageId {
        ID
    }

    /// `istio`: Jaeger lives in `istio-system`, which Istio's charts make, and receives the
    /// spans istiod's mesh config sends (its pods need nodes, which `istio` waited for).
    fn depends_on(&self) -> &'static [StageId] {
        &[istio::ID]
    }

    fn in_cluster(&self) -> bool {
        true
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        kubernetes::plan_objects(cx, &objects(&files, &[MANIFEST])?).await
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        Ok(kubernetes::plan_delete_objects(&objects(
            &files,
            &[MANIFEST],
        )?))
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let files = cx.rendered().await?;
        let changes = kubernetes::apply(cx, h, &objects(&files, &[MANIFEST])?).await?;
        kubernetes::wait_deployments(cx, h, &[(NAMESPACE, DEPLOYMENT)]).await?;
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        if kubernetes::for_teardown(cx, h).await.is_none() {
            return Ok(Outcome::Unchanged);
        }
        let files = cx.rendered().await?;
        let removed = kubernetes::delete(cx, h, &objects(&files, &[MANIFEST])?).await?;
        Ok(super::deleted(removed))
    }
}
