//! The driver's top-level error and the one place it becomes an SMAPI error
//! record.
//!
//! Library modules return their own `thiserror` enums; they meet here in
//! [`DriverError`], and [`to_error_record`] maps each case to the XenAPI error
//! code xapi will raise — an exhaustive match, so a new error cannot ship
//! without a code. By convention `params[0]` is the message an administrator
//! reads in `xe` or Xen Orchestra; further params carry machine-usable detail
//! (the method, the parameter). Codes are documented in `docs/errors.md`.
//!
//! Messages follow one convention (`docs/errors.md`, "How messages are
//! written"): each error's text says what failed at its own level and names
//! the object; it never repeats its source's text, because [`chain`] joins
//! the error and its causes once, for `params[0]`, the backtrace and every
//! place that turns an error into a sentence.

mod call;
mod code;

use std::panic::Location;

use crate::pool_role::NotWriter;
use crate::smapi::error_record::{Backtrace, ErrorRecord};
use crate::smapi::method::PluginKind;
use crate::smapi::params::RequestError;
use crate::sr_state::StateError;

pub use self::call::{CallError, TooLong, VolumeError};
pub use self::code::ErrorCode;
pub use crate::error_chain::chain;

use crate::snapshot::calls::ChainCallError;
use crate::snapshot::graph::GraphError;
use crate::snapshot::ops::OpError;

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
    /// A pool member could not send a metadata-writing call to the master
    /// ([`crate::pool_forward`]); nothing was written.
    #[error(
        "{method} writes LVM metadata, which only the pool master (master: {master}) does, and this pool member \
         could not send it there ({why}); nothing was written. Check that the master is up and its XAPI answers \
         (xe host-list), then retry"
    )]
    MasterUnreachable {
        /// The call.
        method: String,
        /// The master's address from `pool.conf`.
        master: String,
        /// Why.
        why: String,
    },
    /// The pool master ran the forwarded call and it failed: its record, as
    /// the master made it.
    #[error("{}", .0.params.first().map(String::as_str).unwrap_or("the pool master refused the call"))]
    Forwarded(Box<ErrorRecord>),
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

/// A handler's [`CallError`] with the source location where it was raised:
/// what every SR, Volume and Datapath handler returns. Dispatch turns it into
/// a [`Failure`], keeping the location for the record's backtrace.
#[derive(Debug)]
pub struct CallFailure {
    /// The error.
    pub error: CallError,
    /// Where it was raised.
    pub at: &'static Location<'static>,
}

impl<E: Into<CallError>> From<E> for CallFailure {
    #[track_caller]
    fn from(error: E) -> Self {
        Self { error: error.into(), at: Location::caller() }
    }
}

impl From<CallFailure> for Failure {
    fn from(failure: CallFailure) -> Self {
        Self { error: DriverError::Sr(Box::new(failure.error)), at: failure.at }
    }
}

/// What a handler returns: its answer, or where and why it failed.
pub type CallResult<T> = Result<T, CallFailure>;

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
    let message = on_host(chain(error));
    let (code, detail): (ErrorCode, Vec<String>) = match error {
        DriverError::Request(request) => match request {
            RequestError::MissingParam { method, name, .. } | RequestError::IllTypedParam { method, name, .. } => {
                (ErrorCode::InvalidParameter, vec![method.clone(), (*name).to_owned()])
            }
            RequestError::MalformedJson { .. }
            | RequestError::NotAnObject { .. }
            | RequestError::BadArgument { .. }
            | RequestError::UnknownArgument { .. }
            | RequestError::Stdin(_) => (ErrorCode::InvalidRequest, vec![]),
        },
        DriverError::UnknownMethod { method, .. } => (ErrorCode::UnknownMethod, vec![method.clone()]),
        DriverError::Unimplemented { method } => (ErrorCode::Unimplemented, vec![method.clone()]),
        // A handle that is not ours is the caller's mistake, not host state to retry.
        DriverError::Sr(source) if matches!(**source, CallError::State(StateError::BadHandle(_))) => {
            (ErrorCode::InvalidParameter, vec![String::new(), "sr".to_owned()])
        }
        DriverError::Sr(source) => (sr_code(source), vec![]),
        DriverError::MasterUnreachable { method, .. } => (ErrorCode::PoolUnreachable, vec![method.clone()]),
        // The master made the record; the member passes it on as it is.
        DriverError::Forwarded(record) => return (**record).clone(),
        DriverError::Encode { method, .. } | DriverError::Panicked { method, .. } => {
            (ErrorCode::InternalError, vec![method.clone()])
        }
    };
    let mut params = vec![message];
    params.extend(detail);
    ErrorRecord {
        code: code.as_str().to_owned(),
        params,
        backtrace: Backtrace {
            error: on_host(chain(error)),
            files: vec![failure.at.file().to_owned()],
            lines: vec![i64::from(failure.at.line())],
        },
    }
}

