//! `tauc-job report`: one self-contained HTML page of a date's committed
//! ADS tables — hourly CORS errors per class with the alert hours marked,
//! the top failure fingerprints, target clicks and CTR, page views and
//! dwell, funnel steps and settlement per partner — for a laptop screen,
//! with no script and no network fetch (charts are inline SVG, see
//! [`chart`]).

pub mod chart;

use std::fmt::Write as _;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;

use crate::engine::client::submitted;
use crate::error::{Error, Result};
use crate::warehouse::tables::date_value;
use chart::{Bar, Series, esc, num};

/// Rows a bar chart shows at most (largest first).
pub const TOP: usize = 25;

/// One query of the page: static SQL beside this module, its values bound
/// as parameters, never spliced into the text.
struct PageQuery {
    /// What it shows; the Ballista job is `tauc report: {what}`.
    what: &'static str,
    sql: &'static str,
    /// Rows kept (the chart's [`TOP`]), `None` for all.
    limit: Option<usize>,
}

const REGIONS: PageQuery = PageQuery {
    what: "regions",
    sql: include_str!("sql/regions.sql"),
    limit: None,
};
const CORS_HOURLY: PageQuery = PageQuery {
    what: "cors hourly",
    sql: include_str!("sql/cors_hourly.sql"),
    limit: None,
};
const CORS_TOP: PageQuery = PageQuery {
    what: "cors top",
    sql: include_str!("sql/cors_top.sql"),
    limit: Some(TOP),
};
const TARGETS: PageQuery = PageQuery {
    what: "targets",
    sql: include_str!("sql/targets.sql"),
    limit: Some(TOP),
};
const PAGES: PageQuery = PageQuery {
    what: "pages",
    sql: include_str!("sql/pages.sql"),
    limit: Some(TOP),
};
const FUNNELS: PageQuery = PageQuery {
    what: "funnels",
    sql: include_str!("sql/funnels.sql"),
    limit: None,
};
const SETTLEMENT: PageQuery = PageQuery {
    what: "settlement",
    sql: include_str!("sql/settlement.sql"),
    limit: Some(TOP),
};

/// A query's result as one batch, run through [`submitted`] (a named
/// Ballista job, cancelled on Ctrl-C) with `params` bound to `$1, $2, …`.
async fn query(
    ctx: &SessionContext,
    q: &PageQuery,
    params: Vec<ScalarValue>,
) -> Result<RecordBatch> {
    let df = crate::warehouse::query::plan(ctx, q.sql, false)
        .await?
        .with_param_values(params)?;
    let df = match q.limit {
        Some(n) => df.limit(0, Some(n))?,
        None => df,
    };
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let batches = submitted::collect(df, &format!("tauc report: {}", q.what)).await?;
    Ok(datafusion::arrow::compute::concat_batches(
        &schema, &batches,
    )?)
}

/// Column `name` as text (nulls as empty).
fn texts(b: &RecordBatch, name: &str) -> Result<Vec<String>> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| Error::Invariant(format!("report query lacks column {name}")))?;
    let s = cast(col, &DataType::Utf8)?;
    let s = s.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| {
            if s.is_null(i) {
                String::new()
            } else {
                s.value(i).to_string()
            }
        })
        .collect())
}

/// Column `name` as numbers (nulls as 0).
fn numbers(b: &RecordBatch, name: &str) -> Result<Vec<f64>> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| Error::Invariant(format!("report query lacks column {name}")))?;
    let col = match col.data_type() {
        DataType::Timestamp(..) => cast(&cast(col, &DataType::Int64)?, &DataType::Float64)?,
        _ => cast(col, &DataType::Float64)?,
    };
    let f = col.as_primitive::<Float64Type>();
    Ok((0..f.len())
        .map(|i| if f.is_null(i) { 0.0 } else { f.value(i) })
        .collect())
}

fn bools(b: &RecordBatch, name: &str) -> Result<Vec<bool>> {
    let col = b
        .column_by_name(name)
        .ok_or_else(|| Error::Invariant(format!("report query lacks column {name}")))?;
    let c = cast(col, &DataType::Int64)?;
    let c = c.as_primitive::<Int64Type>();
    Ok((0..c.len())
        .map(|i| !c.is_null(i) && c.value(i) != 0)
        .collect())
}

/// The regions with a committed page report on `date`.
pub async fn regions_of(ctx: &SessionContext, date: NaiveDate) -> Result<Vec<String>> {
    let b = query(ctx, &REGIONS, vec![date_value(date)]).await?;
    texts(&b, "region")
}

