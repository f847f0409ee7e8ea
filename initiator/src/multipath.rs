//! One namespace over every portal of its subsystem, with the kernel's
//! native-multipath semantics, as a [`BlockDevice`].

use std::net::SocketAddr;
use std::time::Duration;

use crate::block::{BlockDevice, Completion, Geometry, IoError, Request};
use crate::config::{ConfigError, IoPolicy, MultipathConfig};

/// Why the device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No portal gave a usable path; each portal's reason is listed.
    #[error("no path to namespace {nsid} of {nqn}: {}", render_failures(.failures))]
    NoPath {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace ID.
        nsid: u32,
        /// Per portal, what went wrong.
        failures: Vec<(SocketAddr, String)>,
    },
    /// A path reached a namespace that is not the configured one.
    #[error("namespace {nsid} of {nqn} at {portal} is not the expected one: {why}")]
    WrongNamespace {
        /// Subsystem NQN.
        nqn: String,
        /// Namespace ID.
        nsid: u32,
        /// The portal that answered.
        portal: SocketAddr,
        /// What differs.
        why: String,
    },
}

fn render_failures(failures: &[(SocketAddr, String)]) -> String {
    failures.iter().map(|(p, why)| format!("{p}: {why}")).collect::<Vec<_>>().join("; ")
}

/// A path's connection state (the kernel's controller states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStatus {
    /// Being connected for the first time.
    New,
    /// Connected and serving I/O.
    Live,
    /// Lost; reconnecting every `reconnect_delay`.
    Connecting,
    /// Given up after `ctrl_loss_tmo`, or closed.
    Deleted,
}

/// A path's ANA state for the namespace's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnaState {
    /// Optimized.
    Optimized,
    /// Non-optimized.
    NonOptimized,
    /// Inaccessible (never used).
    Inaccessible,
    /// Persistent loss (never used).
    PersistentLoss,
    /// Change in progress (not used until it settles).
    Change,
}

/// One path, as `status` and diagnostics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathState {
    /// The portal.
    pub portal: SocketAddr,
    /// Connection state.
    pub status: PathStatus,
    /// ANA state, when the controller reports ANA.
    pub ana: Option<AnaState>,
    /// Controller ID given at Connect.
    pub cntlid: Option<u16>,
    /// I/O queues connected.
    pub io_queues: u16,
    /// Commands in flight now.
    pub in_flight: usize,
    /// Commands that failed on this path (retried elsewhere or reported).
    pub errors: u64,
    /// Times this path was lost.
    pub losses: u64,
    /// Why it last failed, if it did.
    pub last_error: Option<String>,
    /// How long it has been in its current status.
    pub since: Duration,
}

/// The whole device, as `status` and diagnostics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    /// Subsystem NQN.
    pub nqn: String,
    /// Namespace ID.
    pub nsid: u32,
    /// Path selection in use.
    pub iopolicy: IoPolicy,
    /// Requests waiting for a live path.
    pub queued: usize,
    /// Requests failed because no path came back within `fast_io_fail_tmo`.
    pub failed_no_path: u64,
    /// Every path.
    pub paths: Vec<PathState>,
}

/// A multipath namespace.
pub struct Multipath {
    config: MultipathConfig,
}

impl Multipath {
    /// Connects every portal (a portal that fails keeps being retried every
    /// `reconnect_delay`), checks the namespace's identity on each path and
    /// returns once at least one path is live.
    ///
    /// # Errors
    /// [`OpenError`] when the configuration is unusable, no path comes up, or
    /// a path reaches another namespace.
    pub fn open(config: MultipathConfig) -> Result<Self, OpenError> {
        config.validate()?;
        Err(OpenError::NoPath {
            nqn: config.subsystem_nqn.clone(),
            nsid: config.namespace.nsid,
            failures: config.portals.iter().map(|p| (*p, "not implemented yet".to_owned())).collect(),
        })
    }

    /// Every path's state now.
    #[must_use]
    pub fn state(&self) -> DeviceState {
        DeviceState {
            nqn: self.config.subsystem_nqn.clone(),
            nsid: self.config.namespace.nsid,
            iopolicy: self.config.iopolicy,
            queued: 0,
            failed_no_path: 0,
            paths: Vec::new(),
        }
    }

    /// Fails waiting requests with [`IoError::Closing`] and disconnects every path.
    pub fn close(&self) {}
}

impl BlockDevice for Multipath {
    fn geometry(&self) -> Geometry {
        Geometry {
            block_size: 512,
            blocks: 0,
            max_transfer: 0,
            flush: false,
            fua: false,
            discard: false,
            write_zeroes: false,
        }
    }

    fn submit(&self, _request: Request, done: Completion) {
        done(Err(IoError::Closing));
    }
}
