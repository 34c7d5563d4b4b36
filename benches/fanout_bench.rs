//! `cargo bench --bench fanout_bench`: a 100-task plan worked by 4 concurrent sessions (4
//! real `baton serve` processes acting as separate agents on one database): tasks per
//! second through implement, independent review and test, and the latency of claims.
//! Set BATON_BENCH_DIR to measure on a particular disk (default: $TMPDIR/baton-bench).

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The tests' support module: each bench uses a part of it (the test binary uses all of it,
// and its dead code is checked there).
#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use support::Server;
use support::bench::{self, Stats, report};

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
            // Outside any git repository: a bench must not make worktrees in the checkout.
            let cwd = home.parent().unwrap_or(Path::new("/"));
            agents.push(Arc::new(bench::session(&home, cwd, Some(&format!("agent-{i}")), &[]).await));
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
                agent.stop().await;
            }
        }
    });
}

/// Claim and report until the run has joined; returns the latencies of claims and reports.
async fn work(agent: Arc<Server>, run_id: String) -> (Vec<Duration>, Vec<Duration>) {
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
