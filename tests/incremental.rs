//! Incremental loads (layers.md v1.2): after any sequence of incremental
//! runs, every table equals one full run over the same objects. The
//! expected values come from full runs, which the other tests hold to the
//! contract; run ids and wall-clock columns differ by construction.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tauc_jobs::warehouse::commit::Manifest;

use crate::full_run::*;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn incremental_runs_equal_a_full_run_at_every_cut() {
    let w = World::new("incremental-cuts");
    let objects = staged(&w).await;
    let slice = objects.len().div_ceil(4);
    let mut patched = Vec::new();
    let mut compacted = false;
    let mut partial = 0;
    for (i, part) in objects.chunks(slice).enumerate() {
        deliver(&w, part).await;
        let out = run(daily(&w, None, true), w.dir.path());
        let l = listing_line(out.ok());
        partial += l["folders"] - l["full"];
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
    // the first listing of each folder is whole, the later ones not
    assert!(partial >= 6, "{partial} partial listings");
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
        kill_when(&w, &mut spawn_slow(&w), prefix, after).await;
        run(daily(&w, None, true), w.dir.path()).ok();
    }
    assert_equals_full_run(&w, "after-kills").await;
}

/// `key` with a line added.
async fn change(w: &World, objects: &[(String, bytes::Bytes)], key: &str) {
    let (_, body) = objects
        .iter()
        .find(|(k, _)| k == key)
        .expect("a delivered key");
    let mut changed = body.to_vec();
    changed.extend_from_slice(b"\n");
    w.put(&format!("raw/{key}"), changed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_object_changed_after_its_load_fails_the_run() {
    let w = World::new("incremental-changed");
    let objects = staged(&w).await;
    deliver(&w, &objects).await;
    run(daily(&w, None, true), w.dir.path()).ok();
    let before = versions(&w, "wh").await;
    let mut batches: Vec<&String> = objects
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("uat/use1/2024/06/18/messages-"))
        .collect();
    batches.sort();
    // the newest batch: above the start, the partial listing sees it
    let newest = batches.last().unwrap().as_str();
    change(&w, &objects, newest).await;
    let out = run(daily(&w, None, true), w.dir.path());
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(newest),
        "the error names the object: {out}"
    );
    assert!(out.stderr.contains("changed"), "{out}");
    assert_eq!(versions(&w, "wh").await, before, "something was committed");
    // the oldest, put back as it was: below the start, the next full
    // listing sees it
    let body = &objects.iter().find(|(k, _)| k == newest).unwrap().1;
    w.put(&format!("raw/{newest}"), body.clone()).await;
    let oldest = batches[0].as_str();
    change(&w, &objects, oldest).await;
    let out = run(daily(&w, None, true), w.dir.path());
    out.ok();
    let mut full = daily(&w, None, true);
    full.args(["--full-listing-every", "0s"]);
    let out = run(full, w.dir.path());
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(oldest),
        "the error names the object: {out}"
    );
    assert_eq!(versions(&w, "wh").await, before, "something was committed");
}

const DAY: &str = "2024-06-18";
const FOLDER: &str = "uat/aps1/2024/06/18";

/// An incremental layering of `DAY` in `aps1`, with `extra` flags.
fn layering(w: &World, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin("tauc-job"));
    cmd.args(["submit", "layering", "--date", DAY, "--region", "aps1"])
        .args(["--incremental", "--listing-guard", "1d"])
        .args(extra)
        .args(flags(w, None, None));
    cmd
}

/// [`assert_equals_full_run`] for [`layering`]: a full layering of the
/// same date and region into a warehouse of its own.
async fn assert_equals_full_layering(w: &World, name: &str) {
    let (full, url) = fresh_warehouse(w, name).await;
    let mut cmd = Command::new(bin("tauc-job"));
    cmd.args(["submit", "layering", "--date", DAY, "--region", "aps1"])
        .args(flags(w, None, Some(&url)));
    run(cmd, w.dir.path()).ok();
    let (inc, full) = (tables(w, "wh").await, tables(w, &full).await);
    let names: Vec<_> = full.keys().collect();
    assert_eq!(inc.keys().collect::<Vec<_>>(), names, "{name}: partitions");
    for (part, rows) in &full {
        assert_eq!(&inc[part], rows, "{name}: {part}");
    }
}

/// The objects of [`FOLDER`] among `objects`, the batches in key order
/// after the folder's other objects.
fn of_folder(objects: &[(String, bytes::Bytes)]) -> Vec<(String, bytes::Bytes)> {
    let mut out: Vec<_> = objects
        .iter()
        .filter(|(k, _)| k.rsplit_once('/').is_some_and(|(d, _)| d == FOLDER))
        .cloned()
        .collect();
    out.sort_by_key(|(k, _)| (k.contains("/messages-"), k.clone()));
    out
}

