//! Power cuts right after an acknowledgement lose nothing: the real `baton serve` binary on
//! a loop-mounted ext4, driven over MCP stdio; after each trial's last acknowledged change
//! the file system is shut down without flushing its journal (EXT4_IOC_SHUTDOWN with
//! NOLOGFLUSH, as a power cut leaves it), every process using it is killed, and it is
//! unmounted and mounted again (ext4 replays its journal). Every acknowledged run and
//! event must be there, in 20 trials.
//!
//! Without the store's fdatasync (sled's own flush only uses sync_file_range) this test
//! lost every acknowledged change of every trial.

use crate::support;
use crate::support::loopfs::LoopFs;
use crate::support::{Server, noise, ping_pong};
use serde_json::json;

const TRIALS: usize = 20;

/// How many acknowledged changes of `acked` the server no longer has.
async fn lost_changes(server: &Server, home: &std::path::Path, acked: &[(String, u64)]) -> u64 {
    let mut lost = 0;
    for (run_id, version) in acked {
        match server.call("inspect", json!({"run_id": run_id, "history_limit": 1000})).await {
            Ok(details) => {
                let have = details["run"]["version"].as_u64().unwrap();
                let events = details["events"].as_array().unwrap().len() as u64;
                assert_eq!(events, have, "run {run_id}: events must be dense 1..=version");
                lost += version.saturating_sub(have);
            }
            Err(e) => {
                // Missing, or the database refuses to open because it lost acknowledged
                // changes (its integrity record knows): either way they are lost.
                assert!(e["code"] == "not_found" || e["code"] == "storage", "run {run_id}: {e}");
                println!("run {run_id}: {}", e["message"]);
                if e["code"] == "storage" && lost == 0 {
                    // Why the owner could not open it (a panic in sled's recovery is there).
                    let log = std::fs::read_to_string(home.join("owner.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    println!("owner.log, last lines first:\n{}", tail.join("\n"));
                }
                lost += version;
            }
        }
    }
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_change_is_lost_in_a_power_cut() {
    if !support::loopfs::available("no_acknowledged_change_is_lost_in_a_power_cut") {
        return;
    }
    let mut fs = LoopFs::new(64);
    let home = fs.mnt.join("home");
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut lost_per_trial = Vec::new();
    for trial in 0..TRIALS {
        let server = Server::start(&home).await;
        lost_per_trial.push(lost_changes(&server, &home, &acked).await);
        // The acknowledged state of this mount is now what the server has.
        for (run_id, version) in acked.iter_mut() {
            *version = match server.call("inspect", json!({"run_id": run_id, "history_limit": 1})).await {
                Ok(d) => d["run"]["version"].as_u64().unwrap(),
                Err(_) => 0,
            };
        }
        acked.retain(|(_, v)| *v > 0);
        // A new run, a few advances on it, and one on an older run: creation and changes.
        let mut brief = server.ok("start_workflow", json!({"goal": format!("trial {trial}"), "template_definition": ping_pong()})).await;
        acked.push((brief["run_id"].as_str().unwrap().to_string(), 1));
        for step in 0..(1 + trial % 5) {
            // Some outputs are large: the log grows (new blocks) and sled keeps such
            // values in files of their own (blobs), which must be durable too.
            let output = if step % 2 == 0 { noise((trial * 10 + step) as u64, 70_000) } else { format!("step of trial {trial}") };
            brief = server.advance(&brief, "next", &output).await;
            acked.last_mut().unwrap().1 = brief["version"].as_u64().unwrap();
        }
        if let Some((old_id, old_version)) = acked.first().cloned().filter(|_| acked.len() > 1) {
            let old = server.advance(&json!({"run_id": old_id, "version": old_version}), "next", "older run").await;
            acked[0].1 = old["version"].as_u64().unwrap();
        }
        // Cut the power right after the last answer, then end every process, as a power
        // cut would: the session, and the database's owner (which `unmount` kills).
        fs.power_cut();
        server.kill();
        drop(server);
        fs.unmount();
        fs.mount();
    }
    let server = Server::start(&home).await;
    lost_per_trial.push(lost_changes(&server, &home, &acked).await);
    server.stop().await;
    fs.unmount();
    let lost: u64 = lost_per_trial.iter().sum();
    let changes: u64 = acked.iter().map(|(_, v)| v).sum();
    println!("power cut: {TRIALS} trials, {} runs with {changes} acknowledged changes, lost per trial {lost_per_trial:?}", acked.len());
    assert_eq!(lost, 0, "acknowledged changes lost in power cuts: {lost_per_trial:?}");
}
