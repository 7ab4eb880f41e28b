//! The executor-side writer: a plan node that takes its input partitions as
//! they are and writes each `(table, dt, region)` it sees as zstd Parquet
//! files straight to the warehouse, so no data row funnels through one
//! process.
//!
//! - **Input.** Any plan whose rows carry `_table` (the `layer/table` a row
//!   belongs to; null for rows that only carry counters), `dt` and `region`,
//!   plus the columns of the tables named (matched by name, cast to the
//!   table's schema).
//! - **Files.** Each task streams its rows into one open file per partition
//!   key, through `parquet`'s `AsyncArrowWriter` over an `object_store`
//!   multipart upload: a bounded row group in memory, flushed early when it
//!   grows past [`FileLimits::buffer_bytes`], and a file rolled at
//!   [`FileLimits::max_rows`] or [`FileLimits::max_bytes`]. Names carry the
//!   run id, the worker, the task attempt and a random suffix, so a retried
//!   task never overwrites the files of a failed one.
//! - **Output.** One small row per file written (`kind = 'file'`: table,
//!   dt, region, file name, rows, bytes), plus the task's counters
//!   (`kind = 'count'`): the sums of [`WriteSpec::counters`] and the value
//!   counts of [`WriteSpec::value_counts`] per partition key. Every row
//!   names the work it belongs to (`task`: the stage and the global shuffle
//!   partitions read, [`crate::warehouse::rerun`]) and the attempt that did it
//!   (`attempt`), because Ballista 55 can hand the
//!   client the output of two attempts of one task (a stage rolled back
//!   after an executor loss runs again, and the outputs its first attempt
//!   already delivered stay listed). `tauc-job` reads only these rows; it
//!   keeps one attempt per task, checks them and commits the manifests
//!   ([`crate::warehouse::commit`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, DFSchemaRef, Result as DfResult, internal_err};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, OrderingRequirements, PhysicalExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::store::Location;
use crate::warehouse::layout;
use crate::warehouse::tables::{Table, conform};

/// The column naming a row's table.
pub const TABLE_COLUMN: &str = "_table";
/// `kind` of an output row describing a written file.
pub const KIND_FILE: &str = "file";
/// `kind` of an output row carrying a counter.
pub const KIND_COUNT: &str = "count";

/// When a data file is closed and the next one started, and how much a
/// writer may buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct FileLimits {
    /// Rows per file.
    pub max_rows: u64,
    /// Bytes per file (compressed, as written).
    pub max_bytes: u64,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// A row group in progress is flushed once its buffers pass this size.
    pub buffer_bytes: usize,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_rows: 1_000_000,
            max_bytes: 128 * 1024 * 1024,
            row_group_rows: 128 * 1024,
            buffer_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What a write node writes; travels in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Serialize, Deserialize)]
pub struct WriteSpec {
    /// Root of the warehouse.
    pub warehouse: Location,
    /// The run whose files these are (in every file name).
    pub run_id: String,
    /// Int64 columns summed per partition key (`count` rows named after
    /// the column).
    pub counters: Vec<String>,
    /// Utf8 columns whose non-null values are counted per partition key
    /// (`count` rows named `column=value`).
    pub value_counts: Vec<String>,
    /// File sizes and buffers.
    pub limits: FileLimits,
}

/// The schema of a write node's output.
pub fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("table", DataType::Utf8, false),
        Field::new("dt", DataType::Date32, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("task", DataType::Utf8, false),
        Field::new("attempt", DataType::Utf8, false),
    ]))
}

static WORKER: OnceLock<String> = OnceLock::new();

/// Names this process in the files it writes (an executor sets its id at
/// start; others are `local`). Only the first call counts.
pub fn set_worker_name(name: &str) {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let _ = WORKER.set(clean);
}

fn worker_name() -> &'static str {
    WORKER.get().map(String::as_str).unwrap_or("local")
}

/// Whoever counts what this process's writer tasks did: an executor, for
/// its `/metrics` (`tauc-job`'s in-process executor counts nothing).
pub trait TaskObserver: Send + Sync {
    /// A task wrote a file of `rows` rows and `bytes` bytes to `table`.
    fn file_written(&self, table: &str, rows: u64, bytes: u64);
    /// A task kept a counter (`files`, `lines`, …, `reason=…`).
    fn counted(&self, name: &str, value: i64);
    /// A task finished.
    fn task_finished(&self);
}