/// The ODS event manifest of `DAY`/`aps1`.
async fn event_manifest(w: &World) -> Manifest {
    let key = format!("wh/ods/ods_fe_event_di/dt={DAY}/region=aps1/_SUCCESS");
    serde_json::from_slice(&w.get(&key).await).expect("manifest")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_sorting_below_the_start_waits_for_the_full_listing() {
    let w = World::new("incremental-below");
    let objects = of_folder(&staged(&w).await);
    deliver(&w, &objects).await;
    let first = run(layering(&w, &[]), w.dir.path());
    assert_eq!(listing_line(first.ok())["full"], 1, "{first}");
    // below every uploader key: another name, and a batch of a Kafka
    // partition whose uploader was down since midnight
    let body = objects.last().unwrap().1.clone();
    let late = [
        (
            format!("{FOLDER}/messages-0000000000000-x.txt"),
            body.clone(),
        ),
        (format!("{FOLDER}/messages-1718668800001-7-0.txt"), body),
    ];
    deliver(&w, &late).await;
    let out = run(layering(&w, &[]), w.dir.path());
    let l = listing_line(out.ok());
    assert_eq!((l["full"], l["new_objects"]), (0, 0), "{out}");
    assert!(!out.stdout.contains("ods dt="), "{out}");
    // an ignored object above the start is counted at once, and its
    // removal too (the sample's folder holds one ignored object already)
    let notes = format!("raw/{FOLDER}/zz-notes.json");
    w.put(&notes, "{}").await;
    let out = run(layering(&w, &[]), w.dir.path());
    assert_eq!(listing_line(out.ok())["full"], 0, "{out}");
    assert!(out.stdout.contains("files=0 ignored=2 "), "{out}");
    w.delete(&notes).await;
    let out = run(layering(&w, &[]), w.dir.path());
    assert_eq!(listing_line(out.ok())["full"], 0, "{out}");
    assert!(out.stdout.contains("files=0 ignored=1 "), "{out}");
    // the first run after the full-listing period loads them
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = run(layering(&w, &["--full-listing-every", "2s"]), w.dir.path());
    let l = listing_line(out.ok());
    assert_eq!((l["full"], l["new_objects"]), (1, 2), "{out}");
    assert_equals_full_layering(&w, "late").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_small_loads_are_folded_and_a_run_reads_only_recent_lists() {
    let w = World::new("incremental-many");
    let objects = of_folder(&staged_with(&w, "300", "25").await);
    assert!(objects.len() >= 12, "{} objects", objects.len());
    let (head, tail) = objects.split_at(objects.len() - 2);
    // the folder's other object with the first batch, then one batch a run
    deliver(&w, &head[..2]).await;
    run(layering(&w, &[]), w.dir.path()).ok();
    let mut last = BTreeMap::new();
    for object in &head[2..] {
        deliver(&w, std::slice::from_ref(object)).await;
        let out = run(
            layering(&w, &["--compact-loads-above", "1000"]),
            w.dir.path(),
        );
        last = listing_line(out.ok());
        assert_eq!(last["new_objects"], 1, "{out}");
    }
    let loads = event_manifest(&w).await.lineage.loads.len();
    assert_eq!(loads, head.len() - 1);
    // the lists of the loads that can hold keys above the start: those
    // of the newest batch of each of the three Kafka partitions
    assert!(
        last["object_lists_read"] <= 3,
        "read {} object lists of {loads} loads",
        last["object_lists_read"]
    );
    for (i, object) in tail.iter().enumerate() {
        deliver(&w, std::slice::from_ref(object)).await;
        let out = run(layering(&w, &["--compact-loads-above", "4"]), w.dir.path());
        out.ok();
        let m = event_manifest(&w).await;
        assert!(m.lineage.loads.len() <= 4, "{:?}", m.lineage.loads);
        let folded: u64 = m.lineage.loads.iter().map(|l| l.folded).sum();
        assert_eq!(folded as usize, loads + 1 + i, "every load is folded once");
    }
    let lists = w.keys(&format!("wh/_loads/dt={DAY}/region=aps1")).await;
    assert!(lists.len() <= 3, "object lists left behind: {lists:?}");
    assert_equals_full_layering(&w, "folded").await;
}

/// The LIST requests of a full and of a partial listing of a folder of
/// 20 000 objects, after 100 more arrived (numbers for the report; run
/// with `--run-ignored only`).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, ~minutes"]
async fn listing_cost_of_a_large_folder() {
    use futures::StreamExt;
    let w = World::new("incremental-cost");
    staged(&w).await; // the DIM tables
    let midnight: i64 = 1_718_668_800_000;
    let key = |i: i64| {
        let ts = midnight + i * 4_000;
        format!("raw/{FOLDER}/messages-{ts}-{}-{i}.txt", i % 8)
    };
    let put = |range: std::ops::Range<i64>| {
        futures::stream::iter(range)
            .map(|i| {
                let w = &w;
                let k = key(i);
                async move { w.put(&k, "\n").await }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
    };
    put(0..20_000).await;
    let t = Instant::now();
    let out = run(layering(&w, &[]), w.dir.path());
    eprintln!(
        "first (full) run, {:?}: {}",
        t.elapsed(),
        out.ok()
            .lines()
            .find(|l| l.starts_with("listing:"))
            .unwrap()
    );
    put(20_000..20_100).await;
    let t = Instant::now();
    let out = run(layering(&w, &[]), w.dir.path());
    let partial = listing_line(out.ok());
    eprintln!("partial run, {:?}: {partial:?}", t.elapsed());
    put(20_100..20_200).await;
    let t = Instant::now();
    let out = run(layering(&w, &["--full-listing-every", "0s"]), w.dir.path());
    let full = listing_line(out.ok());
    eprintln!("full run, {:?}: {full:?}", t.elapsed());
    assert_eq!((partial["full"], full["full"]), (0, 1));
    assert!(partial["list_requests"] < full["list_requests"]);
}
