use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ripcord::cli::Cli::parse();
    ExitCode::from(ripcord::commands::run(cli))
}
