//! Reports of a fixed dry-run (seeded, virtual time): text, Markdown and JSON as snapshots,
//! JUnit parsed and counted, the HTML's Gantt chart checked bar by bar; history estimates.

use std::path::Path;

use serde_json::Value;

use crate::support::{Output, Ripcord};

const RUNBOOK: &str = "tests/fixtures/reports/orders-failover.yaml";

/// A dry-run that rehearses a failure: approvals, retries, a not-run step, an auto rollback.
fn rehearsal(state: &Path) -> String {
    let out = Ripcord::new()
        .state(state)
        .args([
            "run",
            "--dry-run",
            "--json",
            "--seed",
            "1",
            "--fail",
            "repoint",
            RUNBOOK,
        ])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    out.events()[0]["run_id"].as_str().unwrap().to_string()
}

fn report(state: &Path, run_id: &str, format: &str) -> Output {
    let out = Ripcord::new()
        .state(state)
        .args(["report", run_id, "--format", format])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    out
}

/// What changes from one run to the next (the run id's time, wall-clock times, the absolute
/// path of the runbook) is filtered out of the snapshots.
#[test]
fn text_markdown_and_json_reports() {
    let dir = tempfile::tempdir().unwrap();
    let run_id = rehearsal(dir.path());
    // Who ran it: the account of the real uid at this host, which differs between machines.
    let json: Value = serde_json::from_str(&report(dir.path(), &run_id, "json").stdout).unwrap();
    let who = json["operator"].as_str().unwrap().to_string();
    assert!(who.contains('@'), "account@host: {who}");
    for format in ["text", "md", "json"] {
        let out = report(dir.path(), &run_id, format);
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(&regex_escape(&who), "[WHO]");
        settings.add_filter(r"\d{8}-\d{6}-dry-0001", "[RUN_ID]");
        settings.add_filter(r#"pid("?:? )\d+"#, "pid$1[PID]");
        settings.add_filter(r#""(by|host)": "[^"]*""#, r#""$1": "[$1]""#);
        settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?", "[TIME]");
        settings.add_filter(
            r#"/[^\s`"]*/tests/fixtures/reports/"#,
            "[REPO]/tests/fixtures/reports/",
        );
        settings.bind(|| insta::assert_snapshot!(format!("report_{format}"), out.stdout));
    }
    let json: Value = serde_json::from_str(&report(dir.path(), &run_id, "json").stdout).unwrap();
    assert_eq!(json["status"], "failed");
    assert_eq!(json["approvals"][0]["simulated"], true);
    assert_eq!(json["rollback"]["status"], "succeeded");
    assert_eq!(json["rollback"]["actions"].as_array().unwrap().len(), 4);
}

#[test]
fn junit_has_one_testcase_per_step_and_counts_that_match() {
    let dir = tempfile::tempdir().unwrap();
    let run_id = rehearsal(dir.path());
    let xml = report(dir.path(), &run_id, "junit").stdout;
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut cases, mut failures, mut skipped, mut suite_attrs) = (0, 0, 0, Vec::new());
    let mut names = Vec::new();
    loop {
        match reader.read_event().expect("well-formed XML") {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                let attr = |name: &str| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.0 == name)
                        .map(|a| a.value.replace("&amp;", "&").replace("&quot;", "\""))
                };
                match e.name().0 {
                    "testsuite" => {
                        suite_attrs = ["tests", "failures", "skipped", "errors"]
                            .map(|k| attr(k).unwrap())
                            .to_vec()
                    }
                    "testcase" => {
                        cases += 1;
                        assert!(attr("time").unwrap().parse::<f64>().is_ok());
                        names.push(attr("name").unwrap());
                    }
                    "failure" => failures += 1,
                    "skipped" => skipped += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    // A testcase per step, one per undo of the automatic rollback, and the RTO.
    assert_eq!(cases, 14, "{names:?}");
    assert!(names.contains(&"power-on[app2]".to_string()));
    let undos: Vec<&String> = names.iter().filter(|n| n.starts_with("undo ")).collect();
    assert_eq!(
        undos,
        // In the order they started: the power-ons, then the drain.
        [
            "undo power-on[app3]",
            "undo power-on[app2]",
            "undo power-on[app1]",
            "undo drain",
        ]
    );
    assert!(
        xml.contains("<property name=\"rollback\" value=\"succeeded"),
        "the rollback is a property: {xml}"
    );
    assert!(xml.contains("<property name=\"session.1\" value=\"run by "));
    assert_eq!(
        suite_attrs,
        [
            cases.to_string(),
            failures.to_string(),
            skipped.to_string(),
            "0".into()
        ]
    );
    assert_eq!(
        (failures, skipped),
        (2, 1),
        "repoint failed, the RTO was not reached (rolled back), smoke never ran"
    );
    assert!(names.contains(&"rto".to_string()));
}

#[test]
fn html_is_self_contained_with_a_bar_per_step_and_the_critical_path() {
    let dir = tempfile::tempdir().unwrap();
    let run_id = rehearsal(dir.path());
    let html = report(dir.path(), &run_id, "html").stdout;
    assert!(html.starts_with("<!DOCTYPE html>"));
    for external in ["<script", "<link", "src=\"http", "href=\"http", "@import"] {
        assert!(
            !html.contains(external),
            "external asset or script: {external}"
        );
    }
    // `url(` only for the page's own pattern (`url(#hatch)`).
    assert_eq!(
        html.matches("url(").count(),
        html.matches("url(#").count(),
        "url() to something outside the page"
    );
    let svg = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
    let steps = svg.matches("<g class=\"step").count();
    assert_eq!(steps, 9);
    assert_eq!(
        svg.matches("<rect class=\"predicted\"").count(),
        9,
        "a predicted bar per step"
    );
    // Eight steps ran (smoke never did): a bar per try; repoint failed every one of its tries,
    // each red with a ✕.
    let json: Value = serde_json::from_str(&report(dir.path(), &run_id, "json").stdout).unwrap();
    let tries: usize = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tries"].as_array().unwrap().len())
        .sum();
    let repoint = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "repoint")
        .unwrap();
    let failed_tries = repoint["tries"].as_array().unwrap().len();
    assert!(failed_tries >= 1);
    assert_eq!(svg.matches("<rect class=\"try ").count(), tries);
    assert_eq!(
        svg.matches("<rect class=\"try failed\"").count(),
        failed_tries
    );
    assert_eq!(svg.matches("class=\"mark-failed\"").count(), failed_tries);
    // Undos of the rollback on their steps' rows.
    assert_eq!(svg.matches("<path class=\"undo\"").count(), 4);
    let critical: Vec<&str> = svg
        .split("<g class=\"step critical\" data-step=\"")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap()])
        .collect();
    assert_eq!(
        critical,
        [
            "preflight",
            "approve",
            "drain",
            "promote",
            "repoint",
            "smoke"
        ]
    );
    assert!(svg.contains("class=\"rto\""), "the RTO line");
    assert!(svg.contains(">RTO 3m<"));
}

