//! A layered volume grown at rest: its qcow2 leaf's LV extended to hold a
//! fully allocated image of the new size, then the leaf's `nv=` tag (the
//! commit point), then the image's header grown. The record is never
//! smaller than the header: an engine sizes the disk by the header, so a
//! VM never sees, nor writes, past the size a merge grows its target to
//! ([`super::super::graph::virtual_size`]). A call killed before the tag
//! leaves the old size on record and the leaf's LV merely larger than it
//! needs; one killed after it leaves the header behind the record (the VM
//! sees the old size, and nothing is lost), and a retried resize to that
//! size finishes the header.

use crate::engine::ImageFormat;
use crate::lvm::{Lv, Vg};

use super::super::graph::{virtual_size, virtual_size_tag, Graph, GraphError, VIRTUAL_SIZE_KEY};
use super::{Chains, OpError};

impl Chains<'_> {
    /// Grows `volume`, a layered volume no engine has open anywhere, to
    /// `new_size` bytes rounded up to whole extents. `vg` and `lvs` are the
    /// SR's VG and LVs as the caller has just read them. Returns the
    /// virtual size it then has (the old one if that was not smaller: then
    /// only a header an interrupted resize left behind is grown).
    ///
    /// # Errors
    /// [`OpError::NotResizable`] for a volume whose data is not a qcow2 leaf
    /// of its own, [`OpError::NoSpace`], or the tools' errors.
    pub fn grow_at_rest(&self, vg: Option<&Vg>, lvs: &[Lv], volume: &str, new_size: u64) -> Result<u64, OpError> {
        let lvs: Vec<Lv> = lvs.iter().filter(|l| l.vg == *self.vg).cloned().collect();
        let graph = Graph::from_lvs(&lvs, self.volume_tag)?;
        let leaf = graph.node_of(volume).ok_or_else(|| GraphError::UnknownVolume(volume.to_owned()))?.clone();
        let resizable = leaf.format == ImageFormat::Qcow2 && !graph.built_on_by_others(&leaf.lv, volume);
        let (free, extent) = vg.map_or((0, 4 << 20), |v| (v.free, v.extent_size));
        let current = virtual_size(&graph, &lvs, &leaf.lv);
        let new_size = new_size.div_ceil(extent) * extent;
        if new_size <= current {
            if resizable && super::refuse_unfinished(&lvs, &graph, volume).is_ok() {
                self.finish_header(&lvs, &graph, &leaf.lv, current)?;
            }
            return Ok(current);
        }
        super::refuse_unfinished(&lvs, &graph, volume)?;
        if !resizable {
            return Err(OpError::NotResizable(volume.to_owned()));
        }
        let full = self.qemu_img.leaf_bytes(new_size)?;
        let leaf_lv =
            lvs.iter().find(|l| l.name == leaf.lv).ok_or_else(|| GraphError::UnknownVolume(leaf.lv.clone()))?;
        if leaf_lv.size < full {
            let needed = full.div_ceil(extent) * extent - leaf_lv.size;
            if needed > free {
                return Err(OpError::NoSpace { free, needed });
            }
            self.lvm.lvextend(self.vg, &leaf_lv.name, full)?;
            self.faults.reached("resize-extended");
        }
        // qemu-img opens the leaf with its backing chain, and writes the leaf.
        self.activate_chain(&lvs, &graph, &leaf.lv, &[&leaf.lv])?;
        self.set_virtual_size(leaf_lv, new_size)?;
        self.faults.reached("resize-tagged");
        self.qemu_img.resize(&self.qcow2(&leaf.lv)?, new_size)?;
        self.faults.reached("resized");
        tracing::info!(volume, leaf = %leaf.lv, from = current, to = new_size, "layered volume grown at rest");
        Ok(new_size)
    }

    /// Grows the header of `leaf` (`lvs`, `graph` as just read) to
    /// `recorded`, its virtual size on record, if a resize killed or failed
    /// after its commit point left it smaller.
    fn finish_header(&self, lvs: &[Lv], graph: &Graph, leaf: &str, recorded: u64) -> Result<(), OpError> {
        self.activate_chain(lvs, graph, leaf, &[leaf])?;
        let image = self.qcow2(leaf)?;
        let header = self.qemu_img.virtual_size(&image)?;
        if header < recorded {
            self.qemu_img.resize(&image, recorded)?;
            tracing::warn!(
                leaf,
                from = header,
                to = recorded,
                "an interrupted resize finished: header grown to the record"
            );
        }
        Ok(())
    }

    /// Tags `lv`, a qcow2 node as last read, with the virtual size `bytes`
    /// in one `lvchange` (its old `nv=`, if any, replaced).
    pub(super) fn set_virtual_size(&self, lv: &Lv, bytes: u64) -> Result<(), OpError> {
        let tag = virtual_size_tag(bytes);
        let old: Vec<String> = lv
            .tags
            .iter()
            .filter(|t| t.strip_prefix(VIRTUAL_SIZE_KEY).is_some_and(|r| r.starts_with('=')) && **t != tag)
            .cloned()
            .collect();
        self.lvm.lv_retag(self.vg, &lv.name, &old, &[tag])?;
        Ok(())
    }
}
