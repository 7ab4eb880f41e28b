//! What an ODS partition has loaded: the loads of raw objects recorded in
//! its `ods_fe_event_di` manifest, and beside each incremental load the
//! list of the objects it read (layers.md, "Incremental loads").
//!
//! The event manifest is the commit point of a load: once it lists a load,
//! the load's objects count as loaded, and the partition's quarantine and
//! load statistics are what its loads add up to — the run that commits the
//! manifest writes them next, and any later run of the partition rewrites
//! them when a kill came in between ([`Load::quarantine_files`] names the
//! files).
//!
//! The object lists live outside the tables, under
//! `{warehouse}/_loads/dt=…/region=…/objects-{run_id}.parquet`, one small
//! file per load in key order (`folded-{run_id}.parquet` for loads folded
//! into one, [`fold`]): an incremental run reads those that can hold keys
//! above its listing's start to know what is new, and no reader of the
//! tables ever sees them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::parquet::file::properties::WriterProperties;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};
use crate::store::Location;
use crate::warehouse::commit::PartitionRef;
pub use crate::warehouse::lineage::{Load, RawObject};

/// Where a partition's object lists are.
pub fn loads_dir(warehouse: &Location, p: &PartitionRef) -> Location {
    p.location(&warehouse.join("_loads"))
}

fn objects_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, false),
        Field::new("e_tag", DataType::Utf8, true),
    ]))
}

/// Writes the list of the objects a load read, in key order; returns
/// its file name.
pub async fn write_objects(
    store: &Arc<dyn ObjectStore>,
    warehouse: &Location,
    p: &PartitionRef,
    run_id: &str,
    objects: &[RawObject],
) -> Result<String> {
    write_list(
        store,
        warehouse,
        p,
        &format!("objects-{run_id}.parquet"),
        objects,
    )
    .await
}

/// Rows per row group of an object list: a partial listing reads only
/// the row groups whose largest key is above its start (their
/// statistics, exact, are in the footer), so a long list costs its
/// footer and its newest groups.
const LIST_ROW_GROUP: usize = 4096;

async fn write_list(
    store: &Arc<dyn ObjectStore>,
    warehouse: &Location,
    p: &PartitionRef,
    name: &str,
    objects: &[RawObject],
) -> Result<String> {
    let mut sorted: Vec<&RawObject> = objects.iter().collect();
    sorted.sort();
    let batch = RecordBatch::try_new(
        objects_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                sorted.iter().map(|o| o.key.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(sorted.iter().map(|o| o.size))),
            Arc::new(StringArray::from_iter(
                sorted.iter().map(|o| o.e_tag.as_deref()),
            )),
        ],
    )?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(LIST_ROW_GROUP))
        .set_statistics_truncate_length(None)
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, objects_schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    let dir = loads_dir(warehouse, p);
    let path = Path::from(format!("{}/{name}", dir.prefix));
    store.put(&path, PutPayload::from(buf)).await?;
    Ok(name.to_string())
}

/// What [`loaded_objects`] read.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The loaded objects whose keys sort after the listing's start, by key.
    pub objects: BTreeMap<String, RawObject>,
    /// Object lists read (wholly or in part).
    pub lists_read: u64,
}

/// The objects `loads` read whose keys sort after `after` (a full key;
/// `None`: all), by key; only the lists of loads that can hold such keys
/// are read, and of those only the row groups that can. `None` when one
/// of the loads is a full run's (its objects are not recorded).
pub async fn loaded_objects(
    store: &Arc<dyn ObjectStore>,
    warehouse: &Location,
    p: &PartitionRef,
    loads: &[Load],
    after: Option<&str>,
) -> Result<Option<Loaded>> {
    let dir = loads_dir(warehouse, p);
    let mut out = Loaded::default();
    for load in loads {
        let Some(name) = &load.objects_file else {
            return Ok(None);
        };
        let below = matches!((after, &load.last_key), (Some(a), Some(last)) if last.as_str() <= a);
        if load.files == 0 || below {
            continue;
        }
        let path = Path::from(format!("{}/{name}", dir.prefix));
        read_list(store, &path, after, &mut out.objects)
            .await
            .map_err(|e| match e {
                Error::Invariant(m) => {
                    Error::Invariant(format!("{dir}/{name}: not a list of loaded objects: {m}"))
                }
                e => e,
            })?;
        out.lists_read += 1;
    }
    Ok(Some(out))
}

/// Reads the rows of the object list at `path` with keys after `after`,
/// fetching only the row groups that can hold them.
async fn read_list(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    after: Option<&str>,
    out: &mut BTreeMap<String, RawObject>,
) -> Result<()> {
    use futures::TryStreamExt;
    let size = store.head(path).await?.size;
    let reader = ListReader {
        store: store.clone(),
        path: path.clone(),
        size,
    };
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let groups: Vec<usize> = builder
        .metadata()
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, g)| {
            let max = g.column(0).statistics().and_then(|s| s.max_bytes_opt());
            match (after, max) {
                (Some(a), Some(m)) => m > a.as_bytes(),
                _ => true,
            }
        })
        .map(|(i, _)| i)
        .collect();
    let batches: Vec<RecordBatch> = builder
        .with_row_groups(groups)
        .build()?
        .try_collect()
        .await?;
    for batch in &batches {
        read_batch(batch, after, out)?;
    }
    Ok(())
}

