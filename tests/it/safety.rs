//! Failure paths that cannot make a failover worse: irreversible steps stop rollback, a rolled
//! back run is over, undos retry and time out like steps, approvals are answered by who the OS
//! says, never in doubt, from any shell; signals stop every phase with exit 3; no step process
//! outlives ripcord; two sessions never write one journal. Each test fails on the code before
//! these rules.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Output, Ripcord, alive, records, run_id, wait_alive, whoami, write};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs ripcord to its end with runs recorded in `state`.
fn ripcord(state: &Path, args: &[&str]) -> Output {
    Ripcord::new().state(state).args(args).run()
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

/// Waits until the run's journal has a record that `want` accepts.
fn wait_for_record(state: &Path, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = records(state).and_then(|rs| rs.into_iter().find(|r| want(r))) {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on a child we started.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn finish(child: std::process::Child) -> Output {
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// drain (undone by "undrain") -> check (fails when the file `check-fails` exists) -> promote
/// (irreversible; fails when `promote-fails` exists, after leaving its mark) -> cut-over, which
/// fails unless the file `ok` exists in the input dir.
const IRREVERSIBLE: &str = r#"version: 1
name: irreversible
ROLLBACK
inputs:
  dir: { type: string, required: true }
steps:
  - id: drain
    uses: shell.run
    with: { argv: [sh, -c, 'echo drained >> "$D/log"'], env: { D: "${{ inputs.dir }}" } }
    undo: { uses: shell.run, with: { argv: [sh, -c, 'echo undrained >> "$D/log"'], env: { D: "${{ inputs.dir }}" } } }
  - id: check
    needs: [drain]
    uses: shell.run
    with: { argv: [sh, -c, 'test ! -e "$D/check-fails"'], env: { D: "${{ inputs.dir }}" } }
  - id: promote
    needs: [check]
    irreversible: true
    uses: shell.run
    with: { argv: [sh, -c, 'echo promoted >> "$D/log"; test ! -e "$D/promote-fails"'], env: { D: "${{ inputs.dir }}" } }
  - id: cut-over
    needs: [promote]
    uses: shell.run
    with: { argv: [sh, -c, 'echo cut-over >> "$D/log"; test -e "$D/ok"'], env: { D: "${{ inputs.dir }}" } }
"#;

fn irreversible_runbook(dir: &Path, rollback: &str) -> String {
    write(
        dir,
        "irreversible.yaml",
        &IRREVERSIBLE.replace("ROLLBACK", &format!("rollback: {rollback}")),
    )
}

#[test]
fn rollback_past_an_irreversible_step_is_refused_and_forced_only_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = irreversible_runbook(dir.path(), "manual");
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    let run = ripcord(&state, &["run", &file, "-i", &input]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let id = run_id(&state);
    // The hint goes forward, not back.
    assert!(
        run.stdout.contains("irreversible step promote started")
            && run.stdout.contains(&format!("ripcord resume {id}"))
            && !run.stdout.contains("ripcord rollback"),
        "{}",
        run.stdout
    );
    let refused = ripcord(&state, &["rollback", &id, "-i", &input]);
    assert_eq!(refused.code, 2, "{}", refused.transcript());
    assert!(
        refused.stderr.contains("irreversible step promote")
            && refused.stderr.contains(&format!("ripcord resume {id}")),
        "{}",
        refused.stderr
    );
    let no_reason = ripcord(&state, &["rollback", &id, "-i", &input, "--force"]);
    assert_eq!(no_reason.code, 2, "{}", no_reason.transcript());
    // Editing the runbook does not lift it: the journal recorded the step as irreversible.
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("    irreversible: true\n", ""),
    )
    .unwrap();
    let edited = ripcord(&state, &["rollback", &id, "-i", &input, "--force"]);
    assert_eq!(edited.code, 2, "{}", edited.transcript());
    assert!(
        edited.stderr.contains("irreversible step promote")
            && edited.stderr.contains("the runbook changed"),
        "{}",
        edited.stderr
    );
    assert!(!log(dir.path()).contains("undrained"), "nothing undone");

    let forced = Ripcord::new()
        .state(&state)
        .args(["rollback", &id, "-i", &input, "--force"])
        .args(["--reason", "drill: old primary rebuilt by hand"])
        .run();
    assert_eq!(forced.code, 0, "{}", forced.transcript());
    assert!(log(dir.path()).contains("undrained"));
    let json: Value =
        serde_json::from_str(&ripcord(&state, &["report", &id, "--format", "json"]).stdout)
            .unwrap();
    let forced = &json["rollback"]["forced"];
    assert_eq!(forced["reason"], "drill: old primary rebuilt by hand");
    assert!(
        forced["past"][0]
            .as_str()
            .unwrap()
            .contains("irreversible step promote"),
        "{json}"
    );
    assert!(
        forced["past"][1]
            .as_str()
            .unwrap()
            .contains("the runbook changed"),
        "{json}"
    );
    assert!(
        json["rollback"]["by"]
            .as_str()
            .unwrap()
            .starts_with(&whoami())
    );
    for format in ["text", "md", "html", "junit"] {
        let out = ripcord(&state, &["report", &id, "--format", format]);
        assert!(
            out.stdout.contains("FORCED") && out.stdout.contains("old primary rebuilt"),
            "{format}: {}",
            out.stdout
        );
    }
    // Rolled back: over. Resume refuses, and nothing more runs.
    let before = log(dir.path());
    std::fs::write(dir.path().join("ok"), "").unwrap();
    let resume = ripcord(&state, &["resume", &id, "-i", &input]);
    assert_eq!(resume.code, 2, "{}", resume.transcript());
    assert!(resume.stderr.contains("rolled back"), "{}", resume.stderr);
    assert_eq!(log(dir.path()), before);
}

/// A run with `rollback: auto` in `dir`, failing as the marker file says; its exit code.
fn auto_run(dir: &Path, fails: &str) -> (std::path::PathBuf, Output) {
    let file = irreversible_runbook(dir, "auto");
    if !fails.is_empty() {
        std::fs::write(dir.join(fails), "").unwrap();
    }
    let input = format!("dir={}", dir.display());
    let state = dir.join("state");
    let out = ripcord(&state, &["run", &file, "-i", &input]);
    (state, out)
}

#[test]
fn automatic_rollback_stops_at_an_irreversible_step_that_started() {
    // Failing after the promotion, and failing in it (it may have promoted before failing, as a
    // timeout would): nothing is undone automatically.
    for fails in ["", "promote-fails"] {
        let dir = tempfile::tempdir().unwrap();
        let (state, run) = auto_run(dir.path(), fails);
        assert_eq!(run.code, 1, "{}", run.transcript());
        assert!(log(dir.path()).contains("promoted"));
        assert!(
            !log(dir.path()).contains("undrained"),
            "{fails}: {}",
            log(dir.path())
        );
        let journal = records(&state).unwrap();
        assert!(!journal.iter().any(|r| r["kind"] == "rollback_started"));
        assert!(
            journal.iter().any(|r| r["kind"] == "run_note"
                && r["message"]
                    .as_str()
                    .unwrap()
                    .contains("automatic rollback not run: irreversible step promote")),
            "{journal:?}"
        );
        let manual = ripcord(
            &state,
            &[
                "rollback",
                &run_id(&state),
                "-i",
                &format!("dir={}", dir.path().display()),
            ],
        );
        assert_eq!(manual.code, 2, "{fails}: {}", manual.transcript());
    }
    // Failing before the promotion started: the drain is undone.
    let dir = tempfile::tempdir().unwrap();
    let (_, run) = auto_run(dir.path(), "check-fails");
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(!log(dir.path()).contains("promoted"));
    assert!(log(dir.path()).contains("undrained"), "{}", log(dir.path()));
}

#[test]
fn a_step_taken_as_done_is_journaled_done_and_never_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    // The promotion hangs: ripcord is killed in the middle of it.
    let file = write(
        dir.path(),
        "hang.yaml",
        &IRREVERSIBLE.replace("ROLLBACK\n", "").replace(
            "echo promoted >> \"$D/log\"; test",
            "echo promoted >> \"$D/log\"; [ -e \"$D/ok\" ] || sleep 30; test",
        ),
    );
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    let mut child = Ripcord::new()
        .state(&state)
        .args(["run", &file, "-i", &input])
        .spawn();
    wait_for_record(&state, "the promotion to start", |r| {
        r["kind"] == "step_started" && r["step"] == "promote"
    });
    // Killed once the promotion has left its mark, while it still runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log(dir.path()).contains("promoted") {
        assert!(Instant::now() < deadline, "the promotion never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let id = run_id(&state);
    // Taken as done: the cut-over still fails.
    let skip = ripcord(&state, &["resume", &id, "--skip-in-doubt", "-i", &input]);
    assert_eq!(skip.code, 1, "{}", skip.transcript());
    let done = records(&state)
        .unwrap()
        .into_iter()
        .find(|r| r["kind"] == "step_finished" && r["step"] == "promote")
        .expect("the decision is the step's recorded end");
    assert_eq!(done["status"], "skipped");
    assert!(
        done["error"].as_str().unwrap().contains("--skip-in-doubt"),
        "{done}"
    );
    // Rollback stays refused: the promotion may have happened.
    let back = ripcord(&state, &["rollback", &id, "-i", &input]);
    assert_eq!(back.code, 2, "{}", back.transcript());
    // The cause fixed, a plain resume asks nothing and does not promote again.
    std::fs::write(dir.path().join("ok"), "").unwrap();
    let resume = ripcord(&state, &["resume", &id, "--retry-in-doubt", "-i", &input]);
    assert_eq!(resume.code, 0, "{}", resume.transcript());
    assert_eq!(
        log(dir.path()).matches("promoted").count(),
        1,
        "{}",
        log(dir.path())
    );
}

#[test]
fn resume_after_a_rollback_is_refused_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Not irreversible here: the promotion fails, the drain is rolled back.
    let file = write(
        dir.path(),
        "plain.yaml",
        &IRREVERSIBLE
            .replace("ROLLBACK\n", "")
            .replace("    irreversible: true\n", ""),
    );
    std::fs::write(dir.path().join("promote-fails"), "").unwrap();
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    let run = ripcord(&state, &["run", &file, "-i", &input]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let id = run_id(&state);
    let back = ripcord(&state, &["rollback", &id, "-i", &input]);
    assert_eq!(back.code, 0, "{}", back.transcript());
    assert!(
        log(dir.path()).ends_with("undrained\n"),
        "{}",
        log(dir.path())
    );
    // The cause is fixed; resuming would promote without the drain: refused.
    std::fs::remove_file(dir.path().join("promote-fails")).unwrap();
    let resume = ripcord(&state, &["resume", &id, "-i", &input]);
    assert_eq!(resume.code, 2, "{}", resume.transcript());
    assert!(
        resume.stderr.contains("cannot be resumed") && resume.stderr.contains("ripcord run"),
        "{}",
        resume.stderr
    );
    assert!(
        log(dir.path()).ends_with("undrained\n"),
        "{}",
        log(dir.path())
    );
}

#[test]
fn a_run_that_succeeded_is_not_rolled_back_without_force_and_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = irreversible_runbook(dir.path(), "manual");
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("    irreversible: true\n", ""),
    )
    .unwrap();
    std::fs::write(dir.path().join("ok"), "").unwrap();
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    let run = ripcord(&state, &["run", &file, "-i", &input]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let back = ripcord(&state, &["rollback", &run_id(&state), "-i", &input]);
    assert_eq!(back.code, 2, "{}", back.transcript());
    assert!(back.stderr.contains("the run succeeded"), "{}", back.stderr);
    assert!(!log(dir.path()).contains("undrained"));
}

#[test]
fn an_undo_takes_retry_timeout_and_when_and_a_timeout_sends_sigterm_first() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "undo.yaml",
        r#"version: 1
name: undo
inputs:
  dir: { type: string, required: true }
steps:
  - id: flaky
    uses: shell.run
    with: { argv: ["true"] }
    undo:
      uses: shell.run
      with: { argv: [sh, -c, 'echo try >> "$D/flaky"; [ $(wc -l < "$D/flaky") -ge 3 ]'], env: { D: "${{ inputs.dir }}" } }
      retry: { attempts: 3, delay: 50ms }
  - id: kept
    uses: shell.run
    with: { argv: ["true"] }
    undo:
      uses: shell.run
      when: "${{ steps.kept.outputs.exit_code != 0 }}"
      with: { argv: [sh, -c, 'echo kept-undone >> "$D/log"'], env: { D: "${{ inputs.dir }}" } }
  - id: stubborn
    uses: shell.run
    with: { argv: ["true"] }
    undo:
      uses: shell.run
      timeout: 500ms
      retry: { attempts: 1 }
      with: { script: 'trap "echo got-term >> \"$D/log\"; exit 1" TERM; sleep 30 & wait', env: { D: "${{ inputs.dir }}" } }
  - id: fails
    needs: [flaky, kept, stubborn]
    uses: shell.run
    with: { argv: ["false"] }
"#,
    );
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    let run = ripcord(&state, &["run", &file, "-i", &input]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let back = ripcord(&state, &["rollback", &run_id(&state), "-i", &input]);
    // The stubborn undo timed out: the rollback failed, saying so.
    assert_eq!(back.code, 1, "{}", back.transcript());
    let tries = std::fs::read_to_string(dir.path().join("flaky")).unwrap();
    assert_eq!(tries.lines().count(), 3, "the undo was retried: {tries}");
    assert!(
        !log(dir.path()).contains("kept-undone"),
        "its when was false"
    );
    assert!(
        log(dir.path()).contains("got-term"),
        "SIGTERM before SIGKILL: {}",
        log(dir.path())
    );
    let undos: Vec<(String, String)> = records(&state)
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "undo_finished")
        .map(|r| {
            (
                r["step"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("flaky", "succeeded"),
        ("kept", "skipped"),
        ("stubborn", "failed"),
    ] {
        assert!(
            undos.contains(&(want.0.to_string(), want.1.to_string())),
            "{undos:?}"
        );
    }
}

const SLOW: &str = r#"version: 1
name: slow
steps:
  - id: slow
    uses: shell.run
    with: { script: 'sh -c "sleep 60; : MARKER-child" & sleep 61; : MARKER' }
"#;

#[test]
fn sighup_and_sigterm_stop_a_run_with_exit_3_and_end_its_processes() {
    for (sig, name) in [(libc::SIGHUP, "SIGHUP"), (libc::SIGTERM, "SIGTERM")] {
        let dir = tempfile::tempdir().unwrap();
        let marker = format!("ripcord-{name}-{}", std::process::id());
        let file = write(dir.path(), "slow.yaml", &SLOW.replace("MARKER", &marker));
        let state = dir.path().join("state");
        let child = Ripcord::new().state(&state).args(["run", &file]).spawn();
        wait_alive(&marker);
        signal(&child, sig);
        let out = finish(child);
        assert_eq!(out.code, 3, "{name}: {}", out.transcript());
        assert!(out.stdout.contains("ripcord resume"), "{}", out.stdout);
        let journal = records(&state).unwrap();
        assert!(
            journal
                .iter()
                .any(|r| r["kind"] == "interrupted" && r["signal"] == name),
            "{journal:?}"
        );
        assert!(!alive(&marker), "{name}: a step process survived");
    }
}

#[test]
fn sigint_during_rollback_exits_3_and_stops_the_undo() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("ripcord-undo-{}", std::process::id());
    let file = write(
        dir.path(),
        "undo.yaml",
        &format!(
            "version: 1\nname: slow-undo\nsteps:\n\
             - {{ id: a, uses: shell.run, with: {{ argv: [\"true\"] }}, undo: {{ uses: shell.run, with: {{ script: 'sleep 60; : {marker}' }} }} }}\n\
             - {{ id: b, needs: [a], uses: shell.run, with: {{ argv: [\"false\"] }} }}\n"
        ),
    );
    let state = dir.path().join("state");
    let run = ripcord(&state, &["run", &file]);
    assert_eq!(run.code, 1);
    let child = Ripcord::new()
        .state(&state)
        .args(["rollback", &run_id(&state)])
        .spawn();
    wait_alive(&marker);
    signal(&child, libc::SIGINT);
    let out = finish(child);
    assert_eq!(out.code, 3, "{}", out.transcript());
    assert!(!alive(&marker), "the undo's process survived the interrupt");
    let journal = records(&state).unwrap();
    let end = journal
        .iter()
        .rfind(|r| r["kind"] == "rollback_finished")
        .unwrap();
    assert_eq!(end["status"], "interrupted", "{journal:?}");
}

#[test]
fn after_kill_9_no_step_process_is_alive_two_seconds_later() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("ripcord-kill9-{}", std::process::id());
    let file = write(dir.path(), "slow.yaml", &SLOW.replace("MARKER", &marker));
    let state = dir.path().join("state");
    let mut child = Ripcord::new().state(&state).args(["run", &file]).spawn();
    wait_alive(&marker);
    let supervisor: Vec<u32> = ripcord::session::procs::live()
        .into_iter()
        .filter(|p| p.cmdline.contains("ripcord __supervise") && p.ppid == child.id())
        .map(|p| p.pid)
        .collect();
    assert_eq!(supervisor.len(), 1, "one supervisor of this run");
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !alive(&marker),
        "a step process outlived ripcord by 2 s: {:?}",
        crate::support::live_processes(&marker)
    );
    assert!(
        !crate::support::live_processes("ripcord __supervise").contains(&supervisor[0]),
        "the supervisor ended too"
    );
}

