//! Runs in a real git repository, worked by real `baton serve` processes acting as
//! distinct agents (each sends its own Codex thread id): every claimed task gets its own
//! worktree and branch, the join merges the branches into the run's tree (or leaves a
//! conflict for the join step), worktrees go when the run ends, and a fork from a
//! checkpoint restores the uncommitted code into a worktree of its own. Agents that never
//! run `git commit` (as under Codex's default sandbox) still land their code: baton commits
//! each step's changes on the task branch when the step reports, and merges what exists.

use crate::support::git::{git, repository};
use crate::support::{Server, cli, fresh_home};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

const LINES: &str = "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\n";

/// Replace line `n` (from 0) of `dir`/shared.txt and commit it on the worktree's branch.
fn edit_and_commit(dir: &Path, n: usize, text: &str) {
    let path = dir.join("shared.txt");
    let mut lines: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(str::to_string).collect();
    lines[n] = text.to_string();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    git(dir, &["commit", "-qam", text]);
}

/// Agents `lead`, `a`, `b`, `c`: one `baton serve` each, started in the repository.
async fn agents(home: &Path, repo: &Path) -> [Server; 4] {
    let (lead, a, b, c) = tokio::join!(
        Server::start_as(home, repo, Some("thread-lead")),
        Server::start_as(home, repo, Some("thread-a")),
        Server::start_as(home, repo, Some("thread-b")),
        Server::start_as(home, repo, Some("thread-c")),
    );
    [lead, a, b, c]
}

