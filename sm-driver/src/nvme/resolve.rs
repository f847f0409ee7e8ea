//! From (subsystem NQN, NSID) to the multipath head's `/dev` node, verified.
//!
//! Handing LVM the wrong block device destroys data, so resolution never
//! trusts a name: it looks the namespace up by subsystem NQN and NSID in
//! sysfs, insists on a native multipath *head* (never a path device, never a
//! single controller's namespace, which would make LVM see duplicate PVs),
//! checks its UUID/NGUID/EUI-64 against the expected identity, and requires
//! the `/dev` node. A namespace that is slow to appear gets one rescan of its
//! controllers and is polled until a deadline.
//!
//! A name checked a moment ago can name another namespace now: the target
//! swaps the namespace under its NSID, the kernel drops the old head and
//! gives the new one the freed instance, so `/dev/nvmeXnY` is the new
//! namespace when LVM opens it. [`pin`] closes that window: it opens the head
//! (an open head keeps its instance, so its name cannot pass to another
//! namespace while the file is open) and only then checks the identity
//! again. LVM's filter names the device while the pin is held (see
//! [`crate::lvm::Lvm::holding`]), so the filter names a stable identity: this
//! namespace, or a head that is gone and fails every I/O.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::host::HostRoot;

use super::names::Nqn;
use super::sysfs::{controllers, namespace_devices, ControllerState, NamespaceDevice, NamespaceIdentity};

/// How long to wait for a namespace to appear after connecting.
pub const APPEAR_TIMEOUT: Duration = Duration::from_secs(15);

/// Why no usable device was found.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No such namespace after waiting.
    #[error(
        "namespace {nsid} of subsystem {nqn} did not appear within {waited:?} ({live} live controller(s)); check that \
             the target exports that NSID to this host"
    )]
    NotFound {
        /// The subsystem.
        nqn: String,
        /// The NSID.
        nsid: u32,
        /// How long we waited.
        waited: Duration,
        /// Live controllers of the subsystem.
        live: usize,
    },
    /// The namespace shows up without a multipath head.
    #[error("namespace {nsid} of subsystem {nqn} has no native multipath head ({reason})")]
    NoHead {
        /// The subsystem.
        nqn: String,
        /// The NSID.
        nsid: u32,
        /// Why, and what to do.
        reason: &'static str,
    },
    /// The namespace is not the one expected.
    #[error(
        "namespace {nsid} of subsystem {nqn} is {found}, not the expected {expected}: refusing to use it (was the \
             namespace replaced on the target?)"
    )]
    IdentityMismatch {
        /// The subsystem.
        nqn: String,
        /// The NSID.
        nsid: u32,
        /// The expected identity.
        expected: String,
        /// What the device reports.
        found: String,
    },
    /// The device has no `/dev` node.
    #[error("{device} has no device node; is udev or devtmpfs working?")]
    NoDeviceNode {
        /// The expected node.
        device: String,
    },
    /// The head could not be opened to pin it.
    #[error("cannot open {device} to hold it while LVM works on it: {source}")]
    Open {
        /// The node.
        device: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Once opened, the name no longer belonged to the namespace.
    #[error(
        "{device} stopped being namespace {identity} of subsystem {nqn} while it was opened (now {now}); nothing was \
         done: retry, and check whether the namespace was replaced on the target"
    )]
    Moved {
        /// The node that was resolved.
        device: String,
        /// The subsystem.
        nqn: String,
        /// The namespace's identity.
        identity: String,
        /// What resolving again found.
        now: String,
    },
    /// sysfs could not be read.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
}

/// A verified head held open: while the file is open the head keeps its
/// kernel instance, so its `/dev` name stays this namespace's (or a dead
/// head's) and never becomes another namespace's.
#[derive(Debug)]
pub struct PinnedNamespace {
    /// The head, verified after it was opened.
    pub resolved: ResolvedNamespace,
    /// The open head.
    pub file: File,
}

