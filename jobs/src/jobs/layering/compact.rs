//! Compaction of the small files incremental runs append: each micro-batch
//! adds a file or a few to every ODS partition it loads and to every DWD
//! date it patches, so a day of one-minute batches would leave thousands
//! of files of a few hundred KB per partition — slow for every reader,
//! which opens each one.
//!
//! After its DWD stage, an incremental run looks at the partitions it
//! appended to. Their files under [`SMALL_BYTES`] fall into size classes
//! ([`size_class`]: under [`CLASS_BASE`], then each class `--compact-files`
//! times the one before); where a class holds `--compact-files`
//! ([`SMALL_FILES`]) files or more, the executors rewrite those into one
//! file (or a few), which lands a class or more higher, and the partition
//! is committed once more with the other files kept and those replaced.
//! The rows do not change, so the new version keeps the content version
//! of the one it replaces ([`Lineage::content`]): nothing built from the
//! partition is rebuilt for it, and the next run still appends to it.
//!
//! Why classes (size-tiered, as in an LSM tree): merging every small file
//! each time rewrites the whole partition's small part at every
//! compaction, so the cost of a micro-batch grew with the day until the
//! first file passed [`SMALL_BYTES`]. By class, a row is rewritten once
//! per class it climbs (two or three times before it is in a big file),
//! and a batch's share of the work stays the same all day; the price is
//! up to `--compact-files - 1` small files per class left unmerged.
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

/// Small files under this size are of the first size class.
pub const CLASS_BASE: u64 = 1024 * 1024;

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
        let due = due_files(&small_files(store, &dir, &m).await?, args.compact_files);
        Ok::<_, crate::error::Error>((!due.is_empty()).then_some((*table, p, m, due)))
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

/// The size class of a small file of `size` bytes: 0 under
/// [`CLASS_BASE`], then `k` for `[CLASS_BASE·fan^(k-1), CLASS_BASE·fan^k)`.
pub fn size_class(size: u64, fan: usize) -> u32 {
    let fan = fan.max(2) as u64;
    let (mut class, mut bound) = (0, CLASS_BASE);
    while size >= bound {
        class += 1;
        bound = bound.saturating_mul(fan);
    }
    class
}

/// The small files to merge now: those of every size class that holds
/// `fan` files or more.
fn due_files(small: &BTreeMap<String, u64>, fan: usize) -> BTreeSet<String> {
    let mut classes: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    for (name, size) in small {
        classes
            .entry(size_class(*size, fan))
            .or_default()
            .insert(name.clone());
    }
    classes
        .into_values()
        .filter(|names| names.len() >= fan.max(2))
        .flatten()
        .collect()
}

/// The files `m` lists that are under [`SMALL_BYTES`], with their sizes
/// (one LIST of the partition's folder).
async fn small_files(
    store: &Arc<dyn ObjectStore>,
    dir: &crate::store::Location,
    m: &Manifest,
) -> Result<BTreeMap<String, u64>> {
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
        .filter_map(|f| Some((f.clone(), *sizes.get(f)?)))
        .filter(|(_, size)| *size < SMALL_BYTES)
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn size_classes_grow_by_the_fan_in() {
        assert_eq!(size_class(0, 16), 0);
        assert_eq!(size_class(MIB - 1, 16), 0);
        assert_eq!(size_class(MIB, 16), 1);
        assert_eq!(size_class(16 * MIB - 1, 16), 1);
        assert_eq!(size_class(16 * MIB, 16), 2);
        // a fan-in below 2 would never climb: taken as 2
        assert_eq!(size_class(2 * MIB, 1), 2);
    }

    #[test]
    fn only_full_classes_are_merged() {
        let files = |sizes: &[u64]| -> BTreeMap<String, u64> {
            sizes
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("f{i:02}"), *s))
                .collect()
        };
        // three small ones and two of the next class, fan-in 3: the small
        // three merge, the two wait
        let due = due_files(&files(&[100, 200, 300, 2 * MIB, 5 * MIB / 2]), 3);
        assert_eq!(due, ["f00", "f01", "f02"].map(String::from).into());
        // a merge's output one class up joins its peers when they are enough
        let due = due_files(&files(&[100, 2 * MIB, 5 * MIB / 2, 2 * MIB]), 3);
        assert_eq!(due, ["f01", "f02", "f03"].map(String::from).into());
        assert!(due_files(&files(&[100, 2 * MIB]), 3).is_empty());
    }
}
