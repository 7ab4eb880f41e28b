//! `tauc-job report`: the daily report page's flags.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::Args;

use super::flags::EngineArgs;
use super::resolve::{connect, resolve};
use crate::cli::Globals;
use crate::cli::parse_date;
use crate::config::Section;
use crate::engine::client::submitted;
use crate::error::{Error, Result};
use crate::jobs::job::preflight;

/// `report` flags.
#[derive(Debug, Clone, Args)]
pub struct ReportCmd {
    /// The local (ADS) date, YYYY-MM-DD.
    #[arg(long, value_parser = parse_date)]
    pub date: NaiveDate,
    /// Region to show; repeat for several [default: every region with a
    /// committed report on that date].
    #[arg(long = "region", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// The HTML file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Scheduler, parallelism, memory, scratch space, stores.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `tauc-job report`: the page of a date's committed ADS tables, written
/// to `--out`.
pub async fn run(g: &Globals, rp: ReportCmd) -> Result<String> {
    let r = resolve(g, Section::Jobs, &rp.engine, &rp.engine.resources())?;
    submitted::install();
    preflight(&r.engine, &r.warehouse, "warehouse").await?;
    let scheduler = r.settings.scheduler.clone();
    let ctx = connect(&r.engine, scheduler.as_deref(), rp.engine.parallelism).await?;
    crate::warehouse::table::register_all(&ctx, &r.engine.registry, &r.warehouse).await?;
    let regions = if rp.regions.is_empty() {
        crate::show::regions_of(&ctx, rp.date).await?
    } else {
        rp.regions.clone()
    };
    if regions.is_empty() {
        return Err(Error::MissingInput(format!(
            "no committed report for {} in {}: run `tauc-job submit reports --date {}` first",
            rp.date, r.warehouse, rp.date
        )));
    }
    let html = crate::show::render(&ctx, rp.date, &regions).await?;
    std::fs::write(&rp.out, html).map_err(|e| crate::cli::sql::out_error(&rp.out, e))?;
    Ok(format!(
        "wrote the report of {} ({}) to {}\n",
        rp.date,
        regions.join(", "),
        rp.out.display()
    ))
}
