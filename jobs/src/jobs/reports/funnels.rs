//! Funnels (analyses.md, `ads_trk_funnel_1d`): their TOML definitions and
//! how far a user gets through one.
//!
//! A funnel's steps become one bit each of a mask computed per event in
//! SQL; each user's matching events of the day travel to
//! [`reach`] as one list (`array_agg`), so the whole computation runs
//! distributed and only a `(funnel, steps reached) → users` histogram
//! comes back.

use std::collections::BTreeSet;

use datafusion::logical_expr::{Expr, when};
use datafusion::prelude::{col, lit};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::ingest::event::TARGET_TYPES;

/// The event types a step may name: those of `dwd_trk_event_di`.
pub const STEP_EVENT_TYPES: [&str; 4] = ["page_enter", "page_leave", "click", "impression"];

/// Most steps a funnel may have (one bit each of an `i64` mask).
pub const MAX_STEPS: usize = 32;

/// One step: the event type and the optional fields it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `event_type` to match.
    pub event_type: String,
    /// Normalised `page_path` to match, when named.
    pub page_path: Option<String>,
    /// `target_type` to match, when named.
    pub target_type: Option<String>,
    /// `target_id` to match, when named.
    pub target_id: Option<String>,
}

/// One funnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Funnel {
    /// `funnel_id` in the table.
    pub id: String,
    /// Longest time from the first to the last matched event.
    pub window_ms: i64,
    /// The ordered steps.
    pub steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    funnel: Vec<Spanned<FunnelToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FunnelToml {
    id: Spanned<String>,
    window_seconds: Spanned<i64>,
    #[serde(default)]
    step: Vec<Spanned<StepToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepToml {
    event_type: Spanned<String>,
    page_path: Option<Spanned<String>>,
    target_type: Option<Spanned<String>>,
    target_id: Option<Spanned<String>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Parses a funnels file; `source` names it in errors, which say the line
/// and what to change.
pub fn parse(source: &str, text: &str) -> Result<Vec<Funnel>> {
    let err = |offset: usize, msg: String| {
        Error::config(format!(
            "funnels file {source}:{}: {msg}",
            line_of(text, offset)
        ))
    };
    let file: FileToml = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        err(offset, e.message().trim().to_string())
    })?;
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    for f in file.funnel {
        let f = f.into_inner();
        let id_at = f.id.span().start;
        let id = f.id.into_inner();
        if id.trim().is_empty() {
            return Err(err(id_at, "funnel id is empty".into()));
        }
        if !ids.insert(id.clone()) {
            return Err(err(id_at, format!("funnel id '{id}' is defined twice")));
        }
        let window_at = f.window_seconds.span().start;
        let window = *f.window_seconds.get_ref();
        if window <= 0 || window > 366 * 86_400 {
            return Err(err(
                window_at,
                format!(
                    "funnel '{id}': window_seconds = {window}; expected a positive number of seconds (at most a year)"
                ),
            ));
        }
        if f.step.is_empty() {
            return Err(err(
                id_at,
                format!("funnel '{id}' has no [[funnel.step]]; give it at least one"),
            ));
        }
        if f.step.len() > MAX_STEPS {
            return Err(err(
                id_at,
                format!(
                    "funnel '{id}' has {} steps; at most {MAX_STEPS} are supported",
                    f.step.len()
                ),
            ));
        }
        let mut steps = Vec::new();
        for (i, s) in f.step.into_iter().enumerate() {
            let s = s.into_inner();
            let n = i + 1;
            let et_at = s.event_type.span().start;
            let event_type = s.event_type.into_inner();
            if !STEP_EVENT_TYPES.contains(&event_type.as_str()) {
                let why = if event_type == "cors_error" {
                    " (funnels read dwd_trk_event_di, which holds no cors_error events)"
                } else {
                    ""
                };
                return Err(err(
                    et_at,
                    format!(
                        "funnel '{id}' step {n}: event_type '{event_type}' is not one of {}{why}",
                        STEP_EVENT_TYPES.join(", ")
                    ),
                ));
            }
            let page_path = match s.page_path {
                Some(p) if !p.get_ref().starts_with('/') => {
                    return Err(err(
                        p.span().start,
                        format!(
                            "funnel '{id}' step {n}: page_path '{}' is not a normalised path; write it as page_path holds it, starting with '/' (e.g. /devices/{{id}})",
                            p.get_ref()
                        ),
                    ));
                }
                p => p.map(Spanned::into_inner),
            };
            let target_type = match s.target_type {
                Some(t) if !TARGET_TYPES.contains(&t.get_ref().as_str()) => {
                    return Err(err(
                        t.span().start,
                        format!(
                            "funnel '{id}' step {n}: target_type '{}' is not one of {}",
                            t.get_ref(),
                            TARGET_TYPES.join(", ")
                        ),
                    ));
                }
                t => t.map(Spanned::into_inner),
            };
            steps.push(Step {
                event_type,
                page_path,
                target_type,
                target_id: s.target_id.map(Spanned::into_inner),
            });
        }
        out.push(Funnel {
            id,
            window_ms: window * 1000,
            steps,
        });
    }
    Ok(out)
}

