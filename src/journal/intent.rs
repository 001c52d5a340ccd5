//! Start intents: how a durable start costs a step no time, and what one left behind means.
//!
//! A step with a durable start has its [`Record::StepIntent`] synced before it begins, while
//! the step ahead of it in its slot is still running where it can; its `step_started` is then
//! only written, not synced, as it begins. A `write` that returned is the kernel's: a killed
//! ripcord loses none of it, only a machine that stops does. So an intent that is the last word
//! on its step (no `step_started`, no end) means:
//! - the step never began, when the session that read the journal runs on the machine that
//!   wrote it, in the same boot: its `step_started` would be there had it begun;
//! - it is in doubt otherwise (the machine restarted since, the journal is read on another
//!   machine, a boot id could not be read): the `step_started` may have been lost with the
//!   machine's memory, after the step began.
//!
//! A later session decides it once: a pending intent is judged by the boot of the session that
//! follows it (`resumed`, `rollback_started` carry theirs), or by this machine's boot when it
//! is the journal's last session; an intent its session outlived (`run_finished`,
//! `interrupted` after it: nothing starts after those) never began, on any boot. Resume,
//! rollback and the report judge it alike through [`lost_launches`] and [`as_read`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use super::Record;

/// This machine's boot id (`/proc/sys/kernel/random/boot_id`), or `None` when it cannot be
/// read. The crash tests stand for a restart with `RIPCORD_TEST_BOOT_ID`.
pub fn boot_id() -> Option<String> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        let id = match std::env::var("RIPCORD_TEST_BOOT_ID") {
            Ok(id) => id,
            Err(_) => std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?,
        };
        Some(id.trim().to_string()).filter(|id| !id.is_empty())
    })
    .clone()
}

/// The indexes in `records` of the intents whose step may have begun with its `step_started`
/// lost: pending when a later session began on another boot (or the journal ends and `now` is
/// another boot), with either boot unknown counting as another.
pub fn lost_launches(records: &[Record], now: Option<&str>) -> Vec<usize> {
    let mut pending: HashMap<&str, (usize, Option<&str>)> = HashMap::new();
    let mut lost = Vec::new();
    let judge = |pending: &mut HashMap<&str, (usize, Option<&str>)>,
                 lost: &mut Vec<usize>,
                 reader: Option<&str>| {
        for (_, (at, wrote)) in pending.drain() {
            if wrote.is_none() || wrote != reader {
                lost.push(at);
            }
        }
    };
    for (n, r) in records.iter().enumerate() {
        match r {
            Record::StepIntent { step, boot_id, .. } => {
                pending.insert(step, (n, boot_id.as_deref()));
            }
            Record::StepStarted { step, .. } | Record::StepFinished { step, .. } => {
                pending.remove(step.as_str());
            }
            Record::Resumed { boot_id, .. } | Record::RollbackStarted { boot_id, .. } => {
                judge(&mut pending, &mut lost, boot_id.as_deref());
            }
            // The session started nothing after these, and a record that is there vouches for
            // every byte before it (a lost line in the middle is a checksum failure, not a gap):
            // a step that began would have its `step_started` before them.
            Record::RunFinished { .. } | Record::Interrupted { .. } => pending.clear(),
            _ => {}
        }
    }
    judge(&mut pending, &mut lost, now);
    lost.sort_unstable();
    lost
}

/// The records as a session reads them: each intent of `lost` (from [`lost_launches`]) stands
/// as the first attempt's `step_started` it may have been, so that what follows (in doubt,
/// undone when started, a try of unknown end in the report) is what a lost start record would
/// give.
pub fn as_read<'a>(records: &'a [Record], lost: &[usize]) -> Cow<'a, [Record]> {
    if lost.is_empty() {
        return Cow::Borrowed(records);
    }
    let mut records = records.to_vec();
    for &at in lost {
        if let Some(Record::StepIntent { t_ms, step, .. }) = records.get(at) {
            records[at] = Record::StepStarted {
                t_ms: *t_ms,
                step: step.clone(),
                attempt: 1,
            };
        }
    }
    Cow::Owned(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(step: &str, boot: Option<&str>) -> Record {
        Record::StepIntent {
            t_ms: 1,
            step: step.into(),
            boot_id: boot.map(str::to_string),
        }
    }

    fn started(step: &str) -> Record {
        Record::StepStarted {
            t_ms: 2,
            step: step.into(),
            attempt: 1,
        }
    }

    fn resumed(boot: Option<&str>) -> Record {
        Record::Resumed {
            t_ms: 3,
            pid: 1,
            at: String::new(),
            operator: String::new(),
            by: None,
            inputs: Default::default(),
            boot_id: boot.map(str::to_string),
        }
    }

    #[test]
    fn an_intent_left_pending_is_lost_only_across_a_restart() {
        let records = vec![
            intent("a", Some("b1")),
            started("a"),
            intent("b", Some("b1")),
        ];
        // Same boot: b never began; a began (its start is there).
        assert!(lost_launches(&records, Some("b1")).is_empty());
        // Another boot, or none known: b may have begun.
        assert_eq!(lost_launches(&records, Some("b2")), vec![2]);
        assert_eq!(lost_launches(&records, None), vec![2]);
        let unknown = vec![intent("b", None)];
        assert_eq!(lost_launches(&unknown, Some("b1")), vec![0]);
    }

    #[test]
    fn an_intent_its_session_outlived_never_began() {
        use crate::journal::record::RunStatus;
        for end in [
            Record::RunFinished {
                t_ms: 5,
                status: RunStatus::Failed,
                at: None,
            },
            Record::Interrupted {
                t_ms: 5,
                signal: "SIGINT".into(),
                at: None,
            },
        ] {
            let records = vec![intent("b", Some("b1")), end];
            assert!(lost_launches(&records, Some("b2")).is_empty());
        }
    }

    #[test]
    fn the_session_after_it_judges_it_once() {
        // Resumed in the same boot: b had not begun, whatever the boot of a later reader.
        let mut records = vec![intent("b", Some("b1")), resumed(Some("b1"))];
        assert!(lost_launches(&records, Some("b9")).is_empty());
        // Resumed after a restart: in doubt, for every later reader.
        records[1] = resumed(Some("b2"));
        assert_eq!(lost_launches(&records, Some("b2")), vec![0]);
        let read = as_read(&records, &lost_launches(&records, Some("b2")));
        assert_eq!(
            read[0],
            Record::StepStarted {
                t_ms: 1,
                step: "b".into(),
                attempt: 1
            }
        );
    }
}
