//! The same layering through a real `tauc-scheduler` and two
//! `tauc-executor` processes gives the same rows as the in-process run.

use std::time::Duration;
use tauc_jobs::warehouse::tables::Table;

use crate::harness::*;
use crate::layering::{load, write_dataset};

/// Every layering table of aps1 on `dts` holds the same rows in both
/// worlds (run ids and wall-clock columns differ by construction).
async fn assert_same_layering(local: &World, remote: &World, dts: &[&str]) {
    let skip = ["run_id", "detected_at", "started_at", "finished_at"];
    for table in Table::LAYERING {
        for dt in dts {
            let a = local.read(table, dt, "aps1").await;
            let b = remote.read(table, dt, "aps1").await;
            let (a, b) = (
                a.map(|(_, b)| render_sorted(&b, &skip)),
                b.map(|(_, b)| render_sorted(&b, &skip)),
            );
            assert_eq!(a, b, "{table:?} dt={dt}");
        }
    }
}

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

    let dts = ["2024-06-16", "2024-06-17", "2024-06-18", "2024-06-19"];
    assert_same_layering(&local, &remote, &dts).await;
    let d = remote.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    assert_eq!(d.num_rows(), 7);
    drop(cluster);
}

/// SIGTERM stops the scheduler and an executor cleanly (exit 0), the
/// executor even before it is ready (without its early handler: 1 of 2 runs
/// ended by the signal).
#[tokio::test(flavor = "multi_thread")]
async fn scheduler_and_executor_stop_on_sigterm() {
    let w = World::new("sigterm");
    let port = free_port();
    let mut cmd = std::process::Command::new(bin("tauc-scheduler"));
    cmd.args(["--bind", &format!("127.0.0.1:{port}")]);
    let log = w.dir.path().join("scheduler.log");
    let mut scheduler = Proc::spawn(cmd, log.clone());
    wait_for_port(port, "tauc-scheduler", &log);
    let health = free_port();
    let mut cmd = std::process::Command::new(bin("tauc-executor"));
    cmd.args([
        "--scheduler-host",
        "127.0.0.1",
        "--scheduler-port",
        &port.to_string(),
    ])
    .args([
        "--bind-host",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
    ])
    .args([
        "--grpc-port",
        &free_port().to_string(),
        "--health-port",
        &health.to_string(),
    ]);
    let elog = w.dir.path().join("executor.log");
    let mut executor = Proc::spawn(cmd, elog.clone());
    // at once, before it is even ready: the executor takes stop signals
    // from its start (Ballista's own handlers come only once its services
    // run; a SIGTERM before then used to kill it undrained)
    wait_for_port(health, "tauc-executor health", &elog);
    for (p, what) in [(&mut executor, "executor"), (&mut scheduler, "scheduler")] {
        let pid = p.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(s) = p.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what} did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert_eq!(status.code(), Some(0), "{what} exit status");
    }
}

/// `submit daily` on sample data through a real scheduler and two
/// executors commits the same rows in every table as in-process, and
/// `sql` answers the same on both.
#[tokio::test(flavor = "multi_thread")]
async fn daily_on_cluster_matches_in_process() {
    let sample = ["sample", "--date", "2024-06-18", "--events-per-day", "300"];
    let daily = ["submit", "daily", "--date", "2024-06-18"];
    let query = "SELECT region, city, gender, age_band, target_type, target_id, event_type, count(*) AS n \
                 FROM dwd_trk_event_di WHERE dt = DATE '2024-06-18' \
                 GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7";

    let local = World::new("daily-local");
    local.tauc_job(&sample, true).ok();
    local.tauc_job(&daily, true).ok();
    let local_sql = local.tauc_job(&["sql", query, "--format", "csv"], true);

    let remote = World::new("daily-remote");
    remote.tauc_job(&sample, true).ok();
    let cluster = Cluster::start(&remote, 2);
    let mut args = daily.to_vec();
    args.extend(["--scheduler", &cluster.url]);
    remote.tauc_job(&args, true).ok();
    let remote_sql = remote.tauc_job(
        &["sql", query, "--format", "csv", "--scheduler", &cluster.url],
        true,
    );

    let skip = ["run_id", "detected_at", "started_at", "finished_at"];
    let mut ads_rows = 0;
    for table in Table::all() {
        for dt in [
            "2024-06-15",
            "2024-06-16",
            "2024-06-17",
            "2024-06-18",
            "2024-06-19",
        ] {
            for region in ["aps1", "use1", "euw1"] {
                let a = local
                    .read(table, dt, region)
                    .await
                    .map(|(_, b)| render_sorted(&b, &skip));
                let b = remote
                    .read(table, dt, region)
                    .await
                    .map(|(_, b)| render_sorted(&b, &skip));
                assert_eq!(a, b, "{table:?} dt={dt} region={region}");
                if Table::REPORTS.contains(&table) && dt == "2024-06-18" {
                    ads_rows += b.expect("reports for the loaded date").len();
                }
            }
        }
    }
    assert!(
        ads_rows > 100,
        "the sample day gives report rows: {ads_rows}"
    );
    assert_eq!(local_sql.ok(), remote_sql.ok());
    assert!(local_sql.stdout.lines().count() > 10, "{local_sql}");
    drop(cluster);
}

