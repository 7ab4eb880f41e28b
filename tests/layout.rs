//! The data files' layout for lookups, read back from the files the jobs
//! wrote (their Parquet footers and rows, not the writer's settings): rows
//! sorted by each table's key, Bloom filters on the id columns that hold
//! every value of their row group, page indexes; and lookups through the
//! SQL surface that prune with them return what a scan without any
//! pruning returns — also over files written without this layout.

use std::cmp::Ordering;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::common::stats::Precision;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::properties::ReaderProperties;
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use datafusion::parquet::file::serialized_reader::ReadOptionsBuilder;
use datafusion::physical_plan::{StatisticsArgs, StatisticsContext};
use datafusion::prelude::SessionContext;
use tauc_jobs::engine::session::Engine;
use tauc_jobs::store::{Location, S3Options};
use tauc_jobs::warehouse::tables::Table;

use crate::harness::*;

const DT: &str = "2024-06-18";

/// What `docs/design.md` ("File layout") promises of a table's files.
struct Promised {
    /// The key the rows are sorted by.
    key: &'static [&'static str],
    /// The columns with Bloom filters.
    bloom: &'static [&'static str],
    /// Columns with about a value per row: written without a dictionary.
    plain: &'static [&'static str],
    /// A column whose values repeat: written with one.
    dictionary: &'static str,
}

fn promised(table: Table) -> Promised {
    match table {
        Table::OdsEvent => Promised {
            key: &["src_file", "line_no"],
            bloom: &["event_id", "user_id", "device_id", "target_id"],
            plain: &["event_id", "client_ts", "sent_ts", "collector_ts"],
            dictionary: "event_type",
        },
        Table::DwdTrkEvent => Promised {
            key: &["user_key", "event_ts"],
            bloom: &["event_id", "user_id", "user_key", "device_id", "target_id"],
            plain: &["event_id", "event_ts", "local_ts", "geo_lat", "geo_lon"],
            dictionary: "event_type",
        },
        Table::DwdCorsError => Promised {
            key: &["fingerprint", "event_ts"],
            bloom: &["event_id", "user_key", "fingerprint"],
            plain: &["event_id", "event_ts", "user_key"],
            dictionary: "err_class",
        },
        _ => unreachable!(),
    }
}

/// A day of the sample (CORS failures and every dirty case included),
/// layered and reported in-process.
async fn day(bucket: &str) -> World {
    let w = World::new(bucket);
    w.sample_day("6000");
    let args = ["submit", "daily", "--date", DT, "--region", "aps1"];
    w.tauc_job(&args, true).ok();
    w
}

