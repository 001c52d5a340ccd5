//! Shared state in a real PostgreSQL server on loopback (`--state postgres://…`): processes in
//! different working directories, as on different machines, see, lock, approve, resume and take
//! over the same runs; leases fence a holder that lost its own.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::cluster::StateServer;
use crate::support::{Output, Ripcord, write};

/// ripcord on the shared database, from `cwd` (its own working directory: another "machine").
fn on(server: &StateServer, cwd: &Path) -> Ripcord {
    Ripcord::new()
        .current_dir(cwd)
        .env("RIPCORD_STATE", &server.url())
}

/// The copy of a run's shared journal that the machine working in `cwd` keeps (for
/// break-glass).
fn local_copy(cwd: &Path, run_id: &str) -> std::path::PathBuf {
    cwd.join(".ripcord/copies")
        .join(run_id)
        .join("journal.jsonl")
}

/// The records of a run as the database holds them: (record JSON, epoch of its writer).
fn journal(server: &StateServer, run_id: &str) -> Vec<(serde_json::Value, i64)> {
    let text = server.try_sql(&format!(
        "SELECT epoch || ' ' || line FROM ripcord_records WHERE run_id = '{run_id}' ORDER BY seq"
    ));
    text.lines()
        .map(|l| {
            let (epoch, line) = l.split_once(' ').unwrap();
            let json = line.rsplit_once('\t').unwrap().0;
            (serde_json::from_str(json).unwrap(), epoch.parse().unwrap())
        })
        .collect()
}

fn kinds(server: &StateServer, run_id: &str, kind: &str, step: &str) -> usize {
    journal(server, run_id)
        .iter()
        .filter(|(r, _)| r["kind"] == kind && r["step"] == step)
        .count()
}

/// The id of the newest run of `runbook`, once it has one.
/// A run of `file` (runbook `runbook`) started from `cwd` with `--lease-ttl ttl`, once its
/// step `step` has started: the holder process and the run's id.
fn hold(
    server: &StateServer,
    cwd: &Path,
    file: &str,
    ttl: &str,
    runbook: &str,
    step: &str,
) -> (std::process::Child, String) {
    let holder = on(server, cwd)
        .args(["run", file, "--lease-ttl", ttl])
        .spawn();
    let id = wait_run(server, runbook);
    wait_until(&format!("step {step} to start"), || {
        kinds(server, &id, "step_started", step) == 1
    });
    (holder, id)
}

