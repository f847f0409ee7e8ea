//! The collector's online merge on [`FakeVg`], through a faked engine door:
//! a chain open here by one volume is merged by its engine (never by
//! `qemu-img commit`), intermediate node and running leaf alike; a kill at
//! each step is finished by replay; a failed, refused or slow job leaves
//! the chain as it was or for a later run; a chain open by two volumes, or
//! elsewhere, is left alone.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use super::*;
use crate::engine::CommitState;
use crate::snapshot::calls::ChainCallError;

/// How the faked engine's jobs go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    /// Done at the first question.
    Finishes,
    /// Running at every question.
    Runs,
    /// Failed at the first question.
    Fails,
    /// Refused at the start (an engine without online commit).
    Refused,
    /// Refused at the start by the member serving the disk.
    RefusedOnHost,
}

/// The engine serving `served`, writing `leaf`; a merge rewrites the
/// backing link of the image above the top in its chain in `fake`, as QEMU does, or
/// moves the leaf (an active commit).
struct Engine<'f> {
    fake: &'f FakeVg,
    served: Vec<String>,
    leaf: RefCell<Image>,
    job: Cell<Job>,
    running: RefCell<Option<(Image, Image)>>,
    started: Cell<usize>,
    /// The log length when the job started.
    started_at: Cell<usize>,
    /// Chains other engines have open (no job of this one's).
    others: RefCell<Vec<OpenChain>>,
    /// The pool member it runs on; `None`: this host.
    host: Option<String>,
    /// The nodes it was asked to give back (reload read-only there).
    given_back: RefCell<Vec<String>>,
}

fn image(format: ImageFormat, lv: &str) -> Image {
    Image::new(format, format!("/dev/{VG}/{lv}")).unwrap()
}

impl<'f> Engine<'f> {
    fn serving(fake: &'f FakeVg, served: &[&str], leaf: &str, job: Job) -> Self {
        Self {
            fake,
            served: served.iter().map(|s| (*s).to_owned()).collect(),
            leaf: RefCell::new(image(ImageFormat::Qcow2, leaf)),
            job: Cell::new(job),
            running: RefCell::new(None),
            started: Cell::new(0),
            started_at: Cell::new(0),
            others: RefCell::new(Vec::new()),
            host: None,
            given_back: RefCell::new(Vec::new()),
        }
    }

    fn leaf(&self) -> String {
        self.leaf.borrow().path_str().rsplit('/').next().unwrap().to_owned()
    }
}

impl Merging for Engine<'_> {
    fn served(&self) -> Vec<String> {
        self.served.clone()
    }

    fn open(&self) -> Result<Vec<OpenChain>, EngineError> {
        let mut open: Vec<OpenChain> =
            self.served.iter().map(|volume| OpenChain { volume: volume.clone(), host: None }).collect();
        open.extend(self.others.borrow().iter().cloned());
        Ok(open)
    }

    fn start(&self, _volume: &str, top: &Image, base: &Image, _overlay: Option<&Image>) -> Result<(), EngineError> {
        match self.job.get() {
            Job::Refused => {
                return Err(EngineError::Unsupported {
                    engine: crate::engine::EngineKind::Tapdisk,
                    what: "merge a node of an open chain",
                    why: "no online commit".to_owned(),
                })
            }
            Job::RefusedOnHost => {
                return Err(EngineError::RefusedOnHost { host: "xcp-2".to_owned(), why: "the job failed".to_owned() })
            }
            Job::Finishes | Job::Runs | Job::Fails => {}
        }
        self.started.set(self.started.get() + 1);
        self.started_at.set(self.fake.commands());
        *self.running.borrow_mut() = Some((top.clone(), base.clone()));
        Ok(())
    }

    fn state(&self, _volume: &str) -> Result<CommitState, EngineError> {
        let Some((top, base)) = self.running.borrow().clone() else { return Ok(CommitState::Idle) };
        Ok(match self.job.get() {
            Job::Runs => CommitState::Running { done: 1, total: 2 },
            Job::Fails => {
                *self.running.borrow_mut() = None;
                CommitState::Failed("I/O error".to_owned())
            }
            Job::Finishes | Job::Refused | Job::RefusedOnHost => {
                *self.running.borrow_mut() = None;
                if *self.leaf.borrow() == top {
                    *self.leaf.borrow_mut() = base;
                } else {
                    let mut state = self.fake.state();
                    let lv = |i: &Image| i.path_str().rsplit('/').next().unwrap_or_default().to_owned();
                    let (top, base) = (lv(&top), lv(&base));
                    // The image above the top in this disk's chain only.
                    let mut image = lv(&self.leaf.borrow());
                    while let Some(backing) = state.backing.get(&image).cloned() {
                        if backing == top {
                            state.backing.insert(image, base);
                            break;
                        }
                        image = backing;
                    }
                }
                CommitState::Done
            }
        })
    }

    fn leaf_now(&self, _volume: &str) -> Result<Option<Image>, EngineError> {
        Ok(Some(self.leaf.borrow().clone()))
    }

    fn host_of(&self, _volume: &str) -> Result<Option<String>, EngineError> {
        Ok(self.host.clone())
    }

    fn give_back(&self, _volume: &str, base: &Image) -> Result<(), EngineError> {
        self.given_back.borrow_mut().push(base.path_str().rsplit('/').next().unwrap_or_default().to_owned());
        Ok(())
    }

    fn patience(&self) -> Duration {
        Duration::ZERO
    }
}

