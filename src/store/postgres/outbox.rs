//! The notifier's outbox in the database. With PostgreSQL every long-lived baton process
//! (each `baton serve`, `baton ui`, `baton drive`) may notify people, and there is no owner
//! process to do it once for all. So the outbox is one row that every process sees, and
//! only the process holding a session advisory lock on its own connection reads and
//! writes it: it leads until that connection ends (its process exits or dies, or the
//! network drops it), and then the next process to ask takes the lock and carries on from
//! what the row says. Each event is therefore queued and delivered by one process at a
//! time; a leader lost between a delivery and the row's update can repeat that one
//! delivery, which is why every event carries an `id`.

use super::url::DatabaseUrl;
use crate::error::{BatonError, BatonResult};
use crate::store::SharedOutbox;
use async_trait::async_trait;

/// First half of the advisory lock key ("bn" in ASCII); the second is the hash of the
/// schema's channel, so two baton schemas in one database lead apart.
const LOCK_CLASS: i32 = 0x626e;

/// A process's part in leading the notifiers of one database and schema.
pub struct PgOutbox {
    url: DatabaseUrl,
    channel: String,
    /// The connection that holds the lock, while this process leads.
    leading: Option<Leader>,
}

struct Leader {
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Ending the connection releases the lock at once for the next process.
        self.driver.abort();
    }
}

impl PgOutbox {
    pub fn new(url: DatabaseUrl, channel: String) -> PgOutbox {
        PgOutbox { url, channel, leading: None }
    }

    fn failed(&mut self, doing: &str, e: &tokio_postgres::Error) -> BatonError {
        // A broken connection no longer holds the lock: stop leading.
        self.leading = None;
        BatonError::storage(
            format!("cannot {doing} the notification outbox in {}: {}", self.url.place, self.url.redact(&super::errors::describe(e))),
            "baton tries again in a few seconds; check that the database is reachable.",
        )
    }

    fn client(&self) -> BatonResult<&tokio_postgres::Client> {
        self.leading.as_ref().map(|l| &l.client).ok_or_else(|| BatonError::internal("the notification outbox was used without leading"))
    }
}

#[async_trait]
impl SharedOutbox for PgOutbox {
    async fn lead(&mut self) -> BatonResult<bool> {
        if let Some(leader) = &self.leading {
            if !leader.client.is_closed() && !leader.driver.is_finished() {
                return Ok(true);
            }
            self.leading = None;
        }
        let tls = self.url.tls()?;
        let (client, connection) =
            self.url.config.connect(tls).await.map_err(|e| super::errors::unavailable(&self.url, &super::errors::describe(&e)))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let leader = Leader { client, driver };
        let taken = leader.client.query_one("SELECT pg_try_advisory_lock($1, hashtext($2))", &[&LOCK_CLASS, &self.channel]).await;
        match taken {
            // Not the leader: the connection ends here, so waiting processes hold none.
            Ok(row) if !row.get::<_, bool>(0) => Ok(false),
            Ok(_) => {
                self.leading = Some(leader);
                Ok(true)
            }
            Err(e) => Err(self.failed("lock", &e)),
        }
    }

    async fn load(&mut self) -> BatonResult<Option<Vec<u8>>> {
        let row = self.client()?.query_opt("SELECT state FROM notify_outbox WHERE id = 1", &[]).await;
        match row {
            Ok(row) => Ok(row.map(|r| r.get::<_, String>(0).into_bytes())),
            Err(e) => Err(self.failed("read", &e)),
        }
    }

    async fn save(&mut self, state: &[u8]) -> BatonResult<()> {
        let text = std::str::from_utf8(state).map_err(|e| BatonError::internal(format!("the outbox is not UTF-8 text: {e}")))?;
        // On the leading connection: a write that succeeds was made while the lock was
        // held. The server's synchronous_commit makes it durable before the answer.
        let written = self
            .client()?
            .execute("INSERT INTO notify_outbox (id, state) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state", &[&text])
            .await;
        match written {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed("write", &e)),
        }
    }
}
