//! List scheduling with critical-path priority (pool-aware, see [`Plan::priority`]): the ready
//! queue the executor uses, and a simulation of it over estimated durations (plan's prediction,
//! dry-run's virtual time).
//!
//! Each step waits on an in-degree counter (Kahn); when it reaches zero the step joins the ready
//! heap of its pool. A step starts when a global slot and a slot of its pool are free, highest
//! priority first (the remaining critical path, pooled steps weighted), file order breaking ties. The whole run costs
//! O((steps + edges) · log steps), never a rescan of all steps.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use super::Plan;

/// Ready steps, one heap per pool (index 0: steps in no pool), and free slots.
#[derive(Debug)]
pub struct ReadyQueue {
    heaps: Vec<BinaryHeap<(Duration, Reverse<usize>)>>,
    pool_free: Vec<usize>,
    global_free: usize,
}

impl ReadyQueue {
    pub fn new(plan: &Plan, concurrency: usize) -> Self {
        let mut pool_free = vec![usize::MAX];
        pool_free.extend(plan.pools.iter().map(|p| p.size));
        ReadyQueue {
            heaps: vec![BinaryHeap::new(); plan.pools.len() + 1],
            pool_free,
            global_free: concurrency.max(1),
        }
    }

    fn lane(plan: &Plan, step: usize) -> usize {
        plan.steps[step].pool.map_or(0, |p| p + 1)
    }

    pub fn push(&mut self, plan: &Plan, step: usize) {
        self.push_by(plan, step, plan.priority[step]);
    }

    fn push_by(&mut self, plan: &Plan, step: usize, priority: Duration) {
        self.heaps[Self::lane(plan, step)].push((priority, Reverse(step)));
    }

    /// The best ready step that can start now, taking its slots.
    pub fn pop(&mut self) -> Option<usize> {
        if self.global_free == 0 {
            return None;
        }
        let lane = (0..self.heaps.len())
            .filter(|&l| self.pool_free[l] > 0)
            .filter_map(|l| self.heaps[l].peek().map(|top| (*top, l)))
            .max()?
            .1;
        let (_, Reverse(step)) = self.heaps[lane].pop()?;
        self.global_free -= 1;
        if lane > 0 {
            self.pool_free[lane] -= 1;
        }
        Some(step)
    }

    /// The ready steps that would start next as slots free, best first, up to `k` (pool limits
    /// aside): what the executor promises ahead (see [`crate::journal::intent`]).
    pub fn next(&mut self, k: usize) -> Vec<usize> {
        let mut taken = Vec::new();
        for (lane, heap) in self.heaps.iter_mut().enumerate() {
            for _ in 0..k {
                match heap.pop() {
                    Some(top) => taken.push((top, lane)),
                    None => break,
                }
            }
        }
        taken.sort_unstable_by_key(|&(top, _)| Reverse(top));
        let best = taken
            .iter()
            .take(k)
            .map(|&((_, Reverse(s)), _)| s)
            .collect();
        for (top, lane) in taken {
            self.heaps[lane].push(top);
        }
        best
    }

    /// Gives back the slots of a finished step.
    pub fn release(&mut self, plan: &Plan, step: usize) {
        self.global_free += 1;
        let lane = Self::lane(plan, step);
        if lane > 0 {
            self.pool_free[lane] += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.heaps.iter().all(BinaryHeap::is_empty)
    }
}

/// Start and finish of every step in a simulated run.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub start: Vec<Duration>,
    pub finish: Vec<Duration>,
    pub makespan: Duration,
}

/// Simulates the list schedule of `durations` with `concurrency` global slots and the plan's
/// pools. Steps finishing at the same instant all release their slots before anything starts.
pub fn simulate(plan: &Plan, durations: &[Duration], concurrency: usize) -> Schedule {
    simulate_by(plan, durations, concurrency, &plan.priority)
}

/// [`simulate`] with another ready-queue order (the plan trying candidates).
pub fn simulate_by(
    plan: &Plan,
    durations: &[Duration],
    concurrency: usize,
    priority: &[Duration],
) -> Schedule {
    let n = plan.steps.len();
    let mut indegree: Vec<usize> = (0..n).map(|i| plan.needs(i).count()).collect();
    let mut ready = ReadyQueue::new(plan, concurrency);
    for (i, _) in indegree.iter().enumerate().filter(|(_, d)| **d == 0) {
        ready.push_by(plan, i, priority[i]);
    }
    let mut running: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
    let (mut start, mut finish) = (vec![Duration::ZERO; n], vec![Duration::ZERO; n]);
    let mut now = Duration::ZERO;
    loop {
        while let Some(step) = ready.pop() {
            start[step] = now;
            finish[step] = now + durations[step];
            running.push(Reverse((finish[step], step)));
        }
        let Some(Reverse((t, _))) = running.peek().copied() else {
            break;
        };
        now = t;
        while let Some(Reverse((t, step))) = running.peek().copied() {
            if t != now {
                break;
            }
            running.pop();
            ready.release(plan, step);
            for d in plan.dependents(step) {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.push_by(plan, d, priority[d]);
                }
            }
        }
    }
    let makespan = finish.iter().copied().max().unwrap_or_default();
    Schedule {
        start,
        finish,
        makespan,
    }
}

/// Kahn's algorithm, smallest index first among ready nodes, so the order is stable.
pub fn topological_order(graph: &DiGraph<(), ()>) -> Vec<usize> {
    let n = graph.node_count();
    let mut indegree: Vec<usize> = (0..n)
        .map(|i| {
            graph
                .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for d in graph.neighbors_directed(NodeIndex::new(i), Direction::Outgoing) {
            indegree[d.index()] -= 1;
            if indegree[d.index()] == 0 {
                ready.push(Reverse(d.index()));
            }
        }
    }
    order
}
