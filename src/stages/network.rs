//! Stage `network`: a VPC over the chosen zones with one public and one private subnet per
//! zone, an internet gateway, and the public subnets' route table. The NAT gateway(s), their
//! Elastic IPs and the private subnets' route tables are the `nat` stage's
//! ([`crate::stages::nat`]), which uses the parts here: the cluster needs only the subnets,
//! and need not wait the minutes a NAT gateway takes to become available.
//!
//! Every resource is tagged at creation (`TagSpecifications`), so a create that succeeded is
//! observable even if the process died before the journal was written; that is what makes a
//! killed `up` resumable without duplicates.
//!
//! The stage's parts, in `network/`: [`plan`] (the network as found, the steps, the pure diff),
//! `observe` (finding it by tag), `up` (carrying out the steps) and `down` (the kinds it tags,
//! as a table in deletion order, and the teardown).

mod down;
mod observe;
mod plan;
mod up;

use async_trait::async_trait;

pub use self::down::{down_nat, plan as plan_teardown, Part};
pub use self::observe::observe;
pub use self::plan::{
    nat_owns, plan, plan_nat, resource_name, Seen, SeenIgw, SeenNat, SeenRouteTable, SeenSubnet,
    SeenVpc, Step, Target,
};
pub(crate) use self::up::{execute, wait_nat_available};
use super::{outcome, Change, Context, Stage, StageError};
use crate::aws::STACK_TAG;
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};

pub const ID: StageId = "network";

pub struct Network;

/// What dependents need from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    pub vpc_id: String,
    /// In zone order.
    pub public_subnets: Vec<String>,
    /// In zone order.
    pub private_subnets: Vec<String>,
}

pub(crate) fn zone_names(cx: &Context) -> Vec<String> {
    cx.zones.iter().map(|z| z.name.clone()).collect()
}

/// The facts dependents need, from the run's cache or by observing.
pub async fn facts(cx: &Context) -> Result<NetworkFacts, StageError> {
    if let Some(f) = cx.facts().network.clone() {
        return Ok(f);
    }
    let seen = observe(cx).await?;
    let f = facts_from(&seen, &zone_names(cx)).ok_or_else(|| {
        StageError::Missing(format!(
            "the network of stack `{}` (VPC and subnets tagged {STACK_TAG})",
            cx.stack.name
        ))
    })?;
    cx.facts().network = Some(f.clone());
    Ok(f)
}

fn facts_from(seen: &Seen, zones: &[String]) -> Option<NetworkFacts> {
    let subnet = |public, zone: &String| {
        seen.subnets
            .get(&plan::subnet_key(public, zone))
            .map(|s| s.id.clone())
    };
    Some(NetworkFacts {
        vpc_id: seen.vpc.as_ref()?.id.clone(),
        public_subnets: zones
            .iter()
            .map(|z| subnet(true, z))
            .collect::<Option<_>>()?,
        private_subnets: zones
            .iter()
            .map(|z| subnet(false, z))
            .collect::<Option<_>>()?,
    })
}

#[async_trait]
impl Stage for Network {
    fn id(&self) -> StageId {
        ID
    }

    fn depends_on(&self) -> &'static [StageId] {
        &[]
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let seen = observe(cx).await?;
        Ok(plan(&cx.stack, &zone_names(cx), &seen).changes(|s| s.change(&cx.stack)))
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        down::plan(cx, Part::Network).await
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let zones = zone_names(cx);
        h.step("observing");
        let mut seen = observe(cx).await?;
        for d in seen.duplicates.iter().filter(|d| !nat_owns(d)) {
            h.warn(format!("duplicate network resource tagged for this stack: {d}; `meshstack down` removes it"));
        }
        let steps = plan(&cx.stack, &zones, &seen).refuse()?;
        let changes: Vec<Change> = steps.iter().map(|s| s.change(&cx.stack)).collect();
        for (step, change) in steps.iter().zip(&changes) {
            h.step(change.to_string());
            up::execute(cx, aws, step, &mut seen, h).await?;
        }
        let f = facts_from(&seen, &zones)
            .ok_or_else(|| StageError::Missing("subnets after create".into()))?;
        cx.set_output(ID, "vpc_id", f.vpc_id.clone().into())?;
        cx.set_output(ID, "zones", serde_json::json!(zones))?;
        cx.facts().network = Some(f);
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        down::down(cx, cx.aws()?, h).await
    }
}
