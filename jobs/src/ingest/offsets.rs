//! Where an incremental run starts listing a raw folder (design.md,
//! "Offset listings"): after the keys already loaded, so that a run's
//! LIST requests grow with the objects that arrived since the last run,
//! not with the day.
//!
//! What it relies on: the uploader names a batch
//! `messages-{first_ts}-{partition}-{first_offset}.txt` (collection.md,
//! "The uploader"), `first_ts` 13 digits, so keys sort by `first_ts`; and
//! one partition's batches are written strictly in order, so a partition's
//! next batch starts at or after its newest batch's `first_ts`, less the
//! disorder of record timestamps inside a partition (collectors' clocks,
//! a shipper's backlog: the skew allowance `S`). So the start is the
//! oldest of the partitions' newest `first_ts` loaded, less `S` — taken
//! over the partitions active within the guard `G` of the newest one, so
//! that a stopped partition holds the start back for `G` at most. What
//! can still sort below the start — a batch more than `S` out of order,
//! an uploader down for longer than `G`, objects under other names — is
//! found by the periodic full listing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate};

use crate::warehouse::lineage::Listing;

/// The rules of the offset listings; every one a setting
/// (`--listing-guard`, `--listing-skew`, `--full-listing-every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingRules {
    /// `G`: a Kafka partition whose newest batch loaded is older than the
    /// folder's newest by more than this no longer holds the start back.
    pub guard: Duration,
    /// `S`: how far before a partition's newest `first_ts` its next batch
    /// may start.
    pub skew: Duration,
    /// How often each folder is listed whole (the catch-all for objects
    /// sorting below the start).
    pub full_every: Duration,
}

/// Default `G`.
pub const DEFAULT_GUARD: Duration = Duration::from_secs(15 * 60);
/// Default `S`.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(2 * 60);
/// Default full-listing period.
pub const DEFAULT_FULL_EVERY: Duration = Duration::from_secs(3600);

impl Default for ListingRules {
    fn default() -> ListingRules {
        ListingRules {
            guard: DEFAULT_GUARD,
            skew: DEFAULT_SKEW,
            full_every: DEFAULT_FULL_EVERY,
        }
    }
}

/// `(first_ts, partition)` of an uploader-named batch of the folder of
/// `date`: `messages-{13 digits}-{digits}-{digits}.txt` whose `first_ts`
/// lies in that UTC day (the uploader's folder for it). Anything else —
/// other names, and a batch copied in from another day, whose key says
/// nothing about this folder's order — is `None`.
pub fn uploader_key(name: &str, date: NaiveDate) -> Option<(i64, u32)> {
    let rest = name.strip_prefix("messages-")?.strip_suffix(".txt")?;
    let mut parts = rest.split('-');
    let (ts, partition, offset) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if parts.next().is_some() || ts.len() != 13 || !digits(ts) || !digits(offset) {
        return None;
    }
    if !digits(partition) {
        return None;
    }
    let ts: i64 = ts.parse().ok()?;
    let partition: u32 = partition.parse().ok()?;
    let day = DateTime::from_timestamp_millis(ts)?.date_naive();
    (day == date).then_some((ts, partition))
}

/// The name (under the folder) a partial listing starts after, from the
/// newest `first_ts` loaded per partition; `None` (list it whole) when no
/// uploader-named batch is loaded yet.
pub fn start_after(newest: &BTreeMap<String, i64>, rules: &ListingRules) -> Option<String> {
    let top = *newest.values().max()?;
    let guard = millis(rules.guard);
    let oldest_active = newest
        .values()
        .copied()
        .filter(|&t| t >= top.saturating_sub(guard))
        .min()?;
    let start = oldest_active.saturating_sub(millis(rules.skew)).max(0);
    // `messages-{ts}` sorts just below every `messages-{ts}-…` key
    Some(format!("messages-{start:013}"))
}

/// Where this run lists the folder from: `None` for a full listing — when
/// the partition has no listing state, no full listing is known, or the
/// last one began `full_every` or more before `now` (epoch ms).
pub fn listing_start(
    state: Option<&Listing>,
    last_full: Option<i64>,
    now: i64,
    rules: &ListingRules,
) -> Option<String> {
    let state = state?;
    let since = now.checked_sub(last_full?)?;
    // a clock that went back is no evidence of a recent full listing
    if since < 0 || since >= millis(rules.full_every) {
        return None;
    }
    start_after(&state.newest, rules)
}

