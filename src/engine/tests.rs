use super::run::{AdvanceInput, GateKind};
use super::*;
use crate::error::ErrorCode;
use serde_json::{Map, json};

const NOW: &str = "2026-11-25T12:00:00.000Z";

fn feature_run() -> Run {
    let template = builtin_template("feature").unwrap();
    Run::start("r1".into(), template, "add login".into(), "Login".into(), Map::new(), NOW).0
}

fn advance(run: &mut Run, outcome: &str) -> Result<Event, crate::error::BatonError> {
    let input = AdvanceInput { expected_version: run.version, outcome, output: &format!("did {outcome}"), artifacts: Map::new() };
    run.advance(input, NOW)
}

fn template(json: serde_json::Value) -> Result<Template, crate::error::BatonError> {
    Template::parse(&json.to_string(), false, "template")
}

#[test]
fn builtin_templates_are_valid() {
    for t in builtin_templates() {
        t.validate("template").unwrap();
    }
}

#[test]
fn unknown_target_is_rejected_with_its_path() {
    let err = template(json!({"name":"t","steps":[{"name":"a","role":"implementer","outcomes":{"ok":"tset"}}]})).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(err.field.as_deref(), Some("template.steps[0].outcomes.ok"));
    assert!(err.message.contains("unknown step `tset`"), "{}", err.message);
}

#[test]
fn unreachable_step_is_rejected() {
    let err = template(json!({"name":"t","steps":[
        {"name":"a","role":"implementer","outcomes":{"ok":"done"}},
        {"name":"b","role":"tester","outcomes":{"ok":"done"}}]}))
    .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("template.steps[1]"));
    assert!(err.message.contains("unreachable"));
}

#[test]
fn unbounded_loop_is_rejected_and_named() {
    let err = template(json!({"name":"t","steps":[
        {"name":"impl","role":"implementer","outcomes":{"ok":"review"}},
        {"name":"review","role":"reviewer","outcomes":{"approved":"done","changes":"impl"}}]}))
    .unwrap_err();
    assert!(err.message.contains("unbounded loop: impl -> review -> impl"), "{}", err.message);
    assert_eq!(err.field.as_deref(), Some("template.steps[0].max_visits"));
}

#[test]
fn bounded_loop_and_self_loop_rules() {
    template(json!({"name":"t","steps":[
        {"name":"impl","role":"implementer","max_visits":2,"outcomes":{"ok":"review"}},
        {"name":"review","role":"reviewer","outcomes":{"approved":"done","changes":"impl"}}]}))
    .unwrap();
    let err = template(json!({"name":"t","steps":[{"name":"a","role":"x","outcomes":{"again":"a","ok":"done"}}]})).unwrap_err();
    assert!(err.message.contains("a -> a"), "{}", err.message);
}

#[test]
fn a_step_that_can_never_finish_is_rejected() {
    let err = template(json!({"name":"t","steps":[
        {"name":"a","role":"x","outcomes":{"ok":"done","loop":"b"}},
        {"name":"b","role":"y","max_visits":3,"outcomes":{"again":"b"}}]}))
    .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("template.steps[1].outcomes"));
    assert!(err.message.contains("could never end"), "{}", err.message);
}

#[test]
fn oversized_templates_are_refused() {
    let steps: Vec<_> = (0..101).map(|i| json!({"name": format!("s{i}"), "role": "x", "outcomes": {"ok": "done"}})).collect();
    let err = template(json!({"name":"t","steps": steps})).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("template.steps"));
    let err = template(json!({"name":"t","steps":[{"name":"a","role":"x","instructions":"i".repeat(20000),"outcomes":{"ok":"done"}}]}))
        .unwrap_err();
    assert_eq!((err.code, err.field.as_deref()), (ErrorCode::TooLarge, Some("template.steps[0].instructions")));
}

