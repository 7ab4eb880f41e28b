//! The executors write the tables; `tauc-job` only commits: files come
//! from every executor, no data row reaches the client, two runs on the
//! same dates take turns, and a vanished input fails the run cleanly.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tauc_jobs::warehouse::tables::Table;

use crate::harness::*;

const SKIP: [&str; 4] = ["run_id", "detected_at", "started_at", "finished_at"];
const DATES: [&str; 5] = [
    "2024-06-15",
    "2024-06-16",
    "2024-06-17",
    "2024-06-18",
    "2024-06-19",
];

fn sample(w: &World) {
    sample_n(w, "1500");
}

/// Two collection days of aps1 (06-18, 06-19), `events` a day.
fn sample_n(w: &World, events: &str) {
    w.tauc_job(
        &[
            "sample",
            "--date",
            "2024-06-18",
            "--days",
            "2",
            "--events-per-day",
            events,
            "--regions",
            "aps1",
        ],
        true,
    )
    .ok();
}

/// The rows of an undisturbed in-process run of the [`sample_n`] data.
async fn reference_rows(bucket: &str, events: &str) -> Vec<Option<Vec<String>>> {
    let w = World::new(bucket);
    sample_n(&w, events);
    w.submit(&["--date", "2024-06-18", "--region", "aps1"]).ok();
    snapshot(&w).await
}

/// After a run stopped in its DWD stage: no DWD partition committed, the
/// committed ones clean, no lease left.
async fn assert_dwd_uncommitted(w: &World) {
    for table in [Table::DwdTrkEvent, Table::DwdCorsError] {
        for dt in DATES {
            assert!(
                w.read(table, dt, "aps1").await.is_none(),
                "{table:?} {dt} committed"
            );
        }
    }
    assert_clean(w).await;
    assert_eq!(w.keys("wh/_leases").await, Vec::<String>::new());
}

/// Starts a fresh scheduler and two executors and runs the layering of
/// 06-18 on them (the restart after a fault).
fn rerun_on_a_new_cluster(w: &World) -> Cluster {
    let cluster = Cluster::start(w, 2);
    let url = cluster.url.clone();
    w.submit(&[
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
        "--scheduler",
        &url,
    ])
    .ok();
    cluster
}

