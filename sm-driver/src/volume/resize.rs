//! `Volume.resize` (master): one `lvextend`; grows only, and only while the
//! volume is not active (online growth is not offered until proven with
//! guests).

use serde_json::Value;

use crate::context::Context;
use crate::error::{Failure, VolumeError};
use crate::smapi::params::Params;
use crate::sr_access::{attached, lvm_for, require_master, sr_call};

use super::create::size_param;
use super::record::{existing, refuse_in_use};

/// `Volume.resize`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn resize(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let key: String = params.get("key")?;
    let new_size = size_param(params, "new_size")?;
    sr_call(params, || {
        require_master(ctx, "Volume.resize")?;
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, true)?;
        let lv = existing(&lvm, &state, &key)?;
        if new_size < lv.size {
            return Err(VolumeError::Shrink { key, current: lv.size, requested: new_size }.into());
        }
        if new_size == lv.size {
            return Ok(Value::Null);
        }
        crate::snapshot::calls::refuse_layered(&lvm, &state.vg, super::meta::VOLUME_TAG, &lv, "resizing it")?;
        refuse_in_use(ctx, &state, &lv, key)?;
        lvm.lvextend(&state.vg, &lv.name, new_size)?;
        Ok(Value::Null)
    })
}
