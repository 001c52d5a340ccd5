//! The run journal: one directory per run under the state dir, holding an append-only file of
//! records, one JSON object a line, each line ending in a CRC-32 of its JSON so a torn or
//! corrupted line is detected.
//!
//! Durability follows the design notes, with group commit: records appended during one scheduling
//! tick are written together, with one `write` call, by [`Journal::flush`] — which the executor
//! calls before any step of the tick begins and before it waits, so a killed process loses
//! nothing of a step that started — and [`Journal::commit`] writes them and issues one
//! `fdatasync` for everything since the last commit. Before a step's effect begins, its start is
//! durable: its start intent, synced ahead while other steps run, then its start record written
//! as it begins (see [`intent`]); not for steps that may be run again harmlessly (idempotent or
//! effect-free). Finish records ride on the next commit (if a machine crash loses one, the step
//! is "in doubt" and resume's policy decides). Once an fdatasync failed, every later commit fails.

pub mod intent;
pub mod record;

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use record::Record;

/// The journal file's name inside a run directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// An open journal, appending.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Lines appended and not yet written.
    pending: Vec<u8>,
    dirty: bool,
    /// Dry-runs skip fsync: nothing real happens, so nothing needs to survive a power cut.
    durable: bool,
    appended: u64,
    crash: Option<CrashPoint>,
    /// The thread that runs [`Journal::commit_later`]'s fdatasyncs, once one was asked for.
    syncer: Option<Syncer>,
    /// What this journal's fdatasyncs share, on any thread.
    sync: std::sync::Arc<SyncState>,
}

/// One fdatasync at a time, and none trusted after one failed. After a failed fdatasync the
/// kernel may have dropped what it could not write, and a later one may well succeed without
/// it: every commit after it fails too. Two at once would be worse: the journal's descriptors
/// share one open file, whose writeback error goes to whichever fdatasync sees it first, so the
/// other could succeed while `failed` is not yet set.
#[derive(Debug, Default)]
struct SyncState {
    one: std::sync::Mutex<()>,
    failed: std::sync::OnceLock<String>,
}

impl SyncState {
    /// An error once an fdatasync has failed.
    fn check(&self) -> io::Result<()> {
        match self.failed.get() {
            Some(e) => Err(io::Error::other(format!(
                "an earlier fdatasync of the journal failed ({e}); nothing written since can be \
                 taken as durable"
            ))),
            None => Ok(()),
        }
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        let _one = self.one.lock().unwrap_or_else(|p| p.into_inner());
        self.check()?;
        file.sync_data().map_err(|e| {
            let _ = self.failed.set(e.to_string());
            io::Error::new(e.kind(), format!("fdatasync of the journal failed: {e}"))
        })
    }
}

/// A thread that makes the journal durable for [`Journal::commit_later`]: it takes every request
/// waiting, runs one fdatasync for them all (group commit), and answers each.
#[derive(Debug)]
struct Syncer {
    requests: std::sync::mpsc::Sender<crate::state::DurableSender>,
}

impl Syncer {
    fn start(file: File, sync: std::sync::Arc<SyncState>) -> io::Result<Syncer> {
        let (requests, incoming) = std::sync::mpsc::channel::<crate::state::DurableSender>();
        std::thread::Builder::new()
            .name("ripcord-journal-sync".into())
            .spawn(move || {
                while let Ok(first) = incoming.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(incoming.try_iter());
                    // A request that came before a failure is answered with it here.
                    let synced = sync.sync_data(&file);
                    for w in waiting {
                        let _ = w.send(match &synced {
                            Ok(()) => Ok(()),
                            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                        });
                    }
                }
            })?;
        Ok(Syncer { requests })
    }
}

/// For the crash tests: `RIPCORD_TEST_CRASH_AT_RECORD=N` makes the process SIGKILL itself
/// right after the N-th record this process appends, `N.5` half-way through writing it (a torn
/// line). A kill at an exact point, where a timed one would mostly miss a fast dry-run.
#[derive(Debug, Clone, Copy)]
struct CrashPoint {
    record: u64,
    torn: bool,
}

impl CrashPoint {
    fn from_env() -> Option<CrashPoint> {
        let text = std::env::var("RIPCORD_TEST_CRASH_AT_RECORD").ok()?;
        let (n, torn) = match text.strip_suffix(".5") {
            Some(n) => (n, true),
            None => (text.as_str(), false),
        };
        Some(CrashPoint {
            record: n.parse().ok()?,
            torn,
        })
    }
}

