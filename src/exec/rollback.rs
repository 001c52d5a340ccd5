//! Rollback: the `undo` of every completed step, in reverse dependency order — a step's undo
//! waits for the undos of everything that depended on it — concurrently where the graph allows.
//! A failed undo blocks the undos of the steps it depended on (undoing those under a half-undone
//! dependent could make things worse); they are reported as not undone.

use std::collections::{HashSet, VecDeque};
use std::io;

use serde_json::{Map, Value as Json};
use tokio::task::JoinSet;

use crate::journal::record::{Mode, RunStatus, StepStatus};
use crate::journal::{Journal, Record};
use crate::plan::UndoSpec;
use crate::provider::catalog::EXTERNAL_SIM_DEFAULT;
use crate::provider::{Failure, Provider, Providers, Request};

use super::render::{self, Scope};
use super::state::{Status, StepState};
use super::ui::Sink;
use super::{Clock, RunContext, instances, now_rfc3339, run_json};

/// What a rollback did.
pub struct RollbackOutcome {
    pub status: RunStatus,
    pub undone: Vec<usize>,
    pub failed: Vec<usize>,
    /// Undos not attempted because an undo they wait for failed.
    pub blocked: Vec<usize>,
}

/// Runs the undos of the `states` that succeeded, except those in `already_undone`.
pub async fn rollback(
    cx: &RunContext,
    journal: &mut Journal,
    sink: &mut dyn Sink,
    states: &[StepState],
    already_undone: &HashSet<usize>,
    clock: Clock,
) -> io::Result<RollbackOutcome> {
    let plan = cx.plan.clone();
    let n = plan.steps.len();
    let target: Vec<bool> = (0..n)
        .map(|i| {
            states[i].status == Status::Done(StepStatus::Succeeded)
                && plan.steps[i].undo.is_some()
                && !already_undone.contains(&i)
        })
        .collect();
    let mut emit = |journal: &mut Journal, record: Record| -> io::Result<()> {
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
        },
    )?;
    // Reverse Kahn: a step is ready when every dependent is done (undone or nothing to undo).
    let mut waiting: Vec<usize> = (0..n).map(|i| plan.dependents(i).count()).collect();
    let mut queue: VecDeque<usize> = (0..n).rev().filter(|&i| waiting[i] == 0).collect();
    let env = render::environment();
    let instances = instances(&plan);
    let scope = Scope {
        plan: &plan,
        inputs: &cx.inputs,
        run: run_json(cx),
        states,
        instances: &instances,
        lenient_outputs: cx.mode == Mode::DryRun,
    };
    let mut tasks: JoinSet<(usize, Result<(), Failure>)> = JoinSet::new();
    let (mut undone, mut failed) = (Vec::new(), Vec::new());
    let mut done = vec![false; n];
    loop {
        while tasks.len() < cx.concurrency.max(1) {
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
            let ctx = scope.context(Some(i), &exprs);
            let params = match &undo.with {
                Some(w) => render::render_param(&env, w, &ctx),
                None => Ok(Json::Object(Map::new())),
            };
            emit(
                journal,
                Record::UndoStarted {
                    t_ms: clock.ms(),
                    step: plan.steps[i].id.clone(),
                },
            )?;
            journal.commit()?;
            let request = Request {
                action: undo.action.clone(),
                params: params.clone().unwrap_or(Json::Null),
                step: plan.steps[i].id.clone(),
                attempt: 1,
                run_id: cx.run_id.clone(),
                timeout: plan.steps[i].timeout,
                cancel: tokio_util::sync::CancellationToken::new(),
                check: false,
            };
            let providers = cx.providers.clone();
            let dry = cx.mode == Mode::DryRun;
            tasks.spawn(async move {
                let result = match params {
                    Err(e) => Err(Failure::permanent(format!(
                        "cannot render undo `with`: {e}"
                    ))),
                    Ok(_) => run_undo(&undo, request, &providers, dry).await,
                };
                (i, result)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let Ok((i, result)) = joined else { continue };
        let (status, error) = match result {
            Ok(()) => (StepStatus::Succeeded, None),
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
        if status == StepStatus::Succeeded {
            undone.push(i);
            complete(i, &plan, &mut waiting, &mut queue, &mut done);
        } else {
            failed.push(i);
        }
    }
    let blocked: Vec<usize> = (0..n)
        .filter(|&i| target[i] && !done[i] && !failed.contains(&i))
        .collect();
    let status = if failed.is_empty() && blocked.is_empty() {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    emit(
        journal,
        Record::RollbackFinished {
            t_ms: clock.ms(),
            status,
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
    plan: &crate::plan::Plan,
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

async fn run_undo(
    undo: &UndoSpec,
    request: Request,
    providers: &Providers,
    dry: bool,
) -> Result<(), Failure> {
    let spec = providers.spec(&undo.action.provider, &undo.action.action);
    if let Some(spec) = &spec {
        let problems = crate::compile::params::check_rendered(&spec.params, &request.params);
        if !problems.is_empty() {
            return Err(Failure::permanent(problems.join("; ")));
        }
    }
    if dry {
        tokio::time::sleep(spec.map_or(EXTERNAL_SIM_DEFAULT, |s| s.sim_default)).await;
        return Ok(());
    }
    let timeout = request.timeout;
    let invoked = match providers.builtin(&undo.action.provider) {
        Some(p) => tokio::time::timeout(timeout, p.invoke(request)).await,
        None => {
            let plugin = providers
                .plugin(&undo.action.provider)
                .map_err(Failure::permanent)?;
            tokio::time::timeout(timeout, plugin.invoke(request)).await
        }
    };
    match invoked {
        Ok(result) => result.map(drop),
        Err(_) => Err(Failure::permanent("undo timed out")),
    }
}
