//! Stage `app`: the seed's ecommerce services from the project's own manifests in
//! `stacks/ecommerce/` — namespace `ecommerce` labelled for sidecar injection, service
//! accounts, services, the five Deployments, `ecommerce-gateway` and the three virtual
//! services — then waits until every Deployment is Available, so that `up` returning means the
//! app serves (and the `locality` stage after it finds pods on nodes).
//!
//! It runs after `istio` (the Gateway and VirtualService kinds, and the injection webhook that
//! must see the pods created) and `karpenter` (the app's nodeSelectors match only the nodes of
//! its NodePool).

use async_trait::async_trait;
use kube::api::DynamicObject;

use super::kubernetes::{self, objects};
use super::{istio, karpenter, outcome, Change, Context, Stage, StageError};
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::k8s::apply::{self, ObjectRef, Wait};

pub const ID: StageId = "app";
pub const NAMESPACE: &str = crate::names::namespace::APP;
/// The app's manifests, in the order a reader meets them; the apply layer orders the objects
/// by kind (Namespace first; on delete, last).
pub const MANIFESTS: [&str; 6] = [
    "stacks/ecommerce/namespace.yaml",
    "stacks/ecommerce/graphql.yaml",
    "stacks/ecommerce/orders.yaml",
    "stacks/ecommerce/products.yaml",
    "stacks/ecommerce/gateway.yaml",
    "stacks/ecommerce/virtual-services.yaml",
];

pub struct App;

/// The Deployments among `objects`, as (namespace, name).
pub fn deployments(objects: &[DynamicObject]) -> Vec<(String, String)> {
    objects
        .iter()
        .map(ObjectRef::of)
        .filter(|o| o.api_version == "apps/v1" && o.kind == "Deployment")
        .map(|o| (o.namespace.unwrap_or_default(), o.name))
        .collect()
}

#[async_trait]
impl Stage for App {
    fn id(&self) -> StageId {
        ID
    }

    /// `istio`: the app's namespace has sidecar injection (istiod's webhook must answer, or the
    /// pods start without sidecars) and its Gateway and VirtualServices are Istio resources
    /// (the CRDs come with `istio-base`, before `istio`). `karpenter`: its pods select
    /// Karpenter's nodes (`managedBy: karpenter`).
    fn depends_on(&self) -> &'static [StageId] {
        &[istio::ID, karpenter::ID]
    }

    fn in_cluster(&self) -> bool {
        true
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        kubernetes::plan_objects(cx, &objects(&files, &MANIFESTS)?).await
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        Ok(kubernetes::plan_delete_objects(&objects(
            &files, &MANIFESTS,
        )?))
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let files = cx.rendered().await?;
        let objs = objects(&files, &MANIFESTS)?;
        let changes = kubernetes::apply(cx, h, &objs).await?;

        let deployments = deployments(&objs);
        let refs: Vec<(&str, &str)> = deployments
            .iter()
            .map(|(ns, name)| (ns.as_str(), name.as_str()))
            .collect();
        kubernetes::wait_deployments(cx, h, &refs).await?;
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let Some(kube) = kubernetes::for_teardown(cx, h).await else {
            return Ok(Outcome::Unchanged);
        };
        let files = cx.rendered().await?;
        let objs = objects(&files, &MANIFESTS)?;
        let removed = kubernetes::delete(cx, h, &objs).await?;
        // A Namespace is Terminating until everything in it is gone; wait, so that a later
        // `up` does not apply into a namespace on its way out, and the `karpenter` stage's
        // teardown does not race the app's pods.
        let progress = |line: &str| h.step(line.to_string());
        let wait = Wait {
            backoff: cx.waits.kubernetes,
            progress: &progress,
        };
        let namespaces: Vec<ObjectRef> = objs
            .iter()
            .map(ObjectRef::of)
            .filter(|o| o.kind == "Namespace")
            .collect();
        apply::wait_gone(&kube.client, kube.resolver.as_ref(), &namespaces, wait).await?;
        Ok(super::deleted(removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Stack;
    use crate::render::{self, RenderInputs};

    fn rendered() -> Vec<DynamicObject> {
        let stack = Stack::embedded_default();
        let inputs = RenderInputs {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            partition: "aws".into(),
            zones: vec!["us-east-1a".into(), "us-east-1b".into()],
            cluster_endpoint: render::offline_endpoint(&stack),
        };
        let files = render::render(&stack, &inputs).unwrap();
        objects(&files, &MANIFESTS).unwrap()
    }

    #[test]
    fn the_app_is_five_deployments_in_its_namespace_behind_a_gateway() {
        let objs = rendered();
        let names: Vec<String> = deployments(&objs)
            .into_iter()
            .map(|(ns, name)| {
                assert_eq!(ns, NAMESPACE);
                name
            })
            .collect();
        assert_eq!(
            names,
            [
                "graphql",
                "orders-1",
                "orders-2",
                "products-1",
                "products-2"
            ]
        );
        let refs: Vec<String> = objs.iter().map(|o| ObjectRef::of(o).to_string()).collect();
        for want in [
            "Namespace ecommerce",
            "Gateway ecommerce/ecommerce-gateway",
            "VirtualService ecommerce/graphql-virtualservice",
            "VirtualService ecommerce/orders-virtualservice",
            "VirtualService ecommerce/products-virtualservice",
        ] {
            assert!(refs.contains(&want.to_string()), "{want} in {refs:?}");
        }
        // Every other object lives in the app's namespace.
        for o in objs
            .iter()
            .map(ObjectRef::of)
            .filter(|o| o.kind != "Namespace")
        {
            assert_eq!(o.namespace.as_deref(), Some(NAMESPACE), "{o}");
        }
    }

    #[test]
    fn the_namespace_goes_first_and_is_deleted_last() {
        let objs = rendered();
        let order = apply::apply_order(&objs);
        assert_eq!(ObjectRef::of(order[0]).kind, "Namespace");
        let last = order.last().unwrap();
        assert_ne!(ObjectRef::of(last).kind, "Namespace");
    }
}
