//! `cargo bench --bench fanout_bench`: a 100-task plan worked by 4 concurrent sessions (4
//! real `baton serve` processes acting as separate agents on one database): tasks per
//! second through implement, independent review and test, and the latency of claims.
//! Set BATON_BENCH_DIR to measure on a particular disk (default: $TMPDIR/baton-bench).

use rmcp::model::{CallToolRequestParams, MetaObject, RequestMetaObject};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use support::{Stats, report};

const BATON: &str = env!("CARGO_BIN_EXE_baton");
const TASKS: usize = 100;
const SESSIONS: usize = 4;

fn main() {
    // Not under the checkout: runs started inside a git repository get worktrees there.
    let base = std::env::var_os("BATON_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("baton-bench"));
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    runtime.block_on(async {
        let home = dir.path().join("home");
        let mut agents = Vec::new();
        for i in 0..SESSIONS {
            agents.push(Arc::new(Agent::start(&home, &format!("agent-{i}")).await));
        }
        let brief = agents[0].call("start_workflow", json!({"goal": "bench", "template": "parallel"})).await.unwrap();
        let run_id = brief["run_id"].as_str().unwrap().to_string();
        // A plan with a little structure: every fifth task waits for the one before it.
        let tasks: Vec<Value> = (0..TASKS)
            .map(|i| {
                let deps: Vec<String> = if i % 5 == 4 { vec![format!("t{}", i - 1)] } else { vec![] };
                json!({"id": format!("t{i}"), "title": format!("task {i}"), "depends_on": deps})
            })
            .collect();
        let plan = json!({"run_id": run_id, "expected_version": 1, "outcome": "planned", "output": "plan", "plan": {"tasks": tasks}});
        agents[0].call("advance", plan).await.unwrap();

        let started = Instant::now();
        let workers: Vec<_> = agents.iter().map(|agent| tokio::spawn(work(Arc::clone(agent), run_id.clone()))).collect();
        let mut claims = Vec::new();
        let mut reports = Vec::new();
        for worker in workers {
            let (c, r) = worker.await.unwrap();
            claims.extend(c);
            reports.extend(r);
        }
        let elapsed = started.elapsed();
        println!("fan-out: {TASKS} tasks x 3 steps by {SESSIONS} sessions in {:.2} s", elapsed.as_secs_f64());
        println!(
            "  tasks/s: {:.1} ({:.1} step reports/s)",
            TASKS as f64 / elapsed.as_secs_f64(),
            reports.len() as f64 / elapsed.as_secs_f64()
        );
        report("  claim latency (successful claims)", &Stats::of(claims));
        report("  task advance latency", &Stats::of(reports));
        for agent in agents {
            if let Ok(agent) = Arc::try_unwrap(agent) {
                agent.client.cancel().await.ok();
            }
        }
    });
}

/// Claim and report until the run has joined; returns the latencies of claims and reports.
async fn work(agent: Arc<Agent>, run_id: String) -> (Vec<Duration>, Vec<Duration>) {
    let (mut claims, mut reports) = (Vec::new(), Vec::new());
    loop {
        let t = Instant::now();
        match agent.call("resume", json!({"run_id": run_id, "claim": "next"})).await {
            Ok(brief) => {
                claims.push(t.elapsed());
                let outcome = match brief["step"].as_str().unwrap() {
                    "implement" => "implemented",
                    "review" => "approved",
                    _ => "passed",
                };
                let t = Instant::now();
                let report = json!({"run_id": run_id, "task": brief["task"], "lease_token": brief["lease_token"], "outcome": outcome, "output": "done"});
                agent.call("advance", report).await.unwrap();
                reports.push(t.elapsed());
            }
            Err(_) => {
                let state = agent.call("resume", json!({"run_id": run_id})).await.unwrap();
                if state["brief"]["step"] == "integrate" {
                    return (claims, reports);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// One session: a `baton serve` process whose calls carry a Codex-like thread id.
struct Agent {
    client: RunningService<RoleClient, ()>,
    thread: String,
}

impl Agent {
    async fn start(home: &Path, thread: &str) -> Agent {
        let cmd = tokio::process::Command::new(BATON).configure(|c| {
            // Outside any git repository: a bench must not make worktrees in the checkout.
            c.arg("serve").env("BATON_HOME", home).env("BATON_LOG", "error").current_dir(home.parent().unwrap_or(Path::new("/")));
        });
        let client = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
        Agent { client, thread: thread.to_string() }
    }

    /// Structured content on success, the error object on a tool error.
    async fn call(&self, tool: &str, args: Value) -> Result<Value, Value> {
        let mut params = CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().unwrap().clone());
        params.meta = Some(RequestMetaObject(MetaObject(json!({"threadId": self.thread}).as_object().unwrap().clone())));
        let result = self.client.call_tool(params).await.unwrap();
        let data = result.structured_content.unwrap_or_default();
        if result.is_error == Some(true) { Err(data["error"].clone()) } else { Ok(data) }
    }
}
