//! A `codex exec` harness: the real pinned Codex CLI, a fresh `CODEX_HOME` whose only model
//! provider is a [`ModelServer`] on 127.0.0.1, and baton registered the way a user gets it
//! (`baton install --codex-home ... --home ...`).
//!
//! The config names a model and a provider, and turns off what would reach the network
//! (plugin marketplaces, analytics); it says nothing about approvals or the sandbox, so a test
//! sees what a user's non-interactive run sees.

use super::app_server::AppServer;
use super::codex::{Finished, run, run_within};
use super::model_server::{ModelServer, Script};
use crate::support::BATON;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The model Codex is told it talks to. `gpt-5.5` is in 0.169's bundled model catalog with
/// classic function tools and `supports_search_tool`, so MCP tools are deferred behind
/// `tool_search` exactly as for users; an unknown slug would get fallback metadata (every MCP
/// tool sent up front, no `tool_search`), and the newer catalog models use code mode (tools
/// only reachable from JavaScript), which a script cannot drive as plainly.
pub const MODEL: &str = "gpt-5.5";

/// Upper bound for one `codex exec` run: starting baton, a few scripted turns, and exiting.
const EXEC_TIMEOUT: Duration = Duration::from_secs(120);

/// A Codex home with baton installed, pointed at a scripted model.
pub struct ExecHarness {
    codex: PathBuf,
    pub model: ModelServer,
    codex_home: tempfile::TempDir,
    baton_parent: tempfile::TempDir,
    work: tempfile::TempDir,
}

/// One finished `codex exec` run.
pub struct ExecRun {
    pub finished: Finished,
    /// The `--json` event stream (JSONL on stdout).
    pub events: Vec<Value>,
}

impl ExecRun {
    /// The session id from `thread.started`, for `codex exec resume`.
    pub fn thread_id(&self) -> String {
        let started = self.events.iter().find(|e| e["type"] == "thread.started");
        started.and_then(|e| e["thread_id"].as_str()).unwrap_or_else(|| panic!("no thread.started event:\n{}", self.describe())).to_string()
    }

    /// Completed items of one type (`mcp_tool_call`, `agent_message`, `error`, ...).
    pub fn items(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == "item.completed" && e["item"]["type"] == kind).map(|e| &e["item"]).collect()
    }

    pub fn describe(&self) -> String {
        self.finished.describe()
    }
}

/// Validate the structured content of every baton call Codex reports (`mcp_tool_call`
/// items) against baton's published output schemas.
fn check_baton_results(events: &[Value]) {
    let schemas = crate::support::schemas::published();
    let calls = events.iter().filter(|e| e["type"] == "item.completed" && e["item"]["type"] == "mcp_tool_call").map(|e| &e["item"]);
    for call in calls.filter(|c| c["server"] == "baton") {
        let (Some(tool), Some(structured)) = (call["tool"].as_str(), call["result"].get("structured_content")) else { continue };
        schemas.check(tool, Some(structured), structured.get("error").is_some());
    }
}

impl ExecHarness {
    /// Write the config, start the model server with `script`, and `baton install` into the
    /// fresh Codex home (which keeps the provider settings and adds `[mcp_servers.baton]`).
    pub fn new(codex: &Path, script: Script) -> ExecHarness {
        let model = ModelServer::start(script);
        let harness = ExecHarness {
            codex: codex.to_path_buf(),
            model,
            codex_home: tempfile::tempdir().unwrap(),
            baton_parent: tempfile::tempdir().unwrap(),
            work: tempfile::tempdir().unwrap(),
        };
        let config = format!(
            "# Written by baton's codex_exec test: the only model is the scripted one on 127.0.0.1.\n\
             model = \"{MODEL}\"\n\
             model_provider = \"scripted\"\n\
             \n\
             [model_providers.scripted]\n\
             name = \"scripted model\"\n\
             base_url = \"{}\"\n\
             wire_api = \"responses\"\n\
             # A failed request is a test failure, not something to retry for minutes.\n\
             request_max_retries = 0\n\
             stream_max_retries = 0\n\
             \n\
             # No network: otherwise Codex resolves github.com and chatgpt.com (plugin marketplaces)\n\
             # and ab.chatgpt.com (analytics) on every start.\n\
             [analytics]\n\
             enabled = false\n\
             \n\
             [features]\n\
             plugins = false\n",
            harness.model.base_url()
        );
        std::fs::write(harness.codex_home().join("config.toml"), config).unwrap();
        harness.install(&[]);
        harness
    }

