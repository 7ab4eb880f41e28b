//! The engine: one session recipe (object stores, codecs, UDFs, memory
//! and scratch space) for every process, the plan codecs that carry tauc's
//! own nodes to the cluster, and the scheduler and executor processes.

pub mod cluster;
pub mod codec;
pub mod local;
pub mod scratch;
pub mod session;
pub mod udf;

pub use session::Engine;
