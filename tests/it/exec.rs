//! The executor through the real binary: dry-runs in virtual time against the plan's
//! prediction, limits, retries, abort/continue, outputs, for_each, when, rollback order,
//! timeouts, the lock and interrupts. Real steps are real processes.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Output, Ripcord, alive, whoami, write};

/// The seeded random DAG of the planner tests, as a file.
fn random_dag(dir: &Path, seed: u64, pools: bool) -> String {
    let mut text = crate::planner::random_runbook(seed, 120);
    if !pools {
        text = text.replace(", pool: p1", "").replace(", pool: p2", "");
    }
    write(dir, &format!("dag-{seed}-{pools}.yaml"), &text)
}

/// Per step: (start, finish) in ms, from a run's events.
fn timeline(out: &Output) -> HashMap<String, (u64, u64)> {
    let mut times = HashMap::new();
    for e in out.events() {
        let step = e["step"].as_str().unwrap_or_default().to_string();
        match e["kind"].as_str() {
            Some("step_started") if e["attempt"] == 1 => {
                times.insert(step, (e["t_ms"].as_u64().unwrap(), 0));
            }
            Some("step_finished") => {
                if let Some(t) = times.get_mut(&step) {
                    t.1 = e["t_ms"].as_u64().unwrap();
                }
            }
            _ => {}
        }
    }
    times
}

#[test]
fn dry_run_takes_exactly_the_predicted_time() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [1, 2, 3] {
        // Unlimited concurrency, no pools: the critical path, exactly.
        let file = random_dag(dir.path(), seed, false);
        let plan = Ripcord::new().args(["plan", "--json", &file]).run();
        let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
        let out = Ripcord::new()
            .state(dir.path())
            .args([
                "run",
                "--dry-run",
                "--json",
                "--concurrency",
                "100000",
                &file,
            ])
            .run();
        assert_eq!(out.code, 0, "{}", out.transcript());
        assert_eq!(
            out.summary()["duration_ms"],
            plan["predicted_ms"]["unlimited"]
        );

        // The runbook's concurrency and pools: the plan's list schedule, step by step.
        let file = random_dag(dir.path(), seed, true);
        let plan = Ripcord::new().args(["plan", "--json", &file]).run();
        let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
        let out = Ripcord::new()
            .state(dir.path())
            .args(["run", "--dry-run", "--json", &file])
            .run();
        assert_eq!(
            out.summary()["duration_ms"],
            plan["predicted_ms"]["limited"]
        );
        let times = timeline(&out);
        for s in plan["steps"].as_array().unwrap() {
            let id = s["id"].as_str().unwrap();
            assert_eq!(
                times[id].0,
                s["start_ms"].as_u64().unwrap(),
                "start of {id}, seed {seed}"
            );
        }
        // Limits never exceeded: concurrency 3, pool p1 2, pool p2 1.
        let pool: HashMap<&str, &str> = plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| Some((s["id"].as_str()?, s["pool"].as_str()?)))
            .collect();
        for (id, &(start, _)) in &times {
            let running: Vec<&String> = times
                .keys()
                .filter(|o| times[*o].0 <= start && start < times[*o].1)
                .collect();
            assert!(
                running.len() <= 3,
                "{} running at {start} ({id})",
                running.len()
            );
            for (name, size) in [("p1", 2), ("p2", 1)] {
                let inside = running
                    .iter()
                    .filter(|o| pool.get(o.as_str()) == Some(&name))
                    .count();
                assert!(inside <= size, "pool {name} over its size at {start}");
            }
        }
    }
}

