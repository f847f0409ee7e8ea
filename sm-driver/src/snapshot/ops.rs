//! The chain operations on a volume no host has open, run on the master:
//! snapshot, clone, destroy, the collector's steps, and journal replay.
//!
//! Each multi-step operation follows [`super::journal`]: its first LVM
//! commit creates an LV carrying the journal entry; its commit point is one
//! `lvchange` of the volume's LV (`nn=` the new leaf); clean-up removes the
//! entry. [`Chains::replay`] undoes or finishes whatever a killed call left.
//! [`Faults`] names every step, so tests can kill the process at each one.
//!
//! A running volume (its chain open in an engine) is snapshotted with a
//! [`Running`] door to that engine: the journal moves to `Swapping`, the
//! engine pauses, switches to the new leaf and resumes, and only then does
//! the volume's LV name the new leaf. Replay asks a [`ServingProbe`] which
//! leaf the engine writes to. Reaching an engine on another host (the XAPI
//! host plugin) is not written yet.
//!
//! Replay edits no image of a chain an engine has open anywhere
//! ([`Merging::open`], the facts the collector plans from): an interrupted
//! merge whose chain was opened since (a clone started, here or on a
//! member) waits in its journal until it is closed.

use std::collections::BTreeSet;

use crate::engine::{EngineError, Image, ImageFormat};
use crate::ids::{LvName, VgName};
use crate::lvm::{Lv, Lvm, LvmError, Vg};

use super::graph::{node_tags, virtual_size, volume_node_tag, Collect, Graph, GraphError, Node, NODE_TAG};
use super::journal::{decide, Entry, Facts, Operation, Replay, Serving, Step, JOURNAL_KEY};
use super::qemu_img::{QemuImg, QemuImgError};

pub use closing::{online_merges_of, BeforeClose};
use online::Online;
pub use online::{Merging, NoEngineHere, OpenChain};

/// The LV called `name`, a node or volume the graph or the journal names,
/// through the one LV name parser.
fn lv_named(name: &str) -> Result<LvName, LvmError> {
    Ok(name.parse()?)
}

/// Where a test may stop the process: called with each step's name just
/// after that step's effect is durable.
pub trait Faults {
    /// Reached `step`.
    fn reached(&self, step: &str);
}

/// Production: no faults.
pub struct NoFaults;

impl Faults for NoFaults {
    fn reached(&self, _step: &str) {}
}

/// The datapath of a running volume, where its chain is open.
pub trait Running {
    /// Pauses the disk, switches it to `new_leaf`, resumes it.
    ///
    /// # Errors
    /// [`EngineError`]; on [`EngineError::SwapReverted`] the disk still
    /// writes to its old leaf.
    fn swap(&self, new_leaf: &Image) -> Result<(), EngineError>;

    /// The pool host whose engine serves the disk, when it is not this one
    /// (recorded in the journal entry).
    fn host(&self) -> Option<String> {
        None
    }
}

/// The other hosts of the pool, for the LVs the master removes.
pub trait Elsewhere {
    /// Deactivates `lv` on every other host that has it active; refuses if
    /// a host still has it open or cannot be asked.
    ///
    /// # Errors
    /// [`OpError::ActiveElsewhere`].
    fn release(&self, lv: &str) -> Result<(), OpError>;
}

/// A machine with no other host (a standalone host, tests).
pub struct NoOtherHosts;

impl Elsewhere for NoOtherHosts {
    fn release(&self, _lv: &str) -> Result<(), OpError> {
        Ok(())
    }
}

/// For replay: which leaf a running volume's engine writes to.
pub trait ServingProbe {
    /// What `volume`'s engine writes to, given the two leaves of an
    /// interrupted swap.
    fn serving(&self, volume: &str, old_leaf: &Image, new_leaf: &Image) -> Serving;
}

/// A world where no volume is open (offline operations, tests).
pub struct NothingOpen;

impl ServingProbe for NothingOpen {
    fn serving(&self, _volume: &str, _old: &Image, _new: &Image) -> Serving {
        Serving::NotOpen
    }
}

