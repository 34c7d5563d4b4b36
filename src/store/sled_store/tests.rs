use super::*;
use crate::engine::{Actor, Change, NewRun, Run, builtin_template};
use crate::store::unknown_run;
use crate::store::{Commit, RECENT_OPS, StatusFilter};
use crate::time::Timestamp;
use serde_json::Map;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

const NOW: Timestamp = Timestamp(1_795_000_000_000);

/// A new run of `feature` created at `now`.
fn start(id: &str, now: Timestamp) -> (Run, Event) {
    let new = NewRun {
        id: id.into(),
        template: builtin_template("feature").unwrap(),
        goal: "g".into(),
        title: "t".into(),
        context: Map::new(),
        workspace: None,
        max_agents: 4,
    };
    Run::start(new, &Actor::default(), now)
}

/// Apply `change` to `run` at `now` as an unnamed actor.
fn apply(run: &mut Run, change: Change, now: Timestamp) -> BatonResult<Event> {
    run.apply(&change, &Actor::default(), now)
}

fn checkpoint_change(expected_version: Option<u64>, name: &str) -> Change {
    Change::Checkpoint { expected_version, name: name.into(), note: None, workspace: None }
}

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
    let (run, event) = start(id, NOW);
    let commit = Commit::new(run, event);
    block_on(store.commit(id, id, Box::new(move |_| Ok(commit.clone())))).unwrap()
}

fn advance(store: &SledStore, op: &str, id: &str, expected_version: u64) -> BatonResult<Run> {
    update(store, op, id, move |run| {
        let change = Change::Advance {
            code: None,
            expected_version,
            outcome: "planned".into(),
            output: "plan".into(),
            artifacts: Map::new(),
            plan: None,
        };
        let event = apply(run, change, NOW)?;
        Ok(Commit::new(run.clone(), event))
    })
}

/// An advance that leaves the run with 700 KiB of artifacts: a checkpoint of it (two
/// snapshots) is too large for the journal, so sled's flush makes it durable.
fn advance_large(store: &SledStore, op: &str, id: &str, expected_version: u64) -> BatonResult<Run> {
    update(store, op, id, move |run| {
        let mut artifacts = Map::new();
        // Random text: LZ4 (see `codec`) leaves it as large as it is.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let blob: String = (0..700 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(state % 64) as usize])
            })
            .collect();
        artifacts.insert("blob".into(), blob.into());
        let change =
            Change::Advance { code: None, expected_version, outcome: "planned".into(), output: "plan".into(), artifacts, plan: None };
        let event = apply(run, change, NOW)?;
        Ok(Commit::new(run.clone(), event))
    })
}

fn checkpoint(store: &SledStore, op: &str, name: &str) -> BatonResult<Run> {
    let name = name.to_string();
    update(store, op, "r1", move |run| {
        let event = apply(run, checkpoint_change(None, &name), NOW)?;
        Ok(Commit { checkpoint: Some(name.clone()), ..Commit::new(run.clone(), event) })
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
        let event = apply(run, Change::Cancel { expected_version: Some(9), reason: "x".into() }, NOW)?;
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
        let event = apply(run, checkpoint_change(None, "cp"), NOW)?;
        Ok(Commit { checkpoint: Some("cp".into()), template: Some(template.clone()), ..Commit::new(run.clone(), event) })
    })
    .unwrap();
    assert_eq!(store.shared.checkpoint("r1", "cp").unwrap().unwrap().version, 2);
    assert_eq!(store.shared.template("mine").unwrap().unwrap().name, "mine");
    assert!(store.shared.checkpoint("r1", "other").unwrap().is_none());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v0")
}

/// Every run of the first-format fixture, as `baton show --json` printed it then.
fn fixture_expectations() -> Vec<serde_json::Value> {
    let mut all: Vec<serde_json::Value> = std::fs::read_dir(fixture())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    all.sort_by_key(|v| v["run"]["id"].as_str().unwrap().to_string());
    assert_eq!(all.len(), 4);
    all
}

/// Check every run, event, the checkpoint `after-plan` and the `docs` template.
fn check_fixture_runs(store: &SledStore) {
    for expected in fixture_expectations() {
        let id = expected["run"]["id"].as_str().unwrap();
        let run = store.shared.run(id).unwrap().unwrap_or_else(|| panic!("run {id} missing"));
        let mut want_run = expected["run"].clone();
        want_run.as_object_mut().unwrap().remove("recent_ops");
        assert_includes(&serde_json::to_value(&run).unwrap(), &want_run, &format!("run {id}"));
        let events = store.shared.events(id, 1, run.version, usize::MAX).unwrap();
        assert_eq!(serde_json::to_value(&events).unwrap(), expected["events"], "events of {id}");
        let summary = RunSummary::of(&run);
        assert_eq!(serde_json::to_value(&summary).unwrap(), expected["summary"], "summary of {id}");
    }
    let source = "22fb3b62-4861-476c-acc3-2f03babd78f3";
    let fork = store.shared.run("50abcc98-28a8-4794-ac36-e15747a01493").unwrap().unwrap();
    let checkpoint = store.shared.checkpoint(source, "after-plan").unwrap().expect("checkpoint after-plan");
    assert_eq!((checkpoint.id.as_str(), checkpoint.version, checkpoint.checkpoints.clone()), (source, 3, vec!["after-plan".to_string()]));
    let same = |r: &Run| {
        (
            r.template.clone(),
            r.goal.clone(),
            r.status,
            r.current_step.clone(),
            r.visits.clone(),
            r.context.clone(),
            r.artifacts.clone(),
            r.outputs.clone(),
            r.last_output.clone(),
        )
    };
    assert_eq!(same(&checkpoint), same(&fork), "the fork started from the checkpoint's state");
    let docs = store.shared.template("docs").unwrap().expect("template docs");
    let docs_run = store.shared.run("8d259766-a208-4e4a-91b5-54981ac569b8").unwrap().unwrap();
    assert_eq!(docs, docs_run.template);
    assert_eq!(store.shared.templates().unwrap().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["docs"]);
}

