//! JSON-RPC 2.0 messages as MCP carries them: what a client POSTs (single messages and
//! batch arrays; requests, notifications and responses told apart) and what a server
//! answers (the response for a request id, and its outcome). Pure.
//!
//! Only what the layer needs is read: `method`, `id`, for `tools/call` the tool `name`, the
//! field the 2026-07-28 `Mcp-Name` header mirrors, and — only when the audit asks — the
//! raw `arguments`. The whole text is still validated by [`super::json`].

use super::json::{self, as_str, kind, JsonError, Kind, Scanner};
use std::borrow::Cow;

/// A JSON-RPC id, compared as the peers compare it (numbers by their text, strings by value).
/// Integers written the one way JSON allows (no leading zeros, not `-0`) are kept as
/// integers: the text and the value then say the same, and most ids are such.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    Int(i64),
    Num(Box<str>),
    Str(Box<str>),
}

impl Id {
    /// Read an id value (string or number); `None` for anything else.
    pub fn parse(raw: &[u8]) -> Option<Id> {
        match kind(raw) {
            Kind::Number => match integer(raw) {
                Some(i) => Some(Id::Int(i)),
                None => std::str::from_utf8(raw).ok().map(|s| Id::Num(s.into())),
            },
            Kind::String => as_str(raw).map(|s| Id::Str(s.into())),
            _ => None,
        }
    }

    /// The id as JSON text, for answers the bridge writes itself.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        self.write_json(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Append the id as JSON text.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Id::Int(i) => {
                if *i < 0 {
                    out.push(b'-');
                }
                crate::observe::text::push_uint(out, i.unsigned_abs());
            }
            Id::Num(n) => out.extend_from_slice(n.as_bytes()),
            Id::Str(s) => {
                let _ = serde_json::to_writer(&mut *out, &**s);
            }
        }
    }

    /// The id as JSON.
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            Id::Int(i) => serde_json::Value::from(*i),
            Id::Num(n) => match n.parse::<i64>() {
                Ok(i) => serde_json::Value::from(i),
                Err(_) => serde_json::from_str(n).unwrap_or(serde_json::Value::Null),
            },
            Id::Str(s) => serde_json::Value::String(s.to_string()),
        }
    }
}

/// The integer a JSON number's text spells in the one canonical way (digits without a
/// leading zero, a minus sign only before a non-zero value, at most 18 digits).
fn integer(raw: &[u8]) -> Option<i64> {
    let digits = raw.strip_prefix(b"-").unwrap_or(raw);
    let canonical = !digits.is_empty()
        && digits.len() <= 18
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1)
        && raw != b"-0";
    if !canonical {
        return None;
    }
    let v = digits
        .iter()
        .fold(0i64, |v, d| v * 10 + i64::from(d - b'0'));
    Some(if digits.len() < raw.len() { -v } else { v })
}

/// What a client-sent message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Has `method` and `id`: expects a response.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `result` or `error` and an `id`: the client answering a server request.
    Response,
}

/// One client-sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageKind,
    /// The method; the ones MCP defines are not copied.
    pub method: Option<Cow<'static, str>>,
    pub id: Option<Id>,
    /// The params field naming what the method acts on, the one the 2026-07-28 `Mcp-Name`
    /// header mirrors ([`mirrored_field`]): `name` of a `tools/call` (the tool) or
    /// `prompts/get`, `uri` of a `resources/read`, `taskId` of a `tasks/*` request.
    pub name: Option<String>,
    /// `params.arguments` as raw JSON, only when asked for.
    pub arguments: Option<String>,
    /// `params.cursor` is present: a `tools/list` (or other list) for a later page.
    pub paged: bool,
}

impl Message {
    /// The called tool: `params.name` of a `tools/call`, when it is a string.
    pub fn tool(&self) -> Option<&str> {
        (self.method.as_deref() == Some("tools/call"))
            .then_some(self.name.as_deref())
            .flatten()
    }
}

/// A method name, borrowed from [`KNOWN_METHODS`] when it is one of them.
fn method_name(m: Cow<'_, str>) -> Cow<'static, str> {
    match KNOWN_METHODS.iter().find(|k| **k == m) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(m.into_owned()),
    }
}

