//! The serving host's side of the pool's snapshot calls: the XAPI host
//! plugin functions the master calls (`host.call_plugin(host, "nvmetcp",
//! <function>, args)`) on the host whose engine serves a layered volume.
//!
//! * [`SERVING`]: which leaf this host's engine writes for a volume, if it
//!   serves it (the master's snapshot finds the host to ask, and its replay
//!   learns whether an interrupted swap happened);
//! * [`OPEN`]: the volumes this host serves (the master's collector leaves
//!   their chains alone);
//! * [`SWAP`]: the running snapshot's switch: activate the new leaf, pause
//!   the disk, switch it to the new leaf, resume, then reload the old leaf
//!   read-only ([`crate::snapshot::served::ServedHere`], pause first, then swap);
//! * [`RELEASE`]: deactivate an LV the master is about to remove, refused
//!   while this host has it open;
//! * [`COMMIT`]: the collector's online merge in a chain this host's engine
//!   serves (`chain_member/commit.rs`).
//!
//! Each runs under this host's SR lock, as the datapath calls do, and
//! writes no LVM metadata (activation only). Every argument is validated
//! before use: the SR uuid, and LV names as the engine accepts disk names.
//!
//! The master's side, and the functions' names, are
//! [`crate::snapshot::pool`]; this module sits beside the host plugin,
//! outside the snapshot room, because it answers with the error codes.

use std::collections::BTreeMap;

use crate::context::Context;
use crate::engine::{DiskName, Image, ImageFormat};
use crate::error::ErrorCode;
use crate::ids::{LvName, SrUuid};
use crate::pool_mappings::{dm_name, mapping_active};
use crate::sr_access::lvm_for;
use crate::sr_state::{self, SrLock, SR_LOCK_TIMEOUT};

use crate::snapshot::ops::Merging;
use crate::snapshot::ops::NoFaults;
use crate::snapshot::pool::{COMMIT, OPEN, RELEASE, SERVING, SWAP};
use crate::snapshot::served::{engine, open_here, open_volumes, MergeHere, ServedHere};

mod commit;

/// The functions, with what each takes and returns (the host plugin lists them).
pub const FUNCTIONS: &[(&str, &str)] = &[
    (SERVING, "JSON {\"open\", \"leaf\"}: args sr, volume: the leaf this host's engine writes for the volume"),
    (OPEN, "JSON {\"volumes\", \"mergeable\"}: args sr: the layered volumes this host's engine serves (mergeable: read-write, no swap)"),
    (SWAP, "JSON {\"leaf\"}: args sr, volume, new_leaf: pause the served disk, switch it to new_leaf, resume"),
    (RELEASE, "JSON {\"released\"}: args sr, lv: deactivate the LV here, refused while it is open"),
    (COMMIT, "JSON: args sr, volume, action=start (top, base, base_format) | state | leaf | give_back (base): an online merge by this host's engine"),
];

/// A refusal, as the host plugin answers it.
type Refusal = (ErrorCode, Vec<String>);

fn bad(why: String) -> Refusal {
    (ErrorCode::BadPluginCall, vec![why])
}

fn arg<'a>(args: &'a BTreeMap<String, String>, function: &str, name: &str) -> Result<&'a str, Refusal> {
    args.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad(format!("{function} needs the argument {name}")))
}

fn sr_arg(args: &BTreeMap<String, String>, function: &str) -> Result<SrUuid, Refusal> {
    arg(args, function, "sr")?.parse().map_err(|e: crate::ids::BadId| bad(format!("sr: {e}")))
}

fn lv_arg<'a>(args: &'a BTreeMap<String, String>, function: &str, name: &str) -> Result<&'a str, Refusal> {
    let value = arg(args, function, name)?;
    DiskName::new(value).map_err(|e| bad(format!("{name}: {e}")))?;
    Ok(value)
}

/// `value` of the argument `name` as an LV name, for LVM.
fn lv_name(value: &str, name: &str) -> Result<LvName, Refusal> {
    value.parse().map_err(|e| bad(format!("{name}: {e}")))
}

