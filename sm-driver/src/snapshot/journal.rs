//! The journal of multi-step chain operations, and what replay does with it.
//!
//! An entry is a tag `nj=<hex of JSON>` on the LV the operation creates or
//! merges away, so it is written in the same LVM metadata commit as that LV
//! (`lvcreate … --addtag nj=…`, or one `lvchange`): an LV the operation
//! created never exists without its journal, and the journal goes with the
//! last step's commit. Only the master writes it; the master replays every
//! entry on `SR.attach` and when the collector starts.
//!
//! Each operation has one *commit point*, a single LVM commit after which
//! the new state is the truth. Replay undoes an entry that has not passed
//! it and finishes one that has. The one step no LVM commit can witness is
//! a running disk's swap to its new leaf on another host: replay asks that
//! host's engine which leaf it writes to, and, if the host cannot answer,
//! waits rather than guess (removing a leaf a VM writes to would lose data).

use serde::{Deserialize, Serialize};

use crate::hex::{decode as unhex, encode as hex};

/// The tag key of a journal entry.
pub const JOURNAL_KEY: &str = "nj";

/// An operation in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Operation {
    /// `volume`'s leaf `old_leaf` freezes; `new_leaf` (created by this
    /// operation) becomes its leaf; `snapshot` (created too) refers to
    /// `old_leaf`. For a clone, `snapshot` is the clone's volume with a leaf
    /// of its own, `clone_leaf`, on `old_leaf`.
    Snapshot {
        /// The volume snapshotted.
        volume: String,
        /// Its leaf before.
        old_leaf: String,
        /// Its leaf after.
        new_leaf: String,
        /// The snapshot's (or clone's) volume LV.
        snapshot: String,
        /// A clone's own leaf (a snapshot has none).
        clone_leaf: Option<String>,
        /// The host whose engine serves `volume` (none: not in use).
        active_on: Option<String>,
    },
    /// The collector writes `child` into `into` and removes `child`.
    Merge {
        /// The node merged away.
        child: String,
        /// The node taking its place.
        into: String,
        /// The volume whose chain this host's engine has open, when that
        /// engine merges (online); none: `qemu-img commit` at rest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        online: Option<String>,
    },
}

/// How far an operation got, as last committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// LVs created (with this entry), headers possibly written.
    Prepared,
    /// The engine on `active_on` was asked to switch to the new leaf: it may
    /// or may not have.
    Swapping,
    /// The commit point passed: only clean-up remains.
    Committed,
    /// An online merge: the engine that has the chain open was (or was
    /// about to be) asked to merge; replay asks it how the job went.
    EngineCommitting,
    /// An online merge that moved nothing (the engine refused, its job
    /// failed, or it was never asked): the merge's `into`, grown and
    /// reloaded read-write for the job, is being given back (read-only,
    /// shrunk to its image end); replay does that again, asking no engine.
    GivingBack,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What is being done.
    #[serde(flatten)]
    pub operation: Operation,
    /// How far it got.
    pub step: Step,
}

impl Entry {
    /// The entry as an LV tag.
    #[must_use]
    pub fn to_tag(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{JOURNAL_KEY}={}", hex(&json))
    }

    /// The entry in a tag, if it is one.
    #[must_use]
    pub fn from_tag(tag: &str) -> Option<Self> {
        let value = tag.strip_prefix(JOURNAL_KEY)?.strip_prefix('=')?;
        serde_json::from_str(&unhex(value)).ok()
    }

    /// The entry in words, as `nvmetcp doctor` and errors say it.
    #[must_use]
    pub fn describe(&self) -> String {
        let what = match &self.operation {
            Operation::Snapshot { volume, clone_leaf: Some(_), .. } => format!("a clone of volume {volume}"),
            Operation::Snapshot { volume, active_on: Some(host), .. } => {
                format!("a snapshot of volume {volume}, in use on host {host}")
            }
            Operation::Snapshot { volume, .. } => format!("a snapshot of volume {volume}"),
            Operation::Merge { child, into, online: Some(volume) } => {
                format!("a merge of node {child} into {into} by the engine serving volume {volume}")
            }
            Operation::Merge { child, into, online: None } => format!("a merge of node {child} into {into} at rest"),
        };
        let step = match self.step {
            Step::Prepared => "prepared",
            Step::Swapping => "the engine asked to switch to the new leaf",
            Step::Committed => "past its commit point, cleaning up",
            Step::EngineCommitting => "the engine asked to merge",
            Step::GivingBack => "nothing merged; the parent being made read-only and shrunk again",
        };
        format!("{what} ({step})")
    }
}

impl Operation {
    /// Whether the operation works on `lv`: the volume snapshotted or its
    /// old leaf, a merge's two nodes.
    #[must_use]
    pub fn involves(&self, lv: &str) -> bool {
        match self {
            Self::Snapshot { volume, old_leaf, .. } => volume == lv || old_leaf == lv,
            Self::Merge { child, into, .. } => child == lv || into == lv,
        }
    }
}

/// What the engine of a running volume writes to, as replay finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// The new leaf: the swap happened.
    NewLeaf,
    /// The old leaf: the swap did not happen, and the disk still writes there.
    OldLeaf,
    /// No host has the volume open now: nobody writes either leaf.
    NotOpen,
    /// The host could not be asked.
    Unknown,
}

