//! Who is calling and from where, read from the `_meta` Codex attaches to every
//! `tools/call` (its thread id and the session's working directory).

use crate::api::Caller;
use crate::engine::{Actor, ActorKind};
use crate::gitops::workspace::{Probe, probe};
use rmcp::model::JsonObject;
use std::path::PathBuf;

/// This process's working directory, read once: a `baton serve` session never changes it
/// (only the owner process moves to `/`), and reading it per call was a `getcwd` system
/// call on every request's path (issue 22).
fn process_cwd() -> Option<&'static PathBuf> {
    static CWD: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    CWD.get_or_init(|| std::env::current_dir().ok()).as_ref()
}

/// `_meta` keys that carry the Codex thread (session) id, in order of preference.
const THREAD_KEYS: &[&str] = &["threadId", "thread_id", "sessionId", "session_id", "x-codex-thread-id", "codex/threadId"];
/// `_meta` keys that carry the working directory.
const CWD_KEYS: &[&str] = &["cwd", "workingDirectory", "working_directory", "x-codex-cwd", "codex/cwd"];

/// The context of one tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallContext {
    /// The caller's working directory: from `_meta`, else this process's.
    pub cwd: PathBuf,
    /// The Codex thread id, if the client sent one.
    pub thread: Option<String>,
}

impl CallContext {
    pub fn of(meta: &JsonObject) -> CallContext {
        let thread = find_string(meta, THREAD_KEYS);
        let cwd = find_string(meta, CWD_KEYS)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| process_cwd().cloned())
            .unwrap_or_else(|| PathBuf::from("/"));
        CallContext { cwd, thread }
    }

    /// The caller of `tool`, with as much of the workspace as that tool records: the git
    /// state for tools that keep it, the repository root for listings, none on the hot path.
    pub async fn caller(&self, tool: &str) -> Caller {
        let actor = Actor { kind: ActorKind::Codex, id: self.thread.clone(), agent: None };
        let depth = match tool {
            "start_workflow" | "checkpoint" => Some(Probe::Full),
            "resume" => Some(Probe::Root),
            _ => None,
        };
        let workspace = match depth {
            Some(depth) => Some(probe(&self.cwd, depth).await),
            None => None,
        };
        Caller { actor, workspace }
    }
}

/// The first string value under any of `keys`, looking one level into nested objects
/// (clients group their metadata under a namespace key).
/// Blank values are skipped: an empty thread id is no identity (it would make every
/// client that sends one the same agent).
fn find_string(meta: &JsonObject, keys: &[&str]) -> Option<String> {
    find_string_flat(meta, keys).or_else(|| meta.values().filter_map(|v| v.as_object()).find_map(|nested| find_string_flat(nested, keys)))
}

fn find_string_flat(meta: &JsonObject, keys: &[&str]) -> Option<String> {
    keys.iter().filter_map(|k| meta.get(*k)?.as_str()).find(|s| !s.trim().is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn thread_and_cwd_come_from_meta_else_the_process() {
        let meta = json!({"threadId": "t-1", "cwd": "/work/repo"}).as_object().unwrap().clone();
        let call = CallContext::of(&meta);
        assert_eq!((call.thread.as_deref(), call.cwd.to_str()), (Some("t-1"), Some("/work/repo")));
        let nested = json!({"codex": {"thread_id": "t-2"}}).as_object().unwrap().clone();
        assert_eq!(CallContext::of(&nested).thread.as_deref(), Some("t-2"));
        let blank = json!({"threadId": "", "sessionId": "s-1"}).as_object().unwrap().clone();
        assert_eq!(CallContext::of(&blank).thread.as_deref(), Some("s-1"), "a blank thread id is skipped");
        let blank = json!({"threadId": " "}).as_object().unwrap().clone();
        assert_eq!(CallContext::of(&blank).thread, None, "a blank thread id is no identity");
        let relative = json!({"cwd": "repo"}).as_object().unwrap().clone();
        assert_eq!(CallContext::of(&relative).cwd, std::env::current_dir().unwrap(), "only absolute directories are trusted");
        assert_eq!(CallContext::of(&JsonObject::new()).caller("advance").await.workspace, None, "advance probes no git");
    }
}
