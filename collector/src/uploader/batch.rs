//! One partition's batch of consecutive records and the object it becomes
//! (collection.md "The uploader"): where a batch is cut, what its object
//! is called, and how a record becomes a line.

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate};

/// Where batches are cut.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// Records per object at most (`--max-lines`).
    pub max_lines: usize,
    /// Bytes per object at most (`--max-bytes`); a single bigger record
    /// still makes an object of its own.
    pub max_bytes: usize,
    /// Longest a batch waits for more records (`--max-wait`).
    pub max_wait: Duration,
}

impl Default for Cut {
    fn default() -> Self {
        Cut {
            max_lines: 50,
            max_bytes: 2 << 20,
            max_wait: Duration::from_secs(60),
        }
    }
}

/// Consecutive records of one partition, as the object's bytes.
#[derive(Debug)]
pub struct Batch {
    /// Kafka partition.
    pub partition: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Record timestamp of the first record, epoch ms.
    pub first_ts: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Records in the batch.
    pub lines: usize,
    /// The object's bytes: one line per record.
    pub body: Vec<u8>,
    day: NaiveDate,
    started: Instant,
}

impl Batch {
    /// A batch starting with one record.
    pub fn new(partition: i32, offset: i64, ts: i64, value: &[u8]) -> Batch {
        let mut b = Batch {
            partition,
            first_offset: offset,
            first_ts: ts,
            last_offset: offset,
            lines: 0,
            body: Vec::new(),
            day: utc_day(ts),
            started: Instant::now(),
        };
        b.push(offset, value);
        b
    }

    /// Whether a record of `len` bytes at `ts` may join: same UTC date as
    /// the first, and within the line and byte limits.
    pub fn takes(&self, ts: i64, len: usize, cut: &Cut) -> bool {
        utc_day(ts) == self.day
            && self.lines < cut.max_lines
            && self.body.len() + len < cut.max_bytes
    }

    /// Adds a record.
    pub fn push(&mut self, offset: i64, value: &[u8]) {
        push_line(&mut self.body, value);
        self.last_offset = offset;
        self.lines += 1;
    }

    /// Whether no further record can join by size.
    pub fn is_full(&self, cut: &Cut) -> bool {
        self.lines >= cut.max_lines || self.body.len() >= cut.max_bytes
    }

    /// Whether the batch has waited `max_wait`.
    pub fn is_due(&self, cut: &Cut) -> bool {
        self.started.elapsed() >= cut.max_wait
    }

    /// The object key under the raw root.
    pub fn key(&self, env: &str, region: &str) -> String {
        object_key(
            env,
            region,
            self.first_ts,
            self.partition,
            self.first_offset,
        )
    }
}

/// `{env}/{region}/{yyyy}/{mm}/{dd}/messages-{first_ts}-{partition}-{first_offset}.txt`,
/// the date being the UTC date of `first_ts` (13 digits).
pub fn object_key(
    env: &str,
    region: &str,
    first_ts: i64,
    partition: i32,
    first_offset: i64,
) -> String {
    let day = utc_day(first_ts);
    format!(
        "{env}/{region}/{}/messages-{first_ts:013}-{partition}-{first_offset}.txt",
        day.format("%Y/%m/%d")
    )
}

/// Appends a record as one line: a raw CR or LF becomes a space (in valid
/// JSON they can only be whitespace between tokens), nothing else changes.
pub fn push_line(out: &mut Vec<u8>, value: &[u8]) {
    out.extend(
        value
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    out.push(b'\n');
}

/// Lines in an object written by [`push_line`].
pub fn count_lines(body: &[u8]) -> usize {
    body.iter().filter(|&&b| b == b'\n').count()
}

fn utc_day(ts: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(ts)
        .unwrap_or_default()
        .date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_layout() {
        // 2024-06-18T00:00:00.123Z
        assert_eq!(
            object_key("uat", "aps1", 1_718_668_800_123, 3, 420),
            "uat/aps1/2024/06/18/messages-1718668800123-3-420.txt"
        );
        assert_eq!(
            object_key("prd", "euw1", 86_399_999, 0, 0),
            "prd/euw1/1970/01/01/messages-0000086399999-0-0.txt"
        );
    }

    #[test]
    fn batches_cut_at_lines_bytes_and_midnight() {
        let cut = Cut {
            max_lines: 3,
            max_bytes: 20,
            max_wait: Duration::from_secs(60),
        };
        let midnight = 1_718_668_800_000;
        let mut b = Batch::new(0, 10, midnight - 2, b"{\"a\":1}");
        assert!(b.takes(midnight - 1, 4, &cut));
        assert!(
            !b.takes(midnight, 4, &cut),
            "a batch never spans a UTC midnight"
        );
        b.push(11, b"{\"b\":\n2}");
        assert_eq!(b.body, b"{\"a\":1}\n{\"b\": 2}\n");
        assert!(!b.takes(midnight - 1, 4, &cut), "20 bytes at most");
        assert!(b.takes(midnight - 1, 2, &cut));
        b.push(12, b"{}");
        assert!(b.is_full(&cut));
        assert_eq!((b.first_offset, b.last_offset, b.lines), (10, 12, 3));
        assert_eq!(count_lines(&b.body), 3);
        assert_eq!(
            b.key("uat", "aps1"),
            "uat/aps1/2024/06/17/messages-1718668799998-0-10.txt"
        );
        let big = Batch::new(1, 0, midnight, &[b'x'; 50]);
        assert!(
            big.is_full(&cut),
            "one record over max-bytes is an object of its own"
        );
    }
}
