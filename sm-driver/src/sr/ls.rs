//! `SR.ls` (the master's PBD): every volume, or an error — never a partial
//! list, because xapi deletes the VDIs missing from it.

use crate::context::Context;
use crate::error::CallResult;
use crate::request::SrLs;
use crate::smapi::types::Volume;
use crate::sr_access::{attached, lvm_for};

/// `SR.ls`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn ls(ctx: &Context, request: &SrLs) -> CallResult<Vec<Volume>> {
    let (state, _lock) = attached(ctx, &request.sr)?;
    let lvm = lvm_for(ctx, &state, false)?;
    Ok(crate::volume::list(&lvm, &state)?)
}
