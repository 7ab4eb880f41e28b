//! The `tauc-job` command line: flags, their `TAUC_*` variables, and the
//! dispatch to commands; the jobs `submit` runs come from the registry
//! ([`crate::jobs::registry`]). The binary only parses, sets up logging
//! and calls [`run`].

use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::{self, ClusterSettings, Layers, Section};
use crate::engine::runtime::tls::{ClusterTls, TlsFiles};
use crate::error::Result;
use crate::jobs::job::preflight;

pub mod cluster_jobs;
pub mod data;
pub mod flags;
pub mod follow;
pub mod report;
mod resolve;
pub mod serve;
pub mod sql;
pub mod submit;

use data::{SampleCmd, SweepCmd, TablesCmd};
pub use flags::{EngineArgs, StoreArgs};
use resolve::{connect, resolve};
use sql::SqlCmd;
pub use submit::{SubmitArgs, list_jobs};

/// `--scheduler`'s line for `sql` (the group's says "the job").
const IN_PROCESS_QUERY: &str =
    "Ballista scheduler, df://host:port; without it the query runs in-process";
/// `--scheduler`'s line for `report`.
const IN_PROCESS_QUERIES: &str =
    "Ballista scheduler, df://host:port; without it the queries run in-process";
/// `--scheduler`'s line for `serve`.
const IN_PROCESS_SERVE: &str =
    "Ballista scheduler, df://host:port; without it queries run in-process";

/// Runs tauc jobs — the layering of front-end tracking events into ODS and
/// DWD tables, and the ADS reports — and SQL over the committed warehouse,
/// in-process or on a Ballista cluster.
#[derive(Debug, Parser)]
#[command(name = "tauc-job", version)]
pub struct Cli {
    /// Config file (TOML); default `tauc.toml` in the working directory
    /// when it exists.
    #[arg(long, global = true, env = "TAUC_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log lines as JSON objects instead of text.
    #[arg(long, global = true, env = "TAUC_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,

    /// TLS between tauc-job and the cluster (all three, or none).
    #[command(flatten)]
    pub cluster_tls: ClusterTlsArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--cluster-ca`, `--cluster-cert`, `--cluster-key`: the same three files
/// (and variables) for `tauc-job`, `tauc-scheduler` and `tauc-executor`.
/// Serialized (unset ones left out), the flag layer of [`ClusterSettings`].
#[derive(Debug, Clone, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClusterTlsArgs {
    /// CA certificate (PEM) that signed the cluster's certificates: with
    /// --cluster-cert and --cluster-key, every connection to the scheduler
    /// and executors is mutual TLS.
    #[arg(long, global = true, env = "TAUC_CLUSTER_CA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_ca: Option<PathBuf>,
    /// This process's certificate (PEM), signed by that CA.
    #[arg(long, global = true, env = "TAUC_CLUSTER_CERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_cert: Option<PathBuf>,
    /// This process's private key (PEM).
    #[arg(long, global = true, env = "TAUC_CLUSTER_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_key: Option<PathBuf>,
}

impl ClusterTlsArgs {
    /// The files of the flags (or variables).
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            ca: self.cluster_ca.clone(),
            cert: self.cluster_cert.clone(),
            key: self.cluster_key.clone(),
        }
    }
}

/// What every command takes: the config file and the cluster's TLS flags.
#[derive(Debug, Clone)]
pub struct Globals {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--cluster-*`.
    pub cluster: ClusterTlsArgs,
}

impl Globals {
    /// The command's one settings loader: the `TAUC_*` variables checked
    /// and the config file loaded ([`Layers::load`]).
    pub fn layers(&self, section: Section) -> Result<Layers> {
        Ok(Layers::load(self.config.as_deref(), section)?)
    }

