//! Child processes of steps (`shell.run`, external plugins): each leads its own process group,
//! told to the session's supervisor (which kills it if ripcord dies); cancellation (timeout,
//! interrupt) sends SIGTERM to the whole group, then SIGKILL after a grace period; whatever is
//! left of the group when the child exits is killed too, so no step leaves processes behind;
//! stdout and stderr are read to their end keeping a bounded tail. Every child carries
//! `RIPCORD_RUN_ID` and `RIPCORD_STEP` in its environment, so a leftover process of a run can be
//! found by `resume` even when the supervisor could not end it.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::Request;
use crate::session::supervisor::{Groups, signal_group};

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
    /// Cancelled (timeout, interrupt): the group was stopped; what it had written so far.
    Cancelled {
        stdout: String,
        stderr: String,
    },
}

/// Runs `command` for `request` in its own process group, feeding it `stdin`, keeping the last
/// `max_capture` bytes of stdout and of stderr. Fails only when the program cannot be started.
pub async fn run(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    max_capture: usize,
    request: &Request,
) -> Result<Ended, String> {
    let cancel = &request.cancel;
    command
        .env("RIPCORD_RUN_ID", &request.run_id)
        .env("RIPCORD_SESSION", request.groups.session())
        .env("RIPCORD_STEP", &request.step)
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
    let mut group = GroupGuard::new(pid, &request.groups);
    // Read in tasks of their own, so that what a cancelled child wrote is kept too.
    let (out, err) = (Kept::default(), Kept::default());
    let stdout = tokio::spawn(tail(child.stdout.take(), max_capture, out.clone()));
    let stderr = tokio::spawn(tail(child.stderr.take(), max_capture, err.clone()));
    let feed = stdin.zip(child.stdin.take());
    // stdin is written while stdout and stderr are read and the child runs (a child that
    // writes before it has read all of its input would otherwise stall both sides), all under
    // the cancellation, in this same task.
    let ended = tokio::select! {
        ended = async {
            let ((), status) = tokio::join!(
                async {
                    if let Some((bytes, mut pipe)) = feed {
                        // A child that exits without reading its stdin is not an error.
                        let _ = pipe.write_all(&bytes).await;
                        // Dropped here: the child sees the end of its input.
                    }
                },
                async {
                    let status = child.wait().await;
                    // The child is gone; anything it left in its group goes too, so the pipes
                    // close.
                    group.kill();
                    status
                },
            );
            status
        } => Some(ended),
        () = cancel.cancelled() => None,
    };
    let Some(status) = ended else {
        let pid = pid.unwrap_or(0);
        signal_group(pid, libc::SIGTERM);
        if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
            signal_group(pid, libc::SIGKILL);
            let _ = child.wait().await;
        }
        group.kill();
        // The group is gone, so the pipes have ended, unless a process that left the group
        // holds them: what was read by then is enough.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = tokio::join!(stdout, stderr);
        })
        .await;
        return Ok(Ended::Cancelled {
            stdout: text(&out, max_capture),
            stderr: text(&err, max_capture),
        });
    };
    let status = status.map_err(|e| format!("waiting for `{program}`: {e}"))?;
    let _ = tokio::join!(stdout, stderr);
    let (stdout, stderr) = (text(&out, max_capture), text(&err, max_capture));
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

/// What a pipe gave so far, shared with the task reading it (so a reader given up on still
/// leaves what it read).
type Kept = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// Reads a pipe to its end into `kept`, keeping the last `max` bytes (up to twice that while
/// reading, to trim in batches).
async fn tail(pipe: Option<impl AsyncRead + Unpin>, max: usize, kept: Kept) {
    let Some(mut pipe) = pipe else {
        return;
    };
    // Nothing is allocated for a child that writes nothing (most steps): the first read gets a
    // small buffer, the rest 16 KiB, never zeroed.
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match pipe.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.extend_from_slice(&buf);
        if kept.len() > 2 * max {
            let cut = kept.len() - max;
            kept.drain(..cut);
        }
        drop(kept);
        buf.reserve(16 * 1024);
    }
}

/// The last `max` bytes kept, as text.
fn text(kept: &Kept, max: usize) -> String {
    let kept = kept.lock().unwrap_or_else(|e| e.into_inner());
    let from = kept.len().saturating_sub(max);
    String::from_utf8_lossy(&kept[from..]).into_owned()
}

/// Kills the process group if the attempt's future is dropped mid-way (the executor gave up on
/// it), so nothing outlives its step.
struct GroupGuard {
    pid: Option<i32>,
    killed: bool,
    groups: Groups,
}

impl GroupGuard {
    fn new(pid: Option<i32>, groups: &Groups) -> GroupGuard {
        if let Some(pid) = pid {
            groups.started(pid);
        }
        GroupGuard {
            pid,
            killed: false,
            groups: groups.clone(),
        }
    }

    /// SIGKILLs what is left of the group, once.
    fn kill(&mut self) {
        if !self.killed {
            if let Some(pid) = self.pid {
                signal_group(pid, libc::SIGKILL);
            }
            self.killed = true;
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
        if let Some(pid) = self.pid {
            self.groups.ended(pid);
        }
    }
}
