//! The stages: one file each, all behind one trait, so the engine runs them without knowing
//! what they touch.
//!
//! # The contract (after kube-runtime's finalizer)
//! `up` and `down` are idempotent and tolerate being run several times, even after being
//! killed half-way; `down` tolerates `up` never having run. Each stage observes the cloud first
//! (by tag or deterministic name, never only from the journal), computes the changes with a pure
//! function, and makes only those. The journal records intent before each create and the result
//! after it.

pub mod access;
pub mod app;
pub mod chart;
pub mod cluster;
pub mod iam;
pub mod istio;
pub mod istio_base;
pub mod jaeger;
pub mod karpenter;
pub mod karpenter_infra;
pub mod kiali;
pub mod kiali_operator;
pub mod kubernetes;
pub mod locality;
pub mod nat;
pub mod network;
pub mod nodegroup;
pub mod prometheus;

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::aws::account::{Identity, Zone};
use crate::aws::teardown::Found;
use crate::aws::{AwsClients, AwsError};
use crate::config::Stack;
use crate::engine::graph::{StageId, StageSpec};
use crate::engine::run::{Outcome, StageHandle};
use crate::engine::state::{SharedJournal, StateError};
use crate::retry::Backoff;

/// One stage of the environment.
#[async_trait]
pub trait Stage: Send + Sync {
    /// Kebab-case id: the same in the CLI, the journal, logs and JSON.
    fn id(&self) -> StageId;
    /// Stages that must be up before this one (and down after it).
    fn depends_on(&self) -> &'static [StageId];
    /// Whether the stage installs helm charts (then `up` checks for helm before any write).
    fn uses_helm(&self) -> bool {
        false
    }
    /// Whether the stage works inside the cluster (through its API): then a `down` that fails
    /// because the API went away is a skipped teardown, not a failure — deleting the cluster
    /// removes what is in it.
    fn in_cluster(&self) -> bool {
        false
    }
    /// Whether the stage needs AWS (its own resources there, or the cluster's): such stages are
    /// off on an existing cluster (`cluster.existing`). The stages outside the cluster do; of
    /// those inside, Karpenter does (its IAM role and interruption queue).
    fn needs_aws(&self) -> bool {
        !self.in_cluster()
    }
    /// What `up` would change. Read-only; looks only at this stage's own resources, so that it
    /// also works on an empty account and offline (then everything is a create).
    async fn plan_up(&self, cx: &Context) -> Result<Vec<Change>, StageError>;
    /// What `down` would delete. Read-only.
    async fn plan_down(&self, cx: &Context) -> Result<Vec<Change>, StageError>;
    /// Create or repair what differs. With nothing to do, makes no mutating call.
    async fn up(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError>;
    /// Delete everything this stage created (found by tag), and nothing else.
    async fn down(&self, cx: &Context, h: &StageHandle) -> Result<Outcome, StageError>;
}

/// Every stage, in declaration order (the engine's tie-break): the AWS stages, then the
/// Kubernetes stages.
pub fn all() -> Vec<Box<dyn Stage>> {
    vec![
        Box::new(network::Network),
        Box::new(nat::Nat),
        Box::new(iam::Iam),
        Box::new(cluster::Cluster),
        Box::new(access::Access),
        Box::new(nodegroup::NodeGroup),
        Box::new(karpenter_infra::KarpenterInfra),
        Box::new(karpenter::Karpenter),
        Box::new(prometheus::Prometheus),
        Box::new(istio_base::IstioBase),
        Box::new(istio::Istio),
        Box::new(jaeger::Jaeger),
        Box::new(kiali_operator::KialiOperator),
        Box::new(kiali::Kiali),
        Box::new(app::App),
        Box::new(locality::Locality),
    ]
}

/// The stages `stack` runs: all of them, or on an existing cluster (`cluster.existing`) only
/// those that need nothing of AWS.
pub fn for_stack(stack: &Stack) -> Vec<Box<dyn Stage>> {
    let all = all();
    match stack.existing_cluster() {
        None => all,
        Some(_) => all.into_iter().filter(|s| !s.needs_aws()).collect(),
    }
}

/// The stages [`for_stack`] leaves out for `stack`, in declaration order.
pub fn left_out(stack: &Stack) -> Vec<StageId> {
    let kept: Vec<StageId> = for_stack(stack).iter().map(|s| s.id()).collect();
    all()
        .iter()
        .map(|s| s.id())
        .filter(|id| !kept.contains(id))
        .collect()
}

/// The engine's view of the stages. A dependency on a stage not among `stages` (one
/// [`for_stack`] left out) is dropped: what it would have provided is there already.
pub fn specs(stages: &[Box<dyn Stage>]) -> Vec<StageSpec> {
    let ids: Vec<StageId> = stages.iter().map(|s| s.id()).collect();
    stages
        .iter()
        .map(|s| StageSpec {
            id: s.id(),
            depends_on: s
                .depends_on()
                .iter()
                .copied()
                .filter(|d| ids.contains(d))
                .collect(),
        })
        .collect()
}

/// What a stage works with.
pub struct Context {
    pub stack: Stack,
    /// `None` when planning without credentials: every observation is then "nothing exists".
    pub aws: Option<AwsClients>,
    pub identity: Option<Identity>,
    pub zones: Vec<Zone>,
    /// `None` for read-only commands (`plan`, `status`), which never write the journal.
    pub journal: Option<SharedJournal>,
    pub waits: Waits,
    /// `up --allow-unsafe-locality`: apply the locality policies even when their safety check
    /// fails.
    pub allow_unsafe_locality: bool,
    facts: Mutex<Facts>,
    /// The cluster, once a Kubernetes stage has connected (or a test has supplied one).
    kube: tokio::sync::OnceCell<kubernetes::KubeAccess>,
    /// Whether the cluster's API answered the last probe; `None` before the first.
    reach: tokio::sync::Mutex<Option<bool>>,
    /// Whether `down` has warned that the API does not answer (it warns once).
    api_warned: std::sync::atomic::AtomicBool,
    /// The API server's address, once connected, for messages.
    api_endpoint: std::sync::OnceLock<String>,
}

impl Context {
    pub fn new(
        stack: Stack,
        aws: Option<AwsClients>,
        identity: Option<Identity>,
        zones: Vec<Zone>,
        journal: Option<SharedJournal>,
    ) -> Self {
        Context {
            stack,
            aws,
            identity,
            zones,
            journal,
            waits: Waits::from_env(),
            allow_unsafe_locality: false,
            facts: Mutex::new(Facts::default()),
            kube: tokio::sync::OnceCell::new(),
            reach: tokio::sync::Mutex::new(None),
            api_warned: std::sync::atomic::AtomicBool::new(false),
            api_endpoint: std::sync::OnceLock::new(),
        }
    }

