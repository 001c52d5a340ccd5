//! runbooks/postgres-dr.yaml in all its modes against a real primary + streaming standby behind
//! HAProxy, with steps on the servers' hosts over a real sshd that logs in as the servers' own
//! account (pg_ctl, pg_controldata, pg_rewind, pg_basebackup run for real).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::Value;

use crate::cluster::{Cluster, PG_USER};
use crate::failover::{Checker, Writer, wait_until};
use crate::sshd::Sshd;
use crate::support::{Output, Ripcord, repo, step};

const RUNBOOK: &str = "runbooks/postgres-dr.yaml";

/// A cluster, an sshd that logs in as its servers' account, and the input file naming them.
pub(crate) struct Lab {
    pub(crate) c: Cluster,
    // Kept for its Drop (the server stops with the test).
    _s: Sshd,
    pub(crate) inputs: PathBuf,
}

impl Lab {
    pub(crate) fn start() -> Lab {
        let c = Cluster::start();
        let s = Sshd::start_as(PG_USER);
        let inputs = c.dr_inputs((s.port, &s.user, &s.identity, &s.known_hosts));
        c.sql(c.primary, "CREATE TABLE writes (n int PRIMARY KEY)");
        c.wait_for(
            || c.sql(c.proxy, "SELECT 1") == "1",
            "HAProxy to route to the primary",
        );
        Lab { c, _s: s, inputs }
    }

    /// `ripcord ARGS... --input-file LAB [-i EXTRA]... RUNBOOK` (the file and runbook for `run`).
    pub(crate) fn ripcord(&self, args: &[&str], extra: &[&str]) -> Output {
        self.command(args, extra).run()
    }

    pub(crate) fn command(&self, args: &[&str], extra: &[&str]) -> Ripcord {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if matches!(args.first(), Some(&"run")) {
            all.extend(["--input-file".into(), self.inputs.display().to_string()]);
            for e in extra {
                all.extend(["-i".to_string(), e.to_string()]);
            }
            all.push(repo().join(RUNBOOK).display().to_string());
        }
        Ripcord::new()
            .state(&self.c.dir.path().join("state"))
            .args(all)
    }

    /// A copy of the input file with `from` replaced by `to` (which must change it).
    pub(crate) fn variant(&self, name: &str, from: &str, to: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.inputs).unwrap();
        assert!(text.contains(from), "{from} is not in the input file");
        let path = self.c.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        path
    }

    /// `ripcord ARGS... --input-file FILE RUNBOOK`.
    pub(crate) fn ripcord_with(&self, file: &std::path::Path, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(["--input-file".into(), file.display().to_string()]);
        all.push(repo().join(RUNBOOK).display().to_string());
        Ripcord::new()
            .state(&self.c.dir.path().join("state"))
            .args(all)
            .run()
    }

    /// The journal of the first run recorded (as JSON records).
    pub(crate) fn journal(&self) -> Vec<Value> {
        crate::support::records(&self.c.dir.path().join("state")).unwrap_or_default()
    }

    /// The servers' logs, for a failure's message.
    pub(crate) fn logs(&self) -> String {
        ["primary", "standby", "clone/server"]
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(self.c.dir.path().join(format!("{n}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {n}.log\n{}\n",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect()
    }

    pub(crate) fn in_recovery(&self, port: u16) -> String {
        self.c.sql(port, "SELECT pg_is_in_recovery()")
    }

    /// Whether the server on `port` streams from the one on `upstream`.
    pub(crate) fn streams_from(&self, port: u16, upstream: u16) -> bool {
        self.c
            .sql(
                port,
                "SELECT status || ' ' || conninfo FROM pg_stat_wal_receiver",
            )
            .starts_with("streaming")
            && self
                .c
                .sql(port, "SELECT conninfo FROM pg_stat_wal_receiver")
                .contains(&format!("port={upstream}"))
    }

    pub(crate) fn rows(&self, port: u16) -> HashSet<u32> {
        self.c
            .sql(port, "SELECT n FROM writes")
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }

    /// HAProxy's view of the backend: each server's name, operational and admin state.
    fn haproxy(&self) -> Vec<String> {
        let mut sock = std::os::unix::net::UnixStream::connect(&self.c.socket).unwrap();
        sock.write_all(b"show servers state pg\n").unwrap();
        let mut text = String::new();
        sock.read_to_string(&mut text).unwrap();
        // Fields: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 6 && f[1] == "pg")
                    .then(|| format!("{} op={} admin={}", f[3], f[5], f[6]))
            })
            .collect()
    }

    /// What a DR test must leave as it was: each server's role, timeline, system identifier and
    /// replication, the rows, HAProxy's servers and the tables of the primary.
    fn state(&self) -> Vec<String> {
        let c = &self.c;
        let mut state = Vec::new();
        for port in [c.primary, c.standby] {
            state.push(format!(
                "{port}: recovery={} timeline={} system={} receiver={} senders={} tables={}",
                self.in_recovery(port),
                c.sql(port, "SELECT timeline_id FROM pg_control_checkpoint()"),
                c.sql(port, "SELECT system_identifier FROM pg_control_system()"),
                c.sql(port, "SELECT status FROM pg_stat_wal_receiver"),
                c.sql(
                    port,
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                ),
                c.sql(
                    port,
                    "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_stat_user_tables"
                ),
            ));
        }
        state.push(format!("rows on primary: {}", self.rows(c.primary).len()));
        state.extend(self.haproxy());
        state
    }
}

