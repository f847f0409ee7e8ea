//! `SR.set_name` and `SR.set_description` (master): one `vgchange` replacing
//! the tag.

use crate::context::Context;
use crate::error::CallResult;
use crate::request::{SrHandle, SrSetDescription, SrSetName};
use crate::sr_access::{attached, lvm_for, our_vg, require_master};

use super::stat::vg_gone;
use super::vg::{label_tag, DESCRIPTION_TAG, NAME_TAG};

/// `SR.set_name`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn set_name(ctx: &Context, request: &SrSetName) -> CallResult<()> {
    relabel(ctx, &request.sr, NAME_TAG, "name", &request.new_name)
}

/// `SR.set_description`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn set_description(ctx: &Context, request: &SrSetDescription) -> CallResult<()> {
    relabel(ctx, &request.sr, DESCRIPTION_TAG, "description", &request.new_description)
}

fn relabel(ctx: &Context, sr: &SrHandle, prefix: &'static str, what: &'static str, text: &str) -> CallResult<()> {
    require_master(ctx, if what == "name" { "SR.set_name" } else { "SR.set_description" })?;
    let new_tag = label_tag(prefix, what, text)?;
    let (state, _lock) = attached(ctx, sr)?;
    let lvm = lvm_for(ctx, &state, true)?;
    let vg = our_vg(&lvm, &state)?.ok_or_else(|| vg_gone(&state))?;
    let old: Vec<String> = vg.tags.iter().filter(|t| t.starts_with(prefix)).cloned().collect();
    lvm.retag(&vg.name, &old, &[new_tag])?;
    Ok(())
}
