//! End-to-end check against the real Codex CLI (`@openai/codex`), without network or API key.
//! (Calls here use app-server's direct `mcpServer/tool/call`, which skips model approvals;
//! `codex_app_server` and `codex_exec` drive baton through a scripted model instead.)
//!
//! `baton install` registers the server and the skill in a fresh `CODEX_HOME` (the harness of
//! `codex_exec`, whose config keeps Codex off the network); then
//! `codex mcp get` must read the registration back, and `codex app-server` (JSON-RPC over stdio)
//! must start `baton serve`, list its tools and the skill, and route real tool calls to it.
//! Then the baton CLI reads the run back from disk after Codex has exited, and two new Codex
//! sessions at once resume the same run: one advances it, the other gets a conflict.
//!
//! Codex is `$CODEX_BIN`, else a pinned `@openai/codex` that the test installs with npm under
//! target/tmp, else `codex` on `PATH`. Without any, the test is skipped, unless `CI` is set.

use crate::support::app_server::AppServer;
use crate::support::codex::{canonical, find_codex, run, skill_description};
use crate::support::exec::ExecHarness;
use crate::support::model_server::in_order;
use crate::support::{BATON, TOOLS};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

#[test]
fn codex_registers_lists_and_calls_baton() {
    let Some(codex) = find_codex() else { return };
    let version = run(Command::new(&codex).arg("--version"), "codex --version");
    assert!(version.status.success(), "`{} --version` failed:\n{}", codex.display(), version.describe());

    // 1. A fresh Codex home (network features off, see support::exec) where `baton install`
    //    registered baton; Codex reads the registration back. No model is called here.
    let harness = ExecHarness::new(&codex, in_order(Vec::new()));
    let (codex_home, work, baton_home) = (harness.codex_home(), harness.work(), harness.baton_home());
    assert!(!baton_home.exists(), "install must not create the baton home; `serve` does");

    let get = run(
        Command::new(&codex).args(["mcp", "get", "baton", "--json"]).env("CODEX_HOME", codex_home).current_dir(work),
        "codex mcp get baton --json",
    );
    assert!(get.status.success(), "`codex mcp get baton --json` failed:\n{}", get.describe());
    let entry: Value =
        serde_json::from_slice(&get.stdout).unwrap_or_else(|e| panic!("`codex mcp get` printed no JSON ({e}):\n{}", get.describe()));
    let transport = &entry["transport"];
    assert_eq!(entry["name"], "baton", "{entry:#}");
    assert_eq!(entry["enabled"], true, "{entry:#}");
    assert_eq!(transport["type"], "stdio", "{entry:#}");
    let command = transport["command"].as_str().unwrap_or_else(|| panic!("no transport.command: {entry:#}"));
    assert_eq!(canonical(Path::new(command)), canonical(Path::new(BATON)), "registered command: {entry:#}");
    assert_eq!(transport["args"], json!(["serve"]), "{entry:#}");
    assert_eq!(transport["env"]["BATON_HOME"].as_str(), Some(baton_home.to_str().unwrap()), "{entry:#}");

    // 2. Talk to `codex app-server`.
    let mut codex_app = AppServer::start(&codex, codex_home, work);
    let init = codex_app.initialize();
    if let Some(home) = init["codexHome"].as_str() {
        assert_eq!(canonical(Path::new(home)), canonical(codex_home), "app-server uses another CODEX_HOME: {init:#}");
    }

    // Codex starts `baton serve` and lists its tools.
    let status = codex_app.request("mcpServerStatus/list", json!({}));
    let server = status["data"]
        .as_array()
        .and_then(|servers| servers.iter().find(|s| s["name"] == "baton"))
        .unwrap_or_else(|| panic!("baton is not among Codex's MCP servers: {status:#}"));
    assert!(server["toolsError"].is_null(), "listing baton's tools failed: {}", summary(server));
    assert_eq!(server["serverInfo"]["name"], "baton", "{}", summary(server));
    let tools = server["tools"].as_object().unwrap_or_else(|| panic!("no tools: {}", summary(server)));
    for tool in TOOLS {
        let spec =
            tools.get(*tool).unwrap_or_else(|| panic!("Codex does not see tool `{tool}`; it sees {:?}", tools.keys().collect::<Vec<_>>()));
        assert!(spec["inputSchema"].is_object(), "tool `{tool}` has no input schema: {spec:#}");
        // What Codex's approval rule reads: only cancel_run is destructive, only inspect reads,
        // and none reaches the open world, so the others run without a prompt.
        let hints = &spec["annotations"];
        let expected = json!({
            "readOnlyHint": *tool == "inspect",
            "destructiveHint": *tool == "cancel_run",
            "openWorldHint": false,
        });
        for (hint, value) in expected.as_object().unwrap() {
            assert_eq!(&hints[hint], value, "`{tool}` {hint} as Codex lists it: {spec:#}");
        }
        assert!(
            spec["title"].as_str().or(hints["title"].as_str()).is_some_and(|t| t.starts_with("baton")),
            "`{tool}` has a title: {spec:#}"
        );
    }
    assert_eq!(tools.len(), TOOLS.len(), "no more tools than tool_search loads at once: {:?}", tools.keys().collect::<Vec<_>>());

    // Codex finds the installed skill, with the description from SKILL.md.
    let skills = codex_app.request("skills/list", json!({"cwds": [work], "forceReload": true}));
    let listing =
        skills["data"].as_array().and_then(|data| data.first()).unwrap_or_else(|| panic!("skills/list returned nothing: {skills:#}"));
    let errors: Vec<&Value> =
        listing["errors"].as_array().map(|errors| errors.iter().filter(|e| e.to_string().contains("baton")).collect()).unwrap_or_default();
    assert!(errors.is_empty(), "Codex reports errors for the baton skill: {errors:#?}");
    let skill = listing["skills"]
        .as_array()
        .and_then(|skills| skills.iter().find(|s| s["name"] == "baton"))
        .unwrap_or_else(|| panic!("Codex does not list the baton skill: {listing:#}"));
    assert_eq!(skill["description"].as_str(), Some(skill_description().as_str()), "{skill:#}");
    assert_eq!(skill["enabled"], true, "{skill:#}");
    // agents/openai.yaml beside SKILL.md: the interface, and the MCP server as a dependency.
    assert_eq!(skill["interface"]["displayName"], "baton", "{skill:#}");
    let dependency = &skill["dependencies"]["tools"][0];
    assert_eq!((dependency["type"].as_str(), dependency["transport"].as_str()), (Some("mcp"), Some("stdio")), "{skill:#}");
    assert_eq!(canonical(Path::new(dependency["command"].as_str().unwrap_or_default())), canonical(Path::new(BATON)), "{skill:#}");
    let skill_path = skill["path"].as_str().unwrap_or_default();
    assert_eq!(canonical(Path::new(skill_path)), canonical(&codex_home.join("skills/baton/SKILL.md")), "{skill:#}");

    // 3. Real tool calls through Codex: start, advance, and a stale advance.
    let (thread_id, _) = codex_app.start_thread(work);

    let goal = "Add a --verbose flag to the greeter CLI";
    let started = codex_app.call_tool(&thread_id, "start_workflow", json!({"goal": goal, "title": "verbose flag"}));
    let brief = expect_success(&started, "start_workflow");
    let run_id = brief["run_id"].as_str().unwrap_or_else(|| panic!("no run_id: {brief:#}")).to_string();
    assert!(!run_id.is_empty());
    assert_eq!(brief["step"], "design", "{brief:#}");
    assert_eq!(brief["role"], "architect", "{brief:#}");
    assert_eq!(brief["status"], "active", "{brief:#}");
    assert_eq!(brief["goal"], goal, "{brief:#}");
    assert!(text_of(&started).contains(&run_id), "the text content should name the run: {started:#}");
    let version = brief["version"].as_u64().unwrap_or_else(|| panic!("no version: {brief:#}"));

    let advanced = codex_app.call_tool(
        &thread_id,
        "advance",
        json!({"run_id": run_id, "expected_version": version, "outcome": "planned", "output": "Plan: parse --verbose in main.rs; test it."}),
    );
    let brief = expect_success(&advanced, "advance");
    assert_eq!(brief["run_id"], run_id.as_str(), "{brief:#}");
    assert_eq!(brief["role"], "implementer", "{brief:#}");
    assert_eq!(brief["step"], "implement", "{brief:#}");
    assert_eq!(brief["version"].as_u64(), Some(version + 1), "{brief:#}");

    let stale = codex_app.call_tool(
        &thread_id,
        "advance",
        json!({"run_id": run_id, "expected_version": version, "outcome": "planned", "output": "the same plan again"}),
    );
    assert_eq!(stale["isError"], true, "a stale expected_version must fail: {stale:#}");
    let error = &stale["structuredContent"]["error"];
    assert_eq!(error["code"], "conflict", "{stale:#}");
    assert_eq!(error["field"], "expected_version", "{stale:#}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{stale:#}");
    assert!(text_of(&stale).contains("conflict"), "the text content should say what went wrong: {stale:#}");

    // The read-only views share one tool: listings and templates.
    let listed = codex_app.call_tool(&thread_id, "inspect", json!({"status": "open"}));
    assert_eq!(expect_success(&listed, "inspect")["runs"][0]["run_id"], run_id.as_str(), "{listed:#}");
    let templates = codex_app.call_tool(&thread_id, "inspect", json!({"templates": true}));
    let names: Vec<&str> =
        expect_success(&templates, "inspect")["templates"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.starts_with(&["feature", "bugfix"]), "the built-in templates: {templates:#}");

    let exit = codex_app.shutdown();
    assert!(exit.success(), "codex app-server exited with {exit} after stdin closed");

    // 4. Durability: with Codex gone, the baton CLI reads the run from disk.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&baton_home).expect("baton serve created BATON_HOME").permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "BATON_HOME must be private, got {mode:o}");
    }
    let runs = run(
        Command::new(BATON).arg("--home").arg(&baton_home).args(["runs", "--json"]).env_remove("BATON_HOME").env_remove("CODEX_HOME"),
        "baton runs --json",
    );
    assert!(runs.status.success(), "baton runs failed:\n{}", runs.describe());
    let runs: Value =
        serde_json::from_slice(&runs.stdout).unwrap_or_else(|e| panic!("baton runs printed no JSON ({e}):\n{}", runs.describe()));
    let listed = runs["runs"].as_array().unwrap_or_else(|| panic!("no runs array: {runs:#}"));
    assert_eq!(listed.len(), 1, "exactly the one run started through Codex: {runs:#}");
    let stored = &listed[0];
    assert_eq!(stored["run_id"], run_id.as_str(), "{runs:#}");
    assert_eq!(stored["version"], 2, "started and advanced once; the stale advance changed nothing: {runs:#}");
    assert_eq!(stored["status"], "active", "{runs:#}");
    assert_eq!(stored["step"], "implement", "{runs:#}");
    assert_eq!(stored["role"], "implementer", "{runs:#}");
    let shown = run(
        Command::new(BATON)
            .arg("--home")
            .arg(&baton_home)
            .args(["show", &run_id, "--json"])
            .env_remove("BATON_HOME")
            .env_remove("CODEX_HOME"),
        "baton show --json",
    );
    assert!(shown.status.success(), "baton show failed:\n{}", shown.describe());
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap_or_else(|e| panic!("baton show printed no JSON ({e})"));
    let actors: Vec<&str> = shown["events"].as_array().into_iter().flatten().filter_map(|e| e["actor"]["id"].as_str()).collect();
    assert_eq!(actors, [thread_id.as_str(); 2], "each change records the Codex thread that made it (from `_meta.threadId`): {shown:#}");

    // 5. Two new Codex sessions at once on the same database: both resume the run, one
    //    advances it, and the other's now-stale advance is refused.
    let (mut first, first_thread) = Session::open(&codex, codex_home, work);
    let (mut second, second_thread) = Session::open(&codex, codex_home, work);
    let open = first.call_tool(&first_thread, "resume", json!({}));
    let open_runs = expect_success(&open, "resume")["runs"].clone();
    assert_eq!(open_runs[0]["run_id"], run_id.as_str(), "a new session lists the unfinished run: {open:#}");
    let briefing = second.call_tool(&second_thread, "resume", json!({"run_id": run_id}));
    let brief = expect_success(&briefing, "resume")["brief"].clone();
    assert_eq!((brief["version"].as_u64(), brief["role"].as_str()), (Some(2), Some("implementer")), "{briefing:#}");
    assert!(brief["feedback"]["output"].as_str().is_some_and(|o| o.contains("parse --verbose")), "the plan carries over: {briefing:#}");
    let step = json!({"run_id": run_id, "expected_version": 2, "outcome": "implemented", "output": "Added --verbose."});
    let moved = second.call_tool(&second_thread, "advance", step.clone());
    assert_eq!(expect_success(&moved, "advance")["role"], "reviewer", "{moved:#}");
    let late = first.call_tool(&first_thread, "advance", step);
    assert_eq!(late["structuredContent"]["error"]["code"], "conflict", "the other session's copy is stale: {late:#}");
    assert!(first.shutdown().success() && second.shutdown().success(), "both Codex sessions exit cleanly");
}

/// A Codex session: an initialized `codex app-server` with one thread.
struct Session;

impl Session {
    fn open(codex: &Path, codex_home: &Path, cwd: &Path) -> (AppServer, String) {
        let mut app = AppServer::start(codex, codex_home, cwd);
        app.initialize();
        let (id, _) = app.start_thread(cwd);
        (app, id)
    }
}

/// A tool result that must have succeeded; returns its structured content.
fn expect_success<'a>(result: &'a Value, tool: &str) -> &'a Value {
    assert_ne!(result["isError"], true, "`{tool}` failed through Codex: {result:#}");
    let structured = &result["structuredContent"];
    assert!(structured.is_object(), "`{tool}` returned no structuredContent: {result:#}");
    structured
}

fn text_of(result: &Value) -> String {
    result["content"].as_array().into_iter().flatten().filter_map(|c| c["text"].as_str()).collect::<Vec<_>>().join("\n")
}

/// Server entry without the (long) tool schemas, for failure messages.
fn summary(server: &Value) -> String {
    let mut server = server.clone();
    if let Some(tools) = server.get_mut("tools").and_then(Value::as_object_mut) {
        for spec in tools.values_mut() {
            *spec = json!("…");
        }
    }
    format!("{server:#}")
}
