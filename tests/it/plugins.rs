//! External plugins through the real binary: the Python example plugin end to end (validation
//! from its description, real run, undo, check mode), and plugins that misbehave in every way a
//! process can — each a clear step failure while the rest of the run goes on.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Ripcord, repo, write};

fn example_dir() -> String {
    repo().join("plugins/flag-python").display().to_string()
}

#[test]
fn the_python_plugin_is_described_validated_run_checked_and_undone() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("active-site");
    std::fs::write(&flag, "a\n").unwrap();
    let plugins = example_dir();

    // Its description checks params and outputs at validate time.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "version: 1\nname: bad\nsteps:\n\
         - { id: cut, uses: flag.set, with: { path: /x, valu: b } }\n\
         - { id: see, uses: shell.run, with: { argv: [echo, \"${{ steps.cut.outputs.prev }}\"] } }\n\
         - { id: nope, uses: flag.toggle, with: { path: /x } }\n",
    );
    let out = Ripcord::new()
        .args(["validate", &bad, "--plugin-dir", &plugins])
        .run();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unknown param `valu`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("missing required param `value`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("has no output `prev`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("did you mean `previous`?"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("provider `flag` has no action `toggle`"),
        "{}",
        out.stderr
    );

    let good = write(
        dir.path(),
        "cutover.yaml",
        &format!(
            "version: 1\nname: cutover\nsteps:\n\
             - {{ id: current, uses: flag.get, with: {{ path: {f} }} }}\n\
             - {{ id: cut, needs: [current], uses: flag.set, with: {{ path: {f}, value: b }},\n\
                 undo: {{ uses: flag.set, with: {{ path: {f}, value: \"${{{{ steps.cut.outputs.previous }}}}\" }} }} }}\n\
             - {{ id: confirm, uses: assert.that, with: {{ that: \"${{{{ steps.cut.outputs.value == 'b' and steps.current.outputs.value == 'a' }}}}\" }} }}\n",
            f = flag.display()
        ),
    );
    // Pre-flight: only `get` has a check, and it is asked in check mode; nothing changes.
    let check = Ripcord::new()
        .state(dir.path())
        .args(["run", "--check", "--json", "--plugin-dir", &plugins, &good])
        .run();
    assert_eq!(check.code, 0, "{}", check.transcript());
    let finished: Vec<Value> = check
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "step_finished")
        .collect();
    assert_eq!(finished[0]["step"], "current");
    assert!(
        finished[0]["outputs"]["stderr"]
            .as_str()
            .unwrap()
            .contains("(check)")
    );
    assert_eq!(finished[1]["status"], "skipped", "set has no check");
    assert_eq!(std::fs::read_to_string(&flag).unwrap(), "a\n");

    let run = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", "--plugin-dir", &plugins, &good])
        .run();
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(std::fs::read_to_string(&flag).unwrap(), "b\n");
    // The plugin's log (stderr) is kept with the step's outputs in the journal.
    let cut = run
        .events()
        .into_iter()
        .find(|e| e["kind"] == "step_finished" && e["step"] == "cut")
        .unwrap();
    assert!(
        cut["outputs"]["stderr"]
            .as_str()
            .unwrap()
            .contains("'a' -> 'b'"),
        "{cut}"
    );
    let run_id = run.events()[0]["run_id"].as_str().unwrap().to_string();
    // The run succeeded: undoing it is refused unless forced with a reason.
    let refused = Ripcord::new()
        .state(dir.path())
        .args(["rollback", &run_id, "--plugin-dir", &plugins])
        .run();
    assert_eq!(refused.code, 2, "{}", refused.transcript());
    assert!(
        refused.stderr.contains("the run succeeded"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&flag).unwrap(),
        "b\n",
        "nothing undone"
    );
    let undo = Ripcord::new()
        .state(dir.path())
        .args(["rollback", &run_id, "--plugin-dir", &plugins])
        .args(["--force", "--reason", "put the flag back after the test"])
        .run();
    assert_eq!(undo.code, 0, "{}", undo.transcript());
    assert_eq!(
        std::fs::read_to_string(&flag).unwrap(),
        "a\n",
        "the undo put the previous value back"
    );

    // A real run needs its plugins; a dry-run does not.
    let missing = Ripcord::new()
        .state(dir.path())
        .env("PATH", "/usr/bin:/bin")
        .args(["run", &good])
        .run();
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains("no plugin `ripcord-plugin-flag` found"),
        "{}",
        missing.stderr
    );
    let dry = Ripcord::new()
        .state(dir.path())
        .env("PATH", "/usr/bin:/bin")
        .args(["run", "--dry-run", &good])
        .run();
    assert!(
        dry.stderr.contains("provider `flag` is not available"),
        "a warning: {}",
        dry.stderr
    );

    let listed = Ripcord::new()
        .args(["plugins", "--plugin-dir", &plugins])
        .run();
    assert!(
        listed.stdout.contains("flag.get") && listed.stdout.contains("[check]"),
        "{}",
        listed.stdout
    );
    assert!(
        listed
            .stdout
            .contains("plugins/flag-python/ripcord-plugin-flag"),
        "{}",
        listed.stdout
    );
}

