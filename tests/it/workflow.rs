//! End-to-end: the real `baton serve` binary driven by rmcp's MCP client over stdio.

use crate::support::{Server, TOOLS, cli, fresh_home};
use serde_json::{Value, json};

#[tokio::test]
async fn feature_run_loops_waits_for_a_human_survives_a_crash_and_forks() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let a = Server::start(&home).await;

    let info = a.client.peer_info().unwrap();
    assert!(info.instructions.as_deref().unwrap().contains("start_workflow"));
    let tools = a.client.list_all_tools().await.unwrap();
    for name in TOOLS {
        let tool = tools.iter().find(|t| t.name == *name).unwrap_or_else(|| panic!("tool {name} missing"));
        assert_eq!(tool.input_schema["type"], "object", "{name} input schema");
        assert!(tool.output_schema.is_some(), "{name} output schema");
        let annotations = tool.annotations.as_ref().unwrap();
        let reads_only = *name == "inspect";
        assert_eq!(annotations.read_only_hint, Some(reads_only), "{name} read-only hint");
        assert_eq!(annotations.destructive_hint, Some(*name == "cancel_run"), "{name} destructive hint");
        // Codex runs a tool without asking only if it is read-only, or neither destructive
        // nor open-world (and always asks for destructive ones).
        assert_eq!(annotations.open_world_hint, Some(false), "{name} open-world hint");
        assert!(tool.title.as_deref().is_some_and(|t| t.starts_with("baton")), "{name} title");
        assert!(tool.description.as_deref().is_some_and(|d| d.starts_with("baton:")), "{name} description names baton");
    }

    let brief = a.ok("start_workflow", json!({"goal": "Add password login\nwith rate limiting", "context": {"repo": "acme"}})).await;
    assert_eq!((brief["step"].as_str(), brief["role"].as_str(), brief["version"].as_u64()), (Some("design"), Some("architect"), Some(1)));
    assert_eq!(brief["title"], "Add password login");
    assert_eq!(brief["context"]["repo"], "acme");
    assert!(brief["role_guide"].as_str().unwrap().contains("architect"));
    let run_id = brief["run_id"].as_str().unwrap().to_string();

    let brief = a.advance(&brief, "planned", "Plan: add auth module; checks: login works").await;
    assert_eq!(brief["role"], "implementer");
    let brief = a.advance(&brief, "implemented", "Added src/auth.rs").await;
    assert_eq!(brief["role"], "reviewer");
    let brief = a.advance(&brief, "changes_requested", "1. missing tests for lockout").await;
    assert_eq!((brief["step"].as_str(), brief["visit"].as_u64()), (Some("implement"), Some(2)));
    assert_eq!(brief["feedback"]["outcome"], "changes_requested");
    assert!(brief["feedback"]["output"].as_str().unwrap().contains("missing tests"));
    assert!(brief["prior_outputs"].as_array().unwrap().iter().any(|o| o["step"] == "design"));

    let saved = a.ok("checkpoint", json!({"run_id": run_id, "name": "second-impl", "note": "before rework"})).await;
    assert_eq!(saved["version"], 5);
    let waiting = a
        .ok(
            "await_human",
            json!({"run_id": run_id, "question": "Lock out after 5 or 10 failures?", "options": ["5", "10"], "expected_version": 5}),
        )
        .await;
    assert_eq!(waiting["status"], "awaiting_human");
    let err = a.err("advance", json!({"run_id": run_id, "expected_version": 6, "outcome": "implemented", "output": "x"})).await;
    assert_eq!(err["code"], "invalid_state");
    assert!(err["fix"].as_str().unwrap().contains("answer_human"));

    // Crash: the acknowledged state must be on disk.
    a.kill();
    let b = Server::start(&home).await;
    let open = b.ok("resume", json!({})).await;
    let listed = &open["runs"][0];
    assert_eq!((listed["run_id"].as_str(), listed["status"].as_str()), (Some(run_id.as_str()), Some("awaiting_human")));
    assert_eq!(listed["question"], "Lock out after 5 or 10 failures?");

    // A human answers later, from a terminal, while server b owns the database.
    let (ok, out, err) = cli(&home, &["answer", &run_id, "10", "--comment", "security asked for 10"]);
    assert!(ok, "baton answer failed: {out} {err}");
    assert!(out.contains("implement"), "{out}");

    let briefing = b.ok("resume", json!({"run_id": run_id})).await;
    let brief = briefing["brief"].clone();
    assert_eq!((brief["status"].as_str(), brief["step"].as_str(), brief["version"].as_u64()), (Some("active"), Some("implement"), Some(7)));
    assert_eq!(brief["recent_human_answers"][0]["answer"], "10");
    assert_eq!(brief["recent_human_answers"][0]["comment"], "security asked for 10");
    assert_eq!(briefing["checkpoints"], json!(["second-impl"]));
    let recent: Vec<&str> = briefing["recent_events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(recent.last(), Some(&"human_answered"));

    let brief = b.advance(&brief, "implemented", "Added lockout tests").await;
    let brief = b.advance(&brief, "approved", "Looks good").await;
    assert_eq!(brief["role"], "tester");
    let brief = b.advance(&brief, "failed", "test_lockout fails: off by one").await;
    assert_eq!((brief["step"].as_str(), brief["feedback"]["role"].as_str()), (Some("implement"), Some("tester")));
    let brief = b.advance(&brief, "implemented", "Fixed off by one").await;
    let brief = b.advance(&brief, "approved", "ok").await;
    let done = b.advance(&brief, "passed", "all 42 tests pass").await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["step"], Value::Null);

    let details = b.ok("inspect", json!({"run_id": run_id, "history_limit": 1000})).await;
    let events = details["events"].as_array().unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=done["version"].as_u64().unwrap()).collect::<Vec<_>>(), "history is dense and complete");
    assert_eq!(events.iter().filter(|e| e["type"] == "advanced").count(), 9);
    let page = b.ok("inspect", json!({"run_id": run_id, "history_limit": 3, "before_seq": 5})).await;
    let page_seqs: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!((page_seqs, page["next_before_seq"].as_u64()), (vec![2, 3, 4], Some(2)));

    // Fork from the checkpoint: a new active run at the checkpoint's state; the original stays done.
    let fork = b.ok("resume", json!({"run_id": run_id, "checkpoint": "second-impl", "title": "retry auth"})).await;
    assert_ne!(fork["run_id"], json!(run_id));
    assert_eq!((fork["status"].as_str(), fork["step"].as_str(), fork["version"].as_u64()), (Some("active"), Some("implement"), Some(1)));
    assert_eq!(fork["title"], "retry auth");
    assert_eq!(fork["feedback"]["outcome"], "changes_requested");
    let open = b.ok("inspect", json!({"status": "open"})).await;
    assert_eq!(open["total"], 1);
    assert_eq!(open["runs"][0]["run_id"], fork["run_id"]);
    let original = b.ok("inspect", json!({"run_id": run_id})).await;
    assert_eq!(original["run"]["status"], "completed");
    b.stop().await;
}

