//! The embedded default: a Ballista scheduler and one executor inside the
//! `tauc-job` process, so a job runs with nothing but the repo.
//!
//! They talk as the cluster's do: the scheduler pushes each task to the
//! executor the moment a slot is free, and the executor reports each task
//! the moment it ends. Ballista's own standalone mode polls instead — the
//! executor asks for work, sleeps 50 ms when there is none, and the
//! scheduler resolves the next stage only after the poll that reported the
//! last task — which made the reports job (10 queries of 2-3 stages of 16
//! tasks) wait ~12× longer in-process than on a two-executor cluster.
//!
//! Ballista's standalone executor also keeps its shuffle files in a
//! world-readable temporary directory that it never removes; this one
//! keeps them under the run's private scratch directory
//! ([`super::scratch::Scratch`]), which goes away when the run ends.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::BallistaCodec;
use ballista_core::serde::protobuf::ExecutorRegistration;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_core::serde::scheduler::{
    ExecutorOperatingSystemSpecification, ExecutorSpecification,
};
use ballista_core::utils::{GrpcServerConfig, create_grpc_server};
use ballista_core::{BALLISTA_PROTOCOL_VERSION, ConfigProducer, RuntimeProducer};
use ballista_executor::execution_engine::DefaultExecutionEngine;
use ballista_executor::executor::Executor;
use ballista_executor::executor_process::ExecutorProcessConfig;
use ballista_executor::executor_server;
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::metrics::LoggingMetricsCollector;
use ballista_executor::shutdown::ShutdownNotifier;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::metrics::default_metrics_collector;
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion::execution::SessionState;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use crate::engine::plan::codec::with_codecs;
use crate::engine::runtime::spill::MeteredEngine;
use crate::error::{Error, Result};

/// Starts the in-process scheduler and executor for `state`; returns the
/// scheduler's URL for the client session.
pub async fn start(state: &SessionState, vcores: usize, shuffle_dir: &str) -> Result<String> {
    let url = start_scheduler(state).await?;
    let scheduler = connect(&url).await?;
    start_executor(state, scheduler, vcores, shuffle_dir).await?;
    Ok(url)
}

/// Accepted connections with Nagle's algorithm off, as Ballista's own
/// servers have them: a small gRPC answer otherwise waits for the peer's
/// delayed ACK, ~40 ms a result partition fetched.
pub fn no_delay(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

fn codec(state: &SessionState) -> BallistaCodec<LogicalPlanNode, PhysicalPlanNode> {
    BallistaCodec::new(
        state.config().ballista_logical_extension_codec(),
        state.config().ballista_physical_extension_codec(),
    )
}

/// A push-scheduling scheduler on a free port of 127.0.0.1, named by that
/// address: executors send task updates to the name the tasks carry.
async fn start_scheduler(state: &SessionState) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("127.0.0.1:{}", listener.local_addr()?.port());
    let session_config = state.config().clone();
    let max_message = session_config.ballista_grpc_client_max_message_size();
    let session = state.clone();
    let config_producer: ConfigProducer = Arc::new(move || session_config.clone());
    let cluster = BallistaCluster::new_memory(
        endpoint.clone(),
        // the job's own settings (a query's `prefer_hash_join`, say) over
        // the engine's state, as a cluster scheduler builds its sessions
        Arc::new(move |config: SessionConfig| {
            let mut state = session.clone();
            *state.config_mut() = with_codecs(config);
            Ok(state)
        }),
        config_producer,
    );
    let config = SchedulerConfig::default().with_scheduler_policy(TaskSchedulingPolicy::PushStaged);
    let fail = |e: ballista_core::error::BallistaError| {
        Error::Engine(format!("cannot start the in-process scheduler: {e}"))
    };
    let mut server: SchedulerServer<LogicalPlanNode, PhysicalPlanNode> = SchedulerServer::new(
        endpoint.clone(),
        cluster,
        codec(state),
        Arc::new(config),
        default_metrics_collector().map_err(fail)?,
    );
    server.init().await.map_err(fail)?;
    let service = SchedulerGrpcServer::new(server)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    tokio::spawn(
        create_grpc_server(&GrpcServerConfig::default())
            .add_service(service)
            .serve_with_incoming(no_delay(listener)),
    );
    Ok(format!("http://{endpoint}"))
}

async fn connect(url: &str) -> Result<SchedulerGrpcClient<tonic::transport::Channel>> {
    for _ in 0..100 {
        if let Ok(c) = SchedulerGrpcClient::connect(url.to_string()).await {
            return Ok(c);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(Error::Engine(format!(
        "the in-process scheduler at {url} did not answer within 5 s"
    )))
}

async fn start_executor(
    state: &SessionState,
    scheduler: SchedulerGrpcClient<tonic::transport::Channel>,
    vcores: usize,
    shuffle_dir: &str,
) -> Result<()> {
    let config = state.config().clone().upgrade_for_ballista();
    let max_message = config.ballista_grpc_client_max_message_size();
    let runtime = state.runtime_env().clone();
    let config_producer: ConfigProducer = Arc::new(move || config.clone());
    let runtime_producer: RuntimeProducer = Arc::new(move |_| Ok(runtime.clone()));
    let flight = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = flight.local_addr()?.port();
    let service = FlightServiceServer::new(BallistaFlightService::new(shuffle_dir.to_string()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    tokio::spawn(
        create_grpc_server(&GrpcServerConfig::default())
            .add_service(service)
            .serve_with_incoming(no_delay(flight)),
    );
    // The task server binds its own port (Ballista's `startup` takes a port
    // number, not a listener): pick a free one, and pick again if another
    // process took it in between.
    let mut last = None;
    for _ in 0..5 {
        let grpc_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let metadata = ExecutorRegistration {
            id: ballista_core::ids::new_instance_id(),
            host: Some("127.0.0.1".to_string()),
            port: port as u32,
            grpc_port: grpc_port as u32,
            specification: Some(
                ExecutorSpecification::default()
                    .with_vcores(vcores as u32)
                    .into(),
            ),
            os_info: Some(ExecutorOperatingSystemSpecification::default().into()),
            ballista_protocol_version: BALLISTA_PROTOCOL_VERSION,
        };
        let executor = Arc::new(Executor::new(
            metadata,
            shuffle_dir,
            runtime_producer.clone(),
            config_producer.clone(),
            Arc::new(state.into()),
            Arc::new(LoggingMetricsCollector::default()),
            vcores,
            Arc::new(MeteredEngine::new(Arc::new(DefaultExecutionEngine::new()))),
        ));
        let process = Arc::new(ExecutorProcessConfig {
            bind_host: "127.0.0.1".into(),
            grpc_port,
            vcores,
            task_scheduling_policy: TaskSchedulingPolicy::PushStaged,
            work_dir: Some(shuffle_dir.to_string()),
            grpc_max_decoding_message_size: max_message as u32,
            grpc_max_encoding_message_size: max_message as u32,
            print_thread_info: false,
            ..Default::default()
        });
        // Lives as long as the process: the executor's loops stop when it
        // is dropped.
        let shutdown: &'static ShutdownNotifier = Box::leak(Box::new(ShutdownNotifier::new()));
        let (stop, _) = tokio::sync::mpsc::channel(1);
        match executor_server::startup(
            scheduler.clone(),
            process,
            executor,
            codec(state),
            stop,
            shutdown,
            ballista_executor::health::ExecutorHealth::new(),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Engine(format!(
        "cannot start the in-process executor: {}",
        last.map_or_else(String::new, |e| e.to_string())
    )))
}
