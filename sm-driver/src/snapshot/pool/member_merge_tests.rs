//! The master's collector merging online in a chain a pool member's engine
//! serves, in process: the master's VG is [`crate::snapshot::fake_vg::FakeVg`],
//! its XAPI the emulator whose `host.call_plugin` runs the member's real
//! `chain_*` functions ([`super::member_tests`]'s two hosts). Issue 18: a
//! node below the running leaf is merged by the member's engine
//! (`chain_commit`), never by `qemu-img` on the master; a member that cannot
//! be asked leaves the merge's journal entry waiting, nothing merged offline;
//! an interrupted merge at rest waits in its journal while its chain is
//! open here or on the member.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::member_tests::{plain, pool, TwoHosts, KEY, SR, UUID, VG};
use crate::cmd::{args_of, CmdError, Command, Output, Program, Runner};
use crate::context::Context;
use crate::engine::{Access, Handle, Image, ImageFormat, OpenDisk};
use crate::ids::VgName;
use crate::lvm::Lvm;
use crate::snapshot::calls::ChainCallError;
use crate::snapshot::ops::{Chains, Faults, NothingOpen};
use crate::snapshot::qemu_img::QemuImg;
use crate::snapshot::served::{forget, open_here, record_opened, MergeHere};

/// The second snapshot's uuid.
const UUID2: &str = "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e13";
/// The third snapshot's uuid.
const UUID3: &str = "0f3c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e14";

/// [`KEY`] running on the member, snapshotted twice there: its raw LV
/// (`vol-<UUID>` refers to it), `node-<UUID>` (`vol-<UUID2>`), its leaf
/// `node-<UUID2>`, which the member's tapdisk writes.
fn twice_on_member() -> TwoHosts {
    let pool = pool(plain());
    pool.served_on_member(Access::ReadWrite);
    pool.snapshot().unwrap();
    pool.master_tree.write("/proc/sys/kernel/random/uuid", &format!("{UUID2}\n"));
    pool.snapshot().unwrap();
    pool.asked.lock().unwrap().clear();
    pool.forget_member_ran();
    pool
}

/// [`twice_on_member`] snapshotted once more: `node-<UUID2>` is a parent
/// now, read-only on the member, below its leaf `node-<UUID3>`.
fn thrice_on_member() -> TwoHosts {
    let pool = twice_on_member();
    pool.master_tree.write("/proc/sys/kernel/random/uuid", &format!("{UUID3}\n"));
    pool.snapshot().unwrap();
    pool.asked.lock().unwrap().clear();
    pool
}

/// The member's tapdisk reports its merge `status`.
fn merge_reports(pool: &TwoHosts, status: &str) {
    *pool.tools.1.lock().unwrap() = format!("Commit status '{status}' (4194304/4194304)\n");
}

/// `SR.attach`'s recovery on the master: journal replay, then the collector.
fn recover(pool: &TwoHosts) {
    let ctx = Context::fake(pool.master.root.clone(), Box::new(pool.vg.clone()));
    let state = crate::sr_state::load(&ctx.host, SR).unwrap();
    let lvm = crate::sr_access::lvm_for(&ctx, &state, true).unwrap();
    let volume_tag = crate::volume::meta::VOLUME_TAG;
    let sr = crate::snapshot::calls::Sr {
        runner: ctx.runner.as_ref(),
        host: &ctx.host,
        lvm: &lvm,
        state: &state,
        volume_tag,
    };
    crate::snapshot::calls::recover(&sr).unwrap();
}

fn has(pool: &TwoHosts, lv: &str, tag: &str) -> bool {
    pool.vg.vg.shape().get(lv).is_some_and(|tags| tags.iter().any(|t| t.starts_with(tag)))
}