    /// The AWS clients, for stages that only run with credentials (`up`, `down`).
    pub fn aws(&self) -> Result<&AwsClients, StageError> {
        self.aws
            .as_ref()
            .ok_or_else(|| StageError::Missing("AWS credentials".into()))
    }

    pub fn partition(&self) -> &str {
        self.identity
            .as_ref()
            .map_or("aws", |i| i.partition.as_str())
    }

    pub fn account(&self) -> &str {
        self.identity
            .as_ref()
            .map_or("000000000000", |i| i.account.as_str())
    }

    /// Record the intent to create `key` before the call; returns the idempotency token to send
    /// (the same one a killed run sent, if it got that far).
    pub fn begin(&self, stage: StageId, key: &str) -> Result<String, StageError> {
        match &self.journal {
            Some(j) => Ok(j
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .begin(stage, key)?),
            None => Ok(String::new()),
        }
    }

    /// File an unfinished intent for `key` that stage `from` recorded under stage `to`, which
    /// now owns the resource (see [`crate::engine::state::Journal::move_intent`]).
    pub fn move_intent(&self, from: StageId, to: StageId, key: &str) -> Result<(), StageError> {
        if let Some(j) = &self.journal {
            j.lock()
                .unwrap_or_else(|e| e.into_inner())
                .move_intent(from, to, key)?;
        }
        Ok(())
    }

    /// Record that `key` now exists as `id`.
    pub fn complete(&self, stage: StageId, key: &str, id: &str) -> Result<(), StageError> {
        if let Some(j) = &self.journal {
            j.lock()
                .unwrap_or_else(|e| e.into_inner())
                .complete(stage, key, id)?;
        }
        Ok(())
    }

