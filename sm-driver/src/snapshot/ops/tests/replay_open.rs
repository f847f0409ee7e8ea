//! Journal replay never edits an image an engine has open (issue 18): an
//! interrupted merge whose chain an engine opened since the entry was
//! written (a clone started here, the volume started on a member) waits in
//! its journal, no `qemu-img` run; closed again, the next replay finishes it.

use std::cell::RefCell;

use super::*;

/// The engines of the pool with `.0` open (`None`: a host cannot say),
/// merging nothing.
struct Opened(RefCell<Option<Vec<OpenChain>>>);

impl Merging for Opened {
    fn served(&self) -> Vec<String> {
        Vec::new()
    }

    fn start(&self, volume: &str, top: &Image, base: &Image, overlay: Option<&Image>) -> Result<(), EngineError> {
        NoEngineHere.start(volume, top, base, overlay)
    }

    fn state(&self, volume: &str) -> Result<crate::engine::CommitState, EngineError> {
        NoEngineHere.state(volume)
    }

    fn leaf_now(&self, _volume: &str) -> Result<Option<Image>, EngineError> {
        Ok(None)
    }

    fn open(&self) -> Result<Vec<OpenChain>, EngineError> {
        self.0.borrow().clone().ok_or_else(|| EngineError::MergeUnasked { why: "host xcp-2: HOST_OFFLINE".to_owned() })
    }
}

fn replay_with(fake: &FakeVg, merging: &dyn Merging) -> usize {
    let lvm = Lvm::new(fake, Path::new("/dev/nvme0n1"), true).unwrap();
    let vg: VgName = VG.parse().unwrap();
    let chains = Chains::new(&lvm, QemuImg::new(fake), &vg, TAG, &NoFaults).with_merging(merging);
    chains.replay(&NothingOpen).unwrap()
}

/// `vol-a` snapshotted at rest (`vol-1`, on its raw LV), then cloned at
/// rest (`vol-2`, its leaf `node-2-c` on `node-1`, beside `vol-a`'s new
/// leaf `node-2`), `vol-1` destroyed; the collector killed after writing
/// `node-1` into the raw LV, before relinking `node-2` and `node-2-c`.
fn merge_killed_before_relinking() -> FakeVg {
    let fake = after_one_snapshot();
    snapshot(&fake, "2", true).unwrap();
    on(&fake, &NoFaults, |c| c.destroy("vol-1")).unwrap();
    let killed = catch_unwind(AssertUnwindSafe(|| on(&fake, &KillAt("merge-committed"), |c| c.collect(&NothingOpen))));
    assert!(killed.is_err(), "the collector was not killed after its commit");
    assert!(fake.journalled());
    fake
}

fn open_here(volume: &str) -> OpenChain {
    OpenChain { volume: volume.to_owned(), host: None }
}

#[test]
fn an_interrupted_merge_waits_while_an_engine_has_a_chain_it_edits_open() {
    let clean = merge_killed_before_relinking();
    assert_eq!(replay(&clean), 1);
    let after = clean.shape();

    let fake = merge_killed_before_relinking();
    let before = fake.shape();
    let on_member = OpenChain { volume: "vol-a".to_owned(), host: Some("xcp-2".to_owned()) };
    let engines = Opened(RefCell::new(None));
    // The clone started here; the volume started on a member; a member
    // that cannot say what it has open.
    for open in [Some(vec![open_here("vol-2")]), Some(vec![on_member]), None] {
        let said = format!("{open:?}");
        *engines.0.borrow_mut() = open;
        let start = fake.commands();
        assert_eq!(replay_with(&fake, &engines), 0, "{said}: replayed");
        assert!(fake.ran(start, "qemu-img").is_empty(), "{said}: {:?}", fake.ran(start, "qemu-img"));
        assert!(fake.ran(start, "lvm lvchange -ay").is_empty(), "{said}: activated for qemu-img");
        assert_eq!(fake.shape(), before, "{said}: the entry is not kept as it was");
    }
    // A chain no edit touches (another volume's) is no reason to wait.
    *engines.0.borrow_mut() = Some(vec![open_here("vol-z")]);
    assert_eq!(replay_with(&fake, &engines), 1, "closed again: not finished");
    assert_eq!(fake.shape(), after);
    assert!(!fake.journalled());
    let backing = fake.state().backing.clone();
    assert_eq!((backing["node-2"].as_str(), backing["node-2-c"].as_str()), ("vol-a", "vol-a"), "{backing:?}");
}
