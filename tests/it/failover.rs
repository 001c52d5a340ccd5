//! The product's proof: runbooks/postgres-dr.yaml against a real PostgreSQL primary + streaming
//! standby behind HAProxy, with a writer inserting through HAProxy the whole time, a checker
//! sampling both servers, and the runbook's steps on the servers' host over a real sshd.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dr::{Lab, report, run_id};
use crate::support::step;

fn has(records: &[Value], kind: &str, step: &str) -> bool {
    records
        .iter()
        .any(|r| r["kind"] == kind && (step.is_empty() || r["step"] == step))
}

pub(crate) fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Inserts numbered rows through HAProxy until stopped; the numbers PostgreSQL acknowledged.
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u32>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    pub(crate) fn start(bin: PathBuf, port: u16) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u32;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let ok =
                    crate::cluster::psql(&bin, port, &format!("INSERT INTO writes VALUES ({n})"))
                        .output()
                        .is_ok_and(|o| o.status.success());
                if ok {
                    a.lock().unwrap().push(n);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Writer {
            stop,
            acked,
            thread,
        }
    }

    pub(crate) fn acked(&self) -> Vec<u32> {
        self.acked.lock().unwrap().clone()
    }

    pub(crate) fn stop(self) -> Vec<u32> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.acked.lock().unwrap().clone()
    }
}

