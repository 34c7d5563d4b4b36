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

/// The JSON of a run snapshot with its template replaced by a reference to `template_hash`:
/// `{"template_ref":"<hash>",` then the run's other fields in order. Written on every
/// change, so the run is serialized once and its `template` member cut out of the bytes;
/// the field-by-field way below is the reference (and the fallback).
pub fn run_json(run: &Run, template_hash: &str) -> BatonResult<Vec<u8>> {
    let whole = serde_json::to_vec(run).map_err(|e| BatonError::internal(format!("cannot encode run {}: {e}", run.id)))?;
    match without_template(&whole, template_hash) {
        Some(record) => Ok(record),
        None => run_json_by_fields(run, template_hash),
    }
}

/// `whole` (a serialized run) with its `"template":{...}` member replaced by the reference.
/// The member is found by its key right after a comma: inside a JSON string a quote is
/// always escaped, so that byte sequence only occurs as a key, and the fields before it
/// (`id`, `title`, `goal`) are strings.
fn without_template(whole: &[u8], template_hash: &str) -> Option<Vec<u8>> {
    const KEY: &[u8] = b",\"template\":";
    let start = whole.windows(KEY.len()).position(|w| w == KEY)?;
    let value = start + KEY.len();
    let end = value + object_len(&whole[value..])?;
    let mut record = Vec::with_capacity(whole.len() - (end - start) + template_hash.len() + 20);
    record.extend_from_slice(b"{\"");
    record.extend_from_slice(TEMPLATE_REF.as_bytes());
    record.extend_from_slice(b"\":\"");
    record.extend_from_slice(template_hash.as_bytes());
    record.extend_from_slice(b"\",");
    record.extend_from_slice(&whole[1..start]);
    record.extend_from_slice(&whole[end..]);
    Some(record)
}

/// The length of the JSON object at the start of `bytes`, if it starts with one.
fn object_len(bytes: &[u8]) -> Option<usize> {
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &byte) in bytes.iter().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// [`run_json`] field by field, through a JSON value.
fn run_json_by_fields(run: &Run, template_hash: &str) -> BatonResult<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Actor, Change, NewRun, builtin_template};
    use crate::time::Timestamp;

    fn run(template: &str, goal: &str) -> Run {
        let new = NewRun {
            id: "r-1".into(),
            template: builtin_template(template).unwrap(),
            goal: goal.into(),
            title: "a \"quoted\" \\ title, \"template\":{".into(),
            context: serde_json::Map::new(),
            workspace: None,
            max_agents: 4,
        };
        Run::start(new, &Actor::default(), Timestamp(1_795_000_000_000)).0
    }

    #[test]
    fn the_template_is_cut_from_the_bytes_exactly_as_field_by_field() {
        let tricky = r#"goal with ,"template":{"steps":[]} inside, braces }{ ][, escapes \" \\ and é ✓"#;
        let mut advanced = run("feature", tricky);
        let report = Change::Advance {
            code: None,
            expected_version: 1,
            outcome: "planned".into(),
            output: "}]\"{\\".repeat(100),
            artifacts: serde_json::from_str(r#"{"plan": {"template": {"nested": ["}", "{"]}}}"#).unwrap(),
            plan: None,
        };
        advanced.apply(&report, &Actor::default(), Timestamp(1_795_000_001_000)).unwrap();
        for sample in [run("feature", "plain"), run("parallel", tricky), run("bugfix", ""), advanced] {
            let fast = without_template(&serde_json::to_vec(&sample).unwrap(), "0123abcd").expect("the template member is found");
            assert_eq!(fast, run_json(&sample, "0123abcd").unwrap());
            assert_eq!(
                String::from_utf8(fast.clone()).unwrap(),
                String::from_utf8(run_json_by_fields(&sample, "0123abcd").unwrap()).unwrap()
            );
            let (hash, rest) = template_ref(&fast).unwrap().unwrap();
            assert_eq!(hash, "0123abcd");
            let template = serde_json::to_vec(&sample.template).unwrap();
            assert_eq!(splice_run(&template, rest).unwrap(), sample, "the record reads back as the run");
        }
        assert_eq!(object_len(br#"{"a":"}\"{","b":[{}]} tail"#), Some(21));
        assert_eq!(object_len(b"[1]"), None);
        assert_eq!(object_len(br#"{"cut": "#), None);
    }
}