/// A POST body read as JSON-RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub messages: Vec<Message>,
    /// The body was an array (a JSON-RPC batch).
    pub batch: bool,
}

/// Why a body is not read as JSON-RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unparsed {
    #[error("the body is empty")]
    Empty,
    #[error("the body is not JSON: {0}")]
    NotJson(JsonError),
    #[error("the body is not a JSON-RPC 2.0 message")]
    NotJsonRpc,
}

/// The body field `Mcp-Name` mirrors, by method (MCP 2026-07-28, standard request headers).
pub fn mirrored_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" | "tasks/result" => Some("taskId"),
        _ => None,
    }
}

/// Strip a UTF-8 byte-order mark, as lenient JSON readers do.
fn without_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

/// Read a POST body. `keep_arguments` keeps `tools/call` arguments for the audit log.
/// One pass over the text: validation and extraction together.
pub fn classify(body: &[u8], keep_arguments: bool) -> Result<Inbound, Unparsed> {
    let body = without_bom(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Unparsed::Empty);
    }
    let read = Scanner::walk(body, |s| match s.next_kind() {
        Some(Kind::Object) => Ok(message(s, keep_arguments)?.map(|m| (vec![m], false))),
        Some(Kind::Array) => {
            let mut messages = Vec::new();
            let mut bad = false;
            s.array(|s| {
                if s.next_kind() != Some(Kind::Object) {
                    s.value()?;
                    bad = true;
                    return Ok(());
                }
                match message(s, keep_arguments)? {
                    Ok(m) => messages.push(m),
                    Err(_) => bad = true,
                }
                Ok(())
            })?;
            Ok(if bad || messages.is_empty() {
                Err(Unparsed::NotJsonRpc)
            } else {
                Ok((messages, true))
            })
        }
        _ => {
            s.value()?;
            Ok(Err(Unparsed::NotJsonRpc))
        }
    })
    .map_err(Unparsed::NotJson)?;
    let (messages, batch) = read?;
    Ok(Inbound { messages, batch })
}

/// The `params` members the layer reads, as raw values.
#[derive(Default)]
struct Params<'a> {
    name: Option<&'a [u8]>,
    uri: Option<&'a [u8]>,
    task_id: Option<&'a [u8]>,
    arguments: Option<&'a [u8]>,
    cursor: bool,
}

/// Read one message object at the cursor (the outer error: not JSON; the inner: not
/// JSON-RPC).
fn message<'a>(
    s: &mut Scanner<'a>,
    keep_arguments: bool,
) -> Result<Result<Message, Unparsed>, JsonError> {
    let (mut version, mut method, mut id, mut answer) = (None, None, None, false);
    let mut params = Params::default();
    s.object(|s, k| {
        match k.as_bytes() {
            b"params" if s.next_kind() == Some(Kind::Object) => {
                s.object(|s, pk| {
                    let v = s.value()?;
                    match pk.as_bytes() {
                        b"name" => params.name = Some(v),
                        b"uri" => params.uri = Some(v),
                        b"taskId" => params.task_id = Some(v),
                        b"arguments" => params.arguments = Some(v),
                        b"cursor" => params.cursor = kind(v) != Kind::Null,
                        _ => {}
                    }
                    Ok(())
                })?;
            }
            b"jsonrpc" => version = Some(s.value()?),
            b"method" => method = Some(s.value()?),
            b"id" => id = Some(s.value()?),
            b"result" | b"error" => {
                s.value()?;
                answer = true;
            }
            _ => {
                s.value()?;
            }
        }
        Ok(())
    })?;
    Ok(build(version, method, id, answer, params, keep_arguments))
}

