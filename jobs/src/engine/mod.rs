//! The engine: one session recipe (object stores, codecs, UDFs, memory
//! and scratch space) for every process that plans or runs tauc's plans —
//! `tauc-job`, `tauc-scheduler`, `tauc-executor` — in four rooms, each
//! importing only the rooms above it in this list (`tests/layers.rs`
//! checks it):

// layer 0 — plan portability: the codecs that carry tauc's nodes to the
// cluster, the `tauc_*` functions, row packing
pub mod plan;
// layer 1 — the runtime of a process: the in-process scheduler and
// executor, scratch space and spilling, TLS, the cluster's task mode
pub mod runtime;
// layer 2 — the client of a cluster: the scheduler's job view, the
// scheduler client, and the one path that names, watches and cancels jobs
pub mod client;
// layer 3 — the `Engine` and the session recipe, on all of the above
pub mod session;

pub use session::Engine;
