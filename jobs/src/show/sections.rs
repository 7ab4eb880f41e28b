//! The sections of a region's part of the page, one function each: its
//! query, its chart, its table.

use std::fmt::Write as _;

use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;

use super::chart::{self, Series, num};
use super::{CORS_HOURLY, CORS_TOP, FUNNELS, PAGES, SETTLEMENT, TARGETS};
use super::{bar_list, bools, numbers, query, table, texts};
use crate::error::Result;
use datafusion::arrow::array::RecordBatch;

/// Hourly CORS errors per class, the alert hours ringed.
pub(super) async fn cors_hourly(
    ctx: &SessionContext,
    at: Vec<ScalarValue>,
    region: &str,
) -> Result<String> {
    let id = |what: &str| format!("{what}-{region}");
    let mut s = String::new();
    let an = query(ctx, &CORS_HOURLY, at).await?;
    let (names, hours, locals, errors, alerts) = (
        texts(&an, "series")?,
        numbers(&an, "h")?,
        texts(&an, "local")?,
        numbers(&an, "errors")?,
        bools(&an, "is_alert")?,
    );
    let start = hours.iter().cloned().fold(f64::INFINITY, f64::min);
    let mut series: Vec<Series> = Vec::new();
    let mut ticks: Vec<(f64, String)> = Vec::new();
    for i in 0..an.num_rows() {
        let x = (hours[i] - start) / 3_600_000.0;
        if series.last().map(|s| s.name != names[i]).unwrap_or(true) {
            series.push(Series {
                name: names[i].clone(),
                points: Vec::new(),
            });
        }
        if let Some(last) = series.last_mut() {
            last.points.push((x, errors[i], alerts[i]));
        }
        if x.rem_euclid(3.0) == 0.0 && !ticks.iter().any(|t| t.0 == x) {
            ticks.push((x, locals[i].get(11..16).unwrap_or("").to_string()));
        }
    }
    let n_alerts = alerts.iter().filter(|a| **a).count();
    let _ = write!(
        s,
        "<h3>CORS errors per hour, by class</h3><p class=\"note\">{n_alerts} alert hour(s) (robust z-score over the 24 hours before; ringed in red). Series <i>all</i> is every class together.</p>"
    );
    s.push_str(&chart::lines(
        &id("cors-hourly"),
        "CORS errors per hour",
        "errors per hour",
        &ticks,
        &series,
    ));
    Ok(s)
}

/// The columns of a table: `(heading, column, is a number)`.
type Columns<'a> = &'a [(&'a str, &'a str, bool)];

/// A bar section: its heading, a bar chart, and (when given) the table of
/// the same rows.
struct BarSection<'a> {
    /// The `<h3>` text.
    heading: &'a str,
    /// The chart's id (`{what}-{region}`).
    id: String,
    /// The chart's title.
    title: &'a str,
    /// The value axis' label.
    axis: &'a str,
}

impl BarSection<'_> {
    /// The section's HTML: `values` by `labels`, each bar with its note,
    /// then `columns` of `rows` as a table (when `rows` is given).
    fn html(
        &self,
        labels: &[String],
        values: &[f64],
        notes: Vec<String>,
        rows: Option<(&RecordBatch, Columns<'_>)>,
    ) -> Result<String> {
        let mut s = format!("<h3>{}</h3>", self.heading);
        s.push_str(&chart::bars(
            &self.id,
            self.title,
            self.axis,
            &bar_list(labels, values, notes),
        ));
        if let Some((rows, columns)) = rows {
            s.push_str(&table(rows, columns)?);
        }
        Ok(s)
    }
}

/// The top CORS failure fingerprints: chart and table.
pub(super) async fn cors_top(
    ctx: &SessionContext,
    at: Vec<ScalarValue>,
    region: &str,
) -> Result<String> {
    let top = query(ctx, &CORS_TOP, at).await?;
    let labels: Vec<String> = texts(&top, "req_method")?
        .iter()
        .zip(texts(&top, "req_host")?)
        .zip(texts(&top, "req_path_tpl")?)
        .map(|((m, h), p)| format!("{m} {h}{p}"))
        .collect();
    let errs = numbers(&top, "errors")?;
    let notes = texts(&top, "err_class")?
        .into_iter()
        .zip(&errs)
        .map(|(c, e)| format!("{} errors ({c})", num(*e)))
        .collect();
    let section = BarSection {
        heading: "Top CORS failure fingerprints",
        id: format!("cors-top-{region}"),
        title: "Top CORS failure fingerprints",
        axis: "errors in the day",
    };
    let columns = [
        ("rank", "rank", true),
        ("class", "err_class", false),
        ("method", "req_method", false),
        ("host", "req_host", false),
        ("path", "req_path_tpl", false),
        ("errors", "errors", true),
        ("users", "affected_users", true),
    ];
    section.html(&labels, &errs, notes, Some((&top, &columns)))
}

