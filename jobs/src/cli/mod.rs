//! The `tauc-job` command line: flags, their `TAUC_*` variables, and the
//! dispatch to jobs. The binary only parses, sets up logging and calls
//! [`run`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, FileConfig};
use crate::derive::regions::Regions;
use crate::engine::client::remote::SchedulerClient;
use crate::engine::client::submitted;
use crate::engine::runtime::scratch::{Resources, parse_size};
use crate::engine::runtime::tls::{ClusterTls, TlsFiles};
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::jobs::layering::{self, LayeringArgs, LayeringReport};
use crate::jobs::progress::Progress;
use crate::jobs::reports::{self, ReportsArgs, ReportsInputs, ReportsReport};
use crate::jobs::run_metrics;
use crate::jobs::sample::{self, SampleArgs};
use crate::store::{Location, S3Options};
use crate::warehouse::commit;
use crate::warehouse::dim_user::{self, DimUserCheck};
use crate::warehouse::tables::Table;
use crate::warehouse::writer::FileLimits;

pub mod cluster_jobs;
pub mod report;
pub mod serve;
pub mod sql;

use sql::OutputFormat;

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
#[derive(Debug, Clone, Args)]
pub struct ClusterTlsArgs {
    /// CA certificate (PEM) that signed the cluster's certificates: with
    /// --cluster-cert and --cluster-key, every connection to the scheduler
    /// and executors is mutual TLS.
    #[arg(long, global = true, env = "TAUC_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    /// This process's certificate (PEM), signed by that CA.
    #[arg(long, global = true, env = "TAUC_CLUSTER_CERT")]
    pub cluster_cert: Option<PathBuf>,
    /// This process's private key (PEM).
    #[arg(long, global = true, env = "TAUC_CLUSTER_KEY")]
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

/// What every command takes: the config file and the cluster's TLS files.
#[derive(Debug, Clone)]
pub struct Globals {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// TLS files from flags or variables (the config file's come after).
    pub tls: TlsFiles,
}

impl Globals {
    /// The config file, loaded.
    pub fn file(&self) -> Result<FileConfig> {
        Ok(FileConfig::load(self.config.as_deref())?)
    }

    /// The cluster TLS of flags > variables > the `[cluster]` section.
    pub fn cluster_tls(&self, file: &FileConfig) -> Result<Option<Arc<ClusterTls>>> {
        ClusterTls::from_files(&self.tls.clone().or(file.cluster.files()))
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job for a date (or a range of dates).
    Submit(SubmitArgs),
    /// Write realistic sample raw data (with every dirty case) and DIM files.
    Sample(SampleCmd),
    /// List the registered jobs.
    Jobs,
    /// Run SQL over the committed warehouse tables (ods_*, dwd_*, ads_*, dim_*).
    Sql(SqlCmd),
    /// List the warehouse tables with their committed partitions and rows.
    Tables(TablesCmd),
    /// Delete the data files re-runs replaced, once their keep time is over.
    Sweep(SweepCmd),
    /// Write one self-contained HTML page of a date's committed ADS tables.
    Report(report::ReportCmd),
    /// Serve the committed warehouse over Arrow Flight SQL (for Superset),
    /// read-only, to the users of a users file.
    Serve(serve::ServeCmd),
    /// Edit the users file of `serve`.
    #[command(subcommand)]
    Users(serve::UsersCmd),
    /// Show the jobs of a running scheduler (stages and tasks done).
    Status(cluster_jobs::StatusCmd),
    /// Cancel a job running on a scheduler.
    Cancel(cluster_jobs::CancelCmd),
}

/// The registered jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobName {
    /// Raw events of UTC collection dates → ODS, then the DWD dates they touch.
    Layering,
    /// Committed DWD partitions of local dates → the seven ADS reports.
    Reports,
    /// Layering for collection dates, then the reports of every DWD date it touched.
    Daily,
}

impl JobName {
    /// The job's name on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            JobName::Layering => layering::JOB,
            JobName::Reports => reports::JOB,
            JobName::Daily => "daily",
        }
    }

    /// One line on what the job does.
    pub fn about(self) -> &'static str {
        match self {
            JobName::Layering => {
                "raw events of UTC collection dates -> ODS, then every DWD local date they can change"
            }
            JobName::Reports => "committed DWD partitions of local dates -> the seven ADS reports",
            JobName::Daily => {
                "layering for collection dates, then reports for every DWD date the load touched"
            }
        }
    }

    /// What the job reads.
    pub fn reads(self) -> &'static str {
        match self {
            JobName::Layering => {
                "raw {env}/{region}/{yyyy}/{mm}/{dd}/messages-*.txt, dim_user, dim_region"
            }
            JobName::Daily => {
                "raw {env}/{region}/{yyyy}/{mm}/{dd}/messages-*.txt, dim_user, dim_contract, dim_region, conf/funnels.toml"
            }
            JobName::Reports => {
                "dwd_trk_event_di, dwd_mon_cors_error_di, dim_contract, dim_region, conf/funnels.toml"
            }
        }
    }

    /// The tables the job commits.
    pub fn writes(self) -> Vec<Table> {
        match self {
            JobName::Layering => Table::LAYERING.to_vec(),
            JobName::Reports => Table::REPORTS.to_vec(),
            JobName::Daily => Table::all().collect(),
        }
    }
}

