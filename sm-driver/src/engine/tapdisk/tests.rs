//! The tapdisk engine against the recording runner: the exact argv of every
//! step (`xapi-project/blktap control/tap-ctl.c`, `xcp-ng/blktap
//! control/tap-ctl.c`) and what it makes of each documented answer.

use super::*;
use crate::cmd::{CmdError, FakeRunner};
use crate::engine::ImageFormat;

fn failed(stderr: &str) -> Result<Output, CmdError> {
    Err(CmdError::Failed {
        command: "tap-ctl".into(),
        status: "exit status 22".into(),
        code: Some(22),
        stdout: String::new(),
        stderr: stderr.into(),
    })
}

fn shown(fake: &FakeRunner) -> Vec<String> {
    fake.calls().into_iter().map(|c| c.shown).collect()
}

fn raw() -> Image {
    Image::new(ImageFormat::Raw, "/dev/nvmetcp_5f0c/vol-aa").unwrap()
}

fn layer() -> Image {
    Image::new(ImageFormat::Qcow2, "/dev/nvmetcp_5f0c/node-bb").unwrap()
}

fn disk(leaf: Image) -> OpenDisk {
    OpenDisk { device: "/dev/xen/blktap-2/tapdev3".into(), leaf, handle: Handle::Tapdisk { pid: 4242, minor: 3 } }
}

fn name() -> DiskName {
    DiskName::new("vol-aa").unwrap()
}

/// What `help()` prints on an XCP-ng 8.3 dom0 with the qcow2 update.
const HELP_QCOW2: &str = "usage: tap-ctl COMMAND [OPTIONS]\nCOMMAND := { list | allocate | free | create | destroy | spawn | attach | detach | open | close | pause | unpause | stats | major | check | commit | query | cancel }\n";
/// Upstream blktap (and XCP-ng before 2026-05-05): no commit, no qcow2.
const HELP_UPSTREAM: &str = "usage: tap-ctl COMMAND [OPTIONS]\nCOMMAND := { list | allocate | free | create | destroy | spawn | attach | detach | open | close | pause | unpause | stats | major | check }\n";

#[test]
fn the_probe_finds_qcow2_by_the_commit_commands() {
    let fake = FakeRunner::new().then_stdout(HELP_QCOW2);
    let features = Tapdisk::new(&fake).features().unwrap();
    assert_eq!(features, Features { qcow2: true, online_commit: true });
    assert_eq!(shown(&fake), ["tap-ctl"]);

    let fake = FakeRunner::new().then_stdout(HELP_UPSTREAM);
    assert_eq!(Tapdisk::new(&fake).features().unwrap(), Features { qcow2: false, online_commit: false });
}

#[test]
fn the_probe_fails_loudly_when_tap_ctl_is_missing_or_mute() {
    let fake = FakeRunner::new().without(Program::TapCtl);
    let error = Tapdisk::new(&fake).features().unwrap_err();
    assert!(error.to_string().contains("tapdisk"), "{error}");
    let fake = FakeRunner::new().then_stdout("something else\n");
    assert!(matches!(Tapdisk::new(&fake).features(), Err(EngineError::Unexpected { .. })));
}

#[test]
fn open_spawns_allocates_attaches_and_opens_aio_for_a_raw_node() {
    let fake = FakeRunner::new()
        .then_stdout("4242\n")
        .then_stdout("/dev/xen/blktap-2/tapdev3\n")
        .then_stdout("")
        .then_stdout("");
    let disk = Tapdisk::new(&fake).open(&name(), &raw(), Access::ReadWrite).unwrap();
    assert_eq!(
        shown(&fake),
        [
            "tap-ctl spawn",
            "tap-ctl allocate",
            "tap-ctl attach -p 4242 -m 3",
            "tap-ctl open -p 4242 -m 3 -a aio:/dev/nvmetcp_5f0c/vol-aa",
        ]
    );
    assert_eq!(disk.device, PathBuf::from("/dev/xen/blktap-2/tapdev3"));
    assert_eq!(disk.handle, Handle::Tapdisk { pid: 4242, minor: 3 });
}

