//! `ssh.run` against a real OpenSSH server on loopback (see [`crate::sshd`]): commands, outputs,
//! env that never reaches a command line, strict host keys, one connection for many steps, and
//! the connection closed on every way a session ends.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::sshd::Sshd;
use crate::support::{Ripcord, alive, step, write};

/// Waits up to 3 s for no live process to match `pattern`.
fn wait_gone(pattern: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive(pattern) {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A directory the server's account can write into, for commands to leave evidence in.
fn drop_box(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("box");
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    // The temp dir above it is 0700: let the account through.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    path
}

fn report(state: &Path, run_id: &str) -> serde_json::Value {
    let out = Ripcord::new()
        .state(state)
        .args(["report", run_id, "--format", "json"])
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

/// Processes whose command line mentions `needle`.
fn ssh_processes(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.starts_with("ssh ") && text.contains(needle) {
                found.push(text);
            }
        }
    }
    found
}

#[test]
fn ssh_run_gives_outputs_and_exit_codes_over_one_connection() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "remote.yaml",
        &format!(
            r#"version: 1
name: remote
inputs:
  hosts: {{ type: list, default: [a, b, c, d, e, f, g, h, i, j, k, l] }}
defaults: {{ retry: {{ attempts: 1 }} }}
steps:
  - id: each
    for_each: "${{{{ inputs.hosts }}}}"
    uses: ssh.run
    with: {{ {p}, argv: [sh, -c, 'echo "on $1 as $(id -un)"; echo "item=$1" >> "$RIPCORD_OUTPUT"; echo "step=$RIPCORD_STEP" >> "$RIPCORD_OUTPUT"; sleep 0.3', x, "${{{{ item }}}}"] }}
  - id: script
    uses: ssh.run
    with:
{block}
      script: |
        printf '%s\n' ${{{{ inputs.hosts[0] }}}} "it's" | tr a-z A-Z
        printf 'no newline at the end'
  - id: stdin
    uses: ssh.run
    with: {{ {p}, argv: [sh, -c, 'wc -l; cat >/dev/null'], stdin: "one\ntwo\nthree\n" }}
  - id: fails
    uses: ssh.run
    on_failure: continue
    with: {{ {p}, argv: [sh, -c, 'echo partial; echo "it broke" >&2; exit 7'] }}
"#,
            p = sshd.params(),
            block = sshd.params_block(6)
        ),
    );
    let out = Ripcord::new()
        .state(&state)
        .args(["run", &file, "--json", "--concurrency", "16"])
        .run();
    assert_eq!(
        out.code,
        0,
        "`fails` may fail (on_failure: continue)\n{}",
        out.transcript()
    );
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    let report = report(&state, &run_id);
    for item in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"] {
        let s = step(&report, &format!("each[{item}]"));
        assert_eq!(s["status"], "succeeded", "{s}");
        let outputs = &s["outputs"];
        assert_eq!(outputs["stdout"], format!("on {item} as {}\n", sshd.user));
        assert_eq!(outputs["item"], item);
        assert_eq!(outputs["step"], format!("each[{item}]"));
        assert_eq!(outputs["exit_code"], 0);
    }
    let script = &step(&report, "script")["outputs"];
    assert_eq!(
        script["stdout"], "A\nIT'S\nno newline at the end",
        "{script}"
    );
    assert_eq!(
        step(&report, "stdin")["outputs"]["stdout"]
            .as_str()
            .unwrap()
            .trim(),
        "3"
    );
    let fails = step(&report, "fails");
    assert_eq!(fails["status"], "failed");
    assert_eq!(fails["outputs"]["exit_code"], 7);
    assert_eq!(fails["outputs"]["stdout"], "partial\n");
    let error = fails["tries"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("exited with code 7") && error.contains("it broke"),
        "{error}"
    );
    // Fifteen steps, twelve of them at once (more than sshd's ten sessions a connection), on
    // one host: one login.
    assert_eq!(sshd.logins(), 1, "{}", sshd.log_text());
    // The connection was closed with the session.
    assert!(ssh_processes(&format!("-p {}", sshd.port)).is_empty());
}