/// `tauc-job jobs`: every job, what it reads and what it writes.
pub fn list_jobs() -> String {
    let mut out = String::new();
    for job in JobName::value_variants() {
        let writes: Vec<&str> = job.writes().into_iter().map(Table::name).collect();
        let _ = writeln!(
            out,
            "{:<9} {}
          reads:  {}
          writes: {}",
            job.name(),
            job.about(),
            job.reads(),
            writes.join(", ")
        );
    }
    out
}

/// Where data lives and how to reach it; shared by `submit` and `sample`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Root of the raw layout: `s3://bucket/route` or a local folder
    /// [default: data/raw].
    #[arg(long, env = "TAUC_RAW_ROOT")]
    pub raw_root: Option<String>,
    /// Root of the warehouse: `s3://bucket/prefix` or a local folder
    /// [default: data/warehouse].
    #[arg(long, env = "TAUC_WAREHOUSE")]
    pub warehouse: Option<String>,
    /// Environment path segment [default: uat].
    #[arg(long, env = "TAUC_ENV")]
    pub env: Option<String>,
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000.
    #[arg(long, env = "TAUC_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "TAUC_S3_REGION")]
    pub s3_region: Option<String>,
    /// Allow plain http to the S3 endpoint.
    #[arg(long)]
    pub s3_allow_http: bool,
}

/// `submit` flags.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// The job to run (see `tauc-job jobs`).
    pub job: JobName,
    /// First date, YYYY-MM-DD: a UTC collection date for layering and
    /// daily, a local (DWD) date for reports.
    #[arg(long, value_parser = parse_date)]
    pub date: NaiveDate,
    /// Last date of a range, inclusive.
    #[arg(long, value_parser = parse_date)]
    pub to: Option<NaiveDate>,
    /// Region to run for; repeat for several [default: every configured region].
    #[arg(long = "region", env = "TAUC_REGIONS", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Lateness allowance in whole days [default: 2].
    #[arg(long, env = "TAUC_LATENESS_DAYS", value_parser = clap::value_parser!(i64).range(0..=60))]
    pub lateness_days: Option<i64>,
    /// Ballista scheduler, df://host:port; without it the job runs in-process.
    #[arg(long, env = "TAUC_SCHEDULER")]
    pub scheduler: Option<String>,
    /// Key ranges (scan tasks) per raw day folder.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub ranges: u16,
    /// Raw objects fetched at once per scan task.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub fetch_concurrency: u16,
    /// Task slots of the in-process executor [default: CPU count].
    #[arg(long, env = "TAUC_PARALLELISM")]
    pub parallelism: Option<usize>,
    /// Funnels TOML file or URL for the reports [default:
    /// {warehouse}/conf/funnels.toml when it exists].
    #[arg(long, env = "TAUC_FUNNELS")]
    pub funnels: Option<String>,
    /// Rows per data file the executors write.
    #[arg(long, env = "TAUC_FILE_MAX_ROWS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub file_max_rows: u64,
    /// Megabytes per data file the executors write.
    #[arg(long, env = "TAUC_FILE_MAX_MB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub file_max_mb: u64,
    /// Seconds to wait for another run that holds the same partitions
    /// before giving up (exit 1).
    #[arg(long, env = "TAUC_LEASE_WAIT_SECS", default_value_t = 600)]
    pub lease_wait: u64,
    /// Seconds a data file replaced by a re-run stays for the queries that
    /// planned with the version listing it (keep it above the SQL
    /// surface's `--query-timeout`); the partition's next commit, or
    /// `tauc-job sweep`, deletes it after. Default 900.
    #[arg(long, env = "TAUC_KEEP_REPLACED_SECS")]
    pub keep_replaced_secs: Option<u64>,
    /// Stop (exit 2) on a `dim_user` row whose gender or birth date is
    /// outside the spec's forms, instead of counting it as `unknown` with a
    /// warning.
    #[arg(long, env = "TAUC_STRICT_DIMS")]
    pub strict_dims: bool,
    /// Write the layering run's counters (files, lines, bytes, rows by
    /// outcome, quarantined rows by reason, stage times, spilled bytes) to
    /// this file in the Prometheus text format, replacing it (for
    /// node_exporter's textfile collector).
    #[arg(long, env = "TAUC_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Memory and scratch space.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Where data lives.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Memory and scratch space of the in-process engine.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Memory the in-process engine's queries may hold before they spill
    /// to disk (4GiB, 512MiB) [default: a quarter of the machine's memory].
    #[arg(long, env = "TAUC_MEMORY_LIMIT", value_parser = parse_size)]
    pub memory_limit: Option<usize>,
    /// Parent of the run's private scratch directory (shuffle and spill
    /// files, mode 0700, removed when the run ends) [default: the system
    /// temporary directory].
    #[arg(long, env = "TAUC_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
}

