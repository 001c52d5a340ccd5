//! Evidence across sessions: a run that failed, was resumed, crashed (kill -9), waited and was
//! resumed again with an input changed reads as exactly that in every format: its sessions and
//! how each ended, the gap between them in the wall-clock total the RTO is judged on, every try
//! of every step with its error and stderr, the outputs, the changed input. A rollback says who
//! ran it, when, and why it was forced. The HTML page is checked as a browser renders it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Output, Ripcord, alive, run_id, step, wait_alive, write};

fn ripcord(state: &Path, args: &[&str]) -> Output {
    Ripcord::new().state(state).args(args).run()
}

fn report(state: &Path, run_id: &str, format: &str) -> String {
    let out = ripcord(state, &["report", run_id, "--format", format]);
    assert_eq!(out.code, 0, "{}", out.transcript());
    out.stdout
}

fn json(state: &Path, run_id: &str) -> Value {
    serde_json::from_str(&report(state, run_id, "json")).unwrap()
}

/// The page has no script of its own; the tests add one that measures the rendered layout and
/// writes it into the DOM that chromium dumps.
const PROBE: &str = r#"<script>
window.addEventListener('load', () => {
  const box = id => { const e = document.getElementById(id); if (!e) return null;
    const b = e.getBoundingClientRect(); return { top: b.top, bottom: b.bottom, text: e.innerText }; };
  const out = {
    verdict: box('verdict'), rto: box('rto'), failed: box('failed'), sessions: box('sessions'),
    result: box('result'),
    tries: [...document.querySelectorAll('rect.try')].map(e => ({
      cls: e.getAttribute('class'), width: e.getBoundingClientRect().width, fill: getComputedStyle(e).fill })),
    gaps: [...document.querySelectorAll('rect.gap')].map(e => e.getBoundingClientRect().width),
    bands: document.querySelectorAll('g.session-band').length,
    width: document.documentElement.scrollWidth,
  };
  const pre = document.createElement('pre'); pre.id = 'measured';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"#;

/// `html` rendered by headless chromium in a 1280×800 window, measured by [`PROBE`].
fn measure_in_chromium(dir: &Path, html: &str) -> Value {
    let page = dir.join("report.html");
    std::fs::write(&page, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1280,800",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("file://{}", page.display()),
        ])
        .output()
        .expect("chromium is installed (scripts/test installs it)");
    let dom = String::from_utf8_lossy(&out.stdout);
    let start = dom.find("<pre id=\"measured\">").unwrap_or_else(|| {
        panic!(
            "no measurement in the DOM:\n{dom}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    }) + "<pre id=\"measured\">".len();
    let end = start + dom[start..].find("</pre>").unwrap();
    let measured = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&measured).unwrap()
}

/// SIGKILL for ripcord (its session's journal just stops); then waits until the step it was
/// running (`pattern` in its command line) is gone, as the supervisor ends it.
fn kill_9(mut child: std::process::Child, pattern: &str) {
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pattern) {
        assert!(Instant::now() < deadline, "a step outlived ripcord");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The id of the run a `run --json` printed first.
fn started(out: &Output) -> String {
    out.events()[0]["run_id"].as_str().unwrap().to_string()
}

/// The `<testcase>` of JUnit report `junit` named `name`, up to its end tag.
fn junit_case<'a>(junit: &'a str, name: &str) -> &'a str {
    let case = &junit[junit.find(&format!("<testcase name=\"{name}\"")).unwrap()..];
    &case[..case.find("</testcase>").unwrap()]
}

/// The seconds ripcord sits dead between the crash and the resume.
const GAP: Duration = Duration::from_secs(3);

/// A run of three sessions on real shell steps: (1) `token` fails with "bad token" on stderr,
/// the run fails; (2) resumed, `token` passes and `slow` hangs until ripcord is killed with
/// SIGKILL; nothing happens for [`GAP`]; (3) resumed with `-i target=second`, it succeeds.
/// Returns the state directory's parent and the run id.
fn three_sessions() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let file = write(
        dir.path(),
        "story.yaml",
        &format!(
            r#"version: 1
name: story
rto: 2s
inputs:
  target: {{ type: string, default: first }}
steps:
  - id: token
    uses: shell.run
    with:
      script: |
        if [ ! -f {d}/fixed ]; then
          echo "note=data-loss window: 45s" >> "$RIPCORD_OUTPUT"
          echo "HTTP 401: bad token" >&2; exit 1
        fi
        echo "lsn=0/3000060" >> "$RIPCORD_OUTPUT"
        echo "note=data-loss window: none" >> "$RIPCORD_OUTPUT"
  - id: slow
    needs: [token]
    idempotent: true
    uses: shell.run
    with:
      script: |
        if [ ! -f {d}/go ]; then sleep 60; fi
        echo "target=$TARGET" >> "$RIPCORD_OUTPUT"
      env: {{ TARGET: "${{{{ inputs.target }}}}" }}
"#
        ),
    );
    let state = dir.path().join("state");
    let first = ripcord(&state, &["run", "--json", &file]);
    assert_eq!(first.code, 1, "{}", first.transcript());
    let run_id = started(&first);

    std::fs::write(dir.path().join("fixed"), "").unwrap();
    let child = Ripcord::new()
        .state(&state)
        .args(["resume", &run_id])
        .spawn();
    wait_alive(&format!("{d}/go"));
    kill_9(child, &format!("{d}/go"));
    std::thread::sleep(GAP);

    std::fs::write(dir.path().join("go"), "").unwrap();
    let last = ripcord(&state, &["resume", &run_id, "-i", "target=second"]);
    assert_eq!(last.code, 0, "{}", last.transcript());
    (dir, run_id)
}

#[test]
fn a_crash_and_the_wait_after_it_are_in_the_wall_time_and_the_rto_is_judged_on_it() {
    let (dir, run_id) = three_sessions();
    let state = dir.path().join("state");
    let r = json(&state, &run_id);
    let sessions = r["sessions"].as_array().unwrap();
    let ends: Vec<(&str, &str)> = sessions
        .iter()
        .map(|s| (s["kind"].as_str().unwrap(), s["end"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ends,
        [
            ("run", "failed"),
            ("resume", "crashed"),
            ("resume", "finished")
        ]
    );
    // The crashed session ends at its last record; the gap after it is in the total.
    let crashed_end = sessions[1]["end_ms"].as_u64().unwrap();
    let resumed = sessions[2]["start_ms"].as_u64().unwrap();
    assert!(
        resumed - crashed_end >= GAP.as_millis() as u64,
        "gap {} ms",
        resumed - crashed_end
    );
    let wall = r["wall_ms"].as_u64().unwrap();
    assert!(wall >= resumed, "wall {wall} covers the gap");
    assert_eq!(wall, sessions[2]["end_ms"].as_u64().unwrap());
    assert!(
        sessions[1]["ended_at"].as_str().unwrap() < sessions[2]["started_at"].as_str().unwrap()
    );
    // Every step took milliseconds; the failover took more than 2 s of wall-clock time.
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["rto_met"], false);
    // The input given on the last resume is that session's, and the step ran with it.
    assert_eq!(sessions[2]["inputs"]["target"], "second");
    assert_eq!(sessions[0]["inputs"], serde_json::json!({}));
    assert_eq!(r["inputs"]["target"], "first", "as the run started");
    assert_eq!(step(&r, "slow")["outputs"]["target"], "second");

    // slow: in doubt in the crashed session, run again (idempotent) in the last.
    let slow = step(&r, "slow");
    let tries: Vec<(u64, &str)> = slow["tries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["session"].as_u64().unwrap(),
                t["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tries, [(2, "in doubt"), (3, "succeeded")]);
    assert_eq!(slow["attempts"], 2);

    let text = report(&state, &run_id, "text");
    for wanted in [
        "SUCCEEDED in",
        "3 sessions (1 crashed)",
        "2. resume by",
        "crashed (its journal stops here: no end was recorded)",
        "inputs changed: target=second",
        "gap of 3",
        "rto        2s: MISSED by",
        "slow (session 2, attempt 1) in doubt",
    ] {
        assert!(text.contains(wanted), "{wanted:?} in:\n{text}");
    }
    for (format, wanted) in [
        ("md", "crashed (its journal stops here"),
        ("junit", "<property name=\"session.2\" value=\"resume by "),
        ("junit", "<property name=\"rto_met\" value=\"false\"/>"),
        (
            "html",
            "<dd id=\"rto\"><span class=\"missed\">2s: MISSED by",
        ),
    ] {
        let out = report(&state, &run_id, format);
        assert!(out.contains(wanted), "{format}: {wanted:?} in:\n{out}");
    }
    // `runs` agrees: three sessions, one crashed, the RTO missed.
    let runs = ripcord(&state, &["runs", "--json"]);
    let runs: Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(runs[0]["sessions"], 3);
    assert_eq!(runs[0]["crashed"], 1);
    assert_eq!(runs[0]["rto_met"], false);
    let table = ripcord(&state, &["runs"]).stdout;
    assert!(table.contains("3 (1✕)"), "{table}");
}

#[test]
fn a_failure_resumed_past_stays_in_every_format_with_its_stderr() {
    let (dir, run_id) = three_sessions();
    let state = dir.path().join("state");
    let r = json(&state, &run_id);
    let token = step(&r, "token");
    assert_eq!(token["status"], "succeeded");
    assert_eq!(
        token["attempts"], 2,
        "one try in session 1, one in session 2"
    );
    let first = &token["tries"][0];
    assert_eq!(first["session"], 1);
    assert_eq!(first["status"], "failed");
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 1"),
        "{first}"
    );
    assert!(
        first["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("HTTP 401: bad token"),
        "{first}"
    );
    assert_eq!(token["tries"][1]["status"], "succeeded");
    assert_eq!(token["outputs"]["lsn"], "0/3000060");
    // The step said it again when it ran again: its last word holds, alone.
    assert_eq!(
        r["step_notes"],
        serde_json::json!([{ "step": "token", "note": "data-loss window: none" }])
    );
    for format in ["text", "md", "html", "junit"] {
        let out = report(&state, &run_id, format);
        assert!(
            out.contains("HTTP 401: bad token"),
            "{format} keeps the earlier failure:\n{out}"
        );
        assert!(
            out.contains("0/3000060"),
            "{format} shows the output:\n{out}"
        );
    }
    let junit = report(&state, &run_id, "junit");
    let case = junit_case(&junit, "token");
    assert!(
        case.contains("<system-out>session 1, attempt 1: failed"),
        "{case}"
    );
}

/// The rollback's session says who ran it and when (wall clock, after the wait), its forced
/// reason is in every format, and `runs` shows and filters the run as rolled back.
#[test]
fn a_forced_rollback_names_who_when_and_why_and_runs_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "back.yaml",
        r#"version: 1
name: back
rto: 1h
steps:
  - id: promote
    irreversible: true
    uses: shell.run
    with: { script: "true" }
    undo: { uses: shell.run, with: { script: "true" } }
  - id: check
    needs: [promote]
    uses: shell.run
    with: { script: "echo 'still read-only' >&2; exit 1" }
"#,
    );
    let run = ripcord(&state, &["run", "--json", &file]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let run_id = started(&run);
    let other = write(
        dir.path(),
        "other.yaml",
        "version: 1\nname: other\nsteps:\n  - { id: a, uses: shell.run, with: { script: \"true\" } }\n",
    );
    assert_eq!(ripcord(&state, &["run", &other]).code, 0);
    std::thread::sleep(Duration::from_millis(1500));
    let reason = "drill: back to site A";
    let back = ripcord(
        &state,
        &["rollback", &run_id, "--force", "--reason", reason],
    );
    assert_eq!(back.code, 0, "{}", back.transcript());

    let r = json(&state, &run_id);
    let sessions = r["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[1]["kind"], "rollback");
    assert_eq!(sessions[1]["by"], crate::support::whoami());
    assert!(
        sessions[1]["start_ms"].as_u64().unwrap() >= sessions[0]["end_ms"].as_u64().unwrap() + 1000,
        "the rollback ran 1.5 s after the run ended: {sessions:?}"
    );
    let rb = &r["rollback"];
    assert_eq!(rb["status"], "succeeded");
    assert_eq!(rb["sessions"], serde_json::json!([2]));
    assert_eq!(rb["forced"]["reason"], reason);
    assert_eq!(rb["at"], sessions[1]["started_at"]);
    let undo_at = rb["actions"][0]["t_ms"].as_u64().unwrap();
    assert!(undo_at >= sessions[1]["start_ms"].as_u64().unwrap());
    // Fast, but rolled back: the RTO was not reached.
    assert_eq!(r["rto_met"], false);
    for format in ["text", "md", "html", "junit"] {
        let out = report(&state, &run_id, format);
        assert!(out.contains(reason), "{format}:\n{out}");
        assert!(out.contains("FORCED ("), "{format}:\n{out}");
        // Past the promotion: what it did stands, and every format says so.
        assert!(
            out.contains("forced past irreversible step promote started"),
            "{format}:\n{out}"
        );
    }
    assert!(report(&state, &run_id, "junit").contains("<testcase name=\"undo promote\""));
    assert!(report(&state, &run_id, "text").contains("ROLLED BACK (succeeded, forced)"));

    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["runs", "--json"];
        all.extend_from_slice(args);
        let out = ripcord(&state, &all);
        assert_eq!(out.code, 0, "{}", out.transcript());
        let rows: Value = serde_json::from_str(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--status", "rolled-back"]), [run_id.as_str()]);
    assert_eq!(
        ids(&["--status", "failed", "--runbook", "back"]),
        [run_id.as_str()]
    );
    assert_eq!(ids(&["--runbook", "other"]).len(), 1);
    assert!(ids(&["--status", "succeeded", "--runbook", "back"]).is_empty());
    let table = ripcord(&state, &["runs"]).stdout;
    assert!(table.contains("yes, forced"), "{table}");
    let bad = ripcord(&state, &["runs", "--status", "gone"]);
    assert_eq!(bad.code, 2, "{}", bad.transcript());
}

/// An interrupted session ends "interrupted" by its signal, its step's try "cancelled"; on
/// resume the step is said to have been cancelled, not "in doubt", and its count goes on.
#[test]
fn an_interrupted_session_and_its_cancelled_try_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "int.yaml",
        &format!(
            "version: 1\nname: int\nsteps:\n  - id: wait\n    idempotent: true\n    uses: shell.run\n    with: {{ script: \"if [ ! -f {d}/go ]; then sleep 60; fi\" }}\n"
        ),
    );
    let child = Ripcord::new().state(&state).args(["run", &file]).spawn();
    wait_alive(&format!("{d}/go"));
    // SAFETY: kill(2) on a child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    std::fs::write(dir.path().join("go"), "").unwrap();
    let run_id = run_id(&state);
    let resumed = ripcord(&state, &["resume", &run_id]);
    assert_eq!(resumed.code, 0, "{}", resumed.transcript());
    let r = json(&state, &run_id);
    assert_eq!(r["sessions"][0]["end"], "interrupted");
    assert_eq!(r["sessions"][0]["signal"], "SIGINT");
    assert_eq!(r["sessions"][1]["end"], "finished");
    let wait = step(&r, "wait");
    assert_eq!(wait["tries"][0]["status"], "cancelled");
    assert_eq!(wait["tries"][1]["status"], "succeeded");
    assert_eq!(wait["attempts"], 2);
    let text = report(&state, &run_id, "text");
    let interrupted = text.find("interrupted by SIGINT").expect(&text);
    let resume = text.find("2. resume by").expect(&text);
    assert!(interrupted < resume, "in the order it happened:\n{text}");
    assert!(
        text.contains("wait was cancelled by an interrupt (its effect is unknown): run again"),
        "{text}"
    );
}

/// The HTML page as a browser renders it (Debian's headless chromium): the answer is above the
/// fold of a 1280×800 window, every try is a bar wide enough to see, failures are red, and
/// the wait after the crash is a shaded band.
#[test]
fn the_html_report_renders_the_answer_above_the_fold_in_chromium() {
    let (dir, run_id) = three_sessions();
    let state = dir.path().join("state");
    let html = report(&state, &run_id, "html");
    let m = measure_in_chromium(dir.path(), &html);

    // Above the fold: the whole verdict box, with the RTO judged on wall-clock time, what
    // failed (the earlier failure and the crash) and the sessions.
    assert!(m["verdict"]["bottom"].as_f64().unwrap() <= 800.0, "{m}");
    assert!(m["rto"]["text"].as_str().unwrap().contains("MISSED"), "{m}");
    let failed = m["failed"]["text"].as_str().unwrap();
    assert!(
        failed.contains("bad token") && failed.contains("in doubt"),
        "{failed}"
    );
    assert!(
        m["sessions"]["text"].as_str().unwrap().contains("crashed"),
        "{m}"
    );
    assert!(
        m["result"]["text"]
            .as_str()
            .unwrap()
            .starts_with("SUCCEEDED in")
    );

    // The timeline: three session bands, one shaded gap, a bar per try, each visible.
    assert_eq!(m["bands"], 3);
    let gaps = m["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{m}");
    assert!(gaps[0].as_f64().unwrap() >= 60.0);
    let tries = m["tries"].as_array().unwrap();
    assert_eq!(tries.len(), 4, "token ×2, slow ×2: {m}");
    for t in tries {
        assert!(
            t["width"].as_f64().unwrap() >= 3.9,
            "a bar too thin to see: {t}"
        );
    }
    let fill = |cls: &str| -> Vec<String> {
        tries
            .iter()
            .filter(|t| t["cls"].as_str().unwrap().contains(cls))
            .map(|t| t["fill"].as_str().unwrap().to_string())
            .collect()
    };
    let (failed, succeeded) = (fill("failed"), fill("succeeded"));
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0], "rgb(207, 34, 46)", "failed tries are red");
    assert!(succeeded.iter().all(|f| f != &failed[0]), "{succeeded:?}");
}

/// A running session is not a crash: while a run is at work, `runs` and `report` say running,
/// and its step is running, not in doubt.
#[test]
fn a_run_at_work_is_running_not_crashed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "live.yaml",
        &format!(
            "version: 1\nname: live\nsteps:\n  - id: wait\n    uses: shell.run\n    with: {{ script: \"while [ ! -f {d}/go ]; do sleep 0.05; done\" }}\n"
        ),
    );
    let child = Ripcord::new().state(&state).args(["run", &file]).spawn();
    wait_alive(&format!("{d}/go"));
    let run_id = run_id(&state);
    let r = json(&state, &run_id);
    assert_eq!(r["status"], "running", "{r}");
    assert_eq!(r["sessions"][0]["end"], "running");
    assert_eq!(step(&r, "wait")["status"], "running");
    let runs: Value = serde_json::from_str(&ripcord(&state, &["runs", "--json"]).stdout).unwrap();
    assert_eq!(runs[0]["status"], "running");
    assert_eq!(runs[0]["crashed"], 0);
    std::fs::write(dir.path().join("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let r = json(&state, &run_id);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["sessions"][0]["end"], "finished");
}

/// A rollback killed in the middle of an undo, then run again later: its crashed session ends
/// at its own last record (the note the second rollback writes is the second's), the wait
/// between them is a gap, and the undo in doubt is shown as such before it is done again.
#[test]
fn a_rollback_killed_mid_undo_shows_the_undo_in_doubt_and_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "undo.yaml",
        &format!(
            r#"version: 1
name: undo
steps:
  - id: drain
    uses: shell.run
    with: {{ script: "true" }}
    undo:
      uses: shell.run
      with: {{ script: "while [ ! -f {d}/go ]; do sleep 0.05; done" }}
  - id: check
    needs: [drain]
    uses: shell.run
    with: {{ script: "exit 1" }}
"#
        ),
    );
    let run = ripcord(&state, &["run", "--json", &file]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let run_id = started(&run);
    let child = Ripcord::new()
        .state(&state)
        .args(["rollback", &run_id])
        .spawn();
    wait_alive(&format!("{d}/go"));
    kill_9(child, &format!("{d}/go"));
    std::thread::sleep(Duration::from_millis(1500));
    // Between the two: the undo is in doubt, and every format warns of it.
    let r = json(&state, &run_id);
    assert_eq!(r["rollback"]["actions"][0]["status"], "in doubt", "{r}");
    assert_eq!(r["rollback"]["status"], "incomplete");
    for format in ["text", "md", "html", "junit"] {
        let out = report(&state, &run_id, format);
        assert!(
            out.contains("the undo of drain in doubt"),
            "{format}:\n{out}"
        );
    }
    std::fs::write(dir.path().join("go"), "").unwrap();
    let again = ripcord(&state, &["rollback", &run_id]);
    assert_eq!(again.code, 0, "{}", again.transcript());

    let r = json(&state, &run_id);
    let sessions = r["sessions"].as_array().unwrap();
    let ends: Vec<(&str, &str)> = sessions
        .iter()
        .map(|s| (s["kind"].as_str().unwrap(), s["end"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ends,
        [
            ("run", "failed"),
            ("rollback", "crashed"),
            ("rollback", "finished")
        ]
    );
    let (crashed_end, next) = (
        sessions[1]["end_ms"].as_u64().unwrap(),
        sessions[2]["start_ms"].as_u64().unwrap(),
    );
    assert!(
        next >= crashed_end + 1000,
        "the wait is a gap: {sessions:?}"
    );
    assert!(
        sessions[1]["ended_at"].as_str().unwrap() < sessions[2]["started_at"].as_str().unwrap()
    );
    let undos: Vec<(u64, &str)> = r["rollback"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["session"].as_u64().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(undos, [(2, "in doubt"), (3, "succeeded")]);
    assert_eq!(r["rollback"]["status"], "succeeded");
    // Done in the end: no warning left.
    assert!(!report(&state, &run_id, "text").contains("WARNING"));
}

/// A step taken as done after a crash (`--skip-in-doubt`) is a skipped testcase that says so,
/// with its in-doubt try in the testcase's output.
#[test]
fn junit_says_a_step_was_taken_as_done_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "skip.yaml",
        &format!(
            "version: 1\nname: skip\nsteps:\n  - id: promote\n    uses: shell.run\n    with: {{ script: \"while [ ! -f {d}/go ]; do sleep 0.05; done\" }}\n"
        ),
    );
    let child = Ripcord::new().state(&state).args(["run", &file]).spawn();
    wait_alive(&format!("{d}/go"));
    kill_9(child, &format!("{d}/go"));
    let run_id = run_id(&state);
    let out = ripcord(&state, &["resume", &run_id, "--skip-in-doubt"]);
    assert_eq!(out.code, 0, "{}", out.transcript());
    let junit = report(&state, &run_id, "junit");
    let case = junit_case(&junit, "promote");
    assert!(
        case.contains("<skipped message=\"promote was in doubt: taken as done (--skip-in-doubt)"),
        "{case}"
    );
    assert!(
        case.contains("<system-out>session 1, attempt 1: in doubt"),
        "{case}"
    );
}

/// What a step printed cannot forge a report: in Markdown it stays in its code block (a fence
/// longer than any run of backticks in it), in text no escape sequence reaches the terminal.
#[test]
fn step_output_cannot_forge_markdown_or_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "evil.yaml",
        r#"version: 1
name: evil
steps:
  - id: evil
    uses: shell.run
    with:
      script: |
        printf 'x=`a`|b\n' >> "$RIPCORD_OUTPUT"
        printf '```\n## RTO MET\n| Result | **SUCCEEDED** |\n<script>alert(1)</script>\n\033[2J\033]0;owned\007\rX\n' >&2
        exit 1
"#,
    );
    let run = ripcord(&state, &["run", "--json", &file]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let run_id = started(&run);
    let md = report(&state, &run_id, "md");
    let open = md.find("````text\n").expect(&md);
    let close = open + md[open..].find("\n````\n").expect(&md);
    let forged = md.find("\n## RTO MET\n").expect(&md);
    assert!(open < forged && forged < close, "outside its block:\n{md}");
    assert!(
        !md[..open].contains("<script>") && !md[close..].contains("<script>"),
        "{md}"
    );
    // The output's backticks and bar stay inside their code span and cell.
    assert!(md.contains("| ` x ` | `` `a`\\|b `` |"), "{md}");
    let text = report(&state, &run_id, "text");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\r'),
        "{text:?}"
    );
    assert!(text.contains("\\u{1b}[2J"), "shown, not sent: {text}");
}

