//! `ripcord resume RUN_ID`: continue a run that was interrupted or crashed. Completed steps are
//! not run again (their outputs are restored from the journal); failed ones are retried; a step
//! that started with no recorded end is "in doubt": re-run when it is `idempotent: true` or with
//! `--retry-in-doubt`, taken as done with `--skip-in-doubt`, otherwise the operator is asked.

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::ResumeArgs;
use crate::exec::now_rfc3339;
use crate::exec::state::{Status, StepState};
use crate::exit;
use crate::journal::record::{RunStatus, StepStatus};
use crate::journal::{Journal, Record, StateDir};

use super::recorded::{final_status, read_run, recompile, replay};
use super::run::{context, drive, lock, sink};

pub fn run(args: &ResumeArgs) -> u8 {
    let state = StateDir::resolve(args.state.state_dir.as_deref());
    let (read, header) = match read_run(&state, &args.run_id) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if final_status(&read) == Some(RunStatus::Succeeded) {
        crate::println_quiet!("run {} already succeeded: nothing to resume", header.run_id);
        return exit::OK;
    }
    let providers = std::sync::Arc::new(crate::provider::Providers::new(&args.plugins.plugin_dirs));
    let plan = match recompile(&header, &args.inputs.inputs, args.force, &providers) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut replayed = replay(&plan, &read.records);
    let mut notes = Vec::new();
    for &i in &replayed.in_doubt {
        let step = &plan.steps[i];
        let decision = if step.idempotent {
            Decision::Retry("idempotent")
        } else if args.retry_in_doubt {
            Decision::Retry("--retry-in-doubt")
        } else if args.skip_in_doubt {
            Decision::Skip("--skip-in-doubt")
        } else if std::io::stdin().is_terminal() {
            ask(step)
        } else {
            let ids: Vec<&str> = replayed
                .in_doubt
                .iter()
                .map(|&i| plan.steps[i].id.as_str())
                .collect();
            crate::eprintln_quiet!(
                "error: run {}: {} started but its end was not recorded, so it may or may not \
                 have taken effect: {}",
                header.run_id,
                if ids.len() == 1 { "a step" } else { "steps" },
                ids.join(", ")
            );
            crate::eprintln_quiet!(
                "  check, then resume with --retry-in-doubt (run again) or --skip-in-doubt (take as done)"
            );
            return exit::INVALID;
        };
        let (message, status) = match decision {
            Decision::Retry(why) => (
                format!("{} was in doubt: run again ({why})", step.id),
                Status::Pending,
            ),
            Decision::Skip(why) => (
                format!("{} was in doubt: taken as done ({why})", step.id),
                Status::Done(StepStatus::Skipped),
            ),
            Decision::Abort => {
                crate::eprintln_quiet!("resume abandoned; nothing was changed");
                return exit::INVALID;
            }
        };
        replayed.states[i] = StepState {
            status,
            ..StepState::default()
        };
        notes.push(message);
    }
    // Failed steps are tried again: the operator resumed after fixing the cause.
    for s in &mut replayed.states {
        if matches!(
            s.status,
            Status::Done(StepStatus::Failed | StepStatus::Cancelled)
        ) {
            *s = StepState::default();
        }
    }
    let pending = replayed
        .states
        .iter()
        .filter(|s| s.status == Status::Pending)
        .count();
    let at = now_rfc3339();
    let _lock = match lock(&state, &plan.name, &header.run_id, &at) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mode = header.mode;
    let mut journal = match Journal::reopen(
        &state.journal_path(&header.run_id),
        mode == crate::journal::record::Mode::Real,
    ) {
        Ok(j) => j,
        Err(e) => {
            crate::eprintln_quiet!("error: cannot open the journal: {e}");
            return exit::INVALID;
        }
    };
    let cx = context(
        plan.clone(),
        header.run_id.clone(),
        mode,
        &args.approvals,
        &[],
        None,
        providers,
    );
    let mut sink = sink(args.json, plan.steps.len());
    let t = replayed.last_ms;
    let mut records = vec![Record::Resumed {
        t_ms: t,
        pid: std::process::id(),
        at,
        operator: cx.operator.clone(),
    }];
    records.extend(
        notes
            .into_iter()
            .map(|message| Record::RunNote { t_ms: t, message }),
    );
    for r in &records {
        if let Err(e) = journal.append(r) {
            crate::eprintln_quiet!("error: cannot write the journal: {e}");
            return exit::INVALID;
        }
        sink.record(r);
    }
    if !args.json {
        crate::println_quiet!(
            "resuming run {}: {pending} of {} steps to go",
            header.run_id,
            plan.steps.len()
        );
    }
    drive(
        &cx,
        &mut journal,
        sink.as_mut(),
        replayed.states,
        t,
        args.json,
    )
}

enum Decision {
    Retry(&'static str),
    Skip(&'static str),
    Abort,
}

fn ask(step: &crate::plan::PlannedStep) -> Decision {
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "step `{}` started but its end was not recorded: it may or may not have taken effect.\n  \
         [r]un it again, [s]kip it (take as done), or [a]bort? ",
        step.id
    );
    let _ = err.flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return Decision::Abort;
    }
    match line.trim().to_ascii_lowercase().as_str() {
        "r" | "run" | "retry" => Decision::Retry("operator"),
        "s" | "skip" => Decision::Skip("operator"),
        _ => Decision::Abort,
    }
}
