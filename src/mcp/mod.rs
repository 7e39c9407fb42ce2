//! The MCP-aware layer: what the bridge understands of the JSON-RPC traffic it carries.
//!
//! Framing, policy and accounting are separate pieces, each pure:
//! - [`json`]: a strict JSON scanner (no tree); [`jsonrpc`]: client messages and server
//!   responses; [`sse`]: the event-stream parser;
//! - [`policy`] and [`glob`]: who may call which tool;
//! - [`exchange`]: one POST's messages and the outcomes of the responses as they pass;
//!   [`audit`]: the audit line.
//!
//! This module joins them into the per-endpoint runtime the proxy phases call
//! ([`EndpointTools`]), the refusals the bridge writes itself, and the 2026-07-28
//! mirrored-header check.

pub mod audit;
pub mod exchange;
pub mod glob;
pub mod json;
pub mod jsonrpc;
pub mod limits;
pub mod listing;
pub mod pins;
pub mod policy;
pub mod sse;

use jsonrpc::{Id, Inbound, MessageKind};
use policy::{Caller, Scope, ToolPolicy};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// JSON-RPC error code of a tool call the policy refused (implementation-defined server
/// error range). Documented in the README.
pub const TOOL_DENIED: i64 = -32003;
/// JSON-RPC error code of a call to a tool that is not as pinned (`on_change: hide`).
pub const TOOL_UNPINNED: i64 = -32004;
/// JSON-RPC error code of a call over a per-identity limit (`tools.limits`).
pub const TOOL_RATE_LIMITED: i64 = -32005;
/// JSON-RPC error code of a request whose mirrored headers disagree with its body (MCP
/// 2026-07-28 `HeaderMismatch`).
pub const HEADER_MISMATCH: i64 = -32020;
/// JSON-RPC parse error, for bodies the policy cannot read.
pub const PARSE_ERROR: i64 = -32700;
/// The first protocol revision whose POSTs mirror `Mcp-Method` / `Mcp-Name`.
pub const MIRRORED_HEADERS_SINCE: &str = "2026-07-28";
/// How many distinct tool names one endpoint may have as metric labels.
pub const MAX_TOOL_LABELS: usize = 200;
/// The `tool` label of a `tools/call` for a name the upstream never listed (or past the cap).
pub const OTHER_TOOL: &str = "_other";

/// The tool names an endpoint's upstream announced in `tools/list`: the only values its
/// `tool` metric label takes (besides `_other`), up to [`MAX_TOOL_LABELS`].
#[derive(Debug)]
pub struct ToolLabels {
    names: RwLock<HashSet<Arc<str>>>,
    other: Arc<str>,
}

impl Default for ToolLabels {
    fn default() -> Self {
        ToolLabels {
            names: RwLock::default(),
            other: Arc::from(OTHER_TOOL),
        }
    }
}

impl ToolLabels {
    /// Record names from a `tools/list` result.
    pub fn learn(&self, names: &[String]) {
        let Ok(mut set) = self.names.write() else {
            return;
        };
        for n in names {
            if set.len() >= MAX_TOOL_LABELS {
                break;
            }
            if !set.contains(n.as_str()) && n.len() <= 128 {
                set.insert(Arc::from(n.as_str()));
            }
        }
    }

    /// The label for a called tool.
    pub fn label(&self, tool: Option<&str>) -> Arc<str> {
        let known = tool.and_then(|t| self.names.read().ok()?.get(t).cloned());
        known.unwrap_or_else(|| self.other.clone())
    }
}

/// The MCP layer of one endpoint.
#[derive(Debug)]
pub struct EndpointTools {
    pub policy: ToolPolicy,
    /// The policy can deny something (see [`ToolPolicy::in_force`]).
    pub in_force: bool,
    pub labels: ToolLabels,
    /// Pinned (or first-seen) tool definitions.
    pub watch: pins::ToolWatch,
    /// Per-identity call limits.
    pub limiter: limits::Limiter,
    /// What the policy lets through depends on who asks (grants, or the grants claim):
    /// filtered lists are marked `cacheScope: private`.
    pub per_identity: bool,
}

impl EndpointTools {
    /// `claims_on`: `auth.tool_grants_claim` is set.
    pub fn new(
        policy: ToolPolicy,
        watch: pins::ToolWatch,
        limiter: limits::Limiter,
        claims_on: bool,
    ) -> Self {
        let in_force = policy.in_force();
        EndpointTools {
            per_identity: in_force && (!policy.grants.is_empty() || claims_on),
            in_force,
            policy,
            labels: ToolLabels::default(),
            watch,
            limiter,
        }
    }

    /// Whether POST bodies must be readable for this endpoint to enforce something.
    pub fn enforcing(&self) -> bool {
        self.in_force || self.watch.hides() || !self.limiter.is_empty()
    }