fn build(
    version: Option<&[u8]>,
    method: Option<&[u8]>,
    id: Option<&[u8]>,
    answer: bool,
    params: Params<'_>,
    keep_arguments: bool,
) -> Result<Message, Unparsed> {
    // Written plainly almost always; an escaped spelling is decoded.
    if version != Some(br#""2.0""#) && version.and_then(as_str).as_deref() != Some("2.0") {
        return Err(Unparsed::NotJsonRpc);
    }
    let method = match method {
        Some(m) => Some(method_name(as_str(m).ok_or(Unparsed::NotJsonRpc)?)),
        None => None,
    };
    let parsed_id = match id {
        Some(v) if kind(v) == Kind::Null => None,
        Some(v) => Some(Id::parse(v).ok_or(Unparsed::NotJsonRpc)?),
        None => None,
    };
    let kind = match (&method, &parsed_id, answer) {
        (Some(_), Some(_), false) => MessageKind::Request,
        (Some(_), None, false) if id.is_none() => MessageKind::Notification,
        (None, _, true) => MessageKind::Response,
        _ => return Err(Unparsed::NotJsonRpc),
    };
    let text = |v: Option<&[u8]>| v.and_then(as_str).map(|s| s.into_owned());
    let m = method.as_deref().unwrap_or_default();
    let name = match mirrored_field(m) {
        Some("name") => text(params.name),
        Some("uri") => text(params.uri),
        Some("taskId") => text(params.task_id),
        _ => None,
    };
    let is_call = m == "tools/call";
    Ok(Message {
        kind,
        name,
        arguments: match (is_call && keep_arguments, params.arguments) {
            (true, Some(a)) => std::str::from_utf8(a).ok().map(str::to_string),
            _ => None,
        },
        method,
        id: parsed_id,
        paged: params.cursor,
    })
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A `result`.
    Result,
    /// A `result` with `isError: true` (a tool reporting failure).
    ToolError,
    /// An `error`.
    Error,
}

/// One server-sent response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<'a> {
    pub id: Option<Id>,
    pub answer: Answer,
    /// The `result` value, when there is one.
    pub result: Option<&'a [u8]>,
    /// The `error.code` of an error answer, when it is an integer.
    pub code: Option<i64>,
}

/// The responses in one server message (an object, or a batch array). Requests and
/// notifications from the server, and anything unreadable, yield nothing. One pass over
/// the text: validation and extraction together; a single object needs no allocation.
pub fn replies(text: &[u8]) -> Replies<'_> {
    let text = without_bom(text);
    Scanner::walk(text, |s| match s.next_kind() {
        Some(Kind::Object) => Ok(Replies::One(reply(s)?)),
        Some(Kind::Array) => {
            let mut out = Vec::new();
            s.array(|s| {
                if s.next_kind() == Some(Kind::Object) {
                    out.extend(reply(s)?);
                } else {
                    s.value()?;
                }
                Ok(())
            })?;
            Ok(Replies::Batch(out.into_iter()))
        }
        _ => s.value().map(|_| Replies::One(None)),
    })
    .unwrap_or(Replies::One(None))
}

/// What [`replies`] found: the answer of a single message, or those of a batch.
#[derive(Debug)]
pub enum Replies<'a> {
    One(Option<Reply<'a>>),
    Batch(std::vec::IntoIter<Reply<'a>>),
}

impl<'a> Iterator for Replies<'a> {
    type Item = Reply<'a>;

    fn next(&mut self) -> Option<Reply<'a>> {
        match self {
            Replies::One(r) => r.take(),
            Replies::Batch(rs) => rs.next(),
        }
    }
}

/// Read one server message object at the cursor: a response, or `None`.
fn reply<'a>(s: &mut Scanner<'a>) -> Result<Option<Reply<'a>>, JsonError> {
    let (mut id, mut result, mut error, mut method, mut tool_error) =
        (None, None, false, false, false);
    let mut code = None;
    s.object(|s, k| {
        match k.as_bytes() {
            b"result" if s.next_kind() == Some(Kind::Object) => {
                let ((), raw) = s.spanned(|s| {
                    s.object(|s, rk| {
                        let v = s.value()?;
                        tool_error |= rk.as_bytes() == b"isError" && kind(v) == Kind::True;
                        Ok(())
                    })
                })?;
                result = Some(raw);
            }
            b"result" => result = Some(s.value()?),
            b"id" => id = Id::parse(s.value()?),
            b"error" => {
                let v = s.value()?;
                error = true;
                code = error_code(v);
            }
            b"method" => method = s.value().map(|_| true)?,
            _ => {
                s.value()?;
            }
        }
        Ok(())
    })?;
    if method {
        return Ok(None);
    }
    let answer = match (result, error) {
        (_, true) => Answer::Error,
        (Some(_), false) if tool_error => Answer::ToolError,
        (Some(_), false) => Answer::Result,
        (None, false) => return Ok(None),
    };
    Ok(Some(Reply {
        id,
        answer,
        result,
        code,
    }))
}

