//! The collector's door to this host's engine for online merges
//! ([`Merging`]): which volumes it serves read-write, and the merge job on
//! one of them. A disk served read-only (a snapshot exported) or with a
//! swap in its handle is never merged in ([`unmergeable_lvs`]).

use std::collections::BTreeSet;

use crate::cmd::Runner;
use crate::engine::{CommitState, EngineError, Image, OpenDisk};
use crate::host::HostRoot;

use super::super::graph::Graph;
use super::super::ops::{Merging, OpenChain};
use super::{engine, kept, open_volumes, save};

/// This host's engine, for the chains it serves of one SR.
pub struct MergeHere<'a> {
    /// The runner of this host's engine.
    pub runner: &'a dyn Runner,
    /// This host.
    pub host: &'a HostRoot,
    /// The SR.
    pub sr_uuid: &'a str,
}

fn mergeable(host: &HostRoot, sr_uuid: &str) -> Vec<String> {
    open_volumes(host, sr_uuid)
        .into_iter()
        .filter(|v| kept(host, sr_uuid, v).is_some_and(|k| !k.read_only && k.swapping_to.is_none()))
        .collect()
}

/// The LVs of the chains this host serves that its engine is not asked to
/// merge in: read-only disks, disks with a swap in their handle, and
/// volumes the graph no longer has (by the name their handle has).
#[must_use]
pub fn unmergeable_lvs(host: &HostRoot, sr_uuid: &str, graph: &Graph) -> BTreeSet<String> {
    let mergeable = mergeable(host, sr_uuid);
    let mut busy = BTreeSet::new();
    for volume in open_volumes(host, sr_uuid) {
        match graph.chain(&volume) {
            Ok(chain) if !mergeable.contains(&volume) => busy.extend(chain.iter().map(|n| n.lv.clone())),
            Ok(_) => {}
            Err(_) => {
                busy.insert(volume);
            }
        }
    }
    busy
}

impl MergeHere<'_> {
    fn disk(&self, volume: &str) -> Option<OpenDisk> {
        kept(self.host, self.sr_uuid, volume).map(|k| k.disk)
    }
}

impl Merging for MergeHere<'_> {
    fn served(&self) -> Vec<String> {
        mergeable(self.host, self.sr_uuid)
    }

    fn start(&self, volume: &str, top: &Image, base: &Image, _overlay: Option<&Image>) -> Result<(), EngineError> {
        let engine = engine(self.runner, self.host)?;
        let Some(disk) = self.disk(volume) else {
            return Err(EngineError::Unsupported {
                engine: engine.kind(),
                what: "merge online",
                why: format!("{volume} is not served on this host any more"),
            });
        };
        if !engine.features()?.online_commit {
            return Err(EngineError::Unsupported {
                engine: engine.kind(),
                what: "merge a node of an open chain",
                why: "it has no online commit; the node is merged once the volume is closed".to_owned(),
            });
        }
        engine.start_commit(&disk, top, base)
    }

    fn state(&self, volume: &str) -> Result<CommitState, EngineError> {
        let Some(disk) = self.disk(volume) else { return Ok(CommitState::Idle) };
        engine(self.runner, self.host)?.commit_state(&disk)
    }

    fn open(&self) -> Result<Vec<OpenChain>, EngineError> {
        Ok(open_volumes(self.host, self.sr_uuid).into_iter().map(|volume| OpenChain { volume, host: None }).collect())
    }

    fn leaf_now(&self, volume: &str) -> Result<Option<Image>, EngineError> {
        let Some(disk) = self.disk(volume) else { return Ok(None) };
        let engine = engine(self.runner, self.host)?;
        let leaf = engine.current_leaf(&disk)?;
        if leaf != disk.leaf {
            save(self.host, self.sr_uuid, volume, &OpenDisk { leaf: leaf.clone(), ..disk }, None).map_err(|e| {
                EngineError::Io {
                    engine: engine.kind(),
                    doing: "recording the disk's leaf".to_owned(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
        }
        Ok(Some(leaf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Access, Handle, ImageFormat};
    use crate::lvm::Lv;

    const SR: &str = "5f0c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e11";

    fn lv(name: &str, tags: &str) -> Lv {
        Lv {
            name: name.parse().unwrap(),
            vg: "nvmetcp_x".parse().unwrap(),
            size: 8 << 20,
            tags: tags.split(',').map(str::to_owned).collect(),
            active: true,
        }
    }

    fn disk(leaf: &str) -> OpenDisk {
        OpenDisk {
            device: "/dev/nbd0".into(),
            leaf: Image::new(ImageFormat::Qcow2, format!("/dev/nvmetcp_x/{leaf}")).unwrap(),
            handle: Handle::Tapdisk { pid: 1, minor: 0 },
        }
    }

    /// Issue 18: the collector merges in a chain this host serves
    /// read-write, and leaves alone one served read-only or mid-swap.
    #[test]
    fn only_chains_served_read_write_and_not_mid_swap_are_merged_here() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        let lvs = [
            lv("vol-aa", "nvmetcp_volume,nvmetcp_node,nf=raw,nd=1,nn=node-bb"),
            lv("node-bb", "nvmetcp_node,nf=qcow2,np=vol-aa,nd=2"),
            lv("vol-ss", "nvmetcp_volume,nn=vol-aa"),
            lv("node-cc", "nvmetcp_node,nf=qcow2,np=vol-aa,nd=2"),
            lv("vol-cc", "nvmetcp_volume,nn=node-cc"),
        ];
        let graph = Graph::from_lvs(&lvs, "nvmetcp_volume").unwrap();
        super::super::record_opened(&host, SR, "vol-aa", &disk("node-bb"), Access::ReadWrite).unwrap();
        super::super::record_opened(&host, SR, "vol-ss", &disk("vol-aa"), Access::ReadOnly).unwrap();
        let runner = crate::cmd::FakeRunner::new();
        let here = MergeHere { runner: &runner, host: &host, sr_uuid: SR };
        assert_eq!(here.served(), ["vol-aa"]);
        assert_eq!(unmergeable_lvs(&host, SR, &graph), BTreeSet::from(["vol-aa".to_owned()]));
        // A swap in the handle: that disk is left alone too.
        save(&host, SR, "vol-cc", &disk("node-cc"), Some(&disk("node-dd").leaf)).unwrap();
        assert!(!here.served().contains(&"vol-cc".to_owned()));
        assert!(unmergeable_lvs(&host, SR, &graph).contains("node-cc"));
        // A volume not served here has no job.
        assert_eq!(here.state("vol-zz").unwrap(), CommitState::Idle);
        assert_eq!(here.leaf_now("vol-zz").unwrap(), None);
        assert!(runner.calls().is_empty(), "the engine was asked: {:?}", runner.calls());
    }
}
