//! A strict, allocation-light JSON scanner (RFC 8259) for the few members the MCP layer
//! reads. It validates the whole text (so that what it accepts is what any conforming parser
//! reads) but builds no tree: values are byte spans, and only the object levels the caller
//! walks are looked at key by key. Pure.
//!
//! Strictness is the point: a body that another parser might read differently (a
//! duplicate key, trailing text, a lone surrogate, invalid UTF-8, nesting deeper than
//! [`MAX_DEPTH`]) is an error here, so a policy decision is never made on a reading the
//! upstream does not share.

use std::borrow::Cow;

/// Deepest nesting accepted (a guard against stack exhaustion).
pub const MAX_DEPTH: usize = 128;

/// Why a text is not (unambiguous) JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON at byte {0}")]
    Syntax(usize),
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("text after the JSON value at byte {0}")]
    Trailing(usize),
    #[error("an object has the same key twice")]
    DuplicateKey,
}

/// The type of a JSON value, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
}

/// The kind of the value spanning `raw` (which the scanner validated).
pub fn kind(raw: &[u8]) -> Kind {
    match raw.first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b't') => Kind::True,
        Some(b'f') => Kind::False,
        Some(b'n') => Kind::Null,
        _ => Kind::Number,
    }
}

/// A string as the scanner read it: the text's own bytes when it has no escape (valid
/// UTF-8: checked), or the decoded text. Compared by content, so `"a"` and `"\u0061"` are
/// the same key.
#[derive(Debug, Clone)]
pub enum Text<'a> {
    Plain(&'a [u8]),
    Decoded(String),
}

impl Text<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Plain(b) => b,
            Text::Decoded(s) => s.as_bytes(),
        }
    }
}

impl PartialEq for Text<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Text<'_> {}

impl std::hash::Hash for Text<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_bytes().hash(h);
    }
}

impl<'a> From<Cow<'a, str>> for Text<'a> {
    fn from(c: Cow<'a, str>) -> Self {
        match c {
            Cow::Borrowed(s) => Text::Plain(s.as_bytes()),
            Cow::Owned(s) => Text::Decoded(s),
        }
    }
}

/// Bytes a string holds as they are and that are ASCII: no quote, backslash or control
/// character, no high bit. A run of these needs no UTF-8 check.
const PLAIN_ASCII: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0x20;
    while c < 0x80 {
        t[c] = c != b'"' as usize && c != b'\\' as usize;
        c += 1;
    }
    t
};

/// How far the byte-by-byte look at a string goes before the vectorized search takes over.
const SHORT_STRING: usize = 24;

