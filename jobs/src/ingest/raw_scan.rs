//! The raw scan: day folders of small NDJSON files in, one row per
//! non-blank line out (valid or rejected, with the exact reason), plus one
//! statistics row per folder range.
//!
//! Why a scan of our own rather than DataFusion's JSON source:
//! - **no per-file planning.** The plan names day folders, not files. Each
//!   folder is cut into `ranges` disjoint key ranges by the `first_ts` in
//!   `messages-{first_ts}.txt` (the keys of a day sort by time), and each
//!   range is one partition that lists its own slice with `start-after`.
//!   Every object is listed exactly once, by exactly one task, and the plan
//!   stays a few hundred bytes whatever the file count.
//! - **work items as data.** The ranges are rows of an in-memory input, one
//!   partition each, and [`RawScanExec`] reads the items of the partition
//!   it is asked for. Ballista's scheduler cuts a stage's plan down to each
//!   task's partitions by rewriting the leaves it knows (in-memory and file
//!   sources among them); a leaf it does not know is left whole and every
//!   task would read every range. With the items as an in-memory leaf, each
//!   task reads exactly its own.
//! - **many requests in flight.** A partition fetches `fetch_concurrency`
//!   objects at once; DataFusion's file scan keeps one per partition.
//! - **per-line verdicts.** Lines are numbered per file and classified one
//!   by one (`event::classify_line`); a whole-file JSON decoder would fail
//!   the file on its first bad line.

use std::fmt;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Builder, Float64Builder, Int64Builder, RecordBatch,
    StringArray, StringBuilder, TimestampMillisecondBuilder, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type, UInt64Type};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result as DfResult, project_schema};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::ingest::event::{self, LineContext, LineOutcome};
use crate::ingest::event_time::{DAY_MS, day_start_ms};
pub use crate::ingest::listing::is_message_file;
use crate::ingest::listing::is_symlink;
use crate::store::Location;
use crate::warehouse::loads::RawObject;
use crate::warehouse::tables::{days_of, ods_event_fields};

/// `kind` of a row of the scan.
pub const KIND_VALID: &str = "valid";
/// `kind` of a rejected line.
pub const KIND_REJECTED: &str = "rejected";
/// `kind` of a statistics row (one per folder range).
pub const KIND_STATS: &str = "stats";

/// One raw day folder: `{raw_root}/{env}/{region}/{yyyy}/{mm}/{dd}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Folder {
    /// Region segment.
    pub region: String,
    /// UTC collection date (the folder's date), `yyyy-mm-dd`.
    pub date: NaiveDate,
    /// Where the folder is.
    pub location: Location,
}

/// What a raw scan reads; small enough to travel in every plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawSource {
    /// The day folders.
    pub folders: Vec<Folder>,
    /// Key ranges (partitions) per folder.
    pub ranges: usize,
    /// Objects fetched at once by one partition.
    pub fetch_concurrency: usize,
    /// Lateness allowance in days (check 5).
    pub lateness_days: i64,
}

impl RawSource {
    fn partitions(&self) -> usize {
        self.folders.len() * self.ranges.max(1)
    }
}

/// Statistics columns of a `stats` row.
pub const STAT_COLUMNS: [&str; 5] = ["files", "files_ignored", "bytes", "lines", "blank_lines"];

/// The scan's output schema.
pub fn scan_schema() -> SchemaRef {
    use DataType::{Date32, Int64, Utf8};
    let mut fields = vec![
        Field::new("kind", Utf8, false),
        Field::new("region", Utf8, false),
        Field::new("dt", Date32, false),
        Field::new("src_file", Utf8, true),
        Field::new("line_no", Int64, true),
        Field::new("reason", Utf8, true),
        Field::new("raw_line", Utf8, true),
    ];
    fields.extend(ods_event_fields());
    fields.extend(STAT_COLUMNS.iter().map(|c| Field::new(*c, Int64, true)));
    Arc::new(Schema::new(fields))
}

/// The raw events of some day folders as a table.
#[derive(Debug, Clone)]
pub struct RawEventsTable {
    /// What to read.
    pub source: RawSource,
    /// When set, the objects to read, per folder of `source` (an
    /// incremental run's new objects, listed by `tauc-job`), instead of
    /// every object of the folders' key ranges.
    pub objects: Option<Vec<Vec<RawObject>>>,
}

