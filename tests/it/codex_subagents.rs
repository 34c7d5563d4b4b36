//! Parallel work that lands, through the real Codex CLI (`codex exec`, pinned) and Codex's own
//! sub-agents: a lead thread plans a `parallel` run, spawns sub-agents (`spawn_agent`, loaded
//! from Codex's deferred `multi_agent_v1` tools with `tool_search`) that implement the tasks in
//! their worktrees with shell commands and never commit (one tries, and Codex's sandbox refuses
//! it), other sub-agents review and test; baton commits each step's code on the task branch and
//! merges what exists at the join.
//!
//! Codex runs with its default sandbox and approvals: the config names only the scripted model's
//! provider, and the repository is trusted the way Codex records a user's "trust this folder"
//! answer, which makes Codex's default sandbox there `workspace-write` (untrusted, `codex exec`
//! defaults to `read-only`, where an agent cannot write a file at all; the last test measures
//! that). Every sub-agent is its own Codex thread with its own baton tools, so each of its calls
//! carries its own `_meta.threadId`: baton's identity for independent steps. The scripted model
//! routes each request by its thread (`thread-id` header) and the message the sub-agent was
//! spawned with.

use crate::support;
use crate::support::codex::find_codex;
use crate::support::exec::{ExecHarness, ExecRun};
use crate::support::git::git;
use crate::support::model_server::{ModelRequest, Output, Step, by_thread, output_text, step};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Upper bound for one lead session with its sub-agents.
const SESSION_TIMEOUT: Duration = Duration::from_secs(300);
/// How a spawn message names the sub-agent's part: `MARK <role> <task> <run_id>`.
const MARK: &str = "BATON-TEST-PART";
/// Prompts of the two lead sessions.
const FIRST: &str = "Use baton with sub-agents to add the left and right features.";
const SECOND: &str = "Use baton with sub-agents to document the features.";

fn baton(call_id: &str, tool: &str, arguments: Value) -> Output {
    Output::mcp_call(call_id, "baton", tool, arguments)
}

/// A call of one of Codex's multi-agent tools (`spawn_agent`, `wait_agent`, `close_agent`).
fn agents_tool(call_id: &str, tool: &str, arguments: Value) -> Output {
    Output::FunctionCall { call_id: call_id.into(), namespace: Some("multi_agent_v1".into()), name: tool.into(), arguments }
}

/// A shell command through Codex's `exec_command`, sandboxed like any agent command.
fn shell(call_id: &str, workdir: &str, cmd: &str) -> Output {
    Output::FunctionCall {
        call_id: call_id.into(),
        namespace: None,
        name: "exec_command".into(),
        arguments: json!({"cmd": cmd, "workdir": workdir}),
    }
}

/// The `agent_id` a `spawn_agent` call returned (`{"agent_id", "nickname"}`).
fn spawned(request: &ModelRequest, call_id: &str) -> String {
    let item = request.output_for(call_id).unwrap_or_else(|| panic!("no output of {call_id}"));
    let text = output_text(item);
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("spawn_agent answered {text:?}: {e}"));
    assert!(value["nickname"].is_string(), "spawn_agent gives a nickname: {value}");
    value["agent_id"].as_str().unwrap_or_else(|| panic!("no agent_id in {value}")).to_string()
}

/// The spawn message for a sub-agent playing `role` on `task` of `run_id`.
fn part(role: &str, task: &str, run_id: &str) -> String {
    format!(
        "Use baton. {MARK} {role} {task} {run_id} . You are the {role} of task `{task}` of run {run_id}: call `resume` with run_id \"{run_id}\" and claim \"{task}\", work in the brief's workdir, and report with `advance`. Do not commit; baton records your changes."
    )
}

/// Which part a request's thread plays, from its messages: `(role, task, run_id)`.
fn part_of(request: &ModelRequest) -> Option<(String, String, String)> {
    let text = request.message_text();
    let rest = text.split(MARK).nth(1)?;
    let mut words = rest.split_whitespace();
    Some((words.next()?.to_string(), words.next()?.to_string(), words.next()?.to_string()))
}

