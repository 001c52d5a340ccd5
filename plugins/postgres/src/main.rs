//! ripcord-plugin-postgres: the PostgreSQL side of a switchover or failover.
//!
//! Every connection string is libpq's, TLS included: `sslmode` (disable, allow, prefer,
//! require, verify-ca, verify-full) and `sslrootcert` are honoured with rustls (see tls.rs).
//!
//! - `is_primary {dsn, require_writable}`: role, read-only state, timeline, the database system
//!   identifier (one per cluster: a primary and its standbys share it) (check).
//! - `replication_lag {primary, standby, max_bytes}`: bytes between the primary's current WAL
//!   position and the standby's replay position; fails (retryably) above `max_bytes` or when
//!   the standby is not streaming (check).
//! - `wait_caught_up {primary, standby}`: until the standby has replayed everything the primary
//!   wrote (the step's timeout bounds the wait).
//! - `wait_replayed {dsn, past}`: until the standby has replayed the WAL record at `past` (the
//!   old primary's shutdown checkpoint, from `pg_controldata`: with it replayed, the standby has
//!   everything the old primary ever wrote, and promoting it loses nothing).
//! - `set_read_only {dsn, read_only, terminate_sessions}`: `default_transaction_read_only` via
//!   ALTER SYSTEM and a reload, and optionally ends the other client sessions (undo: the
//!   opposite value).
//! - `exec {dsn, sql}`: one SQL statement (a marker write, a read-back).
//! - `standby_status {dsn}`: what the standby last received and when it last heard from its
//!   primary — the data-loss window of an unplanned failover, as a `note` for the report.
//! - `promote {dsn, wait}`: `pg_promote()`; an instance that is already primary is left alone.
//! - `probe {dsn}`: whether the server is `up` (it answers a query) or `down` (nothing listens,
//!   no route, no answer within 10 s); anything else — a connection string that does not
//!   parse, a host name that does not resolve, a refused login, a missing database, a server
//!   starting up, shutting down or recovering — fails the step, so a failover guard never reads
//!   those as "down". A wrong port or host cannot be told from a dead server: a guard also
//!   asks the standby whether it still hears its primary (check).

use std::time::Duration;

use ripcord_plugin_sdk::{Action, Mode, Reply, Request, serve};
use serde_json::{Value, json};
use tokio_postgres::Client;

mod tls;

fn dsn_schema(extra: Value, required: &[&str]) -> Value {
    let mut props = json!({});
    for key in ["dsn", "primary", "standby"] {
        if required.contains(&key) {
            props[key] = json!({ "type": "string", "description": "libpq connection string" });
        }
    }
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            props[k] = v;
        }
    }
    json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false })
}