fn collect(fake: &FakeVg, faults: &dyn Faults, engine: &Engine<'_>, busy: &[&str]) -> usize {
    let busy: BTreeSet<String> = busy.iter().map(|b| (*b).to_owned()).collect();
    let lvm = Lvm::new(fake, Path::new("/dev/nvme0n1"), true).unwrap();
    let vg: VgName = VG.parse().unwrap();
    let chains = Chains::new(&lvm, QemuImg::new(fake), &vg, TAG, faults).with_merging(engine);
    chains.collect_around(&NothingOpen, &busy).unwrap()
}

/// `vol-a` snapshotted twice at rest: its raw LV (`vol-1` refers to it),
/// `node-1` (`vol-2`), its leaf `node-2`; then `gone` destroyed.
fn twice_then_destroyed(gone: &str) -> FakeVg {
    let fake = after_one_snapshot();
    snapshot(&fake, "2", false).unwrap();
    on(&fake, &NoFaults, |c| c.destroy(gone)).unwrap();
    fake
}

fn node(fake: &FakeVg, lv: &str) -> Vec<String> {
    fake.shape().get(lv).cloned().unwrap_or_default()
}

#[test]
fn a_node_below_the_running_leaf_is_merged_by_the_engine_not_by_qemu_img() {
    // vol-1 gone: vol-a's raw LV is unreferenced, its only child node-1.
    let fake = twice_then_destroyed("vol-1");
    let engine = Engine::serving(&fake, &["vol-a"], "node-2", Job::Finishes);
    let start = fake.commands();
    assert_eq!(collect(&fake, &NoFaults, &engine, &[]), 1);
    assert_eq!(engine.started.get(), 1, "the engine was not asked");
    assert!(fake.ran(start, "qemu-img commit").is_empty(), "qemu-img wrote an open chain");
    assert!(fake.ran(start, "qemu-img rebase").is_empty(), "the engine relinks the image it has open");
    assert!(!fake.shape().contains_key("node-1"), "the merged node is removed");
    assert!(node(&fake, "node-2").contains(&"np=vol-a".to_owned()), "{:?}", node(&fake, "node-2"));
    assert!(node(&fake, "vol-2").contains(&"nn=vol-a".to_owned()), "vol-2 points at the node holding its data");
    assert_eq!(engine.leaf(), "node-2", "the leaf did not move");
    assert!(!fake.journalled());
}

#[test]
fn the_running_leaf_is_merged_into_its_parent_which_becomes_the_leaf() {
    // vol-2 gone: node-1 is unreferenced, its only child vol-a's leaf node-2.
    let fake = twice_then_destroyed("vol-2");
    let engine = Engine::serving(&fake, &["vol-a"], "node-2", Job::Finishes);
    let start = fake.commands();
    assert_eq!(collect(&fake, &NoFaults, &engine, &[]), 1);
    assert!(fake.ran(start, "qemu-img commit").is_empty(), "qemu-img wrote an open chain");
    let log = fake.state().log.clone();
    let grown = log[start..].iter().position(|l| l.starts_with("lvm lvextend") && l.ends_with("/node-1"));
    assert!(grown.is_some_and(|g| start + g < engine.started_at.get()), "node-1 not grown before the job: {log:?}");
    assert_eq!(engine.leaf(), "node-1");
    assert!(node(&fake, "vol-a").contains(&"nn=node-1".to_owned()), "{:?}", node(&fake, "vol-a"));
    assert!(!fake.shape().contains_key("node-2"));
    assert!(!fake.journalled());
}

