//! `ssh.run`: a command on another host, through the system OpenSSH client, so the operator's
//! `~/.ssh/config`, agent, jump hosts and certificates keep working.
//!
//! - **One connection per host per session.** The first step for a target (host, user, port,
//!   identity, known_hosts) starts a master (`ssh -N -M`) whose control socket lives in a private
//!   (0700) directory of the session; every step for that target is a client of it
//!   (`ControlMaster=no`), at most [`MAX_SESSIONS`] at once. The master is a child of ripcord in a process group told to the
//!   supervisor, so it ends with the session: closed when the providers are dropped (a normal
//!   end, an interrupt), killed with the step groups after `kill -9`.
//! - **Host keys are checked strictly** (`StrictHostKeyChecking=yes`, `BatchMode=yes`,
//!   `UpdateHostKeys=no`): an unknown or changed key fails the master, so the step fails
//!   before anything runs on the host. With `known_hosts`, that file is the only one consulted.
//! - **Nothing secret on a command line.** The remote command line is a fixed bootstrap (see
//!   [`BOOTSTRAP`]) and the step's argv. `env` travels on the connection's stdin, ahead of the
//!   step's own `stdin`, each value written as octal escapes on one line; the bootstrap reads
//!   those lines, exports them, and hands the rest of stdin to the command.
//! - **Outputs as for local steps.** The bootstrap gives the command a fresh private directory
//!   for `$RIPCORD_OUTPUT` and, once it has ended, prints a per-attempt random boundary, the
//!   exit code, and the output file's `key=value` lines after the command's stdout. No boundary
//!   means the command never ran or its end was not seen (ssh's own error is on stderr).
//! - **Cancellation** (timeout, interrupt) sends SIGTERM to the bootstrap over the master; it
//!   passes SIGTERM to its process group (the command and its children), then SIGKILL a second
//!   later.
//! - **Check mode** (`run --check`) connects and authenticates, and runs nothing.
//!
//! The remote account's login shell must be POSIX (sh, bash, dash, ksh, zsh): it reads the
//! single-quoted command line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::process::Command;

use super::process::{self, Ended};
use super::shell::{self, MAX_CAPTURE};
use super::{BoxFuture, Failure, OutputMap, Provider, Request, param_str, scalar_text};
use crate::cli::shell_word;
use crate::session::supervisor::{Groups, signal_group};

/// Bytes of the remote `$RIPCORD_OUTPUT` file read back; a larger file fails the step (its
/// last keys would be lost).
const MAX_OUTPUT_FILE: usize = 1024 * 1024;

/// How long a cancelled command's process group has between SIGTERM and SIGKILL.
const REMOTE_GRACE_S: u32 = 1;