static OBSERVER: OnceLock<Box<dyn TaskObserver>> = OnceLock::new();

/// Sets the process's [`TaskObserver`]. Only the first call counts.
pub fn set_task_observer(observer: Box<dyn TaskObserver>) {
    let _ = OBSERVER.set(observer);
}

/// The logical form of the write: `input` written as [`WriteSpec`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteNode {
    /// The rows to write.
    pub input: LogicalPlan,
    /// How.
    pub spec: WriteSpec,
    schema: DFSchemaRef,
}

impl WriteNode {
    /// A write of `input`.
    pub fn new(input: LogicalPlan, spec: WriteSpec) -> DfResult<WriteNode> {
        let schema = Arc::new(DFSchema::try_from(output_schema().as_ref().clone())?);
        Ok(WriteNode {
            input,
            spec,
            schema,
        })
    }
}

impl Hash for WriteNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.input.hash(state);
        self.spec.hash(state);
    }
}

impl PartialOrd for WriteNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match self.spec.partial_cmp(&other.spec) {
            Some(std::cmp::Ordering::Equal) => self.input.partial_cmp(&other.input),
            o => o,
        }
    }
}

impl UserDefinedLogicalNodeCore for WriteNode {
    fn name(&self) -> &str {
        "TaucWrite"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "TaucWrite: warehouse={}", self.spec.warehouse)
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        let [input] = <[LogicalPlan; 1]>::try_from(inputs)
            .map_err(|_| DataFusionError::Internal("TaucWrite takes one input".into()))?;
        WriteNode::new(input, self.spec.clone())
    }
}

/// The physical write: one writer per input partition.
#[derive(Debug)]
pub struct WriteExec {
    input: Arc<dyn ExecutionPlan>,
    spec: WriteSpec,
    properties: Arc<PlanProperties>,
    /// The order the input must come in ([`layout::write_order`]): the
    /// planner sorts it so (within each partition, spilling as it must).
    order: Option<LexOrdering>,
    /// The tables whose files come out sorted.
    sorted: Arc<BTreeSet<Table>>,
}

impl WriteExec {
    /// Writes `input` as `spec` says, partition by partition.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec: WriteSpec) -> DfResult<WriteExec> {
        let (order, sorted) = layout::write_order(&input.schema(), TABLE_COLUMN)?;
        let n = input.properties().output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(output_schema()),
            Partitioning::UnknownPartitioning(n),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(WriteExec {
            input,
            spec,
            properties,
            order,
            sorted: Arc::new(sorted),
        })
    }

    /// What it writes.
    pub fn spec(&self) -> &WriteSpec {
        &self.spec
    }
}

impl DisplayAs for WriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "TaucWriteExec: warehouse={}, max_rows={}",
            self.spec.warehouse, self.spec.limits.max_rows
        )
    }
}

impl ExecutionPlan for WriteExec {
    fn name(&self) -> &str {
        "TaucWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
        let [input] = children.as_slice() else {
            return internal_err!("TaucWriteExec takes one input");
        };
        Ok(Arc::new(WriteExec::try_new(
            input.clone(),
            self.spec.clone(),
        )?))
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![self.order.clone().map(OrderingRequirements::from)]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let url = ObjectStoreUrl::parse(&self.spec.warehouse.store_url)?;
        let store = context.runtime_env().object_store(&url)?;
        let reads = crate::warehouse::rerun::input_partitions(&self.input, partition);
        let task = TaskName::of(context.task_id().as_deref(), partition, reads.as_deref());
        let mut writer = TaskWriter::new(self.spec.clone(), store, task, self.sorted.clone());
        let out = futures::stream::once(async move {
            let mut input = input;
            while let Some(batch) = input.try_next().await? {
                writer.write(&batch).await?;
            }
            writer.finish().await
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            output_schema(),
            out,
        )))
    }
}

/// Which work a task did and which attempt at it this is. The attempt
/// goes into file names, so a retried task never overwrites the files of
/// another attempt; the work is what two attempts share.
#[derive(Debug, Clone, PartialEq)]
struct TaskName {
    /// `s{stage}-g{shuffle partitions read}`: the same for every attempt
    /// at one piece of work ([`crate::warehouse::rerun`]). When that is not
    /// known (no Ballista task, no shuffle input) it is the attempt itself,
    /// so no other attempt is ever taken for the same work.
    work: String,
    /// Unique: the worker, the stage and task attempts, the partition and
    /// a random suffix.
    attempt: String,
}