#[test]
fn an_online_merge_killed_at_each_step_is_finished_by_the_next_run() {
    for gone in ["vol-1", "vol-2"] {
        let clean = twice_then_destroyed(gone);
        collect(&clean, &NoFaults, &Engine::serving(&clean, &["vol-a"], "node-2", Job::Finishes), &[]);
        let after = clean.shape();
        for step in ["merge-journal", "merge-engine-started", "merge-engine-done", "merge-relinked", "merge-retargeted"]
        {
            let fake = twice_then_destroyed(gone);
            let engine = Engine::serving(&fake, &["vol-a"], "node-2", Job::Finishes);
            let killed = catch_unwind(AssertUnwindSafe(|| collect(&fake, &KillAt(step), &engine, &[])));
            assert!(killed.is_err(), "{gone}: not killed at {step}");
            assert!(fake.journalled(), "{gone}: killed at {step} with no journal");
            let start = fake.commands();
            collect(&fake, &NoFaults, &engine, &[]);
            assert_eq!(fake.shape(), after, "{gone}: killed at {step}, not finished");
            assert!(fake.ran(start, "qemu-img commit").is_empty(), "{gone}: replay at {step} ran qemu-img commit");
            assert!(engine.started.get() <= 2, "{gone}: {step}");
        }
    }
}

/// Issue 18: the engine merged `node-1` below `vol-a`'s running leaf; the
/// collector was killed before relinking at rest the node's other child,
/// the leaf of the clone `vol-2`, which a member has started since. Replay
/// leaves that image alone (no `qemu-img rebase`), the entry waits; once
/// the clone is closed the next run finishes the merge.
#[test]
fn an_online_merge_waits_to_relink_a_clone_an_engine_opened_since() {
    let fake = after_one_snapshot();
    snapshot(&fake, "2", true).unwrap();
    on(&fake, &NoFaults, |c| c.destroy("vol-1")).unwrap();
    let engine = Engine::serving(&fake, &["vol-a"], "node-2", Job::Finishes);
    let killed = catch_unwind(AssertUnwindSafe(|| collect(&fake, &KillAt("merge-engine-done"), &engine, &[])));
    assert!(killed.is_err(), "not killed after the engine merged");
    assert_eq!(fake.state().backing["node-2"], "vol-a", "the engine did not relink its own chain");
    let before = fake.shape();
    engine.others.borrow_mut().push(OpenChain { volume: "vol-2".to_owned(), host: Some("xcp-2".to_owned()) });
    let start = fake.commands();
    assert_eq!(collect(&fake, &NoFaults, &engine, &[]), 0);
    assert!(fake.ran(start, "qemu-img rebase").is_empty(), "relinked the clone's open leaf");
    assert_eq!(fake.shape(), before, "the entry is not kept as it was");
    assert_eq!(fake.state().backing["node-2-c"], "node-1");
    engine.others.borrow_mut().clear();
    collect(&fake, &NoFaults, &engine, &[]);
    assert!(!fake.journalled() && !fake.shape().contains_key("node-1"), "{:?}", fake.shape());
    assert_eq!(fake.state().backing["node-2-c"], "vol-a");
    assert_eq!(engine.started.get(), 1, "the merge was started again");
}

#[test]
fn a_failed_or_refused_job_leaves_the_chain_as_it_was() {
    for job in [Job::Fails, Job::Refused] {
        let fake = twice_then_destroyed("vol-1");
        let before = fake.shape();
        let engine = Engine::serving(&fake, &["vol-a"], "node-2", job);
        let start = fake.commands();
        assert_eq!(collect(&fake, &NoFaults, &engine, &[]), 0);
        assert_eq!(fake.shape(), before, "the chain changed");
        assert!(fake.ran(start, "qemu-img commit").is_empty(), "fell back to qemu-img on an open chain");
        assert!(engine.started.get() <= 1, "asked again in the same run");
    }
}

