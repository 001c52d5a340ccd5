//! Where each step of a run stands.

use crate::journal::record::StepStatus;
use crate::provider::OutputMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Pending,
    Running,
    Done(StepStatus),
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Done(s) => s.as_str(),
        }
    }

    /// Whether dependents may start: done, and not a failure that aborts.
    pub fn is_done(&self) -> bool {
        matches!(self, Status::Done(_))
    }
}

#[derive(Debug, Clone)]
pub struct StepState {
    pub status: Status,
    pub outputs: OutputMap,
    pub attempts: u32,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub error: Option<String>,
    /// An attempt of it started, in this session or an earlier one: whatever its status now
    /// (failed, cancelled, in doubt, taken as done), its effect may have happened.
    pub launched: bool,
    /// Attempts that may have taken effect: started, less those known to have done nothing
    /// (ssh.run that never reached its host). `undo: { if_started: true }` runs when any did.
    pub acted: u32,
    /// In a pre-flight: not judged, because it reads the outputs of a check that failed (or of
    /// one not judged either); what reads its outputs is not judged in turn.
    pub unjudged: bool,
}

impl Default for StepState {
    fn default() -> Self {
        StepState {
            status: Status::Pending,
            outputs: OutputMap::new(),
            attempts: 0,
            started_ms: None,
            finished_ms: None,
            error: None,
            launched: false,
            acted: 0,
            unjudged: false,
        }
    }
}
