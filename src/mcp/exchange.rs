//! One POST's JSON-RPC exchange: the messages the client sent, and the responses to them
//! as they pass back through the bridge. Pure: the proxy feeds it the response head and body
//! chunks, and reads the outcome of every message at the end.
//!
//! Responses are never held back, with one exception: when the client asked for
//! `tools/list` and the endpoint's policy can deny tools, the event (or JSON body) carrying
//! that result is rewritten. For an event stream that means bytes are passed on event by
//! event (each complete event at once, the incomplete one when it completes); for a JSON
//! body, the body is passed on when it is complete.

use super::jsonrpc::{self, filter_tools_lists, listed_tools, Answer, Id, Inbound, MessageKind};
use super::sse::{replace_data, SseScanner};
use bytes::Bytes;
use std::time::Instant;

/// The largest event or JSON body whose responses are inspected (and, for `tools/list`,
/// filtered). Larger ones pass uninspected; a `tools/list` result that has to be filtered
/// but is larger is replaced by an error (the filter fails closed).
pub const MAX_INSPECTED: usize = 4 << 20;

/// How one message ended, the `outcome` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A result (or, for notifications and client responses, an accepting 2xx).
    Ok,
    /// A JSON-RPC error, or an HTTP error status with no JSON-RPC answer.
    Error,
    /// A tool result with `isError: true`.
    ToolError,
    /// Refused by the tool policy; never reached the upstream.
    Denied,
    /// Refused because the tool is not as pinned (`tools.on_change: hide`).
    Unpinned,
    /// Refused by a per-identity call limit (`tools.limits`).
    RateLimited,
    /// The client went away before the answer.
    Cancelled,
    /// The response ended without an answer for this id.
    Unanswered,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::ToolError,
        Outcome::Denied,
        Outcome::Unpinned,
        Outcome::RateLimited,
        Outcome::Cancelled,
        Outcome::Unanswered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::ToolError => "tool_error",
            Outcome::Denied => "denied",
            Outcome::Unpinned => "unpinned",
            Outcome::RateLimited => "rate_limited",
            Outcome::Cancelled => "cancelled",
            Outcome::Unanswered => "unanswered",
        }
    }
}

/// One client message of the exchange.
#[derive(Debug, Clone)]
pub struct Call {
    /// Bounded method label (see [`jsonrpc::method_label`]).
    pub method: &'static str,
    /// The request id; `None` for notifications, client responses and unparsed bodies.
    pub id: Option<Id>,
    /// The tool name as the client sent it (`tools/call` only).
    pub tool: Option<String>,
    /// Raw arguments, kept only for the audit log's opt-in.
    pub arguments: Option<String>,
    /// Set once known.
    pub outcome: Option<Outcome>,
    /// The JSON-RPC error code of an error answer (for traces).
    pub error_code: Option<i64>,
    /// When the answer passed to the client.
    pub answered_at: Option<Instant>,
    /// Response bytes passed to the client up to and including the answer.
    pub bytes_out: u64,
    /// A list request for a later page (`params.cursor`).
    pub paged: bool,
}

impl Call {
    fn expects_answer(&self) -> bool {
        self.id.is_some()
    }

    fn is_tools_list(&self) -> bool {
        self.method == "tools/list"
    }
}

/// How the response body is read.
#[derive(Debug)]
enum Reader {
    /// Not inspected (no request expects an answer, or an unknown content type).
    Off,
    /// `application/json`: collected (up to [`MAX_INSPECTED`]) and read at the end.
    Json { buf: Vec<u8>, over: bool },
    /// `text/event-stream`: read event by event.
    Sse {
        scanner: SseScanner,
        held: Option<Held>,
    },
}

/// Bytes of the event in progress, in filtering mode.
#[derive(Debug, Default)]
struct Held {
    buf: Vec<u8>,
    /// The event in progress outgrew [`MAX_INSPECTED`]: its bytes are dropped, and an error
    /// answer takes its place when it ends.
    dropping: bool,
}

