//! Every answer a tool gives lies within the `outputSchema` it publishes: a whole
//! `parallel` run's task flow through rmcp's client (start, plan, claim, renew, release,
//! report, an independent review, a task's loop-limit question answered, join, integrate),
//! every result validated against the published schema and read as its typed reply; and
//! the validator itself refuses what it must.
//!
//! rmcp 3.11's client does not validate `structuredContent` against `outputSchema` (it
//! has no such option; `CallToolResult::into_typed` only deserializes, and its docs point
//! to the `jsonschema` crate), so the harness's validator (tests/common/schemas.rs) does.

use crate::support::{Server, fresh_home};
use baton::engine::{Brief, TaskBrief};
use rmcp::model::{CallToolRequestParams, JsonObject, RequestMetaObject};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Call `tool` through rmcp's client, validate the result against the published schema
/// and read it as `T`, the type baton serializes it from.
async fn typed<T: DeserializeOwned>(server: &Server, tool: &str, args: Value) -> (T, Value) {
    let mut params = CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap());
    if let Some(thread) = &server.thread {
        let meta: JsonObject = json!({ "threadId": thread }).as_object().cloned().unwrap();
        params.meta = Some(RequestMetaObject(meta.into()));
    }
    let result = server.client.call_tool(params).await.unwrap_or_else(|e| panic!("{tool}: {e:?}"));
    assert_ne!(result.is_error, Some(true), "{tool} {args} failed: {:?}", result.structured_content);
    server.schemas.check(tool, result.structured_content.as_ref(), false);
    let raw = result.structured_content.clone().unwrap();
    let value = result.into_typed::<T>().unwrap_or_else(|e| panic!("{tool}: not its typed reply ({e}): {raw}"));
    (value, raw)
}

