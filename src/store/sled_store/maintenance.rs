//! Looking after a database: `verify` (every record decodes, every run's events are
//! dense `1..=version` and agree with its snapshot, the index and counters agree with the
//! runs), `repair` (accept a damaged database as it is, explicitly), `backup` (a
//! consistent copy made between two batches while readers go on), and `export`/`import`
//! of runs as JSON lines.

use super::batch::{Batch, Bodies, count_into};
use super::integrity::{Record, Witness};
use super::keys::{self, TreeId};
use super::{Db, Options, StoreCore, index, integrity_conf, io_storage, open_sled};
use crate::engine::{Event, Template};
use crate::error::{BatonError, BatonResult, ErrorCode};
pub use crate::store::export::{Exported, read_export};
use crate::store::export::{write_header, write_line};
use crate::store::{BackupCopy, BackupReport, RunSummary, VerifyReport};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Check every record and cross-check runs, events, checkpoints, the index and counters.
pub fn verify(shared: &StoreCore, db: &Db) -> BatonResult<VerifyReport> {
    let codec = &shared.codec;
    let mut report = VerifyReport::default();
    let mut problem = |p: String| crate::store::report::add_problem(&mut report.problems, p);
    let mut runs = BTreeMap::new();
    for entry in db.iter(TreeId::Runs) {
        let (key, bytes) = entry?;
        match shared.decode_run(db, TreeId::Runs.name(), &key, &bytes) {
            Ok(run) if run.id.as_bytes() == key.as_ref() => {
                runs.insert(run.id.clone(), run);
            }
            Ok(run) => problem(format!("runs/{} holds run {}", String::from_utf8_lossy(&key), run.id)),
            Err(e) => problem(e.message),
        }
    }
    let mut events: HashMap<String, Vec<Event>> = HashMap::new();
    let mut event_count = 0;
    for entry in db.iter(TreeId::Events) {
        let (key, bytes) = entry?;
        event_count += 1;
        let Some(slash) = key.iter().position(|b| *b == b'/').filter(|s| key.len() == s + 9) else {
            problem(format!("{} is not an event key", keys::describe("events", &key)));
            continue;
        };
        let run_id = String::from_utf8_lossy(&key[..slash]).into_owned();
        let seq = u64::from_be_bytes(key[slash + 1..].try_into().unwrap_or_default());
        match codec.decode::<Event>(TreeId::Events.name(), &key, &bytes) {
            Ok(event) if event.seq == seq => events.entry(run_id).or_default().push(event),
            Ok(event) => problem(format!("{} holds event {}", keys::describe("events", &key), event.seq)),
            Err(e) => problem(e.message),
        }
    }
    for (run_id, run) in &runs {
        let history = events.remove(run_id).unwrap_or_default();
        let dense = history.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1);
        if !dense || history.len() as u64 != run.version {
            problem(format!("run {run_id} is at version {} but has {} events (they must be 1..={0})", run.version, history.len()));
        } else if history.last().is_some_and(|e| e.at != run.updated_at) {
            problem(format!("run {run_id}: its last event is not its last change"));
        }
        for name in &run.checkpoints {
            match db.get(TreeId::Checkpoints, &keys::checkpoint_key(run_id, name))? {
                None => problem(format!("run {run_id} lists checkpoint {name}, which is missing")),
                Some(bytes) => match shared.decode_run(db, TreeId::Checkpoints.name(), &keys::checkpoint_key(run_id, name), &bytes) {
                    Ok(cp) if cp.id == *run_id => {}
                    Ok(cp) => problem(format!("checkpoint {name} of run {run_id} holds run {}", cp.id)),
                    Err(e) => problem(e.message),
                },
            }
        }
        report.checkpoints += run.checkpoints.len() as u64;
    }
    for run_id in events.keys() {
        problem(format!("events of run {run_id}, which does not exist"));
    }
    let mut counts = HashMap::new();
    let mut indexed = 0;
    for entry in db.iter(TreeId::Index) {
        let (key, bytes) = entry?;
        indexed += 1;
        match codec.decode::<RunSummary>(TreeId::Index.name(), &key, &bytes) {
            Ok(summary) => match runs.get(&summary.run_id) {
                Some(run) if RunSummary::of(run) == summary && index::key_of(&summary) == key.as_ref() => {
                    count_into(&mut counts, &summary, 1)
                }
                _ => problem(format!("the listing entry of run {} does not match the run", summary.run_id)),
            },
            Err(e) => problem(e.message),
        }
    }
    if indexed != runs.len() {
        problem(format!("the listing index has {indexed} entries for {} runs", runs.len()));
    }
    for (key, value) in db.scan_prefix(TreeId::Meta, b"count/").chain(db.scan_prefix(TreeId::Meta, b"tcount/")).flatten() {
        let stored = value.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX);
        if stored != counts.remove(key.as_ref()).unwrap_or(0) as u64 {
            problem(format!("the counter meta/{} is wrong", String::from_utf8_lossy(&key)));
        }
    }
    if counts.values().any(|c| *c != 0) {
        problem("a listing counter is missing".into());
    }
    for entry in db.iter(TreeId::Templates) {
        let (key, bytes) = entry?;
        report.templates += 1;
        if let Err(e) = codec.decode::<Template>(TreeId::Templates.name(), &key, &bytes) {
            problem(e.message);
        }
    }
    report.runs = runs.len() as u64;
    report.events = event_count;
    Ok(report)
}

