//! What a `resume` asks for. One tool does many things (list runs, brief one, fork one,
//! claim, renew, release or show a task), told apart by which arguments are given: they
//! are read here, once, into a [`Resume`], and the service and the calling pipeline both
//! act on that. The wire keeps [`ResumeParams`] as they are.

use super::ResumeParams;
use crate::error::{BatonError, BatonResult};
use crate::limits::{DEFAULT_LEASE_SECONDS, LEASE_SECONDS, bounded};
use serde::{Deserialize, Serialize};

/// The claim value that asks for the first task the caller may take.
const NEXT: &str = "next";

/// Which task a claim asks for. Written as a string: `"next"`, or a task's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ClaimTarget {
    /// The first task the caller may take.
    Next,
    /// This task.
    Task(String),
}

impl ClaimTarget {
    /// The task asked for by id, if one is.
    pub fn task(&self) -> Option<&str> {
        match self {
            ClaimTarget::Next => None,
            ClaimTarget::Task(id) => Some(id),
        }
    }
}

impl From<String> for ClaimTarget {
    fn from(text: String) -> ClaimTarget {
        if text == NEXT { ClaimTarget::Next } else { ClaimTarget::Task(text) }
    }
}

impl From<ClaimTarget> for String {
    fn from(target: ClaimTarget) -> String {
        match target {
            ClaimTarget::Next => NEXT.to_string(),
            ClaimTarget::Task(id) => id,
        }
    }
}

/// Unfinished runs: the caller's workspace's, or every workspace's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOpen {
    pub all_workspaces: bool,
}

/// Where one run stands, for picking it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunBriefing {
    pub run_id: String,
}

/// A new run forked from a named checkpoint of `run_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkCheckpoint {
    pub run_id: String,
    pub checkpoint: String,
    pub title: Option<String>,
}

/// A new run forked from `run_id` as it was at `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkAt {
    pub run_id: String,
    pub version: u64,
    pub title: Option<String>,
}

/// Claim a task of the run's fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub run_id: String,
    pub target: ClaimTarget,
    /// The lease asked for, within its bounds (the default when none was asked for).
    pub lease_seconds: u32,
}

/// Renew the lease on a task the caller holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renew {
    pub run_id: String,
    pub task: String,
    pub lease_token: u64,
    /// The lease asked for, within its bounds (the default when none was asked for).
    pub lease_seconds: u32,
}

/// Give a held task back unfinished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub run_id: String,
    pub task: String,
    pub lease_token: u64,
}

/// One task's brief, changing nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowTask {
    pub run_id: String,
    pub task: String,
}

/// What a `resume` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    List(ListOpen),
    Briefing(RunBriefing),
    Fork(ForkCheckpoint),
    ForkAt(ForkAt),
    Claim(Claim),
    Renew(Renew),
    Release(Release),
    Show(ShowTask),
}

impl ResumeParams {
    /// What these arguments ask for, or why they ask for nothing that can be done.
    pub fn intent(&self) -> BatonResult<Resume> {
        let title = self.title.clone();
        let Some(run_id) = self.run_id.clone() else {
            return match (&self.checkpoint, self.at_version) {
                (Some(_), _) => Err(BatonError::invalid(
                    "run_id",
                    "`checkpoint` needs the `run_id` it belongs to",
                    "Pass both `run_id` and `checkpoint` to fork, or neither to list runs.",
                )),
                (None, Some(_)) => Err(BatonError::invalid(
                    "run_id",
                    "`at_version` needs the `run_id` it belongs to",
                    "Pass both `run_id` and `at_version` to fork that run at that version.",
                )),
                (None, None) => Ok(Resume::List(ListOpen { all_workspaces: self.all_workspaces.unwrap_or(false) })),
            };
        };
        match (&self.checkpoint, self.at_version) {
            (Some(_), Some(_)) => {
                return Err(BatonError::invalid(
                    "at_version",
                    "`checkpoint` and `at_version` both say where to fork from",
                    "Pass one of them: a checkpoint's name, or a version (a checkpoint is a label on a version).",
                ));
            }
            (None, Some(version)) => return Ok(Resume::ForkAt(ForkAt { run_id, version, title })),
            (Some(checkpoint), None) => return Ok(Resume::Fork(ForkCheckpoint { run_id, checkpoint: checkpoint.clone(), title })),
            (None, None) => {}
        }
        if self.claim.is_none() && self.task.is_none() {
            return Ok(Resume::Briefing(RunBriefing { run_id }));
        }
        // Every task request is refused a lease length out of bounds, even one that uses none.
        let lease_seconds = bounded("lease_seconds", self.lease_seconds, DEFAULT_LEASE_SECONDS, LEASE_SECONDS)?;
        Ok(match (&self.claim, &self.task, self.lease_token) {
            (Some(_), Some(_), _) => {
                return Err(BatonError::invalid(
                    "claim",
                    "`claim` and `task` were both given",
                    "Use `claim` to take a task, or `task` to look at one.",
                ));
            }
            (Some(target), None, _) => Resume::Claim(Claim { run_id, target: target.clone(), lease_seconds }),
            (None, Some(task), Some(lease_token)) if self.release == Some(true) => {
                Resume::Release(Release { run_id, task: task.clone(), lease_token })
            }
            (None, Some(task), Some(lease_token)) => Resume::Renew(Renew { run_id, task: task.clone(), lease_token, lease_seconds }),
            (None, Some(task), None) => Resume::Show(ShowTask { run_id, task: task.clone() }),
            (None, None, _) => return Ok(Resume::Briefing(RunBriefing { run_id })),
        })
    }
}

