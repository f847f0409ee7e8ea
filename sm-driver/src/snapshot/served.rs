//! Layered volumes served to VMs by this host's datapath engine
//! ([`crate::engine`]): what `Datapath.attach`/`detach` do for a volume
//! whose data is a chain, and the door a snapshot of such a running volume
//! swaps its leaf through.
//!
//! The engine is chosen by what the host has: tapdisk (`tap-ctl`) if its
//! blktap opens qcow2, otherwise qemu-storage-daemon behind an NBD device
//! (the test bed's engine); a host with neither cannot serve a layered
//! volume and says so. Plain volumes ([`plain_datapath`]) go through the
//! master's engine too (`aio:` for tapdisk) when its tapdisk opens qcow2
//! (`datapath = auto`, the default), as XCP-ng's own SRs do, so a running
//! VM's disk can be snapshotted at once (pause, swap to the new qcow2 leaf
//! over the raw LV, resume); a host without that keeps blkback on the LV
//! and says why. `datapath = engine` takes any engine (qemu-storage-daemon
//! in the test bed), `datapath = blkback` always keeps blkback.
//!
//! Each open disk's handle lives in `/run/nvmetcp/engine/<sr>/<lv>.json`
//! (every plugin call is a fresh process). A swap writes the handle first
//! (the leaf it is about to switch to), then asks the engine, then writes
//! the result: a call killed in between leaves a handle that says a swap
//! was asked, and replay asks the engine which leaf it writes (and puts the
//! answer in the handle). The chain LVs a disk uses are active
//! on this host while it is open, and no other code of this host
//! deactivates or merges them meanwhile ([`busy_lvs`]). A pool member
//! serves layered volumes too: the master learns which volumes it serves,
//! and switches a running one to a new leaf, through the XAPI host plugin
//! ([`crate::chain_member`] answers, [`super::pool`] asks). The chain's parents
//! are activated read-only, the leaf read-write; after a swap the old leaf
//! is reloaded read-only.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cmd::{Program, Runner};
use crate::engine::qsd::Qsd;
use crate::engine::tapdisk::Tapdisk;
use crate::engine::{Access, DiskName, Engine, EngineError, EngineKind, Image, OpenDisk};
use crate::host::HostRoot;
use crate::host_config::PlainDatapath;
use crate::ids::{LvName, VgName};
use crate::lvm::{Lv, Lvm, LvmError};
use crate::sr_state::SrState;

use super::calls::ChainCallError;
use super::graph::Graph;
use super::journal::{Entry, Operation, Serving};
use super::ops::{Faults, OpError, Running, ServingProbe};

mod merging;

pub use merging::{unmergeable_lvs, MergeHere};

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

/// What a probe of this host's tapdisk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapdiskProbe {
    /// No `tap-ctl` on this host (not an XCP-ng dom0).
    Absent,
    /// tapdisk opens qcow2 (its `tap-ctl` has `commit` and `query`).
    Qcow2,
    /// tapdisk without the qcow2 driver.
    NoQcow2,
    /// `tap-ctl` could not be asked (why).
    Unasked(String),
}

impl TapdiskProbe {
    /// Asks `tap-ctl` through `runner` (one call, `tap-ctl` alone).
    #[must_use]
    pub fn of(runner: &dyn Runner) -> Self {
        if runner.resolve(Program::TapCtl).is_err() {
            return Self::Absent;
        }
        match Tapdisk::new(runner).features() {
            Ok(features) if features.qcow2 => Self::Qcow2,
            Ok(_) => Self::NoQcow2,
            Err(error) => Self::Unasked(error.to_string()),
        }
    }
}

/// How this host hands plain volumes to VMs, and why (doctor and SMlog say both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainChoice {
    /// Through this host's engine (`vbd3`); otherwise blkback on the LV (`vbd`).
    pub engine: bool,
    /// Why, for an administrator.
    pub why: String,
}

impl PlainChoice {
    fn engine(why: &str) -> Self {
        Self { engine: true, why: why.to_owned() }
    }

    fn blkback(why: impl Into<String>) -> Self {
        Self { engine: false, why: why.into() }
    }

    /// The datapath's name as XCP-ng calls it.
    #[must_use]
    pub fn name(&self) -> &'static str {
        if self.engine {
            "engine"
        } else {
            "blkback"
        }
    }
}

