//! String functions whose result size the caller chooses, bounded.
//!
//! `repeat('x', 1000000000)` builds a 1 GB string in one call, and a scalar
//! function's output is not reserved in the memory pool: a query could
//! take the server far past `--memory-limit`. The served session replaces
//! `repeat`, `lpad` and `rpad` with wrappers that work out the bytes a call
//! would make from its arguments (lengths and counts, before anything is
//! built) and refuse the call when one batch's results would pass the
//! query's memory share. Everything else is the stock function.

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// How a function's result size follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s) * n` bytes.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: `n` characters (bytes for an ASCII
    /// fill; a multi-byte fill can make up to four times that).
    Pad,
}

/// A stock function behind a size check.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Bounded {
    inner: ScalarUDF,
    growth: Growth,
    /// Most bytes one call (one batch) may make.
    cap: usize,
}

/// Replaces `repeat`, `lpad` and `rpad` on `ctx` with wrappers that refuse
/// a call making more than `cap` bytes.
pub fn register(ctx: &SessionContext, cap: usize) {
    let state = ctx.state();
    for (name, growth) in [
        ("repeat", Growth::Repeat),
        ("lpad", Growth::Pad),
        ("rpad", Growth::Pad),
    ] {
        if let Some(inner) = state.scalar_functions().get(name) {
            let udf = ScalarUDF::new_from_impl(Bounded {
                inner: inner.as_ref().clone(),
                growth,
                cap,
            });
            ctx.register_udf(udf);
        }
    }
}

impl Bounded {
    /// Bytes the call would make, from its arguments alone.
    fn output_bytes(&self, args: &ScalarFunctionArgs) -> Result<u64> {
        let rows = args.number_rows;
        let counts = match args.args.get(1) {
            Some(c) => per_row(c, rows, as_counts)?,
            None => return Ok(0),
        };
        match self.growth {
            Growth::Pad => Ok(counts.total(rows)),
            Growth::Repeat => {
                let lengths = match args.args.first() {
                    Some(s) => per_row(s, rows, as_lengths)?,
                    None => return Ok(0),
                };
                Ok(lengths.product_total(&counts, rows))
            }
        }
    }
}

/// One number per row: a constant, or a column of them (nulls as 0).
enum PerRow {
    Constant(u64),
    Column(Vec<u64>),
}

impl PerRow {
    fn at(&self, i: usize) -> u64 {
        match self {
            PerRow::Constant(v) => *v,
            PerRow::Column(v) => v.get(i).copied().unwrap_or(0),
        }
    }

    fn total(&self, rows: usize) -> u64 {
        match self {
            // a constant call folds to one value
            PerRow::Constant(v) => *v,
            PerRow::Column(_) => (0..rows).fold(0u64, |t, i| t.saturating_add(self.at(i))),
        }
    }

    fn product_total(&self, other: &PerRow, rows: usize) -> u64 {
        match (self, other) {
            (PerRow::Constant(a), PerRow::Constant(b)) => a.saturating_mul(*b),
            _ => (0..rows).fold(0u64, |t, i| {
                t.saturating_add(self.at(i).saturating_mul(other.at(i)))
            }),
        }
    }
}

fn per_row(v: &ColumnarValue, rows: usize, f: fn(&ArrayRef) -> Result<Vec<u64>>) -> Result<PerRow> {
    match v {
        // a scalar as a one-row array: expanding it to `rows` would copy
        // the string `rows` times
        ColumnarValue::Scalar(s) => {
            let a = s.to_array_of_size(1)?;
            Ok(PerRow::Constant(f(&a)?.first().copied().unwrap_or(0)))
        }
        ColumnarValue::Array(a) => {
            let mut v = f(a)?;
            v.resize(rows.max(v.len()), 0);
            Ok(PerRow::Column(v))
        }
    }
}

/// Byte lengths of a string column.
fn as_lengths(a: &ArrayRef) -> Result<Vec<u64>> {
    let a = cast(a, &DataType::LargeUtf8)?;
    as_counts(&length(&a)?)
}

/// A column of counts as non-negative integers.
fn as_counts(a: &ArrayRef) -> Result<Vec<u64>> {
    let a = cast(a, &DataType::Int64)?;
    let ints = a
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|i| i.iter().map(|v| v.unwrap_or(0).max(0) as u64).collect())
        .unwrap_or_default();
    Ok(ints)
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.output_bytes(&args)?;
        if bytes > self.cap as u64 {
            return exec_err!(
                "{}() would build {} MiB of strings, more than a query's memory share of {} MiB (--memory-limit / --max-queries); ask for shorter strings",
                self.name(),
                bytes >> 20,
                self.cap >> 20
            );
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn query(
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        ctx.sql(sql).await?.collect().await
    }

    #[tokio::test]
    async fn big_strings_are_refused_naming_the_share() {
        let ctx = SessionContext::new();
        register(&ctx, 1 << 20);
        let e = query(&ctx, "SELECT length(repeat('x', 1000000000))")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("repeat() would build") && e.contains("--max-queries"),
            "{e}"
        );
        let e = query(&ctx, "SELECT lpad('x', 2000000)")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("lpad() would build"), "{e}");
        // per batch: six rows of ~200 KiB pass one by one, not together
        let e = query(
            &ctx,
            "SELECT length(repeat('ab', 100000 + v)) FROM (VALUES (1),(2),(3),(4),(5),(6)) t(v)",
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("repeat() would build"), "{e}");
        // small ones are the stock functions
        let b = query(&ctx, "SELECT repeat('ab', 3) AS r, rpad('x', 3, '-') AS p")
            .await
            .unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&b)
            .unwrap()
            .to_string();
        assert!(text.contains("ababab") && text.contains("x--"), "{text}");
    }
}
