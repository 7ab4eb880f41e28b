//! Logging for all three binaries: `tracing` to stderr, `info` by default
//! (`RUST_LOG` overrides), the engine's chatty crates muted, text or JSON.

use tracing_subscriber::EnvFilter;

/// The default filter: tauc at info, Ballista and DataFusion internals at
/// warn (they log every task at info).
pub const DEFAULT_FILTER: &str = "info,ballista=warn,ballista_core=warn,ballista_scheduler=warn,\
ballista_executor=warn,datafusion=warn,h2=warn,tonic=warn,hyper=warn,tower=warn";

/// Installs the global subscriber; `json` switches to one JSON object per
/// line (for journald/log shippers). Calling it twice is harmless.
pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // colours only on a terminal: log files and journald get plain text
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
