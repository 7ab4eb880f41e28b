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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, UInt64Type};
use datafusion::common::Column;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::FunctionRegistry;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::{count, min};
use datafusion::logical_expr::{
    Expr, Extension, JoinType, LogicalPlan, LogicalPlanBuilder, case, when,
};
use datafusion::prelude::{DataFrame, SessionContext, col, lit};
use futures::TryStreamExt;
use object_store::ObjectStore;
use tracing::Instrument;

use crate::derive::regions::Regions;
use crate::engine::client::submitted;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::ingest::raw_scan::{
    Folder, KIND_REJECTED, KIND_VALID, RangeStats, RawEventsTable, RawSource, STAT_COLUMNS,
};
use crate::jobs::progress::Progress;
use crate::store::Location;
use crate::warehouse::commit::{self, PartitionRef, WriteOutcome, new_run_id};
use crate::warehouse::table::{WarehouseTable, event_id_table};
use crate::warehouse::tables::Table;
use crate::warehouse::tables::date_value;
use crate::warehouse::writer::{FileLimits, TABLE_COLUMN, WriteNode, WriteSpec};
use crate::warehouse::{doubled, lease};

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
}

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

/// What a layering run did.
#[derive(Debug, Clone, Default)]
pub struct LayeringReport {
    /// The run's id (in every file name and manifest it wrote).
    pub run_id: String,
    /// ODS partitions loaded.
    pub ods: BTreeMap<PartitionRef, OdsSummary>,
    /// DWD partitions rebuilt.
    pub dwd: BTreeMap<PartitionRef, DwdSummary>,
    /// Seconds the ODS stage took.
    pub ods_secs: f64,
    /// Seconds the DWD stage took.
    pub dwd_secs: f64,
    /// Result rows `tauc-job` received from the cluster (one per file
    /// written and per counter; never a data row).
    pub rows_received: u64,
    /// How many of those rows describe a data file.
    pub files_received: u64,
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
    let (ods, received) = load_ods(ctx, store, args, &run_id, progress).await?;
    report.ods = ods;
    report.rows_received += received.0;
    report.files_received += received.1;
    report.ods_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    progress.stage("dwd: deduplicating, deriving and writing DWD files");
    let (dwd, received) = build_dwd(ctx, engine, store, args, zones, &run_id, progress).await?;
    report.dwd = dwd;
    report.rows_received += received.0;
    report.files_received += received.1;
    report.dwd_secs = t.elapsed().as_secs_f64();
    Ok(())
}

/// How many times the DWD job runs when its output holds an event twice.
const DWD_ATTEMPTS: u32 = 3;

/// Runs the DWD query through the writer; on a cluster, checks that no new
/// DWD partition holds an `event_id` twice ([`doubled`]) and, if one does
/// (a stage Ballista ran twice after losing an executor), runs the job
/// again — a fresh job carries none of the lost one's stale outputs, and
/// the doubled attempt's files are strays the commit deletes. The run
/// fails, nothing of the DWD stage committed, when every attempt was
/// doubled.
async fn write_dwd(
    ctx: &SessionContext,
    df: DataFrame,
    spec: WriteSpec,
    warehouse: &Location,
) -> Result<WriteOutcome> {
    let tables = [Table::DwdTrkEvent, Table::DwdCorsError];
    let mut attempt = 1;
    loop {
        let outcome = write(df.clone(), spec.clone(), "tauc layering: dwd").await?;
        if !submitted::on_cluster(ctx) {
            return Ok(outcome);
        }
        let checked = Instant::now();
        let found = doubled::doubled_events(
            ctx,
            warehouse,
            &outcome,
            &tables,
            "tauc layering: dwd check",
            submitted::collect,
        )
        .await?;
        tracing::info!(
            secs = checked.elapsed().as_secs_f64(),
            doubled = found.len(),
            "DWD output checked for events written twice"
        );
        let Some(what) = doubled::describe(&found) else {
            return Ok(outcome);
        };
        if attempt == DWD_ATTEMPTS {
            return Err(Error::Invariant(format!(
                "{what}, in each of {DWD_ATTEMPTS} attempts; nothing of the DWD stage was committed: run the same command again"
            )));
        }
        tracing::warn!(
            attempt,
            "{what}: running the DWD job again (nothing of it is committed)"
        );
        attempt += 1;
    }
}