impl TaskName {
    /// From Ballista's task identity `TID {job}/{stage}.{stage_attempt}/{task}.{attempt}`
    /// when there is one, the (task-local) partition, the global shuffle
    /// partitions it reads when known, the worker and a random suffix.
    fn of(task_id: Option<&str>, partition: usize, reads: Option<&[usize]>) -> TaskName {
        let tid = task_id.and_then(ballista_task);
        let label = match &tid {
            Some((_, stage, task)) => format!("s{stage}-t{task}-p{partition}"),
            None => format!("p{partition}"),
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let attempt = format!("{}-{label}-{}", worker_name(), &id[..8]);
        let work = match (&tid, reads) {
            (Some((stage_id, ..)), Some(ids)) => {
                let ids: Vec<String> = ids.iter().map(usize::to_string).collect();
                format!("s{stage_id}-g{}", ids.join("+"))
            }
            _ => attempt.clone(),
        };
        TaskName { work, attempt }
    }
}

/// `TID {job}/{stage}.{stage_attempt}/{task}.{attempt}` as (stage id,
/// `stage.stage_attempt`, `task.attempt`).
fn ballista_task(task_id: &str) -> Option<(&str, &str, &str)> {
    let mut parts = task_id.strip_prefix("TID ")?.split('/');
    let _job = parts.next()?;
    let stage = parts.next()?;
    let task = parts.next()?;
    Some((stage.split('.').next()?, stage, task))
}

/// A partition key: table (None for counter-only rows), date, region.
type Key = (Option<Table>, i32, String);

struct OpenFile {
    name: String,
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
}

/// One task's files and counters.
struct TaskWriter {
    spec: WriteSpec,
    store: Arc<dyn ObjectStore>,
    task: TaskName,
    sorted: Arc<BTreeSet<Table>>,
    seq: usize,
    open: HashMap<Key, OpenFile>,
    written: Vec<(Key, String, u64, u64)>,
    counts: BTreeMap<(Key, String), i64>,
}

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> DfResult<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            DataFusionError::Internal(format!("tauc write: input has no column '{name}'"))
        })
}

/// Groups a batch's rows by partition key (one group in the common case).
fn groups(b: &RecordBatch) -> DfResult<Vec<(Key, Option<UInt32Array>)>> {
    let tables = column::<StringArray>(b, TABLE_COLUMN)?;
    let dts = column::<Date32Array>(b, "dt")?;
    let regions = column::<StringArray>(b, "region")?;
    // Rows are grouped on borrowed values (`""` for a null table); the
    // table name is resolved and the region copied once per group, not
    // once per row.
    let table_at = |i: usize| {
        if tables.is_null(i) {
            ""
        } else {
            tables.value(i)
        }
    };
    let raw_key = |i: usize| (table_at(i), dts.value(i), regions.value(i));
    let n = b.num_rows();
    let first = raw_key(0);
    let mut by_key: BTreeMap<(&str, i32, &str), Vec<u32>> = BTreeMap::new();
    if (1..n).any(|i| raw_key(i) != first) {
        for i in 0..n {
            by_key.entry(raw_key(i)).or_default().push(i as u32);
        }
    }
    let resolve = |(table, dt, region): (&str, i32, &str)| -> DfResult<Key> {
        let table = match table {
            "" => None,
            name => Some(Table::from_name(name).ok_or_else(|| {
                DataFusionError::Internal(format!("tauc write: unknown table '{name}'"))
            })?),
        };
        Ok((table, dt, region.to_string()))
    };
    if by_key.is_empty() {
        return Ok(vec![(resolve(first)?, None)]);
    }
    by_key
        .into_iter()
        .map(|(k, rows)| Ok((resolve(k)?, Some(UInt32Array::from(rows)))))
        .collect()
}

impl TaskWriter {
    fn new(
        spec: WriteSpec,
        store: Arc<dyn ObjectStore>,
        task: TaskName,
        sorted: Arc<BTreeSet<Table>>,
    ) -> TaskWriter {
        TaskWriter {
            spec,
            store,
            task,
            sorted,
            seq: 0,
            open: HashMap::new(),
            written: Vec::new(),
            counts: BTreeMap::new(),
        }
    }

