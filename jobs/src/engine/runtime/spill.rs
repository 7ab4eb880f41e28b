//! What this process's tasks spilled to disk.
//!
//! A memory limit only proves itself when a run over it spills and still
//! completes: the sorts, aggregates and joins of a task count their spill
//! files and bytes in their DataFusion metrics, which are gone once the
//! task ends. [`MeteredEngine`] wraps the in-process executor's execution
//! engine and adds each finished task's spills to process-wide totals
//! ([`spilled`]), logged per task; the in-process run prints them in its
//! summary. (A cluster executor's engine is Ballista's pooled one, whose
//! client pool Ballista does not export: it is not wrapped.)

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use ballista_core::JobId;
use ballista_core::serde::protobuf::{
    RuntimeStatsReport, ShuffleWritePartition, TaskColumnStats, WindowStateReport,
};
use ballista_executor::execution_engine::{ExecutionEngine, QueryStageExecutor};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::{MetricValue, MetricsSet};
use datafusion::prelude::SessionConfig;

static FILES: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static ROWS: AtomicU64 = AtomicU64::new(0);

/// Spill files, bytes and rows written by the tasks of this process so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spilled {
    /// Spill files written.
    pub files: u64,
    /// Bytes written to them.
    pub bytes: u64,
    /// Rows written to them.
    pub rows: u64,
}

impl fmt::Display for Spilled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes ({:.1} MiB, {} rows) in {} spill files",
            self.bytes,
            self.bytes as f64 / f64::from(1 << 20),
            self.rows,
            self.files
        )
    }
}

/// The totals of every task this process has finished.
pub fn spilled() -> Spilled {
    Spilled {
        files: FILES.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        rows: ROWS.load(Ordering::Relaxed),
    }
}

/// The spills of one task: the sum over its operators' metrics —
/// DataFusion's spill metrics (sorts, aggregates, joins) and the counters
/// Ballista's sort-based shuffle writer keeps under its own names.
fn of_task(metrics: &[MetricsSet]) -> Spilled {
    let mut s = Spilled::default();
    for m in metrics.iter().flat_map(|set| set.iter()) {
        let n = m.value().as_usize() as u64;
        match m.value() {
            MetricValue::SpillCount(_) => s.files += n,
            MetricValue::SpilledBytes(_) => s.bytes += n,
            MetricValue::SpilledRows(_) => s.rows += n,
            MetricValue::Count { name, .. } if name == "spill_count" => s.files += n,
            MetricValue::Count { name, .. } if name == "spill_bytes" => s.bytes += n,
            _ => {}
        }
    }
    s
}

fn add(job_id: &JobId, stage_id: usize, task_id: usize, s: Spilled) {
    if s == Spilled::default() {
        return;
    }
    FILES.fetch_add(s.files, Ordering::Relaxed);
    BYTES.fetch_add(s.bytes, Ordering::Relaxed);
    ROWS.fetch_add(s.rows, Ordering::Relaxed);
    tracing::info!(
        job_id = %job_id,
        stage_id,
        task_id,
        spill_files = s.files,
        spilled_bytes = s.bytes,
        spilled_rows = s.rows,
        "task spilled to disk (over its memory limit)"
    );
}

/// An execution engine that counts what its tasks spill.
pub struct MeteredEngine {
    inner: Arc<dyn ExecutionEngine>,
}

impl MeteredEngine {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ExecutionEngine>) -> MeteredEngine {
        MeteredEngine { inner }
    }
}

impl ExecutionEngine for MeteredEngine {
    fn create_query_stage_exec(
        &self,
        job_id: JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn ExecutionPlan>,
        work_dir: &str,
        config: &SessionConfig,
    ) -> Result<Arc<dyn QueryStageExecutor>> {
        let inner = self.inner.create_query_stage_exec(
            job_id.clone(),
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir,
            config,
        )?;
        Ok(Arc::new(MeteredStage {
            inner,
            job_id,
            stage_id,
        }))
    }
}

/// A query stage whose spills are counted when a task of it ends.
#[derive(Debug)]
struct MeteredStage {
    inner: Arc<dyn QueryStageExecutor>,
    job_id: JobId,
    stage_id: usize,
}

impl fmt::Display for MeteredStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl QueryStageExecutor for MeteredStage {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<TaskContext>,
    ) -> Result<Vec<ShuffleWritePartition>> {
        let out = self.inner.execute_query_stage(task_id, context).await;
        add(
            &self.job_id,
            self.stage_id,
            task_id,
            of_task(&self.inner.collect_plan_metrics()),
        );
        out
    }

    fn collect_plan_metrics(&self) -> Vec<MetricsSet> {
        self.inner.collect_plan_metrics()
    }

    fn collect_runtime_stats_reports(&self) -> Vec<RuntimeStatsReport> {
        self.inner.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(&self) -> Result<Vec<WindowStateReport>> {
        self.inner.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<TaskColumnStats> {
        self.inner.collect_column_stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder};

    #[test]
    fn a_tasks_spills_are_summed_over_its_operators() {
        let sort = ExecutionPlanMetricsSet::new();
        MetricBuilder::new(&sort).spill_count(0).add(2);
        MetricBuilder::new(&sort).spilled_bytes(0).add(1000);
        MetricBuilder::new(&sort).spilled_rows(0).add(10);
        MetricBuilder::new(&sort).spill_count(1).add(1);
        let agg = ExecutionPlanMetricsSet::new();
        MetricBuilder::new(&agg).spilled_bytes(0).add(24);
        // Ballista's sort-based shuffle writer, under its own names
        let shuffle = ExecutionPlanMetricsSet::new();
        MetricBuilder::new(&shuffle)
            .counter("spill_count", 0)
            .add(4);
        MetricBuilder::new(&shuffle)
            .counter("spill_bytes", 0)
            .add(4096);
        MetricBuilder::new(&shuffle)
            .counter("input_rows", 0)
            .add(99);
        let quiet = ExecutionPlanMetricsSet::new();
        MetricBuilder::new(&quiet).output_rows(0).add(5);
        let s = of_task(&[
            sort.clone_inner(),
            agg.clone_inner(),
            shuffle.clone_inner(),
            quiet.clone_inner(),
        ]);
        assert_eq!(
            s,
            Spilled {
                files: 7,
                bytes: 5120,
                rows: 10
            }
        );
        assert_eq!(of_task(&[quiet.clone_inner()]), Spilled::default());
    }
}
