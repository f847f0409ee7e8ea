//! The node graph of an SR, read from LV tags, and the collector's plan.
//!
//! A *node* is an LV holding image data: a raw LV (a volume never
//! snapshotted, or the base of a chain) or a qcow2 layer whose backing file
//! is its parent node. A *volume* (xapi's VDI) refers to exactly one node,
//! its leaf. The relation lives in tags, written by the master only, each
//! change one LVM metadata commit:
//!
//! | tag | on | meaning |
//! |---|---|---|
//! | `nvmetcp_node` | a node LV | this LV holds image data of a chain |
//! | `nf=raw` / `nf=qcow2` | a node | its format |
//! | `np=<lv>` | a node | its parent (absent for a base) |
//! | `nd=<n>` | a node | its depth, 1 for a base: the chain length a leaf here has |
//! | `nn=<lv>` | a volume LV | the node holding its data (absent: the volume's own LV, raw) |
//! | `nv=<bytes>` | a qcow2 node | its virtual size, written only by a resize (absent: its parent's) |
//!
//! Chains are capped at [`MAX_CHAIN`] nodes, as LVHD (`vhdutil.MAX_CHAIN_SIZE`)
//! and XCP-ng's qcow2 code (`MAX_QCOW_CHAIN_LENGTH`) cap them.
//!
//! Loading is all or nothing: a node whose parent is missing, a loop, or a
//! volume pointing at a missing node is an error naming the LV, never a
//! partial graph (`SR.ls` must never be partial). Parent links are the
//! truth; a stale depth tag (a merge interrupted before rewriting them) is
//! corrected in memory.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::ImageFormat;
use crate::lvm::Lv;

/// The longest chain, in nodes (leaf included).
pub const MAX_CHAIN: u32 = 30;
/// The tag of every node LV.
pub const NODE_TAG: &str = "nvmetcp_node";

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its LV.
    pub lv: String,
    /// Its format.
    pub format: ImageFormat,
    /// Its parent's LV.
    pub parent: Option<String>,
    /// Its depth (1 for a base).
    pub depth: u32,
}

/// The key of a qcow2 node's own virtual size, which only a resize writes.
pub const VIRTUAL_SIZE_KEY: &str = "nv";

/// The tag giving a qcow2 node the virtual size `bytes`.
#[must_use]
pub fn virtual_size_tag(bytes: u64) -> String {
    format!("{VIRTUAL_SIZE_KEY}={bytes}")
}

/// The virtual size of node `lv`, as a leaf there shows it: its own `nv=`
/// (a qcow2 node resized), else its parent's, else the size of the chain's
/// base, a raw LV (whose data is its whole LV, so it carries no `nv=`).
/// The one answer for every caller: a record's size, a new leaf's header,
/// a merge's target. 0 if `lvs` (the SR's LVs) lacks the base.
#[must_use]
pub fn virtual_size(graph: &Graph, lvs: &[Lv], lv: &str) -> u64 {
    let mut current = lv;
    loop {
        let found = lvs.iter().find(|l| l.name == current);
        let node = graph.node(current);
        if node.is_some_and(|n| n.format == ImageFormat::Qcow2) {
            if let Some(bytes) = found.and_then(|l| tag_value(&l.tags, VIRTUAL_SIZE_KEY)).and_then(|v| v.parse().ok()) {
                return bytes;
            }
        }
        match node.and_then(|n| n.parent.as_deref()) {
            Some(parent) => current = parent,
            None => return found.map_or(0, |l| l.size),
        }
    }
}

/// The tags that describe `node`.
#[must_use]
pub fn node_tags(node: &Node) -> Vec<String> {
    let mut tags = vec![NODE_TAG.to_owned(), format!("nf={}", node.format.qemu_name()), format!("nd={}", node.depth)];
    if let Some(parent) = &node.parent {
        tags.push(format!("np={parent}"));
    }
    tags
}

/// The tag saying a volume's data lives in node `lv`.
#[must_use]
pub fn volume_node_tag(lv: &str) -> String {
    format!("nn={lv}")
}

/// Why the graph is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A tag that does not parse.
    #[error("LV {lv} has an unreadable chain tag {tag:?}; the SR's metadata needs repair")]
    BadTag {
        /// The LV.
        lv: String,
        /// The tag.
        tag: String,
    },
    /// A reference to an LV that is not a node.
    #[error("LV {lv} refers to {missing}, which is not a node of this SR; the SR's metadata needs repair")]
    Dangling {
        /// The referring LV.
        lv: String,
        /// What it refers to.
        missing: String,
    },
    /// A chain that loops or is longer than any nvmetcp writes.
    #[error("node {lv} (depth tag {recorded}) is in a chain that loops or exceeds {MAX_CHAIN} nodes; the SR's metadata needs repair")]
    Depth {
        /// The node.
        lv: String,
        /// The `nd=` tag.
        recorded: u32,
        /// What the parents say (0 for a loop).
        actual: u32,
    },
    /// A snapshot or clone would make the chain too long.
    #[error(
        "volume {volume} is a chain of {depth} layers, the most nvmetcp allows is {MAX_CHAIN}; delete old snapshots of it (the collector then merges them) and try again"
    )]
    ChainTooLong {
        /// The volume.
        volume: String,
        /// Its chain's length.
        depth: u32,
    },
    /// A volume the graph does not know.
    #[error("volume {0} is not in this SR")]
    UnknownVolume(String),
}

