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

pub const FIRST: &str = "2024-06-17";
pub const LAST: &str = "2024-06-19";
pub const SKIP: [&str; 5] = [
    "run_id",
    "detected_at",
    "started_at",
    "finished_at",
    "committed_at",
];

/// A three-day, two-region sample (every dirty case) written under
/// `staging/`, with its DIM tables in the world's warehouse; returns the
/// raw objects as `(key under raw/, body)`, in delivery order (see
/// [`uploader_order`]), plus a re-delivery of a 2024-06-19 object into
/// the 2024-06-18 folder, delivered last.
pub async fn staged(w: &World) -> Vec<(String, bytes::Bytes)> {
    staged_with(w, "300", "50").await
}

/// [`staged`] with `events` a day and `lines` per object.
pub async fn staged_with(w: &World, events: &str, lines: &str) -> Vec<(String, bytes::Bytes)> {
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
        events,
        "--lines-per-file",
        lines,
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
        objects.push((uploader_name(&rel), w.get(&key).await));
    }
    assert!(
        objects.len() > 20,
        "the sample wrote {} objects",
        objects.len()
    );
    let mut objects = uploader_order(objects);
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

/// The uploader's name for a sample object: the sample writes
/// `messages-{first_ts}-{n}.txt`; the uploader
/// `messages-{first_ts}-{partition}-{offset}.txt`, here over three Kafka
/// partitions.
pub fn uploader_name(key: &str) -> String {
    let (dir, name) = key.rsplit_once('/').expect("a folder");
    let Some((ts, n)) = name
        .strip_prefix("messages-")
        .and_then(|r| r.strip_suffix(".txt"))
        .and_then(|r| r.split_once('-'))
    else {
        return key.to_string();
    };
    let n: u32 = n.parse().expect("the sample's object number");
    format!("{dir}/messages-{ts}-{}-{n}.txt", n % 3)
}

/// The objects in a fixed shuffle (by a hash of the key) across folders
/// and Kafka partitions, but as the uploader delivers them: each
/// partition's objects in key order (it writes a partition strictly in
/// order), every partition's first batch of the day first and in key
/// order (its uploader was running when the day began), and the folders'
/// other objects before them. (A batch of a partition not seen yet whose key sorts below the
/// start, or an ignored object appearing there, is seen by the next full
/// listing only — the other tests check that.)
pub fn uploader_order(mut objects: Vec<(String, bytes::Bytes)>) -> Vec<(String, bytes::Bytes)> {
    objects.sort_by_key(|(k, _)| {
        k.bytes().fold(1469598103934665603u64, |h, b| {
            (h ^ b as u64).wrapping_mul(1099511628211)
        })
    });
    let group = |k: &str| {
        let (dir, name) = k.rsplit_once('/').unwrap();
        match name.strip_suffix(".txt").map(|n| n.rsplit('-').nth(1)) {
            Some(Some(partition)) => Some(format!("{dir} {partition}")),
            _ => None,
        }
    };
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (k, _)) in objects.iter().enumerate() {
        if let Some(g) = group(k) {
            groups.entry(g).or_default().push(i);
        }
    }
    let mut ordered = objects.clone();
    for slots in groups.values() {
        let mut members: Vec<_> = slots.iter().map(|&i| objects[i].clone()).collect();
        members.sort_by(|a, b| a.0.cmp(&b.0));
        for (&slot, m) in slots.iter().zip(members) {
            ordered[slot] = m;
        }
    }
    let firsts: Vec<usize> = groups
        .values()
        .map(|slots| *slots.iter().min_by_key(|&&i| &ordered[i].0).unwrap())
        .collect();
    let rank = |i: usize, k: &str| match group(k) {
        None => 0,
        Some(_) if firsts.contains(&i) => 1,
        Some(_) => 2,
    };
    let mut ranked: Vec<_> = ordered.into_iter().enumerate().collect();
    // stable: the shuffle stays within the other objects and the rest;
    // the first batches arrive as the day began, in key order
    ranked.sort_by(|(i, (a, _)), (j, (b, _))| {
        let (ra, rb) = (rank(*i, a), rank(*j, b));
        let by_key = if ra == 1 && rb == 1 {
            a.cmp(b)
        } else {
            std::cmp::Ordering::Equal
        };
        ra.cmp(&rb).then(by_key)
    });
    ranked.into_iter().map(|(_, o)| o).collect()
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
        // the test delivers a day in minutes: every partition is hours
        // behind another at some point, and must still hold the start;
        // compacting whenever two small files meet: every run compacts
        cmd.args([
            "--incremental",
            "--listing-guard",
            "1d",
            "--compact-files",
            "2",
        ]);
    }
    cmd
}

/// The totals of an incremental run's `listing:` report line, by name.
pub fn listing_line(stdout: &str) -> BTreeMap<String, u64> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("listing: "))
        .unwrap_or_else(|| panic!("no listing line in:\n{stdout}"));
    line.split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("name=value");
            (k.to_string(), v.parse().expect("a count"))
        })
        .collect()
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

/// A warehouse `full-{name}` in the world's bucket holding the DIM tables
/// and funnels of `wh/` only; returns its prefix and URL.
pub async fn fresh_warehouse(w: &World, name: &str) -> (String, String) {
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
    (full, url)
}

/// A full daily over the raw objects present now, into a warehouse of its
/// own (with the same DIM tables), compared partition by partition with
/// the incremental warehouse.
pub async fn assert_equals_full_run(w: &World, name: &str) {
    let (full, url) = fresh_warehouse(w, name).await;
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
