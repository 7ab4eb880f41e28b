//! Queries run as Ballista jobs the user can see and stop: each job's id
//! is logged when the scheduler accepts it, its progress (stages and tasks
//! done, from the scheduler's job view) is shown while it runs, and on
//! Ctrl-C or SIGTERM the job is cancelled on the scheduler — not left to
//! run to the end for no one — and the query fails with
//! [`Error::Interrupted`] before anything is committed.
//!
//! Signals are a process's, so the state here is too: where progress
//! goes, and whether a stop was asked. The scheduler a query runs on is
//! its session's: [`crate::engine::Engine::connect`] puts the client in the
//! session config, where [`for_each_batch`] finds it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use ballista_core::error::BallistaError;
use ballista_core::execution_plans::DistributedQueryExec;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::TryStreamExt;
use tokio::sync::watch;

use crate::engine::client::job_view::JobView;
use crate::engine::client::remote::{self, SchedulerClient};
use crate::error::{Error, Result, Signal};

static STOP: LazyLock<watch::Sender<Option<Signal>>> = LazyLock::new(|| watch::channel(None).0);
static DISPLAY: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// The scheduler a session's jobs run on (progress comes from its job
/// view); an in-process session has none.
pub fn scheduler_of(config: &SessionConfig) -> Option<SchedulerClient> {
    config
        .get_extension::<SchedulerClient>()
        .map(|c| c.as_ref().clone())
}

/// Do this session's jobs run on a cluster (rather than the in-process
/// engine)?
pub fn on_cluster(ctx: &SessionContext) -> bool {
    scheduler_of(ctx.state().config()).is_some()
}

/// Where cluster progress is drawn: a terminal's spinner (its prefix), or
/// `None` for log lines.
pub fn set_display(bar: Option<indicatif::ProgressBar>) {
    *DISPLAY.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

/// Starts answering SIGINT and SIGTERM: the first asks the running query
/// to stop (it cancels its Ballista job, the run releases its leases and
/// commits nothing); a second exits at once.
pub fn install() {
    tokio::spawn(async {
        let first = next_signal().await;
        tracing::warn!(
            signal = first.name(),
            "stopping: cancelling the running Ballista job; nothing of this run will be committed (a second signal exits at once)"
        );
        STOP.send_replace(Some(first));
        let second = next_signal().await;
        eprintln!("tauc-job: {} again: exiting at once", second.name());
        std::process::exit(i32::from(second.exit_code()));
    });
}

async fn next_signal() -> Signal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                _ = int.recv() => Signal::Interrupt,
                _ = term.recv() => Signal::Terminate,
            },
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}

/// Fails with [`Error::Interrupted`] once a stop was asked: called before
/// each query and before each commit.
pub fn check() -> Result<()> {
    match *STOP.borrow() {
        Some(s) => Err(Error::Interrupted(s)),
        None => Ok(()),
    }
}

/// Resolves once a stop signal has come (at once if one already has):
/// a long-running command (`tauc-job follow`) waits on it between runs.
pub async fn stop_asked() -> Signal {
    stopped().await
}

async fn stopped() -> Signal {
    let mut rx = STOP.subscribe();
    match rx.wait_for(Option::is_some).await {
        Ok(s) => s.unwrap_or(Signal::Interrupt),
        Err(_) => std::future::pending().await,
    }
}