#[async_trait::async_trait]
impl TableProvider for RawEventsTable {
    fn schema(&self) -> SchemaRef {
        scan_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(RawScanExec::try_new(
            self.source.clone(),
            projection.cloned(),
            match &self.objects {
                Some(objects) => object_items(&self.source, objects)?,
                None => work_items(&self.source)?,
            },
        )?))
    }
}

/// A work item: a folder's key range, or (`key` set) one object of it.
fn work_item_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("folder", DataType::UInt32, false),
        Field::new("range", DataType::UInt32, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("size", DataType::UInt64, true),
        Field::new("e_tag", DataType::Utf8, true),
    ]))
}

fn items_batch(rows: &[(u32, u32, Option<&RawObject>)]) -> DfResult<RecordBatch> {
    Ok(RecordBatch::try_new(
        work_item_schema(),
        vec![
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.2.map(|o| o.key.as_str())),
            )),
            Arc::new(UInt64Array::from_iter(
                rows.iter().map(|r| r.2.map(|o| o.size)),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.2.and_then(|o| o.e_tag.as_deref())),
            )),
        ],
    )?)
}

/// An incremental scan's items: each folder's objects dealt round-robin
/// into `ranges` partitions (a folder with fewer objects gets fewer), so
/// the work of a small batch still spreads over the executors.
fn object_items(
    source: &RawSource,
    objects: &[Vec<RawObject>],
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let ranges = source.ranges.max(1);
    let mut partitions = Vec::new();
    for (f, objs) in objects.iter().enumerate() {
        let n = ranges.min(objs.len());
        for r in 0..n {
            let rows: Vec<_> = objs
                .iter()
                .skip(r)
                .step_by(n)
                .map(|o| (f as u32, r as u32, Some(o)))
                .collect();
            partitions.push(vec![items_batch(&rows)?]);
        }
    }
    if partitions.is_empty() {
        // nothing new: one empty partition keeps the plan well formed
        partitions.push(vec![items_batch(&[])?]);
    }
    let config = MemorySourceConfig::try_new(&partitions, work_item_schema(), None)?;
    Ok(DataSourceExec::from_data_source(config))
}

/// One in-memory partition per `(folder, range)`, each a one-row batch.
fn work_items(source: &RawSource) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = work_item_schema();
    let ranges = source.ranges.max(1);
    let mut partitions = Vec::with_capacity(source.partitions());
    for f in 0..source.folders.len() {
        for r in 0..ranges {
            partitions.push(vec![items_batch(&[(f as u32, r as u32, None)])?]);
        }
    }
    let config = MemorySourceConfig::try_new(&partitions, schema, None)?;
    Ok(DataSourceExec::from_data_source(config))
}

/// The physical raw scan: reads the `(folder, range)` work items of its
/// input partition and scans those key ranges.
#[derive(Debug)]
pub struct RawScanExec {
    source: RawSource,
    projection: Option<Vec<usize>>,
    items: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl RawScanExec {
    /// A scan of `source`, projected to `projection` (indices into
    /// [`scan_schema`]), over the work items `items`.
    pub fn try_new(
        source: RawSource,
        projection: Option<Vec<usize>>,
        items: Arc<dyn ExecutionPlan>,
    ) -> DfResult<Self> {
        let schema = project_schema(&scan_schema(), projection.as_ref())?;
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(
                items.properties().output_partitioning().partition_count(),
            ),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(RawScanExec {
            source,
            projection,
            items,
            properties,
        })
    }

    /// What the scan reads.
    pub fn source(&self) -> &RawSource {
        &self.source
    }

    /// The projection, if any.
    pub fn projection(&self) -> Option<&Vec<usize>> {
        self.projection.as_ref()
    }
}

impl DisplayAs for RawScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "RawScanExec: folders={}, ranges={}, concurrency={}",
            self.source.folders.len(),
            self.source.ranges,
            self.source.fetch_concurrency
        )
    }
}

