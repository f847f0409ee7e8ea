//! `Volume.destroy` (master): `lvremove`, refused while the volume is active
//! on this host; a volume already gone is success. A layered volume goes
//! through the snapshot graph ([`crate::snapshot::calls::destroy`]): only
//! its record goes at once, its data when nothing else needs it.

use crate::context::Context;
use crate::error::CallResult;
use crate::request::VolumeDestroy;
use crate::sr_access::{attached, lvm_for_change, require_master};

use super::meta::VOLUME_TAG;
use super::record::{find_in, refuse_in_use};

/// `Volume.destroy`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn destroy(ctx: &Context, request: &VolumeDestroy) -> CallResult<()> {
    let VolumeDestroy { sr, key } = request;
    {
        require_master(ctx, "Volume.destroy")?;
        let (state, _lock) = attached(ctx, sr)?;
        // One read of the VG: the writer guard and the volume.
        let (lvm, lvs) = lvm_for_change(ctx, &state)?;
        let Some(lv) = find_in(&lvs, key) else {
            tracing::info!(volume = %key, "already gone");
            return Ok(());
        };
        refuse_in_use(ctx, &state, &lv, key.to_string())?;
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
        Ok(())
    }
}
