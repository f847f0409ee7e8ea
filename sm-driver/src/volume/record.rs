//! A volume as LVM reports it: the LVs nvmetcp owns, found by key, and their
//! SMAPI records.

use crate::context::Context;
use crate::error::{CallError, VolumeError};
use crate::ids::VolumeKey;
use crate::lvm::{Lv, Lvm};
use crate::pool_mappings::hosts_mapping;
use crate::smapi::types::Volume;
use crate::snapshot::calls::ChainView;
use crate::sr_state::SrState;

use super::meta::{from_tags, VOLUME_TAG};
use super::uri::{is_volume_name, uri};

/// The SMAPI record of an LV.
pub(super) fn record(state: &SrState, lv: &Lv) -> Volume {
    let meta = from_tags(&lv.tags);
    let size = i64::try_from(lv.size).unwrap_or(i64::MAX);
    Volume {
        key: lv.name.to_string(),
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

/// Every volume of the SR, or an error — never a partial list. Node LVs
/// of snapshot chains are no volumes, and the new volume of a snapshot in
/// flight appears once its journal is gone.
///
/// # Errors
/// [`CallError`] if LVM cannot list the VG.
pub fn list(lvm: &Lvm<'_>, state: &SrState) -> Result<Vec<Volume>, CallError> {
    let lvs = lvm.lvs(&state.vg)?;
    let chains = ChainView::load(&lvs, VOLUME_TAG)?;
    Ok(lvs
        .iter()
        .filter(|lv| lv.tags.iter().any(|t| t == VOLUME_TAG) && is_volume_name(&lv.name))
        .filter(|lv| !ChainView::in_flight(lv))
        .map(|lv| chains.describe(record(state, lv), lv))
        .collect())
}

/// The volume `key`, if it exists and is nvmetcp's.
pub(super) fn find(lvm: &Lvm<'_>, state: &SrState, key: &VolumeKey) -> Result<Option<Lv>, CallError> {
    Ok(lvm.lv(&state.vg, &key.lv())?.filter(is_ours))
}

/// The volume `key` among the SR's LVs `lvs`, if it is there and nvmetcp's.
pub(super) fn find_in(lvs: &[Lv], key: &VolumeKey) -> Option<Lv> {
    let name = key.lv();
    lvs.iter().find(|lv| lv.name == name && is_ours(lv)).cloned()
}

/// The volume `key` among the SR's LVs `lvs`, or [`VolumeError::NotFound`].
pub(super) fn existing_in(lvs: &[Lv], state: &SrState, key: &VolumeKey) -> Result<Lv, CallError> {
    find_in(lvs, key)
        .ok_or_else(|| VolumeError::NotFound { key: key.to_string(), sr_uuid: state.sr_uuid.to_string() }.into())
}

fn is_ours(lv: &Lv) -> bool {
    lv.tags.iter().any(|t| t == VOLUME_TAG)
}

/// The volume `key`, or [`VolumeError::NotFound`].
pub(super) fn existing(lvm: &Lvm<'_>, state: &SrState, key: &VolumeKey) -> Result<Lv, CallError> {
    find(lvm, state, key)?
        .ok_or_else(|| VolumeError::NotFound { key: key.to_string(), sr_uuid: state.sr_uuid.to_string() }.into())
}

/// Refuses to change `lv` while it is in use: active on this host, or
/// mapped on another host of the pool.
pub(super) fn refuse_in_use(ctx: &Context, state: &SrState, lv: &Lv, key: String) -> Result<(), CallError> {
    if lv.active {
        return Err(VolumeError::Active { key }.into());
    }
    let elsewhere = hosts_mapping(&ctx.host, &state.vg, &lv.name)?;
    if !elsewhere.is_empty() {
        return Err(VolumeError::ActiveElsewhere { key, hosts: elsewhere }.into());
    }
    Ok(())
}