/// Opens `resolved`'s head, then resolves it again by NSID and identity: it
/// must still be the same node.
///
/// # Errors
/// [`ResolveError::Open`] when the node cannot be opened,
/// [`ResolveError::Moved`] when, once open, the name belongs to something
/// else; any error of [`resolve_head`].
pub fn pin(host: &HostRoot, nqn: &Nqn, resolved: ResolvedNamespace) -> Result<PinnedNamespace, ResolveError> {
    let device = resolved.device.display().to_string();
    let file =
        File::open(host.path(&device)).map_err(|source| ResolveError::Open { device: device.clone(), source })?;
    let identity = resolved.namespace.identity.as_ref();
    let described = identity.map_or_else(|| format!("nsid {}", resolved.namespace.nsid), NamespaceIdentity::canonical);
    let moved = |now: String| ResolveError::Moved {
        device: device.clone(),
        nqn: nqn.to_string(),
        identity: described.clone(),
        now,
    };
    let again =
        resolve_head(host, nqn, resolved.namespace.nsid, identity, Duration::ZERO).map_err(|e| moved(e.to_string()))?;
    if again.device != resolved.device {
        return Err(moved(format!("at {}", again.device.display())));
    }
    Ok(PinnedNamespace { resolved: again, file })
}

/// A verified multipath head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedNamespace {
    /// `/dev/nvmeXnY` (valid for now; re-resolve on every call).
    pub device: PathBuf,
    /// What sysfs says about it.
    pub namespace: NamespaceDevice,
}

