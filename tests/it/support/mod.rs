//! Shared test harness: start the real `baton serve` binary and drive it with rmcp's
//! MCP client over stdio.

use rmcp::model::{CallToolRequestParams, JsonObject, RequestMetaObject};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

pub mod app_server;
// The benches' measurements; the benches include this module too (no test uses these).
#[allow(dead_code)]
pub mod bench;
pub mod codex;
pub mod drive;
pub mod exec;
pub mod git;
pub mod loopfs;
pub mod model_server;
pub mod pg;
pub mod schemas;
pub mod store;
pub mod web;

use schemas::OutputSchemas;
use std::sync::{Arc, Mutex};

pub const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// Owners started by tests exit soon after their last connection (and when their
/// temporary home is deleted), so test runs leave no processes behind.
pub const OWNER_IDLE: &str = "3s";

/// Every tool baton must serve.
pub const TOOLS: &[&str] = &["start_workflow", "advance", "checkpoint", "resume", "await_human", "answer_human", "cancel_run", "inspect"];

/// A running `baton serve` process with an MCP client session.
pub struct Server {
    pub client: RunningService<RoleClient, ()>,
    pub pid: u32,
    /// The Codex thread id sent as `_meta.threadId` with every call: the agent's identity.
    pub thread: Option<String>,
    /// The output schemas this server published (one `tools/list` at start): every
    /// structured result [`Server::call`] receives is validated against its tool's.
    pub schemas: Arc<OutputSchemas>,
    /// Whether results are validated (not in the benches, which would time it).
    checked: bool,
}

impl Server {
    /// Start `baton serve` on `home` and complete the MCP handshake. It runs in the
    /// directory holding `home` (a temporary one), never in baton's own checkout: runs
    /// started in a git repository get worktrees, refs and merges there.
    pub async fn start(home: &Path) -> Server {
        Server::start_in(home, home.parent().unwrap_or(Path::new("/"))).await
    }

    /// Like [`Server::start`], with `cwd` as the server's working directory.
    pub async fn start_in(home: &Path, cwd: &Path) -> Server {
        Server::launch(home, cwd, None, &[], true).await
    }

    /// Like [`Server::start_in`], for a Codex thread `thread`: each call carries it in
    /// `_meta.threadId`, as Codex does, so each server acts as a distinct agent.
    pub async fn start_as(home: &Path, cwd: &Path, thread: Option<&str>) -> Server {
        Server::launch(home, cwd, thread, &[], true).await
    }

    /// Like [`Server::start`], with extra environment variables (for the owner it may start, too).
    pub async fn start_with(home: &Path, env: &[(&str, &str)]) -> Server {
        Server::launch(home, home.parent().unwrap_or(Path::new("/")), None, env, true).await
    }

    async fn launch(home: &Path, cwd: &Path, thread: Option<&str>, env: &[(&str, &str)], checked: bool) -> Server {
        let cmd = tokio::process::Command::new(BATON).configure(|c| {
            c.arg("serve").env("BATON_HOME", home).current_dir(cwd);
            if checked {
                c.env("BATON_LOG", "warn").env("BATON_OWNER_IDLE", OWNER_IDLE);
            } else {
                c.env("BATON_LOG", "error");
            }
            c.envs(database_env(home));
            c.envs(env.iter().copied());
        });
        let (transport, _stderr) = TokioChildProcess::builder(cmd).stderr(Stdio::inherit()).spawn().expect("spawn baton serve");
        let pid = transport.id().expect("child pid");
        let client = ().serve(transport).await.expect("MCP initialize");
        let tools = client.list_all_tools().await.expect("tools/list");
        let tools: Vec<Value> = tools.iter().map(|t| serde_json::to_value(t).expect("a tool as JSON")).collect();
        Server { client, pid, thread: thread.map(str::to_string), schemas: Arc::new(OutputSchemas::from_tools(&tools)), checked }
    }

    /// Call a tool: `Ok(structured content)` on success, `Err(error object)` on a tool error.
    pub async fn call(&self, tool: &str, args: Value) -> Result<Value, Value> {
        let arguments: JsonObject = args.as_object().cloned().expect("arguments must be an object");
        let mut params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        if let Some(thread) = &self.thread {
            let meta: JsonObject = json!({ "threadId": thread }).as_object().cloned().unwrap_or_default();
            params.meta = Some(RequestMetaObject(meta.into()));
        }
        let result = self.client.call_tool(params).await.unwrap_or_else(|e| panic!("{tool}: protocol failure {e:?}"));
        let data = result.structured_content.clone().unwrap_or(Value::Null);
        if self.checked {
            self.schemas.check(tool, result.structured_content.as_ref(), result.is_error == Some(true));
            let text = result.content.first().and_then(|c| c.as_text()).map(|t| t.text.clone()).unwrap_or_default();
            let same: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{tool}: the text content is not JSON ({e}): {text}"));
            assert_eq!(same, data, "{tool}: the text content carries the structured content");
        }
        if result.is_error == Some(true) { Err(data["error"].clone()) } else { Ok(data) }
    }

