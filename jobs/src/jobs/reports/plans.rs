//! The per-report plans: one query per report (and per funnel), each
//! filling its part of a [`Builder`], all submitted together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::Days;
use datafusion::arrow::datatypes::DataType;
use datafusion::functions::core::expr_fn::named_struct;
use datafusion::functions_aggregate::expr_fn::{
    array_agg, avg, count, count_distinct, max, min, sum,
};
use datafusion::logical_expr::{Expr, ExprFunctionExt, cast as cast_expr, when};
use datafusion::prelude::{SessionContext, col, lit};
use futures::FutureExt;
use futures::future::LocalBoxFuture;

use super::funnels::Funnel;
use super::settlement::Contract;
use crate::error::{Error, Result};
use crate::jobs::progress::Progress;
use crate::warehouse::commit::PartitionRef;
use crate::warehouse::table::WarehouseTable;
use crate::warehouse::tables::Table;

use super::queries::{Queries, count_if, event_ms, is, is_any, not_bot, range, zone_of_region};
use super::{ReportsArgs, ReportsInputs};

/// Runs every report query over `args.dates` (and the anomaly baselines'
/// two days before them) and gathers their results.
pub(super) async fn query_all(
    ctx: &SessionContext,
    args: &ReportsArgs,
    inputs: &ReportsInputs,
    zones: &BTreeMap<String, chrono_tz::Tz>,
    progress: &mut Progress,
) -> Result<Builder> {
    let (Some(first), Some(last)) = (args.dates.first(), args.dates.last()) else {
        return Err(Error::config("no date to build reports for"));
    };
    for t in [Table::DwdTrkEvent, Table::DwdCorsError] {
        ctx.deregister_table(t.name())?;
        ctx.register_table(t.name(), Arc::new(WarehouseTable::new(t, &args.warehouse)))?;
    }
    let q = Queries {
        ctx,
        range: range(*first, *last, &args.regions),
    };
    let (funnels, contracts) = (&inputs.funnels, &inputs.contracts);
    let funnel_list = funnels.as_ref().map(|(_, f)| f.as_slice()).unwrap_or(&[]);
    let zone = zone_of_region(zones)?;
    // baselines read the two local dates before the first reported one
    let anomaly_q = Queries {
        ctx,
        range: range(*first - Days::new(2), *last, &args.regions),
    };
    let active: Vec<&Contract> = contracts
        .iter()
        .filter(|c| args.dates.iter().any(|d| c.active_on(*d)))
        .collect();

    // The queries are independent: submitted together, they keep every
    // executor slot busy instead of paying each job's start-up in turn.
    progress.stage("reports: querying");
    let mut jobs: Vec<LocalBoxFuture<'_, Result<Builder>>> = vec![
        async {
            let mut b = Builder::default();
            b.target_clicks(&q).await?;
            Ok(b)
        }
        .boxed_local(),
        async {
            let mut b = Builder::default();
            b.pages(&q).await?;
            Ok(b)
        }
        .boxed_local(),
        async {
            let mut b = Builder::default();
            b.cors(&q).await?;
            Ok(b)
        }
        .boxed_local(),
        async {
            let mut b = Builder::default();
            b.hourly(&anomaly_q, &zone).await?;
            Ok(b)
        }
        .boxed_local(),
        async {
            let mut b = Builder::default();
            b.settlement_counts(&q, &active).await?;
            Ok(b)
        }
        .boxed_local(),
    ];
    for f in funnel_list {
        let q = &q;
        jobs.push(
            async move {
                let mut b = Builder::default();
                b.funnel(q, f).await?;
                Ok(b)
            }
            .boxed_local(),
        );
    }
    let mut b = Builder::default();
    for part in futures::future::try_join_all(jobs).await? {
        b.merge(part);
    }
    for t in [Table::DwdTrkEvent, Table::DwdCorsError] {
        ctx.deregister_table(t.name())?;
    }
    Ok(b)
}

#[derive(Debug, Clone)]
pub(super) struct TargetRow {
    pub(super) target_type: Option<String>,
    pub(super) target_id: Option<String>,
    pub(super) clicks: i64,
    pub(super) impressions: i64,
    pub(super) clickers: i64,
}

