//! What the SMAPI handlers ask of the snapshot room: `Volume.snapshot` and
//! `Volume.clone` of a volume at rest, `Volume.resize` of a layered volume
//! at rest, `Volume.destroy` through the graph
//! with the collector after it, the chain facts a volume's record
//! publishes, the refusals for layered volumes, and journal replay on
//! `SR.attach`.
//!
//! The handler files (`volume/snapshot.rs`, `volume/destroy.rs`,
//! `volume/record.rs`, `sr/attach.rs`, `datapath/attach.rs`) keep the SMAPI
//! plumbing (parameters, lock, master check, LVM on the namespace) and call
//! in here for everything about chains.
//!
//! A *layered* volume is one whose data is not simply its own raw LV: its
//! LV is a node of a chain (the read-only base of a snapshot), or it refers
//! to another node (`nn=`). Only an engine serves it (`Datapath.attach`
//! hands it to [`super::served`]); blkback, which would read the wrong
//! bytes or write into a frozen node, [`refuse_layered`] stops. A resize
//! ([`resize`]) grows its qcow2 leaf at rest (LV, header, then `nv=`), and
//! is refused while an engine has the chain open. Chains are open in the engines of the
//! master and of the members: the collector and replay here ask every host
//! ([`super::pool`]) which volumes it serves, leave those chains alone, ask
//! the serving host which leaf a running volume writes, and have every host
//! deactivate an LV before it is removed.

use std::collections::{BTreeMap, BTreeSet};

use crate::cmd::Runner;
use crate::engine::ImageFormat;
use crate::host::HostRoot;
use crate::ids::{LvName, VgName};
use crate::lvm::{Lv, Lvm, LvmError, Vg};
use crate::smapi::types::Volume;
use crate::sr_state::SrState;

use super::graph::{self, Graph, GraphError, NODE_TAG};
use super::journal::{Entry, Operation, JOURNAL_KEY};
use super::ops::{online_merges_of, BeforeClose, Chains, Merging, NewNames, NoFaults, OpError, Running};
use super::pool::{MergeInPool, Pool, PoolProbe};
use super::qemu_img::QemuImg;
use super::served::{busy_lvs, open_here, unmergeable_lvs, HereProbe, MergeHere};
use crate::pool_mappings::PoolCheckError;

