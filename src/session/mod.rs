//! One run session: what `run`, `resume` and `rollback` each set up before a step moves, in
//! one place and in one order.
//!
//! A session holds the run's locks (the runbook's name and the run's id; for a recorded run the
//! run id is locked *before* its journal is read, and the runbook by the name the journal
//! recorded, so two writers can never share a journal), its journal writer, the process
//! [`supervisor`] that kills every step's process group if ripcord dies, the [`signals`]
//! handler (SIGINT, SIGTERM, SIGHUP → exit 3 in every phase), the runtime (virtual time for a
//! dry-run) and the [`identity`] of whoever runs it. All of it sits behind the
//! [`crate::state::StateBackend`] trait, so where runs are stored is one choice made once.
//!
//! Dropping the session ends it in order: the runtime first (a step's task that is dropped kills
//! its process group), then the supervisor, then the locks. Nothing of it is process-wide: the
//! process groups live in [`supervisor::Groups`], the shell provider's `$RIPCORD_OUTPUT`
//! directory and `$PATH` cache in the session's providers.

pub mod identity;
pub mod procs;
pub mod signals;
pub mod supervisor;

use std::sync::Arc;

use crate::error::{CommandError, CommandResult};
use crate::journal::record::Mode;
use crate::journal::{ReadJournal, RunHeader};
use crate::provider::Providers;
use crate::state::{HeldLock, JournalWriter, LockError, LockHolder, Scope, StateBackend};

use identity::Identity;
use signals::Signals;
use supervisor::Groups;

pub struct Session {
    pub state: Arc<dyn StateBackend>,
    /// Built-in providers and the plugins, found where this command was told to look.
    pub providers: Arc<Providers>,
    pub run_id: String,
    pub mode: Mode,
    pub journal: Box<dyn JournalWriter>,
    pub groups: Groups,
    pub signals: Signals,
    pub by: Identity,
    /// Flags a printed command repeats to reach the same state and plugins.
    pub again: String,
    pub started_at: String,
    /// Leases a new run took from holders that had stopped renewing them, as journal notes.
    pub taken_over: Vec<String>,
    runtime: Option<tokio::runtime::Runtime>,
    _locks: Vec<Box<dyn HeldLock>>,
}

/// A recorded run, claimed: its locks are held, its journal read. `resume` and `rollback` decide
/// what to do from here, then [`Claim::open`] the session.
pub struct Claim {
    pub state: Arc<dyn StateBackend>,
    pub read: ReadJournal,
    pub header: RunHeader,
    locks: Vec<Box<dyn HeldLock>>,
    started_at: String,
    by: Identity,
}

impl Session {
    /// A new run of `runbook`: creates the run, locks the runbook, the run and the runbook's
    /// `locks:` scopes, creates the journal, then the supervisor, runtime and signal handlers.
    pub fn start(
        state: Arc<dyn StateBackend>,
        runbook: &str,
        scopes: &[String],
        wanted_id: &str,
        mode: Mode,
        providers: Arc<Providers>,
    ) -> CommandResult<Session> {
        let by = Identity::current();
        let started_at = crate::exec::now_rfc3339();
        let run_id = state
            .create_run(wanted_id)
            .map_err(|e| crate::invalid!("cannot create a run in {}: {e}", state.location()))?;
        let holder = LockHolder {
            run_id: run_id.clone(),
            pid: std::process::id(),
            started_at: started_at.clone(),
            by: by.to_string(),
            host: by.host.clone(),
            lease: None,
        };
        let locks = [
            Scope::Runbook(runbook.to_string()),
            Scope::Run(run_id.clone()),
        ]
        .into_iter()
        .chain(scopes.iter().map(|s| Scope::Resource(s.clone())))
        .collect::<Vec<_>>()
        .iter()
        .map(|scope| take(state.as_ref(), scope, &holder, false))
        .collect::<CommandResult<Vec<_>>>();
        let locks = match locks {
            Ok(locks) => locks,
            Err(e) => {
                state.discard_run(&run_id);
                return Err(e);
            }
        };
        let journal = state
            .create_journal(&run_id, mode == Mode::Real)
            .map_err(|e| crate::invalid!("cannot create the journal: {e}"))?;
        let taken_over = locks.iter().filter_map(|l| l.taken_from()).collect();
        let mut session = Self::assemble(
            state, run_id, mode, journal, locks, by, started_at, providers,
        )?;
        session.taken_over = taken_over;
        Ok(session)
    }

