//! Helpers for the tests that drive the real Codex CLI: finding (or installing) the pinned
//! Codex, running commands with a deadline, a scripted model server, and a `codex exec`
//! harness. Kept apart from `common` so the other test binaries do not compile them.
#![allow(dead_code)]

pub mod app_server;
pub mod codex;
pub mod exec;
pub mod model_server;