    /// `baton install` into this Codex home and baton home, with `extra` arguments (e.g.
    /// `--database-url`), as a user registers baton.
    pub fn install(&self, extra: &[&str]) {
        let install = run(
            Command::new(BATON)
                .arg("install")
                .arg("--codex-home")
                .arg(self.codex_home())
                .arg("--home")
                .arg(self.baton_home())
                .args(extra)
                .env_remove("BATON_HOME")
                .env_remove("CODEX_HOME"),
            &format!("baton install {}", extra.join(" ")),
        );
        assert!(install.status.success(), "baton install failed:\n{}", install.describe());
    }

    pub fn codex_home(&self) -> &Path {
        self.codex_home.path()
    }

    /// The database directory baton was registered with (created by `baton serve`).
    pub fn baton_home(&self) -> PathBuf {
        self.baton_parent.path().join("baton-home")
    }

    /// The working directory Codex runs in (not a git repository).
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    /// `codex exec --json PROMPT` to completion.
    pub fn exec(&self, prompt: &str) -> ExecRun {
        self.run_exec(&[], prompt, EXEC_TIMEOUT)
    }

    /// `codex exec --json PROMPT` to completion within `limit` (sessions with sub-agents).
    pub fn exec_within(&self, prompt: &str, limit: Duration) -> ExecRun {
        self.run_exec(&[], prompt, limit)
    }

    /// Record the work directory as trusted, as Codex does when a user answers its "trust
    /// this folder" prompt (`[projects."<dir>"] trust_level = "trusted"`): Codex's default
    /// sandbox there is then `workspace-write` instead of `read-only`. Nothing else changes.
    pub fn trust_work(&self) {
        let path = self.codex_home().join("config.toml");
        let mut config = std::fs::read_to_string(&path).unwrap();
        let work = super::codex::canonical(self.work());
        config.push_str(&format!("\n[projects.{:?}]\ntrust_level = \"trusted\"\n", work.to_string_lossy()));
        std::fs::write(path, config).unwrap();
    }

    fn run_exec(&self, subcommand: &[&str], prompt: &str, limit: Duration) -> ExecRun {
        let what = format!("codex exec {}", subcommand.join(" "));
        let finished = run_within(
            Command::new(&self.codex)
                .arg("exec")
                .args(subcommand)
                .args(["--json", "--skip-git-repo-check"])
                .arg(prompt)
                .env("CODEX_HOME", self.codex_home())
                .env_remove("BATON_HOME")
                .env_remove("OPENAI_API_KEY")
                .env_remove("CODEX_API_KEY")
                .current_dir(self.work()),
            &what,
            limit,
        );
        let events: Vec<Value> =
            String::from_utf8_lossy(&finished.stdout).lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
        check_baton_results(&events);
        ExecRun { finished, events }
    }

    /// `codex app-server` on this Codex home, initialized, in the work directory: the client
    /// side of Codex's interactive front ends, with the same scripted model.
    pub fn app_server(&self) -> AppServer {
        let mut app = AppServer::start(&self.codex, self.codex_home(), self.work());
        app.initialize();
        app
    }

    /// `baton --home H ARGS`: the database as the terminal sees it, with Codex gone.
    pub fn baton(&self, args: &[&str]) -> Finished {
        run(
            Command::new(BATON).arg("--home").arg(self.baton_home()).args(args).env_remove("BATON_HOME").env_remove("CODEX_HOME"),
            &format!("baton {}", args.join(" ")),
        )
    }

    /// `baton runs --json`, parsed.
    pub fn runs(&self) -> Vec<Value> {
        let parsed = self.baton_json(&["runs", "--json"]);
        parsed["runs"].as_array().cloned().unwrap_or_else(|| panic!("no runs array: {parsed:#}"))
    }

    /// `baton --home H ARGS` that must succeed and print JSON, parsed.
    pub fn baton_json(&self, args: &[&str]) -> Value {
        let done = self.baton(args);
        assert!(done.status.success(), "baton {args:?} failed:\n{}", done.describe());
        serde_json::from_slice(&done.stdout).unwrap_or_else(|e| panic!("baton {args:?} printed no JSON ({e}):\n{}", done.describe()))
    }
}