/// What a merge into `into` must give back: its LV size and whether its
/// mapping is read-only here.
fn parent_state(fake: &FakeVg, into: &str) -> (u64, bool) {
    (fake.size(into), fake.state().read_only.contains(into))
}

/// Issue 18: an online merge the engine refuses (here, or on the member
/// serving the disk) or whose job fails moved nothing, but `into` was grown
/// to a leaf's size and reloaded read-write for it where the engine runs:
/// it is given back read-only there (here, or the member asked) and, a
/// qcow2 node, shrunk to its image end again (12 MiB: three extents over
/// node-1's 9 MiB + 1 byte), the entry gone only then.
#[test]
fn a_refused_or_failed_online_merge_gives_the_parent_back_read_only_and_shrunk() {
    // vol-2 gone: node-1 (qcow2, shrunk) takes vol-a's running leaf;
    // vol-1 gone: vol-a's raw LV takes node-1, below the running leaf.
    for (gone, into, size) in [("vol-2", "node-1", 12 * MIB), ("vol-1", "vol-a", 64 * MIB)] {
        for job in [Job::Fails, Job::Refused, Job::RefusedOnHost] {
            let fake = twice_then_destroyed(gone);
            let before = fake.shape();
            assert_eq!(fake.size(into), size, "{gone}");
            let mut engine = Engine::serving(&fake, &["vol-a"], "node-2", job);
            let member = job == Job::RefusedOnHost;
            if member {
                engine.host = Some("xcp-2".to_owned());
            }
            let start = fake.commands();
            assert_eq!(collect(&fake, &NoFaults, &engine, &[]), 0, "{gone}");
            if into == "node-1" {
                assert!(
                    fake.ran(start, "lvm lvextend").iter().any(|l| l.ends_with("/node-1")),
                    "{gone}: node-1 was not grown for the job"
                );
            }
            if member {
                assert_eq!(fake.size(into), size, "{gone}: {into} is not shrunk");
                assert_eq!(*engine.given_back.borrow(), [into], "{gone}: the member was not asked to give back");
            } else {
                assert_eq!(parent_state(&fake, into), (size, true), "{gone}: {into} is not given back");
                assert!(engine.given_back.borrow().is_empty(), "{gone}: this host's engine is no member");
            }
            assert!(!fake.journalled(), "{gone}: the entry is left");
            assert_eq!(fake.shape(), before, "{gone}: the chain changed");
            assert_eq!(engine.leaf(), "node-2");
        }
    }
}

/// Issue 18: a collector killed while giving `into` back leaves the entry
/// at `GivingBack`; replay gives it back without asking an engine (the
/// volume may be closed by then, and a merged leaf's fate could not be
/// told), then drops the entry.
#[test]
fn an_online_merge_killed_while_giving_the_parent_back_is_given_back_by_replay() {
    for (gone, into, size, steps) in [
        ("vol-2", "node-1", 12 * MIB, &["merge-giving-back", "shrunk"][..]),
        ("vol-1", "vol-a", 64 * MIB, &["merge-giving-back"][..]),
    ] {
        for step in steps {
            for job in [Job::Fails, Job::Refused] {
                let fake = twice_then_destroyed(gone);
                let before = fake.shape();
                let engine = Engine::serving(&fake, &["vol-a"], "node-2", job);
                let killed = catch_unwind(AssertUnwindSafe(|| collect(&fake, &KillAt(step), &engine, &[])));
                assert!(killed.is_err(), "{gone}: not killed at {step}");
                assert!(fake.journalled(), "{gone}: killed at {step} with no journal");
                // No engine to ask: the journal alone says what to undo.
                assert_eq!(replay(&fake), 1, "{gone}: killed at {step}, the give-back waits");
                assert_eq!(parent_state(&fake, into), (size, true), "{gone}: killed at {step}");
                assert!(!fake.journalled(), "{gone}: killed at {step}");
                assert_eq!(fake.shape(), before, "{gone}: killed at {step}");
            }
        }
    }
}

