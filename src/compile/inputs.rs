//! Typed inputs: checking declarations and defaults, and resolving each input's value from
//! `--input`, then `--input-file`s (the last first), then its `env:` variable, then its
//! `command:`, then its default.

use serde_json::Value as Json;

use crate::diag::{Diag, SourceFile};
use crate::plan::{InputOrigin, ResolvedInput};
use crate::runbook::{InputType, Key, Runbook, Span, Value, ValueKind, duration};

use super::suggest;

/// A file of input values (`--input-file`): a mapping of input names to values of their types
/// (lists and maps as YAML), e.g. an inventory of hosts and groups.
pub struct InputFile {
    pub file: SourceFile,
    pub entries: Vec<(Key, Value)>,
}

impl InputFile {
    pub fn read(path: &std::path::Path) -> Result<InputFile, Vec<Diag>> {
        let (file, value) = crate::runbook::load::load_values(path)?;
        match value.kind {
            ValueKind::Map(entries) => Ok(InputFile { file, entries }),
            ValueKind::Null => Ok(InputFile {
                file,
                entries: Vec::new(),
            }),
            _ => {
                Err(vec![
                Diag::error(
                    "ripcord::input-file",
                    format!("{} is not a mapping of input names to values", path.display()),
                )
                .in_file(&file)
                .label(value.span, format!("{} here", value.a_type()))
                .help("write one `name: value` line per input, e.g. `standby: host=db2 port=5432`")
                .unquoted(),
            ])
            }
        }
    }
}

