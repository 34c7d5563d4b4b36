//! `baton drive` with the real pinned `codex app-server` (Codex's default sandbox and
//! approvals) and a scripted model on 127.0.0.1 that plays each role from the prompt its
//! thread got: it loads baton's tools, reads its brief with `resume` (or claims its task), and
//! reports with `advance`, as a model following the driver's prompt does.

use crate::support;
use crate::support::BATON;
use crate::support::codex::find_codex;
use crate::support::drive::{Quirk, no_quirk, role_player, trust};
use crate::support::exec::ExecHarness;
use crate::support::model_server::{ModelRequest, Output};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// How long a whole driven run may take (a few dozen scripted turns).
const DRIVE_LIMIT: Duration = Duration::from_secs(240);

/// `baton drive` running in the background, its stdout lines (JSON events) collected.
struct Driver {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Driver {
    fn start(harness: &ExecHarness, codex: &Path, args: &[&str]) -> Driver {
        Driver::start_on(harness, codex, args, None)
    }

    /// With `database_url`: against that PostgreSQL database instead of the sled home.
    fn start_on(harness: &ExecHarness, codex: &Path, args: &[&str], database_url: Option<&str>) -> Driver {
        let mut command = support::drive::drive_command(harness, codex, args);
        if let Some(url) = database_url {
            command.env("BATON_DATABASE_URL", url);
        }
        let mut child = command.spawn().expect("start baton drive");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Driver { child, lines, seen: Vec::new() }
    }

    /// Wait for an event of `kind`, returning it.
    fn wait_for(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + DRIVE_LIMIT;
        if let Some(e) = self.seen.iter().find(|e| e["event"] == kind) {
            return e.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no `{kind}` event from baton drive; saw {:#?}", self.seen));
            let Ok(event) = serde_json::from_str::<Value>(&line) else { panic!("baton drive printed a line that is not JSON: {line}") };
            self.seen.push(event.clone());
            if event["event"] == kind {
                return event;
            }
        }
    }

    /// Take every line printed so far (all of them once the process is gone).
    fn drain(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            if let Ok(event) = serde_json::from_str(&line) {
                self.seen.push(event);
            }
        }
    }

