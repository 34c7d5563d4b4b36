//! `baton verify`, `backup`, `export` and `import` from a terminal while a Codex session's
//! `baton serve` owns the database; `verify --repair` only with no session running.

use crate::support;
use crate::support::{Server, cli, fresh_home};
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

/// Run `baton install` for `home` into a fresh Codex home, with `args` added.
fn install(home: &std::path::Path, codex_home: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(support::BATON)
        .env("BATON_HOME", home)
        .env("CODEX_HOME", codex_home)
        .env_remove("BATON_KEY_FILE")
        .arg("install")
        .args(args)
        .output()
        .expect("run baton install");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Stop the owner of `home` (SIGTERM) and wait until it is gone.
async fn stop_owner(home: &std::path::Path) {
    let owner = support::owner_pid(home);
    support::signal(owner, "-TERM");
    support::wait_until("the owner exits on SIGTERM", std::time::Duration::from_secs(20), || !support::alive(owner)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_encrypt_seals_every_record_and_the_key_stays_outside_the_database() {
    if support::owner_only("encryption at rest of the sled database") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let codex_home = tmp.path().join("codex");
    let (ok, out, err) = install(&home, &codex_home, &["--encrypt", "--no-skill"]);
    assert!(ok && out.contains("encrypted at rest") && out.contains("db.key"), "{out}{err}");
    let key_file = home.join("db.key");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600, "the key is private");
    assert_eq!(std::fs::metadata(&key_file).unwrap().len(), 32);

    let server = Server::start(&home).await;
    let secret = "Rotate the AKIA-SECRET-42 credentials";
    let brief = server.ok("start_workflow", json!({"goal": secret})).await;
    let brief = server.advance(&brief, "planned", "plan naming AKIA-SECRET-42 again").await;
    let run_id = brief["run_id"].as_str().unwrap().to_string();
    server.stop().await;
    stop_owner(&home).await;

    for entry in std::fs::read_dir(home.join("db")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(12).any(|w| w == b"AKIA-SECRET-"), "{} holds the goal in the clear", path.display());
        }
    }
    // A new owner finds the key beside the database by itself.
    let (ok, out, err) = cli(&home, &["show", &run_id, "--json"]);
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((shown["run"]["goal"].as_str(), shown["run"]["version"].as_u64()), (Some(secret), Some(2)));
    let (ok, _, _) = install(&home, &codex_home, &["--encrypt", "--no-skill"]);
    assert!(ok, "installing again keeps the key");
    stop_owner(&home).await;

    // Without the key the database is refused with the fix, never served or overwritten.
    let moved = tmp.path().join("kept.key");
    std::fs::rename(&key_file, &moved).unwrap();
    let (ok, _, err) = cli(&home, &["runs"]);
    assert!(!ok && err.contains("encrypted, and no key") && err.contains("BATON_KEY_FILE"), "{err}");
    let out = std::process::Command::new(support::BATON)
        .env("BATON_HOME", &home)
        .env("BATON_KEY_FILE", &moved)
        .env("BATON_OWNER_IDLE", "1s")
        .args(["show", &run_id, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "BATON_KEY_FILE names a key kept elsewhere: {}", String::from_utf8_lossy(&out.stderr));

    // A database that already holds runs in the clear is not half-encrypted.
    let plain = tmp.path().join("plain-home");
    let server = Server::start(&plain).await;
    server.ok("start_workflow", json!({"goal": "in the clear"})).await;
    server.stop().await;
    let (ok, _, err) = install(&plain, &codex_home, &["--encrypt", "--no-skill"]);
    assert!(!ok && err.contains("already holds runs in the clear") && err.contains("baton export"), "{err}");
    assert!(!plain.join("db.key").exists(), "nothing was changed");
}
