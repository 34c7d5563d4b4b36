//! Briefs for the tasks of a fan-out: the whole brief for the agent holding a task, and
//! the overview of all tasks in the run's own brief. Bounded like run briefs.

use super::parts::{
    MAX_BRIEF_BYTES, OutcomeChoice, OutputExcerpt, PendingQuestion, cut, excerpt, guide_pointer, pending, role_guide, serialized_len,
};
use crate::engine::model::{FanOutState, Run, StepOutput, Task, TaskCode, TaskStatus};
use crate::engine::naming::{short_id, task_worktree};
use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One task in an overview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskLine {
    pub id: String,
    pub title: String,
    pub status: TaskStatus,
    pub step: Option<String>,
    pub role: Option<String>,
    /// Who holds the lease, and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
    /// Set when the current step must be played by another agent than these steps' players.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub independent_of: Vec<String>,
}

/// The tasks of a fan-out at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TasksOverview {
    pub total: usize,
    /// How many tasks are in each status.
    pub counts: BTreeMap<String, usize>,
    /// Unfinished tasks first, in plan order (at most a few dozen).
    pub tasks: Vec<TaskLine>,
    /// Most sub-agents to run at once for this run.
    pub max_agents: u32,
    /// How to work the tasks with sub-agents.
    pub how_to_work: String,
}

impl TasksOverview {
    pub fn of(run: &Run, fanout: &FanOutState, max_lines: usize) -> TasksOverview {
        let mut counts = BTreeMap::new();
        for task in &fanout.tasks {
            *counts.entry(task.status.as_str().to_string()).or_insert(0) += 1;
        }
        let open = fanout.tasks.iter().filter(|t| !t.status.has_joined());
        let joined = fanout.tasks.iter().filter(|t| t.status.has_joined());
        TasksOverview {
            total: fanout.tasks.len(),
            counts,
            tasks: open.chain(joined).take(max_lines).map(|t| TaskLine::of(fanout, t)).collect(),
            max_agents: run.max_agents,
            how_to_work: how_to_work(run),
        }
    }
}

impl TaskLine {
    pub fn of(fanout: &FanOutState, task: &Task) -> TaskLine {
        let def = fanout.step_of(task);
        let lease = task.lease.as_ref().filter(|_| task.status == TaskStatus::Claimed);
        TaskLine {
            id: task.id.clone(),
            title: task.title.clone(),
            status: task.status,
            step: task.step.clone(),
            role: def.map(|d| d.role.clone()),
            holder: lease.map(|l| l.holder.label()),
            lease_expires_at: lease.map(|l| l.expires_at),
            independent_of: def.map(|d| d.independent_of.clone()).unwrap_or_default(),
        }
    }
}

/// Everything the agent working on one task needs. The fields to act on come first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskBrief {
    pub run_id: String,
    pub task: String,
    pub status: TaskStatus,
    pub step: Option<String>,
    pub role: Option<String>,
    pub outcomes: Vec<OutcomeChoice>,
    /// Pass with every change to this task (`advance` with `task` and `lease_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
    /// The one thing to do now.
    pub next_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<PendingQuestion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Where to work: the task's own git worktree and branch, or the shared tree.
    pub workdir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit the branch started from: `git diff <base>` in `workdir` shows the task's change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The git repository the worktree belongs to (the run's repository root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The task branch's tip as of the task's last report (baton commits what each step
    /// leaves uncommitted): `git diff <base> <head>` in `workdir` is the task's change so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// What the task's last steps did to its code, newest first: the commit, its diffstat
    /// and how to see it, or that a step changed nothing or could not be committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub title: String,
    pub description: String,
    /// What this step must achieve.
    pub instructions: String,
    pub visit: Option<u32>,
    pub max_visits: Option<u32>,
    /// Agents who may not play this step (they played a step it is independent of).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_by: Vec<String>,
    /// The agent whose expired lease this claim took over: its work may be half done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_from: Option<String>,
    /// The output that sent the task here, e.g. the review asking for changes.
    pub feedback: Option<OutputExcerpt>,
    /// Latest output of the task's other steps.
    pub prior_outputs: Vec<OutputExcerpt>,
    /// The tasks this one depends on, and what they reported last.
    pub dependencies: Vec<OutputExcerpt>,
    /// The run's goal, for context.
    pub goal: String,
    pub role_guide: String,
    /// How to hand this step to a fresh sub-agent, for steps that should be independent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subagent_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shortened: Vec<String>,
}

/// Byte caps for task briefs, loosest first.
const TASK_CAPS: [(usize, usize, usize); 3] = [(4096, 1536, 2048), (2048, 512, 1024), (1024, 160, 512)];

impl TaskBrief {
    /// The brief for `task` of `run`, within [`MAX_BRIEF_BYTES`]; `lease_token` is shown
    /// only to the holder (the caller that just claimed or renewed).
    pub fn of(run: &Run, task: &Task, lease_token: Option<u64>) -> TaskBrief {
        let mut brief = TaskBrief::with_caps(run, task, lease_token, TASK_CAPS[0]);
        for caps in &TASK_CAPS[1..] {
            if serialized_len(&brief) <= MAX_BRIEF_BYTES {
                break;
            }
            brief = TaskBrief::with_caps(run, task, lease_token, *caps);
        }
        brief
    }

