//! `ripcord rollback RUN_ID`: the undos of a run's completed steps, in reverse dependency order.

use crate::cli::{ApprovalArgs, RollbackArgs};
use crate::exec::Clock;
use crate::exec::now_rfc3339;
use crate::exec::rollback::rollback;
use crate::exit;
use crate::journal::record::{Mode, RunStatus};
use crate::journal::{Journal, StateDir};

use super::recorded::{read_run, recompile, replay};
use super::run::{context, lock, runtime, sink};

pub fn run(args: &RollbackArgs) -> u8 {
    let state = StateDir::resolve(args.state.state_dir.as_deref());
    let (read, header) = match read_run(&state, &args.run_id) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if header.mode == Mode::Check {
        crate::println_quiet!(
            "run {} was a check: it changed nothing, so there is nothing to roll back",
            header.run_id
        );
        return exit::OK;
    }
    let providers = std::sync::Arc::new(crate::provider::Providers::new(&args.plugins.plugin_dirs));
    let plan = match recompile(&header, &args.inputs.inputs, args.force, &providers) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let replayed = replay(&plan, &read.records);
    let _lock = match lock(&state, &plan.name, &header.run_id, &now_rfc3339()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut journal = match Journal::reopen(
        &state.journal_path(&header.run_id),
        header.mode == Mode::Real,
    ) {
        Ok(j) => j,
        Err(e) => {
            crate::eprintln_quiet!("error: cannot open the journal: {e}");
            return exit::INVALID;
        }
    };
    let approvals = ApprovalArgs {
        yes: false,
        approve: Vec::new(),
    };
    let cx = context(
        plan.clone(),
        header.run_id.clone(),
        header.mode,
        &approvals,
        &[],
        None,
        providers,
    );
    let mut sink = sink(args.json, plan.steps.len());
    let runtime = match runtime(header.mode) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let clock = Clock::new(replayed.last_ms);
    let result = runtime.block_on(rollback(
        &cx,
        &mut journal,
        sink.as_mut(),
        &replayed.states,
        &replayed.undone,
        clock,
    ));
    sink.finish();
    crate::provider::shell::remove_output_dir();
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            crate::eprintln_quiet!("error: the journal could not be written: {e}");
            return exit::FAILED;
        }
    };
    let names = |list: &[usize]| {
        list.iter()
            .map(|&i| plan.steps[i].id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !args.json {
        crate::println_quiet!(
            "\nrollback of {}: {} undone{}{}",
            header.run_id,
            outcome.undone.len(),
            if outcome.failed.is_empty() {
                String::new()
            } else {
                format!(", failed: {}", names(&outcome.failed))
            },
            if outcome.blocked.is_empty() {
                String::new()
            } else {
                format!(
                    ", not attempted (an undo they wait for failed): {}",
                    names(&outcome.blocked)
                )
            },
        );
    }
    if outcome.status == RunStatus::Succeeded {
        exit::OK
    } else {
        exit::FAILED
    }
}
