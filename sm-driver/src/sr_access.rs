//! The plumbing every SR, Volume and Datapath handler shares: the attached
//! SR behind a handle (locked), LVM on its namespace while a path is live,
//! and the pool-master check.

use std::time::Duration;

use crate::context::Context;
use crate::error::CallError;
use crate::lvm::{Lv, Lvm, Vg};
use crate::pool_role;
use crate::request::SrHandle;
use crate::sr_paths;
use crate::sr_state::{self, SrLock, SrState, SR_LOCK_TIMEOUT};

/// The attachment state behind a handle, locked.
pub(crate) fn attached(ctx: &Context, sr: &SrHandle) -> Result<(SrState, SrLock), CallError> {
    let uuid = sr.uuid().as_str();
    let lock = SrLock::acquire(&ctx.host, uuid, SR_LOCK_TIMEOUT)?;
    Ok((sr_state::load(&ctx.host, uuid)?, lock))
}

/// Refuses `what` unless this host is the pool master.
pub(crate) fn require_master(ctx: &Context, what: &'static str) -> Result<(), CallError> {
    Ok(pool_role::require_master(&ctx.host, what)?)
}

/// Fails at once when no path is live: LVM I/O would only queue until
/// `fast_io_fail_tmo`.
fn require_live_path(ctx: &Context, state: &SrState) -> Result<(), CallError> {
    let paths = sr_paths::health_of(&ctx.host, state)?;
    if paths.live() == 0 {
        return Err(CallError::NoPath { nqn: state.nqn.to_string(), why: paths.summary() });
    }
    Ok(())
}

/// LVM on the SR's namespace, resolved anew; only while a path is live.
/// A writable one is for a metadata write: the SR's writer is checked (and
/// claimed) first ([`crate::writer_guard`]).
pub(crate) fn lvm_for<'c>(ctx: &'c Context, state: &SrState, writable: bool) -> Result<Lvm<'c>, CallError> {
    require_live_path(ctx, state)?;
    let lvm = lvm_on_namespace(ctx, state, writable)?;
    if writable {
        if let Some(vg) = our_vg(&lvm, state)? {
            crate::writer_guard::guard(&ctx.host, &lvm, &vg)?;
        }
    }
    Ok(lvm)
}

/// LVM on the SR's namespace for a metadata write, with every LV of the SR
/// as it stands: one `lvm fullreport` gives the writer guard the VG's tags
/// ([`crate::writer_guard`]) and the caller the LVs its budget and lookups
/// need, so a checked write costs one read and the write.
pub(crate) fn lvm_for_change<'c>(ctx: &'c Context, state: &SrState) -> Result<(Lvm<'c>, Vec<Lv>), CallError> {
    let (lvm, _, lvs) = lvm_and_report(ctx, state)?;
    Ok((lvm, lvs))
}

/// [`lvm_for_change`], with the SR's VG as the same report has it (its
/// free space and extent size), if it still exists.
pub(crate) fn lvm_and_report<'c>(
    ctx: &'c Context,
    state: &SrState,
) -> Result<(Lvm<'c>, Option<Vg>, Vec<Lv>), CallError> {
    require_live_path(ctx, state)?;
    let lvm = lvm_on_namespace(ctx, state, true)?;
    let (vgs, lvs) = lvm.vgs_and_lvs()?;
    let vg = vgs.into_iter().find(|vg| vg.name == state.vg);
    if let Some(vg) = &vg {
        crate::writer_guard::guard(&ctx.host, &lvm, vg)?;
    }
    let lvs = lvs.into_iter().filter(|lv| lv.vg == state.vg).collect();
    Ok((lvm, vg, lvs))
}

/// LVM on the SR's namespace, for callers that checked the paths already.
pub(crate) fn lvm_on_namespace<'c>(ctx: &'c Context, state: &SrState, writable: bool) -> Result<Lvm<'c>, CallError> {
    let (device, file) = sr_paths::device_of(&ctx.host, state, Duration::from_secs(2))?;
    Ok(Lvm::new(ctx.runner.as_ref(), &device, writable)?.holding(file))
}

/// The SR's VG as LVM reports it, if it still exists.
pub(crate) fn our_vg(lvm: &Lvm<'_>, state: &SrState) -> Result<Option<Vg>, CallError> {
    Ok(lvm.vgs()?.into_iter().find(|vg| vg.name == state.vg))
}