/// Issue 18: destroying the first snapshot leaves the raw LV unreferenced,
/// its only child `node-<UUID>` below the running leaf; the master asks the
/// member to merge that node into it (`chain_commit`): the member reloads
/// the raw LV read-write, its tapdisk commits the node, and the master
/// relinks the leaf's tags, points the second snapshot at the raw LV and
/// removes the node. No `qemu-img commit` runs on the master.
#[test]
fn a_node_below_a_members_running_leaf_is_merged_by_the_members_engine() {
    let pool = twice_on_member();
    merge_reports(&pool, "concluded");
    let (node, leaf) = (format!("node-{UUID}"), format!("node-{UUID2}"));
    pool.volume_call("Volume.destroy", &format!("vol-{UUID}")).unwrap();
    let ran = pool.member_ran();
    let at = |line: &str| ran.iter().position(|c| c == line).unwrap_or_else(|| panic!("{line}: {ran:?}"));
    let reloaded = at(&format!("lvm lvchange --refresh {VG}/{KEY}"));
    let committed = at(&format!("tap-ctl commit -p 7 -m 3 -a /dev/{VG}/{node}"));
    assert!(reloaded < committed, "the raw LV is writable before the engine merges into it: {ran:?}");
    assert!(pool.asked().contains(&"chain_commit".to_owned()), "{:?}", pool.asked());
    let shape = pool.vg.vg.shape();
    assert!(!shape.contains_key(&node), "the node is removed: {shape:?}");
    assert!(has(&pool, &leaf, &format!("np={KEY}")), "the leaf now rests on the raw LV: {shape:?}");
    assert!(has(&pool, &format!("vol-{UUID2}"), &format!("nn={KEY}")), "the snapshot's data is there: {shape:?}");
    assert!(!pool.vg.vg.journalled(), "{shape:?}");
    assert!(pool.vg.vg.ran(0, "qemu-img commit").is_empty(), "qemu-img wrote a chain a member has open");
}

/// Issue 18: the member's engine reports the merge failed. The member had
/// reloaded the raw LV read-write for the job; the master asks it to give
/// the LV back (`chain_commit` `give_back`), and it reloads it read-only
/// after the job. The entry goes, the chain is as before.
#[test]
fn a_members_failed_merge_gives_the_parent_back_read_only_there() {
    let pool = twice_on_member();
    merge_reports(&pool, "failed");
    let before = pool.vg.vg.shape();
    pool.volume_call("Volume.destroy", &format!("vol-{UUID}")).unwrap();
    let ran = pool.member_ran();
    assert!(ran.iter().any(|c| c.starts_with("tap-ctl commit")), "the member's engine was not asked: {ran:?}");
    // The start reloads it read-write; only the give-back reloads it read-only.
    let reloaded = format!("lvm lvchange --refresh {VG}/{KEY}");
    assert!(pool.member_ran_read_only().contains(&reloaded), "the raw LV stays writable on the member: {ran:?}");
    assert!(!pool.vg.vg.journalled(), "{:?}", pool.vg.vg.shape());
    let mut after = before;
    after.remove(&format!("vol-{UUID}"));
    assert_eq!(pool.vg.vg.shape(), after, "only the destroyed volume's record went");
    assert!(pool.vg.vg.ran(0, "qemu-img commit").is_empty(), "qemu-img wrote a chain a member has open");
}

/// Issue 18: the member goes down right after starting the merge. The
/// entry stays at `EngineCommitting` through the collector run and through
/// `SR.attach`'s replay (nothing concluded from silence, nothing merged
/// offline); once the member answers again, replay finishes the merge.
#[test]
fn a_member_that_cannot_be_reached_leaves_its_merge_waiting() {
    let pool = twice_on_member();
    merge_reports(&pool, "running");
    pool.down_after_start.store(true, Ordering::SeqCst);
    let node = format!("node-{UUID}");
    pool.volume_call("Volume.destroy", &format!("vol-{UUID}")).unwrap();
    assert!(pool.down.load(Ordering::SeqCst), "the merge was started: {:?}", pool.asked());
    assert!(has(&pool, &node, "nj="), "the merge is journalled: {:?}", pool.vg.vg.shape());
    recover(&pool);
    assert!(has(&pool, &node, "nj="), "replay waits for the member: {:?}", pool.vg.vg.shape());
    assert!(pool.vg.vg.ran(0, "qemu-img commit").is_empty(), "merged offline while the member was away");
    // The member is back, its job done: replay finishes the merge.
    pool.down_after_start.store(false, Ordering::SeqCst);
    pool.down.store(false, Ordering::SeqCst);
    merge_reports(&pool, "concluded");
    recover(&pool);
    assert!(!pool.vg.vg.shape().contains_key(&node), "{:?}", pool.vg.vg.shape());
    assert!(!pool.vg.vg.journalled(), "{:?}", pool.vg.vg.shape());
    assert!(pool.vg.vg.ran(0, "qemu-img commit").is_empty(), "qemu-img wrote a chain a member has open");
}

