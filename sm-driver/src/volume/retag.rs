//! `Volume.set_name`, `set_description`, `set` and `unset` (master): one
//! `lvchange --deltag … --addtag …` each, so a killed call leaves the old or
//! the new metadata.

use serde_json::Value;

use crate::context::Context;
use crate::error::{Failure, VolumeError};
use crate::smapi::params::Params;
use crate::sr_access::{attached, lvm_for, require_master, sr_call};

use super::record::existing;
use super::{budget, meta};

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
        let after: Vec<String> =
            lv.tags.iter().filter(|t| !remove.contains(t)).cloned().chain(add.iter().cloned()).collect();
        if budget::tag_bytes(&after) > budget::tag_bytes(&lv.tags) {
            budget::check(&key, &lv.tags, &after, &lvm.lvs(&state.vg)?)?;
        }
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
