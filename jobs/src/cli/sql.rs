//! The analysts' SQL surface: `tauc-job sql` runs a query over the
//! committed warehouse (tables registered by [`crate::warehouse::table`]) and
//! writes the result as a text table, CSV, JSON lines or Parquet;
//! `tauc-job tables` says what is committed.

use clap::{Args, ValueEnum};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;

use super::flags::EngineArgs;
use super::resolve::{connect, parallelism, resolve};
use crate::cli::Globals;
use crate::config::Section;
use crate::engine::client::submitted;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::jobs::job::preflight;
use crate::store::Location;
use crate::warehouse::table::{DIM_TABLES, committed_partitions};
use crate::warehouse::tables::Table;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

/// `sql` flags.
#[derive(Debug, Clone, Args)]
pub struct SqlCmd {
    /// The query, e.g. "SELECT city, count(*) FROM dwd_trk_event_di WHERE dt = DATE '2024-06-18' GROUP BY city";
    /// `-` reads it from standard input (a long query in a file: `< q.sql`).
    pub query: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write the result to this file instead of standard output (needed for parquet).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also run DDL, DML, COPY and SET (refused by default: the warehouse
    /// changes only through the jobs). For scratch work on a local copy.
    #[arg(long)]
    pub allow_writes: bool,
    /// Scheduler, parallelism, memory, scratch space, stores.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `tauc-job sql`: the query over every committed table, its result
/// written as `--format` says.
pub async fn command(g: &Globals, q: SqlCmd) -> Result<String> {
    let r = resolve(g, Section::Jobs, &q.engine, &q.engine.resources())?;
    // Ctrl-C / SIGTERM cancel the query's Ballista job
    submitted::install();
    preflight(&r.engine, &r.warehouse, "warehouse").await?;
    if q.format == OutputFormat::Parquet && q.out.is_none() {
        return Err(Error::config(
            "--format parquet needs --out FILE (Parquet is not written to a terminal)",
        ));
    }
    let query = if q.query == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Error::config(format!("cannot read the query from stdin: {e}")))?
    } else {
        q.query.clone()
    };
    if query.trim().is_empty() {
        return Err(Error::config(
            "empty query (give SQL, or - to read it from stdin)",
        ));
    }
    let ctx = match r.settings.scheduler.as_deref() {
        Some(url) => connect(&r.engine, Some(url), q.engine.parallelism).await?,
        // in-process, a query runs on plain DataFusion, as `serve` runs
        // them: no Ballista job's start-up, no shuffle files, and an
        // `EXPLAIN ANALYZE` that shows the scans' pruning counters
        None => r.engine.local_context(parallelism(q.engine.parallelism))?,
    };
    crate::warehouse::table::register_all(&ctx, &r.engine.registry, &r.warehouse).await?;
    run(&ctx, &query, q.format, q.out.as_deref(), q.allow_writes).await
}

/// Output formats of `sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Json,
    /// A Parquet file (needs --out).
    Parquet,
}

/// The Ballista job name of a query (what `tauc-job status` lists; the
/// query's text is not in it: it may hold values that are secrets).
pub const JOB_NAME: &str = "tauc sql";

/// Runs `query` through [`submitted`] (on a cluster as the job
/// [`JOB_NAME`], named, shown and cancelled on Ctrl-C like every job of
/// `tauc-job`; in-process stopped on Ctrl-C); returns what
/// to print (the result, or a line saying where it was written). CSV, JSON and Parquet stream batch by batch to
/// `out` (or standard output), so a large result is never held whole; the
/// aligned table needs every row for its widths and is for small results.
pub async fn run(
    ctx: &SessionContext,
    query: &str,
    format: OutputFormat,
    out: Option<&Path>,
    allow_writes: bool,
) -> Result<String> {
    let df = crate::warehouse::query::plan(ctx, query, allow_writes).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    if format == OutputFormat::Table {
        let batches = submitted::collect(df, JOB_NAME).await?;
        let text = table_text(&schema, &batches)?;
        return match out {
            Some(path) => {
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                std::fs::write(path, text).map_err(|e| out_error(path, e))?;
                Ok(format!("wrote {rows} rows to {}\n", path.display()))
            }
            None => Ok(text),
        };
    }
    let sink: Box<dyn std::io::Write + Send> =
        match out {
            // before the query runs: a path that cannot be created is a usage error
            Some(path) => Box::new(std::fs::File::create(path).map_err(|e| {
                Error::config(format!("cannot create --out {}: {e}", path.display()))
            })?),
            None => Box::new(std::io::stdout()),
        };
    let mut writer = StreamWriter::new(format, &schema, std::io::BufWriter::new(sink))?;
    let mut rows = 0;
    submitted::for_each_batch(df, JOB_NAME, |batch| {
        rows += batch.num_rows();
        writer.write(&batch)
    })
    .await?;
    writer.finish()?;
    Ok(match out {
        Some(path) => format!("wrote {rows} rows to {}\n", path.display()),
        None => String::new(),
    })
}

/// Writing the result failed after the query ran: the run failed (1),
/// it is not a usage error.
pub(crate) fn out_error(path: &Path, e: std::io::Error) -> Error {
    Error::Output(format!("cannot write --out {}: {e}", path.display()))
}

fn table_text(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<String> {
    Ok(if batches.iter().all(|b| b.num_rows() == 0) {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        format!("(0 rows; columns: {})\n", names.join(", "))
    } else {
        format!(
            "{}\n",
            datafusion::arrow::util::pretty::pretty_format_batches(batches)?
        )
    })
}

type Sink = std::io::BufWriter<Box<dyn std::io::Write + Send>>;

/// A batch-at-a-time writer of one of the streaming formats.
enum StreamWriter {
    Csv(datafusion::arrow::csv::Writer<Sink>),
    Json(datafusion::arrow::json::LineDelimitedWriter<Sink>),
    Parquet(ArrowWriter<Sink>),
}

impl StreamWriter {
    fn new(
        format: OutputFormat,
        schema: &datafusion::arrow::datatypes::SchemaRef,
        sink: Sink,
    ) -> Result<StreamWriter> {
        Ok(match format {
            OutputFormat::Csv => StreamWriter::Csv(
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(sink),
            ),
            OutputFormat::Json => {
                StreamWriter::Json(datafusion::arrow::json::LineDelimitedWriter::new(sink))
            }
            OutputFormat::Parquet | OutputFormat::Table => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
                    .build();
                StreamWriter::Parquet(ArrowWriter::try_new(sink, schema.clone(), Some(props))?)
            }
        })
    }

    fn write(&mut self, b: &RecordBatch) -> Result<()> {
        match self {
            StreamWriter::Csv(w) => w.write(b)?,
            StreamWriter::Json(w) => w.write(b)?,
            StreamWriter::Parquet(w) => w.write(b)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        use std::io::Write as _;
        let mut sink = match self {
            StreamWriter::Csv(w) => w.into_inner(),
            StreamWriter::Json(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            StreamWriter::Parquet(w) => w.into_inner()?,
        };
        sink.flush()?;
        Ok(())
    }
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
        let parts = committed_partitions(
            &store,
            &t.location(warehouse),
            |d| Ok(vec![true; d.len()]),
            |p| Ok(vec![true; p.len()]),
        )
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
