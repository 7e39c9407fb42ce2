//! Logger setup: env_logger, text or JSON lines on stderr. `RUST_LOG` wins over the config's
//! `log.level`; `-d/--debug` raises the default to `debug`.

use crate::config::LogFormat;
use std::io::Write;

/// Install the global logger. Safe to call once; later calls are ignored.
pub fn init(format: LogFormat, default_filter: &str) {
    let env = env_logger::Env::default().default_filter_or(default_filter);
    let mut builder = env_logger::Builder::from_env(env);
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = serde_json::json!({
                "ts": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    let _ = builder.try_init();
}
