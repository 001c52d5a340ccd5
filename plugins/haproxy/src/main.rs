//! ripcord-plugin-haproxy: servers of an HAProxy backend through the runtime API, on a unix
//! socket (`socket: /run/haproxy/admin.sock`) or TCP (`socket: 127.0.0.1:9999`).
//!
//! - `set_server {socket, backend, server, state, weight}`: `state` ready|drain|maint; outputs
//!   the state before and after (undo: set the previous state back).
//! - `show_servers {socket, backend}`: every server with its state and weight (check).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ripcord_plugin_sdk::{Action, Mode, Reply, Request, serve};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The characters HAProxy allows in a backend or server name. The runtime API reads `;` as a
/// command separator and spaces as argument separators, and has no quoting: a name is checked
/// against this before it is put into a command, never escaped.
const NAME: &str = "^[A-Za-z0-9_.:-]+$";

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

fn actions() -> Vec<Action> {
    let socket = json!({ "type": "string", "description": "unix socket path, or host:port" });
    let name = json!({ "type": "string", "pattern": NAME });
    vec![
        Action::new(
            "set_server",
            "sets a server's state (ready, drain, maint) and/or weight",
        )
        .params(json!({
            "type": "object",
            "properties": {
                "socket": socket, "backend": name, "server": name,
                "state": { "type": "string", "enum": ["ready", "drain", "maint"] },
                "weight": { "type": "integer", "minimum": 0, "maximum": 256 }
            },
            "required": ["socket", "backend", "server"],
            "additionalProperties": false
        }))
        .outputs(&["previous_state", "state", "weight"])
        // A check finds the backend and server and changes nothing.
        .check()
        .undo(),
        Action::new(
            "show_servers",
            "the servers of a backend (or all) with state and weight",
        )
        .params(json!({
            "type": "object",
            "properties": { "socket": socket, "backend": name },
            "required": ["socket"],
            "additionalProperties": false
        }))
        .outputs(&["servers"])
        .check(),
    ]
}

fn main() -> std::process::ExitCode {
    serve(&actions(), |req: Request| {
        handle(&req).unwrap_or_else(|e| e)
    })
}

/// One runtime API command; the answer (HAProxy closes the connection after it).
fn command(socket: &str, cmd: &str) -> Result<String, Reply> {
    let send = |stream: &mut dyn ReadWrite| -> std::io::Result<String> {
        stream.write_all(format!("{cmd}\n").as_bytes())?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out)
    };
    let result = if socket.starts_with('/') || socket.starts_with('.') {
        UnixStream::connect(socket).and_then(|mut s| {
            s.set_read_timeout(Some(TIMEOUT))?;
            send(&mut s)
        })
    } else {
        std::net::TcpStream::connect(socket).and_then(|mut s| {
            s.set_read_timeout(Some(TIMEOUT))?;
            send(&mut s)
        })
    };
    result.map_err(|e| Reply::retry(format!("HAProxy runtime API at {socket}: {e}")))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Parses `show servers state`: `be_id be_name srv_id srv_name srv_addr srv_op_state
/// srv_admin_state srv_uweight ...`, one server a line after the version and header lines.
fn servers(answer: &str, backend: Option<&str>) -> Vec<Value> {
    answer
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            if backend.is_some_and(|b| b != f[1]) {
                return None;
            }
            let op: u32 = f[5].parse().ok()?;
            let admin: u32 = f[6].parse().ok()?;
            // Admin flags (HAProxy's SRV_ADMF_*): maintenance is 0x01 forced, 0x02 inherited,
            // 0x20 from DNS resolution (SRV_ADMF_MAINT = 0x23); 0x04 only records that the
            // configuration said `disabled` and stays set after `set server ... state ready`,
            // so it is not maintenance. Drain: 0x08 forced, 0x10 inherited.
            let state = if admin & 0x23 != 0 {
                "maint"
            } else if admin & 0x18 != 0 {
                "drain"
            } else if op == 2 {
                "ready"
            } else {
                "down"
            };
            Some(json!({ "backend": f[1], "server": f[3], "address": f[4], "state": state, "weight": f[7].parse::<i64>().unwrap_or(0) }))
        })
        .collect()
}

fn handle(req: &Request) -> Result<Reply, Reply> {
    let p = &req.params;
    let socket = p["socket"].as_str().unwrap_or_default();
    for key in ["backend", "server"] {
        if let Some(v) = p[key].as_str()
            && !is_name(v)
        {
            return Err(Reply::fail(format!(
                "{key} {v:?} is not a HAProxy name (letters, digits, `_`, `.`, `:`, `-`): it would change the runtime-API command"
            )));
        }
    }
    // ripcord checks params against the schema, but a plugin answers for what it sends.
    if let Some(state) = p["state"].as_str()
        && !["ready", "drain", "maint"].contains(&state)
    {
        return Err(Reply::fail(format!(
            "state {state:?} is not one of ready, drain, maint"
        )));
    }
    match req.action.as_str() {
        "show_servers" => {
            let answer = command(socket, "show servers state")?;
            Ok(Reply::ok(
                json!({ "servers": servers(&answer, p["backend"].as_str()) }),
            ))
        }
        "set_server" => {
            let backend = p["backend"].as_str().unwrap_or_default();
            let server = p["server"].as_str().unwrap_or_default();
            let current = servers(
                &command(socket, &format!("show servers state {backend}"))?,
                Some(backend),
            );
            let Some(before) = current.iter().find(|s| s["server"] == server).cloned() else {
                return Err(Reply::fail(format!(
                    "HAProxy has no server {backend}/{server}"
                )));
            };
            if req.mode == Mode::Check {
                return Ok(Reply::ok(
                    json!({ "previous_state": before["state"], "state": before["state"] }),
                ));
            }
            let mut commands = Vec::new();
            if let Some(state) = p["state"].as_str() {
                commands.push(format!("set server {backend}/{server} state {state}"));
            }
            if let Some(weight) = p["weight"].as_i64() {
                commands.push(format!("set server {backend}/{server} weight {weight}"));
            }
            for cmd in &commands {
                let answer = command(socket, cmd)?;
                // Success is an empty answer; anything else is HAProxy's error message.
                if !answer.trim().is_empty() {
                    return Err(Reply::fail(format!("`{cmd}`: {}", answer.trim())));
                }
                eprintln!("{cmd}");
            }
            let after = servers(
                &command(socket, &format!("show servers state {backend}"))?,
                Some(backend),
            );
            let after = after
                .iter()
                .find(|s| s["server"] == server)
                .cloned()
                .unwrap_or_default();
            Ok(Reply::ok(
                json!({ "previous_state": before["state"], "state": after["state"], "weight": after["weight"] }),
            ))
        }
        other => Err(Reply::fail(format!("no action `{other}`"))),
    }
}
