//! How far behind the browser the warehouse is: per region, the newest
//! `collector_ts` committed.
//!
//! DWD rows carry no `collector_ts` (only `event_ts` and `lateness_ms`),
//! so it is read from the `ods_fe_event_di` partitions of the batch's
//! collection dates: a batch commits DWD after them, so once it has ended
//! ok its rows are in DWD too (a duplicate keeps its first copy's time
//! there, so this is the newest time up to which every collected event is
//! in). Read from Parquet footers, not rows: after each batch the
//! partitions' manifests are read (one GET each), and the footers (the
//! column statistics hold each row group's maximum; two ranged GETs) of
//! the files not read before — data files never change, and an appended
//! partition lists its old files again.

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

/// What was read of each ODS event partition, per region and date: the
/// newest `collector_ts` (ms since the epoch; `None` when empty) of each
/// of its files.
#[derive(Debug, Default, Clone)]
pub struct Freshness {
    read: BTreeMap<String, BTreeMap<NaiveDate, Files>>,
}

/// A partition's files, each with its newest `collector_ts`.
type Files = BTreeMap<String, Option<i64>>;

impl Freshness {
    /// Reads the manifests of the committed `ods_fe_event_di` partitions
    /// `parts`, and the footers of their files not read before.
    pub async fn refresh(
        &mut self,
        store: &Arc<dyn ObjectStore>,
        warehouse: &Location,
        parts: impl IntoIterator<Item = PartitionRef>,
    ) -> Result<()> {
        for p in parts {
            let dir = p.location(&Table::OdsEvent.location(warehouse));
            let dates = self.read.entry(p.region.clone()).or_default();
            let Some(manifest) = commit::read_manifest(store.as_ref(), &dir).await? else {
                dates.remove(&p.dt);
                continue;
            };
            let known = dates.remove(&p.dt).unwrap_or_default();
            let mut now = Files::new();
            for f in manifest.files {
                let newest = match known.get(&f) {
                    Some(ms) => *ms,
                    None => newest_in(store.as_ref(), &dir, &f).await?,
                };
                now.insert(f, newest);
            }
            dates.insert(p.dt, now);
        }
        Ok(())
    }

    /// The newest `collector_ts` (ms) committed for each region read.
    pub fn newest(&self) -> BTreeMap<String, i64> {
        self.read
            .iter()
            .filter_map(|(r, dates)| {
                let all = dates.values().flat_map(|files| files.values());
                Some((r.clone(), all.filter_map(|ms| *ms).max()?))
            })
            .collect()
    }
}

/// The newest `collector_ts` of one data file of a partition directory.
async fn newest_in(store: &dyn ObjectStore, dir: &Location, file: &str) -> Result<Option<i64>> {
    let path = Path::from(format!("{}/{file}", dir.prefix));
    let meta = footer(store, &path).await?;
    Ok(max_collector_ts(&meta))
}

/// A Parquet file's metadata: its last 8 bytes (the metadata's length;
/// the answer also gives the file's size), then the metadata — two ranged
/// GETs. (A longer suffix would save one, but an S3-compatible server may
/// refuse a suffix longer than the object.)
async fn footer(store: &dyn ObjectStore, path: &Path) -> Result<ParquetMetaData> {
    let opts = GetOptions {
        range: Some(GetRange::Suffix(8)),
        ..GetOptions::default()
    };
    let got = store.get_opts(path, opts).await?;
    let size = got.meta.size;
    let tail = got.bytes().await?;
    let short = || Error::Invariant(format!("{path}: too short for a Parquet footer"));
    if tail.len() != 8 {
        return Err(short());
    }
    let len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    let end = size.checked_sub(8).ok_or_else(short)?;
    let start = end.checked_sub(len).ok_or_else(short)?;
    let meta = store.get_range(path, start..end).await?;
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
