//! The DWD stage of an incremental run that only appended rows to the ODS
//! windows of the DWD dates it brings up to date: those dates are patched
//! instead of rebuilt from their whole windows (layers.md, "Incremental
//! loads"; docs/design.md).
//!
//! A DWD date `D` can be patched when its three tables were last built
//! from ODS versions that this run's loads appended to (or that did not
//! move since): its rows then equal the dedupe of the old rows, and only
//! the new rows — the files this run wrote, `part-{run_id}-…` — can
//! change them. For each new row:
//! - its event id occurs nowhere else in the read set (nearly every row):
//!   it is its own kept row, appended to its own local date;
//! - its id also occurs elsewhere (a retry, a re-delivery: the `copied`
//!   ids, found by one scan of the window's `event_id` column against the
//!   new ids): per DWD date, the copies in its window are deduplicated
//!   again, old and new copies told apart. The old winner stays when it
//!   still wins (the usual case: the new copy arrived later), and only
//!   `duplicates` moves; a new winner is appended to its date, and the
//!   date where the beaten old winner was kept is rewritten without it
//!   (rare: a copy arriving late that sorts first under the dedupe order).
//!
//! `duplicates` moves by the copies the new rows add to kept events, so a
//! patched date's statistics equal a rebuild's. Any other state — a date
//! never built, an ODS partition replaced by a full run, a run killed
//! between the ODS commit and the DWD commit — is rebuilt whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Date32Type, Int64Type};
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::functions_aggregate::expr_fn::{count_distinct, min, sum};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlanBuilder, when};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext, col, lit};
use object_store::ObjectStore;

use crate::engine::client::submitted;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::jobs::progress::Progress;
use crate::store::Location;
use crate::warehouse::commit::{self, Lineage, Manifest, PartitionRef, WriteOutcome, carried};
use crate::warehouse::table::{FileSelect, WarehouseTable};
use crate::warehouse::tables::{Table, date_of, date_value};
use crate::warehouse::writer::{TABLE_COLUMN, WriteSpec};

use super::dwd::{
    Window, clean_up, commit_stats, lineage, on_copied, pack, place, register_copied_ids,
    register_dim_user, row_type, rows_read, rows_read_of, scratch, singles, timed_ods, unpack,
    unpacked, window_groups, window_of, write_kept,
};
use super::written::{only_into, write};
use super::{DwdSummary, JOB, LayeringArgs, PatchSummary, window};

/// What a DWD date was last committed as.
pub(super) struct Prior {
    trk: Manifest,
    cors: Manifest,
    duplicates: i64,
}

/// How the new rows change one DWD date besides the rows appended to it.
#[derive(Debug, Default, Clone, Copy)]
struct Change {
    /// Added to `duplicates`.
    duplicates: i64,
    /// Old kept rows a new copy beat: the date is rewritten without them.
    dropped: i64,
}

/// The tables a patch registers (deregistered when it ends).
const REGISTERED: [&str; 7] = [
    "ods_src",
    "ods_new",
    "ods_old",
    "dim_user_raw",
    "copied",
    "dwd_groups",
    "dwd_kept",
];

/// The DWD dates of `chosen`, each with what it was last committed as,
/// when every one of them can be patched: its window's ODS versions are
/// the ones it was built from, or versions this run's loads appended to
/// them (`appended`: ODS partition → the version appended to, `None` for
/// a partition this run created). `None`: rebuild them.
pub(super) async fn patchable(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    chosen: &BTreeMap<PartitionRef, BTreeMap<String, String>>,
    appended: &BTreeMap<PartitionRef, Option<String>>,
    run_id: &str,
) -> Result<Option<BTreeMap<PartitionRef, Prior>>> {
    if !args.incremental || chosen.is_empty() {
        return Ok(None);
    }
    let mut out = BTreeMap::new();
    for (p, inputs) in chosen {
        let Some((prior, built_from)) = prior_of(store, args, p).await? else {
            return Ok(None);
        };
        for c in window(p.dt, args.lateness_days) {
            let q = PartitionRef {
                dt: c,
                region: p.region.clone(),
            };
            let name = commit::input_name(Table::OdsEvent, &q);
            let (was, now) = (built_from.get(&name), inputs.get(&name));
            let moved_by_this_run = appended
                .get(&q)
                .is_some_and(|before| before.as_ref() == was)
                && now.is_some_and(|v| v == run_id);
            if was != now && !moved_by_this_run {
                return Ok(None);
            }
        }
        out.insert(p.clone(), prior);
    }
    Ok(Some(out))
}

