//! The executor process: a Ballista executor built on the tauc session
//! (object stores, UDFs, codecs), reaching its scheduler through a
//! backing-off link, with its health and metrics on an HTTP port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow_flight::flight_service_server::FlightServiceServer;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use ballista_core::RuntimeProducer;
use ballista_core::error::BallistaError;
use ballista_core::utils::create_grpc_server;
use ballista_executor::ArrowFlightServerProvider;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_executor::executor_server::TERMINATING;
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::health::ExecutorHealth;
use datafusion::execution::runtime_env::RuntimeEnv;
use tauc_common::metrics::TEXT_FORMAT;
use tauc_jobs::engine::Engine;
use tauc_jobs::engine::plan::codec::{TaucLogicalCodec, TaucPhysicalCodec};
use tauc_jobs::engine::runtime::task_mode::TaskMode;
use tauc_jobs::engine::runtime::tls::ClusterTls;
use tauc_jobs::error::{Error, Result};

use crate::link::SchedulerLink;
use crate::metrics;

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

/// Runs an executor until SIGTERM or Ctrl-C (Ballista drains its tasks).
pub async fn run_executor(engine: Engine, opts: ExecutorOptions) -> Result<()> {
    hold_stop_signals()?;
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
    tauc_jobs::warehouse::writer::set_worker_name(&worker);
    tauc_jobs::warehouse::writer::set_task_observer(Box::new(metrics::Counting));
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
    result.map_err(|e| Error::Engine(format!("executor stopped: {e}")))
}

/// Takes SIGTERM and SIGINT from the start. Ballista installs its own
/// handlers only once its services run — after the executor may already
/// have said it is ready — so a signal in between killed the process
/// undrained (exit by signal, no goodbye to the scheduler). A signal caught
/// here is raised again every 100 ms until Ballista's shutdown has begun
/// (`TERMINATING`), so Ballista's handler sees it however early it came.
fn hold_stop_signals() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, raw) in [
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::interrupt(), libc::SIGINT),
    ] {
        let mut caught =
            signal(kind).map_err(|e| Error::Engine(format!("cannot handle stop signals: {e}")))?;
        tokio::spawn(async move {
            if caught.recv().await.is_none() {
                return;
            }
            while !TERMINATING.load(Ordering::Acquire) {
                // SAFETY: raise() only sends `raw` to this process; our own
                // handler (above) keeps it from ending the process.
                unsafe { libc::raise(raw) };
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
    }
    Ok(())
}

/// The executor's health port: `/healthz`, `/readyz` (registered with the
/// scheduler) as Ballista's health server answers them, and `/metrics`
/// ([`metrics`]). Plain HTTP: counts and readiness, never data.
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
                let text = metrics::render(health.is_ready(), &runtime);
                ([(CONTENT_TYPE, TEXT_FORMAT)], text)
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
