//! Crash anywhere: a dry-run of a 200-step runbook killed (SIGKILL) at 1,000 seeded points —
//! after any record or half-way through writing one — then resumed. Every time, the journal
//! replays, and every step completes exactly once across the run and its resume.

use std::collections::HashMap;
use std::path::Path;

use crate::support::{Ripcord, records, run_id};

#[test]
fn killed_at_a_thousand_points_every_step_completes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dag.yaml");
    std::fs::write(&file, crate::planner::random_runbook(11, 200)).unwrap();
    let file = file.to_str().unwrap().to_string();
    // A whole run, to know how many records there are to crash at.
    let full = dir.path().join("full");
    let out = Ripcord::new()
        .state(&full)
        .args(["run", "--dry-run", "--seed", "3", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let total = records(&full).unwrap().len() as u64;
    assert!(total > 400, "{total} records");

    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    let points: Vec<String> = (0..1000)
        .map(|_| {
            let at = 1 + next(total);
            if next(2) == 0 {
                at.to_string()
            } else {
                format!("{at}.5")
            }
        })
        .collect();
    let run_point = |point: &String| {
        let state = tempfile::tempdir().unwrap();
        let crashed = Ripcord::new()
            .state(state.path())
            .env("RIPCORD_TEST_CRASH_AT_RECORD", point)
            .args(["run", "--dry-run", "--seed", "3", &file])
            .run();
        assert_eq!(
            crashed.code,
            -1,
            "killed by SIGKILL at {point}: {}",
            crashed.transcript()
        );
        let Some(before) = records(state.path()) else {
            return;
        };
        let Some(run_id) = before
            .first()
            .and_then(|r| r["run_id"].as_str())
            .map(str::to_string)
        else {
            // Killed while writing the very first record: the run never started.
            return;
        };
        let resumed = Ripcord::new()
            .state(state.path())
            .args(["resume", &run_id, "--retry-in-doubt"])
            .run();
        assert_eq!(
            resumed.code,
            0,
            "resume after a crash at {point}: {}",
            resumed.transcript()
        );
        let after = records(state.path()).expect("the journal replays");
        let mut finished: HashMap<String, usize> = HashMap::new();
        for r in after
            .iter()
            .filter(|r| r["kind"] == "step_finished" && r["status"] == "succeeded")
        {
            *finished
                .entry(r["step"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert_eq!(
            finished.len(),
            200,
            "crash at {point}: every step completed"
        );
        let twice: Vec<_> = finished.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "crash at {point}: completed twice: {twice:?}"
        );
        // Nothing recorded before the crash was lost.
        assert_eq!(
            &after[..before.len()],
            &before[..],
            "crash at {point}: records lost"
        );
        assert!(
            after
                .iter()
                .any(|r| r["kind"] == "run_finished" && r["status"] == "succeeded")
        );
    };
    // Two workers: the machine has two cores.
    let (a, b) = points.split_at(points.len() / 2);
    std::thread::scope(|s| {
        s.spawn(|| a.iter().for_each(run_point));
        s.spawn(|| b.iter().for_each(run_point));
    });
}

/// Lines in each step's marker file: how many times its process ran.
fn markers(dir: &Path) -> HashMap<String, usize> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let n = std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .count();
            (e.file_name().to_string_lossy().into_owned(), n)
        })
        .collect()
}

/// 24 real steps, three at a time: each appends a line to its marker file; every fourth fails
/// its first attempt and is retried; each has an undo that appends to `undo-STEP`; a last step
/// always fails, so the run fails and is rolled back.
fn real_runbook(dir: &Path) -> String {
    let mut text = String::from(
        "version: 1\nname: marks\nconcurrency: 3\ninputs:\n  dir: { type: string, required: true }\nsteps:\n",
    );
    let env = "env: { M: \"${{ inputs.dir }}\" }";
    for i in 0..24 {
        let needs = if i >= 3 {
            format!(", needs: [s{}]", i - 3)
        } else {
            String::new()
        };
        let (script, retry) = if i % 4 == 1 {
            (
                r#"echo x >> "$M/$RIPCORD_STEP"; [ $(wc -l < "$M/$RIPCORD_STEP") -ge 2 ]"#,
                ", retry: { attempts: 3, delay: 10ms }",
            )
        } else {
            (r#"echo x >> "$M/$RIPCORD_STEP""#, "")
        };
        text.push_str(&format!(
            "- {{ id: s{i}{needs}{retry}, uses: shell.run, with: {{ argv: [sh, -c, '{script}'], {env} }}, \
             undo: {{ uses: shell.run, with: {{ argv: [sh, -c, 'echo x >> \"$M/undo-$RIPCORD_STEP\"'], {env} }} }} }}\n"
        ));
    }
    text.push_str(
        "- { id: last, needs: [s21, s22, s23], uses: shell.run, with: { argv: [\"false\"] } }\n",
    );
    let file = dir.join("marks.yaml");
    std::fs::write(&file, text).unwrap();
    file.to_str().unwrap().to_string()
}

fn finished(records: &[serde_json::Value], kind: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["kind"] == kind && r["status"] == "succeeded")
        .map(|r| r["step"].as_str().unwrap().to_string())
        .collect()
}