/// A cursor over one JSON text.
pub struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Scanner { b, i: 0, depth: 0 }
    }

    fn err(&self) -> JsonError {
        JsonError::Syntax(self.i)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), JsonError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err())
        }
    }

    /// The whole text is exactly one value (surrounding whitespace allowed).
    pub fn document(b: &'a [u8]) -> Result<&'a [u8], JsonError> {
        let mut s = Scanner::new(b);
        s.ws();
        let v = s.value()?;
        s.ws();
        if s.i != b.len() {
            return Err(JsonError::Trailing(s.i));
        }
        Ok(v)
    }

    /// Run `f` on the one value of the whole text (surrounding whitespace allowed); `f` must
    /// consume exactly that value. Lets a caller walk a document in a single pass.
    pub fn walk<T>(
        b: &'a [u8],
        f: impl FnOnce(&mut Self) -> Result<T, JsonError>,
    ) -> Result<T, JsonError> {
        let mut s = Scanner::new(b);
        s.ws();
        let out = f(&mut s)?;
        s.ws();
        if s.i != b.len() {
            return Err(JsonError::Trailing(s.i));
        }
        Ok(out)
    }

    /// The kind of the value at the cursor (after whitespace), without consuming it.
    pub fn next_kind(&mut self) -> Option<Kind> {
        self.ws();
        self.b.get(self.i).map(|_| kind(&self.b[self.i..]))
    }

    /// Run `f`, which consumes one value at the cursor, and also return that value's bytes.
    pub fn spanned<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, JsonError>,
    ) -> Result<(T, &'a [u8]), JsonError> {
        self.ws();
        let start = self.i;
        let out = f(self)?;
        Ok((out, &self.b[start..self.i]))
    }

    /// Validate one value at the cursor and return its bytes.
    pub fn value(&mut self) -> Result<&'a [u8], JsonError> {
        let start = self.i;
        match self.peek() {
            Some(b'{') => self.object(|s, _| s.value().map(|_| ()))?,
            Some(b'[') => self.array(|s| s.value().map(|_| ()))?,
            Some(b'"') => {
                self.text()?;
            }
            Some(b't') => self.literal(b"true")?,
            Some(b'f') => self.literal(b"false")?,
            Some(b'n') => self.literal(b"null")?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            _ => return Err(self.err()),
        }
        Ok(&self.b[start..self.i])
    }

    fn literal(&mut self, lit: &[u8]) -> Result<(), JsonError> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(self.err())
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.i;
        self.number_syntax()?;
        // A number no double can hold (`1e400`) is read as infinity by some parsers and
        // refused by others: not a reading to decide on.
        let text = &self.b[start..self.i];
        if text.len() > 15 || text.iter().any(|c| matches!(c, b'.' | b'e' | b'E')) {
            let finite = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .is_some_and(f64::is_finite);
            if !finite {
                return Err(JsonError::Syntax(start));
            }
        }
        Ok(())
    }

    fn number_syntax(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err()),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err());
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err());
            }
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self.b.get(self.i..self.i + 4).ok_or(self.err())?;
        // Exactly four hex digits (`from_str_radix` alone would take a sign).
        if !h.iter().all(u8::is_ascii_hexdigit) {
            return Err(self.err());
        }
        let s = std::str::from_utf8(h).map_err(|_| self.err())?;
        let v = u32::from_str_radix(s, 16).map_err(|_| self.err())?;
        self.i += 4;
        Ok(v)
    }

    /// Read a string at the cursor, decoding escapes (borrowed when it has none).
    pub fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.eat(b'"')?;
        self.string_from(self.i)
    }

    /// Read a string at the cursor as [`Text`]: what keys and skipped values need. Short
    /// ASCII strings (most keys and values) are read byte by byte, without a UTF-8 pass.
    pub fn text(&mut self) -> Result<Text<'a>, JsonError> {
        self.eat(b'"')?;
        let start = self.i;
        let end = self.b.len().min(start + SHORT_STRING);
        let mut i = start;
        while i < end && PLAIN_ASCII[usize::from(self.b[i])] {
            i += 1;
        }
        if self.b.get(i) == Some(&b'"') {
            self.i = i + 1;
            return Ok(Text::Plain(&self.b[start..i]));
        }
        // A long run: still no UTF-8 pass when it is ASCII and ends the string.
        let (n, ascii) = plain_run(&self.b[start..]).ok_or(JsonError::Syntax(self.b.len()))?;
        if ascii && self.b[start + n] == b'"' {
            self.i = start + n + 1;
            return Ok(Text::Plain(&self.b[start..start + n]));
        }
        self.string_after(start, n).map(Text::from)
    }

    /// The string whose text starts at `start` (just after its opening quote).
    fn string_from(&mut self, start: usize) -> Result<Cow<'a, str>, JsonError> {
        let plain = plain_len(&self.b[start..]).ok_or(JsonError::Syntax(self.b.len()))?;
        self.string_after(start, plain)
    }

    /// The string whose text starts at `start` and whose first `plain` bytes are plain.
    fn string_after(&mut self, start: usize, plain: usize) -> Result<Cow<'a, str>, JsonError> {
        self.i = start + plain;
        if self.b[self.i] == b'"' {
            // The common case, kept short: no escape.
            let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| self.err())?;
            self.i += 1;
            return Ok(Cow::Borrowed(text));
        }
        self.escaped(start)
    }

    /// The rest of a string with an escape (or a control character) at the cursor; the
    /// text from `start` up to the cursor is plain.
    #[cold]
    fn escaped(&mut self, start: usize) -> Result<Cow<'a, str>, JsonError> {
        let mut owned: Option<String> = None;
        let mut run = start;
        let mut plain = 0;
        loop {
            // Plain bytes up to the next quote, backslash or control character.
            self.i += plain;
            let c = self.b[self.i];
            match c {
                b'"' => {
                    let tail = std::str::from_utf8(&self.b[run..self.i]).map_err(|_| self.err())?;
                    self.i += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(tail),
                        Some(mut o) => {
                            o.push_str(tail);
                            Cow::Owned(o)
                        }
                    });
                }
                b'\\' => {
                    let o = owned.get_or_insert_with(String::new);
                    o.push_str(std::str::from_utf8(&self.b[run..self.i]).map_err(|_| self.err())?);
                    self.i += 1;
                    let e = self.peek().ok_or(self.err())?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                // A high surrogate must be followed by an escaped low one.
                                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(self.err());
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err());
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.err());
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or(self.err())?
                        }
                        _ => return Err(JsonError::Syntax(self.i - 1)),
                    };
                    o.push(ch);
                    run = self.i;
                }
                0x00..=0x1f => return Err(self.err()),
                _ => self.i += 1,
            }
            plain = plain_len(&self.b[self.i..]).ok_or(JsonError::Syntax(self.b.len()))?;
        }
    }

    /// Walk an object at the cursor: `f` gets each key and must consume its value.
    /// Duplicate keys are an error (parsers disagree on which one wins).
    pub fn object<F>(&mut self, mut f: F) -> Result<(), JsonError>
    where
        F: FnMut(&mut Self, Text<'a>) -> Result<(), JsonError>,
    {
        self.enter()?;
        self.eat(b'{')?;
        self.ws();
        let mut keys = KeySet::default();
        if self.peek() == Some(b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.text()?;
            if !keys.insert(&key) {
                return Err(JsonError::DuplicateKey);
            }
            self.ws();
            self.eat(b':')?;
            self.ws();
            f(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.err()),
            }
        }
    }

    /// Walk an array at the cursor: `f` must consume each element.
    pub fn array<F>(&mut self, mut f: F) -> Result<(), JsonError>
    where
        F: FnMut(&mut Self) -> Result<(), JsonError>,
    {
        self.enter()?;
        self.eat(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.ws();
            f(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.err()),
            }
        }
    }

    fn enter(&mut self) -> Result<(), JsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(JsonError::TooDeep)
        } else {
            Ok(())
        }
    }
}