    /// Store an output of a stage in the journal (for `status` and dependents).
    pub fn set_output(
        &self,
        stage: StageId,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StageError> {
        if let Some(j) = &self.journal {
            j.lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_output(stage, key, value)?;
        }
        Ok(())
    }

    fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What stages learn about each other's resources during a run, so a dependent doesn't observe
/// them again. Filled by the stage that owns the resources, or on demand by its `facts` fn.
#[derive(Debug, Default)]
struct Facts {
    network: Option<network::NetworkFacts>,
    iam: Option<iam::IamFacts>,
    cluster: Option<cluster::ClusterFacts>,
}

/// Deadlines and poll schedules of the long waits.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    pub cluster: Backoff,
    pub nodegroup: Backoff,
    pub nat: Backoff,
    /// Retrying deletes that fail with `DependencyViolation` (ENIs and load balancers let go slowly).
    pub dependency: Backoff,
    /// Kubernetes conditions: CRDs established, Deployments available, load balancer addresses.
    pub kubernetes: Backoff,
    /// Retrying calls that fail while a new IAM role or OIDC provider propagates.
    pub iam_propagation: Backoff,
    /// Retrying EC2 calls that name a resource created moments ago and are answered
    /// `*.NotFound` ("Eventual consistency in the Amazon EC2 API").
    pub ec2_consistency: Backoff,
}

impl Waits {
    /// Every poll interval and deadline divided by `factor` (at least 1).
    pub fn scaled(self, factor: u32) -> Waits {
        let scale = |b: Backoff| b.scaled(factor);
        Waits {
            cluster: scale(self.cluster),
            nodegroup: scale(self.nodegroup),
            nat: scale(self.nat),
            dependency: scale(self.dependency),
            kubernetes: scale(self.kubernetes),
            iam_propagation: scale(self.iam_propagation),
            ec2_consistency: scale(self.ec2_consistency),
        }
    }

