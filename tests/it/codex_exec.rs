//! End-to-end runs of the real Codex CLI (`codex exec`, pinned version) against baton, with a
//! scripted model on 127.0.0.1 instead of OpenAI: no network, no API key, and Codex's default
//! approval and sandbox settings for `codex exec` (the harness writes nothing about either).
//!
//! The scripted model does what a real one would: it finds baton's tools with `tool_search`
//! (Codex defers MCP tools behind it), calls them, and reads each result to decide the next
//! call (run_id, version and outcomes come from the brief it was shown). The tests assert on
//! what the model was shown in each request and on the database as `baton` reads it afterwards.
//!
//! Codex is found as in `codex_cli` (`CODEX_BIN`, else the pinned npm package, else `PATH`).

use crate::support::TOOLS;
use crate::support::codex::{canonical, find_codex, skill_description};
use crate::support::exec::{ExecHarness, ExecRun};
use crate::support::model_server::{
    ModelRequest, ModelServer, Output, Step, UNSCRIPTED_REPLY, in_order, output_text, step, steps, structured_in,
};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;

/// What Codex keeps of a tool output from each end (the rest is cut from the middle).
const CODEX_KEEPS: usize = 24_000;

/// The tool output the model got for `call_id`, from the first request that carries it.
fn output_seen(turns: &[ModelRequest], call_id: &str) -> Value {
    turns.iter().find_map(|t| t.output_for(call_id)).cloned().unwrap_or_else(|| {
        let inputs: Vec<Vec<&str>> = turns.iter().map(|t| t.input().iter().filter_map(|i| i["type"].as_str()).collect()).collect();
        panic!("no request carried the output of `{call_id}`; input item types per request: {inputs:?}")
    })
}

/// The text the model was shown as the result of MCP call `call_id`.
fn shown(turns: &[ModelRequest], call_id: &str) -> String {
    output_text(&output_seen(turns, call_id))
}

/// The baton tools a `tool_search_output` loaded, in the order Codex listed them.
fn baton_tools_loaded(search_output: &Value) -> Vec<&Value> {
    let namespaces = search_output["tools"].as_array().unwrap_or_else(|| panic!("tool_search_output without tools: {search_output:#}"));
    let baton = namespaces.iter().filter(|ns| ns["type"] == "namespace" && ns["name"] == "mcp__baton");
    baton.flat_map(|ns| ns["tools"].as_array().into_iter().flatten()).collect()
}

/// `tool_search(query)` (call `call_id`) loaded every baton tool with its input schema; the
/// ones a workflow starts with carry their required arguments.
fn assert_loads_every_tool(turns: &[ModelRequest], call_id: &str, query: &str) {
    let search = output_seen(turns, call_id);
    assert_eq!(search["type"], "tool_search_output", "{search:#}");
    let loaded = baton_tools_loaded(&search);
    let mut names: Vec<&str> = loaded.iter().filter_map(|t| t["name"].as_str()).collect();
    let _ = writeln!(std::io::stderr().lock(), "tool_search({query:?}) loaded {} baton tools: {names:?}", names.len());
    names.sort_unstable();
    let mut all = TOOLS.to_vec();
    all.sort_unstable();
    assert_eq!(names, all, "tool_search({query:?}) must load every baton tool");
    for tool in &loaded {
        let name = tool["name"].as_str().unwrap_or_default();
        assert_eq!(tool["parameters"]["type"], "object", "`{name}` was loaded without its input schema: {tool:#}");
    }
    let schema = |name: &str| &loaded.iter().find(|t| t["name"] == name).unwrap()["parameters"];
    for (tool, field) in [("start_workflow", "goal"), ("advance", "expected_version"), ("advance", "outcome"), ("resume", "run_id")] {
        assert!(schema(tool)["properties"][field].is_object(), "`{tool}` was loaded without `{field}`: {:#}", schema(tool));
    }
}

fn assert_clean(run: &ExecRun, harness: &ExecHarness) {
    assert!(run.finished.status.success(), "codex exec failed:\n{}", run.describe());
    assert_eq!(harness.model.problems(), Vec::<String>::new(), "the model server saw malformed requests or the script failed");
    assert!(run.items("error").is_empty(), "codex exec reported errors: {:#?}", run.items("error"));
}

