//! `baton serve`'s stdin and stdout as clients hand them over: pipes (Codex, every MCP
//! client) are read and written on the session's one thread; files and a stdout shared
//! with stderr still work; a pipe shared with the parent gets its flags back.

use crate::support::{BATON, RawMcp, fresh_home};
use serde_json::{Value, json};
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn initialize(id: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "stdio-test", "version": "0"}}})
    .to_string()
}

fn ping(id: usize) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"}).to_string()
}

/// The names of the threads of process `pid`.
fn threads(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks.map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap_or_default().trim().to_string()).collect()
}

/// The file status flags of `fd`.
fn flags(fd: &impl AsRawFd) -> libc::c_int {
    // SAFETY: fcntl on a descriptor the caller holds open.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) }
}

/// A session on a new home in `tmp` (raw lines over pipes) and a looping run it started, at version 1.
fn looping_run(tmp: &tempfile::TempDir, goal: &str) -> (RawMcp, String) {
    let mut raw = RawMcp::start(&fresh_home(tmp));
    let start = raw.tool_call_ok("start", "start_workflow", &json!({"goal": goal, "template_definition": crate::support::ping_pong()}));
    assert_eq!(start["version"], 1, "{start}");
    (raw, start["run_id"].as_str().unwrap().to_string())
}

#[test]
fn a_session_on_pipes_serves_every_request_on_its_one_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut raw, run_id) = looping_run(&tmp, "one thread");
    let mut version = 1;
    for i in 0..50 {
        let advance = json!({"run_id": run_id, "expected_version": version, "outcome": "next", "output": format!("step {i}")});
        version = raw.tool_call_ok(&format!("a{i}"), "advance", &advance)["version"].as_u64().unwrap();
        raw.send(ping(i).as_bytes());
        assert_eq!(raw.recv(WAIT).unwrap()["id"], i, "ping {i}");
    }
    assert_eq!(version, 51);
    // tokio's stdin and stdout read and write on threads of its blocking pool, handing
    // every line across threads: a pipe polled by the runtime needs none.
    let pid = raw.child.id();
    assert_eq!(threads(pid), ["baton"], "the session's threads after 50 advances and 50 pings");
}

#[test]
fn a_session_reading_requests_from_a_file_answers_them_all_into_a_file() {
    // Files cannot be polled: these go through tokio's stdio.
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let requests = tmp.path().join("requests.jsonl");
    let mut lines = vec![initialize("init"), json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string()];
    lines.extend((1..=200).map(ping));
    lines.push("{not json".into());
    std::fs::write(&requests, lines.join("\n") + "\n").unwrap();
    let answers = tmp.path().join("answers.jsonl");
    let status = Command::new(BATON)
        .arg("serve")
        .env("BATON_HOME", &home)
        .env("BATON_LOG", "error")
        .envs(crate::support::database_env(&home))
        .stdin(std::fs::File::open(&requests).unwrap())
        .stdout(std::fs::File::create(&answers).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "baton serve on files exited with {status}");
    let answers: Vec<Value> = std::fs::read_to_string(&answers).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 202, "initialize, 200 pings and the bad line each get one answer");
    // Answers come as they are ready, not in the order asked.
    let ids: std::collections::BTreeSet<String> = answers.iter().filter(|a| a["result"].is_object()).map(|a| a["id"].to_string()).collect();
    let expected: std::collections::BTreeSet<String> = (1..=200).map(|i| i.to_string()).chain(["\"init\"".to_string()]).collect();
    assert_eq!(ids, expected);
    let refused: Vec<&Value> = answers.iter().filter(|a| a["error"].is_object()).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!((refused[0]["id"].clone(), refused[0]["error"]["code"].as_i64()), (Value::Null, Some(-32700)));
}

#[test]
fn a_stdin_pipe_the_parent_shares_is_left_blocking_again_and_a_stdout_shared_with_stderr_is_not_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let mut ends = [0; 2];
    // SAFETY: pipe2 fills the two descriptors it is given; the result is checked. Close on
    // exec, or the session would inherit the write end and never see its stdin end.
    assert_eq!(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned here only.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    // The parent keeps the read end's open file too, as a shell's pipeline may.
    let shared = read.try_clone().unwrap();
    let (out_read, out_write) = std::io::pipe().unwrap();
    let out_shared = out_write.try_clone().unwrap();
    let mut child = Command::new(BATON)
        .arg("serve")
        .env("BATON_HOME", &home)
        .env("BATON_LOG", "info")
        .envs(crate::support::database_env(&home))
        .stdin(Stdio::from(read))
        .stdout(Stdio::from(out_write.try_clone().unwrap()))
        .stderr(Stdio::from(out_write))
        .spawn()
        .unwrap();
    let mut to = std::fs::File::from(write);
    let mut from = std::io::BufReader::new(out_read);
    writeln!(to, "{}", initialize("init")).unwrap();
    // stderr's log lines come on the same pipe (2>&1): protocol lines start with `{`.
    let mut answer = |want: &str| loop {
        let mut line = String::new();
        assert!(from.read_line(&mut line).unwrap() > 0, "the session closed its output before answering {want}");
        if line.starts_with('{') {
            let message: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(message["id"].to_string(), want, "{message}");
            return;
        }
    };
    answer("\"init\"");
    assert_ne!(flags(&shared) & libc::O_NONBLOCK, 0, "the session polls its stdin pipe");
    assert_eq!(flags(&out_shared) & libc::O_NONBLOCK, 0, "a stdout that is stderr too stays blocking");
    for i in 1..=20 {
        writeln!(to, "{}", ping(i)).unwrap();
        answer(&i.to_string());
    }
    drop(to);
    let status = child.wait().unwrap();
    assert!(status.success(), "baton serve exited with {status}");
    assert_eq!(flags(&shared) & libc::O_NONBLOCK, 0, "the shared pipe is blocking again after the session");
}

#[test]
fn answers_larger_than_the_pipe_wait_for_a_slow_reader_and_arrive_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut raw, run_id) = looping_run(&tmp, "big answers");
    let output = crate::support::noise(7, 200 * 1024);
    let advance = json!({"run_id": run_id, "expected_version": 1, "outcome": "next", "output": output});
    raw.tool_call_ok("big", "advance", &advance);
    // Ten answers of over 200 KiB each (a pipe holds 64 KiB) asked for at once, read late.
    for i in 0..10 {
        raw.send(&RawMcp::tool_call(&format!("inspect{i}"), "inspect", &json!({"run_id": run_id})));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let answer = raw.recv(WAIT).unwrap();
        let id = answer["id"].as_str().unwrap().to_string();
        let events = answer["result"]["structuredContent"]["events"].as_array().unwrap();
        assert!(events.iter().any(|e| e["output"] == output.as_str()), "{id} carries the whole output");
        answered.insert(id);
    }
    assert_eq!(answered, (0..10).map(|i| format!("inspect{i}")).collect());
}
