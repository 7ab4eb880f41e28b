//! The reports job: committed DWD partitions (and `dim_contract`) → the
//! seven ADS tables of analyses.md, per local date and region.
//!
//! Every figure is an aggregate computed by a distributed query over the
//! manifest-listed DWD files ([`WarehouseTable`]); the order-dependent
//! rules (funnel steps, the 30-second duplicate click) run inside those
//! queries as functions over each user's events (`array_agg` +
//! `tauc_funnel_reach` / `tauc_dup_clicks`). Only per-partition aggregates
//! come back; this module turns them into rows (ratios, ranks, money,
//! hour buckets, zero rows) and commits every partition of every table,
//! empty ones included.
//!
//! Bot events are left out everywhere except the settlement's gross counts.

pub mod anomaly;
mod batches;
mod commit_ads;
pub mod funnels;
mod inputs;
mod job;
mod plans;
mod queries;
pub mod settlement;

pub use self::commit_ads::stale_dates;
pub use self::inputs::{ReportsInputs, load_contracts, load_funnels};
pub use self::job::{Reports, ReportsRun};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{Days, NaiveDate};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use tracing::Instrument;

use crate::derive::regions::Regions;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::jobs::progress::Progress;
use crate::store::Location;
use crate::warehouse::commit::new_run_id;
use crate::warehouse::commit::{self, PartitionRef};
use crate::warehouse::tables::Table;

/// Name of the job in manifests and the registry.
pub const JOB: &str = "reports";

/// Rows of `ads_mon_cors_topn_1d` per partition.
pub const TOP_N: usize = 100;

/// What a reports run builds.
#[derive(Debug, Clone)]
pub struct ReportsArgs {
    /// Local dates to build, ascending and contiguous.
    pub dates: Vec<NaiveDate>,
    /// Regions to build.
    pub regions: Vec<String>,
    /// Root of the warehouse.
    pub warehouse: Location,
    /// Funnels file or URL; `None` = `{warehouse}/conf/funnels.toml`
    /// when it exists.
    pub funnels: Option<String>,
    /// How long to wait for another run that holds the same partitions.
    pub lease_wait: std::time::Duration,
}

/// What a reports run did.
#[derive(Debug, Clone, Default)]
pub struct ReportsReport {
    /// The run's id.
    pub run_id: String,
    /// Rows committed per partition and table name.
    pub partitions: BTreeMap<PartitionRef, BTreeMap<&'static str, usize>>,
    /// Alerts raised per partition.
    pub alerts: BTreeMap<PartitionRef, usize>,
    /// Where the funnels came from, and how many; `None` when no file.
    pub funnels: Option<(String, usize)>,
    /// Where the funnels file was looked for when `--funnels` was not
    /// given (`{warehouse}/conf/funnels.toml`).
    pub default_funnels: String,
    /// Seconds the run took.
    pub secs: f64,
}

impl ReportsArgs {
    /// The DWD partitions read (two days of baseline before the range) and
    /// the ADS partitions written, by layer: what the run's leases cover,
    /// so that another run on them waits its turn.
    pub fn lease_set(&self) -> BTreeSet<(&'static str, PartitionRef)> {
        let mut parts = BTreeSet::new();
        let (Some(first), Some(last)) = (self.dates.first(), self.dates.last()) else {
            return parts;
        };
        for region in &self.regions {
            let mut d = *first - Days::new(2);
            while d <= *last {
                let p = PartitionRef {
                    dt: d,
                    region: region.clone(),
                };
                if d >= *first {
                    parts.insert(("ads", p.clone()));
                }
                parts.insert(("dwd", p));
                d = d + Days::new(1);
            }
        }
        parts
    }
}

