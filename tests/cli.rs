//! Bad flags and configuration: exit 2 (usage/config) or 1 (job failed),
//! with a message that names the problem, never a panic.

use tauc_jobs::warehouse::tables::Table;

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

    // no raw data: a clean run that commits empty partitions (the dims
    // are checked before any work, so even an empty day needs dim_user)
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(w.put("wh/dim/dim_user/u.csv", "user_id,gender,birth_date\n"));
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
    // README: "A scheduler that does not answer is exit 2 before any work"
    assert_fails(&r, 2, "scheduler");

    let r = w.tauc_job(&["jobs"], false);
    assert!(r.ok().starts_with("layering"), "{r}");
    assert!(
        r.stdout.contains("\nreports ") && r.stdout.contains("\ndaily "),
        "{r}"
    );
    assert!(r.stdout.contains("writes: ads_trk_target_click_1d"), "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_dim_user_names_the_table() {
    let w = World::new("nodim");
    w.put("raw/uat/aps1/2024/06/18/messages-1718668800000.txt",
        r#"{"event_id":"a","event_type":"page_enter","client_ts":1718668800000,"collector_ts":1718668800000,"device_id":"d"}"#).await;
    let r = w.submit(&["--date", "2024-06-18", "--region", "aps1"]);
    assert_fails(&r, 2, "dim table dim_user not found");
    assert!(w.keys("wh/ods").await.is_empty(), "work started: {r}");
    w.put("wh/dim/dim_user/u.csv", "id,sex,born\nu1,M,1990-01-01\n")
        .await;
    let r = w.submit(&["--date", "2024-06-18", "--region", "aps1"]);
    // a bad input file: the job failed (1), and nothing ran
    assert_fails(
        &r,
        1,
        "dim/dim_user/u.csv: dim_user has no column 'user_id' (expected user_id,gender,birth_date; found id,sex,born)",
    );
    // a dim error means nothing ran (docs/configuration.md)
    assert!(w.keys("wh/ods").await.is_empty(), "work started: {r}");
}

/// A `dim_user` CSV written by a spreadsheet — a UTF-8 byte-order mark,
/// quoted column names — is read as its columns say: the user's gender and
/// age band (34 on 2024-06-18: `25-34`, analyses.md) reach the DWD row.
#[tokio::test(flavor = "multi_thread")]
async fn a_dim_user_csv_with_a_bom_and_quoted_header_is_read() {
    let w = World::new("dimbom");
    w.put("raw/uat/aps1/2024/06/18/messages-1718668800000.txt",
        r#"{"event_id":"a","event_type":"page_enter","client_ts":1718668800000,"collector_ts":1718668800000,"device_id":"d","user_id":"u2"}"#).await;
    w.put(
        "wh/dim/dim_user/u.csv",
        "\u{feff}\"user_id\",\"gender\",\"birth_date\"\r\n\"u1\",\"M\",\"1980-05-05\"\r\nu2,F,1990-01-01\r\n",
    )
    .await;
    let r = w.submit(&["--date", "2024-06-18", "--region", "aps1"]);
    r.ok();
    let d = w.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    assert_eq!(strs(&d, "gender"), vec![Some("F".into())]);
    assert_eq!(strs(&d, "age_band"), vec![Some("25-34".into())]);
}

/// `dim_user` is checked before any work: a short row stops the run (exit
/// 1 — bad input, not configuration — naming file and line) with nothing committed; a gender or birth date outside
/// the spec's forms is counted as `unknown` with a warning naming it, or
/// stops the run under `--strict-dims`.
#[tokio::test(flavor = "multi_thread")]
async fn dim_user_rows_are_checked_before_any_work() {
    let w = World::new("dimcheck");
    w.put("raw/uat/aps1/2024/06/18/messages-1718668800000.txt",
        r#"{"event_id":"a","event_type":"page_enter","client_ts":1718668800000,"collector_ts":1718668800000,"device_id":"d","user_id":"u2"}"#).await;
    let args = ["--date", "2024-06-18", "--region", "aps1"];
    w.put(
        "wh/dim/dim_user/u.csv",
        "user_id,gender,birth_date\nu1,M,1990-01-01\nu2,F\n",
    )
    .await;
    let r = w.submit(&args);
    assert_fails(
        &r,
        1,
        "dim/dim_user/u.csv:3: 2 field(s) where the header has 3",
    );
    assert!(
        w.keys("wh/ods").await.is_empty(),
        "work started before the check"
    );

    w.put(
        "wh/dim/dim_user/u.csv",
        "user_id,gender,birth_date\nu1,M,1990-01-01\nu2,X,1990-02-30\nu3,,\n",
    )
    .await;
    let strict: Vec<&str> = args.iter().copied().chain(["--strict-dims"]).collect();
    let r = w.submit(&strict);
    assert_fails(
        &r,
        1,
        "1 row(s) with a gender outside M|F|other|empty (first: ",
    );
    assert!(r.stderr.contains("u.csv:3 'X'"), "{r}");
    assert!(r.stderr.contains("u.csv:3 '1990-02-30'"), "{r}");
    assert!(
        w.keys("wh/ods").await.is_empty(),
        "work started before the check"
    );

    let r = w.submit(&args);
    r.ok();
    assert!(
        r.stderr.contains("u.csv:3 'X'") && r.stderr.contains("counted as unknown"),
        "{r}"
    );
    assert!(
        r.stdout
            .contains("dim_user: rows=3 bad_gender=1 bad_birth_date=1"),
        "{r}"
    );
    // as analyses.md maps them: the event of u2 has gender and age unknown
    let d = w.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    assert_eq!(strs(&d, "gender"), vec![Some("unknown".into())]);
    assert_eq!(strs(&d, "age_band"), vec![Some("unknown".into())]);
}

/// The SQL surface's flags and formats, and the reports' own inputs.
#[tokio::test(flavor = "multi_thread")]
async fn sql_formats_and_report_inputs() {
    let w = World::new("cli-sql");
    let r = w.tauc_job(&["sql", "SELECT 1 AS x", "--format", "parquet"], true);
    assert_fails(&r, 2, "--format parquet needs --out FILE");
    let r = w.tauc_job(&["sql", "SELECT nope FROM ads_trk_page_1d"], true);
    assert_fails(&r, 2, "query rejected");

    let out = w.dir.path().join("x.parquet");
    let msg = w
        .tauc_job(
            &[
                "sql",
                "SELECT 41 + 1 AS x, 'a' AS y",
                "--format",
                "parquet",
                "--out",
                out.to_str().unwrap(),
            ],
            true,
        )
        .ok()
        .to_string();
    assert!(msg.starts_with("wrote 1 rows to"), "{msg}");
    let bytes = bytes::Bytes::from(std::fs::read(&out).unwrap());
    let batch =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
    assert_eq!(i64s(&batch, "x"), vec![Some(42)]);
    assert_eq!(strs(&batch, "y"), vec![Some("a".into())]);

    // the query from stdin
    let r = w.tauc_job(&["sql", "-"], true);
    assert_fails(&r, 2, "empty query");
    let mut cmd = std::process::Command::new(bin("tauc-job"));
    cmd.args(["sql", "-", "--format", "csv"])
        .args(w.store_flags())
        .current_dir(w.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"SELECT 6 * 7 AS answer").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "answer\n42\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // an empty warehouse: every table is listed, none committed
    let tables = w.tauc_job(&["tables"], true).ok().to_string();
    assert!(tables.contains("ads_bill_settlement_1d"), "{tables}");
    assert!(tables.contains("dim_contract"), "{tables}");
    assert_eq!(tables.lines().count(), 1 + 13 + 3, "{tables}");

    // reports: the DWD input, a named funnels file and dim_contract are
    // required, checked in that order before any work
    let args = [
        "submit",
        "reports",
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
    ];
    let r = w.tauc_job(&args, true);
    assert_fails(
        &r,
        2,
        "dwd_trk_event_di dt=2024-06-18 region=aps1, which is not committed",
    );
    crate::reports::commit_dwd(&w, "aps1", "2024-06-18", &[], &[]).await;
    let mut with_funnels = args.to_vec();
    with_funnels.extend(["--funnels", "no/such/funnels.toml"]);
    let r = w.tauc_job(&with_funnels, true);
    assert_fails(&r, 2, "funnels file");
    let r = w.tauc_job(&args, true);
    assert_fails(&r, 2, "dim table dim_contract not found");
    let header =
        "contract_id,partner_id,target_id,pricing_model,unit_price,currency,valid_from,valid_to";
    w.put(
        "wh/dim/dim_contract/c.csv",
        format!("{header}\nk,p,t,CPC,0.1234567,USD,2024-06-01,\n"),
    )
    .await;
    let r = w.tauc_job(&args, true);
    assert_fails(
        &r,
        1,
        "c.csv:2: dim_contract column unit_price: '0.1234567' is not a non-negative decimal with at most 6 decimal places",
    );
    w.put(
        "wh/dim/dim_contract/c.csv",
        format!("{header}\nk,p,t,CPC,0.123456,USD,2024-06-01,\n"),
    )
    .await;
    w.tauc_job(&args, true).ok();
    let (_, s) = w
        .read(
            tauc_jobs::warehouse::tables::Table::AdsSettlement,
            "2024-06-18",
            "aps1",
        )
        .await
        .unwrap();
    assert_eq!(strs(&s, "contract_id"), vec![Some("k".into())]);
}

/// `--log-format json`: one JSON object per line, and every line of a run
/// names its job and run id (the run's span), the id the summary prints;
/// a log written to a file carries no ANSI colour codes.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_the_job_and_run_id() {
    let w = World::new("jsonlogs");
    w.sample_day("200");
    // the harness's runs log at warn; these log at the default, info
    let submit = |extra: &[&str]| submit_logging(&w, None, extra);
    let (stdout, stderr) = submit(&["--log-format", "json"]);
    let summary = stdout.lines().find(|l| l.starts_with("run ")).unwrap();
    let run_id = summary.split_whitespace().nth(1).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of_run: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["span"]["run_id"] == run_id)
        .collect();
    for message in ["run started", "stage started", "run committed"] {
        let line = of_run
            .iter()
            .find(|v| v["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("no '{message}' line with run_id {run_id}: {stderr}"));
        assert_eq!(line["span"]["job"], "layering", "{line}");
    }
    // text logs to a file (not a terminal): no colour codes
    let (_, text) = submit(&[]);
    assert!(text.contains("run committed"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
}

/// `submit`'s stderr, not a terminal, is the run's stage lines: a line per
/// in-process task only at `RUST_LOG=debug` (issue: 40 task lines for one
/// sample day drowned the summary on stdout).
#[tokio::test(flavor = "multi_thread")]
async fn submit_logs_stages_and_tasks_only_at_debug() {
    let w = World::new("quiet-submit");
    w.sample_day("400");
    let submit = |log: &str| submit_logging(&w, Some(log), &[]);
    let (stdout, stderr) = submit("info");
    assert!(
        stderr.contains("stage started stage=dwd: committing"),
        "{stderr}"
    );
    assert!(!stderr.contains("task wrote its files"), "{stderr}");
    assert!(!stderr.contains("Ballista job submitted"), "{stderr}");
    assert!(stdout.contains(" committed: ods "), "{stdout}");
    let (_, stderr) = submit("info,tauc_jobs=debug");
    assert!(stderr.contains("task wrote its files"), "{stderr}");
}

/// `submit layering` of the sample day with `RUST_LOG` = `log` (unset:
/// tauc's default filter) and `extra` flags; it must succeed. Its stdout
/// and stderr.
fn submit_logging(w: &World, log: Option<&str>, extra: &[&str]) -> (String, String) {
    let mut cmd = std::process::Command::new(bin("tauc-job"));
    cmd.args([
        "submit",
        "layering",
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
    ])
    .args(extra)
    .args(w.store_flags())
    .current_dir(w.dir.path());
    match log {
        Some(l) => cmd.env("RUST_LOG", l),
        None => cmd.env_remove("RUST_LOG"),
    };
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// The `TAUC_*` variables the binaries' flags read (clap's `[env: …]` in
/// `--help`) and the list of known ones that refuses misspelt variables
/// (`tauc_common::config::KNOWN_ENV`) say the same: a flag whose variable
/// is missing from the list would be refused at start; a listed variable
/// nothing reads would let a misspelling through. A few are read outside
/// clap and are listed here with the reason.
#[test]
fn known_variables_are_the_ones_the_flags_read() {
    use std::collections::BTreeSet;
    let help = |args: &[&str], bin_name: &str| -> String {
        let out = std::process::Command::new(bin(bin_name))
            .args(args)
            .arg("--help")
            .output()
            .expect("run --help");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let commands = |text: &str| -> Vec<String> {
        text.split("Commands:")
            .nth(1)
            .and_then(|t| t.split("Options:").next())
            .map(|t| {
                t.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .filter(|c| *c != "help")
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut texts = Vec::new();
    for b in [
        "tauc-job",
        "tauc-scheduler",
        "tauc-executor",
        "tauc-collector",
        "tauc-uploader",
    ] {
        let top = help(&[], b);
        for c in commands(&top) {
            let sub = help(&[&c], b);
            for s in commands(&sub) {
                texts.push(help(&[&c, &s], b));
            }
            texts.push(sub);
        }
        texts.push(top);
    }
    let declared: BTreeSet<String> = texts
        .iter()
        .flat_map(|t| t.split("[env: ").skip(1))
        .filter_map(|t| t.split(['=', ']']).next())
        .map(str::to_string)
        .collect();
    assert!(declared.len() > 40, "{declared:?}");
    // read outside clap: the config file's path (every binary, before the
    // flags are merged), the S3 client's settings (the config loader's
    // environment layer, `S3Options::with_env` in the scheduler and
    // executor), the stall watch of
    // cluster jobs, and two test hooks
    let outside = [
        "TAUC_CONFIG",
        "TAUC_S3_ALLOW_HTTP",
        "TAUC_S3_PATH_STYLE",
        "TAUC_S3_RETRY_TIMEOUT_SECS",
        "TAUC_STALL_SECS",
        "TAUC_COMMIT_DELAY_MS",
        "TAUC_UPLOADER_FAULT",
    ];
    let known: BTreeSet<String> = tauc_jobs::config::KNOWN_ENV
        .iter()
        .map(|v| v.to_string())
        .collect();
    let missing: Vec<&String> = declared.difference(&known).collect();
    assert!(
        missing.is_empty(),
        "read by a flag but refused: {missing:?}"
    );
    let unread: Vec<&String> = known
        .iter()
        .filter(|v| !declared.contains(*v) && !outside.contains(&v.as_str()))
        .collect();
    assert!(unread.is_empty(), "listed but read by no flag: {unread:?}");
}
