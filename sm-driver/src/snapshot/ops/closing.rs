//! Before this host closes a disk: the online merges journalled for its
//! volume are finished while the engine still has the disk open (issue 18).
//!
//! A collector killed after the engine pivoted a merged leaf (an active
//! commit: the engine writes `into` now) but before the handle and the
//! volume's `nn=` say so leaves an entry at `EngineCommitting`. While the
//! disk is open, replay asks the engine and finishes it; once the disk is
//! closed nobody can say where the last writes went, and the next attach
//! would open the old leaf. So `Datapath.deactivate`/`detach` on the
//! master replays such an entry first, and refuses to close the disk if it
//! stays unresolved. A member writes no metadata, so it cannot replay: its
//! detach is refused while its engine writes the merge's `into`, until the
//! master has recorded the merge (`calls::refuse_close_after_pivot`).

use std::time::{Duration, Instant};

use super::{Chains, Entry, Lv, OpError, Operation};

/// The online merges journalled in `lvs` whose engine is `volume`'s.
#[must_use]
pub fn online_merges_of(lvs: &[Lv], volume: &str) -> Vec<Entry> {
    lvs.iter()
        .flat_map(|l| &l.tags)
        .filter_map(|t| Entry::from_tag(t))
        .filter(|e| matches!(&e.operation, Operation::Merge { online: Some(v), .. } if v == volume))
        .collect()
}

/// How the online merges of a volume about to be closed ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeforeClose {
    /// None was journalled, or every one is finished or dropped.
    Settled,
    /// This merge is still unresolved: the disk must stay open.
    Unresolved {
        /// The node merged away.
        child: String,
        /// The node it is merged into.
        into: String,
    },
}

impl Chains<'_> {
    /// Finishes `entries` ([`online_merges_of`] `volume`) by replay while
    /// `volume`'s disk is still open here, asking its engine; a job still
    /// running is waited for up to [`super::Merging::patience`].
    ///
    /// # Errors
    /// [`OpError`].
    pub fn finish_before_close(&self, volume: &str, entries: &[Entry]) -> Result<BeforeClose, OpError> {
        let deadline = Instant::now() + self.merging.patience();
        for entry in entries {
            let Operation::Merge { child, into, .. } = &entry.operation else { continue };
            while !self.replay_online(entry, volume, child, into)? {
                if Instant::now() >= deadline {
                    return Ok(BeforeClose::Unresolved { child: child.clone(), into: into.clone() });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            tracing::info!(volume, child, into, "an interrupted online merge finished before its disk is closed");
        }
        Ok(BeforeClose::Settled)
    }
}
