//! `SR.stat` (the master's PBD): sizes and health from the paths ("2/2 paths
//! live", "degraded: …"); `Unreachable` with the last known sizes when no
//! path is live.

use crate::context::Context;
use crate::error::{CallError, CallResult};
use crate::lvm::Vg;
use crate::request::SrStat as StatRequest;
use crate::smapi::types::{Health, SrStat};
use crate::sr_access::{attached, lvm_on_namespace, our_vg};
use crate::sr_state::{self, handle_of, SrState};

use super::vg::{tag_value, DESCRIPTION_TAG, NAME_TAG};

/// `SR.stat`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn stat(ctx: &Context, request: &StatRequest) -> CallResult<SrStat> {
    let (mut state, _lock) = attached(ctx, &request.sr)?;
    let paths = crate::sr_paths::health_of(&ctx.host, &state)?;
    let summary = paths.summary();
    let handle = handle_of(&state.sr_uuid);
    if paths.live() == 0 {
        return Ok(with_datasources(stat_record(&handle, &state, None, Health::Unreachable(summary)), &state));
    }
    let lvm = lvm_on_namespace(ctx, &state, false)?;
    let vg = our_vg(&lvm, &state)?.ok_or_else(|| vg_gone(&state))?;
    state.total_space = vg.size;
    state.free_space = vg.free;
    sr_state::save(&ctx.host, &state)?;
    Ok(with_datasources(stat_record(&handle, &state, Some(&vg), Health::Healthy(summary)), &state))
}

/// `SR.stat` names the SR's I/O data sources: the host agent's xcp-rrdd
/// plugin for this SR, which xapi-storage-script registers after
/// `SR.attach` and deregisters after `SR.detach` (`agent::rrd`).
fn with_datasources(stat: SrStat, state: &SrState) -> SrStat {
    SrStat { datasources: vec![crate::agent::rrd::datasource_uri(&state.sr_uuid)], ..stat }
}

/// The error for an attached SR whose VG has disappeared.
pub(super) fn vg_gone(state: &SrState) -> CallError {
    CallError::NotThisSr {
        namespace: state.namespace.canonical(),
        sr_uuid: state.sr_uuid.to_string(),
        found: " (its volume group is gone)".to_owned(),
    }
}

/// The `sr_stat` record of an SR, its name and description from `vg`.
pub(super) fn stat_record(handle: &str, state: &SrState, vg: Option<&Vg>, health: Health) -> SrStat {
    let label = |prefix| vg.and_then(|vg| tag_value(vg, prefix)).map(crate::hex::decode).unwrap_or_default();
    SrStat {
        sr: handle.to_owned(),
        name: label(NAME_TAG),
        uuid: Some(state.sr_uuid.to_string()),
        description: label(DESCRIPTION_TAG),
        free_space: i64::try_from(state.free_space).unwrap_or(i64::MAX),
        total_space: i64::try_from(state.total_space).unwrap_or(i64::MAX),
        datasources: Vec::new(),
        clustered: false,
        health,
    }
}
