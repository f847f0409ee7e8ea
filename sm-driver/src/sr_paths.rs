//! From an SR's device-config to connected paths and its verified namespace.
//!
//! The paths are the configured `portals` plus every port the `discovery`
//! endpoints list for the subsystem; each is connected on its own, through
//! the context's fabrics device and network. The namespace is found by its
//! stable identity (or, at create time, its NSID) among the subsystem's
//! namespaces and verified by the fabric layer; [`scanned_namespaces`] waits
//! for all of them, as the subsystem lists them.

use std::time::{Duration, Instant};

use crate::context::Context;
use crate::error::{chain, CallError};
use crate::host::HostRoot;
use crate::host_config::{authentication, HostConfig};
use crate::nvme::checks::{ensure_auth_support, ensure_multipath, ensure_transport};
use crate::nvme::discovery::{Network, DISCOVERY_TIMEOUT};
use crate::nvme::health::set_iopolicy;
use crate::nvme::identity::load_or_create;
use crate::nvme::names::{Nqn, Portal, Transport};
use crate::nvme::options::{Authentication, ConnectOptions, HostIdentity, PathKey};
use crate::nvme::resolve::{resolve_head, ResolvedNamespace, APPEAR_TIMEOUT};
use crate::nvme::sysfs::{namespace_devices, NamespaceDevice};
use crate::nvme::users::attach;
use crate::sr_config::{NamespaceRef, SrConfig};

/// Every path of the subsystem: configured portals and discovered ports.
///
/// # Errors
/// [`CallError::Discovery`] when discovery was asked for, found nothing for the
/// subsystem, and no portal is configured either.
pub fn path_options(
    network: &dyn Network,
    config: &SrConfig,
    nqn: &Nqn,
    host: &HostIdentity,
    local: &HostConfig,
    auth: &Authentication,
) -> Result<Vec<ConnectOptions>, CallError> {
    let mut ports: Vec<(Transport, Portal)> = config.portals.iter().map(|p| (config.transport, *p)).collect();
    if !config.discovery.is_empty() {
        let found = network.discover(&config.discovery, host, DISCOVERY_TIMEOUT);
        let listed = found.subsystems.iter().find(|s| s.nqn == nqn.as_str());
        match listed {
            Some(subsystem) => {
                for port in &subsystem.ports {
                    if !ports.contains(port) {
                        ports.push(*port);
                    }
                }
            }
            None if ports.is_empty() => {
                let mut why: Vec<String> = found.failures.iter().map(|f| chain(f)).collect();
                if why.is_empty() {
                    why.push(format!(
                        "the discovery logs list {} other subsystem(s) but not this one; check the NQN and the \
                         target's allow-list for this host's NQN {}",
                        found.subsystems.len(),
                        host.nqn
                    ));
                }
                return Err(CallError::Discovery { nqn: nqn.to_string(), why: why.join("; ") });
            }
            None => {}
        }
    }
    Ok(ports
        .into_iter()
        .map(|(transport, portal)| ConnectOptions {
            transport,
            portal,
            subsystem: nqn.clone(),
            host: host.clone(),
            host_iface: local.host_iface.clone(),
            host_traddr: local.host_traddr,
            timers: config.timers,
            auth: auth.clone(),
        })
        .collect())
}

/// Connects every path of the subsystem for `user`; succeeds when at least
/// one path is up (the others are reported in the log and in health).
///
/// # Errors
/// [`CallError`] for an unusable host or when no path at all could be connected.
pub fn connect(ctx: &Context, config: &SrConfig, nqn: &Nqn, user: &str) -> Result<Vec<PathKey>, CallError> {
    Ok(connect_options(ctx, config, nqn, user)?.iter().map(ConnectOptions::key).collect())
}

/// As [`connect`], returning every path's connect options.
///
/// # Errors
/// As [`connect`].
pub fn connect_options(
    ctx: &Context,
    config: &SrConfig,
    nqn: &Nqn,
    user: &str,
) -> Result<Vec<ConnectOptions>, CallError> {
    let host = &ctx.host;
    ensure_transport(host, ctx.runner.as_ref(), config.transport)?;
    ensure_multipath(host)?;
    let identity = load_or_create(host)?;
    let local = HostConfig::load(host)?;
    let auth = crate::secrets::authentication(host, authentication(host, nqn)?, &config.keys)?;
    if auth.host_key.is_some() {
        ensure_auth_support(host, ctx.fabrics.as_ref())?;
    }
    let options = path_options(ctx.network.as_ref(), config, nqn, &identity, &local, &auth)?;
    let results = attach(host, ctx.fabrics.as_ref(), ctx.network.as_ref(), user, &options)?;
    let mut failures = Vec::new();
    for (option, result) in options.iter().zip(&results) {
        if let Err(error) = result {
            let error = chain(error);
            tracing::warn!(portal = %option.portal, %error, "path not connected");
            failures.push(error);
        }
    }
    if failures.len() == options.len() {
        return Err(CallError::NoPath { nqn: nqn.to_string(), why: failures.join("; ") });
    }
    if let Err(error) = set_iopolicy(host, nqn.as_str(), config.iopolicy) {
        tracing::warn!(%error, "multipath I/O policy not set");
    }
    Ok(options)
}

