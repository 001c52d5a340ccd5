//! Reports of a recorded run — the evidence of a DR test — built from its journal alone (the
//! runbook may have changed since): who ran it and approved what, when each step ran against its
//! prediction, what failed and why, what was rolled back, and the total against the RTO.
//! Rendered as text, Markdown, JSON, JUnit XML or a self-contained HTML page with a Gantt chart.

pub mod history;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod text;

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::journal::record::{RunStatus, StepStatus};
use crate::journal::{ReadJournal, Record};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub runbook: String,
    pub file: String,
    pub hash: String,
    pub mode: String,
    pub seed: u64,
    pub operator: String,
    pub started_at: String,
    pub inputs: Map<String, Json>,
    /// succeeded, failed, interrupted, or incomplete (no end recorded: a crash).
    pub status: String,
    pub duration_ms: u64,
    pub rto_ms: Option<u64>,
    pub rto_met: Option<bool>,
    /// Predicted duration under the run's limits, from the runbook's estimates.
    pub predicted_ms: u64,
    pub critical_path: Vec<String>,
    pub steps: Vec<StepRow>,
    /// Each included module over its steps (nested ones too), in order of first step.
    pub modules: Vec<ModuleRow>,
    pub approvals: Vec<ApprovalRow>,
    pub rollback: Option<RollbackRow>,
    pub resumes: Vec<ResumeRow>,
    pub interruptions: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub id: String,
    pub name: Option<String>,
    pub uses: String,
    /// succeeded, failed, skipped, cancelled, or not run.
    pub status: String,
    pub attempts: u32,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    /// The runbook's estimate (sim.duration or the action's default).
    pub estimate_ms: u64,
    pub predicted_start_ms: u64,
    /// Median actual duration over earlier real runs, when there are any.
    pub history_ms: Option<u64>,
    pub critical: bool,
    pub error: Option<String>,
    /// Last lines of the failed step's output.
    pub log_tail: Option<String>,
    /// The module the step was included from.
    pub module: Option<String>,
}

/// An included module: when its steps ran, against when they were predicted to.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleRow {
    pub id: String,
    pub steps: usize,
    /// failed if any step failed, else not run / running as the steps are, else succeeded.
    pub status: String,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub predicted_start_ms: u64,
    pub predicted_end_ms: u64,
}

