//! The state directory: `--state-dir`, else `$RIPCORD_STATE_DIR`, else `.ripcord`. It holds
//! `runs/<run id>/journal.jsonl`, `runs/<run id>/answers/` (approvals posted by `ripcord
//! approve`) and `locks/<runbook>.lock`, `locks/run.<run id>.lock`; directories are 0700, files
//! 0600. A new directory entry (a run, its journal, an answer) is made durable by an fsync of
//! the directory that holds it, not only of the file.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::lock::{DirLock, LockError, LockHolder};
use super::{Answer, HeldLock, JournalWriter, Scope, StateBackend};
use crate::journal::{JOURNAL_FILE, Journal, ReadJournal, Record};
use crate::session::identity::Identity;

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// `--state-dir DIR` for printed commands: the directory in full, wherever it came from
    /// (the flag, `$RIPCORD_STATE_DIR`, the default), so that a command works pasted into any
    /// shell in any directory.
    again: String,
}

impl StateDir {
    pub fn resolve(flag: Option<&Path>) -> StateDir {
        let root = match (flag, std::env::var_os("RIPCORD_STATE_DIR")) {
            (Some(dir), _) => dir.to_path_buf(),
            (None, Some(dir)) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(".ripcord"),
        };
        let again = format!(
            " --state-dir {}",
            crate::cli::shell_word(&absolute(&root).to_string_lossy())
        );
        StateDir { root, again }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ensure(dir: &Path) -> io::Result<()> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)
    }

    /// This machine's copies of journals it wrote to a shared database (see `state::pg`).
    pub fn copies_dir(&self) -> PathBuf {
        absolute(&self.root.join("copies"))
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.runs_dir().join(run_id)
    }

    pub fn journal_path(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join(JOURNAL_FILE)
    }

    fn answers_dir(&self, run_id: &str) -> PathBuf {
        self.run_dir(run_id).join("answers")
    }

    pub fn locks_dir(&self) -> io::Result<PathBuf> {
        let dir = self.root.join("locks");
        Self::ensure(&dir)?;
        Ok(dir)
    }

    /// A run id names a directory: refuse one that would leave `runs/`.
    pub fn check_run_id(run_id: &str) -> io::Result<()> {
        Self::check_id(run_id)
    }

    fn check_id(run_id: &str) -> io::Result<()> {
        let ok = !run_id.is_empty()
            && !run_id.starts_with('.')
            && run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a run id is letters, digits, `-`, `_` and `.` (see `ripcord runs`)".to_string(),
            ))
        }
    }
}

/// The lock file of a `locks:` scope: `scope.` and the name with `:`, `/` and `@` spelt out as
/// `%3A`, `%2F`, `%40` (a file name, unlike any runbook's or run's).
fn resource_file(name: &str) -> io::Result<String> {
    if !Scope::is_resource_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid lock scope `{name}`"),
        ));
    }
    let encoded: String = name
        .chars()
        .map(|c| match c {
            ':' => "%3A".to_string(),
            '/' => "%2F".to_string(),
            '@' => "%40".to_string(),
            c => c.to_string(),
        })
        .collect();
    Ok(format!("scope.{encoded}.lock"))
}

/// The `n`-th id tried for a new run wanted as `wanted`: itself, then `wanted-2`, `wanted-3`…
pub fn run_id_candidate(wanted: &str, n: u32) -> String {
    if n == 1 {
        wanted.to_string()
    } else {
        format!("{wanted}-{n}")
    }
}

/// Where `resume --break-glass` marks a shared run as superseded for this account on this
/// machine, whatever the working directory or state directory:
/// `$XDG_STATE_HOME/ripcord/break-glass/RUN_ID` (by default under `~/.local/state`). It holds
/// JSON: `dir`, the local state directory the run went on in, and `note`, the break-glass note.
/// `None` without a usable `$XDG_STATE_HOME` or `$HOME`.
pub fn break_glass_mark(run_id: &str) -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let home = std::env::var_os("XDG_STATE_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".local").join("state"))
        })?;
    Some(home.join("ripcord").join("break-glass").join(run_id))
}