/// What the sub-agent implementing `task` writes (no git): files, or nothing for `noop`.
fn writes(task: &str) -> &'static str {
    match task {
        "left" => "printf 'the left feature\\n' > left.txt && printf 'shared by left\\n' >> README.md",
        "right" => "mkdir -p src && printf 'pub fn right() {}\\n' > src/right.rs",
        "docs" => "printf '# Features\\nleft and right\\n' > FEATURES.md",
        _ => "",
    }
}

/// The steps of a sub-agent: find baton's tools, claim its task, play its role, report.
fn sub_agent(role: String, task: String, run_id: String) -> Vec<Step> {
    let search = step(|_| vec![Output::tool_search("search", "baton", None)]);
    let claim_id = format!("claim-{role}-{task}");
    let claim = {
        let (run_id, task, claim_id) = (run_id.clone(), task.clone(), claim_id.clone());
        let wanted = if role == "tester" { "next".to_string() } else { task };
        step(move |_| vec![baton(&claim_id, "resume", json!({"run_id": run_id, "claim": wanted}))])
    };
    let report = |brief_call: String, outcome: &'static str, output: String, call_id: String| {
        step(move |request: &ModelRequest| {
            let brief = request.result_of(&brief_call);
            let arguments = json!({"run_id": brief["run_id"], "task": brief["task"], "lease_token": brief["lease_token"], "outcome": outcome, "output": output});
            vec![baton(&call_id, "advance", arguments)]
        })
    };
    let done = step(|_| vec![Output::text("My part is reported to baton.")]);
    match role.as_str() {
        "implementer" => {
            let write = {
                let (claim_id, task) = (claim_id.clone(), task.clone());
                step(move |request: &ModelRequest| {
                    let brief = request.result_of(&claim_id);
                    assert_eq!((brief["role"].as_str(), brief["task"].as_str()), (Some("implementer"), Some(task.as_str())), "{brief:#}");
                    let workdir = brief["workdir"].as_str().unwrap_or_default().to_string();
                    // `left` also tries to commit: what Codex's sandbox allows is measured.
                    let commit = if task == "left" {
                        "; git add -A; echo git-add-exit=$?; git commit -qm 'left by hand'; echo git-commit-exit=$?"
                    } else {
                        ""
                    };
                    let cmd = format!("{}{commit}; echo wrote", if writes(&task).is_empty() { "true" } else { writes(&task) });
                    vec![shell(&format!("write-{task}"), &workdir, &cmd)]
                })
            };
            let output = format!("Implemented `{task}` in the worktree with shell commands; not committed.");
            vec![search, claim, write, report(claim_id, "implemented", output, format!("report-implementer-{task}")), done]
        }
        "reviewer" => {
            let read = {
                let claim_id = claim_id.clone();
                step(move |request: &ModelRequest| {
                    let brief = request.result_of(&claim_id);
                    assert_eq!(brief["role"], "reviewer", "{brief:#}");
                    let workdir = brief["workdir"].as_str().unwrap_or_default().to_string();
                    vec![shell("read-diff", &workdir, "git log --format='%h %an <%ae> | %cn' -3 && git show --stat HEAD")]
                })
            };
            let output = format!("Reviewed `{task}`: the change is right.");
            vec![search, claim, read, report(claim_id, "approved", output, format!("report-reviewer-{task}")), done]
        }
        _ => {
            let second_claim = {
                let run_id = run_id.clone();
                step(move |_| vec![baton("claim-tester-2", "resume", json!({"run_id": run_id, "claim": "next"}))])
            };
            vec![
                search,
                claim,
                report(claim_id, "passed", "Tests pass on the task's branch.".into(), "report-tester-1".into()),
                second_claim,
                report("claim-tester-2".into(), "passed", "Tests pass on the task's branch.".into(), "report-tester-2".into()),
                done,
            ]
        }
    }
}