/// The choice for a host, master or member alike: `choice` from host.conf
/// and what its tapdisk can do. A member that serves a plain volume through
/// its engine lets the master snapshot it running there (`chain_swap`).
#[must_use]
pub fn choose_plain(choice: Option<PlainDatapath>, tapdisk: &TapdiskProbe) -> PlainChoice {
    match choice {
        Some(PlainDatapath::Blkback) => PlainChoice::blkback("datapath = blkback in /etc/nvmetcp/host.conf"),
        Some(PlainDatapath::Engine) => PlainChoice::engine("datapath = engine in /etc/nvmetcp/host.conf"),
        None | Some(PlainDatapath::Auto) => match tapdisk {
            TapdiskProbe::Qcow2 => PlainChoice::engine("tapdisk opens qcow2 on this host (datapath = auto)"),
            TapdiskProbe::NoQcow2 => PlainChoice::blkback(
                "this host's blktap has no qcow2 driver (datapath = auto; XCP-ng 8.3 updates of 2026-05-05 add it)",
            ),
            TapdiskProbe::Absent => PlainChoice::blkback(
                "no tapdisk on this host (datapath = auto; datapath = engine serves plain volumes through \
                 qemu-storage-daemon)",
            ),
            TapdiskProbe::Unasked(why) => {
                PlainChoice::blkback(format!("tap-ctl could not be asked (datapath = auto): {why}"))
            }
        },
    }
}

/// How this host hands plain volumes to VMs: [`choose_plain`] with this
/// host's tapdisk asked (only under `datapath = auto`).
#[must_use]
pub fn plain_datapath(runner: &dyn Runner, choice: Option<PlainDatapath>) -> PlainChoice {
    let needs_probe = matches!(choice, None | Some(PlainDatapath::Auto));
    let tapdisk = if needs_probe { TapdiskProbe::of(runner) } else { TapdiskProbe::Absent };
    choose_plain(choice, &tapdisk)
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

/// A handle as kept on this host: the open disk, and the leaf a swap in
/// progress switches it to (written before the engine is asked).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    #[serde(flatten)]
    disk: OpenDisk,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    swapping_to: Option<Image>,
    /// Opened read-only (a node others build on: a snapshot volume
    /// attached for XO's export); such a disk is never swapped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    read_only: bool,
}

