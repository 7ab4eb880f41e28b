//! How the warehouse's data files are laid out for the readers that look
//! rows up in them: the order of rows within each file, the Bloom filters,
//! the page size — and the Parquet writer settings that carry them.
//!
//! The order is the one that serves the lookups users make most (the
//! back office's, in the notes), chosen per table:
//!
//! - **`dwd_trk_event_di`: `user_key, event_ts`.** One user's events are a
//!   few rows among millions: sorted, they sit in one page of each column
//!   per file, and the row groups' and pages' min/max on `user_key` (and on
//!   `user_id`, equal to it for signed-in users) find them. A user's rows
//!   also come out in time order, as the funnels read them. Targets are
//!   looked up through Bloom filters instead: a long-tail target is in few
//!   row groups, and a heavy one is in every row group whatever the order.
//! - **`dwd_mon_cors_error_di`: `fingerprint, event_ts`.** Failures are
//!   looked up (and ranked) by fingerprint.
//! - **ODS: `src_file, line_no`.** The raw lines' order: the lineage
//!   queries (`where did this row come from`) read one file's rows.
//!
//! Bloom filters go on the id columns users filter on with `=`: one per
//! column per row group, sized for the row group, 1 % false positives.
//! Columns with about a value per row are written without a dictionary
//! ([`plain_columns`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::metadata::SortingColumn;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use datafusion::physical_expr::expressions::{CaseExpr, Literal, col};
use datafusion::physical_expr::{LexOrdering, PhysicalExpr, PhysicalSortExpr};

use crate::warehouse::tables::Table;

/// Rows per data page: small enough that a lookup in a sorted file reads
/// a few thousand rows of each column, not a row group's.
pub const PAGE_ROWS: usize = 8 * 1024;

/// Rows per data page of `table`'s files: [`PAGE_ROWS`], and an eighth
/// of that for CORS failures. They are about 1 % of the events, so their
/// files hold a hundredth of the rows of the events' — about 2 000 a file
/// at a million events a day — and at 8 Ki rows a file is one page: a
/// fingerprint's lookup would read each file's columns whole, where the
/// page index of smaller pages finds the fingerprint's rows (the files
/// are sorted by it).
pub fn page_rows(table: Table) -> usize {
    match table {
        Table::DwdCorsError => PAGE_ROWS / 8,
        _ => PAGE_ROWS,
    }
}

/// False-positive rate of the Bloom filters.
pub const BLOOM_FPP: f64 = 0.01;

/// How rows are ordered: ascending, nulls last (the Parquet footer says
/// the same).
const ORDER: SortOptions = SortOptions {
    descending: false,
    nulls_first: false,
};

/// The columns each data file of `table` is sorted by; empty for the
/// tables the writer does not write (stats, reports).
pub fn sort_key(table: Table) -> &'static [&'static str] {
    match table {
        Table::OdsEvent | Table::OdsQuarantine => &["src_file", "line_no"],
        Table::DwdTrkEvent => &["user_key", "event_ts"],
        Table::DwdCorsError => &["fingerprint", "event_ts"],
        _ => &[],
    }
}

/// The columns of `table` with Bloom filters.
pub fn bloom_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::OdsEvent => &["event_id", "user_id", "device_id", "target_id"],
        Table::OdsQuarantine => &["event_id"],
        Table::DwdTrkEvent => &["event_id", "user_id", "user_key", "device_id", "target_id"],
        Table::DwdCorsError => &["event_id", "user_key", "fingerprint"],
        _ => &[],
    }
}

/// The columns of `table` written without a dictionary: those with about
/// a value per row (ids, timestamps, coordinates, durations). A dictionary
/// there only fills up (the writer gives it up at 1 MiB and writes the
/// rest plain), and a reader must read and decode that page — half a MiB
/// for `event_id` — for every row group it touches, even to take one row:
/// the dictionary pages were three quarters of what one user's lookup
/// read. The other columns repeat their values and keep theirs.
pub fn plain_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::OdsEvent => &[
            "event_id",
            "client_ts",
            "sent_ts",
            "collector_ts",
            "page_enter_ts",
            "page_leave_ts",
            "geo_lat",
            "geo_lon",
        ],
        Table::OdsQuarantine => &["event_id", "raw_line"],
        Table::DwdTrkEvent => &[
            "event_id",
            "event_ts",
            "local_ts",
            "page_enter_ts",
            "page_leave_ts",
            "duration_ms",
            "geo_lat",
            "geo_lon",
        ],
        // nearly a user per row (1 738 in a file of 2 164 at the bench)
        Table::DwdCorsError => &[
            "event_id",
            "event_ts",
            "local_ts",
            "user_key",
            "duration_ms",
        ],
        _ => &[],
    }
}