/// DWD partition `p` as last committed, with the ODS versions it was
/// built from; `None` unless its three tables were committed from the same
/// versions.
async fn prior_of(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    p: &PartitionRef,
) -> Result<Option<(Prior, BTreeMap<String, String>)>> {
    let manifest = |t: Table| {
        let dir = p.location(&t.location(&args.warehouse));
        async move { commit::read_manifest(store.as_ref(), &dir).await }
    };
    let (Some(trk), Some(cors), Some(stats)) = (
        manifest(Table::DwdTrkEvent).await?,
        manifest(Table::DwdCorsError).await?,
        manifest(Table::DwdDedupeStats).await?,
    ) else {
        return Ok(None);
    };
    let inputs = trk.lineage.inputs.clone();
    if cors.lineage.inputs != inputs || stats.lineage.inputs != inputs {
        return Ok(None);
    }
    let duplicates = read_duplicates(store, args, p, &stats).await?;
    Ok(Some((
        Prior {
            trk,
            cors,
            duplicates,
        },
        inputs,
    )))
}

/// `duplicates` of a committed `dwd_fe_dedupe_stats_di` partition.
async fn read_duplicates(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    p: &PartitionRef,
    stats: &Manifest,
) -> Result<i64> {
    let dir = p.location(&Table::DwdDedupeStats.location(&args.warehouse));
    let mut total = 0;
    for f in &stats.files {
        let path = object_store::path::Path::from(format!("{}/{f}", dir.prefix));
        let bytes = object_store::ObjectStoreExt::get(store.as_ref(), &path)
            .await?
            .bytes()
            .await?;
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes,
            )?
            .build()?;
        for batch in reader {
            let batch = batch?;
            let column = batch
                .column_by_name("duplicates")
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| {
                    Error::Invariant(format!("{dir}/{f}: no Int64 column 'duplicates'"))
                })?;
            total += column.iter().flatten().sum::<i64>();
        }
    }
    Ok(total)
}

