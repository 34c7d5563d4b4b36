//! Key layout of the sled trees. Run ids are UUID strings; `/` separates parts and
//! sequence numbers are big-endian so keys sort in history order.

/// Prefix of every key that belongs to `run_id` in a per-run tree.
pub fn run_prefix(run_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(run_id.len() + 1);
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
