//! The Volume handlers in process: a sysfs tree with one live path and the
//! namespace's head in a temporary root, the SR's attachment state, and a
//! recording runner answering LVM.

use std::sync::Arc;

use crate::cmd::{CmdError, FakeRunner, Program};
use crate::context::Context;
use crate::error::to_error_record;
use crate::nvme::sysfs::fixture::SysfsTree;
use crate::smapi::method::{Method, PluginKind};
use crate::smapi::params::Params;
use crate::sr_state;

pub(super) const SR: &str = "3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";
const NQN: &str = "nqn.2024-01.io.example:array";
const WWID: &str = "uuid.8d30ade9-00c5-4fe6-9fbc-be2c924ffcdc";
pub(super) const VG: &str = "nvmetcp_3f1c6d0e8a8f4e0a9b5e2d7c1f0a9e11";
pub(super) const KEY: &str = "vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";

/// An attached SR with one live path, on the pool master.
pub(super) fn attached_sr() -> SysfsTree {
    attached_sr_with_path("live")
}

/// An attached SR whose one path is in `state`, on the pool master.
fn attached_sr_with_path(state: &str) -> SysfsTree {
    let tree = SysfsTree::new();
    tree.controller("nvme0", "tcp", NQN, "traddr=10.0.0.1,trsvcid=4420", "nqn.h:h", state);
    tree.head("nvme-subsys0", "nvme0n1", NQN, 1, WWID, 2048);
    tree.path_device("nvme0", "nvme0c0n1");
    tree.write("/etc/xensource/pool.conf", "master\n");
    let state = sr_state::one_tcp_path(SR, VG, NQN, WWID, 1 << 30, 1 << 29);
    sr_state::save(&tree.host(), &state).unwrap();
    tree
}

/// The SR's VG as `vgs` reports it, its writer named `writer`.
fn vgs(writer: &str) -> String {
    format!(
        r#"{{"report": [{{"vg": [{{"vg_name":"{VG}", "vg_uuid":"u", "vg_size":"1073741824", "vg_free":"536870912",
        "vg_extent_size":"4194304", "vg_tags":"nvmetcp.uuid={SR},nvmetcp.writer={writer},nvmetcp_sr"}}]}}]}}"#
    )
}

