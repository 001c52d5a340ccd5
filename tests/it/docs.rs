//! The documentation cannot drift from the code: docs/format.md names every key of the JSON
//! Schema (and no other), every command, and each command's exit codes; README's command table
//! gives the same codes; and every documented code is produced by a real invocation here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Output, Ripcord, records, repo, run_id, write};

fn format_md() -> String {
    std::fs::read_to_string(repo().join("docs/format.md")).unwrap()
}

/// The rows of the markdown table that follows `heading`, split into cells.
fn table_after(text: &str, heading: &str) -> Vec<Vec<String>> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no `{heading}`"));
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and rule
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

#[test]
fn the_format_reference_names_every_schema_key_and_no_other() {
    let out = Ripcord::new().args(["schema"]).run();
    let schema: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut from_schema = BTreeSet::new();
    let mut add = |where_: &str, obj: &Value| {
        for key in obj["properties"].as_object().unwrap().keys() {
            from_schema.insert((where_.to_string(), key.clone()));
        }
    };
    add("runbook", &schema);
    for (def, where_) in [
        ("Step", "step"),
        ("StepDefaults", "defaults"),
        ("Retry", "retry"),
        ("Sim", "sim"),
        ("Undo", "undo"),
        ("InputDecl", "input"),
    ] {
        add(where_, &schema["$defs"][def]);
    }
    let documented: BTreeSet<(String, String)> = table_after(&format_md(), "## Every key")
        .into_iter()
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect();
    let missing: Vec<_> = from_schema.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&from_schema).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/format.md's key table and the schema differ: undocumented {missing:?}, not in the schema {extra:?}"
    );
}

/// Command -> exit codes, from docs/format.md.
fn documented_codes() -> BTreeMap<String, BTreeSet<i32>> {
    table_after(&format_md(), "Per command:")
        .into_iter()
        .map(|row| {
            let codes = row[1].split(", ").map(|c| c.parse().unwrap()).collect();
            (row[0].clone(), codes)
        })
        .collect()
}

