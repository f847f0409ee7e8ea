//! The chain operations in process, on a VG held in memory
//! ([`crate::snapshot::fake_vg`]): a snapshot or clone failing at each of
//! its commands, or killed at each of its steps, is undone or finished by
//! replay, never left half-done; the old leaf shrinks to its image end and grows back
//! before a merge writes into it.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use super::*;
use crate::ids::VgName;
use crate::snapshot::calls::ChainView;
use crate::snapshot::fake_vg::{FakeVg, EXTENT, MIB, VG_SIZE};

const VG: &str = "vgx";
const TAG: &str = "nvmetcp_vol";

/// `vgx` holding `names`, plain volumes of 64 MiB from before snapshots.
fn with_volumes(names: &[&str]) -> FakeVg {
    FakeVg::named(VG, &[]).with_volumes(TAG, names)
}

/// Kills (panics) at one named step.
struct KillAt(&'static str);

impl Faults for KillAt {
    fn reached(&self, step: &str) {
        assert_ne!(step, self.0, "killed at {step}");
    }
}

fn on<R>(fake: &FakeVg, faults: &dyn Faults, run: impl FnOnce(&Chains<'_>) -> R) -> R {
    let lvm = Lvm::new(fake, Path::new("/dev/nvme0n1"), true).unwrap();
    let vg: VgName = VG.parse().unwrap();
    let chains = Chains::new(&lvm, QemuImg::new(fake), &vg, TAG, faults);
    run(&chains)
}

fn names(uuid: &str, clone: bool) -> NewNames {
    crate::snapshot::calls::new_names(uuid, clone, vec![format!("u={uuid}")])
}

fn snapshot(fake: &FakeVg, uuid: &str, clone: bool) -> Result<String, OpError> {
    on(fake, &NoFaults, |c| c.snapshot("vol-a", &names(uuid, clone), 64 * MIB, None))
}

fn replay(fake: &FakeVg) -> usize {
    on(fake, &NoFaults, |c| c.replay(&NothingOpen)).unwrap()
}

/// `vol-a` after one snapshot at rest: a raw node under the qcow2 leaf
/// `node-1`, the snapshot `vol-1` on the raw node; `node-1` has data up to
/// 9 MiB + 1 byte.
fn after_one_snapshot() -> FakeVg {
    let fake = with_volumes(&["vol-a"]);
    snapshot(&fake, "1", false).unwrap();
    fake.state().ends.insert("node-1".to_owned(), 9 * MIB + 1);
    fake
}

/// Fails each command of a snapshot (or clone) of `vol-a` in turn, as
/// `calls::take` meets it, and replays at once: the SR is as before (undo)
/// or as after a clean run (finish), never in between, and no journal is
/// left. Returns how many ended each way.
fn each_failure_is_undone_or_finished(clone: bool) -> (usize, usize) {
    let clean = after_one_snapshot();
    let (before, start) = (clean.shape(), clean.commands());
    snapshot(&clean, "2", clone).unwrap();
    let (after, commands) = (clean.shape(), clean.commands() - start);
    assert!(commands > 8, "a snapshot runs {commands} commands");
    let (mut undone, mut finished) = (0, 0);
    for failing in 0..commands {
        let fake = after_one_snapshot();
        let start = fake.commands();
        fake.state().fail_at = Some(start + failing);
        let result = snapshot(&fake, "2", clone);
        let failed = fake.state().log[start + failing].clone();
        if result.is_ok() {
            // Only the shrink (an optimisation) may fail without failing the snapshot.
            let shrink = ["lvreduce", "qemu-img check", "lv_name=\"node-1\""];
            assert!(shrink.iter().any(|s| failed.contains(s)), "{failed} failed unnoticed");
        } else {
            replay(&fake);
        }
        assert!(!fake.journalled(), "a journal entry is left after command {failing} ({failed:?}) failed");
        let shape = fake.shape();
        if shape == before {
            undone += 1;
        } else {
            assert_eq!(shape, after, "command {failing} failed: the SR is neither as before nor as after");
            finished += 1;
        }
    }
    (undone, finished)
}

#[test]
fn a_snapshot_failing_at_any_command_is_undone_or_finished_by_replay() {
    let (undone, finished) = each_failure_is_undone_or_finished(false);
    assert!(undone >= 5 && finished >= 2, "undone {undone}, finished {finished}");
}

#[test]
fn a_clone_failing_at_any_command_is_undone_or_finished_by_replay() {
    let (undone, finished) = each_failure_is_undone_or_finished(true);
    assert!(undone >= 7 && finished >= 2, "undone {undone}, finished {finished}");
}

#[test]
fn a_snapshot_killed_at_each_step_is_undone_before_its_commit_point_and_finished_after() {
    for (clone, steps) in [
        (false, &["leaf-created", "leaf-header", "volume-created"][..]),
        (true, &["leaf-created", "leaf-header", "clone-leaf", "volume-created"][..]),
    ] {
        let clean = after_one_snapshot();
        let before = clean.shape();
        snapshot(&clean, "2", clone).unwrap();
        let after = clean.shape();
        for step in steps {
            let fake = after_one_snapshot();
            let killed = catch_unwind(AssertUnwindSafe(|| {
                on(&fake, &KillAt(step), |c| c.snapshot("vol-a", &names("2", clone), 64 * MIB, None))
            }));
            assert!(killed.is_err(), "not killed at {step}");
            assert!(fake.journalled(), "killed at {step} with no journal to replay");
            assert_eq!(replay(&fake), 1);
            assert_eq!(
                fake.shape(),
                before,
                "a {} killed at {step} is not undone",
                if clone { "clone" } else { "snapshot" }
            );
        }
        for step in ["committed", "shrunk"] {
            let fake = after_one_snapshot();
            let killed = catch_unwind(AssertUnwindSafe(|| {
                on(&fake, &KillAt(step), |c| c.snapshot("vol-a", &names("2", clone), 64 * MIB, None))
            }));
            assert!(killed.is_err(), "not killed at {step}");
            assert_eq!(replay(&fake), 1);
            assert_eq!(fake.shape(), after, "killed at {step}: not finished");
            assert_eq!(fake.size("node-1"), 12 * MIB, "killed at {step}: the old leaf is not shrunk");
            assert_eq!(replay(&fake), 0, "replay found more to do");
        }
    }
}

/// A running volume's door that answers the swap with `answer`.
struct Swap(fn() -> Result<(), EngineError>);

impl Running for Swap {
    fn swap(&self, _new_leaf: &Image) -> Result<(), EngineError> {
        (self.0)()
    }
}

/// What replay is told the engine writes.
struct Says(Serving);

impl ServingProbe for Says {
    fn serving(&self, _volume: &str, _old: &Image, _new: &Image) -> Serving {
        self.0
    }
}

#[test]
fn a_refused_swap_is_undone_at_once_and_an_unknown_one_by_what_the_engine_says() {
    let refused = || Err(EngineError::NotSwappedOnHost { host: "xcp-2".to_owned(), why: "refused".to_owned() });
    let lost = || Err(EngineError::SwapUnknownOnHost { host: "xcp-2".to_owned(), why: "timed out".to_owned() });
    let take = |fake: &FakeVg, swap: &Swap| {
        on(fake, &NoFaults, |c| c.snapshot("vol-a", &names("2", false), 64 * MIB, Some(swap)))
    };

    let fake = after_one_snapshot();
    let before = fake.shape();
    assert!(take(&fake, &Swap(refused)).is_err());
    assert_eq!(fake.shape(), before, "the refused swap's LVs are removed at once, without replay");

    let fake = after_one_snapshot();
    assert!(take(&fake, &Swap(lost)).is_err());
    assert!(fake.journalled(), "a swap with a lost answer stays journalled");
    let replayed = on(&fake, &NoFaults, |c| c.replay(&Says(Serving::Unknown))).unwrap();
    assert_eq!(replayed, 0, "replay guessed while the engine could not say");
    assert!(fake.journalled());
    on(&fake, &NoFaults, |c| c.replay(&Says(Serving::OldLeaf))).unwrap();
    assert_eq!(fake.shape(), before, "the engine writes the old leaf: undone");

    let fake = after_one_snapshot();
    assert!(take(&fake, &Swap(lost)).is_err());
    on(&fake, &NoFaults, |c| c.replay(&Says(Serving::NewLeaf))).unwrap();
    assert!(!fake.journalled());
    assert_eq!(on(&fake, &NoFaults, |c| c.graph()).unwrap().node_of("vol-a").unwrap().lv, "node-2");
    assert_eq!(fake.size("node-1"), 12 * MIB, "the old leaf is shrunk when replay finishes the swap");
}

#[test]
fn the_old_leaf_shrinks_to_its_image_end_in_whole_extents_and_a_raw_node_never() {
    let fake = after_one_snapshot();
    let full = fake.size("node-1");
    assert_eq!(fake.size("vol-a"), 64 * MIB, "the raw node keeps its size");
    let free_before = VG_SIZE - fake.used();
    let start = fake.commands();
    snapshot(&fake, "2", false).unwrap();
    // 9 MiB + 1 byte of image: three extents of 4 MiB.
    assert_eq!(fake.size("node-1"), 12 * MIB);
    assert!(fake.size("node-1") > 9 * MIB, "cut below the image end");
    assert_eq!(fake.ran(start, "lvm lvreduce"), [format!("lvm lvreduce -f -L {}b {VG}/node-1", 12 * MIB)]);
    assert_eq!(fake.size("node-2"), full, "the new leaf is sized for a fully allocated image");
    assert_eq!(fake.size("vol-a"), 64 * MIB);
    // The SR's free space (SR.stat reads the VG's) gets the difference back.
    let free_after = VG_SIZE - fake.used();
    assert_eq!(free_after + full + EXTENT, free_before + (full - 12 * MIB));
    // The snapshot's record counts what it occupies: its own LV and the shrunk node.
    let lvs = on(&fake, &NoFaults, |c| c.lvs()).unwrap();
    let record = lvs.iter().find(|l| l.name == "vol-2").unwrap();
    let view = ChainView::load(&lvs, TAG).unwrap();
    let blank = crate::smapi::types::Volume {
        key: "vol-2".to_owned(),
        uuid: None,
        name: String::new(),
        description: String::new(),
        read_write: false,
        sharable: false,
        virtual_size: 0,
        physical_utilisation: 0,
        uri: Vec::new(),
        keys: BTreeMap::new(),
        volume_type: None,
        cbt_enabled: None,
    };
    let volume = view.describe(blank, record);
    assert_eq!(volume.physical_utilisation, i64::try_from(EXTENT + 12 * MIB).unwrap());
    assert_eq!(volume.virtual_size, i64::try_from(64 * MIB).unwrap());
}

#[test]
fn a_merge_into_a_shrunk_node_grows_it_back_first() {
    let fake = after_one_snapshot();
    snapshot(&fake, "2", false).unwrap();
    let full = fake.size("node-2");
    assert_eq!(fake.size("node-1"), 12 * MIB);
    // Deleting the second snapshot leaves node-1 referenced by no volume,
    // with one child (vol-a's leaf): the collector merges the leaf into it.
    on(&fake, &NoFaults, |c| c.destroy("vol-2")).unwrap();
    let start = fake.commands();
    on(&fake, &NoFaults, |c| c.collect(&NothingOpen)).unwrap();
    let log = fake.state().log[start..].to_vec();
    let grown = log.iter().position(|l| l.starts_with("lvm lvextend") && l.ends_with("/node-1")).expect("node-1 grown");
    let commit = log.iter().position(|l| l.starts_with("qemu-img commit")).expect("a commit");
    assert!(grown < commit, "the commit ran before its target was grown: {log:?}");
    assert_eq!(on(&fake, &NoFaults, |c| c.graph()).unwrap().node_of("vol-a").unwrap().lv, "node-1");
    assert_eq!(fake.size("node-1"), full, "vol-a's leaf is sized for a fully allocated image again");
}

/// The VG as `vgs` reports it now.
fn fake_vg_row(fake: &FakeVg) -> Vg {
    on(fake, &NoFaults, |c| c.lvm.vgs()).unwrap().remove(0)
}

/// Records the steps a call reaches, in order; kills (panics) at the one
/// numbered `.0`, if any.
#[derive(Default)]
struct Steps(Option<usize>, std::cell::RefCell<Vec<String>>);

impl Faults for Steps {
    fn reached(&self, step: &str) {
        let mut reached = self.1.borrow_mut();
        reached.push(step.to_owned());
        assert_ne!(Some(reached.len() - 1), self.0, "killed at {step}");
    }
}

fn grow(fake: &FakeVg, faults: &dyn Faults, to: u64) -> Result<u64, OpError> {
    let (lvs, vg) = (on(fake, &NoFaults, |c| c.lvs()).unwrap(), fake_vg_row(fake));
    on(fake, faults, |c| c.grow_at_rest(Some(&vg), &lvs, "vol-a", to))
}

/// A resize of `vol-a` (its qcow2 leaf `node-1` on the raw base `vol-a`)
/// killed at each of its steps: the record (`nv=`) is never smaller than
/// the header, which is what an engine shows the VM, so an offline merge
/// into the raw base afterwards grows the base past all the VM could have
/// written. Killed before the tag, the old size stays on record; after
/// it, the new one, and a retry to that size grows the header.
#[test]
fn a_resize_killed_at_each_step_never_leaves_the_header_ahead_of_the_record() {
    let virtual_of = |fake: &FakeVg| {
        let lvs = on(fake, &NoFaults, |c| c.lvs()).unwrap();
        crate::snapshot::calls::virtual_size_of(&lvs, TAG, "vol-a").unwrap()
    };
    let steps = Steps::default();
    grow(&after_one_snapshot(), &steps, 128 * MIB).unwrap();
    let steps = steps.1.into_inner();
    assert!(steps.len() >= 2, "{steps:?}");
    // Every step but the last (resized: done).
    for (at, step) in steps[..steps.len() - 1].iter().enumerate() {
        let fake = after_one_snapshot();
        let killed = catch_unwind(AssertUnwindSafe(|| grow(&fake, &Steps(Some(at), Default::default()), 128 * MIB)));
        assert!(killed.is_err(), "not killed at {step}");
        let (recorded, header) = (virtual_of(&fake), fake.state().virtual_size("node-1"));
        assert!(header <= recorded, "killed at {step}: the header says {header}, the record {recorded}");
        assert!([64 * MIB, 128 * MIB].contains(&recorded), "killed at {step}: {recorded}");
        // Retried: done, whichever size the kill left on record.
        let retry = after_one_snapshot();
        let _ = catch_unwind(AssertUnwindSafe(|| grow(&retry, &Steps(Some(at), Default::default()), 128 * MIB)));
        assert_eq!(grow(&retry, &NoFaults, 128 * MIB).unwrap(), 128 * MIB, "retried after a kill at {step}");
        assert_eq!((virtual_of(&retry), retry.state().virtual_size("node-1")), (128 * MIB, 128 * MIB), "{step}");
        // The snapshot gone, node-1 is merged offline into the raw base.
        on(&fake, &NoFaults, |c| c.destroy("vol-1")).unwrap();
        on(&fake, &NoFaults, |c| c.collect(&NothingOpen)).unwrap();
        assert_eq!(on(&fake, &NoFaults, |c| c.graph()).unwrap().node_of("vol-a").unwrap().lv, "vol-a", "{step}");
        assert!(fake.size("vol-a") >= header, "killed at {step}: the base holds less than the VM saw");
        assert_eq!(virtual_of(&fake), recorded, "killed at {step}");
    }
    // More than the SR has free: nothing is changed.
    let fake = after_one_snapshot();
    let (lvs, vg, before) = (on(&fake, &NoFaults, |c| c.lvs()).unwrap(), fake_vg_row(&fake), fake.shape());
    let error = on(&fake, &NoFaults, |c| c.grow_at_rest(Some(&vg), &lvs, "vol-a", VG_SIZE)).unwrap_err();
    assert!(matches!(error, OpError::NoSpace { .. }), "{error}");
    assert_eq!((fake.shape(), fake.size("node-1")), (before, lvs.iter().find(|l| l.name == "node-1").unwrap().size));
}

mod online;
mod replay_open;
