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
pub mod funnels;
pub mod settlement;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Date32Type, Float64Type, Int64Type};
use datafusion::execution::FunctionRegistry;
use datafusion::functions::core::expr_fn::named_struct;
use datafusion::functions_aggregate::expr_fn::{
    array_agg, avg, count, count_distinct, max, min, sum,
};
use datafusion::logical_expr::{Expr, ExprFunctionExt, case, cast as cast_expr, when};
use datafusion::prelude::{DataFrame, SessionContext, col, lit};
use futures::future::LocalBoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use tracing::Instrument;

use self::funnels::Funnel;
use self::settlement::{CONTRACT_COLUMNS, Contract};
use crate::derive::regions::Regions;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::jobs::progress::Progress;
use crate::store::Location;
use crate::warehouse::commit::new_run_id;
use crate::warehouse::commit::{self, PartitionRef};
use crate::warehouse::table::WarehouseTable;
use crate::warehouse::tables::Table;
use crate::warehouse::tables::date_value;

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
    /// Seconds the run took.
    pub secs: f64,
}

/// Reads the funnels: the flag's file or URL (which must exist), else the
/// warehouse's `conf/funnels.toml` when present.
pub async fn load_funnels(
    engine: &Engine,
    warehouse: &Location,
    flag: Option<&str>,
) -> Result<Option<(String, Vec<Funnel>)>> {
    let loc = match flag {
        Some(f) => Location::parse(f)?,
        None => warehouse.join("conf/funnels.toml"),
    };
    let store = engine.registry.for_location(&loc)?;
    let name = loc.to_string();
    let bytes = match store.get(&loc.path()).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) if flag.is_none() => return Ok(None),
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::config(format!(
                "funnels file {name} not found (--funnels); give an existing TOML file or URL"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::config(format!("funnels file {name}: not UTF-8 text")))?;
    Ok(Some((name.clone(), funnels::parse(&name, &text)?)))
}

/// Reads `dim_contract` (CSV or Parquet files under
/// `{warehouse}/dim/dim_contract/`), checking every row.
pub async fn load_contracts(engine: &Engine, warehouse: &Location) -> Result<Vec<Contract>> {
    let dir = warehouse.join("dim/dim_contract");
    let store = engine.registry.for_location(&dir)?;
    let mut files: Vec<_> = store.list(Some(&dir.path())).try_collect().await?;
    files.sort_by(|a, b| a.location.cmp(&b.location));
    let mut out = Vec::new();
    let mut seen = false;
    for f in &files {
        let key = f.location.as_ref();
        let url = dir.object_url(key);
        let (csv, parquet) = (key.ends_with(".csv"), key.ends_with(".parquet"));
        if !csv && !parquet {
            continue;
        }
        seen = true;
        let bytes = store.get(&f.location).await?.bytes().await?;
        if csv {
            out.extend(settlement::parse_contracts_csv(&url, &bytes)?);
            continue;
        }
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes,
            )?
            .build()?;
        let mut row = 0;
        for batch in reader {
            let batch = batch?;
            let cols = CONTRACT_COLUMNS
                .iter()
                .map(|c| {
                    let col = batch.column_by_name(c).ok_or_else(|| {
                        Error::BadInput(format!("{url}: dim_contract has no column '{c}'"))
                    })?;
                    Ok(cast(col, &DataType::Utf8)?)
                })
                .collect::<Result<Vec<_>>>()?;
            for i in 0..batch.num_rows() {
                row += 1;
                let values: Vec<Option<String>> = cols
                    .iter()
                    .map(|c| {
                        let s = c.as_string::<i32>();
                        s.is_valid(i).then(|| s.value(i).to_string())
                    })
                    .collect();
                out.push(settlement::contract_from_record(
                    &format!("{url} row {row}"),
                    &values,
                )?);
            }
        }
    }
    if !seen {
        return Err(Error::MissingInput(format!(
            "dim table dim_contract not found: no .csv or .parquet file under {dir}; the reports job needs it for ads_bill_settlement_1d (columns {}; `tauc-job sample` writes one)",
            CONTRACT_COLUMNS.join(",")
        )));
    }
    let mut ids = BTreeSet::new();
    for c in &out {
        if !ids.insert(c.contract_id.as_str()) {
            return Err(Error::BadInput(format!(
                "dim_contract under {dir}: contract_id '{}' appears twice; each contract needs one row",
                c.contract_id
            )));
        }
    }
    Ok(out)
}

/// What a reports run reads besides DWD, loaded and checked once before
/// any work: the funnels and the contracts.
#[derive(Debug, Clone, Default)]
pub struct ReportsInputs {
    /// Where the funnels came from, and the funnels; `None` when no file.
    pub funnels: Option<(String, Vec<Funnel>)>,
    /// Every row of `dim_contract`.
    pub contracts: Vec<Contract>,
}

