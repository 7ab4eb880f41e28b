//! The pieces every report query is built from: the date range, the
//! zone `CASE`, the event filters, and [`Queries`], which runs a DataFrame
//! as a named Ballista job and reads its rows by column name.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Date32Type, Float64Type, Int64Type};
use datafusion::execution::FunctionRegistry;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, ExprFunctionExt, case, cast as cast_expr};
use datafusion::prelude::{DataFrame, SessionContext, col, lit};

use crate::error::{Error, Result};
use crate::warehouse::commit::PartitionRef;
use crate::warehouse::tables::Table;
use crate::warehouse::tables::date_value;

/// Local dates `first ..= last` of `regions`: the rows every report query
/// reads (and the partitions the DWD scans prune to).
pub(super) fn range(first: NaiveDate, last: NaiveDate, regions: &[String]) -> Expr {
    let regions = regions.iter().map(|r| lit(r.as_str())).collect();
    col("dt")
        .between(lit(date_value(first)), lit(date_value(last)))
        .and(col("region").in_list(regions, false))
}

/// `CASE region WHEN 'aps1' THEN 'Asia/Kolkata' … END`: each row's time
/// zone name, for `tauc_hour_start`.
pub(super) fn zone_of_region(zones: &BTreeMap<String, chrono_tz::Tz>) -> Result<Expr> {
    let mut zone = case(col("region"));
    for (region, tz) in zones {
        zone = zone.when(lit(region.as_str()), lit(tz.name()));
    }
    Ok(zone.end()?)
}

/// Rows the figures count: bot events are left out of every figure but
/// the settlement's gross counts.
pub(super) fn not_bot() -> Expr {
    col("is_bot").is_not_true()
}

/// `event_type = '{t}'`.
pub(super) fn is(event_type: &str) -> Expr {
    col("event_type").eq(lit(event_type))
}

/// `event_type IN (…)`.
pub(super) fn is_any(event_types: &[&str]) -> Expr {
    col("event_type").in_list(event_types.iter().map(|t| lit(*t)).collect(), false)
}

/// `count(*) FILTER (WHERE cond)`.
pub(super) fn count_if(cond: Expr) -> Result<Expr> {
    Ok(count(lit(1i64)).filter(cond).build()?)
}

/// `CAST(event_ts AS BIGINT)`: epoch milliseconds.
pub(super) fn event_ms() -> Expr {
    cast_expr(col("event_ts"), DataType::Int64)
}

/// Runs the report queries over one date range. Each query is a
/// DataFrame built from expressions: the dates, regions, zones, funnel
/// steps and contract targets are values in the plan, never SQL text.
pub(super) struct Queries<'a> {
    pub(super) ctx: &'a SessionContext,
    pub(super) range: Expr,
}

impl Queries<'_> {
    /// The rows of DWD table `table` in the range.
    pub(super) async fn rows_of(&self, table: Table) -> Result<DataFrame> {
        Ok(self
            .ctx
            .table(table.name())
            .await?
            .filter(self.range.clone())?)
    }

    /// A tauc function of the session (registered on every context).
    pub(super) fn udf(&self, name: &str, args: Vec<Expr>) -> Result<Expr> {
        Ok(self.ctx.udf(name)?.call(args))
    }

    /// Runs `df` as the Ballista job `tauc reports: {what}` and returns
    /// its rows as one batch, `None` when there are none.
    pub(super) async fn run(&self, what: &str, df: DataFrame) -> Result<Option<Rows>> {
        let schema = Arc::new(df.schema().as_arrow().clone());
        let name = format!("tauc reports: {what}");
        let batches = crate::engine::client::submitted::collect(df, &name).await?;
        let batch = concat_batches(&schema, &batches)?;
        Ok((batch.num_rows() > 0).then_some(Rows(batch)))
    }
}

/// A query result read by column name.
pub(super) struct Rows(RecordBatch);

impl Rows {
    pub(super) fn cast(&self, name: &str, to: &DataType) -> Result<ArrayRef> {
        let col = self
            .0
            .column_by_name(name)
            .ok_or_else(|| Error::Invariant(format!("internal: no column '{name}'")))?;
        Ok(cast(col, to)?)
    }

    pub(super) fn strs(&self, name: &str) -> Result<Vec<Option<String>>> {
        let a = self.cast(name, &DataType::Utf8)?;
        Ok(a.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    }

    pub(super) fn i64s(&self, name: &str) -> Result<Vec<i64>> {
        let a = self.cast(name, &DataType::Int64)?;
        Ok(a.as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.unwrap_or(0))
            .collect())
    }

    pub(super) fn f64s(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let a = self.cast(name, &DataType::Float64)?;
        Ok(a.as_primitive::<Float64Type>().iter().collect())
    }

    /// The `(dt, region)` of every row.
    pub(super) fn partitions(&self) -> Result<Vec<PartitionRef>> {
        let dts = self.cast("dt", &DataType::Date32)?;
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
        let regions = self.strs("region")?;
        Ok(dts
            .as_primitive::<Date32Type>()
            .iter()
            .zip(regions)
            .map(|(d, r)| PartitionRef {
                dt: epoch + chrono::Duration::days(d.unwrap_or(0) as i64),
                region: r.unwrap_or_default(),
            })
            .collect())
    }
}