    fn with_caps(
        run: &Run,
        task: &Task,
        lease_token: Option<u64>,
        (feedback_cap, output_cap, text_cap): (usize, usize, usize),
    ) -> TaskBrief {
        let mut shortened = Vec::new();
        let def = run.fanout.as_ref().and_then(|f| f.step_of(task));
        let role = def.map(|d| d.role.clone());
        let feedback_source = task.last_output.as_ref().filter(|o| Some(&o.step) != task.step.as_ref());
        let feedback = feedback_source.map(|o| excerpt(run, o, feedback_cap, &mut shortened, "feedback"));
        let prior_outputs = task
            .outputs
            .values()
            .filter(|o| Some(o.version) != feedback_source.map(|f| f.version))
            .map(|o| excerpt(run, o, output_cap, &mut shortened, "prior_outputs"))
            .collect();
        let dependencies = run
            .fanout
            .iter()
            .flat_map(|f| &f.tasks)
            .filter(|t| task.depends_on.contains(&t.id))
            .filter_map(|t| t.last_output.as_ref())
            .map(|o| excerpt(run, o, output_cap, &mut shortened, "dependencies"))
            .collect();
        let not_by =
            def.map(|d| d.independent_of.iter().filter_map(|s| task.players.get(s)).map(|a| a.label()).collect()).unwrap_or_default();
        let worktree = run.workspace.as_ref().and_then(|w| task_worktree(w.git_root.as_deref()?, &run.id, &task.id));
        let workdir = match (&worktree, &run.workspace) {
            (Some(w), _) => w.dir.clone(),
            (None, Some(w)) => format!("{} (shared with the other tasks: no git repository, so no worktree of its own)", w.cwd),
            (None, None) => "the current directory (shared with the other tasks)".to_string(),
        };
        let lease = task.lease.as_ref().filter(|l| lease_token == Some(l.token));
        let base = worktree.as_ref().and_then(|_| run.fanout.as_ref()?.base.clone());
        let (head, code) = code_so_far(task, base.as_deref(), text_cap, &mut shortened);
        let first_time = role.as_ref().is_some_and(|r| !task.outputs.values().any(|o| &o.role == r));
        TaskBrief {
            run_id: run.id.clone(),
            task: task.id.clone(),
            status: task.status,
            step: task.step.clone(),
            role: role.clone(),
            outcomes: def
                .map(|d| d.outcomes.iter().map(|(o, t)| OutcomeChoice { outcome: o.clone(), leads_to: t.to_string() }).collect())
                .unwrap_or_default(),
            lease_token: lease.map(|l| l.token),
            lease_expires_at: lease.map(|l| l.expires_at),
            next_action: task_next_action(run, task, def.map(|d| d.role.as_str()), lease.map(|l| l.token)),
            question: task.gate.as_ref().map(|g| pending(g, text_cap, &mut shortened)),
            note: None,
            branch: worktree.as_ref().map(|w| w.branch.clone()),
            base,
            head,
            code,
            repo: worktree.as_ref().and_then(|_| run.workspace.as_ref()?.git_root.clone()),
            workdir,
            title: task.title.clone(),
            description: cut(&task.description, text_cap * 2, &mut shortened, "description"),
            instructions: def.map(|d| cut(&d.instructions, text_cap, &mut shortened, "instructions")).unwrap_or_default(),
            visit: task.step.as_ref().and_then(|s| task.visits.get(s).copied()),
            max_visits: def.and_then(|d| d.max_visits),
            not_by,
            taken_over_from: task.taken_over_from.as_ref().map(|a| a.label()),
            feedback,
            prior_outputs,
            dependencies,
            goal: cut(&run.goal, text_cap, &mut shortened, "goal"),
            role_guide: match &role {
                Some(r) if first_time => role_guide(r).to_string(),
                Some(r) => guide_pointer(r),
                None => String::new(),
            },
            subagent_prompt: def
                .filter(|d| !d.independent_of.is_empty() || d.role == "tester")
                .map(|d| subagent_prompt(run, task, &d.role)),
            shortened,
        }
    }
}

/// Steps whose code a task brief describes.
const CODE_STEPS: usize = 3;

/// The task branch's tip as its last report recorded it, and a text on what its latest
/// steps did to the code (within `cap` bytes).
fn code_so_far(task: &Task, base: Option<&str>, cap: usize, shortened: &mut Vec<String>) -> (Option<String>, Option<String>) {
    let Some((latest, by)) = task.last_code.as_ref() else { return (None, None) };
    let mut coded: Vec<(&StepOutput, &TaskCode)> = task.outputs.values().filter_map(|o| Some((o, o.code.as_ref()?))).collect();
    coded.sort_by_key(|(o, _)| std::cmp::Reverse(o.version));
    let head = latest.head.clone().or_else(|| coded.iter().find_map(|(_, c)| c.head.clone()));
    let mut lines = Vec::new();
    // The latest record came with a human's answer, not with a step's report.
    if coded.first().is_none_or(|(_, c)| *c != latest) {
        lines.push(latest.line_of(&format!("The answer to the task's question ({})", by.label())));
    }
    lines.extend(coded.iter().take(CODE_STEPS).map(|(o, c)| c.line(&o.step, &o.actor.label())));
    if let (Some(base), Some(head)) = (base, &head) {
        lines.push(format!("The task's whole change so far: `git -C {} diff {} {}`.", latest.worktree, short_id(base), short_id(head)));
    }
    (head, Some(cut(&lines.join(" "), cap * 2, shortened, "code")))
}