impl ReportsInputs {
    /// Checks that the DWD partitions of `args.dates` are committed (an
    /// empty date list checks none: `daily` loads its inputs before the
    /// layering that commits them), then loads the funnels and contracts —
    /// in that order, so the first error is the one to fix first.
    pub async fn load(engine: &Engine, args: &ReportsArgs) -> Result<ReportsInputs> {
        let store = engine.registry.for_location(&args.warehouse)?;
        check_inputs(store.as_ref(), args).await?;
        Ok(ReportsInputs {
            funnels: load_funnels(engine, &args.warehouse, args.funnels.as_deref()).await?,
            contracts: load_contracts(engine, &args.warehouse).await?,
        })
    }
}

/// Fails, naming the job to run, when a DWD partition a report needs is
/// not committed.
async fn check_inputs(store: &dyn ObjectStore, args: &ReportsArgs) -> Result<()> {
    let mut missing = Vec::new();
    for region in &args.regions {
        for dt in &args.dates {
            let p = PartitionRef {
                dt: *dt,
                region: region.clone(),
            };
            for t in [Table::DwdTrkEvent, Table::DwdCorsError] {
                let dir = p.location(&t.location(&args.warehouse));
                if commit::read_manifest(store, &dir).await?.is_none() {
                    missing.push((t, p.clone()));
                }
            }
        }
    }
    let Some((table, p)) = missing.first() else {
        return Ok(());
    };
    let more = if missing.len() > 1 {
        format!(" (and {} more missing partitions)", missing.len() - 1)
    } else {
        String::new()
    };
    let (dt, region) = (p.dt, &p.region);
    Err(Error::MissingInput(format!(
        "the reports need DWD partition {} dt={dt} region={region}, which is not committed{more}; run `tauc-job submit layering --date {dt} --region {region}` first (loading collection date {dt} builds DWD date {dt}), or `tauc-job submit daily`",
        table.name()
    )))
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
    let (Some(first), Some(last)) = (args.dates.first(), args.dates.last()) else {
        return Err(Error::config("no date to build reports for"));
    };
    let run_id = new_run_id();
    // The DWD partitions read (two days of baseline before the range) and
    // the ADS partitions written: another run on them waits its turn.
    let mut parts = BTreeSet::new();
    for region in &args.regions {
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
    let store = engine.registry.for_location(&args.warehouse)?;
    progress.stage("taking the partitions' leases");
    let lease = crate::warehouse::lease::acquire(
        store,
        &args.warehouse,
        &run_id,
        JOB,
        &parts,
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
    let (Some(first), Some(last)) = (args.dates.first(), args.dates.last()) else {
        return Err(Error::config("no date to build reports for"));
    };
    let run_id = run_id.to_string();
    let mut zones = BTreeMap::new();
    for r in &args.regions {
        zones.insert(r.clone(), regions.zone(r)?);
    }
    let store = engine.registry.for_location(&args.warehouse)?;
    let (funnels, contracts) = (&inputs.funnels, &inputs.contracts);
    tracing::info!(job = JOB, run_id = %run_id, dates = ?args.dates, regions = ?args.regions, "run started");

    for t in [Table::DwdTrkEvent, Table::DwdCorsError] {
        ctx.deregister_table(t.name())?;
        ctx.register_table(t.name(), Arc::new(WarehouseTable::new(t, &args.warehouse)))?;
    }
    let q = Queries {
        ctx,
        range: range(*first, *last, &args.regions),
    };
    let funnel_list = funnels.as_ref().map(|(_, f)| f.as_slice()).unwrap_or(&[]);
    let zone = zone_of_region(&zones)?;
    // baselines read the two local dates before the first reported one
    let anomaly_q = Queries {
        ctx,
        range: range(*first - Days::new(2), *last, &args.regions),
    };
    let active: Vec<&Contract> = contracts
        .iter()
        .filter(|c| args.dates.iter().any(|d| c.active_on(*d)))
        .collect();

    // The queries are independent: submitted together, they keep every
    // executor slot busy instead of paying each job's start-up in turn.
    progress.stage("reports: querying");
    let mut jobs: Vec<LocalBoxFuture<'_, Result<Builder>>> = vec![
        async {
            let mut b = Builder::default();
            b.target_clicks(&q).await?;
            Ok(b)
        }
        .boxed_local(),
        async {
            let mut b = Builder::default();
            b.pages(&q).await?;
            Ok(b)
        }
        .boxed_local(),
        async {
            let mut b = Builder::default();
            b.cors(&q).await?;
            Ok(b)
        }
        .boxed_local(),
        async {
            let mut b = Builder::default();
            b.hourly(&anomaly_q, &zone).await?;
            Ok(b)
        }
        .boxed_local(),
        async {
            let mut b = Builder::default();
            b.settlement_counts(&q, &active).await?;
            Ok(b)
        }
        .boxed_local(),
    ];
    for f in funnel_list {
        let q = &q;
        jobs.push(
            async move {
                let mut b = Builder::default();
                b.funnel(q, f).await?;
                Ok(b)
            }
            .boxed_local(),
        );
    }
    let mut b = Builder::default();
    for part in futures::future::try_join_all(jobs).await? {
        b.merge(part);
    }
    for t in [Table::DwdTrkEvent, Table::DwdCorsError] {
        ctx.deregister_table(t.name())?;
    }

    // which local dates have a committed cors partition, for baselines:
    // the reported dates (checked by `ReportsInputs::load`) and the two
    // days before them
    let mut committed = BTreeSet::new();
    for region in &args.regions {
        for d in [*first - Days::new(2), *first - Days::new(1)] {
            let p = PartitionRef {
                dt: d,
                region: region.clone(),
            };
            let dir = p.location(&Table::DwdCorsError.location(&args.warehouse));
            if commit::read_manifest(store.as_ref(), &dir).await?.is_some() {
                committed.insert(p);
            }
        }
        committed.extend(args.dates.iter().map(|d| PartitionRef {
            dt: *d,
            region: region.clone(),
        }));
    }

    // a stop asked while the job ran: nothing of this stage commits
    crate::engine::client::submitted::check()?;
    progress.stage("reports: committing");
    let mut report = ReportsReport {
        run_id: run_id.clone(),
        funnels: funnels.as_ref().map(|(s, f)| (s.clone(), f.len())),
        ..Default::default()
    };
    for region in &args.regions {
        let tz = zones[region];
        for dt in &args.dates {
            let p = PartitionRef {
                dt: *dt,
                region: region.clone(),
            };
            let anomaly_rows = anomaly::partition_rows(
                *dt,
                tz,
                b.classes.get(&p).unwrap_or(&BTreeSet::new()),
                b.hour_counts.get(region).unwrap_or(&HashMap::new()),
                |d| {
                    committed.contains(&PartitionRef {
                        dt: d,
                        region: region.clone(),
                    })
                },
            );
            report.alerts.insert(
                p.clone(),
                anomaly_rows.iter().filter(|r| r.is_alert).count(),
            );
            let batches = [
                (Table::AdsTargetClick, b.target_batch(&p)?),
                (Table::AdsPage, b.page_batch(&p)?),
                (Table::AdsFunnel, b.funnel_batch(&p, funnel_list)?),
                (Table::AdsCorsSummary, b.summary_batch(&p)?),
                (Table::AdsCorsTopN, b.topn_batch(&p)?),
                (Table::AdsCorsAnomaly, anomaly_batch(&anomaly_rows)?),
                (Table::AdsSettlement, b.settlement_batch(&p, contracts)?),
            ];
            let mut rows = BTreeMap::new();
            for (table, batch) in batches {
                rows.insert(table.name(), batch.num_rows());
                commit::commit_table(
                    &store,
                    &run_id,
                    JOB,
                    &args.warehouse,
                    table,
                    &p,
                    vec![batch],
                )
                .await?;
            }
            report.partitions.insert(p, rows);
        }
    }
    report.secs = started.elapsed().as_secs_f64();
    tracing::info!(job = JOB, run_id = %run_id, "run committed");
    Ok(report)
}

/// Local dates `first ..= last` of `regions`: the rows every report query
/// reads (and the partitions the DWD scans prune to).
fn range(first: NaiveDate, last: NaiveDate, regions: &[String]) -> Expr {
    let regions = regions.iter().map(|r| lit(r.as_str())).collect();
    col("dt")
        .between(lit(date_value(first)), lit(date_value(last)))
        .and(col("region").in_list(regions, false))
}

/// `CASE region WHEN 'aps1' THEN 'Asia/Kolkata' … END`: each row's time
/// zone name, for `tauc_hour_start`.
fn zone_of_region(zones: &BTreeMap<String, chrono_tz::Tz>) -> Result<Expr> {
    let mut zone = case(col("region"));
    for (region, tz) in zones {
        zone = zone.when(lit(region.as_str()), lit(tz.name()));
    }
    Ok(zone.end()?)
}

/// Rows the figures count: bot events are left out of every figure but
/// the settlement's gross counts.
fn not_bot() -> Expr {
    col("is_bot").is_not_true()
}

/// `event_type = '{t}'`.
fn is(event_type: &str) -> Expr {
    col("event_type").eq(lit(event_type))
}

/// `event_type IN (…)`.
fn is_any(event_types: &[&str]) -> Expr {
    col("event_type").in_list(event_types.iter().map(|t| lit(*t)).collect(), false)
}

/// `count(*) FILTER (WHERE cond)`.
fn count_if(cond: Expr) -> Result<Expr> {
    Ok(count(lit(1i64)).filter(cond).build()?)
}

/// `CAST(event_ts AS BIGINT)`: epoch milliseconds.
fn event_ms() -> Expr {
    cast_expr(col("event_ts"), DataType::Int64)
}

/// Runs the report queries over one date range. Each query is a
/// DataFrame built from expressions: the dates, regions, zones, funnel
/// steps and contract targets are values in the plan, never SQL text.
struct Queries<'a> {
    ctx: &'a SessionContext,
    range: Expr,
}