fn die() -> ! {
    // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, so nothing runs after it.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

impl Journal {
    /// Creates the journal of a new run (the file must not exist).
    pub fn create(path: &Path, durable: bool) -> io::Result<Journal> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            pending: Vec::new(),
            dirty: false,
            durable,
            appended: 0,
            crash: CrashPoint::from_env(),
            syncer: None,
            sync: Default::default(),
        })
    }

    /// Opens an existing journal to append to it (resume, rollback). A torn last line is cut
    /// off first so new records start on a line of their own.
    pub fn reopen(path: &Path, durable: bool) -> io::Result<Journal> {
        let read = read(path)?;
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(read.valid_len)?;
        drop(file);
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Journal {
            file,
            path: path.to_path_buf(),
            pending: Vec::new(),
            dirty: true,
            durable,
            appended: 0,
            crash: CrashPoint::from_env(),
            syncer: None,
            sync: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record: written at the next [`Journal::flush`] or [`Journal::commit`].
    pub fn append(&mut self, record: &Record) -> io::Result<()> {
        let line = encode(record);
        self.appended += 1;
        if let Some(c) = self.crash.filter(|c| c.record == self.appended) {
            // Everything appended before it is written, then this record (or half of it).
            self.flush()?;
            if c.torn {
                self.file.write_all(&line.as_bytes()[..line.len() / 2])?;
            } else {
                self.file.write_all(line.as_bytes())?;
            }
            die();
        }
        self.pending.extend_from_slice(line.as_bytes());
        Ok(())
    }

    /// Writes what was appended, in one `write` (not yet fsync'd).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.pending)?;
        self.pending.clear();
        self.dirty = true;
        Ok(())
    }

    /// Makes everything appended so far durable on the sync thread; the receiver answers when
    /// it is.
    pub fn commit_later(&mut self) -> io::Result<crate::state::Durable> {
        self.flush()?;
        self.sync.check()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !(self.dirty && self.durable) {
            let _ = tx.send(Ok(()));
            return Ok(rx);
        }
        if self.syncer.is_none() {
            self.syncer = Some(Syncer::start(self.file.try_clone()?, self.sync.clone())?);
        }
        let syncer = self.syncer.as_ref().expect("started above");
        if let Err(returned) = syncer.requests.send(tx) {
            // The thread is gone (it cannot panic; this is belt and braces): sync here.
            self.sync.sync_data(&self.file)?;
            let _ = returned.0.send(Ok(()));
        }
        // Still dirty: a `commit` after this one waits for a sync of its own, never for one
        // that may still be under way.
        Ok(rx)
    }

    /// Makes everything appended so far durable.
    pub fn commit(&mut self) -> io::Result<()> {
        self.flush()?;
        self.sync.check()?;
        if self.dirty && self.durable {
            self.sync.sync_data(&self.file)?;
        }
        self.dirty = false;
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // A session ending on an error still leaves what it appended.
        let _ = self.flush();
    }
}

impl crate::state::JournalWriter for Journal {
    fn append(&mut self, record: &Record) -> io::Result<()> {
        Journal::append(self, record)
    }

    fn commit(&mut self) -> io::Result<()> {
        Journal::commit(self)
    }

    fn flush(&mut self) -> io::Result<()> {
        Journal::flush(self)
    }

    fn commit_later(&mut self) -> io::Result<crate::state::Durable> {
        Journal::commit_later(self)
    }

    fn promises_starts(&self) -> Option<Option<String>> {
        self.durable.then(intent::boot_id)
    }

    fn healthy(&self) -> io::Result<()> {
        self.sync.check()
    }
}

/// One line: the record's JSON, a tab, its CRC-32 in hex.
pub fn encode(record: &Record) -> String {
    let json = serde_json::to_string(record).expect("records always serialize");
    format!("{json}\t{:08x}\n", crc32fast::hash(json.as_bytes()))
}

/// What a journal file holds.
#[derive(Debug)]
pub struct ReadJournal {
    pub records: Vec<Record>,
    /// Bytes of complete, valid lines; anything after was a torn write.
    pub valid_len: u64,
    /// Whether a torn or unreadable last line was dropped.
    pub torn_tail: bool,
}

