// MCP client for the tool-policy test: the official SDK's streamable HTTP client through
// tailbridge. Usage: node policy-client.mjs <endpoint URL>
// Lists tools, calls `count` with progress, then `echo` (which the test's policy denies),
// and prints one JSON summary line; exits non-zero only when the session itself fails.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const transport = new StreamableHTTPClientTransport(new URL(process.argv[2]));
const client = new Client({ name: "policy-client", version: "1.0.0" });
const summary = {};
try {
  await client.connect(transport);
  const tools = await client.listTools();
  summary.tools = tools.tools.map((t) => t.name).sort();
  const progress = [];
  const result = await client.callTool(
    { name: "count", arguments: { n: 5 } },
    undefined,
    { onprogress: (p) => progress.push(p.progress) },
  );
  summary.count = result.content?.[0]?.text;
  summary.progress = progress;
  try {
    const r = await client.callTool({ name: "echo", arguments: { text: "hi" } });
    summary.echo = { ok: true, result: r };
  } catch (e) {
    summary.echo = { ok: false, code: e.code, message: e.message };
  }
  await transport.terminateSession();
  await client.close();
  console.log(JSON.stringify(summary));
} catch (e) {
  console.error("client failed:", e?.stack || e);
  console.log(JSON.stringify({ ...summary, error: String(e) }));
  process.exit(1);
}