fn actions() -> Vec<Action> {
    vec![
        Action::new("is_primary", "whether the instance is a primary (not in recovery) and writable")
            .params(dsn_schema(json!({ "require_writable": { "type": "boolean" } }), &["dsn"]))
            .outputs(&["primary", "in_recovery", "read_only", "timeline", "system_id"])
            .check(),
        Action::new("replication_lag", "bytes the standby's replay is behind the primary")
            .params(json!({
                "type": "object",
                "properties": {
                    "dsn": { "type": "string", "description": "the standby alone: lag as it sees it" },
                    "primary": { "type": "string", "description": "libpq connection string" },
                    "standby": { "type": "string", "description": "libpq connection string" },
                    "max_bytes": { "type": "integer", "minimum": 0 }
                },
                "oneOf": [ { "required": ["dsn"] }, { "required": ["primary", "standby"] } ],
                "additionalProperties": false
            }))
            .outputs(&["lag_bytes", "primary_lsn", "standby_lsn", "streaming"])
            .check(),
        Action::new("wait_caught_up", "waits until the standby has replayed all the primary wrote")
            .params(dsn_schema(json!({}), &["primary", "standby"]))
            .outputs(&["lsn"]),
        Action::new("wait_replayed", "waits until the standby has replayed the record at an LSN")
            .params(dsn_schema(
                json!({
                    "past": { "type": "string", "pattern": "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$", "description": "an LSN, e.g. 0/3000148: the standby must replay past it" },
                    "system_id": { "type": "string", "description": "the old primary's database system identifier (pg_controldata): refuse a standby of another cluster" }
                }),
                &["dsn", "past"],
            ))
            .outputs(&["replay_lsn", "receive_lsn"]),
        Action::new("set_read_only", "default_transaction_read_only on or off, optionally ending sessions")
            .params(dsn_schema(
                json!({ "read_only": { "type": "boolean" }, "terminate_sessions": { "type": "boolean" } }),
                &["dsn"],
            ))
            .outputs(&["read_only", "terminated"])
            .undo(),
        Action::new("exec", "runs one SQL statement; the first column of its rows as `rows`")
            .params(dsn_schema(json!({ "sql": { "type": "string" } }), &["dsn", "sql"]))
            .outputs(&["rows", "count"]),
        Action::new("standby_status", "what a standby last heard from its primary (for a failover)")
            .params(dsn_schema(json!({}), &["dsn"]))
            .outputs(&["receive_lsn", "replay_lsn", "last_contact", "seconds_since_contact", "streaming", "note"])
            .check(),
        Action::new("probe", "whether the server is up or down; a configuration error fails")
            .params(dsn_schema(json!({}), &["dsn"]))
            .outputs(&["state", "reason"])
            .check(),
        Action::new("promote", "promotes a standby with pg_promote()")
            .params(dsn_schema(json!({ "wait": { "type": "boolean" } }), &["dsn"]))
            .outputs(&["promoted", "timeline"]),
    ]
}

fn main() -> std::process::ExitCode {
    serve(&actions(), |req: Request| {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return Reply::retry(format!("cannot start: {e}")),
        };
        runtime.block_on(handle(req)).unwrap_or_else(|e| e)
    })
}

type Outcome = Result<Reply, Reply>;

fn text<'a>(req: &'a Request, key: &str) -> &'a str {
    req.params[key].as_str().unwrap_or_default()
}

async fn connect(dsn: &str) -> Result<Client, Reply> {
    let (mut config, tls) =
        tls::config(dsn).map_err(|e| Reply::fail(format!("bad connection string: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    tls::connect(&config, &tls).await.map_err(|e| {
        Reply::retry(format!(
            "cannot connect ({}): {}",
            redact(dsn),
            tls::chain(&e)
        ))
    })
}

/// The connection string without its password, for messages.
fn redact(dsn: &str) -> String {
    dsn.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn sql_error(what: &str, e: tokio_postgres::Error) -> Reply {
    let detail = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_string());
    Reply::retry(format!("{what}: {detail}"))
}

async fn in_recovery(c: &Client) -> Result<bool, Reply> {
    let row = c
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| sql_error("pg_is_in_recovery", e))?;
    Ok(row.get(0))
}

/// The timeline of the WAL the primary writes (its WAL file name starts with it, in hex).
async fn timeline(c: &Client) -> Result<Option<i64>, Reply> {
    if in_recovery(c).await? {
        return Ok(None);
    }
    let row = c
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .map_err(|e| sql_error("pg_walfile_name", e))?;
    let name: String = row.get(0);
    Ok(i64::from_str_radix(&name[..8.min(name.len())], 16).ok())
}

/// The lag as outputs; a failure (retryable) when not streaming or above `max_bytes`.
fn lag_reply(
    lag: i64,
    primary_lsn: Option<String>,
    standby_lsn: Option<String>,
    streaming: bool,
    req: &Request,
) -> Outcome {
    let outputs = json!({ "lag_bytes": lag, "primary_lsn": primary_lsn, "standby_lsn": standby_lsn, "streaming": streaming });
    if !streaming {
        return Err(Reply::retry(format!(
            "the standby is not streaming (lag {lag} bytes)"
        )));
    }
    if let Some(max) = req.params["max_bytes"].as_i64()
        && lag > max
    {
        return Err(Reply::retry(format!("lag {lag} bytes is above {max}")));
    }
    Ok(Reply::ok(outputs))
}