#[test]
fn env_reaches_the_remote_command_and_no_command_line() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let evidence = drop_box(dir.path());
    let state = dir.path().join("state");
    // Quotes, a newline, `$`, a backslash and non-ASCII: every byte arrives as it was.
    let canary = format!("ssh-canary-{}-'q\"\n$HOME\\x é", std::process::id());
    let marker = format!("3.{}", std::process::id() % 1000);
    let file = write(
        dir.path(),
        "env.yaml",
        &format!(
            r#"version: 1
name: remote-env
inputs:
  token: {{ type: string, secret: true, env: SSH_CANARY }}
steps:
  - id: use
    uses: ssh.run
    with:
{p}
      argv: [sh, -c, 'printf %s "$TOKEN" > {evidence}/token; printf %s "$(cat)" > {evidence}/stdin; echo "seen=$TOKEN" >> "$RIPCORD_OUTPUT"; sleep {marker}']
      env: {{ TOKEN: "${{{{ inputs.token }}}}", PLAIN: 5 }}
      stdin: "${{{{ inputs.token }}}}"
"#,
            p = sshd.params_block(6),
            evidence = evidence.display()
        ),
    );
    // The remote command ends in `sleep {marker}`: its environment is looked at there, not in
    // ripcord's (which has the token from SSH_CANARY).
    let child = Ripcord::new()
        .state(&state)
        .env("SSH_CANARY", &canary)
        .args(["run", &file, "--json"])
        .spawn();
    let first_line = canary.lines().next().unwrap().to_string();
    // As it travels: each byte a `printf %b` octal escape.
    let encoded: String = first_line[..12]
        .bytes()
        .map(|b| format!("\\0{b:03o}"))
        .collect();
    // Looked at until the remote command has been seen with the token in its environment
    // (a process of the server's account, not ripcord, whose environment has it too), and
    // a little after.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut looked, mut in_environ) = (0, false);
    let mut after = 0;
    while after < 10 {
        assert!(
            Instant::now() < deadline,
            "the remote command was never seen"
        );
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                looked += 1;
                let text = String::from_utf8_lossy(&cmdline);
                assert!(
                    !text.contains(&first_line) && !text.contains(&encoded),
                    "secret on a command line: {text}"
                );
                let remote = text.starts_with("sleep") && text.contains(&marker);
                if remote && let Ok(environ) = std::fs::read(entry.path().join("environ")) {
                    in_environ |= String::from_utf8_lossy(&environ).contains(&first_line);
                }
            }
        }
        if in_environ {
            after += 1;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(looked > 0);
    assert!(
        in_environ,
        "the remote command's environment holds the token"
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(evidence.join("token")).unwrap(),
        canary
    );
    assert_eq!(
        std::fs::read_to_string(evidence.join("stdin")).unwrap(),
        canary
    );
    assert!(!stdout.contains(&first_line), "{stdout}");
    // Nothing recorded holds it either.
    let mut all = Vec::new();
    crate::secrets::files(&state, &mut all);
    assert!(!all.is_empty());
    for (name, bytes) in &all {
        assert!(
            !String::from_utf8_lossy(bytes).contains(&first_line),
            "secret in {name}"
        );
    }
}

