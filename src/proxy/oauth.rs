//! The request_filter steps that belong to the OAuth resource server:
//! discovery documents, the tsidp facade (`/authorize`, `/token`, `/register`) and
//! bearer authentication. Each step returns `None` when the request is not its business.

use super::client_ip;
use super::ctx::Ctx;
use super::respond::{self, Rejection};
use super::Bridge;
use crate::auth::metadata::{self, PRM_PATH};
use crate::auth::{bearer, AuthError, AuthRuntime, REGISTRATION_KEY};
use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::json;

/// Largest `/register` request body read.
const MAX_REGISTRATION_BODY: usize = 16 << 10;
/// Largest IdP answer relayed for `/register`.
const MAX_REGISTRATION_ANSWER: u64 = 64 << 10;
/// `Retry-After` for 503 answers caused by the IdP.
const IDP_RETRY_AFTER: &str = "5";

const JSON: &str = "application/json";

/// Discovery documents are public; let browser-based clients read them.
const CORS: (&str, &str) = ("access-control-allow-origin", "*");

/// A header's value as text, owned (so the session can be borrowed mutably after).
fn header_text(
    req: &pingora::http::RequestHeader,
    name: http::header::HeaderName,
) -> Option<String> {
    req.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Every `Cookie` header joined (HTTP/2 clients may send one per cookie, RFC 9113 §8.2.3).
fn cookie_header(req: &pingora::http::RequestHeader) -> Option<String> {
    let all: Vec<&str> = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!all.is_empty()).then(|| all.join("; "))
}

fn is_get(session: &Session) -> bool {
    matches!(
        session.req_header().method,
        http::Method::GET | http::Method::HEAD
    )
}