#[test]
fn the_first_format_is_upgraded_on_open_and_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    copy_dir(&fixture().join("db"), &dir);
    {
        let store = SledStore::open(&dir).unwrap();
        check_fixture_runs(&store);
        let report = block_on(store.verify()).unwrap();
        assert!(report.is_sound(), "{report:?}");
        assert_eq!((report.runs, report.events, report.checkpoints), (4, 12, 1));
        let page = block_on(store.list(&RunQuery { status: StatusFilter::Open, limit: 10, ..RunQuery::default() })).unwrap();
        assert_eq!(page.total, 2, "open runs are counted by the upgraded index");
        // The upgraded ring still recognises the last change of a run.
        let run = store.shared.run("22fb3b62-4861-476c-acc3-2f03babd78f3").unwrap().unwrap();
        let old = fixture_expectations()[0]["run"]["recent_ops"].as_array().unwrap().last().unwrap().as_str().unwrap().to_string();
        assert_eq!(update(&store, &old, &run.id, |_| panic!("a recognised retry is not applied")).unwrap(), run);
        advance_any_in(&store, "50abcc98-28a8-4794-ac36-e15747a01493");
    }
    let store = SledStore::open(&dir).unwrap();
    let report = block_on(store.verify()).unwrap();
    assert!(report.is_sound(), "{report:?}");
    assert_eq!(store.shared.run("50abcc98-28a8-4794-ac36-e15747a01493").unwrap().unwrap().version, 2);
    let tags: Vec<u8> = store.shared.with_db(|db| Ok(db.iter(TreeId::Runs).map(|e| e.unwrap().1[0]).collect())).unwrap();
    assert!(tags.iter().all(|t| *t != b'{'), "run snapshots carry a format tag after the upgrade");
}

/// A checkpoint change on any run in progress.
fn advance_any_in(store: &SledStore, id: &str) {
    checkpoint_in(store, &uuid::Uuid::new_v4().to_string(), id).unwrap();
}

/// Save a checkpoint of run `id` (a change any run takes).
fn checkpoint_in(store: &SledStore, op: &str, id: &str) -> BatonResult<Run> {
    update(store, op, id, move |run| {
        let name = format!("c{}", run.version);
        let event = apply(run, checkpoint_change(None, &name), NOW)?;
        Ok(Commit { checkpoint: Some(name), ..Commit::new(run.clone(), event) })
    })
}

#[test]
fn records_are_compact() {
    let (_dir, store) = store();
    create(&store, "r1");
    advance(&store, "op", "r1", 1).unwrap();
    let (run_bytes, event_bytes) = store
        .shared
        .with_db(|db| Ok((db.get(TreeId::Runs, b"r1")?.unwrap().len(), db.get(TreeId::Events, &keys::event_key("r1", 2))?.unwrap().len())))
        .unwrap();
    let full = serde_json::to_vec(&store.shared.run("r1").unwrap().unwrap()).unwrap().len();
    assert!(run_bytes * 3 < full, "a stored snapshot ({run_bytes} B) is far smaller than the run with its template ({full} B)");
    assert!(event_bytes < 300, "an event is stored in {event_bytes} B");
}

/// Hold the next batch between its transaction and its sync until `release` is sent to;
/// then fail it if `fail`.
fn hold_next_batch(store: &SledStore, fail: bool) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<()>) {
    let (reached_tx, reached) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let mut once = true;
    *store.shared.before_sync.lock().unwrap() = Some(Box::new(move || {
        if !std::mem::take(&mut once) {
            return Ok(());
        }
        reached_tx.send(()).unwrap();
        release_rx.lock().unwrap().recv_timeout(std::time::Duration::from_secs(10)).expect("released");
        if fail { Err(std::io::Error::from_raw_os_error(libc::ENOSPC)) } else { Ok(()) }
    }));
    (reached, release)
}

#[test]
fn readers_see_only_durable_changes() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    create(&store, "r1");
    let (reached, release) = hold_next_batch(&store, false);
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || advance(&store, "op-a", "r1", 1))
    };
    reached.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    // Applied in sled, not yet durable: readers see version 1 everywhere.
    assert_eq!(store.shared.run("r1").unwrap().unwrap().version, 1);
    assert_eq!(store.shared.events("r1", 1, 10, usize::MAX).unwrap().len(), 1);
    let page = block_on(store.list(&RunQuery { limit: 10, ..RunQuery::default() })).unwrap();
    assert_eq!((page.total, page.runs[0].version), (1, 1));
    release.send(()).unwrap();
    assert_eq!(writer.join().unwrap().unwrap().version, 2);
    assert_eq!(store.shared.run("r1").unwrap().unwrap().version, 2);
    let page = block_on(store.list(&RunQuery { limit: 10, ..RunQuery::default() })).unwrap();
    assert_eq!(page.runs[0].version, 2);
}

