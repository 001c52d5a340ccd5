//! A fluent runner for the real binary, in the style of just's test builder.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub struct Ripcord {
    command: Command,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Builds the workspace's plugins (postgres, haproxy) next to the ripcord binary, where it
/// finds them, once per test process: every test then sees the same providers, whatever order
/// the tests run in.
fn build_plugins() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let built = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "ripcord-plugin-postgres",
                "-p",
                "ripcord-plugin-haproxy",
            ])
            .current_dir(repo())
            .status()
            .expect("cargo runs");
        assert!(built.success(), "the plugins build");
    });
}

impl Ripcord {
    /// Runs from the repository root, without colour, with a clean environment of ripcord
    /// variables.
    pub fn new() -> Self {
        build_plugins();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ripcord"));
        command
            .current_dir(repo())
            .env("NO_COLOR", "1")
            .env_remove("RIPCORD_STATE_DIR")
            .env_remove("RIPCORD_STATE")
            .env_remove("RIPCORD_PLUGIN_PATH")
            // Break-glass marks go here, not into the account's ~/.local/state.
            .env("XDG_STATE_HOME", state_home());
        Ripcord { command }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.command.current_dir(dir.into());
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    /// Records runs under `dir`.
    pub fn state(self, dir: &Path) -> Self {
        self.env("RIPCORD_STATE_DIR", dir.to_str().expect("UTF-8 temp path"))
    }

    /// Starts without waiting (for signals and locks).
    pub fn spawn(mut self) -> std::process::Child {
        self.command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the ripcord binary starts")
    }

    pub fn run(mut self) -> Output {
        let out = self.command.output().expect("the ripcord binary runs");
        let output = Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !output.stderr.contains("panicked"),
            "ripcord panicked:\n{}",
            output.stderr
        );
        output
    }
}

impl Output {
    /// The JSON lines of `--json` output.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The closing summary line of `run --json`.
    pub fn summary(&self) -> serde_json::Value {
        self.events()
            .into_iter()
            .rfind(|e| e["kind"] == "summary")
            .unwrap_or_else(|| panic!("no summary:\n{}", self.transcript()))
    }

    /// Exit code, stdout and stderr in one text, for snapshots.
    pub fn transcript(&self) -> String {
        let mut text = format!("exit: {}\n", self.code);
        if !self.stdout.is_empty() {
            text.push_str("--- stdout\n");
            text.push_str(&self.stdout);
        }
        if !self.stderr.is_empty() {
            text.push_str("--- stderr\n");
            text.push_str(&self.stderr);
        }
        text
    }
}

/// A real HTTP server on loopback that answers 200 with a small JSON body, recording each
/// request line, and the whole request (headers and body) in `full`.
pub struct HttpServer {
    pub port: u16,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub full: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let full = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (seen, seen_full) = (requests.clone(), full.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                seen.lock().unwrap().push(line.trim().to_string());
                let mut text = line.clone();
                let mut length = 0;
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    text.push_str(&header);
                    header.clear();
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                text.push_str(&String::from_utf8_lossy(&body));
                seen_full.lock().unwrap().push(text);
                let reply = "{\"active\":\"b\",\"healthy\":true}";
                let _ = (&stream).write_all(
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len()).as_bytes(),
                );
            }
        });
        HttpServer {
            port,
            requests,
            full,
        }
    }
}

/// Writes a runbook (or module) into `dir`; its path, for the command line.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write runbook");
    path.display().to_string()
}

/// The live processes (zombies aside) whose command line contains `pattern`, read from /proc
/// directly, so a missing tool cannot make "nothing survived" pass by default.
pub fn live_processes(pattern: &str) -> Vec<u32> {
    ripcord::session::procs::live()
        .into_iter()
        .filter(|p| p.cmdline.contains(pattern))
        .map(|p| p.pid)
        .collect()
}

/// Whether any live process's command line contains `pattern`.
pub fn alive(pattern: &str) -> bool {
    !live_processes(pattern).is_empty()
}

#[test]
fn live_processes_sees_a_running_process_and_not_an_ended_one() {
    let marker = format!("ripcord-live-check-{}", std::process::id());
    let mut child = std::process::Command::new("sh")
        .args(["-c", &format!("sleep 30; : {marker}")])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(alive(&marker), "a running process is seen");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!alive(&marker), "a reaped process is not");
}

/// The records of a run's journal; panics on a corrupt line that is not the last.
pub fn records(state: &Path) -> Option<Vec<serde_json::Value>> {
    let run = std::fs::read_dir(state.join("runs")).ok()?.next()?.ok()?;
    let text = std::fs::read_to_string(run.path().join("journal.jsonl")).ok()?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let whole = line.ends_with('\n');
        let parsed = line.trim_end().rsplit_once('\t').and_then(|(json, crc)| {
            (u32::from_str_radix(crc, 16).ok()? == crc32fast::hash(json.as_bytes()))
                .then(|| serde_json::from_str::<serde_json::Value>(json).ok())
                .flatten()
        });
        match parsed {
            Some(r) if whole => out.push(r),
            _ => assert_eq!(i + 1, lines.len(), "a bad line before the end: {line:?}"),
        }
    }
    Some(out)
}

/// The account of this test process's real uid, as `id -un` says.
/// The id of the (first) run recorded in `state`.
pub fn run_id(state: &Path) -> String {
    records(state).unwrap()[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits (up to 30 s, for a busy machine) until a live process's command line contains
/// `pattern`.
pub fn wait_alive(pattern: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !alive(pattern) {
        assert!(
            std::time::Instant::now() < deadline,
            "no process running `{pattern}`"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A step's row in a JSON report (`report --format json`), by id.
pub fn step<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {report}"))
}

/// This machine's host name, as ripcord records it.
pub fn hostname() -> String {
    let out = std::process::Command::new("hostname").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One `$XDG_STATE_HOME` for every ripcord this test process starts.
pub fn state_home() -> &'static Path {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}