/// Why a chain call failed, as the handler layer reports it.
#[derive(Debug, thiserror::Error)]
pub enum ChainCallError {
    /// The chain operation failed.
    #[error(transparent)]
    Op(#[from] OpError),
    /// A snapshot or clone of a volume a VM is using.
    #[error(
        "volume {key} is in use{place}, handed to its VM there through blkback on its raw LV, which cannot \
         switch to a snapshot layer while the VM runs. That host's datapath is blkback because its blktap has \
         no qcow2 driver (datapath = auto; XCP-ng 8.3 updates of 2026-05-05 add it) or /etc/nvmetcp/host.conf \
         there says datapath = blkback (`nvmetcp doctor` on that host says which). Nothing was changed. \
         Snapshot or clone it with the VM shut down, or update that host or set datapath = engine there \
         (qemu-storage-daemon) and restart the VM: its disks are then snapshotted while it runs"
    )]
    Running {
        /// The volume.
        key: String,
        /// Where (` on host(s) …` or ` on this host`).
        place: String,
    },
    /// The volume is served by this host's engine (a VM uses it).
    #[error("volume {key} is in use on this host (its chain is open for a VM); detach it from its VM first")]
    Served {
        /// The volume.
        key: String,
    },
    /// A running snapshot of a volume served read-only (a snapshot volume
    /// attached for XO's export): its node is frozen, others build on it.
    #[error(
        "volume {key} is attached read-only{place} (a snapshot volume, as XO's export attaches it): it cannot be \
         snapshotted while attached, since that would put it on a writable leaf; nothing was changed. Detach it \
         first (the export ends by detaching it), then snapshot or clone it"
    )]
    ReadOnlyServed {
        /// The volume.
        key: String,
        /// Where (` on host …` or ` on this host`).
        place: String,
    },
    /// The volume is served by another host's engine (a VM uses it there).
    #[error("volume {key} is in use on host {host} (its chain is open for a VM there); detach it from its VM first")]
    ServedElsewhere {
        /// The volume.
        key: String,
        /// The host.
        host: String,
    },
    /// A resize of a layered volume whose chain an engine has open.
    #[error(
        "volume {key} is in use{place} (its snapshot chain is open for a VM); a volume with snapshots is \
         resized only at rest: halt the VM, then resize; nothing was changed"
    )]
    ResizeRunning {
        /// The volume.
        key: String,
        /// Where (` on host …` or ` on this host`).
        place: String,
    },
    /// A detach refused: an interrupted online merge in the volume's chain
    /// could not be finished while its disk is open.
    #[error(
        "volume {key} was not detached: an interrupted online merge of node {child} into {into} in its chain \
         could not be finished while this host's engine has the disk open, and closing it now could leave the \
         volume on a node its last writes did not go to; the disk stays open and nothing was changed. Retry the \
         detach (xapi retries it); if it keeps failing, read the engine's answer in SMlog and run `nvmetcp doctor`"
    )]
    MergeUnfinished {
        /// The volume.
        key: String,
        /// The node merged away.
        child: String,
        /// The node it is merged into.
        into: String,
    },
    /// A detach on a pool member refused: its engine writes the node an
    /// interrupted online merge moved the leaf into, which only the master
    /// can record.
    #[error(
        "volume {key} was not detached: the pool master's collector merged its leaf {child} into {into} online \
         on this host's engine and was interrupted before recording it (or the engine could not say which node \
         it writes), so the VM's last writes are in {into}, which the volume does not name yet; the disk stays \
         open and nothing was changed. The master finishes the merge on its next collector run (a Volume.destroy \
         there, such as a backup deleting a snapshot) or SR.attach; then retry the detach"
    )]
    MergeOnMaster {
        /// The volume.
        key: String,
        /// The node merged away.
        child: String,
        /// The node it is merged into.
        into: String,
    },
    /// A disk not opened: the master has journalled a change of its chain
    /// (a merge of one of its nodes, or a snapshot or clone of it).
    #[error(
        "volume {key} was not attached: the pool master is changing its chain ({what}, journalled on LV {lv});          serving it now could hand the VM a node the master is about to remove or freeze. The disk was closed          again and nothing was changed. Retry in a minute: a merge or snapshot ends by itself. If it keeps          failing, the operation was interrupted: the master finishes it at its next collector run (a          Volume.destroy there) or SR.attach; `nvmetcp doctor` on the master lists what is journalled"
    )]
    ChainBusy {
        /// The volume.
        key: String,
        /// The operation, in words.
        what: String,
        /// The LV whose tag journals it.
        lv: String,
    },
    /// The other hosts could not say which volumes they serve.
    #[error(transparent)]
    Pool(#[from] PoolCheckError),
    /// An operation this version cannot do on a layered volume.
    #[error(
        "volume {key} is part of a snapshot chain (its data is a qcow2 layer, or the read-only base of one); \
         {what} is not possible for such a volume in this version of nvmetcp; nothing was changed"
    )]
    Layered {
        /// The volume.
        key: String,
        /// What was refused.
        what: &'static str,
    },
}

impl From<LvmError> for ChainCallError {
    fn from(error: LvmError) -> Self {
        Self::Op(OpError::Lvm(error))
    }
}

impl From<GraphError> for ChainCallError {
    fn from(error: GraphError) -> Self {
        Self::Op(OpError::Graph(error))
    }
}

/// Whether `lv` (a volume's LV) is layered: a node of a chain, or a volume
/// whose data lives in another node.
#[must_use]
pub fn is_layered(lv: &Lv) -> bool {
    lv.tags.iter().any(|t| t == NODE_TAG || t.starts_with("nn="))
}

/// Refuses `what` on a layered volume, unless its chain has come back to
/// one node, its own raw LV (the collector merged everything into it):
/// that is a plain volume again. `lvm` reads the VG `vg`, whose volumes
/// carry `volume_tag`.
///
/// # Errors
/// [`ChainCallError::Layered`], or the graph's error.
pub fn refuse_layered(
    lvm: &Lvm<'_>,
    vg: &VgName,
    volume_tag: &str,
    lv: &Lv,
    what: &'static str,
) -> Result<(), ChainCallError> {
    if needs_engine(lvm, vg, volume_tag, lv)? {
        return Err(ChainCallError::Layered { key: lv.name.to_string(), what });
    }
    Ok(())
}

