//! Estimates that learn: the median actual duration of each step over earlier real runs of the
//! same runbook (succeeded steps only), for `plan` and dry-runs with `--estimates history`. A
//! planning input only: a past run's report never shows them (it is a function of its journal
//! alone). Dry-runs and pre-flights are not samples, nor is an approval given in advance
//! (`--yes`, `--approve`), which took no one's time.

use std::collections::HashMap;

use crate::journal::Record;
use crate::journal::record::{Mode, StepStatus};
use crate::state::StateBackend;

/// Step id -> median duration in ms, over the real runs of `runbook` recorded in `state`; and
/// how many runs that is.
pub fn learn(state: &dyn StateBackend, runbook: &str) -> (HashMap<String, u64>, usize) {
    let mut runs = 0;
    let mut samples: HashMap<String, Vec<u64>> = HashMap::new();
    for id in state.run_ids().unwrap_or_default() {
        let Ok(read) = state.read_run(&id) else {
            continue;
        };
        let real = matches!(
            read.records.first(),
            Some(Record::RunStarted { runbook: name, mode: Mode::Real, .. }) if name == runbook
        );
        if !real {
            continue;
        }
        runs += 1;
        // Approvals that took no one's time: given in advance, or simulated.
        let instant: std::collections::HashSet<&str> = read
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Approval {
                    step,
                    via,
                    simulated,
                    ..
                } if *simulated || via.as_deref() == Some(crate::exec::IN_ADVANCE) => {
                    Some(step.as_str())
                }
                _ => None,
            })
            .collect();
        for r in &read.records {
            if let Record::StepFinished {
                step,
                status: StepStatus::Succeeded,
                t_ms,
                started_ms,
                ..
            } = r
                && !instant.contains(step.as_str())
            {
                samples
                    .entry(step.clone())
                    .or_default()
                    .push(t_ms.saturating_sub(*started_ms));
            }
        }
    }
    let medians = samples
        .into_iter()
        .map(|(step, mut v)| {
            v.sort_unstable();
            (step, v[v.len() / 2])
        })
        .collect();
    (medians, runs)
}

/// Replaces the estimates of `plan` by `medians` where there are any, and recomputes the
/// critical path; returns how many steps had history.
pub fn apply(plan: &mut crate::plan::Plan, medians: &HashMap<String, u64>) -> usize {
    let mut n = 0;
    for step in &mut plan.steps {
        if let Some(&ms) = medians.get(&step.id) {
            step.sim.duration = std::time::Duration::from_millis(ms);
            step.sim.explicit = true;
            n += 1;
        }
    }
    plan.finish();
    n
}
