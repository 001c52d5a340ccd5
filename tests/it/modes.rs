//! DR modes (`modes:`, `--mode`, step `modes:`, `run.mode`, `run_mode`) and what a pre-flight
//! runs (`check: false`, `check: true`).

use crate::support::{Ripcord, write};

const DR: &str = r#"version: 1
name: dr
modes: [planned, unplanned, test]
steps:
  - { id: pre, uses: shell.run, check: true, with: { argv: [sh, -c, 'echo free=100 >> "$RIPCORD_OUTPUT"'] } }
  - { id: enough, needs: [pre], uses: assert.that, check: true, with: { that: "${{ steps.pre.outputs.free | int > 50 }}" } }
  - { id: switch, needs: [enough], modes: [planned], uses: shell.run, with: { argv: [sh, -c, 'echo "mode=$M" >> "$RIPCORD_OUTPUT"; test ! -e "$GATE"'], env: { M: "${{ run.mode }}", GATE: GATE_FILE } } }
  - { id: failover, needs: [enough], modes: [unplanned], uses: shell.run, with: { argv: ["true"] } }
  - { id: clone, needs: [enough], modes: [test, planned], uses: shell.run, with: { argv: [sh, -c, 'echo "mode=$M" >> "$RIPCORD_OUTPUT"; test ! -e "$GATE"'], env: { M: "${{ run.mode }}", GATE: GATE_FILE } } }
  - { id: after, needs: [switch, failover, clone], check: false, uses: shell.run, with: { argv: ["true"] } }
"#;

fn report(state: &std::path::Path, run_id: &str) -> serde_json::Value {
    let out = Ripcord::new()
        .state(state)
        .args(["report", run_id, "--format", "json"])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    serde_json::from_str(&out.stdout).unwrap()
}

