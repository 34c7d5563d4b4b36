//! Executes [`Request`]s against a [`RunStore`]: validation, the engine's state machine,
//! and the shape of every answer.

use crate::api::*;
use crate::engine::run::AdvanceInput;
use crate::engine::template::check_identifier;
use crate::engine::{Brief, Event, Run, Template, builtin_template, builtin_templates};
use crate::error::{BatonError, BatonResult};
use crate::limits::{MAX_ARTIFACTS_BYTES, MAX_HISTORY_BYTES, MAX_OUTPUT_BYTES, MAX_TEXT_BYTES, check_json_len, check_len};
use crate::store::{Commit, Mutation, RunQuery, RunStore, RunSummary, StatusFilter, unknown_run};
use crate::time::now_rfc3339;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

const DEFAULT_TEMPLATE: &str = "feature";
const DEFAULT_LIST_LIMIT: u32 = 50;
const MAX_LIST_LIMIT: u32 = 1000;
/// Events shown in a resume briefing.
const BRIEFING_EVENTS: u64 = 10;

/// Where a run stands, for picking it up in a new session.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Briefing {
    pub brief: Brief,
    /// The latest events, oldest first.
    pub recent_events: Vec<Event>,
    pub checkpoints: Vec<String>,
    pub forked_from: Option<crate::engine::run::ForkOrigin>,
}

/// A run with a window of its history.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunDetails {
    pub summary: RunSummary,
    pub run: Run,
    /// Events, oldest first.
    pub events: Vec<Event>,
    /// Pass as `before_seq` to page further back; absent when the window starts at the first event.
    pub next_before_seq: Option<u64>,
}

/// Runs matching a listing.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    /// How many runs matched before `limit` applied.
    pub total: usize,
}

/// A saved checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CheckpointSaved {
    pub run_id: String,
    pub checkpoint: String,
    pub version: u64,
    pub how_to_fork: String,
}

/// Known templates.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
}

/// The operations, over one open store.
pub struct Service {
    store: Arc<dyn RunStore>,
}

impl Service {
    pub fn new(store: Arc<dyn RunStore>) -> Service {
        Service { store }
    }

    /// Execute one request.
    pub async fn handle(&self, envelope: &Envelope) -> BatonResult<Reply> {
        let op = envelope.op_id.as_str();
        match &envelope.request {
            Request::StartWorkflow(p) => self.start_workflow(op, p).await,
            Request::Advance(p) => self.advance(op, p).await,
            Request::Checkpoint(p) => self.checkpoint(op, p).await,
            Request::Resume(p) => self.resume(op, p).await,
            Request::ForkRun(p) => self.fork(op, &p.run_id, &p.checkpoint, p.title.clone()).await,
            Request::AwaitHuman(p) => self.await_human(op, p).await,
            Request::AnswerHuman(p) => self.answer_human(op, p).await,
            Request::ListRuns(p) => self.list_runs(p).await,
            Request::GetRun(p) => self.get_run(p).await,
            Request::CancelRun(p) => self.cancel(op, p).await,
            Request::ListTemplates(_) => self.list_templates().await,
            Request::Verify(_) | Request::Backup(_) | Request::Export(_) | Request::Import(_) => {
                crate::maintenance::handle(self.store.as_ref(), &envelope.request).await
            }
        }
    }

    async fn start_workflow(&self, op: &str, p: &StartWorkflowParams) -> BatonResult<Reply> {
        require_text("goal", &p.goal)?;
        check_len("goal", p.goal.len(), MAX_TEXT_BYTES)?;
        let title = title_or(p.title.clone(), || default_title(&p.goal))?;
        let context = p.context.clone().unwrap_or_default();
        check_json_len("context", &Value::Object(context.clone()), MAX_ARTIFACTS_BYTES)?;
        let (template, is_new) = self.resolve_template(p).await?;
        let replaces = is_new && self.store.template(&template.name).await?.is_some_and(|stored| stored != template);
        let now = now_rfc3339();
        let (run, event) = Run::start(op.to_string(), template.clone(), p.goal.clone(), title, context, &now);
        let commit = Commit { template: is_new.then_some(template), ..Commit::new(run, event) };
        let run = self.store.commit(op, op, creation(commit)).await?;
        let mut reply = brief_reply(&run);
        if replaces {
            reply.text = format!(
                "Saved template `{}`, replacing its previous definition (earlier runs keep theirs).\n{}",
                run.template.name, reply.text
            );
        }
        Ok(reply)
    }

