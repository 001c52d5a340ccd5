//! What a journal line says. Times are `t_ms`: milliseconds since the run started (virtual
//! time in a dry-run); wall-clock times are RFC 3339 strings. A later session (resume,
//! rollback) of a real run starts its `t_ms` at the wall-clock time since the run started, so the
//! gap between sessions stays in the timeline.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::session::identity::Identity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Real,
    DryRun,
    /// Pre-flight: each step's read-only probe where its action has one; nothing changes.
    Check,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Real => "real",
            Mode::DryRun => "dry-run",
            Mode::Check => "check",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    Failed,
    Skipped,
    /// Stopped by an interrupt while running: its effect is unknown, like a step in doubt.
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    RunStarted {
        run_id: String,
        runbook: String,
        /// Absolute path of the runbook file, for resume.
        file: String,
        /// SHA-256 of the runbook text: resume refuses a changed file without --force.
        hash: String,
        mode: Mode,
        /// The runbook's mode this run is in (`--mode`, else its first), when it has `modes:`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_mode: Option<String>,
        /// The runbook's `locks:` scopes, held by every session of the run (resume and
        /// rollback take them again from here, whatever the runbook says now).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        locks: Vec<String>,
        seed: u64,
        /// `--fail-rate` of a dry-run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fail_rate: Option<f64>,
        /// Input values, secrets masked.
        inputs: Map<String, Json>,
        operator: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Identity>,
        pid: u32,
        started_at: String,
        concurrency: usize,
        steps: usize,
        rto_ms: Option<u64>,
        predicted_ms: u64,
    },
    /// The plan as compiled at the start, so the journal alone is the run's evidence: each
    /// step's estimate and predicted start, and the critical path.
    Planned {
        steps: Vec<PlannedStepRecord>,
        critical_path: Vec<String>,
    },
    Resumed {
        t_ms: u64,
        pid: u32,
        at: String,
        operator: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Identity>,
        /// Inputs given again on resume that change the recorded value (secrets masked).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        inputs: Map<String, Json>,
        /// The machine's boot id (see [`Record::StepIntent`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_id: Option<String>,
    },
    /// A step with a durable start is about to start: made durable before it begins, often
    /// while the step before it in the slot still runs, so the sync costs the step no time. The
    /// `step_started` that follows, as the step begins, is written but not synced. A killed
    /// ripcord leaves what it wrote with the kernel, so an intent with no `step_started` after
    /// it means the step never began, as long as the machine has not restarted since; after a
    /// restart (another `boot_id`), or read on another machine, the launch record may have been
    /// lost and the step is in doubt (see [`crate::journal::intent`]).
    StepIntent {
        t_ms: u64,
        step: String,
        /// `/proc/sys/kernel/random/boot_id` of the machine that wrote it; none if unreadable
        /// (then the step is in doubt whenever the intent is the last word on it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_id: Option<String>,
    },
    StepStarted {
        t_ms: u64,
        step: String,
        attempt: u32,
    },
    AttemptFailed {
        t_ms: u64,
        step: String,
        attempt: u32,
        error: String,
        retry_in_ms: Option<u64>,
        /// The last lines of the failed attempt's stderr (or stdout), secrets masked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stderr_tail: Option<String>,
        /// The attempt is known to have done nothing (ssh.run never reached its host).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        nothing_ran: bool,
    },
    StepFinished {
        t_ms: u64,
        step: String,
        status: StepStatus,
        attempts: u32,
        started_ms: u64,
        #[serde(default)]
        outputs: Map<String, Json>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Approval {
        t_ms: u64,
        step: String,
        approver: String,
        /// Wall-clock time of the approval; none in a dry-run (its time is virtual).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<String>,
        simulated: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Identity>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        /// How it was given: in advance (`--yes`, `--approve`), at the terminal, or with
        /// `ripcord approve`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// An approval step waits for answers: on the terminal, and from `ripcord approve` naming
    /// this `ask`.
    ApprovalWaiting {
        t_ms: u64,
        step: String,
        ask: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        approvers: Vec<String>,
        min_approvals: u32,
        not_by_operator: bool,
    },
    /// An allowed approver said no: the step fails.
    ApprovalRejected {
        t_ms: u64,
        step: String,
        by: Identity,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// An answer that does not count: from someone not allowed to give it.
    AnswerRefused {
        t_ms: u64,
        step: String,
        by: Identity,
        reason: String,
    },
    Interrupted {
        t_ms: u64,
        signal: String,
        /// Wall-clock time; none in a dry-run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<String>,
    },
    RunFinished {
        t_ms: u64,
        status: RunStatus,
        /// Wall-clock time of the session's end; none in a dry-run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<String>,
    },
    RollbackStarted {
        t_ms: u64,
        pid: u32,
        at: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Identity>,
        /// `--force --reason`: the rollback went past what would have refused it (an
        /// irreversible step that completed, a run that had succeeded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        forced: Option<Forced>,
        /// The cleanup of a run of a `cleanup_modes:` mode that succeeded (a DR test's).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cleanup: bool,
        /// Inputs given to the rollback that change the recorded value (secrets masked).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        inputs: Map<String, Json>,
        /// The machine's boot id (see [`Record::StepIntent`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        boot_id: Option<String>,
    },
    UndoStarted {
        t_ms: u64,
        step: String,
    },
    UndoFinished {
        t_ms: u64,
        step: String,
        status: StepStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    RollbackFinished {
        t_ms: u64,
        status: RunStatus,
        /// Wall-clock time of the session's end; none in a dry-run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<String>,
    },
    /// Anything worth keeping for the report: in-doubt decisions, warnings.
    RunNote {
        t_ms: u64,
        message: String,
    },
}

/// Why a rollback was forced, and past what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forced {
    pub reason: String,
    /// What it went past: `irreversible step promote.promote succeeded`, `the run succeeded`.
    pub past: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStepRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub uses: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    pub estimate_ms: u64,
    pub predicted_start_ms: u64,
    /// The module the step was included from (`drain-web`, or `site.drain-web` nested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Rollback stops here once it started: kept in the journal, so that editing the runbook
    /// cannot lift it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub irreversible: bool,
}

impl Record {
    pub fn t_ms(&self) -> u64 {
        match self {
            Record::RunStarted { .. } | Record::Planned { .. } => 0,
            Record::Resumed { t_ms, .. }
            | Record::StepIntent { t_ms, .. }
            | Record::StepStarted { t_ms, .. }
            | Record::AttemptFailed { t_ms, .. }
            | Record::StepFinished { t_ms, .. }
            | Record::Approval { t_ms, .. }
            | Record::ApprovalWaiting { t_ms, .. }
            | Record::ApprovalRejected { t_ms, .. }
            | Record::AnswerRefused { t_ms, .. }
            | Record::Interrupted { t_ms, .. }
            | Record::RunFinished { t_ms, .. }
            | Record::RollbackStarted { t_ms, .. }
            | Record::UndoStarted { t_ms, .. }
            | Record::UndoFinished { t_ms, .. }
            | Record::RollbackFinished { t_ms, .. }
            | Record::RunNote { t_ms, .. } => *t_ms,
        }
    }
}

/// Lines of a failed attempt's output kept as evidence.
pub const TAIL_LINES: usize = 20;

/// The last lines of a step's stderr (or of its stdout when stderr is empty): what a failed
/// attempt leaves as evidence.
pub fn output_tail(outputs: &Map<String, Json>) -> Option<String> {
    let pick = |k: &str| {
        outputs
            .get(k)
            .and_then(Json::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    let text = pick("stderr").or_else(|| pick("stdout"))?;
    let lines: Vec<&str> = text.lines().collect();
    Some(lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n"))
}
