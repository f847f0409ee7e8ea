//! The snapshot model on LVM: qcow2 layers in LVs, raw LVs as their bases.
//!
//! The room's parts, each usable and tested on its own:
//!
//! * [`graph`]: which LV is a node, its format, parent and depth, which
//!   node each volume refers to (all in LV tags), the chain cap, and the
//!   collector's plan (unreferenced leaves removed, an unreferenced node
//!   with one child merged with it);
//! * [`journal`]: the entry every multi-step operation carries in the tags
//!   of the LV it creates or merges away, and the replay decision (undo
//!   before the commit point, finish after it, wait when a host that may be
//!   writing to the new leaf cannot say);
//! * [`qemu_img`]: the qcow2 work done from the master on images no host has
//!   open (create a layer with `-b parent -F raw|qcow2`, measure a leaf,
//!   find a layer's end, commit, relink);
//! * [`ops`]: the operations on real LVM built from those: snapshot and
//!   clone (of a volume at rest; a snapshot of a running one through a
//!   [`ops::Running`] door to its engine, pause first, then swap), destroy
//!   that removes only the volume's record while another volume or child
//!   needs its data, the collector, and journal replay.
//!
//! * [`calls`]: the door for the SMAPI handlers: snapshot and clone of a
//!   volume at rest, destroy with the collector after it, replay on
//!   `SR.attach`, the chain facts of a volume's record, and the refusals for
//!   layered volumes.
//!
//! * [`served`]: a layered volume served by this host's engine
//!   (`Datapath.attach`, `vbd3`), and the door a running snapshot swaps
//!   through.
//!
//! * [`pool`]: the master's end of the XAPI host plugin calls to the host
//!   whose engine serves a volume (which volumes it serves, the running
//!   snapshot's swap, deactivation before `lvremove`); the serving host's
//!   end is [`crate::chain_member`].
//!
//! A running chain is changed only through [`crate::engine`], on the host
//! that has it open: on another host, through its host plugin.

pub mod calls;
#[cfg(test)]
pub(crate) mod fake_vg;
pub mod graph;
pub mod journal;
pub mod ops;
pub mod pool;
pub mod qemu_img;
pub mod served;
