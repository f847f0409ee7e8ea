//! Errors of XAPI calls, typed by where they happened. Each names the
//! endpoint and the method; none carries a password, a session ref or a
//! secret value (parameters are never included, only XAPI's own error
//! parameters, which XAPI shows to any caller).
//!
//! Messages follow the project's convention (`docs/errors.md`): an error's
//! text says what failed at its level and never repeats its source's text;
//! the caller joins the error and its causes once (`sm_driver::error_chain`).

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
    #[error("cannot connect to XAPI at {endpoint}")]
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
    #[error("XAPI at {endpoint} answered {method} with something that is not XML-RPC")]
    Codec {
        /// The endpoint.
        endpoint: String,
        /// The call.
        method: String,
        /// The decoding error.
        source: CodecError,
    },
    /// XAPI refused the call.
    #[error("XAPI refused {method}")]
    Api {
        /// The call.
        method: String,
        /// The XAPI error.
        source: XapiError,
    },
    /// The result had an unexpected shape.
    #[error("XAPI's reply to {method} is not what it should be")]
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

#[cfg(test)]
mod tests {
    use super::{Error, XapiError};
    use crate::value::TypeError;

    /// Every error, joined with its causes as callers do.
    fn chain(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut texts = vec![error.to_string()];
        let mut source = error.source();
        while let Some(cause) = source {
            texts.push(cause.to_string());
            source = cause.source();
        }
        texts
    }

    #[test]
    fn no_message_repeats_its_source() {
        let endpoint = "unix:/var/lib/xcp/xapi".to_owned();
        let errors = [
            Error::Connect { endpoint: endpoint.clone(), source: std::io::Error::other("connection refused") },
            Error::Api {
                method: "SR.create".into(),
                source: XapiError { code: "SR_BACKEND_FAILURE".into(), params: vec!["x".into()] },
            },
            Error::Type {
                method: "host.get_all".into(),
                source: TypeError { context: "host".into(), expected: "a struct", got: "an int".into() },
            },
        ];
        for error in &errors {
            let texts = chain(error);
            assert_eq!(texts.len(), 2, "{texts:?}");
            assert!(!texts[0].contains(&texts[1]), "{:?} repeats its source {:?}", texts[0], texts[1]);
        }
        assert_eq!(chain(&errors[1]), ["XAPI refused SR.create", "SR_BACKEND_FAILURE [x]"]);
    }
}
