//! The product's proof: runbooks/postgres-switchover.yaml against a real PostgreSQL primary +
//! streaming standby behind HAProxy, with a writer inserting through HAProxy the whole time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::Cluster;
use crate::sshd::Sshd;
use crate::support::{Ripcord, repo};

const RUNBOOK: &str = "runbooks/postgres-switchover.yaml";

/// The lab's values, the standby's host being the loopback sshd.
fn inputs(c: &Cluster, s: &Sshd) -> Vec<String> {
    [
        format!("primary={}", c.dsn(c.primary)),
        format!("standby={}", c.dsn(c.standby)),
        format!("proxy={}", c.dsn(c.proxy)),
        format!("haproxy={}", c.socket.display()),
        "reason=end-to-end test".to_string(),
        "standby_host=127.0.0.1".to_string(),
        format!("ssh_port={}", s.port),
        format!("ssh_user={}", s.user),
        format!("ssh_identity={}", s.identity.display()),
        format!("ssh_known_hosts={}", s.known_hosts.display()),
        "standby_data_dir=/tmp".to_string(),
        "min_free_mb=1".to_string(),
    ]
    .into_iter()
    .flat_map(|i| ["-i".to_string(), i])
    .collect()
}

/// `ripcord ARGS... RUNBOOK` with the lab's inputs (see [`inputs`]) and `extra` ones after them.
fn lab_run(
    c: &Cluster,
    s: &Sshd,
    args: &[&str],
    extra: &[String],
    runbook: &str,
) -> crate::support::Output {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(inputs(c, s));
    for e in extra {
        all.extend(["-i".to_string(), e.clone()]);
    }
    all.push(repo().join(runbook).display().to_string());
    Ripcord::new()
        .state(&c.dir.path().join("state"))
        .args(all)
        .run()
}

fn ripcord(c: &Cluster, s: &Sshd, args: &[&str]) -> Ripcord {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    if matches!(args.first(), Some(&"run")) {
        all.extend(inputs(c, s));
        all.push(repo().join(RUNBOOK).display().to_string());
    }
    Ripcord::new().state(&c.dir.path().join("state")).args(all)
}

