//! Where the app's pods landed: a plain model of nodes and pods (built from the Kubernetes
//! objects by [`NodeInfo::from_node`] and [`PodInfo::from_pod`]) and the pure questions asked
//! of it — which zones the app runs in, which nodes would lose their calls to products under
//! `internalTrafficPolicy: Local`, which node owns a pod IP, and the zone → node → pods report
//! behind `meshstack pods`.
//!
//! It lives apart from the Kubernetes calls so that the safety check the `locality` stage
//! relies on, and the report a person reads, are tested on fixtures without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::names::namespace::APP as NAMESPACE;

/// Node label holding the node's availability zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Node label holding the EC2 instance type.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
/// Karpenter v1 (and v1beta1) NodePool label.
pub const KARPENTER_NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";
/// Legacy Karpenter (v1alpha5) Provisioner label.
pub const KARPENTER_PROVISIONER_LABEL: &str = "karpenter.sh/provisioner-name";
/// Karpenter capacity type: `spot` or `on-demand`.
pub const KARPENTER_CAPACITY_LABEL: &str = "karpenter.sh/capacity-type";
/// EKS managed node group name.
pub const NODEGROUP_LABEL: &str = "eks.amazonaws.com/nodegroup";
/// EKS managed node group capacity type: `ON_DEMAND` or `SPOT`.
pub const NODEGROUP_CAPACITY_LABEL: &str = "eks.amazonaws.com/capacityType";
/// The suffix a Deployment's ReplicaSet adds to its name, also set on its pods.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The `app` label value of the products pods.
pub const PRODUCTS_APP: &str = "products";
/// The Deployments that call products: with `internalTrafficPolicy: Local` each of their pods
/// needs a Ready products pod on its own node, or its calls are dropped.
pub const PRODUCTS_CLIENTS: [&str; 2] = ["graphql", "orders-2"];

/// The zone name used for nodes without a zone label (and for pods on nodes we were not
/// given); listed after the real zones.
pub const UNKNOWN_ZONE: &str = "unknown";

/// Who created a node, from its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOrigin {
    /// Provisioned by Karpenter for this NodePool (or legacy Provisioner).
    Karpenter { nodepool: String },
    /// A member of this EKS managed node group.
    NodeGroup { name: String },
    /// Anything else (self-managed, Fargate, kind, ...).
    Other,
}

impl fmt::Display for NodeOrigin {
    /// `karpenter:<pool>`, `nodegroup:<name>` or `other`: the form in the `pods` report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeOrigin::Karpenter { nodepool } => write!(f, "karpenter:{nodepool}"),
            NodeOrigin::NodeGroup { name } => write!(f, "nodegroup:{name}"),
            NodeOrigin::Other => f.write_str("other"),
        }
    }
}

/// What the locality work needs to know about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub zone: Option<String>,
    pub instance_type: Option<String>,
    /// `on-demand` or `spot` (normalised from Karpenter's or EKS's spelling).
    pub capacity_type: Option<String>,
    pub origin: NodeOrigin,
    /// The node's `Ready` condition is `True`.
    pub ready: bool,
    pub internal_ip: Option<String>,
}

impl NodeInfo {
    /// Reads the labels, the `Ready` condition and the `InternalIP` address. Missing fields
    /// become `None`/`false`; nothing here fails on odd input.
    pub fn from_node(n: &Node) -> Self {
        let labels = n.metadata.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key)).cloned();
        let origin = if let Some(pool) =
            label(KARPENTER_NODEPOOL_LABEL).or_else(|| label(KARPENTER_PROVISIONER_LABEL))
        {
            NodeOrigin::Karpenter { nodepool: pool }
        } else if let Some(name) = label(NODEGROUP_LABEL) {
            NodeOrigin::NodeGroup { name }
        } else {
            NodeOrigin::Other
        };
        let capacity_type = label(KARPENTER_CAPACITY_LABEL)
            .or_else(|| label(NODEGROUP_CAPACITY_LABEL))
            .map(|c| normalise_capacity(&c));
        let status = n.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let internal_ip = status
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone());
        NodeInfo {
            name: n.metadata.name.clone().unwrap_or_default(),
            zone: label(ZONE_LABEL),
            instance_type: label(INSTANCE_TYPE_LABEL),
            capacity_type,
            origin,
            ready,
            internal_ip,
        }
    }
}

/// `ON_DEMAND` (EKS) and `on-demand` (Karpenter) are the same thing; so are `SPOT` and `spot`.
fn normalise_capacity(c: &str) -> String {
    c.trim().to_ascii_lowercase().replace('_', "-")
}

/// What the locality work needs to know about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub name: String,
    /// `spec.nodeName`; `None` while the pod is Pending unscheduled.
    pub node: Option<String>,
    /// The owning Deployment, derived from the ReplicaSet owner; `None` for other pods.
    pub deployment: Option<String>,
    /// The `app` label.
    pub app: Option<String>,
    /// The `version` label (else `app.kubernetes.io/version`).
    pub version: Option<String>,
    /// `status.podIP`, if set and well-formed.
    pub ip: Option<IpAddr>,
    /// The `Ready` condition is `True` and the pod is not being deleted (a terminating pod
    /// leaves the Service's ready endpoints even while its condition still says Ready).
    pub ready: bool,
}

