//! `ripcord approve RUN_ID STEP [--reject] [--comment TEXT]`: answers a run's waiting
//! `approval.ask` from another shell. The answer is posted to the run's state, bound to the wait
//! it answers (the `ask` of the run's `approval_waiting` record, so it can never approve a later
//! wait), and the running ripcord takes it: it checks the step's `approvers`,
//! `not_by_operator` and `min_approvals` and journals the answer. This command waits until the
//! answer is in the journal and says what became of it.
//!
//! Exit: 0 taken (approved or rejected as asked), 1 not taken in time, 2 no such wait (unknown
//! step, answered, the run finished or was rolled back) or an answer the step would refuse (not
//! an approver, the run's own operator, twice from one person), 4 the run crashed while waiting
//! (resume it, then answer the new wait).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::ApproveArgs;
use crate::error::{CommandError, CommandResult};
use crate::exit;
use crate::journal::{ReadJournal, Record};
use crate::session::identity::Identity;
use crate::state::{Answer, Scope, StateBackend};

pub fn run(args: &ApproveArgs) -> CommandResult {
    let state: Arc<dyn StateBackend> =
        crate::state::open(&args.state).map_err(|e| crate::invalid!("{e}"))?;
    let (read, header) = crate::session::read_recorded(state.as_ref(), &args.run_id)?;
    let again = state.again().to_string();
    let Some(wait) = open_wait(&read, &args.step) else {
        let waiting: Vec<String> = open_waits(&read).into_iter().map(|w| w.step).collect();
        let mut message = format!(
            "run {} is not waiting for approval of `{}`",
            args.run_id, args.step
        );
        if !waiting.is_empty() {
            message.push_str(&format!("\n  it waits for: {}", waiting.join(", ")));
        }
        return Err(CommandError::Invalid(message));
    };
    // Nobody is waiting if nobody holds the run: the answer would go to a wait that is over.
    let live = |state: &dyn StateBackend| {
        state
            .is_held(&Scope::Run(args.run_id.clone()))
            .map_err(|e| crate::invalid!("cannot tell whether run {} is running: {e}", args.run_id))
    };
    if !live(state.as_ref())? {
        return Err(crate::locked!(
            "run {} is not running (it crashed or was stopped while waiting): resume \
             it with `ripcord resume {}{again}` (with --takeover if its holder died and its \
             state is shared), then answer the new wait",
            args.run_id,
            args.run_id
        ));
    }
    let me = Identity::current();
    let person = me.person().to_string();
    if !wait.approvers.is_empty() && !wait.approvers.contains(&person) {
        return Err(crate::invalid!(
            "{person} may not answer `{}`: the approvers are {}",
            wait.step,
            wait.approvers.join(", ")
        ));
    }
    let starter = header.by.as_ref().map(|b| b.person().to_string());
    // The session waiting now was started by the last one to start or resume the run.
    let driver = read
        .records
        .iter()
        .rev()
        .find_map(|r| match r {
            Record::Resumed { by: Some(by), .. } => Some(by.person().to_string()),
            _ => None,
        })
        .or(starter.clone());
    if wait.not_by_operator && driver.as_deref() == Some(person.as_str()) && driver != starter {
        return Err(crate::invalid!(
            "{person} runs the session of run {} that waits and may not approve `{}` \
             (not_by_operator): another person must",
            args.run_id,
            wait.step
        ));
    }
    if wait.not_by_operator && starter.as_deref() == Some(person.as_str()) {
        return Err(crate::invalid!(
            "{person} started run {} and may not approve `{}` (not_by_operator): \
             another person must",
            args.run_id,
            wait.step
        ));
    }
    let already = read.records.iter().skip(wait.index).any(|r| {
        matches!(r, Record::Approval { step, by: Some(by), .. }
            if *step == wait.step && by.person() == person)
    });
    if already {
        return Err(crate::invalid!(
            "{person} has approved `{}` already; another person must give the next approval",
            wait.step
        ));
    }
    // What the run makes of this answer comes after what the journal holds now.
    let seen = read.records.len();
    let answer = Answer {
        id: String::new(),
        step: wait.step.clone(),
        ask: wait.ask.clone(),
        approve: !args.reject,
        comment: args.comment.clone(),
        by: me.clone(),
        at: crate::exec::now_rfc3339(),
    };
    if let Err(e) = state.post_answer(&args.run_id, &answer) {
        return Err(crate::invalid!("cannot post the answer: {e}"));
    }
    let deadline = Instant::now() + args.wait;
    let mut ended = false;
    loop {
        if let Ok(read) = state.read_run(&args.run_id)
            && let Some(taken) = taken(&read, seen.max(wait.index), &wait, &me)
        {
            return match taken {
                Taken::Approved => {
                    crate::println_quiet!(
                        "approved `{}` of run {} as {me}",
                        wait.step,
                        args.run_id
                    );
                    Ok(exit::OK)
                }
                Taken::Rejected => {
                    crate::println_quiet!(
                        "rejected `{}` of run {} as {me}: the step fails",
                        wait.step,
                        args.run_id
                    );
                    Ok(exit::OK)
                }
                Taken::Refused(reason) => {
                    Err(crate::invalid!("the run did not take the answer: {reason}"))
                }
            };
        }
        // The run ended (or its holder died and its lease lapsed) while this waited: one more
        // read of its journal (it may have taken the answer just before it ended), then say so.
        if ended {
            return Err(crate::locked!(
                "run {} stopped before it took the answer: resume it with `ripcord resume \
                 {}{again}` (with --takeover if its holder died), then answer the new wait",
                args.run_id,
                args.run_id
            ));
        }
        ended = !live(state.as_ref())?;
        if ended {
            continue;
        }
        if Instant::now() >= deadline {
            return Err(crate::failed!(
                "the run has not taken the answer within {}; it stays posted for this wait \
                 (see `ripcord report {}{again}`)",
                crate::runbook::duration::format(args.wait),
                args.run_id
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An approval the run waits for.
#[derive(Debug, Clone)]
struct Wait {
    step: String,
    ask: String,
    approvers: Vec<String>,
    not_by_operator: bool,
    /// Where in the journal it was recorded: answers to it come after.
    index: usize,
}

/// Every wait with no end recorded for its step after it.
fn open_waits(read: &ReadJournal) -> Vec<Wait> {
    let mut open: Vec<Wait> = Vec::new();
    for (index, r) in read.records.iter().enumerate() {
        match r {
            Record::ApprovalWaiting {
                step,
                ask,
                approvers,
                not_by_operator,
                ..
            } => {
                open.retain(|w| &w.step != step);
                open.push(Wait {
                    step: step.clone(),
                    ask: ask.clone(),
                    approvers: approvers.clone(),
                    not_by_operator: *not_by_operator,
                    index,
                });
            }
            Record::StepFinished { step, .. } => open.retain(|w| &w.step != step),
            // A wait of a session that ended is over: it is asked again on resume (and never
            // after a rollback).
            Record::Resumed { .. }
            | Record::RunFinished { .. }
            | Record::RollbackStarted { .. } => open.clear(),
            _ => {}
        }
    }
    open
}

fn open_wait(read: &ReadJournal, step: &str) -> Option<Wait> {
    open_waits(read).into_iter().find(|w| w.step == step)
}

enum Taken {
    Approved,
    Rejected,
    Refused(String),
}

/// What the run made of this person's answer, once it is in the journal.
fn taken(read: &ReadJournal, after: usize, wait: &Wait, me: &Identity) -> Option<Taken> {
    read.records.iter().skip(after).find_map(|r| match r {
        Record::Approval {
            step, by: Some(by), ..
        } if *step == wait.step && by.same_client(me) => Some(Taken::Approved),
        Record::ApprovalRejected { step, by, .. } if *step == wait.step && by.same_client(me) => {
            Some(Taken::Rejected)
        }
        Record::AnswerRefused {
            step, by, reason, ..
        } if *step == wait.step && by.same_client(me) => Some(Taken::Refused(reason.clone())),
        _ => None,
    })
}
