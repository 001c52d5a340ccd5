//! The verbs as a user runs them: plan, graph, schema, inputs, JSON output.

use crate::support::{Ripcord, repo};

#[test]
fn plan_shows_stages_critical_path_and_rto() {
    let out = Ripcord::new()
        .args(["plan", "tests/fixtures/valid/features.yaml"])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    insta::assert_snapshot!(out.transcript());
}

#[test]
fn plan_needs_required_inputs_and_coerces_given_ones() {
    let file = "tests/fixtures/valid/contract-example.yaml";
    let missing = Ripcord::new().args(["plan", file]).run();
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains("required input `reason` has no value")
    );

    let out = Ripcord::new()
        .args([
            "plan",
            file,
            "--input",
            "reason=planned",
            "-i",
            "vms=a,b,c,d,e",
        ])
        .env("ORDERS_API_TOKEN", "s3cr3t-token")
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(out.stdout.contains("power-on[e]"));
    assert!(out.stdout.contains("api_token = ***"));
    assert!(
        !out.stdout.contains("s3cr3t-token"),
        "secret printed:\n{}",
        out.stdout
    );
    // Pool vcenter=4 holds the fifth VM back one estimate (1s).
    assert!(
        out.stdout
            .contains("46s with unlimited concurrency, 47s with concurrency 10")
    );

    let bad = Ripcord::new()
        .args([
            "plan",
            file,
            "-i",
            "reason=x",
            "-i",
            "drain=soon",
            "-i",
            "standy=db",
        ])
        .run();
    assert_eq!(bad.code, 2);
    insta::assert_snapshot!(bad.transcript());
}

#[test]
fn plan_json_is_machine_readable() {
    let out = Ripcord::new()
        .args([
            "plan",
            "--json",
            "tests/fixtures/valid/features.yaml",
            "--concurrency",
            "1",
        ])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(plan["concurrency"], 1);
    assert_eq!(plan["steps"].as_array().map(Vec::len), Some(10));
    let total: u64 = plan["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["estimate_ms"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        plan["predicted_ms"]["limited"], total,
        "one slot: the sum of estimates"
    );
    assert_eq!(plan["critical_path"][0], "health");
    assert_eq!(plan["rto_ms"], 120_000);
    assert_eq!(
        plan["rto_met"],
        total <= 120_000,
        "2m rto, {total} ms serial"
    );
}

#[test]
fn graph_formats_highlight_the_critical_path() {
    for format in ["dot", "mermaid"] {
        let out = Ripcord::new()
            .args([
                "graph",
                "tests/fixtures/valid/features.yaml",
                "--format",
                format,
            ])
            .run();
        assert_eq!(out.code, 0, "{}", out.transcript());
        insta::assert_snapshot!(format!("graph_{format}"), out.stdout);
    }
}