pub(crate) fn report(lab: &Lab, run_id: &str) -> Value {
    let out = lab.ripcord(&["report", run_id, "--format", "json"], &[]);
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    serde_json::from_str(&out.stdout).unwrap()
}

pub(crate) fn run_id(out: &Output) -> String {
    out.summary()["run_id"].as_str().unwrap().to_string()
}

/// A→B planned switchover, the old primary rejoining as a standby in the same run, then B→A
/// (the failback) — under a writer through HAProxy and a checker sampling both servers: no
/// acknowledged write lost, never two writable primaries, and after each run the old primary
/// streams from the new one.
#[test]
fn failback_planned_switchover_both_ways_under_writes_loses_nothing_and_never_two_primaries() {
    let lab = Lab::start();
    let c = &lab.c;
    let checker = Checker::start(c.bin.clone(), [c.primary, c.standby]);
    let writer = Writer::start(c.bin.clone(), c.proxy);
    wait_until("the writer's first rows", || writer.acked().len() >= 20);

    let out = lab.ripcord(&["run", "--yes", "--json", "--mode", "planned"], &[]);
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    assert_eq!(lab.in_recovery(c.standby), "f");
    // Redundancy is back within the run: the old primary streams from the new one.
    assert_eq!(lab.in_recovery(c.primary), "t");
    assert!(lab.streams_from(c.primary, c.standby));
    let first = report(&lab, &run_id(&out));
    assert_eq!(first["run_mode"], "planned");
    assert_eq!(
        step(&first, "fence.shutdown")["outputs"]["state"],
        "shut down"
    );
    let after = writer.acked().len();
    wait_until("writes through HAProxy after the switchover", || {
        writer.acked().len() >= after + 20
    });

    // The failback: the same runbook the other way.
    let out = lab.ripcord(
        &["run", "--yes", "--json", "--mode", "planned"],
        &["from=b", "to=a"],
    );
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    let after = writer.acked().len();
    wait_until("writes through HAProxy after the failback", || {
        writer.acked().len() >= after + 20
    });
    let acked = writer.stop();
    let (samples, both) = checker.stop();

    assert_eq!(lab.in_recovery(c.primary), "f");
    assert_eq!(lab.in_recovery(c.standby), "t");
    assert!(lab.streams_from(c.standby, c.primary));
    assert_eq!(
        c.sql(c.proxy, "SELECT inet_server_port()"),
        c.primary.to_string()
    );
    let on_a = lab.rows(c.primary);
    let lost: Vec<&u32> = acked.iter().filter(|n| !on_a.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows lost: {lost:?}",
        lost.len()
    );
    assert!(acked.len() > 60, "{} rows", acked.len());
    assert!(samples > 20, "the checker sampled {samples} times");
    assert!(both.is_empty(), "two writable primaries at {both:?}");
    // Every row is on the standby too, once it has replayed.
    wait_until("the standby to replay every row", || {
        lab.rows(c.standby).len() == on_a.len()
    });
}