#[test]
fn a_failed_batch_leaves_no_trace_and_the_store_heals() {
    let (dir, store) = store();
    let store = Arc::new(store);
    create(&store, "r1");
    let (reached, release) = hold_next_batch(&store, true);
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            let template = crate::engine::Template { name: "mine".into(), ..builtin_template("feature").unwrap() };
            update(&store, "op-a", "r1", move |run| {
                let event = apply(run, checkpoint_change(None, "cp"), NOW)?;
                Ok(Commit { checkpoint: Some("cp".into()), template: Some(template.clone()), ..Commit::new(run.clone(), event) })
            })
        })
    };
    reached.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    release.send(()).unwrap();
    let err = writer.join().unwrap().unwrap_err();
    assert_eq!(err.code, crate::error::ErrorCode::Storage);
    assert!(err.message.contains("No space left on device") && err.fix.contains("Free space"), "{err}");
    // Nothing of the failed change is visible.
    assert_eq!(store.shared.run("r1").unwrap().unwrap().version, 1);
    assert!(store.shared.checkpoint("r1", "cp").unwrap().is_none());
    assert!(store.shared.template("mine").unwrap().is_none());
    assert_eq!(store.shared.events("r1", 1, 10, usize::MAX).unwrap().len(), 1);
    // The next change heals the store (reopen, undo) and applies.
    assert_eq!(advance(&store, "op-b", "r1", 1).unwrap().version, 2);
    assert!(store.shared.checkpoint("r1", "cp").unwrap().is_none());
    {
        let r = block_on(store.verify()).unwrap();
        assert!(r.is_sound(), "{r:?}");
    }
    drop(Arc::into_inner(store).unwrap());
    let store = SledStore::open(&dir.path().join("db")).unwrap();
    let run = store.shared.run("r1").unwrap().unwrap();
    assert_eq!((run.version, run.checkpoints.len()), (2, 0), "the undone change stays undone after reopening");
    assert!(store.shared.template("mine").unwrap().is_none());
    {
        let r = block_on(store.verify()).unwrap();
        assert!(r.is_sound(), "{r:?}");
    }
}

