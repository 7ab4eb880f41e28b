//! `daily`: layering for collection dates, then the reports of every DWD
//! date that load touched — the two jobs composed, each under its own
//! leases in turn.

use std::collections::BTreeSet;
use std::fmt::{self, Display};

use async_trait::async_trait;
use datafusion::prelude::SessionContext;

use crate::engine::session::Engine;
use crate::error::Result;
use crate::jobs::job::{Job, Ready, RunSpec};
use crate::jobs::layering::{LayeringArgs, LayeringOutput, LayeringRun};
use crate::jobs::reports::{ReportsArgs, ReportsReport, ReportsRun, stale_dates};
use crate::warehouse::commit::PartitionRef;
use crate::warehouse::tables::Table;

/// The daily job of the registry.
pub struct Daily;

#[async_trait(?Send)]
impl Job for Daily {
    fn name(&self) -> &'static str {
        "daily"
    }

    fn about(&self) -> &'static str {
        "layering for collection dates, then reports for every DWD date the load touched"
    }

    fn reads(&self) -> &'static str {
        "raw {env}/{region}/{yyyy}/{mm}/{dd}/messages-*.txt, dim_user, dim_contract, dim_region, conf/funnels.toml"
    }

    fn writes(&self) -> Vec<Table> {
        Table::all().collect()
    }

    /// The layering's leases, then (taken after those are released) the
    /// reports' for every DWD date the layering rebuilds.
    fn lease_set(&self, spec: &RunSpec) -> BTreeSet<(&'static str, PartitionRef)> {
        let layering = LayeringArgs::of(spec);
        let dwd_dates = layering.dwd_dates().into_iter().collect();
        let mut out = layering.lease_set();
        out.extend(ReportsArgs::of(spec, dwd_dates).lease_set());
        out
    }

    /// The layering's checks, then the reports' inputs (the funnels and
    /// `dim_contract`; the DWD partitions are the layering's to commit).
    async fn check(&self, engine: &Engine, spec: &RunSpec) -> Result<Box<dyn Ready>> {
        Ok(Box::new(DailyRun::check(engine, spec).await?))
    }
}

/// A daily run whose checks passed.
struct DailyRun {
    layering: LayeringRun,
    reports: ReportsRun,
}

/// A daily run of `spec`: its checks, then its run on `ctx`; returns its
/// report whole (`tauc-job follow` counts what each micro-batch did from
/// it).
pub async fn run(engine: &Engine, ctx: &SessionContext, spec: &RunSpec) -> Result<DailyReport> {
    DailyRun::check(engine, spec)
        .await?
        .run_report(ctx, engine)
        .await
}

#[async_trait(?Send)]
impl Ready for DailyRun {
    async fn run(
        self: Box<Self>,
        ctx: &SessionContext,
        engine: &Engine,
    ) -> Result<Box<dyn Display>> {
        Ok(Box::new(self.run_report(ctx, engine).await?))
    }
}

impl DailyRun {
    /// The layering's checks, then the reports' inputs (the funnels and
    /// `dim_contract`; the DWD partitions are the layering's to commit).
    async fn check(engine: &Engine, spec: &RunSpec) -> Result<DailyRun> {
        let layering = LayeringRun::check(engine, spec).await?;
        let reports = ReportsRun::check(engine, spec, Vec::new(), layering.zones.clone()).await?;
        Ok(DailyRun { layering, reports })
    }

    async fn run_report(self, ctx: &SessionContext, engine: &Engine) -> Result<DailyReport> {
        let DailyRun {
            layering,
            mut reports,
        } = self;
        // the reports' dates are the DWD dates the layering can change
        reports.args.dates = layering.args.dwd_dates().into_iter().collect();
        let incremental = layering.args.incremental;
        let layering = layering.run(ctx, engine).await?;
        // A full run reports every date. An incremental run reports the
        // dates whose ADS partitions are behind the DWD rows they are built
        // from (their date's, and the CORS errors of the two days before:
        // the anomaly baseline) — those the layering changed, and any a
        // killed run left behind — as one range (the reports read a range);
        // the others already equal a full run's.
        if incremental {
            let store = engine.registry.for_location(&reports.args.warehouse)?;
            let stale = stale_dates(store.as_ref(), &reports.args).await?;
            reports.args.dates.retain(|d| {
                stale.first().is_some_and(|first| first <= d)
                    && stale.last().is_some_and(|last| d <= last)
            });
        }
        let reports = if reports.args.dates.is_empty() {
            None
        } else {
            Some(reports.run(ctx, engine).await?)
        };
        Ok(DailyReport { layering, reports })
    }
}

/// What `submit daily` prints: the layering's output, then the reports'.
pub struct DailyReport {
    /// The layering run.
    pub layering: LayeringOutput,
    /// The reports run; `None` when an incremental run changed nothing
    /// they read.
    pub reports: Option<ReportsReport>,
}

impl Display for DailyReport {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{}", self.layering)?;
        match &self.reports {
            Some(r) => write!(out, "{r}"),
            None => writeln!(out, "reports: no DWD partition changed; nothing to report"),
        }
    }
}
