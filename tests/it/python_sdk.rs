//! A `parallel` run's task flow through the official Python MCP SDK (`mcp`, pinned below),
//! whose `ClientSession.call_tool` validates every structured result against the tool's
//! `outputSchema` and raises on a mismatch, as it did for every task brief before baton's
//! schemas admitted them. The SDK is installed with pip into a private venv under
//! target/tmp on first run; without python3 or pip (or PyPI) the test says SKIPPED, except
//! under CI (`CI` set), where it fails.

use crate::support::{BATON, OWNER_IDLE, database_env, fresh_home};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The SDK version the flow is checked with.
const MCP_SDK: &str = "mcp==2.3.0";

/// A venv with the SDK, made once; `Err` says why there is none.
fn sdk_python() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-mcp-sdk");
    let python = venv.join("bin/python");
    let marker = venv.join(format!("installed-{MCP_SDK}"));
    if marker.exists() {
        return Ok(python);
    }
    let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).output().map_err(|e| format!("python3 -m venv: {e}"))?;
    if !made.status.success() {
        return Err(format!("python3 -m venv failed: {}", String::from_utf8_lossy(&made.stderr)));
    }
    let pip = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", MCP_SDK])
        .output()
        .map_err(|e| format!("pip: {e}"))?;
    if !pip.status.success() {
        return Err(format!("pip install {MCP_SDK} failed: {}", String::from_utf8_lossy(&pip.stderr)));
    }
    std::fs::write(&marker, "").map_err(|e| format!("{e}"))?;
    Ok(python)
}

#[test]
fn the_python_sdk_validates_every_answer_of_a_task_flow() {
    let python = match sdk_python() {
        Ok(python) => python,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: the Python MCP SDK is not available ({why})");
            return;
        }
        Err(why) => panic!("the Python MCP SDK is not available under CI: {why}"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = fresh_home(&tmp);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sdk_flow.py");
    let out = Command::new(python)
        .arg(script)
        .arg(BATON)
        .env("BATON_HOME", &home)
        .env("BATON_OWNER_IDLE", OWNER_IDLE)
        .env("BATON_LOG", "warn")
        .envs(database_env(&home))
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the SDK flow failed:\n{stderr}\n{stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no summary line ({e}):\n{stdout}\n{stderr}"));
    // start, plan, 2 tasks x 3 steps x (claim, renew, report), briefing, listing, 2 views, integrate.
    assert_eq!(summary["validated"], 25, "{summary}");
    eprintln!("the Python SDK validated {} structured results", summary["validated"]);
}
