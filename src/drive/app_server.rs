//! A client of `codex app-server`: newline-delimited JSON-RPC over the child's stdio. One
//! process serves every agent of a driver; each agent is a thread, and notifications are routed
//! to the agent by their `threadId`. Requests the server sends its client (approvals, forms)
//! are answered here: the driver is no human, so it declines, and says so in `declined`.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

/// Longest wait for an answer to one request (not a turn: turns end with a notification).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

type Pending = HashMap<u64, oneshot::Sender<Result<Value, String>>>;

struct Shared {
    pending: Mutex<Pending>,
    threads: Mutex<HashMap<String, mpsc::UnboundedSender<Value>>>,
    /// Server requests the driver declined: (method, thread id).
    declined: Mutex<Vec<(String, Option<String>)>>,
    /// When the account's exhausted rate-limit window resets (unix seconds), from the latest
    /// `account/rateLimits/updated`.
    resets_at: Mutex<Option<i64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a reader thread panicked; the maps are still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running `codex app-server`.
pub struct AppServer {
    child: tokio::sync::Mutex<Child>,
    stdin: tokio::sync::Mutex<ChildStdin>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
    writer: mpsc::UnboundedSender<String>,
}

impl AppServer {
    /// Start `codex app-server` and do the `initialize` handshake.
    pub async fn start(codex: &Path, cwd: &Path) -> anyhow::Result<Arc<AppServer>> {
        let mut command = Command::new(codex);
        command.arg("app-server").current_dir(cwd).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true);
        // If the driver dies (kill -9), its app-server must not go on playing turns nobody
        // supervises: the kernel kills it with its parent.
        #[cfg(target_os = "linux")]
        // SAFETY: prctl in the forked child before exec touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| anyhow::anyhow!("cannot start `{} app-server`: {e}", codex.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("codex app-server has no stdout"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("codex app-server has no stdin"))?;
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            threads: Mutex::default(),
            declined: Mutex::default(),
            resets_at: Mutex::default(),
        });
        let (writer, mut lines) = mpsc::unbounded_channel::<String>();
        let server = Arc::new(AppServer {
            child: tokio::sync::Mutex::new(child),
            stdin: tokio::sync::Mutex::new(stdin),
            next_id: AtomicU64::new(1),
            shared: Arc::clone(&shared),
            writer,
        });
        let out = Arc::clone(&server);
        tokio::spawn(async move {
            while let Some(line) = lines.recv().await {
                let mut stdin = out.stdin.lock().await;
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        });
        let reply = server.writer.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let Ok(message) = serde_json::from_str::<Value>(&line) else { continue };
                dispatch(&shared, &reply, message);
            }
            // EOF: every waiter learns the server is gone.
            for (_, waiter) in lock(&shared.pending).drain() {
                let _ = waiter.send(Err("codex app-server exited".into()));
            }
            lock(&shared.threads).clear();
        });
        server
            .request(
                "initialize",
                json!({"clientInfo": {"name": "baton-drive", "version": env!("CARGO_PKG_VERSION")}, "capabilities": {"experimentalApi": true}}),
            )
            .await?;
        server.send(json!({"jsonrpc": "2.0", "method": "initialized"}));
        Ok(server)
    }

    fn send(&self, message: Value) {
        let _ = self.writer.send(format!("{message}\n"));
    }

    /// A request and its `result`; a JSON-RPC error, EOF or timeout is an error.
    pub async fn request(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id, tx);
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(error))) => anyhow::bail!("codex app-server refused `{method}`: {error}"),
            Ok(Err(_)) => anyhow::bail!("codex app-server exited before answering `{method}`"),
            Err(_) => {
                lock(&self.shared.pending).remove(&id);
                anyhow::bail!("codex app-server did not answer `{method}` within {REQUEST_TIMEOUT:?}")
            }
        }
    }

    /// The notifications of `thread` from now on.
    pub fn subscribe(&self, thread: &str) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.shared.threads).insert(thread.to_string(), tx);
        rx
    }

    pub fn unsubscribe(&self, thread: &str) {
        lock(&self.shared.threads).remove(thread);
    }

    /// Server requests declined so far (method, thread).
    pub fn declined(&self) -> Vec<(String, Option<String>)> {
        lock(&self.shared.declined).clone()
    }

    /// When the rate limit Codex last reported as reached resets (unix seconds), if it said.
    pub fn rate_limit_resets_at(&self) -> Option<i64> {
        *lock(&self.shared.resets_at)
    }

    /// Stop the server: EOF on stdin, then a kill if it lingers.
    pub async fn shutdown(&self) {
        let mut child = self.child.lock().await;
        let _ = self.stdin.lock().await.shutdown().await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}

/// Route one message from the server: a response to its waiter, a notification to its
/// thread, a server request answered at once.
fn dispatch(shared: &Shared, reply: &mpsc::UnboundedSender<String>, message: Value) {
    let method = message.get("method").and_then(Value::as_str).map(str::to_string);
    match (message.get("id").cloned(), method) {
        (Some(id), Some(method)) => {
            let params = message.get("params").cloned().unwrap_or(Value::Null);
            let thread = params.get("threadId").and_then(Value::as_str).map(str::to_string);
            lock(&shared.declined).push((method.clone(), thread.clone()));
            let answer = match decline(&method) {
                Some(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                None => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "baton drive answers no such request"}}),
            };
            let _ = reply.send(format!("{answer}\n"));
            if let Some(thread) = thread
                && let Some(tx) = lock(&shared.threads).get(&thread)
            {
                let _ = tx.send(json!({"method": "baton/declined", "params": {"request": method}}));
            }
        }
        (Some(id), None) => {
            let Some(id) = id.as_u64() else { return };
            let Some(waiter) = lock(&shared.pending).remove(&id) else { return };
            let result = match message.get("error") {
                Some(error) => Err(error.get("message").and_then(Value::as_str).unwrap_or("error").to_string()),
                None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
            };
            let _ = waiter.send(result);
        }
        (None, Some(method)) if method == "account/rateLimits/updated" => {
            // The window that is used up (100%) names the reset to wait for; else none.
            let limits = &message["params"]["rateLimits"];
            let reset = ["primary", "secondary"]
                .iter()
                .filter(|w| limits[**w]["usedPercent"].as_i64().is_some_and(|p| p >= 100))
                .filter_map(|w| limits[*w]["resetsAt"].as_i64())
                .max();
            *lock(&shared.resets_at) = reset;
        }
        (None, Some(_)) => {
            let thread = message["params"]["threadId"].as_str().map(str::to_string);
            if let Some(thread) = thread
                && let Some(tx) = lock(&shared.threads).get(&thread)
            {
                let _ = tx.send(message);
            }
        }
        (None, None) => {}
    }
}

/// The driver's answer to a request Codex sends its client: decline every approval (commands,
/// file changes, permissions outside the default sandbox, MCP tools that ask), every form.
fn decline(method: &str) -> Option<Value> {
    match method {
        "item/commandExecution/requestApproval" | "item/fileChange/requestApproval" => Some(json!({"decision": "decline"})),
        "applyPatchApproval" | "execCommandApproval" => Some(json!({"decision": "denied"})),
        "mcpServer/elicitation/request" => Some(json!({"action": "decline", "content": null, "_meta": null})),
        "item/tool/requestUserInput" => Some(json!({"answers": {}})),
        _ => None,
    }
}
