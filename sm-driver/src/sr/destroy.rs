//! `SR.destroy` (master, SR attached): refuses while volumes exist, removes
//! VG and PV, releases the paths; idempotent.

use serde_json::Value;

use crate::context::Context;
use crate::error::{CallError, Failure};
use crate::nvme::users::release;
use crate::smapi::params::Params;
use crate::sr_access::{attached, lvm_for, our_vg, require_master, sr_call};
use crate::sr_state::{self, StateError};

/// `SR.destroy`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn destroy(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    sr_call(params, || {
        require_master(ctx, "SR.destroy")?;
        let (state, _lock) = match attached(ctx, params) {
            Ok(found) => found,
            // Destroyed already (xapi retried): nothing left to do.
            Err(CallError::State(StateError::NotAttached(uuid))) => {
                tracing::info!(sr = %uuid, "SR.destroy: not attached here; nothing to destroy");
                return Ok(Value::Null);
            }
            Err(error) => return Err(error.into()),
        };
        let lvm = lvm_for(ctx, &state, true)?;
        if our_vg(&lvm, &state)?.is_some() {
            let volumes = lvm.lvs(&state.vg)?;
            if !volumes.is_empty() {
                return Err(CallError::NotEmpty { sr_uuid: state.sr_uuid.clone(), count: volumes.len() }.into());
            }
            lvm.deactivate(&state.vg)?;
            lvm.remove_vg_and_pv(&state.vg)?;
        }
        release(&ctx.host, &state.sr_uuid)?;
        sr_state::remove(&ctx.host, &state.sr_uuid)?;
        tracing::info!(sr = %state.sr_uuid, "SR destroyed");
        Ok(Value::Null)
    })
}
