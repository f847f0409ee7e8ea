//! `SR.detach` (every host, each `PBD.unplug`): deactivates the SR's LVs on
//! this host and releases its paths (only the ones nvmetcp connected and
//! nobody else uses); idempotent.

use crate::cmd::{Command, Program};
use crate::context::Context;
use crate::error::{CallError, CallResult};
use crate::initiator::{userspace, InitiatorKind};
use crate::pool_mappings::mappings_of_vg;
use crate::request::SrDetach;
use crate::sr_access::lvm_for;
use crate::sr_paths;
use crate::sr_state::{self, SrLock, SR_LOCK_TIMEOUT};

/// `SR.detach`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn detach(ctx: &Context, request: &SrDetach) -> CallResult<()> {
    let uuid = request.sr.uuid().to_string();
    let _lock = SrLock::acquire(&ctx.host, &uuid, SR_LOCK_TIMEOUT)?;
    let state = sr_state::load(&ctx.host, &uuid).ok();
    if let Some(state) = &state {
        match lvm_for(ctx, state, false) {
            Ok(lvm) => lvm.deactivate(&state.vg)?,
            // LVM would block on the unreachable device: remove the
            // mappings directly, so no volume stays mapped on a host that
            // no longer has the SR (the master would not know to ask).
            Err(error) => {
                for mapping in mappings_of_vg(&ctx.host, &state.vg) {
                    tracing::warn!(%error, %mapping, "no live path; removing the volume's mapping directly");
                    ctx.runner
                        .run(&Command::new(Program::Dmsetup).args(["remove", &mapping]))
                        .map_err(CallError::Tool)?;
                }
            }
        }
    }
    let initiator = state.map_or_else(|| InitiatorKind::Kernel, |s| s.initiator);
    sr_paths::release(ctx, initiator, &uuid, &uuid)?;
    if initiator == InitiatorKind::Kernel && userspace::has_run(&ctx.host, &uuid) {
        // No state (a detach retried after a crash): the daemon may be left.
        sr_paths::release(ctx, InitiatorKind::Userspace, &uuid, &uuid)?;
    }
    sr_state::remove(&ctx.host, &uuid)?;
    tracing::info!(sr = %uuid, %initiator, "SR detached");
    Ok(())
}
