//! Where runs live: their journals, their locks and the answers to their approvals, behind one
//! small trait so that a run session does not care whether they are in a local directory (the
//! default, [`StateDir`]) or, next, in a shared database.
//!
//! A backend gives out three things: locks on scopes (a runbook's name, a run id), journal
//! writers that append records and make them durable on `commit`, and a mailbox of approval
//! answers that another process (`ripcord approve`) posts and the run reads.

pub mod dir;
pub mod lock;
pub mod pg;

use std::io;

use serde::{Deserialize, Serialize};

use crate::journal::{ReadJournal, Record};
use crate::session::identity::Identity;

pub use dir::StateDir;
pub use lock::{LeaseInfo, LockError, LockHolder};
pub use pg::PgState;

/// What a lock is taken on. Runs of one runbook exclude each other by its name; every session
/// that writes a run's journal (run, resume, rollback) holds the run's id first, so two writers
/// can never share one journal, whatever the runbook is called now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Runbook(String),
    Run(String),
    /// A scope of the runbook's `locks:` (`"service:orders"`), shared across runbooks.
    Resource(String),
}

impl Scope {
    /// What a `locks:` scope may be called: 1-200 of letters, digits and `._:/@-`.
    pub fn is_resource_name(name: &str) -> bool {
        (1..=200).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:/@-".contains(c))
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Runbook(name) => write!(f, "runbook `{name}`"),
            Scope::Run(id) => write!(f, "run {id}"),
            Scope::Resource(name) => write!(f, "scope `{name}`"),
        }
    }
}

/// Answers once what was appended before it is durable.
pub type Durable = tokio::sync::oneshot::Receiver<io::Result<()>>;
/// The answering end of a [`Durable`].
pub type DurableSender = tokio::sync::oneshot::Sender<io::Result<()>>;

/// Appends records to one run's journal.
pub trait JournalWriter: Send {
    /// Appends one record; written at once, durable at the next [`JournalWriter::commit`].
    fn append(&mut self, record: &Record) -> io::Result<()>;
    /// Makes everything appended so far durable.
    fn commit(&mut self) -> io::Result<()>;
    /// Makes everything appended so far durable, without waiting: the receiver answers once it
    /// is (a file's fdatasync runs on a thread of its own meanwhile, shared by every commit that
    /// comes while one is under way). By default, [`JournalWriter::commit`] at once.
    fn commit_later(&mut self) -> io::Result<Durable> {
        self.commit()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(Ok(()));
        Ok(rx)
    }
    /// Whether a step's start may be promised ahead with a [`Record::StepIntent`] (made durable
    /// before the step begins), its `step_started` then only written: `Some(boot id)` for a
    /// journal whose writes a killed ripcord cannot lose (a file: the kernel holds them), `None`
    /// where the start record itself is made durable (a database, whose writes wait in this
    /// process; a dry-run).
    fn promises_starts(&self) -> Option<Option<String>> {
        None
    }
    /// An error when something already written can no longer be taken as durable (a file's
    /// fdatasync failed, even one nobody waited for): the session must not record an end.
    fn healthy(&self) -> io::Result<()> {
        Ok(())
    }
    /// Hands what was appended to the store without waiting for durability where that is
    /// cheaper (a file is written at once: nothing to do; a database sends it).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Whether this session may still start something (its lease is its own and fresh).
    fn fence(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// How often a running session checks [`JournalWriter::fence`] while steps run (`None`:
    /// its locks cannot lapse).
    fn watch_every(&self) -> Option<std::time::Duration> {
        None
    }
}

/// A held lock; released when dropped (and by the OS if the process dies).
pub trait HeldLock: Send {
    /// When it was taken over from a holder that stopped renewing it: who that was.
    fn taken_from(&self) -> Option<String> {
        None
    }
}

/// An answer to a waiting approval, posted by `ripcord approve`. Who gave it is what the
/// backend can vouch for, not what the answer says: the directory backend takes the account
/// from the answer file's owner (a `by` written by hand into a file names its writer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The backend's name for it, unique within the run (set when read).
    #[serde(default, skip_serializing)]
    pub id: String,
    pub step: String,
    /// Which wait it answers (the `ask` of the run's `approval_waiting` record): an answer
    /// given to one wait never approves a later one.
    pub ask: String,
    pub approve: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub by: Identity,
    pub at: String,
}

