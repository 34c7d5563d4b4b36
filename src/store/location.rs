//! Which store holds a home's runs, and opening it. This is the one place that picks
//! sled or PostgreSQL: the backend (owner or direct connection), `migrate` and the
//! terminal commands all ask here, so they can never disagree about where runs are.

use super::postgres::url::{DatabaseUrl, is_postgres_url};
use super::sled_store::Options;
use super::{PgStore, RunStore, SledStore};
use crate::error::{BatonError, BatonResult};
use crate::home::Home;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where runs are kept.
#[derive(Debug)]
pub enum Location {
    /// The embedded sled database in this directory (one owner process serves it).
    Sled(PathBuf),
    /// A PostgreSQL database that every process connects to itself.
    Postgres(Box<DatabaseUrl>),
}

impl Location {
    /// The store `home` uses: the database `BATON_DATABASE_URL` names when it is set
    /// (a malformed URL is an error naming it), else the sled database in the home.
    pub fn of(home: &Home) -> BatonResult<Location> {
        match DatabaseUrl::from_env() {
            Some(url) => Ok(Location::Postgres(Box::new(url?))),
            None => Ok(Location::Sled(home.db_dir())),
        }
    }

    /// A `postgres://` URL, or else a directory for a sled database (made absolute);
    /// `field` names the argument in errors.
    pub fn parse(text: &str, field: &str) -> BatonResult<Location> {
        if is_postgres_url(text) {
            return DatabaseUrl::parse(text).map(|url| Location::Postgres(Box::new(url)));
        }
        if text.contains("://") {
            return Err(BatonError::invalid(
                field,
                "the target is neither a postgres:// URL nor a directory",
                "Pass postgres://USER@HOST/DATABASE, or the path of a (new or existing) sled database directory.",
            ));
        }
        Ok(Location::Sled(std::path::absolute(text).unwrap_or_else(|_| PathBuf::from(text))))
    }

    /// How the store is named in messages (no password).
    pub fn shown(&self) -> String {
        match self {
            Location::Postgres(url) => format!("PostgreSQL {}", url.place),
            Location::Sled(dir) => format!("sled {}", dir.display()),
        }
    }

    /// Whether both name the same store (the same directory, or the same server and database).
    pub fn same_as(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Sled(a), Location::Sled(b)) => a == b,
            (Location::Postgres(a), Location::Postgres(b)) => a.place == b.place,
            _ => false,
        }
    }
}

/// Open (or create) the store at `location`: PostgreSQL connects (creating or upgrading
/// its schema); sled opens in this process, which must be the database's only one.
pub async fn open_at(location: &Location) -> BatonResult<Arc<dyn RunStore>> {
    match location {
        Location::Postgres(url) => Ok(Arc::new(PgStore::open(url.as_ref().clone()).await?)),
        Location::Sled(dir) => open_sled(dir),
    }
}

/// Open the sled database in `dir` as every baton process does: encrypted when its key
/// file exists. The owner calls this directly, since it serves sled only.
pub fn open_sled(dir: &Path) -> BatonResult<Arc<dyn RunStore>> {
    Ok(Arc::new(SledStore::open_with(dir, Options::for_dir(dir)?)?))
}
