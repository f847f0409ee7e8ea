//! `SR.destroy` (master, SR attached): refuses while volumes exist, removes
//! VG and PV, releases the paths; idempotent.

use crate::context::Context;
use crate::error::{CallError, CallResult};
use crate::request::SrDestroy;
use crate::sr_access::{attached, lvm_for, our_vg, require_master};
use crate::sr_state::{self, StateError};

/// What to wipe when `pvs` did not say where the data area starts: the
/// label and an 8 MiB metadata area, rounded up.
const WIPED_WITHOUT_REPORT: u64 = 9 << 20;

/// Zeroes the first `bytes` of `device` (the label and LVM metadata the SR
/// wrote), so a new SR on the namespace finds it empty and needs no force.
fn wipe(device: &std::path::Path, bytes: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).open(device)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let chunk = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
        file.write_all(&zeros[..chunk])?;
        left -= chunk as u64;
    }
    file.sync_all()
}

/// `SR.destroy`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn destroy(ctx: &Context, request: &SrDestroy) -> CallResult<()> {
    require_master(ctx, "SR.destroy")?;
    let (state, _lock) = match attached(ctx, &request.sr) {
        Ok(found) => found,
        // Destroyed already (xapi retried): nothing left to do.
        Err(CallError::State(StateError::NotAttached(uuid))) => {
            tracing::info!(sr = %uuid, "SR.destroy: not attached here; nothing to destroy");
            return Ok(());
        }
        Err(error) => return Err(error.into()),
    };
    let lvm = lvm_for(ctx, &state, true)?;
    if our_vg(&lvm, &state)?.is_some() {
        let volumes = lvm.lvs(&state.vg)?;
        if !volumes.is_empty() {
            return Err(CallError::NotEmpty { sr_uuid: state.sr_uuid.to_string(), count: volumes.len() }.into());
        }
        // What this SR wrote outside its volumes: the PV label and the
        // metadata area before the first extent.
        let written = lvm.pv()?.map_or(WIPED_WITHOUT_REPORT, |pv| pv.pe_start);
        lvm.deactivate(&state.vg)?;
        lvm.remove_vg_and_pv(&state.vg)?;
        wipe(&ctx.host.path(lvm.device()), written)
            .map_err(|source| CallError::Wipe { device: lvm.device().to_owned(), source })?;
    }
    // Also on a retry that finds the VG gone: the killed attempt may have
    // left dead links under /dev/<vg>, which would refuse the name again.
    let left = super::device_nodes::clear_dead(&ctx.host, &state.vg);
    if !left.is_empty() {
        tracing::warn!(vg = %state.vg, ?left, "the removed volume group's /dev directory still holds live nodes");
    }
    let sr = state.sr_uuid.as_str();
    crate::sr_paths::release(ctx, state.initiator, sr, sr)?;
    sr_state::remove(&ctx.host, &state.sr_uuid)?;
    tracing::info!(sr = %state.sr_uuid, "SR destroyed");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wipe_zeroes_exactly_what_the_sr_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("ns");
        std::fs::write(&device, vec![0xa5u8; 3 << 20]).unwrap();
        super::wipe(&device, (2 << 20) + 512).unwrap();
        let after = std::fs::read(&device).unwrap();
        assert_eq!(after.len(), 3 << 20, "never grows the device");
        assert!(after[..(2 << 20) + 512].iter().all(|b| *b == 0));
        assert!(after[(2 << 20) + 512..].iter().all(|b| *b == 0xa5), "volumes' extents are not touched");
    }
}
