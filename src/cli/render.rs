//! Answers written for a person at a terminal: what a run is doing, what it waits on and
//! the exact command that answers it, who holds which task, what happened last, with times
//! relative to now. The instructions in briefs (`next_action`, "call `advance`") are for
//! Codex's model and stay in MCP; nothing here prints them.

use crate::api::{Reply, RunDetails, RunList};
use crate::engine::Task;
use crate::engine::{Brief, EventLine};
use crate::engine::{GateKind, HumanGate};
use crate::engine::{Run, RunStatus, TaskBrief};
use crate::store::BackupCopy;

use crate::text::shell_word;
use crate::time::Timestamp;

/// Tasks listed in `baton show`'s table (the JSON has them all).
const TASK_ROWS: usize = 50;
/// Widest holder shown in the task table.
const HOLDER_WIDTH: usize = 28;

/// An answer rendered for a person at a terminal.
pub fn render(reply: &Reply) -> String {
    render_at(reply, now())
}

/// [`render`] with "now" given (tests fix it).
pub fn render_at(reply: &Reply, now: Timestamp) -> String {
    match reply {
        Reply::Brief(brief) => with_note(brief_text(brief, now), brief.note.as_deref()),
        Reply::Task(task) => with_note(task_text(task, now), task.note.as_deref()),
        Reply::Briefing(briefing) => {
            let mut text = brief_text(&briefing.brief, now);
            for line in &briefing.recent_events {
                text.push('\n');
                text.push_str(&event_line(line, now));
            }
            text
        }
        Reply::Runs(list) => runs_text(list, &Default::default(), now),
        Reply::Run(details) => show_text(details, now),
        Reply::Event(detail) => {
            let mut text = event_line(&EventLine::of(&detail.event), now);
            text.push_str(&format!(
                "\n[bytes {}..{} of {}]\n{}",
                detail.offset,
                detail.offset + detail.text.len(),
                detail.total_bytes,
                detail.text
            ));
            text
        }
        Reply::Checkpoint(saved) => {
            format!("Saved checkpoint `{}` of run {} at version {}.", saved.checkpoint, saved.run_id, saved.version)
        }
        Reply::Verified(report) => {
            let mut text = format!(
                "{} run(s), {} event(s), {} checkpoint(s), {} template(s): {}",
                report.runs,
                report.events,
                report.checkpoints,
                report.templates,
                if report.is_sound() { "the database is sound." } else { "PROBLEMS FOUND:" }
            );
            for problem in &report.problems {
                text.push_str(&format!("\n- {problem}"));
            }
            text
        }
        Reply::BackedUp(report) => match &report.copy {
            BackupCopy::Export { file } => format!(
                "Backed up {} run(s) from one consistent snapshot to {}. To restore: `baton import` that file (into an empty database, or with --replace).",
                report.records,
                file.display()
            ),
            BackupCopy::Database { batch } => format!(
                "Backed up {} records (write batch {batch}) to {}. To restore: quit the Codex sessions and baton commands using this database, wait until its owner process has exited (its pid is in owner.lock in the baton home; it exits 3 minutes after its last connection unless BATON_OWNER_IDLE says otherwise), then put that directory in place of the database directory `db/`.",
                report.records,
                report.dir.display()
            ),
        },
        Reply::Owner(owner) => format!("The database is owned by pid {}, serving {} connection(s).", owner.pid, owner.connections),
        Reply::Exported(moved) => format!("Exported {} run(s) to {}.", moved.runs, moved.file),
        Reply::Imported(moved) => format!("Imported {} run(s) from {}.", moved.runs, moved.file),
        Reply::Templates(list) => {
            format!("Templates: {}", list.templates.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", "))
        }
        Reply::Graph(graph) => crate::graph::to_mermaid(graph),
        Reply::Changes(mark) => format!("Change counter: {}", mark.counter),
        Reply::Deleted(deleted) => {
            let verb = if deleted.dry_run { "Would delete" } else { "Deleted" };
            let mut text = format!("{verb} {} run(s).", deleted.runs.len());
            for s in &deleted.runs {
                text.push_str(&format!("\n- {} {} \"{}\" (last change {})", s.run_id, s.status.as_str(), s.title, ago(s.updated_at, now)));
            }
            text
        }
    }
}

pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Timestamp(ms)
}

fn with_note(text: String, note: Option<&str>) -> String {
    match note {
        Some(note) => format!("{text}\n{note}"),
        None => text,
    }
}

/// The first 8 characters of a run id: what its branches and worktrees are named by.
pub fn short(run_id: &str) -> &str {
    run_id.get(..8).unwrap_or(run_id)
}

/// `when` relative to `now`: "just now", "3 min ago", "in 7 min", "2 days ago".
pub fn ago(when: Timestamp, now: Timestamp) -> String {
    let (span, past) = if now >= when { (now.0 - when.0, true) } else { (when.0 - now.0, false) };
    let secs = span / 1000;
    let amount = match secs {
        0..=9 => return "just now".into(),
        10..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h", secs / 3600),
        _ if secs / 86_400 == 1 => "1 day".into(),
        _ => format!("{} days", secs / 86_400),
    };
    if past { format!("{amount} ago") } else { format!("in {amount}") }
}

fn status_words(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Active => "active",
        RunStatus::AwaitingHuman => "waiting for you",
        RunStatus::Completed => "completed",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

/// One sentence: what the run is doing now.
fn doing(run: &Run, now: Timestamp) -> String {
    let since = ago(run.updated_at, now);
    match run.status {
        RunStatus::Completed => format!("Completed {since}."),
        RunStatus::Failed => format!("Failed {since}{}.", run.end_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()),
        RunStatus::Cancelled => {
            format!("Cancelled {since}{}.", run.end_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())
        }
        RunStatus::AwaitingHuman => format!("Waiting for you since {since} (the question is below)."),
        RunStatus::Active => {
            if let Some(fanout) = run.fanout.as_ref().filter(|f| !f.joined) {
                let count = |pred: fn(&Task) -> bool| fanout.tasks.iter().filter(|t| pred(t)).count();
                let joined = count(|t| t.status.has_joined());
                let waiting = count(|t| t.gate.is_some());
                let mut text = format!(
                    "Working on {} task(s) in parallel: {joined} done, {} being worked on, {} ready to claim",
                    fanout.tasks.len(),
                    count(|t| t.lease.is_some()),
                    count(|t| t.status == crate::engine::TaskStatus::Ready),
                );
                if waiting > 0 {
                    text.push_str(&format!(", {waiting} waiting for you"));
                }
                text.push_str(&format!("; when all have joined: `{}`.", fanout.join));
                return text;
            }
            let step = run.current_step.as_deref().unwrap_or("?");
            let role = run.template.step(step).map(|s| s.role.as_str()).unwrap_or("agent");
            let visit = run.visits.get(step).copied().unwrap_or(0);
            let max = run.template.step(step).and_then(|s| s.max_visits);
            let round = match max {
                Some(max) if visit > 1 => format!(" (round {visit} of {max})"),
                _ if visit > 1 => format!(" (round {visit})"),
                _ => String::new(),
            };
            format!("Codex's {role} is on step `{step}`{round}; last change {since} by {}.", run.last_actor.label())
        }
    }
}

/// The question, its options and the exact command that answers it.
fn question_block(run_id: &str, task: Option<&str>, gate: &HumanGate, now: Timestamp) -> String {
    let whose = match task {
        Some(task) => format!("Task `{task}` asks"),
        None => "The run asks".to_string(),
    };
    let why = match &gate.kind {
        GateKind::Question => String::new(),
        GateKind::LoopLimit { target } => format!(" (step `{target}` used up its rounds)"),
        GateKind::TaskFailed => " (the task failed for good)".to_string(),
    };
    let mut text = format!("{whose}{why}, since {} at step `{}`:\n", ago(gate.asked_at, now), gate.step);
    for line in gate.question.lines() {
        text.push_str(&format!("    {line}\n"));
    }
    let task_arg = task.map(|t| format!(" --task {}", shell_word(t))).unwrap_or_default();
    if gate.options.is_empty() {
        text.push_str(&format!("  Answer (free text):\n    baton answer {run_id} 'YOUR ANSWER'{task_arg} [--comment TEXT]"));
    } else {
        text.push_str(&format!("  Options: {}\n  Answer with one of:", gate.options.join(", ")));
        for option in &gate.options {
            text.push_str(&format!("\n    baton answer {run_id} {}{task_arg}", shell_word(option)));
        }
        text.push_str("\n  (add --comment TEXT to explain your choice)");
    }
    text
}

fn show_text(details: &RunDetails, now: Timestamp) -> String {
    let run = &details.run;
    let mut text =
        format!("Run {} \"{}\" ({}), version {}: {}\n", run.id, run.title, run.template.name, run.version, status_words(run.status));
    text.push_str(&format!("  {}\n", doing(run, now)));
    text.push_str(&format!("  Goal: {}\n", crate::text::first_line(&run.goal, 200)));
    text.push_str(&format!("  Started {} by {}", ago(run.created_at, now), run.started_by.label()));
    if let Some(ws) = &run.workspace {
        text.push_str(&format!(", in {}", ws.cwd));
    }
    text.push('\n');
    if let Some(line) = crate::rewind::lineage(run) {
        text.push_str(&format!("  {line}.\n"));
    }
    if let Some(drive) = &run.drive {
        text.push_str(&crate::drive::summary(drive));
        text.push('\n');
    }

    let mut questions = Vec::new();
    if let Some(gate) = &run.pending_gate {
        questions.push(question_block(&run.id, None, gate, now));
    }
    for task in run.fanout.iter().flat_map(|f| &f.tasks) {
        if let Some(gate) = &task.gate {
            questions.push(question_block(&run.id, Some(&task.id), gate, now));
        }
    }
    for block in &questions {
        text.push('\n');
        text.push_str(block);
        text.push('\n');
    }

    if let Some(fanout) = &run.fanout {
        text.push('\n');
        text.push_str(&task_table(fanout, now));
    }

    text.push('\n');
    let shown = details.events.len() as u64;
    if shown == run.version {
        text.push_str(&format!("Events ({shown}):"));
    } else {
        text.push_str(&format!("Last {shown} of {} events (--history N shows more):", run.version));
    }
    for event in &details.events {
        text.push('\n');
        text.push_str(&event_line(&EventLine::of(event), now));
    }
    text.push_str(&format!("\n\nMore: `baton show {} --graph` (Mermaid), `baton ui` (live page)", short(&run.id)));
    if !run.status.is_finished() {
        text.push_str(&format!(", `baton cancel {}`", short(&run.id)));
    }
    text.push('.');
    text
}

fn task_table(fanout: &crate::engine::FanOutState, now: Timestamp) -> String {
    let total = fanout.tasks.len();
    let joined = fanout.tasks.iter().filter(|t| t.status.has_joined()).count();
    let mut rows: Vec<[String; 5]> = vec![["TASK", "STATUS", "STEP", "HOLDER", "LEASE"].map(String::from)];
    for task in fanout.tasks.iter().take(TASK_ROWS) {
        let (holder, lease) = match &task.lease {
            Some(lease) => {
                let mut holder = lease.holder.label();
                if holder.chars().count() > HOLDER_WIDTH {
                    holder = format!("{}…", holder.chars().take(HOLDER_WIDTH - 1).collect::<String>());
                }
                let when = if lease.is_expired(now) {
                    format!("expired {}", ago(lease.expires_at, now))
                } else {
                    format!("expires {}", ago(lease.expires_at, now))
                };
                (holder, when)
            }
            None => ("-".into(), "-".into()),
        };
        let status = if task.gate.is_some() { "waiting for you".to_string() } else { task.status.as_str().to_string() };
        rows.push([task.id.clone(), status, task.step.clone().unwrap_or_else(|| "-".into()), holder, lease]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = format!("Tasks: {joined} of {total} joined\n");
    for row in &rows {
        let mut line = String::from(" ");
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            line.push(' ');
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}"));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    if total > TASK_ROWS {
        text.push_str(&format!("  ... and {} more (`baton show RUN --json` has them all)\n", total - TASK_ROWS));
    }
    text
}

/// `#4 3 min ago  advanced by codex 0199..: review (reviewer) -> implement [changes_requested]`
fn event_line(line: &EventLine, now: Timestamp) -> String {
    format!("#{} {} {} by {}: {}", line.seq, ago(line.at, now), line.kind, line.by, line.summary)
}

/// "tasks: 2 of 4 joined, 1 waiting for you" for a run working a plan.
pub fn task_progress(run: &Run) -> Option<String> {
    let fanout = run.fanout.as_ref().filter(|f| !f.joined)?;
    let joined = fanout.tasks.iter().filter(|t| t.status.has_joined()).count();
    let waiting = fanout.tasks.iter().filter(|t| t.gate.is_some()).count();
    let claimed = fanout.tasks.iter().filter(|t| t.lease.is_some()).count();
    let mut line = format!("tasks: {joined} of {} joined, {claimed} being worked on", fanout.tasks.len());
    if waiting > 0 {
        line.push_str(&format!(", {waiting} waiting for you"));
    }
    Some(line)
}

/// The listing, with the task progress of the runs that have one (by run id).
pub fn runs_text(list: &RunList, progress: &std::collections::BTreeMap<String, String>, now: Timestamp) -> String {
    let mut text = if list.runs.len() == list.total {
        format!("{} run(s).", list.total)
    } else {
        format!("{} run(s), showing the {} most recently changed (--limit N shows more).", list.total, list.runs.len())
    };
    for s in &list.runs {
        text.push_str(&format!(
            "\n- {} v{} {} \"{}\"{}, changed {}",
            s.run_id,
            s.version,
            s.status.as_str(),
            s.title,
            s.step.as_deref().map(|st| format!(" at `{st}`")).unwrap_or_default(),
            ago(s.updated_at, now)
        ));
        if let Some(line) = progress.get(&s.run_id) {
            text.push_str(&format!("\n    {line}"));
        }
        if let Some(question) = &s.question {
            text.push_str(&format!("\n    asks: {question}  (`baton show {}` to answer)", short(&s.run_id)));
        }
    }
    text
}

/// A run's state after a change made from the terminal (answer, cancel): where it is now
/// and what happens next, for a person.
fn brief_text(brief: &Brief, _now: Timestamp) -> String {
    let mut text =
        format!("Run {} \"{}\" ({}), version {}: {}", brief.run_id, brief.title, brief.template, brief.version, status_words(brief.status));
    if let (Some(step), Some(role)) = (&brief.step, &brief.role) {
        text.push_str(&format!(" at step `{step}` ({role})"));
    }
    text.push('.');
    let id = short(&brief.run_id);
    let next = match brief.status {
        RunStatus::Active => format!(
            "\nNext: Codex plays the step; a session working on the run goes on by itself (or ask Codex to \"resume baton run {id}\"). `baton show {id}` follows it."
        ),
        RunStatus::AwaitingHuman => match &brief.question {
            Some(q) if q.options.is_empty() => {
                format!("\nIt asks: {}\n  baton answer {} 'YOUR ANSWER'", q.question, brief.run_id)
            }
            Some(q) => format!(
                "\nIt asks: {}\n  Options: {}\n  baton answer {} {}",
                q.question,
                q.options.join(", "),
                brief.run_id,
                shell_word(q.options.first().map(String::as_str).unwrap_or("ANSWER"))
            ),
            None => format!("\n`baton show {id}` shows the questions its tasks ask."),
        },
        _ => String::new(),
    };
    text.push_str(&next);
    text
}

fn task_text(task: &TaskBrief, _now: Timestamp) -> String {
    let mut text = format!("Run {} task `{}` \"{}\": {}", task.run_id, task.task, task.title, task.status.as_str());
    if let Some(step) = &task.step {
        text.push_str(&format!(" at step `{step}`"));
    }
    text.push('.');
    text.push_str(&format!("\nNext: an agent claims the task and goes on. `baton show {}` follows it.", short(&task.run_id)));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_relative() {
        let now = Timestamp(10_000_000_000);
        let before = |secs: u64| Timestamp(now.0 - secs * 1000);
        assert_eq!(ago(before(3), now), "just now");
        assert_eq!(ago(before(42), now), "42 s ago");
        assert_eq!(ago(before(180), now), "3 min ago");
        assert_eq!(ago(before(7200), now), "2 h ago");
        assert_eq!(ago(before(86_400 + 5), now), "1 day ago");
        assert_eq!(ago(before(5 * 86_400), now), "5 days ago");
        assert_eq!(ago(Timestamp(now.0 + 420_000), now), "in 7 min");
    }
}