impl ExecutionPlan for RawScanExec {
    fn name(&self) -> &str {
        "RawScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.items]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [items] = children.as_slice() else {
            return datafusion::common::internal_err!("RawScanExec takes one input");
        };
        Ok(Arc::new(RawScanExec::try_new(
            self.source.clone(),
            self.projection.clone(),
            items.clone(),
        )?))
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let items = self.items.execute(partition, context.clone())?;
        let source = self.source.clone();
        let projection = self.projection.clone();
        let batch_rows = context.session_config().batch_size().max(1024);
        let runtime = context.runtime_env();
        let mut builder = RecordBatchReceiverStream::builder(self.schema(), 4);
        let tx = builder.tx();
        builder.spawn(async move {
            let send = |batch: RecordBatch| {
                let batch = match &projection {
                    Some(p) => batch.project(p),
                    None => Ok(batch),
                };
                let tx = tx.clone();
                async move {
                    // A closed receiver means the query was cancelled.
                    let _ = tx.send(batch.map_err(Into::into)).await;
                }
            };
            let items: Vec<RecordBatch> = items.try_collect().await?;
            for (f, range, objects) in parse_items(&items)? {
                let Some(folder) = source.folders.get(f).cloned() else {
                    return datafusion::common::internal_err!("raw scan: no folder {f}");
                };
                tracing::debug!(partition, folder = %folder.location, range, "raw scan range");
                let store = runtime.object_store(
                    datafusion::execution::object_store::ObjectStoreUrl::parse(
                        &folder.location.store_url,
                    )?,
                )?;
                let job = RangeJob {
                    slice: KeyRange::of(&folder, range, source.ranges.max(1)),
                    objects,
                    ctx: LineContext {
                        collection_date: folder.date,
                        lateness_days: source.lateness_days,
                    },
                    folder,
                    concurrency: source.fetch_concurrency.max(1),
                    batch_rows,
                };
                job.run(store, &send).await?;
            }
            Ok(())
        });
        Ok(builder.build())
    }
}

/// A partition's work items: `(folder, range, objects)` — the objects of
/// an incremental scan's folder, or `None` for the whole key range.
type Items = Vec<(usize, usize, Option<Vec<RawObject>>)>;

fn parse_items(batches: &[RecordBatch]) -> DfResult<Items> {
    let mut out: Items = Vec::new();
    for b in batches {
        let folders = b.column(0).as_primitive::<UInt32Type>();
        let ranges = b.column(1).as_primitive::<UInt32Type>();
        let keys = b.column(2).as_string::<i32>();
        let sizes = b.column(3).as_primitive::<UInt64Type>();
        let tags = b.column(4).as_string::<i32>();
        for i in 0..b.num_rows() {
            let (f, r) = (folders.value(i) as usize, ranges.value(i) as usize);
            if keys.is_null(i) {
                out.push((f, r, None));
                continue;
            }
            let object = RawObject {
                key: keys.value(i).to_string(),
                size: sizes.value(i),
                e_tag: (!tags.is_null(i)).then(|| tags.value(i).to_string()),
            };
            match out.last_mut() {
                Some((lf, lr, Some(objs))) if *lf == f && *lr == r => objs.push(object),
                _ => out.push((f, r, Some(vec![object]))),
            }
        }
    }
    Ok(out)
}

/// A slice of a folder's keys: `(after, up_to]`, either end open.
#[derive(Debug, Clone, PartialEq)]
struct KeyRange {
    after: Option<String>,
    up_to: Option<String>,
}

impl KeyRange {
    /// Range `k` of `n` of a folder, cut at equal steps of `first_ts` over
    /// the folder's UTC day; the first and last ranges are open so that
    /// every key, whatever its name, falls in exactly one.
    fn of(folder: &Folder, k: usize, n: usize) -> KeyRange {
        let start = day_start_ms(folder.date);
        let bound = |i: usize| {
            let ts = start + (DAY_MS / n as i64) * i as i64;
            format!("{}/messages-{ts}", folder.location.prefix)
        };
        KeyRange {
            after: (k > 0).then(|| bound(k)),
            up_to: (k + 1 < n).then(|| bound(k + 1)),
        }
    }

    fn contains(&self, key: &str) -> bool {
        self.after.as_deref().is_none_or(|a| key > a)
            && self.up_to.as_deref().is_none_or(|u| key <= u)
    }
}

/// Counters of one range, sent as its statistics row.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RangeStats {
    /// `messages-*.txt` objects read.
    pub files: i64,
    /// Other objects in the folder.
    pub files_ignored: i64,
    /// Bytes of the files read.
    pub bytes: i64,
    /// All lines, blank ones included.
    pub lines: i64,
    /// Blank lines.
    pub blank_lines: i64,
}

