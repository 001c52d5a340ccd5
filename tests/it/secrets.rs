//! What reaches a child and what does not: strings full of shell metacharacters reach argv byte
//! for byte (nothing is ever spliced into a shell), and a secret input never appears in the
//! state directory, the output, the reports, or any process's command line.

use std::path::Path;
use std::time::Duration;

use base64::Engine;

use crate::support::Ripcord;

/// Seeded strings made mostly of what a shell would interpret.
fn hostile_strings(n: usize, seed: u64) -> Vec<String> {
    const ALPHABET: &[&str] = &[
        ";",
        "|",
        "&",
        "$",
        "(",
        ")",
        "<",
        ">",
        "`",
        "'",
        "\"",
        "\\",
        "*",
        "?",
        "[",
        "]",
        "{",
        "}",
        "~",
        "#",
        "!",
        " ",
        "\t",
        "\n",
        "=",
        "%",
        "$(touch PWNED)",
        "`touch PWNED`",
        "; touch PWNED",
        "${IFS}",
        "a",
        "Z",
        "é",
        "ß",
        "ℝ",
        "--",
        "-e",
        "\r",
        "\u{1b}[31m",
    ];
    let mut state = seed;
    let mut next = move |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    };
    (0..n)
        .map(|_| {
            (0..next(12))
                .map(|_| ALPHABET[next(ALPHABET.len())])
                .collect::<String>()
        })
        .collect()
}

#[test]
fn ten_thousand_hostile_strings_reach_argv_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let strings = hostile_strings(10_000, 7);
    let out_file = dir.path().join("argv.bin");
    // The child writes its argv, NUL-separated; a whole-string expression keeps the list a list.
    let runbook = format!(
        "version: 1\nname: argv\ninputs:\n  strings: {{ type: list, default: {} }}\nsteps:\n\
         - id: echo\n  uses: shell.run\n  with:\n    cwd: {cwd}\n    argv: \"${{{{ ['python3', '-c', 'import os, sys; open(sys.argv[1], \\\"wb\\\").write(bytes([0]).join(os.fsencode(a) for a in sys.argv[2:]))', '{out}'] + inputs.strings }}}}\"\n",
        serde_json::to_string(&strings).unwrap(),
        cwd = dir.path().display(),
        out = out_file.display(),
    );
    let file = dir.path().join("argv.yaml");
    std::fs::write(&file, runbook).unwrap();
    let out = Ripcord::new()
        .state(dir.path())
        .current_dir(dir.path())
        .args(["run", file.to_str().unwrap()])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let got = std::fs::read(&out_file).unwrap();
    let expected = strings.join("\0").into_bytes();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "argv differs from the input");
    assert!(
        !dir.path().join("PWNED").exists(),
        "a string was run by a shell"
    );
}

/// The same for `script:`: each value put into a shell script with `${{ }}` (outside quotes,
/// inside single quotes, inside double quotes) reaches the command byte for byte, and nothing of
/// it runs.
#[test]
fn hostile_strings_in_script_reach_the_command_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut strings = hostile_strings(300, 11);
    // `for_each` items are distinct and non-empty, and a NUL cannot reach any command.
    strings.retain(|s| !s.is_empty());
    strings.sort();
    strings.dedup();
    let runbook = format!(
        "version: 1\nname: script\ninputs:\n  strings: {{ type: list, default: {} }}\nsteps:\n\
         - id: bare\n  for_each: \"${{{{ inputs.strings }}}}\"\n  uses: shell.run\n  with: {{ cwd: {cwd}, script: \"printf %s ${{{{ item }}}}\" }}\n\
         - id: single\n  for_each: \"${{{{ inputs.strings }}}}\"\n  uses: shell.run\n  with: {{ cwd: {cwd}, script: \"printf %s '${{{{ item }}}}'\" }}\n\
         - id: double\n  for_each: \"${{{{ inputs.strings }}}}\"\n  uses: shell.run\n  with: {{ cwd: {cwd}, script: \"printf %s \\\"${{{{ item }}}}\\\"\" }}\n",
        serde_json::to_string(&strings).unwrap(),
        cwd = dir.path().display(),
    );
    let file = dir.path().join("script.yaml");
    std::fs::write(&file, &runbook).unwrap();
    let state = dir.path().join("state");
    let out = Ripcord::new()
        .state(&state)
        .current_dir(dir.path())
        .args(["run", "--json", file.to_str().unwrap()])
        .run();
    assert_eq!(out.code, 0, "{}\n{runbook}", out.transcript());
    assert!(
        !dir.path().join("PWNED").exists(),
        "a value was run by the shell"
    );
    let records = crate::support::records(&state).unwrap();
    for context in ["bare", "single", "double"] {
        let mut got: Vec<String> = records
            .iter()
            .filter(|r| {
                r["kind"] == "step_finished"
                    && r["step"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("{context}["))
            })
            .map(|r| r["outputs"]["stdout"].as_str().unwrap().to_string())
            .collect();
        got.sort();
        assert_eq!(got.len(), strings.len(), "{context}");
        assert!(got == strings, "{context}: a value changed on its way");
    }
}

