//! How a terminal command reaches the runs: a home that already has a database (a
//! mistyped `--home` must not create one) and a backend connected to it.

use crate::backend::Backend;
use crate::error::BatonError;
use crate::home::Home;
use std::path::Path;

/// Refuse to work on a sled home that has no database (see [`Home::require_database`]);
/// with PostgreSQL the home holds no database to check.
pub fn needs_database(home: &Home) -> Result<(), BatonError> {
    if crate::store::postgres::DatabaseUrl::from_env().is_some() {
        return Ok(());
    }
    home.require_database()
}

/// A backend for a terminal command on an existing database, connected.
pub async fn open_backend(home: Option<&Path>) -> Result<Backend, BatonError> {
    let home = Home::resolve(home)?;
    needs_database(&home)?;
    let backend = Backend::new(home);
    backend.connect().await?;
    Ok(backend)
}
