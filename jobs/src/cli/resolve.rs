//! From flags to a running engine: the config file, the `TAUC_*`
//! variables and the flags resolved into stores and an [`Engine`]
//! (flags > env > file > defaults), and the connection to a scheduler or
//! the in-process one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::Globals;
use crate::config::{self, Layers, S3Settings, Section, human};
use crate::engine::client::remote::SchedulerClient;
use crate::engine::runtime::scratch::Resources;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::ingest::offsets;
use crate::store::Location;
use crate::warehouse::commit;

/// The settings of the `tauc-job` commands that use the stores and the
/// engine, each from its flag, `TAUC_*` variable, config file key or
/// default ([`Layers::extract`]); the flags clap alone reads (no file
/// key) stay on the commands' flag structs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub(super) struct JobSettings {
    /// Root of the raw layout.
    pub(super) raw_root: String,
    /// Root of the warehouse.
    pub(super) warehouse: String,
    /// Environment segment.
    pub(super) env: String,
    /// Scheduler URL; unset runs in-process.
    pub(super) scheduler: Option<String>,
    /// Regions `submit` runs for; empty means every configured region.
    #[serde(deserialize_with = "human::list::deserialize")]
    pub(super) regions: Vec<String>,
    /// Lateness allowance in days.
    pub(super) lateness_days: i64,
    /// Funnels file or URL for the reports.
    pub(super) funnels: Option<String>,
    /// Stop on `dim_user` values outside the spec's forms.
    pub(super) strict_dims: bool,
    /// Seconds a replaced data file stays for running queries.
    pub(super) keep_replaced_secs: u64,
    /// How often an incremental run lists each raw folder whole.
    #[serde(with = "human::duration")]
    pub(super) full_listing_every: Duration,
    /// `G` of the offset listings.
    #[serde(with = "human::duration")]
    pub(super) listing_guard: Duration,
    /// `S` of the offset listings.
    #[serde(with = "human::duration")]
    pub(super) listing_skew: Duration,
}

impl Default for JobSettings {
    fn default() -> JobSettings {
        JobSettings {
            raw_root: config::DEFAULT_RAW_ROOT.into(),
            warehouse: config::DEFAULT_WAREHOUSE.into(),
            env: config::DEFAULT_ENV.into(),
            scheduler: None,
            regions: Vec::new(),
            lateness_days: config::DEFAULT_LATENESS_DAYS,
            funnels: None,
            strict_dims: false,
            keep_replaced_secs: commit::keep_replaced::DEFAULT_SECS,
            full_listing_every: offsets::DEFAULT_FULL_EVERY,
            listing_guard: offsets::DEFAULT_GUARD,
            listing_skew: offsets::DEFAULT_SKEW,
        }
    }
}

/// What a command resolved: its settings, the stores, the engine, and the
/// layers for settings of its own (`serve`'s).
pub(super) struct Resolved {
    pub(super) settings: JobSettings,
    pub(super) layers: Layers,
    pub(super) raw_root: Location,
    pub(super) warehouse: Location,
    pub(super) env: String,
    pub(super) engine: Engine,
}

/// The settings of `flags` (the command's, serialized: unset ones left
/// out) over the environment, the config file's top level, `[s3]`,
/// `[cluster]` and `section`, and the defaults; then the stores and the
/// engine with `resources`.
pub(super) fn resolve(
    g: &Globals,
    section: Section,
    flags: &impl Serialize,
    resources: &Resources,
) -> Result<Resolved> {
    let layers = g.layers(section)?;
    let settings: JobSettings = layers.extract(flags)?;
    let s3: S3Settings = layers.extract(flags)?;
    let tls = g.cluster_tls(&layers)?;
    let env = settings.env.clone();
    if env.is_empty() || env.contains('/') {
        return Err(Error::config(format!(
            "invalid --env '{env}' (expected a path segment such as uat)"
        )));
    }
    Ok(Resolved {
        engine: Engine::with_resources(s3.into(), resources)?.with_tls(tls),
        raw_root: Location::parse(&settings.raw_root)?,
        warehouse: Location::parse(&settings.warehouse)?,
        env,
        settings,
        layers,
    })
}

/// `--parallelism`, else the machine's cores.
pub(super) fn parallelism(flag: Option<usize>) -> usize {
    flag.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// A client context on the scheduler, or in-process.
pub(super) async fn connect(
    engine: &Engine,
    scheduler: Option<&str>,
    parallelism: Option<usize>,
) -> Result<datafusion::prelude::SessionContext> {
    let parallelism = self::parallelism(parallelism);
    // an unreachable scheduler is a configuration error, found before any work
    let client = match scheduler {
        Some(url) => Some(SchedulerClient::connect(url, engine.tls.as_ref()).await?),
        None => None,
    };
    engine
        .connect(client.as_ref(), parallelism)
        .await
        .map_err(|e| match (scheduler, e) {
            (Some(url), e) => Error::config(format!("cannot connect to scheduler '{url}': {e}")),
            (None, e) => e,
        })
}