#[test]
fn a_job_still_running_waits_in_the_journal_and_is_finished_later() {
    let fake = twice_then_destroyed("vol-2");
    let engine = Engine::serving(&fake, &["vol-a"], "node-2", Job::Runs);
    assert_eq!(collect(&fake, &NoFaults, &engine, &[]), 0);
    assert!(fake.journalled(), "the running job's entry is gone");
    assert_eq!(collect(&fake, &NoFaults, &engine, &[]), 0);
    assert_eq!(engine.started.get(), 1, "a second job was started over the running one");
    assert!(fake.shape().contains_key("node-2"));
    engine.job.set(Job::Finishes);
    collect(&fake, &NoFaults, &engine, &[]);
    assert!(!fake.journalled() && !fake.shape().contains_key("node-2"));
    assert_eq!((engine.leaf(), engine.started.get()), ("node-1".to_owned(), 1));
}

#[test]
fn a_chain_open_by_two_volumes_or_on_another_host_is_left_alone() {
    // vol-2 refers to node-1, the node merged away: served too, by a second disk.
    let fake = twice_then_destroyed("vol-1");
    let before = fake.shape();
    let two = Engine::serving(&fake, &["vol-a", "vol-2"], "node-2", Job::Finishes);
    assert_eq!(collect(&fake, &NoFaults, &two, &[]), 0);
    assert_eq!((fake.shape(), two.started.get()), (before.clone(), 0));
    // Open on another host: in `busy`, never asked of this host's engine.
    let elsewhere = Engine::serving(&fake, &[], "node-2", Job::Finishes);
    assert_eq!(collect(&fake, &NoFaults, &elsewhere, &["node-2", "node-1", "vol-a"]), 0);
    assert_eq!((fake.shape(), elsewhere.started.get()), (before, 0));
}

#[test]
fn a_leaf_resized_since_is_not_merged_online_into_its_smaller_parent() {
    let fake = twice_then_destroyed("vol-2");
    fake.state().lvs.get_mut("node-2").unwrap().tags.push(format!("nv={}", 128 * MIB));
    let before = fake.shape();
    let engine = Engine::serving(&fake, &["vol-a"], "node-2", Job::Finishes);
    assert_eq!(collect(&fake, &NoFaults, &engine, &[]), 0);
    assert_eq!((fake.shape(), engine.started.get()), (before, 0), "the engine would grow node-1 without its nv=");
}

/// The SR of `fake` as the datapath handlers see it, on a standalone host.
fn sr_state() -> crate::sr_state::SrState {
    crate::sr_state::SrState {
        sr_uuid: "5f0c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11".into(),
        vg: VG.parse().unwrap(),
        nqn: "nqn.x".into(),
        namespace: "uuid.8d30ade900c54fe69fbcbe2c924ffcdc".into(),
        paths: Vec::new(),
        configuration: BTreeMap::new(),
        total_space: 0,
        free_space: 0,
        extent_size: EXTENT,
        initiator: crate::initiator::InitiatorKind::default(),
    }
}

/// `Datapath.detach`'s step before the engine closes `volume`'s disk
/// ([`crate::snapshot::calls::finish_before_close`]), on `fake`.
fn before_close(fake: &FakeVg, engine: &dyn Merging, volume: &str) -> Result<bool, ChainCallError> {
    let dir = tempfile::tempdir().unwrap();
    let host = crate::host::HostRoot::at(dir.path());
    let lvm = Lvm::new(fake, Path::new("/dev/nvme0n1"), true).unwrap();
    let state = sr_state();
    let sr = crate::snapshot::calls::Sr { runner: fake, host: &host, lvm: &lvm, state: &state, volume_tag: TAG };
    let lvs = lvm.lvs(&state.vg).unwrap();
    crate::snapshot::calls::finish_before_close(&sr, engine, volume, &lvs)
}