    /// Whether `tools/list` results are rewritten.
    pub fn filters_lists(&self) -> bool {
        self.in_force || self.watch.hides()
    }
}

/// Check every `tools/call` of a POST against the pins (`hide`) and the limits of the
/// endpoint. A refused call refuses the whole POST, as the policy does: the answer names
/// the refused tool for every request in it. `who`: the identity limits count under.
pub fn guard(
    inbound: &Inbound,
    tools: &EndpointTools,
    caller: &Caller<'_>,
    who: &str,
    now: std::time::Instant,
) -> Option<(Option<serde_json::Value>, exchange::Outcome)> {
    let calls = || {
        inbound
            .messages
            .iter()
            .filter(|m| m.kind != MessageKind::Response)
            .filter_map(|m| m.tool())
    };
    let mut refusal: Option<(String, i64, String, exchange::Outcome, serde_json::Value)> = None;
    for tool in calls() {
        if let Some(why) = tools.watch.refuses_call(tool) {
            refusal = Some((
                tool.to_string(),
                TOOL_UNPINNED,
                pins::unpinned_message(tool, why),
                exchange::Outcome::Unpinned,
                serde_json::json!({"reason": "unpinned", "tool": tool, "change": why.as_str()}),
            ));
            break;
        }
    }
    if refusal.is_none() && !tools.limiter.is_empty() {
        for tool in calls() {
            if let Err(over) = tools.limiter.take(tool, caller, who, now) {
                refusal = Some((
                    tool.to_string(),
                    TOOL_RATE_LIMITED,
                    limits::over_budget_message(tool, &over),
                    exchange::Outcome::RateLimited,
                    serde_json::json!({
                        "reason": "rate_limited",
                        "tool": tool,
                        "per_minute": over.per_minute,
                        "retry_after_seconds": over.retry_after.as_secs_f64().ceil(),
                    }),
                ));
                break;
            }
        }
    }
    let (tool, code, message, outcome, data) = refusal?;
    let answers: Vec<serde_json::Value> = inbound
        .messages
        .iter()
        .filter_map(|m| {
            let id = m.id.as_ref().filter(|_| m.kind == MessageKind::Request)?;
            Some(if m.tool() == Some(tool.as_str()) {
                error(id, code, message.clone(), data.clone())
            } else {
                error(
                    id,
                    code,
                    format!("not sent: the batch also calls `{tool}`: {message}"),
                    data.clone(),
                )
            })
        })
        .collect();
    let answer = match (inbound.batch, answers.len()) {
        (_, 0) => None,
        (false, _) => answers.into_iter().next(),
        (true, _) => Some(serde_json::Value::Array(answers)),
    };
    Some((answer, outcome))
}

/// What the policy says about one POST.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Forward it.
    Forward,
    /// Answer locally with this JSON-RPC payload (object, or array for a batch); `None`
    /// when nothing is to be answered (only notifications were refused). `denied` lists
    /// the indices of the refused messages.
    Refuse {
        answer: Option<serde_json::Value>,
        denied: Vec<usize>,
    },
}

/// The message a refused call carries.
pub fn denial_message(tool: &str, who: &str, endpoint_path: &str) -> String {
    format!("tool `{tool}` is not allowed for {who} on {endpoint_path}")
}

fn error(id: &Id, code: i64, message: String, data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.to_value(),
        "error": {"code": code, "message": message, "data": data},
    })
}

/// Apply `policy` to every `tools/call` in `inbound`. A batch with any refused call is
/// refused whole: no element reaches the upstream, every request in it gets an error
/// (the refused ones naming their tool, the others naming the refused one).
pub fn judge(
    inbound: &Inbound,
    policy: &ToolPolicy,
    scope: Scope<'_>,
    caller: &Caller<'_>,
) -> Judgement {
    let denied: Vec<usize> = inbound
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            m.method.as_deref() == Some("tools/call")
                && m.kind != MessageKind::Response
                && !policy.allows(scope, m.tool().unwrap_or_default(), caller)
        })
        .map(|(i, _)| i)
        .collect();
    let Some(&first) = denied.first() else {
        return Judgement::Forward;
    };
    let who = caller.display();
    let first_tool = inbound.messages[first].tool().unwrap_or_default();
    let answers: Vec<serde_json::Value> = inbound
        .messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let id = m.id.as_ref().filter(|_| m.kind == MessageKind::Request)?;
            let tool = m.tool().unwrap_or_default();
            Some(if denied.contains(&i) {
                error(
                    id,
                    TOOL_DENIED,
                    denial_message(tool, who, scope.path),
                    serde_json::json!({"reason": "tool_denied", "tool": tool, "endpoint": scope.path}),
                )
            } else {
                error(
                    id,
                    TOOL_DENIED,
                    format!(
                        "not sent: the batch also calls tool `{first_tool}`, which is not allowed for {who} on {}",
                        scope.path
                    ),
                    serde_json::json!({"reason": "batch_refused", "tool": first_tool, "endpoint": scope.path}),
                )
            })
        })
        .collect();
    let answer = match (inbound.batch, answers.len()) {
        (_, 0) => None,
        (false, _) => answers.into_iter().next(),
        (true, _) => Some(serde_json::Value::Array(answers)),
    };
    Judgement::Refuse { answer, denied }
}

