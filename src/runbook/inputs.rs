//! Declarations of a runbook's typed inputs.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::value::Value;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputDecl {
    #[serde(rename = "type")]
    #[schemars(with = "InputType")]
    pub ty: Spanned<InputType>,
    #[serde(default)]
    pub description: Option<String>,
    /// Value used when none is given.
    #[serde(default)]
    pub default: Option<Value>,
    /// The run refuses to start without a value.
    #[serde(default)]
    pub required: Option<bool>,
    /// Redacted in logs, journal and reports.
    #[serde(default)]
    pub secret: Option<bool>,
    /// Environment variable read when no `--input` is given.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub env: Option<Spanned<String>>,
    /// A command (argv, no shell) whose trimmed stdout is the value, run once at the start of
    /// each session that runs steps (run, run --check, resume, rollback) when neither
    /// `--input` nor `env:` gives one: `[vault, kv, get, -field=token, secret/dns]`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Integer,
    Number,
    Boolean,
    Duration,
    List,
    Map,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Duration => "duration",
            InputType::List => "list",
            InputType::Map => "map",
        }
    }
}