#[test]
fn concurrent_commits_share_batches() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    let ids: Vec<String> = (0..8).map(|i| format!("run-{i}")).collect();
    for id in &ids {
        create(&store, id);
    }
    let before = store.writer_batch();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (store, id) = (Arc::clone(&store), id.clone());
                tokio::spawn(async move {
                    for v in 1..=20u64 {
                        let id2 = id.clone();
                        let change: Mutation = Box::new(move |current| {
                            let mut run = current.ok_or_else(|| unknown_run(&id2))?;
                            let event = apply(&mut run, checkpoint_change(Some(v), &format!("c{v}")), NOW)?;
                            Ok(Commit { checkpoint: Some(format!("c{v}")), ..Commit::new(run.clone(), event) })
                        });
                        let run = store.commit(&format!("{id}-{v}"), &id, change).await.unwrap();
                        assert_eq!(run.version, v + 1);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let batches = store.writer_batch() - before;
    assert!(batches < 160, "160 commits from 8 tasks took {batches} batches");
    for id in &ids {
        assert_eq!(store.shared.events(id, 1, 100, usize::MAX).unwrap().len(), 21);
    }
    {
        let r = block_on(store.verify()).unwrap();
        assert!(r.is_sound(), "{r:?}");
    }
}

#[test]
fn a_lone_commit_is_written_by_its_caller_and_the_commits_behind_it_share_a_batch() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    let ids: Vec<String> = (0..5).map(|i| format!("run-{i}")).collect();
    for id in &ids {
        create(&store, id);
    }
    let before = store.writer_batch();
    // Which thread writes each batch; the first is held until released.
    let writers = Arc::new(Mutex::new(Vec::new()));
    let (reached_tx, reached) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    {
        let writers = Arc::clone(&writers);
        *store.shared.before_sync.lock().unwrap() = Some(Box::new(move || {
            let mut seen = writers.lock().unwrap();
            seen.push(std::thread::current().name().unwrap_or("").to_string());
            if seen.len() == 1 {
                drop(seen);
                reached_tx.send(()).unwrap();
                release_rx.lock().unwrap().recv_timeout(std::time::Duration::from_secs(10)).expect("released");
            }
            Ok(())
        }));
    }
    let spawn = |name: &str, id: String| {
        let store = Arc::clone(&store);
        std::thread::Builder::new().name(name.into()).spawn(move || advance(&store, &format!("op-{id}"), &id, 1)).unwrap()
    };
    let lone = spawn("caller", ids[0].clone());
    reached.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    // The writer is busy: these wait for it, together.
    let behind: Vec<_> = ids[1..].iter().map(|id| spawn("behind", id.clone())).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    release.send(()).unwrap();
    assert_eq!(lone.join().unwrap().unwrap().version, 2);
    for thread in behind {
        assert_eq!(thread.join().unwrap().unwrap().version, 2);
    }
    let writers = writers.lock().unwrap().clone();
    assert_eq!(writers[0], "caller", "nothing queued, the writer free: written on the caller's thread ({writers:?})");
    assert!(writers[1..].iter().all(|w| w == "baton-writer"), "queued commits go to the writer thread: {writers:?}");
    assert!(writers.len() < 5, "four commits queued behind a held batch shared batches: {writers:?}");
    assert_eq!(store.writer_batch() - before, writers.len() as u64);
    for id in &ids {
        assert_eq!(store.shared.run(id).unwrap().unwrap().version, 2);
    }
}

#[test]
fn listing_pages_by_status_and_time() {
    let (_dir, store) = store();
    for i in 0..30 {
        let id = format!("r{i:02}");
        let now = Timestamp(NOW.millis() + i * 1000);
        let (run, event) = start(&id, now);
        block_on(store.commit(&id, &id, Box::new(move |_| Ok(Commit::new(run.clone(), event.clone()))))).unwrap();
        if i % 3 == 0 {
            update(&store, &format!("cancel-{i}"), &id, |run| {
                let event = apply(run, Change::Cancel { expected_version: None, reason: "x".into() }, Timestamp(NOW.millis() + 3_600_000))?;
                Ok(Commit::new(run.clone(), event))
            })
            .unwrap();
        }
    }
    let list = |status, limit, cursor| block_on(store.list(&RunQuery { status, limit, cursor, template: None, workspace: None })).unwrap();
    let all = list(StatusFilter::All, 100, None);
    assert_eq!((all.total, all.runs.len(), all.next_cursor.clone()), (30, 30, None));
    assert!(all.runs.windows(2).all(|w| (&w[0].updated_at, &w[1].run_id) >= (&w[1].updated_at, &w[0].run_id)), "newest first");
    assert_eq!(all.runs[0].run_id, "r00", "ties on time go by run id");
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(StatusFilter::Active, 7, cursor.clone());
        assert_eq!(page.total, 20);
        seen.extend(page.runs.iter().map(|s| s.run_id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<String> = (0..30).rev().filter(|i| i % 3 != 0).map(|i| format!("r{i:02}")).collect();
    assert_eq!(seen, expected);
    let cancelled = list(StatusFilter::Cancelled, 3, None);
    assert_eq!((cancelled.total, cancelled.runs.len()), (10, 3));
    let none = block_on(store.list(&RunQuery { template: Some("bugfix".into()), limit: 5, ..RunQuery::default() })).unwrap();
    assert_eq!((none.total, none.runs.len()), (0, 0));
    let feature = block_on(store.list(&RunQuery { template: Some("feature".into()), limit: 5, ..RunQuery::default() })).unwrap();
    assert_eq!((feature.total, feature.runs.len()), (30, 5));
    let bad = block_on(store.list(&RunQuery { cursor: Some("zz".into()), limit: 5, ..RunQuery::default() })).unwrap_err();
    assert_eq!(bad.field.as_deref(), Some("cursor"));
}

#[test]
fn encryption_at_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let key_path = tmp.path().join("db.key");
    let key = Key::load_or_create(&key_path).unwrap();
    assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
    {
        let store = SledStore::open_with(&dir, Options { key: Some(key.clone()), ..Options::default() }).unwrap();
        create(&store, "r1");
        advance(&store, "op", "r1", 1).unwrap();
    }
    let db_bytes = std::fs::read(dir.join("db")).unwrap();
    assert!(!db_bytes.windows(4).any(|w| w == b"plan"), "no payload text in the log");
    let err = SledStore::open(&dir).err().expect("no key");
    assert!(err.message.contains("encrypted, and no key"), "{err}");
    let other = Key::from_bytes([7; 32]);
    let err = SledStore::open_with(&dir, Options { key: Some(other), ..Options::default() }).err().expect("wrong key");
    assert!(err.message.contains("does not open"), "{err}");
    {
        let store = SledStore::open_with(&dir, Options { key: Some(key.clone()), ..Options::default() }).unwrap();
        assert_eq!(store.shared.run("r1").unwrap().unwrap().version, 2);
        {
            let r = block_on(store.verify()).unwrap();
            assert!(r.is_sound(), "{r:?}");
        }
    }
    // Tamper with one sealed record: the read names it.
    {
        let db = open_sled(&dir, &Options::default()).unwrap();
        let mut value = db.tree(TreeId::Events).get(keys::event_key("r1", 2)).unwrap().unwrap().to_vec();
        let last = value.len() - 1;
        value[last] ^= 1;
        db.tree(TreeId::Events).insert(keys::event_key("r1", 2), value).unwrap();
        db.sled.flush().unwrap();
    }
    let store = SledStore::open_with(&dir, Options { key: Some(key), ..Options::default() }).unwrap();
    let err = store.shared.events("r1", 1, 2, usize::MAX).unwrap_err();
    assert_eq!(err.code, crate::error::ErrorCode::Storage);
    assert!(err.message.contains("events/r1/2") && err.message.contains("authentication failed"), "{err}");
    drop(store);
    let plain = tmp.path().join("plain");
    drop(SledStore::open(&plain).unwrap());
    let err = SledStore::open_with(&plain, Options { key: Some(Key::from_bytes([1; 32])), ..Options::default() }).err().unwrap();
    assert!(err.message.contains("not encrypted"), "{err}");
}

/// A database with several runs and enough history to span the log, closed.
fn populated(dir: &Path) -> Vec<(String, u64)> {
    let store = SledStore::open(dir).unwrap();
    let mut runs = Vec::new();
    for r in 0..5 {
        let id = format!("run-{r}");
        create(&store, &id);
        for _ in 0..40 {
            advance_any_in(&store, &id);
        }
        runs.push((id.clone(), store.shared.run(&id).unwrap().unwrap().version));
    }
    runs
}

/// Open `dir`: either refused with a storage error, or serving exactly `runs`.
fn detected_or_intact(dir: &Path, runs: &[(String, u64)], what: &str) -> &'static str {
    match SledStore::open(dir) {
        Err(e) => {
            assert_eq!(e.code, crate::error::ErrorCode::Storage, "{what}: {e}");
            assert!(e.message.contains(&dir.display().to_string()) && !e.fix.is_empty(), "{what}: the error names the database: {e}");
            eprintln!("{what}: {e}");
            "refused"
        }
        Ok(store) => {
            for (id, version) in runs {
                let run = store.shared.run(id);
                let events = store.shared.events(id, 1, *version, usize::MAX);
                match (run, events) {
                    (Ok(Some(run)), Ok(events)) => {
                        assert_eq!((run.version, events.len() as u64), (*version, *version), "{what}: run {id} served short");
                    }
                    (Ok(None), _) => panic!("{what}: run {id} silently missing"),
                    (Err(e), _) | (_, Err(e)) => assert_eq!(e.code, crate::error::ErrorCode::Storage, "{what}: {e}"),
                }
            }
            "intact"
        }
    }
}

#[test]
fn damage_is_detected_never_served_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let runs = populated(&pristine);
    let len = std::fs::metadata(pristine.join("db")).unwrap().len();
    let mut outcomes = Vec::new();
    for (name, damage) in [("flip 10%", 0.1), ("flip 50%", 0.5), ("flip 90%", 0.9), ("truncate tail", -1.0)] {
        for journal in [true, false] {
            let dir = tmp.path().join(format!("{}-{journal}", name.replace([' ', '%'], "_")));
            copy_dir(&pristine, &dir);
            let file = std::fs::OpenOptions::new().read(true).write(true).open(dir.join("db")).unwrap();
            if damage < 0.0 {
                file.set_len(len * 3 / 4).unwrap();
            } else {
                use std::os::unix::fs::FileExt;
                let at = (len as f64 * damage) as u64;
                let mut byte = [0u8];
                file.read_exact_at(&mut byte, at).unwrap();
                file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
            }
            if journal {
                // The journal still holds every batch since sled's last checkpoint: what
                // sled loses of those it takes back, and anything else is refused.
                detected_or_intact(&dir, &runs, name);
            } else {
                // As once the journal moved on past what sled lost.
                std::fs::remove_file(journal::path(&dir)).unwrap();
                outcomes.push((name, detected_or_intact(&dir, &runs, name)));
            }
        }
    }
    assert!(outcomes.iter().all(|(_, o)| *o == "refused"), "each damage is detected: {outcomes:?}");
    let conf = tmp.path().join("conf");
    copy_dir(&pristine, &conf);
    // Damaged, not merely cut short (a prefix of what baton writes is set aside instead:
    // see `leftovers_of_an_interrupted_open_are_set_aside_never_deleted`).
    std::fs::write(conf.join("conf"), b"segment_size: 524288\nuse_compression: fals\0\0\0\0").unwrap();
    let err = SledStore::open(&conf).err().unwrap();
    assert!(err.message.contains("configuration file") && err.message.contains("damaged"), "{err}");
    assert!(!err.message.contains("different version") && err.fix.contains("verify --repair"), "{err}");
    let report = SledStore::repair(&conf, Options::default()).unwrap();
    assert!(report.is_sound(), "{report:?}");
    assert_eq!(detected_or_intact(&conf, &runs, "repaired conf"), "intact");
    let missing = tmp.path().join("missing");
    copy_dir(&pristine, &missing);
    std::fs::remove_file(missing.join("integrity")).unwrap();
    let err = SledStore::open(&missing).err().unwrap();
    assert!(err.message.contains("integrity record") && err.message.contains("missing"), "{err}");
}