impl Bridge {
    /// Step: `/.well-known/…` documents (RFC 9728, RFC 8414).
    pub(super) async fn well_known(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Option<pingora::Result<bool>> {
        let auth = self.auth.as_ref()?;
        let path = session.req_header().uri.path().to_string();
        if !path.starts_with("/.well-known/") {
            return None;
        }
        ctx.label = Some("_well_known");
        let origin = auth.cfg.public_origin.as_str();
        let doc = if path == PRM_PATH || path == format!("{PRM_PATH}/") {
            Some(metadata::protected_resource(
                origin,
                None,
                auth.advertised_server(),
            ))
        } else if let Some(rest) = path.strip_prefix(PRM_PATH) {
            let rest = rest.trim_end_matches('/');
            self.routes
                .iter()
                .find(|r| r.ep.enabled && r.ep.path == rest)
                .map(|r| {
                    metadata::protected_resource(origin, Some(&r.ep.path), auth.advertised_server())
                })
        } else if path == "/.well-known/oauth-authorization-server"
            || path == "/.well-known/openid-configuration"
        {
            if !is_get(session) {
                return Some(self.refuse(session, ctx, Rejection::MethodNotAllowed).await);
            }
            return Some(self.as_metadata(session, ctx, auth).await);
        } else {
            None
        };
        let Some(doc) = doc else {
            return Some(self.refuse(session, ctx, Rejection::NotFound).await);
        };
        if !is_get(session) {
            return Some(self.refuse(session, ctx, Rejection::MethodNotAllowed).await);
        }
        ctx.status = 200;
        let body = Bytes::from(doc.to_string());
        Some(
            respond::send(session, 200, JSON, &[CORS], body, self.hsts())
                .await
                .map(|()| true),
        )
    }

    async fn as_metadata(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        auth: &AuthRuntime,
    ) -> pingora::Result<bool> {
        if let Some(broker) = &auth.broker {
            // The broker is the authorization server: its own document only (nothing of
            // tsidp's leaks through, such as endpoints clients must not use directly).
            let doc = broker.metadata();

            ctx.status = 200;
            respond::send(
                session,
                200,
                JSON,
                &[CORS],
                Bytes::from(doc.to_string()),
                self.hsts(),
            )
            .await?;
            return Ok(true);
        }
        let fetched = auth
            .metadata
            .get(&auth.http, auth.cfg.introspection.max_response_bytes)
            .await;

        let doc = fetched.as_ref().ok().and_then(|v| {
            metadata::rewrite_as_metadata(
                v,
                &auth.cfg.public_origin,
                auth.cfg.advertise,
                auth.cfg.registration.enabled,
            )
        });
        match doc {
            Some(doc) => {
                ctx.status = 200;
                respond::send(
                    session,
                    200,
                    JSON,
                    &[CORS],
                    Bytes::from(doc.to_string()),
                    self.hsts(),
                )
                .await?;
            }
            None => {
                if let Err(e) = &fetched {
                    log::warn!("authorization-server metadata unavailable: {e}");
                }
                self.metrics
                    .idp_metadata
                    .with_label_values(&["error"])
                    .inc();
                ctx.status = 503;
                let body = json!({"error": "temporarily_unavailable", "message": "the identity provider cannot be reached"});
                respond::send(
                    session,
                    503,
                    JSON,
                    &[("retry-after", IDP_RETRY_AFTER)],
                    Bytes::from(body.to_string()),
                    self.hsts(),
                )
                .await?;
            }
        }
        Ok(true)
    }

    /// Step: the tsidp facade. `/authorize` redirects, `/token` is proxied (the caller
    /// continues to the upstream phases with `ctx.idp_path` set), `/register` is handled here.
    pub(super) async fn facade(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Option<pingora::Result<bool>> {
        let auth = self.auth.as_ref()?;
        let path = session.req_header().uri.path();
        match path {
            "/authorize" => {
                ctx.label = Some("_authorize");
                if !is_get(session) {
                    return Some(self.refuse(session, ctx, Rejection::MethodNotAllowed).await);
                }
                if let Some(broker) = &auth.broker {
                    let query = session.req_header().uri.query().map(str::to_string);
                    let cookies = cookie_header(session.req_header());
                    let ip = client_ip(session);
                    if let Some(reply) = broker
                        .authorize(query.as_deref(), cookies.as_deref(), ip)
                        .await
                    {
                        return Some(self.send_reply(session, ctx, reply).await);
                    }
                }
                // The query goes on byte for byte (requirements #12).
                let mut location = auth.authorization_endpoint();
                if let Some(q) = session.req_header().uri.query() {
                    location.push('?');
                    location.push_str(q);
                }
                ctx.status = 302;
                Some(
                    respond::send(
                        session,
                        302,
                        JSON,
                        &[("location", &location)],
                        Bytes::new(),
                        self.hsts(),
                    )
                    .await
                    .map(|()| true),
                )
            }
            crate::auth::broker::CALLBACK_PATH if auth.broker.is_some() => {
                ctx.label = Some("_oauth");
                if !is_get(session) {
                    return Some(self.refuse(session, ctx, Rejection::MethodNotAllowed).await);
                }
                let broker = auth.broker.as_ref()?;
                let req = session.req_header();
                let query = req.uri.query().map(str::to_string);
                let cookies = cookie_header(req);
                let reply = broker
                    .callback(query.as_deref(), cookies.as_deref(), client_ip(session))
                    .await;
                Some(self.send_reply(session, ctx, reply).await)
            }
            crate::auth::broker::CONSENT_PATH if auth.broker.is_some() => {
                ctx.label = Some("_oauth");
                if session.req_header().method != http::Method::POST {
                    return Some(self.refuse(session, ctx, Rejection::MethodNotAllowed).await);
                }
                let broker = auth.broker.as_ref()?;
                let req = session.req_header();
                let cookies = cookie_header(req);
                let origin = header_text(req, http::header::ORIGIN);
                let body = match self
                    .small_body(session, ctx, crate::auth::broker::MAX_BODY)
                    .await
                {
                    Ok(b) => b,
                    Err(answered) => return Some(answered),
                };
                let body = String::from_utf8_lossy(&body).into_owned();
                let reply = broker
                    .consent(&body, cookies.as_deref(), origin.as_deref())
                    .await;
                Some(self.send_reply(session, ctx, reply).await)
            }
            "/token" => {
                ctx.label = Some("_token");
                if session.req_header().method != http::Method::POST {
                    return Some(self.refuse(session, ctx, Rejection::MethodNotAllowed).await);
                }
                let idp_path = format!("{}/token", auth.cfg.issuer.path().trim_end_matches('/'));
                session.enable_retry_buffering();
                let body = match self
                    .small_body(session, ctx, crate::auth::broker::MAX_BODY)
                    .await
                {
                    Ok(b) => b,
                    Err(answered) => return Some(answered),
                };
                let pairs = crate::auth::broker::form(&String::from_utf8_lossy(&body));
                let authz = header_text(session.req_header(), http::header::AUTHORIZATION);
                if let Some(broker) = &auth.broker {
                    let presented = crate::auth::broker::presented(authz.as_deref(), &pairs);
                    let owns = broker.owns_token_request(
                        &pairs,
                        presented.as_ref().unwrap_or(&Default::default()),
                    );
                    match presented {
                        Ok(p) if owns => {
                            let reply = broker.token(&pairs, p, client_ip(session)).await;
                            return Some(self.send_reply(session, ctx, reply).await);
                        }
                        Err(why) if owns => {
                            let reply = crate::auth::broker::Reply::oauth_error(
                                400,
                                "invalid_request",
                                &why,
                            );
                            return Some(self.send_reply(session, ctx, reply).await);
                        }
                        _ => {}
                    }
                }
                ctx.idp_path = Some(idp_path);
                if pairs
                    .iter()
                    .any(|(k, v)| k == "grant_type" && v == "refresh_token")
                {
                    return Some(self.relay_refresh(session, ctx, auth, authz, body).await);
                }
                // Other grants go to tsidp through the upstream phases (the body is replayed).
                None
            }
            "/register" => {
                ctx.label = Some("_register");
                if session.req_header().method != http::Method::POST {
                    return Some(self.refuse(session, ctx, Rejection::MethodNotAllowed).await);
                }
                if let Some(broker) = &auth.broker {
                    let body = match self
                        .small_body(session, ctx, crate::auth::broker::MAX_BODY)
                        .await
                    {
                        Ok(b) => b,
                        Err(answered) => return Some(answered),
                    };
                    let reply = broker.register(&body, client_ip(session));
                    return Some(self.send_reply(session, ctx, reply).await);
                }
                if !auth.cfg.registration.enabled {
                    ctx.status = 404;
                    ctx.rejection = Some(Rejection::NotFound);
                    let b = json!({
                        "error": "registration_disabled",
                        "error_description": "dynamic client registration is off at this bridge: turn on auth.broker (the bridge registers clients itself) or auth.registration (proxied to tsidp), or give the client a client id and secret registered at tsidp",
                    });
                    return Some(
                        respond::send(
                            session,
                            404,
                            JSON,
                            &[],
                            Bytes::from(b.to_string()),
                            self.hsts(),
                        )
                        .await
                        .map(|()| true),
                    );
                }
                Some(self.register(session, ctx, auth).await)
            }
            _ => None,
        }
    }

    /// A pass-through refresh grant, relayed to tsidp once for every identical request
    /// within the reuse window (`auth::relay`).
    async fn relay_refresh(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        auth: &AuthRuntime,
        authz: Option<String>,
        body: Vec<u8>,
    ) -> pingora::Result<bool> {
        let url = format!("{}/token", auth.idp_base);
        let (answer, called) = auth
            .relay
            .refresh(&auth.http, &url, authz.as_deref(), body)
            .await;
        if !called {
            log::info!(
                "/token: a repeated refresh got the answer of the identical request before it"
            );
        }
        let relayed = match answer {
            Ok(r) | Err(crate::auth::relay::RelayError::Upstream(r)) => r,
            Err(crate::auth::relay::RelayError::Transport(e)) => {
                log::warn!("/token: IdP unreachable: {e}");
                ctx.status = 503;
                let b = json!({"error": "temporarily_unavailable", "error_description": "the identity provider cannot be reached; retry"});
                return respond::send(
                    session,
                    503,
                    JSON,
                    &[("retry-after", IDP_RETRY_AFTER)],
                    Bytes::from(b.to_string()),
                    self.hsts(),
                )
                .await
                .map(|()| true);
            }
        };
        ctx.status = relayed.status;
        respond::send(
            session,
            relayed.status,
            &relayed.content_type,
            &[("pragma", "no-cache")],
            relayed.body.clone(),
            self.hsts(),
        )
        .await
        .map(|()| true)
    }

    /// Read a whole request body of at most `max` bytes; `Err` is the finished answer (413
    /// for a larger one, or the read's own error).
    async fn small_body(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        max: usize,
    ) -> Result<Vec<u8>, pingora::Result<bool>> {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > max {
                        return Err(self.refuse(session, ctx, Rejection::BodyTooLarge).await);
                    }
                }
                Ok(None) => return Ok(body),
                Err(e) => return Err(Err(e)),
            }
        }
    }

    /// Send a reply the broker made.
    async fn send_reply(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        reply: crate::auth::broker::Reply,
    ) -> pingora::Result<bool> {
        ctx.status = reply.status;
        let extra: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        respond::send(
            session,
            reply.status,
            reply.content_type,
            &extra,
            Bytes::from(reply.body),
            self.hsts(),
        )
        .await
        .map(|()| true)
    }

    async fn register(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        auth: &AuthRuntime,
    ) -> pingora::Result<bool> {
        let body = match self.small_body(session, ctx, MAX_REGISTRATION_BODY).await {
            Ok(b) => b,
            Err(answered) => return answered,
        };
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let uris: Option<Vec<&str>> = doc
            .get("redirect_uris")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|u| u.as_str()).collect());
        let allowed = &auth.cfg.registration.allowed_redirect_uris;
        let ok = uris.as_ref().is_some_and(|u| {
            !u.is_empty()
                && u.len() == doc["redirect_uris"].as_array().map_or(0, Vec::len)
                && u.iter().all(|x| {
                    allowed
                        .iter()
                        .filter_map(|a| crate::auth::redirect::parse_allowed(a))
                        .any(|a| crate::auth::redirect::allows(&a, x))
                })
        });
        if !ok {
            ctx.status = 400;
            let b = json!({"error": "invalid_redirect_uri", "error_description": "redirect_uris must be listed in auth.registration.allowed_redirect_uris (a loopback entry without a port allows any port)"});
            respond::send(
                session,
                400,
                JSON,
                &[],
                Bytes::from(b.to_string()),
                self.hsts(),
            )
            .await?;
            return Ok(true);
        }
        if !auth.registrations.allow(REGISTRATION_KEY) {
            ctx.status = 429;
            let b = json!({"error": "rate_limited", "message": "too many registrations"});
            respond::send(
                session,
                429,
                JSON,
                &[("retry-after", "60")],
                Bytes::from(b.to_string()),
                self.hsts(),
            )
            .await?;
            return Ok(true);
        }
        // tsidp has no public clients: one registered with `none` could never get a token.
        // RFC 7591 §3.2.1 lets the server replace metadata; clients read the answer back.
        let mut doc = doc;
        let body = if doc
            .get("token_endpoint_auth_method")
            .and_then(|m| m.as_str())
            == Some("none")
        {
            doc["token_endpoint_auth_method"] = json!("client_secret_post");
            serde_json::to_vec(&doc).unwrap_or(body)
        } else {
            body
        };
        // tsidp's registration endpoint from its metadata (`<issuer>/register` before that).
        let url = auth
            .metadata
            .endpoint(
                &auth.http,
                auth.cfg.introspection.max_response_bytes,
                "registration_endpoint",
                &auth.idp_base,
                "register",
            )
            .await;
        let sent = auth
            .http
            .post(url)
            .header("content-type", JSON)
            .header("accept", JSON)
            .body(body)
            .send()
            .await;
        let relayed = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let ctype = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(JSON)
                    .to_string();
                crate::auth::introspect::read_capped(resp, MAX_REGISTRATION_ANSWER)
                    .await
                    .ok()
                    .map(|b| (status, ctype, b))
            }
            Err(e) => {
                log::warn!("/register: IdP unreachable: {e}");
                None
            }
        };
        match relayed {
            Some((status, ctype, b)) => {
                ctx.status = status;
                respond::send(session, status, &ctype, &[], Bytes::from(b), self.hsts()).await?;
            }
            None => {
                ctx.status = 503;
                let b = json!({"error": "temporarily_unavailable"});
                respond::send(
                    session,
                    503,
                    JSON,
                    &[("retry-after", IDP_RETRY_AFTER)],
                    Bytes::from(b.to_string()),
                    self.hsts(),
                )
                .await?;
            }
        }
        Ok(true)
    }

    /// Step: authenticate a request to an endpoint (auth on only).
    pub(super) async fn authenticate(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Option<pingora::Result<bool>> {
        let auth = self.auth.as_ref()?;
        let route = &self.routes[ctx.endpoint?];
        let req = session.req_header();
        let result = if bearer::token_in_query(req.uri.query()) {
            Err(AuthError::QueryToken)
        } else {
            match bearer::parse(
                req.headers
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
            ) {
                bearer::Presented::Nothing | bearer::Presented::OtherScheme => {
                    Err(AuthError::Missing)
                }
                bearer::Presented::Malformed => Err(AuthError::Malformed),
                bearer::Presented::Token(t) => match &auth.broker {
                    Some(b) if crate::auth::broker::Broker::is_broker_token(t) => {
                        b.verify(t, &route.public_url)
                    }
                    _ => {
                        auth.verifier
                            .verify(
                                t,
                                client_ip(session),
                                &route.public_url,
                                ctx.trace.as_deref(),
                            )
                            .await
                    }
                },
            }
        };
        match result {
            Ok(p) => {
                ctx.principal = Some(p);
                None
            }
            Err(e) => Some(self.refuse_auth(session, ctx, auth, e).await),
        }
    }

    async fn refuse_auth(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        auth: &AuthRuntime,
        e: AuthError,
    ) -> pingora::Result<bool> {
        ctx.status = e.status();
        ctx.auth_error = Some(e);
        self.metrics
            .auth_rejections
            .with_label_values(&[e.reason()])
            .inc();
        let path = ctx
            .endpoint
            .map(|i| self.routes[i].ep.path.as_str())
            .unwrap_or("");
        // What is wrong, said without secrets (RFC 6750 §3 `error_description`).
        let audience = match auth.cfg.audience_check {
            crate::config::AudienceCheck::Endpoint => format!("{}{path}", auth.cfg.public_origin),
            _ => auth.cfg.public_origin.clone(),
        };
        let description = e.description(&audience);
        let challenge = metadata::challenge(
            &metadata::prm_url(&auth.cfg.public_origin, path),
            e.challenge_error()
                .map(|(code, _)| (code, description.as_str())),
        );
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if matches!(e.status(), 400 | 401 | 403) {
            extra.push(("www-authenticate", &challenge));
        }
        match e.status() {
            503 => extra.push(("retry-after", IDP_RETRY_AFTER)),
            429 => extra.push(("retry-after", "1")),
            _ => {}
        }
        let body = json!({"error": e.reason(), "error_description": description});
        session.set_keepalive(None);
        respond::send(
            session,
            e.status(),
            JSON,
            &extra,
            Bytes::from(body.to_string()),
            self.hsts(),
        )
        .await?;
        Ok(true)
    }
}