/// Whether `lv`'s data is a chain only an engine can serve: it is layered
/// and not collected back to its own raw LV alone.
///
/// # Errors
/// LVM's or the graph's error.
pub fn needs_engine(lvm: &Lvm<'_>, vg: &VgName, volume_tag: &str, lv: &Lv) -> Result<bool, ChainCallError> {
    if !is_layered(lv) {
        return Ok(false);
    }
    needs_engine_in(&lvm.lvs(vg)?, volume_tag, lv)
}

/// [`needs_engine`], given `lvs`, every LV of `lv`'s VG as just read.
///
/// # Errors
/// The graph's error.
pub fn needs_engine_in(lvs: &[Lv], volume_tag: &str, lv: &Lv) -> Result<bool, ChainCallError> {
    if !is_layered(lv) {
        return Ok(false);
    }
    let graph = Graph::from_lvs(lvs, volume_tag)?;
    let own_raw = graph.node_of(&lv.name).is_some_and(|n| n.lv == lv.name && n.format == ImageFormat::Raw);
    Ok(!(own_raw && graph.children(&lv.name).is_empty()))
}

/// The names a snapshot or clone numbered `uuid` creates: the new volume
/// `vol-<uuid>`, the origin's new leaf `node-<uuid>`, a clone's own leaf
/// `node-<uuid>-c` (node LVs are not volume names, so `SR.ls` never lists
/// them).
#[must_use]
pub fn new_names(uuid: &str, clone: bool, record: Vec<String>) -> NewNames {
    NewNames {
        leaf: format!("node-{uuid}"),
        volume: format!("vol-{uuid}"),
        clone_leaf: clone.then(|| format!("node-{uuid}-c")),
        record,
    }
}

/// One SR's chains, from the master: its VG through `lvm`, its volumes
/// marked with `volume_tag` (the volume layer's ownership tag).
pub struct Sr<'a> {
    /// The runner of `qemu-img`.
    pub runner: &'a dyn Runner,
    /// This host (its open disks).
    pub host: &'a HostRoot,
    /// LVM on the SR's namespace (writable for the operations).
    pub lvm: &'a Lvm<'a>,
    /// The SR's attachment.
    pub state: &'a SrState,
    /// The volumes' ownership tag.
    pub volume_tag: &'a str,
}