/// The exchange of one POST.
#[derive(Debug)]
pub struct Exchange {
    pub calls: Vec<Call>,
    pub started: Instant,
    reader: Reader,
    /// `tools/list` ids whose results are filtered.
    filter_ids: Vec<Id>,
    /// Tool names the upstream listed in this exchange (before filtering).
    pub listed: Vec<String>,
    /// Each `tools/list` result read, raw, with whether its request asked for a later page
    /// (for the pin checks, which run after the bytes went on).
    pub list_pages: Vec<(Vec<u8>, bool)>,
    /// Filtered lists are marked `cacheScope: private`.
    private: bool,
    /// Response body bytes passed to the client so far.
    out: u64,
}

impl Exchange {
    /// The exchange for a parsed body.
    pub fn new(inbound: Inbound, started: Instant) -> Self {
        let calls = inbound
            .messages
            .into_iter()
            .map(|m| Call {
                method: jsonrpc::method_label(&m),
                tool: m.tool().is_some().then_some(m.name).flatten(),
                id: match m.kind {
                    MessageKind::Request => m.id,
                    _ => None,
                },
                arguments: m.arguments,
                outcome: None,
                error_code: None,
                answered_at: None,
                bytes_out: 0,
                paged: m.paged,
            })
            .collect();
        Exchange {
            calls,
            started,
            reader: Reader::Off,
            filter_ids: Vec::new(),
            listed: Vec::new(),
            list_pages: Vec::new(),
            private: false,
            out: 0,
        }
    }

    /// The exchange for a body that is not JSON-RPC: one `_unparsed` entry.
    pub fn unparsed(started: Instant) -> Self {
        Exchange {
            calls: vec![Call {
                method: jsonrpc::UNPARSED_METHOD,
                id: None,
                tool: None,
                arguments: None,
                outcome: None,
                error_code: None,
                answered_at: None,
                bytes_out: 0,
                paged: false,
            }],
            started,
            reader: Reader::Off,
            filter_ids: Vec::new(),
            listed: Vec::new(),
            list_pages: Vec::new(),
            private: false,
            out: 0,
        }
    }

    /// Whether a request in this exchange is a `tools/list`.
    pub fn lists_tools(&self) -> bool {
        self.calls.iter().any(Call::is_tools_list)
    }

    /// The response head arrived. `filter`: `tools/list` results must be filtered. Returns
    /// whether the body may be rewritten (the caller then drops `Content-Length`).
    /// `private`: filtered lists are per identity (marked `cacheScope: private`).
    pub fn on_response_head(
        &mut self,
        content_type: Option<&str>,
        filter: bool,
        private: bool,
    ) -> bool {
        if !self.calls.iter().any(Call::expects_answer) {
            return false;
        }
        self.private = private;
        let ct = content_type
            .and_then(|c| c.split(';').next())
            .map(str::trim);
        let is = |t: &str| ct.is_some_and(|c| c.eq_ignore_ascii_case(t));
        if filter {
            self.filter_ids = self
                .calls
                .iter()
                .filter(|c| c.is_tools_list())
                .filter_map(|c| c.id.clone())
                .collect();
        }
        let filtering = !self.filter_ids.is_empty();
        self.reader = if is("text/event-stream") {
            Reader::Sse {
                scanner: SseScanner::new(MAX_INSPECTED),
                held: filtering.then(Held::default),
            }
        } else if is("application/json") {
            Reader::Json {
                buf: Vec::new(),
                over: false,
            }
        } else {
            Reader::Off
        };
        filtering && !matches!(self.reader, Reader::Off)
    }

    /// The response cannot be filtered (it is compressed): swallow it and answer the
    /// `tools/list` requests with an error at its end. Call after [`Self::on_response_head`].
    pub fn force_filter_failure(&mut self) {
        self.reader = Reader::Json {
            buf: Vec::new(),
            over: true,
        };
    }

    /// A response body chunk (or the end). Returns the bytes to send instead of `chunk`, or
    /// `None` to send `chunk` as it is.
    pub fn on_body(
        &mut self,
        chunk: Option<&Bytes>,
        end: bool,
        now: Instant,
        keep: &dyn Fn(&str, &serde_json::Value) -> bool,
    ) -> Option<Bytes> {
        let data: &[u8] = chunk.map(|c| c.as_ref()).unwrap_or_default();
        match &mut self.reader {
            Reader::Off => {
                self.out += data.len() as u64;
                None
            }
            Reader::Json { .. } => self.on_json(data, end, now, keep),
            Reader::Sse { .. } => self.on_sse(data, now, keep),
        }
    }

