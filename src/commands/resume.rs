//! `ripcord resume RUN_ID`: continue a run that was interrupted or crashed. Completed steps are
//! not run again (their outputs are restored from the journal); failed ones are retried; a step
//! that started with no recorded end is "in doubt": re-run when it is `idempotent: true` or with
//! `--retry-in-doubt`, taken as done with `--skip-in-doubt`, otherwise the operator is asked.
//!
//! Never resumed: a run that was rolled back, in full or in part (it is over: what it did was
//! undone, and carrying on would redo half a failover). Never taken as done: an approval whose
//! answer was not journaled (it is asked again). Never decided while a process of the run is
//! still alive (a step of the crashed session that the supervisor could not stop).

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::ResumeArgs;
use crate::error::CommandResult;
use crate::exec::state::{Status, StepState};
use crate::exit;
use crate::journal::JOURNAL_FILE;
use crate::journal::Record;
use crate::journal::record::{RunStatus, StepStatus};
use crate::session::Session;
use crate::session::identity::Identity;
use crate::state::StateDir;

use super::recorded::{final_status, fingerprint, overrides, recompile, replay};
use super::run::{context, drive, sink, write};

pub fn run(args: &ResumeArgs) -> CommandResult {
    let (state, break_glass): (std::sync::Arc<dyn crate::state::StateBackend>, _) =
        match &args.break_glass {
            Some(reason) => {
                let (dir, note) = break_glass(args, reason)?;
                (std::sync::Arc::new(dir), note)
            }
            None => (
                crate::state::open(&args.state).map_err(|e| {
                    // The database may be lost: say what this machine can still do.
                    let copy = StateDir::resolve(None)
                        .copies_dir()
                        .join(&args.run_id)
                        .join(JOURNAL_FILE);
                    if copy.exists() {
                        crate::invalid!(
                            "{e}\n  this machine has a copy of run {}'s journal: if the state \
                             database is lost for good, finish the run here with `ripcord \
                             resume {} --break-glass REASON` (see docs/shared-state.md)",
                            args.run_id,
                            args.run_id
                        )
                    } else {
                        crate::invalid!("{e}")
                    }
                })?,
                None,
            ),
        };
    let mut claim = Session::claim(state, &args.run_id, args.takeover)?;
    let (read, header) = (&claim.read, &claim.header.clone());
    if let Some(rolled) = read.records.iter().find_map(|r| match r {
        Record::RollbackStarted { at, by, .. } => Some((at.clone(), by.clone())),
        _ => None,
    }) {
        let by = rolled.1.map_or_else(String::new, |b| format!(" by {b}"));
        let refused = format!(
            "run {} was rolled back (started {}{by}): a rolled-back run is over and cannot be \
             resumed",
            header.run_id, rolled.0
        );
        // The same inputs as this run (secrets are not recorded: give them again).
        let inputs: String = header
            .inputs
            .iter()
            .filter(|(_, v)| v.as_str() != Some(crate::exec::mask::MASK))
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                format!(" -i {}", crate::cli::shell_word(&format!("{k}={v}")))
            })
            .collect();
        // In its mode: without `--mode`, a test run's new run would be the runbook's default
        // mode (a real switchover, say).
        let mode = header
            .run_mode
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(|m| format!(" --mode {}", crate::cli::shell_word(m)))
            .unwrap_or_default();
        return Err(crate::invalid!(
            "{refused}\n  what it did was undone, in full or in part; start a new run with its inputs:\n  ripcord run {}{mode}{inputs}{}",
            crate::cli::shell_word(&header.file),
            claim.state_again()
        ));
    }
    if final_status(read) == Some(RunStatus::Succeeded) {
        crate::println_quiet!("run {} already succeeded: nothing to resume", header.run_id);
        return Ok(exit::OK);
    }
    let providers = std::sync::Arc::new(crate::provider::Providers::new(&args.plugins.plugin_dirs));
    let plan = recompile(
        header,
        &args.inputs.inputs,
        &args.inputs.files()?,
        args.force,
        &providers,
    )?;
    let mut replayed = replay(&plan, &read.records);
    let mut notes: Vec<String> = break_glass.into_iter().collect();
    let mut taken_as_done = Vec::new();
    let in_doubt = replayed.in_doubt.clone();
    for &i in &in_doubt {
        let step = &plan.steps[i];
        let decision = if step.is_approval() {
            Decision::Retry("an approval whose answer was not journaled is asked again")
        } else if step.idempotent {
            Decision::Retry("idempotent")
        } else if args.retry_in_doubt {
            Decision::Retry("--retry-in-doubt")
        } else if args.skip_in_doubt {
            Decision::Skip("--skip-in-doubt")
        } else if std::io::stdin().is_terminal() {
            ask(step)
        } else {
            let asked: Vec<usize> = in_doubt
                .iter()
                .copied()
                .filter(|&i| !plan.steps[i].idempotent && !plan.steps[i].is_approval())
                .collect();
            let ids = |only_lost: bool| -> Vec<&str> {
                asked
                    .iter()
                    .filter(|i| !only_lost || replayed.lost_launch.contains(i))
                    .map(|&i| plan.steps[i].id.as_str())
                    .collect()
            };
            let lost = ids(true);
            let lost = match lost.is_empty() {
                true => String::new(),
                false => format!(
                    "\n  of these, {} {} about to start when ripcord stopped, before a restart of \
                     the machine or on another machine: whether {} began is not known",
                    lost.join(", "),
                    if lost.len() == 1 { "was" } else { "were" },
                    if lost.len() == 1 { "it" } else { "they" },
                ),
            };
            return Err(crate::invalid!(
                "run {}: {} started but its end was not recorded, so it may or may not have \
                 taken effect: {}{lost}\n  check, then resume with --retry-in-doubt (run again) \
                 or --skip-in-doubt (take as done)",
                header.run_id,
                if asked.len() == 1 { "a step" } else { "steps" },
                ids(false).join(", ")
            ));
        };
        // A step stopped by an interrupt is in doubt too, but says so.
        let was = if replayed.states[i].status == Status::Done(StepStatus::Cancelled) {
            "was cancelled by an interrupt (its effect is unknown)"
        } else if replayed.lost_launch.contains(&i) {
            "was in doubt (about to start when ripcord stopped, before a restart of the machine \
             or on another machine: its start record may have been lost)"
        } else {
            "was in doubt"
        };
        let (message, status) = match decision {
            Decision::Retry(why) => (
                format!("{} {was}: run again ({why})", step.id),
                Status::Pending,
            ),
            Decision::Skip(why) => (
                format!("{} {was}: taken as done ({why})", step.id),
                Status::Done(StepStatus::Skipped),
            ),
            Decision::Abort => {
                return Err(crate::invalid!("resume abandoned; nothing was changed"));
            }
        };
        if status == Status::Done(StepStatus::Skipped) {
            // Journaled as the step's end: a later resume does not ask again, and rollback
            // still counts it as launched.
            taken_as_done.push((i, message.clone()));
        }
        replayed.states[i] = StepState {
            status,
            launched: true,
            // In doubt: it may have acted.
            acted: replayed.states[i].acted.max(1),
            ..StepState::default()
        };
        notes.push(message);
    }
    // Failed steps are tried again: the operator resumed after fixing the cause.
    for s in &mut replayed.states {
        if matches!(
            s.status,
            Status::Done(StepStatus::Failed | StepStatus::Cancelled)
        ) {
            *s = StepState {
                launched: s.launched,
                acted: s.acted,
                ..StepState::default()
            };
        }
    }
    let pending = replayed
        .states
        .iter()
        .filter(|s| s.status == Status::Pending)
        .count();
    // Who started the run: for `not_by_operator`, whoever resumes it.
    let started_by = header.by.clone().unwrap_or_else(|| Identity {
        account: header.operator.clone(),
        uid: u32::MAX,
        sudo_user: None,
        host: String::new(),
        db_role: None,
    });
    // A runbook renamed since (resumed with --force) holds its new name too.
    if plan.name != header.runbook {
        claim.lock_also(&plan.name)?;
    }
    if header.mode == crate::journal::record::Mode::Real {
        claim.lock_scopes_also(&plan.locks)?;
    }
    let changed = fingerprint(&plan) != header.hash;
    let recorded_irreversible = replayed.irreversible.clone();
    // A takeover is evidence: whose lease this session took, and when it was last renewed.
    notes.extend(claim.taken_over());
    let mut session = claim.open(providers)?;
    let cx = context(
        &session,
        plan.clone(),
        &args.approvals,
        &[],
        None,
        Some(started_by),
    );
    let mut sink = sink(args.json, plan.steps.len());
    // The time between sessions stays in the timeline (and in the RTO).
    let t = crate::exec::session_base(header.mode, &header.started_at, replayed.last_ms);
    let mut records = vec![Record::Resumed {
        t_ms: t,
        pid: std::process::id(),
        at: session.started_at.clone(),
        operator: cx.by.to_string(),
        by: Some(cx.by.clone()),
        inputs: cx.masker.json_map(&overrides(header, &args.inputs.inputs)),
        boot_id: crate::journal::intent::boot_id(),
    }];
    if changed {
        notes.push("resumed with a runbook changed since the run started (--force)".to_string());
    }
    records.extend(
        notes
            .into_iter()
            .map(|message| Record::RunNote { t_ms: t, message }),
    );
    records.extend(
        taken_as_done
            .into_iter()
            .map(|(i, message)| Record::StepFinished {
                t_ms: t,
                step: plan.steps[i].id.clone(),
                status: StepStatus::Skipped,
                attempts: 0,
                started_ms: t,
                outputs: Default::default(),
                error: Some(format!("{message}, by {}", cx.by)),
            }),
    );
    write(&mut session, sink.as_mut(), &records)
        .map_err(|e| crate::error::journal_failed(e, "the run was not resumed"))?;
    if !args.json {
        crate::println_quiet!(
            "resuming run {}: {pending} of {} steps to go",
            session.run_id,
            plan.steps.len()
        );
    }
    drive(
        &mut session,
        &cx,
        sink.as_mut(),
        replayed.states,
        t,
        &recorded_irreversible,
        args.json,
    )
}

