//! [`COMMIT`]: the master's collector asks the member whose engine serves a
//! volume to merge a node of its chain online, as [`MergeHere`] does on the
//! master: `action=start` (with `top`, the node merged away, `base`, its
//! parent, and `base_format`) reloads `base` read-write here (it may be
//! active read-only, as a chain's parents are, and the master may have
//! grown it), and `overlay` if given (the node above `top` when that is not
//! the leaf: a parent, read-only here, whose backing link the engine
//! rewrites), and starts the engine's commit; `action=state` reports the
//! job; `action=leaf` reports the image the engine writes now and records
//! it in the disk's handle; `action=give_back` (with `base`) reloads `base`
//! read-only again, if it is active here, after a merge that moved nothing
//! or that left it a parent again (`into`, and the node above the merged one).
//! Only a disk served read-write with no swap in its handle is merged;
//! tapdisk never merges an open disk's leaf.

use std::collections::BTreeMap;

use crate::context::Context;
use crate::engine::{EngineError, Image, ImageFormat};
use crate::error::ErrorCode;
use crate::pool_mappings::{dm_name, mapping_active};
use crate::sr_access::lvm_for;
use crate::sr_state;

use crate::snapshot::ops::Merging;
use crate::snapshot::pool::COMMIT;
use crate::snapshot::served::MergeHere;

use super::{arg, bad, json, lock, lv_arg, lv_name, sr_arg, Refusal};

/// What the master asks.
enum Action<'a> {
    Start { top: &'a str, base: &'a str, base_format: ImageFormat, overlay: Option<&'a str> },
    State,
    Leaf,
    GiveBack { base: &'a str },
}

fn action<'a>(args: &'a BTreeMap<String, String>) -> Result<Action<'a>, Refusal> {
    Ok(match arg(args, COMMIT, "action")? {
        "start" => {
            let base_format = match arg(args, COMMIT, "base_format")? {
                "raw" => ImageFormat::Raw,
                "qcow2" => ImageFormat::Qcow2,
                other => return Err(bad(format!("base_format {other:?}: use raw or qcow2"))),
            };
            let overlay = match args.get("overlay") {
                Some(_) => Some(lv_arg(args, COMMIT, "overlay")?),
                None => None,
            };
            Action::Start {
                top: lv_arg(args, COMMIT, "top")?,
                base: lv_arg(args, COMMIT, "base")?,
                base_format,
                overlay,
            }
        }
        "state" => Action::State,
        "leaf" => Action::Leaf,
        "give_back" => Action::GiveBack { base: lv_arg(args, COMMIT, "base")? },
        other => return Err(bad(format!("{COMMIT}: action {other:?}: use start, state, leaf or give_back"))),
    })
}

/// The engine's error with its causes ("connecting to QMP failed" alone
/// hides the errno that says the daemon is gone).
fn engine_failed(error: &EngineError) -> Refusal {
    (ErrorCode::ToolFailed, vec![crate::error_chain::chain(error)])
}

/// Answers [`COMMIT`]; every argument is validated before anything is touched.
pub(super) fn commit(ctx: &Context, args: &BTreeMap<String, String>) -> Result<String, Refusal> {
    let sr = sr_arg(args, COMMIT)?;
    let volume = lv_arg(args, COMMIT, "volume")?;
    let action = action(args)?;
    let _lock = lock(ctx, &sr)?;
    let here = MergeHere { runner: ctx.runner.as_ref(), host: &ctx.host, sr_uuid: sr.as_str() };
    match action {
        Action::State => json(&serde_json::json!({ "state": here.state(volume).map_err(|e| engine_failed(&e))? })),
        Action::Leaf => json(&serde_json::json!({ "leaf": here.leaf_now(volume).map_err(|e| engine_failed(&e))? })),
        Action::GiveBack { base } => {
            let base_lv = lv_name(base, "base")?;
            let state =
                sr_state::load(&ctx.host, sr.as_str()).map_err(|e| (ErrorCode::HostState, vec![e.to_string()]))?;
            let active = mapping_active(&ctx.host, &dm_name(&state.vg, base));
            if active {
                let lvm = lvm_for(ctx, &state, false).map_err(|e| (ErrorCode::NoPath, vec![e.to_string()]))?;
                lvm.lvs_activate_read_only(&state.vg, std::slice::from_ref(&base_lv))
                    .map_err(|e| (ErrorCode::LvmFailed, vec![e.to_string()]))?;
                tracing::info!(volume, base, "a node of the merge reloaded read-only for the master's collector");
            }
            json(&serde_json::json!({ "read_only": active }))
        }
        Action::Start { top, base, base_format, overlay } => {
            if !here.served().iter().any(|v| v == volume) {
                return Err((
                    ErrorCode::SnapshotRefused,
                    vec![format!(
                        "this host does not serve volume {volume} read-write with no swap in progress; its chain \
                         is merged once the volume is closed"
                    )],
                ));
            }
            let base_lv = lv_name(base, "base")?;
            let overlay_lv = overlay.map(|o| lv_name(o, "overlay")).transpose()?;
            let state =
                sr_state::load(&ctx.host, sr.as_str()).map_err(|e| (ErrorCode::HostState, vec![e.to_string()]))?;
            let image = |format, lv: &str| {
                Image::new(format, format!("/dev/{}/{lv}", state.vg)).map_err(|e| bad(e.to_string()))
            };
            let (top_image, base_image) = (image(ImageFormat::Qcow2, top)?, image(base_format, base)?);
            let lvm = lvm_for(ctx, &state, false).map_err(|e| (ErrorCode::NoPath, vec![e.to_string()]))?;
            for lv in std::iter::once(&base_lv).chain(&overlay_lv) {
                lvm.lv_activate(&state.vg, lv, true).map_err(|e| (ErrorCode::LvmFailed, vec![e.to_string()]))?;
            }
            let overlay_image = overlay.map(|o| image(ImageFormat::Qcow2, o)).transpose()?;
            here.start(volume, &top_image, &base_image, overlay_image.as_ref()).map_err(|e| engine_failed(&e))?;
            tracing::info!(volume, top, base, overlay, "the engine merges for the master's collector");
            json(&serde_json::json!({ "started": true }))
        }
    }
}