    /// The template to run, and whether it is user-defined (to be remembered by name).
    async fn resolve_template(&self, p: &StartWorkflowParams) -> BatonResult<(Template, bool)> {
        let given = [p.template.is_some(), p.template_definition.is_some(), p.template_file.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(BatonError::invalid(
                "template",
                "more than one of `template`, `template_definition` and `template_file` was given",
                "Give only one: a template name, an inline definition, or a file path.",
            ));
        }
        let (custom, field) = if let Some(definition) = &p.template_definition {
            definition.validate("template_definition")?;
            (definition.clone(), "template_definition.name")
        } else if let Some(path) = &p.template_file {
            (read_template_file(path)?, "template_file")
        } else {
            let name = p.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
            if let Some(builtin) = builtin_template(name) {
                return Ok((builtin, false));
            }
            return match self.store.template(name).await? {
                Some(stored) => Ok((stored, false)),
                None => Err(BatonError::not_found(
                    "template",
                    format!("no template named `{name}`"),
                    format!("Use one of: {}; or pass `template_definition` / `template_file`.", self.template_names().await?),
                )),
            };
        };
        if builtin_template(&custom.name).is_some() {
            return Err(BatonError::invalid(
                field,
                format!("`{}` is a built-in template name", custom.name),
                "Give your template another name.",
            ));
        }
        Ok((custom, true))
    }

    /// Built-in templates, then the ones users defined.
    async fn all_templates(&self) -> BatonResult<Vec<Template>> {
        let mut templates = builtin_templates();
        templates.extend(self.store.templates().await?);
        Ok(templates)
    }

    async fn template_names(&self) -> BatonResult<String> {
        Ok(names_of(&self.all_templates().await?))
    }

    async fn advance(&self, op: &str, p: &AdvanceParams) -> BatonResult<Reply> {
        check_len("output", p.output.len(), MAX_OUTPUT_BYTES)?;
        let artifacts = p.artifacts.clone().unwrap_or_default();
        let now = now_rfc3339();
        let p = p.clone();
        let run = self
            .store
            .commit(
                op,
                &p.run_id.clone(),
                update(&p.run_id, move |run| {
                    let input = AdvanceInput {
                        expected_version: p.expected_version,
                        outcome: &p.outcome,
                        output: &p.output,
                        artifacts: artifacts.clone(),
                    };
                    {
                        let event = run.advance(input, &now)?;
                        Ok(Commit::new(run.clone(), event))
                    }
                }),
            )
            .await?;
        Ok(brief_reply(&run))
    }

    async fn checkpoint(&self, op: &str, p: &CheckpointParams) -> BatonResult<Reply> {
        check_identifier(&p.name, "name")?;
        check_len("note", p.note.as_ref().map_or(0, String::len), MAX_TEXT_BYTES)?;
        let now = now_rfc3339();
        let (name, note, expected) = (p.name.clone(), p.note.clone(), p.expected_version);
        let run = self
            .store
            .commit(
                op,
                &p.run_id,
                update(&p.run_id, move |run| {
                    let event = run.add_checkpoint(expected, &name, note.clone(), &now)?;
                    Ok(Commit { checkpoint: Some(name.clone()), ..Commit::new(run.clone(), event) })
                }),
            )
            .await?;
        let saved = CheckpointSaved {
            run_id: run.id.clone(),
            checkpoint: p.name.clone(),
            version: run.version,
            how_to_fork: format!("Call `resume` with run_id \"{}\" and checkpoint \"{}\" to start a new run from here.", run.id, p.name),
        };
        Ok(reply(format!("Saved checkpoint `{}` of run {} at version {}.", p.name, run.id, run.version), &saved))
    }

    async fn resume(&self, op: &str, p: &ResumeParams) -> BatonResult<Reply> {
        match (&p.run_id, &p.checkpoint) {
            (None, Some(_)) => Err(BatonError::invalid(
                "run_id",
                "`checkpoint` needs the `run_id` it belongs to",
                "Pass both `run_id` and `checkpoint` to fork, or neither to list runs.",
            )),
            (None, None) => self.list_runs(&ListRunsParams { status: Some(StatusFilter::Open), ..ListRunsParams::default() }).await,
            (Some(run_id), Some(checkpoint)) => self.fork(op, run_id, checkpoint, p.title.clone()).await,
            (Some(run_id), None) => self.briefing(run_id).await,
        }
    }