#[test]
fn committed_schema_is_current() {
    let out = Ripcord::new().args(["schema"]).run();
    assert_eq!(out.code, 0);
    let committed = std::fs::read_to_string(repo().join("schema/runbook.schema.json"))
        .expect("schema/runbook.schema.json is committed");
    assert!(
        committed == out.stdout,
        "schema/runbook.schema.json is stale: run `cargo run -- schema > schema/runbook.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&committed).expect("JSON");
    let step = &schema["$defs"]["Step"]["properties"];
    for key in [
        "id",
        "uses",
        "with",
        "needs",
        "retry",
        "timeout",
        "sim",
        "idempotent",
        "undo",
        "for_each",
        "pool",
        "on_failure",
        "when",
        "include",
    ] {
        assert!(
            step.get(key).is_some(),
            "Step.{key} missing from the schema"
        );
    }
}

#[test]
fn validate_json_reports_positions() {
    let out = Ripcord::new()
        .args([
            "validate",
            "--json",
            "tests/fixtures/invalid/many-errors.yaml",
            "tests/fixtures/valid/minimal.yaml",
        ])
        .run();
    assert_eq!(out.code, 2);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(doc["files"][1]["valid"], true);
    let diags = doc["files"][0]["diagnostics"].as_array().expect("array");
    let at: Vec<(String, u64, u64)> = diags
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap_or_default().to_string(),
                d["line"].as_u64().unwrap_or(0),
                d["column"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(at.contains(&("ripcord::duration".into(), 4, 6)), "{at:?}");
    assert!(
        at.contains(&("ripcord::unknown-action".into(), 11, 11)),
        "{at:?}"
    );
    assert!(
        at.contains(&("ripcord::unknown-step".into(), 12, 13)),
        "{at:?}"
    );
    assert!(at.len() >= 7, "all errors at once: {at:?}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(Ripcord::new().args(["validate"]).run().code, 2);
    assert_eq!(
        Ripcord::new()
            .args(["plan", "x.yaml", "-i", "novalue"])
            .run()
            .code,
        2
    );
    assert_eq!(Ripcord::new().args(["bogus"]).run().code, 2);
}

#[test]
fn a_timeout_shorter_than_the_estimate_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slow.yaml"),
        "version: 1\nname: slow\nsteps:\n- { id: wait, uses: sleep.for, timeout: 1m, with: { duration: 5m } }\n",
    )
    .unwrap();
    let out = Ripcord::new()
        .current_dir(dir.path())
        .args(["validate", "slow.yaml"])
        .run();
    assert_eq!(out.code, 0, "a warning does not make the runbook invalid");
    insta::assert_snapshot!(out.transcript());
    // The dry-run shows why it matters.
    let run = Ripcord::new()
        .current_dir(dir.path())
        .state(dir.path())
        .args(["run", "--dry-run", "slow.yaml"])
        .run();
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("timed out after 1m"), "{}", run.stdout);
}

/// A command ripcord prints for the operator to run next works when pasted: with the
/// `--state-dir` it was given (even one with a space in it), as a shell would run it.
#[test]
fn a_printed_hint_works_when_pasted() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("my state");
    let file = crate::support::write(
        dir.path(),
        "fails.yaml",
        "version: 1\nname: fails\nsteps:\n- { id: a, uses: shell.run, with: { argv: [\"true\"] }, undo: { uses: shell.run, with: { argv: [\"true\"] } } }\n- { id: b, needs: [a], uses: shell.run, with: { argv: [\"false\"] } }\n",
    );
    let out = Ripcord::new()
        .args(["run", &file, "--state-dir", state.to_str().unwrap()])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    let hint = out
        .stdout
        .lines()
        .find_map(|l| l.split_once("undo completed steps with: "))
        .map(|(_, cmd)| cmd.to_string())
        .unwrap_or_else(|| panic!("no rollback hint:\n{}", out.stdout));
    assert!(hint.contains("--state-dir"), "{hint}");
    let ripcord = std::path::Path::new(env!("CARGO_BIN_EXE_ripcord"));
    let pasted = std::process::Command::new("sh")
        .arg("-c")
        .arg(&hint)
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", ripcord.parent().unwrap().display()),
        )
        .env_remove("RIPCORD_STATE_DIR")
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        pasted.status.success(),
        "`{hint}` failed: {}",
        String::from_utf8_lossy(&pasted.stderr)
    );
}

/// `runs` lists the newest first, also for runs started within one second (their ids sort by
/// a random suffix there).
#[test]
fn runs_are_listed_strictly_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let file = crate::support::repo().join("tests/fixtures/valid/minimal.yaml");
    for _ in 0..5 {
        let out = Ripcord::new()
            .state(dir.path())
            .args(["run", "--dry-run", file.to_str().unwrap()])
            .run();
        assert_eq!(out.code, 0, "{}", out.transcript());
    }
    let out = Ripcord::new()
        .state(dir.path())
        .args(["runs", "--json"])
        .run();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    let started: Vec<&str> = rows
        .iter()
        .map(|r| r["started_at"].as_str().unwrap())
        .collect();
    assert_eq!(started.len(), 5);
    assert!(
        started.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {started:?}"
    );
}