/// The remote side of one attempt, run by `sh -c` with `$1` the attempt's directory token, `$2`
/// the step's lock and the rest the command; its stdin is the attempt's boundary (a line), the `env` block
/// (`NAME=escaped` lines up to `.`), then the step's own stdin.
///
/// - Claims the attempt's directory: one already there means the attempt was cancelled before
///   it began, and nothing runs.
/// - Reads the boundary into a variable of its own: not on any command line, not in the
///   command's environment or files, so the command cannot forge its end.
/// - Reads and exports `env` in a subshell that then becomes the command: the bootstrap's own
///   variables (and `PATH`) are untouched by whatever names `env` has. An input that ends before
///   `.` means the client is gone, and nothing runs.
/// - Writes its pid into the attempt's directory at once, so that a cancellation reaches it
///   even while it waits for the lock (nothing has started then: it simply ends).
/// - Takes the step's lock on the host (`$2`: a hash of the run's id and the step's), a
///   directory holding the bootstrap's pid and start time, waiting while that process lives:
///   an attempt of a step (or its undo) started after `kill -9` of ripcord, by `resume` or
///   `rollback`, waits on the host until the earlier attempt's command has ended (it runs on
///   after its connection is gone) instead of running beside it. A holder that is gone, or
///   whose pid now names another process, or that wrote no pid within 10 s, is stale. After a
///   wait it writes a line to stderr first: if ripcord is gone meanwhile, that fails and
///   nothing runs.
/// - Runs the command in the background (so a SIGTERM can be acted on while it runs), in a new
///   session when `setsid` exists, so that what it leaves behind when it exits is killed, as
///   `shell.run` does, and a SIGTERM reaches all of it.
/// - Prints the boundary, the exit code and the output file's size, then the file (at most
///   MAXOUT bytes).
const BOOTSTRAP: &str = r#"d="${TMPDIR:-/tmp}/ripcord-$1"; l="${TMPDIR:-/tmp}/ripcord-step-$2"; shift 2
mkdir -m 700 "$d" 2>/dev/null || { rmdir "$d" 2>/dev/null; echo "ripcord: cancelled, or cannot create $d" >&2; exit 255; }
unlock() { [ "$(sed -n 1p "$l/pid" 2>/dev/null)" = "$$" ] && rm -rf "$l"; }
trap 'rm -rf "$d"; unlock' EXIT
trap 'trap "" TERM; if [ -n "$!" ]; then if [ "$s" ]; then kill -TERM -$!; else kill -TERM $!; fi 2>/dev/null; sleep GRACE; if [ "$s" ]; then kill -KILL -$!; else kill -KILL $!; fi 2>/dev/null; fi; rm -rf "$d"; unlock; exit 143' TERM
echo $$ >"$d/pid"
IFS= read -r b || { echo "ripcord: the connection ended before the command was sent" >&2; exit 255; }
st() { if [ -r "/proc/$1/stat" ]; then sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f20; else LC_ALL=C TZ=UTC0 ps -o lstart= -p "$1" 2>/dev/null; fi; }
s=$(command -v setsid)
w=; n=0
while ! mkdir -m 700 "$l" 2>/dev/null; do
  p=$(sed -n 1p "$l/pid" 2>/dev/null); t=$(sed -n 2p "$l/pid" 2>/dev/null)
  if [ -n "$p" ]; then n=0
    if ! kill -0 "$p" 2>/dev/null || [ "$(st "$p")" != "$t" ]; then
      [ "$(sed -n 1p "$l/pid" 2>/dev/null)" = "$p" ] && mv "$l" "$l.stale.$$" 2>/dev/null && { rm -rf "$l.stale.$$"; continue; }
    fi
  else n=$((n+1)); [ $n -ge 10 ] && { n=0; mv "$l" "$l.stale.$$" 2>/dev/null && { rm -rf "$l.stale.$$"; continue; }; }
  fi
  [ "$w" ] || { echo "ripcord: an earlier attempt of this step (or its undo) still runs on this host (pid ${p:-?}); waiting for it to end" >&2; w=1; }
  sleep 1
done
printf '%s\n%s\n' $$ "$(st $$)" >"$l/pid" || { rm -rf "$l"; echo "ripcord: cannot write $l/pid" >&2; exit 255; }
if [ "$w" ]; then
  trap '' PIPE
  echo "ripcord: the earlier attempt has ended; this one starts" >&2 || exit 255
  trap - PIPE
fi
exec 3<&0
(
  __rc_o="$d/out"; __rc_ok=
  while IFS= read -r __rc_l; do
    [ "$__rc_l" = . ] && { __rc_ok=1; break; }
    __rc_v=$(printf '%bx' "${__rc_l#*=}"); export "${__rc_l%%=*}=${__rc_v%x}"
  done
  [ "$__rc_ok" ] || { echo "ripcord: the connection ended before the command was sent" >&2; exit 255; }
  export RIPCORD_OUTPUT="$__rc_o"
  unset __rc_o __rc_ok __rc_l __rc_v
  exec $s "$@"
) <&3 3<&- &
c=$!
wait $c; rc=$?
[ "$s" ] && kill -KILL -$c 2>/dev/null
trap '' PIPE
n=0; [ -f "$d/out" ] && n=$(wc -c <"$d/out")
printf '%s%s %s\n' "$b" "$rc" $n
head -c MAXOUT "$d/out" 2>/dev/null
exit $rc"#;