/// `--seed` decides a dry-run's draws (each attempt's duration within its `sim.jitter`, and
/// which attempts `--fail-rate` fails): the same seed gives the same events, byte for byte after
/// the first record (which names the process); another seed gives other events.
#[test]
fn same_seed_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut runbook = String::from(
        "version: 1\nname: draws\ndefaults:\n  sim: { duration: 1s, jitter: 50% }\n  retry: { attempts: 3, delay: 1s }\nsteps:\n",
    );
    for i in 0..12 {
        let needs = if i > 0 {
            format!(", needs: [s{}]", i - 1)
        } else {
            String::new()
        };
        runbook.push_str(&format!(
            "  - {{ id: s{i}, uses: sleep.for, with: {{ duration: 1s }}, on_failure: continue{needs} }}\n"
        ));
    }
    let file = write(dir.path(), "draws.yaml", &runbook);
    let events = |seed: &str| -> Vec<Value> {
        let state = tempfile::tempdir().unwrap();
        let out = Ripcord::new()
            .state(state.path())
            .args([
                "run",
                "--dry-run",
                "--json",
                "--seed",
                seed,
                "--fail-rate",
                "0.3",
                &file,
            ])
            .run();
        assert!(out.code == 0 || out.code == 1, "{}", out.transcript());
        // Everything but the run's id (it holds the wall-clock second) and the first record
        // (which names the process).
        out.events()[1..]
            .iter()
            .cloned()
            .map(|mut e| {
                if let Some(o) = e.as_object_mut() {
                    o.remove("run_id");
                }
                e
            })
            .collect()
    };
    let (a, b, other) = (events("42"), events("42"), events("43"));
    assert!(a.len() > 20);
    assert_eq!(a, b, "the same seed, the same events");
    assert_ne!(a, other, "another seed draws otherwise");
    // The draws are real: durations spread, and some attempts fail.
    let durations: std::collections::HashSet<u64> = a
        .iter()
        .filter(|e| e["kind"] == "step_finished")
        .map(|e| e["t_ms"].as_u64().unwrap() - e["started_ms"].as_u64().unwrap())
        .collect();
    assert!(durations.len() > 3, "{durations:?}");
    assert!(
        a.iter().any(|e| e["kind"] == "attempt_failed"),
        "a fail rate of 0.3 over 12 steps fails some attempt"
    );
}

#[test]
fn retries_back_off_and_abort_stops_dependents() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "retry.yaml",
        "version: 1\nname: retry\nsteps:\n\
         - { id: flaky, uses: shell.run, with: { argv: [\"true\"] }, sim: { duration: 1s },\n\
             retry: { attempts: 4, delay: 2s, backoff: 2.0, max_delay: 5s } }\n\
         - { id: after, uses: shell.run, with: { argv: [\"true\"] }, needs: [flaky] }\n\
         - { id: side, uses: shell.run, with: { argv: [\"true\"] }, sim: { duration: 30s } }\n",
    );
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--dry-run", "--json", "--fail", "flaky", &file])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    let retries: Vec<Value> = out
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "attempt_failed")
        .map(|e| e["retry_in_ms"].clone())
        .collect();
    // 2s, then 4s, then 8s capped at 5s; the fourth failure is the last.
    assert_eq!(
        retries,
        [
            Value::from(2000),
            Value::from(4000),
            Value::from(5000),
            Value::Null
        ]
    );
    let summary = out.summary();
    assert_eq!(summary["failed"], 1);
    assert_eq!(summary["not_run"], 1, "`after` never starts");
    // `side` was already running: it finishes (30s) although the run aborts at 4s + 11s = 15s.
    assert_eq!(summary["duration_ms"], 30_000);
    assert_eq!(summary["succeeded"], 1);
}

