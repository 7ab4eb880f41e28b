//! The layering job: raw day folders → ODS (by UTC collection date) → DWD
//! (deduplicated, by local event date), exactly as layers.md says.
//!
//! 1. **ODS.** One distributed raw scan over every `(region, date)` folder;
//!    rows stream back and are split into valid rows, quarantine rows and
//!    load statistics per partition. The accounting invariant is checked
//!    for every partition before any of them is committed.
//! 2. **DWD.** Loading collection date `C` can change DWD dates
//!    `C-1-L ..= C+1`; each such date `D` is rebuilt from the committed ODS
//!    partitions `D-1 ..= D+1+L` alone, in one distributed query: rows are
//!    tagged with every target date whose window holds them, deduplicated
//!    per `(region, target date, event_id)`, kept when their local date is
//!    the target, and derived with the tauc UDFs. The winner of each
//!    `event_id` is picked by an aggregate (`first_value` ordered by
//!    `collector_ts, src_file, line_no`) joined back on its unique
//!    `(src_file, line_no)`, not by a `row_number()` window: the window
//!    plan failed under Ballista ("Expects PARTITION BY expression to be
//!    ordered") on some inputs. Because each target date
//!    reads only its own window, the result equals a rebuild from scratch
//!    whatever order the days were loaded in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{Days, NaiveDate, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Date32Type, Int64Type};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

use crate::commit::{self, PartitionRef};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::raw_scan::{
    Folder, KIND_REJECTED, KIND_STATS, KIND_VALID, RangeStats, RawEventsTable, RawSource,
};
use crate::regions::Regions;
use crate::session::Engine;
use crate::store::Location;
use crate::tables::{Table, conform};

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
        }
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
}

impl LayeringReport {
    /// Valid ODS rows over all loaded partitions.
    pub fn valid_rows(&self) -> u64 {
        self.ods.values().map(|s| s.valid_rows).sum()
    }
}

/// A new run id: UTC time and a random suffix, sortable by start.
pub fn new_run_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", Utc::now().format("%Y%m%dT%H%M%SZ"), &id[..8])
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
    tracing::info!(job = JOB, run_id = %run_id, dates = ?args.dates, regions = ?args.regions, "run started");
    let mut report = LayeringReport {
        run_id: run_id.clone(),
        ..Default::default()
    };

    let t = Instant::now();
    progress.stage("ods: scanning raw folders");
    report.ods = load_ods(ctx, &store, args, &run_id, progress).await?;
    report.ods_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    progress.stage("dwd: deduplicating and deriving");
    report.dwd = build_dwd(ctx, engine, &store, args, &zones, &run_id, progress).await?;
    report.dwd_secs = t.elapsed().as_secs_f64();
    progress.finish();
    tracing::info!(job = JOB, run_id = %run_id, "run committed");
    Ok(report)
}

#[derive(Default)]
struct OdsAcc {
    valid: Vec<RecordBatch>,
    rejected: Vec<RecordBatch>,
    summary: OdsSummary,
}

fn str_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| Error::Invariant(format!("internal: no string column '{name}'")))
}

/// Sum of a column, cast to Int64 (nulls ignored).
fn sum_i64(b: &RecordBatch, name: &str) -> Result<i64> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| Error::Invariant(format!("internal: no column '{name}'")))?;
    let col =
        datafusion::arrow::compute::cast(col, &datafusion::arrow::datatypes::DataType::Int64)?;
    Ok(col.as_primitive::<Int64Type>().iter().flatten().sum())
}

/// Splits a batch into groups of rows with the same key.
fn split_by<K: Ord + Clone>(
    b: &RecordBatch,
    key: impl Fn(usize) -> K,
) -> Result<Vec<(K, RecordBatch)>> {
    let keys: Vec<K> = (0..b.num_rows()).map(&key).collect();
    let distinct: BTreeSet<K> = keys.iter().cloned().collect();
    if distinct.len() == 1 {
        return Ok(vec![(keys[0].clone(), b.clone())]);
    }
    distinct
        .into_iter()
        .map(|k| {
            let mask: BooleanArray = keys.iter().map(|x| Some(*x == k)).collect();
            Ok((k, filter_record_batch(b, &mask)?))
        })
        .collect()
}

