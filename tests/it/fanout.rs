//! Plans fanned out into tasks, worked in parallel by several `baton serve` processes
//! acting as separate agents, one of them killed while it holds a lease.

use crate::support::{Server, cli, fresh_home};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Six tasks: three independent, three that each wait for one or two of them.
fn six_task_plan() -> Value {
    let task = |id: &str, deps: &[&str]| json!({"id": id, "title": format!("task {id}"), "description": format!("build {id}"), "depends_on": deps});
    json!({"tasks": [task("db", &[]), task("api", &["db"]), task("cli", &[]), task("docs", &[]), task("ui", &["api"]), task("e2e", &["ui", "cli"])]})
}

/// What an agent reports at each step of the built-in `task` pipeline.
fn outcome_for(step: &str) -> &'static str {
    match step {
        "implement" => "implemented",
        "review" => "approved",
        _ => "passed",
    }
}

/// Claim and finish tasks until the run has joined; returns the (task, step) pairs whose
/// reports were acknowledged.
async fn work(agent: Arc<Server>, run_id: String) -> Vec<(String, String)> {
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match agent.call("resume", json!({"run_id": run_id, "claim": "next"})).await {
            Ok(brief) => {
                let (task, step) = (brief["task"].as_str().unwrap().to_string(), brief["step"].as_str().unwrap().to_string());
                assert!(brief["role"].as_str().is_some(), "{brief}");
                let report = json!({"run_id": run_id, "task": task, "lease_token": brief["lease_token"], "outcome": outcome_for(&step), "output": format!("{task} {step} by {}", agent.thread.as_deref().unwrap())});
                let after = agent.ok("advance", report).await;
                assert_eq!(after["task"], task.as_str(), "{after}");
                acknowledged.push((task, step));
            }
            Err(error) => {
                assert_eq!(error["field"], "claim", "only `nothing to claim` is expected: {error}");
                let state = agent.ok("resume", json!({"run_id": run_id})).await;
                if state["brief"]["step"] == "integrate" {
                    return acknowledged;
                }
                // Others hold the claimable work; look again shortly.
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    }
    panic!("agent {:?} did not see the run join within 120 s", agent.thread);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_agents_work_a_plan_in_parallel_and_one_dies_holding_a_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let lead = Arc::new(Server::start_as(&home, tmp.path(), Some("agent-a")).await);
    let b = Arc::new(Server::start_as(&home, tmp.path(), Some("agent-b")).await);
    let victim = Server::start_as(&home, tmp.path(), Some("agent-c")).await;

    let brief = lead.ok("start_workflow", json!({"goal": "Ship the feature in parallel", "template": "parallel"})).await;
    let run_id = brief["run_id"].as_str().unwrap().to_string();
    let fanned = lead
        .ok(
            "advance",
            json!({"run_id": run_id, "expected_version": brief["version"], "outcome": "planned", "output": "six tasks", "plan": six_task_plan()}),
        )
        .await;
    assert_eq!(fanned["tasks"]["total"], 6, "{fanned}");
    assert!(fanned["next_action"].as_str().unwrap().contains("claim"), "{fanned}");

    // The victim claims a task with a short lease and dies before reporting it.
    let held = victim.ok("resume", json!({"run_id": run_id, "claim": "next", "lease_seconds": 5})).await;
    let orphan = held["task"].as_str().unwrap().to_string();
    victim.kill();

    let workers = [Arc::clone(&lead), Arc::clone(&b)].map(|agent| tokio::spawn(work(agent, run_id.clone())));
    let mut acknowledged = Vec::new();
    for worker in workers {
        acknowledged.extend(worker.await.unwrap());
    }

    // Every task went through implement, review and test exactly once, as acknowledged.
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for pair in &acknowledged {
        *seen.entry(pair.clone()).or_default() += 1;
    }
    assert_eq!(seen.len(), 18, "6 tasks x 3 steps: {seen:?}");
    assert!(seen.values().all(|n| *n == 1), "a step was acknowledged twice: {seen:?}");

    // The history agrees: each report once, the orphan taken over after its lease expired,
    // dependencies respected, reviews by someone other than the implementer.
    let history = lead.ok("inspect", json!({"run_id": run_id, "history_limit": 1000})).await;
    let events = history["events"].as_array().unwrap();
    let reports: Vec<&Value> = events.iter().filter(|e| e["type"] == "task_advanced").collect();
    assert_eq!(reports.len(), 18, "no lost or duplicated report");
    let claims_of_orphan: Vec<&Value> = events.iter().filter(|e| e["type"] == "task_claimed" && e["task"] == orphan.as_str()).collect();
    assert_eq!(claims_of_orphan[0]["actor"]["id"], "agent-c");
    let takeover = claims_of_orphan[1];
    assert_eq!(takeover["taken_over_from"]["id"], "agent-c", "{takeover}");
    assert_ne!(takeover["actor"]["id"], "agent-c");
    let joined_at: BTreeMap<&str, u64> =
        reports.iter().filter(|e| e["next"] == "join").map(|e| (e["task"].as_str().unwrap(), e["seq"].as_u64().unwrap())).collect();
    let first_claim =
        |task: &str| events.iter().find(|e| e["type"] == "task_claimed" && e["task"] == task).unwrap()["seq"].as_u64().unwrap();
    for (task, deps) in [("api", vec!["db"]), ("ui", vec!["api"]), ("e2e", vec!["ui", "cli"])] {
        for dep in deps {
            assert!(joined_at[dep] < first_claim(task), "{task} was claimed before {dep} joined");
        }
    }
    let played = |task: &str, step: &str| reports.iter().find(|e| e["task"] == task && e["step"] == step).unwrap()["actor"]["id"].clone();
    for task in ["db", "api", "cli", "docs", "ui", "e2e"] {
        assert_ne!(played(task, "implement"), played(task, "review"), "task {task} was reviewed by its implementer");
    }

    // The join fired once; the integration step finishes the run.
    let state = b.ok("resume", json!({"run_id": run_id})).await;
    let brief = &state["brief"];
    assert_eq!((brief["step"].as_str(), brief["role"].as_str()), (Some("integrate"), Some("tester")), "{state}");
    let done = b.advance(brief, "passed", "all green").await;
    assert_eq!(done["status"], "completed");
    let late = b.err("resume", json!({"run_id": run_id, "claim": "next"})).await;
    assert_eq!(late["code"], "invalid_state", "no task is claimable once the run has moved on: {late}");
}

#[tokio::test]
async fn task_changes_need_their_lease_and_bad_plans_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let a = Server::start_as(&home, tmp.path(), Some("agent-a")).await;
    let brief = a.ok("start_workflow", json!({"goal": "g", "template": "parallel", "max_agents": 2})).await;
    let run_id = brief["run_id"].as_str().unwrap();
    let advance = |plan: Value| json!({"run_id": run_id, "expected_version": 1, "outcome": "planned", "output": "p", "plan": plan});
    let err = a.err("advance", advance(json!({"tasks": [{"id": "x", "title": "x", "depends_on": ["x"]}]}))).await;
    assert_eq!((err["code"].as_str(), err["field"].as_str()), (Some("invalid_argument"), Some("plan.tasks[0].depends_on[0]")));
    let err = a.err("advance", json!({"run_id": run_id, "expected_version": 1, "outcome": "planned", "output": "p"})).await;
    assert_eq!(err["field"], "plan");
    let fanned = a.ok("advance", advance(json!({"tasks": [{"id": "only", "title": "the only task"}]}))).await;
    assert_eq!(fanned["tasks"]["max_agents"], 2);
    let claim = a.ok("resume", json!({"run_id": run_id, "claim": "only"})).await;
    let token = claim["lease_token"].as_u64().unwrap();
    let missing = a.err("advance", json!({"run_id": run_id, "task": "only", "outcome": "implemented", "output": "x"})).await;
    assert_eq!(missing["field"], "lease_token");
    let wrong = a
        .err("advance", json!({"run_id": run_id, "task": "only", "lease_token": token + 7, "outcome": "implemented", "output": "x"}))
        .await;
    assert_eq!((wrong["code"].as_str(), wrong["field"].as_str()), (Some("conflict"), Some("lease_token")));
    let renewed = a.ok("resume", json!({"run_id": run_id, "task": "only", "lease_token": token, "lease_seconds": 900})).await;
    assert_eq!(renewed["lease_token"], token, "renewing keeps the token");
    let released = a.ok("resume", json!({"run_id": run_id, "task": "only", "lease_token": token, "release": true})).await;
    assert_eq!(released["status"], "ready");
    let err = a.err("resume", json!({"run_id": run_id, "claim": "next", "lease_seconds": 1})).await;
    assert_eq!(err["field"], "lease_seconds");
}