/// Start a `parallel` run and report a plan of two tasks; returns the run id.
async fn plan_two_tasks(lead: &Server, first: &str, second: &str) -> String {
    let brief = lead.ok("start_workflow", json!({"goal": "Edit shared.txt in two places", "template": "parallel"})).await;
    let plan = json!({"tasks": [
        {"id": first, "title": format!("Edit for {first}"), "description": "Change one line of shared.txt"},
        {"id": second, "title": format!("Edit for {second}"), "description": "Change another line of shared.txt"}]});
    let fanned = lead
        .ok("advance", json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": "planned", "output": "two tasks", "plan": plan}))
        .await;
    assert_eq!(fanned["tasks"]["total"], 2, "{fanned}");
    brief["run_id"].as_str().unwrap().to_string()
}

/// Report a task step with the lease from `claim`.
async fn report(agent: &Server, claim: &Value, outcome: &str) -> Value {
    agent
        .ok(
            "advance",
            json!({"run_id": claim["run_id"], "task": claim["task"], "lease_token": claim["lease_token"], "outcome": outcome, "output": format!("{outcome} by {}", agent.thread.as_deref().unwrap())}),
        )
        .await
}

/// Two tasks claimed at once by `a` and `b` edit the same file in their worktrees (task
/// `left` line `lines.0`, `right` line `lines.1`); each is reviewed by the other agent and tested by `c`.
/// Returns the last test report's answer and the claims by task id.
async fn work_two_tasks(run_id: &str, repo: &Path, [_, a, b, c]: &[Server; 4], lines: (usize, usize)) -> (Value, [Value; 2]) {
    let head = git(repo, &["rev-parse", "HEAD"]);
    let claim = json!({"run_id": run_id, "claim": "next"});
    let (first, second) = tokio::join!(a.ok("resume", claim.clone()), b.ok("resume", claim));
    assert_ne!(first["task"], second["task"], "one task each");
    assert_ne!(first["workdir"], second["workdir"], "separate worktrees");
    assert_ne!(first["branch"], second["branch"], "separate branches");
    for claimed in [&first, &second] {
        let dir = Path::new(claimed["workdir"].as_str().unwrap());
        assert!(dir.starts_with(repo.join(".baton/worktrees")), "{claimed}");
        assert_eq!(git(dir, &["rev-parse", "--show-toplevel"]), dir.to_string_lossy(), "a worktree of its own");
        assert_eq!(git(dir, &["rev-parse", "--abbrev-ref", "HEAD"]), claimed["branch"].as_str().unwrap());
        assert_eq!((claimed["base"].as_str(), claimed["repo"].as_str()), (Some(head.as_str()), repo.to_str()));
        assert_eq!(claimed["note"], Value::Null, "the worktree was made without trouble: {claimed}");
    }
    for claimed in [&first, &second] {
        let line = if claimed["task"] == "left" { lines.0 } else { lines.1 };
        edit_and_commit(Path::new(claimed["workdir"].as_str().unwrap()), line, &format!("edited by {}", claimed["task"]));
    }
    assert_main_tree_untouched(repo, &head);
    report(a, &first, "implemented").await;
    report(b, &second, "implemented").await;

    // Reviews by the agent that did not implement the task, in the same worktree.
    let review_first = b.ok("resume", json!({"run_id": run_id, "claim": first["task"]})).await;
    let review_second = a.ok("resume", json!({"run_id": run_id, "claim": second["task"]})).await;
    assert_eq!((review_first["role"].as_str(), &review_first["workdir"]), (Some("reviewer"), &first["workdir"]));
    assert_eq!(review_second["workdir"], second["workdir"]);
    report(b, &review_first, "approved").await;
    report(a, &review_second, "approved").await;
    assert_main_tree_untouched(repo, &head);

    let test_one = c.ok("resume", json!({"run_id": run_id, "claim": "next"})).await;
    assert_eq!(test_one["role"], "tester");
    let done_one = report(c, &test_one, "passed").await;
    assert_eq!(done_one["status"], "done");
    assert_main_tree_untouched(repo, &head);
    let test_two = c.ok("resume", json!({"run_id": run_id, "claim": "next"})).await;
    let last = report(c, &test_two, "passed").await;
    let by_task = if first["task"] == "left" { [first, second] } else { [second, first] };
    (last, by_task)
}

fn assert_main_tree_untouched(repo: &Path, head: &str) {
    assert_eq!(std::fs::read_to_string(repo.join("shared.txt")).unwrap(), LINES, "the main tree's file is untouched");
    assert_eq!(git(repo, &["status", "--porcelain"]), "", "the main tree is clean (.baton/ is excluded)");
    assert_eq!(git(repo, &["rev-parse", "HEAD"]), head);
}

/// Types of a run's events, oldest first.
async fn event_types(server: &Server, run_id: &str) -> Vec<String> {
    let details = server.ok("inspect", json!({"run_id": run_id, "history_limit": 1000})).await;
    details["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_tasks_work_in_their_own_worktrees_and_merge_at_the_join() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", LINES);
    let home = fresh_home(&tmp);
    let agents = agents(&home, &repo).await;
    let lead = &agents[0];
    let run_id = plan_two_tasks(lead, "left", "right").await;
    let (last, [left, right]) = work_two_tasks(&run_id, &repo, &agents, (0, 7)).await;

    // The last test joined the fan-out: that caller merged both branches before answering.
    let note = last["note"].as_str().unwrap_or_default();
    assert!(note.contains("All tasks have joined") && note.contains("baton merged 2 task branches"), "{last}");
    assert!(note.contains("task `left` as merge commit") && note.contains("task `right` as merge commit"), "{last}");
    let shared = std::fs::read_to_string(repo.join("shared.txt")).unwrap();
    assert!(shared.starts_with("edited by \"left\"\n") && shared.ends_with("edited by \"right\"\n"), "both edits: {shared}");
    let merges = git(&repo, &["log", "--merges", "--format=%s"]);
    assert_eq!(merges.lines().count(), 2, "{merges}");
    for claim in [&left, &right] {
        assert!(merges.contains(claim["branch"].as_str().unwrap()), "{merges}");
    }
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");

    // The join step's brief says what was merged; resuming again merges nothing more.
    let brief = lead.ok("resume", json!({"run_id": run_id})).await["brief"].clone();
    assert_eq!((brief["step"].as_str(), brief["role"].as_str()), (Some("integrate"), Some("tester")));
    assert_eq!(brief["merge"]["state"], "done");
    assert_eq!(brief["merge"]["merged"], json!(["left", "right"]));
    assert!(brief["next_action"].as_str().unwrap().starts_with("baton merged 2 task branches into"), "{brief}");
    agents[2].ok("resume", json!({"run_id": run_id})).await;
    let types = event_types(lead, &run_id).await;
    assert_eq!(types.iter().filter(|t| *t == "branches_merged").count(), 1, "merged exactly once: {types:?}");

    // The run ends: its worktrees go, its branches stay.
    let done = lead.advance(&brief, "passed", "all tests pass on the integrated tree").await;
    assert_eq!(done["status"], "completed");
    assert!(done["note"].as_str().unwrap().contains("Removed the run's worktrees"), "{done}");
    for claim in [&left, &right] {
        assert!(!Path::new(claim["workdir"].as_str().unwrap()).exists(), "{claim}");
        assert!(!git(&repo, &["branch", "--list", claim["branch"].as_str().unwrap()]).is_empty(), "the branch is kept");
    }
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1, "only the main tree is left");
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicting_tasks_leave_the_merge_to_the_join_step() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", LINES);
    let home = fresh_home(&tmp);
    let agents = agents(&home, &repo).await;
    let lead = &agents[0];
    let run_id = plan_two_tasks(lead, "left", "right").await;
    let (last, [_, right]) = work_two_tasks(&run_id, &repo, &agents, (2, 2)).await;
    assert!(last["note"].as_str().unwrap().contains("stopped on conflicts in shared.txt"), "{last}");

    // `left` merged, `right` conflicts: that merge is left in progress in the main tree.
    let brief = lead.ok("resume", json!({"run_id": run_id})).await["brief"].clone();
    assert_eq!(brief["step"], "integrate");
    let merge = &brief["merge"];
    assert_eq!((merge["state"].as_str(), &merge["merged"]), (Some("done"), &json!(["left"])));
    assert_eq!(merge["conflict"], json!({"task": "right", "branch": right["branch"], "files": ["shared.txt"]}));
    let action = brief["next_action"].as_str().unwrap();
    for words in
        ["task `right`", "stopped on conflicts in shared.txt", "resolve them", "`git commit`", "then play this step", "Play the tester"]
    {
        assert!(action.contains(words), "`{words}` in: {action}");
    }
    assert_eq!(git(&repo, &["rev-parse", "MERGE_HEAD"]), git(&repo, &["rev-parse", right["branch"].as_str().unwrap()]));
    assert_eq!(git(&repo, &["diff", "--name-only", "--diff-filter=U"]), "shared.txt");
    assert!(std::fs::read_to_string(repo.join("shared.txt")).unwrap().contains("<<<<<<<"));
    assert_eq!(git(&repo, &["log", "--merges", "--format=%s"]).lines().count(), 1, "only left's merge is committed");

    // Resuming again neither re-merges nor touches the conflict.
    let again = agents[3].ok("resume", json!({"run_id": run_id})).await;
    assert_eq!(again["brief"]["merge"], brief["merge"]);
    assert_eq!(event_types(lead, &run_id).await.iter().filter(|t| *t == "branches_merged").count(), 1);

    // The join step's agent resolves, commits, and plays the step.
    std::fs::write(repo.join("shared.txt"), LINES.replace("three", "edited by both")).unwrap();
    git(&repo, &["commit", "-qam", "Merge right, resolving shared.txt"]);
    let done = lead.advance(&brief, "passed", "resolved and tested").await;
    assert_eq!(done["status"], "completed");
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1, "worktrees removed at the end");
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test]
async fn a_fork_from_a_checkpoint_restores_the_uncommitted_code_in_its_own_worktree() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", LINES);
    let home = fresh_home(&tmp);
    let lead = Server::start_as(&home, &repo, Some("thread-lead")).await;
    let brief = lead.ok("start_workflow", json!({"goal": "Refactor shared.txt"})).await;
    let run_id = brief["run_id"].as_str().unwrap().to_string();
    let checkpoint_head = git(&repo, &["rev-parse", "HEAD"]);

    // Uncommitted work: a changed file and a new one.
    let in_progress = LINES.replace("one", "work in progress");
    std::fs::write(repo.join("shared.txt"), &in_progress).unwrap();
    std::fs::write(repo.join("notes.txt"), "new file\n").unwrap();
    let saved = lead.ok("checkpoint", json!({"run_id": run_id, "name": "wip"})).await;
    let snapshot = saved["workspace"]["git_snapshot"].as_str().expect("the uncommitted state is kept").to_string();
    let reference = format!("refs/baton/{}/wip", &run_id[..8]);
    assert!(saved["note"].as_str().unwrap().contains(&reference), "{saved}");
    assert_eq!(git(&repo, &["rev-parse", &reference]), snapshot);
    assert_eq!(std::fs::read_to_string(repo.join("shared.txt")).unwrap(), in_progress, "checkpointing changes no file");

    // Later work, committed.
    std::fs::write(repo.join("shared.txt"), "later\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "later"]);
    let later_head = git(&repo, &["rev-parse", "HEAD"]);

    let fork = lead.ok("resume", json!({"run_id": run_id, "checkpoint": "wip"})).await;
    let fork_dir = PathBuf::from(fork["workspace"]["cwd"].as_str().unwrap());
    assert_eq!(fork_dir, repo.join(".baton/forks").join(&fork["run_id"].as_str().unwrap()[..8]));
    assert!(fork["note"].as_str().unwrap().contains("plus its uncommitted changes"), "{fork}");
    assert_eq!(git(&fork_dir, &["rev-parse", "HEAD"]), checkpoint_head);
    assert_eq!(std::fs::read_to_string(fork_dir.join("shared.txt")).unwrap(), in_progress);
    assert_eq!(std::fs::read_to_string(fork_dir.join("notes.txt")).unwrap(), "new file\n");
    let status = git(&fork_dir, &["status", "--porcelain"]);
    assert!(status.contains("M shared.txt") && status.contains("?? notes.txt"), "uncommitted again: {status}");
    // The user's tree is as they left it.
    assert_eq!(std::fs::read_to_string(repo.join("shared.txt")).unwrap(), "later\n");
    assert_eq!((git(&repo, &["rev-parse", "HEAD"]), git(&repo, &["status", "--porcelain"])), (later_head, String::new()));

    // A checkpoint of the fork keeps the fork's code (its worktree), not the session's tree.
    std::fs::write(fork_dir.join("notes.txt"), "edited in the fork\n").unwrap();
    let fork_id = fork["run_id"].as_str().unwrap();
    let saved = lead.ok("checkpoint", json!({"run_id": fork_id, "name": "in-fork"})).await;
    assert_eq!(saved["workspace"]["cwd"].as_str(), fork_dir.to_str());
    let again = lead.ok("resume", json!({"run_id": fork_id, "checkpoint": "in-fork"})).await;
    let again_dir = PathBuf::from(again["workspace"]["cwd"].as_str().unwrap());
    assert!(again_dir.starts_with(repo.join(".baton/forks")), "{again}");
    assert_eq!(std::fs::read_to_string(again_dir.join("notes.txt")).unwrap(), "edited in the fork\n");
    assert_eq!(std::fs::read_to_string(again_dir.join("shared.txt")).unwrap(), in_progress);
    lead.stop().await;

    // Cancelling the fork from a terminal keeps its worktree: it holds uncommitted work.
    let (ok, out, err) = cli(&home, &["cancel", fork_id]);
    assert!(ok, "{out} {err}");
    assert!(out.contains(&format!("Kept the worktree {}", fork_dir.display())), "{out}");
    assert!(fork_dir.join("notes.txt").exists());
}