/// `script` as the executable `ripcord-plugin-NAME` in `dir`.
fn install(dir: &Path, name: &str, script: &str) {
    let path = dir.join(format!("ripcord-plugin-{name}"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A plugin written as a shell script: `describe` prints one action `go`; `invoke` runs `body`.
fn plugin(dir: &Path, name: &str, body: &str) {
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = describe ]; then echo '{{\"protocol\":1,\"actions\":[{{\"name\":\"go\",\"outputs\":[\"n\"]}}]}}'; exit 0; fi\ncat >/dev/null\n{body}\n"
    );
    install(dir, name, &script);
}

#[test]
fn misbehaving_plugins_fail_their_step_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let marker = format!("ripcord-plugin-hang-{}", std::process::id());
    plugin(&bin, "hang", &format!("sh -c 'sleep 30; : {marker}'"));
    plugin(&bin, "garbage", "echo 'this is not JSON'");
    plugin(&bin, "silent", "exit 0");
    plugin(&bin, "crash", "echo boom >&2; exit 3");
    plugin(&bin, "huge", "head -c 3000000 /dev/zero | tr '\\0' x");
    plugin(
        &bin,
        "loud",
        "head -c 5000000 /dev/zero | tr '\\0' y >&2; echo '{\"ok\":true,\"outputs\":{\"n\":1}}'",
    );
    plugin(
        &bin,
        "refuse",
        "echo '{\"ok\":false,\"message\":\"primary still up\",\"retryable\":false}'",
    );
    std::fs::write(bin.join("ripcord-plugin-nodesc"), "#!/bin/sh\necho nope\n").unwrap();
    std::fs::set_permissions(
        bin.join("ripcord-plugin-nodesc"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let mut text = String::from("version: 1\nname: misbehave\nsteps:\n");
    for name in [
        "hang", "garbage", "silent", "crash", "huge", "loud", "refuse",
    ] {
        text.push_str(&format!(
            "- {{ id: {name}, uses: {name}.go, timeout: 1s, on_failure: continue }}\n"
        ));
    }
    text.push_str("- { id: fine, uses: shell.run, with: { argv: [\"true\"] } }\n");
    let file = write(dir.path(), "misbehave.yaml", &text);
    let bin = bin.display().to_string();
    let started = std::time::Instant::now();
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", "--plugin-dir", &bin, &file])
        .run();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        out.code,
        0,
        "failures were on_failure: continue: {}",
        out.transcript()
    );
    let finished = |id: &str| {
        out.events()
            .into_iter()
            .find(|e| e["kind"] == "step_finished" && e["step"] == id)
            .unwrap()
    };
    let error = |id: &str| {
        finished(id)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(error("hang"), "timed out after 1s");
    assert!(
        error("garbage").contains("printed an invalid result"),
        "{}",
        error("garbage")
    );
    assert!(error("garbage").contains("this is not JSON"));
    assert_eq!(error("silent"), "ripcord-plugin-silent printed no result");
    assert_eq!(
        error("crash"),
        "ripcord-plugin-crash printed no result and exited with code 3: boom"
    );
    assert!(
        error("huge").contains("more than 1048576 bytes"),
        "{}",
        error("huge")
    );
    assert_eq!(error("refuse"), "primary still up");
    assert_eq!(finished("loud")["status"], "succeeded");
    assert_eq!(
        finished("loud")["outputs"]["stderr"]
            .as_str()
            .unwrap()
            .len(),
        64 * 1024,
        "log capture is bounded"
    );
    assert_eq!(finished("fine")["status"], "succeeded");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !crate::support::alive(&marker),
        "the hung plugin's process group outlived its timeout"
    );

    // A plugin that cannot describe itself is reported, not fatal to validation of the rest.
    let nodesc = write(
        dir.path(),
        "nodesc.yaml",
        "version: 1\nname: nd\nsteps:\n- { id: x, uses: nodesc.go }\n",
    );
    let out = Ripcord::new()
        .args(["validate", "--json", &nodesc, "--plugin-dir", &bin])
        .run();
    assert_eq!(out.code, 0);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let warning = &doc["files"][0]["diagnostics"][0];
    assert_eq!(warning["code"], "ripcord::plugin-missing");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("describe printed no valid description"),
        "{warning}"
    );
}

