//! `tauc-job submit` and `tauc-job jobs`: the registered jobs
//! ([`crate::jobs::registry`]) listed, and one of them run for a date
//! range.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{Days, NaiveDate};
use clap::Args;
use clap::builder::{PossibleValue, PossibleValuesParser};
use serde::Serialize;

use super::flags::EngineArgs;
use super::parse_date;
use super::resolve::{Resolved, connect, resolve};
use crate::cli::Globals;
use crate::config::{Section, human, parse_duration};
use crate::derive::regions::Regions;
use crate::engine::client::submitted;
use crate::engine::runtime::spill::{self, Spilled};
use crate::error::{Error, Result};
use crate::jobs::job::{RunSpec, preflight};
use crate::jobs::layering::ListingRules;
use crate::jobs::registry::{self, JOBS};
use crate::warehouse::commit;
use crate::warehouse::tables::Table;
use crate::warehouse::writer::FileLimits;

/// `submit` flags. Serialized, those with a config file key are the flag
/// layer of its settings (unset ones left out); the rest only clap reads.
#[derive(Debug, Clone, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SubmitArgs {
    /// The job to run (see `tauc-job jobs`).
    #[arg(value_parser = job_names())]
    #[serde(skip)]
    pub job: String,
    /// First date, YYYY-MM-DD: a UTC collection date for layering and
    /// daily, a local (DWD) date for reports.
    #[arg(long, value_parser = parse_date)]
    #[serde(skip)]
    pub date: NaiveDate,
    /// Last date of a range, inclusive.
    #[arg(long, value_parser = parse_date)]
    #[serde(skip)]
    pub to: Option<NaiveDate>,
    /// What a run loads and how (shared with `follow`).
    #[command(flatten)]
    #[serde(flatten)]
    pub run: RunArgs,
    /// Write the layering run's counters (files, lines, bytes, rows by
    /// outcome, quarantined rows by reason, stage times, spilled bytes) to
    /// this file in the Prometheus text format, replacing it (for
    /// node_exporter's textfile collector).
    #[arg(long, env = "TAUC_METRICS_FILE")]
    #[serde(skip)]
    pub metrics_file: Option<PathBuf>,
    /// Load only the raw objects no committed load of their ODS
    /// partition has read, and rebuild only the DWD (and, for daily, ADS)
    /// partitions those can change; layering and daily only. The result
    /// equals a full run over every object loaded so far.
    #[arg(long)]
    #[serde(skip)]
    pub incremental: bool,
    /// Scheduler, parallelism, memory, scratch space, stores.
    #[command(flatten)]
    #[serde(flatten)]
    pub engine: EngineArgs,
}

/// The flags of a layering or daily run that `submit` and `follow` share.
/// Serialized like [`SubmitArgs`].
#[derive(Debug, Clone, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RunArgs {
    /// Region to run for; repeat for several [default: every configured region].
    #[arg(long = "region", env = "TAUC_REGIONS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Lateness allowance in whole days [default: 2].
    #[arg(long, env = "TAUC_LATENESS_DAYS", value_parser = clap::value_parser!(i64).range(0..=60))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lateness_days: Option<i64>,
    /// Key ranges (scan tasks) per raw day folder.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    #[serde(skip)]
    pub ranges: u16,
    /// Raw objects fetched at once per scan task.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    #[serde(skip)]
    pub fetch_concurrency: u16,
    /// Funnels TOML file or URL for the reports [default:
    /// {warehouse}/conf/funnels.toml when it exists].
    #[arg(long, env = "TAUC_FUNNELS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub funnels: Option<String>,
    /// Rows per data file the executors write.
    #[arg(long, env = "TAUC_FILE_MAX_ROWS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    #[serde(skip)]
    pub file_max_rows: u64,
    /// Megabytes per data file the executors write.
    #[arg(long, env = "TAUC_FILE_MAX_MB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    #[serde(skip)]
    pub file_max_mb: u64,
    /// Seconds to wait for another run that holds the same partitions
    /// before giving up (submit: exit 1; follow: the next tick tries
    /// again).
    #[arg(long, env = "TAUC_LEASE_WAIT_SECS", default_value_t = 600)]
    #[serde(skip)]
    pub lease_wait: u64,
    /// Seconds a data file replaced by a re-run stays for the queries that
    /// planned with the version listing it (keep it above the SQL
    /// surface's `--query-timeout`); the partition's next commit, or
    /// `tauc-job sweep`, deletes it after. Default 900.
    #[arg(long, env = "TAUC_KEEP_REPLACED_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_replaced_secs: Option<u64>,
    /// Stop (exit 2) on a `dim_user` row whose gender or birth date is
    /// outside the spec's forms, instead of counting it as `unknown` with a
    /// warning.
    #[arg(long, env = "TAUC_STRICT_DIMS")]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strict_dims: bool,
    /// With --incremental: compact a partition's files under 32 MiB once
    /// it holds this many (the small files micro-batches append).
    #[arg(long, env = "TAUC_COMPACT_FILES", default_value_t = 16, value_parser = clap::value_parser!(u16).range(2..))]
    #[serde(skip)]
    pub compact_files: u16,
    /// With --incremental: list each raw folder whole at least this
    /// often, e.g. 1h (objects whose keys sort below where the partial
    /// listings start are found then) [default: 1h].
    #[arg(long, env = "TAUC_FULL_LISTING_EVERY", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "human::duration::serialize_some"
    )]
    pub full_listing_every: Option<Duration>,
    /// With --incremental: an uploader partition whose newest batch is
    /// older than the folder's newest by more than this stops holding the
    /// partial listings' start back, e.g. 15m [default: 15m].
    #[arg(long, env = "TAUC_LISTING_GUARD", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "human::duration::serialize_some"
    )]
    pub listing_guard: Option<Duration>,
    /// With --incremental: how far before a partition's newest batch its
    /// next batch may start (record timestamps out of order), e.g. 2m
    /// [default: 2m].
    #[arg(long, env = "TAUC_LISTING_SKEW", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "human::duration::serialize_some"
    )]
    pub listing_skew: Option<Duration>,
    /// With --incremental: a partition with more loads than this in its
    /// manifest has them folded into one.
    #[arg(long, default_value_t = crate::jobs::layering::DEFAULT_COMPACT_ABOVE, value_parser = parse_compact_above)]
    #[serde(skip)]
    pub compact_loads_above: usize,
}

