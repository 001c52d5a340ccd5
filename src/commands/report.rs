//! `ripcord report RUN_ID`: a recorded run's report in one of five formats.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::cli::{ReportArgs, ReportFormat};
use crate::exit;
use crate::report::{self, Report};
use crate::state::{StateBackend, StateDir};

use super::recorded::read_run;

pub fn run(args: &ReportArgs) -> u8 {
    let state = StateDir::resolve(args.state.state_dir.as_deref());
    let report = match build(&state, &args.run_id) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let text = render(&report, args.format);
    match &args.output {
        Some(path) => match write_private(path, &text) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", path.display());
                exit::FAILED
            }
        },
        None => {
            print!("{text}");
            exit::OK
        }
    }
}

pub fn build(state: &dyn StateBackend, run_id: &str) -> Result<Report, u8> {
    // From the journal alone: later runs change nothing in an earlier run's report.
    let (read, _) = read_run(state, run_id)?;
    let mut report = report::build(&read).ok_or(exit::INVALID)?;
    // A journal that just stops is a crash, unless a session holds the run now.
    report.mark_live(state.is_held(&crate::state::Scope::Run(run_id.to_string())));
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
/// existed with a wider mode; never written through a symbolic link (which could point at a
/// file somewhere else, of someone else's choosing).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::new(e.kind(), "it is a symbolic link; give the file itself")
            } else {
                e
            }
        })?;
    // Narrowed before anything is written into it, then emptied.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.set_len(0)?;
    file.write_all(text.as_bytes())
}