#[derive(Debug, Clone)]
pub(super) struct PageRow {
    pub(super) page_path: Option<String>,
    pub(super) pv: i64,
    pub(super) uv: i64,
    pub(super) clicks: i64,
    pub(super) avg_duration_ms: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Summary {
    pub(super) errors: i64,
    pub(super) affected_users: i64,
    pub(super) fingerprints: i64,
    pub(super) page_views: i64,
}

#[derive(Debug, Clone)]
pub(super) struct TopRow {
    pub(super) fingerprint: String,
    pub(super) parts: [Option<String>; 5],
    pub(super) errors: i64,
    pub(super) affected_users: i64,
    pub(super) first_seen: i64,
    pub(super) last_seen: i64,
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TargetCounts {
    pub(super) gross_clicks: i64,
    pub(super) bot_clicks: i64,
    pub(super) dup_clicks: i64,
    pub(super) gross_impressions: i64,
    pub(super) bot_impressions: i64,
}

/// The query results, by partition.
#[derive(Default)]
pub(super) struct Builder {
    pub(super) targets: HashMap<PartitionRef, Vec<TargetRow>>,
    pub(super) pages: HashMap<PartitionRef, Vec<PageRow>>,
    /// `(partition, funnel) → users per steps reached`.
    pub(super) funnels: HashMap<(PartitionRef, String), BTreeMap<i64, i64>>,
    pub(super) summary: HashMap<PartitionRef, Summary>,
    pub(super) top: HashMap<PartitionRef, Vec<TopRow>>,
    /// `region → (series, bucket start) → errors`.
    pub(super) hour_counts: HashMap<String, HashMap<(String, i64), i64>>,
    /// err_classes with a non-bot error, per partition.
    pub(super) classes: HashMap<PartitionRef, BTreeSet<String>>,
    /// `(partition, target_id) → counts`.
    pub(super) billing: HashMap<(PartitionRef, String), TargetCounts>,
}

impl Builder {
    /// Takes in the results another builder's queries gathered (each
    /// query fills its own keys).
    pub(super) fn merge(&mut self, o: Builder) {
        self.targets.extend(o.targets);
        self.pages.extend(o.pages);
        self.funnels.extend(o.funnels);
        self.summary.extend(o.summary);
        self.top.extend(o.top);
        self.hour_counts.extend(o.hour_counts);
        self.classes.extend(o.classes);
        self.billing.extend(o.billing);
    }

    pub(super) async fn target_clicks(&mut self, q: &Queries<'_>) -> Result<()> {
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(not_bot().and(is_any(&["click", "impression"])))?
            .aggregate(
                vec![
                    col("region"),
                    col("dt"),
                    col("target_type"),
                    col("target_id"),
                ],
                vec![
                    count_if(is("click"))?.alias("clicks"),
                    count_if(is("impression"))?.alias("impressions"),
                    count_distinct(when(is("click"), col("user_key")).end()?).alias("clickers"),
                ],
            )?;
        let Some(r) = q.run("target clicks", df).await? else {
            return Ok(());
        };
        let (tt, ti) = (r.strs("target_type")?, r.strs("target_id")?);
        let (c, i, u) = (
            r.i64s("clicks")?,
            r.i64s("impressions")?,
            r.i64s("clickers")?,
        );
        for (k, p) in r.partitions()?.into_iter().enumerate() {
            self.targets.entry(p).or_default().push(TargetRow {
                target_type: tt[k].clone(),
                target_id: ti[k].clone(),
                clicks: c[k],
                impressions: i[k],
                clickers: u[k],
            });
        }
        Ok(())
    }

    pub(super) async fn pages(&mut self, q: &Queries<'_>) -> Result<()> {
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(not_bot().and(col("page_path").is_not_null()).and(is_any(&[
                "page_enter",
                "click",
                "page_leave",
            ])))?
            .aggregate(
                vec![col("region"), col("dt"), col("page_path")],
                vec![
                    count_if(is("page_enter"))?.alias("pv"),
                    count_distinct(when(is("page_enter"), col("user_key")).end()?).alias("uv"),
                    count_if(is("click"))?.alias("clicks"),
                    avg(cast_expr(col("duration_ms"), DataType::Float64))
                        .filter(is("page_leave"))
                        .build()?
                        .alias("avg_duration_ms"),
                ],
            )?;
        let Some(r) = q.run("pages", df).await? else {
            return Ok(());
        };
        let (path, pv, uv) = (r.strs("page_path")?, r.i64s("pv")?, r.i64s("uv")?);
        let (clicks, avg) = (r.i64s("clicks")?, r.f64s("avg_duration_ms")?);
        for (k, p) in r.partitions()?.into_iter().enumerate() {
            self.pages.entry(p).or_default().push(PageRow {
                page_path: path[k].clone(),
                pv: pv[k],
                uv: uv[k],
                clicks: clicks[k],
                avg_duration_ms: avg[k],
            });
        }
        Ok(())
    }