    /// Wait for the process to exit; its exit code.
    fn exit_code(&mut self) -> i32 {
        let _ = self.wait_for("finished");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.try_recv() {
                    if let Ok(event) = serde_json::from_str(&line) {
                        self.seen.push(event);
                    }
                }
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "baton drive did not exit after `finished`");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every event of the run, oldest first.
fn events(harness: &ExecHarness, run: &str) -> Vec<Value> {
    events_on(harness, run, None)
}

fn run_of(harness: &ExecHarness, run: &str) -> Value {
    show_on(harness, run, "1", None)["run"].clone()
}

fn events_on(harness: &ExecHarness, run: &str, database_url: Option<&str>) -> Vec<Value> {
    show_on(harness, run, "1000", database_url)["events"].as_array().cloned().unwrap()
}

/// `baton show RUN --json`, from the sled home or the PostgreSQL database.
fn show_on(harness: &ExecHarness, run: &str, history: &str, database_url: Option<&str>) -> Value {
    let Some(url) = database_url else { return harness.baton_json(&["show", run, "--json", "--history", history]) };
    let mut command = Command::new(BATON);
    command.args(["show", run, "--json", "--history", history]).env("BATON_DATABASE_URL", url).env_remove("BATON_HOME");
    let done = support::codex::run(&mut command, "baton show");
    assert!(done.status.success(), "{}", done.describe());
    serde_json::from_slice(&done.stdout).unwrap()
}

/// The step reports of the history: (step or task:step, visit count so far) must never repeat.
fn assert_no_step_played_twice(events: &[Value]) {
    let mut seen: Vec<(String, u32)> = Vec::new();
    let mut visits: std::collections::HashMap<String, u32> = Default::default();
    for e in events {
        let key = match e["type"].as_str() {
            Some("advanced") => e["step"].as_str().unwrap().to_string(),
            Some("task_advanced") => format!("{}:{}", e["task"].as_str().unwrap(), e["step"].as_str().unwrap()),
            _ => continue,
        };
        let visit = visits.entry(key.clone()).or_default();
        *visit += 1;
        seen.push((key, *visit));
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a step was reported twice: {seen:?}");
}

/// Threads that reported each step, from the history's actors.
fn reporters(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["type"] == "advanced" || e["type"] == "task_advanced")
        .map(|e| {
            let step = match e["task"].as_str() {
                Some(task) => format!("{task}:{}", e["step"].as_str().unwrap()),
                None => e["step"].as_str().unwrap().to_string(),
            };
            (step, e["actor"]["id"].as_str().unwrap_or("?").to_string())
        })
        .collect()
}

#[test]
fn a_feature_run_is_driven_to_completion_through_a_human_gate_answered_with_baton_answer() {
    let Some(codex) = find_codex() else { return };
    // The architect's first agent asks the user; the driver (no human) declines the form, so
    // the run waits until `baton answer` answers it, then a new agent plays the step.
    let asked = Arc::new(AtomicUsize::new(0));
    let asking = Arc::clone(&asked);
    let quirk: Quirk = Box::new(move |unit, request| {
        if unit.role != "architect" || request.output_for("brief").is_none() || request.output_for("report").is_some() {
            return None;
        }
        if request.output_for("ask").is_some() {
            return Some(vec![Output::text("I asked the user; waiting for the answer.")]);
        }
        if asking.fetch_add(1, Ordering::SeqCst) > 0 {
            return None;
        }
        let got = request.result_of("brief");
        let args = json!({"run_id": unit.run, "question": "Redis or memory?", "options": ["redis", "memory"], "expected_version": got["brief"]["version"]});
        Some(vec![Output::mcp_call("ask", "baton", "await_human", args)])
    });
    let harness = ExecHarness::new(&codex, role_player(quirk, vec![]));
    harness.model.set_usage_per_turn(100);
    let mut driver = Driver::start(&harness, &codex, &["--goal", "Add rate limiting to the login endpoint"]);
    let started = driver.wait_for("started");
    let run = started["run_id"].as_str().unwrap().to_string();
    let waiting = driver.wait_for("waiting_for_human");
    assert_eq!(waiting["question"], "Redis or memory?", "{waiting:#}");
    assert_eq!(waiting["answer_with"], format!("baton answer {run} ANSWER"), "{waiting:#}");
    assert_eq!(run_of(&harness, &run)["status"], "awaiting_human");
    let answered = harness.baton(&["answer", &run, "memory"]);
    assert!(answered.status.success(), "{}", answered.describe());
    assert_eq!(driver.exit_code(), 0, "completed: {:#?}", driver.seen);
    assert_eq!(harness.model.problems(), Vec::<String>::new());

    let state = run_of(&harness, &run);
    assert_eq!(state["status"], "completed", "{state:#}");
    let history = events(&harness, &run);
    assert_no_step_played_twice(&history);
    let steps: Vec<String> = reporters(&history).into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, ["design", "implement", "review", "test"], "{history:#?}");
    // Every step by its own Codex thread, each recorded in the run with its tokens.
    let threads: Vec<String> = reporters(&history).into_iter().map(|(_, t)| t).collect();
    let mut distinct = threads.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "one thread per step: {threads:?}");
    let drive = &state["drive"];
    for (step, thread) in reporters(&history) {
        let unit =
            drive["units"].as_object().unwrap().iter().find(|(k, _)| k.starts_with(&format!("step:{step}#"))).map(|(_, u)| u.clone());
        let unit = unit.unwrap_or_else(|| panic!("no drive record of {step}: {drive:#}"));
        assert!(unit["threads"].as_array().unwrap().contains(&json!(thread)), "{step}: {unit:#}");
        assert_eq!(unit["working"], false, "{unit:#}");
    }
    // The design step took two turns (the one that asked, then the one that reported).
    let design = &drive["units"]["step:design#1"];
    assert_eq!(design["attempts"], 2, "{drive:#}");
    assert!(drive["tokens"].as_u64().unwrap() >= 5 * 100 * 3, "tokens from Codex's usage notifications: {drive:#}");
    assert!(drive["tokens_by_role"]["architect"].as_u64().unwrap() > 0, "{drive:#}");
    assert_eq!(drive["turns"], 5, "{drive:#}");
    let shown = harness.baton(&["show", &run]);
    let text = String::from_utf8_lossy(&shown.stdout);
    let line = format!("5 agent turn(s), {} token(s)", drive["tokens"]);
    assert!(text.contains("Driven by `baton drive`") && text.contains(&line), "baton show tells the drive: {text}");
}

