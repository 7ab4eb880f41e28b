//! Pure measures the reports compute per group, wrapped as UDFs by
//! `engine::plan::udf`: the hour bucket of an instant in a region's zone
//! (`ads_mon_cors_anomaly_hh`), how far a user gets through a funnel, and
//! how many of a user's clicks on a target are duplicates. They live here,
//! below the engine, so the engine never imports a job.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// Clicks closer than this to the previous counted click are duplicates.
pub const DUP_CLICK_MS: i64 = 30_000;

/// The zone's UTC offset at an instant, in ms.
fn offset_ms(ts: i64, tz: Tz) -> i64 {
    let utc = DateTime::from_timestamp_millis(ts)
        .unwrap_or_default()
        .naive_utc();
    tz.offset_from_utc_datetime(&utc).fix().local_minus_utc() as i64 * 1000
}

/// The start of the hour bucket holding `ts` (ms since the epoch, UTC).
pub fn hour_start(ts: i64, tz: Tz) -> i64 {
    ts - (ts + offset_ms(ts, tz)).rem_euclid(HOUR_MS)
}

/// The local date of an instant.
pub fn local_date(ts: i64, tz: Tz) -> NaiveDate {
    DateTime::from_timestamp_millis(ts)
        .unwrap_or_default()
        .with_timezone(&tz)
        .date_naive()
}

/// The local wall-clock time of an instant, as ms since the epoch.
pub fn local_ms(ts: i64, tz: Tz) -> i64 {
    ts + offset_ms(ts, tz)
}

/// Every bucket start whose local date is `dt`, in order.
pub fn buckets_of_day(dt: NaiveDate, tz: Tz) -> Vec<i64> {
    let midnight = dt
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_millis();
    // every quarter hour from 15 h before UTC midnight to 15 h after the
    // next: wider than any zone offset
    let mut out = BTreeSet::new();
    let mut t = midnight - 15 * HOUR_MS;
    while t < midnight + 39 * HOUR_MS {
        let b = hour_start(t, tz);
        if local_date(b, tz) == dt {
            out.insert(b);
        }
        t += HOUR_MS / 4;
    }
    out.into_iter().collect()
}

/// The bucket before the one starting at `b`.
pub fn previous_bucket(b: i64, tz: Tz) -> i64 {
    hour_start(b - 1, tz)
}

/// How many of one user's clicks on one target are duplicates: in
/// `(ts, event_id)` order, a click less than [`DUP_CLICK_MS`] after the
/// previous non-duplicate click is one.
pub fn dup_clicks(clicks: &mut [(i64, String)]) -> i64 {
    clicks.sort();
    let mut last: Option<i64> = None;
    let mut dups = 0;
    for (ts, _) in clicks.iter() {
        match last {
            Some(l) if ts - l < DUP_CLICK_MS => dups += 1,
            _ => last = Some(*ts),
        }
    }
    dups
}

/// How many steps one user reaches: the largest `k` such that events
/// `e1 < … < ek` (in `(event_ts, event_id)` order) match steps `1..=k` and
/// `ek.ts - e1.ts <= window_ms`. `events` are `(ts, event_id, mask)`.
///
/// For each candidate first event the steps are matched greedily at the
/// earliest later event, which makes every `e_k` as early as it can be,
/// so no other choice passes the window where the greedy one fails.
pub fn reach(events: &mut [(i64, String, i64)], steps: usize, window_ms: i64) -> usize {
    events.sort();
    let mut best = 0;
    for s in 0..events.len() {
        if events[s].2 & 1 == 0 {
            continue;
        }
        let start = events[s].0;
        let mut k = 1;
        for e in &events[s + 1..] {
            if k >= steps || e.0 - start > window_ms {
                break;
            }
            if e.2 & (1 << k) != 0 {
                k += 1;
            }
        }
        best = best.max(k);
        if best >= steps {
            break;
        }
    }
    best
}