    pub(super) async fn funnel(&mut self, q: &Queries<'_>, f: &Funnel) -> Result<()> {
        // each user's events that match a step, with the steps they match
        // as a mask; the user's list is walked by `tauc_funnel_reach`
        let event = named_struct(vec![
            lit("ts"),
            event_ms(),
            lit("id"),
            col("event_id"),
            lit("m"),
            col("m"),
        ]);
        let reach = q.udf(
            "tauc_funnel_reach",
            vec![col("events"), lit(f.window_ms), lit(f.steps.len() as i64)],
        )?;
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(not_bot())?
            .select(vec![
                col("region"),
                col("dt"),
                col("user_key"),
                col("event_ts"),
                col("event_id"),
                f.mask()?.alias("m"),
            ])?
            .filter(col("m").gt(lit(0i64)))?
            .aggregate(
                vec![col("region"), col("dt"), col("user_key")],
                vec![array_agg(event).alias("events")],
            )?
            .select(vec![col("region"), col("dt"), reach.alias("reached")])?
            .filter(col("reached").gt(lit(0i64)))?
            .aggregate(
                vec![col("region"), col("dt"), col("reached")],
                vec![count(lit(1i64)).alias("users")],
            )?;
        let Some(r) = q.run(&format!("funnel {}", f.id), df).await? else {
            return Ok(());
        };
        let (reached, users) = (r.i64s("reached")?, r.i64s("users")?);
        for (k, p) in r.partitions()?.into_iter().enumerate() {
            *self
                .funnels
                .entry((p, f.id.clone()))
                .or_default()
                .entry(reached[k])
                .or_default() += users[k];
        }
        Ok(())
    }

    pub(super) async fn cors(&mut self, q: &Queries<'_>) -> Result<()> {
        let df = q
            .rows_of(Table::DwdCorsError)
            .await?
            .filter(not_bot())?
            .aggregate(
                vec![col("region"), col("dt")],
                vec![
                    count(lit(1i64)).alias("errors"),
                    count_distinct(col("user_key")).alias("affected_users"),
                    count_distinct(col("fingerprint")).alias("fingerprints"),
                ],
            )?;
        if let Some(r) = q.run("cors summary", df).await? {
            let (e, u, f) = (
                r.i64s("errors")?,
                r.i64s("affected_users")?,
                r.i64s("fingerprints")?,
            );
            for (k, p) in r.partitions()?.into_iter().enumerate() {
                let s = self.summary.entry(p).or_default();
                s.errors = e[k];
                s.affected_users = u[k];
                s.fingerprints = f[k];
            }
        }
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(not_bot().and(is("page_enter")))?
            .aggregate(
                vec![col("region"), col("dt")],
                vec![count(lit(1i64)).alias("page_views")],
            )?;
        if let Some(r) = q.run("page views", df).await? {
            let pv = r.i64s("page_views")?;
            for (k, p) in r.partitions()?.into_iter().enumerate() {
                self.summary.entry(p).or_default().page_views = pv[k];
            }
        }
        let df = q
            .rows_of(Table::DwdCorsError)
            .await?
            .filter(not_bot())?
            .aggregate(
                vec![col("region"), col("dt"), col("fingerprint")],
                vec![
                    min(col("err_class")).alias("err_class"),
                    min(col("req_method")).alias("req_method"),
                    min(col("req_host")).alias("req_host"),
                    min(col("req_path_tpl")).alias("req_path_tpl"),
                    min(col("req_origin")).alias("req_origin"),
                    count(lit(1i64)).alias("errors"),
                    count_distinct(col("user_key")).alias("affected_users"),
                    min(col("event_ts")).alias("first_seen"),
                    max(col("event_ts")).alias("last_seen"),
                ],
            )?;
        if let Some(r) = q.run("cors fingerprints", df).await? {
            let fp = r.strs("fingerprint")?;
            let parts: Vec<Vec<Option<String>>> = [
                "err_class",
                "req_method",
                "req_host",
                "req_path_tpl",
                "req_origin",
            ]
            .iter()
            .map(|c| r.strs(c))
            .collect::<Result<_>>()?;
            let (e, u) = (r.i64s("errors")?, r.i64s("affected_users")?);
            let (first, last) = (r.i64s("first_seen")?, r.i64s("last_seen")?);
            for (k, p) in r.partitions()?.into_iter().enumerate() {
                self.top.entry(p).or_default().push(TopRow {
                    fingerprint: fp[k].clone().unwrap_or_default(),
                    parts: std::array::from_fn(|i| parts[i][k].clone()),
                    errors: e[k],
                    affected_users: u[k],
                    first_seen: first[k],
                    last_seen: last[k],
                });
            }
        }
        Ok(())
    }

