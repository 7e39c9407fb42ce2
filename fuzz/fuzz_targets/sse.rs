//! The SSE parser fed one input cut at every position gives the same events as fed whole.
#![no_main]
use tailbridge::mcp::sse::SseScanner;

fn events(chunks: &[&[u8]]) -> Vec<(Option<Vec<u8>>, bool)> {
    let mut s = SseScanner::new(256);
    let mut out = Vec::new();
    for c in chunks {
        s.feed(c, |e| out.push((e.data.map(<[u8]>::to_vec), e.oversized)));
    }
    out
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let whole = events(&[data]);
    let cut = if data.is_empty() {
        0
    } else {
        data[0] as usize % (data.len() + 1)
    };
    let (a, b) = data.split_at(cut);
    assert_eq!(events(&[a, b]), whole);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(events(&bytes), whole);
});