enum Decision {
    Retry(&'static str),
    Skip(&'static str),
    Abort,
}

fn ask(step: &crate::plan::PlannedStep) -> Decision {
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "step `{}` started but its end was not recorded: it may or may not have taken effect.\n  \
         [r]un it again, [s]kip it (take as done), or [a]bort? ",
        step.id
    );
    let _ = err.flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return Decision::Abort;
    }
    match line.trim().to_ascii_lowercase().as_str() {
        "r" | "run" | "retry" => Decision::Retry("operator"),
        "s" | "skip" => Decision::Skip("operator"),
        _ => Decision::Abort,
    }
}

/// `resume --break-glass`: the local directory to finish the run on, with this machine's copy of
/// the shared journal imported into it (once), and the note that records why and by whom.
fn break_glass(args: &ResumeArgs, reason: &str) -> CommandResult<(StateDir, Option<String>)> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(crate::invalid!(
            "--break-glass needs a reason, recorded in the journal"
        ));
    }
    let dir = match (&args.state.state, &args.state.state_dir) {
        (Some(url), _) if crate::state::pg::is_url(url) => {
            return Err(crate::invalid!(
                "--break-glass finishes a run on a local directory, not in {}: give \
                 --state-dir DIR (the directory this machine used beside the database, where \
                 its copy is: DIR/copies/{})",
                crate::state::pg::without_password(url),
                args.run_id
            ));
        }
        (Some(dir), _) => {
            crate::state::check_dir(dir, "--state").map_err(|e| crate::invalid!("{e}"))?;
            StateDir::resolve(Some(std::path::Path::new(dir)))
        }
        (None, Some(dir)) => {
            crate::state::check_dir(&dir.to_string_lossy(), "--state-dir")
                .map_err(|e| crate::invalid!("{e}"))?;
            StateDir::resolve(Some(dir))
        }
        (None, None) => {
            if let Ok(dir) = std::env::var("RIPCORD_STATE_DIR") {
                crate::state::check_dir(&dir, "$RIPCORD_STATE_DIR")
                    .map_err(|e| crate::invalid!("{e}"))?;
            }
            StateDir::resolve(None)
        }
    };
    StateDir::check_run_id(&args.run_id).map_err(|e| crate::invalid!("{e}"))?;
    let copy = dir.copies_dir().join(&args.run_id).join(JOURNAL_FILE);
    let target = dir.journal_path(&args.run_id);
    let by = Identity::current();
    let root = crate::state::dir::absolute(dir.root());
    let note = |imported: &str| {
        format!(
            "break-glass by {by}: resumed on the local directory {} {imported}; reason: \
             {reason}; the shared state database was not consulted",
            root.display()
        )
    };
    let again = if target.exists() {
        // Imported by an earlier break-glass: go on from there, saying so again.
        let again = note("(imported by an earlier break-glass)");
        leave_mark(&args.run_id, &root, &again);
        Some(again)
    } else {
        let read = crate::journal::read(&copy).map_err(|e| {
            crate::invalid!(
                "no copy of run {} on this machine ({}: {e}); a copy is kept on the machine \
                 that ran it with --state postgres://",
                args.run_id,
                copy.display()
            )
        })?;
        // The note goes in with the import: recorded even if this resume stops short (a step
        // in doubt, a process still alive).
        let imported = note(&format!(
            "from this machine's copy of its shared journal ({} records)",
            read.records.len()
        ));
        let t_ms = read.records.iter().map(Record::t_ms).max().unwrap_or(0);
        // Marked superseded before the import, so that no moment has a local run the mark
        // does not tell of.
        let mark = leave_mark(&args.run_id, &root, &imported);
        let line = crate::journal::encode(&Record::RunNote {
            t_ms,
            message: imported,
        });
        if let Err(e) = import(&copy, &dir, &args.run_id, read.valid_len, &line) {
            // No local run came of it: the mark would refuse the shared run for nothing.
            if let Some(mark) = mark {
                let _ = std::fs::remove_file(mark);
            }
            return Err(crate::invalid!("cannot import {}: {e}", copy.display()));
        }
        None
    };
    crate::eprintln_quiet!(
        "ripcord: BREAK GLASS: run {} goes on in {}, without its shared state database: if \
         that database is only unreachable, another session may hold the run there",
        args.run_id,
        dir.root().display()
    );
    Ok((dir.clone(), again))
}

