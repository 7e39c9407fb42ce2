// A tsidp stand-in built on oidc-provider, configured to behave like tsidp:
// opaque 300 s access tokens, refresh tokens, client_secret_basic, pre-registered clients
// (no public clients), introspection that requires client authentication and is allowed for
// any registered client, and an authorize step that logs a fixed user in with no page.
// Userinfo (`/me`) answers for any valid access token, resource-bound ones included, as tsidp
// does (oidc-provider itself refuses tokens with an audience there), with the claims in
// EXTRA_CLAIMS added: tsidp's `extraClaims` with `"includeInUserInfo": true`.
// Usage: PORT=0 CLIENTS='[{"client_id":..,"client_secret":..,"redirect_uris":[..]}]' \
//   [EXTRA_CLAIMS='{"mcp_tools":[..]}'] node idp.mjs
// Prints "listening <port>".
import http from "node:http";
import Provider from "oidc-provider";

const SCOPE = "openid profile email";
const USER = { sub: "1001", username: "alice@example.com" };

const server = http.createServer();
await new Promise((r) => server.listen(Number(process.env.PORT || 0), "127.0.0.1", r));
const port = server.address().port;
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.CLIENTS || "[]").map((c) => ({
  grant_types: ["authorization_code", "refresh_token"],
  response_types: ["code"],
  token_endpoint_auth_method: "client_secret_basic",
  ...c,
}));

const provider = new Provider(issuer, {
  clients,
  clientBasedCORS: () => true,
  findAccount: (_ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, username: USER.username, email: USER.username }),
  }),
  claims: { openid: ["sub"], profile: ["username"], email: ["email"] },
  scopes: ["openid", "profile", "email", "offline_access"],
  pkce: { required: () => false },
  ttl: { AccessToken: 300, AuthorizationCode: 60, RefreshToken: 30 * 24 * 3600, Grant: 3600, Interaction: 600, Session: 3600 },
  issueRefreshToken: () => true,
  rotateRefreshToken: true,
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: true, allowedPolicy: () => true },
    revocation: { enabled: true },
    // REGISTRATION=1: dynamic client registration (tsidp offers it to callers with allow_dcr).
    registration: { enabled: process.env.REGISTRATION === "1" },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({ scope: SCOPE, accessTokenFormat: "opaque", accessTokenTTL: 300 }),
    },
  },
  extraTokenClaims: () => ({ username: USER.username }),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.proxy = false;

const EXTRA_CLAIMS = JSON.parse(process.env.EXTRA_CLAIMS || "{}");
const stats = { introspections: 0, tokens: 0, userinfo: 0 };
const callback = provider.callback();
server.on("request", async (req, res) => {
  try {
    if (req.url === "/stats") {
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(stats));
      return;
    }
    if (req.url === "/me" && req.method === "GET") {
      stats.userinfo++;
      const auth = req.headers.authorization || "";
      const token = auth.startsWith("Bearer ") ? auth.slice(7) : "";
      const at = token && (await provider.AccessToken.find(token));
      if (!at || at.isExpired) {
        res.writeHead(401, { "content-type": "application/json", "www-authenticate": 'Bearer error="invalid_token"' });
        res.end(JSON.stringify({ error: "invalid_token" }));
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ sub: at.accountId, username: USER.username, email: USER.username, ...EXTRA_CLAIMS }));
      return;
    }
    if (req.url.startsWith("/token/introspection")) stats.introspections++;
    else if (req.url.startsWith("/token")) stats.tokens++;
    if (req.url.startsWith("/interaction/")) {
      // tsidp has no login page: the tailnet identity is the login. Approve at once.
      const details = await provider.interactionDetails(req, res);
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: USER.sub, clientId: details.params.client_id });
      // Grant what was asked for (tsidp would refuse unknown scopes; oidc-provider drops them).
      const asked = details.params.scope || SCOPE;
      grant.addOIDCScope(asked);
      if (details.params.resource) {
        for (const r of [].concat(details.params.resource)) grant.addResourceScope(r, asked);
      }
      const grantId = await grant.save();
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId: USER.sub }, consent: { grantId } },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    callback(req, res);
  } catch (e) {
    console.error("idp error:", e);
    if (!res.headersSent) res.writeHead(500).end();
  }
});
console.log(`listening ${port}`);