/// Finds and verifies the head of namespace `nsid` of `nqn`.
///
/// # Errors
/// [`ResolveError`] when it does not appear in time, is not a multipath head,
/// or is not the expected namespace.
pub fn resolve_head(
    host: &HostRoot,
    nqn: &Nqn,
    nsid: u32,
    expected: Option<&NamespaceIdentity>,
    timeout: Duration,
) -> Result<ResolvedNamespace, ResolveError> {
    let started = Instant::now();
    let mut rescanned = false;
    loop {
        let found: Vec<NamespaceDevice> =
            namespace_devices(host)?.into_iter().filter(|d| d.subsysnqn == nqn.as_str() && d.nsid == nsid).collect();
        if let Some(namespace) = found.iter().find(|d| d.is_multipath_head) {
            return verify(host, nqn, nsid, namespace.clone(), expected);
        }
        if !found.is_empty() {
            let multipath = host.read_trimmed("/sys/module/nvme_core/parameters/multipath").unwrap_or_default();
            let reason = if multipath == "Y" {
                "the target does not report multi-controller support (CMIC), so the kernel made no head; enable it on \
                 the target"
            } else {
                "native multipath is off: set nvme_core.multipath=Y (the nvmetcp RPM does in /etc/modprobe.d) and reboot"
            };
            return Err(ResolveError::NoHead { nqn: nqn.to_string(), nsid, reason });
        }
        let live: Vec<String> = controllers(host)?
            .into_iter()
            .filter(|c| c.subsysnqn == nqn.as_str() && c.state == ControllerState::Live)
            .map(|c| c.name)
            .collect();
        if started.elapsed() >= timeout {
            return Err(ResolveError::NotFound { nqn: nqn.to_string(), nsid, waited: timeout, live: live.len() });
        }
        if !rescanned && !live.is_empty() {
            for name in &live {
                // Best effort: a controller going away meanwhile is fine.
                let _ = std::fs::write(host.path(&format!("/sys/class/nvme/{name}/rescan_controller")), "1");
            }
            tracing::debug!(%nqn, nsid, "namespace not there yet; rescanned its controllers");
            rescanned = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn verify(
    host: &HostRoot,
    nqn: &Nqn,
    nsid: u32,
    namespace: NamespaceDevice,
    expected: Option<&NamespaceIdentity>,
) -> Result<ResolvedNamespace, ResolveError> {
    if let Some(expected) = expected {
        if namespace.identity.as_ref() != Some(expected) {
            return Err(ResolveError::IdentityMismatch {
                nqn: nqn.to_string(),
                nsid,
                expected: expected.canonical(),
                found: namespace
                    .identity
                    .as_ref()
                    .map_or_else(|| "without identifier".to_owned(), NamespaceIdentity::canonical),
            });
        }
    }
    let device = format!("/dev/{}", namespace.name);
    if !host.exists(&device) {
        return Err(ResolveError::NoDeviceNode { device });
    }
    Ok(ResolvedNamespace { device: PathBuf::from(device), namespace })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{resolve_head, ResolveError};
    use crate::nvme::sysfs::fixture::SysfsTree;
    use crate::nvme::sysfs::NamespaceIdentity;

    const NQN: &str = "nqn.2024-01.io.example:array";
    const WWID: &str = "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc";

    fn nqn() -> crate::nvme::names::Nqn {
        NQN.parse().unwrap()
    }

    #[test]
    fn a_pin_holds_the_head_and_refuses_a_name_that_changed_namespace() {
        let tree = SysfsTree::new();
        tree.head("nvme-subsys1", "nvme1n1", NQN, 1, WWID, 8);
        let expected = NamespaceIdentity::parse(WWID).unwrap();
        let resolved = resolve_head(&tree.host(), &nqn(), 1, Some(&expected), Duration::ZERO).unwrap();
        let pinned = super::pin(&tree.host(), &nqn(), resolved.clone()).unwrap();
        assert_eq!(pinned.resolved, resolved);
        // Swapped under the name between the check and the open: refused.
        tree.head("nvme-subsys1", "nvme1n1", NQN, 1, "uuid.99999999-2222-3333-4444-555555555555", 8);
        let err = super::pin(&tree.host(), &nqn(), resolved.clone()).unwrap_err();
        assert!(matches!(err, ResolveError::Moved { .. }), "{err}");
        assert!(err.to_string().contains("stopped being namespace uuid.8d30ade9"), "{err}");
        // Gone before the open: refused, naming the node.
        std::fs::remove_file(tree.host().path("/dev/nvme1n1")).unwrap();
        let err = super::pin(&tree.host(), &nqn(), resolved).unwrap_err();
        assert!(matches!(err, ResolveError::Open { .. }), "{err}");
    }

    #[test]
    fn finds_the_head_by_nqn_and_nsid_and_checks_identity() {
        let tree = SysfsTree::new();
        tree.head(
            "nvme-subsys0",
            "nvme0n1",
            "nqn.2024-01.io.example:other",
            1,
            "uuid.11111111-2222-3333-4444-555555555555",
            8,
        );
        tree.head("nvme-subsys1", "nvme1n1", NQN, 2, "uuid.22222222-2222-3333-4444-555555555555", 8);
        tree.head("nvme-subsys1", "nvme1n2", NQN, 1, WWID, 8);
        tree.path_device("nvme3", "nvme1c3n2");
        let expected = NamespaceIdentity::parse(WWID).unwrap();
        let found = resolve_head(&tree.host(), &nqn(), 1, Some(&expected), Duration::ZERO).unwrap();
        assert_eq!(found.device.to_str(), Some("/dev/nvme1n2"), "the head named by nsid, not by its name's suffix");
        let wrong = NamespaceIdentity::parse("eui.0025388b71b0e4c1").unwrap();
        let err = resolve_head(&tree.host(), &nqn(), 1, Some(&wrong), Duration::ZERO).unwrap_err();
        assert!(matches!(err, ResolveError::IdentityMismatch { .. }));
        assert!(err.to_string().contains("refusing to use it"), "{err}");
    }

    #[test]
    fn a_namespace_without_head_is_refused_with_the_reason() {
        let tree = SysfsTree::new();
        tree.single("nvme0", "nvme0n1", NQN, 1, WWID);
        tree.write("/sys/module/nvme_core/parameters/multipath", "N\n");
        let err = resolve_head(&tree.host(), &nqn(), 1, None, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("native multipath is off: set nvme_core.multipath=Y"), "{err}");
        tree.write("/sys/module/nvme_core/parameters/multipath", "Y\n");
        let err = resolve_head(&tree.host(), &nqn(), 1, None, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("multi-controller support (CMIC)"), "{err}");
    }

    #[test]
    fn a_missing_namespace_is_rescanned_and_waited_for_until_the_deadline() {
        let tree = SysfsTree::new();
        tree.controller("nvme0", "tcp", NQN, "traddr=10.0.0.1,trsvcid=4420", "nqn.h:h", "live");
        let started = Instant::now();
        let err = resolve_head(&tree.host(), &nqn(), 1, None, Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(matches!(err, ResolveError::NotFound { live: 1, .. }), "{err}");
        assert_eq!(tree.read("/sys/class/nvme/nvme0/rescan_controller"), "1", "asked the controller to rescan");
    }
}
