//! Thin entry point: parse the command line, load the config, hand over to `app::run`.

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use tailbridge::cli::{self, Cli, Command, EXIT_CONFIG, EXIT_START};
use tailbridge::config;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The runtime of the commands that talk to the network (doctor, tools pin).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn main() -> ExitCode {
    let args = Cli::parse();
    match args.command {
        Some(Command::Tools {
            command: cli::ToolsCommand::Pin { endpoint, timeout },
        }) => {
            let cfg = match config::load(&args.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            let _ = rustls::crypto::ring::default_provider().install_default();
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            let pinned = rt.block_on(tailbridge::mcp::listing::pin_file(
                &cfg,
                endpoint.as_deref(),
                Duration::from_secs(timeout.max(1)),
            ));
            let rendered = pinned.and_then(|(f, notes)| {
                serde_json::to_string_pretty(&f)
                    .map(|t| (t, notes))
                    .map_err(|e| e.to_string())
            });
            match rendered {
                Ok((text, notes)) => {
                    println!("{text}");
                    for n in notes {
                        eprintln!("{n}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Healthcheck { url, timeout }) => {
            match cli::probe(&url, Duration::from_secs(timeout.max(1))) {
                Ok(200) => ExitCode::SUCCESS,
                Ok(code) => {
                    eprintln!("{url}: HTTP {code}");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("{url}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Doctor {
            json,
            endpoint,
            timeout,
        }) => {
            let opts = tailbridge::doctor::Options {
                endpoint,
                timeout: std::time::Duration::from_secs(timeout.max(1)),
            };
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            let report = rt.block_on(tailbridge::doctor::run(&args.config, &opts));
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.render());
            }
            if report.failed() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Some(Command::Demo { port, admin_port }) => {
            let upstream = match tailbridge::demo::start_upstream() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: starting the demo MCP server: {e}");
                    return ExitCode::from(EXIT_START as u8);
                }
            };
            let dir = std::env::temp_dir();
            let text = tailbridge::demo::config_text(port, admin_port, upstream, &dir);
            let cfg = match config::parse(&text) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: demo config: {e:?}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            tailbridge::observe::logging::init(cfg.log.format, "info");
            print!("{}", tailbridge::demo::banner(port, admin_port));
            let opts = tailbridge::app::RunOptions {
                upgrade: false,
                config_path: None,
            };
            match tailbridge::app::run(cfg, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_START as u8)
                }
            }
        }
        Some(Command::Check { explain }) => match config::load(&args.config) {
            Ok(cfg) => {
                print!("{}", cli::summary(&cfg));
                print!("{}", cli::pin_summary(&cfg));
                if explain {
                    println!("effective config:\n{cfg:#?}");
                }
                for w in cli::warnings(&cfg) {
                    println!("warning: {w}");
                }
                let problems = cli::start_problems(&cfg);
                for p in &problems {
                    eprintln!("error: {p}");
                }
                if !problems.is_empty() {
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
                println!("{}: OK", args.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG as u8)
            }
        },
        Some(Command::Reload) => match config::load(&args.config) {
            Ok(cfg) => match tailbridge::reload::reload(&cfg, &args.config, args.debug) {
                Ok(pid) => {
                    println!("reloaded: process {pid} serves {}", args.config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: reload failed: {e}");
                    ExitCode::from(EXIT_START as u8)
                }
            },
            Err(e) => {
                eprintln!(
                    "error: {e}
reload refused: the running process keeps its configuration"
                );
                ExitCode::from(EXIT_CONFIG as u8)
            }
        },
        None => {
            let cfg = match config::load(&args.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            let level = if args.debug {
                "debug"
            } else {
                cfg.log.level.as_str()
            };
            tailbridge::observe::logging::init(cfg.log.format, level);
            let opts = tailbridge::app::RunOptions {
                upgrade: args.upgrade,
                config_path: Some(args.config.clone()),
            };
            match tailbridge::app::run(cfg, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("cannot start: {e}");
                    eprintln!("error: cannot start: {e}");
                    let code = if e.is_config() {
                        EXIT_CONFIG
                    } else {
                        EXIT_START
                    };
                    ExitCode::from(code as u8)
                }
            }
        }
    }
}