/// One partition's work.
struct RangeJob {
    folder: Folder,
    slice: KeyRange,
    /// Set: read these objects, list nothing.
    objects: Option<Vec<RawObject>>,
    ctx: LineContext,
    concurrency: usize,
    batch_rows: usize,
}

/// The lines of one file, classified.
struct FileLines {
    key: String,
    outcomes: Vec<(i64, LineOutcome)>,
    lines: i64,
    bytes: i64,
}

impl RangeJob {
    /// The range's `messages-*.txt` objects, listed; other keys are
    /// counted in `ignored` (or, unnameable, pushed on `skipped`).
    fn listed<'a>(
        &'a self,
        store: &Arc<dyn ObjectStore>,
        skipped: &Arc<std::sync::Mutex<Vec<String>>>,
        ignored: &'a std::sync::atomic::AtomicI64,
    ) -> futures::stream::BoxStream<'a, object_store::Result<ObjectMeta>> {
        let prefix = self.folder.location.path();
        let local = self.folder.location.store_url.starts_with("file");
        let listing = match (
            crate::store::s3_pager(&self.folder.location.store_url),
            &self.slice.after,
        ) {
            (Some(pager), after) => crate::ingest::listing::list_after(
                pager,
                &self.folder.location.prefix,
                after.clone(),
                self.slice.up_to.clone(),
                skipped.clone(),
            ),
            (None, Some(after)) => store.list_with_offset(
                Some(&prefix),
                &object_store::path::Path::from(after.as_str()),
            ),
            (None, None) => store.list(Some(&prefix)),
        };
        let slice = &self.slice;
        let folder_prefix = &self.folder.location.prefix;
        // S3 lists in key order, so a range stops at its upper bound; a
        // local directory walk has no order, so it filters every key.
        listing
            .try_take_while(move |m| {
                let past = !local
                    && slice
                        .up_to
                        .as_deref()
                        .is_some_and(|u| m.location.as_ref() > u);
                futures::future::ready(Ok(!past))
            })
            .try_filter(move |m| futures::future::ready(slice.contains(m.location.as_ref())))
            .try_filter(move |m| {
                let key = m.location.as_ref();
                let keep = is_message_file(folder_prefix, key) && (!local || !is_symlink(key));
                if !keep {
                    ignored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                futures::future::ready(keep)
            })
            .boxed()
    }

    async fn run<F, Fut>(self, store: Arc<dyn ObjectStore>, send: &F) -> DfResult<()>
    where
        F: Fn(RecordBatch) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let skipped = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut stats = RangeStats::default();
        let ignored = std::sync::atomic::AtomicI64::new(0);
        let explicit = self.objects.is_some();
        let metas = match &self.objects {
            Some(objects) => {
                futures::stream::iter(objects.clone().into_iter().map(|o| Ok(o.meta()))).boxed()
            }
            None => self.listed(&store, &skipped, &ignored),
        };
        let ctx = self.ctx;
        let mut files = metas
            .map_err(datafusion::error::DataFusionError::from)
            .map_ok(|meta: ObjectMeta| {
                let store = store.clone();
                async move { read_file(store, meta, ctx, explicit).await }
            })
            .try_buffer_unordered(self.concurrency)
            .boxed();
        let mut pending: Vec<FileLines> = Vec::new();
        let mut pending_rows = 0;
        while let Some(file) = files.try_next().await? {
            stats.files += 1;
            stats.bytes += file.bytes;
            stats.lines += file.lines;
            stats.blank_lines += file.lines - file.outcomes.len() as i64;
            pending_rows += file.outcomes.len();
            pending.push(file);
            if pending_rows >= self.batch_rows {
                send(lines_batch(&self.folder, &pending)?).await;
                pending.clear();
                pending_rows = 0;
            }
        }
        drop(files);
        if !pending.is_empty() {
            send(lines_batch(&self.folder, &pending)?).await;
        }
        let skipped = std::mem::take(&mut *skipped.lock().expect("skipped lock"));
        for key in &skipped {
            tracing::warn!(
                key = ?key,
                "ignored a raw object whose name has a control character or a '.' segment (never a batch the uploader wrote)"
            );
        }
        stats.files_ignored =
            ignored.load(std::sync::atomic::Ordering::Relaxed) + skipped.len() as i64;
        send(stats_batch(&self.folder, stats)?).await;
        Ok(())
    }
}