#[test]
fn open_read_only_opens_a_qcow2_layer_with_dash_r() {
    let fake =
        FakeRunner::new().then_stdout("7\n").then_stdout("/dev/xen/blktap-2/tapdev0\n").then_stdout("").then_stdout("");
    Tapdisk::new(&fake).open(&name(), &layer(), Access::ReadOnly).unwrap();
    assert_eq!(shown(&fake)[3], "tap-ctl open -p 7 -m 0 -a qcow2:/dev/nvmetcp_5f0c/node-bb -R");
}

#[test]
fn a_failed_open_destroys_what_was_built() {
    let fake = FakeRunner::new()
        .then_stdout("4242\n")
        .then_stdout("/dev/xen/blktap-2/tapdev3\n")
        .then_stdout("")
        .then(failed("Invalid argument"))
        .then_stdout("");
    let error = Tapdisk::new(&fake).open(&name(), &layer(), Access::ReadWrite).unwrap_err();
    assert!(error.to_string().contains("opening the image"), "{error}");
    assert_eq!(shown(&fake).last().unwrap(), "tap-ctl destroy -p 4242 -m 3");
}

#[test]
fn an_allocation_answer_that_is_not_a_tapdev_is_refused() {
    let fake = FakeRunner::new().then_stdout("4242\n").then_stdout("/dev/sda\n");
    let error = Tapdisk::new(&fake).open(&name(), &raw(), Access::ReadWrite).unwrap_err();
    assert!(matches!(error, EngineError::Unexpected { .. }), "{error}");
    assert_eq!(fake.calls().len(), 2, "nothing is attached to a device that is not blktap's");
}

#[test]
fn swap_pauses_first_then_unpauses_on_the_new_leaf() {
    let fake = FakeRunner::new().then_stdout("").then_stdout("");
    let swapped = Tapdisk::new(&fake).swap_leaf(&disk(raw()), &layer()).unwrap();
    assert_eq!(
        shown(&fake),
        ["tap-ctl pause -p 4242 -m 3", "tap-ctl unpause -p 4242 -m 3 -a qcow2:/dev/nvmetcp_5f0c/node-bb"]
    );
    assert_eq!(swapped.leaf, layer());
    assert_eq!(swapped.handle, disk(raw()).handle);
}

#[test]
fn a_refused_swap_resumes_the_disk_on_its_old_leaf() {
    let fake = FakeRunner::new().then_stdout("").then(failed("No such file or directory")).then_stdout("");
    let error = Tapdisk::new(&fake).swap_leaf(&disk(raw()), &layer()).unwrap_err();
    assert!(matches!(error, EngineError::SwapReverted { .. }), "{error}");
    assert_eq!(shown(&fake)[2], "tap-ctl unpause -p 4242 -m 3 -a aio:/dev/nvmetcp_5f0c/vol-aa");
}

#[test]
fn list_reads_the_dict_rows() {
    let fake = FakeRunner::new().then_stdout(
        "pid=4242 minor=3 state=0 args=qcow2:/dev/nvmetcp_5f0c/node-bb\npid=77 minor=0 state=0x2\npid=78\n",
    );
    let listed = Tapdisk::new(&fake).list().unwrap();
    assert_eq!(
        listed,
        [
            ListedDisk { pid: 4242, minor: Some(3), args: Some("qcow2:/dev/nvmetcp_5f0c/node-bb".into()) },
            ListedDisk { pid: 77, minor: Some(0), args: None },
            ListedDisk { pid: 78, minor: None, args: None },
        ]
    );
    let fake = FakeRunner::new().then_stdout("   4242    3    0      qcow2 /dev/x\n");
    assert!(Tapdisk::new(&fake).list().is_err(), "the tty table is not the machine format");
}

#[test]
fn close_destroys_a_listed_disk_and_accepts_one_already_gone() {
    let fake = FakeRunner::new().then_stdout("pid=4242 minor=3 state=0 args=aio:/dev/x\n").then_stdout("");
    Tapdisk::new(&fake).close(&disk(raw())).unwrap();
    assert_eq!(shown(&fake), ["tap-ctl list", "tap-ctl destroy -p 4242 -m 3"]);

    let fake = FakeRunner::new().then_stdout("pid=9 minor=1 state=0 args=aio:/dev/y\n");
    Tapdisk::new(&fake).close(&disk(raw())).unwrap();
    assert_eq!(shown(&fake), ["tap-ctl list"]);
}

