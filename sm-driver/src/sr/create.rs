//! `SR.create` (pool master, once): connects, resolves the namespace, refuses
//! one that holds any signature unless `force=true`, creates the PV and the
//! VG with its tags ([`super::vg`]), releases the connections it made, and
//! returns the device-config to store with `sr_uuid` and the namespace's
//! stable identity.

use crate::context::Context;
use crate::error::{CallError, CallFailure, CallResult};
use crate::ids::{SrUuid, VgName};
use crate::initiator::InitiatorKind;
use crate::lvm::{pv_uuid_for, Lvm};
use crate::nvme::names::Nqn;
use crate::nvme::resolve::{pin, PinnedNamespace};
use crate::nvme::sysfs::NamespaceIdentity;
use crate::nvme::users::release;
use crate::request::SrCreate;
use crate::smapi::types::StringMap;
use crate::sr_access::require_master;
use crate::sr_config::{without_inline_keys, CreateConfig, NamespaceRef, SrConfig, SR_UUID_KEY};
use crate::sr_paths::{self, NAMESPACE_TIMEOUT};
use crate::sr_state::{SrLock, SR_LOCK_TIMEOUT};

use super::inspect::existing_data;
use super::vg::{label_tag, tag_value, vg_name, DESCRIPTION_TAG, NAME_TAG, SR_TAG, UUID_TAG};

/// `SR.create`.
///
/// # Errors
/// Every failure, with where it was raised (dispatch makes the record).
pub fn create(ctx: &Context, request: &SrCreate) -> CallResult<StringMap> {
    let SrCreate { uuid, configuration, name, description } = request;
    {
        require_master(ctx, "SR.create")?;
        let CreateConfig { endpoints: config, nqn, namespace: reference } = CreateConfig::parse(configuration)?;
        let tags = vec![
            SR_TAG.to_owned(),
            format!("{UUID_TAG}{uuid}"),
            label_tag(NAME_TAG, "name", name)?,
            label_tag(DESCRIPTION_TAG, "description", description)?,
            crate::writer_guard::tag_for(&crate::writer_guard::this_host(&ctx.host)),
        ];
        let _lock = SrLock::acquire(&ctx.host, uuid.as_str(), SR_LOCK_TIMEOUT)?;
        let user = format!("create-{uuid}");
        let attached = attached_over_userspace(ctx, uuid.as_str());
        let identity = match (sr_paths::initiator(ctx, &config)?.kind, attached) {
            (InitiatorKind::Kernel, _) => {
                sr_paths::connect(ctx, &config, &nqn, &user)?;
                let outcome = create_on_namespace(ctx, &config, &nqn, &reference, uuid, &tags);
                // Leave no connection behind that create made; PBD.plug attaches.
                release(&ctx.host, &user)?;
                outcome?
            }
            (InitiatorKind::Userspace, Some(state)) => {
                // A retry after this host attached the SR: its daemon serves
                // the SR's VMs and keeps running; the SR exists, so the
                // create only finds its VG again on the attached device.
                let identity = Some(state.namespace.clone());
                let (device, file) =
                    crate::initiator::userspace::pinned_device(&ctx.host, uuid.as_str()).map_err(CallFailure::from)?;
                let lvm = Lvm::new(ctx.runner.as_ref(), &device, true)?.holding(file);
                tracing::info!(sr = %uuid, "SR.create again on a host that attached it: its initiator stays up");
                create_on_device(ctx, &config, &nqn, &lvm, identity, 0, uuid, &tags)?
            }
            (InitiatorKind::Userspace, None) => {
                let up = sr_paths::bring_up(ctx, &config, &nqn, &reference, &user, uuid.as_str())?;
                let outcome = crate::initiator::userspace::pinned_device(&ctx.host, uuid.as_str())
                    .map_err(CallFailure::from)
                    .and_then(|(device, file)| {
                        let lvm = Lvm::new(ctx.runner.as_ref(), &device, true)?.holding(file);
                        create_on_device(ctx, &config, &nqn, &lvm, up.identity, up.nsid, uuid, &tags)
                    });
                // The daemon create started is stopped; PBD.plug starts the SR's own.
                sr_paths::release(ctx, up.initiator, &user, uuid.as_str())?;
                outcome?
            }
        };
        let mut stored = without_inline_keys(configuration);
        stored.insert("namespace".to_owned(), identity.canonical());
        stored.insert(SR_UUID_KEY.to_owned(), uuid.to_string());
        stored.remove("force");
        Ok(stored)
    }
}

/// The SR's state when this host has it attached over the userspace initiator.
fn attached_over_userspace(ctx: &Context, uuid: &str) -> Option<crate::sr_state::SrState> {
    crate::sr_state::load(&ctx.host, uuid).ok().filter(|state| state.initiator == InitiatorKind::Userspace)
}

