//! The embedded default: a Ballista scheduler and one executor inside the
//! `tauc-job` process, so a job runs with nothing but the repo.
//!
//! Ballista's own standalone executor keeps its shuffle files in a
//! world-readable temporary directory that it never removes; this one
//! keeps them under the run's private scratch directory
//! ([`super::scratch::Scratch`]), which goes away when the run ends.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::BallistaCodec;
use ballista_core::serde::protobuf::ExecutorRegistration;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::scheduler::{
    ExecutorOperatingSystemSpecification, ExecutorSpecification,
};
use ballista_core::utils::{GrpcServerConfig, create_grpc_server};
use ballista_core::{BALLISTA_PROTOCOL_VERSION, ConfigProducer, RuntimeProducer};
use ballista_executor::execution_loop;
use ballista_executor::executor::Executor;
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::metrics::LoggingMetricsCollector;
use datafusion::execution::SessionState;

use crate::error::{Error, Result};

/// Starts the in-process scheduler and executor for `state`; returns the
/// scheduler's URL for the client session.
pub async fn start(state: &SessionState, vcores: usize, shuffle_dir: &str) -> Result<String> {
    let addr = ballista_scheduler::standalone::new_standalone_scheduler_from_state(state)
        .await
        .map_err(|e| Error::config(format!("cannot start the in-process scheduler: {e}")))?;
    let url = format!("http://127.0.0.1:{}", addr.port());
    let scheduler = connect(&url).await?;
    start_executor(state, scheduler, vcores, shuffle_dir).await?;
    Ok(url)
}

async fn connect(url: &str) -> Result<SchedulerGrpcClient<tonic::transport::Channel>> {
    for _ in 0..100 {
        if let Ok(c) = SchedulerGrpcClient::connect(url.to_string()).await {
            return Ok(c);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(Error::config(format!(
        "the in-process scheduler at {url} did not answer within 5 s"
    )))
}

async fn start_executor(
    state: &SessionState,
    scheduler: SchedulerGrpcClient<tonic::transport::Channel>,
    vcores: usize,
    shuffle_dir: &str,
) -> Result<()> {
    let codec: BallistaCodec<
        datafusion_proto::protobuf::LogicalPlanNode,
        datafusion_proto::protobuf::PhysicalPlanNode,
    > = BallistaCodec::new(
        state.config().ballista_logical_extension_codec(),
        state.config().ballista_physical_extension_codec(),
    );
    let config = state.config().clone().upgrade_for_ballista();
    let max_message = config.ballista_grpc_client_max_message_size();
    let runtime = state.runtime_env().clone();
    let config_producer: ConfigProducer = Arc::new(move || config.clone());
    let runtime_producer: RuntimeProducer = Arc::new(move |_| Ok(runtime.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let metadata = ExecutorRegistration {
        id: ballista_core::ids::new_instance_id(),
        host: Some("127.0.0.1".to_string()),
        port: port as u32,
        grpc_port: 0,
        specification: Some(
            ExecutorSpecification::default()
                .with_vcores(vcores as u32)
                .into(),
        ),
        os_info: Some(ExecutorOperatingSystemSpecification::default().into()),
        ballista_protocol_version: BALLISTA_PROTOCOL_VERSION,
    };
    let executor = Arc::new(Executor::with_default_execution_engine(
        metadata,
        shuffle_dir,
        runtime_producer,
        config_producer,
        Arc::new(state.into()),
        Arc::new(LoggingMetricsCollector::default()),
        vcores,
    ));
    let flight = FlightServiceServer::new(BallistaFlightService::new(shuffle_dir.to_string()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    tokio::spawn(
        create_grpc_server(&GrpcServerConfig::default())
            .add_service(flight)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    tokio::spawn(execution_loop::poll_loop(
        scheduler,
        executor,
        codec,
        None,
        None,
        ballista_executor::health::ExecutorHealth::new(),
    ));
    Ok(())
}