/// The integer `code` of a JSON-RPC error object.
fn error_code(raw: &[u8]) -> Option<i64> {
    if kind(raw) != Kind::Object {
        return None;
    }
    let members = json::members(raw).ok()?;
    let (_, v) = members.iter().find(|(k, _)| k.as_bytes() == b"code")?;
    integer(v)
}

/// The tool names in a `tools/list` result (`result.tools[].name`).
pub fn listed_tools(result: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(members) = json::members(result) else {
        return names;
    };
    let Some((_, tools)) = members.iter().find(|(k, _)| k.as_bytes() == b"tools") else {
        return names;
    };
    if kind(tools) != Kind::Array {
        return names;
    }
    let mut s = Scanner::new(tools);
    let _ = s.array(|s| {
        let t = s.value()?;
        if kind(t) == Kind::Object {
            if let Some((_, n)) = json::members(t)?
                .iter()
                .find(|(k, _)| k.as_bytes() == b"name")
            {
                names.extend(as_str(n).map(|n| n.into_owned()));
            }
        }
        Ok(())
    });
    names
}

/// Rewrite one server message (object or batch) so that every `tools/list` result whose
/// id is in `ids` keeps only the tools `keep` accepts. Everything else in the message,
/// `nextCursor` included, is kept. `Ok(None)` when nothing had to change; `Err` when the
/// message cannot be read for filtering (the caller then fails closed).
/// Filter the `tools/list` results answering `ids` in a server message: keep the tools for
/// which `keep(name, definition)` holds, and with `private`, mark a 2026-07-28 result (one
/// that carries `cacheScope` or `ttlMs`) `"cacheScope": "private"` (SEP-2549: a list filtered
/// per identity must not be served to anyone else; `ttlMs` is kept). `Ok(None)`: unchanged.
pub fn filter_tools_lists(
    text: &[u8],
    ids: &[Id],
    keep: &dyn Fn(&str, &serde_json::Value) -> bool,
    private: bool,
) -> Result<Option<Vec<u8>>, Unreadable> {
    let mut v: serde_json::Value =
        serde_json::from_slice(without_bom(text)).map_err(|_| Unreadable)?;
    let mut changed = false;
    let mut filter_one = |m: &mut serde_json::Value| {
        let matches = m
            .get("id")
            .and_then(|i| serde_json::to_vec(i).ok())
            .and_then(|raw| Id::parse(&raw))
            .is_some_and(|id| ids.contains(&id));
        if !matches {
            return;
        }
        let Some(result) = m.get_mut("result").and_then(|r| r.as_object_mut()) else {
            return;
        };
        if let Some(tools) = result.get_mut("tools").and_then(|t| t.as_array_mut()) {
            let before = tools.len();
            tools.retain(|t| {
                t.get("name")
                    .and_then(|n| n.as_str())
                    .is_some_and(|n| keep(n, t))
            });
            changed |= tools.len() != before;
        }
        let scoped = result.contains_key("cacheScope") || result.contains_key("ttlMs");
        if private && scoped && result.get("cacheScope").and_then(|c| c.as_str()) != Some("private")
        {
            result.insert("cacheScope".into(), serde_json::Value::from("private"));
            changed = true;
        }
    };
    match &mut v {
        serde_json::Value::Array(items) => items.iter_mut().for_each(&mut filter_one),
        other => filter_one(other),
    }
    if changed {
        serde_json::to_vec(&v).map(Some).map_err(|_| Unreadable)
    } else {
        Ok(None)
    }
}

/// A server message that could not be read for `tools/list` filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// Method names MCP defines (2025-11-25 and 2026-07-28): the only values the `method`
/// metric label takes besides `_other`, `_response` and `_unparsed`.
pub const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "subscriptions/listen",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "tasks/update",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "notifications/tasks/status",
];

/// Label for methods MCP does not define.
pub const OTHER_METHOD: &str = "_other";
/// Label for client messages that answer a server request.
pub const RESPONSE_METHOD: &str = "_response";
/// Label for bodies that are not JSON-RPC.
pub const UNPARSED_METHOD: &str = "_unparsed";