/// How long a cluster job in a state Ballista does not leave by itself
/// (see [`StallWatch`]) may go without finishing a task before it is taken
/// for stalled: `TAUC_STALL_SECS`, default 120.
fn stall_after() -> Duration {
    let secs = std::env::var("TAUC_STALL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// Runs `df` as one job named `name` and gathers its batches; a stop
/// signal cancels the job on the scheduler, and so does a stall
/// ([`Error::Stalled`]: after an executor loss Ballista 55 may leave a job
/// where it goes no further — see [`StallWatch`]), so the run fails
/// instead of hanging.
pub async fn collect(df: DataFrame, name: &str) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    let mut gathering = 0;
    // the batches of a failed attempt are dropped, not handed on: a job
    // whose results died with an executor part-way through the fetch is
    // submitted again too
    run_attempts(df, name, true, &mut |attempt, b| {
        if attempt != gathering {
            (gathering, batches) = (attempt, Vec::new());
        }
        batches.push(b);
        Ok(())
    })
    .await?;
    Ok(batches)
}

/// Runs `df` as one job named `name` like [`collect`], handing each batch
/// to `each` as it arrives instead of holding them all (`tauc-job sql`
/// streams a large result to its output). A job that failed on a lost
/// executor is submitted again only while `each` has been given nothing
/// (a batch already handed on cannot be taken back).
pub async fn for_each_batch(
    df: DataFrame,
    name: &str,
    mut each: impl FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    run_attempts(df, name, false, &mut |_, b| each(b)).await
}

/// Submits `df` until an attempt succeeds or fails other than by a lost
/// executor ([`FETCH_ATTEMPTS`] at most), handing each batch to `each`
/// with its attempt's number; once one was handed on, a failed attempt is
/// submitted again only if `take_back` (the receiver drops an attempt's
/// batches when the next begins).
async fn run_attempts(
    df: DataFrame,
    name: &str,
    take_back: bool,
    each: &mut dyn FnMut(u32, RecordBatch) -> Result<()>,
) -> Result<()> {
    check()?;
    let (state, logical) = df.into_parts();
    let mut config = state.config().clone();
    config.options_mut().set("ballista.job.name", name)?;
    let client = scheduler_of(&config);
    let task_ctx = Arc::new(TaskContext::from(&state).with_session_config(config));
    for attempt in 1.. {
        let plan = state.create_physical_plan(&logical).await?;
        let mut delivered = false;
        let mut handed = |b: RecordBatch| {
            delivered = true;
            each(attempt, b)
        };
        let result = run_once(&plan, task_ctx.clone(), client.as_ref(), name, &mut handed).await;
        let again = take_back || !delivered;
        match result {
            Err(e) if attempt < FETCH_ATTEMPTS && again && lost_an_executor(&e) => {
                tracing::warn!(error = %e, attempt, "the job failed on a lost executor (its results or its shuffle output gone): submitting the job again");
            }
            r => return r,
        }
    }
    unreachable!("the loop returns")
}

/// Submissions of a job whose finished results die with an executor.
const FETCH_ATTEMPTS: u32 = 3;

/// Did the job fail only because an executor was lost? Either its
/// finished results died with it (the client's fetch failed, or could not
/// even connect: Ballista 55 keeps a dead executor's finished output in
/// the job's result list), or a task's read of shuffle output broke off
/// when the executor serving it died (Ballista fails the job on that
/// error rather than running the task again). Submitting the job afresh
/// is safe: nothing was committed, and the files a lost attempt wrote are
/// not listed by the commit (strays it deletes). A lost scheduler never
/// gets here: it is told apart first ([`Error::SchedulerLost`]).
fn lost_an_executor(e: &Error) -> bool {
    let Error::DataFusion(e) = e else {
        return false;
    };
    // the client's fetch error, seen through DataFusion's wrappers as
    // Ballista itself looks for it
    match e.find_root() {
        DataFusionError::External(inner) => matches!(
            inner.downcast_ref::<BallistaError>(),
            Some(BallistaError::FetchFailed(..))
        ),
        // `fetch_partition` formats its connection error into a string, and
        // a failed job's error arrives as text
        DataFusionError::Execution(msg) => {
            msg.starts_with("GrpcConnectionError(") || broken_shuffle_read(msg)
        }
        _ => false,
    }
}

/// A failed job's error is a shuffle read (Arrow IPC over Flight from
/// another executor) that broke off at the transport.
fn broken_shuffle_read(msg: &str) -> bool {
    msg.contains("IpcError(")
        && ["h2 protocol error", "tcp connect error", "broken pipe"]
            .iter()
            .any(|t| msg.contains(t))
}

/// Runs `plan` on the engine (on `client`'s scheduler, or in-process),
/// watched, handing its batches to `each`.
async fn run_once(
    plan: &Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    client: Option<&SchedulerClient>,
    name: &str,
    each: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let shown = Arc::new(AtomicBool::new(false));
    let mut watcher = tokio::spawn(watch_job(
        plan.clone(),
        client.cloned(),
        name.to_string(),
        shown.clone(),
        stall_after(),
    ));
    // the receiver failing (say, --out cannot be written) leaves no one to
    // read the job's results: it is cancelled like a stopped one
    let mut refused = false;
    let drain = async {
        let mut stream = execute_stream(plan.clone(), task_ctx)?;
        while let Some(batch) = stream.try_next().await? {
            each(batch).inspect_err(|_| refused = true)?;
        }
        Ok::<(), Error>(())
    };
    let result = tokio::select! {
        r = drain => r,
        s = stopped() => Err(Error::Interrupted(s)),
        Ok(Some((job_id, why))) = &mut watcher => Err(Error::Stalled { job_id, why }),
    };
    watcher.abort();
    // a job quicker than the watcher's first look is announced all the same
    if let Some(id) = job_id(plan) {
        announce(&id, name, client, &shown);
    }
    let stopped = matches!(result, Err(Error::Interrupted(_) | Error::Stalled { .. }));
    if let (true, Some(id)) = (stopped || refused, job_id(plan)) {
        cancel(client, &id).await;
    }
    clear_display();
    match result {
        Err(e) if !stopped && !refused => Err(scheduler_lost(e, plan, client, name).await),
        r => r,
    }
}

/// A cluster job's error as [`Error::SchedulerLost`] when the scheduler no
/// longer answers: the client's own error is a raw gRPC status.
async fn scheduler_lost(
    e: Error,
    plan: &Arc<dyn ExecutionPlan>,
    client: Option<&SchedulerClient>,
    name: &str,
) -> Error {
    let Some(client) = client else {
        return e;
    };
    if client.healthy().await {
        return e;
    }
    Error::SchedulerLost {
        url: client.url().to_string(),
        job_id: job_id(plan).unwrap_or_else(|| "(not yet accepted)".into()),
        name: name.to_string(),
        cause: remote::chain(&e),
    }
}

/// The Ballista job id of a plan submitted to a scheduler, once accepted.
pub(crate) fn job_id(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>()
        .and_then(|q| q.job_id())
        .map(|id| id.to_string())
}

/// Cancels `job_id` on `client`'s scheduler (in-process jobs stop with
/// their stream).
pub(crate) async fn cancel(client: Option<&SchedulerClient>, job_id: &str) {
    match client {
        Some(c) => match c.cancel(job_id).await {
            Ok(()) => tracing::warn!(job_id, scheduler = c.url(), "cancelled the Ballista job"),
            Err(e) => {
                tracing::error!(job_id, error = %e, "could not cancel the Ballista job: cancel it with `tauc-job cancel {job_id}`")
            }
        },
        // the in-process scheduler ends with this process
        None => tracing::warn!(job_id, "stopped the in-process job"),
    }
}

/// Says which job `id` is, once: on stderr for a cluster's job (whatever
/// the log level: the id is what `status` and `cancel` take), in the log
/// for an in-process one. `shown` makes the second call a no-op.
fn announce(id: &str, name: &str, client: Option<&SchedulerClient>, shown: &AtomicBool) {
    if shown.swap(true, Ordering::SeqCst) {
        return;
    }
    let Some(c) = client else {
        tracing::debug!(job_id = %id, job_name = %name, "in-process Ballista job submitted");
        return;
    };
    let url = c.url();
    let line = format!(
        "submitted Ballista job {id} ({name}) to {url}: `tauc-job status {id} --scheduler {url}` \
         shows it, Ctrl-C cancels it"
    );
    match DISPLAY.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    }
}

