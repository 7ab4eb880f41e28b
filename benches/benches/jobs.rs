//! Whole jobs through the command line a user types, in-process (the
//! embedded default), on sample data of one region:
//! - `layering_day`: `submit layering` of one collection date (ODS + the
//!   five DWD dates it can change), run again and again on one warehouse
//!   (each run replaces the partitions);
//! - `dwd_rebuild`: `submit layering` of an empty collection date next to
//!   four loaded days — its ODS stage lists one empty folder, so the time is
//!   the DWD rebuild of the dates that date can change, over real ODS;
//! - `reports_day`: `submit reports` of one local date over the loaded DWD.

use criterion::{Criterion, criterion_group, criterion_main};
use tauc_benches::{DATE, SampleDir, events_per_day, runtime, tauc};

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let events = events_per_day().to_string();
    let sample = SampleDir::new(&rt, "aps1", 4, events_per_day(), 50).expect("sample data");
    let (raw, wh) = (sample.raw(), sample.warehouse());
    let store = ["--region", "aps1", "--raw-root", &raw, "--warehouse", &wh];
    let submit = |job: &str, date: &str, to: Option<&str>| {
        let mut args = vec!["submit", job, "--date", date];
        if let Some(to) = to {
            args.extend(["--to", to]);
        }
        args.extend(store);
        tauc(&rt, &args).expect("job")
    };
    let mut g = c.benchmark_group("jobs");
    g.sample_size(10);
    g.bench_function(format!("layering_day_{events}"), |b| {
        b.iter(|| submit("layering", DATE, None))
    });
    submit("layering", DATE, Some("2024-06-21"));
    g.bench_function(format!("dwd_rebuild_{events}"), |b| {
        b.iter(|| submit("layering", "2024-06-22", None))
    });
    submit("layering", "2024-06-22", None);
    g.bench_function(format!("reports_day_{events}"), |b| {
        b.iter(|| submit("reports", "2024-06-20", None))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
