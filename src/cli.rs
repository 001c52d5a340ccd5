//! The command line, as clap derive types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ripcord",
    version,
    about = "Declarative failover runbooks: compile a YAML runbook into a DAG and run it",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse, type-check, resolve references and find cycles; every error with file:line:col.
    Validate(ValidateArgs),
    /// Stages, pools, critical path, predicted duration against the rto.
    Plan(PlanArgs),
    /// The DAG as Graphviz DOT or Mermaid, critical path highlighted.
    Graph(GraphArgs),
    /// Execute a runbook (or simulate it with --dry-run).
    Run(RunArgs),
    /// Continue a run that was interrupted or crashed.
    Resume(ResumeArgs),
    /// Run the undos of a run's completed steps.
    Rollback(RollbackArgs),
    /// Answer a run's waiting approval from another shell (or machine, with shared state).
    Approve(ApproveArgs),
    /// List recorded runs, newest first.
    Runs(RunsArgs),
    /// The process supervisor of a run session (internal).
    #[command(name = "__supervise", hide = true)]
    Supervise,
    /// The report of a recorded run: text, Markdown, JSON, JUnit XML or HTML.
    Report(ReportArgs),
    /// Providers and their actions: built in, and external plugins with where each was found.
    Plugins(PluginsArgs),
    /// The JSON Schema of the runbook format.
    Schema,
}

#[derive(Debug, Args)]
pub struct PluginsArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// One of the runbook's `modes:` (default: the first); steps with `modes:` run only in
    /// theirs.
    #[arg(long, value_name = "NAME")]
    pub mode: Option<String>,
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Simulate every step in virtual time; nothing real is touched.
    #[arg(long, conflicts_with = "check")]
    pub dry_run: bool,
    /// Pre-flight: run each step's read-only check (where its action has one); steps without
    /// one are skipped, and steps marked `check: true` (read-only by the runbook's word) run
    /// for real. Nothing else changes, and nothing is rolled back.
    #[arg(long)]
    pub check: bool,
    /// Seed of the dry-run's draws (`sim.jitter`, `--fail-rate`): the same seed, the same
    /// events. Recorded, so a run can be replayed.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// In a dry-run, make this step fail on every attempt (repeatable; an id or a for_each id).
    #[arg(long = "fail", value_name = "STEP")]
    pub fail: Vec<String>,
    /// In a dry-run, make each attempt fail with this probability (0 to 1), drawn from
    /// `--seed`: the same seed fails the same attempts.
    #[arg(long, value_name = "P", value_parser = fail_rate)]
    pub fail_rate: Option<f64>,
    #[command(flatten)]
    pub approvals: ApprovalArgs,
    /// Steps in flight at most, instead of the runbook's `concurrency`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Where the dry-run's step durations come from.
    #[arg(long, value_enum, default_value_t = Estimates::Sim)]
    pub estimates: Estimates,
    /// Write the run's report at the end, e.g. `--report html:dr-test.html` (repeatable).
    #[arg(long = "report", value_name = "FORMAT:FILE", value_parser = parse_report_target)]
    pub reports: Vec<(ReportFormat, PathBuf)>,
    #[command(flatten)]
    pub state: StateArgs,
    /// One JSON event per line on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

#[derive(Debug, Args)]
pub struct ApprovalArgs {
    /// Approve every approval step in advance.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Approve this approval step in advance (repeatable).
    #[arg(long = "approve", value_name = "STEP")]
    pub approve: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    /// Where runs are recorded: a directory, or a shared PostgreSQL database as
    /// postgres://USER@HOST/DB (default: $RIPCORD_STATE, else $RIPCORD_STATE_DIR, else .ripcord).
    #[arg(long, value_name = "URL", conflicts_with = "state_dir")]
    pub state: Option<String>,
    /// Where runs are recorded: a directory (as --state DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// With a shared database: how long a run's lease lasts unrenewed (renewed at least every
    /// third of it); a holder that cannot renew it starts nothing more, and after it the run may
    /// be taken over.
    #[arg(long, value_name = "DURATION", value_parser = parse_lease_ttl)]
    pub lease_ttl: Option<std::time::Duration>,
}

fn parse_lease_ttl(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(s)?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(3600) {
        return Err("a lease lasts from 1s to 1h".into());
    }
    Ok(d)
}

