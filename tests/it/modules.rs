//! Modules: `include:` inlines a runbook file's steps under a prefix. The library in modules/
//! is dry-run here one module at a time, and tests/fixtures/modules/twice.yaml includes the
//! same module twice (and one module nested in another).

use std::collections::HashMap;

use serde_json::Value;

use crate::support::{Output, Ripcord, repo, write};

const TWICE: &str = "tests/fixtures/modules/twice.yaml";

fn dry_run(file: &str, inputs: &[&str], extra: &[&str]) -> Output {
    let state = tempfile::tempdir().expect("temp dir");
    let mut args = vec!["run", "--dry-run", "--json", "--seed", "1"];
    args.extend_from_slice(extra);
    for i in inputs {
        args.extend(["-i", i]);
    }
    args.push(file);
    Ripcord::new().state(state.path()).args(args).run()
}

/// Per finished step: (status, start ms, finish ms, outputs).
fn finished(out: &Output) -> HashMap<String, (String, u64, u64, Value)> {
    out.events()
        .into_iter()
        .filter(|e| e["kind"] == "step_finished")
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_string(),
                (
                    e["status"].as_str().unwrap().to_string(),
                    e["started_ms"].as_u64().unwrap_or_default(),
                    e["t_ms"].as_u64().unwrap(),
                    e["outputs"].clone(),
                ),
            )
        })
        .collect()
}

fn status(steps: &HashMap<String, (String, u64, u64, Value)>, id: &str) -> String {
    steps
        .get(id)
        .unwrap_or_else(|| panic!("no step `{id}` in {:?}", steps.keys()))
        .0
        .clone()
}

#[test]
fn the_same_module_included_twice_with_different_inputs_both_run() {
    let out = dry_run(TWICE, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.transcript());
    let steps = finished(&out);
    let ids = [
        "start",
        "a.say",
        "a.check",
        "b.say",
        "b.check",
        "nested.prepare",
        "nested.inner.say",
        "nested.inner.check",
        "both",
        "after-b",
    ];
    assert_eq!(steps.len(), ids.len(), "{:?}", steps.keys());
    for id in ids {
        assert_eq!(status(&steps, id), "succeeded", "{id}");
    }
    // Both copies start together once `start` (the includes' need) is done.
    assert_eq!(steps["a.say"].1, 1000);
    assert_eq!(steps["b.say"].1, 1000);
    // `both` asserted each copy's inputs through the module's outputs (a=web1, b=web2:3, and
    // the nested module's output through two levels). The module's own check sees its input:
    let dir = tempfile::tempdir().expect("temp dir");
    let zero = write(
        dir.path(),
        "zero.yaml",
        &format!(
            "version: 1\nname: zero\nsteps:\n  - id: c\n    include: {}\n    with: {{ server: s, weight: 0 }}\n",
            repo().join("tests/fixtures/modules/target.yaml").display()
        ),
    );
    let out = dry_run(&zero, &[], &[]);
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert_eq!(status(&finished(&out), "c.check"), "failed");
    assert!(out.stdout.contains("weight 0"), "{}", out.stdout);

    // For real: each copy's step ran with its own value.
    let state = tempfile::tempdir().expect("temp dir");
    let out = Ripcord::new()
        .state(state.path())
        .args(["run", "--json", "-i", "first=db1", TWICE])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let steps = finished(&out);
    assert_eq!(steps["a.say"].3["stdout"], "db1\n");
    assert_eq!(steps["b.say"].3["stdout"], "web2\n");
    assert_eq!(steps["nested.inner.say"].3["stdout"], "db1-inner\n");
    assert_eq!(steps["after-b"].3["stdout"], "web2\n\n");
}

