//! tauc jobs: the layering of front-end tracking events into ODS and DWD
//! tables, the ADS reports built from them, and SQL over the committed
//! warehouse, as plans that run on Ballista — in-process or on a cluster.
//!
//! ```no_run
//! # async fn demo() -> tauc_jobs::Result<()> {
//! use tauc_jobs::{layering, session::Engine, store::S3Options};
//! let engine = Engine::new(S3Options::default().with_env()?)?;
//! let ctx = engine.connect(None, 2).await?;
//! let args = layering::LayeringArgs::local_default("2024-06-18".parse().unwrap());
//! let regions = layering::load_regions(&engine, &args.warehouse).await?;
//! let report = layering::run(&ctx, &engine, &args, &regions, &mut tauc_jobs::progress::Progress::hidden()).await?;
//! println!("{} valid rows", report.valid_rows());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod anomaly;
pub mod cli;
pub mod cluster;
pub mod codec;
pub mod commit;
pub mod config;
pub mod derive;
pub mod error;
pub mod event;
pub mod event_time;
pub mod funnels;
pub mod geo;
pub mod layering;
pub mod logging;
pub mod progress;
pub mod raw_scan;
pub mod regions;
pub mod reports;
pub mod sample;
pub mod session;
pub mod settlement;
pub mod sql;
pub mod store;
pub mod tables;
pub mod udf;
pub mod user_agent;
pub mod warehouse;

pub use error::{Error, Result};
