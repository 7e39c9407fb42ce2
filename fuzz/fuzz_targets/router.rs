//! Path normalisation and routing over a fixed table.
#![no_main]
use tailbridge::proxy::router::Router;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let router = Router::new([("/mcp/a", "/mcp"), ("/mcp/a/b", "/"), ("/x", "/up/x")]);
    if let Ok(Some(m)) = router.route(path) {
        // The upstream path (the query is passed on byte for byte) never climbs out of the
        // target's path.
        let upstream_path = m
            .upstream_path_and_query
            .split('?')
            .next()
            .unwrap_or_default();
        assert!(!upstream_path
            .split('/')
            .any(|seg| seg == ".." || seg == "."));
    }
    let _ = tailbridge::config::endpoints::normalise_endpoint_path(path);
});