#[test]
fn an_unknown_or_changed_host_key_is_refused_before_anything_runs() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let evidence = drop_box(dir.path());
    let state = dir.path().join("state");
    // A known_hosts that names another key for this host (a changed key), and an empty one
    // (an unknown host).
    let other = dir.path().join("other_key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(made.success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut fields = other_pub.split_whitespace();
    let changed = dir.path().join("changed_hosts");
    std::fs::write(
        &changed,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            sshd.port,
            fields.next().unwrap(),
            fields.next().unwrap()
        ),
    )
    .unwrap();
    let unknown = dir.path().join("empty_hosts");
    std::fs::write(&unknown, "").unwrap();
    for (name, known) in [("changed", &changed), ("unknown", &unknown)] {
        let params = sshd.params().replace(
            &format!("known_hosts: {}", sshd.known_hosts.display()),
            &format!("known_hosts: {}", known.display()),
        );
        let file = write(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                "version: 1\nname: hostkey\nsteps:\n  - {{ id: touch, uses: ssh.run, retry: {{ attempts: 3, delay: 10ms }}, with: {{ {params}, argv: [touch, {}/{name}] }} }}\n",
                evidence.display()
            ),
        );
        let out = Ripcord::new().state(&state).args(["run", &file]).run();
        assert_eq!(out.code, 1, "{}", out.transcript());
        let text = out.transcript();
        let why = if name == "changed" {
            "a changed key"
        } else {
            "an unknown host key"
        };
        assert!(
            text.contains(why)
                && text.contains(&known.display().to_string())
                && text.contains("nothing ran"),
            "{text}"
        );
        // Not retried: a host key does not mend by itself.
        assert!(
            !text.contains("attempt 2") && !text.contains("retry"),
            "{text}"
        );
        assert!(
            !evidence.join(name).exists(),
            "the command ran on a {name} host key"
        );
        // `run --check` finds it too.
        let check = Ripcord::new()
            .state(&state)
            .args(["run", &file, "--check"])
            .run();
        assert_eq!(check.code, 1, "{}", check.transcript());
    }
    assert_eq!(sshd.logins(), 0, "{}", sshd.log_text());
}

#[test]
fn check_mode_connects_and_runs_nothing() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let evidence = drop_box(dir.path());
    let state = dir.path().join("state");
    // The port comes from a `number` input given with -i: a whole number is that port (it was
    // once read as 2222.0 and dropped for ssh's default, 22).
    let params = sshd.params().replace(
        &format!("port: {}", sshd.port),
        "port: \"${{ inputs.port }}\"",
    );
    let file = write(
        dir.path(),
        "check.yaml",
        &format!(
            "version: 1\nname: check\ninputs:\n  port: {{ type: number, default: 1 }}\nsteps:\n  - {{ id: touch, uses: ssh.run, with: {{ {params}, argv: [touch, {}/ran] }} }}\n",
            evidence.display()
        ),
    );
    let out = Ripcord::new()
        .state(&state)
        .args([
            "run",
            &file,
            "--check",
            "-i",
            &format!("port={}", sshd.port),
        ])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(!evidence.join("ran").exists());
    assert_eq!(sshd.logins(), 1, "the check logged in");
    // A port nobody listens on fails the check.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = Ripcord::new()
        .state(&state)
        .args([
            "run",
            &file,
            "--check",
            "-i",
            &format!("port={closed_port}"),
        ])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(
        out.transcript().contains("cannot connect"),
        "{}",
        out.transcript()
    );
    // A port that is not whole is refused, never replaced by ssh's default.
    let out = Ripcord::new()
        .state(&state)
        .args(["run", &file, "--check", "-i", "port=2222.5"])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(out.transcript().contains("port"), "{}", out.transcript());
    assert_eq!(sshd.logins(), 1);
}

/// A remote command that outlives its step's timeout is stopped on the host, not left running.
#[test]
fn a_timed_out_remote_command_is_stopped_on_the_host() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let marker = format!("{}.{}", 40, std::process::id() % 1000);
    let file = write(
        dir.path(),
        "timeout.yaml",
        &format!(
            // Connected first: the timeout is the command's alone.
            "version: 1\nname: timeout\nsteps:\n  - {{ id: connect, uses: ssh.run, with: {{ {p}, argv: [\"true\"] }} }}\n  - {{ id: hang, needs: [connect], uses: ssh.run, timeout: 2s, retry: {{ attempts: 1 }}, with: {{ {p}, argv: [sh, -c, 'echo started-hanging >&2; sleep {marker}; echo late'] }} }}\n",
            p = sshd.params()
        ),
    );
    let out = Ripcord::new()
        .state(&state)
        .args(["run", &file, "--json"])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    // What it wrote before it was stopped is the timeout's evidence.
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    let report = report(&state, &run_id);
    let tried = &step(&report, "hang")["tries"][0];
    assert_eq!(tried["error"], "timed out after 2s", "{tried}");
    assert_eq!(tried["stderr_tail"], "started-hanging", "{tried}");
    wait_gone(
        &format!("-c sleep {marker}"),
        "the remote sleep outlived its step",
    );
}

