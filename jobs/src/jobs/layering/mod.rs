//! The layering job: raw day folders → ODS (by UTC collection date) → DWD
//! (deduplicated, by local event date), exactly as layers.md says.
//!
//! Both stages are one distributed plan each, ending in the warehouse
//! writer ([`crate::warehouse::writer`]): executors write the data files,
//! and only one row per file and the counters come back to this process,
//! which checks them and commits the manifests. A run first takes the
//! leases of every partition it reads or writes
//! ([`crate::warehouse::lease`]), so two runs on the same dates take turns.
//!
//! 1. **ODS.** One distributed raw scan over every `(region, date)` folder;
//!    each task writes the valid and quarantined rows of its key range and
//!    reports the folder counters. The accounting invariant is checked
//!    for every partition before any of them is committed.
//! 2. **DWD.** Loading collection date `C` can change DWD dates
//!    `C-1-L ..= C+1`; each such date `D` is rebuilt from the committed ODS
//!    partitions `D-1 ..= D+1+L` alone (one scan of `ods_fe_event_di`
//!    pruned by `dt`/`region`), in one distributed query: rows are
//!    tagged with every target date whose window holds them, deduplicated
//!    per `(region, target date, event_id)`, kept when their local date is
//!    the target, and derived with the tauc UDFs. The winner of each
//!    `event_id` is picked by an aggregate (`min` of the row packed as one
//!    binary value that sorts by `collector_ts, src_file, line_no`; see
//!    `engine::plan::row_pack`), not by a `row_number()` window: the window
//!    plan failed under Ballista ("Expects PARTITION BY expression to be
//!    ordered") on some inputs. Because each target date
//!    reads only its own window, the result equals a rebuild from scratch
//!    whatever order the days were loaded in.

pub mod compact;
mod dwd;
mod dwd_patch;
mod incremental;
mod job;
mod ods;
pub mod run_metrics;
mod written;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::ObjectStore;
use tracing::Instrument;

use crate::derive::regions::Regions;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
pub use crate::ingest::offsets::ListingRules;
use crate::ingest::raw_scan::RangeStats;
use crate::jobs::progress::Progress;
use crate::store::Location;
use crate::warehouse::commit::{PartitionRef, new_run_id};
use crate::warehouse::lease;
use crate::warehouse::tables::Table;
use crate::warehouse::writer::FileLimits;

use self::dwd::{build_dwd, dwd_targets};
use self::incremental::load_ods_incremental;
pub use self::job::{Layering, LayeringOutput, LayeringRun, load_zones};
use self::ods::load_ods;
pub use self::written::write;

/// Name of the job in manifests and the registry.
pub const JOB: &str = "layering";

/// What a layering run loads.
#[derive(Debug, Clone)]
pub struct LayeringArgs {
    /// UTC collection dates to load.
    pub dates: Vec<NaiveDate>,
    /// Regions to load (each needs a time zone).
    pub regions: Vec<String>,
    /// Environment path segment (`uat`, `prd`).
    pub env: String,
    /// Root of the raw layout.
    pub raw_root: Location,
    /// Root of the warehouse.
    pub warehouse: Location,
    /// Lateness allowance `L` in days.
    pub lateness_days: i64,
    /// Key ranges (scan partitions) per day folder.
    pub ranges_per_folder: usize,
    /// Objects fetched at once per scan partition.
    pub fetch_concurrency: usize,
    /// Sizes of the data files the executors write.
    pub file_limits: FileLimits,
    /// How long to wait for another run that holds the same partitions.
    pub lease_wait: Duration,
    /// Load only the objects no committed load has read, and rebuild only
    /// the DWD dates whose ODS window moved (layers.md, "Incremental
    /// loads").
    pub incremental: bool,
    /// How many small files make an appended partition compacted.
    pub compact_files: usize,
    /// Where an incremental run's listings start (design.md, "Offset
    /// listings").
    pub listing: ListingRules,
    /// An incremental load that would leave more loads than this in a
    /// partition's manifest folds them all into one.
    pub compact_above: usize,
}

/// What the listings of an incremental run cost (logged per folder; the
/// totals in the report and the metrics file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListingCounts {
    /// Folders listed.
    pub folders: u64,
    /// Of them, listed whole.
    pub full_listings: u64,
    /// LIST requests.
    pub list_requests: u64,
    /// Keys the listings returned.
    pub keys_listed: u64,
    /// Object lists of earlier loads read.
    pub object_lists_read: u64,
    /// Objects new to their partition.
    pub new_objects: u64,
}

impl ListingCounts {
    fn add(&mut self, o: &ListingCounts) {
        self.folders += o.folders;
        self.full_listings += o.full_listings;
        self.list_requests += o.list_requests;
        self.keys_listed += o.keys_listed;
        self.object_lists_read += o.object_lists_read;
        self.new_objects += o.new_objects;
    }
}

/// Default [`LayeringArgs::compact_above`].
pub const DEFAULT_COMPACT_ABOVE: usize = 32;