impl ModuleRow {
    /// One row per module the steps name, and per module enclosing one (`a` of `a.b`).
    fn from_steps(steps: &[StepRow]) -> Vec<ModuleRow> {
        let mut ids: Vec<&str> = Vec::new();
        for m in steps.iter().filter_map(|s| s.module.as_deref()) {
            let enclosing = m.match_indices('.').map(|(at, _)| &m[..at]);
            for id in enclosing.chain([m]) {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        ids.into_iter()
            .map(|id| {
                let members: Vec<&StepRow> = steps
                    .iter()
                    .filter(|s| {
                        s.module.as_deref().is_some_and(|m| {
                            m == id || m.strip_prefix(id).is_some_and(|r| r.starts_with('.'))
                        })
                    })
                    .collect();
                let any = |status: &str| members.iter().any(|s| s.status == status);
                let status = if any("failed") {
                    "failed"
                } else if any("cancelled") {
                    "cancelled"
                } else if any("not run") || any("running") {
                    "incomplete"
                } else if members.iter().all(|s| s.status == "skipped") {
                    "skipped"
                } else {
                    "succeeded"
                };
                ModuleRow {
                    id: id.to_string(),
                    steps: members.len(),
                    status: status.to_string(),
                    start_ms: members.iter().filter_map(|s| s.start_ms).min(),
                    end_ms: members.iter().filter_map(|s| s.end_ms).max(),
                    predicted_start_ms: members
                        .iter()
                        .map(|s| s.predicted_start_ms)
                        .min()
                        .unwrap_or(0),
                    predicted_end_ms: members
                        .iter()
                        .map(|s| s.predicted_start_ms + s.estimate_ms)
                        .max()
                        .unwrap_or(0),
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRow {
    pub step: String,
    pub approver: String,
    /// How it was given: in advance, at the terminal, with `ripcord approve`.
    pub via: Option<String>,
    pub comment: Option<String>,
    pub at: Option<String>,
    pub t_ms: u64,
    pub simulated: bool,
}

impl ApprovalRow {
    /// `alice@h, with ripcord approve: "lag checked"`.
    pub fn who(&self) -> String {
        let mut text = self.approver.clone();
        if let Some(via) = &self.via {
            text.push_str(&format!(", {via}"));
        }
        if let Some(c) = &self.comment {
            text.push_str(&format!(": \"{c}\""));
        }
        text
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackRow {
    pub status: String,
    /// Who ran it, and when (wall clock).
    pub by: Option<String>,
    pub at: Option<String>,
    /// `--force --reason`: why, and past what.
    pub forced: Option<crate::journal::record::Forced>,
    pub actions: Vec<UndoRow>,
}

impl RollbackRow {
    /// `failed, by alice@h at T; FORCED past irreversible step x: "reason"`.
    pub fn headline(&self) -> String {
        let mut text = self.status.clone();
        if let Some(by) = &self.by {
            text.push_str(&format!(", by {by}"));
        }
        if let Some(at) = &self.at {
            text.push_str(&format!(" at {at}"));
        }
        if let Some(f) = &self.forced {
            text.push_str(&format!(
                "; FORCED past {}: \"{}\"",
                f.past.join(" and "),
                f.reason
            ));
        }
        text
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UndoRow {
    pub step: String,
    pub status: String,
    pub t_ms: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResumeRow {
    pub at: String,
    pub operator: String,
    pub t_ms: u64,
}

/// Lines of a failed step's output kept in the report.
const LOG_TAIL_LINES: usize = 20;

fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Interrupted => "interrupted",
    }
}

/// Builds the report of a run; `history` gives earlier real runs' median step durations.
pub fn build(read: &ReadJournal, history: &HashMap<String, u64>) -> Option<Report> {
    let header = read.header()?;
    let mut steps: Vec<StepRow> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut critical_path = Vec::new();
    let mut approvals = Vec::new();
    let mut rollback: Option<RollbackRow> = None;
    let mut resumes = Vec::new();
    let mut interruptions = Vec::new();
    let mut notes = Vec::new();
    let mut status = "incomplete".to_string();
    let mut last_ms = 0;
    let row = |steps: &mut Vec<StepRow>, index: &mut HashMap<String, usize>, id: &str| -> usize {
        *index.entry(id.to_string()).or_insert_with(|| {
            steps.push(StepRow {
                id: id.to_string(),
                name: None,
                uses: String::new(),
                status: "not run".into(),
                attempts: 0,
                start_ms: None,
                end_ms: None,
                duration_ms: None,
                estimate_ms: 0,
                predicted_start_ms: 0,
                history_ms: history.get(id).copied(),
                critical: false,
                error: None,
                log_tail: None,
                module: None,
            });
            steps.len() - 1
        })
    };
    for r in &read.records[1..] {
        last_ms = last_ms.max(r.t_ms());
        match r {
            Record::Planned {
                steps: planned,
                critical_path: path,
            } => {
                for p in planned {
                    let i = row(&mut steps, &mut index, &p.id);
                    let s = &mut steps[i];
                    s.name = p.name.clone();
                    s.uses = p.uses.clone();
                    s.estimate_ms = p.estimate_ms;
                    s.predicted_start_ms = p.predicted_start_ms;
                    s.module = p.module.clone();
                }
                for id in path {
                    let i = row(&mut steps, &mut index, id);
                    steps[i].critical = true;
                }
                critical_path = path.clone();
            }
            Record::StepStarted {
                t_ms,
                step,
                attempt,
            } => {
                let i = row(&mut steps, &mut index, step);
                let s = &mut steps[i];
                if *attempt == 1 {
                    s.start_ms = Some(*t_ms);
                    s.end_ms = None;
                }
                s.status = "running".into();
            }
            Record::StepFinished {
                t_ms,
                step,
                status: st,
                attempts,
                started_ms,
                outputs,
                error,
            } => {
                let i = row(&mut steps, &mut index, step);
                let s = &mut steps[i];
                s.status = st.as_str().into();
                s.attempts = *attempts;
                s.start_ms = Some(*started_ms);
                s.end_ms = Some(*t_ms);
                s.duration_ms = Some(t_ms.saturating_sub(*started_ms));
                s.error = error.clone();
                s.log_tail = (*st == StepStatus::Failed)
                    .then(|| log_tail(outputs))
                    .flatten();
                // A step's `note` output is meant for the report (a data-loss window, say).
                if let Some(note) = outputs
                    .get("note")
                    .and_then(Json::as_str)
                    .filter(|n| !n.is_empty())
                {
                    notes.push(format!("{step}: {note}"));
                }
            }
            Record::Approval {
                t_ms,
                step,
                approver,
                at,
                simulated,
                via,
                comment,
                ..
            } => approvals.push(ApprovalRow {
                step: step.clone(),
                approver: approver.clone(),
                via: via.clone(),
                comment: comment.clone(),
                at: at.clone(),
                t_ms: *t_ms,
                simulated: *simulated,
            }),
            Record::Interrupted { t_ms, signal } => {
                interruptions.push(format!("{signal} at {}", t_ms))
            }
            Record::RunFinished { status: st, .. } => status = status_name(*st).into(),
            Record::Resumed {
                t_ms, at, operator, ..
            } => {
                resumes.push(ResumeRow {
                    at: at.clone(),
                    operator: operator.clone(),
                    t_ms: *t_ms,
                });
                status = "incomplete".into();
            }
            Record::RollbackStarted { at, by, forced, .. } => {
                let row = rollback.get_or_insert_with(|| RollbackRow {
                    status: "incomplete".into(),
                    by: None,
                    at: None,
                    forced: None,
                    actions: Vec::new(),
                });
                // A rollback run again (after an interruption) adds its own session.
                row.by = by.as_ref().map(ToString::to_string).or(row.by.take());
                row.at = Some(at.clone());
                if forced.is_some() {
                    row.forced = forced.clone();
                }
            }
            Record::UndoFinished {
                t_ms,
                step,
                status: st,
                error,
            } => {
                if let Some(rb) = rollback.as_mut() {
                    rb.actions.push(UndoRow {
                        step: step.clone(),
                        status: st.as_str().into(),
                        t_ms: *t_ms,
                        error: error.clone(),
                    });
                }
            }
            Record::RollbackFinished { status: st, .. } => {
                if let Some(rb) = rollback.as_mut() {
                    rb.status = status_name(*st).into();
                }
            }
            Record::RunNote { message, .. } => notes.push(message.clone()),
            Record::ApprovalRejected {
                step, by, comment, ..
            } => notes.push(format!(
                "{step}: rejected by {by}{}",
                comment
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default()
            )),
            Record::AnswerRefused {
                step, by, reason, ..
            } => notes.push(format!("{step}: answer by {by} not taken: {reason}")),
            Record::RunStarted { .. }
            | Record::ApprovalWaiting { .. }
            | Record::AttemptFailed { .. }
            | Record::UndoStarted { .. } => {}
        }
    }
    // A step still "running" when the journal ends was in doubt (a crash).
    for s in &mut steps {
        if s.status == "running" {
            s.status = "in doubt".into();
        }
    }
    let end_of_run = read
        .records
        .iter()
        .filter(|r| {
            !matches!(
                r,
                Record::RollbackStarted { .. }
                    | Record::UndoStarted { .. }
                    | Record::UndoFinished { .. }
                    | Record::RollbackFinished { .. }
            )
        })
        .map(Record::t_ms)
        .max()
        .unwrap_or(last_ms);
    let rto_met = match (&header.rto_ms, status.as_str()) {
        (Some(rto), "succeeded") => Some(end_of_run <= *rto),
        (Some(_), _) => Some(false),
        _ => None,
    };
    Some(Report {
        run_id: header.run_id,
        runbook: header.runbook,
        file: header.file,
        hash: header.hash,
        mode: header.mode.as_str().into(),
        seed: header.seed,
        operator: header.operator,
        started_at: header.started_at,
        inputs: header.inputs,
        status,
        duration_ms: end_of_run,
        rto_ms: header.rto_ms,
        rto_met,
        predicted_ms: header.predicted_ms,
        critical_path,
        modules: ModuleRow::from_steps(&steps),
        steps,
        approvals,
        rollback,
        resumes,
        interruptions,
        notes,
    })
}

/// The last lines of stderr (or stdout when stderr is empty).
fn log_tail(outputs: &Map<String, Json>) -> Option<String> {
    let pick = |k: &str| {
        outputs
            .get(k)
            .and_then(Json::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    let text = pick("stderr").or_else(|| pick("stdout"))?;
    let lines: Vec<&str> = text.lines().collect();
    Some(lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n"))
}

impl Report {
    pub fn count(&self, status: &str) -> usize {
        self.steps.iter().filter(|s| s.status == status).count()
    }
}