/// Why a chain operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// LVM failed.
    #[error(transparent)]
    Lvm(#[from] LvmError),
    /// qemu-img failed.
    #[error(transparent)]
    QemuImg(#[from] QemuImgError),
    /// The graph refused (chain too long, inconsistent metadata).
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Not enough free space in the SR.
    #[error("the SR has {free} bytes free; this needs {needed}: free space or grow the namespace, then try again")]
    NoSpace {
        /// Free bytes.
        free: u64,
        /// Needed bytes.
        needed: u64,
    },
    /// A clone of a volume in use (as libcow, XCP-ng's SMAPIv3 library, refuses).
    #[error("volume {0} is in use; clone it once its VM is shut down, or snapshot it and clone the snapshot")]
    CloneInUse(String),
    /// The name is already taken.
    #[error("an LV named {0} already exists in the SR")]
    Exists(String),
    /// An LV to be removed is still active on another host, or a host could
    /// not say.
    #[error("LV {lv} was not removed: {why}")]
    ActiveElsewhere {
        /// The LV.
        lv: String,
        /// Which host, and why.
        why: String,
    },
    /// A path that is not a usable image path.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// A resize of a volume whose data is not a qcow2 leaf of its own.
    #[error(
        "volume {0} reads a snapshot's read-only node (other volumes build on it, or it is another volume's \
         former LV), which cannot grow; nothing was changed. Clone it and resize the clone"
    )]
    NotResizable(String),
    /// A snapshot, clone or resize of a volume whose chain still carries a
    /// journalled operation: until it is resolved, the volume's record (and
    /// the engine's handle) may not name the node its newest writes are in.
    #[error(
        "volume {volume}'s snapshot chain has an unfinished operation journalled on LV {lv} (a merge its engine \
         still runs, or an interrupted call not yet replayed); nothing was changed: try again in a few minutes \
         (SR.attach on the master replays it), and run nvmetcp doctor if it stays"
    )]
    Unfinished {
        /// The volume.
        volume: String,
        /// The LV carrying the entry.
        lv: String,
    },
}

/// Refuses a change to `volume`'s chain (`graph` of `lvs`) while an
/// operation on it is journalled: an online merge of its running leaf may
/// have moved the disk to the parent before the volume's `nn=` says so, and
/// a new leaf over the old one would hide those writes for good.
fn refuse_unfinished(lvs: &[Lv], graph: &Graph, volume: &str) -> Result<(), OpError> {
    let mut names: Vec<&str> = graph.chain(volume)?.iter().map(|n| n.lv.as_str()).collect();
    names.push(volume);
    let journalled = lvs.iter().find(|l| {
        l.tags.iter().filter_map(|t| Entry::from_tag(t)).any(|e| names.iter().any(|n| e.operation.involves(n)))
    });
    match journalled {
        Some(lv) => Err(OpError::Unfinished { volume: volume.to_owned(), lv: lv.name.to_string() }),
        None => Ok(()),
    }
}

/// Chain operations on one SR's VG, from the master.
pub struct Chains<'a> {
    lvm: &'a Lvm<'a>,
    qemu_img: QemuImg<'a>,
    vg: &'a VgName,
    volume_tag: &'a str,
    faults: &'a dyn Faults,
    elsewhere: &'a dyn Elsewhere,
    merging: &'a dyn Merging,
}

/// The names a snapshot or clone creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNames {
    /// The volume's new leaf.
    pub leaf: String,
    /// The snapshot's (or clone's) volume LV.
    pub volume: String,
    /// A clone's own leaf.
    pub clone_leaf: Option<String>,
    /// The new volume's metadata tags (its record: uuid, name, …), written
    /// with its LV; the ownership tag is added in any case.
    pub record: Vec<String>,
}

impl<'a> Chains<'a> {
    /// Operations on `vg` (volumes marked with `volume_tag`) through `lvm`
    /// (writable: the master) and `qemu_img`.
    #[must_use]
    pub fn new(
        lvm: &'a Lvm<'a>,
        qemu_img: QemuImg<'a>,
        vg: &'a VgName,
        volume_tag: &'a str,
        faults: &'a dyn Faults,
    ) -> Self {
        Self { lvm, qemu_img, vg, volume_tag, faults, elsewhere: &NoOtherHosts, merging: &NoEngineHere }
    }

    /// The same, asking `elsewhere` (the pool's other hosts) to deactivate
    /// every LV before it is removed.
    #[must_use]
    pub fn with_other_hosts(self, elsewhere: &'a dyn Elsewhere) -> Self {
        Self { elsewhere, ..self }
    }

    /// The same, merging a node of a chain this host's engine has open (by
    /// one volume) through `merging`, that engine.
    #[must_use]
    pub fn with_merging(self, merging: &'a dyn Merging) -> Self {
        Self { merging, ..self }
    }

    fn lvs(&self) -> Result<Vec<Lv>, OpError> {
        Ok(self.lvm.lvs(self.vg)?)
    }

