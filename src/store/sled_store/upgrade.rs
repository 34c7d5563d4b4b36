//! Opening a database: a new one is initialised, one of the first format (untagged JSON
//! records, the template inside every snapshot, op ids inside the run, summaries in their
//! own tree) is upgraded, and the integrity record and encryption are checked.
//!
//! The upgrade runs once, on open, in ONE sled transaction that ends by writing the format
//! marker, so a crash midway leaves the first format and the next open starts over. It
//! rewrites what the new layout needs: run snapshots (template by reference, op ids into
//! their ring), the listing index and its counters, checkpoints and named templates.
//! Events are immutable and keep their first-format encoding: the reader recognises an
//! untagged record by its leading `{`, so they are upgraded lazily, i.e. never rewritten.

use super::batch::count_into;
use super::codec::template_hash;
use super::integrity::{self, Record, Witness};
use super::keys::{self, TreeId};
use super::{Db, StoreCore, index, io_storage};
use crate::engine::Run;
use crate::error::{BatonError, BatonResult};
use crate::store::{RECENT_OPS, RunSummary};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use std::collections::HashMap;
use std::path::Path;

/// The current format. Format 2 lists an active run one of whose tasks waits for a human
/// as awaiting a human (see `RunSummary::status`); format 1 differs from it only there.
pub const FORMAT: &[u8] = b"2";
/// The format before: the same layout, with summaries that ignored the tasks' questions.
const FORMAT_1: &[u8] = b"1";
/// The text sealed as the encryption check record.
const CRYPTO_CHECK: &[u8] = b"\"baton\"";

/// What the writer starts from.
pub struct State {
    pub db_id: [u8; 16],
    pub batch: u64,
}

/// Initialise or upgrade the database if needed; check the key matches.
pub fn prepare(shared: &StoreCore, db: &Db) -> BatonResult<State> {
    prepare_with(shared, db, false)
}

