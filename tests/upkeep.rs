//! `baton verify`, `backup`, `export` and `import` from a terminal while a Codex session's
//! `baton serve` owns the database; `verify --repair` only with no session running.

mod common;

use common::{Server, cli, fresh_home};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upkeep_commands_work_while_a_session_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    let mut brief = server.ok("start_workflow", json!({"goal": "upkeep"})).await;
    brief = server.advance(&brief, "planned", "the plan").await;
    server.ok("checkpoint", json!({"run_id": brief["run_id"], "name": "cp"})).await;
    let run_id = brief["run_id"].as_str().unwrap().to_string();

    let (ok, out, err) = cli(&home, &["verify"]);
    assert!(ok && out.contains("the database is sound"), "{out}{err}");
    let backup = tmp.path().join("backup");
    let (ok, out, err) = cli(&home, &["backup", backup.to_str().unwrap()]);
    assert!(ok && out.contains("Backed up"), "{out}{err}");
    let (ok, _, err) = cli(&home, &["verify", "--repair"]);
    assert!(
        !ok && err.contains("stop every baton session") && err.contains("other connection(s)"),
        "repair refuses while a session uses the database: {err}"
    );
    let export = tmp.path().join("runs.jsonl");
    let (ok, out, err) = cli(&home, &["export", export.to_str().unwrap()]);
    assert!(ok && out.contains("Exported 1 run"), "{out}{err}");
    let (ok, stdout_export, _) = cli(&home, &["export"]);
    assert!(ok && stdout_export.lines().count() == 2 && stdout_export.contains(&run_id));
    server.stop().await;

    // The backup is a database of its own: a home whose db/ is the backup serves the run.
    let restored = tmp.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::set_permissions(&restored, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::rename(&backup, restored.join("db")).unwrap();
    let (ok, out, err) = cli(&restored, &["show", &run_id, "--json"]);
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["run"]["version"], 3);

    let other = tmp.path().join("other");
    let (ok, out, err) = cli(&other, &["import", export.to_str().unwrap()]);
    assert!(ok && out.contains("Imported 1 run"), "{out}{err}");
    let (ok, _, err) = cli(&other, &["import", export.to_str().unwrap()]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, out, _) = cli(&other, &["show", &run_id, "--json"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["run"]["checkpoints"], json!(["cp"]));
    let (ok, out, err) = cli(&other, &["verify", "--repair"]);
    assert!(ok && out.contains("1 run(s)"), "{out}{err}");
}
