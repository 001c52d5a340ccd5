//! `shell.run`: runs `argv` directly (no shell), or `script` through `sh -c` when the runbook
//! says so, as a child in its own process group (see [`super::process`]).
//!
//! Outputs: `exit_code`, `stdout` and `stderr` (their last 64 KiB), and every `key=value` line
//! the process writes to the file named by `$RIPCORD_OUTPUT`.

use serde_json::{Value as Json, json};
use tokio::process::Command;

use super::process::{self, Ended};
use super::{BoxFuture, Failure, OutputMap, Provider, Request, param_str, scalar_text};

/// Bytes of stdout/stderr kept (the tail).
pub const MAX_CAPTURE: usize = 64 * 1024;

pub struct Shell;

impl Provider for Shell {
    fn invoke(&self, request: Request) -> BoxFuture {
        Box::pin(run(request))
    }
}

/// `program` found on ripcord's `$PATH` once per run and remembered: the child's exec would
/// otherwise try every `$PATH` directory in turn at each step (most of a trivial step's system
/// calls). Names with a `/`, and names not found, are left to the exec as they are.
fn resolve(program: &str) -> std::ffi::OsString {
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;
    static FOUND: Mutex<Option<HashMap<String, std::ffi::OsString>>> = Mutex::new(None);
    if program.contains('/') {
        return program.into();
    }
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    let found = found.get_or_insert_with(HashMap::new);
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

/// The directory of `$RIPCORD_OUTPUT` files: one per ripcord process, private (0700), so each
/// step's file is only named, not created: a step that writes no outputs costs no file.
static OUTPUT_DIR: std::sync::Mutex<Option<tempfile::TempDir>> = std::sync::Mutex::new(None);

/// `$RIPCORD_OUTPUT` of one attempt: a fresh name in the private directory, removed after
/// (a step killed before it was read leaves its file to the directory's removal).
struct OutputFile(std::path::PathBuf);

impl OutputFile {
    fn new() -> Result<OutputFile, Failure> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut dir = OUTPUT_DIR.lock().unwrap_or_else(|e| e.into_inner());
        if dir.is_none() {
            let made = tempfile::Builder::new()
                .prefix("ripcord-outputs-")
                .tempdir()
                .map_err(|e| Failure::new(format!("cannot create the output directory: {e}")))?;
            *dir = Some(made);
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = dir.as_ref().expect("created above");
        Ok(OutputFile(dir.path().join(format!("{n}.env"))))
    }
}

impl OutputFile {
    /// What the step wrote (nothing, usually: then there is no file).
    fn read(&self) -> String {
        match std::fs::read_to_string(&self.0) {
            Ok(text) => {
                let _ = std::fs::remove_file(&self.0);
                text
            }
            Err(_) => String::new(),
        }
    }
}

/// Removes the outputs directory (at the end of a run).
pub fn remove_output_dir() {
    OUTPUT_DIR.lock().unwrap_or_else(|e| e.into_inner()).take();
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
        let own_path = p.get("env").and_then(|e| e.get("PATH")).is_some();
        let mut c = if own_path {
            Command::new(program)
        } else {
            Command::new(resolve(program))
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
    let output_file = OutputFile::new()?;
    if let Some(env) = p.get("env").and_then(Json::as_object) {
        for (k, v) in env {
            command.env(k, scalar_text(v).unwrap_or_default());
        }
    }
    if let Some(cwd) = param_str(p, "cwd") {
        command.current_dir(cwd);
    }
    command
        .env("RIPCORD_OUTPUT", &output_file.0)
        .env("RIPCORD_RUN_ID", &request.run_id)
        .env("RIPCORD_STEP", &request.step)
        .env("RIPCORD_ATTEMPT", request.attempt.to_string());
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let stdin = param_str(p, "stdin").map(|s| s.as_bytes().to_vec());
    let finished = match process::run(command, stdin, MAX_CAPTURE, &request.cancel).await {
        Ok(Ended::Exited(f)) => f,
        Ok(Ended::Cancelled) => {
            return Err(Failure::new("cancelled: the process group was terminated"));
        }
        Err(e) => return Err(Failure::permanent(e)),
    };
    let mut outputs = OutputMap::new();
    let text = output_file.read();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=')
            && !k.trim().is_empty()
        {
            outputs.insert(k.trim().to_string(), json!(v));
        }
    }
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
        message,
        retryable: true,
        outputs,
    })
}