/// ripcord tells the supervisor of a step's group just after spawning it: killed between the
/// two, the group would be unknown to it. The supervisor knows its session's token, so when
/// ripcord dies it also stops groups led by the session's children that it was never told of.
/// It spares a process that left with `setsid` (a daemon a step meant to start), a daemon's
/// worker in a group of its own, another session's processes (the next session of the same
/// run, started at once, or another run), and, when ripcord ends in order, anything untold.
#[test]
fn the_supervisor_stops_a_step_group_it_was_never_told_of() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let token = format!("untold-{}", std::process::id());
    let spawn = |marker: &str, session: &str, how: &str| {
        let script = format!("sleep 30; : {marker}");
        let mut c = if how == "setsid" {
            let mut c = std::process::Command::new("setsid");
            c.args(["sh", "-c", &script]);
            c
        } else {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", &script]);
            c.process_group(0);
            c
        };
        c.env("RIPCORD_SESSION", session).spawn().unwrap()
    };
    let helper = |orderly: bool, markers: &[(&str, &str, &str)]| {
        let mut helper = std::process::Command::new(env!("CARGO_BIN_EXE_ripcord"))
            .arg("__supervise")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = helper.stdin.take().unwrap();
        writeln!(pipe, "={token}").unwrap();
        let children: Vec<_> = markers
            .iter()
            .map(|(m, session, how)| spawn(m, session, how))
            .collect();
        for (m, ..) in markers {
            wait_alive(m);
        }
        if orderly {
            writeln!(pipe, ".").unwrap();
        }
        drop(pipe); // as when ripcord ends, or dies
        let _ = helper.wait();
        std::thread::sleep(Duration::from_millis(1500));
        children
    };
    let [step, daemon, other, worker] =
        ["step", "daemon", "other", "worker"].map(|w| format!("{token}-{w}"));
    let other_token = format!("{token}-next");
    let mut children = helper(
        false,
        &[
            (&step, &token, "group"),
            (&daemon, &token, "setsid"),
            (&other, &other_token, "group"),
        ],
    );
    assert!(
        !alive(&step),
        "a step group the supervisor was not told of outlived ripcord"
    );
    assert!(
        alive(&daemon),
        "a process that left with setsid is not the supervisor's to stop"
    );
    assert!(
        alive(&other),
        "another session's process is not this supervisor's to stop"
    );
    // A daemon (setsid) whose worker leads its own group: the worker's parent is the daemon.
    let worker_script = format!("sh -c 'sleep 30; : {worker}' & wait");
    let mut nested = std::process::Command::new("setsid")
        .args(["sh", "-c", &format!("set -m; {worker_script}")])
        .env("RIPCORD_SESSION", &token)
        .spawn()
        .unwrap();
    wait_alive(&worker);
    children.extend(helper(false, &[]));
    assert!(
        alive(&worker),
        "a daemon's worker in a group of its own is the daemon's"
    );
    // An orderly end stops only what is listed.
    let orderly = format!("{token}-orderly");
    children.extend(helper(true, &[(&orderly, &token, "group")]));
    assert!(
        alive(&orderly),
        "an orderly end stops only the groups still listed"
    );
    for marker in [&daemon, &other, &worker, &orderly] {
        for pid in crate::support::live_processes(marker) {
            // SAFETY: ending the test's own processes.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    for mut c in children {
        let _ = c.wait();
    }
    let _ = nested.wait();
}

