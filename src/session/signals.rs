//! Signals, once for a whole session: SIGINT, SIGTERM and SIGHUP (a lost SSH session) all stop
//! it the same way, whatever phase it is in (running steps, rolling back, waiting for an
//! approval). The first cancels [`Signals::token`], which every running step and undo watches;
//! the phase records the interruption and ends with exit 3. A second signal exits at once: every
//! record is already written whole, and the steps' process groups are killed first rather than
//! left to run unwatched.

use std::sync::{Arc, Mutex};

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::supervisor::Groups;

const STOPPING: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Before a session's handlers are installed (compiling, a resume waiting for leftovers or
/// asking about a step in doubt), a signal ends ripcord at once with exit 3: nothing is being
/// recorded yet, and no step runs.
pub fn exit_early() {
    extern "C" fn exit_3(_: libc::c_int) {
        // A command reading an input's value (a secret store's CLI) goes first.
        let group = EARLY_GROUP.load(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: kill and _exit are async-signal-safe, and an atomic load is lock-free;
        // nothing else runs in the handler.
        unsafe {
            if group > 0 {
                libc::kill(-group, libc::SIGKILL);
            }
            libc::_exit(i32::from(crate::exit::INTERRUPTED))
        }
    }
    for sig in STOPPING {
        // SAFETY: installs a handler that only calls _exit.
        unsafe {
            libc::signal(sig, exit_3 as *const () as libc::sighandler_t);
        }
    }
}

/// The process group of a command that runs before the session's handlers are installed (an
/// input's `command:`), killed by the early handler: 0 when there is none.
static EARLY_GROUP: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Tells the early handler of a process group to kill on a signal (0: none any more).
pub fn early_group(pgid: i32) {
    EARLY_GROUP.store(pgid, std::sync::atomic::Ordering::SeqCst);
}

#[derive(Clone, Debug)]
pub struct Signals {
    token: CancellationToken,
    name: Arc<Mutex<Option<&'static str>>>,
}

impl Default for Signals {
    /// Signals that never fire (library callers that handle signals themselves).
    fn default() -> Signals {
        Signals {
            token: CancellationToken::new(),
            name: Arc::new(Mutex::new(None)),
        }
    }
}

impl Signals {
    /// Installs the handlers (inside `runtime`'s context) and a task that watches them while
    /// the runtime runs. `again` is printed on a second signal: how to carry on.
    pub fn install(
        runtime: &tokio::runtime::Runtime,
        groups: Groups,
        again: String,
    ) -> std::io::Result<Signals> {
        let _entered = runtime.enter();
        // The early handlers go: tokio's registry would chain to them, and exit at once.
        for sig in STOPPING {
            // SAFETY: restores the default disposition before tokio installs its own.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut streams = [
            ("SIGINT", signal(SignalKind::interrupt())?),
            ("SIGTERM", signal(SignalKind::terminate())?),
            ("SIGHUP", signal(SignalKind::hangup())?),
        ];
        let signals = Signals::default();
        let watch = signals.clone();
        runtime.spawn(async move {
            loop {
                let [(_, int), (_, term), (_, hup)] = &mut streams;
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => "SIGHUP",
                };
                let first = {
                    let mut seen = watch.name.lock().unwrap_or_else(|e| e.into_inner());
                    let first = seen.is_none();
                    seen.get_or_insert(name);
                    first
                };
                if first {
                    watch.token.cancel();
                    continue;
                }
                groups.kill_all();
                groups.close();
                crate::eprintln_quiet!("{name} again: exiting at once{again}");
                std::process::exit(i32::from(crate::exit::INTERRUPTED));
            }
        });
        Ok(signals)
    }

    /// Cancelled by the first signal.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The first signal received, if any.
    pub fn received(&self) -> Option<&'static str> {
        *self.name.lock().unwrap_or_else(|e| e.into_inner())
    }
}
