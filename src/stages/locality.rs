//! Stage `locality`: the two policies the demo is about, applied once the app runs.
//!
//! 1. The orders DestinationRule (`stacks/locality/orders-destination-rule.yaml`), its
//!    `localityLbSetting` generated from the zones the app's pods really landed in (their
//!    nodes' `topology.kubernetes.io/zone` labels; the stack's zones when no app pod is on a
//!    node yet), never from a hard-coded list.
//! 2. `internalTrafficPolicy: Local` on products-service — but only after a safety check:
//!    Kubernetes drops a call from a node with no local products endpoint, so every node that
//!    runs a products client (graphql, orders-2) must have a Ready products pod. If one does
//!    not, the stage fails naming each such node and its zone; `up --allow-unsafe-locality`
//!    applies anyway and warns.
//!
//! Both are applied under the field manager [`FIELD_MANAGER`], so this stage owns exactly the
//! Service's `internalTrafficPolicy` field and the `app` stage (which leaves the field out)
//! never takes it back. `down` sets the field back to `Cluster` and deletes the rule.
//!
//! `locality.mode: traffic-distribution` applies Kubernetes' own field instead
//! (`stacks/locality/traffic-distribution.yaml`): `trafficDistribution: PreferSameZone` on
//! orders-service and `PreferSameNode` on products-service, under the same field manager. It
//! falls back to other endpoints where `Local` drops a call, so it needs no safety check.
//! Switching modes leaves nothing of the old one: server-side apply removes the fields the
//! manager no longer applies (`internalTrafficPolicy` on products-service), the stage deletes
//! the orders rule and takes its own `trafficDistribution` off orders-service; `down` removes
//! what either mode left.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DynamicObject};
use serde_json::json;

use super::kubernetes::{self, objects};
use super::{app, outcome, Action, Change, Context, Stage, StageError};
use crate::config::LocalityMode;
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};
use crate::k8s::apply::{self, ObjectRef};
use crate::locality::placement::{Placement, UnsafeNode};
use crate::render::{self, ORDERS_DESTINATION_RULE, PRODUCTS_TRAFFIC_POLICY, TRAFFIC_DISTRIBUTION};

pub const ID: StageId = "locality";
/// The field manager of the locality policies, apart from `meshstack` (the `app` stage's).
pub const FIELD_MANAGER: &str = "meshstack-locality";

pub struct Locality;

/// Where the app's pods are: the cluster's nodes and the pods of the `ecommerce` namespace.
pub async fn observe_placement(client: &kube::Client) -> Result<Placement, StageError> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let nodes = Api::<Node>::all(client.clone());
    let pods = Api::<Pod>::namespaced(client.clone(), app::NAMESPACE);
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), app::NAMESPACE);
    let (nodes, pods, slices) = futures::try_join!(
        apply::list_all(&nodes, None),
        apply::list_all(&pods, Some(app::NAMESPACE)),
        apply::list_all(&slices, Some(app::NAMESPACE)),
    )?;
    Ok(Placement::from_objects(&nodes, &pods).with_slices(&slices))
}

/// The zones to generate the rule for: those of the nodes the app runs on, else the stack's.
fn zones(cx: &Context, placement: Option<&Placement>, h: Option<&StageHandle>) -> Vec<String> {
    let in_use = placement.map(Placement::zones_in_use).unwrap_or_default();
    if !in_use.is_empty() {
        return in_use;
    }
    let fallback: Vec<String> = cx.zones.iter().map(|z| z.name.clone()).collect();
    if let Some(h) = h {
        h.info(format!(
            "no app pod runs on a node with a zone label yet; generating the orders rule for \
             the stack's zones ({})",
            fallback.join(", ")
        ));
    }
    fallback
}

/// The policies of the stack's mode, rendered for `zones`: the DestinationRule and the
/// products-service policy, or the two Services' `trafficDistribution`.
async fn policies(cx: &Context, zones: Vec<String>) -> Result<Vec<DynamicObject>, StageError> {
    policies_of(cx, cx.stack.locality.mode, zones).await
}

