//! `Volume.destroy` (master): `lvremove`, refused while the volume is active
//! on this host; a volume already gone is success. A layered volume goes
//! through the snapshot graph ([`crate::snapshot::calls::destroy`]): only
//! its record goes at once, its data when nothing else needs it.

use serde_json::Value;

use crate::context::Context;
use crate::error::Failure;
use crate::smapi::params::Params;
use crate::sr_access::{attached, lvm_for, require_master, sr_call};

use super::meta::VOLUME_TAG;
use super::record::{find, refuse_in_use};

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
        refuse_in_use(ctx, &state, &lv, key.clone())?;
        if crate::snapshot::calls::is_layered(&lv) {
            let sr = crate::snapshot::calls::Sr {
                runner: ctx.runner.as_ref(),
                host: &ctx.host,
                lvm: &lvm,
                state: &state,
                volume_tag: VOLUME_TAG,
            };
            crate::snapshot::calls::destroy(&sr, &lv)?;
        } else {
            lvm.lvremove(&state.vg, &lv.name)?;
        }
        tracing::info!(volume = %key, "volume destroyed");
        Ok(Value::Null)
    })
}
