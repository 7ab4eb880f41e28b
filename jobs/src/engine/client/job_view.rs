//! What the scheduler tells an operator about its jobs, as `tauc-job`
//! reads it: `GET /tauc/v1/jobs` and `GET /tauc/v1/jobs/{id}` (JSON),
//! served on the scheduler's gRPC port next to `/healthz` and `/readyz`
//! (the serving side is the `tauc-scheduler` crate).
//!
//! The answers carry job ids, names, states, counts and error messages —
//! no rows, no plans, no settings (which may hold credentials).

use serde::{Deserialize, Serialize};

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
    /// Tasks running now, each bound to an executor.
    #[serde(default)]
    pub tasks_running: usize,
    /// Tasks of running stages waiting for a free slot.
    #[serde(default)]
    pub tasks_pending: usize,
    /// Running tasks bound to an executor that has missed its heartbeats
    /// for the scheduler's executor timeout (or is gone): Ballista resets
    /// them when it removes the executor; while they stay, they make no
    /// progress.
    #[serde(default)]
    pub tasks_stranded: usize,
    /// Tasks running now across all the scheduler's jobs: with none, a
    /// job's waiting tasks wait for slots no one holds.
    #[serde(default)]
    pub cluster_tasks_running: usize,
    /// The executors the scheduler has and has not lost (heartbeats
    /// within its timeout), counted with the job.
    #[serde(default)]
    pub executors: usize,
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

    /// Can this running job make no progress on its own? Some of its tasks
    /// are bound to an executor the scheduler has lost; or nothing of it
    /// runs and either nothing waits for a slot (its remaining stages wait
    /// for inputs no stage is producing) or nothing runs on the whole
    /// cluster (its tasks wait for slots no one holds: the scheduler lost
    /// count of them, or has no executor). Each may be a passing moment;
    /// the caller decides how long it may last.
    pub fn stuck(&self) -> bool {
        let idle =
            self.tasks_running == 0 && (self.tasks_pending == 0 || self.cluster_tasks_running == 0);
        self.status == "running" && (self.tasks_stranded > 0 || idle)
    }
}