/// Issue 18, the kill-then-detach window: a collector killed after the
/// engine pivoted the merged leaf (it writes `node-1` now) but before the
/// volume's `nn=` says so. Once the disk is closed replay cannot tell, and
/// the next attach would open `node-2`, without the VM's last writes; so
/// the detach finishes the merge while the engine still has the disk open.
#[test]
fn a_detach_after_a_kill_past_the_pivot_finishes_the_merge_before_closing() {
    let fake = twice_then_destroyed("vol-2");
    let engine = Engine::serving(&fake, &["vol-a"], "node-2", Job::Finishes);
    let killed = catch_unwind(AssertUnwindSafe(|| collect(&fake, &KillAt("merge-engine-done"), &engine, &[])));
    assert!(killed.is_err(), "not killed after the pivot");
    assert_eq!(engine.leaf(), "node-1", "the engine did not pivot");
    assert!(node(&fake, "vol-a").contains(&"nn=node-2".to_owned()), "{:?}", node(&fake, "vol-a"));
    // The window: with the disk closed, replay cannot say and the entry waits.
    assert_eq!(replay(&fake), 0, "replay guessed with no engine to ask");
    assert!(node(&fake, "vol-a").contains(&"nn=node-2".to_owned()));

    let start = fake.commands();
    assert!(before_close(&fake, &engine, "vol-a").unwrap(), "the journalled merge was not seen");
    assert!(node(&fake, "vol-a").contains(&"nn=node-1".to_owned()), "{:?}", node(&fake, "vol-a"));
    assert!(!fake.journalled(), "the entry is left");
    assert!(!fake.shape().contains_key("node-2"), "the merged leaf is not removed");
    assert!(fake.ran(start, "qemu-img commit").is_empty(), "qemu-img wrote an open chain");
}

/// A merge the engine cannot finish while the disk is open (its job still
/// runs past the patience) refuses the detach, saying what to do, and
/// leaves the entry and the chain as they were.
#[test]
fn a_detach_whose_merge_cannot_be_finished_is_refused_and_changes_nothing() {
    let fake = twice_then_destroyed("vol-2");
    let engine = Engine::serving(&fake, &["vol-a"], "node-2", Job::Runs);
    collect(&fake, &NoFaults, &engine, &[]);
    assert!(fake.journalled(), "the running job left no entry");
    let before = fake.shape();
    let refused = before_close(&fake, &engine, "vol-a").unwrap_err();
    assert!(matches!(refused, ChainCallError::MergeUnfinished { .. }), "{refused:?}");
    let message = refused.to_string();
    assert!(message.contains("vol-a") && message.contains("node-2") && message.contains("Retry"), "{message}");
    assert_eq!(fake.shape(), before, "a refused detach changed the SR");
}

/// Nothing journalled: the step before closing reads the VG the detach
/// reads anyway, and runs no LVM call (nor any other) of its own.
#[test]
fn a_detach_with_nothing_journalled_runs_no_extra_command() {
    let fake = twice_then_destroyed("vol-2");
    let engine = Engine::serving(&fake, &["vol-a"], "node-2", Job::Finishes);
    let dir = tempfile::tempdir().unwrap();
    let host = crate::host::HostRoot::at(dir.path());
    let lvm = Lvm::new(&fake, Path::new("/dev/nvme0n1"), true).unwrap();
    let state = sr_state();
    let sr = crate::snapshot::calls::Sr { runner: &fake, host: &host, lvm: &lvm, state: &state, volume_tag: TAG };
    let lvs = lvm.lvs(&state.vg).unwrap();
    let start = fake.commands();
    assert!(!crate::snapshot::calls::finish_before_close(&sr, &engine, "vol-a", &lvs).unwrap());
    assert_eq!(fake.commands(), start, "{:?}", &fake.state().log[start..]);
    assert_eq!(engine.started.get(), 0);
}

