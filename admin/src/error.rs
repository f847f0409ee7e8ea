//! The admin command's failures and their exit codes.

/// How the command ended, as its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done, all healthy.
    Ok = 0,
    /// Failed (nothing was changed), or a check failed.
    Failed = 1,
    /// Bad command line.
    Usage = 2,
    /// Done on some hosts only, or paths degraded.
    Partial = 3,
    /// XAPI cannot be reached or refused the login.
    Xapi = 4,
}

/// A failure that ends the command.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// XAPI could not be reached or refused the login.
    #[error("cannot use XAPI")]
    Connect(#[source] xapi_client::Error),
    /// An XAPI call failed.
    #[error(transparent)]
    Xapi(#[from] xapi_client::Error),
    /// The request makes no sense.
    #[error("{0}")]
    Usage(String),
    /// The operation failed; the text says why and what to do.
    #[error("{0}")]
    Failed(String),
}

impl AdminError {
    /// The exit status for this failure.
    #[must_use]
    pub fn exit(&self) -> Exit {
        match self {
            Self::Connect(_) => Exit::Xapi,
            Self::Usage(_) => Exit::Usage,
            Self::Xapi(_) | Self::Failed(_) => Exit::Failed,
        }
    }
}