/// The bytes of every file a committed partition lists.
async fn files(w: &World, table: Table) -> Vec<(String, Bytes)> {
    let m = w.assert_only_listed_files(table, DT, "aps1").await;
    let mut out = Vec::new();
    for f in &m.files {
        let key = format!("wh/{}/dt={DT}/region=aps1/{f}", table.path());
        out.push((f.clone(), w.get(&key).await));
    }
    assert!(!out.is_empty(), "{table:?} has no files");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn files_are_sorted_by_their_key_with_bloom_filters_page_indexes_and_plain_ids() {
    let w = day("layout-meta").await;
    for table in [Table::OdsEvent, Table::DwdTrkEvent, Table::DwdCorsError] {
        let Promised {
            key,
            bloom,
            plain,
            dictionary,
        } = promised(table);
        for (name, bytes) in files(&w, table).await {
            let what = format!("{table:?} {name}");
            let rows = read_all(&bytes, table);
            assert!(rows.num_rows() > 0, "{what} is empty");
            assert_sorted(&rows, key, &what);
            let options = ReadOptionsBuilder::new()
                .with_page_index()
                .with_reader_properties(
                    ReaderProperties::builder()
                        .set_read_bloom_filter(true)
                        .build(),
                )
                .build();
            let reader = SerializedFileReader::new_with_options(bytes.clone(), options).unwrap();
            let meta = reader.metadata();
            let schema = table.schema();
            let key_idx: Vec<i32> = key
                .iter()
                .map(|c| schema.index_of(c).unwrap() as i32)
                .collect();
            assert!(meta.column_index().is_some(), "{what}: no column index");
            assert!(meta.offset_index().is_some(), "{what}: no offset index");
            let mut first_row = 0;
            for g in 0..meta.num_row_groups() {
                let rg = meta.row_group(g);
                let sorting: Vec<i32> = rg
                    .sorting_columns()
                    .unwrap_or_else(|| panic!("{what}: row group {g} declares no sort order"))
                    .iter()
                    .map(|s| {
                        assert!(!s.descending && !s.nulls_first, "{what}: {s:?}");
                        s.column_idx
                    })
                    .collect();
                assert_eq!(sorting, key_idx, "{what}: row group {g}'s sort order");
                let group = rows.slice(first_row, rg.num_rows() as usize);
                first_row += rg.num_rows() as usize;
                let row_group = reader.get_row_group(g).unwrap();
                for c in plain.iter().chain([&dictionary]) {
                    let chunk = rg.column(schema.index_of(c).unwrap());
                    let paged = chunk.dictionary_page_offset().is_some();
                    assert_eq!(paged, c == &dictionary, "{what}: {c}'s dictionary page");
                }
                for c in bloom {
                    let i = schema.index_of(c).unwrap();
                    let filter = row_group
                        .get_column_bloom_filter(i)
                        .unwrap_or_else(|| panic!("{what}: no Bloom filter on {c}"));
                    for v in strs(&group, c).into_iter().flatten() {
                        assert!(filter.check(v.as_str()), "{what}: {c}'s filter lacks {v}");
                    }
                    // absent values are (almost always) told apart: 1 % false positives
                    let hits = (0..400)
                        .filter(|i| filter.check(format!("absent-{c}-{i}").as_str()))
                        .count();
                    assert!(
                        hits < 40,
                        "{what}: {c}'s filter passes {hits}/400 absent values"
                    );
                }
            }
        }
    }
}

/// A file's rows, as its table's schema.
fn read_all(bytes: &Bytes, table: Table) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    concat_batches(&table.schema(), &batches).unwrap()
}

/// A key value: text or a number (a count or epoch milliseconds); `None`
/// sorts last, as the files promise (ascending, nulls last).
#[derive(PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Value {
    Text(String),
    Number(i64),
}

fn key_column(b: &RecordBatch, c: &str) -> Vec<Option<Value>> {
    match c {
        "line_no" => i64s(b, c)
            .into_iter()
            .map(|v| v.map(Value::Number))
            .collect(),
        "event_ts" => ts(b, c).into_iter().map(|v| v.map(Value::Number)).collect(),
        _ => strs(b, c).into_iter().map(|v| v.map(Value::Text)).collect(),
    }
}

fn nulls_last(a: &Option<Value>, b: &Option<Value>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
    }
}

fn assert_sorted(b: &RecordBatch, key: &[&str], what: &str) {
    let cols: Vec<Vec<Option<Value>>> = key.iter().map(|c| key_column(b, c)).collect();
    for i in 1..b.num_rows() {
        let order = cols
            .iter()
            .map(|c| nulls_last(&c[i - 1], &c[i]))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal);
        assert!(
            order.is_le(),
            "{what}: row {i} comes before row {} in {key:?} order: {:?} then {:?}",
            i - 1,
            cols.iter().map(|c| &c[i - 1]).collect::<Vec<_>>(),
            cols.iter().map(|c| &c[i]).collect::<Vec<_>>(),
        );
    }
}