fn wait_run(server: &StateServer, runbook: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let id = server.try_sql(&format!(
            "SELECT r.run_id FROM ripcord_runs r JOIN ripcord_records x USING (run_id) \
             WHERE x.seq = 0 AND x.line LIKE '%\"runbook\":\"{runbook}\"%' \
             ORDER BY r.created_at DESC LIMIT 1"
        ));
        if !id.is_empty() {
            return id;
        }
        assert!(Instant::now() < deadline, "no run of {runbook} started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finish(child: Child) -> Output {
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on a child we started and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Steps `one`..`n` that each append their name to `log` and wait for `gate-NAME` (when
/// `gated`), in a chain.
fn chain(dir: &Path, name: &str, locks: &str, steps: &[&str], gated: bool) -> String {
    chain_of(dir, name, locks, steps, gated, true)
}

/// [`chain`], with steps `idempotent` or not (each start of a step that is not must be durable
/// before it begins: the database's commit).
fn chain_of(
    dir: &Path,
    name: &str,
    locks: &str,
    steps: &[&str],
    gated: bool,
    idempotent: bool,
) -> String {
    let mut text = format!("version: 1\nname: {name}\nlocks: [{locks}]\nsteps:\n");
    let mut before: Option<&str> = None;
    for s in steps {
        let wait = if gated {
            format!(
                "while [ ! -e '{}/gate-{s}' ]; do sleep 0.05; done; ",
                dir.display()
            )
        } else {
            String::new()
        };
        let needs = before.map_or(String::new(), |b| format!(", needs: [{b}]"));
        text.push_str(&format!(
            "  - {{ id: {s}{needs}, uses: shell.run, idempotent: {idempotent}, with: {{ argv: [sh, -c, \"{wait}echo {s} >> '{}/log'\"] }} }}\n",
            dir.display()
        ));
        before = Some(s);
    }
    write(dir, &format!("{name}.yaml"), &text)
}

fn log(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn open_gate(dir: &Path, step: &str) {
    std::fs::write(dir.join(format!("gate-{step}")), "").unwrap();
}

#[test]
fn two_machines_share_locks_scopes_runs_and_approvals() {
    let server = StateServer::start();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let work = tempfile::tempdir().unwrap();
    let held = chain(
        work.path(),
        "switchover",
        "\"service:orders\"",
        &["one", "two"],
        true,
    );
    let holder = on(&server, a.path()).args(["run", &held]).spawn();
    let id = wait_run(&server, "switchover");
    wait_until("step one to start", || {
        kinds(&server, &id, "step_started", "one") == 1
    });

    // Machine B: the same runbook is refused, naming the holder and its host and pid.
    let out = on(&server, b.path()).args(["run", &held]).run();
    assert_eq!(out.code, 4, "{}", out.transcript());
    assert!(
        out.stderr.contains("runbook `switchover` is locked by run")
            && out.stderr.contains(&id)
            && out.stderr.contains(&format!("pid {}", holder.id()))
            && out.stderr.contains("its lease (epoch 1) was renewed"),
        "{}",
        out.stderr
    );
    // Another runbook sharing a scope is refused; one that shares none runs.
    let other = work.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let sharing = chain(&other, "maintenance", "\"service:orders\"", &["x"], false);
    let out = on(&server, b.path()).args(["run", &sharing]).run();
    assert_eq!(out.code, 4, "{}", out.transcript());
    assert!(
        out.stderr
            .contains("scope `service:orders` is locked by run"),
        "{}",
        out.stderr
    );
    let free = chain(&other, "unrelated", "\"service:billing\"", &["y"], false);
    let out = on(&server, b.path()).args(["run", &free]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());

    // B lists A's run, live, and reports it.
    let out = on(&server, b.path()).args(["runs", "--json"]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{rows}"));
    assert_eq!(row["status"], "running", "{row}");
    open_gate(work.path(), "one");
    open_gate(work.path(), "two");
    let out = finish(holder);
    assert_eq!(out.code, 0, "{}", out.transcript());
    let out = on(&server, b.path())
        .args(["report", &id, "--format", "json"])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["status"], "succeeded", "{report}");
    // No run is in a local directory of either machine: each keeps only its copies of the
    // journals it wrote (for break-glass).
    assert!(!a.path().join(".ripcord/runs").exists() && !b.path().join(".ripcord/runs").exists());
    assert!(local_copy(a.path(), &id).exists());

    // An approval given from B lets A's run go on.
    let gate = write(
        work.path(),
        "gate.yaml",
        &format!(
            "version: 1\nname: gate\nsteps:\n\
             - {{ id: gate, uses: approval.ask, timeout: 60s, with: {{ prompt: \"Fail over?\" }} }}\n\
             - {{ id: after, needs: [gate], uses: shell.run, with: {{ argv: [sh, -c, \"echo after >> '{}/log'\"] }} }}\n",
            work.path().display()
        ),
    );
    let waiting = on(&server, a.path()).args(["run", &gate]).spawn();
    let id = wait_run(&server, "gate");
    wait_until("the approval to wait", || {
        kinds(&server, &id, "approval_waiting", "gate") == 1
    });
    assert!(!log(work.path()).contains(&"after".to_string()));
    let out = on(&server, b.path())
        .args(["approve", &id, "gate", "--comment", "from B"])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let out = finish(waiting);
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(log(work.path()).contains(&"after".to_string()));
    let approval = journal(&server, &id)
        .into_iter()
        .find(|(r, _)| r["kind"] == "approval")
        .unwrap()
        .0;
    assert_eq!(approval["comment"], "from B", "{approval}");
    assert_eq!(approval["by"]["db_role"], "postgres", "{approval}");

    // A run that failed on A is rolled back from B.
    let w = work.path().display();
    let failing = write(
        work.path(),
        "drain.yaml",
        &format!(
            "version: 1\nname: drain\nsteps:\n\
             - {{ id: drain, uses: shell.run, with: {{ argv: [sh, -c, \"echo drained >> '{w}/log'\"] }}, \
                  undo: {{ uses: shell.run, with: {{ argv: [sh, -c, \"echo undrained >> '{w}/log'\"] }} }} }}\n\
             - {{ id: check, needs: [drain], uses: shell.run, with: {{ argv: ['false'] }} }}\n"
        ),
    );
    let out = on(&server, a.path()).args(["run", &failing]).run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    let id = wait_run(&server, "drain");
    let out = on(&server, b.path()).args(["rollback", &id]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(log(work.path()).contains(&"undrained".to_string()));
    assert_eq!(kinds(&server, &id, "undo_finished", "drain"), 1);
}

#[test]
fn a_killed_holder_is_taken_over_only_after_its_lease_expires() {
    let server = StateServer::start();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let work = tempfile::tempdir().unwrap();
    let file = chain_of(
        work.path(),
        "promote",
        "",
        &["one", "two", "three"],
        true,
        false,
    );
    open_gate(work.path(), "one");
    let (mut holder, id) = hold(&server, a.path(), &file, "4s", "promote", "two");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let killed_at = Instant::now();
    // Its supervisor stops step two's process (which would otherwise see the gate).
    wait_until("step two's process to be stopped", || {
        !crate::support::alive(&format!("{}/gate-two", work.path().display()))
    });
    open_gate(work.path(), "two");
    open_gate(work.path(), "three");

    // A plain resume is refused: the lease is unexpired and unreleased.
    let out = on(&server, b.path()).args(["resume", &id]).run();
    assert_eq!(out.code, 4, "{}", out.transcript());
    assert!(
        out.stderr
            .contains(&format!("run {id} is held by another session"))
            && out.stderr.contains("--takeover"),
        "{}",
        out.stderr
    );
    // --takeover before expiry: refused, naming holder, host, pid and the lease's age.
    let out = on(&server, b.path())
        .args(["resume", &id, "--takeover"])
        .run();
    assert!(
        killed_at.elapsed() < Duration::from_secs(3),
        "too slow to test before expiry"
    );
    assert_eq!(out.code, 4, "{}", out.transcript());
    let host = crate::support::hostname();
    assert!(
        out.stderr.contains(&format!("pid {}", holder.id()))
            && out.stderr.contains(&host)
            && out.stderr.contains("was renewed")
            && out.stderr.contains("try again in"),
        "{}",
        out.stderr
    );
    // After expiry: taken over (epoch 2). Step two is not idempotent and in doubt: the
    // takeover stops there and asks (no terminal: exit 2)...
    std::thread::sleep(Duration::from_secs(4).saturating_sub(killed_at.elapsed()));
    let out = on(&server, b.path())
        .args(["resume", &id, "--takeover"])
        .run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(out.stderr.contains("--retry-in-doubt"), "{}", out.stderr);
    // ... and the operator decides; the takeover is recorded all the same, by the session that
    // journals first; what completed is not run again.
    let out = on(&server, b.path())
        .args(["resume", &id, "--retry-in-doubt"])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert_eq!(log(work.path()), ["one", "two", "three"]);
    let records = journal(&server, &id);
    let note = records
        .iter()
        .find(|(r, _)| {
            r["kind"] == "run_note" && r["message"].as_str().unwrap().starts_with("taken over by ")
        })
        .unwrap_or_else(|| panic!("{records:?}"));
    let text = note.0["message"].as_str().unwrap();
    assert!(
        text.contains(&format!("run:{id}")) && text.contains(&format!("pid {}", holder.id())),
        "{text}"
    );
    assert_eq!(kinds(&server, &id, "step_started", "one"), 1);
    assert_eq!(
        records.last().unwrap().0["kind"],
        "run_finished",
        "{records:?}"
    );
}

#[test]
fn a_paused_holder_that_lost_its_lease_starts_and_records_nothing() {
    let server = StateServer::start();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let work = tempfile::tempdir().unwrap();
    let file = chain(
        work.path(),
        "drain",
        "\"site:a\"",
        &["one", "two", "three"],
        true,
    );
    open_gate(work.path(), "one");
    let (holder, id) = hold(&server, a.path(), &file, "2s", "drain", "two");
    signal(&holder, libc::SIGSTOP);
    let stopped = Instant::now();
    // Frozen, it cannot stop its own step: its supervisor does, when the lease is about to
    // lapse (4/5 of 2 s after the last renewal), before anyone can take the run over.
    wait_until("the frozen holder's step to be stopped", || {
        !crate::support::alive(&format!("{}/gate-two", work.path().display()))
    });
    assert!(
        stopped.elapsed() < Duration::from_millis(2000),
        "stopped only after {:?}",
        stopped.elapsed()
    );
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(stopped.elapsed()));
    // B takes over and finishes the run.
    open_gate(work.path(), "two");
    open_gate(work.path(), "three");
    let out = on(&server, b.path())
        .args(["resume", &id, "--takeover"])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let after_takeover = journal(&server, &id).len();
    signal(&holder, libc::SIGCONT);
    let out = finish(holder);
    assert_ne!(out.code, 0, "{}", out.transcript());
    assert!(out.stderr.contains("lease"), "{}", out.stderr);
    // The old holder wrote nothing after the takeover, and ran three only through B.
    let records = journal(&server, &id);
    assert_eq!(records.len(), after_takeover, "{records:?}");
    // Two ran once (B's, after A's was stopped before its gate opened), three once.
    assert_eq!(log(work.path()), ["one", "two", "three"]);
    let takeover = records
        .iter()
        .position(|(r, _)| {
            r["kind"] == "run_note" && r["message"].as_str().unwrap().contains("taken over")
        })
        .unwrap();
    assert!(
        records[takeover..].iter().all(|(_, e)| *e == 2),
        "{records:?}"
    );
}

#[test]
fn twenty_processes_race_for_one_lease_and_one_wins() {
    let server = StateServer::start();
    let work = tempfile::tempdir().unwrap();
    let file = chain_of(
        work.path(),
        "race",
        "\"service:orders\"",
        &["only"],
        true,
        false,
    );
    // Twenty on an empty database: the schema is created once, one run holds the runbook.
    let mut children: Vec<Child> = (0..20)
        .map(|_| {
            let cwd = tempfile::tempdir().unwrap().keep();
            on(&server, &cwd).args(["run", &file]).spawn()
        })
        .collect();
    // The winner holds the lease (its step waits for the gate) until every other has tried.
    wait_until("nineteen to give up", || {
        let mut ended = 0;
        for c in children.iter_mut() {
            if c.try_wait().unwrap().is_some() {
                ended += 1;
            }
        }
        ended == 19
    });
    assert!(log(work.path()).is_empty());
    open_gate(work.path(), "only");
    let outs: Vec<Output> = children.into_iter().map(finish).collect();
    let won: Vec<&Output> = outs.iter().filter(|o| o.code == 0).collect();
    let refused = outs.iter().filter(|o| o.code == 4).count();
    assert_eq!(
        won.len(),
        1,
        "{:?}",
        outs.iter().map(|o| o.transcript()).collect::<Vec<_>>()
    );
    assert_eq!(refused, 19);
    assert_eq!(log(work.path()), ["only"]);
    // Every migration applied once, whoever won the race to make the schema.
    assert_eq!(
        server.sql("SELECT string_agg(version::text, ',' ORDER BY version) FROM ripcord_schema"),
        "1,2"
    );
    assert_eq!(
        server.sql("SELECT count(*) FROM ripcord_runs"),
        "1",
        "the refused left no runs behind: {}",
        server.sql("SELECT run_id, journaled FROM ripcord_runs")
    );
}

#[test]
fn a_state_server_restart_mid_run_loses_nothing() {
    let server = StateServer::start();
    let a = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let steps = ["s1", "s2", "s3", "s4", "s5", "s6"];
    // Not idempotent: each start is a commit the step waits for, across the restart too.
    let file = chain_of(work.path(), "restart", "", &steps, true, false);
    open_gate(work.path(), "s1");
    open_gate(work.path(), "s2");
    let holder = on(&server, a.path()).args(["run", &file]).spawn();
    let id = wait_run(&server, "restart");
    wait_until("s3 to start", || {
        kinds(&server, &id, "step_started", "s3") == 1
    });
    assert!(
        server.pg_ctl(&["-w", "-m", "fast", "restart"]),
        "pg_ctl restart"
    );
    for s in &steps[2..] {
        open_gate(work.path(), s);
    }
    let out = finish(holder);
    let records = journal(&server, &id);
    // It carried on: every step ran once and every record is there, in order.
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert_eq!(log(work.path()), steps);
    for s in steps {
        assert_eq!(kinds(&server, &id, "step_started", s), 1, "{records:?}");
        assert_eq!(kinds(&server, &id, "step_finished", s), 1, "{records:?}");
    }
    assert_eq!(records.last().unwrap().0["status"], "succeeded");
}

#[test]
fn with_the_state_database_lost_break_glass_finishes_on_this_machines_copy() {
    let server = StateServer::start();
    let a = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = chain(work.path(), "cutover", "", &["one", "two", "three"], true);
    open_gate(work.path(), "one");
    let (holder, id) = hold(&server, a.path(), &file, "3s", "cutover", "two");
    // The state database is lost with the site, mid-step: the holder cannot renew its lease,
    // stops its running step before the lease could lapse, says so, and exits 4.
    assert!(server.pg_ctl(&["-m", "immediate", "stop"]));
    let out = finish(holder);
    assert_eq!(out.code, 4, "{}", out.transcript());
    assert!(
        out.stderr
            .contains("stopped while running (their processes are killed): two"),
        "{}",
        out.stderr
    );
    assert!(!crate::support::alive(&format!(
        "{}/gate-two",
        work.path().display()
    )));
    // Two was stopped with the run, not failed: no failure of it anywhere.
    let copy = std::fs::read_to_string(local_copy(a.path(), &id)).unwrap();
    assert!(!copy.contains("attempt_failed"), "{copy}");
    open_gate(work.path(), "two");
    open_gate(work.path(), "three");
    let local = a.path().join(".ripcord");
    // Without the flag, the local directory has no such run, and says what it does have.
    let out = Ripcord::new()
        .current_dir(a.path())
        .args(["resume", &id])
        .run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(
        out.stderr.contains("--break-glass REASON"),
        "{}",
        out.stderr
    );
    // The database cannot be the break-glass target, and a reason is required.
    let out = on(&server, a.path())
        .args([
            "resume",
            &id,
            "--state",
            &server.url(),
            "--break-glass",
            "lost",
        ])
        .run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    let out = Ripcord::new()
        .current_dir(a.path())
        .args(["resume", &id, "--break-glass", " "])
        .run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    // An import that fails leaves no mark behind (it would refuse the shared run for nothing).
    let run_dir = local.join("runs").join(&id);
    std::fs::create_dir_all(&run_dir).unwrap();
    std::os::unix::fs::symlink("/nonexistent", run_dir.join("journal.jsonl")).unwrap();
    let out = on(&server, a.path())
        .args(["resume", &id, "--break-glass", "state DB lost with site A"])
        .run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(out.stderr.contains("cannot import"), "{}", out.stderr);
    let mark = crate::support::state_home()
        .join("ripcord/break-glass")
        .join(&id);
    assert!(!mark.exists(), "{}", mark.display());
    std::fs::remove_file(run_dir.join("journal.jsonl")).unwrap();
    // An import that a crash cut short left the run's directory and a part of the journal
    // under another name: the import starts over.
    std::fs::create_dir_all(local.join("runs").join(&id)).unwrap();
    std::fs::write(
        local.join("runs").join(&id).join("journal.jsonl.import-1"),
        "{\"kind\":\"run_st",
    )
    .unwrap();
    // $RIPCORD_STATE still names the lost database: break-glass uses the local directory.
    let out = on(&server, a.path())
        .args(["resume", &id, "--break-glass", "state DB lost with site A"])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(out.stderr.contains("BREAK GLASS"), "{}", out.stderr);
    assert!(mark.exists(), "{}", mark.display());
    assert_eq!(log(work.path()), ["one", "two", "three"]);
    let records = crate::support::records(&local).unwrap();
    let note = records
        .iter()
        .find(|r| {
            r["kind"] == "run_note" && r["message"].as_str().unwrap().starts_with("break-glass by")
        })
        .unwrap_or_else(|| panic!("{records:?}"));
    assert!(
        note["message"]
            .as_str()
            .unwrap()
            .contains("reason: state DB lost with site A"),
        "{note}"
    );
    assert_eq!(records.last().unwrap()["kind"], "run_finished");
    let out = Ripcord::new()
        .current_dir(a.path())
        .args(["runs", "--json"])
        .run();
    assert!(out.stdout.contains(&id), "{}", out.transcript());
    // The database comes back: the shared run is superseded. From this machine, neither a
    // resume nor a rollback acts on it there (a takeover would run two and three again).
    assert!(server.pg_ctl(&["-w", "-t", "60", "start"]));
    // Past the lease, so that only the break-glass stands in the takeover's way.
    wait_until("the run's lease to lapse", || {
        server.sql(&format!(
            "SELECT count(*) FROM ripcord_leases WHERE scope = 'run:{id}' \
             AND renewed_at + ttl_ms * interval '1 ms' < now()"
        )) == "1"
    });
    // From this directory, and from another one (the mark break-glass left for this account).
    for (verb, cwd) in [
        ("resume", a.path()),
        ("rollback", a.path()),
        ("resume", work.path()),
    ] {
        let out = on(&server, cwd).args([verb, &id, "--takeover"]).run();
        assert_eq!(out.code, 2, "{verb}: {}", out.transcript());
        assert!(
            out.stderr.contains("superseded") && out.stderr.contains("reason: state DB lost"),
            "{verb}: {}",
            out.stderr
        );
    }
    assert_eq!(log(work.path()), ["one", "two", "three"]);
    assert_eq!(kinds(&server, &id, "step_started", "three"), 0);
}

/// The state database over TLS, as libpq's `sslmode` and `sslrootcert` say: verified against
/// the right CA it works; another CA's certificate, or no encryption, is refused before
/// anything is recorded.
#[test]
fn the_state_database_is_reached_over_verified_tls() {
    let server = StateServer::start();
    let sql = |statement: &str| server.query(statement);
    let (ca, other) = crate::real_plugins::serve_tls_on(server.dir.path(), &server.data(), &sql);
    let work = tempfile::tempdir().unwrap();
    let file = chain(work.path(), "tls", "", &["one"], false);
    let url = |query: &str| {
        format!(
            "postgres://postgres@localhost:{}/postgres?{query}",
            server.port
        )
    };
    let good = url(&format!("sslmode=verify-full&sslrootcert={ca}"));
    let out = Ripcord::new()
        .current_dir(work.path())
        .args(["run", &file, "--state", &good])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let id = server.sql("SELECT run_id FROM ripcord_runs WHERE journaled");
    assert_eq!(kinds(&server, &id, "step_finished", "one"), 1);
    for bad in [
        url(&format!("sslmode=verify-full&sslrootcert={other}")),
        url("sslmode=disable"),
    ] {
        let out = Ripcord::new()
            .current_dir(work.path())
            .args(["runs", "--state", &bad])
            .run();
        assert_eq!(out.code, 2, "{bad}: {}", out.transcript());
        assert!(out.stderr.contains("state database"), "{}", out.stderr);
    }
}

/// The epoch check on its own: another session takes the run's lease (its epoch grows) while
/// the holder's renewals are not yet due; the holder's next write — the durable start of its
/// next step — is refused by the database, so that step never begins, and the holder exits 4.
#[test]
fn a_write_under_an_old_epoch_is_refused_and_its_step_never_begins() {
    let server = StateServer::start();
    let a = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = chain_of(work.path(), "fence", "", &["one", "two"], true, false);
    let (holder, id) = hold(&server, a.path(), &file, "60s", "fence", "one");
    server.sql(&format!(
        "UPDATE ripcord_leases SET epoch = epoch + 1, pid = 1, run_id = '{id}' WHERE scope = 'run:{id}'"
    ));
    open_gate(work.path(), "one");
    open_gate(work.path(), "two");
    let out = finish(holder);
    assert_eq!(out.code, 4, "{}", out.transcript());
    assert!(
        out.stderr
            .contains(&format!("run:{id} was taken over by run {id} (pid 1")),
        "{}",
        out.stderr
    );
    assert_eq!(log(work.path()), ["one"], "two never began");
    // Nothing after the take was recorded in the database; this machine's copy says what
    // happened.
    let records = journal(&server, &id);
    assert!(
        records.iter().all(|(r, _)| r["step"] != "two"),
        "{records:?}"
    );
    let copy = std::fs::read_to_string(local_copy(a.path(), &id)).unwrap();
    let started_two = copy.lines().any(|line| {
        let json: serde_json::Value =
            serde_json::from_str(line.rsplit_once('\t').unwrap().0).unwrap();
        json["kind"] == "step_started" && json["step"] == "two"
    });
    assert!(started_two, "{copy}");
}

/// A state that looks like a URL but is not a PostgreSQL one is refused (exit 2), never taken
/// for a directory: that would record the run on this machine alone, holding no shared lock.
#[test]
fn a_mistyped_state_url_is_refused_not_taken_for_a_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = chain(work.path(), "typo", "", &["one"], false);
    let mistyped = [
        "postgress://u@127.0.0.1:1/db",
        "Postgres://u@127.0.0.1:1/db",
        "postgres:/u@127.0.0.1:1/db",
        " postgres://u@127.0.0.1:1/db",
    ];
    let mut tries: Vec<(&str, &str)> = Vec::new();
    for url in mistyped {
        tries.push(("--state", url));
        tries.push(("RIPCORD_STATE", url));
    }
    // A directory flag or variable given a URL, even a right one.
    for url in [
        "postgres://u@127.0.0.1:1/db",
        "postgress://u@127.0.0.1:1/db",
    ] {
        tries.push(("--state-dir", url));
        tries.push(("RIPCORD_STATE_DIR", url));
    }
    for (how, url) in tries {
        let r = Ripcord::new()
            .current_dir(cwd.path())
            .args(["run", "--dry-run", &file]);
        let r = if how.starts_with("--") {
            r.args([how, url])
        } else {
            r.env(how, url)
        };
        let out = r.run();
        assert_eq!(out.code, 2, "{how} {url:?}: {}", out.transcript());
    }
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "nothing was created"
    );
}

/// A renewal held up past the lease's end (here: the lease rows locked by another transaction)
/// makes the supervisor stop the running step; the run stops with exit 4 and takes the step's
/// death for what it is — never for a failure that starts an automatic rollback.
#[test]
fn a_step_stopped_at_the_leases_end_is_not_taken_for_a_failure() {
    let server = StateServer::start();
    let a = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display();
    let file = write(
        work.path(),
        "stall.yaml",
        &format!(
            "version: 1\nname: stall\nrollback: auto\nsteps:\n\
             - {{ id: fence_old, uses: shell.run, with: {{ argv: [sh, -c, \"echo fenced >> '{w}/log'\"] }}, \
                  undo: {{ uses: shell.run, with: {{ argv: [sh, -c, \"echo unfenced >> '{w}/log'\"] }} }} }}\n\
             - {{ id: promote, needs: [fence_old], uses: shell.run, with: {{ argv: [sh, -c, \"while [ ! -e '{w}/gate-promote' ]; do sleep 0.05; done; echo promoted >> '{w}/log'\"] }} }}\n"
        ),
    );
    let (holder, id) = hold(&server, a.path(), &file, "3s", "stall", "promote");
    // Renewals wait for the rows for 2.5 s: more than the 1.5 s the supervisor allows at 3 s.
    let mut locker = crate::cluster::psql(
        &server.bin,
        server.port,
        &format!(
            "BEGIN; SELECT 1 FROM ripcord_leases WHERE run_id = '{id}' FOR UPDATE; \
             SELECT pg_sleep(2.5); COMMIT;"
        ),
    )
    .spawn()
    .unwrap();
    let out = finish(holder);
    let _ = locker.wait();
    assert_eq!(out.code, 4, "{}", out.transcript());
    assert!(
        out.stderr
            .contains("stopped while running (their processes are killed): promote"),
        "{}",
        out.stderr
    );
    assert_eq!(
        log(work.path()),
        ["fenced"],
        "not promoted, not rolled back"
    );
    let records = journal(&server, &id);
    assert!(
        records
            .iter()
            .all(|(r, _)| r["kind"] != "attempt_failed" && r["kind"] != "rollback_started"),
        "{records:?}"
    );
}
