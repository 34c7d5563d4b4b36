//! Notifications end to end: the real binary, a real sled home with `notify.toml`, a
//! local HTTP receiver for the webhook and a shell script as the notify command.

use crate::support;
use crate::support::{Server, cli, fresh_home, owner_only, owner_pid, signal, wait_until};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A webhook receiver on 127.0.0.1: records every POST body with the status it answered;
/// answers 500 while `failing`, after 3 s while `slow`.
struct Receiver {
    port: u16,
    failing: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(u16, Value)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let failing = Arc::new(AtomicBool::new(false));
        let slow = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (fail, lag, log) = (Arc::clone(&failing), Arc::clone(&slow), Arc::clone(&seen));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                if lag.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_secs(3));
                }
                let status = if fail.load(Ordering::SeqCst) { 500 } else { 200 };
                let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().unwrap().push((status, value));
                let _ =
                    reader.get_mut().write_all(format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
            }
        });
        Receiver { port, failing, slow, seen }
    }

    /// The events it accepted (answered 200), by type.
    fn accepted(&self, kind: &str) -> Vec<Value> {
        self.seen.lock().unwrap().iter().filter(|(s, v)| *s == 200 && v["type"] == kind).map(|(_, v)| v.clone()).collect()
    }

    fn refused(&self, kind: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|(s, v)| *s != 200 && v["type"] == kind).count()
    }
}

