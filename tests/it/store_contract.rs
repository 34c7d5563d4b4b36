//! One set of store-level tests for every `RunStore`: each test runs against the sled
//! store and (when PostgreSQL is available: BATON_TEST_POSTGRES_URL, or its binaries for
//! a private cluster) the PostgreSQL store, and expects the same behaviour: a retried
//! change applied once, a refused change writing nothing, the op-id ring bounded, event
//! windows by byte budget, checkpoints and templates kept with their change, listings by
//! status and time with cursors and totals, concurrent commits, export and import.

use crate::support;
use crate::support::store::{NOW, update};
use baton::engine::{Actor, Change, Run, builtin_template};
use baton::error::{BatonResult, ErrorCode};
use baton::store::{Commit, PgStore, RECENT_OPS, RunQuery, RunStore, SledStore, StatusFilter};
use baton::time::Timestamp;
use std::sync::Arc;

/// The stores under test, each fresh, with what keeps them alive.
struct Backends {
    stores: Vec<(&'static str, Arc<dyn RunStore>)>,
    _tmp: tempfile::TempDir,
    _cluster: Option<support::pg::Cluster>,
}

async fn backends() -> Backends {
    let tmp = tempfile::tempdir().unwrap();
    let mut stores: Vec<(&'static str, Arc<dyn RunStore>)> = vec![("sled", Arc::new(SledStore::open(&tmp.path().join("db")).unwrap()))];
    let mut cluster = None;
    if let Some((url, private)) = support::pg::database() {
        cluster = private;
        let store = PgStore::open(baton::store::postgres::DatabaseUrl::parse(&url).unwrap()).await.unwrap();
        stores.push(("postgres", Arc::new(store)));
    }
    Backends { stores, _tmp: tmp, _cluster: cluster }
}

/// Create run `id` of the built-in `feature` template at `now`.
async fn create_at(store: &dyn RunStore, id: &str, now: Timestamp) -> Run {
    support::store::create(store, support::store::new_run(id, builtin_template("feature").unwrap()), now).await
}

/// The architect's `planned` step of run `id`, as op `op`.
async fn advance(store: &dyn RunStore, op: &str, id: &str, expected_version: u64) -> BatonResult<Run> {
    support::store::advance(store, op, id, expected_version, "planned", "plan".into(), NOW).await
}

async fn checkpoint(store: &dyn RunStore, op: &str, id: &str, name: &str) -> BatonResult<Run> {
    let name = name.to_string();
    update(store, op, id, move |run| {
        let change = Change::Checkpoint { expected_version: None, name: name.clone(), note: None, workspace: None };
        let event = run.apply(&change, &Actor::default(), NOW)?;
        Ok(Commit { checkpoint: Some(name.clone()), ..Commit::new(run.clone(), event) })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_change_is_applied_once_and_a_refused_one_writes_nothing() {
    for (name, store) in backends().await.stores {
        let store = store.as_ref();
        let run = create_at(store, "r1", NOW).await;
        assert_eq!(create_at(store, "r1", NOW).await, run, "{name}: re-creating with the same op id answers with the run");
        let first = advance(store, "op-a", "r1", 1).await.unwrap();
        assert_eq!(advance(store, "op-a", "r1", 1).await.unwrap(), first, "{name}");
        assert_eq!(store.events("r1", 1, 100, usize::MAX).await.unwrap().len(), 2, "{name}");
        let err = advance(store, "op-b", "r1", 1).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict, "{name}: a new op with a stale version conflicts");
        assert_eq!(store.run("r1").await.unwrap().unwrap().version, 2, "{name}");
        assert_eq!(advance(store, "op-c", "nope", 1).await.unwrap_err().code, ErrorCode::NotFound, "{name}");
        assert!(store.run("nope").await.unwrap().is_none(), "{name}");
        assert!(store.verify().await.unwrap().is_sound(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_op_ring_is_bounded_and_event_windows_fit_the_budget() {
    for (name, store) in backends().await.stores {
        let store = store.as_ref();
        create_at(store, "r1", NOW).await;
        for i in 0..RECENT_OPS + 5 {
            checkpoint(store, &format!("cp-{i}"), "r1", &format!("c{i}")).await.unwrap();
        }
        let run = store.run("r1").await.unwrap().unwrap();
        assert_eq!(run.version, RECENT_OPS as u64 + 6);
        let newest = format!("cp-{}", RECENT_OPS + 4);
        assert_eq!(checkpoint(store, &newest, "r1", "again").await.unwrap(), run, "{name}: a recent op is recognised");
        let err = checkpoint(store, "cp-0", "r1", "c0").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{name}: an op older than the ring is forgotten: {err}");
        let all = store.events("r1", 1, u64::MAX, usize::MAX).await.unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=run.version).collect::<Vec<_>>(), "{name}");
        let size = serde_json::to_vec(&all[5]).unwrap().len();
        let two = store.events("r1", 1, 6, 2 * size + 10).await.unwrap();
        assert_eq!(two.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6], "{name}");
        assert_eq!(store.events("r1", 1, 6, 1).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6], "{name}");
        assert!(store.events("r1", 4, 3, usize::MAX).await.unwrap().is_empty(), "{name}");
        assert_eq!(store.checkpoint("r1", "c3").await.unwrap().unwrap().version, 5, "{name}");
        assert!(store.checkpoint("r1", "other").await.unwrap().is_none(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_kept_with_their_change() {
    for (name, store) in backends().await.stores {
        let store = store.as_ref();
        create_at(store, "r1", NOW).await;
        let template = baton::engine::Template { name: "mine".into(), ..builtin_template("bugfix").unwrap() };
        let kept = template.clone();
        update(store, "op", "r1", move |run| {
            let change = Change::Checkpoint { expected_version: None, name: "cp".into(), note: None, workspace: None };
            let event = run.apply(&change, &Actor::default(), NOW)?;
            Ok(Commit { checkpoint: Some("cp".into()), template: Some(kept.clone()), ..Commit::new(run.clone(), event) })
        })
        .await
        .unwrap();
        assert_eq!(store.template("mine").await.unwrap(), Some(template.clone()), "{name}");
        assert_eq!(store.templates().await.unwrap(), vec![template], "{name}");
        assert!(store.template("theirs").await.unwrap().is_none(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_by_status_and_time_with_totals() {
    for (name, store) in backends().await.stores {
        let store = store.as_ref();
        for i in 0..30u64 {
            let id = format!("r{i:02}");
            create_at(store, &id, Timestamp(NOW.millis() + i * 1000)).await;
            if i % 3 == 0 {
                update(store, &format!("cancel-{i}"), &id, |run| {
                    let event = run.apply(
                        &Change::Cancel { expected_version: None, reason: "x".into() },
                        &Actor::default(),
                        Timestamp(NOW.millis() + 3_600_000),
                    )?;
                    Ok(Commit::new(run.clone(), event))
                })
                .await
                .unwrap();
            }
        }
        let list = |status, limit, cursor| async move {
            store.list(&RunQuery { status, limit, cursor, template: None, workspace: None }).await.unwrap()
        };
        let all = list(StatusFilter::All, 100, None).await;
        assert_eq!((all.total, all.runs.len(), all.next_cursor.clone()), (30, 30, None), "{name}");
        assert_eq!(all.runs[0].run_id, "r00", "{name}: ties on time go by run id");
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = list(StatusFilter::Active, 7, cursor.clone()).await;
            assert_eq!(page.total, 20, "{name}");
            seen.extend(page.runs.iter().map(|s| s.run_id.clone()));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let expected: Vec<String> = (0..30).rev().filter(|i| i % 3 != 0).map(|i| format!("r{i:02}")).collect();
        assert_eq!(seen, expected, "{name}");
        let cancelled = list(StatusFilter::Cancelled, 3, None).await;
        assert_eq!((cancelled.total, cancelled.runs.len()), (10, 3), "{name}");
        let counted = list(StatusFilter::Open, 0, None).await;
        assert_eq!((counted.total, counted.runs.len()), (20, 0), "{name}: limit 0 only counts");
        let feature = store.list(&RunQuery { template: Some("feature".into()), limit: 5, ..RunQuery::default() }).await.unwrap();
        assert_eq!((feature.total, feature.runs.len()), (30, 5), "{name}");
        let none = store.list(&RunQuery { template: Some("bugfix".into()), limit: 5, ..RunQuery::default() }).await.unwrap();
        assert_eq!((none.total, none.runs.len()), (0, 0), "{name}");
        let bad = store.list(&RunQuery { cursor: Some("zz".into()), limit: 5, ..RunQuery::default() }).await.unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("cursor"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_all_land_and_export_import_round_trips() {
    for (name, store) in backends().await.stores {
        let ids: Vec<String> = (0..8).map(|i| format!("run-{i}")).collect();
        for id in &ids {
            create_at(store.as_ref(), id, NOW).await;
        }
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (store, id) = (Arc::clone(&store), id.clone());
                tokio::spawn(async move {
                    for v in 1..=20u64 {
                        let run = checkpoint(store.as_ref(), &format!("{id}-{v}"), &id, &format!("c{v}")).await.unwrap();
                        assert_eq!(run.version, v + 1);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // Everyone racing on one run: each change lands once, in some order.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    checkpoint(store.as_ref(), &format!("race-{i}"), "run-0", &format!("race{i}")).await.unwrap().version
                })
            })
            .collect();
        let mut versions: Vec<u64> = futures::future::join_all(racers).await.into_iter().map(|r| r.unwrap()).collect();
        versions.sort();
        assert_eq!(versions, (22..=29).collect::<Vec<_>>(), "{name}");
        let report = store.verify().await.unwrap();
        assert!(report.is_sound() && report.events == 8 * 21 + 8, "{name}: {report:?}");

        let mut exported = Vec::new();
        assert_eq!(store.export(&mut exported).await.unwrap(), 8, "{name}");
        let err = store.import(&mut exported.as_slice(), false).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict, "{name}");
        assert_eq!(store.import(&mut exported.as_slice(), true).await.unwrap(), 8, "{name}: replace when told");
        let mut again = Vec::new();
        store.export(&mut again).await.unwrap();
        assert!(again == exported, "{name}: an import of an export changes nothing");
        assert!(store.verify().await.unwrap().is_sound(), "{name}");
        assert!(store.import(&mut b"{\"nope\":1}\n".as_slice(), false).await.is_err(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_finished_runs_are_deleted_whole_and_the_change_feed_counts_it() {
    for (name, store) in backends().await.stores {
        let store = store.as_ref();
        let mut feed = store.changes();
        let seen = *feed.borrow_and_update();
        create_at(store, "keep", NOW).await;
        create_at(store, "gone", NOW).await;
        checkpoint(store, "op-cp", "gone", "before").await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), feed.wait_for(|c| *c > seen))
            .await
            .unwrap_or_else(|_| panic!("{name}: no change counted within 5 s"))
            .unwrap();

        let err = store.delete_run("gone").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidState, "{name}: a run in progress is refused");
        assert!(store.run("gone").await.unwrap().is_some(), "{name}: and kept");

        update(store, "op-cancel", "gone", |run| {
            let change = Change::Cancel { expected_version: None, reason: "done with it".into() };
            let event = run.apply(&change, &Actor::default(), NOW)?;
            Ok(Commit::new(run.clone(), event))
        })
        .await
        .unwrap();
        let before = *feed.borrow_and_update();
        let deleted = store.delete_run("gone").await.unwrap().expect("the run was there");
        assert_eq!(deleted.run_id, "gone", "{name}");
        tokio::time::timeout(std::time::Duration::from_secs(5), feed.wait_for(|c| *c > before))
            .await
            .unwrap_or_else(|_| panic!("{name}: the delete was not counted within 5 s"))
            .unwrap();
        assert!(store.run("gone").await.unwrap().is_none(), "{name}");
        assert!(store.events("gone", 1, 100, usize::MAX).await.unwrap().is_empty(), "{name}: events go with it");
        assert!(store.checkpoint("gone", "before").await.unwrap().is_none(), "{name}: checkpoints go with it");
        let listed: Vec<String> =
            store.list(&RunQuery { limit: 10, ..RunQuery::default() }).await.unwrap().runs.into_iter().map(|s| s.run_id).collect();
        assert_eq!(listed, vec!["keep".to_string()], "{name}: the listing forgets it");
        assert!(store.delete_run("gone").await.unwrap().is_none(), "{name}: a second delete finds nothing");
        assert!(store.verify().await.unwrap().is_sound(), "{name}");
    }
}