impl LayeringArgs {
    /// One date of every default region, with the local default roots.
    pub fn local_default(date: NaiveDate) -> LayeringArgs {
        LayeringArgs {
            dates: vec![date],
            regions: Regions::default().names(),
            env: "uat".into(),
            raw_root: Location::parse("data/raw").expect("relative path"),
            warehouse: Location::parse("data/warehouse").expect("relative path"),
            lateness_days: 2,
            ranges_per_folder: 4,
            fetch_concurrency: 32,
            file_limits: FileLimits::default(),
            lease_wait: Duration::from_secs(600),
            incremental: false,
            compact_files: compact::SMALL_FILES,
            listing: ListingRules::default(),
            compact_above: DEFAULT_COMPACT_ABOVE,
        }
    }

    /// The ODS partitions the DWD stage reads: every window `D-1 ..= D+1+L`
    /// of every DWD date, per region.
    pub fn ods_read_set(&self) -> BTreeSet<PartitionRef> {
        let mut out = BTreeSet::new();
        for region in &self.regions {
            for d in self.dwd_dates() {
                for c in window(d, self.lateness_days) {
                    out.insert(PartitionRef {
                        dt: c,
                        region: region.clone(),
                    });
                }
            }
        }
        out
    }

    /// Every partition the run reads or writes, by layer: what its leases
    /// cover.
    pub fn lease_set(&self) -> BTreeSet<(&'static str, PartitionRef)> {
        let mut out: BTreeSet<(&'static str, PartitionRef)> = self
            .ods_read_set()
            .into_iter()
            .map(|p| ("ods", p))
            .collect();
        for region in &self.regions {
            for d in self.dwd_dates() {
                out.insert((
                    "dwd",
                    PartitionRef {
                        dt: d,
                        region: region.clone(),
                    },
                ));
            }
        }
        out
    }

    /// The DWD dates the loaded collection dates can change.
    pub fn dwd_dates(&self) -> BTreeSet<NaiveDate> {
        let mut out = BTreeSet::new();
        for c in &self.dates {
            let mut d = *c - Days::new(1 + self.lateness_days as u64);
            while d <= *c + Days::new(1) {
                out.insert(d);
                d = d + Days::new(1);
            }
        }
        out
    }
}

/// The outcome of loading one ODS partition.
#[derive(Debug, Clone, Default)]
pub struct OdsSummary {
    /// The scan's counters.
    pub stats: RangeStats,
    /// Valid rows.
    pub valid_rows: u64,
    /// Quarantined rows by reason.
    pub quarantined: BTreeMap<String, u64>,
    /// An incremental load that appended to the partition: the version it
    /// appended to (`Some(None)`: the partition is new). `None` for a load
    /// that replaced the partition (every full run).
    pub appended_to: Option<Option<String>>,
}

impl OdsSummary {
    /// All quarantined rows.
    pub fn quarantined_rows(&self) -> u64 {
        self.quarantined.values().sum()
    }
}

/// The ODS dates DWD date `d` is built from: `d-1 ..= d+1+L`.
fn window(d: NaiveDate, lateness_days: i64) -> impl Iterator<Item = NaiveDate> {
    let first = d - Days::new(1);
    (0..=(2 + lateness_days.max(0) as u64)).map(move |i| first + Days::new(i))
}

/// The outcome of rebuilding one DWD partition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DwdSummary {
    /// Valid ODS rows read from the partition's window.
    pub rows_read: i64,
    /// Rows read that are copies of a row written here.
    pub duplicates: i64,
    /// Rows written to `dwd_trk_event_di`.
    pub trk_rows: i64,
    /// Rows written to `dwd_mon_cors_error_di`.
    pub cors_rows: i64,
}

/// How an incremental run patched its DWD dates instead of rebuilding
/// them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchSummary {
    /// Event ids of the new rows that occur more than once in the read set.
    pub copied_ids: u64,
    /// Dates rewritten because a new copy beat a kept row.
    pub rewritten: usize,
}

/// What a layering run did.
#[derive(Debug, Clone, Default)]
pub struct LayeringReport {
    /// The run's id (in every file name and manifest it wrote).
    pub run_id: String,
    /// ODS partitions loaded.
    pub ods: BTreeMap<PartitionRef, OdsSummary>,
    /// DWD partitions rebuilt.
    pub dwd: BTreeMap<PartitionRef, DwdSummary>,
    /// How the DWD stage patched its dates, when it did (an incremental
    /// run that only appended rows).
    pub dwd_patch: Option<PatchSummary>,
    /// Partitions whose small files an incremental run compacted.
    pub compacted: usize,
    /// Seconds the ODS stage took.
    pub ods_secs: f64,
    /// Seconds the DWD stage took.
    pub dwd_secs: f64,
    /// Result rows `tauc-job` received from the cluster (one per file
    /// written and per counter; never a data row).
    pub rows_received: u64,
    /// How many of those rows describe a data file.
    pub files_received: u64,
    /// What an incremental run's listings cost (zero for a full run).
    pub listing: ListingCounts,
}

impl LayeringReport {
    /// Valid ODS rows over all loaded partitions.
    pub fn valid_rows(&self) -> u64 {
        self.ods.values().map(|s| s.valid_rows).sum()
    }
}