fn kept(host: &HostRoot, sr_uuid: &str, lv: &str) -> Option<Kept> {
    let text = std::fs::read_to_string(handle_path(host, sr_uuid, lv)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The disk this host serves for volume `lv` of SR `sr_uuid`, if any.
#[must_use]
pub fn open_here(host: &HostRoot, sr_uuid: &str, lv: &str) -> Option<OpenDisk> {
    kept(host, sr_uuid, lv).map(|k| k.disk)
}

/// Whether this host serves volume `lv` read-only (it is then never
/// swapped onto a writable leaf).
#[must_use]
pub fn open_read_only(host: &HostRoot, sr_uuid: &str, lv: &str) -> bool {
    kept(host, sr_uuid, lv).is_some_and(|k| k.read_only)
}

/// Keeps `disk` as the disk this host serves for volume `lv` (after the
/// engine opened it read-write).
///
/// # Errors
/// [`ChainCallError`] if the handle cannot be written.
pub fn record(host: &HostRoot, sr_uuid: &str, lv: &str, disk: &OpenDisk) -> Result<(), ChainCallError> {
    save(host, sr_uuid, lv, disk, None)
}

/// Keeps `disk` as the disk this host serves for volume `lv`, opened with
/// `access`.
///
/// # Errors
/// [`ChainCallError`] if the handle cannot be written.
pub(crate) fn record_opened(
    host: &HostRoot,
    sr_uuid: &str,
    lv: &str,
    disk: &OpenDisk,
    access: Access,
) -> Result<(), ChainCallError> {
    write_kept(
        host,
        sr_uuid,
        lv,
        &Kept { disk: disk.clone(), swapping_to: None, read_only: access == Access::ReadOnly },
    )
}

/// Forgets the handle of volume `lv` (after the engine closed it).
pub fn forget(host: &HostRoot, sr_uuid: &str, lv: &str) {
    let _ = std::fs::remove_file(handle_path(host, sr_uuid, lv));
}

fn save(
    host: &HostRoot,
    sr_uuid: &str,
    lv: &str,
    disk: &OpenDisk,
    swapping_to: Option<&Image>,
) -> Result<(), ChainCallError> {
    let read_only = kept(host, sr_uuid, lv).is_some_and(|k| k.read_only);
    write_kept(host, sr_uuid, lv, &Kept { disk: disk.clone(), swapping_to: swapping_to.cloned(), read_only })
}

fn write_kept(host: &HostRoot, sr_uuid: &str, lv: &str, kept: &Kept) -> Result<(), ChainCallError> {
    let path = handle_path(host, sr_uuid, lv);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the handle directory", e))?;
    }
    let text = serde_json::to_string(kept).unwrap_or_default();
    let partial = path.with_extension("json.new");
    std::fs::write(&partial, text).map_err(|e| io("writing the disk's handle", e))?;
    std::fs::rename(&partial, &path).map_err(|e| io("writing the disk's handle", e))
}

/// The volumes this host serves for SR `sr_uuid`.
pub(crate) fn open_volumes(host: &HostRoot, sr_uuid: &str) -> Vec<String> {
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

/// Serves the volume `lv` to a VM through this host's engine (a layered
/// one, or a plain one where [`plain_datapath`] says so): its chain's LVs (a plain
/// volume's: its own) activated on this host, the chain opened by the
/// engine, leaf read-write. Returns the block device; a volume already
/// served returns its device again.
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
    let lvs = lvm.lvs(&state.vg)?;
    let graph = Graph::from_lvs(&lvs, volume_tag)?;
    let chain = graph.chain(&lv.name)?;
    let engine = engine(runner, host).map_err(OpError::from)?;
    let leaf = chain.first().map(|n| n.lv.clone()).unwrap_or_default();
    let access = access_to(&graph, &lv.name, &leaf);
    // Base first; every node but the leaf read-only, and the leaf too when
    // others build on it (activation is local: members do it too, without
    // writing metadata).
    let skip = usize::from(access == Access::ReadWrite);
    let read_only: Vec<LvName> =
        chain.iter().skip(skip).rev().map(|n| n.lv.parse()).collect::<Result<_, _>>().map_err(LvmError::from)?;
    lvm.lvs_activate_read_only(&state.vg, &read_only)?;
    if access == Access::ReadWrite {
        let leaf_lv: Vec<LvName> = vec![leaf.parse().map_err(LvmError::from)?];
        lvm.lvs_activate(&state.vg, &leaf_lv, &lvs)?;
    }
    let format = chain.first().map(|n| n.format).unwrap_or(crate::engine::ImageFormat::Raw);
    let image = Image::new(format, format!("/dev/{}/{leaf}", state.vg)).map_err(OpError::from)?;
    let name = DiskName::new(&lv.name).map_err(OpError::from)?;
    let disk = engine.open(&name, &image, access).map_err(OpError::from)?;
    if let Err(error) = record_opened(host, &state.sr_uuid, &lv.name, &disk, access) {
        let _ = engine.close(&disk);
        return Err(error);
    }
    // Recorded first, then the journal read: the master journals a change
    // first, then asks every host which chains it has open, so either it
    // sees this disk or this call sees its entry.
    let names: Vec<String> = chain.iter().map(|n| n.lv.clone()).collect();
    let now = lvm.lvs(&state.vg)?;
    if let Some((journalled_on, entry)) = changing_chain(&now, &lv.name, &names) {
        if let Err(error) = detach(runner, host, Some(lvm), Some(now), state, volume_tag, &lv.name) {
            tracing::warn!(%error, volume = %lv.name, "the disk could not be closed again");
        }
        let what = entry.describe();
        tracing::warn!(volume = %lv.name, lv = journalled_on, what, "not served: the master changes its chain");
        return Err(ChainCallError::ChainBusy { key: lv.name.to_string(), what, lv: journalled_on });
    }
    tracing::info!(volume = %lv.name, device = %disk.device.display(), engine = %engine.kind(), ?access, "chain served");
    Ok(disk.device)
}

/// The first journal entry on `lvs` that changes `volume`'s chain (`chain`,
/// its nodes): a merge of one of them, or a snapshot or clone of `volume`,
/// with the LV whose tag holds it.
fn changing_chain(lvs: &[Lv], volume: &str, chain: &[String]) -> Option<(String, Entry)> {
    lvs.iter()
        .flat_map(|l| l.tags.iter().filter_map(|t| Entry::from_tag(t)).map(move |e| (l.name.to_string(), e)))
        .find(|(_, entry)| match entry.operation {
            Operation::Merge { .. } => chain.iter().any(|n| entry.operation.involves(n)),
            Operation::Snapshot { .. } => entry.operation.involves(volume),
        })
}

/// How `volume`, whose chain's leaf is node `leaf`, is opened: read-only
/// when anything else builds on that node (a snapshot volume's node is the
/// frozen node its origin's new leaf is backed by: writing it would change
/// the origin's data, as XO's export attaching a snapshot would).
fn access_to(graph: &Graph, volume: &str, leaf: &str) -> Access {
    if graph.built_on_by_others(leaf, volume) {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    }
}

/// Stops serving `lv` if this host serves it, and deactivates the chain
/// LVs no other open disk of this host uses. `lvs` is the SR's VG as the
/// caller read it before (closing a disk changes no LV), or `None` to read
/// it here. Returns whether it was served.
///
/// # Errors
/// [`ChainCallError`]; the handle stays while the engine refuses.
pub fn detach(
    runner: &dyn Runner,
    host: &HostRoot,
    lvm: Option<&Lvm<'_>>,
    lvs: Option<Vec<Lv>>,
    state: &SrState,
    volume_tag: &str,
    lv: &str,
) -> Result<bool, ChainCallError> {
    let Some(disk) = open_here(host, &state.sr_uuid, lv) else { return Ok(false) };
    let engine = engine(runner, host).map_err(OpError::from)?;
    engine.close(&disk).map_err(OpError::from)?;
    forget(host, &state.sr_uuid, lv);
    tracing::info!(volume = %lv, "chain no longer served");
    let Some(lvm) = lvm else { return Ok(true) };
    let lvs = match lvs {
        Some(lvs) => lvs,
        None => lvm.lvs(&state.vg)?,
    };
    let graph = Graph::from_lvs(&lvs, volume_tag)?;
    let busy = busy_lvs(host, &state.sr_uuid, &graph);
    let chain: Vec<String> = graph.chain(lv).map(|c| c.iter().map(|n| n.lv.clone()).collect()).unwrap_or_default();
    let idle: Vec<LvName> = chain
        .into_iter()
        .filter(|n| !busy.contains(n) && lvs.iter().any(|l| l.name == *n && l.active))
        .map(|n| n.parse())
        .collect::<Result<_, _>>()
        .map_err(LvmError::from)?;
    lvm.lvs_deactivate(&state.vg, &idle)?;
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
    /// Where the test bed kills the call (`swap-asked`: the handle says a
    /// swap was asked; `swap-done`: the engine switched, the handle not yet).
    pub faults: &'a dyn Faults,
    /// LVM on the SR's namespace (activation only).
    pub lvm: &'a Lvm<'a>,
    /// The SR's VG.
    pub vg: &'a VgName,
}

impl Running for ServedHere<'_> {
    fn swap(&self, new_leaf: &Image) -> Result<(), EngineError> {
        let kind = self.engine.kind();
        let keep = |disk: &OpenDisk, swapping_to: Option<&Image>| {
            save(self.host, self.sr_uuid, self.volume, disk, swapping_to).map_err(|e| EngineError::Io {
                engine: kind,
                doing: "recording the disk's leaf".to_owned(),
                source: std::io::Error::other(e.to_string()),
            })
        };
        // The handle first: a call killed from here on leaves a handle that
        // says the engine may write either leaf.
        keep(&self.disk, Some(new_leaf))?;
        self.faults.reached("swap-asked");
        match self.engine.swap_leaf(&self.disk, new_leaf) {
            Ok(swapped) => {
                self.faults.reached("swap-done");
                keep(&swapped, None)?;
                // The old leaf is a parent now: nothing may write it again.
                let old_leaf = self.disk.leaf.path().file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let reloaded = old_leaf
                    .parse::<LvName>()
                    .map_err(LvmError::from)
                    .and_then(|lv| self.lvm.lvs_activate_read_only(self.vg, &[lv]));
                if let Err(error) = reloaded {
                    tracing::warn!(%error, lv = old_leaf, "the old leaf could not be reloaded read-only; it stays writable");
                }
                Ok(())
            }
            Err(error) => {
                if matches!(error, EngineError::SwapReverted { .. }) {
                    keep(&self.disk, None)?;
                }
                Err(error)
            }
        }
    }
}