    /// A JSON body is read whole at its end. Passed through as it arrives, unless a
    /// `tools/list` result in it must be filtered: then it is held and sent at the end.
    fn on_json(
        &mut self,
        data: &[u8],
        end: bool,
        now: Instant,
        keep: &dyn Fn(&str, &serde_json::Value) -> bool,
    ) -> Option<Bytes> {
        let filtering = !self.filter_ids.is_empty();
        let Reader::Json { buf, over } = &mut self.reader else {
            return None;
        };
        if !*over && buf.len() + data.len() > MAX_INSPECTED {
            *over = true;
            buf.clear();
        }
        // A body that arrives in one chunk is read where it is.
        let at_once = end && buf.is_empty() && !*over;
        if !*over && !at_once {
            buf.extend_from_slice(data);
        }
        if !filtering {
            self.out += data.len() as u64;
        }
        if !end {
            return filtering.then(Bytes::new);
        }
        let (body, over) = (std::mem::take(buf), *over);
        if over {
            // Too large to read: passed uninspected, or (filtering) replaced by an error.
            return filtering.then(|| {
                let e = self.filter_failure();
                self.out += e.len() as u64;
                Bytes::from(e)
            });
        }
        let text: &[u8] = if at_once { data } else { &body };
        if !filtering {
            self.read_message(text, now, self.out, keep);
            return None;
        }
        let replaced = self.read_message(text, now, self.out + text.len() as u64, keep);
        let sent = match (replaced, at_once) {
            (Some(new), _) => Bytes::from(new),
            // Unchanged and never held back: the chunk goes as it is.
            (None, true) => {
                self.out += text.len() as u64;
                return None;
            }
            (None, false) => Bytes::from(body),
        };
        self.out += sent.len() as u64;
        Some(sent)
    }

    fn on_sse(
        &mut self,
        chunk: &[u8],
        now: Instant,
        keep: &dyn Fn(&str, &serde_json::Value) -> bool,
    ) -> Option<Bytes> {
        let Reader::Sse { scanner, held } = &mut self.reader else {
            return None;
        };
        let chunk_start = scanner.position();
        // (end offset, oversized, data) of each event ending in this chunk
        let mut events: Vec<(u64, bool, Option<Vec<u8>>)> = Vec::new();
        let filtering = held.is_some();
        scanner.feed(chunk, |e| {
            let data = match (filtering, e.data) {
                (_, None) => None,
                (true, Some(d)) => Some(d.to_vec()),
                (false, Some(d)) if looks_like_response(d) => Some(d.to_vec()),
                (false, Some(_)) => None,
            };
            events.push((e.end, e.oversized, data));
        });
        let Some(held) = held.as_mut() else {
            // Pass-through: account, never rewrite.
            for (end, _, data) in events {
                if let Some(d) = data {
                    let out = self.out + (end - chunk_start);
                    self.read_message(&d, now, out, keep);
                }
            }
            self.out += chunk.len() as u64;
            return None;
        };
        let mut held = std::mem::take(held);
        let mut out = Vec::with_capacity(chunk.len());
        let mut cursor = chunk_start;
        for (end, oversized, data) in events {
            let part = &chunk[(cursor - chunk_start) as usize..(end - chunk_start) as usize];
            cursor = end;
            if std::mem::take(&mut held.dropping) || oversized {
                held.buf.clear();
                let e = self.filter_failure_event();
                out.extend_from_slice(&e);
                continue;
            }
            held.buf.extend_from_slice(part);
            let raw = std::mem::take(&mut held.buf);
            let sent = match data {
                Some(d) => {
                    let after = self.out + out.len() as u64 + raw.len() as u64;
                    match self.read_message(&d, now, after, keep) {
                        Some(new) => replace_data(&raw, &new),
                        None => raw,
                    }
                }
                None => raw,
            };
            out.extend_from_slice(&sent);
        }
        let tail = &chunk[(cursor - chunk_start) as usize..];
        let pending = self.filter_ids.iter().any(|id| {
            self.calls
                .iter()
                .any(|c| c.id.as_ref() == Some(id) && c.outcome.is_none())
        });
        if !pending {
            // Every list is answered: the rest of the stream passes through untouched.
            if !held.dropping {
                out.extend_from_slice(&held.buf);
                out.extend_from_slice(tail);
            }
            self.filter_ids.clear();
            if let Reader::Sse { held: h, .. } = &mut self.reader {
                *h = None;
            }
        } else {
            if !held.dropping {
                held.buf.extend_from_slice(tail);
                if held.buf.len() > MAX_INSPECTED {
                    held.dropping = true;
                    held.buf = Vec::new();
                }
            }
            if let Reader::Sse { held: h, .. } = &mut self.reader {
                *h = Some(held);
            }
        }
        self.out += out.len() as u64;
        Some(Bytes::from(out))
    }