#[tokio::test]
async fn git_failures_are_explained_and_cancelling_from_a_terminal_removes_worktrees() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", LINES);
    let home = fresh_home(&tmp);
    let lead = Server::start_as(&home, &repo, Some("thread-lead")).await;
    let run_id = plan_two_tasks(&lead, "api", "ui").await;
    let api = lead.ok("resume", json!({"run_id": run_id, "claim": "api"})).await;
    let api_dir = PathBuf::from(api["workdir"].as_str().unwrap());
    assert!(api_dir.join("shared.txt").exists());

    // Something else occupies the next task's worktree directory: the brief says so.
    let blocked = repo.join(".baton/worktrees").join(format!("{}-ui", &run_id[..8]));
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join("mine.txt"), "not baton's").unwrap();
    let ui = lead.ok("resume", json!({"run_id": run_id, "claim": "ui"})).await;
    let note = ui["note"].as_str().expect("a note on the failure");
    assert!(note.contains("exists and is not a git worktree") && note.contains("Fix: Move that directory away"), "{note}");
    lead.stop().await;

    let (ok, out, err) = cli(&home, &["cancel", &run_id, "--reason", "stop"]);
    assert!(ok, "{out} {err}");
    assert!(out.contains("Removed the run's worktrees"), "{out}");
    assert!(!api_dir.exists(), "the task worktree is removed");
    assert!(blocked.join("mine.txt").exists(), "what baton did not create stays");
    assert!(!git(&repo, &["branch", "--list", api["branch"].as_str().unwrap()]).is_empty());
}

