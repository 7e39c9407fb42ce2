// An MCP client that connects with nothing but the endpoint URL, through tailbridge's OAuth
// broker: the SDK client discovers the bridge, registers itself as a PUBLIC client (DCR,
// token_endpoint_auth_method none) or uses a client ID metadata document URL (CIMD), and
// the browser leg runs in real headless Chromium: bridge /authorize → tsidp (oidc-provider)
// → bridge /oauth/callback → the consent page, where this script presses Allow (or Deny).
// Then tools/call, a refresh, and two concurrent refreshes with the same refresh token.
// Usage: node broker-client.mjs <endpoint URL> [dcr|cimd:<document URL>] [allow|deny] [screenshot]
// Prints one JSON summary line.
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { refreshAuthorization, discoverAuthorizationServerMetadata } from "@modelcontextprotocol/sdk/client/auth.js";
import { authorize, session } from "./oauth-steps.mjs";
import { chromium } from "playwright-core";

const [url, mode = "dcr", decision = "allow", shot] = process.argv.slice(2);
const REDIRECT = "http://127.0.0.1:9/callback";
const summary = { steps: [], mode };
const cimdUrl = mode.startsWith("cimd:") ? mode.slice(5) : undefined;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

class Provider {
  constructor() { this._tokens = undefined; this._verifier = undefined; this._info = undefined; this.code = undefined; }
  get redirectUrl() { return REDIRECT; }
  get clientMetadataUrl() { return cimdUrl; }
  get clientMetadata() {
    return {
      redirect_uris: [REDIRECT],
      client_name: "Broker E2E",
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  clientInformation() { return this._info; }
  saveClientInformation(info) { this._info = info; summary.registered = info; }
  tokens() { return this._tokens; }
  saveTokens(t) { this._tokens = t; summary.steps.push("tokens saved"); }
  saveCodeVerifier(v) { this._verifier = v; }
  codeVerifier() { return this._verifier; }
  async redirectToAuthorization(authUrl) {
    summary.authorizeUrl = authUrl.toString();
    const page = await browser.newPage();
    let done;
    const reached = new Promise((r) => { done = r; });
    // The client's redirect URI: catch the navigation instead of listening on port 9.
    await page.route(`${REDIRECT}**`, async (route) => {
      done(route.request().url());
      await route.fulfill({ status: 200, contentType: "text/plain", body: "back at the client" });
    });
    await page.goto(authUrl.toString());
    await page.waitForSelector("button[name=decision]", { timeout: 20000 });
    summary.consent = {
      title: await page.title(),
      client: (await page.textContent("#client-name"))?.trim(),
      user: (await page.textContent("#user"))?.trim(),
      redirectHost: (await page.textContent("#redirect-host"))?.trim(),
      endpoints: (await page.textContent("#endpoints"))?.trim(),
      cookies: (await page.context().cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite })),
    };
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    if (decision === "allow") await page.check("input[name=confirm]");
    await page.click(`button[value=${decision}]`);
    const back = new URL(await reached);
    summary.callback = Object.fromEntries(back.searchParams);
    delete summary.callback.code;
    if (back.searchParams.get("error")) throw new Error(`authorization error: ${back.search}`);
    this.code = back.searchParams.get("code");
    await page.close();
  }
}

try {
  const provider = new Provider();
  let transport = await authorize(url, provider, "e2e-broker", summary);
  await session(transport, "e2e-broker", "first", summary);
  summary.tokenPrefix = provider.tokens().access_token.slice(0, 4);
  summary.expiresIn = provider.tokens().expires_in;

  const origin = new URL(url).origin;
  const metadata = await discoverAuthorizationServerMetadata(origin);
  summary.metadata = {
    issuer: metadata.issuer,
    authorization_endpoint: metadata.authorization_endpoint,
    cimd: metadata.client_id_metadata_document_supported,
    iss: metadata.authorization_response_iss_parameter_supported,
  };
  const old = provider.tokens();
  const refresh = () => refreshAuthorization(origin, {
    metadata,
    clientInformation: provider.clientInformation() ?? { client_id: cimdUrl },
    refreshToken: old.refresh_token,
    resource: new URL(url),
  });
  // Two refreshes with the same single-use refresh token at once: both get the same answer.
  const [a, b] = await Promise.all([refresh(), refresh()]);
  summary.concurrentSame = a.access_token === b.access_token && a.refresh_token === b.refresh_token;
  summary.refreshed = a.access_token !== old.access_token;
  provider.saveTokens(a);
  // For tests that go on with the tokens (another instance, a restart, a refused refresh).
  summary.accessToken = a.access_token;
  summary.usedRefreshToken = old.refresh_token;
  summary.clientId = provider.clientInformation()?.client_id ?? cimdUrl;
  transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  await session(transport, "e2e-broker", "after-refresh", summary);
  console.log(JSON.stringify(summary));
} catch (e) {
  console.error("broker client failed:", e?.stack || e);
  console.log(JSON.stringify({ ...summary, error: String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