#[test]
fn real_steps_pass_outputs_expand_for_each_skip_and_continue() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let file = write(
        dir.path(),
        "real.yaml",
        &format!(
            "version: 1\nname: real\n\
             inputs:\n  hosts: {{ type: list, default: [h1, h2, h3] }}\n  mode: {{ type: string, default: live }}\n\
             steps:\n\
             - id: each\n  for_each: \"${{{{ inputs.hosts }}}}\"\n  uses: shell.run\n\
             \x20 with: {{ script: 'echo \"name=$H-ok\" >> \"$RIPCORD_OUTPUT\"; echo $H >> {log}', env: {{ H: \"${{{{ item }}}}\" }} }}\n\
             - id: join\n  uses: shell.run\n\
             \x20 with: {{ argv: [sh, -c, 'echo \"$1\" >> {log}', x, \"${{{{ steps.each.outputs | map(attribute='name') | join(',') }}}}\"] }}\n\
             - id: drill-only\n  uses: shell.run\n  when: \"${{{{ inputs.mode == 'drill' }}}}\"\n\
             \x20 with: {{ argv: [sh, -c, 'echo drill >> {log}'] }}\n\
             - id: broken\n  uses: shell.run\n  on_failure: continue\n  with: {{ argv: [sh, -c, 'echo oops >&2; exit 3'] }}\n\
             - id: after-broken\n  uses: shell.run\n  needs: [broken, drill-only]\n\
             \x20 with: {{ argv: [sh, -c, 'echo \"after $1\" >> {log}', x, \"${{{{ steps.broken.status }}}}\"] }}\n",
            log = log.display()
        ),
    );
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["after failed", "h1", "h1-ok,h2-ok,h3-ok", "h2", "h3"]
    );
    let events = out.events();
    let finished = |id: &str| {
        events
            .iter()
            .find(|e| e["kind"] == "step_finished" && e["step"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(finished("drill-only")["status"], "skipped");
    assert_eq!(finished("broken")["status"], "failed");
    assert_eq!(finished("broken")["outputs"]["exit_code"], 3);
    assert!(
        finished("broken")["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 3: oops")
    );
    assert_eq!(finished("each[h2]")["outputs"]["name"], "h2-ok");
}

#[test]
fn rollback_undoes_completed_steps_in_reverse_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("undo.log");
    let runbook = |policy: &str| {
        format!(
            "version: 1\nname: undo-{policy}\nrollback: {policy}\nsteps:\n\
             - {{ id: drain, uses: shell.run, with: {{ argv: [\"true\"] }}, undo: {{ uses: shell.run, with: {{ argv: [sh, -c, 'echo undo-drain >> {log}'] }} }} }}\n\
             - {{ id: fence, needs: [drain], uses: shell.run, with: {{ argv: [\"true\"] }} }}\n\
             - {{ id: promote, needs: [fence], uses: shell.run, with: {{ argv: [\"true\"] }}, undo: {{ uses: shell.run, with: {{ argv: [sh, -c, 'echo undo-promote-$0 >> {log}', \"${{{{ steps.promote.outputs.exit_code }}}}\"] }} }} }}\n\
             - {{ id: notify, uses: shell.run, with: {{ argv: [\"true\"] }}, undo: {{ uses: shell.run, with: {{ argv: [sh, -c, 'echo undo-notify >> {log}'] }} }} }}\n\
             - {{ id: repoint, needs: [promote], uses: shell.run, with: {{ argv: [\"false\"] }}, undo: {{ uses: shell.run, with: {{ argv: [sh, -c, 'echo undo-repoint >> {log}'] }} }} }}\n",
            log = log.display()
        )
    };
    // rollback: auto undoes at once; repoint failed, so it has nothing to undo.
    let auto = write(dir.path(), "auto.yaml", &runbook("auto"));
    let out = Ripcord::new().state(dir.path()).args(["run", &auto]).run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    let undone = std::fs::read_to_string(&log).unwrap();
    let undone: Vec<&str> = undone.lines().collect();
    assert_eq!(undone.len(), 3, "{undone:?}");
    let at = |s: &str| {
        undone
            .iter()
            .position(|l| *l == s)
            .unwrap_or_else(|| panic!("{s} not undone: {undone:?}"))
    };
    assert!(
        at("undo-promote-0") < at("undo-drain"),
        "promote depends on drain: undone first"
    );
    at("undo-notify");

    // rollback: manual: `ripcord rollback RUN_ID` later, once; a second rollback has nothing left.
    std::fs::remove_file(&log).unwrap();
    let manual = write(dir.path(), "manual.yaml", &runbook("manual"));
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", &manual])
        .run();
    assert_eq!(out.code, 1);
    assert!(!log.exists(), "manual rollback waits for the operator");
    let run_id = out.events()[0]["run_id"].as_str().unwrap().to_string();
    let out = Ripcord::new()
        .state(dir.path())
        .args(["rollback", &run_id])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 3);
    let again = Ripcord::new()
        .state(dir.path())
        .args(["rollback", &run_id])
        .run();
    assert_eq!(again.code, 0);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().lines().count(),
        3,
        "nothing undone twice"
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("ripcord-timeout-{}", std::process::id());
    let file = write(
        dir.path(),
        "timeout.yaml",
        &format!(
            "version: 1\nname: timeout\nsteps:\n\
             - {{ id: hang, uses: shell.run, timeout: 500ms, with: {{ script: 'sh -c \"sleep 60; : {marker}-child\" & sh -c \"sleep 61; : {marker}-parent\"' }} }}\n"
        ),
    );
    let started = std::time::Instant::now();
    let out = Ripcord::new().state(dir.path()).args(["run", &file]).run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("timed out after 500ms"),
        "{}",
        out.stdout
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive(&marker), "a process of the step outlived it");
}