/// The warehouse's tables on a fresh in-process engine (no footer cached
/// from an earlier look).
async fn sql_surface(w: &World) -> SessionContext {
    let engine = Engine::new(S3Options {
        endpoint: Some(w.endpoint.clone()),
        allow_http: Some(true),
        retry_timeout_secs: Some(5),
        ..Default::default()
    })
    .unwrap();
    let ctx = engine.local_context(2).unwrap();
    let wh = Location::parse(&w.warehouse()).unwrap();
    tauc_jobs::warehouse::table::register_all(&ctx, &engine.registry, &wh)
        .await
        .unwrap();
    ctx
}

async fn query(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let Some(first) = batches.first() else {
        return Vec::new();
    };
    render_sorted(&concat_batches(&first.schema(), &batches).unwrap(), &[])
}

/// Lookups of the kinds the back office makes, on values taken from the
/// data: one user, one event, one target's clicks, one fingerprint, one
/// device's raw rows, a range of users.
async fn lookups(w: &World) -> Vec<String> {
    let ctx = sql_surface(w).await;
    let one = |sql: &str| {
        let ctx = ctx.clone();
        let sql = sql.to_string();
        async move {
            let rows = query(&ctx, &sql).await;
            let first = rows.first().unwrap_or_else(|| panic!("no rows: {sql}"));
            first.split_once('=').unwrap().1.to_string()
        }
    };
    let user = one("SELECT max(user_id) AS v FROM dwd_trk_event_di").await;
    // from the middle of the ids: no file's min/max leaves it out, its
    // Bloom filters must
    let event =
        one("SELECT event_id AS v FROM dwd_trk_event_di ORDER BY event_id LIMIT 1 OFFSET 1000")
            .await;
    let target =
        one("SELECT max(target_id) AS v FROM dwd_trk_event_di WHERE event_type = 'click'").await;
    let fingerprint = one("SELECT min(fingerprint) AS v FROM dwd_mon_cors_error_di").await;
    let device = one("SELECT max(device_id) AS v FROM ods_fe_event_di").await;
    vec![
        format!("SELECT * FROM dwd_trk_event_di WHERE user_id = '{user}'"),
        format!("SELECT * FROM dwd_trk_event_di WHERE event_id = '{event}'"),
        format!(
            "SELECT dt, gender, age_band, count(*) AS n FROM dwd_trk_event_di \
             WHERE event_type = 'click' AND target_id = '{target}' GROUP BY 1, 2, 3"
        ),
        format!("SELECT * FROM dwd_mon_cors_error_di WHERE fingerprint = '{fingerprint}'"),
        format!("SELECT * FROM ods_fe_event_di WHERE device_id = '{device}'"),
        format!("SELECT event_id, user_key FROM dwd_trk_event_di WHERE user_key >= '{user}'"),
        "SELECT * FROM dwd_trk_event_di WHERE user_id = 'no-such-user'".to_string(),
    ]
}

