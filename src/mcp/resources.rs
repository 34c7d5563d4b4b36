//! Read-only MCP resources, for models that read rather than call (Codex's
//! `read_mcp_resource`) without adding tools to the 8 baton keeps to:
//! - `baton://runs`: the runs, newest change first (JSON);
//! - `baton://runs/{id}`: one run's briefing: its brief, recent history, checkpoints (JSON);
//! - `baton://runs/{id}/graph`: its workflow graph as Mermaid.
//!
//! `resources/list` names the listing and the unfinished runs; the per-run addresses are
//! also published as resource templates.

use crate::api::{Caller, GetGraphParams, ListRunsParams, Reply, RunBriefing, StatusFilter};
use crate::backend::Backend;
use crate::error::{BatonError, ErrorCode};
use crate::graph::to_mermaid;
use rmcp::ErrorData as McpError;
use rmcp::model::{ReadResourceResult, Resource, ResourceContents, ResourceTemplate};
use serde_json::json;

const RUNS: &str = "baton://runs";
const RUN_PREFIX: &str = "baton://runs/";
const GRAPH_SUFFIX: &str = "/graph";
/// Runs in the `baton://runs` listing, and unfinished runs named by `resources/list`.
const LISTED: u32 = 100;
const JSON: &str = "application/json";
const MERMAID: &str = "text/vnd.mermaid";

/// What a resource address asks for.
#[derive(Debug, PartialEq, Eq)]
enum Address<'a> {
    Runs,
    Run(&'a str),
    Graph(&'a str),
}

fn parse(uri: &str) -> Option<Address<'_>> {
    if uri == RUNS || uri == "baton://runs/" {
        return Some(Address::Runs);
    }
    let rest = uri.strip_prefix(RUN_PREFIX)?;
    let (id, graph) = match rest.strip_suffix(GRAPH_SUFFIX) {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let plain = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match (plain, graph) {
        (true, true) => Some(Address::Graph(id)),
        (true, false) => Some(Address::Run(id)),
        (false, _) => None,
    }
}

/// The resource templates: one run, and its graph.
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new("baton://runs/{run_id}", "baton-run")
            .with_title("baton run")
            .with_description("One baton workflow run: its brief (what to do next), recent history and checkpoints.")
            .with_mime_type(JSON),
        ResourceTemplate::new("baton://runs/{run_id}/graph", "baton-run-graph")
            .with_title("baton run graph")
            .with_description(
                "A baton run's workflow as a Mermaid flowchart: steps, outcomes, the path taken, loop counts and the fan-out's tasks.",
            )
            .with_mime_type(MERMAID),
    ]
}

/// The listing, and each unfinished run.
pub async fn list(backend: &Backend, caller: Caller) -> Result<Vec<Resource>, McpError> {
    let mut resources = vec![
        Resource::new(RUNS, "baton-runs")
            .with_title("baton runs")
            .with_description("baton's workflow runs, newest change first.")
            .with_mime_type(JSON),
    ];
    let request = ListRunsParams { status: Some(StatusFilter::Open), template: None, limit: Some(LISTED), workspace: None };
    {
        let list = crate::calls::call(backend, caller, request).await.map_err(mcp_error)?;
        for run in list.runs {
            resources.push(
                Resource::new(format!("{RUN_PREFIX}{}", run.run_id), format!("baton-run-{}", run.run_id))
                    .with_title(format!("baton run: {}", run.title))
                    .with_description(format!("{} run of `{}`", run.status.as_str(), run.template))
                    .with_mime_type(JSON),
            );
        }
    }
    Ok(resources)
}

/// Read one resource.
pub async fn read(backend: &Backend, caller: Caller, uri: &str) -> Result<ReadResourceResult, McpError> {
    let Some(address) = parse(uri) else {
        return Err(McpError::resource_not_found(
            format!("unknown resource `{uri}`; baton serves {RUNS}, {RUN_PREFIX}{{run_id}} and {RUN_PREFIX}{{run_id}}{GRAPH_SUFFIX}"),
            Some(json!({ "uri": uri })),
        ));
    };
    let json = |value: serde_json::Value| ResourceContents::text(value.to_string(), uri).with_mime_type(JSON);
    let contents = match address {
        Address::Runs => {
            let request = ListRunsParams { status: None, template: None, limit: Some(LISTED), workspace: None };
            json(Reply::Runs(crate::calls::call(backend, caller, request).await.map_err(mcp_error)?).to_json())
        }
        Address::Run(id) => {
            let request = RunBriefing { run_id: id.to_string() };
            json(Reply::Briefing(Box::new(crate::calls::call(backend, caller, request).await.map_err(mcp_error)?)).to_json())
        }
        Address::Graph(id) => {
            let graph = crate::calls::call(backend, caller, GetGraphParams { run_id: id.to_string() }).await.map_err(mcp_error)?;
            ResourceContents::text(to_mermaid(&graph), uri).with_mime_type(MERMAID)
        }
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

/// A baton error as an MCP error: an unknown run is a missing resource, the rest keep
/// their structured error as data.
fn mcp_error(err: BatonError) -> McpError {
    let data = Some(json!({ "error": err }));
    match err.code {
        ErrorCode::NotFound => McpError::resource_not_found(err.message.clone(), data),
        ErrorCode::InvalidArgument => McpError::invalid_params(err.message.clone(), data),
        _ => McpError::internal_error(err.to_string(), data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_the_listing_a_run_or_its_graph() {
        assert_eq!(parse("baton://runs"), Some(Address::Runs));
        assert_eq!(parse("baton://runs/abc-1"), Some(Address::Run("abc-1")));
        assert_eq!(parse("baton://runs/abc-1/graph"), Some(Address::Graph("abc-1")));
        for bad in ["baton://runs/a/b", "baton://runs//graph", "baton://other", "file:///etc/passwd", "baton://runs/a?b"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(templates().iter().all(|t| t.uri_template.starts_with(RUN_PREFIX)));
    }
}