/// [`policies`] as `mode` would have them.
async fn policies_of(
    cx: &Context,
    mode: LocalityMode,
    zones: Vec<String>,
) -> Result<Vec<DynamicObject>, StageError> {
    let mut inputs = cx.render_inputs().await;
    if !zones.is_empty() {
        inputs.zones = zones;
    }
    let mut stack = cx.stack.clone();
    stack.locality.mode = mode;
    let files = render::render(&stack, &inputs).map_err(|e| StageError::Conflict(e.to_string()))?;
    if mode.uses_destination_rule() {
        objects(&files, &[ORDERS_DESTINATION_RULE, PRODUCTS_TRAFFIC_POLICY])
    } else {
        objects(&files, &[TRAFFIC_DISTRIBUTION])
    }
}

/// The orders rule, which only the 2023 pattern's modes have: to delete it.
async fn orders_rule(cx: &Context) -> Result<Vec<DynamicObject>, StageError> {
    let objs = policies_of(cx, LocalityMode::Failover, Vec::new()).await?;
    Ok(objs.into_iter().filter(|o| !is_service(o)).collect())
}

/// The Services whose `trafficDistribution` this stage sets in traffic-distribution mode.
async fn distributed_services(cx: &Context) -> Result<Vec<DynamicObject>, StageError> {
    policies_of(cx, LocalityMode::TrafficDistribution, Vec::new()).await
}

/// Whether `live` carries a `trafficDistribution` this stage's field manager set.
fn has_our_distribution(live: &DynamicObject) -> bool {
    let set = !live.data["spec"]["trafficDistribution"].is_null();
    let ours = live
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.manager.as_deref() == Some(FIELD_MANAGER))
        .any(|f| {
            f.fields_v1
                .as_ref()
                .is_some_and(|v| v.0.pointer("/f:spec/f:trafficDistribution").is_some())
        });
    set && ours
}

/// The Services that still carry the traffic-distribution mode's field (set by this stage).
async fn leftover_distribution(
    cx: &Context,
    kube: &kubernetes::KubeAccess,
) -> Result<Vec<ObjectRef>, StageError> {
    let mut found = Vec::new();
    for service in distributed_services(cx).await? {
        let at = ObjectRef::of(&service);
        let live = apply::get_opt(&kube.client, kube.resolver.as_ref(), &at).await?;
        if live.as_ref().is_some_and(has_our_distribution) {
            found.push(at);
        }
    }
    Ok(found)
}

/// Takes this stage's `trafficDistribution` off the Services that carry it (another mode now,
/// or `down`): a merge patch removing the field, since an apply that leaves it out would be
/// skipped as converged.
async fn remove_distribution(
    cx: &Context,
    h: &StageHandle,
    kube: &kubernetes::KubeAccess,
) -> Result<Vec<Change>, StageError> {
    let mut changes = Vec::new();
    for at in take_distribution_off(cx, kube).await? {
        let change = Change::new(Action::Update, "k8s-object", at.to_string())
            .detail("trafficDistribution removed");
        h.step(change.to_string());
        changes.push(change);
    }
    Ok(changes)
}

/// The traffic-distribution mode's Services (`trafficDistribution: PreferSameZone` on
/// orders-service, `PreferSameNode` on products-service), as this stage applies them under
/// [`FIELD_MANAGER`]: what `meshstack demo --compare` switches to.
///
/// # Errors
/// The stack's manifests cannot be rendered or parsed.
pub async fn distribution(cx: &Context) -> Result<Vec<DynamicObject>, StageError> {
    distributed_services(cx).await
}