impl Funnel {
    /// The step mask of an event of `dwd_trk_event_di`, as an expression:
    /// bit `i` set when the event matches step `i + 1` (its `event_type`
    /// and each of `page_path`, `target_type`, `target_id` it names). The
    /// step's values are literals of the plan, compared as values whatever
    /// they hold.
    pub fn mask(&self) -> Result<Expr> {
        let mut mask = lit(0i64);
        for (i, s) in self.steps.iter().enumerate() {
            let mut matches = col("event_type").eq(lit(s.event_type.as_str()));
            for (column, v) in [
                ("page_path", &s.page_path),
                ("target_type", &s.target_type),
                ("target_id", &s.target_id),
            ] {
                if let Some(v) = v {
                    matches = matches.and(col(column).eq(lit(v.as_str())));
                }
            }
            let bit = when(matches, lit(1i64 << i)).otherwise(lit(0i64))?;
            mask = if i == 0 { bit } else { mask + bit };
        }
        Ok(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::measures::reach;

    fn ev(ts: i64, id: &str, mask: i64) -> (i64, String, i64) {
        (ts, id.to_string(), mask)
    }

    #[test]
    fn order_and_window() {
        // steps: 1 = bit 0, 2 = bit 1, 3 = bit 2; window 10 s
        let w = 10_000;
        // in order within the window: all three
        assert_eq!(
            reach(&mut [ev(0, "a", 1), ev(5, "b", 2), ev(9, "c", 4)], 3, w),
            3
        );
        // step 2 before step 1 does not count
        assert_eq!(
            reach(&mut [ev(0, "a", 2), ev(5, "b", 1), ev(9, "c", 4)], 3, w),
            1
        );
        // last step exactly at the window passes, 1 ms later fails
        assert_eq!(
            reach(
                &mut [ev(0, "a", 1), ev(1, "b", 2), ev(10_000, "c", 4)],
                3,
                w
            ),
            3
        );
        assert_eq!(
            reach(
                &mut [ev(0, "a", 1), ev(1, "b", 2), ev(10_001, "c", 4)],
                3,
                w
            ),
            2
        );
        // a later start fits the window where the first does not
        assert_eq!(
            reach(
                &mut [
                    ev(0, "a", 1),
                    ev(20_000, "b", 1),
                    ev(21_000, "c", 2),
                    ev(25_000, "d", 4)
                ],
                3,
                w
            ),
            3
        );
        // one event cannot be two steps, even when it matches both
        assert_eq!(reach(&mut [ev(0, "a", 3)], 2, w), 1);
        assert_eq!(reach(&mut [ev(0, "a", 3), ev(1, "b", 3)], 2, w), 2);
        // equal timestamps order by event_id
        assert_eq!(reach(&mut [ev(7, "b", 2), ev(7, "a", 1)], 2, w), 2);
        assert_eq!(reach(&mut [ev(7, "a", 2), ev(7, "b", 1)], 2, w), 1);
        // repeats of a step do not advance past it
        assert_eq!(
            reach(&mut [ev(0, "a", 1), ev(1, "b", 1), ev(2, "c", 1)], 3, w),
            1
        );
        assert_eq!(reach(&mut [], 3, w), 0);
        assert_eq!(reach(&mut [ev(0, "a", 2)], 3, w), 0);
    }

    #[test]
    fn parses_the_spec_example() {
        // `tauc-job sample` writes the example of analyses.md
        let text = crate::jobs::sample::SAMPLE_FUNNELS;
        let f = parse("f.toml", text).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].window_ms, 3_600_000);
        assert_eq!(f[0].steps[1].target_id.as_deref(), Some("btn-add-device"));
        assert_eq!(f[0].steps[2].page_path.as_deref(), Some("/devices/{id}"));
        assert_eq!(
            f[0].mask().unwrap().to_string(),
            "CASE WHEN event_type = Utf8(\"page_enter\") AND page_path = Utf8(\"/home\") THEN Int64(1) ELSE Int64(0) END + CASE WHEN event_type = Utf8(\"click\") AND target_id = Utf8(\"btn-add-device\") THEN Int64(2) ELSE Int64(0) END + CASE WHEN event_type = Utf8(\"page_enter\") AND page_path = Utf8(\"/devices/{id}\") THEN Int64(4) ELSE Int64(0) END"
        );
        assert!(parse("f.toml", "").unwrap().is_empty());
    }

