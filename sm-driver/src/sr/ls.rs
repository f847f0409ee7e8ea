//! `SR.ls` (the master's PBD): every volume, or an error — never a partial
//! list, because xapi deletes the VDIs missing from it.

use serde_json::Value;

use crate::context::Context;
use crate::error::Failure;
use crate::smapi::params::Params;
use crate::sr_access::{attached, lvm_for, sr_call};

/// `SR.ls`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn ls(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    sr_call(params, || {
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, false)?;
        Ok(crate::volume::list(&lvm, &state)?)
    })
}