/// Ranged reads of one object list: its footer, then the row groups
/// chosen.
struct ListReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl AsyncFileReader for ListReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<bytes::Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            // one ranged GET holds the footer of a list of any length
            let reader = ParquetMetaDataReader::new().with_prefetch_hint(Some(64 * 1024));
            Ok(Arc::new(reader.load_and_finish(self, size).await?))
        }
        .boxed()
    }
}

fn read_batch(
    batch: &RecordBatch,
    after: Option<&str>,
    out: &mut BTreeMap<String, RawObject>,
) -> Result<()> {
    let column = |i: usize| {
        batch
            .columns()
            .get(i)
            .ok_or_else(|| Error::Invariant(format!("column {i} missing")))
    };
    let keys = column(0)?.as_string_opt::<i32>();
    let sizes = column(1)?.as_primitive_opt::<UInt64Type>();
    let tags = column(2)?.as_string_opt::<i32>();
    let (Some(keys), Some(sizes), Some(tags)) = (keys, sizes, tags) else {
        return Err(Error::Invariant("unexpected column types".into()));
    };
    for i in 0..batch.num_rows() {
        if after.is_some_and(|a| keys.value(i) <= a) {
            continue;
        }
        let object = RawObject {
            key: keys.value(i).to_string(),
            size: sizes.value(i),
            e_tag: (!tags.is_null(i)).then(|| tags.value(i).to_string()),
        };
        out.insert(object.key.clone(), object);
    }
    Ok(())
}

/// The load statistics of a partition: its loads added up (`files_ignored`
/// as the last listing saw the folder).
pub fn total(loads: &[Load]) -> Load {
    let mut t = Load::default();
    for l in loads {
        t.files += l.files;
        t.bytes += l.bytes;
        t.lines += l.lines;
        t.blank_lines += l.blank_lines;
        t.valid_rows += l.valid_rows;
        t.quarantined_rows += l.quarantined_rows;
        t.quarantine_files
            .extend(l.quarantine_files.iter().cloned());
        t.files_ignored = l.files_ignored;
    }
    t
}

/// Deletes the object lists of partition `p` other than `keep` (those of
/// loads a replacing or folding version no longer lists, and any a killed
/// run wrote but never committed).
pub async fn remove_unlisted(
    store: &Arc<dyn ObjectStore>,
    warehouse: &Location,
    p: &PartitionRef,
    keep: &[String],
) -> Result<()> {
    use futures::TryStreamExt;
    let dir = loads_dir(warehouse, p);
    let listed: Vec<_> = store.list(Some(&dir.path())).try_collect().await?;
    for meta in listed {
        let name = meta.location.filename().unwrap_or_default();
        if name != FULL_LISTING && !keep.iter().any(|k| k == name) {
            match store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// `loads` folded into one (a compaction): the counters summed, the
/// quarantine files in order, the object lists merged into one list
/// written as `folded-{run_id}.parquet`; the load statistics of the
/// partition stay what they were ([`total`] of the one equals [`total`]
/// of the many).
pub async fn fold(
    store: &Arc<dyn ObjectStore>,
    warehouse: &Location,
    p: &PartitionRef,
    run_id: &str,
    loads: &[Load],
) -> Result<Load> {
    let Some(all) = loaded_objects(store, warehouse, p, loads, None).await? else {
        return Err(Error::Invariant(format!(
            "{p:?}: a full run's load cannot be folded (its objects are not recorded)"
        )));
    };
    let objects: Vec<RawObject> = all.objects.into_values().collect();
    let name = format!("folded-{run_id}.parquet");
    let mut folded = total(loads);
    folded.run_id = run_id.to_string();
    folded.objects_file = Some(write_list(store, warehouse, p, &name, &objects).await?);
    folded.first_key = objects.first().map(|o| o.key.clone());
    folded.last_key = objects.last().map(|o| o.key.clone());
    folded.folded = loads.iter().map(|l| l.folded.max(1)).sum();
    Ok(folded)
}

/// The side file recording when the partition's folder was last listed
/// whole with everything in it loaded.
const FULL_LISTING: &str = "full-listing.json";

#[derive(Serialize, Deserialize)]
struct FullListing {
    /// When that listing began, epoch ms.
    began_at: i64,
}

/// Records that a full listing of `p`'s folder begun at `began_at` found
/// every batch in it loaded (by the version committed now). Outside the
/// manifest, so that a run with nothing new need not commit a version:
/// losing it costs one more full listing, nothing else.
pub async fn record_full_listing(
    store: &Arc<dyn ObjectStore>,
    warehouse: &Location,
    p: &PartitionRef,
    began_at: i64,
) -> Result<()> {
    let dir = loads_dir(warehouse, p);
    let path = Path::from(format!("{}/{FULL_LISTING}", dir.prefix));
    let body = serde_json::to_vec(&FullListing { began_at })
        .map_err(|e| Error::Invariant(format!("{dir}/{FULL_LISTING}: {e}")))?;
    store.put(&path, PutPayload::from(body)).await?;
    Ok(())
}

/// When `p`'s folder was last listed whole with everything loaded, if
/// recorded ([`record_full_listing`]); an unreadable record counts as none.
pub async fn last_full_listing(
    store: &Arc<dyn ObjectStore>,
    warehouse: &Location,
    p: &PartitionRef,
) -> Result<Option<i64>> {
    let dir = loads_dir(warehouse, p);
    let path = Path::from(format!("{}/{FULL_LISTING}", dir.prefix));
    let bytes = match store.get(&path).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(serde_json::from_slice::<FullListing>(&bytes)
        .ok()
        .map(|f| f.began_at))
}