/// A private home (0700, as baton wants it) with `notify.toml` naming the receiver and a
/// command that appends the JSON it gets to `commands.jsonl`.
fn home_with_notifications(tmp: &tempfile::TempDir, receiver: &Receiver) -> (std::path::PathBuf, std::path::PathBuf) {
    let home = fresh_home(tmp);
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = tmp.path().join("commands.jsonl");
    let script = tmp.path().join("on-baton.sh");
    std::fs::write(&script, format!("#!/bin/sh\nprintf '%s\\n' \"$1\" >> {}\n", log.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        home.join("notify.toml"),
        format!("command = [\"{}\"]\nwebhooks = [\"http://127.0.0.1:{}/hook/secret\"]\n", script.display(), receiver.port),
    )
    .unwrap();
    (home, log)
}

fn command_events(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn one_webhook_per_event_across_an_owner_restart_and_the_command_gets_the_json() {
    if owner_only("one_webhook_per_event_across_an_owner_restart_and_the_command_gets_the_json") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let (home, log) = home_with_notifications(&tmp, &receiver);
    let server = Server::start(&home).await;
    let brief = server.ok("start_workflow", json!({"goal": "Ship search", "title": "search"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    server.advance(&brief, "planned", "plan").await;

    // A human gate: one webhook and one command call, with the question and the command.
    let started = std::time::Instant::now();
    server.ok("await_human", json!({"run_id": id, "question": "Fuzzy matching?", "options": ["yes", "no"]})).await;
    let asked_in = started.elapsed();
    wait_until("the webhook for the question", Duration::from_secs(10), || receiver.accepted("run.awaiting_human").len() == 1).await;
    let delivered_in = started.elapsed();
    let asked = &receiver.accepted("run.awaiting_human")[0];
    assert_eq!(asked["run_id"], id.as_str());
    assert_eq!(asked["options"], json!(["yes", "no"]));
    assert_eq!(asked["answer_command"], format!("baton answer {id} yes"));
    assert!(asked["text"].as_str().unwrap().contains("Fuzzy matching?"), "a Slack-compatible text: {asked}");
    wait_until("the command for the question", Duration::from_secs(10), || command_events(&log).len() == 1).await;
    assert_eq!(command_events(&log)[0]["id"], asked["id"]);

    // The receiver goes down (slow, then failing); the run completes; deliveries fail and
    // are retried, and no commit waits for them.
    receiver.failing.store(true, Ordering::SeqCst);
    receiver.slow.store(true, Ordering::SeqCst);
    let (ok, _, err) = cli(&home, &["answer", &id[..8], "yes"]);
    assert!(ok, "{err}");
    let mut brief = server.ok("resume", json!({"run_id": id})).await["brief"].clone();
    for outcome in ["implemented", "approved", "passed"] {
        brief = server.advance(&brief, outcome, "ok").await;
    }
    assert_eq!(brief["status"], "completed", "{brief}");
    tokio::time::sleep(Duration::from_millis(200)).await; // the delivery hangs in the receiver now
    let started = std::time::Instant::now();
    server.ok("start_workflow", json!({"goal": "meanwhile"})).await;
    let committed_in = started.elapsed();
    assert!(committed_in < Duration::from_secs(1), "a commit waited for a hanging webhook: {committed_in:?}");
    wait_until("a refused attempt for the completion", Duration::from_secs(10), || receiver.refused("run.completed") >= 1).await;
    receiver.slow.store(false, Ordering::SeqCst);
    wait_until("the command for the completion", Duration::from_secs(10), || command_events(&log).len() == 2).await;

    // The owner dies with the webhook undelivered; the next owner delivers it, once.
    server.stop().await;
    let owner = owner_pid(&home);
    signal(owner, "-KILL");
    wait_until("the owner is gone", Duration::from_secs(5), || !support::alive(owner)).await;
    receiver.failing.store(false, Ordering::SeqCst);
    let (ok, _, err) = cli(&home, &["runs"]);
    assert!(ok, "{err}");
    assert_ne!(owner_pid(&home), owner, "a new owner");
    wait_until("the completion after the restart", Duration::from_secs(15), || receiver.accepted("run.completed").len() == 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.accepted("run.awaiting_human").len(), 1, "{:?}", receiver.seen.lock().unwrap());
    assert_eq!(receiver.accepted("run.completed").len(), 1, "{:?}", receiver.seen.lock().unwrap());
    let accepted: Vec<Value> = receiver.seen.lock().unwrap().iter().filter(|(s, _)| *s == 200).map(|(_, v)| v.clone()).collect();
    assert_eq!(accepted.len(), 2, "nothing else was sent: {accepted:?}");
    let commands = command_events(&log);
    assert_eq!(commands.iter().map(|e| e["type"].as_str().unwrap()).collect::<Vec<_>>(), ["run.awaiting_human", "run.completed"]);
    eprintln!(
        "await_human answered in {asked_in:?}; its webhook arrived {delivered_in:?} after the call began; a commit during a hanging delivery took {committed_in:?}"
    );
}

#[test]
fn notify_test_sends_a_sample_to_every_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::start();
    let (home, log) = home_with_notifications(&tmp, &receiver);
    let out = std::process::Command::new(support::BATON).args(["notify", "test"]).env("BATON_HOME", &home).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("sent to webhook http://127.0.0.1:") && stdout.contains("sent to command"), "{stdout}");
    assert!(!stdout.contains("secret"), "the webhook's path is not shown: {stdout}");
    assert_eq!(receiver.accepted("test").len(), 1);
    assert_eq!(command_events(&log)[0]["type"], "test");
    // A failing channel says so, with the exit code of `unavailable`.
    receiver.failing.store(true, Ordering::SeqCst);
    let out = std::process::Command::new(support::BATON).args(["notify", "test"]).env("BATON_HOME", &home).output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("answered `HTTP/1.1 500"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// With PostgreSQL there is no owner: every `baton serve` whose home has a `notify.toml`
/// offers to notify, one leads (an advisory lock), and the outbox is in the database. Two
/// sessions on two homes (two machines, say) share one database and one receiver: each
/// event arrives once; when the leading session is killed, the other takes over and the
/// completion still arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_two_processes_notify_each_event_once_and_one_takes_over_when_the_other_dies() {
    let Some((url, _cluster)) = support::pg::database() else { return };
    let receiver = Receiver::start();
    let (tmp_a, tmp_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (home_a, log_a) = home_with_notifications(&tmp_a, &receiver);
    let (home_b, log_b) = home_with_notifications(&tmp_b, &receiver);
    support::use_database(&home_a, &url);
    support::use_database(&home_b, &url);
    let a = Server::start(&home_a).await;
    let b = Server::start(&home_b).await;

    let brief = a.ok("start_workflow", json!({"goal": "Ship search", "title": "search"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    a.advance(&brief, "planned", "plan").await;
    b.ok("await_human", json!({"run_id": id, "question": "Fuzzy matching?", "options": ["yes", "no"]})).await;
    wait_until("the webhook for the question", Duration::from_secs(20), || receiver.accepted("run.awaiting_human").len() == 1).await;
    // The leader's own command ran; the other's did not.
    wait_until("the leader's command", Duration::from_secs(10), || command_events(&log_a).len() + command_events(&log_b).len() == 1).await;
    let a_led = command_events(&log_a).len() == 1;
    let (leader, follower, follower_log) = if a_led { (a, b, &log_b) } else { (b, a, &log_a) };

    // The leader dies (kill -9: its connection, and so its lock, goes with it).
    leader.kill();
    let answered = follower.ok("answer_human", json!({"run_id": id, "answer": "yes"})).await;
    let mut brief = answered["brief"].clone();
    if brief.is_null() {
        brief = follower.ok("resume", json!({"run_id": id})).await["brief"].clone();
    }
    for outcome in ["implemented", "approved", "passed"] {
        brief = follower.advance(&brief, outcome, "ok").await;
    }
    assert_eq!(brief["status"], "completed", "{brief}");
    let completed = std::time::Instant::now();
    wait_until("the completion from the other process", Duration::from_secs(30), || receiver.accepted("run.completed").len() == 1).await;
    let taken_over_in = completed.elapsed();
    wait_until("the follower's command", Duration::from_secs(10), || {
        command_events(follower_log).iter().any(|e| e["type"] == "run.completed")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await; // a follower's round: nothing more comes
    let accepted: Vec<Value> = receiver.seen.lock().unwrap().iter().filter(|(s, _)| *s == 200).map(|(_, v)| v.clone()).collect();
    let kinds: Vec<&str> = accepted.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["run.awaiting_human", "run.completed"], "each event once: {accepted:?}");
    let commands = command_events(&log_a).len() + command_events(&log_b).len();
    assert_eq!(commands, 2, "one command per event across both homes");
    let rows = support::pg::query(&url, "SELECT count(*) FROM notify_outbox");
    assert_eq!(rows[0][0].as_deref(), Some("1"), "the outbox is one row of the database");
    eprintln!("the completion reached the receiver {taken_over_in:?} after it committed, through the process that took over");
    follower.stop().await;
}

/// `desktop = true` shows each event with `notify-send` where there is one: here a
/// `notify-send` of the test's on the owner's PATH records what it was asked to show.
#[tokio::test]
async fn a_desktop_notification_goes_through_notify_send() {
    if owner_only("a_desktop_notification_goes_through_notify_send") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let shown = tmp.path().join("shown.txt");
    let fake = bin.join("notify-send");
    std::fs::write(&fake, format!("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> {}; done\n", shown.display())).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(home.join("notify.toml"), "desktop = true\n").unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let server = Server::start_with(&home, &[("PATH", &path)]).await;
    let brief = server.ok("start_workflow", json!({"goal": "Ship search", "title": "search"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    server.ok("await_human", json!({"run_id": id, "question": "Fuzzy matching?", "options": ["yes", "no"]})).await;
    wait_until("notify-send", Duration::from_secs(15), || std::fs::read_to_string(&shown).is_ok_and(|t| t.contains("Fuzzy matching?")))
        .await;
    let args = std::fs::read_to_string(&shown).unwrap();
    let lines: Vec<&str> = args.lines().collect();
    assert_eq!(&lines[..2], ["--app-name=baton", "baton"], "{args}");
    assert!(args.contains(&format!("baton answer {} yes", &id[..8])) || args.contains(&format!("baton answer {id} yes")), "{args}");
    server.stop().await;
}
