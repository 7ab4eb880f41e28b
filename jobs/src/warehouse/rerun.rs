//! Which part of a stage's work a task's partition does, so that two
//! attempts at the same work can be told apart from two pieces of work.
//!
//! When an executor dies, Ballista 55 rolls back the running stage that
//! read from it and runs that stage again in full — but what its first
//! attempt's finished tasks already delivered stays listed beside the
//! re-run's output (`StageOutput::add_partition` and the final stage's
//! output locations only ever grow). The client then receives two attempts'
//! results for one piece of work: a DWD partition was committed with one
//! writer task's rows twice, once in about fifteen runs that lost an
//! executor mid-job.
//!
//! Task ids and slices do not name the work: a task runs a slice of the
//! stage's partitions sized to the executor's free slots, so a re-run may
//! cut them differently, and the plan a task runs numbers its partitions
//! from 0. What does name it is the set of upstream shuffle partitions a
//! partition reads: the scheduler restricts each shuffle reader to the
//! task's slice, and every location keeps its global partition id.
//! [`input_partitions`] reads that set where it is unambiguous and says
//! `None` otherwise — two different pieces of work must never share a name
//! (one would be dropped), while two attempts that cannot be matched are
//! merely both kept.

use std::collections::BTreeSet;
use std::sync::Arc;

use ballista_core::execution_plans::ShuffleReaderExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::repartition::RepartitionExec;

/// The global shuffle partitions that partition `partition` of `plan`
/// reads, when every path to them keeps partition `i` as partition `i`;
/// `None` when that is not known (no shuffle input, a broadcast read, a
/// repartition or a change of partition count on the way).
pub fn input_partitions(plan: &Arc<dyn ExecutionPlan>, partition: usize) -> Option<Vec<usize>> {
    reads(plan, partition).map(|s| s.into_iter().collect())
}

fn reads(plan: &Arc<dyn ExecutionPlan>, partition: usize) -> Option<BTreeSet<usize>> {
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        if reader.broadcast {
            return None;
        }
        let ids: BTreeSet<usize> = reader
            .partition
            .get(partition)?
            .iter()
            .map(|l| l.partition_id.partition_id)
            .collect();
        return (!ids.is_empty()).then_some(ids);
    }
    if plan.downcast_ref::<RepartitionExec>().is_some() {
        return None;
    }
    let count = plan.properties().output_partitioning().partition_count();
    let children = plan.children();
    if children.is_empty() {
        return None;
    }
    let mut found: Option<BTreeSet<usize>> = None;
    for child in children {
        // a child read whole (a join's build side) does not name the work
        if child.properties().output_partitioning().partition_count() != count {
            continue;
        }
        let ids = reads(child, partition)?;
        match &found {
            Some(f) if *f != ids => return None,
            _ => found = Some(ids),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use ballista_core::serde::scheduler::{
        ExecutorMetadata, ExecutorSpecification, PartitionId, PartitionLocation, PartitionStats,
    };
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::Partitioning;
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;

    use super::*;

    fn location(partition: usize, map_task: usize) -> PartitionLocation {
        PartitionLocation {
            map_partition_id: map_task,
            partition_id: PartitionId::new(&"job".into(), 1, partition),
            executor_meta: ExecutorMetadata {
                id: "e1".into(),
                host: "127.0.0.1".into(),
                port: 1,
                grpc_port: 2,
                specification: ExecutorSpecification::default(),
                os_info: Default::default(),
            },
            partition_stats: PartitionStats::default(),
            file_id: Some(map_task as u64),
            is_sort_shuffle: false,
        }
    }

    /// A reader restricted to `slice`, two map tasks' output each.
    fn reader(slice: &[usize]) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let partition = slice
            .iter()
            .map(|p| vec![location(*p, 0), location(*p, 1)])
            .collect();
        Arc::new(
            ShuffleReaderExec::try_new(
                1,
                partition,
                schema,
                Partitioning::UnknownPartitioning(slice.len()),
            )
            .expect("reader"),
        )
    }

    #[test]
    fn a_sliced_reader_names_its_global_partitions() {
        // a task given partitions 5 and 7 numbers them 0 and 1
        let plan = reader(&[5, 7]);
        assert_eq!(input_partitions(&plan, 0), Some(vec![5]));
        assert_eq!(input_partitions(&plan, 1), Some(vec![7]));
        assert_eq!(input_partitions(&plan, 2), None);
        // a re-run that slices differently names the same work the same
        assert_eq!(input_partitions(&reader(&[7]), 0), Some(vec![7]));
    }

    #[test]
    fn a_merge_of_partitions_names_no_work() {
        let plan: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(reader(&[5, 7])));
        assert_eq!(input_partitions(&plan, 0), None);
    }

    #[test]
    fn a_broadcast_read_names_no_work() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let plan: Arc<dyn ExecutionPlan> = Arc::new(
            ShuffleReaderExec::try_new_broadcast(
                1,
                vec![location(0, 0), location(1, 0)],
                schema,
                2,
            )
            .expect("reader"),
        );
        assert_eq!(input_partitions(&plan, 0), None);
    }
}