/// Announces the job once the scheduler has accepted it, then shows its
/// progress until aborted. It also ends, with the job id and why, when the
/// job stalls: no task of it finished for `stall` while it was in a state
/// Ballista 55 does not leave by itself — its finished tasks went back (an
/// executor was lost with their output; Ballista rolls the stages back
/// but in some plans never runs them again), or [`JobView::stuck`] held
/// the whole time. An in-process job is announced and left (`None`).
async fn watch_job(
    plan: Arc<dyn ExecutionPlan>,
    client: Option<SchedulerClient>,
    name: String,
    shown: Arc<AtomicBool>,
    stall: Duration,
) -> Option<(String, String)> {
    let id = loop {
        if let Some(id) = job_id(&plan) {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    announce(&id, &name, client.as_ref(), &shown);
    let client = client?;
    let mut last_log = Instant::now();
    let mut stall_watch = StallWatch::default();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(Some(v)) = client.job(&id).await else {
            continue;
        };
        show_progress(&v, &mut last_log);
        if let Some(why) = stall_watch.look(&v, Instant::now(), stall) {
            return Some((id, why));
        }
    }
}

/// What the watcher remembers of a job's progress between looks.
#[derive(Debug, Default)]
struct StallWatch {
    /// The most tasks ever seen done.
    best: usize,
    /// Tasks done at the last look, and since when.
    last: Option<(usize, Instant)>,
    /// Have tasks done ever gone down?
    went_back: bool,
    /// Since when [`JobView::stuck`] has held without a break.
    stuck_since: Option<Instant>,
    /// The most live executors seen, and whether fewer were seen since.
    most_executors: usize,
    lost_executor: bool,
}

/// How many stall limits a job that lost an executor may go without a
/// task finishing in a state none of the watch's rules names, before it is
/// taken for stalled all the same: Ballista 55 was seen stuck after an
/// executor loss in more ways than those rules know (once in CI, a pull
/// job's last stage never finished), and a task may legitimately run long
/// — three limits (6 min by default) with no task finished in the whole
/// job after a loss is taken for the former.
const AFTER_A_LOSS: u32 = 3;

impl StallWatch {
    /// Takes one look at `v` (at `now`): why the job is stalled, once it
    /// has gone `stall` without a task finishing in a state it does not
    /// leave by itself.
    fn look(&mut self, v: &JobView, now: Instant, stall: Duration) -> Option<String> {
        self.went_back |= v.tasks_done < self.best;
        self.best = self.best.max(v.tasks_done);
        if self.last.is_none_or(|(done, _)| done != v.tasks_done) {
            self.last = Some((v.tasks_done, now));
        }
        self.lost_executor |= v.executors < self.most_executors;
        self.most_executors = self.most_executors.max(v.executors);
        self.stuck_since = match (v.stuck(), self.stuck_since) {
            (true, since) => since.or(Some(now)),
            (false, _) => None,
        };
        self.verdict(v, now, stall)
    }

    /// Why the job is stalled at `now`, from what [`StallWatch::look`]
    /// has gathered (`None` while it may still go on).
    fn verdict(&self, v: &JobView, now: Instant, stall: Duration) -> Option<String> {
        let secs = stall.as_secs();
        let quiet = self.last.is_some_and(|(_, t)| now - t >= stall);
        let stuck = self.stuck_since.is_some_and(|t| now - t >= stall);
        match () {
            _ if !quiet => None,
            _ if stuck && v.tasks_stranded > 0 => Some(format!(
                "{} of its tasks stayed bound to an executor the scheduler had lost, for {secs} s",
                v.tasks_stranded
            )),
            _ if stuck && v.tasks_pending == 0 => Some(format!(
                "for {secs} s none of its tasks ran or waited to run: its remaining stages waited for input no stage was producing"
            )),
            _ if stuck => Some(format!(
                "for {secs} s its {} waiting tasks were given no slot while nothing ran on the cluster",
                v.tasks_pending
            )),
            _ if self.went_back => Some(format!(
                "it lost finished tasks with an executor, the scheduler rolled the lost stages back and ran nothing more for {secs} s"
            )),
            _ if self.lost_executor
                && self
                    .last
                    .is_some_and(|(_, t)| now - t >= stall * AFTER_A_LOSS) =>
            {
                Some(format!(
                    "the cluster lost an executor and no task of the job finished for {} s",
                    secs * u64::from(AFTER_A_LOSS)
                ))
            }
            _ => None,
        }
    }
}

/// One look at a cluster job: the spinner's prefix, or a log line every
/// 5 s.
fn show_progress(v: &JobView, last_log: &mut Instant) {
    let line = format!(
        "job {}: stages {}/{}, tasks {}/{}",
        v.job_id, v.stages_done, v.stages, v.tasks_done, v.tasks
    );
    let bar = DISPLAY.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.set_prefix(line),
        None if last_log.elapsed() > Duration::from_secs(5) => {
            *last_log = Instant::now();
            tracing::info!(job_id = %v.job_id, stages_done = v.stages_done, stages = v.stages,
                tasks_done = v.tasks_done, tasks = v.tasks, "cluster progress");
        }
        None => {}
    }
}

