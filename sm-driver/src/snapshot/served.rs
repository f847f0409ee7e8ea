//! Layered volumes served to VMs by this host's datapath engine
//! ([`crate::engine`]): what `Datapath.attach`/`detach` do for a volume
//! whose data is a chain, and the door a snapshot of such a running volume
//! swaps its leaf through.
//!
//! The engine is chosen by what the host has: tapdisk (`tap-ctl`) if its
//! blktap opens qcow2, otherwise qemu-storage-daemon behind an NBD device
//! (the test bed's engine); a host with neither cannot serve a layered
//! volume and says so. Plain volumes keep blkback on their LV.
//!
//! Each open disk's handle lives in `/run/nvmetcp/engine/<sr>/<lv>.json`
//! (every plugin call is a fresh process); the chain LVs it uses are active
//! on this host while it is open, and no other code of this host
//! deactivates or merges them meanwhile ([`busy_lvs`]). Only this host
//! knows its open disks: serving a layered volume on a pool member, whose
//! chain the master's collector cannot see, is refused (the XAPI host
//! plugin call that would tell the master is not written yet).

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::cmd::{Program, Runner};
use crate::engine::qsd::Qsd;
use crate::engine::tapdisk::Tapdisk;
use crate::engine::{Access, DiskName, Engine, EngineError, EngineKind, Image, OpenDisk};
use crate::host::HostRoot;
use crate::lvm::{Lv, Lvm};
use crate::sr_state::SrState;

use super::calls::ChainCallError;
use super::graph::Graph;
use super::journal::Serving;
use super::ops::{OpError, Running, ServingProbe};

/// Where open disks' handles (and qemu-storage-daemon's sockets) live.
pub const RUN_BASE: &str = "/run/nvmetcp/engine";

/// This host's engine, if it can serve qcow2 chains.
///
/// # Errors
/// [`EngineError::Unsupported`] naming what is missing.
pub fn engine<'a>(runner: &'a dyn Runner, host: &'a HostRoot) -> Result<Box<dyn Engine + 'a>, EngineError> {
    if runner.resolve(Program::TapCtl).is_ok() {
        let tapdisk = Tapdisk::new(runner);
        if tapdisk.features()?.qcow2 {
            return Ok(Box::new(tapdisk));
        }
        return Err(EngineError::Unsupported {
            engine: EngineKind::Tapdisk,
            what: "open qcow2 layers",
            why: "this host's blktap has no qcow2 driver (XCP-ng 8.3 updates of 2026-05-05 add it): update the host"
                .to_owned(),
        });
    }
    let qsd = Qsd::new(runner, host, host.path(&format!("{RUN_BASE}/qsd")));
    qsd.features().map_err(|_| EngineError::Unsupported {
        engine: EngineKind::QemuStorageDaemon,
        what: "serve a snapshotted volume",
        why: "neither tap-ctl nor qemu-storage-daemon with nbd-client is installed".to_owned(),
    })?;
    Ok(Box::new(qsd))
}

fn handle_path(host: &HostRoot, sr_uuid: &str, lv: &str) -> PathBuf {
    host.path(&format!("{RUN_BASE}/{sr_uuid}/{lv}.json"))
}

fn io(doing: &str, source: std::io::Error) -> ChainCallError {
    ChainCallError::Op(OpError::Engine(EngineError::Io {
        engine: EngineKind::QemuStorageDaemon,
        doing: doing.to_owned(),
        source,
    }))
}

/// The disk this host serves for volume `lv` of SR `sr_uuid`, if any.
#[must_use]
pub fn open_here(host: &HostRoot, sr_uuid: &str, lv: &str) -> Option<OpenDisk> {
    let text = std::fs::read_to_string(handle_path(host, sr_uuid, lv)).ok()?;
    serde_json::from_str(&text).ok()
}

fn save(host: &HostRoot, sr_uuid: &str, lv: &str, disk: &OpenDisk) -> Result<(), ChainCallError> {
    let path = handle_path(host, sr_uuid, lv);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the handle directory", e))?;
    }
    let text = serde_json::to_string(disk).unwrap_or_default();
    let partial = path.with_extension("json.new");
    std::fs::write(&partial, text).map_err(|e| io("writing the disk's handle", e))?;
    std::fs::rename(&partial, &path).map_err(|e| io("writing the disk's handle", e))
}

/// The volumes this host serves for SR `sr_uuid`.
fn open_volumes(host: &HostRoot, sr_uuid: &str) -> Vec<String> {
    host.list_dir(&format!("{RUN_BASE}/{sr_uuid}"))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| f.strip_suffix(".json").map(str::to_owned))
        .collect()
}

/// Every LV the chains this host has open use (none may be deactivated,
/// merged or removed while they are open).
#[must_use]
pub fn busy_lvs(host: &HostRoot, sr_uuid: &str, graph: &Graph) -> BTreeSet<String> {
    let mut busy = BTreeSet::new();
    for volume in open_volumes(host, sr_uuid) {
        match graph.chain(&volume) {
            Ok(chain) => busy.extend(chain.iter().map(|n| n.lv.clone())),
            // A volume no longer in the graph: keep what its handle names.
            Err(_) => {
                busy.insert(volume);
            }
        }
    }
    busy
}