/// A hand-edited journal (times past the year 9999, a start that is not a time, a clock that
/// went back) is reported without a panic, and `runs` still lists every run.
#[test]
fn a_journal_with_impossible_times_is_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "t.yaml",
        "version: 1\nname: t\nsteps:\n  - { id: a, uses: shell.run, with: { script: \"exit 1\" } }\n",
    );
    let run = ripcord(&state, &["run", "--json", &file]);
    let run_id = started(&run);
    assert_eq!(ripcord(&state, &["resume", &run_id]).code, 1);
    let path = state.join("runs").join(&run_id).join("journal.jsonl");
    let mut records = crate::support::records(&state).unwrap();
    for r in &mut records {
        match r["kind"].as_str().unwrap() {
            "run_started" => r["hash"] = Value::from("aéééééééééééééé"),
            "resumed" => r["at"] = Value::from("yesterday"),
            "step_finished" => r["t_ms"] = Value::from(u64::MAX),
            _ => {}
        }
    }
    let text: String = records
        .iter()
        .map(|r| {
            let json = r.to_string();
            format!("{json}\t{:08x}\n", crc32fast::hash(json.as_bytes()))
        })
        .collect();
    std::fs::write(&path, text).unwrap();
    for format in ["text", "md", "json", "junit", "html"] {
        let out = ripcord(&state, &["report", &run_id, "--format", format]);
        assert_eq!(out.code, 0, "{format}: {}", out.transcript());
    }
    assert!(report(&state, &run_id, "text").contains("recorded a start that is not a time"));
    let runs = ripcord(&state, &["runs"]);
    assert_eq!(runs.code, 0, "{}", runs.transcript());
    assert!(runs.stdout.contains(&run_id));
}

