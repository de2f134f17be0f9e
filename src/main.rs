//! The `spotter` command: parses the command line, sets up logging, runs the
//! chosen command and reports the error chain and exit code in one place.

use std::process::ExitCode;

use clap::Parser;
use spotter::cli::{Cli, Failure};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match spotter::cli::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { error, code }) => {
            // `{:#}` prints the whole context chain on one line.
            log::error!("{error:#}");
            if !log::log_enabled!(log::Level::Error) || !spotter::cli::logs_to_stderr() {
                eprintln!("spotter: error: {error:#}");
            }
            ExitCode::from(code)
        }
    }
}
