//! Errors of XAPI calls, typed by where they happened. Each names the
//! endpoint and the method; none carries a password, a session ref or a
//! secret value (parameters are never included, only XAPI's own error
//! parameters, which XAPI shows to any caller).

use std::time::Duration;

use crate::codec::CodecError;
use crate::value::TypeError;

/// An error XAPI returned (`Status: Failure`), with its code and parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}{}", if params.is_empty() { String::new() } else { format!(" [{}]", params.join(", ")) })]
pub struct XapiError {
    /// The code, such as `SR_BACKEND_FAILURE` or `HOST_IS_SLAVE`.
    pub code: String,
    /// The parameters, in order.
    pub params: Vec<String>,
}

impl XapiError {
    /// The master's address, for `HOST_IS_SLAVE`.
    #[must_use]
    pub fn master_address(&self) -> Option<&str> {
        (self.code == "HOST_IS_SLAVE").then(|| self.params.first().map(String::as_str)).flatten()
    }

    /// Whether the session is no longer valid and a new login is needed.
    #[must_use]
    pub fn is_session_invalid(&self) -> bool {
        self.code == "SESSION_INVALID"
    }
}

/// Any failure of a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint could not be reached.
    #[error("cannot connect to XAPI at {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake or certificate check failed.
    #[error("TLS with XAPI at {endpoint} failed: {why}")]
    Tls {
        /// The endpoint.
        endpoint: String,
        /// Why (a wrong fingerprint says which one was seen).
        why: String,
    },
    /// No reply in time.
    #[error("XAPI at {endpoint} did not answer {method} within {after:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The call.
        method: String,
        /// The limit.
        after: Duration,
    },
    /// The exchange failed below XML-RPC.
    #[error("XAPI at {endpoint}, {method}: {why}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// The call.
        method: String,
        /// Why.
        why: String,
    },
    /// The reply was not XAPI's XML-RPC.
    #[error("XAPI at {endpoint} answered {method} with something that is not XML-RPC: {source}")]
    Codec {
        /// The endpoint.
        endpoint: String,
        /// The call.
        method: String,
        /// The decoding error.
        source: CodecError,
    },
    /// XAPI refused the call.
    #[error("XAPI refused {method}: {source}")]
    Api {
        /// The call.
        method: String,
        /// The XAPI error.
        source: XapiError,
    },
    /// The result had an unexpected shape.
    #[error("XAPI's reply to {method} is not what it should be: {source}")]
    Type {
        /// The call.
        method: String,
        /// What was wrong.
        source: TypeError,
    },
    /// A bad argument on our side (an endpoint URL, a fingerprint).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The XAPI error, when XAPI itself refused the call.
    #[must_use]
    pub fn xapi(&self) -> Option<&XapiError> {
        match self {
            Self::Api { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