#[test]
fn template_that_never_completes_is_rejected() {
    let err = template(json!({"name":"t","steps":[{"name":"a","role":"x","outcomes":{"no":"failed"}}]})).unwrap_err();
    assert!(err.message.contains("never complete"));
}

#[test]
fn parse_errors_name_the_path_and_unknown_fields() {
    let err = template(json!({"name":"t","steps":[{"name":"a","role":"x","outcomes":{"ok":"done"},"max_visit":3}]})).unwrap_err();
    assert!(err.message.contains("max_visit"), "{}", err.message);
    let toml = "name = \"t\"\n[[steps]]\nname = \"a\"\nrole = \"implementer\"\noutcomes = { ok = \"done\" }\n";
    let t = Template::parse(toml, true, "template_file").unwrap();
    assert_eq!(t.start_step(), "a");
    let err = Template::parse("secret_token = \"hunter2\"\nname = 3\n", true, "template_file").unwrap_err();
    assert!(err.message.contains("line 1") || err.message.contains("line 2"), "{}", err.message);
    assert!(!err.message.contains("hunter2"), "file contents are not echoed: {}", err.message);
}

#[test]
fn feature_flow_with_review_loop_reaches_done() {
    let mut run = feature_run();
    assert_eq!(run.version, 1);
    assert_eq!(run.current_step.as_deref(), Some("design"));
    advance(&mut run, "planned").unwrap();
    advance(&mut run, "implemented").unwrap();
    let ev = advance(&mut run, "changes_requested").unwrap();
    assert_eq!(ev.seq, 4);
    assert_eq!(run.current_step.as_deref(), Some("implement"));
    assert_eq!(run.visits["implement"], 2);
    let brief = Brief::of(&run);
    assert_eq!(brief.feedback.as_ref().unwrap().outcome, "changes_requested");
    assert!(brief.prior_outputs.iter().any(|o| o.step == "design"));
    assert!(brief.role_guide.contains("implementer"));
    advance(&mut run, "implemented").unwrap();
    advance(&mut run, "approved").unwrap();
    advance(&mut run, "passed").unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(run.current_step, None);
    assert_eq!(run.version, 7);
    assert!(advance(&mut run, "passed").unwrap_err().message.contains("completed"));
}

#[test]
fn stale_version_and_unknown_outcome_are_refused_without_change() {
    let mut run = feature_run();
    let before = run.clone();
    let err = run.advance(AdvanceInput { expected_version: 0, outcome: "planned", output: "", artifacts: Map::new() }, NOW).unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert_eq!(err.field.as_deref(), Some("expected_version"));
    let err = advance(&mut run, "approved").unwrap_err();
    assert_eq!(err.field.as_deref(), Some("outcome"));
    assert!(err.fix.contains("planned"));
    assert_eq!(run, before);
}

#[test]
fn loop_limit_pauses_for_a_human_who_can_continue_or_fail() {
    let mut run = feature_run();
    advance(&mut run, "planned").unwrap();
    for _ in 0..3 {
        advance(&mut run, "implemented").unwrap();
        advance(&mut run, "changes_requested").unwrap();
    }
    assert_eq!(run.visits["implement"], 4);
    advance(&mut run, "implemented").unwrap();
    let ev = advance(&mut run, "changes_requested").unwrap();
    assert!(matches!(ev.kind, EventKind::Advanced { limit_reached: Some(4), .. }));
    assert_eq!(run.status, RunStatus::AwaitingHuman);
    let gate = run.pending_gate.clone().unwrap();
    assert_eq!(gate.kind, GateKind::LoopLimit { target: "implement".into() });
    assert!(run.answer_human(None, "maybe", None, NOW).unwrap_err().fix.contains("continue"));
    let mut stopped = run.clone();
    run.answer_human(Some(run.version), "Continue", None, NOW).unwrap();
    assert_eq!(run.status, RunStatus::Active);
    assert_eq!(run.current_step.as_deref(), Some("implement"));
    assert_eq!(run.visits["implement"], 1);
    stopped.answer_human(None, "fail", None, NOW).unwrap();
    assert_eq!(stopped.status, RunStatus::Failed);
}

