//! Reports of a recorded run — the evidence of a DR test — built from its journal alone (the
//! runbook may have changed since, and later runs change nothing): every session that worked
//! on the run (the run, each resume, each rollback) and how it ended, crashes included; who ran
//! it and approved what; every try of every step across sessions, with its error and the end of
//! its stderr; the outputs steps recorded; what was rolled back, by whom and why; and the
//! wall-clock time from the first session's start to the last one's end, gaps included, against
//! the RTO. Rendered as text, Markdown, JSON, JUnit XML or a self-contained HTML page.

pub mod gantt;
pub mod history;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod sessions;
pub mod text;

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::journal::record::{Forced, Mode, RunStatus, StepStatus, output_tail};
use crate::journal::{ReadJournal, Record};
use sessions::{SessionRow, Timeline};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub runbook: String,
    pub file: String,
    pub hash: String,
    pub mode: String,
    /// The runbook's mode the run was in (`planned`, `test`...), when it has `modes:`.
    pub run_mode: Option<String>,
    pub seed: u64,
    /// Who started the run.
    pub operator: String,
    pub started_at: String,
    /// The inputs the run started with (secrets masked); a later session's overrides are in
    /// its entry of `sessions`.
    pub inputs: Map<String, Json>,
    /// succeeded, failed, interrupted, or incomplete (no end recorded: a crash).
    pub status: String,
    /// Every session that worked on the run, in order.
    pub sessions: Vec<SessionRow>,
    /// From the first session's start to the last session's end, gaps between sessions
    /// included (virtual time in a dry-run). The RTO is judged on it.
    pub wall_ms: u64,
    /// The same as `wall_ms` (the name the first reports used).
    pub duration_ms: u64,
    pub rto_ms: Option<u64>,
    /// Whether the run recovered within the RTO: succeeded, not rolled back, and `wall_ms` at
    /// most the RTO. None without an RTO, and for a pre-flight (`--check`), which recovers
    /// nothing.
    pub rto_met: Option<bool>,
    /// Predicted duration under the run's limits, from the runbook's estimates when it started.
    pub predicted_ms: u64,
    pub critical_path: Vec<String>,
    pub steps: Vec<StepRow>,
    /// Each included module over its steps (nested ones too), in order of first step.
    pub modules: Vec<ModuleRow>,
    /// Approvals given and refused, in order.
    pub approvals: Vec<ApprovalRow>,
    pub rollback: Option<RollbackRow>,
    /// What steps recorded for the report (their `note` output: a data-loss window, say).
    pub step_notes: Vec<StepNote>,
    /// In-doubt decisions, warnings, answers not taken.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepNote {
    pub step: String,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub id: String,
    pub name: Option<String>,
    pub uses: String,
    /// succeeded, failed, skipped, cancelled, in doubt, or not run: where the step ended.
    pub status: String,
    /// How many times it ran, over every session (`tries.len()`).
    pub attempts: u32,
    /// Every attempt in every session, in order.
    pub tries: Vec<TryRow>,
    /// The window of the step's last run, in ms since the run started (wall clock).
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    /// The runbook's estimate (sim.duration or the action's default).
    pub estimate_ms: u64,
    pub predicted_start_ms: u64,
    pub critical: bool,
    /// Why it ended as it did, when it did not succeed.
    pub error: Option<String>,
    /// Last lines of the failed step's output.
    pub log_tail: Option<String>,
    /// The module the step was included from.
    pub module: Option<String>,
    /// What the step's last run gave (secrets masked as in the journal).
    pub outputs: Map<String, Json>,
}

