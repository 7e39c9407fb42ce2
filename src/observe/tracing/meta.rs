//! Trace context in `params._meta` (MCP SEP-414; OpenTelemetry MCP conventions, "Context
//! propagation"): the keys `traceparent` and `tracestate`, unprefixed, in the `_meta` of a
//! request's or notification's `params`. Servers instrumented by the MCP SDKs take their
//! MCP span's parent from there, not from the HTTP headers. Pure.
//!
//! The rewrite only ever inserts: one member at the start of an existing `_meta` object,
//! or a `_meta` member at the start of an existing `params` object. Every byte the client
//! sent is kept, in order, so what the tool policy judged (method, id, tool name,
//! arguments) is what the upstream reads. A message is left alone when it already carries
//! a `traceparent`, when its `params` (or `_meta`) is absent or not an object, and when it
//! is a client's response; the caller still checks the result reads as the judged body.

use crate::mcp::json::{as_str, JsonError, Kind, Scanner};

/// The `_meta` key of the MCP revision a client declares in the body (requirements #54).
pub const PROTOCOL_VERSION_KEY: &[u8] = b"io.modelcontextprotocol/protocolVersion";

/// What one message of a POST body holds, in body order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slot {
    /// Where a carrier goes: the byte offset just after the `{` it goes into.
    pub insert: Option<Insert>,
    /// The `traceparent` the message already carries.
    pub traceparent: Option<String>,
    /// `_meta["io.modelcontextprotocol/protocolVersion"]`.
    pub protocol_version: Option<String>,
}

/// An insertion point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insert {
    pub at: usize,
    /// Into `_meta` (else into `params`, as a new `_meta` member).
    pub into_meta: bool,
    /// The object is empty: no comma after the new member.
    pub empty: bool,
}

/// Read the messages of a (valid, JSON-RPC) POST body: a single object or a batch array.
/// Offsets are into `body` as given (a leading byte-order mark is skipped, as the
/// JSON-RPC reader skips it).
pub fn slots(body: &[u8]) -> Result<Vec<Slot>, JsonError> {
    let mut out = Vec::new();
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    Scanner::walk(text, |s| match s.next_kind() {
        Some(Kind::Array) => s.array(|s| {
            out.push(message(s, body)?);
            Ok(())
        }),
        _ => {
            out.push(message(s, body)?);
            Ok(())
        }
    })?;
    Ok(out)
}

fn offset(body: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - body.as_ptr() as usize
}

fn message(s: &mut Scanner<'_>, body: &[u8]) -> Result<Slot, JsonError> {
    let mut slot = Slot::default();
    let mut is_response = false;
    if s.next_kind() != Some(Kind::Object) {
        s.value()?;
        return Ok(slot);
    }
    s.object(|s, k| {
        match k.as_bytes() {
            b"params" if s.next_kind() == Some(Kind::Object) => {
                let mut meta: Option<Option<Insert>> = None;
                let mut members = 0usize;
                let ((), raw) = s.spanned(|s| {
                    s.object(|s, pk| {
                        members += 1;
                        if pk.as_bytes() != b"_meta" {
                            s.value()?;
                            return Ok(());
                        }
                        if s.next_kind() != Some(Kind::Object) {
                            s.value()?;
                            meta = Some(None);
                            return Ok(());
                        }
                        let mut meta_members = 0usize;
                        let ((), m) = s.spanned(|s| {
                            s.object(|s, mk| {
                                meta_members += 1;
                                let v = s.value()?;
                                match mk.as_bytes() {
                                    b"traceparent" => {
                                        slot.traceparent = Some(
                                            as_str(v).map(|t| t.into_owned()).unwrap_or_default(),
                                        )
                                    }
                                    PROTOCOL_VERSION_KEY => {
                                        slot.protocol_version = as_str(v).map(|t| t.into_owned())
                                    }
                                    _ => {}
                                }
                                Ok(())
                            })
                        })?;
                        meta = Some(Some(Insert {
                            at: offset(body, m) + 1,
                            into_meta: true,
                            empty: meta_members == 0,
                        }));
                        Ok(())
                    })
                })?;
                slot.insert = match meta {
                    Some(inside) => inside,
                    None => Some(Insert {
                        at: offset(body, raw) + 1,
                        into_meta: false,
                        empty: members == 0,
                    }),
                };
            }
            b"result" | b"error" => {
                is_response = true;
                s.value()?;
            }
            _ => {
                s.value()?;
            }
        }
        Ok(())
    })?;
    if is_response || slot.traceparent.is_some() {
        slot.insert = None;
    }
    Ok(slot)
}

/// The carrier one message gets: a W3C `traceparent` and, when not empty, `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carrier {
    pub traceparent: String,
    pub tracestate: String,
}

impl Carrier {
    /// The members as JSON text, without braces.
    fn members(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"traceparent\":");
        push_string(out, &self.traceparent);
        if !self.tracestate.is_empty() {
            out.extend_from_slice(b",\"tracestate\":");
            push_string(out, &self.tracestate);
        }
    }
}