#[test]
fn history_estimates_come_from_earlier_real_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runbook = dir.path().join("learn.yaml");
    std::fs::write(
        &runbook,
        "version: 1\nname: learn\nsteps:\n\
         - { id: work, uses: sleep.for, with: { duration: 300ms }, sim: { duration: 10s } }\n\
         - { id: then, needs: [work], uses: sleep.for, with: { duration: 100ms } }\n",
    )
    .unwrap();
    let file = runbook.to_str().unwrap();
    for _ in 0..3 {
        assert_eq!(
            Ripcord::new()
                .state(dir.path())
                .args(["run", file])
                .run()
                .code,
            0
        );
    }
    let sim = Ripcord::new()
        .state(dir.path())
        .args(["plan", "--json", file])
        .run();
    let sim: Value = serde_json::from_str(&sim.stdout).unwrap();
    assert_eq!(sim["predicted_ms"]["unlimited"], 10_100);
    let learned = Ripcord::new()
        .state(dir.path())
        .args(["plan", "--json", "--estimates", "history", file])
        .run();
    let learned: Value = serde_json::from_str(&learned.stdout).unwrap();
    let ms = learned["predicted_ms"]["unlimited"].as_u64().unwrap();
    assert!(
        (400..1000).contains(&ms),
        "median of real runs: about 300 + 100 ms, got {ms}"
    );
    // The dry-run follows the same estimates.
    let dry = Ripcord::new()
        .state(dir.path())
        .args(["run", "--dry-run", "--json", "--estimates", "history", file])
        .run();
    assert_eq!(dry.summary()["duration_ms"].as_u64().unwrap(), ms);
    // A dry-run is not a sample: its 300-odd ms of virtual time changes no median (were it
    // one, the same plan would now predict differently).
    let again = Ripcord::new()
        .state(dir.path())
        .args(["plan", "--json", "--estimates", "history", file])
        .run();
    let again: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["predicted_ms"]["unlimited"], ms);
    // The text plan says where its estimates came from, on a line of its own.
    let text = Ripcord::new()
        .state(dir.path())
        .args(["plan", "--estimates", "history", file])
        .run();
    assert!(
        text.stdout
            .starts_with("estimates: 2 of 2 steps from the median of 3 earlier real runs (succeeded tries only: failed tries, retry waits and gaps between sessions are not in them)\nlearn: 2 steps in 2 stages"),
        "{}",
        text.stdout
    );
}