/// The XenAPI error code of a handler's failure.
fn sr_code(error: &CallError) -> ErrorCode {
    match error {
        CallError::Config(_) | CallError::LabelTooLong { .. } | CallError::BadUuid(_) => ErrorCode::InvalidConfig,
        CallError::Host(_) | CallError::Identity(_) | CallError::HostConfig(_) => ErrorCode::HostNotReady,
        CallError::Secret(_) => ErrorCode::Secret,
        CallError::Discovery { .. } => ErrorCode::DiscoveryFailed,
        CallError::NoPath { .. } | CallError::Nvme(_) => ErrorCode::NoPath,
        CallError::Registry(_) | CallError::Release(_) => ErrorCode::HostState,
        CallError::Userspace(error) => userspace_code(error),
        CallError::Namespace(_) => ErrorCode::Namespace,
        CallError::NamespaceMissing { .. } | CallError::NoIdentity { .. } | CallError::ScanIncomplete { .. } => {
            ErrorCode::Namespace
        }
        CallError::InUse { .. } | CallError::OtherSr { .. } => ErrorCode::NamespaceInUse,
        CallError::NotThisSr { .. } => ErrorCode::SrNotFound,
        CallError::NotMaster(NotWriter::Member { .. }) => ErrorCode::NotMaster,
        CallError::NotMaster(NotWriter::RoleUnknown { .. }) => ErrorCode::PoolRoleUnknown,
        CallError::SecondWriter(_) => ErrorCode::SecondWriter,
        CallError::NotEmpty { .. } => ErrorCode::SrNotEmpty,
        CallError::Lvm(_) | CallError::CreateRolledBackBadly { .. } => ErrorCode::LvmFailed,
        CallError::Tool(_) => ErrorCode::ToolFailed,
        CallError::Inspect { .. } | CallError::Wipe { .. } => ErrorCode::Namespace,
        CallError::State(StateError::NotAttached(_)) => ErrorCode::SrNotAttached,
        CallError::Volume(VolumeError::NotFound { .. }) => ErrorCode::VolumeDoesNotExist,
        CallError::Volume(VolumeError::Active { .. } | VolumeError::ActiveElsewhere { .. }) => ErrorCode::VolumeActive,
        CallError::PoolCheck(_) => ErrorCode::PoolUnreachable,
        CallError::Volume(VolumeError::MetadataFull { .. }) => ErrorCode::MetadataFull,
        CallError::Volume(_) => ErrorCode::VolumeInvalid,
        CallError::Chain(error) => chain_code(error),
        CallError::Read(_) | CallError::DeviceNodesLeft { .. } => ErrorCode::HostState,
        CallError::State(_) => ErrorCode::HostState,
    }
}