#[test]
fn commit_and_query_speak_xcp_ng_blktap() {
    let fake = FakeRunner::new()
        .then_stdout("")
        .then_stdout("Commit status 'running' (1048576/4194304)\n")
        .then_stdout("Commit status 'concluded' (4194304/4194304)\n")
        .then_stdout("Commit status 'null' (0/0)\n");
    let engine = Tapdisk::new(&fake);
    let d = disk(Image::new(ImageFormat::Qcow2, "/dev/nvmetcp_5f0c/node-cc").unwrap());
    engine.start_commit(&d, &layer(), &raw()).unwrap();
    assert_eq!(engine.commit_state(&d).unwrap(), CommitState::Running { done: 1_048_576, total: 4_194_304 });
    assert_eq!(engine.commit_state(&d).unwrap(), CommitState::Done);
    assert_eq!(engine.commit_state(&d).unwrap(), CommitState::Idle);
    assert_eq!(
        shown(&fake),
        [
            "tap-ctl commit -p 4242 -m 3 -a /dev/nvmetcp_5f0c/node-bb",
            "tap-ctl query -p 4242 -m 3",
            "tap-ctl query -p 4242 -m 3",
            "tap-ctl query -p 4242 -m 3",
        ]
    );
}

/// Issue 18: an online merge of the running leaf needs the engine to say
/// it moved to the parent afterwards; `tap-ctl list` cannot.
#[test]
fn the_leaf_of_an_open_disk_is_not_merged_by_tapdisk() {
    let fake = FakeRunner::new();
    let refused = Tapdisk::new(&fake).start_commit(&disk(layer()), &layer(), &raw()).unwrap_err();
    assert!(matches!(refused, EngineError::Unsupported { .. }), "{refused}");
    assert!(refused.to_string().contains("shut down"), "{refused}");
    assert!(shown(&fake).is_empty(), "tap-ctl was asked: {:?}", shown(&fake));
}

#[test]
fn a_query_answer_out_of_format_is_an_error_not_a_state() {
    let fake = FakeRunner::new().then_stdout("weird\n");
    assert!(matches!(Tapdisk::new(&fake).commit_state(&disk(layer())), Err(EngineError::Unexpected { .. })));
}

#[test]
fn image_paths_that_could_inject_options_are_refused() {
    for bad in ["relative/path", "/dev/x y", "/dev/x:y", "/dev/x,y", "/dev/../etc/shadow", "/dev/x\n", ""] {
        assert!(Image::new(ImageFormat::Raw, bad).is_err(), "{bad:?} accepted");
    }
    assert!(Image::new(ImageFormat::Raw, format!("/{}", "a".repeat(300))).is_err());
    assert!(DiskName::new("vol-0f1e").is_ok());
    assert!(DiskName::new("../x").is_err());
}

#[test]
fn the_leaf_in_use_is_what_tap_ctl_list_shows_for_the_disk() {
    // `tap_cli_list_dict` rows; the disk's own row names the leaf it opened
    // last (`open -a` or `unpause -a`).
    let rows = "pid=4100 minor=1 state=0 args=aio:/dev/other/vol\npid=4242 minor=3 state=0 args=qcow2:/dev/nvmetcp_5f0c/node-bb\n";
    let fake = FakeRunner::new().then_stdout(rows);
    assert_eq!(Tapdisk::new(&fake).current_leaf(&disk(raw())).unwrap(), layer());
    assert_eq!(shown(&fake), ["tap-ctl list"]);

    let fake = FakeRunner::new().then_stdout("pid=4242 minor=3 state=0 args=aio:/dev/nvmetcp_5f0c/vol-aa\n");
    assert_eq!(Tapdisk::new(&fake).current_leaf(&disk(layer())).unwrap(), raw());

    // A disk tapdisk no longer lists is not guessed.
    let fake = FakeRunner::new().then_stdout("pid=4100 minor=1 state=0 args=aio:/dev/other/vol\n");
    let error = Tapdisk::new(&fake).current_leaf(&disk(raw())).unwrap_err();
    assert!(matches!(error, EngineError::Unexpected { .. }), "{error}");
}
