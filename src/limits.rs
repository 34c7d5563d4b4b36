//! Documented size limits. Anything larger is refused with a `too_large` error naming the field.

use crate::error::{BatonError, BatonResult, ErrorCode};

/// A role's `output` text in one `advance`.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// `artifacts` of one `advance`, or the initial `context`, serialized as JSON.
pub const MAX_ARTIFACTS_BYTES: usize = 1024 * 1024;
/// Goals, questions, answers, notes and reasons.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// One request frame between baton processes (see `backend::wire`).
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// One answer frame from the owner; answers are bounded by the limits above.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Stored size of the history events one `inspect` or `resume` answer carries; older
/// events are paged with `before_seq`.
pub const MAX_HISTORY_BYTES: usize = 1024 * 1024;

/// Refuse `value` if it is longer than `max` bytes.
pub fn check_len(field: &str, len: usize, max: usize) -> BatonResult<()> {
    if len <= max {
        return Ok(());
    }
    Err(BatonError::new(
        ErrorCode::TooLarge,
        format!("`{field}` is {len} bytes; the limit is {max} bytes"),
        "Shorten it: put large material in files in the repository and pass their paths instead.",
    )
    .with_field(field))
}

/// Refuse a JSON value whose serialization is longer than `max` bytes.
pub fn check_json_len(field: &str, value: &serde_json::Value, max: usize) -> BatonResult<()> {
    let len = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
    check_len(field, len, max)
}

/// How long a task lease lasts unless the claim asks otherwise, and the lengths one may ask for.
pub const DEFAULT_LEASE_SECONDS: u32 = 600;
pub const LEASE_SECONDS: std::ops::RangeInclusive<u32> = 5..=3600;

/// `value` (or `default`), refused with its bounds when outside `range`.
pub fn bounded(field: &str, value: Option<u32>, default: u32, range: std::ops::RangeInclusive<u32>) -> BatonResult<u32> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        return Ok(value);
    }
    Err(BatonError::invalid(
        field,
        format!("`{field}` is {value}; it must be {} to {}", range.start(), range.end()),
        format!("Omit it for the default ({default})."),
    ))
}

/// Nesting of one tool argument (`{"a": {"b": 1}}` is 2 levels). Stored values are read back
/// inside answers that wrap them in about ten more levels, and every JSON reader on the way
/// (serde_json, rmcp, the Codex client) stops at 128; this keeps what is accepted readable.
pub const MAX_ARGUMENT_DEPTH: usize = 64;
/// Nesting of one whole message (an MCP line or an inter-process frame). Below serde_json's
/// recursion limit of 128, so a message that passes this check always parses.
pub const MAX_MESSAGE_DEPTH: usize = 100;

/// Refuse a JSON value nested more than `max` levels deep, naming `field`.
pub fn check_depth(field: &str, value: &serde_json::Value, max: usize) -> BatonResult<()> {
    let depth = value_depth(value, max);
    if depth <= max {
        return Ok(());
    }
    Err(BatonError::new(
        ErrorCode::TooLarge,
        format!("`{field}` is nested more than {max} levels deep; the limit is {max} levels"),
        "Flatten it: keep deeply nested data in a file in the repository and pass its path instead.",
    )
    .with_field(field))
}

/// Check every top-level member of a tool's arguments object against [`MAX_ARGUMENT_DEPTH`].
pub fn check_argument_depths(arguments: &serde_json::Value) -> BatonResult<()> {
    match arguments {
        serde_json::Value::Object(map) => map.iter().try_for_each(|(name, value)| check_depth(name, value, MAX_ARGUMENT_DEPTH)),
        other => check_depth("arguments", other, MAX_ARGUMENT_DEPTH),
    }
}

/// How deeply `value` nests arrays and objects, counting no further than `max + 1`.
/// Iterative, so any value can be measured without exhausting the stack.
fn value_depth(value: &serde_json::Value, max: usize) -> usize {
    use serde_json::Value;
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        if deepest > max {
            return deepest;
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

/// How deeply the JSON text `bytes` nests arrays and objects, counting no further than
/// `max + 1`. It reads brackets outside strings and does not validate anything else, so it
/// can size up a message before a recursive parser sees it.
pub fn text_depth(bytes: &[u8], max: usize) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > max {
                    return deepest;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod depth_tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn text_and_value_depth_agree() {
        for levels in [0, 1, 2, 63, 64, 65, 100] {
            let text = nested(levels);
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(text_depth(text.as_bytes(), 1000), levels);
            assert_eq!(value_depth(&value, 1000), levels);
        }
        assert_eq!(text_depth(br#"{"a":"[[[{{{\"[[","b":[{}]}"#, 100), 3);
        assert_eq!(text_depth(nested(100_000).as_bytes(), 100), 101, "stops counting past the limit");
    }

    #[test]
    fn deep_arguments_are_refused_by_name() {
        let deep: serde_json::Value = serde_json::from_str(&nested(MAX_ARGUMENT_DEPTH)).unwrap();
        assert!(check_argument_depths(&json!({"artifacts": {"a": 1}, "output": "x"})).is_ok());
        let err = check_argument_depths(&json!({"goal": "g", "context": {"k": deep}})).unwrap_err();
        assert_eq!((err.code, err.field.as_deref()), (ErrorCode::TooLarge, Some("context")));
        assert!(err.message.contains("64 levels"), "{}", err.message);
    }
}
