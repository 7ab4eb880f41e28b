//! `tauc-job follow`: the warehouse kept minutes behind the browser by
//! incremental `daily` micro-batches, one every `every`, each over the
//! UTC collection dates yesterday and today.
//!
//! The service keeps no state of its own: what is loaded is what the
//! warehouse manifests say (layers.md, "Incremental loads"), so a restart
//! or a SIGKILL anywhere loses and repeats nothing — the next batch
//! completes what a killed one left. Yesterday stays in every batch so the
//! objects that land in its folder after midnight UTC are still loaded.
//!
//! - **Turns with other runs.** Each batch takes the daily job's leases
//!   like any run; one held by another run (a manual `submit` of the same
//!   dates) is waited for, up to the lease wait, and the batch then loads
//!   only what that run left. Past the wait the tick counts as `busy` and
//!   the next tick tries again; the service goes on.
//! - **Failures.** A failed batch (S3 or the scheduler down, a bad input)
//!   is logged and counted; the next starts after `every` doubled per
//!   failure in a row, at most [`MAX_BACKOFF`] (or `every` if longer).
//! - **Stopping.** On SIGTERM or SIGINT the batch in flight is abandoned
//!   cleanly ([`submitted`]: its running query is cancelled — on a
//!   cluster, its Ballista job — and nothing more of it commits; what it
//!   committed before stays whole), and the service returns. A batch that
//!   has not unwound after [`STOP_GRACE`] (waiting for a lease, say) is
//!   dropped.

pub mod freshness;
pub mod metrics;

use std::time::{Duration, Instant};

use chrono::{DateTime, Days, NaiveDate, Utc};
use datafusion::prelude::SessionContext;

use self::freshness::Freshness;
use self::metrics::{BatchStats, FollowMetrics};
use crate::engine::client::submitted;
use crate::engine::session::Engine;
use crate::error::{Error, Result};
use crate::jobs::daily::{self, DailyReport};
use crate::jobs::job::RunSpec;
use crate::store::{self, Requests};
use crate::warehouse::commit::PartitionRef;

/// How long a stopped batch may take to cancel its query and release its
/// leases before it is dropped.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// The longest pause after failures in a row (unless `every` is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The service's clock: the system's, or (a test and operations aid) one
/// that starts at a given instant and runs at the real rate from there,
/// so a test crosses midnight UTC in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: DateTime<Utc>,
    at: Instant,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::starting_at(Utc::now())
    }

    /// A clock that reads `start` now.
    pub fn starting_at(start: DateTime<Utc>) -> Clock {
        Clock {
            start,
            at: Instant::now(),
        }
    }

    /// The time now.
    pub fn now(&self) -> DateTime<Utc> {
        self.start + chrono::Duration::from_std(self.at.elapsed()).unwrap_or_default()
    }
}

/// What the service runs.
#[derive(Debug, Clone)]
pub struct FollowSpec {
    /// Time between the starts of two batches.
    pub every: Duration,
    /// Every batch's run, but its dates (set per batch) and `incremental`
    /// (always on).
    pub run: RunSpec,
    /// The service's clock.
    pub clock: Clock,
}

/// The collection dates of a batch that starts at `now`: yesterday and
/// today, UTC.
pub fn batch_dates(now: DateTime<Utc>) -> Vec<NaiveDate> {
    let today = now.date_naive();
    vec![today - Days::new(1), today]
}

/// The pause before the next batch after `failures` failed in a row.
pub fn pause(every: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return every;
    }
    let doubled = every.saturating_mul(1 << (failures - 1).min(16));
    doubled.min(MAX_BACKOFF.max(every))
}

/// Runs batches until a stop signal; returns `Ok` then. Errors of a batch
/// never end it: they are logged, counted and retried.
pub async fn run(
    engine: &Engine,
    ctx: &SessionContext,
    spec: &FollowSpec,
    metrics: &FollowMetrics,
) -> Result<()> {
    let mut service = Service {
        engine,
        ctx,
        spec,
        metrics,
        freshness: Freshness::default(),
        failures: 0,
    };
    tracing::info!(every = ?spec.every, regions = ?spec.run.regions, "following the raw folders of yesterday and today (UTC)");
    loop {
        let started = tokio::time::Instant::now();
        if service.batch().await.is_break() {
            return Ok(());
        }
        let next = started + pause(spec.every, service.failures);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            s = submitted::stop_asked() => {
                tracing::info!(signal = s.name(), "stopping between batches");
                return Ok(());
            }
        }
    }
}

/// The loop's state.
struct Service<'a> {
    engine: &'a Engine,
    ctx: &'a SessionContext,
    spec: &'a FollowSpec,
    metrics: &'a FollowMetrics,
    freshness: Freshness,
    /// Failed batches since the last ok one.
    failures: u32,
}

/// Whether the loop goes on.
type Next = std::ops::ControlFlow<()>;

