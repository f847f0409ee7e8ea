//! What the SMAPI handlers ask of the snapshot room: `Volume.snapshot` and
//! `Volume.clone` of a volume at rest, `Volume.destroy` through the graph
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
//! to another node (`nn=`). The engine datapath that serves chains is not
//! wired to `Datapath.attach` yet, so a layered volume cannot be handed to
//! a VM (blkback on its LV would read the wrong bytes or write into a
//! frozen node): [`refuse_layered`] stops that, and for the same reason no
//! chain is ever open anywhere, which is what lets the collector and
//! replay here run offline, from the master, with [`NothingOpen`].

use std::collections::BTreeMap;

use crate::cmd::Runner;
use crate::engine::ImageFormat;
use crate::lvm::{Lv, Lvm, LvmError};
use crate::smapi::types::Volume;
use crate::sr_state::SrState;

use super::graph::{Graph, GraphError, NODE_TAG};
use super::journal::{Entry, Operation, JOURNAL_KEY};
use super::ops::{Chains, NewNames, NoFaults, NothingOpen, OpError};
use super::qemu_img::QemuImg;

/// Why a chain call failed, as the handler layer reports it.
#[derive(Debug, thiserror::Error)]
pub enum ChainCallError {
    /// The chain operation failed.
    #[error(transparent)]
    Op(#[from] OpError),
    /// A snapshot or clone of a volume a VM is using.
    #[error(
        "volume {key} is in use{place}: nvmetcp hands it to its VM through blkback on a raw LV, which cannot \
         switch to a snapshot layer while the VM runs; nothing was changed. Snapshot or clone it with the VM \
         shut down (snapshots of running VMs need the tapdisk datapath, not in this version)"
    )]
    Running {
        /// The volume.
        key: String,
        /// Where (` on host(s) …` or ` on this host`).
        place: String,
    },
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
    vg: &str,
    volume_tag: &str,
    lv: &Lv,
    what: &'static str,
) -> Result<(), ChainCallError> {
    if !is_layered(lv) {
        return Ok(());
    }
    let graph = Graph::from_lvs(&lvm.lvs(vg)?, volume_tag)?;
    let own_raw = graph.node_of(&lv.name).is_some_and(|n| n.lv == lv.name && n.format == ImageFormat::Raw);
    if own_raw && graph.children(&lv.name).is_empty() {
        return Ok(());
    }
    Err(ChainCallError::Layered { key: lv.name.clone(), what })
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
    /// LVM on the SR's namespace (writable for the operations).
    pub lvm: &'a Lvm<'a>,
    /// The SR's attachment.
    pub state: &'a SrState,
    /// The volumes' ownership tag.
    pub volume_tag: &'a str,
}

impl Sr<'_> {
    fn chains(&self) -> Chains<'_> {
        Chains::new(self.lvm, QemuImg::new(self.runner), &self.state.vg, self.volume_tag, &NoFaults)
    }
}

/// Snapshots (or clones, if `names.clone_leaf` is set) `origin`, a volume
/// no host uses, from the master. Returns the new volume's LV.
///
/// # Errors
/// [`ChainCallError`]; what was created is undone again before returning.
pub fn take(sr: &Sr<'_>, origin: &Lv, names: &NewNames) -> Result<String, ChainCallError> {
    let (lvm, state) = (sr.lvm, sr.state);
    let lvs = lvm.lvs(&state.vg)?;
    let graph = Graph::from_lvs(&lvs, sr.volume_tag)?;
    let virtual_size = virtual_size(&graph, &lvs, &origin.name)?;
    let chains = sr.chains();
    match chains.snapshot(&origin.name, names, virtual_size, None) {
        Ok(created) => {
            settle(lvm, &state.vg)?;
            Ok(created)
        }
        Err(error) => {
            // Nothing is open: replay undoes what the failed call created.
            if let Err(undo) = chains.replay(&NothingOpen) {
                tracing::error!(error = %undo, "undoing a failed snapshot failed; the next SR.attach replays it");
            }
            let _ = settle(lvm, &state.vg);
            Err(error.into())
        }
    }
}

/// The virtual size of `volume`: that of its chain's base, a raw LV (every
/// layer of a chain has the virtual size of its base; layered volumes are
/// never resized).
fn virtual_size(graph: &Graph, lvs: &[Lv], volume: &str) -> Result<u64, ChainCallError> {
    let chain = graph.chain(volume)?;
    let base = chain.last().map_or(volume, |n| n.lv.as_str());
    Ok(lvs.iter().find(|l| l.name == base).map_or(0, |l| l.size))
}

/// Deletes a layered volume: its record at once, its data when the
/// collector (run right after) finds nothing else needs it.
///
/// # Errors
/// [`ChainCallError`].
pub fn destroy(sr: &Sr<'_>, volume: &Lv) -> Result<(), ChainCallError> {
    let chains = sr.chains();
    chains.destroy(&volume.name)?;
    collect(&chains, sr.lvm, &sr.state.vg)
}

fn collect(chains: &Chains<'_>, lvm: &Lvm<'_>, vg: &str) -> Result<(), ChainCallError> {
    let steps = chains.collect(&NothingOpen)?;
    settle(lvm, vg)?;
    if steps > 0 {
        tracing::info!(vg, steps, "collector finished");
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
    let chains = sr.chains();
    let replayed = chains.replay(&NothingOpen)?;
    if replayed > 0 {
        tracing::warn!(vg = %state.vg, replayed, "journal entries of interrupted calls resolved");
    }
    collect(&chains, lvm, &state.vg)?;
    Ok(true)
}

/// Deactivates every chain LV left active on this host (the master): no
/// chain is open anywhere (see the module's documentation), and a volume
/// whose LV is left active would be refused as in use.
fn settle(lvm: &Lvm<'_>, vg: &str) -> Result<(), ChainCallError> {
    for lv in lvm.lvs(vg)? {
        if lv.active && is_layered(&lv) {
            lvm.lv_activate(vg, &lv.name, false)?;
        }
    }
    Ok(())
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
    /// size (its base's), what its LVs occupy (its own LV and its leaf), and
    /// the keys for XO: image format, parent node, chain length.
    pub fn describe(&self, mut volume: Volume, lv: &Lv) -> Volume {
        let Some(graph) = &self.graph else { return volume };
        if !is_layered(lv) {
            return volume;
        }
        let Ok(chain) = graph.chain(&lv.name) else { return volume };
        let size_of = |name: &str| self.lvs.iter().find(|l| l.name == name).map_or(0, |l| l.size);
        let (Some(leaf), Some(base)) = (chain.first(), chain.last()) else { return volume };
        let virtual_size = size_of(&base.lv);
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