impl Sr<'_> {
    /// The pool's other hosts, for this SR.
    #[must_use]
    pub fn pool(&self) -> Pool<'_> {
        Pool { root: self.host, sr_uuid: &self.state.sr_uuid, vg: &self.state.vg }
    }

    /// This host's engine, for online merges.
    pub fn merging(&self) -> MergeHere<'_> {
        MergeHere { runner: self.runner, host: self.host, sr_uuid: &self.state.sr_uuid }
    }

    /// The engines of every host, for the collector's online merges and
    /// for replay (which edits no image any of them has open).
    #[must_use]
    pub fn merging_in_pool(&self) -> MergeInPool<'_> {
        MergeInPool::new(self.merging(), self.pool())
    }

    fn chains<'s>(&'s self, pool: &'s Pool<'s>, merging: &'s dyn Merging) -> Chains<'s> {
        Chains::new(self.lvm, QemuImg::new(self.runner), &self.state.vg, self.volume_tag, &NoFaults)
            .with_other_hosts(pool)
            .with_merging(merging)
    }

    fn probe(&self) -> PoolProbe<'_> {
        PoolProbe {
            here: HereProbe { runner: self.runner, host: self.host, sr_uuid: &self.state.sr_uuid },
            pool: self.pool(),
        }
    }

    /// The other host whose engine serves `volume`, if one does.
    ///
    /// # Errors
    /// [`ChainCallError::Pool`] if a host cannot say.
    pub fn served_elsewhere(&self, volume: &str) -> Result<Option<String>, ChainCallError> {
        Ok(self.pool().serving_host(volume)?.map(|(host, _)| host))
    }

    /// The LVs of chains open on this host, from `lvs` (the VG as just read).
    fn busy_in(&self, lvs: &[Lv]) -> Result<BTreeSet<String>, ChainCallError> {
        let graph = Graph::from_lvs(lvs, self.volume_tag)?;
        Ok(busy_lvs(self.host, &self.state.sr_uuid, &graph))
    }

    /// Deactivates every chain LV left active on this host (the master)
    /// that no open chain uses: a volume whose LV is left active would be
    /// refused as in use. Returns the SR's LVs as they are then.
    fn settle(&self) -> Result<Vec<Lv>, ChainCallError> {
        self.settle_in(self.lvm.lvs(&self.state.vg)?)
    }

    /// [`Sr::settle`] from `lvs`, the SR's LVs as just read.
    fn settle_in(&self, mut lvs: Vec<Lv>) -> Result<Vec<Lv>, ChainCallError> {
        let busy = self.busy_in(&lvs)?;
        let mut idle: Vec<LvName> = Vec::new();
        for lv in &mut lvs {
            if lv.active && is_layered(lv) && !busy.contains(lv.name.as_str()) {
                idle.push(lv.name.clone());
                lv.active = false;
            }
        }
        self.lvm.lvs_deactivate(&self.state.vg, &idle)?;
        Ok(lvs)
    }

    /// The LVs of chains open on any host of the pool that the collector
    /// leaves alone, from `lvs` (the VG as just read): those no engine is
    /// asked to merge in. A chain served read-write, with no swap in
    /// progress, by one volume open on one host (this one, [`MergeHere`],
    /// or a member, [`MergeInPool`]) is merged online by that engine; one
    /// served read-only, mid-swap, or open on two hosts is left alone.
    fn busy_anywhere_in(&self, lvs: &[Lv], merging: &MergeInPool<'_>) -> Result<BTreeSet<String>, ChainCallError> {
        let graph = Graph::from_lvs(lvs, self.volume_tag)?;
        let mut busy = unmergeable_lvs(self.host, &self.state.sr_uuid, &graph);
        let elsewhere = merging.open_elsewhere()?;
        let merged = merging.served();
        for on in elsewhere.iter().filter(|on| !merged.contains(&on.volume)) {
            match graph.chain(&on.volume) {
                Ok(chain) => busy.extend(chain.iter().map(|n| n.lv.clone())),
                Err(_) => {
                    busy.insert(on.volume.clone());
                }
            }
        }
        Ok(busy)
    }

    /// Runs the collector around the chains open anywhere, then settles:
    /// one read of the VG for both questions and the collector's first
    /// look, and its last look for the settling.
    fn collect(&self, chains: &Chains<'_>, merging: &MergeInPool<'_>) -> Result<(), ChainCallError> {
        let lvs = self.lvm.lvs(&self.state.vg)?;
        let busy = match self.busy_anywhere_in(&lvs, merging) {
            Ok(busy) => busy,
            Err(ChainCallError::Pool(error)) => {
                // Nothing is merged or removed while a host cannot say what it has open.
                tracing::warn!(%error, "the collector waits: a host of the pool cannot say which chains it has open");
                return self.settle_in(lvs).map(drop);
            }
            Err(error) => return Err(error),
        };
        let (steps, lvs) = chains.collect_in(&self.probe(), &busy, lvs)?;
        self.settle_in(lvs)?;
        if steps > 0 {
            tracing::info!(vg = %self.state.vg, steps, "collector finished");
        }
        Ok(())
    }
}

