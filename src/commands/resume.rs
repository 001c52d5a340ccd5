//! `ripcord resume RUN_ID`: continue a run that was interrupted or crashed. Completed steps are
//! not run again (their outputs are restored from the journal); failed ones are retried; a step
//! that started with no recorded end is "in doubt": re-run when it is `idempotent: true` or with
//! `--retry-in-doubt`, taken as done with `--skip-in-doubt`, otherwise the operator is asked.
//!
//! Never resumed: a run that was rolled back, in full or in part (it is over: what it did was
//! undone, and carrying on would redo half a failover). Never taken as done: an approval whose
//! answer was not journaled (it is asked again). Never decided while a process of the run is
//! still alive (a step of the crashed session that the supervisor could not stop).

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::ResumeArgs;
use crate::error::CommandResult;
use crate::exec::state::{Status, StepState};
use crate::exit;
use crate::journal::Record;
use crate::journal::record::{RunStatus, StepStatus};
use crate::session::Session;
use crate::session::identity::Identity;

use super::recorded::{final_status, fingerprint, overrides, recompile, replay};
use super::run::{context, drive, sink, write};

pub fn run(args: &ResumeArgs) -> CommandResult {
    let state = crate::state::open(&args.state).map_err(|e| crate::invalid!("{e}"))?;
    let mut claim = Session::claim(state, &args.run_id, args.takeover)?;
    let (read, header) = (&claim.read, &claim.header.clone());
    if let Some(rolled) = read.records.iter().find_map(|r| match r {
        Record::RollbackStarted { at, by, .. } => Some((at.clone(), by.clone())),
        _ => None,
    }) {
        let by = rolled.1.map_or_else(String::new, |b| format!(" by {b}"));
        let refused = format!(
            "run {} was rolled back (started {}{by}): a rolled-back run is over and cannot be \
             resumed",
            header.run_id, rolled.0
        );
        // The same inputs as this run (secrets are not recorded: give them again).
        let inputs: String = header
            .inputs
            .iter()
            .filter(|(_, v)| v.as_str() != Some(crate::exec::mask::MASK))
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                format!(" -i {}", crate::cli::shell_word(&format!("{k}={v}")))
            })
            .collect();
        // In its mode: without `--mode`, a test run's new run would be the runbook's default
        // mode (a real switchover, say).
        let mode = header
            .run_mode
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(|m| format!(" --mode {}", crate::cli::shell_word(m)))
            .unwrap_or_default();
        return Err(crate::invalid!(
            "{refused}\n  what it did was undone, in full or in part; start a new run with its inputs:\n  ripcord run {}{mode}{inputs}{}",
            crate::cli::shell_word(&header.file),
            claim.state_again()
        ));
    }
    if final_status(read) == Some(RunStatus::Succeeded) {
        crate::println_quiet!("run {} already succeeded: nothing to resume", header.run_id);
        return Ok(exit::OK);
    }
    let providers = std::sync::Arc::new(crate::provider::Providers::new(&args.plugins.plugin_dirs));
    let plan = recompile(
        header,
        &args.inputs.inputs,
        &args.inputs.files()?,
        args.force,
        &providers,
    )?;
    let mut replayed = replay(&plan, &read.records);
    let mut notes = Vec::new();
    let mut taken_as_done = Vec::new();
    let in_doubt = replayed.in_doubt.clone();
    for &i in &in_doubt {
        let step = &plan.steps[i];
        let decision = if is_approval_step(step) {
            Decision::Retry("an approval whose answer was not journaled is asked again")
        } else if step.idempotent {
            Decision::Retry("idempotent")
        } else if args.retry_in_doubt {
            Decision::Retry("--retry-in-doubt")
        } else if args.skip_in_doubt {
            Decision::Skip("--skip-in-doubt")
        } else if std::io::stdin().is_terminal() {
            ask(step)
        } else {
            let ids: Vec<&str> = in_doubt
                .iter()
                .map(|&i| &plan.steps[i])
                .filter(|s| !s.idempotent && !is_approval_step(s))
                .map(|s| s.id.as_str())
                .collect();
            return Err(crate::invalid!(
                "run {}: {} started but its end was not recorded, so it may or may not have \
                 taken effect: {}\n  check, then resume with --retry-in-doubt (run again) or \
                 --skip-in-doubt (take as done)",
                header.run_id,
                if ids.len() == 1 { "a step" } else { "steps" },
                ids.join(", ")
            ));
        };
        // A step stopped by an interrupt is in doubt too, but says so.
        let was = if replayed.states[i].status == Status::Done(StepStatus::Cancelled) {
            "was cancelled by an interrupt (its effect is unknown)"
        } else {
            "was in doubt"
        };
        let (message, status) = match decision {
            Decision::Retry(why) => (
                format!("{} {was}: run again ({why})", step.id),
                Status::Pending,
            ),
            Decision::Skip(why) => (
                format!("{} {was}: taken as done ({why})", step.id),
                Status::Done(StepStatus::Skipped),
            ),
            Decision::Abort => {
                return Err(crate::invalid!("resume abandoned; nothing was changed"));
            }
        };
        if status == Status::Done(StepStatus::Skipped) {
            // Journaled as the step's end: a later resume does not ask again, and rollback
            // still counts it as launched.
            taken_as_done.push((i, message.clone()));
        }
        replayed.states[i] = StepState {
            status,
            launched: true,
            // In doubt: it may have acted.
            acted: replayed.states[i].acted.max(1),
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
            *s = StepState {
                launched: s.launched,
                acted: s.acted,
                ..StepState::default()
            };
        }
    }
    let pending = replayed
        .states
        .iter()
        .filter(|s| s.status == Status::Pending)
        .count();
    // Who started the run: for `not_by_operator`, whoever resumes it.
    let started_by = header.by.clone().unwrap_or_else(|| Identity {
        account: header.operator.clone(),
        uid: u32::MAX,
        sudo_user: None,
        host: String::new(),
        db_role: None,
    });
    // A runbook renamed since (resumed with --force) holds its new name too.
    if plan.name != header.runbook {
        claim.lock_also(&plan.name)?;
    }
    if header.mode == crate::journal::record::Mode::Real {
        claim.lock_scopes_also(&plan.locks)?;
    }
    let changed = fingerprint(&plan) != header.hash;
    let recorded_irreversible = replayed.irreversible.clone();
    // A takeover is evidence: whose lease this session took, and when it was last renewed.
    notes.extend(claim.taken_over());
    let mut session = claim.open(providers)?;
    let cx = context(
        &session,
        plan.clone(),
        &args.approvals,
        &[],
        None,
        Some(started_by),
    );
    let mut sink = sink(args.json, plan.steps.len());
    // The time between sessions stays in the timeline (and in the RTO).
    let t = crate::exec::session_base(header.mode, &header.started_at, replayed.last_ms);
    let mut records = vec![Record::Resumed {
        t_ms: t,
        pid: std::process::id(),
        at: session.started_at.clone(),
        operator: cx.by.to_string(),
        by: Some(cx.by.clone()),
        inputs: cx.masker.json_map(&overrides(header, &args.inputs.inputs)),
    }];
    if changed {
        notes.push("resumed with a runbook changed since the run started (--force)".to_string());
    }
    records.extend(
        notes
            .into_iter()
            .map(|message| Record::RunNote { t_ms: t, message }),
    );
    records.extend(
        taken_as_done
            .into_iter()
            .map(|(i, message)| Record::StepFinished {
                t_ms: t,
                step: plan.steps[i].id.clone(),
                status: StepStatus::Skipped,
                attempts: 0,
                started_ms: t,
                outputs: Default::default(),
                error: Some(format!("{message}, by {}", cx.by)),
            }),
    );
    write(&mut session, sink.as_mut(), &records)
        .map_err(|e| crate::error::journal_failed(e, "the run was not resumed"))?;
    if !args.json {
        crate::println_quiet!(
            "resuming run {}: {pending} of {} steps to go",
            session.run_id,
            plan.steps.len()
        );
    }
    drive(
        &mut session,
        &cx,
        sink.as_mut(),
        replayed.states,
        t,
        &recorded_irreversible,
        args.json,
    )
}

fn is_approval_step(step: &crate::plan::PlannedStep) -> bool {
    step.action.builtin && step.action.provider == "approval" && step.action.action == "ask"
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
