//! Fan-out tests: plan validation, claims and leases, independence, joins, and a seeded
//! random interleaving of many agents whose event log must rebuild the run exactly.

use super::*;
use crate::error::{BatonError, ErrorCode};
use serde_json::{Map, json};
use std::collections::BTreeMap;
use std::time::Duration;

use super::fixtures::{NOW as START, plan};
const LEASE: Duration = Duration::from_secs(60);

fn agent(name: &str) -> Actor {
    super::fixtures::actor(&format!("thread-{name}"))
}

fn parallel_run() -> (Run, Vec<Event>) {
    run_of(builtin_template("parallel").unwrap())
}

fn run_of(template: Template) -> (Run, Vec<Event>) {
    let (run, event) = Run::start(super::fixtures::new_run("r1", template), &agent("lead"), START);
    (run, vec![event])
}

fn planned(run: &Run, plan: Plan) -> Change {
    super::fixtures::planned(run.version, plan)
}

fn claim(task: Option<&str>) -> Change {
    Change::Claim { task: task.map(String::from), lease: LEASE }
}

fn report(task: &str, token: u64, outcome: &str) -> Change {
    Change::TaskAdvance {
        task: task.into(),
        token,
        outcome: outcome.into(),
        output: format!("{task} {outcome}"),
        artifacts: Map::new(),
        code: None,
    }
}

/// The claim's task and token, read from its event.
fn claimed(event: &Event) -> (String, u64) {
    match &event.kind {
        EventKind::TaskClaimed { task, token, .. } => (task.clone(), *token),
        other => panic!("not a claim: {other:?}"),
    }
}

#[test]
fn plans_are_validated_with_the_path_of_each_problem() {
    let (run, _) = parallel_run();
    let err_of = |p: Plan| {
        let mut run = run.clone();
        run.apply(&planned(&run, p), &agent("lead"), START).unwrap_err()
    };
    let err = err_of(plan(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]));
    assert_eq!(err.field.as_deref(), Some("plan.tasks[0].depends_on"));
    assert!(err.message.contains("a -> b -> c -> a"), "{}", err.message);
    let err = err_of(plan(&[("a", &[]), ("a", &[])]));
    assert_eq!(err.field.as_deref(), Some("plan.tasks[1].id"));
    let err = err_of(plan(&[("a", &["ghost"])]));
    assert_eq!(err.field.as_deref(), Some("plan.tasks[0].depends_on[0]"));
    assert!(err.message.contains("unknown task `ghost`"));
    let err = err_of(plan(&[("a", &["a"])]));
    assert!(err.message.contains("depends on itself"));
    let err = err_of(plan(&[("bad id", &[])]));
    assert_eq!(err.field.as_deref(), Some("plan.tasks[0].id"));
    let many: Vec<(String, Vec<&str>)> = (0..101).map(|i| (format!("t{i}"), vec![])).collect();
    let many: Vec<(&str, &[&str])> = many.iter().map(|(id, d)| (id.as_str(), d.as_slice())).collect();
    assert_eq!(err_of(plan(&many)).field.as_deref(), Some("plan.tasks"));
    let mut no_plan = run.clone();
    let change = super::fixtures::advance(1, "planned", "");
    assert_eq!(no_plan.apply(&change, &agent("lead"), START).unwrap_err().field.as_deref(), Some("plan"));
}

#[test]
fn templates_with_fan_outs_and_pipelines_are_checked() {
    let parse = |v: serde_json::Value| Template::parse(&v.to_string(), false, "template");
    let ok = parse(json!({"name": "p", "steps": [
        {"name": "plan", "role": "architect", "outcomes": {"planned": {"fan_out": "mine", "join": "done", "on_task_failure": "ask"}}}],
        "pipelines": [{"name": "mine", "steps": [{"name": "do", "role": "implementer", "outcomes": {"ok": "join", "bad": "failed"}}]}]}));
    let template = ok.unwrap();
    assert_eq!(template.pipeline("mine").unwrap().steps.len(), 1);
    assert!(template.pipeline("task").is_some(), "the built-in pipeline is always there");
    let err = parse(json!({"name": "p", "steps": [{"name": "plan", "role": "a", "outcomes": {"x": {"fan_out": "nope", "join": "done"}}}]}))
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("template.steps[0].outcomes.x.fan_out"));
    let err = parse(json!({"name": "p", "steps": [{"name": "a", "role": "a", "outcomes": {"x": "join"}}]})).unwrap_err();
    assert!(err.message.contains("`join` ends a task"), "{}", err.message);
    let err = parse(json!({"name": "p", "steps": [{"name": "plan", "role": "a", "outcomes": {"x": {"fan_out": "mine", "join": "done"}}}],
        "pipelines": [{"name": "mine", "steps": [{"name": "do", "role": "i", "outcomes": {"ok": "done"}}]}]}))
    .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("template.pipelines[0].steps[0].outcomes.ok"));
    let err = parse(json!({"name": "p", "steps": [{"name": "a", "role": "a", "independent_of": ["zz"], "outcomes": {"x": "done"}}]}))
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("template.steps[0].independent_of[0]"));
}

