//! plugins/postgres and plugins/haproxy against a real PostgreSQL primary + streaming standby
//! and a real HAProxy, through ripcord runs: every action, its check, and its undo.

use serde_json::Value;

use crate::cluster::Cluster;
use crate::support::Ripcord;

fn run(c: &Cluster, name: &str, steps: &str, extra: &[&str]) -> crate::support::Output {
    let file = c.dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, format!("version: 1\nname: {name}\nsteps:\n{steps}")).unwrap();
    let state = c.dir.path().join("state");
    let mut args = vec!["run", "--json", file.to_str().unwrap()];
    args.extend(extra);
    Ripcord::new().state(&state).args(&args).run()
}

fn outputs(out: &crate::support::Output, step: &str) -> Value {
    let e = out
        .events()
        .into_iter()
        .find(|e| e["kind"] == "step_finished" && e["step"] == step);
    let e = e.unwrap_or_else(|| panic!("no {step}: {}", out.transcript()));
    assert_eq!(e["status"], "succeeded", "{step}: {e}");
    e["outputs"].clone()
}

#[test]
fn postgres_and_haproxy_plugins_against_real_servers() {
    let c = Cluster::start();
    let (p, s) = (c.dsn(c.primary), c.dsn(c.standby));
    let sock = c.socket.display().to_string();
    c.sql(
        c.primary,
        "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000)",
    );

    // Read-only actions, as a pre-flight (check mode) and as a run.
    let probes = format!(
        "- {{ id: p, uses: postgres.is_primary, with: {{ dsn: \"{p}\" }} }}\n\
         - {{ id: s, uses: postgres.is_primary, with: {{ dsn: \"{s}\" }} }}\n\
         - {{ id: lag, uses: postgres.replication_lag, with: {{ primary: \"{p}\", standby: \"{s}\", max_bytes: 16777216 }},\n\
             retry: {{ attempts: 20, delay: 200ms }} }}\n\
         - {{ id: lag-seen-by-standby, uses: postgres.replication_lag, with: {{ dsn: \"{s}\", max_bytes: 16777216 }},\n\
             retry: {{ attempts: 20, delay: 200ms }} }}\n\
         - {{ id: lb, uses: haproxy.show_servers, with: {{ socket: \"{sock}\", backend: pg }} }}\n"
    );
    let check = run(&c, "probes", &probes, &["--check"]);
    assert_eq!(check.code, 0, "{}", check.transcript());
    for out in [check, run(&c, "probes", &probes, &[])] {
        assert_eq!(outputs(&out, "p")["primary"], true);
        assert_eq!(outputs(&out, "p")["timeline"], 1);
        assert_eq!(outputs(&out, "s")["primary"], false);
        assert_eq!(outputs(&out, "s")["in_recovery"], true);
        assert_eq!(outputs(&out, "lag")["streaming"], true);
        assert!(outputs(&out, "lag")["lag_bytes"].as_i64().unwrap() < 16_777_216);
        assert_eq!(outputs(&out, "lag-seen-by-standby")["streaming"], true);
        let servers = outputs(&out, "lb")["servers"].clone();
        let state = |name: &str| {
            servers
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["server"] == name)
                .unwrap()["state"]
                .clone()
        };
        assert_eq!(state("standby"), "maint", "disabled in the config");
    }

    // A switchover in small: drain, read-only, caught up, promote, repoint.
    let switch = format!(
        "- {{ id: drain, uses: haproxy.set_server, with: {{ socket: \"{sock}\", backend: pg, server: primary, state: drain }},\n\
             undo: {{ uses: haproxy.set_server, with: {{ socket: \"{sock}\", backend: pg, server: primary, state: \"${{{{ steps.drain.outputs.previous_state }}}}\" }} }} }}\n\
         - {{ id: ro, needs: [drain], uses: postgres.set_read_only, with: {{ dsn: \"{p}\", read_only: true, terminate_sessions: true }},\n\
             undo: {{ uses: postgres.set_read_only, with: {{ dsn: \"{p}\", read_only: false }} }} }}\n\
         - {{ id: caught-up, needs: [ro], uses: postgres.wait_caught_up, with: {{ primary: \"{p}\", standby: \"{s}\" }}, timeout: 20s }}\n\
         - {{ id: bogus, needs: [caught-up], uses: haproxy.set_server, with: {{ socket: \"{sock}\", backend: pg, server: nope, state: ready }} }}\n"
    );
    let out = run(&c, "switch", &switch, &[]);
    assert_eq!(
        out.code,
        1,
        "the bogus server fails the run: {}",
        out.transcript()
    );
    assert_eq!(outputs(&out, "drain")["state"], "drain");
    assert_eq!(outputs(&out, "drain")["previous_state"], "ready");
    assert!(
        c.try_sql(c.primary, "INSERT INTO t VALUES (1)")
            .unwrap_err()
            .contains("read-only")
    );
    let failed = out
        .events()
        .into_iter()
        .find(|e| e["step"] == "bogus" && e["kind"] == "step_finished")
        .unwrap();
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("no server pg/nope"),
        "{failed}"
    );
    // Rollback: writable again and back in rotation.
    let run_id = out.events()[0]["run_id"].as_str().unwrap().to_string();
    let back = Ripcord::new()
        .state(&c.dir.path().join("state"))
        .args(["rollback", &run_id])
        .run();
    assert_eq!(back.code, 0, "{}", back.transcript());
    c.wait_for(
        || c.try_sql(c.primary, "INSERT INTO t VALUES (2)").is_ok(),
        "the primary to be writable again",
    );

    let promote = format!(
        "- {{ id: ro, uses: postgres.set_read_only, with: {{ dsn: \"{p}\", read_only: true, terminate_sessions: true }} }}\n\
         - {{ id: caught-up, needs: [ro], uses: postgres.wait_caught_up, with: {{ primary: \"{p}\", standby: \"{s}\" }}, timeout: 20s }}\n\
         - {{ id: promote, needs: [caught-up], uses: postgres.promote, with: {{ dsn: \"{s}\" }}, timeout: 60s }}\n\
         - {{ id: writable, needs: [promote], uses: postgres.is_primary, with: {{ dsn: \"{s}\", require_writable: true }}, retry: {{ attempts: 50, delay: 200ms }} }}\n\
         - {{ id: enable, needs: [writable], uses: haproxy.set_server, with: {{ socket: \"{sock}\", backend: pg, server: standby, state: ready }} }}\n\
         - {{ id: fence, needs: [enable], uses: haproxy.set_server, with: {{ socket: \"{sock}\", backend: pg, server: primary, state: maint }} }}\n\
         - {{ id: again, needs: [promote], uses: postgres.promote, with: {{ dsn: \"{s}\" }} }}\n"
    );
    let out = run(&c, "promote", &promote, &[]);
    assert_eq!(out.code, 0, "{}", out.transcript());
    assert_eq!(outputs(&out, "promote")["promoted"], true);
    assert_eq!(
        outputs(&out, "promote")["timeline"],
        2,
        "promotion starts a new timeline"
    );
    assert_eq!(
        outputs(&out, "again")["promoted"],
        false,
        "promoting a primary is a no-op"
    );
    assert_eq!(outputs(&out, "fence")["state"], "maint");
    // Every row written before the switch is on the new primary, and it takes writes.
    assert_eq!(c.sql(c.standby, "SELECT count(*) FROM t"), "1001");
    assert!(c.try_sql(c.standby, "INSERT INTO t VALUES (3)").is_ok());
    // Through HAProxy, connections now reach the new primary.
    c.wait_for(
        || {
            c.sql(c.proxy, "SELECT pg_is_in_recovery()") == "f"
                && c.sql(c.proxy, "SELECT count(*) FROM t") == "1002"
        },
        "HAProxy to route to the new primary",
    );

    // A name that would smuggle a second runtime-API command is refused before anything is
    // sent: written in the runbook, by validate (the plugin's schema has a `pattern`); given as
    // an input, when the step's params are rendered. The fenced old primary stays in
    // maintenance.
    let smuggled = "pg; set server pg/primary state ready";
    let smuggle = format!(
        "- {{ id: smuggle, uses: haproxy.set_server, with: {{ socket: \"{sock}\", backend: \"{smuggled}\", server: standby, state: ready }} }}\n"
    );
    let out = run(&c, "smuggle", &smuggle, &[]);
    assert_eq!(out.code, 2, "{}", out.transcript());
    assert!(
        out.stderr
            .contains("param `backend` must match the pattern"),
        "{}",
        out.stderr
    );
    let smuggle = format!(
        "- {{ id: smuggle, uses: haproxy.set_server, with: {{ socket: \"{sock}\", backend: \"${{{{ inputs.backend }}}}\", server: standby, state: ready }} }}\n"
    );
    let smuggle = format!("inputs: {{ backend: {{ type: string }} }}\nsteps:\n{smuggle}");
    let file = c.dir.path().join("smuggle-input.yaml");
    std::fs::write(&file, format!("version: 1\nname: smuggle-input\n{smuggle}")).unwrap();
    let out = Ripcord::new()
        .state(&c.dir.path().join("state"))
        .args(["run", "--json", file.to_str().unwrap()])
        .args(["-i", &format!("backend={smuggled}")])
        .run();
    assert_eq!(out.code, 1, "{}", out.transcript());
    let failed = out
        .events()
        .into_iter()
        .find(|e| e["step"] == "smuggle" && e["kind"] == "step_finished")
        .unwrap();
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("param `backend` must match the pattern"),
        "{failed}"
    );
    let look = run(
        &c,
        "look",
        &format!(
            "- {{ id: look, uses: haproxy.show_servers, with: {{ socket: \"{sock}\", backend: pg }} }}\n"
        ),
        &[],
    );
    let servers = outputs(&look, "look")["servers"].clone();
    let primary = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["server"] == "primary")
        .unwrap();
    assert_eq!(primary["state"], "maint", "{servers}");
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate it signed for `localhost` and 127.0.0.1 that the primary serves;
/// the primary then refuses connections that are not encrypted. Returns the CA's file and a
/// second CA's that signed nothing.
fn serve_tls(c: &Cluster) -> (String, String) {
    let sql = |statement: &str| c.try_sql(c.primary, statement);
    serve_tls_on(c.dir.path(), &c.data("primary"), &sql)
}

