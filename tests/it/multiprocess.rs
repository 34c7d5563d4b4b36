//! Several `baton serve` processes on one database: racing, owner crash and take-over,
//! and hostile input on the inter-process socket. The database is held by a detached
//! `baton owner` process that the first session starts; its pid is in `owner.lock`.

use crate::support;
use crate::support::{Server, advanced_outputs, alive, cli, database_env, fresh_home, owner_pid, ping_pong, signal, wait_until};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn start_ping_pong(server: &Server, goal: &str) -> Value {
    server.ok("start_workflow", json!({"goal": goal, "template_definition": ping_pong()})).await
}

/// Compare histories without dumping thousands of entries on failure.
fn assert_same_history(actual: &[String], expected: &[String], what: &str) {
    let first_difference = actual.iter().zip(expected).position(|(a, e)| a != e);
    assert!(
        actual.len() == expected.len() && first_difference.is_none(),
        "{what}: {} events vs {} acknowledged; first difference at {first_difference:?}",
        actual.len(),
        expected.len()
    );
}

async fn start_servers(home: &Path, n: usize) -> Vec<Arc<Server>> {
    let starts = (0..n).map(|_| Server::start(home));
    futures::future::join_all(starts).await.into_iter().map(Arc::new).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_servers_race_without_lost_or_duplicated_advances() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let servers = start_servers(&home, 4).await;
    let shared = start_ping_pong(&servers[0], "shared").await;
    let shared_id = shared["run_id"].as_str().unwrap().to_string();
    const ROUNDS: usize = 15;
    const OWN_ADVANCES: usize = 20;

    let tasks = servers.iter().enumerate().map(|(i, server)| {
        let server = Arc::clone(server);
        let shared_id = shared_id.clone();
        tokio::spawn(async move {
            let mut own = start_ping_pong(&server, &format!("own {i}")).await;
            let mut acked_shared = Vec::new();
            let mut conflicts = 0;
            for round in 0..ROUNDS {
                // Everybody races on the shared run from the same version.
                let version = (round + 1) as u64;
                let marker = format!("s{i}-r{round}");
                match server
                    .call("advance", json!({"run_id": shared_id, "expected_version": version, "outcome": "next", "output": marker}))
                    .await
                {
                    Ok(_) => acked_shared.push(marker),
                    Err(e) => {
                        assert_eq!(e["code"], "conflict", "a lost race is a conflict: {e}");
                        assert!(e["message"].as_str().unwrap().contains(&format!("expected version {version}")), "{e}");
                        conflicts += 1;
                    }
                }
                // Wait until this round's winner is visible, then go on together.
                loop {
                    let seen = server.ok("resume", json!({"run_id": shared_id})).await;
                    if seen["brief"]["version"].as_u64().unwrap() > version {
                        break;
                    }
                }
                if round < OWN_ADVANCES {
                    let outcome = "next";
                    own = server.advance(&own, outcome, &format!("own{i}-{round}")).await;
                }
            }
            for n in ROUNDS..OWN_ADVANCES {
                own = server.advance(&own, "next", &format!("own{i}-{n}")).await;
            }
            (own["run_id"].as_str().unwrap().to_string(), acked_shared, conflicts)
        })
    });
    let results: Vec<(String, Vec<String>, usize)> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();

    let history = advanced_outputs(&servers[1], &shared_id).await;
    let acked: Vec<&String> = results.iter().flat_map(|r| r.1.iter()).collect();
    assert_eq!(history.len(), ROUNDS, "exactly one winner per round");
    assert_eq!(acked.len(), ROUNDS);
    for marker in &acked {
        assert_eq!(history.iter().filter(|h| h == marker).count(), 1, "{marker} is in the history exactly once");
    }
    let conflicts: usize = results.iter().map(|r| r.2).sum();
    assert_eq!(conflicts, ROUNDS * 3, "every losing racer got a conflict");
    for (i, (own_id, _, _)) in results.iter().enumerate() {
        let own = advanced_outputs(&servers[(i + 1) % 4], own_id).await;
        let expected: Vec<String> = (0..OWN_ADVANCES).map(|n| format!("own{i}-{n}")).collect();
        assert_same_history(&own, &expected, &format!("server {i}'s own run"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_owner_mid_load_loses_no_acknowledged_advance() {
    if support::owner_only("killing_the_owner_mid_load_loses_no_acknowledged_advance") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let others = start_servers(&home, 3).await;
    others[0].ok("inspect", json!({})).await;
    let owner = owner_pid(&home);
    let stop_at = Instant::now() + Duration::from_secs(4);
    let kill_after = Duration::from_millis(1200);

    let mut tasks = Vec::new();
    for (i, server) in others.iter().enumerate() {
        let server = Arc::clone(server);
        tasks.push(tokio::spawn(async move {
            let mut brief = start_ping_pong(&server, &format!("load {i}")).await;
            let run_id = brief["run_id"].as_str().unwrap().to_string();
            let mut acks: Vec<(Instant, String)> = Vec::new();
            let mut n = 0;
            while Instant::now() < stop_at {
                let marker = format!("load{i}-{n}");
                brief = server.advance(&brief, "next", &marker).await;
                acks.push((Instant::now(), marker));
                n += 1;
            }
            (run_id, acks)
        }));
    }
    tokio::time::sleep(kill_after).await;
    let killed_at = Instant::now();
    signal(owner, "-KILL");

    let results: Vec<(String, Vec<(Instant, String)>)> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
    // Take-over time: the longest pause in acknowledgements (all clients together) from just
    // before the kill on; answers the dying owner had already sent may land after the kill.
    let mut acked_at: Vec<Instant> = results.iter().flat_map(|(_, acks)| acks.iter().map(|a| a.0)).collect();
    acked_at.sort();
    let takeover = acked_at
        .windows(2)
        .filter(|w| w[1] + Duration::from_millis(100) > killed_at)
        .map(|w| w[1] - w[0])
        .max()
        .expect("acks around the kill");
    let before_kill: usize = results.iter().map(|(_, acks)| acks.iter().filter(|a| a.0 <= killed_at).count()).sum();
    let total: usize = results.iter().map(|(_, acks)| acks.len()).sum();
    eprintln!(
        "take-over: longest pause in acknowledged advances after SIGKILL {takeover:?}; {before_kill} advances acknowledged before the kill, {total} in all"
    );
    assert!(takeover < Duration::from_secs(2), "take-over took {takeover:?}");
    assert!(before_kill > 0);
    let successor = owner_pid(&home);
    assert!(successor != owner && alive(successor), "a new owner ({successor}) took over from {owner}");

    for (run_id, acks) in &results {
        let history = advanced_outputs(&others[0], run_id).await;
        let expected: Vec<String> = acks.iter().map(|a| a.1.clone()).collect();
        assert_same_history(&history, &expected, &format!("run {run_id}"));
    }
    // A fresh process sees the same durable state.
    let (ok, out, _) = cli(&home, &["runs", "--json"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let versions: HashMap<String, u64> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["run_id"].as_str().unwrap().to_string(), r["version"].as_u64().unwrap()))
        .collect();
    for (run_id, acks) in &results {
        assert_eq!(versions[run_id], acks.len() as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_that_shuts_down_hands_over_without_errors() {
    if support::owner_only("an_owner_that_shuts_down_hands_over_without_errors") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    // The session that starts the owner ends mid-load; the owner does not depend on it.
    let first = Server::start(&home).await;
    first.ok("inspect", json!({})).await;
    let owner = owner_pid(&home);
    let others = start_servers(&home, 3).await;
    let stop_at = Instant::now() + Duration::from_millis(3000);
    let tasks: Vec<_> = others
        .iter()
        .enumerate()
        .map(|(i, server)| {
            let server = Arc::clone(server);
            tokio::spawn(async move {
                let mut brief = start_ping_pong(&server, &format!("calm {i}")).await;
                let mut acks = Vec::new();
                while Instant::now() < stop_at {
                    let marker = format!("calm{i}-{}", acks.len());
                    brief = server.advance(&brief, "next", &marker).await;
                    acks.push(marker);
                }
                (brief["run_id"].as_str().unwrap().to_string(), acks)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    first.stop().await; // the Codex session that started the owner ends
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(owner_pid(&home), owner, "the owner outlives the session that started it");
    signal(owner, "-TERM"); // an orderly shutdown mid-load: in-flight requests are answered
    let mut total = 0;
    for (run_id, acks) in futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()) {
        total += acks.len();
        assert_same_history(&advanced_outputs(&others[0], &run_id).await, &acks, &format!("run {run_id}"));
    }
    assert!(!alive(owner), "the owner exited on SIGTERM");
    let successor = owner_pid(&home);
    assert!(successor != owner && alive(successor), "a new owner took over");
    eprintln!("{total} advances acknowledged across an orderly owner shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_terminal_commands_at_once_each_get_their_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    // Terminal commands never create a database (a mistyped home stays uncreated): make one,
    // and let its owner exit, so the commands below elect owners among themselves.
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let (ok, _, err) = cli(&home, &["import", empty.to_str().unwrap()]);
    assert!(ok, "{err}");
    if database_env(&home).is_empty() {
        let first = owner_pid(&home);
        wait_until("the importing owner exits", Duration::from_secs(15), || !alive(first)).await;
    }
    // No server: the commands elect owners among themselves, one after another.
    let runs: Vec<_> = (0..24)
        .map(|_| {
            let home = home.clone();
            tokio::task::spawn_blocking(move || cli(&home, &["runs", "--json"]))
        })
        .collect();
    for (i, result) in futures::future::join_all(runs).await.into_iter().enumerate() {
        let (ok, out, err) = result.unwrap();
        assert!(ok, "command {i} failed: {err}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["total"], 0);
    }
}

#[tokio::test]
async fn a_terminal_command_with_a_stalled_reader_does_not_hold_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let run_id = support::run_with_large_output(&home).await;
    // `baton show --json | (a reader that never reads)`: more output than a pipe holds.
    let mut stalled = support::spawn_show_json(&home, &run_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let server = Server::start(&home).await;
    assert_eq!(server.ok("inspect", json!({})).await["total"], 1);
    assert!(started.elapsed() < Duration::from_secs(5), "served after {:?}", started.elapsed());
    let mut output = String::new();
    std::io::Read::read_to_string(stalled.stdout.as_mut().unwrap(), &mut output).unwrap();
    assert!(stalled.wait().unwrap().success());
    assert!(output.contains("\"blob\""));
    server.stop().await;
}

/// Send one raw line to the owner's socket and read the answer line.
fn raw_exchange(stream: &mut UnixStream, line: &[u8]) -> Value {
    // The owner may answer and hang up before it has read all of an oversized frame.
    let _ = stream.write_all(line).and_then(|_| stream.write_all(b"\n"));
    let mut answer = String::new();
    BufReader::new(stream.try_clone().unwrap()).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"))
}

#[tokio::test]
async fn torn_corrupt_and_oversized_requests_get_clear_errors() {
    if support::owner_only("torn_corrupt_and_oversized_requests_get_clear_errors") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    server.ok("inspect", json!({})).await; // the owner is up and its socket bound
    let socket = home.join("baton.sock");

    let mut stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let corrupt = raw_exchange(&mut stream, br#"{"op_id":"1","request":{"op":"list_ru"#);
    assert_eq!(corrupt["Err"]["code"], "invalid_argument");
    assert_eq!(corrupt["Err"]["field"], "request");
    assert!(corrupt["Err"]["message"].as_str().unwrap().contains("malformed request frame"));
    let unknown = raw_exchange(&mut stream, br#"{"op_id":"2","request":{"op":"drop_tables","params":{}}}"#);
    assert_eq!(unknown["Err"]["field"], "request");
    // The same connection still works after bad frames.
    let not_uuid = raw_exchange(&mut stream, br#"{"op_id":"3","request":{"op":"list_runs","params":{}}}"#);
    assert_eq!(not_uuid["Err"]["field"], "op_id");
    let good = raw_exchange(&mut stream, br#"{"op_id":"00000000-0000-4000-8000-000000000003","request":{"op":"list_runs","params":{}}}"#);
    assert_eq!(good["Ok"]["data"]["total"], 0);

    let mut big = br#"{"op_id":"4","request":{"op":"list_runs","params":{"x":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 5 * 1024 * 1024));
    let oversized = raw_exchange(&mut stream, &big);
    assert_eq!(oversized["Err"]["code"], "too_large");
    assert!(oversized["Err"]["message"].as_str().unwrap().contains("4194304"));

    // A torn request: half a frame, then the connection drops.
    let mut torn = UnixStream::connect(&socket).unwrap();
    torn.write_all(br#"{"op_id":"5","request":{"op":"start_wor"#).unwrap();
    drop(torn);

    // Oversized payloads through MCP are refused with the documented limit.
    let huge_context = json!({"blob": "x".repeat(1024 * 1024 + 1)});
    let err = server.err("start_workflow", json!({"goal": "g", "context": huge_context})).await;
    assert_eq!((err["code"].as_str(), err["field"].as_str()), (Some("too_large"), Some("context")));

    // Garbage on the MCP stdin does not stop the server either.
    assert_garbage_on_stdin_is_survived(&home);
    let brief = server.ok("start_workflow", json!({"goal": "still serving"})).await;
    assert_eq!(brief["version"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_request_resent_after_a_lost_answer_is_applied_once() {
    if support::owner_only("a_request_resent_after_a_lost_answer_is_applied_once") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    server.ok("inspect", json!({})).await; // the owner is up and its socket bound
    let mut stream = UnixStream::connect(home.join("baton.sock")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = br#"{"op_id":"6f1d4c3e-0000-4000-8000-000000000001","request":{"op":"start_workflow","params":{"goal":"resent"}}}"#;
    let first = raw_exchange(&mut stream, start);
    let again = raw_exchange(&mut stream, start);
    assert_eq!(first["Ok"]["data"]["run_id"], "6f1d4c3e-0000-4000-8000-000000000001");
    assert_eq!(first, again, "the resent creation answers with the same run");
    let advance = br#"{"op_id":"6f1d4c3e-0000-4000-8000-000000000002","request":{"op":"advance","params":{"run_id":"6f1d4c3e-0000-4000-8000-000000000001","expected_version":1,"outcome":"planned","output":"plan"}}}"#;
    let first = raw_exchange(&mut stream, advance);
    let again = raw_exchange(&mut stream, advance);
    assert_eq!((first["Ok"]["data"]["version"].as_u64(), again["Ok"]["data"]["version"].as_u64()), (Some(2), Some(2)), "{again}");
    let runs = server.ok("inspect", json!({})).await;
    assert_eq!(runs["total"], 1);
    let details = server.ok("inspect", json!({"run_id": "6f1d4c3e-0000-4000-8000-000000000001"})).await;
    assert_eq!(details["events"].as_array().unwrap().len(), 2, "one start and one advance, each once");
    server.stop().await;
}

fn assert_garbage_on_stdin_is_survived(home: &Path) {
    let mut child = std::process::Command::new(support::BATON)
        .arg("serve")
        .env("BATON_HOME", home)
        .env("BATON_LOG", "error")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    writeln!(stdin, "this is not json\n{{\"torn\": [1,2\n{init}").unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Each garbage line gets a parse error (id null), then initialize its answer.
    for garbage in ["this is not json", "{\"torn\": [1,2"] {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout carried a non-protocol line {line:?}: {e}"));
        assert_eq!((answer["id"].clone(), answer["error"]["code"].clone()), (Value::Null, json!(-32700)), "{garbage}: {answer}");
    }
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout carried a non-protocol line {line:?}: {e}"));
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["result"]["serverInfo"]["name"], "baton");
    drop(stdin);
    assert!(child.wait().unwrap().success(), "server exits cleanly on EOF");
}

#[tokio::test]
async fn home_is_created_private_and_wrong_permissions_are_explained() {
    if support::owner_only("home_is_created_private_and_wrong_permissions_are_explained") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    server.ok("inspect", json!({})).await;
    assert_eq!(std::fs::metadata(&home).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(home.join("db")).unwrap().permissions().mode() & 0o777, 0o700);
    server.stop().await;

    let open = tmp.path().join("too-open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, _, stderr) = cli(&open, &["runs"]);
    assert!(!ok);
    assert!(stderr.contains("0755") && stderr.contains(&format!("chmod 700 {}", open.display())), "{stderr}");

    // The server still starts, explains the problem on every call, and recovers once fixed.
    let server = Server::start(&open).await;
    let err = server.err("inspect", json!({})).await;
    assert_eq!((err["code"].as_str(), err["field"].as_str()), (Some("storage"), Some("BATON_HOME")));
    assert!(err["fix"].as_str().unwrap().contains("chmod 700"), "{err}");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(server.ok("inspect", json!({})).await["total"], 0);
    server.stop().await;

    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (ok, _, stderr) = cli(&file, &["runs"]);
    assert!(!ok && stderr.contains("not a directory"), "{stderr}");
}
