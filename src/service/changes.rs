//! The database's change counter, awaited by
//! [`Request::WaitForChange`](crate::api::Request::WaitForChange) so a live view learns of
//! changes instead of polling the runs. It follows the store's own feed
//! ([`RunStore::changes`](crate::store::RunStore::changes)): with sled that counts the
//! owner's durable batches (every session's changes pass through it); with PostgreSQL it
//! counts NOTIFYs from every process on the database.

use crate::api::{ChangeMark, Reply, WaitForChangeParams};
use crate::error::{BatonError, BatonResult};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How long a wait lasts unless the request says otherwise.
const DEFAULT_WAIT_MS: u64 = 25_000;
/// The longest wait: well inside the 60 s a client gives the owner to answer.
const MAX_WAIT_MS: u64 = 50_000;

/// The store's change counter, offset so that it never goes back across owners.
pub struct ChangeFeed {
    base: u64,
    /// The store's feed, subscribed at the first wait: following it may cost a connection
    /// (PostgreSQL's LISTEN), which a process that never shows a live view should not open.
    store: OnceLock<watch::Receiver<u64>>,
}

impl ChangeFeed {
    /// A counter starting at the current time in milliseconds times 2^20: an owner that
    /// takes over later starts above anything its predecessor could have counted (that
    /// would take a million changes a millisecond), so a watcher that moves to the new
    /// owner sees its counter as a change, never as the past.
    pub fn new() -> ChangeFeed {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        ChangeFeed { base: now_ms << 20, store: OnceLock::new() }
    }

    /// Answer once the counter passes `after`, or at the timeout with where it stands;
    /// `subscribe` gives the store's feed the first time.
    pub async fn wait(&self, subscribe: impl FnOnce() -> watch::Receiver<u64>, p: &WaitForChangeParams) -> BatonResult<Reply> {
        let timeout_ms = p.timeout_ms.unwrap_or(DEFAULT_WAIT_MS);
        if timeout_ms > MAX_WAIT_MS {
            return Err(BatonError::invalid(
                "timeout_ms",
                format!("`timeout_ms` is {timeout_ms}; the most is {MAX_WAIT_MS}"),
                "Wait again after the answer instead.",
            ));
        }
        let mut watcher = self.store.get_or_init(subscribe).clone();
        let base = self.base;
        // A timeout is an ordinary answer: the counter as it stands.
        let _ = tokio::time::timeout(Duration::from_millis(timeout_ms), watcher.wait_for(|c| base + *c > p.after)).await;
        let counter = base + *watcher.borrow();
        Ok(Reply::Changes(ChangeMark { counter }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn counter(reply: BatonResult<Reply>) -> u64 {
        match reply {
            Ok(Reply::Changes(mark)) => mark.counter,
            other => panic!("not a change mark: {other:?}"),
        }
    }

    /// The store's feed as `ChangeFeed::wait` asks for it.
    fn subscribe(store: &Arc<watch::Sender<u64>>) -> impl FnOnce() -> watch::Receiver<u64> + use<> {
        let store = Arc::clone(store);
        move || store.subscribe()
    }

    #[tokio::test]
    async fn waits_end_at_the_next_change_or_the_timeout() {
        let store = Arc::new(watch::Sender::new(0));
        let feed = Arc::new(ChangeFeed::new());
        assert_eq!(store.receiver_count(), 0, "nothing follows the store before the first wait");
        let first = counter(feed.wait(subscribe(&store), &WaitForChangeParams { after: 0, timeout_ms: Some(0) }).await);
        assert!(first > 1 << 40, "the counter starts from the clock");
        let unchanged = counter(feed.wait(subscribe(&store), &WaitForChangeParams { after: first, timeout_ms: Some(10) }).await);
        assert_eq!(unchanged, first, "a timeout answers with the counter unchanged");
        assert_eq!(store.receiver_count(), 1, "the feed subscribes once");

        let waiting = tokio::spawn({
            let (feed, subscribe) = (Arc::clone(&feed), subscribe(&store));
            async move { counter(feed.wait(subscribe, &WaitForChangeParams { after: first, timeout_ms: Some(50_000) }).await) }
        });
        tokio::task::yield_now().await;
        store.send_modify(|c| *c += 1);
        assert_eq!(waiting.await.unwrap(), first + 1, "a change ends the wait");
        let err = feed.wait(subscribe(&store), &WaitForChangeParams { after: 0, timeout_ms: Some(60_000) }).await.unwrap_err();
        assert_eq!(err.field.as_deref(), Some("timeout_ms"));
        assert!(ChangeFeed::new().base > first, "a later owner starts above");
    }
}
