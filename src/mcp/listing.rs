//! Asking an upstream for its whole tool list, as a client would, through the tailnet
//! connector: `tailbridge tools pin` and the doctor's pin check.
//!
//! A server that answers `server/discover` with 2026-07-28 among its versions is asked
//! statelessly (the revision's headers and `_meta`); any other is asked the 2025-11-25 way
//! (`initialize`, `notifications/initialized`, then `tools/list` in the session, which is
//! ended after). Pages are followed through `nextCursor`.

use crate::config::Endpoint;
use serde_json::{json, Value};

/// Pages followed at most (a server that never stops paging is refused).
const MAX_PAGES: usize = 100;
/// The stateless revision.
const STATELESS: &str = "2026-07-28";
/// The session revision.
const SESSION: &str = "2025-11-25";

/// Why a list could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("{0}")]
    Transport(String),
    #[error("HTTP {status} from {url}: {head}")]
    Status {
        status: u16,
        url: String,
        head: String,
    },
    #[error("{0}")]
    Protocol(String),
}

/// The JSON-RPC answer with `id` in a JSON or SSE body. Pure.
pub fn answer_with_id(body: &str, id: i64) -> Option<Value> {
    let is_ours = |v: &Value| v.get("id").and_then(Value::as_i64) == Some(id);
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return match v {
            Value::Array(items) => items.into_iter().find(is_ours),
            v => Some(v).filter(is_ours),
        };
    }
    // SSE: the data lines of each event, joined.
    let mut data = String::new();
    for line in body.lines().chain(std::iter::once("")) {
        if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        } else if line.is_empty() && !data.is_empty() {
            if let Ok(v) = serde_json::from_str::<Value>(&data) {
                if is_ours(&v) {
                    return Some(v);
                }
            }
            data.clear();
        }
    }
    None
}

/// The tool list of one endpoint, every page, and the revision it was asked in.
pub async fn list_tools(
    ep: &Endpoint,
    client: &reqwest::Client,
) -> Result<(Vec<Value>, &'static str), ListError> {
    let token = ep
        .upstream_token
        .as_ref()
        .and_then(|t| t.resolve().ok())
        .map(|t| t.expose().to_string());
    let call = Caller {
        ep,
        client,
        token: token.as_deref(),
    };
    if call.speaks_stateless().await {
        let tools = call.pages(None, STATELESS).await?;
        return Ok((tools, STATELESS));
    }
    let (session, version) = call.initialize().await?;
    let result = call.pages(session.as_deref(), &version).await;
    if let Some(sid) = &session {
        let mut del = client
            .delete(ep.target.as_str())
            .header("mcp-session-id", sid);
        if let Some(t) = &token {
            del = del.bearer_auth(t);
        }
        let _ = del.send().await;
    }
    Ok((result?, SESSION))
}

struct Caller<'a> {
    ep: &'a Endpoint,
    client: &'a reqwest::Client,
    token: Option<&'a str>,
}

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": STATELESS,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "tailbridge-tools-pin", "version": env!("CARGO_PKG_VERSION")},
    })
}

impl Caller<'_> {
    async fn post(
        &self,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Option<String>, String), ListError> {
        let mut req = self
            .client
            .post(self.ep.target.as_str())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(t) = self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ListError::Transport(format!("{}: {e:#}", self.ep.target)))?;
        let status = resp.status().as_u16();
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp
            .text()
            .await
            .map_err(|e| ListError::Transport(e.to_string()))?;
        Ok((status, session, text))
    }

    async fn speaks_stateless(&self) -> bool {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta()}});
        let Ok((200, _, text)) = self
            .post(
                &body,
                &[
                    ("mcp-protocol-version", STATELESS),
                    ("mcp-method", "server/discover"),
                ],
            )
            .await
        else {
            return false;
        };
        answer_with_id(&text, 1)
            .and_then(|m| m["result"]["supportedVersions"].as_array().cloned())
            .is_some_and(|v| v.iter().any(|x| x == STATELESS))
    }

    async fn initialize(&self) -> Result<(Option<String>, String), ListError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": SESSION, "capabilities": {},
            "clientInfo": {"name": "tailbridge-tools-pin", "version": env!("CARGO_PKG_VERSION")}}});
        let (status, session, text) = self.post(&body, &[]).await?;
        if status != 200 {
            return Err(self.status(status, &text));
        }
        let answer = answer_with_id(&text, 1)
            .ok_or_else(|| ListError::Protocol("the initialize answer is not JSON-RPC".into()))?;
        let version = answer["result"]["protocolVersion"]
            .as_str()
            .ok_or_else(|| ListError::Protocol(format!("initialize failed: {}", answer["error"])))?
            .to_string();
        let mut headers: Vec<(&str, &str)> = vec![("mcp-protocol-version", version.as_str())];
        if let Some(s) = session.as_deref() {
            headers.push(("mcp-session-id", s));
        }
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let _ = self.post(&note, &headers).await?;
        Ok((session, version))
    }

    fn status(&self, status: u16, text: &str) -> ListError {
        ListError::Status {
            status,
            url: self.ep.target.to_string(),
            head: text.chars().take(160).collect(),
        }
    }

    async fn pages(&self, session: Option<&str>, version: &str) -> Result<Vec<Value>, ListError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for n in 0..MAX_PAGES {
            let id = 2 + n as i64;
            let mut params = serde_json::Map::new();
            if let Some(c) = &cursor {
                params.insert("cursor".into(), json!(c));
            }
            let mut headers: Vec<(&str, &str)> = vec![("mcp-protocol-version", version)];
            if version == STATELESS {
                params.insert("_meta".into(), meta());
                headers.push(("mcp-method", "tools/list"));
            }
            if let Some(s) = session {
                headers.push(("mcp-session-id", s));
            }
            let body =
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params});
            let (status, _, text) = self.post(&body, &headers).await?;
            if status != 200 {
                return Err(self.status(status, &text));
            }
            let answer = answer_with_id(&text, id).ok_or_else(|| {
                ListError::Protocol("the tools/list answer is not JSON-RPC".into())
            })?;
            if let Some(e) = answer.get("error") {
                return Err(ListError::Protocol(format!("tools/list failed: {e}")));
            }
            let result = &answer["result"];
            let (page, more) = super::pins::page(result);
            tools.extend(page.iter().cloned());
            if !more {
                return Ok(tools);
            }
            cursor = result["nextCursor"].as_str().map(str::to_string);
        }
        Err(ListError::Protocol(format!(
            "tools/list kept paging past {MAX_PAGES} pages"
        )))
    }
}