/// The lead of the first session: plan two tasks, spawn two implementers, two reviewers
/// and a tester, wait for each, then play the join step and close the sub-agents.
fn first_lead() -> Vec<Step> {
    let plan = json!({"tasks": [
        {"id": "left", "title": "The left feature", "description": "Add left.txt and a line to README.md"},
        {"id": "right", "title": "The right feature", "description": "Add src/right.rs"}]});
    let mut steps = lead_start("Add the left and right features", plan);
    for (role, tasks) in [("implementer", ["left", "right"]), ("reviewer", ["left", "right"])] {
        steps.push(spawn_step(role, &tasks));
        for task in tasks {
            steps.push(wait_step(role, task));
        }
    }
    steps.push(spawn_step("tester", &["left"]));
    steps.push(wait_step("tester", "left"));
    steps.extend(lead_integrate());
    steps.push(step(|request| {
        let parts = ["implementer-left", "implementer-right", "reviewer-left", "reviewer-right", "tester-left"];
        parts
            .iter()
            .map(|p| agents_tool(&format!("close-{p}"), "close_agent", json!({"target": spawned(request, &format!("spawn-{p}"))})))
            .collect()
    }));
    steps.push(step(|_| vec![Output::text("The run is complete.")]));
    steps
}

/// `tool_search` for baton, `start_workflow`, the plan, `tool_search` for sub-agents.
fn lead_start(goal: &'static str, plan: Value) -> Vec<Step> {
    vec![
        step(|_| vec![Output::tool_search("search-baton", "baton", None)]),
        step(move |_| vec![baton("start", "start_workflow", json!({"goal": goal, "template": "parallel"}))]),
        step(move |request| {
            let brief = request.result_of("start");
            vec![baton(
                "plan",
                "advance",
                json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": "planned", "output": "Two tasks.", "plan": plan}),
            )]
        }),
        step(|_| vec![Output::tool_search("search-agents", "spawn sub-agents", None)]),
    ]
}

/// Spawn one sub-agent per task for `role`, in one turn.
fn spawn_step(role: &'static str, tasks: &[&'static str]) -> Step {
    let tasks = tasks.to_vec();
    step(move |request| {
        let run_id = run_of(request);
        tasks
            .iter()
            .map(|task| agents_tool(&format!("spawn-{role}-{task}"), "spawn_agent", json!({"message": part(role, task, &run_id)})))
            .collect()
    })
}

/// Wait for the sub-agent spawned for `role` on `task`.
fn wait_step(role: &'static str, task: &'static str) -> Step {
    step(move |request| {
        let id = spawned(request, &format!("spawn-{role}-{task}"));
        vec![agents_tool(&format!("wait-{role}-{task}"), "wait_agent", json!({"targets": [id], "timeout_ms": 240_000}))]
    })
}

/// The run id, from the lead's plan.
fn run_of(request: &ModelRequest) -> String {
    request.result_of("plan")["run_id"].as_str().unwrap_or_default().to_string()
}

/// The lead reads the run (its join step, the merge done) and plays the join step.
fn lead_integrate() -> Vec<Step> {
    vec![
        step(|request| vec![baton("briefing", "resume", json!({"run_id": run_of(request)}))]),
        step(|request| {
            let brief = request.result_of("briefing")["brief"].clone();
            assert_eq!(brief["step"], "integrate", "{brief:#}");
            vec![baton(
                "integrate",
                "advance",
                json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": "passed", "output": "Integrated tree tested."}),
            )]
        }),
    ]
}

/// The lead of the second session: two implementers (`noop` writes nothing), then the lead
/// reviews and tests both tasks itself (it implemented neither), and plays the join step.
fn second_lead() -> Vec<Step> {
    let plan = json!({"tasks": [
        {"id": "docs", "title": "Document the features", "description": "Write FEATURES.md"},
        {"id": "noop", "title": "Check the docs need nothing else", "description": "Change nothing unless needed"}]});
    let mut steps = lead_start("Document the features", plan);
    steps.push(spawn_step("implementer", &["docs", "noop"]));
    steps.push(wait_step("implementer", "docs"));
    steps.push(wait_step("implementer", "noop"));
    for (i, (task, outcome)) in [("docs", "approved"), ("docs", "passed"), ("noop", "approved"), ("noop", "passed")].into_iter().enumerate()
    {
        steps.push(step(move |request| {
            vec![baton(&format!("lead-claim-{i}"), "resume", json!({"run_id": run_of(request), "claim": task}))]
        }));
        steps.push(step(move |request| {
            let brief = request.result_of(&format!("lead-claim-{i}"));
            vec![baton(&format!("lead-report-{i}"), "advance", json!({"run_id": brief["run_id"], "task": brief["task"], "lease_token": brief["lease_token"], "outcome": outcome, "output": "Checked."}))]
        }));
    }
    steps.extend(lead_integrate());
    steps.push(step(|_| vec![Output::text("Done.")]));
    steps
}

