//! `tauc-executor`: a Ballista executor with tauc's session (object stores,
//! UDFs, plan codecs); drains its tasks on SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tauc_common::config::parse_size;
use tauc_executor::{ExecutorOptions, run_executor};
use tauc_jobs::cli::ClusterTlsArgs;
use tauc_jobs::engine::Engine;
use tauc_jobs::engine::runtime::scratch::Resources;
use tauc_jobs::engine::runtime::task_mode::TaskMode;
use tauc_jobs::engine::runtime::tls::ClusterTls;
use tauc_jobs::store::S3Options;

/// Runs a tauc executor. S3 settings come from `TAUC_S3_*` and the usual
/// `AWS_*` variables or the instance role — never from the plans.
#[derive(Debug, Parser)]
#[command(name = "tauc-executor", version)]
struct Args {
    /// Scheduler host.
    #[arg(long, default_value = "localhost")]
    scheduler_host: String,
    /// Scheduler port.
    #[arg(long, env = "TAUC_SCHEDULER_PORT", default_value_t = 50050)]
    scheduler_port: u16,
    /// Address its Flight, gRPC and health ports listen on: this host only
    /// by default; on a cluster the worker's private address (the
    /// scheduler and the other executors fetch shuffle data from it).
    #[arg(long, env = "TAUC_BIND_HOST", default_value = "127.0.0.1")]
    bind_host: String,
    /// Host name others use to reach this executor.
    #[arg(long)]
    external_host: Option<String>,
    /// Flight (shuffle data) port.
    #[arg(long, default_value_t = 50051)]
    port: u16,
    /// gRPC port for task pushes.
    #[arg(long, default_value_t = 50052)]
    grpc_port: u16,
    /// HTTP health port (/healthz, /readyz).
    #[arg(long, default_value_t = 50053)]
    health_port: u16,
    /// Task slots (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    vcores: usize,
    /// Parent of the executor's private scratch directory (shuffle and
    /// spill files, mode 0700, removed at exit) [default: the system
    /// temporary directory].
    #[arg(long, env = "TAUC_WORK_DIR")]
    work_dir: Option<std::path::PathBuf>,
    /// Memory the executor's tasks may hold before they spill (4GiB, 512MiB),
    /// shared by its task slots [default: Ballista's share of the host's
    /// memory].
    #[arg(long, env = "TAUC_MEMORY_LIMIT", value_parser = parse_size)]
    memory_limit: Option<usize>,
    /// Seconds between heartbeats to the scheduler (keep it well below the
    /// scheduler's --executor-timeout-secs).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_secs: u64,
    /// TLS between the cluster's processes (all three files, or none).
    #[command(flatten)]
    cluster_tls: ClusterTlsArgs,
    /// How executors get their tasks: `pull` (the default: they ask when a
    /// slot is free) or `push` (the scheduler sends them; no TLS). The same
    /// on the scheduler and every executor; see docs/configuration.md for
    /// what each does after an executor is lost.
    #[arg(long, env = "TAUC_TASK_MODE", value_enum)]
    task_mode: Option<TaskMode>,
    /// Log lines as JSON.
    #[arg(long, env = "TAUC_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    tauc_common::logging::init(a.log_format.as_deref() == Some("json"));
    let run = async {
        tauc_jobs::config::check_env()?;
        let resources = Resources {
            memory_limit: a.memory_limit,
            work_dir: a.work_dir,
        };
        let tls = ClusterTls::from_files(&a.cluster_tls.files())?;
        let engine =
            Engine::with_resources(S3Options::default().with_env()?, &resources)?.with_tls(tls);
        let opts = ExecutorOptions {
            bind_host: a.bind_host,
            external_host: a.external_host,
            port: a.port,
            grpc_port: a.grpc_port,
            health_port: a.health_port,
            scheduler_host: a.scheduler_host,
            scheduler_port: a.scheduler_port,
            vcores: a.vcores,
            memory_limit: a.memory_limit,
            heartbeat_secs: a.heartbeat_secs,
            task_mode: a.task_mode,
        };
        run_executor(engine, opts).await
    };
    tauc_common::process::exit_with("tauc-executor", async {
        run.await?;
        Ok::<_, tauc_jobs::Error>(String::new())
    })
}