    /// A step's values are compared as values: a quote in a target id (any
    /// string is a valid `target.id`) matches that id and nothing else,
    /// and cannot change the mask's plan.
    #[tokio::test]
    async fn a_quote_in_a_step_is_a_value() {
        use datafusion::arrow::array::{AsArray, RecordBatch, StringArray};
        use datafusion::arrow::datatypes::Int64Type;
        use datafusion::prelude::SessionContext;
        use std::sync::Arc;

        let sneaky = "b' OR '1'='1";
        let text = format!(
            "[[funnel]]\nid = \"q'uote\"\nwindow_seconds = 60\n[[funnel.step]]\nevent_type = \"click\"\ntarget_id = \"{sneaky}\"\n[[funnel.step]]\nevent_type = \"page_enter\"\npage_path = \"/it's\"\n"
        );
        let f = parse("f.toml", &text).unwrap();
        assert_eq!(f[0].id, "q'uote");
        let strs = |v: &[Option<&str>]| Arc::new(StringArray::from(v.to_vec()));
        let events = RecordBatch::try_from_iter(vec![
            (
                "event_type",
                strs(&[
                    Some("click"),
                    Some("click"),
                    Some("page_enter"),
                    Some("page_enter"),
                ]) as _,
            ),
            (
                "target_id",
                strs(&[Some(sneaky), Some("b"), None, None]) as _,
            ),
            (
                "page_path",
                strs(&[None, None, Some("/it's"), Some("/its")]) as _,
            ),
            (
                "target_type",
                strs(&[Some("button"), Some("button"), None, None]) as _,
            ),
        ])
        .unwrap();
        let ctx = SessionContext::new();
        let masks = ctx
            .read_batch(events)
            .unwrap()
            .select(vec![f[0].mask().unwrap().alias("m")])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let m: Vec<i64> = masks[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        assert_eq!(m, vec![1, 0, 2, 0]);
    }

    #[test]
    fn bad_files_name_file_and_line() {
        let cases = [
            (
                "[[funnel]]\nid = \"a\"\nwindow_seconds = 60\n[[funnel.step]]\nevent_type = \"cors_error\"\n",
                "funnels file f.toml:5: funnel 'a' step 1: event_type 'cors_error' is not one of page_enter, page_leave, click, impression (funnels read dwd_trk_event_di, which holds no cors_error events)",
            ),
            (
                "[[funnel]]\nid = \"a\"\nwindow_seconds = 0\n[[funnel.step]]\nevent_type = \"click\"\n",
                "funnels file f.toml:3: funnel 'a': window_seconds = 0; expected a positive number of seconds (at most a year)",
            ),
            (
                "[[funnel]]\nid = \"a\"\nwindow_seconds = 60\n",
                "funnels file f.toml:2: funnel 'a' has no [[funnel.step]]; give it at least one",
            ),
            (
                "[[funnel]]\nid = \"a\"\nwindow_seconds = 60\n[[funnel.step]]\nevent_type = \"click\"\npage_path = \"home\"\n",
                "funnels file f.toml:6: funnel 'a' step 1: page_path 'home' is not a normalised path; write it as page_path holds it, starting with '/' (e.g. /devices/{id})",
            ),
            (
                "[[funnel]]\nid = \"a\"\nwindow_seconds = 60\n[[funnel.step]]\nevent_type = \"click\"\n[[funnel]]\nid = \"a\"\nwindow_seconds = 60\n[[funnel.step]]\nevent_type = \"click\"\n",
                "funnels file f.toml:7: funnel id 'a' is defined twice",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse("f.toml", text).unwrap_err().to_string(), want);
        }
        // syntax and unknown keys: the line and the parser's reason
        let e = parse("f.toml", "[[funnel]]\nid = \"a\"\nwindow = 60\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("funnels file f.toml:3: unknown field `window`"),
            "{e}"
        );
        let e = parse("f.toml", "[[funnel]]\nid = \"a\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("funnels file f.toml:2: "), "{e}");
    }
}