#[test]
fn a_log_shorter_than_acknowledged_is_refused_until_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let early = tmp.path().join("early");
    {
        let store = SledStore::open(&dir).unwrap();
        create(&store, "r1");
        block_on(store.backup(&early)).unwrap();
        advance(&store, "op", "r1", 1).unwrap();
    }
    // Put the older log in place but keep the newer integrity record: a log that lost
    // acknowledged batches, as a damaged tail would, once the journal moved on.
    std::fs::copy(early.join("db"), dir.join("db")).unwrap();
    std::fs::remove_file(journal::path(&dir)).unwrap();
    let err = SledStore::open(&dir).err().unwrap();
    assert_eq!(err.code, crate::error::ErrorCode::Storage);
    assert!(err.message.contains("damaged") && err.message.contains(&dir.join("db").display().to_string()), "{err}");
    assert!(err.fix.contains("backup") && err.fix.contains("verify --repair"), "{err}");
    let report = SledStore::repair(&dir, Options::default()).unwrap();
    assert!(report.is_sound());
    let store = SledStore::open(&dir).unwrap();
    assert_eq!(store.shared.run("r1").unwrap().unwrap().version, 1, "the loss is accepted explicitly");
}

#[test]
fn backup_while_writing_and_export_import() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(&tmp.path().join("db")).unwrap());
    create(&store, "r1");
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for _ in 0..100 {
                advance_any_in(&store, "r1");
            }
        })
    };
    let backup_dir = tmp.path().join("backup");
    let report = block_on(store.backup(&backup_dir)).unwrap();
    writer.join().unwrap();
    assert!(block_on(store.backup(&backup_dir)).is_err(), "an existing backup is never overwritten");
    let copy = SledStore::open(&backup_dir).unwrap();
    let copied = copy.shared.run("r1").unwrap().unwrap();
    assert!(block_on(copy.verify()).unwrap().is_sound(), "the backup is one consistent state ({:?})", report.copy);
    assert_eq!(copy.shared.events("r1", 1, u64::MAX, usize::MAX).unwrap().len() as u64, copied.version);
    drop(copy);

    let mut exported = Vec::new();
    assert_eq!(block_on(store.export(&mut exported)).unwrap(), 1);
    let target = SledStore::open(&tmp.path().join("other")).unwrap();
    assert_eq!(block_on(target.import(&mut exported.as_slice(), false)).unwrap(), 1);
    let original = store.shared.run("r1").unwrap().unwrap();
    assert_eq!(target.shared.run("r1").unwrap().unwrap(), original);
    assert_eq!(target.shared.events("r1", 1, u64::MAX, usize::MAX).unwrap(), store.shared.events("r1", 1, u64::MAX, usize::MAX).unwrap());
    let cp = &original.checkpoints[0];
    assert_eq!(target.shared.checkpoint("r1", cp).unwrap(), store.shared.checkpoint("r1", cp).unwrap());
    let err = block_on(target.import(&mut exported.as_slice(), false)).unwrap_err();
    assert_eq!(err.code, crate::error::ErrorCode::Conflict);
    assert_eq!(block_on(target.import(&mut exported.as_slice(), true)).unwrap(), 1, "replace when told");
    {
        let r = block_on(target.verify()).unwrap();
        assert!(r.is_sound(), "{r:?}");
    }
    assert!(block_on(target.import(&mut b"{\"nope\":1}\n".as_slice(), false)).is_err());
}

