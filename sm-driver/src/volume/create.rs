//! `Volume.create` (master): one read of the VG (writer guard, budget),
//! then one `lvcreate` with all tags; the size is rounded up to whole
//! extents and reported as allocated.

use crate::context::Context;
use crate::error::{CallError, CallResult, VolumeError};
use crate::ids::VolumeKey;
use crate::lvm::Lv;
use crate::request::VolumeCreate;
use crate::smapi::types::Volume;
use crate::sr_access::{attached, lvm_for_change, require_master};

use super::budget;
use super::meta::{self, VolumeMeta};
use super::record::{existing, record};

/// `Volume.create`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn create(ctx: &Context, request: &VolumeCreate) -> CallResult<Volume> {
    let VolumeCreate { sr, name, description, size, sharable } = request.clone();
    let size = size.bytes();
    {
        require_master(ctx, "Volume.create")?;
        let (state, _lock) = attached(ctx, &sr)?;
        let (lvm, lvs) = lvm_for_change(ctx, &state)?;
        let uuid = ctx.host.read_trimmed("/proc/sys/kernel/random/uuid")?;
        let key = VolumeKey::for_uuid(&uuid).map_err(|_| CallError::BadUuid(uuid.clone()))?;
        let lv = key.lv();
        let tags = meta::to_tags(&VolumeMeta { uuid, name, description, sharable, keys: Default::default() })
            .map_err(VolumeError::from)?;
        budget::check(&lv, &[], &tags, &lvs)?;
        lvm.lvcreate(&state.vg, &lv, size, &tags)?;
        tracing::info!(volume = %lv, size, "volume created");
        // Two LVM calls per create, the checked read and the lvcreate: the
        // size LVM chose follows from the extent size (state from older
        // versions lacks it: read it back).
        let created = match crate::lvm::allocated_size(size, state.extent_size) {
            Some(allocated) => Lv { name: lv, vg: state.vg.clone(), size: allocated, tags, active: false },
            None => existing(&lvm, &state, &key)?,
        };
        Ok(record(&state, &created))
    }
}