/// `path` from the root, so that a printed command works from any directory.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// fsync of a directory: makes the entries created in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl StateBackend for StateDir {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn again(&self) -> &str {
        &self.again
    }

    /// Creates the directory of a new run; a taken id gets a numeric suffix.
    fn create_run(&self, wanted: &str) -> io::Result<String> {
        let runs = self.runs_dir();
        Self::ensure(&runs)?;
        let mut n = 1;
        loop {
            let id = run_id_candidate(wanted, n);
            match DirBuilder::new().mode(0o700).create(self.run_dir(&id)) {
                Ok(()) => {
                    sync_dir(&runs)?;
                    return Ok(id);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    fn discard_run(&self, run_id: &str) {
        if Self::check_id(run_id).is_ok() {
            let _ = std::fs::remove_dir(self.run_dir(run_id));
        }
    }

    fn lock(
        &self,
        scope: &Scope,
        holder: &LockHolder,
        _takeover: bool,
    ) -> Result<Box<dyn HeldLock>, LockError> {
        let name = match scope {
            Scope::Runbook(name) => format!("{name}.lock"),
            Scope::Run(id) => {
                Self::check_id(id).map_err(LockError::Io)?;
                format!("run.{id}.lock")
            }
            Scope::Resource(name) => resource_file(name).map_err(LockError::Io)?,
        };
        let path = self.locks_dir().map_err(LockError::Io)?.join(name);
        Ok(Box::new(DirLock::acquire(&path, holder)?))
    }

    fn is_held(&self, scope: &Scope) -> io::Result<bool> {
        let name = match scope {
            Scope::Runbook(name) => format!("{name}.lock"),
            Scope::Run(id) if Self::check_id(id).is_ok() => format!("run.{id}.lock"),
            Scope::Run(_) => return Ok(false),
            Scope::Resource(name) => match resource_file(name) {
                Ok(file) => file,
                Err(_) => return Ok(false),
            },
        };
        Ok(super::lock::is_held(&self.root.join("locks").join(name)))
    }

    fn create_journal(&self, run_id: &str, durable: bool) -> io::Result<Box<dyn JournalWriter>> {
        Self::check_id(run_id)?;
        let journal = Journal::create(&self.journal_path(run_id), durable)?;
        if durable {
            sync_dir(&self.run_dir(run_id))?;
        }
        Ok(Box::new(journal))
    }

    fn reopen_journal(&self, run_id: &str, durable: bool) -> io::Result<Box<dyn JournalWriter>> {
        Self::check_id(run_id)?;
        Ok(Box::new(Journal::reopen(
            &self.journal_path(run_id),
            durable,
        )?))
    }

    /// Ids of every recorded run, sorted.
    fn run_ids(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        match std::fs::read_dir(self.runs_dir()) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    if entry.path().join(JOURNAL_FILE).exists() {
                        ids.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        ids.sort();
        Ok(ids)
    }

    fn read_run(&self, run_id: &str) -> io::Result<ReadJournal> {
        Self::check_id(run_id)?;
        let path = self.journal_path(run_id);
        if !path.exists() {
            let known = self.run_ids().unwrap_or_default();
            let mut hint = match known.last() {
                Some(last) => format!("; the newest is {last} (see `ripcord runs{}`)", self.again),
                None => String::new(),
            };
            if self.copies_dir().join(run_id).join(JOURNAL_FILE).exists() {
                hint.push_str(&format!(
                    "\n  this machine has a copy of that run's shared journal: it lives in its \
                     state database (--state postgres://…); if that database is lost, finish it \
                     here with `ripcord resume {run_id}{} --break-glass REASON`",
                    self.again
                ));
            }
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no run `{run_id}` in {}{hint}", self.root.display()),
            ));
        }
        let read = crate::journal::read(&path)?;
        if !matches!(read.records.first(), Some(Record::RunStarted { .. })) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: the journal does not start with the run's start record",
                    path.display()
                ),
            ));
        }
        Ok(read)
    }

    fn post_answer(&self, run_id: &str, answer: &Answer) -> io::Result<()> {
        Self::check_id(run_id)?;
        let dir = self.answers_dir(run_id);
        Self::ensure(&dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = dir.join(format!("{nanos:024}-{}.json", std::process::id()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let json = serde_json::to_vec(answer).map_err(io::Error::other)?;
        file.write_all(&json)?;
        file.sync_all()?;
        sync_dir(&dir)
    }

    fn answers(&self, run_id: &str) -> io::Result<Vec<Answer>> {
        Self::check_id(run_id)?;
        let mut names = Vec::new();
        match std::fs::read_dir(self.answers_dir(run_id)) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    names.push(entry.path());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
        names.sort();
        // An answer being written right now may be partial: it is read on a later poll.
        Ok(names
            .iter()
            .filter_map(|p| {
                use std::os::unix::fs::MetadataExt;
                let owner = std::fs::metadata(p).ok()?.uid();
                let mut answer: Answer = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
                answer.id = p.file_name()?.to_string_lossy().into_owned();
                // The writer is the file's owner; only root's claim of a sudo user is kept
                // (root can write anything anyway: it is recorded as root's claim).
                let claimed = answer.by.sudo_user.take().filter(|_| owner == 0);
                answer.by = Identity::of_uid(owner, claimed, answer.by.host.clone());
                Some(answer)
            })
            .collect())
    }
}
