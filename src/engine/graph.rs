//! The stage graph: which stages exist and what each one needs first.
//!
//! A [`Graph`] is validated once, at construction (no duplicates, no unknown
//! dependencies, no cycles), so every later question — topological order,
//! `--only`/`--skip` selection, ancestors — is infallible and deterministic.
//! Determinism matters: `meshstack plan` output and the order stages start in
//! must not change between two runs of the same binary. Ties are always broken
//! by declaration order.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// A stage's name: kebab-case, the same in the CLI, the journal and the logs.
pub type StageId = &'static str;

/// A stage as the engine sees it: a name and the stages it needs first.
#[derive(Debug, Clone)]
pub struct StageSpec {
    /// The stage's name.
    pub id: StageId,
    /// Stages that must have succeeded before this one starts (on teardown:
    /// stages that are torn down only after this one is).
    pub depends_on: Vec<StageId>,
}

/// Why a set of stages does not form a valid graph, or why a user's stage
/// list does not name stages of it.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Two stages were declared with the same id.
    #[error("stage `{0}` is declared twice")]
    DuplicateStage(StageId),
    /// A stage depends on an id that no stage has.
    #[error("stage `{stage}` depends on unknown stage `{dependency}`")]
    UnknownDependency {
        /// The stage declaring the dependency.
        stage: StageId,
        /// The id that names no stage.
        dependency: StageId,
    },
    /// The dependencies loop; the path starts and ends at the same stage,
    /// each stage followed by one it depends on.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<StageId>),
    /// A user-given stage name (from `--only`/`--skip`) names no stage.
    #[error("unknown stage `{given}`; valid stages: {}", .valid.join(", "))]
    UnknownStage {
        /// What the user typed, trimmed.
        given: String,
        /// Every stage id, in declaration order.
        valid: Vec<StageId>,
    },
    /// A user-given stage list has an empty item (`network,,iam`, a trailing
    /// comma, or nothing at all).
    #[error("empty stage name in `{given}`; give a comma-separated list of: {}", .valid.join(", "))]
    EmptyStage {
        /// The whole list as the user gave it.
        given: String,
        /// Every stage id, in declaration order.
        valid: Vec<StageId>,
    },
}

/// A validated, acyclic set of stages in declaration order.
#[derive(Clone)]
pub struct Graph {
    specs: Vec<StageSpec>,
    index: HashMap<StageId, usize>,
    /// `dependents[i]`: indices of stages that depend directly on stage `i`,
    /// ascending.
    dependents: Vec<Vec<usize>>,
    /// Kahn's order, computed once.
    topo: Vec<StageId>,
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.specs).finish()
    }
}

