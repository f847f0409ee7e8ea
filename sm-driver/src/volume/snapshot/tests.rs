//! How many `lvm` processes `Volume.snapshot` and the `Volume.destroy` of a
//! layered volume run, counted on a VG held in memory
//! ([`crate::snapshot::fake_vg`]): each one is 0.25 s on an idle dom0 and
//! 1-2 s on a loaded one, under the SR's lock; and `Datapath.detach` of a
//! disk served by qemu-storage-daemon (a scripted QMP socket), with an
//! interrupted online merge journalled and without.

use std::sync::Arc;

use serde_json::Value;

use crate::context::Context;
use crate::error::to_error_record;
use crate::nvme::sysfs::fixture::SysfsTree;
use crate::smapi::method::{Method, PluginKind};
use crate::smapi::params::Params;
use crate::snapshot::fake_vg::{FakeVg, MIB};
use crate::volume::meta::VOLUME_TAG;
use crate::volume::tests::{attached_sr, KEY, SR, VG};

/// A standalone host (no pool to ask) that writes the SR: the VG names it.
fn standalone_writer() -> (SysfsTree, Arc<FakeVg>) {
    let tree = attached_sr();
    std::fs::remove_file(tree.host().path("/etc/xensource/pool.conf")).unwrap();
    tree.write("/etc/nvme/hostid", "me\n");
    let tags = [format!("nvmetcp.uuid={SR}"), "nvmetcp.writer=me".to_owned(), "nvmetcp_sr".to_owned()];
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let fake = Arc::new(FakeVg::named(VG, &tags).with_volumes(VOLUME_TAG, &[KEY]));
    (tree, fake)
}