/// The primary is lost while its standby had stopped receiving: rows written then exist only
/// on the old primary (the data-loss window). Unplanned failover to B; the old primary, started
/// again by hand, is a second primary on the old timeline — reprotect rewinds it (pg_rewind
/// discards those rows, and the report says from where) and it streams from B; then the
/// failback to A loses nothing written since the failover.
#[test]
fn failback_after_unplanned_failover_rewinds_the_old_primary_and_switches_back() {
    let lab = Lab::start();
    let c = &lab.c;
    for n in 1..=50 {
        c.sql(c.proxy, &format!("INSERT INTO writes VALUES ({n})"));
    }
    wait_until("the standby to replay the first rows", || {
        lab.rows(c.standby).len() == 50
    });
    // The standby stops receiving; the primary takes rows it will never see, then dies.
    c.sql(c.standby, "ALTER SYSTEM SET primary_conninfo = ''");
    c.sql(c.standby, "SELECT pg_reload_conf()");
    wait_until("the standby to stop receiving", || {
        c.sql(c.standby, "SELECT count(*) FROM pg_stat_wal_receiver") == "0"
    });
    for n in 51..=60 {
        c.sql(c.primary, &format!("INSERT INTO writes VALUES ({n})"));
    }
    c.kill_primary();

    let out = lab.ripcord(&["run", "--yes", "--json", "--mode", "unplanned"], &[]);
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    assert_eq!(lab.in_recovery(c.standby), "f");
    let failover = report(&lab, &run_id(&out));
    let window = step(&failover, "to-hears")["outputs"]["note"].to_string();
    assert!(window.contains("data-loss window"), "{window}");
    for n in 61..=80 {
        c.sql(c.proxy, &format!("INSERT INTO writes VALUES ({n})"));
    }
    assert_eq!(lab.rows(c.standby).len(), 70);

    // The old site comes back: its server starts as the primary it was (timeline 1).
    assert!(c.pg_ctl("primary", &["-w", "start"]));
    assert_eq!(lab.in_recovery(c.primary), "f");
    // Traffic stays on B: HAProxy has A in maintenance since the failover.
    assert_eq!(
        c.sql(c.proxy, "SELECT inet_server_port()"),
        c.standby.to_string()
    );

    // The operator swaps from and to: rewinding B onto A would discard B's acknowledged writes.
    // Refused before anything changes: A is not ahead of B, and B takes traffic.
    let out = lab.ripcord(
        &["run", "--yes", "--mode", "reprotect"],
        &["from=b", "to=a"],
    );
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("FAILED   reprotect-ready"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("are from and to swapped?"),
        "{}",
        out.stdout
    );
    // B's data directory given as A's: the running primary is not rewound either.
    let primary_dir = c.data("primary").display().to_string();
    let standby_dir = c.data("standby").display().to_string();
    let alias = lab.variant(
        "alias",
        &format!("data_dir: {primary_dir}\n"),
        &format!("data_dir: {standby_dir}\n"),
    );
    let out = lab.ripcord_with(&alias, &["run", "--yes", "--mode", "reprotect"]);
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("FAILED   reprotect-ready"),
        "{}",
        out.stdout
    );
    assert_eq!(lab.in_recovery(c.standby), "f");
    assert_eq!(lab.rows(c.standby).len(), 70);

    let out = lab.ripcord(&["run", "--yes", "--json", "--mode", "reprotect"], &[]);
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    let reprotect = report(&lab, &run_id(&out));
    let rewind = &step(&reprotect, "rejoin.rewind")["outputs"];
    assert_eq!(rewind["rewound"], "true", "{reprotect}");
    assert!(
        rewind["diverged_at"]
            .as_str()
            .is_some_and(|s| s.contains('/')),
        "{rewind}"
    );
    assert_eq!(lab.in_recovery(c.primary), "t");
    assert!(lab.streams_from(c.primary, c.standby));
    // The rows only the old primary had are gone from it (rewound); B's are there.
    wait_until("A to replay B's rows", || lab.rows(c.primary).len() == 70);
    assert!(!lab.rows(c.primary).contains(&55));

    // Failback: planned, B -> A.
    let out = lab.ripcord(
        &["run", "--yes", "--json", "--mode", "planned"],
        &["from=b", "to=a"],
    );
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    assert_eq!(lab.in_recovery(c.primary), "f");
    assert!(lab.streams_from(c.standby, c.primary));
    assert_eq!(
        c.sql(c.proxy, "SELECT inet_server_port()"),
        c.primary.to_string()
    );
    let rows = lab.rows(c.primary);
    assert!(
        (1..=50).chain(61..=80).all(|n| rows.contains(&n)),
        "{rows:?}"
    );
}

