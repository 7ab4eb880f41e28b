//! The warehouse's tables: names, locations and schemas (layers.md).
//!
//! Schemas are fixed here rather than inferred, so that an empty partition,
//! a re-run and a cluster run all write the same column types.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};
use crate::raw_scan::ods_event_fields;
use crate::store::Location;

/// A warehouse table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// `ods/ods_fe_event_di`: one row per valid line.
    OdsEvent,
    /// `ods/ods_fe_quarantine_di`: one row per rejected line.
    OdsQuarantine,
    /// `ods/ods_fe_load_stats_di`: one row per loaded partition.
    OdsLoadStats,
    /// `dwd/dwd_trk_event_di`: deduplicated tracking events by local date.
    DwdTrkEvent,
    /// `dwd/dwd_mon_cors_error_di`: deduplicated CORS failures by local date.
    DwdCorsError,
    /// `dwd/dwd_fe_dedupe_stats_di`: one row per DWD partition.
    DwdDedupeStats,
}

impl Table {
    /// Every table the layering job writes.
    pub const LAYERING: [Table; 6] = [
        Table::OdsEvent,
        Table::OdsQuarantine,
        Table::OdsLoadStats,
        Table::DwdTrkEvent,
        Table::DwdCorsError,
        Table::DwdDedupeStats,
    ];

    /// `layer/table`.
    pub fn path(self) -> &'static str {
        match self {
            Table::OdsEvent => "ods/ods_fe_event_di",
            Table::OdsQuarantine => "ods/ods_fe_quarantine_di",
            Table::OdsLoadStats => "ods/ods_fe_load_stats_di",
            Table::DwdTrkEvent => "dwd/dwd_trk_event_di",
            Table::DwdCorsError => "dwd/dwd_mon_cors_error_di",
            Table::DwdDedupeStats => "dwd/dwd_fe_dedupe_stats_di",
        }
    }

    /// The table's name without its layer.
    pub fn name(self) -> &'static str {
        self.path().split('/').nth(1).unwrap_or_default()
    }

    /// Where the table lives in a warehouse.
    pub fn location(self, warehouse: &Location) -> Location {
        warehouse.join(self.path())
    }

    /// The columns of the table's data files (partition columns `dt` and
    /// `region` live in the path).
    pub fn schema(self) -> SchemaRef {
        use DataType::{Boolean, Float64, Int32, Int64, Utf8};
        let s = |n: &str| Field::new(n, Utf8, true);
        let i = |n: &str| Field::new(n, Int64, true);
        let ts = |n: &str| Field::new(n, ts_utc(), true);
        let local = |n: &str| Field::new(n, DataType::Timestamp(TimeUnit::Millisecond, None), true);
        let fields = match self {
            Table::OdsEvent => {
                let mut f = ods_event_fields();
                f.push(s("src_file"));
                f.push(i("line_no"));
                f
            }
            Table::OdsQuarantine => vec![
                s("src_file"),
                i("line_no"),
                s("reason"),
                s("raw_line"),
                s("event_id"),
                s("run_id"),
                ts("detected_at"),
            ],
            Table::OdsLoadStats => vec![
                i("files"),
                i("files_ignored"),
                i("bytes"),
                i("lines"),
                i("blank_lines"),
                i("valid_rows"),
                i("quarantined_rows"),
                s("run_id"),
                ts("started_at"),
                ts("finished_at"),
            ],
            Table::DwdTrkEvent => vec![
                s("event_id"),
                s("event_type"),
                ts("event_ts"),
                local("local_ts"),
                Field::new("local_hour", Int32, true),
                i("lateness_ms"),
                Field::new("ts_clamped", Boolean, true),
                s("user_key"),
                s("user_id"),
                s("device_id"),
                s("device_id_type"),
                s("target_type"),
                s("target_id"),
                s("page_url"),
                s("page_path"),
                s("from_path"),
                s("to_path"),
                ts("page_enter_ts"),
                ts("page_leave_ts"),
                i("duration_ms"),
                Field::new("geo_lat", Float64, true),
                Field::new("geo_lon", Float64, true),
                s("city"),
                s("country"),
                s("gender"),
                s("age_band"),
                s("browser_family"),
                s("browser_major"),
                s("os_family"),
                Field::new("is_bot", Boolean, true),
                s("app_version"),
                s("extra"),
            ],
            Table::DwdCorsError => vec![
                s("event_id"),
                ts("event_ts"),
                local("local_ts"),
                s("user_key"),
                s("page_path"),
                s("req_host"),
                s("req_path_tpl"),
                s("req_method"),
                s("req_origin"),
                i("status"),
                s("err_class"),
                s("error"),
                i("duration_ms"),
                s("browser_family"),
                s("browser_major"),
                s("os_family"),
                Field::new("is_bot", Boolean, true),
                s("fingerprint"),
            ],
            Table::DwdDedupeStats => vec![
                i("rows_read"),
                i("duplicates"),
                i("rows_written"),
                s("run_id"),
            ],
        };
        Arc::new(Schema::new(fields))
    }
}

/// `Timestamp(ms, "UTC")`.
pub fn ts_utc() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// Builds a batch of `schema` from the columns of `batch` with the same
/// names (or the source name `renames` gives), cast to the schema's types.
/// A column `batch` lacks is an error, except that a rename to `""` gives
/// an all-null column.
pub fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
    renames: &[(&str, &str)],
) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let src = renames
                .iter()
                .find(|(to, _)| *to == f.name())
                .map_or(f.name().as_str(), |(_, from)| *from);
            let col: ArrayRef = match batch.schema().index_of(src) {
                Ok(i) => batch.column(i).clone(),
                Err(_) if src.is_empty() => new_null_array(f.data_type(), batch.num_rows()),
                Err(_) => {
                    return Err(Error::Invariant(format!(
                        "internal: column '{src}' missing for {}",
                        f.name()
                    )));
                }
            };
            if col.data_type() == f.data_type() {
                Ok(col)
            } else {
                Ok(cast(&col, f.data_type())?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