/// Every file under `dir`, read.
pub fn files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push((
                path.display().to_string(),
                std::fs::read(&path).unwrap_or_default(),
            ));
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn a_secret_never_leaves_the_process_that_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let canary = format!("canary-{}-Zq7", std::process::id());
    let encoded = base64::engine::general_purpose::STANDARD.encode(&canary);
    let runbook = "version: 1\nname: canary\n\
        inputs:\n  token: { type: string, secret: true, env: CANARY_TOKEN }\n\
        steps:\n\
        - { id: use-env, uses: shell.run, with: { argv: [sh, -c, 'echo \"token=$TOKEN\"; echo \"seen=$TOKEN\" >> $RIPCORD_OUTPUT; sleep 1'], env: { TOKEN: \"${{ inputs.token }}\" } } }\n\
        - { id: use-stdin, uses: shell.run, with: { argv: [sh, -c, 'read t; echo \"stdin=$t\" >&2; printf %s \"$t\" | base64'], stdin: \"${{ inputs.token }}\" } }\n\
        - { id: fail-loud, uses: shell.run, on_failure: continue, with: { argv: [sh, -c, 'echo \"cannot log in with $TOKEN\" >&2; exit 1'], env: { TOKEN: \"${{ inputs.token }}\" } } }\n\
        - { id: assert, needs: [use-env], uses: assert.that, on_failure: continue, with: { that: \"${{ steps.use-env.outputs.seen == 'nope' }}\" } }\n";
    let file = dir.path().join("canary.yaml");
    std::fs::write(&file, runbook).unwrap();
    let state = dir.path().join("state");
    let reports: Vec<String> = ["text", "md", "json", "junit", "html"]
        .iter()
        .map(|f| format!("{f}:{}", dir.path().join(format!("report.{f}")).display()))
        .collect();
    let mut args = vec![
        "run".to_string(),
        file.display().to_string(),
        "--json".into(),
    ];
    for r in &reports {
        args.push("--report".into());
        args.push(r.clone());
    }
    let child = Ripcord::new()
        .state(&state)
        .env("CANARY_TOKEN", &canary)
        .args(&args)
        .spawn();
    // While it runs: no process's command line carries the secret.
    let deadline = std::time::Instant::now() + Duration::from_millis(800);
    let mut looked = 0;
    while std::time::Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                looked += 1;
                assert!(
                    !contains(&cmdline, &canary),
                    "secret in /proc/{:?}/cmdline",
                    entry.file_name()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(looked > 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(!contains(bytes, &canary), "secret in ripcord's {name}");
        assert!(
            !contains(bytes, &encoded),
            "base64 of the secret in ripcord's {name}"
        );
    }
    let mut all = Vec::new();
    files(dir.path(), &mut all);
    assert!(all.len() >= 7, "journal, lock, five reports");
    for (name, bytes) in all.iter().filter(|(n, _)| !n.ends_with("canary.yaml")) {
        assert!(!contains(bytes, &canary), "secret in {name}");
        assert!(!contains(bytes, &encoded), "base64 of the secret in {name}");
    }
    // The masking kept what was around the secret: the run is still readable.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("token=***"), "{stdout}");
    assert!(stdout.contains("cannot log in with ***"), "{stdout}");
}

