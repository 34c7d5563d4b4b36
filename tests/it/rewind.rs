//! Rewinding a run (issue 18): every run step records the state of the run's tree, and a
//! fork at any version replays the run up to there and restores that version's code into
//! the fork's own worktree: through MCP (`resume {run_id, at_version}`) and the terminal
//! (`baton fork RUN --at N`), forks of forks with their lineage, `baton diff`, refs removed
//! by `delete`, and structured errors for a missing version, pruned snapshots and a moved
//! repository. The user's `git status` never changes because of a snapshot.

use crate::support::git::{git, repository};
use crate::support::{Server, cli, fresh_home};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every file of a working tree (not `.git`, not baton's own `.baton`), byte for byte.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if name == ".git" || name == ".baton" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                found.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

/// Report the run's current step; asserts the user's `git status` is what it was.
async fn step(lead: &Server, repo: &Path, brief: &Value, outcome: &str, round: u32) -> Value {
    let status = git(repo, &["status", "--porcelain"]);
    let next = lead
        .ok(
            "advance",
            json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": outcome,
                   "output": format!("{outcome} (round {round})"), "artifacts": {"round": round}}),
        )
        .await;
    assert_eq!(git(repo, &["status", "--porcelain"]), status, "a snapshot changes nothing the user sees");
    next
}