impl PodInfo {
    /// Reads labels, owner references, node, IP and readiness. Nothing here fails on odd
    /// input: what cannot be read is `None`/`false`.
    pub fn from_pod(p: &Pod) -> Self {
        let labels = p.metadata.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key)).cloned();
        let status = p.status.as_ref();
        let condition_ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        PodInfo {
            name: p.metadata.name.clone().unwrap_or_default(),
            node: p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            deployment: deployment_of(p),
            app: label("app"),
            version: label("version").or_else(|| label("app.kubernetes.io/version")),
            ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            ready: condition_ready && p.metadata.deletion_timestamp.is_none(),
        }
    }

    fn is_products(&self) -> bool {
        self.app.as_deref() == Some(PRODUCTS_APP)
    }

    fn is_products_client(&self) -> bool {
        self.deployment
            .as_deref()
            .is_some_and(|d| PRODUCTS_CLIENTS.contains(&d))
    }
}

/// A Deployment's pod is owned by a ReplicaSet named `<deployment>-<pod-template-hash>`; a
/// ReplicaSet without that suffix was not made by a Deployment.
fn deployment_of(p: &Pod) -> Option<String> {
    let hash = p.metadata.labels.as_ref()?.get(POD_TEMPLATE_HASH_LABEL)?;
    let owner = p
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .filter(|o| o.kind == "ReplicaSet")
        // The controller reference is the owner that matters when there are several.
        .max_by_key(|o| o.controller == Some(true))?;
    owner
        .name
        .strip_suffix(hash.as_str())
        .and_then(|rest| rest.strip_suffix('-'))
        .filter(|d| !d.is_empty())
        .map(str::to_string)
}

/// A node where a products client runs without a Ready products pod beside it: under
/// `internalTrafficPolicy: Local` that client's calls to products are dropped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnsafeNode {
    pub node: String,
    /// `None` when the node has no zone label (or was not among the nodes read).
    pub zone: Option<String>,
    /// The client pods on the node, sorted.
    pub clients: Vec<String>,
}

/// The nodes and the app's pods, as read from the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub nodes: Vec<NodeInfo>,
    /// The pods of the app's namespace.
    pub pods: Vec<PodInfo>,
    /// The endpoints of the app's Services that carry topology hints (`trafficDistribution`).
    pub steering: Vec<Steering>,
}

/// One endpoint of a Service and where the EndpointSlice controller steers callers to it: its
/// `hints` (`forZones` for `trafficDistribution: PreferSameZone`, `forNodes` for
/// `PreferSameNode`), which Istio's sidecars route by.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Steering {
    pub service: String,
    /// The endpoint's pod, else its first address.
    pub endpoint: String,
    pub zone: Option<String>,
    pub node: Option<String>,
    /// Callers in these zones are steered here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub for_zones: Vec<String>,
    /// Callers on these nodes are steered here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub for_nodes: Vec<String>,
}

impl Steering {
    /// The hinted endpoints of `slices` (a Service's EndpointSlices carry its name in the
    /// `kubernetes.io/service-name` label), sorted by service and endpoint.
    pub fn from_slices(slices: &[EndpointSlice]) -> Vec<Steering> {
        let mut out = Vec::new();
        for slice in slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .cloned()
                .unwrap_or_default();
            for e in &slice.endpoints {
                let Some(hints) = &e.hints else { continue };
                let for_zones: Vec<String> = hints
                    .for_zones
                    .iter()
                    .flatten()
                    .map(|z| z.name.clone())
                    .collect();
                let for_nodes: Vec<String> = hints
                    .for_nodes
                    .iter()
                    .flatten()
                    .map(|n| n.name.clone())
                    .collect();
                if for_zones.is_empty() && for_nodes.is_empty() {
                    continue;
                }
                let endpoint = e
                    .target_ref
                    .as_ref()
                    .and_then(|t| t.name.clone())
                    .or_else(|| e.addresses.first().cloned())
                    .unwrap_or_default();
                out.push(Steering {
                    service: service.clone(),
                    endpoint,
                    zone: e.zone.clone(),
                    node: e.node_name.clone(),
                    for_zones,
                    for_nodes,
                });
            }
        }
        out.sort_by(|a, b| (&a.service, &a.endpoint).cmp(&(&b.service, &b.endpoint)));
        out
    }
}

impl Placement {
    /// Builds the model from the objects a list call returned.
    pub fn from_objects(nodes: &[Node], pods: &[Pod]) -> Self {
        Placement {
            nodes: nodes.iter().map(NodeInfo::from_node).collect(),
            pods: pods.iter().map(PodInfo::from_pod).collect(),
            steering: Vec::new(),
        }
    }

    /// The model with the topology hints of `slices` ([`Steering::from_slices`]).
    pub fn with_slices(mut self, slices: &[EndpointSlice]) -> Self {
        self.steering = Steering::from_slices(slices);
        self
    }

    fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Sorted, unique zones of the nodes that run at least one app pod (a scheduled pod with
    /// an `app` label). Nodes without app pods, and nodes without a zone label, add nothing:
    /// a zone where the app does not run must not get a locality rule.
    pub fn zones_in_use(&self) -> Vec<String> {
        let used: BTreeSet<&str> = self
            .pods
            .iter()
            .filter(|p| p.app.is_some())
            .filter_map(|p| p.node.as_deref())
            .collect();
        let zones: BTreeSet<String> = used
            .into_iter()
            .filter_map(|n| self.node(n)?.zone.clone())
            .collect();
        zones.into_iter().collect()
    }

    /// The nodes, sorted by name, that run a products client pod but no Ready products pod.
    ///
    /// # Guarantees
    /// Conservative: a client pod counts whether or not it is Ready (one that is starting will
    /// soon call products); only Ready products pods count as local endpoints, since
    /// kube-proxy routes only to those. Unscheduled client pods are not on any node and are
    /// never reported.
    pub fn unsafe_nodes(&self) -> Vec<UnsafeNode> {
        let mut clients: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut served: BTreeSet<&str> = BTreeSet::new();
        for p in &self.pods {
            let Some(node) = p.node.as_deref() else {
                continue;
            };
            if p.is_products_client() {
                clients.entry(node).or_default().push(p.name.clone());
            }
            if p.is_products() && p.ready {
                served.insert(node);
            }
        }
        clients
            .into_iter()
            .filter(|(node, _)| !served.contains(node))
            .map(|(node, mut pods)| {
                pods.sort();
                UnsafeNode {
                    node: node.to_string(),
                    zone: self.node(node).and_then(|n| n.zone.clone()),
                    clients: pods,
                }
            })
            .collect()
    }

    /// Pod IP → node name, for the scheduled pods that have an IP. Should two pods report
    /// the same IP (a finished pod whose address was reused), a Ready pod wins.
    pub fn node_of_ip(&self) -> BTreeMap<IpAddr, String> {
        let mut pods: Vec<&PodInfo> = self.pods.iter().collect();
        pods.sort_by(|a, b| (a.ready, &a.name).cmp(&(b.ready, &b.name)));
        let mut out = BTreeMap::new();
        for p in pods {
            if let (Some(ip), Some(node)) = (p.ip, &p.node) {
                out.insert(ip, node.clone());
            }
        }
        out
    }

    /// The zone → node → pods report of `meshstack pods`.
    ///
    /// # Guarantees
    /// Zones sorted (nodes without a zone under [`UNKNOWN_ZONE`], last), nodes sorted by name,
    /// pods sorted by name; only nodes that run at least one of the pods appear; pods without
    /// a node are under `unscheduled`. A pod on a node that is not in `nodes` (deleted since
    /// the pods were read) is shown under that node in the unknown zone.
    pub fn report(&self) -> PodsReport {
        let unsafe_nodes: BTreeSet<String> =
            self.unsafe_nodes().into_iter().map(|u| u.node).collect();
        let mut by_node: BTreeMap<&str, Vec<&PodInfo>> = BTreeMap::new();
        let mut unscheduled = Vec::new();
        for p in &self.pods {
            match p.node.as_deref() {
                Some(n) => by_node.entry(n).or_default().push(p),
                None => unscheduled.push(pod_row(p)),
            }
        }
        unscheduled.sort_by(|a, b| a.name.cmp(&b.name));

        // (unknown-last, zone) keeps real zones in name order and "unknown" after them.
        let mut zones: BTreeMap<(bool, String), Vec<NodeReport>> = BTreeMap::new();
        for (name, pods) in by_node {
            let info = self.node(name);
            let zone = info.and_then(|n| n.zone.clone());
            let key = match zone {
                Some(z) => (false, z),
                None => (true, UNKNOWN_ZONE.to_string()),
            };
            let mut rows: Vec<PodRow> = pods.into_iter().map(pod_row).collect();
            rows.sort_by(|a, b| a.name.cmp(&b.name));
            zones.entry(key).or_default().push(NodeReport {
                name: name.to_string(),
                instance_type: info.and_then(|n| n.instance_type.clone()),
                capacity_type: info.and_then(|n| n.capacity_type.clone()),
                origin: info
                    .map_or(NodeOrigin::Other, |n| n.origin.clone())
                    .to_string(),
                ready: info.is_some_and(|n| n.ready),
                missing_local_products: unsafe_nodes.contains(name),
                pods: rows,
            });
        }

        let zones: Vec<ZoneReport> = zones
            .into_iter()
            .map(|((_, zone), nodes)| ZoneReport { zone, nodes })
            .collect();
        let pods_per_zone = zones
            .iter()
            .map(|z| (z.zone.clone(), z.nodes.iter().map(|n| n.pods.len()).sum()))
            .collect();
        PodsReport {
            steering: self.steering.clone(),
            summary: PodsSummary {
                pods: self.pods.len(),
                pods_per_zone,
                unscheduled: unscheduled.len(),
                unsafe_nodes: unsafe_nodes.len(),
            },
            zones,
            unscheduled,
        }
    }
}

fn pod_row(p: &PodInfo) -> PodRow {
    PodRow {
        name: p.name.clone(),
        deployment: p.deployment.clone(),
        version: p.version.clone(),
        ready: p.ready,
    }
}

/// `meshstack pods` as data (its `-o json` form).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodsReport {
    /// Zones in name order, [`UNKNOWN_ZONE`] last.
    pub zones: Vec<ZoneReport>,
    /// Pods not yet scheduled on a node, by name.
    pub unscheduled: Vec<PodRow>,
    /// Where `trafficDistribution` steers callers, endpoint by endpoint (empty without it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steering: Vec<Steering>,
    pub summary: PodsSummary,
}

/// One zone of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ZoneReport {
    pub zone: String,
    /// Nodes running at least one of the pods, by name.
    pub nodes: Vec<NodeReport>,
}

/// One node of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    pub name: String,
    pub instance_type: Option<String>,
    /// `on-demand` or `spot`.
    pub capacity_type: Option<String>,
    /// `karpenter:<pool>`, `nodegroup:<name>` or `other`.
    pub origin: String,
    pub ready: bool,
    /// A products client runs here without a Ready products pod beside it.
    pub missing_local_products: bool,
    /// By name.
    pub pods: Vec<PodRow>,
}