impl Queries<'_> {
    /// The rows of DWD table `table` in the range.
    async fn rows_of(&self, table: Table) -> Result<DataFrame> {
        Ok(self
            .ctx
            .table(table.name())
            .await?
            .filter(self.range.clone())?)
    }

    /// A tauc function of the session (registered on every context).
    fn udf(&self, name: &str, args: Vec<Expr>) -> Result<Expr> {
        Ok(self.ctx.udf(name)?.call(args))
    }

    /// Runs `df` as the Ballista job `tauc reports: {what}` and returns
    /// its rows as one batch, `None` when there are none.
    async fn run(&self, what: &str, df: DataFrame) -> Result<Option<Rows>> {
        let schema = Arc::new(df.schema().as_arrow().clone());
        let name = format!("tauc reports: {what}");
        let batches = crate::engine::client::submitted::collect(df, &name).await?;
        let batch = concat_batches(&schema, &batches)?;
        Ok((batch.num_rows() > 0).then_some(Rows(batch)))
    }
}

/// A query result read by column name.
struct Rows(RecordBatch);

impl Rows {
    fn cast(&self, name: &str, to: &DataType) -> Result<ArrayRef> {
        let col = self
            .0
            .column_by_name(name)
            .ok_or_else(|| Error::Invariant(format!("internal: no column '{name}'")))?;
        Ok(cast(col, to)?)
    }

