//! The human-facing terminal commands, run while a server owns the database.

use crate::support;
use crate::support::{Server, cli, fresh_home};
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
    assert!(lines[0].contains("waiting for you"), "{out}");
    assert!(out.contains(&format!("baton answer {id} yes")), "the command that answers: {out}");
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
    let run_id = support::run_with_large_output(&home).await;
    let mut child = support::spawn_show_json(&home, &run_id);
    drop(child.stdout.take()); // like `| head -c 0`
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// Run the real binary on a pseudo-terminal, as a person at a terminal does: stdin, stdout
/// and stderr are the terminal. Returns the exit code and everything it wrote, as the person
/// sees it (stdout and stderr together, `\r\n` made `\n`).
fn in_pty(home: &std::path::Path, args: &[&str]) -> (i32, String) {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    // The pair is opened close-on-exec (openpty cannot): the other tests of this binary
    // start processes at the same time, and one inheriting the terminal's slave side would
    // keep it open, so the read below would not end when this test's child exits.
    // SAFETY: posix_openpt returns a new descriptor or -1.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(master >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
    // SAFETY: the descriptor was just opened and is owned here alone.
    let mut master = unsafe { std::fs::File::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: grantpt, unlockpt and ptsname_r act on the master just opened; ptsname_r
    // writes at most `name.len()` bytes.
    let rc = unsafe {
        if libc::grantpt(master.as_raw_fd()) != 0 || libc::unlockpt(master.as_raw_fd()) != 0 {
            -1
        } else {
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len())
        }
    };
    assert_eq!(rc, 0, "grantpt/unlockpt/ptsname_r: {}", std::io::Error::last_os_error());
    // SAFETY: ptsname_r wrote a NUL-terminated name into `name`.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    // SAFETY: `name` is a valid C string; open returns a new descriptor or -1.
    let slave = unsafe { libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(slave >= 0, "open {name:?}: {}", std::io::Error::last_os_error());
    // SAFETY: the descriptor was just opened and is owned here alone.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let size = libc::winsize { ws_row: 50, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the given pointer.
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    let mut command = std::process::Command::new(support::BATON);
    command
        .args(args)
        .env("BATON_HOME", home)
        .env("BATON_OWNER_IDLE", support::OWNER_IDLE)
        .envs(support::database_env(home))
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: setsid and ioctl are async-signal-safe; the terminal becomes the child's own.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = command.spawn().expect("spawn baton on a pty");
    drop(command); // the parent's copies of the terminal's slave side
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // Reading ends with EIO once the child (the last holder of the slave side) exits.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).replace("\r\n", "\n")
    });
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > give_up {
            let _ = child.kill();
            panic!("baton {args:?} did not end within 20 s on a terminal");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    (status.code().unwrap_or(-1), reader.join().unwrap())
}

/// A template whose loop has one round and whose plan's tasks have one round each, so a
/// second round asks a person at once.
fn one_round_templates() -> (Value, Value) {
    let loop_once = json!({"name": "loop-once", "steps": [
        {"name": "write", "role": "implementer", "max_visits": 1, "outcomes": {"written": "check"}},
        {"name": "check", "role": "reviewer", "outcomes": {"ok": "done", "redo": "write"}}]});
    let split = json!({"name": "split-once", "steps": [
        {"name": "plan", "role": "architect", "outcomes": {"planned": {"fan_out": "quick", "join": "check", "on_task_failure": "ask"}}},
        {"name": "check", "role": "tester", "outcomes": {"passed": "done", "failed": "failed"}}],
        "pipelines": [{"name": "quick", "steps": [
            {"name": "do", "role": "implementer", "max_visits": 1, "outcomes": {"done": "verify"}},
            {"name": "verify", "role": "reviewer", "outcomes": {"ok": "join", "redo": "do"}}]}]});
    (loop_once, split)
}

