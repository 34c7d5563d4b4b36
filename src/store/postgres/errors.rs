//! What a driver error means for baton: retry the transaction (a serialization failure or
//! deadlock), reconnect and retry (the connection or the server went away), or give up
//! with a [`BatonError`] that names the server (never the password) and says what to do.

use super::url::DatabaseUrl;
use crate::error::{BatonError, ErrorCode};

/// How to go on after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The transaction lost a race the database resolved by aborting it: run it again now.
    Retry,
    /// The connection broke or the server cannot take connections (restarting, shutting
    /// down, full): reconnect with backoff and run it again.
    Connection,
    /// Anything else: report it.
    Fatal,
}

/// A failed attempt: a driver error (to classify) or baton's own answer (to report as is).
#[derive(Debug)]
pub enum Failure {
    Db(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
    Baton(BatonError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure::Db(e)
    }
}

impl From<BatonError> for Failure {
    fn from(e: BatonError) -> Failure {
        Failure::Baton(e)
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Failure {
        Failure::Baton(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Failure {
        Failure::Pool(e)
    }
}

impl Failure {
    pub fn kind(&self) -> Kind {
        match self {
            Failure::Db(e) => classify(e),
            Failure::Pool(deadpool_postgres::PoolError::Backend(e)) => classify(e),
            Failure::Pool(deadpool_postgres::PoolError::Timeout(_)) => Kind::Connection,
            Failure::Pool(_) | Failure::Baton(_) => Kind::Fatal,
        }
    }

    /// The error to report, after `kind` said not to (or no longer to) retry.
    pub fn into_error(self, url: &DatabaseUrl, what: &str) -> BatonError {
        match self {
            Failure::Baton(e) => e,
            Failure::Db(e) | Failure::Pool(deadpool_postgres::PoolError::Backend(e)) => db_error(url, what, &e),
            Failure::Pool(e) => unavailable(url, &e.to_string()),
        }
    }
}

/// Sort a driver error.
pub fn classify(e: &tokio_postgres::Error) -> Kind {
    if let Some(code) = e.code() {
        let code = code.code();
        return match code {
            // serialization_failure, deadlock_detected, unique_violation (two creations of one
            // run id raced: the retry finds the run and recognises its op id)
            "40001" | "40P01" | "23505" => Kind::Retry,
            // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
            // connection_exception class, idle_in_transaction_session_timeout
            "57P01" | "57P02" | "57P03" | "53300" | "25P03" => Kind::Connection,
            _ if code.starts_with("08") => Kind::Connection,
            _ => Kind::Fatal,
        };
    }
    let text = describe(e);
    if e.is_closed() || text.starts_with("error communicating") || text.starts_with("timeout") {
        return Kind::Connection;
    }
    if text.starts_with("error connecting") && !text.contains("TLS") && !text.contains("certificate") {
        return Kind::Connection;
    }
    Kind::Fatal
}

/// The driver's whole message: its kind, the server's message and detail, or the cause.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} ({}): {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// `unavailable`: the server cannot be reached (or refuses us) right now.
pub fn unavailable(url: &DatabaseUrl, cause: &str) -> BatonError {
    BatonError::new(
        ErrorCode::Unavailable,
        format!("cannot reach the PostgreSQL database {}: {}", url.place, url.redact(cause)),
        format!(
            "Check that the server at {} is running and reachable from this machine (and that BATON_DATABASE_URL names it); baton reconnects by itself once it is. If you were changing a run, look at it (`inspect`) before retrying.",
            url.place
        ),
    )
}

/// The error for a driver failure that retrying did not (or cannot) fix.
pub fn db_error(url: &DatabaseUrl, what: &str, e: &tokio_postgres::Error) -> BatonError {
    let cause = url.redact(&describe(e));
    let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
    let place = &url.place;
    match code.as_str() {
        "28P01" | "28000" => BatonError::new(
            ErrorCode::Unavailable,
            format!("PostgreSQL at {place} refused baton's login: {cause}"),
            "Check the user and password in BATON_DATABASE_URL (and the server's pg_hba.conf entry for this client).",
        ),
        "3D000" => BatonError::new(
            ErrorCode::Unavailable,
            format!("the database named in BATON_DATABASE_URL does not exist at {place}: {cause}"),
            "Create it (`createdb -O USER DATABASE`, or CREATE DATABASE as an administrator), or fix the database name in the URL.",
        ),
        "42501" => BatonError::storage(
            format!("PostgreSQL at {place} denied baton a privilege to {what} it: {cause}"),
            "Grant the role in BATON_DATABASE_URL USAGE and CREATE on its schema (to create and upgrade baton's tables), or SELECT, INSERT, UPDATE and DELETE on baton's tables once they exist (see the README, \"PostgreSQL\").",
        ),
        "53100" => BatonError::storage(
            format!("the PostgreSQL server at {place} is out of disk space: {cause}"),
            "Free space on the database server; the change was not applied.",
        ),
        "57014" => BatonError::new(
            ErrorCode::Unavailable,
            format!("a statement on the PostgreSQL database {place} took longer than baton allows (30 s): {cause}"),
            "Another session may hold the run locked; retry in a moment, and check `pg_stat_activity` on the server if it persists.",
        ),
        _ => match classify(e) {
            Kind::Connection => unavailable(url, &cause),
            _ if cause.contains("TLS") || cause.contains("certificate") => BatonError::new(
                ErrorCode::Unavailable,
                format!("the TLS connection to PostgreSQL at {place} failed: {cause}"),
                "If the server's certificate is signed by a private CA, add sslrootcert=/path/to/ca.pem to BATON_DATABASE_URL; the host name in the URL must match the certificate.",
            ),
            _ => BatonError::storage(
                format!("cannot {what} the PostgreSQL database {place}: {cause}"),
                "Check the server's log for this error; the change was not applied.",
            ),
        },
    }
}

/// The storage error for a stored record that cannot be read.
pub fn damaged(url: &DatabaseUrl, record: &str, why: &str) -> BatonError {
    BatonError::storage(
        format!("record {record} in the PostgreSQL database {} cannot be read: {why}", url.place),
        "Restore the database from a backup (pg_dump, or `baton backup DIR`), or run `baton verify` to list every damaged record.",
    )
}
