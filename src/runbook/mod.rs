//! The runbook as written: the YAML model, one type per concept, every user-written scalar
//! wrapped in `Spanned` so later stages can point at it. Nothing here is resolved or checked
//! beyond its YAML shape: that is the compiler's job.

pub mod duration;
pub mod entries;
pub mod inputs;
pub mod load;
pub mod step;
pub mod value;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub use entries::Entries;
pub use inputs::{InputDecl, InputType};
pub use load::{LoadError, Source, load_file, load_file_as, load_str};
pub use step::{OnFailure, Retry, Sim, Step, StepDefaults, Undo};
pub use value::{Key, Span, Value, ValueKind};

/// A whole runbook file (or a module: a runbook that declares `outputs`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "ripcord runbook",
    description = "A ripcord failover runbook, format version 1."
)]
pub struct Runbook {
    /// Format version; only 1 exists.
    #[schemars(with = "u32", range(min = 1, max = 1))]
    pub version: Spanned<u32>,
    /// Name of the runbook: `[a-z0-9][a-z0-9_-]*`. Runs are locked per name.
    #[schemars(with = "String", regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"))]
    pub name: Spanned<String>,
    /// What the runbook is for, for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Target recovery time (a duration such as `5m`); plan, dry-run and report compare against it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub rto: Option<Spanned<String>>,
    /// Typed parameters, given as `--input key=value`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, InputDecl>")]
    pub inputs: Option<Spanned<Entries<InputDecl>>>,
    /// What a module exposes to the runbook that includes it: name -> expression.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub outputs: Option<Entries<Spanned<String>>>,
    /// Steps in flight at most (default 10).
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub concurrency: Option<Spanned<u32>>,
    /// Named limits; a step joins one with `pool:`.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, u32>>")]
    pub pools: Option<Entries<Spanned<u32>>>,
    /// Settings applied to every step that does not set them itself.
    #[serde(default)]
    pub defaults: Option<StepDefaults>,
    /// `manual` (default) or `auto`: on a failed run, undo completed steps.
    #[serde(default)]
    pub rollback: Option<RollbackPolicy>,
    /// The ways this runbook can be run (`planned`, `unplanned`, `test`): chosen with `--mode`,
    /// the first by default; a step with `modes:` runs only in those.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub modes: Option<Spanned<Vec<Spanned<String>>>>,
    /// Modes whose runs are undone when they are over (a DR test's clone): `ripcord rollback`
    /// of such a run that succeeded is its cleanup, not a new decision, and needs no `--force`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub cleanup_modes: Option<Spanned<Vec<Spanned<String>>>>,
    /// Scopes a run holds besides the runbook's own name (`"service:orders"`): a run of any
    /// runbook that shares one is refused (exit 4) while this one holds it.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub locks: Option<Spanned<Vec<Spanned<String>>>>,
    /// The steps; order does not matter except as a tie-break.
    #[schemars(with = "Vec<Step>", length(min = 1))]
    pub steps: Spanned<Vec<Step>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RollbackPolicy {
    #[default]
    Manual,
    Auto,
}

/// Whether `s` is an identifier (an input's name, an environment variable's):
/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `s` is a valid step, runbook or pool name: `[a-z0-9][a-z0-9_-]*`.
pub fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
