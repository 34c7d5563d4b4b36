//! The `baton` binary: parse the arguments and hand them to `baton::cli::process`, which
//! runs the command (the database owner, `serve` for Codex, `drive`, or a terminal command)
//! and turns its outcome into output and an exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match baton::cli::Cli::try_parse() {
        Ok(cli) => baton::cli::process::run(cli),
        Err(e) => baton::cli::process::usage_error(e),
    }
}