/// Issue 18: the member started the merge but its answer was lost. The
/// entry stays at `EngineCommitting` (the job may run), and replay asks the
/// member once it answers: done, the merge is finished, never planned anew.
#[test]
fn a_lost_answer_to_the_start_leaves_the_merge_to_replay() {
    let pool = twice_on_member();
    merge_reports(&pool, "concluded");
    pool.down_after_start.store(true, Ordering::SeqCst);
    pool.lose_start_answer.store(true, Ordering::SeqCst);
    let node = format!("node-{UUID}");
    pool.volume_call("Volume.destroy", &format!("vol-{UUID}")).unwrap();
    assert!(has(&pool, &node, "nj="), "the started merge is still journalled: {:?}", pool.vg.vg.shape());
    pool.down.store(false, Ordering::SeqCst);
    pool.down_after_start.store(false, Ordering::SeqCst);
    let starts = || pool.member_ran().iter().filter(|c| c.starts_with("tap-ctl commit")).count();
    assert_eq!(starts(), 1);
    recover(&pool);
    assert!(!pool.vg.vg.shape().contains_key(&node), "{:?}", pool.vg.vg.shape());
    assert!(!pool.vg.vg.journalled(), "{:?}", pool.vg.vg.shape());
    assert_eq!(starts(), 1, "the merge was started again");
}

/// Issue 18: `into` of a merge in a chain the member serves is written by
/// the member's engine: the member reloads it read-write (no read-only
/// list) before its engine commits, and read-only after the job (a parent
/// again: the master asks it, `chain_commit` `give_back`); the master,
/// which never writes it, leaves its own activation alone.
#[test]
fn the_node_a_members_engine_merges_into_is_writable_there_and_left_alone_on_the_master() {
    let pool = twice_on_member();
    merge_reports(&pool, "concluded");
    let (start, loaded) = (pool.vg.vg.commands(), pool.vg.vg.state().loaded_read_write.len());
    pool.volume_call("Volume.destroy", &format!("vol-{UUID}")).unwrap();
    let ran = pool.member_ran();
    let refresh = format!("lvm lvchange --refresh {VG}/{KEY}");
    let committed = ran.iter().position(|c| c.starts_with("tap-ctl commit")).unwrap_or_else(|| panic!("{ran:?}"));
    assert!(ran[..committed].contains(&refresh), "the member did not reload {KEY} before its commit: {ran:?}");
    let read_only = pool.member_ran_read_only();
    assert_eq!(read_only, [format!("lvm lvchange -ay {VG}/{KEY}"), refresh], "a parent again, read-only: {ran:?}");
    assert!(ran.iter().rposition(|c| *c == read_only[1]) > Some(committed), "read-only before the job: {ran:?}");
    let on_master: Vec<String> = pool.vg.vg.state().log[start..]
        .iter()
        .filter(|c| c.starts_with("lvm lvchange") && c.ends_with(&format!(" {VG}/{KEY}")) && !c.contains("--addtag"))
        .cloned()
        .collect();
    assert!(on_master.iter().all(|c| c.contains(" -an ")), "the master activated {KEY}: {on_master:?}");
    let read_write = pool.vg.vg.state().loaded_read_write[loaded..].to_vec();
    assert!(!read_write.contains(&KEY.to_owned()), "loaded read-write on the master: {read_write:?}");
    assert!(!pool.vg.vg.journalled(), "{:?}", pool.vg.vg.shape());
}

