//! One step as written, with its retry, sim hints and undo.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::value::Value;

// Rarely used parts (`retry`, `sim`, `undo`) are boxed: a step without them is smaller, which
// counts at 100,000 steps.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique id: `[a-z0-9][a-z0-9_-]*`.
    #[schemars(with = "String", regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"))]
    pub id: Spanned<String>,
    /// A title for humans.
    #[serde(default)]
    pub name: Option<String>,
    /// What this step does, for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// `provider.action`, e.g. `shell.run` or `postgres.promote`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub uses: Option<Spanned<String>>,
    /// Include another runbook file as a module (path relative to this file).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub include: Option<Spanned<String>>,
    /// The action's parameters (or the module's inputs); strings may hold `${{ }}` expressions.
    #[serde(default)]
    pub with: Option<Value>,
    /// Steps that must finish first.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub needs: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub retry: Option<Box<Retry>>,
    /// Duration after which an attempt is cancelled.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// Dry-run hints.
    #[serde(default)]
    pub sim: Option<Box<Sim>>,
    /// Safe to re-run if a crash leaves it in doubt (default false).
    #[serde(default)]
    pub idempotent: Option<bool>,
    /// The compensation of this step, run by rollback.
    #[serde(default)]
    pub undo: Option<Box<Undo>>,
    /// Once this step has succeeded (or may have: in doubt), nothing is rolled back: undoing
    /// the steps before it would make things worse (promoting a standby: the old primary must
    /// not take writes again). Rollback is refused unless forced with a reason.
    #[serde(default)]
    pub irreversible: Option<bool>,
    /// A list (or an expression giving one): the step runs once per item as `id[item]`.
    #[serde(default)]
    pub for_each: Option<Value>,
    /// Named pool this step counts against.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub pool: Option<Spanned<String>>,
    /// `abort` (default) or `continue`.
    #[serde(default)]
    #[schemars(with = "Option<OnFailure>")]
    pub on_failure: Option<Spanned<OnFailure>>,
    /// An expression; when false the step is skipped (and satisfies its dependents).
    #[serde(default)]
    pub when: Option<Value>,
    /// The runbook's modes this step runs in; in any other it is skipped (and satisfies its
    /// dependents). On an include, for each of the module's steps.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub modes: Option<Spanned<Vec<Spanned<String>>>>,
    /// `run --check`: `false` leaves the step out (a post-condition that only holds after the
    /// real change); `true` runs it for real there (it only reads: `df`, a query). Default: its
    /// action's read-only check where it has one, else left out.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub check: Option<Spanned<bool>>,
}

/// Settings every step inherits unless it sets them.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDefaults {
    #[serde(default)]
    pub retry: Option<Retry>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub sim: Option<Sim>,
    #[serde(default)]
    pub idempotent: Option<bool>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub pool: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<OnFailure>")]
    pub on_failure: Option<Spanned<OnFailure>>,
    #[serde(default)]
    pub when: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, including the first (default 1).
    #[serde(default)]
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub attempts: Option<Spanned<u32>>,
    /// Wait before the second attempt (default 1s).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub delay: Option<Spanned<String>>,
    /// Factor applied to the delay after each attempt (default 1.0).
    #[serde(default)]
    #[schemars(with = "Option<f64>", range(min = 1.0))]
    pub backoff: Option<Spanned<f64>>,
    /// Upper bound of the delay.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub max_delay: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sim {
    /// Virtual time the step takes in a dry-run (and its estimate in plan).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub duration: Option<Spanned<String>>,
    /// Outputs the simulated provider returns.
    #[serde(default)]
    pub outputs: Option<Value>,
    /// Make this step fail in every dry-run.
    #[serde(default)]
    pub fail: Option<bool>,
    /// Spread of the simulated duration, as a percentage (`20%`): each dry-run attempt takes
    /// the duration within that much either way, drawn from `--seed`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub jitter: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Undo {
    #[schemars(with = "String")]
    pub uses: Spanned<String>,
    #[serde(default)]
    pub with: Option<Value>,
    /// Retries of the undo (default: the step's own `retry`).
    #[serde(default)]
    pub retry: Option<Retry>,
    /// Duration after which an undo attempt is cancelled (default: the step's `timeout`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// An expression evaluated when the undo is about to run; false: nothing to undo.
    #[serde(default)]
    pub when: Option<Value>,
    /// Undo the step whenever an attempt of it started (it failed, timed out, was cancelled or
    /// is in doubt after a crash), not only when it succeeded: for a step that may take effect
    /// part-way, with an undo that is safe either way (start a server if it is not running).
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub if_started: Option<Spanned<bool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    #[default]
    Abort,
    Continue,
}
