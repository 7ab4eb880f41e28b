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

/// Runs a service's main future and maps its outcome to an exit code
/// (0 ok, 1 failed, 2 configuration error), printing `{name}: {error}`.
pub fn exit_with(
    name: &str,
    main: impl std::future::Future<Output = Result<()>>,
) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