fn how_to_work(run: &Run) -> String {
    format!(
        "Work tasks in parallel with sub-agents (at most {} at once): for each ready task spawn one (`spawn_agent`) with the message: \"Use baton: call `resume` with run_id {} and claim <task id>, do what the brief says in its workdir (no need to commit: baton commits what you leave there on the task's branch when you report), report with `advance` (run_id, task, lease_token, outcome, output), and repeat until no task is left for you.\" A review step must be claimed by an agent that did not implement the task. You may also claim tasks yourself with `resume` {{run_id, claim: \"next\"}}.",
        run.max_agents, run.id
    )
}

/// What the run's coordinator does while its tasks are worked.
pub fn fanout_next_action(run: &Run) -> String {
    let Some(fanout) = run.fanout.as_ref() else { return String::new() };
    let ready = fanout.tasks.iter().filter(|t| t.status == TaskStatus::Ready).count();
    let asking: Vec<&str> = fanout.tasks.iter().filter(|t| t.gate.is_some()).map(|t| t.id.as_str()).collect();
    let mut action = format!(
        "The plan's {} tasks are being worked ({ready} ready to claim). Claim one with `resume` {{run_id: \"{}\", claim: \"next\"}}, or hand tasks to sub-agents as `tasks.how_to_work` says. The run goes on at `{}` when every task has joined.",
        fanout.tasks.len(),
        run.id,
        fanout.join
    );
    if !asking.is_empty() {
        let (tasks, wait) = if asking.len() == 1 { ("Task", "waits") } else { ("Tasks", "wait") };
        action.push_str(&format!(
            " {tasks} {} {wait} for a human: ask the user, then call `answer_human` with run_id, task and the answer.",
            asking.join(", ")
        ));
    }
    action
}

fn task_next_action(run: &Run, task: &Task, role: Option<&str>, token: Option<u64>) -> String {
    let id = &task.id;
    match (task.status, token) {
        (TaskStatus::Claimed, Some(token)) => {
            let def = run.fanout.as_ref().and_then(|f| f.step_of(task));
            let outcomes: Vec<&str> = def.map(|d| d.outcomes.keys().map(String::as_str).collect()).unwrap_or_default();
            format!(
                "Play the {} for step `{}` of task `{id}` in `workdir`, then call `advance` with run_id \"{}\", task \"{id}\", lease_token {token}, outcome one of [{}] and your report as `output`. Calls with the token renew the lease; if it expires another agent may take the task over.",
                role.unwrap_or("?"),
                task.step.as_deref().unwrap_or("?"),
                run.id,
                outcomes.join(", ")
            )
        }
        (TaskStatus::AwaitingHuman, _) => format!(
            "Task `{id}` waits for a human: ask the user the `question`, then call `answer_human` with run_id \"{}\", task \"{id}\" and their answer. Never answer it yourself.",
            run.id
        ),
        (TaskStatus::Ready, _) | (TaskStatus::Claimed, None) => {
            let def = run.fanout.as_ref().and_then(|f| f.step_of(task));
            let excluded: Vec<String> =
                def.map(|d| d.independent_of.iter().filter_map(|s| task.players.get(s)).map(|a| a.label()).collect()).unwrap_or_default();
            let step = task.step.as_deref().unwrap_or("?");
            if excluded.is_empty() {
                format!("Task `{id}` is at step `{step}`: claim it with `resume` {{run_id: \"{}\", claim: \"{id}\"}}.", run.id)
            } else {
                format!(
                    "Task `{id}` is at step `{step}`, which must be played by an agent other than {}: spawn a sub-agent (`spawn_agent`) with `subagent_prompt` as its message, or let another session claim it.",
                    excluded.join(", ")
                )
            }
        }
        (status, _) => {
            format!("Task `{id}` is {}; claim another with `resume` {{run_id: \"{}\", claim: \"next\"}}.", status.as_str(), run.id)
        }
    }
}

/// The message to give a fresh sub-agent so it plays this step on its own.
fn subagent_prompt(run: &Run, task: &Task, role: &str) -> String {
    format!(
        "Use baton. You are the {role} of task `{}` (\"{}\") of run {}. Call `resume` with run_id \"{}\" and claim \"{}\", read the brief, work in its `workdir` (its `code` names the task's commits and how to see the diff against the base), play the role as skill/roles/{role}.md says, and report with `advance` (run_id, task, lease_token, outcome, output). Judge the work as someone who did not write it.",
        task.id, task.title, run.id, run.id, task.id
    )
}
