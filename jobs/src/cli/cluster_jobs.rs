//! `tauc-job status [JOB_ID]` and `tauc-job cancel JOB_ID`: what a running
//! scheduler holds, and stopping one of its jobs.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::cli::Globals;
use crate::config::Section;
use crate::engine::client::job_view::JobView;
use crate::engine::client::remote::SchedulerClient;
use crate::error::{Error, Result};

/// `status` flags.
#[derive(Debug, Clone, Args, Serialize)]
pub struct StatusCmd {
    /// One job's id (as `submit` logs it) [default: every job the
    /// scheduler knows, newest first].
    #[serde(skip)]
    pub job_id: Option<String>,
    /// The scheduler, df://host:port.
    #[arg(long, env = "TAUC_SCHEDULER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
}

/// `cancel` flags.
#[derive(Debug, Clone, Args, Serialize)]
pub struct CancelCmd {
    /// The job to cancel.
    #[serde(skip)]
    pub job_id: String,
    /// The scheduler, df://host:port.
    #[arg(long, env = "TAUC_SCHEDULER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
}

/// The one setting of `status` and `cancel` besides the cluster's TLS.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct SchedulerSetting {
    scheduler: Option<String>,
}

/// The scheduler of the flag, variable or config file; these commands
/// have no in-process default (an in-process job lives and ends in its
/// run).
async fn client(g: &Globals, flags: &impl Serialize) -> Result<SchedulerClient> {
    let layers = g.layers(Section::Jobs)?;
    let tls = g.cluster_tls(&layers)?;
    let setting: SchedulerSetting = layers.extract(flags)?;
    let url = setting.scheduler.ok_or_else(|| {
        Error::config(
            "no scheduler given: pass --scheduler df://host:port (or set TAUC_SCHEDULER, or \
             `scheduler` in tauc.toml); in-process jobs end with their run",
        )
    })?;
    SchedulerClient::connect(&url, tls.as_ref()).await
}

/// `status`: one line per job.
pub async fn status(g: &Globals, c: &StatusCmd) -> Result<String> {
    let client = client(g, c).await?;
    let jobs = match &c.job_id {
        None => client.jobs().await?,
        Some(id) => vec![known(&client, id).await?],
    };
    if jobs.is_empty() {
        return Ok(format!("no jobs on the scheduler at {}\n", client.url()));
    }
    let mut out = String::new();
    for j in &jobs {
        let _ = writeln!(out, "{}", line(j));
    }
    Ok(out)
}

/// `cancel`: asks the scheduler to stop a job that still runs.
pub async fn cancel(g: &Globals, c: &CancelCmd) -> Result<String> {
    let client = client(g, c).await?;
    let job = known(&client, &c.job_id).await?;
    if job.finished() {
        return Err(Error::config(format!(
            "job {} ({}) has already ended ({}): nothing to cancel",
            job.job_id, job.name, job.status
        )));
    }
    client.cancel(&job.job_id).await?;
    Ok(format!(
        "cancelled job {} ({}); its run commits nothing of it\n",
        job.job_id, job.name
    ))
}

async fn known(client: &SchedulerClient, id: &str) -> Result<JobView> {
    client.job(id).await?.ok_or_else(|| {
        Error::config(format!(
            "no job '{id}' on the scheduler at {} (`tauc-job status` lists them)",
            client.url()
        ))
    })
}

fn line(j: &JobView) -> String {
    let started = DateTime::<Utc>::from_timestamp_millis(j.started_at as i64)
        .filter(|_| j.started_at > 0)
        .map_or_else(
            || "-".to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
    let tasks = if j.tasks > 0 {
        format!(", tasks {}/{}", j.tasks_done, j.tasks)
    } else {
        String::new()
    };
    let error = j
        .error
        .as_deref()
        .map_or_else(String::new, |e| format!(": {e}"));
    format!(
        "{}  {:<10}  {}  started {}  stages {}/{}{tasks}{error}",
        j.job_id, j.status, j.name, started, j.stages_done, j.stages
    )
}
