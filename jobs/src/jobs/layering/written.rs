//! What the writers of a stage report: run as a Ballista job, checked to
//! touch only the run's partitions, committed partition by partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::prelude::DataFrame;
use object_store::ObjectStore;

use crate::engine::client::submitted;
use crate::error::{Error, Result};
use crate::warehouse::commit::{self, Lineage, PartitionRef, WriteOutcome};
use crate::warehouse::tables::Table;
use crate::warehouse::writer::{WriteNode, WriteSpec};

use super::{JOB, LayeringArgs};

/// Runs `df` through the warehouse writer as the Ballista job `name` and
/// gathers what it reports.
pub async fn write(df: DataFrame, spec: WriteSpec, name: &str) -> Result<WriteOutcome> {
    let (state, plan) = df.into_parts();
    let node = WriteNode::new(plan, spec)?;
    let plan = LogicalPlan::Extension(Extension {
        node: Arc::new(node),
    });
    let batches = submitted::collect(DataFrame::new(state, plan), name).await?;
    WriteOutcome::from_batches(&batches)
}

/// Fails when the writers wrote into a partition the run is not
/// responsible for (a bug; its files stay unlisted strays).
pub(super) fn only_into<S>(
    outcome: &WriteOutcome,
    summaries: &BTreeMap<PartitionRef, S>,
    what: &str,
) -> Result<()> {
    match outcome
        .partitions()
        .into_iter()
        .find(|p| !summaries.contains_key(p))
    {
        Some(p) => Err(Error::Invariant(format!(
            "internal: {what} wrote into partition dt={} region={}, which this run does not build; nothing was committed",
            p.dt, p.region
        ))),
        None => Ok(()),
    }
}

/// Commits partition `p` of each of `tables` with the files the writers
/// reported (none: an empty partition), recording `lineage`.
pub(super) async fn commit_written(
    store: &Arc<dyn ObjectStore>,
    args: &LayeringArgs,
    run_id: &str,
    outcome: &WriteOutcome,
    p: &PartitionRef,
    tables: [Table; 2],
    lineage: Lineage,
) -> Result<()> {
    for table in tables {
        let dir = p.location(&table.location(&args.warehouse));
        let files = outcome.files_of(table, p);
        let lineage = lineage.clone();
        commit::commit_files_with(store.as_ref(), run_id, JOB, table, &dir, p, &files, lineage)
            .await?;
    }
    Ok(())
}
