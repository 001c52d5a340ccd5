//! Crash anywhere: a dry-run of a 200-step runbook killed (SIGKILL) at 1,000 seeded points —
//! after any record or half-way through writing one — then resumed. Every time, the journal
//! replays, and every step completes exactly once across the run and its resume.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::support::Ripcord;

/// The records of a run's journal; panics on a corrupt line that is not the last.
fn records(state: &Path) -> Option<Vec<Value>> {
    let run = std::fs::read_dir(state.join("runs")).ok()?.next()?.ok()?;
    let text = std::fs::read_to_string(run.path().join("journal.jsonl")).ok()?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let whole = line.ends_with('\n');
        let parsed = line.trim_end().rsplit_once('\t').and_then(|(json, crc)| {
            (u32::from_str_radix(crc, 16).ok()? == crc32fast::hash(json.as_bytes()))
                .then(|| serde_json::from_str::<Value>(json).ok())
                .flatten()
        });
        match parsed {
            Some(r) if whole => out.push(r),
            _ => assert_eq!(i + 1, lines.len(), "a bad line before the end: {line:?}"),
        }
    }
    Some(out)
}

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

#[test]
fn real_steps_killed_at_sixty_points_never_run_a_completed_step_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("version: 1\nname: marks\nconcurrency: 3\nsteps:\n");
    for i in 0..20 {
        let needs = if i >= 3 {
            format!(", needs: [s{}]", i - 3)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "- {{ id: s{i}{needs}, uses: shell.run, with: {{ argv: [sh, -c, 'echo x >> \"$M/$RIPCORD_STEP\"'], env: {{ M: \"${{{{ inputs.dir }}}}\" }} }} }}\n"
        ));
    }
    text = text.replace(
        "steps:\n",
        "inputs:\n  dir: { type: string, required: true }\nsteps:\n",
    );
    let file = dir.path().join("marks.yaml");
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap().to_string();
    for k in 0..60u64 {
        let point = if k % 2 == 0 {
            format!("{}", 3 + k)
        } else {
            format!("{}.5", 3 + k)
        };
        let case = tempfile::tempdir().unwrap();
        let marks = case.path().join("marks");
        std::fs::create_dir(&marks).unwrap();
        let input = format!("dir={}", marks.display());
        let crashed = Ripcord::new()
            .state(case.path())
            .env("RIPCORD_TEST_CRASH_AT_RECORD", &point)
            .args(["run", "-i", &input, &file])
            .run();
        if crashed.code == 0 {
            continue; // the run has fewer records than this point
        }
        assert_eq!(crashed.code, -1, "{}", crashed.transcript());
        std::thread::sleep(std::time::Duration::from_millis(100)); // an orphaned step ends
        let before_records = records(case.path()).unwrap();
        let before = markers(&marks);
        let done: Vec<String> = before_records
            .iter()
            .filter(|r| r["kind"] == "step_finished")
            .map(|r| r["step"].as_str().unwrap().to_string())
            .collect();
        let run_id = before_records[0]["run_id"].as_str().unwrap().to_string();
        let out = Ripcord::new()
            .state(case.path())
            .args(["resume", &run_id, "--retry-in-doubt", "-i", &input])
            .run();
        assert_eq!(out.code, 0, "crash at {point}: {}", out.transcript());
        let after = markers(&marks);
        for i in 0..20 {
            let s = format!("s{i}");
            let n = after.get(&s).copied().unwrap_or(0);
            if done.contains(&s) {
                assert_eq!(n, 1, "crash at {point}: {s} had completed, ran again");
            } else {
                // Not started (one run, by the resume), or in doubt (re-run by the policy).
                let b = before.get(&s).copied().unwrap_or(0);
                assert_eq!(n, b + 1, "crash at {point}: {s}");
            }
        }
    }
}
