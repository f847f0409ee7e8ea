//! `Volume.create` (master): one `lvcreate` with all tags; the size is
//! rounded up to whole extents and reported as allocated.

use serde_json::Value;

use crate::context::Context;
use crate::error::{Failure, VolumeError};
use crate::lvm::Lv;
use crate::smapi::params::Params;
use crate::sr_access::{attached, lvm_for, require_master, sr_call};

use super::budget;
use super::meta::{self, VolumeMeta};
use super::record::{existing, record};

/// `Volume.create`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn create(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let name: String = params.get("name")?;
    let description: String = params.get("description")?;
    let sharable: bool = params.get("sharable")?;
    let size = size_param(params, "size")?;
    sr_call(params, || {
        require_master(ctx, "Volume.create")?;
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, true)?;
        let uuid = ctx.host.read_trimmed("/proc/sys/kernel/random/uuid")?;
        let lv = format!("vol-{uuid}");
        let tags = meta::to_tags(&VolumeMeta { uuid, name, description, sharable, keys: Default::default() })
            .map_err(VolumeError::from)?;
        budget::check(&lv, &[], &tags, &lvm.lvs(&state.vg)?)?;
        lvm.lvcreate(&state.vg, &lv, size, &tags)?;
        tracing::info!(volume = %lv, size, "volume created");
        // One LVM call per create: the size LVM chose follows from the
        // extent size (state from older versions lacks it: read it back).
        let created = match crate::lvm::allocated_size(size, state.extent_size) {
            Some(allocated) => Lv { name: lv, vg: state.vg.clone(), size: allocated, tags, active: false },
            None => existing(&lvm, &state, &lv)?,
        };
        Ok(record(&state, &created))
    })
}

/// A size parameter, which must be positive.
pub(super) fn size_param(params: &Params, name: &'static str) -> Result<u64, Failure> {
    let size: i64 = params.get(name)?;
    u64::try_from(size).ok().filter(|s| *s > 0).ok_or_else(|| VolumeError::BadSize(size).into())
}