/// [`prepare`]; with `accept_loss` (`baton verify --repair`), a log that recovered nothing
/// of a database its integrity record witnessed is accepted as a new, empty database with
/// the same identity, the old record set aside as evidence.
pub fn prepare_with(shared: &StoreCore, db: &Db, accept_loss: bool) -> BatonResult<State> {
    let meta = db.tree(TreeId::Meta);
    let dir = &shared.dir;
    if meta.get(keys::META_FORMAT)?.is_some_and(|f| f.as_ref() == FORMAT_1) {
        relist_open_runs(shared, db)?;
    }
    match meta.get(keys::META_FORMAT)? {
        Some(format) if format.as_ref() == FORMAT => {
            check_encryption(shared, db)?;
            // A crash right after an upgrade may leave the first format's summaries.
            db.sled.drop_tree(keys::V0_SUMMARIES)?;
            let db_id = meta.get(keys::META_DB_ID)?.and_then(|v| v.as_ref().try_into().ok()).ok_or_else(|| {
                BatonError::storage(
                    format!("the baton database at {} has lost its identity record (meta/db_id)", dir.display()),
                    "Restore the database directory from a backup.",
                )
            })?;
            Ok(State { db_id, batch: index::read_counter(db, keys::META_BATCH)? })
        }
        Some(other) => Err(BatonError::storage(
            format!(
                "the baton database at {} has storage format {}, which this baton does not know",
                dir.display(),
                String::from_utf8_lossy(&other)
            ),
            "Use the newer baton that wrote it, or export the runs with it (`baton export`) and import them here.",
        )),
        None => {
            let first_format =
                db.sled.tree_names().iter().any(|n| n.as_ref() == keys::V0_SUMMARIES.as_bytes()) || !db.tree(TreeId::Runs).is_empty();
            if first_format && shared.codec.encrypted() {
                return Err(not_encrypted(dir));
            }
            // The integrity record is the database's identity. One that witnessed any batch
            // means this directory held a database sled no longer recovers (an emptied or
            // garbled log opens as an empty one): refuse, and leave the record as evidence.
            // One at batch 0 is this database's own, from a first open that stopped before
            // its format marker was written: keep its id.
            let existing = match integrity::read(dir) {
                Ok(existing) => existing,
                Err(e) if !accept_loss => return Err(e),
                Err(_) => {
                    let why = "a damaged integrity record beside a log that recovered nothing; replaced by a repair";
                    super::leftovers::set_aside(dir, &integrity::path(dir), why)?;
                    None
                }
            };
            let db_id = match existing {
                Some(witness) if witness.batch > 0 && !accept_loss => return Err(integrity::short_of(dir, 0, witness.batch)),
                Some(witness) if witness.batch > 0 => {
                    let why = format!(
                        "the integrity record of a database that had acknowledged write batch {}, of which the log recovered nothing; accepted as empty by a repair",
                        witness.batch
                    );
                    super::leftovers::set_aside(dir, &integrity::path(dir), &why)?;
                    Record::create(dir, Witness { db_id: witness.db_id, batch: 0 })?;
                    witness.db_id
                }
                Some(witness) => witness.db_id,
                None => {
                    let mut db_id = [0u8; 16];
                    getrandom::fill(&mut db_id).map_err(|e| BatonError::internal(format!("no randomness: {e}")))?;
                    // The witness exists before the format marker; batch 0 never claims too much.
                    Record::create(dir, Witness { db_id, batch: 0 })?;
                    db_id
                }
            };
            let mut writes: Vec<(TreeId, Vec<u8>, Vec<u8>)> = Vec::new();
            if first_format {
                upgrade_first_format(shared, db, &mut writes)?;
            }
            if shared.codec.encrypted() {
                writes.push((TreeId::Meta, keys::META_CRYPTO.to_vec(), shared.codec.encode_json("meta", keys::META_CRYPTO, CRYPTO_CHECK)?));
            }
            let batch: u64 = 1;
            writes.push((TreeId::Meta, keys::META_DB_ID.to_vec(), db_id.to_vec()));
            writes.push((TreeId::Meta, keys::META_BATCH.to_vec(), batch.to_be_bytes().to_vec()));
            writes.push((TreeId::Meta, keys::META_FORMAT.to_vec(), FORMAT.to_vec()));
            db.trees
                .as_slice()
                .transaction(|trees| {
                    for (tree, key, value) in &writes {
                        trees[*tree as usize].insert(key.as_slice(), value.as_slice())?;
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(|e| io_storage(dir, "initialise", &format!("{e:?}")))?;
            db.sled.flush()?;
            db.sled.drop_tree(keys::V0_SUMMARIES)?;
            db.sled.flush()?;
            if first_format {
                tracing::info!("upgraded the baton database at {} to storage format 1", dir.display());
            }
            Ok(State { db_id, batch })
        }
    }
}

/// Format 1 -> 2: rewrite the listing entries (and counters) of the open runs whose
/// summary changed, and the format marker, in one transaction: a crash midway leaves
/// format 1, and the next open starts over. Finished runs list as before.
fn relist_open_runs(shared: &StoreCore, db: &Db) -> BatonResult<()> {
    let codec = &shared.codec;
    let mut removes: Vec<Vec<u8>> = Vec::new();
    let mut writes: Vec<(TreeId, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut counts = HashMap::new();
    for status in [crate::engine::RunStatus::Active, crate::engine::RunStatus::AwaitingHuman] {
        for entry in db.tree(TreeId::Index).scan_prefix([keys::status_byte(status)]) {
            let (key, bytes) = entry?;
            let listed: RunSummary = codec.decode(TreeId::Index.name(), &key, &bytes)?;
            let Some(stored) = db.tree(TreeId::Runs).get(listed.run_id.as_bytes())? else { continue };
            let run = shared.decode_run(db, TreeId::Runs.name(), listed.run_id.as_bytes(), &stored)?;
            let summary = RunSummary::of(&run);
            if summary == listed {
                continue;
            }
            let new_key = index::key_of(&summary);
            removes.push(key.to_vec());
            writes.push((TreeId::Index, new_key.clone(), codec.encode(TreeId::Index.name(), &new_key, &summary)?));
            count_into(&mut counts, &listed, -1);
            count_into(&mut counts, &summary, 1);
        }
    }
    for (key, delta) in counts.into_iter().filter(|(_, d)| *d != 0) {
        let count = index::read_counter(db, &key)? as i64 + delta;
        writes.push((TreeId::Meta, key, (count.max(0) as u64).to_be_bytes().to_vec()));
    }
    writes.push((TreeId::Meta, keys::META_FORMAT.to_vec(), FORMAT.to_vec()));
    let relisted = removes.len();
    db.trees
        .as_slice()
        .transaction(|trees| {
            for key in &removes {
                trees[TreeId::Index as usize].remove(key.as_slice())?;
            }
            for (tree, key, value) in &writes {
                trees[*tree as usize].insert(key.as_slice(), value.as_slice())?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        })
        .map_err(|e| io_storage(&shared.dir, "upgrade", &format!("{e:?}")))?;
    db.sled.flush()?;
    tracing::info!("upgraded the baton database at {} to storage format 2 ({relisted} runs listed anew)", shared.dir.display());
    Ok(())
}

/// Rewrite the first format's runs, checkpoints and templates, and build the index.
fn upgrade_first_format(shared: &StoreCore, db: &Db, writes: &mut Vec<(TreeId, Vec<u8>, Vec<u8>)>) -> BatonResult<()> {
    let codec = &shared.codec;
    let mut bodies: HashMap<String, ()> = HashMap::new();
    let mut counts = HashMap::new();
    let mut body_of = |run: &Run, writes: &mut Vec<(TreeId, Vec<u8>, Vec<u8>)>| -> BatonResult<String> {
        let (hash, json) = template_hash(&run.template)?;
        if bodies.insert(hash.clone(), ()).is_none() {
            writes.push((TreeId::Bodies, hash.as_bytes().to_vec(), codec.encode_json(TreeId::Bodies.name(), hash.as_bytes(), &json)?));
        }
        Ok(hash)
    };
    for entry in db.tree(TreeId::Runs).iter() {
        let (key, bytes) = entry?;
        let run = shared.decode_run(db, TreeId::Runs.name(), &key, &bytes)?;
        let hash = body_of(&run, writes)?;
        writes.push((TreeId::Runs, key.to_vec(), codec.encode_run(TreeId::Runs.name(), &key, &run, &hash)?));
        // The first format kept the ids of the last changes in the run, oldest first; the
        // last one made the current version.
        let json = codec.json(TreeId::Runs.name(), &key, &bytes)?;
        let old: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
        let ops: Vec<String> = old["recent_ops"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
        for (back, op) in ops.iter().rev().take(RECENT_OPS.min(run.version as usize)).enumerate() {
            writes.push((TreeId::Ops, keys::op_key(&run.id, run.version - back as u64, RECENT_OPS), op.as_bytes().to_vec()));
        }
        let summary = RunSummary::of(&run);
        let index_key = index::key_of(&summary);
        writes.push((TreeId::Index, index_key.clone(), codec.encode(TreeId::Index.name(), &index_key, &summary)?));
        count_into(&mut counts, &summary, 1);
    }
    for entry in db.tree(TreeId::Checkpoints).iter() {
        let (key, bytes) = entry?;
        let run = shared.decode_run(db, TreeId::Checkpoints.name(), &key, &bytes)?;
        let hash = body_of(&run, writes)?;
        writes.push((TreeId::Checkpoints, key.to_vec(), codec.encode_run(TreeId::Checkpoints.name(), &key, &run, &hash)?));
    }
    for entry in db.tree(TreeId::Templates).iter() {
        let (key, bytes) = entry?;
        let json = codec.json(TreeId::Templates.name(), &key, &bytes)?.into_owned();
        writes.push((TreeId::Templates, key.to_vec(), codec.encode_json(TreeId::Templates.name(), &key, &json)?));
    }
    for (key, count) in counts {
        writes.push((TreeId::Meta, key, (count.max(0) as u64).to_be_bytes().to_vec()));
    }
    Ok(())
}

/// A database is encrypted (it has a sealed check record) or not, for life; refuse to
/// open it the other way.
fn check_encryption(shared: &StoreCore, db: &Db) -> BatonResult<()> {
    let dir = &shared.dir;
    match (db.tree(TreeId::Meta).get(keys::META_CRYPTO)?, shared.codec.encrypted()) {
        (None, false) => Ok(()),
        (None, true) => Err(not_encrypted(dir)),
        (Some(_), false) => Err(BatonError::storage(
            format!("the baton database at {} is encrypted, and no key was given", dir.display()),
            "Put its key file back as `db.key` beside the database directory, or point BATON_KEY_FILE at it (the file `baton install --encrypt` created); without it the runs cannot be read.",
        )),
        (Some(check), true) => match shared.codec.json("meta", keys::META_CRYPTO, &check) {
            Ok(text) if text.as_ref() == CRYPTO_CHECK => Ok(()),
            _ => Err(BatonError::storage(
                format!("the key given does not open the encrypted baton database at {}", dir.display()),
                "Use the key file that was created with this database.",
            )),
        },
    }
}

fn not_encrypted(dir: &Path) -> BatonError {
    BatonError::storage(
        format!("the baton database at {} is not encrypted, but a key was given", dir.display()),
        "Open it without a key; to encrypt existing runs, `baton export` them and `baton import` them into a new encrypted database.",
    )
}

/// Compare the integrity record with what sled recovered; open the record for updates.
pub fn check_integrity(dir: &Path, state: &State) -> BatonResult<Record> {
    match integrity::read(dir)? {
        None => Err(BatonError::storage(
            format!(
                "the integrity record {} is missing, so baton cannot tell whether the database beside it is complete",
                integrity::path(dir).display()
            ),
            "Restore the whole database directory from a backup, or run `baton verify --repair` to check the database and accept it as it is.",
        )),
        Some(witness) if witness.db_id != state.db_id => Err(BatonError::storage(
            format!("the integrity record {} belongs to another database than the one beside it", integrity::path(dir).display()),
            "Restore the whole database directory (all its files together) from a backup, or run `baton verify --repair` to accept the database as it is.",
        )),
        Some(witness) if witness.batch > state.batch => Err(integrity::short_of(dir, state.batch, witness.batch)),
        Some(_) => Record::open(dir),
    }
}
