//! The sessions of a run and the run's one timeline. A run may span several sessions (the
//! first `run`, each `resume`, each `rollback`); each starts with a record carrying its
//! wall-clock start. Every record's time is placed on one axis, milliseconds of wall-clock time
//! since the run started, so the time between sessions (a crash, a wait before resuming) is in
//! the timeline and in the total. In a dry-run the axis is virtual time.
//!
//! Journals of this version start a later session's `t_ms` at the wall-clock time since the run
//! started; journals written before continued from the last record. Both are placed the same way:
//! a session starts at the latest of its own `t_ms`, its wall-clock start, and the end of the
//! session before it.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::journal::Record;
use crate::journal::record::Mode;
use crate::session::identity::Identity;

use super::status_name;

/// One session of a run.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    /// 1 for the first run, then each resume and rollback in turn.
    pub session: usize,
    /// run, resume or rollback.
    pub kind: String,
    /// Who ran it: the OS account (with the sudo user when there was one).
    pub by: String,
    pub host: String,
    pub pid: u32,
    pub started_at: String,
    /// The wall-clock end: the end record's time, or a crashed session's last record's time.
    /// None in a dry-run.
    pub ended_at: Option<String>,
    /// finished, failed, interrupted, or crashed (its journal just stops).
    pub end: String,
    /// The signal that interrupted it.
    pub signal: Option<String>,
    /// Inputs this session gave that changed the recorded ones (secrets masked).
    pub inputs: Map<String, Json>,
    /// Its window on the run's timeline, in ms since the run started.
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Where each record of a journal sits: its session and its time on the run's axis.
pub struct Timeline {
    pub sessions: Vec<SessionRow>,
    /// Per record: its session's number and its time (ms since the run started).
    placed: Vec<(usize, u64)>,
    /// Per session: its first record's `t_ms` and where that is on the axis.
    origins: Vec<(u64, u64)>,
    start: Option<SystemTime>,
    /// A dry-run: the axis is virtual time, with no wall clock.
    dry: bool,
    /// What does not add up in the recorded times (a clock that went back between hosts).
    pub notes: Vec<String>,
}

impl Timeline {
    pub fn of(records: &[Record]) -> Timeline {
        let mut timeline = Timeline {
            sessions: Vec::new(),
            placed: Vec::with_capacity(records.len()),
            origins: Vec::new(),
            start: None,
            dry: false,
            notes: Vec::new(),
        };
        let mut dry = false;
        for (i, r) in records.iter().enumerate() {
            let opened = match r {
                Record::RunStarted {
                    started_at,
                    by,
                    operator,
                    pid,
                    mode,
                    ..
                } if i == 0 => {
                    dry = *mode == Mode::DryRun;
                    timeline.start = parse(started_at);
                    Some(("run", started_at, by, operator, *pid, Map::new()))
                }
                Record::Resumed {
                    at,
                    by,
                    operator,
                    pid,
                    inputs,
                    ..
                } => Some(("resume", at, by, operator, *pid, inputs.clone())),
                Record::RollbackStarted {
                    at,
                    by,
                    pid,
                    inputs,
                    ..
                } => Some(("rollback", at, by, &String::new(), *pid, inputs.clone())),
                _ => None,
            };
            if let Some((kind, at, by, operator, pid, inputs)) = opened {
                let previous_end = timeline.sessions.last().map_or(0, |s| s.end_ms);
                let number = timeline.sessions.len() + 1;
                let since_start = match (timeline.start, parse(at)) {
                    (Some(start), Some(when)) if !dry => match when.duration_since(start) {
                        Ok(d) => d.as_millis().min(u64::MAX as u128) as u64,
                        Err(_) => {
                            timeline.notes.push(format!(
                                "session {number} recorded its start ({at}) before the run's: \
                                 the clocks of the hosts differ; it is placed after the session \
                                 before it"
                            ));
                            0
                        }
                    },
                    (_, None) if !dry => {
                        timeline.notes.push(format!(
                            "session {number} recorded a start that is not a time ({at:?})"
                        ));
                        0
                    }
                    _ => 0,
                };
                let origin = r.t_ms().max(since_start).max(previous_end);
                timeline.origins.push((r.t_ms(), origin));
                let (by, host) = match by {
                    Some(id) => (person(id), id.host.clone()),
                    None => (operator.clone(), String::new()),
                };
                timeline.sessions.push(SessionRow {
                    session: timeline.sessions.len() + 1,
                    kind: kind.into(),
                    by,
                    host,
                    pid,
                    started_at: at.clone(),
                    ended_at: None,
                    end: "crashed".into(),
                    signal: None,
                    inputs,
                    start_ms: origin,
                    end_ms: origin,
                });
            }
            let n = timeline.sessions.len().max(1);
            let t = timeline.offset_in(n, r.t_ms());
            timeline.placed.push((n, t));
            let Some(session) = timeline.sessions.last_mut() else {
                continue;
            };
            session.end_ms = session.end_ms.max(t);
            let end = match r {
                Record::RunFinished { status, .. } if session.kind != "rollback" => Some(*status),
                Record::RollbackFinished { status, .. } if session.kind == "rollback" => {
                    Some(*status)
                }
                Record::Interrupted { signal, .. } => {
                    session.signal = Some(signal.clone());
                    None
                }
                _ => None,
            };
            if let Some(status) = end {
                session.end = match status_name(status) {
                    "succeeded" => "finished",
                    other => other,
                }
                .into();
            }
        }
        timeline.dry = dry;
        // The times shown are points of the one axis (from the run's recorded start and each
        // session's), so that a gap is exactly the difference of the times printed around it.
        let start = timeline.start;
        for s in &mut timeline.sessions {
            if !dry && let Some(at) = wall(start, s.start_ms) {
                s.started_at = at;
            }
            s.ended_at = if dry { None } else { wall(start, s.end_ms) };
        }
        timeline
    }

    /// The session (number) record `i` belongs to.
    pub fn session_of(&self, i: usize) -> usize {
        self.placed[i].0
    }

    /// Where record `i` sits on the run's axis.
    pub fn offset(&self, i: usize) -> u64 {
        self.placed[i].1
    }

    /// Where a `t_ms` recorded in `session` sits on the run's axis.
    pub fn offset_in(&self, session: usize, t_ms: u64) -> u64 {
        match self.origins.get(session.wrapping_sub(1)) {
            Some(&(first, origin)) => origin.saturating_add(t_ms.saturating_sub(first)),
            None => t_ms,
        }
    }

    /// The wall-clock time of a point on the axis; none in a dry-run.
    pub fn wall(&self, offset: u64) -> Option<String> {
        if self.dry {
            return None;
        }
        wall(self.start, offset)
    }

    /// From the first session's start to the last one's end.
    pub fn wall_ms(&self) -> u64 {
        self.sessions.last().map_or(0, |s| s.end_ms)
    }
}

fn parse(at: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(at).ok()
}

fn wall(start: Option<SystemTime>, offset: u64) -> Option<String> {
    let t = start?.checked_add(Duration::from_millis(offset))?;
    // RFC 3339 ends with the year 9999 (a hand-edited journal can go past it).
    let last = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    (t <= last).then(|| humantime::format_rfc3339_millis(t).to_string())
}

/// `alice`, or `bob (sudo, root)`.
fn person(id: &Identity) -> String {
    match &id.sudo_user {
        Some(person) => format!("{person} (sudo, {})", id.account),
        None => id.account.clone(),
    }
}
