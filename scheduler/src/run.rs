//! The scheduler process: a Ballista scheduler built on the tauc session
//! (object stores, UDFs, codecs), so it resolves every plan a client
//! sends, serving gRPC, the job view and metrics on one port.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::create_scheduler;
use futures::FutureExt;
use tauc_common::process::shutdown_signal;
use tauc_jobs::engine::Engine;
use tauc_jobs::engine::plan::codec::{TaucLogicalCodec, TaucPhysicalCodec, with_codecs};
use tauc_jobs::engine::runtime::task_mode::TaskMode;
use tauc_jobs::error::{Error, Result};

use crate::{event_log, http};

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Address to listen on (gRPC, and `/healthz` `/readyz` over HTTP).
    pub bind: SocketAddr,
    /// Host name executors and clients use to reach this scheduler.
    pub external_host: String,
    /// Seconds without a heartbeat before an executor is taken for dead.
    pub executor_timeout_secs: u64,
    /// How a stage's tasks are spread over the executors.
    pub task_spread: TaskSpread,
    /// Where to append the job event log (JSON lines); none without.
    pub event_log: Option<std::path::PathBuf>,
    /// How executors get their tasks; none: see [`TaskMode::resolve`].
    pub task_mode: Option<TaskMode>,
}

/// How the scheduler hands a stage's tasks to executors with free slots.
///
/// Ballista's default, `bias`, fills the executor with the most free slots
/// before it looks at the next, so a stage with fewer tasks than the
/// cluster has slots runs on one executor while the other idles.
/// `round-robin` gives each executor one task in turn. (The 2:1 DWD CPU
/// split seen on two executors came mostly from the DWD query's joins on
/// `region`, see `jobs::layering`; the two policies were not timed apart.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskSpread {
    /// One task per executor in turn (tauc's default).
    #[default]
    RoundRobin,
    /// Fill the executor with the most free slots first (Ballista's default).
    Bias,
}

impl TaskSpread {
    fn policy(self) -> TaskDistributionPolicy {
        match self {
            TaskSpread::RoundRobin => TaskDistributionPolicy::RoundRobin,
            TaskSpread::Bias => TaskDistributionPolicy::Bias,
        }
    }
}

/// Runs a scheduler until SIGTERM or Ctrl-C.
pub async fn run_scheduler(engine: Engine, opts: SchedulerOptions) -> Result<()> {
    let builder_engine = engine.clone();
    let producer_engine = engine.clone();
    let mut config = SchedulerConfig::default()
        .with_hostname(opts.external_host.clone())
        .with_port(opts.bind.port())
        .with_task_distribution(opts.task_spread.policy())
        .with_override_config_producer(Arc::new(move || producer_engine.session_config()))
        .with_override_session_builder(Arc::new(move |config| {
            builder_engine
                .state(with_codecs(config))
                .map_err(Into::into)
        }));
    let mode = TaskMode::resolve(opts.task_mode, engine.tls.is_some())?;
    config = config.with_scheduler_policy(mode.policy());
    if let Some(tls) = &engine.tls {
        config = config
            .with_use_tls(true)
            .with_override_create_grpc_client_endpoint(tls.endpoint_override());
    }
    config.bind_host = opts.bind.ip().to_string();
    config.executor_timeout_seconds = opts.executor_timeout_secs;
    config.expire_dead_executor_interval_seconds = (opts.executor_timeout_secs / 4).clamp(1, 15);
    config.no_executors_grace_period_seconds = opts.executor_timeout_secs;
    config.override_logical_codec = Some(Arc::new(TaucLogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(TaucPhysicalCodec::default()));
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| Error::config(format!("cannot set up the scheduler: {e}")))?;
    let config = Arc::new(config);
    config
        .validate()
        .map_err(|e| Error::config(format!("invalid scheduler settings: {e}")))?;
    let event_log = opts.event_log.as_deref().map(event_log::open).transpose()?;
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .map_err(|e| Error::config(format!("cannot listen on {}: {e} (is it free?)", opts.bind)))?;
    let scheduler = create_scheduler(cluster, config)
        .await
        .map_err(|e| Error::Engine(format!("cannot start the scheduler: {e}")))?;
    if let Some(file) = event_log {
        tokio::spawn(event_log::run(scheduler.clone(), file));
    }
    let serving = match &engine.tls {
        Some(tls) => http::serve(tls.listener(listener)?, scheduler).boxed(),
        // without TCP_NODELAY each executor's poll for work waited ~44 ms
        // for a delayed ACK: one task per poll, 3× the time of push mode
        None => http::serve(
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            scheduler,
        )
        .boxed(),
    };
    tracing::info!(bind = %opts.bind, tls = engine.tls.is_some(), "scheduler listening (gRPC, /healthz, /readyz, /metrics, {})", tauc_jobs::engine::client::job_view::JOBS_PATH);
    tokio::select! {
        r = serving => r,
        _ = shutdown_signal() => {
            tracing::info!("scheduler received a stop signal, shutting down");
            Ok(())
        }
    }
}
