//! `SR.set_name` and `SR.set_description` (master): one `vgchange` replacing
//! the tag.

use serde_json::Value;

use crate::context::Context;
use crate::error::Failure;
use crate::smapi::params::Params;
use crate::sr_access::{attached, lvm_for, our_vg, require_master, sr_call};

use super::stat::vg_gone;
use super::vg::{label_tag, DESCRIPTION_TAG, NAME_TAG};

/// `SR.set_name`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn set_name(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    relabel(ctx, params, NAME_TAG, "name", "new_name")
}

/// `SR.set_description`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn set_description(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    relabel(ctx, params, DESCRIPTION_TAG, "description", "new_description")
}

fn relabel(
    ctx: &Context,
    params: &Params,
    prefix: &'static str,
    what: &'static str,
    param: &'static str,
) -> Result<Value, Failure> {
    let text: String = params.get(param)?;
    sr_call(params, || {
        require_master(ctx, if what == "name" { "SR.set_name" } else { "SR.set_description" })?;
        let new_tag = label_tag(prefix, what, &text)?;
        let (state, _lock) = attached(ctx, params)?;
        let lvm = lvm_for(ctx, &state, true)?;
        let vg = our_vg(&lvm, &state)?.ok_or_else(|| vg_gone(&state))?;
        let old: Vec<String> = vg.tags.iter().filter(|t| t.starts_with(prefix)).cloned().collect();
        lvm.retag(&vg.name, &old, &[new_tag])?;
        Ok(Value::Null)
    })
}