/// Runs `df` through the warehouse writer as the Ballista job `name` and
/// gathers what it reports.
pub async fn write(df: DataFrame, spec: WriteSpec, name: &str) -> Result<WriteOutcome> {
    let (state, plan) = df.into_parts();
    let node = WriteNode::new(plan, spec)?;
    let plan = LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    });
    let batches = submitted::collect(DataFrame::new(state, plan), name).await?;
    WriteOutcome::from_batches(&batches)
}

/// The first stage: every raw folder of the run scanned and written to ODS
/// by the executors; returns each partition's summary and the result rows
/// received.
async fn load_ods(
    ctx: &SessionContext,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    run_id: &str,
    progress: &mut Progress,
) -> Result<(BTreeMap<PartitionRef, OdsSummary>, (u64, u64))> {
    let started_at = Utc::now().timestamp_millis();
    let mut folders = Vec::new();
    let mut partitions = Vec::new();
    for region in &args.regions {
        for date in &args.dates {
            let rel = format!("{}/{region}/{}", args.env, date.format("%Y/%m/%d"));
            folders.push(Folder {
                region: region.clone(),
                date: *date,
                location: args.raw_root.join(&rel),
            });
            partitions.push(PartitionRef {
                dt: *date,
                region: region.clone(),
            });
        }
    }
    let table = RawEventsTable {
        source: RawSource {
            folders,
            ranges: args.ranges_per_folder.max(1),
            fetch_concurrency: args.fetch_concurrency.max(1),
            lateness_days: args.lateness_days,
        },
    };
    let no_table = lit(ScalarValue::Utf8(None));
    let detected_at = ScalarValue::TimestampMillisecond(Some(started_at), Some("UTC".into()));
    let df = ctx
        .read_table(Arc::new(table))?
        .with_column(
            TABLE_COLUMN,
            case(col("kind"))
                .when(lit(KIND_VALID), lit(Table::OdsEvent.path()))
                .when(lit(KIND_REJECTED), lit(Table::OdsQuarantine.path()))
                .otherwise(no_table)?,
        )?
        .with_column("run_id", lit(run_id))?
        .with_column("detected_at", lit(detected_at))?;
    let spec = WriteSpec {
        warehouse: args.warehouse.clone(),
        run_id: run_id.to_string(),
        counters: STAT_COLUMNS.iter().map(|c| c.to_string()).collect(),
        value_counts: vec!["reason".into()],
        limits: args.file_limits,
    };
    let outcome = write(df, spec, "tauc layering: ods").await?;
    let mut summaries = BTreeMap::new();
    for p in &partitions {
        let s = ods_summary(&outcome, p)?;
        progress.advance(s.stats.files as u64, s.valid_rows + s.quarantined_rows());
        summaries.insert(p.clone(), s);
    }
    only_into(&outcome, &summaries, "the scan")?;
    // a stop asked while the job ran: nothing of this stage commits
    submitted::check()?;
    progress.stage("ods: committing");
    let finished_at = Utc::now().timestamp_millis();
    for (p, summary) in &summaries {
        commit_written(
            store,
            args,
            run_id,
            &outcome,
            p,
            [Table::OdsEvent, Table::OdsQuarantine],
        )
        .await?;
        let stats = load_stats_batch(summary, run_id, started_at, finished_at)?;
        commit::commit_table(
            store,
            run_id,
            JOB,
            &args.warehouse,
            Table::OdsLoadStats,
            p,
            vec![stats],
        )
        .await?;
    }
    Ok((summaries, outcome.received()))
}

/// Fails when the writers wrote into a partition the run is not
/// responsible for (a bug; its files stay unlisted strays).
fn only_into<S>(
    outcome: &WriteOutcome,
    summaries: &BTreeMap<PartitionRef, S>,
    what: &str,
) -> Result<()> {
    match outcome
        .partitions()
        .into_iter()
        .find(|p| !summaries.contains_key(p))
    {
        Some(p) => Err(Error::Invariant(format!(
            "internal: {what} wrote into partition dt={} region={}, which this run does not build; nothing was committed",
            p.dt, p.region
        ))),
        None => Ok(()),
    }
}

