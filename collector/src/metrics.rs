//! Prometheus metrics of the collector and the uploader, served at
//! `/metrics` in the text exposition format.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `outcome` label of requests and events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `accepted`, `bad_request`, `too_large`, `unsupported`, `forbidden`,
    /// `spool_full` or `spool_error`.
    pub outcome: &'static str,
}

/// The collector's metrics.
pub struct CollectorMetrics {
    registry: Registry,
    /// Requests to `POST /v1/events` by outcome.
    pub requests: Family<Outcome, Counter>,
    /// Events in those requests by outcome.
    pub events: Family<Outcome, Counter>,
    /// Bytes of spool segments on disk.
    pub spool_bytes: Gauge,
    /// Age of the oldest spooled event not yet acknowledged by Kafka.
    pub spool_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `collector_ts` of that event (0 when the spool is shipped).
    pub oldest_unshipped_ms: AtomicI64,
    /// Events acknowledged by Kafka.
    pub shipped: Counter,
    /// Time from handing an event to the producer to its acknowledgement.
    pub kafka_send_seconds: Histogram,
    /// Failed Kafka deliveries (each is retried).
    pub kafka_errors: Counter,
}

impl Default for CollectorMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tauc_collector");
        let m = CollectorMetrics {
            requests: Family::default(),
            events: Family::default(),
            spool_bytes: Gauge::default(),
            spool_oldest_age: Gauge::default(),
            oldest_unshipped_ms: AtomicI64::new(0),
            shipped: Counter::default(),
            kafka_send_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            kafka_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "POST /v1/events requests by outcome",
            m.requests.clone(),
        );
        registry.register("events", "events by outcome", m.events.clone());
        registry.register(
            "spool_bytes",
            "bytes of spool segments on disk",
            m.spool_bytes.clone(),
        );
        registry.register(
            "spool_oldest_event_age_seconds",
            "age of the oldest spooled event Kafka has not acknowledged",
            m.spool_oldest_age.clone(),
        );
        registry.register(
            "shipped_events",
            "events acknowledged by Kafka",
            m.shipped.clone(),
        );
        registry.register(
            "kafka_send_seconds",
            "time from producing an event to its acknowledgement",
            m.kafka_send_seconds.clone(),
        );
        registry.register(
            "kafka_errors",
            "failed Kafka deliveries (retried)",
            m.kafka_errors.clone(),
        );
        CollectorMetrics { registry, ..m }
    }
}

impl CollectorMetrics {
    /// Counts one request and its events under `outcome`.
    pub fn count(&self, outcome: &'static str, events: usize) {
        let label = Outcome { outcome };
        self.requests.get_or_create(&label).inc();
        self.events.get_or_create(&label).inc_by(events as u64);
    }

    /// The exposition text; `spool_bytes` and `now_ms` refresh the gauges
    /// that are read rather than counted.
    pub fn render(&self, spool_bytes: u64, now_ms: i64) -> String {
        self.spool_bytes.set(spool_bytes as i64);
        let oldest = self.oldest_unshipped_ms.load(Ordering::Relaxed);
        let age = if oldest > 0 {
            (now_ms - oldest).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        self.spool_oldest_age.set(age);
        encode(&self.registry)
    }
}

/// The uploader's metrics.
pub struct UploaderMetrics {
    registry: Registry,
    /// Records written into objects (or found already in one).
    pub records: Counter,
    /// Objects written.
    pub objects: Counter,
    /// Bytes of objects written.
    pub bytes: Counter,
    /// Create-only PUTs that found the object already there (a crash
    /// between PUT and commit, or a rebalance).
    pub existing: Counter,
    /// Failed PUTs (retried).
    pub put_errors: Counter,
    /// Failed offset commits (the partition is dropped and re-read).
    pub commit_errors: Counter,
}

impl Default for UploaderMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tauc_uploader");
        let m = UploaderMetrics {
            records: Counter::default(),
            objects: Counter::default(),
            bytes: Counter::default(),
            existing: Counter::default(),
            put_errors: Counter::default(),
            commit_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("records", "records uploaded", m.records.clone());
        registry.register("objects", "objects written", m.objects.clone());
        registry.register("bytes", "bytes of objects written", m.bytes.clone());
        registry.register(
            "existing_objects",
            "create-only PUTs that found the batch already uploaded",
            m.existing.clone(),
        );
        registry.register("put_errors", "failed PUTs (retried)", m.put_errors.clone());
        registry.register(
            "commit_errors",
            "failed offset commits",
            m.commit_errors.clone(),
        );
        UploaderMetrics { registry, ..m }
    }
}

impl UploaderMetrics {
    /// The exposition text.
    pub fn render(&self) -> String {
        encode(&self.registry)
    }
}

fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
