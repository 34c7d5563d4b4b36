//! A client of `codex app-server` (newline-delimited JSON-RPC on stdio), as an IDE or the TUI
//! uses it: requests with bounded waits, server requests (approvals, MCP elicitations) answered
//! by a handler the test chooses, and whole model turns (`turn/start` until `turn/completed`).

use super::codex::TIMEOUT;
use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How the client answers one request from Codex.
pub enum Answer {
    Result(Value),
    Error(String),
}

/// Answers Codex's server requests: `(method, params) -> answer`.
pub type Handler = Box<dyn FnMut(&str, &Value) -> Answer>;

/// The default handler: refuse every server request so nothing waits on the test.
pub fn refuse_all() -> Handler {
    Box::new(|_, _| Answer::Error("not supported by the baton test client".into()))
}

/// `codex app-server` speaking newline-delimited JSON-RPC on stdio.
pub struct AppServer {
    /// `None` once it has been waited for.
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
    stderr_file: tempfile::NamedTempFile,
    handler: Handler,
    /// The method of every server request so far, in order (shown when a test fails).
    server_requests: Vec<String>,
    /// Every notification so far (`method` and `params`), in order.
    pub notifications: Vec<Value>,
}

impl AppServer {
    /// Start `codex app-server` with `CODEX_HOME=codex_home` in `cwd`.
    pub fn start(codex: &Path, codex_home: &Path, cwd: &Path) -> AppServer {
        AppServer::start_wrapped(&[], codex, codex_home, cwd)
    }