/// The length of the run of bytes a string can hold unescaped (anything but `"`, `\\` and
/// control characters) at the start of `b`; `None` when the run reaches the end.
fn plain_len(b: &[u8]) -> Option<usize> {
    plain_run(b).map(|(n, _)| n)
}

/// [`plain_len`], and whether the run is known to be all ASCII (then it needs no UTF-8
/// check; never claimed for a run cut by a control character). A JSON
/// body is mostly such runs: the terminator is found with a vectorized search, and the
/// run's smallest and largest bytes (vectorized too) rule out control characters (rare)
/// and tell ASCII apart.
fn plain_run(b: &[u8]) -> Option<(usize, bool)> {
    let end = memchr::memchr2(b'"', b'\\', b);
    let run = &b[..end.unwrap_or(b.len())];
    let (low, high) = run
        .iter()
        .fold((u8::MAX, 0u8), |(lo, hi), &c| (lo.min(c), hi.max(c)));
    if low < 0x20 {
        return run.iter().position(|&c| c < 0x20).map(|p| (p, false));
    }
    end.map(|n| (n, high < 0x80))
}

/// The keys of one object: short inline lists (plain keys borrowed, decoded ones copied),
/// a hash set once they grow (so that a hostile object with thousands of keys costs linear
/// time). No allocation for objects of up to [`KeySet::FEW`] plain keys.
#[derive(Default)]
struct KeySet<'a> {
    plain: [&'a [u8]; KeySet::FEW],
    len: usize,
    decoded: Vec<String>,
    many: Option<std::collections::HashSet<Text<'a>>>,
}

impl<'a> KeySet<'a> {
    const FEW: usize = 16;

    /// Add `key`; false when it was already there (compared by content).
    fn insert(&mut self, key: &Text<'a>) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(key.clone());
        }
        let k = key.as_bytes();
        if self.plain[..self.len].contains(&k) || self.decoded.iter().any(|d| d.as_bytes() == k) {
            return false;
        }
        match key {
            Text::Plain(b) if self.len < Self::FEW => {
                self.plain[self.len] = b;
                self.len += 1;
            }
            Text::Decoded(d) if self.decoded.len() < Self::FEW => self.decoded.push(d.clone()),
            _ => {
                let mut set: std::collections::HashSet<Text<'a>> = self.plain[..self.len]
                    .iter()
                    .map(|b| Text::Plain(b))
                    .chain(self.decoded.drain(..).map(Text::Decoded))
                    .collect();
                set.insert(key.clone());
                self.many = Some(set);
            }
        }
        true
    }
}