/// What replay knows about the world when it looks at an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The volume already refers to the new leaf (the commit point passed).
    pub volume_on_new_leaf: bool,
    /// What the volume's engine writes to (for an entry in `Swapping`).
    pub serving: Serving,
}

/// What replay does with an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Remove what the operation created; the old state stands.
    Undo,
    /// Pass the commit point (if not yet) and clean up; the new state stands.
    Finish,
    /// Leave the entry for a later replay, for this reason.
    Wait(String),
}

/// The replay decision for `entry` given `facts`.
#[must_use]
pub fn decide(entry: &Entry, facts: Facts) -> Replay {
    match (&entry.operation, entry.step) {
        // Merges only ever roll forward: writing the child into its parent is
        // idempotent, and the parent is visible through the child alone.
        (Operation::Merge { .. }, _) => Replay::Finish,
        (Operation::Snapshot { .. }, Step::Committed) => Replay::Finish,
        // Only merges reach these steps: an entry no driver writes.
        (Operation::Snapshot { volume, .. }, Step::EngineCommitting | Step::GivingBack) => {
            Replay::Wait(format!("the snapshot of {volume} is journalled at a merge's step; run doctor and report it"))
        }
        (Operation::Snapshot { .. }, _) if facts.volume_on_new_leaf => Replay::Finish,
        (Operation::Snapshot { .. }, Step::Prepared) => Replay::Undo,
        // Rolling forward is safe whenever nobody writes the old leaf any
        // more (it becomes the frozen node); undoing is safe only while the
        // disk still writes the old leaf (the new one holds nothing).
        (Operation::Snapshot { active_on, .. }, Step::Swapping) => match facts.serving {
            Serving::NewLeaf | Serving::NotOpen => Replay::Finish,
            Serving::OldLeaf => Replay::Undo,
            Serving::Unknown => Replay::Wait(format!(
                "host {} did not say which leaf it writes to; the snapshot is resolved when it answers",
                active_on.as_deref().unwrap_or("?")
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(step: Step) -> Entry {
        Entry {
            operation: Operation::Snapshot {
                volume: "vol-a".into(),
                old_leaf: "vol-a".into(),
                new_leaf: "node-1".into(),
                snapshot: "vol-s".into(),
                clone_leaf: None,
                active_on: Some("host-2".into()),
            },
            step,
        }
    }

    const NOT_YET: Facts = Facts { volume_on_new_leaf: false, serving: Serving::OldLeaf };

    #[test]
    fn entries_round_trip_through_a_tag_lvm_accepts() {
        let entry = snapshot(Step::Swapping);
        let tag = entry.to_tag();
        assert!(tag.starts_with("nj="));
        assert!(tag[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(tag.len() < 1024, "{} characters", tag.len());
        assert_eq!(Entry::from_tag(&tag), Some(entry));
        assert_eq!(Entry::from_tag("nn=vol-a"), None);
        assert_eq!(Entry::from_tag("nj=zz"), None);
    }

    #[test]
    fn a_snapshot_before_its_commit_point_is_undone() {
        assert_eq!(decide(&snapshot(Step::Prepared), NOT_YET), Replay::Undo);
        assert_eq!(decide(&snapshot(Step::Swapping), NOT_YET), Replay::Undo);
    }

    #[test]
    fn a_snapshot_past_its_commit_point_is_finished() {
        assert_eq!(decide(&snapshot(Step::Committed), NOT_YET), Replay::Finish);
        let committed = Facts { volume_on_new_leaf: true, serving: Serving::Unknown };
        assert_eq!(decide(&snapshot(Step::Swapping), committed), Replay::Finish);
    }

    #[test]
    fn a_swap_the_host_made_is_kept_and_one_it_cannot_confirm_waits() {
        let swapped = Facts { volume_on_new_leaf: false, serving: Serving::NewLeaf };
        assert_eq!(decide(&snapshot(Step::Swapping), swapped), Replay::Finish);
        let closed = Facts { volume_on_new_leaf: false, serving: Serving::NotOpen };
        assert_eq!(decide(&snapshot(Step::Swapping), closed), Replay::Finish, "nobody writes the old leaf");
        let unknown = Facts { volume_on_new_leaf: false, serving: Serving::Unknown };
        let Replay::Wait(why) = decide(&snapshot(Step::Swapping), unknown) else { panic!("guessed") };
        assert!(why.contains("host-2"), "{why}");
    }

    #[test]
    fn merges_always_roll_forward() {
        let merge = Entry {
            operation: Operation::Merge { child: "s1".into(), into: "base".into(), online: None },
            step: Step::Prepared,
        };
        assert_eq!(decide(&merge, NOT_YET), Replay::Finish);
    }

    #[test]
    fn an_offline_merge_entry_written_before_online_merges_still_parses() {
        let old =
            format!("nj={}", crate::hex::encode(r#"{"op":"merge","child":"s1","into":"base","step":"prepared"}"#));
        let entry = Entry::from_tag(&old).expect("an old merge entry parses");
        assert_eq!(entry.operation, Operation::Merge { child: "s1".into(), into: "base".into(), online: None });
        let online = Entry {
            operation: Operation::Merge { child: "s1".into(), into: "base".into(), online: Some("vol-a".into()) },
            step: Step::EngineCommitting,
        };
        assert_eq!(Entry::from_tag(&online.to_tag()), Some(online));
    }
}
