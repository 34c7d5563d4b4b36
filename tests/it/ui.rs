//! `baton ui` and its neighbours, through the real binaries: the web page over HTTP (the
//! token, the session cookie, cross-origin refusals, stale answers, live events), in a real
//! headless Chromium (graph, a human gate answered with a button, live updates from another
//! session), the graph and retention commands, and the MCP resources.

use crate::support;
use crate::support::git::{git, repository};
use crate::support::web::cdp::Browser;
use crate::support::web::{EventStream, Login, UiServer, between, form, http};
use crate::support::{Server, cli, database_env, fresh_home};
use rmcp::model::ReadResourceRequestParams;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A change by another session must show on an open page within this.
const LIVE: Duration = Duration::from_secs(1);

/// A feature run that went around the review loop once and waits for a human in review.
async fn run_at_gate(server: &Server) -> Value {
    let brief = server.ok("start_workflow", json!({"goal": "Rate-limit the login endpoint", "title": "Rate-limit login"})).await;
    let brief = server.advance(&brief, "planned", "Token bucket per client IP, in the auth middleware.").await;
    let brief = server.advance(&brief, "implemented", &format!("Implemented in src/auth/limit.rs.\n{}", "Details. ".repeat(800))).await;
    let brief = server.advance(&brief, "changes_requested", "Needs a test for bursts.").await;
    let brief = server.advance(&brief, "implemented", "Added the burst test.").await;
    server
        .ok("await_human", json!({"run_id": brief["run_id"], "question": "Merge without the Redis backend?", "options": ["yes", "no"]}))
        .await
}