/// Commits partition `p` of each of `tables` with the files the writers
/// reported (none: an empty partition).
async fn commit_written(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    run_id: &str,
    outcome: &WriteOutcome,
    p: &PartitionRef,
    tables: [Table; 2],
) -> Result<()> {
    for table in tables {
        let dir = p.location(&table.location(&args.warehouse));
        let files = outcome.files_of(table, p);
        commit::commit_files(store.as_ref(), run_id, JOB, table, &dir, p, &files).await?;
    }
    Ok(())
}

/// One ODS partition's counters from the writers' report, with the
/// accounting invariant checked: `lines - blank_lines = valid + quarantined`.
fn ods_summary(outcome: &WriteOutcome, p: &PartitionRef) -> Result<OdsSummary> {
    let stats = RangeStats {
        files: outcome.count(p, "files"),
        files_ignored: outcome.count(p, "files_ignored"),
        bytes: outcome.count(p, "bytes"),
        lines: outcome.count(p, "lines"),
        blank_lines: outcome.count(p, "blank_lines"),
    };
    let quarantined: BTreeMap<String, u64> = outcome
        .counts_with_prefix(p, "reason=")
        .into_iter()
        .map(|(k, v)| (k, v as u64))
        .collect();
    let s = OdsSummary {
        stats,
        valid_rows: outcome.rows(Table::OdsEvent, p),
        quarantined,
    };
    let lhs = s.stats.lines - s.stats.blank_lines;
    let rhs = (s.valid_rows + s.quarantined_rows()) as i64;
    let written = outcome.rows(Table::OdsQuarantine, p);
    if lhs != rhs || written != s.quarantined_rows() {
        return Err(Error::Invariant(format!(
            "accounting invariant failed for ods dt={} region={}: lines - blank_lines = {lhs} but valid + quarantined = {rhs} (quarantine files hold {written} rows); nothing was committed",
            p.dt, p.region
        )));
    }
    Ok(s)
}

fn load_stats_batch(
    s: &OdsSummary,
    run_id: &str,
    started: i64,
    finished: i64,
) -> Result<RecordBatch> {
    let i = |v: i64| -> datafusion::arrow::array::ArrayRef { Arc::new(Int64Array::from(vec![v])) };
    let ts = |v: i64| -> datafusion::arrow::array::ArrayRef {
        Arc::new(TimestampMillisecondArray::from(vec![v]).with_timezone("UTC"))
    };
    Ok(RecordBatch::try_new(
        Table::OdsLoadStats.schema(),
        vec![
            i(s.stats.files),
            i(s.stats.files_ignored),
            i(s.stats.bytes),
            i(s.stats.lines),
            i(s.stats.blank_lines),
            i(s.valid_rows as i64),
            i(s.quarantined_rows() as i64),
            Arc::new(StringArray::from(vec![run_id])),
            ts(started),
            ts(finished),
        ],
    )?)
}

/// Registers `dim_user_raw` from `{warehouse}/dim/dim_user/` (CSV or
/// Parquet).
async fn register_dim_user(
    ctx: &SessionContext,
    engine: &Engine,
    warehouse: &Location,
) -> Result<()> {
    let Some(table) =
        crate::warehouse::table::dim_table(ctx, &engine.registry, warehouse, "dim_user").await?
    else {
        return Err(Error::MissingInput(format!(
            "dim table dim_user not found: no .csv or .parquet file under {}; the layering job needs it for gender and age_band (columns user_id,gender,birth_date; `tauc-job sample` writes one)",
            warehouse.join("dim/dim_user")
        )));
    };
    for c in ["user_id", "gender", "birth_date"] {
        if table.schema().field_with_name(c).is_err() {
            return Err(Error::config(format!(
                "dim table dim_user under {} has no column '{c}' (expected user_id,gender,birth_date)",
                warehouse.join("dim/dim_user")
            )));
        }
    }
    ctx.register_table("dim_user_raw", table)?;
    Ok(())
}

/// The ODS columns a kept DWD row carries on to the derivations, plus the
/// three computed per row (`tz`, `event_ts`, `local_dt`); the per-date
/// dedupe packs them into one struct per winner.
const KEPT: &[&str] = &[
    "event_id",
    "event_type",
    "client_ts",
    "sent_ts",
    "collector_ts",
    "device_id",
    "device_id_type",
    "user_id",
    "app_version",
    "ua",
    "geo_lat",
    "geo_lon",
    "page_url",
    "from_url",
    "to_url",
    "target_type",
    "target_id",
    "page_enter_ts",
    "page_leave_ts",
    "cors_url",
    "cors_method",
    "cors_origin",
    "cors_status",
    "cors_error",
    "cors_duration_ms",
    "extra",
    "dt",
    "tz",
    "event_ts",
    "local_dt",
];