/// An approval's prompt is printed for the operator: a secret in it is masked there too.
#[test]
fn a_secret_in_an_approval_prompt_is_masked() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let canary = format!("prompt-canary-{}", std::process::id());
    let file = dir.path().join("prompt.yaml");
    std::fs::write(
        &file,
        "version: 1\nname: prompt\ninputs:\n  token: { type: string, secret: true, env: PROMPT_TOKEN }\n\
         steps:\n  - { id: gate, uses: approval.ask, with: { prompt: \"go with ${{ inputs.token }}?\" } }\n",
    )
    .unwrap();
    let child = Ripcord::new()
        .state(&state)
        .env("PROMPT_TOKEN", &canary)
        .args(["run", file.to_str().unwrap()])
        .spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let run_id = loop {
        let waiting = crate::support::records(&state)
            .filter(|rs| rs.iter().any(|r| r["kind"] == "approval_waiting"))
            .map(|rs| rs[0]["run_id"].as_str().unwrap().to_string());
        if let Some(id) = waiting {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "no approval wait");
        std::thread::sleep(Duration::from_millis(50));
    };
    let answer = Ripcord::new()
        .state(&state)
        .args(["approve", &run_id, "gate"])
        .run();
    assert_eq!(answer.code, 0, "{}", answer.transcript());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("go with ***?"), "{stderr}");
    assert!(!stderr.contains(&canary), "{stderr}");
}

/// A secret too short to mask is refused before anything runs; a malformed secret is never
/// echoed in a diagnostic (`validate --json` included, which CI turns into annotations).
#[test]
fn short_secrets_are_refused_and_bad_ones_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pin.yaml");
    std::fs::write(
        &file,
        "version: 1\nname: pin\ninputs:\n  pin: { type: integer, secret: true }\n\
         steps:\n  - { id: use, uses: shell.run, with: { argv: [sh, -c, 'echo \"PIN=$PIN\"'], env: { PIN: \"${{ inputs.pin }}\" } } }\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let short = Ripcord::new()
        .state(dir.path())
        .args(["run", file, "-i", "pin=42"])
        .run();
    assert_eq!(short.code, 2, "{}", short.transcript());
    assert!(
        short.stderr.contains("too short to be masked safely"),
        "{}",
        short.stderr
    );
    assert!(
        !dir.path().join("runs").exists(),
        "nothing ran, nothing recorded"
    );
    let bad = "s3cr3t-not-a-number";
    for args in [
        vec!["run", file, "-i"],
        vec!["validate", "--json", file, "-i"],
    ] {
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        args.push(format!("pin={bad}"));
        let out = Ripcord::new().state(dir.path()).args(&args).run();
        assert_eq!(out.code, 2, "{}", out.transcript());
        assert!(
            !out.stdout.contains(bad) && !out.stderr.contains(bad),
            "{}",
            out.transcript()
        );
        assert!(
            out.transcript().contains("not shown: the input is secret"),
            "{}",
            out.transcript()
        );
    }
    // Long enough: it runs, and the step's output shows it masked.
    let ok = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", file, "-i", "pin=98765431"])
        .run();
    assert_eq!(ok.code, 0, "{}", ok.transcript());
    assert!(!ok.stdout.contains("98765431"), "{}", ok.stdout);
    let finished = ok
        .events()
        .into_iter()
        .find(|e| e["kind"] == "step_finished")
        .unwrap();
    assert_eq!(finished["outputs"]["stdout"], "PIN=***\n", "{finished}");
}

/// Where the shell would read more than a word (arithmetic, a `case` inside `$( )`, an
/// expansion with an operator, a comment after a line continuation, a here-document spelled
/// across one, `$` before the value), `${{ }}` in `script:` is refused at validate: each of these
/// ran an input as code through an earlier version of the quoting.
#[test]
fn script_expressions_the_shell_would_read_as_code_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = [
        "echo $(( ${{ inputs.x }} + 1 ))",
        "echo $(( '${{ inputs.x }}' ))",
        "echo $[ ${{ inputs.x }} ]",
        "(( ${{ inputs.x }} ))",
        "echo \"$(case a in a) printf %s ${{ inputs.x }};; esac)\"",
        "printf %s ${u:-'}'} ${{ inputs.x }}",
        "v=$(#${{ inputs.x }}\necho hi)",
        "printf %s ok \\\n#${{ inputs.x }}",
        "cat <\\\n<EOF\n${{ inputs.x }}\nEOF",
        "printf '%s' $${{ inputs.x }}",
        "echo `echo ${{ inputs.x }}`",
        "alias log='logger -t failover -- # audit trail'\nlog ${{ inputs.x }}",
        "eval echo ${{ inputs.x }}",
        "trap 'echo ${{ inputs.x }}' EXIT",
    ];
    for (n, script) in scripts.iter().enumerate() {
        let file = dir.path().join(format!("s{n}.yaml"));
        let body = serde_json::to_string(script).unwrap();
        std::fs::write(
            &file,
            format!(
                "version: 1\nname: s\ninputs:\n  x: {{ type: string, default: a }}\nsteps:\n  - {{ id: s, uses: shell.run, with: {{ script: {body} }} }}\n"
            ),
        )
        .unwrap();
        refused(&file, "ripcord::script-expression");
    }
    // A secret list in for_each would name steps with its items.
    let file = dir.path().join("each.yaml");
    std::fs::write(
        &file,
        "version: 1\nname: each\ninputs:\n  toks: { type: list, secret: true, default: [] }\nsteps:\n  - { id: s, for_each: \"${{ inputs.toks }}\", uses: sleep.for, with: { duration: 1ms } }\n",
    )
    .unwrap();
    refused(&file, "ripcord::secret-in-for-each");
}