#[tokio::test]
async fn bad_inputs_get_structured_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&fresh_home(&tmp)).await;
    let brief = s.ok("start_workflow", json!({"goal": "g"})).await;
    let id = brief["run_id"].clone();

    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "advance",
            json!({"run_id": id, "expected_version": "one", "outcome": "planned", "output": ""}),
            "invalid_argument",
            "expected_version",
        ),
        ("advance", json!({"run_id": id, "expected_version": 1, "output": ""}), "invalid_argument", "outcome"),
        (
            "advance",
            json!({"run_id": id, "expected_version": 1, "outcome": "planned", "output": "", "expected_verison": 1}),
            "invalid_argument",
            "expected_verison",
        ),
        ("advance", json!({"run_id": "nope", "expected_version": 1, "outcome": "planned", "output": ""}), "not_found", "run_id"),
        ("advance", json!({"run_id": id, "expected_version": 7, "outcome": "planned", "output": ""}), "conflict", "expected_version"),
        ("advance", json!({"run_id": id, "expected_version": 1, "outcome": "approved", "output": ""}), "invalid_argument", "outcome"),
        (
            "advance",
            json!({"run_id": id, "expected_version": 1, "outcome": "planned", "output": "x".repeat(300 * 1024)}),
            "too_large",
            "output",
        ),
        ("start_workflow", json!({"goal": "g", "template": "nosuch"}), "not_found", "template"),
        ("start_workflow", json!({"goal": "  "}), "invalid_argument", "goal"),
        ("start_workflow", json!({"goal": "g", "template_file": "no/such/file.toml"}), "invalid_argument", "template_file"),
        (
            "start_workflow",
            json!({"goal": "g", "template_definition": {"name": "loopy", "steps": [
                {"name": "impl", "role": "implementer", "outcomes": {"ok": "review"}},
                {"name": "review", "role": "reviewer", "outcomes": {"approved": "done", "changes": "impl"}}]}}),
            "invalid_argument",
            "template_definition.steps[0].max_visits",
        ),
        ("answer_human", json!({"run_id": id, "answer": "yes"}), "invalid_state", ""),
        ("resume", json!({"run_id": id, "checkpoint": "nope"}), "not_found", "checkpoint"),
        ("checkpoint", json!({"run_id": id, "name": "has space"}), "invalid_argument", "name"),
        ("inspect", json!({"status": "sleeping"}), "invalid_argument", "status"),
        ("inspect", json!({"run_id": id, "history_limit": 0}), "invalid_argument", "history_limit"),
    ];
    for (tool, args, code, field) in cases {
        let err = s.err(tool, args.clone()).await;
        assert_eq!(err["code"], code, "{tool} {err}");
        if !field.is_empty() {
            assert_eq!(err["field"], field, "{tool} {err}");
        }
        assert!(!err["message"].as_str().unwrap().is_empty() && !err["fix"].as_str().unwrap().is_empty(), "{err}");
    }
    let err = s.err("advance", json!({"run_id": id, "expected_version": 1, "outcome": "approved", "output": ""})).await;
    assert!(err["fix"].as_str().unwrap().contains("planned"), "the fix lists the allowed outcomes: {err}");

    // An unknown tool is a protocol error, and the server keeps serving afterwards.
    let unknown = s.client.call_tool(rmcp::model::CallToolRequestParams::new("launch_rockets")).await;
    assert!(format!("{unknown:?}").contains("unknown tool"), "{unknown:?}");

    let after = s.ok("resume", json!({"run_id": id})).await;
    assert_eq!(after["brief"]["version"], 1, "no bad input changed the run");
    assert_eq!(s.ok("inspect", json!({})).await["total"], 1, "no bad input created a run");
    s.stop().await;
}

