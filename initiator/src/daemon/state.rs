//! What a daemon says about itself, for `SR.stat`, `nvmetcp status`,
//! diagnostics and the door: `/run/nvmetcp/initiator/<sr-uuid>.json`,
//! rewritten whole (write, then rename) every few seconds. It names the NBD
//! device by index together with the pid the kernel recorded when the
//! device was set up and the backend identifier, so readers verify the
//! device (`nbd::export::verify`) instead of trusting a number.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::multipath::{AnaState, DeviceState, PathStatus};

/// Where the daemon is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Reading its configuration, connecting paths.
    Starting,
    /// `/dev/nbdN` is served.
    Serving,
    /// It could not start; `error` says why (it is restarted by its supervisor).
    Failed,
    /// Its NBD device was disconnected by another program (SR.detach stops
    /// the daemon before it disconnects the device): I/O on it fails and
    /// `error` says what to do. The daemon stays and reports this until it
    /// is stopped, so it is never restarted onto a new device behind the
    /// VMs' backs. (Written `stopped` before this phase had its name.)
    #[serde(alias = "stopped")]
    DeviceLost,
}

/// The NBD device of the SR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NbdRecord {
    /// `nbdN`'s N.
    pub index: u32,
    /// The pid the kernel recorded at NBD_CMD_CONNECT (`/sys/block/nbdN/pid`).
    pub kernel_pid: u32,
    /// The backend identifier given to the kernel.
    pub backend: String,
    /// Connections (one per I/O queue).
    pub connections: usize,
    /// Device size.
    pub size_bytes: u64,
    /// Logical block size.
    pub block_size: u32,
}

impl NbdRecord {
    /// `/dev/nbdN`.
    #[must_use]
    pub fn device(&self) -> String {
        format!("/dev/nbd{}", self.index)
    }
}

/// The NBD side's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReport {
    /// Connections being served now.
    pub live_connections: usize,
    /// Dead connections replaced since this daemon started.
    pub replaced_connections: u64,
    /// Requests received.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests in flight (the queue depth now).
    pub in_flight: u64,
    /// Bytes of request buffers held.
    pub buffer_bytes: usize,
    /// Their bound.
    pub buffer_limit: usize,
}

/// One path of the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathReport {
    /// `address:port`.
    pub portal: String,
    /// `new`, `live`, `connecting`, `deleted`.
    pub status: String,
    /// `optimized`, `non-optimized`, `inaccessible`, `persistent-loss`, `change`.
    pub ana: Option<String>,
    /// Controller ID.
    pub cntlid: Option<u16>,
    /// I/O queues connected.
    pub io_queues: u16,
    /// Commands in flight.
    pub in_flight: usize,
    /// Commands that failed on this path.
    pub errors: u64,
    /// Times lost.
    pub losses: u64,
    /// Last failure.
    pub last_error: Option<String>,
    /// Seconds in the current status.
    pub since_secs: u64,
}

/// The NVMe side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReport {
    /// Subsystem NQN.
    pub nqn: String,
    /// Namespace ID.
    pub nsid: u32,
    /// `numa`, `round-robin`, `queue-depth`.
    pub iopolicy: String,
    /// Requests waiting for a live path.
    pub queued: usize,
    /// Requests failed for want of a path.
    pub failed_no_path: u64,
    /// Every path.
    pub paths: Vec<PathReport>,
}

fn status_name(status: PathStatus) -> &'static str {
    match status {
        PathStatus::New => "new",
        PathStatus::Live => "live",
        PathStatus::Connecting => "connecting",
        PathStatus::Deleted => "deleted",
    }
}

fn ana_name(ana: AnaState) -> &'static str {
    match ana {
        AnaState::Optimized => "optimized",
        AnaState::NonOptimized => "non-optimized",
        AnaState::Inaccessible => "inaccessible",
        AnaState::PersistentLoss => "persistent-loss",
        AnaState::Change => "change",
    }
}

impl From<&DeviceState> for DeviceReport {
    fn from(state: &DeviceState) -> Self {
        Self {
            nqn: state.nqn.clone(),
            nsid: state.nsid,
            iopolicy: match state.iopolicy {
                crate::config::IoPolicy::Numa => "numa",
                crate::config::IoPolicy::RoundRobin => "round-robin",
                crate::config::IoPolicy::QueueDepth => "queue-depth",
            }
            .to_owned(),
            queued: state.queued,
            failed_no_path: state.failed_no_path,
            paths: state
                .paths
                .iter()
                .map(|p| PathReport {
                    portal: p.portal.to_string(),
                    status: status_name(p.status).to_owned(),
                    ana: p.ana.map(|a| ana_name(a).to_owned()),
                    cntlid: p.cntlid,
                    io_queues: p.io_queues,
                    in_flight: p.in_flight,
                    errors: p.errors,
                    losses: p.losses,
                    last_error: p.last_error.clone(),
                    since_secs: p.since.as_secs(),
                })
                .collect(),
        }
    }
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonState {
    /// The SR.
    pub sr: String,
    /// Where the daemon is.
    pub phase: Phase,
    /// The daemon's own pid.
    pub daemon_pid: u32,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The NBD device, once set up.
    pub nbd: Option<NbdRecord>,
    /// NBD counters.
    pub export: Option<ExportReport>,
    /// Paths, ANA, queues.
    pub device: Option<DeviceReport>,
    /// When this was written (seconds since the epoch).
    pub updated_unix: u64,
}

/// Writes the state atomically (a reader sees the old or the new file).
///
/// # Errors
/// The directory cannot be written.
pub fn write(path: &Path, state: &DaemonState) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    let text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    file.write_all(&text)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// Reads the state, `None` if there is none.
///
/// # Errors
/// A file that exists but cannot be read or parsed.
pub fn read(path: &Path) -> std::io::Result<Option<DaemonState>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(std::io::Error::other),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sr.json");
        assert_eq!(read(&path).unwrap(), None);
        let state = DaemonState {
            sr: "x".into(),
            phase: Phase::Serving,
            daemon_pid: 10,
            error: None,
            nbd: Some(NbdRecord {
                index: 2,
                kernel_pid: 9,
                backend: "nvmetcp:x".into(),
                connections: 2,
                size_bytes: 1 << 30,
                block_size: 4096,
            }),
            export: Some(ExportReport::default()),
            device: Some(DeviceReport::default()),
            updated_unix: 1,
        };
        write(&path, &state).unwrap();
        assert_eq!(read(&path).unwrap(), Some(state.clone()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"phase\": \"serving\""), "{text}");
        assert_eq!(state.nbd.unwrap().device(), "/dev/nbd2");
    }
}