impl Service<'_> {
    /// One batch, its outcome counted; `Break` once a stop signal came.
    async fn batch(&mut self) -> Next {
        let dates = batch_dates(self.spec.clock.now());
        let mut spec = self.spec.run.clone();
        spec.dates = dates.clone();
        spec.incremental = true;
        let t = Instant::now();
        let before = store::requests();
        tracing::info!(dates = ?dates, "batch started");
        let result = stoppable(daily::run(self.engine, self.ctx, &spec)).await;
        let secs = t.elapsed().as_secs_f64();
        match result {
            Ok(report) => {
                self.failures = 0;
                self.read_freshness(&spec).await;
                let stats = batch_stats(&report, secs, store::requests().since(&before));
                let now = self.spec.clock.now().timestamp_millis();
                self.metrics.ok(&stats, now);
                tracing::info!(objects = stats.objects, rows = stats.rows, bytes = stats.bytes, dwd_partitions = stats.dwd_partitions, secs, s3_requests = ?stats.requests, "batch committed");
            }
            Err(Error::Interrupted(s)) => {
                tracing::info!(
                    signal = s.name(),
                    "stopped: the batch in flight was abandoned (nothing more of it commits; the next run completes it)"
                );
                return Next::Break(());
            }
            Err(e @ Error::Busy(_)) => {
                self.metrics.busy();
                tracing::warn!(error = %e, "another run held the partitions for the whole lease wait; trying again next tick");
            }
            Err(e) => {
                self.failures += 1;
                let requests = store::requests().since(&before);
                self.metrics.failed(secs, &requests, self.failures);
                let retry = pause(self.spec.every, self.failures);
                tracing::error!(error = %e, failures_in_a_row = self.failures, retry_in = ?retry, "batch failed; nothing of its unfinished stage was committed, the next batch completes it");
            }
        }
        match submitted::check() {
            Ok(()) => Next::Continue(()),
            Err(_) => Next::Break(()),
        }
    }

    /// Reads the newest `collector_ts` of the batch's ODS partitions (a
    /// failure only leaves the lag as it was).
    async fn read_freshness(&mut self, spec: &RunSpec) {
        let parts = spec.regions.iter().flat_map(|region| {
            spec.dates.iter().map(|dt| PartitionRef {
                dt: *dt,
                region: region.clone(),
            })
        });
        let store = match self.engine.registry.for_location(&spec.warehouse) {
            Ok(s) => s,
            Err(e) => return tracing::warn!(error = %e, "cannot read the freshness"),
        };
        match self.freshness.refresh(&store, &spec.warehouse, parts).await {
            Ok(()) => self.metrics.set_newest(self.freshness.newest()),
            Err(e) => tracing::warn!(error = %e, "cannot read the newest collector_ts"),
        }
    }
}

/// `batch` until it ends; after a stop signal it gets [`STOP_GRACE`] to
/// unwind (its queries fail with [`Error::Interrupted`] and it releases
/// its leases), then it is dropped.
async fn stoppable(batch: impl Future<Output = Result<DailyReport>>) -> Result<DailyReport> {
    tokio::pin!(batch);
    let signal = tokio::select! {
        r = &mut batch => return r,
        s = submitted::stop_asked() => s,
    };
    tracing::warn!(
        signal = signal.name(),
        "stopping: abandoning the batch in flight"
    );
    match tokio::time::timeout(STOP_GRACE, &mut batch).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(_)) | Err(_) => Err(Error::Interrupted(signal)),
    }
}

/// What a batch's report says it loaded and rebuilt.
fn batch_stats(report: &DailyReport, secs: f64, requests: Requests) -> BatchStats {
    let ods = report.layering.report.ods.values();
    let mut s = BatchStats {
        secs,
        requests,
        dwd_partitions: report.layering.report.dwd.len() as u64,
        ..BatchStats::default()
    };
    for o in ods {
        s.objects += o.stats.files.max(0) as u64;
        s.bytes += o.stats.bytes.max(0) as u64;
        s.rows += o.valid_rows;
        s.quarantined += o.quarantined_rows();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_covers_yesterday_and_today_utc() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(
            batch_dates(at("2024-06-18T23:59:59Z")),
            [d("2024-06-17"), d("2024-06-18")]
        );
        assert_eq!(
            batch_dates(at("2024-06-19T00:00:00Z")),
            [d("2024-06-18"), d("2024-06-19")]
        );
        // a local midnight elsewhere is not the rollover
        assert_eq!(
            batch_dates(at("2024-06-19T01:30:00+05:30")),
            [d("2024-06-17"), d("2024-06-18")]
        );
    }

    #[test]
    fn failures_back_off_up_to_a_cap() {
        let s = Duration::from_secs;
        assert_eq!(pause(s(10), 0), s(10));
        assert_eq!(pause(s(10), 1), s(10));
        assert_eq!(pause(s(10), 2), s(20));
        assert_eq!(pause(s(10), 4), s(80));
        assert_eq!(pause(s(10), 9), MAX_BACKOFF);
        assert_eq!(pause(s(10), 90), MAX_BACKOFF);
        // an interval longer than the cap is never shortened
        assert_eq!(pause(s(900), 3), s(900));
    }

    #[test]
    fn the_injected_clock_runs_at_the_real_rate() {
        let start = DateTime::parse_from_rfc3339("2024-06-18T23:59:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = Clock::starting_at(start);
        std::thread::sleep(Duration::from_millis(50));
        let ahead = c.now() - start;
        assert!(
            ahead >= chrono::Duration::milliseconds(50) && ahead < chrono::Duration::seconds(5)
        );
    }
}
