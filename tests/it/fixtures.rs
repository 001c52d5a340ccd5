//! Every bad runbook under tests/fixtures/invalid is rejected with exit 2 and the diagnostic
//! in its snapshot; every runbook under tests/fixtures/valid and runbooks/ validates.

use std::io::Write;

use crate::support::{Ripcord, repo};

#[test]
fn invalid_fixtures_are_rejected_with_their_diagnostic() {
    insta::glob!("../fixtures/invalid", "*.yaml", |path| {
        let relative = path
            .strip_prefix(repo())
            .expect("fixtures live in the repo");
        let out = Ripcord::new().args(["validate"]).args([relative]).run();
        assert_eq!(out.code, 2, "{}", out.transcript());
        assert!(
            out.stderr.contains("×"),
            "no error rendered:\n{}",
            out.transcript()
        );
        insta::assert_snapshot!(out.transcript());
    });
}

#[test]
fn invalid_fixtures_give_json_positions() {
    insta::glob!("../fixtures/invalid", "*.yaml", |path| {
        let relative = path
            .strip_prefix(repo())
            .expect("fixtures live in the repo");
        let out = Ripcord::new()
            .args(["validate", "--json"])
            .args([relative])
            .run();
        assert_eq!(out.code, 2);
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
        assert_eq!(doc["valid"], false);
        let diags = doc["files"][0]["diagnostics"]
            .as_array()
            .expect("diagnostics");
        assert!(diags.iter().any(|d| d["severity"] == "error"));
        for d in diags {
            // Every diagnostic about a file's content points into it, except whole-file ones.
            if d["file"].is_string() {
                assert!(d["line"].as_u64().is_some(), "{d}");
            }
        }
    });
}

#[test]
fn valid_fixtures_and_example_runbooks_validate() {
    let mut files: Vec<_> = ["tests/fixtures/valid", "runbooks"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(repo().join(dir)).expect("directory exists"))
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the valid fixtures and example runbooks"
    );
    let out = Ripcord::new().args(["validate"]).args(&files).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(!out.stderr.contains("×"), "{}", out.stderr);
    assert_eq!(
        out.stdout.lines().filter(|l| l.contains(": ok (")).count(),
        files.len()
    );
    // The examples are what users copy: not even a warning (their plugins, postgres and
    // haproxy, are built beside ripcord by the test runner, so their params are checked too).
    let examples: Vec<_> = files
        .iter()
        .filter(|f| f.starts_with(repo().join("runbooks")))
        .collect();
    let out = Ripcord::new()
        .args(["validate", "--json"])
        .args(&examples)
        .run();
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    for file in doc["files"].as_array().expect("files") {
        let diagnostics = file["diagnostics"].as_array().expect("diagnostics");
        assert!(diagnostics.is_empty(), "{}: {diagnostics:?}", file["file"]);
    }
}

/// Files too big or too deep to commit are generated; their diagnostics are snapshots too.
#[test]
fn hostile_generated_files_are_rejected_quickly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let deep = format!(
        "version: 1\nname: deep\nsteps:\n  - id: a\n    uses: shell.run\n    with:\n      argv: {}{}\n",
        "[\n".repeat(100_000),
        "]".repeat(100_000)
    );
    std::fs::write(dir.path().join("deep-nesting.yaml"), deep).expect("write");
    let mut big = std::fs::File::create(dir.path().join("too-large.yaml")).expect("create");
    big.write_all(b"version: 1\nname: big\ndescription: \"")
        .expect("write");
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..17 {
        big.write_all(&chunk).expect("write");
    }
    big.write_all(b"\"\nsteps: []\n").expect("write");
    drop(big);
    // Under the size cap, over the node budget: 3.5 million list items in 7 MB.
    let nodes = format!(
        "version: 1\nname: nodes\nsteps:\n  - id: a\n    uses: shell.run\n    with: {{ argv: [{}] }}\n",
        "1,".repeat(3_500_000)
    );
    std::fs::write(dir.path().join("too-many-nodes.yaml"), nodes).expect("write");

    // 100 MB, sparse: refused by its size before a byte is read.
    let huge = std::fs::File::create(dir.path().join("huge-100mb.yaml")).expect("create");
    huge.set_len(100 * 1024 * 1024).expect("sparse file");
    drop(huge);

    for name in ["deep-nesting", "too-large", "too-many-nodes", "huge-100mb"] {
        let out = Ripcord::new()
            .current_dir(dir.path())
            .args(["validate", &format!("{name}.yaml")])
            .run();
        assert_eq!(out.code, 2, "{}", out.transcript());
        insta::assert_snapshot!(format!("generated_{name}"), out.transcript());
    }
}

