//! The Volume.* handlers, one file per method (the four tag edits share
//! `retag.rs`): each volume is a thick LV `vol-<uuid>` in the SR's VG, with
//! its metadata in its own tags ([`meta`]).
//!
//! Every mutating call runs on the pool master under the SR lock and is one
//! LVM metadata commit, so a killed call leaves the old or the new state.
//! [`uri`] holds the volume's key and URI; `record.rs` finds the LVs and
//! turns them into SMAPI records. The plumbing shared with the SR handlers is
//! [`crate::sr_access`].

pub mod budget;
mod create;
mod destroy;
pub mod meta;
mod record;
mod resize;
mod retag;
mod snapshot;
mod stat;
pub mod uri;

pub use self::create::create;
pub use self::destroy::destroy;
pub use self::record::list;
pub use self::resize::resize;
pub use self::retag::{set, set_description, set_name, unset};
pub use self::snapshot::{clone, snapshot};
pub use self::stat::stat;

mod concurrency;
#[cfg(test)]
mod tests;