/// Patches the DWD dates of `priors` (from [`patchable`]) with this run's
/// new ODS rows and commits them; returns each partition's summary and
/// the result rows received.
#[allow(clippy::too_many_arguments)]
pub(super) async fn patch_dwd(
    ctx: &SessionContext,
    engine: &Engine,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    zones: &BTreeMap<String, chrono_tz::Tz>,
    chosen: &BTreeMap<PartitionRef, BTreeMap<String, String>>,
    priors: &BTreeMap<PartitionRef, Prior>,
    run_id: &str,
    progress: &mut Progress,
) -> Result<(BTreeMap<PartitionRef, DwdSummary>, (u64, u64), PatchSummary)> {
    let Window {
        targets,
        ods_rows,
        present,
    } = window_of(store, args, zones, chosen).await?;
    let (mut appended, mut rewritten, mut changes, mut copied_ids) = Default::default();
    if !present.is_empty() {
        register_dim_user(ctx, engine, &args.warehouse).await?;
        register_ods(ctx, args, run_id)?;
        let scratch = scratch(args, run_id);
        let result = patch_rows(ctx, args, run_id, &scratch, &present, &targets).await;
        clean_up(ctx, store, &scratch, &REGISTERED).await?;
        (appended, rewritten, changes, copied_ids) = result?;
    }
    let mut summaries = BTreeMap::new();
    for (p, prior) in priors {
        let change: Change = changes.get(p).copied().unwrap_or_default();
        let rows = |t: Table, m: &Manifest| {
            let kept = if change.dropped > 0 {
                rewritten.rows(t, p)
            } else {
                m.rows
            };
            (kept + appended.rows(t, p)) as i64
        };
        let s = DwdSummary {
            rows_read: rows_read_of(p, &ods_rows, args.lateness_days),
            duplicates: prior.duplicates + change.duplicates,
            trk_rows: rows(Table::DwdTrkEvent, &prior.trk),
            cors_rows: rows(Table::DwdCorsError, &prior.cors),
        };
        progress.advance(
            0,
            appended.rows(Table::DwdTrkEvent, p) + appended.rows(Table::DwdCorsError, p),
        );
        summaries.insert(p.clone(), s);
    }
    only_into(&appended, &summaries, "the DWD patch")?;
    only_into(&rewritten, &summaries, "the DWD rewrite")?;
    // a stop asked while the jobs ran: nothing of this stage commits
    submitted::check()?;
    progress.stage("dwd: committing");
    let (chosen, changes, summaries_ref) = (&chosen, &changes, &summaries);
    let (appended, rewritten) = (&appended, &rewritten);
    commit::each_partition(priors, |(p, prior)| async move {
        let rewrite = changes.get(p).is_some_and(|c| c.dropped > 0);
        for (t, m) in [
            (Table::DwdTrkEvent, &prior.trk),
            (Table::DwdCorsError, &prior.cors),
        ] {
            let (mut files, carried_rows) = if rewrite {
                (rewritten.files_of(t, p), 0)
            } else {
                (carried(&m.files), m.rows)
            };
            let added = appended.files_of(t, p);
            // rows unchanged: the partitions built from it need no rebuild
            let content = (!rewrite && added.is_empty()).then(|| m.content_version().to_string());
            files.extend(added);
            let lineage = Lineage {
                carried_rows,
                content,
                ..lineage(&chosen[p])
            };
            let dir = p.location(&t.location(&args.warehouse));
            commit::commit_files_with(store.as_ref(), run_id, JOB, t, &dir, p, &files, lineage)
                .await?;
        }
        commit_stats(
            store,
            args,
            run_id,
            p,
            &summaries_ref[p],
            lineage(&chosen[p]),
        )
        .await
    })
    .await?;
    let received = appended.received();
    let more = rewritten.received();
    let patched = PatchSummary {
        copied_ids,
        rewritten: changes.values().filter(|c| c.dropped > 0).count(),
    };
    Ok((
        summaries,
        (received.0 + more.0, received.1 + more.1),
        patched,
    ))
}

/// `ods_src` (every committed ODS file), `ods_new` (this run's) and
/// `ods_old` (the others).
fn register_ods(ctx: &SessionContext, args: &LayeringArgs, run_id: &str) -> Result<()> {
    let ods = || WarehouseTable::new(Table::OdsEvent, &args.warehouse);
    ctx.register_table("ods_src", Arc::new(ods()))?;
    let new = ods().with_files(FileSelect::OfRun(run_id.to_string()));
    ctx.register_table("ods_new", Arc::new(new))?;
    let old = ods().with_files(FileSelect::NotOfRun(run_id.to_string()));
    ctx.register_table("ods_old", Arc::new(old))?;
    Ok(())
}