/// An interrupt stops the remote command and closes the connection; so does `kill -9` of
/// ripcord (the supervisor ends the master).
#[test]
fn an_interrupt_or_kill_closes_the_connection() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    // 1: an interrupt while the command runs; 2: an interrupt as the client starts, before the
    // command may have begun on the host; 3: kill -9 of ripcord.
    for (n, signal) in [(1, libc::SIGINT), (2, libc::SIGINT), (3, libc::SIGKILL)] {
        let state = dir.path().join(format!("state{n}"));
        let marker = format!("{}.{}{n}", 50, std::process::id() % 1000);
        let file = write(
            dir.path(),
            &format!("int{n}.yaml"),
            &format!(
                "version: 1\nname: interrupt\nsteps:\n  - {{ id: hang, uses: ssh.run, with: {{ {}, argv: [sh, -c, 'sleep {marker}'] }} }}\n",
                sshd.params()
            ),
        );
        let child = Ripcord::new().state(&state).args(["run", &file]).spawn();
        if n == 2 {
            // The client's own command line names the remote command (quoted).
            crate::support::wait_alive(&format!("'sleep {marker}'"));
        } else {
            // The remote shell's (unquoted).
            crate::support::wait_alive(&format!("-c sleep {marker}"));
        }
        let port = format!("-p {}", sshd.port);
        if n != 2 {
            assert!(!ssh_processes(&port).is_empty(), "a master is up");
        }
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let out = child.wait_with_output().unwrap();
        if signal == libc::SIGINT {
            assert_eq!(out.status.code(), Some(3));
        }
        let deadline =
            Instant::now() + Duration::from_secs(if signal == libc::SIGINT { 3 } else { 4 });
        while !ssh_processes(&port).is_empty() {
            assert!(
                Instant::now() < deadline,
                "ssh processes left after {signal}: {:?}",
                ssh_processes(&port)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if signal == libc::SIGKILL {
            // Nothing is left on this side to stop the remote command after a `kill -9`: it
            // runs to its own end (docs/remote.md says so, and resume finds the step in doubt).
            let _ = std::process::Command::new("pkill")
                .args(["-f", "--", &format!("-c sleep {marker}")])
                .status();
        } else {
            // The remote command was stopped, not just disconnected.
            wait_gone(
                &format!("-c sleep {marker}"),
                "the remote sleep outlived the interrupt",
            );
        }
    }
}

#[test]
fn ssh_params_are_checked_at_validate() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "bad.yaml",
        "version: 1\nname: bad\ninputs:\n  token: { type: string, secret: true, env: T }\nsteps:\n\
         - { id: a, uses: ssh.run, with: { host: -oProxyCommand=x, argv: [true] } }\n\
         - { id: b, uses: ssh.run, with: { host: db1, argv: [echo, \"${{ inputs.token }}\"] } }\n\
         - { id: c, uses: ssh.run, with: { host: db1, argv: [true], env: { \"A-B\": x } } }\n\
         - { id: d, uses: ssh.run, with: { argv: [true] } }\n",
    );
    let out = Ripcord::new().args(["validate", &file]).run();
    assert_eq!(out.code, 2, "{}", out.transcript());
    for (line, what) in [(6, "host"), (7, "token"), (8, "env"), (9, "host")] {
        assert!(
            out.stderr.contains(&format!("bad.yaml:{line}:")),
            "no error at line {line} ({what}):\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("secret input `token`"),
        "{}",
        out.stderr
    );
}

