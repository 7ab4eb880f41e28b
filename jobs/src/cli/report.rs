//! `tauc-job report`: the daily report page's flags.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::Args;

use crate::cli::{EngineArgs, StoreArgs, parse_date};

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
    /// Ballista scheduler, df://host:port; without it the queries run in-process.
    #[arg(long, env = "TAUC_SCHEDULER")]
    pub scheduler: Option<String>,
    /// Memory and scratch space.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Where data lives.
    #[command(flatten)]
    pub store: StoreArgs,
}