    async fn write(&mut self, batch: &RecordBatch) -> DfResult<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        for (key, rows) in groups(batch)? {
            let part = match &rows {
                Some(idx) => take_record_batch(batch, idx)?,
                None => batch.clone(),
            };
            self.count(&key, &part)?;
            if let Some(table) = key.0 {
                let rows = conform(&part, &table.schema(), &[])
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                self.append(key, &rows).await?;
            }
        }
        Ok(())
    }

    fn count(&mut self, key: &Key, part: &RecordBatch) -> DfResult<()> {
        for c in &self.spec.counters {
            if let Some(col) = part.column_by_name(c) {
                let col = datafusion::arrow::compute::cast(col, &DataType::Int64)?;
                let sum: i64 = col.as_primitive::<Int64Type>().iter().flatten().sum();
                *self.counts.entry((key.clone(), c.clone())).or_default() += sum;
            }
        }
        for c in &self.spec.value_counts {
            if let Some(col) = part.column_by_name(c) {
                let col = datafusion::arrow::compute::cast(col, &DataType::Utf8)?;
                for v in col.as_string::<i32>().iter().flatten() {
                    *self
                        .counts
                        .entry((key.clone(), format!("{c}={v}")))
                        .or_default() += 1;
                }
            }
        }
        Ok(())
    }

    async fn append(&mut self, key: Key, rows: &RecordBatch) -> DfResult<()> {
        if !self.open.contains_key(&key) {
            let file = self.start(&key, rows.schema())?;
            self.open.insert(key.clone(), file);
        }
        let limits = self.spec.limits;
        let file = self.open.get_mut(&key).expect("just opened");
        file.writer.write(rows).await?;
        file.rows += rows.num_rows() as u64;
        if file.writer.in_progress_size() >= limits.buffer_bytes {
            file.writer.flush().await?;
        }
        let size = (file.writer.bytes_written() + file.writer.in_progress_size()) as u64;
        if file.rows >= limits.max_rows || size >= limits.max_bytes {
            let file = self.open.remove(&key).expect("open");
            self.close(key, file).await?;
        }
        Ok(())
    }

    fn start(&mut self, key: &Key, schema: SchemaRef) -> DfResult<OpenFile> {
        let (Some(table), dt, region) = key else {
            return internal_err!("tauc write: no table for a data row");
        };
        let name = format!(
            "part-{}-{}-{:03}.zstd.parquet",
            self.spec.run_id, self.task.attempt, self.seq
        );
        self.seq += 1;
        let dir = partition_dir(&self.spec.warehouse, *table, *dt, region);
        let path = Path::from(format!("{}/{name}", dir.prefix));
        let sink = BufWriter::new(self.store.clone(), path);
        let props = layout::properties(
            self.spec.limits.row_group_rows,
            *table,
            self.sorted.contains(table),
        )?;
        let writer = AsyncArrowWriter::try_new(sink, schema, Some(props))?;
        tracing::debug!(file = %name, table = table.path(), "writing");
        Ok(OpenFile {
            name,
            writer,
            rows: 0,
        })
    }

    async fn close(&mut self, key: Key, file: OpenFile) -> DfResult<()> {
        let mut writer = file.writer;
        writer.finish().await?;
        let bytes = writer.bytes_written() as u64;
        self.written.push((key, file.name, file.rows, bytes));
        Ok(())
    }

    async fn finish(mut self) -> DfResult<RecordBatch> {
        let open: Vec<(Key, OpenFile)> = self.open.drain().collect();
        for (key, file) in open {
            self.close(key, file).await?;
        }
        let mut rows = Rows::new(&self.task);
        for ((table, dt, region), name, n, bytes) in &self.written {
            let table = table.map(Table::path).unwrap_or_default();
            rows.push(
                KIND_FILE,
                table,
                *dt,
                region,
                name,
                *n as i64,
                *bytes as i64,
            );
        }
        for (((table, dt, region), name), v) in &self.counts {
            let table = table.map(Table::path).unwrap_or_default();
            rows.push(KIND_COUNT, table, *dt, region, name, *v, 0);
        }
        if let Some(observer) = OBSERVER.get() {
            for ((_, name), v) in &self.counts {
                observer.counted(name, *v);
            }
            for ((table, ..), _, n, bytes) in &self.written {
                observer.file_written(table.map(Table::name).unwrap_or_default(), *n, *bytes);
            }
            observer.task_finished();
        }
        let rows_written = self.written.iter().map(|w| w.2).sum::<u64>();
        macro_rules! task_line {
            ($level:ident) => {
                tracing::$level!(
                    executor_id = worker_name(),
                    run_id = %self.spec.run_id,
                    task = %self.task.attempt,
                    work = %self.task.work,
                    files = self.written.len(),
                    rows = rows_written,
                    "task wrote its files"
                )
            };
        }
        // an executor's log keeps a line per task; `tauc-job`'s in-process
        // tasks are its own progress, at debug (the stage lines and the
        // summary are what its user reads)
        if WORKER.get().is_some() {
            task_line!(info);
        } else {
            task_line!(debug);
        }
        rows.finish()
    }
}