/// Requests of the thread that played `role` on `task` (with an empty `role`: of the lead
/// whose prompt was `task`).
fn thread_turns(turns: &[ModelRequest], role: &str, task: &str) -> Vec<ModelRequest> {
    let thread = turns.iter().find(|t| match part_of(t) {
        Some((r, k, _)) => r == role && k == task,
        None => role.is_empty() && t.message_text().contains(task),
    });
    let thread = thread.and_then(|t| t.thread_id()).unwrap_or_else(|| panic!("no thread played {role} {task}")).to_string();
    turns.iter().filter(|t| t.thread_id() == Some(thread.as_str())).cloned().collect()
}

/// What the shell call `call_id` printed, in the thread's requests.
fn shell_output(turns: &[ModelRequest], call_id: &str) -> String {
    turns.iter().find_map(|t| t.output_for(call_id)).map(output_text).unwrap_or_else(|| panic!("no output of {call_id}"))
}

/// A run's events, as the terminal shows them.
fn events(harness: &ExecHarness, run_id: &str) -> Vec<Value> {
    let shown = harness.baton_json(&["show", run_id, "--json", "--history", "500"]);
    shown["events"].as_array().cloned().unwrap_or_default()
}

fn assert_clean(run: &ExecRun, harness: &ExecHarness) {
    assert!(run.finished.status.success(), "codex exec failed:\n{}", run.describe());
    assert_eq!(harness.model.problems(), Vec::<String>::new(), "the model server saw malformed requests or the script failed");
}

/// The lead's calls of Codex's multi-agent tools, in order (then any `close_agent`): each
/// reached a sub-agent that completed; and every baton call of the lead completed.
fn assert_agent_calls(run: &ExecRun, expected: &[&str]) {
    let calls = run.items("collab_tool_call");
    let tools: Vec<&str> = calls.iter().filter_map(|c| c["tool"].as_str()).filter(|t| *t != "close_agent").collect();
    assert_eq!(tools, expected, "{calls:#?}");
    for call in calls.iter().filter(|c| c["tool"] != "spawn_agent") {
        let states = call["agents_states"].as_object().unwrap_or_else(|| panic!("{call:#}"));
        assert!(!states.is_empty() && states.values().all(|s| s["status"] == "completed"), "{call:#}");
    }
    for call in run.items("mcp_tool_call") {
        assert_eq!(call["status"], "completed", "{call:#}");
        assert!(!call["result"]["structured_content"]["error"].is_object(), "baton answered with an error: {call:#}");
    }
}

fn is_ancestor(repo: &Path, commit: &str) -> bool {
    Command::new("git").arg("-C").arg(repo).args(["merge-base", "--is-ancestor", commit, "HEAD"]).status().unwrap().success()
}

