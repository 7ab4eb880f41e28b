//! What every tauc process needs — the collector and uploader as much as
//! the scheduler, the executors and `tauc-job` — and nothing of the query
//! engine: settings and the known `TAUC_*` variables (`config`), where
//! data lives (`store`), logs (`logging`), exit codes and the errors they
//! come from (`error`, `process`), and the metrics content type.
//!
//! ```
//! use tauc_common::store::Location;
//! let raw = Location::parse("s3://bucket/source/front-end-tracking").unwrap();
//! assert_eq!(raw.join("uat/aps1").url(), "s3://bucket/source/front-end-tracking/uat/aps1/");
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod store;

pub use error::{Error, Result};
