//! End-to-end check against the real Codex CLI (`@openai/codex`), without network or API key.
//!
//! `baton install` registers the server and the skill in a fresh `CODEX_HOME`; then
//! `codex mcp get` must read the registration back, and `codex app-server` (JSON-RPC over stdio)
//! must start `baton serve`, list its tools and the skill, and route real tool calls to it.
//! Then the baton CLI reads the run back from disk after Codex has exited, and two new Codex
//! sessions at once resume the same run: one advances it, the other gets a conflict.
//!
//! Codex is `$CODEX_BIN`, else a pinned `@openai/codex` that the test installs with npm under
//! target/tmp, else `codex` on `PATH`. Without any, the test is skipped, unless `CI` is set.

mod common;
mod support;

use common::{BATON, TOOLS};
use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use support::codex::{TIMEOUT, canonical, find_codex, run, skill_description};

#[test]
fn codex_registers_lists_and_calls_baton() {
    let Some(codex) = find_codex() else { return };
    let version = run(Command::new(&codex).arg("--version"), "codex --version");
    assert!(version.status.success(), "`{} --version` failed:\n{}", codex.display(), version.describe());

    let codex_home = tempfile::tempdir().unwrap();
    let baton_parent = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let baton_home = baton_parent.path().join("baton-home");
    let (codex_home, work) = (codex_home.path(), work.path());

    // 1. Install into the fresh Codex home; Codex reads the registration back.
    let install = run(
        Command::new(BATON)
            .arg("install")
            .arg("--codex-home")
            .arg(codex_home)
            .arg("--home")
            .arg(&baton_home)
            .env_remove("BATON_HOME")
            .env_remove("CODEX_HOME"),
        "baton install",
    );
    assert!(install.status.success(), "baton install failed:\n{}", install.describe());
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
    let init = codex_app
        .request("initialize", json!({"clientInfo": {"name": "baton-test", "version": "0"}, "capabilities": {"experimentalApi": true}}));
    if let Some(home) = init["codexHome"].as_str() {
        assert_eq!(canonical(Path::new(home)), canonical(codex_home), "app-server uses another CODEX_HOME: {init:#}");
    }
    codex_app.notify("initialized");

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
    }

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
    let skill_path = skill["path"].as_str().unwrap_or_default();
    assert_eq!(canonical(Path::new(skill_path)), canonical(&codex_home.join("skills/baton/SKILL.md")), "{skill:#}");

    // 3. Real tool calls through Codex: start, advance, and a stale advance.
    let thread = codex_app.request("thread/start", json!({"cwd": work, "ephemeral": true}));
    let thread_id = thread["thread"]["id"].as_str().unwrap_or_else(|| panic!("thread/start gave no thread id: {thread:#}")).to_string();

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
        app.request("initialize", json!({"clientInfo": {"name": "baton-test", "version": "0"}, "capabilities": {"experimentalApi": true}}));
        app.notify("initialized");
        let thread = app.request("thread/start", json!({"cwd": cwd, "ephemeral": true}));
        let id = thread["thread"]["id"].as_str().unwrap_or_else(|| panic!("thread/start gave no thread id: {thread:#}")).to_string();
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

/// `codex app-server` speaking newline-delimited JSON-RPC on stdio.
struct AppServer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
    stderr_file: tempfile::NamedTempFile,
    /// Notifications seen so far (method names), for failure messages.
    notifications: Vec<String>,
}

impl AppServer {
    fn start(codex: &Path, codex_home: &Path, cwd: &Path) -> Self {
        let stderr_file = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(codex)
            .arg("app-server")
            .env("CODEX_HOME", codex_home)
            .env_remove("BATON_HOME")
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr_file.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{} app-server`: {e}", codex.display()));
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        AppServer { child, stdin, lines, next_id: 0, stderr_file, notifications: Vec::new() }
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        let mut line = message.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()).unwrap_or_else(|e| panic!("cannot write to codex app-server: {e}"));
    }

    fn notify(&mut self, method: &str) {
        self.send(&json!({"jsonrpc": "2.0", "method": method}));
    }

    /// Send a request and return its `result`; panics on a JSON-RPC error, EOF or timeout.
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no answer to `{method}` within {TIMEOUT:?}; notifications so far: {:?}", self.notifications)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!("codex app-server closed stdout while waiting for `{method}` (exit: {status:?})")
                }
            };
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                self.notifications.push(format!("<not JSON> {}", line.chars().take(200).collect::<String>()));
                continue;
            };
            match (message.get("id"), message.get("method")) {
                // A request from Codex (approval, elicitation, ...): refuse it so nothing waits on us.
                (Some(request_id), Some(request)) => {
                    self.notifications.push(format!("request {request}"));
                    let request_id = request_id.clone();
                    self.send(&json!({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "not supported by the baton test client"}}));
                }
                (None, Some(notification)) => self.notifications.push(notification.as_str().unwrap_or_default().to_string()),
                (Some(answer_id), None) if *answer_id == json!(id) => {
                    if let Some(error) = message.get("error") {
                        panic!("`{method}` failed: {error:#}");
                    }
                    return message.get("result").cloned().unwrap_or_else(|| panic!("`{method}` answered without result: {message:#}"));
                }
                _ => {}
            }
        }
    }

    fn call_tool(&mut self, thread_id: &str, tool: &str, arguments: Value) -> Value {
        self.request("mcpServer/tool/call", json!({"threadId": thread_id, "server": "baton", "tool": tool, "arguments": arguments}))
    }

    /// Close stdin (app-server exits on EOF) and wait; kill it if it lingers.
    fn shutdown(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "codex app-server did not exit within {TIMEOUT:?} of stdin closing");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        // EOF on stdin makes app-server exit (and stop `baton serve`); killing the npm launcher
        // instead could orphan the native binary, so that is only the fallback.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            let mut stderr = String::new();
            let _ = File::open(self.stderr_file.path()).and_then(|mut f| f.read_to_string(&mut stderr));
            eprintln!("--- codex app-server stderr ---\n{stderr}\n--- notifications ---\n{:?}", self.notifications);
        }
    }
}
