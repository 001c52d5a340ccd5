//! Finding dependency cycles and walking each into a printable circle.
//!
//! `kosaraju_scc` is iterative (the recursive `tarjan_scc` overflows the stack on long chains);
//! `toposort` would name only one node of a cycle, so each strongly connected component is
//! walked with a BFS to the shortest circle through its first node.

use std::collections::VecDeque;

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// Every cycle as its nodes in order: `[a, b, c]` means a -> b -> c -> a. One per strongly
/// connected component, plus self-loops; sorted by first node.
pub fn find_cycles(graph: &DiGraph<(), ()>) -> Vec<Vec<usize>> {
    let mut cycles = Vec::new();
    for component in kosaraju_scc(graph) {
        if component.len() == 1 {
            let n = component[0];
            if graph.contains_edge(n, n) {
                cycles.push(vec![n.index()]);
            }
            continue;
        }
        let mut in_component = vec![false; graph.node_count()];
        for n in &component {
            in_component[n.index()] = true;
        }
        let start = *component.iter().min().expect("components are never empty");
        // A strongly connected component always has a circle through any of its nodes; should
        // that ever fail, report the component itself rather than nothing.
        let circle = circle_through(graph, start, &in_component)
            .unwrap_or_else(|| component.iter().map(|n| n.index()).collect());
        cycles.push(circle);
    }
    cycles.sort();
    cycles
}

/// The shortest path from `start` back to itself inside the component.
fn circle_through(
    graph: &DiGraph<(), ()>,
    start: NodeIndex,
    in_component: &[bool],
) -> Option<Vec<usize>> {
    let mut parent: Vec<Option<usize>> = vec![None; graph.node_count()];
    let mut seen = vec![false; graph.node_count()];
    let mut queue = VecDeque::from([start]);
    seen[start.index()] = true;
    while let Some(u) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph.neighbors(u).collect();
        next.sort();
        for v in next {
            if v == start {
                let mut path = vec![u.index()];
                while let Some(p) = parent[*path.last().expect("non-empty")] {
                    path.push(p);
                }
                path.reverse();
                return Some(path);
            }
            if in_component[v.index()] && !seen[v.index()] {
                seen[v.index()] = true;
                parent[v.index()] = Some(u.index());
                queue.push_back(v);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(n: usize, edges: &[(u32, u32)]) -> DiGraph<(), ()> {
        let mut g = DiGraph::new();
        for _ in 0..n {
            g.add_node(());
        }
        g.extend_with_edges(edges);
        g
    }

    #[test]
    fn walks_the_whole_circle() {
        let g = graph(5, &[(0, 1), (1, 2), (2, 0), (3, 4)]);
        assert_eq!(find_cycles(&g), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn self_loops_and_several_cycles() {
        let g = graph(5, &[(0, 0), (1, 2), (2, 1), (3, 4)]);
        assert_eq!(find_cycles(&g), vec![vec![0], vec![1, 2]]);
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let n = 200_000u32;
        let edges: Vec<(u32, u32)> = (0..n - 1).map(|i| (i, i + 1)).chain([(n - 1, 0)]).collect();
        let g = graph(n as usize, &edges);
        assert_eq!(find_cycles(&g)[0].len(), n as usize);
    }
}