/// One attempt of a step.
#[derive(Debug, Clone, Serialize)]
pub struct TryRow {
    /// The session it ran in: 1 for the first run, then each resume and rollback in turn.
    pub session: usize,
    /// The attempt's number within its session.
    pub attempt: u32,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    /// succeeded, failed, cancelled, or in doubt (its session stopped with no end recorded).
    pub status: String,
    pub error: Option<String>,
    /// The end of a failed try's stderr (or stdout).
    pub stderr_tail: Option<String>,
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
    /// approved or rejected.
    pub decision: String,
    pub approver: String,
    /// How it was given: in advance, at the terminal, with `ripcord approve`.
    pub via: Option<String>,
    pub comment: Option<String>,
    pub at: Option<String>,
    pub t_ms: u64,
    pub session: usize,
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
    /// succeeded, failed, interrupted, or incomplete (its session crashed).
    pub status: String,
    /// Who ran it, and when (wall clock): the last rollback session's.
    pub by: Option<String>,
    pub at: Option<String>,
    /// The rollback sessions (numbers in `sessions`).
    pub sessions: Vec<usize>,
    /// `--force --reason`: why, and past what.
    pub forced: Option<Forced>,
    /// The cleanup of a run of a `cleanup_modes:` mode that had succeeded (a DR test's): the
    /// run's own result and RTO stand.
    pub cleanup: bool,
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
                "; FORCED (\"{}\") past: {}",
                f.reason,
                f.past.join("; ")
            ));
        }
        text
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UndoRow {
    pub step: String,
    pub status: String,
    /// When it ended, in ms since the run started (wall clock).
    pub t_ms: u64,
    pub session: usize,
    pub error: Option<String>,
}

pub fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Interrupted => "interrupted",
    }
}

