//! Connections: a small pool per process, a guard that never hands a connection with an
//! open transaction back to the pool, and the retry loop every operation runs in.
//!
//! Retrying is safe because every write is one transaction that is idempotent by op id
//! (see `commit`): if the connection breaks before COMMIT's answer arrives, the change may
//! or may not be committed, and the next attempt finds out by looking for its op id under
//! the run's row lock. Reads are simply run again.

use super::errors::{Failure, Kind, unavailable};
use super::url::DatabaseUrl;
use crate::error::BatonResult;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Connections one process keeps (a `baton serve` handles one session's calls, mostly
/// one at a time); `BATON_DATABASE_POOL` changes it.
const DEFAULT_POOL: usize = 4;
/// How long an operation keeps reconnecting before it answers `unavailable`
/// (`BATON_DATABASE_TIMEOUT`): long enough for a server restart or a failover.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Immediate re-runs after serialization failures or deadlocks before giving up.
const MAX_RACE_RETRIES: u32 = 10;

/// The pool and how long to keep trying.
pub struct Connections {
    pub pool: Pool,
    pub url: DatabaseUrl,
    pub timeout: Duration,
}

impl Connections {
    pub fn new(url: DatabaseUrl) -> BatonResult<Connections> {
        let size = crate::env::number("BATON_DATABASE_POOL").map_or(DEFAULT_POOL, |n| n.clamp(1, 64) as usize);
        let timeout = crate::env::duration("BATON_DATABASE_TIMEOUT").unwrap_or(DEFAULT_TIMEOUT);
        let manager = Manager::from_config(url.config.clone(), url.tls()?, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| unavailable(&url, &e.to_string()))?;
        Ok(Connections { pool, url, timeout })
    }

    /// A connection from the pool (the caller retries on failure).
    pub async fn get(&self) -> Result<Conn, Failure> {
        Ok(Conn { client: Some(self.pool.get().await?), in_tx: AtomicBool::new(false) })
    }
}

/// A pooled connection. While `in_tx` is set (a transaction was begun and neither
/// committed nor rolled back, e.g. because the caller's future was dropped mid-way) the
/// connection is closed on drop instead of returning to the pool, so the server rolls the
/// transaction back and nobody else inherits it.
pub struct Conn {
    client: Option<Object>,
    in_tx: AtomicBool,
}

impl Conn {
    pub fn client(&self) -> &deadpool_postgres::ClientWrapper {
        self.client.as_ref().expect("taken only on drop")
    }

    /// Mark that a transaction is (or is no longer) open on this connection.
    pub fn set_in_tx(&self, open: bool) {
        self.in_tx.store(open, Ordering::Relaxed);
    }

    /// Begin a transaction; `BEGIN` is sent with the caller's first statement when the
    /// caller polls both together (one round trip).
    pub async fn begin(&self) -> Result<(), tokio_postgres::Error> {
        self.set_in_tx(true);
        self.client().batch_execute("BEGIN").await
    }

    /// Roll the open transaction back (releasing its row locks now, not at disconnect).
    pub async fn rollback(&self) -> Result<(), tokio_postgres::Error> {
        self.client().batch_execute("ROLLBACK").await?;
        self.set_in_tx(false);
        Ok(())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if *self.in_tx.get_mut()
            && let Some(client) = self.client.take()
        {
            drop(Object::take(client));
        }
    }
}

/// One operation's retry budget.
pub struct Retry<'a> {
    conns: &'a Connections,
    what: &'static str,
    deadline: Instant,
    races: u32,
    backoff: Duration,
}

impl<'a> Retry<'a> {
    /// `what` completes "cannot ... the PostgreSQL database" in messages.
    pub fn new(conns: &'a Connections, what: &'static str) -> Retry<'a> {
        Retry { conns, what, deadline: Instant::now() + conns.timeout, races: 0, backoff: Duration::from_millis(25) }
    }

    /// A connection, waiting out connection failures within the budget.
    pub async fn conn(&mut self) -> BatonResult<Conn> {
        loop {
            match self.conns.get().await {
                Ok(conn) => return Ok(conn),
                Err(failure) => self.failed(failure).await?,
            }
        }
    }

    /// After a failed attempt: `Ok` once it is time to try again, or the error to report.
    pub async fn failed(&mut self, failure: Failure) -> BatonResult<()> {
        let url = &self.conns.url;
        match failure.kind() {
            Kind::Retry if self.races < MAX_RACE_RETRIES => {
                self.races += 1;
                tracing::debug!("retrying a transaction that lost a race: {}", failure_text(url, &failure));
                tokio::time::sleep(Duration::from_millis(u64::from(self.races) * 2)).await;
                Ok(())
            }
            Kind::Connection if Instant::now() + self.backoff < self.deadline => {
                tracing::info!("PostgreSQL at {} is unreachable ({}); retrying", url.place, failure_text(url, &failure));
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
                Ok(())
            }
            Kind::Connection => {
                let cause = failure_text(url, &failure);
                Err(unavailable(url, &format!("{cause} (kept retrying for {:?})", self.conns.timeout)))
            }
            _ => Err(failure.into_error(url, self.what)),
        }
    }
}

fn failure_text(url: &DatabaseUrl, failure: &Failure) -> String {
    match failure {
        Failure::Db(e) | Failure::Pool(deadpool_postgres::PoolError::Backend(e)) => url.redact(&super::errors::describe(e)),
        Failure::Pool(e) => url.redact(&e.to_string()),
        Failure::Baton(e) => e.message.clone(),
    }
}