/// A past run's report is a function of its journal: runs made later change nothing in it, and
/// it carries no history estimates.
#[test]
fn a_report_does_not_change_as_later_runs_happen() {
    let dir = tempfile::tempdir().unwrap();
    let runbook = dir.path().join("learn.yaml");
    std::fs::write(
        &runbook,
        "version: 1\nname: learn\nsteps:\n\
         - { id: work, uses: sleep.for, with: { duration: 50ms } }\n",
    )
    .unwrap();
    let file = runbook.to_str().unwrap();
    let run = || {
        let out = Ripcord::new()
            .state(dir.path())
            .args(["run", "--json", file])
            .run();
        assert_eq!(out.code, 0, "{}", out.transcript());
        out.events()[0]["run_id"].as_str().unwrap().to_string()
    };
    let first = run();
    let before: Vec<String> = ["text", "md", "json", "junit", "html"]
        .iter()
        .map(|f| report(dir.path(), &first, f).stdout)
        .collect();
    run();
    run();
    let after: Vec<String> = ["text", "md", "json", "junit", "html"]
        .iter()
        .map(|f| report(dir.path(), &first, f).stdout)
        .collect();
    assert_eq!(before, after);
    assert!(!before[2].contains("history"), "{}", before[2]);
}

/// An approval given in advance (`--yes`) took no one's time: it is no sample for the
/// approval's estimate, which stays the runbook's.
#[test]
fn history_estimates_leave_out_approvals_given_in_advance() {
    let dir = tempfile::tempdir().unwrap();
    let runbook = dir.path().join("ok.yaml");
    std::fs::write(
        &runbook,
        "version: 1\nname: ok\nsteps:\n\
         - { id: approve, uses: approval.ask, with: { prompt: go? }, sim: { duration: 5m } }\n\
         - { id: work, needs: [approve], uses: sleep.for, with: { duration: 20ms } }\n",
    )
    .unwrap();
    let file = runbook.to_str().unwrap();
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--yes", file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let plan = Ripcord::new()
        .state(dir.path())
        .args(["plan", "--json", "--estimates", "history", file])
        .run();
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    let ms = plan["predicted_ms"]["unlimited"].as_u64().unwrap();
    assert!(
        (300_000..301_000).contains(&ms),
        "the approval keeps its 5m estimate, work takes its measured ~20ms: {ms}"
    );
}

#[test]
fn runs_lists_newest_first_and_reports_are_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let first = rehearsal(dir.path());
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--dry-run", "--json", "--seed", "2", RUNBOOK])
        .run();
    assert_eq!(out.code, 0);
    let second = out.events()[0]["run_id"].as_str().unwrap().to_string();
    let runs = Ripcord::new()
        .state(dir.path())
        .args(["runs", "--json"])
        .run();
    let runs: Value = serde_json::from_str(&runs.stdout).unwrap();
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["sessions"], 1);
    // The RTO is judged for finished real runs only: these are dry-runs.
    assert_eq!(runs[0]["rto_met"], Value::Null);
    // The rehearsal failed and rolled back automatically: `runs` says both.
    assert_eq!(runs[1]["status"], "failed");
    assert_eq!(runs[1]["rolled_back"], "yes");
    assert_eq!(runs[1]["mode"], "dry-run");
    assert_eq!(
        runs[1]["sessions"], 2,
        "the run, and its automatic rollback"
    );

    let path = dir.path().join("evidence.html");
    // An existing report with a wider mode is narrowed; a symbolic link is not followed.
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let target = dir.path().join("elsewhere.txt");
    std::fs::write(&target, "untouched").unwrap();
    let link = dir.path().join("link.html");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let refused = Ripcord::new()
        .state(dir.path())
        .args(["report", &first, "--output", link.to_str().unwrap()])
        .run();
    // The contract's codes for `report`: 0, or 2 for what cannot be done as asked.
    assert_eq!(refused.code, 2, "{}", refused.transcript());
    assert!(
        refused.stderr.contains("symbolic link"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    // Nor a hard link to another file, nor a FIFO (which would wait for a reader forever).
    let hard = dir.path().join("hard.html");
    std::fs::hard_link(&target, &hard).unwrap();
    let fifo = dir.path().join("fifo.html");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (path, why) in [(&hard, "other hard links"), (&fifo, "FIFO")] {
        let refused = Ripcord::new()
            .state(dir.path())
            .args(["report", &first, "--output", path.to_str().unwrap()])
            .run();
        assert_eq!(refused.code, 2, "{}", refused.transcript());
        assert!(refused.stderr.contains(why), "{}", refused.stderr);
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    let out = Ripcord::new()
        .state(dir.path())
        .args([
            "report",
            &first,
            "--format",
            "html",
            "--output",
            path.to_str().unwrap(),
        ])
        .run();
    assert_eq!(out.code, 0);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let journal = dir.path().join("runs").join(&first).join("journal.jsonl");
    assert_eq!(
        std::fs::metadata(journal).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let run_dir = dir.path().join("runs").join(&first);
    assert_eq!(
        std::fs::metadata(run_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if !r"\.+*?()|[]{}^$#&-~".contains(c) {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}
