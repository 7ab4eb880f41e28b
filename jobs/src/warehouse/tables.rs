//! The warehouse's tables: names, locations and schemas (layers.md).
//!
//! Schemas are fixed here rather than inferred, so that an empty partition,
//! a re-run and a cluster run all write the same column types.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;

use crate::error::{Error, Result};
use crate::store::Location;

/// A warehouse table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// `ads/ads_trk_target_click_1d`: clicks and impressions per target.
    AdsTargetClick,
    /// `ads/ads_trk_page_1d`: views, visitors, clicks and dwell per page.
    AdsPage,
    /// `ads/ads_trk_funnel_1d`: users reaching each funnel step.
    AdsFunnel,
    /// `ads/ads_mon_cors_summary_1d`: one row of CORS failure totals.
    AdsCorsSummary,
    /// `ads/ads_mon_cors_topn_1d`: the 100 most frequent failure fingerprints.
    AdsCorsTopN,
    /// `ads/ads_mon_cors_anomaly_hh`: hourly spike detection per series.
    AdsCorsAnomaly,
    /// `ads/ads_bill_settlement_1d`: billable quantities and amounts per contract.
    AdsSettlement,
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

    /// Every table the reports job writes.
    pub const REPORTS: [Table; 7] = [
        Table::AdsTargetClick,
        Table::AdsPage,
        Table::AdsFunnel,
        Table::AdsCorsSummary,
        Table::AdsCorsTopN,
        Table::AdsCorsAnomaly,
        Table::AdsSettlement,
    ];

    /// Every table of the warehouse's partitioned layers.
    pub fn all() -> impl Iterator<Item = Table> {
        Table::LAYERING.into_iter().chain(Table::REPORTS)
    }

    /// The table with this name (`dwd_trk_event_di`) or path
    /// (`dwd/dwd_trk_event_di`).
    pub fn from_name(name: &str) -> Option<Table> {
        Table::all().find(|t| t.path() == name || t.name() == name)
    }

    /// `layer/table`.
    pub fn path(self) -> &'static str {
        match self {
            Table::OdsEvent => "ods/ods_fe_event_di",
            Table::OdsQuarantine => "ods/ods_fe_quarantine_di",
            Table::OdsLoadStats => "ods/ods_fe_load_stats_di",
            Table::DwdTrkEvent => "dwd/dwd_trk_event_di",
            Table::DwdCorsError => "dwd/dwd_mon_cors_error_di",
            Table::DwdDedupeStats => "dwd/dwd_fe_dedupe_stats_di",
            Table::AdsTargetClick => "ads/ads_trk_target_click_1d",
            Table::AdsPage => "ads/ads_trk_page_1d",
            Table::AdsFunnel => "ads/ads_trk_funnel_1d",
            Table::AdsCorsSummary => "ads/ads_mon_cors_summary_1d",
            Table::AdsCorsTopN => "ads/ads_mon_cors_topn_1d",
            Table::AdsCorsAnomaly => "ads/ads_mon_cors_anomaly_hh",
            Table::AdsSettlement => "ads/ads_bill_settlement_1d",
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
        let f = |n: &str| Field::new(n, Float64, true);
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
            Table::AdsTargetClick => vec![
                s("target_type"),
                s("target_id"),
                i("clicks"),
                i("impressions"),
                i("clickers"),
                f("avg_clicks_per_clicker"),
                f("ctr"),
            ],
            Table::AdsPage => vec![
                s("page_path"),
                i("pv"),
                i("uv"),
                i("clicks"),
                f("avg_duration_ms"),
            ],
            Table::AdsFunnel => vec![
                s("funnel_id"),
                i("step_no"),
                i("users"),
                f("conv_from_start"),
                f("conv_from_prev"),
            ],
            Table::AdsCorsSummary => vec![
                i("errors"),
                i("affected_users"),
                i("fingerprints"),
                i("page_views"),
                f("errors_per_1k_pv"),
            ],
            Table::AdsCorsTopN => vec![
                i("rank"),
                s("fingerprint"),
                s("err_class"),
                s("req_method"),
                s("req_host"),
                s("req_path_tpl"),
                s("req_origin"),
                i("errors"),
                i("affected_users"),
                ts("first_seen"),
                ts("last_seen"),
            ],
            Table::AdsCorsAnomaly => vec![
                s("series"),
                ts("hour_start"),
                local("hour_start_local"),
                i("errors"),
                i("baseline_n"),
                f("baseline_median"),
                f("mad"),
                f("robust_z"),
                Field::new("is_alert", Boolean, true),
            ],
            Table::AdsSettlement => vec![
                s("contract_id"),
                s("partner_id"),
                s("target_id"),
                s("pricing_model"),
                s("currency"),
                Field::new("unit_price", money(), true),
                i("gross_clicks"),
                i("bot_clicks"),
                i("dup_clicks"),
                i("valid_clicks"),
                i("gross_impressions"),
                i("bot_impressions"),
                i("valid_impressions"),
                i("billable_qty"),
                Field::new("amount", money(), true),
            ],
        };
        Arc::new(Schema::new(fields))
    }
}

fn ts_field(name: &str) -> Field {
    Field::new(name, ts_utc(), true)
}

/// The ODS event columns, in the contract's order (without `src_file`,
/// `line_no`).
pub fn ods_event_fields() -> Vec<Field> {
    use DataType::{Float64, Int64, Utf8};
    let s = |n: &str| Field::new(n, Utf8, true);
    vec![
        Field::new("event_id", Utf8, true),
        s("event_type"),
        ts_field("client_ts"),
        ts_field("sent_ts"),
        ts_field("collector_ts"),
        s("device_id"),
        s("device_id_type"),
        s("user_id"),
        s("app_version"),
        s("ua"),
        Field::new("geo_lat", Float64, true),
        Field::new("geo_lon", Float64, true),
        s("page_url"),
        s("from_url"),
        s("to_url"),
        s("target_type"),
        s("target_id"),
        ts_field("page_enter_ts"),
        ts_field("page_leave_ts"),
        s("cors_url"),
        s("cors_method"),
        s("cors_origin"),
        Field::new("cors_status", Int64, true),
        s("cors_error"),
        Field::new("cors_duration_ms", Int64, true),
        s("extra"),
    ]
}

/// Money: `Decimal128(18, 6)`.
pub fn money() -> DataType {
    DataType::Decimal128(18, 6)
}

/// The partition columns every warehouse table has, after its own.
pub fn partition_fields() -> Vec<Field> {
    vec![
        Field::new("dt", DataType::Date32, false),
        Field::new("region", DataType::Utf8, false),
    ]
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

/// The date of a `Date32` value (days since 1970-01-01).
pub fn date_of(days: i32) -> chrono::NaiveDate {
    epoch() + chrono::Duration::days(days as i64)
}

/// The `Date32` value of a date.
pub fn days_of(date: chrono::NaiveDate) -> i32 {
    (date - epoch()).num_days() as i32
}

/// A date as a `Date32` literal or parameter of a plan.
pub fn date_value(date: chrono::NaiveDate) -> ScalarValue {
    ScalarValue::Date32(Some(days_of(date)))
}

fn epoch() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")
}
