//! The stdio MCP server: lists baton's tools and routes calls to the [`Backend`].

mod caller;
mod elicit;
mod output;
mod resources;
pub mod stdio;
mod tools;

use crate::api::{Caller, Reply, Request};
use crate::backend::Backend;
use crate::error::BatonError;
pub use output::{Answer, ToolError};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::json;
use std::sync::Arc;
pub use tools::{InspectParams, ToolSpec, catalog, parse_arguments};

/// What every client is told at `initialize`.
pub const INSTRUCTIONS: &str = "baton runs durable multi-role workflows (architect -> implementer -> reviewer -> tester) whose state survives restarts and is shared by all Codex sessions.\n\
- Start with `start_workflow` {goal}. Each answer is a brief: play its `role` for its `step`, then call `advance` with run_id, expected_version = the brief's version, one of its `outcomes`, and your report as `output`.\n\
- Loops are built in: `changes_requested` or a failed test sends the run back to the implementer, with the feedback in the next brief.\n\
- Decisions only the user can make: `await_human` (baton asks the user when it can), else ask them in chat and call `answer_human`.\n\
- In a new session, `resume` (no arguments) lists this workspace's unfinished runs; `resume` {run_id} gives a full briefing.\n\
- `checkpoint` before risky steps; `resume` {run_id, checkpoint} forks from it. `inspect` shows runs, history and whole reports.\n\
- A `conflict` error means someone else advanced the run: `resume` it and re-read before retrying.";

/// The MCP server handler.
#[derive(Clone)]
pub struct BatonServer {
    backend: Arc<Backend>,
    tools: Arc<Vec<ToolSpec>>,
}

impl BatonServer {
    pub fn new(backend: Arc<Backend>) -> BatonServer {
        BatonServer { backend, tools: Arc::new(catalog()) }
    }

    /// Serve MCP on stdin/stdout until the client disconnects.
    pub async fn serve_stdio(self) -> anyhow::Result<()> {
        let service = self.serve(stdio::stdio()).await?;
        let reason = service.waiting().await?;
        tracing::info!(?reason, "MCP client disconnected");
        Ok(())
    }
}

impl ServerHandler for BatonServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(Implementation::new("baton", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.iter().map(|t| t.tool.clone()).collect()))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let caller = caller::CallContext::of(&context.meta.0).caller("inspect").await;
        Ok(ListResourcesResult::with_all_items(resources::list(&self.backend, caller).await?))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(resources::templates()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let caller = caller::CallContext::of(&context.meta.0).caller("inspect").await;
        Ok(resources::read(&self.backend, caller, &request.uri).await?.into())
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.tool.name == name).map(|t| t.tool.clone())
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, McpError> {
        let Some(spec) = self.tools.iter().find(|t| t.tool.name == request.name) else {
            let known: Vec<&str> = self.tools.iter().map(|t| t.tool.name.as_ref()).collect();
            return Err(McpError::invalid_params(
                format!("unknown tool `{}`; baton's tools are: {}", request.name, known.join(", ")),
                Some(json!({ "tool": request.name })),
            ));
        };
        tracing::debug!(tool = %request.name, "call_tool");
        let call = caller::CallContext::of(&context.meta.0);
        let outcome = match spec.parse(request.arguments, &call.cwd) {
            Ok(req) => self.execute(req, call.caller(&request.name).await, &context).await,
            Err(e) => Err(e),
        };
        Ok(match outcome {
            Ok(reply) => {
                if !Answer::of(&reply).is_some_and(|kind| spec.answers.contains(&kind)) {
                    // A bug: clients that validate against the tool's outputSchema refuse this result.
                    tracing::error!(tool = %request.name, answers = ?spec.answers, "a reply outside the tool's outputSchema");
                }
                tool_result(&reply)
            }
            Err(err) => tool_error(&err),
        }
        .into())
    }
}

impl BatonServer {
    async fn execute(&self, request: Request, caller: Caller, context: &RequestContext<RoleServer>) -> Result<Reply, BatonError> {
        let asks_human = matches!(request, Request::AwaitHuman(_));
        let reply = crate::calls::call(&self.backend, caller.clone(), request).await?;
        match reply {
            Reply::Brief(brief) if asks_human => {
                Ok(Reply::Brief(Box::new(elicit::ask_user(&self.backend, caller, &context.peer, *brief).await)))
            }
            reply => Ok(reply),
        }
    }
}

/// A successful tool result: the structured answer as JSON text in its one text block
/// (MCP asks tools with structured output to send it as text too). The stdio transport
/// writes that text a second time as the result's `structuredContent` (see `encode` in
/// [`stdio`]): the answer is encoded once, straight from its type, instead of into a
/// `Value` tree, that tree into text, and the tree once more into the line (issue 22).
fn tool_result(reply: &Reply) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(reply.to_text())])
}

/// A tool result that carries a structured error, written as [`tool_result`]'s are.
fn tool_error(err: &BatonError) -> CallToolResult {
    tracing::info!(code = ?err.code, field = ?err.field, "tool error: {}", err.message);
    CallToolResult::error(vec![ContentBlock::text(ToolError::to_json(err).to_string())])
}
