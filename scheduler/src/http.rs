//! The scheduler's one port: its gRPC service, and over HTTP the job view
//! (`GET /tauc/v1/jobs`, `GET /tauc/v1/jobs/{id}`, JSON), `/healthz`,
//! `/readyz` and `/metrics`.
//!
//! The answers carry job ids, names, states, counts and error messages —
//! no rows, no plans, no settings (which may hold credentials).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use tauc_jobs::engine::client::job_view::JOBS_PATH;
use tauc_jobs::error::{Error, Result};
use tower::Layer;

use crate::job_view::{Scheduler, jobs};

/// The job view routes plus `/healthz`, `/readyz` and `/metrics`.
pub fn routes(scheduler: Arc<Scheduler>) -> Router {
    Router::new()
        .route(JOBS_PATH, get(list))
        .route(&format!("{JOBS_PATH}/{{id}}"), get(one))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(crate::metrics::serve))
        .with_state(scheduler)
}

async fn list(State(s): State<Arc<Scheduler>>) -> Response {
    match jobs(&s).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn one(State(s): State<Arc<Scheduler>>, Path(id): Path<String>) -> Response {
    match jobs(&s).await {
        Ok(v) => match v.into_iter().find(|j| j.job_id == id) {
            Some(j) => axum::Json(j).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                format!("no job '{id}' on this scheduler (`tauc-job status` lists them)\n"),
            )
                .into_response(),
        },
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn ready(State(s): State<Arc<Scheduler>>) -> Response {
    if s.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: too few executors\n",
        )
            .into_response()
    }
}

/// Serves the scheduler's gRPC service and [`routes`] on `listener` until
/// the server fails.
pub async fn serve<L>(listener: L, scheduler: Scheduler) -> Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let config = scheduler.state.config.clone();
    let grpc = SchedulerGrpcServer::new(scheduler.clone())
        .max_encoding_message_size(config.grpc_server_max_encoding_message_size as usize)
        .max_decoding_message_size(config.grpc_server_max_decoding_message_size as usize);
    let mut builder = tonic::service::RoutesBuilder::default();
    builder.add_service(grpc);
    let app = builder
        .routes()
        .into_axum_router()
        .merge(routes(Arc::new(scheduler)))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such path\n") });
    // Ballista's executor registration reads the peer's address from
    // axum's `ConnectInfo`; `into_make_service_with_connect_info` provides it
    // for a TCP listener only, this for the TLS one too.
    let make = tower::service_fn(move |incoming: axum::serve::IncomingStream<'_, L>| {
        let peer = ConnectInfo(*incoming.remote_addr());
        let service = axum::Extension(peer).layer(app.clone());
        async move { Ok::<_, std::convert::Infallible>(service) }
    });
    axum::serve(listener, make)
        .await
        .map_err(|e| Error::Server(format!("scheduler server: {e}")))
}
