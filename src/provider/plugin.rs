//! External plugins: any provider NAME that is not built in is an executable
//! `ripcord-plugin-NAME`, found in the `--plugin-dir` directories, then `$RIPCORD_PLUGIN_PATH`,
//! then the directory of the ripcord binary, then `$PATH`.
//!
//! `ripcord-plugin-NAME describe` prints its actions as JSON; `ripcord-plugin-NAME invoke`
//! reads one JSON request on stdin and prints one JSON result on stdout, logging to stderr.
//! The plugin runs like a `shell.run` child: its own process group, killed with it at the step's
//! timeout. Whatever it does wrong — exits non-zero, prints nothing, garbage or too much — is a
//! step failure with a message that says so, never a crash of ripcord.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ripcord_plugin_sdk::{self as sdk, Description, PROTOCOL};
use serde_json::json;
use tokio::process::Command;

use super::catalog::{ActionSpec, EXTERNAL_SIM_DEFAULT, Outputs};
use super::process::{self, Ended};
use super::{BoxFuture, Failure, OutputMap, Provider, Request};

/// A result larger than this is refused (and a flood of stdout cannot grow ripcord's memory).
pub const MAX_RESULT: usize = 1024 * 1024;
/// Stderr kept as the step's `stderr` output.
pub const MAX_LOG: usize = 64 * 1024;
/// How long `describe` may take.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A found and described plugin.
#[derive(Debug)]
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    pub actions: Vec<Arc<ActionSpec>>,
}

/// Where to look for `ripcord-plugin-NAME`, in order.
pub fn search_path(plugin_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = plugin_dirs.to_vec();
    if let Some(p) = std::env::var_os("RIPCORD_PLUGIN_PATH") {
        dirs.extend(std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()));
    }
    dirs
}

pub fn executable_name(provider: &str) -> String {
    format!("ripcord-plugin-{provider}")
}

/// Every plugin name on the search path (the first of each name is the one used).
pub fn installed(plugin_dirs: &[PathBuf]) -> Vec<String> {
    let mut names: Vec<String> = search_path(plugin_dirs)
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("ripcord-plugin-")
                .map(str::to_string)
        })
        .filter(|n| crate::runbook::is_name(n))
        .collect();
    names.sort();
    names.dedup();
    names.retain(|n| find(n, plugin_dirs).is_some());
    names
}

/// The first executable `ripcord-plugin-NAME` on the search path.
pub fn find(provider: &str, plugin_dirs: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let name = executable_name(provider);
    search_path(plugin_dirs)
        .into_iter()
        .map(|d| d.join(&name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `describe` (blocking: it is called while compiling, before any runtime exists).
pub fn describe(provider: &str, path: &Path) -> Result<Plugin, String> {
    let shown = path.display();
    let mut child = std::process::Command::new(path)
        .arg("describe")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {shown} describe: {e}"))?;
    // Read on a thread so a plugin that hangs can be killed at the deadline.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = Vec::new();
        let _ = (&mut stdout)
            .take(MAX_RESULT as u64 + 1)
            .read_to_end(&mut buf);
        buf
    });
    let deadline = std::time::Instant::now() + DESCRIBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            _ => {
                // SAFETY: signalling the plugin's own process group.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return Err(format!(
                    "{shown} describe did not answer within {}s",
                    DESCRIBE_TIMEOUT.as_secs()
                ));
            }
        }
    };
    let bytes = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{shown} describe exited with {status}"));
    }
    if bytes.len() > MAX_RESULT {
        return Err(format!(
            "{shown} describe printed more than {} bytes",
            MAX_RESULT
        ));
    }
    let d: Description = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{shown} describe printed no valid description: {e}"))?;
    if d.protocol != PROTOCOL {
        return Err(format!(
            "{shown} speaks protocol {}, ripcord speaks {PROTOCOL}",
            d.protocol
        ));
    }
    let actions = d
        .actions
        .into_iter()
        .map(|a| {
            Arc::new(ActionSpec {
                provider: provider.to_string(),
                action: a.name,
                summary: a.summary,
                params: a.params,
                outputs: Outputs::Closed(a.outputs),
                sim_default: EXTERNAL_SIM_DEFAULT,
                check: a.check,
                undo: a.undo,
                validator: Arc::default(),
            })
        })
        .collect::<Vec<Arc<ActionSpec>>>();
    for a in &actions {
        if let Err(e) = a.validator() {
            return Err(format!("{shown} describes action `{}`: {e}", a.action));
        }
    }
    Ok(Plugin {
        name: provider.to_string(),
        path: path.to_path_buf(),
        actions,
    })
}

