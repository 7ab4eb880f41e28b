//! What this process's tasks did, for an executor's `GET /metrics`:
//! raw files, lines and bytes read, rows quarantined by reason, files, rows
//! and bytes written per table — cumulative since the executor started,
//! the Prometheus way — plus its memory pool and spill space now.
//!
//! Every number comes from the warehouse writer's per-task summary (the
//! rows it returns to `tauc-job`, see `tauc_jobs::warehouse::writer`),
//! handed to [`Counting`], the writer's task observer in this process, so an
//! executor's counters add up, over the cluster, to what the runs'
//! summaries report. Tasks of a failed attempt count too: the counters say
//! what the executor did, the manifests what was committed.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::execution::runtime_env::RuntimeEnv;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tauc_jobs::warehouse::writer::TaskObserver;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CounterLabel {
    counter: String,
}

#[derive(Default)]
struct Counters {
    tasks: Counter,
    files_written: Family<TableLabel, Counter>,
    rows_written: Family<TableLabel, Counter>,
    bytes_written: Family<TableLabel, Counter>,
    quarantined: Family<ReasonLabel, Counter>,
    raw: [Counter; 5],
    other: Family<CounterLabel, Counter>,
}

/// The raw scan's counters, by the names the writer reports them under.
const RAW: [(&str, &str, &str); 5] = [
    ("files", "raw_files_read", "Raw message files read"),
    (
        "files_ignored",
        "raw_files_ignored",
        "Other objects in the day folders",
    ),
    ("bytes", "raw_bytes_read", "Bytes of the raw files read"),
    (
        "lines",
        "raw_lines_read",
        "Raw lines read, blank ones included",
    ),
    ("blank_lines", "raw_blank_lines", "Blank raw lines"),
];

static COUNTERS: LazyLock<Counters> = LazyLock::new(Counters::default);
static FINISHED_AT: AtomicU64 = AtomicU64::new(0);

/// One finished writer task: a file it wrote.
fn file_written(table: &str, rows: u64, bytes: u64) {
    let label = TableLabel {
        table: table.to_string(),
    };
    let c = &*COUNTERS;
    c.files_written.get_or_create(&label).inc();
    c.rows_written.get_or_create(&label).inc_by(rows);
    c.bytes_written.get_or_create(&label).inc_by(bytes);
}

/// One finished writer task: a counter it kept (`files`, `lines`, …,
/// `reason=…`).
fn counted(name: &str, value: i64) {
    let value = value.max(0) as u64;
    let c = &*COUNTERS;
    if let Some(reason) = name.strip_prefix("reason=") {
        let label = ReasonLabel {
            reason: reason.to_string(),
        };
        c.quarantined.get_or_create(&label).inc_by(value);
    } else if let Some(i) = RAW.iter().position(|(n, ..)| *n == name) {
        c.raw[i].inc_by(value);
    } else {
        let label = CounterLabel {
            counter: name.to_string(),
        };
        c.other.get_or_create(&label).inc_by(value);
    }
}

/// A writer task finished.
fn task_finished() {
    COUNTERS.tasks.inc();
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    FINISHED_AT.store(now, Ordering::Relaxed);
}

/// Counts what the writer tasks of this process did (set as the writer's
/// task observer when the executor starts).
pub struct Counting;

impl TaskObserver for Counting {
    fn file_written(&self, table: &str, rows: u64, bytes: u64) {
        file_written(table, rows, bytes);
    }

    fn counted(&self, name: &str, value: i64) {
        counted(name, value);
    }

    fn task_finished(&self) {
        task_finished();
    }
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

/// The text an executor's `/metrics` answers: the counters above, whether
/// it is registered, and its memory pool and spill space now.
pub fn render(ready: bool, runtime: &RuntimeEnv) -> String {
    let c = &*COUNTERS;
    let mut reg = Registry::with_prefix("tauc_executor");
    reg.register(
        "ready",
        "1 once the scheduler answered its last heartbeat",
        gauge(ready as i64),
    );
    reg.register("write_tasks", "Writer tasks finished", c.tasks.clone());
    reg.register(
        "last_task_finished_timestamp_seconds",
        "When the last writer task finished",
        gauge(FINISHED_AT.load(Ordering::Relaxed) as i64),
    );
    for (name, help, family) in [
        (
            "files_written",
            "Warehouse files written, by table",
            &c.files_written,
        ),
        ("rows_written", "Rows written, by table", &c.rows_written),
        (
            "bytes_written",
            "Parquet bytes written, by table",
            &c.bytes_written,
        ),
    ] {
        reg.register(name, help, family.clone());
    }
    reg.register(
        "quarantined_rows",
        "Rows written to ods_fe_quarantine_di, by reason",
        c.quarantined.clone(),
    );
    for ((_, name, help), counter) in RAW.iter().zip(&c.raw) {
        reg.register(*name, *help, counter.clone());
    }
    reg.register(
        "task_counted",
        "Other per-task counters of the jobs",
        c.other.clone(),
    );
    reg.register(
        "memory_reserved_bytes",
        "Bytes the running tasks hold in the memory pool",
        gauge(runtime.memory_pool.reserved() as i64),
    );
    reg.register(
        "spill_disk_bytes",
        "Bytes of spill files on disk now",
        gauge(runtime.disk_manager.used_disk_space() as i64),
    );
    let mut out = String::new();
    // writing to a String cannot fail
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}