fn lvs(lvs: &[(&str, &str, &str)]) -> String {
    format!(r#"{{"report": [{{"lv": [{}]}}]}}"#, lv_rows(lvs))
}

/// The LV rows of a report: (name, tags, active), 8 MiB each.
fn lv_rows(lvs: &[(&str, &str, &str)]) -> String {
    let rows: Vec<String> = lvs
        .iter()
        .map(|(name, tags, active)| {
            format!(
                r#"{{"lv_name":"{name}", "vg_name":"{VG}", "lv_size":"8388608", "lv_tags":"{tags}", "lv_active":"{active}"}}"#
            )
        })
        .collect();
    rows.join(",")
}

/// Runs `method` in process; returns the result or the error record's code.
fn call(tree: &SysfsTree, runner: &Arc<FakeRunner>, method: &str, body: &str) -> Result<serde_json::Value, String> {
    let ctx = Context::fake(tree.host(), Box::new(Arc::clone(runner)));
    let params = Params::from_json(Method::lookup(method).unwrap(), body).unwrap();
    crate::dispatch::dispatch(&ctx, PluginKind::Volume, &params).map_err(|f| to_error_record(&f, "h1").code)
}

fn body(extra: &str) -> String {
    format!(r#"{{"dbg":"t","sr":"nvmetcp://sr/{SR}","key":"{KEY}"{extra}}}"#)
}

fn ran(runner: &FakeRunner, subcommand: &str) -> bool {
    runner.calls().iter().any(|c| c.program == Program::Lvm && c.shown.contains(&format!(" {subcommand} ")))
}

#[test]
fn destroy_refuses_a_volume_active_on_this_host() {
    let tree = attached_sr();
    tree.write("/etc/nvme/hostid", "me\n");
    let runner = Arc::new(FakeRunner::new().then_stdout(&full_report_of("me", &[(KEY, "nvmetcp_vol", "active")])));
    assert_eq!(call(&tree, &runner, "Volume.destroy", &body("")), Err("NVMETCP_VOLUME_ACTIVE".to_owned()));
    assert!(!ran(&runner, "lvremove"), "{:?}", runner.calls());
}

#[test]
fn a_vg_another_machine_writes_is_not_written() {
    let tree = attached_sr();
    // No pool: nobody can say the other writer stopped.
    std::fs::remove_file(tree.host().path("/etc/xensource/pool.conf")).unwrap();
    let runner = Arc::new(FakeRunner::new().then_stdout(&full_report_of("other-host", &[(KEY, "nvmetcp_vol", "")])));
    assert_eq!(call(&tree, &runner, "Volume.destroy", &body("")), Err("NVMETCP_SECOND_WRITER".to_owned()));
    assert_eq!(runner.calls().len(), 1, "nothing but the report that found the other writer: {:?}", runner.calls());
}

#[test]
fn resize_refuses_a_shrink_and_an_active_volume() {
    let tree = attached_sr();
    let runner =
        Arc::new(FakeRunner::new().then_stdout(&vgs("unknown")).then_stdout(&lvs(&[(KEY, "nvmetcp_vol", "")])));
    assert_eq!(
        call(&tree, &runner, "Volume.resize", &body(r#","new_size":4096"#)),
        Err("NVMETCP_VOLUME_INVALID".to_owned())
    );
    let runner =
        Arc::new(FakeRunner::new().then_stdout(&vgs("unknown")).then_stdout(&lvs(&[(KEY, "nvmetcp_vol", "active")])));
    let grow = body(r#","new_size":16777216"#);
    assert_eq!(call(&tree, &runner, "Volume.resize", &grow), Err("NVMETCP_VOLUME_ACTIVE".to_owned()));
    assert!(!ran(&runner, "lvextend"), "{:?}", runner.calls());
}

#[test]
fn sr_ls_lists_only_nvmetcp_volumes() {
    let tree = attached_sr();
    let listed = lvs(&[
        (KEY, "nvmetcp_vol", ""),
        ("vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e12", "", ""),
        ("scratch", "nvmetcp_vol", ""),
    ]);
    let runner = Arc::new(FakeRunner::new().then_stdout(&listed));
    let volumes = call(&tree, &runner, "SR.ls", &format!(r#"{{"dbg":"t","sr":"nvmetcp://sr/{SR}"}}"#)).unwrap();
    let keys: Vec<&str> = volumes.as_array().unwrap().iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_eq!(keys, [KEY], "untagged LVs and LVs not named vol-<uuid> are not volumes");
}

/// With no live path LVM would block on the device, so the volume's mapping
/// is removed directly (the shared fixture serves the Datapath handlers too).
#[test]
fn deactivate_with_no_live_path_removes_the_mapping_directly() {
    let tree = attached_sr_with_path("connecting");
    let mapping = "nvmetcp_3f1c6d0e8a8f4e0a9b5e2d7c1f0a9e11-vol--0f3c6d0e--8a8f--4e0a--9b5e--2d7c1f0a9e11";
    tree.write("/sys/block/dm-0/dm/name", &format!("{mapping}\n"));
    let runner = Arc::new(FakeRunner::new().then_stdout(""));
    let ctx = Context::fake(tree.host(), Box::new(Arc::clone(&runner)));
    let uri = format!("nvmetcp://{SR}/{KEY}");
    let body = format!(r#"{{"dbg":"t","uri":"{uri}","domain":"0"}}"#);
    let params = Params::from_json(Method::lookup("Datapath.deactivate").unwrap(), &body).unwrap();
    crate::dispatch::dispatch(&ctx, PluginKind::Datapath, &params).unwrap();
    let calls = runner.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].program, Program::Dmsetup);
    assert!(calls[0].shown.ends_with(&format!("remove {mapping}")), "{calls:?}");
    // A dmsetup that fails is a tool failure, not an LVM one.
    let failing = FakeRunner::new().then(Err(CmdError::Failed {
        command: format!("dmsetup remove {mapping}"),
        status: "exit status 1".to_owned(),
        code: Some(1),
        stdout: String::new(),
        stderr: "device-mapper: remove ioctl failed: Device or resource busy".to_owned(),
    }));
    let ctx = Context::fake(tree.host(), Box::new(failing));
    let failure = crate::dispatch::dispatch(&ctx, PluginKind::Datapath, &params).unwrap_err();
    assert_eq!(to_error_record(&failure, "h1").code, "NVMETCP_TOOL_FAILED");
}

const ORIGIN: &str = "vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e21";
const SNAP: &str = "vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e22";
const IN_FLIGHT: &str = "vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e23";

/// A volume snapshotted once (its raw LV frozen, a qcow2 leaf on it, the
/// snapshot referring to the raw node) and a second snapshot in flight.
fn chained_lvs() -> String {
    use crate::snapshot::journal::{Entry, Operation, Step};
    let journal = Entry {
        operation: Operation::Snapshot {
            volume: ORIGIN.into(),
            old_leaf: "node-x".into(),
            new_leaf: "node-y".into(),
            snapshot: IN_FLIGHT.into(),
            clone_leaf: None,
            active_on: None,
        },
        step: Step::Prepared,
    }
    .to_tag();
    lvs(&[
        (ORIGIN, "nvmetcp_vol,nvmetcp_node,nf=raw,nd=1,nn=node-x", ""),
        ("node-x", "nvmetcp_node,nf=qcow2,nd=2,np=vol-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e21", ""),
        (SNAP, &format!("nvmetcp_vol,nn={ORIGIN}"), ""),
        ("node-y", &format!("nvmetcp_node,nf=qcow2,nd=3,np=node-x,{journal}"), ""),
        (IN_FLIGHT, &format!("nvmetcp_vol,nn=node-x,{journal}"), ""),
    ])
}

#[test]
fn sr_ls_shows_chains_for_xo_and_hides_nodes_and_snapshots_in_flight() {
    let tree = attached_sr();
    let runner = Arc::new(FakeRunner::new().then_stdout(&chained_lvs()));
    let volumes = call(&tree, &runner, "SR.ls", &format!(r#"{{"dbg":"t","sr":"nvmetcp://sr/{SR}"}}"#)).unwrap();
    let volumes = volumes.as_array().unwrap();
    let keys: Vec<&str> = volumes.iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_eq!(keys, [ORIGIN, SNAP], "node LVs and the snapshot in flight are no volumes");
    let (origin, snap) = (&volumes[0], &volumes[1]);
    assert_eq!(origin["keys"]["_sm_config_image-format"], "qcow2");
    assert_eq!(origin["keys"]["_sm_config_nvmetcp-parent"], ORIGIN);
    assert_eq!(origin["keys"]["_sm_config_nvmetcp-chain-length"], "2");
    assert_eq!(origin["virtual_size"], 8_388_608, "the base's size, not the leaf LV's");
    assert_eq!(origin["physical_utilisation"], 16_777_216, "its raw LV and its leaf");
    assert_eq!(snap["keys"]["_sm_config_image-format"], "raw");
    assert_eq!(snap["virtual_size"], 8_388_608);
    assert!(snap["keys"].get("_sm_config_nvmetcp-parent").is_none());
}

#[test]
fn a_broken_chain_fails_sr_ls_rather_than_listing_part_of_it() {
    let tree = attached_sr();
    let broken = lvs(&[(ORIGIN, "nvmetcp_vol,nn=node-gone", ""), (KEY, "nvmetcp_vol", "")]);
    let runner = Arc::new(FakeRunner::new().then_stdout(&broken));
    let listed = call(&tree, &runner, "SR.ls", &format!(r#"{{"dbg":"t","sr":"nvmetcp://sr/{SR}"}}"#));
    assert_eq!(listed, Err("NVMETCP_CHAIN_DAMAGED".to_owned()));
}

#[test]
fn snapshot_of_a_volume_in_use_is_refused_saying_why() {
    let tree = attached_sr();
    tree.write("/etc/nvme/hostid", "me\n");
    let active = full_report_of("me", &[(KEY, "nvmetcp_vol", "active")]);
    let runner = Arc::new(FakeRunner::new().then_stdout(&active));
    assert_eq!(call(&tree, &runner, "Volume.snapshot", &body("")), Err("NVMETCP_SNAPSHOT_REFUSED".to_owned()));
    assert!(!ran(&runner, "lvcreate"), "{:?}", runner.calls());
    let runner = Arc::new(FakeRunner::new().then_stdout(&active));
    assert_eq!(call(&tree, &runner, "Volume.clone", &body("")), Err("NVMETCP_SNAPSHOT_REFUSED".to_owned()));
    assert!(!ran(&runner, "lvcreate"), "{:?}", runner.calls());
}

/// Issue 18: a snapshot volume attached read-only (XO's export) is never
/// swapped onto a writable leaf: a snapshot of it running is refused.
#[test]
fn snapshot_of_a_volume_served_read_only_is_refused() {
    use crate::engine::{Access, Handle, Image, ImageFormat, OpenDisk};
    let tree = attached_sr();
    let disk = OpenDisk {
        device: "/dev/nbd0".into(),
        leaf: Image::new(ImageFormat::Raw, format!("/dev/{VG}/{KEY}")).unwrap(),
        handle: Handle::Tapdisk { pid: 4242, minor: 3 },
    };
    crate::snapshot::served::record_opened(&tree.host(), SR, KEY, &disk, Access::ReadOnly).unwrap();
    tree.write("/etc/nvme/hostid", "me\n");
    let runner = Arc::new(FakeRunner::new().then_stdout(&full_report(&[(KEY, "nvmetcp_vol")])));
    assert_eq!(call(&tree, &runner, "Volume.snapshot", &body("")), Err("NVMETCP_SNAPSHOT_REFUSED".to_owned()));
    assert!(!ran(&runner, "lvcreate") && !ran(&runner, "qemu-img"), "{:?}", runner.calls());
}

#[test]
fn a_layered_volume_is_not_handed_to_blkback() {
    let tree = attached_sr();
    let layered = lvs(&[(KEY, "nvmetcp_vol,nn=node-x", "")]);
    let vg = lvs(&[
        (KEY, "nvmetcp_vol,nn=node-x", ""),
        ("node-x", "nvmetcp_node,nf=qcow2,nd=2,np=base", ""),
        ("base", "nvmetcp_node,nf=raw,nd=1", ""),
    ]);

    // A host with neither tapdisk nor qemu-storage-daemon cannot serve it.
    let runner = Arc::new(
        FakeRunner::new()
            .then_stdout(&layered)
            .then_stdout(&vg)
            .then_stdout(&vg)
            .without(Program::TapCtl)
            .without(Program::QemuStorageDaemon),
    );
    let ctx = Context::fake(tree.host(), Box::new(Arc::clone(&runner)));
    let body = format!(r#"{{"dbg":"t","uri":"nvmetcp://{SR}/{KEY}","domain":"0"}}"#);
    let params = Params::from_json(Method::lookup("Datapath.attach").unwrap(), &body).unwrap();
    let failure = crate::dispatch::dispatch(&ctx, PluginKind::Datapath, &params).unwrap_err();
    let record = to_error_record(&failure, "h1");
    assert_eq!(record.code, "NVMETCP_SNAPSHOT_REFUSED");
    assert!(record.params[0].contains("cannot serve a snapshotted volume"), "{}", record.params[0]);
    assert!(!ran(&runner, "lvchange"), "{:?}", runner.calls());

    // Collected back to its own raw LV alone, it is a plain volume again
    // (blkback on a host without tapdisk, the default datapath's choice).
    let collapsed = lvs(&[(KEY, &format!("nvmetcp_vol,nvmetcp_node,nf=raw,nd=1,nn={KEY}"), "")]);
    let runner = Arc::new(
        FakeRunner::new()
            .then_stdout(&collapsed)
            .then_stdout(&collapsed)
            .then_stdout("")
            .then_stdout("")
            .without(Program::TapCtl),
    );
    let ctx = Context::fake(tree.host(), Box::new(Arc::clone(&runner)));
    crate::dispatch::dispatch(&ctx, PluginKind::Datapath, &params).unwrap();
    assert!(ran(&runner, "lvchange"), "{:?}", runner.calls());
}

/// `SR.stat` points xapi at the agent's xcp-rrdd plugin of this SR, which
/// xapi-storage-script registers after `SR.attach`, whatever the paths.
#[test]
fn sr_stat_names_the_srs_rrd_plugin_as_its_datasource() {
    let stat = format!(r#"{{"dbg":"t","sr":"nvmetcp://sr/{SR}"}}"#);
    let expected = serde_json::json!([format!("xeno+shm:///nvmetcp-sr-{SR}")]);
    let runner = Arc::new(FakeRunner::new().then_stdout(&vgs("unknown")));
    let healthy = call(&attached_sr(), &runner, "SR.stat", &stat).unwrap();
    assert_eq!(healthy["health"][0], "Healthy", "{healthy}");
    assert_eq!(healthy["datasources"], expected);
    let unreachable =
        call(&attached_sr_with_path("connecting"), &Arc::new(FakeRunner::new()), "SR.stat", &stat).unwrap();
    assert_eq!(unreachable["health"][0], "Unreachable", "{unreachable}");
    assert_eq!(unreachable["datasources"], expected);
}

/// One `lvm fullreport` of the SR: its VG (writer: this host) and `lvs`.
fn full_report(lvs: &[(&str, &str)]) -> String {
    let lvs: Vec<(&str, &str, &str)> = lvs.iter().map(|&(name, tags)| (name, tags, "")).collect();
    full_report_of("me", &lvs)
}

/// [`full_report`] of `lvs` (name, tags, active), its writer named `writer`.
fn full_report_of(writer: &str, lvs: &[(&str, &str, &str)]) -> String {
    format!(
        r#"{{"report": [{{"vg": [{{"vg_name":"{VG}", "vg_uuid":"u", "vg_size":"1073741824", "vg_free":"536870912",
        "vg_extent_size":"4194304", "vg_tags":"nvmetcp.uuid={SR},nvmetcp.writer={writer},nvmetcp_sr"}}], "lv": [{}]}}]}}"#,
        lv_rows(lvs)
    )
}

/// The LVM subcommands `runner` ran, in order.
fn lvm_subcommands(runner: &FakeRunner) -> Vec<String> {
    runner
        .calls()
        .iter()
        .filter(|c| c.program == Program::Lvm)
        .filter_map(|c| c.shown.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

#[test]
fn a_checked_metadata_write_is_one_report_and_the_write() {
    let tree = attached_sr();
    tree.write("/etc/nvme/hostid", "me\n");
    tree.write("/proc/sys/kernel/random/uuid", "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e12\n");
    let runner = Arc::new(FakeRunner::new().then_stdout(&full_report(&[(KEY, "nvmetcp_vol")])).then_stdout(""));
    let create = format!(
        r#"{{"dbg":"t","sr":"nvmetcp://sr/{SR}","name":"n","description":"","size":4194304,"sharable":false}}"#
    );
    call(&tree, &runner, "Volume.create", &create).unwrap();
    assert_eq!(lvm_subcommands(&runner), ["fullreport", "lvcreate"], "{:?}", runner.calls());

    let runner = Arc::new(FakeRunner::new().then_stdout(&full_report(&[(KEY, "nvmetcp_vol")])).then_stdout(""));
    call(&tree, &runner, "Volume.set", &body(r#","k":"a","v":"b""#)).unwrap();
    assert_eq!(lvm_subcommands(&runner), ["fullreport", "lvchange"], "{:?}", runner.calls());

    // A key that is not among the SR's volumes is refused after the one read.
    let runner = Arc::new(FakeRunner::new().then_stdout(&full_report(&[])));
    assert_eq!(
        call(&tree, &runner, "Volume.set", &body(r#","k":"a","v":"b""#)),
        Err("Volume_does_not_exist".to_owned())
    );
    assert_eq!(lvm_subcommands(&runner), ["fullreport"]);
}

/// Attach chooses how a plain volume is served (asking tapdisk under
/// `datapath = auto`); activate follows that choice and never asks again, so
/// a second, different answer cannot put blkback and an engine on one disk.
#[test]
fn activate_follows_the_datapath_attach_chose_without_asking_tapdisk_again() {
    let tree = attached_sr();
    let plain = lvs(&[(KEY, "nvmetcp_vol", "")]);
    let body = format!(r#"{{"dbg":"t","uri":"nvmetcp://{SR}/{KEY}","domain":"0"}}"#);
    let asked_tapdisk = |runner: &FakeRunner| runner.calls().iter().any(|c| c.program == Program::TapCtl);

    let runner = Arc::new(FakeRunner::new().then_stdout(&plain).then_stdout(&plain).then_stdout("").then_stdout(""));
    call(&tree, &runner, "Datapath.attach", &body).unwrap();
    assert!(asked_tapdisk(&runner), "attach asks tapdisk under datapath = auto: {:?}", runner.calls());

    let runner = Arc::new(FakeRunner::new().then_stdout(&plain).then_stdout(&plain).then_stdout("").then_stdout(""));
    call(&tree, &runner, "Datapath.activate", &body).unwrap();
    assert!(!asked_tapdisk(&runner), "activate asked tapdisk again: {:?}", runner.calls());
    assert!(ran(&runner, "lvchange"), "blkback, as attach chose: {:?}", runner.calls());
}

/// A plain volume handed to blkback: attach activates its inactive LV (one
/// `lvchange -ay`, which loads the current metadata); activate, with the LV
/// active, refreshes it (the master may have resized it since) — one LVM
/// process besides the lookup each, not an `-ay` and a `--refresh`.
#[test]
fn a_plain_volume_is_activated_if_inactive_and_refreshed_if_active() {
    let tree = attached_sr();
    tree.write("/etc/nvmetcp/host.conf", "datapath = blkback\n");
    let body = format!(r#"{{"dbg":"t","uri":"nvmetcp://{SR}/{KEY}","domain":"0"}}"#);
    for (method, active, action) in [("Datapath.attach", "", "-ay"), ("Datapath.activate", "active", "--refresh")] {
        let runner = Arc::new(FakeRunner::new().then_stdout(&lvs(&[(KEY, "nvmetcp_vol", active)])).then_stdout(""));
        call(&tree, &runner, method, &body).unwrap();
        assert_eq!(lvm_subcommands(&runner), ["lvs", "lvchange"], "{method}: {:?}", runner.calls());
        let shown = &runner.calls()[1].shown;
        assert!(shown.ends_with(&format!(" {action} {VG}/{KEY}")), "{method}: {shown}");
    }
}
