//! `ripcord run FILE`: execute a runbook, or simulate it with `--dry-run`.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json, json};

use crate::cli::{ApprovalArgs, Estimates, RunArgs};
use crate::compile::CompileOptions;
use crate::error::CommandResult;
use crate::exec::mask::{MASK, Masker};
use crate::exec::rollback::{RollbackOutcome, anything_to_undo, irreversible_past, rollback};
use crate::exec::state::Status;
use crate::exec::ui::{JsonSink, PlainSink, Sink, TtySink};
use crate::exec::{Clock, Outcome, RunContext, execute};
use crate::exit;
use crate::journal::Record;
use crate::journal::record::{Mode, PlannedStepRecord, RunStatus, StepStatus};
use crate::plan::Plan;
use crate::provider::Providers;
use crate::report::history;
use crate::runbook::RollbackPolicy;
use crate::runbook::duration::format as dur;
use crate::session::Session;
use crate::session::identity::Identity;
use crate::state::StateBackend;

use super::compile_one;
use super::recorded::fingerprint;

pub fn run(args: &RunArgs) -> CommandResult {
    let providers = Arc::new(Providers::new(&args.plugins.plugin_dirs));
    let input_files = args.inputs.files()?;
    let options = CompileOptions {
        inputs: &args.inputs.inputs,
        input_files: &input_files,
        require_inputs: true,
        run_commands: !args.dry_run,
        mode: args.mode.as_deref(),
        providers: &providers,
    };
    let state: Arc<dyn StateBackend> =
        crate::state::open(&args.state).map_err(|e| crate::invalid!("{e}"))?;
    let mut plan = compile_one(&args.file, &options)?.plan;
    if args.estimates == Estimates::History {
        if !args.dry_run {
            return Err(crate::invalid!(
                "--estimates history shapes a dry-run's timeline; add --dry-run"
            ));
        }
        let (medians, _) = history::learn(state.as_ref(), &plan.name);
        history::apply(&mut plan, &medians);
    }
    let plan = Arc::new(plan);
    if !args.dry_run {
        let problems = crate::compile::refuse_valueless_inputs(&plan);
        if !problems.is_empty() {
            super::print_diags(&problems);
            return Err(crate::error::CommandError::Reported(crate::exit::INVALID));
        }
    }
    check_step_names(&plan, "--fail", &args.fail)?;
    check_step_names(&plan, "--approve", &args.approvals.approve)?;
    if !args.dry_run {
        require_plugins(&plan, &providers)?;
    }
    if args.fail_rate.is_some() && !args.dry_run {
        return Err(crate::invalid!(
            "--fail-rate rehearses failures in a dry-run; add --dry-run"
        ));
    }
    if !args.fail.is_empty() && !args.dry_run {
        return Err(crate::invalid!(
            "--fail rehearses failures in a dry-run; add --dry-run"
        ));
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
    // A pre-flight or a rehearsal changes nothing a scope protects: only a real run holds them
    // (a nightly `--check` of one runbook must not refuse another's failover).
    let scopes: &[String] = if mode == Mode::Real { &plan.locks } else { &[] };
    let mut session = Session::start(
        state.clone(),
        &plan.name,
        scopes,
        &wanted,
        mode,
        providers.clone(),
    )?;
    let mut cx = context(
        &session,
        plan.clone(),
        &args.approvals,
        &args.fail,
        args.concurrency,
        None,
    );
    cx.seed = seed;
    cx.fail_rate = args.fail_rate.unwrap_or(0.0);
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
        run_mode: plan.mode.clone(),
        locks: scopes.to_vec(),
        seed,
        fail_rate: args.fail_rate,
        inputs: masked_inputs,
        operator: cx.by.to_string(),
        by: Some(cx.by.clone()),
        pid: std::process::id(),
        started_at: session.started_at.clone(),
        concurrency: cx.concurrency,
        steps: plan.steps.len(),
        rto_ms: plan.rto.map(|d| d.as_millis() as u64),
        predicted_ms: plan.predicted(Some(cx.concurrency)).makespan.as_millis() as u64,
    };
    let planned = planned_record(&plan, cx.concurrency);
    let mut sink = sink(args.json, plan.steps.len());
    let mut first = vec![start, planned];
    first.extend(session.taken_over.iter().map(|message| Record::RunNote {
        t_ms: 0,
        message: message.clone(),
    }));
    write(&mut session, sink.as_mut(), &first)
        .map_err(|e| crate::error::journal_failed(e, "the run did not start"))?;
    let states = vec![Default::default(); plan.steps.len()];
    let code = drive(
        &mut session,
        &cx,
        sink.as_mut(),
        states,
        0,
        &HashSet::new(),
        args.json,
    );
    let run_id = session.run_id.clone();
    drop(session);
    for (format, path) in &args.reports {
        let written = super::report::build(state.as_ref(), &run_id)
            .map_err(|_| std::io::Error::other("the journal cannot be read back"))
            .and_then(|r| super::report::write_private(path, &super::report::render(&r, *format)));
        match written {
            Ok(()) if !args.json => crate::println_quiet!("  report: {}", path.display()),
            Ok(()) => {}
            // The run's outcome stands; the report can be written again with `report`.
            Err(e) => {
                crate::eprintln_quiet!("error: cannot write the report {}: {e}", path.display())
            }
        }
    }
    code
}