/// Snapshots (or clones, if `names.clone_leaf` is set) `origin` from the
/// master: a volume no host uses, or one an engine serves (`running`, that
/// engine, here or on another host: pause first, then swap). `vg` and `lvs`
/// are the SR's VG and LVs as the caller has just read them, under the SR's
/// lock. Returns the new volume's LV and the SR's LVs after.
///
/// # Errors
/// [`ChainCallError`]; what was created is undone again (or, for a swap
/// that may have happened, resolved by replay asking the engine).
pub fn take(
    sr: &Sr<'_>,
    origin: &Lv,
    names: &NewNames,
    running: Option<&dyn Running>,
    vg: Option<&Vg>,
    lvs: &[Lv],
) -> Result<(String, Vec<Lv>), ChainCallError> {
    let graph = Graph::from_lvs(lvs, sr.volume_tag)?;
    let virtual_size = virtual_size(&graph, lvs, &origin.name)?;
    let (pool, merging) = (sr.pool(), sr.merging_in_pool());
    let chains = sr.chains(&pool, &merging);
    match chains.snapshot_in(vg, lvs, &origin.name, names, virtual_size, running) {
        Ok(created) => Ok((created, sr.settle()?)),
        Err(error) => {
            // Replay undoes what the failed call created (asking this host's
            // engine which leaf a running volume writes).
            if let Err(undo) = chains.replay(&sr.probe()) {
                tracing::error!(error = %undo, "undoing a failed snapshot failed; the next SR.attach replays it");
            }
            let released = if running.is_some() { Ok(()) } else { release(sr, &[origin.name.to_string()]) };
            let _ = sr.settle().map(drop).and(released);
            Err(error.into())
        }
    }
}

/// The virtual size of `volume`, that of its leaf ([`graph::virtual_size`]).
fn virtual_size(graph: &Graph, lvs: &[Lv], volume: &str) -> Result<u64, ChainCallError> {
    let leaf = graph.node_of(volume).ok_or_else(|| GraphError::UnknownVolume(volume.to_owned()))?;
    Ok(graph::virtual_size(graph, lvs, &leaf.lv))
}

/// The virtual size of `volume`, a layered volume among `lvs` (the SR's
/// LVs as just read, its volumes marked with `volume_tag`).
///
/// # Errors
/// The graph's error.
pub fn virtual_size_of(lvs: &[Lv], volume_tag: &str, volume: &str) -> Result<u64, ChainCallError> {
    virtual_size(&Graph::from_lvs(lvs, volume_tag)?, lvs, volume)
}

/// Grows `volume`, a layered volume as the caller has just read it under
/// the SR's lock, to `new_size` bytes (rounded up to whole extents), at
/// rest: refused while an engine anywhere has its chain open. A size no
/// larger than the recorded one finishes the header an interrupted resize
/// left behind its record (nothing to do while the volume is open). `vg`
/// and `lvs` are the SR's VG and LVs as just read.
///
/// # Errors
/// [`ChainCallError::ResizeRunning`], or the chain operation's error.
pub fn resize(sr: &Sr<'_>, volume: &Lv, new_size: u64, vg: Option<&Vg>, lvs: &[Lv]) -> Result<(), ChainCallError> {
    let key = volume.name.to_string();
    let place = if open_here(sr.host, &sr.state.sr_uuid, &volume.name).is_some() {
        Some(" on this host".to_owned())
    } else {
        sr.served_elsewhere(&volume.name)?.map(|host| format!(" on host {host}"))
    };
    if let Some(place) = place {
        if new_size <= virtual_size_of(lvs, sr.volume_tag, &volume.name)? {
            return Ok(());
        }
        return Err(ChainCallError::ResizeRunning { key, place });
    }
    let (pool, merging) = (sr.pool(), sr.merging_in_pool());
    let grown = sr.chains(&pool, &merging).grow_at_rest(vg, lvs, &volume.name, new_size);
    // The chain's LVs were activated for qemu-img: inactive again, either way.
    let settled = sr.settle().map(drop);
    grown?;
    settled
}

/// Deletes a layered volume, `volume` as the caller has just read it under
/// the SR's lock: its record at once, its data when the collector (run
/// right after) finds nothing else needs it.
///
/// # Errors
/// [`ChainCallError`].
pub fn destroy(sr: &Sr<'_>, volume: &Lv) -> Result<(), ChainCallError> {
    if open_here(sr.host, &sr.state.sr_uuid, &volume.name).is_some() {
        return Err(ChainCallError::Served { key: volume.name.to_string() });
    }
    if let Some(host) = sr.served_elsewhere(&volume.name)? {
        return Err(ChainCallError::ServedElsewhere { key: volume.name.to_string(), host });
    }
    let (pool, merging) = (sr.pool(), sr.merging_in_pool());
    let chains = sr.chains(&pool, &merging);
    chains.destroy_known(volume)?;
    sr.collect(&chains, &merging)
}