/// Reads and classifies one object. `as_listed`: the object must still be
/// what the incremental run listed — same entity tag (a conditional GET)
/// and size — or the run fails naming it, before anything is committed.
async fn read_file(
    store: Arc<dyn ObjectStore>,
    meta: ObjectMeta,
    ctx: LineContext,
    as_listed: bool,
) -> DfResult<FileLines> {
    let key = meta.location.to_string();
    let data = if as_listed {
        let options = object_store::GetOptions {
            if_match: meta.e_tag.clone(),
            ..Default::default()
        };
        let data = match store.get_opts(&meta.location, options).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::Precondition { .. }) => {
                return Err(changed(&key, "its entity tag changed"));
            }
            Err(e) => return Err(e.into()),
        };
        if data.len() as u64 != meta.size {
            let why = format!(
                "it was listed with {} bytes and now has {}",
                meta.size,
                data.len()
            );
            return Err(changed(&key, &why));
        }
        data
    } else {
        store.get(&meta.location).await?.bytes().await?
    };
    let bytes = data.len() as i64;
    // Classifying is CPU work; keep it off the I/O threads.
    tokio::task::spawn_blocking(move || {
        let mut outcomes = Vec::new();
        let mut lines = 0;
        for (i, line) in event::split_lines(&data).enumerate() {
            lines += 1;
            match event::classify_line(line, &ctx) {
                LineOutcome::Blank => {}
                o => outcomes.push((i as i64 + 1, o)),
            }
        }
        FileLines {
            key,
            outcomes,
            lines,
            bytes,
        }
    })
    .await
    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
}

/// The error of a raw object that changed under a run (raw objects are
/// immutable: layers.md, "Incremental loads").
pub fn changed(key: &str, why: &str) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::Execution(format!(
        "raw object {key} changed after it was listed ({why}); raw objects are immutable — restore the original object, or move the changed content to a new messages-*.txt key"
    ))
}

impl RawObject {
    fn meta(self) -> ObjectMeta {
        ObjectMeta {
            location: object_store::path::Path::from(self.key),
            last_modified: chrono::DateTime::UNIX_EPOCH,
            size: self.size,
            e_tag: self.e_tag,
            version: None,
        }
    }
}

/// Column builders for the scan schema.
struct Builders {
    kind: StringBuilder,
    region: StringBuilder,
    dt: Date32Builder,
    src_file: StringBuilder,
    line_no: Int64Builder,
    reason: StringBuilder,
    raw_line: StringBuilder,
    strings: Vec<StringBuilder>,
    ts: Vec<TimestampMillisecondBuilder>,
    geo: [Float64Builder; 2],
    ints: [Int64Builder; 2],
    stats: Vec<Int64Builder>,
}

impl Builders {
    fn new() -> Self {
        Builders {
            kind: StringBuilder::new(),
            region: StringBuilder::new(),
            dt: Date32Builder::new(),
            src_file: StringBuilder::new(),
            line_no: Int64Builder::new(),
            reason: StringBuilder::new(),
            raw_line: StringBuilder::new(),
            strings: (0..17).map(|_| StringBuilder::new()).collect(),
            ts: (0..5)
                .map(|_| TimestampMillisecondBuilder::new().with_timezone("UTC"))
                .collect(),
            geo: [Float64Builder::new(), Float64Builder::new()],
            ints: [Int64Builder::new(), Int64Builder::new()],
            stats: (0..STAT_COLUMNS.len())
                .map(|_| Int64Builder::new())
                .collect(),
        }
    }

    fn head(&mut self, kind: &str, folder: &Folder) {
        self.kind.append_value(kind);
        self.region.append_value(&folder.region);
        self.dt.append_value(days_of(folder.date));
    }