impl From<Resume> for ResumeParams {
    fn from(intent: Resume) -> ResumeParams {
        let empty = ResumeParams::default();
        match intent {
            Resume::List(ListOpen { all_workspaces }) => ResumeParams { all_workspaces: all_workspaces.then_some(true), ..empty },
            Resume::Briefing(RunBriefing { run_id }) => ResumeParams { run_id: Some(run_id), ..empty },
            Resume::Fork(ForkCheckpoint { run_id, checkpoint, title }) => {
                ResumeParams { run_id: Some(run_id), checkpoint: Some(checkpoint), title, ..empty }
            }
            Resume::ForkAt(ForkAt { run_id, version, title }) => {
                ResumeParams { run_id: Some(run_id), at_version: Some(version), title, ..empty }
            }
            Resume::Claim(Claim { run_id, target, lease_seconds }) => {
                ResumeParams { run_id: Some(run_id), claim: Some(target), lease_seconds: Some(lease_seconds), ..empty }
            }
            Resume::Renew(Renew { run_id, task, lease_token, lease_seconds }) => ResumeParams {
                run_id: Some(run_id),
                task: Some(task),
                lease_token: Some(lease_token),
                lease_seconds: Some(lease_seconds),
                ..empty
            },
            Resume::Release(Release { run_id, task, lease_token }) => {
                ResumeParams { run_id: Some(run_id), task: Some(task), lease_token: Some(lease_token), release: Some(true), ..empty }
            }
            Resume::Show(ShowTask { run_id, task }) => ResumeParams { run_id: Some(run_id), task: Some(task), ..empty },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_targets_keep_their_wire_form() {
        let next: ClaimTarget = serde_json::from_value(serde_json::json!("next")).unwrap();
        assert_eq!(next, ClaimTarget::Next);
        let task: ClaimTarget = serde_json::from_value(serde_json::json!("a")).unwrap();
        assert_eq!(task.task(), Some("a"));
        assert_eq!(serde_json::to_value(ClaimTarget::Next).unwrap(), serde_json::json!("next"));
    }

    #[test]
    fn every_intent_reads_back_from_its_arguments() {
        let run = || "r".to_string();
        let intents = [
            Resume::List(ListOpen { all_workspaces: true }),
            Resume::List(ListOpen::default()),
            Resume::Briefing(RunBriefing { run_id: run() }),
            Resume::Fork(ForkCheckpoint { run_id: run(), checkpoint: "c".into(), title: Some("t".into()) }),
            Resume::ForkAt(ForkAt { run_id: run(), version: 3, title: None }),
            Resume::Claim(Claim { run_id: run(), target: ClaimTarget::Next, lease_seconds: 60 }),
            Resume::Renew(Renew { run_id: run(), task: "a".into(), lease_token: 2, lease_seconds: DEFAULT_LEASE_SECONDS }),
            Resume::Release(Release { run_id: run(), task: "a".into(), lease_token: 2 }),
            Resume::Show(ShowTask { run_id: run(), task: "a".into() }),
        ];
        for intent in intents {
            assert_eq!(ResumeParams::from(intent.clone()).intent().unwrap(), intent);
        }
    }

    #[test]
    fn arguments_that_ask_for_nothing_are_refused_with_their_field() {
        let refused = |p: ResumeParams| p.intent().unwrap_err().field;
        let run = Some("r".to_string());
        assert_eq!(refused(ResumeParams { checkpoint: Some("c".into()), ..Default::default() }).as_deref(), Some("run_id"));
        assert_eq!(refused(ResumeParams { at_version: Some(1), ..Default::default() }).as_deref(), Some("run_id"));
        let both = ResumeParams { run_id: run.clone(), checkpoint: Some("c".into()), at_version: Some(1), ..Default::default() };
        assert_eq!(refused(both).as_deref(), Some("at_version"));
        let claim_and_task =
            ResumeParams { run_id: run.clone(), claim: Some(ClaimTarget::Next), task: Some("a".into()), ..Default::default() };
        assert_eq!(refused(claim_and_task).as_deref(), Some("claim"));
        let long = ResumeParams { run_id: run, task: Some("a".into()), lease_seconds: Some(1), ..Default::default() };
        assert_eq!(refused(long).as_deref(), Some("lease_seconds"));
    }
}
