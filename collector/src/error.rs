//! The one error type of the collection library.
//!
//! Binaries map it to an exit code with [`Error::exit_code`]: 2 for a bad
//! flag, variable or config file, 1 for anything that failed while running.

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the collector, its spool and shipper, or the uploader can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, config file or environment variable is wrong; the message
    /// names it and says what would be accepted.
    #[error("{0}")]
    Config(String),

    /// The spool directory could not be read or written.
    #[error("spool {path}: {source}")]
    Spool {
        /// The file or directory involved.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },

    /// The Kafka client refused a configuration or failed a request.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),

    /// The object store (S3 or local) refused or failed a request.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),

    /// Settings shared with the jobs (store locations, S3 options) were
    /// rejected.
    #[error("{0}")]
    Common(#[from] tauc_common::Error),

    /// A task of the service stopped unexpectedly (a panic); the message
    /// names the task.
    #[error("{0}")]
    Task(String),

    /// Local I/O failed (listening socket, signals).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl tauc_common::error::ExitStatus for Error {
    fn exit_code(&self) -> u8 {
        Error::exit_code(self)
    }
}

impl Error {
    /// The process exit code: 2 for configuration errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            Error::Common(e) => e.exit_code(),
            _ => 1,
        }
    }

    /// Shorthand for a [`Error::Config`].
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    /// Wraps an I/O error on a spool file.
    pub fn spool(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Spool {
            path: path.display().to_string(),
            source,
        }
    }
}