fn status(report: &serde_json::Value, id: &str) -> String {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .map(|s| s["status"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no step {id}"))
}

#[test]
fn a_mode_runs_its_steps_and_skips_the_others_in_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let gate = dir.path().join("gate");
    let file = write(
        dir.path(),
        "dr.yaml",
        &DR.replace("GATE_FILE", &gate.display().to_string()),
    );
    // The default is the first mode; plan says which, and what it skips.
    let plan = Ripcord::new().args(["plan", &file]).run();
    assert_eq!(plan.code, 0, "{}", plan.transcript());
    assert!(
        plan.stdout
            .contains("mode planned (of planned, unplanned, test")
            && plan.stdout.contains("1 step skipped in it"),
        "{}",
        plan.stdout
    );
    let plan = Ripcord::new()
        .args(["plan", "--json", "--mode", "test", &file])
        .run();
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(plan["mode"], "test");

    // A test-mode run, stopped by a failure in its clone step, then resumed: the mode holds.
    std::fs::write(&gate, "").unwrap();
    let out = Ripcord::new()
        .state(&state)
        .args(["run", "--json", "--mode", "test", &file])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert_eq!(out.events()[0]["run_mode"], "test", "{}", out.stdout);
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    std::fs::remove_file(&gate).unwrap();
    let resumed = Ripcord::new().state(&state).args(["resume", &run_id]).run();
    assert_eq!(resumed.code, 0, "{}", resumed.transcript());
    let r = report(&state, &run_id);
    assert_eq!(r["run_mode"], "test");
    assert_eq!(status(&r, "clone"), "succeeded");
    assert_eq!(status(&r, "switch"), "skipped");
    assert_eq!(status(&r, "failover"), "skipped");
    assert_eq!(status(&r, "after"), "succeeded");
    let clone = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "clone")
        .unwrap();
    assert_eq!(clone["outputs"]["mode"], "test", "run.mode: {clone}");
    for format in ["text", "md", "html", "junit"] {
        let out = Ripcord::new()
            .state(&state)
            .args(["report", &run_id, "--format", format])
            .run();
        assert!(out.stdout.contains("mode test"), "{format}: {}", out.stdout);
    }
    // Why a step was skipped: the mode, not a `when`.
    let junit = Ripcord::new()
        .state(&state)
        .args(["report", &run_id, "--format", "junit"])
        .run();
    assert!(
        junit
            .stdout
            .contains(r#"<skipped message="not in mode test"/>"#),
        "{}",
        junit.stdout
    );

    // The default mode, for real: both of its steps, not the others.
    let out = Ripcord::new()
        .state(&state)
        .args(["run", "--json", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    let r = report(&state, &run_id);
    assert_eq!(r["run_mode"], "planned");
    assert_eq!(status(&r, "switch"), "succeeded");
    assert_eq!(status(&r, "clone"), "succeeded");
    assert_eq!(status(&r, "failover"), "skipped");
}

#[test]
fn an_unknown_mode_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "dr.yaml",
        &DR.replace("GATE_FILE", "/nonexistent"),
    );
    for args in [
        vec!["run", "--mode", "tset"],
        vec!["run", "--dry-run", "--mode", "tset"],
        vec!["plan", "--mode", "tset"],
        vec!["graph", "--mode", "tset"],
    ] {
        let mut args = args;
        args.push(&file);
        let out = Ripcord::new()
            .state(&dir.path().join("state"))
            .args(&args)
            .run();
        assert_eq!(out.code, 2, "{args:?}: {}", out.transcript());
        assert!(
            out.stderr.contains("no mode `tset`") && out.stderr.contains("did you mean `test`?"),
            "{}",
            out.stderr
        );
    }
    assert!(!dir.path().join("state/runs").exists());
    // A step naming a mode the runbook does not declare, and modes on a runbook without any.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "version: 1\nname: bad\nmodes: [planned, test]\nsteps:\n  - { id: a, modes: [tets], uses: sleep.for, with: { duration: 1s } }\n",
    );
    let out = Ripcord::new().args(["validate", &bad]).run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(
        out.stderr.contains("unknown mode `tets`") && out.stderr.contains("bad.yaml:5:"),
        "{}",
        out.stderr
    );
    let none = write(
        dir.path(),
        "none.yaml",
        "version: 1\nname: none\nsteps:\n  - { id: a, modes: [test], uses: sleep.for, with: { duration: 1s } }\n",
    );
    let out = Ripcord::new().args(["validate", &none]).run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(
        out.stderr.contains("needs the runbook's own `modes:`"),
        "{}",
        out.stderr
    );
    let out = Ripcord::new().args(["plan", "--mode", "test", &none]).run();
    assert_eq!(out.code, 2, "{}", out.transcript());
}

/// `run --check`: `check: true` runs a read-only step for real (a disk check and the assertion
/// on it), `check: false` leaves a post-condition out; a failed check fails the pre-flight.
#[test]
fn check_true_runs_a_read_only_step_in_a_pre_flight_and_check_false_leaves_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "pre.yaml",
        r#"version: 1
name: pre
inputs:
  need: { type: integer, default: 50 }
steps:
  - { id: disk, uses: shell.run, check: true, with: { argv: [sh, -c, 'echo free=100 >> "$RIPCORD_OUTPUT"'] } }
  - { id: room, needs: [disk], uses: assert.that, check: true, with: { that: "${{ steps.disk.outputs.free | int > inputs.need }}" } }
  - { id: change, needs: [room], uses: shell.run, with: { argv: [touch, CHANGED] } }
  - { id: post, needs: [change], uses: tcp.connect, check: false, with: { host: 127.0.0.1, port: 1 } }