/// Issue 18: merged into a qcow2 node, that node is a parent again, shrunk
/// to its image end by the master: the master reads it (and its backing
/// chain) read-only for that, never loads it read-write.
#[test]
fn a_qcow2_node_a_members_engine_merges_into_is_only_read_on_the_master() {
    let pool = twice_on_member();
    pool.master_tree.write("/proc/sys/kernel/random/uuid", &format!("{UUID3}\n"));
    pool.snapshot().unwrap();
    merge_reports(&pool, "concluded");
    let (start, loaded) = (pool.vg.vg.commands(), pool.vg.vg.state().loaded_read_write.len());
    pool.volume_call("Volume.destroy", &format!("vol-{UUID2}")).unwrap();
    let into = format!("node-{UUID}");
    assert!(!pool.vg.vg.shape().contains_key(&format!("node-{UUID2}")), "{:?}", pool.vg.vg.shape());
    let read_write = pool.vg.vg.state().loaded_read_write[loaded..].to_vec();
    assert!(!read_write.contains(&into) && !read_write.contains(&KEY.to_owned()), "{read_write:?}");
    let log = pool.vg.vg.state().log[start..].to_vec();
    let read = log.iter().position(|c| *c == format!("lvm lvchange -ay {VG}/{into} {VG}/{KEY}"));
    let checked = log.iter().position(|c| c.starts_with("qemu-img check") && c.ends_with(&format!("/{into}")));
    assert!(read.is_some() && read < checked, "not activated read-only before qemu-img reads it: {log:?}");
    assert!(pool.vg.vg.ran(0, "qemu-img commit").is_empty(), "qemu-img wrote a chain a member has open");
}

/// SMlog, as the plugin writes it, while `run` runs (this thread).
fn logged(run: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber =
        tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).with_target(false).finish();
    tracing::subscriber::with_default(subscriber, run);
    let text = lines.0.lock().unwrap().clone();
    String::from_utf8(text).unwrap()
}

/// Stops the collector once it has written the node into its parent.
struct KilledAfterCommit;

impl Faults for KilledAfterCommit {
    fn reached(&self, step: &str) {
        assert_ne!(step, "merge-committed", "killed");
    }
}

/// [`KEY`] snapshotted twice at rest: its raw LV (`vol-<UUID>` refers to
/// it), `node-<UUID>` (`vol-<UUID2>`), its leaf `node-<UUID2>`.
fn twice_at_rest() -> TwoHosts {
    let pool = pool(plain());
    pool.snapshot().unwrap();
    pool.master_tree.write("/proc/sys/kernel/random/uuid", &format!("{UUID2}\n"));
    pool.snapshot().unwrap();
    pool
}

/// [`KEY`] snapshotted twice at rest, the first snapshot deleted, and the
/// collector killed after writing `node-<UUID>` into the raw LV, before
/// relinking `node-<UUID2>`, [`KEY`]'s leaf, to it.
fn merge_killed_at_rest() -> TwoHosts {
    let pool = twice_at_rest();
    let lvm = Lvm::new(&pool.vg, Path::new("/dev/nvme0n1"), true).unwrap();
    let vg: VgName = VG.parse().unwrap();
    let tag = crate::volume::meta::VOLUME_TAG;
    let chains = Chains::new(&lvm, QemuImg::new(&pool.vg), &vg, tag, &KilledAfterCommit);
    chains.destroy(&format!("vol-{UUID}")).unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| chains.collect(&NothingOpen))).is_err(), "not killed");
    assert!(pool.vg.vg.journalled());
    pool
}