/// Takes this stage's `trafficDistribution` off the Services that carry it, as a mode switch
/// or `down` does; the Services changed.
///
/// # Errors
/// The cluster cannot be read or the patch is refused.
pub async fn take_distribution_off(
    cx: &Context,
    kube: &kubernetes::KubeAccess,
) -> Result<Vec<ObjectRef>, StageError> {
    let mut changed = Vec::new();
    for at in leftover_distribution(cx, kube).await? {
        let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(
            kube.client.clone(),
            at.namespace.as_deref().unwrap_or_default(),
        );
        let patch = json!({ "spec": { "trafficDistribution": null } });
        api.patch(
            &at.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map_err(|e| StageError::Conflict(format!("{at}: removing trafficDistribution: {e}")))?;
        changed.push(at);
    }
    Ok(changed)
}

/// products-service with `internalTrafficPolicy` back at Kubernetes' default.
fn reverted(policy: &DynamicObject) -> DynamicObject {
    let mut object = policy.clone();
    object.data["spec"] = json!({ "internalTrafficPolicy": "Cluster" });
    object
}

/// The locality policies as this stage applies them, split, with the same objects turned off:
/// what `meshstack demo` switches between.
#[derive(Debug, Clone)]
pub struct Switch {
    /// The orders DestinationRule with its generated `localityLbSetting` (policies on).
    pub rule_on: Vec<DynamicObject>,
    /// products-service's `internalTrafficPolicy: Local`.
    pub service_on: Vec<DynamicObject>,
    /// The same rule with `localityLbSetting: {enabled: false}`: Istio enables locality load
    /// balancing by default wherever a rule sets outlier detection (which the rule keeps), so
    /// leaving the setting out would not turn it off.
    pub rule_off: Vec<DynamicObject>,
    /// products-service back at `internalTrafficPolicy: Cluster`.
    pub service_off: Vec<DynamicObject>,
    /// The zones the rule was generated for.
    pub zones: Vec<String>,
}

/// [`Switch`] for the app's current `placement`, rendered exactly as [`Locality`]'s `up` does.
///
/// # Errors
/// The stack's manifests cannot be rendered or parsed.
pub async fn switch(cx: &Context, placement: &Placement) -> Result<Switch, StageError> {
    switch_of(cx, placement, cx.stack.locality.mode).await
}

/// [`switch`] as a stack in `mode` (failover or distribute) would have it: what `demo
/// --compare` switches to for the 2023 pattern whatever the stack's own mode.
///
/// # Errors
/// The stack's manifests cannot be rendered or parsed, or `mode` has no DestinationRule.
pub async fn switch_of(
    cx: &Context,
    placement: &Placement,
    mode: LocalityMode,
) -> Result<Switch, StageError> {
    if !mode.uses_destination_rule() {
        return Err(StageError::Conflict(format!(
            "locality.mode: {mode} has no DestinationRule to switch"
        )));
    }
    let zones = zones(cx, Some(placement), None);
    let objs = policies_of(cx, mode, zones.clone()).await?;
    let (service_on, rule_on): (Vec<_>, Vec<_>) = objs.into_iter().partition(is_service);
    let rule_off = rule_on
        .iter()
        .map(|r| {
            let mut off = r.clone();
            off.data["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"] =
                json!({ "enabled": false });
            off
        })
        .collect();
    let service_off = service_on.iter().map(reverted).collect();
    Ok(Switch {
        rule_on,
        service_on,
        rule_off,
        service_off,
        zones,
    })
}

fn is_service(object: &DynamicObject) -> bool {
    ObjectRef::of(object).kind == "Service"
}

/// Why `internalTrafficPolicy: Local` would drop calls, and how to fix it.
pub fn unsafe_message(nodes: &[UnsafeNode]) -> String {
    let list: Vec<String> = nodes
        .iter()
        .map(|n| {
            format!(
                "{} ({}: {})",
                n.node,
                n.zone.as_deref().unwrap_or("no zone label"),
                n.clients.join(", ")
            )
        })
        .collect();
    format!(
        "internalTrafficPolicy: Local on products-service would drop the products calls from \
         {} node(s) that run a products client but no Ready products pod: {}. Wait for the \
         products pods to become Ready, or move the clients (`meshstack pods` shows where \
         everything runs; the app's manifests require a products pod on every client's node, \
         so a client there was scheduled before its products pod was lost — delete the client \
         pod to reschedule it), then re-run `meshstack up`; `up --allow-unsafe-locality` applies the policy \
         anyway",
        nodes.len(),
        list.join("; ")
    )
}

#[async_trait]
impl Stage for Locality {
    fn id(&self) -> StageId {
        ID
    }

    /// `app`: the DestinationRule and the traffic policy are for the app's services, made from
    /// the zones its pods run in.
    fn depends_on(&self) -> &'static [StageId] {
        &[app::ID]
    }

    fn in_cluster(&self) -> bool {
        true
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let kube = kubernetes::reachable(cx).await;
        if !cx.stack.locality.mode.uses_destination_rule() {
            let objs = policies(cx, Vec::new()).await?;
            let mut changes: Vec<Change> = kubernetes::plan_objects_as(cx, &objs, FIELD_MANAGER)
                .await?
                .into_iter()
                .map(|c| {
                    let detail = if c.name.contains("products") {
                        "trafficDistribution: PreferSameNode (falls back to other nodes where \
                         internalTrafficPolicy: Local drops the call, so no safety check)"
                    } else {
                        "trafficDistribution: PreferSameZone (no DestinationRule, no failover \
                         priorities)"
                    };
                    Change::new(Action::Update, c.resource, c.name).detail(detail)
                })
                .collect();
            if let Some(kube) = kube {
                for rule in orders_rule(cx).await? {
                    let at = ObjectRef::of(&rule);
                    if apply::get_opt(&kube.client, kube.resolver.as_ref(), &at)
                        .await
                        .ok()
                        .flatten()
                        .is_some()
                    {
                        changes.push(
                            Change::new(Action::Delete, "k8s-object", at.to_string())
                                .detail("the failover/distribute mode's rule"),
                        );
                    }
                }
            }
            return Ok(changes);
        }
        let placement = match kube {
            Some(kube) => observe_placement(&kube.client).await.ok(),
            None => None,
        };
        let objs = policies(cx, zones(cx, placement.as_ref(), None)).await?;
        let mut changes: Vec<Change> = kubernetes::plan_objects_as(cx, &objs, FIELD_MANAGER)
            .await?
            .into_iter()
            .map(|c| match c.name.starts_with("Service ") {
                // One field of the app's Service, which exists by the time this stage runs.
                true => Change::new(Action::Update, c.resource, c.name)
                    .detail("internalTrafficPolicy: Local, after the safety check"),
                false => c,
            })
            .collect();
        if let Some(kube) = kube {
            for at in leftover_distribution(cx, kube).await.unwrap_or_default() {
                changes.push(
                    Change::new(Action::Update, "k8s-object", at.to_string())
                        .detail("trafficDistribution removed (the traffic-distribution mode's)"),
                );
            }
        }
        if let Some(unsafe_nodes) = placement.map(|p| p.unsafe_nodes()) {
            if !unsafe_nodes.is_empty() {
                changes.push(
                    Change::new(Action::Conflict, "safety-check", "products-service")
                        .detail(unsafe_message(&unsafe_nodes)),
                );
            }
        }
        Ok(changes)
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let objs = policies(cx, zones(cx, None, None)).await?;
        Ok(objs
            .iter()
            .map(|o| {
                let name = ObjectRef::of(o).to_string();
                match (
                    is_service(o),
                    cx.stack.locality.mode.uses_destination_rule(),
                ) {
                    (true, true) => Change::new(Action::Update, "k8s-object", name)
                        .detail("internalTrafficPolicy back to Cluster"),
                    (true, false) => Change::new(Action::Update, "k8s-object", name)
                        .detail("trafficDistribution removed"),
                    _ => Change::new(Action::Delete, "k8s-object", name),
                }
            })
            .collect())
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let kube = cx.kube().await?;
        if !cx.stack.locality.mode.uses_destination_rule() {
            // The other mode's rule goes first, so no moment has both policies on orders.
            let rule = orders_rule(cx).await?;
            let mut changes = Vec::new();
            if kubernetes::delete(cx, h, &rule).await? > 0 {
                changes.extend(rule.iter().map(|r| {
                    Change::new(Action::Delete, "k8s-object", ObjectRef::of(r).to_string())
                }));
            }
            let objs = policies(cx, Vec::new()).await?;
            changes.extend(kubernetes::apply_as(cx, h, &objs, FIELD_MANAGER).await?);
            h.info(
                "traffic-distribution: orders-service PreferSameZone, products-service \
                 PreferSameNode (each falls back to other endpoints, so no safety check)",
            );
            return Ok(outcome(&changes));
        }
        let placement = observe_placement(&kube.client).await?;
        let zones = zones(cx, Some(&placement), Some(h));
        let objs = policies(cx, zones.clone()).await?;
        let (service, rule): (Vec<_>, Vec<_>) = objs.into_iter().partition(is_service);

        let mut changes = kubernetes::apply_as(cx, h, &rule, FIELD_MANAGER).await?;
        h.info(format!(
            "orders rule: {} mode over {}",
            cx.stack.locality.mode,
            zones.join(", ")
        ));
        let unsafe_nodes = placement.unsafe_nodes();
        if !unsafe_nodes.is_empty() {
            if !cx.allow_unsafe_locality {
                return Err(StageError::Conflict(unsafe_message(&unsafe_nodes)));
            }
            h.warn(format!(
                "--allow-unsafe-locality: {}",
                unsafe_message(&unsafe_nodes)
            ));
        }
        changes.extend(kubernetes::apply_as(cx, h, &service, FIELD_MANAGER).await?);
        changes.extend(remove_distribution(cx, h, kube).await?);
        Ok(outcome(&changes))
    }

    /// Whatever mode the stack is in now, removes what any mode left: the orders rule,
    /// `internalTrafficPolicy: Local` (back to `Cluster`) and this stage's
    /// `trafficDistribution`.
    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let Some(kube) = kubernetes::for_teardown(cx, h).await else {
            return Ok(Outcome::Unchanged);
        };
        let objs = policies_of(cx, LocalityMode::Failover, zones(cx, None, None)).await?;
        let (service, rule): (Vec<_>, Vec<_>) = objs.into_iter().partition(is_service);
        let mut changes = remove_distribution(cx, h, kube).await?;
        for policy in &service {
            // Only a Service that exists is reverted: applying the partial object to a missing
            // Service would try to create a Service with no ports.
            let live = apply::get_opt(&kube.client, kube.resolver.as_ref(), &ObjectRef::of(policy))
                .await?;
            if live.is_some() {
                let revert = [reverted(policy)];
                changes.extend(kubernetes::apply_as(cx, h, &revert, FIELD_MANAGER).await?);
            }
        }
        let removed = kubernetes::delete(cx, h, &rule).await?;
        Ok(match (changes.len(), removed) {
            (0, 0) => Outcome::Unchanged,
            (0, n) => Outcome::Changed(format!("deleted {n}")),
            (r, n) => Outcome::Changed(format!("reverted {r}, deleted {n}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverting_keeps_the_object_and_sets_only_the_policy_back() {
        let policy: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": "products-service", "namespace": "ecommerce" },
            "spec": { "internalTrafficPolicy": "Local" },
        }))
        .unwrap();
        let back = reverted(&policy);
        assert_eq!(
            back.data["spec"],
            json!({ "internalTrafficPolicy": "Cluster" })
        );
        assert_eq!(ObjectRef::of(&back), ObjectRef::of(&policy));
    }

    #[test]
    fn the_unsafe_message_names_every_node_its_zone_and_clients_and_the_way_out() {
        let msg = unsafe_message(&[
            UnsafeNode {
                node: "ip-10-0-1-5".into(),
                zone: Some("us-east-1a".into()),
                clients: vec!["graphql-abc".into()],
            },
            UnsafeNode {
                node: "ip-10-0-2-9".into(),
                zone: None,
                clients: vec!["orders-2-x".into(), "graphql-y".into()],
            },
        ]);
        for part in [
            "2 node(s)",
            "ip-10-0-1-5 (us-east-1a: graphql-abc)",
            "ip-10-0-2-9 (no zone label: orders-2-x, graphql-y)",
            "--allow-unsafe-locality",
            "meshstack pods",
        ] {
            assert!(msg.contains(part), "{part} missing from {msg}");
        }
    }
}