#[test]
fn claims_respect_dependencies_independence_and_fencing() {
    let (mut run, _) = parallel_run();
    run.apply(&planned(&run, plan(&[("api", &[]), ("ui", &["api"])])), &agent("lead"), START).unwrap();
    assert_eq!(run.current_step, None, "the run waits for its tasks");
    let err = run.apply(&claim(Some("ui")), &agent("a"), START).unwrap_err();
    assert!(err.message.contains("waiting"), "{}", err.message);
    let (task, token) = claimed(&run.apply(&claim(None), &agent("a"), START).unwrap());
    assert_eq!(task, "api");
    let err = run.apply(&claim(None), &agent("b"), START).unwrap_err();
    assert!(err.message.contains("1 claimed by others") && err.message.contains("1 waiting"), "{}", err.message);
    run.apply(&report("api", token, "implemented"), &agent("a"), START).unwrap();
    // The review must not be played by the implementer.
    let err = run.apply(&claim(Some("api")), &agent("a"), START).unwrap_err();
    assert!(err.message.contains("someone other than"), "{}", err.message);
    let (_, review_token) = claimed(&run.apply(&claim(Some("api")), &agent("b"), START).unwrap());
    assert!(review_token > token, "fencing tokens grow");
    let stale = run.apply(&report("api", token, "approved"), &agent("a"), START).unwrap_err();
    assert_eq!((stale.code, stale.field.as_deref()), (ErrorCode::Conflict, Some("lease_token")));
    // b's lease expires; c takes over and b's late report is refused.
    let later = START.after(LEASE + Duration::from_secs(1));
    let takeover = run.apply(&claim(Some("api")), &agent("c"), later).unwrap();
    assert!(matches!(&takeover.kind, EventKind::TaskClaimed { taken_over_from: Some(a), .. } if a.same_agent(&agent("b"))));
    let (_, c_token) = claimed(&takeover);
    assert_eq!(run.apply(&report("api", review_token, "approved"), &agent("b"), later).unwrap_err().code, ErrorCode::Conflict);
    let brief = TaskBrief::of(&run, run.fanout.as_ref().unwrap().task("api").unwrap(), Some(c_token));
    assert_eq!(brief.taken_over_from.as_deref(), Some("codex thread-b"));
    assert_eq!(brief.lease_token, Some(c_token));
    assert!(brief.subagent_prompt.is_some(), "review steps say how to run them in a fresh sub-agent");
    run.apply(&report("api", c_token, "approved"), &agent("c"), later).unwrap();
    // An expired lease nobody took over still accepts its holder's report (the README's
    // lease rule): the token, not the clock, fences.
    let (_, t) = claimed(&run.apply(&claim(Some("api")), &agent("a"), later).unwrap());
    let much_later = later.after(LEASE * 3);
    run.apply(&report("api", t, "passed"), &agent("a"), much_later).unwrap();
    let ui = run.fanout.as_ref().unwrap().task("ui").unwrap();
    assert_eq!(ui.status, TaskStatus::Ready, "a joined dependency releases its dependents");
}

#[test]
fn a_failed_task_asks_a_human_who_can_skip_it_and_the_run_joins() {
    let mut template = builtin_template("parallel").unwrap();
    template.steps[0].outcomes.insert(
        "planned".into(),
        Target::FanOut(Box::new(templates::FanOut {
            fan_out: "quick".into(),
            join: "integrate".into(),
            on_task_failure: templates::TaskFailurePolicy::Ask,
            max_tasks: None,
        })),
    );
    template.pipelines.push(
        serde_json::from_value(
            json!({"name": "quick", "steps": [{"name": "do", "role": "implementer", "outcomes": {"ok": "join", "broke": "failed"}}]}),
        )
        .unwrap(),
    );
    template.validate("template").unwrap();
    let (mut run, mut events) = run_of(template);
    let mut apply = |run: &mut Run, change: Change, actor: &Actor| -> Result<Event, BatonError> {
        let event = run.apply(&change, actor, START)?;
        events.push(event.clone());
        Ok(event)
    };
    let change = planned(&run, plan(&[("a", &[]), ("b", &["a"])]));
    apply(&mut run, change, &agent("lead")).unwrap();
    let (_, token) = claimed(&apply(&mut run, claim(None), &agent("x")).unwrap());
    apply(&mut run, report("a", token, "broke"), &agent("x")).unwrap();
    let task = run.fanout.as_ref().unwrap().task("a").unwrap();
    assert_eq!(task.status, TaskStatus::AwaitingHuman);
    assert_eq!(task.gate.as_ref().unwrap().options, ["retry", "skip", "fail_run"]);
    let answer = |task: &str, text: &str| Change::AnswerHuman {
        expected_version: None,
        task: Some(task.into()),
        answer: text.into(),
        comment: None,
        code: None,
    };
    assert_eq!(run.clone().apply(&answer("a", "maybe"), &agent("lead"), START).unwrap_err().field.as_deref(), Some("answer"));
    apply(&mut run, answer("a", "skip"), &agent("lead")).unwrap();
    let (_, token) = claimed(&apply(&mut run, claim(None), &agent("x")).unwrap());
    apply(&mut run, report("b", token, "ok"), &agent("x")).unwrap();
    assert_eq!(run.current_step.as_deref(), Some("integrate"), "skipped and done tasks join");
    assert_eq!(Run::replay("r1", &events).as_ref(), Some(&run));
}