fn create_on_namespace(
    ctx: &Context,
    config: &SrConfig,
    nqn: &Nqn,
    reference: &NamespaceRef,
    uuid: &SrUuid,
    tags: &[String],
) -> CallResult<NamespaceIdentity> {
    let resolved = sr_paths::namespace(&ctx.host, nqn, reference, NAMESPACE_TIMEOUT)?;
    let PinnedNamespace { resolved, file } = pin(&ctx.host, nqn, resolved)?;
    let lvm = Lvm::new(ctx.runner.as_ref(), &resolved.device, true)?.holding(file);
    create_on_device(ctx, config, nqn, &lvm, resolved.namespace.identity, resolved.namespace.nsid, uuid, tags)
}

/// Creates the SR through `lvm`, confined to the namespace's block device
/// (either initiator's), held open.
#[allow(clippy::too_many_arguments)] // one call's context, each a different thing
fn create_on_device(
    ctx: &Context,
    config: &SrConfig,
    nqn: &Nqn,
    lvm: &Lvm<'_>,
    identity: Option<NamespaceIdentity>,
    nsid: u32,
    uuid: &SrUuid,
    tags: &[String],
) -> CallResult<NamespaceIdentity> {
    let identity = identity.ok_or(CallError::NoIdentity { nqn: nqn.to_string(), nsid })?;
    let vgs = lvm.vgs()?;
    // Already created by an earlier attempt of this very call: done.
    if vgs.iter().any(|vg| tag_value(vg, UUID_TAG) == Some(uuid.as_str())) {
        return Ok(identity);
    }
    let device = lvm.device().to_owned();
    // Another nvmetcp SR is never overwritten, not even with force: its
    // volumes may be in use on any host of any pool. SR.destroy removes it.
    if let Some(other) = vgs.iter().find(|vg| vg.tags.iter().any(|t| t == SR_TAG)) {
        return Err(CallError::OtherSr {
            namespace: identity.canonical(),
            device,
            sr_uuid: tag_value(other, UUID_TAG).unwrap_or("?").to_owned(),
            vg: other.name.to_string(),
        }
        .into());
    }
    let pv_uuid = pv_uuid_for(uuid.as_str()).ok_or_else(|| CallError::BadUuid(uuid.to_string()))?;
    // vgcreate refuses a name taken under /dev: clear what a killed LVM
    // command of an earlier SR of this UUID left, before anything is written.
    let vg = vg_name(uuid);
    let left = super::device_nodes::clear_dead(&ctx.host, &vg);
    if !left.is_empty() {
        return Err(CallError::DeviceNodesLeft { dir: format!("/dev/{vg}"), left }.into());
    }
    // A create of this very SR killed between pvcreate and vgcreate left its
    // PV (recognised by the UUID derived from the SR's): go on from there.
    let leftover = lvm.pv()?.is_some_and(|pv| pv.vg.is_empty() && pv.uuid == pv_uuid);
    if leftover {
        tracing::info!(%device, "the PV an interrupted SR.create of this SR left: creating its VG");
    } else {
        if let Some(found) = existing_data(ctx, &device)? {
            if !config.force {
                return Err(CallError::InUse { namespace: identity.canonical(), device, found }.into());
            }
            tracing::warn!(%device, %found, "force=true: overwriting the namespace");
        }
        lvm.pvcreate(config.force, &pv_uuid)?;
    }
    create_vg(lvm, &vg, tags)?;
    tracing::info!(sr = %uuid, %vg, %device, "SR created");
    Ok(identity)
}