impl Provider for Plugin {
    fn invoke(&self, request: Request) -> BoxFuture {
        let path = self.path.clone();
        Box::pin(async move { invoke(&path, request).await })
    }
}

async fn invoke(path: &Path, request: Request) -> Result<OutputMap, Failure> {
    let body = sdk::Request {
        protocol: PROTOCOL,
        action: request.action.action.clone(),
        params: request.params.clone(),
        mode: if request.check {
            sdk::Mode::Check
        } else {
            sdk::Mode::Run
        },
        run_id: request.run_id.clone(),
        step: request.step.clone(),
        attempt: request.attempt,
    };
    let mut command = Command::new(path);
    command.arg("invoke");
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let stdin = serde_json::to_vec(&body).expect("requests serialize");
    let finished = match process::run(command, Some(stdin), MAX_RESULT + 1, &request).await {
        Ok(Ended::Exited(f)) => f,
        Ok(Ended::Cancelled { stderr, .. }) => {
            // Its stdout is a half-written result; its stderr is its log.
            return Err(
                Failure::new(format!("{name} was stopped (its process group killed)"))
                    .with_output(String::new(), stderr),
            );
        }
        Err(e) => return Err(Failure::permanent(e)),
    };
    decode(&name, &finished.stdout, &finished.stderr, finished.code())
}

/// What a plugin's `invoke` printed (and its exit code) made into the step's result: its reply,
/// or a failure that says what went wrong. `stderr` becomes the `stderr` output (bounded).
pub fn decode(
    name: &str,
    stdout: &str,
    stderr: &str,
    exit_code: i32,
) -> Result<OutputMap, Failure> {
    let with_log = |mut outputs: OutputMap| {
        if !stderr.is_empty() {
            // The last MAX_LOG bytes, cut on a character boundary.
            let mut start = stderr.len().saturating_sub(MAX_LOG);
            while !stderr.is_char_boundary(start) {
                start += 1;
            }
            outputs.insert("stderr".into(), json!(stderr[start..].to_string()));
        }
        outputs
    };
    if stdout.len() > MAX_RESULT {
        return Err(Failure {
            nothing_ran: false,
            message: format!("{name} printed more than {MAX_RESULT} bytes on stdout: not a result"),
            retryable: false,
            outputs: with_log(OutputMap::new()),
        });
    }
    let text = stdout.trim();
    let parsed = if text.is_empty() {
        Err("printed no result".to_string())
    } else {
        serde_json::from_str::<sdk::Reply>(text).map_err(|e| {
            let start: String = text.chars().take(120).collect();
            format!("printed an invalid result ({e}): {start}")
        })
    };
    match parsed {
        Ok(r) if r.ok => Ok(with_log(r.outputs)),
        Ok(r) => Err(Failure {
            nothing_ran: false,
            message: if r.message.is_empty() {
                format!("{name} reported a failure")
            } else {
                r.message
            },
            retryable: r.retryable,
            outputs: with_log(r.outputs),
        }),
        Err(why) => {
            let exit = if exit_code == 0 {
                String::new()
            } else {
                format!(" and exited with code {exit_code}")
            };
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let tail = if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            };
            Err(Failure {
                nothing_ran: false,
                message: format!("{name} {why}{exit}{tail}"),
                retryable: exit_code != 0,
                outputs: with_log(OutputMap::new()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_cut_inside_a_character_does_not_panic() {
        // 64 KiB of 3-byte characters: the cut point falls inside one.
        let stderr = "€".repeat(MAX_LOG / 3 + 7);
        let out = decode("p", r#"{"ok":true}"#, &stderr, 0).unwrap();
        let kept = out["stderr"].as_str().unwrap();
        assert!(kept.len() <= MAX_LOG && kept.chars().all(|c| c == '€'));
    }

    #[test]
    fn says_what_went_wrong() {
        assert_eq!(
            decode("p", "", "", 0).unwrap_err().message,
            "p printed no result"
        );
        assert_eq!(
            decode("p", "", "boom\n", 3).unwrap_err().message,
            "p printed no result and exited with code 3: boom"
        );
        assert!(
            decode("p", "[1]", "", 0)
                .unwrap_err()
                .message
                .starts_with("p printed an invalid result")
        );
        let refused = decode(
            "p",
            r#"{"ok":false,"message":"no","retryable":false}"#,
            "",
            0,
        )
        .unwrap_err();
        assert_eq!((refused.message.as_str(), refused.retryable), ("no", false));
    }
}