/// Up, down, or a configuration error (the `Err`): see `probe` above.
async fn probe(dsn: &str) -> Result<(&'static str, String), String> {
    let (mut config, tls) =
        tls::config(dsn).map_err(|e| format!("the connection string does not parse: {e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let connected = tls::connect(&config, &tls).await;
    let client = match connected {
        Ok(c) => c,
        Err(e) => {
            if let Some(db) = e.as_db_error() {
                // The server answered: starting up or shutting down is down; a refused login, a
                // missing database, too many connections are not.
                // The server answered: it is there. Starting up, shutting down or in crash
                // recovery is neither up nor down (it may come back as a primary); a refused
                // login or a missing database is a configuration error.
                return Err(format!(
                    "the server answered but refused the connection: {}",
                    db.message()
                ));
            }
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                    use std::io::ErrorKind::*;
                    return match io.kind() {
                        ConnectionRefused | TimedOut | HostUnreachable | NetworkUnreachable
                        | ConnectionReset | ConnectionAborted | NotConnected | AddrNotAvailable => {
                            Ok(("down", io.to_string()))
                        }
                        _ if io.to_string().contains("failed to lookup address")
                            || io.to_string().contains("Name or service not known") =>
                        {
                            Err(format!("its host name does not resolve: {io}"))
                        }
                        _ => Err(format!("cannot connect: {io}")),
                    };
                }
                source = inner.source();
            }
            if e.to_string().contains("timed out") {
                return Ok(("down", e.to_string()));
            }
            return Err(format!("cannot connect: {}", tls::chain(&e)));
        }
    };
    match client.simple_query("SELECT 1").await {
        Ok(_) => Ok(("up", "it answers queries".into())),
        Err(e) => Ok(("down", format!("connected, but a query failed: {e}"))),
    }
}

