//! The engine: one session recipe (object stores, codecs, UDFs, memory
//! and scratch space) for every process, the plan codecs that carry tauc's
//! own nodes to the cluster, and the scheduler and executor processes.

pub mod cluster;
pub mod codec;
pub mod event_log;
pub mod job_view;
pub mod local;
pub mod remote;
pub mod rerun;
pub mod row_pack;
pub mod scheduler_link;
pub mod scheduler_metrics;
pub mod scratch;
pub mod session;
pub mod spill;
pub mod submitted;
pub mod task_metrics;
pub mod tls;
pub mod udf;

pub use session::Engine;