"#
        .replace("CHANGED", &dir.path().join("changed").display().to_string())
        .as_str(),
    );
    let out = Ripcord::new()
        .state(&state)
        .args(["run", "--check", "--json", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let finished: Vec<(String, String)> = out
        .events()
        .iter()
        .filter(|e| e["kind"] == "step_finished")
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let of = |id: &str| {
        finished
            .iter()
            .find(|(s, _)| s == id)
            .map(|(_, st)| st.as_str())
    };
    assert_eq!(of("disk"), Some("succeeded"));
    assert_eq!(of("room"), Some("succeeded"));
    assert_eq!(of("change"), Some("skipped"));
    // Port 1 refuses: a check of it would fail; `check: false` leaves it out.
    assert_eq!(of("post"), Some("skipped"));
    assert!(!dir.path().join("changed").exists());
    // Not enough room: the pre-flight fails, naming the assertion.
    let out = Ripcord::new()
        .state(&state)
        .args(["run", "--check", &file, "-i", "need=500"])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(out.stdout.contains("FAILED   room"), "{}", out.stdout);
}

/// `check: true` runs a step for real in a pre-flight: refused where that could change
/// something or bypass a safer check (an include, an approval, an irreversible step, a step
/// with an undo, an action with a read-only check of its own).
#[test]
fn check_true_is_refused_where_a_pre_flight_could_change_something() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "module.yaml",
        "version: 1\nname: module\nsteps:\n  - { id: change, uses: shell.run, with: { argv: [\"true\"] } }\n",
    );
    for (n, step) in [
        "{ id: s, include: ./module.yaml, check: true }",
        "{ id: s, uses: approval.ask, check: true, with: { prompt: ok? } }",
        "{ id: s, uses: shell.run, irreversible: true, check: true, with: { argv: [\"true\"] } }",
        "{ id: s, uses: shell.run, check: true, with: { argv: [\"true\"] }, undo: { uses: shell.run, with: { argv: [\"true\"] } } }",
        "{ id: s, uses: tcp.connect, check: true, with: { host: 127.0.0.1, port: 1 } }",
    ]
    .iter()
    .enumerate()
    {
        let file = write(
            dir.path(),
            &format!("r{n}.yaml"),
            &format!("version: 1\nname: r\nsteps:\n  - {step}\n"),
        );
        let out = Ripcord::new().args(["validate", &file]).run();
        assert_eq!(out.code, 2, "{step}: {}", out.transcript());
        assert!(out.stderr.contains("`check: true`"), "{}", out.stderr);
    }
}

/// A pre-flight changes nothing, so `rollback: auto` does not run after a failed one.
#[test]
fn a_failed_pre_flight_rolls_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let undone = dir.path().join("undone");
    let file = write(
        dir.path(),
        "auto.yaml",
        &format!(
            "version: 1\nname: auto\nrollback: auto\nsteps:\n  \
             - {{ id: probe, uses: tcp.connect, with: {{ host: 127.0.0.1, port: 9 }}, undo: {{ uses: shell.run, with: {{ argv: [touch, {}] }} }} }}\n  \
             - {{ id: fails, needs: [probe], uses: tcp.connect, with: {{ host: 127.0.0.1, port: 1 }} }}\n",
            undone.display()
        ),
    );
    let out = Ripcord::new()
        .state(&dir.path().join("state"))
        .args(["run", "--check", &file])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(!undone.exists(), "an undo ran after a pre-flight");
}

/// The refusal of inputs without a value counts only what this run would use: not an input
/// tested with `is defined` or given a `default(...)`, not one read only by steps out of the
/// mode or by an undo; and it is not asked again of a rollback.
#[test]
fn inputs_without_values_are_refused_only_where_the_run_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "optional.yaml",
        r#"version: 1
name: optional
modes: [test, planned]
inputs:
  extra: { type: string }
  fallback: { type: string }
  token: { type: string, secret: true, env: OPTIONAL_TOKEN_UNSET }
  undo_only: { type: string }
steps:
  - { id: a, uses: shell.run, when: "${{ inputs.extra is defined }}", with: { argv: [echo, "${{ inputs.extra }}"] } }
  - { id: b, uses: shell.run, with: { argv: [echo, "${{ inputs.fallback | default('none') }}"] } }
  - { id: c, modes: [planned], uses: shell.run, with: { argv: ["true"], env: { T: "${{ inputs.token }}" } } }
  - { id: d, uses: shell.run, with: { argv: ["true"] }, undo: { uses: shell.run, with: { argv: [echo, "${{ inputs.undo_only }}"] } } }