    fn strs(&self, name: &str) -> Result<Vec<Option<String>>> {
        let a = self.cast(name, &DataType::Utf8)?;
        Ok(a.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    }

    fn i64s(&self, name: &str) -> Result<Vec<i64>> {
        let a = self.cast(name, &DataType::Int64)?;
        Ok(a.as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.unwrap_or(0))
            .collect())
    }

    fn f64s(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let a = self.cast(name, &DataType::Float64)?;
        Ok(a.as_primitive::<Float64Type>().iter().collect())
    }

    /// The `(dt, region)` of every row.
    fn partitions(&self) -> Result<Vec<PartitionRef>> {
        let dts = self.cast("dt", &DataType::Date32)?;
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
        let regions = self.strs("region")?;
        Ok(dts
            .as_primitive::<Date32Type>()
            .iter()
            .zip(regions)
            .map(|(d, r)| PartitionRef {
                dt: epoch + chrono::Duration::days(d.unwrap_or(0) as i64),
                region: r.unwrap_or_default(),
            })
            .collect())
    }
}

#[derive(Debug, Clone)]
struct TargetRow {
    target_type: Option<String>,
    target_id: Option<String>,
    clicks: i64,
    impressions: i64,
    clickers: i64,
}

#[derive(Debug, Clone)]
struct PageRow {
    page_path: Option<String>,
    pv: i64,
    uv: i64,
    clicks: i64,
    avg_duration_ms: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct Summary {
    errors: i64,
    affected_users: i64,
    fingerprints: i64,
    page_views: i64,
}

#[derive(Debug, Clone)]
struct TopRow {
    fingerprint: String,
    parts: [Option<String>; 5],
    errors: i64,
    affected_users: i64,
    first_seen: i64,
    last_seen: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct TargetCounts {
    gross_clicks: i64,
    bot_clicks: i64,
    dup_clicks: i64,
    gross_impressions: i64,
    bot_impressions: i64,
}

/// The query results, by partition.
#[derive(Default)]
struct Builder {
    targets: HashMap<PartitionRef, Vec<TargetRow>>,
    pages: HashMap<PartitionRef, Vec<PageRow>>,
    /// `(partition, funnel) → users per steps reached`.
    funnels: HashMap<(PartitionRef, String), BTreeMap<i64, i64>>,
    summary: HashMap<PartitionRef, Summary>,
    top: HashMap<PartitionRef, Vec<TopRow>>,
    /// `region → (series, bucket start) → errors`.
    hour_counts: HashMap<String, HashMap<(String, i64), i64>>,
    /// err_classes with a non-bot error, per partition.
    classes: HashMap<PartitionRef, BTreeSet<String>>,
    /// `(partition, target_id) → counts`.
    billing: HashMap<(PartitionRef, String), TargetCounts>,
}

impl Builder {
    /// Takes in the results another builder's queries gathered (each
    /// query fills its own keys).
    fn merge(&mut self, o: Builder) {
        self.targets.extend(o.targets);
        self.pages.extend(o.pages);
        self.funnels.extend(o.funnels);
        self.summary.extend(o.summary);
        self.top.extend(o.top);
        self.hour_counts.extend(o.hour_counts);
        self.classes.extend(o.classes);
        self.billing.extend(o.billing);
    }

