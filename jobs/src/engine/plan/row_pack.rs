//! A whole row as one sortable binary value, and back: `tauc_pack_row(a,
//! b, …)` encodes its arguments in Arrow's row format (ascending, nulls
//! last), whose bytes compare as the arguments do in order;
//! `tauc_unpack_row(packed, 'Struct(…)')` decodes them into a struct of the
//! named type, which must list the packed arguments' names and types.
//!
//! Why: the DWD dedupe keeps, per event and DWD date, the copy with the
//! smallest `(collector_ts, src_file, line_no)`. As
//! `first_value(named_struct(…) ORDER BY …)` DataFusion keeps each group's
//! winner as a struct scalar of one-row arrays — about 11 KB a group for
//! the DWD's 30 columns, outside what the memory pool is told — so a day
//! with 500 000 copied events held gigabytes. `min(tauc_pack_row(order
//! keys…, columns…))` keeps one byte string a group in a bytes accumulator.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StructArray};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

const PACK: &str = "tauc_pack_row";
const UNPACK: &str = "tauc_unpack_row";

/// The encoding of each column: ascending with nulls last, as SQL's
/// default `ORDER BY`, so `min` of packed rows picks the row `ORDER BY`
/// would put first.
fn converter(types: impl Iterator<Item = DataType>) -> Result<RowConverter> {
    let order = SortOptions {
        descending: false,
        nulls_first: false,
    };
    let fields = types
        .map(|t| SortField::new_with_options(t, order))
        .collect();
    Ok(RowConverter::new(fields)?)
}

/// `tauc_pack_row(a, b, …)`: one binary value per row.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PackRow {
    signature: Signature,
}

impl ScalarUDFImpl for PackRow {
    fn name(&self) -> &str {
        PACK
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let columns = args
            .args
            .iter()
            .map(|a| a.to_array(n))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let rows =
            converter(columns.iter().map(|c| c.data_type().clone()))?.convert_columns(&columns)?;
        Ok(ColumnarValue::Array(Arc::new(rows.try_into_binary()?)))
    }
}

/// `tauc_unpack_row(packed, 'Struct("a": Int64, …)')`: the packed columns
/// as a struct of the named type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UnpackRow {
    signature: Signature,
}

/// The struct type named by the second argument, a string literal.
fn struct_type(arg: Option<&ScalarValue>) -> Result<Fields> {
    let text = match arg {
        Some(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s))) => s,
        _ => return plan_err!("{UNPACK}: the second argument must be a type string literal"),
    };
    match DataType::from_str(text) {
        Ok(DataType::Struct(fields)) => Ok(fields),
        Ok(other) => plan_err!("{UNPACK}: {other} is not a struct type"),
        Err(e) => plan_err!("{UNPACK}: cannot read the type {text:?}: {e}"),
    }
}

impl ScalarUDFImpl for UnpackRow {
    fn name(&self) -> &str {
        UNPACK
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!("{UNPACK}: the return type comes from the type argument")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let fields = struct_type(args.scalar_arguments.get(1).copied().flatten())?;
        Ok(Arc::new(Field::new(
            UNPACK,
            DataType::Struct(fields),
            false,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Struct(fields) = args.return_field.data_type().clone() else {
            return exec_err!("{UNPACK}: planned without a struct type");
        };
        let packed = args.args[0].to_array(args.number_rows)?;
        let Some(packed) = packed.as_binary_opt::<i32>() else {
            return exec_err!(
                "{UNPACK}: the packed row is {}, not Binary",
                packed.data_type()
            );
        };
        if packed.null_count() > 0 {
            return exec_err!("{UNPACK}: a packed row is NULL");
        }
        let conv = converter(fields.iter().map(|f| f.data_type().clone()))?;
        // Arrow's decoder panics on bytes it did not encode: only values of
        // `tauc_pack_row` over these types decode, anything else is an error.
        let decoded = catch_unwind(AssertUnwindSafe(|| {
            let parser = conv.parser();
            conv.convert_rows(packed.iter().flatten().map(|b| parser.parse(b)))
        }));
        let columns = match decoded {
            Ok(columns) => columns?,
            Err(_) => {
                return exec_err!("{UNPACK}: a value was not packed by {PACK} with these types");
            }
        };
        Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(
            fields, columns, None,
        )?)))
    }
}

/// Both functions, for [`super::udf::all`].
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(PackRow {
            signature: Signature::variadic_any(Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(UnpackRow {
            signature: Signature::any(2, Volatility::Immutable),
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::prelude::SessionContext;

    fn ctx() -> SessionContext {
        let ctx = SessionContext::new();
        for f in functions() {
            ctx.register_udf(f);
        }
        let ts = TimestampMillisecondArray::from(vec![Some(3), Some(1), Some(1), None])
            .with_timezone("UTC");
        let batch = RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(Int64Array::from(vec![1, 1, 1, 1])) as ArrayRef,
            ),
            ("ts", Arc::new(ts) as ArrayRef),
            (
                "file",
                Arc::new(StringArray::from(vec!["a", "b", "a", "a"])) as ArrayRef,
            ),
            (
                "v",
                Arc::new(StringArray::from(vec![
                    Some("x"),
                    None,
                    Some("z"),
                    Some("w"),
                ])) as ArrayRef,
            ),
        ])
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
        ctx
    }

    #[tokio::test]
    async fn the_smallest_packed_row_is_the_first_in_order_and_unpacks_whole() {
        let ctx = ctx();
        let ty = DataType::Struct(Fields::from(vec![
            Field::new(
                "ts",
                DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Millisecond,
                    Some("UTC".into()),
                ),
                true,
            ),
            Field::new("file", DataType::Utf8, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let sql = format!(
            "SELECT get_field(u, 'ts') AS ts, get_field(u, 'file') AS file, get_field(u, 'v') AS v \
             FROM (SELECT tauc_unpack_row(min(tauc_pack_row(ts, file, v)), '{ty}') AS u FROM t GROUP BY k)"
        );
        let rows = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let b = &rows[0];
        // ORDER BY ts, file (nulls last): (1, "a", "z") comes first
        assert_eq!(b.num_rows(), 1);
        let ts = b
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(ts.value(0), 1);
        assert_eq!(b.column(1).as_string::<i32>().value(0), "a");
        assert_eq!(b.column(2).as_string::<i32>().value(0), "z");
    }

    #[tokio::test]
    async fn bytes_it_did_not_pack_are_an_error_not_a_panic() {
        let ctx = ctx();
        let sql =
            "SELECT tauc_unpack_row(CAST('garbage' AS BYTEA), 'Struct(\"a\": Int64, \"b\": Utf8)')";
        let err = ctx.sql(sql).await.unwrap().collect().await.unwrap_err();
        assert!(
            err.to_string().contains("not packed by tauc_pack_row"),
            "{err}"
        );
        let err = ctx
            .sql("SELECT tauc_unpack_row(CAST('x' AS BYTEA), 'Int64')")
            .await;
        let msg = match err {
            Ok(df) => df.collect().await.unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains("not a struct type"), "{msg}");
    }
}
