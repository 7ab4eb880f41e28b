//! The order a Parquet scan tests its pushed-down filters in, for the SQL
//! surface's lookups.
//!
//! The decoder evaluates a scan's filters one after the other, each on the
//! rows the ones before it kept. DataFusion orders them by the bytes of
//! the columns they read, smallest first, which puts the least selective
//! tests first on the warehouse's tables: `event_type = 'click'` (a small
//! column of four values) keeps a tenth of the rows, scattered one here,
//! one there, and every test after it then reads its column through a
//! selection of ~100 000 runs per day — the one-target lookup over 30 days
//! spent most of its time building and walking those selections. Tested
//! first, `target_id = '…'` keeps a few hundred rows a day and the other
//! tests read only those.
//!
//! Nothing at plan time knows how many rows a test keeps, so the rank
//! comes from what the layout knows: the columns with Bloom filters
//! ([`layout::bloom_columns`]) are the ids users look up by `=` — about a
//! value per row or per user, so an equality there keeps very few rows.
//! Then the other equalities (in the order the query wrote them), then
//! ranges and every other test, then tests of a boolean column (they keep
//! about half), and last the filters a join or a `LIMIT` fills in while
//! the query runs. The rule applies to the plain DataFusion contexts of
//! `serve` and `sql` ([`crate::engine::Engine::local_context`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::datasource::physical_plan::{FileScanConfigBuilder, FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, DynamicFilterPhysicalExpr, InListExpr, Literal, NotExpr,
};
use datafusion::physical_expr::{PhysicalExpr, conjunction, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

use super::layout::bloom_columns;
use super::tables::Table;

/// Puts each Parquet scan's most selective filters first (module docs).
#[derive(Debug, Default)]
pub struct SelectiveFiltersFirst;

impl PhysicalOptimizerRule for SelectiveFiltersFirst {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let ids = id_columns();
        plan.transform_up(|node| reorder_scan(node, &ids)).data()
    }

    fn name(&self) -> &str {
        "selective_filters_first"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` with its Parquet predicate's conjuncts ranked, when it is a
/// Parquet scan with a predicate.
fn reorder_scan(
    node: Arc<dyn ExecutionPlan>,
    ids: &BTreeSet<&str>,
) -> DfResult<Transformed<Arc<dyn ExecutionPlan>>> {
    let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
        return Ok(Transformed::no(node));
    };
    let Some((config, source)) = exec.downcast_to_file_source::<ParquetSource>() else {
        return Ok(Transformed::no(node));
    };
    let Some(predicate) = source.filter() else {
        return Ok(Transformed::no(node));
    };
    let source = source
        .with_predicate(ranked(&predicate, ids))
        .with_reorder_filters(false);
    let config = FileScanConfigBuilder::from(config.clone())
        .with_source(Arc::new(source))
        .build();
    let exec = exec.clone().with_data_source(Arc::new(config));
    Ok(Transformed::yes(Arc::new(exec)))
}

/// `predicate`'s conjuncts, most selective first; ties keep their order.
fn ranked(predicate: &Arc<dyn PhysicalExpr>, ids: &BTreeSet<&str>) -> Arc<dyn PhysicalExpr> {
    let mut parts: Vec<Arc<dyn PhysicalExpr>> =
        split_conjunction(predicate).into_iter().cloned().collect();
    parts.sort_by_key(|p| rank(p.as_ref(), ids));
    conjunction(parts)
}

/// Every warehouse column with a Bloom filter, by name.
fn id_columns() -> BTreeSet<&'static str> {
    Table::all()
        .flat_map(|t| bloom_columns(t).iter().copied())
        .collect()
}

/// 0: `=`/`IN` on an id column; 1: other `=`/`IN`; 2: anything else;
/// 3: a boolean column's test; 4: a filter filled in at run time.
fn rank(expr: &dyn PhysicalExpr, ids: &BTreeSet<&str>) -> u8 {
    if expr.is::<DynamicFilterPhysicalExpr>() {
        return 4;
    }
    if let Some(not) = expr.downcast_ref::<NotExpr>() {
        return if column_of(not.arg().as_ref()).is_some() {
            3
        } else {
            2
        };
    }
    if column_of(expr).is_some() {
        // a bare boolean column
        return 3;
    }
    match equality_column(expr) {
        Some((_, true)) => 3,
        Some((name, false)) if ids.contains(name) => 0,
        Some(_) => 1,
        None => 2,
    }
}

/// The column `expr` tests with `=` or `IN` against constants, and
/// whether the constants are booleans.
fn equality_column(expr: &dyn PhysicalExpr) -> Option<(&str, bool)> {
    if let Some(b) = expr.downcast_ref::<BinaryExpr>() {
        if *b.op() != Operator::Eq {
            return None;
        }
        let (l, r) = (b.left().as_ref(), b.right().as_ref());
        let (column, value) = match (column_of(l), column_of(r)) {
            (Some(c), None) => (c, r),
            (None, Some(c)) => (c, l),
            _ => return None,
        };
        let literal = value.downcast_ref::<Literal>()?;
        return Some((column, literal.value().data_type() == DataType::Boolean));
    }
    let list = expr.downcast_ref::<InListExpr>()?;
    let column = column_of(list.expr().as_ref())?;
    let constants = list.list().iter().all(|v| v.is::<Literal>());
    (constants && !list.negated()).then_some((column, false))
}

/// The column `expr` is, looking through casts (the SQL surface reads text
/// as views and casts it back above the scan).
fn column_of(expr: &dyn PhysicalExpr) -> Option<&str> {
    if let Some(c) = expr.downcast_ref::<Column>() {
        return Some(c.name());
    }
    column_of(expr.downcast_ref::<CastExpr>()?.expr().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::common::ScalarValue;
    use datafusion::physical_expr::expressions::{col, in_list, lit, not};
    use datafusion::physical_plan::expressions::binary;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("event_type", DataType::Utf8, true),
            Field::new("target_id", DataType::Utf8, true),
            Field::new("event_ts", DataType::Int64, true),
            Field::new("is_bot", DataType::Boolean, true),
            Field::new("city", DataType::Utf8, true),
        ])
    }

    fn eq(c: &str, v: ScalarValue) -> Arc<dyn PhysicalExpr> {
        let s = schema();
        let column = Arc::new(CastExpr::new(col(c, &s).unwrap(), DataType::Utf8, None));
        binary(column, Operator::Eq, lit(v), &s).unwrap()
    }

    fn names(e: &Arc<dyn PhysicalExpr>) -> Vec<String> {
        split_conjunction(e).iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn ids_first_then_equalities_then_ranges_then_booleans() {
        let s = schema();
        let range = binary(col("event_ts", &s).unwrap(), Operator::GtEq, lit(5i64), &s).unwrap();
        let bot = not(col("is_bot", &s).unwrap()).unwrap();
        let cities = in_list(
            col("city", &s).unwrap(),
            vec![lit("Pune"), lit("Agra")],
            &false,
            &s,
        )
        .unwrap();
        let written = conjunction(vec![
            bot.clone(),
            range.clone(),
            eq("event_type", ScalarValue::from("click")),
            cities.clone(),
            eq("target_id", ScalarValue::from("banner-85")),
        ]);
        let want = conjunction(vec![
            eq("target_id", ScalarValue::from("banner-85")),
            eq("event_type", ScalarValue::from("click")),
            cities,
            range,
            bot,
        ]);
        assert_eq!(names(&ranked(&written, &id_columns())), names(&want));
    }

    #[test]
    fn a_boolean_equality_ranks_with_the_boolean_tests() {
        let s = schema();
        let range = binary(col("event_ts", &s).unwrap(), Operator::Lt, lit(9i64), &s).unwrap();
        let written = conjunction(vec![
            binary(col("is_bot", &s).unwrap(), Operator::Eq, lit(false), &s).unwrap(),
            range.clone(),
        ]);
        let ranked = names(&ranked(&written, &id_columns()));
        assert_eq!(ranked[0], range.to_string());
    }
}
