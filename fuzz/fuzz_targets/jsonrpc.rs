//! The JSON-RPC readers: a body the strict scanner accepts is one serde_json accepts too, and
//! no input panics the classifier, the response reader or the tools/list filter.
#![no_main]
use tailbridge::mcp::jsonrpc::{classify, filter_tools_lists, listed_tools, replies, Id};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if classify(data, true).is_ok() {
        let text = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
        assert!(serde_json::from_slice::<serde_json::Value>(text).is_ok());
    }
    for r in replies(data) {
        if let Some(result) = r.result {
            let _ = listed_tools(result);
        }
    }
    let _ = filter_tools_lists(data, &[Id::Int(1), Id::Str("a".into())], &|t| {
        t.len() % 2 == 0
    });
});