/// The patch's jobs: the copied ids among the new rows, their groups,
/// the appended rows written, the dates with beaten rows rewritten.
async fn patch_rows(
    ctx: &SessionContext,
    args: &LayeringArgs,
    run_id: &str,
    scratch: &Location,
    present: &BTreeSet<PartitionRef>,
    targets: &[(PartitionRef, String)],
) -> Result<(
    WriteOutcome,
    WriteOutcome,
    BTreeMap<PartitionRef, Change>,
    u64,
)> {
    let new = timed_ods(ctx, "ods_new", present, targets).await?;
    let all = timed_ods(ctx, "ods_src", present, targets).await?;
    let ids = new.clone().select(vec![col("event_id").alias("n_id")])?;
    let candidates = all.join(ids, JoinType::LeftSemi, &["event_id"], &["n_id"], None)?;
    let copied_n = register_copied_ids(ctx, scratch, &candidates).await?;
    let row_type = row_type(&new)?;
    let new = new.alias("o")?;
    if copied_n == 0 {
        ctx.register_table(
            "dwd_kept",
            singles(new, targets, args.lateness_days)?.into_view(),
        )?;
        let appended = write_kept(ctx, args, run_id).await?;
        return Ok((appended, WriteOutcome::default(), BTreeMap::new(), 0));
    }
    let alone = on_copied(ctx, new, JoinType::LeftAnti).await?;
    register_groups(
        ctx,
        scratch,
        present,
        targets,
        args.lateness_days,
        &row_type,
    )
    .await?;
    let changes = collect_changes(ctx).await?;
    let winners = ctx
        .table("dwd_groups")
        .await?
        .filter(col("append"))?
        .select(vec![
            col("p_region"),
            col("p_target"),
            col("copies"),
            unpack(ctx, col("w"), &row_type)?.alias("r"),
        ])?;
    let kept = singles(alone, targets, args.lateness_days)?.union(unpacked(winners)?)?;
    ctx.register_table("dwd_kept", kept.into_view())?;
    let appended = write_kept(ctx, args, run_id).await?;
    let beaten: Vec<PartitionRef> = changes
        .iter()
        .filter(|(_, c)| c.dropped > 0)
        .map(|(p, _)| p.clone())
        .collect();
    let rewritten = rewrite(ctx, args, run_id, &beaten).await?;
    Ok((appended, rewritten, changes, copied_n))
}

/// Deduplicates the copied ids' rows again per DWD date, old and new
/// copies told apart, and registers the groups as `dwd_groups` (written
/// by the executors to the scratch folder): per date and id, whether the
/// new winner is appended to the date (`append`), whether the old kept row
/// is beaten (`drop`), and what the date's `duplicates` gain (`delta`).
async fn register_groups(
    ctx: &SessionContext,
    scratch: &Location,
    present: &BTreeSet<PartitionRef>,
    targets: &[(PartitionRef, String)],
    lateness_days: i64,
    row_type: &str,
) -> Result<()> {
    let flagged = |table: &'static str, is_new: bool| async move {
        Ok::<_, Error>(
            timed_ods(ctx, table, present, targets)
                .await?
                .with_column("is_new", lit(is_new))?,
        )
    };
    let rows = flagged("ods_old", false)
        .await?
        .union(flagged("ods_new", true).await?)?
        .alias("o")?;
    let rows = on_copied(ctx, rows, JoinType::LeftSemi).await?;
    let old = !col("is_new");
    let aggs = vec![
        rows_read("o").alias("copies"),
        count_distinct(when(old.clone(), place("o")).end()?).alias("copies_old"),
        min(pack(ctx)?).alias("w"),
        min(when(old, pack(ctx)?).end()?).alias("w_old"),
    ];
    let groups = window_groups(ctx, rows, targets, lateness_days, aggs)?.select(vec![
        col("o.region").alias("p_region"),
        col("t.target_dt").alias("p_target"),
        col("o.event_id").alias("event_id"),
        col("copies"),
        col("copies_old"),
        col("w"),
        col("w_old"),
    ])?;
    let local_dt =
        |w: Expr| -> Result<Expr> { Ok(get_field(unpack(ctx, w, row_type)?, "local_dt")) };
    let new_kept = local_dt(col("w"))?.eq(col("p_target"));
    // (unpacked only where there is an old winner: the function refuses NULL)
    let old_kept = col("w_old")
        .is_not_null()
        .and(local_dt(coalesce(vec![col("w_old"), col("w")]))?.eq(col("p_target")));
    let changed = col("w_old").is_null().or(col("w").not_eq(col("w_old")));
    let gained = when(new_kept.clone(), col("copies") - lit(1i64)).otherwise(lit(0i64))?;
    let lost = when(old_kept.clone(), col("copies_old") - lit(1i64)).otherwise(lit(0i64))?;
    let flags = groups.select(vec![
        col("p_region"),
        col("p_target"),
        col("event_id"),
        col("copies"),
        col("w"),
        new_kept.and(changed.clone()).alias("append"),
        old_kept.and(changed).alias("drop"),
        (gained - lost).alias("delta"),
    ])?;
    let dir = scratch.join("groups");
    let (state, plan) = flags.into_parts();
    let parquet = format_as_file_type(Arc::new(ParquetFormatFactory::new()));
    let plan =
        LogicalPlanBuilder::copy_to(plan, dir.url(), parquet, HashMap::new(), vec![])?.build()?;
    submitted::collect(
        DataFrame::new(state, plan),
        "tauc layering: dwd copied groups",
    )
    .await?;
    // A re-submitted job (a lost executor) may leave two attempts' rows:
    // identical, so read distinct.
    let groups = ctx
        .read_parquet(dir.url(), ParquetReadOptions::default())
        .await?
        .distinct()?;
    ctx.register_table("dwd_groups", groups.into_view())?;
    Ok(())
}