    /// The cluster TLS of flags > variables > the `[cluster]` section.
    pub fn cluster_tls(&self, layers: &Layers) -> Result<Option<Arc<ClusterTls>>> {
        let files: ClusterSettings = layers.extract(&self.cluster)?;
        ClusterTls::from_files(&files.into())
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job for a date (or a range of dates).
    Submit(SubmitArgs),
    /// Keep the warehouse minutes behind the browser: an incremental daily
    /// run of yesterday and today (UTC) every --every, until SIGTERM.
    Follow(follow::FollowCmd),
    /// Write realistic sample raw data (with every dirty case) and DIM files.
    Sample(SampleCmd),
    /// List the registered jobs.
    Jobs,
    /// Run SQL over the committed warehouse tables (ods_*, dwd_*, ads_*, dim_*).
    #[command(mut_arg("scheduler", |a| a.help(IN_PROCESS_QUERY)))]
    Sql(SqlCmd),
    /// List the warehouse tables with their committed partitions and rows.
    Tables(TablesCmd),
    /// Delete the data files re-runs replaced, once their keep time is over.
    Sweep(SweepCmd),
    /// Write one self-contained HTML page of a date's committed ADS tables.
    #[command(mut_arg("scheduler", |a| a.help(IN_PROCESS_QUERIES)))]
    Report(report::ReportCmd),
    /// Serve the committed warehouse over Arrow Flight SQL (for Superset),
    /// read-only, to the users of a users file.
    #[command(mut_arg("scheduler", |a| a.help(IN_PROCESS_SERVE)))]
    Serve(serve::ServeCmd),
    /// Edit the users file of `serve`.
    #[command(subcommand)]
    Users(serve::UsersCmd),
    /// Show the jobs of a running scheduler (stages and tasks done).
    Status(cluster_jobs::StatusCmd),
    /// Cancel a job running on a scheduler.
    Cancel(cluster_jobs::CancelCmd),
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> std::result::Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
        .ok_or_else(|| format!("invalid date '{s}' (expected YYYY-MM-DD)"))
}

/// Runs a parsed command line; returns what to print on stdout.
pub async fn run(cli: Cli) -> Result<String> {
    let g = Globals {
        config: cli.config.clone(),
        cluster: cli.cluster_tls.clone(),
    };
    let g = &g;
    match cli.command {
        Command::Jobs => Ok(list_jobs()),
        Command::Sample(s) => data::sample(g, s).await,
        Command::Submit(s) => submit::submit(g, s).await,
        Command::Follow(f) => follow::follow(g, f).await,
        Command::Sql(q) => sql::command(g, q).await,
        Command::Report(rp) => report::run(g, rp).await,
        Command::Serve(sv) => serve_warehouse(g, sv).await,
        Command::Users(u) => {
            config::check_env()?;
            serve::users(&u)
        }
        Command::Status(c) => cluster_jobs::status(g, &c).await,
        Command::Cancel(c) => cluster_jobs::cancel(g, &c).await,
        Command::Tables(t) => data::tables(g, t).await,
        Command::Sweep(c) => data::sweep(g, c).await,
    }
}

/// `tauc-job serve`: the committed warehouse over Flight SQL, on the
/// scheduler or on an in-process DataFusion with a quota per query.
async fn serve_warehouse(g: &Globals, sv: serve::ServeCmd) -> Result<String> {
    let r = resolve(g, Section::Serve, &sv, &sv.engine.resources())?;
    let settings = sv.settings(&r.layers)?;
    preflight(&r.engine, &r.warehouse, "warehouse").await?;
    let scheduler = r.settings.scheduler.clone();
    // In-process queries run on DataFusion itself, not the embedded
    // Ballista: results stream as they come, a dropped stream aborts
    // its tasks, and each query gets its own memory pool and
    // scratch limit ([`crate::serve::quota`]).
    let (ctx, local) = match scheduler.as_deref() {
        Some(url) => (
            connect(&r.engine, Some(url), sv.engine.parallelism).await?,
            None,
        ),
        None => {
            let parallelism = sv
                .engine
                .parallelism
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            let share = r.engine.memory_limit / settings.limits.max_queries;
            let local = crate::serve::quota::QueryRuntime::new(
                r.engine.registry.clone(),
                r.engine.scratch.spill(),
                share,
                settings.limits.query_scratch,
            );
            if settings.read_cache > 0 {
                let store = r.engine.registry.for_location(&r.warehouse)?;
                let cached = crate::serve::read_cache::ReadCache::new(store, settings.read_cache);
                r.engine
                    .registry
                    .register(&r.warehouse.store()?, std::sync::Arc::new(cached));
            }
            (r.engine.local_context(parallelism)?, Some(local))
        }
    };
    crate::warehouse::table::register_all(&ctx, &r.engine.registry, &r.warehouse).await?;
    crate::serve::run(ctx, settings, local, r.warehouse.clone()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert!(parse_date("2024-06-18").is_ok());
        assert_eq!(
            parse_date("2024-13-01").unwrap_err(),
            "invalid date '2024-13-01' (expected YYYY-MM-DD)"
        );
        assert!(parse_date("2024-6-1").is_err());
    }

    #[test]
    fn cli_shape() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
