//! The driver's top-level error and the one place it becomes an SMAPI error
//! record.
//!
//! Library modules return their own `thiserror` enums; they meet here in
//! [`DriverError`], and [`to_error_record`] maps each case to the XenAPI error
//! code xapi will raise — an exhaustive match, so a new error cannot ship
//! without a code. By convention `params[0]` is the message an administrator
//! reads in `xe` or Xen Orchestra; further params carry machine-usable detail
//! (the method, the parameter). Codes are documented in `docs/errors.md`.

mod call;

use std::error::Error as _;
use std::panic::Location;

use crate::pool_role::NotWriter;
use crate::smapi::error_record::{Backtrace, ErrorRecord};
use crate::smapi::method::PluginKind;
use crate::smapi::params::RequestError;
use crate::sr_state::StateError;

pub use self::call::{CallError, TooLong, VolumeError};

/// Everything that can make a call fail.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The request itself is wrong.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// No such method in this plugin.
    #[error("'{method}' is not a method of the nvmetcp {kind} plugin")]
    UnknownMethod {
        /// The name it was invoked as.
        method: String,
        /// The plugin invoked.
        kind: PluginKind,
    },
    /// A known SMAPIv3 method this version does not implement.
    #[error("{method} is not implemented by nvmetcp {version}", version = crate::plugin::VERSION)]
    Unimplemented {
        /// The method's call name.
        method: String,
    },
    /// The result could not be encoded.
    #[error("cannot encode the result of {method} as JSON")]
    Encode {
        /// The method's call name.
        method: String,
        /// The encoder's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// An SR, Volume or Datapath call failed on this host.
    #[error(transparent)]
    Sr(Box<CallError>),
    /// A bug: the call panicked.
    #[error("internal error in {method}: {message}; please report it with /var/log/SMlog")]
    Panicked {
        /// The method's call name.
        method: String,
        /// The panic message.
        message: String,
    },
}

/// Every error a handler meets becomes the call-level [`CallError`], and
/// through it a [`DriverError`]; with [`Failure`]'s conversion this lets `?`
/// in a handler record where each error was raised.
impl<E: Into<CallError>> From<E> for DriverError {
    fn from(error: E) -> Self {
        Self::Sr(Box::new(error.into()))
    }
}

/// A [`DriverError`] with the source location where it was raised, which
/// becomes the record's backtrace.
#[derive(Debug)]
pub struct Failure {
    /// The error.
    pub error: DriverError,
    /// Where it was raised.
    pub at: &'static Location<'static>,
}

impl<E: Into<DriverError>> From<E> for Failure {
    #[track_caller]
    fn from(error: E) -> Self {
        Self { error: error.into(), at: Location::caller() }
    }
}

/// The error record for `failure` on host `host` (named in the message of a
/// handler's failure, since xapi may show it far from this host): the only
/// mapping from errors to XenAPI codes.
#[must_use]
pub fn to_error_record(failure: &Failure, host: &str) -> ErrorRecord {
    let error = &failure.error;
    let on_host = |text: String| match error {
        DriverError::Sr(_) => format!("on host {host}: {text}"),
        _ => text,
    };
    let message = on_host(error.to_string());
    let (code, detail): (&str, Vec<String>) = match error {
        DriverError::Request(request) => match request {
            RequestError::MissingParam { method, name, .. } | RequestError::IllTypedParam { method, name, .. } => {
                ("NVMETCP_INVALID_PARAMETER", vec![method.clone(), (*name).to_owned()])
            }
            RequestError::MalformedJson { .. }
            | RequestError::NotAnObject { .. }
            | RequestError::BadArgument { .. }
            | RequestError::UnknownArgument { .. }
            | RequestError::Stdin(_) => ("NVMETCP_INVALID_REQUEST", vec![]),
        },
        DriverError::UnknownMethod { method, .. } => ("NVMETCP_UNKNOWN_METHOD", vec![method.clone()]),
        DriverError::Unimplemented { method } => ("Unimplemented", vec![method.clone()]),
        DriverError::Sr(source) => (sr_code(source), vec![]),
        DriverError::Encode { method, .. } | DriverError::Panicked { method, .. } => {
            ("NVMETCP_INTERNAL_ERROR", vec![method.clone()])
        }
    };
    let mut params = vec![message];
    params.extend(detail);
    ErrorRecord {
        code: code.to_owned(),
        params,
        backtrace: Backtrace {
            error: on_host(full_chain(error)),
            files: vec![failure.at.file().to_owned()],
            lines: vec![i64::from(failure.at.line())],
        },
    }
}