#[test]
fn a_second_run_of_the_same_runbook_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "slow.yaml",
        "version: 1\nname: slow\nsteps:\n- { id: wait, uses: sleep.for, with: { duration: 3s } }\n",
    );
    let mut first = Ripcord::new()
        .state(dir.path())
        .args(["run", &file])
        .spawn();
    std::thread::sleep(Duration::from_millis(500));
    let second = Ripcord::new().state(dir.path()).args(["run", &file]).run();
    assert_eq!(second.code, 4, "{}", second.transcript());
    assert!(
        second.stderr.contains("is locked by run"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())),
        "{}",
        second.stderr
    );
    assert_eq!(first.wait().unwrap().code(), Some(0));
}

#[test]
fn sigint_cancels_running_steps_and_resume_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("ripcord-sigint-{}", std::process::id());
    let done = dir.path().join("done");
    let file = write(
        dir.path(),
        "interrupt.yaml",
        &format!(
            "version: 1\nname: interrupt\nsteps:\n\
             - {{ id: long, uses: shell.run, idempotent: true, with: {{ argv: [sh, -c, 'sleep 30; true {marker}'] }} }}\n\
             - {{ id: after, needs: [long], uses: shell.run, with: {{ argv: [touch, {}] }} }}\n",
            done.display()
        ),
    );
    let child = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", &file])
        .spawn();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"kind\":\"interrupted\""));
    assert!(stdout.contains("\"status\":\"cancelled\""));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive(&marker), "the step's process survived the interrupt");
    assert!(!done.exists());

    let run_id: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let run_id = run_id["run_id"].as_str().unwrap();
    // `long` is idempotent: resume runs it again without asking. Make it quick this time.
    let file_text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("sleep 30", "sleep 0");
    std::fs::write(&file, file_text).unwrap();
    let changed = Ripcord::new()
        .state(dir.path())
        .args(["resume", run_id])
        .run();
    assert_eq!(changed.code, 2, "a changed runbook needs --force");
    assert!(changed.stderr.contains("changed since run"));
    let out = Ripcord::new()
        .state(dir.path())
        .args(["resume", run_id, "--force"])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(done.exists());
    let runs = Ripcord::new().state(dir.path()).args(["runs"]).run();
    assert!(
        runs.stdout.contains(run_id) && runs.stdout.contains("succeeded"),
        "{}",
        runs.stdout
    );
}

/// Counts of each step's marker lines (one line each time the step's process starts).
fn markers(dir: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let entry = entry.unwrap();
        let n = std::fs::read_to_string(entry.path())
            .unwrap()
            .lines()
            .count();
        counts.insert(entry.file_name().to_string_lossy().into_owned(), n);
    }
    counts
}

/// (finished, started-without-finish) steps of a run, read from its journal.
fn journal_state(state: &Path) -> (Vec<String>, Vec<String>, String) {
    let runs = state.join("runs");
    let run = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap();
    let text = std::fs::read_to_string(run.path().join("journal.jsonl")).unwrap();
    let (mut finished, mut started) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let Some((json, _crc)) = line.rsplit_once('\t') else {
            continue;
        };
        let Ok(r) = serde_json::from_str::<Value>(json) else {
            continue;
        };
        let step = r["step"].as_str().unwrap_or_default().to_string();
        match r["kind"].as_str() {
            Some("step_started") => started.push(step),
            Some("step_finished") => finished.push(step),
            _ => {}
        }
    }
    started.retain(|s| !finished.contains(s));
    (
        finished,
        started,
        run.file_name().to_string_lossy().into_owned(),
    )
}

