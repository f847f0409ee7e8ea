//! How many `lvm` processes `Volume.snapshot` and the `Volume.destroy` of a
//! layered volume run, counted on a VG held in memory
//! ([`crate::snapshot::fake_vg`]): each one is 0.25 s on an idle dom0 and
//! 1-2 s on a loaded one, under the SR's lock.

use std::sync::Arc;

use crate::context::Context;
use crate::error::to_error_record;
use crate::nvme::sysfs::fixture::SysfsTree;
use crate::smapi::method::{Method, PluginKind};
use crate::smapi::params::Params;
use crate::snapshot::fake_vg::FakeVg;
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
