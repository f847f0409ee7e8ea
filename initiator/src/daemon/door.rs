//! The narrow door sm-driver uses for one SR on this host: write the
//! daemon's configuration, wait until it serves, find and verify its NBD
//! device, read its state, and tear the device down. Starting and stopping
//! the process itself is the caller's (systemd in dom0, a plain child in the
//! test bed), through its own runner.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::config::{render, DaemonConfig, SrId};
use super::state::{self, DaemonState, NbdRecord, Phase};
use super::Layout;
use crate::nbd::export::{verify, ExportError};
use crate::nbd::kernel::{NbdNetlink, NetlinkError};

/// Why the door could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    /// A file of the daemon.
    #[error("{what} {path}: {error}")]
    File {
        /// Which file.
        what: &'static str,
        /// Where.
        path: String,
        /// The system's error.
        error: std::io::Error,
    },
    /// The daemon said it cannot serve.
    #[error("the userspace initiator of SR {sr} failed: {error}")]
    Failed {
        /// The SR.
        sr: String,
        /// The daemon's own words.
        error: String,
    },
    /// The daemon did not get to serving in time.
    #[error("the userspace initiator of SR {sr} is not serving after {seconds} s (last phase: {phase}); see SMlog, and `journalctl -u nvmetcp-initiator@{sr}` or, without systemd, /var/log/nvmetcp/initiator-{sr}.log")]
    Timeout {
        /// The SR.
        sr: String,
        /// How long was waited.
        seconds: u64,
        /// Where it was.
        phase: String,
    },
    /// No daemon has run for the SR on this host.
    #[error("the userspace initiator of SR {0} has never run on this host (no state file)")]
    NotRunning(String),
    /// The recorded device is not the SR's.
    #[error(transparent)]
    NotOurs(#[from] ExportError),
    /// The kernel refused the disconnect.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// The SR's NBD device, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdDevice {
    /// `/dev/nbdN`.
    pub path: String,
    /// The record it was verified against.
    pub record: NbdRecord,
}