/// Marks the shared run superseded for `resume` and `rollback` against the database from this
/// account ([`crate::state::dir::break_glass_mark`]): JSON with the local directory and the
/// note, written whole under another name and renamed into place, durably. Gives the mark's
/// path. A mark that cannot be left is said, not fatal: the local run must still be able to go
/// on.
fn leave_mark(run_id: &str, root: &std::path::Path, note: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let Some(mark) = crate::state::dir::break_glass_mark(run_id) else {
        crate::eprintln_quiet!(
            "ripcord: warning: no $XDG_STATE_HOME or $HOME to mark run {run_id} superseded in: \
             resume and rollback of it against the database will not refuse it"
        );
        return None;
    };
    let text = serde_json::json!({ "dir": root.to_string_lossy(), "note": note }).to_string();
    let left = (|| {
        let parent = mark.parent().expect("a mark is in a directory");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
        let partial = parent.join(format!(".{run_id}.{}", std::process::id()));
        write_private(&partial, text.as_bytes())?;
        std::fs::rename(&partial, &mark)?;
        std::fs::File::open(parent)?.sync_all()
    })();
    match left {
        Ok(()) => Some(mark),
        Err(e) => {
            crate::eprintln_quiet!(
                "ripcord: warning: cannot mark run {run_id} superseded ({}: {e}): resume and \
                 rollback of it against the database will not refuse it",
                mark.display()
            );
            None
        }
    }
}

