//! `Volume.stat` (any host): one `lvs --select` of that LV (and, for a
//! layered volume, the VG's LVs for its chain).

use crate::context::Context;
use crate::error::CallResult;
use crate::request::VolumeStat;
use crate::smapi::types::Volume;
use crate::sr_access::{attached, lvm_for};

use super::record::{existing, record};

/// `Volume.stat`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn stat(ctx: &Context, request: &VolumeStat) -> CallResult<Volume> {
    let VolumeStat { sr, key } = request;
    {
        let (state, _lock) = attached(ctx, sr)?;
        let lvm = lvm_for(ctx, &state, false)?;
        let lv = existing(&lvm, &state, key)?;
        if !crate::snapshot::calls::is_layered(&lv) {
            return Ok(record(&state, &lv));
        }
        let lvs = lvm.lvs(&state.vg)?;
        Ok(crate::snapshot::calls::ChainView::load(&lvs, super::meta::VOLUME_TAG)?.describe(record(&state, &lv), &lv))
    }
}
