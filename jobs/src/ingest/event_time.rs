//! Event time and lateness, as `events.md` ("Event time") defines them.
//!
//! The same functions serve the raw scan (lateness quarantine at ODS load)
//! and the DWD build (through the `tauc_event_ts` UDF), so the two can never
//! disagree.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Every `*_ts` below this is in seconds and is multiplied by 1000.
pub const SECONDS_THRESHOLD: i64 = 100_000_000_000;

/// Applies the seconds rule; `None` when multiplying by 1000 overflows.
pub fn normalise_ts(v: i64) -> Option<i64> {
    if v < SECONDS_THRESHOLD {
        v.checked_mul(1000)
    } else {
        Some(v)
    }
}

/// `event_ts` and whether it was clamped to `collector_ts`.
///
/// With `s = sent_ts` present and `s >= c`, the client's clock offset cancels
/// out: `r - (s - c)`; otherwise the client clock `c` is taken as is. Nothing
/// happens after it is received, so the result is at most `r`.
pub fn event_ts(client_ts: i64, sent_ts: Option<i64>, collector_ts: i64) -> (i64, bool) {
    let ts = match sent_ts {
        Some(s) if s >= client_ts => collector_ts.saturating_sub(s.saturating_sub(client_ts)),
        _ => client_ts,
    };
    if ts > collector_ts {
        (collector_ts, true)
    } else {
        (ts, false)
    }
}

/// Epoch ms of `date` 00:00 UTC.
pub fn day_start_ms(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
}

/// `arrival_ts - event_ts`, where an event cannot have arrived before its
/// collection folder's UTC day started.
pub fn lateness_ms(event_ts: i64, collector_ts: i64, collection_date: NaiveDate) -> i64 {
    collector_ts
        .max(day_start_ms(collection_date))
        .saturating_sub(event_ts)
}

/// The first `collector_ts` that is impossible for a batch written on
/// `collection_date`: the next day, 01:00 UTC.
pub fn collector_ts_limit(collection_date: NaiveDate) -> i64 {
    day_start_ms(collection_date) + DAY_MS + 3_600_000
}

/// Wall-clock time of `ts_ms` in `tz`.
pub fn local_datetime(ts_ms: i64, tz: Tz) -> Option<NaiveDateTime> {
    let utc: DateTime<Utc> = DateTime::from_timestamp_millis(ts_ms)?;
    Some(tz.from_utc_datetime(&utc.naive_utc()).naive_local())
}

/// Local date of `ts_ms` in `tz`.
pub fn local_date(ts_ms: i64, tz: Tz) -> Option<NaiveDate> {
    local_datetime(ts_ms, tz).map(|d| d.date())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn seconds_rule() {
        assert_eq!(normalise_ts(1_718_668_800), Some(1_718_668_800_000));
        assert_eq!(normalise_ts(99_999_999_999), Some(99_999_999_999_000));
        assert_eq!(normalise_ts(100_000_000_000), Some(100_000_000_000));
        assert_eq!(normalise_ts(i64::MIN), None);
    }

    #[test]
    fn offset_cancels_and_clamps() {
        // client clock 10 s behind: sent 1000 ms after the event, received at r.
        assert_eq!(event_ts(5_000, Some(6_000), 20_000), (19_000, false));
        // no sent_ts: client clock as is
        assert_eq!(event_ts(5_000, None, 20_000), (5_000, false));
        // sent before the event: ignore sent
        assert_eq!(event_ts(5_000, Some(4_000), 20_000), (5_000, false));
        // client clock ahead of the collector: clamp
        assert_eq!(event_ts(30_000, None, 20_000), (20_000, true));
    }

    #[test]
    fn lateness_counts_from_folder_day() {
        let c = d("2024-06-18");
        let start = day_start_ms(c);
        // collected before the folder's day: arrival is the day start
        assert_eq!(lateness_ms(start - 10_000, start - 5_000, c), 10_000);
        assert_eq!(lateness_ms(start + 1_000, start + 4_000, c), 3_000);
        assert_eq!(collector_ts_limit(c) - start, DAY_MS + 3_600_000);
    }

    #[test]
    fn kolkata_midnight() {
        // 2024-06-17 18:30:00 UTC is 2024-06-18 00:00 in Kolkata
        let ts = day_start_ms(d("2024-06-17")) + 18 * 3_600_000 + 30 * 60_000;
        assert_eq!(
            local_date(ts, chrono_tz::Asia::Kolkata),
            Some(d("2024-06-18"))
        );
        assert_eq!(
            local_date(ts - 1, chrono_tz::Asia::Kolkata),
            Some(d("2024-06-17"))
        );
    }
}