/// `--input-file`: a YAML file of values, typed as declared (lists and maps as YAML), a later
/// file over an earlier one, `--input` over any file; its mistakes at file:line:col.
#[test]
fn input_files_carry_typed_values_and_inventories() {
    let dir = tempfile::tempdir().unwrap();
    let runbook = crate::support::write(
        dir.path(),
        "inv.yaml",
        "version: 1\nname: inv\ninputs:\n  hosts: { type: map }\n  groups: { type: map }\n  \
         standby: { type: string, default: none }\n  port: { type: integer, default: 22 }\n\
         steps:\n  - id: restart\n    for_each: \"${{ inputs.groups.app }}\"\n    uses: ssh.run\n    \
         with: { host: \"${{ inputs.hosts[item].address }}\", port: \"${{ inputs.port }}\", argv: [systemctl, restart, \"${{ inputs.hosts[item].service }}\"] }\n",
    );
    let prod = crate::support::write(
        dir.path(),
        "prod.yaml",
        "# the production inventory\nhosts:\n  app1: { address: 10.0.0.11, service: orders }\n  \
         app2: { address: 10.0.0.12, service: orders }\ngroups:\n  app: [app1, app2]\nstandby: host=db2\nport: 2222\n",
    );
    let lab = crate::support::write(dir.path(), "lab.yaml", "standby: host=lab-db2\n");
    let out = Ripcord::new()
        .args([
            "plan",
            "--json",
            &runbook,
            "--input-file",
            &prod,
            "--input-file",
            &lab,
            "-i",
            "port=2200",
        ])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let ids: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["restart[app1]", "restart[app2]"], "{plan}");
    let inputs = &plan["inputs"];
    let value = |name: &str| {
        inputs
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|i| i["name"] == name)
                    .map(|i| i["value"].clone())
            })
            .unwrap_or_else(|| inputs[name].clone())
    };
    assert_eq!(
        value("standby"),
        "host=lab-db2",
        "the later file wins: {inputs}"
    );
    assert_eq!(value("port"), 2200, "--input wins: {inputs}");
    assert_eq!(
        value("groups"),
        serde_json::json!({ "app": ["app1", "app2"] })
    );

    // A dry-run renders each host's variables.
    let state = dir.path().join("state");
    let dry = Ripcord::new()
        .state(&state)
        .args([
            "run",
            "--dry-run",
            "--json",
            &runbook,
            "--input-file",
            &prod,
        ])
        .run();
    assert_eq!(dry.code, 0, "{}", dry.transcript());

    // Mistakes in a file point into it.
    let bad = crate::support::write(
        dir.path(),
        "bad.yaml",
        "hosts: [app1]\ngroups: {}\nprot: 22\n",
    );
    let out = Ripcord::new()
        .args(["plan", &runbook, "--input-file", &bad])
        .run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(out.stderr.contains("bad.yaml:1:8"), "{}", out.stderr);
    assert!(out.stderr.contains("bad.yaml:3:1"), "{}", out.stderr);
    assert!(
        out.stderr.contains("did you mean `port`?"),
        "{}",
        out.stderr
    );
    let list = crate::support::write(dir.path(), "list.yaml", "- a\n- b\n");
    let out = Ripcord::new()
        .args(["validate", &runbook, "--input-file", &list])
        .run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(
        out.stderr.contains("not a mapping of input names"),
        "{}",
        out.stderr
    );
    let missing = dir.path().join("missing.yaml");
    let out = Ripcord::new()
        .args([
            "validate",
            &runbook,
            "--input-file",
            missing.to_str().unwrap(),
        ])
        .run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);
}