/// Who to connect to: one master each.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Target {
    host: String,
    user: Option<String>,
    port: Option<u16>,
    identity: Option<String>,
    known_hosts: Option<String>,
}

impl Target {
    fn of(p: &Json) -> Result<Target, Failure> {
        // An empty `user`, `identity` or `known_hosts` leaves it to ssh (its config, the agent,
        // ~/.ssh/known_hosts): a runbook input cannot be absent, but it can be ''.
        let text = |k: &str| {
            param_str(p, k)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let host = param_str(p, "host").unwrap_or_default().to_string();
        // The schema refuses these too; a value rendered at run time is checked again here,
        // since ssh would read a leading `-` as an option.
        for (what, v) in [("host", Some(&host)), ("user", text("user").as_ref())] {
            if let Some(v) = v
                && (v.is_empty() || v.starts_with('-') || v.chars().any(char::is_whitespace))
            {
                return Err(Failure::permanent(format!(
                    "ssh.run: `{what}` must be a name, not empty, without spaces, not starting with `-`"
                )));
            }
        }
        for what in ["identity", "known_hosts"] {
            if text(what).is_some_and(|v| v.contains(['"', '\\', '\n', '\r'])) {
                return Err(Failure::permanent(format!(
                    "ssh.run: `{what}` is a file name without double quotes, backslashes or line breaks"
                )));
            }
        }
        // A port from a `number` input may arrive as 2222.0: whole, it is that port; anything
        // else is refused, never left to ssh's default.
        let port = match p.get("port") {
            None | Some(Json::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|n| n.fract() == 0.0 && (1.0..=65535.0).contains(n))
                    .map(|n| n as u16)
                    .ok_or_else(|| {
                        Failure::permanent(format!("ssh.run: port {v} is not a port (1-65535)"))
                    })?,
            ),
        };
        Ok(Target {
            host,
            user: text("user"),
            port,
            identity: text("identity"),
            known_hosts: text("known_hosts"),
        })
    }

