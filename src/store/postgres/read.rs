//! Reads: snapshots, events paged by seq, checkpoints, templates, listings. Each is one
//! or two statements on a pooled connection, re-run on another connection if the first
//! breaks. Reads see only committed state, so only acknowledged changes.

use super::Inner;
use super::errors::{Failure, damaged};
use crate::engine::{Event, Run, RunStatus, Template};
use crate::error::{BatonError, BatonResult};
use crate::store::record;
use crate::store::{RunPage, RunQuery, RunSummary, StatusFilter};
use std::sync::Arc;
use tokio_postgres::types::ToSql;

/// Run `$body` (which uses the connection `$conn`) until it succeeds, a failure is final,
/// or the retry budget is spent; evaluates to `BatonResult<T>`.
macro_rules! retrying {
    ($inner:expr, $what:expr, |$conn:ident| $body:expr) => {{
        let mut retry = super::conn::Retry::new(&$inner.conns, $what);
        loop {
            #[allow(unused_mut)]
            let mut $conn = retry.conn().await?;
            let outcome: Result<_, super::errors::Failure> = async { $body }.await;
            match outcome {
                Ok(value) => break Ok::<_, crate::error::BatonError>(value),
                Err(failure) => retry.failed(failure).await?,
            }
        }
    }};
}
pub(super) use retrying;

/// Events fetched per statement when paging a history newest first.
const EVENT_CHUNK: i64 = 256;

/// A sequence number or bound as PostgreSQL's `bigint`.
pub(super) fn big(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

/// Decode a stored snapshot (`record` names it in errors), fetching its template body
/// once per hash.
pub(super) async fn decode_run(
    inner: &Inner,
    client: &deadpool_postgres::ClientWrapper,
    record_name: &str,
    json: &str,
) -> Result<Run, Failure> {
    let url = inner.url();
    let Some((hash, rest)) = record::template_ref(json.as_bytes()).map_err(|why| damaged(url, record_name, why))? else {
        return serde_json::from_str(json).map_err(|e| damaged(url, record_name, &format!("it does not decode ({e})")).into());
    };
    let body = match inner.cached_body(&hash) {
        Some(body) => body,
        None => {
            let stmt = client.prepare_cached("SELECT body FROM template_bodies WHERE hash = $1").await?;
            let row = client.query_opt(&stmt, &[&hash]).await?;
            let Some(row) = row else {
                return Err(damaged(url, record_name, &format!("its template {hash} is missing from template_bodies")).into());
            };
            let text: String = row.get(0);
            serde_json::from_str::<Template>(&text)
                .map_err(|e| damaged(url, &format!("template_bodies/{hash}"), &format!("it does not decode ({e})")))?;
            let body = Arc::new(text.into_bytes());
            inner.remember_body(&hash, Arc::clone(&body));
            body
        }
    };
    record::splice_run(&body, rest).map_err(|e| damaged(url, record_name, &format!("it does not decode ({e})")).into())
}

/// Decode a JSON record of type `T`.
pub(super) fn decode<T: serde::de::DeserializeOwned>(inner: &Inner, record_name: &str, json: &str) -> Result<T, Failure> {
    serde_json::from_str(json).map_err(|e| damaged(inner.url(), record_name, &format!("it does not decode ({e})")).into())
}

pub async fn run(inner: &Inner, run_id: &str) -> BatonResult<Option<Run>> {
    retrying!(inner, "read", |conn| {
        let client = conn.client();
        let stmt = client.prepare_cached("SELECT snapshot FROM runs WHERE run_id = $1").await?;
        match client.query_opt(&stmt, &[&run_id]).await? {
            None => Ok(None),
            Some(row) => Ok(Some(decode_run(inner, client, &format!("runs/{run_id}"), row.get(0)).await?)),
        }
    })
}

pub async fn events(inner: &Inner, run_id: &str, from: u64, to: u64, max_bytes: usize) -> BatonResult<Vec<Event>> {
    if from > to {
        return Ok(Vec::new());
    }
    retrying!(inner, "read", |conn| {
        let client = conn.client();
        let stmt = client
            .prepare_cached("SELECT seq, body FROM events WHERE run_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq DESC LIMIT $4")
            .await?;
        let mut events = Vec::new();
        let mut used = 0;
        let mut upper = big(to);
        'pages: loop {
            let rows = client.query(&stmt, &[&run_id, &big(from), &upper, &EVENT_CHUNK]).await?;
            let full = rows.len() as i64 == EVENT_CHUNK;
            for row in rows {
                let (seq, body): (i64, &str) = (row.get(0), row.get(1));
                used += body.len();
                if used > max_bytes && !events.is_empty() {
                    break 'pages;
                }
                let name = format!("events/{run_id}/{seq}");
                let event: Event = decode(inner, &name, body)?;
                if event.seq != seq as u64 {
                    return Err(damaged(inner.url(), &name, &format!("it holds event {}", event.seq)).into());
                }
                upper = seq - 1;
                events.push(event);
            }
            if !full || upper < big(from) {
                break;
            }
        }
        events.reverse();
        Ok(events)
    })
}

pub async fn checkpoint(inner: &Inner, run_id: &str, name: &str) -> BatonResult<Option<Run>> {
    retrying!(inner, "read", |conn| {
        let client = conn.client();
        let stmt = client.prepare_cached("SELECT snapshot FROM checkpoints WHERE run_id = $1 AND name = $2").await?;
        match client.query_opt(&stmt, &[&run_id, &name]).await? {
            None => Ok(None),
            Some(row) => Ok(Some(decode_run(inner, client, &format!("checkpoints/{run_id}/{name}"), row.get(0)).await?)),
        }
    })
}

