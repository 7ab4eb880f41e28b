//! Compaction of the small files incremental runs append: each micro-batch
//! adds a file or a few to every ODS partition it loads and to every DWD
//! date it patches, so a day of one-minute batches would leave thousands
//! of files of a few hundred KB per partition — slow for every reader,
//! which opens each one.
//!
//! After its DWD stage, an incremental run looks at the partitions it
//! appended to; where `--compact-files` ([`SMALL_FILES`]) or more files are under
//! [`SMALL_BYTES`], the executors rewrite those into files of the usual
//! size, and the partition is committed once more with the big files kept
//! and the small ones replaced. The rows do not change, so the new version
//! keeps the content version of the one it replaces
//! ([`Lineage::content`]): nothing built from the partition is rebuilt for
//! it, and the next run still appends to it. The cost is bounded: only
//! files under [`SMALL_BYTES`] are rewritten, so a file is rewritten a few
//! times while it grows and never after.
//!
//! It runs after the DWD stage because the DWD patch tells this run's new
//! ODS rows by their file names (`part-{run_id}-…`); a compaction writes
//! under a run id of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::prelude::{SessionContext, col, lit};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;

use crate::error::{Error, Result};
use crate::warehouse::commit::{self, Lineage, Manifest, PartitionRef, carried, new_run_id};
use crate::warehouse::table::{FileSelect, WarehouseTable};
use crate::warehouse::tables::{Table, date_value};
use crate::warehouse::writer::{TABLE_COLUMN, WriteSpec};

use super::written::write;
use super::{JOB, LayeringArgs};

/// Files under this size are small.
pub const SMALL_BYTES: u64 = 32 * 1024 * 1024;

/// A partition is compacted when it holds this many small files, by
/// default (`--compact-files`).
pub const SMALL_FILES: usize = 16;

/// Compacts the partitions of `tables` the run appended to; returns how
/// many it compacted.
pub(super) async fn compact(
    ctx: &SessionContext,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    appended: &BTreeSet<(Table, PartitionRef)>,
) -> Result<usize> {
    // a manifest read and a LIST per partition: side by side
    let looks = appended.iter().map(|(table, p)| async move {
        let dir = p.location(&table.location(&args.warehouse));
        let Some(m) = commit::read_manifest(store.as_ref(), &dir).await? else {
            return Ok(None);
        };
        let small = small_files(store, &dir, &m).await?;
        let due = small.len() >= args.compact_files;
        Ok::<_, crate::error::Error>(due.then_some((*table, p, m, small)))
    });
    let due: Vec<_> = futures::stream::iter(looks)
        .buffered(commit::PARTITIONS_AT_ONCE)
        .try_collect()
        .await?;
    let mut done = 0;
    for (table, p, m, small) in due.into_iter().flatten() {
        compact_partition(ctx, store, args, table, p, &m, small).await?;
        done += 1;
    }
    Ok(done)
}

/// The files `m` lists that are under [`SMALL_BYTES`] (one LIST of the
/// partition's folder).
async fn small_files(
    store: &Arc<dyn ObjectStore>,
    dir: &crate::store::Location,
    m: &Manifest,
) -> Result<BTreeSet<String>> {
    let listed: Vec<_> = store.list(Some(&dir.path())).try_collect().await?;
    let sizes: BTreeMap<String, u64> = listed
        .into_iter()
        .filter_map(|o| {
            let name = o.location.filename()?.to_string();
            Some((name, o.size))
        })
        .collect();
    Ok(m.files
        .iter()
        .filter(|f| sizes.get(*f).is_some_and(|s| *s < SMALL_BYTES))
        .cloned()
        .collect())
}

/// Rewrites `small` of partition `p` (version `m`) into new files and
/// commits the partition with them in their place.
async fn compact_partition(
    ctx: &SessionContext,
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    table: Table,
    p: &PartitionRef,
    m: &Manifest,
    small: BTreeSet<String>,
) -> Result<()> {
    let run_id = new_run_id();
    let n = small.len();
    let source =
        WarehouseTable::new(table, &args.warehouse).with_files(FileSelect::Named(small.clone()));
    let df = ctx
        .read_table(Arc::new(source))?
        .filter(
            col("region")
                .eq(lit(p.region.as_str()))
                .and(col("dt").eq(lit(date_value(p.dt)))),
        )?
        .with_column(TABLE_COLUMN, lit(table.path()))?;
    let spec = WriteSpec {
        warehouse: args.warehouse.clone(),
        run_id: run_id.clone(),
        counters: vec![],
        value_counts: vec![],
        limits: args.file_limits,
    };
    let outcome = write(df, spec, "tauc layering: compaction").await?;
    let written = outcome.files_of(table, p);
    let rows: u64 = written.iter().map(|f| f.rows).sum();
    if outcome.partitions().iter().any(|q| q != p) || rows > m.rows {
        return Err(Error::Invariant(format!(
            "internal: the compaction of {} dt={} region={} wrote {rows} rows (the partition holds {}) or into another partition; nothing was committed",
            table.path(),
            p.dt,
            p.region,
            m.rows
        )));
    }
    let mut files = carried(
        &m.files
            .iter()
            .filter(|f| !small.contains(*f))
            .cloned()
            .collect::<Vec<_>>(),
    );
    files.extend(written);
    let lineage = Lineage {
        content: Some(m.content_version().to_string()),
        carried_rows: m.rows - rows,
        ..m.lineage.clone()
    };
    let dir = p.location(&table.location(&args.warehouse));
    commit::commit_files_with(
        store.as_ref(),
        &run_id,
        JOB,
        table,
        &dir,
        p,
        &files,
        lineage,
    )
    .await?;
    tracing::info!(table = table.path(), dt = %p.dt, region = %p.region, files = n, rows, "compacted small files");
    Ok(())
}
