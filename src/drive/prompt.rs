//! The first message of an agent's thread: what it works on, how to report it through baton's
//! own tools (so baton's rules hold for it as for a chat session), and its role's guide.

use crate::engine::role_guide;

/// What one agent is given.
pub struct Assignment<'a> {
    pub run_id: &'a str,
    pub step: &'a str,
    pub role: &'a str,
    /// The task of the run's fan-out, if the unit is one.
    pub task: Option<&'a str>,
    pub goal: &'a str,
    pub instructions: &'a str,
}

/// The message that carries on a thread resumed after its driver was gone mid-turn: the same
/// unit line, and what is still the agent's.
pub fn resumed(a: &Assignment) -> String {
    let kept = match a.task {
        Some(task) => format!(
            "Your claim of task `{task}` and its `lease_token` are still yours (if baton says the lease expired, claim the task again with `resume`). "
        ),
        None => String::new(),
    };
    format!(
        "BATON-DRIVE run={} step={} role={} task={}\n\nYour last turn on step `{}` of baton run {} was cut off: the `baton drive` that started it stopped. Carry on from where you were. {kept}Report the step with `advance` as your first message says; if baton refuses the version, read your brief again with `resume` first.\n",
        a.run_id,
        a.step,
        a.role,
        a.task.unwrap_or("-"),
        a.step,
        a.run_id
    )
}

/// The prompt. The `BATON-DRIVE` line is machine-readable on purpose (it names the unit).
pub fn prompt(a: &Assignment) -> String {
    let mut text = format!(
        "BATON-DRIVE run={} step={} role={} task={}\n\nYou are the {} of baton run {}, driven by `baton drive`. Goal: {}\n\n",
        a.run_id,
        a.step,
        a.role,
        a.task.unwrap_or("-"),
        a.role,
        a.run_id,
        a.goal
    );
    match a.task {
        Some(task) => text.push_str(&format!(
            "Work task `{task}` (its step `{step}`) and nothing else:\n\
             1. Load baton's tools (search tools for `baton` if they are not listed).\n\
             2. Claim it: `resume` {{\"run_id\": \"{run}\", \"claim\": \"{task}\"}}. The brief gives your `lease_token` and `workdir`; work there.\n\
             3. Do the step as the brief and the guide below say.\n\
             4. Report: `advance` {{\"run_id\": \"{run}\", \"task\": \"{task}\", \"lease_token\": <token>, \"outcome\": ..., \"output\": ...}}.\n",
            step = a.step,
            run = a.run_id
        )),
        None => text.push_str(&format!(
            "Play step `{step}` and nothing else:\n\
             1. Load baton's tools (search tools for `baton` if they are not listed).\n\
             2. Read your brief: `resume` {{\"run_id\": \"{run}\"}}.\n\
             3. Do the step as the brief and the guide below say.\n\
             4. Report: `advance` {{\"run_id\": \"{run}\", \"expected_version\": <the brief's version>, \"outcome\": ..., \"output\": ...}}.\n",
            step = a.step,
            run = a.run_id
        )),
    }
    text.push_str(
        "Do not play other steps or roles. If you need a decision only a person can make, call `await_human` and end your turn.\n",
    );
    if !a.instructions.is_empty() {
        text.push_str(&format!("\nThe step's instructions: {}\n", a.instructions));
    }
    text.push_str(&format!("\n## Role guide ({})\n\n{}\n", a.role, role_guide(a.role)));
    text
}