/// Per DWD date, the `duplicates` the groups add and how many old kept
/// rows they beat (a small result: one row per date).
async fn collect_changes(ctx: &SessionContext) -> Result<BTreeMap<PartitionRef, Change>> {
    let dropped = when(col("drop"), lit(1i64)).otherwise(lit(0i64))?;
    let df = ctx.table("dwd_groups").await?.aggregate(
        vec![col("p_region"), col("p_target")],
        vec![
            sum(col("delta")).alias("delta"),
            sum(dropped).alias("dropped"),
        ],
    )?;
    let batches = submitted::collect(df, "tauc layering: dwd patch changes").await?;
    let mut out = BTreeMap::new();
    for b in &batches {
        read_changes(b, &mut out)?;
    }
    Ok(out)
}

fn read_changes(b: &RecordBatch, out: &mut BTreeMap<PartitionRef, Change>) -> Result<()> {
    let bad = || {
        Error::Invariant(format!(
            "the DWD patch's changes came back as {:?}",
            b.schema()
        ))
    };
    let region = b.column(0).as_string_opt::<i32>().ok_or_else(bad)?;
    let dt = b
        .column(1)
        .as_primitive_opt::<Date32Type>()
        .ok_or_else(bad)?;
    let delta = b
        .column(2)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(bad)?;
    let dropped = b
        .column(3)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(bad)?;
    for i in 0..b.num_rows() {
        let p = PartitionRef {
            dt: date_of(dt.value(i)),
            region: region.value(i).to_string(),
        };
        let c = out.entry(p).or_default();
        c.duplicates += delta.value(i);
        c.dropped += dropped.value(i);
    }
    Ok(())
}

/// Writes the DWD dates `beaten` again without their beaten kept rows
/// (`dwd_groups` rows with `drop`), both tables; the appended rows are
/// committed beside these files.
async fn rewrite(
    ctx: &SessionContext,
    args: &LayeringArgs,
    run_id: &str,
    beaten: &[PartitionRef],
) -> Result<WriteOutcome> {
    let mut out = WriteOutcome::default();
    if beaten.is_empty() {
        return Ok(out);
    }
    tracing::info!(dates = ?beaten, "a new copy beat a kept DWD row: rewriting those dates");
    let dates = beaten
        .iter()
        .map(|p| {
            col("region")
                .eq(lit(p.region.as_str()))
                .and(col("dt").eq(lit(date_value(p.dt))))
        })
        .reduce(Expr::or)
        .unwrap_or_else(|| lit(false));
    for t in [Table::DwdTrkEvent, Table::DwdCorsError] {
        let drops = ctx
            .table("dwd_groups")
            .await?
            .filter(col("drop"))?
            .select(vec![
                col("p_region"),
                col("p_target"),
                col("event_id").alias("g_id"),
            ])?;
        let table = WarehouseTable::new(t, &args.warehouse);
        let kept = ctx
            .read_table(Arc::new(table))?
            .filter(dates.clone())?
            .join(
                drops,
                JoinType::LeftAnti,
                &["region", "dt", "event_id"],
                &["p_region", "p_target", "g_id"],
                None,
            )?
            .with_column(TABLE_COLUMN, lit(t.path()))?;
        let spec = WriteSpec {
            warehouse: args.warehouse.clone(),
            run_id: run_id.to_string(),
            counters: vec![],
            value_counts: vec![],
            limits: args.file_limits,
        };
        let written = write(kept, spec, "tauc layering: dwd rewrite").await?;
        out.rows_received += written.rows_received;
        out.files.extend(written.files);
    }
    Ok(out)
}
