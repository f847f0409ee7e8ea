//! The collector's online merge: a node of a chain this host's engine has
//! open (by exactly one volume, read-write) is merged by that engine, never
//! by `qemu-img` from outside (issue 18, as LVHD asks the tapdisk that owns
//! the chain).
//!
//! `Collect::Merge { child, into }`: the engine commits `child` (the top)
//! into `into` (its parent). An intermediate `child`: the engine rewrites the
//! backing link of the grandchild in its chain; the master moves only the
//! node tags (and relinks at rest any other grandchild, which no engine has
//! open). `child` the running leaf: an active commit, completed by the
//! engine ([`crate::engine::Engine::commit_state`]); `into` becomes the
//! leaf, in the engine's handle first, then in the volume's `nn=` tag.
//!
//! Journal: `Prepared` on `child` (naming the volume), `into` grown back to
//! a leaf's size and reloaded read-write, then `EngineCommitting`, then the
//! job. The collector waits [`Merging::patience`] for it; a job still
//! running is left to the next collector run, `SR.attach` or the volume's
//! `Datapath.detach` (before the disk closes, [`super::closing`]), whose
//! replay asks the engine: running, wait; done, finish; failed, give back;
//! no job (the engine restarted), the grandchild's header or the engine's
//! leaf says whether the data moved.
//!
//! A merge that moved nothing (the engine refused `start`, its job failed,
//! or a kill came before it was asked) gives `into` back: the entry moves
//! to `GivingBack`, `into` (and the node above `child`, which the job had
//! writable too) is reloaded read-only and `into` shrunk to its image
//! end (as a snapshot's frozen node is), and only then does the entry go.
//! Replay of a `GivingBack` entry runs the give-back again, asking no
//! engine: the decision is in the journal.

use std::time::{Duration, Instant};

use crate::engine::CommitState;

use super::super::graph::virtual_size;
use super::{
    lv_named, Chains, EngineError, Entry, Graph, GraphError, Image, ImageFormat, LvName, Node, OpError, Operation, Step,
};

/// This host's engine, for merges in the chains it has open.
pub trait Merging {
    /// The volumes this host's engine serves read-write.
    fn served(&self) -> Vec<String>;

    /// Starts merging `top` into `base` in the chain `volume`'s engine has
    /// open. `overlay`, the node above `top` when it is not the leaf, gets
    /// its backing link rewritten by the engine: the host running the job
    /// must have it writable, as `base` (the caller makes both so on this
    /// host).
    ///
    /// # Errors
    /// [`EngineError`], e.g. [`EngineError::Unsupported`] without online commit.
    fn start(&self, volume: &str, top: &Image, base: &Image, overlay: Option<&Image>) -> Result<(), EngineError>;

    /// How the merge on `volume`'s disk goes ([`CommitState::Idle`] when it
    /// is not served here).
    ///
    /// # Errors
    /// [`EngineError`] if the engine cannot be asked.
    fn state(&self, volume: &str) -> Result<CommitState, EngineError>;

    /// The image `volume`'s engine writes now, as the engine says, kept in
    /// the disk's handle; `None` if this host does not serve it.
    ///
    /// # Errors
    /// [`EngineError`] if the engine cannot be asked.
    fn leaf_now(&self, volume: &str) -> Result<Option<Image>, EngineError>;

    /// Every volume whose chain an engine has open: this host's, read-only
    /// and mid-swap disks included, and (for the pool) every other host's.
    /// No image of these chains is edited from outside: [`Chains::replay`]
    /// and the collector leave waiting an entry that would. Asked after the
    /// entry is journalled, and answered as things are now.
    ///
    /// # Errors
    /// [`EngineError::MergeUnasked`] if a host cannot say.
    fn open(&self) -> Result<Vec<OpenChain>, EngineError>;

    /// The pool host whose engine serves `volume`, when it is not this one.
    ///
    /// # Errors
    /// [`EngineError::MergeUnasked`] if the other hosts cannot say.
    fn host_of(&self, _volume: &str) -> Result<Option<String>, EngineError> {
        Ok(None)
    }
    /// Reloads `base` read-only on the other host whose engine serves
    /// `volume`: a node that host reloaded read-write for a merge's job
    /// (`into`, or the node above the merged one), once the merge moved
    /// nothing or left it a parent again. This host's own mapping is the
    /// caller's: nothing to do for an engine here.
    ///
    /// # Errors
    /// [`EngineError`] if that host refused or could not be asked.
    fn give_back(&self, _volume: &str, _base: &Image) -> Result<(), EngineError> {
        Ok(())
    }