/// `Datapath.deactivate`/`detach` on the master, before this host's engine
/// closes `volume`'s disk: finishes the online merges journalled for it
/// (`lvs`, the VG as just read) by replay, asking `merging` (the pool's
/// engines, [`Sr::merging_in_pool`]: this host's for the disk) while it
/// still has the disk open. Returns
/// whether anything was journalled (the VG changed); nothing journalled
/// costs no LVM call.
///
/// # Errors
/// [`ChainCallError::MergeUnfinished`] if replay cannot decide (the disk
/// must stay open); any other [`ChainCallError`].
pub fn finish_before_close(
    sr: &Sr<'_>,
    merging: &dyn Merging,
    volume: &str,
    lvs: &[Lv],
) -> Result<bool, ChainCallError> {
    let entries = online_merges_of(lvs, volume);
    if entries.is_empty() {
        return Ok(false);
    }
    let pool = sr.pool();
    match sr.chains(&pool, merging).finish_before_close(volume, &entries)? {
        BeforeClose::Settled => Ok(true),
        BeforeClose::Unresolved { child, into } => {
            Err(ChainCallError::MergeUnfinished { key: volume.to_owned(), child, into })
        }
    }
}

/// `Datapath.deactivate`/`detach` on a pool member, before its engine
/// closes `volume`'s disk: the master's collector merges online there too
/// (through `chain_commit`), but only the master writes the journal's end.
/// If `merging` (this host's engine) already writes the `into` node of an
/// online merge journalled for `volume` (`entries`, [`online_merges_of`])
/// — the leaf was merged and pivoted, and the master has not recorded it —
/// closing now would leave the volume on the old leaf without the VM's last
/// writes, so the detach is refused until the master finishes it. An engine
/// that cannot say is refused too; one still on another image (no pivot, or
/// a node below the leaf merged) closes as usual.
///
/// # Errors
/// [`ChainCallError::MergeOnMaster`].
pub fn refuse_close_after_pivot(
    merging: &dyn Merging,
    vg: &VgName,
    volume: &str,
    entries: &[Entry],
) -> Result<(), ChainCallError> {
    for entry in entries {
        let Operation::Merge { child, into, .. } = &entry.operation else { continue };
        let pivoted = match merging.leaf_now(volume) {
            Ok(leaf) => leaf.is_some_and(|leaf| leaf.path_str() == format!("/dev/{vg}/{into}")),
            Err(error) => {
                tracing::warn!(volume, child, into, %error, "the engine cannot say which node it writes");
                true
            }
        };
        if pivoted {
            return Err(ChainCallError::MergeOnMaster {
                key: volume.to_owned(),
                child: child.clone(),
                into: into.clone(),
            });
        }
    }
    Ok(())
}

/// Whether an SR of these LVs has chains or journal entries at all.
#[must_use]
pub fn needs_recovery(lvs: &[Lv]) -> bool {
    lvs.iter().any(|l| is_layered(l) || l.tags.iter().any(|t| Entry::from_tag(t).is_some()))
}

/// On `SR.attach` on the master: replays what killed calls left, then runs
/// the collector. Returns whether there was anything to do.
///
/// # Errors
/// [`ChainCallError`].
pub fn recover(sr: &Sr<'_>) -> Result<bool, ChainCallError> {
    let (lvm, state) = (sr.lvm, sr.state);
    if !needs_recovery(&lvm.lvs(&state.vg)?) {
        return Ok(false);
    }
    // The LVs a killed snapshot activated: the SR is being attached, so no
    // VM on this host uses any of its volumes yet.
    let touched: Vec<String> = lvm
        .lvs(&state.vg)?
        .iter()
        .flat_map(|l| &l.tags)
        .filter_map(|t| Entry::from_tag(t))
        .filter_map(|e| match e.operation {
            Operation::Snapshot { volume, old_leaf, .. } => Some([volume, old_leaf]),
            Operation::Merge { .. } => None,
        })
        .flatten()
        .collect();
    let (pool, merging) = (sr.pool(), sr.merging_in_pool());
    let chains = sr.chains(&pool, &merging);
    let replayed = chains.replay(&sr.probe())?;
    if replayed > 0 {
        tracing::warn!(vg = %state.vg, replayed, "journal entries of interrupted calls resolved");
    }
    sr.collect(&chains, &merging)?;
    release(sr, &touched)?;
    Ok(true)
}