"#,
    );
    let out = Ripcord::new()
        .state(&state)
        .env_remove("OPTIONAL_TOKEN_UNSET")
        .args(["run", "--mode", "test", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    // In the mode that uses it, the token is missing: refused before anything starts.
    let out = Ripcord::new()
        .state(&state)
        .env_remove("OPTIONAL_TOKEN_UNSET")
        .args(["run", "--mode", "planned", &file])
        .run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(
        out.stderr.contains("input `token` has no value"),
        "{}",
        out.stderr
    );
}

/// A step that reads the outputs of a step that does not run in this mode is refused before the
/// run, not half-way through it.
#[test]
fn reading_the_outputs_of_a_step_out_of_the_mode_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "reads.yaml",
        r#"version: 1
name: reads
modes: [planned, test]
steps:
  - { id: only-planned, modes: [planned], uses: shell.run, with: { argv: ["true"] } }
  - { id: reader, needs: [only-planned], uses: shell.run, with: { argv: [echo, "${{ steps.only-planned.outputs.stdout }}"] } }
  - { id: careful, needs: [only-planned], uses: shell.run, with: { argv: [echo, "${{ steps.only-planned.outputs.stdout | default('') }}"] } }
"#,
    );
    let ok = Ripcord::new().args(["plan", &file]).run();
    assert_eq!(ok.code, 0, "{}", ok.transcript());
    for args in [
        vec!["plan", "--mode", "test"],
        vec!["run", "--dry-run", "--mode", "test"],
    ] {
        let mut args = args;
        args.push(&file);
        let out = Ripcord::new()
            .state(&dir.path().join("state"))
            .args(&args)
            .run();
        assert_eq!(out.code, 2, "{args:?}: {}", out.transcript());
        assert!(
            out.stderr.contains("step `reader` reads the outputs of `only-planned`, which does not run in mode `test`"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("`careful`"), "{}", out.stderr);
    }
}

/// A test run's rollback is its cleanup: after it succeeded, `ripcord rollback` undoes it
/// without `--force`; a run of another mode that succeeded is refused; `cleanup_modes:` names
/// other modes, and a name that is not a mode is an error.
#[test]
fn a_test_run_that_succeeded_is_rolled_back_as_its_cleanup_and_other_modes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let made = dir.path().join("made");
    let runbook = |cleanup: &str| {
        format!(
            "version: 1\nname: drill\nmodes: [live, test, rehearse]\n{cleanup}steps:\n  - id: make\n    uses: shell.run\n    with: {{ argv: [touch, {made}] }}\n    undo: {{ uses: shell.run, with: {{ argv: [rm, -f, {made}] }} }}\n",
            made = made.display()
        )
    };
    let file = write(dir.path(), "drill.yaml", &runbook(""));
    let run = |mode: &str, file: &str| {
        let out = Ripcord::new()
            .state(&state)
            .args(["run", "--json", "--mode", mode, file])
            .run();
        assert_eq!(out.code, 0, "{}", out.transcript());
        assert!(made.exists());
        out.summary()["run_id"].as_str().unwrap().to_string()
    };
    let rollback = |id: &str| Ripcord::new().state(&state).args(["rollback", id]).run();

    let id = run("test", &file);
    let out = rollback(&id);
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(!made.exists(), "the cleanup removed what the test made");

    let id = run("live", &file);
    let out = rollback(&id);
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(out.stderr.contains("the run succeeded"), "{}", out.stderr);
    assert!(made.exists(), "a refused rollback undid something");

    // Declared: `rehearse` is a cleanup mode, and `test` no longer is.
    let file = write(
        dir.path(),
        "drill2.yaml",
        &runbook("cleanup_modes: [rehearse]\n"),
    );
    let id = run("rehearse", &file);
    assert_eq!(rollback(&id).code, 0);
    assert!(!made.exists());
    let id = run("test", &file);
    assert_eq!(rollback(&id).code, 2);
    assert!(made.exists(), "a refused rollback undid something");

    let file = write(dir.path(), "bad.yaml", &runbook("cleanup_modes: [tset]\n"));
    let out = Ripcord::new().args(["validate", &file]).run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(
        out.stderr.contains("`cleanup_modes:` names `tset`")
            && out.stderr.contains("did you mean `test`?"),
        "{}",
        out.stderr
    );
}

