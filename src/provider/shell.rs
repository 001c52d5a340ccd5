//! `shell.run`: runs `argv` directly (no shell), or `script` through `sh -c` when the runbook
//! says so. The child leads its own process group; cancellation (timeout, interrupt) sends
//! SIGTERM to the whole group, then SIGKILL after a grace period, and whatever is left of the
//! group when the child exits is killed too, so no step leaves processes behind.
//!
//! Outputs: `exit_code`, `stdout` and `stderr` (their last 64 KiB), and every `key=value` line
//! the process writes to the file named by `$RIPCORD_OUTPUT`.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{BoxFuture, Failure, OutputMap, Provider, Request, param_str, scalar_text};

/// Bytes of stdout/stderr kept (the tail).
pub const MAX_CAPTURE: usize = 64 * 1024;
/// Between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

pub struct Shell;

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

impl Provider for Shell {
    fn invoke(&self, request: Request) -> BoxFuture {
        Box::pin(run(request))
    }
}

async fn run(request: Request) -> Result<OutputMap, Failure> {
    let p = &request.params;
    let mut command = if let Some(argv) = p.get("argv").and_then(Json::as_array) {
        let argv: Vec<String> = argv
            .iter()
            .map(|a| scalar_text(a).unwrap_or_default())
            .collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(Failure::permanent("argv is empty"));
        };
        let mut c = Command::new(program);
        c.args(args);
        c
    } else if let Some(script) = param_str(p, "script") {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    } else {
        return Err(Failure::permanent("shell.run needs `argv` or `script`"));
    };
    let output_file = tempfile::Builder::new()
        .prefix("ripcord-output-")
        .tempfile()
        .map_err(|e| Failure::new(format!("cannot create the output file: {e}")))?;
    if let Some(env) = p.get("env").and_then(Json::as_object) {
        for (k, v) in env {
            command.env(k, scalar_text(v).unwrap_or_default());
        }
    }
    if let Some(cwd) = param_str(p, "cwd") {
        command.current_dir(cwd);
    }
    let stdin = param_str(p, "stdin").map(str::to_string);
    command
        .env("RIPCORD_OUTPUT", output_file.path())
        .env("RIPCORD_RUN_ID", &request.run_id)
        .env("RIPCORD_STEP", &request.step)
        .env("RIPCORD_ATTEMPT", request.attempt.to_string())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
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
        .map_err(|e| Failure::permanent(format!("cannot run `{program}`: {e}")))?;
    let pid = child.id().map(|id| id as i32);
    if let Some(pid) = pid {
        track(pid, true);
    }
    let _group = GroupGuard(pid);
    let stdout = tokio::spawn(tail(child.stdout.take()));
    let stderr = tokio::spawn(tail(child.stderr.take()));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child that exits without reading its stdin is not an error.
        let _ = pipe.write_all(text.as_bytes()).await;
    }
    let status = tokio::select! {
        status = child.wait() => status,
        () = request.cancel.cancelled() => {
            signal_group(pid, libc::SIGTERM);
            let status = match tokio::time::timeout(GRACE, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal_group(pid, libc::SIGKILL);
                    child.wait().await
                }
            };
            signal_group(pid, libc::SIGKILL);
            drop(status);
            return Err(Failure::new("cancelled: the process group was terminated"));
        }
    };
    // The child is gone; anything it left in its group goes too, so the pipes close.
    signal_group(pid, libc::SIGKILL);
    let status = status.map_err(|e| Failure::new(format!("waiting for `{program}`: {e}")))?;
    let stdout = stdout.await.unwrap_or_default();
    let stderr = stderr.await.unwrap_or_default();
    let mut outputs = OutputMap::new();
    let text = std::fs::read_to_string(output_file.path()).unwrap_or_default();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=')
            && !k.trim().is_empty()
        {
            outputs.insert(k.trim().to_string(), json!(v));
        }
    }
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    outputs.insert("exit_code".into(), json!(code));
    outputs.insert("stdout".into(), json!(stdout));
    outputs.insert("stderr".into(), json!(stderr.clone()));
    if status.success() {
        Ok(outputs)
    } else {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let message = if last.is_empty() {
            format!("`{program}` exited with code {code}")
        } else {
            format!("`{program}` exited with code {code}: {last}")
        };
        Err(Failure {
            message,
            retryable: true,
            outputs,
        })
    }
}

/// Reads a pipe to its end, keeping the last [`MAX_CAPTURE`] bytes.
async fn tail(pipe: Option<impl AsyncRead + Unpin>) -> String {
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
        if kept.len() > 2 * MAX_CAPTURE {
            kept.drain(..kept.len() - MAX_CAPTURE);
        }
    }
    if kept.len() > MAX_CAPTURE {
        kept.drain(..kept.len() - MAX_CAPTURE);
    }
    String::from_utf8_lossy(&kept).into_owned()
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
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.0, libc::SIGKILL);
        if let Some(pid) = self.0 {
            track(pid, false);
        }
    }
}
