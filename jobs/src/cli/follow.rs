//! `tauc-job follow`: the incremental daily job as a service, one
//! micro-batch every `--every` over yesterday's and today's UTC
//! collection dates ([`crate::jobs::follow`]), with its metrics at
//! `--metrics-bind`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use super::flags::EngineArgs;
use super::resolve::{Resolved, connect, resolve};
use super::submit::RunArgs;
use crate::cli::Globals;
use crate::config::{Section, human, parse_duration};
use crate::engine::client::submitted;
use crate::error::{Error, Result};
use crate::jobs::follow::metrics::{FollowMetrics, router};
use crate::jobs::follow::{self, Clock, FollowSpec};
use crate::jobs::job::preflight;
use crate::jobs::layering::load_zones;
use crate::warehouse::commit;

/// Where `/metrics` listens unless told otherwise (the uploader's default
/// is 9464).
const DEFAULT_METRICS_BIND: &str = "127.0.0.1:9465";

/// `follow` flags, serialized like `submit`'s.
#[derive(Debug, Clone, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FollowCmd {
    /// Time between the starts of two micro-batches (30s, 5m); a batch
    /// that runs longer is followed at once [default: 60s].
    #[arg(long, value_name = "DURATION", env = "TAUC_FOLLOW_EVERY", value_parser = parse_every)]
    #[serde(
        rename = "follow-every",
        skip_serializing_if = "Option::is_none",
        serialize_with = "human::duration::serialize_some"
    )]
    pub every: Option<Duration>,
    /// Address of /metrics and /healthz (Prometheus text format; no data
    /// rows, no settings) [default: 127.0.0.1:9465].
    #[arg(long, value_name = "ADDR", env = "TAUC_METRICS_BIND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_bind: Option<String>,
    /// Testing aid, not for production: the service's clock starts at this
    /// instant (RFC 3339, e.g. 2024-06-18T23:59:00Z) and runs at the real
    /// rate from there; the batches' dates and the lag follow it.
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    #[serde(skip)]
    pub clock_start: Option<DateTime<Utc>>,
    /// What each batch loads and how.
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunArgs,
    /// Scheduler, parallelism, memory, scratch space, stores.
    #[command(flatten)]
    #[serde(flatten)]
    pub engine: EngineArgs,
}

/// `follow`'s own settings: flags > `TAUC_*` > `[follow]` > defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
struct FollowSettings {
    #[serde(with = "human::duration")]
    follow_every: Duration,
    metrics_bind: String,
}

impl Default for FollowSettings {
    fn default() -> FollowSettings {
        FollowSettings {
            follow_every: Duration::from_secs(60),
            metrics_bind: DEFAULT_METRICS_BIND.into(),
        }
    }
}

/// A positive duration.
fn parse_every(s: &str) -> std::result::Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "'{s}' is no interval (expected more than 0, e.g. 60s)"
        ));
    }
    Ok(d)
}

/// An RFC 3339 instant.
fn parse_instant(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("invalid instant '{s}': {e} (expected RFC 3339, e.g. 2024-06-18T23:59:00Z)")
        })
}

/// `--every` and `--metrics-bind` from flags > `TAUC_*` > `[follow]` >
/// defaults, checked.
fn own_settings(r: &Resolved, f: &FollowCmd) -> Result<(Duration, SocketAddr)> {
    let settings: FollowSettings = r.layers.extract(f)?;
    // the flag's parser refuses 0; the variable and the file are read here
    if settings.follow_every.is_zero() {
        return Err(Error::config(
            "invalid TAUC_FOLLOW_EVERY / [follow] every: 0 is no interval (expected more than 0, e.g. 60s)",
        ));
    }
    let bind = settings.metrics_bind.parse().map_err(|e| {
        Error::config(format!(
            "invalid --metrics-bind '{}': {e} (expected host:port, e.g. {DEFAULT_METRICS_BIND})",
            settings.metrics_bind
        ))
    })?;
    Ok((settings.follow_every, bind))
}

/// `tauc-job follow`: checks what a bad setting would break (exit 2), then
/// runs batches until SIGTERM or SIGINT (exit 0).
pub async fn follow(g: &Globals, f: FollowCmd) -> Result<String> {
    // first, so that an injected clock reads what the caller gave it
    let clock = f.clock_start.map_or_else(Clock::system, Clock::starting_at);
    let r = resolve(g, Section::Follow, &f, &f.engine.resources())?;
    let (every, bind) = own_settings(&r, &f)?;
    // Ctrl-C / SIGTERM abandon the batch in flight; the loop then returns
    submitted::install();
    commit::keep_replaced::set(r.settings.keep_replaced_secs);
    preflight(&r.engine, &r.warehouse, "warehouse").await?;
    let run = f.run.spec(&r, Vec::new());
    // an unknown region is a setting to fix, not a batch to retry
    load_zones(&r.engine, &r.warehouse, &run.regions).await?;
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| Error::config(format!("cannot listen on --metrics-bind {bind}: {e}")))?;
    let ctx = connect(
        &r.engine,
        r.settings.scheduler.as_deref(),
        f.engine.parallelism,
    )
    .await?;
    let metrics = Arc::new(FollowMetrics::default());
    let app = router(metrics.clone(), clock);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(metrics = %bind, "serving /metrics");
    let spec = FollowSpec { every, run, clock };
    let result = follow::run(&r.engine, &ctx, &spec, &metrics).await;
    server.abort();
    result.map(|()| String::new())
}
