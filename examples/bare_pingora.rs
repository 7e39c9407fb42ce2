//! The benchmarks' reference point: a bare Pingora HTTP proxy built with the same pingora
//! version, features and release profile as tailbridge. One `ProxyHttp` whose
//! `upstream_peer` returns a fixed, pooled plain-HTTP peer, and nothing else: no routing,
//! header rules, metrics, logging or auth. The gap between this and tailbridge in one bench
//! run is what tailbridge's own work costs.
//!
//! Usage: cargo run --release --example bare_pingora -- LISTEN UPSTREAM [THREADS]
//! e.g. `bare_pingora 127.0.0.1:8901 127.0.0.1:8080 1`.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_pingora LISTEN UPSTREAM [THREADS]");
        std::process::exit(64);
    };
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        daemon: false,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
