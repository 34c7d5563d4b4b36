//! Every structured tool result the integration suites receive is validated against the
//! `outputSchema` the server published in `tools/list`, with a real JSON Schema validator
//! (the `jsonschema` crate, draft 2020-12 as the schemas declare), as the official Python
//! SDK does: a result outside its tool's schema fails the test at once, naming the tool,
//! the JSON path and the value there.
//!
//! [`Server`](super::Server) fetches the schemas once per server; [`RawMcp`](super::RawMcp)
//! reads them from the `tools/list` answer it sees (its handshake asks for one); harnesses
//! that see results without a listing (raw lines without the handshake, the Codex harness)
//! use [`published`], the binary's listing fetched once per test process.

use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

/// The output schemas of one server's tools.
pub struct OutputSchemas {
    tools: HashMap<String, jsonschema::Validator>,
}

impl OutputSchemas {
    /// From a `tools/list` result's `tools` array (MCP JSON). Panics when a published
    /// schema is not a valid JSON Schema or its root is not `type: object` (Codex and MCP
    /// clients require an object root).
    pub fn from_tools(tools: &[Value]) -> OutputSchemas {
        let mut compiled = HashMap::new();
        for tool in tools {
            let name = tool["name"].as_str().unwrap_or_else(|| panic!("a listed tool without a name: {tool}")).to_string();
            let Some(schema) = tool.get("outputSchema").filter(|s| !s.is_null()) else { continue };
            assert_eq!(schema["type"], "object", "tool `{name}`: outputSchema's root must be `type: object`");
            let validator = jsonschema::draft202012::new(schema).unwrap_or_else(|e| panic!("tool `{name}`: invalid outputSchema: {e}"));
            compiled.insert(name, validator);
        }
        OutputSchemas { tools: compiled }
    }

    /// Whether `tool` has an output schema.
    pub fn has(&self, tool: &str) -> bool {
        self.tools.contains_key(tool)
    }

    /// Why `value` is not a structured result `tool` may give, or `None` when it is.
    pub fn mismatch(&self, tool: &str, value: &Value) -> Option<String> {
        let first = self.tools.get(tool)?.iter_errors(value).next()?;
        Some(explain(&first))
    }

    /// Panic unless `structured` is a result `tool` may give: present whenever the tool
    /// has an output schema and the result is not an error (the Python SDK raises
    /// otherwise), and valid against that schema (errors too: baton's schemas admit its
    /// error object, for clients that check every result).
    pub fn check(&self, tool: &str, structured: Option<&Value>, is_error: bool) {
        if !self.has(tool) {
            return;
        }
        let Some(value) = structured.filter(|v| !v.is_null()) else {
            assert!(is_error, "tool `{tool}` has an outputSchema but returned no structuredContent");
            return;
        };
        if let Some(why) = self.mismatch(tool, value) {
            let mut shown = value.to_string();
            if shown.len() > 4000 {
                shown.truncate(shown.char_indices().take_while(|(i, _)| *i < 4000).last().map_or(0, |(i, c)| i + c.len_utf8()));
                shown.push_str("...");
            }
            panic!("tool `{tool}`: structured result outside its published outputSchema: {why}\nresult: {shown}");
        }
    }

    /// Check a `tools/call` result in MCP JSON (`structuredContent`, `isError`).
    pub fn check_result(&self, tool: &str, result: &Value) {
        self.check(tool, result.get("structuredContent"), result["isError"] == true);
    }
}

/// One validation error as "at PATH: MESSAGE" (the message shows the value). An `anyOf`
/// or `oneOf` only says "not valid under any": follow its closest branch down to the error
/// that names the field, as the Python SDK's `best_match` does. The closest branch is the
/// one whose errors are least at its top (its required fields are there: the value is of
/// that type), then the one with the fewest.
fn explain(error: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind;
    let path = error.instance_path().as_str();
    let mut message = error.to_string();
    if message.len() > 700 {
        // Keep the value's start and the message's end ("... is not valid under ...").
        let head = message.char_indices().nth(400).map_or(0, |(i, _)| i);
        let tail = message.char_indices().rev().nth(200).map_or(0, |(i, _)| i);
        message = format!("{} ...({} bytes)... {}", &message[..head], message.len(), &message[tail..]);
    }
    let here = format!("at {}: {message}", if path.is_empty() { "(the root)" } else { path });
    match error.kind() {
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            let at_top = |errors: &&Vec<jsonschema::ValidationError<'static>>| {
                let top = errors.iter().filter(|e| e.instance_path().as_str() == path).count();
                (top, errors.len())
            };
            match context.iter().filter(|errors| !errors.is_empty()).min_by_key(at_top) {
                Some(closest) => format!("{here}\n  closest branch ({} error(s)): {}", closest.len(), explain(&closest[0])),
                None => here,
            }
        }
        _ => here,
    }
}

/// The output schemas `baton serve` publishes, from one `tools/list` of a throwaway
/// server, fetched once per test process.
pub fn published() -> Arc<OutputSchemas> {
    static SCHEMAS: OnceLock<Arc<OutputSchemas>> = OnceLock::new();
    SCHEMAS.get_or_init(|| Arc::new(OutputSchemas::from_tools(&list_tools_of_binary()))).clone()
}

/// `tools/list` of a fresh `baton serve` on an empty home, over raw lines.
fn list_tools_of_binary() -> Vec<Value> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(super::BATON)
        .arg("serve")
        .env("BATON_HOME", tmp.path().join("home"))
        .env("BATON_LOG", "error")
        .env("BATON_OWNER_IDLE", super::OWNER_IDLE)
        .env_remove("BATON_DATABASE_URL")
        .current_dir(tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn baton serve");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"schemas","version":"0"}}}"#;
    let list = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}
{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    writeln!(stdin, "{init}").expect("write initialize");
    let mut tools = None;
    for line in lines.by_ref() {
        let message: Value = serde_json::from_str(&line.expect("read baton serve")).expect("a JSON line");
        if message["id"] == 1 {
            writeln!(stdin, "{list}").expect("write tools/list");
        } else if message["id"] == 2 {
            tools = message["result"]["tools"].as_array().cloned();
            break;
        }
    }
    drop(stdin);
    let _ = child.wait();
    tools.expect("tools/list answered with tools")
}
