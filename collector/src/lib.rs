//! tauc's collection chain (collection.md): the browser tracker's HTTP
//! intake with a durable local spool shipped to Kafka, and the Kafka → S3
//! uploader that writes the raw layout the layering job reads.
//!
//! ```text
//! browser ──HTTP──▶ intake ──▶ spool ──▶ shipper ──▶ Kafka ──▶ uploader ──▶ raw objects
//! ```
//!
//! The binaries `tauc-collector` and `tauc-uploader` are thin: they parse
//! [`cli`] flags and call [`serve`].
#![warn(missing_docs)]

pub mod cli;
pub mod error;
pub mod intake;
pub mod kafka;
pub mod metrics;
pub mod serve;
pub mod shipper;
pub mod spool;
pub mod uploader;

pub use error::{Error, Result};
