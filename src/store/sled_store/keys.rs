//! Key layout of the sled trees. Run ids are UUID strings; `/` separates parts and
//! sequence numbers are big-endian so keys sort in history order. Keys are never
//! encrypted: they hold ids, sequence numbers, statuses and times, not run content.

use crate::engine::RunStatus;
use crate::time::Timestamp;

/// Every tree of the current format, in the order a transaction over all of them uses.
pub const TREES: [&str; 8] = ["runs", "events", "checkpoints", "templates", "bodies", "ops", "index", "meta"];

/// Positions of the trees in [`TREES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TreeId {
    /// run id -> run snapshot (template by reference).
    Runs = 0,
    /// run id / seq -> event.
    Events = 1,
    /// run id / name -> run snapshot saved as a checkpoint.
    Checkpoints = 2,
    /// template name -> template remembered by name.
    Templates = 3,
    /// content hash -> template body that run snapshots refer to.
    Bodies = 4,
    /// run id / slot -> op id of one of the run's last changes (a ring of `RECENT_OPS`).
    Ops = 5,
    /// status / newest-first time / run id -> run summary.
    Index = 6,
    /// store-wide values: format, batch number, counters, database id, encryption check.
    Meta = 7,
}

impl TreeId {
    /// Every tree, in the order of [`TREES`].
    pub const ALL: [TreeId; 8] =
        [TreeId::Runs, TreeId::Events, TreeId::Checkpoints, TreeId::Templates, TreeId::Bodies, TreeId::Ops, TreeId::Index, TreeId::Meta];

    pub fn name(self) -> &'static str {
        TREES[self as usize]
    }
}

/// The tree the first format kept summaries in, dropped by the upgrade.
pub const V0_SUMMARIES: &str = "summaries";

pub const META_FORMAT: &[u8] = b"format";
pub const META_BATCH: &[u8] = b"batch";
pub const META_DB_ID: &[u8] = b"db_id";
pub const META_CRYPTO: &[u8] = b"crypto";

/// Prefix of every key that belongs to `run_id` in a per-run tree.
pub fn run_prefix(run_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(run_id.len() + 9);
    key.extend_from_slice(run_id.as_bytes());
    key.push(b'/');
    key
}

/// Key of event `seq` of `run_id`.
pub fn event_key(run_id: &str, seq: u64) -> Vec<u8> {
    let mut key = run_prefix(run_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Key of checkpoint `name` of `run_id`.
pub fn checkpoint_key(run_id: &str, name: &str) -> Vec<u8> {
    let mut key = run_prefix(run_id);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Key of the op-id ring slot that the change making version `version` uses.
pub fn op_key(run_id: &str, version: u64, ring: usize) -> Vec<u8> {
    let mut key = run_prefix(run_id);
    key.push((version % ring as u64) as u8);
    key
}

/// One byte per status, the first byte of index keys and counter keys.
pub fn status_byte(status: RunStatus) -> u8 {
    match status {
        RunStatus::Active => 1,
        RunStatus::AwaitingHuman => 2,
        RunStatus::Completed => 3,
        RunStatus::Failed => 4,
        RunStatus::Cancelled => 5,
    }
}

/// Width of the time part of an order key: milliseconds as a big-endian u64.
const TIME_WIDTH: usize = 8;

/// Sort key of a listing entry: newest `updated_at` first, then run id ascending. The
/// time is stored inverted (`u64::MAX - ms`), so ascending key order is descending time.
pub fn order_key(updated_at: Timestamp, run_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(TIME_WIDTH + run_id.len());
    key.extend_from_slice(&(u64::MAX - updated_at.millis()).to_be_bytes());
    key.extend_from_slice(run_id.as_bytes());
    key
}

/// Key of a run's entry in the listing index.
pub fn index_key(status: RunStatus, updated_at: Timestamp, run_id: &str) -> Vec<u8> {
    let mut key = vec![status_byte(status)];
    key.extend(order_key(updated_at, run_id));
    key
}

/// The run id at the end of an order key.
pub fn run_id_of_order_key(order: &[u8]) -> &[u8] {
    order.get(TIME_WIDTH..).unwrap_or_default()
}

/// Counter of runs with `status`, and of runs of `template` with `status`.
pub fn count_key(status: RunStatus, template: Option<&str>) -> Vec<u8> {
    let mut key = match template {
        None => b"count/".to_vec(),
        Some(name) => {
            let mut k = b"tcount/".to_vec();
            k.extend_from_slice(name.as_bytes());
            k.push(b'/');
            k
        }
    };
    key.push(status_byte(status));
    key
}

/// A readable form of a record key, for error messages: run ids and names as text,
/// sequence numbers and slots as numbers.
pub fn describe(tree: &str, key: &[u8]) -> String {
    let shown = match key.iter().position(|b| *b == b'/') {
        Some(slash) if tree == "events" && key.len() == slash + 9 => {
            let seq = u64::from_be_bytes(key[slash + 1..].try_into().unwrap_or_default());
            format!("{}/{seq}", String::from_utf8_lossy(&key[..slash]))
        }
        _ if tree == "index" && key.len() > TIME_WIDTH => String::from_utf8_lossy(run_id_of_order_key(&key[1..])).into_owned(),
        _ => String::from_utf8_lossy(key).into_owned(),
    };
    format!("{tree}/{shown}")
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string, if it is one.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}
