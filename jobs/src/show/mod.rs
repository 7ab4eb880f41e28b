//! `tauc-job report`: one self-contained HTML page of a date's committed
//! ADS tables — hourly CORS errors per class with the alert hours marked,
//! the top failure fingerprints, target clicks and CTR, page views and
//! dwell, funnel steps and settlement per partner — for a laptop screen,
//! with no script and no network fetch (charts are inline SVG, see
//! [`chart`]).

pub mod chart;
mod sections;

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
use chart::{Bar, esc, num};

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

/// The sections of one region's part of the page, in order.
async fn region_sections(ctx: &SessionContext, date: NaiveDate, region: &str) -> Result<String> {
    let at = || vec![date_value(date), ScalarValue::from(region)];
    let mut s = String::new();
    s.push_str(&sections::cors_hourly(ctx, at(), region).await?);
    s.push_str(&sections::cors_top(ctx, at(), region).await?);
    s.push_str(&sections::targets(ctx, at(), region).await?);
    s.push_str(&sections::pages(ctx, at(), region).await?);
    s.push_str(&sections::funnels(ctx, at(), region).await?);
    s.push_str(&sections::settlement(ctx, at(), region).await?);
    Ok(s)
}