/// The listing state after a listing from `start` (`None`: full) that saw
/// the batches `batches` (names under the folder; for a partial listing,
/// at least the new ones) and the ignored objects `ignored`: the newest
/// `first_ts` per partition merged in, and the ignored names at or below
/// the start kept, the rest replaced by what this listing saw.
pub fn next_listing<'a>(
    previous: Option<&Listing>,
    start: Option<&str>,
    date: NaiveDate,
    batches: impl IntoIterator<Item = &'a str>,
    ignored: &[String],
) -> Listing {
    let mut newest = previous.map(|l| l.newest.clone()).unwrap_or_default();
    for (ts, partition) in batches.into_iter().filter_map(|n| uploader_key(n, date)) {
        let t = newest.entry(partition.to_string()).or_insert(ts);
        *t = (*t).max(ts);
    }
    let kept = match (previous, start) {
        (Some(p), Some(s)) => p
            .ignored
            .iter()
            .filter(|n| n.as_str() <= s)
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    let ignored: BTreeSet<String> = kept.into_iter().chain(ignored.iter().cloned()).collect();
    Listing {
        newest,
        ignored: ignored.into_iter().collect(),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: &str = "2024-06-18";
    /// 2024-06-18T12:00:00Z
    const NOON: i64 = 1_718_712_000_000;

    fn day() -> NaiveDate {
        DAY.parse().unwrap()
    }

    fn by_partition(pairs: &[(u32, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(p, t)| (p.to_string(), *t)).collect()
    }

    fn rules() -> ListingRules {
        ListingRules {
            guard: Duration::from_secs(600),
            skew: Duration::from_secs(60),
            full_every: Duration::from_secs(3600),
        }
    }

    #[test]
    fn an_uploader_key_is_read_only_in_its_own_day() {
        let name = format!("messages-{NOON}-3-42.txt");
        assert_eq!(uploader_key(&name, day()), Some((NOON, 3)));
        // a batch of the next day copied into this folder
        let next = format!("messages-{}-3-42.txt", NOON + 86_400_000);
        assert_eq!(uploader_key(&next, day()), None);
        for other in [
            "messages-x.txt",
            "messages-9171871200000-3-42.txt",
            "messages-171871200000-3-42.txt",
            "messages-1718712000000-3.txt",
            "messages-1718712000000-3-42-1.txt",
            "messages-1718712000000--42.txt",
            "messages-1718712000000-a-42.txt",
            "messages-1718712000000-3-42.json",
            "notes-1718712000000-3-42.txt",
            "messages-0000000000000-x.txt",
        ] {
            assert_eq!(uploader_key(other, day()), None, "{other}");
        }
    }

    #[test]
    fn the_start_is_the_oldest_active_partition_less_the_skew() {
        let newest = by_partition(&[(0, NOON), (1, NOON - 30_000), (2, NOON - 5_000)]);
        let start = start_after(&newest, &rules()).unwrap();
        assert_eq!(start, format!("messages-{}", NOON - 30_000 - 60_000));
        // every key of partition 1 from its newest on sorts above it
        let next = format!("messages-{}-1-0.txt", NOON - 30_000);
        assert!(next > start);
        // so does a batch up to S out of order
        let early = format!("messages-{}-1-0.txt", NOON - 30_000 - 60_000);
        assert!(early > start);
        assert!(format!("messages-{}-1-0.txt", NOON - 30_000 - 60_001) < start);
    }

    #[test]
    fn a_partition_idle_beyond_the_guard_stops_holding_the_start() {
        let lagging = NOON - 600_000; // exactly G behind: still active
        let newest = by_partition(&[(0, NOON), (1, lagging)]);
        let start = start_after(&newest, &rules()).unwrap();
        assert_eq!(start, format!("messages-{}", lagging - 60_000));
        let stopped = by_partition(&[(0, NOON), (1, lagging - 1)]);
        let start = start_after(&stopped, &rules()).unwrap();
        assert_eq!(start, format!("messages-{}", NOON - 60_000));
    }

    #[test]
    fn the_start_never_goes_below_zero_and_names_sorting_low_stay_below_it() {
        let newest = by_partition(&[(0, 10)]);
        assert_eq!(
            start_after(&newest, &rules()).unwrap(),
            "messages-0000000000000"
        );
        let start = start_after(&by_partition(&[(0, NOON)]), &rules()).unwrap();
        for low in ["messages-0000000000000-x.txt", "messages-1.txt", "a.json"] {
            assert!(low < start.as_str(), "{low}");
        }
        // these sort above every uploader key: a partial listing sees them
        for high in [
            "messages-x.txt",
            "messages-9171871200000-3-42.txt",
            "zz.json",
        ] {
            assert!(high > start.as_str(), "{high}");
        }
        assert_eq!(start_after(&BTreeMap::new(), &rules()), None);
    }

    #[test]
    fn a_full_listing_is_due_without_state_or_after_the_period() {
        let state = Listing {
            newest: by_partition(&[(0, NOON)]),
            ignored: Vec::new(),
        };
        let r = rules();
        let now = NOON + 1000;
        assert!(listing_start(Some(&state), Some(now - 10), now, &r).is_some());
        assert_eq!(listing_start(None, Some(now - 10), now, &r), None);
        assert_eq!(listing_start(Some(&state), None, now, &r), None);
        assert_eq!(
            listing_start(Some(&state), Some(now - 3_600_000), now, &r),
            None
        );
        assert_eq!(listing_start(Some(&state), Some(now + 10), now, &r), None);
        let empty = Listing::default();
        assert_eq!(listing_start(Some(&empty), Some(now - 10), now, &r), None);
    }

    #[test]
    fn ignored_names_below_the_start_are_kept_the_rest_replaced() {
        let previous = Listing {
            newest: by_partition(&[(0, NOON - 1)]),
            ignored: vec!["a.json".into(), "messages-x.txt".into(), "z".into()],
        };
        let start = format!("messages-{}", NOON - 60_000);
        let batch = format!("messages-{NOON}-0-9.txt");
        let seen = vec!["y".to_string()];
        let next = next_listing(
            Some(&previous),
            Some(&start),
            day(),
            [batch.as_str()],
            &seen,
        );
        assert_eq!(next.ignored, vec!["a.json".to_string(), "y".into()]);
        assert_eq!(next.newest, by_partition(&[(0, NOON)]));
        // a full listing resets the set
        let full = next_listing(Some(&previous), None, day(), [], &seen);
        assert_eq!(full.ignored, seen);
        assert_eq!(full.newest, previous.newest);
    }
}