#[test]
fn needs_on_an_include_and_its_dependents_wait_for_all_of_it() {
    let out = Ripcord::new().args(["plan", "--json", TWICE]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let plan: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let needs = |id: &str| -> Vec<String> {
        let step = plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no step {id}"));
        let mut n: Vec<String> = step["needs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    // The include's `needs` go to the module's first steps...
    assert_eq!(needs("a.say"), ["start"]);
    assert_eq!(needs("a.check"), ["a.say"]);
    // ...reading a module's output waits for all of it (its last steps)...
    assert_eq!(needs("nested.prepare"), ["a.check"]);
    assert_eq!(needs("both"), ["a.check", "b.check", "nested.inner.check"]);
    // ...and so does `needs: [b]`.
    assert_eq!(needs("after-b"), ["b.check"]);
    let modules = plan["modules"].as_array().unwrap();
    let ids: Vec<&str> = modules.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "nested", "nested.inner"]);
    assert_eq!(modules[3]["parent"], "nested");
    assert_eq!(modules[2]["steps"].as_array().unwrap().len(), 3);
    assert_eq!(modules[0]["file"], "tests/fixtures/modules/target.yaml");
}

#[test]
fn plan_and_graph_show_modules_as_groups() {
    for format in ["dot", "mermaid"] {
        let out = Ripcord::new()
            .args(["graph", "--format", format, TWICE])
            .run();
        assert_eq!(out.code, 0, "{}", out.transcript());
        insta::assert_snapshot!(format!("graph_{format}"), out.stdout);
    }
    let out = Ripcord::new().args(["plan", TWICE]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    insta::assert_snapshot!("plan_text", out.stdout);
}

#[test]
fn each_standard_module_dry_runs_on_its_own() {
    // haproxy-drain: the settle time is slept (virtually) only when given.
    let drain = [
        "socket=/run/haproxy/admin.sock",
        "backend=web",
        "server=web1",
    ];
    let out = dry_run("modules/haproxy-drain.yaml", &drain, &[]);
    assert_eq!(out.code, 0, "{}", out.transcript());
    let steps = finished(&out);
    assert_eq!(status(&steps, "set"), "succeeded");
    assert_eq!(status(&steps, "settle"), "skipped");
    let mut settled = drain.to_vec();
    settled.push("settle=2s");
    let out = dry_run("modules/haproxy-drain.yaml", &settled, &[]);
    assert_eq!(status(&finished(&out), "settle"), "succeeded");
    assert_eq!(out.summary()["duration_ms"], 2100);

    // haproxy-enable.
    let out = dry_run("modules/haproxy-enable.yaml", &drain, &[]);
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert_eq!(finished(&out)["set"].3["state"], "ready");

    // postgres-promote: the catch-up wait only for a switchover (primary given), and a failed
    // check stops it before the promotion.
    let standby = "standby=host=db2 user=postgres";
    let out = dry_run("modules/postgres-promote.yaml", &[standby], &[]);
    assert_eq!(out.code, 0, "{}", out.transcript());
    let steps = finished(&out);
    assert_eq!(status(&steps, "caught-up"), "skipped");
    assert_eq!(status(&steps, "promote"), "succeeded");
    assert_eq!(status(&steps, "writable"), "succeeded");
    let out = dry_run(
        "modules/postgres-promote.yaml",
        &[standby, "primary=host=db1 user=postgres"],
        &[],
    );
    let steps = finished(&out);
    assert_eq!(status(&steps, "caught-up"), "succeeded");
    assert!(steps["promote"].1 >= steps["caught-up"].2);
    let out = dry_run(
        "modules/postgres-promote.yaml",
        &[standby],
        &["--fail", "is-standby"],
    );
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(!finished(&out).contains_key("promote"));

    // http-health-gate: one probe a host, in parallel.
    let out = dry_run(
        "modules/http-health-gate.yaml",
        &["hosts=app1,app2,app3"],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.transcript());
    let steps = finished(&out);
    for host in ["app1", "app2", "app3"] {
        let (status, start, _, _) = &steps[&format!("probe[{host}]")];
        assert_eq!((status.as_str(), *start), ("succeeded", 0));
    }

    // vm-power-on: six VMs through the module's vcenter pool of 4, each then reachable.
    let out = dry_run(
        "modules/vm-power-on.yaml",
        &["vms=v1,v2,v3,v4,v5,v6", "datacenter=dc-dr"],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.transcript());
    let steps = finished(&out);
    let mut starts: Vec<u64> = (1..=6)
        .map(|n| steps[&format!("power-on[v{n}]")].1)
        .collect();
    starts.sort();
    assert_eq!(starts, [0, 0, 0, 0, 60_000, 60_000]);
    for n in 1..=6 {
        assert_eq!(status(&steps, &format!("reachable[v{n}]")), "succeeded");
    }
}

#[test]
fn modules_validate_on_their_own_without_a_warning() {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("modules"))
        .expect("modules/")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let out = Ripcord::new()
        .args(["validate", "--json"])
        .args(&files)
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
    for file in doc["files"].as_array().expect("files") {
        let diagnostics = file["diagnostics"].as_array().expect("diagnostics");
        assert!(diagnostics.is_empty(), "{}: {diagnostics:?}", file["file"]);
    }
}

#[test]
fn when_on_an_include_applies_to_each_of_its_steps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = repo().join("tests/fixtures/modules/target.yaml");
    let file = write(
        dir.path(),
        "when.yaml",
        &format!(
            "version: 1\nname: when\ninputs:\n  go: {{ type: boolean, default: false }}\nsteps:\n  - id: maybe\n    include: {}\n    when: \"${{{{ inputs.go }}}}\"\n    with: {{ server: s }}\n  - id: after\n    needs: [maybe]\n    uses: sleep.for\n    with: {{ duration: 1s }}\n",
            module.display()
        ),
    );
    let out = dry_run(&file, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.transcript());
    let steps = finished(&out);
    assert_eq!(status(&steps, "maybe.say"), "skipped");
    assert_eq!(status(&steps, "maybe.check"), "skipped");
    assert_eq!(status(&steps, "after"), "succeeded");
    let out = dry_run(&file, &["go=true"], &[]);
    let steps = finished(&out);
    assert_eq!(status(&steps, "maybe.say"), "succeeded");
    assert_eq!(status(&steps, "maybe.check"), "succeeded");
}