async fn handle(req: Request) -> Outcome {
    match req.action.as_str() {
        "probe" => {
            let dsn = text(&req, "dsn");
            // A server that accepts the connection and then answers nothing (frozen) is down;
            // connect_timeout covers only the connection.
            let probed = match tokio::time::timeout(Duration::from_secs(10), probe(dsn)).await {
                Ok(p) => p,
                Err(_) => Ok(("down", "no answer within 10 s".to_string())),
            };
            match probed {
                Ok((state, reason)) => {
                    eprintln!("{}: {state} ({reason})", redact(dsn));
                    Ok(Reply::ok(json!({ "state": state, "reason": reason })))
                }
                Err(why) => Err(Reply::fail(format!(
                    "{}: a configuration error, neither up nor down: {why}",
                    redact(dsn)
                ))),
            }
        }
        "is_primary" => {
            let c = connect(text(&req, "dsn")).await?;
            let recovery = in_recovery(&c).await?;
            let row = c
                .query_one(
                    "SELECT current_setting('default_transaction_read_only') = 'on'",
                    &[],
                )
                .await
                .map_err(|e| sql_error("read-only setting", e))?;
            let read_only: bool = row.get(0);
            let tl = timeline(&c).await?;
            let row = c
                .query_one(
                    "SELECT system_identifier::text FROM pg_control_system()",
                    &[],
                )
                .await
                .map_err(|e| sql_error("system identifier", e))?;
            let system_id: String = row.get(0);
            let outputs = json!({ "primary": !recovery, "in_recovery": recovery, "read_only": read_only, "timeline": tl, "system_id": system_id });
            if req.params["require_writable"] == json!(true) && (recovery || read_only) {
                return Err(Reply::retry(format!(
                    "not writable yet ({})",
                    if recovery {
                        "in recovery"
                    } else {
                        "default_transaction_read_only is on"
                    }
                )));
            }
            Ok(Reply::ok(outputs))
        }
        "replication_lag" if req.params.get("dsn").is_some() => {
            // The standby alone: how far its replay is behind the end of the WAL the primary
            // last reported sending it.
            let standby = connect(text(&req, "dsn")).await?;
            let row = standby
                .query_one(
                    "SELECT r.status = 'streaming', pg_last_wal_replay_lsn()::text, \
                            greatest(pg_last_wal_receive_lsn(), r.latest_end_lsn)::text, \
                            coalesce(pg_wal_lsn_diff(greatest(pg_last_wal_receive_lsn(), r.latest_end_lsn), \
                                                     pg_last_wal_replay_lsn()), 0)::bigint \
                     FROM (SELECT 1) one LEFT JOIN pg_stat_wal_receiver r ON true",
                    &[],
                )
                .await
                .map_err(|e| sql_error("standby positions", e))?;
            let streaming: Option<bool> = row.get(0);
            let standby_lsn: Option<String> = row.get(1);
            let primary_lsn: Option<String> = row.get(2);
            let lag: i64 = row.get(3);
            lag_reply(
                lag.max(0),
                primary_lsn,
                standby_lsn,
                streaming == Some(true),
                &req,
            )
        }
        "replication_lag" => {
            let primary = connect(text(&req, "primary")).await?;
            let standby = connect(text(&req, "standby")).await?;
            let row = standby
                .query_one(
                    "SELECT pg_last_wal_replay_lsn()::text, \
                            coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false)",
                    &[],
                )
                .await
                .map_err(|e| sql_error("standby replay position", e))?;
            let standby_lsn: Option<String> = row.get(0);
            let streaming: bool = row.get(1);
            let Some(standby_lsn) = standby_lsn else {
                return Err(Reply::fail(
                    "the standby is not in recovery: it has no replay position",
                ));
            };
            let row = primary
                .query_one(
                    "SELECT pg_current_wal_lsn()::text, \
                            pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint",
                    &[&standby_lsn],
                )
                .await
                .map_err(|e| sql_error("primary position", e))?;
            let primary_lsn: String = row.get(0);
            let lag: i64 = row.get(1);
            lag_reply(
                lag.max(0),
                Some(primary_lsn),
                Some(standby_lsn),
                streaming,
                &req,
            )
        }
        "wait_caught_up" => {
            let primary = connect(text(&req, "primary")).await?;
            let standby = connect(text(&req, "standby")).await?;
            loop {
                let row = primary
                    .query_one("SELECT pg_current_wal_lsn()::text", &[])
                    .await
                    .map_err(|e| sql_error("primary position", e))?;
                let target: String = row.get(0);
                let row = standby
                    .query_one(
                        "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                        &[&target],
                    )
                    .await
                    .map_err(|e| sql_error("standby replay position", e))?;
                let caught_up: Option<bool> = row.get(0);
                if caught_up == Some(true) {
                    return Ok(Reply::ok(json!({ "lsn": target })));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        "wait_replayed" => {
            let past = text(&req, "past");
            let standby = connect(text(&req, "dsn")).await?;
            let expected = text(&req, "system_id");
            if !expected.is_empty() {
                let row = standby
                    .query_one(
                        "SELECT system_identifier::text FROM pg_control_system()",
                        &[],
                    )
                    .await
                    .map_err(|e| sql_error("system identifier", e))?;
                let found: String = row.get(0);
                if found != expected {
                    return Err(Reply::fail(format!(
                        "the standby is of another cluster (system identifier {found}, the old primary's is {expected}): check the data directory and the DSN"
                    )));
                }
            }
            let mut announced = false;
            loop {
                let row = standby
                    .query_one(
                        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, \
                                pg_last_wal_receive_lsn()::text, \
                                coalesce(pg_last_wal_replay_lsn() > $1::text::pg_lsn, false)",
                        &[&past],
                    )
                    .await
                    .map_err(|e| sql_error("standby replay position", e))?;
                let recovery: bool = row.get(0);
                let replay: Option<String> = row.get(1);
                let receive: Option<String> = row.get(2);
                if !recovery {
                    // Promoted already (a resumed run): it can no longer replay anything.
                    return Err(Reply::fail(
                        "the instance is not in recovery: nothing to wait for (already promoted?)",
                    ));
                }
                if row.get::<_, bool>(3) {
                    eprintln!(
                        "replayed past {past}: replay {}",
                        replay.as_deref().unwrap_or("-")
                    );
                    return Ok(Reply::ok(
                        json!({ "replay_lsn": replay, "receive_lsn": receive }),
                    ));
                }
                if !announced {
                    eprintln!(
                        "waiting to replay past {past} (received {}, replayed {})",
                        receive.as_deref().unwrap_or("-"),
                        replay.as_deref().unwrap_or("-")
                    );
                    announced = true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        "set_read_only" => {
            let on = req.params["read_only"] != json!(false);
            if req.mode == Mode::Check {
                return Ok(Reply::ok(json!({})));
            }
            let c = connect(text(&req, "dsn")).await?;
            let sql = format!(
                "ALTER SYSTEM SET default_transaction_read_only = {}",
                if on { "on" } else { "off" }
            );
            c.batch_execute(&sql)
                .await
                .map_err(|e| sql_error("ALTER SYSTEM", e))?;
            c.batch_execute("SELECT pg_reload_conf()")
                .await
                .map_err(|e| sql_error("reload", e))?;
            let mut terminated = 0i64;
            if on && req.params["terminate_sessions"] == json!(true) {
                let row = c
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
                        &[],
                    )
                    .await
                    .map_err(|e| sql_error("ending sessions", e))?;
                terminated = row.get(0);
            }
            eprintln!("default_transaction_read_only = {on}; {terminated} session(s) ended");
            Ok(Reply::ok(
                json!({ "read_only": on, "terminated": terminated }),
            ))
        }
        "exec" => {
            if req.mode == Mode::Check {
                return Ok(Reply::ok(json!({})));
            }
            let c = connect(text(&req, "dsn")).await?;
            let rows = c
                .simple_query(text(&req, "sql"))
                .await
                .map_err(|e| sql_error("exec", e))?;
            let values: Vec<Option<String>> = rows
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).map(str::to_string))
                    }
                    _ => None,
                })
                .collect();
            let count = rows
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
                    _ => None,
                })
                .next_back()
                .unwrap_or(0);
            Ok(Reply::ok(json!({ "rows": values, "count": count })))
        }
        "standby_status" => {
            let c = connect(text(&req, "dsn")).await?;
            let row = c
                .query_one(
                    "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
                            r.last_msg_receipt_time::text, \
                            extract(epoch FROM now() - r.last_msg_receipt_time)::float8, \
                            coalesce(r.status = 'streaming', false) \
                     FROM (SELECT 1) one LEFT JOIN pg_stat_wal_receiver r ON true",
                    &[],
                )
                .await
                .map_err(|e| sql_error("standby status", e))?;
            let receive: Option<String> = row.get(0);
            let replay: Option<String> = row.get(1);
            let contact: Option<String> = row.get(2);
            let since: Option<f64> = row.get(3);
            let streaming: bool = row.get(4);
            // After a primary dies, what it wrote past `receive_lsn` is lost: that is the window.
            let note = match (&receive, since) {
                (Some(lsn), Some(s)) => format!(
                    "data-loss window: WAL after {lsn} (received; replayed {}); the primary was last heard {s:.1}s before this check",
                    replay.as_deref().unwrap_or("-")
                ),
                (Some(lsn), None) => format!(
                    "data-loss window: WAL after {lsn}; no contact with the primary recorded"
                ),
                _ => "not a standby: no data-loss window to report".to_string(),
            };
            Ok(Reply::ok(json!({
                "receive_lsn": receive, "replay_lsn": replay, "last_contact": contact,
                "seconds_since_contact": since, "streaming": streaming, "note": note
            })))
        }
        "promote" => {
            let c = connect(text(&req, "dsn")).await?;
            if !in_recovery(&c).await? {
                eprintln!("already a primary: nothing to promote");
                return Ok(Reply::ok(
                    json!({ "promoted": false, "timeline": timeline(&c).await? }),
                ));
            }
            let wait = req.params["wait"] != json!(false);
            let row = c
                .query_one("SELECT pg_promote($1, 60)", &[&wait])
                .await
                .map_err(|e| sql_error("pg_promote", e))?;
            let promoted: bool = row.get(0);
            if !promoted {
                return Err(Reply::retry("pg_promote() did not complete within 60s"));
            }
            Ok(Reply::ok(
                json!({ "promoted": true, "timeline": timeline(&c).await? }),
            ))
        }
        other => Err(Reply::fail(format!("no action `{other}`"))),
    }
}
