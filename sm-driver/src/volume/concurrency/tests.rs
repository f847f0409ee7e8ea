//! The campaign itself (see the parent module).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::cmd::{Command, DeviceSubstitute, Program, Runner, SystemRunner};
use crate::context::Context;
use crate::error::to_error_record;
use crate::nvme::sysfs::fixture::SysfsTree;
use crate::smapi::method::{Method, PluginKind};
use crate::smapi::params::Params;
use crate::sr_state;

const SR: &str = "c0c0c0c0-1600-4000-8000-000000000100";
const VG: &str = "nvmetcp_c0c0c0c0160040008000000000000100";
const NQN: &str = "nqn.2024-01.io.example:concurrency";
const WWID: &str = "uuid.c0c0c0c0-1600-4000-8000-0000000001ff";
const HOST_ID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
const HEAD: &str = "/dev/nvme0n1";

/// A loop device over a sparse file, with the SR's PV and VG on it; removed
/// with everything LVM keeps about it when dropped.
struct LoopVg {
    device: String,
    _file: tempfile::NamedTempFile,
}

impl LoopVg {
    fn new(bytes: u64) -> Self {
        assert!(
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0,
            "this test needs root: it creates a loop device and an LVM VG on it"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(bytes).unwrap();
        #[allow(clippy::disallowed_methods)] // test set-up: losetup is no program the driver runs
        let out = std::process::Command::new("losetup").args(["--find", "--show"]).arg(file.path()).output();
        let out = out.expect("losetup (util-linux) is needed for this test");
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        let device = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let this = Self { device, _file: file };
        this.lvm(&["pvcreate", "-y", "-ff", "--metadatasize", "8m", &this.device]);
        let tags = ["nvmetcp_sr", &format!("nvmetcp.uuid={SR}"), &format!("nvmetcp.writer={HOST_ID}")];
        let mut vgcreate = vec!["vgcreate", "-s", "4m"];
        for tag in &tags {
            vgcreate.extend(["--addtag", tag]);
        }
        vgcreate.extend([VG, this.device.as_str()]);
        this.lvm(&vgcreate);
        this
    }

    fn lvm(&self, args: &[&str]) -> String {
        let filter = format!(
            "devices {{ filter = [ \"a|^{0}$|\", \"r|.*|\" ] global_filter = [ \"a|^{0}$|\", \"r|.*|\" ] }} \
             global {{ activation = 0 }}",
            self.device
        );
        let command =
            Command::new(Program::Lvm).arg(args[0]).arg("--config").arg(filter).args(args[1..].iter().copied());
        let output = SystemRunner::new().run(&command).unwrap_or_else(|e| panic!("{e}"));
        output.stdout
    }
}

impl Drop for LoopVg {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.lvm(&["vgremove", "-f", VG]));
        #[allow(clippy::disallowed_methods)] // test tear-down
        let _ = std::process::Command::new("losetup").arg("-d").arg(&self.device).status();
        let _ = std::fs::remove_file(format!("/etc/lvm/backup/{VG}"));
        for entry in std::fs::read_dir("/etc/lvm/archive").into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&format!("{VG}_")) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The attached SR: one live path, the head, this host standalone.
