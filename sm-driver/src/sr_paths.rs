//! From an SR's device-config to connected paths and its verified namespace.
//!
//! The paths are the configured `portals` plus every port the `discovery`
//! endpoints list for the subsystem; each is connected on its own, through
//! the context's fabrics device and network. The namespace is found by its
//! stable identity (or, at create time, its NSID) among the subsystem's
//! namespaces and verified by the fabric layer; [`scanned_namespaces`] waits
//! for all of them, as the subsystem lists them.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::error::{chain, CallError};
use crate::host::HostRoot;
use crate::host_config::{authentication, HostConfig};
use crate::initiator::{choose, userspace, InitiatorChoice, InitiatorKind};
use crate::nvme::checks::{ensure_auth_support, ensure_multipath, ensure_transport};
use crate::nvme::discovery::{Network, DISCOVERY_TIMEOUT};
use crate::nvme::health::{health, set_iopolicy, Health};
use crate::nvme::identity::load_or_create;
use crate::nvme::names::{Nqn, Portal, Transport};
use crate::nvme::options::{Authentication, ConnectOptions, HostIdentity, PathKey};
use crate::nvme::resolve::{pin, resolve_head, ResolvedNamespace, APPEAR_TIMEOUT};
use crate::nvme::sysfs::{namespace_devices, NamespaceDevice, NamespaceIdentity};
use crate::nvme::users::attach;
use crate::sr_config::{NamespaceRef, SrConfig};
use crate::sr_state::SrState;

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

/// The subsystem's paths and the keys to use on them, before connecting.
fn plan(ctx: &Context, config: &SrConfig, nqn: &Nqn) -> Result<(Vec<ConnectOptions>, Authentication), CallError> {
    let host = &ctx.host;
    let identity = load_or_create(host)?;
    let local = HostConfig::load(host)?;
    let auth = crate::secrets::authentication(host, authentication(host, nqn)?, &config.keys)?;
    let options = path_options(ctx.network.as_ref(), config, nqn, &identity, &local, &auth)?;
    Ok((options, auth))
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
    let (options, auth) = plan(ctx, config, nqn)?;
    if auth.host_key.is_some() {
        ensure_auth_support(host, ctx.fabrics.as_ref())?;
    }
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

/// This host's initiator for the SR's transport (`host.conf`, else whether
/// `nvme_tcp` loads), logged with its reason.
///
/// # Errors
/// An unreadable `host.conf`.
pub fn initiator(ctx: &Context, config: &SrConfig) -> Result<InitiatorChoice, CallError> {
    let configured = HostConfig::load(&ctx.host)?.initiator;
    let choice = choose(&ctx.host, ctx.runner.as_ref(), configured, config.transport);
    tracing::info!(initiator = %choice, "NVMe/TCP initiator");
    Ok(choice)
}

/// An SR's namespace brought up on this host, by either initiator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroughtUp {
    /// Which initiator serves it.
    pub initiator: InitiatorKind,
    /// The block device: the multipath head, or the SR's `/dev/nbdN`.
    pub device: PathBuf,
    /// The namespace's stable identity (`None`: it has none).
    pub identity: Option<NamespaceIdentity>,
    /// Its NSID today.
    pub nsid: u32,
    /// Every path expected.
    pub paths: Vec<PathKey>,
}

/// The one door of the handlers to an SR's namespace on this host: with
/// the kernel's initiator, every path connected for `user` and the
/// multipath head resolved; with the userspace one, the SR's daemon
/// serving its `/dev/nbdN`. Undone by [`release`].
///
/// # Errors
/// [`CallError`] naming what failed, on either side.
pub fn bring_up(
    ctx: &Context,
    config: &SrConfig,
    nqn: &Nqn,
    reference: &NamespaceRef,
    user: &str,
    sr_uuid: &str,
) -> Result<BroughtUp, CallError> {
    match initiator(ctx, config)?.kind {
        InitiatorKind::Kernel => {
            let paths = connect(ctx, config, nqn, user)?;
            let resolved = namespace(&ctx.host, nqn, reference, NAMESPACE_TIMEOUT)?;
            Ok(BroughtUp {
                initiator: InitiatorKind::Kernel,
                device: resolved.device,
                identity: resolved.namespace.identity,
                nsid: resolved.namespace.nsid,
                paths,
            })
        }
        InitiatorKind::Userspace => {
            let (options, auth) = plan(ctx, config, nqn)?;
            let target = userspace::Target { config, nqn, options: &options, auth: &auth };
            let served = userspace::bring_up(&ctx.host, ctx.runner.as_ref(), target, sr_uuid, reference)?;
            Ok(BroughtUp {
                initiator: InitiatorKind::Userspace,
                device: served.device,
                identity: served.identity,
                nsid: served.nsid,
                paths: served.paths,
            })
        }
    }
}