pub async fn template(inner: &Inner, name: &str) -> BatonResult<Option<Template>> {
    retrying!(inner, "read", |conn| {
        let client = conn.client();
        let stmt = client.prepare_cached("SELECT body FROM templates WHERE name = $1").await?;
        match client.query_opt(&stmt, &[&name]).await? {
            None => Ok(None),
            Some(row) => Ok(Some(decode(inner, &format!("templates/{name}"), row.get(0))?)),
        }
    })
}

pub async fn templates(inner: &Inner) -> BatonResult<Vec<Template>> {
    retrying!(inner, "read", |conn| {
        let client = conn.client();
        let stmt = client.prepare_cached("SELECT name, body FROM templates ORDER BY name").await?;
        let mut templates = Vec::new();
        for row in client.query(&stmt, &[]).await? {
            let name: &str = row.get(0);
            templates.push(decode(inner, &format!("templates/{name}"), row.get(1))?);
        }
        Ok(templates)
    })
}

/// The statuses a filter admits.
fn statuses(filter: StatusFilter) -> Vec<RunStatus> {
    [RunStatus::Active, RunStatus::AwaitingHuman, RunStatus::Completed, RunStatus::Failed, RunStatus::Cancelled]
        .into_iter()
        .filter(|s| filter.matches(*s))
        .collect()
}

/// A cursor: the listing position (time, run id) of the last entry of a page, in hex.
fn cursor_of(summary: &RunSummary) -> String {
    let mut bytes = summary.updated_at.millis().to_be_bytes().to_vec();
    bytes.extend_from_slice(summary.run_id.as_bytes());
    record::hex(&bytes)
}

fn parse_cursor(cursor: &str) -> BatonResult<(i64, String)> {
    let bad = || {
        BatonError::invalid(
            "cursor",
            "this cursor was not returned by a listing",
            "Pass the `next_cursor` of the previous page, or omit it.",
        )
    };
    if !cursor.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> =
        (0..cursor.len()).step_by(2).map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok()).collect::<Option<_>>().ok_or_else(bad)?;
    let ms = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).ok_or_else(bad)?;
    let id = String::from_utf8(bytes[8..].to_vec()).map_err(|_| bad())?;
    Ok((big(ms), id))
}

/// One page of runs matching `query`, newest change first (ties: run id ascending), and
/// how many match in all. Each status is read from `runs_by_status_time` in order and the
/// ranges merged (UNION ALL of ordered, limited branches becomes a merge append), so a
/// page costs its own rows; the total is an index-only count.
pub async fn list(inner: &Inner, query: &RunQuery) -> BatonResult<RunPage> {
    let after = query.cursor.as_deref().map(parse_cursor).transpose()?;
    let statuses = statuses(query.status);
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    let limit = query.limit.min(100_000) as i64;
    // Parameters: $1 the limit (the statuses when counting), then the filters that are
    // set, in this order, then the cursor (paging only).
    let mut n = 1;
    let mut param = || {
        n += 1;
        format!("${n}")
    };
    let mut filters = String::new();
    if query.template.is_some() {
        filters.push_str(&format!(" AND template_name = {}", param()));
    }
    if query.workspace.is_some() {
        filters.push_str(&format!(" AND workspace = {}", param()));
    }
    let count_filters = filters.clone();
    if after.is_some() {
        let (ms, id) = (param(), param());
        filters.push_str(&format!(" AND (updated_ms < {ms} OR (updated_ms = {ms} AND run_id > {id}))"));
    }
    let branches: Vec<String> = names
        .iter()
        .map(|status| {
            format!(
                "(SELECT summary, updated_ms, run_id FROM runs WHERE status = '{status}'{filters} ORDER BY updated_ms DESC, run_id LIMIT $1::bigint + 1)"
            )
        })
        .collect();
    let page_sql =
        format!("SELECT summary FROM ({}) page ORDER BY updated_ms DESC, run_id LIMIT $1::bigint + 1", branches.join(" UNION ALL "));
    let count_sql = format!("SELECT count(*) FROM runs WHERE status = ANY($1::text[]){count_filters}");
    let template = query.template.clone().unwrap_or_default();
    let workspace = query.workspace.clone().unwrap_or_default();
    let (cursor_ms, cursor_id) = after.clone().unwrap_or_default();
    retrying!(inner, "read", |conn| {
        let client = conn.client();
        let mut page_params: Vec<&(dyn ToSql + Sync)> = vec![&limit];
        let mut count_params: Vec<&(dyn ToSql + Sync)> = vec![&names];
        if query.template.is_some() {
            page_params.push(&template);
            count_params.push(&template);
        }
        if query.workspace.is_some() {
            page_params.push(&workspace);
            count_params.push(&workspace);
        }
        if after.is_some() {
            page_params.push(&cursor_ms);
            page_params.push(&cursor_id);
        }
        let count_stmt = client.prepare_cached(&count_sql).await?;
        let total: i64 = client.query_one(&count_stmt, &count_params).await?.get(0);
        let mut runs = Vec::new();
        if limit > 0 && !names.is_empty() {
            let page_stmt = client.prepare_cached(&page_sql).await?;
            for row in client.query(&page_stmt, &page_params).await? {
                runs.push(decode::<RunSummary>(inner, "runs/summary", row.get(0))?);
            }
        }
        let more = runs.len() as i64 > limit;
        runs.truncate(limit as usize);
        let next_cursor = if more { runs.last().map(cursor_of) } else { None };
        Ok(RunPage { runs, total: total as usize, next_cursor })
    })
}