/// `tailbridge tools pin`: the pin file for every endpoint of `config` (or the one named
/// `only`, by name or path), each asked through the configured connector, and one line per
/// endpoint saying what was pinned. `Err` names the endpoint that failed and why.
pub async fn pin_file(
    config: &crate::config::Config,
    only: Option<&str>,
    timeout: std::time::Duration,
) -> Result<(super::pins::PinFile, Vec<String>), String> {
    use super::pins::{pin_of, EndpointPins, PinFile, PinnedTool, PIN_FILE_VERSION};
    if config.tailnet.mode == crate::config::TailnetMode::Tsnet {
        return Err(
            "tailnet.mode tsnet: the embedded node belongs to the running bridge; run `tailbridge tools pin` with a copy of this config whose tailnet.mode is direct (on a host with tailscaled) or socks5".into(),
        );
    }
    let endpoints: Vec<&Endpoint> = config
        .endpoints
        .iter()
        .filter(|e| only.is_none_or(|o| e.name == o || e.path == o))
        .collect();
    if endpoints.is_empty() {
        return Err(format!("no endpoint named {}", only.unwrap_or("?")));
    }
    let connector = crate::tailnet::build(config).map_err(|e| e.to_string())?;
    let proxy = connector.reqwest_proxy();
    let client_for = |verify: bool| {
        let b = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tailbridge-tools-pin/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!verify);
        match proxy.clone() {
            Some(p) => b.proxy(p),
            None => b.no_proxy(),
        }
        .build()
        .map_err(|e| e.to_string())
    };
    let now = crate::mcp::audit::now_rfc3339();
    let mut file = PinFile {
        version: PIN_FILE_VERSION,
        endpoints: Default::default(),
    };
    let mut notes = Vec::new();
    for ep in endpoints {
        let client = client_for(ep.tls_verify)?;
        let (tools, revision) = list_tools(ep, &client)
            .await
            .map_err(|e| format!("endpoint {}: {e}", ep.name))?;
        notes.push(format!(
            "endpoint {}: {} tool(s) pinned from {} (asked in {revision})",
            ep.name,
            tools.len(),
            ep.target
        ));
        let mut pins = EndpointPins {
            pinned_at: Some(now.clone()),
            target: Some(ep.target.to_string()),
            tools: Default::default(),
        };
        for t in tools {
            let Some(name) = t.get("name").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            let definition = super::pins::hashed_part(&t);
            pins.tools.insert(
                name,
                PinnedTool {
                    sha256: pin_of(&t),
                    definition,
                },
            );
        }
        file.endpoints.insert(ep.name.clone(), pins);
    }
    Ok((file, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_json_and_sse() {
        assert_eq!(
            answer_with_id(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#, 3).unwrap()["id"],
            3
        );
        assert!(answer_with_id(r#"{"jsonrpc":"2.0","id":4,"result":{}}"#, 3).is_none());
        assert_eq!(
            answer_with_id(r#"[{"jsonrpc":"2.0","id":2,"result":{}},{"jsonrpc":"2.0","id":3,"result":{"x":1}}]"#, 3).unwrap()["result"]["x"],
            1
        );
        let sse = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":3,\"result\":{\"ok\":true}}\n\n";
        assert_eq!(answer_with_id(sse, 3).unwrap()["result"]["ok"], true);
        assert!(answer_with_id("not json", 3).is_none());
    }
}
