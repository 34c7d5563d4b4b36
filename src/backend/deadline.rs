//! Deadlines that travel with requests. They are instants of CLOCK_MONOTONIC, which all
//! processes of a machine share and which no wall-clock change moves, so the owner can tell
//! that a request it reads late (it was stopped, or busy) has already been given up by its
//! caller, and refuse it instead of applying a change the caller was told had failed.

use std::time::Duration;

/// Now, in milliseconds of CLOCK_MONOTONIC.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000).saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

/// The deadline `budget` from now.
pub fn after(budget: Duration) -> u64 {
    now_ms().saturating_add(budget.as_millis().min(u64::MAX as u128) as u64)
}

/// How long ago `deadline_ms` passed, if it has.
pub fn overdue(deadline_ms: u64) -> Option<Duration> {
    let now = now_ms();
    (now > deadline_ms).then(|| Duration::from_millis(now - deadline_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_passes() {
        let soon = after(Duration::from_millis(20));
        assert_eq!(overdue(soon), None);
        assert!(overdue(now_ms() - 5).is_some_and(|late| late >= Duration::from_millis(5)));
    }
}
