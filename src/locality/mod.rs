//! The traffic pattern itself, free of AWS and of Kubernetes API calls: which zones the app
//! runs in and where its pods landed ([`placement`]), the orders DestinationRule generated from
//! those zones ([`policy`]), Envoy's per-endpoint counters ([`envoy`]) and what they say about
//! in-zone and on-node traffic ([`report`]), the HTML picture of both ([`page`]), and
//! `meshstack demo`'s before/after arithmetic ([`demo`]). The `locality` stage, `meshstack
//! pods`, `verify` and `demo` read the cluster and hand plain values to these modules.

pub mod demo;
pub mod envoy;
pub mod page;
pub mod placement;
pub mod policy;
pub mod report;