    /// The graph as LVM has it now.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn graph(&self) -> Result<Graph, OpError> {
        Ok(Graph::from_lvs(&self.lvs()?, self.volume_tag)?)
    }

    fn image(&self, node: &Node) -> Result<Image, OpError> {
        Ok(Image::new(node.format, format!("/dev/{}/{}", self.vg, node.lv))?)
    }

    fn qcow2(&self, lv: &str) -> Result<Image, OpError> {
        Ok(Image::new(ImageFormat::Qcow2, format!("/dev/{}/{lv}", self.vg))?)
    }

    /// Snapshots (or, with `names.clone_leaf`, clones) `volume`: its leaf
    /// freezes, it continues on a new qcow2 leaf, and the new volume refers
    /// to the frozen node (a clone: to a leaf of its own on it). `running`
    /// is the volume's datapath if it is open (pause first, then swap).
    /// Returns the new volume's LV. Reads the VG first (one `lvm
    /// fullreport`).
    ///
    /// # Errors
    /// [`OpError`]; whatever was created is removed again (or by replay).
    pub fn snapshot(
        &self,
        volume: &str,
        names: &NewNames,
        virtual_size: u64,
        running: Option<&dyn Running>,
    ) -> Result<String, OpError> {
        let (vgs, lvs) = self.lvm.vgs_and_lvs()?;
        let vg = vgs.iter().find(|v| v.name == *self.vg);
        self.snapshot_in(vg, &lvs, volume, names, virtual_size, running)
    }

    /// [`Chains::snapshot`] of a VG the caller has just read, under the
    /// SR's lock: `vg` (its free space and extent size) and its LVs `lvs`.
    ///
    /// # Errors
    /// [`OpError`]; whatever was created is removed again (or by replay).
    pub fn snapshot_in(
        &self,
        vg: Option<&Vg>,
        lvs: &[Lv],
        volume: &str,
        names: &NewNames,
        virtual_size: u64,
        running: Option<&dyn Running>,
    ) -> Result<String, OpError> {
        if running.is_some() && names.clone_leaf.is_some() {
            return Err(OpError::CloneInUse(volume.to_owned()));
        }
        let lvs: Vec<Lv> = lvs.iter().filter(|l| l.vg == *self.vg).cloned().collect();
        let graph = Graph::from_lvs(&lvs, self.volume_tag)?;
        refuse_unfinished(&lvs, &graph, volume)?;
        let depth = graph.depth_after_snapshot(volume)?;
        let old = graph.node_of(volume).ok_or_else(|| GraphError::UnknownVolume(volume.to_owned()))?.clone();
        let frozen_size = lvs.iter().find(|l| l.name == old.lv).map(|l| l.size);
        for name in [Some(&names.leaf), Some(&names.volume), names.clone_leaf.as_ref()].into_iter().flatten() {
            if lvs.iter().any(|l| &l.name == name) {
                return Err(OpError::Exists(name.clone()));
            }
        }
        let (free, extent) = vg.map_or((0, 4 << 20), |v| (v.free, v.extent_size));
        let leaf_bytes = self.qemu_img.leaf_bytes(virtual_size)?;
        let leaves = if names.clone_leaf.is_some() { 2 } else { 1 };
        let needed = leaf_bytes.div_ceil(extent) * extent * leaves + extent;
        if needed > free {
            return Err(OpError::NoSpace { free, needed });
        }

        let entry = Entry {
            operation: Operation::Snapshot {
                volume: volume.to_owned(),
                old_leaf: old.lv.clone(),
                new_leaf: names.leaf.clone(),
                snapshot: names.volume.clone(),
                clone_leaf: names.clone_leaf.clone(),
                active_on: running.and_then(Running::host),
            },
            step: Step::Prepared,
        };
        let journal = entry.to_tag();
        let parent = self.image(&old)?;
        let leaf_node =
            Node { lv: names.leaf.clone(), format: ImageFormat::Qcow2, parent: Some(old.lv.clone()), depth };
        let mut tags = node_tags(&leaf_node);
        tags.push(journal.clone());
        self.lvm.lvcreate(self.vg, &lv_named(&names.leaf)?, leaf_bytes, &tags)?;
        self.faults.reached("leaf-created");
        // qemu-img opens the whole backing chain of the new layer.
        self.activate_chain(&lvs, &graph, &old.lv, &[&names.leaf])?;
        self.qemu_img.create_layer(&self.qcow2(&names.leaf)?, &parent, virtual_size)?;
        self.faults.reached("leaf-header");

        let mut volume_tags = vec![self.volume_tag.to_owned(), journal.clone()];
        volume_tags.extend(names.record.iter().filter(|t| *t != self.volume_tag).cloned());
        if let Some(clone_leaf) = &names.clone_leaf {
            let node = Node { lv: clone_leaf.clone(), format: ImageFormat::Qcow2, parent: Some(old.lv.clone()), depth };
            let mut tags = node_tags(&node);
            tags.push(journal.clone());
            self.lvm.lvcreate(self.vg, &lv_named(clone_leaf)?, leaf_bytes, &tags)?;
            self.lvm.lvs_activate(self.vg, &[lv_named(clone_leaf)?], &lvs)?;
            self.qemu_img.create_layer(&self.qcow2(clone_leaf)?, &parent, virtual_size)?;
            self.faults.reached("clone-leaf");
            volume_tags.push(volume_node_tag(clone_leaf));
        } else {
            volume_tags.push(volume_node_tag(&old.lv));
        }
        self.lvm.lvcreate(self.vg, &lv_named(&names.volume)?, extent, &volume_tags)?;
        self.faults.reached("volume-created");

        if let Some(running) = running {
            let swapping = Entry { step: Step::Swapping, ..entry.clone() }.to_tag();
            self.lvm.lv_retag(
                self.vg,
                &lv_named(&names.leaf)?,
                std::slice::from_ref(&journal),
                std::slice::from_ref(&swapping),
            )?;
            self.faults.reached("swapping");
            if let Err(error) = running.swap(&self.qcow2(&names.leaf)?) {
                if error.left_old_leaf() {
                    // The disk writes its old leaf: nothing was written to the
                    // new one, and no other host has it active (a host that
                    // refuses the switch deactivates it again; one that could
                    // not be asked was never asked to activate it), so an
                    // unreachable host does not keep it.
                    for lv in [&names.volume, &names.leaf] {
                        self.remove_lv_here(lv)?;
                    }
                }
                // Otherwise replay decides, asking the engine.
                return Err(error.into());
            }
            self.faults.reached("swapped");
            self.commit_snapshot(&lvs, volume, &old, &names.leaf)?;
            self.faults.reached("committed");
            self.shrink_frozen(&old, extent, frozen_size);
            // The new leaf carries the swapping step, the new volume the entry.
            self.lvm.lv_retag(self.vg, &lv_named(&names.leaf)?, &[swapping], &[])?;
            self.lvm.lv_retag(self.vg, &lv_named(&names.volume)?, &[journal], &[])?;
            self.faults.reached("cleaned");
            tracing::info!(volume, snapshot = %names.volume, leaf = %names.leaf, "snapshot of a running volume taken");
            return Ok(names.volume.clone());
        }
        self.commit_snapshot(&lvs, volume, &old, &names.leaf)?;
        self.faults.reached("committed");
        self.shrink_frozen(&old, extent, frozen_size);
        // The entry is on the LVs this call created, and only there.
        for lv in [Some(&names.leaf), names.clone_leaf.as_ref(), Some(&names.volume)].into_iter().flatten() {
            self.lvm.lv_retag(self.vg, &lv_named(lv)?, std::slice::from_ref(&journal), &[])?;
        }
        self.faults.reached("cleaned");
        tracing::info!(volume, snapshot = %names.volume, leaf = %names.leaf, "snapshot taken");
        Ok(names.volume.clone())
    }

    /// The commit point: `volume` refers to `new_leaf`; a volume whose own
    /// LV held its data keeps that LV as the frozen raw node.
    fn commit_snapshot(&self, lvs: &[Lv], volume: &str, old: &Node, new_leaf: &str) -> Result<(), OpError> {
        let tags = lvs.iter().find(|l| l.name == volume).map(|l| l.tags.clone()).unwrap_or_default();
        let remove: Vec<String> = tags.iter().filter(|t| t.starts_with("nn=")).cloned().collect();
        let mut add = vec![volume_node_tag(new_leaf)];
        if old.lv == volume && !tags.iter().any(|t| t == NODE_TAG) {
            add.extend(node_tags(old));
        }
        self.lvm.lv_retag(self.vg, &lv_named(volume)?, &remove, &add)?;
        Ok(())
    }

    /// Shrinks `node`, a read-only node from now on, to its image end
    /// rounded up to whole extents of `extent` bytes (as LVHD deflates a
    /// snapshot's base): its space goes back to the SR. A raw node holds
    /// data over its whole LV and keeps its size. Idempotent (the end is
    /// read again each time, and an LV is only ever reduced to it), so
    /// replay simply runs it again; a failure only costs space, and says so.
    /// `size` is the node's LV size if the caller has just read it.
    fn shrink_frozen(&self, node: &Node, extent: u64, size: Option<u64>) {
        if node.format != ImageFormat::Qcow2 {
            return;
        }
        if let Err(error) = self.try_shrink(node, extent, size) {
            tracing::warn!(node = %node.lv, %error, "the read-only node keeps its size");
        }
    }

    fn try_shrink(&self, node: &Node, extent: u64, size: Option<u64>) -> Result<(), OpError> {
        let named = lv_named(&node.lv)?;
        let size = match size {
            Some(size) => size,
            None => match self.lvm.lv(self.vg, &named)? {
                Some(lv) => lv.size,
                None => return Ok(()),
            },
        };
        let end = self.qemu_img.image_end(&self.image(node)?)?;
        let target = end.div_ceil(extent.max(1)).max(1) * extent.max(1);
        if target < size {
            self.lvm.lv_shrink_read_only(self.vg, &named, target)?;
            self.faults.reached("shrunk");
            tracing::info!(node = %node.lv, from = size, to = target, image_end = end, "read-only node shrunk");
        }
        Ok(())
    }

    fn extent_size(&self) -> Result<u64, OpError> {
        Ok(self.lvm.vgs()?.into_iter().find(|v| v.name == self.vg).map_or(4 << 20, |v| v.extent_size))
    }

    /// Activates for `qemu-img` the LVs it opens: `from` and its ancestors
    /// that `lvs` reports inactive, read-only (a qcow2 image is opened with
    /// its whole backing chain, and only `also` is written), and `also`
    /// read-write (refreshed if active already, as an LV the master changed
    /// since). An LV of the chain active already is left as it is: an
    /// engine here may have it open. A node active read-write elsewhere
    /// (the leaf a member serves) is so on one host only.
    fn activate_chain(&self, lvs: &[Lv], graph: &Graph, from: &str, also: &[&str]) -> Result<(), OpError> {
        let written: Vec<LvName> = also.iter().map(|lv| lv_named(lv)).collect::<Result<_, _>>()?;
        let mut read: Vec<LvName> = Vec::new();
        let mut current = Some(from.to_owned());
        while let Some(lv) = current {
            current = graph.node(&lv).and_then(|n| n.parent.clone());
            let named = lv_named(&lv)?;
            if !lvs.iter().any(|l| l.name == lv && l.active) && !written.contains(&named) {
                read.push(named);
            }
        }
        Ok(self.lvm.lvs_activate_reading(self.vg, &read, &written, lvs)?)
    }

    fn remove_lv(&self, lv: &str) -> Result<(), OpError> {
        let named = lv_named(lv)?;
        if let Some(found) = self.lvm.lv(self.vg, &named)? {
            self.remove_known(&found.name, found.active)?;
        }
        Ok(())
    }

    /// Removes `lv`, which exists; `active` says whether it is active here.
    fn remove_known(&self, lv: &LvName, active: bool) -> Result<(), OpError> {
        // Deactivated on every host first: an LV removed under another
        // host's mapping gives its extents away while that host reads them.
        self.elsewhere.release(lv.as_str())?;
        if active {
            self.lvm.lv_activate(self.vg, lv, false)?;
        }
        self.lvm.lvremove(self.vg, lv)?;
        Ok(())
    }

    /// Removes `lv`, known to be active on no other host.
    fn remove_lv_here(&self, lv: &str) -> Result<(), OpError> {
        let named = lv_named(lv)?;
        if self.lvm.lv(self.vg, &named)?.is_some() {
            self.lvm.lv_activate(self.vg, &named, false)?;
            self.lvm.lvremove(self.vg, &named)?;
        }
        Ok(())
    }

    /// Deletes `volume`: its record goes at once; its data goes only when
    /// the collector finds no volume and no child needs it.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn destroy(&self, volume: &str) -> Result<(), OpError> {
        let Some(lv) = self.lvm.lv(self.vg, &lv_named(volume)?)? else { return Ok(()) };
        self.destroy_known(&lv)
    }

    /// [`Chains::destroy`] of `lv`, the volume's LV as the caller has just
    /// read it.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn destroy_known(&self, lv: &Lv) -> Result<(), OpError> {
        let volume = lv.name.as_str();
        if lv.tags.iter().any(|t| t == NODE_TAG) {
            // The LV is also a node: drop only the volume's record (ownership,
            // node reference, and every metadata tag of volume::meta).
            let record: Vec<String> = lv
                .tags
                .iter()
                .filter(|t| {
                    *t == self.volume_tag
                        || ["nn=", "n.", "d.", "k.", "u="].iter().any(|p| t.starts_with(p))
                        || t.as_str() == "s"
                })
                .cloned()
                .collect();
            self.lvm.lv_retag(self.vg, &lv.name, &record, &[])?;
        } else {
            self.remove_known(&lv.name, lv.active)?;
        }
        tracing::info!(volume, "volume destroyed; its data waits for the collector");
        Ok(())
    }

    /// Runs the collector until nothing is left to collect; returns how many
    /// steps it took.
    ///
    /// # Errors
    /// [`OpError`]; a killed run is finished by [`Chains::replay`].
    pub fn collect(&self, probe: &dyn ServingProbe) -> Result<usize, OpError> {
        self.collect_around(probe, &BTreeSet::new())
    }

    /// [`Chains::collect`], leaving alone every step that touches one of
    /// `busy` (the LVs of chains open in an engine that does not merge
    /// them: on another host, or read-only here; no image open anywhere is
    /// edited from outside). A merge in a chain open read-write in this
    /// host's engine ([`Chains::with_merging`]) by exactly one volume is
    /// asked of that engine; a chain open by several volumes is left alone.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn collect_around(&self, probe: &dyn ServingProbe, busy: &BTreeSet<String>) -> Result<usize, OpError> {
        Ok(self.collect_in(probe, busy, self.lvs()?)?.0)
    }

    /// [`Chains::collect_around`] from `lvs`, the VG's LVs as the caller
    /// has just read them. Returns the steps taken and the LVs as the last
    /// look found them (nothing left to collect).
    ///
    /// # Errors
    /// [`OpError`].
    pub fn collect_in(
        &self,
        probe: &dyn ServingProbe,
        busy: &BTreeSet<String>,
        lvs: Vec<Lv>,
    ) -> Result<(usize, Vec<Lv>), OpError> {
        let mut lvs = lvs;
        if self.replay_in(probe, &lvs)? > 0 {
            lvs = self.lvs()?;
        }
        // Online merges this run left to a later one (refused, or still
        // running), by the node merged away.
        let mut left: BTreeSet<String> = BTreeSet::new();
        let served = self.merging.served();
        let mut steps = 0;
        loop {
            let graph = Graph::from_lvs(&lvs, self.volume_tag)?;
            // An operation still journalled (one waiting for its engine) is
            // not planned over.
            let journalled: BTreeSet<String> = lvs
                .iter()
                .filter(|l| l.tags.iter().any(|t| Entry::from_tag(t).is_some()))
                .map(|l| l.name.to_string())
                .collect();
            let plan: Vec<(Collect, Option<String>)> = graph
                .collect_plan()
                .into_iter()
                .filter(|step| !touches(step, busy) && !touches(step, &journalled))
                .filter_map(|step| {
                    let open = open_in(&graph, &served, &step);
                    match (&step, open.as_slice()) {
                        (_, []) => Some((step, None)),
                        // Open here by one volume: that engine merges.
                        (Collect::Merge { child, .. }, [volume]) if !left.contains(child) => {
                            let volume = (*volume).clone();
                            Some((step, Some(volume)))
                        }
                        // Open by several volumes: left alone.
                        _ => None,
                    }
                })
                .collect();
            if plan.is_empty() {
                return Ok((steps, lvs));
            }
            for (at, (step, online)) in plan.iter().enumerate() {
                // The first step sees the VG as read; later ones look again.
                let now = (at == 0).then_some(lvs.as_slice());
                match (step, online) {
                    (Collect::Merge { child, into, .. }, Some(volume)) => {
                        if self.merge_online(volume, child, into)? == Online::Merged {
                            steps += 1;
                        } else {
                            left.insert(child.clone());
                        }
                    }
                    _ => {
                        if self.collect_step(step, now)? {
                            steps += 1;
                        }
                    }
                }
            }
            lvs = self.lvs()?;
        }
    }

    /// Takes `step`; returns false if it waits (a merge whose chain an
    /// engine opened since it was planned).
    fn collect_step(&self, step: &Collect, lvs: Option<&[Lv]>) -> Result<bool, OpError> {
        match step {
            Collect::Remove { lv } => {
                match lvs.map(|lvs| lvs.iter().find(|l| l.name == *lv)) {
                    Some(Some(found)) => self.remove_known(&found.name, found.active)?,
                    Some(None) => {}
                    None => self.remove_lv(lv)?,
                }
                self.faults.reached("removed");
            }
            Collect::Merge { child, into, .. } => {
                let entry = Entry {
                    operation: Operation::Merge { child: child.clone(), into: into.clone(), online: None },
                    step: Step::Prepared,
                };
                self.lvm.lv_retag(self.vg, &lv_named(child)?, &[], &[entry.to_tag()])?;
                self.faults.reached("merge-journal");
                return self.finish_merge(child, into);
            }
        }
        Ok(true)
    }

    /// Writes `child` into `into`, relinks `child`'s children and volumes to
    /// `into`, removes `child`. Every step is idempotent. Returns false,
    /// changing nothing and leaving the entry, while an engine anywhere has
    /// open a chain with one of those images (a clone or the volume started
    /// since the merge was journalled), or a host cannot say.
    fn finish_merge(&self, child: &str, into: &str) -> Result<bool, OpError> {
        // One read: only the grandchildren's node tags change below, so the
        // volumes referring to `child` are found in it too.
        let lvs = self.lvs()?;
        let graph = Graph::from_lvs(&lvs, self.volume_tag)?;
        let Some(child_node) = graph.node(child).cloned() else { return Ok(true) };
        let into_node = graph.node(into).cloned().ok_or_else(|| GraphError::UnknownVolume(into.to_owned()))?;
        let grandchildren: Vec<Node> = graph.children(child).into_iter().cloned().collect();
        // The commit writes both, relinking writes each grandchild.
        let mut written = vec![child, into];
        written.extend(grandchildren.iter().map(|g| g.lv.as_str()));
        if let Some(why) = self.open_among(&graph, &written) {
            tracing::warn!(
                child,
                into,
                %why,
                "the merge waits in its journal: qemu-img would edit an image an engine has open; it is finished \
                 at rest once that chain is closed (the next collector run or SR.attach)"
            );
            return Ok(false);
        }
        // The commit opens the child's whole chain; relinking opens each grandchild.
        self.grow_into(&graph, &lvs, child, &into_node)?;
        // Reloaded read-write here even if they were active read-only (a
        // chain's parents are, wherever it was served).
        self.activate_chain(&lvs, &graph, child, &written)?;
        let (grown, into_size) = (virtual_size(&graph, &lvs, child), virtual_size(&graph, &lvs, into));
        let into_lv = lvs.iter().find(|l| l.name == into);
        if let (ImageFormat::Qcow2, Some(into_lv), true) = (into_node.format, into_lv, grown > into_size) {
            self.qemu_img.resize(&self.image(&into_node)?, grown)?;
            self.set_virtual_size(into_lv, grown)?;
        }
        self.qemu_img.commit(&self.image(&child_node)?)?;
        self.faults.reached("merge-committed");
        self.retire_child(&lvs, child, &into_node, &grandchildren, &[])?;
        Ok(true)
    }

    /// Why none of `edited` (images a merge's tail would write from here)
    /// may be written now: one is in the chain of a volume an engine has
    /// open, on this host or another ([`Merging::open`], asked now: after
    /// the entry for the edit was journalled), or a host cannot say which
    /// it has.
    fn open_among(&self, graph: &Graph, edited: &[&str]) -> Option<String> {
        let open = match self.merging.open() {
            Ok(open) => open,
            Err(error) => return Some(format!("a host cannot say which chains it has open: {error}")),
        };
        open.iter().find_map(|on| {
            let chain: Vec<String> = match graph.chain(&on.volume) {
                Ok(chain) => chain.iter().map(|n| n.lv.clone()).collect(),
                // A volume no longer in the graph: what its handle names.
                Err(_) => vec![on.volume.clone()],
            };
            let lv = edited.iter().find(|e| chain.iter().any(|c| c == *e))?;
            Some(format!("LV {lv} is in the chain of {on}"))
        })
    }

    /// Makes room in `into` (`lvs` as just read) for `child`'s data before
    /// a commit. A read-only qcow2 node was shrunk to its image end: the
    /// commit allocates clusters in it, so it gets a leaf's full size back
    /// first. A child grown since (a resized leaf) is larger than `into`,
    /// which grows to it: a raw LV to that size, a qcow2 LV to hold it.
    fn grow_into(&self, graph: &Graph, lvs: &[Lv], child: &str, into: &Node) -> Result<(), OpError> {
        let (grown, into_size) = (virtual_size(graph, lvs, child), virtual_size(graph, lvs, &into.lv));
        let room = match into.format {
            ImageFormat::Qcow2 => self.qemu_img.leaf_bytes(grown.max(into_size))?,
            ImageFormat::Raw => grown,
        };
        if lvs.iter().any(|l| l.name == into.lv && l.size < room) {
            self.lvm.lvextend(self.vg, &lv_named(&into.lv)?, room)?;
        }
        Ok(())
    }

    /// The tail of a merge whose data is in `into` now (`lvs` as read
    /// before it): `grandchildren` relinked to `into` (their headers with
    /// `rebase -u`, except those in `rewritten`, whose headers the engine
    /// that merged rewrote itself, then their node tags), the volumes
    /// referring to `child` pointed at `into`, `child` removed.
    fn retire_child(
        &self,
        lvs: &[Lv],
        child: &str,
        into: &Node,
        grandchildren: &[Node],
        rewritten: &[String],
    ) -> Result<(), OpError> {
        let into_image = self.image(into)?;
        for grandchild in grandchildren {
            if !rewritten.contains(&grandchild.lv) {
                self.qemu_img.rebase_unsafe(&self.image(grandchild)?, &into_image)?;
            }
            let moved =
                Node { parent: Some(into.lv.clone()), depth: grandchild.depth.saturating_sub(1), ..grandchild.clone() };
            // Only the tags that change: lvchange given the same tag to
            // delete and to add drops it.
            let (old_tags, new_tags) = (node_tags(grandchild), node_tags(&moved));
            let remove: Vec<String> = old_tags.iter().filter(|t| !new_tags.contains(t)).cloned().collect();
            let add: Vec<String> = new_tags.iter().filter(|t| !old_tags.contains(t)).cloned().collect();
            self.lvm.lv_retag(self.vg, &lv_named(&grandchild.lv)?, &remove, &add)?;
        }
        self.shallower_below(lvs, grandchildren)?;
        self.faults.reached("merge-relinked");
        if !grandchildren.is_empty() {
            // Still a parent: read-only, so back to its image end.
            self.shrink_frozen(into, self.extent_size()?, None);
        }
        for lv in lvs {
            if lv.tags.iter().any(|t| t == self.volume_tag) && lv.tags.contains(&volume_node_tag(child)) {
                self.lvm.lv_retag(self.vg, &lv.name, &[volume_node_tag(child)], &[volume_node_tag(&into.lv)])?;
            }
        }
        self.faults.reached("merge-retargeted");
        // Active here: activated for the commit.
        self.remove_known(&lv_named(child)?, true)?;
        tracing::info!(child, into = %into.lv, "node merged");
        Ok(())
    }

    /// Moves the depth tag of every node below `grandchildren` (`lvs` as
    /// read before their parent was merged away) one step up, as their
    /// depth is. Parent links are the truth and a stale tag is corrected in
    /// memory, but it is warned about on every read of the graph: without
    /// this, every merge of a middle node left the leaf's tag stale for good.
    fn shallower_below(&self, lvs: &[Lv], grandchildren: &[Node]) -> Result<(), OpError> {
        let graph = Graph::from_lvs(lvs, self.volume_tag)?;
        let mut below: Vec<Node> = grandchildren.iter().flat_map(|g| graph.children(&g.lv)).cloned().collect();
        while let Some(node) = below.pop() {
            below.extend(graph.children(&node.lv).into_iter().cloned());
            let depth = format!("nd={}", node.depth.saturating_sub(1));
            let Some(lv) = lvs.iter().find(|l| l.name == node.lv) else { continue };
            if lv.tags.contains(&depth) {
                continue;
            }
            let recorded: Vec<String> = lv.tags.iter().filter(|t| t.starts_with("nd=")).cloned().collect();
            self.lvm.lv_retag(self.vg, &lv.name, &recorded, std::slice::from_ref(&depth))?;
        }
        Ok(())
    }

    /// Undoes or finishes every journalled operation a killed call left,
    /// asking `probe` which leaf a running volume's engine writes to.
    /// Returns how many operations it resolved.
    ///
    /// # Errors
    /// [`OpError`].
    pub fn replay(&self, probe: &dyn ServingProbe) -> Result<usize, OpError> {
        self.replay_in(probe, &self.lvs()?)
    }

    /// [`Chains::replay`] from `lvs`, the VG's LVs as just read.
    fn replay_in(&self, probe: &dyn ServingProbe, lvs: &[Lv]) -> Result<usize, OpError> {
        // One operation may be journalled on several LVs, at different
        // steps (the step moves on the new leaf only): keep the furthest.
        let mut entries: Vec<Entry> = Vec::new();
        for tag in lvs.iter().flat_map(|l| &l.tags) {
            let Some(entry) = tag.strip_prefix(JOURNAL_KEY).and_then(|_| Entry::from_tag(tag)) else { continue };
            match entries.iter_mut().find(|e| e.operation == entry.operation) {
                Some(known) if step_rank(entry.step) > step_rank(known.step) => known.step = entry.step,
                Some(_) => {}
                None => entries.push(entry),
            }
        }
        let mut resolved = 0;
        for entry in &entries {
            match &entry.operation {
                Operation::Merge { child, into, online: None } => {
                    if !self.finish_merge(child, into)? {
                        continue;
                    }
                }
                Operation::Merge { child, into, online: Some(volume) } => {
                    if !self.replay_online(entry, volume, child, into)? {
                        continue;
                    }
                }
                Operation::Snapshot { volume, old_leaf, new_leaf, snapshot, clone_leaf, .. } => {
                    let on_new = lvs
                        .iter()
                        .find(|l| &l.name == volume)
                        .is_some_and(|l| l.tags.contains(&volume_node_tag(new_leaf)));
                    let graph = Graph::from_lvs(lvs, self.volume_tag)?;
                    let old =
                        graph.node(old_leaf).cloned().ok_or_else(|| GraphError::UnknownVolume(old_leaf.clone()))?;
                    let serving = if entry.step == Step::Swapping && !on_new {
                        probe.serving(volume, &self.image(&old)?, &self.qcow2(new_leaf)?)
                    } else {
                        Serving::NotOpen
                    };
                    match decide(entry, Facts { volume_on_new_leaf: on_new, serving }) {
                        Replay::Undo => {
                            for lv in [Some(snapshot), clone_leaf.as_ref(), Some(new_leaf)].into_iter().flatten() {
                                self.remove_lv(lv)?;
                            }
                            tracing::warn!(volume, "an interrupted snapshot was undone");
                        }
                        Replay::Finish => {
                            if !on_new {
                                self.commit_snapshot(lvs, volume, &old, new_leaf)?;
                            }
                            if old.format == ImageFormat::Qcow2 {
                                // qemu-img opens the node with its backing chain.
                                self.activate_chain(lvs, &graph, &old.lv, &[])?;
                                self.shrink_frozen(&old, self.extent_size()?, None);
                            }
                            self.clean_operation(&entry.operation)?;
                            tracing::warn!(volume, "an interrupted snapshot was finished");
                        }
                        Replay::Wait(why) => {
                            tracing::warn!(volume, why, "an interrupted snapshot waits");
                            continue;
                        }
                    }
                }
            }
            resolved += 1;
        }
        Ok(resolved)
    }

    /// Removes every journal tag of `operation`, at whatever step.
    fn clean_operation(&self, operation: &Operation) -> Result<(), OpError> {
        for lv in self.lvs()? {
            let tags: Vec<String> = lv
                .tags
                .iter()
                .filter(|t| Entry::from_tag(t).is_some_and(|e| &e.operation == operation))
                .cloned()
                .collect();
            if !tags.is_empty() {
                self.lvm.lv_retag(self.vg, &lv.name, &tags, &[])?;
            }
        }
        Ok(())
    }
}

/// The volumes of `served` (open in this host's engine) whose chains
/// `step` touches.
fn open_in<'s>(graph: &Graph, served: &'s [String], step: &Collect) -> Vec<&'s String> {
    served
        .iter()
        .filter(|volume| {
            graph.chain(volume).is_ok_and(|chain| {
                let lvs: BTreeSet<String> = chain.iter().map(|n| n.lv.clone()).collect();
                touches(step, &lvs)
            })
        })
        .collect()
}

fn touches(step: &Collect, busy: &BTreeSet<String>) -> bool {
    match step {
        Collect::Remove { lv } => busy.contains(lv),
        Collect::Merge { child, into, grandchildren, .. } => {
            busy.contains(child) || busy.contains(into) || grandchildren.iter().any(|g| busy.contains(g))
        }
    }
}

const fn step_rank(step: Step) -> u8 {
    match step {
        Step::Prepared => 0,
        Step::Swapping => 1,
        Step::Committed | Step::EngineCommitting => 2,
        Step::GivingBack => 3,
    }
}

mod closing;
mod online;
mod resize;
#[cfg(test)]
mod tests;
