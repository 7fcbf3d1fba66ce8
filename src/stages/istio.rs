//! Stage `istio`: Istio from its helm charts, in the order Istio's helm guide gives — `base`
//! (CRDs, cluster roles: the `istio-base` stage, [`crate::stages::istio_base`], as soon as the
//! cluster's API answers), `istiod` (the control plane, its mesh config sending traces to
//! Jaeger's Zipkin endpoint), then the `gateway` chart as the ingress gateway the app's
//! `ecommerce-gateway` selects — all in `istio-system` at the stack's `istio.version`, values
//! from `stacks/istio/`. This stage installs `istiod` and the gateway. `up` ends when the
//! gateway's LoadBalancer Service has an address, which it records in the journal for
//! `verify`.
//!
//! Istio 1.18 (the demo's release) supports Kubernetes 1.24–1.27 only, older than any EKS
//! version meshstack creates: `up` warns about such a pair every time it runs, and `plan` shows
//! the same warning on the first release it would install (see [`plan_changes`]).
//!
//! `down` uninstalls in reverse and waits for the gateway's Service to be gone before going on:
//! the Service's finalizer holds it until the cloud has deleted its load balancer, and a load
//! balancer left behind would keep the VPC's subnets from being deleted later.

use std::time::Duration;

use async_trait::async_trait;

use super::kubernetes;
use super::{istio_base, nodegroup, outcome, Change, Context, Stage, StageError};
use crate::config::Stack;
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::k8s::apply::{self, ObjectRef, Wait};
use crate::k8s::helm::Release;
use crate::render::RenderedFile;

pub const ID: StageId = "istio";
pub const NAMESPACE: &str = crate::names::namespace::ISTIO;
/// The ingress gateway's release, and the name of its Deployment and LoadBalancer Service
/// (the `name` in `stacks/istio/gateway-values.yaml`).
pub const GATEWAY: &str = "istio-ingressgateway";
/// The journal output holding the ingress gateway's load balancer address (a hostname on AWS).
pub const INGRESS_ADDRESS: &str = "ingress_address";

/// The base chart's release, which owns Istio's CRDs (installed by the `istio-base` stage).
pub const BASE_RELEASE: &str = "istio-base";

/// The first Istio whose base chart templates its CRDs (istio/istio 1.24 release notes,
/// "base chart: CRDs are now templated"); earlier ones ship them in `crds/`.
pub const TEMPLATED_CRDS: crate::config::ReleaseVersion =
    crate::config::ReleaseVersion::new(1, 24, 0);

/// The releases, in install order: (release, chart, values file, helm `--timeout`).
const RELEASES: [(&str, &str, &str, u64); 3] = [
    (
        BASE_RELEASE,
        "base",
        "stacks/istio/base-values.yaml",
        5 * 60,
    ),
    (
        "istiod",
        "istiod",
        "stacks/istio/istiod-values.yaml",
        10 * 60,
    ),
    // helm --wait also waits for the LoadBalancer Service's address, which takes AWS a while.
    (
        GATEWAY,
        "gateway",
        "stacks/istio/gateway-values.yaml",
        10 * 60,
    ),
];

pub struct Istio;

/// The three helm releases in install order, at the stack's Istio version, with the rendered
/// values.
pub fn releases(stack: &Stack, files: &[RenderedFile]) -> Result<Vec<Release>, StageError> {
    RELEASES
        .iter()
        .map(|(name, chart, values, timeout)| {
            Ok(Release {
                name: (*name).into(),
                namespace: NAMESPACE.into(),
                chart: stack.chart(chart),
                values: kubernetes::file(files, values)?.to_string(),
                timeout: Duration::from_secs(*timeout),
                skip_crds: false,
            })
        })
        .collect()
}

/// The releases this stage installs, in order: all but the base chart's (the `istio-base`
/// stage's).
fn own_releases(stack: &Stack, files: &[RenderedFile]) -> Result<Vec<Release>, StageError> {
    let mut all = releases(stack, files)?;
    all.retain(|r| r.name != BASE_RELEASE);
    Ok(all)
}

/// The ingress gateway's Service, which the gateway chart creates.
pub fn gateway_service() -> ObjectRef {
    ObjectRef {
        api_version: "v1".into(),
        kind: "Service".into(),
        namespace: Some(NAMESPACE.into()),
        name: GATEWAY.into(),
    }
}

/// What `plan` shows: the release changes, the first carrying the support warning, if any.
///
/// `plan` has no channel for warnings besides a change's detail, and a warning on its own line
/// as a conflict would stop `up`, which the warning must not do. So it goes with the first
/// release `up` would install or upgrade — exactly when `up` would put the unsupported pair in
/// place; a converged stage shows no changes and no warning (`up` still warns on every run).
pub fn plan_changes(mut changes: Vec<Change>, warning: Option<String>) -> Vec<Change> {
    if let (Some(warning), Some(first)) = (warning, changes.first_mut()) {
        first.detail = if first.detail.is_empty() {
            format!("warning: {warning}")
        } else {
            format!("{}; warning: {warning}", first.detail)
        };
    }
    changes
}

#[async_trait]
impl Stage for Istio {
    fn id(&self) -> StageId {
        ID
    }

