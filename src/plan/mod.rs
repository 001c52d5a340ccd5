//! The compiled, immutable plan: every step (after `for_each` expansion) with its resolved
//! settings, the dependency DAG, and what follows from it: a topological order, stages, the
//! critical path over estimated durations, and predicted durations with and without limits.

pub mod schedule;

use std::time::Duration;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;

use crate::diag::SourceFile;
use crate::expr::param::{Condition, Param};
use crate::runbook::{InputType, OnFailure, RollbackPolicy, Span};

pub use schedule::{Schedule, simulate};

#[derive(Debug)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    pub file: SourceFile,
    /// Every file the plan was compiled from: the runbook, then each module it includes.
    pub sources: Vec<SourceFile>,
    /// Included modules, shown as groups by plan and graph; a group's steps are those whose
    /// `group` is it or one of its descendants.
    pub groups: Vec<Group>,
    pub rto: Option<Duration>,
    pub concurrency: usize,
    pub pools: Vec<Pool>,
    pub rollback: RollbackPolicy,
    /// The runbook's `modes:`, and the one this plan is for (`--mode`, else the first).
    pub modes: Vec<String>,
    pub mode: Option<String>,
    /// `cleanup_modes:`: modes whose succeeded runs `ripcord rollback` undoes without `--force`.
    pub cleanup_modes: Vec<String>,
    /// `locks:`: scopes a run holds besides the runbook's name.
    pub locks: Vec<String>,
    pub inputs: Vec<ResolvedInput>,
    /// Indexed like the graph's first nodes.
    pub steps: Vec<PlannedStep>,
    /// Node `i < steps.len()` is `steps[i]`; node `steps.len() + k` is barrier `k`: "every
    /// instance of the for_each step `barriers[k]` is done". An edge `a -> b` means b waits for
    /// a. A for_each step that needs another waits through its barrier, so N and M instances
    /// make N + M edges instead of N × M. Built once, never mutated; [`Plan::needs`] and
    /// [`Plan::dependents`] see through barriers.
    pub graph: DiGraph<(), ()>,
    /// The base id of each barrier node's for_each step. The barrier of a for_each step with
    /// no items waits for what that step needs, so what needs it still comes after those.
    pub barriers: Vec<String>,
    /// A topological order (ties broken by file order).
    pub order: Vec<usize>,
    /// Longest estimated path from each step to the end, the step included: the scheduling
    /// priority, as ninja orders its ready queue.
    pub remaining: Vec<Duration>,
    /// The ready queue's order: the longest remaining path, pooled steps weighted by how scarce
    /// their pool is, as chosen by [`Plan::finish`]. Without pools, `remaining`.
    pub priority: Vec<Duration>,
}

/// One inclusion of a module: `include:` step `id` inlined its steps as `id.STEP`.
#[derive(Debug, Clone)]
pub struct Group {
    /// The include step's id, with its enclosing modules' prefixes (`site.drain-web`).
    pub id: String,
    pub name: Option<String>,
    /// The module file, as shown in diagnostics.
    pub file: String,
    /// The group this one is nested in.
    pub parent: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub size: usize,
}

/// `provider.action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRef {
    pub provider: String,
    pub action: String,
    pub builtin: bool,
}

impl std::fmt::Display for ActionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.provider, self.action)
    }
}

#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// Unique id; `base[item]` for a for_each expansion.
    pub id: String,
    /// The id as declared.
    pub base: String,
    pub name: Option<String>,
    pub action: ActionRef,
    pub with: Option<Param>,
    pub when: Option<Condition>,
    /// The for_each item, when expanded.
    pub item: Option<Json>,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub sim: SimHints,
    pub idempotent: bool,
    pub pool: Option<usize>,
    pub on_failure: OnFailure,
    pub undo: Option<UndoSpec>,
    /// Rollback stops at this step once it has succeeded or is in doubt.
    pub irreversible: bool,
    /// Where the step's id is declared (in the module's file for a module's step).
    pub span: Span,
    /// The innermost module inclusion the step came from.
    pub group: Option<usize>,
    /// `check:` as written (see [`crate::runbook::Step::check`]).
    pub check: Option<bool>,
    /// Not in the plan's mode: skipped (its `when` is `false`).
    pub out_of_mode: bool,
}

