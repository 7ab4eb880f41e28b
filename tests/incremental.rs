//! Incremental loads (layers.md v1.2): after any sequence of incremental
//! runs, every table equals one full run over the same objects. The
//! expected values come from full runs, which the other tests hold to the
//! contract; run ids and wall-clock columns differ by construction.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tauc_jobs::warehouse::commit::Manifest;

use crate::harness::*;

const FIRST: &str = "2024-06-17";
const LAST: &str = "2024-06-19";
const SKIP: [&str; 5] = [
    "run_id",
    "detected_at",
    "started_at",
    "finished_at",
    "committed_at",
];

/// A three-day, two-region sample (every dirty case) written under
/// `staging/`, with its DIM tables in the world's warehouse; returns the
/// raw objects as `(key under raw/, body)`, in delivery order: shuffled
/// (not the keys' order), plus a re-delivery of a 2024-06-19 object into
/// the 2024-06-18 folder, delivered last.
async fn staged(w: &World) -> Vec<(String, bytes::Bytes)> {
    let staging = format!("s3://{}/staging", w.bucket);
    let args = [
        "sample",
        "--date",
        FIRST,
        "--days",
        "3",
        "--regions",
        "aps1,use1",
        "--events-per-day",
        "300",
    ];
    let mut cmd = Command::new(bin("tauc-job"));
    cmd.args(args).args(flags(w, Some(&staging), None));
    run(cmd, w.dir.path()).ok();
    let mut objects = Vec::new();
    for key in w.keys("staging").await {
        let rel = key
            .strip_prefix("staging/")
            .expect("staged key")
            .to_string();
        objects.push((rel, w.get(&key).await));
    }
    assert!(
        objects.len() > 20,
        "the sample wrote {} objects",
        objects.len()
    );
    // a fixed shuffle: by a hash of the key
    objects.sort_by_key(|(k, _)| {
        k.bytes().fold(1469598103934665603u64, |h, b| {
            (h ^ b as u64).wrapping_mul(1099511628211)
        })
    });
    let (key, body) = objects
        .iter()
        .find(|(k, _)| k.contains("/aps1/2024/06/19/messages-"))
        .cloned()
        .expect("an aps1 object of 2024-06-19");
    let name = key.rsplit('/').next().unwrap();
    let again = format!(
        "uat/aps1/2024/06/18/{}",
        name.replace("messages-", "messages-9")
    );
    objects.push((again, body));
    objects
}

async fn deliver(w: &World, objects: &[(String, bytes::Bytes)]) {
    for (key, body) in objects {
        w.put(&format!("raw/{key}"), body.clone()).await;
    }
}

/// The world's store flags, with another raw root or warehouse.
fn flags(w: &World, raw_root: Option<&str>, warehouse: Option<&str>) -> Vec<String> {
    let mut out = w.store_flags();
    for (flag, value) in [("--raw-root", raw_root), ("--warehouse", warehouse)] {
        if let Some(v) = value {
            let i = out.iter().position(|f| f == flag).expect("a store flag");
            out[i + 1] = v.to_string();
        }
    }
    out
}

fn daily(w: &World, warehouse: Option<&str>, incremental: bool) -> Command {
    let mut cmd = Command::new(bin("tauc-job"));
    cmd.args(["submit", "daily", "--date", FIRST, "--to", LAST])
        .args(["--region", "aps1", "--region", "use1"])
        .args(flags(w, None, warehouse));
    if incremental {
        // compacting whenever two small files meet: every run compacts
        cmd.args(["--incremental", "--compact-files", "2"]);
    }
    cmd
}

/// Every committed partition under `prefix` (a warehouse in the bucket),
/// each as its rows rendered and sorted.
async fn tables(w: &World, prefix: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for key in w.keys(prefix).await {
        let Some(dir) = key.strip_suffix("/_SUCCESS") else {
            continue;
        };
        let rel = dir.strip_prefix(prefix).unwrap_or(dir).to_string();
        if rel.starts_with("/_") {
            continue;
        }
        let m: Manifest = serde_json::from_slice(&w.get(&key).await).expect("manifest");
        let mut rows = Vec::new();
        for f in &m.files {
            let bytes = w.get(&format!("{dir}/{f}")).await;
            let reader =
                datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                    bytes,
                )
                .unwrap()
                .build()
                .unwrap();
            for b in reader {
                rows.extend(render_sorted(&b.unwrap(), &SKIP));
            }
        }
        rows.sort();
        out.insert(rel, rows);
    }
    out
}

