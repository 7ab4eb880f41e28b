//! `tauc-job status [JOB_ID]` and `tauc-job cancel JOB_ID`: what a running
//! scheduler holds, and stopping one of its jobs.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use clap::Args;

use crate::cli::Globals;
use crate::config;
use crate::engine::client::job_view::JobView;
use crate::engine::client::remote::SchedulerClient;
use crate::error::{Error, Result};

/// `status` flags.
#[derive(Debug, Clone, Args)]
pub struct StatusCmd {
    /// One job's id (as `submit` logs it) [default: every job the
    /// scheduler knows, newest first].
    pub job_id: Option<String>,
    /// The scheduler, df://host:port.
    #[arg(long, env = "TAUC_SCHEDULER")]
    pub scheduler: Option<String>,
}

/// `cancel` flags.
#[derive(Debug, Clone, Args)]
pub struct CancelCmd {
    /// The job to cancel.
    pub job_id: String,
    /// The scheduler, df://host:port.
    #[arg(long, env = "TAUC_SCHEDULER")]
    pub scheduler: Option<String>,
}

/// The scheduler of the flag, else of the config file; these commands have
/// no in-process default (an in-process job lives and ends in its run).
async fn client(g: &Globals, flag: Option<&str>) -> Result<SchedulerClient> {
    config::check_env()?;
    let file = g.file()?;
    let tls = g.cluster_tls(&file)?;
    let url = flag.map(str::to_string).or(file.scheduler).ok_or_else(|| {
        Error::config(
            "no scheduler given: pass --scheduler df://host:port (or set TAUC_SCHEDULER, or \
             `scheduler` in tauc.toml); in-process jobs end with their run",
        )
    })?;
    SchedulerClient::connect(&url, tls.as_ref()).await
}

/// `status`: one line per job.
pub async fn status(g: &Globals, c: &StatusCmd) -> Result<String> {
    let client = client(g, c.scheduler.as_deref()).await?;
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
    let client = client(g, c.scheduler.as_deref()).await?;
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