/// `(region = 'r' AND column IN (DATE …)) OR …` over `dates` per region.
fn per_region_dates<'a>(column: &str, dates: impl Iterator<Item = (&'a str, NaiveDate)>) -> Expr {
    let mut by_region: BTreeMap<&str, Vec<Expr>> = BTreeMap::new();
    for (region, d) in dates {
        by_region
            .entry(region)
            .or_default()
            .push(lit(date_value(d)));
    }
    by_region
        .into_iter()
        .map(|(region, dates)| {
            col("region")
                .eq(lit(region))
                .and(col(column).in_list(dates, false))
        })
        .reduce(Expr::or)
        .unwrap_or_else(|| lit(false))
}

/// `INTERVAL '{days}' DAY`.
fn days(days: i64) -> Expr {
    lit(ScalarValue::new_interval_mdn(0, days as i32, 0))
}

/// `column` qualified by the relation alias `table`.
fn qcol(table: &str, column: &str) -> Expr {
    Expr::Column(Column::new(Some(table), column))
}

/// The columns a copied event's winner is packed into, the order keys of
/// the dedupe first (`min` of the packed rows is the winner), then the
/// kept columns.
fn packed_columns() -> Vec<&'static str> {
    let keys = ["collector_ts", "src_file", "line_no"];
    keys.into_iter()
        .chain(KEPT.iter().copied().filter(|c| !keys.contains(c)))
        .collect()
}

/// A tauc function of the session (registered on every context).
fn udf(ctx: &SessionContext, name: &str, args: Vec<Expr>) -> Result<Expr> {
    Ok(ctx.udf(name)?.call(args))
}

/// The DWD query's input: the read set's ODS rows (`ods_parts`, from the
/// registered `ods_src`) with their time zone (`CASE region WHEN …`, from
/// `targets`), event time and local date.
async fn timed_ods(
    ctx: &SessionContext,
    ods_parts: &BTreeSet<PartitionRef>,
    targets: &[(PartitionRef, String)],
) -> Result<DataFrame> {
    let read_set = per_region_dates("dt", ods_parts.iter().map(|p| (p.region.as_str(), p.dt)));
    let zones: BTreeMap<&str, &str> = targets
        .iter()
        .map(|(p, tz)| (p.region.as_str(), tz.as_str()))
        .collect();
    let mut zone = case(col("region"));
    for (region, tz) in zones {
        zone = zone.when(lit(region), lit(tz));
    }
    let event_ts = udf(
        ctx,
        "tauc_event_ts",
        vec![col("client_ts"), col("sent_ts"), col("collector_ts")],
    )?;
    let local_dt = udf(ctx, "tauc_local_date", vec![col("event_ts"), col("tz")])?;
    Ok(ctx
        .table("ods_src")
        .await?
        .filter(read_set)?
        .with_column("tz", zone.end()?)?
        .with_column("event_ts", event_ts)?
        .with_column("local_dt", local_dt)?)
}

