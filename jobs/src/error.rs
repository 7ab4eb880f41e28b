//! The one error type of the jobs library.
//!
//! Binaries turn it into an exit code with [`Error::exit_code`]: usage and
//! configuration problems are 2, everything that went wrong while a job ran
//! is 1. The shared crate's errors ([`tauc_common::Error`]) convert into
//! the variants of the same name.

use datafusion::error::DataFusionError;

pub use tauc_common::error::{ExitStatus, Signal};

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a job, the session builder or the commit protocol can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, config file or environment variable is wrong; the message
    /// names it and says what would be accepted.
    #[error("{0}")]
    Config(String),

    /// An input the job needs does not exist yet (a dim table, a DWD
    /// partition); the message says which job to run first.
    #[error("{0}")]
    MissingInput(String),

    /// An input's contents break the contract — a `dim_user` or
    /// `dim_contract` file without a column, a row of the wrong width or
    /// with a bad value; the message names the file and line. The job
    /// failed (exit 1) before it committed anything.
    #[error("{0}")]
    BadInput(String),

    /// A check the job makes on its own output failed (for example the
    /// load accounting invariant); nothing was committed.
    #[error("{0}")]
    Invariant(String),

    /// Another run holds a lease on partitions this run needs, and did not
    /// release it within the wait; nothing was committed.
    #[error("{0}")]
    Busy(String),

    /// A stop signal (Ctrl-C, SIGTERM) ended the run: its Ballista job was
    /// cancelled and the stage it belonged to committed nothing.
    #[error("stopped by {}: the running Ballista job was cancelled and none of its partitions was committed (those committed before it are complete); run the same command again to finish the work", .0.name())]
    Interrupted(Signal),

    /// The work was done but its output (`--out`) could not be written.
    #[error("{0}")]
    Output(String),

    /// The engine failed to start or stopped under a job: the in-process
    /// scheduler or executor, or an executor's Ballista services. Not a
    /// configuration error: the same command may work when run again.
    #[error("{0}")]
    Engine(String),

    /// A server this process runs (`tauc-job serve`) failed.
    #[error("{0}")]
    Server(String),

    /// The object store (S3 or local) refused or failed a request.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),

    /// Planning or executing a query failed.
    #[error("query engine: {0}")]
    DataFusion(#[from] DataFusionError),

    /// Reading or writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    /// Building Arrow arrays failed.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// A cluster job stopped progressing in a state Ballista 55 does not
    /// leave by itself (after losing an executor) and was cancelled.
    #[error(
        "Ballista job {job_id} stalled ({why}) and was cancelled. Nothing of this stage was committed (partitions committed before it are complete). Restart tauc-scheduler and the executors, then run the same command again"
    )]
    Stalled {
        /// Ballista's job id.
        job_id: String,
        /// What the scheduler showed of it: `rolled back …`, `stranded …`.
        why: String,
    },

    /// The cluster's scheduler stopped answering while a job ran on it.
    #[error(
        "lost the scheduler at {url} while Ballista job {job_id} ({name}) ran: {cause}. Nothing of this stage was committed (partitions committed before it are complete). Restart tauc-scheduler (and the executors, if they stopped), then run the same command again"
    )]
    SchedulerLost {
        /// `df://host:port`.
        url: String,
        /// The Ballista job that was running.
        job_id: String,
        /// Its name (`tauc layering: dwd`).
        name: String,
        /// What the client saw.
        cause: String,
    },

    /// A manifest or config could not be (de)serialised.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    /// Local I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The process exit code this error maps to: 2 for usage and
    /// configuration errors, 1 for a job that failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::MissingInput(_) => 2,
            Error::DataFusion(DataFusionError::Configuration(_)) => 2,
            Error::Interrupted(s) => s.exit_code(),
            _ => 1,
        }
    }

    /// Shorthand for a [`Error::Config`].
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
}

impl ExitStatus for Error {
    fn exit_code(&self) -> u8 {
        Error::exit_code(self)
    }
}

/// The shared crate's errors keep their meaning (and exit code) here.
impl From<tauc_common::Error> for Error {
    fn from(e: tauc_common::Error) -> Self {
        match e {
            tauc_common::Error::Config(m) => Error::Config(m),
            tauc_common::Error::ObjectStore(e) => Error::ObjectStore(e),
            tauc_common::Error::Io(e) => Error::Io(e),
        }
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
