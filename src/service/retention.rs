//! Retention: deleting a finished run, and pruning the finished runs older than an age.
//! Runs in progress are never touched: the selection skips them and the store refuses
//! to delete one.

use super::Service;
use crate::api::{DeleteRunParams, Deleted, PruneParams, Reply};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::store::{RunQuery, RunSummary, StatusFilter, unknown_run};
use crate::time::Timestamp;
use std::time::Duration;

impl Service {
    pub(super) async fn delete_run(&self, p: &DeleteRunParams) -> BatonResult<Reply> {
        let deleted = self.store.delete_run(&p.run_id).await?.ok_or_else(|| unknown_run(&p.run_id))?;
        Ok(Reply::Deleted(Deleted { runs: vec![deleted], dry_run: false, note: None }))
    }

    pub(super) async fn prune(&self, p: &PruneParams) -> BatonResult<Reply> {
        let age = parse_age("older_than", &p.older_than)?;
        let mut finished = Vec::new();
        for status in [StatusFilter::Completed, StatusFilter::Failed, StatusFilter::Cancelled] {
            let query = RunQuery { status, workspace: p.workspace.clone(), limit: usize::MAX, ..RunQuery::default() };
            finished.extend(self.store.list(&query).await?.runs);
        }
        let selected = prune_selection(finished, self.clock.now(), age);
        if p.dry_run == Some(true) {
            return Ok(Reply::Deleted(Deleted { runs: selected, dry_run: true, note: None }));
        }
        let mut deleted = Vec::with_capacity(selected.len());
        for summary in selected {
            match self.store.delete_run(&summary.run_id).await {
                Ok(Some(gone)) => deleted.push(gone),
                // Deleted meanwhile by someone else: nothing left to do.
                Ok(None) => {}
                Err(e) if e.code == ErrorCode::InvalidState => {}
                Err(e) => return Err(e),
            }
            // One run at a time, letting other requests in between.
            tokio::task::yield_now().await;
        }
        Ok(Reply::Deleted(Deleted { runs: deleted, dry_run: false, note: None }))
    }
}

/// The runs a prune deletes: finished, and last changed more than `age` before `now`.
pub fn prune_selection(runs: Vec<RunSummary>, now: Timestamp, age: Duration) -> Vec<RunSummary> {
    let cutoff = now.millis().saturating_sub(age.as_millis() as u64);
    runs.into_iter().filter(|r| r.status.is_finished() && r.updated_at.millis() < cutoff).collect()
}