/// The bounded metric label of a client message.
pub fn method_label(m: &Message) -> &'static str {
    match (&m.kind, &m.method) {
        (MessageKind::Response, _) => RESPONSE_METHOD,
        (_, Some(Cow::Borrowed(known))) => known,
        (_, Some(Cow::Owned(_))) => OTHER_METHOD,
        (_, None) => OTHER_METHOD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Message {
        let mut i = classify(body.as_bytes(), true).unwrap();
        assert!(!i.batch);
        i.messages.remove(0)
    }

    #[test]
    fn classifier_table() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#,
        );
        assert_eq!(m.kind, MessageKind::Request);
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        assert_eq!(m.id, Some(Id::Int(1)));
        assert_eq!(m.tool(), Some("echo"));
        assert_eq!(m.name.as_deref(), Some("echo"));
        assert_eq!(m.arguments.as_deref(), Some(r#"{"text":"hi"}"#));
        assert_eq!(method_label(&m), "tools/call");

        let m = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(m.kind, MessageKind::Notification);
        assert_eq!(m.id, None);

        let m = one(r#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#);
        assert_eq!(m.kind, MessageKind::Response);
        assert_eq!(method_label(&m), "_response");

        let m = one(
            r#"{"jsonrpc":"2.0","id":"a\u0062","method":"resources/read","params":{"uri":"file:///x"}}"#,
        );
        assert_eq!(m.id, Some(Id::Str("ab".into())));
        assert_eq!(m.name.as_deref(), Some("file:///x"));
        assert_eq!(m.tool(), None);

        let m = one(r#"{"jsonrpc":"2.0","id":2,"method":"my/custom"}"#);
        assert_eq!(method_label(&m), "_other");

        // the tool name is not kept apart from the arguments unless asked
        let i = classify(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{}}}"#,
            false,
        )
        .unwrap();
        assert_eq!(i.messages[0].arguments, None);
        assert_eq!(i.messages[0].tool(), Some("x"));

        // a BOM is read past, as lenient upstream parsers do
        let m = one("\u{feff}{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}");
        assert_eq!(m.method.as_deref(), Some("ping"));
    }

    #[test]
    fn batches() {
        let i = classify(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_note"}}]"#,
            false,
        )
        .unwrap();
        assert!(i.batch);
        assert_eq!(i.messages.len(), 3);
        assert_eq!(i.messages[2].tool(), Some("delete_note"));
        assert_eq!(classify(b"[]", false), Err(Unparsed::NotJsonRpc));
        assert_eq!(
            classify(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}, 5]"#, false),
            Err(Unparsed::NotJsonRpc)
        );
    }

    #[test]
    fn not_json_rpc_table() {
        let cases: &[&str] = &[
            "",
            "   ",
            "hello",
            "{}",
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","method":5}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"} {"jsonrpc":"2.0","id":2,"method":"tools/call"}"#,
            r#""just a string""#,
        ];
        for c in cases {
            assert!(classify(c.as_bytes(), false).is_err(), "{c}");
        }
    }

    #[test]
    fn replies_table() {
        let r: Vec<_> =
            replies(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#)
                .collect();
        assert_eq!(r[0].answer, Answer::ToolError);
        assert_eq!(r[0].id, Some(Id::Int(1)));
        let r: Vec<_> =
            replies(br#"{"jsonrpc":"2.0","id":"x","result":{"content":[],"isError":false}}"#)
                .collect();
        assert_eq!(r[0].answer, Answer::Result);
        let r: Vec<_> =
            replies(br#"{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"no"}}"#)
                .collect();
        assert_eq!(r[0].answer, Answer::Error);
        assert_eq!(r[0].code, Some(-32601));
        let r: Vec<_> =
            replies(br#"{"jsonrpc":"2.0","id":2,"error":{"code":"x","message":"no"}}"#).collect();
        assert_eq!((r[0].answer, r[0].code), (Answer::Error, None));
        assert!(
            replies(br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#)
                .next()
                .is_none()
        );
        assert!(
            replies(br#"{"jsonrpc":"2.0","id":9,"method":"sampling/createMessage"}"#)
                .next()
                .is_none()
        );
        assert!(replies(b"not json").next().is_none());
        let r: Vec<_> = replies(br#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"x"}}]"#).collect();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].answer, Answer::Error);
    }

    #[test]
    fn tools_list_names_and_filtering() {
        let text = br#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"echo","inputSchema":{}},{"name":"delete_note"},{"name":"count"}],"nextCursor":"page2"}}"#;
        let r: Vec<_> = replies(text).collect();
        assert_eq!(
            listed_tools(r[0].result.unwrap()),
            vec!["echo", "delete_note", "count"]
        );
        let keep = |n: &str, _: &serde_json::Value| !n.starts_with("delete_");
        let out = filter_tools_lists(text, &[Id::Int(4)], &keep, false)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let names: Vec<&str> = v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["echo", "count"]);
        assert_eq!(v["result"]["nextCursor"], "page2");
        assert_eq!(v["id"], 4);
        // another id, or nothing to drop: unchanged
        assert_eq!(
            filter_tools_lists(text, &[Id::Int(5)], &keep, false),
            Ok(None)
        );
        assert_eq!(
            filter_tools_lists(text, &[Id::Int(4)], &|_, _| true, false),
            Ok(None)
        );
        // unreadable for filtering (serde_json refuses a number no double holds): an error
        assert_eq!(
            filter_tools_lists(
                br#"{"id":4,"result":{"tools":[]},"x":1e400}"#,
                &[Id::Int(4)],
                &keep,
                false
            ),
            Err(Unreadable)
        );
    }

    #[test]
    fn filtered_lists_are_marked_private() {
        let keep = |n: &str, _: &serde_json::Value| n != "b";
        let text = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}],"ttlMs":60000,"cacheScope":"public"}}"#;
        let out = filter_tools_lists(text, &[Id::Int(1)], &keep, true)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["cacheScope"], "private");
        assert_eq!(v["result"]["ttlMs"], 60000, "ttlMs passes unchanged");
        // Per identity even when this caller lost nothing: still private.
        let out = filter_tools_lists(text, &[Id::Int(1)], &|_, _| true, true)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["cacheScope"], "private");
        // The same for everyone: what the upstream said.
        let out = filter_tools_lists(text, &[Id::Int(1)], &keep, false)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["cacheScope"], "public");
        // A 2025-11-25 result (no caching fields) gets none added.
        let old = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}"#;
        assert_eq!(
            filter_tools_lists(old, &[Id::Int(1)], &|_, _| true, true),
            Ok(None)
        );
        // Already private: unchanged.
        let p =
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"cacheScope":"private","ttlMs":5}}"#;
        assert_eq!(
            filter_tools_lists(p, &[Id::Int(1)], &|_, _| true, true),
            Ok(None)
        );
    }

    #[test]
    fn ids_round_trip() {
        assert_eq!(Id::Str("a\"b".into()).to_json(), r#""a\"b""#);
        assert_eq!(Id::Int(17).to_json(), "17");
        assert_eq!(Id::Int(-17).to_json(), "-17");
        assert_eq!(Id::Int(i64::MIN).to_json(), i64::MIN.to_string());
        assert_eq!(Id::Num("1.5e3".into()).to_json(), "1.5e3");
        assert_eq!(Id::Int(-17).to_value(), serde_json::json!(-17));
        assert_eq!(Id::parse(b"null"), None);
        // integers in their one JSON spelling are integers; every other number keeps its text
        for (raw, id) in [
            ("17", Id::Int(17)),
            ("0", Id::Int(0)),
            ("-5", Id::Int(-5)),
            ("999999999999999999", Id::Int(999_999_999_999_999_999)),
            ("1000000000000000000", Id::Num("1000000000000000000".into())),
            ("-0", Id::Num("-0".into())),
            ("1.0", Id::Num("1.0".into())),
            ("1e2", Id::Num("1e2".into())),
        ] {
            assert_eq!(Id::parse(raw.as_bytes()), Some(id), "{raw}");
        }
        // so ids compare by their text: 1 and 1.0 are different ids
        assert_ne!(Id::parse(b"1"), Id::parse(b"1.0"));
        for (raw, json) in [
            ("17", "17"),
            ("-3", "-3"),
            ("1.5", "1.5"),
            ("1e3", "1000.0"),
        ] {
            assert_eq!(Id::Num(raw.into()).to_value().to_string(), json, "{raw}");
        }
    }
}
