//! The SR.* handlers, one file per method (or pair of methods), on a shared
//! LVM volume group on one NVMe-oF namespace.
//!
//! * `create.rs` (pool master) makes the PV and VG; `probe.rs` lists what the
//!   endpoints offer; `attach.rs` (every host) connects and records the
//!   attachment; `stat.rs`, `ls.rs` and `label.rs` read and rename;
//!   `detach.rs` and `destroy.rs` take it down.
//! * [`vg`] is the VG tag scheme, `inspect.rs` what a namespace holds,
//!   `device_nodes.rs` the dead `/dev/<vg>` links a killed LVM command leaves.
//!
//! What they share with the Volume and Datapath handlers (the call wrapper,
//! the attached SR behind a handle, LVM while a path is live, the master
//! check) is [`crate::sr_access`]; below them are the attachment state
//! ([`crate::sr_state`]), the paths ([`crate::sr_paths`]) and the pool role
//! ([`crate::pool_role`]). Only the pool master writes LVM metadata
//! (`metadata_read_only` elsewhere).

mod attach;
mod create;
mod destroy;
mod detach;
mod device_nodes;
mod inspect;
mod label;
mod ls;
mod probe;
mod stat;
pub mod vg;

pub use self::attach::attach;
pub use self::create::create;
pub use self::destroy::destroy;
pub use self::detach::detach;
pub use self::label::{set_description, set_name};
pub use self::ls::ls;
pub use self::probe::probe;
pub use self::stat::stat;
