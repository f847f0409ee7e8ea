//! The Datapath.* handlers: hand a volume's LV to blkback on the host that
//! runs the VM, and take it back.
//!
//! The datapath plugin gets only the volume's URI, `nvmetcp://<sr uuid>/<lv>`;
//! xapi guarantees the SR is attached on this host first, so the attachment
//! state ([`crate::sr_state`]) says where the namespace is. `attach`
//! activates the LV on this host (an LV already active is refreshed instead,
//! picking up what the master changed, such as a resize) and returns
//! `XenDisk {backend_type: "vbd"}` plus the `BlockDevice` path; `activate`
//! refreshes it (the migration handover point); `deactivate` deactivates; `detach` makes sure of it and never
//! fails on a volume that is already gone. On the master, a disk whose chain
//! has an interrupted online merge journalled is closed only once replay has
//! finished it (`NVMETCP_MERGE_UNFINISHED` otherwise; issue 18). Every call is idempotent, and
//! `domain` (possibly empty during teardown) is not relied upon. Activation
//! writes no LVM metadata, so it works on pool members.
//!
//! Deactivating must work while the array is unreachable, or a VM could not
//! be shut down during an outage: LVM would block reading the device, so when
//! no path is live the volume's device-mapper mapping is removed directly
//! (deactivation changes no LVM metadata, so nothing else is needed).

//!
//! `attach.rs` holds `attach` and `activate`, `deactivate.rs` holds
//! `deactivate` and `detach`; the plumbing shared with the SR handlers is
//! [`crate::sr_access`].

mod attach;
mod deactivate;

pub use self::attach::{activate, attach};
pub use self::deactivate::{deactivate, detach};
