//! Bad flags and configuration: exit 2 (usage/config) or 1 (job failed),
//! with a message that names the problem, never a panic.

use crate::harness::*;

fn assert_fails(r: &Run, code: i32, needle: &str) {
    assert_eq!(r.code, Some(code), "{r}");
    assert!(
        r.stderr.contains(needle),
        "stderr should mention {needle:?}\n{r}"
    );
    assert!(!r.stderr.contains("panicked"), "{r}");
}

#[test]
fn bad_flags_and_config() {
    let w = World::new("cli");
    let r = w.submit(&["--date", "2024-13-01"]);
    assert_fails(&r, 2, "invalid date '2024-13-01' (expected YYYY-MM-DD)");

    let r = w.submit(&["--date", "2024-06-18", "--to", "2024-06-01"]);
    assert_fails(&r, 2, "--to 2024-06-01 is before --date 2024-06-18");

    let r = w.tauc_job(&["submit", "reporting", "--date", "2024-06-18"], true);
    assert_fails(&r, 2, "invalid value 'reporting'");

    let r = w.submit(&["--date", "2024-06-18", "--region", "mars1"]);
    assert_fails(&r, 2, "region 'mars1' has no time zone");

    // a bucket that does not exist
    let r = w.tauc_job(
        &[
            "submit",
            "layering",
            "--date",
            "2024-06-18",
            "--warehouse",
            "s3://no-such-bucket/wh",
            "--raw-root",
            "s3://no-such-bucket/raw",
            "--s3-endpoint",
            &w.endpoint,
            "--s3-allow-http",
        ],
        false,
    );
    assert_fails(
        &r,
        2,
        "cannot reach the warehouse at s3://no-such-bucket/wh",
    );

    // an endpoint nobody listens on
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = std::process::Command::new(bin("tauc-job"));
    cmd.args([
        "submit",
        "layering",
        "--date",
        "2024-06-18",
        "--warehouse",
        "s3://b/wh",
        "--raw-root",
        "s3://b/raw",
        "--s3-endpoint",
        &dead,
        "--s3-allow-http",
    ])
    .env("TAUC_S3_RETRY_TIMEOUT_SECS", "1");
    let r = run(cmd, w.dir.path());
    assert_fails(&r, 2, "cannot reach the warehouse at s3://b/wh");

    // misspelt environment variable and config key
    let mut cmd = std::process::Command::new(bin("tauc-job"));
    cmd.args(["submit", "layering", "--date", "2024-06-18"])
        .env("TAUC_WAREHOSE", "x");
    assert_fails(
        &run(cmd, w.dir.path()),
        2,
        "unknown environment variable(s) TAUC_WAREHOSE",
    );
    std::fs::write(w.dir.path().join("bad.toml"), "warehous = \"x\"\n").unwrap();
    let r = w.submit(&["--date", "2024-06-18", "--config", "bad.toml"]);
    assert_fails(&r, 2, "invalid config file 'bad.toml'");

    // no raw data and no dims: a clean run that commits empty partitions
    w.submit(&["--date", "2024-06-18", "--region", "aps1"]).ok();

    // an unreachable scheduler
    let url = format!("df://127.0.0.1:{}", free_port());
    let r = w.submit(&[
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
        "--scheduler",
        &url,
    ]);
    assert_eq!(r.code.map(|c| c != 0), Some(true), "{r}");
    assert!(!r.stderr.contains("panicked"), "{r}");

    let r = w.tauc_job(&["jobs"], false);
    assert!(r.ok().starts_with("layering"), "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_dim_user_names_the_table() {
    let w = World::new("nodim");
    w.put("raw/uat/aps1/2024/06/18/messages-1718668800000.txt",
        r#"{"event_id":"a","event_type":"page_enter","client_ts":1718668800000,"collector_ts":1718668800000,"device_id":"d"}"#).await;
    let r = w.submit(&["--date", "2024-06-18", "--region", "aps1"]);
    assert_fails(&r, 2, "dim table dim_user not found");
}
