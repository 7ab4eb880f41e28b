//! Layering as a [`Job`]: its checks (the raw root answers, every region
//! has a zone, `dim_user` is well-formed), its run with the progress bar
//! and the metrics file, and its closing summary.

use std::collections::BTreeSet;
use std::fmt::{self, Display};

use async_trait::async_trait;
use datafusion::prelude::SessionContext;

use super::{JOB, LayeringArgs, LayeringReport, load_regions, run, run_metrics};
use crate::derive::regions::Regions;
use crate::engine::client::submitted;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::jobs::job::{Job, Ready, RunSpec, preflight};
use crate::jobs::progress::Progress;
use crate::store::Location;
use crate::warehouse::commit::PartitionRef;
use crate::warehouse::dim_user::{self, DimUserCheck};
use crate::warehouse::tables::Table;

/// The layering job of the registry.
pub struct Layering;

#[async_trait(?Send)]
impl Job for Layering {
    fn name(&self) -> &'static str {
        JOB
    }

    fn about(&self) -> &'static str {
        "raw events of UTC collection dates -> ODS, then every DWD local date they can change"
    }

    fn reads(&self) -> &'static str {
        "raw {env}/{region}/{yyyy}/{mm}/{dd}/messages-*.txt, dim_user, dim_region"
    }

    fn writes(&self) -> Vec<Table> {
        Table::LAYERING.to_vec()
    }

    fn lease_set(&self, spec: &RunSpec) -> BTreeSet<(&'static str, PartitionRef)> {
        LayeringArgs::of(spec).lease_set()
    }

    async fn check(&self, engine: &Engine, spec: &RunSpec) -> Result<Box<dyn Ready>> {
        Ok(Box::new(LayeringRun::check(engine, spec).await?))
    }
}

impl LayeringArgs {
    /// The layering run of a `submit`.
    pub fn of(spec: &RunSpec) -> LayeringArgs {
        LayeringArgs {
            dates: spec.dates.clone(),
            regions: spec.regions.clone(),
            env: spec.env.clone(),
            raw_root: spec.raw_root.clone(),
            warehouse: spec.warehouse.clone(),
            lateness_days: spec.lateness_days,
            ranges_per_folder: spec.ranges_per_folder,
            fetch_concurrency: spec.fetch_concurrency,
            file_limits: spec.file_limits,
            lease_wait: spec.lease_wait,
            incremental: spec.incremental,
            compact_files: spec.compact_files,
            listing: spec.listing,
            compact_above: spec.compact_above,
        }
    }
}

/// A layering run whose checks passed.
pub struct LayeringRun {
    /// What it loads.
    pub args: LayeringArgs,
    /// The regions' time zones (every region of the run has one).
    pub zones: Regions,
    /// What the check of `dim_user` found.
    dims: DimUserCheck,
    /// `--metrics-file`.
    metrics_file: Option<std::path::PathBuf>,
    /// Whether the tasks run on a cluster.
    on_cluster: bool,
}

impl LayeringRun {
    /// The raw root answers, every region has a zone, `dim_user` is
    /// well-formed — in that order, before any work.
    pub async fn check(engine: &Engine, spec: &RunSpec) -> Result<LayeringRun> {
        preflight(engine, &spec.raw_root, "raw root").await?;
        let zones = load_zones(engine, &spec.warehouse, &spec.regions).await?;
        let dims = check_dim_user(engine, &spec.warehouse, spec.strict_dims).await?;
        Ok(LayeringRun {
            args: LayeringArgs::of(spec),
            zones,
            dims,
            metrics_file: spec.metrics_file.clone(),
            on_cluster: spec.on_cluster,
        })
    }

    /// Runs it with a progress bar, then writes the metrics file.
    pub async fn run(self, ctx: &SessionContext, engine: &Engine) -> Result<LayeringOutput> {
        let mut progress = Progress::auto();
        submitted::set_display(progress.bar());
        let report = run(ctx, engine, &self.args, &self.zones, &mut progress).await;
        progress.finish();
        let report = report?;
        if let Some(path) = &self.metrics_file {
            let spilled = (!self.on_cluster).then(crate::engine::runtime::spill::spilled);
            let text = run_metrics::render(&report, spilled, chrono::Utc::now().timestamp());
            run_metrics::write(path, &text)?;
        }
        Ok(LayeringOutput {
            report,
            dims: self.dims,
        })
    }
}

