//! `Volume.stat` (any host): one `lvs --select` of that LV (and, for a
//! layered volume, the VG's LVs for its chain).

use serde_json::Value;

use crate::context::Context;
use crate::error::Failure;
use crate::smapi::params::Params;
use crate::sr_access::{attached, lvm_for, sr_call};

use super::record::{existing, record};

/// `Volume.stat`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn stat(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let key: String = params.get("key")?;
    sr_call(params, || {
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, false)?;
        let lv = existing(&lvm, &state, &key)?;
        if !crate::snapshot::calls::is_layered(&lv) {
            return Ok(record(&state, &lv));
        }
        let lvs = lvm.lvs(&state.vg)?;
        Ok(crate::snapshot::calls::ChainView::load(&lvs, super::meta::VOLUME_TAG)?.describe(record(&state, &lv), &lv))
    })
}