impl Graph {
    /// Validates `specs` and builds the graph; declaration order is kept and
    /// used as the tie-break everywhere.
    ///
    /// # Errors
    /// [`GraphError::DuplicateStage`], [`GraphError::UnknownDependency`] or
    /// [`GraphError::Cycle`] (naming the loop, e.g. `a -> b -> a`).
    pub fn new(specs: Vec<StageSpec>) -> Result<Graph, GraphError> {
        let mut index = HashMap::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            if index.insert(spec.id, i).is_some() {
                return Err(GraphError::DuplicateStage(spec.id));
            }
        }
        let mut dependents = vec![Vec::new(); specs.len()];
        for (i, spec) in specs.iter().enumerate() {
            for dep in &spec.depends_on {
                let Some(&d) = index.get(dep) else {
                    return Err(GraphError::UnknownDependency {
                        stage: spec.id,
                        dependency: dep,
                    });
                };
                if !dependents[d].contains(&i) {
                    dependents[d].push(i);
                }
            }
        }
        let mut graph = Graph {
            specs,
            index,
            dependents,
            topo: Vec::new(),
        };
        if let Some(cycle) = graph.find_cycle() {
            return Err(GraphError::Cycle(cycle));
        }
        graph.topo = graph.kahn();
        Ok(graph)
    }

    /// All stage ids in declaration order.
    pub fn ids(&self) -> Vec<StageId> {
        self.specs.iter().map(|s| s.id).collect()
    }

    /// Whether `id` names a stage of this graph.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Declaration index of `id`, if it is a stage of this graph.
    pub(crate) fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Direct dependencies of `id` as declared; empty for an unknown id.
    pub fn depends_on(&self, id: StageId) -> &[StageId] {
        self.index
            .get(id)
            .map(|&i| self.specs[i].depends_on.as_slice())
            .unwrap_or(&[])
    }

    /// Stages that depend directly on `id`, in declaration order; empty for
    /// an unknown id.
    pub fn dependents(&self, id: StageId) -> Vec<StageId> {
        self.index
            .get(id)
            .map(|&i| {
                self.dependents[i]
                    .iter()
                    .map(|&d| self.specs[d].id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every stage, dependencies before dependents. Among stages that are
    /// ready at the same time the one declared first comes first, so the
    /// order is a pure function of the declarations.
    pub fn topo_order(&self) -> Vec<StageId> {
        self.topo.clone()
    }

    /// Parses a user's comma-separated stage list (`"network, iam"`), as given
    /// to `--only`/`--skip`. Items are trimmed; repeats are dropped; the
    /// result is in the order given.
    ///
    /// # Errors
    /// [`GraphError::UnknownStage`] listing the valid ids, or
    /// [`GraphError::EmptyStage`] for an empty item or list.
    pub fn parse_ids(&self, csv: &str) -> Result<Vec<StageId>, GraphError> {
        let mut out = Vec::new();
        for item in csv.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(GraphError::EmptyStage {
                    given: csv.to_string(),
                    valid: self.ids(),
                });
            }
            let Some(&i) = self.index.get(item) else {
                return Err(GraphError::UnknownStage {
                    given: item.to_string(),
                    valid: self.ids(),
                });
            };
            let id = self.specs[i].id;
            if !out.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The stages a command acts on: those in `only` (every stage when
    /// `None`) minus those in `skip`, in topological order. Dependencies are
    /// not added: whether an unselected dependency is already in place is the
    /// caller's question (see [`Graph::ancestors`]).
    pub fn select(&self, only: Option<&[StageId]>, skip: &[StageId]) -> Vec<StageId> {
        self.topo
            .iter()
            .copied()
            .filter(|id| only.is_none_or(|only| only.contains(id)))
            .filter(|id| !skip.contains(id))
            .collect()
    }

    /// Every stage `id` depends on, directly or not (not `id` itself), in
    /// topological order; empty for an unknown id.
    pub fn ancestors(&self, id: StageId) -> Vec<StageId> {
        let Some(&start) = self.index.get(id) else {
            return Vec::new();
        };
        let mut seen = vec![false; self.specs.len()];
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for dep in &self.specs[i].depends_on {
                let d = self.index[dep];
                if !seen[d] {
                    seen[d] = true;
                    stack.push(d);
                }
            }
        }
        self.topo
            .iter()
            .copied()
            .filter(|s| seen[self.index[s]])
            .collect()
    }

    /// Depth-first search in declaration order; on a back edge, returns the
    /// loop as `a -> b -> ... -> a`.
    fn find_cycle(&self) -> Option<Vec<StageId>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let n = self.specs.len();
        let mut mark = vec![Mark::New; n];
        for root in 0..n {
            if mark[root] != Mark::New {
                continue;
            }
            // Explicit stack of (node, next dependency to visit) so a deep
            // graph cannot overflow the call stack.
            let mut path: Vec<(usize, usize)> = vec![(root, 0)];
            mark[root] = Mark::OnPath;
            while let Some(&mut (node, ref mut next)) = path.last_mut() {
                let deps = &self.specs[node].depends_on;
                if *next == deps.len() {
                    mark[node] = Mark::Done;
                    path.pop();
                    continue;
                }
                let d = self.index[deps[*next]];
                *next += 1;
                match mark[d] {
                    Mark::New => {
                        mark[d] = Mark::OnPath;
                        path.push((d, 0));
                    }
                    Mark::OnPath => {
                        let from = path.iter().position(|&(p, _)| p == d).unwrap_or(0);
                        let mut cycle: Vec<StageId> = path[from..]
                            .iter()
                            .map(|&(p, _)| self.specs[p].id)
                            .collect();
                        cycle.push(self.specs[d].id);
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            }
        }
        None
    }

    /// Kahn's algorithm, always taking the ready stage declared first.
    /// Only called on an acyclic graph.
    fn kahn(&self) -> Vec<StageId> {
        let mut waiting: Vec<usize> = self
            .specs
            .iter()
            .map(|s| s.depends_on.iter().collect::<BTreeSet<_>>().len())
            .collect();
        let mut ready: BTreeSet<usize> =
            (0..self.specs.len()).filter(|&i| waiting[i] == 0).collect();
        let mut order = Vec::with_capacity(self.specs.len());
        while let Some(i) = ready.pop_first() {
            order.push(self.specs[i].id);
            for &d in &self.dependents[i] {
                waiting[d] -= 1;
                if waiting[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--only`, `--skip`, and the stages expected to run.
    type SelectCase = (
        Option<&'static [StageId]>,
        &'static [StageId],
        &'static [StageId],
    );

    fn spec(id: StageId, deps: &[StageId]) -> StageSpec {
        StageSpec {
            id,
            depends_on: deps.to_vec(),
        }
    }

    /// The real stage set's shape: a chain with one side branch.
    fn demo() -> Graph {
        Graph::new(vec![
            spec("network", &[]),
            spec("iam", &[]),
            spec("cluster", &["network", "iam"]),
            spec("nodegroup", &["cluster"]),
            spec("karpenter-infra", &["cluster", "iam"]),
        ])
        .unwrap()
    }

    #[test]
    fn topo_order_puts_dependencies_first() {
        let g = demo();
        let order = g.topo_order();
        assert_eq!(
            order,
            ["network", "iam", "cluster", "nodegroup", "karpenter-infra"]
        );
        for id in g.ids() {
            let pos = |s: StageId| order.iter().position(|o| *o == s).unwrap();
            for &dep in g.depends_on(id) {
                assert!(pos(dep) < pos(id), "{dep} must come before {id}");
            }
        }
    }

    #[test]
    fn topo_order_breaks_ties_by_declaration_order() {
        let cases: &[(&[StageSpec], &[StageId])] = &[
            (
                &[spec("b", &[]), spec("a", &[]), spec("c", &[])],
                &["b", "a", "c"],
            ),
            // `z` is declared before `y` but only becomes ready after `x`.
            (
                &[spec("z", &["x"]), spec("y", &[]), spec("x", &[])],
                &["y", "x", "z"],
            ),
            (
                &[
                    spec("d", &["a"]),
                    spec("c", &["a"]),
                    spec("b", &[]),
                    spec("a", &[]),
                ],
                &["b", "a", "d", "c"],
            ),
        ];
        for (specs, want) in cases {
            let g = Graph::new(specs.to_vec()).unwrap();
            assert_eq!(g.topo_order(), *want);
            // Same input, same answer.
            assert_eq!(Graph::new(specs.to_vec()).unwrap().topo_order(), *want);
        }
    }

    #[test]
    fn invalid_graphs_are_rejected_with_a_useful_message() {
        let cases: Vec<(Vec<StageSpec>, &str)> = vec![
            (
                vec![spec("a", &["b"]), spec("b", &["a"])],
                "dependency cycle: a -> b -> a",
            ),
            (vec![spec("a", &["a"])], "dependency cycle: a -> a"),
            (
                vec![
                    spec("root", &[]),
                    spec("a", &["root", "c"]),
                    spec("b", &["a"]),
                    spec("c", &["b"]),
                ],
                "dependency cycle: a -> c -> b -> a",
            ),
            (
                vec![spec("a", &[]), spec("b", &["nope"])],
                "stage `b` depends on unknown stage `nope`",
            ),
            (
                vec![spec("a", &[]), spec("a", &[])],
                "stage `a` is declared twice",
            ),
        ];
        for (specs, want) in cases {
            let err = Graph::new(specs).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn cycle_error_carries_the_path() {
        let err = Graph::new(vec![spec("x", &["y"]), spec("y", &["x"])]).unwrap_err();
        assert!(matches!(err, GraphError::Cycle(ref c) if c == &["x", "y", "x"]));
    }

    #[test]
    fn parse_ids_accepts_trimmed_lists() {
        let g = demo();
        let cases: &[(&str, &[StageId])] = &[
            ("network", &["network"]),
            ("network, iam", &["network", "iam"]),
            (" cluster ,network", &["cluster", "network"]),
            ("iam,iam", &["iam"]),
        ];
        for (csv, want) in cases {
            assert_eq!(g.parse_ids(csv).unwrap(), *want, "input {csv:?}");
        }
    }

    #[test]
    fn parse_ids_rejects_unknown_and_empty_items() {
        let g = demo();
        let valid = "network, iam, cluster, nodegroup, karpenter-infra";
        let cases = [
            (
                "network,nope",
                format!("unknown stage `nope`; valid stages: {valid}"),
            ),
            (
                "Network",
                format!("unknown stage `Network`; valid stages: {valid}"),
            ),
            (
                "network,,iam",
                format!(
                    "empty stage name in `network,,iam`; give a comma-separated list of: {valid}"
                ),
            ),
            (
                "network,",
                format!("empty stage name in `network,`; give a comma-separated list of: {valid}"),
            ),
            (
                "",
                format!("empty stage name in ``; give a comma-separated list of: {valid}"),
            ),
        ];
        for (csv, want) in cases {
            assert_eq!(g.parse_ids(csv).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn select_applies_only_then_skip_in_topo_order() {
        let g = demo();
        let cases: &[SelectCase] = &[
            (
                None,
                &[],
                &["network", "iam", "cluster", "nodegroup", "karpenter-infra"],
            ),
            (
                None,
                &["iam", "nodegroup"],
                &["network", "cluster", "karpenter-infra"],
            ),
            // Given out of order, returned in topological order.
            (
                Some(&["karpenter-infra", "network"]),
                &[],
                &["network", "karpenter-infra"],
            ),
            (Some(&["cluster", "iam"]), &["cluster"], &["iam"]),
            (Some(&[]), &[], &[]),
        ];
        for (only, skip, want) in cases {
            assert_eq!(g.select(*only, skip), *want, "only {only:?} skip {skip:?}");
        }
    }

    #[test]
    fn ancestors_are_transitive_and_exclude_the_stage() {
        let g = demo();
        let cases: &[(StageId, &[StageId])] = &[
            ("network", &[]),
            ("cluster", &["network", "iam"]),
            ("nodegroup", &["network", "iam", "cluster"]),
            ("karpenter-infra", &["network", "iam", "cluster"]),
            ("unknown", &[]),
        ];
        for (id, want) in cases {
            assert_eq!(g.ancestors(id), *want, "ancestors of {id}");
        }
    }

    #[test]
    fn dependents_are_direct_only() {
        let g = demo();
        assert_eq!(g.dependents("iam"), ["cluster", "karpenter-infra"]);
        assert_eq!(g.dependents("cluster"), ["nodegroup", "karpenter-infra"]);
        assert!(g.dependents("nodegroup").is_empty());
    }
}
