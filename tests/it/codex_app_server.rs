//! baton under `codex app-server`, the protocol behind Codex's interactive front ends, with the
//! thread's default approval policy (`on-request`): the scripted model drives real turns
//! (`thread/start` + `turn/start`) and the test client answers Codex's server requests as a user
//! would. It counts tool-approval prompts (none for baton's non-destructive tools; one for
//! `cancel_run`) and answers the forms baton itself sends through MCP elicitation.
//!
//! Codex is found as in `codex_cli` (`CODEX_BIN`, else the pinned npm package, else `PATH`).

use crate::support::app_server::Answer;
use crate::support::codex::find_codex;
use crate::support::exec::ExecHarness;
use crate::support::model_server::{ModelRequest, Output, output_text, step, steps, structured_in};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

/// Upper bound for one scripted turn: a few tool calls and a form or two.
const TURN: Duration = Duration::from_secs(90);

fn baton(call_id: &str, tool: &str, arguments: Value) -> Vec<Output> {
    vec![Output::mcp_call(call_id, "baton", tool, arguments)]
}

/// What the client saw of Codex's server requests.
#[derive(Default)]
struct Seen {
    /// Tools Codex asked the user to approve (`_meta.tool_name` of approval prompts).
    approvals: Vec<String>,
    /// baton's own forms (`mcpServer/elicitation/request` without an approval kind).
    forms: Vec<Value>,
    /// How to answer baton's next forms, in order.
    form_answers: VecDeque<Value>,
    /// Other server requests (method names).
    other: Vec<String>,
}

/// A brief `call_id` returned, with its run_id and version.
fn brief(request: &ModelRequest, call_id: &str) -> Value {
    request.result_of(call_id)
}