#[tokio::test]
async fn custom_template_from_a_file_is_remembered_and_its_loop_limit_asks_a_human() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("docs.toml"),
        r#"
name = "docs"
description = "Write docs, review them"
[[steps]]
name = "write"
role = "implementer"
instructions = "Write the page"
max_visits = 1
outcomes = { written = "check" }
[[steps]]
name = "check"
role = "reviewer"
outcomes = { ok = "done", redo = "write" }
"#,
    )
    .unwrap();
    // A relative path is resolved against the server's working directory.
    let s = Server::start_in(&fresh_home(&tmp), tmp.path()).await;
    let brief = s.ok("start_workflow", json!({"goal": "document the API", "template_file": "docs.toml"})).await;
    assert_eq!((brief["template"].as_str(), brief["instructions"].as_str()), (Some("docs"), Some("Write the page")));
    let brief = s.advance(&brief, "written", "draft").await;
    let gate = s.advance(&brief, "redo", "too short").await;
    assert_eq!(gate["status"], "awaiting_human");
    assert_eq!(gate["question"]["kind"], "loop_limit");
    assert_eq!(gate["question"]["options"], json!(["continue", "fail"]));
    let again = s.ok("answer_human", json!({"run_id": gate["run_id"], "answer": "continue"})).await;
    assert_eq!((again["status"].as_str(), again["step"].as_str()), (Some("active"), Some("write")));

    let templates = s.ok("inspect", json!({"templates": true})).await;
    let names: Vec<&str> = templates["templates"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["feature", "bugfix", "parallel", "docs"]);
    let by_name = s.ok("start_workflow", json!({"goal": "more docs", "template": "docs"})).await;
    assert_eq!(by_name["step"], "write");

    let cancelled = s.ok("cancel_run", json!({"run_id": by_name["run_id"], "reason": "not needed"})).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(s.err("cancel_run", json!({"run_id": by_name["run_id"]})).await["code"], "invalid_state");
    s.stop().await;
}

#[tokio::test]
async fn large_histories_are_paged_by_size_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&fresh_home(&tmp)).await;
    let template = json!({"name": "essay", "steps": [
        {"name": "draft", "role": "implementer", "max_visits": 100, "outcomes": {"drafted": "edit"}},
        {"name": "edit", "role": "reviewer", "outcomes": {"again": "draft", "ok": "done"}}]});
    let mut brief = s.ok("start_workflow", json!({"goal": "write", "template_definition": template})).await;
    let big = "x".repeat(200 * 1024);
    for i in 0..12 {
        let outcome = if i % 2 == 0 { "drafted" } else { "again" };
        brief = s.advance(&brief, outcome, &format!("{i}:{big}")).await;
    }
    let id = brief["run_id"].clone();
    let mut seen = Vec::new();
    let mut before = Value::Null;
    loop {
        let page = s.ok("inspect", json!({"run_id": id, "history_limit": 1000, "before_seq": before})).await;
        let events = page["events"].as_array().unwrap();
        assert!(!events.is_empty() && events.len() < 13, "a page holds what fits in about 1 MiB: {}", events.len());
        let mut seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        seqs.append(&mut seen);
        seen = seqs;
        before = page["next_before_seq"].clone();
        if before.is_null() {
            break;
        }
    }
    assert_eq!(seen, (1..=13).collect::<Vec<u64>>(), "paging back returns every event once");
    let briefing = s.ok("resume", json!({"run_id": id})).await;
    let recent = briefing["recent_events"].as_array().unwrap();
    assert!(!recent.is_empty() && recent.len() < 10 && recent.last().unwrap()["seq"] == 13);
    s.stop().await;
}