/// A parallel run whose plan has four tasks, one claimed by another agent and one done
/// with its implementation.
async fn fanned_out(home: &Path, lead: &Server) -> Value {
    let brief =
        lead.ok("start_workflow", json!({"goal": "Split search into services", "title": "Search split", "template": "parallel"})).await;
    let tasks = json!([
        {"id": "index", "title": "Indexer service"},
        {"id": "api", "title": "Query API", "depends_on": ["index"]},
        {"id": "ui", "title": "Search page", "depends_on": ["api"]},
        {"id": "docs", "title": "Docs"}
    ]);
    let plan = json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": "planned", "output": "The plan.", "plan": {"tasks": tasks}});
    lead.ok("advance", plan).await;
    let worker = Server::start_as(home, home.parent().unwrap(), Some("worker-1")).await;
    let claim = worker.ok("resume", json!({"run_id": brief["run_id"], "claim": "docs"})).await;
    let report = json!({"run_id": brief["run_id"], "task": "docs", "lease_token": claim["lease_token"], "outcome": "implemented", "output": "Docs written."});
    worker.ok("advance", report).await;
    worker.ok("resume", json!({"run_id": brief["run_id"], "claim": "index"})).await;
    worker.stop().await;
    lead.ok("inspect", json!({"run_id": brief["run_id"]})).await
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("ui-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_refuses_strangers_other_origins_and_stale_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    let gate = run_at_gate(&server).await;
    let id = gate["run_id"].as_str().unwrap().to_string();
    let ui = UiServer::start(&home, database_env(&home));

    // No token, a wrong token, or a foreign Host: refused before anything is read.
    assert_eq!(http(ui.port, "GET", "/", &[], None).status, 401);
    assert_eq!(http(ui.port, "GET", &format!("/runs/{id}"), &[], None).status, 401);
    assert_eq!(http(ui.port, "GET", "/?token=0123", &[], None).status, 401);
    assert_eq!(http(ui.port, "GET", "/events", &[], None).status, 401);
    let rebound = http(ui.port, "GET", &format!("/?token={}", ui.token), &[("Host", "attacker.example")], None);
    assert_eq!(rebound.status, 403, "a page whose DNS name was rebound to 127.0.0.1 is refused");

    let login = Login::new(&ui);
    let hostile = server.ok("start_workflow", json!({"goal": "<img src=x onerror=alert(1)>", "title": "<script>alert(1)</script>"})).await;
    let list = login.get(&ui, "/");
    assert!(list.body.contains("&lt;script&gt;alert(1)") && !list.body.contains("<script>alert"), "titles are escaped");
    let hostile_page = login.get(&ui, &format!("/runs/{}", hostile["run_id"].as_str().unwrap()));
    assert!(hostile_page.body.contains("&lt;img src=x") && !hostile_page.body.contains("<img src=x"), "goals are escaped");
    let page = login.get(&ui, &format!("/runs/{id}"));
    assert_eq!(page.status, 200);
    assert!(page.header("content-security-policy").is_some_and(|csp| csp.contains("frame-ancestors 'none'")), "{:?}", page.headers);
    assert!(page.body.contains("Merge without the Redis backend?"));
    assert!(page.body.contains(r#"data-node="review""#), "the graph is on the page");
    let version = between(&page.body, r#"name="expected_version" value=""#, "\"").unwrap().to_string();
    assert_eq!(version, gate["version"].to_string());

    // A form posted from another origin (another port of 127.0.0.1 is the same site, so
    // the browser would send the cookie) is refused, even with the right CSRF token.
    let cancel = form(&[("csrf", &login.csrf), ("expected_version", &version), ("reason", "attack")]);
    let cancel_path = format!("/runs/{id}/cancel");
    for origin in [vec![("Origin", "http://127.0.0.1:1".to_string())], vec![("Referer", "http://evil.example/".to_string())], vec![]] {
        let mut headers = vec![("Cookie", login.cookie.clone())];
        headers.extend(origin.iter().map(|(n, v)| (*n, v.clone())));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let refused = http(ui.port, "POST", &cancel_path, &headers, Some(&cancel));
        assert_eq!(refused.status, 403, "{origin:?}: {}", refused.body);
    }
    let wrong_csrf = form(&[("csrf", "0000"), ("expected_version", &version)]);
    let refused = http(ui.port, "POST", &cancel_path, &[("Cookie", &login.cookie), ("Origin", &ui.origin())], Some(&wrong_csrf));
    assert_eq!(refused.status, 403, "a wrong CSRF token is refused");
    let refused = http(ui.port, "POST", &cancel_path, &[("Origin", &ui.origin())], Some(&cancel));
    assert_eq!(refused.status, 401, "no cookie, no change");
    let state = server.ok("inspect", json!({"run_id": id})).await;
    assert_eq!(state["run"]["status"], "awaiting_human", "nothing was cancelled");

    // Someone else changes the run; an answer from the page as it was is a conflict,
    // shown on the page, and not applied.
    server.ok("checkpoint", json!({"run_id": id, "name": "before-merge"})).await;
    let stale = login.post(&ui, &format!("/runs/{id}/answer"), &[("expected_version", &version), ("answer", "yes")]);
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert!(stale.body.contains("conflict") && stale.body.contains("changed since you looked"), "{}", stale.body);
    assert!(stale.body.contains("before-merge"), "the page shows the run as it is now");
    let state = server.ok("inspect", json!({"run_id": id})).await;
    assert_eq!(state["run"]["status"], "awaiting_human");

    let current = (gate["version"].as_u64().unwrap() + 1).to_string();
    let answered =
        login.post(&ui, &format!("/runs/{id}/answer"), &[("expected_version", &current), ("answer", "yes"), ("comment", "ship it")]);
    // Back to the run's page, which confirms the answer's event (the next version).
    let confirm = format!("/runs/{id}?answered={}", gate["version"].as_u64().unwrap() + 2);
    assert_eq!((answered.status, answered.header("location")), (303, Some(confirm.as_str())), "{}", answered.body);
    let page = login.get(&ui, &confirm);
    assert!(page.body.contains("Your answer “yes” is recorded") && page.body.contains("with your comment"), "{}", page.body);
    let state = server.ok("inspect", json!({"run_id": id})).await;
    assert_eq!(state["run"]["status"], "active");
    let last = state["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["type"].as_str(), last["answer"].as_str(), last["actor"]["kind"].as_str()),
        (Some("human_answered"), Some("yes"), Some("web"))
    );

    let bad = login.post(&ui, &format!("/runs/{id}/answer"), &[("answer", "yes")]);
    assert_eq!(bad.status, 400, "a form without its version is refused with a message: {}", bad.body);
    assert!(bad.body.contains("expected_version"));

    // The graph as SVG and Mermaid, and a long report read through its windows.
    let svg = login.get(&ui, &format!("/runs/{id}/graph.svg"));
    assert_eq!(svg.header("content-type"), Some("image/svg+xml; charset=utf-8"));
    assert!(svg.body.starts_with("<svg") && svg.body.contains(r#"class="node step current" data-node="review""#));
    let mermaid = login.get(&ui, &format!("/runs/{id}/graph.mmd"));
    assert!(mermaid.body.starts_with("flowchart TD") && mermaid.body.contains("changes_requested"), "{}", mermaid.body);
    let report = login.get(&ui, &format!("/runs/{id}/events/3"));
    let report: Value = serde_json::from_str(&report.body).unwrap();
    assert!(report["text"].as_str().unwrap().starts_with("Implemented in src/auth/limit.rs."), "{report}");
    let missing = login.get(&ui, &format!("/runs/{id}/events/999"));
    assert_eq!(missing.status, 404);
    assert_eq!(login.get(&ui, "/runs/no-such-run").status, 404);

    // Fork a new run from the checkpoint.
    let forked = login.post(&ui, &format!("/runs/{id}/fork"), &[("checkpoint", "before-merge"), ("title", "Second try")]);
    assert_eq!(forked.status, 303, "{}", forked.body);
    let fork_id = forked.header("location").and_then(|l| l.strip_prefix("/runs/")).unwrap().to_string();
    let fork = server.ok("inspect", json!({"run_id": fork_id})).await;
    assert_eq!((fork["run"]["title"].as_str(), fork["run"]["forked_from"]["run_id"].as_str()), (Some("Second try"), Some(id.as_str())));

    // Cancel from the page, then prune it from the page (a dry run first): it is gone
    // everywhere, and the run in progress is kept; deleting that one is refused.
    let page = login.get(&ui, &format!("/runs/{id}"));
    let version = between(&page.body, r#"name="expected_version" value=""#, "\"").unwrap().to_string();
    let cancelled = login.post(&ui, &cancel_path, &[("expected_version", &version), ("reason", "not now")]);
    assert_eq!(cancelled.status, 303, "{}", cancelled.body);
    let dry = login.post(&ui, "/prune", &[("older_than", "0s"), ("dry_run", "on")]);
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert!(dry.body.contains("Would delete 1 finished run") && dry.body.contains(&id) && !dry.body.contains(&fork_id), "{}", dry.body);
    let pruned = login.post(&ui, "/prune", &[("older_than", "0s")]);
    assert!(pruned.body.contains("Deleted 1 finished run"), "{}", pruned.body);
    let gone = server.err("inspect", json!({"run_id": id})).await;
    assert_eq!(gone["code"], "not_found");
    assert!(!login.get(&ui, "/").body.contains(&id));
    let refused = login.post(&ui, &format!("/runs/{fork_id}/delete"), &[]);
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("only finished runs can be deleted"), "{}", refused.body);
    let fork_version = fork["run"]["version"].to_string();
    let cancelled = login.post(&ui, &format!("/runs/{fork_id}/cancel"), &[("expected_version", &fork_version)]);
    assert_eq!(cancelled.status, 303, "{}", cancelled.body);
    let deleted = login.post(&ui, &format!("/runs/{fork_id}/delete"), &[]);
    assert_eq!((deleted.status, deleted.header("location")), (303, Some("/")));
    assert_eq!(server.err("inspect", json!({"run_id": fork_id})).await["code"], "not_found");
    let bad_age = login.post(&ui, "/prune", &[("older_than", "soon")]);
    assert_eq!(bad_age.status, 400);
    assert!(bad_age.body.contains("is not an age"), "{}", bad_age.body);

    let rest = ui.stop();
    assert_eq!(rest, "", "baton ui prints nothing on stdout but its address");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sessions_change_reaches_an_open_event_stream_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    let brief = server.ok("start_workflow", json!({"goal": "g"})).await;
    let ui = UiServer::start(&home, database_env(&home));
    let login = Login::new(&ui);
    let mut events = EventStream::open(ui.port, &login.cookie);
    let first = events.next_change(Instant::now() + support::web::PATIENCE).expect("the counter at once");
    // Another process makes the change: the owner is `baton serve` (or the page's), and
    // the page learns of it through the owner.
    for round in 0..3 {
        let brief = server.ok("inspect", json!({"run_id": brief["run_id"]})).await;
        let name = format!("c{round}");
        server.ok("checkpoint", json!({"run_id": brief["run"]["id"], "name": name})).await;
        let done = Instant::now();
        let counter = events.next_change(done + LIVE).unwrap_or_else(|| panic!("round {round}: no event within {LIVE:?}"));
        assert!(counter > first, "the counter moved");
        eprintln!("round {round}: change event {:?} after the change was acknowledged", done.elapsed());
    }
    drop(ui);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_graphs_and_pruning() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    let gate = run_at_gate(&server).await;
    let open = gate["run_id"].as_str().unwrap();
    let done = server.ok("start_workflow", json!({"goal": "fix it", "template": "bugfix"})).await;
    let mut brief = done.clone();
    for outcome in ["reproduced", "fixed", "approved", "passed"] {
        brief = server.advance(&brief, outcome, "ok").await;
    }
    let done = done["run_id"].as_str().unwrap();
    server.stop().await;

    let (ok, mermaid, err) = cli(&home, &["show", open, "--graph"]);
    assert!(ok, "{err}");
    assert!(mermaid.starts_with("flowchart TD\n") && mermaid.contains("n1 ==>|\"implemented ×2\"| n2"), "{mermaid}");
    let (ok, svg, _) = cli(&home, &["show", open, "--graph", "--svg"]);
    assert!(ok && svg.trim_end().starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    let (ok, model, _) = cli(&home, &["show", open, "--graph", "--json"]);
    let model: Value = serde_json::from_str(&model).unwrap();
    assert!(ok && model["nodes"].as_array().unwrap().iter().any(|n| n["id"] == "review" && n["state"] == "current"));
    let (ok, _, err) = cli(&home, &["show", open, "--svg"]);
    assert!(!ok && err.contains("--graph"), "--svg needs --graph: {err}");

    let (ok, out, err) = cli(&home, &["prune", "--older-than", "0s", "--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("Would delete 1 run(s).") && out.contains(done) && !out.contains(open), "{out}");
    let (ok, _, err) = cli(&home, &["prune", "--older-than", "someday"]);
    assert!(!ok && err.contains("older_than"), "{err}");
    let (ok, _, err) = cli(&home, &["delete", open]);
    assert!(!ok && err.contains("invalid_state") && err.contains("only finished runs"), "{err}");
    let (ok, out, _) = cli(&home, &["prune", "--older-than", "0s", "--json"]);
    let pruned: Value = serde_json::from_str(&out).unwrap();
    assert!(ok && pruned["runs"][0]["run_id"] == done && pruned["dry_run"] == false, "{out}");
    let (ok, _, err) = cli(&home, &["show", done]);
    assert!(!ok && err.contains("not_found"), "{err}");
    let (ok, out, _) = cli(&home, &["runs"]);
    assert!(ok && out.starts_with("1 run(s).") && out.contains(open), "the run in progress stays: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_graphs_are_mcp_resources_and_the_tools_stay_eight() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    let gate = run_at_gate(&server).await;
    let id = gate["run_id"].as_str().unwrap();
    let info = server.client.peer_info().expect("server info");
    assert!(info.capabilities.resources.is_some(), "resources are announced");
    let tools = server.client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 8, "no tools were added");

    let listed = server.client.list_all_resources().await.unwrap();
    let uris: Vec<&str> = listed.iter().map(|r| r.uri.as_str()).collect();
    assert!(uris.contains(&"baton://runs") && uris.contains(&format!("baton://runs/{id}").as_str()), "{uris:?}");
    let templates = server.client.list_all_resource_templates().await.unwrap();
    let templates: Vec<&str> = templates.iter().map(|t| t.uri_template.as_str()).collect();
    assert_eq!(templates, ["baton://runs/{run_id}", "baton://runs/{run_id}/graph"]);

    let (mime, runs) = read_text(&server, "baton://runs").await;
    let runs: Value = serde_json::from_str(&runs).unwrap();
    assert_eq!((mime.as_str(), runs["runs"][0]["run_id"].as_str()), ("application/json", Some(id)));
    let (_, run) = read_text(&server, &format!("baton://runs/{id}")).await;
    let run: Value = serde_json::from_str(&run).unwrap();
    assert_eq!(run["brief"]["status"], "awaiting_human");
    assert_eq!(run["brief"]["question"]["question"], "Merge without the Redis backend?");
    let (mime, graph) = read_text(&server, &format!("baton://runs/{id}/graph")).await;
    assert_eq!(mime, "text/vnd.mermaid");
    assert!(graph.starts_with("flowchart TD") && graph.contains("class n2 current;"), "{graph}");

    let missing = server.client.read_resource(ReadResourceRequestParams::new("baton://runs/nope")).await.unwrap_err();
    assert!(missing.to_string().contains("no run with id"), "{missing}");
    let unknown = server.client.read_resource(ReadResourceRequestParams::new("file:///etc/passwd")).await.unwrap_err();
    assert!(unknown.to_string().contains("unknown resource"), "{unknown}");
    server.stop().await;
}

/// A resource's MIME type and text.
async fn read_text(server: &Server, uri: &str) -> (String, String) {
    let result = server.client.read_resource(ReadResourceRequestParams::new(uri)).await;
    let result = result.unwrap_or_else(|e| panic!("{uri}: {e}"));
    let contents = serde_json::to_value(&result.contents[0]).unwrap();
    (contents["mimeType"].as_str().unwrap_or_default().to_string(), contents["text"].as_str().unwrap_or_default().to_string())
}

/// Serve `page` to every request on a port of 127.0.0.1 (another origin than the UI's).
fn serve_foreign_page(page: String) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let answer =
                format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}", page.len());
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_the_graph_answers_a_gate_and_follows_other_sessions_live() {
    let Some(mut browser) = Browser::launch() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start_as(&home, tmp.path(), Some("lead")).await;
    let gate = run_at_gate(&server).await;
    let id = gate["run_id"].as_str().unwrap().to_string();
    let fan = fanned_out(&home, &server).await;
    let fan_id = fan["run"]["id"].as_str().unwrap().to_string();
    let mut fixed =
        server.ok("start_workflow", json!({"goal": "Crash on empty input", "title": "Empty input crash", "template": "bugfix"})).await;
    for outcome in ["reproduced", "fixed", "approved", "passed"] {
        fixed = server.advance(&fixed, outcome, "ok").await;
    }
    let ui = UiServer::start(&home, database_env(&home));

    // The printed address logs the browser in and drops the token from the address bar.
    browser.navigate(&ui.url());
    assert_eq!(browser.eval("location.href"), json!(format!("{}/", ui.origin())));
    assert_eq!(browser.eval("document.querySelectorAll('tr[data-run]').length"), json!(3));
    assert_eq!(browser.eval("fetch('/', {credentials: 'omit'}).then(r => r.status)"), json!(401), "without the cookie: refused");
    let waited = browser.eval(&Browser::until("document.getElementById('live-status').classList.contains('on')", 5000));
    assert!(waited.is_number(), "the page is connected for live updates");

    // Another session starts a run: the open list shows it within a second.
    let other = Server::start_as(&home, tmp.path(), Some("other")).await;
    let started = other.ok("start_workflow", json!({"goal": "A run started elsewhere", "title": "Started elsewhere"})).await;
    let acknowledged = Instant::now();
    let seen = format!("document.querySelector('tr[data-run=\"{}\"]')", started["run_id"].as_str().unwrap());
    browser.eval(&Browser::until(&seen, 5000));
    let latency = acknowledged.elapsed();
    assert!(latency < LIVE, "the new run showed after {latency:?}");
    eprintln!("runs list: a run started by another session showed after {latency:?}");
    browser.screenshot(&screenshots().join("runs-list.png"));

    // The run's page: its graph, with the loop taken and the step it waits in.
    browser.navigate(&format!("{}/runs/{id}", ui.origin()));
    assert_eq!(browser.eval("document.querySelectorAll('svg.baton-graph g.node').length"), json!(5));
    assert_eq!(browser.eval("document.querySelector('svg.baton-graph g.node.current').dataset.node"), json!("review"));
    assert_eq!(browser.eval("document.querySelectorAll('svg.baton-graph path.edge.taken').length"), json!(3));
    let buttons = browser.eval("[...document.querySelectorAll('form.gate button')].map(b => b.value)");
    assert_eq!(buttons, json!(["yes", "no"]));
    browser.screenshot(&screenshots().join("run-page.png"));

    // A long report is loaded whole on demand.
    browser.eval("document.getElementById('event-3').open = true; document.querySelector('button.load[data-seq=\"3\"]').click(); true");
    browser.eval(&Browser::until("document.getElementById('text-3').dataset.whole === '1'", 5000));
    let whole = browser.eval("document.getElementById('text-3').textContent.length");
    assert!(whole.as_u64().unwrap() > 6000, "{whole}");

    // Another session saves a checkpoint: it shows on the open page within a second.
    other.ok("checkpoint", json!({"run_id": id, "name": "before-merge"})).await;
    let acknowledged = Instant::now();
    browser.eval(&Browser::until("document.getElementById('checkpoints').textContent.includes('before-merge')", 5000));
    let latency = acknowledged.elapsed();
    assert!(latency < LIVE, "the checkpoint showed after {latency:?}");
    eprintln!("run page: a checkpoint saved by another session showed after {latency:?}");
    assert_eq!(browser.eval("document.querySelector('#version').textContent"), json!((gate["version"].as_u64().unwrap() + 1).to_string()));
    assert_eq!(browser.eval("document.getElementById('event-3').open"), json!(true), "what the reader opened stays open");

    // Answer the gate with its button: the run continues, as MCP sees it.
    browser.and_wait_for_load("document.querySelector('form.gate button[value=\"yes\"]').click(); true");
    let shown = browser.eval("location.pathname + ' ' + document.body.innerText.slice(0, 300)");
    assert!(shown.as_str().unwrap().starts_with(&format!("/runs/{id} ")), "{shown}");
    assert_eq!(browser.eval("document.querySelectorAll('form.gate').length"), json!(0));
    let state = server.ok("resume", json!({"run_id": id})).await;
    assert_eq!((state["brief"]["status"].as_str(), state["brief"]["step"].as_str()), (Some("active"), Some("review")));
    let answered = state["recent_events"].as_array().unwrap().last().unwrap().clone();
    assert!(answered["summary"] == "answered: yes" && answered["by"].as_str().unwrap().starts_with("web"), "{answered}");
    let brief = server.advance(&state["brief"], "approved", "LGTM").await;
    let brief = server.advance(&brief, "passed", "All green").await;
    assert_eq!(brief["status"], "completed");
    browser.eval(&Browser::until("document.querySelector('svg.baton-graph g.node.current').dataset.node === 'done'", 5000));
    browser.screenshot(&screenshots().join("run-completed.png"));

    // The fan-out's tasks as a graph, with the lease holder.
    browser.navigate(&format!("{}/runs/{fan_id}", ui.origin()));
    assert_eq!(browser.eval("document.querySelectorAll('svg.baton-graph g.task').length"), json!(4));
    assert_eq!(browser.eval("document.querySelector('svg.baton-graph g.task.claimed').dataset.task"), json!("index"));
    assert!(browser.eval("document.querySelector('tr[data-task=\"index\"]').textContent").as_str().unwrap().contains("codex worker-1"));
    browser.screenshot(&screenshots().join("fan-out.png"));

    // A page of another origin posts a cancel with a valid CSRF token: refused.
    let csrf = browser.eval("document.querySelector('input[name=csrf]').value");
    let version = fan["run"]["version"].to_string();
    let attack = format!(
        r#"<!doctype html><form method="post" action="{}/runs/{fan_id}/cancel"><input name="csrf" value="{}"><input name="expected_version" value="{version}"><input name="reason" value="attack"></form>"#,
        ui.origin(),
        csrf.as_str().unwrap()
    );
    let foreign = serve_foreign_page(attack);
    browser.navigate(&format!("http://127.0.0.1:{foreign}/"));
    browser.and_wait_for_load("document.forms[0].submit(); true");
    let refused = browser.eval("document.body.innerText");
    assert!(refused.as_str().unwrap().contains("cross-origin request refused"), "{refused}");
    let state = server.ok("inspect", json!({"run_id": fan_id})).await;
    assert_eq!(state["run"]["status"], "active", "the run was not cancelled");

    drop(browser);
    drop(ui);
    other.stop().await;
    server.stop().await;
}

/// The page goes through the same calling pipeline as MCP and the terminal, so its changes
/// do their git work too: a fork from the page restores the checkpoint's uncommitted code
/// into the fork's own worktree, and a cancel from the page removes the run's worktrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_fork_restores_code_and_its_cancel_removes_worktrees() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", "first\n");
    let home = fresh_home(&tmp);
    let lead = Server::start_as(&home, &repo, Some("thread-lead")).await;
    let brief = lead.ok("start_workflow", json!({"goal": "Two edits", "template": "parallel"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    let plan = json!({"tasks": [{"id": "a", "title": "Edit a"}, {"id": "b", "title": "Edit b"}]});
    lead.ok(
        "advance",
        json!({"run_id": id, "expected_version": brief["version"], "outcome": "planned", "output": "Two tasks.", "plan": plan}),
    )
    .await;
    let worker = Server::start_as(&home, &repo, Some("thread-worker")).await;
    let claim = worker.ok("resume", json!({"run_id": id, "claim": "a"})).await;
    let task_dir = PathBuf::from(claim["workdir"].as_str().unwrap());
    assert!(task_dir.join("shared.txt").exists(), "the claim made the task's worktree: {claim}");

    std::fs::write(repo.join("shared.txt"), "work in progress\n").unwrap();
    std::fs::write(repo.join("notes.txt"), "new file\n").unwrap();
    lead.ok("checkpoint", json!({"run_id": id, "name": "wip"})).await;
    std::fs::write(repo.join("shared.txt"), "first\n").unwrap();
    std::fs::remove_file(repo.join("notes.txt")).unwrap();

    let ui = UiServer::start(&home, database_env(&home));
    let login = Login::new(&ui);
    let forked = login.post(&ui, &format!("/runs/{id}/fork"), &[("checkpoint", "wip"), ("title", "From the page")]);
    assert_eq!(forked.status, 303, "{}", forked.body);
    let fork_id = forked.header("location").and_then(|l| l.strip_prefix("/runs/")).expect("the fork's page").to_string();
    assert_ne!(fork_id, id);
    let fork_dir = repo.join(".baton/forks").join(&fork_id[..8]);
    assert_eq!(std::fs::read_to_string(fork_dir.join("shared.txt")).unwrap(), "work in progress\n", "the checkpoint's code");
    assert_eq!(std::fs::read_to_string(fork_dir.join("notes.txt")).unwrap(), "new file\n");
    assert_eq!(std::fs::read_to_string(repo.join("shared.txt")).unwrap(), "first\n", "the user's tree is untouched");

    let page = login.get(&ui, &format!("/runs/{id}"));
    let version = between(&page.body, r#"name="expected_version" value=""#, "\"").unwrap().to_string();
    let cancelled = login.post(&ui, &format!("/runs/{id}/cancel"), &[("expected_version", &version), ("reason", "wrong plan")]);
    assert_eq!(cancelled.status, 303, "{}", cancelled.body);
    assert!(!task_dir.exists(), "the page's cancel removed the task's worktree");
    assert!(!git(&repo, &["worktree", "list"]).contains(&task_dir.to_string_lossy().into_owned()));
    assert_eq!(lead.ok("inspect", json!({"run_id": id})).await["run"]["status"], "cancelled");
    worker.stop().await;
    lead.stop().await;
    ui.stop();
}

/// Twenty tasks in four layers, with dependencies that skip a layer.
fn twenty_task_plan() -> Value {
    let tasks: Vec<Value> = (1..=20)
        .map(|i| {
            let deps: Vec<String> = match i {
                1..=5 => vec![],
                6..=10 => vec![format!("t{:02}", i - 5)],
                11..=15 => vec![format!("t{:02}", i - 5), "t01".into()],
                _ => vec![format!("t{:02}", i - 5), "t03".into()],
            };
            json!({"id": format!("t{i:02}"), "title": format!("Service part {i} with a rather long descriptive title"), "depends_on": deps})
        })
        .collect();
    json!({"tasks": tasks})
}

/// A person's view of wide plans and of answering: a 20-task plan's graph fits the page's
/// box (no horizontal scrolling, no label cut at the picture's edge), the legend names every
/// look a step or task can have, a step waiting for a person looks different from one an
/// agent is working on, and an answer from the page is confirmed with what happens next and
/// shows its comment in the timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_plans_fit_the_page_and_answers_are_confirmed() {
    let Some(mut browser) = Browser::launch() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start_as(&home, tmp.path(), Some("lead")).await;
    let brief = server.ok("start_workflow", json!({"goal": "Split the monolith", "title": "Twenty tasks", "template": "parallel"})).await;
    let wide = brief["run_id"].as_str().unwrap().to_string();
    let plan = json!({"run_id": wide, "expected_version": brief["version"], "outcome": "planned", "output": "The plan.", "plan": twenty_task_plan()});
    server.ok("advance", plan).await;
    for task in ["t01", "t02", "t03"] {
        server.ok("resume", json!({"run_id": wide, "claim": task})).await;
    }
    let gate = run_at_gate(&server).await;
    let gated = gate["run_id"].as_str().unwrap().to_string();
    let asked = server.ok("start_workflow", json!({"goal": "Pick a name", "title": "Naming"})).await;
    let free = asked["run_id"].as_str().unwrap().to_string();
    server.ok("await_human", json!({"run_id": free, "question": "What should the service be called?"})).await;
    let ui = UiServer::start(&home, database_env(&home));
    browser.navigate(&ui.url());

    browser.navigate(&format!("{}/runs/{wide}", ui.origin()));
    browser.screenshot(&screenshots().join("twenty-tasks.png"));
    assert_eq!(browser.eval("document.querySelectorAll('svg.baton-graph g.task').length"), json!(20));
    let fit = browser.eval(
        "(() => { const box = document.querySelector('#graph .picture'); const svg = box.querySelector('svg');
          const b = box.getBoundingClientRect(), s = svg.getBoundingClientRect();
          return {box: b.width, svg: s.width, scroll: box.scrollWidth - box.clientWidth, page: document.documentElement.scrollWidth - document.documentElement.clientWidth}; })()",
    );
    assert!(fit["svg"].as_f64().unwrap() <= fit["box"].as_f64().unwrap() + 0.5, "the graph fits its box: {fit}");
    assert_eq!((fit["scroll"].as_f64(), fit["page"].as_f64()), (Some(0.0), Some(0.0)), "nothing scrolls sideways: {fit}");
    let cut = browser.eval(
        "(() => { const svg = document.querySelector('svg.baton-graph'); const vb = svg.viewBox.baseVal;
          return [...svg.querySelectorAll('text')].filter(t => { const b = t.getBBox();
            return b.x < vb.x - 0.5 || b.y < vb.y - 0.5 || b.x + b.width > vb.x + vb.width + 0.5 || b.y + b.height > vb.y + vb.height + 0.5; })
          .map(t => t.textContent); })()",
    );
    assert_eq!(cut, json!([]), "no label is cut at the picture's edge");
    let legend = browser.eval("document.querySelector('#graph .legend').textContent");
    for look in ["here now", "waits for you", "passed", "not reached", "ready", "claimed", "waiting", "done"] {
        assert!(legend.as_str().unwrap().contains(look), "the legend names `{look}`: {legend}");
    }
    let zoom = browser.eval("!!document.querySelector('#graph button.zoom')");
    assert_eq!(zoom, json!(true), "a wide graph can be seen at full size");

    browser.navigate(&format!("{}/runs/{gated}", ui.origin()));
    let waiting = browser.eval("document.querySelector('svg.baton-graph g.node.current').classList.contains('asking')");
    assert_eq!(waiting, json!(true), "the step waiting for a person has a look of its own");
    // Buttons answer at once, so their comment comes first; a free-text answer comes
    // before its comment.
    let comment_first = "(() => { const f = document.querySelector('form.gate'); const c = f.querySelector('input[name=comment]'); const a = f.querySelector('[name=answer]'); return !!(c.compareDocumentPosition(a) & Node.DOCUMENT_POSITION_FOLLOWING); })()";
    assert_eq!(browser.eval(comment_first), json!(true), "with buttons, the comment is filled in before a button is pressed");
    browser.navigate(&format!("{}/runs/{free}", ui.origin()));
    assert_eq!(browser.eval(comment_first), json!(false), "a free-text answer comes before its comment");
    browser.navigate(&format!("{}/runs/{gated}", ui.origin()));
    browser.eval("document.querySelector('form.gate input[name=comment]').value = 'Redis can come later'; true");
    browser.and_wait_for_load("document.querySelector('form.gate button[value=\"yes\"]').click(); true");
    browser.screenshot(&screenshots().join("answered.png"));
    let notice = browser.eval("(document.querySelector('.notice') || {}).textContent || ''");
    let notice = notice.as_str().unwrap();
    assert!(notice.contains("yes") && notice.contains("review"), "a confirmation says what was recorded and what happens next: {notice}");
    let timeline = browser.eval("document.getElementById('timeline').textContent");
    assert!(timeline.as_str().unwrap().contains("Redis can come later"), "the answer's comment is in the timeline");
    drop(browser);
    drop(ui);
    server.stop().await;
}

/// Every event of the page's timeline forks: "Fork from here" posts that event's version,
/// and the new run has the run's state and code as of that event (issue 18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_forks_from_any_event_with_that_versions_code() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", "first\n");
    let home = fresh_home(&tmp);
    let lead = Server::start_as(&home, &repo, Some("thread-lead")).await;
    let brief = lead.ok("start_workflow", json!({"goal": "Fork me from the page", "template": "feature"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    std::fs::write(repo.join("design.md"), "the design\n").unwrap();
    let brief = lead.advance(&brief, "planned", "designed").await; // v2
    std::fs::write(repo.join("shared.txt"), "implemented\n").unwrap();
    lead.advance(&brief, "implemented", "done").await; // v3

    let ui = UiServer::start(&home, database_env(&home));
    let login = Login::new(&ui);
    let page = login.get(&ui, &format!("/runs/{id}"));
    for seq in 1..=3 {
        assert!(page.body.contains(&format!(r#"name="at_version" value="{seq}""#)), "event #{seq} has its fork form");
    }
    let forked = login.post(&ui, &format!("/runs/{id}/fork"), &[("at_version", "2"), ("title", "Back to the design")]);
    assert_eq!(forked.status, 303, "{}", forked.body);
    let fork_id = forked.header("location").and_then(|l| l.strip_prefix("/runs/")).expect("the fork's page").to_string();
    let fork_dir = repo.join(".baton/forks").join(&fork_id[..8]);
    assert_eq!(std::fs::read_to_string(fork_dir.join("shared.txt")).unwrap(), "first\n", "version 2's code");
    assert_eq!(std::fs::read_to_string(fork_dir.join("design.md")).unwrap(), "the design\n");
    assert_eq!(std::fs::read_to_string(repo.join("shared.txt")).unwrap(), "implemented\n", "the user's tree is untouched");
    let fork_page = login.get(&ui, &format!("/runs/{fork_id}"));
    assert!(fork_page.body.contains(&format!("{id} at version 2")), "the page shows where the fork came from");
    let run = lead.ok("inspect", json!({"run_id": fork_id})).await["run"].clone();
    assert_eq!((run["title"].as_str(), run["current_step"].as_str()), (Some("Back to the design"), Some("implement")));

    let missing = login.post(&ui, &format!("/runs/{id}/fork"), &[("at_version", "42")]);
    assert!(missing.body.contains("has no version 42"), "{}", missing.body);
    lead.stop().await;
    ui.stop();
}

/// A run one of whose tasks waits for a human is in the page's "awaiting human" filter
/// (and not among the active ones), as in `baton runs --status awaiting_human`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_filter_finds_a_run_whose_task_waits_for_a_human() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let (a, b) = tokio::join!(Server::start_as(&home, tmp.path(), Some("agent-a")), Server::start_as(&home, tmp.path(), Some("agent-b")));
    let brief = a.ok("start_workflow", json!({"goal": "g", "template": "parallel", "title": "Loops"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    let plan = json!({"tasks": [{"id": "x", "title": "x"}, {"id": "y", "title": "y"}]});
    a.ok("advance", json!({"run_id": id, "expected_version": 1, "outcome": "planned", "output": "p", "plan": plan})).await;
    for round in 1..=4 {
        let claim = a.ok("resume", json!({"run_id": id, "claim": "x"})).await;
        a.ok("advance", json!({"run_id": id, "task": "x", "lease_token": claim["lease_token"], "outcome": "implemented", "output": format!("round {round}")})).await;
        let claim = b.ok("resume", json!({"run_id": id, "claim": "x"})).await;
        b.ok(
            "advance",
            json!({"run_id": id, "task": "x", "lease_token": claim["lease_token"], "outcome": "changes_requested", "output": "again"}),
        )
        .await;
    }
    let ui = UiServer::start(&home, database_env(&home));
    let login = Login::new(&ui);
    let row = format!("data-run=\"{id}\"");
    let waiting = login.get(&ui, "/?status=awaiting_human");
    assert_eq!(waiting.status, 200, "{}", waiting.body);
    assert!(waiting.body.contains(&row), "the run is in the awaiting-human filter: {}", waiting.body);
    let active = login.get(&ui, "/?status=active");
    assert!(!active.body.contains(&row), "and not among the active runs");
    a.stop().await;
    b.stop().await;
    ui.stop();
}

/// Report the run's current step with `artifacts {round}`; the next brief.
async fn report(lead: &Server, brief: &Value, outcome: &str, round: u32) -> Value {
    let params = json!({"run_id": brief["run_id"], "expected_version": brief["version"], "outcome": outcome,
                        "output": format!("{outcome} (round {round})"), "artifacts": {"round": round}});
    lead.ok("advance", params).await
}

/// A feature run in `repo` through two review loops, its tree changed by each
/// implementation (with HTML in the code): v2 designed (design.md new), v3 implemented,
/// v4 changes requested, v5 implemented again, v6 changes requested, v7 implemented with
/// nothing changed. Returns the run's id.
async fn two_review_loops(lead: &Server, repo: &Path) -> String {
    let brief = lead.ok("start_workflow", json!({"goal": "Compare me", "title": "Two loops", "template": "feature"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    std::fs::write(repo.join("design.md"), "the plan\n").unwrap();
    let brief = report(lead, &brief, "planned", 1).await; // v2
    std::fs::write(repo.join("shared.txt"), "impl-1\n<script>alert(1)</script>\n").unwrap();
    let brief = report(lead, &brief, "implemented", 1).await; // v3
    let brief = report(lead, &brief, "changes_requested", 1).await; // v4
    std::fs::write(repo.join("shared.txt"), "impl-2\n<script>alert(2)</script>\n").unwrap();
    let brief = report(lead, &brief, "implemented", 2).await; // v5
    let brief = report(lead, &brief, "changes_requested", 2).await; // v6
    let brief = report(lead, &brief, "implemented", 3).await; // v7
    assert_eq!(brief["version"], 7);
    id
}

/// The page compares two versions with the comparison `baton diff` prints (issue 18): the
/// run's timeline links every event to the compare page; the page lists the steps between,
/// the outcomes and artifacts that changed and the code diff of the two snapshots, escaped;
/// a diff too long is cut with the commands that show all of it; and what it refuses (a
/// version that does not exist, pruned snapshots, a moved repository), like a checkpoint
/// fork whose code is gone, is said in words with the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_compares_two_versions_with_their_steps_and_escaped_code() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", "first\n");
    let home = fresh_home(&tmp);
    let lead = Server::start_as(&home, &repo, Some("thread-lead")).await;
    let id = two_review_loops(&lead, &repo).await;
    let ui = UiServer::start(&home, database_env(&home));
    let login = Login::new(&ui);

    let page = login.get(&ui, &format!("/runs/{id}"));
    assert!(page.body.contains(&format!(r#"<form class="compare-form" method="get" action="/runs/{id}/diff">"#)), "{}", page.body);
    for seq in 1..=7 {
        assert!(page.body.contains(&format!(r#"name="from" value="{seq}""#)), "event #{seq} compares with another version");
    }
    assert!(page.body.contains(&format!(r#"href="/runs/{id}/diff?from=4&amp;to=5">what #5 changed"#)), "{}", page.body);

    let started = Instant::now();
    let diff = login.get(&ui, &format!("/runs/{id}/diff?from=2&to=5"));
    let took = started.elapsed();
    assert_eq!(diff.status, 200, "{}", diff.body);
    eprintln!("compare page v2..v5: {} bytes in {took:?}", diff.body.len());
    let listed = between(&diff.body, r#"<section id="between">"#, "</section>").unwrap();
    for seq in [3, 4, 5] {
        assert!(listed.contains(&format!(r##"<span class="seq">#{seq}</span>"##)), "#{seq} is between: {listed}");
    }
    assert!(!listed.contains("#2<") && !listed.contains("#6<"), "only the events after v2 up to v5: {listed}");
    assert!(listed.contains("3 event(s) in between") && listed.contains("changes_requested"), "{listed}");
    assert!(diff.body.contains("<strong>v2</strong>") && diff.body.contains("at step <code>implement</code> (visit 1)"), "{}", diff.body);
    assert!(diff.body.contains("<strong>v5</strong>") && diff.body.contains("at step <code>review</code> (visit 2)"), "{}", diff.body);
    let outcomes = between(&diff.body, r#"<section id="outcomes">"#, "</section>").unwrap();
    assert!(outcomes.contains("<td><code>review</code></td><td>–</td><td>changes_requested</td>"), "{outcomes}");
    assert!(outcomes.contains("<td><code>implement</code></td><td>–</td><td>implemented</td>"), "{outcomes}");
    let artifacts = between(&diff.body, r#"<section id="artifacts-changed">"#, "</section>").unwrap();
    assert!(artifacts.contains("<dt>Changed</dt><dd><code>round</code>"), "{artifacts}");
    let code = between(&diff.body, r#"<section id="code">"#, "</section>").unwrap();
    assert!(code.contains(r#"<span class="del">-first"#) && code.contains(r#"<span class="add">+impl-2"#), "{code}");
    assert!(code.contains(r#"<span class="add">+&lt;script&gt;alert(2)&lt;"#), "HTML in the code is escaped: {code}");
    assert!(!diff.body.contains("<script>alert"), "no HTML of the code reaches the page as HTML");
    assert!(code.contains("shared.txt") && !code.contains("design.md"), "design.md is the same in both: {code}");
    assert!(!code.contains("is cut"), "a short diff is whole");

    // The same comparison as `baton diff`: its events and its patch's lines are on the page.
    let (ok, out, err) = cli(&home, &["diff", &id, "--from", "2", "--to", "5", "--json"]);
    assert!(ok, "{out}{err}");
    let cli_diff: Value = serde_json::from_str(&out).unwrap();
    let seqs: Vec<u64> = cli_diff["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    for line in cli_diff["code"]["patch"].as_str().unwrap().lines().filter(|l| l.starts_with(['+', '-']) && !l.contains(['<', '/'])) {
        assert!(code.contains(line), "`{line}` of baton diff is on the page: {code}");
    }
    let unchanged = login.get(&ui, &format!("/runs/{id}/diff?from=5&to=7"));
    assert!(unchanged.body.contains("Unchanged: both versions are at"), "{}", unchanged.body);

    // A diff longer than the page shows is cut, and says how to see all of it.
    let big: String = (0..40_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(repo.join("big.txt"), &big).unwrap();
    let brief = lead.ok("resume", json!({"run_id": id})).await["brief"].clone();
    report(&lead, &brief, "approved", 3).await; // v8
    let started = Instant::now();
    let cut = login.get(&ui, &format!("/runs/{id}/diff?from=7&to=8"));
    eprintln!("compare page with a 400 KB diff: {} bytes in {:?}", cut.body.len(), started.elapsed());
    assert_eq!(cut.status, 200);
    assert!(
        cut.body.contains("The diff is cut: its first") && cut.body.contains(&format!("baton diff {id} --from 7 --to 8")),
        "{}",
        &cut.body[..2000]
    );
    let escaped_repo = repo.display().to_string().replace('/', "&#x2f;");
    assert!(cut.body.contains(&format!("git -C {escaped_repo} diff ")), "the git command shows all of it");
    assert!(cut.body.len() < 1024 * 1024, "the page is bounded: {} bytes", cut.body.len());

    // Refusals, in words with the fix: not a number, no such version.
    let html =
        |a: &support::web::Answer| a.header("content-type") == Some("text/html; charset=utf-8") && !a.body.trim_start().starts_with('{');
    let bad = login.get(&ui, &format!("/runs/{id}/diff?from=two&to=5"));
    assert!(bad.status == 400 && html(&bad) && bad.body.contains("`two` is not a version number"), "{}", bad.body);
    let missing = login.get(&ui, &format!("/runs/{id}/diff?from=2&to=99"));
    assert_eq!(missing.status, 400, "{}", missing.body);
    assert!(
        html(&missing) && missing.body.contains("has no version 99") && missing.body.contains("Give versions from 1 to 8"),
        "{}",
        missing.body
    );
    assert!(missing.body.contains(r#"name="to" value="99""#), "the form is there to fix it");

    // Pruned snapshots: the compare page and a fork from a checkpoint whose code is gone.
    std::fs::write(repo.join("wip.txt"), "uncommitted\n").unwrap();
    lead.ok("checkpoint", json!({"run_id": id, "name": "wip"})).await;
    std::fs::remove_file(repo.join("wip.txt")).unwrap();
    let listed = git(&repo, &["for-each-ref", "--format=%(refname)", &format!("refs/baton/{}/", &id[..8])]);
    for reference in listed.lines() {
        git(&repo, &["update-ref", "-d", reference]);
    }
    git(&repo, &["reflog", "expire", "--expire=now", "--all"]);
    git(&repo, &["gc", "-q", "--prune=now"]);
    let pruned = login.get(&ui, &format!("/runs/{id}/diff?from=2&to=5"));
    assert_eq!(pruned.status, 404, "{}", pruned.body);
    assert!(html(&pruned) && pruned.body.contains("is no longer in") && pruned.body.contains("class=\"fix\""), "{}", pruned.body);
    let fork = login.post(&ui, &format!("/runs/{id}/fork"), &[("checkpoint", "wip")]);
    assert_eq!(fork.status, 404, "{}", fork.body);
    assert!(fork.body.contains("at checkpoint `wip`") && fork.body.contains("is no longer in"), "{}", fork.body);
    let (ok, runs, _) = cli(&home, &["runs"]);
    assert!(ok && runs.starts_with("1 run(s)."), "the refused fork made no run: {runs}");

    // A moved repository.
    std::fs::rename(&repo, tmp.path().join("moved")).unwrap();
    let moved = login.get(&ui, &format!("/runs/{id}/diff?from=2&to=5"));
    assert_eq!(moved.status, 409, "{}", moved.body);
    assert!(html(&moved) && moved.body.contains("not there any more") && moved.body.contains("Move the repository back"), "{}", moved.body);
    lead.stop().await;
    ui.stop();
}

/// In a browser, a person picks a version on the timeline to compare with the latest, and
/// reads the compare page on a phone and on a wide screen without the page scrolling
/// sideways (a long line of code scrolls inside its box).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_compares_from_the_timeline_on_narrow_and_wide_pages() {
    let Some(mut browser) = Browser::launch() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(&tmp, "shared.txt", "first\n");
    let home = fresh_home(&tmp);
    let lead = Server::start_as(&home, &repo, Some("thread-lead")).await;
    let id = two_review_loops(&lead, &repo).await;
    std::fs::write(repo.join("wide.txt"), format!("{}\n", "a-very-long-line-of-code ".repeat(40))).unwrap();
    let brief = lead.ok("resume", json!({"run_id": id})).await["brief"].clone();
    report(&lead, &brief, "approved", 3).await; // v8
    let ui = UiServer::start(&home, database_env(&home));
    browser.navigate(&ui.url());
    browser.navigate(&format!("{}/runs/{id}", ui.origin()));
    browser.eval("document.getElementById('event-2').open = true; true");
    browser.and_wait_for_load("document.querySelector('#event-2 form.compare-link button').click(); true");
    let at = browser.eval("location.pathname + location.search");
    assert_eq!(at, json!(format!("/runs/{id}/diff?from=2&to=8")));
    let text = browser.eval("document.getElementById('code').innerText");
    assert!(text.as_str().unwrap().contains("+impl-2") && text.as_str().unwrap().contains("+<script>alert(2)</script>"), "{text}");
    let sideways = "(() => { const p = document.querySelector('pre.patch');
        return {page: document.documentElement.scrollWidth - document.documentElement.clientWidth, inner: p.scrollWidth - p.clientWidth}; })()";
    for (width, mobile) in [(390, true), (1400, false)] {
        browser.command(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile}),
        );
        browser.navigate(&format!("{}/runs/{id}/diff?from=2&to=8", ui.origin()));
        let fit = browser.eval(sideways);
        assert_eq!(fit["page"], json!(0), "at {width} px the page does not scroll sideways: {fit}");
        assert!(fit["inner"].as_f64().unwrap() > 0.0, "the long line scrolls inside its box at {width} px: {fit}");
    }
    browser.command("Emulation.clearDeviceMetricsOverride", json!({}));
    browser.screenshot(&screenshots().join("compare.png"));
    drop(browser);
    drop(ui);
    lead.stop().await;
}