    /// Call a tool that must succeed.
    pub async fn ok(&self, tool: &str, args: Value) -> Value {
        match self.call(tool, args.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{tool} {args} failed: {e}"),
        }
    }

    /// Call a tool that must fail; returns the structured error.
    pub async fn err(&self, tool: &str, args: Value) -> Value {
        match self.call(tool, args.clone()).await {
            Ok(v) => panic!("{tool} {args} should have failed but returned {v}"),
            Err(e) => e,
        }
    }

    /// `advance` with the brief's version and return the next brief.
    pub async fn advance(&self, brief: &Value, outcome: &str, output: &str) -> Value {
        self.ok("advance", json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": outcome, "output": output}))
            .await
    }

    /// Close the session; the server exits on stdin EOF.
    pub async fn stop(self) {
        let _ = self.client.cancel().await;
    }

    /// SIGKILL the server process, as a crash would.
    pub fn kill(&self) {
        let status = std::process::Command::new("kill").args(["-9", &self.pid.to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -9 {}", self.pid);
    }
}

/// A two-step loop (ping, pong, ping, ...) that can be advanced without end: `next` from
/// either step goes on, `finish` from pong ends the run.
pub fn ping_pong() -> Value {
    json!({"name": "ping-pong", "steps": [
        {"name": "ping", "role": "implementer", "max_visits": 1_000_000, "outcomes": {"next": "pong"}},
        {"name": "pong", "role": "reviewer", "outcomes": {"next": "ping", "finish": "done"}}]})
}

/// The outputs of every `advanced` event of run `run_id`, oldest first, paging back through
/// its whole history.
pub async fn advanced_outputs(server: &Server, run_id: &str) -> Vec<String> {
    let mut outputs = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let page = server.ok("inspect", json!({"run_id": run_id, "history_limit": 1000, "before_seq": before})).await;
        let events = page["events"].as_array().unwrap();
        let mut chunk: Vec<String> =
            events.iter().filter(|e| e["type"] == "advanced").map(|e| e["output"].as_str().unwrap().to_string()).collect();
        chunk.append(&mut outputs);
        outputs = chunk;
        match page["next_before_seq"].as_u64() {
            Some(next) => before = Some(next),
            None => return outputs,
        }
    }
}

/// `len` letters that do not compress (a simple LCG from `seed`), so stored records are large.
pub fn noise(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(2_654_435_761) + 1;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (b'a' + ((x >> 33) % 26) as u8) as char
        })
        .collect()
}

/// A fresh, not yet existing baton home inside a temp dir. When the tests run against
/// PostgreSQL (`BATON_TEST_BACKEND=postgres`), the home also gets a new database of its
/// own: its URL is kept beside the home and passed to every `baton` this harness starts
/// for that home.
pub fn fresh_home(tmp: &tempfile::TempDir) -> PathBuf {
    let home = tmp.path().join("baton-home");
    if pg::selected() {
        let admin = std::env::var(pg::URL_ENV).expect("BATON_TEST_BACKEND=postgres needs BATON_TEST_POSTGRES_URL (see .ci/run)");
        std::fs::write(database_file(&home), pg::create_database(&admin)).expect("write the test database URL");
    }
    home
}

/// Run every `baton` this harness starts for `home` against the database at `url`.
pub fn use_database(home: &Path, url: &str) {
    std::fs::write(database_file(home), url).expect("write the test database URL");
}

fn database_file(home: &Path) -> PathBuf {
    home.with_extension("database-url")
}

/// `BATON_DATABASE_URL` for the processes of `home`, when it has a database (see [`fresh_home`]).
pub fn database_env(home: &Path) -> Vec<(&'static str, String)> {
    match std::fs::read_to_string(database_file(home)) {
        Ok(url) => vec![("BATON_DATABASE_URL", url)],
        Err(_) => Vec::new(),
    }
}

/// Whether this test is about the sled owner process (its socket, its election, its home
/// files) and the run uses PostgreSQL, where there is no owner: then it says so and the
/// test returns early.
pub fn owner_only(test: &str) -> bool {
    if pg::selected() {
        eprintln!("{test}: not applicable with PostgreSQL (no owner process); covered by tests/postgres.rs");
    }
    pg::selected()
}

