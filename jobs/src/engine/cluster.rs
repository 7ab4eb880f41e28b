//! The long-running processes: a Ballista scheduler and executors built on
//! the tauc session (object stores, UDFs, codecs), so the cluster resolves
//! every plan the CLI sends. `tauc-scheduler` and `tauc-executor` are thin
//! wrappers over [`run_scheduler`] and [`run_executor`].

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::serve::ListenerExt;
use ballista_core::RuntimeProducer;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::error::BallistaError;
use ballista_core::utils::create_grpc_server;
use ballista_executor::ArrowFlightServerProvider;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::health::ExecutorHealth;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::create_scheduler;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::FutureExt;

use crate::engine::codec::{TaucLogicalCodec, TaucPhysicalCodec};
use crate::engine::job_view;
use crate::engine::scheduler_link::SchedulerLink;
use crate::engine::session::{Engine, with_codecs};
use crate::engine::task_metrics;
use crate::engine::tls::ClusterTls;
use crate::error::{Error, Result};

pub use tauc_common::process::{exit_with, runtime, shutdown_signal};

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

/// How executors get their tasks; the scheduler and every executor must
/// use the same (`TAUC_TASK_MODE` on every host).
///
/// In Ballista 55's push mode the scheduler loses the surviving executors'
/// slots when a lost executor makes it roll a stage back (it refunds a
/// task's vcores from the stage's task list, which a rolled-back stage no
/// longer has), and a DWD job that lost an executor then stands still in
/// about half the runs (`tauc-job` cancels it: exit 1, nothing
/// committed). In pull mode each executor asks for work when it has a free
/// slot and the same fault completes. (In either mode Ballista can hand
/// back two attempts' output of one re-run writer task; the commit keeps
/// one, see `engine::rerun`.) So pull is the default, and TLS needs it
/// (see `engine::tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskMode {
    /// Executors poll the scheduler when they have a free slot.
    Pull,
    /// The scheduler pushes tasks to executors' gRPC ports.
    Push,
}

impl TaskMode {
    fn policy(self) -> TaskSchedulingPolicy {
        match self {
            TaskMode::Pull => TaskSchedulingPolicy::PullStaged,
            TaskMode::Push => TaskSchedulingPolicy::PushStaged,
        }
    }

    /// The mode to run: the one asked for, checked against TLS (which needs
    /// pull); unset, pull.
    pub fn resolve(asked: Option<TaskMode>, tls: bool) -> Result<TaskMode> {
        match asked {
            Some(TaskMode::Push) if tls => Err(Error::config(
                "--task-mode push cannot be used with TLS (--cluster-ca …): Ballista 55's task-push \
                 port has no TLS; use --task-mode pull, or leave it unset (pull is the default with TLS)",
            )),
            Some(mode) => Ok(mode),
            None => Ok(TaskMode::Pull),
        }
    }
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

/// Executor settings.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Host to bind.
    pub bind_host: String,
    /// Host name the scheduler and other executors use to reach this one.
    pub external_host: Option<String>,
    /// Flight (shuffle data) port.
    pub port: u16,
    /// gRPC port (task pushes from the scheduler).
    pub grpc_port: u16,
    /// HTTP health port (`/healthz`, `/readyz`).
    pub health_port: u16,
    /// Scheduler host.
    pub scheduler_host: String,
    /// Scheduler port.
    pub scheduler_port: u16,
    /// Task slots; 0 means one per CPU.
    pub vcores: usize,
    /// Bytes the tasks may hold before they spill; `None`: Ballista's
    /// share of the host's memory.
    pub memory_limit: Option<usize>,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_secs: u64,
    /// How it gets its tasks (as the scheduler does); none: see
    /// [`TaskMode::resolve`].
    pub task_mode: Option<TaskMode>,
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
    let event_log = opts
        .event_log
        .as_deref()
        .map(crate::engine::event_log::open)
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .map_err(|e| Error::config(format!("cannot listen on {}: {e} (is it free?)", opts.bind)))?;
    let scheduler = create_scheduler(cluster, config)
        .await
        .map_err(|e| Error::config(format!("cannot start the scheduler: {e}")))?;
    if let Some(file) = event_log {
        tokio::spawn(crate::engine::event_log::run(scheduler.clone(), file));
    }
    let serving = match &engine.tls {
        Some(tls) => job_view::serve(tls.listener(listener)?, scheduler).boxed(),
        // without TCP_NODELAY each executor's poll for work waited ~44 ms
        // for a delayed ACK: one task per poll, 3× the time of push mode
        None => job_view::serve(
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            scheduler,
        )
        .boxed(),
    };
    tracing::info!(bind = %opts.bind, tls = engine.tls.is_some(), "scheduler listening (gRPC, /healthz, /readyz, /metrics, {})", job_view::JOBS_PATH);
    tokio::select! {
        r = serving => r,
        _ = shutdown_signal() => {
            tracing::info!("scheduler received a stop signal, shutting down");
            Ok(())
        }
    }
}

