//! Wall-clock timestamps as RFC 3339 strings (UTC, milliseconds).

use std::time::SystemTime;

/// The current time, e.g. `2026-11-25T12:00:00.123Z`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