fn clear_display() {
    if let Some(bar) = DISPLAY.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        bar.set_prefix("");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_failed_by_a_lost_executor_is_submitted_again_and_others_are_not() {
        let refused = BallistaError::GrpcConnectionError(
            "Error connecting to Ballista scheduler or executor at http://127.0.0.1:1".into(),
        );
        let as_fetch = DataFusionError::Execution(format!("{refused:?}"));
        assert!(lost_an_executor(&Error::DataFusion(as_fetch)));
        let failed = BallistaError::FetchFailed("e1".into(), 3, 1, "gone".into());
        let as_stream = DataFusionError::External(Box::new(failed));
        assert!(lost_an_executor(&Error::DataFusion(as_stream)));
        // as a job failed by a task whose shuffle read broke off
        let broken = "Job 038J failed: Job failed due to stage 12 failed: Task failed due to runtime execution error: DataFusionError(Shared(External(ArrowError(IpcError(\"Arrow error: Ipc error: code: 'Unknown error', message: \\\"h2 protocol error: error reading a body from connection\\\", source: hyper::Error(Body, Error { kind: Io(Custom { kind: BrokenPipe, error: \\\"stream closed because of a broken pipe\\\" }) })\")))))";
        assert!(lost_an_executor(&Error::DataFusion(
            DataFusionError::Execution(broken.into())
        )));
        let s3 = "Job 038J failed: Task failed due to runtime execution error: object store: Generic S3 error: error sending request: tcp connect error";
        assert!(!lost_an_executor(&Error::DataFusion(
            DataFusionError::Execution(s3.into())
        )));
        let other = DataFusionError::Execution("division by zero".into());
        assert!(!lost_an_executor(&Error::DataFusion(other)));
        assert!(!lost_an_executor(&Error::Invariant("x".into())));
    }

    /// A running job's view on a cluster where another job runs a task.
    fn view(done: usize, running: usize, pending: usize, stranded: usize) -> JobView {
        JobView {
            job_id: "j".into(),
            name: "n".into(),
            status: "running".into(),
            error: None,
            stages_done: 0,
            stages: 3,
            tasks_done: done,
            tasks: 20,
            tasks_running: running,
            tasks_pending: pending,
            tasks_stranded: stranded,
            cluster_tasks_running: running + 1,
            executors: 2,
            started_at: 1,
            ended_at: 0,
        }
    }

    /// Feeds `looks` one second apart; the second at which the watch
    /// first calls the job stalled, and why.
    fn first_stall(looks: &[JobView]) -> Option<(usize, String)> {
        let mut w = StallWatch::default();
        let t0 = Instant::now();
        looks.iter().enumerate().find_map(|(i, v)| {
            let now = t0 + Duration::from_secs(i as u64);
            w.look(v, now, Duration::from_secs(5)).map(|why| (i, why))
        })
    }

    #[test]
    fn a_long_task_on_a_live_executor_is_never_taken_for_stalled() {
        // one task runs for a minute, others wait for slots: no stall
        let looks: Vec<_> = (0..60).map(|_| view(4, 1, 6, 0)).collect();
        assert_eq!(first_stall(&looks), None);
        // nothing runs, but work waits for a slot (the cluster is busy)
        let looks: Vec<_> = (0..60).map(|_| view(4, 0, 6, 0)).collect();
        assert_eq!(first_stall(&looks), None);
    }

    #[test]
    fn tasks_left_on_a_lost_executor_stall_the_job_once_quiet_for_the_limit() {
        let mut looks = vec![view(3, 2, 0, 0), view(4, 2, 0, 2)];
        looks.extend((0..10).map(|_| view(4, 2, 0, 2)));
        let (at, why) = first_stall(&looks).unwrap();
        assert_eq!(at, 6, "{why}");
        assert!(
            why.contains("2 of its tasks stayed bound to an executor"),
            "{why}"
        );
        // a task finishing restarts the wait
        let mut looks = vec![view(4, 2, 0, 2); 4];
        looks.extend((5..16).map(|d| view(d, 2, 0, 2)));
        assert_eq!(first_stall(&looks), None);
    }

    #[test]
    fn a_job_with_nothing_running_or_waiting_stalls_and_a_passing_moment_does_not() {
        let looks = vec![view(7, 0, 0, 0); 8];
        let (at, why) = first_stall(&looks).unwrap();
        assert_eq!(at, 5);
        assert!(
            why.contains("none of its tasks ran or waited to run"),
            "{why}"
        );
        // between stages for a moment, then the next one runs
        let mut looks = vec![view(7, 1, 0, 0); 3];
        looks.extend([view(7, 0, 0, 0), view(7, 2, 14, 0)]);
        looks.extend(vec![view(7, 2, 12, 0); 10]);
        assert_eq!(first_stall(&looks), None);
    }

    #[test]
    fn waiting_tasks_no_slot_is_given_while_the_cluster_idles_stall_the_job() {
        let idle = JobView {
            cluster_tasks_running: 0,
            ..view(1, 0, 8, 0)
        };
        let (at, why) = first_stall(&vec![idle.clone(); 8]).unwrap();
        assert_eq!(at, 5);
        assert!(
            why.contains("its 8 waiting tasks were given no slot"),
            "{why}"
        );
        // the same wait while another job holds the slots is no stall
        assert_eq!(first_stall(&vec![view(1, 0, 8, 0); 60]), None);
    }

    #[test]
    fn after_an_executor_loss_three_limits_without_a_finished_task_are_a_stall() {
        // tasks run on the live executor and never finish (a state no
        // other rule names)
        let mut looks = vec![view(9, 2, 14, 0), view(9, 2, 14, 0)];
        let one_left = JobView {
            executors: 1,
            ..view(9, 2, 14, 0)
        };
        looks.extend(vec![one_left.clone(); 20]);
        let (at, why) = first_stall(&looks).unwrap();
        assert_eq!(at, 15, "{why}");
        assert!(
            why.contains("lost an executor and no task of the job finished for 15 s"),
            "{why}"
        );
        // without a loss the same wait is a long task
        assert_eq!(first_stall(&vec![view(9, 2, 14, 0); 60]), None);
        // after a loss, tasks that keep finishing are progress
        let mut looks = vec![view(9, 2, 14, 0)];
        looks.extend((10..40).map(|d| JobView {
            tasks_done: 9 + (d - 10) / 4,
            ..one_left.clone()
        }));
        assert_eq!(first_stall(&looks), None);
    }

    #[test]
    fn finished_tasks_going_back_then_nothing_for_the_limit_is_a_stall() {
        let mut looks = vec![view(10, 2, 0, 0), view(6, 0, 4, 0)];
        looks.extend(vec![view(6, 0, 4, 0); 6]);
        let (at, why) = first_stall(&looks).unwrap();
        assert_eq!(at, 6);
        assert!(why.contains("rolled the lost stages back"), "{why}");
    }
}