/// For replay: what this host's engines write to.
pub struct HereProbe<'a> {
    /// The runner of this host's engine.
    pub runner: &'a dyn Runner,
    /// This host.
    pub host: &'a HostRoot,
    /// The SR.
    pub sr_uuid: &'a str,
}

impl HereProbe<'_> {
    /// Asks the engine which leaf `kept` writes to, and keeps the answer in
    /// the handle (a later swap or merge finds the leaf by it).
    fn ask_engine(&self, volume: &str, kept: &Kept, old_leaf: &Image, new_leaf: &Image) -> Serving {
        let asked = engine(self.runner, self.host).and_then(|e| e.current_leaf(&kept.disk));
        let leaf = match asked {
            Ok(leaf) if &leaf == new_leaf || &leaf == old_leaf => leaf,
            Ok(leaf) => {
                tracing::warn!(volume, leaf = leaf.path_str(), "the engine writes to neither leaf of the snapshot");
                return Serving::Unknown;
            }
            Err(error) => {
                tracing::warn!(volume, %error, "the engine could not say which leaf it writes to");
                return Serving::Unknown;
            }
        };
        let disk = OpenDisk { leaf: leaf.clone(), ..kept.disk.clone() };
        if let Err(error) = save(self.host, self.sr_uuid, volume, &disk, None) {
            tracing::warn!(volume, %error, "could not record the leaf the engine writes to");
            return Serving::Unknown;
        }
        if &leaf == new_leaf {
            Serving::NewLeaf
        } else {
            Serving::OldLeaf
        }
    }
}

