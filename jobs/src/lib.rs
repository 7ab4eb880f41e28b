//! tauc jobs: the layering of front-end tracking events into ODS and DWD
//! tables, the ADS reports built from them, and SQL over the committed
//! warehouse, as plans that run on Ballista — in-process or on a cluster.
//!
//! ```no_run
//! # async fn demo() -> tauc_jobs::Result<()> {
//! use tauc_jobs::{engine::Engine, jobs::layering, store::S3Options};
//! let engine = Engine::new(S3Options::default().with_env()?)?;
//! let ctx = engine.connect(None, 2).await?;
//! let args = layering::LayeringArgs::local_default("2024-06-18".parse().unwrap());
//! let regions = layering::load_regions(&engine, &args.warehouse).await?;
//! let report = layering::run(&ctx, &engine, &args, &regions, &mut tauc_jobs::jobs::progress::Progress::hidden()).await?;
//! println!("{} valid rows", report.valid_rows());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

// The layers, lowest first: a module imports only from its own folder and
// from the layers listed before its own — never from one after it, nor
// from another module of its own layer. `tests/layers.rs` reads these
// lines and checks every `crate::` path against them (and finds no import
// circle anywhere); `engine/mod.rs` lists its rooms the same way. Settings,
// object-store locations and logs every process shares are in
// `tauc-common` (re-exported below as `config` and `logging`).

// layer 0 — the error type
pub mod error;
// layer 1 — where data lives: the object stores as DataFusion sees them
pub mod store;
// layer 2 — the DWD columns as plain functions; the warehouse's tables,
// commit protocol, writer and leases
pub mod derive;
pub mod warehouse;
// layer 3 — raw input: the raw scan (it writes the ODS schema)
pub mod ingest;
// layer 4 — the engine that runs plans
pub mod engine;
// layer 5 — what runs on it: the jobs, the Flight SQL server, the report
// page
pub mod jobs;
pub mod serve;
pub mod show;
// layer 6 — the command line
pub mod cli;

pub use error::{Error, Result};
pub use tauc_common::{config, logging};
