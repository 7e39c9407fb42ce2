// MCP client for the end-to-end test: the official SDK's streamable HTTP client transport
// talking to an MCP server through tailbridge. Usage: node client.mjs <endpoint URL>
// Prints one JSON summary line; exits non-zero on any failure.
// TB_FRESH_CONNECTIONS=1: every HTTP request on a new TCP connection (so that an L4
// balancer in front spreads the session's requests over its backends).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Agent, fetch as undiciFetch } from "undici";

const url = new URL(process.argv[2]);
const fresh = process.env.TB_FRESH_CONNECTIONS === "1";
const freshFetch = (input, init) =>
  undiciFetch(input, { ...init, dispatcher: new Agent({ pipelining: 0 }) });
const transport = new StreamableHTTPClientTransport(url, fresh ? { fetch: freshFetch } : {});
const client = new Client({ name: "e2e-client", version: "1.0.0" });

const summary = {};
try {
  await client.connect(transport);
  summary.server = client.getServerVersion();
  summary.protocolVersion = transport.protocolVersion ?? null;
  summary.sessionId = transport.sessionId ?? null;
  const tools = await client.listTools();
  summary.tools = tools.tools.map((t) => t.name).sort();
  const progress = [];
  const result = await client.callTool(
    { name: "count", arguments: { n: 5 } },
    undefined,
    { onprogress: (p) => progress.push(p.progress) },
  );
  summary.callResult = result.content?.[0]?.text;
  summary.progress = progress;
  const echo = await client.callTool({ name: "echo", arguments: { text: "héllo ✓" } });
  summary.echo = echo.content?.[0]?.text;
  await transport.terminateSession();
  summary.terminated = transport.sessionId === undefined;
  await client.close();
  console.log(JSON.stringify(summary));
} catch (e) {
  console.error("client failed:", e?.stack || e);
  console.log(JSON.stringify({ ...summary, error: String(e) }));
  process.exit(1);
}