/// Creates the VG on the fresh PV; if that fails, removes the PV again (the
/// namespace is left as it was found), and says so when that fails too.
fn create_vg(lvm: &Lvm<'_>, vg: &VgName, tags: &[String]) -> Result<(), CallError> {
    let Err(source) = lvm.vgcreate(vg, tags) else { return Ok(()) };
    match lvm.pvremove() {
        Ok(()) => Err(source.into()),
        Err(undo) => {
            tracing::error!(device = lvm.device(), %undo, "rollback of pvcreate failed");
            Err(CallError::CreateRolledBackBadly {
                device: lvm.device().to_owned(),
                undo: Box::new(undo),
                source: Box::new(source),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::create_vg;
    use crate::cmd::{CmdError, FakeRunner, Program};
    use crate::error::CallError;
    use crate::lvm::Lvm;

    fn failed(command: &str) -> CmdError {
        CmdError::Failed {
            command: command.to_owned(),
            status: "exit status 5".to_owned(),
            code: Some(5),
            stdout: String::new(),
            stderr: format!("{command}: no"),
        }
    }

    #[test]
    fn a_failed_vgcreate_removes_the_pv_through_the_device_filter() {
        let runner = FakeRunner::new().then(Err(failed("vgcreate"))).then_stdout("");
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme0n1"), true).unwrap();
        let error = create_vg(&lvm, &"nvmetcp_x".parse().unwrap(), &[]).unwrap_err();
        assert!(matches!(error, CallError::Lvm(_)), "{error:?}");
        let calls = runner.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].program, Program::Lvm);
        let undo = &calls[1].shown;
        assert!(undo.contains("pvremove") && undo.contains("--config") && undo.contains("/dev/nvme0n1"), "{undo}");
    }

    #[test]
    fn a_failed_rollback_is_reported_not_only_logged() {
        let runner = FakeRunner::new().then(Err(failed("vgcreate"))).then(Err(failed("pvremove")));
        let lvm = Lvm::new(&runner, Path::new("/dev/nvme0n1"), true).unwrap();
        let error = create_vg(&lvm, &"nvmetcp_x".parse().unwrap(), &[]).unwrap_err();
        let CallError::CreateRolledBackBadly { device, .. } = &error else { panic!("{error:?}") };
        assert_eq!(device, "/dev/nvme0n1");
        assert!(error.to_string().contains("run 'pvremove /dev/nvme0n1'"), "{error}");
    }

    /// `create_on_namespace` in process: the namespace's head in a sysfs
    /// tree, LVM answered by the recording runner.
    mod on_namespace {
        use std::sync::Arc;

        use super::super::create_on_namespace;
        use crate::cmd::{CmdError, FakeRunner, Program};
        use crate::context::Context;
        use crate::error::{to_error_record, CallResult};
        use crate::nvme::sysfs::fixture::SysfsTree;
        use crate::nvme::sysfs::NamespaceIdentity;
        use crate::sr_config::CreateConfig;

        const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
        const NQN: &str = "nqn.2024-01.io.example:array";
        const WWID: &str = "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc";

        fn run(runner: &Arc<FakeRunner>) -> CallResult<NamespaceIdentity> {
            run_on(runner, &SysfsTree::new())
        }

        /// `run` on the host of `tree`.
        fn run_on(runner: &Arc<FakeRunner>, tree: &SysfsTree) -> CallResult<NamespaceIdentity> {
            tree.head("nvme-subsys0", "nvme0n1", NQN, 1, WWID, 2048);
            let ctx = Context::fake(tree.host(), Box::new(Arc::clone(runner)));
            let map = [("portals", "10.0.0.1"), ("nqn", NQN), ("namespace", "1")]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let config = CreateConfig::parse(&map).unwrap();
            create_on_namespace(&ctx, &config.endpoints, &config.nqn, &config.namespace, &SR.parse().unwrap(), &[])
        }

        fn subcommands(runner: &FakeRunner) -> Vec<String> {
            runner
                .calls()
                .iter()
                .map(|c| match c.program {
                    Program::Lvm => c.shown.split_whitespace().nth(1).unwrap_or_default().to_owned(),
                    other => other.name().to_owned(),
                })
                .collect()
        }

        #[test]
        fn an_sr_already_created_by_this_call_is_success_and_writes_nothing() {
            let vgs = format!(
                r#"{{"report": [{{"vg": [{{"vg_name":"nvmetcp_x", "vg_uuid":"u", "vg_size":"1", "vg_free":"1",
                "vg_extent_size":"4194304", "vg_tags":"nvmetcp.uuid={SR},nvmetcp_sr"}}]}}]}}"#
            );
            let runner = Arc::new(FakeRunner::new().then_stdout(&vgs));
            assert_eq!(run(&runner).unwrap(), NamespaceIdentity::parse(WWID).unwrap());
            assert_eq!(subcommands(&runner), ["vgs"], "no pvcreate, no vgcreate");
        }

        #[test]
        fn the_pv_a_killed_create_of_this_sr_left_is_recognised() {
            let pv = r#"{"report": [{"pv": [{"pv_uuid":"3f1c6d-0e8a-8f4e-0a9b-5e2d-7c1f-0a9e11", "vg_name":"",
                "pe_start":"9437184"}]}]}"#;
            let runner =
                Arc::new(FakeRunner::new().then_stdout(r#"{"report": [{"vg": []}]}"#).then_stdout(pv).then_stdout(""));
            assert_eq!(run(&runner).unwrap(), NamespaceIdentity::parse(WWID).unwrap());
            assert_eq!(subcommands(&runner), ["vgs", "pvs", "vgcreate"], "no data check of its own PV, no pvcreate");
        }

        const VG_DIR: &str = "/dev/nvmetcp_3f1c6d0e8a8f4e0a9b5e2d7c1f0a9e11";

        #[test]
        fn dead_links_a_killed_lvm_left_under_the_vg_name_are_cleared_first() {
            let runner = Arc::new(
                FakeRunner::new()
                    .then_stdout(r#"{"report": [{"vg": []}]}"#)
                    .then_stdout(r#"{"report": [{"pv": []}]}"#)
                    .then(Err(CmdError::Failed {
                        command: "blkid".to_owned(),
                        status: "exit status 2".to_owned(),
                        code: Some(2),
                        stdout: String::new(),
                        stderr: String::new(),
                    }))
                    .then_stdout("")
                    .then_stdout(""),
            );
            let tree = SysfsTree::new();
            let vg_dir = tree.host().path(VG_DIR);
            std::fs::create_dir_all(&vg_dir).unwrap();
            std::os::unix::fs::symlink("../dm-4", vg_dir.join("vol-1")).unwrap();
            run_on(&runner, &tree).unwrap();
            assert!(!vg_dir.exists(), "vgcreate would refuse the name");
            assert_eq!(subcommands(&runner), ["vgs", "pvs", "blkid", "pvcreate", "vgcreate"]);
        }

        #[test]
        fn a_mapped_lv_under_the_vg_name_is_a_clear_refusal_before_anything_is_written() {
            let runner = Arc::new(
                FakeRunner::new().then_stdout(r#"{"report": [{"vg": []}]}"#).then_stdout(r#"{"report": [{"pv": []}]}"#),
            );
            let tree = SysfsTree::new();
            let vg_dir = tree.host().path(VG_DIR);
            std::fs::create_dir_all(&vg_dir).unwrap();
            std::os::unix::fs::symlink("../dm-4", vg_dir.join("vol-1")).unwrap();
            std::fs::create_dir_all(tree.host().path("/sys/block/dm-4/dm")).unwrap();
            let mapping = "nvmetcp_3f1c6d0e8a8f4e0a9b5e2d7c1f0a9e11-vol--1\n";
            std::fs::write(tree.host().path("/sys/block/dm-4/dm/name"), mapping).unwrap();
            let failure = run_on(&runner, &tree).unwrap_err().into();
            let record = to_error_record(&failure, "h1");
            assert_eq!(record.code, "NVMETCP_HOST_STATE");
            assert!(
                record.params[0].contains("[\"vol-1\"]") && record.params[0].contains("dmsetup remove"),
                "{}",
                record.params[0]
            );
            assert!(subcommands(&runner).len() <= 2, "no pvcreate: {:?}", subcommands(&runner));
        }

        #[test]
        fn another_nvmetcp_sr_is_never_overwritten() {
            let vgs = r#"{"report": [{"vg": [{"vg_name":"nvmetcp_other", "vg_uuid":"u", "vg_size":"1", "vg_free":"1",
                "vg_extent_size":"4194304", "vg_tags":"nvmetcp.uuid=11111111-2222-3333-4444-555555555555,nvmetcp_sr"}]}]}"#;
            let runner = Arc::new(FakeRunner::new().then_stdout(vgs));
            let failure = run(&runner).unwrap_err().into();
            let record = to_error_record(&failure, "h1");
            assert_eq!(record.code, "NVMETCP_NAMESPACE_IN_USE");
            assert!(record.params[0].contains("force never overwrites an nvmetcp SR"), "{}", record.params[0]);
            assert_eq!(subcommands(&runner), ["vgs"]);
        }

        #[test]
        fn a_failed_create_removes_its_pv_and_reports_the_vgcreate_failure() {
            let nothing = CmdError::Failed {
                command: "blkid".to_owned(),
                status: "exit status 2".to_owned(),
                code: Some(2),
                stdout: String::new(),
                stderr: String::new(),
            };
            let refused = CmdError::Failed {
                command: "lvm vgcreate".to_owned(),
                status: "exit status 5".to_owned(),
                code: Some(5),
                stdout: String::new(),
                stderr: "vgcreate: no".to_owned(),
            };
            let runner = Arc::new(
                FakeRunner::new()
                    .then_stdout(r#"{"report": [{"vg": []}]}"#)
                    .then_stdout(r#"{"report": [{"pv": []}]}"#)
                    .then(Err(nothing))
                    .then_stdout("")
                    .then(Err(refused))
                    .then_stdout(""),
            );
            let failure = run(&runner).unwrap_err().into();
            assert_eq!(to_error_record(&failure, "h1").code, "NVMETCP_LVM_FAILED");
            assert_eq!(subcommands(&runner), ["vgs", "pvs", "blkid", "pvcreate", "vgcreate", "pvremove"]);
            let undo = runner.calls().last().unwrap().shown.clone();
            assert!(undo.contains("--config") && undo.ends_with("/dev/nvme0n1"), "the one-device filter: {undo}");
        }
    }
}