/// Writes `bytes` as the whole of a file only this account can read, durably.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Copies the valid part of a journal copy into a run of `dir`, durably.
fn import(
    copy: &std::path::Path,
    dir: &StateDir,
    run_id: &str,
    len: u64,
    note: &str,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let runs = dir.runs_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&runs)?;
    // The run's directory may be left from an import that a crash cut short.
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir.run_dir(run_id))
    {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let mut bytes = Vec::new();
    std::fs::File::open(copy)?
        .take(len)
        .read_to_end(&mut bytes)?;
    bytes.extend_from_slice(note.as_bytes());
    // Written whole under another name, then linked into place: a crash never leaves a part of
    // the journal as the run (a later break-glass would go on from it, running again steps the
    // copy has as done), and of two imports at once only one takes the name.
    let partial = dir
        .run_dir(run_id)
        .join(format!("{JOURNAL_FILE}.import-{}", std::process::id()));
    write_private(&partial, &bytes)?;
    let linked = std::fs::hard_link(&partial, dir.journal_path(run_id));
    let _ = std::fs::remove_file(&partial);
    match linked {
        // A file system without hard links (vfat, some network mounts): created in place, as
        // a new file, which still only one import can do.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EPERM | libc::ENOTSUP | libc::ENOSYS | libc::EXDEV)
            ) =>
        {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.journal_path(run_id))?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        other => other?,
    }
    std::fs::File::open(dir.run_dir(run_id))?.sync_all()?;
    std::fs::File::open(&runs)?.sync_all()
}