fn refs_of(repo: &Path, run_id: &str) -> Vec<String> {
    let listed = git(repo, &["for-each-ref", "--format=%(refname)", &format!("refs/baton/{}/", &run_id[..8])]);
    listed.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_at_any_version_replays_the_run_and_restores_that_versions_code() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", "one\ntwo\n");
    let home = fresh_home(&tmp);
    let lead = Server::start_as(&home, &repo, Some("thread-lead")).await;
    let brief = lead.ok("start_workflow", json!({"goal": "Rewind me", "template": "feature"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    let mut at: BTreeMap<u64, BTreeMap<String, Vec<u8>>> = BTreeMap::new();

    // design leaves a new file; implement edits; review asks for changes; twice over.
    std::fs::write(repo.join("design.md"), "the plan\n").unwrap();
    let brief = step(&lead, &repo, &brief, "planned", 1).await; // v2
    at.insert(2, files(&repo));
    std::fs::write(repo.join("shared.txt"), "impl-1\ntwo\n").unwrap();
    let brief = step(&lead, &repo, &brief, "implemented", 1).await; // v3
    let brief = step(&lead, &repo, &brief, "changes_requested", 1).await; // v4: after the first review
    at.insert(4, files(&repo));
    assert_eq!(refs_of(&repo, &id).len(), 1, "one ref keeps all of a run's states: {:?}", refs_of(&repo, &id));
    let states_before = git(&repo, &["rev-list", "--count", &format!("refs/baton/{}/code.states", &id[..8])]);
    std::fs::write(repo.join("shared.txt"), "impl-2\ntwo\n").unwrap();
    std::fs::write(repo.join("extra.txt"), "\u{0}binary\u{1}\n").unwrap();
    git(&repo, &["add", "extra.txt"]);
    let brief = step(&lead, &repo, &brief, "implemented", 2).await; // v5
    let brief = step(&lead, &repo, &brief, "changes_requested", 2).await; // v6
    at.insert(6, files(&repo));
    std::fs::write(repo.join("shared.txt"), "impl-3\ntwo\n").unwrap();
    let brief = step(&lead, &repo, &brief, "implemented", 3).await; // v7
    assert_eq!(brief["version"], 7);
    let states_after = git(&repo, &["rev-list", "--count", &format!("refs/baton/{}/code.states", &id[..8])]);
    assert!(states_after.parse::<u32>().unwrap() > states_before.parse::<u32>().unwrap());
    let user_tree = files(&repo);
    let user_status = git(&repo, &["status", "--porcelain"]);

    // Over MCP: fork at the version after the first review.
    let fork = lead.ok("resume", json!({"run_id": id, "at_version": 4})).await;
    let fork_id = fork["run_id"].as_str().unwrap().to_string();
    let fork_dir = PathBuf::from(fork["workspace"]["cwd"].as_str().unwrap());
    assert_eq!(fork_dir, repo.join(".baton/forks").join(&fork_id[..8]));
    assert!(fork["note"].as_str().unwrap().contains("is restored in"), "{fork}");
    assert_eq!(files(&fork_dir), at[&4], "the fork's files are the run's files at version 4, byte for byte");
    let forked = lead.ok("inspect", json!({"run_id": fork_id})).await["run"].clone();
    assert_eq!(forked["current_step"], "implement", "the replay up to version 4 is at implement again");
    assert_eq!(forked["visits"], json!({"design": 1, "implement": 2, "review": 1}));
    assert_eq!(forked["outputs"]["review"]["outcome"], "changes_requested");
    assert_eq!(forked["outputs"]["review"]["version"], 4);
    assert_eq!(forked["outputs"]["implement"]["output"], "implemented (round 1)");
    assert_eq!(forked["artifacts"], json!({"round": 1}));
    assert_eq!(forked["forked_from"], json!({"run_id": id, "version": 4}));
    // The original run is untouched, and so is the user's tree.
    let original = lead.ok("inspect", json!({"run_id": id})).await["run"].clone();
    assert_eq!((original["version"].as_u64(), original["current_step"].as_str()), (Some(7), Some("review")));
    assert_eq!(files(&repo), user_tree);
    assert_eq!(git(&repo, &["status", "--porcelain"]), user_status);

    // In the terminal: fork at version 6.
    let (ok, out, err) = cli(&home, &["fork", &id, "--at", "6", "--json"]);
    assert!(ok, "{out}{err}");
    let cli_fork: Value = serde_json::from_str(&out).unwrap();
    let cli_dir = PathBuf::from(cli_fork["workspace"]["cwd"].as_str().unwrap_or_else(|| panic!("{out}")));
    assert_eq!(files(&cli_dir), at[&6], "the terminal's fork has the files of version 6");

    // A fork of the fork: work in the first fork, then fork it at that step.
    std::fs::write(fork_dir.join("shared.txt"), "fork-impl\ntwo\n").unwrap();
    let fork_brief = lead.ok("resume", json!({"run_id": fork_id})).await["brief"].clone();
    let fork_brief = json!({"run_id": fork_id, "version": fork_brief["version"]});
    let after = step(&lead, &repo, &fork_brief, "implemented", 9).await;
    let in_fork = files(&fork_dir);
    let second = lead.ok("resume", json!({"run_id": fork_id, "at_version": after["version"]})).await;
    let second_id = second["run_id"].as_str().unwrap().to_string();
    let second_dir = PathBuf::from(second["workspace"]["cwd"].as_str().unwrap());
    assert_eq!(files(&second_dir), in_fork, "a fork of a fork has the first fork's code");
    let lineage = lead.ok("inspect", json!({"run_id": second_id})).await["run"]["lineage"].clone();
    assert_eq!(lineage, json!([{"run_id": fork_id, "version": after["version"]}, {"run_id": id, "version": 4}]));
    let (ok, shown, _) = cli(&home, &["show", &second_id]);
    assert!(ok && shown.contains(&format!("Forked from {fork_id} at version 2, itself forked from {id} at version 4")), "{shown}");

    // baton diff: the steps, outcomes, artifacts and code between two versions.
    let (ok, diff, err) = cli(&home, &["diff", &id, "--from", "2", "--to", "5"]);
    assert!(ok, "{diff}{err}");
    assert!(diff.contains("#3 ") && diff.contains("#5 ") && !diff.contains("#6 "), "{diff}");
    assert!(diff.contains("v2 active at step `implement` (visit 1)") && diff.contains("v5 active at step `review` (visit 2)"), "{diff}");
    assert!(diff.contains("Artifacts: added [], changed [round]"), "{diff}");
    assert!(diff.contains("-one") && diff.contains("+impl-2") && diff.contains("extra.txt"), "{diff}");
    assert!(!diff.contains("design.md"), "design.md is in both versions: {diff}");
    let (ok, json_diff, _) = cli(&home, &["diff", &id, "--from", "4", "--to", "6", "--json"]);
    let json_diff: Value = serde_json::from_str(&json_diff).unwrap();
    assert!(ok);
    assert_eq!(
        json_diff["outcomes"],
        json!([{"step": "implement", "from": "implemented", "to": "implemented"}, {"step": "review", "from": "changes_requested", "to": "changes_requested"}])
    );
    assert_eq!(json_diff["artifacts"]["changed"], json!(["round"]));

    // inspect shows every visit of one step.
    let visits = lead.ok("inspect", json!({"run_id": id, "step": "review"})).await;
    let seqs: Vec<u64> = visits["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [4, 6], "{visits}");
    let unknown = lead.err("inspect", json!({"run_id": id, "step": "nope"})).await;
    assert_eq!(unknown["field"], "step", "{unknown}");

    // Errors: a version that does not exist, pruned snapshots, a moved repository.
    let missing = lead.err("resume", json!({"run_id": id, "at_version": 99})).await;
    assert_eq!(missing["field"], "at_version", "{missing}");
    assert!(missing["message"].as_str().unwrap().contains("versions are 1 to 7"), "{missing}");
    let (ok, _, err) = cli(&home, &["fork", &id, "--at", "0"]);
    assert!(!ok && err.contains("no version 0"), "{err}");

    // delete removes the run's refs (after the run ends).
    lead.ok("cancel_run", json!({"run_id": second_id})).await;
    assert!(!refs_of(&repo, &second_id).is_empty());
    let (ok, out, err) = cli(&home, &["delete", &second_id]);
    assert!(ok, "{out}{err}");
    assert!(refs_of(&repo, &second_id).is_empty(), "delete removed the run's refs");

    // Pruned snapshots: the first fork's states are gone from the repository.
    lead.ok("cancel_run", json!({"run_id": fork_id})).await;
    let (ok, out, err) = cli(&home, &["delete", &fork_id]);
    assert!(ok, "{out}{err}");
    assert!(refs_of(&repo, &fork_id).is_empty());
    git(&repo, &["worktree", "prune"]);
    git(&repo, &["reflog", "expire", "--expire=now", "--all"]);
    git(&repo, &["gc", "-q", "--prune=now"]);
    assert_eq!(files(&repo), user_tree, "git gc leaves the user's files");

    // prune removes the refs of the runs it deletes.
    let cli_id = cli_fork["run_id"].as_str().unwrap().to_string();
    lead.ok("cancel_run", json!({"run_id": cli_id})).await;
    assert!(!refs_of(&repo, &cli_id).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (ok, out, err) = cli(&home, &["prune", "--older-than", "1ms"]);
    assert!(ok && out.contains(&cli_id), "{out}{err}");
    assert!(refs_of(&repo, &cli_id).is_empty(), "prune removed the run's refs");
    assert!(!refs_of(&repo, &id).is_empty(), "the run in progress keeps its refs");

    // A moved repository.
    let moved = tmp.path().join("moved");
    std::fs::rename(&repo, &moved).unwrap();
    let gone = lead.err("resume", json!({"run_id": id, "at_version": 4})).await;
    assert_eq!(gone["field"], "run_id", "{gone}");
    assert!(gone["message"].as_str().unwrap().contains("not there any more"), "{gone}");
    assert!(gone["fix"].as_str().unwrap().contains("Move the repository back"), "{gone}");
    lead.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_whose_snapshots_were_pruned_is_refused_with_the_field_and_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", "one\ntwo\n");
    let home = fresh_home(&tmp);
    let lead = Server::start_as(&home, &repo, Some("thread-lead")).await;
    let brief = lead.ok("start_workflow", json!({"goal": "Prune me", "template": "feature"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    std::fs::write(repo.join("design.md"), "a plan nobody committed\n").unwrap();
    step(&lead, &repo, &brief, "planned", 1).await;
    std::fs::remove_file(repo.join("design.md")).unwrap();
    for reference in refs_of(&repo, &id) {
        git(&repo, &["update-ref", "-d", &reference]);
    }
    git(&repo, &["reflog", "expire", "--expire=now", "--all"]);
    git(&repo, &["gc", "-q", "--prune=now"]);
    let pruned = lead.err("resume", json!({"run_id": id, "at_version": 2})).await;
    assert_eq!((pruned["code"].as_str(), pruned["field"].as_str()), (Some("not_found"), Some("at_version")), "{pruned}");
    assert!(pruned["message"].as_str().unwrap().contains("no longer in"), "{pruned}");
    assert!(!pruned["fix"].as_str().unwrap().is_empty());
    lead.stop().await;
}

/// Claim `task` of `run_id` as `agent` and report `outcome` (for the implement step, after
/// writing `<task>.txt` in its worktree, left for baton to commit).
async fn task_step(agent: &Server, run_id: &str, task: &str, outcome: &str) -> Value {
    let claim = agent.ok("resume", json!({"run_id": run_id, "claim": task})).await;
    if outcome == "implemented" {
        let dir = Path::new(claim["workdir"].as_str().unwrap_or_else(|| panic!("{claim}")));
        std::fs::write(dir.join(format!("{task}.txt")), format!("work of {task}\n")).unwrap();
    }
    agent
        .ok(
            "advance",
            json!({"run_id": run_id, "task": task, "lease_token": claim["lease_token"], "outcome": outcome, "output": format!("{task} {outcome}")}),
        )
        .await
}

async fn finish_task(a: &Server, b: &Server, run_id: &str, task: &str) -> Value {
    task_step(a, run_id, task, "implemented").await;
    task_step(b, run_id, task, "approved").await;
    task_step(a, run_id, task, "passed").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_around_a_fan_out_re_plan_or_keep_the_joined_tasks_and_their_code() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", "one\ntwo\n");
    let home = fresh_home(&tmp);
    let (lead, a, b) = tokio::join!(
        Server::start_as(&home, &repo, Some("thread-lead")),
        Server::start_as(&home, &repo, Some("thread-a")),
        Server::start_as(&home, &repo, Some("thread-b")),
    );
    let brief = lead.ok("start_workflow", json!({"goal": "Four files", "template": "parallel"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    let tasks: Vec<Value> = ["t1", "t2", "t3", "t4"].iter().map(|t| json!({"id": t, "title": format!("Write {t}.txt")})).collect();
    let plan = json!({ "tasks": tasks });
    lead.ok("advance", json!({"run_id": id, "expected_version": brief["version"], "outcome": "planned", "output": "four", "plan": plan}))
        .await;
    finish_task(&a, &b, &id, "t1").await;
    let done = finish_task(&a, &b, &id, "t2").await;
    assert_eq!(done["status"], "done", "{done}");
    let version = lead.ok("inspect", json!({"run_id": id})).await["run"]["version"].as_u64().unwrap();

    // Before the fan-out: the fork is at the planning step again and plans otherwise.
    let early = lead.ok("resume", json!({"run_id": id, "at_version": 1})).await;
    let early_id = early["run_id"].as_str().unwrap().to_string();
    assert_eq!(early["step"], brief["step"], "{early}");
    let replanned = lead
        .ok(
            "advance",
            json!({"run_id": early_id, "expected_version": early["version"], "outcome": "planned", "output": "one",
                   "plan": {"tasks": [{"id": "other", "title": "Something else"}]}}),
        )
        .await;
    assert_eq!(replanned["tasks"]["total"], 1, "{replanned}");

    // After two of four joined: the fork keeps them, and their code lands at its join.
    let late = lead.ok("resume", json!({"run_id": id, "at_version": version})).await;
    let late_id = late["run_id"].as_str().unwrap().to_string();
    let late_dir = PathBuf::from(late["workspace"]["cwd"].as_str().unwrap());
    let tasks = lead.ok("inspect", json!({"run_id": late_id})).await["run"]["fanout"]["tasks"].clone();
    let statuses: Vec<(String, String)> =
        tasks.as_array().unwrap().iter().map(|t| (t["id"].as_str().unwrap().into(), t["status"].as_str().unwrap().into())).collect();
    assert_eq!(
        statuses,
        [("t1", "done"), ("t2", "done"), ("t3", "ready"), ("t4", "ready")].map(|(t, s)| (t.to_string(), s.to_string())),
        "{tasks}"
    );
    finish_task(&a, &b, &late_id, "t3").await;
    finish_task(&a, &b, &late_id, "t4").await;
    let joined = lead.ok("resume", json!({"run_id": late_id})).await;
    for task in ["t1", "t2", "t3", "t4"] {
        let path = late_dir.join(format!("{task}.txt"));
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{task}: {e} {joined}")), format!("work of {task}\n"));
    }
    // The original still waits for t3 and t4, and the user's tree holds none of it.
    let original = lead.ok("inspect", json!({"run_id": id})).await["run"]["fanout"]["tasks"].clone();
    assert_eq!(original[2]["status"], "ready");
    assert!(!repo.join("t1.txt").exists() && git(&repo, &["status", "--porcelain"]).is_empty());
    for server in [lead, a, b] {
        server.stop().await;
    }
}

/// A fork from a named checkpoint gets the pre-checks of a fork at a version, with the
/// same structured errors: a checkpoint the run does not have, a checkpoint whose code was
/// pruned from the repository, and a repository that moved are refused before any run is
/// made (issue 18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_fork_is_refused_like_a_version_fork_when_its_code_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", "one\ntwo\n");
    let home = fresh_home(&tmp);
    let lead = Server::start_as(&home, &repo, Some("thread-lead")).await;
    let brief = lead.ok("start_workflow", json!({"goal": "Checkpoint me", "template": "feature"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    std::fs::write(repo.join("design.md"), "a plan nobody committed\n").unwrap();
    step(&lead, &repo, &brief, "planned", 1).await; // v2
    let saved = lead.ok("checkpoint", json!({"run_id": id, "name": "wip"})).await;
    assert!(saved["note"].as_str().unwrap_or_default().contains("kept under"), "{saved}");
    let runs = || {
        let (ok, out, err) = cli(&home, &["runs", "--json"]);
        assert!(ok, "{out}{err}");
        serde_json::from_str::<Value>(&out).unwrap()["total"].as_u64().unwrap()
    };
    assert_eq!(runs(), 1);

    let unknown = lead.err("resume", json!({"run_id": id, "checkpoint": "nope"})).await;
    assert_eq!((unknown["code"].as_str(), unknown["field"].as_str()), (Some("not_found"), Some("checkpoint")), "{unknown}");
    assert!(unknown["message"].as_str().unwrap().contains("wip"), "it names the checkpoints there are: {unknown}");

    // Pruned: the run's refs deleted and the repository collected.
    std::fs::remove_file(repo.join("design.md")).unwrap();
    for reference in refs_of(&repo, &id) {
        git(&repo, &["update-ref", "-d", &reference]);
    }
    git(&repo, &["reflog", "expire", "--expire=now", "--all"]);
    git(&repo, &["gc", "-q", "--prune=now"]);
    let pruned = lead.err("resume", json!({"run_id": id, "checkpoint": "wip"})).await;
    let by_version = lead.err("resume", json!({"run_id": id, "at_version": 3})).await;
    assert_eq!((pruned["code"].as_str(), pruned["field"].as_str()), (Some("not_found"), Some("checkpoint")), "{pruned}");
    assert_eq!(pruned["code"], by_version["code"], "the same error as a fork at the checkpoint's version: {by_version}");
    let message = pruned["message"].as_str().unwrap();
    assert!(message.contains("at checkpoint `wip`") && message.contains("no longer in"), "{pruned}");
    assert!(!pruned["fix"].as_str().unwrap().is_empty());
    assert_eq!(runs(), 1, "the refused fork made no run");

    // Moved: the same error, field and fix as a fork at a version.
    let moved = tmp.path().join("moved");
    std::fs::rename(&repo, &moved).unwrap();
    let gone = lead.err("resume", json!({"run_id": id, "checkpoint": "wip"})).await;
    let gone_version = lead.err("resume", json!({"run_id": id, "at_version": 3})).await;
    assert_eq!((gone["code"].as_str(), gone["field"].as_str()), (Some("invalid_state"), Some("run_id")), "{gone}");
    assert_eq!((&gone["code"], &gone["field"], &gone["fix"]), (&gone_version["code"], &gone_version["field"], &gone_version["fix"]));
    assert!(gone["message"].as_str().unwrap().contains("not there any more"), "{gone}");
    assert_eq!(runs(), 1);
    lead.stop().await;
}