    async fn target_clicks(&mut self, q: &Queries<'_>) -> Result<()> {
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(not_bot().and(is_any(&["click", "impression"])))?
            .aggregate(
                vec![
                    col("region"),
                    col("dt"),
                    col("target_type"),
                    col("target_id"),
                ],
                vec![
                    count_if(is("click"))?.alias("clicks"),
                    count_if(is("impression"))?.alias("impressions"),
                    count_distinct(when(is("click"), col("user_key")).end()?).alias("clickers"),
                ],
            )?;
        let Some(r) = q.run("target clicks", df).await? else {
            return Ok(());
        };
        let (tt, ti) = (r.strs("target_type")?, r.strs("target_id")?);
        let (c, i, u) = (
            r.i64s("clicks")?,
            r.i64s("impressions")?,
            r.i64s("clickers")?,
        );
        for (k, p) in r.partitions()?.into_iter().enumerate() {
            self.targets.entry(p).or_default().push(TargetRow {
                target_type: tt[k].clone(),
                target_id: ti[k].clone(),
                clicks: c[k],
                impressions: i[k],
                clickers: u[k],
            });
        }
        Ok(())
    }

    async fn pages(&mut self, q: &Queries<'_>) -> Result<()> {
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(not_bot().and(col("page_path").is_not_null()).and(is_any(&[
                "page_enter",
                "click",
                "page_leave",
            ])))?
            .aggregate(
                vec![col("region"), col("dt"), col("page_path")],
                vec![
                    count_if(is("page_enter"))?.alias("pv"),
                    count_distinct(when(is("page_enter"), col("user_key")).end()?).alias("uv"),
                    count_if(is("click"))?.alias("clicks"),
                    avg(cast_expr(col("duration_ms"), DataType::Float64))
                        .filter(is("page_leave"))
                        .build()?
                        .alias("avg_duration_ms"),
                ],
            )?;
        let Some(r) = q.run("pages", df).await? else {
            return Ok(());
        };
        let (path, pv, uv) = (r.strs("page_path")?, r.i64s("pv")?, r.i64s("uv")?);
        let (clicks, avg) = (r.i64s("clicks")?, r.f64s("avg_duration_ms")?);
        for (k, p) in r.partitions()?.into_iter().enumerate() {
            self.pages.entry(p).or_default().push(PageRow {
                page_path: path[k].clone(),
                pv: pv[k],
                uv: uv[k],
                clicks: clicks[k],
                avg_duration_ms: avg[k],
            });
        }
        Ok(())
    }

    async fn funnel(&mut self, q: &Queries<'_>, f: &Funnel) -> Result<()> {
        // each user's events that match a step, with the steps they match
        // as a mask; the user's list is walked by `tauc_funnel_reach`
        let event = named_struct(vec![
            lit("ts"),
            event_ms(),
            lit("id"),
            col("event_id"),
            lit("m"),
            col("m"),
        ]);
        let reach = q.udf(
            "tauc_funnel_reach",
            vec![col("events"), lit(f.window_ms), lit(f.steps.len() as i64)],
        )?;
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(not_bot())?
            .select(vec![
                col("region"),
                col("dt"),
                col("user_key"),
                col("event_ts"),
                col("event_id"),
                f.mask()?.alias("m"),
            ])?
            .filter(col("m").gt(lit(0i64)))?
            .aggregate(
                vec![col("region"), col("dt"), col("user_key")],
                vec![array_agg(event).alias("events")],
            )?
            .select(vec![col("region"), col("dt"), reach.alias("reached")])?
            .filter(col("reached").gt(lit(0i64)))?
            .aggregate(
                vec![col("region"), col("dt"), col("reached")],
                vec![count(lit(1i64)).alias("users")],
            )?;
        let Some(r) = q.run(&format!("funnel {}", f.id), df).await? else {
            return Ok(());
        };
        let (reached, users) = (r.i64s("reached")?, r.i64s("users")?);
        for (k, p) in r.partitions()?.into_iter().enumerate() {
            *self
                .funnels
                .entry((p, f.id.clone()))
                .or_default()
                .entry(reached[k])
                .or_default() += users[k];
        }
        Ok(())
    }

