//! The collector's door to online merges anywhere in the pool
//! ([`Merging`]): a chain this host's engine serves is merged by it
//! ([`MergeHere`]), one a member's engine serves (by exactly one volume,
//! read-write, no swap in progress, open on that host alone) by that
//! member, asked through `host.call_plugin(<member>, "nvmetcp",
//! "chain_commit", …)` ([`crate::chain_member`] answers). A member that
//! cannot be asked is never taken to have no job: its merge's journal
//! entry waits ([`EngineError::MergeUnasked`]), and nothing is merged
//! offline meanwhile.

use std::cell::OnceCell;

use crate::engine::{CommitState, EngineError, Image};
use crate::pool_mappings::PoolCheckError;
use crate::snapshot::ops::{Merging, OpenChain};
use crate::snapshot::served::{open_here, MergeHere};

use super::{OpenOn, Pool};

/// This host's engine and the other hosts' engines, for one SR.
pub struct MergeInPool<'a> {
    here: MergeHere<'a>,
    pool: Pool<'a>,
    /// What the other hosts serve, asked once per collector run for its
    /// plan ([`Merging::open`] asks again before each edit).
    open: OnceCell<Result<Vec<OpenOn>, PoolCheckError>>,
}

fn lv_of(image: &Image) -> &str {
    image.path().file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

fn odd_answer(host: &str, value: &serde_json::Value) -> EngineError {
    EngineError::RefusedOnHost { host: host.to_owned(), why: format!("it answered {value}, which is not understood") }
}

impl<'a> MergeInPool<'a> {
    /// `here`, this host's engine, and `pool`, the other hosts.
    #[must_use]
    pub fn new(here: MergeHere<'a>, pool: Pool<'a>) -> Self {
        Self { here, pool, open: OnceCell::new() }
    }

    /// The volumes the other hosts' engines serve (asked once).
    ///
    /// # Errors
    /// [`PoolCheckError`] if XAPI or a host cannot answer.
    pub fn open_elsewhere(&self) -> Result<&[OpenOn], PoolCheckError> {
        match self.open.get_or_init(|| self.pool.open_on_others()) {
            Ok(open) => Ok(open),
            Err(error) => Err(error.clone()),
        }
    }

    fn elsewhere(&self) -> Result<&[OpenOn], EngineError> {
        self.open_elsewhere().map_err(|e| EngineError::MergeUnasked { why: e.to_string() })
    }
}

impl Merging for MergeInPool<'_> {
    fn served(&self) -> Vec<String> {
        let mut served = self.here.served();
        let Ok(open) = self.open_elsewhere() else { return served };
        // Open on two hosts (a migration): nobody merges in it.
        served.retain(|v| !open.iter().any(|o| o.volume == *v));
        for on in open {
            let hosts = open.iter().filter(|o| o.volume == on.volume).count();
            let here = open_here(self.here.host, self.here.sr_uuid, &on.volume).is_some();
            if on.mergeable && hosts == 1 && !here {
                served.push(on.volume.clone());
            }
        }
        served
    }

    /// Asked afresh every time, not from the plan's answer: the caller has
    /// just journalled the edit it is about to make, and a host that opens
    /// one of its chains from now on finds that entry and refuses
    /// ([`crate::snapshot::served::attach`]), so an answer given after the
    /// entry was written leaves no disk unseen.
    fn open(&self) -> Result<Vec<OpenChain>, EngineError> {
        let mut open = self.here.open()?;
        let elsewhere = self.pool.open_on_others().map_err(|e| EngineError::MergeUnasked { why: e.to_string() })?;
        open.extend(elsewhere.into_iter().map(|o| OpenChain { volume: o.volume, host: Some(o.host) }));
        Ok(open)
    }

    /// `None` for this host or none.
    fn host_of(&self, volume: &str) -> Result<Option<String>, EngineError> {
        if open_here(self.here.host, self.here.sr_uuid, volume).is_some() {
            return Ok(None);
        }
        Ok(self.elsewhere()?.iter().find(|o| o.volume == volume).map(|o| o.host.clone()))
    }

    fn start(&self, volume: &str, top: &Image, base: &Image, overlay: Option<&Image>) -> Result<(), EngineError> {
        let Some(host) = self.host_of(volume)? else { return self.here.start(volume, top, base, overlay) };
        let mut extra = vec![("top", lv_of(top)), ("base", lv_of(base)), ("base_format", base.format().qemu_name())];
        extra.extend(overlay.map(|o| ("overlay", lv_of(o))));
        self.pool.commit_on(&host, volume, "start", &extra)?;
        tracing::info!(volume, host, "the member's engine merges");
        Ok(())
    }

    fn state(&self, volume: &str) -> Result<CommitState, EngineError> {
        let Some(host) = self.host_of(volume)? else { return self.here.state(volume) };
        let value = self.pool.commit_on(&host, volume, "state", &[])?;
        serde_json::from_value(value["state"].clone()).map_err(|_| odd_answer(&host, &value))
    }

    fn give_back(&self, volume: &str, base: &Image) -> Result<(), EngineError> {
        let Some(host) = self.host_of(volume)? else { return Ok(()) };
        self.pool.commit_on(&host, volume, "give_back", &[("base", lv_of(base))])?;
        tracing::info!(volume, host, node = lv_of(base), "the member reloaded a node of the merge read-only");
        Ok(())
    }

    fn leaf_now(&self, volume: &str) -> Result<Option<Image>, EngineError> {
        let Some(host) = self.host_of(volume)? else { return self.here.leaf_now(volume) };
        let value = self.pool.commit_on(&host, volume, "leaf", &[])?;
        if value["leaf"].is_null() {
            return Ok(None);
        }
        let leaf: Image = serde_json::from_value(value["leaf"].clone()).map_err(|_| odd_answer(&host, &value))?;
        // Validated as every image path is before use.
        Image::new(leaf.format(), leaf.path()).map(Some)
    }
}
