//! Logging for all the binaries: `tracing` to stderr, `info` by default
//! (`RUST_LOG` overrides), the engine's chatty crates muted, text or JSON.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The default filter: tauc at info, Ballista and DataFusion internals at
/// warn (they log every task at info).
pub const DEFAULT_FILTER: &str = "info,ballista=warn,ballista_core=warn,ballista_scheduler=warn,\
ballista_executor=warn,datafusion=warn,h2=warn,tonic=warn,hyper=warn,tower=warn";

/// Installs the global subscriber; `json` switches to one JSON object per
/// line (for journald/log shippers). Calling it twice is harmless.
pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // colours only on a terminal: log files and journald get plain text
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(false)
    });
    let json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_target(false)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(RepeatedWarnings::default())
        .with(text)
        .with(json)
        .try_init();
}

/// Warnings an engine crate repeats in a loop, said once a minute: an
/// executor's poll loop retries every 50 ms while the scheduler is down
/// and warned at each try (~20 lines a second).
const REPEATED: [&str; 1] = ["Executor poll work loop failed"];

/// How often a [`REPEATED`] warning is let through.
const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// Drops a [`REPEATED`] warning said less than [`REPEAT_EVERY`] ago.
#[derive(Default)]
struct RepeatedWarnings {
    last: Mutex<Option<Instant>>,
}

impl<S: Subscriber> Layer<S> for RepeatedWarnings {
    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::WARN {
            return true;
        }
        // Ballista logs through `log`: the bridged event's own target is
        // "log", so the message alone says which warning it is
        let mut message = Message(String::new());
        event.record(&mut message);
        if !REPEATED.iter().any(|start| message.0.starts_with(start)) {
            return true;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < REPEAT_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// The `message` field of an event.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}
