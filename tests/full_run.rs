//! The three-day, two-region sample delivered to the raw root in slices,
//! and the comparison of a warehouse with a full run over every object
//! delivered: what the incremental loads (`incremental.rs`) and the
//! `follow` service (`follow.rs`) are held to. The expected values come
//! from full runs, which the other tests hold to the contract; run ids and
//! wall-clock columns differ by construction.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tauc_jobs::warehouse::commit::Manifest;

use crate::harness::*;

/// The sample's first and last collection dates.
pub const FIRST: &str = "2024-06-17";
pub const LAST: &str = "2024-06-19";
/// Columns that differ between two runs by construction.
pub const SKIP: [&str; 5] = [
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
pub async fn staged(w: &World) -> Vec<(String, bytes::Bytes)> {
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

pub async fn deliver(w: &World, objects: &[(String, bytes::Bytes)]) {
    for (key, body) in objects {
        w.put(&format!("raw/{key}"), body.clone()).await;
    }
}

/// The world's store flags, with another raw root or warehouse.
pub fn flags(w: &World, raw_root: Option<&str>, warehouse: Option<&str>) -> Vec<String> {
    let mut out = w.store_flags();
    for (flag, value) in [("--raw-root", raw_root), ("--warehouse", warehouse)] {
        if let Some(v) = value {
            let i = out.iter().position(|f| f == flag).expect("a store flag");
            out[i + 1] = v.to_string();
        }
    }
    out
}

pub fn daily(w: &World, warehouse: Option<&str>, incremental: bool) -> Command {
    let mut cmd = Command::new(bin("tauc-job"));
    cmd.args(["submit", "daily", "--date", FIRST, "--to", LAST])
        .args(["--region", "aps1", "--region", "use1"])
        .args(flags(w, None, warehouse));
    if incremental {
        cmd.arg("--incremental");
    }
    cmd
}

/// Every committed partition under `prefix` (a warehouse in the bucket),
/// each as its rows rendered and sorted.
pub async fn tables(w: &World, prefix: &str) -> BTreeMap<String, Vec<String>> {
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
pub async fn assert_equals_full_run(w: &World, name: &str) {
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
    for (part, rows) in &full {
        assert_eq!(&inc[part], rows, "{name}: {part}");
    }
}

/// The run ids of the manifests under `prefix`.
pub async fn versions(w: &World, prefix: &str) -> BTreeMap<String, String> {
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
pub async fn kill_when(w: &World, child: &mut Child, prefix: Option<&str>, after: Duration) {
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
