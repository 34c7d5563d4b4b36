use super::briefs::MAX_BRIEF_BYTES;

use super::*;
use crate::error::{BatonError, ErrorCode};
use serde_json::json;

use super::fixtures::{NOW, new_run};

fn actor() -> Actor {
    super::fixtures::actor("thread-1")
}

fn feature_run() -> Run {
    Run::start(new_run("r1", builtin_template("feature").unwrap()), &actor(), NOW).0
}

fn apply(run: &mut Run, change: Change) -> Result<Event, BatonError> {
    run.apply(&change, &actor(), NOW)
}

fn advance(run: &mut Run, outcome: &str) -> Result<Event, BatonError> {
    apply(run, super::fixtures::advance(run.version, outcome, &format!("did {outcome}")))
}

fn ask(run: &mut Run, expected_version: Option<u64>, question: &str, options: &[&str]) -> Result<Event, BatonError> {
    let options = options.iter().map(|o| o.to_string()).collect();
    apply(run, Change::AskHuman { expected_version, question: question.into(), options })
}

fn answer(run: &mut Run, expected_version: Option<u64>, text: &str, comment: Option<&str>) -> Result<Event, BatonError> {
    apply(run, Change::AnswerHuman { expected_version, task: None, answer: text.into(), comment: comment.map(String::from), code: None })
}

fn checkpoint(run: &mut Run, name: &str) -> Result<Event, BatonError> {
    apply(run, Change::Checkpoint { expected_version: None, name: name.into(), note: None, workspace: None })
}

fn cancel(run: &mut Run, reason: &str) -> Result<Event, BatonError> {
    apply(run, Change::Cancel { expected_version: None, reason: reason.into() })
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
    let brief = Brief::of(&run, Guide::FirstTime);
    assert_eq!(brief.feedback.as_ref().unwrap().outcome, "changes_requested");
    assert!(brief.prior_outputs.iter().any(|o| o.step == "design"));
    assert!(brief.role_guide.contains("skill/roles/implementer.md"), "the implementer has seen its guide: {}", brief.role_guide);
    assert!(Brief::of(&run, Guide::Always).role_guide.contains("# Role: implementer"), "a resumed session gets it whole");
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
    let change = super::fixtures::advance(0, "planned", "");
    let err = apply(&mut run, change).unwrap_err();
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
    assert!(matches!(&ev.kind, EventKind::Advanced { report, .. } if report.limit_reached == Some(4)));
    assert_eq!(run.status, RunStatus::AwaitingHuman);
    let gate = run.pending_gate.clone().unwrap();
    assert_eq!(gate.kind, GateKind::LoopLimit { target: "implement".into() });
    assert!(answer(&mut run, None, "maybe", None).unwrap_err().fix.contains("continue"));
    let mut stopped = run.clone();
    let version = run.version;
    answer(&mut run, Some(version), "Continue", None).unwrap();
    assert_eq!(run.status, RunStatus::Active);
    assert_eq!(run.current_step.as_deref(), Some("implement"));
    assert_eq!(run.visits["implement"], 1);
    answer(&mut stopped, None, "fail", None).unwrap();
    assert_eq!(stopped.status, RunStatus::Failed);
}

#[test]
fn human_question_blocks_advance_until_answered() {
    let mut run = feature_run();
    ask(&mut run, Some(1), "Which database?", &["postgres", "sqlite"]).unwrap();
    let err = advance(&mut run, "planned").unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidState);
    assert!(err.fix.contains("answer_human"));
    answer(&mut run, None, "sqlite", Some("small deployment")).unwrap();
    assert_eq!(run.status, RunStatus::Active);
    assert_eq!(run.current_step.as_deref(), Some("design"));
    assert_eq!(Brief::of(&run, Guide::FirstTime).recent_human_answers[0].answer, "sqlite");
}