/// Issue 18: the replay on `SR.attach` (and when the collector starts) of a
/// merge at rest whose chain an engine opened since (the volume started
/// here, or on the member) edits nothing: no `qemu-img`, the entry kept,
/// the attach succeeds and SMlog says why it waited and where the chain is
/// open. Closed again, the next replay finishes the merge.
#[test]
fn an_interrupted_merge_waits_while_its_chain_is_open_here_or_on_a_member() {
    let pool = merge_killed_at_rest();
    let (node, leaf) = (format!("node-{UUID}"), format!("node-{UUID2}"));
    let disk = OpenDisk {
        device: "/dev/xen/blktap-2/tapdev3".into(),
        leaf: Image::new(ImageFormat::Qcow2, format!("/dev/{VG}/{leaf}")).unwrap(),
        handle: Handle::Tapdisk { pid: 7, minor: 3 },
    };
    for (host, place) in [(pool.master.root.clone(), "open on this host"), (pool.member.host(), "open on host xcp-2")] {
        record_opened(&host, SR, KEY, &disk, Access::ReadWrite).unwrap();
        let start = pool.vg.vg.commands();
        let smlog = logged(|| recover(&pool));
        assert!(pool.vg.vg.ran(start, "qemu-img").is_empty(), "{place}: {:?}", pool.vg.vg.ran(start, "qemu-img"));
        assert!(has(&pool, &node, "nj="), "{place}: the entry is gone: {:?}", pool.vg.vg.shape());
        for said in ["the merge waits in its journal", &format!("LV {node} is in the chain of volume {KEY} ({place})")]
        {
            assert!(smlog.contains(said), "{place}: {said:?} not in SMlog: {smlog}");
        }
        forget(&host, SR, KEY);
    }
    let start = pool.vg.vg.commands();
    recover(&pool);
    assert!(!pool.vg.vg.shape().contains_key(&node), "{:?}", pool.vg.vg.shape());
    assert!(!pool.vg.vg.journalled(), "{:?}", pool.vg.vg.shape());
    assert_eq!(pool.vg.vg.ran(start, "qemu-img rebase").len(), 1, "{:?}", pool.vg.vg.ran(start, "qemu-img"));
}
/// Issue 18: merging `node-<UUID>` into the raw LV rewrites the backing link
/// of the node above it, `node-<UUID2>`, a parent the member has active
/// read-only (qemu-storage-daemon 7.2 dies writing it: the test bed's
/// pool-snapshot). The member reloads it read-write, with the raw LV,
/// before its engine merges; the running leaf is left alone.
#[test]
fn the_node_above_a_merged_one_is_writable_on_the_member_before_its_engine_merges() {
    let pool = thrice_on_member();
    merge_reports(&pool, "concluded");
    let (node, overlay, leaf) = (format!("node-{UUID}"), format!("node-{UUID2}"), format!("node-{UUID3}"));
    // The member has the chain's parents active (read-only) under its disk.
    pool.member.write("/sys/block/dm-1/dm/name", &format!("{}\n", crate::pool_mappings::dm_name(VG, &overlay)));
    pool.volume_call("Volume.destroy", &format!("vol-{UUID}")).unwrap();
    let ran = pool.member_ran();
    // What the member ran for the merge: after the last snapshot's swap.
    let swapped = ran.iter().rposition(|c| c.starts_with("tap-ctl unpause")).unwrap();
    let merge = &ran[swapped + 1..];
    let committed = merge
        .iter()
        .position(|c| *c == format!("tap-ctl commit -p 7 -m 3 -a /dev/{VG}/{node}"))
        .unwrap_or_else(|| panic!("{merge:?}"));
    let at =
        |line: &str| merge[..committed].iter().rposition(|c| c == line).unwrap_or_else(|| panic!("{line}: {merge:?}"));
    let reloaded = at(&format!("lvm lvchange --refresh {VG}/{KEY}"));
    let overlay_reloaded = at(&format!("lvm lvchange --refresh {VG}/{overlay}"));
    assert!(reloaded < overlay_reloaded, "the node above is read-only for the job: {merge:?}");
    assert!(!merge.iter().any(|c| c.ends_with(&format!("{VG}/{leaf}"))), "the running leaf reloaded: {merge:?}");
    // After the job both are parents again: read-only on the member.
    let read_only = pool.member_ran_read_only();
    for lv in [KEY, overlay.as_str()] {
        let refresh = format!("lvm lvchange --refresh {VG}/{lv}");
        assert!(read_only.contains(&refresh), "{lv} stays writable on the member: {read_only:?}");
        assert!(merge.iter().rposition(|c| *c == refresh) > Some(committed), "{lv} read-only only after: {merge:?}");
    }
    let shape = pool.vg.vg.shape();
    assert!(!shape.contains_key(&node), "the node is removed: {shape:?}");
    assert!(has(&pool, &overlay, &format!("np={KEY}")), "the node above rests on the raw LV: {shape:?}");
    assert!(pool.vg.vg.ran(0, "qemu-img commit").is_empty(), "qemu-img wrote a chain a member has open");
}