/// `validate` refuses `file` (exit 2) with the diagnostic `code`.
fn refused(file: &Path, code: &str) {
    let out = Ripcord::new()
        .args(["validate", file.to_str().unwrap()])
        .run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(
        out.stderr.contains(code),
        "{}: {}",
        file.display(),
        out.stderr
    );
}

/// A value that is not a string goes into `script:` and `argv` as JSON, as tools read it.
#[test]
fn values_that_are_not_strings_are_put_in_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("json.yaml");
    std::fs::write(
        &file,
        "version: 1\nname: json\ninputs:\n  f: { type: boolean, default: true }\n  l: { type: list, default: [1, \"a b\"] }\nsteps:\n\
         - { id: s, uses: shell.run, with: { script: \"printf '%s|%s' ${{ inputs.f }} ${{ inputs.l }}\" } }\n\
         - { id: a, uses: shell.run, with: { argv: [printf, '%s', \"--f=${{ inputs.f }}\"] } }\n",
    )
    .unwrap();
    let out = Ripcord::new()
        .state(dir.path())
        .args(["run", "--json", file.to_str().unwrap()])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let stdout = |step: &str| {
        out.events()
            .into_iter()
            .find(|e| e["kind"] == "step_finished" && e["step"] == step)
            .unwrap()["outputs"]["stdout"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(stdout("s"), "true|[1,\"a b\"]");
    assert_eq!(stdout("a"), "--f=true");
}

/// A no-break space pasted before a `#` is no blank to `sh`: the `#` starts no comment, the
/// quote after it opens, and the value is quoted for where `sh` really reads it.
#[test]
fn a_no_break_space_before_a_hash_does_not_fool_the_quoting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nbsp.yaml");
    std::fs::write(
        &file,
        "version: 1\nname: nbsp\ninputs:\n  reason: { type: string }\nsteps:\n  - id: s\n    uses: shell.run\n    with:\n      script: |\n        echo reloading\u{a0}# don't restart\n        printf %s ${{ inputs.reason }}\n        echo '\n",
    )
    .unwrap();
    let out = Ripcord::new()
        .state(dir.path())
        .current_dir(dir.path())
        .args([
            "run",
            "--json",
            file.to_str().unwrap(),
            "-i",
            "reason=it's down; touch PWNED #",
        ])
        .run();
    assert!(!dir.path().join("PWNED").exists(), "{}", out.transcript());
    let finished = out
        .events()
        .into_iter()
        .find(|e| e["kind"] == "step_finished")
        .unwrap();
    let stdout = finished["outputs"]["stdout"].as_str().unwrap_or_default();
    assert!(stdout.contains("it's down; touch PWNED #"), "{finished}");
}

/// The validate-time type check judges only what is wrong whatever the value: an expression
/// that fails for some values (a division by zero, a string that is not a number) is left to run
/// time, also inside a module fed through `with:`.
#[test]
fn the_type_check_does_not_refuse_what_depends_on_the_value() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        "version: 1\nname: m\ninputs:\n  replicas: { type: integer, required: true }\nsteps:\n  - { id: s, uses: sleep.for, with: { duration: \"${{ (100 // (inputs.replicas - 1)) ~ 'ms' }}\" } }\n",
    )
    .unwrap();
    let file = dir.path().join("main.yaml");
    std::fs::write(
        &file,
        "version: 1\nname: main\ninputs:\n  replicas: { type: integer, required: true }\n  pg_version: { type: string, required: true }\nsteps:\n\
         - { id: m, include: m.yaml, with: { replicas: 3 } }\n\
         - { id: ratio, uses: sleep.for, with: { duration: \"${{ (100 // (inputs.replicas - 1)) ~ 'ms' }}\" } }\n\
         - { id: new, uses: sleep.for, when: \"${{ inputs.pg_version | int >= 15 }}\", with: { duration: 1ms } }\n",
    )
    .unwrap();
    let out = Ripcord::new()
        .args(["validate", file.to_str().unwrap()])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let out = Ripcord::new()
        .state(dir.path())
        .args([
            "run",
            file.to_str().unwrap(),
            "-i",
            "replicas=3",
            "-i",
            "pg_version=16",
        ])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
}