#[async_trait(?Send)]
impl Ready for LayeringRun {
    async fn run(
        self: Box<Self>,
        ctx: &SessionContext,
        engine: &Engine,
    ) -> Result<Box<dyn Display>> {
        Ok(Box::new(LayeringRun::run(*self, ctx, engine).await?))
    }
}

/// What `submit layering` prints: the run's summary, then what the check
/// of `dim_user` found (when anything).
pub struct LayeringOutput {
    /// What the run did.
    pub report: LayeringReport,
    /// What the check of `dim_user` found.
    pub dims: DimUserCheck,
}

impl Display for LayeringOutput {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{}", self.report)?;
        if !self.dims.problems().is_empty() {
            writeln!(out, "{}", self.dims)?;
        }
        Ok(())
    }
}

/// The regions' zones ([`load_regions`]), checked to hold every region of
/// the run.
pub async fn load_zones(
    engine: &Engine,
    warehouse: &Location,
    regions: &[String],
) -> Result<Regions> {
    let zones = load_regions(engine, warehouse).await?;
    for region in regions {
        zones.zone(region)?;
    }
    Ok(zones)
}

/// Checks `dim_user` before any work: a short row is an error; values
/// outside the spec's forms are warnings, or errors when `strict`.
async fn check_dim_user(
    engine: &Engine,
    warehouse: &Location,
    strict: bool,
) -> Result<DimUserCheck> {
    let found = dim_user::check(&engine.registry, warehouse).await?;
    let problems = found.problems();
    if strict && !problems.is_empty() {
        return Err(Error::BadInput(format!(
            "{}; fix these rows, or run without --strict-dims to count them as unknown",
            problems.join("; ")
        )));
    }
    for p in problems {
        tracing::warn!(
            "{p}; counted as unknown, as analyses.md says (--strict-dims stops instead)"
        );
    }
    Ok(found)
}

/// The closing summary: one line per partition, then the run.
impl Display for LayeringReport {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (p, s) in &self.ods {
            let reasons = s
                .quarantined
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let late = s
                .quarantined
                .get("late_beyond_window")
                .copied()
                .unwrap_or(0);
            writeln!(
                out,
                "ods dt={} region={}: files={} ignored={} lines={} blank={} valid={} quarantined={} late={}{}",
                p.dt,
                p.region,
                s.stats.files,
                s.stats.files_ignored,
                s.stats.lines,
                s.stats.blank_lines,
                s.valid_rows,
                s.quarantined_rows(),
                late,
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!(" ({reasons})")
                }
            )?;
        }
        let l = &self.listing;
        if l.folders > 0 {
            writeln!(
                out,
                "listing: folders={} full={} list_requests={} keys_listed={} object_lists_read={} new_objects={}",
                l.folders,
                l.full_listings,
                l.list_requests,
                l.keys_listed,
                l.object_lists_read,
                l.new_objects
            )?;
        }
        for (p, s) in &self.dwd {
            writeln!(
                out,
                "dwd dt={} region={}: read={} duplicates={} events={} cors_errors={}",
                p.dt, p.region, s.rows_read, s.duplicates, s.trk_rows, s.cors_rows
            )?;
        }
        if self.compacted > 0 {
            writeln!(
                out,
                "compacted the small files of {} partitions",
                self.compacted
            )?;
        }
        if let Some(p) = &self.dwd_patch {
            writeln!(
                out,
                "dwd patched with the run's new rows ({} copied event ids, {} dates rewritten)",
                p.copied_ids, p.rewritten
            )?;
        }
        writeln!(
            out,
            "run {} committed: ods {:.1} s, dwd {:.1} s; {} result rows received ({} files, {} counters, no data rows)",
            self.run_id,
            self.ods_secs,
            self.dwd_secs,
            self.rows_received,
            self.files_received,
            self.rows_received - self.files_received
        )
    }
}
