//! What the agent watches: every nvmetcp SR attached on this host (the state
//! files `SR.attach` leaves in `/run/nvmetcp/srs`), the state of its paths
//! and the block device carrying its I/O, from whichever initiator serves
//! it here:
//!
//! * the kernel's: controllers' and ANA state (`nvme::health`, the same
//!   reading `SR.stat` and `nvmetcp status` use), the native multipath head
//!   (`nvme0n1`);
//! * the userspace initiator (XCP-ng 8.x, no `nvme_tcp`): its daemon's state
//!   file (`nvmetcp_initiator::daemon::door`), its paths and the NBD device
//!   it serves (`nbd1`, verified against sysfs), when that daemon is alive
//!   and serving the SR.
//!
//! Read-only: the agent takes no lock the plugin takes, so it can never
//! block or slow a plugin call.

use nvmetcp_initiator::daemon::config::SrId;
use nvmetcp_initiator::daemon::state::{DaemonState, PathReport, Phase};
use nvmetcp_initiator::daemon::{door, Layout};

use super::alerts::PathView;
use crate::host::HostRoot;
use crate::nvme::health::{health, Health};
use crate::nvme::names::Portal;
use crate::nvme::sysfs::namespace_devices;
use crate::sr_state::{load, SrState};

/// One attached SR as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedSr {
    /// What attach recorded.
    pub state: SrState,
    /// Its paths now (`None` when they could not be read).
    pub paths: Option<Vec<PathView>>,
    /// The block device carrying its I/O (`nvme0n1`, `nbd1`), if found.
    pub device: Option<String>,
}

impl AttachedSr {
    /// `(live, total)` paths.
    #[must_use]
    pub fn counts(&self) -> (usize, usize) {
        self.paths.as_ref().map_or((0, self.state.paths.len()), |p| (p.iter().filter(|v| v.live).count(), p.len()))
    }
}

/// Every SR attached here, sorted by UUID. Unreadable state files are skipped
/// (`nvmetcp status` reports them).
#[must_use]
pub fn attached(host: &HostRoot) -> Vec<AttachedSr> {
    crate::sr_state::attached_uuids(host)
        .iter()
        .filter_map(|uuid| load(host, uuid).ok())
        .map(|state| match userspace(host, &state.sr_uuid) {
            Some((daemon, device)) => {
                let paths = daemon.device.map(|d| d.paths.iter().map(daemon_view).collect());
                AttachedSr { state, paths, device }
            }
            None => {
                let paths = health(host, &state.paths).ok().map(|h| kernel_views(&h));
                let device = multipath_head(host, &state);
                AttachedSr { state, paths, device }
            }
        })
        .collect()
}

/// The state of the userspace initiator daemon serving SR `sr_uuid`, when
/// one is alive and serving, and its verified NBD device (`nbd1`).
fn userspace(host: &HostRoot, sr_uuid: &str) -> Option<(DaemonState, Option<String>)> {
    let layout = Layout::under(&host.path("/"));
    let sr = SrId::parse(sr_uuid).ok()?;
    let state = door::read_state(&layout, &sr).ok()??;
    if state.phase != Phase::Serving || !door::daemon_alive(&layout, &state) {
        return None;
    }
    let device = door::device(&layout, &sr).ok().and_then(|d| d.path.strip_prefix("/dev/").map(str::to_owned));
    Some((state, device))
}

fn usable_ana(ana: Option<&str>) -> bool {
    ana.is_none_or(|a| a == "optimized" || a == "non-optimized")
}

fn daemon_view(path: &PathReport) -> PathView {
    let live = path.status == "live" && usable_ana(path.ana.as_deref());
    PathView {
        portal: path.portal.clone(),
        controller: path.cntlid.map(|c| format!("cntlid {c}")),
        state: match &path.ana {
            Some(ana) if path.status == "live" && !live => format!("live, ANA {ana}"),
            _ => path.status.clone(),
        },
        live,
    }
}

fn kernel_views(health: &Health) -> Vec<PathView> {
    health
        .paths
        .iter()
        .map(|p| PathView {
            portal: Portal { addr: p.key.traddr, port: p.key.trsvcid }.to_string(),
            controller: p.controller.clone(),
            state: match &p.ana_state {
                Some(ana) if p.state == "live" && !p.is_live() => format!("live, ANA {ana}"),
                _ => p.state.clone(),
            },
            live: p.is_live(),
        })
        .collect()
}

/// The native multipath head of the SR's namespace (`nvme0n1`), found by
/// subsystem and identity.
fn multipath_head(host: &HostRoot, state: &SrState) -> Option<String> {
    namespace_devices(host).ok()?.into_iter().find_map(|d| {
        let same = d.is_multipath_head
            && d.subsysnqn == state.nqn.as_str()
            && d.identity.as_ref().is_some_and(|i| *i == state.namespace);
        same.then_some(d.name)
    })
}