/// The first `lazy` implementer threads end their turn without reporting; the counter
/// counts every implementer thread started.
fn lazy_implementers(lazy: usize) -> (Arc<AtomicUsize>, Quirk) {
    let started = Arc::new(AtomicUsize::new(0));
    let threads = Arc::clone(&started);
    let quirk: Quirk = Box::new(move |unit, request| {
        // A thread's first request has no tool output yet: that is where a lazy agent stops.
        if unit.role != "implementer" || request.output_for("search").is_some() {
            return None;
        }
        (threads.fetch_add(1, Ordering::SeqCst) < lazy).then(|| vec![Output::text("I looked around and stopped.")])
    });
    (started, quirk)
}

#[test]
fn a_turn_that_ends_without_reporting_is_retried_then_escalated_and_retry_continues() {
    let Some(codex) = find_codex() else { return };
    // The implementer's first two agents end their turn without reporting.
    let (lazy, quirk) = lazy_implementers(2);
    let harness = ExecHarness::new(&codex, role_player(quirk, vec![]));
    let mut driver = Driver::start(&harness, &codex, &["--goal", "Fix the flaky test", "--max-attempts", "2", "--backoff-ms", "100"]);
    let run = driver.wait_for("started")["run_id"].as_str().unwrap().to_string();
    let escalated = driver.wait_for("escalated");
    assert_eq!((escalated["unit"].as_str(), escalated["attempts"].as_u64()), (Some("step:implement#1"), Some(2)), "{escalated:#}");
    let waiting = driver.wait_for("waiting_for_human");
    assert!(waiting["question"].as_str().unwrap().contains("ended 2 agent turns without being reported"), "{waiting:#}");
    let retries: Vec<&Value> = driver.seen.iter().filter(|e| e["event"] == "retrying").collect();
    assert_eq!(retries.len(), 2, "both unreported turns were retried or escalated: {:#?}", driver.seen);
    let state = run_of(&harness, &run);
    assert_eq!((state["status"].as_str(), state["current_step"].as_str()), (Some("awaiting_human"), Some("implement")), "{state:#}");
    let answered = harness.baton(&["answer", &run, "retry"]);
    assert!(answered.status.success(), "{}", answered.describe());
    assert_eq!(driver.exit_code(), 0, "{:#?}", driver.seen);
    let history = events(&harness, &run);
    assert_no_step_played_twice(&history);
    let state = run_of(&harness, &run);
    assert_eq!(state["status"], "completed");
    let implement = &state["drive"]["units"]["step:implement#1"];
    assert_eq!(implement["threads"].as_array().unwrap().len(), 3, "two lazy threads, then one that reported: {implement:#}");
    assert_eq!(implement["escalated"], true, "{implement:#}");
    assert_eq!(lazy.load(Ordering::SeqCst), 3, "three implementer threads started");
}

#[test]
fn a_step_whose_template_says_fail_fails_the_run_once_its_agents_use_up_their_attempts() {
    let Some(codex) = find_codex() else { return };
    // Every implementer ends its turn without reporting.
    let (lazy, quirk) = lazy_implementers(usize::MAX);
    let harness = ExecHarness::new(&codex, role_player(quirk, vec![]));
    // The template's word (2 attempts, then fail) wins over --max-attempts 5.
    let template = "name = \"strict\"\n\
                    [[steps]]\nname = \"implement\"\nrole = \"implementer\"\n\
                    on_agent_failure = \"fail\"\nmax_agent_attempts = 2\n\
                    outcomes = { implemented = \"done\" }\n";
    std::fs::write(harness.work().join("strict.toml"), template).unwrap();
    let args = ["--goal", "Fix the flaky test", "--template-file", "strict.toml", "--max-attempts", "5", "--backoff-ms", "100"];
    let mut driver = Driver::start(&harness, &codex, &args);
    let run = driver.wait_for("started")["run_id"].as_str().unwrap().to_string();
    let gave_up = driver.wait_for("gave_up");
    assert_eq!((gave_up["unit"].as_str(), gave_up["attempts"].as_u64()), (Some("step:implement#1"), Some(2)), "{gave_up:#}");
    assert_eq!(driver.exit_code(), 3, "a failed run exits with 3: {:#?}", driver.seen);
    assert!(!driver.seen.iter().any(|e| e["event"] == "waiting_for_human" || e["event"] == "escalated"), "{:#?}", driver.seen);
    let state = run_of(&harness, &run);
    assert_eq!(state["status"], "failed", "{state:#}");
    assert!(state["end_reason"].as_str().unwrap().contains("ended 2 agent turns without being reported"), "{state:#}");
    let history = events(&harness, &run);
    assert!(!history.iter().any(|e| e["type"] == "human_asked"), "nobody was asked");
    let last = history.iter().rev().find(|e| e["type"] == "supervised").unwrap();
    assert_eq!(last["record"]["action"], "gave_up", "{last:#}");
    let implement = &state["drive"]["units"]["step:implement#1"];
    assert_eq!(implement["threads"].as_array().unwrap().len(), 2, "{implement:#}");
    assert_eq!(lazy.load(Ordering::SeqCst), 2, "two implementer threads, no third");
}

