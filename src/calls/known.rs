//! The workspaces of runs this process has seen in answers. A run's workspace is fixed
//! when the run is created (a fork is a run of its own), so a step's report looks it up
//! here instead of asking the owner for the whole briefing first: that was a second round
//! trip and ~8 KB decoded per advance.

use crate::api::Reply;
use crate::engine::Workspace;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

/// Most runs whose workspace a process remembers (an agent works on a few).
const MOST_RUNS: usize = 1024;

type Known = HashMap<String, Option<Workspace>>;

fn known() -> MutexGuard<'static, Known> {
    static KNOWN: LazyLock<Mutex<Known>> = LazyLock::new(Mutex::default);
    KNOWN.lock().unwrap_or_else(|p| p.into_inner())
}

/// The workspace run `run_id` was created with, if an answer showed it (`Some(None)`:
/// the run has none).
pub(super) fn workspace_of(run_id: &str) -> Option<Option<Workspace>> {
    known().get(run_id).cloned()
}

/// Remember what `reply` shows of a run's workspace.
pub(super) fn learn_from(reply: &Reply) {
    match reply {
        Reply::Brief(brief) => remember(&brief.run_id, &brief.workspace),
        Reply::Briefing(briefing) => remember(&briefing.brief.run_id, &briefing.brief.workspace),
        _ => {}
    }
}

pub(super) fn remember(run_id: &str, workspace: &Option<Workspace>) {
    let mut known = known();
    if known.get(run_id) == Some(workspace) {
        return;
    }
    if known.len() >= MOST_RUNS {
        known.clear();
    }
    known.insert(run_id.to_string(), workspace.clone());
}

/// Forget every run: an import may replace a run, workspace and all.
pub(super) fn forget_all() {
    known().clear();
}