/// Each lookup's rows, with every pruning on (the defaults) or every one
/// off: no statistics, page index or Bloom filter read, no filter in the
/// decoder.
async fn answers(w: &World, queries: &[String], pruning: bool) -> Vec<Vec<String>> {
    let ctx = sql_surface(w).await;
    if !pruning {
        for off in [
            "pruning",
            "pushdown_filters",
            "enable_page_index",
            "bloom_filter_on_read",
        ] {
            ctx.sql(&format!("SET datafusion.execution.parquet.{off} = false"))
                .await
                .unwrap();
        }
    }
    let mut out = Vec::new();
    for q in queries {
        out.push(query(&ctx, q).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_return_what_a_scan_without_pruning_returns_also_over_older_files() {
    let w = day("layout-lookups").await;
    let queries = lookups(&w).await;
    let pruned = answers(&w, &queries, true).await;
    let scanned = answers(&w, &queries, false).await;
    for ((q, a), b) in queries.iter().zip(&pruned).zip(&scanned) {
        assert_eq!(a, b, "{q}");
    }
    assert!(pruned[0].len() > 1, "the user lookup found {:?}", pruned[0]);
    assert_eq!(pruned[1].len(), 1, "the event lookup");
    assert!(pruned[6].is_empty());

    // the event lookup skipped row groups on their Bloom filters
    let ctx = sql_surface(&w).await;
    let plan = query(&ctx, &format!("EXPLAIN ANALYZE {}", queries[1])).await;
    let plan = plan.join("\n");
    let (total, matched) = pruning_counter(&plan, "row_groups_pruned_bloom_filter");
    assert!(
        matched < total,
        "no row group pruned: {total} → {matched}\n{plan}"
    );

    // the target lookup's scan tests the id first, the event type after
    // it, however the query wrote them (the decoder tests them in order)
    let plan = query(&ctx, &format!("EXPLAIN {}", queries[2]))
        .await
        .join("\n");
    let scan = plan
        .split("DataSourceExec")
        .nth(1)
        .unwrap_or_else(|| panic!("no scan in:\n{plan}"));
    let predicate = scan.split("predicate=").nth(1).unwrap();
    let at = |c: &str| {
        predicate
            .find(c)
            .unwrap_or_else(|| panic!("{c} in {predicate}"))
    };
    assert!(at("target_id@") < at("event_type@"), "{predicate}");

    // the planner's row counts come from the manifests: every row of
    // every partition, before any filter
    for table in [Table::OdsEvent, Table::DwdTrkEvent, Table::DwdCorsError] {
        let (planned, counted) = planned_and_counted(&ctx, table).await;
        assert_eq!(planned, Precision::Inexact(counted), "{}", table.name());
        assert!(counted > 0, "{}", table.name());
    }

    // the same lookups over the same rows in files written without the
    // layout (unsorted, no Bloom filter, no page index): as files written
    // before it are
    for table in [Table::OdsEvent, Table::DwdTrkEvent, Table::DwdCorsError] {
        for (name, bytes) in files(&w, table).await {
            let rows = read_all(&bytes, table);
            let n = rows.num_rows();
            let shuffled = rows.slice(n / 2, n - n / 2);
            let head = rows.slice(0, n / 2);
            let rows = concat_batches(&table.schema(), &[shuffled, head]).unwrap();
            let mut out = Vec::new();
            let mut writer = ArrowWriter::try_new(&mut out, table.schema(), None).unwrap();
            writer.write(&rows).unwrap();
            writer.close().unwrap();
            let key = format!("wh/{}/dt={DT}/region=aps1/{name}", table.path());
            w.put(&key, out).await;
        }
    }
    let older = answers(&w, &queries, true).await;
    for ((q, a), b) in queries.iter().zip(&older).zip(&scanned) {
        assert_eq!(a, b, "over older files: {q}");
    }
}

/// The rows the planner expects a scan of `table` to give, and the rows
/// it gives.
async fn planned_and_counted(ctx: &SessionContext, table: Table) -> (Precision<usize>, usize) {
    // the scan as the scheduler plans it (the client's own plan is the
    // Ballista job, which has no statistics)
    let provider = ctx.table_provider(table.name()).await.unwrap();
    let scan = provider.scan(&ctx.state(), None, &[], None).await.unwrap();
    let stats = StatisticsContext::new().compute(scan.as_ref(), &StatisticsArgs::new());
    let planned = stats.unwrap().num_rows;
    let counted = ctx
        .table(table.name())
        .await
        .unwrap()
        .count()
        .await
        .unwrap();
    (planned, counted)
}

/// `name=N total → M matched` in an `EXPLAIN ANALYZE`, summed over the
/// plan's scans.
fn pruning_counter(plan: &str, name: &str) -> (u64, u64) {
    let (mut total, mut matched) = (0, 0);
    for part in plan.split(&format!("{name}=")).skip(1) {
        let mut words = part.split_whitespace();
        let t: u64 = words.next().unwrap().parse().unwrap();
        assert_eq!(words.next(), Some("total"), "{part}");
        words.next(); // →
        let m: u64 = words.next().unwrap().parse().unwrap();
        total += t;
        matched += m;
    }
    assert!(total > 0, "no {name} in:\n{plan}");
    (total, matched)
}
