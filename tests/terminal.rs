//! The human-facing terminal commands, run while a server owns the database.

mod common;

use common::{Server, cli, fresh_home};
use serde_json::{Value, json};

#[tokio::test]
async fn runs_show_answer_and_cancel_work_beside_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    let brief = server.ok("start_workflow", json!({"goal": "Ship the search page", "title": "search"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    server.advance(&brief, "planned", "Plan: index + UI").await;
    server.ok("await_human", json!({"run_id": id, "question": "Fuzzy matching?", "options": ["yes", "no"]})).await;

    let (ok, out, err) = cli(&home, &["runs", "--status", "awaiting_human"]);
    assert!(ok, "{err}");
    assert!(out.contains(&id) && out.contains("awaiting_human") && out.contains("\"search\""), "{out}");
    let (ok, out, _) = cli(&home, &["runs", "--status", "completed"]);
    assert!(ok && out.starts_with("0 run(s)."), "{out}");

    let (ok, out, _) = cli(&home, &["show", &id]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("awaiting_human"), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("#1 ") && l.contains("started") && l.contains("Ship the search page")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("#2 ") && l.contains("design (architect) -> implement [planned]")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("#3 ") && l.contains("asked: Fuzzy matching?")), "{out}");

    let (ok, _, err) = cli(&home, &["answer", &id, "maybe"]);
    assert!(!ok && err.contains("answer") && err.contains("yes, no"), "a wrong option is refused with the options: {err}");
    let (ok, out, _) = cli(&home, &["answer", &id, "yes", "--json"]);
    assert!(ok);
    let answered: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((answered["status"].as_str(), answered["step"].as_str()), (Some("active"), Some("implement")));

    let (ok, out, _) = cli(&home, &["cancel", &id, "--reason", "deprioritized"]);
    assert!(ok && out.contains("cancelled"), "{out}");
    let after = server.ok("inspect", json!({"run_id": id})).await;
    assert_eq!(after["run"]["end_reason"], "deprioritized");

    let (ok, _, err) = cli(&home, &["show", "no-such-run"]);
    assert!(!ok && err.contains("not_found") && err.contains("baton runs"), "{err}");
    let (ok, _, err) = cli(&home, &["runs", "--status", "sleeping"]);
    assert!(!ok && err.contains("unknown status `sleeping`"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn output_to_a_reader_that_hangs_up_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let run_id = common::run_with_large_output(&home).await;
    let mut child = common::spawn_show_json(&home, &run_id);
    drop(child.stdout.take()); // like `| head -c 0`
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
}
