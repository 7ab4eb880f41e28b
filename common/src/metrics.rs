//! What every process's `GET /metrics` answers with.

/// The Prometheus text format's content type (tauc's series and Ballista's
/// share one answer; `# EOF` of OpenMetrics is left out).
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