/// Builds the report of a run from its journal.
pub fn build(read: &ReadJournal) -> Option<Report> {
    let header = read.header()?;
    // An intent whose launch record may have been lost reads as the start it may have been.
    let now = crate::journal::intent::boot_id();
    let lost = crate::journal::intent::lost_launches(&read.records, now.as_deref());
    let records = crate::journal::intent::as_read(&read.records, &lost);
    let timeline = Timeline::of(&records);
    let at = |i: usize| timeline.offset(i);
    let mut steps: Vec<StepRow> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut critical_path = Vec::new();
    let mut approvals = Vec::new();
    let mut rollback: Option<RollbackRow> = None;
    let mut step_notes = Vec::new();
    let mut notes = Vec::new();
    let mut status = "incomplete".to_string();
    let row = |steps: &mut Vec<StepRow>, index: &mut HashMap<String, usize>, id: &str| -> usize {
        *index.entry(id.to_string()).or_insert_with(|| {
            steps.push(StepRow {
                id: id.to_string(),
                name: None,
                uses: String::new(),
                status: "not run".into(),
                attempts: 0,
                tries: Vec::new(),
                start_ms: None,
                end_ms: None,
                duration_ms: None,
                estimate_ms: 0,
                predicted_start_ms: 0,
                critical: false,
                error: None,
                log_tail: None,
                module: None,
                outputs: Map::new(),
            });
            steps.len() - 1
        })
    };
    for (n, r) in records.iter().enumerate().skip(1) {
        let session = timeline.session_of(n);
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
            Record::StepStarted { step, attempt, .. } => {
                let i = row(&mut steps, &mut index, step);
                let s = &mut steps[i];
                let start = at(n);
                if *attempt == 1 {
                    s.start_ms = Some(start);
                    s.end_ms = None;
                    s.duration_ms = None;
                }
                s.status = "running".into();
                s.tries.push(TryRow {
                    session,
                    attempt: *attempt,
                    started_at: timeline.wall(start),
                    ended_at: None,
                    start_ms: start,
                    end_ms: None,
                    status: "running".into(),
                    error: None,
                    stderr_tail: None,
                });
            }
            Record::AttemptFailed {
                step,
                attempt,
                error,
                stderr_tail,
                ..
            } => {
                let i = row(&mut steps, &mut index, step);
                let end = at(n);
                if let Some(t) = steps[i]
                    .tries
                    .iter_mut()
                    .rev()
                    .find(|t| t.session == session && t.attempt == *attempt)
                {
                    t.status = "failed".into();
                    t.end_ms = Some(end);
                    t.ended_at = timeline.wall(end);
                    t.error = Some(error.clone());
                    t.stderr_tail = stderr_tail.clone();
                }
            }
            Record::StepFinished {
                step,
                status: st,
                started_ms,
                outputs,
                error,
                ..
            } => {
                let i = row(&mut steps, &mut index, step);
                let s = &mut steps[i];
                let end = at(n);
                let start = timeline.offset_in(session, *started_ms).min(end);
                s.status = st.as_str().into();
                s.start_ms = Some(start);
                s.end_ms = Some(end);
                s.duration_ms = Some(end - start);
                s.error = error.clone();
                s.outputs = outputs.clone();
                s.log_tail = matches!(st, StepStatus::Failed | StepStatus::Cancelled)
                    .then(|| output_tail(outputs))
                    .flatten();
                // The try this ends (a retry's failure was recorded by AttemptFailed already).
                if let Some(t) = s
                    .tries
                    .iter_mut()
                    .rev()
                    .find(|t| t.session == session && t.end_ms.is_none())
                {
                    t.status = st.as_str().into();
                    t.end_ms = Some(end);
                    t.ended_at = timeline.wall(end);
                    if t.error.is_none() {
                        t.error = error.clone();
                    }
                    if t.stderr_tail.is_none() {
                        t.stderr_tail = s.log_tail.clone();
                    }
                }
                // A step's `note` output is meant for the report (a data-loss window, say).
                if let Some(note) = outputs
                    .get("note")
                    .and_then(Json::as_str)
                    .filter(|n| !n.is_empty())
                {
                    // A step run again says it anew: its last run's note is the one that holds.
                    step_notes.retain(|n: &StepNote| n.step != *step);
                    step_notes.push(StepNote {
                        step: step.clone(),
                        note: note.to_string(),
                    });
                }
            }
            Record::Approval {
                step,
                approver,
                at: when,
                simulated,
                via,
                comment,
                ..
            } => approvals.push(ApprovalRow {
                step: step.clone(),
                decision: "approved".into(),
                approver: approver.clone(),
                via: via.clone(),
                comment: comment.clone(),
                at: when.clone(),
                t_ms: at(n),
                session,
                simulated: *simulated,
            }),
            Record::ApprovalRejected {
                step, by, comment, ..
            } => approvals.push(ApprovalRow {
                step: step.clone(),
                decision: "rejected".into(),
                approver: by.to_string(),
                via: None,
                comment: comment.clone(),
                at: timeline.wall(at(n)),
                t_ms: at(n),
                session,
                simulated: false,
            }),
            Record::AnswerRefused {
                step, by, reason, ..
            } => notes.push(format!("{step}: answer by {by} not taken: {reason}")),
            Record::RunFinished { status: st, .. } => status = status_name(*st).into(),
            Record::Resumed { .. } => status = "incomplete".into(),
            Record::RollbackStarted {
                at: when,
                by,
                forced,
                cleanup,
                ..
            } => {
                let row = rollback.get_or_insert_with(|| RollbackRow {
                    status: "incomplete".into(),
                    by: None,
                    at: None,
                    sessions: Vec::new(),
                    forced: None,
                    cleanup: *cleanup,
                    actions: Vec::new(),
                });
                // A rollback run again (after an interruption) is a session of its own.
                row.status = "incomplete".into();
                row.by = by.as_ref().map(ToString::to_string).or(row.by.take());
                row.at = Some(when.clone());
                row.sessions.push(session);
                if forced.is_some() {
                    row.forced = forced.clone();
                }
            }
            Record::UndoStarted { step, .. } => {
                if let Some(rb) = rollback.as_mut() {
                    rb.actions.push(UndoRow {
                        step: step.clone(),
                        status: "running".into(),
                        t_ms: at(n),
                        session,
                        error: None,
                    });
                }
            }
            Record::UndoFinished {
                step,
                status: st,
                error,
                ..
            } => {
                if let Some(rb) = rollback.as_mut() {
                    let row = UndoRow {
                        step: step.clone(),
                        status: st.as_str().into(),
                        t_ms: at(n),
                        session,
                        error: error.clone(),
                    };
                    // The end of the undo this session started (journals before undo starts
                    // were reported have none).
                    match rb
                        .actions
                        .iter_mut()
                        .rev()
                        .find(|a| a.step == *step && a.session == session && a.status == "running")
                    {
                        Some(started) => *started = row,
                        None => rb.actions.push(row),
                    }
                }
            }
            Record::RollbackFinished { status: st, .. } => {
                if let Some(rb) = rollback.as_mut() {
                    rb.status = status_name(*st).into();
                }
            }
            Record::RunNote { message, .. } => notes.push(message.clone()),
            Record::RunStarted { .. }
            | Record::ApprovalWaiting { .. }
            | Record::StepIntent { .. }
            | Record::Interrupted { .. } => {}
        }
    }
    for &n in &lost {
        if let Record::StepIntent { step, .. } = &read.records[n] {
            notes.push(format!(
                "{step}: about to start when its session stopped, which ran before a restart of \
                 the machine (or on another machine): its start record may have been lost, so it \
                 is in doubt"
            ));
        }
    }
    // A try still running when its session ended: cancelled by an interrupt that recorded no
    // end for it, or in doubt (the session crashed: its effect is unknown).
    for s in &mut steps {
        for t in s.tries.iter_mut().filter(|t| t.status == "running") {
            t.status = "in doubt".into();
            t.end_ms = Some(timeline.sessions[t.session - 1].end_ms);
        }
        if s.status == "running" {
            s.status = "in doubt".into();
        }
        s.attempts = s.tries.len() as u32;
    }
    // An undo started with no end recorded: its effect is unknown.
    for a in rollback.iter_mut().flat_map(|rb| rb.actions.iter_mut()) {
        if a.status == "running" {
            a.status = "in doubt".into();
            a.error = Some("started, no end recorded: its effect is unknown".into());
        }
    }
    notes.extend(timeline.notes.iter().cloned());
    let wall_ms = timeline.wall_ms();
    let check = header.mode == Mode::Check;
    let mut report = Report {
        run_id: header.run_id,
        runbook: header.runbook,
        file: header.file,
        hash: header.hash,
        mode: header.mode.as_str().into(),
        run_mode: header.run_mode,
        seed: header.seed,
        operator: header.operator,
        started_at: header.started_at,
        inputs: header.inputs,
        status,
        sessions: timeline.sessions,
        wall_ms,
        duration_ms: wall_ms,
        rto_ms: header.rto_ms,
        rto_met: None,
        predicted_ms: header.predicted_ms,
        critical_path,
        modules: ModuleRow::from_steps(&steps),
        steps,
        approvals,
        rollback,
        step_notes,
        notes,
    };
    // A cleanup (a DR test's rollback) leaves the run's result: judged up to the cleanup.
    let cleanup = report.rollback.as_ref().is_some_and(|rb| rb.cleanup);
    report.rto_met = match report.rto_ms {
        Some(rto) if !check => Some(
            report.status == "succeeded"
                && (report.rollback.is_none() || cleanup)
                && report.judged_ms() <= rto,
        ),
        _ => None,
    };
    Some(report)
}

