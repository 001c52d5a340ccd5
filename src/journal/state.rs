//! The state directory: `--state-dir`, else `$RIPCORD_STATE_DIR`, else `.ripcord`. It holds
//! `runs/<run id>/journal.jsonl` and `locks/<runbook>.lock`; directories are 0700, files 0600.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{JOURNAL_FILE, ReadJournal, Record};

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn resolve(flag: Option<&Path>) -> StateDir {
        let root = match (flag, std::env::var_os("RIPCORD_STATE_DIR")) {
            (Some(dir), _) => dir.to_path_buf(),
            (None, Some(dir)) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(".ripcord"),
        };
        StateDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ensure(dir: &Path) -> io::Result<()> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)
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

    pub fn locks_dir(&self) -> io::Result<PathBuf> {
        let dir = self.root.join("locks");
        Self::ensure(&dir)?;
        Ok(dir)
    }

    /// Creates the directory of a new run; a taken id gets a numeric suffix.
    pub fn create_run_dir(&self, wanted: &str) -> io::Result<String> {
        Self::ensure(&self.runs_dir())?;
        let mut n = 1;
        loop {
            let id = if n == 1 {
                wanted.to_string()
            } else {
                format!("{wanted}-{n}")
            };
            match DirBuilder::new().mode(0o700).create(self.run_dir(&id)) {
                Ok(()) => return Ok(id),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Ids of every recorded run, sorted.
    pub fn run_ids(&self) -> io::Result<Vec<String>> {
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

    /// The journal of `run_id`, read; a clear error when there is no such run.
    pub fn read_run(&self, run_id: &str) -> io::Result<ReadJournal> {
        let path = self.journal_path(run_id);
        if !path.exists() {
            let known = self.run_ids().unwrap_or_default();
            let hint = match known.last() {
                Some(last) => format!("; the newest is {last} (see `ripcord runs`)"),
                None => String::new(),
            };
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no run `{run_id}` in {}{hint}", self.root.display()),
            ));
        }
        let read = super::read(&path)?;
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
}