/// The events of a run, oldest first.
async fn events(server: &Server, run_id: &str) -> Vec<Value> {
    let details = server.ok("inspect", json!({"run_id": run_id, "history_limit": 1000})).await;
    details["events"].as_array().unwrap().clone()
}

/// The `code` of the `task_advanced` events of `task`, oldest first.
async fn code_of(server: &Server, run_id: &str, task: &str) -> Vec<Value> {
    let all = events(server, run_id).await;
    all.into_iter().filter(|e| e["type"] == "task_advanced" && e["task"] == task).map(|e| e["code"].clone()).collect()
}

/// Write files into a task's worktree the way a sandboxed agent does: no `git` at all.
fn write_without_git(claim: &Value, files: &[(&str, &str)]) {
    let dir = Path::new(claim["workdir"].as_str().unwrap());
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Work both tasks of a two-task plan to the join, every agent only writing files:
/// `a` and `b` implement (writing `writes(task)`), review each other's, `c` tests. Returns
/// the last report's answer and the first claims, by task id.
async fn work_without_commits(
    run_id: &str,
    [_, a, b, c]: &[Server; 4],
    writes: impl Fn(&str) -> Vec<(&'static str, &'static str)>,
) -> (Value, Vec<(String, Value, Value)>) {
    let claim = json!({"run_id": run_id, "claim": "next"});
    let (first, second) = tokio::join!(a.ok("resume", claim.clone()), b.ok("resume", claim));
    let mut claims = Vec::new();
    for (agent, claimed) in [(a, first), (b, second)] {
        let task = claimed["task"].as_str().unwrap().to_string();
        write_without_git(&claimed, &writes(&task));
        let reported = report(agent, &claimed, "implemented").await;
        claims.push((task, claimed, reported));
    }
    // Reviews by the other agent: the brief names what the implementer's step committed.
    let mut reviews = Vec::new();
    for (reviewer, (task, _, _)) in [(b, &claims[0]), (a, &claims[1])] {
        let review = reviewer.ok("resume", json!({"run_id": run_id, "claim": task})).await;
        assert_eq!(review["role"], "reviewer", "{review}");
        reviews.push((reviewer, review));
    }
    for (i, (reviewer, review)) in reviews.iter().enumerate() {
        claims[i].2 = json!({"implemented": claims[i].2.clone(), "review": review.clone()});
        report(reviewer, review, "approved").await;
    }
    let mut last = Value::Null;
    for _ in 0..2 {
        let test = c.ok("resume", json!({"run_id": run_id, "claim": "next"})).await;
        assert_eq!(test["role"], "tester");
        last = report(c, &test, "passed").await;
    }
    (last, claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_that_never_commit_land_their_code_through_merge_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", LINES);
    std::fs::write(repo.join(".gitignore"), "*.log\n").unwrap();
    git(&repo, &["add", ".gitignore"]);
    git(&repo, &["commit", "-qm", "ignore logs"]);
    let base = git(&repo, &["rev-parse", "HEAD"]);
    let home = fresh_home(&tmp);
    let agents = agents(&home, &repo).await;
    let lead = &agents[0];
    let run_id = plan_two_tasks(lead, "left", "right").await;
    let writes = |task: &str| match task {
        "left" => vec![
            ("left.txt", "the left feature\n"),
            ("shared.txt", "one\ntwo\nthree\nfour\nfive\nsix\nseven\nleft\n"),
            ("build.log", "noise"),
        ],
        _ => vec![("right.txt", "the right feature\nin two lines\n"), ("build.log", "noise")],
    };
    let (last, claims) = work_without_commits(&run_id, &agents, writes).await;

    for (task, claimed, seen) in &claims {
        let dir = PathBuf::from(claimed["workdir"].as_str().unwrap());
        let branch = claimed["branch"].as_str().unwrap();
        // The implementer's report: baton committed its files, as the agent, on the branch.
        let note = seen["implemented"]["note"].as_str().unwrap_or_default();
        assert!(note.contains("baton committed what was left uncommitted as"), "{note}");
        let code = code_of(lead, &run_id, task).await;
        assert_eq!(code.len(), 3, "implement, review and test each recorded their code: {code:?}");
        let implemented = &code[0];
        let commit = implemented["commit"].as_str().expect("baton's commit").to_string();
        assert_eq!(implemented["from"].as_str(), Some(base.as_str()));
        assert_eq!(implemented["head"].as_str(), Some(commit.as_str()));
        assert_eq!(implemented["agent_commits"], 0);
        let files: Vec<&str> = implemented["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
        let expected: &[&str] = if task == "left" { &["left.txt", "shared.txt"] } else { &["right.txt"] };
        assert_eq!(files, expected, "tracked and new files, not the ignored build.log");
        assert_eq!(git(&repo, &["log", "-1", "--format=%H", branch]), commit);
        let identity = git(&repo, &["log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", &commit]);
        let agent = if identity.contains("thread-a") { "thread-a" } else { "thread-b" };
        assert_eq!(
            identity,
            format!(
                "codex {agent} <{agent}@codex.baton.invalid>|baton <baton@baton.invalid>|{task}: implement (implementer) implemented: implemented by {agent}"
            )
        );
        // The reviewer's brief names that commit, its diffstat and how to see it.
        let review = &seen["review"];
        assert_eq!(review["head"].as_str(), Some(commit.as_str()), "{review}");
        let text = review["code"].as_str().unwrap();
        assert!(text.contains(&commit[..10]) && text.contains(&format!("git -C {} show {}", dir.display(), &commit[..10])), "{text}");
        let stat = if task == "left" { "2 files, +2 -1: left.txt (+1 -0), shared.txt (+1 -1)" } else { "1 file, +2 -0: right.txt (+2 -0)" };
        assert!(text.contains(stat), "{text}");
        assert!(text.contains(&format!("diff {} {}", &base[..10], &commit[..10])), "{text}");
        // Review and test changed nothing, and their records say so.
        for later in &code[1..] {
            assert_eq!((later["commit"].clone(), later["files_total"].clone()), (Value::Null, json!(0)), "{later}");
            assert_eq!(later["head"].as_str(), Some(commit.as_str()));
        }
        assert_eq!(git(&dir, &["status", "--porcelain", "--ignored"]), "!! build.log", "only the ignored file was left");
    }

    // The join merged both branches through merge commits, and HEAD has every file.
    let note = last["note"].as_str().unwrap_or_default();
    assert!(note.contains("baton merged 2 task branches") && !note.contains("nothing to merge"), "{last}");
    let merges = git(&repo, &["log", "--merges", "--format=%H %s"]);
    assert_eq!(merges.lines().count(), 2, "{merges}");
    for (_, claimed, _) in &claims {
        let tip = git(&repo, &["rev-parse", claimed["branch"].as_str().unwrap()]);
        assert!(Command::new("git").arg("-C").arg(&repo).args(["merge-base", "--is-ancestor", &tip, "HEAD"]).status().unwrap().success());
    }
    assert_eq!(std::fs::read_to_string(repo.join("left.txt")).unwrap(), "the left feature\n");
    assert_eq!(std::fs::read_to_string(repo.join("right.txt")).unwrap(), "the right feature\nin two lines\n");
    assert!(std::fs::read_to_string(repo.join("shared.txt")).unwrap().ends_with("seven\nleft\n"));
    assert!(!repo.join("build.log").exists(), "ignored files are never committed");
    let brief = lead.ok("resume", json!({"run_id": run_id})).await["brief"].clone();
    let merge = &brief["merge"];
    assert_eq!(merge["merged"], json!(["left", "right"]), "{merge}");
    assert_eq!(merge["merges"][0]["files"], json!(["left.txt", "shared.txt"]), "{merge}");
    assert_eq!(merge["merges"][1]["files"], json!(["right.txt"]), "{merge}");
    for m in merge["merges"].as_array().unwrap() {
        assert!(merges.contains(m["commit"].as_str().unwrap()), "the recorded merge commit is in HEAD's history: {m}");
    }

    // The run ends: the worktrees (all their work committed) are removed.
    let done = lead.advance(&brief, "passed", "all tests pass on the integrated tree").await;
    assert_eq!(done["status"], "completed");
    assert!(done["note"].as_str().unwrap().contains("Removed the run's worktrees"), "{done}");
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 1, "only the main tree is left");
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_that_changed_nothing_is_nothing_to_merge_and_a_refused_commit_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", LINES);
    let home = fresh_home(&tmp);
    let agents = agents(&home, &repo).await;
    let lead = &agents[0];
    let run_id = plan_two_tasks(lead, "left", "idle").await;

    // A hook that refuses one commit: baton's commit of `left` fails once, and says why.
    let hook = repo.join(".git/hooks/pre-commit");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    let marker = tmp.path().join("refused-once");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\n[ -e '{0}' ] && exit 0\ntouch '{0}'\necho 'lint: trailing spaces' >&2\nexit 1\n", marker.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let [_, a, b, c] = &agents;
    let claim = json!({"run_id": run_id, "claim": "left"});
    let left = a.ok("resume", claim).await;
    write_without_git(&left, &[("left.txt", "left\n")]);
    let refused = report(a, &left, "implemented").await;
    let note = refused["note"].as_str().unwrap();
    assert!(note.contains("were NOT committed") && note.contains("lint: trailing spaces") && note.contains("Fix:"), "{note}");
    let dir = PathBuf::from(left["workdir"].as_str().unwrap());
    assert_eq!(git(&dir, &["status", "--porcelain"]), "?? left.txt", "the changes stay, uncommitted");
    let review = b.ok("resume", json!({"run_id": run_id, "claim": "left"})).await;
    assert!(review["code"].as_str().unwrap().contains("NOT committed"), "{review}");
    // The next report commits what is left.
    let reviewed = report(b, &review, "approved").await;
    assert!(reviewed["note"].as_str().unwrap().contains("baton committed"), "{reviewed}");
    let author = git(&dir, &["log", "-1", "--format=%an"]);
    assert_eq!(author, "codex thread-b", "the reporting agent is the author of what its step committed");

    // `idle` goes through its pipeline without touching a file.
    let idle = b.ok("resume", json!({"run_id": run_id, "claim": "idle"})).await;
    // A client cannot forge what baton committed: the calling process replaces `code`.
    let forged = json!({"worktree": "/", "commit": "deadbeef", "head": "deadbeef", "files_total": 0});
    let idled = b
        .ok("advance", json!({"run_id": run_id, "task": "idle", "lease_token": idle["lease_token"], "outcome": "implemented", "output": "nothing to do", "code": forged}))
        .await;
    let recorded = events(lead, &run_id).await.into_iter().rfind(|e| e["type"] == "task_advanced" && e["task"] == "idle").unwrap();
    assert_eq!(recorded["code"]["worktree"], idle["workdir"], "{recorded}");
    assert!(!recorded.to_string().contains("deadbeef"), "{recorded}");
    assert!(idled["note"].as_str().unwrap().contains("changed nothing"), "{idled}");
    let idle_review = a.ok("resume", json!({"run_id": run_id, "claim": "idle"})).await;
    assert!(idle_review["code"].as_str().unwrap().contains("Step `implement` (codex thread-b) changed nothing"), "{idle_review}");
    report(a, &idle_review, "approved").await;
    let mut last = Value::Null;
    for _ in 0..2 {
        let test = c.ok("resume", json!({"run_id": run_id, "claim": "next"})).await;
        last = report(c, &test, "passed").await;
    }
    let note = last["note"].as_str().unwrap();
    assert!(note.contains("baton merged 1 task branch") && note.contains("task `left` as merge commit"), "{note}");
    assert!(note.contains("Warning: nothing to merge for task `idle`"), "{note}");
    let brief = lead.ok("resume", json!({"run_id": run_id})).await["brief"].clone();
    assert_eq!((&brief["merge"]["merged"], &brief["merge"]["nothing_to_merge"]), (&json!(["left"]), &json!(["idle"])), "{brief}");
    assert!(brief["next_action"].as_str().unwrap().contains("nothing to merge for task `idle`"), "{brief}");
    let merges = git(&repo, &["log", "--merges", "--format=%s"]);
    assert_eq!(merges.lines().count(), 1, "no merge recorded for the idle task: {merges}");
    assert!(!merges.contains("idle"));
    assert!(repo.join("left.txt").exists());
    let merged = events(lead, &run_id).await.into_iter().find(|e| e["type"] == "branches_merged").unwrap();
    assert_eq!(merged["report"]["nothing_to_merge"], json!(["idle"]), "{merged}");
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_to_a_tasks_question_commits_what_was_left_in_its_worktree() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", LINES);
    let home = fresh_home(&tmp);
    let agents = agents(&home, &repo).await;
    let [lead, a, b, _] = &agents;
    let run_id = plan_two_tasks(lead, "api", "ui").await;
    // Review asks for changes until the implement loop is used up: the task asks a human.
    let mut last = Value::Null;
    for round in 0..4 {
        let build = a.ok("resume", json!({"run_id": run_id, "claim": "api"})).await;
        let text = format!("round {round}\n");
        write_without_git(&build, &[("api.txt", text.as_str())]);
        if round == 0 {
            // A refused report leaves no commit behind: the changes are uncommitted again.
            let dir = Path::new(build["workdir"].as_str().unwrap());
            let tip = git(dir, &["rev-parse", "HEAD"]);
            let refused = a
                .err(
                    "advance",
                    json!({"run_id": run_id, "task": "api", "lease_token": build["lease_token"], "outcome": "bogus", "output": "x"}),
                )
                .await;
            assert!(refused.to_string().contains("not an outcome"), "{refused}");
            assert_eq!((git(dir, &["rev-parse", "HEAD"]), git(dir, &["status", "--porcelain"])), (tip, "?? api.txt".to_string()));
        }
        report(a, &build, "implemented").await;
        let review = b.ok("resume", json!({"run_id": run_id, "claim": "api"})).await;
        last = report(b, &review, "changes_requested").await;
    }
    assert_eq!(last["status"], "awaiting_human", "{last}");
    let dir = PathBuf::from(last["workdir"].as_str().unwrap());
    // Someone fixes it by hand in the worktree, then answers for the task.
    std::fs::write(dir.join("fix.txt"), "fixed by hand\n").unwrap();
    let answered = lead.ok("answer_human", json!({"run_id": run_id, "task": "api", "answer": "continue"})).await;
    let note = answered["note"].as_str().unwrap_or_default();
    assert!(note.starts_with("The answer to the task's question (codex thread-lead): baton committed"), "{answered}");
    let event = events(lead, &run_id).await.into_iter().rfind(|e| e["type"] == "human_answered").unwrap();
    let commit = event["code"]["commit"].as_str().expect("the answer's commit is recorded").to_string();
    assert_eq!(event["code"]["files"], json!([{"path": "fix.txt", "added": 1, "removed": 0}]), "{event}");
    assert_eq!(git(&dir, &["log", "-1", "--format=%H|%an|%s"]), format!("{commit}|codex thread-lead|api: answered `continue`"));
    // The next implementer starts from that commit, and its brief says where it came from.
    let again = a.ok("resume", json!({"run_id": run_id, "claim": "api"})).await;
    assert_eq!(again["head"].as_str(), Some(commit.as_str()), "{again}");
    assert!(
        again["code"].as_str().unwrap().starts_with("The answer to the task's question (codex thread-lead): baton committed"),
        "{again}"
    );
    for agent in agents {
        agent.stop().await;
    }
}