/// Checks declarations and resolves values. With `require_values`, a required input without a
/// value is an error (plan, run); without, it stays unknown (validate). With `run_commands`,
/// an input's `command:` runs when it is where the value comes from; without, that value stays
/// unknown (validate) or is a stand-in of its type (plan, graph, dry-run).
pub fn resolve(
    runbook: &Runbook,
    file: &SourceFile,
    given: &[(String, String)],
    files: &[InputFile],
    require_values: bool,
    run_commands: bool,
    diags: &mut Vec<Diag>,
) -> Vec<ResolvedInput> {
    let mut out: Vec<ResolvedInput> = Vec::new();
    let decls = runbook
        .inputs
        .as_ref()
        .map(|s| s.value.0.as_slice())
        .unwrap_or(&[]);
    for (name, decl) in decls {
        let span = Span::of(name);
        if !is_identifier(&name.value) {
            diags.push(
                Diag::error(
                    "ripcord::input-name",
                    format!("invalid input name `{}`", name.value),
                )
                .in_file(file)
                .label(span, "input names are identifiers: [A-Za-z_][A-Za-z0-9_]*"),
            );
        }
        let ty = decl.ty.value;
        let default = decl
            .default
            .as_ref()
            .and_then(|d| match check_value(d, ty) {
                Ok(v) => Some(v),
                Err(msg) => {
                    diags.push(
                        Diag::error(
                            "ripcord::input-default",
                            format!("default of input `{}` {msg}", name.value),
                        )
                        .in_file(file)
                        .label(d.span, format!("expected {}", ty.as_str())),
                    );
                    None
                }
            });
        let from_arg = given.iter().rev().find(|(k, _)| *k == name.value);
        let from_file = files.iter().rev().find_map(|f| {
            f.entries
                .iter()
                .rev()
                .find(|(k, _)| k.name == name.value)
                .map(|(_, v)| (f, v))
        });
        let from_env = decl
            .env
            .as_ref()
            .and_then(|var| std::env::var(&var.value).ok().map(|v| (var, v)));
        let secret = decl.secret == Some(true);
        // A secret's value is never shown, not even when it is malformed.
        let coerce = |raw: &str, ty| {
            coerce(raw, ty).map_err(|msg| {
                if secret {
                    format!(
                        "the value given is not a valid {} (not shown: the input is secret)",
                        ty.as_str()
                    )
                } else {
                    msg
                }
            })
        };
        let (value, origin) = if let Some((_, raw)) = from_arg {
            match coerce(raw, ty) {
                Ok(v) => (Some(v), InputOrigin::Given),
                Err(msg) => {
                    diags.push(
                        Diag::error(
                            "ripcord::input-value",
                            format!("--input {}: {msg}", name.value),
                        )
                        .in_file(file)
                        .label(Span::of(&decl.ty), format!("declared as {}", ty.as_str())),
                    );
                    (None, InputOrigin::Given)
                }
            }
        } else if let Some((f, v)) = from_file {
            match check_value(v, ty) {
                Ok(v) => (Some(v), InputOrigin::Given),
                Err(msg) => {
                    let msg = if secret {
                        format!(
                            "is not {} (not shown: the input is secret)",
                            crate::runbook::value::with_article(ty.as_str())
                        )
                    } else {
                        msg
                    };
                    diags.push(
                        Diag::error(
                            "ripcord::input-value",
                            format!("input `{}` {msg}", name.value),
                        )
                        .in_file(&f.file)
                        .label(v.span, format!("declared as {}", ty.as_str()))
                        .unquoted(),
                    );
                    (None, InputOrigin::Given)
                }
            }
        } else if let Some((var, raw)) = from_env {
            match coerce(&raw, ty) {
                Ok(v) => (Some(v), InputOrigin::Env),
                Err(msg) => {
                    diags.push(
                        Diag::error(
                            "ripcord::input-value",
                            format!(
                                "environment variable {} (input `{}`): {msg}",
                                var.value, name.value
                            ),
                        )
                        .in_file(file)
                        .label(Span::of(var), "read from here"),
                    );
                    (None, InputOrigin::Env)
                }
            }
        } else if let Some(command) = &decl.command {
            if command.value.is_empty() {
                diags.push(
                    Diag::error(
                        "ripcord::input-command",
                        format!("input `{}`: `command` is empty", name.value),
                    )
                    .in_file(file)
                    .label(Span::of(command), "a program and its arguments"),
                );
                (None, InputOrigin::Command)
            } else if !run_commands {
                // Not run here: unknown to validate; a stand-in of its type for a plan, a
                // graph or a dry-run, which must work without the secret store.
                (
                    require_values.then(|| stand_in(ty, "(from its command)")),
                    InputOrigin::Command,
                )
            } else {
                let argv: Vec<&str> = command.value.iter().map(|a| a.value.as_str()).collect();
                match source_command(&name.value, &argv, COMMAND_TIMEOUT)
                    .and_then(|raw| coerce(&raw, ty))
                {
                    Ok(v) => (Some(v), InputOrigin::Command),
                    Err(msg) => {
                        diags.push(
                            Diag::error(
                                "ripcord::input-command",
                                format!(
                                    "input `{}`: its command `{}` {msg}",
                                    name.value,
                                    argv[0]
                                ),
                            )
                            .in_file(file)
                            .label(Span::of(command), "the value's command")
                            .help(match &decl.env {
                                Some(var) => format!(
                                    "nothing has started; fix the command (try it in a shell), or set {} to give the value another way",
                                    var.value
                                ),
                                None => "nothing has started; fix the command (try it in a shell), or give the value in an --input-file (not on the command line, where `ps` shows it)".to_string(),
                            }),
                        );
                        (None, InputOrigin::Command)
                    }
                }
            }
        } else if default.is_some() {
            (default, InputOrigin::Default)
        } else {
            (None, InputOrigin::Missing)
        };
        if value.is_none()
            && origin == InputOrigin::Missing
            && require_values
            && decl.required == Some(true)
        {
            let how = match &decl.env {
                Some(var) => format!("pass --input {}=VALUE or set {}", name.value, var.value),
                None => format!("pass --input {}=VALUE", name.value),
            };
            diags.push(
                Diag::error(
                    "ripcord::input-missing",
                    format!("required input `{}` has no value", name.value),
                )
                .in_file(file)
                .label(span, "declared required here")
                .help(how),
            );
        }
        // A secret is masked by its value wherever it would be printed; a value this short
        // cannot be (it would hide ordinary text, or show through): refused.
        // (A stand-in for a command's value is not a secret: it is not checked.)
        let stand_in = origin == InputOrigin::Command && !run_commands;
        if secret
            && !stand_in
            && let Some(v) = &value
            && let Some(short) = crate::exec::mask::too_short(v)
        {
            diags.push(
                Diag::error(
                    "ripcord::secret-too-short",
                    format!(
                        "secret input `{}` has a value of {short} character{}: too short to be masked safely",
                        name.value,
                        if short == 1 { "" } else { "s" }
                    ),
                )
                .in_file(file)
                .label(span, "declared secret here")
                .help(format!(
                    "a secret is masked by its value in every log and report; use one of at least {} characters, or declare the input without `secret: true`",
                    crate::exec::mask::MIN_SECRET
                )),
            );
        }
        if out.iter().any(|i| i.name == name.value) {
            continue; // duplicate keys are rejected by the YAML loader already
        }
        out.push(ResolvedInput {
            name: name.value.clone(),
            ty,
            secret: decl.secret == Some(true),
            required: decl.required == Some(true),
            value,
            origin,
            span,
        });
    }
    // A file may be shared by several runbooks (one site's values, an inventory): a key that
    // is no input of this runbook is left for the others, with a warning (saying which input
    // it looks like, for a misspelt one).
    for f in files {
        for (key, _) in &f.entries {
            if !out.iter().any(|i| i.name == key.name) {
                let names: Vec<&str> = out.iter().map(|i| i.name.as_str()).collect();
                let d = Diag::warning(
                    "ripcord::input-unused",
                    format!("`{}` is not an input of this runbook; not used", key.name),
                )
                .help(match suggest(&key.name, names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? (if so, its value is not used)"),
                    None if names.is_empty() => "this runbook declares no inputs".to_string(),
                    None => format!("declared inputs: {}", names.join(", ")),
                });
                diags.push(
                    d.in_file(&f.file)
                        .label(key.span, "not an input of the runbook")
                        .unquoted(),
                );
            }
        }
    }
    for (key, _) in given {
        if !out.iter().any(|i| &i.name == key) {
            let names: Vec<&str> = out.iter().map(|i| i.name.as_str()).collect();
            let mut d = Diag::error(
                "ripcord::input-unknown",
                format!("--input {key}: the runbook has no input `{key}`"),
            );
            d = match suggest(key, names.iter().copied()) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None if names.is_empty() => d.help("this runbook declares no inputs"),
                None => d.help(format!("declared inputs: {}", names.join(", "))),
            };
            diags.push(d);
        }
    }
    out
}

