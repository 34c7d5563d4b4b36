//! Record shapes every store shares, so a run written by one store reads the same in
//! another and `baton migrate` copies records without translating them.
//!
//! A stored run snapshot (current or checkpoint) names its template by content hash
//! instead of carrying it: its JSON starts with `"template_ref":"<hash>"` and the template
//! body is kept once per hash. Templates are most of a snapshot's size and rarely change,
//! so this keeps the record rewritten on every change small.

use crate::engine::{Run, Template};
use crate::error::{BatonError, BatonResult};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// How a stored run snapshot names its template.
pub const TEMPLATE_REF: &str = "template_ref";

/// The content hash a template body is stored under (the first 16 bytes of the SHA-256
/// of its JSON, in hex), and that JSON.
pub fn template_hash(template: &Template) -> BatonResult<(String, Vec<u8>)> {
    let json = serde_json::to_vec(template).map_err(|e| BatonError::internal(format!("cannot encode template: {e}")))?;
    let digest = Sha256::digest(&json);
    Ok((hex(&digest[..16]), json))
}

/// The JSON of a run snapshot with its template replaced by a reference to `template_hash`.
pub fn run_json(run: &Run, template_hash: &str) -> BatonResult<Vec<u8>> {
    let encode_err = |e: serde_json::Error| BatonError::internal(format!("cannot encode run {}: {e}", run.id));
    let Value::Object(fields) = serde_json::to_value(run).map_err(encode_err)? else {
        return Err(BatonError::internal("a run did not encode as an object"));
    };
    let mut record = Map::with_capacity(fields.len());
    record.insert(TEMPLATE_REF.into(), Value::String(template_hash.to_string()));
    record.extend(fields.into_iter().filter(|(k, _)| k != "template"));
    serde_json::to_vec(&record).map_err(encode_err)
}

/// A stored snapshot's parts: the template hash it refers to and the rest of its fields
/// (the JSON after the reference, starting with `,` or `}`). `None` for a snapshot that
/// carries its template inline (the first sled format).
pub fn template_ref(json: &[u8]) -> Result<Option<(String, &[u8])>, &'static str> {
    let prefix = format!("{{\"{TEMPLATE_REF}\":\"");
    let Some(rest) = json.strip_prefix(prefix.as_bytes()) else { return Ok(None) };
    let end = rest.iter().position(|b| *b == b'"').ok_or("its template reference is cut")?;
    Ok(Some((String::from_utf8_lossy(&rest[..end]).into_owned(), &rest[end + 1..])))
}

/// The run a stored snapshot holds, given its template's JSON (as `template_ref` split it).
pub fn splice_run(template_json: &[u8], rest: &[u8]) -> Result<Run, serde_json::Error> {
    let mut spliced = Vec::with_capacity(template_json.len() + rest.len() + 16);
    spliced.extend_from_slice(b"{\"template\":");
    spliced.extend_from_slice(template_json);
    spliced.extend_from_slice(rest);
    serde_json::from_slice(&spliced)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes` in hex: what `baton migrate` compares event by event.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}