/// A secret printed across many lines of a failed try's stderr is masked before the tail is
/// cut, so no part of it survives in the journal or in any report.
#[test]
fn a_multi_line_secret_is_masked_before_a_stderr_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let lines: Vec<String> = (0..30).map(|i| format!("keyline-{i:02}-Qx7")).collect();
    let secret = lines.join("\n");
    let file = write(
        dir.path(),
        "leak.yaml",
        r#"version: 1
name: leak
inputs:
  key: { type: string, secret: true, env: LEAK_KEY }
steps:
  - id: leak
    uses: shell.run
    retry: { attempts: 2, delay: 10ms }
    with: { script: 'printf "%s\n" "$KEY" >&2; exit 1', env: { KEY: "${{ inputs.key }}" } }
"#,
    );
    let run = Ripcord::new()
        .state(&state)
        .env("LEAK_KEY", &secret)
        .args(["run", "--json", &file])
        .run();
    assert_eq!(run.code, 1, "{}", run.transcript());
    let run_id = started(&run);
    let journal =
        std::fs::read_to_string(state.join("runs").join(&run_id).join("journal.jsonl")).unwrap();
    let mut all = vec![journal, run.stdout, run.stderr];
    for format in ["text", "md", "json", "junit", "html"] {
        all.push(report(&state, &run_id, format));
    }
    for text in &all {
        for line in &lines {
            assert!(!text.contains(line.as_str()), "{line} leaked:\n{text}");
        }
    }
    assert!(all[0].contains("stderr_tail"), "the tail is kept, masked");
}

