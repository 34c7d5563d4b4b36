//! One Codex-like session for the benches: a `baton serve` process and rmcp's MCP client.

use super::Stats;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const BATON: &str = env!("CARGO_BIN_EXE_baton");

pub struct Session {
    pub client: RunningService<RoleClient, ()>,
    pub pid: u32,
}

impl Session {
    /// Start `baton serve` in `cwd` with `env` added (e.g. BATON_HOME, BATON_DATABASE_URL).
    pub async fn start(env: &[(String, String)], cwd: &Path) -> Session {
        let env = env.to_vec();
        let cwd: PathBuf = cwd.to_path_buf();
        let cmd = tokio::process::Command::new(BATON).configure(move |c| {
            c.arg("serve").env("BATON_LOG", "error").envs(env.iter().map(|(k, v)| (k, v))).current_dir(&cwd);
        });
        let transport = TokioChildProcess::new(cmd).unwrap();
        let pid = transport.id().unwrap();
        let client = ().serve(transport).await.unwrap();
        Session { client, pid }
    }

    pub async fn stop(self) {
        let _ = self.client.cancel().await;
    }

    /// Call `tool`; any error fails the bench.
    pub async fn call(&self, tool: &str, args: Value) -> Value {
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().unwrap().clone());
        let result = self.client.call_tool(params).await.unwrap();
        assert_ne!(result.is_error, Some(true), "{tool}: {:?}", result.structured_content);
        result.structured_content.unwrap()
    }

    /// Time `n` calls of `f`.
    pub async fn timed<F, Fut, T>(&self, n: usize, f: F) -> Stats
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            f().await;
            samples.push(t.elapsed());
        }
        Stats::of(samples)
    }

    /// A run of a two-step loop that never ends by itself, for advancing without limit.
    pub async fn start_run(&self) -> Value {
        let template = json!({"name": "bench-loop", "steps": [
            {"name": "work", "role": "implementer", "max_visits": 1000000, "outcomes": {"next": "check"}},
            {"name": "check", "role": "reviewer", "outcomes": {"next": "work", "finish": "done"}}]});
        self.call("start_workflow", json!({"goal": "benchmark", "template_definition": template})).await
    }

    /// Advance the run of `brief` by one step; the new brief.
    pub async fn advance(&self, brief: &Value) -> Value {
        let output = "Implemented the change in src/lib.rs; 12 tests pass.";
        self.call("advance", json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": "next", "output": output}))
            .await
    }
}