#[test]
fn switchover_under_writes_loses_nothing_and_reports_actual_beside_predicted() {
    let lab = Lab::start();
    let c = &lab.c;
    let dry = lab.ripcord(&["run", "--dry-run", "--json", "--mode", "planned"], &[]);
    assert_eq!(dry.code, 0, "{}", dry.transcript());
    let dry_report = report(&lab, &run_id(&dry));
    let predicted = dry_report["predicted_ms"].as_u64().unwrap();

    let writer = Writer::start(c.bin.clone(), c.proxy);
    wait_until("the writer's first rows", || writer.acked().len() >= 20);
    let report_file = c.dir.path().join("report.json");
    let report_arg = format!("json:{}", report_file.display());
    let out = lab.ripcord(
        &[
            "run",
            "--mode",
            "planned",
            "--yes",
            "--json",
            "--report",
            &report_arg,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    // Writes through HAProxy succeed again after the switchover.
    let after_run = writer.acked().len();
    wait_until("writes through HAProxy after the switchover", || {
        writer.acked().len() >= after_run + 20
    });
    let acked = writer.stop();

    // Zero loss: every acknowledged row is on the new primary.
    let on_new = lab.rows(c.standby);
    let lost: Vec<&u32> = acked.iter().filter(|n| !on_new.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows lost: {lost:?}",
        lost.len()
    );
    assert!(acked.len() > 40);
    assert_eq!(lab.in_recovery(c.standby), "f");
    assert_eq!(
        c.sql(c.proxy, "SELECT inet_server_port()"),
        c.standby.to_string()
    );

    // The report: the prediction of the dry-run, and per step what really happened beside it.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_file).unwrap()).unwrap();
    assert_eq!(report["predicted_ms"], predicted);
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["run_mode"], "planned");
    assert_eq!(report["approvals"][0]["step"], "approve");
    // The evidence matches HAProxy: the standby, declared `disabled` in the configuration, is
    // ready once enabled (HAProxy keeps a flag for that declaration, which is not maintenance).
    let enabled = step(&report, "enable-new.set");
    assert_eq!(enabled["outputs"]["state"], "ready", "{enabled}");
    assert_eq!(enabled["outputs"]["previous_state"], "maint", "{enabled}");
    let mut ran = 0;
    for step in report["steps"].as_array().unwrap() {
        match step["status"].as_str() {
            Some("succeeded") => {
                ran += 1;
                assert!(
                    step["estimate_ms"].as_u64().is_some()
                        && step["duration_ms"].as_u64().is_some(),
                    "{step}"
                );
            }
            // Another mode's steps, and the catch-up the fence has done already.
            Some("skipped") => {}
            _ => panic!("{step}"),
        }
    }
    assert!(ran >= 25, "{ran} steps ran");
}

#[test]
fn killed_right_after_promotion_resume_finishes_the_cut_over_without_promoting_again() {
    let lab = Lab::start();
    let c = &lab.c;
    let mut child = lab
        .command(&["run", "--yes", "--mode", "planned"], &[])
        .spawn();
    wait_until("promotion", || {
        has(&lab.journal(), "step_finished", "promote.promote")
    });
    child.kill().unwrap(); // SIGKILL, right after promotion
    child.wait().unwrap();
    let records = lab.journal();
    let run_id = records[0]["run_id"].as_str().unwrap().to_string();
    assert!(!has(&records, "run_finished", ""), "killed before the end");

    // The operator takes two seconds to notice and resume: writes fail meanwhile, and the
    // report must count that time.
    std::thread::sleep(Duration::from_secs(2));
    // Every step after promotion is idempotent or has not started: resume needs no flag.
    let out = lab.ripcord(&["resume", &run_id], &[]);
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    let r = report(&lab, &run_id);
    let sessions = r["sessions"].as_array().unwrap();
    assert_eq!(sessions[0]["end"], "crashed", "{sessions:?}");
    assert_eq!(sessions[1]["end"], "finished", "{sessions:?}");
    let gap = sessions[1]["start_ms"].as_u64().unwrap() - sessions[0]["end_ms"].as_u64().unwrap();
    assert!(gap >= 2000, "the wait is in the timeline: {gap} ms");
    assert!(
        r["wall_ms"].as_u64().unwrap() >= gap + sessions[0]["end_ms"].as_u64().unwrap(),
        "{r}"
    );
    let text = lab.ripcord(&["report", &run_id], &[]).stdout;
    assert!(text.contains("2 sessions (1 crashed)"), "{text}");
    let records = lab.journal();
    let promotions = records
        .iter()
        .filter(|r| r["kind"] == "step_started" && r["step"] == "promote.promote")
        .count();
    assert_eq!(
        promotions, 1,
        "promotion ran once across the run and its resume"
    );
    assert!(has(&records, "step_finished", "verified"));
    // Consistent: the new primary takes writes and traffic; the old one is its standby.
    assert_eq!(lab.in_recovery(c.standby), "f");
    assert_eq!(
        c.sql(c.proxy, "SELECT inet_server_port()"),
        c.standby.to_string()
    );
    assert_eq!(lab.in_recovery(c.primary), "t");
    assert!(lab.streams_from(c.primary, c.standby));
}

/// Samples both servers until stopped: how often each was writable (a primary not in
/// read-only mode), and every sample in which both were.
pub(crate) struct Checker {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Checker {
    pub(crate) fn start(bin: PathBuf, ports: [u16; 2]) -> Checker {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            // Both servers asked at the same moment (two psql at once), not one after the
            // other: a short overlap of two primaries falls inside a sample.
            let ask = |port: u16| {
                crate::cluster::psql(
                    &bin,
                    port,
                    "SELECT NOT pg_is_in_recovery() AND current_setting('default_transaction_read_only') = 'off'",
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
            };
            let writable = |child: std::io::Result<std::process::Child>| {
                child
                    .and_then(|c| c.wait_with_output())
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "t")
            };
            let (mut samples, mut both) = (0, Vec::new());
            while !s.load(Ordering::Relaxed) {
                let (first, second) = (ask(ports[0]), ask(ports[1]));
                let (a, b) = (writable(first), writable(second));
                samples += 1;
                if a && b {
                    both.push(format!("sample {samples}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (samples, both)
        });
        Checker { stop, thread }
    }

    pub(crate) fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The split brain of the first round, now refused: HAProxy's runtime API is lost right after
/// the promotion, so the cut-over fails. Rolling back would start the old primary again while
/// the new one stays a primary: rollback is refused (exit 2), and the old primary stays down.
/// HAProxy comes back, `resume` finishes the cut-over and the old primary rejoins as a standby.
/// Throughout, a checker samples both servers: never two writable primaries; a writer through
/// HAProxy: no acknowledged write lost.
#[test]
fn haproxy_lost_after_promotion_refuses_rollback_and_resume_ends_without_split_brain() {
    let lab = Lab::start();
    let c = &lab.c;
    let checker = Checker::start(c.bin.clone(), [c.primary, c.standby]);
    let writer = Writer::start(c.bin.clone(), c.proxy);
    wait_until("writes to flow", || writer.acked().len() >= 10);
    let child = lab
        .command(&["run", "--yes", "--json", "--mode", "planned"], &[])
        .spawn();
    // The runtime API goes away while the standby is promoted.
    wait_until("promotion to start", || {
        has(&lab.journal(), "step_started", "promote.promote")
    });
    let away = c.dir.path().join("haproxy.sock.away");
    std::fs::rename(&c.socket, &away).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let records = lab.journal();
    let failed = records
        .iter()
        .find(|r| r["kind"] == "step_finished" && r["step"] == "enable-new.set")
        .unwrap();
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("HAProxy runtime API"),
        "{failed}"
    );
    let run_id = records[0]["run_id"].as_str().unwrap().to_string();
    // The hint goes forward only.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("ripcord rollback"), "{stdout}");

    // Rollback would start the old primary again and undo its drain: refused.
    let back = lab.ripcord(&["rollback", &run_id], &[]);
    assert_eq!(back.code, 2, "{}", back.transcript());
    assert!(
        back.stderr.contains("irreversible step promote.promote"),
        "{}",
        back.stderr
    );
    assert!(
        c.try_sql(c.primary, "SELECT 1").is_err(),
        "the old primary stayed down"
    );

    // HAProxy is back: go forward.
    std::fs::rename(&away, &c.socket).unwrap();
    let resumed = lab.ripcord(&["resume", &run_id], &[]);
    assert_eq!(resumed.code, 0, "{}{}", resumed.transcript(), lab.logs());
    c.wait_for(
        || c.sql(c.proxy, "SELECT inet_server_port()") == c.standby.to_string(),
        "traffic on the new primary",
    );
    wait_until("writes through the new primary", || {
        let n = writer.acked().len();
        std::thread::sleep(Duration::from_millis(300));
        writer.acked().len() > n
    });
    let acked = writer.stop();
    let (samples, both) = checker.stop();
    assert!(samples > 20, "the checker sampled throughout ({samples})");
    assert!(both.is_empty(), "two writable primaries at {both:?}");
    // Exactly one primary, the new one; the old one streams from it.
    assert_eq!(lab.in_recovery(c.standby), "f");
    assert_eq!(lab.in_recovery(c.primary), "t");
    assert!(lab.streams_from(c.primary, c.standby));
    let on_new = lab.rows(c.standby);
    let lost: Vec<u32> = acked
        .iter()
        .copied()
        .filter(|n| !on_new.contains(n))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(acked.len() > 20, "{} writes acknowledged", acked.len());
}

#[test]
fn unplanned_failover_after_losing_the_primary_reports_the_data_loss_window() {
    let lab = Lab::start();
    let c = &lab.c;
    c.sql(
        c.primary,
        "INSERT INTO writes SELECT generate_series(1, 500)",
    );
    c.wait_for(
        || c.sql(c.standby, "SELECT count(*) FROM writes") == "500",
        "the standby to replay",
    );
    // A live primary is never failed over.
    let args = ["run", "--yes", "--json", "--mode", "unplanned"];
    let refused = lab.ripcord(&args, &[]);
    assert_eq!(refused.code, 1, "{}", refused.transcript());
    assert!(
        refused.stdout.contains("the primary still answers"),
        "{}",
        refused.stdout
    );
    assert_eq!(lab.in_recovery(c.standby), "t");

    c.kill_primary();
    // The operator reaches for the switchover: it says this is a failover, and changes nothing.
    let wrong = lab.ripcord(&["run", "--yes", "--mode", "planned"], &[]);
    assert_eq!(wrong.code, 1, "{}", wrong.transcript());
    assert!(
        wrong
            .stdout
            .contains("this is a failover: --mode unplanned"),
        "{}",
        wrong.stdout
    );
    assert_eq!(lab.in_recovery(c.standby), "t");
    let out = lab.ripcord(&args, &[]);
    assert_eq!(out.code, 0, "{}{}", out.transcript(), lab.logs());
    assert_eq!(lab.in_recovery(c.standby), "f");
    assert_eq!(
        c.sql(c.proxy, "SELECT count(*) FROM writes"),
        "500",
        "traffic reaches the new primary, data intact"
    );
    let id = run_id(&out);
    let text = lab.ripcord(&["report", &id], &[]).stdout;
    assert!(
        text.contains("\n  to-hears: data-loss window: WAL after"),
        "{text}"
    );
    // The same fact in every format: JUnit as a property, HTML above the fold.
    for (format, wanted) in [
        (
            "junit",
            "<property name=\"note.to-hears\" value=\"data-loss window: WAL after",
        ),
        (
            "html",
            "<li><code>to-hears</code>: <strong>data-loss window: WAL after",
        ),
        ("md", "- ` to-hears `: data-loss window: WAL after"),
    ] {
        let out = lab.ripcord(&["report", &id, "--format", format], &[]);
        assert!(out.stdout.contains(wanted), "{format}: {}", out.stdout);
    }
}
