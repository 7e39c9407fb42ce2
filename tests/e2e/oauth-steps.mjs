// Steps the OAuth test clients share (oauth-client.mjs, broker-client.mjs): the first
// connect that must end in 401 and the provider's authorization, then MCP sessions with the
// token the provider holds.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

/// Connect without a token (the SDK then runs the provider's whole authorization), finish
/// it with the code the provider caught, and return a transport that carries the token.
export async function authorize(url, provider, name, summary) {
  const transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  try {
    await new Client({ name, version: "1.0.0" }).connect(transport);
    throw new Error("expected the first connect to need authorization");
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
    summary.steps.push("401 -> authorization");
  }
  await transport.finishAuth(provider.code);
  return new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
}

/// One MCP session: list tools, call `echo` with `label`; recorded as summary[label].
export async function session(transport, name, label, summary) {
  const client = new Client({ name, version: "1.0.0" });
  await client.connect(transport);
  const tools = await client.listTools();
  const res = await client.callTool({ name: "echo", arguments: { text: label } });
  summary[label] = { tools: tools.tools.map((t) => t.name).sort(), echo: res.content?.[0]?.text };
  await transport.terminateSession().catch(() => {});
  await client.close();
}