/// A secret input whose value comes from a command (a secret store's CLI): the command runs
/// once, at the start of a session that runs steps, never for validate, plan or a dry-run; its
/// trimmed stdout is the value, masked everywhere.
#[test]
fn a_secret_from_a_command_is_read_once_and_masked() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let calls = dir.path().join("calls");
    let seen = dir.path().join("seen");
    let canary = format!("store-canary-{}-Xk2", std::process::id());
    let file = dir.path().join("store.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nname: store\ninputs:\n  token: {{ type: string, secret: true, command: [sh, -c, 'echo call >> {calls}; printf \"  %s\\n\\n\" {canary}'] }}\n\
             steps:\n\
             - {{ id: a, uses: shell.run, with: {{ argv: [sh, -c, 'printf %s \"$T\" > {seen}; echo \"token=$T\"'], env: {{ T: \"${{{{ inputs.token }}}}\" }} }} }}\n\
             - {{ id: b, uses: shell.run, with: {{ argv: [sh, -c, 'echo \"again=$T\"'], env: {{ T: \"${{{{ inputs.token }}}}\" }} }} }}\n",
            calls = calls.display(),
            seen = seen.display(),
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    for args in [
        vec!["validate", file],
        vec!["plan", file],
        vec!["graph", file],
        vec!["run", file, "--dry-run"],
    ] {
        let out = Ripcord::new().state(&state).args(&args).run();
        assert_eq!(out.code, 0, "{args:?}\n{}", out.transcript());
        assert!(!calls.exists(), "`{}` ran the secret's command", args[0]);
    }
    let out = Ripcord::new()
        .state(&state)
        .args(["run", file, "--json"])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "call\n",
        "run once"
    );
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), canary, "trimmed");
    assert!(!out.stdout.contains(&canary), "{}", out.stdout);
    assert!(out.stdout.contains("token=***"), "{}", out.stdout);
    let mut all = Vec::new();
    files(&state, &mut all);
    assert!(!all.is_empty());
    for (name, bytes) in &all {
        assert!(!contains(bytes, &canary), "secret in {name}");
    }
    // `--input` wins over the command, which then does not run.
    let given = Ripcord::new()
        .state(&state)
        .args(["run", file, "-i", "token=given-value-123"])
        .run();
    assert_eq!(given.code, 0, "{}", given.transcript());
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "call\n");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "given-value-123");
}

/// A secret store that fails (no login, no such path, nothing printed, hung) stops the run
/// before any step, naming the input; what it printed on stdout is never shown.
#[test]
fn a_failing_secret_command_stops_the_run_before_any_step() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let touched = dir.path().join("touched");
    for (n, command, expect) in [
        (
            1,
            "[sh, -c, 'echo half-$((6*7))-zz; echo \"permission denied\" >&2; exit 3']",
            "failed with exit code 3: permission denied",
        ),
        (2, "[sh, -c, 'true']", "printed nothing"),
        (3, "[/nonexistent/vault, kv, get]", "cannot be run"),
    ] {
        let file = dir.path().join(format!("fail{n}.yaml"));
        std::fs::write(
            &file,
            format!(
                "version: 1\nname: store-fails\ninputs:\n  token: {{ type: string, secret: true, command: {command} }}\n\
                 steps:\n\
                 - {{ id: first, uses: shell.run, with: {{ argv: [touch, {}] }} }}\n\
                 - {{ id: use, uses: shell.run, with: {{ argv: [sh, -c, 'true'], env: {{ T: \"${{{{ inputs.token }}}}\" }} }} }}\n",
                touched.display()
            ),
        )
        .unwrap();
        for extra in [None, Some("--check")] {
            let mut args = vec!["run", file.to_str().unwrap()];
            args.extend(extra);
            let out = Ripcord::new().state(&state).args(&args).run();
            assert_eq!(out.code, 2, "{}", out.transcript());
            let text = out.transcript();
            assert!(
                text.contains("input `token`") && text.contains(expect),
                "{text}"
            );
            assert!(text.contains(&format!("fail{n}.yaml:4:")), "{text}");
            assert!(!text.contains("half-42-zz"), "{text}");
            assert!(!touched.exists(), "a step ran");
            assert!(!state.join("runs").exists(), "nothing recorded");
        }
    }
}