/// The shell call Codex offers this model, writing `file` in `workdir` and committing it.
fn write_and_commit(request: &ModelRequest, workdir: &str, file: &str) -> Output {
    // Codex's workspace-write sandbox keeps `.git` read-only, so the commit may be refused;
    // the file is the task's code either way.
    let script = format!("printf 'code of {file}\\n' > {file}; git add {file} && git commit -qm 'task {file}' || true");
    let names: Vec<String> = request.tools().iter().filter_map(|t| t["name"].as_str().map(String::from)).collect();
    let (name, arguments) = if names.iter().any(|n| n == "exec_command") {
        ("exec_command", json!({"cmd": script, "workdir": workdir}))
    } else if names.iter().any(|n| n == "shell_command") {
        ("shell_command", json!({"command": script, "workdir": workdir}))
    } else {
        ("shell", json!({"command": ["bash", "-lc", script], "workdir": workdir}))
    };
    Output::FunctionCall { call_id: "code".into(), namespace: None, name: name.into(), arguments }
}

/// Most `assigned` records of the history not yet followed by their turn's end.
fn most_at_once(history: &[Value]) -> usize {
    let (mut now, mut most) = (0usize, 0usize);
    for e in history.iter().filter(|e| e["type"] == "supervised") {
        match e["record"]["action"].as_str() {
            Some("assigned") => now += 1,
            Some("turn_ended") | Some("released") => now = now.saturating_sub(1),
            _ => {}
        }
        most = most.max(now);
    }
    most
}

