//! Tuning knobs read from the environment (timeouts, pool sizes, limits of the owner), in
//! one place on the ground floor, so the store and the backend read them alike.

use std::time::Duration;

/// A duration from the environment, in humantime form (`90s`, `500ms`, `5m`); a value that
/// does not parse is ignored with a warning, so a typo never stops baton.
pub fn duration(name: &str) -> Option<Duration> {
    let value = std::env::var(name).ok()?;
    match humantime::parse_duration(value.trim()) {
        Ok(duration) => Some(duration),
        Err(e) => {
            tracing::warn!("ignoring {name}={value:?}: {e}");
            None
        }
    }
}

/// A whole number from the environment; anything else counts as unset.
pub fn number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}