/// The XenAPI error code of a handler's failure.
fn sr_code(error: &CallError) -> &'static str {
    match error {
        CallError::Config(_) | CallError::LabelTooLong { .. } | CallError::BadUuid(_) => "NVMETCP_INVALID_CONFIG",
        CallError::Host(_) | CallError::Identity(_) | CallError::HostConfig(_) => "NVMETCP_HOST_NOT_READY",
        CallError::Secret(_) => "NVMETCP_SECRET",
        CallError::Discovery { .. } => "NVMETCP_DISCOVERY_FAILED",
        CallError::NoPath { .. } | CallError::Nvme(_) => "NVMETCP_NO_PATH",
        CallError::Registry(_) | CallError::Release(_) => "NVMETCP_HOST_STATE",
        CallError::Namespace(_) => "NVMETCP_NAMESPACE",
        CallError::NamespaceMissing { .. } | CallError::NoIdentity { .. } => "NVMETCP_NAMESPACE",
        CallError::InUse { .. } => "NVMETCP_NAMESPACE_IN_USE",
        CallError::NotThisSr { .. } => "NVMETCP_SR_NOT_FOUND",
        CallError::NotMaster(NotWriter::Member { .. }) => "NVMETCP_NOT_MASTER",
        CallError::NotMaster(NotWriter::RoleUnknown { .. }) => "NVMETCP_POOL_ROLE_UNKNOWN",
        CallError::NotEmpty { .. } => "NVMETCP_SR_NOT_EMPTY",
        CallError::Lvm(_) | CallError::CreateRolledBackBadly { .. } => "NVMETCP_LVM_FAILED",
        CallError::Tool(_) => "NVMETCP_TOOL_FAILED",
        CallError::Inspect { .. } => "NVMETCP_NAMESPACE",
        CallError::State(StateError::NotAttached(_)) => "Sr_not_attached",
        CallError::Volume(VolumeError::NotFound { .. }) => "Volume_does_not_exist",
        CallError::Volume(VolumeError::Active { .. }) => "NVMETCP_VOLUME_ACTIVE",
        CallError::Volume(_) => "NVMETCP_VOLUME_INVALID",
        CallError::Read(_) => "NVMETCP_HOST_STATE",
        CallError::State(_) => "NVMETCP_HOST_STATE",
    }
}

/// The error and all its causes, `: `-separated.
fn full_chain(error: &DriverError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{to_error_record, DriverError, Failure};
    use crate::smapi::method::ParamKind;
    use crate::smapi::params::RequestError;

    #[test]
    fn records_carry_code_message_detail_and_location() {
        let failure: Failure = DriverError::Unimplemented { method: "Volume.snapshot".to_owned() }.into();
        let record = to_error_record(&failure, "h1");
        assert_eq!(record.code, "Unimplemented");
        assert_eq!(record.params[1], "Volume.snapshot");
        assert!(record.params[0].starts_with("Volume.snapshot is not implemented by nvmetcp "));
        assert_eq!(record.backtrace.files, [file!()]);
        assert_eq!(record.backtrace.lines.len(), 1);

        let failure: Failure = RequestError::MissingParam {
            method: "SR.attach".into(),
            name: "configuration",
            kind: ParamKind::StringMap,
        }
        .into();
        let record = to_error_record(&failure, "h1");
        assert_eq!(record.code, "NVMETCP_INVALID_PARAMETER");
        assert_eq!(record.params[1..], ["SR.attach", "configuration"]);
    }

    #[test]
    fn every_code_is_documented_and_every_documented_code_exists() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/errors.md")).unwrap();
        let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/error/mod.rs")).unwrap();
        let mapping = &source[..source.find("#[cfg(test)]").unwrap()];
        // Codes are the literals the mapping returns: `=> "CODE"` and `("CODE", …)`.
        let mut produced: Vec<&str> = Vec::new();
        for opener in ["=> \"", "(\""] {
            for (at, _) in mapping.match_indices(opener) {
                let rest = &mapping[at + opener.len()..];
                let code = &rest[..rest.find('"').unwrap()];
                let looks_like_code = code.starts_with(|c: char| c.is_ascii_uppercase())
                    && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if looks_like_code && !produced.contains(&code) {
                    produced.push(code);
                }
            }
        }
        // The XAPI host plugin answers with its own failure codes.
        let host_plugin = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/host_plugin.rs")).unwrap();
        let host_plugin = &host_plugin[..host_plugin.find("#[cfg(test)]").unwrap()];
        for (at, _) in host_plugin.match_indices("\"NVMETCP_") {
            let rest = &host_plugin[at + 1..];
            let code = &rest[..rest.find('"').unwrap()];
            if !produced.contains(&code) {
                produced.push(code);
            }
        }
        assert!(produced.len() >= 18, "the scan found too few codes: {produced:?}");
        for code in &produced {
            assert!(docs.contains(&format!("| `{code}` |")), "{code} is missing from docs/errors.md");
        }
        let documented: Vec<&str> =
            docs.lines().filter_map(|l| l.strip_prefix("| `")).filter_map(|l| l.split('`').next()).collect();
        for code in documented {
            assert!(produced.contains(&code), "docs/errors.md documents {code}, which nvmetcp never returns");
        }
        let sample: Failure = RequestError::MalformedJson { detail: String::new() }.into();
        assert!(
            produced.contains(&to_error_record(&sample, "h1").code.as_str()),
            "the scan sees what the mapping returns"
        );
    }

    #[test]
    fn backtrace_error_includes_the_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe closed");
        let record = to_error_record(&RequestError::Stdin(io).into(), "h1");
        assert_eq!(record.code, "NVMETCP_INVALID_REQUEST");
        assert_eq!(record.backtrace.error, "cannot read the parameters from stdin: pipe closed");
    }
}
