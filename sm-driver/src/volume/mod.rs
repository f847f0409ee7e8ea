//! The Volume.* methods: each volume is a thick LV `vol-<uuid>` in the SR's
//! VG, with its metadata in its own tags ([`meta`]).
//!
//! Every mutating call runs on the pool master under the SR lock and is one
//! LVM metadata commit, so a killed call leaves the old or the new state.
//! A volume's `uri` is `nvmetcp://<sr uuid>/<lv>`: the datapath plugin finds
//! the SR's attachment on its host from it, and nothing else.

pub mod meta;

use serde_json::Value;

use crate::dispatch::Context;
use crate::error::Failure;
use crate::lvm::{Lv, Lvm};
use crate::smapi::params::Params;
use crate::smapi::types::Volume;
use crate::sr::state::SrState;
use crate::sr::{attached, lvm_for, role, sr_call, SrError};

use self::meta::{from_tags, VolumeMeta, VOLUME_TAG};

/// The URI scheme of volumes (the datapath plugin's directory name).
pub const SCHEME: &str = crate::plugin::DATAPATH_SCHEME;

/// The URI of volume `lv` of SR `sr_uuid`.
#[must_use]
pub fn uri(sr_uuid: &str, lv: &str) -> String {
    format!("{SCHEME}://{sr_uuid}/{lv}")
}

/// Whether `name` is an LV name nvmetcp gives volumes.
fn is_volume_name(name: &str) -> bool {
    name.strip_prefix("vol-").is_some_and(|u| u.len() == 36 && u.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
}

/// The SMAPI record of an LV.
fn record(state: &SrState, lv: &Lv) -> Volume {
    let meta = from_tags(&lv.tags);
    let size = i64::try_from(lv.size).unwrap_or(i64::MAX);
    Volume {
        key: lv.name.clone(),
        uuid: (!meta.uuid.is_empty()).then_some(meta.uuid),
        name: meta.name,
        description: meta.description,
        read_write: true,
        sharable: meta.sharable,
        virtual_size: size,
        physical_utilisation: size,
        uri: vec![uri(&state.sr_uuid, &lv.name)],
        keys: meta.keys,
        volume_type: None,
        cbt_enabled: None,
    }
}

/// Every volume of the SR, or an error — never a partial list.
///
/// # Errors
/// [`SrError`] if LVM cannot list the VG.
pub fn list(lvm: &Lvm<'_>, state: &SrState) -> Result<Vec<Volume>, SrError> {
    Ok(lvm
        .lvs(&state.vg)?
        .iter()
        .filter(|lv| lv.tags.iter().any(|t| t == VOLUME_TAG) && is_volume_name(&lv.name))
        .map(|lv| record(state, lv))
        .collect())
}

/// Why a volume call failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No such volume in the SR.
    #[error("volume {key} does not exist in SR {sr_uuid}")]
    NotFound {
        /// The key.
        key: String,
        /// The SR.
        sr_uuid: String,
    },
    /// The volume is in use on this host.
    #[error("volume {key} is active on this host; detach it from its VM first")]
    Active {
        /// The key.
        key: String,
    },
    /// A shrink was asked for.
    #[error("volume {key} is {current} bytes; shrinking to {requested} would destroy data, so it is refused")]
    Shrink {
        /// The key.
        key: String,
        /// Its size.
        current: u64,
        /// The size asked for.
        requested: u64,
    },
    /// A URI that is not an nvmetcp volume's.
    #[error("{0:?} is not an nvmetcp volume URI (nvmetcp://<sr uuid>/<volume>)")]
    BadUri(String),
    /// A size that is not positive.
    #[error("a volume size must be positive, not {0}")]
    BadSize(i64),
    /// A value too long for the metadata.
    #[error(transparent)]
    TooLong(#[from] meta::TooLong),
}

fn find(lvm: &Lvm<'_>, state: &SrState, key: &str) -> Result<Option<Lv>, SrError> {
    if !is_volume_name(key) {
        return Ok(None);
    }
    Ok(lvm.lv(&state.vg, key)?.filter(|lv| lv.tags.iter().any(|t| t == VOLUME_TAG)))
}

fn existing(lvm: &Lvm<'_>, state: &SrState, key: &str) -> Result<Lv, SrError> {
    find(lvm, state, key)?
        .ok_or_else(|| VolumeError::NotFound { key: key.to_owned(), sr_uuid: state.sr_uuid.clone() }.into())
}

fn require_master(ctx: &Context, what: &'static str) -> Result<(), SrError> {
    Ok(role::require_master(&ctx.host, what)?)
}

fn size_param(params: &Params, name: &'static str) -> Result<u64, Failure> {
    let size: i64 = params.get(name)?;
    u64::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| crate::error::DriverError::from(SrError::Volume(VolumeError::BadSize(size))).into())
}

