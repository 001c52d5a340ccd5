//! `ripcord report RUN_ID`: a recorded run's report in one of five formats.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::cli::{ReportArgs, ReportFormat};
use crate::error::CommandResult;
use crate::exit;
use crate::report::{self, Report};
use crate::state::StateBackend;

use super::recorded::read_run;

pub fn run(args: &ReportArgs) -> CommandResult {
    let state = crate::state::open(&args.state).map_err(|e| crate::invalid!("{e}"))?;
    let report = build(state.as_ref(), &args.run_id)?;
    let text = render(&report, args.format);
    match &args.output {
        Some(path) => write_private(path, &text)
            .map(|()| exit::OK)
            .map_err(|e| crate::invalid!("cannot write {}: {e}", path.display())),
        None => {
            print!("{text}");
            Ok(exit::OK)
        }
    }
}

pub fn build(state: &dyn StateBackend, run_id: &str) -> CommandResult<Report> {
    // From the journal alone: later runs change nothing in an earlier run's report.
    let (read, _) = read_run(state, run_id)?;
    let mut report = report::build(&read)
        .ok_or_else(|| crate::invalid!("run {run_id}: the journal has no start record"))?;
    // A journal that just stops is a crash, unless a session holds the run now.
    report.mark_live(
        state
            .is_held(&crate::state::Scope::Run(run_id.to_string()))
            .unwrap_or(false),
    );
    Ok(report)
}

pub fn render(report: &Report, format: ReportFormat) -> String {
    match format {
        ReportFormat::Text => report::text::render(report),
        ReportFormat::Md => report::markdown::render(report),
        ReportFormat::Json => {
            let mut s = serde_json::to_string_pretty(report).expect("reports serialize");
            s.push('\n');
            s
        }
        ReportFormat::Junit => report::junit::render(report),
        ReportFormat::Html => report::html::render(report),
    }
}

/// Reports hold what happened in production: readable by their owner only, also when the file
/// existed with a wider mode. Written only into a regular file of this account's with one link:
/// never through a symbolic link, into a device, a FIFO (opened without waiting for a reader),
/// a hard link to another file, or a file another account owns (and could still read).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let refuse = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse("it is a symbolic link; give the file itself"),
            Some(libc::ENXIO) => refuse("it is a FIFO with no reader; give a regular file"),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(refuse("it is not a regular file"));
    }
    if meta.nlink() != 1 {
        return Err(refuse("it has other hard links; give a file of its own"));
    }
    // SAFETY: geteuid has no preconditions.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(refuse(
            "another account owns it (and could read the report); give a file of your own",
        ));
    }
    // Narrowed before anything is written into it, then emptied.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.set_len(0)?;
    file.write_all(text.as_bytes())
}
