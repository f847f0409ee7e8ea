//! One daemon's life: read the configuration, open the device, set up or
//! pick back up the SR's NBD device, then keep the state file current until
//! the daemon is stopped (also after another program disconnected the
//! device: [`Phase::DeviceLost`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::{self, DaemonConfig, SrId};
use super::state::{self, DaemonState, ExportReport, NbdRecord, Phase};
use super::{Layout, Served};
use crate::block::BlockDevice;
use crate::nbd::export::{limit_request_size, Export, ExportError};

/// How often the state file is rewritten at the latest (counters); a path
/// lost or back, or an ANA change, rewrites it at once.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// Why a daemon stopped with an error (its supervisor restarts it).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] config::ConfigFileError),
    /// The namespace could not be opened.
    #[error("cannot open the namespace: {0}")]
    Open(String),
    /// The NBD device could not be set up.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The state file could not be written.
    #[error("cannot write the state file {path}: {error}")]
    State {
        /// The file.
        path: String,
        /// The system's error.
        error: std::io::Error,
    },
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

struct Reporter {
    path: std::path::PathBuf,
    sr: String,
}

impl Reporter {
    fn write(&self, state: &DaemonState) -> Result<(), DaemonError> {
        state::write(&self.path, state)
            .map_err(|error| DaemonError::State { path: self.path.display().to_string(), error })
    }

    fn state(&self, phase: Phase) -> DaemonState {
        DaemonState {
            sr: self.sr.clone(),
            phase,
            daemon_pid: std::process::id(),
            error: None,
            nbd: None,
            export: None,
            device: None,
            updated_unix: now(),
        }
    }

    fn failed(&self, previous: Option<NbdRecord>, error: &DaemonError) {
        let state = DaemonState { error: Some(error.to_string()), nbd: previous, ..self.state(Phase::Failed) };
        // Best effort: the error also goes to the log.
        let _ = self.write(&state);
    }
}

/// The SR's device was disconnected while this daemon served it, so not by
/// SR.detach (which stops the daemon first): says so in the state, with
/// what to do, until the daemon is stopped.
fn device_lost<S: Served>(sr: &SrId, reporter: &Reporter, record: &NbdRecord, served: &S) -> Result<(), DaemonError> {
    let error = format!(
        "its NBD device {} was disconnected by another program, not by SR.detach: I/O on it fails. Detach the \
         SR's volumes and the SR on this host, then attach them again (xe pbd-unplug, then xe pbd-plug)",
        record.device()
    );
    tracing::error!(sr = %sr, device = %record.device(), "the NBD device was disconnected by another program");
    loop {
        reporter.write(&DaemonState {
            nbd: Some(record.clone()),
            device: Some(served.report()),
            error: Some(error.clone()),
            ..reporter.state(Phase::DeviceLost)
        })?;
        std::thread::sleep(REPORT_EVERY);
    }
}

/// Runs the daemon of `sr` until it is stopped. `open` opens
/// the namespace (the multipath device in dom0, a file in test beds);
/// `owner_uid` is who must own the configuration file (root in dom0).
///
/// # Errors
/// What kept it from serving; the state file says the same.
pub fn run<S, F>(sr: &SrId, layout: &Layout, owner_uid: u32, open: F) -> Result<(), DaemonError>
where
    S: Served + 'static,
    F: FnOnce(&DaemonConfig) -> Result<Arc<S>, String>,
{
    std::fs::create_dir_all(layout.run_dir())
        .map_err(|error| DaemonError::State { path: layout.run_dir().display().to_string(), error })?;
    let reporter = Reporter { path: layout.state_file(sr), sr: sr.to_string() };
    let previous = state::read(&reporter.path).ok().flatten().and_then(|s| s.nbd);
    let result = serve(sr, layout, owner_uid, open, &reporter, previous.clone());
    if let Err(error) = &result {
        tracing::error!(sr = %sr, %error, "the initiator daemon stops");
        reporter.failed(previous, error);
    }
    result
}

fn serve<S, F>(
    sr: &SrId,
    layout: &Layout,
    owner_uid: u32,
    open: F,
    reporter: &Reporter,
    previous: Option<NbdRecord>,
) -> Result<(), DaemonError>
where
    S: Served + 'static,
    F: FnOnce(&DaemonConfig) -> Result<Arc<S>, String>,
{
    let config = config::load(&layout.config_file(sr), owner_uid)?;
    reporter.write(&DaemonState { nbd: previous.clone(), ..reporter.state(Phase::Starting) })?;
    let served = open(&config).map_err(DaemonError::Open)?;
    let device: Arc<dyn BlockDevice> = served.clone();
    let geometry = device.geometry();
    let sys = layout.sys();
    let create = |device| -> Result<_, DaemonError> {
        let export = Export::create(device, config.export.clone())?;
        // Only on a new device: on 6.x a queue attribute write freezes the
        // queue, which waits for every request in flight, and a device
        // picked back up holds those the killed daemon lost until the
        // kernel's I/O timeout resends them. The limit stays set meanwhile.
        limit_request_size(&sys, export.index(), geometry.max_transfer);
        Ok((export, std::process::id()))
    };
    let (export, kernel_pid) = match previous.filter(|p| p.backend == config.export.backend) {
        Some(record) => {
            match Export::adopt(Arc::clone(&device), config.export.clone(), record.index, record.kernel_pid, &sys) {
                Ok(export) => (export, record.kernel_pid),
                Err(ExportError::NotOurs { index, reason }) => {
                    // Never touch a device that is not (or no longer) ours.
                    tracing::warn!(index, %reason, "the recorded NBD device is not ours any more; setting up a new one");
                    create(device)?
                }
                Err(error) => return Err(error.into()),
            }
        }
        None => create(device)?,
    };
    let record = NbdRecord {
        index: export.index(),
        kernel_pid,
        backend: config.export.backend.clone(),
        connections: config.export.connections,
        size_bytes: geometry.size_bytes(),
        block_size: geometry.block_size,
    };
    tracing::info!(sr = %sr, device = %record.device(), "serving");
    if std::env::var("NVMETCP_WRITE_STAGES").is_ok_and(|v| v == "1") {
        crate::stages::switch_on();
    }
    let mut seen = 0;
    loop {
        let stats = export.stats();
        let finished = export.finished();
        reporter.write(&DaemonState {
            nbd: Some(record.clone()),
            export: Some(ExportReport {
                live_connections: stats.live,
                replaced_connections: stats.replaced,
                requests: stats.requests,
                errors: stats.errors,
                in_flight: stats.in_flight,
                buffer_bytes: stats.buffer_bytes,
                buffer_limit: stats.buffer_limit,
            }),
            device: Some(served.report()),
            ..reporter.state(Phase::Serving)
        })?;
        if finished {
            return device_lost(sr, reporter, &record, &*served);
        }
        if let Some(writes) = crate::stages::WRITES.take() {
            tracing::debug!(%writes, "where the writes' time went");
        }
        seen = served.wait_for_change(seen, REPORT_EVERY);
    }
}