/// Accept the database in `dir` as it is, with no baton process using it: rewrite a
/// damaged `conf`, rebuild the listing index and counters from the runs, and make the
/// integrity record match what sled recovered. Returns what `verify` finds afterwards.
pub fn repair(dir: &Path, options: &Options) -> BatonResult<VerifyReport> {
    if integrity_conf::check(dir).is_err() {
        integrity_conf::rewrite(dir).map_err(|e| io_storage(dir, "rewrite the configuration file of", &e))?;
    }
    let db = open_sled(dir, options)?;
    let shared = StoreCore {
        dir: dir.to_path_buf(),
        codec: super::codec::Codec::new(dir, options.key.as_ref().map(super::crypto::Cipher::new)),
        options: options.clone(),
        db: std::sync::RwLock::new(None),
        overlay: Default::default(),
        durable_batch: Default::default(),
        changes: tokio::sync::watch::Sender::new(0),
        #[cfg(test)]
        before_sync: std::sync::Mutex::new(None),
    };
    let state = super::upgrade::prepare_with(&shared, &db, true)?;
    let mut writes = Vec::new();
    let mut counts = HashMap::new();
    for entry in db.iter(TreeId::Index) {
        writes.push((TreeId::Index, entry?.0.to_vec(), None));
    }
    for entry in db.scan_prefix(TreeId::Meta, b"count/").chain(db.scan_prefix(TreeId::Meta, b"tcount/")) {
        writes.push((TreeId::Meta, entry?.0.to_vec(), None));
    }
    for entry in db.iter(TreeId::Runs) {
        let (key, bytes) = entry?;
        if let Ok(run) = shared.decode_run(&db, TreeId::Runs.name(), &key, &bytes) {
            let summary = RunSummary::of(&run);
            let index_key = index::key_of(&summary);
            writes.push((TreeId::Index, index_key.clone(), Some(shared.codec.encode(TreeId::Index.name(), &index_key, &summary)?)));
            count_into(&mut counts, &summary, 1);
        }
    }
    for (key, count) in counts {
        writes.push((TreeId::Meta, key, Some((count.max(0) as u64).to_be_bytes().to_vec())));
    }
    super::batch::apply(&db, &writes).map_err(|e| io_storage(dir, "repair", &e))?;
    db.sled.flush()?;
    super::durability::Syncer::open(dir).map_err(|e| io_storage(dir, "sync", &e))?;
    // The old record is evidence of what was acknowledged: kept aside, never overwritten.
    let accepted = Witness { db_id: state.db_id, batch: state.batch };
    let record = super::integrity::path(dir);
    if record.exists() && super::integrity::read(dir).ok().flatten() != Some(accepted) {
        let why = format!("the integrity record replaced by a repair that accepted the database at write batch {}", state.batch);
        super::leftovers::set_aside(dir, &record, &why)?;
    }
    Record::create(dir, accepted)?;
    let report = verify(&shared, &db)?;
    Ok(report)
}

/// Copy every tree, record by record (sealed records stay sealed), into a new database
/// in `target`, with its own integrity record. Runs on the writer thread between batches,
/// so the copy is one consistent state.
pub fn backup(shared: &StoreCore, target: &Path, db_id: [u8; 16], batch: u64) -> BatonResult<BackupReport> {
    let taken = std::fs::read_dir(target).map(|mut d| d.next().is_some()).unwrap_or(false);
    if taken {
        return Err(BatonError::invalid(
            "dir",
            format!("{} already exists and is not empty", target.display()),
            "Give a new (or empty) directory for the backup.",
        ));
    }
    std::fs::create_dir_all(target).map_err(|e| io_storage(target, "create the backup directory", &e))?;
    let copy = open_sled(target, &shared.options)?;
    let mut records = 0;
    shared.with_db(|db| {
        for (from, to) in keys::TreeId::ALL.iter().zip(&copy.trees) {
            let mut batch = sled::Batch::default();
            for entry in db.iter(*from) {
                let (key, value) = entry?;
                batch.insert(key, value);
                records += 1;
            }
            to.apply_batch(batch)?;
        }
        Ok(())
    })?;
    copy.sled.flush()?;
    drop(copy);
    Record::create(target, Witness { db_id, batch })?;
    super::durability::Syncer::open(target).map_err(|e| io_storage(target, "sync the backup", &e))?;
    Ok(BackupReport { dir: target.to_path_buf(), records, copy: BackupCopy::Database { batch } })
}

