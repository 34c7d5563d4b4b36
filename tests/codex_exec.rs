//! End-to-end runs of the real Codex CLI (`codex exec`, pinned version) against baton, with a
//! scripted model on 127.0.0.1 instead of OpenAI: no network, no API key, and Codex's default
//! approval and sandbox settings for `codex exec`.
//!
//! The scripted model does what a real one would: it finds baton's tools with `tool_search`
//! (Codex defers MCP tools behind it), calls them, and reads their results. The tests assert on
//! what the model was shown in each request and on the database as `baton runs --json` reads it.
//!
//! Codex is found as in `codex_cli` (`CODEX_BIN`, else the pinned npm package, else `PATH`).

mod common;
mod support;

use common::TOOLS;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use support::codex::{find_codex, skill_description};
use support::exec::{ExecHarness, ExecRun};
use support::model_server::{ModelRequest, ModelServer, Output, UNSCRIPTED_REPLY, in_order, output_text};

/// The tool outputs the model got for `call_id`, from the first request that carries it.
fn output_seen(turns: &[ModelRequest], call_id: &str) -> Value {
    turns.iter().find_map(|t| t.output_for(call_id)).cloned().unwrap_or_else(|| {
        let inputs: Vec<Vec<&str>> = turns.iter().map(|t| t.input().iter().filter_map(|i| i["type"].as_str()).collect()).collect();
        panic!("no request carried the output of `{call_id}`; input item types per request: {inputs:?}")
    })
}

