//! `Datapath.attach` and `Datapath.activate`: the LV activated (refreshed)
//! on this host, and its device handed to blkback.

use serde_json::Value;

use crate::context::Context;
use crate::error::{Failure, VolumeError};
use crate::smapi::params::Params;
use crate::smapi::types::{Backend, Implementation, XenDisk};
use crate::sr_access::{lvm_for, sr_call};
use crate::sr_state::{self, SrLock, SR_LOCK_TIMEOUT};
use crate::volume::uri::parse_uri;

/// Locks the SR and activates or deactivates the volume's LV on this host;
/// returns its device path and backend type: blkback (`vbd`) on the LV, or
/// for a layered volume the engine's device (`vbd3`).
fn set_active(ctx: &Context, uri: &str, active: bool) -> Result<(String, &'static str), Failure> {
    let (sr_uuid, lv) = parse_uri(uri)?;
    let _lock = SrLock::acquire(&ctx.host, &sr_uuid, SR_LOCK_TIMEOUT)?;
    let state = sr_state::load(&ctx.host, &sr_uuid)?;
    let lvm = lvm_for(ctx, &state, false)?;
    let Some(found) = lvm.lv(&state.vg, &lv)? else {
        return Err(VolumeError::NotFound { key: lv, sr_uuid }.into());
    };
    let volume_tag = crate::volume::meta::VOLUME_TAG;
    if active && crate::snapshot::calls::needs_engine(&lvm, &state.vg, volume_tag, &found)? {
        // blkback on a layered volume's LV would serve the wrong bytes.
        let device = crate::snapshot::served::attach(ctx.runner.as_ref(), &ctx.host, &lvm, &state, volume_tag, &found)?;
        return Ok((device.display().to_string(), "vbd3"));
    }
    lvm.lv_activate(&state.vg, &lv, active)?;
    tracing::info!(volume = %lv, active, "volume {}", if active { "activated" } else { "deactivated" });
    Ok((format!("/dev/{}/{lv}", state.vg), "vbd"))
}

/// `Datapath.attach`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn attach(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let uri: String = params.get("uri")?;
    sr_call(params, || {
        let (path, backend_type) = set_active(ctx, &uri, true)?;
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
    })
}

/// `Datapath.activate`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn activate(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let uri: String = params.get("uri")?;
    sr_call(params, || set_active(ctx, &uri, true).map(|_| Value::Null))
}