/// A for_each item that is a map is named by its `name`, else its `host` when no two items share
/// one (two ports on one host are two items, named by position), else its position.
#[test]
fn for_each_maps_are_named_by_name_or_a_unique_host() {
    let dir = tempfile::tempdir().unwrap();
    let runbook = crate::support::write(
        dir.path(),
        "names.yaml",
        "version: 1\nname: names\nsteps:\n\
         - { id: named, for_each: [{ name: app1, host: h }, { name: app2, host: h }], uses: sleep.for, with: { duration: 1s } }\n\
         - { id: hosts, for_each: [{ host: 10.0.0.1 }, { host: 10.0.0.2 }], uses: sleep.for, with: { duration: 1s } }\n\
         - { id: ports, for_each: [{ host: 10.0.0.1, port: 22 }, { host: 10.0.0.1, port: 2222 }], uses: sleep.for, with: { duration: 1s } }\n",
    );
    let out = Ripcord::new().args(["plan", "--json", &runbook]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let ids: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "named[app1]",
            "named[app2]",
            "hosts[10.0.0.1]",
            "hosts[10.0.0.2]",
            "ports[0]",
            "ports[1]"
        ]
    );
}

/// A run whose step uses an input that has no value (a forgotten --input-file, an unset token)
/// stops before anything starts, with exit 2; plan and dry-run still work without it (CI has no
/// secrets).
#[test]
fn a_run_refuses_an_input_a_step_uses_without_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let touched = dir.path().join("touched");
    let runbook = crate::support::write(
        dir.path(),
        "valueless.yaml",
        &format!(
            "version: 1\nname: valueless\ninputs:\n  token: {{ type: string, secret: true, env: VALUELESS_TOKEN_UNSET }}\n\
             steps:\n  - {{ id: first, uses: shell.run, with: {{ argv: [touch, {}] }} }}\n  \
             - {{ id: use, needs: [first], uses: shell.run, with: {{ argv: [\"true\"], env: {{ T: \"${{{{ inputs.token }}}}\" }} }} }}\n",
            touched.display()
        ),
    );
    for args in [vec!["plan", &runbook], vec!["run", "--dry-run", &runbook]] {
        let out = Ripcord::new().state(&state).args(&args).run();
        assert_eq!(out.code, 0, "{args:?}: {}", out.transcript());
    }
    for args in [vec!["run", &runbook], vec!["run", "--check", &runbook]] {
        let out = Ripcord::new()
            .state(&state)
            .env_remove("VALUELESS_TOKEN_UNSET")
            .args(&args)
            .run();
        assert_eq!(out.code, 2, "{}", out.transcript());
        assert!(
            out.stderr
                .contains("input `token` has no value, and step `use` uses it"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("valueless.yaml:7:"), "{}", out.stderr);
        assert!(!touched.exists(), "a step ran");
    }
    let runs = std::fs::read_dir(state.join("runs"))
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().contains("-dry-"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(runs, 0, "nothing but the dry-run recorded");
}

/// A mistake in an inventory (a host without the variable a step reads, a group naming a host
/// that is not listed) is found by `plan` and before a run starts, not when the run reaches
/// that host after changing the others.
#[test]
fn an_inventory_mistake_is_found_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let runbook = crate::support::write(
        dir.path(),
        "fleet.yaml",
        "version: 1\nname: fleet\ninputs:\n  hosts: { type: map }\n  groups: { type: map }\nsteps:\n  \
         - id: restart\n    for_each: \"${{ inputs.groups.app }}\"\n    uses: ssh.run\n    \
         with: { host: \"${{ inputs.hosts[item].address }}\", argv: [systemctl, restart, orders] }\n",
    );
    let inventory = crate::support::write(
        dir.path(),
        "inventory.yaml",
        "hosts:\n  app1: { address: 10.0.0.11 }\n  app2: { adress: 10.0.0.12 }\ngroups:\n  app: [app1, app2, ap3]\n",
    );
    for args in [vec!["plan"], vec!["run"], vec!["run", "--check"]] {
        let mut args: Vec<&str> = args;
        args.extend([runbook.as_str(), "--input-file", inventory.as_str()]);
        let out = Ripcord::new().state(&state).args(&args).run();
        assert_eq!(out.code, 2, "{args:?}: {}", out.transcript());
        assert!(
            out.stderr.contains("step `restart[app2]`")
                && out.stderr.contains("param `host` must be a string"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("step `restart[ap3]`") && out.stderr.contains("is undefined"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("restart[app1]"), "{}", out.stderr);
    }
    assert!(!state.join("runs").exists(), "nothing ran");
}