    /// Like [`AppServer::start`], run through `wrapper` (e.g. `unshare --net`).
    pub fn start_wrapped(wrapper: &[&str], codex: &Path, codex_home: &Path, cwd: &Path) -> AppServer {
        let stderr_file = tempfile::NamedTempFile::new().unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(codex);
                command
            }
            None => Command::new(codex),
        };
        let mut child = command
            .arg("app-server")
            .env("CODEX_HOME", codex_home)
            .env_remove("BATON_HOME")
            .env_remove("OPENAI_API_KEY")
            .env_remove("CODEX_API_KEY")
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
        AppServer {
            child: Some(child),
            stdin,
            lines,
            next_id: 0,
            stderr_file,
            handler: refuse_all(),
            server_requests: Vec::new(),
            notifications: Vec::new(),
        }
    }

    /// `initialize` + `initialized`, as a client with the experimental API.
    pub fn initialize(&mut self) -> Value {
        let init = self.request(
            "initialize",
            json!({"clientInfo": {"name": "baton-test", "version": "0"}, "capabilities": {"experimentalApi": true}}),
        );
        self.notify("initialized");
        init
    }

    /// Answer Codex's server requests with `handler` from now on.
    pub fn set_handler(&mut self, handler: Handler) {
        self.handler = handler;
    }

    /// A new thread in `cwd` with Codex's defaults (nothing about approvals); returns its id
    /// and the whole `thread/start` answer.
    pub fn start_thread(&mut self, cwd: &Path) -> (String, Value) {
        let thread = self.request("thread/start", json!({"cwd": cwd, "ephemeral": true}));
        let id = thread["thread"]["id"].as_str().unwrap_or_else(|| panic!("thread/start gave no thread id: {thread:#}")).to_string();
        (id, thread)
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        let mut line = message.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()).unwrap_or_else(|e| panic!("cannot write to codex app-server: {e}"));
    }

    pub fn notify(&mut self, method: &str) {
        self.send(&json!({"jsonrpc": "2.0", "method": method}));
    }

    /// Send a request and return its `result`; panics on a JSON-RPC error, EOF or timeout.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let message = self.next_message(deadline, method);
            if message.get("method").is_none() && message.get("id") == Some(&json!(id)) {
                if let Some(error) = message.get("error") {
                    panic!("`{method}` failed: {error:#}");
                }
                return message.get("result").cloned().unwrap_or_else(|| panic!("`{method}` answered without result: {message:#}"));
            }
        }
    }

    /// Start a turn with `text` on `thread` and serve it until `turn/completed`; returns the
    /// notifications of the turn (the `turn/completed` one last).
    pub fn run_turn(&mut self, thread: &str, text: &str, limit: Duration) -> Vec<Value> {
        let first = self.notifications.len();
        let started = self.request("turn/start", json!({"threadId": thread, "input": [{"type": "text", "text": text}]}));
        let turn = started["turn"]["id"].as_str().unwrap_or_else(|| panic!("turn/start gave no turn id: {started:#}")).to_string();
        let deadline = Instant::now() + limit;
        loop {
            let message = self.next_message(deadline, "turn/completed");
            if message["method"] == "turn/completed" && message["params"]["turn"]["id"] == turn.as_str() {
                return self.notifications[first..].to_vec();
            }
        }
    }

    /// The next message that is not a server request (those are answered here), within `deadline`.
    fn next_message(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    let methods: Vec<&str> = self.notifications.iter().filter_map(|n| n["method"].as_str()).collect();
                    panic!("no `{waiting_for}` in time; notifications so far: {methods:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    panic!("codex app-server closed stdout while waiting for `{waiting_for}` (exit: {status:?})")
                }
            };
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                self.notifications.push(json!({"method": "<not JSON>", "params": line}));
                continue;
            };
            match (message.get("id").cloned(), message["method"].as_str()) {
                (Some(request_id), Some(method)) => {
                    let params = message.get("params").cloned().unwrap_or(Value::Null);
                    self.server_requests.push(method.to_string());
                    let reply = match (self.handler)(method, &params) {
                        Answer::Result(result) => json!({"jsonrpc": "2.0", "id": request_id, "result": result}),
                        Answer::Error(message) => {
                            json!({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": message}})
                        }
                    };
                    self.send(&reply);
                }
                (None, Some(method)) => {
                    if method == "item/completed" {
                        check_baton_call(&message["params"]["item"]);
                    }
                    self.notifications.push(message.clone());
                    return message;
                }
                _ => return message,
            }
        }
    }

    /// Call an MCP tool directly (`mcpServer/tool/call`: no model, no approval).
    /// Its structured result is validated against baton's published output schema.
    pub fn call_tool(&mut self, thread_id: &str, tool: &str, arguments: Value) -> Value {
        let result =
            self.request("mcpServer/tool/call", json!({"threadId": thread_id, "server": "baton", "tool": tool, "arguments": arguments}));
        if result.get("structuredContent").is_some() {
            crate::support::schemas::published().check_result(tool, &result);
        }
        result
    }

    /// Close stdin (app-server exits on EOF) and wait, within [`TIMEOUT`].
    pub fn shutdown(mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.wait_within(TIMEOUT).unwrap_or_else(|| panic!("codex app-server did not exit within {TIMEOUT:?} of stdin closing"))
    }

    /// Wait for the process to exit, killing it after `limit` (then `None`). The wait is a
    /// blocking `wait` on a helper thread reported over a channel: a real timeout, not polling.
    fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id();
        let (done, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait());
        });
        match exited.recv_timeout(limit) {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                let _ = exited.recv_timeout(Duration::from_secs(10));
                None
            }
        }
    }
}

/// Validate the structured content of a baton call a turn made (an `mcpToolCall` item)
/// against baton's published output schemas, when Codex reports it.
fn check_baton_call(item: &Value) {
    if item["type"] != "mcpToolCall" || item["server"] != "baton" {
        return;
    }
    let structured = item["result"].get("structuredContent").or_else(|| item["result"].get("structured_content"));
    if let (Some(tool), Some(structured)) = (item["tool"].as_str(), structured.filter(|v| !v.is_null())) {
        crate::support::schemas::published().check(tool, Some(structured), structured.get("error").is_some());
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        // EOF on stdin makes app-server exit (and stop `baton serve`); killing the npm launcher
        // instead could orphan the native binary, so that is only the fallback.
        drop(self.stdin.take());
        let _ = self.wait_within(Duration::from_secs(10));
        if std::thread::panicking() {
            let mut stderr = String::new();
            let _ = File::open(self.stderr_file.path()).and_then(|mut f| f.read_to_string(&mut stderr));
            let methods: Vec<&str> = self.notifications.iter().filter_map(|n| n["method"].as_str()).collect();
            let requests = &self.server_requests;
            eprintln!(
                "--- codex app-server stderr ---\n{stderr}\n--- notifications ---\n{methods:?}\n--- server requests ---\n{requests:?}"
            );
        }
    }
}