/// An inventory in an input file (hosts with their variables, groups of host names) fans a step
/// out over a group; each instance reaches its host with that host's variables.
#[test]
fn an_inventory_file_fans_ssh_steps_out_over_a_group() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let runbook = write(
        dir.path(),
        "fleet.yaml",
        &format!(
            r#"version: 1
name: fleet
inputs:
  hosts: {{ type: map }}
  groups: {{ type: map }}
steps:
  - id: greet
    for_each: "${{{{ inputs.groups.app }}}}"
    uses: ssh.run
    with:
      host: "${{{{ inputs.hosts[item].address }}}}"
      port: "${{{{ inputs.hosts[item].port }}}}"
      user: {user}
      identity: {identity}
      known_hosts: {known}
      argv: [sh, -c, 'echo "$GREETING from $(id -un)"']
      env: {{ GREETING: "${{{{ inputs.hosts[item].greeting }}}}" }}
"#,
            user = sshd.user,
            identity = sshd.identity.display(),
            known = sshd.known_hosts.display()
        ),
    );
    let inventory = write(
        dir.path(),
        "inventory.yaml",
        &format!(
            "hosts:\n  app1: {{ address: 127.0.0.1, port: {p}, greeting: hello }}\n  \
             app2: {{ address: 127.0.0.1, port: {p}, greeting: bonjour }}\n  \
             db1: {{ address: 127.0.0.1, port: {p}, greeting: never }}\n\
             groups:\n  app: [app1, app2]\n  db: [db1]\n",
            p = sshd.port
        ),
    );
    let plan = Ripcord::new()
        .args(["plan", &runbook, "--input-file", &inventory])
        .run();
    assert_eq!(plan.code, 0, "{}", plan.transcript());
    assert!(plan.stdout.contains("greet[app1]") && plan.stdout.contains("greet[app2]"));
    assert!(!plan.stdout.contains("db1]"), "{}", plan.stdout);
    let out = Ripcord::new()
        .state(&state)
        .args(["run", "--json", &runbook, "--input-file", &inventory])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    let report = report(&state, &run_id);
    for (host, greeting) in [("app1", "hello"), ("app2", "bonjour")] {
        assert_eq!(
            step(&report, &format!("greet[{host}]"))["outputs"]["stdout"],
            format!("{greeting} from {}\n", sshd.user)
        );
    }
}

