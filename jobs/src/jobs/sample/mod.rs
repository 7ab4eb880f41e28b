//! Sample data in the contract's raw layout, so a newcomer has something
//! to run on and the benchmarks something of the business's shape: days of
//! events per region in files of ~50 lines, with every dirty case of
//! events.md mixed in (blank lines, CRLF, a BOM, a missing final newline,
//! over-long and malformed lines, missing and wrong-typed fields,
//! impossible and late timestamps, seconds and string timestamps,
//! re-deliveries across files and days, bots, CORS failures, hash-routed
//! URLs, a stray non-message object), plus the DIM files.
//!
//! Two shapes: the toy one (40 users, a handful of targets and pages; the
//! tests' and the README's), and the business's ([`business`]: millions of
//! users, Zipf-skewed activity, sessions walking the funnels), the default
//! from 1 M events a day or whenever a population count is given.
//!
//! Deterministic: the same arguments write the same bytes.

mod business;
mod dims;
mod dirty;
mod toy;

pub use self::business::Population;
pub use self::dims::SAMPLE_FUNNELS;

use chrono::{Days, NaiveDate};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::engine::session::Engine;
use crate::error::Result;
use crate::ingest::event_time::day_start_ms;
use crate::store::Location;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SampleArgs {
    /// First UTC collection date.
    pub date: NaiveDate,
    /// Number of days.
    pub days: u32,
    /// Clean events per region and day (dirty lines come on top).
    pub events_per_day: u32,
    /// Regions.
    pub regions: Vec<String>,
    /// Environment segment.
    pub env: String,
    /// Where raw files go.
    pub raw_root: Location,
    /// Where DIM files go (`{warehouse}/dim/...`); none skips them.
    pub warehouse: Option<Location>,
    /// Lines per file.
    pub lines_per_file: usize,
    /// The toy shape (`None`) or the business's.
    pub population: Option<Population>,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleReport {
    /// Raw objects written (message files and strays).
    pub files: usize,
    /// Lines written, blank ones included.
    pub lines: usize,
}

/// A line and its collection time (ms).
type TimedLine = (i64, Vec<u8>);

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    /// The generator of one region's day.
    fn for_day(day0: i64, region: &str) -> Rng {
        let offset: u64 = region.bytes().map(u64::from).sum();
        Rng(day0 as u64 ^ offset << 32)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// Raw objects written at once.
const PUTS_AT_ONCE: usize = 16;

/// Writes the sample.
pub async fn write(engine: &Engine, args: &SampleArgs) -> Result<SampleReport> {
    let mut report = SampleReport::default();
    let store = engine.registry.for_location(&args.raw_root)?;
    for d in 0..args.days {
        let day = args.date + Days::new(u64::from(d));
        for region in &args.regions {
            let lines = day_lines(args, region, day, d == 0);
            let folder =
                args.raw_root
                    .join(&format!("{}/{region}/{}", args.env, day.format("%Y/%m/%d")));
            let (files, n) =
                write_files(store.as_ref(), &folder, lines, args.lines_per_file).await?;
            report.files += files;
            report.lines += n;
        }
    }
    if let Some(wh) = &args.warehouse {
        match &args.population {
            None => dims::write_toy(engine, wh, args.date).await?,
            Some(pop) => dims::write_business(engine, wh, args.date, pop).await?,
        }
    }
    Ok(report)
}

/// One region's day in collection-time order: its clean lines, retries
/// and re-deliveries, and the dirty cases.
fn day_lines(
    args: &SampleArgs,
    region: &str,
    day: NaiveDate,
    first: bool,
) -> Box<dyn Iterator<Item = TimedLine> + Send> {
    let day0 = day_start_ms(day);
    let dirty = dirty::timed(region, day0, day);
    match &args.population {
        None => {
            let mut lines = toy::day(region, day0, first, args.events_per_day);
            lines.extend(dirty);
            // stable: equal times keep the order they were made in
            lines.sort_by_key(|(ts, _)| *ts);
            Box::new(lines.into_iter())
        }
        Some(pop) => {
            let clean = business::Day::new(pop, region, day0, u64::from(args.events_per_day));
            let mut extra = dirty;
            // yesterday's first events, re-delivered a minute into today
            if !first {
                let prev0 = day0 - 86_400_000;
                let prev = business::Day::new(pop, region, prev0, u64::from(args.events_per_day));
                extra.extend(prev.take(3).map(|(_, l)| (day0 + 60_000, l)));
            }
            extra.sort_by_key(|(ts, _)| *ts);
            Box::new(merge(clean, extra))
        }
    }
}

/// Two collection-ordered streams as one.
fn merge(
    a: impl Iterator<Item = TimedLine> + Send,
    b: Vec<TimedLine>,
) -> impl Iterator<Item = TimedLine> + Send {
    let mut a = a.peekable();
    let mut b = b.into_iter().peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y.0 < x.0 => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

/// Writes `lines` into `folder` as message files of `per_file` lines
/// (named by their first line's time, as the uploader names them) and a
/// stray offsets file; returns the objects and lines written.
async fn write_files(
    store: &dyn ObjectStore,
    folder: &Location,
    lines: Box<dyn Iterator<Item = TimedLine> + Send>,
    per_file: usize,
) -> Result<(usize, usize)> {
    let per_file = per_file.max(1);
    let mut lines = lines.peekable();
    let mut f = 0usize;
    let bodies = std::iter::from_fn(move || {
        lines.peek()?;
        let chunk: Vec<TimedLine> = lines.by_ref().take(per_file).collect();
        let file = message_file(f, &chunk);
        f += 1;
        Some(file)
    });
    let puts = futures::stream::iter(bodies).map(|(name, body, n)| async move {
        let key = format!("{}/{name}", folder.prefix);
        store
            .put(&key.as_str().into(), PutPayload::from(body))
            .await?;
        Ok::<_, crate::error::Error>(n)
    });
    let counts: Vec<usize> = puts.buffered(PUTS_AT_ONCE).try_collect().await?;
    let stray = format!("{}/_kafka_offsets.json", folder.prefix);
    store
        .put(
            &stray.as_str().into(),
            PutPayload::from(b"{\"offset\": 1}".to_vec()),
        )
        .await?;
    Ok((counts.len() + 1, counts.iter().sum()))
}

/// File `f` of a folder: its name, bytes and line count (blank ones
/// included). Its formats vary by `f`: a BOM on the first, CRLF on every
/// third, no final newline on the next, blank lines after the first line
/// of every fourth.
fn message_file(f: usize, chunk: &[TimedLine]) -> (String, Vec<u8>, usize) {
    let first_ts = chunk[0].0;
    let mut body: Vec<u8> = Vec::new();
    let mut n = chunk.len();
    if f == 0 {
        body.extend_from_slice(b"\xEF\xBB\xBF");
    }
    for (i, (_, l)) in chunk.iter().enumerate() {
        body.extend_from_slice(l);
        match (f % 3, i + 1 == chunk.len()) {
            (1, _) => body.extend_from_slice(b"\r\n"),
            (2, true) => {} // no final newline
            _ => body.push(b'\n'),
        }
        if f.is_multiple_of(4) && i == 0 {
            body.extend_from_slice(b"\n  \t\n");
            n += 2;
        }
    }
    (format!("messages-{first_ts}-{f:04}.txt"), body, n)
}