/// A full daily over the raw objects present now, into a warehouse of its
/// own (with the same DIM tables), compared partition by partition with
/// the incremental warehouse.
async fn assert_equals_full_run(w: &World, name: &str) {
    let full = format!("full-{name}");
    for key in w
        .keys("wh/dim")
        .await
        .into_iter()
        .chain(w.keys("wh/conf").await)
    {
        let to = format!("{full}/{}", key.strip_prefix("wh/").unwrap());
        w.put(&to, w.get(&key).await).await;
    }
    let url = format!("s3://{}/{full}", w.bucket);
    run(daily(w, Some(&url), false), w.dir.path()).ok();
    let (inc, full) = (tables(w, "wh").await, tables(w, &full).await);
    assert!(
        full.len() > 100,
        "the full run committed {} partitions",
        full.len()
    );
    let names: Vec<_> = full.keys().collect();
    assert_eq!(inc.keys().collect::<Vec<_>>(), names, "{name}: partitions");
    let differ: Vec<_> = full.keys().filter(|p| inc[*p] != full[*p]).collect();
    for part in differ.iter().take(1) {
        assert_eq!(
            &inc[*part], &full[*part],
            "{name}: {part} (differing: {differ:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_runs_equal_a_full_run_at_every_cut() {
    let w = World::new("incremental-cuts");
    let objects = staged(&w).await;
    let slice = objects.len().div_ceil(4);
    let mut patched = Vec::new();
    let mut compacted = false;
    for (i, part) in objects.chunks(slice).enumerate() {
        deliver(&w, part).await;
        let out = run(daily(&w, None, true), w.dir.path());
        let line = out.ok().lines().find(|l| l.starts_with("dwd patched"));
        compacted |= out.stdout.contains("compacted the small files of");
        // the first run builds every DWD date; the later ones only append
        assert_eq!(line.is_some(), i > 0, "run {i}:\n{}", out.stdout);
        patched.extend(line.map(str::to_string));
        if i == 1 {
            assert_equals_full_run(&w, "middle").await;
        }
    }
    eprintln!("{patched:#?}");
    // the sample's retries and re-deliveries reach the patch's dedupe
    assert!(
        patched.iter().any(|l| !l.contains("(0 copied")),
        "no run patched a copied event: {patched:?}"
    );
    // and some copy arrives after the one kept, yet wins (the fixed shuffle
    // delivers one): its date is rewritten
    assert!(
        patched.iter().any(|l| !l.contains(" 0 dates rewritten")),
        "no run rewrote a date: {patched:?}"
    );
    assert!(compacted, "no run compacted a partition");
    assert_equals_full_run(&w, "last").await;
    // nothing new: nothing loaded, nothing rebuilt
    let out = run(daily(&w, None, true), w.dir.path());
    assert!(
        !out.ok().contains("ods dt="),
        "a run with nothing new loaded something:\n{}",
        out.stdout
    );
}

/// Spawns an incremental daily that writes every manifest slowly.
fn spawn_slow(w: &World) -> Child {
    let mut cmd = daily(w, None, true);
    cmd.env("TAUC_COMMIT_DELAY_MS", "400")
        .current_dir(w.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().expect("spawn tauc-job")
}

/// The run ids of the manifests under `prefix`.
async fn versions(w: &World, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in w.keys(prefix).await {
        if key.ends_with("/_SUCCESS") {
            let m: Manifest = serde_json::from_slice(&w.get(&key).await).expect("manifest");
            out.insert(key, m.run_id);
        }
    }
    out
}

/// SIGKILLs `child` once a manifest under `prefix` moved (or, `None`,
/// after `after`); fails the test if the run ends first.
async fn kill_when(w: &World, mut child: Child, prefix: Option<&str>, after: Duration) {
    let before = match prefix {
        Some(p) => versions(w, p).await,
        None => BTreeMap::new(),
    };
    let start = Instant::now();
    loop {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended before the kill point ({prefix:?})"
        );
        let due = match prefix {
            Some(p) => versions(w, p).await != before,
            None => start.elapsed() >= after,
        };
        if due {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no kill point");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_incremental_run_is_made_whole_by_the_next() {
    let w = World::new("incremental-kills");
    let objects = staged(&w).await;
    let slice = objects.len().div_ceil(5);
    let mut parts = objects.chunks(slice);
    deliver(&w, parts.next().unwrap()).await;
    run(daily(&w, None, true), w.dir.path()).ok();
    // during the ODS scan; after the ODS commit point (before its
    // quarantine, statistics and DWD); during the DWD commit; during the
    // reports' commit
    let points = [
        (None, Duration::from_millis(300)),
        (Some("wh/ods/ods_fe_event_di"), Duration::ZERO),
        (Some("wh/dwd/dwd_trk_event_di"), Duration::ZERO),
        (Some("wh/ads"), Duration::ZERO),
    ];
    for (prefix, after) in points {
        deliver(&w, parts.next().unwrap()).await;
        kill_when(&w, spawn_slow(&w), prefix, after).await;
        run(daily(&w, None, true), w.dir.path()).ok();
    }
    assert_equals_full_run(&w, "after-kills").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_object_changed_after_its_load_fails_the_run() {
    let w = World::new("incremental-changed");
    let objects = staged(&w).await;
    deliver(&w, &objects).await;
    run(daily(&w, None, true), w.dir.path()).ok();
    let before = versions(&w, "wh").await;
    let (key, body) = &objects[0];
    let mut changed = body.to_vec();
    changed.extend_from_slice(b"\n");
    w.put(&format!("raw/{key}"), changed).await;
    let out = run(daily(&w, None, true), w.dir.path());
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(key.as_str()),
        "the error names the object: {out}"
    );
    assert!(out.stderr.contains("changed"), "{out}");
    assert_eq!(versions(&w, "wh").await, before, "something was committed");
}
