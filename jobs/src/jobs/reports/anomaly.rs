//! CORS spike detection (analyses.md, `ads_mon_cors_anomaly_hh`): physical
//! hour buckets in a region's zone and the robust z-score against the 24
//! buckets before each one.
//!
//! Buckets are aligned to the zone's offset at the event, so a +05:30 zone
//! has buckets starting at :30 UTC, and a DST day has 23 or 25 of them.

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::derive::measures::{buckets_of_day, local_date, local_ms, previous_bucket};

/// Buckets in a baseline.
pub const BASELINE_BUCKETS: usize = 24;
/// Fewest baseline buckets for a z-score.
pub const MIN_BASELINE: usize = 12;

/// Median of values (mean of the middle two when even); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyRow {
    /// `all` or an `err_class`.
    pub series: String,
    /// Bucket start, UTC ms.
    pub hour_start: i64,
    /// Bucket start, local wall clock ms.
    pub hour_start_local: i64,
    /// Errors in the bucket.
    pub errors: i64,
    /// Baseline buckets counted.
    pub baseline_n: i64,
    /// Median of the baseline.
    pub baseline_median: Option<f64>,
    /// Median absolute deviation of the baseline.
    pub mad: Option<f64>,
    /// Robust z-score; `None` below [`MIN_BASELINE`] baseline buckets.
    pub robust_z: Option<f64>,
    /// `robust_z >= 3.5 and errors >= 20`.
    pub is_alert: bool,
}

/// Scores one bucket against its baseline values.
pub fn score(errors: i64, baseline: &[i64]) -> (Option<f64>, Option<f64>, Option<f64>, bool) {
    let mut b: Vec<f64> = baseline.iter().map(|v| *v as f64).collect();
    let med = median(&mut b);
    let mad = med.and_then(|m| {
        let mut dev: Vec<f64> = b.iter().map(|v| (v - m).abs()).collect();
        median(&mut dev)
    });
    let z = match (med, mad) {
        (Some(m), Some(d)) if baseline.len() >= MIN_BASELINE => {
            Some(0.6745 * (errors as f64 - m) / d.max(1.0))
        }
        _ => None,
    };
    let alert = z.is_some_and(|z| z >= 3.5) && errors >= 20;
    (med, mad, z, alert)
}

/// The rows of one `(dt, region)` partition.
///
/// `counts` holds non-bot errors per `(series, bucket start)` for every
/// bucket the rows and their baselines touch; `committed(date)` says
/// whether that local date has a committed `dwd_mon_cors_error_di`
/// partition; `classes` are the err_classes with an error on `dt`.
pub fn partition_rows(
    dt: NaiveDate,
    tz: Tz,
    classes: &BTreeSet<String>,
    counts: &HashMap<(String, i64), i64>,
    committed: impl Fn(NaiveDate) -> bool,
) -> Vec<AnomalyRow> {
    let buckets = buckets_of_day(dt, tz);
    let series = std::iter::once("all".to_string()).chain(classes.iter().cloned());
    let mut rows = Vec::new();
    for s in series {
        let count = |b: i64| counts.get(&(s.clone(), b)).copied().unwrap_or(0);
        for &b in &buckets {
            let mut baseline = Vec::with_capacity(BASELINE_BUCKETS);
            let mut p = b;
            for _ in 0..BASELINE_BUCKETS {
                p = previous_bucket(p, tz);
                if committed(local_date(p, tz)) {
                    baseline.push(count(p));
                }
            }
            let errors = count(b);
            let (baseline_median, mad, robust_z, is_alert) = score(errors, &baseline);
            rows.push(AnomalyRow {
                series: s.clone(),
                hour_start: b,
                hour_start_local: local_ms(b, tz),
                errors,
                baseline_n: baseline.len() as i64,
                baseline_median,
                mad,
                robust_z,
                is_alert,
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::derive::measures::hour_start;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn bucket_counts() {
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(buckets_of_day(d("2024-03-10"), ny).len(), 23);
        assert_eq!(buckets_of_day(d("2024-11-03"), ny).len(), 25);
        assert_eq!(buckets_of_day(d("2024-06-18"), ny).len(), 24);
        let kol: Tz = "Asia/Kolkata".parse().unwrap();
        let b = buckets_of_day(d("2024-06-18"), kol);
        assert_eq!(b.len(), 24);
        // local midnight = 2024-06-17T18:30Z, last bucket 23:00 local = 17:30Z
        assert_eq!(b[0], utc("2024-06-17T18:30:00Z"));
        assert_eq!(b[23], utc("2024-06-18T17:30:00Z"));
        assert_eq!(
            hour_start(utc("2024-06-18T05:29:59.999Z"), kol),
            utc("2024-06-18T04:30:00Z")
        );
        assert_eq!(
            hour_start(utc("2024-06-18T05:30:00Z"), kol),
            utc("2024-06-18T05:30:00Z")
        );
        // NY fall-back: 01:00 EDT and 01:00 EST are two buckets
        let fb = buckets_of_day(d("2024-11-03"), ny);
        assert_eq!(fb[1], utc("2024-11-03T05:00:00Z"));
        assert_eq!(fb[2], utc("2024-11-03T06:00:00Z"));
        assert_eq!(local_ms(fb[1], ny), local_ms(fb[2], ny));
    }

    #[test]
    fn scores() {
        // 24 baseline buckets of 1 error: median 1, mad 0 → divisor 1
        let (m, mad, z, alert) = score(30, &[1; 24]);
        assert_eq!((m, mad), (Some(1.0), Some(0.0)));
        assert!((z.unwrap() - 0.6745 * 29.0).abs() < 1e-9);
        assert!(alert);
        // 19 errors: z high but under 20 errors → no alert
        assert!(!score(19, &[0; 24]).3);
        // even baseline: mean of the middle two; mad likewise
        let (m, mad, _, _) = score(0, &[1, 2, 3, 10, 1, 2, 3, 10, 1, 2, 3, 10]);
        assert_eq!(m, Some(2.5));
        // deviations: 1.5,0.5,0.5,7.5 ×3 → sorted middle two 0.5,1.5 → 1.0
        assert_eq!(mad, Some(1.0));
        // 11 buckets: no z; none: no median
        assert_eq!(score(50, &[0; 11]).2, None);
        assert_eq!(score(50, &[]), (None, None, None, false));
    }
}