    /// Read one server message: record answers; return the rewritten message when a
    /// `tools/list` result had to be filtered.
    fn read_message(
        &mut self,
        text: &[u8],
        now: Instant,
        out_after: u64,
        keep: &dyn Fn(&str, &serde_json::Value) -> bool,
    ) -> Option<Vec<u8>> {
        let mut filter = Vec::new();
        for r in jsonrpc::replies(text) {
            let Some(id) = &r.id else { continue };
            let Some(call) = self
                .calls
                .iter_mut()
                .find(|c| c.outcome.is_none() && c.id.as_ref() == Some(id))
            else {
                continue;
            };
            call.outcome = Some(match r.answer {
                Answer::Result => Outcome::Ok,
                Answer::ToolError => Outcome::ToolError,
                Answer::Error => Outcome::Error,
            });
            call.error_code = r.code;
            call.answered_at = Some(now);
            call.bytes_out = out_after;
            if call.is_tools_list() {
                if let Some(result) = r.result {
                    self.listed.extend(listed_tools(result));
                    if self.list_pages.len() < 16 {
                        self.list_pages.push((result.to_vec(), call.paged));
                    }
                }
                if self.filter_ids.contains(id) {
                    filter.push(id.clone());
                }
            }
        }
        if filter.is_empty() {
            return None;
        }
        match filter_tools_lists(text, &filter, keep, self.private) {
            Ok(rewritten) => rewritten,
            // The list cannot be read for filtering: fail closed with an error answer.
            Err(_) => {
                for c in &mut self.calls {
                    if c.id.as_ref().is_some_and(|id| filter.contains(id)) {
                        c.outcome = None;
                    }
                }
                Some(self.filter_failure())
            }
        }
    }

    /// The error answer for `tools/list` requests whose result could not be filtered.
    fn filter_failure(&mut self) -> Vec<u8> {
        let answers: Vec<serde_json::Value> = self
            .filter_ids
            .iter()
            .filter(|id| {
                self.calls
                    .iter()
                    .any(|c| c.id.as_ref() == Some(*id) && c.outcome.is_none())
            })
            .map(|id| {
                serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": id.to_value(),
                    "error": {"code": -32603, "message": "the tool list could not be filtered by the bridge (too large, compressed or unreadable)"},
                })
            })
            .collect();
        for c in &mut self.calls {
            if c.is_tools_list() && c.outcome.is_none() {
                c.outcome = Some(Outcome::Error);
            }
        }
        let v = match answers.len() {
            1 => answers.into_iter().next().unwrap_or_default(),
            _ => serde_json::Value::Array(answers),
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }

    fn filter_failure_event(&mut self) -> Vec<u8> {
        let body = self.filter_failure();
        replace_data(b"event: message\n", &body)
    }

    /// The response is over: settle every message still without an outcome. `status` is the
    /// HTTP status the client got; `client_gone` that it disconnected early.
    pub fn finish(&mut self, status: u16, client_gone: bool, now: Instant) {
        let success = (200..300).contains(&status);
        let total = self.out;
        for c in &mut self.calls {
            if c.outcome.is_some() {
                continue;
            }
            c.outcome = Some(if !c.expects_answer() {
                if success {
                    Outcome::Ok
                } else {
                    Outcome::Error
                }
            } else if client_gone {
                Outcome::Cancelled
            } else if !success && status != 0 {
                Outcome::Error
            } else if matches!(self.reader, Reader::Json { over: true, .. }) && success {
                Outcome::Ok
            } else {
                Outcome::Unanswered
            });
            c.answered_at = Some(now);
            c.bytes_out = total;
        }
    }
}

