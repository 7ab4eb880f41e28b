//! The last check before a DWD commit on a cluster: no event written twice
//! into one partition.
//!
//! Within a DWD partition every `event_id` is unique (layers.md: dedupe
//! by `event_id` over all rows read for that date, across both tables).
//! Ballista 55 can break that after losing an executor: a stage rolled
//! back and run again leaves what its first attempt already delivered
//! listed beside the re-run's output ([`crate::warehouse::rerun`]). Two
//! attempts at one writer task are set aside by the commit; a doubled
//! intermediate stage would write some events twice into files of one
//! attempt, which nothing else can see. This check reads only the
//! `event_id` column of the run's new files — on the executors, as one
//! Ballista job — and refuses the commit if any partition holds an id
//! twice. The in-process engine has one executor that is never lost and
//! skips it.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::prelude::{DataFrame, SessionContext};

use crate::error::{Error, Result};
use crate::store::Location;
use crate::warehouse::commit::{PartitionRef, WriteOutcome};
use crate::warehouse::table::event_id_table;
use crate::warehouse::tables::Table;

/// A partition whose new files hold some `event_id` more than once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doubled {
    /// The partition.
    pub partition: PartitionRef,
    /// Rows in its new files.
    pub rows: i64,
    /// Distinct `event_id`s among them.
    pub events: i64,
}

/// The partitions of `tables` whose files in `outcome` repeat an
/// `event_id`, checked as the job `name`: `collect` runs the check's query
/// (the engine's cluster-aware collect, which names and cancels the
/// Ballista job; the warehouse knows no engine).
pub async fn doubled_events<C>(
    ctx: &SessionContext,
    warehouse: &Location,
    outcome: &WriteOutcome,
    tables: &[Table],
    name: &str,
    collect: C,
) -> Result<Vec<Doubled>>
where
    C: AsyncFnOnce(DataFrame, &str) -> Result<Vec<RecordBatch>>,
{
    let mut parts = Vec::new();
    for p in outcome.partitions() {
        let urls = file_urls(warehouse, outcome, tables, &p)?;
        if !urls.is_empty() {
            parts.push((p, urls));
        }
    }
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let mut branches = Vec::new();
    for (i, (_, urls)) in parts.iter().enumerate() {
        let table = format!("tauc_new_events_{i}");
        ctx.register_table(&table, event_id_table(urls.clone())?)?;
        branches.push(format!(
            "SELECT {i} AS part, count(*) AS n, count(DISTINCT event_id) AS d FROM {table}"
        ));
    }
    let sql = branches.join(" UNION ALL ");
    let result = match ctx.sql(&sql).await {
        Ok(df) => collect(df, name).await,
        Err(e) => Err(e.into()),
    };
    for i in 0..parts.len() {
        ctx.deregister_table(format!("tauc_new_events_{i}"))?;
    }
    found(&result?, &parts)
}

/// What a check found, for a message: the first partition and how many.
pub fn describe(found: &[Doubled]) -> Option<String> {
    let first = found.first()?;
    Some(format!(
        "DWD dt={}/region={}: {} rows written for {} events ({} partition(s) affected) — the cluster ran a stage twice after losing an executor",
        first.partition.dt,
        first.partition.region,
        first.rows,
        first.events,
        found.len()
    ))
}

fn found(
    batches: &[RecordBatch],
    parts: &[(PartitionRef, Vec<ListingTableUrl>)],
) -> Result<Vec<Doubled>> {
    let mut out = Vec::new();
    for b in batches {
        let part = b.column(0).as_primitive::<Int64Type>();
        let n = b.column(1).as_primitive::<Int64Type>();
        let d = b.column(2).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            if n.value(r) != d.value(r) {
                let (partition, _) = parts.get(part.value(r) as usize).ok_or_else(|| {
                    Error::Invariant(format!("event check: unknown partition {}", part.value(r)))
                })?;
                out.push(Doubled {
                    partition: partition.clone(),
                    rows: n.value(r),
                    events: d.value(r),
                });
            }
        }
    }
    out.sort_by(|a, b| a.partition.cmp(&b.partition));
    Ok(out)
}

