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
//! file per load: an incremental run reads them to know what is new, and
//! no reader of the tables ever sees them.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};
use crate::store::Location;
use crate::warehouse::commit::{PartitionRef, parquet_bytes};
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

/// Writes the list of the objects a load read; returns its file name.
pub async fn write_objects(
    store: &Arc<dyn ObjectStore>,
    warehouse: &Location,
    p: &PartitionRef,
    run_id: &str,
    objects: &[RawObject],
) -> Result<String> {
    let batch = RecordBatch::try_new(
        objects_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                objects.iter().map(|o| o.key.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                objects.iter().map(|o| o.size),
            )),
            Arc::new(StringArray::from_iter(
                objects.iter().map(|o| o.e_tag.as_deref()),
            )),
        ],
    )?;
    let name = format!("objects-{run_id}.parquet");
    let dir = loads_dir(warehouse, p);
    let bytes = parquet_bytes(&objects_schema(), &[batch])?;
    let path = Path::from(format!("{}/{name}", dir.prefix));
    store.put(&path, PutPayload::from(bytes)).await?;
    Ok(name)
}

/// The objects `loads` read, by key; `None` when one of them is a full
/// run's load (its objects are not recorded).
pub async fn loaded_objects(
    store: &Arc<dyn ObjectStore>,
    warehouse: &Location,
    p: &PartitionRef,
    loads: &[Load],
) -> Result<Option<BTreeMap<String, RawObject>>> {
    let dir = loads_dir(warehouse, p);
    let mut out = BTreeMap::new();
    for load in loads {
        let Some(name) = &load.objects_file else {
            return Ok(None);
        };
        let path = Path::from(format!("{}/{name}", dir.prefix));
        let bytes = store.get(&path).await?.bytes().await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        for batch in reader {
            let batch = batch?;
            read_batch(&batch, &mut out).map_err(|e| {
                Error::Invariant(format!("{dir}/{name}: not a list of loaded objects: {e}"))
            })?;
        }
    }
    Ok(Some(out))
}

fn read_batch(batch: &RecordBatch, out: &mut BTreeMap<String, RawObject>) -> Result<()> {
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
/// loads a replacing version no longer lists).
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
        if !keep.iter().any(|k| k == name) {
            match store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
