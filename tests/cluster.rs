//! The same layering through a real `tauc-scheduler` and two
//! `tauc-executor` processes gives the same rows as the in-process run.

use tauc_jobs::tables::Table;

use crate::harness::*;
use crate::layering::{load, write_dataset};

#[tokio::test(flavor = "multi_thread")]
async fn cluster_run_matches_in_process_run() {
    let local = World::new("cluster-local");
    write_dataset(&local).await;
    load(&local, "2024-06-18", &[]);
    load(&local, "2024-06-19", &[]);

    let remote = World::new("cluster-remote");
    write_dataset(&remote).await;
    let cluster = Cluster::start(&remote, 2);
    load(&remote, "2024-06-18", &["--scheduler", &cluster.url]);
    load(&remote, "2024-06-19", &["--scheduler", &cluster.url]);

    // run ids and wall-clock columns differ by construction
    let skip = ["run_id", "detected_at", "started_at", "finished_at"];
    for table in Table::LAYERING {
        for dt in ["2024-06-16", "2024-06-17", "2024-06-18", "2024-06-19"] {
            let a = local
                .read(table, dt, "aps1")
                .await
                .map(|(_, b)| render_sorted(&b, &skip));
            let b = remote
                .read(table, dt, "aps1")
                .await
                .map(|(_, b)| render_sorted(&b, &skip));
            assert_eq!(a, b, "{table:?} dt={dt}");
        }
    }
    let d = remote.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    assert_eq!(d.num_rows(), 7);
    drop(cluster);
}
