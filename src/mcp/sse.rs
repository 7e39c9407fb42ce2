//! An incremental `text/event-stream` parser (WHATWG HTML, "server-sent events"), fed the
//! response body chunk by chunk as it passes. Pure.
//!
//! It never holds the stream back: [`SseScanner::feed`] looks at a chunk and returns, and the
//! caller forwards the chunk unchanged. It keeps only the event in progress: its `data`
//! lines (joined with `\n`), capped at a maximum size, beyond which that event is marked
//! oversized and skipped. Lines end with `\r\n`, `\n` or `\r`, also when the two bytes of a
//! `\r\n` arrive in different chunks. Comments (`:` lines) and other fields are read past.

/// One event boundary (a blank line).
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event's data, or `None` for an event without `data` lines (or one that was larger
    /// than the cap).
    pub data: Option<&'a [u8]>,
    /// The stream offset just past the blank line that ended the event.
    pub end: u64,
    /// The event exceeded the cap; its data was dropped.
    pub oversized: bool,
}

/// Parser state for one stream.
#[derive(Debug)]
pub struct SseScanner {
    /// The line in progress, when it spans chunks.
    line: Vec<u8>,
    /// The current line was too long and is being skipped.
    line_dropped: bool,
    data: Vec<u8>,
    has_data: bool,
    oversized: bool,
    /// The last chunk ended with `\r`: a leading `\n` in the next one belongs to it.
    pending_cr: bool,
    pos: u64,
    max: usize,
}

