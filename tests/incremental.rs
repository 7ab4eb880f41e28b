//! Incremental loads (layers.md v1.2): after any sequence of incremental
//! runs, every table equals one full run over the same objects. The
//! expected values come from full runs, which the other tests hold to the
//! contract; run ids and wall-clock columns differ by construction.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::full_run::*;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn incremental_runs_equal_a_full_run_at_every_cut() {
    let w = World::new("incremental-cuts");
    let objects = staged(&w).await;
    let slice = objects.len().div_ceil(4);
    for (i, part) in objects.chunks(slice).enumerate() {
        deliver(&w, part).await;
        let out = run(daily(&w, None, true), w.dir.path());
        out.ok();
        if i == 1 {
            assert_equals_full_run(&w, "middle").await;
        }
    }
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
