//! The span attribute names and fixed values tailbridge writes, defined once.
//!
//! They follow the OpenTelemetry semantic conventions: HTTP server and client spans, and
//! the MCP conventions in the GenAI set (status Development, `mcp.*`, `gen_ai.*`,
//! `jsonrpc.*`). The names are the project's own constants: the `opentelemetry-semantic-
//! conventions` crate marks its MCP names experimental and deprecated, and a rename there
//! must not silently rename what dashboards here query. `tailbridge.*` names are ours.

// MCP (GenAI semantic conventions, "Semantic conventions for Model Context Protocol").
/// The JSON-RPC method (`tools/call`, `initialize`, ...). Required on MCP spans.
pub const MCP_METHOD_NAME: &str = "mcp.method.name";
/// The MCP revision the request declares (`MCP-Protocol-Version`, or the body's
/// `_meta["io.modelcontextprotocol/protocolVersion"]`).
pub const MCP_PROTOCOL_VERSION: &str = "mcp.protocol.version";
/// The session, hashed as in the audit log (the raw id is a bearer-like secret).
pub const MCP_SESSION_ID: &str = "mcp.session.id";
/// The request id as text; absent for notifications.
pub const JSONRPC_REQUEST_ID: &str = "jsonrpc.request.id";
/// The JSON-RPC error code of an error answer, as text.
pub const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";
/// The called tool (`tools/call`).
pub const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
/// Set to [`EXECUTE_TOOL`] on tool calls only.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
pub const EXECUTE_TOOL: &str = "execute_tool";

// General and HTTP (stable semantic conventions).
/// Why the operation failed: a JSON-RPC error code, [`TOOL_ERROR`], a refusal reason of
/// the bridge (`tool_denied`, `invalid_token`, `upstream_timeout`, ...), or an HTTP
/// status code for 5xx answers.
pub const ERROR_TYPE: &str = "error.type";
/// `error.type` of a tool result with `isError: true`.
pub const TOOL_ERROR: &str = "tool_error";
/// `error.type` when nothing more precise is known.
pub const OTHER_ERROR: &str = "_OTHER";
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
pub const HTTP_ROUTE: &str = "http.route";
pub const URL_PATH: &str = "url.path";
pub const URL_SCHEME: &str = "url.scheme";
pub const URL_FULL: &str = "url.full";
pub const URL_TEMPLATE: &str = "url.template";
pub const CLIENT_ADDRESS: &str = "client.address";
pub const CLIENT_PORT: &str = "client.port";
pub const SERVER_ADDRESS: &str = "server.address";
pub const SERVER_PORT: &str = "server.port";
pub const NETWORK_PROTOCOL_NAME: &str = "network.protocol.name";
pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
pub const NETWORK_TRANSPORT: &str = "network.transport";
pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
/// The token's user (`sub` from introspection), when auth is on.
pub const ENDUSER_ID: &str = "enduser.id";

// tailbridge's own.
/// The endpoint's configured name (the `endpoint` metric label).
pub const ENDPOINT: &str = "tailbridge.endpoint";
/// The OAuth client the token was issued to.
pub const OAUTH_CLIENT_ID: &str = "tailbridge.oauth.client_id";
/// Messages in a JSON-RPC batch POST.
pub const MCP_BATCH_SIZE: &str = "tailbridge.mcp.batch_size";
/// Upstream leg: seconds from the start of the attempt until the connection was there.
pub const UPSTREAM_CONNECT: &str = "tailbridge.upstream.connect_duration";
/// Upstream leg: seconds from the start of the attempt until the response head arrived.
pub const UPSTREAM_FIRST_BYTE: &str = "tailbridge.upstream.time_to_first_byte";
/// Upstream leg: the connection came from the pool.
pub const UPSTREAM_REUSED: &str = "tailbridge.upstream.connection_reused";
/// A call to tsidp: `introspection` or `userinfo`.
pub const IDP_CALL: &str = "tailbridge.idp.call";
