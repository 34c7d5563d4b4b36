//! The `baton` process from arguments to exit code: which runtime a command gets, and how
//! its outcome reaches the person (output on stdout, failures on stderr and as JSON with
//! `--json`, exit codes by kind; see [`super::errors`]).

use super::errors::{PROBLEMS_FOUND, exit_code, for_person, structured, to_json};
use super::upkeep::ProblemsFound;
use super::{Cli, Command, DriveArgs};
use crate::error::{BatonError, ErrorCode};
use crate::home::Home;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Run the parsed command line to its exit code.
pub fn run(cli: Cli) -> ExitCode {
    if let Some(Command::Owner) = cli.command {
        // The database owner: a detached process with its own runtime and log.
        return match Home::resolve(cli.home.as_deref()) {
            Ok(home) => crate::backend::daemon::run(home),
            Err(e) => {
                eprintln!("baton: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.command.is_none() && std::io::stdin().is_terminal() {
        // A person typed `baton`: serving would hang silently. On a pipe (Codex) it serves.
        eprintln!("{}", super::TTY_HINT);
        return ExitCode::from(exit_code(ErrorCode::InvalidArgument));
    }
    if let Some(Command::Drive(args)) = cli.command {
        return drive(cli.home, args);
    }
    let serving = matches!(cli.command, None | Some(Command::Serve));
    crate::logging::init(if serving { "warn,baton=info" } else { "warn" });
    let json = cli.command.as_ref().is_some_and(Command::json);
    let run = cli.command.as_ref().and_then(Command::run_arg).map(str::to_string);
    // One thread: this process only talks to the owner.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return no_runtime(e),
    };
    let outcome = runtime.block_on(super::commands::run(cli));
    // Let go of the owner connection before printing, so a slow reader of our output
    // holds nothing the other baton processes need.
    drop(runtime);
    match outcome {
        Ok(text) => print(&text),
        Err(e) if e.downcast_ref::<ProblemsFound>().is_some() => match print(&e.to_string()) {
            ExitCode::SUCCESS => ExitCode::from(PROBLEMS_FOUND),
            failed => failed,
        },
        Err(e) => {
            let err = structured(&e);
            let err = if serving { err } else { for_person(err, run.as_deref()) };
            report(&err, json)
        }
    }
}

/// Print a failure for a person on stderr (and as JSON on stdout when asked for JSON);
/// the exit code tells its kind.
fn report(err: &BatonError, json: bool) -> ExitCode {
    let field = err.field.as_deref().map(|f| format!(" (`{f}`)")).unwrap_or_default();
    eprintln!("baton: {}{field}: {}\n  Fix: {}", err.code.as_str(), err.message, err.fix);
    if json {
        let _ = writeln!(std::io::stdout().lock(), "{}", to_json(err));
    }
    ExitCode::from(exit_code(err.code))
}

/// Arguments clap refused: its message on stderr (and JSON on stdout if `--json` was among
/// them), exit 2; `--help` and `--version` print as clap does.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ErrorKind};
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { ExitCode::from(2) } else { ExitCode::SUCCESS };
    }
    let _ = e.print();
    if std::env::args().any(|a| a == "--json") {
        let rendered = e.render().to_string();
        let message = rendered.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_string();
        let field = e.get(ContextKind::InvalidArg).map(|f| f.to_string()).unwrap_or_else(|| "arguments".into());
        let err = BatonError::invalid(field, message, "Run the command with --help for its arguments and examples.");
        let _ = writeln!(std::io::stdout().lock(), "{}", to_json(&err));
    }
    ExitCode::from(exit_code(ErrorCode::InvalidArgument))
}

/// `baton drive`: its own exit codes (see `crate::drive::Exit`), a multi-threaded runtime for
/// its agents.
fn drive(home: Option<PathBuf>, args: DriveArgs) -> ExitCode {
    crate::logging::init("warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return no_runtime(e),
    };
    let outcome = runtime.block_on(async move {
        let backend = crate::backend::Backend::new(Home::resolve(home.as_deref())?);
        crate::drive::drive(backend, args.options()).await
    });
    match outcome {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("baton drive: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn no_runtime(e: std::io::Error) -> ExitCode {
    eprintln!("baton: cannot start the async runtime: {e}");
    ExitCode::FAILURE
}

/// Write the command's output; a reader that went away (`| head`) is not an error.
fn print(text: &str) -> ExitCode {
    if text.is_empty() {
        return ExitCode::SUCCESS;
    }
    match writeln!(std::io::stdout().lock(), "{text}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: cannot write output: {e}");
            ExitCode::FAILURE
        }
    }
}