/// How the client wants a locally written JSON-RPC answer: JSON unless its `Accept`
/// names only `text/event-stream`.
pub fn wants_sse(accept: Option<&str>) -> bool {
    let Some(a) = accept else { return false };
    let types: Vec<String> = a
        .split(',')
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    let json = types
        .iter()
        .any(|t| t == "application/json" || t == "application/*" || t == "*/*");
    !json && types.iter().any(|t| t == "text/event-stream")
}

/// The body and content type of a locally written answer.
pub fn render_answer(answer: &serde_json::Value, sse: bool) -> (&'static str, Vec<u8>) {
    let json = serde_json::to_vec(answer).unwrap_or_default();
    if sse {
        (
            "text/event-stream",
            sse::replace_data(b"event: message\n", &json),
        )
    } else {
        ("application/json", json)
    }
}

/// Why a 2026-07-28 request's mirrored headers are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub header: &'static str,
    pub problem: &'static str,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} header {}", self.header, self.problem)
    }
}

/// Whether a protocol revision mirrors method and name into headers.
pub fn mirrors_headers(protocol_version: Option<&str>) -> bool {
    let Some(v) = protocol_version.map(str::trim) else {
        return false;
    };
    let date_like = v.len() == 10
        && v.bytes().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    date_like && v >= MIRRORED_HEADERS_SINCE
}

/// Decode a mirrored header value: plain visible ASCII, or the `=?base64?…?=` form the
/// 2026-07-28 transport uses for values that cannot be sent as plain field values.
fn header_text(v: &[u8]) -> Option<String> {
    use base64::Engine;
    let s = std::str::from_utf8(v).ok()?.trim();
    match s
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(s.to_string()),
    }
}

/// The 2026-07-28 rule for intermediaries that decide on a body: `Mcp-Method` must be
/// present and equal the body's method, and `Mcp-Name` must be present and equal the
/// mirrored field where the method has one (`tools/call`, `prompts/get`: `name`;
/// `resources/read`: `uri`; `tasks/*`: `taskId`). Only single messages are checked (the
/// revision has no batches).
pub fn check_mirrored(
    inbound: &Inbound,
    method_header: Option<&[u8]>,
    name_header: Option<&[u8]>,
) -> Result<(), Mismatch> {
    let [m] = inbound.messages.as_slice() else {
        return Ok(());
    };
    let Some(method) = m.method.as_deref() else {
        return Ok(());
    };
    let mismatch = |header, problem| Err(Mismatch { header, problem });
    match method_header.map(header_text) {
        None => return mismatch("Mcp-Method", "is missing"),
        Some(None) => return mismatch("Mcp-Method", "cannot be decoded"),
        Some(Some(h)) if h != method => {
            return mismatch("Mcp-Method", "does not match the body's method")
        }
        Some(Some(_)) => {}
    }
    match (&m.name, name_header.map(header_text)) {
        (None, None) => Ok(()),
        (Some(_), None) => mismatch("Mcp-Name", "is missing"),
        (_, Some(None)) => mismatch("Mcp-Name", "cannot be decoded"),
        (Some(body), Some(Some(h))) if *body == h => Ok(()),
        (None, Some(Some(_))) if jsonrpc::mirrored_field(method).is_none() => Ok(()),
        _ => mismatch("Mcp-Name", "does not match the body"),
    }
}

/// The JSON-RPC error answer for a header mismatch (sent with HTTP 400).
pub fn mismatch_answer(inbound: &Inbound, why: &Mismatch) -> serde_json::Value {
    let id = inbound
        .messages
        .first()
        .and_then(|m| m.id.as_ref())
        .map(Id::to_value)
        .unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": HEADER_MISMATCH, "message": why.to_string()},
    })
}

