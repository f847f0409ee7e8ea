//! The per-SR daemon: one process per SR per host that owns the SR's
//! userspace NVMe/TCP device and serves it as `/dev/nbdN`. It is the
//! `nvmetcp-plugin` binary entered as `nvmetcp-plugin --initiator-daemon
//! <sr-uuid>` (a subcommand, not a method link: the link directories are
//! what xapi-storage-script serves as SMAPI methods, and a systemd template
//! passes its instance name as an argument). Supervised by
//! `nvmetcp-initiator@<sr-uuid>.service` (`Restart=always`); a restarted
//! daemon picks its NBD device back up, so the host sees no I/O error.

pub mod config;
pub mod door;
pub mod run;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::block::BlockDevice;
use crate::identify::{self, StableId};
use crate::multipath::Multipath;
use config::{DaemonConfig, SrId};
use state::DeviceReport;

/// The daemons' directory in dom0.
pub const RUN_DIR: &str = "/run/nvmetcp/initiator";

/// A device a daemon serves: a block device that can also report its paths.
pub trait Served: BlockDevice {
    /// Paths, ANA, queues, errors, for the state file.
    fn report(&self) -> DeviceReport;

    /// Blocks until what [`Self::report`] shows of paths changes (a path
    /// lost or back, an ANA change) or `timeout` passes; `seen` is what the
    /// last call returned (0 at first). Returns the change count now.
    fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        std::thread::sleep(timeout);
        seen
    }
}

impl Served for Multipath {
    fn report(&self) -> DeviceReport {
        DeviceReport::from(&self.state())
    }

    fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        Multipath::wait_for_change(self, seen, timeout)
    }
}

/// Opens the SR's namespace over every portal: first today's NSID is found
/// by the recorded identity (an array may renumber namespaces; one that no
/// longer has the identity is refused, never used), then the multipath
/// device is opened on it, every path checking the namespace's UUID.
///
/// # Errors
/// The namespace cannot be found or opened, in words for the state file.
pub fn open_namespace(config: &DaemonConfig) -> Result<Arc<Multipath>, String> {
    let mut multipath = config.multipath.clone();
    if let Some(identity) = &config.identity {
        let found = identify::find(&multipath, identity).map_err(|e| e.to_string())?;
        if found.nsid != multipath.namespace.nsid {
            tracing::warn!(
                %identity, was = multipath.namespace.nsid, now = found.nsid,
                "the namespace has another NSID than at SR.attach; following its identity"
            );
        }
        multipath.namespace.nsid = found.nsid;
        if let StableId::Uuid(uuid) = identity {
            multipath.namespace.uuid = Some(*uuid);
        }
    }
    Multipath::open(multipath).map(Arc::new).map_err(|e| e.to_string())
}

/// Where a daemon's files are: under `root` (`/` in dom0, a temp dir in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The host's own files.
    #[must_use]
    pub fn system() -> Self {
        Self { root: PathBuf::from("/") }
    }

    /// Files under another root (tests).
    #[must_use]
    pub fn under(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    /// A host path under the root.
    #[must_use]
    pub fn at(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// The daemons' directory.
    #[must_use]
    pub fn run_dir(&self) -> PathBuf {
        self.at(RUN_DIR)
    }

    /// `<sr>.conf`: the root-only configuration.
    #[must_use]
    pub fn config_file(&self, sr: &SrId) -> PathBuf {
        self.run_dir().join(format!("{sr}.conf"))
    }

    /// `<sr>.json`: the state.
    #[must_use]
    pub fn state_file(&self, sr: &SrId) -> PathBuf {
        self.run_dir().join(format!("{sr}.json"))
    }

    /// `/sys`.
    #[must_use]
    pub fn sys(&self) -> PathBuf {
        self.at("/sys")
    }
}