    /// The defaults, scaled by [`crate::aws::WAIT_SCALE_ENV`].
    pub fn from_env() -> Waits {
        Waits::default().scaled(crate::aws::wait_scale())
    }
}

impl Default for Waits {
    fn default() -> Self {
        let s = Duration::from_secs;
        Waits {
            cluster: Backoff::new(s(2), s(30), s(40 * 60)),
            nodegroup: Backoff::new(s(2), s(30), s(30 * 60)),
            nat: Backoff::new(s(1), s(15), s(10 * 60)),
            dependency: Backoff::new(s(2), s(20), s(10 * 60)),
            kubernetes: Backoff::new(s(1), s(10), s(10 * 60)),
            // IAM is eventually consistent; changes usually show within seconds, at most a
            // couple of minutes.
            iam_propagation: Backoff::new(s(2), s(10), s(3 * 60)),
            // EC2's reads and writes on a new resource usually agree within seconds; AWS
            // gives no bound, so a generous one.
            ec2_consistency: Backoff::new(s(1), s(8), s(2 * 60)),
        }
    }
}

/// One planned change, as `plan` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub action: Action,
    /// The kind of resource: `vpc`, `subnet`, `iam-role`, ...
    pub resource: &'static str,
    /// Its name (or tag key) — enough for a reader to find it in the console.
    pub name: String,
    /// What differs, for updates and conflicts.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Change {
    pub fn new(action: Action, resource: &'static str, name: impl Into<String>) -> Self {
        Change {
            action,
            resource,
            name: name.into(),
            detail: String::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.action.sign(), self.resource, self.name)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Delete,
    /// Something exists that meshstack may not change or adopt; `up` stops with the detail.
    Conflict,
    /// Nothing to change, but `up` waits for AWS (a cluster still CREATING).
    Wait,
}

impl Action {
    pub fn sign(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Delete => "-",
            Action::Conflict => "!",
            Action::Wait => "…",
        }
    }
}

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The journal could not be written.
    #[error(transparent)]
    Journal(#[from] StateError),
    /// Something exists that meshstack must not change or adopt.
    #[error("{0}")]
    Conflict(String),
    /// A wait ran out of time; the resource is left as it is and a re-run continues the wait.
    #[error("timed out after {after:?} waiting for {what}; re-run to keep waiting")]
    Timeout { what: String, after: Duration },
    /// Something this stage needs from another stage is not there.
    #[error("{0} not found; run `meshstack up` for the stages it depends on first")]
    Missing(String),
    /// A Kubernetes object could not be applied, read, deleted or waited for.
    #[error(transparent)]
    K8s(#[from] crate::k8s::apply::ApplyError),
    /// A helm call failed.
    #[error(transparent)]
    Helm(#[from] crate::k8s::helm::HelmError),
    /// `down` could not remove everything; the listed resources remain.
    #[error("left behind: {0}")]
    Remaining(String),
}

/// What `up` would do for a stage: its steps, in order, and the conflicts found among them —
/// things that exist and that meshstack may not change or adopt.
///
/// `plan` lists both, each conflict where it was found ([`Plan::changes`]). `up` gets the steps
/// only through [`Plan::refuse`], which fails while there is a conflict; so a stage's step type
/// has no conflict in it, and executing one has none to handle. For reading (and the tests), a
/// plan derefs to its steps.
#[derive(Debug, Clone)]
pub struct Plan<S> {
    steps: Vec<S>,
    conflicts: Vec<Conflict>,
}

/// Something that exists and that meshstack may not change or adopt; `up` stops with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The kind of resource, as in a [`Change`].
    pub resource: &'static str,
    pub name: String,
    /// What is wrong, and what to do about it.
    pub detail: String,
    /// How many steps were planned before it: where `plan` lists it.
    at: usize,
}

impl Conflict {
    fn change(&self) -> Change {
        Change::new(Action::Conflict, self.resource, self.name.clone()).detail(self.detail.clone())
    }
}

impl<S> Plan<S> {
    pub fn new() -> Self {
        Plan {
            steps: Vec::new(),
            conflicts: Vec::new(),
        }
    }

    pub fn push(&mut self, step: S) {
        self.steps.push(step);
    }

    /// Note a conflict after the steps planned so far.
    pub fn conflict(
        &mut self,
        resource: &'static str,
        name: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.conflicts.push(Conflict {
            resource,
            name: name.into(),
            detail: detail.into(),
            at: self.steps.len(),
        });
    }

    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// How `plan` shows it: each step as `show` says, each conflict where it was found.
    pub fn changes(&self, show: impl Fn(&S) -> Change) -> Vec<Change> {
        let mut changes = Vec::with_capacity(self.steps.len() + self.conflicts.len());
        let mut conflicts = self.conflicts.iter().peekable();
        for (i, step) in self.steps.iter().enumerate() {
            while let Some(c) = conflicts.next_if(|c| c.at == i) {
                changes.push(c.change());
            }
            changes.push(show(step));
        }
        changes.extend(conflicts.map(Conflict::change));
        changes
    }

    /// The steps, for `up` to carry out; a [`StageError::Conflict`] naming each conflict
    /// instead, if there is any.
    pub fn refuse(self) -> Result<Vec<S>, StageError> {
        if self.conflicts.is_empty() {
            return Ok(self.steps);
        }
        let named: Vec<String> = self
            .conflicts
            .iter()
            .map(|c| format!("{} {}: {}", c.resource, c.name, c.detail))
            .collect();
        Err(StageError::Conflict(named.join("; ")))
    }
}

impl<S> Default for Plan<S> {
    fn default() -> Self {
        Plan::new()
    }
}

impl<S> From<Vec<S>> for Plan<S> {
    fn from(steps: Vec<S>) -> Self {
        Plan {
            steps,
            conflicts: Vec::new(),
        }
    }
}

impl<S> Extend<S> for Plan<S> {
    fn extend<I: IntoIterator<Item = S>>(&mut self, steps: I) {
        self.steps.extend(steps);
    }
}

impl<S> std::ops::Deref for Plan<S> {
    type Target = [S];

    fn deref(&self) -> &[S] {
        &self.steps
    }
}

/// A plan equals a list of steps when it is exactly those steps, with no conflict.
impl<S: PartialEq> PartialEq<Vec<S>> for Plan<S> {
    fn eq(&self, steps: &Vec<S>) -> bool {
        self.conflicts.is_empty() && self.steps == *steps
    }
}

/// How `plan --destroy` shows something `down` found to delete.
fn deletion(found: &Found) -> Change {
    Change::new(Action::Delete, found.kind.name, found.label()).detail(found.why)
}

/// Summarize what a stage did, for the progress line and JSON.
fn outcome(changes: &[Change]) -> Outcome {
    if changes.is_empty() {
        return Outcome::Unchanged;
    }
    let count = |a: Action| changes.iter().filter(|c| c.action == a).count();
    let mut parts = Vec::new();
    for (action, verb) in [
        (Action::Create, "created"),
        (Action::Update, "updated"),
        (Action::Delete, "deleted"),
    ] {
        let n = count(action);
        if n > 0 {
            parts.push(format!("{verb} {n}"));
        }
    }
    Outcome::Changed(parts.join(", "))
}

/// The outcome of a `down` that removed `n` things.
fn deleted(n: usize) -> Outcome {
    if n == 0 {
        Outcome::Unchanged
    } else {
        Outcome::Changed(format!("deleted {n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_cluster_runs_the_kubernetes_half_alone() {
        let built = Stack::parse("name: t\n", "t").unwrap();
        assert_eq!(for_stack(&built).len(), all().len());
        assert!(left_out(&built).is_empty());
        let existing = Stack::parse("name: t\ncluster:\n  existing: {}\n", "t").unwrap();
        let kept: Vec<StageId> = for_stack(&existing).iter().map(|s| s.id()).collect();
        assert_eq!(
            kept,
            [
                "prometheus",
                "istio-base",
                "istio",
                "jaeger",
                "kiali-operator",
                "kiali",
                "app",
                "locality"
            ]
        );
        assert_eq!(
            left_out(&existing),
            [
                "network",
                "nat",
                "iam",
                "cluster",
                "access",
                "nodegroup",
                "karpenter-infra",
                "karpenter"
            ]
        );
        // The dependencies on left-out stages are dropped, so the graph is valid.
        let graph =
            crate::engine::graph::Graph::new(specs(&for_stack(&existing))).expect("a valid graph");
        assert_eq!(graph.topo_order()[0], "prometheus");
        let deps = |id: &str| {
            specs(&for_stack(&existing))
                .into_iter()
                .find(|s| s.id == id)
                .unwrap()
                .depends_on
        };
        assert!(deps("istio-base").is_empty() && deps("kiali-operator").is_empty());
        assert_eq!(deps("istio"), ["istio-base"]);
    }

    /// What each stage waits for, as the work needs it and no more (issue 21, "Time on a real
    /// account"): the NAT gateways, kiali-operator's chart and Istio's base chart off the
    /// long path.
    #[test]
    fn the_graph_waits_only_where_the_work_needs_it() {
        let specs = specs(&all());
        let deps = |id: &str| -> Vec<StageId> {
            specs
                .iter()
                .find(|s| s.id == id)
                .unwrap_or_else(|| panic!("no stage {id}"))
                .depends_on
                .clone()
        };
        let graph = crate::engine::graph::Graph::new(specs.clone()).expect("a valid graph");
        // Everything `id` waits for, directly or not.
        let upstream = |id: &str| -> Vec<StageId> {
            let mut seen: Vec<StageId> = Vec::new();
            let mut todo = deps(id);
            while let Some(d) = todo.pop() {
                if !seen.contains(&d) {
                    seen.push(d);
                    todo.extend(deps(d));
                }
            }
            seen
        };
        assert_eq!(deps("nat"), ["network"]);
        assert_eq!(deps("cluster"), ["network", "iam"]);
        assert!(
            !upstream("cluster").contains(&"nat"),
            "the cluster needs only the subnets"
        );
        assert_eq!(deps("nodegroup"), ["cluster", "nat"]);
        assert_eq!(deps("istio-base"), ["cluster"]);
        assert!(!upstream("istio-base").contains(&"nodegroup"));
        assert_eq!(deps("istio"), ["istio-base", "nodegroup"]);
        assert_eq!(deps("kiali-operator"), ["nodegroup"]);
        assert_eq!(
            deps("kiali"),
            ["kiali-operator", "istio", "prometheus", "jaeger"]
        );
        // What uses Istio's CRDs or its sidecar injection still waits for istiod.
        for id in ["app", "jaeger", "kiali"] {
            assert!(upstream(id).contains(&"istio"), "{id}");
        }
        assert!(upstream("locality").contains(&"app"));
        // Declaration order stays a topological order (the engine's tie-break).
        let order: Vec<StageId> = all().iter().map(|s| s.id()).collect();
        for (i, id) in order.iter().enumerate() {
            assert!(deps(id).iter().all(|d| order[..i].contains(d)), "{id}");
        }
        assert_eq!(graph.topo_order().len(), order.len());
    }

    #[test]
    fn a_plan_lists_conflicts_where_they_were_found_and_refuses_them() {
        let mut plan = Plan::new();
        plan.conflict("vpc", "first", "before any step");
        plan.push("a");
        plan.conflict("subnet", "s-1", "between the steps");
        plan.push("b");
        plan.conflict("subnet", "s-2", "after them");
        let listed: Vec<String> = plan
            .changes(|s| Change::new(Action::Create, "step", *s))
            .iter()
            .map(Change::to_string)
            .collect();
        assert_eq!(
            listed,
            [
                "! vpc first (before any step)",
                "+ step a",
                "! subnet s-1 (between the steps)",
                "+ step b",
                "! subnet s-2 (after them)",
            ]
        );
        assert_eq!(&plan[..], ["a", "b"]);
        assert!(
            plan != vec!["a", "b"],
            "a plan with conflicts is not its steps"
        );
        assert_eq!(
            plan.refuse().unwrap_err().to_string(),
            "vpc first: before any step; subnet s-1: between the steps; subnet s-2: after them"
        );

        let plan: Plan<&str> = vec!["a"].into();
        assert_eq!(plan, vec!["a"]);
        assert_eq!(plan.refuse().unwrap(), ["a"]);
    }
}