/// The rows the DWD dates are derived from (registered as `dwd_kept` for
/// `layering/dwd.sql`): per kept event and DWD date `target_dt`, its
/// [`KEPT`] columns and `copies`, the rows read that it stands for.
///
/// A row whose event id occurs once in the read set (nearly all) is its
/// own kept row, on its own local date, when that date is a target and its
/// collection date lies in that date's window. Only rows whose id is in
/// `copied` (the ids seen more than once, found by a job of their own
/// before this one: [`register_copied_ids`]) go through the per-target-date
/// dedupe of layers.md, whose window — and so whose winner — depends on
/// the DWD date being built; the winner's columns come out of the dedupe
/// aggregate itself, packed in one binary value whose smallest is the
/// winner (`engine::plan::row_pack`: a struct per group held ~11 KB a copied
/// event). Without copies there is no dedupe at all.
///
/// `copied` is a file of known size, so its two joins (anti, semi) are
/// broadcast hash joins: the ODS rows are read where they are and never
/// shuffled or sorted by event id. (Counting the copies in this query
/// instead, an aggregate of unknown size, made both joins sort-merge
/// joins: two shuffles and two sorts of every ODS row, 21 of the 31 GB
/// spilled at SF 10.) The zones and the target dates are expressions, not
/// joins with small tables: a join on `region` alone (or `region,
/// local_dt`) hash-shuffles every row of a region into one partition, so a
/// one-region day ran its DWD stage on one task (one core, one executor).
async fn kept_rows(
    ctx: &SessionContext,
    ods: DataFrame,
    row_type: &str,
    targets: &[(PartitionRef, String)],
    lateness_days: i64,
    any_copied: bool,
) -> Result<DataFrame> {
    let after = days(1 + lateness_days);
    // the kept rows' columns unqualified (as the view names them)
    let kept =
        |table: &str| -> Vec<Expr> { KEPT.iter().map(|c| qcol(table, c).alias(*c)).collect() };
    let copied = || async { Ok::<_, Error>(ctx.table("copied").await?.alias("c")?) };
    let ods = ods.alias("o")?;

    let mut alone = ods.clone();
    if any_copied {
        alone = alone.join(
            copied().await?,
            JoinType::LeftAnti,
            &["o.event_id"],
            &["c.event_id"],
            None,
        )?;
    }
    let target_dates = per_region_dates(
        "local_dt",
        targets.iter().map(|(p, _)| (p.region.as_str(), p.dt)),
    );
    let in_own_window = col("dt")
        .gt_eq(col("local_dt") - days(1))
        .and(col("dt").lt_eq(col("local_dt") + after.clone()));
    let singles = alone.filter(target_dates.and(in_own_window))?.select(
        [
            qcol("o", "region").alias("region"),
            qcol("o", "local_dt").alias("target_dt"),
            lit(1i64).alias("copies"),
        ]
        .into_iter()
        .chain(kept("o"))
        .collect::<Vec<_>>(),
    )?;
    if !any_copied {
        return Ok(singles);
    }

    // every DWD date whose window holds the row, for the copied ids only
    let rows = targets
        .iter()
        .map(|(p, _)| vec![lit(p.region.as_str()), lit(date_value(p.dt))])
        .collect();
    let values = LogicalPlanBuilder::values(rows)?.build()?;
    let target_list = DataFrame::new(ctx.state(), values)
        .select(vec![
            col("column1").alias("t_region"),
            col("column2").alias("target_dt"),
        ])?
        .alias("t")?;
    let window = qcol("o", "dt")
        .gt_eq(qcol("t", "target_dt") - days(1))
        .and(qcol("o", "dt").lt_eq(qcol("t", "target_dt") + after));
    let packed = packed_columns()
        .into_iter()
        .map(|c| qcol("o", c))
        .collect::<Vec<_>>();
    let pack = udf(ctx, "tauc_pack_row", packed)?;
    let unpack = udf(ctx, "tauc_unpack_row", vec![col("w"), lit(row_type)])?;
    let winners = ods
        .join(
            target_list,
            JoinType::Inner,
            &["o.region"],
            &["t.t_region"],
            Some(window),
        )?
        .join(
            copied().await?,
            JoinType::LeftSemi,
            &["o.event_id"],
            &["c.event_id"],
            None,
        )?
        .aggregate(
            vec![
                qcol("o", "region"),
                qcol("t", "target_dt"),
                qcol("o", "event_id"),
            ],
            vec![count(lit(1i64)).alias("copies"), min(pack).alias("w")],
        )?
        // (renamed on the way: DataFusion 55's `push_down_leaf_projections`
        // fails on `o.region AS region` below the `get_field`s)
        .select(vec![
            qcol("o", "region").alias("p_region"),
            qcol("t", "target_dt").alias("p_target"),
            col("copies"),
            unpack.alias("r"),
        ])?;
    let unpacked = [
        col("p_region").alias("region"),
        col("p_target").alias("target_dt"),
        col("copies"),
    ]
    .into_iter()
    .chain(KEPT.iter().map(|c| get_field(col("r"), *c).alias(*c)))
    .collect::<Vec<_>>();
    Ok(singles.union(winners.select(unpacked)?)?)
}

