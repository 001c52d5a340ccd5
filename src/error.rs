//! One error type for every command, mapped to the contract's exit codes in one place. A
//! command returns `Ok(code)` for an outcome (a run that failed is an outcome: exit 1, its
//! summary already printed) and `Err(CommandError)` for an error, which `main` prints once, as
//! `error: ...`, and turns into its exit code.

use crate::exit;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The runbook, its inputs, the command line or the recorded state cannot be used (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// The work itself failed (exit 1).
    #[error("{0}")]
    Failed(String),
    /// Another session holds what the command needs, or processes of the run live on (exit 4).
    #[error("{0}")]
    Locked(String),
    /// Already said in full where it was found (diagnostics with file:line:col): only the code.
    #[error("reported above")]
    Reported(u8),
}

pub type CommandResult<T = u8> = Result<T, CommandError>;

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Invalid(_) => exit::INVALID,
            CommandError::Failed(_) => exit::FAILED,
            CommandError::Locked(_) => exit::LOCKED,
            CommandError::Reported(code) => *code,
        }
    }

    /// Prints the error to stderr (nothing for one already reported).
    pub fn print(&self) {
        if !matches!(self, CommandError::Reported(_)) {
            crate::eprintln_quiet!("error: {self}");
        }
    }
}

/// `CommandError::Invalid(format!(..))`.
#[macro_export]
macro_rules! invalid {
    ($($t:tt)*) => { $crate::error::CommandError::Invalid(format!($($t)*)) };
}

/// `CommandError::Failed(format!(..))`.
#[macro_export]
macro_rules! failed {
    ($($t:tt)*) => { $crate::error::CommandError::Failed(format!($($t)*)) };
}

/// `CommandError::Locked(format!(..))`.
#[macro_export]
macro_rules! locked {
    ($($t:tt)*) => { $crate::error::CommandError::Locked(format!($($t)*)) };
}

/// A journal write that failed, as the command ends with it: a session that lost its lease
/// (shared state) is refused like a lock (exit 4); anything else failed the run (exit 1).
pub fn journal_failed(e: std::io::Error, what: &str) -> CommandError {
    match crate::state::pg::lease_lost(&e) {
        Some(why) => CommandError::Locked(format!("{what}: this session lost its lease: {why}")),
        None => CommandError::Failed(format!("{what}: the journal could not be written ({e})")),
    }
}
