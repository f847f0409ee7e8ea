//! `Datapath.deactivate` and `Datapath.detach`: the volume deactivated on
//! this host, also with no live path (the mapping removed directly).

use crate::cmd::{Command, Program};
use crate::context::Context;
use crate::error::{CallError, CallResult};
use crate::ids::VolumeUri;
use crate::lvm::Lv;
use crate::pool_mappings::{dm_name, mapping_active};
use crate::pool_role;
use crate::request::{DatapathDeactivate, DatapathDetach};
use crate::snapshot::calls::{finish_before_close, refuse_close_after_pivot, Sr};
use crate::snapshot::ops::online_merges_of;
use crate::snapshot::served::MergeHere;
use crate::sr_access::lvm_for;
use crate::sr_state::{self, SrLock, SrState, SR_LOCK_TIMEOUT};

/// Deactivates the volume on this host: a no-op when it is not active here,
/// LVM while a path is live, the mapping removed directly when none is.
fn deactivate_volume(ctx: &Context, uri: &VolumeUri) -> CallResult<()> {
    let (sr_uuid, lv) = (uri.sr.as_str(), uri.key.lv());
    let _lock = SrLock::acquire(&ctx.host, sr_uuid, SR_LOCK_TIMEOUT)?;
    let state = match sr_state::load(&ctx.host, sr_uuid) {
        Ok(state) => state,
        // The SR is not attached here, so nothing of it is active either.
        Err(sr_state::StateError::NotAttached(_)) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    if crate::snapshot::served::open_here(&ctx.host, sr_uuid, &lv).is_some() {
        // A layered volume this host's engine serves: close it, then
        // deactivate its chain's LVs no other open chain uses.
        let volume_tag = crate::volume::meta::VOLUME_TAG;
        let lvm = match lvm_for(ctx, &state, false) {
            Ok(lvm) => Some(lvm),
            Err(CallError::NoPath { why, .. }) => {
                tracing::warn!(volume = %lv, paths = %why, "no path is live; the chain's LVs stay active");
                None
            }
            Err(error) => return Err(error.into()),
        };
        // Read before the disk is closed (closing changes no LV): the
        // journal, and the chain to deactivate after.
        let mut lvs = lvm.as_ref().map(|lvm| lvm.lvs(&state.vg)).transpose()?;
        if let Some(read) = &lvs {
            if finish_merges(ctx, &state, &lv, read)? {
                // The VG changed: the chain is read again once closed.
                lvs = None;
            }
        }
        crate::snapshot::served::detach(ctx.runner.as_ref(), &ctx.host, lvm.as_ref(), lvs, &state, volume_tag, &lv)?;
        return Ok(());
    }
    let mapping = dm_name(&state.vg, &lv);
    if !mapping_active(&ctx.host, &mapping) {
        return Ok(());
    }
    match lvm_for(ctx, &state, false) {
        Ok(lvm) => lvm.lv_activate(&state.vg, &lv, false)?,
        Err(CallError::NoPath { why, .. }) => {
            tracing::warn!(volume = %lv, paths = %why, "no path is live; removing the volume's mapping directly");
            ctx.runner.run(&Command::new(Program::Dmsetup).args(["remove", &mapping])).map_err(CallError::Tool)?;
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(volume = %lv, "volume deactivated");
    Ok(())
}

/// Before this host's engine closes `lv`'s disk, on the master: the online
/// merges journalled for it are finished by replay, which asks the engine
/// while it still has the disk open (once closed, nobody can say whether a
/// merged leaf's last writes went to its parent; issue 18). Refused with
/// [`crate::snapshot::calls::ChainCallError::MergeUnfinished`] if replay
/// cannot decide. Returns whether the VG changed. On a member (the
/// master's collector merges there too, through `chain_commit`, but a
/// member writes no metadata) the detach is refused while its engine writes
/// the merge's `into` node, until the master has recorded it
/// ([`crate::snapshot::calls::refuse_close_after_pivot`]). With no live
/// path the journal cannot be read, and the disk is closed as before.
fn finish_merges(ctx: &Context, state: &SrState, lv: &str, lvs: &[Lv]) -> CallResult<bool> {
    let entries = online_merges_of(lvs, lv);
    if entries.is_empty() {
        return Ok(false);
    }
    if !pool_role::is_master(&ctx.host) {
        let here = MergeHere { runner: ctx.runner.as_ref(), host: &ctx.host, sr_uuid: &state.sr_uuid };
        refuse_close_after_pivot(&here, &state.vg, lv, &entries)?;
        return Ok(false);
    }
    let lvm = lvm_for(ctx, state, true)?;
    let volume_tag = crate::volume::meta::VOLUME_TAG;
    let sr = Sr { runner: ctx.runner.as_ref(), host: &ctx.host, lvm: &lvm, state, volume_tag };
    // This host's engine answers for the disk; every host's say which
    // other chains are open before replay relinks a node's other children.
    Ok(finish_before_close(&sr, &sr.merging_in_pool(), lv, lvs)?)
}

/// `Datapath.deactivate`: works with no live path too.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn deactivate(ctx: &Context, request: &DatapathDeactivate) -> CallResult<()> {
    deactivate_volume(ctx, &request.uri)
}

/// `Datapath.detach`: never fails for a volume that is gone already or not
/// active here, nor for want of a live path.
///
/// # Errors
/// Every other failure (the mapping is still open), with where it was raised.
pub fn detach(ctx: &Context, request: &DatapathDetach) -> CallResult<()> {
    deactivate_volume(ctx, &request.uri)
}

#[cfg(test)]
mod tests {
    use super::dm_name;

    #[test]
    fn mapping_names_double_the_dashes_as_lvm_does() {
        assert_eq!(dm_name("nvmetcp_3f1c6d0e8a8f", "vol-0f3c6d0e-8a8f"), "nvmetcp_3f1c6d0e8a8f-vol--0f3c6d0e--8a8f");
    }
}