    async fn cors(&mut self, q: &Queries<'_>) -> Result<()> {
        let df = q
            .rows_of(Table::DwdCorsError)
            .await?
            .filter(not_bot())?
            .aggregate(
                vec![col("region"), col("dt")],
                vec![
                    count(lit(1i64)).alias("errors"),
                    count_distinct(col("user_key")).alias("affected_users"),
                    count_distinct(col("fingerprint")).alias("fingerprints"),
                ],
            )?;
        if let Some(r) = q.run("cors summary", df).await? {
            let (e, u, f) = (
                r.i64s("errors")?,
                r.i64s("affected_users")?,
                r.i64s("fingerprints")?,
            );
            for (k, p) in r.partitions()?.into_iter().enumerate() {
                let s = self.summary.entry(p).or_default();
                s.errors = e[k];
                s.affected_users = u[k];
                s.fingerprints = f[k];
            }
        }
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(not_bot().and(is("page_enter")))?
            .aggregate(
                vec![col("region"), col("dt")],
                vec![count(lit(1i64)).alias("page_views")],
            )?;
        if let Some(r) = q.run("page views", df).await? {
            let pv = r.i64s("page_views")?;
            for (k, p) in r.partitions()?.into_iter().enumerate() {
                self.summary.entry(p).or_default().page_views = pv[k];
            }
        }
        let df = q
            .rows_of(Table::DwdCorsError)
            .await?
            .filter(not_bot())?
            .aggregate(
                vec![col("region"), col("dt"), col("fingerprint")],
                vec![
                    min(col("err_class")).alias("err_class"),
                    min(col("req_method")).alias("req_method"),
                    min(col("req_host")).alias("req_host"),
                    min(col("req_path_tpl")).alias("req_path_tpl"),
                    min(col("req_origin")).alias("req_origin"),
                    count(lit(1i64)).alias("errors"),
                    count_distinct(col("user_key")).alias("affected_users"),
                    min(col("event_ts")).alias("first_seen"),
                    max(col("event_ts")).alias("last_seen"),
                ],
            )?;
        if let Some(r) = q.run("cors fingerprints", df).await? {
            let fp = r.strs("fingerprint")?;
            let parts: Vec<Vec<Option<String>>> = [
                "err_class",
                "req_method",
                "req_host",
                "req_path_tpl",
                "req_origin",
            ]
            .iter()
            .map(|c| r.strs(c))
            .collect::<Result<_>>()?;
            let (e, u) = (r.i64s("errors")?, r.i64s("affected_users")?);
            let (first, last) = (r.i64s("first_seen")?, r.i64s("last_seen")?);
            for (k, p) in r.partitions()?.into_iter().enumerate() {
                self.top.entry(p).or_default().push(TopRow {
                    fingerprint: fp[k].clone().unwrap_or_default(),
                    parts: std::array::from_fn(|i| parts[i][k].clone()),
                    errors: e[k],
                    affected_users: u[k],
                    first_seen: first[k],
                    last_seen: last[k],
                });
            }
        }
        Ok(())
    }

    async fn hourly(&mut self, q: &Queries<'_>, zone: &Expr) -> Result<()> {
        let hour = q.udf("tauc_hour_start", vec![col("event_ts"), zone.clone()])?;
        let df = q
            .rows_of(Table::DwdCorsError)
            .await?
            .filter(not_bot())?
            .with_column("hour_ms", hour)?
            .aggregate(
                vec![col("region"), col("dt"), col("err_class"), col("hour_ms")],
                vec![count(lit(1i64)).alias("errors")],
            )?;
        let Some(r) = q.run("cors hourly", df).await? else {
            return Ok(());
        };
        let (class, hour, errors) = (r.strs("err_class")?, r.i64s("hour_ms")?, r.i64s("errors")?);
        for (k, p) in r.partitions()?.into_iter().enumerate() {
            let class = class[k].clone().unwrap_or_else(|| "other".into());
            let counts = self.hour_counts.entry(p.region.clone()).or_default();
            *counts.entry(("all".into(), hour[k])).or_default() += errors[k];
            *counts.entry((class.clone(), hour[k])).or_default() += errors[k];
            self.classes.entry(p).or_default().insert(class);
        }
        Ok(())
    }

