//! `ripcord rollback RUN_ID`: the undos of a run's completed steps, in reverse dependency order.
//!
//! Refused (exit 2) when it would make things worse: past an irreversible step that completed
//! or may have (undoing the drain and read-only before a promotion that stands makes two
//! primaries), and for a run that succeeded (undoing a finished failover is a decision, not a
//! repair) unless its mode is one of the runbook's `cleanup_modes:` (a DR test, whose rollback
//! removes what it made). `--force --reason TEXT` overrides; who forced it, why, and past what
//! is journaled and shown in every report.

use std::sync::Arc;

use crate::cli::{ApprovalArgs, RollbackArgs};
use crate::error::{CommandError, CommandResult};
use crate::exec::Clock;
use crate::exec::rollback::{irreversible_past, rollback};
use crate::exit;
use crate::journal::Record;
use crate::journal::record::{Forced, Mode, RunStatus};
use crate::session::Session;

use super::recorded::{final_status, fingerprint, recompile, replay};
use super::run::{context, ids, sink};

pub fn run(args: &RollbackArgs) -> CommandResult {
    let state = crate::state::open(&args.state).map_err(|e| crate::invalid!("{e}"))?;
    let mut claim = Session::claim(state, &args.run_id, args.takeover)?;
    let header = claim.header.clone();
    if header.mode == Mode::Check {
        crate::println_quiet!(
            "run {} was a check: it changed nothing, so there is nothing to roll back",
            header.run_id
        );
        return Ok(exit::OK);
    }
    let providers = Arc::new(crate::provider::Providers::new(&args.plugins.plugin_dirs));
    let plan = recompile(
        &header,
        &args.inputs.inputs,
        &args.inputs.files()?,
        args.force,
        &providers,
    )?;
    if header.mode == Mode::Real {
        claim.lock_scopes_also(&plan.locks)?;
    }
    let replayed = replay(&plan, &claim.read.records);
    // What a rollback would go past.
    let mut past = Vec::new();
    let irreversible = irreversible_past(&plan, &replayed.states, &replayed.irreversible);
    if !irreversible.is_empty() {
        past.push(format!(
            "irreversible step {} started (it may have taken effect)",
            ids(&plan, &irreversible)
        ));
    }
    if fingerprint(&plan) != header.hash {
        // The undos that would run are the edited ones.
        past.push("the runbook changed since the run started".to_string());
    }
    // A run of a cleanup mode (a DR test) is undone when it is over: that is its cleanup.
    let finished = final_status(&claim.read) == Some(RunStatus::Succeeded);
    let cleanup = finished && plan.is_cleanup_mode();
    let succeeded = finished && !cleanup;
    if succeeded {
        past.push("the run succeeded".to_string());
    }
    // Rolled back already, in full: nothing is left to undo, and no new session is recorded.
    let last_rollback = claim.read.records.iter().rev().find_map(|r| match r {
        Record::RollbackFinished { status, .. } => Some(*status),
        _ => None,
    });
    if last_rollback == Some(RunStatus::Succeeded) {
        crate::println_quiet!(
            "run {} was rolled back already, in full: nothing left to undo",
            header.run_id
        );
        return Ok(exit::OK);
    }
    let again = format!("{}{}", claim.state_again(), providers.again());
    let forced = match (&past[..], args.force, &args.reason) {
        ([], _, _) => None,
        (_, true, Some(reason)) if !reason.trim().is_empty() => Some(Forced {
            reason: reason.clone(),
            past: past.clone(),
        }),
        _ => {
            let mut message = format!(
                "rollback of run {} refused: {}",
                header.run_id,
                past.join("; ")
            );
            if succeeded {
                message.push_str(
                    "\n  undoing a run that finished is a new decision, not a repair: run the \
                     way back (a failback runbook) as its own run",
                );
            } else if !irreversible.is_empty() {
                message.push_str(
                    "\n  undoing the steps before it would make things worse (with a standby \
                     promoted, the old primary would take writes again: two primaries)",
                );
                message.push_str(&format!(
                    "\n  go forward instead: fix the cause, then `ripcord resume {}{again}`",
                    header.run_id
                ));
            }
            message.push_str(&format!(
                "\n  to roll back anyway: ripcord rollback {}{again} --force --reason TEXT \
                 (journaled and reported)",
                header.run_id
            ));
            return Err(CommandError::Invalid(message));
        }
    };
    let taken_over = claim.taken_over();
    let mut session = claim.open(providers.clone())?;
    let approvals = ApprovalArgs {
        yes: false,
        approve: Vec::new(),
    };
    let cx = context(
        &session,
        plan.clone(),
        &approvals,
        &[],
        None,
        header.by.clone(),
    );
    let mut sink = sink(args.json, plan.steps.len());
    // The time between sessions stays in the timeline.
    let base = crate::exec::session_base(header.mode, &header.started_at, replayed.last_ms);
    // An undo that started with no recorded end runs again: said in the journal, in this
    // rollback's session (after its start record).
    let mut notes: Vec<String> = taken_over;
    notes.extend(replayed.undo_in_doubt.iter().map(|&i| {
        format!(
            "the undo of {} was in doubt (started, no end recorded): run again",
            plan.steps[i].id
        )
    }));
    let clock = Clock::new(base);
    let inputs = cx
        .masker
        .json_map(&super::recorded::overrides(&header, &args.inputs.inputs));
    let (runtime, journal) = session.parts();
    let result = runtime.block_on(rollback(
        &cx,
        journal,
        sink.as_mut(),
        &replayed.states,
        &replayed.undone,
        clock,
        crate::exec::rollback::Why {
            forced,
            cleanup,
            inputs,
            notes,
        },
    ));
    sink.finish();
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            return Err(crate::error::journal_failed(
                e,
                &format!("the rollback of run {} stopped", header.run_id),
            ));
        }
    };
    if !args.json {
        crate::println_quiet!(
            "\nrollback of {}: {} {} undone{}{}",
            header.run_id,
            format!("{:?}", outcome.status).to_lowercase(),
            outcome.undone.len(),
            if outcome.failed.is_empty() {
                String::new()
            } else {
                format!(", failed: {}", ids(&plan, &outcome.failed))
            },
            if outcome.blocked.is_empty() {
                String::new()
            } else {
                format!(
                    ", not attempted (an undo they wait for failed, or the rollback was stopped): {}",
                    ids(&plan, &outcome.blocked)
                )
            },
        );
        if outcome.status == RunStatus::Interrupted {
            crate::println_quiet!(
                "  interrupted: run `{}` again to undo the rest",
                session.command("rollback")
            );
        }
    }
    Ok(match outcome.status {
        RunStatus::Succeeded => exit::OK,
        RunStatus::Failed => exit::FAILED,
        RunStatus::Interrupted => exit::INTERRUPTED,
    })
}