    pub(super) async fn hourly(&mut self, q: &Queries<'_>, zone: &Expr) -> Result<()> {
        let hour = q.udf("tauc_hour_start", vec![col("event_ts"), zone.clone()])?;
        let df = q
            .rows_of(Table::DwdCorsError)
            .await?
            .filter(not_bot())?
            .with_column("hour_ms", hour)?
            .aggregate(
                vec![col("region"), col("dt"), col("err_class"), col("hour_ms")],
                vec![count(lit(1i64)).alias("errors")],
            )?;
        let Some(r) = q.run("cors hourly", df).await? else {
            return Ok(());
        };
        let (class, hour, errors) = (r.strs("err_class")?, r.i64s("hour_ms")?, r.i64s("errors")?);
        for (k, p) in r.partitions()?.into_iter().enumerate() {
            let class = class[k].clone().unwrap_or_else(|| "other".into());
            let counts = self.hour_counts.entry(p.region.clone()).or_default();
            *counts.entry(("all".into(), hour[k])).or_default() += errors[k];
            *counts.entry((class.clone(), hour[k])).or_default() += errors[k];
            self.classes.entry(p).or_default().insert(class);
        }
        Ok(())
    }

    pub(super) async fn settlement_counts(
        &mut self,
        q: &Queries<'_>,
        active: &[&Contract],
    ) -> Result<()> {
        let targets: BTreeSet<&str> = active.iter().map(|c| c.target_id.as_str()).collect();
        if targets.is_empty() {
            return Ok(());
        }
        let on_targets = col("target_id").in_list(targets.iter().map(|t| lit(*t)).collect(), false);
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(on_targets.clone().and(is_any(&["click", "impression"])))?
            .aggregate(
                vec![col("region"), col("dt"), col("target_id")],
                vec![
                    count_if(is("click"))?.alias("gross_clicks"),
                    count_if(is("click").and(col("is_bot")))?.alias("bot_clicks"),
                    count_if(is("impression"))?.alias("gross_impressions"),
                    count_if(is("impression").and(col("is_bot")))?.alias("bot_impressions"),
                ],
            )?;
        if let Some(r) = q.run("settlement counts", df).await? {
            let t = r.strs("target_id")?;
            let (gc, bc) = (r.i64s("gross_clicks")?, r.i64s("bot_clicks")?);
            let (gi, bi) = (r.i64s("gross_impressions")?, r.i64s("bot_impressions")?);
            for (k, p) in r.partitions()?.into_iter().enumerate() {
                let c = self
                    .billing
                    .entry((p, t[k].clone().unwrap_or_default()))
                    .or_default();
                c.gross_clicks = gc[k];
                c.bot_clicks = bc[k];
                c.gross_impressions = gi[k];
                c.bot_impressions = bi[k];
            }
        }
        // each user's non-bot clicks on a target, walked by
        // `tauc_dup_clicks` (the 30-second rule)
        let click = named_struct(vec![lit("ts"), event_ms(), lit("id"), col("event_id")]);
        let dups = q.udf("tauc_dup_clicks", vec![col("clicks")])?;
        let df = q
            .rows_of(Table::DwdTrkEvent)
            .await?
            .filter(on_targets.and(is("click")).and(not_bot()))?
            .aggregate(
                vec![col("region"), col("dt"), col("target_id"), col("user_key")],
                vec![array_agg(click).alias("clicks")],
            )?
            .select(vec![
                col("region"),
                col("dt"),
                col("target_id"),
                dups.alias("dups"),
            ])?
            .aggregate(
                vec![col("region"), col("dt"), col("target_id")],
                vec![sum(col("dups")).alias("dup_clicks")],
            )?;
        if let Some(r) = q.run("duplicate clicks", df).await? {
            let (t, d) = (r.strs("target_id")?, r.i64s("dup_clicks")?);
            for (k, p) in r.partitions()?.into_iter().enumerate() {
                self.billing
                    .entry((p, t[k].clone().unwrap_or_default()))
                    .or_default()
                    .dup_clicks = d[k];
            }
        }
        Ok(())
    }
}