/// [`serve_tls`] for any server: its temp dir, its data directory, and how to run SQL on it.
pub fn serve_tls_on(
    dir: &std::path::Path,
    data: &std::path::Path,
    sql: &dyn Fn(&str) -> Result<String, String>,
) -> (String, String) {
    let d = dir.join("tls");
    std::fs::create_dir(&d).unwrap();
    for ca in ["ca", "other-ca"] {
        openssl(
            &d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=ripcord test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
        );
    }
    openssl(
        &d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    if crate::cluster::is_root() {
        let owned = std::process::Command::new("chown")
            .args(["-R", crate::cluster::PG_USER])
            .arg(&d)
            .status()
            .unwrap();
        assert!(owned.success());
    }
    let hba = data.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n{old}"),
    )
    .unwrap();
    for (key, value) in [
        ("ssl_cert_file", d.join("server.pem")),
        ("ssl_key_file", d.join("server.key")),
    ] {
        sql(&format!("ALTER SYSTEM SET {key} = '{}'", value.display())).unwrap();
    }
    sql("ALTER SYSTEM SET ssl = on").unwrap();
    sql("SELECT pg_reload_conf()").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").as_deref() != Ok("t") {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never served TLS"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (
        d.join("ca.pem").display().to_string(),
        d.join("other-ca.pem").display().to_string(),
    )
}

