use super::*;
use crate::engine::run::AdvanceInput;
use crate::engine::{Run, builtin_template};
use crate::store::unknown_run;
use crate::store::{Commit, RECENT_OPS};
use serde_json::Map;

const NOW: &str = "2026-11-25T12:00:00.000Z";

fn store() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    (dir, store)
}

/// Apply `change` to run `id` through the store's one write path.
fn update(
    store: &SledStore,
    op: &str,
    id: &str,
    change: impl Fn(&mut Run) -> BatonResult<Commit> + Send + Sync + 'static,
) -> BatonResult<Run> {
    let id_owned = id.to_string();
    let mutation: Mutation = Box::new(move |current| {
        let mut run = current.ok_or_else(|| unknown_run(&id_owned))?;
        change(&mut run)
    });
    block_on(store.commit(op, id, mutation))
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}

fn create(store: &SledStore, id: &str) -> Run {
    let (run, event) = Run::start(id.into(), builtin_template("feature").unwrap(), "g".into(), "t".into(), Map::new(), NOW);
    let commit = Commit::new(run, event);
    block_on(store.commit(id, id, Box::new(move |_| Ok(commit.clone())))).unwrap()
}

fn advance(store: &SledStore, op: &str, id: &str, expected_version: u64) -> BatonResult<Run> {
    update(store, op, id, move |run| {
        let input = AdvanceInput { expected_version, outcome: "planned", output: "plan", artifacts: Map::new() };
        let event = run.advance(input, NOW)?;
        Ok(Commit::new(run.clone(), event))
    })
}

fn checkpoint(store: &SledStore, op: &str, name: &str) -> BatonResult<Run> {
    let name = name.to_string();
    update(store, op, "r1", move |run| {
        let event = run.add_checkpoint(None, &name, None, NOW)?;
        Ok(Commit::new(run.clone(), event))
    })
}

#[test]
fn a_retried_change_is_applied_once() {
    let (_dir, store) = store();
    let run = create(&store, "r1");
    assert_eq!(create(&store, "r1"), run, "re-creating with the same op id answers with the run");
    let first = advance(&store, "op-a", "r1", 1).unwrap();
    let again = advance(&store, "op-a", "r1", 1).unwrap();
    assert_eq!(first, again);
    assert_eq!(first.version, 2);
    assert_eq!(store.shared.events("r1", 1, 100, usize::MAX).unwrap().len(), 2);
    let err = advance(&store, "op-b", "r1", 1).unwrap_err();
    assert_eq!(err.code, crate::error::ErrorCode::Conflict, "a new op with a stale version conflicts");
}

#[test]
fn a_failed_change_writes_nothing() {
    let (_dir, store) = store();
    create(&store, "r1");
    let err = update(&store, "op", "r1", |run| {
        let event = run.cancel(Some(9), "x", NOW)?;
        Ok(Commit::new(run.clone(), event))
    })
    .unwrap_err();
    assert_eq!(err.code, crate::error::ErrorCode::Conflict);
    assert_eq!(store.shared.run("r1").unwrap().unwrap().version, 1);
    assert_eq!(store.shared.events("r1", 1, 100, usize::MAX).unwrap().len(), 1);
    assert_eq!(advance(&store, "op2", "nope", 1).unwrap_err().code, crate::error::ErrorCode::NotFound);
}

#[test]
fn recent_ops_are_bounded_and_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(&dir.path().join("db")).unwrap();
        create(&store, "r1");
        for i in 0..RECENT_OPS + 5 {
            checkpoint(&store, &format!("cp-{i}"), &format!("c{i}")).unwrap();
        }
    }
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    let run = store.shared.run("r1").unwrap().unwrap();
    assert_eq!(create(&store, "r1"), run, "an old creation is still recognised by its run id");
    assert_eq!(run.version, RECENT_OPS as u64 + 6);
    let newest = format!("cp-{}", RECENT_OPS + 4);
    assert_eq!(checkpoint(&store, &newest, "again").unwrap(), run, "a recent op is recognised after reopening");
    let err = checkpoint(&store, "cp-0", "c0").unwrap_err();
    assert_eq!(err.code, crate::error::ErrorCode::InvalidArgument, "an op older than RECENT_OPS changes is forgotten: {err}");
    assert_eq!(store.shared.events("r1", 1, u64::MAX, usize::MAX).unwrap().len() as u64, run.version);
    let page = block_on(store.list(&RunQuery { limit: 10, ..RunQuery::default() })).unwrap();
    assert_eq!(page.runs[0].version, run.version);
}

#[test]
fn event_windows_keep_the_newest_that_fit_the_byte_budget() {
    let (_dir, store) = store();
    create(&store, "r1");
    for v in 1..=5 {
        advance_any(&store, v);
    }
    let all = store.shared.events("r1", 1, 6, usize::MAX).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    let one_size = serde_json::to_vec(&all[5]).unwrap().len();
    let newest_two = store.shared.events("r1", 1, 6, 2 * one_size + 10).unwrap();
    assert_eq!(newest_two.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
    let at_least_one = store.shared.events("r1", 1, 6, 1).unwrap();
    assert_eq!(at_least_one.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6]);
    assert!(store.shared.events("r1", 4, 3, usize::MAX).unwrap().is_empty());
}

/// One checkpoint change (works in any state).
fn advance_any(store: &SledStore, v: u64) {
    checkpoint(store, &format!("any-{v}"), &format!("c{v}")).unwrap();
}

#[test]
fn checkpoints_and_templates_are_kept_with_their_change() {
    let (_dir, store) = store();
    create(&store, "r1");
    let template = crate::engine::Template { name: "mine".into(), ..builtin_template("feature").unwrap() };
    update(&store, "op", "r1", move |run| {
        let event = run.add_checkpoint(None, "cp", None, NOW)?;
        Ok(Commit { checkpoint: Some("cp".into()), template: Some(template.clone()), ..Commit::new(run.clone(), event) })
    })
    .unwrap();
    assert_eq!(store.shared.checkpoint("r1", "cp").unwrap().unwrap().version, 2);
    assert_eq!(store.shared.template("mine").unwrap().unwrap().name, "mine");
    assert!(store.shared.checkpoint("r1", "other").unwrap().is_none());
}
