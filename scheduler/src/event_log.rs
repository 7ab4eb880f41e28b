//! The scheduler's job event log (`tauc-scheduler --event-log FILE`): one
//! JSON line each time a job appears or changes state (queued, running,
//! successful, failed) or finishes a stage, appended to the file. It is
//! read from the same view as `GET /tauc/v1/jobs` — ids, names, states,
//! counts and error messages; no plans, rows or settings.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use tauc_jobs::error::{Error, Result};

use crate::job_view::{self, Scheduler};

/// One line of the log.
#[derive(Debug, Serialize)]
struct Event<'a> {
    /// Milliseconds since the epoch when the change was seen.
    at: i64,
    job_id: &'a str,
    name: &'a str,
    state: &'a str,
    stages_done: usize,
    stages: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Opens (creates, appends to) `path`; a path that cannot be written is a
/// configuration error before the scheduler starts.
pub fn open(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            Error::config(format!(
                "cannot open the event log {}: {e} (check --event-log)",
                path.display()
            ))
        })
}

/// Polls the scheduler's jobs twice a second and appends their changes to
/// `file` until the process ends.
pub async fn run(scheduler: Scheduler, mut file: std::fs::File) {
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    loop {
        if let Ok(jobs) = job_view::jobs(&scheduler).await {
            for j in &jobs {
                let now = (j.status.clone(), j.stages_done);
                if seen.get(&j.job_id) == Some(&now) {
                    continue;
                }
                let event = Event {
                    at: chrono::Utc::now().timestamp_millis(),
                    job_id: &j.job_id,
                    name: &j.name,
                    state: &j.status,
                    stages_done: j.stages_done,
                    stages: j.stages,
                    error: j.error.as_deref(),
                };
                if let Ok(line) = serde_json::to_string(&event)
                    && let Err(e) = writeln!(file, "{line}")
                {
                    tracing::warn!(error = %e, "cannot append to the event log");
                }
                seen.insert(j.job_id.clone(), now);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