/// A value of type `ty` that is plainly not a real one (`text` for a string): for an input
/// whose `command:` is not run (plan, dry-run), or that has no value in a dry-run.
pub fn stand_in(ty: InputType, text: &str) -> Json {
    match ty {
        InputType::String => Json::String(text.into()),
        // 1, not 0: a port, a count, a size that a schema wants at least 1 of.
        InputType::Integer | InputType::Number => Json::from(1),
        InputType::Boolean => Json::Bool(false),
        InputType::Duration => Json::String("0s".into()),
        InputType::List => Json::Array(Vec::new()),
        InputType::Map => Json::Object(serde_json::Map::new()),
    }
}

/// Clears the early handler's group when an input's command is over, however it ends.
struct Forget;

impl Drop for Forget {
    fn drop(&mut self) {
        crate::session::signals::early_group(0);
    }
}

/// What an input's command may print.
const MAX_COMMAND_OUTPUT: u64 = 1 << 20;

/// How long an input's command may take (a secret store that does not answer).
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs an input's command (no shell; stdin /dev/null; in its own process group, killed whole
/// on timeout) and gives its trimmed stdout. A failure says what went wrong with the command,
/// never what it printed on stdout (a secret store may print half a secret before failing).
fn source_command(
    input: &str,
    argv: &[&str],
    timeout: std::time::Duration,
) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let (program, args) = argv.split_first().ok_or("is empty")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot be run: {e}"))?;
    let pid = child.id() as i32;
    // An interrupt now ends ripcord at once: the command's group goes with it.
    crate::session::signals::early_group(pid);
    let _forget = Forget;
    // Read by threads into shared buffers, so that a process it left behind holding the
    // pipes (a daemon) cannot hold ripcord up: what was read by the command's end is enough.
    type Kept = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;
    let read = |pipe: Option<Box<dyn Read + Send>>, kept: Kept| {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Some(pipe) = pipe {
                // At most 1 MiB and a byte: a value, not a download.
                let mut pipe = pipe.take(MAX_COMMAND_OUTPUT + 1);
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    kept.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            }
            let _ = done.send(());
        });
        finished
    };
    let (out, err) = (Kept::default(), Kept::default());
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        out.clone(),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        err.clone(),
    );
    let started = std::time::Instant::now();
    let deadline = started + timeout;
    let mut told = false;
    let status = loop {
        if !told && started.elapsed() > std::time::Duration::from_secs(1) {
            crate::eprintln_quiet!(
                "waiting for input `{input}` from its command `{}` (up to {})…",
                argv[0],
                crate::runbook::duration::format(timeout)
            );
            told = true;
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() >= deadline => {
                crate::session::supervisor::signal_group(pid, libc::SIGKILL);
                let _ = child.wait();
                return Err(format!(
                    "did not finish within {}",
                    crate::runbook::duration::format(timeout)
                ));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(e) => return Err(format!("could not be waited for: {e}")),
        }
    };
    // Whatever it left in its group goes too, so the pipes close.
    crate::session::supervisor::signal_group(pid, libc::SIGKILL);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    for finished in [stdout, stderr] {
        let _ = finished.recv_timeout(until.saturating_duration_since(std::time::Instant::now()));
    }
    let take = |kept: &Kept| std::mem::take(&mut *kept.lock().unwrap_or_else(|e| e.into_inner()));
    let (stdout, stderr) = (take(&out), take(&err));
    if stdout.len() as u64 > MAX_COMMAND_OUTPUT {
        return Err("printed more than 1 MiB: not a value".into());
    }
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let last: String = last.chars().take(200).collect();
        let how = match status.code() {
            Some(code) => format!("failed with exit code {code}"),
            None => format!("was killed ({status})"),
        };
        return Err(if last.is_empty() {
            how
        } else {
            format!("{how}: {last}")
        });
    }
    let text =
        String::from_utf8(stdout).map_err(|_| "printed bytes that are not UTF-8".to_string())?;
    let value = text.trim();
    if value.is_empty() {
        return Err("printed nothing".into());
    }
    Ok(value.to_string())
}

