//! One database, many processes. sled allows a single process per database, so one
//! detached owner process (`baton owner`) holds it and serves every `baton serve` session
//! and terminal command over the home's Unix socket.
//!
//! - [`client`]: how a process reaches the owner, starting one when none answers and
//!   resending to the next one (same op id, so nothing applies twice) when it dies.
//! - [`owner`]: the owner itself, with an explicit start and an orderly shutdown.
//! - [`daemon`]: the owner as a process of its own, detached from every session.
//! - [`conn`]: serving one connection; [`wire`]: the line protocol and its limits.
//! - [`peer`]: both ends check that the other runs as the same user.
//! - [`deadline`]: deadlines that travel with requests, so a request its caller gave up
//!   on is refused rather than applied late.
//! - [`direct`]: with a PostgreSQL database (`BATON_DATABASE_URL`) there is no owner:
//!   each process runs the service over its own connection pool.

pub mod client;
mod conn;
pub mod daemon;
pub mod deadline;
pub mod direct;
pub mod owner;
pub mod peer;
mod socket;
pub mod wire;

pub use client::{Backend, Launcher, Timeouts};

#[cfg(test)]
mod tests;
