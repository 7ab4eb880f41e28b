//! What `tauc-job follow` shows at `/metrics` (Prometheus text format):
//! the batches by outcome, what each loaded, how long it took, the S3
//! requests it made, and per region how far behind the browser the
//! warehouse is. Counters hold since the process started; the `last_batch`
//! gauges describe the latest successful batch. No data row and no
//! setting is exposed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Clock;
use crate::store::Requests;

/// `/metrics` (and `/healthz`) of `metrics`, the lag read on `clock`.
pub fn router(metrics: Arc<FollowMetrics>, clock: Clock) -> Router {
    let scrape = move || {
        let text = metrics.render(clock.now().timestamp_millis());
        async move { ([(CONTENT_TYPE, tauc_common::metrics::TEXT_FORMAT)], text) }
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(scrape))
}

/// The `outcome` label of batches.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `ok`, `failed` (logged, retried with back-off) or `busy` (another
    /// run held the leases past `--lease-wait`; retried next tick).
    outcome: &'static str,
}

/// The `kind` label of S3 requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// The `region` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Region {
    region: String,
}

/// What one batch did.
#[derive(Debug, Clone, Default)]
pub struct BatchStats {
    /// Raw objects loaded.
    pub objects: u64,
    /// Bytes of those objects.
    pub bytes: u64,
    /// Valid rows appended to `ods_fe_event_di`.
    pub rows: u64,
    /// Rows quarantined.
    pub quarantined: u64,
    /// DWD partitions rebuilt.
    pub dwd_partitions: u64,
    /// Wall time of the batch.
    pub secs: f64,
    /// S3 requests this process sent during the batch.
    pub requests: Requests,
}

/// The service's metrics.
pub struct FollowMetrics {
    registry: Registry,
    batches: Family<Outcome, Counter>,
    objects: Counter,
    bytes: Counter,
    rows: Counter,
    quarantined: Counter,
    requests: Family<Kind, Counter>,
    duration: Histogram,
    last_objects: Gauge,
    last_bytes: Gauge,
    last_rows: Gauge,
    last_dwd: Gauge,
    last_secs: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_requests: Family<Kind, Gauge>,
    last_finished: Gauge,
    failures_in_a_row: Gauge,
    lag: Family<Region, Gauge<f64, std::sync::atomic::AtomicU64>>,
    newest_seconds: Family<Region, Gauge>,
    /// Newest `collector_ts` (ms) per region, turned into the lag at each
    /// scrape.
    newest: Mutex<BTreeMap<String, i64>>,
}