/// A task whose implement step used up its rounds asks a human. The run is then listed as
/// awaiting a human (its own status stays `active` for the agents), and `baton answer RUN
/// ANSWER` answers the one waiting task without naming it; with two tasks waiting, an
/// answer without `--task` is refused with their names.
#[tokio::test]
async fn a_tasks_question_is_listed_at_run_level_and_answered_without_naming_the_task() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let (a, b) = tokio::join!(Server::start_as(&home, tmp.path(), Some("agent-a")), Server::start_as(&home, tmp.path(), Some("agent-b")));
    let brief = a.ok("start_workflow", json!({"goal": "g", "template": "parallel", "title": "Loops"})).await;
    let run_id = brief["run_id"].as_str().unwrap().to_string();
    let plan = json!({"tasks": [{"id": "x", "title": "x"}, {"id": "y", "title": "y"}]});
    a.ok("advance", json!({"run_id": run_id, "expected_version": 1, "outcome": "planned", "output": "p", "plan": plan})).await;
    // Each task loops implement -> changes_requested until implement has run 4 times
    // (its max_visits); the fourth request for changes asks a human.
    let loop_task = |task: &'static str| {
        let (a, b, run_id) = (&a, &b, run_id.clone());
        async move {
            for round in 1..=4 {
                let claim = a.ok("resume", json!({"run_id": run_id, "claim": task})).await;
                let report = json!({"run_id": run_id, "task": task, "lease_token": claim["lease_token"], "outcome": "implemented", "output": format!("round {round}")});
                a.ok("advance", report).await;
                let claim = b.ok("resume", json!({"run_id": run_id, "claim": task})).await;
                assert_eq!(claim["step"], "review", "{claim}");
                let report = json!({"run_id": run_id, "task": task, "lease_token": claim["lease_token"], "outcome": "changes_requested", "output": "again"});
                let after = b.ok("advance", report).await;
                if round == 4 {
                    assert_eq!(after["status"], "awaiting_human", "{after}");
                }
            }
        }
    };
    loop_task("x").await;
    let run = a.ok("resume", json!({"run_id": run_id})).await;
    assert_eq!(run["brief"]["status"], "active", "the run itself goes on for its other tasks: {run}");

    let (ok, out, err) = cli(&home, &["runs", "--status", "awaiting_human", "--json"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let runs = listed["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{listed:#}");
    assert_eq!((runs[0]["run_id"].as_str(), runs[0]["status"].as_str()), (Some(run_id.as_str()), Some("awaiting_human")));
    assert_eq!(runs[0]["tasks_waiting"], json!(["x"]));
    assert!(runs[0]["question"].as_str().unwrap().contains("Task `x`"), "{listed:#}");
    let (_, active, _) = cli(&home, &["runs", "--status", "active", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&active).unwrap()["runs"], json!([]), "{active}");

    // Two tasks waiting: an answer must name one.
    loop_task("y").await;
    let (ok, _, err) = cli(&home, &["answer", &run_id, "continue"]);
    assert!(!ok && err.contains("x, y") && err.contains("--task"), "{err}");
    let (ok, out, err) = cli(&home, &["answer", &run_id, "continue", "--task", "y", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["task"], "y", "{out}");
    // One left: the answer finds it.
    let (ok, out, err) = cli(&home, &["answer", &run_id, "continue", "--json"]);
    assert!(ok, "{err}");
    let answered: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((answered["task"].as_str(), answered["status"].as_str()), (Some("x"), Some("ready")), "{answered:#}");
    let (_, out, _) = cli(&home, &["runs", "--status", "awaiting_human", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["runs"], json!([]), "no task waits any more: {out}");
}
