//! `tauc-scheduler`: the Ballista scheduler with tauc's session (object
//! stores, UDFs, plan codecs). Serves gRPC and `/healthz` on one port.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tauc_jobs::cli::ClusterTlsArgs;
use tauc_jobs::engine::Engine;
use tauc_jobs::engine::runtime::task_mode::TaskMode;
use tauc_jobs::engine::runtime::tls::ClusterTls;
use tauc_jobs::store::S3Options;
use tauc_scheduler::{SchedulerOptions, TaskSpread, run_scheduler};

/// Runs the tauc scheduler. S3 settings come from `TAUC_S3_*` and the
/// usual `AWS_*` variables or the instance role.
#[derive(Debug, Parser)]
#[command(name = "tauc-scheduler", version)]
struct Args {
    /// Address to listen on: this host only by default; on a cluster the
    /// master's private address (executors and clients connect to it).
    #[arg(long, env = "TAUC_BIND", default_value = "127.0.0.1:50050")]
    bind: SocketAddr,
    /// Host name executors and clients use to reach this scheduler.
    #[arg(long, default_value = "localhost")]
    external_host: String,
    /// Seconds without a heartbeat after which an executor is taken for
    /// dead and its tasks (and lost shuffle outputs) are run elsewhere.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(4..))]
    executor_timeout_secs: u64,
    /// How a stage's tasks are spread over executors with free slots:
    /// `round-robin` (one task per executor in turn) or Ballista's `bias`
    /// (fill one executor first).
    #[arg(long, env = "TAUC_TASK_SPREAD", value_enum, default_value_t = TaskSpread::RoundRobin)]
    task_spread: TaskSpread,
    /// How executors get their tasks: `pull` (the default: they ask when a
    /// slot is free) or `push` (the scheduler sends them; no TLS). The same
    /// on the scheduler and every executor; see docs/configuration.md for
    /// what each does after an executor is lost.
    #[arg(long, env = "TAUC_TASK_MODE", value_enum)]
    task_mode: Option<TaskMode>,
    /// Append the job event log here: one JSON line per job state or
    /// stage change.
    #[arg(long, env = "TAUC_EVENT_LOG")]
    event_log: Option<std::path::PathBuf>,
    /// TLS between the cluster's processes (all three files, or none).
    #[command(flatten)]
    cluster_tls: ClusterTlsArgs,
    /// Log lines as JSON.
    #[arg(long, env = "TAUC_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tauc_common::logging::init(args.log_format.as_deref() == Some("json"));
    let run = async {
        tauc_jobs::config::check_env()?;
        let tls = ClusterTls::from_files(&args.cluster_tls.files())?;
        let engine = Engine::new(S3Options::default().with_env()?)?.with_tls(tls);
        run_scheduler(
            engine,
            SchedulerOptions {
                bind: args.bind,
                external_host: args.external_host,
                executor_timeout_secs: args.executor_timeout_secs,
                task_spread: args.task_spread,
                event_log: args.event_log,
                task_mode: args.task_mode,
            },
        )
        .await
    };
    tauc_common::process::exit_with("tauc-scheduler", async {
        run.await?;
        Ok::<_, tauc_jobs::Error>(String::new())
    })
}
