//! LangGraph's durable step beside baton's: `worker.py` (LangGraph 1.x, SqliteSaver,
//! `durability="sync"`, `PRAGMA synchronous=FULL`) in a private virtualenv under the target
//! directory, installed with pip the first time. Without python3 or PyPI the bench says
//! why and goes on without it; `BATON_BENCH_NO_LANGGRAPH=1` skips it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

const WORKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/langgraph/worker.py");
const PACKAGES: &[&str] = &["langgraph>=1,<2", "langgraph-checkpoint-sqlite"];

static WHY_NOT: Mutex<String> = Mutex::new(String::new());

/// Why there is no worker, once [`Worker::start`] returned `None`.
pub fn why_not() -> String {
    WHY_NOT.lock().map(|w| w.clone()).unwrap_or_default()
}

fn skip(why: impl Into<String>) -> Option<Worker> {
    if let Ok(mut slot) = WHY_NOT.lock() {
        *slot = why.into();
    }
    None
}

/// A running worker process.
pub struct Worker {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Worker {
    /// A worker with its SQLite database in `dir`, installing LangGraph when missing.
    pub fn start(dir: &Path) -> Option<Worker> {
        if std::env::var_os("BATON_BENCH_NO_LANGGRAPH").is_some() {
            return skip("BATON_BENCH_NO_LANGGRAPH is set");
        }
        let python = match venv_python() {
            Ok(python) => python,
            Err(why) => return skip(why),
        };
        let spawned =
            Command::new(&python).arg(WORKER).arg(dir.join("langgraph.sqlite")).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => return skip(format!("cannot run {}: {e}", python.display())),
        };
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else { return skip("no pipes to the worker") };
        let mut worker = Worker { child, input, output: BufReader::new(output) };
        let mut ready = String::new();
        if worker.output.read_line(&mut ready).is_err() || ready.trim() != "ready" {
            return skip(format!("the LangGraph worker did not start (it said {ready:?})"));
        }
        Some(worker)
    }

    /// Run `n` durable steps; their latencies.
    pub fn steps(&mut self, n: usize) -> Vec<Duration> {
        let mut line = String::new();
        if writeln!(self.input, "{n}").and_then(|()| self.input.flush()).is_err() || self.output.read_line(&mut line).is_err() {
            return Vec::new();
        }
        let seconds: Vec<f64> = serde_json::from_str(&line).unwrap_or_default();
        seconds.into_iter().map(Duration::from_secs_f64).collect()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The virtualenv's python with LangGraph installed, or why there is none.
fn venv_python() -> Result<PathBuf, String> {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let venv = target.join("langgraph-venv");
    let python = venv.join("bin").join("python");
    let has_langgraph = |python: &Path| {
        Command::new(python)
            .args(["-c", "import langgraph.checkpoint.sqlite, langgraph.graph"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_langgraph(&python) {
        return Ok(python);
    }
    println!("installing LangGraph into {} (once)...", venv.display());
    let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
    if !made.is_ok_and(|s| s.success()) {
        return Err("python3 -m venv failed (is python3 with venv installed?)".into());
    }
    let installed = Command::new(venv.join("bin").join("pip")).args(["install", "-q"]).args(PACKAGES).status();
    if !installed.is_ok_and(|s| s.success()) || !has_langgraph(&python) {
        return Err(format!("pip could not install {} (is PyPI reachable?)", PACKAGES.join(" ")));
    }
    Ok(python)
}