#[test]
fn killed_at_any_point_resume_never_reruns_a_completed_step() {
    let mut saw_in_doubt = 0;
    for kill_after_ms in [60, 260, 480, 700] {
        let dir = tempfile::tempdir().unwrap();
        let marks = dir.path().join("markers");
        std::fs::create_dir(&marks).unwrap();
        let mut text = String::from("version: 1\nname: chain\nsteps:\n");
        for i in 1..=6 {
            let needs = if i > 1 {
                format!(", needs: [s{}]", i - 1)
            } else {
                String::new()
            };
            text.push_str(&format!(
                "- {{ id: s{i}{needs}, uses: shell.run, with: {{ argv: [sh, -c, 'echo x >> {}/$RIPCORD_STEP; sleep 0.15'] }} }}\n",
                marks.display()
            ));
        }
        let file = write(dir.path(), "chain.yaml", &text);
        let state = dir.path().join("state");
        let mut child = Ripcord::new().state(&state).args(["run", &file]).spawn();
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200)); // the killed step's shell ends on its own
        let (finished, in_doubt, run_id) = journal_state(&state);
        let before = markers(&marks);
        for s in &finished {
            assert_eq!(
                before.get(s),
                Some(&1),
                "kill at {kill_after_ms}ms: {s} finished once"
            );
        }
        saw_in_doubt += usize::from(!in_doubt.is_empty());
        if !in_doubt.is_empty() {
            // Not idempotent and nobody to ask: resume refuses and changes nothing.
            let refused = Ripcord::new().state(&state).args(["resume", &run_id]).run();
            assert_eq!(refused.code, 2, "{}", refused.transcript());
            assert!(
                refused.stderr.contains("--retry-in-doubt"),
                "{}",
                refused.stderr
            );
            assert_eq!(markers(&marks), before);
        }
        let out = Ripcord::new()
            .state(&state)
            .args(["resume", &run_id, "--retry-in-doubt"])
            .run();
        assert_eq!(
            out.code,
            0,
            "kill at {kill_after_ms}ms: {}",
            out.transcript()
        );
        let after = markers(&marks);
        for i in 1..=6 {
            let s = format!("s{i}");
            let expected = if in_doubt.contains(&s) {
                before.get(&s).copied().unwrap_or(0) + 1
            } else {
                1
            };
            assert_eq!(
                after.get(&s).copied().unwrap_or(0),
                expected,
                "kill at {kill_after_ms}ms: {s}"
            );
        }
    }
    // Steps take 150ms and the kill points fall inside them: most kills leave one in doubt.
    assert!(
        saw_in_doubt >= 2,
        "only {saw_in_doubt} kill(s) caught a step mid-way"
    );
}

#[test]
fn approvals_are_granted_by_flag_and_wait_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "approve.yaml",
        "version: 1\nname: approve\nsteps:\n\
         - { id: go, uses: approval.ask, timeout: 400ms, with: { prompt: \"Fail over now?\" } }\n\
         - { id: after, needs: [go], uses: shell.run, with: { argv: [\"true\"] } }\n",
    );
    // No terminal, no flag: it says how to answer from another shell, waits for its timeout,
    // then fails.
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", &file])
        .run();
    assert_eq!(out.code, 1);
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    let failed = out
        .events()
        .into_iter()
        .find(|e| e["kind"] == "step_finished" && e["step"] == "go")
        .unwrap();
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("not approved within 400ms"),
        "{failed}"
    );
    assert!(
        out.stderr.contains(&format!(
            "ripcord approve {run_id} go --state-dir {}",
            dir.path().display()
        )) || out.stderr.contains(&format!("ripcord approve {run_id} go")),
        "{}",
        out.stderr
    );

    // $USER is not who approved: the approver is the real uid's account, on this host.
    let out = Ripcord::new()
        .state(dir.path())
        .env("USER", "alice")
        .env("LOGNAME", "alice")
        .args(["run", "--json", "--approve", "go", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let approval = out
        .events()
        .into_iter()
        .find(|e| e["kind"] == "approval")
        .unwrap();
    let approver = approval["approver"].as_str().unwrap();
    assert!(!approver.starts_with("alice"), "{approval}");
    assert_eq!(approval["by"]["account"], whoami(), "{approval}");
    assert_eq!(
        approval["via"], "given in advance (--yes or --approve)",
        "{approval}"
    );
    assert_eq!(approval["simulated"], false);
    assert!(
        approval["at"].as_str().unwrap().starts_with("20"),
        "{approval}"
    );

    // A dry-run grants it and says so.
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", "--dry-run", &file])
        .run();
    let approval = out
        .events()
        .into_iter()
        .find(|e| e["kind"] == "approval")
        .unwrap();
    assert_eq!(approval["simulated"], true);

    let unknown = Ripcord::new()
        .state(dir.path())
        .args(["run", "--approve", "goo", &file])
        .run();
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("did you mean `go`?"),
        "{}",
        unknown.stderr
    );
}

/// A step that needs a for_each step with no items (no backends to drain) still waits for what
/// that step needs: the promotion does not start before the fence is done.
#[test]
fn an_empty_for_each_holds_back_what_needs_it_until_its_own_needs_are_done() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "empty.yaml",
        "version: 1\nname: empty\ninputs: { backends: { type: list, default: [] } }\nsteps:\n\
         - { id: fence, uses: shell.run, with: { argv: [\"true\"] }, sim: { duration: 2s } }\n\
         - { id: drain, for_each: \"${{ inputs.backends }}\", needs: [fence], uses: shell.run, with: { argv: [echo, \"${{ item }}\"] } }\n\
         - { id: promote, needs: [drain], uses: shell.run, with: { argv: [\"true\"] }, sim: { duration: 1s } }\n",
    );
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", "--dry-run", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let started = |id: &str| {
        out.events()
            .into_iter()
            .find(|e| e["kind"] == "step_started" && e["step"] == id)
            .unwrap_or_else(|| panic!("{id} never started: {}", out.transcript()))["t_ms"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(started("fence"), 0);
    assert_eq!(started("promote"), 2000, "promote waited for the fence");
}

