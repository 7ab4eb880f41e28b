//! What the scheduler tells an operator about its jobs: `GET /tauc/v1/jobs`
//! and `GET /tauc/v1/jobs/{id}` (JSON), served on the scheduler's gRPC
//! port next to `/healthz` and `/readyz`.
//!
//! Ballista's gRPC job status has no progress (its proto says "TODO: add
//! progress report") and its REST API, behind a feature that adds an
//! OpenAPI generator and a history server to the build, counts stages but
//! not tasks. The execution graphs the scheduler holds have both, so the
//! scheduler answers from them: `tauc-job submit` shows stages and tasks
//! done of the job it waits for, `tauc-job status` lists them all.
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
use ballista_core::serde::protobuf::job_status::Status;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_scheduler::scheduler_server::SchedulerServer;
use ballista_scheduler::state::execution_graph::ExecutionGraph;
use ballista_scheduler::state::execution_stage::ExecutionStage;
use ballista_scheduler::state::task_manager::JobOverview;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use serde::{Deserialize, Serialize};
use tower::Layer;

use crate::error::{Error, Result};

/// The scheduler tauc runs: Ballista's, on tauc's plan types.
pub type Scheduler = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

/// The path of the job list.
pub const JOBS_PATH: &str = "/tauc/v1/jobs";

/// One job as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    /// Ballista's job id.
    pub job_id: String,
    /// The job name the client gave (`tauc layering ods …`).
    pub name: String,
    /// `queued`, `running`, `successful` or `failed` (a cancelled job is
    /// failed, its error says so).
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Stages finished.
    pub stages_done: usize,
    /// Stages in the plan.
    pub stages: usize,
    /// Tasks finished, over the stages the scheduler still holds in memory
    /// (a finished job's graph is summarised: then `tasks` is 0).
    pub tasks_done: usize,
    /// Tasks of those stages.
    pub tasks: usize,
    /// Start, milliseconds since the epoch (0 while queued).
    pub started_at: u64,
    /// End, milliseconds since the epoch (0 while it runs).
    pub ended_at: u64,
}

impl JobView {
    /// Whether the job has ended.
    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "successful" | "failed")
    }

    fn of(job: &JobOverview) -> JobView {
        let (status, error) = match &job.status.status {
            Some(Status::Queued(_)) | None => ("queued", None),
            Some(Status::Running(_)) => ("running", None),
            Some(Status::Successful(_)) => ("successful", None),
            Some(Status::Failed(f)) => ("failed", Some(f.error.clone())),
        };
        JobView {
            job_id: job.job_id.to_string(),
            name: job.job_name.clone(),
            status: status.into(),
            error,
            stages_done: job.completed_stages,
            stages: job.num_stages,
            tasks_done: 0,
            tasks: 0,
            started_at: job.start_time,
            ended_at: job.end_time,
        }
    }
}

/// Tasks done and in all of a graph's stages; a stage has one task per
/// input partition.
fn task_counts(graph: &dyn ExecutionGraph) -> (usize, usize) {
    graph
        .stages()
        .values()
        .map(|stage| match stage {
            ExecutionStage::UnResolved(s) => (0, input_partitions(&s.plan)),
            ExecutionStage::Resolved(s) => (0, s.partitions),
            ExecutionStage::Running(s) => (s.successful_tasks().min(s.partitions), s.partitions),
            ExecutionStage::Successful(s) => (s.partitions, s.partitions),
            ExecutionStage::Failed(s) => (0, s.partitions),
        })
        .fold((0, 0), |(d, t), (sd, st)| (d + sd, t + st))
}

/// Tasks of a stage not yet resolved: the partitions its shuffle writer
/// reads.
fn input_partitions(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> usize {
    let input = plan.children().first().map(|c| (*c).clone());
    input
        .unwrap_or_else(|| plan.clone())
        .properties()
        .output_partitioning()
        .partition_count()
}

/// Every job the scheduler knows, newest first.
pub async fn jobs(scheduler: &Scheduler) -> Result<Vec<JobView>> {
    let tm = &scheduler.state.task_manager;
    let running = tm.get_running_job_cache();
    let mut views = Vec::new();
    for job in tm
        .get_all_jobs()
        .await
        .map_err(|e| Error::Server(format!("cannot list the scheduler's jobs: {e}")))?
    {
        let mut view = JobView::of(&job);
        if let Some(cached) = running.get(&job.job_id) {
            let graph = cached.execution_graph.read().await;
            (view.tasks_done, view.tasks) = task_counts(graph.as_ref());
        }
        views.push(view);
    }
    views.sort_by(|a, b| (b.started_at, &b.job_id).cmp(&(a.started_at, &a.job_id)));
    Ok(views)
}

/// The job view routes plus `/healthz`, `/readyz` and `/metrics`.
pub fn routes(scheduler: Arc<Scheduler>) -> Router {
    Router::new()
        .route(JOBS_PATH, get(list))
        .route(&format!("{JOBS_PATH}/{{id}}"), get(one))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(crate::engine::scheduler_metrics::serve))
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
