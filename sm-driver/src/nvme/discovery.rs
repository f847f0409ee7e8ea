//! Discovery and the pre-connect probe, in this layer's types.
//!
//! The NVMe/TCP exchange itself lives in the initiator crate
//! (`nvmetcp_initiator::discovery`, the project's one NVMe/TCP codec), which
//! bounds it: one deadline per exchange with an endpoint, a cap on data
//! PDUs per command and on the endpoints referrals lead to. This module only
//! converts portals, identities and transports.
//!
//! [`Network`] is what handlers reach the storage network through (discovery,
//! the pre-connect probe, a subsystem's active namespace list), so unit tests
//! stand in for it; [`TcpNetwork`] is the real one.

use std::time::Duration;

use nvmetcp_initiator::discovery::{self as wire, Trtype};
use nvmetcp_initiator::HostIdentity as WireHost;

use super::names::{Portal, Transport};
use super::options::HostIdentity;

pub use nvmetcp_initiator::discovery::{DiscoveryError, DISCOVERY_TIMEOUT};

/// An NVM subsystem and every port that lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredSubsystem {
    /// Its NQN.
    pub nqn: String,
    /// Its I/O ports (transport, portal), sorted, without duplicates.
    pub ports: Vec<(Transport, Portal)>,
}

/// Everything found from a set of discovery endpoints.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Subsystems by NQN.
    pub subsystems: Vec<DiscoveredSubsystem>,
    /// Endpoints that failed (with why); discovery goes on past them.
    pub failures: Vec<DiscoveryError>,
}

/// The identity in the wire client's form (both are validated the same way).
fn wire_host(host: &HostIdentity) -> WireHost {
    let mut id = [0u8; 16];
    let hex: Vec<u8> = host.id.as_str().bytes().filter(u8::is_ascii_hexdigit).collect();
    for (i, pair) in hex.chunks_exact(2).take(16).enumerate() {
        let digit = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok()).unwrap_or(0);
        id[i] = digit(pair[0]) << 4 | digit(pair[1]);
    }
    WireHost { nqn: host.nqn.as_str().to_owned(), id }
}

/// Queries every endpoint (and the referrals they list) and merges what they
/// report. An endpoint that fails is recorded, not fatal: the caller decides
/// whether the remaining answers suffice.
#[must_use]
pub fn discover(endpoints: &[Portal], host: &HostIdentity, timeout: Duration) -> Discovery {
    let addrs: Vec<_> = endpoints.iter().map(Portal::socket_addr).collect();
    let found = wire::discover(&addrs, &wire_host(host), timeout);
    for failure in &found.failures {
        tracing::warn!(error = %crate::error_chain::chain(failure), "discovery endpoint failed");
    }
    if found.referrals_dropped > 0 {
        tracing::warn!(dropped = found.referrals_dropped, "discovery referrals not followed: too many endpoints");
    }
    let subsystems = found
        .subsystems
        .into_iter()
        .map(|s| DiscoveredSubsystem {
            nqn: s.nqn,
            ports: s
                .ports
                .into_iter()
                .map(|(t, a)| {
                    let transport = match t {
                        Trtype::Rdma => Transport::Rdma,
                        Trtype::Tcp => Transport::Tcp,
                    };
                    (transport, Portal { addr: a.ip(), port: a.port() })
                })
                .collect(),
        })
        .collect();
    Discovery { subsystems, failures: found.failures }
}

/// Checks that `portal` answers as an NVMe/TCP port (ICReq/ICResp within
/// `timeout` in all). Before asking the kernel to connect, this fails fast
/// and says when something other than NVMe/TCP listens there; unlike a bare
/// TCP connect closed at once, it does not make the target log a failed queue.
///
/// # Errors
/// [`DiscoveryError::Unreachable`] when no TCP connection is made; another
/// [`DiscoveryError`] when the port does not answer as NVMe/TCP.
pub fn probe(portal: Portal, timeout: Duration) -> Result<(), DiscoveryError> {
    wire::probe(portal.socket_addr(), timeout)
}

/// The storage network as handlers see it.
pub trait Network: Send + Sync {
    /// As [`discover`].
    fn discover(&self, endpoints: &[Portal], host: &HostIdentity, timeout: Duration) -> Discovery;

    /// As [`probe`].
    ///
    /// # Errors
    /// As [`probe`].
    fn probe(&self, portal: Portal, timeout: Duration) -> Result<(), DiscoveryError>;

    /// As [`active_namespaces`].
    ///
    /// # Errors
    /// As [`active_namespaces`].
    fn active_namespaces(
        &self,
        portal: Portal,
        nqn: &str,
        host: &HostIdentity,
        timeout: Duration,
    ) -> Result<Vec<u32>, DiscoveryError>;
}

/// The real network, over TCP sockets.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpNetwork;

impl Network for TcpNetwork {
    fn discover(&self, endpoints: &[Portal], host: &HostIdentity, timeout: Duration) -> Discovery {
        discover(endpoints, host, timeout)
    }

    fn probe(&self, portal: Portal, timeout: Duration) -> Result<(), DiscoveryError> {
        probe(portal, timeout)
    }

    fn active_namespaces(
        &self,
        portal: Portal,
        nqn: &str,
        host: &HostIdentity,
        timeout: Duration,
    ) -> Result<Vec<u32>, DiscoveryError> {
        active_namespaces(portal, nqn, host, timeout)
    }
}

/// The active namespace list subsystem `nqn` reports to this host at the
/// NVMe/TCP `portal` (Identify CNS 02h on a short-lived admin queue), in NSID
/// order: the namespaces the kernel's scan of a new controller will find.
///
/// # Errors
/// [`DiscoveryError`] naming the portal and the step that failed (a target
/// that requires DH-HMAC-CHAP refuses it).
pub fn active_namespaces(
    portal: Portal,
    nqn: &str,
    host: &HostIdentity,
    timeout: Duration,
) -> Result<Vec<u32>, DiscoveryError> {
    wire::active_namespaces(portal.socket_addr(), nqn, &wire_host(host), timeout)
}

#[cfg(test)]
pub(crate) mod fake;