/// The order a writer's input must have so that every file it writes is
/// sorted: by `table_column` (the rows' table, as `Table::path`), `dt` and
/// `region` (one file's rows together), then
/// by each table's [`sort_key`] — each key column only for its own table's
/// rows (`CASE _table WHEN … THEN column END`), since tables that share a
/// write order by different columns. Tables whose key columns the input
/// lacks are left unsorted; the set returned names the sorted ones.
pub fn write_order(
    input: &Schema,
    table_column: &str,
) -> DfResult<(Option<LexOrdering>, BTreeSet<Table>)> {
    let Ok(table_col) = col(table_column, input) else {
        return Ok((None, BTreeSet::new()));
    };
    let mut exprs = Vec::new();
    let mut sorted = BTreeSet::new();
    for name in [table_column, "dt", "region"] {
        if let Ok(c) = col(name, input) {
            exprs.push(PhysicalSortExpr::new(c, ORDER));
        }
    }
    for table in Table::all() {
        let key = sort_key(table);
        if key.is_empty() || key.iter().any(|c| input.index_of(c).is_err()) {
            continue;
        }
        let this = lit(table.path());
        for c in key {
            let when = (this.clone(), col(c, input)?);
            let only_here = CaseExpr::try_new(Some(table_col.clone()), vec![when], None)?;
            exprs.push(PhysicalSortExpr::new(Arc::new(only_here), ORDER));
        }
        sorted.insert(table);
    }
    Ok((LexOrdering::new(exprs), sorted))
}

fn lit(s: &str) -> Arc<dyn PhysicalExpr> {
    Arc::new(Literal::new(ScalarValue::Utf8(Some(s.to_string()))))
}

/// The Parquet settings of a data file of `table` (columns as
/// `table.schema()`) with row groups of `group_rows`, `sorted` when its
/// rows come in [`sort_key`] order.
pub fn properties(group_rows: usize, table: Table, sorted: bool) -> DfResult<WriterProperties> {
    let group_rows = group_rows.max(1);
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(group_rows))
        .set_data_page_row_count_limit(page_rows(table))
        // min/max per page too: the page index that prunes within a row group
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(sorted.then(|| sorting_columns(table)).flatten());
    for c in plain_columns(table) {
        b = b.set_column_dictionary_enabled(ColumnPath::from(*c), false);
    }
    for c in bloom_columns(table) {
        let path = ColumnPath::from(*c);
        b = b
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path.clone(), BLOOM_FPP)
            // folded down to the values seen when the row group closes
            .set_column_bloom_filter_max_ndv(path, group_rows as u64);
    }
    Ok(b.build())
}

/// [`sort_key`] as the footer records it (leaf column indexes: every
/// column of a warehouse table is a flat leaf).
fn sorting_columns(table: Table) -> Option<Vec<SortingColumn>> {
    let schema = table.schema();
    let cols: Option<Vec<SortingColumn>> = sort_key(table)
        .iter()
        .map(|c| {
            let i = schema.index_of(c).ok()?;
            Some(SortingColumn {
                column_idx: i32::try_from(i).ok()?,
                descending: ORDER.descending,
                nulls_first: ORDER.nulls_first,
            })
        })
        .collect();
    cols.filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::new_null_array;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    use datafusion::parquet::file::serialized_reader::ReadOptionsBuilder;

    /// The most rows any page of a file of `table` with `rows` rows holds,
    /// read back from the file's offset index.
    fn largest_page(table: Table, rows: usize) -> usize {
        let schema = table.schema();
        let columns = schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), rows));
        let batch = RecordBatch::try_new(schema.clone(), columns.collect()).unwrap();
        let props = properties(1 << 20, table, false).unwrap();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let options = ReadOptionsBuilder::new().with_page_index().build();
        let reader =
            SerializedFileReader::new_with_options(bytes::Bytes::from(out), options).unwrap();
        let pages = &reader.metadata().offset_index().unwrap()[0];
        let mut largest = 0;
        for column in pages {
            let starts: Vec<i64> = column
                .page_locations
                .iter()
                .map(|p| p.first_row_index)
                .collect();
            let ends = starts.iter().skip(1).copied().chain([rows as i64]);
            largest = starts
                .iter()
                .zip(ends)
                .map(|(s, e)| (e - s) as usize)
                .fold(largest, usize::max);
        }
        largest
    }

    #[test]
    fn cors_failures_pages_are_smaller_than_the_events() {
        assert_eq!(largest_page(Table::DwdCorsError, 5000), 1024);
        assert_eq!(largest_page(Table::DwdTrkEvent, 20_000), 8192);
    }
}