fn lock(ctx: &Context, sr: &SrUuid) -> Result<SrLock, Refusal> {
    SrLock::acquire(&ctx.host, sr.as_str(), SR_LOCK_TIMEOUT).map_err(|e| (ErrorCode::HostState, vec![e.to_string()]))
}

fn json(value: &serde_json::Value) -> Result<String, Refusal> {
    Ok(value.to_string())
}

/// Answers `function` if it is one of this module's; `None` otherwise.
#[must_use]
pub fn answer(ctx: &Context, function: &str, args: &BTreeMap<String, String>) -> Option<Result<String, Refusal>> {
    Some(match function {
        SERVING => serving(ctx, args),
        OPEN => open(ctx, args),
        SWAP => swap(ctx, args),
        RELEASE => release(ctx, args),
        COMMIT => commit::commit(ctx, args),
        _ => return None,
    })
}

fn serving(ctx: &Context, args: &BTreeMap<String, String>) -> Result<String, Refusal> {
    let sr = sr_arg(args, SERVING)?;
    let volume = lv_arg(args, SERVING, "volume")?;
    let _lock = lock(ctx, &sr)?;
    let leaf = open_here(&ctx.host, sr.as_str(), volume).map(|d| d.leaf.path_str().to_owned());
    json(&serde_json::json!({ "open": leaf.is_some(), "leaf": leaf }))
}

fn open(ctx: &Context, args: &BTreeMap<String, String>) -> Result<String, Refusal> {
    let sr = sr_arg(args, OPEN)?;
    let _lock = lock(ctx, &sr)?;
    let mut volumes = open_volumes(&ctx.host, sr.as_str());
    volumes.sort();
    let mut mergeable = MergeHere { runner: ctx.runner.as_ref(), host: &ctx.host, sr_uuid: sr.as_str() }.served();
    mergeable.sort();
    json(&serde_json::json!({ "volumes": volumes, "mergeable": mergeable }))
}

fn swap(ctx: &Context, args: &BTreeMap<String, String>) -> Result<String, Refusal> {
    let sr = sr_arg(args, SWAP)?;
    let volume = lv_arg(args, SWAP, "volume")?;
    let new_leaf = lv_arg(args, SWAP, "new_leaf")?;
    let new_leaf_lv = lv_name(new_leaf, "new_leaf")?;
    // Everything before the engine's swap leaves the disk on its old leaf.
    let not_done = |why: String| (ErrorCode::SwapNotDone, vec![why]);
    let _lock = lock(ctx, &sr).map_err(|(_, why)| not_done(why.join(" ")))?;
    let state = sr_state::load(&ctx.host, sr.as_str()).map_err(|e| not_done(e.to_string()))?;
    let Some(disk) = open_here(&ctx.host, sr.as_str(), volume) else {
        return Err(not_done(format!("this host does not serve volume {volume}")));
    };
    if crate::snapshot::served::open_read_only(&ctx.host, sr.as_str(), volume) {
        return Err(not_done(format!(
            "volume {volume} is attached read-only there (a snapshot volume): it is never swapped onto a \
             writable leaf; detach it first"
        )));
    }
    let image =
        Image::new(ImageFormat::Qcow2, format!("/dev/{}/{new_leaf}", state.vg)).map_err(|e| bad(e.to_string()))?;
    if disk.leaf == image {
        // Asked again after a lost answer: it happened.
        return json(&serde_json::json!({ "leaf": image.path_str() }));
    }
    let lvm = lvm_for(ctx, &state, false).map_err(|e| not_done(e.to_string()))?;
    lvm.lv_activate(&state.vg, &new_leaf_lv, true).map_err(|e| not_done(e.to_string()))?;
    let engine = engine(ctx.runner.as_ref(), &ctx.host).map_err(|e| not_done(e.to_string()))?;
    let served = ServedHere {
        engine,
        host: &ctx.host,
        sr_uuid: sr.as_str(),
        volume,
        disk,
        faults: &NoFaults,
        lvm: &lvm,
        vg: &state.vg,
    };
    match crate::snapshot::ops::Running::swap(&served, &image) {
        Ok(()) => {
            tracing::info!(volume, new_leaf, "disk switched to its new leaf for the master's snapshot");
            json(&serde_json::json!({ "leaf": image.path_str() }))
        }
        Err(error) if error.left_old_leaf() => {
            let _ = lvm.lv_activate(&state.vg, &new_leaf_lv, false);
            Err(not_done(error.to_string()))
        }
        Err(error) => Err((ErrorCode::ToolFailed, vec![error.to_string()])),
    }
}