/// One namespace of a subsystem as the userspace initiator lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedNamespace {
    /// Its NSID today.
    pub nsid: u32,
    /// Its stable identity (`None`: it has none, and no SR can use it).
    pub identity: Option<NamespaceIdentity>,
    /// Its size.
    pub size_bytes: u64,
}

/// Every active namespace of the subsystem in NSID order, listed over the
/// userspace initiator's admin connection (what `SR.probe` shows on a host
/// without `nvme_tcp`), and every path it would use. Nothing stays connected.
///
/// # Errors
/// [`CallError`]: the host's identity or keys, discovery, or no portal answered.
pub fn listed_namespaces(
    ctx: &Context,
    config: &SrConfig,
    nqn: &Nqn,
) -> Result<(Vec<ListedNamespace>, Vec<PathKey>), CallError> {
    let (options, auth) = plan(ctx, config, nqn)?;
    let target = userspace::Target { config, nqn, options: &options, auth: &auth };
    let listed = userspace::list_namespaces(target)?
        .into_iter()
        .map(|ids| ListedNamespace {
            nsid: ids.nsid,
            identity: ids.stable_id().and_then(|i| NamespaceIdentity::parse(&i.to_string())),
            size_bytes: ids.size_bytes,
        })
        .collect();
    Ok((listed, options.iter().map(ConnectOptions::key).collect()))
}

/// Runs `read` on namespace `nsid` served for the while by this process
/// over the userspace initiator (`SR.probe` reading the VG on it), then
/// disconnects it.
///
/// # Errors
/// [`CallError`]: the host's identity or keys, discovery, no path, or the
/// kernel's NBD driver refused.
pub fn read_over_userspace<T>(
    ctx: &Context,
    config: &SrConfig,
    nqn: &Nqn,
    nsid: u32,
    read: impl FnOnce(&std::path::Path) -> T,
) -> Result<T, CallError> {
    let (options, auth) = plan(ctx, config, nqn)?;
    let target = userspace::Target { config, nqn, options: &options, auth: &auth };
    Ok(userspace::with_namespace_device(&ctx.host, target, nsid, read)?)
}

/// Undoes [`bring_up`]: the kernel's paths `user` holds released (the last
/// user disconnects), or the SR's daemon stopped and its device
/// disconnected. Safe to repeat.
///
/// # Errors
/// [`CallError`] when the paths or the daemon could not be released.
pub fn release(ctx: &Context, initiator: InitiatorKind, user: &str, sr_uuid: &str) -> Result<(), CallError> {
    match initiator {
        InitiatorKind::Kernel => {
            let released = crate::nvme::users::release(&ctx.host, user)?;
            tracing::debug!(disconnected = ?released.disconnected, "paths released");
        }
        InitiatorKind::Userspace => userspace::take_down(&ctx.host, ctx.runner.as_ref(), sr_uuid)?,
    }
    Ok(())
}

/// The attached SR's block device now, resolved anew and held open (the
/// kernel's head by the namespace's identity, pinned; the SR's `/dev/nbdN`,
/// verified once open): LVM works on it while the file is held.
///
/// # Errors
/// [`CallError`] when it is not there or changed while opening.
pub fn device_of(host: &HostRoot, state: &SrState, timeout: Duration) -> Result<(PathBuf, File), CallError> {
    match state.initiator {
        InitiatorKind::Kernel => {
            let nqn = &state.nqn;
            let resolved = namespace(host, nqn, &NamespaceRef::Identity(state.namespace.clone()), timeout)?;
            let pinned = pin(host, nqn, resolved)?;
            Ok((pinned.resolved.device, pinned.file))
        }
        InitiatorKind::Userspace => Ok(userspace::pinned_device(host, &state.sr_uuid)?),
    }
}

/// The attached SR's paths now: from sysfs, or as its daemon reports them.
///
/// # Errors
/// [`CallError`] when sysfs cannot be read.
pub fn health_of(host: &HostRoot, state: &SrState) -> Result<Health, CallError> {
    match state.initiator {
        InitiatorKind::Kernel => Ok(health(host, &state.paths)?),
        InitiatorKind::Userspace => Ok(userspace::health(host, &state.sr_uuid, &state.paths)),
    }
}
