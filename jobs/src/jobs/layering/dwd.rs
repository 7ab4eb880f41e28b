//! The DWD stage: every DWD date the loaded days can change, rebuilt from
//! its ODS window (`dwd.sql` beside this file) and written by the
//! executors, checked for events written twice on a cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, UInt64Type};
use datafusion::common::Column;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::FunctionRegistry;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions::string::expr_fn::concat;
use datafusion::functions_aggregate::expr_fn::{count, count_distinct, min};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlanBuilder, case, when};
use datafusion::prelude::{DataFrame, SessionContext, cast, col, lit};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

use crate::engine::client::submitted;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::jobs::progress::Progress;
use crate::store::Location;
use crate::warehouse::commit::{self, Lineage, PartitionRef, WriteOutcome};
use crate::warehouse::doubled;
use crate::warehouse::table::{WarehouseTable, event_id_table};
use crate::warehouse::tables::Table;
use crate::warehouse::tables::date_value;
use crate::warehouse::writer::{TABLE_COLUMN, WriteSpec};

use super::written::{commit_written, only_into, write};
use super::{DwdSummary, JOB, LayeringArgs, window};

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

/// Registers `dim_user_raw` from `{warehouse}/dim/dim_user/` (CSV or
/// Parquet).
pub(super) async fn register_dim_user(
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
/// registered ODS table `table`) with their time zone (`CASE region WHEN
/// …`, from `targets`), event time and local date.
pub(super) async fn timed_ods(
    ctx: &SessionContext,
    table: &str,
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
        .table(table)
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
/// collection date lies in that date's window ([`singles`]). Only rows
/// whose id is in `copied` (the ids seen more than once, found by a job of
/// their own before this one: [`register_copied_ids`]) go through the
/// per-target-date dedupe of layers.md, whose window — and so whose
/// winner — depends on the DWD date being built; the winner's columns come
/// out of the dedupe aggregate itself, packed in one binary value whose
/// smallest is the winner (`engine::plan::row_pack`: a struct per group
/// held ~11 KB a copied event). Without copies there is no dedupe at all.
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
    let ods = ods.alias("o")?;
    if !any_copied {
        return singles(ods, targets, lateness_days);
    }
    let alone = on_copied(ctx, ods.clone(), JoinType::LeftAnti).await?;
    let copies = on_copied(ctx, ods, JoinType::LeftSemi).await?;
    let aggs = vec![rows_read("o").alias("copies"), min(pack(ctx)?).alias("w")];
    let winners = window_groups(ctx, copies, targets, lateness_days, aggs)?
        // (renamed on the way: DataFusion 55's `push_down_leaf_projections`
        // fails on `o.region AS region` below the `get_field`s)
        .select(vec![
            qcol("o", "region").alias("p_region"),
            qcol("t", "target_dt").alias("p_target"),
            col("copies"),
            unpack(ctx, col("w"), row_type)?.alias("r"),
        ])?;
    Ok(singles(alone, targets, lateness_days)?.union(unpacked(winners)?)?)
}

/// The rows of `rows` (aliased `o`) whose event id is (`LeftSemi`) or is
/// not (`LeftAnti`) among the registered `copied` ids.
pub(super) async fn on_copied(
    ctx: &SessionContext,
    rows: DataFrame,
    join: JoinType,
) -> Result<DataFrame> {
    let copied = ctx.table("copied").await?.alias("c")?;
    Ok(rows.join(copied, join, &["o.event_id"], &["c.event_id"], None)?)
}

/// The kept rows of `alone` (aliased `o`), rows whose event id occurs once
/// in the read set: each on its own local date, when that date is a
/// target and the row's collection date lies in its window; `copies` 1.
pub(super) fn singles(
    alone: DataFrame,
    targets: &[(PartitionRef, String)],
    lateness_days: i64,
) -> Result<DataFrame> {
    let target_dates = per_region_dates(
        "local_dt",
        targets.iter().map(|(p, _)| (p.region.as_str(), p.dt)),
    );
    let in_own_window = col("dt")
        .gt_eq(col("local_dt") - days(1))
        .and(col("dt").lt_eq(col("local_dt") + days(1 + lateness_days)));
    Ok(alone.filter(target_dates.and(in_own_window))?.select(
        [
            qcol("o", "region").alias("region"),
            qcol("o", "local_dt").alias("target_dt"),
            lit(1i64).alias("copies"),
        ]
        .into_iter()
        .chain(KEPT.iter().map(|c| qcol("o", c).alias(*c)))
        .collect::<Vec<_>>(),
    )?)
}

/// `rows` (aliased `o`) grouped per event id and target DWD date whose
/// window holds them (the group columns `o.region`, `t.target_dt`,
/// `o.event_id`), aggregated with `aggs`.
pub(super) fn window_groups(
    ctx: &SessionContext,
    rows: DataFrame,
    targets: &[(PartitionRef, String)],
    lateness_days: i64,
    aggs: Vec<Expr>,
) -> Result<DataFrame> {
    let values = targets
        .iter()
        .map(|(p, _)| vec![lit(p.region.as_str()), lit(date_value(p.dt))])
        .collect();
    let values = LogicalPlanBuilder::values(values)?.build()?;
    let target_list = DataFrame::new(ctx.state(), values)
        .select(vec![
            col("column1").alias("t_region"),
            col("column2").alias("target_dt"),
        ])?
        .alias("t")?;
    let window = qcol("o", "dt")
        .gt_eq(qcol("t", "target_dt") - days(1))
        .and(qcol("o", "dt").lt_eq(qcol("t", "target_dt") + days(1 + lateness_days)));
    let groups = vec![
        qcol("o", "region"),
        qcol("t", "target_dt"),
        qcol("o", "event_id"),
    ];
    Ok(rows
        .join(
            target_list,
            JoinType::Inner,
            &["o.region"],
            &["t.t_region"],
            Some(window),
        )?
        .aggregate(groups, aggs)?)
}

/// One binary value per row of `o` whose smallest is the dedupe's winner
/// ([`packed_columns`]).
pub(super) fn pack(ctx: &SessionContext) -> Result<Expr> {
    let packed = packed_columns().into_iter().map(|c| qcol("o", c)).collect();
    udf(ctx, "tauc_pack_row", packed)
}

/// The struct `packed` (a [`pack`] value) stands for.
pub(super) fn unpack(ctx: &SessionContext, packed: Expr, row_type: &str) -> Result<Expr> {
    udf(ctx, "tauc_unpack_row", vec![packed, lit(row_type)])
}

/// The struct column `r` of `winners` (with `p_region`, `p_target`,
/// `copies`) as kept rows.
pub(super) fn unpacked(winners: DataFrame) -> Result<DataFrame> {
    let columns = [
        col("p_region").alias("region"),
        col("p_target").alias("target_dt"),
        col("copies"),
    ]
    .into_iter()
    .chain(KEPT.iter().map(|c| get_field(col("r"), *c).alias(*c)))
    .collect::<Vec<_>>();
    Ok(winners.select(columns)?)
}

/// The type name `tauc_unpack_row` is told for rows of `ods`.
pub(super) fn row_type(ods: &DataFrame) -> Result<String> {
    let packed = ods.clone().select_columns(&packed_columns())?;
    Ok(DataType::Struct(packed.schema().as_arrow().fields().clone()).to_string())
}

/// How many ODS rows a group of the dedupe stands for: its distinct
/// `(src_file, line_no)` — the place each row was read from — not its
/// size. After losing an executor, Ballista 55 may deliver two attempts of
/// a scan stage's output to the aggregate; the winner (a `min`) is the
/// same either way, but a plain count would double the copies, and so the
/// `duplicates` of `dwd_fe_dedupe_stats_di`. (`line_no` first: its digits
/// end at the `:`, so no key can make two places read alike.)
pub(super) fn rows_read(table: &str) -> Expr {
    count_distinct(place(table))
}

/// Where a row of `table` was read from: `{line_no}:{src_file}`.
pub(super) fn place(table: &str) -> Expr {
    concat(vec![
        cast(qcol(table, "line_no"), DataType::Utf8),
        lit(":"),
        qcol(table, "src_file"),
    ])
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
        .sql(include_str!("dwd.sql"))
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
pub(super) async fn register_copied_ids(
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

/// The DWD partitions a run rebuilds, each with the versions of the ODS
/// partitions of its window (recorded in its manifests): every date the
/// loaded days can change, or, incremental, those of them whose window
/// moved since they were built.
pub(super) async fn dwd_targets(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
) -> Result<BTreeMap<PartitionRef, BTreeMap<String, String>>> {
    let candidates = args.regions.iter().flat_map(|region| {
        args.dwd_dates().into_iter().map(|dt| PartitionRef {
            dt,
            region: region.clone(),
        })
    });
    let checks = candidates.map(|p| async move {
        let window: Vec<_> = window(p.dt, args.lateness_days)
            .map(|c| {
                let ods = PartitionRef {
                    dt: c,
                    region: p.region.clone(),
                };
                (Table::OdsEvent, ods)
            })
            .collect();
        let inputs = commit::input_versions(store.as_ref(), &args.warehouse, &window).await?;
        let tables = [
            Table::DwdTrkEvent,
            Table::DwdCorsError,
            Table::DwdDedupeStats,
        ];
        let target = !args.incremental
            || commit::stale(store.as_ref(), &args.warehouse, &tables, &p, &inputs).await?;
        Ok::<_, Error>(target.then_some((p, inputs)))
    });
    // manifest reads, a few per date: side by side
    let found: Vec<_> = futures::stream::iter(checks)
        .buffered(commit::PARTITIONS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

/// The second stage: the DWD partitions of [`dwd_targets`], rebuilt from
/// their ODS windows and written by the executors; returns each
/// partition's summary and the result rows received.
#[allow(clippy::too_many_arguments)]
pub(super) async fn build_dwd(
    ctx: &SessionContext,
    engine: &Engine,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    zones: &BTreeMap<String, chrono_tz::Tz>,
    chosen: &BTreeMap<PartitionRef, BTreeMap<String, String>>,
    run_id: &str,
    progress: &mut Progress,
) -> Result<(BTreeMap<PartitionRef, DwdSummary>, (u64, u64))> {
    let Window {
        targets,
        ods_rows,
        present,
    } = window_of(store, args, zones, chosen).await?;
    let mut outcome = WriteOutcome::default();
    if !present.is_empty() {
        register_dim_user(ctx, engine, &args.warehouse).await?;
        ctx.register_table(
            "ods_src",
            Arc::new(WarehouseTable::new(Table::OdsEvent, &args.warehouse)),
        )?;
        let ods = timed_ods(ctx, "ods_src", &present, &targets).await?;
        let scratch = scratch(args, run_id);
        let result = async {
            let copied = register_copied_ids(ctx, &scratch, &ods).await?;
            let row_type = row_type(&ods)?;
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
            write_kept(ctx, args, run_id).await
        }
        .await;
        clean_up(
            ctx,
            store,
            &scratch,
            &["ods_src", "dim_user_raw", "copied", "dwd_kept"],
        )
        .await?;
        outcome = result?;
    }
    let mut summaries = BTreeMap::new();
    for (p, _) in &targets {
        let trk_rows = outcome.rows(Table::DwdTrkEvent, p) as i64;
        let cors_rows = outcome.rows(Table::DwdCorsError, p) as i64;
        // every kept row stands for `copies` rows read
        let duplicates = outcome.count(p, "copies") - trk_rows - cors_rows;
        let rows_read = rows_read_of(p, &ods_rows, args.lateness_days);
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
    let (outcome_ref, chosen) = (&outcome, &chosen);
    commit::each_partition(&summaries, |(p, s)| async move {
        let tables = [Table::DwdTrkEvent, Table::DwdCorsError];
        let lineage = lineage(&chosen[p]);
        commit_written(store, args, run_id, outcome_ref, p, tables, lineage.clone()).await?;
        commit_stats(store, args, run_id, p, s, lineage).await
    })
    .await?;
    Ok((summaries, outcome.received()))
}

/// Derives the registered `dwd_kept` rows by `dwd.sql` and writes them
/// (the executors do).
pub(super) async fn write_kept(
    ctx: &SessionContext,
    args: &LayeringArgs,
    run_id: &str,
) -> Result<WriteOutcome> {
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

/// The run's scratch folder in the warehouse.
pub(super) fn scratch(args: &LayeringArgs, run_id: &str) -> Location {
    args.warehouse.join(&format!("{SCRATCH}/{run_id}"))
}

/// Removes the run's scratch files and deregisters `tables`.
pub(super) async fn clean_up(
    ctx: &SessionContext,
    store: &Arc<dyn ObjectStore>,
    scratch: &Location,
    tables: &[&str],
) -> Result<()> {
    if let Err(e) = commit::delete_prefix(store.as_ref(), scratch).await {
        // left behind, unread: not a reason to lose the run
        tracing::warn!(error = %e, scratch = %scratch, "could not remove the run's scratch files; they are not part of any table and may be deleted by hand");
    }
    for t in tables {
        ctx.deregister_table(*t)?;
    }
    Ok(())
}

/// What the DWD dates of a run read.
pub(super) struct Window {
    /// Each date with its region's time zone.
    pub targets: Vec<(PartitionRef, String)>,
    /// Rows per ODS partition of their windows ([`ods_rows`]).
    pub ods_rows: BTreeMap<PartitionRef, u64>,
    /// The ODS partitions of their windows that hold rows.
    pub present: BTreeSet<PartitionRef>,
}

/// The [`Window`] of the DWD dates `chosen`.
pub(super) async fn window_of(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    zones: &BTreeMap<String, chrono_tz::Tz>,
    chosen: &BTreeMap<PartitionRef, BTreeMap<String, String>>,
) -> Result<Window> {
    let targets = chosen
        .keys()
        .map(|p| (p.clone(), zones[&p.region].name().to_string()))
        .collect();
    let ods_rows = ods_rows(store, args, chosen.keys()).await?;
    let present = ods_rows
        .iter()
        .filter(|(_, rows)| **rows > 0)
        .map(|(p, _)| p.clone())
        .collect();
    Ok(Window {
        targets,
        ods_rows,
        present,
    })
}

/// Rows per ODS partition of the windows of `targets`, from the manifests
/// (read under this run's lease).
async fn ods_rows(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    targets: impl Iterator<Item = &PartitionRef>,
) -> Result<BTreeMap<PartitionRef, u64>> {
    let ods_table = Table::OdsEvent.location(&args.warehouse);
    let read_set: BTreeSet<PartitionRef> = targets
        .flat_map(|p| {
            window(p.dt, args.lateness_days).map(|c| PartitionRef {
                dt: c,
                region: p.region.clone(),
            })
        })
        .collect();
    let mut out = BTreeMap::new();
    for p in read_set {
        if let Some(m) = commit::read_manifest(store.as_ref(), &p.location(&ods_table)).await? {
            out.insert(p, m.rows);
        }
    }
    Ok(out)
}

/// `rows_read` of DWD partition `p`: the valid ODS rows of its window.
pub(super) fn rows_read_of(
    p: &PartitionRef,
    ods_rows: &BTreeMap<PartitionRef, u64>,
    lateness_days: i64,
) -> i64 {
    window(p.dt, lateness_days)
        .map(|c| {
            let key = PartitionRef {
                dt: c,
                region: p.region.clone(),
            };
            ods_rows.get(&key).copied().unwrap_or(0) as i64
        })
        .sum()
}

/// Commits partition `p` of `dwd_fe_dedupe_stats_di`.
pub(super) async fn commit_stats(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    run_id: &str,
    p: &PartitionRef,
    s: &DwdSummary,
    lineage: Lineage,
) -> Result<()> {
    let stats = RecordBatch::try_new(
        Table::DwdDedupeStats.schema(),
        vec![
            Arc::new(Int64Array::from(vec![s.rows_read])),
            Arc::new(Int64Array::from(vec![s.duplicates])),
            Arc::new(Int64Array::from(vec![s.trk_rows + s.cors_rows])),
            Arc::new(StringArray::from(vec![run_id])),
        ],
    )?;
    commit::commit_table_with(
        store,
        run_id,
        JOB,
        &args.warehouse,
        Table::DwdDedupeStats,
        p,
        vec![stats],
        lineage,
    )
    .await?;
    Ok(())
}

/// A DWD version's lineage: the ODS versions of its window.
pub(super) fn lineage(inputs: &BTreeMap<String, String>) -> Lineage {
    Lineage {
        inputs: inputs.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;

    /// A row delivered twice (same file and line) is one row read; a copy
    /// from another line is another.
    #[tokio::test]
    async fn a_row_delivered_twice_is_read_once() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("src_file", DataType::Utf8, false),
            Field::new("line_no", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["e1", "e1", "e1", "e2", "e3", "e3"])),
                Arc::new(StringArray::from(vec!["a", "a", "b", "a", "1:a", "11:a"])),
                Arc::new(Int64Array::from(vec![1, 1, 1, 2, 1, 1])),
            ],
        )
        .unwrap();
        let ctx = SessionContext::new();
        let mem = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        ctx.register_table("rows", Arc::new(mem)).unwrap();
        let counted = ctx
            .table("rows")
            .await
            .unwrap()
            .alias("o")
            .unwrap()
            .aggregate(vec![qcol("o", "event_id")], vec![rows_read("o").alias("n")])
            .unwrap()
            .sort(vec![col("event_id").sort(true, true)])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let n: Vec<i64> = counted
            .iter()
            .flat_map(|b| {
                b.column(1)
                    .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        // e1: (a,1) twice + (b,1); e2: (a,2); e3: "1:a" line 1 vs "11:a" line 1
        assert_eq!(n, vec![2, 1, 2]);
    }
}