/// A table partition's directory (the layout `commit::PartitionRef`
/// names: `{table}/dt={dt}/region={region}`).
pub fn partition_dir(warehouse: &Location, table: Table, dt: i32, region: &str) -> Location {
    let dt = crate::warehouse::tables::date_of(dt).format("%Y-%m-%d");
    table
        .location(warehouse)
        .join(&format!("dt={dt}/region={region}"))
}

struct Rows {
    task: String,
    attempt: String,
    kind: Vec<&'static str>,
    table: Vec<String>,
    dt: Vec<i32>,
    region: Vec<String>,
    name: Vec<String>,
    rows: Vec<i64>,
    bytes: Vec<i64>,
}

impl Rows {
    fn new(task: &TaskName) -> Rows {
        Rows {
            task: task.work.clone(),
            attempt: task.attempt.clone(),
            kind: Vec::new(),
            table: Vec::new(),
            dt: Vec::new(),
            region: Vec::new(),
            name: Vec::new(),
            rows: Vec::new(),
            bytes: Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        kind: &'static str,
        table: &str,
        dt: i32,
        region: &str,
        name: &str,
        rows: i64,
        bytes: i64,
    ) {
        self.kind.push(kind);
        self.table.push(table.to_string());
        self.dt.push(dt);
        self.region.push(region.to_string());
        self.name.push(name.to_string());
        self.rows.push(rows);
        self.bytes.push(bytes);
    }

    fn finish(self) -> DfResult<RecordBatch> {
        let n = self.kind.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.kind)),
            Arc::new(StringArray::from(self.table)),
            Arc::new(Date32Array::from(self.dt)),
            Arc::new(StringArray::from(self.region)),
            Arc::new(StringArray::from(self.name)),
            Arc::new(Int64Array::from(self.rows)),
            Arc::new(Int64Array::from(self.bytes)),
            Arc::new(StringArray::from(vec![self.task; n])),
            Arc::new(StringArray::from(vec![self.attempt; n])),
        ];
        Ok(RecordBatch::try_new(output_schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_carry_the_attempt() {
        let a = TaskName::of(Some("TID job1/3.0/7.1"), 1, Some(&[12]));
        assert!(
            a.attempt.starts_with("local-s3.0-t7.1-p1-"),
            "{}",
            a.attempt
        );
        assert_eq!(a.work, "s3-g12");
        let b = TaskName::of(Some("TID job1/3.0/7.1"), 1, Some(&[12]));
        assert_ne!(a.attempt, b.attempt, "two attempts never share a name");
        // the re-run stage slices differently: another task, another local index
        let rerun = TaskName::of(Some("TID job1/3.1/2.0"), 0, Some(&[12]));
        assert_eq!(
            rerun.work, a.work,
            "a re-run stage's task does the same work"
        );
        let other = TaskName::of(Some("TID job1/3.0/8.0"), 1, Some(&[13]));
        assert_ne!(
            other.work, a.work,
            "another task's local partition 1 is other work"
        );
        let unknown = TaskName::of(Some("TID job1/3.0/7.1"), 1, None);
        assert_eq!(
            unknown.work, unknown.attempt,
            "unknown work is never matched"
        );
        let c = TaskName::of(None, 2, None);
        assert!(c.attempt.starts_with("local-p2-"), "{}", c.attempt);
        assert_eq!(
            c.work, c.attempt,
            "without Ballista every task is its own work"
        );
    }
}
