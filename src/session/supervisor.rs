//! The process supervisor: no process a step started outlives ripcord, even after `kill -9`.
//!
//! Every step's child leads its own process group. A run session starts one small helper, a
//! re-exec of ripcord (`ripcord __supervise`), in a process group of its own and deaf to the
//! terminal's signals. ripcord tells it over a pipe each group that starts (`+PGID`) and ends
//! (`-PGID`). The pipe's write end lives only in ripcord (it is close-on-exec, so no step
//! inherits it): when ripcord dies, however it dies, the helper reads end-of-file, sends
//! SIGTERM to every group still listed, and SIGKILL to what is left a second later. A pipe's
//! EOF needs no `PR_SET_PDEATHSIG` race check: it cannot be missed, even when ripcord dies
//! before the helper has started reading.
//!
//! ripcord tells a group after spawning its leader, so a `kill -9` between the two would leave a
//! group the helper never heard of. Each session has a token, in the environment of every
//! process its steps start (`RIPCORD_SESSION`) and the helper's first line (`=TOKEN`); ripcord
//! ending normally says so (`.`). When the pipe ends without it (ripcord died), the helper also
//! stops every group led by a child of the dead ripcord: a process of this session (not of an
//! earlier or later session of the run, not of another run) that leads its group, is not a
//! session of its own (`setsid` daemons are spared), and whose parent is not one of the
//! session's processes (a daemon's workers in groups of their own are spared).
//!
//! The same [`Groups`] handle also SIGKILLs every live group at once, for an exit that cannot
//! wait (a second interrupt).
//!
//! With shared state, a session's right to act ends with its lease. ripcord tells the helper the
//! moment it ends (`@MS`, on the boot clock, which also counts a suspended machine), and again
//! each time a renewal moves it on. A helper that reaches that moment without hearing of a
//! later one stops every listed group as it would if ripcord had died — ripcord may be frozen
//! (SIGSTOP, a paused VM) and unable to stop its own steps, while another machine takes the run
//! over.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the helper waits between SIGTERM and SIGKILL when ripcord is gone.
const ORPHAN_GRACE: Duration = Duration::from_millis(1000);

/// How long the helper lets lines gather in its pipe between reads.
const BATCH: Duration = Duration::from_millis(50);

/// The hidden subcommand that runs the helper.
pub const SUBCOMMAND: &str = "__supervise";

/// The live process groups of a session's steps, and the helper told of each. Cloned into every
/// attempt; `Groups::default()` tracks groups without a helper (dry-runs, library tests).
#[derive(Clone, Default)]
pub struct Groups {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    live: Mutex<HashSet<i32>>,
    helper: Mutex<Option<Helper>>,
    /// The session's token (empty without a helper).
    session: String,
}

struct Helper {
    pipe: ChildStdin,
    child: Child,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups").finish_non_exhaustive()
    }
}