/// Target clicks, impressions and CTR: chart and table.
pub(super) async fn targets(
    ctx: &SessionContext,
    at: Vec<ScalarValue>,
    region: &str,
) -> Result<String> {
    let tg = query(ctx, &TARGETS, at).await?;
    let labels: Vec<String> = texts(&tg, "target_type")?
        .iter()
        .zip(texts(&tg, "target_id")?)
        .map(|(t, i)| format!("{t} {i}"))
        .collect();
    let clicks = numbers(&tg, "clicks")?;
    let notes = numbers(&tg, "impressions")?
        .iter()
        .zip(numbers(&tg, "ctr")?)
        .zip(&clicks)
        .map(|((imp, ctr), c)| {
            if *imp > 0.0 {
                format!("{} clicks, CTR {:.1} %", num(*c), ctr * 100.0)
            } else {
                format!("{} clicks", num(*c))
            }
        })
        .collect();
    let section = BarSection {
        heading: "Target clicks, impressions and CTR",
        id: format!("targets-{region}"),
        title: "Clicks per target",
        axis: "clicks",
    };
    let columns = [
        ("type", "target_type", false),
        ("target", "target_id", false),
        ("clicks", "clicks", true),
        ("impressions", "impressions", true),
        ("CTR", "ctr", true),
    ];
    section.html(&labels, &clicks, notes, Some((&tg, &columns)))
}

/// Page views and mean time on page: chart and table.
pub(super) async fn pages(
    ctx: &SessionContext,
    at: Vec<ScalarValue>,
    region: &str,
) -> Result<String> {
    let pg = query(ctx, &PAGES, at).await?;
    let pv = numbers(&pg, "pv")?;
    let notes = numbers(&pg, "avg_duration_ms")?
        .iter()
        .zip(&pv)
        .map(|(d, v)| format!("{} views, {:.1} s mean", num(*v), d / 1000.0))
        .collect();
    let section = BarSection {
        heading: "Page views and mean time on page",
        id: format!("pages-{region}"),
        title: "Page views",
        axis: "page views",
    };
    let columns = [
        ("page", "page_path", false),
        ("views", "pv", true),
        ("visitors", "uv", true),
        ("mean ms", "avg_duration_ms", true),
    ];
    section.html(&texts(&pg, "page_path")?, &pv, notes, Some((&pg, &columns)))
}

/// Users reaching each funnel step.
pub(super) async fn funnels(
    ctx: &SessionContext,
    at: Vec<ScalarValue>,
    region: &str,
) -> Result<String> {
    let fu = query(ctx, &FUNNELS, at).await?;
    let labels: Vec<String> = texts(&fu, "funnel_id")?
        .iter()
        .zip(texts(&fu, "step_no")?)
        .map(|(f, n)| format!("{f} step {n}"))
        .collect();
    let users = numbers(&fu, "users")?;
    let notes = numbers(&fu, "conv_from_start")?
        .iter()
        .zip(&users)
        .map(|(c, u)| format!("{} users, {:.1} % of step 1", num(*u), c * 100.0))
        .collect();
    let section = BarSection {
        heading: "Funnel steps",
        id: format!("funnels-{region}"),
        title: "Users reaching each funnel step",
        axis: "users",
    };
    section.html(&labels, &users, notes, None)
}

/// The amount due per partner: chart and table.
pub(super) async fn settlement(
    ctx: &SessionContext,
    at: Vec<ScalarValue>,
    region: &str,
) -> Result<String> {
    let st = query(ctx, &SETTLEMENT, at).await?;
    let labels: Vec<String> = texts(&st, "partner_id")?
        .iter()
        .zip(texts(&st, "currency")?)
        .map(|(p, c)| format!("{p} ({c})"))
        .collect();
    let amount = numbers(&st, "amount")?;
    let notes = texts(&st, "currency")?
        .iter()
        .zip(&amount)
        .map(|(c, a)| format!("{a:.2} {c}"))
        .collect();
    let section = BarSection {
        heading: "Settlement per partner",
        id: format!("settlement-{region}"),
        title: "Amount due per partner",
        axis: "amount (contract currency)",
    };
    let columns = [
        ("partner", "partner_id", false),
        ("currency", "currency", false),
        ("billable", "qty", true),
        ("amount", "amount", true),
    ];
    section.html(&labels, &amount, notes, Some((&st, &columns)))
}