/// A step's child that left its process group (`setsid`) is out of the supervisor's reach; it
/// still carries the run's id in its environment, and neither resume nor rollback decides
/// anything while it lives.
#[test]
fn resume_and_rollback_wait_for_a_step_process_that_escaped_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("ripcord-escaped-{}", std::process::id());
    let file = write(
        dir.path(),
        "escape.yaml",
        &format!(
            "version: 1\nname: escape\nsteps:\n\
             - {{ id: a, uses: shell.run, with: {{ argv: [\"true\"] }}, undo: {{ uses: shell.run, with: {{ argv: [\"true\"] }} }} }}\n\
             - {{ id: b, needs: [a], uses: shell.run, with: {{ script: 'setsid sh -c \"sleep 30; : {marker}\" & sleep 60' }} }}\n"
        ),
    );
    let state = dir.path().join("state");
    let mut child = Ripcord::new().state(&state).args(["run", &file]).spawn();
    wait_alive(&marker);
    child.kill().unwrap();
    child.wait().unwrap();
    // The supervisor ends the step's own shell (its command line names the marker too); on a
    // busy machine that may take longer than the 2 s the kill -9 test holds it to, and this test
    // is about what escaped, so it waits for the group to go.
    let deadline = Instant::now() + Duration::from_secs(20);
    let escaped = loop {
        let left = crate::support::live_processes(&marker);
        if left.len() <= 1 || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        escaped.len(),
        1,
        "the escaped process lives on, alone: {escaped:?}"
    );
    let id = run_id(&state);
    for args in [
        vec!["resume", &id, "--retry-in-doubt"],
        vec!["rollback", &id],
    ] {
        let out = ripcord(&state, &args);
        assert_eq!(out.code, 4, "{args:?}: {}", out.transcript());
        assert!(
            out.stderr.contains(&format!("pid {}", escaped[0])) && out.stderr.contains("step b"),
            "{}",
            out.stderr
        );
    }
    // SAFETY: kill(2) on the leftover's group (setsid made it lead one).
    unsafe { libc::kill(-(escaped[0] as i32), libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(200));
    let out = ripcord(&state, &["rollback", &id]);
    assert_eq!(out.code, 0, "{}", out.transcript());
}

