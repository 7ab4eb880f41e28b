//! The errors every process shares, and how they become exit codes.
//!
//! Exit 0 is success, 1 a failure while working, 2 a usage or
//! configuration error (nothing ran); a run stopped by a signal exits as
//! the shell reports one (130, 143). Each library crate has its own error
//! enum for what only it can fail with and takes this one in with `From`.

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What settings, object-store set-up and local files can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, config file or environment variable is wrong; the message
    /// names it and says what would be accepted.
    #[error("{0}")]
    Config(String),

    /// The object store (S3 or local) refused or failed a request.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),

    /// Local I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The process exit code this error maps to: 2 for configuration
    /// errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }

    /// Shorthand for a [`Error::Config`].
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
}

/// An error that knows its process exit code (0 is never one): what
/// [`crate::process::exit_with`] needs from every tauc binary's error type.
pub trait ExitStatus {
    /// 2 for usage and configuration errors, 1 for failures.
    fn exit_code(&self) -> u8;
}

impl ExitStatus for Error {
    fn exit_code(&self) -> u8 {
        Error::exit_code(self)
    }
}

/// The stop signals a run answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C): exit 130.
    Interrupt,
    /// SIGTERM: exit 143.
    Terminate,
}

impl Signal {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// The shell's exit code for a process ended by it: 128 + its number.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}
