//! From an SR's device-config to connected paths and its verified namespace.
//!
//! The paths are the configured `portals` plus every port the `discovery`
//! endpoints list for the subsystem; each is connected on its own. The
//! namespace is found by its stable identity (or, at create time, its NSID)
//! among the subsystem's namespaces and verified by the fabric layer.

use std::time::{Duration, Instant};

use crate::cmd::Runner;
use crate::error::CallError;
use crate::host::HostRoot;
use crate::host_config::{authentication, HostConfig};
use crate::nvme::checks::{ensure_auth_support, ensure_multipath, ensure_transport};
use crate::nvme::discovery::{discover, DISCOVERY_TIMEOUT};
use crate::nvme::fabrics::KernelFabrics;
use crate::nvme::health::set_iopolicy;
use crate::nvme::identity::load_or_create;
use crate::nvme::names::{Nqn, Portal, Transport};
use crate::nvme::options::{Authentication, ConnectOptions, HostIdentity, PathKey};
use crate::nvme::resolve::{resolve_head, ResolvedNamespace, APPEAR_TIMEOUT};
use crate::nvme::sysfs::namespace_devices;
use crate::nvme::users::attach;
use crate::sr_config::{NamespaceRef, SrConfig};

/// Every path of the subsystem: configured portals and discovered ports.
///
/// # Errors
/// [`CallError::Discovery`] when discovery was asked for, found nothing for the
/// subsystem, and no portal is configured either.
pub fn path_options(
    config: &SrConfig,
    nqn: &Nqn,
    host: &HostIdentity,
    local: &HostConfig,
    auth: &Authentication,
) -> Result<Vec<ConnectOptions>, CallError> {
    let mut ports: Vec<(Transport, Portal)> = config.portals.iter().map(|p| (config.transport, *p)).collect();
    if !config.discovery.is_empty() {
        let found = discover(&config.discovery, host, DISCOVERY_TIMEOUT);
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
                let mut why: Vec<String> = found.failures.iter().map(ToString::to_string).collect();
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
pub fn connect(
    host: &HostRoot,
    runner: &dyn Runner,
    config: &SrConfig,
    nqn: &Nqn,
    user: &str,
) -> Result<Vec<PathKey>, CallError> {
    ensure_transport(host, runner, config.transport)?;
    ensure_multipath(host)?;
    let identity = load_or_create(host)?;
    let local = HostConfig::load(host)?;
    let auth = crate::secrets::authentication(host, authentication(host, nqn)?, &config.keys)?;
    let fabrics = KernelFabrics::new(host.clone());
    if auth.host_key.is_some() {
        ensure_auth_support(host, &fabrics)?;
    }
    let options = path_options(config, nqn, &identity, &local, &auth)?;
    let results = attach(host, &fabrics, user, &options)?;
    let mut failures = Vec::new();
    for (option, result) in options.iter().zip(&results) {
        if let Err(error) = result {
            tracing::warn!(portal = %option.portal, %error, "path not connected");
            failures.push(error.to_string());
        }
    }
    if failures.len() == options.len() {
        return Err(CallError::NoPath { nqn: nqn.to_string(), why: failures.join("; ") });
    }
    if let Err(error) = set_iopolicy(host, nqn.as_str(), config.iopolicy) {
        tracing::warn!(%error, "multipath I/O policy not set");
    }
    Ok(options.iter().map(ConnectOptions::key).collect())
}

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