/// An age such as `30d`, `12h`, `90min` or `1w 2d`.
pub fn parse_age(field: &str, text: &str) -> BatonResult<Duration> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        BatonError::invalid(field, format!("`{text}` is not an age: {e}"), "Give a number and a unit, e.g. `30d`, `12h` or `90min`.")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AnswerHumanParams, Caller, CancelRunParams, Envelope, Request, StartWorkflowParams};
    use crate::engine::RunStatus;
    use crate::store::SledStore;
    use crate::time::ManualClock;
    use std::sync::Arc;

    const DAY: Duration = Duration::from_secs(86_400);

    fn summary(id: &str, status: RunStatus, updated_days_ago: u64, now: Timestamp) -> RunSummary {
        RunSummary {
            run_id: id.into(),
            title: id.into(),
            template: "feature".into(),
            status,
            step: None,
            role: None,
            version: 1,
            question: None,
            tasks_waiting: Vec::new(),
            workspace: None,
            driven: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(now.millis() - updated_days_ago * DAY.as_millis() as u64),
        }
    }

    #[test]
    fn prune_selects_finished_runs_older_than_the_age_only() {
        let now = Timestamp(1_795_000_000_000);
        let runs = vec![
            summary("old-done", RunStatus::Completed, 40, now),
            summary("old-failed", RunStatus::Failed, 31, now),
            summary("old-cancelled", RunStatus::Cancelled, 100, now),
            summary("old-active", RunStatus::Active, 400, now),
            summary("old-waiting", RunStatus::AwaitingHuman, 400, now),
            summary("new-done", RunStatus::Completed, 29, now),
            summary("exactly-30", RunStatus::Completed, 30, now),
        ];
        let ids: Vec<String> = prune_selection(runs, now, 30 * DAY).into_iter().map(|r| r.run_id).collect();
        assert_eq!(ids, ["old-done", "old-failed", "old-cancelled"]);
    }

    #[test]
    fn ages_are_read_like_people_write_them() {
        assert_eq!(parse_age("a", "30d").unwrap(), 30 * DAY);
        assert_eq!(parse_age("a", " 12h ").unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(parse_age("a", "1w 2d").unwrap(), 9 * DAY);
        let err = parse_age("older_than", "soon").unwrap_err();
        assert_eq!((err.code, err.field.as_deref()), (ErrorCode::InvalidArgument, Some("older_than")));
    }

    struct Fixture {
        service: Service,
        clock: Arc<ManualClock>,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(&dir.path().join("db")).unwrap();
            let clock = Arc::new(ManualClock::at(Timestamp(1_795_000_000_000)));
            Fixture { service: Service::with_clock(Arc::new(store), clock.clone()), clock, _dir: dir }
        }

        async fn call(&self, request: Request) -> BatonResult<Reply> {
            let envelope = Envelope { op_id: uuid::Uuid::new_v4().to_string(), caller: Caller::default(), request, deadline_ms: None };
            self.service.handle(&envelope).await
        }

        async fn start(&self) -> String {
            let params = StartWorkflowParams { goal: "g".into(), ..Default::default() };
            match self.call(Request::StartWorkflow(params)).await {
                Ok(Reply::Brief(brief)) => brief.run_id,
                other => panic!("{other:?}"),
            }
        }

        async fn cancel(&self, run_id: &str) {
            self.call(Request::CancelRun(CancelRunParams { run_id: run_id.into(), reason: None, expected_version: None })).await.unwrap();
        }

        async fn deleted(&self, request: Request) -> Vec<String> {
            match self.call(request).await {
                Ok(Reply::Deleted(d)) => d.runs.into_iter().map(|r| r.run_id).collect(),
                other => panic!("{other:?}"),
            }
        }
    }

    fn prune(older_than: &str, dry_run: bool) -> Request {
        Request::Prune(PruneParams { older_than: older_than.into(), dry_run: Some(dry_run), workspace: None })
    }

    #[tokio::test]
    async fn delete_and_prune_remove_every_record_of_finished_runs_only() {
        let f = Fixture::new();
        let (old, open) = (f.start().await, f.start().await);
        f.call(Request::Checkpoint(crate::api::CheckpointParams {
            run_id: old.clone(),
            name: "before".into(),
            note: None,
            expected_version: None,
        }))
        .await
        .unwrap();
        f.cancel(&old).await;
        f.clock.advance(40 * DAY);
        let recent = f.start().await;
        f.cancel(&recent).await;

        assert_eq!(f.deleted(prune("30d", true)).await, vec![old.clone()], "a dry run lists the old finished run");
        assert!(f.service.store.run(&old).await.unwrap().is_some(), "and deletes nothing");
        let err = f.call(Request::DeleteRun(DeleteRunParams { run_id: open.clone() })).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidState, "a run in progress is never deleted: {err}");

        assert_eq!(f.deleted(prune("30d", false)).await, vec![old.clone()]);
        let store = &f.service.store;
        assert!(store.run(&old).await.unwrap().is_none());
        assert!(store.events(&old, 1, 10, usize::MAX).await.unwrap().is_empty(), "its events are gone");
        assert!(store.checkpoint(&old, "before").await.unwrap().is_none(), "its checkpoints are gone");
        let listed = store.list(&RunQuery { limit: 10, ..RunQuery::default() }).await.unwrap();
        assert_eq!(listed.total, 2, "its listing entry is gone");
        assert!(f.deleted(prune("30d", false)).await.is_empty(), "nothing else is old enough");

        assert_eq!(f.deleted(Request::DeleteRun(DeleteRunParams { run_id: recent.clone() })).await, vec![recent.clone()]);
        let err = f.call(Request::DeleteRun(DeleteRunParams { run_id: recent })).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::NotFound);
        let answer =
            AnswerHumanParams { run_id: open.clone(), task: None, answer: "x".into(), comment: None, expected_version: None, code: None };
        assert!(f.call(Request::AnswerHuman(answer)).await.is_err(), "the open run is still there, unchanged");
        assert!(store.run(&open).await.unwrap().is_some());
        let report = store.verify().await.unwrap();
        assert!(report.is_sound(), "runs, events, checkpoints, listing and counters agree: {:?}", report.problems);
        assert_eq!((report.runs, report.checkpoints), (1, 0));
    }
}
