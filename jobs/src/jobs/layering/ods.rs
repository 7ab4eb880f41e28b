//! The ODS stage: every raw folder of the run scanned and written by the
//! executors, its counters checked, its partitions committed.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::case;
use datafusion::prelude::{SessionContext, col, lit};
use object_store::ObjectStore;

use crate::engine::client::submitted;
use crate::error::{Error, Result};
use crate::ingest::raw_scan::{
    Folder, KIND_REJECTED, KIND_VALID, RangeStats, RawEventsTable, RawSource, STAT_COLUMNS,
};
use crate::jobs::progress::Progress;
use crate::warehouse::commit::{self, PartitionRef, WriteOutcome};
use crate::warehouse::tables::Table;
use crate::warehouse::writer::{TABLE_COLUMN, WriteSpec};

use super::written::{commit_written, only_into, write};
use super::{JOB, LayeringArgs, OdsSummary};

/// The first stage: every raw folder of the run scanned and written to ODS
/// by the executors; returns each partition's summary and the result rows
/// received.
pub(super) async fn load_ods(
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
        objects: None,
    };
    let outcome = scan_into_ods(ctx, table, args, run_id, started_at, "tauc layering: ods").await?;
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
    let outcome_ref = &outcome;
    commit::each_partition(&summaries, |(p, summary)| async move {
        let tables = [Table::OdsEvent, Table::OdsQuarantine];
        commit_written(
            store,
            args,
            run_id,
            outcome_ref,
            p,
            tables,
            Default::default(),
        )
        .await?;
        let stats = load_stats_batch(summary, run_id, started_at, finished_at)?;
        let table = Table::OdsLoadStats;
        commit::commit_table(store, run_id, JOB, &args.warehouse, table, p, vec![stats]).await?;
        Ok(())
    })
    .await?;
    Ok((summaries, outcome.received()))
}

/// Runs the raw scan `table` through the writer as the Ballista job
/// `name`: valid rows to `ods_fe_event_di`, rejected ones to the
/// quarantine (detected at `started_at`), the scan's counters reported.
pub(super) async fn scan_into_ods(
    ctx: &SessionContext,
    table: RawEventsTable,
    args: &LayeringArgs,
    run_id: &str,
    started_at: i64,
    name: &str,
) -> Result<WriteOutcome> {
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
    write(df, spec, name).await
}

/// One ODS partition's counters from the writers' report, with the
/// accounting invariant checked: `lines - blank_lines = valid + quarantined`.
pub(super) fn ods_summary(outcome: &WriteOutcome, p: &PartitionRef) -> Result<OdsSummary> {
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
        appended_to: None,
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

pub(super) fn load_stats_batch(
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