impl Groups {
    /// Starts the helper. Without it (it cannot be started) steps still run, but a `kill -9`
    /// of ripcord would leave them running: that is refused, as the caller decides.
    pub fn supervised() -> std::io::Result<Groups> {
        // ripcord's own path, so that `ps` shows `ripcord __supervise`; /proc/self/exe when the
        // file was replaced since it started (a rebuild, an upgrade).
        let exe = std::env::current_exe()
            .ok()
            .filter(|p| p.exists())
            .unwrap_or_else(|| "/proc/self/exe".into());
        let mut command = Command::new(exe);
        command
            .arg0("ripcord")
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Away from the terminal's process group: Ctrl-C reaches ripcord, which stops the
            // steps itself; the helper only acts when ripcord is gone.
            .process_group(0);
        let mut child = command.spawn()?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the supervisor has no stdin"))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let groups = Groups {
            inner: Arc::new(Inner {
                session: format!("{}-{nanos}", std::process::id()),
                ..Inner::default()
            }),
        };
        *lock(&groups.inner.helper) = Some(Helper { pipe, child });
        groups.tell(&format!("={}\n", groups.inner.session));
        Ok(groups)
    }

    /// The session's token, for `RIPCORD_SESSION` (empty without a helper).
    pub fn session(&self) -> &str {
        &self.inner.session
    }

    /// A step's process group started.
    pub fn started(&self, pgid: i32) {
        lock(&self.inner.live).insert(pgid);
        self.tell(&format!("+{pgid}\n"));
    }

    /// A step's process group is gone (its leader reaped, the rest killed).
    pub fn ended(&self, pgid: i32) {
        lock(&self.inner.live).remove(&pgid);
        self.tell(&format!("-{pgid}\n"));
    }

    fn tell(&self, line: &str) {
        if let Some(helper) = lock(&self.inner.helper).as_mut() {
            // A helper that died cannot be told; the groups are still killed on every path
            // ripcord controls.
            let _ = helper.pipe.write_all(line.as_bytes());
        }
    }

    /// The session may act until `boot_ms` (see [`boot_ms`]): past it, the helper stops every
    /// group unless told of a later moment first.
    pub fn deadline(&self, boot_ms: u64) {
        self.tell(&format!("@{boot_ms}\n"));
    }

    /// SIGKILLs every live group now.
    pub fn kill_all(&self) {
        for &pgid in lock(&self.inner.live).iter() {
            signal_group(pgid, libc::SIGKILL);
        }
    }

    /// Ends the helper: closes its pipe, on which it kills anything still listed and exits.
    /// Not waited for: it may be between two batched reads, and ripcord has nothing left for
    /// it to do (it is reaped if it has already exited).
    pub fn close(&self) {
        if let Some(mut helper) = lock(&self.inner.helper).take() {
            // An orderly end: only the groups still listed are stopped.
            let _ = helper.pipe.write_all(b".\n");
            drop(helper.pipe);
            let _ = helper.child.try_wait();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds on the boot clock (CLOCK_BOOTTIME: monotonic, and counting time suspended).
pub fn boot_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec that we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts);
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals the process group; it touches no memory.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

fn group_exists(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists; it touches no memory.
    pgid > 0 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// The helper's main: reads `+PGID`/`-PGID` lines until ripcord's end closes the pipe, then
/// stops whatever is still listed.
pub fn supervise() -> u8 {
    // Only the pipe's end stops the helper: not the terminal's Ctrl-C, not a lost session's
    // SIGHUP (ripcord handles those and ends the steps itself).
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: setting a signal's disposition to ignore; no handler runs.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    let mut live: HashSet<i32> = HashSet::new();
    let mut session: Option<String> = None;
    let mut orderly = false;
    let mut deadline: Option<u64> = None;
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        // Wait for input, or for the lease's end when there is one. poll's timeout runs on the
        // monotonic clock, which stands still while the machine is suspended: it is kept short
        // and the boot clock read again.
        let wait = deadline.map(|d| d.saturating_sub(boot_ms()));
        let mut fds = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = wait.map_or(-1, |w| w.min(200) as i32);
        // SAFETY: one pollfd that we own, for fd 0.
        let ready = unsafe { libc::poll(&mut fds, 1, timeout) };
        if ready == 0 {
            // Nothing waiting in the pipe (a later deadline would have been read first): past
            // the lease's end with ripcord silent, its steps stop now.
            if deadline.is_some_and(|d| boot_ms() >= d) {
                stop(scan(&session, live.clone()));
                live.clear();
                deadline = None;
            }
            continue;
        }
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let complete = pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        for line in pending[..complete].split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            let (sign, pgid) = line.split_at(line.len().min(1));
            match (sign, pgid.parse::<i32>()) {
                ("+", Ok(pgid)) => {
                    live.insert(pgid);
                }
                ("-", Ok(pgid)) => {
                    live.remove(&pgid);
                }
                ("@", _) => deadline = pgid.parse().ok(),
                ("=", _) => session = Some(pgid.to_string()),
                (".", _) => orderly = true,
                _ => {}
            }
        }
        pending.drain(..complete);
        // Everything written so far was read (a later deadline with it): past the lease's end,
        // the steps stop, however busy the pipe.
        if deadline.is_some_and(|d| boot_ms() >= d) {
            stop(scan(&session, live.clone()));
            live.clear();
            deadline = None;
        }
        // Read in batches: what ripcord writes waits in the pipe (it is safe there: on EOF it
        // is read first), so a run of many short steps wakes the helper a few times a second,
        // not twice a step. Never past the lease's end.
        let nap = deadline.map_or(BATCH, |d| {
            BATCH.min(Duration::from_millis(d.saturating_sub(boot_ms())))
        });
        std::thread::sleep(nap);
    }
    // ripcord died: groups of its steps it had no time to tell of (see the module's doc).
    let session = session.filter(|_| !orderly);
    stop(scan(&session, live));
    0
}

/// The groups to stop: those listed, and (with the session's token) every group led by a
/// process of the session whose parent is not one of its processes.
fn scan(session: &Option<String>, mut live: HashSet<i32>) -> Vec<i32> {
    if let Some(session) = session {
        let ours: Vec<super::procs::Proc> = super::procs::live()
            .into_iter()
            .filter(|p| p.env("RIPCORD_SESSION").as_deref() == Some(session.as_str()))
            .collect();
        let pids: HashSet<u32> = ours.iter().map(|p| p.pid).collect();
        for p in &ours {
            let leads = p.pgid == p.pid as i32 && p.sid != p.pid as i32;
            if leads && !pids.contains(&p.ppid) {
                live.insert(p.pgid);
            }
        }
    }
    live.into_iter().filter(|&g| group_exists(g)).collect()
}

/// SIGTERM to each group, SIGKILL to what is left after the grace.
fn stop(orphans: Vec<i32>) {
    if orphans.is_empty() {
        return;
    }
    for &g in &orphans {
        signal_group(g, libc::SIGTERM);
    }
    let deadline = Instant::now() + ORPHAN_GRACE;
    while Instant::now() < deadline && orphans.iter().any(|&g| has_live_member(g)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &g in &orphans {
        signal_group(g, libc::SIGKILL);
    }
}

/// Whether a process group has a member that is not a zombie (zombies of a dead parent may
/// linger unreaped in a container, and `kill(-g, 0)` still counts them).
fn has_live_member(pgid: i32) -> bool {
    super::procs::live().iter().any(|p| p.pgid == pgid)
}