/// Everything `expected` holds is in `actual` (which may have fields added since).
fn assert_includes(actual: &serde_json::Value, expected: &serde_json::Value, at: &str) {
    match (actual, expected) {
        (serde_json::Value::Object(actual), serde_json::Value::Object(expected)) => {
            for (key, want) in expected {
                let got = actual.get(key).unwrap_or_else(|| panic!("{at}.{key} is missing"));
                assert_includes(got, want, &format!("{at}.{key}"));
            }
        }
        (serde_json::Value::Array(actual), serde_json::Value::Array(expected)) => {
            assert_eq!(actual.len(), expected.len(), "{at} has {} items, expected {}", actual.len(), expected.len());
            for (i, (got, want)) in actual.iter().zip(expected).enumerate() {
                assert_includes(got, want, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{at}"),
    }
}

/// Format 1 listed an active run by its own status even when one of its tasks waited for a
/// human; opening such a database lists the run anew (entry and counters) as awaiting a
/// human, once, and verify finds it sound.
#[test]
fn format_1_lists_runs_whose_tasks_wait_anew() {
    let (dir, store) = store();
    let (run, event) = {
        let new = NewRun {
            id: "fan-out-run".into(),
            template: builtin_template("parallel").unwrap(),
            goal: "g".into(),
            title: "t".into(),
            context: Map::new(),
            workspace: None,
            max_agents: 4,
        };
        Run::start(new, &Actor::default(), NOW)
    };
    let commit = Commit::new(run.clone(), event);
    block_on(store.commit("op-0", &run.id, Box::new(move |_| Ok(commit.clone())))).unwrap();
    let run = update(&store, "op-1", "fan-out-run", |run| {
        let plan = serde_json::from_value(serde_json::json!({"tasks": [{"id": "x", "title": "x"}]})).unwrap();
        let change =
            Change::Advance { code: None, expected_version: 1, outcome: "planned".into(), output: "p".into(), artifacts: Map::new(), plan: Some(plan) };
        let event = apply(run, change, NOW)?;
        let task = run.fanout.as_mut().and_then(|f| f.task_mut("x")).unwrap();
        task.status = crate::engine::TaskStatus::AwaitingHuman;
        let gate = serde_json::json!({"kind": "task_failed", "question": "Task `x` failed. Retry?", "options": ["retry"], "step": "implement", "asked_at": NOW});
        task.gate = Some(serde_json::from_value(gate).unwrap());
        Ok(Commit::new(run.clone(), event))
    })
    .unwrap();
    let waiting = |store: &SledStore| {
        block_on(store.list(&RunQuery { status: StatusFilter::AwaitingHuman, limit: 10, ..RunQuery::default() })).unwrap()
    };
    assert_eq!((waiting(&store).total, waiting(&store).runs[0].tasks_waiting.clone()), (1, vec!["x".to_string()]));

    // Put the database back as format 1 wrote it: the entry under `active`, no waiting tasks.
    block_on(store.writer.exclusive(|w| w.checkpoint_now())).unwrap();
    store
        .shared
        .with_db(|db| {
            let new = RunSummary::of(&run);
            let old = RunSummary { status: crate::engine::RunStatus::Active, tasks_waiting: Vec::new(), ..new.clone() };
            let (index, meta) = (db.tree(TreeId::Index), db.tree(TreeId::Meta));
            index.remove(index::key_of(&new))?;
            index.insert(index::key_of(&old), store.shared.codec.encode(TreeId::Index.name(), &index::key_of(&old), &old)?)?;
            let mut counts = std::collections::HashMap::new();
            super::batch::count_into(&mut counts, &new, -1);
            super::batch::count_into(&mut counts, &old, 1);
            for (key, delta) in counts {
                let count = index::read_counter(db, &key)? as i64 + delta;
                meta.insert(key, (count as u64).to_be_bytes().to_vec())?;
            }
            meta.insert(keys::META_FORMAT, b"1".to_vec())?;
            db.sled.flush()?;
            Ok(())
        })
        .unwrap();
    drop(store);

    let store = SledStore::open(&dir.path().join("db")).unwrap();
    let page = waiting(&store);
    assert_eq!((page.total, page.runs.len(), page.runs[0].status), (1, 1, crate::engine::RunStatus::AwaitingHuman));
    let active = block_on(store.list(&RunQuery { status: StatusFilter::Active, limit: 10, ..RunQuery::default() })).unwrap();
    assert_eq!((active.total, active.runs.len()), (0, 0));
    let report = block_on(store.verify()).unwrap();
    assert!(report.is_sound(), "{report:?}");
    let format = store.shared.with_db(|db| Ok(db.get(TreeId::Meta, keys::META_FORMAT)?.map(|v| v.to_vec()))).unwrap();
    assert_eq!(format.as_deref(), Some(super::upgrade::FORMAT));
}

#[test]
fn leftovers_of_an_interrupted_open_are_set_aside_never_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    {
        let store = SledStore::open(&dir).unwrap();
        create(&store, "r1");
        advance(&store, "op", "r1", 1).unwrap();
    }
    // What a kill leaves: an empty snapshot file named after every finished one (the newest
    // by name, so sled would read it), and a partial one.
    std::fs::write(dir.join("snap.FFFFFFFFFFFFFFFF.generating"), b"").unwrap();
    std::fs::write(dir.join("snap.FFFFFFFFFFFFFFFE.generating"), b"partial snapshot bytes").unwrap();
    let store = SledStore::open(&dir).unwrap();
    assert_eq!(store.shared.run("r1").unwrap().unwrap().version, 2, "every change recovered");
    assert!(block_on(store.verify()).unwrap().is_sound());
    drop(store);
    let aside: Vec<String> =
        std::fs::read_dir(dir.join(leftovers::SET_ASIDE)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(aside.len(), 2, "{aside:?}");
    assert!(aside.iter().all(|n| n.ends_with(".generating")), "{aside:?}");
    let partial = aside.iter().find(|n| n.contains("FFFE")).unwrap();
    assert_eq!(std::fs::read(dir.join(leftovers::SET_ASIDE).join(partial)).unwrap(), b"partial snapshot bytes", "kept as it was");

    // A configuration file cut short by a kill during the first open.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::write(fresh.join("conf"), &integrity_conf::expected()[..20]).unwrap();
    let store = SledStore::open(&fresh).unwrap();
    create(&store, "r1");
    drop(store);
    assert_eq!(std::fs::read(fresh.join("conf")).unwrap(), integrity_conf::expected(), "sled wrote it again");
    assert_eq!(std::fs::read_dir(fresh.join(leftovers::SET_ASIDE)).unwrap().count(), 1);
    // A damaged configuration file that is not a prefix is still refused (it may be damage).
    std::fs::write(fresh.join("conf"), b"segment_size: 1\n").unwrap();
    assert!(SledStore::open(&fresh).err().unwrap().message.contains("configuration file"));
}

#[test]
fn an_emptied_log_is_refused_and_its_integrity_record_kept_until_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    {
        let store = SledStore::open(&dir).unwrap();
        create(&store, "r1");
        advance(&store, "op", "r1", 1).unwrap();
    }
    let record = std::fs::read(dir.join("integrity")).unwrap();
    std::fs::OpenOptions::new().write(true).open(dir.join("db")).unwrap().set_len(0).unwrap();
    std::fs::remove_file(journal::path(&dir)).unwrap();
    for _ in 0..2 {
        let err = SledStore::open(&dir).err().expect("an emptied log is refused");
        assert_eq!(err.code, crate::error::ErrorCode::Storage);
        assert!(
            err.message.contains("recovered up to write batch 0") && err.message.contains(&dir.join("db").display().to_string()),
            "{err}"
        );
        assert!(err.fix.contains("backup") && err.fix.contains("verify --repair"), "{err}");
        assert_eq!(std::fs::read(dir.join("integrity")).unwrap(), record, "the record is evidence: unchanged");
    }
    // Accepting the loss keeps the database's identity and sets the old record aside.
    let report = SledStore::repair(&dir, Options::default()).unwrap();
    assert!(report.is_sound() && report.runs == 0, "{report:?}");
    let aside: Vec<Vec<u8>> =
        std::fs::read_dir(dir.join(leftovers::SET_ASIDE)).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    assert!(aside.contains(&record), "the old record is kept aside");
    let store = SledStore::open(&dir).unwrap();
    create(&store, "r2");
}

#[test]
fn a_first_open_stopped_before_its_format_marker_keeps_its_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    // The witness of batch 0 exists before the format marker: what a kill in between leaves.
    let db_id = [7u8; 16];
    std::fs::create_dir(&dir).unwrap();
    integrity::Record::create(&dir, integrity::Witness { db_id, batch: 0 }).unwrap();
    let store = SledStore::open(&dir).unwrap();
    create(&store, "r1");
    drop(store);
    let witness = integrity::read(&dir).unwrap().unwrap();
    assert_eq!(witness.db_id, db_id, "the record's identity was kept, not replaced");
    assert!(witness.batch >= 1);
}

#[test]
fn a_flush_that_does_not_return_fails_its_batch_in_bounded_time_and_the_store_heals() {
    let (tmp, store) = store();
    create(&store, "r1");
    advance_large(&store, "op0", "r1", 1).unwrap();
    let dir = tmp.path().join("db");
    // sled's flush hangs for longer than the writer waits (as it did when its I/O thread died).
    let hang = durability::FLUSH_WAIT + std::time::Duration::from_secs(2);
    *durability::TEST_SLOW_FLUSH.lock().unwrap() = Some((dir.clone(), hang));
    let started = std::time::Instant::now();
    let err = checkpoint_in(&store, "op1", "r1").unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.code, crate::error::ErrorCode::Storage, "{err}");
    assert!(err.message.contains("did not finish writing"), "{err}");
    assert!(waited < durability::FLUSH_WAIT + std::time::Duration::from_millis(500), "bounded: {waited:?}");
    assert_eq!(store.shared.run("r1").unwrap().unwrap().version, 2, "the failed change is not visible");
    assert!(stuck_for().is_some());
    // While the flush is still inside sled, writes fail at once instead of queueing behind it.
    let started = std::time::Instant::now();
    assert_eq!(advance(&store, "op2", "r1", 2).unwrap_err().code, crate::error::ErrorCode::Storage);
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    // Once it returns, the store heals in the same process: the failed batch is undone.
    std::thread::sleep(hang - waited + std::time::Duration::from_millis(200));
    assert_eq!(checkpoint_in(&store, "op3", "r1").unwrap().version, 3);
    assert!(stuck_for().is_none());
    assert!(block_on(store.verify()).unwrap().is_sound());
    drop(store);
    let store = SledStore::open(&dir).unwrap();
    assert_eq!(store.shared.run("r1").unwrap().unwrap().version, 3);
    assert_eq!(store.shared.run("r1").unwrap().unwrap().checkpoints, vec!["c2".to_string()], "op1 left no trace");
}