impl ServingProbe for HereProbe<'_> {
    fn serving(&self, volume: &str, old_leaf: &Image, new_leaf: &Image) -> Serving {
        let Some(kept) = kept(self.host, self.sr_uuid, volume) else { return Serving::NotOpen };
        match &kept.swapping_to {
            // The handle names the leaf after the engine switched.
            None if &kept.disk.leaf == new_leaf => Serving::NewLeaf,
            // A swap is written in the handle before the engine is asked:
            // without one, the engine was never asked to switch.
            None if &kept.disk.leaf == old_leaf => Serving::OldLeaf,
            Some(to) if to == new_leaf => self.ask_engine(volume, &kept, old_leaf, new_leaf),
            _ => Serving::Unknown,
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

    const HELP_QCOW2: &str =
        "usage: tap-ctl COMMAND [OPTIONS]\nCOMMAND := { list | spawn | pause | unpause | commit | query }\n";
    const SR: &str = "5f0c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";

    fn raw() -> Image {
        Image::new(crate::engine::ImageFormat::Raw, "/dev/vg/vol-aa").unwrap()
    }

    fn layer() -> Image {
        Image::new(crate::engine::ImageFormat::Qcow2, "/dev/vg/node-bb").unwrap()
    }

    fn disk(leaf: Image) -> OpenDisk {
        OpenDisk {
            device: "/dev/xen/blktap-2/tapdev3".into(),
            leaf,
            handle: crate::engine::Handle::Tapdisk { pid: 4242, minor: 3 },
        }
    }

    fn probe<'a>(runner: &'a FakeRunner, host: &'a HostRoot) -> HereProbe<'a> {
        HereProbe { runner, host, sr_uuid: SR }
    }

    /// Reads the handle each time a step is reached.
    struct Peek<'a>(&'a HostRoot, std::sync::Mutex<Vec<(String, Option<Image>)>>);

    impl Faults for Peek<'_> {
        fn reached(&self, step: &str) {
            let swapping_to = kept(self.0, SR, "vol-aa").and_then(|k| k.swapping_to);
            self.1.lock().unwrap().push((step.to_owned(), swapping_to));
        }
    }

    #[test]
    fn a_swap_is_in_the_handle_before_the_engine_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        record(&host, SR, "vol-aa", &disk(raw())).unwrap();
        // pause, unpause -a qcow2:…
        let runner = FakeRunner::new().then_stdout("").then_stdout("");
        let peek = Peek(&host, std::sync::Mutex::new(Vec::new()));
        // lvchange -ay and --refresh of the old leaf, read-only.
        let lvm_runner = FakeRunner::new().then_stdout("").then_stdout("");
        let lvm = Lvm::new(&lvm_runner, std::path::Path::new("/dev/nvme0n1"), false).unwrap();
        let served = ServedHere {
            engine: Box::new(Tapdisk::new(&runner)),
            host: &host,
            sr_uuid: SR,
            volume: "vol-aa",
            disk: disk(raw()),
            faults: &peek,
            lvm: &lvm,
            vg: &"nvmetcp_x".parse().unwrap(),
        };
        served.swap(&layer()).unwrap();
        let reloads = lvm_runner.calls();
        assert_eq!(reloads.len(), 2, "the old leaf is reloaded read-only after the swap");
        assert!(reloads.iter().all(|c| c.shown.contains("read_only_volume_list")), "{reloads:?}");
        let seen = peek.1.lock().unwrap().clone();
        assert_eq!(seen, [("swap-asked".to_owned(), Some(layer())), ("swap-done".to_owned(), Some(layer()))]);
        let after = kept(&host, SR, "vol-aa").unwrap();
        assert_eq!((after.disk.leaf, after.swapping_to), (layer(), None));
    }

    #[test]
    fn replay_believes_a_handle_without_a_swap_and_asks_the_engine_about_one() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        let nobody = FakeRunner::new();
        assert_eq!(probe(&nobody, &host).serving("vol-aa", &raw(), &layer()), Serving::NotOpen);
        // No swap in the handle: the engine was never asked to switch.
        record(&host, SR, "vol-aa", &disk(raw())).unwrap();
        assert_eq!(probe(&nobody, &host).serving("vol-aa", &raw(), &layer()), Serving::OldLeaf);
        record(&host, SR, "vol-aa", &disk(layer())).unwrap();
        assert_eq!(probe(&nobody, &host).serving("vol-aa", &raw(), &layer()), Serving::NewLeaf);
        assert!(nobody.calls().is_empty(), "the engine was asked: {:?}", nobody.calls());

        // Killed between the handle and the engine's answer: the engine says.
        for (listed, expected) in
            [("qcow2:/dev/vg/node-bb", Serving::NewLeaf), ("aio:/dev/vg/vol-aa", Serving::OldLeaf)]
        {
            save(&host, SR, "vol-aa", &disk(raw()), Some(&layer())).unwrap();
            let runner = FakeRunner::new()
                .then_stdout(HELP_QCOW2)
                .then_stdout(&format!("pid=4242 minor=3 state=0 args={listed}\n"));
            assert_eq!(probe(&runner, &host).serving("vol-aa", &raw(), &layer()), expected);
            // The answer is kept: the next call finds the disk by its real leaf.
            let repaired = kept(&host, SR, "vol-aa").unwrap();
            let leaf = if expected == Serving::NewLeaf { layer() } else { raw() };
            assert_eq!((repaired.disk.leaf, repaired.swapping_to), (leaf, None));
        }
        // An engine that cannot be asked: replay waits.
        save(&host, SR, "vol-aa", &disk(raw()), Some(&layer())).unwrap();
        let mute = FakeRunner::new().then_stdout(HELP_QCOW2);
        assert_eq!(probe(&mute, &host).serving("vol-aa", &raw(), &layer()), Serving::Unknown);
        assert_eq!(kept(&host, SR, "vol-aa").unwrap().swapping_to, Some(layer()), "the handle keeps the question");
    }

    const VG: &str = "nvmetcp_x";

    fn lvs_report(rows: &[(&str, &str)]) -> String {
        let rows: Vec<String> = rows
            .iter()
            .map(|(name, tags)| {
                format!(
                    r#"{{"lv_name":"{name}", "vg_name":"{VG}", "lv_size":"8388608", "lv_tags":"{tags}", "lv_active":""}}"#
                )
            })
            .collect();
        format!(r#"{{"report": [{{"lv": [{}]}}]}}"#, rows.join(","))
    }

    fn state() -> SrState {
        SrState {
            sr_uuid: SR.into(),
            vg: VG.parse().unwrap(),
            nqn: "nqn.x".into(),
            namespace: "uuid.8d30ade900c54fe69fbcbe2c924ffcdc".into(),
            paths: Vec::new(),
            configuration: std::collections::BTreeMap::new(),
            total_space: 0,
            free_space: 0,
            extent_size: 4 << 20,
            initiator: crate::initiator::InitiatorKind::default(),
        }
    }

    /// After one snapshot of `vol-aa` (its raw LV the frozen node, its new
    /// leaf `node-bb`) the snapshot volume `vol-ss` refers to `vol-aa`; the
    /// clone `vol-cc` has a leaf of its own on it.
    fn after_a_snapshot_and_a_clone() -> String {
        lvs_report(&[
            ("vol-aa", "nvmetcp_volume,nvmetcp_node,nf=raw,nd=1,nn=node-bb"),
            ("node-bb", "nvmetcp_node,nf=qcow2,np=vol-aa,nd=2"),
            ("vol-ss", "nvmetcp_volume,nn=vol-aa"),
            ("node-cc", "nvmetcp_node,nf=qcow2,np=vol-aa,nd=2"),
            ("vol-cc", "nvmetcp_volume,nn=node-cc"),
        ])
    }

    /// Attaches `volume` through tapdisk on the fakes; returns the LVM and
    /// tap-ctl command lines.
    fn attach_on_fakes(volume: &str) -> (Vec<String>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        // The chain read, its activations (the parents read-only, activated
        // then refreshed; a writable leaf once more), then the journal, read
        // once the disk is open and recorded: nothing journalled.
        let activations = if volume == "vol-ss" { 2 } else { 3 };
        let lvm_runner = (0..activations)
            .fold(FakeRunner::new().then_stdout(&after_a_snapshot_and_a_clone()), |r, _| r.then_stdout(""))
            .then_stdout(&after_a_snapshot_and_a_clone());
        let lvm = Lvm::new(&lvm_runner, std::path::Path::new("/dev/nvme0n1"), false).unwrap();
        let tap = FakeRunner::new()
            .then_stdout(HELP_QCOW2)
            .then_stdout("4242\n")
            .then_stdout("/dev/xen/blktap-2/tapdev3\n")
            .then_stdout("")
            .then_stdout("");
        let lv =
            Lv { name: volume.parse().unwrap(), vg: VG.parse().unwrap(), size: 8 << 20, tags: vec![], active: false };
        let device = attach(&tap, &host, &lvm, &state(), "nvmetcp_volume", &lv).unwrap();
        assert_eq!(device, PathBuf::from("/dev/xen/blktap-2/tapdev3"));
        assert!(open_here(&host, SR, volume).is_some(), "the handle is kept");
        let shown = |f: &FakeRunner| f.calls().into_iter().map(|c| c.shown).collect::<Vec<_>>();
        (shown(&lvm_runner), shown(&tap))
    }

    #[test]
    fn a_snapshot_volume_is_opened_read_only_and_its_frozen_node_never_written() {
        let (lvm, tap) = attach_on_fakes("vol-ss");
        let open = tap.iter().find(|c| c.starts_with("tap-ctl open")).unwrap();
        assert_eq!(open, "tap-ctl open -p 4242 -m 3 -a aio:/dev/nvmetcp_x/vol-aa -R", "{tap:?}");
        // Activated and refreshed read-only, never read-write; then the journal read.
        assert_eq!(lvm.len(), 4, "{lvm:?}");
        for change in &lvm[1..3] {
            assert!(change.contains(r#"read_only_volume_list = [ \"nvmetcp_x/vol-aa\" ]"#), "{change}");
        }
        assert!(lvm[3].starts_with("lvm lvs"), "{lvm:?}");
    }

    #[test]
    fn a_snapshot_volume_served_read_only_says_so_in_its_handle() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        record_opened(&host, SR, "vol-aa", &disk(raw()), Access::ReadOnly).unwrap();
        assert!(open_read_only(&host, SR, "vol-aa"));
        // A later write of the handle keeps it.
        save(&host, SR, "vol-aa", &disk(raw()), None).unwrap();
        assert!(open_read_only(&host, SR, "vol-aa"));
        record_opened(&host, SR, "vol-bb", &disk(raw()), Access::ReadWrite).unwrap();
        assert!(!open_read_only(&host, SR, "vol-bb") && !open_read_only(&host, SR, "vol-cc"));
    }

    #[test]
    fn a_clone_writes_its_own_leaf_and_only_reads_the_shared_base() {
        let (lvm, tap) = attach_on_fakes("vol-cc");
        let open = tap.iter().find(|c| c.starts_with("tap-ctl open")).unwrap();
        assert_eq!(open, "tap-ctl open -p 4242 -m 3 -a qcow2:/dev/nvmetcp_x/node-cc", "{tap:?}");
        assert!(lvm[1].contains(r#"read_only_volume_list = [ \"nvmetcp_x/vol-aa\" ]"#), "{lvm:?}");
        assert!(lvm[3].ends_with("-ay nvmetcp_x/node-cc") && !lvm[3].contains("read_only_volume_list"), "{lvm:?}");
    }

    /// Issue 18: a member chooses as the master does (no pool role in the
    /// choice), so a disk running on a member can be snapshotted there.
    #[test]
    fn members_choose_the_plain_datapath_as_the_master_does() {
        let no_tapdisk = || FakeRunner::new().without(Program::TapCtl);
        assert!(plain_datapath(&no_tapdisk(), Some(PlainDatapath::Engine)).engine);
        assert!(!plain_datapath(&no_tapdisk(), Some(PlainDatapath::Blkback)).engine);
        let auto = plain_datapath(&FakeRunner::new().then_stdout(HELP_QCOW2), None);
        assert!(auto.engine && auto.why.contains("tapdisk opens qcow2"), "{auto:?}");
        let old = plain_datapath(&FakeRunner::new().then_stdout(&HELP_QCOW2.replace(" | commit | query", "")), None);
        assert!(!old.engine && old.why.contains("no qcow2 driver"), "{old:?}");
        assert!(!old.why.contains("member") && !auto.why.contains("master"), "{auto:?} {old:?}");
    }

    /// `datapath = auto` (the default) against tap-ctl's command list
    /// (`xcp-ng/blktap control/tap-ctl.c` `usage()`): tapdisk with qcow2
    /// serves plain volumes, anything else keeps blkback and says why.
    #[test]
    fn the_default_datapath_is_tapdisk_where_it_opens_qcow2() {
        for choice in [None, Some(PlainDatapath::Auto)] {
            let runner = FakeRunner::new().then_stdout(HELP_QCOW2);
            let chosen = plain_datapath(&runner, choice);
            assert_eq!((chosen.name(), chosen.why.contains("tapdisk opens qcow2")), ("engine", true), "{chosen:?}");
            let calls: Vec<String> = runner.calls().into_iter().map(|c| c.shown).collect();
            assert_eq!(calls, ["tap-ctl"], "one probe, tap-ctl's command list");

            let upstream = HELP_QCOW2.replace(" | commit | query", "");
            let chosen = plain_datapath(&FakeRunner::new().then_stdout(&upstream), choice);
            assert!(!chosen.engine && chosen.why.contains("no qcow2 driver"), "{chosen:?}");
            assert!(chosen.why.contains("2026-05-05"), "{chosen:?}");

            let chosen = plain_datapath(&FakeRunner::new().without(Program::TapCtl), choice);
            assert!(!chosen.engine && chosen.why.contains("no tapdisk"), "{chosen:?}");

            let chosen = plain_datapath(&FakeRunner::new().then_stdout("mute\n"), choice);
            assert!(!chosen.engine && chosen.why.contains("could not be asked"), "{chosen:?}");
        }
        // datapath = blkback wins over a capable tapdisk, and asks nothing.
        let runner = FakeRunner::new().then_stdout(HELP_QCOW2);
        let chosen = plain_datapath(&runner, Some(PlainDatapath::Blkback));
        assert!(!chosen.engine && chosen.why.contains("datapath = blkback"), "{chosen:?}");
        assert!(runner.calls().is_empty());
    }

    #[test]
    fn neither_engine_is_a_clear_refusal() {
        let runner = FakeRunner::new().without(Program::TapCtl).without(Program::QemuStorageDaemon);
        let host = HostRoot::system();
        let refused = engine(&runner, &host).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("neither tap-ctl nor qemu-storage-daemon"), "{refused}");
    }
}