/// Killed at 200+ points of a run of real steps (retries included) or of its rollback, then
/// resumed or rolled back again: a step or undo that had completed never runs again, every
/// other one runs (again, when it was in doubt), and in the end every completed step is undone.
#[test]
fn real_steps_with_retries_and_rollback_killed_at_two_hundred_points() {
    let dir = tempfile::tempdir().unwrap();
    let file = real_runbook(dir.path());
    let count = |phase: &str| {
        let case = tempfile::tempdir().unwrap();
        let marks = case.path().join("marks");
        std::fs::create_dir(&marks).unwrap();
        let input = format!("dir={}", marks.display());
        let run = Ripcord::new()
            .state(case.path())
            .args(["run", "-i", &input, &file])
            .run();
        assert_eq!(run.code, 1, "{}", run.transcript());
        let run_records = records(case.path()).unwrap().len();
        let run_id = run_id(case.path());
        let back = Ripcord::new()
            .state(case.path())
            .args(["rollback", &run_id, "-i", &input])
            .run();
        assert_eq!(back.code, 0, "{}", back.transcript());
        let all = records(case.path()).unwrap().len();
        if phase == "run" {
            run_records
        } else {
            all - run_records
        }
    };
    let (in_run, in_rollback) = (count("run"), count("rollback"));
    let mut points: Vec<(&str, String)> = Vec::new();
    for phase in ["run", "rollback"] {
        let n = if phase == "run" { in_run } else { in_rollback };
        // The run's first two records (start, plan) carry no step; a rollback's first is its
        // own start.
        let first = if phase == "run" { 3 } else { 1 };
        for k in first..=n {
            points.push((phase, k.to_string()));
            points.push((phase, format!("{k}.5")));
        }
    }
    assert!(points.len() >= 200, "{} kill points", points.len());

    let run_point = |(phase, point): &(&str, String)| {
        let case = tempfile::tempdir().unwrap();
        let marks = case.path().join("marks");
        std::fs::create_dir(&marks).unwrap();
        let input = format!("dir={}", marks.display());
        let mut run = Ripcord::new().state(case.path());
        if *phase == "run" {
            run = run.env("RIPCORD_TEST_CRASH_AT_RECORD", point);
        }
        let out = run.args(["run", "-i", &input, &file]).run();
        let want = if *phase == "run" { -1 } else { 1 };
        assert_eq!(out.code, want, "{phase} {point}: {}", out.transcript());
        let run_id = run_id(case.path());
        if *phase == "run" {
            let before_records = records(case.path()).unwrap();
            let before = markers(&marks);
            let done = finished(&before_records, "step_finished");
            let out = Ripcord::new()
                .state(case.path())
                .args(["resume", &run_id, "--retry-in-doubt", "-i", &input])
                .run();
            assert_eq!(out.code, 1, "crash at run {point}: {}", out.transcript());
            let after = markers(&marks);
            for i in 0..24 {
                let s = format!("s{i}");
                let (b, a) = (before.get(&s).copied().unwrap_or(0), after[&s]);
                if done.contains(&s) {
                    assert_eq!(a, b, "crash at run {point}: {s} had completed, ran again");
                } else {
                    assert!(a > b, "crash at run {point}: {s} never ran");
                }
            }
        } else {
            let crashed = Ripcord::new()
                .state(case.path())
                .env("RIPCORD_TEST_CRASH_AT_RECORD", point)
                .args(["rollback", &run_id, "-i", &input])
                .run();
            assert_eq!(
                crashed.code,
                -1,
                "rollback {point}: {}",
                crashed.transcript()
            );
        }
        // Roll back (again): what was undone is not undone twice; everything is undone.
        let before_records = records(case.path()).unwrap();
        let undone = finished(&before_records, "undo_finished");
        let before = markers(&marks);
        let out = Ripcord::new()
            .state(case.path())
            .args(["rollback", &run_id, "-i", &input])
            .run();
        assert_eq!(out.code, 0, "{phase} {point}: {}", out.transcript());
        let after = markers(&marks);
        for i in 0..24 {
            let u = format!("undo-s{i}");
            let (b, a) = (before.get(&u).copied().unwrap_or(0), after[&u]);
            if undone.contains(&format!("s{i}")) {
                assert_eq!(
                    a, b,
                    "{phase} {point}: s{i}'s undo had completed, ran again"
                );
            } else {
                assert!(a >= 1 && a > b, "{phase} {point}: s{i} was not undone");
            }
        }
    };
    let (a, b) = points.split_at(points.len() / 2);
    std::thread::scope(|s| {
        s.spawn(|| a.iter().for_each(run_point));
        s.spawn(|| b.iter().for_each(run_point));
    });
}

