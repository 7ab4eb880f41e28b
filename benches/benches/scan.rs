//! The raw scan alone (list, fetch, classify, build Arrow batches; nothing
//! written) of one region-day folder, from the local disk and from a local
//! S3 server (`s3s-fs`, when `scripts/install-test-tools` has installed it),
//! on a plain DataFusion context with the engine's runtime: what the ODS
//! stage costs before the Parquet writer. Then the listing cost: the same
//! scan over a folder of 10 000 one-line files (and 200 000 with
//! `BENCH_LARGE=1`), where the per-object work dominates, and the planning
//! of that scan alone (what the scheduler does before any task runs).

use std::sync::Arc;

use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::functions_aggregate::count::count_all;
use datafusion::prelude::SessionContext;
use tauc_benches::{DATE, S3Server, SampleDir, events_per_day, large, runtime};
use tauc_jobs::engine::session::{Engine, session_config};
use tauc_jobs::ingest::raw_scan::{Folder, RawEventsTable, RawSource};
use tauc_jobs::store::{Location, S3Options};

/// The count over the raw scan of one folder, as the ODS stage plans it.
fn scan_frame(engine: &Engine, folder: Location) -> datafusion::prelude::DataFrame {
    let ctx = datafusion_ctx(engine);
    let table = RawEventsTable {
        source: RawSource {
            folders: vec![Folder {
                region: "aps1".into(),
                date: DATE.parse::<NaiveDate>().expect("date"),
                location: folder,
            }],
            ranges: 4,
            fetch_concurrency: 32,
            lateness_days: 2,
        },
        objects: None,
    };
    ctx.read_table(Arc::new(table))
        .expect("raw table")
        .aggregate(vec![], vec![count_all()])
        .expect("count")
}

/// Rows the scan produced (valid + rejected lines, plus stats rows).
async fn scan(engine: &Engine, folder: Location) -> usize {
    let batches = scan_frame(engine, folder).collect().await.expect("scan");
    batches.iter().map(|b| b.num_rows()).sum()
}

/// Plans the scan without running it: the folder's work items (its key
/// ranges), not its objects, are what planning sees, so this should not
/// grow with the number of files.
async fn plan(engine: &Engine, folder: Location) -> usize {
    let plan = scan_frame(engine, folder)
        .create_physical_plan()
        .await
        .expect("plan");
    plan.properties().output_partitioning().partition_count()
}

fn datafusion_ctx(engine: &Engine) -> SessionContext {
    let state = engine.state(session_config()).expect("session state");
    SessionContext::new_with_state(state)
}

fn folder_of(raw: &str) -> String {
    format!("{raw}/uat/aps1/2024/06/18")
}

fn bench_day(c: &mut Criterion) {
    let rt = runtime();
    let sample = SampleDir::new(&rt, "aps1", 1, events_per_day(), 50).expect("sample data");
    let bytes: u64 = sample
        .raw_files()
        .expect("raw files")
        .iter()
        .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    let local = Engine::new(S3Options::default()).expect("engine");
    let mut g = c.benchmark_group("raw_scan_day");
    g.sample_size(10).throughput(Throughput::Bytes(bytes));
    let folder = Location::parse(&folder_of(&sample.raw())).expect("folder");
    g.bench_function("local_disk", |b| {
        b.iter(|| rt.block_on(scan(&local, folder.clone())))
    });
    // s3s-fs serves the work directory: its `raw` folder is bucket `raw`.
    match S3Server::start(sample.path()).expect("s3s-fs") {
        Some(server) => {
            let s3 = Engine::new(S3Options {
                endpoint: Some(server.endpoint.clone()),
                allow_http: Some(true),
                ..S3Options::default()
            })
            .expect("engine");
            let folder = Location::parse(&folder_of("s3://raw")).expect("folder");
            g.bench_function("local_s3", |b| {
                b.iter(|| rt.block_on(scan(&s3, folder.clone())))
            });
        }
        None => eprintln!("raw_scan_day/local_s3 skipped: run scripts/install-test-tools"),
    }
    g.finish();
}

fn bench_listing(c: &mut Criterion) {
    let rt = runtime();
    let local = Engine::new(S3Options::default()).expect("engine");
    let mut sizes = vec![10_000u32];
    if large() {
        sizes.push(200_000);
    }
    let mut g = c.benchmark_group("raw_scan_small_files");
    g.sample_size(10);
    for n in sizes {
        let sample = SampleDir::new(&rt, "aps1", 1, n, 1).expect("sample data");
        let folder = Location::parse(&folder_of(&sample.raw())).expect("folder");
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("plan_{n}"), |b| {
            b.iter(|| rt.block_on(plan(&local, folder.clone())))
        });
        g.bench_function(format!("files_{n}"), |b| {
            b.iter(|| rt.block_on(scan(&local, folder.clone())))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_day, bench_listing);
criterion_main!(benches);
