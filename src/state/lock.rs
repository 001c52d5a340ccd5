//! A lock in the state directory: an exclusive `File::try_lock` on a file under `locks/`, which
//! also records who holds it (run id, pid, start time, who) for the one who is refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::HeldLock;

/// A held lock file; released when dropped (the OS releases it if the process dies).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl HeldLock for DirLock {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    pub run_id: String,
    pub pid: u32,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// The lease, for a backend whose locks are leases (PostgreSQL).
    #[serde(skip)]
    pub lease: Option<LeaseInfo>,
}

/// A lease as its refused taker sees it.
#[derive(Debug, Clone)]
pub struct LeaseInfo {
    pub epoch: i64,
    pub ttl_ms: u64,
    /// Since its last renewal, by the state database's clock.
    pub age_ms: u64,
}

pub enum LockError {
    Held(Option<Box<LockHolder>>),
    Io(io::Error),
}

impl DirLock {
    pub fn acquire(path: &Path, holder: &LockHolder) -> Result<DirLock, LockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held(
                    serde_json::from_str(&text).ok().map(Box::new),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
        let json = serde_json::to_string(holder).expect("holders serialize");
        let write = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(json.as_bytes()));
        write.map_err(LockError::Io)?;
        Ok(DirLock { _file: file })
    }
}

/// Whether some process holds the lock at `path` (never created here). A shared lock is tried
/// and let go at once: refused means an exclusive holder is alive.
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    )
}
