//! baton: durable multi-agent workflows for Codex over MCP.

pub mod api;
pub mod backend;
pub mod calls;
pub mod cli;
pub mod drive;
pub mod engine;
pub mod env;
pub mod error;
pub mod gitops;
pub mod graph;
pub mod home;
pub mod install;
pub mod limits;
pub mod logging;
pub mod mcp;
pub mod migrate;
pub mod notify;
pub mod polled;
pub mod rewind;
pub mod service;
pub mod store;
pub mod template_file;
pub mod text;
pub mod time;
pub mod ui;