    async fn settlement_counts(&mut self, q: &Queries<'_>, active: &[&Contract]) -> Result<()> {
        let targets: BTreeSet<&str> = active.iter().map(|c| c.target_id.as_str()).collect();
        if targets.is_empty() {
            return Ok(());
        }
        let on_targets = col("target_id").in_list(targets.iter().map(|t| lit(*t)).collect(), false);
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(on_targets.clone().and(is_any(&["click", "impression"])))?
            .aggregate(
                vec![col("region"), col("dt"), col("target_id")],
                vec![
                    count_if(is("click"))?.alias("gross_clicks"),
                    count_if(is("click").and(col("is_bot")))?.alias("bot_clicks"),
                    count_if(is("impression"))?.alias("gross_impressions"),
                    count_if(is("impression").and(col("is_bot")))?.alias("bot_impressions"),
                ],
            )?;
        if let Some(r) = q.run("settlement counts", df).await? {
            let t = r.strs("target_id")?;
            let (gc, bc) = (r.i64s("gross_clicks")?, r.i64s("bot_clicks")?);
            let (gi, bi) = (r.i64s("gross_impressions")?, r.i64s("bot_impressions")?);
            for (k, p) in r.partitions()?.into_iter().enumerate() {
                let c = self
                    .billing
                    .entry((p, t[k].clone().unwrap_or_default()))
                    .or_default();
                c.gross_clicks = gc[k];
                c.bot_clicks = bc[k];
                c.gross_impressions = gi[k];
                c.bot_impressions = bi[k];
            }
        }
        // each user's non-bot clicks on a target, walked by
        // `tauc_dup_clicks` (the 30-second rule)
        let click = named_struct(vec![lit("ts"), event_ms(), lit("id"), col("event_id")]);
        let dups = q.udf("tauc_dup_clicks", vec![col("clicks")])?;
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(on_targets.and(is("click")).and(not_bot()))?
            .aggregate(
                vec![col("region"), col("dt"), col("target_id"), col("user_key")],
                vec![array_agg(click).alias("clicks")],
            )?
            .select(vec![
                col("region"),
                col("dt"),
                col("target_id"),
                dups.alias("dups"),
            ])?
            .aggregate(
                vec![col("region"), col("dt"), col("target_id")],
                vec![sum(col("dups")).alias("dup_clicks")],
            )?;
        if let Some(r) = q.run("duplicate clicks", df).await? {
            let (t, d) = (r.strs("target_id")?, r.i64s("dup_clicks")?);
            for (k, p) in r.partitions()?.into_iter().enumerate() {
                self.billing
                    .entry((p, t[k].clone().unwrap_or_default()))
                    .or_default()
                    .dup_clicks = d[k];
            }
        }
        Ok(())
    }

    fn target_batch(&self, p: &PartitionRef) -> Result<RecordBatch> {
        let mut rows = self.targets.get(p).cloned().unwrap_or_default();
        rows.sort_by(|a, b| (&a.target_type, &a.target_id).cmp(&(&b.target_type, &b.target_id)));
        let ratio = |n: i64, d: i64| (d > 0).then(|| n as f64 / d as f64);
        batch(
            Table::AdsTargetClick,
            vec![
                utf8(rows.iter().map(|r| r.target_type.clone())),
                utf8(rows.iter().map(|r| r.target_id.clone())),
                int64(rows.iter().map(|r| r.clicks)),
                int64(rows.iter().map(|r| r.impressions)),
                int64(rows.iter().map(|r| r.clickers)),
                float64(rows.iter().map(|r| ratio(r.clicks, r.clickers))),
                float64(rows.iter().map(|r| ratio(r.clicks, r.impressions))),
            ],
        )
    }

    fn page_batch(&self, p: &PartitionRef) -> Result<RecordBatch> {
        let mut rows = self.pages.get(p).cloned().unwrap_or_default();
        rows.sort_by(|a, b| a.page_path.cmp(&b.page_path));
        batch(
            Table::AdsPage,
            vec![
                utf8(rows.iter().map(|r| r.page_path.clone())),
                int64(rows.iter().map(|r| r.pv)),
                int64(rows.iter().map(|r| r.uv)),
                int64(rows.iter().map(|r| r.clicks)),
                float64(rows.iter().map(|r| r.avg_duration_ms)),
            ],
        )
    }

    fn funnel_batch(&self, p: &PartitionRef, funnels: &[Funnel]) -> Result<RecordBatch> {
        let (mut id, mut step, mut users, mut start, mut prev) =
            (vec![], vec![], vec![], vec![], vec![]);
        let ratio = |n: i64, d: i64| (d > 0).then(|| n as f64 / d as f64);
        for f in funnels {
            let hist = self.funnels.get(&(p.clone(), f.id.clone()));
            let reaching =
                |k: usize| -> i64 { hist.map_or(0, |h| h.range(k as i64..).map(|(_, n)| n).sum()) };
            let first = reaching(1);
            for k in 1..=f.steps.len() {
                let n = reaching(k);
                id.push(Some(f.id.clone()));
                step.push(k as i64);
                users.push(n);
                start.push(ratio(n, first));
                prev.push(if k == 1 {
                    ratio(n, first)
                } else {
                    ratio(n, reaching(k - 1))
                });
            }
        }
        batch(
            Table::AdsFunnel,
            vec![
                utf8(id),
                int64(step),
                int64(users),
                float64(start),
                float64(prev),
            ],
        )
    }

