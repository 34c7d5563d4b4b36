//! baton's integration tests, as modules of one test binary: the crate and the test
//! dependencies are linked once, not once per suite. Each module is one suite (filter
//! with its path, e.g. `cargo test --test it -- workflow::`); `support` is what they share:
//! the real `baton` binary driven over MCP, the CLI and its socket, PostgreSQL clusters,
//! the pinned Codex CLI with a scripted model server, the page and loop-device disks.
//! A new suite is a file here with a `mod` line below: Cargo.toml turns `autotests` off,
//! so a file directly in tests/ would not be built at all.
//!
//! Every test runs in parallel with the others in this one process, so none may change
//! what the process shares (environment, umask, resource limits, the working directory):
//! a test passes such settings to the children it starts, or runs itself in a child
//! process of its own (see `support::rerun`).

mod support;

mod codex_app_server;
mod codex_cli;
mod codex_exec;
mod codex_plugin;
mod codex_resources;
mod codex_subagents;
mod disk_faults;
mod drive;
mod fanout;
mod faults;
mod fuzz;
mod git_workflow;
mod hostile;
mod local_users;
mod multiprocess;
mod notify;
mod owner_process;
mod postgres;
mod power_cut;
mod python_sdk;
mod rewind;
mod rooms;
mod schemas;
mod stdio;
mod store_contract;
mod terminal;
mod ui;
mod upkeep;
mod workflow;