/// The quarterly DR test: a clone of the standby, promoted on its own port and smoke-tested,
/// while the primary, the standby and HAProxy stay exactly as they were; its rollback removes
/// the clone. A clone directory that is not one ripcord made is never touched.
#[test]
fn dr_test_mode_clones_the_standby_leaves_production_untouched_and_rollback_removes_the_clone() {
    let lab = Lab::start();
    let c = &lab.c;
    for n in 1..=10 {
        c.sql(c.proxy, &format!("INSERT INTO writes VALUES ({n})"));
    }
    wait_until("the standby to replay", || lab.rows(c.standby).len() == 10);
    let before = lab.state();

    let out = lab.ripcord(&["run", "--yes", "--mode", "test"], &[]);
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    let id = lab.journal()[0]["run_id"].as_str().unwrap().to_string();
    let clone = c.dir.path().join("clone");
    assert!(clone.join("ripcord-clone").exists());
    let inputs = std::fs::read_to_string(&lab.inputs).unwrap();
    let clone_port: u16 = inputs
        .lines()
        .find_map(|l| l.strip_prefix("clone_port: "))
        .unwrap()
        .parse()
        .unwrap();
    // The clone is a primary of its own, with production's rows and the smoke test's.
    assert_eq!(lab.in_recovery(clone_port), "f");
    assert_eq!(lab.rows(clone_port).len(), 10);
    assert_eq!(
        c.sql(clone_port, "SELECT count(*) FROM ripcord_dr_test"),
        "1"
    );
    assert_eq!(
        c.sql(clone_port, "SELECT count(*) FROM pg_stat_wal_receiver"),
        "0"
    );
    let r = report(&lab, &id);
    assert_eq!(r["run_mode"], "test");
    assert_eq!(step(&r, "clone.smoke")["status"], "succeeded");
    assert_eq!(lab.state(), before, "the DR test changed production");

    // The run says what stays and how to clean it up.
    assert!(
        out.stdout
            .contains("what this test run made stays until its cleanup: ripcord rollback"),
        "{}",
        out.stdout
    );
    // The cleanup.
    let out = lab.ripcord(&["rollback", &id], &[]);
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    assert!(!clone.exists(), "the clone's directory is still there");
    // The evidence: a test that succeeded within its RTO, then cleaned up — not "rolled back,
    // RTO not reached".
    let text = lab.ripcord(&["report", &id], &[]).stdout;
    assert!(text.contains("CLEANED UP (succeeded)"), "{text}");
    assert!(
        text.contains("met,") && text.contains("before the cleanup"),
        "{text}"
    );
    assert!(!text.contains("not reached"), "{text}");
    let runs = lab.ripcord(&["runs", "--json"], &[]);
    let rows: Vec<Value> = serde_json::from_str(&runs.stdout).unwrap();
    let row = rows
        .iter()
        .find(|r| r["run_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{}", runs.stdout));
    assert_eq!(row["rolled_back"], "cleaned up", "{row}");
    assert_eq!(row["rto"], "met", "{row}");
    assert_eq!(row["run_mode"], "test", "{row}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", clone_port)).is_err(),
        "the clone still listens"
    );
    assert_eq!(lab.state(), before, "the cleanup changed production");

    // A clone_dsn that reaches the standby under another name: the copy is made, but the
    // server at the DSN is not the clone, so nothing is promoted; the failed run is rolled back
    // at once, which removes the copy.
    let alias = c.dsn(c.standby).replace("127.0.0.1", "localhost");
    let out = lab.ripcord(
        &["run", "--yes", "--mode", "test"],
        &[&format!("clone_dsn={alias}")],
    );
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("FAILED   clone.clone-checked"),
        "{}",
        out.stdout
    );
    assert_eq!(lab.in_recovery(c.standby), "t", "the standby was promoted");
    assert!(!clone.exists(), "the failed test's copy is still there");
    // A copy that fails half-way (its port is taken: the primary's) is removed as well.
    let out = lab.ripcord(
        &["run", "--yes", "--mode", "test"],
        &[&format!("clone_port={}", c.primary)],
    );
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(out.stdout.contains("FAILED   clone.copy"), "{}", out.stdout);
    assert!(!clone.exists(), "the failed copy is still there");
    assert_eq!(lab.state(), before);

    // A clone_dir that exists and was not made by ripcord (a typo naming real data): refused,
    // and left as it was.
    let precious = c.dir.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("PG_VERSION"), "15\n").unwrap();
    let out = lab.ripcord(
        &["run", "--yes", "--mode", "test"],
        &[&format!("clone_dir={}", precious.display())],
    );
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("not a clone this module made"),
        "{}",
        out.stdout
    );
    assert!(precious.join("PG_VERSION").exists());
    assert_eq!(lab.state(), before);
}