/// Appends records to the session's journal, shows them, and commits them.
pub fn write(
    session: &mut Session,
    sink: &mut dyn Sink,
    records: &[Record],
) -> std::io::Result<()> {
    for record in records {
        session.journal.append(record)?;
        sink.record(record);
    }
    session.journal.commit()
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
                needs: plan.needs_ids(i),
                estimate_ms: ms(plan.estimate(i)),
                predicted_start_ms: ms(schedule.start[i]),
                module: s.group.map(|g| plan.groups[g].id.clone()),
                irreversible: s.irreversible,
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
pub fn require_plugins(plan: &Plan, providers: &Providers) -> CommandResult<()> {
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
    Err(crate::invalid!(
        "{}\n  a real run needs its plugins; `--dry-run` works without them",
        missing.join("\nerror: ")
    ))
}

/// Checks that `--fail`/`--approve` name steps of the plan.
fn check_step_names(plan: &Plan, flag: &str, names: &[String]) -> CommandResult<()> {
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
            return Err(crate::invalid!(
                "{flag} {name}: the runbook has no step `{name}`{hint}"
            ));
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

/// What the executor is given: the plan, the session's identity, state, process groups and
/// signals, and this command's flags. `started_by` is who started the run (a resume's run);
/// `None` for a new run, started by this session.
pub fn context(
    session: &Session,
    plan: Arc<Plan>,
    approvals: &ApprovalArgs,
    fail: &[String],
    concurrency: Option<u32>,
    started_by: Option<Identity>,
) -> RunContext {
    // A dry-run needs no secret nor any value it is not given (CI has none): an input without
    // one is a stand-in of its type there. A real run never gets this far without them.
    let inputs: Map<String, Json> = plan
        .inputs
        .iter()
        .filter_map(|i| match &i.value {
            Some(v) => Some((i.name.clone(), v.clone())),
            None if session.mode == Mode::DryRun => Some((
                i.name.clone(),
                crate::compile::inputs::stand_in(i.ty, "(not given)"),
            )),
            None => None,
        })
        .collect();
    // A dry-run's stand-in for a command's value (`0`, "(from its command)") is no secret.
    let stand_in = |i: &&crate::plan::ResolvedInput| {
        i.origin == crate::plan::InputOrigin::Command && session.mode == Mode::DryRun
    };
    let masker = Masker::new(
        plan.inputs
            .iter()
            .filter(|i| i.secret && !stand_in(i))
            .filter_map(|i| i.value.as_ref()),
    );
    RunContext {
        concurrency: concurrency.map_or(plan.concurrency, |c| c as usize),
        plan,
        run_id: session.run_id.clone(),
        mode: session.mode,
        inputs,
        masker,
        yes: approvals.yes,
        approve: approvals.approve.iter().cloned().collect(),
        fail: fail.iter().cloned().collect::<HashSet<_>>(),
        started_by: started_by.unwrap_or_else(|| session.by.clone()),
        by: session.by.clone(),
        providers: session.providers.clone(),
        state: Some(session.state.clone()),
        groups: session.groups.clone(),
        signals: session.signals.clone(),
        seed: 0,
        fail_rate: 0.0,
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

/// Runs (or resumes) on the session's runtime (paused for a dry-run: virtual time), rolls back
/// when the runbook says `rollback: auto` and no irreversible step has started (the plan's, or
/// those the journal recorded as irreversible: `recorded`), prints the summary and gives the
/// exit code.
pub fn drive(
    session: &mut Session,
    cx: &RunContext,
    sink: &mut dyn Sink,
    states: Vec<crate::exec::state::StepState>,
    base_ms: u64,
    recorded: &HashSet<String>,
    json: bool,
) -> CommandResult {
    let (runtime, journal) = session.parts();
    let result = runtime.block_on(async {
        let clock = Clock::new(base_ms);
        let outcome = execute(cx, journal, sink, states, clock).await?;
        let mut after = AfterFailure::Nothing;
        // A pre-flight changed nothing to undo: `rollback: auto` is for real runs (and
        // rehearsals of them).
        if outcome.status == RunStatus::Failed
            && cx.plan.rollback == RollbackPolicy::Auto
            && cx.mode != Mode::Check
        {
            let past = irreversible_past(&cx.plan, &outcome.states, recorded);
            if !past.is_empty() {
                let names = ids(&cx.plan, &past);
                let note = Record::RunNote {
                    t_ms: outcome.end_ms,
                    message: format!(
                        "automatic rollback not run: irreversible step {names} started (it may \
                         have taken effect); undoing what came before it would make things worse"
                    ),
                };
                journal.append(&note)?;
                sink.record(&note);
                journal.commit()?;
                after = AfterFailure::Irreversible(past);
            } else if anything_to_undo(&cx.plan, &outcome.states) {
                // (With nothing an undo would put back, a pre-flight step failed or the
                // approval was refused: no rollback to start, nor to report.)
                let clock = Clock::new(outcome.end_ms);
                let rolled = rollback(
                    cx,
                    journal,
                    sink,
                    &outcome.states,
                    &HashSet::new(),
                    clock,
                    Default::default(),
                )
                .await?;
                after = AfterFailure::RolledBack(rolled);
            }
        }
        Ok::<_, std::io::Error>((outcome, after))
    });
    sink.finish();
    let (outcome, after) = match result {
        Ok(r) => r,
        Err(e) => {
            return Err(crate::error::journal_failed(
                e,
                &format!("run {} stopped", session.run_id),
            ));
        }
    };
    summary(session, cx, &outcome, &after, recorded, json);
    Ok(match (outcome.status, &after) {
        (_, AfterFailure::RolledBack(r)) if r.status == RunStatus::Interrupted => exit::INTERRUPTED,
        (RunStatus::Succeeded, _) => exit::OK,
        (RunStatus::Failed, _) => exit::FAILED,
        (RunStatus::Interrupted, _) => exit::INTERRUPTED,
    })
}

/// What happened after a failed run.
enum AfterFailure {
    Nothing,
    RolledBack(RollbackOutcome),
    /// `rollback: auto` did not run: these irreversible steps had completed.
    Irreversible(Vec<usize>),
}

/// Step ids, joined for a message.
pub fn ids(plan: &Plan, steps: &[usize]) -> String {
    steps
        .iter()
        .map(|&i| plan.steps[i].id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(
    session: &Session,
    cx: &RunContext,
    outcome: &Outcome,
    after: &AfterFailure,
    recorded: &HashSet<String>,
    json: bool,
) {
    let plan = &cx.plan;
    let rolled = match after {
        AfterFailure::RolledBack(r) => Some(r),
        _ => None,
    };
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
            // As the report judges it: only a run that finished recovered in time; a
            // pre-flight is not judged.
            "rto_met": plan.rto.filter(|_| cx.mode != Mode::Check).map(|r| {
                outcome.status == RunStatus::Succeeded && rolled.is_none() && total <= r
            }),
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
        // With chance in it (`sim.jitter`, `--fail-rate`), a dry-run is one draw, not the
        // prediction.
        let drawn = cx.fail_rate > 0.0 || plan.steps.iter().any(|s| s.sim.jitter > 0.0);
        crate::println_quiet!(
            "  {}: {} (critical path: {})",
            if drawn {
                "simulated duration, one draw of --seed"
            } else {
                "predicted duration"
            },
            dur(total),
            path.join(" -> ")
        );
    } else {
        crate::println_quiet!("  critical path: {}", path.join(" -> "));
    }
    if let Some(rto) = plan.rto {
        let verdict = if cx.mode == Mode::Check {
            format!("{}: not judged (a pre-flight)", dur(rto))
        } else if outcome.status == RunStatus::Succeeded && cx.mode == Mode::DryRun {
            super::plan::rto_verdict(rto, total)
        } else if outcome.status == RunStatus::Succeeded {
            // In the report's words: the actual time, since the run started, gaps included.
            if total <= rto {
                format!("{}: met, {} to spare", dur(rto), dur(rto - total))
            } else {
                format!("{}: MISSED by {}", dur(rto), dur(total - rto))
            }
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
            "  rollback: {}: {} undone, {} failed, {} not attempted",
            format!("{:?}", r.status).to_lowercase(),
            r.undone.len(),
            r.failed.len(),
            r.blocked.len()
        );
        if r.status != RunStatus::Succeeded {
            crate::println_quiet!("  undo the rest with: {}", session.command("rollback"));
        }
    }
    if let AfterFailure::Irreversible(past) = after {
        crate::println_quiet!(
            "  automatic rollback not run: irreversible step {} started (it may have taken effect)",
            ids(plan, past)
        );
    }
    let resume = session.command("resume");
    let past = irreversible_past(plan, &outcome.states, recorded);
    let undoable = anything_to_undo(plan, &outcome.states);
    match outcome.status {
        RunStatus::Interrupted if !past.is_empty() => crate::println_quiet!(
            "  irreversible step {} started: rollback is refused; continue with: {resume}",
            ids(plan, &past)
        ),
        RunStatus::Interrupted if undoable => {
            crate::println_quiet!("  continue with: {resume}");
            crate::println_quiet!(
                "  or undo what it did with: {}",
                session.command("rollback")
            );
        }
        RunStatus::Interrupted => crate::println_quiet!("  continue with: {resume}"),
        // A run whose rollback is its cleanup (a DR test) says how to clean up.
        RunStatus::Succeeded if cx.mode == Mode::Real && undoable && plan.is_cleanup_mode() => {
            crate::println_quiet!(
                "  what this {} run made stays until its cleanup: {}",
                plan.mode.as_deref().unwrap_or_default(),
                session.command("rollback")
            );
        }
        RunStatus::Failed if cx.mode == Mode::Check => {
            crate::println_quiet!(
                "  pre-flight failed: fix what the failed checks found before the real run"
            );
        }
        RunStatus::Failed if matches!(after, AfterFailure::Irreversible(_)) => {
            crate::println_quiet!("  fix the cause, then go forward with: {resume}");
        }
        RunStatus::Failed if rolled.is_none() => {
            if past.is_empty() && !undoable {
                crate::println_quiet!(
                    "  nothing was changed that a rollback would undo; fix the cause and continue with: {resume}"
                );
            } else if past.is_empty() {
                crate::println_quiet!(
                    "  undo completed steps with: {}",
                    session.command("rollback")
                );
                crate::println_quiet!("  or fix the cause and continue with: {resume}");
            } else {
                crate::println_quiet!(
                    "  irreversible step {} started: rollback is refused; fix the cause, then go forward with: {resume}",
                    ids(plan, &past)
                );
            }
        }
        _ => {}
    }
}
