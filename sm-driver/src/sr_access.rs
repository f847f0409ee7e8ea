//! The plumbing every SR, Volume and Datapath handler shares: the call
//! wrapper, the attached SR behind a handle (locked), LVM on its namespace
//! while a path is live, and the pool-master check.

use std::time::Duration;

use serde_json::Value;

use crate::context::Context;
use crate::error::{CallError, DriverError, Failure};
use crate::lvm::{Lvm, Vg};
use crate::pool_role;
use crate::smapi::params::Params;
use crate::sr_paths;
use crate::sr_state::{self, uuid_of_handle, SrLock, SrState, StateError, SR_LOCK_TIMEOUT};

/// Runs `f`, a handler's body, and encodes its result. `f` returns a
/// [`Failure`], so each `?` in it records where its error was raised.
pub(crate) fn sr_call<T: serde::Serialize>(
    params: &Params,
    f: impl FnOnce() -> Result<T, Failure>,
) -> Result<Value, Failure> {
    let value = f()?;
    serde_json::to_value(value)
        .map_err(|source| DriverError::Encode { method: params.method().call_name(), source }.into())
}

/// The uuid of the SR handle in `params`.
pub(crate) fn handle_uuid(params: &Params) -> Result<String, CallError> {
    let handle: String = params.get("sr").map_err(|e| CallError::State(StateError::BadHandle(e.to_string())))?;
    Ok(uuid_of_handle(&handle)?)
}

/// The attachment state behind a handle, locked.
pub(crate) fn attached(ctx: &Context, params: &Params) -> Result<(SrState, SrLock), CallError> {
    let uuid = handle_uuid(params)?;
    let lock = SrLock::acquire(&ctx.host, &uuid, SR_LOCK_TIMEOUT)?;
    Ok((sr_state::load(&ctx.host, &uuid)?, lock))
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
        return Err(CallError::NoPath { nqn: state.nqn.clone(), why: paths.summary() });
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

/// LVM on the SR's namespace, for callers that checked the paths already.
pub(crate) fn lvm_on_namespace<'c>(ctx: &'c Context, state: &SrState, writable: bool) -> Result<Lvm<'c>, CallError> {
    let (device, file) = sr_paths::device_of(&ctx.host, state, Duration::from_secs(2))?;
    Ok(Lvm::new(ctx.runner.as_ref(), &device, writable)?.holding(file))
}

/// The SR's VG as LVM reports it, if it still exists.
pub(crate) fn our_vg(lvm: &Lvm<'_>, state: &SrState) -> Result<Option<Vg>, CallError> {
    Ok(lvm.vgs()?.into_iter().find(|vg| vg.name == state.vg))
}