fn journal(c: &Cluster) -> Vec<Value> {
    let runs = c.dir.path().join("state/runs");
    let Some(run) = std::fs::read_dir(runs)
        .ok()
        .and_then(|mut d| d.next())
        .and_then(Result::ok)
    else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(run.path().join("journal.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.rsplit_once('\t'))
        .filter_map(|(json, _)| serde_json::from_str(json).ok())
        .collect()
}

fn has(records: &[Value], kind: &str, step: &str) -> bool {
    records
        .iter()
        .any(|r| r["kind"] == kind && r["step"] == step)
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
    let c = Cluster::start();
    let s = Sshd::start();
    c.sql(c.primary, "CREATE TABLE writes (n int PRIMARY KEY)");
    c.wait_for(
        || c.sql(c.proxy, "SELECT 1") == "1",
        "HAProxy to route to the primary",
    );

    let dry = ripcord(&c, &s, &["run", "--dry-run", "--json"]).run();
    assert_eq!(dry.code, 0, "{}", dry.transcript());
    let predicted = dry.summary()["duration_ms"].as_u64().unwrap();

    let writer = Writer::start(crate::cluster::pg_bin(), c.proxy);
    wait_until("the writer's first rows", || writer.acked().len() >= 20);
    let report = c.dir.path().join("report.json");
    let report_arg = format!("json:{}", report.display());
    let out = ripcord(&c, &s, &["run", "--yes", "--json", "--report", &report_arg]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    // Writes through HAProxy succeed again after the switchover.
    let after_run = writer.acked().len();
    wait_until("writes through HAProxy after the switchover", || {
        writer.acked().len() >= after_run + 20
    });
    let acked = writer.stop();

    // Zero loss: every acknowledged row is on the new primary.
    let on_new: std::collections::HashSet<u32> = c
        .sql(c.standby, "SELECT n FROM writes")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let lost: Vec<&u32> = acked.iter().filter(|n| !on_new.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows lost: {lost:?}",
        lost.len()
    );
    assert!(acked.len() > 40);
    assert_eq!(c.sql(c.standby, "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(
        c.sql(c.proxy, "SELECT inet_server_port()"),
        c.standby.to_string()
    );

    // The report: the prediction of the dry-run, and per step what really happened beside it.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["predicted_ms"], predicted);
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["approvals"][0]["step"], "approve");
    // The evidence matches HAProxy: the standby, declared `disabled` in the configuration, is
    // ready once enabled (HAProxy keeps a flag for that declaration, which is not maintenance).
    let enabled = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "enable-new.set")
        .unwrap();
    assert_eq!(enabled["outputs"]["state"], "ready", "{enabled}");
    assert_eq!(enabled["outputs"]["previous_state"], "maint", "{enabled}");
    for step in report["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "succeeded", "{step}");
        assert!(
            step["estimate_ms"].as_u64().is_some() && step["duration_ms"].as_u64().is_some(),
            "{step}"
        );
    }
}

#[test]
fn killed_right_after_promotion_resume_finishes_the_cut_over_without_promoting_again() {
    let c = Cluster::start();
    let s = Sshd::start();
    c.wait_for(
        || c.sql(c.proxy, "SELECT 1") == "1",
        "HAProxy to route to the primary",
    );
    let mut child = ripcord(&c, &s, &["run", "--yes"]).spawn();
    wait_until("promotion", || {
        has(&journal(&c), "step_finished", "promote.promote")
    });
    child.kill().unwrap(); // SIGKILL, right after promotion
    child.wait().unwrap();
    let run_id = journal(&c)[0]["run_id"].as_str().unwrap().to_string();
    assert!(
        !has(&journal(&c), "run_finished", ""),
        "killed before the end"
    );

    // The operator takes two seconds to notice and resume: writes fail meanwhile, and the
    // report must count that time.
    std::thread::sleep(Duration::from_secs(2));
    // Every step after promotion is idempotent: resume needs no flag.
    let out = ripcord(&c, &s, &["resume", &run_id]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let report = ripcord(&c, &s, &["report", &run_id, "--format", "json"]).run();
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    let sessions = report["sessions"].as_array().unwrap();
    assert_eq!(sessions[0]["end"], "crashed", "{sessions:?}");
    assert_eq!(sessions[1]["end"], "finished", "{sessions:?}");
    let gap = sessions[1]["start_ms"].as_u64().unwrap() - sessions[0]["end_ms"].as_u64().unwrap();
    assert!(gap >= 2000, "the wait is in the timeline: {gap} ms");
    assert!(
        report["wall_ms"].as_u64().unwrap() >= gap + sessions[0]["end_ms"].as_u64().unwrap(),
        "{report}"
    );
    let text = ripcord(&c, &s, &["report", &run_id]).run().stdout;
    assert!(text.contains("2 sessions (1 crashed)"), "{text}");
    let records = journal(&c);
    let promotions = records
        .iter()
        .filter(|r| r["kind"] == "step_started" && r["step"] == "promote.promote")
        .count();
    assert_eq!(
        promotions, 1,
        "promotion ran once across the run and its resume"
    );
    assert!(has(&records, "step_finished", "verified"));
    // Consistent: the new primary takes writes and traffic, the old one is fenced.
    assert_eq!(c.sql(c.standby, "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(
        c.sql(c.proxy, "SELECT inet_server_port()"),
        c.standby.to_string()
    );
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
            let writable = |port: u16| {
                crate::cluster::psql(
                    &bin,
                    port,
                    "SELECT NOT pg_is_in_recovery() AND current_setting('default_transaction_read_only') = 'off'",
                )
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "t")
            };
            let (mut samples, mut both) = (0, Vec::new());
            while !s.load(Ordering::Relaxed) {
                let (a, b) = (writable(ports[0]), writable(ports[1]));
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
/// the promotion, so the cut-over fails. Rolling back would make the old primary writable while
/// the new one stays a primary: rollback is refused (exit 2). HAProxy comes back, `resume`
/// finishes the cut-over. Throughout, a checker samples both servers: never two writable
/// primaries; a writer through HAProxy: no acknowledged write lost.
#[test]
fn haproxy_lost_after_promotion_refuses_rollback_and_resume_ends_without_split_brain() {
    let c = Cluster::start();
    let s = Sshd::start();
    c.sql(c.primary, "CREATE TABLE writes (n int PRIMARY KEY)");
    c.wait_for(
        || c.sql(c.proxy, "SELECT 1") == "1",
        "HAProxy to route to the primary",
    );
    let bin = crate::cluster::pg_bin();
    let checker = Checker::start(bin.clone(), [c.primary, c.standby]);
    let writer = Writer::start(bin, c.proxy);
    wait_until("writes to flow", || writer.acked().len() >= 10);
    let child = ripcord(&c, &s, &["run", "--yes", "--json"]).spawn();
    // The runtime API goes away while the standby is promoted.
    wait_until("promotion to start", || {
        has(&journal(&c), "step_started", "promote.promote")
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
    let records = journal(&c);
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

    // Rollback would undo the read-only and the drain of the old primary: refused.
    let back = ripcord(&c, &s, &["rollback", &run_id]).run();
    assert_eq!(back.code, 2, "{}", back.transcript());
    assert!(
        back.stderr.contains("irreversible step promote.promote"),
        "{}",
        back.stderr
    );
    assert_eq!(
        c.sql(c.primary, "SHOW default_transaction_read_only"),
        "on",
        "the old primary stayed read-only"
    );

    // HAProxy is back: go forward.
    std::fs::rename(&away, &c.socket).unwrap();
    let resumed = ripcord(&c, &s, &["resume", &run_id]).run();
    assert_eq!(resumed.code, 0, "{}", resumed.transcript());
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
    // Exactly one writable primary: the new one.
    assert_eq!(c.sql(c.standby, "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(c.sql(c.primary, "SHOW default_transaction_read_only"), "on");
    let on_new: std::collections::HashSet<u32> = c
        .sql(c.standby, "SELECT n FROM writes")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
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
    let c = Cluster::start();
    let s = Sshd::start();
    c.sql(
        c.primary,
        "CREATE TABLE writes (n int); INSERT INTO writes SELECT generate_series(1, 500)",
    );
    c.wait_for(
        || c.sql(c.standby, "SELECT count(*) FROM writes") == "500",
        "the standby to replay",
    );
    let file = repo()
        .join("runbooks/postgres-failover.yaml")
        .display()
        .to_string();
    let mut args: Vec<String> = vec!["run".into(), "--yes".into(), "--json".into(), file.clone()];
    args.extend(inputs(&c, &s));
    // A live primary is never failed over.
    let refused = Ripcord::new()
        .state(&c.dir.path().join("state"))
        .args(&args)
        .run();
    assert_eq!(refused.code, 1, "{}", refused.transcript());
    assert!(
        refused.stdout.contains("the primary still answers"),
        "{}",
        refused.stdout
    );

    c.kill_primary();
    let out = Ripcord::new()
        .state(&c.dir.path().join("state"))
        .args(&args)
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert_eq!(c.sql(c.standby, "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(
        c.sql(c.proxy, "SELECT count(*) FROM writes"),
        "500",
        "traffic reaches the new primary, data intact"
    );
    let run_id = out.events()[0]["run_id"].as_str().unwrap().to_string();
    let report = Ripcord::new()
        .state(&c.dir.path().join("state"))
        .args(["report", &run_id])
        .run();
    assert!(
        report
            .stdout
            .contains("\n  last-known: data-loss window: WAL after"),
        "{}",
        report.stdout
    );
    // The same fact in every format: JUnit as a property, HTML above the fold.
    for (format, wanted) in [
        (
            "junit",
            "<property name=\"note.last-known\" value=\"data-loss window: WAL after",
        ),
        (
            "html",
            "<li><code>last-known</code>: <strong>data-loss window: WAL after",
        ),
        ("md", "- ` last-known `: data-loss window: WAL after"),
    ] {
        let out = Ripcord::new()
            .state(&c.dir.path().join("state"))
            .args(["report", &run_id, "--format", format])
            .run();
        assert!(out.stdout.contains(wanted), "{format}: {}", out.stdout);
    }
}

/// `run --check` is the nightly pre-flight: on a healthy cluster it passes for both runbooks
/// (post-conditions carry `check: false`); a misspelt HAProxy server fails it, naming the
/// server, before any real run; a typo in the primary's DSN stops a failover as a configuration
/// error, never read as "the primary is down".
#[test]
fn dr_test_pre_flight_passes_on_a_healthy_cluster_and_catches_mistakes() {
    let c = Cluster::start();
    let s = Sshd::start();
    const FAILOVER: &str = "runbooks/postgres-failover.yaml";
    for runbook in [RUNBOOK, FAILOVER] {
        let out = lab_run(&c, &s, &["run", "--check"], &[], runbook);
        assert_eq!(out.code, 0, "{runbook}: {}", out.transcript());
        // The SSH pre-flight ran its `df` for real (`check: true`).
        assert!(
            out.stdout.contains("ok       standby-host"),
            "{}",
            out.stdout
        );
    }
    // A misspelt server: the pre-flight fails and says which.
    let out = lab_run(
        &c,
        &s,
        &["run", "--check"],
        &["new_server=stanby".into()],
        RUNBOOK,
    );
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(out.stdout.contains("stanby"), "{}", out.stdout);
    // Nothing changed: still a primary and a standby.
    assert_eq!(c.sql(c.primary, "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(c.sql(c.standby, "SELECT pg_is_in_recovery()"), "t");

    // A failover whose primary DSN has a typo: a configuration error, and no promotion.
    let typo = c.dsn(c.primary).replace("user=", "usr=");
    let out = lab_run(
        &c,
        &s,
        &["run", "--yes"],
        &[format!("primary={typo}")],
        FAILOVER,
    );
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("a configuration error"),
        "{}",
        out.stdout
    );
    assert_eq!(
        c.sql(c.standby, "SELECT pg_is_in_recovery()"),
        "t",
        "the standby was promoted on a typo"
    );
    // A wrong port reads as "down" to the probe; the standby, still streaming from the real
    // primary, is the second witness, and nothing is promoted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let wrong = c.dsn(c.primary).replace(
        &format!("port={}", c.primary),
        &format!("port={}", closed.local_addr().unwrap().port()),
    );
    drop(closed);
    let out = lab_run(
        &c,
        &s,
        &["run", "--yes"],
        &[format!("primary={wrong}")],
        FAILOVER,
    );
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.stdout.contains("standby streaming: true"),
        "{}",
        out.stdout
    );
    assert_eq!(c.sql(c.standby, "SELECT pg_is_in_recovery()"), "t");
    // The pre-flight's disk check ran for real: too little room fails it.
    let out = lab_run(
        &c,
        &s,
        &["run", "--check"],
        &["min_free_mb=999999999".into()],
        RUNBOOK,
    );
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(out.stdout.contains("FAILED   preflight"), "{}", out.stdout);
}