/// Loads the regions' time zones: defaults, overridden by
/// `{warehouse}/dim/dim_region/*.csv` when present.
pub async fn load_regions(engine: &Engine, warehouse: &Location) -> Result<Regions> {
    let mut regions = Regions::default();
    let dir = warehouse.join("dim/dim_region");
    let store = engine.registry.for_location(&dir)?;
    let files: Vec<_> = store.list(Some(&dir.path())).try_collect().await?;
    for f in files
        .iter()
        .filter(|f| f.location.as_ref().ends_with(".csv"))
    {
        let bytes = object_store::ObjectStoreExt::get(store.as_ref(), &f.location)
            .await?
            .bytes()
            .await?;
        let text = String::from_utf8_lossy(&bytes);
        for (i, line) in text.lines().enumerate().skip(1) {
            if line.trim().is_empty() {
                continue;
            }
            let (region, zone) = line.split_once(',').ok_or_else(|| {
                Error::config(format!(
                    "{}:{}: expected 'region,time_zone', got '{line}'",
                    f.location,
                    i + 1
                ))
            })?;
            regions
                .set(region, zone)
                .map_err(|e| Error::config(format!("{}:{}: {e}", f.location, i + 1)))?;
        }
    }
    Ok(regions)
}

/// Runs the layering job with the regions' zones (from [`load_regions`],
/// which callers run before starting the engine so that an unknown region
/// fails before any work).
pub async fn run(
    ctx: &SessionContext,
    engine: &Engine,
    args: &LayeringArgs,
    regions: &Regions,
    progress: &mut Progress,
) -> Result<LayeringReport> {
    let mut zones = BTreeMap::new();
    for r in &args.regions {
        zones.insert(r.clone(), regions.zone(r)?);
    }
    if args.dates.is_empty() {
        return Err(Error::config("no collection date to load"));
    }
    let store = engine.registry.for_location(&args.warehouse)?;
    let run_id = new_run_id();
    // every log line of the run carries its job and run id (JSON logs: the
    // span's fields)
    let span = tracing::info_span!("run", job = JOB, run_id = %run_id);
    async {
        tracing::info!(dates = ?args.dates, regions = ?args.regions, "run started");
        let mut report = LayeringReport {
            run_id: run_id.clone(),
            ..Default::default()
        };
        progress.stage("taking the partitions' leases");
        let lease = lease::acquire(
            store.clone(),
            &args.warehouse,
            &run_id,
            JOB,
            &args.lease_set(),
            args.lease_wait,
        )
        .await?;
        let result = stages(ctx, engine, &store, args, &zones, &mut report, progress).await;
        lease.release().await?;
        result?;
        progress.finish();
        tracing::info!("run committed");
        Ok(report)
    }
    .instrument(span)
    .await
}

async fn stages(
    ctx: &SessionContext,
    engine: &Engine,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    zones: &BTreeMap<String, chrono_tz::Tz>,
    report: &mut LayeringReport,
    progress: &mut Progress,
) -> Result<()> {
    let run_id = report.run_id.clone();
    let t = Instant::now();
    progress.stage("ods: scanning raw folders and writing ODS files");
    let (ods, received) = if args.incremental {
        let inc = load_ods_incremental(ctx, store, args, &run_id, progress).await?;
        report.listing = inc.listing;
        (inc.summaries, inc.received)
    } else {
        load_ods(ctx, store, args, &run_id, progress).await?
    };
    report.ods = ods;
    report.rows_received += received.0;
    report.files_received += received.1;
    report.ods_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    progress.stage("dwd: deduplicating, deriving and writing DWD files");
    let chosen = dwd_targets(store, args).await?;
    let appended: BTreeMap<PartitionRef, Option<String>> = report
        .ods
        .iter()
        .filter_map(|(p, s)| Some((p.clone(), s.appended_to.clone()?)))
        .collect();
    let patch = dwd_patch::patchable(store, args, &chosen, &appended, &run_id).await?;
    let (dwd, received) = match patch {
        Some(priors) => {
            tracing::info!(
                dates = priors.len(),
                "patching the DWD dates with this run's new rows"
            );
            let (dwd, received, patched) = dwd_patch::patch_dwd(
                ctx, engine, store, args, zones, &chosen, &priors, &run_id, progress,
            )
            .await?;
            report.dwd_patch = Some(patched);
            (dwd, received)
        }
        None => build_dwd(ctx, engine, store, args, zones, &chosen, &run_id, progress).await?,
    };
    report.dwd = dwd;
    report.rows_received += received.0;
    report.files_received += received.1;
    report.dwd_secs = t.elapsed().as_secs_f64();
    if args.incremental {
        progress.stage("compacting small files");
        let mut grown: BTreeSet<(Table, PartitionRef)> = appended
            .keys()
            .map(|p| (Table::OdsEvent, p.clone()))
            .collect();
        if report.dwd_patch.is_some() {
            for p in report.dwd.keys() {
                grown.insert((Table::DwdTrkEvent, p.clone()));
                grown.insert((Table::DwdCorsError, p.clone()));
            }
        }
        report.compacted = compact::compact(ctx, store, args, &grown).await?;
    }
    Ok(())
}