#[tokio::test]
async fn a_person_at_a_terminal_sees_questions_with_the_command_tasks_and_short_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    let (loop_once, split) = one_round_templates();

    // A plain question with options.
    let brief = server.ok("start_workflow", json!({"goal": "Ship the search page", "title": "search"})).await;
    let asked = brief["run_id"].as_str().unwrap().to_string();
    server.ok("await_human", json!({"run_id": asked, "question": "Fuzzy matching?", "options": ["yes", "no"]})).await;

    // A loop that used up its rounds.
    let brief = server.ok("start_workflow", json!({"goal": "Write docs", "title": "docs", "template_definition": loop_once})).await;
    let looped = brief["run_id"].as_str().unwrap().to_string();
    let brief = server.advance(&brief, "written", "draft").await;
    let brief = server.advance(&brief, "redo", "too short").await;
    assert_eq!(brief["status"], "awaiting_human", "{brief}");

    // A plan of three tasks: one claimed, one asking (its loop used up), one ready.
    let brief = server.ok("start_workflow", json!({"goal": "Split it", "title": "split", "template_definition": split})).await;
    let parallel = brief["run_id"].as_str().unwrap().to_string();
    let plan = json!({"tasks": [{"id": "api", "title": "API"}, {"id": "ui", "title": "UI"}, {"id": "docs", "title": "Docs"}]});
    server
        .ok(
            "advance",
            json!({"run_id": parallel, "expected_version": brief["version"], "outcome": "planned", "output": "3 tasks", "plan": plan}),
        )
        .await;
    let api = server.ok("resume", json!({"run_id": parallel, "claim": "api"})).await;
    let api = server
        .ok(
            "advance",
            json!({"run_id": parallel, "task": "api", "lease_token": api["lease_token"], "outcome": "done", "output": "api done"}),
        )
        .await;
    assert_eq!(api["status"], "ready", "{api}");
    let other = Server::start_as(&home, tmp.path(), Some("thread-reviewer")).await;
    let review = other.ok("resume", json!({"run_id": parallel, "claim": "api"})).await;
    other
        .ok(
            "advance",
            json!({"run_id": parallel, "task": "api", "lease_token": review["lease_token"], "outcome": "redo", "output": "again"}),
        )
        .await;
    server.ok("resume", json!({"run_id": parallel, "claim": "ui"})).await;
    other.stop().await;

    // `show` with an 8-character prefix: the question, its options and the exact commands.
    let (code, out) = in_pty(&home, &["show", &asked[..8]]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("Run {asked} \"search\"")) && out.contains("waiting for you"), "{out}");
    assert!(out.contains("Fuzzy matching?") && out.contains("Options: yes, no"), "{out}");
    assert!(out.contains(&format!("baton answer {asked} yes")) && out.contains(&format!("baton answer {asked} no")), "{out}");
    assert!(out.contains("#2 just now human_asked by codex: asked: Fuzzy matching?"), "relative times in the events: {out}");
    for model_text in ["Play the", "call `advance`", "Summarize the outcome", "Call `resume`", "next_action"] {
        assert!(!out.contains(model_text), "model instructions are not for people ({model_text}): {out}");
    }

    // The loop-limit question, with `continue` and `fail`.
    let (code, out) = in_pty(&home, &["show", &looped[..6]]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("used up its rounds") && out.contains("Allow another 1 rounds"), "{out}");
    assert!(out.contains(&format!("baton answer {looped} continue")) && out.contains(&format!("baton answer {looped} fail")), "{out}");

    // The parallel run: a task table with holders and lease expiry, and the task's question.
    let (code, out) = in_pty(&home, &["show", &parallel[..8]]);
    assert_eq!(code, 0, "{out}");
    let row = |task: &str| out.lines().find(|l| l.trim_start().starts_with(task)).unwrap_or_else(|| panic!("no row for {task}: {out}"));
    assert!(out.contains("TASK") && out.contains("HOLDER") && out.contains("LEASE"), "{out}");
    assert!(row("ui").contains("claimed") && row("ui").contains("do") && row("ui").contains("expires in 9 min"), "{out}");
    assert!(row("api").contains("waiting for you"), "{out}");
    assert!(row("docs").contains("ready") && row("docs").trim_end().ends_with('-'), "{out}");
    assert!(out.contains("Task `api` asks") && out.contains(&format!("baton answer {parallel} continue --task api")), "{out}");

    // The printed command works as printed, prefix and all.
    let (code, out) = in_pty(&home, &["answer", &looped[..8], "continue"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&looped) && out.contains("active at step `write`") && !out.contains("Play the"), "{out}");
    let (code, out) = in_pty(&home, &["answer", &parallel[..8], "continue", "--task", "api"]);
    assert_eq!(code, 0, "{out}");

    // A prefix shared by no run, or too short, is refused with the fix and its exit code.
    let (code, out) = in_pty(&home, &["show", "zzzzzzzz"]);
    assert_eq!(code, 3, "not found: {out}");
    assert!(out.contains("not_found") && out.contains("baton runs") && !out.contains("`resume`"), "{out}");
    let (code, out) = in_pty(&home, &["show", "ab"]);
    assert_eq!(code, 2, "invalid argument: {out}");

    // `runs` says how many it shows of how many, with relative times and the question.
    let (code, out) = in_pty(&home, &["runs", "--limit", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("3 run(s), showing the 2 most recently changed"), "{out}");
    assert!(out.contains("changed just now"), "{out}");
    let (code, out) = in_pty(&home, &["runs", "--status", "open"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("    tasks: 0 of 3 joined, 1 being worked on\n"), "task progress (its question was answered above): {out}");
    server.stop().await;
}

#[tokio::test]
async fn mcp_takes_a_unique_prefix_too() {
    // (Ambiguous prefixes need chosen ids: see the unit test in src/service/run_ids.rs.)
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    let brief = server.ok("start_workflow", json!({"goal": "g"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    let shown = server.ok("inspect", json!({"run_id": &id[..8]})).await;
    assert_eq!(shown["run"]["id"], id.as_str(), "{shown}");
    let asked = server.ok("await_human", json!({"run_id": &id[..8], "question": "Go?"})).await;
    assert_eq!(asked["run_id"], id.as_str(), "{asked}");
    server.stop().await;
}

#[tokio::test]
async fn a_mistyped_home_creates_nothing_and_json_errors_have_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    let typo = tmp.path().join("typo");
    for command in [vec!["runs"], vec!["show", "5ef2ecab"], vec!["verify"], vec!["answer", "5ef2ecab", "yes"], vec!["ui"]] {
        let (code, out) = in_pty(&typo, &command);
        assert_eq!(code, 3, "{command:?}: {out}");
        assert!(out.contains("no baton database in") && out.contains(&typo.display().to_string()), "{command:?}: {out}");
        assert!(!typo.exists(), "{command:?} created {}", typo.display());
    }
    // --json: the error on stdout as JSON, the exit code by kind.
    let (ok, out, _) = cli(&typo, &["runs", "--json"]);
    assert!(!ok);
    let error: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((error["error"]["code"].as_str(), error["error"]["field"].as_str()), (Some("not_found"), Some("home")));
    let out = std::process::Command::new(support::BATON).args(["runs", "--json", "--home"]).arg(&typo).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    // A usage error with --json is JSON too, exit 2.
    let out = std::process::Command::new(support::BATON)
        .args(["prune", "--older-than", "-5d", "--json"])
        .env("BATON_HOME", &typo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["field"], "older_than", "{error}");
    let out = std::process::Command::new(support::BATON).args(["runs", "--limit", "many", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["code"], "invalid_argument", "{error}");
}

#[tokio::test]
async fn json_errors_of_a_live_database_parse_and_exit_by_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let server = Server::start(&home).await;
    let brief = server.ok("start_workflow", json!({"goal": "g"})).await;
    let id = brief["run_id"].as_str().unwrap().to_string();
    server.ok("await_human", json!({"run_id": id, "question": "Go?", "options": ["yes", "no"]})).await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(support::BATON)
            .args(args)
            .env("BATON_HOME", &home)
            .env("BATON_OWNER_IDLE", support::OWNER_IDLE)
            .envs(support::database_env(&home))
            .output()
            .unwrap();
        let json: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code(), json["error"]["code"].as_str().map(str::to_string), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(run(&["show", "00000000-0000-0000-0000-000000000000", "--json"]).1.as_deref(), Some("not_found"));
    let (code, kind, err) = run(&["answer", &id, "yes", "--expected-version", "1", "--json"]);
    assert_eq!((code, kind.as_deref()), (Some(4), Some("conflict")), "{err}");
    assert!(err.contains(&format!("baton show {id}")) && !err.contains("`resume`"), "{err}");
    let (code, kind, _) = run(&["answer", &id, "maybe", "--json"]);
    assert_eq!((code, kind.as_deref()), (Some(2), Some("invalid_argument")));
    let (code, kind, _) = run(&["cancel", &id, "--json"]);
    assert_eq!(code, Some(0), "{kind:?}");
    let (code, kind, err) = run(&["cancel", &id, "--json"]);
    assert_eq!((code, kind.as_deref()), (Some(5), Some("invalid_state")), "{err}");
    assert!(err.contains("is already cancelled"), "{err}");
    let (ok, out, _) = cli(&home, &["show", &id[..8], "--graph", "--json"]);
    assert!(ok, "{out}");
    let graph: Value = serde_json::from_str(&out).unwrap();
    assert!(graph.get("nodes").is_some() || graph.get("steps").is_some(), "--graph --json is the graph: {out}");
    server.stop().await;
}

#[test]
fn bare_baton_on_a_terminal_hints_and_on_a_pipe_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let (code, out) = in_pty(&home, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("MCP server Codex starts") && out.contains("baton runs") && out.contains("baton --help"), "{out}");
    assert!(!home.exists(), "the hint touches no database");

    use std::io::{BufRead, Write};
    let mut child = std::process::Command::new(support::BATON)
        .env("BATON_HOME", &home)
        .env("BATON_OWNER_IDLE", support::OWNER_IDLE)
        .envs(support::database_env(&home))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    drop(stdin);
    let _ = child.wait();
    let answer: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(answer["result"]["serverInfo"]["name"], "baton", "{answer}");
}

#[test]
fn help_describes_every_argument() {
    for command in [
        "runs",
        "show",
        "answer",
        "cancel",
        "verify",
        "backup",
        "export",
        "import",
        "migrate",
        "ui",
        "delete",
        "prune",
        "install",
        "uninstall",
    ] {
        let out = std::process::Command::new(support::BATON).args([command, "--help"]).output().unwrap();
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = help.lines().collect();
        let mut in_args = false;
        let mut checked = 0;
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with(' ') {
                in_args = *line == "Arguments:" || *line == "Options:";
                continue;
            }
            let item = line.trim_start();
            // An argument line: `  <RUN>  description` or `      --limit <N>  description`
            // (or the description on the lines below, indented further).
            if in_args && (item.starts_with('-') || item.starts_with('<') || item.starts_with('[')) {
                let described = item.split_once("  ").is_some_and(|(_, d)| !d.trim().is_empty() && !d.trim().starts_with("[default"))
                    || lines.get(i + 1).is_some_and(|next| next.len() - next.trim_start().len() > line.len() - item.len());
                assert!(described, "`baton {command} --help`: `{line}` has no description:\n{help}");
                checked += 1;
            }
        }
        assert!(checked >= 2, "`baton {command} --help` lists its arguments:\n{help}");
        if ["runs", "show", "answer", "install"].contains(&command) {
            assert!(help.contains("Examples:"), "`baton {command} --help` has examples:\n{help}");
        }
    }
    let out = std::process::Command::new(support::BATON).args(["ui", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(!help.contains("one-time"), "the token is not one-time: {help}");
    let out = std::process::Command::new(support::BATON).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit codes:") && help.contains("3 not found"), "{help}");
}

#[test]
fn install_keeps_the_database_beside_its_codex_home_and_commands_find_it() {
    let tmp = tempfile::tempdir().unwrap();
    let codex = tmp.path().join("codex");
    let baton = |args: &[&str], env: &[(&str, &std::path::Path)]| {
        let mut command = std::process::Command::new(support::BATON);
        command
            .args(args)
            .env_remove("BATON_HOME")
            .env_remove("CODEX_HOME")
            .env("HOME", tmp.path())
            .env("BATON_OWNER_IDLE", support::OWNER_IDLE);
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // A relative or missing --command is refused with the fix, and nothing is written.
    let (code, _, err) = baton(&["install", "--codex-home", codex.to_str().unwrap(), "--command", "./relbaton"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("relative") && err.contains("realpath"), "{err}");
    let missing = tmp.path().join("no-such-baton");
    let (code, _, err) = baton(&["install", "--codex-home", codex.to_str().unwrap(), "--command", missing.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no-such-baton") && err.contains("No such file"), "{err}");
    assert!(!codex.join("config.toml").exists());

    // --codex-home X: the database goes in X/baton, and later commands find it there.
    let (code, out, err) = baton(&["install", "--codex-home", codex.to_str().unwrap(), "--no-skill"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("BATON_HOME={}", codex.join("baton").display())), "{out}");
    assert!(!codex.join("baton").exists(), "install creates no database; the first `baton serve` does");
    let (code, _, err) = baton(&["runs"], &[("CODEX_HOME", &codex)]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains(&format!("no baton database in {}", codex.join("baton").display())), "the registered home: {err}");

    // --home Y: registered, and terminal commands use Y without being told.
    let pinned = tmp.path().join("pinned");
    let (code, _, err) =
        baton(&["--home", pinned.to_str().unwrap(), "install", "--codex-home", codex.to_str().unwrap(), "--no-skill"], &[]);
    assert_eq!(code, Some(0), "{err}");
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let (code, out, err) = baton(&["import", empty.to_str().unwrap()], &[("CODEX_HOME", &codex)]);
    assert_eq!(code, Some(0), "import fills a new home: {err}");
    assert!(out.contains("Imported 0 run(s)"), "{out}");
    let (code, out, err) = baton(&["runs"], &[("CODEX_HOME", &codex)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("0 run(s)."), "{out}");
    let (code, out, err) = baton(&["export", tmp.path().join("runs.jsonl").to_str().unwrap()], &[("CODEX_HOME", &codex)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Exported 0 run(s)"), "{out}");
    assert!(pinned.join("db").exists() && !tmp.path().join(".codex").exists(), "the registered home was used");
    // An existing file is never overwritten, and the message names the file, not its directory.
    let (code, _, err) = baton(&["export", tmp.path().join("runs.jsonl").to_str().unwrap()], &[("CODEX_HOME", &codex)]);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("runs.jsonl already exists"), "{err}");

    // Uninstalling where nothing is registered points to the plugin's removal.
    let (code, out, _) = baton(&["uninstall", "--codex-home", tmp.path().join("elsewhere").to_str().unwrap()], &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("codex plugin remove baton@baton-local"), "{out}");
}

#[tokio::test]
async fn template_file_errors_name_identifiers_but_never_values() {
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    std::fs::write(
        tmp.path().join("bad.toml"),
        "name = \"docs\"\n[[steps]]\nname = \"write\"\nrole = \"implementer\"\ninstructions = \"the secret is hunter2\"\noutcomes = { written = \"publish\" }\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("typo.toml"),
        "name = \"docs\"\n[[steps]]\nname = \"write\"\nrole = \"implementer\"\noutcome = { written = \"done\" }\n",
    )
    .unwrap();
    let server = Server::start_in(&home, tmp.path()).await;
    let err = server.err("start_workflow", json!({"goal": "g", "template_file": "bad.toml"})).await;
    let text = err.to_string();
    assert!(text.contains("publish") && !text.contains("hunter2"), "the unknown target is named, free text is not: {text}");
    let err = server.err("start_workflow", json!({"goal": "g", "template_file": "typo.toml"})).await;
    let text = err.to_string();
    assert!(text.contains("`outcome`"), "the unknown key is named: {text}");
    server.stop().await;
}
