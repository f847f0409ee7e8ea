//! `SR.attach` (every host, each `PBD.plug`): connects every path, finds the
//! namespace by its identity, checks it holds this SR, and records the
//! attachment ([`crate::sr_state`]); the handle is `nvmetcp://sr/<uuid>`.

use crate::context::Context;
use crate::error::{CallError, CallResult};
use crate::ids::SrUuid;
use crate::lvm::{Lv, Lvm};
use crate::pool_role;
use crate::request::SrAttach;
use crate::smapi::types::StringMap;
use crate::sr_config::{without_inline_keys, AttachConfig, NamespaceRef, SR_UUID_KEY};
use crate::sr_paths;
use crate::sr_state::{self, handle_of, SrLock, SrState, SR_LOCK_TIMEOUT};

use super::vg::{is_sr, tag_value, UUID_TAG};

/// `SR.attach`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn attach(ctx: &Context, request: &SrAttach) -> CallResult<String> {
    let configuration = &request.configuration;
    {
        let uuid = configuration.get(SR_UUID_KEY).and_then(|u| u.parse::<SrUuid>().ok());
        let _lock = match &uuid {
            Some(uuid) => Some(SrLock::acquire(&ctx.host, uuid.as_str(), SR_LOCK_TIMEOUT)?),
            None => None,
        };
        let (state, lvs) = bring_up(ctx, configuration)?;
        sr_state::save(&ctx.host, &state)?;
        tracing::info!(sr = %state.sr_uuid, vg = %state.vg, "SR attached");
        if pool_role::is_master(&ctx.host) && crate::snapshot::calls::needs_recovery(&lvs) {
            recover_chains(ctx, &state);
        }
        Ok(handle_of(&state.sr_uuid))
    }
}

/// Replays the snapshot journal and runs the collector (the master only),
/// when the attach's one LVM report found chains or journal entries: an SR
/// without snapshots gets no other LVM call and no metadata write from
/// attach. A failure leaves the journal for the next attach and fails
/// nothing else: SR.ls hides what is in flight, and the volumes outside
/// chains are fine.
fn recover_chains(ctx: &Context, state: &SrState) {
    let recovered = (|| -> Result<bool, String> {
        let text = |e: &dyn std::fmt::Display| e.to_string();
        let lvm = crate::sr_access::lvm_for(ctx, state, true).map_err(|e| text(&e))?;
        let volume_tag = crate::volume::meta::VOLUME_TAG;
        let sr =
            crate::snapshot::calls::Sr { runner: ctx.runner.as_ref(), host: &ctx.host, lvm: &lvm, state, volume_tag };
        crate::snapshot::calls::recover(&sr).map_err(|e| text(&e))
    })();
    if let Err(error) = recovered {
        tracing::error!(sr = %state.sr_uuid, %error, "the snapshot journal could not be replayed; the next SR.attach retries");
    }
}

/// Reconnects and resolves an SR from its device-config, and checks the
/// namespace holds it, with one LVM call. Returns the state to record and
/// the VG's LVs.
fn bring_up(ctx: &Context, configuration: &StringMap) -> CallResult<(SrState, Vec<Lv>)> {
    let AttachConfig { endpoints: config, nqn, namespace, sr_uuid: uuid } = AttachConfig::parse(configuration)?;
    let reference = NamespaceRef::Identity(namespace.clone());
    // The kernel's paths are held for the user named after the SR.
    let up = sr_paths::bring_up(ctx, &config, &nqn, &reference, uuid.as_str(), uuid.as_str())?;
    // Resolved by its identity, so the namespace found is the one named.
    let namespace = up.identity.clone().unwrap_or(namespace);
    let lvm = Lvm::new(ctx.runner.as_ref(), &up.device, pool_role::is_master(&ctx.host))?;
    let (vgs, lvs) = lvm.vgs_and_lvs()?;
    let vg = vgs.iter().find(|vg| is_sr(vg) && tag_value(vg, UUID_TAG) == Some(uuid.as_str()));
    let Some(vg) = vg.cloned() else {
        let found = match vgs.first() {
            Some(other) => format!(" (it holds volume group {})", other.name),
            None => " (it holds no volume group)".to_owned(),
        };
        return Err(CallError::NotThisSr { namespace: namespace.canonical(), sr_uuid: uuid.to_string(), found }.into());
    };
    let lvs = lvs.into_iter().filter(|lv| lv.vg == vg.name).collect();
    let state = SrState {
        sr_uuid: uuid,
        vg: vg.name,
        nqn,
        namespace,
        paths: up.paths,
        configuration: without_inline_keys(configuration),
        total_space: vg.size,
        free_space: vg.free,
        extent_size: vg.extent_size,
        initiator: up.initiator,
    };
    Ok((state, lvs))
}

