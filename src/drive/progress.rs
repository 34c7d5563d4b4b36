//! What a person watching `baton drive` sees: one JSON object per line (`--json`), plain lines
//! otherwise, and on a terminal a status line kept at the bottom (redrawn every second) with
//! one entry per agent: unit, role, elapsed time, tokens so far, and the run's progress.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// An agent at work, as the status line shows it.
#[derive(Debug, Clone)]
pub struct Agent {
    pub role: String,
    pub started: Instant,
    pub tokens: u64,
}

/// The agents at work, shared with the tasks that play their turns (which update tokens).
pub type Agents = Arc<Mutex<BTreeMap<String, Agent>>>;

pub fn lock(agents: &Agents) -> MutexGuard<'_, BTreeMap<String, Agent>> {
    // A poisoned lock only means a turn task panicked; the entries are still usable.
    agents.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Progress {
    json: bool,
    tty: bool,
    /// A status line is on screen (to be cleared before the next line).
    drawn: AtomicBool,
    pub agents: Agents,
}

impl Progress {
    pub fn new(json: bool) -> Progress {
        Progress { json, tty: !json && std::io::stdout().is_terminal(), drawn: AtomicBool::new(false), agents: Agents::default() }
    }

    /// One event: a JSON line, or a plain line.
    pub fn event(&self, kind: &str, at: String, detail: Value) {
        let line = if self.json {
            let mut event = json!({"event": kind, "at": at});
            if let (Some(event), Some(detail)) = (event.as_object_mut(), detail.as_object()) {
                event.extend(detail.clone());
            }
            event.to_string()
        } else {
            let detail = detail
                .as_object()
                .map(|d| d.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| format!("{k}={}", plain(v))).collect::<Vec<_>>().join(" "));
            format!("baton drive: {kind} {}", detail.unwrap_or_default())
        };
        let mut out = std::io::stdout().lock();
        if self.drawn.swap(false, Ordering::SeqCst) {
            let _ = write!(out, "\r\x1b[2K");
        }
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// Redraw the status line (terminals only): `done/total` steps and each agent.
    pub fn status(&self, progress: &str) {
        if !self.tty {
            return;
        }
        let agents: Vec<String> = lock(&self.agents)
            .iter()
            .map(|(unit, a)| format!("{unit} ({}) {}s {} tok", a.role, a.started.elapsed().as_secs(), a.tokens))
            .collect();
        let line = format!("[{progress}] {}", if agents.is_empty() { "no agent working".to_string() } else { agents.join(" | ") });
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{line}");
        let _ = out.flush();
        self.drawn.store(true, Ordering::SeqCst);
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
