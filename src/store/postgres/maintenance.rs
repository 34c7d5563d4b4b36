//! Export, import, verify, backup and delete on PostgreSQL. Export and verify read one
//! consistent snapshot (a REPEATABLE READ, READ ONLY transaction, which takes no locks:
//! sessions keep working); import writes everything in one transaction.

use super::Inner;
use super::commit::{INSERT_BODY, INSERT_RUN, RunRow, UPSERT_CHECKPOINT, UPSERT_TEMPLATE, text};
use super::conn::Conn;
use super::errors::Failure;
use super::read::{decode, decode_run, retrying};
use crate::engine::{Event, Run, Template};
use crate::error::{BatonError, BatonResult, ErrorCode};
use crate::store::export::{Exported, write_header, write_line};
use crate::store::{BackupCopy, BackupReport, RunSummary, VerifyReport, record};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Runs read per statement when walking the whole database.
const PAGE: i64 = 100;
/// Rows written per statement by an import.
const IMPORT_CHUNK: usize = 1000;

/// One run as stored, with its whole history and checkpoints.
struct Stored {
    run: Run,
    events: Vec<(i64, Result<Event, BatonError>)>,
    checkpoints: BTreeMap<String, Result<Run, BatonError>>,
}

/// Begin a read-only snapshot transaction.
async fn snapshot(conn: &Conn) -> Result<(), Failure> {
    conn.set_in_tx(true);
    conn.client().batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    Ok(())
}

/// The next page of stored runs after `after` (in run-id byte order), decoded; a run
/// whose snapshot does not decode is passed to `bad` and skipped.
async fn page(
    inner: &Inner,
    conn: &Conn,
    after: &str,
    mut bad: impl FnMut(&str, BatonError),
) -> Result<(Vec<Stored>, Option<String>), Failure> {
    let client = conn.client();
    let rows = client.query("SELECT run_id, snapshot FROM runs WHERE run_id > $1 ORDER BY run_id LIMIT $2", &[&after, &PAGE]).await?;
    let last = rows.last().map(|r| r.get::<_, String>(0));
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut stored = Vec::new();
    let mut by_id = HashMap::new();
    for row in &rows {
        let id: &str = row.get(0);
        match decode_run(inner, client, &format!("runs/{id}"), row.get(1)).await {
            Ok(run) => {
                by_id.insert(id.to_string(), stored.len());
                stored.push(Stored { run, events: Vec::new(), checkpoints: BTreeMap::new() });
            }
            Err(Failure::Baton(e)) => bad(id, e),
            Err(other) => return Err(other),
        }
    }
    let events = client.query("SELECT run_id, seq, body FROM events WHERE run_id = ANY($1) ORDER BY run_id, seq", &[&ids]).await?;
    for row in &events {
        let (id, seq, body): (&str, i64, &str) = (row.get(0), row.get(1), row.get(2));
        if let Some(i) = by_id.get(id) {
            let event = decode::<Event>(inner, &format!("events/{id}/{seq}"), body).map_err(baton);
            stored[*i].events.push((seq, event));
        }
    }
    let checkpoints =
        client.query("SELECT run_id, name, snapshot FROM checkpoints WHERE run_id = ANY($1) ORDER BY run_id, name", &[&ids]).await?;
    for row in &checkpoints {
        let (id, name): (&str, String) = (row.get(0), row.get(1));
        if let Some(i) = by_id.get(id) {
            let cp = decode_run(inner, client, &format!("checkpoints/{id}/{name}"), row.get(2)).await.map_err(baton);
            stored[*i].checkpoints.insert(name, cp);
        }
    }
    Ok((stored, last))
}

/// A decoding failure as a plain error (driver failures stay failures upstream).
fn baton(failure: Failure) -> BatonError {
    match failure {
        Failure::Baton(e) => e,
        other => BatonError::storage(format!("{other:?}"), "Retry."),
    }
}

/// Every template remembered by name, in name order.
async fn named_templates(inner: &Inner, conn: &Conn) -> Result<Vec<Template>, Failure> {
    let rows = conn.client().query("SELECT name, body FROM templates ORDER BY name", &[]).await?;
    rows.iter().map(|row| decode(inner, &format!("templates/{}", row.get::<_, &str>(0)), row.get(1))).collect()
}