/// SR.attach in process: a pool member ready for NVMe/TCP whose fabrics device
/// creates controllers in a sysfs tree, the namespace's head there, LVM
/// answered by the recording runner.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::cmd::{FakeRunner, Program};
    use crate::context::Context;
    use crate::error::to_error_record;
    use crate::nvme::sysfs::fixture::SysfsTree;
    use crate::nvme::sysfs::NamespaceIdentity;
    use crate::smapi::method::{Method, PluginKind};
    use crate::smapi::params::Params;

    const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
    const NQN: &str = "nqn.2024-01.io.example:array";
    const WWID: &str = "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc";

    /// `lvm fullreport` of the SR's VG holding one plain volume.
    fn report(sr: &str) -> String {
        format!(
            r#"{{"report": [{{"vg": [{{"vg_name":"nvmetcp_x", "vg_uuid":"u", "vg_size":"1073741824",
            "vg_free":"536870912", "vg_extent_size":"4194304", "vg_tags":"nvmetcp.uuid={sr},nvmetcp_sr"}}],
            "pv": [], "lv": [{{"lv_name":"vol-1", "vg_name":"nvmetcp_x", "lv_size":"4194304", "lv_tags":"nvmetcp_volume",
            "lv_active":""}}], "pvseg": [], "seg": []}}]}}"#
        )
    }

    fn attach(runner: &Arc<FakeRunner>) -> (SysfsTree, Result<serde_json::Value, String>) {
        attach_on(runner, "slave:10.0.0.9")
    }

    fn attach_on(runner: &Arc<FakeRunner>, role: &str) -> (SysfsTree, Result<serde_json::Value, String>) {
        let tree = SysfsTree::new();
        tree.fabric_ready();
        tree.head("nvme-subsys0", "nvme0n1", NQN, 1, WWID, 2048);
        tree.write("/etc/xensource/pool.conf", &format!("{role}\n"));
        let ctx = Context::fake(tree.host(), Box::new(Arc::clone(runner)));
        let namespace = NamespaceIdentity::parse(WWID).unwrap().canonical();
        let body = format!(
            r#"{{"dbg":"a","configuration":{{"portals":"10.0.1.10,10.0.2.10","nqn":"{NQN}",
            "namespace":"{namespace}","sr_uuid":"{SR}"}}}}"#
        );
        let params = Params::from_json(Method::lookup("SR.attach").unwrap(), &body).unwrap();
        let reply = crate::dispatch::dispatch(&ctx, PluginKind::Volume, &params);
        (tree, reply.map_err(|f| to_error_record(&f, "h1").code))
    }

    #[test]
    fn attach_connects_every_portal_checks_the_vg_and_records_the_sr() {
        let runner = Arc::new(FakeRunner::new().then_stdout(&report(SR)));
        let (tree, reply) = attach(&runner);
        assert_eq!(reply.unwrap(), format!("nvmetcp://sr/{SR}"));
        let controllers = crate::nvme::sysfs::controllers(&tree.host()).unwrap();
        let mut portals: Vec<String> =
            controllers.iter().filter_map(|c| c.address.get("traddr")).map(str::to_owned).collect();
        portals.sort();
        assert_eq!(portals, ["10.0.1.10", "10.0.2.10"]);
        let state = crate::sr_state::load(&tree.host(), SR).unwrap();
        assert_eq!((state.vg.as_str(), state.paths.len()), ("nvmetcp_x", 2));
        let programs: Vec<Program> = runner.calls().iter().map(|c| c.program).collect();
        assert_eq!(programs, [Program::Lvm], "one LVM report and no other process: {:?}", runner.calls());
    }

    #[test]
    fn attach_on_the_master_without_snapshots_is_one_lvm_call() {
        // The journal check reads the LVs of the same report, not a second `lvs`.
        let runner = Arc::new(FakeRunner::new().then_stdout(&report(SR)));
        let (_tree, reply) = attach_on(&runner, "master");
        assert_eq!(reply.unwrap(), format!("nvmetcp://sr/{SR}"));
        let calls = runner.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(calls[0].shown.starts_with("lvm fullreport "), "{}", calls[0].shown);
    }

    #[test]
    fn attach_refuses_a_namespace_holding_another_sr() {
        let runner = Arc::new(FakeRunner::new().then_stdout(&report("11111111-2222-3333-4444-555555555555")));
        let (tree, reply) = attach(&runner);
        assert_eq!(reply, Err("NVMETCP_SR_NOT_FOUND".to_owned()));
        assert!(crate::sr_state::load(&tree.host(), SR).is_err(), "nothing recorded");
    }
}