/// Runs an executor until SIGTERM or Ctrl-C (Ballista drains its tasks).
pub async fn run_executor(engine: Engine, opts: ExecutorOptions) -> Result<()> {
    let runtime = engine.runtime.clone();
    let runtime_producer: RuntimeProducer = Arc::new(move |_| Ok(runtime.clone()));
    let host = opts
        .external_host
        .clone()
        .unwrap_or_else(|| opts.bind_host.clone());
    let worker = format!("{host}-{}", opts.port)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>();
    // Files name their writer by host and port (kept short: keys are long
    // enough); Ballista gets a new id each start, because the scheduler
    // keeps a stopped executor's registration until it times out and
    // refuses the same id until then (a restarted executor would idle for
    // --executor-timeout-secs).
    crate::warehouse::writer::set_worker_name(&worker);
    let incarnation = uuid::Uuid::new_v4().simple().to_string();
    let executor_id = format!("{worker}-{}", &incarnation[..8]);
    let work_dir = engine.scratch.shuffle().to_string_lossy().into_owned();
    tracing::info!(executor_id = %executor_id, work_dir = %work_dir, "executor scratch directory (removed at exit)");
    let link = SchedulerLink::start(&opts.scheduler_host, opts.scheduler_port).await?;
    let mut config = ExecutorProcessConfig {
        executor_id,
        bind_host: opts.bind_host.clone(),
        external_host: opts.external_host.clone(),
        port: opts.port,
        grpc_port: opts.grpc_port,
        // through the link: Ballista's poll loop has no back-off of its own
        scheduler_host: link.local_addr().ip().to_string(),
        scheduler_port: link.local_addr().port(),
        scheduler_connect_timeout_seconds: 30,
        work_dir: Some(work_dir),
        memory_pool_size: opts.memory_limit.map(|m| m as u64),
        // shuffle files of finished jobs go after an hour, checked every 5 min
        job_data_ttl_seconds: 3600,
        job_data_clean_up_interval_seconds: 300,
        executor_heartbeat_interval_seconds: opts.heartbeat_secs,
        print_thread_info: false,
        ..Default::default()
    };
    if opts.vcores > 0 {
        config.vcores = opts.vcores;
    }
    config.override_function_registry = Some(Arc::new(engine.function_registry()?));
    config.override_runtime_producer = Some(runtime_producer);
    let producer_engine = engine.clone();
    config.override_config_producer = Some(Arc::new(move || producer_engine.session_config()));
    config.task_scheduling_policy =
        TaskMode::resolve(opts.task_mode, engine.tls.is_some())?.policy();
    if let Some(tls) = &engine.tls {
        let relayed = (
            link.local_addr().to_string(),
            link.scheduler_host().to_string(),
        );
        config.override_create_grpc_client_endpoint =
            Some(tls.endpoint_override_relayed(Some(relayed)));
        config.override_arrow_flight_service = Some(tls_flight_server(
            tls.clone(),
            config.grpc_max_encoding_message_size as usize,
            config.grpc_max_decoding_message_size as usize,
        ));
    }
    config.override_logical_codec = Some(Arc::new(TaucLogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(TaucPhysicalCodec::default()));
    let health_addr: SocketAddr = format!("{}:{}", opts.bind_host, opts.health_port)
        .parse()
        .map_err(|e| {
            Error::config(format!(
                "invalid health address '{}:{}': {e}",
                opts.bind_host, opts.health_port
            ))
        })?;
    let (stop_health, health_stopped) = tokio::sync::oneshot::channel();
    let health = tokio::spawn(serve_executor_http(
        health_addr,
        config.health.clone(),
        engine.runtime.clone(),
        health_stopped,
    ));
    tracing::info!(port = opts.port, grpc_port = opts.grpc_port, scheduler = %format!("{}:{}", opts.scheduler_host, opts.scheduler_port), "executor starting");
    let result = start_executor_process(Arc::new(config)).await;
    let _ = stop_health.send(());
    let _ = health.await;
    result.map_err(|e| Error::config(format!("executor stopped: {e}")))
}

/// The executor's health port: `/healthz`, `/readyz` (registered with the
/// scheduler) as Ballista's health server answers them, and `/metrics`
/// ([`task_metrics`]). Plain HTTP: counts and readiness, never data.
async fn serve_executor_http(
    addr: SocketAddr,
    health: ExecutorHealth,
    runtime: Arc<RuntimeEnv>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<()> {
    let ready = health.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                if ready.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: no successful heartbeat yet\n",
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                let text = task_metrics::render(health.is_ready(), &runtime);
                ([(CONTENT_TYPE, tauc_common::metrics::TEXT_FORMAT)], text)
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such path\n") });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::config(format!("cannot listen on {addr}: {e} (is it free?)")))?;
    tracing::info!(%addr, "executor health and metrics listening (/healthz, /readyz, /metrics)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.await;
        })
        .await
        .map_err(|e| Error::Server(format!("executor health server: {e}")))
}

/// The executor's Flight server (shuffle data, results) over TLS, clients
/// with a certificate the cluster's CA signed only. Ballista's own serves
/// plain TCP.
fn tls_flight_server(
    tls: Arc<ClusterTls>,
    max_encoding: usize,
    max_decoding: usize,
) -> Arc<ArrowFlightServerProvider> {
    Arc::new(move |work_dir, addr, mut shutdown, grpc| {
        let server_tls = tls.server();
        tokio::spawn(async move {
            let flight = FlightServiceServer::new(BallistaFlightService::new(work_dir))
                .max_encoding_message_size(max_encoding)
                .max_decoding_message_size(max_decoding);
            tracing::info!(%addr, "Flight server listening over TLS");
            create_grpc_server(&grpc)
                .tls_config(server_tls)
                .map_err(BallistaError::TonicError)?
                .add_service(flight)
                .serve_with_shutdown(addr, shutdown.recv())
                .await
                .map_err(BallistaError::TonicError)
        })
    })
}
