//! Stage `nat`: the private subnets' way out — NAT gateway(s) with their Elastic IPs in the
//! public subnets (one per zone by default, so no traffic crosses zones to reach the
//! internet; one for all with `network.nat: single`), waited for until `available`, and a
//! route table per zone whose default route goes through that zone's NAT gateway.
//!
//! It is apart from `network` so that the cluster, which needs only the subnets, does not wait
//! the minutes AWS takes to make a NAT gateway available: `nodegroup` depends on it (nodes in
//! the private subnets reach the internet through it to join the cluster and pull images),
//! `cluster` does not.
//!
//! The resources, their tags and keys are those `network` made before this stage existed
//! ([`network::nat_owns`] says which keys are this stage's), so a stack built then is adopted
//! as it is: nothing is created twice. The parts — observing by tag, the pure diff
//! ([`network::plan_nat`]), the steps, the teardown — are the network's, in
//! `stages/network/`.

use async_trait::async_trait;

use super::network::{self, nat_owns, Part};
use super::{outcome, Change, Context, Stage, StageError};
use crate::engine::graph::StageId;
use crate::engine::run::{Outcome, StageHandle};

pub const ID: StageId = "nat";

pub struct Nat;

#[async_trait]
impl Stage for Nat {
    fn id(&self) -> StageId {
        ID
    }

    /// `network`: the NAT gateways go in its public subnets, the route tables in its VPC and
    /// on its private subnets.
    fn depends_on(&self) -> &'static [StageId] {
        &[network::ID]
    }

    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        let seen = network::observe(cx).await?;
        let zones = network::zone_names(cx);
        Ok(network::plan_nat(&cx.stack, &zones, &seen).changes(|s| s.change(&cx.stack)))
    }

    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError> {
        network::plan_teardown(cx, Part::Nat).await
    }

    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        let aws = cx.aws()?;
        let zones = network::zone_names(cx);
        // The subnets this stage builds on; a clear error if `network` is not there.
        network::facts(cx).await?;
        h.step("observing");
        let mut seen = network::observe(cx).await?;
        for d in seen.duplicates.iter().filter(|d| nat_owns(d)) {
            h.warn(format!(
                "duplicate NAT resource tagged for this stack: {d}; `meshstack down` removes it"
            ));
        }
        let steps = network::plan_nat(&cx.stack, &zones, &seen).refuse()?;
        let changes: Vec<Change> = steps.iter().map(|s| s.change(&cx.stack)).collect();
        for (step, change) in steps.iter().zip(&changes) {
            h.step(change.to_string());
            network::execute(cx, aws, step, &mut seen, h).await?;
        }
        // The stage ends when the private subnets have a way out: a NAT gateway found
        // `pending` (a killed run's, its routes already made) is waited for too.
        for nat in seen.nats.values_mut().filter(|n| !n.available) {
            h.step(format!(
                "waiting for NAT gateway {} to become available",
                nat.id
            ));
            network::wait_nat_available(aws, &nat.id, cx.waits.nat, cx.waits.ec2_consistency)
                .await?;
            nat.available = true;
        }
        Ok(outcome(&changes))
    }

    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError> {
        network::down_nat(cx, cx.aws()?, h).await
    }
}