#[test]
fn fork_copies_state_and_resets_history() {
    let mut run = feature_run();
    advance(&mut run, "planned").unwrap();
    checkpoint(&mut run, "after-plan").unwrap();
    assert!(checkpoint(&mut run, "after-plan").is_err());
    let (fork, ev) = Run::fork(&run, "after-plan", "r2".into(), &actor(), NOW).unwrap();
    let mut finished = run.clone();
    cancel(&mut finished, "stop").unwrap();
    assert_eq!(checkpoint(&mut finished, "late").unwrap_err().code, ErrorCode::InvalidState);
    assert_eq!(ev.seq, 1);
    assert_eq!(fork.current_step.as_deref(), Some("implement"));
    assert_eq!(fork.outputs["design"].outcome, "planned");
    assert_eq!(fork.forked_from.as_ref().unwrap().run_id, "r1");
    cancel(&mut run, "changed my mind").unwrap();
    assert!(Run::fork(&run, "x", "r3".into(), &actor(), NOW).is_err());
    assert!(cancel(&mut run, "again").is_err());
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
        apply(run, Change::Advance { code: None, expected_version: run.version, outcome, output: String::new(), artifacts, plan: None })
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
    for i in 0..model::MAX_KEPT_ANSWERS + 3 {
        ask(&mut run, None, &format!("q{i}"), &[]).unwrap();
        answer(&mut run, None, &format!("a{i}"), None).unwrap();
    }
    assert_eq!(run.human_answers.len(), model::MAX_KEPT_ANSWERS);
    assert_eq!(run.human_answers[0].answer, "a3");
}

#[test]
fn the_event_log_alone_rebuilds_every_run() {
    let mut run = feature_run();
    let mut events = vec![Run::start(new_run("r1", builtin_template("feature").unwrap()), &actor(), NOW).1];
    type Step = Box<dyn Fn(&mut Run) -> Result<Event, BatonError>>;
    let steps: Vec<Step> = vec![
        Box::new(|r| advance(r, "planned")),
        Box::new(|r| {
            let change = Change::Advance {
                code: None,
                expected_version: r.version,
                outcome: "implemented".into(),
                output: "code".into(),
                artifacts: json!({"files": ["a.rs"], "big": "x"}).as_object().unwrap().clone(),
                plan: None,
            };
            apply(r, change)
        }),
        Box::new(|r| checkpoint(r, "cp")),
        Box::new(|r| advance(r, "changes_requested")),
        Box::new(|r| ask(r, None, "which?", &["a", "b"])),
        Box::new(|r| answer(r, None, "B", Some("because"))),
        Box::new(|r| {
            let change = Change::Advance {
                code: None,
                expected_version: r.version,
                outcome: "implemented".into(),
                output: "again".into(),
                artifacts: json!({"big": null}).as_object().unwrap().clone(),
                plan: None,
            };
            apply(r, change)
        }),
        Box::new(|r| advance(r, "approved")),
        Box::new(|r| advance(r, "passed")),
    ];
    for step in &steps {
        events.push(step(&mut run).unwrap());
        assert_eq!(Run::replay("r1", &events).as_ref(), Some(&run), "after event {}", events.len());
    }
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(
        Run::fork(&run, "cp", "r2".into(), &actor(), NOW).unwrap_err().code,
        ErrorCode::InvalidState,
        "a finished run is not forked"
    );
}

#[test]
fn a_fork_replays_from_its_own_first_event() {
    let mut run = feature_run();
    advance(&mut run, "planned").unwrap();
    let (mut fork, first) = Run::fork(&run, "cp", "r2".into(), &actor(), NOW).unwrap();
    let second = advance(&mut fork, "implemented").unwrap();
    assert_eq!(Run::replay("r2", &[first, second]), Some(fork));
}

#[test]
fn briefs_stay_bounded_with_key_fields_first_whatever_was_reported() {
    let mut run = feature_run();
    let huge = "word ".repeat(60_000);
    let change = super::fixtures::advance(1, "planned", &huge);
    apply(&mut run, change).unwrap();
    let change = super::fixtures::advance(2, "implemented", &huge);
    apply(&mut run, change).unwrap();
    let change = super::fixtures::advance(3, "changes_requested", &huge);
    apply(&mut run, change).unwrap();
    for guide in [Guide::FirstTime, Guide::Always] {
        let brief = Brief::of(&run, guide);
        let text = serde_json::to_string(&brief).unwrap();
        assert!(text.len() <= MAX_BRIEF_BYTES, "{} bytes", text.len());
        for key in ["\"run_id\"", "\"status\"", "\"version\"", "\"step\"", "\"role\"", "\"outcomes\"", "\"next_action\""] {
            let at = text.find(key).unwrap_or_else(|| panic!("{key} missing"));
            assert!(at < 2000, "{key} is at byte {at}, not among the first fields");
        }
        let feedback = brief.feedback.as_ref().unwrap();
        assert_eq!(feedback.output_bytes, Some(300_000));
        assert_eq!(feedback.read_more.as_deref(), Some("inspect {\"run_id\": \"r1\", \"event\": 4}"));
        assert!(brief.shortened.contains(&"feedback".to_string()));
    }
}