#[test]
fn resume_and_rollback_lock_the_run_whatever_the_runbook_is_called_now() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("ripcord-lock-{}", std::process::id());
    let file = write(dir.path(), "slow.yaml", &SLOW.replace("MARKER", &marker));
    let state = dir.path().join("state");
    let mut child = Ripcord::new().state(&state).args(["run", &file]).spawn();
    wait_for_record(&state, "the step to start", |r| r["kind"] == "step_started");
    let id = run_id(&state);
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("name: slow", "name: renamed"),
    )
    .unwrap();
    let attempts: [&[&str]; 2] = [
        &["resume", &id, "--force", "--skip-in-doubt"],
        &["rollback", &id, "--force", "--reason", "x"],
    ];
    for args in attempts {
        let out = Ripcord::new().state(&state).args(args).run();
        assert_eq!(out.code, 4, "{args:?}: {}", out.transcript());
        assert!(
            out.stderr
                .contains(&format!("run {id} is held by another session")),
            "{}",
            out.stderr
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_retry_runs_only_once_its_start_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "retry.yaml",
        "version: 1\nname: retry\ninputs:\n  dir: { type: string, required: true }\nsteps:\n\
         - { id: a, uses: shell.run, retry: { attempts: 3, delay: 10ms }, with: { argv: [sh, -c, 'echo try >> \"$D/tries\"; exit 1'], env: { D: \"${{ inputs.dir }}\" } } }\n",
    );
    let input = format!("dir={}", dir.path().display());
    // Where the second attempt's start record falls in a whole run.
    let full = dir.path().join("full");
    let out = Ripcord::new()
        .state(&full)
        .args(["run", &file, "-i", &input])
        .run();
    assert_eq!(out.code, 1);
    std::fs::remove_file(dir.path().join("tries")).unwrap();
    let at = records(&full)
        .unwrap()
        .iter()
        .position(|r| r["kind"] == "step_started" && r["attempt"] == 2)
        .unwrap()
        + 1;
    // Killed right after writing it (before any acknowledgement): the retry has not run.
    for _ in 0..5 {
        let state = tempfile::tempdir().unwrap();
        let out = Ripcord::new()
            .state(state.path())
            .env("RIPCORD_TEST_CRASH_AT_RECORD", &at.to_string())
            .args(["run", &file, "-i", &input])
            .run();
        assert_eq!(out.code, -1, "{}", out.transcript());
        std::thread::sleep(Duration::from_millis(200));
        let tries = std::fs::read_to_string(dir.path().join("tries")).unwrap();
        assert_eq!(
            tries.lines().count(),
            1,
            "the retry ran before its start record"
        );
        std::fs::remove_file(dir.path().join("tries")).unwrap();
    }
}