    fn event(&mut self, e: Option<&event::OdsEvent>, event_id: Option<&str>) {
        let s = |e: &event::OdsEvent| -> [Option<String>; 17] {
            [
                Some(e.event_id.clone()),
                Some(e.event_type.clone()),
                e.device_id.clone(),
                e.device_id_type.clone(),
                e.user_id.clone(),
                e.app_version.clone(),
                e.ua.clone(),
                e.page_url.clone(),
                e.from_url.clone(),
                e.to_url.clone(),
                e.target_type.clone(),
                e.target_id.clone(),
                e.cors_url.clone(),
                e.cors_method.clone(),
                e.cors_origin.clone(),
                e.cors_error.clone(),
                e.extra.clone(),
            ]
        };
        let strings = match e {
            Some(e) => s(e),
            None => {
                let mut v: [Option<String>; 17] = Default::default();
                v[0] = event_id.map(str::to_string);
                v
            }
        };
        for (b, v) in self.strings.iter_mut().zip(strings) {
            b.append_option(v);
        }
        let ts = e.map_or([None; 5], |e| {
            [
                Some(e.client_ts),
                e.sent_ts,
                Some(e.collector_ts),
                e.page_enter_ts,
                e.page_leave_ts,
            ]
        });
        for (b, v) in self.ts.iter_mut().zip(ts) {
            b.append_option(v);
        }
        self.geo[0].append_option(e.and_then(|e| e.geo_lat));
        self.geo[1].append_option(e.and_then(|e| e.geo_lon));
        self.ints[0].append_option(e.and_then(|e| e.cors_status));
        self.ints[1].append_option(e.and_then(|e| e.cors_duration_ms));
    }

    fn finish(mut self) -> DfResult<RecordBatch> {
        let mut s = self
            .strings
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut t = self.ts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut next_s = || s.next().expect("string column");
        let mut next_t = || t.next().expect("timestamp column");
        let (event_id, event_type) = (next_s(), next_s());
        let (client_ts, sent_ts, collector_ts) = (next_t(), next_t(), next_t());
        let (device_id, device_id_type, user_id, app_version, ua) =
            (next_s(), next_s(), next_s(), next_s(), next_s());
        let (page_url, from_url, to_url, target_type, target_id) =
            (next_s(), next_s(), next_s(), next_s(), next_s());
        let (page_enter_ts, page_leave_ts) = (next_t(), next_t());
        let (cors_url, cors_method, cors_origin, cors_error, extra) =
            (next_s(), next_s(), next_s(), next_s(), next_s());
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.kind.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.dt.finish()),
            Arc::new(self.src_file.finish()),
            Arc::new(self.line_no.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.raw_line.finish()),
            event_id,
            event_type,
            client_ts,
            sent_ts,
            collector_ts,
            device_id,
            device_id_type,
            user_id,
            app_version,
            ua,
            Arc::new(self.geo[0].finish()),
            Arc::new(self.geo[1].finish()),
            page_url,
            from_url,
            to_url,
            target_type,
            target_id,
            page_enter_ts,
            page_leave_ts,
            cors_url,
            cors_method,
            cors_origin,
            Arc::new(self.ints[0].finish()),
            cors_error,
            Arc::new(self.ints[1].finish()),
            extra,
        ];
        columns.extend(
            self.stats
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        Ok(RecordBatch::try_new(scan_schema(), columns)?)
    }
}

fn lines_batch(folder: &Folder, files: &[FileLines]) -> DfResult<RecordBatch> {
    let mut b = Builders::new();
    for f in files {
        for (line_no, o) in &f.outcomes {
            match o {
                LineOutcome::Valid(e) => {
                    b.head(KIND_VALID, folder);
                    b.reason.append_null();
                    b.raw_line.append_null();
                    b.event(Some(e), None);
                }
                LineOutcome::Rejected(r) => {
                    b.head(KIND_REJECTED, folder);
                    b.reason.append_value(&r.reason);
                    b.raw_line.append_value(&r.raw_line);
                    b.event(None, r.event_id.as_deref());
                }
                LineOutcome::Blank => continue,
            }
            b.src_file.append_value(&f.key);
            b.line_no.append_value(*line_no);
            for s in &mut b.stats {
                s.append_null();
            }
        }
    }
    b.finish()
}