/// One pod of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRow {
    pub name: String,
    pub deployment: Option<String>,
    pub version: Option<String>,
    pub ready: bool,
}

/// Totals of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodsSummary {
    /// All pods, scheduled or not.
    pub pods: usize,
    /// Scheduled pods per zone (including [`UNKNOWN_ZONE`] when it has any).
    pub pods_per_zone: BTreeMap<String, usize>,
    pub unscheduled: usize,
    /// Nodes flagged `missing_local_products`.
    pub unsafe_nodes: usize,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn ready_word(ready: bool) -> &'static str {
    if ready {
        "ready"
    } else {
        "not ready"
    }
}

fn dash(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

/// The report as a grouped, aligned table: a header line per zone, its nodes indented with
/// their facts, their pods indented under them. Nodes missing a local products endpoint start
/// with `!` and are followed by a sentence naming the clients at risk. Ends with a summary
/// line. With no pods at all, a single line says so.
pub fn render_text(r: &PodsReport) -> String {
    if r.summary.pods == 0 {
        return format!("No pods in the {NAMESPACE} namespace.\n");
    }
    let nodes: Vec<&NodeReport> = r.zones.iter().flat_map(|z| &z.nodes).collect();
    let pods: Vec<&PodRow> = nodes
        .iter()
        .flat_map(|n| &n.pods)
        .chain(&r.unscheduled)
        .collect();
    let width = |items: Vec<usize>| items.into_iter().max().unwrap_or(0);
    let node_w = [
        width(nodes.iter().map(|n| n.name.len()).collect()),
        width(nodes.iter().map(|n| dash(&n.instance_type).len()).collect()),
        width(nodes.iter().map(|n| dash(&n.capacity_type).len()).collect()),
        width(nodes.iter().map(|n| n.origin.len()).collect()),
    ];
    let pod_w = [
        width(pods.iter().map(|p| p.name.len()).collect()),
        width(pods.iter().map(|p| dash(&p.deployment).len()).collect()),
        width(pods.iter().map(|p| dash(&p.version).len()).collect()),
    ];
    let pod_line = |out: &mut String, p: &PodRow, state: &str| {
        let line = format!(
            "    {:<w0$}  {:<w1$}  {:<w2$}  {}",
            p.name,
            dash(&p.deployment),
            dash(&p.version),
            state,
            w0 = pod_w[0],
            w1 = pod_w[1],
            w2 = pod_w[2],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    };

    let mut out = String::new();
    for z in &r.zones {
        let count: usize = z.nodes.iter().map(|n| n.pods.len()).sum();
        out.push_str(&format!(
            "{}: {}, {}\n",
            z.zone,
            plural(z.nodes.len(), "node", "nodes"),
            plural(count, "pod", "pods")
        ));
        for n in &z.nodes {
            let line = format!(
                "{} {:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
                if n.missing_local_products { '!' } else { ' ' },
                n.name,
                dash(&n.instance_type),
                dash(&n.capacity_type),
                n.origin,
                ready_word(n.ready),
                w0 = node_w[0],
                w1 = node_w[1],
                w2 = node_w[2],
                w3 = node_w[3],
            );
            out.push_str(line.trim_end());
            out.push('\n');
            if n.missing_local_products {
                let clients: Vec<&str> = n
                    .pods
                    .iter()
                    .filter(|p| {
                        p.deployment
                            .as_deref()
                            .is_some_and(|d| PRODUCTS_CLIENTS.contains(&d))
                    })
                    .map(|p| p.name.as_str())
                    .collect();
                out.push_str(&format!(
                    "    ! no Ready products pod on this node for {}: with internalTrafficPolicy: Local their calls to products are dropped\n",
                    clients.join(", ")
                ));
            }
            for p in &n.pods {
                pod_line(&mut out, p, ready_word(p.ready));
            }
        }
    }
    if !r.unscheduled.is_empty() {
        out.push_str(&format!(
            "unscheduled: {}\n",
            plural(r.unscheduled.len(), "pod", "pods")
        ));
        for p in &r.unscheduled {
            pod_line(&mut out, p, "pending");
        }
    }

    let per_zone: Vec<String> = r
        .summary
        .pods_per_zone
        .iter()
        .map(|(z, n)| format!("{z} {n}"))
        .collect();
    // "unknown" is listed with the zones but is not one.
    let real_zones = r.zones.iter().filter(|z| z.zone != UNKNOWN_ZONE).count();
    let mut summary = format!(
        "{} on {} in {} ({})",
        plural(r.summary.pods, "pod", "pods"),
        plural(nodes.len(), "node", "nodes"),
        plural(real_zones, "zone", "zones"),
        per_zone.join(", ")
    );
    if r.summary.unscheduled > 0 {
        summary.push_str(&format!(", {} unscheduled", r.summary.unscheduled));
    }
    if r.summary.unsafe_nodes == 0 {
        summary.push_str("; every products client has a Ready products pod on its node");
    } else {
        summary.push_str(&format!(
            "; {} where a products client has no Ready local products pod (marked !)",
            plural(r.summary.unsafe_nodes, "node", "nodes")
        ));
    }
    out.push_str(&summary);
    out.push('\n');
    out.push_str(&steering_text(&r.steering));
    out
}

/// The `trafficDistribution` hints, a line per endpoint: which callers it serves. Empty
/// without hints (the failover and distribute modes set none).
pub fn steering_text(steering: &[Steering]) -> String {
    if steering.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "trafficDistribution hints (the EndpointSlice controller's; the sidecars route by them):\n",
    );
    for s in steering {
        let mut to = Vec::new();
        if !s.for_zones.is_empty() {
            to.push(format!("callers in {}", s.for_zones.join(", ")));
        }
        if !s.for_nodes.is_empty() {
            to.push(format!("callers on {}", s.for_nodes.join(", ")));
        }
        let at = match (&s.zone, &s.node) {
            (Some(z), Some(n)) => format!("{z}, {n}"),
            (Some(z), None) => z.clone(),
            (None, Some(n)) => n.clone(),
            (None, None) => "-".into(),
        };
        out.push_str(&format!(
            "  {}: {} ({at}) <- {}\n",
            s.service,
            s.endpoint,
            to.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        NodeAddress, NodeCondition, NodeStatus, PodCondition, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    #[test]
    fn steering_reads_the_hints_of_each_endpoint_and_says_whom_it_serves() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "products-x", "labels": {"kubernetes.io/service-name": "products-service"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.9"], "zone": "b", "nodeName": "n2",
                 "targetRef": {"kind": "Pod", "name": "products-2"},
                 "hints": {"forNodes": [{"name": "n2"}]}},
                {"addresses": ["10.0.0.8"], "zone": "a", "nodeName": "n1",
                 "hints": {"forZones": [{"name": "a"}]}},
                {"addresses": ["10.0.0.7"], "zone": "c", "nodeName": "n3"},
            ],
        }))
        .unwrap();
        let steering = Steering::from_slices(&[slice]);
        assert_eq!(steering.len(), 2, "the endpoint without hints is left out");
        assert_eq!(steering[0].endpoint, "10.0.0.8");
        assert_eq!(steering[0].for_zones, ["a"]);
        assert_eq!(steering[1].endpoint, "products-2");
        assert_eq!(steering[1].for_nodes, ["n2"]);
        let text = steering_text(&steering);
        assert!(
            text.contains("products-service: products-2 (b, n2) <- callers on n2"),
            "{text}"
        );
        assert!(
            text.contains("products-service: 10.0.0.8 (a, n1) <- callers in a"),
            "{text}"
        );
        assert_eq!(steering_text(&[]), "");
    }

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// A Karpenter v1 node in `zone`, Ready.
    fn node(name: &str, zone: &str) -> Node {
        node_with(
            name,
            &[
                (ZONE_LABEL, zone),
                (INSTANCE_TYPE_LABEL, "m5.large"),
                (KARPENTER_NODEPOOL_LABEL, "ecommerce"),
                (KARPENTER_CAPACITY_LABEL, "spot"),
            ],
            true,
        )
    }

    fn node_with(name: &str, l: &[(&str, &str)], ready: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: labels(l),
                ..Default::default()
            },
            spec: None,
            status: Some(NodeStatus {
                conditions: Some(vec![
                    NodeCondition {
                        type_: "MemoryPressure".into(),
                        status: "False".into(),
                        ..Default::default()
                    },
                    NodeCondition {
                        type_: "Ready".into(),
                        status: if ready { "True" } else { "Unknown" }.into(),
                        ..Default::default()
                    },
                ]),
                addresses: Some(vec![
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: name.into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "10.0.1.10".into(),
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    /// A Ready pod of Deployment `deployment` (app label `app`) on `node` with `ip`.
    fn pod(name: &str, deployment: &str, app: &str, node: Option<&str>, ip: &str) -> Pod {
        let hash = "5d8f7c9b6";
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(NAMESPACE.into()),
                labels: labels(&[
                    ("app", app),
                    ("version", "0.1.0"),
                    (POD_TEMPLATE_HASH_LABEL, hash),
                ]),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: format!("{deployment}-{hash}"),
                    uid: "u".into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: (!ip.is_empty()).then(|| ip.to_string()),
                conditions: Some(vec![
                    PodCondition {
                        type_: "PodScheduled".into(),
                        status: "True".into(),
                        ..Default::default()
                    },
                    PodCondition {
                        type_: "Ready".into(),
                        status: if node.is_some() { "True" } else { "False" }.into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    fn not_ready(mut p: Pod) -> Pod {
        for c in p.status.as_mut().unwrap().conditions.as_mut().unwrap() {
            if c.type_ == "Ready" {
                c.status = "False".into();
            }
        }
        p
    }

    /// Three zones, one node each, every client beside a Ready products pod; plus a system
    /// node with no app pods.
    fn healthy() -> (Vec<Node>, Vec<Pod>) {
        let nodes = vec![
            node("node-a", "af-south-1a"),
            node("node-b", "af-south-1b"),
            node("node-c", "af-south-1c"),
            node("node-sys", "af-south-1a"),
        ];
        let pods = vec![
            pod(
                "graphql-5d8f7c9b6-aaaaa",
                "graphql",
                "graphql",
                Some("node-a"),
                "10.0.1.5",
            ),
            pod(
                "products-1-5d8f7c9b6-bbbbb",
                "products-1",
                "products",
                Some("node-a"),
                "10.0.1.6",
            ),
            pod(
                "orders-1-5d8f7c9b6-ccccc",
                "orders-1",
                "orders",
                Some("node-b"),
                "10.0.2.5",
            ),
            pod(
                "orders-2-5d8f7c9b6-ddddd",
                "orders-2",
                "orders",
                Some("node-c"),
                "10.0.3.5",
            ),
            pod(
                "products-2-5d8f7c9b6-eeeee",
                "products-2",
                "products",
                Some("node-c"),
                "10.0.3.6",
            ),
        ];
        (nodes, pods)
    }

    #[test]
    fn nodes_are_read_from_karpenter_nodegroup_and_legacy_labels() {
        let cases = [
            (
                node("k", "af-south-1a"),
                NodeOrigin::Karpenter {
                    nodepool: "ecommerce".into(),
                },
                Some("spot"),
            ),
            (
                node_with(
                    "legacy",
                    &[
                        (KARPENTER_PROVISIONER_LABEL, "default"),
                        (KARPENTER_CAPACITY_LABEL, "on-demand"),
                    ],
                    true,
                ),
                NodeOrigin::Karpenter {
                    nodepool: "default".into(),
                },
                Some("on-demand"),
            ),
            (
                node_with(
                    "ng",
                    &[
                        (NODEGROUP_LABEL, "system"),
                        (NODEGROUP_CAPACITY_LABEL, "ON_DEMAND"),
                    ],
                    true,
                ),
                NodeOrigin::NodeGroup {
                    name: "system".into(),
                },
                Some("on-demand"),
            ),
            (
                node_with(
                    "ng-spot",
                    &[
                        (NODEGROUP_LABEL, "batch"),
                        (NODEGROUP_CAPACITY_LABEL, "SPOT"),
                    ],
                    true,
                ),
                NodeOrigin::NodeGroup {
                    name: "batch".into(),
                },
                Some("spot"),
            ),
            (node_with("bare", &[], false), NodeOrigin::Other, None),
        ];
        for (n, origin, capacity) in cases {
            let info = NodeInfo::from_node(&n);
            assert_eq!(info.origin, origin, "{}", info.name);
            assert_eq!(info.capacity_type.as_deref(), capacity, "{}", info.name);
            assert_eq!(info.internal_ip.as_deref(), Some("10.0.1.10"));
        }
        let k = NodeInfo::from_node(&node("k", "af-south-1a"));
        assert_eq!(k.zone.as_deref(), Some("af-south-1a"));
        assert_eq!(k.instance_type.as_deref(), Some("m5.large"));
        assert!(k.ready);
        assert!(!NodeInfo::from_node(&node_with("bare", &[], false)).ready);
        assert_eq!(
            NodeInfo::from_node(&node_with(
                "legacy",
                &[(KARPENTER_PROVISIONER_LABEL, "p")],
                true
            ))
            .origin
            .to_string(),
            "karpenter:p"
        );
        // An object with nothing in it reads as an empty, not-ready node rather than failing.
        let empty = NodeInfo::from_node(&Node::default());
        assert_eq!((empty.name.as_str(), empty.ready), ("", false));
    }

    #[test]
    fn pods_are_read_with_deployment_readiness_and_ip() {
        let p = PodInfo::from_pod(&pod(
            "orders-2-5d8f7c9b6-ddddd",
            "orders-2",
            "orders",
            Some("node-c"),
            "fd00::5",
        ));
        assert_eq!(p.deployment.as_deref(), Some("orders-2"));
        assert_eq!(p.app.as_deref(), Some("orders"));
        assert_eq!(p.version.as_deref(), Some("0.1.0"));
        assert_eq!(p.node.as_deref(), Some("node-c"));
        assert_eq!(p.ip, Some("fd00::5".parse().unwrap()));
        assert!(p.ready);

        let mut deleting = pod("g", "graphql", "graphql", Some("n"), "10.0.0.1");
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(
            !PodInfo::from_pod(&deleting).ready,
            "terminating pods are not ready"
        );
        assert!(
            !PodInfo::from_pod(&not_ready(pod("g", "graphql", "graphql", Some("n"), ""))).ready
        );

        let mut bare = pod("debug", "x", "x", Some("n"), "not-an-ip");
        bare.metadata.owner_references = None;
        let b = PodInfo::from_pod(&bare);
        assert_eq!(b.deployment, None, "no ReplicaSet owner");
        assert_eq!(b.ip, None, "malformed IPs are dropped, not fatal");

        let mut job = pod("j", "x", "x", Some("n"), "");
        job.metadata.owner_references.as_mut().unwrap()[0].kind = "Job".into();
        assert_eq!(PodInfo::from_pod(&job).deployment, None);

        let mut bare_rs = pod("r", "x", "x", Some("n"), "");
        bare_rs
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(POD_TEMPLATE_HASH_LABEL);
        assert_eq!(
            PodInfo::from_pod(&bare_rs).deployment,
            None,
            "RS not made by a Deployment"
        );

        let pending = PodInfo::from_pod(&pod("p", "orders-2", "orders", None, ""));
        assert_eq!(
            (pending.node, pending.ip, pending.ready),
            (None, None, false)
        );
    }

    fn placement(nodes: &[Node], pods: &[Pod]) -> Placement {
        Placement::from_objects(nodes, pods)
    }

    #[test]
    fn safety_check() {
        let (nodes, pods) = healthy();
        let graphql_alone = |products_ready: Option<bool>| {
            let mut pods = pods.clone();
            pods.retain(|p| p.metadata.name.as_deref() != Some("products-1-5d8f7c9b6-bbbbb"));
            if let Some(ready) = products_ready {
                let p = pod(
                    "products-1-5d8f7c9b6-zzzzz",
                    "products-1",
                    "products",
                    Some("node-a"),
                    "10.0.1.7",
                );
                pods.push(if ready { p } else { not_ready(p) });
            }
            pods
        };
        let unsafe_a = vec![UnsafeNode {
            node: "node-a".into(),
            zone: Some("af-south-1a".into()),
            clients: vec!["graphql-5d8f7c9b6-aaaaa".into()],
        }];
        let mut pending_client = pods.clone();
        pending_client.push(pod(
            "orders-2-5d8f7c9b6-ppppp",
            "orders-2",
            "orders",
            None,
            "",
        ));
        let mut two_clients = graphql_alone(None);
        // Ahead of graphql in the list, after it in the answer.
        two_clients.insert(
            0,
            pod(
                "orders-2-5d8f7c9b6-xxxxx",
                "orders-2",
                "orders",
                Some("node-a"),
                "",
            ),
        );
        let mut unknown_node = pods.clone();
        unknown_node.push(pod(
            "graphql-5d8f7c9b6-ggggg",
            "graphql",
            "graphql",
            Some("gone"),
            "",
        ));

        let cases: Vec<(&str, Vec<Pod>, Vec<UnsafeNode>)> = vec![
            ("every client covered", pods.clone(), vec![]),
            (
                "graphql with no products beside it",
                graphql_alone(None),
                unsafe_a.clone(),
            ),
            (
                "products beside it but not Ready",
                graphql_alone(Some(false)),
                unsafe_a.clone(),
            ),
            (
                "a Ready replacement products pod",
                graphql_alone(Some(true)),
                vec![],
            ),
            ("a Pending client is on no node", pending_client, vec![]),
            (
                "every client on the node is named, sorted",
                two_clients,
                vec![UnsafeNode {
                    node: "node-a".into(),
                    zone: Some("af-south-1a".into()),
                    clients: vec![
                        "graphql-5d8f7c9b6-aaaaa".into(),
                        "orders-2-5d8f7c9b6-xxxxx".into(),
                    ],
                }],
            ),
            (
                "a node we were not given has no zone",
                unknown_node,
                vec![UnsafeNode {
                    node: "gone".into(),
                    zone: None,
                    clients: vec!["graphql-5d8f7c9b6-ggggg".into()],
                }],
            ),
        ];
        for (what, pods, want) in cases {
            assert_eq!(placement(&nodes, &pods).unsafe_nodes(), want, "{what}");
        }
    }

    #[test]
    fn orders_1_is_not_a_products_client() {
        let nodes = [node("n", "af-south-1a")];
        let pods = [pod(
            "orders-1-5d8f7c9b6-x",
            "orders-1",
            "orders",
            Some("n"),
            "",
        )];
        assert!(placement(&nodes, &pods).unsafe_nodes().is_empty());
    }

    #[test]
    fn zones_in_use_ignore_nodes_without_app_pods() {
        let (mut nodes, mut pods) = healthy();
        nodes.push(node("node-d", "af-south-1d"));
        // A pod without an app label (a debug pod) does not put its zone in use.
        let mut debug = pod("debug", "debug", "x", Some("node-d"), "");
        debug.metadata.labels.as_mut().unwrap().remove("app");
        pods.push(debug);
        // A node with no zone label adds nothing either.
        nodes.push(node_with("no-zone", &[], true));
        pods.push(pod(
            "orders-1-5d8f7c9b6-z",
            "orders-1",
            "orders",
            Some("no-zone"),
            "",
        ));
        assert_eq!(
            placement(&nodes, &pods).zones_in_use(),
            ["af-south-1a", "af-south-1b", "af-south-1c"]
        );
        assert!(placement(&nodes, &[]).zones_in_use().is_empty());
    }

    #[test]
    fn node_of_ip_maps_pod_ips_and_prefers_ready_pods() {
        let (nodes, mut pods) = healthy();
        // A finished pod on another node that once had graphql's address.
        pods.push(not_ready(pod(
            "zz-old",
            "old",
            "old",
            Some("node-b"),
            "10.0.1.5",
        )));
        pods.push(pod("p", "orders-2", "orders", None, "10.9.9.9"));
        let m = placement(&nodes, &pods).node_of_ip();
        assert_eq!(m.len(), 5, "{m:?}");
        assert_eq!(m[&"10.0.1.5".parse::<IpAddr>().unwrap()], "node-a");
        assert_eq!(m[&"10.0.3.6".parse::<IpAddr>().unwrap()], "node-c");
        assert!(!m.contains_key(&"10.9.9.9".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn report_groups_sorts_and_flags() {
        let (mut nodes, mut pods) = healthy();
        nodes.push(node_with(
            "ng-1",
            &[
                (NODEGROUP_LABEL, "system"),
                (NODEGROUP_CAPACITY_LABEL, "ON_DEMAND"),
            ],
            false,
        ));
        pods.push(pod(
            "graphql-5d8f7c9b6-zzzzz",
            "graphql",
            "graphql",
            Some("ng-1"),
            "",
        ));
        pods.push(pod(
            "orders-2-5d8f7c9b6-ppppp",
            "orders-2",
            "orders",
            None,
            "",
        ));
        // Listed out of order on purpose.
        nodes.reverse();
        pods.reverse();
        let r = placement(&nodes, &pods).report();

        let zones: Vec<&str> = r.zones.iter().map(|z| z.zone.as_str()).collect();
        assert_eq!(
            zones,
            ["af-south-1a", "af-south-1b", "af-south-1c", UNKNOWN_ZONE]
        );
        let a = &r.zones[0];
        assert_eq!(a.nodes.len(), 1, "node-sys runs no pod and is not listed");
        let pod_names: Vec<&str> = a.nodes[0].pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            pod_names,
            ["graphql-5d8f7c9b6-aaaaa", "products-1-5d8f7c9b6-bbbbb"]
        );
        assert_eq!(a.nodes[0].origin, "karpenter:ecommerce");
        assert!(!a.nodes[0].missing_local_products);

        let ng = &r.zones[3].nodes[0];
        assert_eq!(ng.name, "ng-1");
        assert_eq!(ng.origin, "nodegroup:system");
        assert_eq!(ng.capacity_type.as_deref(), Some("on-demand"));
        assert!(!ng.ready);
        assert!(ng.missing_local_products);

        assert_eq!(r.unscheduled.len(), 1);
        assert_eq!(r.unscheduled[0].deployment.as_deref(), Some("orders-2"));
        assert_eq!(r.summary.pods, 7);
        assert_eq!(r.summary.unscheduled, 1);
        assert_eq!(r.summary.unsafe_nodes, 1);
        assert_eq!(r.summary.pods_per_zone["af-south-1a"], 2);
        assert_eq!(r.summary.pods_per_zone[UNKNOWN_ZONE], 1);

        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["zones"][3]["nodes"][0]["missing_local_products"], true);
        assert_eq!(
            json["zones"][0]["nodes"][0]["pods"][0]["deployment"],
            "graphql"
        );
        assert_eq!(json["summary"]["unsafe_nodes"], 1);
        // The order of the input does not matter.
        let (n2, p2) = {
            let (mut n, mut p) = (nodes.clone(), pods.clone());
            n.reverse();
            p.reverse();
            (n, p)
        };
        assert_eq!(placement(&n2, &p2).report(), r);
        let text = render_text(&r);
        assert!(
            text.contains("7 pods on 4 nodes in 3 zones (") && text.contains(", unknown 1)"),
            "unknown is not counted as a zone: {text}"
        );
    }

    #[test]
    fn unknown_zone_is_listed_after_every_zone() {
        // "us-east-1a" sorts after "unknown": the order must not be plain name order.
        let nodes = [node("n1", "us-east-1a"), node_with("n0", &[], true)];
        let pods = [
            pod("a", "orders-1", "orders", Some("n0"), ""),
            pod("b", "orders-1", "orders", Some("n1"), ""),
        ];
        let r = placement(&nodes, &pods).report();
        let zones: Vec<&str> = r.zones.iter().map(|z| z.zone.as_str()).collect();
        assert_eq!(zones, ["us-east-1a", UNKNOWN_ZONE]);
    }

    #[test]
    fn text_is_grouped_aligned_and_marks_unsafe_nodes() {
        let (nodes, mut pods) = healthy();
        pods.retain(|p| p.metadata.name.as_deref() != Some("products-1-5d8f7c9b6-bbbbb"));
        pods.push(pod(
            "orders-2-5d8f7c9b6-ppppp",
            "orders-2",
            "orders",
            None,
            "",
        ));
        let text = render_text(&placement(&nodes, &pods).report());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "af-south-1a: 1 node, 1 pod", "{text}");
        assert!(lines[1].starts_with("! node-a "), "{text}");
        assert_eq!(
            lines[2],
            "    ! no Ready products pod on this node for graphql-5d8f7c9b6-aaaaa: with internalTrafficPolicy: Local their calls to products are dropped"
        );
        assert!(
            lines[3].starts_with("    graphql-5d8f7c9b6-aaaaa "),
            "{text}"
        );
        let order: Vec<usize> = ["af-south-1b:", "af-south-1c:", "unscheduled: 1 pod"]
            .iter()
            .map(|h| lines.iter().position(|l| l.starts_with(h)).expect(h))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        // Columns line up: every node's instance type starts at the same column, and so does
        // every pod's deployment.
        let col = |prefix: &str, needle: &str| -> Vec<usize> {
            lines
                .iter()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.find(needle))
                .collect()
        };
        let nodes_col = col("", "m5.large");
        assert_eq!(nodes_col.len(), 3);
        assert!(nodes_col.iter().all(|c| *c == nodes_col[0]), "{text}");
        let ready_col: Vec<usize> = lines
            .iter()
            .filter(|l| l.starts_with("    ") && !l.starts_with("    !"))
            .map(|l| l.find("  0.1.0").unwrap())
            .collect();
        assert_eq!(ready_col.len(), 5);
        assert!(ready_col.iter().all(|c| *c == ready_col[0]), "{text}");
        assert!(
            lines.contains(&"    orders-2-5d8f7c9b6-ppppp    orders-2    0.1.0  pending"),
            "{text}"
        );
        assert_eq!(
            *lines.last().unwrap(),
            "5 pods on 3 nodes in 3 zones (af-south-1a 1, af-south-1b 1, af-south-1c 2), 1 unscheduled; 1 node where a products client has no Ready local products pod (marked !)"
        );
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn text_of_a_healthy_placement_says_so() {
        let (nodes, pods) = healthy();
        let text = render_text(&placement(&nodes, &pods).report());
        assert!(!text.contains('!'), "{text}");
        assert!(
            text.trim_end()
                .ends_with("every products client has a Ready products pod on its node"),
            "{text}"
        );
        assert!(
            text.contains("  node-a  m5.large  spot  karpenter:ecommerce  ready\n"),
            "{text}"
        );
    }

    #[test]
    fn empty_namespace_is_one_line() {
        let (nodes, _) = healthy();
        assert_eq!(
            render_text(&placement(&nodes, &[]).report()),
            "No pods in the ecommerce namespace.\n"
        );
    }
}
