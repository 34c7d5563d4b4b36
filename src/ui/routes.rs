//! The page's addresses and what each does. Reads render pages; changes are form POSTs
//! (checked by [`super::auth::guard`]) that redirect to the page they changed, or show it
//! again with baton's error (a stale `expected_version` shows the conflict) and the
//! matching HTTP status.

use super::AppState;
use super::auth::Session;
use super::views::{DiffPage, Frame, MessagePage, PrunePage, RunPage, RunsFilter, RunsPage};
use crate::api::*;
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::graph::to_mermaid;
use crate::graph::to_svg;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Extension, Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::Deserialize;
use std::sync::Arc;

/// Runs shown on the list unless `limit` says otherwise.
const LIST_LIMIT: u32 = 100;
/// Events shown on a run's page at once.
const HISTORY: u32 = 100;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/graph.svg", get(graph_svg))
        .route("/runs/{id}/graph.mmd", get(graph_mermaid))
        .route("/runs/{id}/events/{seq}", get(event_text))
        .route("/runs/{id}/diff", get(diff_page))
        .route("/runs/{id}/answer", post(answer))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/fork", post(fork))
        .route("/runs/{id}/delete", post(delete))
        .route("/prune", post(prune))
        .route("/events", get(super::events::stream))
        .route("/static/app.js", get(|| async { asset("text/javascript; charset=utf-8", include_str!("assets/app.js")) }))
        .route("/static/style.css", get(|| async { asset("text/css; charset=utf-8", include_str!("assets/style.css")) }))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), super::auth::guard))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

impl AppState {
    /// Run one request. It runs as a task of its own, so a browser that goes away mid-call
    /// (a navigation aborts the page's fetch, and the handler is dropped) never drops a
    /// request between sending it and reading its answer: on a connection to another
    /// owner process that would leave the answer for the next request to read.
    async fn call<C>(&self, request: C) -> BatonResult<C::Reply>
    where
        C: Call + Send + 'static,
        C::Reply: Send + 'static,
    {
        let (backend, caller) = (Arc::clone(&self.backend), self.caller.clone());
        tokio::spawn(async move { crate::calls::call(&backend, caller, request).await })
            .await
            .unwrap_or_else(|e| Err(BatonError::internal(format!("a request to baton failed: {e}"))))
    }

    /// The frame of a page at `page`. The counter is read before the page's data, so a
    /// change racing the read is never missed (at worst the page re-reads once).
    fn frame(&self, session: &Session, page: String, error: Option<BatonError>) -> Frame {
        Frame { counter: *self.changes.borrow(), page, csrf: session.csrf.clone(), home: self.home.clone(), error, notice: None }
    }

    fn render<T: serde::Serialize>(&self, name: &str, page: &T, status: StatusCode) -> Response {
        match self.views.render(name, page) {
            Ok(html) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
}

async fn runs_page(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    query: Result<Query<RunsFilter>, QueryRejection>,
) -> Response {
    let (filter, bad_query) = match query {
        Ok(Query(filter)) => (filter, None),
        Err(e) => (RunsFilter::default(), Some(BatonError::invalid("query", e.body_text(), "Use the filters on the page."))),
    };
    runs_response(&state, &session, filter, bad_query).await
}

/// The runs list, showing `error` if there is one.
async fn runs_response(state: &AppState, session: &Session, filter: RunsFilter, error: Option<BatonError>) -> Response {
    let mut frame = state.frame(session, list_address(&filter), error);
    let listing = async {
        let status: StatusFilter = match filter.status.as_deref().filter(|s| !s.is_empty()) {
            None => StatusFilter::All,
            Some(text) => serde_json::from_value(serde_json::Value::String(text.into())).map_err(|_| {
                BatonError::invalid(
                    "status",
                    format!("unknown status `{text}`"),
                    format!("Use one of: {}.", super::views::STATUSES.join(", ")),
                )
            })?,
        };
        let params = ListRunsParams {
            status: Some(status),
            template: filter.template.clone().filter(|t| !t.is_empty()),
            limit: Some(filter.limit.unwrap_or(LIST_LIMIT)),
            workspace: filter.workspace.clone().filter(|w| !w.is_empty()),
        };
        state.call(params).await
    };
    let list = match listing.await {
        Ok(list) => Some(list),
        Err(e) => {
            frame.error.get_or_insert(e);
            None
        }
    };
    let templates = match state.call(ListTemplates).await {
        Ok(t) => t.templates.into_iter().map(|t| t.name).collect(),
        Err(_) => Vec::new(),
    };
    let status = frame.error.as_ref().map_or(StatusCode::OK, status_of);
    state.render("runs.html", &RunsPage::new(frame, filter, list, templates), status)
}

/// The list's own address with its filters, for live updates.
fn list_address(filter: &RunsFilter) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in [("status", &filter.status), ("template", &filter.template), ("workspace", &filter.workspace)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            query.append_pair(name, value);
        }
    }
    if let Some(limit) = filter.limit {
        query.append_pair("limit", &limit.to_string());
    }
    let query = query.finish();
    if query.is_empty() { "/".into() } else { format!("/?{query}") }
}

