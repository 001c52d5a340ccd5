//! One module per CLI verb. Each returns its outcome's exit code, or a [`CommandError`] that
//! `main` prints and maps to its exit code; diagnostics go to stderr, results to stdout.

pub mod approve;
pub mod graph;
pub mod plan;
pub mod plugins;
pub mod recorded;
pub mod report;
pub mod resume;
pub mod rollback;
pub mod run;
pub mod runs;
pub mod schema;
pub mod validate;

use std::io::IsTerminal;
use std::path::Path;

use crate::cli::{Cli, Command};
use crate::compile::{CompileOptions, Compiled, compile};
use crate::diag::Diag;
use crate::error::{CommandError, CommandResult};
use crate::exit;
use crate::runbook::load_file;

pub fn run(cli: Cli) -> CommandResult {
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Graph(args) => graph::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Resume(args) => resume::run(&args),
        Command::Rollback(args) => rollback::run(&args),
        Command::Approve(args) => approve::run(&args),
        Command::Supervise => Ok(crate::session::supervisor::supervise()),
        Command::Runs(args) => runs::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Plugins(args) => plugins::run(&args),
        Command::Schema => schema::run(),
    }
}

/// Loads and compiles one file; the diagnostics either way (warnings on success).
pub fn load_and_compile(path: &Path, options: &CompileOptions) -> (Option<Compiled>, Vec<Diag>) {
    let source = match load_file(path) {
        Ok(source) => source,
        Err(diags) => return (None, diags),
    };
    match compile(source, options) {
        Ok(mut compiled) => {
            let warnings = std::mem::take(&mut compiled.warnings);
            (Some(compiled), warnings)
        }
        Err(diags) => (None, diags),
    }
}

/// Whether stderr gets colour: a terminal, and NO_COLOR unset.
pub fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub fn print_diags(diags: &[Diag]) {
    let color = color();
    for d in diags {
        crate::eprint_quiet!("{}", d.render(color));
    }
}

/// For commands that need one compiled runbook: prints diagnostics, and on failure the exit code.
pub fn compile_one(path: &Path, options: &CompileOptions) -> CommandResult<Compiled> {
    let (compiled, diags) = load_and_compile(path, options);
    print_diags(&diags);
    compiled.ok_or(CommandError::Reported(exit::INVALID))
}
