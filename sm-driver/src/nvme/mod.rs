//! The NVMe-oF fabric layer: from "this subsystem, these portals" to one
//! verified multipath block device on this host, and back.
//!
//! It talks to the kernel directly — the fabrics device `/dev/nvme-fabrics`
//! to connect, sysfs to find and watch controllers and namespaces — and never
//! parses nvme-cli's output (dom0 ships 1.16, newer systems 2.x; neither is
//! needed at run time).
//!
//! * [`names`]: validated values (NQN, host ID, portal, interface, keys);
//! * [`options`]: connect parameters, their defaults, and the one renderer of
//!   the kernel option string;
//! * [`kernel_options`]: which options the running kernel takes (listed,
//!   learned, or judged by its release), so a 4.19 host still connects;
//! * [`sysfs`]: controllers, subsystems and namespace devices as the kernel
//!   shows them;
//! * [`fabrics`]: the fabrics device that creates controllers;
//! * [`connect`]: one path connected (or reused) and disconnected, idempotently;
//! * [`discovery`]: a userspace NVMe/TCP discovery client, following referrals;
//! * [`users`]: who uses which path on this host, under a host-wide lock, so
//!   only the last user disconnects, and only what nvmetcp created;
//! * [`resolve`]: (subsystem NQN, NSID) to a verified multipath head;
//! * [`health`]: path states, ANA states and the I/O policy;
//! * [`identity`]: this host's stable NQN and ID;
//! * the preconditions in [`checks`] (transport module, multipath, authentication)
//!   with errors that say what to do.

pub mod checks;
pub mod connect;
pub mod discovery;
pub mod fabrics;
pub mod health;
pub mod identity;
pub mod kernel_options;
pub mod names;
pub mod options;
pub mod resolve;
pub mod sysfs;
pub mod users;

use std::time::Duration;

use crate::host::HostError;

/// What an unreachable portal means, by the socket error's kind (the error's
/// own text is its source, shown after this by the record's cause chain).
fn unreachable_reason(source: &std::io::Error, timeout: Duration) -> String {
    match source.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!("no answer within {timeout:?}; check the storage network, routes and firewall")
        }
        std::io::ErrorKind::ConnectionRefused => {
            "nothing listens on that port; check the port number and the target's port configuration".to_owned()
        }
        _ => "check the storage network, routes and firewall".to_owned(),
    }
}

/// Everything that can go wrong in the fabric layer. Messages name the portal,
/// the subsystem and what to check.
#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    /// A value was rejected before anything reached the kernel.
    #[error(transparent)]
    Invalid(#[from] names::InvalidValue),
    /// The host's sysfs could not be read.
    #[error(transparent)]
    Host(#[from] HostError),
    /// A TCP portal did not accept a connection.
    #[error("portal {portal} (subsystem {nqn}) is unreachable from this host ({})", unreachable_reason(.source, *.timeout))]
    Unreachable {
        /// The portal.
        portal: String,
        /// The subsystem.
        nqn: String,
        /// How long we waited.
        timeout: Duration,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Something answers on the portal, but not as NVMe/TCP.
    #[error(
        "{portal} accepts TCP connections but does not answer as an NVMe/TCP port ({why}) for subsystem {nqn}; check \
         the port number (I/O ports are usually 4420, discovery 8009)"
    )]
    NotNvmeTcp {
        /// The portal.
        portal: String,
        /// The subsystem.
        nqn: String,
        /// What went wrong in the exchange.
        why: String,
    },
    /// The kernel did not create the controller.
    #[error("cannot connect to subsystem {nqn} at {portal}")]
    Connect {
        /// The portal.
        portal: String,
        /// The subsystem.
        nqn: String,
        /// What the kernel said.
        #[source]
        source: fabrics::FabricsError,
    },
    /// The kernel reported a controller that sysfs does not show.
    #[error("the kernel created {controller} for subsystem {nqn} at {portal}, but it disappeared at once (see dmesg)")]
    ControllerVanished {
        /// The portal.
        portal: String,
        /// The subsystem.
        nqn: String,
        /// The controller name.
        controller: String,
    },
    /// The kernel refused to delete a controller.
    #[error("cannot disconnect {controller} ({path})")]
    Disconnect {
        /// The controller name.
        controller: String,
        /// The path it serves.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