#[test]
fn batches_sled_never_flushed_come_back_from_the_journal() {
    let (tmp, store) = store();
    create(&store, "r1");
    for v in 1..=20 {
        checkpoint_in(&store, &format!("op{v}"), "r1").unwrap();
    }
    // A copy of the open database holds what a power cut would leave of sled's log: none
    // of these batches was flushed by sled, only journaled.
    let (with, without) = (tmp.path().join("with"), tmp.path().join("without"));
    copy_dir(&tmp.path().join("db"), &with);
    copy_dir(&tmp.path().join("db"), &without);
    std::fs::remove_file(journal::path(&without)).unwrap();
    let err = SledStore::open(&without).err().expect("sled alone recovered less than was acknowledged");
    assert_eq!(err.code, crate::error::ErrorCode::Storage, "{err}");
    let copy = SledStore::open(&with).unwrap();
    assert_eq!(copy.shared.run("r1").unwrap().unwrap().version, 21, "every acknowledged advance");
    assert_eq!(copy.shared.events("r1", 1, 21, usize::MAX).unwrap().len(), 21);
    assert!(block_on(copy.verify()).unwrap().is_sound());
    // The copy goes on writing, and its own journal takes over.
    assert_eq!(checkpoint_in(&copy, "op21", "r1").unwrap().version, 22);
}