/// Run the `baton` CLI with `home`; returns (success, stdout, stderr).
pub fn cli(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(BATON)
        .env("BATON_HOME", home)
        .env("BATON_OWNER_IDLE", OWNER_IDLE)
        .envs(database_env(home))
        .args(args)
        .output()
        .expect("run baton");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A stored run whose `baton show --json` output is larger than a pipe holds, and no
/// server left running: returns its id.
pub async fn run_with_large_output(home: &Path) -> String {
    let server = Server::start(home).await;
    let brief = server.ok("start_workflow", json!({"goal": "g", "context": {"blob": "x".repeat(500_000)}})).await;
    server.stop().await;
    brief["run_id"].as_str().unwrap().to_string()
}

/// `baton show RUN --json` with its stdout (and stderr) piped, for the caller to read or drop.
pub fn spawn_show_json(home: &Path, run_id: &str) -> std::process::Child {
    std::process::Command::new(BATON)
        .env("BATON_HOME", home)
        .env("BATON_OWNER_IDLE", OWNER_IDLE)
        .envs(database_env(home))
        .args(["show", run_id, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run baton show")
}

/// The pid of the owner process of `home`, as recorded in its lock file.
pub fn owner_pid(home: &Path) -> u32 {
    let text = std::fs::read_to_string(home.join("owner.lock")).expect("owner.lock exists once an owner started");
    text.trim().parse().unwrap_or_else(|e| panic!("owner.lock holds {text:?}: {e}"))
}

/// Send `signal` (e.g. "-KILL", "-STOP") to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The most a process has held resident so far (KiB; its high-water mark, `VmHWM`).
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

/// Wait (at most `bound`) until `condition` holds; panics naming `what` otherwise.
pub async fn wait_until(what: &str, bound: std::time::Duration, mut condition: impl FnMut() -> bool) {
    let give_up = std::time::Instant::now() + bound;
    while !condition() {
        assert!(std::time::Instant::now() < give_up, "{what}: not within {bound:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// This test binary running only the test `name` of `module` (its `module_path!()`) in a
/// process of its own, for a test that changes what a process shares (its resource
/// limits, its user): the other tests of this binary run in parallel in this one.
pub fn rerun(module: &str, name: &str) -> std::process::Command {
    // `module_path!()` starts with the crate's name; libtest's test names do not.
    let module = module.split_once("::").map_or("", |(_, inner)| inner);
    let mut command = std::process::Command::new(std::env::current_exe().expect("the test binary's path"));
    command.args(["--exact", &format!("{module}::{name}"), "--nocapture", "--test-threads=1"]);
    command
}

/// A `baton serve` driven with raw lines on its stdin, its stdout read line by line. The
/// results of the `tools/call` lines it sends are validated against the tools' output
/// schemas as they are received (see [`schemas`]).
pub struct RawMcp {
    pub child: std::process::Child,
    stdin: std::process::ChildStdin,
    answers: std::sync::mpsc::Receiver<String>,
    calls: Mutex<RawCalls>,
}

/// What [`RawMcp`] needs to validate answers: the tool of each `tools/call` id in flight,
/// the ids of `tools/list` requests, and the schemas of the last listing received.
#[derive(Default)]
struct RawCalls {
    tools: std::collections::HashMap<String, String>,
    listings: std::collections::HashSet<String>,
    schemas: Option<Arc<OutputSchemas>>,
}

/// A JSON-RPC id as the key of its answer: the server answers `2.0` as `2`.
fn id_key(id: &Value) -> String {
    match id.as_f64() {
        Some(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", n as i64),
        _ => id.to_string(),
    }
}

impl RawCalls {
    /// Note the requests in `line` (one message or a batch; anything else is ignored:
    /// fuzz tests send garbage on purpose).
    fn sent(&mut self, line: &[u8]) {
        let Ok(value) = serde_json::from_slice::<Value>(line) else { return };
        let messages = match value {
            Value::Array(batch) => batch,
            one => vec![one],
        };
        for message in messages {
            let (Some(id), Some(method)) = (message.get("id").filter(|id| !id.is_null()), message["method"].as_str()) else { continue };
            // A request reusing an id stands for whatever was sent with it before.
            let id = id_key(id);
            self.tools.remove(&id);
            self.listings.remove(&id);
            match (method, message["params"]["name"].as_str()) {
                ("tools/call", Some(tool)) => {
                    self.tools.insert(id, tool.to_string());
                }
                ("tools/list", _) => {
                    self.listings.insert(id);
                }
                _ => {}
            }
        }
    }

    /// Validate `message` if it answers a `tools/call` (panicking on a mismatch), or keep
    /// the schemas if it answers a `tools/list`.
    fn received(&mut self, message: &Value) {
        let Some(id) = message.get("id").map(id_key) else { return };
        let (tool, listing) = (self.tools.remove(&id), self.listings.remove(&id));
        let Some(result) = message.get("result") else { return };
        if listing {
            if let Some(tools) = result["tools"].as_array() {
                self.schemas = Some(Arc::new(OutputSchemas::from_tools(tools)));
            }
        } else if let Some(tool) = tool {
            let schemas = self.schemas.get_or_insert_with(schemas::published).clone();
            schemas.check_result(&tool, result);
        }
    }
}

impl RawMcp {
    /// Start `baton serve` on `home`, complete the handshake and read its tools' output
    /// schemas (`tools/list`), against which every tool result it receives is validated.
    pub fn start(home: &Path) -> RawMcp {
        RawMcp::handshake(RawMcp::spawn(home))
    }

    /// Like [`RawMcp::start`], with the server (and the owner it starts) under umask `mask`.
    /// Set in the child only: the umask is process-wide, and the other tests of this binary
    /// create files at the same time.
    pub fn start_under_umask(home: &Path, mask: u32) -> RawMcp {
        let mut command = RawMcp::command(home);
        // SAFETY: umask is async-signal-safe and only changes the child's file-creation mask.
        unsafe {
            command.pre_exec(move || {
                libc::umask(mask as libc::mode_t);
                Ok(())
            });
        }
        RawMcp::handshake(RawMcp::launch(command))
    }

    fn handshake(mut raw: RawMcp) -> RawMcp {
        raw.send(br#"{"jsonrpc":"2.0","id":"init","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#);
        let init = raw.recv(std::time::Duration::from_secs(10)).expect("initialize answered");
        assert_eq!(init["id"], "init", "{init}");
        raw.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        raw.send(br#"{"jsonrpc":"2.0","id":"schemas","method":"tools/list"}"#);
        let listed = raw.recv(std::time::Duration::from_secs(10)).expect("tools/list answered");
        assert_eq!(listed["id"], "schemas", "{listed}");
        raw
    }

    /// Start `baton serve` on `home`, without a handshake.
    pub fn spawn(home: &Path) -> RawMcp {
        RawMcp::launch(RawMcp::command(home))
    }

    fn command(home: &Path) -> std::process::Command {
        let mut command = std::process::Command::new(BATON);
        command
            .arg("serve")
            .env("BATON_HOME", home)
            .env("BATON_LOG", "error")
            .env("BATON_OWNER_IDLE", OWNER_IDLE)
            .envs(database_env(home))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        command
    }

    fn launch(mut command: std::process::Command) -> RawMcp {
        let mut child = command.spawn().expect("spawn baton serve");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        RawMcp { child, stdin, answers, calls: Mutex::default() }
    }

    /// Write `line` and a newline.
    pub fn send(&mut self, line: &[u8]) {
        use std::io::Write;
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).sent(line);
        self.stdin
            .write_all(line)
            .and_then(|()| self.stdin.write_all(b"\n"))
            .and_then(|()| self.stdin.flush())
            .expect("write to baton serve");
    }

    /// The next stdout line as JSON, or `None` if none comes within `wait`. A line that is
    /// not JSON fails the test: stdout carries only protocol messages.
    pub fn recv(&self, wait: std::time::Duration) -> Option<Value> {
        let line = self.answers.recv_timeout(wait).ok()?;
        let message: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout carried a non-protocol line {line:?}: {e}"));
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).received(&message);
        Some(message)
    }

    /// Call `tool` as request `id` and return its brief; a tool error or no answer within
    /// 20 s fails the test.
    pub fn tool_call_ok(&mut self, id: &str, tool: &str, arguments: &Value) -> Value {
        self.send(&RawMcp::tool_call(id, tool, arguments));
        let answer = self.recv(std::time::Duration::from_secs(20)).unwrap_or_else(|| panic!("no answer to {tool} {id}"));
        assert_eq!(answer["id"].as_str(), Some(id), "{tool}: {answer}");
        assert!(answer["result"].is_object() && answer["result"]["isError"] != true, "{tool}: {answer}");
        answer["result"]["structuredContent"].clone()
    }

    /// A tools/call line.
    pub fn tool_call(id: &str, tool: &str, arguments: &Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}))
            .unwrap()
    }
}

impl Drop for RawMcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