/// Serves the layered volume `lv` to a VM: its chain's LVs activated on
/// this host, the chain opened by the engine, leaf read-write. Returns the
/// block device; a volume already served returns its device again.
///
/// # Errors
/// [`ChainCallError`].
pub fn attach(
    runner: &dyn Runner,
    host: &HostRoot,
    lvm: &Lvm<'_>,
    state: &SrState,
    volume_tag: &str,
    lv: &Lv,
) -> Result<PathBuf, ChainCallError> {
    if let Some(disk) = open_here(host, &state.sr_uuid, &lv.name) {
        return Ok(disk.device);
    }
    if !crate::pool_role::is_master(host) {
        return Err(ChainCallError::Layered {
            key: lv.name.clone(),
            what: "attaching it on a pool member (only the master serves snapshotted volumes in this version; \
                   start or migrate the VM on the master)",
        });
    }
    let graph = Graph::from_lvs(&lvm.lvs(&state.vg)?, volume_tag)?;
    let chain = graph.chain(&lv.name)?;
    let engine = engine(runner, host).map_err(OpError::from)?;
    for node in chain.iter().rev() {
        lvm.lv_activate(&state.vg, &node.lv, true)?;
    }
    let leaf = chain.first().map(|n| n.lv.clone()).unwrap_or_default();
    let format = chain.first().map(|n| n.format).unwrap_or(crate::engine::ImageFormat::Raw);
    let image = Image::new(format, format!("/dev/{}/{leaf}", state.vg)).map_err(OpError::from)?;
    let name = DiskName::new(&lv.name).map_err(OpError::from)?;
    let disk = engine.open(&name, &image, Access::ReadWrite).map_err(OpError::from)?;
    if let Err(error) = save(host, &state.sr_uuid, &lv.name, &disk) {
        let _ = engine.close(&disk);
        return Err(error);
    }
    tracing::info!(volume = %lv.name, device = %disk.device.display(), engine = %engine.kind(), "chain served");
    Ok(disk.device)
}

/// Stops serving `lv` if this host serves it, and deactivates the chain
/// LVs no other open disk of this host uses. Returns whether it was served.
///
/// # Errors
/// [`ChainCallError`]; the handle stays while the engine refuses.
pub fn detach(
    runner: &dyn Runner,
    host: &HostRoot,
    lvm: Option<&Lvm<'_>>,
    state: &SrState,
    volume_tag: &str,
    lv: &str,
) -> Result<bool, ChainCallError> {
    let Some(disk) = open_here(host, &state.sr_uuid, lv) else { return Ok(false) };
    let engine = engine(runner, host).map_err(OpError::from)?;
    engine.close(&disk).map_err(OpError::from)?;
    let _ = std::fs::remove_file(handle_path(host, &state.sr_uuid, lv));
    tracing::info!(volume = %lv, "chain no longer served");
    let Some(lvm) = lvm else { return Ok(true) };
    let lvs = lvm.lvs(&state.vg)?;
    let graph = Graph::from_lvs(&lvs, volume_tag)?;
    let busy = busy_lvs(host, &state.sr_uuid, &graph);
    let chain: Vec<String> = graph.chain(lv).map(|c| c.iter().map(|n| n.lv.clone()).collect()).unwrap_or_default();
    for name in chain.iter().filter(|n| !busy.contains(*n)) {
        if lvs.iter().any(|l| &l.name == name && l.active) {
            lvm.lv_activate(&state.vg, name, false)?;
        }
    }
    Ok(true)
}

/// A volume this host serves, as the snapshot's door to its engine.
pub struct ServedHere<'a> {
    /// The engine.
    pub engine: Box<dyn Engine + 'a>,
    /// This host.
    pub host: &'a HostRoot,
    /// The SR.
    pub sr_uuid: &'a str,
    /// The volume.
    pub volume: &'a str,
    /// Its open disk.
    pub disk: OpenDisk,
}

impl Running for ServedHere<'_> {
    fn swap(&self, new_leaf: &Image) -> Result<(), EngineError> {
        let swapped = self.engine.swap_leaf(&self.disk, new_leaf)?;
        save(self.host, self.sr_uuid, self.volume, &swapped).map_err(|e| EngineError::Io {
            engine: self.engine.kind(),
            doing: "recording the new leaf".to_owned(),
            source: std::io::Error::other(e.to_string()),
        })
    }
}

/// For replay: what this host's engines write to.
pub struct HereProbe<'a> {
    /// This host.
    pub host: &'a HostRoot,
    /// The SR.
    pub sr_uuid: &'a str,
}

impl ServingProbe for HereProbe<'_> {
    fn serving(&self, volume: &str, old_leaf: &Image, new_leaf: &Image) -> Serving {
        // The handle is saved after the engine swapped: one naming the old
        // leaf may be stale, so only the new leaf is believed (replay then
        // waits, or finishes once the disk is closed).
        let _ = old_leaf;
        match open_here(self.host, self.sr_uuid, volume) {
            None => Serving::NotOpen,
            Some(disk) if &disk.leaf == new_leaf => Serving::NewLeaf,
            Some(_) => Serving::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::FakeRunner;

    #[test]
    fn a_blktap_without_qcow2_is_refused_with_what_to_do() {
        // `tap-ctl` lists its commands; this one has no commit/qcow2 support.
        let runner =
            FakeRunner::new().then_stdout(
            "usage: tap-ctl COMMAND [OPTIONS]\nCOMMAND := { list | allocate | free | create | destroy | spawn | attach | detach | open | close | pause | unpause | stats | major | check }\n",
        );
        let host = HostRoot::system();
        let refused = engine(&runner, &host).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("no qcow2 driver") && refused.contains("update the host"), "{refused}");
    }

    #[test]
    fn neither_engine_is_a_clear_refusal() {
        let runner = FakeRunner::new().without(Program::TapCtl).without(Program::QemuStorageDaemon);
        let host = HostRoot::system();
        let refused = engine(&runner, &host).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("neither tap-ctl nor qemu-storage-daemon"), "{refused}");
    }
}
