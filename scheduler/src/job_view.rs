//! The scheduler's jobs as [`JobView`]s, read from the execution graphs it
//! holds: what `GET /tauc/v1/jobs` answers ([`crate::http`]), what the
//! metrics count ([`crate::metrics`]) and the event log records
//! ([`crate::event_log`]). The view itself — the JSON `tauc-job` reads —
//! is `tauc_jobs::engine::client::job_view`.
//!
//! Ballista's gRPC job status has no progress (its proto says "TODO: add
//! progress report") and its REST API, behind a feature that adds an
//! OpenAPI generator and a history server to the build, counts stages but
//! not tasks. The execution graphs the scheduler holds have both, so the
//! scheduler answers from them: `tauc-job submit` shows stages and tasks
//! done of the job it waits for, `tauc-job status` lists them all.

use std::sync::Arc;

use ballista_core::serde::protobuf::job_status::Status;
use ballista_scheduler::scheduler_server::SchedulerServer;
use ballista_scheduler::state::execution_graph::ExecutionGraph;
use ballista_scheduler::state::execution_stage::ExecutionStage;
use ballista_scheduler::state::task_manager::JobOverview;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use tauc_jobs::engine::client::job_view::JobView;
use tauc_jobs::error::{Error, Result};

/// The scheduler tauc runs: Ballista's, on tauc's plan types.
pub type Scheduler = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

/// The view of one job of the scheduler's task manager (its task counts
/// are filled in by [`jobs`] for running jobs).
fn view_of(job: &JobOverview) -> JobView {
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
        tasks_running: 0,
        tasks_pending: 0,
        tasks_stranded: 0,
        cluster_tasks_running: 0,
        executors: 0,
        started_at: job.start_time,
        ended_at: job.end_time,
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

/// A graph's running tasks, and how many of them are bound to an executor
/// the scheduler has lost ([`gone`]).
fn running_tasks(scheduler: &Scheduler, graph: &dyn ExecutionGraph) -> (usize, usize) {
    let tasks = graph.running_tasks();
    let now = now_secs();
    let stranded = tasks
        .iter()
        .filter(|t| {
            let beat = scheduler
                .state
                .executor_manager
                .get_executor_hearbeat(&t.executor_id);
            gone(scheduler, beat.map(|b| b.timestamp), now)
        })
        .count();
    (tasks.len(), stranded)
}

/// Is an executor whose last heartbeat was at `beat` (seconds since the
/// epoch; `None`: it has none) one the scheduler has lost? Its heartbeat
/// is older than the executor timeout plus two rounds of the check that
/// removes such executors (and resets their tasks).
fn gone(scheduler: &Scheduler, beat: Option<u64>, now: u64) -> bool {
    let config = &scheduler.state.config;
    let limit = config.executor_timeout_seconds + 2 * config.expire_dead_executor_interval_seconds;
    beat.is_none_or(|t| now.saturating_sub(t) > limit)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The executors the scheduler has and has not lost.
async fn live_executors(scheduler: &Scheduler) -> Result<usize> {
    let state = scheduler
        .state
        .executor_manager
        .get_executors_state()
        .await
        .map_err(|e| Error::Server(format!("cannot list the scheduler's executors: {e}")))?;
    let now = now_secs();
    let live = state
        .iter()
        .filter(|(_, beat, _)| !gone(scheduler, beat.map(|d| d.as_secs()), now));
    Ok(live.count())
}

/// Tasks an executor asking for work would be given: those not yet bound
/// in running stages, and all of a resolved stage's (Ballista starts a
/// resolved stage when it binds its first task).
fn pending_tasks(graph: &dyn ExecutionGraph) -> usize {
    let resolved: usize = graph
        .stages()
        .values()
        .map(|stage| match stage {
            ExecutionStage::Resolved(s) => s.partitions,
            _ => 0,
        })
        .sum();
    graph.available_tasks() + resolved
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
        let mut view = view_of(&job);
        if let Some(cached) = running.get(&job.job_id) {
            let graph = cached.execution_graph.read().await;
            (view.tasks_done, view.tasks) = task_counts(graph.as_ref());
            let (running, stranded) = running_tasks(scheduler, graph.as_ref());
            (view.tasks_running, view.tasks_stranded) = (running, stranded);
            view.tasks_pending = pending_tasks(graph.as_ref());
        }
        views.push(view);
    }
    let anywhere = views.iter().map(|v| v.tasks_running).sum();
    let executors = live_executors(scheduler).await?;
    for v in &mut views {
        (v.cluster_tasks_running, v.executors) = (anywhere, executors);
    }
    views.sort_by(|a, b| (b.started_at, &b.job_id).cmp(&(a.started_at, &a.job_id)));
    Ok(views)
}