pub async fn export(inner: &Inner, out: &mut (dyn std::io::Write + Send)) -> BatonResult<u64> {
    let io = |e: std::io::Error| BatonError::storage(format!("cannot write the export: {e}"), "Check the output file's disk has room.");
    let mut retry = super::conn::Retry::new(&inner.conns, "read");
    let conn = retry.conn().await?;
    let result: Result<u64, Failure> = async {
        snapshot(&conn).await?;
        write_header(out).map_err(io)?;
        for template in named_templates(inner, &conn).await? {
            write_line(out, &Exported::Template(template)).map_err(io)?;
        }
        let mut count = 0;
        let mut after = String::new();
        loop {
            let mut damaged = None;
            let (page, last) = page(inner, &conn, &after, |_, e| damaged = damaged.take().or(Some(e))).await?;
            if let Some(e) = damaged {
                return Err(e.into());
            }
            for Stored { run, events, checkpoints } in page {
                let events =
                    events.into_iter().filter(|(seq, _)| *seq as u64 <= run.version).map(|(_, e)| e).collect::<Result<Vec<_>, _>>()?;
                let checkpoints = checkpoints
                    .into_iter()
                    .filter(|(name, _)| run.checkpoints.contains(name))
                    .map(|(name, cp)| cp.map(|cp| (name, cp)))
                    .collect::<Result<BTreeMap<_, _>, _>>()?;
                write_line(out, &Exported::Run { run: Box::new(run), events, checkpoints }).map_err(io)?;
                count += 1;
            }
            match last {
                Some(last) => after = last,
                None => break,
            }
        }
        conn.client().batch_execute("COMMIT").await?;
        conn.set_in_tx(false);
        out.flush().map_err(io)?;
        Ok(count)
    }
    .await;
    result.map_err(|f| f.into_error(inner.url(), "read"))
}

/// What an import writes, prepared before the transaction.
struct Planned {
    ids: Vec<String>,
    templates: Vec<(String, String)>,
    bodies: BTreeMap<String, String>,
    runs: Vec<RunRow>,
    events: Vec<(String, i64, String)>,
    checkpoints: Vec<(String, String, String, String)>,
}

fn plan(records: Vec<Exported>) -> BatonResult<Planned> {
    let mut planned = Planned {
        ids: Vec::new(),
        templates: Vec::new(),
        bodies: BTreeMap::new(),
        runs: Vec::new(),
        events: Vec::new(),
        checkpoints: Vec::new(),
    };
    let body_of = |planned: &mut Planned, template: &Template| -> BatonResult<String> {
        let (hash, json) = record::template_hash(template)?;
        planned.bodies.entry(hash.clone()).or_insert_with(|| text(json));
        Ok(hash)
    };
    for record in records {
        match record {
            Exported::Template(template) => planned.templates.push((template.name.clone(), serde_json::to_string(&template)?)),
            Exported::Run { run, events, checkpoints } => {
                let hash = body_of(&mut planned, &run.template)?;
                for event in &events {
                    planned.events.push((run.id.clone(), event.seq as i64, serde_json::to_string(event)?));
                }
                for (name, cp) in &checkpoints {
                    let cp_hash = body_of(&mut planned, &cp.template)?;
                    planned.checkpoints.push((run.id.clone(), name.clone(), cp_hash.clone(), text(record::run_json(cp, &cp_hash)?)));
                }
                planned.ids.push(run.id.clone());
                planned.runs.push(RunRow::of(&run, &hash)?);
            }
        }
    }
    Ok(planned)
}

pub async fn import(inner: &Inner, records: Vec<Exported>, replace: bool) -> BatonResult<u64> {
    let planned = plan(records)?;
    let count = planned.runs.len() as u64;
    retrying!(inner, "write to", |conn| write_import(&conn, &planned, replace).await)?;
    super::notify::notify(inner, "import").await?;
    Ok(count)
}

