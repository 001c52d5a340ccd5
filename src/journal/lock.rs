//! One run of a runbook at a time: an exclusive `File::try_lock` on `locks/<runbook>.lock`,
//! which also records who holds it (run id, pid, start time) for the one who is refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;

use serde::{Deserialize, Serialize};

use super::StateDir;

/// A held lock; released when dropped (the OS releases it if the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    pub run_id: String,
    pub pid: u32,
    pub started_at: String,
}

pub enum LockError {
    Held(Option<LockHolder>),
    Io(io::Error),
}

impl Lock {
    pub fn acquire(
        state: &StateDir,
        runbook: &str,
        holder: &LockHolder,
    ) -> Result<Lock, LockError> {
        let path = state
            .locks_dir()
            .map_err(LockError::Io)?
            .join(format!("{runbook}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held(serde_json::from_str(&text).ok()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
        let json = serde_json::to_string(holder).expect("holders serialize");
        let write = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(json.as_bytes()));
        write.map_err(LockError::Io)?;
        Ok(Lock { _file: file })
    }
}