#[test]
fn a_module_for_each_fed_by_a_step_output_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = repo().join("modules/vm-power-on.yaml");
    let file = write(
        dir.path(),
        "late.yaml",
        &format!(
            "version: 1\nname: late\nsteps:\n  - id: list\n    uses: shell.run\n    with: {{ argv: [echo, a] }}\n  - id: vms\n    include: {}\n    with: {{ vms: \"${{{{ steps.list.outputs.stdout }}}}\", datacenter: dc }}\n",
            module.display()
        ),
    );
    let out = Ripcord::new().args(["validate", &file]).run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(out.stderr.contains("ripcord::for-each"), "{}", out.stderr);
    assert!(
        out.stderr.contains("must be known before the run"),
        "{}",
        out.stderr
    );
}

#[test]
fn resume_refuses_a_module_changed_since_the_run_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = write(
        dir.path(),
        "module.yaml",
        "version: 1\nname: module\nsteps:\n  - id: fail\n    uses: shell.run\n    with: { argv: [\"false\"] }\n",
    );
    write(
        dir.path(),
        "main.yaml",
        "version: 1\nname: main\nsteps:\n  - id: m\n    include: module.yaml\n",
    );
    let state = dir.path().join("state");
    // Named relatively here; resume names it by its absolute path: the same files.
    let out = Ripcord::new()
        .current_dir(dir.path())
        .state(&state)
        .args(["run", "--json", "main.yaml"])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    // Unchanged files are not "changed", however the runbook was named: resume runs (and the
    // module's step fails again).
    let unchanged = Ripcord::new().state(&state).args(["resume", &run_id]).run();
    assert_eq!(unchanged.code, 1, "{}", unchanged.transcript());
    std::fs::write(
        &module,
        std::fs::read_to_string(&module)
            .unwrap()
            .replace("false", "true"),
    )
    .unwrap();
    let out = Ripcord::new().state(&state).args(["resume", &run_id]).run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(out.stderr.contains("changed since run"), "{}", out.stderr);
    let out = Ripcord::new()
        .state(&state)
        .args(["resume", "--force", &run_id])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
}

#[test]
fn fail_naming_a_module_lists_its_steps() {
    let out = dry_run(TWICE, &[], &["--fail", "nested"]);
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(
        out.stderr.contains(
            "`nested` is a module: name one of its steps (nested.prepare, nested.inner.say, nested.inner.check)"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn reports_show_each_module_against_its_prediction() {
    let state = tempfile::tempdir().expect("temp dir");
    let out = Ripcord::new()
        .state(state.path())
        .args(["run", "--dry-run", "--json", "--fail", "b.check", TWICE])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    let report = Ripcord::new()
        .state(state.path())
        .args(["report", "--format", "json", &run_id])
        .run();
    assert_eq!(report.code, 0, "{}", report.transcript());
    let doc: Value = serde_json::from_str(&report.stdout).expect("JSON");
    let modules: HashMap<String, Value> = doc["modules"]
        .as_array()
        .expect("modules")
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_string(), m.clone()))
        .collect();
    assert_eq!(modules["a"]["status"], "succeeded");
    assert_eq!(
        (
            modules["a"]["start_ms"].as_u64(),
            modules["a"]["end_ms"].as_u64()
        ),
        (Some(1000), Some(3000))
    );
    assert_eq!(modules["b"]["status"], "failed");
    // `nested` waits for `a` only, and the run aborted when b failed: it never started.
    assert_eq!(modules["nested"]["status"], "incomplete");
    assert_eq!(modules["nested"]["steps"], 3);
    assert_eq!(modules["nested.inner"]["predicted_start_ms"], 4000);
    let text = Ripcord::new()
        .state(state.path())
        .args(["report", &run_id])
        .run();
    assert!(text.stdout.contains("\nmodules\n"), "{}", text.stdout);
}
