//! Hostile and greedy clients: over-deep and over-large messages, slow clients holding
//! partial frames, and file-descriptor exhaustion. The owner stays bounded and keeps
//! serving, and every message gets an answer that names the limit.

use crate::support;
use crate::support::{RawMcp, Server, cli, fresh_home, owner_pid, rss_kib};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn nested(levels: usize) -> Value {
    let text = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
    serde_json::from_str(&text).unwrap()
}

fn nested_text(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

#[tokio::test]
async fn deep_and_large_arguments_are_refused_by_name_before_anything_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let mut raw = RawMcp::start(&home);
    let wait = Duration::from_secs(10);
    raw.send(&RawMcp::tool_call("start", "start_workflow", &json!({"goal": "deep"})));
    let brief = raw.recv(wait).unwrap()["result"]["structuredContent"].clone();
    let run_id = brief["run_id"].as_str().unwrap().to_string();

    // 70 levels parse, but are over the argument limit: a tool error naming the field.
    let advance =
        |artifacts: Value| json!({"run_id": run_id, "expected_version": 1, "outcome": "planned", "output": "o", "artifacts": artifacts});
    raw.send(&RawMcp::tool_call("deep70", "advance", &advance(json!({"a": nested(69)}))));
    let answer = raw.recv(wait).unwrap();
    assert_eq!(answer["id"], "deep70");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let err = &answer["result"]["structuredContent"]["error"];
    assert_eq!((err["code"].as_str(), err["field"].as_str()), (Some("too_large"), Some("artifacts")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("64 levels"), "{err}");

    // 123 levels (deeper than a message may be): a JSON-RPC error for that very request.
    let deep_line = format!(
        r#"{{"jsonrpc":"2.0","id":"deep123","method":"tools/call","params":{{"name":"advance","arguments":{{"run_id":"{run_id}","expected_version":1,"outcome":"planned","output":"o","artifacts":{{"a":{}}}}}}}}}"#,
        nested_text(123)
    );
    raw.send(deep_line.as_bytes());
    let answer = raw.recv(wait).unwrap();
    assert_eq!((answer["id"].as_str(), answer["error"]["code"].as_i64()), (Some("deep123"), Some(-32700)), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("100 levels"), "{answer}");

    // A request over the 4 MiB limit between processes names its largest argument.
    raw.send(&RawMcp::tool_call(
        "big",
        "advance",
        &json!({"run_id": run_id, "expected_version": 1, "outcome": "planned", "output": "x".repeat(5 * 1024 * 1024)}),
    ));
    let answer = raw.recv(wait).unwrap();
    let err = &answer["result"]["structuredContent"]["error"];
    assert_eq!((err["code"].as_str(), err["field"].as_str()), (Some("too_large"), Some("output")), "{err}");
    // With PostgreSQL no frame crosses processes: the field's own limit refuses it.
    let limit = if support::pg::selected() { "262144" } else { "4194304" };
    assert!(err["message"].as_str().unwrap().contains(limit), "{err}");

    // Nothing was stored, and the run reads fine from another process.
    let (ok, out, stderr) = cli(&home, &["show", &run_id, "--json"]);
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["run"]["version"], 1);
}