fn attached(bytes: u64) -> SysfsTree {
    let tree = SysfsTree::new();
    tree.controller("nvme0", "tcp", NQN, "traddr=10.0.0.1,trsvcid=4420", "nqn.h:h", "live");
    tree.head("nvme-subsys0", "nvme0n1", NQN, 1, WWID, bytes / 512);
    tree.path_device("nvme0", "nvme0c0n1");
    tree.write("/etc/nvme/hostid", &format!("{HOST_ID}\n"));
    // New volumes' UUIDs come from the kernel, as on a host.
    let uuid = tree.host().path("/proc/sys/kernel/random/uuid");
    std::fs::create_dir_all(uuid.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/proc/sys/kernel/random/uuid", uuid).unwrap();
    let state = sr_state::one_tcp_path(SR, VG, NQN, WWID, bytes, bytes);
    sr_state::save(&tree.host(), &state).unwrap();
    tree
}

fn call(tree: &SysfsTree, device: &str, method: &str, body: &str) -> Result<Value, String> {
    let ctx = Context::fake(tree.host(), Box::new(DeviceSubstitute::new(HEAD, device)));
    let params = Params::from_json(Method::lookup(method).unwrap(), body).unwrap();
    crate::dispatch::dispatch(&ctx, PluginKind::Volume, &params).map_err(|f| {
        let record = to_error_record(&f, "h1");
        format!("{} {:?}", record.code, record.params)
    })
}

fn sr() -> String {
    format!(r#""dbg":"t","sr":"nvmetcp://sr/{SR}""#)
}

fn create(name: &str) -> String {
    format!(r#"{{{},"name":"{name}","description":"","size":4194304,"sharable":false}}"#, sr())
}

fn on(key: &str, extra: &str) -> String {
    format!(r#"{{{},"key":"{key}"{extra}}}"#, sr())
}

#[test]
#[ignore = "needs root and a loop device; run by tests/run"]
fn a_hundred_concurrent_mixed_calls_lose_and_duplicate_nothing() {
    const BYTES: u64 = 1 << 30;
    let vg = LoopVg::new(BYTES);
    let tree = attached(BYTES);
    let device = vg.device.clone();
    let pre: Vec<String> = (1..=10)
        .map(|i| {
            let made = call(&tree, &device, "Volume.create", &create(&format!("p{i}"))).unwrap();
            made["key"].as_str().unwrap().to_owned()
        })
        .collect();
    // 100 calls: per round 8 creates, 1 destroy, 4 sets, 1 rename, 1 resize,
    // 3 stats and 2 lists.
    let mut calls: Vec<(&str, String)> = Vec::new();
    for round in 0..5 {
        let kept = &pre[round + 5];
        for j in 1..=8 {
            calls.push(("Volume.create", create(&format!("c{round}-{j}"))));
        }
        calls.push(("Volume.destroy", on(&pre[round], "")));
        for k in 1..=4 {
            calls.push(("Volume.set", on(kept, &format!(r#","k":"k{k}","v":"value {k} of {kept}""#))));
        }
        calls.push(("Volume.set_name", on(kept, &format!(r#","new_name":"renamed {}""#, round + 6))));
        calls.push(("Volume.resize", on(kept, r#","new_size":8388608"#)));
        for _ in 0..3 {
            calls.push(("Volume.stat", on(kept, "")));
        }
        for _ in 0..2 {
            calls.push(("SR.ls", format!("{{{}}}", sr())));
        }
    }
    assert_eq!(calls.len(), 100);
    let results: Vec<(&str, Result<Value, String>)> = std::thread::scope(|scope| {
        let running: Vec<_> = calls
            .iter()
            .map(|(method, body)| {
                let (tree, device) = (&tree, &device);
                scope.spawn(move || (*method, call(tree, device, method, body)))
            })
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let failed: Vec<String> =
        results.iter().filter_map(|(m, r)| r.as_ref().err().map(|e| format!("{m}: {e}"))).collect();
    assert!(failed.is_empty(), "{} of 100 concurrent calls failed: {failed:#?}", failed.len());
    let created: BTreeSet<&str> = results
        .iter()
        .filter(|(m, _)| *m == "Volume.create")
        .map(|(_, r)| r.as_ref().unwrap()["key"].as_str().unwrap())
        .collect();
    assert_eq!(created.len(), 40, "40 creates, 40 distinct keys");

    vg.lvm(&["vgck", VG]);
    let listed = call(&tree, &device, "SR.ls", &format!("{{{}}}", sr())).unwrap();
    let listed = listed.as_array().unwrap();
    let mut names: Vec<&str> = listed.iter().map(|v| v["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    let mut want: Vec<String> = (0..5).flat_map(|r| (1..=8).map(move |j| format!("c{r}-{j}"))).collect();
    want.extend((6..=10).map(|i| format!("renamed {i}")));
    want.sort();
    assert_eq!(names, want, "SR.ls after 100 concurrent calls");
    let keys: BTreeSet<&str> = listed.iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), listed.len(), "a key listed twice");
    assert!(created.is_subset(&keys), "a created volume is not listed");
    for kept in &pre[5..] {
        let volume = listed.iter().find(|v| v["key"] == kept.as_str()).unwrap();
        for k in 1..=4 {
            assert_eq!(volume["keys"][format!("k{k}")], format!("value {k} of {kept}"), "{volume}");
        }
        assert_eq!(volume["virtual_size"], 8_388_608, "{volume}");
    }
    for gone in &pre[..5] {
        assert!(!keys.contains(gone.as_str()), "destroyed {gone} is listed");
    }
    let lvs = vg.lvm(&["lvs", "--noheadings", "-o", "lv_name", VG]);
    assert_eq!(lvs.lines().filter(|l| l.trim().starts_with("vol-")).count(), 45, "{lvs}");
    assert!(Path::new(&device).exists());
}