/// An approval, then a step that leaves a trace.
fn approval_runbook(dir: &Path, with: &str) -> String {
    write(
        dir,
        "gate.yaml",
        &format!(
            "version: 1\nname: gate\ninputs:\n  dir: {{ type: string, required: true }}\nsteps:\n\
             - {{ id: gate, uses: approval.ask, timeout: 60s, with: {{ prompt: \"Fail over?\"{with} }} }}\n\
             - {{ id: after, needs: [gate], uses: shell.run, with: {{ argv: [sh, -c, 'echo after >> \"$D/log\"'], env: {{ D: \"${{{{ inputs.dir }}}}\" }} }} }}\n"
        ),
    )
}

fn approve(state: &Path, id: &str, args: &[&str], sudo_user: Option<&str>) -> Output {
    let mut r = Ripcord::new().state(state);
    r = match sudo_user {
        Some(u) => r.env("SUDO_USER", u),
        None => r.env("SUDO_USER", ""),
    };
    r.args(["approve", id, "gate"]).args(args).run()
}

fn waits(state: &Path) -> usize {
    records(state)
        .unwrap_or_default()
        .iter()
        .filter(|r| r["kind"] == "approval_waiting")
        .count()
}

fn wait_for_waits(state: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while waits(state) < n {
        assert!(Instant::now() < deadline, "no approval_waiting #{n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_approval_killed_mid_wait_is_asked_again_and_never_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let file = approval_runbook(dir.path(), "");
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    let mut child = Ripcord::new()
        .state(&state)
        .args(["run", &file, "-i", &input])
        .spawn();
    wait_for_waits(&state, 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let id = run_id(&state);
    // Nobody is waiting now: an answer is refused, and says how to go on.
    let late = approve(&state, &id, &[], None);
    assert_eq!(late.code, 4, "{}", late.transcript());
    // --skip-in-doubt does not skip an approval: it is asked again.
    let resumed = Ripcord::new()
        .state(&state)
        .args(["resume", &id, "--skip-in-doubt", "-i", &input])
        .spawn();
    wait_for_waits(&state, 2);
    assert!(!log(dir.path()).contains("after"), "nothing ran unapproved");
    let answer = approve(&state, &id, &["--comment", "checked the lag"], None);
    assert_eq!(answer.code, 0, "{}", answer.transcript());
    let out = finish(resumed);
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(log(dir.path()).contains("after"));
    let journal = records(&state).unwrap();
    let approval = journal.iter().find(|r| r["kind"] == "approval").unwrap();
    assert_eq!(approval["by"]["account"], whoami(), "{approval}");
    assert_eq!(approval["comment"], "checked the lag");
    assert_eq!(approval["via"], "with ripcord approve");
    let text = ripcord(&state, &["report", &id]);
    assert!(
        text.stdout
            .contains("with ripcord approve: \"checked the lag\""),
        "{}",
        text.stdout
    );
    assert!(
        journal.iter().any(|r| r["kind"] == "run_note"
            && r["message"]
                .as_str()
                .unwrap()
                .contains("gate was in doubt: run again")),
        "{journal:?}"
    );
}

#[test]
fn approvers_min_approvals_and_not_by_operator_are_enforced() {
    if !is_root() {
        // Two people need two identities; as root, sudo's SUDO_USER gives them.
        eprintln!("skipped: needs root to act as two sudo users");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = approval_runbook(
        dir.path(),
        ", approvers: [alice, bob, carol], min_approvals: 2, not_by_operator: true",
    );
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    // Started by carol (through sudo), with --yes: her own approval does not count.
    let child = Ripcord::new()
        .state(&state)
        .env("SUDO_USER", "carol")
        .args(["run", &file, "-i", &input, "--yes"])
        .spawn();
    wait_for_waits(&state, 1);
    let id = run_id(&state);
    let not_listed = approve(&state, &id, &[], None);
    assert_eq!(not_listed.code, 2, "{}", not_listed.transcript());
    assert!(
        not_listed.stderr.contains("not one of the approvers")
            || not_listed.stderr.contains("the approvers are"),
        "{}",
        not_listed.stderr
    );
    let operator = approve(&state, &id, &[], Some("carol"));
    assert_eq!(operator.code, 2, "{}", operator.transcript());
    assert!(
        operator.stderr.contains("not_by_operator"),
        "{}",
        operator.stderr
    );
    let alice = approve(&state, &id, &[], Some("alice"));
    assert_eq!(alice.code, 0, "{}", alice.transcript());
    let again = approve(&state, &id, &[], Some("alice"));
    assert_eq!(
        again.code,
        2,
        "one person counts once: {}",
        again.transcript()
    );
    assert!(!log(dir.path()).contains("after"), "one approval of two");
    let bob = approve(&state, &id, &[], Some("bob"));
    assert_eq!(bob.code, 0, "{}", bob.transcript());
    let out = finish(child);
    assert_eq!(out.code, 0, "{}", out.transcript());
    let journal = records(&state).unwrap();
    let people: Vec<&str> = journal
        .iter()
        .filter(|r| r["kind"] == "approval")
        .map(|r| r["by"]["sudo_user"].as_str().unwrap())
        .collect();
    assert_eq!(people, ["alice", "bob"]);
    let refused: Vec<&str> = journal
        .iter()
        .filter(|r| r["kind"] == "answer_refused")
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        refused.iter().any(|r| r.contains("not_by_operator")),
        "carol's --yes was refused: {refused:?}"
    );
}

#[test]
fn a_rejection_fails_the_approval_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = approval_runbook(dir.path(), "");
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    let child = Ripcord::new()
        .state(&state)
        .args(["run", &file, "-i", &input])
        .spawn();
    wait_for_waits(&state, 1);
    let id = run_id(&state);
    let wrong = ripcord(&state, &["approve", &id, "gat"]);
    assert_eq!(wrong.code, 2, "{}", wrong.transcript());
    assert!(
        wrong.stderr.contains("it waits for: gate"),
        "{}",
        wrong.stderr
    );
    let no = approve(
        &state,
        &id,
        &["--reject", "--comment", "lag too high"],
        None,
    );
    assert_eq!(no.code, 0, "{}", no.transcript());
    let out = finish(child);
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(!log(dir.path()).contains("after"));
    let text = ripcord(&state, &["report", &id]);
    assert!(
        text.stdout.contains("rejected by") && text.stdout.contains("lag too high"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_signal_during_an_automatic_rollback_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("ripcord-auto-undo-{}", std::process::id());
    let file = write(
        dir.path(),
        "auto.yaml",
        &format!(
            "version: 1\nname: auto\nrollback: auto\nsteps:\n\
             - {{ id: a, uses: shell.run, with: {{ argv: [\"true\"] }}, undo: {{ uses: shell.run, with: {{ script: 'sleep 60; : {marker}' }} }} }}\n\
             - {{ id: b, needs: [a], uses: shell.run, with: {{ argv: [\"false\"] }} }}\n"
        ),
    );
    let state = dir.path().join("state");
    let child = Ripcord::new().state(&state).args(["run", &file]).spawn();
    wait_alive(&marker);
    signal(&child, libc::SIGTERM);
    let out = finish(child);
    assert_eq!(out.code, 3, "{}", out.transcript());
    assert!(!alive(&marker), "the undo's process survived");
}

#[test]
fn a_session_leaves_no_output_directory_behind() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let file = write(
        dir.path(),
        "out.yaml",
        "version: 1\nname: out\nsteps:\n- { id: a, uses: shell.run, with: { argv: [sh, -c, 'echo k=v >> \"$RIPCORD_OUTPUT\"'] } }\n- { id: b, needs: [a], uses: shell.run, with: { argv: [\"false\"] } }\n",
    );
    let state = dir.path().join("state");
    let out = Ripcord::new()
        .state(&state)
        .env("TMPDIR", tmp.to_str().unwrap())
        .args(["run", &file])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    let a = records(&state)
        .unwrap()
        .into_iter()
        .find(|r| r["kind"] == "step_finished" && r["step"] == "a")
        .unwrap();
    assert_eq!(a["outputs"]["k"], "v", "the step wrote its output: {a}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// An answer file written by hand, claiming to be someone else, is taken as its writer's.
#[test]
fn a_forged_answer_counts_as_its_writer_not_as_who_it_claims() {
    let dir = tempfile::tempdir().unwrap();
    let file = approval_runbook(dir.path(), ", approvers: [alice]");
    let input = format!("dir={}", dir.path().display());
    let state = dir.path().join("state");
    let mut child = Ripcord::new()
        .state(&state)
        .env("SUDO_USER", "")
        .args(["run", &file, "-i", &input])
        .spawn();
    wait_for_waits(&state, 1);
    let id = run_id(&state);
    let wait = records(&state)
        .unwrap()
        .into_iter()
        .find(|r| r["kind"] == "approval_waiting")
        .unwrap();
    let answers = state.join("runs").join(&id).join("answers");
    std::fs::create_dir_all(&answers).unwrap();
    let forged = serde_json::json!({
        "step": "gate",
        "ask": wait["ask"],
        "approve": true,
        "by": { "account": "alice", "uid": 1234, "host": "bastion-9" },
        "at": "2026-11-25T00:00:00Z",
    });
    std::fs::write(answers.join("0-forged.json"), forged.to_string()).unwrap();
    let refused = wait_for_record(&state, "the forged answer to be judged", |r| {
        r["kind"] == "answer_refused" || r["kind"] == "approval"
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(refused["kind"], "answer_refused", "{refused}");
    assert_eq!(refused["by"]["account"], whoami(), "{refused}");
    assert!(!log(dir.path()).contains("after"));
}

/// `locks:` scopes are shared across runbooks: while one run holds `service:orders`, a run of
/// another runbook that names it is refused (exit 4, naming the holder); a runbook with another
/// scope runs; resume takes the recorded scopes again; a bad scope name is refused at validate.
#[test]
fn locks_scopes_exclude_runs_of_other_runbooks() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let gate = dir.path().join("gate");
    let runbook = |name: &str, scope: &str, wait: bool| {
        let step = if wait {
            format!(
                "  - {{ id: hold, uses: shell.run, idempotent: true, with: {{ argv: [sh, -c, 'while [ ! -e {} ]; do sleep 0.05; done'] }} }}\n",
                gate.display()
            )
        } else {
            "  - { id: quick, uses: shell.run, with: { argv: ['true'] } }\n".to_string()
        };
        write(
            dir.path(),
            &format!("{name}.yaml"),
            &format!("version: 1\nname: {name}\nlocks: [\"{scope}\", \"site:a\"]\nsteps:\n{step}"),
        )
    };
    let holder_file = runbook("switchover", "service:orders", true);
    let holder = Ripcord::new()
        .state(&state)
        .args(["run", &holder_file])
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        if let Some(id) = records(&state)
            .as_ref()
            .and_then(|r| r.first())
            .and_then(|r| r["run_id"].as_str())
        {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "the holder never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    // It shares only the holder's second scope: every scope is held, not the first alone.
    let other = runbook("maintenance", "service:other", false);
    let out = Ripcord::new().state(&state).args(["run", &other]).run();
    assert_eq!(out.code, 4, "{}", out.transcript());
    assert!(
        out.stderr.contains("scope `site:a` is locked by run") && out.stderr.contains(&id),
        "{}",
        out.stderr
    );
    // A pre-flight or a rehearsal holds no scope, and is not refused by one.
    for how in ["--check", "--dry-run"] {
        let out = Ripcord::new()
            .state(&state)
            .args(["run", how, &other])
            .run();
        assert_eq!(out.code, 0, "{how}: {}", out.transcript());
    }
    let free = write(
        dir.path(),
        "unrelated.yaml",
        "version: 1\nname: unrelated\nlocks: [\"service:billing\"]\nsteps:\n  - { id: quick, uses: shell.run, with: { argv: ['true'] } }\n",
    );
    let out = Ripcord::new().state(&state).args(["run", &free]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    // The holder dies; its resume holds the recorded scopes again.
    let mut holder = holder;
    holder.kill().unwrap();
    holder.wait().unwrap();
    let resumed = Ripcord::new().state(&state).args(["resume", &id]).spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    // This run's journal (other runs share the state directory).
    let journal = state.join("runs").join(&id).join("journal.jsonl");
    while !std::fs::read_to_string(&journal)
        .unwrap_or_default()
        .contains("\"kind\":\"resumed\"")
    {
        assert!(Instant::now() < deadline, "the resume never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Ripcord::new().state(&state).args(["run", &other]).run();
    assert_eq!(out.code, 4, "{}", out.transcript());
    assert!(out.stderr.contains("scope `site:a`"), "{}", out.stderr);
    std::fs::write(&gate, "").unwrap();
    let done = resumed.wait_with_output().unwrap();
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let out = Ripcord::new().state(&state).args(["run", &other]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());

    let bad = write(
        dir.path(),
        "bad.yaml",
        "version: 1\nname: bad\nlocks: [\"service orders\"]\nsteps:\n  - { id: quick, uses: shell.run, with: { argv: ['true'] } }\n",
    );
    let out = Ripcord::new().args(["validate", &bad]).run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(
        out.stderr.contains("invalid lock scope `service orders`")
            && out.stderr.contains("bad.yaml:3:"),
        "{}",
        out.stderr
    );
}