fn date_of(days: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(days as i64)
}

async fn load_ods(
    ctx: &SessionContext,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    run_id: &str,
    progress: &mut Progress,
) -> Result<BTreeMap<PartitionRef, OdsSummary>> {
    let started_at = Utc::now().timestamp_millis();
    let mut folders = Vec::new();
    let mut acc: BTreeMap<PartitionRef, OdsAcc> = BTreeMap::new();
    for region in &args.regions {
        for date in &args.dates {
            let rel = format!("{}/{region}/{}", args.env, date.format("%Y/%m/%d"));
            folders.push(Folder {
                region: region.clone(),
                date: *date,
                location: args.raw_root.join(&rel),
            });
            acc.insert(
                PartitionRef {
                    dt: *date,
                    region: region.clone(),
                },
                OdsAcc::default(),
            );
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
    let df = ctx.read_table(Arc::new(table))?;
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.try_next().await? {
        if batch.num_rows() == 0 {
            continue;
        }
        let kinds = str_col(&batch, "kind")?.clone();
        let regions = str_col(&batch, "region")?.clone();
        let dts = batch
            .column_by_name("dt")
            .ok_or_else(|| Error::Invariant("internal: no dt".into()))?
            .as_primitive::<Date32Type>()
            .clone();
        let groups = split_by(&batch, |i| {
            (
                kinds.value(i).to_string(),
                regions.value(i).to_string(),
                dts.value(i),
            )
        })?;
        for ((kind, region, dt), part) in groups {
            let key = PartitionRef {
                dt: date_of(dt),
                region,
            };
            let a = acc.get_mut(&key).ok_or_else(|| {
                Error::Invariant(format!("internal: scan returned unknown partition {key:?}"))
            })?;
            match kind.as_str() {
                KIND_VALID => {
                    a.summary.valid_rows += part.num_rows() as u64;
                    progress.advance(0, part.num_rows() as u64);
                    a.valid
                        .push(conform(&part, &Table::OdsEvent.schema(), &[])?);
                }
                KIND_REJECTED => {
                    let reasons = str_col(&part, "reason")?;
                    for r in reasons.iter().flatten() {
                        *a.summary.quarantined.entry(r.to_string()).or_default() += 1;
                    }
                    progress.advance(0, part.num_rows() as u64);
                    a.rejected
                        .push(quarantine_batch(&part, run_id, started_at)?);
                }
                KIND_STATS => {
                    let get = |c: &str| sum_i64(&part, c);
                    let s = &mut a.summary.stats;
                    s.files += get("files")?;
                    s.files_ignored += get("files_ignored")?;
                    s.bytes += get("bytes")?;
                    s.lines += get("lines")?;
                    s.blank_lines += get("blank_lines")?;
                    progress.advance(get("files")? as u64, 0);
                }
                other => {
                    return Err(Error::Invariant(format!(
                        "internal: unknown row kind '{other}'"
                    )));
                }
            }
        }
    }
    // The accounting invariant, for every partition, before any commit.
    for (p, a) in &acc {
        let s = &a.summary;
        let lhs = s.stats.lines - s.stats.blank_lines;
        let rhs = (s.valid_rows + s.quarantined_rows()) as i64;
        if lhs != rhs {
            return Err(Error::Invariant(format!(
                "accounting invariant failed for ods dt={} region={}: lines - blank_lines = {lhs} but valid + quarantined = {rhs}; nothing was committed",
                p.dt, p.region
            )));
        }
    }
    progress.stage("ods: committing");
    let finished_at = Utc::now().timestamp_millis();
    let mut out = BTreeMap::new();
    for (p, a) in acc {
        let stats = load_stats_batch(&a.summary, run_id, started_at, finished_at)?;
        for (table, batches) in [
            (Table::OdsEvent, a.valid),
            (Table::OdsQuarantine, a.rejected),
            (Table::OdsLoadStats, vec![stats]),
        ] {
            commit::commit_table(store, run_id, JOB, &args.warehouse, table, &p, batches).await?;
        }
        out.insert(p, a.summary);
    }
    Ok(out)
}

fn quarantine_batch(part: &RecordBatch, run_id: &str, detected_at: i64) -> Result<RecordBatch> {
    let n = part.num_rows();
    let run: ArrayRef = Arc::new(StringArray::from(vec![run_id; n]));
    let at: ArrayRef =
        Arc::new(TimestampMillisecondArray::from(vec![detected_at; n]).with_timezone("UTC"));
    let base = conform(
        part,
        &Arc::new(datafusion::arrow::datatypes::Schema::new(
            Table::OdsQuarantine.schema().fields()[..5].to_vec(),
        )),
        &[],
    )?;
    let mut cols = base.columns().to_vec();
    cols.push(run);
    cols.push(at);
    Ok(RecordBatch::try_new(Table::OdsQuarantine.schema(), cols)?)
}

fn load_stats_batch(
    s: &OdsSummary,
    run_id: &str,
    started: i64,
    finished: i64,
) -> Result<RecordBatch> {
    let i = |v: i64| -> ArrayRef { Arc::new(Int64Array::from(vec![v])) };
    let ts = |v: i64| -> ArrayRef {
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

/// Registers one ODS partition's committed files as a table; `None` when
/// the partition does not exist or is empty.
async fn register_ods_partition(
    ctx: &SessionContext,
    store: &dyn ObjectStore,
    warehouse: &Location,
    p: &PartitionRef,
    name: &str,
) -> Result<Option<u64>> {
    let table = Table::OdsEvent.location(warehouse);
    let Some((manifest, urls)) = commit::committed_files(store, &table, p).await? else {
        return Ok(None);
    };
    if urls.is_empty() {
        return Ok(Some(0));
    }
    let paths = urls
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<datafusion::common::Result<Vec<_>>>()?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(paths)
        .with_listing_options(options)
        .with_schema(Table::OdsEvent.schema());
    ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    Ok(Some(manifest.rows))
}

/// Registers `dim_user_raw` from `{warehouse}/dim/dim_user/` (CSV or
/// Parquet).
async fn register_dim_user(
    ctx: &SessionContext,
    engine: &Engine,
    warehouse: &Location,
) -> Result<()> {
    let Some(table) = crate::warehouse::dim_table(ctx, engine, warehouse, "dim_user").await? else {
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

fn dwd_sql(
    ods_tables: &[(String, PartitionRef)],
    targets: &[(PartitionRef, String)],
    lateness_days: i64,
) -> String {
    let ods_union = ods_tables
        .iter()
        .map(|(name, p)| {
            format!(
                "SELECT *, DATE '{}' AS dt, '{}' AS region FROM {name}",
                p.dt, p.region
            )
        })
        .collect::<Vec<_>>()
        .join("\n    UNION ALL ");
    let values = targets
        .iter()
        .map(|(p, tz)| format!("('{}', DATE '{}', '{tz}')", p.region, p.dt))
        .collect::<Vec<_>>()
        .join(", ");
    let after = 1 + lateness_days;
    format!(
        r#"
WITH ods AS (
    {ods_union}
),
targets AS (
    SELECT * FROM (VALUES {values}) AS t(t_region, target_dt, tz)
),
tagged AS (
    SELECT o.*, t.target_dt, t.tz
    FROM ods o JOIN targets t
      ON o.region = t.t_region
     AND o.dt >= t.target_dt - INTERVAL '1' DAY
     AND o.dt <= t.target_dt + INTERVAL '{after}' DAY
),
ranked AS (
    SELECT region AS k_region, target_dt AS k_target, event_id AS k_event,
        count(*) AS copies,
        first_value(src_file ORDER BY collector_ts, src_file, line_no) AS k_file,
        first_value(line_no ORDER BY collector_ts, src_file, line_no) AS k_line
    FROM tagged
    GROUP BY region, target_dt, event_id
),
kept AS (
    SELECT t.*, r.copies, tauc_event_ts(t.client_ts, t.sent_ts, t.collector_ts) AS event_ts
    FROM tagged t JOIN ranked r
      ON t.region = r.k_region AND t.target_dt = r.k_target
     AND t.src_file = r.k_file AND t.line_no = r.k_line
),
dated AS (
    SELECT *, tauc_local_ts(event_ts, tz) AS local_ts, tauc_local_date(event_ts, tz) AS local_dt
    FROM kept
),
users AS (
    SELECT user_id AS u_user_id, min(gender) AS u_gender, min(birth_date) AS u_birth_date
    FROM dim_user_raw WHERE user_id IS NOT NULL AND user_id <> ''
    GROUP BY user_id
),
derived AS (
    SELECT
        k.region, k.target_dt, k.copies,
        k.event_id, k.event_type, k.event_ts, k.local_ts,
        CAST(date_part('hour', k.local_ts) AS INT) AS local_hour,
        tauc_lateness_ms(k.event_ts, k.collector_ts, k.dt) AS lateness_ms,
        tauc_ts_clamped(k.client_ts, k.sent_ts, k.collector_ts) AS ts_clamped,
        COALESCE(k.user_id, 'd:' || k.device_id) AS user_key,
        k.user_id, k.device_id, k.device_id_type, k.target_type, k.target_id,
        k.page_url,
        tauc_norm_path(k.page_url) AS page_path,
        tauc_norm_path(k.from_url) AS from_path,
        tauc_norm_path(k.to_url) AS to_path,
        k.page_enter_ts, k.page_leave_ts,
        CASE WHEN k.event_type = 'page_leave' AND k.page_leave_ts >= k.page_enter_ts
             THEN least(CAST(k.page_leave_ts AS BIGINT) - CAST(k.page_enter_ts AS BIGINT), 1800000)
        END AS duration_ms,
        k.geo_lat, k.geo_lon,
        tauc_geocode(k.geo_lat, k.geo_lon) AS place,
        tauc_gender(u.u_gender) AS gender,
        CASE WHEN k.user_id IS NULL THEN 'unknown'
             ELSE tauc_age_band(u.u_birth_date, k.local_dt) END AS age_band,
        tauc_user_agent(k.ua) AS agent,
        tauc_is_bot(k.ua) AS is_bot,
        k.app_version, k.extra,
        tauc_url_host(k.cors_url) AS req_host,
        tauc_norm_path(k.cors_url) AS req_path_tpl,
        COALESCE(upper(k.cors_method), 'UNKNOWN') AS req_method,
        COALESCE(lower(k.cors_origin), '') AS req_origin,
        k.cors_status AS status,
        tauc_err_class(k.cors_error, k.cors_status) AS err_class,
        k.cors_error AS error,
        k.cors_duration_ms
    FROM dated k LEFT JOIN users u ON k.user_id = u.u_user_id
    WHERE k.local_dt = k.target_dt
)
SELECT
    region, target_dt, copies, event_id, event_type, event_ts, local_ts, local_hour,
    lateness_ms, ts_clamped, user_key, user_id, device_id, device_id_type,
    target_type, target_id, page_url, page_path, from_path, to_path,
    page_enter_ts, page_leave_ts, duration_ms, geo_lat, geo_lon,
    get_field(place, 'city') AS city, get_field(place, 'country') AS country,
    gender, age_band,
    get_field(agent, 'browser_family') AS browser_family,
    get_field(agent, 'browser_major') AS browser_major,
    get_field(agent, 'os_family') AS os_family,
    is_bot, app_version, extra,
    req_host, req_path_tpl, req_method, req_origin, status, err_class, error, cors_duration_ms,
    CASE WHEN event_type = 'cors_error'
         THEN tauc_fingerprint(err_class, req_method, req_host, req_path_tpl, req_origin) END AS fingerprint
FROM derived
"#
    )
}

#[derive(Default)]
struct DwdAcc {
    trk: Vec<RecordBatch>,
    cors: Vec<RecordBatch>,
    summary: DwdSummary,
}

async fn build_dwd(
    ctx: &SessionContext,
    engine: &Engine,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    zones: &BTreeMap<String, chrono_tz::Tz>,
    run_id: &str,
    progress: &mut Progress,
) -> Result<BTreeMap<PartitionRef, DwdSummary>> {
    let targets_dates = args.dwd_dates();
    let l = args.lateness_days as u64;
    let mut acc: BTreeMap<PartitionRef, DwdAcc> = BTreeMap::new();
    let mut targets = Vec::new();
    let mut needed: BTreeSet<PartitionRef> = BTreeSet::new();
    for region in &args.regions {
        for d in &targets_dates {
            let p = PartitionRef {
                dt: *d,
                region: region.clone(),
            };
            targets.push((p.clone(), zones[region].name().to_string()));
            acc.insert(p, DwdAcc::default());
            let mut c = *d - Days::new(1);
            while c <= *d + Days::new(1 + l) {
                needed.insert(PartitionRef {
                    dt: c,
                    region: region.clone(),
                });
                c = c + Days::new(1);
            }
        }
    }
    // Register the committed ODS partitions of every window.
    let mut ods_tables = Vec::new();
    let mut ods_rows: HashMap<PartitionRef, u64> = HashMap::new();
    for p in &needed {
        let name = format!("ods_{}_{}", p.region, p.dt.format("%Y%m%d"));
        match register_ods_partition(ctx, store.as_ref(), &args.warehouse, p, &name).await? {
            Some(rows) if rows > 0 => {
                ods_rows.insert(p.clone(), rows);
                ods_tables.push((name, p.clone()));
            }
            _ => {}
        }
    }
    for (p, a) in acc.iter_mut() {
        let mut c = p.dt - Days::new(1);
        while c <= p.dt + Days::new(1 + l) {
            let key = PartitionRef {
                dt: c,
                region: p.region.clone(),
            };
            a.summary.rows_read += ods_rows.get(&key).copied().unwrap_or(0) as i64;
            c = c + Days::new(1);
        }
    }
    if !ods_tables.is_empty() {
        register_dim_user(ctx, engine, &args.warehouse).await?;
        let sql = dwd_sql(&ods_tables, &targets, args.lateness_days);
        tracing::debug!(sql = %sql, "dwd query");
        let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
        let trk_schema = Table::DwdTrkEvent.schema();
        let cors_schema = Table::DwdCorsError.schema();
        while let Some(batch) = stream.next().await.transpose()? {
            if batch.num_rows() == 0 {
                continue;
            }
            progress.advance(0, batch.num_rows() as u64);
            let regions = str_col(&batch, "region")?.clone();
            let types = str_col(&batch, "event_type")?.clone();
            let dts = batch
                .column_by_name("target_dt")
                .ok_or_else(|| Error::Invariant("internal: no target_dt".into()))?
                .as_primitive::<Date32Type>()
                .clone();
            let groups = split_by(&batch, |i| {
                (
                    dts.value(i),
                    regions.value(i).to_string(),
                    types.value(i) == "cors_error",
                )
            })?;
            for ((dt, region, is_cors), part) in groups {
                let key = PartitionRef {
                    dt: date_of(dt),
                    region,
                };
                let a = acc.get_mut(&key).ok_or_else(|| {
                    Error::Invariant(format!("internal: dwd returned unknown partition {key:?}"))
                })?;
                // every kept row stands for `copies` rows read
                let copies = sum_i64(&part, "copies")? - part.num_rows() as i64;
                a.summary.duplicates += copies;
                if is_cors {
                    a.summary.cors_rows += part.num_rows() as i64;
                    a.cors.push(conform(
                        &part,
                        &cors_schema,
                        &[("duration_ms", "cors_duration_ms")],
                    )?);
                } else {
                    a.summary.trk_rows += part.num_rows() as i64;
                    a.trk.push(conform(&part, &trk_schema, &[])?);
                }
            }
        }
        for (name, _) in &ods_tables {
            ctx.deregister_table(name.as_str())?;
        }
        ctx.deregister_table("dim_user_raw")?;
    }
    progress.stage("dwd: committing");
    let mut out = BTreeMap::new();
    for (p, a) in acc {
        let s = a.summary.clone();
        let stats = RecordBatch::try_new(
            Table::DwdDedupeStats.schema(),
            vec![
                Arc::new(Int64Array::from(vec![s.rows_read])),
                Arc::new(Int64Array::from(vec![s.duplicates])),
                Arc::new(Int64Array::from(vec![s.trk_rows + s.cors_rows])),
                Arc::new(StringArray::from(vec![run_id])),
            ],
        )?;
        for (table, batches) in [
            (Table::DwdTrkEvent, a.trk),
            (Table::DwdCorsError, a.cors),
            (Table::DwdDedupeStats, vec![stats]),
        ] {
            commit::commit_table(store, run_id, JOB, &args.warehouse, table, &p, batches).await?;
        }
        out.insert(p, s);
    }
    Ok(out)
}
