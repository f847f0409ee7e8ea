//! `Volume.destroy` (master): `lvremove`, refused while the volume is active
//! on this host; a volume already gone is success.

use serde_json::Value;

use crate::context::Context;
use crate::error::{Failure, VolumeError};
use crate::pool_mappings::hosts_mapping;
use crate::smapi::params::Params;
use crate::sr_access::{attached, lvm_for, require_master, sr_call};

use super::record::find;

/// `Volume.destroy`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn destroy(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let key: String = params.get("key")?;
    sr_call(params, || {
        require_master(ctx, "Volume.destroy")?;
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, true)?;
        let Some(lv) = find(&lvm, &state, &key)? else {
            tracing::info!(volume = %key, "already gone");
            return Ok(Value::Null);
        };
        if lv.active {
            return Err(VolumeError::Active { key }.into());
        }
        let elsewhere = hosts_mapping(&ctx.host, &state.vg, &lv.name)?;
        if !elsewhere.is_empty() {
            return Err(VolumeError::ActiveElsewhere { key, hosts: elsewhere }.into());
        }
        lvm.lvremove(&state.vg, &lv.name)?;
        tracing::info!(volume = %key, "volume destroyed");
        Ok(Value::Null)
    })
}
