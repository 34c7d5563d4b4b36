//! Codex's model reads baton's MCP resources with Codex's own resource tools
//! (`list_mcp_resource_templates`, `read_mcp_resource`), the real pinned Codex CLI against a
//! scripted model (see `codex_exec` for the harness). No baton tool is added for this.

use crate::support::codex::find_codex;
use crate::support::exec::ExecHarness;
use crate::support::model_server::{ModelRequest, Output, output_text, step, steps};
use serde_json::{Value, json};

/// A call of one of Codex's own tools (no namespace).
fn codex_tool(call_id: &str, name: &str, arguments: Value) -> Vec<Output> {
    vec![Output::FunctionCall { call_id: call_id.to_string(), namespace: None, name: name.to_string(), arguments }]
}

/// What the model was shown as the output of `call_id`.
fn shown(turns: &[ModelRequest], call_id: &str) -> String {
    turns.iter().find_map(|t| t.output_for(call_id)).map(output_text).unwrap_or_else(|| panic!("no output of `{call_id}`"))
}

#[test]
fn exec_reads_a_runs_graph_as_an_mcp_resource() {
    let Some(codex) = find_codex() else { return };
    let script = steps(vec![
        step(|_| vec![Output::tool_search("search", "baton", None)]),
        step(|_| vec![Output::mcp_call("start", "baton", "start_workflow", json!({"goal": "Draw the workflow"}))]),
        step(|_| codex_tool("templates", "list_mcp_resource_templates", json!({"server": "baton"}))),
        step(|request| {
            let run_id = request.result_of("start")["run_id"].as_str().unwrap_or_default().to_string();
            codex_tool("graph", "read_mcp_resource", json!({"server": "baton", "uri": format!("baton://runs/{run_id}/graph")}))
        }),
        step(|_| codex_tool("runs", "read_mcp_resource", json!({"server": "baton", "uri": "baton://runs"}))),
        step(|_| vec![Output::text("Here is the workflow.")]),
    ]);
    let harness = ExecHarness::new(&codex, script);
    let run = harness.exec("Use baton to start a run and show me its workflow graph.");
    assert!(run.finished.status.success(), "codex exec failed:\n{}", run.describe());
    assert_eq!(harness.model.problems(), Vec::<String>::new());
    let turns = harness.model.turns();
    let offered: Vec<&str> = turns[0].tools().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(offered.contains(&"read_mcp_resource"), "Codex offers its resource tools: {offered:?}");

    let templates = shown(&turns, "templates");
    assert!(templates.contains("baton://runs/{run_id}/graph"), "{templates}");
    let graph = shown(&turns, "graph");
    assert!(graph.contains("flowchart TD") && graph.contains("class n0 current;"), "the model read the Mermaid graph: {graph}");
    let runs = shown(&turns, "runs");
    assert!(runs.contains("Draw the workflow"), "{runs}");
    let made: Vec<&str> = run.items("mcp_tool_call").iter().filter_map(|c| c["tool"].as_str()).collect();
    let resource_reads = ["list_mcp_resource_templates", "read_mcp_resource", "read_mcp_resource"];
    assert_eq!(made, [&["start_workflow"][..], &resource_reads].concat(), "one baton tool, then Codex's own resource tools");
    assert!(run.items("error").is_empty(), "{:#?}", run.items("error"));
}