#[derive(Debug, Default, Deserialize)]
struct HistoryQuery {
    #[serde(default)]
    before: Option<u64>,
    /// The version an answer from this page made: the page confirms it and says what
    /// happens next.
    #[serde(default)]
    answered: Option<u64>,
}

/// A run's page as it is, without history paging or a confirmation.
const NO_QUERY: HistoryQuery = HistoryQuery { before: None, answered: None };

async fn run_page(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or(HistoryQuery { before: None, answered: None });
    run_response(&state, &session, &id, &query, None).await
}

/// A run's page, showing `error` (with its HTTP status) if there is one.
async fn run_response(state: &AppState, session: &Session, id: &str, query: &HistoryQuery, error: Option<BatonError>) -> Response {
    let before = query.before;
    let page = match (before, query.answered) {
        (Some(seq), _) => format!("/runs/{id}?before={seq}"),
        (None, Some(seq)) => format!("/runs/{id}?answered={seq}"),
        (None, None) => format!("/runs/{id}"),
    };
    let mut frame = state.frame(session, page, error);
    let loaded = async {
        let details = state.call(GetRunParams { run_id: id.into(), history_limit: Some(HISTORY), before_seq: before, step: None }).await?;
        let graph = graph_of(state, id).await?;
        Ok((details, graph))
    };
    match loaded.await {
        Ok((details, graph)) => {
            if frame.error.is_none() {
                frame.notice = query.answered.and_then(|seq| super::views::answer_notice(&details, seq));
            }
            let status = frame.error.as_ref().map_or(StatusCode::OK, status_of);
            state.render("run.html", &RunPage::new(frame, details, &graph), status)
        }
        Err(e) => {
            let status = status_of(frame.error.as_ref().unwrap_or(&e));
            frame.error.get_or_insert(e);
            state.render("message.html", &MessagePage { frame, title: format!("Run {id}") }, status)
        }
    }
}

async fn graph_of(state: &AppState, id: &str) -> BatonResult<crate::graph::GraphView> {
    state.call(GetGraphParams { run_id: id.into() }).await
}