/// A tiny deterministic random source (xorshift), so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Random plans worked by random agents in random order, with expiring leases, stale and
/// duplicate reports: each task joins exactly once and only after its dependencies, the
/// join fires once, and the event log rebuilds the run after every event.
#[test]
fn random_interleavings_complete_every_task_once_and_replay_exactly() {
    for seed in 1..=24u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let n = 1 + rng.below(100);
        let ids: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
        let deps: Vec<Vec<&str>> = (0..n).map(|i| (0..i).filter(|_| rng.chance(4)).take(3).map(|j| ids[j].as_str()).collect()).collect();
        let tasks: Vec<(&str, &[&str])> = ids.iter().zip(&deps).map(|(id, d)| (id.as_str(), d.as_slice())).collect();
        let (mut run, mut events) = parallel_run();
        let mut now = START;
        let agents: Vec<Actor> = ["a", "b", "c", "d"].iter().map(|n| agent(n)).collect();
        events.push(run.apply(&planned(&run, plan(&tasks)), &agents[0], now).unwrap());
        // Leases each agent believes it holds: (task, token).
        let mut held: Vec<Vec<(String, u64)>> = vec![Vec::new(); agents.len()];
        let mut joins: BTreeMap<String, usize> = BTreeMap::new();
        let mut fan_in = 0;
        let mut after_join = 0;
        for _ in 0..200_000 {
            if run.status.is_finished() || after_join > 50 {
                break;
            }
            let who = rng.below(agents.len());
            let actor = &agents[who];
            let was_joined = run.fanout.as_ref().unwrap().joined;
            let roll = rng.below(100);
            let result = if roll < 35 {
                run.apply(&claim(None), actor, now)
            } else if roll < 85 && !held[who].is_empty() {
                let pick = rng.below(held[who].len());
                let (task, token) = held[who].swap_remove(pick);
                let step = run.fanout.as_ref().unwrap().task(&task).unwrap().step.clone().unwrap_or_default();
                let outcome = match step.as_str() {
                    "implement" => "implemented",
                    "review" if rng.chance(15) => "changes_requested",
                    "review" => "approved",
                    _ if rng.chance(10) => "failed",
                    _ => "passed",
                };
                let change = report(&task, token, outcome);
                let result = run.apply(&change, actor, now);
                if result.is_ok() && rng.chance(10) {
                    // A duplicate of an accepted report is refused: its lease is gone (or, after
                    // the join, the tasks are closed).
                    let code = run.clone().apply(&change, actor, now).unwrap_err().code;
                    assert!(matches!(code, ErrorCode::Conflict | ErrorCode::InvalidState), "seed {seed}: {code:?}");
                }
                result
            } else if roll < 92 {
                now = now.after(Duration::from_secs(1 + rng.below(90) as u64));
                continue;
            } else {
                // Answer any loop-limit question so work can go on.
                let asking = run.fanout.as_ref().unwrap().tasks.iter().find(|t| t.gate.is_some()).map(|t| t.id.clone());
                let Some(task) = asking else { continue };
                let change =
                    Change::AnswerHuman { expected_version: None, task: Some(task), answer: "continue".into(), comment: None, code: None };
                run.apply(&change, &agents[0], now)
            };
            if was_joined {
                after_join += 1;
            }
            let Ok(event) = result else { continue };
            assert!(!was_joined, "seed {seed}: a task changed after the join: {event:?}");
            match &event.kind {
                EventKind::TaskClaimed { task, token, .. } => {
                    let fanout = run.fanout.as_ref().unwrap();
                    let claimed = fanout.task(task).unwrap();
                    for dep in &claimed.depends_on {
                        assert!(fanout.task(dep).unwrap().status.has_joined(), "seed {seed}: {task} claimed before {dep} joined");
                    }
                    held[who].push((task.clone(), *token));
                }
                EventKind::TaskAdvanced { task, report } if report.next == Target::Join => *joins.entry(task.clone()).or_default() += 1,
                _ => {}
            }
            if !was_joined && run.fanout.as_ref().unwrap().joined {
                fan_in += 1;
            }
            events.push(event);
            // Replaying is quadratic over a run; check every event of small runs, a sample of big ones.
            if events.len() < 200 || events.len() % 37 == 0 {
                assert_eq!(Run::replay("r1", &events).as_ref(), Some(&run), "seed {seed}: replay differs after event {}", events.len());
            }
        }
        assert_eq!(run.current_step.as_deref(), Some("integrate"), "seed {seed}: the run joined ({n} tasks)");
        assert_eq!(fan_in, 1, "seed {seed}: the join fired once");
        assert_eq!(joins.len(), n, "seed {seed}: every task joined");
        assert!(joins.values().all(|count| *count == 1), "seed {seed}: no task joined twice");
        let change = super::fixtures::advance(run.version, "passed", "ok");
        events.push(run.apply(&change, &agents[0], now).unwrap());
        assert_eq!(run.status, RunStatus::Completed);
        assert_eq!(Run::replay("r1", &events).as_ref(), Some(&run));
    }
}