fn push_string(out: &mut Vec<u8>, s: &str) {
    // Escaping a `str` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The body with each message's carrier inserted (`carriers[i]` for message `i`; `None`
/// leaves it alone). `None` when nothing was inserted.
pub fn rewrite(body: &[u8], slots: &[Slot], carriers: &[Option<Carrier>]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0usize;
    for (slot, carrier) in slots.iter().zip(carriers) {
        let (Some(ins), Some(c)) = (slot.insert, carrier) else {
            continue;
        };
        let o = out.get_or_insert_with(|| Vec::with_capacity(body.len() + 160));
        o.extend_from_slice(&body[copied..ins.at]);
        copied = ins.at;
        if ins.into_meta {
            c.members(o);
        } else {
            o.extend_from_slice(b"\"_meta\":{");
            c.members(o);
            o.push(b'}');
        }
        if !ins.empty {
            o.push(b',');
        }
    }
    let mut o = out?;
    o.extend_from_slice(&body[copied..]);
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::jsonrpc::classify;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn carrier(state: &str) -> Option<Carrier> {
        Some(Carrier {
            traceparent: TP.into(),
            tracestate: state.into(),
        })
    }

    fn inject(body: &str, state: &str) -> Option<String> {
        let s = slots(body.as_bytes()).unwrap();
        let carriers = vec![carrier(state); s.len()];
        rewrite(body.as_bytes(), &s, &carriers).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn insertion_table() {
        let tp = format!(r#""traceparent":"{TP}""#);
        let cases: Vec<(&str, Option<String>)> = vec![
            // into an existing _meta, before what is there
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":1}}}"#,
                Some(format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","_meta":{{{tp},"progressToken":1}}}}}}"#
                )),
            ),
            // an empty _meta, with whitespace kept
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{ "_meta" : { } }}"#,
                Some(format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{ "_meta" : {{{tp} }} }}}}"#
                )),
            ),
            // params without _meta: a new _meta first
            (
                r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x"}}"#,
                Some(format!(
                    r#"{{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{{"_meta":{{{tp}}},"name":"x"}}}}"#
                )),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/initialized","params":{}}"#,
                Some(format!(
                    r#"{{"jsonrpc":"2.0","method":"notifications/initialized","params":{{"_meta":{{{tp}}}}}}}"#
                )),
            ),
            // left alone: no params, params not an object, _meta not an object, a
            // traceparent already there, a client's response
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#, None),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":null}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"traceparent":"00-abc"}}}"#,
                None,
            ),
            (r#"{"jsonrpc":"2.0","id":1,"result":{},"params":{}}"#, None),
        ];
        for (body, want) in cases {
            assert_eq!(inject(body, ""), want, "{body}");
        }
    }

    #[test]
    fn tracestate_is_escaped_and_batches_get_one_each() {
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}},{"jsonrpc":"2.0","id":2,"method":"tools/list"},{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"e","_meta":{}}}]"#;
        let s = slots(body.as_bytes()).unwrap();
        assert_eq!(s.len(), 3);
        assert!(s[1].insert.is_none());
        // a different carrier per message; the second is skipped
        let mut c2 = carrier("k=\"v\\");
        c2.as_mut().unwrap().traceparent = "tp-3".into();
        let out = rewrite(body.as_bytes(), &s, &[carrier(""), None, c2]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["params"]["_meta"]["traceparent"], TP);
        assert!(v[1].get("params").is_none());
        assert_eq!(v[2]["params"]["_meta"]["traceparent"], "tp-3");
        assert_eq!(v[2]["params"]["_meta"]["tracestate"], "k=\"v\\");
    }

    #[test]
    fn reads_what_is_there() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"traceparent":"00-aa-bb-01","io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let s = slots(body).unwrap();
        assert_eq!(s[0].traceparent.as_deref(), Some("00-aa-bb-01"));
        assert_eq!(s[0].protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(s[0].insert, None);
        // an escaped key is the same key
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_m\u0065ta":{"tr\u0061ceparent":"t"}}}"#;
        assert_eq!(slots(body).unwrap()[0].traceparent.as_deref(), Some("t"));
    }

    /// The property the policy relies on: the rewritten body reads as the same messages
    /// (method, id, tool name, arguments) for every shape of body.
    #[test]
    fn the_judged_reading_is_kept() {
        let bodies = [
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_note","arguments":{"_meta":{"x":1},"params":{}}}}"#,
            r#"{"params":{"arguments":{"a":[1,{"b":"}"}]},"name":"n\u0061me"},"method":"tools/call","id":"q","jsonrpc":"2.0"}"#,
            "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x\"}}",
            r#" [ {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{"progressToken":"p"}}} , {"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}} ] "#,
        ];
        for body in bodies {
            let b = body.as_bytes();
            let s = slots(b).unwrap();
            let carriers = vec![carrier("a=b"); s.len()];
            let out = rewrite(b, &s, &carriers).expect("inserted");
            assert_eq!(
                classify(&out, true).unwrap(),
                classify(b, true).unwrap(),
                "{body}"
            );
            // and only inserted: dropping the new text gives the body back
            let again = slots(&out).unwrap();
            assert!(again.iter().all(|s| s.traceparent.as_deref() == Some(TP)));
        }
    }
}
