//! The `_SUCCESS` manifest commit protocol (layers.md, "Commit protocol").
//!
//! A partition is the files its manifest lists, nothing else:
//! 1. the run writes its data files, named with its run id;
//! 2. it replaces `_SUCCESS` (a single PUT: atomic on S3 and, through a
//!    rename, on a local disk);
//! 3. it deletes the partition's files the new manifest does not list.
//!
//! A run killed before 2 leaves the old manifest and some unlisted strays;
//! killed after 2, the new version. Readers follow the manifest, so they
//! never see a mix, and step 3 of the next commit removes the strays.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{NaiveDate, SecondsFormat, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Location;
use crate::tables::Table;

/// Name of the manifest file in a partition directory.
pub const MANIFEST: &str = "_SUCCESS";

/// Rows per data file; larger partitions get several files.
pub const ROWS_PER_FILE: usize = 1_000_000;

/// The manifest of one committed partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The run that committed this version.
    pub run_id: String,
    /// The job that ran.
    pub job: String,
    /// `layer/table`.
    pub table: String,
    /// Partition date.
    pub dt: NaiveDate,
    /// Partition region.
    pub region: String,
    /// Data file names, relative to the partition directory.
    pub files: Vec<String>,
    /// Total rows in `files`.
    pub rows: u64,
    /// When the manifest was written (RFC 3339, UTC).
    pub committed_at: String,
}

/// One partition of a table: `{table}/dt={dt}/region={region}`; ordered
/// by date, then region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionRef {
    /// Partition date.
    pub dt: NaiveDate,
    /// Partition region.
    pub region: String,
}

impl PartitionRef {
    /// The partition's directory under a table's location.
    pub fn location(&self, table: &Location) -> Location {
        table.join(&format!(
            "dt={}/region={}",
            self.dt.format("%Y-%m-%d"),
            self.region
        ))
    }
}

/// Reads a partition's manifest; `None` when the partition was never
/// committed.
pub async fn read_manifest(store: &dyn ObjectStore, dir: &Location) -> Result<Option<Manifest>> {
    let path = Path::from(format!("{}/{MANIFEST}", dir.prefix));
    match store.get(&path).await {
        Ok(r) => {
            let bytes = r.bytes().await?;
            let m = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Invariant(format!("corrupt manifest {dir}/{MANIFEST}: {e}")))?;
            Ok(Some(m))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Encodes batches as one Parquet file.
pub fn parquet_bytes(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Bytes> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema.clone(), Some(props))?;
    for b in batches {
        w.write(b)?;
    }
    w.close()?;
    Ok(Bytes::from(buf))
}

/// What a commit writes into one partition.
pub struct PartitionWrite<'a> {
    /// The table's location (`{warehouse}/{layer}/{table}`).
    pub table: &'a Location,
    /// `layer/table`, for the manifest.
    pub table_name: &'a str,
    /// Which partition.
    pub partition: &'a PartitionRef,
    /// The table's schema (without partition columns).
    pub schema: SchemaRef,
    /// The rows; may be empty, which commits an empty partition.
    pub batches: Vec<RecordBatch>,
}

/// Commits one partition: data files, then the manifest, then strays.
pub async fn commit_partition(
    store: &Arc<dyn ObjectStore>,
    run_id: &str,
    job: &str,
    w: PartitionWrite<'_>,
) -> Result<Manifest> {
    let dir = w.partition.location(w.table);
    let rows: usize = w.batches.iter().map(|b| b.num_rows()).sum();
    let mut files = Vec::new();
    let mut chunk: Vec<RecordBatch> = Vec::new();
    let mut chunk_rows = 0;
    let mut flush = |chunk: &mut Vec<RecordBatch>| -> Result<Option<(String, Bytes)>> {
        if chunk.is_empty() {
            return Ok(None);
        }
        let name = format!("part-{run_id}-{:05}.parquet", files.len());
        let bytes = parquet_bytes(&w.schema, chunk)?;
        chunk.clear();
        files.push(name.clone());
        Ok(Some((name, bytes)))
    };
    let mut pending = Vec::new();
    for b in w.batches.into_iter().filter(|b| b.num_rows() > 0) {
        chunk_rows += b.num_rows();
        chunk.push(b);
        if chunk_rows >= ROWS_PER_FILE {
            pending.extend(flush(&mut chunk)?);
            chunk_rows = 0;
        }
    }
    pending.extend(flush(&mut chunk)?);
    for (name, bytes) in pending {
        let path = Path::from(format!("{}/{name}", dir.prefix));
        store.put(&path, PutPayload::from_bytes(bytes)).await?;
    }
    let manifest = Manifest {
        run_id: run_id.to_string(),
        job: job.to_string(),
        table: w.table_name.to_string(),
        dt: w.partition.dt,
        region: w.partition.region.clone(),
        files,
        rows: rows as u64,
        committed_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    let body = serde_json::to_vec_pretty(&manifest)?;
    let path = Path::from(format!("{}/{MANIFEST}", dir.prefix));
    store.put(&path, PutPayload::from(body)).await?;
    remove_strays(store.as_ref(), &dir, &manifest).await?;
    Ok(manifest)
}

/// Deletes the files of a partition directory that its manifest does not
/// list (leftovers of killed or superseded runs).
pub async fn remove_strays(store: &dyn ObjectStore, dir: &Location, m: &Manifest) -> Result<usize> {
    let listed: Vec<_> = store.list(Some(&dir.path())).try_collect().await?;
    let mut removed = 0;
    for meta in listed {
        let key = meta.location.as_ref();
        let name = key.rsplit('/').next().unwrap_or(key);
        let direct = key
            .strip_prefix(&dir.prefix)
            .map(|r| r.trim_start_matches('/'))
            == Some(name);
        if direct && name != MANIFEST && !m.files.iter().any(|f| f == name) {
            store.delete(&meta.location).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The committed files of a partition as URLs, with the manifest; `None`
/// when the partition does not exist.
pub async fn committed_files(
    store: &dyn ObjectStore,
    table: &Location,
    p: &PartitionRef,
) -> Result<Option<(Manifest, Vec<String>)>> {
    let dir = p.location(table);
    Ok(read_manifest(store, &dir).await?.map(|m| {
        let urls = m
            .files
            .iter()
            .map(|f| format!("{}{f}", dir.url()))
            .collect();
        (m, urls)
    }))
}

/// Commits one partition of a warehouse table for `job`.
pub async fn commit_table(
    store: &Arc<dyn ObjectStore>,
    run_id: &str,
    job: &str,
    warehouse: &Location,
    table: Table,
    p: &PartitionRef,
    batches: Vec<RecordBatch>,
) -> Result<Manifest> {
    let loc = table.location(warehouse);
    commit_partition(
        store,
        run_id,
        job,
        PartitionWrite {
            table: &loc,
            table_name: table.path(),
            partition: p,
            schema: table.schema(),
            batches,
        },
    )
    .await
}
