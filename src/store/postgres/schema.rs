//! The schema, created and upgraded by numbered migrations recorded in
//! `schema_migrations`. Every process checks the recorded version when it opens the store;
//! only when a migration is missing does it take a transaction-scoped advisory lock, so
//! many processes starting at once apply each migration exactly once (the others wait for
//! the lock, then find nothing left to do). A database upgraded by a newer baton is
//! refused rather than misread.
//!
//! Tables live in the connection's current schema (`search_path`), so a team can give
//! baton a schema of its own with `options=-c search_path=baton` in the URL.
//!
//! Layout (version 1):
//! - `runs`: one row per run: the snapshot (JSON text, template by reference, as in the
//!   sled store) and the columns listing and locking need: status, template name,
//!   workspace, `updated_ms` (listing order), version, the summary shown in listings, and
//!   `recent_ops`, the ring of the last [`crate::store::RECENT_OPS`] op ids (slot
//!   `version % 32`). A commit locks this row (`SELECT ... FOR NO KEY UPDATE`).
//! - `events` (run, seq): the dense history; `checkpoints` (run, name): saved snapshots.
//! - `templates` (name): templates remembered by name; `template_bodies` (hash): the
//!   template bodies snapshots refer to.
//! - Key columns use the "C" collation, so ordering by run id is byte order, as in sled
//!   (listings break ties the same way and exports list runs in the same order).
//!
//! Version 2 adds `notify_outbox`: one row, the notifier's state and undelivered
//! notifications, written only by the process that leads the notifiers (see `outbox`).

use super::conn::Connections;
use super::errors::Failure;
use crate::error::{BatonError, BatonResult};

/// The advisory lock key migrations run under ("baton" in ASCII).
const MIGRATION_LOCK: i64 = 0x0062_6174_6f6e;

/// Every migration, in order; a migration is never edited once released, only added.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "runs, events, checkpoints, templates",
        r#"
CREATE TABLE template_bodies (
    hash text COLLATE "C" PRIMARY KEY,
    body text NOT NULL
);
CREATE TABLE runs (
    run_id text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL CHECK (version >= 1),
    status text NOT NULL CHECK (status IN ('active', 'awaiting_human', 'completed', 'failed', 'cancelled')),
    template_name text COLLATE "C" NOT NULL,
    workspace text COLLATE "C",
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL,
    template_hash text COLLATE "C" NOT NULL REFERENCES template_bodies (hash),
    snapshot text NOT NULL,
    summary text NOT NULL,
    recent_ops text[] NOT NULL
);
CREATE INDEX runs_by_status_time ON runs (status, updated_ms DESC, run_id);
CREATE INDEX runs_by_template ON runs (template_name, status);
CREATE INDEX runs_by_workspace ON runs (workspace, status) WHERE workspace IS NOT NULL;
CREATE TABLE events (
    run_id text COLLATE "C" NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq bigint NOT NULL CHECK (seq >= 1),
    body text NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE checkpoints (
    run_id text COLLATE "C" NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name text COLLATE "C" NOT NULL,
    template_hash text COLLATE "C" NOT NULL REFERENCES template_bodies (hash),
    snapshot text NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE templates (
    name text COLLATE "C" PRIMARY KEY,
    body text NOT NULL
);
"#,
    ),
    (
        2,
        "the notification outbox",
        r#"
CREATE TABLE notify_outbox (
    id integer PRIMARY KEY CHECK (id = 1),
    state text NOT NULL
);
"#,
    ),
];

/// The schema version this baton reads and writes.
pub fn current() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Bring the schema up to [`current`] (or refuse a newer one).
pub async fn migrate(conns: &Connections) -> BatonResult<()> {
    let mut retry = super::conn::Retry::new(conns, "create baton's tables in");
    loop {
        let conn = retry.conn().await?;
        match attempt(conns, &conn).await {
            Ok(()) => return Ok(()),
            Err(failure) => retry.failed(failure).await?,
        }
    }
}

async fn attempt(conns: &Connections, conn: &super::conn::Conn) -> Result<(), Failure> {
    if applied(conn).await.ok().flatten() == Some(current()) {
        return Ok(());
    }
    conn.begin().await?;
    let client = conn.client();
    client.query_one("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let found: Option<i32> = client.query_one("SELECT max(version) FROM schema_migrations", &[]).await?.get(0);
    let found = found.unwrap_or(0);
    if found > current() {
        conn.rollback().await?;
        return Err(Failure::Baton(BatonError::storage(
            format!(
                "the PostgreSQL database {} holds baton schema version {found}, newer than this baton reads ({})",
                conns.url.place,
                current()
            ),
            "Upgrade baton on this machine to the version the rest of the team uses.",
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        client.batch_execute(sql).await?;
        client.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
        tracing::info!("applied baton schema migration {version} ({name}) to {}", conns.url.place);
    }
    client.batch_execute("COMMIT").await?;
    conn.set_in_tx(false);
    Ok(())
}

/// The recorded schema version (`None` before the first migration).
async fn applied(conn: &super::conn::Conn) -> Result<Option<i32>, tokio_postgres::Error> {
    let row = conn.client().query_one("SELECT max(version) FROM schema_migrations", &[]).await?;
    Ok(row.get(0))
}
