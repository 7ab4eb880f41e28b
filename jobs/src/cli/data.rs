//! The commands over the stores' files that run no query: `sample`
//! writes a sample data set, `tables` lists what is committed, `sweep`
//! deletes what re-runs replaced.

use chrono::NaiveDate;
use clap::Args;
use serde::Serialize;

use super::flags::StoreArgs;
use super::parse_date;
use super::resolve::resolve;
use crate::cli::Globals;
use crate::config::Section;
use crate::derive::regions::Regions;
use crate::engine::runtime::scratch::Resources;
use crate::error::Result;
use crate::jobs::job::preflight;
use crate::jobs::sample::{self, Population, SampleArgs};
use crate::warehouse::commit;
use crate::warehouse::tables::Table;

/// `tables` flags.
#[derive(Debug, Clone, Args)]
pub struct TablesCmd {
    /// Where data lives.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `sweep` flags; serialized, the flag layer of its settings.
#[derive(Debug, Clone, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SweepCmd {
    /// Where data lives.
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreArgs,
    /// Seconds a replaced file stays after the commit that replaced it
    /// (as `submit --keep-replaced-secs`). Default 900.
    #[arg(long, env = "TAUC_KEEP_REPLACED_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_replaced_secs: Option<u64>,
}

/// `sample` flags.
#[derive(Debug, Clone, Args)]
pub struct SampleCmd {
    /// First UTC collection date, YYYY-MM-DD.
    #[arg(long, value_parser = parse_date)]
    pub date: NaiveDate,
    /// Number of days.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=366))]
    pub days: u32,
    /// Clean events per region and day.
    #[arg(long, default_value_t = 2000)]
    pub events_per_day: u32,
    /// Regions [default: aps1, use1, euw1].
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Lines per raw file.
    #[arg(long, default_value_t = 50)]
    pub lines_per_file: usize,
    /// `toy` (40 users, a handful of targets and pages) or `business`
    /// (the counts below, Zipf-skewed activity, sessions) [default:
    /// business from 1 000 000 events a day or when a count below is
    /// given, else toy].
    #[arg(long, value_enum)]
    pub shape: Option<Shape>,
    /// Users [default: events per day / 20 — 5 M at 100 M events].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub users: Option<u64>,
    /// Devices [default: 1.3 per user].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub devices: Option<u64>,
    /// Click and impression targets [default: events per day / 200, 20 to 500 000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub targets: Option<u64>,
    /// Pages [default: events per day / 1000, 10 to 50 000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub pages: Option<u64>,
    /// Cities the geo points are near [default: events per day / 1000, 10 to 2000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub cities: Option<u64>,
    /// Where data goes.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The sample's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// 40 users, four targets, six pages: a small day to read by eye.
    Toy,
    /// The business's counts and skew.
    Business,
}

impl SampleCmd {
    /// The business's population, or `None` for the toy shape.
    fn population(&self) -> Option<Population> {
        let counts = [
            self.users,
            self.devices,
            self.targets,
            self.pages,
            self.cities,
        ];
        let shape = self.shape.unwrap_or(
            if self.events_per_day >= 1_000_000 || counts.iter().any(Option::is_some) {
                Shape::Business
            } else {
                Shape::Toy
            },
        );
        if shape == Shape::Toy {
            return None;
        }
        let mut pop = Population::for_events(u64::from(self.events_per_day));
        if let Some(users) = self.users {
            pop.users = users;
            pop.devices = users + users * 3 / 10;
        }
        pop.devices = self.devices.unwrap_or(pop.devices).max(pop.users);
        pop.targets = self.targets.unwrap_or(pop.targets);
        pop.pages = self.pages.unwrap_or(pop.pages);
        pop.cities = self.cities.unwrap_or(pop.cities);
        Some(pop)
    }
}

/// `tauc-job sample`.
pub async fn sample(g: &Globals, s: SampleCmd) -> Result<String> {
    let r = resolve(g, Section::Jobs, &s.store, &Resources::default())?;
    let regions = if s.regions.is_empty() {
        Regions::default().names()
    } else {
        s.regions.clone()
    };
    if r.raw_root.store_url.starts_with("s3") {
        preflight(&r.engine, &r.raw_root, "raw root").await?;
    }
    let args = SampleArgs {
        date: s.date,
        days: s.days,
        events_per_day: s.events_per_day,
        regions,
        env: r.env.clone(),
        raw_root: r.raw_root.clone(),
        warehouse: Some(r.warehouse.clone()),
        lines_per_file: s.lines_per_file,
        population: s.population(),
    };
    let rep = sample::write(&r.engine, &args).await?;
    let shape = match &args.population {
        None => "toy shape".to_string(),
        Some(p) => format!(
            "business shape: {} users, {} devices, {} targets, {} pages, {} cities",
            p.users, p.devices, p.targets, p.pages, p.cities
        ),
    };
    Ok(format!(
        "wrote {} raw objects ({} lines; {shape}) under {} and dim tables under {}\n",
        rep.files,
        rep.lines,
        r.raw_root,
        r.warehouse.join("dim")
    ))
}

/// `tauc-job tables`.
pub async fn tables(g: &Globals, t: TablesCmd) -> Result<String> {
    let r = resolve(g, Section::Jobs, &t.store, &Resources::default())?;
    preflight(&r.engine, &r.warehouse, "warehouse").await?;
    crate::cli::sql::tables(&r.engine, &r.warehouse).await
}

/// `tauc-job sweep`.
pub async fn sweep(g: &Globals, c: SweepCmd) -> Result<String> {
    let r = resolve(g, Section::Jobs, &c, &Resources::default())?;
    preflight(&r.engine, &r.warehouse, "warehouse").await?;
    commit::keep_replaced::set(r.settings.keep_replaced_secs);
    let store = r.engine.registry.for_location(&r.warehouse)?;
    let mut out = String::new();
    for t in Table::all() {
        let n = commit::sweep(store.as_ref(), &t.location(&r.warehouse)).await?;
        if n > 0 {
            out.push_str(&format!("{}: deleted {n} replaced file(s)\n", t.name()));
        }
    }
    if out.is_empty() {
        out.push_str("no replaced file past its keep time\n");
    }
    Ok(out)
}