/// The Ballista job ids a cluster run printed, in order.
fn job_ids(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split("submitted Ballista job ").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// `GET /metrics` of the cluster's scheduler (HTTP on its gRPC port).
fn scrape(cluster: &Cluster) -> String {
    scrape_port(cluster.url.rsplit(':').next().unwrap().parse().unwrap())
}

/// The sum over the cluster's executors of the `/metrics` samples whose
/// line starts with `series` (a name with its labels).
fn executors_sum(cluster: &Cluster, series: &str) -> i64 {
    cluster
        .health_ports
        .iter()
        .map(|p| sample(&scrape_port(*p), series).unwrap_or(0))
        .sum()
}

/// The value of the sample `series` in a metrics text.
fn sample(text: &str, series: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse::<f64>().unwrap() as i64)
}

fn scrape_port(port: u16) -> String {
    http_get(port, "/metrics")
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_names_its_ballista_jobs_and_status_shows_them() {
    let w = World::new("status");
    w.sample_day("1000");
    let events = w.dir.path().join("events.jsonl");
    let cluster = Cluster::start_with(&w, 2, &["--event-log", events.to_str().unwrap()], &[]);
    let before = scrape(&cluster);
    for line in [
        "tauc_scheduler_jobs{state=\"successful\"} 0",
        "tauc_scheduler_executors 2",
    ] {
        assert!(before.lines().any(|l| l == line), "no '{line}':\n{before}");
    }
    let sched = ["--scheduler", cluster.url.as_str()];
    let metrics = w.dir.path().join("run.prom");
    let run = w.submit(&[
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
        sched[0],
        sched[1],
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    run.ok();
    // what the executors say they did adds up to the run's summary
    let summary = std::fs::read_to_string(&metrics).unwrap();
    let of_run = |series: &str| {
        sample(&summary, &format!("tauc_layering_last_run_{series}"))
            .unwrap_or_else(|| panic!("no {series} in\n{summary}"))
    };
    let pairs = [
        ("raw_files_read_total", of_run("files_listed")),
        ("raw_lines_read_total", of_run("lines_read")),
        ("raw_bytes_read_total", of_run("bytes_read")),
        ("raw_blank_lines_total", of_run("blank_lines")),
        (
            "rows_written_total{table=\"ods_fe_event_di\"}",
            of_run("valid_rows"),
        ),
        (
            "rows_written_total{table=\"dwd_trk_event_di\"}",
            of_run("dwd_rows_written{table=\"dwd_trk_event_di\"}"),
        ),
    ];
    for (series, expected) in pairs {
        assert!(expected > 0, "{series}: {summary}");
        let got = executors_sum(&cluster, &format!("tauc_executor_{series}"));
        assert_eq!(got, expected, "tauc_executor_{series}\n{summary}");
    }
    let quarantined: Vec<(String, i64)> = summary
        .lines()
        .filter_map(|l| l.strip_prefix("tauc_layering_last_run_quarantined_rows{"))
        .map(|l| {
            let (labels, v) = l.split_once("} ").unwrap();
            (labels.to_string(), v.parse().unwrap())
        })
        .collect();
    assert!(!quarantined.is_empty(), "{summary}");
    for (labels, n) in &quarantined {
        let series = format!("tauc_executor_quarantined_rows_total{{{labels}}}");
        assert_eq!(executors_sum(&cluster, &series), *n, "{series}");
    }
    let q: i64 = quarantined.iter().map(|(_, n)| n).sum();
    let series = "tauc_executor_rows_written_total{table=\"ods_fe_quarantine_di\"}";
    assert_eq!(executors_sum(&cluster, series), q);
    for p in &cluster.health_ports {
        let text = scrape_port(*p);
        assert_eq!(sample(&text, "tauc_executor_ready"), Some(1), "{text}");
        assert!(
            !text.contains(SECRET_KEY) && !text.contains(ACCESS_KEY),
            "{text}"
        );
    }
    let ids = job_ids(&run.stderr);
    assert_eq!(
        ids.len(),
        4,
        "an ODS job, the copied ids, a DWD job and the DWD check: {run}"
    );
    // the scheduler's metrics count the run's four jobs, all successful
    let after = scrape(&cluster);
    for line in [
        "tauc_scheduler_jobs{state=\"successful\"} 4",
        "tauc_scheduler_jobs{state=\"failed\"} 0",
        "tauc_scheduler_jobs{state=\"running\"} 0",
        "tauc_scheduler_executors 2",
    ] {
        assert!(after.lines().any(|l| l == line), "no '{line}':\n{after}");
    }
    // Ballista's own series follow tauc's: the same four jobs
    for (series, n) in [
        ("job_submitted_total", 4),
        ("job_completed_total", 4),
        ("job_failed_total", 0),
    ] {
        assert_eq!(sample(&after, series), Some(n), "{series}:\n{after}");
    }
    assert!(
        after.contains("# TYPE job_exec_time_seconds histogram"),
        "{after}"
    );
    let peaks = after
        .lines()
        .filter(|l| l.starts_with("tauc_scheduler_executor_peak_memory_bytes{"))
        .count();
    assert_eq!(peaks, 2, "{after}");
    assert!(
        !after.contains(SECRET_KEY) && !after.contains(ACCESS_KEY),
        "{after}"
    );
    // the event log sees every job end, every stage done (it polls twice a
    // second): wait for the last job's final line, then check them all
    let ended = |v: &serde_json::Value, id: &str| {
        v["job_id"] == id && (v["state"] == "successful" || v["state"] == "failed")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (log, lines) = loop {
        let log = std::fs::read_to_string(&events).unwrap_or_default();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if ids.iter().all(|id| lines.iter().any(|v| ended(v, id))) {
            break (log, lines);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "jobs not ended in the event log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!log.contains(SECRET_KEY), "{log}");
    for id in &ids {
        let last = lines
            .iter()
            .rfind(|v| v["job_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not in the event log:\n{log}"));
        assert_eq!(last["state"], "successful", "{log}");
        assert_eq!(last["stages_done"], last["stages"], "{log}");
    }

    let all = w.tauc_job(&["status", sched[0], sched[1]], false);
    let names = [
        "tauc layering: ods",
        "tauc layering: dwd copied ids",
        "tauc layering: dwd",
        "tauc layering: dwd check",
    ];
    for (id, name) in ids.iter().zip(names) {
        let line = all
            .ok()
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not listed: {all}"));
        assert!(line.contains("successful"), "{line}");
        assert!(line.contains(name), "{line}");
    }
    let one = w.tauc_job(&["status", &ids[0], sched[0], sched[1]], false);
    assert_eq!(one.ok().lines().count(), 1, "{one}");
    // every stage of a finished job is done
    let stages = one.stdout.split("stages ").nth(1).unwrap();
    let (done, all_stages) = stages
        .split_whitespace()
        .next()
        .unwrap()
        .split_once('/')
        .unwrap();
    assert_eq!(done, all_stages, "{one}");

    let late = w.tauc_job(&["cancel", &ids[0], sched[0], sched[1]], false);
    assert_eq!(late.code, Some(2), "{late}");
    assert!(late.stderr.contains("has already ended"), "{late}");
    let unknown = w.tauc_job(&["status", "no-such-job", sched[0], sched[1]], false);
    assert_eq!(unknown.code, Some(2), "{unknown}");
    assert!(unknown.stderr.contains("no job 'no-such-job'"), "{unknown}");
    let none = w.tauc_job(&["status"], false);
    assert_eq!(none.code, Some(2), "{none}");
    assert!(none.stderr.contains("--scheduler"), "{none}");

    // the test's S3 secret is in every process's environment, and in no
    // log, REST answer or metric
    let port = cluster.url.rsplit(':').next().unwrap().parse().unwrap();
    let view = http_get(port, "/tauc/v1/jobs");
    assert!(ids.iter().all(|id| view.contains(id.as_str())), "{view}");
    let mut seen = vec![
        ("the job view".to_string(), view),
        ("the run's output".into(), format!("{run}")),
        ("the scheduler's metrics".into(), scrape(&cluster)),
    ];
    for id in &ids {
        seen.push((id.clone(), http_get(port, &format!("/tauc/v1/jobs/{id}"))));
    }
    for log in ["scheduler.log", "executor-0.log", "executor-1.log"] {
        let text = std::fs::read_to_string(w.dir.path().join(log)).unwrap();
        assert!(text.lines().count() > 3, "{log} is nearly empty:\n{text}");
        seen.push((log.to_string(), text));
    }
    for (what, text) in seen {
        assert!(!text.contains(SECRET_KEY), "the secret in {what}:\n{text}");
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigterm_cancels_the_cluster_job_and_commits_nothing() {
    let w = World::new("cancel");
    w.sample_day("20000");
    let cluster = Cluster::start(&w, 2);
    let err_path = w.dir.path().join("submit.err");
    // the stop comes while the DWD job (the second) of 20 000 events runs;
    // the ODS stage before it was committed whole
    let mut child = std::process::Command::new(bin("tauc-job"))
        .args([
            "submit",
            "layering",
            "--date",
            "2024-06-18",
            "--region",
            "aps1",
        ])
        .args(["--scheduler", &cluster.url])
        .args(w.store_flags())
        .current_dir(w.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let id = loop {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        if let Some(id) = job_ids(&err).into_iter().nth(1) {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job id logged: {err}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "submit ended early: {err}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let running = w.tauc_job(&["status", &id, "--scheduler", &cluster.url], false);
    let state = running.ok();
    assert!(
        state.contains("running") || state.contains("queued"),
        "{running}"
    );
    // scraped during the DWD job: the scheduler has a job that has not
    // ended; the executors wrote the ODS files of the committed stage
    let during = scrape(&cluster);
    let open = sample(&during, "tauc_scheduler_jobs{state=\"running\"}").unwrap()
        + sample(&during, "tauc_scheduler_jobs{state=\"queued\"}").unwrap();
    assert_eq!(open, 1, "{during}");
    let ods_rows = executors_sum(
        &cluster,
        "tauc_executor_rows_written_total{table=\"ods_fe_event_di\"}",
    );
    let lines = executors_sum(&cluster, "tauc_executor_raw_lines_read_total");
    assert!(
        ods_rows > 0 && ods_rows <= lines,
        "ods rows {ods_rows}, lines {lines}"
    );
    let (status, err) = signal_and_wait(&mut child, "-TERM", &err_path);
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("stopped by SIGTERM"), "{err}");
    assert!(err.contains("cancelled the Ballista job"), "{err}");
    // the scheduler ended the job as cancelled; no DWD partition was
    // committed, the ODS ones committed before the stop are whole
    let after = w.tauc_job(&["status", &id, "--scheduler", &cluster.url], false);
    assert!(after.ok().contains("failed"), "{after}");
    assert!(
        w.read(Table::OdsEvent, "2024-06-18", "aps1")
            .await
            .is_some()
    );
    for table in [Table::DwdTrkEvent, Table::DwdCorsError] {
        assert!(
            w.read(table, "2024-06-18", "aps1").await.is_none(),
            "{table:?} was committed: {err}"
        );
    }
    assert_eq!(w.keys("wh/_leases").await, Vec::<String>::new());
    // the same command again does the work
    w.submit(&[
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
        "--scheduler",
        &cluster.url,
    ])
    .ok();
    assert!(
        w.read(Table::DwdTrkEvent, "2024-06-18", "aps1")
            .await
            .is_some()
    );
    drop(cluster);
}

#[test]
fn an_unreachable_scheduler_is_a_configuration_error_before_any_work() {
    let w = World::new("unreachable");
    w.sample_day("1000");
    let url = format!("df://127.0.0.1:{}", free_port());
    let run = w.submit(&[
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
        "--scheduler",
        &url,
    ]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach the scheduler at {url}")),
        "{run}"
    );
    assert!(!run.stderr.contains("stage started stage=ods"), "{run}");
    let status = w.tauc_job(&["status", "--scheduler", &url], false);
    assert_eq!(status.code, Some(2), "{status}");
}

/// A Flight `ListActions` on an executor's Flight port over `tls` (plain
/// TCP without): `Ok` when the server answered at all (Ballista's Flight
/// service may answer `Unimplemented`), `Err` when the connection failed.
async fn flight_answers(
    port: u16,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<(), String> {
    use arrow_flight::flight_service_client::FlightServiceClient;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = tonic::transport::Endpoint::from_shared(format!("{scheme}://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(5));
    if let Some(tls) = tls {
        ep = ep.tls_config(tls).unwrap();
    }
    let channel = ep.connect().await.map_err(|e| format!("connect: {e:?}"))?;
    let mut client = FlightServiceClient::new(channel);
    match client.list_actions(arrow_flight::Empty {}).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::Unimplemented => Ok(()),
        Err(s) => Err(format!("{s:?}")),
    }
}

fn tls_client(ca: &TestCa, who: &TestCa) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&ca.ca)))
        .identity(Identity::from_pem(read(&who.cert), read(&who.key)))
        .domain_name("127.0.0.1")
}

/// With `--cluster-ca/--cluster-cert/--cluster-key` on every process, a
/// cluster run gives the in-process rows; the scheduler and the executors'
/// Flight ports refuse plain TCP and certificates of another CA; the key
/// shows in no log.
#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_over_mutual_tls_gives_the_same_rows_and_refuses_strangers() {
    let local = World::new("tls-local");
    write_dataset(&local).await;
    load(&local, "2024-06-18", &[]);

    let remote = World::new("tls-remote");
    write_dataset(&remote).await;
    let good = TestCa::new(remote.dir.path(), "good");
    let other = TestCa::new(remote.dir.path(), "other");
    let tls = good.args();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();

    // `status` against a closed port with these TLS flags
    let status_with = |flags: &[&str]| {
        let mut args = vec!["status", "--scheduler", "df://127.0.0.1:9"];
        args.extend_from_slice(flags);
        remote.tauc_job(&args, false)
    };
    let path = |p: &std::path::PathBuf| p.to_str().unwrap().to_string();
    let (ca, cert, key) = (path(&good.ca), path(&good.cert), path(&good.key));
    // one file alone is a usage error, before anything is reached
    let r = status_with(&["--cluster-ca", &ca]);
    assert_refused(&r, "--cluster-ca, --cluster-cert and --cluster-key");
    let r = status_with(&[
        "--cluster-ca",
        &key,
        "--cluster-cert",
        &cert,
        "--cluster-key",
        &key,
    ]);
    assert_refused(&r, "holds no PEM certificate");

    // push mode has no TLS: refused before listening
    let mut cmd = std::process::Command::new(bin("tauc-scheduler"));
    cmd.args(["--bind", "127.0.0.1:9", "--task-mode", "push"])
        .args(&tls);
    assert_refused(
        &run(cmd, remote.dir.path()),
        "--task-mode push cannot be used with TLS",
    );

    let cluster = Cluster::start_with(&remote, 2, &tls, &tls);
    let mut args = vec!["--scheduler", cluster.url.as_str()];
    args.extend_from_slice(&tls);
    load(&remote, "2024-06-18", &args);

    assert_same_layering(&local, &remote, &["2024-06-16", "2024-06-17", "2024-06-18"]).await;

    let d = remote.rows(Table::DwdTrkEvent, "2024-06-18", "aps1").await;
    assert_eq!(d.num_rows(), 7);
    for i in 0..2 {
        let log =
            std::fs::read_to_string(remote.dir.path().join(format!("executor-{i}.log"))).unwrap();
        assert!(log.contains("Flight server listening over TLS"), "{log}");
    }

    // the scheduler: TLS with the cluster's certificate is served ...
    let mut status = vec!["status", "--scheduler", cluster.url.as_str()];
    status.extend_from_slice(&tls);
    let out = remote.tauc_job(&status, false).ok().to_string();
    assert!(out.contains("successful"), "{out}");
    // ... plain TCP is not ...
    let r = remote.tauc_job(&["status", "--scheduler", &cluster.url], false);
    assert_refused(&r, "cannot reach the scheduler");
    // ... nor a certificate of another CA, even trusting the right one
    let stranger = [
        "status",
        "--scheduler",
        cluster.url.as_str(),
        "--cluster-ca",
        good.ca.to_str().unwrap(),
        "--cluster-cert",
        other.cert.to_str().unwrap(),
        "--cluster-key",
        other.key.to_str().unwrap(),
    ];
    let r = remote.tauc_job(&stranger, false);
    assert_refused(&r, "cannot reach the scheduler");
    let log = std::fs::read_to_string(remote.dir.path().join("scheduler.log")).unwrap();
    assert!(log.contains("TLS handshake refused"), "{log}");

    // every executor's Flight port: the same
    for &port in &cluster.flight_ports {
        flight_answers(port, Some(tls_client(&good, &good)))
            .await
            .unwrap();
        let plain = flight_answers(port, None).await;
        assert!(plain.is_err(), "plain TCP to Flight port {port} answered");
        let strange = flight_answers(port, Some(tls_client(&good, &other))).await;
        assert!(
            strange.is_err(),
            "a stranger's certificate on Flight port {port} was let in"
        );
    }
    drop(cluster);

    // no key in any log
    let key_line = good.key_pem.lines().nth(1).unwrap();
    for entry in std::fs::read_dir(remote.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            assert!(
                !text.contains(key_line),
                "{} shows the private key",
                p.display()
            );
        }
    }
}

/// While its scheduler is down an executor says so once (a minute), not at
/// each 50 ms retry of Ballista's poll loop (issue: ~20 warnings a second),
/// and backs off: a stand-in that accepts and hangs up, as a scheduler
/// going down does, sees a handful of tries in 8 s, not ~160. When the
/// scheduler is back the executor is ready again within the longest delay
/// (5 s) and runs work.
#[tokio::test(flavor = "multi_thread")]
async fn an_executor_backs_off_and_says_once_that_its_scheduler_is_gone() {
    let w = World::new("sched-gone");
    let mut cluster = Cluster::start(&w, 1);
    cluster.kill_scheduler();
    let port: u16 = cluster.url.rsplit(':').next().unwrap().parse().unwrap();
    let tries = hang_up_on_each_connection(port, Duration::from_secs(8));
    assert!(
        (2..=12).contains(&tries),
        "{tries} connections to the scheduler's port in 8 s (doubling back-off \
         from 100 ms to 5 s allows ~8)"
    );
    let log = std::fs::read_to_string(w.dir.path().join("executor-0.log")).unwrap();
    assert_eq!(
        log.matches("poll work loop failed").count(),
        1,
        "the executor's log:\n{log}"
    );
    cluster.restart_scheduler();
    let back = std::time::Instant::now();
    wait_ready(
        cluster.health_ports[0],
        &w.dir.path().join("executor-0.log"),
    );
    assert!(
        back.elapsed() < Duration::from_secs(15),
        "ready again after {:?}",
        back.elapsed()
    );
    let sql = w.tauc_job(
        &[
            "sql",
            "SELECT 40 + 2 AS answer",
            "--scheduler",
            &cluster.url,
            "--format",
            "csv",
        ],
        true,
    );
    assert!(sql.ok().contains("42"), "{sql}");
}

/// Listens on `port` for `how_long`, closing each connection unanswered;
/// returns how many came.
fn hang_up_on_each_connection(port: u16, how_long: Duration) -> usize {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the scheduler's port");
    listener.set_nonblocking(true).unwrap();
    let end = std::time::Instant::now() + how_long;
    let mut n = 0;
    while std::time::Instant::now() < end {
        match listener.accept() {
            Ok((conn, _)) => {
                n += 1;
                drop(conn);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    n
}

/// `tauc-job sql` and `tauc-job report` on a cluster run every query as
/// a named Ballista job through the same path as `submit`: announced with
/// its id, listed by `status` under its name, and cancelled on the
/// scheduler by Ctrl-C.
#[tokio::test(flavor = "multi_thread")]
async fn sql_and_report_run_named_jobs_and_ctrl_c_cancels_them() {
    let w = World::new("sql-jobs");
    w.sample_day("1000");
    let (date, region) = (["--date", "2024-06-18"], ["--region", "aps1"]);
    w.submit(&[date[0], date[1], region[0], region[1]]).ok();
    w.tauc_job(
        &["submit", "reports", date[0], date[1], region[0], region[1]],
        true,
    )
    .ok();
    let cluster = Cluster::start(&w, 1);
    let sched = ["--scheduler", cluster.url.as_str()];
    let listed = |id: &str| {
        let all = w.tauc_job(&["status", sched[0], sched[1]], false);
        all.ok()
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed: {all}"))
            .to_string()
    };

    let q = w.tauc_job(
        &[
            "sql",
            "SELECT count(*) AS n FROM ods_fe_event_di",
            "--format",
            "csv",
            sched[0],
            sched[1],
        ],
        true,
    );
    assert!(q.ok().starts_with("n\n"), "{q}");
    let ids = job_ids(&q.stderr);
    assert_eq!(ids.len(), 1, "one announced job: {q}");
    let line = listed(&ids[0]);
    assert!(line.contains("tauc sql"), "{line}");
    assert!(line.contains("successful"), "{line}");

    let page = w.dir.path().join("page.html");
    let r = w.tauc_job(
        &[
            "report",
            date[0],
            date[1],
            "--out",
            page.to_str().unwrap(),
            sched[0],
            sched[1],
        ],
        true,
    );
    r.ok();
    let ids = job_ids(&r.stderr);
    assert_eq!(ids.len(), 7, "the regions and six sections: {r}");
    for (id, name) in ids.iter().zip(["regions", "cors hourly", "cors top"]) {
        let line = listed(id);
        assert!(line.contains(&format!("tauc report: {name}")), "{line}");
    }

    // a query that runs for ever, stopped by Ctrl-C
    let err_path = w.dir.path().join("sql.err");
    let mut child = std::process::Command::new(bin("tauc-job"))
        .args([
            "sql",
            "SELECT count(*) FROM ods_fe_event_di a, ods_fe_event_di b, ods_fe_event_di c, \
             ods_fe_event_di d WHERE a.line_no + b.line_no + c.line_no + d.line_no < 0",
        ])
        .args(sched)
        .args(w.store_flags())
        .current_dir(w.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let id = loop {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        if let Some(id) = job_ids(&err).into_iter().next() {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "no job id: {err}");
        assert!(child.try_wait().unwrap().is_none(), "sql ended: {err}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (status, err) = signal_and_wait(&mut child, "-INT", &err_path);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("cancelled the Ballista job"), "{err}");
    let line = listed(&id);
    assert!(
        line.contains("tauc sql") && line.contains("failed"),
        "{line}"
    );
    drop(cluster);
}

/// Sends `signal` (`-TERM`, `-INT`) to `child`, waits for it to exit, and
/// returns its status and what it wrote to `err_path`.
fn signal_and_wait(
    child: &mut std::process::Child,
    signal: &str,
    err_path: &std::path::Path,
) -> (std::process::ExitStatus, String) {
    let _ = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    (status, std::fs::read_to_string(err_path).unwrap())
}
