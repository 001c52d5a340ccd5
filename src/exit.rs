//! Exit codes of the CLI, as the runbook-format contract fixes them.

/// Success.
pub const OK: u8 = 0;
/// A run failed.
pub const FAILED: u8 = 1;
/// The runbook, its inputs or the command line are invalid.
pub const INVALID: u8 = 2;
/// A run was interrupted (SIGINT/SIGTERM) and can be resumed.
pub const INTERRUPTED: u8 = 3;
/// Another run of the same runbook holds the lock.
pub const LOCKED: u8 = 4;
