//! `shell.run`: runs `argv` directly (no shell), or `script` through `sh -c` when the runbook
//! says so, as a child in its own process group (see [`super::process`]).
//!
//! Outputs: `exit_code`, `stdout` and `stderr` (their last 64 KiB), and every `key=value` line
//! the process writes to the file named by `$RIPCORD_OUTPUT`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};

use serde_json::{Value as Json, json};
use tokio::process::Command;

use super::process::{self, Ended};
use super::{BoxFuture, Failure, OutputMap, Provider, Request, param_str, scalar_text};

/// Bytes of stdout/stderr kept (the tail).
pub const MAX_CAPTURE: usize = 64 * 1024;

/// The shell provider of one session: the programs it found on `$PATH`, and the private
/// directory of `$RIPCORD_OUTPUT` files, removed when the session's providers are dropped.
#[derive(Default)]
pub struct Shell {
    found: Arc<Mutex<HashMap<String, OsString>>>,
    outputs: Arc<Mutex<Option<Outputs>>>,
}

impl Provider for Shell {
    fn invoke(&self, request: Request) -> BoxFuture {
        let (found, outputs) = (self.found.clone(), self.outputs.clone());
        Box::pin(async move { run(request, &found, &outputs).await })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `program` found on ripcord's `$PATH` once per session and remembered: the child's exec would
/// otherwise try every `$PATH` directory in turn at each step (most of a trivial step's system
/// calls). Names with a `/`, and names not found, are left to the exec as they are.
fn resolve(program: &str, found: &Mutex<HashMap<String, OsString>>) -> OsString {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return program.into();
    }
    let mut found = lock(found);
    if let Some(path) = found.get(program) {
        return path.clone();
    }
    let path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map_or_else(|| program.into(), |p| p.into_os_string());
    found.insert(program.to_string(), path.clone());
    path
}

/// The directory of `$RIPCORD_OUTPUT` files: one per session, private (0700), so each
/// step's file is only named, not created: a step that writes no outputs costs no file.
/// Names are slots, reused once free (`0.env`, `1.env`, ...): the kernel keeps looking up the
/// same few names, not a new one per step.
struct Outputs {
    dir: tempfile::TempDir,
    free: Vec<usize>,
    next: usize,
}

/// `$RIPCORD_OUTPUT` of one attempt: a free slot's name in the private directory, which
/// holds no file when the attempt starts.
struct OutputFile {
    path: std::path::PathBuf,
    slot: usize,
    /// Known not to exist (read and removed, or never written).
    gone: bool,
    outputs: Arc<Mutex<Option<Outputs>>>,
}

impl OutputFile {
    fn new(all: &Arc<Mutex<Option<Outputs>>>) -> Result<OutputFile, Failure> {
        let mut outputs = lock(all);
        if outputs.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("ripcord-outputs-")
                .tempdir()
                .map_err(|e| Failure::new(format!("cannot create the output directory: {e}")))?;
            *outputs = Some(Outputs {
                dir,
                free: Vec::new(),
                next: 0,
            });
        }
        let outputs = outputs.as_mut().expect("created above");
        let slot = outputs.free.pop().unwrap_or_else(|| {
            outputs.next += 1;
            outputs.next - 1
        });
        Ok(OutputFile {
            path: outputs.dir.path().join(format!("{slot}.env")),
            slot,
            gone: false,
            outputs: all.clone(),
        })
    }

    /// What the step wrote (nothing, usually: then there is no file).
    fn read(&mut self) -> String {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let _ = std::fs::remove_file(&self.path);
                text
            }
            Err(_) => String::new(),
        };
        self.gone = true;
        text
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.gone && std::fs::remove_file(&self.path).is_err() && self.path.exists() {
            return; // cannot be emptied: never hand this name out again
        }
        if let Some(outputs) = lock(&self.outputs).as_mut() {
            outputs.free.push(self.slot);
        }
    }
}

async fn run(
    request: Request,
    found: &Mutex<HashMap<String, OsString>>,
    outputs: &Arc<Mutex<Option<Outputs>>>,
) -> Result<OutputMap, Failure> {
    let p = &request.params;
    let mut command = if let Some(argv) = p.get("argv").and_then(Json::as_array) {
        let argv: Vec<String> = argv
            .iter()
            .map(|a| scalar_text(a).unwrap_or_default())
            .collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(Failure::permanent("argv is empty"));
        };
        let own_path = p.get("env").and_then(|e| e.get("PATH")).is_some();
        let mut c = if own_path {
            Command::new(program)
        } else {
            Command::new(resolve(program, found))
        };
        c.args(args);
        c
    } else if let Some(script) = param_str(p, "script") {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    } else {
        return Err(Failure::permanent("shell.run needs `argv` or `script`"));
    };
    let mut output_file = OutputFile::new(outputs)?;
    if let Some(env) = p.get("env").and_then(Json::as_object) {
        for (k, v) in env {
            command.env(k, scalar_text(v).unwrap_or_default());
        }
    }
    if let Some(cwd) = param_str(p, "cwd") {
        command.current_dir(cwd);
    }
    command
        .env("RIPCORD_OUTPUT", &output_file.path)
        .env("RIPCORD_ATTEMPT", request.attempt.to_string());
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let stdin = param_str(p, "stdin").map(|s| s.as_bytes().to_vec());
    let finished = match process::run(command, stdin, MAX_CAPTURE, &request).await {
        Ok(Ended::Exited(f)) => f,
        Ok(Ended::Cancelled { stdout, stderr }) => {
            return Err(Failure::new("cancelled: the process group was terminated")
                .with_output(stdout, stderr));
        }
        Err(e) => return Err(Failure::permanent(e)),
    };
    let mut outputs = output_lines(&output_file.read());
    let code = finished.code();
    outputs.insert("exit_code".into(), json!(code));
    outputs.insert("stdout".into(), json!(finished.stdout));
    outputs.insert("stderr".into(), json!(finished.stderr));
    if finished.status.success() {
        return Ok(outputs);
    }
    let last = finished
        .stderr
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
        nothing_ran: false,
        message,
        retryable: true,
        outputs,
    })
}

/// The `key=value` lines a step wrote to `$RIPCORD_OUTPUT`, as outputs.
pub fn output_lines(text: &str) -> OutputMap {
    let mut outputs = OutputMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=')
            && !k.trim().is_empty()
        {
            outputs.insert(k.trim().to_string(), json!(v));
        }
    }
    outputs
}
