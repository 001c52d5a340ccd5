//! What resume, rollback and runs share: reading a recorded run back, recompiling its runbook
//! with its inputs, and replaying its journal into step states.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::commands::print_diags;
use crate::compile::{CompileOptions, compile};
use crate::error::{CommandError, CommandResult};
use crate::exec::mask::MASK;
use crate::exec::state::{Status, StepState};
use crate::exit;
use crate::journal::record::{RunStatus, StepStatus};
use crate::journal::{ReadJournal, Record, RunHeader as Header};
use crate::plan::Plan;
use crate::runbook::load_file;

/// The last status the run reached, if it finished.
pub fn final_status(read: &ReadJournal) -> Option<RunStatus> {
    read.records.iter().rev().find_map(|r| match r {
        Record::RunFinished { status, .. } => Some(*status),
        _ => None,
    })
}

pub fn sha256(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a run records of the files it was compiled from: the SHA-256 of the runbook, or, when
/// it includes modules, of the SHA-256s of each file in turn. Resume and rollback refuse a plan
/// whose files changed since.
pub fn fingerprint(plan: &Plan) -> String {
    if let [only] = plan.sources.as_slice() {
        return sha256(only.inner());
    }
    // Texts only, in compile order: names depend on how the runbook was named on the command
    // line (resume names it by its absolute path).
    let each: Vec<String> = plan.sources.iter().map(|f| sha256(f.inner())).collect();
    sha256(&each.join("\n"))
}

pub use crate::session::read_recorded as read_run;

/// Recompiles the run's runbook with its recorded inputs (secrets, which are not recorded, come
/// from `--input` or their `env:` again). A changed file is refused unless `force`.
pub fn recompile(
    header: &Header,
    given: &[(String, String)],
    files: &[crate::compile::inputs::InputFile],
    force: bool,
    providers: &crate::provider::Providers,
) -> CommandResult<Arc<Plan>> {
    let source = load_file(Path::new(&header.file)).map_err(|d| {
        print_diags(&d);
        crate::invalid!("run {} needs its runbook {}", header.run_id, header.file)
    })?;
    let mut inputs: Vec<(String, String)> = header
        .inputs
        .iter()
        .filter(|(_, v)| v.as_str() != Some(MASK))
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_string),
            )
        })
        .collect();
    inputs.extend(given.iter().cloned());
    let options = CompileOptions {
        inputs: &inputs,
        input_files: files,
        require_inputs: true,
        run_commands: true,
        mode: header.run_mode.as_deref(),
        providers,
    };
    let changed = || {
        crate::invalid!(
            "{} (or a module it includes) changed since run {} started; pass --force to go on \
             with the new version",
            header.file,
            header.run_id
        )
    };
    let file = source.file.clone();
    match compile(source, &options) {
        Ok(compiled) if fingerprint(&compiled.plan) != header.hash && !force => Err(changed()),
        Ok(compiled) => Ok(Arc::new(compiled.plan)),
        Err(diags) => {
            print_diags(&diags);
            // Say why it no longer compiles, when the reason is an edit.
            if !force && sha256(file.inner()) != header.hash {
                return Err(changed());
            }
            Err(CommandError::Reported(exit::INVALID))
        }
    }
}

/// The inputs given to a later session (resume, rollback) that change what the run recorded,
/// with their new values: evidence of what that session ran with. Secrets (recorded masked) are
/// given again every time and are not overrides.
pub fn overrides(
    header: &Header,
    given: &[(String, String)],
) -> serde_json::Map<String, serde_json::Value> {
    given
        .iter()
        .filter(|(k, v)| match header.inputs.get(k) {
            Some(recorded) if recorded.as_str() == Some(MASK) => false,
            Some(recorded) => {
                recorded
                    .as_str()
                    .map_or_else(|| recorded.to_string(), str::to_string)
                    != *v
            }
            None => true,
        })
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}

