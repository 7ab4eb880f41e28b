//! Reports as a [`Job`]: its checks (every region has a zone, the DWD
//! partitions are committed, the funnels and `dim_contract` load) and its
//! run with the progress bar.

use std::collections::BTreeSet;
use std::fmt::Display;

use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::prelude::SessionContext;

use super::{JOB, ReportsArgs, ReportsInputs, ReportsReport, run};
use crate::derive::regions::Regions;
use crate::engine::client::submitted;
use crate::engine::session::Engine;
use crate::error::Result;
use crate::jobs::job::{Job, Ready, RunSpec};
use crate::jobs::layering::load_zones;
use crate::jobs::progress::Progress;
use crate::warehouse::commit::PartitionRef;
use crate::warehouse::tables::Table;

/// The reports job of the registry.
pub struct Reports;

#[async_trait(?Send)]
impl Job for Reports {
    fn name(&self) -> &'static str {
        JOB
    }

    fn about(&self) -> &'static str {
        "committed DWD partitions of local dates -> the seven ADS reports"
    }

    fn reads(&self) -> &'static str {
        "dwd_trk_event_di, dwd_mon_cors_error_di, dim_contract, dim_region, conf/funnels.toml"
    }

    fn writes(&self) -> Vec<Table> {
        Table::REPORTS.to_vec()
    }

    fn lease_set(&self, spec: &RunSpec) -> BTreeSet<(&'static str, PartitionRef)> {
        ReportsArgs::of(spec, spec.dates.clone()).lease_set()
    }

    async fn check(&self, engine: &Engine, spec: &RunSpec) -> Result<Box<dyn Ready>> {
        let zones = load_zones(engine, &spec.warehouse, &spec.regions).await?;
        let run = ReportsRun::check(engine, spec, spec.dates.clone(), zones).await?;
        Ok(Box::new(run))
    }
}

impl ReportsArgs {
    /// The reports run of a `submit`, for local dates `dates`.
    pub fn of(spec: &RunSpec, dates: Vec<NaiveDate>) -> ReportsArgs {
        ReportsArgs {
            dates,
            regions: spec.regions.clone(),
            warehouse: spec.warehouse.clone(),
            funnels: spec.funnels.clone(),
            lease_wait: spec.lease_wait,
        }
    }
}

/// A reports run whose checks passed.
pub struct ReportsRun {
    /// What it builds.
    pub args: ReportsArgs,
    /// The regions' time zones.
    zones: Regions,
    /// The funnels and contracts, loaded.
    inputs: ReportsInputs,
}

impl ReportsRun {
    /// The DWD partitions of `dates` are committed (none checked when
    /// `dates` is empty: `daily` checks before the layering that commits
    /// them), the funnels and `dim_contract` load.
    pub async fn check(
        engine: &Engine,
        spec: &RunSpec,
        dates: Vec<NaiveDate>,
        zones: Regions,
    ) -> Result<ReportsRun> {
        let args = ReportsArgs::of(spec, dates);
        let inputs = ReportsInputs::load(engine, &args).await?;
        Ok(ReportsRun {
            args,
            zones,
            inputs,
        })
    }

    /// Runs it with a progress bar.
    pub async fn run(self, ctx: &SessionContext, engine: &Engine) -> Result<ReportsReport> {
        let mut progress = Progress::auto();
        submitted::set_display(progress.bar());
        let report = run(
            ctx,
            engine,
            &self.args,
            &self.inputs,
            &self.zones,
            &mut progress,
        )
        .await;
        progress.finish();
        report
    }
}

#[async_trait(?Send)]
impl Ready for ReportsRun {
    async fn run(
        self: Box<Self>,
        ctx: &SessionContext,
        engine: &Engine,
    ) -> Result<Box<dyn Display>> {
        Ok(Box::new(ReportsRun::run(*self, ctx, engine).await?))
    }
}