/// Every MCP call of the session went to baton and completed (none refused for approval),
/// in this order of tools.
fn assert_calls_completed(run: &ExecRun, tools: &[&str]) {
    let calls = run.items("mcp_tool_call");
    let made: Vec<&str> = calls.iter().filter_map(|c| c["tool"].as_str()).collect();
    assert_eq!(made, tools, "the session's baton calls");
    for call in &calls {
        assert_eq!((call["server"].as_str(), call["status"].as_str()), (Some("baton"), Some("completed")), "{call:#}");
        assert!(call["error"].is_null(), "a baton call failed: {call:#}");
        assert!(!call["result"]["structured_content"]["error"].is_object(), "baton answered with an error: {call:#}");
    }
}

/// The first request of a session lists the baton skill for the model.
fn assert_skill_listed(first: &ModelRequest) {
    let listing = first.message_text();
    assert!(listing.contains(&format!("- baton: {}", skill_description())), "the skill listing lacks baton:\n{listing}");
    assert!(listing.contains("baton/SKILL.md"), "the skill listing does not point at baton's SKILL.md:\n{listing}");
    assert!(first.tools().iter().any(|t| t["type"] == "tool_search"), "no tool_search tool: {:?}", first.tools());
}

/// A baton call.
fn baton(call_id: &str, tool: &str, arguments: Value) -> Vec<Output> {
    vec![Output::mcp_call(call_id, "baton", tool, arguments)]
}

/// The step of a model that reads the brief `brief_of(request)` returned, checks it is
/// `role`'s turn and that `outcome` is allowed, then reports it with `advance` as `call_id`.
fn advance_after(
    brief_of: impl FnOnce(&ModelRequest) -> Value + Send + 'static,
    role: &'static str,
    call_id: &'static str,
    outcome: &'static str,
    output: String,
) -> Step {
    step(move |request| {
        let brief = brief_of(request);
        assert_eq!(brief["role"], role, "the brief the model acts on: {brief:#}");
        let allowed: Vec<&str> = brief["outcomes"].as_array().into_iter().flatten().filter_map(|o| o["outcome"].as_str()).collect();
        assert!(allowed.contains(&outcome), "`{outcome}` is not among the brief's outcomes {allowed:?}");
        let arguments = json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": outcome, "output": output});
        baton(call_id, "advance", arguments)
    })
}