/// How long [`scanned_namespaces`] waits by default.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// The subsystem's multipath heads, in NSID order, once the kernel has
/// created one for every namespace in the subsystem's active namespace list.
/// A fresh controller's scan adds them one by one (in parallel on 6.x), so
/// any head at all is not the whole answer. The list is asked at the first
/// TCP path that answers; if none does (RDMA, or a target that requires
/// DH-HMAC-CHAP for it), the heads are taken once the set has not changed for
/// [`SETTLE`].
///
/// # Errors
/// [`CallError::ScanIncomplete`] naming the NSIDs still missing at
/// `timeout`; [`CallError::Namespace`] if sysfs cannot be read.
pub fn scanned_namespaces(
    ctx: &Context,
    paths: &[ConnectOptions],
    nqn: &Nqn,
    timeout: Duration,
) -> Result<Vec<NamespaceDevice>, CallError> {
    let started = Instant::now();
    let active: Option<Vec<u32>> = paths.iter().filter(|p| p.transport == Transport::Tcp).find_map(|p| {
        let answer = ctx.network.active_namespaces(p.portal, nqn.as_str(), &p.host, DISCOVERY_TIMEOUT);
        answer
            .map_err(|e| tracing::warn!(portal = %p.portal, error = %chain(&e), "active namespace list not read"))
            .ok()
    });
    let mut last: Vec<u32> = Vec::new();
    let mut stable_since = Instant::now();
    loop {
        let mut heads: Vec<NamespaceDevice> = namespace_devices(&ctx.host)
            .map_err(|e| CallError::Namespace(e.into()))?
            .into_iter()
            .filter(|d| d.subsysnqn == nqn.as_str() && d.is_multipath_head)
            .collect();
        heads.sort_by_key(|d| d.nsid);
        let shown: Vec<u32> = heads.iter().map(|d| d.nsid).collect();
        if shown != last {
            last.clone_from(&shown);
            stable_since = Instant::now();
        }
        let complete = match &active {
            Some(list) => list.iter().all(|n| shown.contains(n)),
            None => !shown.is_empty() && stable_since.elapsed() >= SETTLE,
        };
        if complete {
            return Ok(heads);
        }
        if started.elapsed() >= timeout {
            return match &active {
                Some(list) => {
                    let missing: Vec<String> =
                        list.iter().filter(|n| !shown.contains(n)).map(ToString::to_string).collect();
                    Err(CallError::ScanIncomplete { nqn: nqn.to_string(), missing: missing.join(", "), timeout })
                }
                // Without the list, what showed up is all we know.
                None => Ok(heads),
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long the set of heads must stay unchanged when the subsystem's active
/// namespace list cannot be read.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Finds and verifies the namespace on this host.
///
/// # Errors
/// [`CallError::Namespace`] when it does not appear or is not what it should be.
pub fn namespace(
    host: &HostRoot,
    nqn: &Nqn,
    reference: &NamespaceRef,
    timeout: Duration,
) -> Result<ResolvedNamespace, CallError> {
    match reference {
        NamespaceRef::Nsid(nsid) => Ok(resolve_head(host, nqn, *nsid, None, timeout)?),
        NamespaceRef::Identity(identity) => {
            let started = Instant::now();
            loop {
                let nsid = namespace_devices(host)
                    .map_err(|e| CallError::Namespace(e.into()))?
                    .into_iter()
                    .find(|d| d.subsysnqn == nqn.as_str() && d.identity.as_ref() == Some(identity))
                    .map(|d| d.nsid);
                if let Some(nsid) = nsid {
                    return Ok(resolve_head(host, nqn, nsid, Some(identity), timeout)?);
                }
                if started.elapsed() >= timeout {
                    return Err(CallError::NamespaceMissing { nqn: nqn.to_string(), namespace: identity.canonical() });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The default time to wait for a namespace.
pub const NAMESPACE_TIMEOUT: Duration = APPEAR_TIMEOUT;