/// `KEY`'s leaf, as a tapdisk on the member serves it.
fn tapdisk_on_member() -> OpenDisk {
    OpenDisk {
        device: "/dev/xen/blktap-2/tapdev3".into(),
        leaf: Image::new(ImageFormat::Qcow2, format!("/dev/{VG}/node-{UUID2}")).unwrap(),
        handle: Handle::Tapdisk { pid: 7, minor: 3 },
    }
}

/// A VM starting on the member once the collector has journalled its
/// merge, after it made its plan: the member's engine opens [`KEY`]'s chain.
struct OpenedOnMemberAtJournal<'a>(&'a crate::nvme::sysfs::fixture::SysfsTree);

impl Faults for OpenedOnMemberAtJournal<'_> {
    fn reached(&self, step: &str) {
        if step == "merge-journal" {
            record_opened(&self.0.host(), SR, KEY, &tapdisk_on_member(), Access::ReadWrite).unwrap();
        }
    }
}

/// Issue 18: the collector asks the pool which chains are open again once
/// a merge is journalled, not only when it plans: [`KEY`]'s chain, opened
/// on the member between the plan and the merge, is not written by
/// `qemu-img` on the master; the entry waits for a later run.
#[test]
fn a_chain_a_member_opens_after_the_collectors_plan_is_not_merged_under_it() {
    let pool = twice_at_rest();
    let lvm = Lvm::new(&pool.vg, Path::new("/dev/nvme0n1"), true).unwrap();
    let vg: VgName = VG.parse().unwrap();
    let host = pool.master.root.clone();
    let others = crate::snapshot::pool::Pool { root: &host, sr_uuid: SR, vg: VG };
    let here = MergeHere { runner: &pool.vg, host: &host, sr_uuid: SR };
    let merging =
        super::merging::MergeInPool::new(here, crate::snapshot::pool::Pool { root: &host, sr_uuid: SR, vg: VG });
    let faults = OpenedOnMemberAtJournal(&pool.member);
    let chains = Chains::new(&lvm, QemuImg::new(&pool.vg), &vg, crate::volume::meta::VOLUME_TAG, &faults)
        .with_other_hosts(&others)
        .with_merging(&merging);
    chains.destroy(&format!("vol-{UUID}")).unwrap();
    let start = pool.vg.vg.commands();
    let smlog = logged(|| {
        chains.collect(&NothingOpen).unwrap();
    });
    assert!(open_on_member(&pool), "the fault did not open the chain");
    assert!(pool.vg.vg.ran(start, "qemu-img").is_empty(), "{:?}", pool.vg.vg.ran(start, "qemu-img"));
    assert!(has(&pool, &format!("node-{UUID}"), "nj="), "the entry is gone: {:?}", pool.vg.vg.shape());
    assert!(smlog.contains("open on host xcp-2"), "SMlog does not say where: {smlog}");
}

fn open_on_member(pool: &TwoHosts) -> bool {
    open_here(&pool.member.host(), SR, KEY).is_some()
}

/// The member's `Datapath.attach` tools: LVM on the SR's shared VG (the
/// master's [`FakeVg`](crate::snapshot::fake_vg::FakeVg), read as members
/// read it), `tap-ctl` a tapdisk with the qcow2 driver that spawns pid 7
/// on minor 3 and records its commands.
#[derive(Clone)]
struct MemberDatapath {
    vg: super::member_tests::Writer,
    tap_ctl: Arc<Mutex<Vec<String>>>,
}