#[test]
fn checkpoints_move_the_journaled_changes_into_sled_and_no_read_misses_one() {
    let (tmp, store) = store();
    create(&store, "r1");
    // About 2.5 KB a batch: the 256 KiB journal fills, and checkpoints happen, several times.
    for v in 1..=1000u64 {
        assert_eq!(checkpoint_in(&store, &format!("op{v}"), "r1").unwrap().version, v + 1);
        assert_eq!(store.shared.run("r1").unwrap().unwrap().version, v + 1, "read back at once");
    }
    let in_sled = store
        .shared
        .with_db(|db| {
            let bytes = db.tree(TreeId::Runs).get("r1")?.unwrap();
            store.shared.decode_run(db, TreeId::Runs.name(), b"r1", &bytes)
        })
        .unwrap();
    assert!(in_sled.version > 300 && in_sled.version <= 1001, "sled took the batches up to a checkpoint: {}", in_sled.version);
    assert_eq!(store.shared.events("r1", 1, 2000, usize::MAX).unwrap().len(), 1001);
    assert!(block_on(store.verify()).unwrap().is_sound());
    let copy = tmp.path().join("copy");
    copy_dir(&tmp.path().join("db"), &copy);
    let copy = SledStore::open(&copy).unwrap();
    assert_eq!(copy.shared.run("r1").unwrap().unwrap().version, 1001);
    assert!(block_on(copy.verify()).unwrap().is_sound());
}
