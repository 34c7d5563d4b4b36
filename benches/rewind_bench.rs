//! `cargo bench --bench rewind_bench`: what the always-on snapshot of the run's tree costs.
//! A repository of 10,000 committed files; a run whose two steps loop (`work` <-> `check`)
//! reports 100 steps through a real `baton serve`, each `work` step editing one file (so
//! every second step makes a new state commit, the others find the tree unchanged). The
//! same run outside git is the advance without a snapshot. Prints p50/p99 of both, and the
//! refs and disk the 100 steps left in the repository.
//! Set BATON_BENCH_DIR to measure on a particular disk (default: $TMPDIR/baton-bench).

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// The tests' support module: each bench uses a part of it (the test binary uses all of it,
// and its dead code is checked there).
#[path = "../tests/it/support/mod.rs"]
#[allow(dead_code)]
mod support;

use support::bench::{self, Stats, dir_bytes, report};
use support::git::git;

const FILES: usize = 10_000;
const STEPS: usize = 100;

/// A directory of `FILES` files in 100 subdirectories; committed when `commit`.
fn tree(dir: &Path, commit: bool) {
    for i in 0..FILES {
        let sub = dir.join(format!("d{:02}", i % 100));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    if commit {
        git(dir, &["init", "-q", "-b", "main"]);
        git(dir, &["add", "-A"]);
        git(dir, &["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "10k files"]);
    }
}

/// Report `STEPS` steps of a looping run started in `cwd`; each step's latency, and the run id.
async fn steps(home: &Path, cwd: &Path) -> (Vec<Duration>, String) {
    let agent = bench::session(home, cwd, Some("bench"), &[]).await;
    let template = json!({"name": "loop", "start": "work", "steps": [
        {"name": "work", "role": "implementer", "outcomes": {"done": "check"}, "max_visits": 1000},
        {"name": "check", "role": "reviewer", "outcomes": {"again": "work", "ok": "done"}}]});
    let mut brief = agent.ok("start_workflow", json!({"goal": "bench", "template_definition": template})).await;
    let run_id = brief["run_id"].as_str().unwrap().to_string();
    let mut samples = Vec::with_capacity(STEPS);
    for i in 0..STEPS {
        let outcome = if brief["step"] == "work" { "done" } else { "again" };
        if outcome == "done" {
            std::fs::write(cwd.join(format!("d{:02}/f{i}.txt", i % 100)), format!("edited at step {i}\n")).unwrap();
        }
        let started = Instant::now();
        brief = agent
            .ok("advance", json!({"run_id": run_id, "expected_version": brief["version"], "outcome": outcome, "output": "step"}))
            .await;
        samples.push(started.elapsed());
    }
    agent.stop().await;
    (samples, run_id)
}

fn main() {
    let base = std::env::var_os("BATON_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("baton-bench"));
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("temp dir");
    let (repo, plain) = (dir.path().join("repo"), dir.path().join("plain"));
    tree(&repo, true);
    tree(&plain, false);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let objects_before = dir_bytes(&repo.join(".git/objects")).0;
        let (without, _) = steps(&dir.path().join("home-plain"), &plain).await;
        let (with, run_id) = steps(&dir.path().join("home-git"), &repo).await;
        let objects_after = dir_bytes(&repo.join(".git/objects")).0;
        println!("advance of a run step, {FILES}-file tree, {STEPS} steps (half of them change one file):");
        report("  outside git (no snapshot)", &Stats::of(without));
        report("  in git, with the tree's snapshot", &Stats::of(with));
        let refs = git(&repo, &["for-each-ref", "--format=%(refname)", &format!("refs/baton/{}/", &run_id[..8])]);
        let states = git(&repo, &["rev-list", "--count", &format!("refs/baton/{}/code.states", &run_id[..8])]);
        println!(
            "per {STEPS} steps: {} ref(s), {states} commits reachable from the states ref (user's history included), {:.1} KiB more in .git/objects (loose)",
            refs.lines().count(),
            (objects_after.saturating_sub(objects_before)) as f64 / 1024.0
        );
        assert_eq!(git(&repo, &["status", "--porcelain"]).lines().count(), STEPS / 2, "only the bench's own edits show");
    });
}
