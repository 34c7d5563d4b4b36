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
/// Power cuts in [`a_power_cut_in_the_middle_of_writing_loses_nothing_acknowledged_or_refuses_to_open`].
const CUTS_WHILE_WRITING: usize = 12;

/// Why the owner could not open the database in `home`: its log from its last panic (where
/// a panic in sled's recovery is written). With BATON_TEST_KEEP_DAMAGED set, the home is
/// copied there to look at.
fn explain_refusal(home: &std::path::Path) {
    if let Some(keep) = std::env::var_os("BATON_TEST_KEEP_DAMAGED") {
        let _ = std::process::Command::new("cp").arg("-a").arg(home).arg(&keep).status();
    }
    let log = std::fs::read_to_string(home.join("owner.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.iter().rposition(|l| l.contains("panicked at")).unwrap_or(lines.len().saturating_sub(20));
    println!("owner.log from its last panic:\n{}", lines[from..].iter().take(30).copied().collect::<Vec<_>>().join("\n"));
}

/// How many acknowledged changes of `acked` the server no longer has.
async fn lost_changes(server: &Server, home: &std::path::Path, acked: &[(String, u64)]) -> u64 {
    let (mut lost, mut explained) = (0, false);
    for (run_id, version) in acked {
        match server.call("inspect", json!({"run_id": run_id, "history_limit": 1000})).await {
            Ok(details) => {
                let have = details["run"]["version"].as_u64().unwrap();
                let events = details["events"].as_array().unwrap().len() as u64;
                // Long outputs make the page end early: only a whole history is counted.
                if details["next_before_seq"].is_null() {
                    assert_eq!(events, have, "run {run_id}: events must be dense 1..=version");
                }
                lost += version.saturating_sub(have);
            }
            Err(e) => {
                // Missing, or the database refuses to open because it lost acknowledged
                // changes (its integrity record knows): either way they are lost.
                assert!(e["code"] == "not_found" || e["code"] == "storage", "run {run_id}: {e}");
                println!("run {run_id}: {}", e["message"]);
                if e["code"] == "storage" && !explained {
                    explain_refusal(home);
                    explained = true;
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

/// Power cuts while a session writes as fast as it can (long outputs, so sled writes
/// blobs and fills log buffers, and checkpoints run). What holds: after each cut the
/// database has every acknowledged change, or it refuses to open (`storage`, "damaged",
/// with the fix); it never answers with less than was acknowledged. What does not hold
/// yet (issue 22's closing note, the README): a cut in the middle of a checkpoint can
/// leave sled 0.34's log with a page it cannot recover ("tried to serialize
/// Uninitialized" while it opens): 4 of about 20 runs of this test on 2026-12-07.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_in_the_middle_of_writing_loses_nothing_acknowledged_or_refuses_to_open() {
    if !support::loopfs::available("a_power_cut_in_the_middle_of_writing_loses_nothing_acknowledged_or_refuses_to_open") {
        return;
    }
    let mut fs = LoopFs::new(256);
    let home = fs.mnt.join("home");
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut lost_per_cut = Vec::new();
    let mut refused_after = None;
    for cut in 0..=CUTS_WHILE_WRITING {
        let server = Server::start(&home).await;
        if let Some((run_id, _)) = acked.first() {
            match server.call("inspect", json!({"run_id": run_id, "history_limit": 1})).await {
                Err(e) if e["code"] == "storage" && e["message"].as_str().is_some_and(|m| m.contains("damaged")) => {
                    println!("refused to open after cut {cut}: {}", e["message"]);
                    explain_refusal(&home);
                    refused_after = Some(cut);
                    server.stop().await;
                    break;
                }
                _ => lost_per_cut.push(lost_changes(&server, &home, &acked).await),
            }
        }
        if cut == CUTS_WHILE_WRITING {
            server.stop().await;
            break;
        }
        let mut brief = server.ok("start_workflow", json!({"goal": format!("cut {cut}"), "template_definition": ping_pong()})).await;
        acked.push((brief["run_id"].as_str().unwrap().to_string(), 1));
        let mnt = fs.mnt.clone();
        let delay = std::time::Duration::from_millis(40 + (cut as u64 * 37) % 260);
        let cutter = std::thread::spawn(move || {
            std::thread::sleep(delay);
            support::loopfs::cut_power(&mnt);
        });
        for step in 0.. {
            let output = if step % 3 == 0 { noise((cut * 1000 + step) as u64, 70_000) } else { format!("step {step} of cut {cut}") };
            let args = json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": "next", "output": output});
            match server.call("advance", args).await {
                Ok(next) => {
                    brief = next;
                    acked.last_mut().unwrap().1 = brief["version"].as_u64().unwrap();
                }
                // The cut: the owner's writes fail from here on.
                Err(_) => break,
            }
        }
        cutter.join().unwrap();
        server.kill();
        drop(server);
        fs.unmount();
        fs.mount();
    }
    fs.unmount();
    let changes: u64 = acked.iter().map(|(_, v)| v).sum();
    println!(
        "cuts while writing: {changes} acknowledged changes, lost per cut {lost_per_cut:?}, refused to open after cut {refused_after:?}"
    );
    assert_eq!(lost_per_cut.iter().sum::<u64>(), 0, "acknowledged changes served short after a cut: {lost_per_cut:?}");
}
