//! What only the PostgreSQL backend has to show: a server restart under load, a client
//! killed inside its transaction, migrations applied once by processes starting together,
//! sled -> PostgreSQL -> sled migration of 1,000 runs, the change feed across processes,
//! TLS to a server signed by a private CA, and credentials that never show. (The shared
//! integration tests, run with BATON_TEST_BACKEND=postgres, cover workflows, gates,
//! forks, fan-out, bad inputs and four processes racing on one run.)
//!
//! Each test uses a fresh database: in the cluster of BATON_TEST_POSTGRES_URL when set,
//! else in a private throwaway cluster; without PostgreSQL binaries they are skipped.

use crate::support;
use crate::support::pg::{self, Cluster, Held};
use crate::support::{Server, advanced_outputs, cli, ping_pong, use_database, wait_until};
use baton::api::{AdvanceParams, Caller, Envelope, Reply, Request, StartWorkflowParams};
use baton::service::Service;
use baton::store::{PgStore, RunStore, SledStore};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn home_on(tmp: &tempfile::TempDir, url: &str) -> std::path::PathBuf {
    let home = tmp.path().join("baton-home");
    use_database(&home, url);
    home
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restart_under_load_loses_no_acknowledged_change_and_clients_reconnect() {
    // A private cluster: restarting it disturbs no other test.
    let Some(cluster) = Cluster::start() else { return };
    let url = pg::create_database(&cluster.url("postgres"));
    let tmp = tempfile::tempdir().unwrap();
    let home = home_on(&tmp, &url);
    let servers: Vec<Arc<Server>> =
        futures::future::join_all((0..3).map(|_| Server::start(&home))).await.into_iter().map(Arc::new).collect();
    let stop_at = Instant::now() + Duration::from_secs(6);
    let tasks: Vec<_> = servers
        .iter()
        .enumerate()
        .map(|(i, server)| {
            let server = Arc::clone(server);
            tokio::spawn(async move {
                let mut brief = server.ok("start_workflow", json!({"goal": format!("load {i}"), "template_definition": ping_pong()})).await;
                let mut acks: Vec<(Instant, String)> = Vec::new();
                while Instant::now() < stop_at {
                    let marker = format!("load{i}-{}", acks.len());
                    // Any error fails the test: a restart must be invisible to callers.
                    brief = server.advance(&brief, "next", &marker).await;
                    acks.push((Instant::now(), marker));
                }
                (brief["run_id"].as_str().unwrap().to_string(), acks)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarting = Instant::now();
    let cluster = Arc::new(cluster);
    let restarter = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || restarter.restart_fast()).await.unwrap();
    let restarted = Instant::now();
    let results: Vec<(String, Vec<(Instant, String)>)> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
    eprintln!("pg_ctl restart -m fast took {:?}", restarted - restarting);
    for (run_id, acks) in &results {
        let before = acks.iter().filter(|a| a.0 < restarting).count();
        let after = acks.iter().filter(|a| a.0 > restarted).count();
        assert!(before > 0 && after > 0, "run {run_id}: {before} advances acknowledged before the restart, {after} after");
        let history = advanced_outputs(&servers[0], run_id).await;
        let expected: Vec<String> = acks.iter().map(|a| a.1.clone()).collect();
        assert!(history == expected, "run {run_id}: {} advances stored, {} acknowledged", history.len(), expected.len());
    }
    let (ok, out, err) = cli(&home, &["verify", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["problems"], json!([]));
    for server in servers {
        Arc::into_inner(server).unwrap().stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_inside_its_transaction_leaves_nothing_half_applied() {
    let Some((url, _cluster)) = pg::database() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let home = home_on(&tmp, &url);
    let victim = Arc::new(Server::start(&home).await);
    let brief = victim.ok("start_workflow", json!({"goal": "g"})).await;
    let run_id = brief["run_id"].as_str().unwrap().to_string();
    // Hold the key of the run's next event in another transaction: the victim's commit
    // updates the run row, then waits on that key, inside its transaction.
    let held = Held::hold(&url, &format!("INSERT INTO events (run_id, seq, body) VALUES ('{run_id}', 2, '{{}}')"));
    let call = {
        let victim = Arc::clone(&victim);
        let brief = brief.clone();
        tokio::spawn(async move {
            victim.call("advance", json!({"run_id": brief["run_id"], "expected_version": 1, "outcome": "planned", "output": "plan"})).await
        })
    };
    // The victim's backend has written (it has a transaction id) and waits for the lock.
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'baton' AND wait_event_type = 'Lock' AND backend_xid IS NOT NULL";
    wait_until("the victim is inside its transaction", Duration::from_secs(20), || pg::query(&url, waiting)[0][0].as_deref() == Some("1"))
        .await;
    victim.kill();
    call.abort();
    held.release();
    let gone =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'baton' AND state <> 'idle'";
    wait_until("the victim's session ended", Duration::from_secs(20), || pg::query(&url, gone)[0][0].as_deref() == Some("0")).await;

    // All or nothing: the run's version and its history agree, and the store is sound.
    let rows = pg::query(
        &url,
        &format!("SELECT version, (SELECT count(*) FROM events e WHERE e.run_id = r.run_id) FROM runs r WHERE run_id = '{run_id}'"),
    );
    let (version, events) = (rows[0][0].clone().unwrap(), rows[0][1].clone().unwrap());
    assert_eq!(version, events, "run at version {version} with {events} events");
    assert!(version == "1" || version == "2");
    eprintln!(
        "the killed client's change was {}",
        if version == "1" { "rolled back" } else { "committed whole (its COMMIT was already sent)" }
    );
    let (ok, out, err) = cli(&home, &["verify", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["problems"], json!([]), "{out}");
    // Another process goes on from there.
    let next = Server::start(&home).await;
    let seen = next.ok("resume", json!({"run_id": run_id})).await;
    let version: u64 = version.parse().unwrap();
    assert_eq!(seen["brief"]["version"].as_u64(), Some(version));
    let outcome = if version == 1 { "planned" } else { "implemented" };
    next.ok("advance", json!({"run_id": run_id, "expected_version": version, "outcome": outcome, "output": "after the crash"})).await;
    next.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_apply_each_migration_once() {
    let Some((url, _cluster)) = pg::database() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let home = home_on(&tmp, &url);
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let home = home.clone();
            tokio::task::spawn_blocking(move || cli(&home, &["runs", "--json"]))
        })
        .collect();
    for result in futures::future::join_all(runs).await {
        let (ok, out, err) = result.unwrap();
        assert!(ok, "{err}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["total"], 0);
    }
    let applied = pg::query(&url, "SELECT version, name FROM schema_migrations ORDER BY version");
    assert_eq!(applied.len(), baton::store::postgres::schema::MIGRATIONS.len(), "{applied:?}");
    assert_eq!(applied[0][0].as_deref(), Some("1"));
}

/// Run a request through a service.
async fn request(service: &Service, request: Request) -> Reply {
    let envelope = Envelope { op_id: uuid::Uuid::new_v4().to_string(), caller: Caller::default(), request, deadline_ms: None };
    service.handle(&envelope).await.unwrap_or_else(|e| panic!("{e}"))
}

fn brief(reply: Reply) -> (String, u64, String) {
    match reply {
        Reply::Brief(b) => (b.run_id.clone(), b.version, b.step.clone().unwrap_or_default()),
        other => panic!("not a brief: {other:?}"),
    }
}

/// 1,000 runs of several shapes: templates, loops, checkpoints, gates, cancellations.
async fn fill(service: Arc<Service>, runs: usize) {
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                for i in (w..runs).step_by(8) {
                    let template = ["feature", "bugfix"][i % 2].to_string();
                    let start = StartWorkflowParams {
                        goal: format!("goal {i}: ünïcödé ✓ \"quoted\"\nsecond line"),
                        template: Some(template),
                        context: Some(json!({"i": i, "nested": {"b": 2, "a": [1, "x"]}}).as_object().unwrap().clone()),
                        ..serde_json::from_value(json!({"goal": "-"})).unwrap()
                    };
                    let (id, mut version, mut step) = brief(request(&service, Request::StartWorkflow(start)).await);
                    for n in 0..(i % 5) {
                        let outcome = match step.as_str() {
                            "design" | "reproduce" => {
                                if step == "design" {
                                    "planned"
                                } else {
                                    "reproduced"
                                }
                            }
                            "implement" | "fix" => {
                                if step == "implement" {
                                    "implemented"
                                } else {
                                    "fixed"
                                }
                            }
                            "review" => {
                                if n % 2 == 0 {
                                    "changes_requested"
                                } else {
                                    "approved"
                                }
                            }
                            _ => break,
                        };
                        let advance: AdvanceParams = serde_json::from_value(
                            json!({"run_id": id, "expected_version": version, "outcome": outcome, "output": format!("output {n} of {i}")}),
                        )
                        .unwrap();
                        (_, version, step) = brief(request(&service, Request::Advance(advance)).await);
                    }
                    if i % 7 == 0 {
                        let cp = serde_json::from_value(json!({"run_id": id, "name": format!("cp{i}")})).unwrap();
                        request(&service, Request::Checkpoint(cp)).await;
                    }
                    if i % 11 == 0 {
                        let cancel = serde_json::from_value(json!({"run_id": id, "reason": "enough"})).unwrap();
                        request(&service, Request::CancelRun(cancel)).await;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let custom = json!({"name": "custom", "steps": [{"name": "only", "role": "implementer", "outcomes": {"done": "done"}}]});
    let start: StartWorkflowParams = serde_json::from_value(json!({"goal": "custom", "template_definition": custom})).unwrap();
    request(&service, Request::StartWorkflow(start)).await;
}

async fn export_of(store: &dyn RunStore) -> Vec<u8> {
    let mut out = Vec::new();
    store.export(&mut out).await.unwrap();
    out
}

fn write<'a>(path: &'a Path, bytes: &[u8]) -> &'a Path {
    std::fs::write(path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migration_round_trips_1000_runs_sled_to_postgres_to_sled_exactly() {
    let Some((url, _cluster)) = pg::database() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let source: Arc<dyn RunStore> = Arc::new(SledStore::open(&tmp.path().join("source")).unwrap());
    fill(Arc::new(Service::new(Arc::clone(&source))), 1000).await;
    let original = export_of(source.as_ref()).await;
    let file = write(&tmp.path().join("a.jsonl"), &original).to_path_buf();

    let postgres = PgStore::open(baton::store::postgres::DatabaseUrl::parse(&url).unwrap()).await.unwrap();
    let started = Instant::now();
    let copied = baton::migrate::copy(&file, &postgres, false).await.unwrap();
    eprintln!("sled -> PostgreSQL: {copied:?} in {:?}", started.elapsed());
    assert_eq!((copied.runs, copied.templates), (1001, 1));
    assert!(copied.events > 2000 && copied.checkpoints > 100, "{copied:?}");
    let again = baton::migrate::copy(&file, &postgres, false).await.unwrap_err();
    assert_eq!(again.code, baton::error::ErrorCode::Conflict, "existing runs are not overwritten: {again}");
    let report = postgres.verify().await.unwrap();
    assert!(report.is_sound() && report.runs == 1001 && report.events == copied.events, "{report:?}");
    let from_postgres = export_of(&postgres).await;
    assert!(from_postgres == original, "PostgreSQL exports exactly what sled exported");

    let back: Arc<dyn RunStore> = Arc::new(SledStore::open(&tmp.path().join("back")).unwrap());
    let file = write(&tmp.path().join("b.jsonl"), &from_postgres).to_path_buf();
    assert_eq!(baton::migrate::copy(&file, back.as_ref(), false).await.unwrap(), copied);
    assert!(export_of(back.as_ref()).await == original, "the round trip is exact");
    assert!(back.verify().await.unwrap().is_sound());
    // Listings agree too.
    for status in [baton::store::StatusFilter::Open, baton::store::StatusFilter::Cancelled] {
        let query = baton::store::RunQuery { status, limit: 20, ..Default::default() };
        let (a, b) = (back.list(&query).await.unwrap(), postgres.list(&query).await.unwrap());
        assert_eq!((a.total, a.runs), (b.total, b.runs), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_migrate_copies_a_home_to_postgres_and_back_and_refuses_to_overwrite() {
    let Some((url, _cluster)) = pg::database() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let home = support::fresh_home(&tmp);
    std::fs::remove_file(home.with_extension("database-url")).ok(); // this home uses sled
    let server = Server::start(&home).await;
    let brief = server.ok("start_workflow", json!({"goal": "move me"})).await;
    server.advance(&brief, "planned", "a plan").await;
    server.ok("checkpoint", json!({"run_id": brief["run_id"], "name": "cp"})).await;
    server.stop().await;
    let (ok, out, err) = cli(&home, &["migrate", "--to", &url]);
    assert!(ok, "{err}");
    assert!(out.contains("Copied 1 run(s) with 3 event(s), 1 checkpoint(s)") && out.contains("verified"), "{out}");
    let (ok, _, err) = cli(&home, &["migrate", "--to", &url]);
    assert!(!ok && err.contains("already exists") && err.contains("--replace"), "{err}");
    let (ok, out, err) = cli(&home, &["migrate", "--to", &url, "--replace"]);
    assert!(ok, "{out}{err}");

    // And back, from PostgreSQL (BATON_DATABASE_URL) to a new sled directory.
    let pg_home = tmp.path().join("pg-home");
    use_database(&pg_home, &url);
    let back = tmp.path().join("back-db");
    let (ok, out, err) = cli(&pg_home, &["migrate", "--to", &back.to_string_lossy()]);
    assert!(ok && out.contains("sled"), "{out}{err}");
    let store = SledStore::open(&back).unwrap();
    let run = store.run(brief["run_id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!((run.version, run.checkpoints.clone()), (3, vec!["cp".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_wakes_other_processes() {
    let Some((url, _cluster)) = pg::database() else { return };
    let parse = || baton::store::postgres::DatabaseUrl::parse(&url).unwrap();
    let watcher = PgStore::open(parse()).await.unwrap();
    let writer: Arc<dyn RunStore> = Arc::new(PgStore::open(parse()).await.unwrap());
    let mut feed = watcher.changes();
    // The listener counts one when it connects; then each commit of the other pool.
    tokio::time::timeout(Duration::from_secs(10), feed.wait_for(|c| *c >= 1)).await.expect("listening").unwrap();
    let seen = *feed.borrow_and_update();
    let service = Service::new(Arc::clone(&writer));
    request(&service, Request::StartWorkflow(serde_json::from_value(json!({"goal": "wake"})).unwrap())).await;
    tokio::time::timeout(Duration::from_secs(10), feed.wait_for(|c| *c > seen)).await.expect("woken by the other store's commit").unwrap();

    // The sled store's feed counts its own durable changes.
    let tmp = tempfile::tempdir().unwrap();
    let sled: Arc<dyn RunStore> = Arc::new(SledStore::open(&tmp.path().join("db")).unwrap());
    let feed = sled.changes();
    let before = *feed.borrow();
    request(&Service::new(Arc::clone(&sled)), Request::StartWorkflow(serde_json::from_value(json!({"goal": "wake"})).unwrap())).await;
    assert!(*feed.borrow() > before);
}

#[tokio::test]
async fn credentials_never_show_and_an_unreachable_server_is_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let run = |url: &str| {
        let out = std::process::Command::new(support::BATON)
            .env("BATON_HOME", &home)
            .env("BATON_DATABASE_URL", url)
            .env("BATON_DATABASE_TIMEOUT", "1s")
            .env("BATON_LOG", "info")
            .args(["runs"])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = run("postgres://team:hunter2-secret@127.0.0.1:1/baton");
    assert!(!ok && err.contains("unavailable") && err.contains("127.0.0.1:1/baton"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
    let (ok, err) = run("postgres://team:hunter2-secret@127.0.0.1:1/baton?sslmode=bogus");
    assert!(!ok && err.contains("BATON_DATABASE_URL") && !err.contains("hunter2"), "{err}");
    let Some((url, _cluster)) = pg::database() else { return };
    let (base, params) = url.split_once('?').unwrap();
    let server = base.rsplit_once('/').unwrap().0.replacen("://baton@", "://baton:hunter2-secret@", 1);
    let missing = format!("{server}/nosuch_db?{params}");
    let (ok, err) = run(&missing);
    assert!(!ok && err.contains("does not exist") && err.contains("createdb"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}

/// A CA and a server certificate for `localhost`/127.0.0.1, made with the openssl tool.
fn certificates(dir: &Path) -> bool {
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=baton test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]) && openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"])
        && openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ])
}

#[tokio::test]
async fn tls_to_a_server_signed_by_a_private_ca() {
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: no openssl tool to make certificates");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = vec![
        "listen_addresses = '127.0.0.1'".to_string(),
        format!("port = {port}"),
        "ssl = on".to_string(),
        "ssl_cert_file = 'server.pem'".to_string(),
        "ssl_key_file = 'server.key'".to_string(),
    ];
    // TCP only with TLS; the Unix socket stays open for the test's own checks.
    let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\n";
    let mut made = false;
    let Some(cluster) = Cluster::start_full(&conf, Some(hba), |c| {
        made = certificates(&c.data());
        std::fs::set_permissions(c.data().join("server.key"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).ok();
    }) else {
        return;
    };
    assert!(made, "openssl made the certificates");
    let ca = cluster.data().join("ca.pem");
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let run = |url: String| {
        let out = std::process::Command::new(support::BATON)
            .env("BATON_HOME", &home)
            .env("BATON_DATABASE_URL", url)
            .env("BATON_DATABASE_TIMEOUT", "2s")
            .args(["runs", "--json"])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, out, err) = run(format!("postgres://baton@localhost:{port}/postgres?sslmode=require&sslrootcert={}", ca.display()));
    assert!(ok, "TLS with the private CA: {err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["total"], 0);
    let (ok, _, err) = run(format!("postgres://baton@localhost:{port}/postgres?sslmode=require"));
    assert!(!ok && err.contains("sslrootcert"), "an unknown CA is refused, with the fix: {err}");
    let (ok, _, err) = run(format!("postgres://baton@127.0.0.1:{port}/postgres?sslmode=disable"));
    assert!(!ok && err.contains("pg_hba.conf"), "plain TCP is refused by this server: {err}");
}
