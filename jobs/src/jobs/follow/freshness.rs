//! How far behind the browser the warehouse is: per region, the newest
//! `collector_ts` committed in `dwd_trk_event_di`.
//!
//! After each batch the manifests of the DWD dates the batch can change
//! are read (one GET each), and for a partition whose version moved — by
//! this batch or by any other run — the Parquet footers of its files (the
//! column statistics hold each row group's maximum), not its rows: one
//! ranged GET per file.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::parquet::file::statistics::Statistics;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};
use crate::store::Location;
use crate::warehouse::commit::{self, PartitionRef};
use crate::warehouse::tables::Table;

/// A footer is a few KiB: one suffix GET of this size reads it whole.
const FOOTER_HINT: u64 = 64 * 1024;

/// What was read of each DWD partition: the version (run id) and its
/// newest `collector_ts` (ms since the epoch; `None` when empty), per
/// region and date.
#[derive(Debug, Default, Clone)]
pub struct Freshness {
    read: BTreeMap<String, BTreeMap<NaiveDate, (String, Option<i64>)>>,
}

impl Freshness {
    /// Reads the manifests of the committed `dwd_trk_event_di` partitions
    /// `parts`, and the footers of those whose version changed since the
    /// last read (by a batch or by any other run).
    pub async fn refresh(
        &mut self,
        store: &Arc<dyn ObjectStore>,
        warehouse: &Location,
        parts: impl IntoIterator<Item = PartitionRef>,
    ) -> Result<()> {
        for p in parts {
            let dir = p.location(&Table::DwdTrkEvent.location(warehouse));
            let dates = self.read.entry(p.region.clone()).or_default();
            let Some(manifest) = commit::read_manifest(store.as_ref(), &dir).await? else {
                dates.remove(&p.dt);
                continue;
            };
            if dates
                .get(&p.dt)
                .is_some_and(|(run, _)| *run == manifest.run_id)
            {
                continue;
            }
            let newest = newest_in(store, &dir, &manifest.files).await?;
            dates.insert(p.dt, (manifest.run_id, newest));
        }
        Ok(())
    }

    /// The newest `collector_ts` (ms) committed for each region read.
    pub fn newest(&self) -> BTreeMap<String, i64> {
        self.read
            .iter()
            .filter_map(|(r, dates)| {
                let newest = dates.values().filter_map(|(_, ms)| *ms).max()?;
                Some((r.clone(), newest))
            })
            .collect()
    }
}

/// The newest `collector_ts` of the files of a partition directory.
async fn newest_in(
    store: &Arc<dyn ObjectStore>,
    dir: &Location,
    files: &[String],
) -> Result<Option<i64>> {
    let mut newest = None;
    for f in files {
        let path = Path::from(format!("{}/{f}", dir.prefix));
        let meta = footer(store.as_ref(), &path).await?;
        newest = newest.max(max_collector_ts(&meta));
    }
    Ok(newest)
}

/// A Parquet file's metadata: its last [`FOOTER_HINT`] bytes in one GET
/// (a second one only when the metadata is longer).
async fn footer(store: &dyn ObjectStore, path: &Path) -> Result<ParquetMetaData> {
    let opts = GetOptions {
        range: Some(GetRange::Suffix(FOOTER_HINT)),
        ..GetOptions::default()
    };
    let got = store.get_opts(path, opts).await?;
    let size = got.meta.size;
    let tail = got.bytes().await?;
    let n = tail.len();
    let short = || Error::Invariant(format!("{path}: too short for a Parquet footer"));
    let len_at = n.checked_sub(8).ok_or_else(short)?;
    let len = u32::from_le_bytes(tail[len_at..len_at + 4].try_into().expect("4 bytes")) as u64;
    let meta = match (len_at as u64).checked_sub(len) {
        Some(start) => tail.slice(start as usize..len_at),
        None => {
            let end = size - 8;
            let start = end.checked_sub(len).ok_or_else(short)?;
            store.get_range(path, start..end).await?
        }
    };
    Ok(ParquetMetaDataReader::decode_metadata(&meta)?)
}

/// The largest `collector_ts` the row groups' statistics give.
fn max_collector_ts(meta: &ParquetMetaData) -> Option<i64> {
    let schema = meta.file_metadata().schema_descr();
    let column = (0..schema.num_columns()).find(|&i| schema.column(i).name() == "collector_ts")?;
    meta.row_groups()
        .iter()
        .filter_map(|rg| match rg.column(column).statistics() {
            Some(Statistics::Int64(s)) => s.max_opt().copied(),
            _ => None,
        })
        .max()
}
