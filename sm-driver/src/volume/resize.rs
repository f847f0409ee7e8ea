//! `Volume.resize` (master): one `lvextend`; grows only, and only while the
//! volume is not active (online growth is not offered until proven with
//! guests).

use crate::context::Context;
use crate::error::{CallResult, VolumeError};
use crate::request::VolumeResize;
use crate::sr_access::{attached, lvm_for, require_master};

use super::record::{existing, refuse_in_use};

/// `Volume.resize`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn resize(ctx: &Context, request: &VolumeResize) -> CallResult<()> {
    let VolumeResize { sr, key, new_size } = request;
    let new_size = new_size.bytes();
    {
        require_master(ctx, "Volume.resize")?;
        let (state, _lock) = attached(ctx, sr)?;
        let lvm = lvm_for(ctx, &state, true)?;
        let lv = existing(&lvm, &state, key)?;
        if new_size < lv.size {
            return Err(VolumeError::Shrink { key: key.to_string(), current: lv.size, requested: new_size }.into());
        }
        if new_size == lv.size {
            return Ok(());
        }
        crate::snapshot::calls::refuse_layered(&lvm, &state.vg, super::meta::VOLUME_TAG, &lv, "resizing it")?;
        refuse_in_use(ctx, &state, &lv, key.to_string())?;
        lvm.lvextend(&state.vg, &lv.name, new_size)?;
        Ok(())
    }
}
