// The MCP SDK client doing the whole OAuth flow on its own against tailbridge, as Claude.ai
// does: 401 → protected-resource metadata → AS metadata → authorize redirect (followed here,
// with a cookie jar, since there is no browser) → token through the bridge → MCP calls.
// Then a refresh through the bridge, and MCP calls with the refreshed token.
// Usage: node oauth-client.mjs <endpoint URL> <client_id> <client_secret>
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { refreshAuthorization, discoverAuthorizationServerMetadata } from "@modelcontextprotocol/sdk/client/auth.js";
import { authorize, session } from "./oauth-steps.mjs";

const [url, clientId, clientSecret] = process.argv.slice(2);
const REDIRECT = "http://127.0.0.1:9/callback";
const summary = { steps: [] };

class Provider {
  constructor() {
    this._tokens = undefined;
    this._verifier = undefined;
    this.code = undefined;
  }
  get redirectUrl() { return REDIRECT; }
  get clientMetadata() {
    return {
      redirect_uris: [REDIRECT],
      client_name: "e2e",
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    };
  }
  clientInformation() { return { client_id: clientId, client_secret: clientSecret }; }
  tokens() { return this._tokens; }
  saveTokens(t) { this._tokens = t; summary.steps.push("tokens saved"); }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() { return this._verifier; }
  async redirectToAuthorization(authUrl) {
    summary.authorizeUrl = authUrl.toString();
    // Follow redirects by hand with a cookie jar until the callback carries the code.
    const jar = new Map();
    let next = authUrl.toString();
    for (let i = 0; i < 10; i++) {
      const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
      const r = await fetch(next, { redirect: "manual", headers: cookie ? { cookie } : {} });
      for (const c of r.headers.getSetCookie()) {
        const [kv] = c.split(";");
        const [k, ...v] = kv.split("=");
        jar.set(k.trim(), v.join("="));
      }
      const loc = r.headers.get("location");
      if (!loc) throw new Error(`authorize flow stopped at ${next}: HTTP ${r.status} ${await r.text()}`);
      next = new URL(loc, next).toString();
      summary.steps.push(`redirect ${r.status} -> ${new URL(next).origin}${new URL(next).pathname}`);
      if (next.startsWith(REDIRECT)) {
        const u = new URL(next);
        if (u.searchParams.get("error")) throw new Error(`authorization error: ${u.search}`);
        this.code = u.searchParams.get("code");
        return;
      }
    }
    throw new Error("too many redirects");
  }
}

try {
  const provider = new Provider();
  let transport = await authorize(url, provider, "e2e-oauth", summary);
  await session(transport, "e2e-oauth", "first", summary);

  // Refresh through the bridge's /token, then use the new access token.
  const origin = new URL(url).origin;
  const metadata = await discoverAuthorizationServerMetadata(origin);
  summary.asIssuer = metadata.issuer;
  summary.tokenEndpoint = metadata.token_endpoint;
  const old = provider.tokens();
  const fresh = await refreshAuthorization(origin, {
    metadata,
    clientInformation: provider.clientInformation(),
    refreshToken: old.refresh_token,
    resource: new URL(url),
  });
  summary.refreshed = fresh.access_token !== old.access_token;
  provider.saveTokens(fresh);
  transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  await session(transport, "e2e-oauth", "after-refresh", summary);
  // The old refresh token was rotated away at tsidp (single use). Sent again within the
  // bridge's reuse window, the same request gets the same answer instead of a failure that
  // would log the user out (a client that refreshed twice).
  try {
    const again = await refreshAuthorization(origin, { metadata, clientInformation: provider.clientInformation(), refreshToken: old.refresh_token, resource: new URL(url) });
    summary.repeatSameAnswer = again.access_token === fresh.access_token;
  } catch (e) {
    summary.repeatSameAnswer = `failed: ${e}`;
  }
  console.log(JSON.stringify(summary));
} catch (e) {
  console.error("oauth client failed:", e?.stack || e);
  console.log(JSON.stringify({ ...summary, error: String(e) }));
  process.exit(1);
}
