//! The ripcord plugin protocol (version 1), and a helper to write a plugin in Rust.
//!
//! A plugin is an executable `ripcord-plugin-NAME`:
//! - `ripcord-plugin-NAME describe` prints a [`Description`] as JSON;
//! - `ripcord-plugin-NAME invoke` reads one [`Request`] as JSON on stdin, may log to stderr, and
//!   prints one [`Reply`] as JSON on stdout.
//!
//! With this crate a plugin is its actions and one function:
//!
//! ```no_run
//! use ripcord_plugin_sdk::{Action, Reply, Request, serve};
//! use serde_json::json;
//!
//! fn main() -> std::process::ExitCode {
//!     let actions = [Action::new("hello", "greets")
//!         .params(json!({"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]}))
//!         .outputs(&["greeting"])
//!         .check()];
//!     serve(&actions, |req: Request| {
//!         let who = req.params["who"].as_str().unwrap_or("world");
//!         Reply::ok(json!({ "greeting": format!("hello, {who}") }))
//!     })
//! }
//! ```

use std::io::{Read, Write};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version this crate speaks.
pub const PROTOCOL: u32 = 1;

/// What `describe` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Description {
    #[serde(default = "protocol_one")]
    pub protocol: u32,
    pub actions: Vec<Action>,
}

fn protocol_one() -> u32 {
    PROTOCOL
}

/// One action: its params as a JSON Schema, the keys of its outputs, and whether it answers a
/// read-only `check` and has an undo.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Action {
    pub name: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default = "any_object")]
    pub params: Value,
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub check: bool,
    #[serde(default)]
    pub undo: bool,
}

fn any_object() -> Value {
    serde_json::json!({ "type": "object" })
}

impl Action {
    pub fn new(name: &str, summary: &str) -> Action {
        Action {
            name: name.into(),
            summary: summary.into(),
            params: any_object(),
            outputs: Vec::new(),
            check: false,
            undo: false,
        }
    }

    pub fn params(mut self, schema: Value) -> Action {
        self.params = schema;
        self
    }

    pub fn outputs(mut self, keys: &[&str]) -> Action {
        self.outputs = keys.iter().map(|k| (*k).to_string()).collect();
        self
    }

    /// The action answers `mode: "check"` with a read-only probe.
    pub fn check(mut self) -> Action {
        self.check = true;
        self
    }

    pub fn undo(mut self) -> Action {
        self.undo = true;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Run,
    /// Read-only: probe, change nothing.
    Check,
}

/// What `invoke` reads on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub protocol: u32,
    pub action: String,
    #[serde(default)]
    pub params: Value,
    pub mode: Mode,
    pub run_id: String,
    pub step: String,
    pub attempt: u32,
}

/// What `invoke` prints on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default)]
    pub outputs: Map<String, Value>,
    #[serde(default)]
    pub message: String,
    /// Whether another attempt may succeed.
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

impl Reply {
    /// Success with these outputs (an object; anything else gives no outputs).
    pub fn ok(outputs: Value) -> Reply {
        Reply {
            ok: true,
            outputs: match outputs {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            message: String::new(),
            retryable: false,
        }
    }

    /// A failure another attempt may cure (a refused connection, a server not ready).
    pub fn retry(message: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            outputs: Map::new(),
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry will cure (bad params, a refused precondition).
    pub fn fail(message: impl Into<String>) -> Reply {
        Reply {
            retryable: false,
            ..Reply::retry(message)
        }
    }
}

/// The whole `main` of a plugin: answers `describe` from `actions` and `invoke` with `handle`.
pub fn serve(actions: &[Action], handle: impl FnOnce(Request) -> Reply) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = std::io::stdout().lock();
    match args.first().map(String::as_str) {
        Some("describe") => {
            let description = Description {
                protocol: PROTOCOL,
                actions: actions.to_vec(),
            };
            let _ = serde_json::to_writer(&mut out, &description);
            let _ = out.write_all(b"\n");
            ExitCode::SUCCESS
        }
        Some("invoke") => {
            let mut input = String::new();
            let request: Request = match std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| e.to_string())
                .and_then(|_| serde_json::from_str(&input).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = serde_json::to_writer(
                        &mut out,
                        &Reply::fail(format!("unreadable request: {e}")),
                    );
                    return ExitCode::from(2);
                }
            };
            let reply = if !actions.iter().any(|a| a.name == request.action) {
                Reply::fail(format!("no action `{}`", request.action))
            } else {
                handle(request)
            };
            let _ = serde_json::to_writer(&mut out, &reply);
            let _ = out.write_all(b"\n");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: {} describe|invoke",
                std::env::args().next().unwrap_or_default()
            );
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_and_requests_have_the_protocol_shape() {
        let reply = serde_json::to_value(Reply::ok(json!({"lsn": "0/30"}))).unwrap();
        assert_eq!(
            reply,
            json!({"ok": true, "outputs": {"lsn": "0/30"}, "message": "", "retryable": false})
        );
        let reply: Reply = serde_json::from_str(r#"{"ok": false, "message": "down"}"#).unwrap();
        assert!(!reply.ok && reply.retryable, "retryable defaults to true");
        let req: Request = serde_json::from_value(json!({
            "protocol": 1, "action": "promote", "params": {"dsn": "x"}, "mode": "check",
            "run_id": "r", "step": "s", "attempt": 2
        }))
        .unwrap();
        assert_eq!(req.mode, Mode::Check);
        let d = Description {
            protocol: PROTOCOL,
            actions: vec![Action::new("a", "b").outputs(&["x"]).check()],
        };
        let back: Description = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back.actions[0].outputs, ["x"]);
        assert!(back.actions[0].check && !back.actions[0].undo);
    }
}