/// `Volume.create`: the size is rounded up to whole extents and reported as
/// allocated.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn create(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let name: String = params.get("name")?;
    let description: String = params.get("description")?;
    let sharable: bool = params.get("sharable")?;
    let size = size_param(params, "size")?;
    sr_call(params, || {
        require_master(ctx, "Volume.create")?;
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, true)?;
        let uuid = ctx.host.read_trimmed("/proc/sys/kernel/random/uuid")?;
        let lv = format!("vol-{uuid}");
        let tags = meta::to_tags(&VolumeMeta { uuid, name, description, sharable, keys: Default::default() })
            .map_err(VolumeError::from)?;
        lvm.lvcreate(&state.vg, &lv, size, &tags)?;
        tracing::info!(volume = %lv, size, "volume created");
        // One LVM call per create: the size LVM chose follows from the
        // extent size (state from older versions lacks it: read it back).
        let created = match crate::lvm::allocated_size(size, state.extent_size) {
            Some(allocated) => Lv { name: lv, vg: state.vg.clone(), size: allocated, tags, active: false },
            None => existing(&lvm, &state, &lv)?,
        };
        Ok(record(&state, &created))
    })
}

/// `Volume.stat`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn stat(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let key: String = params.get("key")?;
    sr_call(params, || {
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, false)?;
        Ok(record(&state, &existing(&lvm, &state, &key)?))
    })
}

/// `Volume.destroy`: refuses an active volume; a volume already gone is success.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn destroy(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let key: String = params.get("key")?;
    sr_call(params, || {
        require_master(ctx, "Volume.destroy")?;
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, true)?;
        let Some(lv) = find(&lvm, &state, &key)? else {
            tracing::info!(volume = %key, "already gone");
            return Ok(Value::Null);
        };
        if lv.active {
            return Err(VolumeError::Active { key }.into());
        }
        lvm.lvremove(&state.vg, &lv.name)?;
        tracing::info!(volume = %key, "volume destroyed");
        Ok(Value::Null)
    })
}

/// `Volume.resize`: grows only, and only while the volume is not active
/// (online growth is not offered until proven with guests).
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn resize(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let key: String = params.get("key")?;
    let new_size = size_param(params, "new_size")?;
    sr_call(params, || {
        require_master(ctx, "Volume.resize")?;
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, true)?;
        let lv = existing(&lvm, &state, &key)?;
        if new_size < lv.size {
            return Err(VolumeError::Shrink { key, current: lv.size, requested: new_size }.into());
        }
        if new_size == lv.size {
            return Ok(Value::Null);
        }
        if lv.active {
            return Err(VolumeError::Active { key }.into());
        }
        lvm.lvextend(&state.vg, &lv.name, new_size)?;
        Ok(Value::Null)
    })
}

/// Replaces some tags of a volume in one commit.
fn retag(
    ctx: &Context,
    params: &Params,
    what: &'static str,
    change: impl FnOnce(&[String]) -> Result<(Vec<String>, Vec<String>), VolumeError>,
) -> Result<Value, Failure> {
    let key: String = params.get("key")?;
    sr_call(params, || {
        require_master(ctx, what)?;
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, true)?;
        let lv = existing(&lvm, &state, &key)?;
        let (remove, add) = change(&lv.tags)?;
        let remove: Vec<String> = remove.into_iter().filter(|t| !add.contains(t)).collect();
        let add: Vec<String> = add.into_iter().filter(|t| !lv.tags.contains(t)).collect();
        if !remove.is_empty() || !add.is_empty() {
            lvm.lv_retag(&state.vg, &lv.name, &remove, &add)?;
        }
        Ok(Value::Null)
    })
}

/// `Volume.set_name`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn set_name(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let text: String = params.get("new_name")?;
    retag(ctx, params, "Volume.set_name", |tags| Ok((meta::tags_of_label(tags, "n"), meta::label_tags("n", &text)?)))
}

/// `Volume.set_description`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn set_description(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let text: String = params.get("new_description")?;
    retag(ctx, params, "Volume.set_description", |tags| {
        Ok((meta::tags_of_label(tags, "d"), meta::label_tags("d", &text)?))
    })
}

/// `Volume.set`: stores key `k` = `v`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn set(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let k: String = params.get("k")?;
    let v: String = params.get("v")?;
    retag(ctx, params, "Volume.set", |tags| Ok((meta::tags_of_key(tags, &k), meta::key_tags(&k, &v)?)))
}

/// `Volume.unset`: forgets key `k` (idempotent).
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn unset(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let k: String = params.get("k")?;
    retag(ctx, params, "Volume.unset", |tags| Ok((meta::tags_of_key(tags, &k), Vec::new())))
}
