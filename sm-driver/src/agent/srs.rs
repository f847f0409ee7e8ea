//! What the agent watches: every nvmetcp SR attached on this host (the state
//! files `SR.attach` leaves in `/run/nvmetcp/srs`), the health of its paths
//! (`nvme::health`, the same reading `SR.stat` and `nvmetcp status` use) and
//! its block device. Read-only: the agent takes no lock the plugin takes, so
//! it can never block or slow a plugin call.

use crate::host::HostRoot;
use crate::nvme::health::{health, Health};
use crate::nvme::sysfs::namespace_devices;
use crate::sr_state::{load, SrState};

/// One attached SR as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedSr {
    /// What attach recorded.
    pub state: SrState,
    /// Its paths now (`None` when sysfs could not be read).
    pub health: Option<Health>,
}

impl AttachedSr {
    /// `(live, total)` paths.
    #[must_use]
    pub fn counts(&self) -> (usize, usize) {
        self.health.as_ref().map_or((0, self.state.paths.len()), |h| (h.live(), h.paths.len()))
    }
}

/// Every SR attached here, sorted by UUID. Unreadable state files are skipped
/// (`nvmetcp status` reports them).
#[must_use]
pub fn attached(host: &HostRoot) -> Vec<AttachedSr> {
    crate::sr_state::attached_uuids(host)
        .iter()
        .filter_map(|uuid| load(host, uuid).ok())
        .map(|state| {
            let health = health(host, &state.paths).ok();
            AttachedSr { state, health }
        })
        .collect()
}

/// The block device carrying SR I/O: the native multipath head of the SR's
/// namespace (`nvme0n1`), found by subsystem and identity.
#[must_use]
pub fn block_device(host: &HostRoot, state: &SrState) -> Option<String> {
    namespace_devices(host).ok()?.into_iter().find_map(|d| {
        let same = d.is_multipath_head
            && d.subsysnqn == state.nqn
            && d.identity.as_ref().is_some_and(|i| i.canonical() == state.namespace);
        same.then_some(d.name)
    })
}