impl EngineArgs {
    fn resources(&self) -> Resources {
        Resources {
            memory_limit: self.memory_limit,
            work_dir: self.work_dir.clone(),
        }
    }
}

/// `sql` flags.
#[derive(Debug, Clone, Args)]
pub struct SqlCmd {
    /// The query, e.g. "SELECT city, count(*) FROM dwd_trk_event_di WHERE dt = DATE '2024-06-18' GROUP BY city";
    /// `-` reads it from standard input (a long query in a file: `< q.sql`).
    pub query: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write the result to this file instead of standard output (needed for parquet).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also run DDL, DML, COPY and SET (refused by default: the warehouse
    /// changes only through the jobs). For scratch work on a local copy.
    #[arg(long)]
    pub allow_writes: bool,
    /// Ballista scheduler, df://host:port; without it the query runs in-process.
    #[arg(long, env = "TAUC_SCHEDULER")]
    pub scheduler: Option<String>,
    /// Task slots of the in-process executor [default: CPU count].
    #[arg(long, env = "TAUC_PARALLELISM")]
    pub parallelism: Option<usize>,
    /// Memory and scratch space.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Where data lives.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `tables` flags.
#[derive(Debug, Clone, Args)]
pub struct TablesCmd {
    /// Where data lives.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `sweep` flags.
#[derive(Debug, Clone, Args)]
pub struct SweepCmd {
    /// Where data lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Seconds a replaced file stays after the commit that replaced it
    /// (as `submit --keep-replaced-secs`). Default 900.
    #[arg(long, env = "TAUC_KEEP_REPLACED_SECS")]
    pub keep_replaced_secs: Option<u64>,
}

/// `sample` flags.
#[derive(Debug, Clone, Args)]
pub struct SampleCmd {
    /// First UTC collection date, YYYY-MM-DD.
    #[arg(long, value_parser = parse_date)]
    pub date: NaiveDate,
    /// Number of days.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=366))]
    pub days: u32,
    /// Clean events per region and day.
    #[arg(long, default_value_t = 2000)]
    pub events_per_day: u32,
    /// Regions [default: aps1, use1, euw1].
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Lines per raw file.
    #[arg(long, default_value_t = 50)]
    pub lines_per_file: usize,
    /// Where data goes.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> std::result::Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
        .ok_or_else(|| format!("invalid date '{s}' (expected YYYY-MM-DD)"))
}

struct Resolved {
    file: FileConfig,
    raw_root: Location,
    warehouse: Location,
    env: String,
    engine: Engine,
}

fn resolve(g: &Globals, store: &StoreArgs, resources: &Resources) -> Result<Resolved> {
    config::check_env()?;
    let file = g.file()?;
    let tls = g.cluster_tls(&file)?;
    let flags = S3Options {
        endpoint: store.s3_endpoint.clone(),
        region: store.s3_region.clone(),
        allow_http: store.s3_allow_http.then_some(true),
        ..Default::default()
    };
    // flags > env > file > defaults
    let s3 = file
        .s3
        .clone()
        .overlay(&S3Options::default().with_env()?)
        .overlay(&flags);
    let raw_root = Location::parse(
        store
            .raw_root
            .as_deref()
            .or(file.raw_root.as_deref())
            .unwrap_or(config::DEFAULT_RAW_ROOT),
    )?;
    let warehouse = Location::parse(
        store
            .warehouse
            .as_deref()
            .or(file.warehouse.as_deref())
            .unwrap_or(config::DEFAULT_WAREHOUSE),
    )?;
    let env = store
        .env
        .clone()
        .or(file.env.clone())
        .unwrap_or_else(|| config::DEFAULT_ENV.to_string());
    if env.is_empty() || env.contains('/') {
        return Err(Error::config(format!(
            "invalid --env '{env}' (expected a path segment such as uat)"
        )));
    }
    Ok(Resolved {
        engine: Engine::with_resources(s3, resources)?.with_tls(tls),
        file,
        raw_root,
        warehouse,
        env,
    })
}

/// Checks that a location's store answers, before any work starts.
async fn preflight(engine: &Engine, loc: &Location, what: &str) -> Result<()> {
    let store = engine.registry.for_location(loc)?;
    store.list_with_delimiter(Some(&loc.path())).await.map_err(|e| {
        Error::config(format!(
            "cannot reach the {what} at {loc}: {e}; check the endpoint (--s3-endpoint / TAUC_S3_ENDPOINT), credentials and that the bucket exists"
        ))
    })?;
    Ok(())
}

/// Checks `dim_user` before any work: a short row is an error; values
/// outside the spec's forms are warnings, or errors when `strict`.
async fn check_dim_user(r: &Resolved, strict: bool) -> Result<DimUserCheck> {
    let found = dim_user::check(&r.engine.registry, &r.warehouse).await?;
    let problems = found.problems();
    if strict && !problems.is_empty() {
        return Err(Error::BadInput(format!(
            "{}; fix these rows, or run without --strict-dims to count them as unknown",
            problems.join("; ")
        )));
    }
    for p in problems {
        tracing::warn!(
            "{p}; counted as unknown, as analyses.md says (--strict-dims stops instead)"
        );
    }
    Ok(found)
}

/// Runs a parsed command line; returns what to print on stdout.
pub async fn run(cli: Cli) -> Result<String> {
    let g = Globals {
        config: cli.config.clone(),
        tls: cli.cluster_tls.files(),
    };
    let g = &g;
    match cli.command {
        Command::Jobs => Ok(list_jobs()),
        Command::Sample(s) => {
            let r = resolve(g, &s.store, &Resources::default())?;
            let regions = if s.regions.is_empty() {
                Regions::default().names()
            } else {
                s.regions.clone()
            };
            if r.raw_root.store_url.starts_with("s3") {
                preflight(&r.engine, &r.raw_root, "raw root").await?;
            }
            let args = SampleArgs {
                date: s.date,
                days: s.days,
                events_per_day: s.events_per_day,
                regions,
                env: r.env.clone(),
                raw_root: r.raw_root.clone(),
                warehouse: Some(r.warehouse.clone()),
                lines_per_file: s.lines_per_file,
            };
            let rep = sample::write(&r.engine, &args).await?;
            Ok(format!(
                "wrote {} raw objects ({} lines) under {} and dim tables under {}\n",
                rep.files,
                rep.lines,
                r.raw_root,
                r.warehouse.join("dim")
            ))
        }
        Command::Submit(s) => submit(g, s).await,
        Command::Sql(q) => {
            let r = resolve(g, &q.store, &q.engine.resources())?;
            // Ctrl-C / SIGTERM cancel the query's Ballista job
            submitted::install();
            preflight(&r.engine, &r.warehouse, "warehouse").await?;
            if q.format == OutputFormat::Parquet && q.out.is_none() {
                return Err(Error::config(
                    "--format parquet needs --out FILE (Parquet is not written to a terminal)",
                ));
            }
            let query = if q.query == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Error::config(format!("cannot read the query from stdin: {e}")))?
            } else {
                q.query.clone()
            };
            if query.trim().is_empty() {
                return Err(Error::config(
                    "empty query (give SQL, or - to read it from stdin)",
                ));
            }
            let scheduler = q.scheduler.clone().or(r.file.scheduler.clone());
            let ctx = connect(&r.engine, scheduler.as_deref(), q.parallelism).await?;
            crate::warehouse::table::register_all(&ctx, &r.engine.registry, &r.warehouse).await?;
            crate::cli::sql::run(&ctx, &query, q.format, q.out.as_deref(), q.allow_writes).await
        }
        Command::Report(rp) => {
            let r = resolve(g, &rp.store, &rp.engine.resources())?;
            submitted::install();
            preflight(&r.engine, &r.warehouse, "warehouse").await?;
            let scheduler = rp.scheduler.clone().or(r.file.scheduler.clone());
            let ctx = connect(&r.engine, scheduler.as_deref(), None).await?;
            crate::warehouse::table::register_all(&ctx, &r.engine.registry, &r.warehouse).await?;
            let regions = if rp.regions.is_empty() {
                crate::show::regions_of(&ctx, rp.date).await?
            } else {
                rp.regions.clone()
            };
            if regions.is_empty() {
                return Err(Error::MissingInput(format!(
                    "no committed report for {} in {}: run `tauc-job submit reports --date {}` first",
                    rp.date, r.warehouse, rp.date
                )));
            }
            let html = crate::show::render(&ctx, rp.date, &regions).await?;
            std::fs::write(&rp.out, html).map_err(|e| crate::cli::sql::out_error(&rp.out, e))?;
            Ok(format!(
                "wrote the report of {} ({}) to {}\n",
                rp.date,
                regions.join(", "),
                rp.out.display()
            ))
        }
        Command::Serve(sv) => {
            let r = resolve(g, &sv.store, &sv.engine.resources())?;
            let settings = sv.settings(&r.file)?;
            preflight(&r.engine, &r.warehouse, "warehouse").await?;
            let scheduler = sv.scheduler.clone().or(r.file.scheduler.clone());
            // In-process queries run on DataFusion itself, not the embedded
            // Ballista: results stream as they come, a dropped stream aborts
            // its tasks, and each query gets its own memory pool and
            // scratch limit ([`crate::serve::quota`]).
            let (ctx, local) = match scheduler.as_deref() {
                Some(url) => (connect(&r.engine, Some(url), sv.parallelism).await?, None),
                None => {
                    let parallelism = sv.parallelism.unwrap_or_else(|| {
                        std::thread::available_parallelism().map_or(2, |n| n.get())
                    });
                    let share = r.engine.memory_limit / settings.limits.max_queries;
                    let local = crate::serve::quota::QueryRuntime::new(
                        r.engine.registry.clone(),
                        r.engine.scratch.spill(),
                        share,
                        settings.limits.query_scratch,
                    );
                    (r.engine.local_context(parallelism)?, Some(local))
                }
            };
            crate::warehouse::table::register_all(&ctx, &r.engine.registry, &r.warehouse).await?;
            crate::serve::run(ctx, settings, local, r.warehouse.clone()).await
        }
        Command::Users(u) => {
            config::check_env()?;
            serve::users(&u)
        }
        Command::Status(c) => cluster_jobs::status(g, &c).await,
        Command::Cancel(c) => cluster_jobs::cancel(g, &c).await,
        Command::Tables(t) => {
            let r = resolve(g, &t.store, &Resources::default())?;
            preflight(&r.engine, &r.warehouse, "warehouse").await?;
            crate::cli::sql::tables(&r.engine, &r.warehouse).await
        }
        Command::Sweep(c) => {
            let r = resolve(g, &c.store, &Resources::default())?;
            preflight(&r.engine, &r.warehouse, "warehouse").await?;
            set_keep_replaced(c.keep_replaced_secs, &r.file);
            let store = r.engine.registry.for_location(&r.warehouse)?;
            let mut out = String::new();
            for t in Table::all() {
                let n = commit::sweep(store.as_ref(), &t.location(&r.warehouse)).await?;
                if n > 0 {
                    out.push_str(&format!("{}: deleted {n} replaced file(s)\n", t.name()));
                }
            }
            if out.is_empty() {
                out.push_str("no replaced file past its keep time\n");
            }
            Ok(out)
        }
    }
}

/// Sets this process's keep time of replaced files: flag or variable,
/// else the file's `keep-replaced-secs`, else the default.
fn set_keep_replaced(flag: Option<u64>, file: &FileConfig) {
    commit::keep_replaced::set(
        flag.or(file.keep_replaced_secs)
            .unwrap_or(commit::keep_replaced::DEFAULT_SECS),
    );
}

/// A client context on the scheduler, or in-process.
async fn connect(
    engine: &Engine,
    scheduler: Option<&str>,
    parallelism: Option<usize>,
) -> Result<datafusion::prelude::SessionContext> {
    let parallelism =
        parallelism.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // an unreachable scheduler is a configuration error, found before any work
    let client = match scheduler {
        Some(url) => Some(SchedulerClient::connect(url, engine.tls.as_ref()).await?),
        None => None,
    };
    engine
        .connect(client.as_ref(), parallelism)
        .await
        .map_err(|e| match (scheduler, e) {
            (Some(url), e) => Error::config(format!("cannot connect to scheduler '{url}': {e}")),
            (None, e) => e,
        })
}

async fn submit(g: &Globals, s: SubmitArgs) -> Result<String> {
    let r = resolve(g, &s.store, &s.engine.resources())?;
    // Ctrl-C / SIGTERM cancel the running Ballista job; nothing more commits
    submitted::install();
    let to = s.to.unwrap_or(s.date);
    if to < s.date {
        return Err(Error::config(format!(
            "--to {to} is before --date {} (expected a range forward in time)",
            s.date
        )));
    }
    let days = (to - s.date).num_days();
    if days > 366 {
        return Err(Error::config(format!(
            "range of {} days is too long (at most 367)",
            days + 1
        )));
    }
    let dates: Vec<NaiveDate> = (0..=days as u64).map(|i| s.date + Days::new(i)).collect();
    let regions = if !s.regions.is_empty() {
        s.regions.clone()
    } else if let Some(r) = &r.file.regions {
        r.clone()
    } else {
        Regions::default().names()
    };
    let lateness_days = s
        .lateness_days
        .or(r.file.lateness_days)
        .unwrap_or(config::DEFAULT_LATENESS_DAYS);
    let scheduler = s.scheduler.clone().or(r.file.scheduler.clone());
    set_keep_replaced(s.keep_replaced_secs, &r.file);
    preflight(&r.engine, &r.warehouse, "warehouse").await?;
    if s.job != JobName::Reports {
        preflight(&r.engine, &r.raw_root, "raw root").await?;
    }
    // Region zones and dim_user are checked before the engine starts.
    let zones = layering::load_regions(&r.engine, &r.warehouse).await?;
    for region in &regions {
        zones.zone(region)?;
    }
    let dims = if s.job == JobName::Reports {
        None
    } else {
        Some(check_dim_user(&r, s.strict_dims || r.file.strict_dims.unwrap_or(false)).await?)
    };
    let layering_args = LayeringArgs {
        dates: dates.clone(),
        regions: regions.clone(),
        env: r.env.clone(),
        raw_root: r.raw_root.clone(),
        warehouse: r.warehouse.clone(),
        lateness_days,
        ranges_per_folder: s.ranges as usize,
        fetch_concurrency: s.fetch_concurrency as usize,
        file_limits: FileLimits {
            max_rows: s.file_max_rows,
            max_bytes: s.file_max_mb * 1024 * 1024,
            ..FileLimits::default()
        },
        lease_wait: std::time::Duration::from_secs(s.lease_wait),
    };
    let mut reports_args = ReportsArgs {
        // daily learns its report dates from the layering run
        dates: if s.job == JobName::Reports {
            dates
        } else {
            Vec::new()
        },
        regions,
        warehouse: r.warehouse.clone(),
        funnels: s.funnels.clone().or(r.file.funnels.clone()),
        lease_wait: std::time::Duration::from_secs(s.lease_wait),
    };
    // the DWD input (reports), a bad funnels file or dim_contract fail
    // before any work
    let inputs = if s.job == JobName::Layering {
        ReportsInputs::default()
    } else {
        ReportsInputs::load(&r.engine, &reports_args).await?
    };
    let ctx = connect(&r.engine, scheduler.as_deref(), s.parallelism).await?;
    let mut progress = Progress::auto();
    submitted::set_display(progress.bar());
    let mut out = String::new();
    if s.job != JobName::Reports {
        let report = layering::run(&ctx, &r.engine, &layering_args, &zones, &mut progress).await;
        progress.finish();
        let report = report?;
        out.push_str(&summary(&report));
        if let Some(path) = &s.metrics_file {
            let spilled = scheduler
                .is_none()
                .then(crate::engine::runtime::spill::spilled);
            let text = run_metrics::render(&report, spilled, chrono::Utc::now().timestamp());
            run_metrics::write(path, &text)?;
        }
        if let Some(dims) = dims.as_ref().filter(|d| !d.problems().is_empty()) {
            out.push_str(&format!("{dims}\n"));
        }
        reports_args.dates = layering_args.dwd_dates().into_iter().collect();
    }
    if s.job != JobName::Layering {
        let mut progress = Progress::auto();
        submitted::set_display(progress.bar());
        let report = reports::run(
            &ctx,
            &r.engine,
            &reports_args,
            &inputs,
            &zones,
            &mut progress,
        )
        .await;
        progress.finish();
        out.push_str(&reports_summary(&report?, &r.warehouse));
    }
    if scheduler.is_none() {
        out.push_str(&spill_line(crate::engine::runtime::spill::spilled()));
    }
    Ok(out)
}

/// What the in-process tasks spilled: sorts, aggregates and joins whose
/// share of `--memory-limit` was full, and shuffle writers past their
/// buffer (Ballista's sort shuffle spills at 256 MiB a task whatever the
/// pool). Only in-process: a cluster's tasks run in the executors.
fn spill_line(s: crate::engine::runtime::spill::Spilled) -> String {
    if s.files == 0 {
        "spilled: nothing\n".to_string()
    } else {
        format!("spilled: {s}\n")
    }
}

/// The reports' closing summary: one line per partition.
pub fn reports_summary(r: &ReportsReport, warehouse: &Location) -> String {
    let mut out = String::new();
    match &r.funnels {
        Some((source, n)) => {
            let _ = writeln!(out, "funnels: {n} from {source}");
        }
        None => {
            let _ = writeln!(
                out,
                "funnels: no funnels file at {} (and no --funnels): ads_trk_funnel_1d committed empty",
                warehouse.join("conf/funnels.toml")
            );
        }
    }
    for (p, rows) in &r.partitions {
        let n = |t: Table| rows.get(t.name()).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "ads dt={} region={}: targets={} pages={} funnel_steps={} topn={} anomaly_rows={} alerts={} contracts={}",
            p.dt,
            p.region,
            n(Table::AdsTargetClick),
            n(Table::AdsPage),
            n(Table::AdsFunnel),
            n(Table::AdsCorsTopN),
            n(Table::AdsCorsAnomaly),
            r.alerts.get(p).copied().unwrap_or(0),
            n(Table::AdsSettlement),
        );
    }
    let _ = writeln!(out, "run {} committed: reports {:.1} s", r.run_id, r.secs);
    out
}

/// The closing summary: one line per partition.
pub fn summary(r: &LayeringReport) -> String {
    let mut out = String::new();
    for (p, s) in &r.ods {
        let reasons = s
            .quarantined
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let late = s
            .quarantined
            .get("late_beyond_window")
            .copied()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "ods dt={} region={}: files={} ignored={} lines={} blank={} valid={} quarantined={} late={}{}",
            p.dt,
            p.region,
            s.stats.files,
            s.stats.files_ignored,
            s.stats.lines,
            s.stats.blank_lines,
            s.valid_rows,
            s.quarantined_rows(),
            late,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({reasons})")
            }
        );
    }
    for (p, s) in &r.dwd {
        let _ = writeln!(
            out,
            "dwd dt={} region={}: read={} duplicates={} events={} cors_errors={}",
            p.dt, p.region, s.rows_read, s.duplicates, s.trk_rows, s.cors_rows
        );
    }
    let _ = writeln!(
        out,
        "run {} committed: ods {:.1} s, dwd {:.1} s; {} result rows received ({} files, {} counters, no data rows)",
        r.run_id,
        r.ods_secs,
        r.dwd_secs,
        r.rows_received,
        r.files_received,
        r.rows_received - r.files_received
    );
    out
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