/// Runs `method` on `key` in process; returns the LVM calls it made.
fn lvm_calls_of(tree: &SysfsTree, fake: &Arc<FakeVg>, method: &str, key: &str) -> Vec<String> {
    let ctx = Context::fake(tree.host(), Box::new(Arc::clone(fake)));
    let body = format!(r#"{{"dbg":"t","sr":"nvmetcp://sr/{SR}","key":"{key}"}}"#);
    let params = Params::from_json(Method::lookup(method).unwrap(), &body).unwrap();
    let start = fake.commands();
    if let Err(failure) = crate::dispatch::dispatch(&ctx, PluginKind::Volume, &params) {
        panic!("{method} of {key} failed: {:?}; ran {:?}", to_error_record(&failure, "h1"), fake.ran(start, ""));
    }
    fake.lvm_calls(start)
}

/// `list`, LVM calls as [`FakeVg::lvm_calls`] names them, comma-separated.
fn calls(list: &str) -> Vec<String> {
    list.split(',').map(|call| call.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

/// The snapshot volume numbered `uuid`.
fn snapshot_volume(uuid: &str) -> String {
    format!("vol-{uuid}")
}

#[test]
fn snapshots_and_destroys_of_layered_volumes_run_these_lvm_calls() {
    let (tree, fake) = standalone_writer();
    let first = "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e31";
    let second = "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e32";

    // At rest, of a plain volume: its raw LV becomes the base of a new leaf.
    tree.write("/proc/sys/kernel/random/uuid", &format!("{first}\n"));
    let plain = lvm_calls_of(&tree, &fake, "Volume.snapshot", KEY);
    // At rest, of the layered volume it now is.
    tree.write("/proc/sys/kernel/random/uuid", &format!("{second}\n"));
    let layered = lvm_calls_of(&tree, &fake, "Volume.snapshot", KEY);
    // The second snapshot: its node is then needed by nothing but the
    // volume's leaf, and the collector merges the leaf into it.
    let snapshot = lvm_calls_of(&tree, &fake, "Volume.destroy", &snapshot_volume(second));
    // The origin: its record goes, the collector removes its leaf, the raw
    // node stays for the first snapshot.
    let origin = lvm_calls_of(&tree, &fake, "Volume.destroy", KEY);
    let shape: Vec<String> = fake.shape().into_keys().collect();
    assert_eq!(shape, [KEY.to_owned(), snapshot_volume(first)], "what is left: {:?}", fake.shape());

    assert_eq!(
        plain,
        calls(
            "fullreport, lvcreate, lvchange -ay, lvcreate, lvchange --addtag, lvchange --deltag, \
             lvchange --deltag, lvs, lvchange -an"
        ),
        "snapshot of a plain volume"
    );
    assert_eq!(
        layered,
        calls(
            "fullreport, lvcreate, lvchange -ay, lvcreate, lvchange --deltag, lvreduce, lvchange --deltag, \
             lvchange --deltag, lvs, lvchange -an"
        ),
        "snapshot of a layered volume"
    );
    assert_eq!(
        snapshot,
        calls(
            "fullreport, lvremove, lvs, lvchange --addtag, lvs, lvextend, lvchange -ay, lvchange --deltag, \
             lvchange -an, lvremove, lvs, lvchange -an"
        ),
        "destroy of a snapshot, with a merge"
    );
    assert_eq!(
        origin,
        calls("fullreport, lvchange --deltag, lvs, lvremove, lvs"),
        "destroy of the origin, with a removal"
    );
}

/// Runs `method` on `key` with `extra` parameters in process; returns the
/// result or the error record's code.
fn call_on(tree: &SysfsTree, fake: &Arc<FakeVg>, method: &str, key: &str, extra: &str) -> Result<Value, String> {
    let ctx = Context::fake(tree.host(), Box::new(Arc::clone(fake)));
    let body = format!(r#"{{"dbg":"t","sr":"nvmetcp://sr/{SR}","key":"{key}"{extra}}}"#);
    let params = Params::from_json(Method::lookup(method).unwrap(), &body).unwrap();
    crate::dispatch::dispatch(&ctx, PluginKind::Volume, &params).map_err(|f| to_error_record(&f, "h1").code)
}

/// Takes the snapshot numbered `uuid` of `KEY`; returns its volume.
fn snapshot_numbered(tree: &SysfsTree, fake: &Arc<FakeVg>, uuid: &str) -> String {
    tree.write("/proc/sys/kernel/random/uuid", &format!("{uuid}\n"));
    call_on(tree, fake, "Volume.snapshot", KEY, "").unwrap();
    snapshot_volume(uuid)
}

fn virtual_size(tree: &SysfsTree, fake: &Arc<FakeVg>, key: &str) -> u64 {
    call_on(tree, fake, "Volume.stat", key, "").unwrap()["virtual_size"].as_u64().unwrap()
}

/// A volume with snapshots grows at rest (its leaf's LV, then `nv=`, then
/// its header), shrinks never; a snapshot taken after has the new size, the
/// older ones keep theirs; the collector grows each node a larger child is
/// merged into (a qcow2 node's header and `nv=`, the raw base's LV), back
/// to one LV of the new size.
#[test]
fn a_volume_with_snapshots_grows_at_rest_and_the_collector_grows_what_it_merges_into() {
    let (tree, fake) = standalone_writer();
    let old = 64 * MIB;
    let grown = 128 * MIB;
    let first = snapshot_numbered(&tree, &fake, "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e41");
    let second = snapshot_numbered(&tree, &fake, "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e42");
    let leaf = "node-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e42";

    let start = fake.commands();
    // Rounded up to whole extents.
    call_on(&tree, &fake, "Volume.resize", KEY, &format!(r#","new_size":{}"#, grown - 1)).unwrap();
    let log = fake.state().log[start..].to_vec();
    let step =
        |what: &str| log.iter().position(|l| l.starts_with(what)).unwrap_or_else(|| panic!("no {what}: {log:?}"));
    let tagged = format!("lvm lvchange --addtag nv={grown}");
    assert!(step("lvm lvextend") < step(&tagged), "{log:?}");
    assert!(step(&tagged) < step("qemu-img resize"), "the header is grown after nv=: {log:?}");
    assert_eq!(fake.state().virtual_size(leaf), grown);
    assert_eq!(virtual_size(&tree, &fake, KEY), grown);
    assert!(!fake.state().lvs.values().any(|l| l.active), "the chain is left inactive: {:?}", fake.shape());
    assert_eq!(
        call_on(&tree, &fake, "Volume.resize", KEY, &format!(r#","new_size":{old}"#)),
        Err("NVMETCP_VOLUME_INVALID".to_owned()),
        "a shrink is refused"
    );
    for snapshot in [&first, &second] {
        assert_eq!(
            call_on(&tree, &fake, "Volume.resize", snapshot, &format!(r#","new_size":{}"#, 2 * grown)),
            Err("NVMETCP_SNAPSHOT_REFUSED".to_owned()),
            "{snapshot} reads a frozen node (raw, then qcow2)"
        );
    }

    let third = snapshot_numbered(&tree, &fake, "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e43");
    assert_eq!(fake.state().virtual_size("node-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e43"), grown, "the new leaf");
    assert_eq!(virtual_size(&tree, &fake, &third), grown);
    assert_eq!(virtual_size(&tree, &fake, &second), old);
    assert_eq!(virtual_size(&tree, &fake, KEY), grown);

    // Merges: the third's node into an equal one, the second's (grown)
    // into a qcow2 node of the old size, the first's into the raw base.
    for snapshot in [&third, &second, &first] {
        call_on(&tree, &fake, "Volume.destroy", snapshot, "").unwrap();
        assert_eq!(virtual_size(&tree, &fake, KEY), grown, "after the destroy of {snapshot}");
    }
    let shape: Vec<String> = fake.shape().into_keys().collect();
    assert_eq!(shape, [KEY.to_owned()], "back to one node: {:?}", fake.shape());
    assert_eq!(fake.size(KEY), grown, "the raw base grew to the new size");
}

/// A volume with snapshots that an engine serves is not resized: the VM is
/// halted first.
#[test]
fn a_running_volume_with_snapshots_is_not_resized() {
    use crate::engine::{Access, Handle, Image, ImageFormat, OpenDisk};
    let (tree, fake) = standalone_writer();
    snapshot_numbered(&tree, &fake, "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e51");
    let disk = OpenDisk {
        device: "/dev/nbd0".into(),
        leaf: Image::new(ImageFormat::Qcow2, format!("/dev/{VG}/node-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e51")).unwrap(),
        handle: Handle::Tapdisk { pid: 4242, minor: 3 },
    };
    crate::snapshot::served::record_opened(&tree.host(), SR, KEY, &disk, Access::ReadWrite).unwrap();
    let start = fake.commands();
    let grow = format!(r#","new_size":{}"#, 128 * MIB);
    assert_eq!(call_on(&tree, &fake, "Volume.resize", KEY, &grow), Err("NVMETCP_VOLUME_ACTIVE".to_owned()));
    assert!(fake.ran(start, "qemu-img").is_empty() && fake.ran(start, "lvm lvextend").is_empty());
}

/// A resize killed after its commit point (`nv=`), before the header grew:
/// the record says the new size, the engine would show the VM the old one.
/// `Volume.resize` to that size again finishes the header; while the
/// volume runs it succeeds changing nothing, as a same-size resize did.
#[test]
fn the_same_size_again_finishes_a_header_an_interrupted_resize_left_behind() {
    use crate::engine::{Access, Handle, Image, ImageFormat, OpenDisk};
    let grown = 128 * MIB;
    let same = format!(r#","new_size":{grown}"#);
    let leaf = "node-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e52";
    for running in [true, false] {
        let (tree, fake) = standalone_writer();
        snapshot_numbered(&tree, &fake, "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e52");
        {
            let mut state = fake.state();
            let lv = state.lvs.get_mut(leaf).unwrap();
            lv.size = 132 * MIB;
            lv.tags.push(format!("nv={grown}"));
        }
        assert_eq!((virtual_size(&tree, &fake, KEY), fake.state().virtual_size(leaf)), (grown, 64 * MIB));
        if running {
            let disk = OpenDisk {
                device: "/dev/nbd0".into(),
                leaf: Image::new(ImageFormat::Qcow2, format!("/dev/{VG}/{leaf}")).unwrap(),
                handle: Handle::Tapdisk { pid: 4242, minor: 3 },
            };
            crate::snapshot::served::record_opened(&tree.host(), SR, KEY, &disk, Access::ReadWrite).unwrap();
        }
        let start = fake.commands();
        call_on(&tree, &fake, "Volume.resize", KEY, &same).unwrap();
        if running {
            assert!(fake.ran(start, "qemu-img").is_empty(), "an open image was touched");
            assert_eq!(fake.state().virtual_size(leaf), 64 * MIB);
        } else {
            assert_eq!(fake.state().virtual_size(leaf), grown, "the header is left behind its record");
            assert_eq!(virtual_size(&tree, &fake, KEY), grown);
            assert!(!fake.state().lvs.values().any(|l| l.active), "the chain is left active: {:?}", fake.shape());
        }
    }
}

/// This host with qemu-storage-daemon as its engine (no `tap-ctl`) over the
/// VG in memory; the daemon itself answers on a scripted QMP socket.
struct QsdHost(Arc<FakeVg>);

impl crate::cmd::Runner for QsdHost {
    fn resolve(&self, program: crate::cmd::Program) -> Result<std::path::PathBuf, crate::cmd::CmdError> {
        match program {
            crate::cmd::Program::TapCtl => {
                Err(crate::cmd::CmdError::NotFound { program, searched: "/usr/sbin".to_owned() })
            }
            other => self.0.resolve(other),
        }
    }

    fn run(&self, command: &crate::cmd::Command) -> Result<crate::cmd::Output, crate::cmd::CmdError> {
        match command.program() {
            crate::cmd::Program::QemuStorageDaemon => Ok(crate::cmd::Output {
                stdout: "qemu-storage-daemon version 8.2.0\n".to_owned(),
                stderr: String::new(),
            }),
            _ => self.0.run(command),
        }
    }

    fn start_detached(&self, command: &crate::cmd::Command) -> Result<u32, crate::cmd::CmdError> {
        self.0.start_detached(command)
    }
}

/// Serves one QMP connection per entry of `sessions` on `socket`, each
/// answering its requests with the given `return` values in order.
fn qmp_daemon(socket: &std::path::Path, sessions: Vec<Vec<Value>>) -> std::thread::JoinHandle<()> {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for replies in sessions {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            writeln!(writer, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            reader.read_line(&mut line).unwrap();
            writeln!(writer, r#"{{"return": {{}}}}"#).unwrap();
            for reply in replies {
                line.clear();
                reader.read_line(&mut line).unwrap();
                writeln!(writer, "{}", serde_json::json!({ "return": reply })).unwrap();
            }
        }
    })
}

/// Runs `Datapath.detach` of `key` in process; returns the LVM calls it
/// made, or the error code.
fn detach(tree: &SysfsTree, fake: &Arc<FakeVg>, key: &str) -> Result<Vec<String>, String> {
    let ctx = Context::fake(tree.host(), Box::new(QsdHost(Arc::clone(fake))));
    let body = format!(r#"{{"dbg":"t","uri":"nvmetcp://{SR}/{key}","domain":"0"}}"#);
    let params = Params::from_json(Method::lookup("Datapath.detach").unwrap(), &body).unwrap();
    let start = fake.commands();
    crate::dispatch::dispatch(&ctx, PluginKind::Datapath, &params).map_err(|f| to_error_record(&f, "h1").code)?;
    Ok(fake.lvm_calls(start))
}

/// Issue 18, the kill-then-detach window: the collector merged the running
/// leaf into its parent online and was killed after the engine pivoted (it
/// writes the raw base now) but before the handle and `nn=` said so. The
/// detach asks the engine before closing the disk and finishes the merge:
/// the volume is on the node its last writes went to, the entry gone. Once
/// closed, nobody could say, and the next attach would open the old leaf.
/// A detach with nothing journalled runs the LVM calls it ran before.
#[test]
fn a_detach_finishes_an_online_merge_killed_after_the_pivot_before_closing() {
    use crate::engine::{Access, Handle, Image, ImageFormat, OpenDisk};
    use crate::snapshot::journal::{Entry, Operation, Step};
    let (tree, fake) = standalone_writer();
    let snapshot = snapshot_numbered(&tree, &fake, "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e61");
    let leaf = "node-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e61";
    let run = tempfile::tempdir().unwrap();
    let disk = |lv: &str, format| OpenDisk {
        device: "/dev/nbd0".into(),
        leaf: Image::new(format, format!("/dev/{VG}/{lv}")).unwrap(),
        handle: Handle::QemuStorageDaemon { pid: 4242, run_dir: run.path().into() },
    };
    let served = |fake: &Arc<FakeVg>| {
        // Closing the disk removed the daemon's directory.
        std::fs::create_dir_all(run.path()).unwrap();
        crate::snapshot::served::record_opened(
            &tree.host(),
            SR,
            KEY,
            &disk(leaf, ImageFormat::Qcow2),
            Access::ReadWrite,
        )
        .unwrap();
        fake.state().lvs.values_mut().for_each(|lv| lv.active = true);
    };

    // Nothing journalled: one read of the VG, the chain deactivated.
    served(&fake);
    assert_eq!(detach(&tree, &fake, KEY), Ok(calls("lvs, lvchange -an")), "detach of a served disk");

    // The snapshot destroyed (its record gone), the collector killed after
    // the engine pivoted the leaf into the raw base.
    fake.state().lvs.remove(&snapshot);
    let entry = Entry {
        operation: Operation::Merge { child: leaf.to_owned(), into: KEY.to_owned(), online: Some(KEY.to_owned()) },
        step: Step::EngineCommitting,
    };
    fake.state().lvs.get_mut(leaf).unwrap().tags.push(entry.to_tag());
    served(&fake);
    let exports = serde_json::json!([{"id": "disk", "node-name": "nbase"}]);
    let nodes = serde_json::json!([{"node-name": "nbase", "drv": "raw", "file": format!("/dev/{VG}/{KEY}")}]);
    let leaf_now = vec![exports, nodes];
    // The job (none: done and dismissed), then the leaf twice: whether the
    // data moved, and before the volume's tag moves.
    let daemon =
        qmp_daemon(&run.path().join("qmp.sock"), vec![vec![serde_json::json!([])], leaf_now.clone(), leaf_now]);
    let lvm = detach(&tree, &fake, KEY).unwrap();
    assert!(!fake.journalled(), "the entry is left; ran {lvm:?}");
    assert!(!fake.shape().contains_key(leaf), "the merged leaf is left: {:?}", fake.shape());
    let tags = fake.shape().get(KEY).cloned().unwrap_or_default();
    assert!(!tags.contains(&format!("nn={leaf}")), "the volume still names the old leaf: {tags:?}");
    assert!(crate::snapshot::served::open_here(&tree.host(), SR, KEY).is_none(), "the disk was not closed");
    daemon.join().unwrap();
}

/// On a pool member (the master's collector merges there through
/// `chain_commit`, but only the master records the result): a detach whose
/// engine writes the `into` node of a journalled online merge is refused,
/// the disk stays open, nothing changes; once the engine is on another
/// image (no pivot) the disk closes as usual.
#[test]
fn a_members_detach_stays_open_while_its_engine_writes_an_unrecorded_merge() {
    use crate::engine::{Access, Handle, Image, ImageFormat, OpenDisk};
    use crate::snapshot::journal::{Entry, Operation, Step};
    let (tree, fake) = standalone_writer();
    let snapshot = snapshot_numbered(&tree, &fake, "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e71");
    let leaf = "node-0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e71";
    tree.write("/etc/xensource/pool.conf", "slave:10.0.0.9\n");
    fake.state().lvs.remove(&snapshot);
    let entry = Entry {
        operation: Operation::Merge { child: leaf.to_owned(), into: KEY.to_owned(), online: Some(KEY.to_owned()) },
        step: Step::EngineCommitting,
    };
    fake.state().lvs.get_mut(leaf).unwrap().tags.push(entry.to_tag());
    fake.state().lvs.values_mut().for_each(|lv| lv.active = true);
    let run = tempfile::tempdir().unwrap();
    let disk = OpenDisk {
        device: "/dev/nbd0".into(),
        leaf: Image::new(ImageFormat::Qcow2, format!("/dev/{VG}/{leaf}")).unwrap(),
        handle: Handle::QemuStorageDaemon { pid: 4242, run_dir: run.path().into() },
    };
    crate::snapshot::served::record_opened(&tree.host(), SR, KEY, &disk, Access::ReadWrite).unwrap();
    let writes = |lv: &str, drv: &str| {
        vec![
            serde_json::json!([{"id": "disk", "node-name": "ntop"}]),
            serde_json::json!([{"node-name": "ntop", "drv": drv, "file": format!("/dev/{VG}/{lv}")}]),
        ]
    };
    let before = fake.shape();

    // The engine writes the raw base: pivoted, not recorded by the master.
    let daemon = qmp_daemon(&run.path().join("qmp.sock"), vec![writes(KEY, "raw")]);
    assert_eq!(detach(&tree, &fake, KEY), Err("NVMETCP_MERGE_UNFINISHED".to_owned()));
    daemon.join().unwrap();
    assert!(crate::snapshot::served::open_here(&tree.host(), SR, KEY).is_some(), "the disk was closed");
    assert_eq!(fake.shape(), before, "a member's refused detach changed the SR");

    // Still on the old leaf (no pivot): closed as usual; the master's
    // replay decides from the leaf it finds then.
    crate::snapshot::served::record_opened(&tree.host(), SR, KEY, &disk, Access::ReadWrite).unwrap();
    std::fs::remove_file(run.path().join("qmp.sock")).unwrap();
    let daemon = qmp_daemon(&run.path().join("qmp.sock"), vec![writes(leaf, "qcow2")]);
    assert!(detach(&tree, &fake, KEY).is_ok());
    daemon.join().unwrap();
    assert!(crate::snapshot::served::open_here(&tree.host(), SR, KEY).is_none(), "the disk stays open");
}
