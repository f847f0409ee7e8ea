//! The Datapath.* methods: hand a volume's LV to blkback on the host that
//! runs the VM, and take it back.
//!
//! The datapath plugin gets only the volume's URI, `nvmetcp://<sr uuid>/<lv>`;
//! xapi guarantees the SR is attached on this host first, so the attachment
//! state ([`crate::sr::state`]) says where the namespace is. `attach`
//! activates the LV on this host (refreshing what the master changed, such as
//! a resize) and returns `XenDisk {backend_type: "vbd"}` plus the
//! `BlockDevice` path; `activate` refreshes again (the migration handover
//! point); `deactivate` deactivates; `detach` makes sure of it and never
//! fails on a volume that is already gone. Every call is idempotent, and
//! `domain` (possibly empty during teardown) is not relied upon. Activation
//! writes no LVM metadata, so it works on pool members.
//!
//! Deactivating must work while the array is unreachable, or a VM could not
//! be shut down during an outage: LVM would block reading the device, so when
//! no path is live the volume's device-mapper mapping is removed directly
//! (deactivation changes no LVM metadata, so nothing else is needed).

use serde_json::Value;

use crate::cmd::{Command, Program};
use crate::dispatch::Context;
use crate::error::Failure;
use crate::smapi::params::Params;
use crate::smapi::types::{Backend, Implementation, XenDisk};
use crate::sr::state::{self, SrLock, SR_LOCK_TIMEOUT};
use crate::sr::{lvm_for, sr_call, SrError};
use crate::volume::{VolumeError, SCHEME};

/// `(sr uuid, lv name)` of a volume URI.
///
/// # Errors
/// [`VolumeError::BadUri`] for anything else.
pub fn parse_uri(uri: &str) -> Result<(String, String), VolumeError> {
    let bad = || VolumeError::BadUri(uri.to_owned());
    let rest = uri.strip_prefix(SCHEME).and_then(|r| r.strip_prefix("://")).ok_or_else(bad)?;
    let (sr, lv) = rest.split_once('/').ok_or_else(bad)?;
    let hex_dash = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if hex_dash(sr) && lv.strip_prefix("vol-").is_some_and(hex_dash) {
        Ok((sr.to_owned(), lv.to_owned()))
    } else {
        Err(bad())
    }
}

/// Locks the SR and activates or deactivates the volume's LV on this host;
/// returns its device path.
fn set_active(ctx: &Context, uri: &str, active: bool) -> Result<String, SrError> {
    let (sr_uuid, lv) = parse_uri(uri)?;
    let _lock = SrLock::acquire(&ctx.host, &sr_uuid, SR_LOCK_TIMEOUT)?;
    let state = state::load(&ctx.host, &sr_uuid)?;
    let lvm = lvm_for(ctx, &state, false)?;
    if lvm.lv(&state.vg, &lv)?.is_none() {
        return Err(VolumeError::NotFound { key: lv, sr_uuid }.into());
    }
    lvm.lv_activate(&state.vg, &lv, active)?;
    tracing::info!(volume = %lv, active, "volume {}", if active { "activated" } else { "deactivated" });
    Ok(format!("/dev/{}/{lv}", state.vg))
}

/// `Datapath.attach`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn attach(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let uri: String = params.get("uri")?;
    sr_call(params, || {
        let path = set_active(ctx, &uri, true)?;
        Ok(Backend {
            implementations: vec![
                Implementation::XenDisk(XenDisk {
                    params: path.clone(),
                    extra: Default::default(),
                    backend_type: "vbd".to_owned(),
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

/// The device-mapper name LVM gives `vg/lv`: dashes doubled, joined by one.
fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// Whether the kernel has a device-mapper device named `name` (sysfs is the
/// truth: `/dev/mapper` nodes can outlive their device where udev does not
/// run).
fn mapping_active(host: &crate::host::HostRoot, name: &str) -> bool {
    host.list_dir("/sys/block")
        .unwrap_or_default()
        .iter()
        .filter(|d| d.starts_with("dm-"))
        .any(|d| host.read_trimmed(&format!("/sys/block/{d}/dm/name")).is_ok_and(|n| n == name))
}

/// Deactivates the volume on this host: a no-op when it is not active here,
/// LVM while a path is live, the mapping removed directly when none is.
fn deactivate_volume(ctx: &Context, uri: &str) -> Result<(), SrError> {
    let (sr_uuid, lv) = parse_uri(uri)?;
    let _lock = SrLock::acquire(&ctx.host, &sr_uuid, SR_LOCK_TIMEOUT)?;
    let state = match state::load(&ctx.host, &sr_uuid) {
        Ok(state) => state,
        // The SR is not attached here, so nothing of it is active either.
        Err(state::StateError::NotAttached(_)) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    let mapping = dm_name(&state.vg, &lv);
    if !mapping_active(&ctx.host, &mapping) {
        return Ok(());
    }
    match lvm_for(ctx, &state, false) {
        Ok(lvm) => lvm.lv_activate(&state.vg, &lv, false)?,
        Err(SrError::NoPath { why, .. }) => {
            tracing::warn!(volume = %lv, paths = %why, "no path is live; removing the volume's mapping directly");
            ctx.runner
                .run(&Command::new(Program::Dmsetup).args(["remove", &mapping]))
                .map_err(|e| SrError::Lvm(crate::lvm::LvmError::Command(e)))?;
        }
        Err(error) => return Err(error),
    }
    tracing::info!(volume = %lv, "volume deactivated");
    Ok(())
}

/// `Datapath.deactivate`: works with no live path too.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn deactivate(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let uri: String = params.get("uri")?;
    sr_call(params, || deactivate_volume(ctx, &uri).map(|()| Value::Null))
}

/// `Datapath.detach`: never fails for a volume that is gone already or not
/// active here, nor for want of a live path.
///
/// # Errors
/// Every other failure (the mapping is still open), as the SMAPI error record.
pub fn detach(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let uri: String = params.get("uri")?;
    sr_call(params, || deactivate_volume(ctx, &uri).map(|()| Value::Null))
}

#[cfg(test)]
mod tests {
    use super::{dm_name, parse_uri};

    #[test]
    fn mapping_names_double_the_dashes_as_lvm_does() {
        assert_eq!(dm_name("nvmetcp_3f1c6d0e8a8f", "vol-0f3c6d0e-8a8f"), "nvmetcp_3f1c6d0e8a8f-vol--0f3c6d0e--8a8f");
    }

    #[test]
    fn uris_name_the_sr_and_the_volume() {
        let (sr, lv) =
            parse_uri("nvmetcp://3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11/vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11")
                .unwrap();
        assert_eq!(
            (sr.as_str(), lv.as_str()),
            ("3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11", "vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11")
        );
        for bad in [
            "",
            "file:///dev/sda",
            "nvmetcp://x/../../etc",
            "nvmetcp://3f1c/vol-",
            "nvmetcp://3f1c/other",
            "nvmetcp:/3f1c/vol-1",
        ] {
            assert!(parse_uri(bad).is_err(), "{bad}");
        }
    }
}