fn stats_batch(folder: &Folder, stats: RangeStats) -> DfResult<RecordBatch> {
    let mut b = Builders::new();
    b.head(KIND_STATS, folder);
    b.src_file.append_null();
    b.line_no.append_null();
    b.reason.append_null();
    b.raw_line.append_null();
    b.event(None, None);
    let values = [
        stats.files,
        stats.files_ignored,
        stats.bytes,
        stats.lines,
        stats.blank_lines,
    ];
    for (s, v) in b.stats.iter_mut().zip(values) {
        s.append_value(v);
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> Folder {
        Folder {
            region: "aps1".into(),
            date: NaiveDate::from_ymd_opt(2024, 6, 18).unwrap(),
            location: Location::parse("s3://b/r/uat/aps1/2024/06/18").unwrap(),
        }
    }

    #[test]
    fn ranges_cover_every_key_once() {
        let f = folder();
        let n = 4;
        let ranges: Vec<KeyRange> = (0..n).map(|k| KeyRange::of(&f, k, n)).collect();
        let keys = [
            "r/uat/aps1/2024/06/18/_tmp",
            "r/uat/aps1/2024/06/18/messages-1718668800000.txt",
            "r/uat/aps1/2024/06/18/messages-1718690400000",
            "r/uat/aps1/2024/06/18/messages-1718690400000.txt",
            "r/uat/aps1/2024/06/18/messages-1718755199999.txt",
            "r/uat/aps1/2024/06/18/messages-1800000000000.txt",
            "r/uat/aps1/2024/06/18/zz",
        ];
        for k in keys {
            let hits = ranges.iter().filter(|r| r.contains(k)).count();
            assert_eq!(hits, 1, "{k}");
        }
        // 06:00 UTC is the first bound of four
        assert_eq!(
            ranges[1].after.as_deref(),
            Some("r/uat/aps1/2024/06/18/messages-1718690400000")
        );
    }

    #[test]
    fn message_file_names() {
        let p = "r/uat/aps1/2024/06/18";
        assert!(is_message_file(p, "r/uat/aps1/2024/06/18/messages-1.txt"));
        assert!(!is_message_file(
            p,
            "r/uat/aps1/2024/06/18/messages-1.txt.gz"
        ));
        assert!(!is_message_file(
            p,
            "r/uat/aps1/2024/06/18/sub/messages-1.txt"
        ));
        assert!(!is_message_file(p, "r/uat/aps1/2024/06/18/_SUCCESS"));
    }
}

#[cfg(test)]
mod scan_tests {
    use super::*;
    use crate::engine::session::{Engine, session_config};
    use crate::store::S3Options;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn scan_reads_each_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let folder_path = dir.path().join("uat/aps1/2024/06/18");
        std::fs::create_dir_all(&folder_path).unwrap();
        let c0: i64 = 1_718_668_800_000;
        for f in 0..10 {
            let ts = c0 + f * 8_000_000;
            let line = format!(
                "{{\"event_id\":\"e{f}\",\"event_type\":\"page_enter\",\"client_ts\":{ts},\"collector_ts\":{ts},\"device_id\":\"d\"}}\n\n"
            );
            std::fs::write(folder_path.join(format!("messages-{ts}.txt")), line).unwrap();
        }
        std::fs::write(folder_path.join("other.json"), "{}").unwrap();
        let engine = Engine::new(S3Options::default()).unwrap();
        let ctx = SessionContext::new_with_state(engine.state(session_config()).unwrap());
        let source = RawSource {
            folders: vec![Folder {
                region: "aps1".into(),
                date: NaiveDate::from_ymd_opt(2024, 6, 18).unwrap(),
                location: Location::parse(folder_path.to_str().unwrap()).unwrap(),
            }],
            ranges: 4,
            fetch_concurrency: 3,
            lateness_days: 2,
        };
        let df = ctx
            .read_table(Arc::new(RawEventsTable {
                source,
                objects: None,
            }))
            .unwrap();
        let batches = df.collect().await.unwrap();
        let mut valid = 0;
        let mut files = 0;
        let mut lines = 0;
        let mut ignored = 0;
        for b in &batches {
            let kind = b
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .unwrap();
            for i in 0..b.num_rows() {
                match kind.value(i) {
                    KIND_VALID => valid += 1,
                    KIND_STATS => {
                        let col = |n: &str| {
                            b.column_by_name(n)
                                .unwrap()
                                .as_any()
                                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                                .unwrap()
                                .value(i)
                        };
                        files += col("files");
                        lines += col("lines");
                        ignored += col("files_ignored");
                    }
                    _ => {}
                }
            }
        }
        assert_eq!((valid, files, lines, ignored), (10, 10, 20, 1));
    }
}