#[test]
fn every_command_is_documented_with_the_same_exit_codes_in_readme_and_reference() {
    let help = Ripcord::new().args(["--help"]).run().stdout;
    let commands: BTreeSet<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    let documented = documented_codes();
    assert_eq!(
        commands,
        documented.keys().cloned().collect::<BTreeSet<_>>(),
        "docs/format.md's per-command exit table"
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut in_readme: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for row in table_after(&readme, "| command | what it does | exit |") {
        let command = row[0].split_whitespace().nth(1).unwrap().to_string();
        let codes = row[2]
            .split([',', ' ', ';'])
            .filter_map(|w| w.parse::<i32>().ok());
        in_readme.entry(command).or_default().extend(codes);
    }
    assert_eq!(
        in_readme, documented,
        "README's exit codes against docs/format.md"
    );
}

fn wait_for(state: &Path, kind: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !records(state)
        .unwrap_or_default()
        .iter()
        .any(|r| r["kind"] == kind)
    {
        assert!(std::time::Instant::now() < deadline, "no {kind}");
        std::thread::sleep(Duration::from_millis(30));
    }
}

fn interrupted(child: std::process::Child) -> Output {
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on a child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Each documented (command, code) pair, produced by a real invocation.
#[test]
fn every_documented_exit_code_happens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = write(
        d,
        "ok.yaml",
        "version: 1\nname: ok\nsteps:\n- { id: a, uses: shell.run, with: { argv: [\"true\"] }, undo: { uses: shell.run, with: { argv: [\"true\"] } } }\n- { id: b, needs: [a], uses: shell.run, with: { argv: [sh, -c, 'test -e ok'] } }\n",
    );
    let bad_undo = write(
        d,
        "bad-undo.yaml",
        "version: 1\nname: bad-undo\nsteps:\n- { id: a, uses: shell.run, with: { argv: [\"true\"] }, undo: { uses: shell.run, with: { argv: [\"false\"] } } }\n- { id: b, needs: [a], uses: shell.run, with: { argv: [\"false\"] } }\n",
    );
    let slow = write(
        d,
        "slow.yaml",
        "version: 1\nname: slow\nsteps:\n- { id: a, uses: shell.run, with: { argv: [\"true\"] }, undo: { uses: shell.run, with: { argv: [sleep, \"30\"] } } }\n- { id: s, needs: [a], uses: shell.run, with: { argv: [sleep, \"30\"] } }\n",
    );
    let gate = write(
        d,
        "gate.yaml",
        "version: 1\nname: gate\nsteps:\n- { id: gate, uses: approval.ask, timeout: 60s, with: { prompt: go? } }\n",
    );
    let invalid = repo()
        .join("tests/fixtures/invalid/cycle.yaml")
        .display()
        .to_string();
    let valid = repo()
        .join("tests/fixtures/valid/minimal.yaml")
        .display()
        .to_string();
    let n = std::cell::Cell::new(0);
    let fresh = || {
        n.set(n.get() + 1);
        d.join(format!("state{}", n.get()))
    };
    let in_dir = |state: &Path| Ripcord::new().state(state).current_dir(d);
    // A run of `file` that fails (exit 1), for resume and rollback.
    let failed = |file: &str| {
        let state = fresh();
        assert_eq!(in_dir(&state).args(["run", file]).run().code, 1);
        state
    };
    let mut seen: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    let mut check = |command: &str, want: i32, out: Output| {
        assert_eq!(
            out.code,
            want,
            "{command} should exit {want}: {}",
            out.transcript()
        );
        seen.entry(command.to_string()).or_default().insert(want);
    };

    check(
        "validate",
        0,
        Ripcord::new().args(["validate", &valid]).run(),
    );
    check(
        "validate",
        2,
        Ripcord::new().args(["validate", &invalid]).run(),
    );
    check("plan", 0, Ripcord::new().args(["plan", &valid]).run());
    check("plan", 2, Ripcord::new().args(["plan", &invalid]).run());
    check("graph", 0, Ripcord::new().args(["graph", &valid]).run());
    check("graph", 2, Ripcord::new().args(["graph", &invalid]).run());
    check("plugins", 0, Ripcord::new().args(["plugins"]).run());
    check("schema", 0, Ripcord::new().args(["schema"]).run());

    // run
    check(
        "run",
        0,
        in_dir(&fresh()).args(["run", "--dry-run", &ok]).run(),
    );
    check("run", 1, in_dir(&fresh()).args(["run", &ok]).run());
    check("run", 2, in_dir(&fresh()).args(["run", &invalid]).run());
    let state = fresh();
    let child = in_dir(&state).args(["run", &slow]).spawn();
    wait_for(&state, "step_started");
    let locked = in_dir(&state).args(["run", &slow]).run();
    check("run", 3, interrupted(child));
    check("run", 4, locked);

    // resume
    let state = failed(&ok);
    std::fs::write(d.join("ok"), "").unwrap();
    check(
        "resume",
        0,
        in_dir(&state).args(["resume", &run_id(&state)]).run(),
    );
    std::fs::remove_file(d.join("ok")).unwrap();
    let state = failed(&ok);
    check(
        "resume",
        1,
        in_dir(&state).args(["resume", &run_id(&state)]).run(),
    );
    check(
        "resume",
        2,
        in_dir(&state).args(["resume", "no-such-run"]).run(),
    );
    let state = fresh();
    let child = in_dir(&state).args(["run", &slow]).spawn();
    wait_for(&state, "step_started");
    let id = run_id(&state);
    check("resume", 4, in_dir(&state).args(["resume", &id]).run());
    assert_eq!(interrupted(child).code, 3);
    let child = in_dir(&state)
        .args(["resume", &id, "--retry-in-doubt"])
        .spawn();
    wait_for(&state, "resumed");
    check("resume", 3, interrupted(child));

    // rollback
    let state = failed(&ok);
    check(
        "rollback",
        0,
        in_dir(&state).args(["rollback", &run_id(&state)]).run(),
    );
    let state = failed(&bad_undo);
    check(
        "rollback",
        1,
        in_dir(&state).args(["rollback", &run_id(&state)]).run(),
    );
    check(
        "rollback",
        2,
        in_dir(&state).args(["rollback", "no-such-run"]).run(),
    );
    let state = fresh();
    let child = in_dir(&state).args(["run", &slow]).spawn();
    wait_for(&state, "step_started");
    let id = run_id(&state);
    check("rollback", 4, in_dir(&state).args(["rollback", &id]).run());
    assert_eq!(interrupted(child).code, 3);
    let child = in_dir(&state).args(["rollback", &id]).spawn();
    wait_for(&state, "undo_started");
    check("rollback", 3, interrupted(child));

    // approve
    let state = fresh();
    let child = in_dir(&state).args(["run", &gate]).spawn();
    wait_for(&state, "approval_waiting");
    let id = run_id(&state);
    check(
        "approve",
        2,
        in_dir(&state).args(["approve", &id, "nope"]).run(),
    );
    // Asked not to wait at all: the run has not taken the answer yet (it does a moment later).
    check(
        "approve",
        1,
        in_dir(&state)
            .args(["approve", &id, "gate", "--wait", "0s"])
            .run(),
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "the posted answer approved it");
    let state = fresh();
    let child = in_dir(&state).args(["run", &gate]).spawn();
    wait_for(&state, "approval_waiting");
    check(
        "approve",
        0,
        in_dir(&state)
            .args(["approve", &run_id(&state), "gate"])
            .run(),
    );
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
    let state = fresh();
    let mut child = in_dir(&state).args(["run", &gate]).spawn();
    wait_for(&state, "approval_waiting");
    child.kill().unwrap();
    child.wait().unwrap();
    check(
        "approve",
        4,
        in_dir(&state)
            .args(["approve", &run_id(&state), "gate"])
            .run(),
    );

    // runs, report
    check("runs", 0, in_dir(&state).args(["runs"]).run());
    let file_state = d.join("not-a-dir");
    std::fs::write(&file_state, "").unwrap();
    check("runs", 2, in_dir(&file_state).args(["runs"]).run());
    check(
        "report",
        0,
        in_dir(&state).args(["report", &run_id(&state)]).run(),
    );
    check(
        "report",
        2,
        in_dir(&state).args(["report", "no-such-run"]).run(),
    );
    check(
        "report",
        2,
        in_dir(&state)
            .args(["report", &run_id(&state), "--format", "pdf"])
            .run(),
    );

    assert_eq!(seen, documented_codes(), "every documented code, produced");
}

/// Every runbook shipped dry-runs (fixtures.rs validates them, without a warning), and every
/// runbook and module names only files that exist (a program given by path, a module).
#[test]
fn every_example_dry_runs_and_references_only_files_that_exist() {
    let mut files: Vec<std::path::PathBuf> = ["runbooks", "modules"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo().join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let base = file.parent().unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for word in line.split(['[', ',', ' ', '"', '\'', ']']) {
                let looks_like_path = word.starts_with("./") || word.starts_with("../");
                if looks_like_path && !word.contains("${{") {
                    let target = if word.ends_with(".yaml") {
                        base.join(word)
                    } else {
                        repo().join(word)
                    };
                    assert!(
                        target.exists(),
                        "{} names {word}, which does not exist",
                        file.display()
                    );
                }
            }
        }
        let module = file.starts_with(repo().join("modules"));
        if !module {
            let state = tempfile::tempdir().unwrap();
            let mut dry = Ripcord::new()
                .state(state.path())
                .args(["run", "--dry-run", "--seed", "1", file.to_str().unwrap()])
                .env("DNS_API_TOKEN", "dummy");
            if text.contains("\n  reason:") {
                dry = dry.args(["-i", "reason=docs test"]);
            }
            // The PostgreSQL runbook takes its sites' values from a file, as documented.
            if let Some(at) = text.find("--input-file runbooks/inputs/") {
                let file = text[at + "--input-file ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap();
                dry = dry.args(["--input-file", file]);
            }
            let dry = dry.run();
            assert_eq!(dry.code, 0, "{}: {}", file.display(), dry.transcript());
        }
    }
}

/// docs/expressions.md: every expression in its tables, evaluated as ripcord evaluates them,
/// gives the value the table shows.
#[test]
fn every_documented_expression_gives_what_the_reference_says() {
    let text = std::fs::read_to_string(repo().join("docs/expressions.md")).unwrap();
    let env = ripcord::expr::render::environment();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for heading in ["## Operators", "## Tests", "## Filters", "## Functions"] {
        for row in table_after(&text, heading) {
            let [expr, gives] = &row[..] else { continue };
            let expr = expr.trim_matches('`').replace("\\|", "|");
            let want: Value = serde_json::from_str(gives.trim_matches('`'))
                .unwrap_or_else(|e| panic!("{gives}: {e}"));
            // `nothing` is a name no context has: what `undefined` is made of.
            let got = env
                .compile_expression(&expr)
                .and_then(|c| c.eval(minijinja::context! {}))
                .map_err(|e| e.to_string())
                .and_then(|v| serde_json::to_value(&v).map_err(|e| e.to_string()));
            match got {
                Ok(v) if v == want => checked += 1,
                other => wrong.push(format!("{expr}: {other:?}, documented {want}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(checked > 100, "{checked} rows");
}
