//! The `tauc-scheduler` process: a Ballista scheduler on the tauc session
//! (object stores, UDFs, plan codecs) — what only a scheduler runs: its
//! jobs as views ([`job_view`]), its metrics ([`metrics`]) and event log
//! ([`event_log`]), its one port for gRPC and HTTP ([`http`]), and the
//! process itself ([`run`]). The job view's wire format, which `tauc-job`
//! reads, is `tauc_jobs::engine::client::job_view`.
#![warn(missing_docs)]

pub mod event_log;
pub mod http;
pub mod job_view;
pub mod metrics;
pub mod run;

pub use run::{SchedulerOptions, TaskSpread, run_scheduler};