/// After a short step `z`, `a` runs (slowly) while `b`, next for the one slot, has its start
/// promised ahead (not when `z` took long); the run is killed right after `b`'s intent is
/// written. On the same boot, `b` never began: resume runs it
/// once, asking nothing. After a restart (another boot id), its start record may have been lost
/// with the machine's memory: it is in doubt, resume refuses to guess, and the report says so.
#[test]
fn a_start_promised_ahead_never_began_unless_the_machine_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let file = crate::support::write(
        dir.path(),
        "promise.yaml",
        "version: 1\nname: promise\nconcurrency: 1\ninputs:\n  dir: { type: string, required: true }\nsteps:\n\
         - { id: z, idempotent: true, uses: shell.run, with: { argv: [\"true\"] } }\n\
         - { id: a, needs: [z], idempotent: true, uses: shell.run, with: { argv: [sh, -c, 'sleep 0.3; echo a >> \"$M/a\"'], env: { M: \"${{ inputs.dir }}\" } } }\n\
         - { id: b, needs: [z], uses: shell.run, with: { argv: [sh, -c, 'echo b >> \"$M/b\"'], env: { M: \"${{ inputs.dir }}\" } }, \
             undo: { if_started: true, uses: shell.run, with: { argv: [sh, -c, 'echo u >> \"$M/undo-b\"'], env: { M: \"${{ inputs.dir }}\" } } } }\n",
    );
    let marks = |case: &Path| -> (usize, usize) {
        let n = |f: &str| {
            std::fs::read_to_string(case.join(f))
                .map(|t| t.lines().count())
                .unwrap_or(0)
        };
        (n("a"), n("b"))
    };
    let input = |case: &Path| format!("dir={}", case.display());
    // A whole run: b's intent is written while a runs, before a's end.
    let full = tempfile::tempdir().unwrap();
    let out = Ripcord::new()
        .state(&full.path().join("state"))
        .args(["run", "-i", &input(full.path()), &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let all = records(&full.path().join("state")).unwrap();
    let at = |kind: &str, step: &str| {
        all.iter()
            .position(|r| r["kind"] == kind && r["step"] == step)
            .unwrap_or_else(|| panic!("no {kind} of {step}"))
    };
    assert!(
        at("step_intent", "b") < at("step_finished", "a"),
        "b's start was not promised ahead: {all:#?}"
    );
    assert!(at("step_intent", "b") < at("step_started", "b"));
    let point = (at("step_intent", "b") + 1).to_string();
    // Steps that take long promise nothing: b's intent comes with its start.
    let slow = tempfile::tempdir().unwrap();
    let slow_file = crate::support::write(
        slow.path(),
        "slow.yaml",
        &std::fs::read_to_string(&file)
            .unwrap()
            .replace("argv: [\"true\"]", "argv: [sleep, \"0.1\"]"),
    );
    let out = Ripcord::new()
        .state(&slow.path().join("state"))
        .args(["run", "-i", &input(slow.path()), &slow_file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let kinds = kinds_and_steps(&slow.path().join("state"));
    let b = kinds.iter().position(|k| k == "step_intent b").unwrap();
    assert_eq!(kinds[b + 1], "step_started b", "{kinds:#?}");

    let crashed = || {
        let case = tempfile::tempdir().unwrap();
        let state = case.path().join("state");
        let out = Ripcord::new()
            .state(&state)
            .env("RIPCORD_TEST_CRASH_AT_RECORD", &point)
            .args(["run", "-i", &input(case.path()), &file])
            .run();
        assert_eq!(out.code, -1, "{}", out.transcript());
        let last = records(&state).unwrap().pop().unwrap();
        assert_eq!(
            (&last["kind"], &last["step"]),
            (&"step_intent".into(), &"b".into())
        );
        let id = run_id(&state);
        (case, state, id)
    };

    // The same boot: b had not begun; resume runs it once and asks nothing.
    let (case, state, id) = crashed();
    let out = Ripcord::new()
        .state(&state)
        .args(["resume", &id, "-i", &input(case.path())])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert_eq!(marks(case.path()).1, 1, "b ran once");
    let report = Ripcord::new()
        .state(&state)
        .args(["report", &id, "--format", "json"])
        .run();
    let report: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
    let b = crate::support::step(&report, "b");
    assert_eq!(b["status"], "succeeded");
    assert_eq!(b["tries"].as_array().unwrap().len(), 1, "{b:#}");

    // After a restart: b is in doubt.
    let (case, state, id) = crashed();
    let restarted = |r: Ripcord| r.env("RIPCORD_TEST_BOOT_ID", "another-boot");
    let report = |r: Ripcord| {
        let out = r
            .state(&state)
            .args(["report", &id, "--format", "json"])
            .run();
        assert_eq!(out.code, 0, "{}", out.transcript());
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()
    };
    // Read on the machine that wrote it, same boot: b never ran; after a restart: in doubt.
    assert_eq!(
        crate::support::step(&report(Ripcord::new()), "b")["status"],
        "not run"
    );
    let after = report(restarted(Ripcord::new()));
    assert_eq!(crate::support::step(&after, "b")["status"], "in doubt");
    assert!(
        after
            .to_string()
            .contains("b: about to start when its session stopped"),
        "{after:#}"
    );
    let refused = restarted(Ripcord::new())
        .state(&state)
        .args(["resume", &id, "-i", &input(case.path())])
        .run();
    assert_eq!(refused.code, 2, "{}", refused.transcript());
    assert!(
        refused
            .stderr
            .contains("may or may not have taken effect: b\n  of these, b was about to start"),
        "{}",
        refused.stderr
    );
    let out = restarted(Ripcord::new())
        .state(&state)
        .args(["resume", &id, "--skip-in-doubt", "-i", &input(case.path())])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert_eq!(
        marks(case.path()),
        (1, 0),
        "a ran again, b was taken as done"
    );
    let notes: Vec<_> = records(&state)
        .unwrap()
        .into_iter()
        .filter(|r| r["kind"] == "run_note")
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        notes.iter().any(|n| n.starts_with(
            "b was in doubt (about to start when ripcord stopped, before a restart of the machine"
        )),
        "{notes:?}"
    );
    // Judged once: read later on the first boot, the report still has b in doubt then skipped.
    let b = crate::support::step(&report(Ripcord::new()), "b").clone();
    assert_eq!(b["status"], "skipped", "{b:#}");
    assert_eq!(b["tries"][0]["status"], "in doubt", "{b:#}");

    // Rolled back instead of resumed: b's undo (for any start) runs only when b may have begun.
    let undos = |case: &Path| {
        std::fs::read_to_string(case.join("undo-b"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    for (boot, want) in [(None, 0), (Some("another-boot"), 1)] {
        let (case, state, id) = crashed();
        let mut back = Ripcord::new().state(&state);
        if let Some(boot) = boot {
            back = back.env("RIPCORD_TEST_BOOT_ID", boot);
        }
        let out = back
            .args(["rollback", &id, "-i", &input(case.path())])
            .run();
        assert_eq!(out.code, 0, "{boot:?}: {}", out.transcript());
        assert_eq!(undos(case.path()), want, "{boot:?}: {}", out.transcript());
        assert_eq!(marks(case.path()).1, 0, "b never ran");
    }
}

/// Each record of a run's journal as `kind step` (`kind ` for a record of no step).
fn kinds_and_steps(state: &Path) -> Vec<String> {
    records(state)
        .unwrap()
        .iter()
        .map(|r| {
            let step = r["step"].as_str().unwrap_or("");
            format!("{} {step}", r["kind"].as_str().unwrap())
        })
        .collect()
}

/// An `LD_PRELOAD` library, built here with `cc`, over fdatasync: with `SHIM_FAIL_AT=N` the N-th
/// call fails with EIO after 300 ms; with `SHIM_SLOW_MS=M` every call takes M ms longer.
fn fdatasync_shim(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("shim.c");
    std::fs::write(
        &source,
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
static atomic_int calls;
int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "fdatasync");
    const char *f = getenv("SHIM_FAIL_AT");
    const char *slow = getenv("SHIM_SLOW_MS");
    if (f && atoi(f) == atomic_fetch_add(&calls, 1) + 1) {
        usleep(300 * 1000);
        errno = EIO;
        return -1;
    }
    if (slow) usleep(atoi(slow) * 1000);
    return real(fd);
}
"#,
    )
    .unwrap();
    let shim = dir.join("shim.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("cc (build-essential) is needed to build the fdatasync shim");
    assert!(built.success());
    shim
}

/// fdatasync fails once (EIO, slowly, through an `LD_PRELOAD` shim built here with `cc`): the
/// step whose intent it was syncing, which meanwhile asked for a sync of its own, must not run on
/// the strength of the next fdatasync succeeding (the kernel reports a writeback error once), and
/// the journal must not end the run as if all went well.
#[test]
fn after_a_failed_fdatasync_nothing_starts_and_the_run_does_not_end_as_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let shim = fdatasync_shim(dir.path());
    let file = crate::support::write(
        dir.path(),
        "eio.yaml",
        "version: 1\nname: eio\nconcurrency: 1\ninputs:\n  dir: { type: string, required: true }\nsteps:\n\
         - { id: z, idempotent: true, uses: shell.run, with: { argv: [\"true\"] } }\n\
         - { id: a, needs: [z], idempotent: true, sim: { duration: 10s }, uses: shell.run, with: { argv: [sh, -c, 'sleep 0.05; echo a >> \"$M/runs\"'], env: { M: \"${{ inputs.dir }}\" } } }\n\
         - { id: b, needs: [z], uses: shell.run, with: { argv: [sh, -c, 'echo b >> \"$M/runs\"'], env: { M: \"${{ inputs.dir }}\" } } }\n\
         - { id: c, needs: [b], uses: shell.run, with: { argv: [sh, -c, 'echo c >> \"$M/runs\"'], env: { M: \"${{ inputs.dir }}\" } } }\n",
    );
    // Control: with the shim and no failure, all three run.
    // The first fdatasync is the run's start; the second, b's intent, promised while a runs;
    // the third, c's start and intent.
    for fail_at in ["0", "2", "3"] {
        let case = tempfile::tempdir().unwrap();
        let state = case.path().join("state");
        let out = Ripcord::new()
            .state(&state)
            .env("LD_PRELOAD", shim.to_str().unwrap())
            .env("SHIM_FAIL_AT", fail_at)
            .args([
                "run",
                "-i",
                &format!("dir={}", case.path().display()),
                &file,
            ])
            .run();
        let ran = std::fs::read_to_string(case.path().join("runs")).unwrap_or_default();
        let kinds: Vec<String> = records(&state)
            .unwrap()
            .iter()
            .map(|r| r["kind"].as_str().unwrap().to_string())
            .collect();
        if fail_at == "0" {
            assert_eq!(out.code, 0, "{}", out.transcript());
            assert_eq!(ran, "a\nb\nc\n");
            continue;
        }
        assert_ne!(out.code, 0, "fail at {fail_at}: {}", out.transcript());
        assert!(
            out.stderr.contains("fdatasync"),
            "fail at {fail_at}: {}",
            out.stderr
        );
        // b's intent was what failed (2), or c's (3): what it was for never ran, nor what
        // follows.
        let want = if fail_at == "2" { "a\n" } else { "a\nb\n" };
        assert_eq!(ran, want, "fail at {fail_at}: {}", out.transcript());
        assert!(
            !kinds.contains(&"run_finished".to_string()),
            "fail at {fail_at}: {kinds:?}"
        );
    }
}

/// A step that failed, tried again by a resume that is then killed while it runs: it is in
/// doubt, not "failed" as its first end said, so the next resume asks instead of running it a
/// third time blind.
#[test]
fn a_failed_step_killed_while_tried_again_is_in_doubt() {
    let dir = tempfile::tempdir().unwrap();
    let file = crate::support::write(
        dir.path(),
        "again.yaml",
        "version: 1\nname: again\ninputs:\n  dir: { type: string, required: true }\nsteps:\n\
         - { id: x, uses: shell.run, with: { argv: [sh, -c, 'echo x >> \"$M/runs\"; [ -e \"$M/fail\" ] && exit 1; exec sleep 30'], env: { M: \"${{ inputs.dir }}\" } } }\n",
    );
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    let runs = || {
        std::fs::read_to_string(dir.path().join("runs"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    std::fs::write(dir.path().join("fail"), "").unwrap();
    let out = Ripcord::new()
        .state(&state)
        .args(["run", "-i", &input, &file])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    std::fs::remove_file(dir.path().join("fail")).unwrap();
    let id = run_id(&state);
    let mut child = Ripcord::new()
        .state(&state)
        .args(["resume", &id, "-i", &input])
        .spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while runs() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "x was not tried again"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let refused = Ripcord::new()
        .state(&state)
        .args(["resume", &id, "-i", &input])
        .run();
    assert_eq!(refused.code, 2, "{}", refused.transcript());
    assert!(
        refused
            .stderr
            .contains("may or may not have taken effect: x"),
        "{}",
        refused.stderr
    );
    assert_eq!(runs(), 2, "x ran a third time");
}

/// A promised step whose session then ended (here: another step failed and the run stopped) never
/// began, on any boot: the end is synced after everything before it. Read after a restart, it
/// is neither in doubt nor undone.
#[test]
fn a_promise_its_run_outlived_never_began_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = crate::support::write(
        dir.path(),
        "outlived.yaml",
        "version: 1\nname: outlived\nconcurrency: 1\ninputs:\n  dir: { type: string, required: true }\nsteps:\n\
         - { id: z, idempotent: true, uses: shell.run, with: { argv: [\"true\"] } }\n\
         - { id: a, needs: [z], idempotent: true, sim: { duration: 10s }, uses: shell.run, with: { argv: [sh, -c, 'sleep 0.2; exit 1'] } }\n\
         - { id: b, needs: [z], uses: shell.run, with: { argv: [sh, -c, 'echo b >> \"$M/b\"'], env: { M: \"${{ inputs.dir }}\" } }, \
             undo: { if_started: true, uses: shell.run, with: { argv: [sh, -c, 'echo u >> \"$M/undo-b\"'], env: { M: \"${{ inputs.dir }}\" } } } }\n",
    );
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    let out = Ripcord::new()
        .state(&state)
        .args(["run", "-i", &input, &file])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    let kinds = kinds_and_steps(&state);
    assert!(kinds.contains(&"step_intent b".to_string()), "{kinds:#?}");
    assert!(!kinds.contains(&"step_started b".to_string()), "{kinds:#?}");
    let id = run_id(&state);
    let restarted = || {
        Ripcord::new()
            .state(&state)
            .env("RIPCORD_TEST_BOOT_ID", "another-boot")
    };
    let report = restarted().args(["report", &id, "--format", "json"]).run();
    let report: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(crate::support::step(&report, "b")["status"], "not run");
    let out = restarted().args(["rollback", &id, "-i", &input]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(
        !dir.path().join("undo-b").exists(),
        "b's undo ran: {}",
        out.transcript()
    );
    assert!(!dir.path().join("b").exists());
}

/// Higher-priority steps keep becoming ready while lower ones wait promised: no more than four
/// slots' worth of promises ever wait at once (after a restart, each would be in doubt).
#[test]
fn promises_waiting_at_once_stay_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "version: 1\nname: window\nconcurrency: 1\nsteps:\n\
         - { id: z, idempotent: true, uses: shell.run, with: { argv: [\"true\"] } }\n\
         - { id: c1, needs: [z], uses: shell.run, with: { argv: [\"true\"] } }\n\
         - { id: c2, needs: [c1], uses: shell.run, with: { argv: [\"true\"] } }\n\
         - { id: c3, needs: [c2], uses: shell.run, with: { argv: [\"true\"] } }\n",
    );
    for i in 1..=6 {
        text.push_str(&format!(
            "- {{ id: l{i}, needs: [z], sim: {{ duration: 1s }}, uses: shell.run, with: {{ argv: [\"true\"] }} }}\n"
        ));
    }
    for (c, hours) in [("c1", 1), ("c2", 2), ("c3", 3)] {
        for i in 1..=4 {
            text.push_str(&format!(
                "- {{ id: {c}f{i}, needs: [{c}], sim: {{ duration: {hours}h }}, uses: shell.run, with: {{ argv: [\"true\"] }} }}\n"
            ));
        }
    }
    let file = crate::support::write(dir.path(), "window.yaml", &text);
    let state = dir.path().join("state");
    let out = Ripcord::new().state(&state).args(["run", &file]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let mut waiting = std::collections::HashSet::new();
    let (mut most, mut promised) = (0, 0);
    let all = records(&state).unwrap();
    for (n, r) in all.iter().enumerate() {
        let step = r["step"].as_str().unwrap_or_default().to_string();
        // An intent written with its start (not promised ahead) does not wait.
        let with_start = all
            .get(n + 1)
            .is_some_and(|next| next["kind"] == "step_started" && next["step"] == r["step"]);
        match r["kind"].as_str().unwrap() {
            "step_intent" if with_start => {}
            "step_intent" => {
                promised += 1;
                waiting.insert(step);
            }
            "step_started" | "step_finished" => {
                waiting.remove(&step);
            }
            _ => {}
        }
        most = most.max(waiting.len());
    }
    assert!(promised > 0);
    assert!(most <= 4, "{most} promises waited at once");
    assert!(most >= 2, "nothing was promised ahead ({most})");
}

/// Interrupted while its start is being synced (every fdatasync made slow): the step does not
/// begin, and the journal says it did nothing. Rollback has nothing to undo for it; resume runs
/// it, once, without asking.
#[test]
fn a_step_interrupted_before_it_began_is_not_undone_and_runs_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let shim = fdatasync_shim(dir.path());
    let file = crate::support::write(
        dir.path(),
        "slow.yaml",
        "version: 1\nname: slow\ninputs:\n  dir: { type: string, required: true }\nsteps:\n\
         - { id: s1, uses: shell.run, with: { argv: [sh, -c, 'echo s1 >> \"$M/runs\"'], env: { M: \"${{ inputs.dir }}\" } }, \
             undo: { if_started: true, uses: shell.run, with: { argv: [sh, -c, 'echo u >> \"$M/undos\"'], env: { M: \"${{ inputs.dir }}\" } } } }\n",
    );
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    let child = Ripcord::new()
        .state(&state)
        .env("LD_PRELOAD", shim.to_str().unwrap())
        .env("SHIM_SLOW_MS", "1500")
        .args(["run", "-i", &input, &file])
        .spawn();
    // Its start is written; its sync takes 1.5 s more.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !records(&state)
        .unwrap_or_default()
        .iter()
        .any(|r| r["kind"] == "step_started")
    {
        assert!(std::time::Instant::now() < deadline, "s1 never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: kill(2) on the child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let runs = || std::fs::read_to_string(dir.path().join("runs")).unwrap_or_default();
    assert_eq!(runs(), "", "s1 began after the interrupt");
    let all = records(&state).unwrap();
    assert!(
        all.iter()
            .any(|r| r["kind"] == "attempt_failed" && r["nothing_ran"] == true),
        "{all:#?}"
    );
    let id = all[0]["run_id"].as_str().unwrap().to_string();
    // Rolled back from a copy: s1 did nothing, so nothing is undone.
    let copy = dir.path().join("copy");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&state)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let back = Ripcord::new()
        .state(&copy)
        .args(["rollback", &id, "-i", &input])
        .run();
    assert_eq!(back.code, 0, "{}", back.transcript());
    assert!(!dir.path().join("undos").exists(), "{}", back.transcript());
    let resumed = Ripcord::new()
        .state(&state)
        .args(["resume", &id, "-i", &input])
        .run();
    assert_eq!(resumed.code, 0, "{}", resumed.transcript());
    assert_eq!(runs(), "s1\n");
}