/// The reports' closing summary: the funnels, one line per partition, the
/// run.
impl std::fmt::Display for ReportsReport {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.funnels {
            Some((source, n)) => writeln!(out, "funnels: {n} from {source}")?,
            None => writeln!(
                out,
                "funnels: no funnels file at {} (and no --funnels): ads_trk_funnel_1d committed empty",
                self.default_funnels
            )?,
        }
        for (p, rows) in &self.partitions {
            let n = |t: Table| rows.get(t.name()).copied().unwrap_or(0);
            writeln!(
                out,
                "ads dt={} region={}: targets={} pages={} funnel_steps={} topn={} anomaly_rows={} alerts={} contracts={}",
                p.dt,
                p.region,
                n(Table::AdsTargetClick),
                n(Table::AdsPage),
                n(Table::AdsFunnel),
                n(Table::AdsCorsTopN),
                n(Table::AdsCorsAnomaly),
                self.alerts.get(p).copied().unwrap_or(0),
                n(Table::AdsSettlement),
            )?;
        }
        writeln!(
            out,
            "run {} committed: reports {:.1} s",
            self.run_id, self.secs
        )
    }
}

/// Runs the reports job on inputs from [`ReportsInputs::load`], which
/// checked that the DWD partitions of `args.dates` are committed.
pub async fn run(
    ctx: &SessionContext,
    engine: &Engine,
    args: &ReportsArgs,
    inputs: &ReportsInputs,
    regions: &Regions,
    progress: &mut Progress,
) -> Result<ReportsReport> {
    if args.dates.is_empty() {
        return Err(Error::config("no date to build reports for"));
    }
    let run_id = new_run_id();
    let store = engine.registry.for_location(&args.warehouse)?;
    progress.stage("taking the partitions' leases");
    let lease = crate::warehouse::lease::acquire(
        store,
        &args.warehouse,
        &run_id,
        JOB,
        &args.lease_set(),
        args.lease_wait,
    )
    .await?;
    // every log line of the run carries its job and run id
    let span = tracing::info_span!("run", job = JOB, run_id = %run_id);
    let result = run_leased(ctx, engine, args, inputs, regions, &run_id, progress)
        .instrument(span)
        .await;
    lease.release().await?;
    result
}

/// The run under its leases: every report queried, then every partition
/// of every ADS table committed (empty ones included).
async fn run_leased(
    ctx: &SessionContext,
    engine: &Engine,
    args: &ReportsArgs,
    inputs: &ReportsInputs,
    regions: &Regions,
    run_id: &str,
    progress: &mut Progress,
) -> Result<ReportsReport> {
    let started = Instant::now();
    let Some(first) = args.dates.first() else {
        return Err(Error::config("no date to build reports for"));
    };
    let mut zones = BTreeMap::new();
    for r in &args.regions {
        zones.insert(r.clone(), regions.zone(r)?);
    }
    let store = engine.registry.for_location(&args.warehouse)?;
    tracing::info!(job = JOB, run_id = %run_id, dates = ?args.dates, regions = ?args.regions, "run started");

    let results = plans::query_all(ctx, args, inputs, &zones, progress).await?;
    let committed = commit_ads::committed_baselines(store.as_ref(), args, *first).await?;

    // a stop asked while the job ran: nothing of this stage commits
    crate::engine::client::submitted::check()?;
    progress.stage("reports: committing");
    let mut report = ReportsReport {
        run_id: run_id.to_string(),
        funnels: inputs.funnels.as_ref().map(|(s, f)| (s.clone(), f.len())),
        default_funnels: args.warehouse.join("conf/funnels.toml").to_string(),
        ..Default::default()
    };
    let ads = commit_ads::Ads {
        store: &store,
        run_id,
        args,
        inputs,
        results: &results,
        committed: &committed,
    };
    let partitions = args.regions.iter().flat_map(|region| {
        (args.dates.iter()).map(move |dt| PartitionRef {
            dt: *dt,
            region: region.clone(),
        })
    });
    let (ads, zones) = (&ads, &zones);
    let commits = partitions.map(|p| async move {
        let (rows, alerts) = ads.commit_partition(&p, zones[&p.region]).await?;
        Ok::<_, Error>((p, rows, alerts))
    });
    // partitions side by side (each is its own commit point)
    let committed: Vec<_> = futures::stream::iter(commits)
        .buffer_unordered(commit::PARTITIONS_AT_ONCE)
        .try_collect()
        .await?;
    for (p, rows, alerts) in committed {
        report.alerts.insert(p.clone(), alerts);
        report.partitions.insert(p, rows);
    }
    report.secs = started.elapsed().as_secs_f64();
    tracing::info!(job = JOB, run_id = %run_id, "run committed");
    Ok(report)
}
