//! `Volume.set_name`, `set_description`, `set` and `unset` (master): one
//! read of the VG (writer guard, budget, the volume's tags), then one
//! `lvchange --deltag … --addtag …`, so a killed call leaves the old or the
//! new metadata.

use crate::context::Context;
use crate::error::{CallResult, VolumeError};
use crate::ids::VolumeKey;
use crate::request::{SrHandle, VolumeSet, VolumeSetDescription, VolumeSetName, VolumeUnset};
use crate::sr_access::{attached, lvm_for_change, require_master};

use super::record::existing_in;
use super::{budget, meta};

/// Replaces some tags of a volume in one commit.
fn retag(
    ctx: &Context,
    sr: &SrHandle,
    key: &VolumeKey,
    what: &'static str,
    change: impl FnOnce(&[String]) -> Result<(Vec<String>, Vec<String>), VolumeError>,
) -> CallResult<()> {
    {
        require_master(ctx, what)?;
        let (state, _lock) = attached(ctx, sr)?;
        let (lvm, lvs) = lvm_for_change(ctx, &state)?;
        let lv = existing_in(&lvs, &state, key)?;
        let (remove, add) = change(&lv.tags)?;
        let remove: Vec<String> = remove.into_iter().filter(|t| !add.contains(t)).collect();
        let add: Vec<String> = add.into_iter().filter(|t| !lv.tags.contains(t)).collect();
        let after: Vec<String> =
            lv.tags.iter().filter(|t| !remove.contains(t)).cloned().chain(add.iter().cloned()).collect();
        if budget::tag_bytes(&after) > budget::tag_bytes(&lv.tags) {
            budget::check(key, &lv.tags, &after, &lvs)?;
        }
        if !remove.is_empty() || !add.is_empty() {
            lvm.lv_retag(&state.vg, &lv.name, &remove, &add)?;
        }
        Ok(())
    }
}

/// `Volume.set_name`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn set_name(ctx: &Context, request: &VolumeSetName) -> CallResult<()> {
    let text = &request.new_name;
    retag(ctx, &request.sr, &request.key, "Volume.set_name", |tags| {
        Ok((meta::tags_of_label(tags, "n"), meta::label_tags("n", text)?))
    })
}

/// `Volume.set_description`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn set_description(ctx: &Context, request: &VolumeSetDescription) -> CallResult<()> {
    let text = &request.new_description;
    retag(ctx, &request.sr, &request.key, "Volume.set_description", |tags| {
        Ok((meta::tags_of_label(tags, "d"), meta::label_tags("d", text)?))
    })
}

/// `Volume.set`: stores key `k` = `v`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn set(ctx: &Context, request: &VolumeSet) -> CallResult<()> {
    let VolumeSet { sr, key, k, v } = request;
    retag(ctx, sr, key, "Volume.set", |tags| Ok((meta::tags_of_key(tags, k), meta::key_tags(k, v)?)))
}

/// `Volume.unset`: forgets key `k` (idempotent).
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn unset(ctx: &Context, request: &VolumeUnset) -> CallResult<()> {
    let VolumeUnset { sr, key, k } = request;
    retag(ctx, sr, key, "Volume.unset", |tags| Ok((meta::tags_of_key(tags, k), Vec::new())))
}