/// The page for `date` and `regions`.
pub async fn render(ctx: &SessionContext, date: NaiveDate, regions: &[String]) -> Result<String> {
    let mut body = String::new();
    for r in regions {
        let _ = write!(
            body,
            r#"<section class="region" id="region-{0}"><h2>Region {0}</h2>"#,
            esc(r)
        );
        body.push_str(&region_sections(ctx, date, r).await?);
        body.push_str("</section>");
    }
    Ok(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tauc daily report {date}</title>
<style>{STYLE}</style></head>
<body><header><h1>tauc daily report — {date}</h1>
<p>From the committed ADS tables of local date {date} (each region's own time zone). Regions: {regions}.</p></header>
{body}
<footer>Generated by tauc-job report. Charts show at most {TOP} rows, largest first; the tables below them list the same rows.</footer>
</body></html>
"#,
        regions = esc(&regions.join(", ")),
    ))
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1000px;padding:16px;color:#222}\
h1{font-size:24px;margin:0 0 4px}h2{font-size:20px;border-bottom:2px solid #0072B2;padding-bottom:2px;margin-top:32px}\
h3{font-size:16px;margin:22px 0 6px}svg.chart{width:100%;height:auto;display:block}\
.grid{stroke:#ddd}.tick,.note,.legend{font-size:11px;fill:#444}.label{font-size:11px;text-anchor:end;fill:#222}\
.tick{text-anchor:middle}.axis-title{font-size:12px;fill:#222;text-anchor:middle}.bar{fill:#0072B2}\
.alert{fill:none;stroke:#D55E00;stroke-width:2.5}.empty{fill:#888}\
table{border-collapse:collapse;width:100%;font-size:12px;margin-top:6px}th,td{border-bottom:1px solid #eee;padding:3px 6px;text-align:left}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}p.note{color:#555;font-size:12px;margin:2px 0}footer{margin-top:32px;color:#666;font-size:12px}";

/// A table of `cols` (`(header, column, numeric)`) of `b`.
fn table(b: &RecordBatch, cols: &[(&str, &str, bool)]) -> Result<String> {
    let mut s = String::from("<table><tr>");
    for (h, _, n) in cols {
        let _ = write!(
            s,
            r#"<th{}>{}</th>"#,
            if *n { r#" class="n""# } else { "" },
            esc(h)
        );
    }
    s.push_str("</tr>");
    let values: Vec<Vec<String>> = cols
        .iter()
        .map(|(_, c, n)| {
            if *n {
                numbers(b, c).map(|v| v.into_iter().map(num).collect())
            } else {
                texts(b, c)
            }
        })
        .collect::<Result<_>>()?;
    for i in 0..b.num_rows() {
        s.push_str("<tr>");
        for (column, (_, _, n)) in values.iter().zip(cols) {
            let _ = write!(
                s,
                r#"<td{}>{}</td>"#,
                if *n { r#" class="n""# } else { "" },
                esc(&column[i])
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    Ok(s)
}

fn bar_list(labels: &[String], values: &[f64], notes: Vec<String>) -> Vec<Bar> {
    labels
        .iter()
        .zip(values)
        .zip(notes)
        .map(|((l, v), n)| Bar {
            label: l.clone(),
            value: *v,
            note: n,
        })
        .collect()
}

async fn region_sections(ctx: &SessionContext, date: NaiveDate, region: &str) -> Result<String> {
    let at = || vec![date_value(date), ScalarValue::from(region)];
    let id = |what: &str| format!("{what}-{region}");
    let mut s = String::new();

    // hourly CORS errors per class, alerts ringed
    let an = query(ctx, &CORS_HOURLY, at()).await?;
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

    // top fingerprints
    let top = query(ctx, &CORS_TOP, at()).await?;
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
    s.push_str("<h3>Top CORS failure fingerprints</h3>");
    s.push_str(&chart::bars(
        &id("cors-top"),
        "Top CORS failure fingerprints",
        "errors in the day",
        &bar_list(&labels, &errs, notes),
    ));
    s.push_str(&table(
        &top,
        &[
            ("rank", "rank", true),
            ("class", "err_class", false),
            ("method", "req_method", false),
            ("host", "req_host", false),
            ("path", "req_path_tpl", false),
            ("errors", "errors", true),
            ("users", "affected_users", true),
        ],
    )?);

    // targets
    let tg = query(ctx, &TARGETS, at()).await?;
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
    s.push_str("<h3>Target clicks, impressions and CTR</h3>");
    s.push_str(&chart::bars(
        &id("targets"),
        "Clicks per target",
        "clicks",
        &bar_list(&labels, &clicks, notes),
    ));
    s.push_str(&table(
        &tg,
        &[
            ("type", "target_type", false),
            ("target", "target_id", false),
            ("clicks", "clicks", true),
            ("impressions", "impressions", true),
            ("CTR", "ctr", true),
        ],
    )?);

    // pages
    let pg = query(ctx, &PAGES, at()).await?;
    let pv = numbers(&pg, "pv")?;
    let notes = numbers(&pg, "avg_duration_ms")?
        .iter()
        .zip(&pv)
        .map(|(d, v)| format!("{} views, {:.1} s mean", num(*v), d / 1000.0))
        .collect();
    s.push_str("<h3>Page views and mean time on page</h3>");
    s.push_str(&chart::bars(
        &id("pages"),
        "Page views",
        "page views",
        &bar_list(&texts(&pg, "page_path")?, &pv, notes),
    ));
    s.push_str(&table(
        &pg,
        &[
            ("page", "page_path", false),
            ("views", "pv", true),
            ("visitors", "uv", true),
            ("mean ms", "avg_duration_ms", true),
        ],
    )?);

    // funnels
    let fu = query(ctx, &FUNNELS, at()).await?;
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
    s.push_str("<h3>Funnel steps</h3>");
    s.push_str(&chart::bars(
        &id("funnels"),
        "Users reaching each funnel step",
        "users",
        &bar_list(&labels, &users, notes),
    ));

    // settlement per partner
    let st = query(ctx, &SETTLEMENT, at()).await?;
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
    s.push_str("<h3>Settlement per partner</h3>");
    s.push_str(&chart::bars(
        &id("settlement"),
        "Amount due per partner",
        "amount (contract currency)",
        &bar_list(&labels, &amount, notes),
    ));
    s.push_str(&table(
        &st,
        &[
            ("partner", "partner_id", false),
            ("currency", "currency", false),
            ("billable", "qty", true),
            ("amount", "amount", true),
        ],
    )?);
    Ok(s)
}
