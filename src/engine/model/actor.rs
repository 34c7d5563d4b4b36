//! Who changes a run and where their work happens: recorded with every event and kept in
//! the snapshot, so it sits below both.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct Actor {
    pub kind: ActorKind,
    /// The Codex thread id (`codex resume <id>` continues it), or the user name at a terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The name an agent gave itself, e.g. `reviewer-1` for a sub-agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A Codex session (or another MCP client).
    Codex,
    /// A person at a terminal, through the `baton` command.
    Terminal,
    /// A person on the local web page.
    Web,
    /// Not recorded (changes made before baton recorded actors).
    #[default]
    Unknown,
}

impl Actor {
    pub fn terminal(user: Option<String>) -> Actor {
        Actor { kind: ActorKind::Terminal, id: user, agent: None }
    }

    /// Whether `other` is the same agent: same kind, id and self-given name.
    pub fn same_agent(&self, other: &Actor) -> bool {
        self.kind == other.kind && self.id == other.id && self.agent == other.agent
    }

    /// A short label for listings, e.g. `codex 0199…` or `terminal alice`.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            ActorKind::Codex => "codex",
            ActorKind::Terminal => "terminal",
            ActorKind::Web => "web",
            ActorKind::Unknown => "unknown",
        };
        let mut label = kind.to_string();
        for part in [&self.agent, &self.id].into_iter().flatten() {
            label.push(' ');
            label.push_str(part);
        }
        label
    }
}

/// Where the work happens: the directory a run was started from and its git state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct Workspace {
    /// The working directory of the Codex session.
    pub cwd: String,
    /// The root of the git repository containing `cwd`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_root: Option<String>,
    /// The commit checked out, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_head: Option<String>,
    /// Whether the working tree had uncommitted changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_dirty: Option<bool>,
    /// A commit holding the working tree's uncommitted state (tracked and untracked files,
    /// not ignored ones) on top of `git_head`: checkpoints keep the code, not just HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_snapshot: Option<String>,
}

impl Workspace {
    /// The key runs are grouped by: the repository root, else the directory.
    pub fn key(&self) -> &str {
        self.git_root.as_deref().unwrap_or(&self.cwd)
    }
}