    /// How long the collector waits for a job before leaving it to a later run.
    fn patience(&self) -> Duration {
        Duration::from_secs(60)
    }
}

/// A volume whose chain an engine has open ([`Merging::open`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenChain {
    /// The volume.
    pub volume: String,
    /// The pool host whose engine has it open; `None` for this host.
    pub host: Option<String>,
}

impl std::fmt::Display for OpenChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(host) => write!(f, "volume {} (open on host {host})", self.volume),
            None => write!(f, "volume {} (open on this host)", self.volume),
        }
    }
}

/// No engine merges here (offline operations, tests): every chain open
/// anywhere is in the collector's `busy` set, and replay knows of none.
pub struct NoEngineHere;

impl Merging for NoEngineHere {
    fn served(&self) -> Vec<String> {
        Vec::new()
    }

    fn start(&self, _volume: &str, _top: &Image, _base: &Image, _overlay: Option<&Image>) -> Result<(), EngineError> {
        Err(EngineError::Unsupported {
            engine: crate::engine::EngineKind::QemuStorageDaemon,
            what: "merge online",
            why: "no engine serves disks in this call".to_owned(),
        })
    }

    fn state(&self, _volume: &str) -> Result<CommitState, EngineError> {
        Ok(CommitState::Idle)
    }

    fn leaf_now(&self, _volume: &str) -> Result<Option<Image>, EngineError> {
        Ok(None)
    }

    fn open(&self) -> Result<Vec<OpenChain>, EngineError> {
        Ok(Vec::new())
    }
}

/// How an online merge ended for this collector run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Online {
    /// Merged and removed.
    Merged,
    /// The engine still merges: the entry waits for a later run.
    Pending,
    /// The engine refused or failed: `into` given back, the entry gone,
    /// the chain unchanged.
    GaveUp,
}

/// Whether the data of `child` is in `into`, when no job says so.
enum Moved {
    Yes,
    No,
    Unknown,
}

