//! `SR.attach` (every host, each `PBD.plug`): connects every path, finds the
//! namespace by its identity, checks it holds this SR, and records the
//! attachment ([`crate::sr_state`]); the handle is `nvmetcp://sr/<uuid>`.

use serde_json::Value;

use crate::context::Context;
use crate::error::{CallError, Failure};
use crate::ids::SrUuid;
use crate::lvm::Lvm;
use crate::nvme::sysfs::NamespaceIdentity;
use crate::pool_role;
use crate::smapi::params::Params;
use crate::smapi::types::StringMap;
use crate::sr_access::sr_call;
use crate::sr_config::{without_inline_keys, ConfigError, Purpose, SrConfig, SR_UUID_KEY};
use crate::sr_paths::{self, NAMESPACE_TIMEOUT};
use crate::sr_state::{self, handle_of, SrLock, SrState, SR_LOCK_TIMEOUT};

use super::create::required_nqn;
use super::vg::{is_sr, tag_value, UUID_TAG};

/// `SR.attach`.
///
/// # Errors
/// Every failure, as the SMAPI error record.
pub fn attach(ctx: &Context, params: &Params) -> Result<Value, Failure> {
    let configuration: StringMap = params.get("configuration")?;
    sr_call(params, || {
        let uuid = configuration.get(SR_UUID_KEY).and_then(|u| u.parse::<SrUuid>().ok());
        let _lock = match &uuid {
            Some(uuid) => Some(SrLock::acquire(&ctx.host, uuid.as_str(), SR_LOCK_TIMEOUT)?),
            None => None,
        };
        let state = bring_up(ctx, &configuration)?;
        sr_state::save(&ctx.host, &state)?;
        tracing::info!(sr = %state.sr_uuid, vg = %state.vg, "SR attached");
        if pool_role::is_master(&ctx.host) {
            recover_chains(ctx, &state);
        }
        Ok(handle_of(&state.sr_uuid))
    })
}

/// Replays the snapshot journal and runs the collector (the master only),
/// when a read-only look finds chains or journal entries: an SR without
/// snapshots gets no metadata write from attach. A failure leaves the
/// journal for the next attach and fails nothing else: SR.ls hides what is
/// in flight, and the volumes outside chains are fine.
fn recover_chains(ctx: &Context, state: &SrState) {
    let recovered = (|| -> Result<bool, String> {
        let text = |e: &dyn std::fmt::Display| e.to_string();
        let reader = crate::sr_access::lvm_on_namespace(ctx, state, false).map_err(|e| text(&e))?;
        if !crate::snapshot::calls::needs_recovery(&reader.lvs(&state.vg).map_err(|e| text(&e))?) {
            return Ok(false);
        }
        let lvm = crate::sr_access::lvm_for(ctx, state, true).map_err(|e| text(&e))?;
        let volume_tag = crate::volume::meta::VOLUME_TAG;
        let sr = crate::snapshot::calls::Sr { runner: ctx.runner.as_ref(), lvm: &lvm, state, volume_tag };
        crate::snapshot::calls::recover(&sr).map_err(|e| text(&e))
    })();
    if let Err(error) = recovered {
        tracing::error!(sr = %state.sr_uuid, %error, "the snapshot journal could not be replayed; the next SR.attach retries");
    }
}

/// Reconnects and resolves an SR from its device-config, and checks the
/// namespace holds it. Returns the state to record.
fn bring_up(ctx: &Context, configuration: &StringMap) -> Result<SrState, Failure> {
    let config = SrConfig::parse(configuration, Purpose::Attach)?;
    let nqn = required_nqn(&config)?;
    let uuid = config.sr_uuid.clone().ok_or(ConfigError::Missing {
        key: "sr_uuid",
        why: "this device-config was not returned by SR.create; create the SR with xe sr-create",
    })?;
    let reference =
        config.namespace.clone().ok_or(ConfigError::Missing { key: "namespace", why: "name the namespace" })?;
    let expected = sr_paths::connect(ctx, &config, &nqn, uuid.as_str())?;
    let resolved = sr_paths::namespace(&ctx.host, &nqn, &reference, NAMESPACE_TIMEOUT)?;
    let namespace = resolved.namespace.identity.as_ref().map(NamespaceIdentity::canonical).unwrap_or_default();
    let lvm = Lvm::new(ctx.runner.as_ref(), &resolved.device, pool_role::is_master(&ctx.host))?;
    let vgs = lvm.vgs()?;
    let vg = vgs.iter().find(|vg| is_sr(vg) && tag_value(vg, UUID_TAG) == Some(uuid.as_str()));
    let Some(vg) = vg.cloned() else {
        let found = match vgs.first() {
            Some(other) => format!(" (it holds volume group {})", other.name),
            None => " (it holds no volume group)".to_owned(),
        };
        return Err(CallError::NotThisSr { namespace, sr_uuid: uuid.to_string(), found }.into());
    };
    Ok(SrState {
        sr_uuid: uuid.to_string(),
        vg: vg.name,
        nqn: nqn.to_string(),
        namespace,
        paths: expected,
        configuration: without_inline_keys(configuration),
        total_space: vg.size,
        free_space: vg.free,
        extent_size: vg.extent_size,
    })
}