/// What each step of the built-in `task` pipeline reports to pass.
fn passing(step: &str) -> &'static str {
    match step {
        "implement" => "implemented",
        "review" => "approved",
        _ => "passed",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_runs_task_flow_through_rmcp_stays_within_the_published_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let lead = Server::start_as(&home, tmp.path(), Some("lead")).await;
    let implementer = Server::start_as(&home, tmp.path(), Some("implementer")).await;
    let reviewer = Server::start_as(&home, tmp.path(), Some("reviewer")).await;

    let (started, _) = typed::<Brief>(&lead, "start_workflow", json!({"goal": "Two parts in parallel", "template": "parallel"})).await;
    let run_id = started.run_id.clone();
    let plan = json!({"tasks": [
        {"id": "a", "title": "part a", "description": "build a"},
        {"id": "b", "title": "part b", "description": "build b"},
    ]});
    let (fanned, _) = typed::<Brief>(
        &lead,
        "advance",
        json!({"run_id": run_id, "expected_version": started.version, "outcome": "planned", "output": "two tasks", "plan": plan}),
    )
    .await;
    assert_eq!(fanned.tasks.as_ref().map(|t| t.total), Some(2));

    // A claim, a renewal and a release: task briefs from `resume` (statuses claimed, ready).
    let (claimed, raw) = typed::<TaskBrief>(&implementer, "resume", json!({"run_id": run_id, "claim": "a"})).await;
    assert_eq!(raw["status"], "claimed", "{raw}");
    let token = claimed.lease_token.unwrap();
    let (renewed, _) = typed::<TaskBrief>(&implementer, "resume", json!({"run_id": run_id, "task": "a", "lease_token": token})).await;
    assert_eq!(renewed.task, "a");
    let (released, raw) =
        typed::<TaskBrief>(&implementer, "resume", json!({"run_id": run_id, "task": "a", "lease_token": token, "release": true})).await;
    assert_eq!((released.task.as_str(), raw["status"].as_str()), ("a", Some("ready")), "{raw}");

    // Task `a` through the pipeline: implement, an independent review, test.
    for (agent, step) in [(&implementer, "implement"), (&reviewer, "review"), (&implementer, "test")] {
        let (brief, _) = typed::<TaskBrief>(agent, "resume", json!({"run_id": run_id, "claim": "a"})).await;
        assert_eq!(brief.step.as_deref(), Some(step));
        let report = json!({"run_id": run_id, "task": "a", "lease_token": brief.lease_token, "outcome": passing(step), "output": format!("a: {step}")});
        let (after, _) = typed::<TaskBrief>(agent, "advance", report).await;
        assert_eq!(after.task, "a");
    }

    // Task `b` loops implement -> changes_requested until its bound; the task then asks a
    // human, whose answer (`answer_human` with `task`) is a task brief too.
    let mut asked = None;
    for round in 0..10 {
        let (agent, outcome) = if round % 2 == 0 { (&implementer, "implemented") } else { (&reviewer, "changes_requested") };
        let (brief, _) = typed::<TaskBrief>(agent, "resume", json!({"run_id": run_id, "claim": "b"})).await;
        let report = json!({"run_id": run_id, "task": "b", "lease_token": brief.lease_token, "outcome": outcome, "output": format!("round {round}")});
        let (after, raw) = typed::<TaskBrief>(agent, "advance", report).await;
        if after.question.is_some() {
            assert_eq!(raw["status"], "awaiting_human", "{raw}");
            asked = Some(after);
            break;
        }
    }
    let asked = asked.expect("task b reached its loop bound and asked a human");
    assert_eq!(asked.question.as_ref().map(|q| q.kind.as_str()), Some("loop_limit"));
    let (answered, _) = typed::<TaskBrief>(&lead, "answer_human", json!({"run_id": run_id, "task": "b", "answer": "continue"})).await;
    assert_eq!(answered.task, "b");
    for (agent, step) in [(&implementer, "implement"), (&reviewer, "review"), (&implementer, "test")] {
        let (brief, _) = typed::<TaskBrief>(agent, "resume", json!({"run_id": run_id, "claim": "b"})).await;
        assert_eq!(brief.step.as_deref(), Some(step));
        let report = json!({"run_id": run_id, "task": "b", "lease_token": brief.lease_token, "outcome": passing(step), "output": format!("b: {step}")});
        typed::<TaskBrief>(agent, "advance", report).await;
    }

    // Joined: the run's own brief, briefing, listings, views, checkpoint and a fork.
    let (briefing, raw) = typed::<baton::api::Briefing>(&lead, "resume", json!({"run_id": run_id})).await;
    assert_eq!(briefing.brief.step.as_deref(), Some("integrate"), "{raw}");
    typed::<baton::api::RunList>(&lead, "resume", json!({"all_workspaces": true})).await;
    typed::<baton::api::RunList>(&lead, "inspect", json!({"status": "open"})).await;
    typed::<baton::api::RunDetails>(&lead, "inspect", json!({"run_id": run_id})).await;
    typed::<baton::api::EventDetail>(&lead, "inspect", json!({"run_id": run_id, "event": 2})).await;
    typed::<baton::api::TemplateList>(&lead, "inspect", json!({"templates": true})).await;
    let (saved, _) = typed::<baton::api::CheckpointSaved>(&lead, "checkpoint", json!({"run_id": run_id, "name": "joined"})).await;
    let (fork, _) = typed::<Brief>(&lead, "resume", json!({"run_id": run_id, "checkpoint": saved.checkpoint})).await;
    assert_ne!(fork.run_id, run_id);
    typed::<Brief>(&lead, "cancel_run", json!({"run_id": fork.run_id, "reason": "only a fork"})).await;
    let (done, raw) = typed::<Brief>(
        &lead,
        "advance",
        json!({"run_id": run_id, "expected_version": saved.version, "outcome": "passed", "output": "integrated"}),
    )
    .await;
    assert_eq!(raw["status"], "completed", "{raw}");
    assert_eq!(done.run_id, run_id);

    // Errors are structured results too, and within the schema (`Server::call` checks).
    let stale = lead.err("advance", json!({"run_id": run_id, "expected_version": 1, "outcome": "passed", "output": "late"})).await;
    assert!(stale["code"].is_string(), "{stale}");
    let unknown = lead.err("resume", json!({"run_id": "no-such-run", "claim": "next"})).await;
    assert_eq!(unknown["code"], "not_found", "{unknown}");

    for server in [lead, implementer, reviewer] {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validator_refuses_results_outside_a_schema_naming_tool_path_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start_as(&home, tmp.path(), Some("agent")).await;
    let brief = server.ok("start_workflow", json!({"goal": "g", "template": "parallel"})).await;
    let plan = json!({"tasks": [{"id": "t", "title": "t", "description": "d"}]});
    server
        .ok(
            "advance",
            json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": "planned", "output": "o", "plan": plan}),
        )
        .await;
    let task = server.ok("resume", json!({"run_id": brief["run_id"], "claim": "next"})).await;
    let schemas = &server.schemas;
    assert_eq!(schemas.mismatch("resume", &task), None, "a task brief is a `resume` answer");

    // A task brief is no answer of `start_workflow` (as it was none of `resume` before
    // its schema admitted task briefs): the root's anyOf refuses it.
    let why = schemas.mismatch("start_workflow", &task).expect("a task brief is refused by start_workflow's schema");
    assert!(why.contains("the root") && why.contains("any of"), "{why}");

    // A wrong value deep inside is found at its path, with the value.
    let mut bad = task.clone();
    bad["status"] = json!("sleeping");
    let why = schemas.mismatch("resume", &bad).expect("an unknown task status is refused");
    eprintln!("refused: {why}");
    assert!(why.contains("/status") && why.contains("\"sleeping\""), "{why}");
    let mut bad = task.clone();
    bad["lease_token"] = json!("seven");
    let why = schemas.mismatch("resume", &bad).expect("a lease token that is a string is refused");
    assert!(why.contains("/lease_token"), "{why}");
    let mut bad = task.clone();
    bad.as_object_mut().unwrap().remove("workdir");
    assert!(schemas.mismatch("resume", &bad).is_some(), "a task brief without its required `workdir` is refused");

    // `check` panics naming the tool, and on a missing structured result.
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| schemas.check("resume", Some(&json!({"status": 3})), false))).unwrap_err();
    let message = panicked.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("tool `resume`") && message.contains("outputSchema"), "{message}");
    assert!(
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| schemas.check("advance", None, false))).is_err(),
        "a result without structuredContent"
    );
    // The error object is admitted (for clients that validate error results too).
    let error = server.err("resume", json!({"run_id": "nope"})).await;
    assert_eq!(schemas.mismatch("resume", &json!({ "error": error })), None);
    assert!(schemas.mismatch("resume", &json!({"error": {"code": "no_such_code", "message": "m", "fix": "f"}})).is_some());
    server.stop().await;
}

/// The published schemas, read as a client reads them: each root is an object, each is a
/// valid draft 2020-12 schema (compiling them checks), and together they stay small, as
/// they are loaded into model context with the tool list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_schemas_are_compact_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&fresh_home(&tmp)).await;
    let tools = server.client.list_all_tools().await.unwrap();
    let mut total = 0;
    for tool in &tools {
        let schema = tool.output_schema.as_ref().unwrap_or_else(|| panic!("{} has an outputSchema", tool.name));
        assert_eq!(schema.get("type"), Some(&json!("object")), "{}", tool.name);
        let bytes = serde_json::to_string(schema.as_ref()).unwrap().len();
        eprintln!("outputSchema of {}: {bytes} bytes", tool.name);
        total += bytes;
        assert!(server.schemas.has(&tool.name));
    }
    let listing = serde_json::to_string(&tools).unwrap().len();
    eprintln!("output schemas: {total} bytes; whole tools/list: {listing} bytes");
    // 124 KB before the schemas were compacted; the task-commit records add ~5 KB.
    assert!(listing < 85_000, "tools/list is {listing} bytes");
    server.stop().await;
}