/// The first record of a run, unpacked: what resume, rollback, runs and reports start from.
#[derive(Debug, Clone)]
pub struct RunHeader {
    pub run_id: String,
    pub runbook: String,
    pub file: String,
    pub hash: String,
    pub mode: record::Mode,
    /// The runbook's mode the run is in (see [`Record::RunStarted`]).
    pub run_mode: Option<String>,
    /// The `locks:` scopes the run holds.
    pub locks: Vec<String>,
    pub seed: u64,
    pub fail_rate: Option<f64>,
    pub inputs: serde_json::Map<String, serde_json::Value>,
    pub operator: String,
    /// Who started the run (journals of this version on).
    pub by: Option<crate::session::identity::Identity>,
    pub started_at: String,
    pub rto_ms: Option<u64>,
    pub predicted_ms: u64,
}

impl ReadJournal {
    /// The run's start record; `None` when the journal does not begin with one.
    pub fn header(&self) -> Option<RunHeader> {
        match self.records.first()? {
            Record::RunStarted {
                run_id,
                runbook,
                file,
                hash,
                mode,
                run_mode,
                locks,
                seed,
                fail_rate,
                inputs,
                operator,
                by,
                started_at,
                rto_ms,
                predicted_ms,
                ..
            } => Some(RunHeader {
                run_mode: run_mode.clone(),
                locks: locks.clone(),
                fail_rate: *fail_rate,
                run_id: run_id.clone(),
                runbook: runbook.clone(),
                file: file.clone(),
                hash: hash.clone(),
                mode: *mode,
                seed: *seed,
                inputs: inputs.clone(),
                operator: operator.clone(),
                by: by.clone(),
                started_at: started_at.clone(),
                rto_ms: *rto_ms,
                predicted_ms: *predicted_ms,
            }),
            _ => None,
        }
    }
}

/// Reads every record. A bad *last* line is a torn write and is dropped; a bad line followed by
/// good ones is corruption and an error.
pub fn read(path: &Path) -> io::Result<ReadJournal> {
    let file = File::open(path)?;
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let (mut offset, mut valid_len) = (0u64, 0u64);
    let mut bad: Option<(usize, String)> = None;
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        number += 1;
        offset += n as u64;
        if let Some((at, why)) = bad.take() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: line {at} is corrupt ({why}) and is not the last line",
                    path.display()
                ),
            ));
        }
        match decode(&line) {
            Ok(record) => {
                records.push(record);
                valid_len = offset;
            }
            Err(why) => bad = Some((number, why)),
        }
    }
    Ok(ReadJournal {
        records,
        valid_len,
        torn_tail: bad.is_some(),
    })
}

/// One journal line (with its line end) checked and parsed.
pub fn decode(line: &[u8]) -> Result<Record, String> {
    let line = line.strip_suffix(b"\n").ok_or("no line end")?;
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let (json, crc) = text.rsplit_once('\t').ok_or("no checksum")?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| "bad checksum field".to_string())?;
    if crc32fast::hash(json.as_bytes()) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(json).map_err(|e| format!("unreadable record: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::Record;

    fn finished(step: &str) -> Record {
        Record::RunNote {
            t_ms: 1,
            message: step.to_string(),
        }
    }

    #[test]
    fn round_trips_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let mut j = Journal::create(&path, true).unwrap();
        j.append(&finished("a")).unwrap();
        j.append(&finished("b")).unwrap();
        j.commit().unwrap();
        drop(j);
        let good_len = std::fs::metadata(&path).unwrap().len();
        // A write torn halfway through.
        let half = &encode(&finished("c"))[..10];
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(half.as_bytes())
            .unwrap();
        let read = read(&path).unwrap();
        assert_eq!(read.records.len(), 2);
        assert!(read.torn_tail);
        assert_eq!(read.valid_len, good_len);
        // Reopening cuts the torn bytes; new records follow cleanly.
        let mut j = Journal::reopen(&path, true).unwrap();
        j.append(&finished("d")).unwrap();
        j.flush().unwrap();
        let read = super::read(&path).unwrap();
        assert_eq!(read.records.len(), 3);
        assert!(!read.torn_tail);
    }

    #[test]
    fn corruption_before_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let mut text = encode(&finished("a"));
        text.push_str(&encode(&finished("b")).replace("\"b\"", "\"x\""));
        text.push_str(&encode(&finished("c")));
        std::fs::write(&path, text).unwrap();
        assert!(read(&path).is_err());
    }
}