pub trait StateBackend: Send + Sync {
    /// Where the state is, for messages.
    fn location(&self) -> String;
    /// The flags that name this state in a printed command, from any shell and directory.
    fn again(&self) -> &str;
    /// Shared between machines (a database), each keeping a local copy of the journals it
    /// writes, which `resume --break-glass` can finish a run from.
    fn shared(&self) -> bool {
        false
    }
    /// Creates a new run; a taken id gets a suffix. Returns the id.
    fn create_run(&self, wanted: &str) -> io::Result<String>;
    /// Removes a run that never got a journal (its session could not start).
    fn discard_run(&self, run_id: &str);
    /// Takes `scope` for `holder`. `takeover`: a run's lease that its holder stopped renewing
    /// may be taken (`resume --takeover`); a backend whose locks die with their holder ignores
    /// it.
    fn lock(
        &self,
        scope: &Scope,
        holder: &LockHolder,
        takeover: bool,
    ) -> Result<Box<dyn HeldLock>, LockError>;
    /// Whether a session holds `scope` now (a run being worked on), without taking it.
    fn is_held(&self, scope: &Scope) -> io::Result<bool>;
    /// The journal of a new run.
    fn create_journal(&self, run_id: &str, durable: bool) -> io::Result<Box<dyn JournalWriter>>;
    /// A recorded run's journal, to append to (a torn last line is cut off first).
    fn reopen_journal(&self, run_id: &str, durable: bool) -> io::Result<Box<dyn JournalWriter>>;
    /// A recorded run's journal, read; a clear error when there is no such run.
    fn read_run(&self, run_id: &str) -> io::Result<ReadJournal>;
    /// Every recorded run's id.
    fn run_ids(&self) -> io::Result<Vec<String>>;
    /// Posts an answer to a run's approval; durable when this returns.
    fn post_answer(&self, run_id: &str, answer: &Answer) -> io::Result<()>;
    /// Every answer posted to a run, each with its `id` and its `by` as the backend vouches.
    fn answers(&self, run_id: &str) -> io::Result<Vec<Answer>>;
    /// Why this session's leases are no longer its own, once they are not.
    fn lease_lost(&self) -> Option<String> {
        None
    }
    /// Whether this session may begin an effect now (its leases are its own and fresh). No I/O.
    fn may_start(&self) -> io::Result<()> {
        Ok(())
    }
    /// Tells `until` each moment (boot clock, ms) past which this session's leases may be taken
    /// over, now and after every renewal; nothing for a backend whose locks cannot lapse.
    fn watch_deadline(&self, _until: Box<dyn Fn(u64) + Send + Sync>) {}
}

/// The state that `--state`, `--state-dir`, `$RIPCORD_STATE` and `$RIPCORD_STATE_DIR` name, in
/// that order (default `.ripcord`): a directory, or a PostgreSQL database by URL.
pub fn open(args: &crate::cli::StateArgs) -> io::Result<std::sync::Arc<dyn StateBackend>> {
    let ttl = args.lease_ttl.unwrap_or(std::time::Duration::from_secs(30));
    let env = std::env::var("RIPCORD_STATE")
        .ok()
        .filter(|s| !s.is_empty());
    let chosen = match (&args.state, &args.state_dir) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(dir)) => {
            check_dir(&dir.to_string_lossy(), "--state-dir")?;
            return Ok(std::sync::Arc::new(StateDir::resolve(Some(dir))));
        }
        (None, None) => env,
    };
    if chosen.is_none()
        && let Ok(dir) = std::env::var("RIPCORD_STATE_DIR")
    {
        check_dir(&dir, "$RIPCORD_STATE_DIR")?;
    }
    if let Some(value) = &chosen {
        check_location(value)?;
    }
    match chosen {
        Some(url) if pg::is_url(&url) => Ok(std::sync::Arc::new(PgState::open(&url, ttl)?)),
        Some(dir) => Ok(std::sync::Arc::new(StateDir::resolve(Some(
            std::path::Path::new(&dir),
        )))),
        None => Ok(std::sync::Arc::new(StateDir::resolve(None))),
    }
}

/// `--state-dir` and `$RIPCORD_STATE_DIR` name directories: a URL there is refused, not made
/// into a local directory of that name.
pub fn check_dir(value: &str, what: &str) -> io::Result<()> {
    let scheme_like = value.split_once(':').is_some_and(|(s, rest)| {
        rest.starts_with('/')
            && !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    });
    if scheme_like {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what} {} looks like a URL: it takes a directory (a shared database is \
                 --state or $RIPCORD_STATE)",
                pg::without_password(value)
            ),
        ));
    }
    Ok(())
}

/// A state location that looks like a URL but is not a PostgreSQL one (`postgress://`,
/// `postgres:/`, ` postgres://` with a space) is refused: taken as a directory, it would record
/// the run on this machine alone, holding no shared lock.
fn check_location(value: &str) -> io::Result<()> {
    let refuse = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--state {}: {why}; a shared state is postgres://USER@HOST[:PORT]/DB, a local one \
                 a directory",
                pg::without_password(value.trim())
            ),
        ))
    };
    if value.trim() != value || value.is_empty() {
        return refuse("it begins or ends with a space");
    }
    if pg::is_url(value) {
        return Ok(());
    }
    let scheme = value.split_once(':').map(|(s, _)| s).filter(|s| {
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    });
    match scheme {
        Some(s) if s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql") => {
            refuse("write the URL as postgres://… (lower case, two slashes)")
        }
        Some(s) if value[s.len()..].starts_with(":/") => {
            refuse(&format!("`{s}:` is not a state ripcord knows"))
        }
        _ => Ok(()),
    }
}
