//! `Datapath.attach` and `Datapath.activate`: the LV activated (refreshed)
//! on this host, and its device handed to blkback, or the volume served by
//! this host's engine (a layered volume always; a plain one where
//! [`crate::snapshot::served::plain_datapath`] says so, which SMlog records).

use crate::context::Context;
use crate::error::{CallResult, VolumeError};
use crate::ids::VolumeUri;
use crate::request::{DatapathActivate, DatapathAttach};
use crate::smapi::types::{Backend, Implementation, XenDisk};
use crate::sr_access::lvm_for;
use crate::sr_state::{self, SrLock, SR_LOCK_TIMEOUT};

/// Which call serves the volume.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Attach,
    Activate,
}

/// Locks the SR and makes the volume usable on this host; returns its
/// device path and backend type: blkback (`vbd`) on the activated LV, or
/// the engine's device (`vbd3`) for a layered volume or a plain one attach
/// gave to the engine.
fn serve(ctx: &Context, uri: &VolumeUri, step: Step) -> CallResult<(String, &'static str)> {
    let (sr_uuid, lv) = (uri.sr.as_str(), uri.key.lv());
    let _lock = SrLock::acquire(&ctx.host, sr_uuid, SR_LOCK_TIMEOUT)?;
    let state = sr_state::load(&ctx.host, sr_uuid)?;
    let lvm = lvm_for(ctx, &state, false)?;
    let Some(found) = lvm.lv(&state.vg, &lv)? else {
        return Err(VolumeError::NotFound { key: lv.to_string(), sr_uuid: sr_uuid.to_owned() }.into());
    };
    let volume_tag = crate::volume::meta::VOLUME_TAG;
    let engine_for_plain = || -> CallResult<bool> {
        let choice = crate::host_config::HostConfig::load(&ctx.host)?.datapath;
        let chosen = crate::snapshot::served::plain_datapath(ctx.runner.as_ref(), choice);
        tracing::info!(volume = %lv, datapath = chosen.name(), why = %chosen.why, "plain volume's datapath");
        Ok(chosen.engine)
    };
    // Attach chooses how a plain volume is served; activate follows that
    // choice (the engine's handle is there or not) and never asks again: a
    // second answer could differ and put blkback and an engine on one disk.
    let served = crate::snapshot::served::open_here(&ctx.host, &state.sr_uuid, &found.name).is_some();
    if served
        || crate::snapshot::calls::needs_engine(&lvm, &state.vg, volume_tag, &found)?
        || (step == Step::Attach && engine_for_plain()?)
    {
        // blkback on a layered volume's LV would serve the wrong bytes.
        let device = crate::snapshot::served::attach(ctx.runner.as_ref(), &ctx.host, &lvm, &state, volume_tag, &found)?;
        return Ok((device.display().to_string(), "vbd3"));
    }
    // `-ay` if it is not active here (which loads the current metadata),
    // `--refresh` if it is (what the master changed since: a resize).
    lvm.lvs_activate(&state.vg, std::slice::from_ref(&lv), std::slice::from_ref(&found))?;
    tracing::info!(volume = %lv, "volume activated");
    Ok((format!("/dev/{}/{lv}", state.vg), "vbd"))
}

/// `Datapath.attach`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn attach(ctx: &Context, request: &DatapathAttach) -> CallResult<Backend> {
    let (path, backend_type) = serve(ctx, &request.uri, Step::Attach)?;
    Ok(Backend {
        implementations: vec![
            Implementation::XenDisk(XenDisk {
                params: path.clone(),
                extra: Default::default(),
                backend_type: backend_type.to_owned(),
            }),
            Implementation::BlockDevice { path },
        ],
    })
}

/// `Datapath.activate`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn activate(ctx: &Context, request: &DatapathActivate) -> CallResult<()> {
    serve(ctx, &request.uri, Step::Activate).map(|_| ())
}