    /// Claims a recorded run: locks its id, reads its journal, then locks its runbook by the
    /// name the journal recorded. `takeover`: the run's lease may be taken from a holder that
    /// stopped renewing it (`resume --takeover`).
    pub fn claim(
        state: Arc<dyn StateBackend>,
        run_id: &str,
        takeover: bool,
    ) -> CommandResult<Claim> {
        if state.shared() {
            refuse_superseded(run_id)?;
        }
        let by = Identity::current();
        let started_at = crate::exec::now_rfc3339();
        let holder = LockHolder {
            run_id: run_id.to_string(),
            pid: std::process::id(),
            started_at: started_at.clone(),
            by: by.to_string(),
            host: by.host.clone(),
            lease: None,
        };
        // The run's lock first: what is read under it cannot change before this session
        // appends to it.
        let mut locks = vec![take(
            state.as_ref(),
            &Scope::Run(run_id.to_string()),
            &holder,
            takeover,
        )?];
        let (read, header) = read_recorded(state.as_ref(), run_id)?;
        refuse_leftovers(run_id)?;
        locks.push(take(
            state.as_ref(),
            &Scope::Runbook(header.runbook.clone()),
            &holder,
            takeover,
        )?);
        for scope in &header.locks {
            locks.push(take(
                state.as_ref(),
                &Scope::Resource(scope.clone()),
                &holder,
                takeover,
            )?);
        }
        Ok(Claim {
            state,
            read,
            header,
            locks,
            started_at,
            by,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        state: Arc<dyn StateBackend>,
        run_id: String,
        mode: Mode,
        journal: Box<dyn JournalWriter>,
        locks: Vec<Box<dyn HeldLock>>,
        by: Identity,
        started_at: String,
        providers: Arc<Providers>,
    ) -> CommandResult<Session> {
        // A dry-run starts no process; every other session does, and none may outlive ripcord.
        let groups = if mode == Mode::DryRun {
            Groups::default()
        } else {
            Groups::supervised().map_err(|e| {
                crate::invalid!(
                    "cannot start the process supervisor (it stops every step's processes if \
                     ripcord dies): {e}"
                )
            })?
        };
        // Past the lease's end, the supervisor stops the steps even if ripcord cannot (frozen).
        // A pre-flight's steps change nothing: its checks are not cut short.
        if mode == Mode::Real {
            let supervised = groups.clone();
            state.watch_deadline(Box::new(move |boot_ms| supervised.deadline(boot_ms)));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(mode == Mode::DryRun)
            .build()
            .map_err(|e| crate::failed!("cannot start the runtime: {e}"))?;
        let again = format!("{}{}", state.again(), providers.again());
        let resume_hint = format!("; see `ripcord runs{}` and resume {run_id}", state.again());
        let signals = Signals::install(&runtime, groups.clone(), resume_hint)
            .map_err(|e| crate::failed!("cannot install signal handlers: {e}"))?;
        Ok(Session {
            state,
            providers,
            run_id,
            mode,
            journal,
            groups,
            signals,
            by,
            again,
            started_at,
            taken_over: Vec::new(),
            runtime: Some(runtime),
            _locks: locks,
        })
    }

    /// The runtime and the journal, borrowed together: a future run on the one writes the
    /// other.
    pub fn parts(&mut self) -> (&tokio::runtime::Runtime, &mut dyn JournalWriter) {
        (
            self.runtime
                .as_ref()
                .expect("the runtime lives as long as the session"),
            self.journal.as_mut(),
        )
    }

    /// A command that works when pasted: `ripcord VERB RUN_ID` with the state's flags.
    pub fn command(&self, verb: &str) -> String {
        format!("ripcord {verb} {}{}", self.run_id, self.again)
    }
}

impl Claim {
    /// Opens the session on the claimed run: its journal reopened for appending.
    pub fn open(self, providers: Arc<Providers>) -> CommandResult<Session> {
        let mode = self.header.mode;
        let journal = self
            .state
            .reopen_journal(&self.header.run_id, mode == Mode::Real)
            .map_err(|e| crate::invalid!("cannot open the journal: {e}"))?;
        Session::assemble(
            self.state,
            self.header.run_id,
            mode,
            journal,
            self.locks,
            self.by,
            self.started_at,
            providers,
        )
    }

    /// This session, as the holder of the locks it takes.
    fn holder(&self) -> LockHolder {
        LockHolder {
            run_id: self.header.run_id.clone(),
            pid: std::process::id(),
            started_at: self.started_at.clone(),
            by: self.by.to_string(),
            host: self.by.host.clone(),
            lease: None,
        }
    }

    /// Also holds the `locks:` scopes the runbook names now and the run did not record (a
    /// runbook edited since, resumed with `--force`; a journal older than `locks:`).
    pub fn lock_scopes_also(&mut self, scopes: &[String]) -> CommandResult<()> {
        let holder = self.holder();
        let mut new: Vec<&String> = scopes
            .iter()
            .filter(|s| !self.header.locks.contains(s))
            .collect();
        new.sort();
        for scope in new {
            let lock = take(
                self.state.as_ref(),
                &Scope::Resource(scope.clone()),
                &holder,
                false,
            )?;
            self.locks.push(lock);
        }
        Ok(())
    }

    /// Also locks `runbook` (the run's runbook renamed since it started).
    pub fn lock_also(&mut self, runbook: &str) -> CommandResult<()> {
        let holder = self.holder();
        let lock = take(
            self.state.as_ref(),
            &Scope::Runbook(runbook.to_string()),
            &holder,
            false,
        )?;
        self.locks.push(lock);
        Ok(())
    }

    /// What this claim took over (`--takeover`), or an earlier session took over and could
    /// not record, as journal notes.
    pub fn taken_over(&self) -> Vec<String> {
        let notes: Vec<String> = self.locks.iter().filter_map(|l| l.taken_from()).collect();
        // One note: the run's own lease first, then the runbook's and the scopes' (the same
        // holder's, as a rule) as further lines.
        match notes.split_first() {
            Some((first, rest)) if !rest.is_empty() => {
                vec![format!("{first}\n  also {}", rest.join("\n  also "))]
            }
            _ => notes,
        }
    }

    /// The flags that name the claimed run's state again in a printed command.
    pub fn state_again(&self) -> &str {
        self.state.again()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // An approval prompt may still be blocked on stdin: do not wait for it. Dropping the
        // tasks kills the process groups of any step still running.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        // Connections the steps shared (ssh masters) are closed in order, before the kill.
        self.providers.close();
        self.groups.kill_all();
        self.groups.close();
    }
}

/// A shared run that `resume --break-glass` took to a local directory of this machine is
/// superseded: resuming or rolling it back from the database would act a second time on steps
/// the local run already ran (promote again, repoint back). Break-glass leaves a mark for this
/// account ([`crate::state::dir::break_glass_mark`]); the default local directory is looked at
/// too. Other machines cannot know: the docs tell their operators.
fn refuse_superseded(run_id: &str) -> CommandResult<()> {
    if crate::state::StateDir::check_run_id(run_id).is_err() {
        return Ok(()); // no such local run can exist; the database says what it has
    }
    if let Some(mark) = crate::state::dir::break_glass_mark(run_id) {
        match std::fs::read_to_string(&mark) {
            Ok(text) => {
                let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let dir = json["dir"].as_str().unwrap_or("(unreadable mark)");
                let note = json["note"].as_str().filter(|n| !n.is_empty());
                return Err(superseded(
                    run_id,
                    std::path::Path::new(dir),
                    note,
                    Some(&mark),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(crate::invalid!(
                    "cannot tell whether run {run_id} was taken to a local directory by \
                     break-glass on this machine: its mark {} cannot be read ({e}); acting on \
                     it from the database could run its steps a second time\n  give this \
                     account back its directory {} (a break-glass run as another account, \
                     through sudo, may own it), then try again",
                    mark.display(),
                    mark.parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ));
            }
        }
    }
    let local = crate::state::StateDir::resolve(None);
    let path = local.journal_path(run_id);
    match path.try_exists() {
        Ok(false) => return Ok(()),
        Ok(true) => {}
        Err(e) => {
            // The mark is the rule; this directory is only a second look.
            crate::eprintln_quiet!(
                "ripcord: warning: cannot look for a local run {run_id} in {} ({e})",
                path.display()
            );
            return Ok(());
        }
    }
    let note = crate::journal::read(&path).ok().and_then(|read| {
        read.records.into_iter().find_map(|r| match r {
            crate::journal::Record::RunNote { message, .. }
                if message.starts_with("break-glass by") =>
            {
                Some(message)
            }
            _ => None,
        })
    });
    let root = crate::state::dir::absolute(local.root());
    Err(superseded(run_id, &root, note.as_deref(), None))
}

/// The refusal of a superseded shared run: where it went on, and the two ways forward.
fn superseded(
    run_id: &str,
    dir: &std::path::Path,
    note: Option<&str>,
    mark: Option<&std::path::Path>,
) -> CommandError {
    let shown = crate::cli::shell_word(&dir.to_string_lossy());
    let why = match note {
        Some(note) => format!(
            "run {run_id} was taken to the local directory {} by break-glass on this machine, \
             so the shared run is superseded: resuming or rolling it back from the database \
             would act again on steps the local run already ran\n  the local run: {note}",
            dir.display()
        ),
        None => format!(
            "the local directory {} has a run {run_id} too (a break-glass copy of it?): the \
             shared run may be superseded, and acting on it from the database could run its \
             steps a second time",
            dir.display()
        ),
    };
    let aside = match mark {
        Some(mark) => format!(
            "move {} out of the way and remove {}",
            crate::cli::shell_word(&dir.join("runs").join(run_id).to_string_lossy()),
            crate::cli::shell_word(&mark.to_string_lossy())
        ),
        None => format!(
            "move {} out of the way",
            crate::cli::shell_word(&dir.join("runs").join(run_id).to_string_lossy())
        ),
    };
    crate::invalid!(
        "{why}\n  go on with the local run: `ripcord resume {run_id} --state-dir {shown}` (or \
         `ripcord rollback {run_id} --state-dir {shown}`); to set it aside instead, {aside}"
    )
}

/// Nothing is decided about a run while a process of its steps is alive: it may be half-way
/// through a promotion. Right after a `kill -9` the supervisor is still ending them, so this
/// waits a moment (3 s) before refusing with exit 4.
fn refuse_leftovers(run_id: &str) -> CommandResult<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut left = procs::of_run(run_id);
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = procs::of_run(run_id);
    }
    if left.is_empty() {
        return Ok(());
    }
    let mut message = format!("run {run_id} still has processes of its steps running:");
    for p in &left {
        message.push_str(&format!(
            "\n  pid {} (process group {}), step {}: {}",
            p.pid,
            p.pgid,
            p.env("RIPCORD_STEP").unwrap_or_default(),
            p.cmdline
        ));
    }
    message.push_str("\n  wait for them to end, or stop them (kill -TERM -PGID), then try again");
    Err(CommandError::Locked(message))
}

/// Reads a recorded run and its start record, failing with a message and exit 2.
pub fn read_recorded(
    state: &dyn StateBackend,
    run_id: &str,
) -> CommandResult<(ReadJournal, RunHeader)> {
    let read = state.read_run(run_id).map_err(|e| crate::invalid!("{e}"))?;
    let header = read
        .header()
        .ok_or_else(|| crate::invalid!("run {run_id}: the journal has no start record"))?;
    Ok((read, header))
}

/// Takes one lock, or says who holds it (exit 4).
fn take(
    state: &dyn StateBackend,
    scope: &Scope,
    holder: &LockHolder,
    takeover: bool,
) -> CommandResult<Box<dyn HeldLock>> {
    match state.lock(scope, holder, takeover) {
        Ok(lock) => Ok(lock),
        Err(LockError::Held(Some(h))) => {
            let by = if h.by.is_empty() {
                String::new()
            } else {
                format!(", by {}", h.by)
            };
            let host = if h.host.is_empty() || h.by.ends_with(&format!("@{}", h.host)) {
                String::new()
            } else {
                format!(" on {}", h.host)
            };
            let mut message = match scope {
                Scope::Run(id) if *id == h.run_id => format!(
                    "run {id} is held by another session (pid {}{host}{by}, since {})",
                    h.pid, h.started_at
                ),
                _ => format!(
                    "{scope} is locked by run {} (pid {}{host}{by}, since {})",
                    h.run_id, h.pid, h.started_at
                ),
            };
            if !matches!(scope, Scope::Run(_))
                && h.lease.as_ref().is_none_or(|l| l.age_ms <= l.ttl_ms)
            {
                message.push_str(&format!(
                    "\n  wait for it to end (`ripcord runs{}` shows it), or stop it first",
                    state.again()
                ));
            }
            if let Some(lease) = &h.lease {
                message.push_str(&lease_words(scope, &h, lease, takeover, state.again()));
            }
            Err(CommandError::Locked(message))
        }
        Err(LockError::Held(None)) => Err(CommandError::Locked(format!(
            "{scope} is locked by another session"
        ))),
        Err(LockError::Io(e)) => Err(crate::invalid!(
            "cannot lock {scope} in {}: {e}",
            state.location()
        )),
    }
}

/// What a refused taker of a lease learns: its age, and when and how it may be taken over.
fn lease_words(
    scope: &Scope,
    h: &LockHolder,
    lease: &crate::state::LeaseInfo,
    takeover: bool,
    again: &str,
) -> String {
    let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
    let mut text = format!(
        "\n  its lease (epoch {}) was renewed {} ago; it lasts {}",
        lease.epoch,
        secs(lease.age_ms),
        secs(lease.ttl_ms)
    );
    if lease.age_ms <= lease.ttl_ms {
        let left = lease.ttl_ms - lease.age_ms;
        if takeover {
            text.push_str(&format!(
                "\n  a run is taken over only once its holder has stopped renewing the lease: \
                 if pid {} on {} is dead, try again in {}",
                h.pid,
                if h.host.is_empty() {
                    "its host"
                } else {
                    &h.host
                },
                secs(left + 1)
            ));
        } else if matches!(scope, Scope::Run(_)) {
            text.push_str(&format!(
                "\n  if that holder is dead, take the run over once the lease expires (in {}): \
                 ripcord resume {} --takeover{again} (or rollback {} --takeover)",
                secs(left + 1),
                h.run_id,
                h.run_id
            ));
        }
    } else if matches!(scope, Scope::Run(_)) && !takeover {
        text.push_str(&format!(
            "\n  its holder stopped renewing it: take the run over with \
             `ripcord resume {} --takeover{again}` (or rollback {} --takeover)",
            h.run_id, h.run_id
        ));
    }
    text
}