/// Open `n` connections to the owner socket (fewer if the test process runs out of
/// descriptors) and write `bytes` to each without a newline, without waiting.
fn slow_clients(socket: &std::path::Path, n: usize, bytes: usize) -> Vec<UnixStream> {
    let payload = vec![b'x'; bytes];
    let mut clients = Vec::new();
    for _ in 0..n {
        let Ok(mut stream) = UnixStream::connect(socket) else { break };
        stream.set_nonblocking(true).unwrap();
        let mut sent = 0;
        // Push as much as the socket takes now; the rest is what a slow client holds back.
        while sent < payload.len() {
            match stream.write(&payload[sent..]) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        clients.push(stream);
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_holding_partial_frames_do_not_grow_the_owner() {
    if support::owner_only("slow_clients_holding_partial_frames_do_not_grow_the_owner") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    let brief = server.ok("start_workflow", json!({"goal": "g"})).await;
    let owner = owner_pid(&home);
    let before = rss_kib(owner);
    let socket = home.join("baton.sock");
    // 50 clients each sending the start of a 4 MiB frame and then nothing (in steps, so
    // the owner reads what it will).
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.extend(slow_clients(&socket, 10, 4 * 1024 * 1024 - 1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    assert_eq!(server.ok("inspect", json!({})).await["total"], 1);
    let small_call = started.elapsed();
    let during = rss_kib(owner);
    eprintln!(
        "owner RSS with 50 slow clients holding partial 4 MiB frames: {} -> {} MiB; a small call took {small_call:?}",
        before / 1024,
        during / 1024
    );
    assert!(during < before + 40 * 1024, "the owner grew from {before} to {during} KiB");
    assert!(small_call < Duration::from_secs(2), "{small_call:?}");
    // The slow clients are cut off after the frame timeout, with an answer.
    let mut first = clients.remove(0);
    first.set_nonblocking(false).unwrap();
    first.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut answer = String::new();
    let _ = first.read_to_string(&mut answer);
    assert!(answer.contains("did not arrive completely"), "{answer:?}");
    drop(clients);
    // And a large request works again.
    server.advance(&brief, "planned", &"p".repeat(200_000)).await;
    server.stop().await;
}

/// Whether the owner answered a new connection with a refusal line (rather than holding it).
fn refused(stream: &mut UnixStream) -> Option<String> {
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf) {
        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_held_connections_are_refused_in_time_and_leave_the_owner_working() {
    if support::owner_only("many_held_connections_are_refused_in_time_and_leave_the_owner_working") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    // The owner runs with 100 file descriptors: at most 36 connections, 64 in reserve.
    let server = Server::start_with(&home, &[("BATON_OWNER_NOFILE", "100")]).await;
    let brief = server.ok("start_workflow", json!({"goal": "g"})).await;
    let owner = owner_pid(&home);
    let socket = home.join("baton.sock");
    let mut held = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..300 {
        let mut stream = UnixStream::connect(&socket).unwrap();
        match refused(&mut stream) {
            Some(line) => refusals.push(line),
            None => held.push(stream),
        }
    }
    eprintln!("300 connections: {} held, {} refused", held.len(), refusals.len());
    assert!(held.len() <= 36 && refusals.len() >= 264, "{} held", held.len());
    assert!(refusals[0].contains("already serves") && refusals[0].contains("unavailable"), "{}", refusals[0]);
    // The session connected before keeps working, large writes included (the store has
    // descriptors in reserve), and a new command gets a clear refusal, not a hang.
    let started = Instant::now();
    server.advance(&brief, "planned", &"p".repeat(200_000)).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let started = Instant::now();
    let (ok, _, stderr) = cli(&home, &["runs"]);
    assert!(!ok && stderr.contains("already serves"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(held);
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out, stderr) = cli(&home, &["runs", "--json"]);
        if ok {
            assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["total"], 1);
            break;
        }
        assert!(Instant::now() < give_up, "still refused after the connections closed: {stderr}");
    }
    assert_eq!(owner_pid(&home), owner);
    server.stop().await;
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_out_of_file_descriptors_backs_off_and_recovers() {
    if support::owner_only("an_owner_out_of_file_descriptors_backs_off_and_recovers") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    // Let connections outgrow the descriptors on purpose, so accept fails with EMFILE.
    let env = [("BATON_OWNER_NOFILE", "64"), ("BATON_OWNER_MAX_CONNECTIONS", "1000"), ("BATON_ANSWER_TIMEOUT", "1s")];
    let server = Server::start_with(&home, &env).await;
    let brief = server.ok("start_workflow", json!({"goal": "g"})).await;
    let owner = owner_pid(&home);
    let socket = home.join("baton.sock");
    let held: Vec<UnixStream> = (0..150).filter_map(|_| UnixStream::connect(&socket).ok()).collect();
    let open_fds = || std::fs::read_dir(format!("/proc/{owner}/fd")).map_or(0, |d| d.count());
    support::wait_until("the owner running out of descriptors", Duration::from_secs(10), || open_fds() >= 62).await;
    // Exhausted: accepting fails, and must neither spin nor stop the owner.
    let ticks = cpu_ticks(owner);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_ticks(owner) - ticks;
    eprintln!("owner CPU while out of descriptors for 2 s: {spent} ticks");
    assert!(spent < 50, "the owner spun: {spent} ticks in 2 s");
    let log = std::fs::read_to_string(home.join("owner.log")).unwrap_or_default();
    assert!(log.contains("accept on the baton socket failed") && log.contains("Too many open files"), "{log}");
    drop(held);
    // Once descriptors are free again, everything works, large writes included.
    let give_up = Instant::now() + Duration::from_secs(15);
    let brief = loop {
        match server
            .call("advance", json!({"run_id": brief["run_id"], "expected_version": 1, "outcome": "planned", "output": "p".repeat(200_000)}))
            .await
        {
            Ok(next) => break next,
            Err(e) => assert!(Instant::now() < give_up, "no recovery: {e}"),
        }
    };
    assert_eq!(brief["version"], 2);
    let (ok, out, stderr) = cli(&home, &["runs", "--json"]);
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["total"], 1);
    assert_eq!(owner_pid(&home), owner, "the same owner recovered");
    server.stop().await;
}