/// Write every template and run (with its events and checkpoints) as JSON lines; returns
/// the number of runs. Each run is exported as durable, from one snapshot.
pub fn export(shared: &StoreCore, out: &mut (dyn std::io::Write + Send)) -> BatonResult<u64> {
    let io = |e: std::io::Error| BatonError::storage(format!("cannot write the export: {e}"), "Check the output file's disk has room.");
    write_header(out).map_err(io)?;
    for template in shared.templates()? {
        write_line(out, &Exported::Template(template)).map_err(io)?;
    }
    let ids: Vec<String> =
        shared.with_db(|db| db.iter(TreeId::Runs).map(|e| Ok(String::from_utf8_lossy(&e?.0).into_owned())).collect::<BatonResult<_>>())?;
    let mut count = 0;
    for id in ids {
        let Some(run) = shared.run(&id)? else { continue };
        let events = shared.events(&id, 1, run.version, usize::MAX)?;
        let mut checkpoints = BTreeMap::new();
        for name in &run.checkpoints {
            if let Some(cp) = shared.checkpoint(&id, name)? {
                checkpoints.insert(name.clone(), cp);
            }
        }
        write_line(out, &Exported::Run { run: Box::new(run), events, checkpoints }).map_err(io)?;
        count += 1;
    }
    out.flush().map_err(io)?;
    Ok(count)
}

/// Plan the writes of an import into `batch`; refuses (writing nothing) a run id that
/// exists unless `replace`. Returns the number of runs.
pub(super) fn plan_import(
    shared: &StoreCore,
    bodies: &mut Bodies,
    db: &Db,
    batch: &mut Batch,
    records: Vec<Exported>,
    replace: bool,
) -> BatonResult<u64> {
    let codec = &shared.codec;
    let mut runs = 0;
    for record in &records {
        if let Exported::Run { run, .. } = record
            && !replace
            && db.contains_key(TreeId::Runs, run.id.as_bytes())?
        {
            return Err(BatonError::new(
                ErrorCode::Conflict,
                format!("run {} already exists in this database", run.id),
                "Import into another database, or pass --replace to overwrite the runs that exist.",
            ));
        }
    }
    for record in records {
        match record {
            Exported::Template(template) => {
                let name = template.name.clone();
                let durable = shared.durable_template(db, &name)?;
                batch.overlay.templates.entry(name.clone()).or_insert(durable);
                batch.writes.push((
                    TreeId::Templates,
                    name.as_bytes().to_vec(),
                    Some(codec.encode(TreeId::Templates.name(), name.as_bytes(), &template)?),
                ));
            }
            Exported::Run { run, events, checkpoints } => {
                let id = run.id.clone();
                let existing = shared.stored_run(db, &id)?;
                if let Some(old) = &existing {
                    super::batch::remove_history(db, batch, &id)?;
                    let summary = RunSummary::of(old);
                    batch.writes.push((TreeId::Index, index::key_of(&summary), None));
                    count_into(&mut batch.counts, &summary, -1);
                }
                let hash = bodies.body_in(shared, db, batch, &run.template)?;
                batch.writes.push((
                    TreeId::Runs,
                    id.as_bytes().to_vec(),
                    Some(codec.encode_run(TreeId::Runs.name(), id.as_bytes(), &run, &hash)?),
                ));
                for event in &events {
                    let key = keys::event_key(&id, event.seq);
                    batch.writes.push((TreeId::Events, key.clone(), Some(codec.encode(TreeId::Events.name(), &key, event)?)));
                }
                for (name, cp) in &checkpoints {
                    let cp_hash = bodies.body_in(shared, db, batch, &cp.template)?;
                    let key = keys::checkpoint_key(&id, name);
                    batch.writes.push((
                        TreeId::Checkpoints,
                        key.clone(),
                        Some(codec.encode_run(TreeId::Checkpoints.name(), &key, cp, &cp_hash)?),
                    ));
                }
                let summary = RunSummary::of(&run);
                let key = index::key_of(&summary);
                batch.writes.push((TreeId::Index, key.clone(), Some(codec.encode(TreeId::Index.name(), &key, &summary)?)));
                count_into(&mut batch.counts, &summary, 1);
                let before = existing.as_ref().map(RunSummary::of);
                batch.overlay.summaries.insert(id.clone(), (before, Some(summary)));
                batch.overlay.runs.insert(id, existing);
                runs += 1;
            }
        }
    }
    Ok(runs)
}