/// Waits until `name`'s stderr announces its Ballista job called `job`
/// (`tauc layering: dwd`) and returns its id.
fn wait_for_job(w: &World, name: &str, child: &mut std::process::Child, job: &str) -> String {
    let path = w.dir.path().join(format!("{name}.err"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let tag = format!("({job})");
    loop {
        let err = std::fs::read_to_string(&path).unwrap_or_default();
        let found = err
            .lines()
            .filter_map(|l| l.split("submitted Ballista job ").nth(1))
            .find(|rest| rest.contains(&format!(" {tag} to ")))
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(id) = found {
            return id.to_string();
        }
        assert!(Instant::now() < deadline, "no job {job} announced: {err}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "{name} ended early: {err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until job `id` has finished every stage but its last and some of
/// the last's tasks, as the scheduler's job view shows it.
fn wait_for_last_stage(cluster: &Cluster, id: &str) {
    let port: u16 = cluster.url.rsplit(':').next().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_stage_tasks = None;
    loop {
        let body = http_get(port, &format!("/tauc/v1/jobs/{id}"));
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        let n = |k: &str| view[k].as_u64().unwrap_or(0);
        assert_eq!(
            view["status"], "running",
            "job {id} ended before its last stage was seen: {body}"
        );
        if n("stages") > 0 && n("stages_done") + 1 == n("stages") {
            // tasks of the stages still held: the last stage's, once begun
            let before = *last_stage_tasks.get_or_insert(n("tasks_done"));
            if n("tasks_done") > before {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never reached its last stage: {body}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asks the scheduler whether job `id` still runs.
fn running(w: &World, cluster: &Cluster, id: &str) -> bool {
    let s = w.tauc_job(&["status", id, "--scheduler", &cluster.url], false);
    let out = s.ok();
    out.contains("running") || out.contains("queued")
}

/// Every layering partition of aps1, rendered (`None` when not committed).
async fn snapshot(w: &World) -> Vec<Option<Vec<String>>> {
    let mut out = Vec::new();
    for table in Table::LAYERING {
        for dt in DATES {
            out.push(
                w.read(table, dt, "aps1")
                    .await
                    .map(|(_, b)| render_sorted(&b, &SKIP)),
            );
        }
    }
    out
}

/// Every committed layering partition of aps1 lists existing files with
/// its row count (`read` checks both) and holds no unlisted file.
async fn assert_clean(w: &World) {
    for table in Table::LAYERING {
        for dt in DATES {
            if w.read(table, dt, "aps1").await.is_some() {
                w.assert_only_listed_files(table, dt, "aps1").await;
            }
        }
    }
}

/// The worker named in a file name `part-{run_id}-{worker}-s…`.
fn worker_of(file: &str, run_id: &str) -> String {
    let rest = file
        .strip_prefix(&format!("part-{run_id}-"))
        .unwrap_or_else(|| panic!("{file} does not carry run id {run_id}"));
    rest.split("-s").next().unwrap().to_string()
}

/// `run R committed: …; N result rows received (F files, …)`.
fn received(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.contains("result rows received"))
        .unwrap_or_else(|| panic!("no summary line in {stdout}"));
    let nums: Vec<u64> = line
        .split(';')
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (nums[0], nums[1])
}

#[tokio::test(flavor = "multi_thread")]
async fn both_executors_write_and_the_client_gets_no_data_rows() {
    let local = World::new("writes-local");
    sample(&local);
    local
        .submit(&["--date", "2024-06-18", "--region", "aps1"])
        .ok();

    let remote = World::new("writes-remote");
    sample(&remote);
    let cluster = Cluster::start(&remote, 2);
    let run = remote.submit(&[
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
        "--scheduler",
        &cluster.url,
    ]);
    let stdout = run.ok().to_string();
    assert_eq!(snapshot(&local).await, snapshot(&remote).await);

    // the data files of the four event tables: each executor wrote some
    let mut workers = BTreeSet::new();
    let mut files = 0u64;
    let mut data_rows = 0u64;
    for table in [
        Table::OdsEvent,
        Table::OdsQuarantine,
        Table::DwdTrkEvent,
        Table::DwdCorsError,
    ] {
        for dt in DATES {
            let Some((m, _)) = remote.read(table, dt, "aps1").await else {
                continue;
            };
            for f in &m.files {
                workers.insert(worker_of(f, &m.run_id));
            }
            files += m.files.len() as u64;
            data_rows += m.rows;
        }
    }
    assert_eq!(workers.len(), 2, "files from both executors: {workers:?}");
    assert!(!workers.contains("local"), "{workers:?}");
    for i in 0..2 {
        let log =
            std::fs::read_to_string(remote.dir.path().join(format!("executor-{i}.log"))).unwrap();
        assert!(
            log.contains("task wrote its files"),
            "executor {i} wrote nothing"
        );
    }
    // what reached tauc-job: one row per file and the counters, nothing else
    let (rows, file_rows) = received(&stdout);
    assert_eq!(file_rows, files, "{stdout}");
    assert!(
        rows < data_rows / 4,
        "{rows} result rows for {data_rows} data rows"
    );
    drop(cluster);
}

/// Starts `submit layering` of 2024-06-18 (plus `extra` flags) in the
/// background, its stderr to `{name}.err`.
fn spawn_layering(
    w: &World,
    name: &str,
    extra: &[&str],
    delay_ms: Option<u64>,
) -> std::process::Child {
    spawn_layering_env(w, name, extra, delay_ms, &[])
}

fn spawn_layering_env(
    w: &World,
    name: &str,
    extra: &[&str],
    delay_ms: Option<u64>,
    env: &[(&str, &str)],
) -> std::process::Child {
    let mut cmd = Command::new(bin("tauc-job"));
    cmd.envs(env.iter().copied());
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
    .current_dir(w.dir.path())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(w.dir.path().join(format!("{name}.err"))).unwrap());
    if let Some(ms) = delay_ms {
        cmd.env("TAUC_COMMIT_DELAY_MS", ms.to_string());
    }
    cmd.spawn().expect("spawn tauc-job")
}

fn wait_ok(w: &World, name: &str, mut child: std::process::Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let err = std::fs::read_to_string(w.dir.path().join(format!("{name}.err"))).unwrap();
            assert!(status.success(), "{name} failed ({status}): {err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let err = std::fs::read_to_string(w.dir.path().join(format!("{name}.err")))
                .unwrap_or_default();
            let log =
                std::fs::read_to_string(w.dir.path().join("scheduler.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{name} hung:\n{err}\nscheduler log, last lines first:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_at_once_take_turns_and_lose_nothing() {
    let w = World::new("concurrent");
    sample(&w);
    w.submit(&["--date", "2024-06-18", "--region", "aps1"]).ok();
    let reference = snapshot(&w).await;
    assert!(reference.iter().filter(|p| p.is_some()).count() >= 15);

    // started together, one second apart, and with one commit slowed
    let pairs: [(u64, Option<u64>); 3] = [(0, None), (1000, None), (300, Some(400))];
    for (i, (gap_ms, delay)) in pairs.into_iter().enumerate() {
        let a = spawn_layering(&w, &format!("a{i}"), &[], delay);
        std::thread::sleep(Duration::from_millis(gap_ms));
        let b = spawn_layering(&w, &format!("b{i}"), &[], None);
        let err_a = wait_ok(&w, &format!("a{i}"), a);
        let err_b = wait_ok(&w, &format!("b{i}"), b);
        assert!(
            err_a.contains("waiting: run") || err_b.contains("waiting: run"),
            "pair {i}: neither run waited for the other"
        );
        // every manifest lists existing files with its row count
        // (`read` checks both), no unlisted file is left, rows unchanged
        assert_clean(&w).await;
        assert_eq!(snapshot(&w).await, reference, "pair {i}");
    }
    // every lease was given back
    assert_eq!(w.keys("wh/_leases").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vanished_input_file_fails_the_run_naming_it() {
    let w = World::new("vanished");
    sample(&w);
    w.submit(&["--date", "2024-06-19", "--region", "aps1"]).ok();
    let (m, _) = w
        .read(Table::OdsEvent, "2024-06-19", "aps1")
        .await
        .expect("ods 2024-06-19");
    let gone = format!(
        "wh/ods/ods_fe_event_di/dt=2024-06-19/region=aps1/{}",
        m.files[0]
    );
    let store = w
        .engine
        .registry
        .for_location(&tauc_jobs::store::Location::parse(&w.warehouse()).unwrap())
        .unwrap();
    object_store::ObjectStoreExt::delete(store.as_ref(), &gone.as_str().into())
        .await
        .unwrap();
    // loading 06-18 rebuilds DWD 06-15..06-19, whose windows read ODS 06-19
    let run = w.submit(&["--date", "2024-06-18", "--region", "aps1"]);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains(&m.files[0]), "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executor_killed_while_writing_leaves_only_strays() {
    let local = World::new("kill-local");
    sample(&local);
    local
        .submit(&["--date", "2024-06-18", "--region", "aps1"])
        .ok();
    let reference = snapshot(&local).await;

    let w = World::new("kill-remote");
    sample(&w);
    let mut cluster = Cluster::start_with(
        &w,
        2,
        &["--executor-timeout-secs", "8"],
        &["--heartbeat-secs", "2"],
    );
    let job = spawn_layering(&w, "job", &["--scheduler", &cluster.url], None);
    // kill executor 0 as soon as the first data file of the run exists
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let keys = w.keys("wh/ods/ods_fe_event_di").await;
        if keys.iter().any(|k| k.contains("/part-")) {
            break;
        }
        assert!(Instant::now() < deadline, "no data file appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.kill_executor(0);
    let err = wait_ok(&w, "job", job);
    assert!(!err.contains("panicked"), "{err}");
    let log = std::fs::read_to_string(w.dir.path().join("scheduler.log")).unwrap();
    assert!(
        log.contains("Removing executor"),
        "the scheduler never noticed the dead executor:\n{log}"
    );
    // Ballista re-ran the lost work on executor 1: the same rows as a
    // fault-free run, and every committed partition holds only its files
    assert_eq!(snapshot(&w).await, reference);
    assert_clean(&w).await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_memory_limit_completes_and_scratch_is_removed() {
    let w = World::new("spill");
    sample(&w);
    w.submit(&["--date", "2024-06-18", "--region", "aps1"]).ok();
    let reference = snapshot(&w).await;
    let work = w.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // 32 MiB split over 16 partitions: with the stock 10 MiB sort
    // reservation this run failed with ResourcesExhausted; it completes
    // with the same rows
    w.submit(&[
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
        "--memory-limit",
        "32M",
        "--work-dir",
        work.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(snapshot(&w).await, reference);
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

/// The bytes of the summary's `spilled:` line (0 for "nothing").
fn spilled_bytes(stdout: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("spilled: "))
        .unwrap_or_else(|| panic!("no spilled line in:\n{stdout}"));
    if line.contains("nothing") {
        return 0;
    }
    line["spilled: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable spilled line: {line}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_day_over_the_memory_limit_spills_to_disk_and_gives_the_same_rows() {
    let w = World::new("spill-day");
    w.sample_day("20000");
    let roomy = w.submit(&["--date", "2024-06-18", "--region", "aps1"]);
    assert_eq!(spilled_bytes(roomy.ok()), 0, "{roomy}");
    let reference = snapshot(&w).await;
    // the DWD stage's sorts hold far more than 16 MiB of this day
    let tight = w.submit(&[
        "--date",
        "2024-06-18",
        "--region",
        "aps1",
        "--memory-limit",
        "16M",
    ]);
    assert!(spilled_bytes(tight.ok()) > 0, "nothing spilled: {tight}");
    assert_eq!(snapshot(&w).await, reference);
    assert_clean(&w).await;
}

/// An executor SIGKILLed while the DWD job runs, with shuffle output the
/// job still needs, on a cluster in `--task-mode pull` (the default): the
/// job completes on the remaining executor with the rows of a fault-free
/// run — also when Ballista hands back the output of a re-run writer task
/// twice (the commit keeps one attempt per piece of work). Should Ballista
/// leave the job where it goes no further (seen once in CI, on 2026-12-07,
/// never in 16 runs here), `tauc-job` fails it as stalled, as in push
/// mode below, and after a restart the same command completes.
#[tokio::test(flavor = "multi_thread")]
async fn an_executor_killed_during_the_dwd_job_completes_on_the_other() {
    kill_an_executor_during_the_dwd_job("kill-dwd-pull", "pull", false).await;
}

/// The same kill, once the DWD job's last stage — the one that writes the
/// files — has begun: Ballista rolls that stage back and runs it again,
/// and what its first attempt's finished tasks delivered stays listed
/// beside the re-run's output. The commit keeps one attempt per task: the
/// rows are those of a fault-free run, each once.
#[tokio::test(flavor = "multi_thread")]
async fn an_executor_killed_in_the_last_dwd_stage_leaves_each_row_once() {
    kill_an_executor_during_the_dwd_job("kill-dwd-last", "pull", true).await;
}

/// The same in `--task-mode push`. Ballista 55 rolls the lost stages back;
/// sometimes it runs them again on the other executor and the job
/// completes, sometimes it runs nothing more (it loses the surviving
/// executor's slots) — `tauc-job` takes the job for stalled, cancels it
/// and exits 1 saying so, with nothing of the stage committed and its
/// leases released (never a hang), and after the cluster is restarted the
/// same command completes. Either way the rows are those of a fault-free
/// run.
#[tokio::test(flavor = "multi_thread")]
async fn an_executor_killed_during_the_dwd_job_in_push_mode_never_hangs_or_changes_rows() {
    kill_an_executor_during_the_dwd_job("kill-dwd-push", "push", false).await;
}

async fn kill_an_executor_during_the_dwd_job(name: &str, mode: &str, in_last_stage: bool) {
    let reference = reference_rows(&format!("{name}-local"), "20000").await;

    let w = World::new(name);
    sample_n(&w, "20000");
    let mut cluster = Cluster::start_with(
        &w,
        2,
        &["--executor-timeout-secs", "8", "--task-mode", mode],
        &["--heartbeat-secs", "2", "--task-mode", mode],
    );
    let mut job = spawn_layering_env(
        &w,
        "job",
        &["--scheduler", &cluster.url],
        None,
        &[("TAUC_STALL_SECS", "10")],
    );
    let id = wait_for_job(&w, "job", &mut job, "tauc layering: dwd");
    if in_last_stage {
        wait_for_last_stage(&cluster, &id);
    }
    assert!(
        running(&w, &cluster, &id),
        "the DWD job {id} ended before the kill"
    );
    cluster.kill_executor(0);
    // a hang names what the scheduler shows of the job and what the job,
    // the scheduler and the surviving executor last said
    let logs = [
        w.dir.path().join("job.err"),
        w.dir.path().join("scheduler.log"),
        w.dir.path().join("executor-1.log"),
    ];
    let port: u16 = cluster.url.rsplit(':').next().unwrap().parse().unwrap();
    let view = || http_get(port, &format!("/tauc/v1/jobs/{id}"));
    let status = wait_exit_showing(job, Duration::from_secs(300), &logs, Some(&view));
    let err = std::fs::read_to_string(w.dir.path().join("job.err")).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    let log = std::fs::read_to_string(w.dir.path().join("scheduler.log")).unwrap();
    assert!(
        log.contains("Removing executor"),
        "the scheduler never noticed:\n{log}"
    );
    match status.code() {
        // Ballista ran the lost work again on executor 1
        Some(0) => {}
        // it left the job in a state it does not leave by itself (push
        // mode often; pull mode was seen once, in CI): the run fails
        // cleanly, saying so, and after a restart the same command
        // completes
        Some(1) => {
            assert!(
                err.contains(&format!("Ballista job {id} stalled (")),
                "{err}"
            );
            assert!(err.contains("run the same command again"), "{err}");
            assert_dwd_uncommitted(&w).await;
            drop(cluster);
            cluster = rerun_on_a_new_cluster(&w);
        }
        other => panic!("exit {other:?}: {err}"),
    }
    assert_eq!(snapshot(&w).await, reference);
    assert_clean(&w).await;
    drop(cluster);
}

/// Waits for `child` to exit; panics (killing it) after `limit`.
fn wait_exit(child: std::process::Child, limit: Duration) -> std::process::ExitStatus {
    wait_exit_showing(child, limit, &[], None)
}

/// [`wait_exit`]; the panic shows `state()` first, then the last lines of
/// `logs` (each cut short: a plan's lines are long).
fn wait_exit_showing(
    mut child: std::process::Child,
    limit: Duration,
    logs: &[std::path::PathBuf],
    state: Option<&dyn Fn() -> String>,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let shown = state.map(|f| f()).unwrap_or_default();
            let _ = child.kill();
            let tails: Vec<String> = logs.iter().map(|p| log_tail(p, 15)).collect();
            panic!(
                "tauc-job hung after {limit:?}; the job: {shown}\n{}",
                tails.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` unindented lines of the log at `path`, each cut to 240
/// characters.
fn log_tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.chars().take(240).collect())
        .collect();
    let tail = lines[lines.len().saturating_sub(n)..].join("\n");
    format!("--- the last lines of {}:\n{tail}", path.display())
}

/// The scheduler SIGKILLed while the DWD job runs: `tauc-job` exits 1
/// saying what happened and how to resume, commits nothing of the stage and
/// releases its leases; after a restart the same command gives the rows of
/// a fault-free run.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_scheduler_fails_the_run_cleanly_and_a_rerun_completes_it() {
    let reference = reference_rows("kill-sched-local", "20000").await;

    let w = World::new("kill-sched-remote");
    sample_n(&w, "20000");
    let mut cluster = Cluster::start(&w, 2);
    let mut job = spawn_layering(&w, "job", &["--scheduler", &cluster.url], None);
    let id = wait_for_job(&w, "job", &mut job, "tauc layering: dwd");
    assert!(
        running(&w, &cluster, &id),
        "the DWD job {id} ended before the kill"
    );
    cluster.kill_scheduler();
    let status = wait_exit(job, Duration::from_secs(120));
    let err = std::fs::read_to_string(w.dir.path().join("job.err")).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "lost the scheduler at {} while Ballista job {id}",
            cluster.url
        )),
        "{err}"
    );
    assert!(err.contains("run the same command again"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // the ODS stage before the kill is committed whole; no DWD partition is
    assert_dwd_uncommitted(&w).await;
    assert!(
        w.read(Table::OdsEvent, "2024-06-18", "aps1")
            .await
            .is_some()
    );
    drop(cluster);

    let cluster = rerun_on_a_new_cluster(&w);
    assert_eq!(snapshot(&w).await, reference);
    assert_clean(&w).await;
    drop(cluster);
}

/// Waits until `name`'s stderr contains `needle`.
fn wait_for_line(w: &World, name: &str, child: &mut std::process::Child, needle: &str) {
    let path = w.dir.path().join(format!("{name}.err"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let err = std::fs::read_to_string(&path).unwrap_or_default();
        if err.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "no '{needle}' in: {err}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "{name} ended early: {err}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The S3 server down when the run starts, for 12 s: its first reads are
/// retried for the whole `[s3] retry-timeout-secs` budget (30 s by
/// default), not given up after a fixed ten tries (~4 s), and the run
/// commits the rows of an undisturbed run. Down while the ODS manifests
/// are written (each write held 1 s by the test hook, so the first one
/// meets the outage): down for 4 s it is retried through and the run
/// commits the same rows; down for longer than
/// a 2 s retry budget, the run fails (exit 1) naming the store error, with
/// nothing committed, and the same command afterwards completes.
#[tokio::test(flavor = "multi_thread")]
async fn an_s3_outage_is_retried_through_and_a_long_one_fails_cleanly() {
    let reference = reference_rows("outage-ref", "1500").await;

    let mut w = World::new("outage-start");
    sample(&w);
    w.stop_s3();
    let job = spawn_layering_env(&w, "start", &[], None, &[]);
    std::thread::sleep(Duration::from_secs(12));
    w.start_s3();
    wait_ok(&w, "start", job);
    assert_eq!(snapshot(&w).await, reference);
    assert_clean(&w).await;

    let mut w = World::new("outage");
    sample(&w);
    let mut job = spawn_layering_env(&w, "short", &[], Some(1000), &[]);
    wait_for_line(&w, "short", &mut job, "stage=ods: committing");
    w.stop_s3();
    std::thread::sleep(Duration::from_secs(4));
    w.start_s3();
    wait_ok(&w, "short", job);
    assert_eq!(snapshot(&w).await, reference);
    assert_clean(&w).await;

    let mut w = World::new("outage-long");
    sample(&w);
    let mut job = spawn_layering_env(
        &w,
        "long",
        &[],
        Some(1000),
        &[("TAUC_S3_RETRY_TIMEOUT_SECS", "2")],
    );
    wait_for_line(&w, "long", &mut job, "stage=ods: committing");
    w.stop_s3();
    let status = wait_exit(job, Duration::from_secs(60));
    w.start_s3();
    let err = std::fs::read_to_string(w.dir.path().join("long.err")).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("object store"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(snapshot(&w).await.iter().all(Option::is_none), "{err}");
    w.submit(&["--date", "2024-06-18", "--region", "aps1"]).ok();
    assert_eq!(snapshot(&w).await, reference);
    assert_clean(&w).await;
}
