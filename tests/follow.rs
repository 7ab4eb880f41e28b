//! `tauc-job follow`: incremental daily micro-batches as a service. Across
//! a simulated midnight UTC (its clock injected), a SIGKILL and restart,
//! and a manual incremental run beside it, it loads every object
//! delivered exactly once and its tables equal a full run over them all
//! (`full_run.rs`); its metrics count what it did.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tauc_jobs::warehouse::commit::Manifest;
use tauc_jobs::warehouse::tables::Table;

use crate::full_run::*;
use crate::harness::*;

/// Midnight UTC between two of the sample's collection dates.
const MIDNIGHT: &str = "2024-06-19T00:00:00Z";
/// How long before midnight the service's clock starts: enough for the
/// first batches (engine start included) to load the first slice.
const LEAD: Duration = Duration::from_secs(60);

/// The test's picture of the service's clock: `MIDNIGHT - LEAD` at `t0`,
/// running at the real rate.
struct TestClock {
    start: DateTime<Utc>,
    t0: Instant,
}

impl TestClock {
    fn now(&self) -> DateTime<Utc> {
        self.start + chrono::Duration::from_std(self.t0.elapsed()).unwrap()
    }
}

/// `tauc-job follow` on the world, its clock at `clock`, every second.
fn spawn_follow(w: &World, clock: DateTime<Utc>, port: u16, log: &Path) -> Proc {
    let mut cmd = Command::new(bin("tauc-job"));
    cmd.args([
        "follow", "--every", "1s", "--region", "aps1", "--region", "use1",
    ])
    .args(["--metrics-bind", &format!("127.0.0.1:{port}")])
    .args(["--clock-start", &clock.to_rfc3339()])
    // a day delivered in seconds (as in incremental.rs), compacting often
    .args(["--listing-guard", "1d", "--compact-files", "2"])
    .args(flags(w, None, None))
    .current_dir(w.dir.path())
    .env("RUST_LOG", "info");
    for (k, _) in std::env::vars() {
        if k.starts_with("TAUC_") {
            cmd.env_remove(k);
        }
    }
    let p = Proc::spawn(cmd, log.to_path_buf());
    wait_for_port(port, "tauc-job follow", log);
    p
}

/// The raw batches among `objects` (the folders also hold other objects,
/// which a load counts as ignored).
fn batches(objects: &[(String, bytes::Bytes)]) -> usize {
    objects
        .iter()
        .filter(|(k, _)| {
            let name = k.rsplit('/').next().unwrap_or_default();
            name.starts_with("messages-") && name.ends_with(".txt")
        })
        .count()
}

/// Raw objects the committed ODS event manifests say were loaded.
async fn loaded(w: &World) -> i64 {
    let mut n = 0;
    for key in w.keys(&format!("wh/{}", Table::OdsEvent.path())).await {
        if key.ends_with("/_SUCCESS") {
            let m: Manifest = serde_json::from_slice(&w.get(&key).await).expect("manifest");
            n += m.lineage.loads.iter().map(|l| l.files).sum::<i64>();
        }
    }
    n
}