/// Writes the daemon's configuration, root-only (it holds the keys),
/// replacing any earlier one atomically.
///
/// # Errors
/// The directory or file cannot be written.
pub fn write_config(layout: &Layout, config: &DaemonConfig) -> Result<(), DoorError> {
    let path = layout.config_file(&config.sr);
    let file_error =
        |error| DoorError::File { what: "initiator configuration", path: path.display().to_string(), error };
    std::fs::create_dir_all(layout.run_dir()).map_err(file_error)?;
    let tmp = path.with_extension("conf.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(file_error)?;
    file.write_all(render(config).as_bytes()).map_err(file_error)?;
    file.sync_data().map_err(file_error)?;
    std::fs::rename(&tmp, &path).map_err(file_error)
}

/// The daemon's state, if it has ever run here.
///
/// # Errors
/// A state file that cannot be read.
pub fn read_state(layout: &Layout, sr: &SrId) -> Result<Option<DaemonState>, DoorError> {
    let path = layout.state_file(sr);
    state::read(&path).map_err(|error| DoorError::File {
        what: "initiator state",
        path: path.display().to_string(),
        error,
    })
}

/// Whether the process that wrote the state is alive.
#[must_use]
pub fn daemon_alive(layout: &Layout, state: &DaemonState) -> bool {
    layout.at(&format!("/proc/{}", state.daemon_pid)).exists()
}

/// The SR's NBD device, verified against the kernel's sysfs.
///
/// # Errors
/// No state, no device yet, or a device that is not the SR's.
pub fn device(layout: &Layout, sr: &SrId) -> Result<NbdDevice, DoorError> {
    let state = read_state(layout, sr)?.ok_or_else(|| DoorError::NotRunning(sr.to_string()))?;
    if state.phase == Phase::DeviceLost {
        return Err(DoorError::Failed {
            sr: sr.to_string(),
            error: state.error.unwrap_or_else(|| "its NBD device was disconnected by another program".into()),
        });
    }
    let record = state.nbd.ok_or_else(|| DoorError::NotRunning(sr.to_string()))?;
    verify(&layout.sys(), record.index, record.kernel_pid, &record.backend, record.size_bytes)?;
    Ok(NbdDevice { path: record.device(), record })
}

/// Waits until the daemon serves the SR's device (written by this daemon
/// run, not an older one), and returns the device.
///
/// # Errors
/// The daemon failed (its error), or did not serve within `timeout`.
pub fn wait_serving(layout: &Layout, sr: &SrId, since_unix: u64, timeout: Duration) -> Result<NbdDevice, DoorError> {
    let deadline = Instant::now() + timeout;
    let mut phase = "none".to_owned();
    loop {
        if let Some(state) = read_state(layout, sr)? {
            phase = format!("{:?}", state.phase).to_lowercase();
            if state.updated_unix >= since_unix {
                match state.phase {
                    Phase::Serving => return device(layout, sr),
                    Phase::Failed | Phase::DeviceLost => {
                        return Err(DoorError::Failed {
                            sr: sr.to_string(),
                            error: state.error.unwrap_or_else(|| "no reason given".into()),
                        })
                    }
                    Phase::Starting => {}
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(DoorError::Timeout { sr: sr.to_string(), seconds: timeout.as_secs(), phase });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// After the daemon was stopped: disconnects the SR's device (if it is
/// still the SR's) and removes the daemon's files. Safe to repeat.
///
/// # Errors
/// The kernel refused the disconnect, or the files cannot be removed.
pub fn tear_down(layout: &Layout, sr: &SrId) -> Result<(), DoorError> {
    match device(layout, sr) {
        Ok(device) => NbdNetlink::open()?.disconnect(device.record.index)?,
        // Nothing of ours to disconnect (a device another program
        // disconnected is the daemon's `Failed` answer).
        Err(DoorError::NotRunning(_) | DoorError::NotOurs(_) | DoorError::Failed { .. }) => {}
        Err(error) => return Err(error),
    }
    for path in [layout.config_file(sr), layout.state_file(sr)] {
        remove(&path)?;
    }
    Ok(())
}

fn remove(path: &Path) -> Result<(), DoorError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(DoorError::File { what: "initiator file", path: path.display().to_string(), error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SR: &str = "0c9b6a43-6f3e-4bd4-9c3e-5e0d0c1a2b3c";

    fn config() -> DaemonConfig {
        super::super::config::parse(
            "x",
            &format!(
                "sr = {SR}\nsubsystem_nqn = nqn.2014-08.org.example:a\nnsid = 1\nportal = 10.0.0.1:4420\n\
                 host_nqn = nqn.2014-08.org.nvmexpress:uuid:5e0d0c1a-0000-4000-8000-000000000001\n\
                 host_id = 5e0d0c1a-0000-4000-8000-000000000001\n\
                 dhchap_secret = DHHC-1:00:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0:\n"
            ),
        )
        .unwrap()
    }

    fn serving(layout: &Layout, index: u32, pid: u32) {
        let record = NbdRecord {
            index,
            kernel_pid: pid,
            backend: format!("nvmetcp:{SR}"),
            connections: 2,
            size_bytes: 1 << 20,
            block_size: 4096,
        };
        let state = DaemonState {
            sr: SR.into(),
            phase: Phase::Serving,
            daemon_pid: pid,
            error: None,
            nbd: Some(record),
            export: None,
            device: None,
            updated_unix: 100,
        };
        state::write(&layout.state_file(&SrId::parse(SR).unwrap()), &state).unwrap();
        let dir = layout.sys().join(format!("block/nbd{index}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pid"), format!("{pid}\n")).unwrap();
        std::fs::write(dir.join("size"), "2048\n").unwrap();
    }

    #[test]
    fn the_configuration_is_written_root_only_and_reads_back() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::under(root.path());
        write_config(&layout, &config()).unwrap();
        let path = layout.config_file(&config().sr);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&path).unwrap());
        assert_eq!(super::super::config::load(&path, uid).unwrap(), config());
        write_config(&layout, &config()).unwrap(); // again: replaced, not refused
    }

    #[test]
    fn the_device_is_found_by_the_record_and_verified() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::under(root.path());
        std::fs::create_dir_all(layout.run_dir()).unwrap();
        let sr = SrId::parse(SR).unwrap();
        assert!(matches!(device(&layout, &sr), Err(DoorError::NotRunning(_))));
        serving(&layout, 5, 321);
        assert_eq!(device(&layout, &sr).unwrap().path, "/dev/nbd5");
        assert_eq!(wait_serving(&layout, &sr, 100, Duration::from_secs(1)).unwrap().path, "/dev/nbd5");
        // Someone else set nbd5 up since: refused, never used.
        std::fs::write(layout.sys().join("block/nbd5/pid"), "999\n").unwrap();
        assert!(matches!(device(&layout, &sr), Err(DoorError::NotOurs(_))));
    }

    #[test]
    fn a_failed_daemon_is_reported_with_its_reason_and_an_old_state_is_not_trusted() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::under(root.path());
        std::fs::create_dir_all(layout.run_dir()).unwrap();
        let sr = SrId::parse(SR).unwrap();
        serving(&layout, 5, 321);
        let error = wait_serving(&layout, &sr, 200, Duration::from_millis(300)).unwrap_err().to_string();
        assert!(error.contains("not serving after"), "{error}");
        let mut state = read_state(&layout, &sr).unwrap().unwrap();
        state.phase = Phase::Failed;
        state.error = Some("no path to namespace 1".into());
        state.updated_unix = 300;
        state::write(&layout.state_file(&sr), &state).unwrap();
        let error = wait_serving(&layout, &sr, 200, Duration::from_secs(1)).unwrap_err().to_string();
        assert!(error.contains("no path to namespace 1"), "{error}");
    }

    #[test]
    fn a_device_another_program_disconnected_is_never_used_and_tear_down_only_removes_files() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::under(root.path());
        write_config(&layout, &config()).unwrap();
        let sr = SrId::parse(SR).unwrap();
        // The kernel still shows the device (dm holders keep it), with our pid.
        serving(&layout, 5, 321);
        let mut state = read_state(&layout, &sr).unwrap().unwrap();
        state.phase = Phase::DeviceLost;
        state.error = Some("its NBD device /dev/nbd5 was disconnected by another program".into());
        state::write(&layout.state_file(&sr), &state).unwrap();
        let error = device(&layout, &sr).unwrap_err().to_string();
        assert!(error.contains("disconnected by another program"), "{error}");
        let error = wait_serving(&layout, &sr, 100, Duration::from_secs(1)).unwrap_err().to_string();
        assert!(error.contains("disconnected by another program"), "{error}");
        tear_down(&layout, &sr).unwrap();
        assert!(!layout.config_file(&sr).exists() && !layout.state_file(&sr).exists());
    }

    #[test]
    fn a_state_written_before_device_lost_had_its_name_still_reads() {
        let text = r#"{"sr":"x","phase":"stopped","daemon_pid":1,"error":null,"nbd":null,"export":null,"device":null,"updated_unix":1}"#;
        let state: DaemonState = serde_json::from_str(text).unwrap();
        assert_eq!(state.phase, Phase::DeviceLost);
    }

    #[test]
    fn tear_down_of_a_device_that_is_not_ours_only_removes_files() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::under(root.path());
        write_config(&layout, &config()).unwrap();
        serving(&layout, 5, 321);
        std::fs::write(layout.sys().join("block/nbd5/pid"), "999\n").unwrap();
        let sr = SrId::parse(SR).unwrap();
        tear_down(&layout, &sr).unwrap();
        assert!(!layout.config_file(&sr).exists() && !layout.state_file(&sr).exists());
        tear_down(&layout, &sr).unwrap();
    }
}
