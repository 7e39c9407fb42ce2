// Upstream MCP server for the end-to-end test: the official SDK's streamable HTTP server
// transport, stateful (Mcp-Session-Id), bound to loopback on $PORT.
// GET /stats (outside MCP) reports what the server saw, for the test to check.
// GET /mutate?description=… (outside MCP) changes the `echo` tool's description in every
// session (and for new ones), as a server changing a tool under its users would.
import http from "node:http";
import { randomUUID } from "node:crypto";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

const port = Number(process.env.PORT || 0);
const transports = new Map();
const stats = { posts: 0, gets: 0, deletes: 0, hosts: [], authorization: [], origins: [], calls: [], clientIds: [], users: [] };

let echoDescription = "Echoes its input";
const echoTools = [];

function newServer() {
  const server = new McpServer({ name: "e2e-upstream", version: "1.0.0" });
  server.registerTool(
    "count",
    {
      description: "Counts to n, sending one progress notification per step",
      inputSchema: { n: z.number().int().min(1).max(50) },
    },
    async ({ n }, extra) => {
      stats.calls.push("count");
      const token = extra._meta?.progressToken;
      for (let i = 1; i <= n; i++) {
        if (token !== undefined) {
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken: token, progress: i, total: n, message: `step ${i}` },
          });
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      return { content: [{ type: "text", text: `counted to ${n}` }] };
    },
  );
  const echo = server.registerTool(
    "echo",
    { description: echoDescription, inputSchema: { text: z.string() } },
    async ({ text }) => {
      stats.calls.push("echo");
      return { content: [{ type: "text", text }] };
    },
  );
  echoTools.push(echo);
  return server;
}

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString("utf8");
  return text ? JSON.parse(text) : undefined;
}

const httpServer = http.createServer(async (req, res) => {
  try {
    if (req.url.startsWith("/mutate")) {
      echoDescription = new URL(req.url, "http://x").searchParams.get("description") || "changed";
      for (const t of echoTools) t.update({ description: echoDescription });
      res.writeHead(200, { "content-type": "text/plain" }).end("ok");
      return;
    }
    if (req.url === "/stats") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(stats));
      return;
    }
    stats.hosts.push(req.headers.host || "");
    if (req.headers.authorization) stats.authorization.push(req.headers.authorization);
    if (req.headers.origin) stats.origins.push(req.headers.origin);
    if (req.headers["x-tailbridge-client-id"]) stats.clientIds.push(req.headers["x-tailbridge-client-id"]);
    if (req.headers["x-tailbridge-user"]) stats.users.push(req.headers["x-tailbridge-user"]);
    const sid = req.headers["mcp-session-id"];
    if (req.method === "POST") {
      stats.posts++;
      const body = await readJson(req);
      let transport = sid ? transports.get(sid) : undefined;
      if (!transport) {
        if (sid) {
          res.writeHead(404, { "content-type": "application/json" });
          res.end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32001, message: "Session not found" }, id: null }));
          return;
        }
        transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => transports.set(id, transport),
        });
        transport.onclose = () => transport.sessionId && transports.delete(transport.sessionId);
        await newServer().connect(transport);
      }
      await transport.handleRequest(req, res, body);
      return;
    }
    if (req.method === "GET" || req.method === "DELETE") {
      if (req.method === "GET") stats.gets++;
      else stats.deletes++;
      const transport = sid && transports.get(sid);
      if (!transport) {
        res.writeHead(404).end();
        return;
      }
      await transport.handleRequest(req, res);
      return;
    }
    res.writeHead(405, { allow: "GET, POST, DELETE" }).end();
  } catch (e) {
    console.error(e);
    if (!res.headersSent) res.writeHead(500).end();
  }
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening ${httpServer.address().port}`);
});
