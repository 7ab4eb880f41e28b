//! The scheduler's Prometheus metrics, `GET /metrics` on its gRPC port
//! (text exposition format): jobs by state, the executors registered and
//! each one's peak memory (from its heartbeats), and the tasks of the
//! running jobs, read from the scheduler's own state at each scrape. Like the job view they carry counts only — no job names, plans
//! or settings.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use ballista_core::serde::protobuf::{ExecutorMetric, executor_metric};

use tauc_common::metrics::TEXT_FORMAT;
use tauc_jobs::engine::client::job_view::JobView;

use crate::job_view::{self, Scheduler};

/// The `state` label of the job gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobState {
    state: &'static str,
}

/// The states a job is counted in (all four are always exported, zeros
/// included, so a dashboard's series exist from the start).
const STATES: [&str; 4] = ["queued", "running", "successful", "failed"];

/// The `executor` label of the per-executor gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExecutorId {
    executor: String,
}

/// Renders the metrics of `jobs` and of the registered executors, given
/// as `(id, peak physical memory in bytes from its last heartbeat)`.
pub fn render(jobs: &[JobView], executors: &[(String, u64)]) -> String {
    let mut registry = Registry::with_prefix("tauc_scheduler");
    let by_state = Family::<JobState, Gauge>::default();
    for state in STATES {
        let n = jobs.iter().filter(|j| j.status == state).count();
        by_state.get_or_create(&JobState { state }).set(n as i64);
    }
    registry.register("jobs", "Jobs the scheduler holds, by state", by_state);
    let gauge = |registry: &mut Registry, name: &str, help: &str, v: usize| {
        let g = Gauge::<i64>::default();
        g.set(v as i64);
        registry.register(name, help, g);
    };
    gauge(
        &mut registry,
        "executors",
        "Executors registered (a lost one is removed)",
        executors.len(),
    );
    let peaks = Family::<ExecutorId, Gauge>::default();
    for (id, peak) in executors {
        let label = ExecutorId {
            executor: id.clone(),
        };
        peaks.get_or_create(&label).set(*peak as i64);
    }
    registry.register(
        "executor_peak_memory_bytes",
        "Peak physical memory of each executor process, from its last heartbeat",
        peaks,
    );
    let running = jobs.iter().filter(|j| j.status == "running");
    let (done, all) = running.fold((0, 0), |(d, a), j| (d + j.tasks_done, a + j.tasks));
    gauge(
        &mut registry,
        "running_tasks_done",
        "Tasks finished in the running jobs' stages",
        done,
    );
    gauge(
        &mut registry,
        "running_tasks",
        "Tasks in the running jobs' stages",
        all,
    );
    let mut out = String::new();
    // writing to a String cannot fail
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Ballista's own scheduler metrics (its `prometheus-metrics` feature): job
/// execution and planning times, jobs submitted, completed, failed and
/// cancelled, the pending task queue, and the process's CPU, memory and
/// file descriptors. Empty, with a warning, if they cannot be gathered.
fn ballista_metrics() -> String {
    let gathered =
        ballista_scheduler::metrics::default_metrics_collector().and_then(|c| c.gather_metrics());
    match gathered {
        Ok(Some((text, _))) => String::from_utf8_lossy(&text).into_owned(),
        Ok(None) => String::new(),
        Err(e) => {
            tracing::warn!("Ballista's scheduler metrics: {e}");
            String::new()
        }
    }
}

/// `GET /metrics`.
pub async fn serve(State(s): State<Arc<Scheduler>>) -> Response {
    let executors = match s.state.executor_manager.get_executors_state().await {
        Ok(state) => state
            .into_iter()
            .map(|(meta, _, metrics)| (meta.id, peak_memory(&metrics)))
            .collect::<Vec<_>>(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    match job_view::jobs(&s).await {
        Ok(jobs) => (
            [(header::CONTENT_TYPE, TEXT_FORMAT)],
            render(&jobs, &executors)
                .trim_end_matches("# EOF\n")
                .to_string()
                + &ballista_metrics(),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The peak physical memory among an executor's heartbeat metrics (0
/// before its first heartbeat).
fn peak_memory(metrics: &[ExecutorMetric]) -> u64 {
    metrics
        .iter()
        .find_map(|m| match m.metric {
            Some(executor_metric::Metric::PeakPhysicalMemory(b)) => Some(b),
            _ => None,
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: &str, done: usize, tasks: usize) -> JobView {
        JobView {
            job_id: "j".into(),
            name: "n".into(),
            status: status.into(),
            error: None,
            stages_done: 0,
            stages: 1,
            tasks_done: done,
            tasks,
            tasks_running: 0,
            tasks_pending: 0,
            tasks_stranded: 0,
            cluster_tasks_running: 0,
            executors: 0,
            started_at: 0,
            ended_at: 0,
        }
    }

    #[test]
    fn counts_jobs_by_state_and_running_tasks() {
        let jobs = [
            job("successful", 0, 0),
            job("successful", 0, 0),
            job("running", 3, 8),
            job("running", 1, 2),
        ];
        let executors = [("e1".to_string(), 5), ("e2".to_string(), 7)];
        let text = render(&jobs, &executors);
        for line in [
            "tauc_scheduler_jobs{state=\"successful\"} 2",
            "tauc_scheduler_jobs{state=\"running\"} 2",
            "tauc_scheduler_jobs{state=\"failed\"} 0",
            "tauc_scheduler_executors 2",
            "tauc_scheduler_executor_peak_memory_bytes{executor=\"e2\"} 7",
            "tauc_scheduler_running_tasks_done 4",
            "tauc_scheduler_running_tasks 10",
        ] {
            assert!(text.lines().any(|l| l == line), "no '{line}' in:\n{text}");
        }
    }
}