/// Twelve failing steps with long errors, one of 3,000 characters without a space: the answer
/// still fits above the fold of a 1280×800 window, and nothing widens the page.
#[test]
fn the_html_verdict_stays_above_the_fold_with_many_long_failures() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut runbook = String::from("version: 1\nname: many\nsteps:\n");
    for i in 0..12 {
        let width = if i == 0 { 3000 } else { 300 };
        runbook.push_str(&format!(
            "  - {{ id: check-{i:02}, uses: shell.run, on_failure: continue, with: {{ script: \"printf '%{width}s' | tr ' ' x >&2; exit 1\" }} }}\n"
        ));
    }
    let file = write(dir.path(), "many.yaml", &runbook);
    let run = ripcord(&state, &["run", "--json", &file]);
    // Each failure is let through (`on_failure: continue`): the run itself ends.
    assert_eq!(run.code, 0, "{}", run.transcript());
    let run_id = started(&run);
    let m = measure_in_chromium(dir.path(), &report(&state, &run_id, "html"));
    assert!(m["verdict"]["bottom"].as_f64().unwrap() <= 800.0, "{m}");
    assert!(
        m["width"].as_f64().unwrap() <= 1280.0,
        "the page got wider: {m}"
    );
    assert!(
        m["failed"]["text"].as_str().unwrap().contains("and 7 more"),
        "{m}"
    );
}