fn file_urls(
    warehouse: &Location,
    outcome: &WriteOutcome,
    tables: &[Table],
    p: &PartitionRef,
) -> Result<Vec<ListingTableUrl>> {
    let mut urls = Vec::new();
    for t in tables {
        let dir = p.location(&t.location(warehouse));
        for f in outcome.files_of(*t, p) {
            let key = format!("{}/{}", dir.prefix, f.name);
            urls.push(ListingTableUrl::parse(dir.object_url(&key))?);
        }
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::NaiveDate;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::engine::Engine;
    use crate::store::S3Options;
    use crate::warehouse::commit::{DataFile, parquet_bytes};

    fn partition() -> PartitionRef {
        PartitionRef {
            dt: NaiveDate::from_ymd_opt(2024, 6, 18).expect("date"),
            region: "eu".into(),
        }
    }

    /// Writes a file of `ids` into `table`'s partition and lists it in
    /// `outcome`.
    fn write(w: &Location, outcome: &mut WriteOutcome, table: Table, name: &str, ids: &[&str]) {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "event_id",
            DataType::Utf8,
            true,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(ids.to_vec()))],
        )
        .expect("batch");
        let dir = partition().location(&table.location(w));
        let path = std::path::Path::new("/").join(&dir.prefix);
        std::fs::create_dir_all(&path).expect("dir");
        std::fs::write(
            path.join(name),
            parquet_bytes(&schema, &[batch]).expect("parquet"),
        )
        .expect("file");
        outcome
            .files
            .entry((table, partition()))
            .or_default()
            .push(DataFile {
                name: name.into(),
                rows: ids.len() as u64,
                bytes: 0,
            });
    }

    async fn check(w: &Location, outcome: &WriteOutcome) -> Vec<Doubled> {
        let engine = Engine::new(S3Options::default()).expect("engine");
        let ctx = engine.connect(None, 1).await.expect("context");
        let tables = [Table::DwdTrkEvent, Table::DwdCorsError];
        doubled_events(
            &ctx,
            w,
            outcome,
            &tables,
            "test check",
            crate::engine::client::submitted::collect,
        )
        .await
        .expect("check")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_task_delivered_twice_is_found_and_distinct_events_pass() {
        let dir = tempfile::tempdir().expect("temp dir");
        let w = Location::parse(&dir.path().to_string_lossy()).expect("warehouse");
        let mut once = WriteOutcome::default();
        write(
            &w,
            &mut once,
            Table::DwdTrkEvent,
            "a.parquet",
            &["e1", "e2", "e3"],
        );
        write(&w, &mut once, Table::DwdCorsError, "b.parquet", &["e4"]);
        assert_eq!(check(&w, &once).await, []);

        // two attempts' files of the same rows: 6 rows for 3 events, plus e4
        let mut twice = once.clone();
        write(
            &w,
            &mut twice,
            Table::DwdTrkEvent,
            "a2.parquet",
            &["e1", "e2", "e3"],
        );
        let expected = Doubled {
            partition: partition(),
            rows: 7,
            events: 4,
        };
        let found = check(&w, &twice).await;
        assert_eq!(found, [expected]);
        let message = describe(&found).expect("a message");
        assert!(
            message.starts_with(
                "DWD dt=2024-06-18/region=eu: 7 rows written for 4 events (1 partition(s) affected)"
            ),
            "{message}"
        );
        assert_eq!(describe(&[]), None);

        // one event in both tables of a partition is doubled too
        let mut across = WriteOutcome::default();
        write(&w, &mut across, Table::DwdTrkEvent, "c.parquet", &["e5"]);
        write(
            &w,
            &mut across,
            Table::DwdCorsError,
            "d.parquet",
            &["e5", "e6"],
        );
        let found = check(&w, &across).await;
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].rows, found[0].events), (3, 2));
    }
}
