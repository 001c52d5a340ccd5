//! Budgets of a compiled runbook, so that a small file cannot make `validate` take minutes or
//! gigabytes, and the wiring of the plan's graph that keeps dependencies within them: every
//! instance of a step waits for every instance of what it needs, and what needs a `for_each`
//! step waits through one barrier node of it ("all N are done"), shared by all that need it, so
//! N and M instances make N + M edges instead of N × M. Edges are counted before any is made.

use std::ops::Range;

use petgraph::graph::{DiGraph, NodeIndex};

/// Budgets of a compiled runbook, so that a small file cannot make `validate` take minutes or
/// gigabytes: steps after modules are inlined and `for_each` expanded, dependency edges between
/// them, and how deep includes nest.
pub const MAX_STEPS: usize = 100_000;
pub const MAX_EDGES: usize = 1_000_000;
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// How the declared dependencies become edges: which declared steps get a barrier, and whether
/// the edges stay within [`MAX_EDGES`].
pub struct Wiring {
    /// The declared step waited for through each barrier, in order.
    barriers: Vec<usize>,
    /// Declared step -> its barrier.
    barrier_of: Vec<Option<usize>>,
    /// The first declared step whose dependencies cross [`MAX_EDGES`].
    pub over: Option<usize>,
}

impl Wiring {
    /// Counts the edges: `deps[i]` are the declared steps `i` waits for, `instances[i]` the
    /// plan steps `i` became, `fans_out[j]` whether `j` is a for_each step.
    pub fn count(deps: &[Vec<usize>], instances: &[Range<usize>], fans_out: &[bool]) -> Wiring {
        let mut edges = 0usize;
        let mut wiring = Wiring {
            barriers: Vec::new(),
            barrier_of: vec![None; instances.len()],
            over: None,
        };
        for (i, waits) in deps.iter().enumerate() {
            for &j in waits {
                let added = if fans_out[j] {
                    let into = match wiring.barrier_of[j] {
                        Some(_) => 0,
                        None => {
                            wiring.barrier_of[j] = Some(wiring.barriers.len());
                            wiring.barriers.push(j);
                            instances[j].len()
                        }
                    };
                    into + instances[i].len()
                } else {
                    instances[j].len().saturating_mul(instances[i].len())
                };
                // An empty for_each's barrier stands in for it: it waits for its needs.
                let empty = if fans_out[i] && instances[i].is_empty() {
                    1
                } else {
                    0
                };
                edges = edges.saturating_add(added + empty * instances[j].len().max(1));
                if edges > MAX_EDGES && wiring.over.is_none() {
                    wiring.over = Some(i);
                }
            }
        }
        wiring
    }

    /// The graph over `n` plan steps (none when the budgets were crossed) and the declared
    /// step of each barrier node `n + k`.
    pub fn build(
        self,
        deps: &[Vec<usize>],
        instances: &[Range<usize>],
        n: usize,
    ) -> (DiGraph<(), ()>, Vec<usize>) {
        let Wiring {
            barriers,
            barrier_of,
            ..
        } = self;
        if n == 0 {
            return (DiGraph::new(), Vec::new());
        }
        let mut graph = DiGraph::with_capacity(n + barriers.len(), n.min(MAX_EDGES));
        for _ in 0..n + barriers.len() {
            graph.add_node(());
        }
        let node = NodeIndex::new;
        for (k, &j) in barriers.iter().enumerate() {
            for a in instances[j].clone() {
                graph.add_edge(node(a), node(n + k), ());
            }
        }
        for (i, waits) in deps.iter().enumerate() {
            // A for_each step with no items: its barrier, which all that need it wait on,
            // waits for what it needs, so they still come after those.
            if let Some(k) = barrier_of[i].filter(|_| instances[i].is_empty()) {
                for &j in waits {
                    match barrier_of[j] {
                        Some(kj) => {
                            graph.add_edge(node(n + kj), node(n + k), ());
                        }
                        None => {
                            for a in instances[j].clone() {
                                graph.add_edge(node(a), node(n + k), ());
                            }
                        }
                    }
                }
            }
            for &j in waits {
                match barrier_of[j] {
                    Some(k) => {
                        for b in instances[i].clone() {
                            graph.add_edge(node(n + k), node(b), ());
                        }
                    }
                    None => {
                        for a in instances[j].clone() {
                            for b in instances[i].clone() {
                                graph.add_edge(node(a), node(b), ());
                            }
                        }
                    }
                }
            }
        }
        (graph, barriers)
    }
}
