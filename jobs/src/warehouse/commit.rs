//! The `_SUCCESS` manifest commit protocol (layers.md, "Commit protocol").
//!
//! A partition is the files its manifest lists, nothing else:
//! 1. the run writes its data files, named with its run id;
//! 2. it replaces `_SUCCESS` (a single PUT: atomic on S3 and, through a
//!    rename, on a local disk);
//! 3. it deletes the partition's files the new manifest does not list —
//!    but the previous version's files only once running queries are done
//!    with them: the manifest keeps them as `replaced` for a while
//!    ([`keep_replaced`]) and a later commit (or [`sweep`]) deletes them.
//!
//! A run killed before 2 leaves the old manifest and some unlisted strays;
//! killed after 2, the new version. Readers follow the manifest, so they
//! never see a mix, and step 3 of the next commit removes the strays.
//!
//! The data files are written by the executors ([`crate::warehouse::writer`]);
//! what reaches `tauc-job` is one row per file. [`WriteOutcome`] gathers
//! those rows, and [`commit_files`] does steps 2 and 3 for one partition.
//! Step 3 re-reads the partition's current manifest first and never
//! deletes a file it lists, and runs on the same partitions exclude each
//! other with a lease ([`crate::warehouse::lease`]), so a slow commit of
//! one run cannot lose the files of another.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{NaiveDate, SecondsFormat, Utc};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{Date32Type, Int64Type};
use datafusion::parquet::arrow::{ArrowWriter, AsyncArrowWriter};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Location;
pub use crate::warehouse::lineage::Lineage;
use crate::warehouse::tables::{Table, date_of};
use crate::warehouse::writer::{KIND_COUNT, KIND_FILE};

/// Name of the manifest file in a partition directory.
pub const MANIFEST: &str = "_SUCCESS";

/// Rows per data file a client-side commit writes; larger partitions get
/// several files.
pub const ROWS_PER_FILE: usize = 1_000_000;

/// How many partitions commit side by side. A partition's commit is a
/// handful of small requests that must follow each other (data files,
/// manifest, strays); partitions are independent (each manifest is its own
/// commit point), so a run with many pays the round trips once, not once
/// per partition.
pub const PARTITIONS_AT_ONCE: usize = 8;

/// Runs `commit` for each of `items` (one partition each), up to
/// [`PARTITIONS_AT_ONCE`] at a time; the first error ends it (partitions
/// already committed stay, as after a kill).
pub async fn each_partition<T, F, Fut>(items: impl IntoIterator<Item = T>, commit: F) -> Result<()>
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    futures::stream::iter(items.into_iter().map(commit))
        .buffer_unordered(PARTITIONS_AT_ONCE)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

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
    /// Files of earlier versions, kept for readers that planned with them
    /// until `at` + the keep time ([`keep_replaced`]); a later commit of the
    /// partition (or `tauc-job sweep`) deletes them then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<Replaced>,
    /// What the version was made from ([`Lineage`]).
    #[serde(flatten)]
    pub lineage: Lineage,
}

/// A data file an earlier version listed, and when it stopped being listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replaced {
    /// File name, relative to the partition directory.
    pub file: String,
    /// When the commit that replaced it wrote its manifest (RFC 3339, UTC).
    pub at: String,
}

impl Replaced {
    /// Is the keep time since it was replaced over?
    pub fn expired(&self, now: chrono::DateTime<Utc>) -> bool {
        chrono::DateTime::parse_from_rfc3339(&self.at).map_or(true, |at| {
            now - at.with_timezone(&Utc) >= keep_replaced::get()
        })
    }
}

/// How long a replaced data file stays for the readers that planned with
/// the version listing it (a query opens a partition's files after reading
/// its manifest; a file deleted in between failed the query). Longer than
/// the longest query deadline; `--keep-replaced-secs`, 15 min by default.
pub mod keep_replaced {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The default keep time, in seconds.
    pub const DEFAULT_SECS: u64 = 900;
    static SECS: AtomicU64 = AtomicU64::new(DEFAULT_SECS);

    /// Sets this process's keep time.
    pub fn set(secs: u64) {
        SECS.store(secs, Ordering::Relaxed);
    }

    /// This process's keep time.
    pub fn get() -> chrono::TimeDelta {
        chrono::TimeDelta::seconds(SECS.load(Ordering::Relaxed) as i64)
    }
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

/// A new run id: UTC time and a random suffix, sortable by start.
pub fn new_run_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", Utc::now().format("%Y%m%dT%H%M%SZ"), &id[..8])
}