    /// `istio-base`: istiod's config and the gateway's are checked against Istio's CRDs, and
    /// istiod watches them. `nodegroup`: istiod and the gateway are pods, which need nodes.
    fn depends_on(&self) -> &'static [StageId] {
        &[istio_base::ID, nodegroup::ID]
    }

    fn in_cluster(&self) -> bool {
        true
    }

    fn uses_helm(&self) -> bool {
        true
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        let mut changes = Vec::new();
        for release in own_releases(&cx.stack, &files)? {
            changes.extend(kubernetes::plan_release(cx, &release).await?);
        }
        Ok(plan_changes(changes, cx.stack.istio_support_warning()))
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let files = cx.rendered().await?;
        Ok(own_releases(&cx.stack, &files)?
            .iter()
            .rev()
            .map(kubernetes::plan_delete_release)
            .collect())
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        if let Some(warning) = cx.stack.istio_support_warning() {
            h.warn(warning);
        }
        let files = cx.rendered().await?;
        let mut changes = Vec::new();
        let kube = cx.kube().await?;
        // In order: the gateway needs istiod's injection webhook (istiod needs base's CRDs,
        // which the `istio-base` stage installed).
        for release in own_releases(&cx.stack, &files)? {
            changes.extend(kubernetes::ensure_release(cx, h, &release).await?);
        }
        let progress = |line: &str| h.step(line.to_string());
        let wait = Wait {
            backoff: cx.waits.kubernetes,
            progress: &progress,
        };
        let address =
            apply::wait_service_lb_address(&kube.client, NAMESPACE, GATEWAY, wait).await?;
        h.info(format!("ingress gateway address: {address}"));
        cx.set_output(ID, INGRESS_ADDRESS, address.into())?;
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let Some(kube) = kubernetes::for_teardown(cx, h).await else {
            return Ok(Outcome::Unchanged);
        };
        let files = cx.rendered().await?;
        let releases = own_releases(&cx.stack, &files)?;
        let mut removed = 0;
        for release in releases.iter().rev() {
            if kubernetes::remove_release(cx, h, release).await? {
                removed += 1;
            }
            if release.name == GATEWAY {
                // Also when the release was already gone: a killed `down` may have uninstalled
                // it and not seen the Service go.
                let progress = |line: &str| h.step(line.to_string());
                let wait = Wait {
                    backoff: cx.waits.kubernetes,
                    progress: &progress,
                };
                apply::wait_gone(
                    &kube.client,
                    kube.resolver.as_ref(),
                    &[gateway_service()],
                    wait,
                )
                .await?;
            }
        }
        Ok(super::deleted(removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::RenderInputs;

    fn rendered(stack: &Stack) -> Vec<RenderedFile> {
        let inputs = RenderInputs {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            partition: "aws".into(),
            zones: vec!["us-east-1a".into(), "us-east-1b".into()],
            cluster_endpoint: "https://example.invalid".into(),
        };
        crate::render::render(stack, &inputs).unwrap()
    }

    #[test]
    fn releases_follow_the_stack_version_in_install_order() {
        for (extra, version) in [("", "1.18.7"), ("istio: {version: 1.18.3}\n", "1.18.3")] {
            let stack = Stack::parse(&format!("name: shop\n{extra}"), "test.yaml").unwrap();
            let releases = releases(&stack, &rendered(&stack)).unwrap();
            let got: Vec<(&str, &str, &str, &str)> = releases
                .iter()
                .map(|r| {
                    (
                        r.name.as_str(),
                        r.chart.name.as_str(),
                        r.chart.version.as_str(),
                        r.namespace.as_str(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    ("istio-base", "base", version, "istio-system"),
                    ("istiod", "istiod", version, "istio-system"),
                    ("istio-ingressgateway", "gateway", version, "istio-system"),
                ],
                "{extra}"
            );
            assert!(releases
                .iter()
                .all(|r| r.chart == stack.chart(&r.chart.name)));
            assert!(releases[1].values.contains("zipkin.istio-system:9411"));
            assert!(releases[2].values.contains("type: LoadBalancer"));
        }
    }

    #[test]
    fn the_warning_goes_with_the_first_release_change() {
        let change = |name: &str, detail: &str| {
            Change::new(crate::stages::Action::Create, "helm-release", name).detail(detail)
        };
        let warning = || Some("Istio 1.18.7 supports Kubernetes 1.24 to 1.27 only".to_string());
        for (changes, warning, want) in [
            // converged: nothing to show, nothing to attach to
            (vec![], warning(), vec![]),
            // a supported pair: the changes as they are
            (
                vec![change("istio-system/istiod", "istiod-1.18.7")],
                None,
                vec![change("istio-system/istiod", "istiod-1.18.7")],
            ),
            (
                vec![
                    change("istio-system/istio-base", "base-1.18.7"),
                    change("istio-system/istiod", "istiod-1.18.7"),
                ],
                warning(),
                vec![
                    change(
                        "istio-system/istio-base",
                        "base-1.18.7; warning: Istio 1.18.7 supports Kubernetes 1.24 to 1.27 only",
                    ),
                    change("istio-system/istiod", "istiod-1.18.7"),
                ],
            ),
            (
                vec![change("istio-system/istiod", "")],
                warning(),
                vec![change(
                    "istio-system/istiod",
                    "warning: Istio 1.18.7 supports Kubernetes 1.24 to 1.27 only",
                )],
            ),
        ] {
            assert_eq!(plan_changes(changes, warning), want);
        }
    }

    #[test]
    fn the_default_stack_is_warned_about() {
        // The default stack pairs Istio 1.18 with an EKS version it does not support; if this
        // ever stops warning, plan and up go quiet about it.
        assert!(Stack::embedded_default().istio_support_warning().is_some());
    }
}