#[test]
fn app_server_runs_baton_without_approval_prompts_and_asks_the_user_in_forms() {
    let Some(codex) = find_codex() else { return };
    let goal = "Add rate limiting to the login endpoint";
    let turn_1 = vec![
        step(|_| vec![Output::tool_search("search", "baton", None)]),
        step(move |_| baton("start", "start_workflow", json!({"goal": goal}))),
        step(|r| {
            let b = brief(r, "start");
            baton("cp", "checkpoint", json!({"run_id": b["run_id"], "name": "before-design", "expected_version": b["version"]}))
        }),
        step(|r| baton("look", "inspect", json!({"run_id": r.result_of("cp")["run_id"]}))),
        step(|r| {
            let saved = r.result_of("cp");
            let question = json!({"run_id": saved["run_id"], "question": "How many login attempts per minute?", "options": ["5", "10"], "expected_version": saved["version"]});
            baton("ask-1", "await_human", question)
        }),
        step(|r| {
            let b = brief(r, "ask-1");
            baton(
                "plan",
                "advance",
                json!({"run_id": b["run_id"], "expected_version": b["version"], "outcome": "planned", "output": "Plan: 10 attempts per minute per client IP."}),
            )
        }),
        step(|r| {
            let b = brief(r, "plan");
            let question = json!({"run_id": b["run_id"], "question": "Keep the counters in memory or in Redis?", "options": ["memory", "redis"], "expected_version": b["version"]});
            baton("ask-2", "await_human", question)
        }),
        step(|r| vec![Output::text(&format!("I asked: {}", brief(r, "ask-2")["question"]["question"]))]),
    ];
    let turn_2 = vec![
        step(|r| {
            // The user answered in chat; the model passes the answer on.
            let b = brief(r, "ask-2");
            baton("answer", "answer_human", json!({"run_id": b["run_id"], "answer": "memory", "expected_version": b["version"]}))
        }),
        step(|r| baton("briefing", "resume", json!({"run_id": brief(r, "answer")["run_id"]}))),
        step(|_| baton("list", "resume", json!({}))),
        step(|_| vec![Output::text("Recorded; the implementer is next.")]),
    ];
    let turn_3 = vec![
        step(|r| {
            let b = brief(r, "answer");
            baton(
                "cancel",
                "cancel_run",
                json!({"run_id": b["run_id"], "reason": "the user changed plans", "expected_version": b["version"]}),
            )
        }),
        step(|_| vec![Output::text("Not cancelled.")]),
    ];
    let harness = ExecHarness::new(&codex, steps(turn_1.into_iter().chain(turn_2).chain(turn_3).collect()));

    let seen = Rc::new(RefCell::new(Seen::default()));
    seen.borrow_mut().form_answers.extend([
        json!({"action": "accept", "content": {"answer": "10", "comment": "per client IP"}, "_meta": null}),
        json!({"action": "decline", "content": null, "_meta": null}),
    ]);
    let mut app = harness.app_server();
    let client = Rc::clone(&seen);
    app.set_handler(Box::new(move |method, params| {
        let mut seen = client.borrow_mut();
        if method != "mcpServer/elicitation/request" {
            seen.other.push(method.to_string());
            return Answer::Error("not supported by the baton test client".into());
        }
        if params["_meta"]["codex_approval_kind"] == "mcp_tool_call" {
            seen.approvals.push(params["_meta"]["tool_name"].as_str().unwrap_or("?").to_string());
            return Answer::Result(json!({"action": "decline", "content": null, "_meta": null}));
        }
        seen.forms.push(params.clone());
        Answer::Result(seen.form_answers.pop_front().unwrap_or(json!({"action": "cancel", "content": null, "_meta": null})))
    }));
    let (thread, started) = app.start_thread(harness.work());
    assert_eq!(started["approvalPolicy"], "on-request", "app-server threads ask on request by default: {started:#}");

    // Turn 1: start, checkpoint, inspect, a question the user answers in the form, advance, and
    // a question the user declines.
    app.run_turn(&thread, "Use baton to add rate limiting to the login endpoint. Ask me what you need.", TURN);
    let turns = harness.model.turns();
    let result = |call: &str| -> (Value, String) {
        let item = turns.iter().find_map(|t| t.output_for(call)).unwrap_or_else(|| panic!("the model never saw `{call}`"));
        let text = output_text(item);
        (structured_in(&text), text)
    };
    assert_eq!(harness.model.problems(), Vec::<String>::new());
    let run_id = result("start").0["run_id"].as_str().unwrap().to_string();
    {
        let seen = seen.borrow();
        assert_eq!(seen.approvals, Vec::<String>::new(), "Codex asked to approve baton's non-destructive tools");
        assert_eq!(seen.forms.len(), 2, "baton asked both questions in forms: {:#?}", seen.forms);
        let form = &seen.forms[0];
        assert_eq!((form["serverName"].as_str(), form["mode"].as_str()), (Some("baton"), Some("form")), "{form:#}");
        assert!(form["message"].as_str().is_some_and(|m| m.contains("How many login attempts per minute?")), "{form:#}");
        assert_eq!(form["requestedSchema"]["properties"]["answer"]["enum"], json!(["5", "10"]), "the options as an enum: {form:#}");
        assert_eq!(form["requestedSchema"]["required"], json!(["answer"]), "{form:#}");
    }
    // The accepted form answered the question within the same call.
    let (answered, _) = result("ask-1");
    assert_eq!(answered["status"], "active", "{answered:#}");
    assert!(answered["note"].as_str().is_some_and(|n| n.contains("answered") && n.contains("10")), "{answered:#}");
    let answers = &answered["recent_human_answers"];
    assert_eq!((answers[0]["answer"].as_str(), answers[0]["comment"].as_str()), (Some("10"), Some("per client IP")), "{answered:#}");
    assert_eq!(answered["version"], 4, "asked (3) and answered (4) in one call: {answered:#}");
    // The declined form left the run waiting; the model is told why.
    let (waiting, text) = result("ask-2");
    assert_eq!(waiting["status"], "awaiting_human", "{waiting:#}");
    assert!(waiting["note"].as_str().is_some_and(|n| n.contains("declined") && n.contains("answer_human")), "{waiting:#}");
    assert!(text.contains("declined"), "the model's output carries the note: {text}");
    let runs = harness.runs();
    assert_eq!((runs[0]["status"].as_str(), runs[0]["version"].as_u64()), (Some("awaiting_human"), Some(6)), "durably waiting: {runs:#?}");
    assert_eq!(runs[0]["question"], "Keep the counters in memory or in Redis?", "{runs:#?}");
    let (inspected, _) = result("look");
    assert_eq!(inspected["run"]["id"], run_id.as_str(), "{inspected:#}");

    // Turn 2: the user's answer from chat, a briefing and the listing.
    app.run_turn(&thread, "Memory is fine.", TURN);
    let turns = harness.model.turns();
    let result = |call: &str| -> Value {
        let item = turns.iter().find_map(|t| t.output_for(call)).unwrap_or_else(|| panic!("the model never saw `{call}`"));
        structured_in(&output_text(item))
    };
    let carried_on = result("answer");
    assert_eq!((carried_on["status"].as_str(), carried_on["role"].as_str()), (Some("active"), Some("implementer")), "{carried_on:#}");
    assert_eq!(result("briefing")["brief"]["version"], 7);
    assert_eq!(result("list")["runs"][0]["run_id"], run_id.as_str());

    // Turn 3: cancelling is destructive, so Codex asks; the user says no.
    app.run_turn(&thread, "Cancel the baton run.", TURN);
    let turns = harness.model.turns();
    let cancel = turns.iter().find_map(|t| t.output_for("cancel")).map(output_text).expect("the model saw the cancel result");
    assert!(cancel.contains("rejected"), "the model is told the user rejected the call: {cancel}");
    assert_eq!(seen.borrow().approvals, ["cancel_run"], "only the destructive tool asks for approval");
    assert_eq!(harness.runs()[0]["status"], "active", "the rejected cancel changed nothing");
    assert_eq!(harness.model.problems(), Vec::<String>::new());
    // Codex's own record of the calls: every one ran, except the cancel the user rejected.
    let calls: Vec<(&str, &str)> = app
        .notifications
        .iter()
        .filter(|n| n["method"] == "item/completed" && n["params"]["item"]["type"] == "mcpToolCall")
        .map(|n| (n["params"]["item"]["tool"].as_str().unwrap_or("?"), n["params"]["item"]["status"].as_str().unwrap_or("?")))
        .collect();
    let expected = [
        ("start_workflow", "completed"),
        ("checkpoint", "completed"),
        ("inspect", "completed"),
        ("await_human", "completed"),
        ("advance", "completed"),
        ("await_human", "completed"),
        ("answer_human", "completed"),
        ("resume", "completed"),
        ("resume", "completed"),
        ("cancel_run", "failed"),
    ];
    assert_eq!(calls, expected, "the turns' MCP tool calls as Codex reports them");
    let seen = seen.borrow();
    assert_eq!(seen.other, Vec::<String>::new(), "no other server requests");
    assert!(app.shutdown().success());
}