/// The code of a snapshot chain call's failure.
fn chain_code(error: &ChainCallError) -> ErrorCode {
    match error {
        ChainCallError::Op(OpError::Lvm(_)) => ErrorCode::LvmFailed,
        ChainCallError::Op(OpError::Engine(crate::engine::EngineError::Unsupported { .. })) => {
            ErrorCode::SnapshotRefused
        }
        ChainCallError::Op(OpError::Engine(crate::engine::EngineError::NotSwappedOnHost { .. })) => {
            ErrorCode::SnapshotRefused
        }
        ChainCallError::Op(OpError::Engine(crate::engine::EngineError::SwapUnknownOnHost { .. }))
        | ChainCallError::Pool(_) => ErrorCode::PoolUnreachable,
        ChainCallError::Op(OpError::ActiveElsewhere { .. }) | ChainCallError::ServedElsewhere { .. } => {
            ErrorCode::VolumeActive
        }
        ChainCallError::Op(OpError::QemuImg(_) | OpError::Engine(_)) => ErrorCode::ToolFailed,
        ChainCallError::Op(OpError::Graph(GraphError::ChainTooLong { .. } | GraphError::UnknownVolume(_))) => {
            ErrorCode::SnapshotRefused
        }
        ChainCallError::Op(OpError::Graph(_)) => ErrorCode::ChainDamaged,
        ChainCallError::Op(
            OpError::NoSpace { .. }
            | OpError::CloneInUse(_)
            | OpError::Exists(_)
            | OpError::NotResizable(_)
            | OpError::Unfinished { .. },
        )
        | ChainCallError::Running { .. }
        | ChainCallError::ReadOnlyServed { .. }
        | ChainCallError::Layered { .. } => ErrorCode::SnapshotRefused,
        ChainCallError::Served { .. } | ChainCallError::ResizeRunning { .. } => ErrorCode::VolumeActive,
        ChainCallError::MergeUnfinished { .. } | ChainCallError::MergeOnMaster { .. } => ErrorCode::MergeUnfinished,
        ChainCallError::ChainBusy { .. } => ErrorCode::ChainBusy,
    }
}

/// The XenAPI error code of a userspace initiator's failure.
fn userspace_code(error: &crate::initiator::userspace::UserspaceError) -> ErrorCode {
    use crate::initiator::userspace::UserspaceError;
    use nvmetcp_initiator::identify::IdentifyError;
    match error {
        UserspaceError::NotTcp
        | UserspaceError::Config(_)
        | UserspaceError::BadSr(_)
        | UserspaceError::HostBinding(_) => ErrorCode::InvalidConfig,
        UserspaceError::Identify(IdentifyError::Unreachable { .. }) => ErrorCode::NoPath,
        UserspaceError::Identify(IdentifyError::NotFound { .. }) | UserspaceError::NoSuchNsid { .. } => {
            ErrorCode::Namespace
        }
        UserspaceError::Moved { .. } => ErrorCode::Namespace,
        UserspaceError::Connect(_) => ErrorCode::NoPath,
        UserspaceError::Door(_)
        | UserspaceError::Service(_)
        | UserspaceError::Open { .. }
        | UserspaceError::Export(_) => ErrorCode::Initiator,
    }
}

#[cfg(test)]
mod tests {
    use super::{to_error_record, DriverError, ErrorCode, Failure};
    use crate::smapi::method::ParamKind;
    use crate::smapi::params::RequestError;