/// Deactivates those of `names` that are active: a snapshot's origin (a
/// plain volume until its commit point) after a failed or killed snapshot.
fn release(sr: &Sr<'_>, names: &[String]) -> Result<(), ChainCallError> {
    let lvs = sr.lvm.lvs(&sr.state.vg)?;
    let busy = sr.busy_in(&lvs)?;
    let idle: Vec<LvName> = lvs
        .into_iter()
        .filter(|lv| lv.active && names.iter().any(|n| *n == lv.name) && !busy.contains(lv.name.as_str()))
        .map(|lv| lv.name)
        .collect();
    Ok(sr.lvm.lvs_deactivate(&sr.state.vg, &idle)?)
}

/// The chain facts of an SR's volumes, for their records.
pub struct ChainView<'a> {
    lvs: &'a [Lv],
    graph: Option<Graph>,
}

/// The sm-config key (through `Volume.stat` keys) naming a layered volume's
/// image format, which Xen Orchestra reads to pick the export format.
pub const IMAGE_FORMAT_KEY: &str = "_sm_config_image-format";
/// The sm-config key naming the node a layered volume's leaf is backed by.
pub const PARENT_KEY: &str = "_sm_config_nvmetcp-parent";
/// The sm-config key giving a layered volume's chain length.
pub const CHAIN_LENGTH_KEY: &str = "_sm_config_nvmetcp-chain-length";

impl<'a> ChainView<'a> {
    /// The view of `lvs`, every LV of one SR's VG (volumes marked with
    /// `volume_tag`).
    ///
    /// # Errors
    /// [`ChainCallError`] if the graph is inconsistent (a listing must then
    /// fail rather than be partial).
    pub fn load(lvs: &'a [Lv], volume_tag: &str) -> Result<Self, ChainCallError> {
        let any = lvs.iter().any(is_layered);
        let graph = if any { Some(Graph::from_lvs(lvs, volume_tag)?) } else { None };
        Ok(Self { lvs, graph })
    }

    /// Whether `lv` is the new volume of a snapshot or clone still in
    /// flight (it exists only once the operation's journal is gone).
    #[must_use]
    pub fn in_flight(lv: &Lv) -> bool {
        lv.tags
            .iter()
            .filter(|t| t.starts_with(JOURNAL_KEY))
            .filter_map(|t| Entry::from_tag(t))
            .any(|e| matches!(e.operation, Operation::Snapshot { ref snapshot, .. } if *snapshot == lv.name))
    }

    /// Completes `volume`, the record of `lv`, with its chain: its virtual
    /// size (its leaf's), what its LVs occupy (its own LV and its leaf), and
    /// the keys for XO: image format, parent node, chain length.
    pub fn describe(&self, mut volume: Volume, lv: &Lv) -> Volume {
        let Some(graph) = &self.graph else { return volume };
        if !is_layered(lv) {
            return volume;
        }
        let Ok(chain) = graph.chain(&lv.name) else { return volume };
        let size_of = |name: &str| self.lvs.iter().find(|l| l.name == name).map_or(0, |l| l.size);
        let Some(leaf) = chain.first() else { return volume };
        let virtual_size = graph::virtual_size(graph, self.lvs, &leaf.lv);
        let occupied = if leaf.lv == lv.name { lv.size } else { lv.size + size_of(&leaf.lv) };
        volume.virtual_size = i64::try_from(virtual_size).unwrap_or(i64::MAX);
        volume.physical_utilisation = i64::try_from(occupied).unwrap_or(i64::MAX);
        let mut facts = BTreeMap::new();
        facts.insert(IMAGE_FORMAT_KEY.to_owned(), leaf.format.qemu_name().to_owned());
        if let Some(parent) = &leaf.parent {
            facts.insert(PARENT_KEY.to_owned(), parent.clone());
        }
        facts.insert(CHAIN_LENGTH_KEY.to_owned(), chain.len().to_string());
        volume.keys.extend(facts);
        volume
    }
}

#[cfg(test)]
mod tests;