/// The DWD query: [`kept_rows`] registered as `dwd_kept`, derived by the
/// static `layering/dwd.sql`, each row marked with the table it goes to.
async fn dwd_query(ctx: &SessionContext) -> Result<DataFrame> {
    let table = when(
        col("event_type").eq(lit("cors_error")),
        lit(Table::DwdCorsError.path()),
    )
    .otherwise(lit(Table::DwdTrkEvent.path()))?;
    Ok(ctx
        .sql(include_str!("layering/dwd.sql"))
        .await?
        .with_column(TABLE_COLUMN, table)?)
}

/// Where a run keeps its intermediate files in the warehouse:
/// `{warehouse}/_tmp/{run_id}/`, removed when its DWD stage ends.
const SCRATCH: &str = "_tmp";

/// Finds the event ids that occur more than once in the read set (`ods`,
/// from [`timed_ods`]) in a job of their own, whose executors write them as Parquet
/// under `scratch`, and registers them as the table `copied`; returns how
/// many. Only their number reaches this process. Counted per event id
/// alone, not per region and id: with one region the filter makes
/// `region` a constant, and DataFusion then runs a count per region and id
/// as a partially ordered aggregate that drains its groups a batch at a
/// time, renumbering the rest (quadratic: 42 s of CPU at SF 10).
async fn register_copied_ids(
    ctx: &SessionContext,
    scratch: &Location,
    ods: &DataFrame,
) -> Result<u64> {
    let dir = scratch.join("copied_ids");
    let ids = ods
        .clone()
        .aggregate(vec![col("event_id")], vec![count(lit(1i64)).alias("n")])?
        .filter(col("n").gt(lit(1i64)))?
        .select_columns(&["event_id"])?;
    let (state, plan) = ids.into_parts();
    let parquet = format_as_file_type(Arc::new(ParquetFormatFactory::new()));
    let plan =
        LogicalPlanBuilder::copy_to(plan, dir.url(), parquet, HashMap::new(), vec![])?.build()?;
    let written =
        submitted::collect(DataFrame::new(state, plan), "tauc layering: dwd copied ids").await?;
    // The count decides whether the DWD query joins the ids at all: a
    // result of another shape is an error, never "no copies".
    // A re-submitted job (a lost executor) writes its ids again beside the
    // first attempt's files: the joins below only ask whether an id is in
    // `copied`, so a doubled id changes nothing.
    let rows: usize = written.iter().map(|b| b.num_rows()).sum();
    let count = written
        .iter()
        .find(|b| rows == 1 && b.num_rows() == 1)
        .and_then(|b| b.column(0).as_primitive_opt::<UInt64Type>())
        .map(|n| n.value(0))
        .ok_or_else(|| {
            Error::Invariant(format!(
                "the copied-ids job did not answer one count ({written:?}); nothing was committed: run the same command again"
            ))
        })?;
    ctx.register_table(
        "copied",
        event_id_table(vec![ListingTableUrl::parse(dir.url())?])?,
    )?;
    tracing::info!(
        event_ids = count,
        "event ids seen more than once in the read set"
    );
    Ok(count)
}

/// `ctx` planning equi-joins as hash joins, for the DWD query: Ballista
/// makes them sort-merge joins by default (a hash join cannot spill),
/// which sorts every row on both sides; with the broadcast `copied` ids
/// and the user dimension as the only build sides, the hash joins hold
/// nothing of the day's rows.
fn with_hash_joins(ctx: &SessionContext) -> SessionContext {
    let mut state = ctx.state();
    state.config_mut().options_mut().optimizer.prefer_hash_join = true;
    SessionContext::new_with_state(state)
}