#[test]
fn several_files_report_each() {
    let out = Ripcord::new()
        .args([
            "validate",
            "tests/fixtures/valid/minimal.yaml",
            "tests/fixtures/invalid/cycle.yaml",
            "tests/fixtures/invalid/unknown-need.yaml",
            "no/such/file.yaml",
        ])
        .run();
    assert_eq!(out.code, 2);
    assert!(out.stdout.contains("minimal.yaml: ok"));
    assert!(out.stderr.contains("dependency cycle"));
    assert!(out.stderr.contains("unknown step `check-lga`"));
    assert!(out.stderr.contains("cannot read no/such/file.yaml"));
    assert!(out.stderr.contains("3 of 4 file(s) invalid"));
}

/// Small files that would compile to millions of steps or edges are refused by their budget,
/// each with a diagnostic at the include or step that crosses it (these took seconds and
/// gigabytes before validating "ok").
#[test]
fn compile_budgets_refuse_what_multiplies() {
    let dir = tempfile::tempdir().unwrap();
    let validate = |file: &std::path::Path| {
        let out = Ripcord::new()
            .args(["validate", file.to_str().unwrap()])
            .run();
        assert_eq!(out.code, 2, "{}", out.transcript());
        out.stderr
    };
    // Each module includes the next three times: 3^12 steps.
    for n in 0..12 {
        let body = if n == 11 {
            "  - { id: a, uses: sleep.for, with: { duration: 1ms } }\n".to_string()
        } else {
            (0..3)
                .map(|k| format!("  - {{ id: i{k}, include: m{}.yaml }}\n", n + 1))
                .collect()
        };
        std::fs::write(
            dir.path().join(format!("m{n}.yaml")),
            format!("version: 1\nname: m{n}\nsteps:\n{body}"),
        )
        .unwrap();
    }
    let err = validate(&dir.path().join("m0.yaml"));
    assert!(err.contains("ripcord::too-many-steps"), "{err}");
    assert!(err.contains("more than 100000 steps"), "{err}");

    // A chain of 20 includes.
    for n in 0..20 {
        let body = if n == 19 {
            "  - { id: a, uses: sleep.for, with: { duration: 1ms } }\n".to_string()
        } else {
            format!("  - {{ id: next, include: c{}.yaml }}\n", n + 1)
        };
        std::fs::write(
            dir.path().join(format!("c{n}.yaml")),
            format!("version: 1\nname: c{n}\nsteps:\n{body}"),
        )
        .unwrap();
    }
    let err = validate(&dir.path().join("c0.yaml"));
    assert!(err.contains("ripcord::include-depth"), "{err}");

    // for_each → for_each: 5,000 × 5,000 instances wait through one barrier (5,000 + 5,000
    // edges, not 25 million): accepted, and the plan says `one[*]`.
    let items: Vec<String> = (0..5000).map(|i| format!("h{i}")).collect();
    let list = serde_json::to_string(&items).unwrap();
    let file = dir.path().join("cross.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nname: cross\ninputs:\n  a: {{ type: list, default: {list} }}\n  b: {{ type: list, default: {list} }}\nsteps:\n\
             - {{ id: one, for_each: \"${{{{ inputs.a }}}}\", uses: sleep.for, with: {{ duration: 1ms }} }}\n\
             - {{ id: two, for_each: \"${{{{ inputs.b }}}}\", needs: [one], uses: sleep.for, with: {{ duration: 1ms }} }}\n"
        ),
    )
    .unwrap();
    let out = Ripcord::new()
        .args(["plan", "--json", file.to_str().unwrap()])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let two = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "two[h4999]")
        .unwrap();
    assert_eq!(two["needs"], serde_json::json!(["one[*]"]));
    assert_eq!(two["stage"], 2, "{two}");

    // for_each over 200,000 items.
    let items: Vec<String> = (0..200_000).map(|i| format!("v{i}")).collect();
    let file = dir.path().join("wide.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nname: wide\ninputs:\n  vms: {{ type: list, default: {} }}\nsteps:\n\
             - {{ id: on, for_each: \"${{{{ inputs.vms }}}}\", uses: sleep.for, with: {{ duration: 1ms }} }}\n",
            serde_json::to_string(&items).unwrap()
        ),
    )
    .unwrap();
    let err = validate(&file);
    assert!(
        err.contains("expands the runbook to more than 100000 steps"),
        "{err}"
    );
}