impl SseScanner {
    /// A scanner that inspects events of up to `max` bytes of data.
    pub fn new(max: usize) -> Self {
        SseScanner {
            line: Vec::new(),
            line_dropped: false,
            data: Vec::new(),
            has_data: false,
            oversized: false,
            pending_cr: false,
            pos: 0,
            max,
        }
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Feed the next chunk; `on_event` runs for each event that ends in it.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        while !chunk.is_empty() {
            if std::mem::take(&mut self.pending_cr) && chunk[0] == b'\n' {
                chunk = &chunk[1..];
                self.pos += 1;
                continue;
            }
            let Some(i) = chunk.iter().position(|&c| c == b'\n' || c == b'\r') else {
                self.append_partial(chunk);
                self.pos += chunk.len() as u64;
                return;
            };
            self.pending_cr = chunk[i] == b'\r';
            self.pos += i as u64 + 1;
            if self.line.is_empty() && !self.line_dropped {
                self.line_done(&chunk[..i], &mut on_event);
            } else {
                self.append_partial(&chunk[..i]);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, &mut on_event);
                self.line = line;
                self.line.clear();
            }
            chunk = &chunk[i + 1..];
        }
    }

    fn append_partial(&mut self, part: &[u8]) {
        if self.line_dropped {
            return;
        }
        if self.line.len() + part.len() > self.max + 8 {
            // Too long to keep: remember only its start, which names the field.
            self.line_dropped = true;
            self.line.extend_from_slice(&part[..part.len().min(5)]);
            self.line.truncate(5);
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        if std::mem::take(&mut self.line_dropped) {
            // A data line too long to keep: this event is not inspected. Other fields that
            // long (comments, `event:`) are read past as usual.
            if line.starts_with(b"data:") {
                self.oversized = true;
                self.has_data = true;
                self.data.clear();
            }
            return;
        }
        if line.is_empty() {
            let data = if self.has_data && !self.oversized {
                let n = self.data.len().saturating_sub(1);
                Some(&self.data[..n])
            } else {
                None
            };
            on_event(Event {
                data,
                end: self.pos,
                oversized: self.oversized,
            });
            self.data.clear();
            self.has_data = false;
            self.oversized = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field != b"data" {
            return;
        }
        self.has_data = true;
        if self.oversized {
            return;
        }
        if self.data.len() + value.len() + 1 > self.max {
            self.oversized = true;
            self.data.clear();
            return;
        }
        self.data.extend_from_slice(value);
        self.data.push(b'\n');
    }
}

/// Re-emit one raw event (its bytes as they arrived) with `data` replaced: every other line
/// (`id:`, `event:`, `retry:`, comments) is kept as it was.
pub fn replace_data(raw_event: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    for line in raw_event.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line == b"data" || line.starts_with(b"data:") {
            continue;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    for l in data.split(|&c| c == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `chunks` and collect (data, end) of every event.
    fn events(chunks: &[&[u8]], max: usize) -> Vec<(Option<String>, u64)> {
        let mut s = SseScanner::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |e| {
                out.push((
                    e.data.map(|d| String::from_utf8_lossy(d).into_owned()),
                    e.end,
                ))
            });
        }
        out
    }

    #[test]
    fn sse_table() {
        let d = |s: &str| Some(s.to_string());
        type Case<'a> = (&'a [&'a [u8]], Vec<(Option<String>, u64)>);
        let cases: &[Case] = &[
            (&[b"data: a\n\n"], vec![(d("a"), 9)]),
            (
                &[b"event: message\ndata: {\"x\":1}\n\n"],
                vec![(d("{\"x\":1}"), 30)],
            ),
            // split inside a line, inside the field name, between the newlines
            (&[b"da", b"ta: hel", b"lo\n", b"\n"], vec![(d("hello"), 13)]),
            // \r\n endings, and a \r\n split across chunks (the event ends at its \r; the
            // \n that follows in the next chunk is read past)
            (&[b"data: a\r\n\r", b"\n"], vec![(d("a"), 10)]),
            (
                &[b"data: a\r\n\r", b"\ndata: b\n\n"],
                vec![(d("a"), 10), (d("b"), 20)],
            ),
            (&[b"data: a\r\r"], vec![(d("a"), 9)]),
            // multi-line data joins with \n; the leading space is optional
            (
                &[b"data: one\ndata:two\ndata\n\n"],
                vec![(d("one\ntwo\n"), 25)],
            ),
            // comments and keep-alives are not events with data
            (
                &[b": keep-alive\n\n", b"data: x\n\n"],
                vec![(None, 14), (d("x"), 23)],
            ),
            // id and retry fields are read past
            (&[b"id: 7\nretry: 100\ndata: y\n\n"], vec![(d("y"), 26)]),
            // an unterminated event is not an event yet
            (&[b"data: partial\n"], vec![]),
            (
                &[b"\n\ndata: z\n\n"],
                vec![(None, 1), (None, 2), (d("z"), 11)],
            ),
        ];
        for (chunks, want) in cases {
            assert_eq!(&events(chunks, 1024), want, "{chunks:?}");
        }
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let text = b"event: message\r\nid: 1\r\ndata: {\"jsonrpc\":\"2.0\",\r\ndata: \"id\":1}\r\n\r\n: ping\n\ndata: end\n\n";
        let whole = events(&[text], 1024);
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(events(&bytes, 1024), whole);
        assert_eq!(whole.len(), 3);
        assert_eq!(
            whole[0].0.as_deref(),
            Some("{\"jsonrpc\":\"2.0\",\n\"id\":1}")
        );
    }

    #[test]
    fn oversized_events_are_skipped_not_kept() {
        let big = format!("data: {}\n\ndata: small\n\n", "x".repeat(100));
        let mut s = SseScanner::new(32);
        let mut seen = Vec::new();
        for c in big.as_bytes().chunks(7) {
            s.feed(c, |e| seen.push((e.data.map(|d| d.to_vec()), e.oversized)));
        }
        assert_eq!(seen, vec![(None, true), (Some(b"small".to_vec()), false)]);
        assert!(s.line.capacity() < 100, "the 106-byte line was not kept");
    }

    #[test]
    fn replace_keeps_other_fields() {
        let raw = b"event: message\nid: 42\ndata: {\"old\":1}\n\n";
        assert_eq!(
            replace_data(raw, b"{\"new\":2}"),
            b"event: message\nid: 42\ndata: {\"new\":2}\n\n".to_vec()
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;

    /// However a stream is cut into chunks, the same events come out at the same offsets.
    #[test]
    fn any_chunking_gives_the_same_events() {
        let mut seed = 0x1234_5678_9ABC_DEF1u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let pieces: &[&[u8]] = &[
            b"data: {\"a\":1}",
            b"\n",
            b"\r\n",
            b"\r",
            b": comment",
            b"event: message",
            b"id: 9",
            b"data",
            b"data:x",
            b"retry: 5",
        ];
        for _ in 0..2_000 {
            let stream: Vec<u8> = (0..next(30))
                .flat_map(|_| pieces[next(pieces.len())].to_vec())
                .collect();
            let collect = |chunks: Vec<&[u8]>| {
                let mut s = SseScanner::new(64);
                let mut out = Vec::new();
                for c in chunks {
                    s.feed(c, |e| {
                        out.push((e.data.map(<[u8]>::to_vec), e.end, e.oversized))
                    });
                }
                out
            };
            let whole = collect(vec![&stream[..]]);
            let mut cuts: Vec<usize> = (0..next(6)).map(|_| next(stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts {
                chunks.push(&stream[last..c]);
                last = c;
            }
            chunks.push(&stream[last..]);
            let split = collect(chunks);
            // A \r\n split across chunks ends its event at the \r; whole, at the \n. The events
            // and their data are the same either way.
            let strip = |v: &Vec<(Option<Vec<u8>>, u64, bool)>| {
                v.iter()
                    .map(|(d, _, o)| (d.clone(), *o))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                strip(&whole),
                strip(&split),
                "{:?}",
                String::from_utf8_lossy(&stream)
            );
        }
    }
}