/// The JSON a successful MCP call shows the model: Codex sends `structuredContent` (not the text
/// content) after a "Wall time: ...\nOutput:\n" preamble.
fn structured_in(output: &str) -> Value {
    let json = output.split_once("Output:\n").map(|(_, json)| json).unwrap_or_else(|| panic!("no `Output:` in the tool output: {output}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("the tool output is not the structured JSON ({e}): {output}"))
}

/// The baton tools a `tool_search_output` loaded, in the order Codex listed them.
fn baton_tools_loaded(search_output: &Value) -> Vec<&Value> {
    let namespaces = search_output["tools"].as_array().unwrap_or_else(|| panic!("tool_search_output without tools: {search_output:#}"));
    let baton = namespaces.iter().filter(|ns| ns["type"] == "namespace" && ns["name"] == "mcp__baton");
    baton.flat_map(|ns| ns["tools"].as_array().into_iter().flatten()).collect()
}

fn assert_clean(run: &ExecRun, harness: &ExecHarness) {
    assert!(run.finished.status.success(), "codex exec failed:\n{}", run.describe());
    assert_eq!(harness.model.problems(), Vec::<String>::new(), "the model server saw malformed requests");
    assert!(run.items("error").is_empty(), "codex exec reported errors: {:#?}", run.items("error"));
}

/// The harness end to end with what works today: the skill is listed for the model,
/// `tool_search` loads baton's tools with their schemas, a read-only baton tool runs (read-only
/// tools need no approval), and `codex exec resume` continues the same session.
#[test]
fn exec_finds_baton_with_tool_search_and_reads_through_it() {
    let Some(codex) = find_codex() else { return };
    let harness = ExecHarness::new(
        &codex,
        in_order(vec![
            vec![Output::tool_search("search", "baton", None)],
            vec![Output::mcp_call("templates", "baton", "list_templates", json!({}))],
            vec![Output::text("Two templates: feature and bugfix.")],
            vec![Output::mcp_call("runs", "baton", "list_runs", json!({"status": "open"}))],
            vec![Output::text("No open runs.")],
        ]),
    );

    let run = harness.exec("Use baton: which workflow templates are there?");
    assert_clean(&run, &harness);
    let turns = harness.model.turns();
    assert_eq!(turns.len(), 3, "search, call, answer: {} turns", turns.len());

    // The model is told about the skill, in the skill listing of the first request.
    let first = &turns[0];
    let listing = first.message_text();
    assert!(listing.contains(&format!("- baton: {}", skill_description())), "the skill listing lacks baton:\n{listing}");
    assert!(listing.contains("baton/SKILL.md"), "the skill listing does not point at baton's SKILL.md:\n{listing}");
    // baton's tools are deferred: not offered up front, but `tool_search` is.
    assert!(first.tools().iter().any(|t| t["type"] == "tool_search"), "no tool_search tool: {:?}", first.tools());
    assert!(!first.tools().iter().any(|t| t["name"] == "mcp__baton"), "baton's tools should be deferred behind tool_search");

    // tool_search("baton") loads baton tools with their input schemas into the next request.
    let search = output_seen(&turns, "search");
    assert_eq!(search["type"], "tool_search_output", "{search:#}");
    let loaded = baton_tools_loaded(&search);
    let names: Vec<&str> = loaded.iter().filter_map(|t| t["name"].as_str()).collect();
    let _ = writeln!(std::io::stderr().lock(), "tool_search(\"baton\") loaded {} of {} baton tools: {names:?}", names.len(), TOOLS.len());
    assert!(!loaded.is_empty() && loaded.len() <= 8, "tool_search returns 1..=8 tools by default, got {names:?}");
    for tool in &loaded {
        let name = tool["name"].as_str().unwrap_or_default();
        assert!(TOOLS.contains(&name), "unknown baton tool {name}");
        assert_eq!(tool["parameters"]["type"], "object", "`{name}` was loaded without its input schema: {tool:#}");
    }

    // The read-only call runs without approval; the model gets the structured result.
    let templates = structured_in(&output_text(&output_seen(&turns, "templates")));
    let template_names: Vec<&str> = templates["templates"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(template_names, ["feature", "bugfix"], "{templates:#}");
    let calls = run.items("mcp_tool_call");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!((calls[0]["server"].as_str(), calls[0]["status"].as_str()), (Some("baton"), Some("completed")), "{calls:#?}");
    let answers = run.items("agent_message");
    assert_eq!(answers.last().and_then(|a| a["text"].as_str()), Some("Two templates: feature and bugfix."), "{answers:#?}");

    // `codex exec resume` continues the session: the history is sent again, and baton answers.
    let resumed = harness.resume(&run.thread_id(), "Any open baton runs?");
    assert_clean(&resumed, &harness);
    let turns = harness.model.turns();
    assert_eq!(turns.len(), 5, "two more turns after resuming");
    assert!(turns[3].output_for("templates").is_some(), "the resumed session carries the earlier tool output");
    let runs = structured_in(&output_text(&output_seen(&turns[4..], "runs")));
    assert_eq!(runs["runs"], json!([]), "{runs:#}");
    assert!(harness.runs().is_empty(), "nothing was started");
}

/// The first step of every workflow through Codex: find baton's tools, start a run, get the
/// architect's brief back, and find the run on disk afterwards. Codex 0.169 asks for approval
/// of any MCP tool that is not read-only unless it declares `openWorldHint: false` (and
/// `destructiveHint: false`), and `codex exec` refuses every approval.
#[test]
#[ignore = "needs openWorldHint: false (issue 7)"]
fn exec_starts_a_workflow_through_baton() {
    let Some(codex) = find_codex() else { return };
    let goal = "Add a --verbose flag to the greeter CLI";
    let harness = ExecHarness::new(
        &codex,
        in_order(vec![
            vec![Output::tool_search("search", "baton", None)],
            vec![Output::mcp_call("start", "baton", "start_workflow", json!({"goal": goal, "title": "verbose flag"}))],
            vec![Output::text("Started; I am the architect now.")],
        ]),
    );

    let run = harness.exec("Use baton to add a --verbose flag to the greeter CLI.");
    assert_clean(&run, &harness);
    let turns = harness.model.turns();
    let started = output_text(&output_seen(&turns, "start"));
    assert!(!started.contains("requires approval"), "Codex refused start_workflow for approval: {started}");
    let brief = structured_in(&started);
    let run_id = brief["run_id"].as_str().unwrap_or_else(|| panic!("no run_id in the brief: {brief:#}"));
    assert_eq!((brief["step"].as_str(), brief["role"].as_str()), (Some("design"), Some("architect")), "{brief:#}");
    assert_eq!(brief["goal"], goal, "{brief:#}");

    let runs = harness.runs();
    assert_eq!(runs.len(), 1, "exactly the run started through Codex: {runs:#?}");
    assert_eq!(runs[0]["run_id"], run_id, "{runs:#?}");
    assert_eq!((runs[0]["status"].as_str(), runs[0]["version"].as_u64()), (Some("active"), Some(1)), "{runs:#?}");
}

/// A model that searches for "baton" should get every baton tool, the ones a workflow needs
/// first (`start_workflow`, `advance`, `resume`) included. `tool_search` returns its 8 best BM25
/// matches by default, and with 11 tools those three are the ones left out.
#[test]
#[ignore = "baton has 11 tools; tool_search returns 8 by default and leaves out start_workflow, advance and resume"]
fn tool_search_for_baton_loads_every_tool() {
    let Some(codex) = find_codex() else { return };
    let harness = ExecHarness::new(&codex, in_order(vec![vec![Output::tool_search("search", "baton", None)]]));
    let run = harness.exec("Use baton.");
    assert_clean(&run, &harness);
    let search = output_seen(&harness.model.turns(), "search");
    let mut names: Vec<&str> = baton_tools_loaded(&search).iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort_unstable();
    let mut all = TOOLS.to_vec();
    all.sort_unstable();
    assert_eq!(names, all, "tool_search(\"baton\") must load every baton tool");
}

/// The model server without Codex: keep-alive, chunked bodies, unscripted turns, other
/// endpoints, and a compressed body refused as a recorded problem.
#[test]
fn model_server_speaks_http_1_1() {
    let server = ModelServer::start(in_order(vec![vec![Output::text("scripted")]]));
    let address = server.base_url().trim_start_matches("http://").trim_end_matches("/v1").to_string();
    let stream = TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let body = json!({"model": "m", "input": []}).to_string();

    // Two requests on one connection: the scripted turn, then the default answer.
    for expected in ["scripted", UNSCRIPTED_REPLY] {
        write!(
            writer,
            "POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let (status, sse) = read_response(&mut reader);
        assert_eq!(status, 200, "{sse}");
        assert!(sse.contains(&json!(expected).to_string()), "{sse}");
        assert!(sse.contains("event: response.completed"), "{sse}");
    }
    // A chunked body, then an unknown endpoint.
    let (first, second) = body.split_at(10);
    write!(
        writer,
        "POST /v1/responses HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    )
    .unwrap();
    assert_eq!(read_response(&mut reader).0, 200);
    write!(writer, "GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut reader).0, 404);
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    // A compressed body is refused and recorded, never misread.
    write!(writer, "POST /v1/responses HTTP/1.1\r\ncontent-encoding: zstd\r\ncontent-length: 4\r\n\r\n").unwrap();
    writer.write_all(&[0x28, 0xb5, 0x2f, 0xfd]).unwrap();
    assert_eq!(read_response(&mut reader).0, 415);
    assert_eq!(server.problems().len(), 1, "{:?}", server.problems());

    let requests = server.requests();
    assert_eq!(requests.len(), 5);
    assert_eq!(requests[2].body, json!({"model": "m", "input": []}), "the chunked body is reassembled");
    assert_eq!(server.turns().len(), 4, "GET /v1/models is not a model turn");
}

/// Status and body of one content-length framed response.
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status =
        status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}