impl Chains<'_> {
    /// Merges `child` into `into` through the engine that serves `volume`.
    pub(super) fn merge_online(&self, volume: &str, child: &str, into: &str) -> Result<Online, OpError> {
        let lvs = self.lvs()?;
        let graph = Graph::from_lvs(&lvs, self.volume_tag)?;
        let Some(child_node) = graph.node(child).cloned() else { return Ok(Online::Merged) };
        let into_node = graph.node(into).cloned().ok_or_else(|| GraphError::UnknownVolume(into.to_owned()))?;
        if virtual_size(&graph, &lvs, child) > virtual_size(&graph, &lvs, into) {
            // A leaf resized since: the engine would grow `into` without its
            // nv= tag. Merged at rest, once the volume is closed.
            tracing::warn!(volume, child, into, "a node larger than its parent is merged once the volume is closed");
            return Ok(Online::GaveUp);
        }
        let operation =
            Operation::Merge { child: child.to_owned(), into: into.to_owned(), online: Some(volume.to_owned()) };
        let prepared = Entry { operation: operation.clone(), step: Step::Prepared }.to_tag();
        let named = lv_named(child)?;
        self.lvm.lv_retag(self.vg, &named, &[], std::slice::from_ref(&prepared))?;
        self.faults.reached("merge-journal");
        self.grow_into(&graph, &lvs, child, &into_node)?;
        // The engine reopens `into` read-write for the job, where it runs:
        // this host's, reloaded here first; a member's reloads it there
        // (`chain_commit`), and this host, which never writes it, leaves it
        // as it is. So with `overlay`, the node above `child` in the chain
        // (a parent, read-only, unless it is the leaf), whose backing link
        // the engine rewrites: qemu-storage-daemon dies writing a read-only
        // one. A grandchild no engine has open is relinked at rest from
        // here afterwards.
        let here = matches!(self.merging.host_of(volume), Ok(None));
        let chain: Vec<String> = graph.chain(volume)?.iter().map(|n| n.lv.clone()).collect();
        let overlay = overlay_of(&graph, volume, child)?;
        let overlay_image = overlay.as_ref().map(|o| self.image(o)).transpose()?;
        let mut written: Vec<&str> = if here { vec![into] } else { Vec::new() };
        if here {
            written.extend(overlay.as_ref().map(|o| o.lv.as_str()));
        }
        written.extend(graph.children(child).iter().map(|g| g.lv.as_str()).filter(|g| !chain.iter().any(|c| c == g)));
        let written: Vec<_> = written.into_iter().map(lv_named).collect::<Result<_, _>>()?;
        self.lvm.lvs_activate(self.vg, &written, &lvs)?;
        let committing = Entry { operation, step: Step::EngineCommitting };
        self.lvm.lv_retag(self.vg, &named, &[prepared], &[committing.to_tag()])?;
        let (top_image, into_image) = (self.image(&child_node)?, self.image(&into_node)?);
        if let Err(error) = self.merging.start(volume, &top_image, &into_image, overlay_image.as_ref()) {
            if error.merge_unasked() {
                // A member's answer lost: it may have started. Replay asks it.
                tracing::warn!(volume, child, into, %error, "the merge may have started; the entry waits");
                return Ok(Online::Pending);
            }
            tracing::warn!(volume, child, into, %error, "the engine did not merge; the node stays until the volume is closed");
            self.give_back(&committing)?;
            return Ok(Online::GaveUp);
        }
        self.faults.reached("merge-engine-started");
        let deadline = Instant::now() + self.merging.patience();
        loop {
            let state = match self.merging.state(volume) {
                Ok(state) => state,
                Err(error) => {
                    tracing::warn!(volume, child, %error, "the engine could not say how the merge goes; a later collector run asks again");
                    return Ok(Online::Pending);
                }
            };
            match state {
                CommitState::Running { .. } if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                CommitState::Running { done, total } => {
                    tracing::info!(
                        volume,
                        child,
                        into,
                        done,
                        total,
                        "the engine still merges; a later collector run finishes"
                    );
                    return Ok(Online::Pending);
                }
                other => return self.settle_online(&committing, volume, other),
            }
        }
    }

    /// Replays an online merge entry: returns whether it was resolved.
    pub(super) fn replay_online(&self, entry: &Entry, volume: &str, child: &str, into: &str) -> Result<bool, OpError> {
        if entry.step != Step::EngineCommitting {
            // Killed before the engine was asked (nothing moved), or while
            // giving `into` back: given back; the collector plans the
            // merge again.
            self.give_back(entry)?;
            return Ok(true);
        }
        let state = match self.merging.state(volume) {
            Ok(state) => state,
            Err(error) if error.merge_unasked() => {
                // A member that cannot be reached may still be merging.
                tracing::warn!(volume, child, into, %error, "the entry waits for the host serving the volume");
                return Ok(false);
            }
            Err(error) => {
                tracing::warn!(volume, child, %error, "the engine could not say how the merge went");
                CommitState::Idle
            }
        };
        if let CommitState::Running { .. } = state {
            tracing::info!(volume, child, into, "the engine still merges; the entry waits");
            return Ok(false);
        }
        Ok(self.settle_online(entry, volume, state)? != Online::Pending)
    }

    /// Acts on an online merge's final `state`.
    fn settle_online(&self, entry: &Entry, volume: &str, state: CommitState) -> Result<Online, OpError> {
        let Operation::Merge { child, into, .. } = &entry.operation else { return Ok(Online::GaveUp) };
        let moved = match state {
            CommitState::Done => Moved::Yes,
            CommitState::Failed(why) => {
                tracing::warn!(volume, child, into, why, "the engine's merge failed; the chain is unchanged");
                Moved::No
            }
            CommitState::Idle | CommitState::Running { .. } => self.moved(volume, child, into)?,
        };
        match moved {
            Moved::Yes => {
                self.faults.reached("merge-engine-done");
                Ok(if self.finish_online(volume, child, into)? { Online::Merged } else { Online::Pending })
            }
            Moved::No => {
                self.give_back(entry)?;
                Ok(Online::GaveUp)
            }
            Moved::Unknown => {
                tracing::warn!(
                    volume,
                    child,
                    into,
                    "an online merge of the running leaf cannot be resolved while the volume is not served here; \
                     the entry waits until it is"
                );
                Ok(Online::Pending)
            }
        }
    }

    /// Gives `into` back after the online merge of `entry` moved nothing:
    /// the entry says so first (`GivingBack`, one `lvchange` on `child`),
    /// then `into` (grown to a leaf's size and reloaded read-write for the
    /// job where the volume's engine runs) is reloaded read-only there (a
    /// member asked through [`Merging::give_back`]; here, if active) and
    /// shrunk to its image end in whole extents, then the entry goes. Every
    /// step is idempotent: replay of a `GivingBack` entry runs it again. A
    /// member that cannot be asked (or predates the request) keeps its
    /// mapping writable until the disk closes; nothing writes `into` with
    /// no job, so the entry does not wait for it.
    fn give_back(&self, entry: &Entry) -> Result<(), OpError> {
        let Operation::Merge { child, into, online } = &entry.operation else { return Ok(()) };
        if entry.step != Step::GivingBack {
            let giving_back = Entry { step: Step::GivingBack, ..entry.clone() };
            self.lvm.lv_retag(self.vg, &lv_named(child)?, &[entry.to_tag()], &[giving_back.to_tag()])?;
            self.faults.reached("merge-giving-back");
        }
        let lvs = self.lvs()?;
        let graph = Graph::from_lvs(&lvs, self.volume_tag)?;
        if let Some(into_node) = graph.node(into) {
            let into_lv = lvs.iter().find(|l| l.name == *into);
            let overlay = match online {
                Some(volume) => overlay_of(&graph, volume, child)?,
                None => None,
            };
            let mut given: Vec<&Node> = vec![into_node];
            given.extend(overlay.as_ref());
            self.read_only_again(&lvs, online.as_deref(), &given)?;
            let here = online.as_deref().is_none_or(|volume| matches!(self.merging.host_of(volume), Ok(None)));
            if !here && into_node.format == ImageFormat::Qcow2 {
                // Read here, as the member serves it, to shrink it.
                self.read_here(&graph, into);
            }
            self.shrink_frozen(into_node, self.extent_size()?, into_lv.map(|l| l.size));
            tracing::info!(child, into, "the merge's nodes given back read-only");
        }
        self.clean_operation(&entry.operation)
    }

    /// Reloads `nodes` (the parents an online merge of `volume` made
    /// writable for its job) read-only where the job ran: here, those `lvs`
    /// has active; on the member serving `volume`, through
    /// [`Merging::give_back`] (a member that cannot be asked keeps them
    /// writable until the disk closes, and says so; nothing writes them).
    fn read_only_again(&self, lvs: &[super::Lv], volume: Option<&str>, nodes: &[&Node]) -> Result<(), OpError> {
        let here = volume.is_none_or(|volume| matches!(self.merging.host_of(volume), Ok(None)));
        if here {
            let active: Vec<LvName> = nodes
                .iter()
                .filter(|n| lvs.iter().any(|l| l.name == n.lv && l.active))
                .map(|n| lv_named(&n.lv))
                .collect::<Result<_, _>>()?;
            self.lvm.lvs_activate_read_only(self.vg, &active)?;
            return Ok(());
        }
        let volume = volume.unwrap_or_default();
        for node in nodes {
            if let Err(error) = self.merging.give_back(volume, &self.image(node)?) {
                tracing::warn!(volume, node = %node.lv, %error, "the host serving the volume keeps the node writable until the disk closes");
            }
        }
        Ok(())
    }

    /// Activates `into` and its backing chain read-only here, as a member's
    /// engine serves them, for `qemu-img` to read `into` and shrink it to
    /// its image end (the settle after the collector deactivates them). A
    /// failure only costs the shrink, and says so.
    fn read_here(&self, graph: &Graph, into: &str) {
        let mut read: Vec<LvName> = Vec::new();
        let mut current = Some(into.to_owned());
        while let Some(lv) = current {
            current = graph.node(&lv).and_then(|n| n.parent.clone());
            match lv_named(&lv) {
                Ok(named) => read.push(named),
                Err(error) => {
                    tracing::warn!(into, %error, "the merged-into node cannot be read here to shrink it");
                    return;
                }
            }
        }
        if let Err(error) = self.lvm.lvs_activate_read_only(self.vg, &read) {
            tracing::warn!(into, %error, "the merged-into node cannot be read here to shrink it");
        }
    }

    /// With no job to ask: `child`'s data is in `into` if the grandchild in
    /// `volume`'s chain is backed by `into` now (an intermediate merge), or
    /// the engine writes `into` (the leaf merged).
    fn moved(&self, volume: &str, child: &str, into: &str) -> Result<Moved, OpError> {
        let lvs = self.lvs()?;
        let graph = Graph::from_lvs(&lvs, self.volume_tag)?;
        let Some(child_node) = graph.node(child).cloned() else { return Ok(Moved::Yes) };
        let into_node = graph.node(into).cloned().ok_or_else(|| GraphError::UnknownVolume(into.to_owned()))?;
        let into_image = self.image(&into_node)?;
        let chain: Vec<Node> = graph.chain(volume)?.into_iter().cloned().collect();
        if !chain.iter().any(|n| n.lv == child) {
            // Relinked or retargeted already: tags move only after the job.
            return Ok(Moved::Yes);
        }
        if chain.first().is_some_and(|leaf| leaf.lv == child) {
            return Ok(match self.merging.leaf_now(volume)? {
                Some(leaf) if leaf == into_image => Moved::Yes,
                Some(leaf) if leaf == self.image(&child_node)? => Moved::No,
                Some(leaf) => {
                    tracing::warn!(volume, leaf = leaf.path_str(), "the engine writes to neither node of the merge");
                    Moved::Unknown
                }
                None => Moved::Unknown,
            });
        }
        let Some(grandchild) = chain.iter().find(|n| n.parent.as_deref() == Some(child)) else {
            return Ok(Moved::No);
        };
        if !lvs.iter().any(|l| l.name == grandchild.lv && l.active) {
            // Only read: the volume was closed, its chain deactivated.
            self.lvm.lvs_activate_read_only(self.vg, &[lv_named(&grandchild.lv)?])?;
        }
        let backing = self.qemu_img.backing_of(&self.image(grandchild)?)?;
        Ok(if backing.as_deref() == Some(into_image.path_str()) { Moved::Yes } else { Moved::No })
    }

    /// The engine merged `child` into `into` in `volume`'s chain: the
    /// handle (the leaf merged), the node tags, the volumes, `child`
    /// removed. Returns false, leaving the entry, if the engine of a merged
    /// leaf writes to neither node.
    fn finish_online(&self, volume: &str, child: &str, into: &str) -> Result<bool, OpError> {
        let lvs = self.lvs()?;
        let graph = Graph::from_lvs(&lvs, self.volume_tag)?;
        if graph.node(child).is_none() {
            return Ok(true);
        }
        let into_node = graph.node(into).cloned().ok_or_else(|| GraphError::UnknownVolume(into.to_owned()))?;
        let chain: Vec<String> = graph.chain(volume)?.iter().map(|n| n.lv.clone()).collect();
        if chain.first().is_some_and(|leaf| leaf == child) {
            // The engine writes `into` now: its handle says so before the
            // volume's tag does (a later swap finds the disk by its leaf).
            match self.merging.leaf_now(volume)? {
                Some(leaf) if leaf == self.image(&into_node)? => {}
                Some(leaf) => {
                    tracing::warn!(
                        volume,
                        leaf = leaf.path_str(),
                        into,
                        "after merging its leaf the engine writes to another image; the entry waits"
                    );
                    return Ok(false);
                }
                None => {}
            }
        }
        let grandchildren: Vec<Node> = graph.children(child).into_iter().cloned().collect();
        let rewritten: Vec<String> =
            grandchildren.iter().filter(|g| chain.contains(&g.lv)).map(|g| g.lv.clone()).collect();
        // The others are relinked at rest: unless an engine opened one since.
        let at_rest: Vec<&str> =
            grandchildren.iter().map(|g| g.lv.as_str()).filter(|g| !chain.iter().any(|c| c == g)).collect();
        if let Some(why) = (!at_rest.is_empty()).then(|| self.open_among(&graph, &at_rest)).flatten() {
            tracing::warn!(
                volume,
                child,
                into,
                %why,
                "the engine merged; relinking the node's other children waits in the journal until that chain \
                 is closed"
            );
            return Ok(false);
        }
        let here = matches!(self.merging.host_of(volume), Ok(None));
        if !here && into_node.format == ImageFormat::Qcow2 && !grandchildren.is_empty() {
            // A parent again, shrunk to its image end.
            self.read_here(&graph, into);
        }
        let overlay = overlay_of(&graph, volume, child)?;
        self.retire_child(&lvs, child, &into_node, &grandchildren, &rewritten)?;
        if !grandchildren.is_empty() {
            // `into` a parent again, and the node above it one still: what
            // the job had writable goes back to read-only where it ran.
            let mut parents: Vec<&Node> = vec![&into_node];
            parents.extend(overlay.as_ref());
            // `lvs` as read above: the job's activations came before it,
            // and retiring `child` changes no other LV's.
            if let Err(error) = self.read_only_again(&lvs, Some(volume), &parents) {
                tracing::warn!(volume, into, %error, "the merge's nodes stay writable until the disk closes");
            }
        }
        tracing::info!(volume, child, into, "node merged by the engine serving the volume");
        Ok(true)
    }
}

/// The node above `child` in `volume`'s chain when that is not the leaf: a
/// parent whose backing link the engine rewrites when it merges `child`.
fn overlay_of(graph: &Graph, volume: &str, child: &str) -> Result<Option<Node>, GraphError> {
    let chain = graph.chain(volume)?;
    Ok(chain.windows(2).skip(1).find(|w| w[1].lv == child).map(|w| w[0].clone()))
}