#[test]
fn sub_agents_that_never_commit_land_their_tasks_through_merge_commits() {
    let Some(codex) = find_codex() else { return };
    let script = by_thread(|request| match part_of(request) {
        Some((role, task, run_id)) => sub_agent(role, task, run_id),
        None if request.message_text().contains(SECOND) => second_lead(),
        None => first_lead(),
    });
    let harness = ExecHarness::new(&codex, script);
    let repo = support::codex::canonical(harness.work());
    support::git::init(&repo, "README.md", "# greeter\n");
    harness.trust_work();

    // Session 1: two tasks implemented by sub-agents that only write files.
    let started = Instant::now();
    let first = harness.exec_within(FIRST, SESSION_TIMEOUT);
    let first_secs = started.elapsed().as_secs_f64();
    assert_clean(&first, &harness);
    assert_agent_calls(
        &first,
        &["spawn_agent", "spawn_agent", "wait", "wait", "spawn_agent", "spawn_agent", "wait", "wait", "spawn_agent", "wait"],
    );
    let turns = harness.model.turns();
    let lead = thread_turns(&turns, "", FIRST);
    let run_id = run_of(lead.last().unwrap());
    let mut threads = vec![lead[0].thread_id().unwrap().to_string()];
    for (role, task) in [("implementer", "left"), ("implementer", "right"), ("reviewer", "left"), ("reviewer", "right"), ("tester", "left")]
    {
        threads.push(thread_turns(&turns, role, task)[0].thread_id().unwrap().to_string());
    }
    let mut distinct = threads.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "a lead and five sub-agents, each its own Codex thread: {threads:?}");

    // What Codex's sandbox let the implementer do in its worktree: write files, not commit.
    let left = thread_turns(&turns, "implementer", "left");
    let sandboxed = shell_output(&left, "write-left");
    let _ = writeln!(
        std::io::stderr().lock(),
        "the implementer's shell in its worktree (Codex default sandbox, trusted repository):\n{sandboxed}"
    );
    assert!(sandboxed.contains("wrote"), "{sandboxed}");
    let lock = format!("Unable to create '{}/.git/worktrees/{}-left/index.lock': Read-only file system", repo.display(), &run_id[..8]);
    assert!(sandboxed.contains(&lock), "git cannot write the worktree's index under .git: {sandboxed}");
    assert!(sandboxed.contains("git-add-exit=128") && sandboxed.contains("git-commit-exit=128"), "{sandboxed}");

    // Each sub-agent's calls carried its own thread id: baton's actors are those threads.
    let history = events(&harness, &run_id);
    let actor = |kind: &str, task: &str, step: &str| -> String {
        let event = history.iter().find(|e| e["type"] == kind && e["task"] == task && e["step"] == step);
        event.and_then(|e| e["actor"]["id"].as_str()).unwrap_or_else(|| panic!("no {kind} {task} {step} in {history:#?}")).to_string()
    };
    for task in ["left", "right"] {
        let implementer = actor("task_advanced", task, "implement");
        let reviewer = actor("task_advanced", task, "review");
        assert_ne!(implementer, reviewer, "an independent review");
        assert!(
            threads[1..].contains(&implementer) && threads[1..].contains(&reviewer),
            "sub-agent threads: {implementer} {reviewer} {threads:?}"
        );
        let code =
            history.iter().find(|e| e["type"] == "task_advanced" && e["task"] == task && e["step"] == "implement").unwrap()["code"].clone();
        let commit = code["commit"].as_str().unwrap_or_else(|| panic!("baton committed the implementer's work: {code:#}"));
        assert_eq!(code["agent_commits"], 0, "{code:#}");
        let identity = git(&repo, &["log", "-1", "--format=%an|%ae|%cn", commit]);
        assert_eq!(identity, format!("codex {implementer}|{implementer}@codex.baton.invalid|baton"), "authored by the implementing thread");
        assert!(is_ancestor(&repo, commit), "task {task}'s commit is in HEAD");
        // The reviewer was briefed with the commit and saw it in the worktree.
        let review = thread_turns(&turns, "reviewer", task);
        let brief = review
            .iter()
            .find_map(|t| t.output_for(&format!("claim-reviewer-{task}")).map(|_| t.result_of(&format!("claim-reviewer-{task}"))))
            .unwrap();
        assert!(brief["code"].as_str().unwrap_or_default().contains(&commit[..10]), "{brief:#}");
        assert!(
            shell_output(&review, "read-diff").contains(&format!("{implementer}@codex.baton.invalid")),
            "the reviewer reads baton's commit"
        );
    }

    // The join merged both tasks through merge commits; HEAD has every task's files.
    let merges = git(&repo, &["log", "--merges", "--format=%s"]);
    assert_eq!(merges.lines().count(), 2, "{merges}");
    assert_eq!(std::fs::read_to_string(repo.join("left.txt")).unwrap(), "the left feature\n");
    assert_eq!(std::fs::read_to_string(repo.join("src/right.rs")).unwrap(), "pub fn right() {}\n");
    assert!(std::fs::read_to_string(repo.join("README.md")).unwrap().ends_with("shared by left\n"));
    let briefing = lead.iter().find_map(|t| t.output_for("briefing").map(|_| t.result_of("briefing"))).unwrap();
    let merge = &briefing["brief"]["merge"];
    assert_eq!((&merge["merged"], &merge["nothing_to_merge"]), (&json!(["left", "right"]), &Value::Null), "{merge:#}");
    for m in merge["merges"].as_array().unwrap() {
        assert!(is_ancestor(&repo, m["tip"].as_str().unwrap()) && is_ancestor(&repo, m["commit"].as_str().unwrap()), "{m}");
    }
    let closed = first.items("collab_tool_call").iter().filter(|c| c["tool"] == "close_agent").count();
    assert_eq!(closed, 5, "the lead closed its sub-agents");
    let runs = harness.runs();
    let run = runs.iter().find(|r| r["run_id"] == run_id.as_str()).unwrap();
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1, "the run's worktrees are removed");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "the user's tree is clean");

    // Session 2: one task changes nothing.
    let head_before = git(&repo, &["rev-parse", "HEAD"]);
    let started = Instant::now();
    let second = harness.exec_within(SECOND, SESSION_TIMEOUT);
    let second_secs = started.elapsed().as_secs_f64();
    assert_clean(&second, &harness);
    assert_agent_calls(&second, &["spawn_agent", "spawn_agent", "wait", "wait"]);
    let turns = harness.model.turns();
    let lead = thread_turns(&turns, "", SECOND);
    let briefing = lead.iter().find_map(|t| t.output_for("briefing").map(|_| t.result_of("briefing"))).unwrap();
    let brief = &briefing["brief"];
    assert_eq!((&brief["merge"]["merged"], &brief["merge"]["nothing_to_merge"]), (&json!(["docs"]), &json!(["noop"])), "{brief:#}");
    let action = brief["next_action"].as_str().unwrap_or_default();
    assert!(action.contains("Warning: nothing to merge for task `noop`") && action.contains("task `docs` as merge commit"), "{action}");
    let merges = git(&repo, &["log", "--merges", "--format=%s", &format!("{head_before}..HEAD")]);
    assert_eq!(merges.lines().count(), 1, "one merge, none for noop: {merges}");
    assert!(!merges.contains("noop"), "{merges}");
    assert!(repo.join("FEATURES.md").exists());
    let second_run = brief["run_id"].as_str().unwrap();
    let noop = events(&harness, second_run)
        .into_iter()
        .find(|e| e["type"] == "task_advanced" && e["task"] == "noop" && e["step"] == "implement")
        .unwrap();
    assert_eq!((noop["code"]["commit"].clone(), noop["code"]["files_total"].clone()), (Value::Null, json!(0)), "{noop:#}");
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1, "the second run's worktrees are removed too");
    let _ = writeln!(
        std::io::stderr().lock(),
        "wall times: session 1 (lead + 5 sub-agents) {first_secs:.1} s, session 2 (lead + 2 sub-agents) {second_secs:.1} s"
    );
}

