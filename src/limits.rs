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
/// Stored size of the history events one `get_run` or `resume` answer carries; older
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
