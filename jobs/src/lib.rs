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

// The layout reads as the pipeline: where data lives (`store`), how raw
// files come in (`ingest`), how DWD columns are derived (`derive`), the
// warehouse's tables and commit protocol (`warehouse`), the engine that
// runs plans (`engine`), the jobs built on all of them (`jobs`), the
// Flight SQL server over the warehouse (`serve`), the daily report page
// (`show`), and the command line (`cli`). Imports point down that list, never up.
pub mod cli;
pub mod derive;
pub mod engine;
pub mod error;
pub mod ingest;
pub mod jobs;
pub mod serve;
pub mod show;
pub mod store;
pub mod warehouse;

pub use error::{Error, Result};
pub use tauc_common::{config, logging};