    async fn briefing(&self, run_id: &str) -> BatonResult<Reply> {
        let run = self.load(run_id).await?;
        let from = run.version.saturating_sub(BRIEFING_EVENTS - 1).max(1);
        let briefing = Briefing {
            brief: Brief::of(&run),
            recent_events: self.store.events(run_id, from, run.version, MAX_HISTORY_BYTES).await?,
            checkpoints: run.checkpoints.clone(),
            forked_from: run.forked_from.clone(),
        };
        Ok(reply(briefing.brief.summary(), &briefing))
    }

    async fn fork(&self, op: &str, run_id: &str, checkpoint: &str, title: Option<String>) -> BatonResult<Reply> {
        let source = self.load(run_id).await?;
        let snapshot = self.store.checkpoint(run_id, checkpoint).await?.ok_or_else(|| {
            let known = if source.checkpoints.is_empty() { "it has none".to_string() } else { source.checkpoints.join(", ") };
            BatonError::not_found(
                "checkpoint",
                format!("run {run_id} has no checkpoint `{checkpoint}` ({known})"),
                "Use a checkpoint name listed by `resume` or `get_run`, or save one with `checkpoint`.",
            )
        })?;
        let now = now_rfc3339();
        let title = title_or(title, || format!("{} (fork of {checkpoint})", snapshot.title))?;
        let (mut run, event) = Run::fork(&snapshot, checkpoint, op.to_string(), &now)?;
        run.title = title;
        let run = self.store.commit(op, op, creation(Commit::new(run, event))).await?;
        Ok(brief_reply(&run))
    }

    async fn await_human(&self, op: &str, p: &AwaitHumanParams) -> BatonResult<Reply> {
        require_text("question", &p.question)?;
        check_len("question", p.question.len(), MAX_TEXT_BYTES)?;
        let options = p.options.clone().unwrap_or_default();
        if let Some(i) = options.iter().position(|o| o.trim().is_empty()) {
            return Err(BatonError::invalid(format!("options[{i}]"), "an option is empty", "Remove it or give it text."));
        }
        let now = now_rfc3339();
        let (question, expected) = (p.question.clone(), p.expected_version);
        let change = update(&p.run_id, move |run| {
            let event = run.ask_human(expected, &question, options.clone(), &now)?;
            Ok(Commit::new(run.clone(), event))
        });
        let run = self.store.commit(op, &p.run_id, change).await?;
        Ok(brief_reply(&run))
    }

    async fn answer_human(&self, op: &str, p: &AnswerHumanParams) -> BatonResult<Reply> {
        require_text("answer", &p.answer)?;
        check_len("answer", p.answer.len(), MAX_TEXT_BYTES)?;
        check_len("comment", p.comment.as_ref().map_or(0, String::len), MAX_TEXT_BYTES)?;
        let now = now_rfc3339();
        let (answer, comment, expected) = (p.answer.clone(), p.comment.clone(), p.expected_version);
        let change = update(&p.run_id, move |run| {
            let event = run.answer_human(expected, &answer, comment.clone(), &now)?;
            Ok(Commit::new(run.clone(), event))
        });
        let run = self.store.commit(op, &p.run_id, change).await?;
        Ok(brief_reply(&run))
    }

    async fn cancel(&self, op: &str, p: &CancelRunParams) -> BatonResult<Reply> {
        let reason = p.reason.clone().unwrap_or_else(|| "cancelled by the user".into());
        check_len("reason", reason.len(), MAX_TEXT_BYTES)?;
        let now = now_rfc3339();
        let expected = p.expected_version;
        let change = update(&p.run_id, move |run| {
            let event = run.cancel(expected, &reason, &now)?;
            Ok(Commit::new(run.clone(), event))
        });
        let run = self.store.commit(op, &p.run_id, change).await?;
        Ok(brief_reply(&run))
    }

    async fn list_runs(&self, p: &ListRunsParams) -> BatonResult<Reply> {
        let limit = bounded_limit("limit", p.limit, DEFAULT_LIST_LIMIT)?;
        let filter = p.status.unwrap_or_default();
        let query = RunQuery { status: filter, template: p.template.clone(), limit: limit as usize, cursor: None };
        let page = self.store.list(&query).await?;
        let (runs, total) = (page.runs, page.total);
        let mut text = format!("{total} run(s).");
        for s in &runs {
            text.push_str(&format!(
                "\n- {} v{} {} \"{}\"{}",
                s.run_id,
                s.version,
                s.status.as_str(),
                s.title,
                s.step.as_deref().map(|st| format!(" at `{st}`")).unwrap_or_default()
            ));
        }
        Ok(reply(text, &RunList { runs, total }))
    }

