//! Listing runs without loading them. The `index` tree keys each run's summary by
//! (status, newest-first `updated_at`, run id), so a listing reads the ranges of the
//! statuses it asks for, merged in order, and stops after `limit` entries (a template
//! filter skips entries of other templates). Counters per status, and per template and
//! status, live in `meta` and change in the same transaction as the index, so `total`
//! costs at most five reads.
//!
//! Paging: the cursor is the order key (time and run id) of the last entry returned, in
//! hex; the next page starts after it. A run changed between two pages moves to the
//! front, so it may be missed or shown twice, as with any cursor over live data.

use super::keys::{self, TreeId};
use super::{Db, StoreCore};
use crate::engine::RunStatus;
use crate::error::{BatonError, BatonResult};
use crate::store::{RunPage, RunQuery, RunSummary, StatusFilter};
use std::ops::Bound;

const ALL: [RunStatus; 5] = [RunStatus::Active, RunStatus::AwaitingHuman, RunStatus::Completed, RunStatus::Failed, RunStatus::Cancelled];

/// The statuses a filter admits.
pub fn statuses(filter: StatusFilter) -> Vec<RunStatus> {
    ALL.into_iter().filter(|s| filter.matches(*s)).collect()
}

/// The index entry of a summary: key and (unencoded) value.
pub fn key_of(summary: &RunSummary) -> Vec<u8> {
    keys::index_key(summary.status, summary.updated_at, &summary.run_id)
}

fn matches(query: &RunQuery, summary: &RunSummary) -> bool {
    query.matches(summary)
}

/// One page of runs matching `query`, newest change first.
pub fn list(shared: &StoreCore, query: &RunQuery) -> BatonResult<RunPage> {
    let after = match &query.cursor {
        None => None,
        Some(cursor) => Some(keys::unhex(cursor).ok_or_else(|| {
            BatonError::invalid(
                "cursor",
                "this cursor was not returned by a listing",
                "Pass the `next_cursor` of the previous page, or omit it.",
            )
        })?),
    };
    shared.with_db(|db| {
        let found = scan(shared, db, query, after.as_deref())?;
        let counted = count(shared, db, query)?;
        Ok(page(shared, query, after.as_deref(), found, counted))
    })
}

/// Runs of the batch in flight show as they were before it (see `StoreCore::run`).
fn page(shared: &StoreCore, query: &RunQuery, after: Option<&[u8]>, mut found: Vec<(Vec<u8>, RunSummary)>, counted: u64) -> RunPage {
    let overlay = shared.overlay();
    let mut total = counted as i64;
    for (before, written) in overlay.summaries.values() {
        total -= written.as_ref().is_some_and(|s| matches(query, s)) as i64;
        total += before.as_ref().is_some_and(|s| matches(query, s)) as i64;
    }
    found.retain(|(_, s)| !overlay.summaries.contains_key(&s.run_id));
    for before in overlay.summaries.values().filter_map(|(b, _)| b.as_ref()) {
        let order = keys::order_key(before.updated_at, &before.run_id);
        if matches(query, before) && after.is_none_or(|a| order.as_slice() > a) {
            found.push((order, before.clone()));
        }
    }
    drop(overlay);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let more = found.len() > query.limit;
    found.truncate(query.limit);
    let next_cursor = if more { found.last().map(|(order, _)| keys::hex(order)) } else { None };
    RunPage { runs: found.into_iter().map(|(_, s)| s).collect(), total: total.max(0) as usize, next_cursor }
}

/// Up to `limit + 1` index entries matching `query` after `after`, in order.
fn scan(shared: &StoreCore, db: &Db, query: &RunQuery, after: Option<&[u8]>) -> BatonResult<Vec<(Vec<u8>, RunSummary)>> {
    let mut ranges: Vec<_> = statuses(query.status)
        .into_iter()
        .map(|status| {
            let prefix = vec![keys::status_byte(status)];
            let end = vec![keys::status_byte(status) + 1];
            let start = match after {
                // Just past the cursor: the cursor with a zero byte appended.
                Some(after) => [prefix.as_slice(), after, &[0]].concat(),
                None => prefix,
            };
            db.range(TreeId::Index, Bound::Included(&start), Bound::Excluded(&end)).peekable()
        })
        .collect();
    let mut found = Vec::new();
    while found.len() <= query.limit {
        // The range whose next key is smallest (keys past the status byte compare in
        // listing order).
        let mut best: Option<(usize, Vec<u8>)> = None;
        for (i, range) in ranges.iter_mut().enumerate() {
            match range.peek() {
                Some(Ok((key, _))) if best.as_ref().is_none_or(|(_, k)| key[1..] < k[..]) => {
                    best = Some((i, key[1..].to_vec()));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => {
                    best = Some((i, Vec::new()));
                    break;
                }
                None => {}
            }
        }
        let Some((i, order)) = best else { break };
        let (key, bytes) = ranges[i].next().expect("peeked")?;
        let summary: RunSummary = shared.codec.decode(TreeId::Index.name(), &key, &bytes)?;
        if matches(query, &summary) {
            found.push((order, summary));
        }
    }
    Ok(found)
}

/// How many runs match, from the counters (counting entries when a workspace is asked
/// for, which no counter tracks; unfinished runs, the usual case, are few).
fn count(shared: &StoreCore, db: &Db, query: &RunQuery) -> BatonResult<u64> {
    if query.workspace.is_some() {
        let mut total = 0;
        for status in statuses(query.status) {
            for entry in db.scan_prefix(TreeId::Index, &[keys::status_byte(status)]) {
                let (key, bytes) = entry?;
                let summary: RunSummary = shared.codec.decode(TreeId::Index.name(), &key, &bytes)?;
                total += u64::from(matches(query, &summary));
            }
        }
        return Ok(total);
    }
    let mut total = 0;
    for status in statuses(query.status) {
        total += read_counter(db, &keys::count_key(status, query.template.as_deref()))?;
    }
    Ok(total)
}

pub fn read_counter(db: &Db, key: &[u8]) -> BatonResult<u64> {
    Ok(db.get(TreeId::Meta, key)?.and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)).unwrap_or(0))
}