/// The nightly pre-flight of the DR runbook: `run --check` passes on a healthy cluster in the
/// modes that apply to it, and fails, naming it, on a misspelt HAProxy server, a data directory
/// that is not the primary's or too little room; an unplanned failover with a typo in the
/// primary's DSN, or its wrong port, promotes nothing — with nothing changed throughout.
#[test]
fn dr_test_pre_flight_of_the_dr_runbook_passes_when_healthy_and_names_a_misspelt_server() {
    let lab = Lab::start();
    let c = &lab.c;
    let before = lab.state();
    for mode in ["planned", "unplanned", "test"] {
        let out = lab.ripcord(&["run", "--check", "--mode", mode], &[]);
        assert_eq!(out.code, 0, "{mode}: {}", out.transcript());
    }
    // The SSH steps ran for real (pg_controldata on the primary's host).
    let out = lab.ripcord(&["run", "--check", "--json", "--mode", "planned"], &[]);
    let r = report(&lab, &run_id(&out));
    assert_eq!(step(&r, "from-host")["outputs"]["state"], "in production");

    let misspelt = lab.variant("misspelt", "server: standby", "server: stanby");
    let out = lab.ripcord_with(&misspelt, &["run", "--check", "--mode", "planned"]);
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("FAILED   names-known"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("stanby"), "{}", out.stdout);

    // The standby's data directory given as the primary's: the pre-flight sees a cluster in
    // recovery, not in production.
    let primary_dir = c.data("primary").display().to_string();
    let standby_dir = c.data("standby").display().to_string();
    let swapped = lab.variant(
        "swapped",
        &format!("data_dir: {primary_dir}\n"),
        &format!("data_dir: {standby_dir}\n"),
    );
    let out = lab.ripcord_with(&swapped, &["run", "--yes", "--mode", "planned"]);
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("FAILED   planned-ready"),
        "{}",
        out.stdout
    );

    // A failover whose primary DSN has a typo: a configuration error, and no promotion.
    let dsn = c.dsn(c.primary);
    let typo = lab.variant("typo", &dsn, &dsn.replace("user=", "usr="));
    let out = lab.ripcord_with(&typo, &["run", "--yes", "--mode", "unplanned"]);
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("a configuration error"),
        "{}",
        out.stdout
    );
    assert_eq!(
        lab.in_recovery(c.standby),
        "t",
        "the standby was promoted on a typo"
    );
    // A wrong port reads as "down" to the probe; the standby, still streaming from the real
    // primary, is the second witness, and nothing is promoted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let wrong = lab.variant(
        "wrong-port",
        &dsn,
        &dsn.replace(&format!("port={}", c.primary), &format!("port={port}")),
    );
    let out = lab.ripcord_with(&wrong, &["run", "--yes", "--mode", "unplanned"]);
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("standby streaming: true"),
        "{}",
        out.stdout
    );
    assert_eq!(lab.in_recovery(c.standby), "t");
    // The pre-flight's disk check ran for real: too little room fails it.
    let full = lab.variant("full", "min_free_mb: 1\n", "min_free_mb: 999999999\n");
    let out = lab.ripcord_with(&full, &["run", "--check", "--mode", "planned"]);
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("FAILED   planned-ready"),
        "{}",
        out.stdout
    );
    assert_eq!(lab.state(), before, "a failed pre-flight changed something");
}