fn release(ctx: &Context, args: &BTreeMap<String, String>) -> Result<String, Refusal> {
    let sr = sr_arg(args, RELEASE)?;
    let lv = lv_arg(args, RELEASE, "lv")?;
    let released_lv = lv_name(lv, "lv")?;
    let _lock = lock(ctx, &sr)?;
    let state = match sr_state::load(&ctx.host, sr.as_str()) {
        Ok(state) => state,
        // Not attached here: nothing of it is active here.
        Err(sr_state::StateError::NotAttached(_)) => return json(&serde_json::json!({ "released": false })),
        Err(error) => return Err((ErrorCode::HostState, vec![error.to_string()])),
    };
    let in_use = |why: String| (ErrorCode::VolumeActive, vec![why]);
    for volume in open_volumes(&ctx.host, sr.as_str()) {
        let leaf = open_here(&ctx.host, sr.as_str(), &volume).map(|d| d.leaf.path_str().to_owned());
        if volume == lv || leaf.is_some_and(|l| l.ends_with(&format!("/{lv}"))) {
            return Err(in_use(format!("LV {lv} is open here: volume {volume} is served from it")));
        }
    }
    if !mapping_active(&ctx.host, &dm_name(&state.vg, lv)) {
        return json(&serde_json::json!({ "released": false }));
    }
    let lvm = lvm_for(ctx, &state, false).map_err(|e| (ErrorCode::NoPath, vec![e.to_string()]))?;
    // LVM refuses to deactivate a device something holds open (a chain's parent).
    lvm.lv_activate(&state.vg, &released_lv, false).map_err(|e| in_use(format!("LV {lv} stays active here: {e}")))?;
    tracing::info!(lv, "deactivated for the master's lvremove");
    json(&serde_json::json!({ "released": true }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::answer;
    use crate::cmd::FakeRunner;
    use crate::context::Context;
    use crate::engine::{Handle, Image, ImageFormat, OpenDisk};
    use crate::error::ErrorCode;
    use crate::host::HostRoot;
    use crate::snapshot::pool::{COMMIT, OPEN, RELEASE, SERVING, SWAP, SWAP_NOT_DONE};

    const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// This host serves `volume` with `leaf` as its engine's leaf.
    fn serve(host: &HostRoot, volume: &str, leaf: &str) {
        let dir = host.path(&format!("{}/{SR}", crate::snapshot::served::RUN_BASE));
        std::fs::create_dir_all(&dir).unwrap();
        let disk = OpenDisk {
            device: "/dev/nbd3".into(),
            leaf: Image::new(ImageFormat::Qcow2, format!("/dev/nvmetcp_x/{leaf}")).unwrap(),
            handle: Handle::Tapdisk { pid: 7, minor: 3 },
        };
        std::fs::write(dir.join(format!("{volume}.json")), serde_json::to_string(&disk).unwrap()).unwrap();
    }

    fn context(dir: &tempfile::TempDir) -> Context {
        Context::fake(HostRoot::at(dir.path()), Box::new(FakeRunner::new()))
    }

    #[test]
    fn serving_and_open_report_this_hosts_engine_handles() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let ask = args(&[("sr", SR), ("volume", "vol-a")]);
        assert_eq!(answer(&ctx, SERVING, &ask).unwrap().unwrap(), r#"{"leaf":null,"open":false}"#);
        serve(&ctx.host, "vol-a", "node-2");
        let open = answer(&ctx, SERVING, &ask).unwrap().unwrap();
        assert_eq!(open, r#"{"leaf":"/dev/nvmetcp_x/node-2","open":true}"#);
        let listed = answer(&ctx, OPEN, &args(&[("sr", SR)])).unwrap().unwrap();
        assert_eq!(listed, r#"{"mergeable":["vol-a"],"volumes":["vol-a"]}"#);
    }

    #[test]
    fn the_master_knows_the_code_of_a_swap_not_done() {
        assert_eq!(ErrorCode::SwapNotDone.as_str(), SWAP_NOT_DONE);
    }

    #[test]
    fn arguments_are_validated_before_anything_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        for (function, bad) in [
            (SERVING, args(&[("sr", "../../etc"), ("volume", "vol-a")])),
            (SWAP, args(&[("sr", SR), ("volume", "vol-a"), ("new_leaf", "x/../../y")])),
            (RELEASE, args(&[("sr", SR)])),
        ] {
            let (code, why) = answer(&ctx, function, &bad).unwrap().unwrap_err();
            assert_eq!(code, ErrorCode::BadPluginCall, "{function}: {why:?}");
        }
        // Issue 18: the merge's arguments, each refused by name, the volume
        // served here so nothing but the argument stands in the way.
        attach_here(&ctx);
        serve(&ctx.host, "vol-a", "node-2");
        let start = |pairs: &[(&str, &str)]| {
            let mut call =
                args(&[("sr", SR), ("volume", "vol-a"), ("action", "start"), ("top", "node-2"), ("base", "vol-a")]);
            call.insert("base_format".into(), "raw".into());
            call.extend(args(pairs));
            call
        };
        for (bad, named) in [
            (start(&[("top", "x/../../y")]), "top"),
            (start(&[("base", "/dev/sda")]), "base"),
            (start(&[("base_format", "vhd")]), "base_format"),
            (start(&[("action", "format")]), "action"),
            (start(&[("volume", "")]), "volume"),
            (start(&[("sr", "../../etc")]), "sr"),
            (start(&[("action", "give_back"), ("base", "x/../../y")]), "base"),
        ] {
            let (code, why) = answer(&ctx, COMMIT, &bad).unwrap().unwrap_err();
            assert_eq!(code, ErrorCode::BadPluginCall, "{named}: {why:?}");
            assert!(why[0].contains(named), "{named}: {why:?}");
        }
        assert!(answer(&ctx, "status", &BTreeMap::new()).is_none());
    }

    /// Records SR `SR` as attached on this host.
    fn attach_here(ctx: &Context) {
        let state = crate::sr_state::one_tcp_path(SR, "nvmetcp_x", "nqn.x", NAMESPACE, 1 << 30, 0);
        crate::sr_state::save(&ctx.host, &state).unwrap();
    }

    const NAMESPACE: &str = "uuid.8d30ade900c54fe69fbcbe2c924ffcdc";

    #[test]
    fn a_swap_of_a_volume_not_served_here_is_not_done_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        attach_here(&ctx);
        let call = args(&[("sr", SR), ("volume", "vol-a"), ("new_leaf", "node-9")]);
        let (code, why) = answer(&ctx, SWAP, &call).unwrap().unwrap_err();
        assert_eq!(code, ErrorCode::SwapNotDone, "{why:?}");
        assert!(why[0].contains("does not serve volume vol-a"), "{why:?}");
        // Asked again after a lost answer, a swap that happened is success.
        serve(&ctx.host, "vol-a", "node-9");
        assert_eq!(answer(&ctx, SWAP, &call).unwrap().unwrap(), r#"{"leaf":"/dev/nvmetcp_x/node-9"}"#);
    }

    #[test]
    fn release_refuses_an_lv_an_open_disk_writes_and_is_a_no_op_when_unmapped() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(&dir);
        let call = |lv: &str| answer(&ctx, RELEASE, &args(&[("sr", SR), ("lv", lv)])).unwrap();
        // Not attached here: nothing of it is active here.
        assert_eq!(call("node-2").unwrap(), r#"{"released":false}"#);
        attach_here(&ctx);
        serve(&ctx.host, "vol-a", "node-2");
        let (code, why) = call("node-2").unwrap_err();
        assert_eq!(code, ErrorCode::VolumeActive);
        assert!(why[0].contains("volume vol-a is served from it"), "{why:?}");
        assert_eq!(call("vol-a").unwrap_err().0, ErrorCode::VolumeActive);
        // Attached, not mapped here: nothing to do (no LVM call).
        assert_eq!(call("node-7").unwrap(), r#"{"released":false}"#);
    }
}