pub use crate::runbook::is_identifier;

/// Checks a YAML default against the declared type.
pub fn check_value(v: &Value, ty: InputType) -> Result<Json, String> {
    let ok = match (&v.kind, ty) {
        (ValueKind::Str(_), InputType::String) => true,
        (ValueKind::Int(_), InputType::Integer | InputType::Number) => true,
        (ValueKind::Float(_), InputType::Number) => true,
        (ValueKind::Bool(_), InputType::Boolean) => true,
        (ValueKind::Str(s), InputType::Duration) => {
            duration::parse(s).map_err(|e| format!("is not a duration: {e}"))?;
            true
        }
        (ValueKind::Seq(_), InputType::List) => true,
        (ValueKind::Map(_), InputType::Map) => true,
        _ => false,
    };
    if ok {
        Ok(v.to_json())
    } else {
        Err(format!(
            "is {}, but the input is declared {}",
            v.a_type(),
            ty.as_str()
        ))
    }
}

/// Turns a `--input` (or environment) string into a value of the declared type.
pub fn coerce(raw: &str, ty: InputType) -> Result<Json, String> {
    match ty {
        InputType::String => Ok(Json::String(raw.to_string())),
        InputType::Integer => raw
            .trim()
            .parse::<i64>()
            .map(Json::from)
            .map_err(|_| format!("`{raw}` is not an integer")),
        // A whole number stays an integer (`5432`, not `5432.0`): a port, a count.
        InputType::Number => match raw.trim().parse::<i64>() {
            Ok(n) => Ok(Json::from(n)),
            Err(_) => raw
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Json::Number)
                .ok_or_else(|| format!("`{raw}` is not a number")),
        },
        InputType::Boolean => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(Json::Bool(true)),
            "false" | "no" | "off" | "0" => Ok(Json::Bool(false)),
            _ => Err(format!("`{raw}` is not a boolean (true/false)")),
        },
        InputType::Duration => {
            duration::parse(raw.trim()).map(|_| Json::String(raw.trim().to_string()))
        }
        InputType::List => {
            if raw.trim_start().starts_with('[') {
                match serde_json::from_str::<Json>(raw) {
                    Ok(v @ Json::Array(_)) => Ok(v),
                    _ => Err(format!("`{raw}` is not a JSON list")),
                }
            } else if raw.trim().is_empty() {
                Ok(Json::Array(Vec::new()))
            } else {
                // a,b,c: the shell-friendly form
                Ok(Json::Array(
                    raw.split(',')
                        .map(|s| Json::String(s.trim().to_string()))
                        .collect(),
                ))
            }
        }
        InputType::Map => match serde_json::from_str::<Json>(raw) {
            Ok(v @ Json::Object(_)) => Ok(v),
            _ => Err(format!("`{raw}` is not a JSON object")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coerces_each_type() {
        assert_eq!(coerce("42", InputType::Integer).unwrap(), json!(42));
        assert_eq!(coerce("1.5", InputType::Number).unwrap(), json!(1.5));
        assert_eq!(coerce("yes", InputType::Boolean).unwrap(), json!(true));
        assert_eq!(coerce("a, b", InputType::List).unwrap(), json!(["a", "b"]));
        assert_eq!(coerce("[1,2]", InputType::List).unwrap(), json!([1, 2]));
        assert_eq!(
            coerce("{\"a\":1}", InputType::Map).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            coerce("1h30m", InputType::Duration).unwrap(),
            json!("1h30m")
        );
        assert!(coerce("4x", InputType::Integer).is_err());
        assert!(coerce("maybe", InputType::Boolean).is_err());
        assert!(coerce("[1,", InputType::List).is_err());
        assert!(coerce("30", InputType::Duration).is_err());
        assert!(coerce("nan", InputType::Number).is_err());
    }
}