/// The fan-out template shown in the README parses and validates as written.
#[test]
fn the_readme_fan_out_template_is_valid() {
    let readme = include_str!("../../README.md");
    let start = readme.find("name = \"split\"").expect("README shows the `split` template");
    let toml = &readme[start..start + readme[start..].find("```").unwrap()];
    let template = Template::parse(toml, true, "template").unwrap();
    assert_eq!(template.pipeline("quick").unwrap().steps[1].independent_of, ["do"]);
}

#[test]
fn a_reports_code_is_validated_kept_with_the_task_and_replayed() {
    let (mut run, mut events) = parallel_run();
    events.push(run.apply(&planned(&run, plan(&[("a", &[])])), &agent("lead"), START).unwrap());
    let claim_event = run.apply(&claim(None), &agent("x"), START).unwrap();
    let (_, token) = claimed(&claim_event);
    events.push(claim_event);
    let code = super::model::TaskCode {
        worktree: "/repo/.baton/worktrees/r1-a".into(),
        from: Some("a".repeat(40)),
        head: Some("b".repeat(40)),
        commit: Some("b".repeat(40)),
        files: vec![super::model::FileChange { path: "a.rs".into(), added: Some(3), removed: Some(0) }],
        files_total: 1,
        added: 3,
        ..Default::default()
    };
    let with = |code: super::model::TaskCode| Change::TaskAdvance {
        task: "a".into(),
        token,
        outcome: "implemented".into(),
        output: "done".into(),
        artifacts: Map::new(),
        code: Some(code),
    };
    let forged = super::model::TaskCode { commit: Some("$(rm -rf /)".into()), ..code.clone() };
    let err = run.clone().apply(&with(forged), &agent("x"), START).unwrap_err();
    assert_eq!((err.code, err.field.as_deref()), (ErrorCode::InvalidArgument, Some("code")), "{err:?}");
    let event = run.apply(&with(code.clone()), &agent("x"), START).unwrap();
    let EventKind::TaskAdvanced { report, .. } = &event.kind else { panic!("{event:?}") };
    assert_eq!(report.code.as_ref(), Some(&code), "the event carries the code");
    events.push(event);
    let task = run.fanout.as_ref().unwrap().task("a").unwrap();
    assert_eq!(task.last_code.as_ref().map(|(c, a)| (c, a.id.as_deref())), Some((&code, Some("thread-x"))));
    assert_eq!(task.outputs["implement"].code.as_ref(), Some(&code));
    assert_eq!(Run::replay("r1", &events).as_ref(), Some(&run), "the log rebuilds the task's code");
    // The reviewer's brief names the commit and its diffstat.
    let review_claim = run.apply(&claim(None), &agent("y"), START).unwrap();
    let (_, review_token) = claimed(&review_claim);
    let brief = TaskBrief::of(&run, run.fanout.as_ref().unwrap().task("a").unwrap(), Some(review_token));
    assert_eq!(brief.head.as_deref(), Some("b".repeat(40).as_str()));
    let text = brief.code.unwrap();
    assert!(text.starts_with("Step `implement` (codex thread-x): baton committed what was left uncommitted as bbbbbbbbbb"), "{text}");
    assert!(text.contains("1 file, +3 -0: a.rs (+3 -0)"), "{text}");
}