#[test]
fn a_parallel_run_of_four_tasks_is_driven_by_two_agents_at_a_time_with_independent_reviews() {
    let Some(codex) = find_codex() else { return };
    // Implementers write and commit their task's file in the task's worktree (its brief's
    // `workdir`) with Codex's own shell tool before reporting.
    let quirk: Quirk = Box::new(|unit, request| {
        if unit.role != "implementer" || request.output_for("brief").is_none() || request.output_for("code").is_some() {
            return None;
        }
        let brief = request.result_of("brief");
        let workdir = brief["workdir"].as_str().unwrap_or(".").to_string();
        Some(vec![write_and_commit(request, &workdir, &format!("{}.txt", unit.task.clone().unwrap_or_default()))])
    });
    let tasks = vec!["alpha", "beta", "gamma", "delta"];
    let harness = ExecHarness::new(&codex, role_player(quirk, tasks.clone()));
    support::git::init(harness.work(), "README", "base\n");
    trust(&harness);
    let mut driver = Driver::start(
        &harness,
        &codex,
        &["--goal", "Four independent files", "--template", "parallel", "--agents", "2", "--backoff-ms", "100"],
    );
    let run = driver.wait_for("started")["run_id"].as_str().unwrap().to_string();
    assert_eq!(driver.exit_code(), 0, "{:#?}", driver.seen);
    assert_eq!(harness.model.problems(), Vec::<String>::new());
    let history = events(&harness, &run);
    assert_no_step_played_twice(&history);
    let state = run_of(&harness, &run);
    assert_eq!(state["status"], "completed", "{state:#}");
    // At most two agent turns at any moment, and two did run at once.
    assert_eq!(most_at_once(&history), 2, "turns in flight at once, from the run's supervision records");
    let by_driver = {
        let (mut now, mut most) = (0i32, 0i32);
        for e in &driver.seen {
            match e["event"].as_str() {
                Some("agent_started") => now += 1,
                Some("agent_ended") => now -= 1,
                _ => {}
            }
            most = most.max(now);
        }
        most
    };
    assert_eq!(by_driver, 2, "{:#?}", driver.seen);
    let finished = driver.seen.iter().find(|e| e["event"] == "finished").unwrap();
    let turns = finished["turns"].as_u64().unwrap();
    // One turn per step, plus one per recorded retry: on a loaded machine a turn has once
    // ended without its step reported (cause not found), and the driver retried it, as it must.
    let retries = driver.seen.iter().filter(|e| e["event"] == "retrying").count() as u64;
    assert!(retries <= 2, "a retry is the exception here: {:#?}", driver.seen);
    assert_eq!(turns, 14 + retries, "design, 4 x (implement, review, test), integrate, and {retries} retries: {finished:#}");
    let (cpu, rss) = (finished["driver_cpu_ms"].as_u64().unwrap(), finished["driver_max_rss_kb"].as_u64().unwrap());
    assert!(cpu > 0 && rss > 0, "{finished:#}");
    eprintln!("driver cost: {cpu} ms CPU for {turns} turns ({:.1} ms per step), peak RSS {rss} KiB", cpu as f64 / turns as f64);
    // Every task implemented, reviewed by another thread, tested, joined once.
    let reported = reporters(&history);
    for task in &tasks {
        let by = |step: &str| {
            reported
                .iter()
                .find(|(s, _)| s == &format!("{task}:{step}"))
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| panic!("{task}:{step} never reported: {reported:?}"))
        };
        assert_ne!(by("implement"), by("review"), "task {task} reviewed by its implementer");
        let _ = by("test");
    }
    let joins = history.iter().filter(|e| e["type"] == "branches_merged").count();
    assert_eq!(joins, 1, "merged once");
    // No lease left held.
    for task in state["fanout"]["tasks"].as_array().unwrap() {
        assert!(task.get("lease").is_none_or(Value::is_null), "lease left: {task:#}");
    }
    // Every task's code was written by its agent under Codex's default sandbox (which keeps
    // `.git` read-only, so the agent cannot commit), committed by baton when the step was
    // reported, and merged at the join: it is in the run tree's HEAD.
    for task in &tasks {
        let out =
            std::process::Command::new("git").arg("-C").arg(harness.work()).args(["show", &format!("HEAD:{task}.txt")]).output().unwrap();
        assert!(out.status.success(), "{task}.txt is not in HEAD: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("code of {task}.txt\n"));
    }
}

#[test]
fn a_budget_that_runs_out_stops_new_steps_and_asks_and_more_budget_continues() {
    let Some(codex) = find_codex() else { return };
    let harness = ExecHarness::new(&codex, role_player(no_quirk(), vec![]));
    // Every model response reports 100 tokens; a step's turn takes four responses.
    harness.model.set_usage_per_turn(100);
    let mut driver = Driver::start(&harness, &codex, &["--goal", "Add a CSV export", "--budget-tokens", "500"]);
    let run = driver.wait_for("started")["run_id"].as_str().unwrap().to_string();
    let stop = driver.wait_for("budget_stop");
    let used = stop["used"].as_u64().unwrap();
    assert!(used >= 500, "{stop:#}");
    let waiting = driver.wait_for("waiting_for_human");
    assert!(waiting["question"].as_str().unwrap().contains("token budget of 500 tokens is used up"), "{waiting:#}");
    let state = run_of(&harness, &run);
    assert_eq!(state["status"], "awaiting_human", "{state:#}");
    let steps_before = reporters(&events(&harness, &run)).len();
    // The next step may start while the agent that reported the last one ends its turn (its
    // tokens count when the turn ends), so the stop comes after 2 or 3 steps: those started
    // before it all finished, and nothing else ran.
    let started_before = driver.seen.iter().take_while(|e| e["event"] != "budget_stop").filter(|e| e["event"] == "agent_started").count();
    assert_eq!(steps_before, started_before, "every step started before the stop was reported: {:#?}", driver.seen);
    assert!((2..4).contains(&steps_before), "the budget stopped the run before its last step: {:#?}", driver.seen);
    // Nothing starts while the question waits.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(run_of(&harness, &run)["version"], state["version"], "the run did not move while over budget");
    let answered = harness.baton(&["answer", &run, "100000"]);
    assert!(answered.status.success(), "{}", answered.describe());
    assert_eq!(driver.exit_code(), 0, "{:#?}", driver.seen);
    let raised = driver.seen.iter().find(|e| e["event"] == "budget_raised").cloned().unwrap_or_default();
    assert_eq!(raised["budget_tokens"], 100000, "{:#?}", driver.seen);
    let state = run_of(&harness, &run);
    assert_eq!(state["status"], "completed");
    assert_eq!(state["drive"]["budget_tokens"], 100000);
    assert!(state["drive"]["tokens"].as_u64().unwrap() > used, "{:#}", state["drive"]);
    let history = events(&harness, &run);
    assert_no_step_played_twice(&history);
    // The starts after the stop came only after the answer.
    let answer_at = history.iter().position(|e| e["type"] == "human_answered").unwrap();
    let asked_at = history.iter().position(|e| e["type"] == "human_asked").unwrap();
    assert!(
        !history[asked_at..answer_at].iter().any(|e| e["type"] == "supervised" && e["record"]["action"] == "assigned"),
        "no agent assigned while the budget question waited"
    );
}

