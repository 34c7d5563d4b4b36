//! Runs written straight into a [`RunStore`], with no server in between: for the store
//! contract, the disk fault tests and the store bench.

use baton::engine::{Actor, Change, NewRun, Run, Template};
use baton::error::BatonResult;
use baton::store::{Commit, Mutation, RunStore, unknown_run};
use baton::time::Timestamp;
use serde_json::Map;

/// A fixed time, for runs whose times do not matter.
pub const NOW: Timestamp = Timestamp(1_795_000_000_000);

/// [`super::ping_pong`] as a template.
pub fn ping_pong() -> Template {
    let template: Template = serde_json::from_value(super::ping_pong()).unwrap();
    template.validate("template").unwrap();
    template
}

/// A new run `id` of `template` (goal "g", title "t").
pub fn new_run(id: &str, template: Template) -> NewRun {
    NewRun { id: id.into(), template, goal: "g".into(), title: "t".into(), context: Map::new(), workspace: None, max_agents: 4 }
}

/// Start `new` at `now`, with its id as the op id.
pub async fn create(store: &dyn RunStore, new: NewRun, now: Timestamp) -> Run {
    let id = new.id.clone();
    let (run, event) = Run::start(new, &Actor::default(), now);
    let commit = Commit::new(run, event);
    store.commit(&id, &id, Box::new(move |_| Ok(commit.clone()))).await.unwrap()
}

/// Change run `id` with `change`, as op `op`; a missing run is `not_found`.
pub async fn update(
    store: &dyn RunStore,
    op: &str,
    id: &str,
    change: impl Fn(&mut Run) -> BatonResult<Commit> + Send + Sync + 'static,
) -> BatonResult<Run> {
    let id_owned = id.to_string();
    let mutation: Mutation = Box::new(move |current| {
        let mut run = current.ok_or_else(|| unknown_run(&id_owned))?;
        change(&mut run)
    });
    store.commit(op, id, mutation).await
}

/// Advance run `id` from `expected_version` with `outcome` and `output` at `now`, as op `op`.
pub async fn advance(
    store: &dyn RunStore,
    op: &str,
    id: &str,
    expected_version: u64,
    outcome: &str,
    output: String,
    now: Timestamp,
) -> BatonResult<Run> {
    let outcome = outcome.to_string();
    update(store, op, id, move |run| {
        let change = Change::Advance {
            code: None,
            expected_version,
            outcome: outcome.clone(),
            output: output.clone(),
            artifacts: Map::new(),
            plan: None,
        };
        let event = run.apply(&change, &Actor::default(), now)?;
        Ok(Commit::new(run.clone(), event))
    })
    .await
}