    /// The options every ssh process for this target takes (master and clients).
    fn options(&self, socket: &Path) -> Vec<String> {
        let mut args: Vec<String> = [
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UpdateHostKeys=no",
        ]
        .map(String::from)
        .to_vec();
        if let Some(user) = &self.user {
            args.extend(["-l".into(), user.clone()]);
        }
        if let Some(port) = self.port {
            args.extend(["-p".into(), port.to_string()]);
        }
        if let Some(identity) = &self.identity {
            // As an option, not `-i`: its value is quoted and its `%` kept literally.
            args.extend([
                "-o".into(),
                format!("IdentityFile={}", ssh_config_word(identity)),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        if let Some(file) = &self.known_hosts {
            args.extend([
                "-o".into(),
                format!("UserKnownHostsFile={}", ssh_config_word(file)),
                "-o".into(),
                "GlobalKnownHostsFile=/dev/null".into(),
            ]);
        }
        args.extend([
            "-o".into(),
            format!("ControlPath={}", ssh_config_word(&socket.to_string_lossy())),
        ]);
        args
    }

    /// A session on the master at `socket` running `remote` (a command line for the remote
    /// login shell).
    fn client(&self, socket: &Path, remote: &str) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args(["-o", "ControlMaster=no", "-o", "RemoteCommand=none"])
            .args(["-o", "LogLevel=ERROR"])
            .args(self.options(socket))
            .arg("--")
            .arg(&self.host)
            .arg(remote);
        ssh
    }

    /// Why ssh refused the host's key: unknown (no line for it) or changed (a line with another
    /// key), and in which file, read with `ssh-keygen -F` (which reads hashed lines too).
    fn host_key_problem(&self) -> String {
        let name = match self.port {
            Some(port) if port != 22 => format!("[{}]:{port}", self.host),
            _ => self.host.clone(),
        };
        let files: Vec<String> = match &self.known_hosts {
            Some(file) => vec![file.clone()],
            None => std::env::var("HOME")
                .map(|home| format!("{home}/.ssh/known_hosts"))
                .into_iter()
                .chain(["/etc/ssh/ssh_known_hosts".to_string()])
                .collect(),
        };
        let listed = files.iter().find(|file| {
            std::process::Command::new("ssh-keygen")
                .args(["-F", &name, "-f", file])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        match listed {
            Some(file) => format!(
                "the host key of {} is not the one {file} has for `{name}`: a changed key (a \
                 reinstalled host, or a machine in the middle). Check the new key's fingerprint \
                 with the host's owner before replacing the line (ssh-keygen -R '{name}' -f {file}; \
                 docs/remote.md)",
                self.describe()
            ),
            None => format!(
                "`{name}` is not in {}: an unknown host key, never accepted on first use. Add \
                 its key after checking its fingerprint (ssh-keyscan; docs/remote.md)",
                files.join(" or ")
            ),
        }
    }

    fn describe(&self) -> String {
        let user = self
            .user
            .as_ref()
            .map_or(String::new(), |u| format!("{u}@"));
        let port = self.port.map_or(String::new(), |p| format!(":{p}"));
        format!("{user}{}{port}", self.host)
    }
}

/// A value for an ssh `-o` option: ssh splits option values on spaces and reads quotes unless
/// the value is quoted, and expands `%` tokens in some of them. (`"`, `\\` and line breaks are
/// refused before.)
fn ssh_config_word(value: &str) -> String {
    let value = value.replace('%', "%%");
    if value.contains([' ', '\t', '\'']) {
        format!("\"{value}\"")
    } else {
        value
    }
}

/// A running master: its process (leading its own group) and control socket.
struct Master {
    child: std::process::Child,
    socket: PathBuf,
    groups: Groups,
}

impl Drop for Master {
    /// Asks the master to end (SIGTERM closes the connection and removes the socket), then
    /// SIGKILL if it has not within a second.
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        signal_group(pid, libc::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        signal_group(pid, libc::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        self.groups.ended(pid);
    }
}

/// Sessions open at once on one connection: sshd's `MaxSessions` default. A step beyond it
/// waits for one to close rather than being refused by the server.
const MAX_SESSIONS: usize = 10;

/// A target's master (once connected), its control socket's path (the same for every master
/// the target has, as the connection is opened again after a drop), and its sessions.
struct Slot {
    master: tokio::sync::Mutex<Option<Master>>,
    socket: PathBuf,
    sessions: Arc<tokio::sync::Semaphore>,
}

impl Slot {
    /// After an attempt that timed out or lost its end: a master that does not answer within
    /// 2 s (frozen, or stuck on a dead connection) is ended, so the next step opens a new one.
    /// One that answers is kept: other steps may be using it.
    async fn drop_if_stuck(&self, target: &Target) {
        let mut check = Command::new("ssh");
        check
            .args(["-O", "check", "-o", "LogLevel=ERROR"])
            .args(target.options(&self.socket))
            .arg("--")
            .arg(&target.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let alive = match check.spawn() {
            Ok(mut child) => matches!(
                tokio::time::timeout(Duration::from_secs(2), child.wait()).await,
                Ok(Ok(status)) if status.success()
            ),
            Err(_) => true,
        };
        if !alive {
            // Dropping the master ends it (SIGTERM, then SIGKILL).
            self.master.lock().await.take();
        }
    }

    fn new(socket: PathBuf) -> Slot {
        Slot {
            master: tokio::sync::Mutex::new(None),
            socket,
            sessions: Arc::new(tokio::sync::Semaphore::new(MAX_SESSIONS)),
        }
    }
}

/// The ssh provider of one session: its masters, and the private directory of their sockets.
#[derive(Default)]
pub struct Ssh {
    masters: Arc<Mutex<Masters>>,
}

#[derive(Default)]
struct Masters {
    dir: Option<tempfile::TempDir>,
    slots: HashMap<Target, Arc<Slot>>,
}

impl Masters {
    /// Closes every master now (they are also closed when dropped).
    fn close(&mut self) {
        self.slots.clear();
    }
}

impl Ssh {
    /// Ends every master: the session is over.
    pub fn close(&self) {
        lock(&self.masters).close();
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        self.close();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Provider for Ssh {
    fn invoke(&self, request: Request) -> BoxFuture {
        let masters = self.masters.clone();
        Box::pin(async move { run(request, &masters).await })
    }
}

/// The control socket of a live master for `target`, started if there is none, and a session
/// on it.
async fn connect(
    target: &Target,
    masters: &Mutex<Masters>,
    request: &Request,
) -> Result<(Arc<Slot>, tokio::sync::OwnedSemaphorePermit), Failure> {
    let slot = {
        let mut all = lock(masters);
        if all.dir.is_none() {
            use std::os::unix::fs::PermissionsExt;
            // A control socket's path must fit a unix socket's 108 bytes: a long $TMPDIR is
            // passed over for /tmp.
            let base = std::env::temp_dir();
            let base = if base.as_os_str().len() > 60 {
                PathBuf::from("/tmp")
            } else {
                base
            };
            let dir = tempfile::Builder::new()
                .prefix("ripcord-ssh-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir_in(base)
                .map_err(|e| {
                    Failure::new(format!("cannot create the ssh socket directory: {e}"))
                })?;
            all.dir = Some(dir);
        }
        let socket = all
            .dir
            .as_ref()
            .expect("created above")
            .path()
            .join(all.slots.len().to_string());
        all.slots
            .entry(target.clone())
            .or_insert_with(|| Arc::new(Slot::new(socket)))
            .clone()
    };
    let session = tokio::select! {
        permit = slot.sessions.clone().acquire_owned() => {
            permit.map_err(|_| Failure::new("the session is closing"))?
        }
        () = request.cancel.cancelled() => return Err(Failure::new("cancelled")),
    };
    // One step per target connects; the others wait for it, then share the connection.
    let mut master = slot.master.lock().await;
    if let Some(m) = master.as_mut() {
        match m.child.try_wait() {
            Ok(None) => return Ok((slot.clone(), session)),
            // The connection dropped (the host rebooted): a new one.
            _ => *master = None,
        }
    }
    *master = Some(start_master(target, &slot.socket, request).await?);
    drop(master);
    Ok((slot, session))
}

async fn start_master(
    target: &Target,
    socket: &Path,
    request: &Request,
) -> Result<Master, Failure> {
    use std::os::unix::process::CommandExt;
    if let Some(file) = &target.known_hosts
        && let Err(e) = std::fs::metadata(file)
    {
        return Err(Failure::permanent(format!(
            "ssh.run: known_hosts file {file}: {e}"
        )));
    }
    let _ = std::fs::remove_file(socket);
    let stderr = tempfile::tempfile()
        .map_err(|e| Failure::new(format!("cannot create a file for ssh's errors: {e}")))?;
    let mut command = std::process::Command::new("ssh");
    command
        .args([
            "-N",
            "-M",
            "-o",
            "ControlPersist=no",
            "-o",
            "LogLevel=ERROR",
        ])
        // A connection that stops answering (a partition, a frozen host) ends within 15 s, so
        // the next step opens a new one instead of waiting on it.
        .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"])
        .args(target.options(socket))
        .arg("--")
        .arg(&target.host)
        .env("RIPCORD_RUN_ID", &request.run_id)
        .env("RIPCORD_SESSION", request.groups.session())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            stderr
                .try_clone()
                .map_err(|e| Failure::new(format!("ssh's error file: {e}")))?,
        )
        // Away from the terminal's Ctrl-C: the session closes it when it ends.
        .process_group(0);
    let child = command
        .spawn()
        .map_err(|e| Failure::permanent(format!("cannot run `ssh`: {e}")))?;
    request.groups.started(child.id() as i32);
    let mut master = Master {
        child,
        socket: socket.to_path_buf(),
        groups: request.groups.clone(),
    };
    let mut wait = Duration::from_millis(1);
    loop {
        if let Ok(Some(status)) = master.child.try_wait() {
            let why = last_line(&read_all(stderr));
            let why = if why.is_empty() {
                format!("ssh exited with {status}")
            } else {
                why
            };
            // A host key problem or a refused login will not mend by itself.
            let permanent = why.contains("Host key verification failed")
                || why.contains("host key")
                || why.contains("HOST IDENTIFICATION")
                || why.contains("Permission denied")
                || why.contains("too long for Unix domain socket");
            let message = if why.contains("Host key verification failed") {
                format!("ssh.run: {}; nothing ran", target.host_key_problem())
            } else {
                format!(
                    "ssh.run: cannot connect to {}: {why}; nothing ran",
                    target.describe()
                )
            };
            return Err(if permanent {
                Failure::permanent(message)
            } else {
                Failure::new(message)
            }
            .nothing_ran());
        }
        if socket.exists() {
            return Ok(master);
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = request.cancel.cancelled() => {
                return Err(Failure::new(format!(
                    "cancelled while connecting to {}", target.describe()
                )).nothing_ran());
            }
        }
        wait = (wait * 2).min(Duration::from_millis(20));
    }
}

fn read_all(mut file: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// `prefix` and `bytes` random bytes in hex.
fn token(prefix: &str, bytes: usize) -> String {
    use std::io::Read;
    let mut random = vec![0u8; bytes];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random));
    if read.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
        for (i, b) in random.iter_mut().enumerate() {
            *b = seed[i % seed.len()];
        }
    }
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// `NAME=value` with every byte of the value as a `printf %b` octal escape: one line whatever
/// the value holds.
fn env_line(name: &str, value: &str) -> String {
    let mut line = String::with_capacity(name.len() + 1 + value.len() * 5 + 1);
    line.push_str(name);
    line.push('=');
    for b in value.bytes() {
        line.push_str(&format!("\\0{b:03o}"));
    }
    line.push('\n');
    line
}

async fn run(request: Request, masters: &Mutex<Masters>) -> Result<OutputMap, Failure> {
    let p = &request.params;
    let target = Target::of(p)?;
    let command: Vec<String> = if let Some(argv) = p.get("argv").and_then(Json::as_array) {
        let argv: Vec<String> = argv
            .iter()
            .map(|a| scalar_text(a).unwrap_or_default())
            .collect();
        if argv.is_empty() {
            return Err(Failure::permanent("argv is empty"));
        }
        argv
    } else if let Some(script) = param_str(p, "script") {
        vec!["sh".into(), "-c".into(), script.into()]
    } else {
        return Err(Failure::permanent("ssh.run needs `argv` or `script`"));
    };
    let boundary = token("RIPCORD-END-", 16);
    let mut input = format!("{boundary}\n");
    if let Some(env) = p.get("env").and_then(Json::as_object) {
        for (k, v) in env {
            let value = scalar_text(v).unwrap_or_default();
            if !crate::runbook::is_identifier(k) || k.starts_with("__rc_") {
                return Err(Failure::permanent(format!(
                    "ssh.run: env name `{k}` is not a variable name (or is one of ripcord's, `__rc_*`)"
                )));
            }
            if value.contains('\0') {
                return Err(Failure::permanent(format!(
                    "ssh.run: env `{k}` holds a NUL byte, which no environment can carry"
                )));
            }
            input.push_str(&env_line(k, &value));
        }
    }
    input.push_str(&env_line("RIPCORD_RUN_ID", &request.run_id));
    input.push_str(&env_line("RIPCORD_STEP", &request.step));
    input.push_str(&env_line("RIPCORD_ATTEMPT", &request.attempt.to_string()));
    input.push_str(".\n");
    if let Some(stdin) = param_str(p, "stdin") {
        input.push_str(stdin);
    }

    // Held until the attempt is over, its cancellation included.
    let (slot, _session) = connect(&target, masters, &request).await?;
    let socket = slot.socket.clone();
    if request.check {
        // Connected and authenticated, host key checked: the check is done, nothing runs.
        return Ok(OutputMap::new());
    }
    // Names the attempt's directory on the host (not a secret: the boundary is).
    let attempt = token("", 8);
    let bootstrap = BOOTSTRAP
        .replace("GRACE", &REMOTE_GRACE_S.to_string())
        .replace("MAXOUT", &(MAX_OUTPUT_FILE + 1).to_string());
    // One command of a step of a run at a time on a host (see BOOTSTRAP).
    let lock = format!(
        "{:08x}{:08x}",
        crc32fast::hash(request.run_id.as_bytes()),
        crc32fast::hash(request.step.as_bytes())
    );
    let mut remote = format!(
        "sh -c {} ripcord-ssh {} {}",
        shell_word(&bootstrap),
        shell_word(&attempt),
        lock
    );
    for word in &command {
        remote.push(' ');
        remote.push_str(&shell_word(word));
    }
    let ssh = target.client(&socket, &remote);
    let program = command[0].clone();
    let ended = process::run(
        ssh,
        Some(input.into_bytes()),
        MAX_CAPTURE + MAX_OUTPUT_FILE + 256,
        &request,
    )
    .await;
    let finished = match ended {
        Ok(Ended::Exited(f)) => f,
        Ok(Ended::Cancelled { stdout, stderr }) => {
            stop_remote(&target, &socket, &attempt).await;
            slot.drop_if_stuck(&target).await;
            return Err(Failure::new(
                "cancelled: the remote command was sent SIGTERM, then SIGKILL",
            )
            .with_output(stdout, stderr));
        }
        Err(e) => return Err(Failure::permanent(e)),
    };
    let end = End::parse(&finished.stdout, &boundary);
    let stderr = tail(&finished.stderr, MAX_CAPTURE).to_string();
    let (code, written) = match end {
        // The remote exit code, confirmed by ssh's own (a connection lost after the command
        // ended makes ssh exit 255), and the output file whole.
        Some(End {
            code,
            size,
            written,
            ..
        }) if i64::from(finished.code()) == code
            // (Bytes that are not UTF-8 were read as U+FFFD: their count cannot be compared.)
            && (written.len() == size.min(MAX_OUTPUT_FILE + 1) || written.contains('\u{FFFD}')) =>
        {
            if size > MAX_OUTPUT_FILE {
                return Err(Failure::permanent(format!(
                    "ssh.run on {}: the command wrote {size} bytes to $RIPCORD_OUTPUT, more than {} KiB",
                    target.describe(),
                    MAX_OUTPUT_FILE / 1024
                ))
                .with_output(tail(end_stdout(&finished.stdout, &boundary), MAX_CAPTURE).to_string(), stderr));
            }
            (code, written)
        }
        _ => {
            slot.drop_if_stuck(&target).await;
            let why = last_line(&finished.stderr);
            let saw_end = end.is_some();
            return Err(Failure::new(format!(
                "ssh.run on {}: {} (ssh exited with code {}){}",
                target.describe(),
                if saw_end {
                    "the connection was lost while the command's outputs came back"
                } else {
                    "the command's end was not seen"
                },
                finished.code(),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            ))
            .with_output(
                tail(end_stdout(&finished.stdout, &boundary), MAX_CAPTURE).to_string(),
                stderr,
            ));
        }
    };
    let stdout = tail(end_stdout(&finished.stdout, &boundary), MAX_CAPTURE);
    let mut outputs = shell::output_lines(written);
    outputs.insert("exit_code".into(), json!(code));
    outputs.insert("stdout".into(), json!(stdout));
    outputs.insert("stderr".into(), json!(stderr));
    outputs.insert("target".into(), json!(target.describe()));
    if code == 0 {
        return Ok(outputs);
    }
    let last = last_line(&stderr);
    let message = if last.is_empty() {
        format!(
            "`{program}` on {} exited with code {code}",
            target.describe()
        )
    } else {
        format!(
            "`{program}` on {} exited with code {code}: {last}",
            target.describe()
        )
    };
    Err(Failure {
        message,
        retryable: true,
        outputs,
        nothing_ran: false,
    })
}

/// What the bootstrap printed after the command ended: `BOUNDARY<code> <size>\n` and then the
/// output file (at most one byte past the limit, to tell an oversized file).
struct End<'a> {
    code: i64,
    size: usize,
    written: &'a str,
}

impl<'a> End<'a> {
    /// The end in `stdout`, at the boundary's first place (the command cannot know it, so
    /// what it printed cannot hold it).
    fn parse(stdout: &'a str, boundary: &str) -> Option<End<'a>> {
        let at = stdout.find(boundary)?;
        let rest = &stdout[at + boundary.len()..];
        let (head, written) = rest.split_once('\n')?;
        let (code, size) = head.split_once(' ')?;
        Some(End {
            code: code.trim().parse().ok()?,
            size: size.trim().parse().ok()?,
            written,
        })
    }
}

/// The command's own stdout: what came before the end.
fn end_stdout<'a>(stdout: &'a str, boundary: &str) -> &'a str {
    stdout.find(boundary).map_or(stdout, |at| &stdout[..at])
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Stops a cancelled attempt on the host, through the master: SIGTERM to its bootstrap, or,
/// when it has not begun, keeps it from beginning (bounded: a dead connection must not hold up
/// the interrupt).
async fn stop_remote(target: &Target, socket: &Path, boundary: &str) {
    // The attempt may not have begun on the host yet: claiming its directory first stops it
    // from beginning (the bootstrap finds it there and leaves). Otherwise it has begun, and its
    // pid is written a moment after the directory.
    let remote = format!(
        "d=\"${{TMPDIR:-/tmp}}/ripcord-{boundary}\"; mkdir -m 700 \"$d\" 2>/dev/null && exit 0; \
         for i in 1 2 3 4 5 6 7 8 9 10; do [ -s \"$d/pid\" ] && break; sleep 0.1 2>/dev/null || sleep 1; done; \
         kill -TERM \"$(cat \"$d/pid\")\""
    );
    let mut ssh = target.client(socket, &remote);
    ssh.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Ok(mut child) = ssh.spawn() {
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines_carry_any_bytes_on_one_line() {
        let line = env_line("A", "x\n'$");
        assert_eq!(line, "A=\\0170\\0012\\0047\\0044\n");
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn env_names_are_variable_names() {
        assert!(crate::runbook::is_identifier("PGPASSWORD"));
        assert!(crate::runbook::is_identifier("_x1"));
        assert!(!crate::runbook::is_identifier("1x"));
        assert!(!crate::runbook::is_identifier("A-B"));
        assert!(!crate::runbook::is_identifier("A=B"));
        assert!(!crate::runbook::is_identifier(""));
    }

    #[test]
    fn a_host_that_would_be_an_option_is_refused() {
        for host in ["-oProxyCommand=touch /tmp/x", "", "a b"] {
            assert!(Target::of(&json!({ "host": host, "argv": ["true"] })).is_err());
        }
        assert!(Target::of(&json!({ "host": "db1", "user": "-x" })).is_err());
        assert!(Target::of(&json!({ "host": "db1", "port": 70000 })).is_err());
        assert!(Target::of(&json!({ "host": "db1", "port": 22.5 })).is_err());
        assert!(Target::of(&json!({ "host": "db1", "port": "22" })).is_err());
        assert_eq!(
            Target::of(&json!({ "host": "db1", "port": 2222.0 }))
                .unwrap()
                .port,
            Some(2222)
        );
        assert!(Target::of(&json!({ "host": "db1.example", "user": "pg", "port": 22 })).is_ok());
    }

    #[test]
    fn option_values_keep_spaces_and_percent_signs() {
        assert_eq!(ssh_config_word("/tmp/a b/%h"), "\"/tmp/a b/%%h\"");
        assert_eq!(ssh_config_word("/plain"), "/plain");
        assert_eq!(ssh_config_word("/tmp/kh'q"), "\"/tmp/kh'q\"");
    }
}