/// A run's journal replayed onto its plan.
pub struct Replay {
    pub states: Vec<StepState>,
    /// Started (or cancelled) with no end recorded: the effect may or may not have happened.
    pub in_doubt: Vec<usize>,
    pub undone: HashSet<usize>,
    /// Undos that started with no recorded end: a rollback run again runs them again.
    pub undo_in_doubt: Vec<usize>,
    /// In doubt because the intent to start them is their last record and the machine has
    /// restarted since it was written (see [`crate::journal::intent`]).
    pub lost_launch: HashSet<usize>,
    /// Steps the journal's plan marked irreversible (whatever the runbook says now).
    pub irreversible: HashSet<String>,
    pub last_ms: u64,
}

pub fn replay(plan: &Plan, records: &[Record]) -> Replay {
    let index: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut states = vec![StepState::default(); plan.steps.len()];
    let mut started = vec![false; plan.steps.len()];
    let mut undone = HashSet::new();
    let mut undo_started = HashSet::new();
    let mut irreversible = HashSet::new();
    let mut last_ms = 0;
    let now = crate::journal::intent::boot_id();
    let lost_at = crate::journal::intent::lost_launches(records, now.as_deref());
    let lost: HashSet<usize> = lost_at.iter().copied().collect();
    // Each step's last start, by record number: a lost launch when it is one of `lost`.
    let mut last_start = vec![None; plan.steps.len()];
    let records = crate::journal::intent::as_read(records, &lost_at);
    for (n, r) in records.iter().enumerate() {
        last_ms = last_ms.max(r.t_ms());
        match r {
            Record::Planned { steps, .. } => {
                irreversible.extend(
                    steps
                        .iter()
                        .filter(|s| s.irreversible)
                        .map(|s| s.id.clone()),
                );
            }
            Record::StepStarted { step, t_ms, .. } => {
                if let Some(&i) = index.get(step.as_str()) {
                    last_start[i] = Some(n);
                    started[i] = true;
                    // Run again (a resume tries a failed step again): where it ended before
                    // no longer says where it stands; with no end after this, it is in doubt.
                    states[i].status = Status::Pending;
                    states[i].launched = true;
                    states[i].acted += 1;
                    states[i].started_ms.get_or_insert(*t_ms);
                }
            }
            // An attempt known to have done nothing (ssh.run never reached its host).
            Record::AttemptFailed {
                step,
                nothing_ran: true,
                ..
            } => {
                if let Some(&i) = index.get(step.as_str()) {
                    states[i].acted = states[i].acted.saturating_sub(1);
                }
            }
            Record::UndoStarted { step, .. } => {
                if let Some(&i) = index.get(step.as_str()) {
                    undo_started.insert(i);
                }
            }
            Record::StepFinished {
                step,
                status,
                outputs,
                attempts,
                t_ms,
                error,
                ..
            } => {
                if let Some(&i) = index.get(step.as_str()) {
                    let s = &mut states[i];
                    s.status = Status::Done(*status);
                    s.outputs = outputs.clone();
                    s.attempts = *attempts;
                    s.finished_ms = Some(*t_ms);
                    s.error = error.clone();
                    started[i] = *status == StepStatus::Cancelled;
                }
            }
            Record::UndoFinished { step, status, .. } => {
                if let Some(&i) = index.get(step.as_str()) {
                    undo_started.remove(&i);
                    if *status == StepStatus::Succeeded {
                        undone.insert(i);
                    }
                }
            }
            _ => {}
        }
    }
    let in_doubt = (0..states.len())
        .filter(|&i| {
            started[i] && !matches!(states[i].status, Status::Done(s) if s != StepStatus::Cancelled)
        })
        .collect();
    let lost_launch = (0..states.len())
        .filter(|&i| last_start[i].is_some_and(|n| lost.contains(&n)))
        .collect();
    let mut undo_in_doubt: Vec<usize> = undo_started.into_iter().collect();
    undo_in_doubt.sort_unstable();
    Replay {
        states,
        in_doubt,
        undone,
        undo_in_doubt,
        lost_launch,
        irreversible,
        last_ms,
    }
}