/// The brief returned by call `call_id`.
fn brief(call_id: &'static str) -> impl FnOnce(&ModelRequest) -> Value + Send + 'static {
    move |request: &ModelRequest| request.result_of(call_id)
}

/// Bytes of the structured JSON and characters shown to the model, per baton call.
fn sizes(turns: &[ModelRequest], calls: &[(&str, &str)]) -> Vec<(String, usize, usize)> {
    calls
        .iter()
        .map(|(call_id, tool)| {
            let text = shown(turns, call_id);
            let json = structured_in(&text).to_string().len();
            (format!("{tool} ({call_id})"), json, text.chars().count())
        })
        .collect()
}

/// A feature run as users do it, over two `codex exec` sessions with Codex's default approvals.
/// Session 1 finds baton's tools, starts a run and takes it through design, implementation and
/// a review that asks for changes, back to a second implementation. Session 2 (a new `codex
/// exec`, not a resume) finds the run in this workspace, reads its briefing (which names
/// session 1's Codex thread) and completes it. The model reads run_id, version and outcomes
/// from each brief it was shown.
#[test]
fn exec_sessions_run_a_feature_through_a_review_loop_and_resume_it() {
    let Some(codex) = find_codex() else { return };
    let goal = "Add a --verbose flag to the greeter CLI";
    let review = "1. src/main.rs: --verbose is parsed but never used; print the greeting's source.\n2. tests: no test for --verbose.";
    let session_1 = vec![
        step(|_| vec![Output::tool_search("search-baton", "baton", None)]),
        step(|_| vec![Output::tool_search("search-start", "start a baton workflow", None)]),
        step(move |_| baton("start", "start_workflow", json!({"goal": goal, "title": "verbose flag"}))),
        advance_after(
            brief("start"),
            "architect",
            "plan",
            "planned",
            "Plan: parse --verbose in src/main.rs; test it in tests/cli.rs.".into(),
        ),
        advance_after(brief("plan"), "implementer", "build-1", "implemented", "Added the flag in src/main.rs.".into()),
        advance_after(brief("build-1"), "reviewer", "review-1", "changes_requested", review.into()),
        advance_after(brief("review-1"), "implementer", "build-2", "implemented", "Used the flag and added tests/cli.rs.".into()),
        step(|request| {
            let brief = request.result_of("build-2");
            vec![Output::text(&format!("Run {} waits for review at version {}.", brief["run_id"], brief["version"]))]
        }),
    ];
    let session_2 = vec![
        step(|_| vec![Output::tool_search("search-resume", "resume my baton runs", None)]),
        step(|_| baton("list", "resume", json!({}))),
        step(|request| {
            let list = request.result_of("list");
            let run_id = list["runs"][0]["run_id"].clone();
            baton("briefing", "resume", json!({"run_id": run_id}))
        }),
        advance_after(
            |r: &ModelRequest| r.result_of("briefing")["brief"].clone(),
            "reviewer",
            "review-2",
            "approved",
            "Read the diff.".into(),
        ),
        advance_after(brief("review-2"), "tester", "test", "passed", "cargo test: 12 passed.".into()),
        step(|request| vec![Output::text(&format!("Done: {}.", request.result_of("test")["status"]))]),
    ];
    let harness = ExecHarness::new(&codex, steps(session_1.into_iter().chain(session_2).collect()));

    // Session 1.
    let first = harness.exec("Use baton to add a --verbose flag to the greeter CLI.");
    assert_clean(&first, &harness);
    assert_calls_completed(&first, &["start_workflow", "advance", "advance", "advance", "advance"]);
    let turns = harness.model.turns();
    let session_1_turns = turns.len();
    assert_eq!(session_1_turns, 8, "two searches, five calls, one answer");
    assert_skill_listed(&turns[0]);
    assert!(!turns[0].tools().iter().any(|t| t["name"] == "mcp__baton"), "baton's tools should be deferred behind tool_search");
    assert_loads_every_tool(&turns, "search-baton", "baton");
    assert_loads_every_tool(&turns, "search-start", "start a baton workflow");
    let started = turns[3].result_of("start");
    let run_id = started["run_id"].as_str().unwrap_or_else(|| panic!("no run_id in the brief: {started:#}")).to_string();
    assert_eq!((started["step"].as_str(), started["version"].as_u64()), (Some("design"), Some(1)), "{started:#}");
    assert!(started["role_guide"].as_str().is_some_and(|g| g.contains("Role: architect")), "the first brief has the guide: {started:#}");
    // The review loop: the reviewer's changes come back to the implementer as feedback.
    let again = turns[7].result_of("review-1");
    assert_eq!(
        (again["step"].as_str(), again["visit"].as_u64(), again["version"].as_u64()),
        (Some("implement"), Some(2), Some(4)),
        "{again:#}"
    );
    assert_eq!(again["feedback"]["outcome"], "changes_requested", "{again:#}");
    assert_eq!(again["feedback"]["output"], review, "{again:#}");
    assert!(!again["role_guide"].as_str().unwrap_or_default().contains("Role: implementer"), "the guide is not repeated: {again:#}");
    for call in ["start", "plan", "build-1", "review-1", "build-2"] {
        assert!(!shown(&turns, call).contains("requires approval"), "Codex refused `{call}` for approval");
    }
    let thread_1 = first.thread_id();

    // Session 2: a new `codex exec` in the same directory.
    let second = harness.exec("Resume my baton runs and finish the work.");
    assert_clean(&second, &harness);
    assert_calls_completed(&second, &["resume", "resume", "advance", "advance"]);
    let turns = harness.model.turns();
    let session_2 = &turns[session_1_turns..];
    assert_eq!(session_2.len(), 6, "one search, four calls, one answer");
    assert_skill_listed(&session_2[0]);
    assert!(session_2[0].output_for("start").is_none(), "session 2 is a new conversation, not a resume");
    assert_loads_every_tool(session_2, "search-resume", "resume my baton runs");
    let list = structured_in(&shown(session_2, "list"));
    let listed: Vec<&str> = list["runs"].as_array().into_iter().flatten().filter_map(|r| r["run_id"].as_str()).collect();
    assert_eq!(listed, [run_id.as_str()], "resume lists this workspace's unfinished run: {list:#}");
    let workspace = list["workspace"].as_str().unwrap_or_else(|| panic!("the listing names no workspace: {list:#}"));
    assert_eq!(canonical(Path::new(workspace)), canonical(harness.work()), "the workspace is where Codex runs: {list:#}");
    let briefing = structured_in(&shown(session_2, "briefing"));
    assert_eq!(briefing["codex_threads"], json!([thread_1]), "the briefing names session 1's thread for `codex resume`: {briefing:#}");
    assert_eq!((briefing["brief"]["step"].as_str(), briefing["brief"]["version"].as_u64()), (Some("review"), Some(5)), "{briefing:#}");
    let done = structured_in(&shown(session_2, "test"));
    assert_eq!((done["status"].as_str(), done["version"].as_u64()), (Some("completed"), Some(7)), "{done:#}");
    let thread_2 = second.thread_id();
    assert_ne!(thread_1, thread_2);

    // The database, as the terminal reads it with Codex gone.
    let runs = harness.runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!((runs[0]["run_id"].as_str(), runs[0]["status"].as_str()), (Some(run_id.as_str()), Some("completed")), "{runs:#?}");
    assert_eq!(runs[0]["version"], 7, "{runs:#?}");
    let shown_run = harness.baton_json(&["show", &run_id, "--json", "--history", "50"]);
    let actors: Vec<(u64, &str, &str)> = shown_run["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["seq"].as_u64().unwrap_or(0), e["actor"]["kind"].as_str().unwrap_or("?"), e["actor"]["id"].as_str().unwrap_or("?")))
        .collect();
    let expected: Vec<(u64, &str, &str)> =
        (1..=7).map(|seq| (seq, "codex", if seq <= 5 { thread_1.as_str() } else { thread_2.as_str() })).collect();
    assert_eq!(actors, expected, "each change records the Codex thread that made it");

    // Brief sizes over the whole run, for the record.
    let mut all = sizes(
        &turns[..session_1_turns],
        &[("start", "start_workflow"), ("plan", "advance"), ("build-1", "advance"), ("review-1", "advance"), ("build-2", "advance")],
    );
    all.extend(sizes(session_2, &[("list", "resume"), ("briefing", "resume"), ("review-2", "advance"), ("test", "advance")]));
    let mut report = String::from("brief sizes over the feature run (structured JSON bytes / characters shown to the model):\n");
    for (call, json, chars) in &all {
        report.push_str(&format!("  {call:<26} {json:>6} B {chars:>6} chars\n"));
        assert!(*chars < CODEX_KEEPS, "{call} is {chars} characters; Codex would cut it");
    }
    report.push_str(&format!("  total {} B\n", all.iter().map(|(_, json, _)| json).sum::<usize>()));
    let _ = write!(std::io::stderr().lock(), "{report}");
}

/// A 200 KB report does not push a brief's key fields out of what Codex shows the model:
/// the next brief and the briefing stay whole (under Codex's 24,000-character cut), with
/// run_id, version, next_action and outcomes at their start, and the report itself is read
/// back in windows through the `read_more` pointer the brief gives.
#[test]
fn exec_brief_after_a_200_kb_report_keeps_its_key_fields_in_view() {
    let Some(codex) = find_codex() else { return };
    let report: String = (0..).map(|i| format!("finding {i:05}: the parser accepts input it should refuse.\n")).take(4_000).collect();
    let report: String = report.chars().take(200 * 1024).collect();
    assert_eq!(report.len(), 200 * 1024);
    let first_window = report[..64].to_string();
    let script = steps(vec![
        step(|_| vec![Output::tool_search("search", "baton", None)]),
        step(|_| baton("start", "start_workflow", json!({"goal": "Audit the parser"}))),
        advance_after(brief("start"), "architect", "big", "planned", report),
        step(|request| {
            let brief = request.result_of("big");
            // The pointer reads `inspect {"run_id": ..., "event": N}`: call exactly that.
            let pointer = brief["feedback"]["read_more"].as_str().unwrap_or_else(|| panic!("no read_more: {brief:#}"));
            let arguments: Value = serde_json::from_str(pointer.trim_start_matches("inspect ")).unwrap();
            baton("more", "inspect", arguments)
        }),
        step(|request| baton("briefing", "resume", json!({"run_id": request.result_of("big")["run_id"]}))),
        step(|_| vec![Output::text("The report is long; the plan is recorded.")]),
    ]);
    let harness = ExecHarness::new(&codex, script);
    let run = harness.exec("Use baton to audit the parser.");
    assert_clean(&run, &harness);
    assert_calls_completed(&run, &["start_workflow", "advance", "inspect", "resume"]);
    let turns = harness.model.turns();

    for call in ["big", "briefing"] {
        let text = shown(&turns, call);
        assert!(text.chars().count() < CODEX_KEEPS, "`{call}` showed the model {} characters; Codex cuts past {CODEX_KEEPS}", text.len());
        assert!(!text.contains("tokens truncated"), "Codex cut `{call}`");
        let head: String = text.chars().take(CODEX_KEEPS).collect();
        for key in ["\"run_id\"", "\"version\"", "\"next_action\"", "\"outcomes\""] {
            let at = head.find(key).unwrap_or_else(|| panic!("`{call}` shows no {key} in its first {CODEX_KEEPS} characters: {head}"));
            assert!(at < 2_000, "{key} of `{call}` is at character {at}, behind long text");
        }
        let _ = writeln!(std::io::stderr().lock(), "after a 200 KB report, `{call}` showed the model {} characters", text.chars().count());
    }
    let next = turns.iter().find_map(|t| t.output_for("big").map(|_| t.result_of("big"))).unwrap();
    assert_eq!((next["role"].as_str(), next["version"].as_u64()), (Some("implementer"), Some(2)), "{next:#}");
    assert_eq!(next["feedback"]["output_bytes"], 200 * 1024, "the brief says how long the report is: {next:#}");
    let briefing = structured_in(&shown(&turns, "briefing"));
    assert_eq!(briefing["brief"]["version"], 2, "{briefing:#}");

    // The whole report is one `inspect` window after another.
    let more = structured_in(&shown(&turns, "more"));
    assert_eq!(more["total_bytes"], 200 * 1024, "{more:#}");
    assert!(more["text"].as_str().is_some_and(|t| t.starts_with(&first_window)), "the window starts at the report's start: {more:#}");
    assert!(more["next_offset"].as_u64().is_some_and(|o| o > 0), "a window says where the next begins: {more:#}");
    assert!(shown(&turns, "more").chars().count() < CODEX_KEEPS, "an inspect window is shown whole");
}

/// A plan fanned out through Codex: the architect's `advance` carries the plan, the run's
/// brief tells the model to work tasks with sub-agents (`spawn_agent`, within `max_agents`),
/// the model claims a task and implements it, and the brief for the review step tells it to
/// hand the review to a fresh sub-agent; claiming that review itself is refused by baton.
#[test]
fn exec_fans_a_plan_out_and_briefs_send_reviews_to_sub_agents() {
    let Some(codex) = find_codex() else { return };
    let plan = json!({"tasks": [
        {"id": "parser", "title": "Parse --verbose", "description": "Accept the flag in src/main.rs"},
        {"id": "docs", "title": "Document --verbose", "depends_on": ["parser"]}]});
    let script = steps(vec![
        step(|_| vec![Output::tool_search("search", "baton", None)]),
        step(|_| {
            baton("start", "start_workflow", json!({"goal": "Add --verbose with parallel agents", "template": "parallel", "max_agents": 3}))
        }),
        step(move |request| {
            let brief = request.result_of("start");
            let fans_out = brief["outcomes"].as_array().into_iter().flatten().any(|o| o["outcome"] == "planned");
            assert!(fans_out, "the architect's brief offers `planned`: {brief:#}");
            baton(
                "plan",
                "advance",
                json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": "planned", "output": "Two tasks.", "plan": plan}),
            )
        }),
        step(|request| baton("claim", "resume", json!({"run_id": request.result_of("plan")["run_id"], "claim": "next"}))),
        step(|request| {
            let task = request.result_of("claim");
            assert_eq!((task["task"].as_str(), task["role"].as_str()), (Some("parser"), Some("implementer")), "{task:#}");
            baton(
                "build",
                "advance",
                json!({"run_id": task["run_id"], "task": "parser", "lease_token": task["lease_token"], "outcome": "implemented", "output": "Parsed the flag."}),
            )
        }),
        step(|request| baton("self-review", "resume", json!({"run_id": request.result_of("build")["run_id"], "claim": "parser"}))),
        step(|_| vec![Output::text("The review goes to a sub-agent.")]),
    ]);
    let harness = ExecHarness::new(&codex, script);
    let run = harness.exec("Use baton with parallel agents to add --verbose.");
    assert_clean(&run, &harness);
    let calls = run.items("mcp_tool_call");
    let made: Vec<&str> = calls.iter().filter_map(|c| c["tool"].as_str()).collect();
    assert_eq!(made, ["start_workflow", "advance", "resume", "advance", "resume"]);
    let statuses: Vec<&str> = calls.iter().filter_map(|c| c["status"].as_str()).collect();
    assert_eq!(statuses, ["completed", "completed", "completed", "completed", "failed"], "only the self-review fails: {calls:#?}");
    let turns = harness.model.turns();

    let planned = structured_in(&shown(&turns, "plan"));
    assert_eq!(planned["tasks"]["total"], 2, "{planned:#}");
    assert_eq!(planned["tasks"]["max_agents"], 3, "{planned:#}");
    let how = planned["tasks"]["how_to_work"].as_str().unwrap_or_default();
    assert!(how.contains("spawn_agent") && how.contains("at most 3"), "the run's brief tells the model to spawn sub-agents: {how}");
    let built = structured_in(&shown(&turns, "build"));
    assert_eq!((built["step"].as_str(), built["status"].as_str()), (Some("review"), Some("ready")), "{built:#}");
    let next = built["next_action"].as_str().unwrap_or_default();
    assert!(next.contains("spawn_agent") && next.contains("subagent_prompt"), "the review goes to a fresh sub-agent: {next}");
    let prompt = built["subagent_prompt"].as_str().unwrap_or_default();
    assert!(prompt.contains("reviewer") && prompt.contains("claim"), "the sub-agent's message says what to do: {prompt}");
    let refused = shown(&turns, "self-review");
    assert!(refused.contains("someone other than"), "baton refuses a review by the implementer: {refused}");

    let runs = harness.runs();
    assert_eq!(runs[0]["status"], "active", "{runs:#?}");
}

/// The model server without Codex: keep-alive, chunked bodies, unscripted turns, other
/// endpoints, a compressed body refused as a recorded problem, and a failing script recorded.
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

    // A step that cannot read what it expects is a recorded problem, and the turn still ends.
    let failing = ModelServer::start(steps(vec![step(|request| baton("x", "advance", request.result_of("missing")))]));
    let address = failing.base_url().trim_start_matches("http://").trim_end_matches("/v1").to_string();
    let mut stream = TcpStream::connect(&address).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(stream, "POST /v1/responses HTTP/1.1\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
    let (status, sse) = read_response(&mut BufReader::new(stream));
    assert_eq!(status, 200, "{sse}");
    assert!(sse.contains("event: response.completed"), "{sse}");
    let problems = failing.problems();
    assert!(problems.len() == 1 && problems[0].contains("no output of `missing`"), "{problems:?}");
}

/// Status and body of one content-length framed response.
fn read_response<R: Read>(reader: &mut BufReader<R>) -> (u16, String) {
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