/// `codex exec` with nothing trusted: its default sandbox is `read-only`, and an agent's
/// shell can write no file, in the repository or its worktrees, and cannot commit.
#[test]
fn an_untrusted_codex_exec_cannot_write_a_file_at_all() {
    let Some(codex) = find_codex() else { return };
    let probe = "echo x > probe.txt; echo write-exit=$?; git add -A; echo add-exit=$?";
    let script = by_thread(move |_| {
        vec![
            step(move |_| {
                vec![Output::FunctionCall {
                    call_id: "probe".into(),
                    namespace: None,
                    name: "exec_command".into(),
                    arguments: json!({"cmd": probe}),
                }]
            }),
            step(|_| vec![Output::text("Measured.")]),
        ]
    });
    let harness = ExecHarness::new(&codex, script);
    let repo = support::codex::canonical(harness.work());
    support::git::init(&repo, "README.md", "# greeter\n");
    let run = harness.exec("Try to write a file.");
    assert_clean(&run, &harness);
    let turns = harness.model.turns();
    let metadata: Value = serde_json::from_str(turns[0].header("x-codex-turn-metadata").unwrap_or("{}")).unwrap();
    assert_eq!(metadata["sandbox_mode"], "read-only", "{metadata:#}");
    let out = shell_output(&turns, "probe");
    let _ = writeln!(std::io::stderr().lock(), "untrusted codex exec (sandbox {}): {out}", metadata["sandbox"]);
    assert!(out.contains("probe.txt: Read-only file system") && out.contains("write-exit=1"), "{out}");
    assert!(out.contains(&format!("Unable to create '{}/.git/index.lock': Read-only file system", repo.display())), "{out}");
    assert!(out.contains("add-exit=128"), "{out}");
    assert!(!repo.join("probe.txt").exists());
}