/// `run --json FILE` as a dry-run, then for real.
fn dry_and_real(state: &Path, file: &str) -> Vec<(bool, Output)> {
    [true, false]
        .into_iter()
        .map(|dry| {
            let mut args = vec!["run", "--json"];
            if dry {
                args.push("--dry-run");
            }
            args.push(file);
            (dry, Ripcord::new().state(state).args(&args).run())
        })
        .collect()
}

#[test]
fn rendered_params_are_checked_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "port.yaml",
        "version: 1\nname: port\ninputs:\n  port: { type: string, default: \"54x32\" }\nsteps:\n\
         - { id: probe, uses: tcp.connect, with: { host: 127.0.0.1, port: \"${{ inputs.port }}\" } }\n",
    );
    for (dry, out) in dry_and_real(dir.path(), &file) {
        assert_eq!(out.code, 1, "{}", out.transcript());
        let e = out
            .events()
            .into_iter()
            .find(|e| e["kind"] == "step_finished")
            .unwrap();
        assert_eq!(
            e["error"], "tcp.connect: param `port` must be an integer, not a string",
            "dry-run {dry}"
        );
    }
}

/// A step output that was never given is named when a render fails because of it: in a
/// dry-run (not in the step's `sim.outputs`, so read as null) and in a real run (the step did
/// not write it), instead of "undefined value" or a null from nowhere.
#[test]
fn a_missing_step_output_is_named_when_a_render_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "missing.yaml",
        "version: 1\nname: missing\nsteps:\n\
         - { id: a, uses: shell.run, with: { argv: [echo, hi] }, sim: { outputs: { lsn: \"0/1\" } } }\n\
         - { id: b, on_failure: continue, uses: shell.run, with: { argv: [echo, \"${{ steps.a.outputs.timeline }}\"] } }\n\
         - { id: c, on_failure: continue, uses: shell.run, with: { argv: [echo, \"${{ steps.a.outputs.lsn }}\"] } }\n\
         - { id: d, needs: [a], on_failure: continue, uses: http.request, with: { method: \"${{ 'BAD' }}\", url: \"${{ steps.a.outputs.timeline | default('http://127.0.0.1:9') }}\" } }\n",
    );
    for (dry, out) in dry_and_real(dir.path(), &file) {
        let finished = |id: &str| {
            out.events()
                .into_iter()
                .find(|e| e["kind"] == "step_finished" && e["step"] == id)
                .unwrap_or_else(|| panic!("no {id}: {}", out.transcript()))
        };
        let error = finished("b")["error"].as_str().unwrap().to_string();
        let named = if dry {
            "(not simulated, so read as null: steps.a.outputs.timeline; give them in their step's `sim.outputs`)"
        } else {
            "(not given by their step: steps.a.outputs.timeline)"
        };
        assert!(error.ends_with(named), "dry-run {dry}: {error}");
        // A failure that is not about a missing value (the method) does not blame the
        // output that `default` stood in for.
        let d = finished("d")["error"].as_str().unwrap().to_string();
        assert!(d.contains("param `method` must be one of"), "{d}");
        assert!(!d.contains("timeline"), "{d}");
        // The output that exists is not blamed: in the real run `lsn` is missing too.
        let c = finished("c");
        if dry {
            assert_eq!(c["status"], "succeeded", "{c}");
        } else {
            assert!(
                c["error"].as_str().unwrap().contains("steps.a.outputs.lsn"),
                "{c}"
            );
        }
    }
}

#[test]
fn a_second_sigint_exits_at_once_and_takes_the_steps_along() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("ripcord-stubborn-{}", std::process::id());
    // The step ignores SIGTERM, so the first interrupt waits out the grace period...
    let file = write(
        dir.path(),
        "stubborn.yaml",
        &format!(
            "version: 1\nname: stubborn\nsteps:\n\
             - {{ id: stubborn, uses: shell.run, with: {{ script: 'trap \"\" TERM; sh -c \"sleep 30; : {marker}\"' }} }}\n"
        ),
    );
    let child = Ripcord::new()
        .state(dir.path())
        .args(["run", &file])
        .spawn();
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(300));
    // ...and the second one does not.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive(&marker), "the step's processes outlived ripcord");
    // The journal is valid and says what happened.
    let (_, in_doubt, _) = journal_state(dir.path());
    assert_eq!(in_doubt, ["stubborn"]);
}

