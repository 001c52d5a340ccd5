//! `ripcord run FILE`: execute a runbook, or simulate it with `--dry-run`.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json, json};

use crate::cli::{ApprovalArgs, Estimates, RunArgs};
use crate::compile::CompileOptions;
use crate::exec::mask::{MASK, Masker};
use crate::exec::rollback::{RollbackOutcome, rollback};
use crate::exec::state::Status;
use crate::exec::ui::{JsonSink, PlainSink, Sink, TtySink};
use crate::exec::{Clock, Outcome, RunContext, execute, now_rfc3339, operator};
use crate::exit;
use crate::journal::record::{Mode, PlannedStepRecord, RunStatus, StepStatus};
use crate::journal::{Journal, Lock, LockHolder, Record, StateDir, lock::LockError};
use crate::plan::Plan;
use crate::provider::Providers;
use crate::report::history;
use crate::runbook::RollbackPolicy;
use crate::runbook::duration::format as dur;

use super::compile_one;
use super::recorded::fingerprint;

pub fn run(args: &RunArgs) -> u8 {
    let providers = Arc::new(Providers::new(&args.plugins.plugin_dirs));
    let options = CompileOptions {
        inputs: &args.inputs.inputs,
        require_inputs: true,
        providers: &providers,
    };
    let state = StateDir::resolve(args.state.state_dir.as_deref());
    let mut plan = match compile_one(&args.file, &options) {
        Ok(c) => c.plan,
        Err(code) => return code,
    };
    if args.estimates == Estimates::History {
        if !args.dry_run {
            crate::eprintln_quiet!(
                "error: --estimates history shapes a dry-run's timeline; add --dry-run"
            );
            return exit::INVALID;
        }
        let medians = history::medians(&state, &plan.name, None);
        history::apply(&mut plan, &medians);
    }
    let plan = Arc::new(plan);
    if let Err(code) = check_step_names(&plan, "--fail", &args.fail)
        .and_then(|()| check_step_names(&plan, "--approve", &args.approvals.approve))
    {
        return code;
    }
    if !args.dry_run
        && let Err(code) = require_plugins(&plan, &providers)
    {
        return code;
    }
    if !args.fail.is_empty() && !args.dry_run {
        crate::eprintln_quiet!("error: --fail rehearses failures in a dry-run; add --dry-run");
        return exit::INVALID;
    }
    let mode = match (args.dry_run, args.check) {
        (true, _) => Mode::DryRun,
        (false, true) => Mode::Check,
        (false, false) => Mode::Real,
    };
    let seed = args.seed.unwrap_or_else(random_seed);
    let file = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
    let wanted = match mode {
        Mode::DryRun => format!("{}-dry-{:04x}", time_id(), seed & 0xffff),
        Mode::Check => format!("{}-check-{:04x}", time_id(), seed & 0xffff),
        Mode::Real => format!("{}-{:04x}", time_id(), seed & 0xffff),
    };
    let run_id = match state.create_run_dir(&wanted) {
        Ok(id) => id,
        Err(e) => {
            crate::eprintln_quiet!(
                "error: cannot create a run in {}: {e}",
                state.root().display()
            );
            return exit::INVALID;
        }
    };
    let started_at = now_rfc3339();
    let _lock = match lock(&state, &plan.name, &run_id, &started_at) {
        Ok(lock) => lock,
        Err(code) => {
            let _ = std::fs::remove_dir(state.run_dir(&run_id));
            return code;
        }
    };
    let mut journal = match Journal::create(&state.journal_path(&run_id), mode == Mode::Real) {
        Ok(j) => j,
        Err(e) => {
            crate::eprintln_quiet!("error: cannot create the journal: {e}");
            return exit::INVALID;
        }
    };
    let cx = context(
        plan.clone(),
        run_id,
        mode,
        &args.approvals,
        &args.fail,
        args.concurrency,
        providers,
    );
    let masked_inputs: Map<String, Json> = plan
        .inputs
        .iter()
        .filter_map(|i| {
            let v = i.value.as_ref()?;
            Some((
                i.name.clone(),
                if i.secret { json!(MASK) } else { v.clone() },
            ))
        })
        .collect();
    let start = Record::RunStarted {
        run_id: cx.run_id.clone(),
        runbook: plan.name.clone(),
        file: file.display().to_string(),
        hash: fingerprint(&plan),
        mode,
        seed,
        inputs: masked_inputs,
        operator: cx.operator.clone(),
        pid: std::process::id(),
        started_at,
        concurrency: cx.concurrency,
        steps: plan.steps.len(),
        rto_ms: plan.rto.map(|d| d.as_millis() as u64),
        predicted_ms: plan.predicted(Some(cx.concurrency)).makespan.as_millis() as u64,
    };
    let planned = planned_record(&plan, cx.concurrency);
    let mut sink = sink(args.json, plan.steps.len());
    for record in [&start, &planned] {
        if let Err(e) = journal.append(record) {
            crate::eprintln_quiet!("error: cannot write the journal: {e}");
            return exit::INVALID;
        }
        sink.record(record);
    }
    if let Err(e) = journal.commit() {
        crate::eprintln_quiet!("error: cannot write the journal: {e}");
        return exit::INVALID;
    }
    let states = vec![Default::default(); plan.steps.len()];
    let code = drive(&cx, &mut journal, sink.as_mut(), states, 0, args.json);
    drop(journal);
    for (format, path) in &args.reports {
        let written = super::report::build(&state, &cx.run_id)
            .map_err(|_| std::io::Error::other("the journal cannot be read back"))
            .and_then(|r| super::report::write_private(path, &super::report::render(&r, *format)));
        match written {
            Ok(()) if !args.json => crate::println_quiet!("  report: {}", path.display()),
            Ok(()) => {}
            Err(e) => {
                crate::eprintln_quiet!("error: cannot write the report {}: {e}", path.display())
            }
        }
    }
    code
}