/// The postgres plugin speaks TLS (rustls) as libpq's `sslmode` says: a server that refuses
/// unencrypted connections is reached with `require` and verified with `verify-ca` /
/// `verify-full` against `sslrootcert`; a certificate from another CA, or a name it does not
/// cover, fails — and for `probe` that is a configuration error, never "down".
#[test]
fn postgres_plugin_speaks_tls_as_sslmode_says() {
    let c = Cluster::start();
    let (ca, other) = serve_tls(&c);
    let at = |host: &str, tls: &str| {
        format!(
            "host={host} port={} user=postgres dbname=postgres {tls}",
            c.primary
        )
    };
    let cases = [
        ("require", at("127.0.0.1", "sslmode=require"), true),
        ("default-prefer", at("127.0.0.1", ""), true),
        (
            "full-by-name",
            at(
                "localhost",
                &format!("sslmode=verify-full sslrootcert={ca}"),
            ),
            true,
        ),
        (
            "full-by-ip",
            at(
                "127.0.0.1",
                &format!("sslmode=verify-full sslrootcert='{ca}'"),
            ),
            true,
        ),
        (
            "ca-only",
            at("127.0.0.1", &format!("sslmode=verify-ca sslrootcert={ca}")),
            true,
        ),
        ("plain", at("127.0.0.1", "sslmode=disable"), false),
        (
            "other-ca",
            at(
                "127.0.0.1",
                &format!("sslmode=verify-full sslrootcert={other}"),
            ),
            false,
        ),
        (
            "other-ca-require",
            at("127.0.0.1", &format!("sslmode=require sslrootcert={other}")),
            false,
        ),
        ("bad-mode", at("127.0.0.1", "sslmode=verify-fulll"), false),
        // The certificate does not name `db.invalid`: verify-full refuses, verify-ca does not
        // compare names.
        (
            "wrong-name-full",
            at(
                "db.invalid hostaddr=127.0.0.1",
                &format!("sslmode=verify-full sslrootcert={ca}"),
            ),
            false,
        ),
        (
            "wrong-name-ca",
            at(
                "db.invalid hostaddr=127.0.0.1",
                &format!("sslmode=verify-ca sslrootcert={ca}"),
            ),
            true,
        ),
    ];
    let steps: String = cases
        .iter()
        .map(|(id, dsn, _)| {
            format!(
                "- {{ id: {id}, uses: postgres.is_primary, on_failure: continue, with: {{ dsn: \"{dsn}\" }} }}\n"
            )
        })
        .collect();
    let probe = format!(
        "- {{ id: probe-other-ca, uses: postgres.probe, on_failure: continue, with: {{ dsn: \"{}\" }} }}\n",
        at(
            "127.0.0.1",
            &format!("sslmode=verify-full sslrootcert={other}")
        )
    );
    let out = run(&c, "tls", &(steps + &probe), &[]);
    // Failures of `on_failure: continue` steps are recorded; the run goes on.
    assert_eq!(out.code, 0, "{}", out.transcript());
    let finished: Vec<Value> = out
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "step_finished")
        .collect();
    let of = |id: &str| {
        finished
            .iter()
            .find(|e| e["step"] == id)
            .unwrap_or_else(|| panic!("no {id}: {}", out.transcript()))
            .clone()
    };
    for (id, _, ok) in &cases {
        let e = of(id);
        assert_eq!(e["status"] == "succeeded", *ok, "{id}: {e}");
        if *ok {
            assert_eq!(e["outputs"]["primary"], true, "{id}: {e}");
        }
    }
    assert!(
        of("plain")["error"]
            .as_str()
            .unwrap()
            .contains("no encryption"),
        "{}",
        of("plain")
    );
    let wrong = of("other-ca")["error"].as_str().unwrap().to_string();
    assert!(wrong.contains("certificate"), "{wrong}");
    let name = of("wrong-name-full")["error"].as_str().unwrap().to_string();
    assert!(name.contains("not valid for name \"db.invalid\""), "{name}");
    let probe = of("probe-other-ca");
    assert_eq!(probe["status"], "failed", "{probe}");
    assert!(
        probe["error"]
            .as_str()
            .unwrap()
            .contains("a configuration error"),
        "{probe}"
    );
}
