//! The `tauc-executor` process: a Ballista executor on the tauc session
//! (object stores, UDFs, plan codecs) — what only an executor runs: its
//! backing-off link to the scheduler ([`link`]), its task counters and
//! `/metrics` ([`metrics`]), and the process itself ([`run`]). The
//! session, codecs and runtime pieces it shares with `tauc-job`'s
//! in-process executor are `tauc_jobs::engine`'s.
#![warn(missing_docs)]

pub mod link;
pub mod metrics;
pub mod run;

pub use run::{ExecutorOptions, run_executor};