async fn graph_svg(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match graph_of(&state, &id).await {
        Ok(graph) => ([(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")], to_svg(&graph)).into_response(),
        Err(e) => error_text(&e),
    }
}

async fn graph_mermaid(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match graph_of(&state, &id).await {
        Ok(graph) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], to_mermaid(&graph)).into_response(),
        Err(e) => error_text(&e),
    }
}

#[derive(Debug, Default, Deserialize)]
struct DiffQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

/// Two versions of a run compared, by the comparison `baton diff` prints
/// ([`crate::rewind::diff`]), its reads through the calling pipeline. A version that is not
/// a number, or that the comparison refuses (no such version, snapshots pruned, the
/// repository moved), shows the form again with baton's error and its fix.
async fn diff_page(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let (from, to) = (query.from.unwrap_or_default().trim().to_string(), query.to.unwrap_or_default().trim().to_string());
    let address = form_urlencoded::Serializer::new(String::new()).append_pair("from", &from).append_pair("to", &to).finish();
    let mut frame = state.frame(&session, format!("/runs/{id}/diff?{address}"), None);
    let version = |field: &str, text: &str| {
        text.parse::<u64>().map_err(|_| {
            BatonError::invalid(
                field,
                format!("`{text}` is not a version number"),
                "Give the numbers of two events of the run (#1, #2, … on its timeline).",
            )
        })
    };
    let compared = match (version("from", &from), version("to", &to)) {
        (Ok(a), Ok(b)) => {
            let (backend, caller, run_id) = (Arc::clone(&state.backend), state.caller.clone(), id.clone());
            // Its own task, as for every request (see `AppState::call`).
            tokio::spawn(async move { crate::rewind::diff(&backend, &caller, &run_id, a, b).await })
                .await
                .unwrap_or_else(|e| Err(BatonError::internal(format!("comparing two versions failed: {e}"))))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let (diff, status) = match compared {
        Ok(diff) => (Some(diff), StatusCode::OK),
        Err(e) => {
            let status = status_of(&e);
            frame.error = Some(e);
            (None, status)
        }
    };
    state.render("diff.html", &DiffPage::new(frame, &id, from, to, diff), status)
}

#[derive(Debug, Default, Deserialize)]
struct OffsetQuery {
    #[serde(default)]
    offset: Option<usize>,
}

/// One window of an event's long text, as JSON (`GetEvent`'s answer, or `{error}`).
async fn event_text(
    State(state): State<Arc<AppState>>,
    Path((id, seq)): Path<(String, u64)>,
    query: Result<Query<OffsetQuery>, QueryRejection>,
) -> Response {
    let offset = query.map(|Query(q)| q.offset).unwrap_or_default();
    match state.call(GetEventParams { run_id: id, seq, offset }).await {
        Ok(detail) => Json(detail).into_response(),
        Err(e) => (status_of(&e), Json(serde_json::json!({ "error": e }))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct AnswerForm {
    answer: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    task: String,
    expected_version: u64,
}

async fn answer(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    form: Result<Form<AnswerForm>, FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(e) => return run_response(&state, &session, &id, &NO_QUERY, Some(bad_form(&e))).await,
    };
    // The answer is refused unless the run is at `expected_version`, so the event it makes
    // is the next one: the page after the redirect confirms that event.
    let answered = f.expected_version + 1;
    let request = Request::AnswerHuman(AnswerHumanParams {
        run_id: id.clone(),
        task: Some(f.task).filter(|t| !t.is_empty()),
        answer: f.answer,
        comment: Some(f.comment).filter(|c| !c.trim().is_empty()),
        expected_version: Some(f.expected_version),
        code: None,
    });
    match state.call(request).await {
        Ok(_) => Redirect::to(&format!("/runs/{id}?answered={answered}")).into_response(),
        Err(e) => run_response(&state, &session, &id, &NO_QUERY, Some(e)).await,
    }
}

#[derive(Debug, Deserialize)]
struct CancelForm {
    #[serde(default)]
    reason: String,
    expected_version: u64,
}

async fn cancel(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    form: Result<Form<CancelForm>, FormRejection>,
) -> Response {
    let request = |Form(f): Form<CancelForm>| {
        Request::CancelRun(CancelRunParams {
            run_id: id.clone(),
            reason: Some(f.reason).filter(|r| !r.trim().is_empty()),
            expected_version: Some(f.expected_version),
        })
    };
    change_run(&state, &session, &id, form.map(request)).await
}

/// Make a change to run `id` and go back to its page, or show the page with the error.
async fn change_run(state: &AppState, session: &Session, id: &str, request: Result<Request, FormRejection>) -> Response {
    let outcome = match request {
        Ok(request) => state.call(request).await.map(|_| ()),
        Err(e) => Err(bad_form(&e)),
    };
    match outcome {
        Ok(()) => Redirect::to(&format!("/runs/{id}")).into_response(),
        Err(e) => run_response(state, session, id, &NO_QUERY, Some(e)).await,
    }
}

#[derive(Debug, Deserialize)]
struct ForkForm {
    /// A checkpoint's name, or (from the timeline) the version to fork at.
    #[serde(default)]
    checkpoint: String,
    #[serde(default)]
    at_version: Option<u64>,
    #[serde(default)]
    title: String,
}

async fn fork(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    form: Result<Form<ForkForm>, FormRejection>,
) -> Response {
    let outcome = match form {
        Ok(Form(f)) => {
            let title = Some(f.title).filter(|t| !t.trim().is_empty());
            let forked = match f.at_version {
                Some(version) => state.call(ForkAt { run_id: id.clone(), version, title }).await,
                None => state.call(ForkRunParams { run_id: id.clone(), checkpoint: f.checkpoint, title }).await,
            };
            forked.map(|brief| brief.run_id)
        }
        Err(e) => Err(bad_form(&e)),
    };
    match outcome {
        Ok(new_id) => Redirect::to(&format!("/runs/{new_id}")).into_response(),
        Err(e) => run_response(&state, &session, &id, &NO_QUERY, Some(e)).await,
    }
}

async fn delete(State(state): State<Arc<AppState>>, Extension(session): Extension<Session>, Path(id): Path<String>) -> Response {
    match state.call(Request::DeleteRun(DeleteRunParams { run_id: id.clone() })).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => run_response(&state, &session, &id, &NO_QUERY, Some(e)).await,
    }
}

#[derive(Debug, Deserialize)]
struct PruneForm {
    older_than: String,
    /// A checkbox: present (`on`) for a dry run.
    #[serde(default)]
    dry_run: Option<String>,
}

async fn prune(
    State(state): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    form: Result<Form<PruneForm>, FormRejection>,
) -> Response {
    let Form(form) = match form {
        Ok(form) => form,
        Err(e) => return runs_response(&state, &session, RunsFilter::default(), Some(bad_form(&e))).await,
    };
    let frame = state.frame(&session, "/".into(), None);
    let params = PruneParams { older_than: form.older_than.clone(), dry_run: Some(form.dry_run.is_some()), workspace: None };
    match state.call(params).await {
        Ok(deleted) => state.render("prune.html", &PrunePage::new(frame, form.older_than, deleted), StatusCode::OK),
        Err(e) => runs_response(&state, &session, RunsFilter::default(), Some(e)).await,
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "Not found. The runs are at /.").into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Headers on every answer: scripts, styles and forms only from here, no framing (no
/// click-jacking of the buttons), no caching, and no referrer sent to other sites. (Not
/// `no-referrer`: browsers then send `Origin: null` with the page's own form posts.)
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in set {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// The HTTP status that matches a baton error.
fn status_of(error: &BatonError) -> StatusCode {
    match error.code {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict | ErrorCode::InvalidState => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Storage | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_text(error: &BatonError) -> Response {
    (status_of(error), [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], error.to_string()).into_response()
}

fn bad_form(rejection: &FormRejection) -> BatonError {
    BatonError::invalid("form", format!("the form could not be read: {}", rejection.body_text()), "Reload the page and use its forms.")
}