/// A connection that drops between steps (the host rebooted, a firewall cut it) is opened again
/// by the next step for that host.
#[test]
fn a_dropped_connection_is_opened_again() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let file = write(
        dir.path(),
        "drop.yaml",
        &format!(
            "version: 1\nname: drop\nsteps:\n\
             - {{ id: first, uses: ssh.run, with: {{ {p}, argv: [\"true\"] }} }}\n\
             - {{ id: cut, needs: [first], uses: shell.run, with: {{ argv: [sh, -c, 'pkill -f \"$M\"; while pgrep -f \"$M\" >/dev/null; do sleep 0.05; done'], env: {{ M: 'ssh -N -M .*-p {port} ' }} }} }}\n\
             - {{ id: again, needs: [cut], uses: ssh.run, with: {{ {p}, argv: [echo, back] }} }}\n\
             - {{ id: and-again, needs: [again], uses: ssh.run, with: {{ {p}, argv: [\"true\"] }} }}\n\
             - {{ id: once-more, needs: [and-again], uses: ssh.run, with: {{ {p}, argv: [\"true\"] }} }}\n",
            p = sshd.params(),
            port = sshd.port
        ),
    );
    let out = Ripcord::new()
        .state(&state)
        .args(["run", "--json", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(
        out.stdout.contains(r#""stdout":"back\n""#),
        "{}",
        out.stdout
    );
    // A new master for the three steps after the cut (gone when `again` starts: a master that
    // is still dying could be taken for alive by one step, which then connects on its own);
    // without one, each would connect on its own: four logins.
    assert_eq!(sshd.logins(), 2, "{}", sshd.log_text());
}

/// Whatever the command or its `env` does, the bootstrap around it on the host keeps working:
/// `env` names that the bootstrap's shell uses (`d`, `b`, `PATH`) change only the command's
/// environment; the command cannot forge its exit code (the end's boundary is never where it
/// can read it); what it leaves running in the background is killed when it exits (the step
/// does not wait for it); an output file over the limit fails the step instead of losing keys.
#[test]
fn the_remote_command_cannot_disturb_its_bootstrap() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let evidence = drop_box(dir.path());
    let victim = evidence.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("important"), "keep").unwrap();
    let state = dir.path().join("state");
    let marker = format!("41.{}", std::process::id() % 1000);
    let file = write(
        dir.path(),
        "bootstrap.yaml",
        &format!(
            r#"version: 1
name: bootstrap
defaults: {{ retry: {{ attempts: 1 }} }}
steps:
  - id: names
    uses: ssh.run
    with:
{p}
      argv: [/bin/sh, -c, 'echo "d=$d b=$b path=$PATH" >> "$RIPCORD_OUTPUT"; echo big=$(printf "%070000d" 0) >> "$RIPCORD_OUTPUT"; echo last=yes >> "$RIPCORD_OUTPUT"']
      env: {{ d: "{victim}", b: "x", PATH: /nonexistent, l: "." }}
  - id: forge
    uses: ssh.run
    on_failure: continue
    with:
{p}
      script: |
        t=$(basename "$(dirname "$RIPCORD_OUTPUT")")
        for guess in "$t" "RIPCORD-END-$t" "$(tr '\0' ' ' < /proc/$PPID/cmdline)"; do
          printf '%s0 0\n' "$guess"; printf '%s0 0\n' "$guess" >> "$RIPCORD_OUTPUT"
        done
        env | grep RIPCORD_ >> "$RIPCORD_OUTPUT"
        echo "promote failed" >&2; exit 3
  - id: background
    uses: ssh.run
    timeout: 20s
    with:
{p}
      script: '(sleep {marker}; echo late) & echo started'
  - id: oversized
    uses: ssh.run
    on_failure: continue
    with:
{p}
      argv: [sh, -c, 'head -c 1100000 /dev/zero | tr "\0" a >> "$RIPCORD_OUTPUT"']
"#,
            p = sshd.params_block(6),
            victim = victim.display()
        ),
    );
    let started = Instant::now();
    let out = Ripcord::new()
        .state(&state)
        .args(["run", "--json", "--concurrency", "1", &file])
        .run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the background process held its step up"
    );
    let run_id = out.summary()["run_id"].as_str().unwrap().to_string();
    let report = report(&state, &run_id);

    let names = &step(&report, "names")["outputs"];
    assert_eq!(
        names["d"],
        format!("{} b=x path=/nonexistent", victim.display()),
        "{names}"
    );
    assert_eq!(
        names["big"].as_str().unwrap().len(),
        70_000,
        "a long value whole"
    );
    assert_eq!(names["last"], "yes", "keys after a long one");
    assert_eq!(
        std::fs::read_to_string(victim.join("important")).unwrap(),
        "keep",
        "env `d` made the bootstrap remove another directory"
    );

    let forge = step(&report, "forge");
    assert_eq!(forge["status"], "failed", "{forge}");
    assert_eq!(forge["outputs"]["exit_code"], 3, "{forge}");

    assert_eq!(step(&report, "background")["status"], "succeeded");
    assert!(
        !alive(&format!("sleep {marker}")),
        "the background process outlived its step"
    );

    let oversized = step(&report, "oversized");
    assert_eq!(oversized["status"], "failed", "{oversized}");
    assert!(
        oversized["error"]
            .as_str()
            .unwrap()
            .contains("more than 1024 KiB"),
        "{oversized}"
    );
}

