//! `Volume.resize` (master), grow only, of a volume no VM uses: a plain
//! volume with one `lvextend`; a volume with snapshots (a qcow2 leaf over
//! a chain) through [`crate::snapshot::calls::resize`], its leaf grown at
//! rest. Online growth is not offered until proven with guests.

use crate::context::Context;
use crate::error::{CallResult, VolumeError};
use crate::request::VolumeResize;
use crate::snapshot::calls;
use crate::sr_access::{attached, lvm_for, require_master};

use super::meta::VOLUME_TAG;
use super::record::{existing, refuse_in_use};

/// `Volume.resize`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn resize(ctx: &Context, request: &VolumeResize) -> CallResult<()> {
    let VolumeResize { sr, key, new_size } = request;
    let new_size = new_size.bytes();
    {
        require_master(ctx, "Volume.resize")?;
        let (state, _lock) = attached(ctx, sr)?;
        let lvm = lvm_for(ctx, &state, true)?;
        let lv = existing(&lvm, &state, key)?;
        let shrink = |current: u64| VolumeError::Shrink { key: key.to_string(), current, requested: new_size };
        if calls::is_layered(&lv) {
            let (vgs, lvs) = lvm.vgs_and_lvs()?;
            if calls::needs_engine_in(&lvs, VOLUME_TAG, &lv)? {
                let current = calls::virtual_size_of(&lvs, VOLUME_TAG, &lv.name)?;
                if new_size < current {
                    return Err(shrink(current).into());
                }
                if new_size >= current {
                    // The same size again: a header an interrupted resize
                    // left behind its record is finished.
                    let sr = calls::Sr {
                        runner: ctx.runner.as_ref(),
                        host: &ctx.host,
                        lvm: &lvm,
                        state: &state,
                        volume_tag: VOLUME_TAG,
                    };
                    calls::resize(&sr, &lv, new_size, vgs.iter().find(|v| v.name == state.vg), &lvs)?;
                }
                return Ok(());
            }
        }
        if new_size < lv.size {
            return Err(shrink(lv.size).into());
        }
        if new_size == lv.size {
            return Ok(());
        }
        refuse_in_use(ctx, &state, &lv, key.to_string())?;
        lvm.lvextend(&state.vg, &lv.name, new_size)?;
        Ok(())
    }
}
