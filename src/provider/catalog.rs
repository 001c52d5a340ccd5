//! The built-in actions and what each declares: a JSON Schema of its params, its output keys,
//! and the duration a dry-run assumes when the step gives no `sim.duration`.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use serde_json::{Value as Json, json};

/// Which output keys an action produces.
#[derive(Debug, Clone)]
pub enum Outputs {
    /// Exactly these keys.
    Closed(Vec<String>),
    /// These keys and any others the step writes (shell.run's `$RIPCORD_OUTPUT` lines).
    Open(Vec<String>),
}

impl Outputs {
    pub fn declared(&self) -> &[String] {
        match self {
            Outputs::Closed(keys) | Outputs::Open(keys) => keys,
        }
    }
}

/// What an action declares: built in (below) or described by a plugin.
#[derive(Debug, Clone)]
pub struct ActionSpec {
    pub provider: String,
    pub action: String,
    pub summary: String,
    /// JSON Schema (an object schema) of `with`.
    pub params: Json,
    pub outputs: Outputs,
    /// Assumed duration in plan and dry-run when `sim.duration` is absent.
    pub sim_default: Duration,
    /// Whether a plugin action answers `mode: "check"` (a read-only probe). Built-in actions
    /// decide by their params: see [`has_check`].
    pub check: bool,
    /// Whether a plugin declares an undo for the action (informational).
    pub undo: bool,
    /// `params` compiled as JSON Schema (draft 2020-12), on first use.
    pub validator: Arc<OnceLock<Result<jsonschema::Validator, String>>>,
}

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

fn spec(
    provider: &str,
    action: &str,
    summary: &str,
    params: Json,
    outputs: Outputs,
    sim_default: Duration,
) -> Arc<ActionSpec> {
    Arc::new(ActionSpec {
        provider: provider.into(),
        action: action.into(),
        summary: summary.into(),
        params,
        outputs,
        sim_default,
        check: false,
        undo: false,
        validator: Arc::default(),
    })
}

/// A built-in action that always has a read-only check (shown by `ripcord plugins`; the
/// executor asks [`has_check`]).
fn checked(spec: Arc<ActionSpec>) -> Arc<ActionSpec> {
    Arc::new(ActionSpec {
        check: true,
        ..(*spec).clone()
    })
}

impl ActionSpec {
    pub fn name(&self) -> String {
        format!("{}.{}", self.provider, self.action)
    }