/// ripcord dies (`kill -9`) while the old primary is being shut down, and the shutdown goes on
/// on its host after the connection is gone. The rollback runs the shutdown's undo although the
/// step never finished (`if_started`), and on the host the undo waits for the shutdown still
/// under way (the step's lock): the old primary ends up running, writable and in rotation again,
/// the standby untouched — not down behind a rollback that said it succeeded.
#[test]
fn dr_test_kill_9_during_the_fence_then_rollback_brings_the_old_primary_back() {
    let lab = Lab::start();
    let c = &lab.c;
    // Site a's pg_ctl takes 3 s before it stops a server: a shutdown ripcord can die in.
    let slow = c.dir.path().join("slowbin");
    std::fs::create_dir(&slow).unwrap();
    for entry in std::fs::read_dir(&c.bin).unwrap().flatten() {
        if entry.file_name() != "pg_ctl" {
            std::os::unix::fs::symlink(entry.path(), slow.join(entry.file_name())).unwrap();
        }
    }
    let wrapper = slow.join("pg_ctl");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" stop \"*) sleep 3 ;; esac\nexec {} \"$@\"\n",
            c.bin.join("pg_ctl").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = format!("bin: {}\n", c.bin.display());
    let slow_inputs = lab.variant("slow", &bin, &format!("bin: {}\n", slow.display()));
    let mut child = Ripcord::new()
        .state(&c.dir.path().join("state"))
        .args(["run", "--yes", "--mode", "planned", "--input-file"])
        .args([
            slow_inputs.display().to_string(),
            repo().join(RUNBOOK).display().to_string(),
        ])
        .spawn();
    wait_until("the shutdown to start", || {
        lab.journal()
            .iter()
            .any(|r| r["kind"] == "step_started" && r["step"] == "fence.shutdown")
    });
    std::thread::sleep(std::time::Duration::from_millis(1000));
    child.kill().unwrap(); // SIGKILL: the shutdown goes on, on its host
    child.wait().unwrap();
    let id = lab.journal()[0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        lab.in_recovery(c.primary),
        "f",
        "still up: its pg_ctl waits"
    );

    let out = lab.ripcord(&["rollback", &id], &[]);
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    // The undo ran after the shutdown had ended: the server is up again, and stays up.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(lab.in_recovery(c.primary), "f", "{}", lab.logs());
    assert_eq!(lab.in_recovery(c.standby), "t");
    c.wait_for(
        || c.sql(c.proxy, "SELECT inet_server_port()") == c.primary.to_string(),
        "HAProxy to route to the old primary again",
    );
    let r = report(&lab, &id);
    let undo = r["rollback"].to_string();
    assert!(undo.contains("fence.shutdown"), "{undo}");
}

/// Two operators, two machines (two state directories): one run waits at its approval while
/// the other switches over. Approved late, the first finds the roles changed after its
/// pre-flight and stops before any change: HAProxy and both servers stay as the other run left
/// them (before, it drained and shut down the new standby, and its rollback put that standby in
/// rotation).
#[test]
fn dr_test_a_late_approval_after_someone_else_switched_over_changes_nothing() {
    let lab = Lab::start();
    let c = &lab.c;
    let mine = c.dir.path().join("state-mine");
    let theirs = c.dir.path().join("state-theirs");
    let args = |state: &std::path::Path, yes: bool| {
        let mut a = vec!["run".to_string(), "--mode".into(), "planned".into()];
        if yes {
            a.push("--yes".into());
        }
        a.extend(["--state-dir".into(), state.display().to_string()]);
        a.extend(["--input-file".into(), lab.inputs.display().to_string()]);
        a.push(repo().join(RUNBOOK).display().to_string());
        a
    };
    let waiting = Ripcord::new().args(args(&mine, false)).spawn();
    wait_until("my run to wait for its approval", || {
        crate::support::records(&mine)
            .unwrap_or_default()
            .iter()
            .any(|r| r["kind"] == "approval_waiting")
    });
    let out = Ripcord::new().args(args(&theirs, true)).run();
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    let after_theirs = lab.state();
    let id = crate::support::records(&mine).unwrap()[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = Ripcord::new()
        .args(["approve", &id, "approve", "--state-dir"])
        .args([mine.display().to_string()])
        .run();
    assert_eq!(answer.code, 0, "{}", answer.transcript());
    let out = waiting.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED   roles-still"), "{stdout}");
    assert!(!stdout.contains("start    drain-old.set"), "{stdout}");
    assert_eq!(lab.state(), after_theirs, "the late run changed something");
    assert_eq!(
        c.sql(c.proxy, "SELECT inet_server_port()"),
        c.standby.to_string()
    );
}
