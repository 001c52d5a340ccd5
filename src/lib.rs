//! ripcord: a declarative failover runbook executor.
//!
//! # Theory of operation
//!
//! Data flows one way, each stage a module with one job and an immutable output:
//!
//! - [`runbook`] loads a YAML file into a model whose every scalar keeps its source span, under a
//!   size cap and a parse budget (aliases, depth, nodes).
//! - [`compile`] resolves it: typed inputs, defaults, durations, each `${{ }}` expression
//!   compiled and its references checked, `steps.X` references turned into edges, cycles found,
//!   `for_each` expanded. Every problem becomes a [`diag::Diag`] with file:line:col, and all of
//!   them are reported together. Its files follow the stages: `declare` and `settings` (each
//!   step on its own), `modules` and `inline` (includes), `refs` and `checks` (across steps),
//!   `expand` and `limits` (instances, the graph, budgets).
//! - [`expr`] is the expression language that compile and exec share: parse (`${{ }}`
//!   templates and what they refer to), [`expr::types`] (the validate-time type check),
//!   [`expr::render`] (values at run time, `script:` quoted by [`expr::script`]).
//! - [`plan`] holds the result: a petgraph DAG of steps with their resolved settings, the
//!   critical path over estimated durations, and the list schedule under the runbook's
//!   concurrency and pools (the same ready queue the executor uses).
//! - [`exec`] runs a plan: the scheduler, step attempts, dry-run in virtual time, rollback;
//!   through [`provider`]s; recording every event in the [`journal`], from which `resume`
//!   carries on after a crash.
//! - [`report`] turns a run's journal into the evidence of a DR test.
//! - [`commands`] are the CLI verbs over that pipeline; [`exit`] their exit codes.

/// `println!` that ignores a closed stdout: a run goes on (its journal is the record) when the
/// pipe it prints to is gone, as in `ripcord run ... | head`.
#[macro_export]
macro_rules! println_quiet {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that ignores a closed stdout.
#[macro_export]
macro_rules! print_quiet {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
#[macro_export]
macro_rules! eprintln_quiet {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// `eprint!` that ignores a closed stderr.
#[macro_export]
macro_rules! eprint_quiet {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($t)*);
    }};
}

pub mod cli;
pub mod commands;
pub mod compile;
pub mod diag;
pub mod error;
pub mod exec;
pub mod exit;
pub mod expr;
pub mod journal;
pub mod plan;
pub mod provider;
pub mod report;
pub mod runbook;
pub mod session;
pub mod state;
