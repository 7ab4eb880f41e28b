//! The `_SUCCESS` commit protocol: readers follow manifests, a killed run
//! leaves every partition at its old or new version, and the next run
//! removes the strays.

use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use tauc_jobs::store::Location;
use tauc_jobs::warehouse::table::WarehouseTable;
use tauc_jobs::warehouse::tables::Table;

use crate::harness::*;
use crate::layering::{load, write_dataset};

/// Every committed partition under the warehouse: its manifest's files
/// exist and hold the manifest's row count (`World::read` checks it).
async fn check_all_partitions(w: &World) -> usize {
    let keys = w.keys("wh").await;
    let mut n = 0;
    for k in keys.iter().filter(|k| k.ends_with("/_SUCCESS")) {
        // wh/{layer}/{table}/dt=.../region=.../_SUCCESS
        let parts: Vec<&str> = k.split('/').collect();
        let table = Table::LAYERING
            .into_iter()
            .find(|t| t.path() == format!("{}/{}", parts[1], parts[2]))
            .expect("known table");
        let dt = parts[3].trim_start_matches("dt=");
        let region = parts[4].trim_start_matches("region=");
        assert!(w.read(table, dt, region).await.is_some());
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn readers_ignore_strays_and_the_next_run_removes_them() {
    let w = World::new("strays");
    write_dataset(&w).await;
    load(&w, "2024-06-18", &[]);
    let before = w.rows(Table::OdsEvent, "2024-06-18", "aps1").await;
    // what a run killed before its manifest leaves behind
    let dir = "wh/ods/ods_fe_event_di/dt=2024-06-18/region=aps1";
    w.put(
        &format!("{dir}/part-20990101T000000Z-deadbeef-00000.parquet"),
        "not parquet",
    )
    .await;
    let after = w.rows(Table::OdsEvent, "2024-06-18", "aps1").await;
    assert_eq!(render_sorted(&before, &[]), render_sorted(&after, &[]));
    load(&w, "2024-06-18", &[]);
    let m = w
        .assert_only_listed_files(Table::OdsEvent, "2024-06-18", "aps1")
        .await;
    let keys = w.keys(dir).await;
    // the new version's files, the first version's (kept for readers) and
    // the manifest
    assert_eq!(m.replaced.len(), m.files.len(), "{m:?}");
    assert_eq!(keys.len(), 2 * m.files.len() + 1, "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("deadbeef")));
    // a partition without _SUCCESS does not exist
    w.put(
        "wh/ods/ods_fe_event_di/dt=2024-06-20/region=aps1/part-x-00000.parquet",
        "x",
    )
    .await;
    assert!(
        w.read(Table::OdsEvent, "2024-06-20", "aps1")
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_runs_leave_old_or_new_versions() {
    let w = World::new("kills");
    w.tauc_job(
        &[
            "sample",
            "--date",
            "2024-06-18",
            "--days",
            "2",
            "--events-per-day",
            "3000",
        ],
        true,
    )
    .ok();
    load(&w, "2024-06-18", &[]);
    let committed = check_all_partitions(&w).await;
    assert!(committed > 0);
    for delay_ms in [300u64, 900, 1500, 2500, 4000] {
        let mut cmd = std::process::Command::new(bin("tauc-job"));
        cmd.args([
            "submit",
            "layering",
            "--date",
            "2024-06-18",
            "--to",
            "2024-06-19",
        ])
        .args(w.store_flags())
        .current_dir(w.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn tauc-job");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL: no cleanup of any kind
        let _ = child.wait();
        check_all_partitions(&w).await;
    }
    // A PUT a killed run had sent whole can still be completed by the
    // server after the kill (S3 does the same); the clean run's clean-up
    // can only remove what exists when it lists. Seen once: a killed run's
    // file appeared in a partition after the clean run had committed it.
    // So wait until the server has settled: a listing unchanged for 1 s.
    let mut last = w.keys("wh").await;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(1000));
        let now = w.keys("wh").await;
        if now == last {
            break;
        }
        last = now;
    }
    // every region, as the killed runs: a run killed between a manifest
    // and its clean-up leaves strays only the next commit of that
    // partition removes (`load` alone would re-commit aps1 only)
    w.tauc_job(
        &[
            "submit",
            "layering",
            "--date",
            "2024-06-18",
            "--to",
            "2024-06-19",
        ],
        true,
    )
    .ok();
    check_all_partitions(&w).await;
    // after a clean run no partition directory holds unlisted files (the
    // replaced ones, kept for running queries, are listed as such)
    for k in w
        .keys("wh")
        .await
        .iter()
        .filter(|k| k.ends_with("/_SUCCESS"))
    {
        let dir = k.trim_end_matches("/_SUCCESS");
        let files = w.keys(dir).await;
        let manifest_files = {
            let parts: Vec<&str> = dir.split('/').collect();
            let table = Table::LAYERING
                .into_iter()
                .find(|t| t.path() == format!("{}/{}", parts[1], parts[2]))
                .unwrap();
            let (m, _) = w
                .read(
                    table,
                    parts[3].trim_start_matches("dt="),
                    parts[4].trim_start_matches("region="),
                )
                .await
                .unwrap();
            m.files.len() + m.replaced.len()
        };
        assert_eq!(
            files.len(),
            manifest_files + 1,
            "strays left in {dir}: {files:?}"
        );
    }
}

/// A query that read a partition's manifest before a re-run replaced it
/// still reads that version's files after the commit (issue: it failed
/// with `NotFound` on a deleted file): the replaced files stay for
/// `--keep-replaced-secs`, and the partition's next commit after that
/// deletes them.
#[tokio::test(flavor = "multi_thread")]
async fn a_query_planned_before_a_rerun_reads_its_version_after_the_commit() {
    let w = World::new("keep-replaced");
    write_dataset(&w).await;
    load(&w, "2024-06-18", &[]);
    let first = w
        .read(Table::OdsEvent, "2024-06-18", "aps1")
        .await
        .unwrap()
        .0;
    let state = w.engine.state(w.engine.session_config()).unwrap();
    let ctx = SessionContext::new_with_state(state);
    let wh = Location::parse(&w.warehouse()).unwrap();
    ctx.register_table("ods", Arc::new(WarehouseTable::new(Table::OdsEvent, &wh)))
        .unwrap();
    let sql = "SELECT event_id FROM ods WHERE dt = DATE '2024-06-18' ORDER BY event_id";
    let expected = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    // planned: the manifest is read, its files chosen
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    load(&w, "2024-06-18", &["--keep-replaced-secs", "2"]);
    let second = w
        .read(Table::OdsEvent, "2024-06-18", "aps1")
        .await
        .unwrap()
        .0;
    assert!(first.files.iter().all(|f| !second.files.contains(f)));
    let got = datafusion::physical_plan::collect(plan, ctx.task_ctx())
        .await
        .expect("the planned query reads the version it planned with");
    let render = |b: &[datafusion::arrow::array::RecordBatch]| {
        b.iter()
            .flat_map(|b| render_sorted(b, &[]))
            .collect::<Vec<_>>()
    };
    assert_eq!(render(&got), render(&expected));

    // past the keep time, the next commit deletes the first version's files
    std::thread::sleep(Duration::from_secs(3));
    load(&w, "2024-06-18", &["--keep-replaced-secs", "2"]);
    let third = w
        .read(Table::OdsEvent, "2024-06-18", "aps1")
        .await
        .unwrap()
        .0;
    let dir = "wh/ods/ods_fe_event_di/dt=2024-06-18/region=aps1";
    let keys = w.keys(dir).await;
    assert!(
        first
            .files
            .iter()
            .all(|f| !keys.contains(&format!("{dir}/{f}"))),
        "{keys:?}"
    );
    let replaced: Vec<&str> = third.replaced.iter().map(|r| r.file.as_str()).collect();
    let mut second_files: Vec<&str> = second.files.iter().map(String::as_str).collect();
    second_files.sort();
    assert_eq!(replaced, second_files);
    // a sweep deletes replaced files past their keep time, nothing else
    let out = w.tauc_job(&["sweep", "--keep-replaced-secs", "0"], true);
    assert!(out.ok().contains("ods_fe_event_di: deleted"), "{out}");
    let mut keys = w.keys(dir).await;
    keys.sort();
    let mut expected: Vec<String> = third.files.iter().map(|f| format!("{dir}/{f}")).collect();
    expected.push(format!("{dir}/_SUCCESS"));
    expected.sort();
    assert_eq!(keys, expected);
    let rows: usize = got.iter().map(|b| b.num_rows()).sum();
    assert_eq!(
        w.rows(Table::OdsEvent, "2024-06-18", "aps1")
            .await
            .num_rows(),
        rows
    );
}