/// After `kill -9` of ripcord, the remote command runs on. A resumed attempt of that step waits
/// on the host for it (the step's lock), and when that waiting attempt is interrupted it never
/// runs, not even once the first command has ended; a later resume runs it, once.
#[test]
fn a_resumed_attempt_waits_for_the_orphaned_one_and_an_interrupt_while_waiting_runs_nothing() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let evidence = drop_box(dir.path());
    let log = evidence.join("log");
    let file = write(
        dir.path(),
        "orphan.yaml",
        &format!(
            "version: 1\nname: orphan\nsteps:\n  - id: slow\n    uses: ssh.run\n    idempotent: true\n    with:\n{p}\n      script: 'echo start-$RIPCORD_ATTEMPT-$$ >> {log}; sleep 4; echo end >> {log}'\n",
            p = sshd.params_block(6),
            log = log.display()
        ),
    );
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let wait_lines = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while lines().len() < n {
            assert!(Instant::now() < deadline, "{:?}", lines());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut child = Ripcord::new().state(&state).args(["run", &file]).spawn();
    wait_lines(1);
    child.kill().unwrap();
    child.wait().unwrap();
    let id = crate::support::records(&state).unwrap()[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Resumed while the first command still runs: it waits on the host; interrupted there.
    let resumed = Ripcord::new().state(&state).args(["resume", &id]).spawn();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        lines().len(),
        1,
        "the resumed attempt ran beside the first: {:?}",
        lines()
    );
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(resumed.id() as i32, libc::SIGINT) };
    let out = resumed.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The first command ends; the interrupted attempt must not start after it.
    wait_lines(2);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(lines()[1], "end", "{:?}", lines());
    assert_eq!(
        lines().len(),
        2,
        "the interrupted attempt ran later: {:?}",
        lines()
    );
    // A resume now runs it, once.
    let out = Ripcord::new().state(&state).args(["resume", &id]).run();
    assert_eq!(out.code, 0, "{}", out.transcript());
    let all = lines();
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all[2].starts_with("start-") && all[3] == "end", "{all:?}");
}

/// `undo: { if_started: true }` runs after a failed attempt that may have acted, not after one
/// that never reached its host (ssh.run could not connect: nothing ran). Such an undo would
/// fail the same way and hold back the undos before it.
#[test]
fn an_if_started_undo_is_not_run_for_an_attempt_that_never_reached_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let made = dir.path().join("made");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let file = write(
        dir.path(),
        "unreached.yaml",
        &format!(
            "version: 1\nname: unreached\nrollback: auto\nsteps:\n  - id: first\n    uses: shell.run\n    with: {{ argv: [touch, {made}] }}\n    undo: {{ uses: shell.run, with: {{ argv: [rm, -f, {made}] }} }}\n  - id: remote\n    needs: [first]\n    uses: ssh.run\n    retry: {{ attempts: 2, delay: 100ms }}\n    with: {{ host: 127.0.0.1, port: {port}, known_hosts: {known}, argv: ['true'] }}\n    undo: {{ if_started: true, uses: ssh.run, with: {{ host: 127.0.0.1, port: {port}, known_hosts: {known}, argv: ['true'] }} }}\n",
            made = made.display(),
            known = known.display()
        ),
    );
    let out = Ripcord::new()
        .state(&state)
        .args(["run", "--json", &file])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert_eq!(
        out.summary()["rollback"],
        "succeeded",
        "{}",
        out.transcript()
    );
    assert!(!made.exists(), "the first step was not undone");
    let records = crate::support::records(&state).unwrap();
    assert!(
        records
            .iter()
            .filter(|r| r["kind"] == "attempt_failed")
            .all(|r| r["nothing_ran"] == true),
        "{records:?}"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["kind"] == "undo_started" && r["step"] == "remote"),
        "{records:?}"
    );

    // The same decided from the journal alone: `rollback: manual`, then `ripcord rollback`.
    let manual_state = dir.path().join("state-manual");
    let manual = write(
        dir.path(),
        "unreached-manual.yaml",
        &std::fs::read_to_string(&file)
            .unwrap()
            .replace("rollback: auto", "rollback: manual"),
    );
    let out = Ripcord::new()
        .state(&manual_state)
        .args(["run", "--json", &manual])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    assert!(made.exists());
    let id = out.summary()["run_id"].as_str().unwrap().to_string();
    let back = Ripcord::new()
        .state(&manual_state)
        .args(["rollback", &id])
        .run();
    assert_eq!(back.code, 0, "{}", back.transcript());
    assert!(!made.exists(), "the first step was not undone");
    let records = crate::support::records(&manual_state).unwrap();
    assert!(
        !records
            .iter()
            .any(|r| r["kind"] == "undo_started" && r["step"] == "remote"),
        "{records:?}"
    );
}