impl Default for FollowMetrics {
    fn default() -> FollowMetrics {
        let m = FollowMetrics {
            registry: Registry::default(),
            batches: Family::default(),
            objects: Counter::default(),
            bytes: Counter::default(),
            rows: Counter::default(),
            quarantined: Counter::default(),
            requests: Family::default(),
            duration: Histogram::new([
                0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
            last_objects: Gauge::default(),
            last_bytes: Gauge::default(),
            last_rows: Gauge::default(),
            last_dwd: Gauge::default(),
            last_secs: Gauge::default(),
            last_requests: Family::default(),
            last_finished: Gauge::default(),
            failures_in_a_row: Gauge::default(),
            lag: Family::default(),
            newest_seconds: Family::default(),
            newest: Mutex::new(BTreeMap::new()),
        };
        let mut r = Registry::with_prefix("tauc_follow");
        r.register(
            "batches",
            "Micro-batches by outcome (ok, failed, busy)",
            m.batches.clone(),
        );
        r.register("objects_loaded", "Raw objects loaded", m.objects.clone());
        r.register(
            "bytes_loaded",
            "Bytes of the raw objects loaded",
            m.bytes.clone(),
        );
        r.register(
            "rows_loaded",
            "Valid rows appended to ods_fe_event_di",
            m.rows.clone(),
        );
        r.register(
            "rows_quarantined",
            "Raw lines quarantined",
            m.quarantined.clone(),
        );
        r.register(
            "batch_s3_requests",
            "S3 requests this process sent during batches, by kind",
            m.requests.clone(),
        );
        r.register(
            "batch_duration_seconds",
            "Wall time of the batches that ended (ok or failed)",
            m.duration.clone(),
        );
        r.register(
            "last_batch_objects",
            "Raw objects the last ok batch loaded",
            m.last_objects.clone(),
        );
        r.register(
            "last_batch_bytes",
            "Bytes the last ok batch loaded",
            m.last_bytes.clone(),
        );
        r.register(
            "last_batch_rows",
            "Valid rows the last ok batch appended",
            m.last_rows.clone(),
        );
        r.register(
            "last_batch_dwd_partitions",
            "DWD partitions the last ok batch rebuilt",
            m.last_dwd.clone(),
        );
        r.register(
            "last_batch_seconds",
            "Wall time of the last ok batch",
            m.last_secs.clone(),
        );
        r.register(
            "last_batch_s3_requests",
            "S3 requests this process sent during the last ok batch, by kind",
            m.last_requests.clone(),
        );
        r.register(
            "last_batch_finished_timestamp_seconds",
            "When the last ok batch ended (the service's clock)",
            m.last_finished.clone(),
        );
        r.register(
            "consecutive_failures",
            "Failed batches since the last ok one",
            m.failures_in_a_row.clone(),
        );
        r.register(
            "freshness_lag_seconds",
            "Now minus the newest collector_ts committed (and through an ok batch in DWD), per region",
            m.lag.clone(),
        );
        r.register(
            "newest_collector_ts_seconds",
            "The newest collector_ts committed, per region",
            m.newest_seconds.clone(),
        );
        FollowMetrics { registry: r, ..m }
    }
}

impl FollowMetrics {
    /// A batch committed; `finished_ms` by the service's clock.
    pub fn ok(&self, s: &BatchStats, finished_ms: i64) {
        self.batches.get_or_create(&Outcome { outcome: "ok" }).inc();
        self.objects.inc_by(s.objects);
        self.bytes.inc_by(s.bytes);
        self.rows.inc_by(s.rows);
        self.quarantined.inc_by(s.quarantined);
        self.duration.observe(s.secs);
        self.last_objects.set(s.objects as i64);
        self.last_bytes.set(s.bytes as i64);
        self.last_rows.set(s.rows as i64);
        self.last_dwd.set(s.dwd_partitions as i64);
        self.last_secs.set(s.secs);
        self.last_finished.set(finished_ms / 1000);
        self.failures_in_a_row.set(0);
        for (kind, n) in s.requests.by_kind() {
            self.requests.get_or_create(&Kind { kind }).inc_by(n);
            self.last_requests
                .get_or_create(&Kind { kind })
                .set(n as i64);
        }
    }

    /// A batch failed after `secs`, having sent `requests`.
    pub fn failed(&self, secs: f64, requests: &Requests, in_a_row: u32) {
        self.batches
            .get_or_create(&Outcome { outcome: "failed" })
            .inc();
        self.duration.observe(secs);
        self.failures_in_a_row.set(i64::from(in_a_row));
        for (kind, n) in requests.by_kind() {
            self.requests.get_or_create(&Kind { kind }).inc_by(n);
        }
    }

    /// A batch gave up waiting for another run's leases.
    pub fn busy(&self) {
        self.batches
            .get_or_create(&Outcome { outcome: "busy" })
            .inc();
    }

    /// The newest `collector_ts` (ms) per region, as last read.
    pub fn set_newest(&self, newest: BTreeMap<String, i64>) {
        *self.newest.lock().unwrap_or_else(|e| e.into_inner()) = newest;
    }

    /// The exposition text at `now_ms` (the service's clock).
    pub fn render(&self, now_ms: i64) -> String {
        let newest = self
            .newest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (region, ms) in newest {
            let label = Region { region };
            self.lag
                .get_or_create(&label)
                .set((now_ms - ms) as f64 / 1000.0);
            self.newest_seconds.get_or_create(&label).set(ms / 1000);
        }
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        // the plain text format (tauc_common::metrics::TEXT_FORMAT) has no EOF line
        out.trim_end_matches("# EOF\n").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_shows_in_the_counters_and_the_lag_follows_the_clock() {
        let m = FollowMetrics::default();
        let stats = BatchStats {
            objects: 3,
            bytes: 300,
            rows: 30,
            secs: 1.5,
            requests: Requests {
                list: 2,
                get: 5,
                ..Requests::default()
            },
            ..BatchStats::default()
        };
        m.ok(&stats, 10_000);
        m.ok(&stats, 20_000);
        m.set_newest(BTreeMap::from([("aps1".to_string(), 15_000)]));
        let text = m.render(75_000);
        for line in [
            "tauc_follow_batches_total{outcome=\"ok\"} 2",
            "tauc_follow_objects_loaded_total 6",
            "tauc_follow_last_batch_objects 3",
            "tauc_follow_batch_s3_requests_total{kind=\"list\"} 4",
            "tauc_follow_last_batch_s3_requests{kind=\"get\"} 5",
            "tauc_follow_batch_duration_seconds_count 2",
            "tauc_follow_freshness_lag_seconds{region=\"aps1\"} 60.0",
        ] {
            assert!(text.lines().any(|l| l == line), "no '{line}' in\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }
}