/// The second stage: every DWD date the loaded days can change, rebuilt
/// from its ODS window and written by the executors; returns each
/// partition's summary and the result rows received.
async fn build_dwd(
    ctx: &SessionContext,
    engine: &Engine,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    zones: &BTreeMap<String, chrono_tz::Tz>,
    run_id: &str,
    progress: &mut Progress,
) -> Result<(BTreeMap<PartitionRef, DwdSummary>, (u64, u64))> {
    let mut targets = Vec::new();
    for region in &args.regions {
        for d in args.dwd_dates() {
            let p = PartitionRef {
                dt: d,
                region: region.clone(),
            };
            targets.push((p, zones[region].name().to_string()));
        }
    }
    // Rows read per ODS partition, from its manifest (under this run's lease).
    let ods_table = Table::OdsEvent.location(&args.warehouse);
    let mut ods_rows: BTreeMap<PartitionRef, u64> = BTreeMap::new();
    for p in args.ods_read_set() {
        if let Some(m) = commit::read_manifest(store.as_ref(), &p.location(&ods_table)).await? {
            ods_rows.insert(p, m.rows);
        }
    }
    let present: BTreeSet<PartitionRef> = ods_rows
        .iter()
        .filter(|(_, rows)| **rows > 0)
        .map(|(p, _)| p.clone())
        .collect();
    let mut outcome = WriteOutcome::default();
    if !present.is_empty() {
        register_dim_user(ctx, engine, &args.warehouse).await?;
        ctx.register_table(
            "ods_src",
            Arc::new(WarehouseTable::new(Table::OdsEvent, &args.warehouse)),
        )?;
        let ods = timed_ods(ctx, &present, &targets).await?;
        let scratch = args.warehouse.join(&format!("{SCRATCH}/{run_id}"));
        let result = async {
            let copied = register_copied_ids(ctx, &scratch, &ods).await?;
            let packed = ods.clone().select_columns(&packed_columns())?;
            let row_type =
                DataType::Struct(packed.schema().as_arrow().fields().clone()).to_string();
            let kept = kept_rows(
                ctx,
                ods,
                &row_type,
                &targets,
                args.lateness_days,
                copied > 0,
            )
            .await?;
            ctx.register_table("dwd_kept", kept.into_view())?;
            let hashed = with_hash_joins(ctx);
            let df = dwd_query(&hashed).await?;
            tracing::debug!(plan = %df.logical_plan().display_indent(), "dwd query");
            let spec = WriteSpec {
                warehouse: args.warehouse.clone(),
                run_id: run_id.to_string(),
                counters: vec!["copies".into()],
                value_counts: vec![],
                limits: args.file_limits,
            };
            write_dwd(&hashed, df, spec, &args.warehouse).await
        }
        .await;
        if let Err(e) = commit::delete_prefix(store.as_ref(), &scratch).await {
            // left behind, unread: not a reason to lose the run
            tracing::warn!(error = %e, scratch = %scratch, "could not remove the run's scratch files; they are not part of any table and may be deleted by hand");
        }
        for t in ["ods_src", "dim_user_raw", "copied", "dwd_kept"] {
            ctx.deregister_table(t)?;
        }
        outcome = result?;
    }
    let mut summaries = BTreeMap::new();
    for (p, _) in &targets {
        let trk_rows = outcome.rows(Table::DwdTrkEvent, p) as i64;
        let cors_rows = outcome.rows(Table::DwdCorsError, p) as i64;
        // every kept row stands for `copies` rows read
        let duplicates = outcome.count(p, "copies") - trk_rows - cors_rows;
        let rows_read = window(p.dt, args.lateness_days)
            .map(|c| {
                let key = PartitionRef {
                    dt: c,
                    region: p.region.clone(),
                };
                ods_rows.get(&key).copied().unwrap_or(0) as i64
            })
            .sum();
        progress.advance(0, (trk_rows + cors_rows) as u64);
        let s = DwdSummary {
            rows_read,
            duplicates,
            trk_rows,
            cors_rows,
        };
        summaries.insert(p.clone(), s);
    }
    only_into(&outcome, &summaries, "the DWD query")?;
    // a stop asked while the job ran: nothing of this stage commits
    submitted::check()?;
    progress.stage("dwd: committing");
    for (p, s) in &summaries {
        commit_written(
            store,
            args,
            run_id,
            &outcome,
            p,
            [Table::DwdTrkEvent, Table::DwdCorsError],
        )
        .await?;
        let stats = RecordBatch::try_new(
            Table::DwdDedupeStats.schema(),
            vec![
                Arc::new(Int64Array::from(vec![s.rows_read])),
                Arc::new(Int64Array::from(vec![s.duplicates])),
                Arc::new(Int64Array::from(vec![s.trk_rows + s.cors_rows])),
                Arc::new(StringArray::from(vec![run_id])),
            ],
        )?;
        commit::commit_table(
            store,
            run_id,
            JOB,
            &args.warehouse,
            Table::DwdDedupeStats,
            p,
            vec![stats],
        )
        .await?;
    }
    Ok((summaries, outcome.received()))
}
