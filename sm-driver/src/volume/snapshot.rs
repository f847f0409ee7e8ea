//! `Volume.snapshot` and `Volume.clone` (master), of a volume no host uses
//! or (a snapshot) of one this host's engine serves:
//! the chain work is [`crate::snapshot::calls::take`]; the new volume gets
//! the origin's name, description and sharable flag (not its `Volume.set`
//! keys: xapi sets the snapshot's own right after).

use crate::context::Context;
use crate::error::{CallError, CallResult, VolumeError};
use crate::ids::VolumeKey;
use crate::lvm::Lv;
use crate::request::{SrHandle, VolumeClone, VolumeSnapshot};
use crate::smapi::types::Volume;
use crate::snapshot::calls::{self, ChainCallError};
use crate::snapshot::ops::{NoFaults, OpError, Running};
use crate::snapshot::pool::ServedOn;
use crate::snapshot::served;
use crate::sr_access::{attached, lvm_and_report, require_master};
use crate::sr_state::SrState;

use super::budget;
use super::meta::{self, VolumeMeta};
use super::record::{existing_in, record, refuse_in_use};

/// `Volume.snapshot`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn snapshot(ctx: &Context, request: &VolumeSnapshot) -> CallResult<Volume> {
    take(ctx, &request.sr, &request.key, false)
}

/// `Volume.clone`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn clone(ctx: &Context, request: &VolumeClone) -> CallResult<Volume> {
    take(ctx, &request.sr, &request.key, true)
}

/// Where a volume no engine of this host serves is in use.
enum InUse {
    /// Nowhere: it is snapshotted at rest.
    Nowhere,
    /// On another host, whose engine serves it: swapped there.
    ServedOn(String),
}

/// Finds where `origin` (a volume this host's engine does not serve)
/// is in use: another host whose engine serves it is where it is swapped
/// (pause first, then swap); a VM using it through blkback, here or on a
/// named host, is refused with why.
fn where_in_use(
    ctx: &Context,
    sr: &calls::Sr<'_>,
    state: &SrState,
    origin: &Lv,
    key: &VolumeKey,
) -> Result<InUse, CallError> {
    match refuse_in_use(ctx, state, origin, key.to_string()) {
        Ok(()) => Ok(InUse::Nowhere),
        Err(CallError::Volume(VolumeError::Active { key })) => {
            Err(ChainCallError::Running { key, place: " on this host".to_owned() }.into())
        }
        Err(CallError::Volume(VolumeError::ActiveElsewhere { key, hosts })) => match sr.served_elsewhere(&key)? {
            Some(host) => Ok(InUse::ServedOn(host)),
            None => Err(ChainCallError::Running { key, place: format!(" on host(s) {}", hosts.join(", ")) }.into()),
        },
        Err(other) => Err(other),
    }
}

fn take(ctx: &Context, sr: &SrHandle, key: &VolumeKey, clone: bool) -> CallResult<Volume> {
    require_master(ctx, if clone { "Volume.clone" } else { "Volume.snapshot" })?;
    let (state, _lock) = attached(ctx, sr)?;
    // One read of the VG for every check and the chain work (writer guard,
    // lookup, engine question, budget, free space), under the SR's lock.
    let (lvm, vg, lvs) = lvm_and_report(ctx, &state)?;
    let origin = existing_in(&lvs, &state, key)?;
    let sr = calls::Sr {
        runner: ctx.runner.as_ref(),
        host: &ctx.host,
        lvm: &lvm,
        state: &state,
        volume_tag: meta::VOLUME_TAG,
    };
    // A volume an engine serves, here or on another host, is snapshotted
    // running (pause first, then swap, where it is open); any other volume
    // in use is refused.
    if served::open_read_only(&ctx.host, &state.sr_uuid, key) {
        let key = key.to_string();
        return Err(ChainCallError::ReadOnlyServed { key, place: " on this host".to_owned() }.into());
    }
    let served = served::open_here(&ctx.host, &state.sr_uuid, key);
    let running: Option<Box<dyn Running + '_>> = match served {
        Some(disk) => Some(Box::new(served::ServedHere {
            engine: served::engine(ctx.runner.as_ref(), &ctx.host)
                .map_err(OpError::from)
                .map_err(ChainCallError::from)?,
            host: &ctx.host,
            sr_uuid: &state.sr_uuid,
            volume: key,
            disk,
            faults: &NoFaults,
            lvm: &lvm,
            vg: &state.vg,
        })),
        None => {
            // A layered volume is served by an engine only: ask which host's
            // first. What no engine serves must be in use nowhere, or it is
            // refused (blkback cannot switch to a layer).
            let engine_host =
                if calls::needs_engine_in(&lvs, meta::VOLUME_TAG, &origin)? { sr.served_elsewhere(key)? } else { None };
            let host = match engine_host {
                Some(host) => Some(host),
                None => match where_in_use(ctx, &sr, &state, &origin, key)? {
                    InUse::Nowhere => None,
                    InUse::ServedOn(host) => Some(host),
                },
            };
            host.map(|host| Box::new(ServedOn { pool: sr.pool(), host, volume: key.to_string() }) as Box<dyn Running>)
        }
    };
    let uuid = ctx.host.read_trimmed("/proc/sys/kernel/random/uuid")?;
    let old = meta::from_tags(&origin.tags);
    let new = VolumeMeta { uuid: uuid.clone(), keys: Default::default(), ..old };
    let tags = meta::to_tags(&new).map_err(VolumeError::from)?;
    let names = calls::new_names(&uuid, clone, tags);
    budget::check(&names.volume, &[], &names.record, &lvs)?;
    let (created, lvs) = calls::take(&sr, &origin, &names, running.as_deref(), vg.as_ref(), &lvs)?;
    tracing::info!(origin = %key, volume = %created, clone, "volume {}", if clone { "cloned" } else { "snapshotted" });
    let view = calls::ChainView::load(&lvs, meta::VOLUME_TAG)?;
    let created: VolumeKey = created.parse().map_err(|_| VolumeError::BadKey(created.clone()))?;
    let lv = existing_in(&lvs, &state, &created)?;
    Ok(view.describe(record(&state, &lv), &lv))
}

#[cfg(test)]
mod tests;