    /// The params schema, compiled (draft 2020-12); why not, when it is not a valid schema.
    pub fn validator(&self) -> Result<&jsonschema::Validator, &str> {
        self.validator
            .get_or_init(|| {
                if let Some(why) = super::params::too_complex(&self.params) {
                    return Err(why);
                }
                jsonschema::draft202012::new(&self.params).map_err(|e| {
                    let at = e.instance_path().as_str();
                    let at = if at.is_empty() { "/" } else { at };
                    // The reason quotes the schema's value: keep a long one (a pattern of
                    // kilobytes) from filling the screen.
                    let mut why = e.to_string();
                    if why.chars().count() > 200 {
                        why = why.chars().take(200).collect::<String>() + "…";
                    }
                    format!("its params schema is not valid JSON Schema (at `{at}`): {why}")
                })
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// Names of the params the schema declares, for "did you mean" help.
    pub fn param_names(&self) -> Vec<&str> {
        self.params["properties"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// Duration assumed for a step of an external plugin without `sim.duration`.
pub const EXTERNAL_SIM_DEFAULT: Duration = Duration::from_secs(5);

static BUILTIN: LazyLock<Vec<Arc<ActionSpec>>> = LazyLock::new(|| {
    // `argv: [sleep, 5]` and `env: { PORT: 5432 }` mean text: scalars are passed as written.
    let scalar = json!({ "type": ["string", "integer", "number", "boolean"] });
    let scalar_map = json!({ "type": "object", "additionalProperties": scalar });
    let string_map = json!({ "type": "object", "additionalProperties": { "type": "string" } });
    vec![
        spec(
            "shell",
            "run",
            "run a program (argv, no shell) or, when written, a `script:` through sh -c",
            json!({
                "type": "object",
                "properties": {
                    "argv": { "type": "array", "items": scalar, "minItems": 1 },
                    "script": { "type": "string" },
                    "env": scalar_map,
                    "cwd": { "type": "string" },
                    "stdin": { "type": "string" }
                },
                "oneOf": [ { "required": ["argv"] }, { "required": ["script"] } ],
                "additionalProperties": false
            }),
            Outputs::Open(keys(&["exit_code", "stdout", "stderr"])),
            Duration::from_secs(1),
        ),
        checked(spec(
            "ssh",
            "run",
            "run a command on another host through the system OpenSSH client: one \
             connection per host, host keys checked strictly, `env` sent over the connection \
             (never on a command line)",
            json!({
                "type": "object",
                "properties": {
                    "host": { "type": "string", "pattern": "^[^-\\s][^\\s]*$" },
                    "user": { "type": "string", "pattern": "^([^-\\s][^\\s]*)?$" },
                    "port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                    "identity": { "type": "string" },
                    "known_hosts": { "type": "string" },
                    "argv": { "type": "array", "items": scalar, "minItems": 1 },
                    "script": { "type": "string" },
                    "env": {
                        "type": "object",
                        "additionalProperties": scalar,
                        "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" }
                    },
                    "stdin": { "type": "string" }
                },
                "required": ["host"],
                "oneOf": [ { "required": ["argv"] }, { "required": ["script"] } ],
                "additionalProperties": false
            }),
            Outputs::Open(keys(&["exit_code", "stdout", "stderr", "target"])),
            Duration::from_secs(1),
        )),
        spec(
            "http",
            "request",
            "an HTTP request; fails unless the status is expected",
            json!({
                "type": "object",
                "properties": {
                    "method": { "type": "string",
                                "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] },
                    "url": { "type": "string" },
                    "headers": string_map,
                    "json": {},
                    "body": { "type": "string" },
                    "expect_status": {
                        "oneOf": [
                            { "type": "integer" },
                            { "type": "array", "items": { "type": "integer" } }
                        ]
                    }
                },
                "required": ["url"],
                "additionalProperties": false
            }),
            Outputs::Closed(keys(&["status", "body", "json"])),
            Duration::from_millis(500),
        ),
        checked(spec(
            "tcp",
            "connect",
            "succeeds when a TCP connection to host:port opens",
            json!({
                "type": "object",
                "properties": {
                    "host": { "type": "string" },
                    "port": { "type": "integer", "minimum": 1, "maximum": 65535 }
                },
                "required": ["host", "port"],
                "additionalProperties": false
            }),
            Outputs::Closed(keys(&["address"])),
            Duration::from_millis(100),
        )),
        spec(
            "sleep",
            "for",
            "waits for a duration",
            json!({
                "type": "object",
                "properties": { "duration": { "type": "string" } },
                "required": ["duration"],
                "additionalProperties": false
            }),
            Outputs::Closed(keys(&[])),
            Duration::ZERO,
        ),
        spec(
            "approval",
            "ask",
            "waits for approval: on the terminal, from `ripcord approve RUN STEP` in any shell, \
             or given in advance (--approve STEP, --yes); `approvers` limits who, \
             `min_approvals` how many different people, `not_by_operator` excludes the one who \
             started the run and the one running the session that waits",
            json!({
                "type": "object",
                "properties": {
                    "prompt": { "type": "string" },
                    "approvers": { "type": "array", "items": { "type": "string" } },
                    "min_approvals": { "type": "integer", "minimum": 1 },
                    "not_by_operator": { "type": "boolean" }
                },
                "additionalProperties": false
            }),
            Outputs::Closed(keys(&["approver", "approved_at", "simulated"])),
            Duration::from_secs(30),
        ),
        spec(
            "assert",
            "that",
            "fails unless an expression is true; the message shows the values",
            json!({
                "type": "object",
                "properties": {
                    "that": { "type": ["string", "boolean"] },
                    "message": { "type": "string" }
                },
                "required": ["that"],
                "additionalProperties": false
            }),
            Outputs::Closed(keys(&[])),
            Duration::ZERO,
        ),
    ]
});

/// The value a dry-run gives a declared output when the step's `sim.outputs` does not: of the
/// type the real action produces, and the value of its success (status 200, exit code 0), so
/// `when:` and expressions downstream take the path of a run that works.
pub fn placeholder(key: &str) -> Json {
    match key {
        "exit_code" => json!(0),
        "status" => json!(200),
        "json" => json!({}),
        "simulated" => json!(true),
        "address" => json!("127.0.0.1:0"),
        "approver" => json!("dry-run"),
        _ => json!(""),
    }
}

/// Whether a built-in action has a read-only check for these params: connecting is one (a TCP
/// connection, an SSH login), and so is an HTTP GET or HEAD; everything else changes something (or waits, or asks) and has none.
pub fn has_check(provider: &str, action: &str, params: &Json) -> bool {
    match (provider, action) {
        // Connects and authenticates (host key checked), runs nothing.
        ("tcp", "connect") | ("ssh", "run") => true,
        ("http", "request") => matches!(
            params
                .get("method")
                .and_then(Json::as_str)
                .unwrap_or("GET")
                .to_ascii_uppercase()
                .as_str(),
            "GET" | "HEAD"
        ),
        _ => false,
    }
}

/// All built-in actions.
pub fn builtins() -> &'static [Arc<ActionSpec>] {
    &BUILTIN
}

/// The built-in action `provider.action`, if it exists.
pub fn builtin(provider: &str, action: &str) -> Option<Arc<ActionSpec>> {
    BUILTIN
        .iter()
        .find(|a| a.provider == provider && a.action == action)
        .cloned()
}

/// Whether `provider` names a built-in provider (as opposed to an external plugin).
pub fn is_builtin_provider(provider: &str) -> bool {
    BUILTIN.iter().any(|a| a.provider == provider)
}

/// Whether a built-in action runs a command whose `argv` and `script` end up on a command
/// line (`shell.run` here, `ssh.run` on another host): secrets stay out of them, and a
/// `script:` is quoted for the shell.
pub fn runs_command(provider: &str, action: &str) -> bool {
    matches!((provider, action), ("shell", "run") | ("ssh", "run"))
}