#[test]
fn human_question_blocks_advance_until_answered() {
    let mut run = feature_run();
    run.ask_human(Some(1), "Which database?", vec!["postgres".into(), "sqlite".into()], NOW).unwrap();
    let err = advance(&mut run, "planned").unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidState);
    assert!(err.fix.contains("answer_human"));
    run.answer_human(None, "sqlite", Some("small deployment".into()), NOW).unwrap();
    assert_eq!(run.status, RunStatus::Active);
    assert_eq!(run.current_step.as_deref(), Some("design"));
    assert_eq!(Brief::of(&run).recent_human_answers[0].answer, "sqlite");
}

#[test]
fn fork_copies_state_and_resets_history() {
    let mut run = feature_run();
    advance(&mut run, "planned").unwrap();
    run.add_checkpoint(None, "after-plan", None, NOW).unwrap();
    assert!(run.add_checkpoint(None, "after-plan", None, NOW).is_err());
    let (fork, ev) = Run::fork(&run, "after-plan", "r2".into(), NOW).unwrap();
    let mut finished = run.clone();
    finished.cancel(None, "stop", NOW).unwrap();
    assert_eq!(finished.add_checkpoint(None, "late", None, NOW).unwrap_err().code, ErrorCode::InvalidState);
    assert_eq!(ev.seq, 1);
    assert_eq!(fork.current_step.as_deref(), Some("implement"));
    assert_eq!(fork.outputs["design"].outcome, "planned");
    assert_eq!(fork.forked_from.as_ref().unwrap().run_id, "r1");
    run.cancel(None, "changed my mind", NOW).unwrap();
    assert!(Run::fork(&run, "x", "r3".into(), NOW).is_err());
    assert!(run.cancel(None, "again", NOW).is_err());
}

#[test]
fn events_round_trip_as_json() {
    let mut run = feature_run();
    let ev = advance(&mut run, "planned").unwrap();
    let text = serde_json::to_string(&ev).unwrap();
    assert!(text.contains("\"type\":\"advanced\""));
    assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), ev);
    let again: Run = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
    assert_eq!(again, run);
}

#[test]
fn artifacts_merge_delete_with_null_and_stay_bounded() {
    let mut run = feature_run();
    let input = |artifacts: serde_json::Value, run: &mut Run| {
        let artifacts = artifacts.as_object().unwrap().clone();
        let outcome = run.template.step(run.current_step.as_deref().unwrap()).unwrap().outcomes.keys().next().unwrap().clone();
        run.advance(AdvanceInput { expected_version: run.version, outcome: &outcome, output: "", artifacts }, NOW)
    };
    input(json!({"plan": "p.md", "big": "x".repeat(600 * 1024)}), &mut run).unwrap();
    let before = run.clone();
    let err = input(json!({"more": "y".repeat(600 * 1024)}), &mut run).unwrap_err();
    assert_eq!((err.code, err.field.as_deref()), (ErrorCode::TooLarge, Some("artifacts")));
    assert_eq!(run, before, "a refused advance changes nothing");
    input(json!({"big": null, "more": "y".repeat(600 * 1024)}), &mut run).unwrap();
    assert!(run.artifacts.contains_key("more") && !run.artifacts.contains_key("big") && run.artifacts["plan"] == "p.md");
}

#[test]
fn only_the_latest_human_answers_stay_in_the_snapshot() {
    let mut run = feature_run();
    for i in 0..run::MAX_KEPT_ANSWERS + 3 {
        run.ask_human(None, &format!("q{i}"), vec![], NOW).unwrap();
        run.answer_human(None, &format!("a{i}"), None, NOW).unwrap();
    }
    assert_eq!(run.human_answers.len(), run::MAX_KEPT_ANSWERS);
    assert_eq!(run.human_answers[0].answer, "a3");
}