/// For each unit, its `assigned` records never overlap: a unit is never worked by two
/// threads at once. Returns the number of assignments.
fn assert_units_never_overlap(history: &[Value]) -> usize {
    let mut working: std::collections::HashMap<String, String> = Default::default();
    let mut assigned = 0;
    for e in history.iter().filter(|e| e["type"] == "supervised") {
        let record = &e["record"];
        let unit = record["unit"].as_str().unwrap_or_default().to_string();
        match record["action"].as_str() {
            Some("assigned") => {
                assigned += 1;
                let take_over = record["take_over"] == true;
                if let Some(other) = working.get(&unit) {
                    assert!(take_over, "{unit} assigned to {} while {other} worked it", record["thread_id"]);
                }
                working.insert(unit, record["thread_id"].as_str().unwrap_or_default().to_string());
            }
            Some(_) => {
                working.remove(&unit);
            }
            None => {}
        }
    }
    assigned
}

fn assert_each_task_joined_once(history: &[Value], tasks: &[&str]) {
    for task in tasks {
        let joins = history.iter().filter(|e| e["type"] == "task_advanced" && e["task"] == *task && e["next"] == "join").count();
        assert_eq!(joins, 1, "task {task} joined {joins} times");
    }
}

#[test]
fn a_driver_killed_mid_run_is_replaced_by_a_new_one_that_resumes_its_threads_and_completes_the_run() {
    killed_driver(true);
}

#[test]
fn a_driver_killed_mid_run_whose_threads_cannot_be_resumed_is_replaced_by_one_that_restarts_the_steps() {
    killed_driver(false);
}