    fn summary_batch(&self, p: &PartitionRef) -> Result<RecordBatch> {
        let s = self.summary.get(p).cloned().unwrap_or_default();
        let per_1k = (s.page_views > 0).then(|| s.errors as f64 * 1000.0 / s.page_views as f64);
        batch(
            Table::AdsCorsSummary,
            vec![
                int64([s.errors]),
                int64([s.affected_users]),
                int64([s.fingerprints]),
                int64([s.page_views]),
                float64([per_1k]),
            ],
        )
    }

    fn topn_batch(&self, p: &PartitionRef) -> Result<RecordBatch> {
        let mut rows = self.top.get(p).cloned().unwrap_or_default();
        rows.sort_by(|a, b| {
            b.errors
                .cmp(&a.errors)
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        rows.truncate(TOP_N);
        let mut cols = vec![
            int64(1..=rows.len() as i64),
            utf8(rows.iter().map(|r| Some(r.fingerprint.clone()))),
        ];
        for i in 0..5 {
            cols.push(utf8(rows.iter().map(|r| r.parts[i].clone())));
        }
        cols.push(int64(rows.iter().map(|r| r.errors)));
        cols.push(int64(rows.iter().map(|r| r.affected_users)));
        cols.push(timestamps(rows.iter().map(|r| r.first_seen), true));
        cols.push(timestamps(rows.iter().map(|r| r.last_seen), true));
        batch(Table::AdsCorsTopN, cols)
    }

    fn settlement_batch(&self, p: &PartitionRef, contracts: &[Contract]) -> Result<RecordBatch> {
        let mut active: Vec<&Contract> = contracts.iter().filter(|c| c.active_on(p.dt)).collect();
        active.sort_by(|a, b| a.contract_id.cmp(&b.contract_id));
        let mut counts = Vec::new();
        let mut bills = Vec::new();
        for c in &active {
            let n = self
                .billing
                .get(&(p.clone(), c.target_id.clone()))
                .copied()
                .unwrap_or_default();
            let valid_clicks = n.gross_clicks - n.bot_clicks - n.dup_clicks;
            let valid_impressions = n.gross_impressions - n.bot_impressions;
            bills.push(c.bill(valid_clicks, valid_impressions)?);
            counts.push((n, valid_clicks, valid_impressions));
        }
        let s = |f: fn(&Contract) -> String| utf8(active.iter().map(|c| Some(f(c))));
        batch(
            Table::AdsSettlement,
            vec![
                s(|c| c.contract_id.clone()),
                s(|c| c.partner_id.clone()),
                s(|c| c.target_id.clone()),
                s(|c| c.pricing.as_str().to_string()),
                s(|c| c.currency.clone()),
                money(active.iter().map(|c| c.unit_price))?,
                int64(counts.iter().map(|c| c.0.gross_clicks)),
                int64(counts.iter().map(|c| c.0.bot_clicks)),
                int64(counts.iter().map(|c| c.0.dup_clicks)),
                int64(counts.iter().map(|c| c.1)),
                int64(counts.iter().map(|c| c.0.gross_impressions)),
                int64(counts.iter().map(|c| c.0.bot_impressions)),
                int64(counts.iter().map(|c| c.2)),
                int64(bills.iter().map(|b| b.0)),
                money(bills.iter().map(|b| b.1))?,
            ],
        )
    }
}

fn anomaly_batch(rows: &[anomaly::AnomalyRow]) -> Result<RecordBatch> {
    batch(
        Table::AdsCorsAnomaly,
        vec![
            utf8(rows.iter().map(|r| Some(r.series.clone()))),
            timestamps(rows.iter().map(|r| r.hour_start), true),
            timestamps(rows.iter().map(|r| r.hour_start_local), false),
            int64(rows.iter().map(|r| r.errors)),
            int64(rows.iter().map(|r| r.baseline_n)),
            float64(rows.iter().map(|r| r.baseline_median)),
            float64(rows.iter().map(|r| r.mad)),
            float64(rows.iter().map(|r| r.robust_z)),
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| Some(r.is_alert)).collect::<Vec<_>>(),
            )),
        ],
    )
}

fn batch(table: Table, cols: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(table.schema(), cols)?)
}

fn utf8(v: impl IntoIterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<StringArray>())
}

fn int64(v: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(v))
}

fn float64(v: impl IntoIterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(v.into_iter().collect::<Float64Array>())
}

fn timestamps(v: impl IntoIterator<Item = i64>, utc: bool) -> ArrayRef {
    let a = TimestampMillisecondArray::from_iter_values(v);
    Arc::new(if utc { a.with_timezone("UTC") } else { a })
}

fn money(v: impl IntoIterator<Item = i128>) -> Result<ArrayRef> {
    Ok(Arc::new(
        Decimal128Array::from_iter_values(v).with_precision_and_scale(18, 6)?,
    ))
}
