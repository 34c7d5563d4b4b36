//! Scripted Codex agents for `baton drive`: a model that plays each role from the unit line
//! of the driver's prompt (`BATON-DRIVE run=... step=... role=... task=...`), as a model
//! following that prompt does. The drive tests and the drive bench share it.

use super::exec::ExecHarness;
use super::model_server::{ModelRequest, Output, Script, output_text};
use serde_json::{Value, json};

/// What the unit line of the driver's prompt says: run, step, role, task.
#[derive(Clone, Debug)]
pub struct Unit {
    pub run: String,
    pub step: String,
    pub role: String,
    pub task: Option<String>,
}

pub fn unit_of(request: &ModelRequest) -> Option<Unit> {
    let text = request.message_text();
    let line = text.lines().find(|l| l.starts_with("BATON-DRIVE "))?;
    let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).map(str::to_string);
    let task = field("task").filter(|t| t != "-");
    Some(Unit { run: field("run")?, step: field("step")?, role: field("role")?, task })
}

/// How the scripted agents behave, per unit: `Some(outputs)` overrides the normal play.
pub type Quirk = Box<dyn Fn(&Unit, &ModelRequest) -> Option<Vec<Output>> + Send>;

/// A role player: tool_search, then `resume` (claim for a task), then `advance` with the
/// forward outcome of its brief (a plan of `tasks` for a fan-out), then a closing message.
pub fn role_player(quirk: Quirk, tasks: Vec<&'static str>) -> Script {
    Box::new(move |request: &ModelRequest| {
        if !request.is_turn() {
            return None;
        }
        let unit = unit_of(request)?;
        if let Some(outputs) = quirk(&unit, request) {
            return Some(outputs);
        }
        if request.output_for("search").is_none() {
            return Some(vec![Output::tool_search("search", "baton", None)]);
        }
        // A call cut off when its driver died (a resumed thread shows it as aborted) is made
        // again, as a model would.
        let answered = |id: &str| request.output_for(id).is_some_and(|o| output_text(o).contains("Output:"));
        let Some(brief_id) = ["brief", "brief-again"].into_iter().find(|id| answered(id)) else {
            let id = if request.output_for("brief").is_none() { "brief" } else { "brief-again" };
            if request.output_for(id).is_some() {
                return Some(vec![Output::text("baton's brief could not be read twice; stopping.")]);
            }
            let args = match &unit.task {
                Some(task) => json!({"run_id": unit.run, "claim": task}),
                None => json!({"run_id": unit.run}),
            };
            return Some(vec![Output::mcp_call(id, "baton", "resume", args)]);
        };
        if request.output_for("report").is_none() {
            let got = request.result_of(brief_id);
            let brief = if got["brief"].is_object() { got["brief"].clone() } else { got.clone() };
            let outcomes: Vec<String> =
                brief["outcomes"].as_array().into_iter().flatten().filter_map(|o| o["outcome"].as_str().map(String::from)).collect();
            let preferred = ["approved", "passed", "planned", "implemented", "designed", "done"];
            let outcome = preferred
                .iter()
                .find(|p| outcomes.iter().any(|o| o == *p))
                .map(|p| p.to_string())
                .or_else(|| outcomes.first().cloned())
                .unwrap_or_default();
            let mut args = json!({"run_id": unit.run, "outcome": outcome, "output": format!("{} ({}) done by the scripted agent", unit.step, unit.role)});
            match &unit.task {
                Some(task) => {
                    args["task"] = json!(task);
                    args["lease_token"] = brief["lease_token"].clone();
                }
                None => args["expected_version"] = brief["version"].clone(),
            }
            if outcome == "planned" && !tasks.is_empty() {
                let plan: Vec<Value> =
                    tasks.iter().map(|t| json!({"id": t, "title": format!("Task {t}"), "description": "work", "depends_on": []})).collect();
                args["plan"] = json!({"tasks": plan});
            }
            return Some(vec![Output::mcp_call("report", "baton", "advance", args)]);
        }
        Some(vec![Output::text("Reported to baton.")])
    })
}

pub fn no_quirk() -> Quirk {
    Box::new(|_, _| None)
}

/// Mark the work directory trusted in the Codex home, as a user who answered Codex's "trust
/// this folder?" has it: Codex then gives threads there its default `workspace-write` sandbox
/// (an untrusted folder gets `read-only`). Approvals stay Codex's default.
pub fn trust(harness: &ExecHarness) {
    let config = harness.codex_home().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    let dir = super::codex::canonical(harness.work());
    text.push_str(&format!("\n[projects.\"{}\"]\ntrust_level = \"trusted\"\n", dir.display()));
    std::fs::write(&config, text).unwrap();
}

/// `baton drive --json --codex CODEX ARGS` in the harness's repository, for its home and
/// Codex home, with stdout piped (one JSON event per line) and no API keys passed on.
pub fn drive_command(harness: &ExecHarness, codex: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(super::BATON);
    command
        .arg("--home")
        .arg(harness.baton_home())
        .arg("drive")
        .args(["--json", "--codex"])
        .arg(codex)
        .args(args)
        .env("CODEX_HOME", harness.codex_home())
        .env_remove("BATON_HOME")
        .env_remove("OPENAI_API_KEY")
        .env_remove("CODEX_API_KEY")
        .current_dir(harness.work())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    command
}
