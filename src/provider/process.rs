//! Child processes of steps (`shell.run`, external plugins): each leads its own process group;
//! cancellation (timeout, interrupt) sends SIGTERM to the whole group, then SIGKILL after a grace
//! period; whatever is left of the group when the child exits is killed too, so no step leaves
//! processes behind; stdout and stderr are read to their end keeping a bounded tail.

use std::collections::HashSet;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// A child that ran to its end.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit code, or 128 + the signal that killed it.
    pub fn code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }
}

pub enum Ended {
    Exited(Finished),
    Cancelled,
}

/// Runs `command` in its own process group, feeding it `stdin`, keeping the last `max_capture`
/// bytes of stdout and of stderr. Fails only when the program cannot be started.
pub async fn run(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    max_capture: usize,
    cancel: &CancellationToken,
) -> Result<Ended, String> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            dev_null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: signals reach grandchildren too. Keeps posix_spawn's fast path.
        .process_group(0)
        .kill_on_drop(true);
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let pid = child.id().map(|id| id as i32);
    let mut group = GroupGuard::new(pid);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child that exits without reading its stdin is not an error.
        let _ = pipe.write_all(&bytes).await;
    }
    // The pipes are read while the child runs (a full pipe would stall it), in this same task.
    let ended = tokio::select! {
        ended = async {
            tokio::join!(
                async {
                    let status = child.wait().await;
                    // The child is gone; anything it left in its group goes too, so the pipes
                    // close.
                    group.kill();
                    status
                },
                tail(stdout, max_capture),
                tail(stderr, max_capture),
            )
        } => Some(ended),
        () = cancel.cancelled() => None,
    };
    let Some((status, stdout, stderr)) = ended else {
        signal_group(pid, libc::SIGTERM);
        if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
            signal_group(pid, libc::SIGKILL);
            let _ = child.wait().await;
        }
        group.kill();
        return Ok(Ended::Cancelled);
    };
    let status = status.map_err(|e| format!("waiting for `{program}`: {e}"))?;
    Ok(Ended::Exited(Finished {
        status,
        stdout,
        stderr,
    }))
}

/// stdin for a child that gets none: a copy of one /dev/null opened once (a `dup` instead of
/// a path lookup per step).
fn dev_null() -> Stdio {
    static NULL: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").ok())
        .as_ref()
        .and_then(|f| f.try_clone().ok())
        .map_or_else(Stdio::null, Stdio::from)
}

/// Reads a pipe to its end, keeping the last `max` bytes.
async fn tail(pipe: Option<impl AsyncRead + Unpin>, max: usize) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * max {
            kept.drain(..kept.len() - max);
        }
    }
    if kept.len() > max {
        kept.drain(..kept.len() - max);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Process groups of running steps, for [`kill_all_groups`].
static GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn track(pid: i32, running: bool) {
    let mut groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    let set = groups.get_or_insert_with(HashSet::new);
    if running {
        set.insert(pid);
    } else {
        set.remove(&pid);
    }
}

/// SIGKILLs every running step's process group: for an exit that cannot wait for them (a
/// second interrupt).
pub fn kill_all_groups() {
    let groups = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    for &pid in groups.iter().flatten() {
        signal_group(Some(pid), libc::SIGKILL);
    }
}

fn signal_group(pid: Option<i32>, signal: i32) {
    if let Some(pid) = pid.filter(|&p| p > 0) {
        // SAFETY: kill(2) with a negative pid signals the process group; it touches no memory.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// Kills the process group if the attempt's future is dropped mid-way (the executor gave up on
/// it), so nothing outlives its step.
struct GroupGuard {
    pid: Option<i32>,
    killed: bool,
}

impl GroupGuard {
    fn new(pid: Option<i32>) -> GroupGuard {
        if let Some(pid) = pid {
            track(pid, true);
        }
        GroupGuard { pid, killed: false }
    }

    /// SIGKILLs what is left of the group, once.
    fn kill(&mut self) {
        if !self.killed {
            signal_group(self.pid, libc::SIGKILL);
            self.killed = true;
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
        if let Some(pid) = self.pid {
            track(pid, false);
        }
    }
}
