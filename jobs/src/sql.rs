//! The analysts' SQL surface: `tauc-job sql` runs a query over the
//! committed warehouse (tables registered by [`crate::warehouse`]) and
//! writes the result as a text table, CSV, JSON lines or Parquet;
//! `tauc-job tables` says what is committed.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use crate::cli::OutputFormat;
use crate::commit;
use crate::error::{Error, Result};
use crate::session::Engine;
use crate::store::Location;
use crate::tables::Table;
use crate::warehouse::{DIM_TABLES, committed_partitions};

/// Runs `query`; returns what to print (the result, or a line saying
/// where it was written).
pub async fn run(
    ctx: &SessionContext,
    query: &str,
    format: OutputFormat,
    out: Option<&Path>,
) -> Result<String> {
    let df = ctx.sql(query).await.map_err(|e| {
        Error::config(format!(
            "query rejected: {e}; `tauc-job tables` lists the tables"
        ))
    })?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let bytes = encode(&schema, &batches, format)?;
    match out {
        Some(path) => {
            std::fs::write(path, &bytes).map_err(|e| {
                Error::config(format!("cannot write --out {}: {e}", path.display()))
            })?;
            Ok(format!("wrote {rows} rows to {}\n", path.display()))
        }
        None => Ok(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

fn encode(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    match format {
        OutputFormat::Table => {
            let text = if batches.iter().all(|b| b.num_rows() == 0) {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                format!("(0 rows; columns: {})", names.join(", "))
            } else {
                datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string()
            };
            buf.extend_from_slice(text.as_bytes());
            buf.push(b'\n');
        }
        OutputFormat::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            for b in batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut buf);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        OutputFormat::Parquet => buf = commit::parquet_bytes(schema, batches)?.to_vec(),
    }
    Ok(buf)
}

/// One line per table: committed partitions, rows and date span; DIM
/// tables with their files.
pub async fn tables(engine: &Engine, warehouse: &Location) -> Result<String> {
    let store = engine.registry.for_location(warehouse)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>10} {:>12}  {:<23}  regions",
        "table", "partitions", "rows", "dates"
    );
    for t in Table::all() {
        let parts =
            committed_partitions(&store, &t.location(warehouse), |p| Ok(vec![true; p.len()]))
                .await?;
        let rows: u64 = parts.iter().map(|c| c.manifest.rows).sum();
        let dates = match (parts.first(), parts.last()) {
            (Some(a), Some(b)) => format!("{}..{}", a.partition.dt, b.partition.dt),
            _ => "-".into(),
        };
        let mut regions: Vec<&str> = parts.iter().map(|c| c.partition.region.as_str()).collect();
        regions.sort();
        regions.dedup();
        let _ = writeln!(
            out,
            "{:<28} {:>10} {:>12}  {:<23}  {}",
            t.name(),
            parts.len(),
            rows,
            dates,
            if regions.is_empty() {
                "-".into()
            } else {
                regions.join(",")
            }
        );
    }
    for d in DIM_TABLES {
        let dir = warehouse.join(&format!("dim/{d}"));
        let files: Vec<_> = store.list(Some(&dir.path())).try_collect().await?;
        let n = files
            .iter()
            .filter(|f| {
                let k = f.location.as_ref();
                k.ends_with(".csv") || k.ends_with(".parquet")
            })
            .count();
        let _ = writeln!(
            out,
            "{d:<28} {:>10} {:>12}  {:<23}  {}",
            "-",
            "-",
            "-",
            if n == 0 {
                "(not supplied)".to_string()
            } else {
                format!("{n} file(s) under {dir}")
            }
        );
    }
    Ok(out)
}
