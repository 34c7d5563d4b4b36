//! How a terminal command reaches the runs: a home that already has a database (a
//! mistyped `--home` must not create one) and a backend connected to it.

use crate::api::Request;
use crate::backend::Backend;
use crate::error::BatonError;
use crate::home::Home;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Refuse to work on a sled home that has no database (see [`Home::require_database`]);
/// with PostgreSQL the home holds no database to check.
pub fn needs_database(home: &Home) -> Result<(), BatonError> {
    match crate::store::Location::of(home) {
        Ok(crate::store::Location::Sled(_)) => home.require_database(),
        // A malformed URL is reported by the command's own connection, naming the variable.
        Ok(crate::store::Location::Postgres(_)) | Err(_) => Ok(()),
    }
}

/// A backend for a terminal command on an existing database, connected.
pub async fn open_backend(home: Option<&Path>) -> Result<Backend, BatonError> {
    let home = Home::resolve(home)?;
    needs_database(&home)?;
    let backend = Backend::new(home);
    backend.connect().await?;
    Ok(backend)
}

/// Run one request and render its answer for a human (or as JSON).
pub async fn request_text(home: &Option<PathBuf>, request: Request, json: bool) -> Result<String> {
    let backend = open_backend(home.as_deref()).await?;
    // Through gitops: e.g. `cancel` removes the run's worktrees, `answer` may merge a join.
    let reply = crate::calls::call(&backend, super::terminal_caller(), request).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&reply.to_json())?);
    }
    Ok(super::render(&reply))
}