    async fn get_run(&self, p: &GetRunParams) -> BatonResult<Reply> {
        let limit = u64::from(bounded_limit("history_limit", p.history_limit, DEFAULT_LIST_LIMIT)?);
        let run = self.load(&p.run_id).await?;
        let end = p.before_seq.map_or(run.version, |b| b.saturating_sub(1).min(run.version));
        let start = end.saturating_sub(limit - 1).max(1);
        let events = self.store.events(&run.id, start, end, MAX_HISTORY_BYTES).await?;
        let first = events.first().map_or(start, |e| e.seq);
        let details = RunDetails { summary: RunSummary::of(&run), events, next_before_seq: (first > 1).then_some(first), run };
        let text = format!("{}\n{} event(s) shown.", Brief::of(&details.run).summary(), details.events.len());
        Ok(reply(text, &details))
    }

    async fn list_templates(&self) -> BatonResult<Reply> {
        let templates = self.all_templates().await?;
        Ok(reply(format!("Templates: {}", names_of(&templates)), &TemplateList { templates }))
    }

    async fn load(&self, run_id: &str) -> BatonResult<Run> {
        self.store.run(run_id).await?.ok_or_else(|| unknown_run(run_id))
    }
}

fn read_template_file(path: &str) -> BatonResult<Template> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BatonError::invalid(
            "template_file",
            format!("cannot read template file {path}: {e}"),
            "Pass the path of an existing .toml or .json template file (relative to the working directory).",
        )
    })?;
    let is_toml = Path::new(path).extension().is_some_and(|e| e == "toml");
    Template::parse(&text, is_toml, "template_file")
}

fn names_of(templates: &[Template]) -> String {
    templates.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn require_text(field: &str, value: &str) -> BatonResult<()> {
    if value.trim().is_empty() {
        return Err(BatonError::invalid(field, format!("`{field}` is empty"), format!("Give `{field}` some text.")));
    }
    Ok(())
}

fn bounded_limit(field: &str, value: Option<u32>, default: u32) -> BatonResult<u32> {
    match value.unwrap_or(default) {
        0 => Err(BatonError::invalid(field, format!("`{field}` must be at least 1"), "Omit it for the default.")),
        n if n > MAX_LIST_LIMIT => {
            Err(BatonError::invalid(field, format!("`{field}` is {n}; the maximum is {MAX_LIST_LIMIT}"), "Page with a smaller value."))
        }
        n => Ok(n),
    }
}

/// The caller's title, checked, or `default()` when none (or a blank one) was given.
fn title_or(title: Option<String>, default: impl FnOnce() -> String) -> BatonResult<String> {
    check_len("title", title.as_ref().map_or(0, String::len), MAX_TEXT_BYTES)?;
    Ok(title.filter(|t| !t.trim().is_empty()).unwrap_or_else(default))
}

fn default_title(goal: &str) -> String {
    let line = goal.trim().lines().next().unwrap_or_default();
    let mut title: String = line.chars().take(60).collect();
    if line.chars().count() > 60 {
        title.push('…');
    }
    title
}

fn brief_reply(run: &Run) -> Reply {
    let brief = Brief::of(run);
    reply(brief.summary(), &brief)
}

fn reply<T: Serialize>(text: String, data: &T) -> Reply {
    Reply { text, data: serde_json::to_value(data).unwrap_or_else(|e| json!({ "error": e.to_string() })) }
}

/// A mutation that creates the run in `commit`; finding it already there is a bug, since
/// a retried creation is recognised by its op id before the mutation runs.
fn creation(commit: Commit) -> Mutation {
    Box::new(move |current| match current {
        Some(existing) => Err(BatonError::internal(format!("run id {} already exists", existing.id))),
        None => Ok(commit.clone()),
    })
}

/// A mutation of an existing run: `change` gets the run to modify in place and returns
/// what to commit.
fn update(run_id: &str, change: impl Fn(&mut Run) -> BatonResult<Commit> + Send + Sync + 'static) -> Mutation {
    let run_id = run_id.to_string();
    Box::new(move |current| {
        let mut run = current.ok_or_else(|| unknown_run(&run_id))?;
        change(&mut run)
    })
}