/// The plan in the journal: estimates, predicted starts under the run's limits, critical path.
fn planned_record(plan: &Plan, concurrency: usize) -> Record {
    let schedule = plan.predicted(Some(concurrency));
    let ms = |d: Duration| d.as_millis() as u64;
    Record::Planned {
        steps: plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| PlannedStepRecord {
                id: s.id.clone(),
                name: s.name.clone(),
                uses: s.action.to_string(),
                needs: plan.needs(i).map(|n| plan.steps[n].id.clone()).collect(),
                estimate_ms: ms(plan.estimate(i)),
                predicted_start_ms: ms(schedule.start[i]),
                module: s.group.map(|g| plan.groups[g].id.clone()),
            })
            .collect(),
        critical_path: plan
            .critical_path()
            .iter()
            .map(|&i| plan.steps[i].id.clone())
            .collect(),
    }
}

/// A real run (or a check) needs every plugin it uses; a dry-run does not.
pub fn require_plugins(plan: &Plan, providers: &Providers) -> Result<(), u8> {
    let mut missing = Vec::new();
    let mut seen = HashSet::new();
    for s in &plan.steps {
        let undo = s.undo.as_ref().map(|u| &u.action);
        for action in std::iter::once(&s.action).chain(undo) {
            if !action.builtin
                && seen.insert(action.provider.clone())
                && let Err(why) = providers.plugin(&action.provider)
            {
                missing.push(why);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    for why in missing {
        crate::eprintln_quiet!("error: {why}");
    }
    crate::eprintln_quiet!("  a real run needs its plugins; `--dry-run` works without them");
    Err(exit::INVALID)
}

/// Checks that `--fail`/`--approve` name steps of the plan.
fn check_step_names(plan: &Plan, flag: &str, names: &[String]) -> Result<(), u8> {
    for name in names {
        if !plan.steps.iter().any(|s| &s.id == name || &s.base == name) {
            let ids = plan.steps.iter().map(|s| s.base.as_str());
            let module = plan.groups.iter().position(|g| &g.id == name);
            let hint = match (module, crate::compile::suggest(name, ids)) {
                (Some(g), _) => {
                    let mut inner: Vec<&str> = plan
                        .group_members(g)
                        .into_iter()
                        .map(|i| plan.steps[i].base.as_str())
                        .collect();
                    inner.dedup();
                    format!(
                        "; `{name}` is a module: name one of its steps ({})",
                        inner.join(", ")
                    )
                }
                (None, Some(s)) => format!("; did you mean `{s}`?"),
                (None, None) => String::new(),
            };
            crate::eprintln_quiet!("error: {flag} {name}: the runbook has no step `{name}`{hint}");
            return Err(exit::INVALID);
        }
    }
    Ok(())
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// `20261125-064512`: sorts by time, reads at a glance.
fn time_id() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // 2026-11-25T06:45:12Z
    now.replace(['-', ':'], "")
        .replace('T', "-")
        .trim_end_matches('Z')
        .to_string()
}

pub fn lock(state: &StateDir, runbook: &str, run_id: &str, started_at: &str) -> Result<Lock, u8> {
    let holder = LockHolder {
        run_id: run_id.to_string(),
        pid: std::process::id(),
        started_at: started_at.to_string(),
    };
    match Lock::acquire(state, runbook, &holder) {
        Ok(lock) => Ok(lock),
        Err(LockError::Held(Some(h))) => {
            crate::eprintln_quiet!(
                "error: runbook `{runbook}` is locked by run {} (pid {}, started {})",
                h.run_id,
                h.pid,
                h.started_at
            );
            Err(exit::LOCKED)
        }
        Err(LockError::Held(None)) => {
            crate::eprintln_quiet!("error: runbook `{runbook}` is locked by another run");
            Err(exit::LOCKED)
        }
        Err(LockError::Io(e)) => {
            crate::eprintln_quiet!(
                "error: cannot lock runbook `{runbook}` in {}: {e}",
                state.root().display()
            );
            Err(exit::INVALID)
        }
    }
}

pub fn context(
    plan: Arc<Plan>,
    run_id: String,
    mode: Mode,
    approvals: &ApprovalArgs,
    fail: &[String],
    concurrency: Option<u32>,
    providers: Arc<Providers>,
) -> RunContext {
    let inputs: Map<String, Json> = plan
        .inputs
        .iter()
        .filter_map(|i| Some((i.name.clone(), i.value.clone()?)))
        .collect();
    let masker = Masker::new(
        plan.inputs
            .iter()
            .filter(|i| i.secret)
            .filter_map(|i| i.value.as_ref()),
    );
    RunContext {
        concurrency: concurrency.map_or(plan.concurrency, |c| c as usize),
        plan,
        run_id,
        mode,
        inputs,
        masker,
        yes: approvals.yes,
        approve: approvals.approve.iter().cloned().collect(),
        fail: fail.iter().cloned().collect::<HashSet<_>>(),
        operator: operator(),
        providers,
    }
}

pub fn sink(json: bool, steps: usize) -> Box<dyn Sink> {
    if json {
        Box::new(JsonSink::default())
    } else if std::io::stderr().is_terminal() && std::io::stdout().is_terminal() {
        Box::new(TtySink::new(steps))
    } else {
        Box::new(PlainSink::default())
    }
}

/// A current-thread runtime; paused for a dry-run, so its clock is virtual: when every task
/// waits, it jumps to the next timer.
pub fn runtime(mode: Mode) -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(mode == Mode::DryRun)
        .build()
        .map_err(|e| {
            crate::eprintln_quiet!("error: cannot start the runtime: {e}");
            exit::FAILED
        })
}

/// Runs (or resumes) on a current-thread runtime, paused for a dry-run (virtual time), rolls
/// back when the runbook says `rollback: auto`, prints the summary and gives the exit code.
pub fn drive(
    cx: &RunContext,
    journal: &mut Journal,
    sink: &mut dyn Sink,
    states: Vec<crate::exec::state::StepState>,
    base_ms: u64,
    json: bool,
) -> u8 {
    let runtime = match runtime(cx.mode) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let clock = Clock::new(base_ms);
        let outcome = execute(cx, journal, sink, states, clock).await?;
        let rolled =
            if outcome.status == RunStatus::Failed && cx.plan.rollback == RollbackPolicy::Auto {
                let clock = Clock::new(outcome.end_ms);
                Some(rollback(cx, journal, sink, &outcome.states, &HashSet::new(), clock).await?)
            } else {
                None
            };
        Ok::<_, std::io::Error>((outcome, rolled))
    });
    sink.finish();
    // An approval prompt may still be blocked on stdin: do not wait for it.
    runtime.shutdown_background();
    crate::provider::shell::remove_output_dir();
    let (outcome, rolled) = match result {
        Ok(r) => r,
        Err(e) => {
            crate::eprintln_quiet!(
                "error: the journal could not be written ({e}); the run stopped"
            );
            return exit::FAILED;
        }
    };
    summary(cx, &outcome, rolled.as_ref(), json);
    match outcome.status {
        RunStatus::Succeeded => exit::OK,
        RunStatus::Failed => exit::FAILED,
        RunStatus::Interrupted => exit::INTERRUPTED,
    }
}