/// One object member: its key and its value's bytes.
pub type Member<'a> = (Text<'a>, &'a [u8]);

/// The members of the object spanning `raw` (validated), as (key, value bytes).
pub fn members(raw: &[u8]) -> Result<Vec<Member<'_>>, JsonError> {
    let mut out = Vec::new();
    let mut s = Scanner::new(raw);
    s.object(|s, k| {
        let v = s.value()?;
        out.push((k, v));
        Ok(())
    })?;
    Ok(out)
}

/// Decode the string value spanning `raw`, or `None` if it is not a string.
pub fn as_str(raw: &[u8]) -> Option<Cow<'_, str>> {
    if kind(raw) != Kind::String {
        return None;
    }
    Scanner::new(raw).string().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_runs_match_a_byte_by_byte_scan() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"abc".to_vec(),
            b"abcdefgh".to_vec(),
            b"abcdefgh\"".to_vec(),
            "héllo wörld ✓ — 😀 and more text\"".as_bytes().to_vec(),
            vec![0xff; 40],
        ];
        // Every stop byte at every offset of a 24-byte and a 100-byte run, with high bytes
        // around it.
        for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for (len, at) in (0..24)
                .map(|at| (24, at))
                .chain((0..100).map(|at| (100, at)))
            {
                let mut v = vec![b'x'; len];
                v[at] = stop;
                cases.push(v.clone());
                for (i, b) in v.iter_mut().enumerate() {
                    if i != at {
                        *b = 0x80 | (i as u8);
                    }
                }
                cases.push(v);
            }
        }
        // The bytes next to each stop byte in the ASCII table do not stop a run.
        cases.push(vec![
            0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0x9f, 0xa0, 0xdc, 0x22,
        ]);
        for c in &cases {
            assert_eq!(plain_len(c), naive(c), "{c:?}");
            // ASCII is never claimed wrongly, and is always seen where the run ends the
            // string or an escape begins (where it is used).
            if let Some((n, ascii)) = plain_run(c) {
                assert!(!ascii || c[..n].is_ascii(), "{c:?}");
                if c[n] >= 0x20 {
                    assert_eq!(ascii, c[..n].is_ascii(), "{c:?}");
                }
            }
        }
    }

    #[test]
    fn documents_table() {
        let ok: &[&str] = &[
            r#"{}"#,
            r#" {"a":1} "#,
            r#"[1,2.5,-0,1e10,-1.5E-3,true,false,null,"x"]"#,
            r#"{"a":{"b":[{"c":"\u00e9\ud83d\ude00\n"}]}}"#,
            r#""plain""#,
            "{\"a\":\"é\"}",
            r#"{"a":1,"b":{"a":2}}"#,
            r#"[1e308,123456789012345678901234567890,0.000001e-300]"#,
        ];
        for t in ok {
            assert!(Scanner::document(t.as_bytes()).is_ok(), "{t}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("{", "open"),
            (r#"{"a":1,}"#, "trailing comma"),
            (r#"{"a":1}{"b":2}"#, "two documents"),
            (r#"{"a":1} x"#, "trailing text"),
            (r#"{'a':1}"#, "single quotes"),
            (r#"{"a":01}"#, "leading zero"),
            (r#"{"a":1.}"#, "bare dot"),
            (r#"{"a":NaN}"#, "NaN"),
            (r#"{"a":"\ud800"}"#, "lone high surrogate"),
            (r#"{"a":"\udc00"}"#, "lone low surrogate"),
            (r#"{"a":"\x"}"#, "bad escape"),
            (r#"{"a":"\u+00e"}"#, "signed unicode escape"),
            (r#"{"id":1666666.66466E66665}"#, "a number no double holds"),
            (r#"{"id":-1e400}"#, "negative overflow"),
            ("{\"a\":\"\u{1}\"}", "control char"),
            (r#"{"a":1,"a":2}"#, "duplicate"),
            (r#"{"a":1,"\u0061":2}"#, "escaped duplicate"),
            (r#"[tru]"#, "bad literal"),
        ];
        for (t, why) in bad {
            assert!(Scanner::document(t.as_bytes()).is_err(), "{why}: {t}");
        }
        assert!(
            Scanner::document(b"{\"a\":\"\xff\"}").is_err(),
            "invalid UTF-8"
        );
        // Duplicates are found among plain and escaped keys alike, before and after the
        // inline lists spill into a hash set.
        for n in [3usize, 16, 17, 40] {
            let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
            let doc = format!("{{{}}}", keys.join(","));
            assert!(Scanner::document(doc.as_bytes()).is_ok(), "{n} keys");
            for dup in [r#""k0":1"#, r#""\u006b0":1"#, r#""k\u0031":1"#] {
                let twice = format!("{{{},{dup}}}", keys.join(","));
                assert_eq!(
                    Scanner::document(twice.as_bytes()),
                    Err(JsonError::DuplicateKey),
                    "{n} keys and {dup}"
                );
            }
            let escaped: Vec<String> = (0..n).map(|i| format!("\"\\u006b{i}\":{i}")).collect();
            let mixed = format!("{{{},\"k{}\":0}}", escaped.join(","), n - 1);
            assert_eq!(
                Scanner::document(mixed.as_bytes()),
                Err(JsonError::DuplicateKey),
                "{n} escaped keys, then the last one plain"
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(Scanner::document(deep.as_bytes()), Err(JsonError::TooDeep));
        let fine = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(Scanner::document(fine.as_bytes()).is_ok());
    }

    #[test]
    fn members_and_strings() {
        let m = members(br#"{"method":"tools\/call","id":7,"params":{"name":"x"}}"#).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(as_str(m[0].1).as_deref(), Some("tools/call"));
        assert_eq!(kind(m[1].1), Kind::Number);
        assert_eq!(m[1].1, b"7");
        assert_eq!(kind(m[2].1), Kind::Object);
        assert_eq!(as_str(b"5"), None);
    }
}

/// Properties over many generated inputs (a deterministic PRNG, so failures reproduce).
#[cfg(test)]
mod properties {
    use super::*;

    /// xorshift64*: small, deterministic.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const SEEDS: &[&str] = &[
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"h\u00e9llo","n":[1,2.5e3,-0.5,true,null]}}}"#,
        r#"[{"jsonrpc":"2.0","id":"a","method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#,
        r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"\"quoted\" \\ \/"}],"isError":false}}"#,
    ];
    const ALPHABET: &[u8] = b"{}[]\":,.-+eE0123456789 \t\n\\/utrfnalsx\x00\xff\xc3\xa9";

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(v.len() + 1);
            match rng.below(3) {
                0 if at < v.len() => {
                    v.remove(at);
                }
                1 => v.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
                _ if at < v.len() => v[at] = ALPHABET[rng.below(ALPHABET.len())],
                _ => {}
            }
        }
        v
    }

    /// Whatever the scanner accepts, serde_json (a conforming parser) accepts too: the
    /// layer never reads a body that the upstream would read differently or not at all.
    #[test]
    fn scanner_accepts_only_what_a_conforming_parser_accepts() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut accepted, mut rejected) = (0, 0);
        for i in 0..30_000 {
            let seed = SEEDS[i % SEEDS.len()].as_bytes();
            let text = mutate(&mut rng, seed);
            match Scanner::document(&text) {
                Ok(_) => {
                    accepted += 1;
                    assert!(
                        serde_json::from_slice::<serde_json::Value>(&text).is_ok(),
                        "scanner accepted what serde_json rejects: {:?}",
                        String::from_utf8_lossy(&text)
                    );
                }
                Err(_) => rejected += 1,
            }
        }
        assert!(accepted > 1000 && rejected > 1000, "{accepted} {rejected}");
    }

    /// Random bytes never panic the scanner or the JSON-RPC readers.
    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let len = rng.below(64);
            let text: Vec<u8> = (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect();
            let _ = Scanner::document(&text);
            let _ = crate::mcp::jsonrpc::classify(&text, true);
            let _ = crate::mcp::jsonrpc::replies(&text);
            let _ = crate::mcp::jsonrpc::listed_tools(&text);
        }
    }
}