impl PlannedStep {
    /// Whether it is an approval (`approval.ask`): never in doubt, asked again instead.
    pub fn is_approval(&self) -> bool {
        self.action.builtin && self.action.provider == "approval" && self.action.action == "ask"
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub delay: Duration,
    pub backoff: f64,
    pub max_delay: Option<Duration>,
}

/// The longest wait between attempts when a policy sets no `max_delay`.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(3600);

impl RetryPolicy {
    /// The wait after `delay`: multiplied by the backoff, saturating at `max_delay` (one hour
    /// by default) instead of overflowing.
    pub fn next_delay(&self, delay: Duration) -> Duration {
        let cap = self.max_delay.unwrap_or(DEFAULT_MAX_DELAY);
        Duration::try_from_secs_f64(delay.as_secs_f64() * self.backoff)
            .unwrap_or(cap)
            .min(cap)
    }
}

#[derive(Debug, Clone)]
pub struct SimHints {
    /// The estimate plan and dry-run use: `sim.duration`, else the action's default.
    pub duration: Duration,
    /// Whether `duration` came from the runbook rather than a default.
    pub explicit: bool,
    pub outputs: Option<Json>,
    pub fail: bool,
    /// `sim.jitter` as a fraction (0.2 for `20%`): a dry-run attempt's duration is drawn within
    /// that much of `duration`, from the run's seed.
    pub jitter: f64,
}

#[derive(Debug, Clone)]
pub struct UndoSpec {
    pub action: ActionRef,
    pub with: Option<Param>,
    /// Evaluated when the undo is about to run.
    pub when: Option<Condition>,
    /// The undo's own, else its step's.
    pub retry: RetryPolicy,
    pub timeout: Duration,
    /// `if_started: true`: undone whenever an attempt started, not only after a success.
    pub if_started: bool,
}

impl Plan {
    /// Whether the plan's mode is one of `cleanup_modes:` (a DR test's: its rollback is its
    /// cleanup).
    pub fn is_cleanup_mode(&self) -> bool {
        self.mode
            .as_ref()
            .is_some_and(|m| self.cleanup_modes.contains(m))
    }

    /// The file `step` is declared in: its module's, or the runbook's.
    pub fn file_of(&self, step: &PlannedStep) -> &SourceFile {
        step.group
            .and_then(|g| self.groups.get(g))
            .and_then(|g| self.sources.iter().find(|f| f.name() == g.file))
            .unwrap_or(&self.file)
    }

    pub fn estimate(&self, step: usize) -> Duration {
        self.steps[step].sim.duration
    }

    /// The steps `step` waits for (through barriers).
    pub fn needs(&self, step: usize) -> impl Iterator<Item = usize> + '_ {
        self.through_barriers(step, Direction::Incoming)
    }