fn summary(cx: &RunContext, outcome: &Outcome, rolled: Option<&RollbackOutcome>, json: bool) {
    let plan = &cx.plan;
    let count = |want: StepStatus| {
        outcome
            .states
            .iter()
            .filter(|s| s.status == Status::Done(want))
            .count()
    };
    let not_run = outcome
        .states
        .iter()
        .filter(|s| !s.status.is_done())
        .count();
    let (succeeded, failed, skipped) = (
        count(StepStatus::Succeeded),
        count(StepStatus::Failed),
        count(StepStatus::Skipped),
    );
    let cancelled = count(StepStatus::Cancelled);
    let total = Duration::from_millis(outcome.end_ms);
    let path: Vec<&str> = plan
        .critical_path()
        .iter()
        .map(|&i| plan.steps[i].id.as_str())
        .collect();
    let status = format!("{:?}", outcome.status).to_lowercase();
    if json {
        let line = json!({
            "kind": "summary",
            "run_id": cx.run_id,
            "status": status,
            "mode": cx.mode.as_str(),
            "duration_ms": outcome.end_ms,
            "succeeded": succeeded, "failed": failed, "skipped": skipped,
            "cancelled": cancelled, "not_run": not_run,
            "critical_path": path,
            "rto_ms": plan.rto.map(|d| d.as_millis() as u64),
            "rto_met": plan.rto.map(|r| total <= r),
            "rollback": rolled.map(|r| format!("{:?}", r.status).to_lowercase()),
        });
        crate::println_quiet!("{line}");
        return;
    }
    let what = match cx.mode {
        Mode::DryRun => "dry-run",
        Mode::Check => "check",
        Mode::Real => "run",
    };
    crate::println_quiet!();
    crate::println_quiet!("{what} {}: {status} in {}", cx.run_id, dur(total));
    crate::println_quiet!(
        "  {succeeded} succeeded, {failed} failed, {skipped} skipped, {cancelled} cancelled, {not_run} not run"
    );
    if cx.mode == Mode::DryRun {
        crate::println_quiet!(
            "  predicted duration: {} (critical path: {})",
            dur(total),
            path.join(" -> ")
        );
    } else {
        crate::println_quiet!("  critical path: {}", path.join(" -> "));
    }
    if let Some(rto) = plan.rto {
        let verdict = if outcome.status == RunStatus::Succeeded {
            super::plan::rto_verdict(rto, total)
        } else {
            format!("{}: not reached (the run did not finish)", dur(rto))
        };
        crate::println_quiet!("  rto {verdict}");
    }
    for (i, s) in outcome.states.iter().enumerate() {
        if s.status == Status::Done(StepStatus::Failed) {
            crate::println_quiet!(
                "  failed: {}: {}",
                plan.steps[i].id,
                s.error.as_deref().unwrap_or("")
            );
        }
    }
    if let Some(r) = rolled {
        crate::println_quiet!(
            "  rollback: {} undone, {} failed, {} blocked",
            r.undone.len(),
            r.failed.len(),
            r.blocked.len()
        );
    }
    match outcome.status {
        RunStatus::Interrupted => {
            crate::println_quiet!("  continue with: ripcord resume {}", cx.run_id)
        }
        RunStatus::Failed if cx.mode == Mode::Check => {
            crate::println_quiet!(
                "  pre-flight failed: fix what the failed checks found before the real run"
            );
        }
        RunStatus::Failed if rolled.is_none() => {
            crate::println_quiet!(
                "  undo completed steps with: ripcord rollback {}",
                cx.run_id
            );
            crate::println_quiet!(
                "  or fix the cause and continue with: ripcord resume {}",
                cx.run_id
            );
        }
        _ => {}
    }
}