impl Runner for MemberDatapath {
    fn resolve(&self, program: Program) -> Result<std::path::PathBuf, CmdError> {
        Ok(Path::new("/usr/sbin").join(program.name()))
    }

    fn start_detached(&self, command: &Command) -> Result<u32, CmdError> {
        panic!("a tapdisk attach starts nothing detached: {command}")
    }

    fn run(&self, command: &Command) -> Result<Output, CmdError> {
        if command.program() != Program::TapCtl {
            return self.vg.run(command);
        }
        let args = args_of(command);
        let mut ran = self.tap_ctl.lock().unwrap();
        ran.push(args.join(" "));
        let opened = ran.iter().any(|c| c.starts_with("open")) && !ran.iter().any(|c| c.starts_with("destroy"));
        let stdout = match args.first().map(String::as_str) {
            None => super::member_tests::HELP_QCOW2.to_owned(),
            Some("spawn") => "7\n".to_owned(),
            Some("allocate") => "/dev/xen/blktap-2/tapdev3\n".to_owned(),
            Some("list") if opened => format!("pid=7 minor=3 state=0 args=qcow2:/dev/{VG}/node-{UUID2}\n"),
            _ => String::new(),
        };
        Ok(Output { stdout, stderr: String::new() })
    }
}

/// [`KEY`]'s chain opened on the member as `Datapath.attach` opens it.
fn attach_on_member(pool: &TwoHosts, tools: &MemberDatapath) -> Result<std::path::PathBuf, ChainCallError> {
    let host = pool.member.host();
    let state = crate::sr_state::load(&host, SR).unwrap();
    let lvm = Lvm::new(tools, Path::new("/dev/nvme0n1"), false).unwrap();
    let lv = lvm.lvs(&state.vg).unwrap().into_iter().find(|l| l.name == KEY).unwrap();
    crate::snapshot::served::attach(tools, &host, &lvm, &state, crate::volume::meta::VOLUME_TAG, &lv)
}

/// Issue 18: a VM started on the member while the master has a merge in
/// its disk's chain journalled (here, a collector interrupted after
/// writing the node into its parent) is refused with what the master is
/// doing and what to do: the member's engine opened the chain and recorded
/// it first (so the master, asking after it journalled, sees it), then
/// read the journal, and closed the disk again. Once the master finishes
/// the merge, the same attach serves the disk.
#[test]
fn a_disk_whose_chain_the_master_merges_is_closed_again_and_refused_on_a_member() {
    let pool = merge_killed_at_rest();
    let tools = MemberDatapath { vg: pool.vg.clone(), tap_ctl: Arc::default() };
    let refused = attach_on_member(&pool, &tools).unwrap_err();
    assert!(matches!(refused, ChainCallError::ChainBusy { .. }), "{refused:?}");
    let said = refused.to_string();
    let merge = format!("a merge of node node-{UUID} into {KEY} at rest");
    for words in [merge.as_str(), "Retry in a minute", "nvmetcp doctor"] {
        assert!(said.contains(words), "{words:?} not in: {said}");
    }
    let ran = tools.tap_ctl.lock().unwrap().clone();
    assert!(ran.iter().any(|c| c.starts_with("open")), "the chain was not opened first: {ran:?}");
    assert!(ran.last().is_some_and(|c| c == "destroy -p 7 -m 3"), "the disk was not closed again: {ran:?}");
    assert!(!open_on_member(&pool), "the member still records the disk as open");
    recover(&pool);
    assert!(!pool.vg.vg.journalled(), "{:?}", pool.vg.vg.shape());
    let tools = MemberDatapath { vg: pool.vg.clone(), tap_ctl: Arc::default() };
    assert_eq!(attach_on_member(&pool, &tools).unwrap(), Path::new("/dev/xen/blktap-2/tapdev3"));
    assert!(open_on_member(&pool));
}
