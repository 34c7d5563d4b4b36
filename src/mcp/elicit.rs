//! Asking the user a run's question through MCP elicitation, when the client can show a
//! form (Codex's interactive clients can; `codex exec` declines every form). Only an
//! accepted form answers the question; a decline, cancel, error or time-out leaves the run
//! durably waiting, to be answered later from any session or a terminal.

use crate::api::{AnswerHumanParams, Briefed, Caller};
use crate::backend::Backend;
use crate::engine::Brief;
use rmcp::RoleServer;
use rmcp::model::{ElicitRequestParams, ElicitationAction, ElicitationSchema};
use rmcp::service::Peer;
use serde_json::{Value, json};
use std::time::Duration;

/// How long the form waits for the user before the run is left waiting instead. Codex
/// fails a tool call that takes longer than its `tool_timeout_sec` (60 s by default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(50);

/// Ask the user `brief`'s pending question if the client can show a form; returns the
/// brief to answer the tool call with (the continued run's, or the waiting one's with a note).
pub async fn ask_user(backend: &Backend, caller: Caller, peer: &Peer<RoleServer>, brief: Brief) -> Brief {
    let Some(question) = brief.question.clone() else { return brief };
    let supports_forms = peer.peer_info().is_some_and(|info| info.capabilities.elicitation.is_some());
    if !supports_forms {
        return with_note(brief, "This client cannot show a form: ask the user in chat, then call `answer_human`.");
    }
    let schema = match form_schema(&question.options) {
        Ok(schema) => schema,
        Err(e) => return with_note(brief, &format!("The question could not be put in a form ({e}): ask the user in chat.")),
    };
    let params = ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: format!("baton run \"{}\" asks: {}", brief.title, question.question),
        requested_schema: schema,
    };
    let timeout =
        std::env::var("BATON_ELICITATION_TIMEOUT_SECS").ok().and_then(|s| s.parse().ok()).map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let answer = match peer.create_elicitation_with_timeout(params, Some(timeout)).await {
        Ok(result) if result.action == ElicitationAction::Accept => result.content,
        Ok(result) => {
            let how = if result.action == ElicitationAction::Decline { "declined" } else { "cancelled" };
            return with_note(
                brief,
                &format!("The user {how} the form; that is not an answer. The run waits: ask the user in chat, then call `answer_human`."),
            );
        }
        Err(e) => {
            tracing::info!("elicitation failed: {e}");
            return with_note(
                brief,
                "The form got no answer (the client refused it or it timed out). The run waits: ask the user in chat, then call `answer_human`.",
            );
        }
    };
    let Some((answer, comment)) = answer.as_ref().and_then(parse_answer) else {
        return with_note(brief, "The form came back without an answer. The run waits: ask the user in chat, then call `answer_human`.");
    };
    let request = AnswerHumanParams {
        run_id: brief.run_id.clone(),
        task: None,
        answer: answer.clone(),
        comment,
        expected_version: Some(brief.version),
        code: None,
    };
    match crate::calls::call(backend, caller, request).await {
        Ok(Briefed::Run(next)) => with_note(*next, &format!("The user answered in a form: {answer}.")),
        // Without `task` the answer is the run's own question's, unless the service found a
        // task waiting for it (the run's question was answered meanwhile): say so.
        Ok(Briefed::Task(_)) => with_note(brief, "The answer went to a task that waits for one; call `resume` with this run_id."),
        Err(e) => with_note(
            brief,
            &format!(
                "The user answered `{answer}` in a form but it could not be recorded ({}). Call `resume` with this run_id, and ask again if the question is still pending.",
                e.message
            ),
        ),
    }
}

fn with_note(mut brief: Brief, note: &str) -> Brief {
    brief.note = Some(note.to_string());
    brief
}

/// The form: the answer (one of the options, or free text) and an optional comment.
fn form_schema(options: &[String]) -> Result<ElicitationSchema, serde_json::Error> {
    let answer = if options.is_empty() {
        json!({"type": "string", "title": "Answer"})
    } else {
        json!({"type": "string", "title": "Answer", "enum": options})
    };
    serde_json::from_value(json!({
        "type": "object",
        "properties": {"answer": answer, "comment": {"type": "string", "title": "Comment (optional)"}},
        "required": ["answer"],
    }))
}

fn parse_answer(content: &Value) -> Option<(String, Option<String>)> {
    let answer = content.get("answer")?.as_str()?.trim().to_string();
    if answer.is_empty() {
        return None;
    }
    let comment = content.get("comment").and_then(Value::as_str).map(str::trim).filter(|c| !c.is_empty()).map(str::to_string);
    Some((answer, comment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_offers_the_options_and_reads_the_answer() {
        let schema = serde_json::to_value(form_schema(&["5".into(), "10".into()]).unwrap()).unwrap();
        assert_eq!(schema["properties"]["answer"]["enum"], json!(["5", "10"]));
        assert_eq!(schema["required"], json!(["answer"]));
        assert_eq!(parse_answer(&json!({"answer": " 10 ", "comment": ""})), Some(("10".into(), None)));
        assert_eq!(parse_answer(&json!({"comment": "x"})), None, "a form without an answer answers nothing");
    }
}