    /// Fails if an error, or any cause of it, repeats its own source's text.
    fn assert_no_repeats(error: &(dyn std::error::Error + 'static)) {
        let mut current = error;
        while let Some(source) = current.source() {
            let (text, cause) = (current.to_string(), source.to_string());
            assert!(!text.contains(&cause), "{text:?} repeats its source {cause:?}");
            current = source;
        }
    }

    #[test]
    fn no_message_repeats_its_source() {
        use crate::nvme::fabrics::FabricsError;
        use crate::nvme::NvmeError;
        let io = |kind| std::io::Error::from(kind);
        let refused = || FabricsError::Refused { errno: 111, source: std::io::Error::from_raw_os_error(111) };
        let connect = NvmeError::Connect { portal: "10.0.0.1:4420".into(), nqn: "nqn.a:b".into(), source: refused() };
        let unreachable = NvmeError::Unreachable {
            portal: "10.0.0.1:4420".into(),
            nqn: "nqn.a:b".into(),
            timeout: std::time::Duration::from_secs(5),
            source: io(std::io::ErrorKind::ConnectionRefused),
        };
        let addr: std::net::SocketAddr = "10.0.0.1:8009".parse().unwrap();
        let discovery = [
            crate::nvme::discovery::DiscoveryError::Unreachable {
                portal: addr,
                source: io(std::io::ErrorKind::TimedOut),
            },
            crate::nvme::discovery::DiscoveryError::Io {
                portal: addr,
                step: "reading the log",
                source: io(std::io::ErrorKind::UnexpectedEof),
            },
        ];
        let state = crate::sr_state::StateError::Io {
            path: "/run/nvmetcp/srs/x".into(),
            source: io(std::io::ErrorKind::NotFound),
        };
        assert_no_repeats(&connect);
        assert_no_repeats(&unreachable);
        assert_no_repeats(&refused());
        assert_no_repeats(&state);
        discovery.iter().for_each(|e| assert_no_repeats(e));
        let failure = Failure::from(super::CallError::Nvme(connect));
        assert_no_repeats(&failure.error);
        // The record's message is the chain, so the kernel's reason is in it once.
        let record = to_error_record(&failure, "h1");
        let hint = "connection refused: nothing serves NVMe";
        assert_eq!(record.params[0].matches(hint).count(), 1, "{}", record.params[0]);
        assert!(
            record.params[0].contains("cannot connect to subsystem nqn.a:b at 10.0.0.1:4420: "),
            "{}",
            record.params[0]
        );
        assert_eq!(record.backtrace.error, record.params[0]);
    }

    #[test]
    fn snapshot_refusals_and_damaged_chains_have_their_own_codes() {
        use super::{chain_code, ChainCallError, GraphError, OpError};
        let too_long = ChainCallError::Op(OpError::Graph(GraphError::ChainTooLong { volume: "v".into(), depth: 30 }));
        assert_eq!(chain_code(&too_long), ErrorCode::SnapshotRefused);
        let dangling = ChainCallError::Op(OpError::Graph(GraphError::Dangling { lv: "v".into(), missing: "n".into() }));
        assert_eq!(chain_code(&dangling), ErrorCode::ChainDamaged);
        assert_eq!(
            chain_code(&ChainCallError::Op(OpError::NoSpace { free: 1, needed: 2 })),
            ErrorCode::SnapshotRefused
        );
    }

    #[test]
    fn a_malformed_sr_handle_is_a_parameter_error_not_host_state() {
        let failure: Failure = DriverError::Sr(Box::new(crate::error::CallError::State(
            crate::sr_state::StateError::BadHandle("x".into()),
        )))
        .into();
        let record = to_error_record(&failure, "h1");
        assert_eq!(record.code, "NVMETCP_INVALID_PARAMETER");
        assert_eq!(record.params[2], "sr");
        assert!(record.params[0].contains("parameter sr: \"x\" is not an nvmetcp SR handle"), "{}", record.params[0]);
    }

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
        for code in ErrorCode::ALL {
            assert!(docs.contains(&format!("| `{code}` |")), "{code} is missing from docs/errors.md");
        }
        let documented: Vec<&str> =
            docs.lines().filter_map(|l| l.strip_prefix("| `")).filter_map(|l| l.split('`').next()).collect();
        for code in documented {
            assert!(
                ErrorCode::ALL.iter().any(|c| c.as_str() == code),
                "docs/errors.md documents {code}, which is no ErrorCode"
            );
        }
    }

    #[test]
    fn backtrace_error_includes_the_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe closed");
        let record = to_error_record(&RequestError::Stdin(io).into(), "h1");
        assert_eq!(record.code, "NVMETCP_INVALID_REQUEST");
        assert_eq!(record.backtrace.error, "cannot read the parameters from stdin: pipe closed");
    }
}
