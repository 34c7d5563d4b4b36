//! Unique run-id prefixes: `5ef2ecab` (the 8 characters that name a run's branches and
//! worktrees) stands for the one run whose id starts with it, in every request that names
//! a run, so the terminal, the page and MCP share one rule. A whole id (36 characters)
//! is passed through untouched: resolving costs nothing for the agents' calls.

use crate::api::Request;
use crate::error::{BatonError, BatonResult};
use crate::store::{RunQuery, RunStore, StatusFilter};
use std::borrow::Cow;

/// Length of a whole run id (a UUID in its hyphenated form).
const FULL_ID_LEN: usize = 36;
/// Shortest prefix taken: fewer characters match too many runs by chance (as in git).
pub const MIN_PREFIX_LEN: usize = 4;
/// Candidates named when a prefix is ambiguous.
const MAX_CANDIDATES: usize = 10;
/// Page size of the listing scanned for a prefix.
const PAGE: usize = 1000;

/// `request` with a run-id prefix replaced by the whole id of the one run it names; the
/// request itself when it names no run or a whole id.
pub async fn resolve<'a>(store: &dyn RunStore, request: &'a Request) -> BatonResult<Cow<'a, Request>> {
    let Some(given) = run_id_of(request) else { return Ok(Cow::Borrowed(request)) };
    if given.len() >= FULL_ID_LEN || given.is_empty() {
        return Ok(Cow::Borrowed(request));
    }
    let whole = resolve_id(store, given).await?;
    let mut request = request.clone();
    if let Some(slot) = run_id_slot(&mut request) {
        *slot = whole;
    }
    Ok(Cow::Owned(request))
}

/// The whole id of the one run whose id is or starts with `given`.
pub async fn resolve_id(store: &dyn RunStore, given: &str) -> BatonResult<String> {
    if given.len() >= FULL_ID_LEN || store.run(given).await?.is_some() {
        return Ok(given.to_string());
    }
    if given.len() < MIN_PREFIX_LEN {
        return Err(BatonError::invalid(
            "run_id",
            format!("`{given}` is too short to name a run: a prefix needs at least {MIN_PREFIX_LEN} characters"),
            "Give the run id or a unique prefix of at least 4 characters (`baton runs` lists run ids).",
        ));
    }
    let mut matches = Vec::new();
    let mut cursor = None;
    loop {
        let query = RunQuery { status: StatusFilter::All, limit: PAGE, cursor, ..RunQuery::default() };
        let page = store.list(&query).await?;
        matches.extend(page.runs.into_iter().filter(|s| s.run_id.starts_with(given)).map(|s| (s.run_id, s.title)));
        match page.next_cursor {
            Some(next) if matches.len() <= MAX_CANDIDATES => cursor = Some(next),
            _ => break,
        }
    }
    match matches.len() {
        0 => Err(crate::store::unknown_run(given)),
        1 => Ok(matches.remove(0).0),
        n => {
            let shown: Vec<String> = matches.iter().take(MAX_CANDIDATES).map(|(id, title)| format!("{id} \"{title}\"")).collect();
            let count = if n > MAX_CANDIDATES { format!("more than {MAX_CANDIDATES}") } else { n.to_string() };
            Err(BatonError::invalid(
                "run_id",
                format!("`{given}` is the start of {count} run ids: {}", shown.join(", ")),
                "Give more characters of the run id, enough to name one run.",
            ))
        }
    }
}

/// The run a request names, if it names one.
fn run_id_of(request: &Request) -> Option<&str> {
    match request {
        Request::Advance(p) => Some(&p.run_id),
        Request::Checkpoint(p) => Some(&p.run_id),
        Request::Resume(p) => p.run_id.as_deref(),
        Request::ForkRun(p) => Some(&p.run_id),
        Request::AwaitHuman(p) => Some(&p.run_id),
        Request::AnswerHuman(p) => Some(&p.run_id),
        Request::GetRun(p) => Some(&p.run_id),
        Request::GetEvent(p) => Some(&p.run_id),
        Request::CancelRun(p) => Some(&p.run_id),
        Request::GetGraph(p) => Some(&p.run_id),
        Request::DeleteRun(p) => Some(&p.run_id),
        Request::RecordMerge(p) => Some(&p.run_id),
        _ => None,
    }
}

fn run_id_slot(request: &mut Request) -> Option<&mut String> {
    match request {
        Request::Advance(p) => Some(&mut p.run_id),
        Request::Checkpoint(p) => Some(&mut p.run_id),
        Request::Resume(p) => p.run_id.as_mut(),
        Request::ForkRun(p) => Some(&mut p.run_id),
        Request::AwaitHuman(p) => Some(&mut p.run_id),
        Request::AnswerHuman(p) => Some(&mut p.run_id),
        Request::GetRun(p) => Some(&mut p.run_id),
        Request::GetEvent(p) => Some(&mut p.run_id),
        Request::CancelRun(p) => Some(&mut p.run_id),
        Request::GetGraph(p) => Some(&mut p.run_id),
        Request::DeleteRun(p) => Some(&mut p.run_id),
        Request::RecordMerge(p) => Some(&mut p.run_id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Caller, Envelope, GetRunParams, Reply, StartWorkflowParams};
    use crate::error::ErrorCode;
    use crate::service::Service;
    use crate::store::SledStore;
    use std::sync::Arc;

    async fn start(service: &Service, id: &str) {
        let request = Request::StartWorkflow(StartWorkflowParams { goal: "g".into(), title: Some(id[..4].into()), ..Default::default() });
        let envelope = Envelope { op_id: id.into(), caller: Caller::default(), request, deadline_ms: None };
        service.handle(&envelope).await.unwrap();
    }

    async fn show(service: &Service, run_id: &str) -> BatonResult<String> {
        let request = Request::GetRun(GetRunParams { run_id: run_id.into(), history_limit: None, before_seq: None });
        let envelope = Envelope { op_id: uuid::Uuid::new_v4().to_string(), caller: Caller::default(), request, deadline_ms: None };
        match service.handle(&envelope).await? {
            Reply::Run(details) => Ok(details.run.id),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_unique_prefix_names_its_run_and_an_ambiguous_one_lists_the_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db")).unwrap();
        let service = Service::new(Arc::new(store));
        let (a, b, c) =
            ("5ef2ecab-0000-4000-8000-000000000001", "5ef2ecab-0000-4000-8000-000000000002", "77aa0000-0000-4000-8000-000000000003");
        for id in [a, b, c] {
            start(&service, id).await;
        }
        assert_eq!(show(&service, "77aa").await.unwrap(), c);
        assert_eq!(show(&service, &c[..35]).await.unwrap(), c, "a long prefix");
        assert_eq!(show(&service, a).await.unwrap(), a, "a whole id");
        let err = show(&service, "5ef2ecab").await.unwrap_err();
        assert_eq!((err.code, err.field.as_deref()), (ErrorCode::InvalidArgument, Some("run_id")));
        assert!(err.message.contains(a) && err.message.contains(b) && !err.message.contains(c), "{err}");
        let err = show(&service, "5ef").await.unwrap_err();
        assert!(err.message.contains("at least 4"), "{err}");
        let err = show(&service, "9999").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::NotFound);
    }
}