/// While the engine still merges a chain (the job outlasted the collector's
/// patience), the volume is not snapshotted, cloned or resized: after the
/// pivot of a merged leaf the disk writes the parent while `nn=` (and the
/// handle a swap finds the leaf by) still name the leaf, and a new leaf on
/// it would hide those writes behind the leaf's stale clusters for good.
#[test]
fn a_chain_the_engine_still_merges_is_not_snapshotted_cloned_or_resized() {
    for gone in ["vol-2", "vol-1"] {
        let fake = twice_then_destroyed(gone);
        let engine = Engine::serving(&fake, &["vol-a"], "node-2", Job::Runs);
        assert_eq!(collect(&fake, &NoFaults, &engine, &[]), 0);
        assert!(fake.journalled(), "{gone}: no merge left running");
        let before = fake.shape();
        let running = Swap(|| Ok(()));
        let refused = on(&fake, &NoFaults, |c| c.snapshot("vol-a", &names("3", false), 64 * MIB, Some(&running)));
        assert!(matches!(refused, Err(OpError::Unfinished { .. })), "{gone}: running snapshot: {refused:?}");
        // At rest too: a disk closed before replay could say where its data is.
        for clone in [false, true] {
            let refused = on(&fake, &NoFaults, |c| c.snapshot("vol-a", &names("3", clone), 64 * MIB, None));
            assert!(matches!(refused, Err(OpError::Unfinished { .. })), "{gone}: clone {clone}: {refused:?}");
        }
        let (lvs, vg) = (on(&fake, &NoFaults, |c| c.lvs()).unwrap(), fake_vg_row(&fake));
        let refused = on(&fake, &NoFaults, |c| c.grow_at_rest(Some(&vg), &lvs, "vol-a", 128 * MIB));
        assert!(matches!(refused, Err(OpError::Unfinished { .. })), "{gone}: resize: {refused:?}");
        assert_eq!(fake.shape(), before, "{gone}: something was changed");
        // Once the job is done and replayed, the volume is snapshotted again.
        engine.job.set(Job::Finishes);
        collect(&fake, &NoFaults, &engine, &[]);
        assert!(!fake.journalled(), "{gone}");
        on(&fake, &NoFaults, |c| c.snapshot("vol-a", &names("3", false), 64 * MIB, Some(&running))).unwrap();
    }
}

/// vol-a's raw LV <- node-1 <- node-2 (vol-3's, a read-only parent) <-
/// leaf node-3, which an engine here serves; vol-1 gone: merging node-1
/// rewrites node-2's backing link.
fn a_middle_node_to_merge() -> FakeVg {
    let fake = after_one_snapshot();
    snapshot(&fake, "2", false).unwrap();
    snapshot(&fake, "3", false).unwrap();
    on(&fake, &NoFaults, |c| c.destroy("vol-1")).unwrap();
    fake
}

#[test]
fn the_node_above_a_merged_one_is_made_writable_before_the_job() {
    let fake = a_middle_node_to_merge();
    let engine = Engine::serving(&fake, &["vol-a"], "node-3", Job::Finishes);
    let start = fake.commands();
    assert_eq!(collect(&fake, &NoFaults, &engine, &[]), 1);
    let log = fake.state().log.clone();
    let before_job = &log[start..engine.started_at.get()];
    let activated =
        |lv: &str| before_job.iter().any(|l| l.starts_with("lvm lvchange") && l.contains(&format!("/{lv}")));
    assert!(activated("vol-a") && activated("node-2"), "node-2 not writable for the job: {before_job:?}");
    assert!(!activated("node-3"), "the running leaf reloaded: {before_job:?}");
    assert!(node(&fake, "node-2").contains(&"np=vol-a".to_owned()), "{:?}", node(&fake, "node-2"));
    let read_only = fake.state().read_only.clone();
    assert!(read_only.contains("node-2") && read_only.contains("vol-a"), "parents left writable: {read_only:?}");
    // Every node below the merged one is a step shallower, tags included.
    assert!(node(&fake, "node-2").contains(&"nd=2".to_owned()), "{:?}", node(&fake, "node-2"));
    assert!(node(&fake, "node-3").contains(&"nd=3".to_owned()), "stale depth tag: {:?}", node(&fake, "node-3"));
}

/// Issue 18: a merge of a middle node that the engine fails gives back
/// both nodes it made writable, `into` and the node above the merged one.
#[test]
fn a_failed_merge_of_a_middle_node_gives_both_writable_parents_back() {
    let fake = a_middle_node_to_merge();
    let engine = Engine::serving(&fake, &["vol-a"], "node-3", Job::Fails);
    collect(&fake, &NoFaults, &engine, &[]);
    let read_only = fake.state().read_only.clone();
    assert!(read_only.contains("node-2") && read_only.contains("vol-a"), "parents left writable: {read_only:?}");
    assert!(!read_only.contains("node-3"), "the running leaf reloaded: {read_only:?}");
    assert!(node(&fake, "node-1").iter().all(|t| !t.starts_with("nj=")), "{:?}", node(&fake, "node-1"));
}
