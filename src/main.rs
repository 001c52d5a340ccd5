use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ripcord::cli::Cli::parse();
    use ripcord::cli::Command;
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Resume(_) | Command::Rollback(_) | Command::Supervise
    ) {
        // Commands that only print stop quietly when the reader goes away (`| head`), as cat
        // does. Runs keep going: they never die of a closed pipe, they stop printing.
        // SAFETY: called before any thread starts; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if matches!(
        cli.command,
        Command::Run(_) | Command::Resume(_) | Command::Rollback(_)
    ) {
        ripcord::session::signals::exit_early();
    }
    match ripcord::commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            e.print();
            ExitCode::from(e.exit_code())
        }
    }
}

// glibc's malloc spends much of a 100,000-step compile consolidating freed chunks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
