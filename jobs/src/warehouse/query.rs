//! Queries over the committed warehouse, read-only unless asked.
//!
//! `tauc-job sql` and the Flight SQL server of `tauc-job serve` plan every
//! statement here. Only queries pass: DDL (`CREATE EXTERNAL TABLE`, which
//! would read any file the process can), DML (`INSERT`, `DELETE`, and
//! `COPY … TO`, which would overwrite a committed data file behind its
//! manifest's back) and statements such as `SET` are refused before
//! anything runs, naming what was refused. The warehouse only changes
//! through the jobs, which commit manifests; `tauc-job sql --allow-writes`
//! lifts the rule for a local scratch query.

use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};

/// The rule for one query surface.
pub fn options(allow_writes: bool) -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(allow_writes)
        .with_allow_dml(allow_writes)
        .with_allow_statements(allow_writes)
}

/// Plans `sql`: a [`Error::Config`] (exit 2) when it does not parse or
/// plan, or when it would change anything and writes are not allowed.
pub async fn plan(ctx: &SessionContext, sql: &str, allow_writes: bool) -> Result<DataFrame> {
    let state = ctx.state();
    let plan = state.create_logical_plan(sql).await.map_err(|e| {
        Error::config(format!(
            "query rejected: {e}; `tauc-job tables` lists the tables"
        ))
    })?;
    options(allow_writes).verify_plan(&plan).map_err(|e| {
        Error::config(format!(
            "query refused: {}. Only queries run here: the warehouse changes only through the jobs (tauc-job submit), and files outside it are not read",
            e.strip_backtrace()
        ))
    })?;
    Ok(ctx.execute_logical_plan(plan).await?)
}
