//! Rollback: the `undo` of every completed step, in reverse dependency order — a step's undo
//! waits for the undos of everything that depended on it — concurrently where the graph allows.
//! A failed undo blocks the undos of the steps it depended on (undoing those under a half-undone
//! dependent could make things worse); they are reported as not undone.
//!
//! Each undo runs like a step: its `when` is evaluated just before it would start (false: there
//! is nothing to undo, recorded as skipped), its attempts follow its `retry` (else its step's)
//! and its `timeout` (else its step's), a timeout sends SIGTERM to the process group before
//! SIGKILL, and every undo's start is durable before it runs. A signal stops the rollback: no
//! new undo starts, running ones are cancelled, and the rollback ends as interrupted.
//!
//! What may be rolled back at all is decided before: [`irreversible_past`] names the
//! irreversible steps that may have taken effect, past which nothing is undone.

use std::collections::{HashSet, VecDeque};
use std::io;

use serde_json::{Map, Value as Json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::journal::Record;
use crate::journal::record::{Forced, Mode, RunStatus, StepStatus};
use crate::plan::{Plan, UndoSpec};
use crate::provider::catalog::EXTERNAL_SIM_DEFAULT;
use crate::provider::{Failure, Provider, Providers, Request};
use crate::state::JournalWriter;

use super::scope::Scope;
use super::state::{Status, StepState};
use super::ui::Sink;
use super::{Clock, RunContext, instances, now_rfc3339, run_json, wall, with_timeout};
use crate::expr::render;

/// What a rollback did.
pub struct RollbackOutcome {
    pub status: RunStatus,
    pub undone: Vec<usize>,
    pub failed: Vec<usize>,
    /// Undos not attempted because an undo they wait for failed (or a signal stopped it).
    pub blocked: Vec<usize>,
}

/// The irreversible steps that may have taken effect: any that started an attempt, whatever
/// came of it (succeeded; failed or timed out part-way; cancelled; in doubt; taken as done).
/// Past any of them, a rollback would make things worse. A step is irreversible when the plan
/// says so, or when the run's journal recorded it so (`recorded`): editing the runbook does not
/// lift it.
pub fn irreversible_past(
    plan: &Plan,
    states: &[StepState],
    recorded: &HashSet<String>,
) -> Vec<usize> {
    (0..plan.steps.len())
        .filter(|&i| plan.steps[i].irreversible || recorded.contains(&plan.steps[i].id))
        .filter(|&i| states[i].launched)
        .collect()
}

/// Whether a rollback would run step `i`'s undo: it has one, and the step succeeded (or, when
/// the undo says `if_started`, an attempt of it started that is not known to have done nothing).
pub fn to_undo(plan: &Plan, states: &[StepState], i: usize) -> bool {
    let Some(undo) = &plan.steps[i].undo else {
        return false;
    };
    states[i].status == Status::Done(StepStatus::Succeeded)
        || (undo.if_started && states[i].acted > 0)
}

/// Whether a rollback of these states would undo anything.
pub fn anything_to_undo(plan: &Plan, states: &[StepState]) -> bool {
    (0..plan.steps.len()).any(|i| to_undo(plan, states, i))
}

/// What the rollback's start records of why it runs: `--force --reason`, and the inputs given
/// to it that change the recorded ones.
#[derive(Debug, Default)]
pub struct Why {
    pub forced: Option<Forced>,
    /// The cleanup of a succeeded run of a cleanup mode (a DR test).
    pub cleanup: bool,
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// Journaled right after the rollback's start (undos in doubt run again).
    pub notes: Vec<String>,
}

/// Runs the undos of the `states` that succeeded (and of those that started at all, when their
/// undo says `if_started`), except those in `already_undone`.
pub async fn rollback(
    cx: &RunContext,
    journal: &mut dyn JournalWriter,
    sink: &mut dyn Sink,
    states: &[StepState],
    already_undone: &HashSet<usize>,
    clock: Clock,
    why: Why,
) -> io::Result<RollbackOutcome> {
    let Why {
        forced,
        cleanup,
        inputs,
        notes,
    } = why;
    let plan = cx.plan.clone();
    let n = plan.steps.len();
    let target: Vec<bool> = (0..n)
        .map(|i| to_undo(&plan, states, i) && !already_undone.contains(&i))
        .collect();
    let mut emit = |journal: &mut dyn JournalWriter, record: Record| -> io::Result<()> {
        journal.append(&record)?;
        sink.record(&record);
        sink.flush();
        Ok(())
    };
    emit(
        journal,
        Record::RollbackStarted {
            t_ms: clock.ms(),
            pid: std::process::id(),
            at: now_rfc3339(),
            by: Some(cx.by.clone()),
            forced,
            cleanup,
            inputs,
            boot_id: crate::journal::intent::boot_id(),
        },
    )?;
    // A step that acted but did not succeed (in doubt, or failed part-way) keeps its effect
    // when its undo is only for steps that succeeded: said, so the rollback is not taken for
    // complete.
    let mut notes = notes;
    let kept: Vec<&str> = (0..n)
        .filter(|&i| {
            plan.steps[i].undo.is_some()
                && !target[i]
                && !already_undone.contains(&i)
                && states[i].acted > 0
                && states[i].status != Status::Done(StepStatus::Succeeded)
        })
        .map(|i| plan.steps[i].id.as_str())
        .collect();
    if !kept.is_empty() {
        let message = format!(
            "not undone, check by hand: {} started and did not succeed (its end unknown, or it \
             failed part-way), and its undo runs only after success (`undo: {{if_started: \
             true}}` would run it)",
            kept.join(", ")
        );
        crate::eprintln_quiet!("ripcord: {message}");
        notes.push(message);
    }
    for message in notes {
        emit(
            journal,
            Record::RunNote {
                t_ms: clock.ms(),
                message,
            },
        )?;
    }
    journal.commit()?;
    // Reverse Kahn: a step is ready when every dependent is done (undone or nothing to undo).
    let mut waiting: Vec<usize> = (0..n).map(|i| plan.dependents(i).count()).collect();
    let mut queue: VecDeque<usize> = (0..n).rev().filter(|&i| waiting[i] == 0).collect();
    let env = render::environment_for(cx.mode != Mode::Real);
    let instances = instances(&plan);
    let scope = Scope {
        plan: &plan,
        inputs: &cx.inputs,
        run: run_json(cx),
        states,
        instances: &instances,
    };
    let cancel = CancellationToken::new();
    let signals = cx.signals.clone();
    let mut interrupted = false;
    let mut tasks: JoinSet<(usize, Result<u32, Failure>)> = JoinSet::new();
    let (mut undone, mut failed) = (Vec::new(), Vec::new());
    let mut done = vec![false; n];
    loop {
        while !interrupted && tasks.len() < cx.concurrency.max(1) {
            let Some(i) = queue.pop_front() else { break };
            if !target[i] {
                complete(i, &plan, &mut waiting, &mut queue, &mut done);
                continue;
            }
            let undo = plan.steps[i].undo.clone().expect("targets have an undo");
            let mut exprs = Vec::new();
            if let Some(w) = &undo.with {
                w.exprs(&mut exprs);
            }
            exprs.extend(undo.when.as_ref().and_then(|c| c.expr()));
            let ctx = scope.context(Some(i), &exprs);
            let step = plan.steps[i].id.clone();
            if let Some(when) = &undo.when {
                let skip = match render::eval_condition(&env, when, &ctx) {
                    Ok(run) => (!run).then_some(None),
                    Err(e) => Some(Some(format!("cannot evaluate the undo's `when`: {e}"))),
                };
                if let Some(error) = skip {
                    let status = if error.is_some() {
                        StepStatus::Failed
                    } else {
                        StepStatus::Skipped
                    };
                    emit(
                        journal,
                        Record::UndoFinished {
                            t_ms: clock.ms(),
                            step,
                            status,
                            error,
                        },
                    )?;
                    if status == StepStatus::Skipped {
                        complete(i, &plan, &mut waiting, &mut queue, &mut done);
                    } else {
                        failed.push(i);
                    }
                    continue;
                }
            }
            let params = match &undo.with {
                Some(w) => render::render_with(&env, &undo.action, w, &ctx),
                None => Ok(Json::Object(Map::new())),
            };
            // A session whose lease lapsed undoes nothing more: another may have taken over.
            if let Err(e) = journal.fence() {
                crate::eprintln_quiet!("ripcord: the rollback stops: {e}");
                return Err(e);
            }
            emit(
                journal,
                Record::UndoStarted {
                    t_ms: clock.ms(),
                    step: step.clone(),
                },
            )?;
            // An undo's start is durable before its effect, as a step's is.
            journal.commit()?;
            let request = Request {
                action: undo.action.clone(),
                params: params.clone().unwrap_or(Json::Null),
                step,
                attempt: 1,
                run_id: cx.run_id.clone(),
                timeout: undo.timeout,
                cancel: cancel.child_token(),
                check: false,
                groups: cx.groups.clone(),
            };
            let providers = cx.providers.clone();
            let state = cx.state.clone();
            let dry = cx.mode == Mode::DryRun;
            tasks.spawn(async move {
                let result = match params {
                    Err(e) => Err(Failure::permanent(format!(
                        "cannot render undo `with`: {e}"
                    ))),
                    Ok(_) => attempts(&undo, request, &providers, dry, state.as_deref()).await,
                };
                (i, result)
            });
        }
        journal.flush()?;
        let watch = journal.watch_every();
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            () = tokio::time::sleep(watch.unwrap_or_default()), if watch.is_some() => {
                if let Err(e) = journal.fence() {
                    crate::eprintln_quiet!(
                        "ripcord: the rollback stops: {e}; undos running are stopped (their \
                         processes are killed)"
                    );
                    return Err(e);
                }
                continue;
            }
            () = signals.token().cancelled(), if !interrupted => {
                interrupted = true;
                cancel.cancel();
                emit(
                    journal,
                    Record::Interrupted {
                        t_ms: clock.ms(),
                        signal: signals.received().unwrap_or("a signal").to_string(),
                        at: wall(cx.mode),
                    },
                )?;
                journal.commit()?;
                continue;
            }
        };
        let Some(joined) = joined else {
            break;
        };
        let Ok((i, result)) = joined else { continue };
        if let Err(e) = journal.fence() {
            crate::eprintln_quiet!("ripcord: the rollback stops: {e}");
            return Err(e);
        }
        let (status, error) = match result {
            Ok(_) => (StepStatus::Succeeded, None),
            Err(_) if interrupted => (
                StepStatus::Cancelled,
                Some("cancelled by interrupt".to_string()),
            ),
            Err(f) => (StepStatus::Failed, Some(cx.masker.text(&f.message))),
        };
        emit(
            journal,
            Record::UndoFinished {
                t_ms: clock.ms(),
                step: plan.steps[i].id.clone(),
                status,
                error,
            },
        )?;
        match status {
            StepStatus::Succeeded => {
                undone.push(i);
                complete(i, &plan, &mut waiting, &mut queue, &mut done);
            }
            StepStatus::Cancelled => {}
            _ => failed.push(i),
        }
    }
    let blocked: Vec<usize> = (0..n)
        .filter(|&i| target[i] && !done[i] && !failed.contains(&i))
        .collect();
    let status = if interrupted {
        RunStatus::Interrupted
    } else if failed.is_empty() && blocked.is_empty() {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    emit(
        journal,
        Record::RollbackFinished {
            t_ms: clock.ms(),
            status,
            at: wall(cx.mode),
        },
    )?;
    journal.commit()?;
    Ok(RollbackOutcome {
        status,
        undone,
        failed,
        blocked,
    })
}

fn complete(
    i: usize,
    plan: &Plan,
    waiting: &mut [usize],
    queue: &mut VecDeque<usize>,
    done: &mut [bool],
) {
    done[i] = true;
    for d in plan.needs(i) {
        waiting[d] -= 1;
        if waiting[d] == 0 {
            queue.push_back(d);
        }
    }
}

/// The undo's attempts under its retry policy and timeout; the number of attempts on success.
async fn attempts(
    undo: &UndoSpec,
    request: Request,
    providers: &Providers,
    dry: bool,
    state: Option<&dyn crate::state::StateBackend>,
) -> Result<u32, Failure> {
    let spec = providers.spec(&undo.action.provider, &undo.action.action);
    if let Some(spec) = &spec {
        let problems = crate::provider::params::check_rendered(spec, &request.params);
        if !problems.is_empty() {
            return Err(Failure::permanent(problems.join("; ")));
        }
    }
    if dry {
        tokio::time::sleep(spec.map_or(EXTERNAL_SIM_DEFAULT, |s| s.sim_default)).await;
        return Ok(1);
    }
    let plugin;
    let provider: &dyn Provider = match providers.builtin(&undo.action.provider) {
        Some(p) => p,
        None => {
            plugin = providers
                .plugin(&undo.action.provider)
                .map_err(Failure::permanent)?;
            plugin.as_ref()
        }
    };
    let policy = &undo.retry;
    let mut delay = policy.delay;
    let outer = request.cancel.clone();
    let mut attempt = 1;
    loop {
        let cancel = outer.child_token();
        let mut this = request.clone();
        this.attempt = attempt;
        this.cancel = cancel.clone();
        let failure = match with_timeout(provider.invoke(this), undo.timeout, &cancel).await {
            Ok(_) => return Ok(attempt),
            Err(f) => f,
        };
        if outer.is_cancelled() || attempt >= policy.attempts || !failure.retryable {
            let tries = if attempt > 1 {
                format!(" (after {attempt} attempts)")
            } else {
                String::new()
            };
            return Err(Failure {
                message: format!("{}{tries}", failure.message),
                ..failure
            });
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = outer.cancelled() => return Err(failure),
        }
        delay = policy.next_delay(delay);
        attempt += 1;
        // A retry is a new effect: not once this session's lease has lapsed.
        if let Some(Err(e)) = state.map(|s| s.may_start()) {
            return Err(Failure::permanent(format!("not tried again: {e}")));
        }
    }
}