impl Report {
    /// The time the RTO is judged on: the run's wall-clock time, or for a run whose rollback was
    /// its cleanup (a DR test), its time up to the cleanup.
    pub fn judged_ms(&self) -> u64 {
        if !self.rollback.as_ref().is_some_and(|rb| rb.cleanup) {
            return self.wall_ms;
        }
        self.sessions
            .iter()
            .filter(|s| s.kind != "rollback")
            .map(|s| s.end_ms)
            .max()
            .unwrap_or(self.wall_ms)
    }

    pub fn count(&self, status: &str) -> usize {
        self.steps.iter().filter(|s| s.status == status).count()
    }

    /// Tries that failed, over every session, with their step: what went wrong on the way,
    /// even where a later try succeeded.
    pub fn failed_tries(&self) -> impl Iterator<Item = (&StepRow, &TryRow)> {
        self.steps.iter().flat_map(|s| {
            s.tries
                .iter()
                .filter(|t| t.status != "succeeded" && t.status != "running")
                .map(move |t| (s, t))
        })
    }

    /// Sessions that ended by crashing.
    pub fn crashed(&self) -> impl Iterator<Item = &SessionRow> {
        self.sessions.iter().filter(|s| s.end == "crashed")
    }

    /// What an auditor must not miss, in every format: a rollback forced past an irreversible
    /// step (what that step did stands: a promoted standby is still a primary), undos that did
    /// not succeed.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = self.rollback.as_ref().and_then(|rb| rb.forced.as_ref()) {
            let irreversible: Vec<&String> = f
                .past
                .iter()
                .filter(|p| p.contains("irreversible"))
                .collect();
            if !irreversible.is_empty() {
                out.push(format!(
                    "the rollback was forced past {}: what that did was not undone and still \
                     stands (a promoted standby is still a primary); check the system's state",
                    irreversible
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
        // An undo that did not succeed, unless a later rollback did it.
        let undone_later = |u: &UndoRow| {
            self.rollback
                .iter()
                .flat_map(|rb| rb.actions.iter())
                .any(|a| a.step == u.step && a.session > u.session && a.status == "succeeded")
        };
        for u in self.failed_undos().filter(|u| !undone_later(u)) {
            out.push(format!(
                "the undo of {} {}{}",
                u.step,
                u.status,
                u.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        out
    }

    /// Undos that did not succeed (failed, cancelled, in doubt).
    pub fn failed_undos(&self) -> impl Iterator<Item = &UndoRow> {
        self.rollback
            .iter()
            .flat_map(|rb| rb.actions.iter())
            .filter(|a| a.status != "succeeded")
    }

    /// The end of the run's own sessions (not its rollbacks): when it recovered, or stopped.
    pub fn run_end_ms(&self) -> u64 {
        self.sessions
            .iter()
            .filter(|s| s.kind != "rollback")
            .map(|s| s.end_ms)
            .max()
            .unwrap_or(0)
    }

    /// A session whose journal just stops may be one still at work: when the run's lock is held
    /// now (`live`), its last session is running, not crashed, and what it has started is
    /// running, not in doubt.
    pub fn mark_live(&mut self, live: bool) {
        let Some(last) = self
            .sessions
            .last_mut()
            .filter(|s| live && s.end == "crashed")
        else {
            return;
        };
        last.end = "running".into();
        last.ended_at = None;
        let n = last.session;
        if last.kind == "rollback" {
            if let Some(rb) = self.rollback.as_mut() {
                rb.status = "running".into();
                for a in rb
                    .actions
                    .iter_mut()
                    .filter(|a| a.session == n && a.status == "in doubt")
                {
                    a.status = "running".into();
                    a.error = None;
                }
            }
        } else {
            self.status = "running".into();
        }
        for s in &mut self.steps {
            for t in s
                .tries
                .iter_mut()
                .filter(|t| t.session == n && t.status == "in doubt")
            {
                t.status = "running".into();
            }
            if s.status == "in doubt" && s.tries.last().is_some_and(|t| t.status == "running") {
                s.status = "running".into();
            }
        }
        self.rto_met = None;
    }
}

impl Report {
    /// How it ran, and in which of the runbook's modes: `real`, `real, mode test`.
    pub fn how(&self) -> String {
        match &self.run_mode {
            Some(m) => format!("{}, mode {m}", self.mode),
            None => self.mode.clone(),
        }
    }
}
