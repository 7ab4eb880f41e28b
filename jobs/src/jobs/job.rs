//! What a job is to the command line: a name, one line on what it does,
//! what it reads and writes, the partitions it leases, the checks it makes
//! before any work, and a run that ends in a report printing itself.
//! `layering`, `reports` and `daily` implement [`Job`];
//! [`crate::jobs::registry`] lists them, and `tauc-job jobs` / `tauc-job
//! submit` work from that list alone.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;

use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::store::Location;
use crate::warehouse::commit::PartitionRef;
use crate::warehouse::tables::Table;
use crate::warehouse::writer::FileLimits;

/// What `submit` resolved for a run (flags > `TAUC_*` > file > defaults),
/// the same for every job; each job takes what it needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The dates asked for: UTC collection dates for layering and daily,
    /// local (DWD) dates for reports.
    pub dates: Vec<NaiveDate>,
    /// Regions to run for.
    pub regions: Vec<String>,
    /// Environment path segment (`uat`, `prd`).
    pub env: String,
    /// Root of the raw layout.
    pub raw_root: Location,
    /// Root of the warehouse.
    pub warehouse: Location,
    /// Lateness allowance `L` in days.
    pub lateness_days: i64,
    /// Key ranges (scan partitions) per raw day folder.
    pub ranges_per_folder: usize,
    /// Raw objects fetched at once per scan partition.
    pub fetch_concurrency: usize,
    /// Sizes of the data files the executors write.
    pub file_limits: FileLimits,
    /// How long to wait for another run that holds the same partitions.
    pub lease_wait: Duration,
    /// Funnels file or URL for the reports (`--funnels`).
    pub funnels: Option<String>,
    /// Stop on a `dim_user` row outside the spec's forms.
    pub strict_dims: bool,
    /// Where to write the layering run's counters (Prometheus text).
    pub metrics_file: Option<PathBuf>,
    /// Whether the run's tasks run on a cluster (not in this process).
    pub on_cluster: bool,
    /// `--incremental`: load only new raw objects (layering, daily).
    pub incremental: bool,
    /// `--compact-files`: small files that make an appended partition
    /// compacted.
    pub compact_files: usize,
    /// Where an incremental run's listings start (`--listing-guard`,
    /// `--listing-skew`, `--full-listing-every`).
    pub listing: crate::ingest::offsets::ListingRules,
    /// `--compact-loads-above`.
    pub compact_above: usize,
}

/// A job of the registry.
#[async_trait(?Send)]
pub trait Job: Sync {
    /// The job's name on the command line and in manifests.
    fn name(&self) -> &'static str;

    /// One line on what the job does.
    fn about(&self) -> &'static str;

    /// What the job reads.
    fn reads(&self) -> &'static str;

    /// The tables the job commits.
    fn writes(&self) -> Vec<Table>;

    /// Every partition a run of `spec` reads or writes, by layer: what its
    /// leases cover (another run on any of them waits its turn).
    fn lease_set(&self, spec: &RunSpec) -> BTreeSet<(&'static str, PartitionRef)>;

    /// Checks and loads what a run of `spec` needs, before any work and
    /// before the engine starts (a missing input, a bad dimension row or an
    /// unknown region fails here); returns the run, ready to start.
    async fn check(&self, engine: &Engine, spec: &RunSpec) -> Result<Box<dyn Ready>>;
}

/// A run whose checks passed, holding what they loaded.
#[async_trait(?Send)]
pub trait Ready {
    /// Runs the job on `ctx` (taking its leases, committing what it
    /// built) and returns its report; `to_string()` is what `submit`
    /// prints.
    async fn run(
        self: Box<Self>,
        ctx: &SessionContext,
        engine: &Engine,
    ) -> Result<Box<dyn Display>>;
}

/// Checks that a location's store answers, before any work starts.
pub async fn preflight(engine: &Engine, loc: &Location, what: &str) -> Result<()> {
    let store = engine.registry.for_location(loc)?;
    store.list_with_delimiter(Some(&loc.path())).await.map_err(|e| {
        Error::config(format!(
            "cannot reach the {what} at {loc}: {e}; check the endpoint (--s3-endpoint / TAUC_S3_ENDPOINT), credentials and that the bucket exists"
        ))
    })?;
    Ok(())
}
