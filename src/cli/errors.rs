//! Failures of terminal commands: one [`BatonError`] each, printed for a person on stderr,
//! as JSON on stdout with `--json`, and ending the process with an exit code by kind, so
//! scripts can branch on it as they do with `gh` or `git`.

use crate::error::{BatonError, ErrorCode};

/// The exit code of `baton verify` (and `--repair`) when the check found problems; a
/// verify that could not check exits with the code of the error's kind instead.
pub const PROBLEMS_FOUND: u8 = 9;

/// The exit code of a failure of this kind (documented in `baton --help` and the README).
pub fn exit_code(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::Internal => 1,
        ErrorCode::InvalidArgument => 2,
        ErrorCode::NotFound => 3,
        ErrorCode::Conflict => 4,
        ErrorCode::InvalidState => 5,
        ErrorCode::TooLarge => 6,
        ErrorCode::Unavailable => 7,
        ErrorCode::Storage => 8,
    }
}

/// The structured error inside `err`, or one made of its message. Errors that are not
/// baton's own (a file that cannot be read, an invalid config.toml) are `internal` only
/// when nothing better is known: their message names the cause and what to do.
pub fn structured(err: &anyhow::Error) -> BatonError {
    if let Some(e) = err.downcast_ref::<BatonError>() {
        return e.clone();
    }
    if let Some(e) = err.chain().find_map(|c| c.downcast_ref::<std::io::Error>()) {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorCode::NotFound,
            std::io::ErrorKind::AlreadyExists => ErrorCode::Conflict,
            std::io::ErrorKind::InvalidInput => ErrorCode::InvalidArgument,
            _ => ErrorCode::Storage,
        };
        return BatonError::new(code, format!("{err:#}"), "Check the path named above and its permissions.");
    }
    BatonError::new(ErrorCode::Internal, format!("{err:#}"), "See the message above.")
}

/// The error as `{"error": {code, field, message, fix}}`, the shape MCP tool results use.
pub fn to_json(err: &BatonError) -> String {
    let value = serde_json::json!({ "error": err });
    serde_json::to_string_pretty(&value).unwrap_or_else(|_| format!("{{\"error\": {{\"code\": \"{}\"}}}}", err.code.as_str()))
}

/// MCP tool names in a fix: the service speaks to Codex's model; a person at a terminal
/// needs the command instead.
const TOOLS: [&str; 8] =
    ["`resume`", "`inspect`", "`advance`", "`answer_human`", "`cancel_run`", "`start_workflow`", "`await_human`", "`checkpoint`"];

/// `err` with its fix told in terminal commands for `run` (the run the command named).
pub fn for_person(mut err: BatonError, run: Option<&str>) -> BatonError {
    let run = run.unwrap_or("RUN");
    let fix = match (err.code, err.field.as_deref()) {
        (ErrorCode::NotFound, Some("run_id")) => {
            Some("Run `baton runs` to list run ids; a unique prefix of at least 4 characters works too.".to_string())
        }
        (ErrorCode::Conflict, Some("expected_version")) => Some(format!(
            "Someone changed the run since: `baton show {run}` shows what changed and its version; retry with that --expected-version if your change still applies."
        )),
        (ErrorCode::Conflict, Some("lease_token")) => Some(format!("`baton show {run}` shows who holds which task now.")),
        (ErrorCode::InvalidArgument, Some("task")) => {
            Some(format!("`baton show {run}` lists the tasks waiting for an answer; pass one with --task TASK."))
        }
        (ErrorCode::InvalidState, _) if err.fix.contains("pass `task`") => Some(format!(
            "{} Answer one of them with `baton answer {run} ANSWER --task TASK` (`baton show {run}` shows their questions).",
            err.fix.split(':').next().unwrap_or("Tasks wait for an answer")
        )),
        (ErrorCode::InvalidState, _) if err.message.contains("not waiting") || err.message.contains("no pending") => Some(format!(
            "Only a run waiting for a person can be answered: `baton runs --status awaiting_human` lists them, `baton show {run}` shows this one."
        )),
        _ => None,
    };
    if let Some(fix) = fix {
        err.fix = fix;
    } else if TOOLS.iter().any(|t| err.fix.contains(t)) {
        err.fix = format!("`baton show {run}` shows the run's state and what can be done next (`baton runs` lists runs).");
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixes_speak_of_terminal_commands() {
        let err = for_person(crate::store::unknown_run("5ef2"), Some("5ef2"));
        assert!(err.fix.contains("baton runs") && !err.fix.contains("`resume`"), "{err}");
        let err = BatonError::invalid_state("run x is cancelled", "Fork it from a checkpoint with `resume` to continue.");
        let err = for_person(err, Some("abcd1234"));
        assert!(err.fix.contains("baton show abcd1234") && !err.fix.contains("`resume`"), "{err}");
        let kept = for_person(BatonError::invalid("answer", "no", "Answer one of: yes, no."), None);
        assert_eq!(kept.fix, "Answer one of: yes, no.");
    }

    #[test]
    fn every_kind_has_its_own_exit_code() {
        let kinds = [
            ErrorCode::Internal,
            ErrorCode::InvalidArgument,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::InvalidState,
            ErrorCode::TooLarge,
            ErrorCode::Unavailable,
            ErrorCode::Storage,
        ];
        let mut codes: Vec<u8> = kinds.iter().map(|k| exit_code(*k)).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&0));
    }

    #[test]
    fn errors_as_json_keep_every_field() {
        let text = to_json(&BatonError::not_found("run_id", "no run", "list them"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["error"]["code"], "not_found");
        assert_eq!(value["error"]["field"], "run_id");
    }
}