/// kill -9 of a driver while an agent holds a task's lease, then a new `baton drive RUN`.
/// With `resumable` the new driver resumes the dead one's Codex threads (`thread/resume`);
/// without (Codex's saved sessions are gone), it gives the leases back and starts anew.
fn killed_driver(resumable: bool) {
    let Some(codex) = find_codex() else { return };
    // The first implementer to have claimed its task stalls (its model answers slowly, and
    // without reporting) until the driver is killed.
    let stalled = Arc::new(AtomicUsize::new(0));
    let stalls = Arc::clone(&stalled);
    let quirk: Quirk = Box::new(move |unit, request| {
        if unit.role != "implementer" || request.output_for("brief").is_none() || request.output_for("report").is_some() {
            return None;
        }
        if stalls.fetch_add(1, Ordering::SeqCst) > 0 {
            return None;
        }
        std::thread::sleep(Duration::from_secs(4));
        Some(vec![Output::text("stalled")])
    });
    let tasks = vec!["alpha", "beta"];
    let harness = ExecHarness::new(&codex, role_player(quirk, tasks.clone()));
    support::git::init(harness.work(), "README", "base\n");
    trust(&harness);
    let mut first = Driver::start(&harness, &codex, &["--goal", "Two files", "--template", "parallel", "--agents", "2"]);
    let run = first.wait_for("started")["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + DRIVE_LIMIT;
    while stalled.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no implementer stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    // kill -9 of the driver while an agent holds a task's lease.
    let pid = first.child.id();
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    let _ = first.child.wait();
    first.drain();
    let held = run_of(&harness, &run);
    let leased: Vec<&Value> = held["fanout"]["tasks"].as_array().unwrap().iter().filter(|t| t["lease"].is_object()).collect();
    assert!(!leased.is_empty(), "a lease was held when the driver died: {held:#}");

    // The threads the dead driver's agents were on, by unit.
    let dead: Vec<(String, String)> = first
        .seen
        .iter()
        .filter(|e| e["event"] == "agent_started")
        .filter(|e| !first.seen.iter().any(|f| f["event"] == "agent_ended" && f["unit"] == e["unit"] && f["thread"] == e["thread"]))
        .map(|e| (e["unit"].as_str().unwrap().to_string(), e["thread"].as_str().unwrap().to_string()))
        .collect();
    assert!(!dead.is_empty(), "agents were working when the driver died: {:#?}", first.seen);
    if !resumable {
        // Codex keeps each thread's rollout under CODEX_HOME/sessions: without it no thread resumes.
        std::fs::remove_dir_all(harness.codex_home().join("sessions")).unwrap();
    }
    let mut second = Driver::start(&harness, &codex, &[&run]);
    assert_eq!(second.exit_code(), 0, "{:#?}", second.seen);
    let history = events(&harness, &run);
    let state = run_of(&harness, &run);
    assert_eq!(state["status"], "completed", "{state:#}");
    assert_no_step_played_twice(&history);
    assert_each_task_joined_once(&history, &tasks);
    assert_units_never_overlap(&history);
    for task in state["fanout"]["tasks"].as_array().unwrap() {
        assert!(task.get("lease").is_none_or(Value::is_null), "lease left: {task:#}");
    }
    let took_over: Vec<&Value> = history.iter().filter(|e| e["type"] == "supervised" && e["record"]["take_over"] == true).collect();
    assert_eq!(took_over.len(), dead.len(), "the new driver took each of the dead driver's units over: {took_over:#?}");
    let restarted: Vec<&Value> = second.seen.iter().filter(|e| e["event"] == "agent_started").collect();
    for (unit, thread) in &dead {
        let again = restarted.iter().find(|e| e["unit"] == unit.as_str()).unwrap_or_else(|| panic!("{unit} was not taken over"));
        if resumable {
            // The same Codex thread carried on, with its claim and lease, and reported the step.
            assert_eq!((again["thread"].as_str(), again["resumed"].as_bool()), (Some(thread.as_str()), Some(true)), "{again:#}");
            let (task, step) = unit.trim_start_matches("task:").split_once('#').unwrap().0.split_once(':').unwrap();
            let reporter = reporters(&history).into_iter().find(|(s, _)| s == &format!("{task}:{step}")).map(|(_, t)| t);
            assert_eq!(reporter.as_deref(), Some(thread.as_str()), "{unit} reported by its resumed thread");
        } else {
            assert_ne!(again["thread"].as_str(), Some(thread.as_str()), "{again:#}");
            assert_eq!(again["resumed"], false, "{again:#}");
            assert!(second.seen.iter().any(|e| e["event"] == "resume_failed" && e["unit"] == unit.as_str()), "{:#?}", second.seen);
        }
    }
    if resumable {
        assert!(!second.seen.iter().any(|e| e["event"] == "lease_released"), "a resumed agent keeps its lease: {:#?}", second.seen);
        let notes = took_over.iter().filter(|e| e["record"]["note"].as_str().is_some_and(|n| n.contains("resumed"))).count();
        assert_eq!(notes, dead.len(), "each take-over is recorded as a resume");
    } else {
        assert!(second.seen.iter().any(|e| e["event"] == "lease_released"), "{:#?}", second.seen);
        assert!(history.iter().any(|e| e["type"] == "task_released"), "the dead agent's lease was given back");
    }
}

#[test]
fn two_drivers_on_one_run_never_play_one_step_twice() {
    two_drivers(None);
}

#[test]
fn two_drivers_on_one_run_in_postgresql_never_play_one_step_twice() {
    let Some((url, _cluster)) = support::pg::database() else { return };
    two_drivers(Some(&url));
}

/// Two drivers (and their agents' `baton serve`) on one run, in sled or PostgreSQL.
fn two_drivers(database_url: Option<&str>) {
    let Some(codex) = find_codex() else { return };
    let tasks = vec!["alpha", "beta", "gamma", "delta"];
    let harness = ExecHarness::new(&codex, role_player(no_quirk(), tasks.clone()));
    if let Some(url) = database_url {
        // The agents' `baton serve` uses the database too: registered as a user does it.
        harness.install(&["--database-url", url]);
    }
    support::git::init(harness.work(), "README", "base\n");
    trust(&harness);
    let mut a = Driver::start_on(&harness, &codex, &["--goal", "Four files", "--template", "parallel", "--agents", "2"], database_url);
    let run = a.wait_for("started")["run_id"].as_str().unwrap().to_string();
    let mut b = Driver::start_on(&harness, &codex, &[&run, "--agents", "2"], database_url);
    assert_eq!(a.exit_code(), 0, "{:#?}", a.seen);
    assert_eq!(b.exit_code(), 0, "{:#?}", b.seen);
    let history = events_on(&harness, &run, database_url);
    assert_eq!(show_on(&harness, &run, "1", database_url)["run"]["status"], "completed");
    assert_no_step_played_twice(&history);
    assert_each_task_joined_once(&history, &tasks);
    let assigned = assert_units_never_overlap(&history);
    let drivers: std::collections::BTreeSet<&str> = history
        .iter()
        .filter(|e| e["type"] == "supervised" && e["record"]["action"] == "assigned")
        .filter_map(|e| e["record"]["driver"].as_str())
        .collect();
    assert!(assigned >= 14, "design, 4 x 3 task steps, integrate: {assigned}");
    if database_url.is_some() {
        assert!(!harness.baton_home().join("db").exists(), "nothing went to the sled home: the run lives in PostgreSQL");
    }
    assert_eq!(drivers.len(), 2, "both drivers worked the run: {drivers:?}");
}

#[test]
fn sigterm_interrupts_the_turns_gives_back_the_leases_and_exits_7() {
    let Some(codex) = find_codex() else { return };
    let stalled = Arc::new(AtomicUsize::new(0));
    let stalls = Arc::clone(&stalled);
    let quirk: Quirk = Box::new(move |unit, request| {
        if unit.role != "implementer" || request.output_for("brief").is_none() || request.output_for("report").is_some() {
            return None;
        }
        stalls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(3));
        Some(vec![Output::text("stalled")])
    });
    let harness = ExecHarness::new(&codex, role_player(quirk, vec!["alpha"]));
    support::git::init(harness.work(), "README", "base\n");
    trust(&harness);
    let mut driver = Driver::start(&harness, &codex, &["--goal", "One file", "--template", "parallel"]);
    let run = driver.wait_for("started")["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + DRIVE_LIMIT;
    while stalled.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no implementer stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(run_of(&harness, &run)["fanout"]["tasks"][0]["lease"].is_object(), "the agent holds the task's lease");
    assert!(Command::new("kill").args(["-TERM", &driver.child.id().to_string()]).status().unwrap().success());
    let interrupted = driver.wait_for("interrupted");
    assert_eq!(interrupted["signal"], "SIGTERM");
    let status = driver.child.wait().unwrap();
    assert_eq!(status.code(), Some(7), "interrupted exits with 7");
    let state = run_of(&harness, &run);
    assert!(state["fanout"]["tasks"][0].get("lease").is_none_or(Value::is_null), "lease given back: {state:#}");
    assert_eq!(state["status"], "active", "the run waits for a driver or an agent");
    let history = events(&harness, &run);
    let released = history.iter().find(|e| e["type"] == "supervised" && e["record"]["action"] == "released").expect("why is recorded");
    assert!(released["record"]["note"].as_str().unwrap().contains("SIGTERM"), "{released:#}");
    assert!(history.iter().any(|e| e["type"] == "task_released"));
    assert_eq!(state["drive"]["units"].as_object().unwrap().values().filter(|u| u["working"] == true).count(), 0);
}

#[test]
fn answering_stop_to_the_budget_question_ends_the_run_with_exit_6() {
    let Some(codex) = find_codex() else { return };
    let harness = ExecHarness::new(&codex, role_player(no_quirk(), vec![]));
    harness.model.set_usage_per_turn(100);
    let mut driver = Driver::start(&harness, &codex, &["--goal", "Add a CSV export", "--budget-tokens", "100"]);
    let run = driver.wait_for("started")["run_id"].as_str().unwrap().to_string();
    driver.wait_for("budget_stop");
    driver.wait_for("waiting_for_human");
    let answered = harness.baton(&["answer", &run, "stop"]);
    assert!(answered.status.success(), "{}", answered.describe());
    assert_eq!(driver.exit_code(), 6, "a budget stop: {:#?}", driver.seen);
    let state = run_of(&harness, &run);
    assert_eq!(state["status"], "cancelled", "{state:#}");
    assert!(state["end_reason"].as_str().unwrap().contains("a human chose to stop"), "{state:#}");
}