    /// The steps that wait for `step` (through barriers).
    pub fn dependents(&self, step: usize) -> impl Iterator<Item = usize> + '_ {
        self.through_barriers(step, Direction::Outgoing)
    }

    /// The steps next to `step` in direction `way`, going through barrier nodes (a barrier of
    /// an empty for_each leads on to what that step waits for, another barrier perhaps). Each
    /// step once, each barrier visited once, so chains of barriers cost their size, not their
    /// number of paths; seen from either end the relation is the same, so a count of needs and
    /// a count of dependents agree.
    fn through_barriers(&self, step: usize, way: Direction) -> impl Iterator<Item = usize> + '_ {
        let n = self.steps.len();
        // Depth first, in petgraph's neighbour order (the stack holds them reversed).
        let next = move |x: usize| {
            let mut v: Vec<usize> = self
                .graph
                .neighbors_directed(NodeIndex::new(x), way)
                .map(NodeIndex::index)
                .collect();
            v.reverse();
            v
        };
        let mut stack = next(step);
        let mut seen = std::collections::HashSet::new();
        std::iter::from_fn(move || {
            while let Some(x) = stack.pop() {
                if !seen.insert(x) {
                    continue;
                }
                if x < n {
                    return Some(x);
                }
                stack.extend(next(x));
            }
            None
        })
    }

    /// What `step` waits for as ids: a step's id, or `base[*]` for every instance of a
    /// for_each step it waits for through a barrier (a journal of 5,000 × 5,000 instances
    /// stays small).
    pub fn needs_ids(&self, step: usize) -> Vec<String> {
        let n = self.steps.len();
        self.graph
            .neighbors_directed(NodeIndex::new(step), Direction::Incoming)
            .map(|x| match x.index() {
                x if x < n => self.steps[x].id.clone(),
                x => format!("{}[*]", self.barriers[x - n]),
            })
            .collect()
    }

    /// Whether step `step` came from group `g` (directly or through a nested module).
    pub fn in_group(&self, step: usize, g: usize) -> bool {
        let mut at = self.steps[step].group;
        while let Some(x) = at {
            if x == g {
                return true;
            }
            at = self.groups[x].parent;
        }
        false
    }

    /// The steps of group `g` and of the groups nested in it, in plan order.
    pub fn group_members(&self, g: usize) -> Vec<usize> {
        (0..self.steps.len())
            .filter(|&i| self.in_group(i, g))
            .collect()
    }

    /// How deep group `g` is nested (0: included by the runbook itself).
    pub fn group_depth(&self, g: usize) -> usize {
        std::iter::successors(self.groups[g].parent, |&p| self.groups[p].parent).count()
    }

    /// Predicted duration with unlimited concurrency: the critical path's length.
    pub fn critical_length(&self) -> Duration {
        self.remaining.iter().copied().max().unwrap_or_default()
    }

    /// The critical path, first step first: from the step with the longest remaining path,
    /// follow the dependent with the longest remaining path (ties: file order).
    pub fn critical_path(&self) -> Vec<usize> {
        let mut path = Vec::new();
        // Ties go to a step of the run's mode; steps outside it (no time) are not shown.
        let start = (0..self.steps.len())
            .filter(|&i| self.needs(i).next().is_none())
            .max_by_key(|&i| {
                (
                    self.remaining[i],
                    !self.steps[i].out_of_mode,
                    std::cmp::Reverse(i),
                )
            });
        let mut at = start;
        while let Some(i) = at {
            path.push(i);
            let want = self.remaining[i] - self.estimate(i);
            at = self
                .dependents(i)
                .filter(|&d| self.remaining[d] == want)
                .min_by_key(|&d| (self.steps[d].out_of_mode, d));
        }
        path.retain(|&i| !self.steps[i].out_of_mode);
        path
    }

    /// Stages: step `i` is in stage = 1 + the longest chain of needs before it.
    pub fn stages(&self) -> Vec<Vec<usize>> {
        let mut level = vec![0usize; self.steps.len()];
        for &i in &self.order {
            level[i] = self.needs(i).map(|n| level[n] + 1).max().unwrap_or(0);
        }
        let depth = level.iter().max().map_or(0, |m| m + 1);
        let mut stages = vec![Vec::new(); depth];
        for (i, l) in level.into_iter().enumerate() {
            stages[l].push(i);
        }
        stages
    }

    /// List schedule of the estimates under the runbook's concurrency and pools.
    pub fn predicted(&self, concurrency: Option<usize>) -> Schedule {
        let durations: Vec<Duration> = (0..self.steps.len()).map(|i| self.estimate(i)).collect();
        simulate(self, &durations, concurrency.unwrap_or(self.concurrency))
    }

    /// Computes `order`, `remaining` and `priority` for the steps and edges (again, after
    /// estimates change); the graph must be acyclic.
    pub fn finish(&mut self) {
        let n = self.steps.len();
        self.order = schedule::topological_order(&self.graph);
        self.order.retain(|&i| i < n);
        self.remaining = self.weighted_remaining(0.0);
        self.priority = self.choose_priority();
    }

    /// The longest remaining path where a step of pool `p` counts its estimate times
    /// (concurrency / size of p)^alpha: alpha 0 is the critical path (`remaining`), exactly.
    fn weighted_remaining(&self, alpha: f64) -> Vec<Duration> {
        let weight: Vec<f64> = self
            .pools
            .iter()
            .map(|p| {
                (self.concurrency as f64 / p.size as f64)
                    .max(1.0)
                    .powf(alpha)
            })
            .collect();
        let mut remaining = vec![Duration::ZERO; self.steps.len()];
        for &i in self.order.iter().rev() {
            let tail = self
                .dependents(i)
                .map(|d| remaining[d])
                .max()
                .unwrap_or_default();
            let estimate = match self.steps[i].pool.map(|p| weight[p]) {
                Some(w) if w != 1.0 => self.estimate(i).mul_f64(w),
                _ => self.estimate(i), // exact: `remaining` is the critical path itself
            };
            remaining[i] = tail + estimate;
        }
        remaining
    }

    /// The priority whose simulated schedule (under the runbook's concurrency and pools) is
    /// shortest. Critical-path order is close to the lower bound without pools; with a scarce
    /// pool it lets the pool idle while free steps run, so pooled steps are weighted by the
    /// pool's scarcity, at a few strengths, then (for runbooks of up to 2,000 steps) the best
    /// is perturbed with a seeded generator, keeping any improvement. Deterministic: the same
    /// plan always gets the same order, so a dry-run still equals the prediction.
    fn choose_priority(&self) -> Vec<Duration> {
        if self.pools.is_empty() {
            return self.remaining.clone();
        }
        let durations: Vec<Duration> = (0..self.steps.len()).map(|i| self.estimate(i)).collect();
        let makespan = |priority: &[Duration]| {
            schedule::simulate_by(self, &durations, self.concurrency, priority).makespan
        };
        let bound = self.lower_bound();
        let mut best = self.remaining.clone();
        let mut best_span = makespan(&best);
        for alpha in [0.5, 1.0, 2.0] {
            let candidate = self.weighted_remaining(alpha);
            let span = makespan(&candidate);
            if span < best_span {
                (best, best_span) = (candidate, span);
            }
        }
        if self.steps.len() <= 2_000 {
            let mut rng = 0x5eed_u64;
            let mut next = move || {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 33) as f64 / (1u64 << 31) as f64
            };
            for _ in 0..64 {
                if best_span <= bound {
                    break;
                }
                let candidate: Vec<Duration> =
                    best.iter().map(|p| p.mul_f64(0.5 + next())).collect();
                let span = makespan(&candidate);
                if span < best_span {
                    (best, best_span) = (candidate, span);
                }
            }
        }
        best
    }

    /// No schedule is shorter than the critical path, than all the work spread over the
    /// global slots, or than each pool's work spread over its slots.
    pub fn lower_bound(&self) -> Duration {
        let n = self.steps.len();
        let work: Duration = (0..n).map(|i| self.estimate(i)).sum();
        let mut bound = self
            .critical_length()
            .max(work / self.concurrency.max(1) as u32);
        for (p, pool) in self.pools.iter().enumerate() {
            let pooled: Duration = (0..n)
                .filter(|&i| self.steps[i].pool == Some(p))
                .map(|i| self.estimate(i))
                .sum();
            bound = bound.max(pooled / pool.size.max(1) as u32);
        }
        bound
    }
}

/// One input after resolution.
#[derive(Debug, Clone)]
pub struct ResolvedInput {
    pub name: String,
    pub ty: InputType,
    pub secret: bool,
    /// Declared `required: true`.
    pub required: bool,
    /// `None` when no value is known (validate without `--input`).
    pub value: Option<Json>,
    pub origin: InputOrigin,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputOrigin {
    Given,
    Env,
    /// Printed by the input's `command:` (or, where commands are not run, to be).
    Command,
    Default,
    Missing,
}
