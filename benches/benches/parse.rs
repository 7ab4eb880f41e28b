//! The parse floor: line classification and parsing of one region-day of
//! sample lines held in memory, one core, no I/O. `classify` is what the raw
//! scan does per line (the checks of events.md and the typed ODS event);
//! `json_dom` parses each line into a `serde_json::Value` and nothing more,
//! the floor of any DOM-based decoder.

use std::hint::black_box;

use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tauc_benches::{DATE, SampleDir, events_per_day, runtime};
use tauc_jobs::ingest::event::{LineContext, LineOutcome, classify_line, is_blank, split_lines};

fn lines() -> (Vec<Vec<u8>>, NaiveDate) {
    let rt = runtime();
    let sample = SampleDir::new(&rt, "aps1", 1, events_per_day(), 50).expect("sample data");
    let mut out = Vec::new();
    for f in sample.raw_files().expect("raw files") {
        let data = std::fs::read(&f).expect("raw file");
        out.extend(
            split_lines(&data)
                .filter(|l| !is_blank(l))
                .map(<[u8]>::to_vec),
        );
    }
    (out, DATE.parse().expect("date"))
}

fn bench(c: &mut Criterion) {
    let (lines, date) = lines();
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let ctx = LineContext {
        collection_date: date,
        lateness_days: 2,
    };
    let classify = |lines: &[Vec<u8>]| {
        let mut valid = 0usize;
        for l in lines {
            if matches!(classify_line(l, &ctx), LineOutcome::Valid(_)) {
                valid += 1;
            }
        }
        valid
    };
    let dom = |lines: &[Vec<u8>]| {
        lines
            .iter()
            .filter(|l| serde_json::from_slice::<serde_json::Value>(l).is_ok())
            .count()
    };
    let mut g = c.benchmark_group("parse_bytes");
    g.sample_size(10)
        .throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("classify", |b| b.iter(|| black_box(classify(&lines))));
    g.bench_function("json_dom", |b| b.iter(|| black_box(dom(&lines))));
    g.finish();
    let mut g = c.benchmark_group("parse_events");
    g.sample_size(10)
        .throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("classify", |b| b.iter(|| black_box(classify(&lines))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