#[test]
fn a_rust_plugin_written_with_the_sdk_speaks_the_protocol() {
    // Build the SDK's example plugin with the same cargo, into the same target directory.
    let built = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "ripcord-plugin-sdk",
            "--example",
            "ripcord-plugin-echo",
        ])
        .current_dir(repo())
        .status()
        .expect("cargo runs");
    assert!(built.success());
    let target = std::env::var("CARGO_TARGET_DIR")
        .map_or_else(|_| repo().join("target"), std::path::PathBuf::from);
    let examples = target.join("debug/examples").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "echo.yaml",
        "version: 1\nname: echo\nsteps:\n\
         - { id: hi, uses: echo.say, with: { text: \"fail over\", loud: true } }\n\
         - { id: check, uses: assert.that, with: { that: \"${{ steps.hi.outputs.said == 'FAIL OVER' }}\" } }\n",
    );
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", "--plugin-dir", &examples, &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let hi = out
        .events()
        .into_iter()
        .find(|e| e["kind"] == "step_finished" && e["step"] == "hi")
        .unwrap();
    assert!(
        hi["outputs"]["stderr"]
            .as_str()
            .unwrap()
            .contains("hi attempt 1: saying \"fail over\"")
    );
    let bad = write(
        dir.path(),
        "bad.yaml",
        "version: 1\nname: bad\nsteps:\n- { id: hi, uses: echo.say, with: { txt: x } }\n",
    );
    let out = Ripcord::new()
        .args(["validate", &bad, "--plugin-dir", &examples])
        .run();
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("did you mean `text`?"),
        "{}",
        out.stderr
    );
}

/// A plugin whose `describe` prints `description` (JSON) and which runs no action.
fn described_plugin(dir: &Path, name: &str, description: &Value) {
    let desc = dir.join(format!("{name}.json"));
    std::fs::write(&desc, description.to_string()).unwrap();
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = describe ]; then cat '{}'; exit 0; fi\nexit 1\n",
        desc.display()
    );
    install(dir, name, &script);
}

/// A plugin's params are checked as JSON Schema (draft 2020-12), every keyword: `pattern`
/// through `$ref`, `anyOf`, nested `required`, `const`; each violation at its value's
/// file:line:col, naming the param and not quoting the value. A schema that is not JSON
/// Schema makes the plugin unusable, with the reason, never "anything goes".
#[test]
fn plugin_params_are_checked_as_full_json_schema_at_their_spans() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let schema = serde_json::json!({
        "$defs": { "name": { "type": "string", "pattern": "^[A-Za-z0-9_.:-]+$" } },
        "type": "object",
        "properties": {
            "backend": { "$ref": "#/$defs/name" },
            "weight": { "anyOf": [ { "type": "integer", "minimum": 0 }, { "const": "auto" } ] },
            "tls": {
                "type": "object",
                "properties": { "ca": { "type": "string" } },
                "required": ["ca"],
                "additionalProperties": false
            }
        },
        "required": ["backend"],
        "additionalProperties": false
    });
    described_plugin(
        &bin,
        "rich",
        &serde_json::json!({ "protocol": 1, "actions": [
            { "name": "set", "params": schema, "outputs": [] } ] }),
    );
    described_plugin(
        &bin,
        "broken",
        &serde_json::json!({ "protocol": 1, "actions": [
            { "name": "set", "params": { "type": "object", "properties": { "x": { "type": 5 } } },
              "outputs": [] } ] }),
    );
    let bin = bin.display().to_string();
    let steps = "version: 1\nname: rich\ninputs: { b: { type: string, default: ok } }\nsteps:\n\
         - { id: a, uses: rich.set, with: { backend: \"web;disable server web/s1\" } }\n\
         - { id: b, uses: rich.set, with: { backend: web, weight: -3 } }\n\
         - { id: c, uses: rich.set, with: { backend: web, weight: auto, tls: { cert: x } } }\n\
         - { id: d, uses: rich.set, with: { backend: \"${{ inputs.b }}\", weight: 5 } }\n";
    let file = write(dir.path(), "rich.yaml", steps);
    let out = Ripcord::new()
        .args(["validate", "--json", &file, "--plugin-dir", &bin])
        .run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let diags = doc["files"][0]["diagnostics"].as_array().unwrap();
    let found: Vec<(String, u64, u64)> = diags
        .iter()
        .map(|d| {
            (
                d["message"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
                d["column"].as_u64().unwrap(),
            )
        })
        .collect();
    let at = |text: &str| {
        found
            .iter()
            .find(|(m, ..)| m.contains(text))
            .map(|(_, l, c)| (*l, *c))
            .unwrap_or_else(|| panic!("no `{text}` in {found:#?}"))
    };
    assert_eq!(at("param `backend` must match the pattern"), (5, 45));
    assert_eq!(at("param `weight` fits none"), (6, 58));
    assert_eq!(at("param `tls` needs key `ca`"), (7, 69));
    assert_eq!(at("unknown key `cert` in param `tls`"), (7, 71));
    assert_eq!(found.len(), 4, "step d waits for its input: {found:#?}");
    assert!(
        !out.stdout.contains("disable server"),
        "a value is never quoted back: {}",
        out.stdout
    );

    let file = write(
        dir.path(),
        "broken.yaml",
        "version: 1\nname: broken\nsteps:\n- { id: a, uses: broken.set, with: { x: 1 } }\n",
    );
    let out = Ripcord::new()
        .args(["validate", &file, "--plugin-dir", &bin])
        .run();
    // Like a plugin that cannot describe itself: a warning that its steps are not checked
    // (CI may validate without plugins installed), with the reason.
    assert!(
        out.stderr.contains("provider `broken` is not available")
            && out
                .stderr
                .contains("not valid JSON Schema (at `/properties/x/type`)"),
        "{}",
        out.stderr
    );
}