impl RunArgs {
    /// The [`RunSpec`] of these flags and the resolved settings, for
    /// `dates`.
    pub(super) fn spec(&self, r: &Resolved, dates: Vec<NaiveDate>) -> RunSpec {
        let settings = &r.settings;
        let regions = if settings.regions.is_empty() {
            Regions::default().names()
        } else {
            settings.regions.clone()
        };
        RunSpec {
            dates,
            regions,
            env: r.env.clone(),
            raw_root: r.raw_root.clone(),
            warehouse: r.warehouse.clone(),
            lateness_days: settings.lateness_days,
            ranges_per_folder: self.ranges as usize,
            fetch_concurrency: self.fetch_concurrency as usize,
            file_limits: FileLimits {
                max_rows: self.file_max_rows,
                max_bytes: self.file_max_mb * 1024 * 1024,
                ..FileLimits::default()
            },
            lease_wait: std::time::Duration::from_secs(self.lease_wait),
            funnels: settings.funnels.clone(),
            strict_dims: settings.strict_dims,
            metrics_file: None,
            on_cluster: settings.scheduler.is_some(),
            incremental: false,
            compact_files: self.compact_files as usize,
            listing: ListingRules {
                guard: settings.listing_guard,
                skew: settings.listing_skew,
                full_every: settings.full_listing_every,
            },
            compact_above: self.compact_loads_above,
        }
    }
}

/// `--compact-loads-above`: at least 1.
fn parse_compact_above(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "'{s}' is not a whole number of loads of at least 1"
        )),
    }
}

/// The names of the registered jobs, each with its line, for clap.
fn job_names() -> PossibleValuesParser {
    PossibleValuesParser::new(
        JOBS.iter()
            .map(|j| PossibleValue::new(j.name()).help(j.about())),
    )
}

/// `tauc-job jobs`: every job, what it reads and what it writes.
pub fn list_jobs() -> String {
    let mut out = String::new();
    for job in JOBS {
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

/// `tauc-job submit`: the flags resolved into a [`RunSpec`], the job's
/// checks, then its run on the engine; returns its report and what the
/// in-process tasks spilled.
pub async fn submit(g: &Globals, s: SubmitArgs) -> Result<String> {
    let job = registry::find(&s.job)?;
    if s.incremental && !matches!(job.name(), "layering" | "daily") {
        return Err(Error::config(format!(
            "--incremental applies to the layering and daily jobs, not to '{}'",
            job.name()
        )));
    }
    let r = resolve(g, Section::Jobs, &s, &s.engine.resources())?;
    // Ctrl-C / SIGTERM cancel the running Ballista job; nothing more commits
    submitted::install();
    let dates = dates(s.date, s.to)?;
    let scheduler = r.settings.scheduler.clone();
    commit::keep_replaced::set(r.settings.keep_replaced_secs);
    preflight(&r.engine, &r.warehouse, "warehouse").await?;
    let spec = RunSpec {
        metrics_file: s.metrics_file.clone(),
        incremental: s.incremental,
        ..s.run.spec(&r, dates)
    };
    // the job's inputs are checked before the engine starts
    let ready = job.check(&r.engine, &spec).await?;
    let ctx = connect(&r.engine, scheduler.as_deref(), s.engine.parallelism).await?;
    let mut out = ready.run(&ctx, &r.engine).await?.to_string();
    if scheduler.is_none() {
        out.push_str(&spill_line(spill::spilled()));
    }
    Ok(out)
}

/// The dates `date ..= to` (`to` defaults to `date`), at most 367.
fn dates(date: NaiveDate, to: Option<NaiveDate>) -> Result<Vec<NaiveDate>> {
    let to = to.unwrap_or(date);
    if to < date {
        return Err(Error::config(format!(
            "--to {to} is before --date {date} (expected a range forward in time)"
        )));
    }
    let days = (to - date).num_days();
    if days > 366 {
        return Err(Error::config(format!(
            "range of {} days is too long (at most 367)",
            days + 1
        )));
    }
    Ok((0..=days as u64).map(|i| date + Days::new(i)).collect())
}

/// What the in-process tasks spilled: sorts, aggregates and joins whose
/// share of `--memory-limit` was full, and shuffle writers past their
/// buffer (Ballista's sort shuffle spills at 256 MiB a task whatever the
/// pool). Only in-process: a cluster's tasks run in the executors.
fn spill_line(s: Spilled) -> String {
    if s.files == 0 {
        "spilled: nothing\n".to_string()
    } else {
        format!("spilled: {s}\n")
    }
}