#[test]
fn check_probes_read_only_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::HttpServer::start();
    let touched = dir.path().join("promoted");
    // A port nothing listens on: bind one, then free it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = write(
        dir.path(),
        "preflight.yaml",
        &format!(
            "version: 1\nname: preflight\nsteps:\n\
             - {{ id: db-up, uses: tcp.connect, with: {{ host: 127.0.0.1, port: {closed} }} }}\n\
             - {{ id: web-up, needs: [db-up], uses: http.request, with: {{ url: \"http://127.0.0.1:{p}/health\" }} }}\n\
             - {{ id: drain, needs: [web-up], uses: http.request, with: {{ url: \"http://127.0.0.1:{p}/drain\", method: POST }} }}\n\
             - {{ id: promote, needs: [drain], uses: shell.run, with: {{ argv: [touch, {}] }} }}\n\
             - {{ id: approve, uses: approval.ask }}\n\
             - {{ id: web-port, uses: tcp.connect, with: {{ host: 127.0.0.1, port: {p} }} }}\n",
            touched.display(),
            p = server.port
        ),
    );
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--check", "--json", &file])
        .run();
    assert_eq!(
        out.code,
        1,
        "the failed check fails the pre-flight: {}",
        out.transcript()
    );
    let status = |id: &str| {
        out.events()
            .into_iter()
            .find(|e| e["kind"] == "step_finished" && e["step"] == id)
            .map(|e| e["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("db-up").as_deref(), Some("failed"));
    assert_eq!(
        status("web-up").as_deref(),
        Some("succeeded"),
        "checks go on after a failed one"
    );
    assert_eq!(
        status("drain").as_deref(),
        Some("skipped"),
        "a POST is no read-only check"
    );
    assert_eq!(status("promote").as_deref(), Some("skipped"));
    assert_eq!(status("approve").as_deref(), Some("skipped"));
    assert_eq!(status("web-port").as_deref(), Some("succeeded"));
    let connected = out
        .events()
        .into_iter()
        .find(|e| e["step"] == "web-port" && e["kind"] == "step_finished")
        .unwrap();
    assert_eq!(
        connected["outputs"]["address"],
        format!("127.0.0.1:{}", server.port)
    );
    // The TCP probe connects and closes without a request; the only HTTP request is the GET.
    let requests: Vec<String> = server
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !r.is_empty())
        .cloned()
        .collect();
    assert_eq!(requests, ["GET /health HTTP/1.1"]);
    assert!(!touched.exists(), "a check changed something");
    assert_eq!(out.events()[0]["mode"], "check");
    let rollback = Ripcord::new()
        .state(dir.path())
        .args(["rollback", out.events()[0]["run_id"].as_str().unwrap()])
        .run();
    assert!(
        rollback.stdout.contains("nothing to roll back"),
        "{}",
        rollback.transcript()
    );
}

#[test]
fn http_requests_send_method_headers_and_json_and_check_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::HttpServer::start();
    let file = write(
        dir.path(),
        "http.yaml",
        &format!(
            "version: 1\nname: http\nsteps:\n\
             - {{ id: flip, uses: http.request, with: {{ method: PUT, url: \"http://127.0.0.1:{p}/active\",\n\
                 headers: {{ X-Change: CHG-42 }}, json: {{ site: b, weight: 100 }} }} }}\n\
             - {{ id: gate, uses: assert.that, with: {{ that: \"${{{{ steps.flip.outputs.status == 200 and steps.flip.outputs.json.healthy }}}}\" }} }}\n\
             - {{ id: strict, uses: http.request, on_failure: continue, with: {{ url: \"http://127.0.0.1:{p}/\", expect_status: [201, 204] }} }}\n",
            p = server.port
        ),
    );
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let full = server.full.lock().unwrap().clone();
    let put = full
        .iter()
        .find(|r| r.starts_with("PUT /active"))
        .expect("the PUT arrived");
    assert!(
        put.to_ascii_lowercase().contains("x-change: chg-42"),
        "{put}"
    );
    assert!(
        put.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{put}"
    );
    assert!(put.ends_with(r#"{"site":"b","weight":100}"#), "{put}");
    let finished = |id: &str| {
        out.events()
            .into_iter()
            .find(|e| e["kind"] == "step_finished" && e["step"] == id)
            .unwrap()
    };
    assert_eq!(finished("flip")["outputs"]["json"]["active"], "b");
    assert_eq!(finished("gate")["status"], "succeeded");
    assert_eq!(finished("strict")["status"], "failed");
    // The message says what the server answered, not only the status.
    let error = finished("strict")["error"].as_str().unwrap().to_string();
    assert!(error.contains("unexpected status 200: {"), "{error}");
    assert!(error.contains(r#""active":"b""#), "{error}");
}

#[test]
fn a_run_whose_output_pipe_closes_goes_on_to_the_end() {
    // `ripcord run ... | head -1`: the reader goes away; the failover must not.
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "pipe.yaml",
        "version: 1\nname: pipe\nsteps:\n  - id: a\n    uses: shell.run\n    with: { argv: [sleep, \"0.3\"] }\n  - id: b\n    needs: [a]\n    uses: shell.run\n    with: { argv: [\"true\"] }\n",
    );
    let state = dir.path().join("state");
    let mut child = Ripcord::new()
        .state(&state)
        .args(["run", "--json", &file])
        .spawn();
    drop(child.stdout.take()); // closed before the first event is written
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let run = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let journal = std::fs::read_to_string(run.path().join("journal.jsonl")).unwrap();
    assert!(journal.contains("\"run_finished\""), "{journal}");
    assert!(journal.contains("\"step\":\"b\""), "{journal}");

    // A command that only prints stops quietly, as cat does.
    let mut child = Ripcord::new().args(["graph", &file]).spawn();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn a_step_sees_only_its_own_output_file() {
    // $RIPCORD_OUTPUT names are reused once free: what one step wrote never reaches the next.
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "outputs.yaml",
        "version: 1\nname: outputs\nconcurrency: 1\nsteps:\n  - id: writes\n    uses: shell.run\n    with: { script: 'echo secretish=1 >> \"$RIPCORD_OUTPUT\"' }\n  - id: silent\n    needs: [writes]\n    uses: shell.run\n    with: { script: 'test ! -e \"$RIPCORD_OUTPUT\"' }\n  - id: again\n    needs: [silent]\n    uses: shell.run\n    with: { script: 'echo mine=2 >> \"$RIPCORD_OUTPUT\"' }\n",
    );
    let state = dir.path().join("state");
    let out = Ripcord::new()
        .state(&state)
        .args(["run", "--json", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let outputs: HashMap<String, serde_json::Value> = out
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "step_finished")
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_string(),
                e["outputs"].clone(),
            )
        })
        .collect();
    assert_eq!(outputs["writes"]["secretish"], "1");
    assert!(outputs["silent"].get("secretish").is_none());
    assert_eq!(outputs["again"]["mine"], "2");
    assert!(outputs["again"].get("secretish").is_none());
}

/// A large `stdin:` is written while the child's output is read: `cat` of 300 KB finishes
/// (it used to deadlock until the timeout, ripcord writing stdin while `cat` waited to write
/// stdout), and a child that never reads its stdin is still stopped by the step's timeout.
#[test]
fn a_large_stdin_neither_deadlocks_nor_escapes_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let big: String = (0..300_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let file = write(
        dir.path(),
        "stdin.yaml",
        &format!(
            "version: 1\nname: stdin\ninputs:\n  big: {{ type: string, default: {big} }}\nsteps:\n\
             - {{ id: cat, uses: shell.run, timeout: 20s, with: {{ argv: [sh, -c, 'cat | wc -c'], stdin: \"${{{{ inputs.big }}}}\" }} }}\n\
             - {{ id: deaf, uses: shell.run, timeout: 1s, on_failure: continue, with: {{ argv: [sleep, '60'], stdin: \"${{{{ inputs.big }}}}\" }} }}\n"
        ),
    );
    let started = std::time::Instant::now();
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let finished: Vec<Value> = out
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "step_finished")
        .collect();
    let cat = finished.iter().find(|e| e["step"] == "cat").unwrap();
    assert_eq!(cat["status"], "succeeded", "{cat}");
    assert_eq!(cat["outputs"]["stdout"].as_str().unwrap().trim(), "300000");
    let deaf = finished.iter().find(|e| e["step"] == "deaf").unwrap();
    assert_eq!(deaf["status"], "failed", "{deaf}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout stopped the child that never read: {:?}",
        started.elapsed()
    );
}