/// Waits until `n` objects are loaded; fails naming the log after `within`.
async fn wait_loaded(w: &World, n: usize, within: Duration, log: &Path) {
    let start = Instant::now();
    loop {
        let got = loaded(w).await;
        if got == n as i64 {
            return;
        }
        assert!(got < n as i64, "{got} objects loaded, {n} delivered");
        assert!(
            start.elapsed() < within,
            "{got} of {n} objects loaded after {within:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The value of the series `series` (name and labels, as written).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn scrape(port: u16) -> String {
    http_get(port, "/metrics")
}

/// Waits until the service has ended `more` ok batches after the current
/// count.
async fn wait_batches(port: u16, more: f64, log: &Path) -> String {
    let ok = |t: &str| metric(t, "tauc_follow_batches_total{outcome=\"ok\"}").unwrap_or(0.0);
    let first = ok(&scrape(port));
    let start = Instant::now();
    loop {
        let text = scrape(port);
        if ok(&text) >= first + more {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no ok batch in 120 s; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The newest `collector_ts` (ms) per region in the ODS partitions of the
/// world's warehouse (DWD rows carry none), read from their rows.
async fn newest_collector_ts(w: &World) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for region in ["aps1", "use1"] {
        for day in 17..=19 {
            let dt = format!("2024-06-{day}");
            if let Some((_, b)) = w.read(Table::OdsEvent, &dt, region).await {
                let newest = ts(&b, "collector_ts").into_iter().flatten().max();
                if let Some(ms) = newest {
                    let e = out.entry(region.to_string()).or_insert(ms);
                    *e = (*e).max(ms);
                }
            }
        }
    }
    out
}

/// Objects the printed report of an incremental run says it loaded.
fn files_loaded(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|l| l.starts_with("ods dt="))
        .filter_map(|l| {
            l.split(" files=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum()
}

fn sigterm(p: &Proc) {
    let ok = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -TERM failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_crosses_midnight_survives_a_kill_and_equals_a_full_run() {
    let w = World::new("follow");
    let objects = staged(&w).await;
    let day = |d: &str| -> Vec<(String, bytes::Bytes)> {
        let at = format!("/2024/06/{d}/");
        objects
            .iter()
            .filter(|(k, _)| k.contains(&at))
            .cloned()
            .collect()
    };
    let (d17, d18, d19) = (day("17"), day("18"), day("19"));
    assert_eq!(d17.len() + d18.len() + d19.len(), objects.len());
    let half = d18.len() / 2;
    // before midnight: all of the 17th, half of the 18th; then, still
    // before, more of the 18th; after midnight the 18th's late objects
    // and the 19th
    let first: Vec<_> = d17.iter().chain(&d18[..half / 2]).cloned().collect();
    let second = d18[half / 2..half].to_vec();
    let late: Vec<_> = d18[half..]
        .iter()
        .chain(&d19[..d19.len() / 2])
        .cloned()
        .collect();
    let last = d19[d19.len() / 2..].to_vec();
    assert!(batches(&d18[half..]) > 0, "no late object of the 18th");

    let midnight: DateTime<Utc> = MIDNIGHT.parse().unwrap();
    let clock = TestClock {
        start: midnight - chrono::Duration::from_std(LEAD).unwrap(),
        t0: Instant::now(),
    };
    let port = free_port();
    let log1 = w.dir.path().join("follow-1.log");
    deliver(&w, &first).await;
    let mut follow = spawn_follow(&w, clock.now(), port, &log1);
    wait_loaded(&w, batches(&first), LEAD, &log1).await;
    // (the 17th leaves the batches' window at midnight)
    assert!(
        clock.now() < midnight,
        "the first slice was loaded only after midnight (raise LEAD)"
    );

    // killed once a batch has committed an ODS partition of the second
    // slice (before its DWD and ADS), then started again
    deliver(&w, &second).await;
    kill_when(
        &w,
        &mut follow.child,
        Some("wh/ods/ods_fe_event_di"),
        Duration::ZERO,
    )
    .await;
    drop(follow);
    let at_kill = loaded(&w).await as usize;
    let log2 = w.dir.path().join("follow-2.log");
    let mut follow = spawn_follow(&w, clock.now(), port, &log2);
    wait_loaded(
        &w,
        batches(&first) + batches(&second),
        Duration::from_secs(90),
        &log2,
    )
    .await;

    // after midnight: the 18th's late objects (and some of the 19th) are
    // loaded by the service alone...
    while clock.now() < midnight + chrono::Duration::seconds(2) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    deliver(&w, &late).await;
    let so_far = batches(&first) + batches(&second) + batches(&late);
    wait_loaded(&w, so_far, Duration::from_secs(90), &log2).await;
    // ... the rest with a manual run of the same dates beside it
    deliver(&w, &last).await;
    let mut manual = Command::new(bin("tauc-job"));
    manual
        .args([
            "submit",
            "daily",
            "--incremental",
            "--date",
            "2024-06-18",
            "--to",
            "2024-06-19",
        ])
        .args(["--region", "aps1", "--region", "use1"])
        .args(flags(&w, None, None));
    let dir = w.dir.path().to_path_buf();
    let manual = tokio::task::spawn_blocking(move || run(manual, &dir));
    wait_loaded(&w, batches(&objects), Duration::from_secs(150), &log2).await;
    let manual = manual.await.unwrap();
    let by_manual = files_loaded(manual.ok());
    // once everything is loaded, one more whole batch brings DWD and ADS up
    let text = wait_batches(port, 1.0, &log2).await;

    // the restarted service counted what it loaded: everything but what
    // the killed one and the manual run loaded
    let counted = metric(&text, "tauc_follow_objects_loaded_total").unwrap();
    assert_eq!(
        counted as usize,
        batches(&objects) - at_kill - by_manual,
        "objects counted (killed run loaded {at_kill}, manual run {by_manual})\n{text}"
    );
    assert!(
        metric(&text, "tauc_follow_batches_total{outcome=\"failed\"}").is_none_or(|n| n == 0.0),
        "{text}"
    );
    assert!(metric(&text, "tauc_follow_batch_duration_seconds_count").unwrap() >= 1.0);
    assert!(
        metric(&text, "tauc_follow_last_batch_s3_requests{kind=\"list\"}").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "tauc_follow_batch_s3_requests_total{kind=\"put\"}").unwrap() >= 1.0,
        "{text}"
    );
    for (region, ms) in newest_collector_ts(&w).await {
        let series = format!("tauc_follow_freshness_lag_seconds{{region=\"{region}\"}}");
        let text = scrape(port);
        let lag = metric(&text, &series).unwrap_or_else(|| panic!("no {series}\n{text}"));
        let expected = (clock.now().timestamp_millis() - ms) as f64 / 1000.0;
        assert!(
            (lag - expected).abs() < 30.0,
            "{series} is {lag}, the clock minus the newest collector_ts is {expected}"
        );
    }

    sigterm(&follow);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = follow.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no exit 60 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log2).unwrap_or_default()
    );

    assert_equals_full_run(&w, "follow").await;
}

#[test]
fn a_bad_interval_is_a_usage_error_naming_the_flag() {
    for bad in ["0s", "soon"] {
        let mut cmd = Command::new(bin("tauc-job"));
        cmd.args(["follow", "--every", bad]);
        let out = run(cmd, &std::env::temp_dir());
        assert_eq!(out.code, Some(2), "{out}");
        assert!(
            out.stderr.contains("--every") && out.stderr.contains(bad),
            "{out}"
        );
    }
    // the same from the config file's [follow] section
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tauc.toml"), "[follow]\nevery = \"0s\"\n").unwrap();
    let mut cmd = Command::new(bin("tauc-job"));
    cmd.arg("follow");
    let out = run(cmd, dir.path());
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("[follow] every"), "{out}");
}