/// Every node and every volume's node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    nodes: BTreeMap<String, Node>,
    /// volume LV → node LV.
    volumes: BTreeMap<String, String>,
}

fn tag_value<'t>(tags: &'t [String], key: &str) -> Option<&'t str> {
    tags.iter().find_map(|t| t.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

impl Graph {
    /// Reads the graph from the SR's LVs: `volume_tag` marks volumes.
    ///
    /// # Errors
    /// [`GraphError`] naming the first inconsistent LV.
    pub fn from_lvs(lvs: &[Lv], volume_tag: &str) -> Result<Self, GraphError> {
        let mut graph = Self::default();
        for lv in lvs {
            let is_node = lv.tags.iter().any(|t| t == NODE_TAG);
            let is_volume = lv.tags.iter().any(|t| t == volume_tag);
            let bad = |tag: &str| GraphError::BadTag { lv: lv.name.to_string(), tag: tag.to_owned() };
            if is_node {
                let format = match tag_value(&lv.tags, "nf") {
                    Some("raw") => ImageFormat::Raw,
                    Some("qcow2") => ImageFormat::Qcow2,
                    other => return Err(bad(&format!("nf={}", other.unwrap_or("")))),
                };
                let depth_text = tag_value(&lv.tags, "nd").unwrap_or("");
                let depth = depth_text.parse().map_err(|_| bad(&format!("nd={depth_text}")))?;
                let parent = tag_value(&lv.tags, "np").map(str::to_owned);
                if format == ImageFormat::Raw && parent.is_some() {
                    return Err(bad("np= on a raw node"));
                }
                if let Some(size) = tag_value(&lv.tags, VIRTUAL_SIZE_KEY) {
                    if format == ImageFormat::Raw || size.parse::<u64>().is_err() {
                        return Err(bad(&format!("{VIRTUAL_SIZE_KEY}={size}")));
                    }
                }
                graph.nodes.insert(lv.name.to_string(), Node { lv: lv.name.to_string(), format, parent, depth });
            }
            if is_volume {
                let node = match tag_value(&lv.tags, "nn") {
                    Some(node) => node.to_owned(),
                    None if is_node => lv.name.to_string(),
                    None => {
                        // A volume from before snapshots: its own LV is its raw data.
                        graph.nodes.insert(
                            lv.name.to_string(),
                            Node { lv: lv.name.to_string(), format: ImageFormat::Raw, parent: None, depth: 1 },
                        );
                        lv.name.to_string()
                    }
                };
                graph.volumes.insert(lv.name.to_string(), node);
            }
        }
        graph.validate()?;
        // The parent links are the truth; a depth tag left stale by a merge
        // interrupted before it rewrote them is corrected here (and on disk
        // by the collector's replay).
        let depths: Vec<(String, u32)> = graph.nodes.keys().map(|lv| (lv.clone(), graph.actual_depth(lv))).collect();
        for (lv, depth) in depths {
            if let Some(node) = graph.nodes.get_mut(&lv) {
                if node.depth != depth {
                    tracing::warn!(node = %lv, recorded = node.depth, depth, "stale depth tag");
                    node.depth = depth;
                }
            }
        }
        Ok(graph)
    }

    fn validate(&self) -> Result<(), GraphError> {
        for node in self.nodes.values() {
            if let Some(parent) = &node.parent {
                if !self.nodes.contains_key(parent) {
                    return Err(GraphError::Dangling { lv: node.lv.clone(), missing: parent.clone() });
                }
            }
            let actual = self.actual_depth(&node.lv);
            if actual == 0 {
                return Err(GraphError::Depth { lv: node.lv.clone(), recorded: node.depth, actual });
            }
        }
        for (volume, node) in &self.volumes {
            if !self.nodes.contains_key(node) {
                return Err(GraphError::Dangling { lv: volume.clone(), missing: node.clone() });
            }
        }
        Ok(())
    }

    /// Chain length from `lv` down to its base, 0 on a loop.
    fn actual_depth(&self, lv: &str) -> u32 {
        let mut depth = 0;
        let mut current = Some(lv);
        while let Some(name) = current {
            depth += 1;
            if depth > MAX_CHAIN + 1 {
                return 0;
            }
            current = self.nodes.get(name).and_then(|n| n.parent.as_deref());
        }
        depth
    }

    /// The node `lv`.
    #[must_use]
    pub fn node(&self, lv: &str) -> Option<&Node> {
        self.nodes.get(lv)
    }

    /// The node holding `volume`'s data.
    #[must_use]
    pub fn node_of(&self, volume: &str) -> Option<&Node> {
        self.volumes.get(volume).and_then(|n| self.nodes.get(n))
    }

    /// `volume`'s chain, leaf first.
    ///
    /// # Errors
    /// [`GraphError::UnknownVolume`].
    pub fn chain(&self, volume: &str) -> Result<Vec<&Node>, GraphError> {
        let mut node = self.node_of(volume).ok_or_else(|| GraphError::UnknownVolume(volume.to_owned()))?;
        let mut chain = vec![node];
        while let Some(parent) = node.parent.as_deref().and_then(|p| self.nodes.get(p)) {
            chain.push(parent);
            node = parent;
        }
        Ok(chain)
    }

    /// Refuses a snapshot or clone that would make `volume`'s chain longer
    /// than [`MAX_CHAIN`]. Returns the depth of the new leaf.
    ///
    /// # Errors
    /// [`GraphError::ChainTooLong`] or [`GraphError::UnknownVolume`].
    pub fn depth_after_snapshot(&self, volume: &str) -> Result<u32, GraphError> {
        let depth = self.node_of(volume).ok_or_else(|| GraphError::UnknownVolume(volume.to_owned()))?.depth;
        if depth + 1 > MAX_CHAIN {
            return Err(GraphError::ChainTooLong { volume: volume.to_owned(), depth });
        }
        Ok(depth + 1)
    }

    /// The nodes whose parent is `lv`.
    #[must_use]
    pub fn children(&self, lv: &str) -> Vec<&Node> {
        self.nodes.values().filter(|n| n.parent.as_deref() == Some(lv)).collect()
    }

    /// Whether something besides `volume` builds on node `lv`: a child
    /// node, or another volume referring to it (a snapshot's frozen node,
    /// the base of a clone). Such a node is never written.
    #[must_use]
    pub fn built_on_by_others(&self, lv: &str, volume: &str) -> bool {
        !self.children(lv).is_empty() || self.volumes.iter().any(|(v, n)| n == lv && v != volume)
    }

    fn referenced(&self) -> BTreeSet<&str> {
        self.volumes.values().map(String::as_str).collect()
    }

    /// What the collector may do now, in order: remove unreferenced leaves,
    /// then merge each unreferenced node that has exactly one child with
    /// that child, the shallowest first. Nodes with two or more children (a
    /// clone's base) stay. No node takes part in two steps of one plan: the
    /// collector runs a plan, reloads the graph, and plans again until the
    /// plan is empty.
    #[must_use]
    pub fn collect_plan(&self) -> Vec<Collect> {
        let referenced = self.referenced();
        let mut unreferenced: Vec<&Node> =
            self.nodes.values().filter(|n| !referenced.contains(n.lv.as_str())).collect();
        unreferenced.sort_by_key(|n| n.depth);
        let mut plan: Vec<Collect> = unreferenced
            .iter()
            .filter(|n| self.children(&n.lv).is_empty())
            .map(|n| Collect::Remove { lv: n.lv.clone() })
            .collect();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for node in unreferenced {
            let [child] = self.children(&node.lv)[..] else { continue };
            let grandchildren: Vec<String> = self.children(&child.lv).iter().map(|g| g.lv.clone()).collect();
            let involved = [&node.lv, &child.lv].into_iter().chain(&grandchildren);
            if involved.clone().any(|lv| touched.contains(lv)) {
                continue;
            }
            touched.extend(involved.cloned());
            plan.push(Collect::Merge {
                child: child.lv.clone(),
                into: node.lv.clone(),
                grandchildren,
                volumes: self.volumes.iter().filter(|(_, n)| **n == child.lv).map(|(v, _)| v.clone()).collect(),
            });
        }
        plan
    }
}

/// One step of the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collect {
    /// An unreferenced node without children: deactivate it everywhere, remove it.
    Remove {
        /// The node.
        lv: String,
    },
    /// `into` is unreferenced and `child` is its only child: write `child`'s
    /// data into `into` (qemu-img commit, or the owning engine's commit
    /// when the chain is open), relink `grandchildren` to `into`, point
    /// `volumes` (those referring to `child`) at `into`, remove `child`.
    /// Nobody's data changes: `into` was visible only through `child`.
    Merge {
        /// The node merged away.
        child: String,
        /// The node that takes its place.
        into: String,
        /// `child`'s children, relinked to `into`.
        grandchildren: Vec<String>,
        /// Volumes referring to `child`, pointed at `into`.
        volumes: Vec<String>,
    },
}

#[cfg(test)]
mod tests;