/// `text` as one word for a POSIX shell: as it is when that is safe, else single-quoted.
pub fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    pub run_id: String,
    /// Re-run steps that started but have no recorded end (not idempotent ones included).
    #[arg(long, conflicts_with = "skip_in_doubt")]
    pub retry_in_doubt: bool,
    /// Treat steps that started but have no recorded end as done.
    #[arg(long)]
    pub skip_in_doubt: bool,
    /// Resume even though the runbook file changed since the run started.
    #[arg(long)]
    pub force: bool,
    /// Take the run over from a holder that stopped renewing its lease (shared state: a
    /// machine lost, a process killed), once that lease has expired. Recorded in the journal.
    #[arg(long, conflicts_with = "break_glass")]
    pub takeover: bool,
    /// The shared state database is lost: finish the run on a local directory (--state-dir, else
    /// $RIPCORD_STATE_DIR, else .ripcord) from this machine's copy of its journal. The reason,
    /// who and where are recorded in the journal.
    #[arg(long, value_name = "REASON")]
    pub break_glass: Option<String>,
    /// Values of secret inputs (they are not recorded), or overrides.
    #[command(flatten)]
    pub inputs: InputArgs,
    #[command(flatten)]
    pub approvals: ApprovalArgs,
    #[command(flatten)]
    pub state: StateArgs,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    pub run_id: String,
    /// Roll back even though the runbook file changed since the run started; with --reason,
    /// also past an irreversible step that completed, or a run that succeeded.
    #[arg(long)]
    pub force: bool,
    /// Why the rollback is forced (journaled and shown in every report).
    #[arg(long, value_name = "TEXT", requires = "force")]
    pub reason: Option<String>,
    /// Take the run over from a holder that stopped renewing its lease (shared state), once
    /// that lease has expired, to roll it back. Recorded in the journal.
    #[arg(long)]
    pub takeover: bool,
    #[command(flatten)]
    pub inputs: InputArgs,
    #[command(flatten)]
    pub state: StateArgs,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    pub run_id: String,
    /// The waiting approval step's id.
    pub step: String,
    /// Say no: the approval step fails.
    #[arg(long)]
    pub reject: bool,
    /// A comment recorded with the answer.
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// How long to wait for the run to take the answer.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub wait: std::time::Duration,
    #[command(flatten)]
    pub state: StateArgs,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::runbook::duration::parse(s)
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    pub run_id: String,
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Md,
    Json,
    Junit,
    Html,
}

/// `--report FORMAT:FILE`.
pub fn parse_report_target(s: &str) -> Result<(ReportFormat, PathBuf), String> {
    let (format, file) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not FORMAT:FILE (e.g. html:report.html)"))?;
    let format = ReportFormat::from_str(format, true)
        .map_err(|_| format!("unknown report format `{format}`: text, md, json, junit or html"))?;
    if file.is_empty() {
        return Err(format!("`{s}` names no file"));
    }
    Ok((format, PathBuf::from(file)))
}

/// Where plan and dry-run take each step's duration from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Estimates {
    /// `sim.duration`, else the action's default.
    #[default]
    Sim,
    /// The median actual duration in earlier real runs, else as `sim`.
    History,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[arg(long)]
    pub json: bool,
    /// Only runs of this runbook (its `name:`).
    #[arg(long, value_name = "NAME")]
    pub runbook: Option<String>,
    /// Only runs in this state.
    #[arg(long, value_enum, value_name = "STATUS")]
    pub status: Option<RunsStatus>,
}

/// The states `ripcord runs --status` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunsStatus {
    Succeeded,
    Failed,
    Interrupted,
    /// No end recorded, and no session at work on it: crashed.
    Incomplete,
    /// A session is at work on it now.
    Running,
    /// Rolled back, in full or in part.
    RolledBack,
    /// Its journal cannot be read.
    Unreadable,
}

fn fail_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{text}` is not a probability from 0 to 1")),
    }
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Runbook files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// One JSON document with every file's diagnostics (for CI annotations).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// One of the runbook's `modes:` (default: the first); steps with `modes:` run only in
    /// theirs.
    #[arg(long, value_name = "NAME")]
    pub mode: Option<String>,
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Predict with this many steps in flight instead of the runbook's `concurrency`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Where step durations come from: the runbook's `sim`, or earlier real runs.
    #[arg(long, value_enum, default_value_t = Estimates::Sim)]
    pub estimates: Estimates,
    /// Where earlier runs are recorded (for `--estimates history`).
    #[command(flatten)]
    pub state: StateArgs,
    /// Machine-readable plan.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// One of the runbook's `modes:` (default: the first); steps with `modes:` run only in
    /// theirs.
    #[arg(long, value_name = "NAME")]
    pub mode: Option<String>,
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    #[command(flatten)]
    pub inputs: InputArgs,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Args)]
pub struct InputArgs {
    /// An input value, `key=value` (repeatable; lists as `a,b` or JSON, maps as JSON).
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub inputs: Vec<(String, String)>,
    /// A YAML file of input values, `name: value` a line (repeatable; a later file wins, and
    /// `--input` wins over any file): an environment's DSNs and sockets, an inventory of hosts.
    #[arg(long = "input-file", value_name = "FILE")]
    pub input_files: Vec<PathBuf>,
}

impl InputArgs {
    /// The `--input-file`s read; their problems printed (exit 2).
    pub fn files(&self) -> crate::error::CommandResult<Vec<crate::compile::inputs::InputFile>> {
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for path in &self.input_files {
            match crate::compile::inputs::InputFile::read(path) {
                Ok(f) => files.push(f),
                Err(diags) => problems.extend(diags),
            }
        }
        if problems.is_empty() {
            return Ok(files);
        }
        crate::commands::print_diags(&problems);
        Err(crate::error::CommandError::Reported(crate::exit::INVALID))
    }
}

#[derive(Debug, Args)]
pub struct PluginArgs {
    /// A directory searched first for `ripcord-plugin-NAME` executables (repeatable), before
    /// $RIPCORD_PLUGIN_PATH, the directory of the ripcord binary and $PATH.
    #[arg(long = "plugin-dir", value_name = "DIR")]
    pub plugin_dirs: Vec<PathBuf>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}