/// The JSON-RPC parse error for a body an enforcing policy cannot read (HTTP 400).
pub fn unreadable_answer(why: &jsonrpc::Unparsed) -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": PARSE_ERROR,
            "message": format!("the tool policy cannot read this body: {why}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::glob::Glob;
    use super::jsonrpc::classify;
    use super::*;

    const SCOPE: Scope<'static> = Scope {
        name: "notes",
        path: "/mcp/notes",
    };

    fn no_delete() -> ToolPolicy {
        ToolPolicy {
            allow: vec![Glob::new("*")],
            deny: vec![Glob::new("delete_*")],
            grants: vec![],
        }
    }

    #[test]
    fn single_denial_names_tool_user_and_endpoint() {
        let inbound = classify(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_note"}}"#,
            false,
        )
        .unwrap();
        let alice = Caller {
            username: Some("alice@example.com"),
            ..Caller::default()
        };
        let Judgement::Refuse { answer, denied } = judge(&inbound, &no_delete(), SCOPE, &alice)
        else {
            panic!("not refused");
        };
        assert_eq!(denied, vec![0]);
        let a = answer.unwrap();
        assert_eq!(a["id"], 7);
        assert_eq!(a["error"]["code"], TOOL_DENIED);
        assert_eq!(
            a["error"]["message"],
            "tool `delete_note` is not allowed for alice@example.com on /mcp/notes"
        );
    }

    #[test]
    fn batches_are_refused_whole() {
        let inbound = classify(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"delete_note"}}]"#,
            false,
        )
        .unwrap();
        let Judgement::Refuse { answer, denied } =
            judge(&inbound, &no_delete(), SCOPE, &Caller::default())
        else {
            panic!("not refused");
        };
        assert_eq!(denied, vec![2]);
        let a = answer.unwrap();
        let items = a.as_array().unwrap();
        assert_eq!(
            items.len(),
            2,
            "one error per request, none for the notification"
        );
        assert_eq!(items[0]["id"], 1);
        assert_eq!(items[0]["error"]["data"]["reason"], "batch_refused");
        assert_eq!(items[1]["id"], "x");
        assert_eq!(items[1]["error"]["data"]["reason"], "tool_denied");
        // an allowed batch goes through
        let ok = classify(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}]"#,
            false,
        )
        .unwrap();
        assert_eq!(
            judge(&ok, &no_delete(), SCOPE, &Caller::default()),
            Judgement::Forward
        );
    }

    #[test]
    fn a_denied_notification_is_not_forwarded_either() {
        let inbound = classify(
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_note"}}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            judge(&inbound, &no_delete(), SCOPE, &Caller::default()),
            Judgement::Refuse {
                answer: None,
                denied: vec![0]
            }
        );
    }

    #[test]
    fn accept_table() {
        for (accept, want) in [
            (None, false),
            (Some("application/json, text/event-stream"), false),
            (Some("text/event-stream"), true),
            (Some("text/event-stream;q=1"), true),
            (Some("*/*"), false),
            (Some("application/json"), false),
        ] {
            assert_eq!(wants_sse(accept), want, "{accept:?}");
        }
        let (ct, body) = render_answer(&serde_json::json!({"a": 1}), true);
        assert_eq!(ct, "text/event-stream");
        assert_eq!(body, b"event: message\ndata: {\"a\":1}\n\n");
    }

    #[test]
    fn mirrored_headers_table() {
        let call = classify(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
            false,
        )
        .unwrap();
        let list = classify(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, false).unwrap();
        let b = |s: &'static str| Some(s.as_bytes());
        type Case<'a> = (
            &'a Inbound,
            Option<&'a [u8]>,
            Option<&'a [u8]>,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (&call, b("tools/call"), b("echo"), None),
            (&call, b("tools/call"), b("=?base64?ZWNobw==?="), None),
            (&call, b("tools/call"), b("delete_note"), Some("Mcp-Name")),
            (&call, b("tools/list"), b("echo"), Some("Mcp-Method")),
            (&call, None, b("echo"), Some("Mcp-Method")),
            (&call, b("tools/call"), None, Some("Mcp-Name")),
            (
                &call,
                b("tools/call"),
                b("=?base64?***?="),
                Some("Mcp-Name"),
            ),
            (&list, b("tools/list"), None, None),
            (&list, b("tools/list"), b("anything"), None),
        ];
        for (i, (inbound, m, n, want)) in cases.iter().enumerate() {
            let got = check_mirrored(inbound, *m, *n).err().map(|e| e.header);
            assert_eq!(got, *want, "case {i}");
        }
        for (v, want) in [
            (Some("2026-07-28"), true),
            (Some("2027-01-01"), true),
            (Some("2025-11-25"), false),
            (Some("draft"), false),
            (None, false),
        ] {
            assert_eq!(mirrors_headers(v), want, "{v:?}");
        }
    }

    #[test]
    fn tool_labels_are_bounded() {
        let l = ToolLabels::default();
        l.learn(&["echo".to_string()]);
        assert_eq!(&*l.label(Some("echo")), "echo");
        assert_eq!(&*l.label(Some("never_listed")), OTHER_TOOL);
        assert_eq!(&*l.label(None), OTHER_TOOL);
        let many: Vec<String> = (0..500).map(|i| format!("t{i}")).collect();
        l.learn(&many);
        assert_eq!(l.names.read().unwrap().len(), MAX_TOOL_LABELS);
    }
}