/// Cheap pre-check before a full read: a response carries `"result"` or `"error"`.
/// Progress notifications, the bulk of a long tool call's events, skip the full read.
fn looks_like_response(data: &[u8]) -> bool {
    contains(data, b"\"result\"") || contains(data, b"\"error\"")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::jsonrpc::classify;

    fn exchange(body: &str) -> Exchange {
        Exchange::new(classify(body.as_bytes(), false).unwrap(), Instant::now())
    }

    fn feed_all(
        x: &mut Exchange,
        chunks: &[&str],
        keep: &dyn Fn(&str, &serde_json::Value) -> bool,
    ) -> String {
        let mut out = String::new();
        let n = chunks.len();
        for (i, c) in chunks.iter().enumerate() {
            let b = Bytes::copy_from_slice(c.as_bytes());
            match x.on_body(Some(&b), i + 1 == n, Instant::now(), keep) {
                Some(r) => out.push_str(std::str::from_utf8(&r).unwrap()),
                None => out.push_str(c),
            }
        }
        out
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"count","arguments":{"n":2},"_meta":{"progressToken":1}}}"#;

    #[test]
    fn sse_outcomes_pass_through_unchanged() {
        let mut x = exchange(CALL);
        assert!(!x.on_response_head(Some("text/event-stream"), true, false));
        let chunks = [
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n",
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"res",
            "ult\":{\"content\":[],\"isError\":true}}\n\n",
        ];
        let out = feed_all(&mut x, &chunks, &|_, _| true);
        assert_eq!(out, chunks.concat());
        assert_eq!(x.calls[0].outcome, Some(Outcome::ToolError));
        assert_eq!(x.calls[0].tool.as_deref(), Some("count"));
        assert_eq!(x.calls[0].bytes_out, chunks.concat().len() as u64);
    }

    #[test]
    fn json_outcomes() {
        for (answer, want) in [
            (
                r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#,
                Outcome::Ok,
            ),
            (
                r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"x"}}"#,
                Outcome::Error,
            ),
            (
                r#"{"jsonrpc":"2.0","id":4,"result":{}}"#,
                Outcome::Unanswered,
            ),
        ] {
            let mut x = exchange(CALL);
            x.on_response_head(Some("application/json; charset=utf-8"), false, false);
            let (a, b) = answer.split_at(10);
            assert_eq!(feed_all(&mut x, &[a, b], &|_, _| true), answer);
            x.finish(200, false, Instant::now());
            assert_eq!(x.calls[0].outcome, Some(want), "{answer}");
        }
    }

    #[test]
    fn finishing_without_answers() {
        let mut x = exchange(CALL);
        x.on_response_head(Some("text/event-stream"), false, false);
        x.finish(200, true, Instant::now());
        assert_eq!(x.calls[0].outcome, Some(Outcome::Cancelled));
        let mut x = exchange(CALL);
        x.finish(404, false, Instant::now());
        assert_eq!(x.calls[0].outcome, Some(Outcome::Error));
        let mut x = exchange(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        x.finish(202, false, Instant::now());
        assert_eq!(x.calls[0].outcome, Some(Outcome::Ok));
        let mut x = Exchange::unparsed(Instant::now());
        x.finish(400, false, Instant::now());
        assert_eq!(x.calls[0].method, "_unparsed");
        assert_eq!(x.calls[0].outcome, Some(Outcome::Error));
    }

    const LIST: &str =
        r#"{"jsonrpc":"2.0","id":"l1","method":"tools/list","params":{"cursor":"c1"}}"#;
    const LISTED: &str = r#"{"jsonrpc":"2.0","id":"l1","result":{"tools":[{"name":"echo"},{"name":"delete_note"}],"nextCursor":"c2"}}"#;

    fn no_delete(t: &str, _: &serde_json::Value) -> bool {
        !t.starts_with("delete_")
    }

    #[test]
    fn sse_lists_per_identity_are_private_and_pages_are_collected() {
        let mut x = exchange(
            r#"{"jsonrpc":"2.0","id":"l1","method":"tools/list","params":{"cursor":"c1"}}"#,
        );
        assert!(x.calls[0].paged);
        assert!(x.on_response_head(Some("text/event-stream"), true, true));
        let list = r#"{"jsonrpc":"2.0","id":"l1","result":{"tools":[{"name":"echo","description":"v2"},{"name":"delete_note"}],"ttlMs":30000,"cacheScope":"public"}}"#;
        let progress = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n";
        let event = format!("event: message\ndata: {list}\n\n");
        // Hide by definition: a keep that looks at the description.
        let keep = |t: &str, def: &serde_json::Value| {
            !t.starts_with("delete_") && def["description"] != "v3"
        };
        let out = feed_all(&mut x, &[progress, &event], &keep);
        assert!(
            out.starts_with(progress),
            "events before the list pass as they are"
        );
        assert!(out.contains(r#""cacheScope":"private""#), "{out}");
        assert!(out.contains(r#""ttlMs":30000"#), "{out}");
        assert!(!out.contains("delete_note"), "{out}");
        assert_eq!(x.list_pages.len(), 1);
        assert!(x.list_pages[0].1, "the request asked for a later page");
        let v: serde_json::Value = serde_json::from_slice(&x.list_pages[0].0).unwrap();
        assert_eq!(
            v["tools"].as_array().unwrap().len(),
            2,
            "pages are kept as the upstream sent them"
        );
    }

    #[test]
    fn tools_list_filtered_in_sse_event_by_event() {
        let mut x = exchange(LIST);
        assert!(x.on_response_head(Some("text/event-stream"), true, false));
        let ev = format!("event: message\nid: 9\ndata: {LISTED}\n\n");
        let ping = ": ping\n\n";
        let mut outs = Vec::new();
        // a comment, then the result split in three
        let (a, rest) = ev.split_at(20);
        let (b, c) = rest.split_at(30);
        for (chunk, end) in [(ping, false), (a, false), (b, false), (c, true)] {
            let bytes = Bytes::copy_from_slice(chunk.as_bytes());
            outs.push(
                x.on_body(Some(&bytes), end, Instant::now(), &no_delete)
                    .unwrap(),
            );
        }
        // the comment went out at once; the split event only once complete
        assert_eq!(&outs[0][..], ping.as_bytes());
        assert!(outs[1].is_empty() && outs[2].is_empty());
        let text = std::str::from_utf8(&outs[3]).unwrap();
        assert!(text.starts_with("event: message\nid: 9\ndata: "), "{text}");
        let data = text
            .trim_end()
            .strip_prefix("event: message\nid: 9\ndata: ")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["result"]["tools"], serde_json::json!([{"name": "echo"}]));
        assert_eq!(v["result"]["nextCursor"], "c2");
        assert_eq!(x.listed, vec!["echo", "delete_note"]);
        assert_eq!(x.calls[0].outcome, Some(Outcome::Ok));
    }

    #[test]
    fn tools_list_filtered_in_json() {
        let mut x = exchange(LIST);
        assert!(x.on_response_head(Some("application/json"), true, false));
        let (a, b) = LISTED.split_at(25);
        let out = feed_all(&mut x, &[a, b], &no_delete);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["result"]["tools"], serde_json::json!([{"name": "echo"}]));
    }

    #[test]
    fn oversized_tools_list_fails_closed() {
        let mut x = exchange(LIST);
        assert!(x.on_response_head(Some("text/event-stream"), true, false));
        let big = format!(
            "data: {{\"jsonrpc\":\"2.0\",\"id\":\"l1\",\"result\":{{\"tools\":[{{\"name\":\"delete_note\",\"description\":\"{}\"}}]}}}}\n\n",
            "x".repeat(MAX_INSPECTED + 10)
        );
        let mut sent = Vec::new();
        for (i, c) in big.as_bytes().chunks(1 << 16).enumerate() {
            let end = (i + 1) * (1 << 16) >= big.len();
            let b = Bytes::copy_from_slice(c);
            sent.extend_from_slice(
                &x.on_body(Some(&b), end, Instant::now(), &no_delete)
                    .unwrap(),
            );
        }
        let text = String::from_utf8(sent).unwrap();
        assert!(!text.contains("delete_note"), "the unfiltered list leaked");
        assert!(
            text.contains("could not be filtered by the bridge"),
            "{text}"
        );
        assert_eq!(x.calls[0].outcome, Some(Outcome::Error));
    }
}