/// What an interrupted run says to do next: continue, or undo what it did — unless an
/// irreversible step has started (then only forward). A pre-flight's RTO is not judged.
#[test]
fn an_interrupted_run_offers_resume_and_rollback_unless_past_an_irreversible_step() {
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("made");
    let runbook = |irreversible: bool| {
        format!(
            "version: 1\nname: hint\nrto: 1m\nsteps:\n  - id: make\n    uses: shell.run\n    irreversible: {irreversible}\n    with: {{ argv: [touch, {made}] }}\n    undo: {{ uses: shell.run, with: {{ argv: [rm, -f, {made}] }} }}\n  - {{ id: long, needs: [make], uses: shell.run, with: {{ argv: [sleep, '30'] }} }}\n",
            made = made.display()
        )
    };
    for irreversible in [false, true] {
        let state = dir.path().join(format!("state-{irreversible}"));
        let file = write(dir.path(), "hint.yaml", &runbook(irreversible));
        let child = Ripcord::new().state(&state).args(["run", &file]).spawn();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !made.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the first step never ran"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{stdout}");
        assert!(stdout.contains("continue with: ripcord resume"), "{stdout}");
        if irreversible {
            assert!(
                stdout.contains("irreversible step make started: rollback is refused"),
                "{stdout}"
            );
            assert!(!stdout.contains("ripcord rollback"), "{stdout}");
        } else {
            assert!(
                stdout.contains("or undo what it did with: ripcord rollback"),
                "{stdout}"
            );
        }
        std::fs::remove_file(&made).unwrap();
    }
    let file = write(dir.path(), "hint.yaml", &runbook(false));
    let check = Ripcord::new()
        .state(&dir.path().join("state-check"))
        .args(["run", "--check", &file])
        .run();
    assert!(
        check.stdout.contains("rto 1m: not judged (a pre-flight)"),
        "{}",
        check.transcript()
    );
}

/// A pre-flight lists each failed check once: a check that reads the outputs of a failed one
/// is not judged (it says which), rather than failing on values that were never given.
#[test]
fn a_check_reading_a_failed_checks_outputs_is_not_judged() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "pre.yaml",
        "version: 1\nname: pre\nsteps:\n  - { id: probe, uses: shell.run, check: true, with: { argv: [sh, -c, 'exit 3'] } }\n  - { id: mid, uses: shell.run, check: true, with: { argv: [echo, \"${{ steps.probe.outputs.free }}\"] } }\n  - { id: judged, uses: assert.that, check: true, with: { that: \"${{ steps.mid.outputs.stdout | int > 5 }}\" } }\n",
    );
    let out = Ripcord::new()
        .state(&dir.path().join("state"))
        .args(["run", "--check", "--json", &file])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    let finished = |id: &str| {
        out.events()
            .into_iter()
            .find(|e| e["kind"] == "step_finished" && e["step"] == id)
            .unwrap()
    };
    let mid = finished("mid");
    assert_eq!(mid["status"], "skipped", "{mid}");
    assert_eq!(
        mid["error"],
        "not checked: it reads the outputs of probe, which failed or could not be checked",
        "{mid}"
    );
    // ... and what reads a step not judged is not judged either.
    let judged = finished("judged");
    assert_eq!(judged["status"], "skipped", "{judged}");
    assert_eq!(out.summary()["failed"], 1);
}