async fn write_import(conn: &Conn, planned: &Planned, replace: bool) -> Result<(), Failure> {
    let client = conn.client();
    conn.begin().await?;
    let existing: Vec<String> = client
        .query("SELECT run_id FROM runs WHERE run_id = ANY($1) ORDER BY run_id FOR UPDATE", &[&planned.ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(first) = existing.first()
        && !replace
    {
        conn.rollback().await?;
        return Err(Failure::Baton(BatonError::new(
            ErrorCode::Conflict,
            format!("run {first} already exists in this database"),
            "Import into another database, or pass --replace to overwrite the runs that exist.",
        )));
    }
    if !existing.is_empty() {
        client.execute("DELETE FROM runs WHERE run_id = ANY($1)", &[&existing]).await?;
    }
    for (name, json) in &planned.templates {
        client.execute(UPSERT_TEMPLATE, &[name, json]).await?;
    }
    let bodies: Vec<(&String, &String)> = planned.bodies.iter().collect();
    for chunk in bodies.chunks(IMPORT_CHUNK) {
        let (hashes, texts): (Vec<&String>, Vec<&String>) = chunk.iter().copied().unzip();
        client
            .execute(
                &format!(
                    "{} SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (hash) DO NOTHING",
                    INSERT_BODY.split(" VALUES").next().unwrap_or_default()
                ),
                &[&hashes, &texts],
            )
            .await?;
    }
    let empty_ring: Vec<Option<String>> = Vec::new();
    for chunk in planned.runs.chunks(IMPORT_CHUNK) {
        let col = |f: fn(&RunRow) -> String| chunk.iter().map(f).collect::<Vec<String>>();
        let (ids, statuses, names, hashes, snapshots, summaries) = (
            col(|r| r.run_id.clone()),
            col(|r| r.status.to_string()),
            col(|r| r.template_name.clone()),
            col(|r| r.template_hash.clone()),
            col(|r| r.snapshot.clone()),
            col(|r| r.summary.clone()),
        );
        let workspaces: Vec<Option<String>> = chunk.iter().map(|r| r.workspace.clone()).collect();
        let numbers = |f: fn(&RunRow) -> i64| chunk.iter().map(f).collect::<Vec<i64>>();
        let (versions, created, updated) = (numbers(|r| r.version), numbers(|r| r.created_ms), numbers(|r| r.updated_ms));
        let columns = INSERT_RUN.split(" VALUES").next().unwrap_or_default();
        client
            .execute(
                &format!("{columns} SELECT id, v, s, t, w, c, u, h, snap, summ, $11::text[] FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::text[]) AS r(id, v, s, t, w, c, u, h, snap, summ)"),
                &[&ids, &versions, &statuses, &names, &workspaces, &created, &updated, &hashes, &snapshots, &summaries, &empty_ring],
            )
            .await?;
    }
    for chunk in planned.events.chunks(IMPORT_CHUNK) {
        let ids: Vec<&String> = chunk.iter().map(|e| &e.0).collect();
        let seqs: Vec<i64> = chunk.iter().map(|e| e.1).collect();
        let bodies: Vec<&String> = chunk.iter().map(|e| &e.2).collect();
        client
            .execute(
                "INSERT INTO events (run_id, seq, body) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])",
                &[&ids, &seqs, &bodies],
            )
            .await?;
    }
    for (run_id, name, hash, snapshot) in &planned.checkpoints {
        client.execute(UPSERT_CHECKPOINT, &[run_id, name, hash, snapshot]).await?;
    }
    client.batch_execute("COMMIT").await?;
    conn.set_in_tx(false);
    Ok(())
}

pub async fn verify(inner: &Inner) -> BatonResult<VerifyReport> {
    retrying!(inner, "read", |conn| {
        snapshot(&conn).await?;
        let client = conn.client();
        let mut report = VerifyReport::default();
        let templates = client.query("SELECT name, body FROM templates ORDER BY name", &[]).await?;
        for row in &templates {
            report.templates += 1;
            if let Err(Failure::Baton(e)) = decode::<Template>(inner, &format!("templates/{}", row.get::<_, &str>(0)), row.get(1)) {
                report.add_problem(e.message);
            }
        }
        let columns = client
            .query("SELECT run_id, version, status, template_name, workspace, updated_ms, summary, template_hash FROM runs", &[])
            .await?;
        let columns: HashMap<String, tokio_postgres::Row> = columns.into_iter().map(|r| (r.get::<_, String>(0), r)).collect();
        let mut after = String::new();
        loop {
            let mut bad = Vec::new();
            let (page, last) = page(inner, &conn, &after, |id, e| bad.push((id.to_string(), e))).await?;
            report.runs += bad.len() as u64;
            for (_, e) in bad {
                report.add_problem(e.message);
            }
            for stored in page {
                report.runs += 1;
                check_run(&stored, columns.get(&stored.run.id), &mut report);
            }
            match last {
                Some(last) => after = last,
                None => break,
            }
        }
        client.batch_execute("COMMIT").await?;
        conn.set_in_tx(false);
        Ok(report)
    })
}

/// Cross-check one run: its events are dense `1..=version` and end at its last change,
/// its listing columns and summary match it, its checkpoints are there and decode.
fn check_run(stored: &Stored, columns: Option<&tokio_postgres::Row>, report: &mut VerifyReport) {
    let run = &stored.run;
    let id = &run.id;
    report.events += stored.events.len() as u64;
    let dense = stored.events.iter().enumerate().all(|(i, (seq, _))| *seq == i as i64 + 1);
    if !dense || stored.events.len() as u64 != run.version {
        report.add_problem(format!("run {id} is at version {} but has {} events (they must be 1..={0})", run.version, stored.events.len()));
    }
    for (seq, event) in &stored.events {
        match event {
            Ok(event) if event.seq == *seq as u64 => {}
            Ok(event) => report.add_problem(format!("events/{id}/{seq} holds event {}", event.seq)),
            Err(e) => report.add_problem(e.message.clone()),
        }
    }
    if let Some((_, Ok(last))) = stored.events.last()
        && dense
        && last.at != run.updated_at
    {
        report.add_problem(format!("run {id}: its last event is not its last change"));
    }
    for name in &run.checkpoints {
        match stored.checkpoints.get(name) {
            None => report.add_problem(format!("run {id} lists checkpoint {name}, which is missing")),
            Some(Ok(cp)) if cp.id == *id => {}
            Some(Ok(cp)) => report.add_problem(format!("checkpoint {name} of run {id} holds run {}", cp.id)),
            Some(Err(e)) => report.add_problem(e.message.clone()),
        }
    }
    report.checkpoints += run.checkpoints.len() as u64;
    let summary = RunSummary::of(run);
    let listed = columns.is_some_and(|row| {
        let stored_summary: Option<RunSummary> = serde_json::from_str(row.get::<_, &str>(6)).ok();
        row.get::<_, i64>(1) as u64 == run.version
            && row.get::<_, &str>(2) == summary.status.as_str()
            && row.get::<_, &str>(3) == summary.template
            && row.get::<_, Option<String>>(4) == summary.workspace
            && row.get::<_, i64>(5) as u64 == run.updated_at.millis()
            && stored_summary.as_ref() == Some(&summary)
            && record::template_hash(&run.template).is_ok_and(|(hash, _)| hash == row.get::<_, &str>(7))
    });
    if !listed {
        report.add_problem(format!("the listing entry of run {id} does not match the run"));
    }
}

/// A consistent copy: the export of one snapshot, as `baton-export.jsonl` in the new
/// directory `dir` (restore with `baton import`, or `baton migrate` from a sled copy).
/// A server-side backup (pg_dump, base backups) remains the team's real backup.
pub async fn backup(inner: &Inner, dir: &Path) -> BatonResult<BackupReport> {
    let taken = std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if taken {
        return Err(BatonError::invalid(
            "dir",
            format!("{} already exists and is not empty", dir.display()),
            "Give a new (or empty) directory for the backup.",
        ));
    }
    let io = |e: std::io::Error| {
        BatonError::invalid("dir", format!("cannot write the backup in {}: {e}", dir.display()), "Give a directory you can write.")
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join("baton-export.jsonl");
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    let runs = export(inner, &mut out).await?;
    out.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
    Ok(BackupReport { dir: dir.to_path_buf(), records: runs, copy: BackupCopy::Export { file: path } })
}

pub async fn delete_run(inner: &Inner, run_id: &str) -> BatonResult<Option<RunSummary>> {
    retrying!(inner, "write to", |conn| {
        let client = conn.client();
        conn.begin().await?;
        let Some(row) = client.query_opt("SELECT snapshot FROM runs WHERE run_id = $1 FOR UPDATE", &[&run_id]).await? else {
            conn.rollback().await?;
            return Ok(None);
        };
        let run = decode_run(inner, client, &format!("runs/{run_id}"), row.get(0)).await?;
        if !run.status.is_finished() {
            conn.rollback().await?;
            return Err(Failure::Baton(BatonError::invalid_state(
                format!("run {run_id} is {}; only finished runs can be deleted", run.status.as_str()),
                "Cancel it first (`cancel_run` or `baton cancel`), or wait until it completes.",
            )));
        }
        client.execute("DELETE FROM runs WHERE run_id = $1", &[&run_id]).await?;
        client.execute("SELECT pg_notify($1, $2)", &[&inner.channel, &format!("{run_id}:deleted")]).await?;
        client.batch_execute("COMMIT").await?;
        conn.set_in_tx(false);
        Ok(Some(RunSummary::of(&run)))
    })
}