impl Manifest {
    /// The version whose rows this one holds: its own run id, or the one
    /// its files were carried over from unchanged ([`Lineage::content`]).
    pub fn content_version(&self) -> &str {
        self.lineage.content.as_deref().unwrap_or(&self.run_id)
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

/// Encodes batches as one Parquet file in memory (small files only: tests
/// and fixtures; the jobs stream through [`write_files`]).
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

/// A data file written into a partition: its name and row count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DataFile {
    /// Name, relative to the partition directory.
    pub name: String,
    /// Rows in the file.
    pub rows: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Files a new version lists again (their rows are its lineage's
/// `carried_rows`).
pub fn carried(names: &[String]) -> Vec<DataFile> {
    names
        .iter()
        .map(|name| DataFile {
            name: name.clone(),
            rows: 0,
            bytes: 0,
        })
        .collect()
}

/// What the writers of one job stage report: the files of every task
/// attempt that succeeded, and their counters.
#[derive(Debug, Clone, Default)]
pub struct WriteOutcome {
    /// Files by table and partition.
    pub files: BTreeMap<(Table, PartitionRef), Vec<DataFile>>,
    /// Counters by table path (`""` for counter-only rows), partition and
    /// name, summed over tasks.
    pub counts: BTreeMap<(String, PartitionRef, String), i64>,
    /// Result rows received (one per file or counter per task): the only
    /// rows of a write that reach the client.
    pub rows_received: u64,
    /// Attempts whose rows were set aside because another attempt at the
    /// same task was kept (their files are strays the commit deletes).
    pub dropped_attempts: Vec<String>,
}

/// One writer output row, as read.
struct Reported<'a> {
    kind: &'a str,
    table: &'a str,
    partition: PartitionRef,
    name: &'a str,
    rows: i64,
    bytes: i64,
}

impl WriteOutcome {
    /// Gathers the writers' output rows, one attempt per task: Ballista 55
    /// can deliver the output of two successful attempts at one task (a
    /// stage rolled back after an executor loss runs again while what its
    /// first attempt delivered stays listed), and both wrote the same rows.
    /// The attempt kept is the first by name, the same whatever order the
    /// rows came in.
    pub fn from_batches(batches: &[RecordBatch]) -> Result<WriteOutcome> {
        let kept = kept_attempts(batches);
        let mut out = WriteOutcome::default();
        let mut dropped = std::collections::BTreeSet::new();
        for b in batches {
            let s = |i: usize| b.column(i).as_string::<i32>();
            let (kind, table, region, name, task, attempt) = (s(0), s(1), s(3), s(4), s(7), s(8));
            let dt = b.column(2).as_primitive::<Date32Type>();
            let rows = b.column(5).as_primitive::<Int64Type>();
            let bytes = b.column(6).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                out.rows_received += 1;
                if kept.get(task.value(i)) != Some(&attempt.value(i)) {
                    dropped.insert(attempt.value(i).to_string());
                    continue;
                }
                out.add(Reported {
                    kind: kind.value(i),
                    table: table.value(i),
                    partition: PartitionRef {
                        dt: date_of(dt.value(i)),
                        region: region.value(i).to_string(),
                    },
                    name: name.value(i),
                    rows: rows.value(i),
                    bytes: bytes.value(i),
                })?;
            }
        }
        for files in out.files.values_mut() {
            files.sort();
        }
        out.dropped_attempts = dropped.into_iter().collect();
        for a in &out.dropped_attempts {
            tracing::warn!(attempt = %a, "a second attempt at a write task was reported (a stage re-run after an executor loss): its rows are set aside and its files removed at commit");
        }
        Ok(out)
    }

    fn add(&mut self, r: Reported<'_>) -> Result<()> {
        match r.kind {
            KIND_FILE => {
                let t = Table::from_name(r.table).ok_or_else(|| {
                    Error::Invariant(format!("writer reported unknown table '{}'", r.table))
                })?;
                self.files
                    .entry((t, r.partition))
                    .or_default()
                    .push(DataFile {
                        name: r.name.to_string(),
                        rows: r.rows as u64,
                        bytes: r.bytes as u64,
                    });
            }
            KIND_COUNT => {
                let key = (r.table.to_string(), r.partition, r.name.to_string());
                *self.counts.entry(key).or_default() += r.rows;
            }
            other => {
                return Err(Error::Invariant(format!(
                    "writer reported unknown row kind '{other}'"
                )));
            }
        }
        Ok(())
    }

    /// Result rows received, and how many of them describe files.
    pub fn received(&self) -> (u64, u64) {
        let files = self.files.values().map(|f| f.len() as u64).sum();
        (self.rows_received, files)
    }

    /// Rows written into a table's partition.
    pub fn rows(&self, table: Table, p: &PartitionRef) -> u64 {
        self.files
            .get(&(table, p.clone()))
            .map_or(0, |f| f.iter().map(|f| f.rows).sum())
    }

    /// The files written into a table's partition (sorted by name).
    pub fn files_of(&self, table: Table, p: &PartitionRef) -> Vec<DataFile> {
        self.files
            .get(&(table, p.clone()))
            .cloned()
            .unwrap_or_default()
    }

    /// A counter of a partition, summed over every table.
    pub fn count(&self, p: &PartitionRef, name: &str) -> i64 {
        self.counts
            .iter()
            .filter(|((_, q, n), _)| q == p && n == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// The counters of a partition whose name starts with `prefix`, with
    /// the prefix removed.
    pub fn counts_with_prefix(&self, p: &PartitionRef, prefix: &str) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for ((_, q, n), v) in &self.counts {
            if let Some(rest) = n.strip_prefix(prefix).filter(|_| q == p) {
                *out.entry(rest.to_string()).or_default() += v;
            }
        }
        out
    }

    /// Every partition that has a file or a counter.
    pub fn partitions(&self) -> Vec<PartitionRef> {
        let mut v: Vec<PartitionRef> = self
            .files
            .keys()
            .map(|(_, p)| p.clone())
            .chain(self.counts.keys().map(|(_, p, _)| p.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The attempt kept for each task: the first by name.
fn kept_attempts(batches: &[RecordBatch]) -> BTreeMap<&str, &str> {
    let mut kept: BTreeMap<&str, &str> = BTreeMap::new();
    for b in batches {
        let (task, attempt) = (
            b.column(7).as_string::<i32>(),
            b.column(8).as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            let a = kept.entry(task.value(i)).or_insert(attempt.value(i));
            *a = (*a).min(attempt.value(i));
        }
    }
    kept
}

/// Steps 2 and 3 for one partition whose data files are written: replaces
/// the manifest with one listing exactly `files`, then deletes the
/// partition's other files.
pub async fn commit_files(
    store: &dyn ObjectStore,
    run_id: &str,
    job: &str,
    table: Table,
    dir: &Location,
    partition: &PartitionRef,
    files: &[DataFile],
) -> Result<Manifest> {
    let lineage = Lineage::default();
    commit_files_with(store, run_id, job, table, dir, partition, files, lineage).await
}

/// [`commit_files`], recording where the version came from.
#[allow(clippy::too_many_arguments)]
pub async fn commit_files_with(
    store: &dyn ObjectStore,
    run_id: &str,
    job: &str,
    table: Table,
    dir: &Location,
    partition: &PartitionRef,
    files: &[DataFile],
    lineage: Lineage,
) -> Result<Manifest> {
    let now = Utc::now();
    let previous = read_manifest(store, dir).await?;
    let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    let manifest = Manifest {
        replaced: still_kept(previous.as_ref(), &names, now),
        run_id: run_id.to_string(),
        job: job.to_string(),
        table: table.path().to_string(),
        dt: partition.dt,
        region: partition.region.clone(),
        files: names,
        rows: files.iter().map(|f| f.rows).sum::<u64>() + lineage.carried_rows,
        committed_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        lineage,
    };
    let body = serde_json::to_vec_pretty(&manifest)?;
    let path = Path::from(format!("{}/{MANIFEST}", dir.prefix));
    commit_delay().await;
    let put = std::time::Instant::now();
    store.put(&path, PutPayload::from(body)).await?;
    latency::record(put.elapsed());
    remove_strays(store, dir, &manifest).await?;
    Ok(manifest)
}

/// The replaced files a new version listing `files` keeps: the previous
/// version's files it does not list (replaced `now`), and the previous
/// version's own replaced files whose keep time is not over.
fn still_kept(
    previous: Option<&Manifest>,
    files: &[String],
    now: chrono::DateTime<Utc>,
) -> Vec<Replaced> {
    let Some(prev) = previous else {
        return Vec::new();
    };
    let at = now.to_rfc3339_opts(SecondsFormat::Millis, true);
    let newly = prev.files.iter().map(|f| Replaced {
        file: f.clone(),
        at: at.clone(),
    });
    let mut kept: Vec<Replaced> = prev
        .replaced
        .iter()
        .filter(|r| !r.expired(now))
        .cloned()
        .chain(newly)
        .filter(|r| !files.contains(&r.file))
        .collect();
    kept.sort_by(|a, b| a.file.cmp(&b.file));
    kept.dedup_by(|a, b| a.file == b.file);
    kept
}

/// How long this process's manifest PUTs — the commit points — took.
pub mod latency {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    static COUNT: AtomicU64 = AtomicU64::new(0);
    static TOTAL_US: AtomicU64 = AtomicU64::new(0);
    static MAX_US: AtomicU64 = AtomicU64::new(0);

    /// Manifests committed so far, with their PUTs' total and longest time.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct CommitLatency {
        /// Manifests written.
        pub count: u64,
        /// Their PUTs' time, summed.
        pub total: Duration,
        /// The longest PUT.
        pub max: Duration,
    }

    pub(super) fn record(d: Duration) {
        let us = d.as_micros() as u64;
        COUNT.fetch_add(1, Ordering::Relaxed);
        TOTAL_US.fetch_add(us, Ordering::Relaxed);
        MAX_US.fetch_max(us, Ordering::Relaxed);
    }

    /// The totals so far.
    pub fn so_far() -> CommitLatency {
        CommitLatency {
            count: COUNT.load(Ordering::Relaxed),
            total: Duration::from_micros(TOTAL_US.load(Ordering::Relaxed)),
            max: Duration::from_micros(MAX_US.load(Ordering::Relaxed)),
        }
    }
}

/// A test hook: `TAUC_COMMIT_DELAY_MS` slows every manifest write, as a
/// slow S3 PUT would, so tests can hold two runs' commits side by side.
/// Only in debug builds (the tests'); a release build has no such path.
#[cfg(not(debug_assertions))]
async fn commit_delay() {}

#[cfg(debug_assertions)]
async fn commit_delay() {
    let ms = std::env::var("TAUC_COMMIT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Deletes the files of a partition directory that neither `m` nor the
/// partition's current manifest lists, or keeps as replaced (leftovers of
/// killed runs and of failed task attempts, replaced files past their keep
/// time). The current manifest is read again just before, so a file a
/// newer commit lists is never deleted.
pub async fn remove_strays(store: &dyn ObjectStore, dir: &Location, m: &Manifest) -> Result<usize> {
    let listed: Vec<_> = store.list(Some(&dir.path())).try_collect().await?;
    let current = read_manifest(store, dir).await?;
    let now = Utc::now();
    let listed_by = |v: &Manifest, name: &str| {
        v.files.iter().any(|f| f == name)
            || v.replaced.iter().any(|r| r.file == name && !r.expired(now))
    };
    let keep = |name: &str| {
        name == MANIFEST
            || listed_by(m, name)
            || current.as_ref().is_some_and(|c| listed_by(c, name))
    };
    let strays: Vec<Path> = listed
        .into_iter()
        .filter(|meta| {
            let key = meta.location.as_ref();
            let name = key.rsplit('/').next().unwrap_or(key);
            let direct = key
                .strip_prefix(&dir.prefix)
                .map(|r| r.trim_start_matches('/'))
                == Some(name);
            direct && !keep(name)
        })
        .map(|meta| meta.location)
        .collect();
    let removed = strays.len();
    futures::stream::iter(strays)
        .map(|path| async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(Error::from(e)),
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(removed)
}

/// Deletes the replaced files of every partition of the table at `table`
/// whose keep time is over (for partitions no later run commits again);
/// returns how many. Manifests are not rewritten — a deleted replaced
/// file is only a name the next commit drops — so no lease is needed, and
/// a partition's current files and a running job's unlisted ones are
/// never touched.
pub async fn sweep(store: &dyn ObjectStore, table: &Location) -> Result<usize> {
    let listed: Vec<_> = store.list(Some(&table.path())).try_collect().await?;
    let now = Utc::now();
    let mut deleted = 0;
    for meta in listed
        .iter()
        .filter(|m| m.location.as_ref().ends_with(MANIFEST))
    {
        let key = meta.location.as_ref();
        let dir = Location {
            store_url: table.store_url.clone(),
            prefix: key
                .trim_end_matches(MANIFEST)
                .trim_end_matches('/')
                .to_string(),
        };
        let Some(m) = read_manifest(store, &dir).await? else {
            continue;
        };
        for r in m
            .replaced
            .iter()
            .filter(|r| r.expired(now) && !m.files.contains(&r.file))
        {
            let path = Path::from(format!("{}/{}", dir.prefix, r.file));
            if listed.iter().any(|l| l.location == path) {
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(deleted)
}

/// Deletes every object under `dir` (a run's scratch files), and on a
/// local warehouse the emptied directories too.
pub async fn delete_prefix(store: &dyn ObjectStore, dir: &Location) -> Result<()> {
    let listed: Vec<_> = store.list(Some(&dir.path())).try_collect().await?;
    for meta in listed {
        match store.delete(&meta.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if dir.store_url.starts_with("file") {
        let path = std::path::Path::new("/").join(&dir.prefix);
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(object_store::Error::Generic {
                    store: "local",
                    source: format!("removing {}: {e}", path.display()).into(),
                }
                .into());
            }
            _ => {}
        }
        // and the scratch root, when no other run has files there
        if let Some(parent) = path.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(())
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

/// Streams batches into zstd Parquet files named for `run_id` in `dir`
/// (a new file every [`ROWS_PER_FILE`] rows), through the same multipart
/// object writer the executors use. For the small tables the client
/// assembles (statistics rows, reports).
pub async fn write_files(
    store: &Arc<dyn ObjectStore>,
    run_id: &str,
    dir: &Location,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<Vec<DataFile>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut files = Vec::new();
    let mut current: Option<(String, AsyncArrowWriter<BufWriter>, u64)> = None;
    for b in batches.into_iter().filter(|b| b.num_rows() > 0) {
        if current.is_none() {
            let name = format!("part-{run_id}-client-{:05}.zstd.parquet", files.len());
            let path = Path::from(format!("{}/{name}", dir.prefix));
            let sink = BufWriter::new(store.clone(), path);
            let w = AsyncArrowWriter::try_new(sink, schema.clone(), Some(props.clone()))?;
            current = Some((name, w, 0));
        }
        let (_, w, rows) = current.as_mut().expect("open");
        w.write(&b).await?;
        *rows += b.num_rows() as u64;
        if *rows >= ROWS_PER_FILE as u64 {
            files.push(close(current.take().expect("open")).await?);
        }
    }
    if let Some(open) = current {
        files.push(close(open).await?);
    }
    Ok(files)
}

async fn close(
    (name, mut w, rows): (String, AsyncArrowWriter<BufWriter>, u64),
) -> Result<DataFile> {
    w.finish().await?;
    Ok(DataFile {
        name,
        rows,
        bytes: w.bytes_written() as u64,
    })
}

/// Commits one partition of a warehouse table from batches the client
/// holds (a statistics row, a report's rows; may be empty): writes their
/// files, then the manifest, then removes strays.
pub async fn commit_table(
    store: &Arc<dyn ObjectStore>,
    run_id: &str,
    job: &str,
    warehouse: &Location,
    table: Table,
    p: &PartitionRef,
    batches: Vec<RecordBatch>,
) -> Result<Manifest> {
    let lineage = Lineage::default();
    commit_table_with(store, run_id, job, warehouse, table, p, batches, lineage).await
}

/// [`commit_table`], recording where the version came from.
#[allow(clippy::too_many_arguments)]
pub async fn commit_table_with(
    store: &Arc<dyn ObjectStore>,
    run_id: &str,
    job: &str,
    warehouse: &Location,
    table: Table,
    p: &PartitionRef,
    batches: Vec<RecordBatch>,
    lineage: Lineage,
) -> Result<Manifest> {
    let dir = p.location(&table.location(warehouse));
    let files = write_files(store, run_id, &dir, &table.schema(), batches).await?;
    commit_files_with(store.as_ref(), run_id, job, table, &dir, p, &files, lineage).await
}

/// The name of partition `p` of `table` in a [`Lineage`]'s inputs.
pub fn input_name(table: Table, p: &PartitionRef) -> String {
    format!(
        "{}/dt={}/region={}",
        table.path(),
        p.dt.format("%Y-%m-%d"),
        p.region
    )
}

/// The run ids of the current versions of `inputs` (absent partitions
/// left out): what a partition built from them now records, and what a
/// later run compares with to know whether it is stale.
pub async fn input_versions(
    store: &dyn ObjectStore,
    warehouse: &Location,
    inputs: &[(Table, PartitionRef)],
) -> Result<BTreeMap<String, String>> {
    let read = inputs.iter().map(|(table, p)| async move {
        let dir = p.location(&table.location(warehouse));
        let m = read_manifest(store, &dir).await?;
        Ok::<_, Error>(m.map(|m| (input_name(*table, p), m.content_version().to_string())))
    });
    let versions: Vec<_> = futures::stream::iter(read)
        .buffered(16)
        .try_collect()
        .await?;
    Ok(versions.into_iter().flatten().collect())
}

/// Is partition `p` of any of `tables` missing, or built from other
/// versions than `inputs`?
pub async fn stale(
    store: &dyn ObjectStore,
    warehouse: &Location,
    tables: &[Table],
    p: &PartitionRef,
    inputs: &BTreeMap<String, String>,
) -> Result<bool> {
    for table in tables {
        let dir = p.location(&table.location(warehouse));
        match read_manifest(store, &dir).await? {
            Some(m) if &m.lineage.inputs == inputs => {}
            _ => return Ok(true),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Date32Array, Int64Array, StringArray};

    use super::*;
    use crate::warehouse::writer::output_schema;

    /// One writer task's report: `(kind, name, rows)` rows for one DWD
    /// partition, as the writer's output schema carries them.
    fn report(task: &str, attempt: &str, rows: &[(&str, &str, i64)]) -> RecordBatch {
        let n = rows.len();
        let strs = |v: Vec<&str>| Arc::new(StringArray::from(v)) as ArrayRef;
        let columns: Vec<ArrayRef> = vec![
            strs(rows.iter().map(|r| r.0).collect()),
            strs(vec![Table::DwdTrkEvent.path(); n]),
            Arc::new(Date32Array::from(vec![19_892; n])),
            strs(vec!["eu"; n]),
            strs(rows.iter().map(|r| r.1).collect()),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(vec![100; n])),
            strs(vec![task; n]),
            strs(vec![attempt; n]),
        ];
        RecordBatch::try_new(output_schema(), columns).expect("a report batch")
    }

    #[test]
    fn a_task_reported_by_two_attempts_counts_once() {
        // Task s3-p1 delivered twice (its stage re-ran after an executor
        // loss), once by attempt "b" and once by the re-run "a"; task
        // s3-p2 once. Only one attempt of s3-p1 may be listed and counted.
        let first = report(
            "s3-p1",
            "b",
            &[(KIND_FILE, "f-b", 40), (KIND_COUNT, "duplicates", 3)],
        );
        let other = report(
            "s3-p2",
            "c",
            &[(KIND_FILE, "f-c", 7), (KIND_COUNT, "duplicates", 1)],
        );
        let rerun = report(
            "s3-p1",
            "a",
            &[(KIND_FILE, "f-a", 40), (KIND_COUNT, "duplicates", 3)],
        );
        let out = WriteOutcome::from_batches(&[first, other, rerun]).expect("outcome");
        let p = PartitionRef {
            dt: date_of(19_892),
            region: "eu".into(),
        };
        let names: Vec<String> = out
            .files_of(Table::DwdTrkEvent, &p)
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(
            names,
            ["f-a", "f-c"],
            "the first attempt by name, and the other task"
        );
        assert_eq!(out.rows(Table::DwdTrkEvent, &p), 47);
        assert_eq!(out.count(&p, "duplicates"), 4);
        assert_eq!(out.dropped_attempts, ["b"]);
        assert_eq!(
            out.rows_received, 6,
            "every row received is still counted as received"
        );
    }

    #[test]
    fn tasks_reported_once_are_all_kept() {
        let a = report("s3-p1", "x", &[(KIND_FILE, "f-x", 5)]);
        let b = report("s3-p2", "y", &[(KIND_FILE, "f-y", 6)]);
        let out = WriteOutcome::from_batches(&[a, b]).expect("outcome");
        let p = PartitionRef {
            dt: date_of(19_892),
            region: "eu".into(),
        };
        assert_eq!(out.rows(Table::DwdTrkEvent, &p), 11);
        assert!(out.dropped_attempts.is_empty());
    }
}
