//! Starting and stopping one SR's userspace initiator daemon, through the
//! runner: where systemd runs (dom0), its template unit
//! `nvmetcp-initiator@<sr>.service` (`Restart=always`, shipped in the RPM);
//! elsewhere (the test bed, a host booted without systemd) a supervisor
//! started detached, `nvmetcp-plugin --initiator-supervise <sr>`, which
//! restarts the daemon as the unit would and records its pid in
//! `/run/nvmetcp/initiator/<sr>.supervisor`. Both are safe to repeat.
//!
//! Without systemd there is no journal: the supervisor's and the daemon's
//! stderr (their log lines, as SMlog shows them) go to a root-only file,
//! `/var/log/nvmetcp/initiator-<sr>.log`, kept after the SR is detached so
//! a failure explains itself afterwards.

use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use nvmetcp_initiator::daemon::config::SrId;
use nvmetcp_initiator::daemon::RUN_DIR;

use crate::cmd::{CmdError, Command, Program, Runner};
use crate::host::HostRoot;

/// How the daemon is kept running on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supervisor {
    /// systemd's template unit.
    Systemd,
    /// `nvmetcp-plugin --initiator-supervise <sr>`, started detached.
    Detached,
}

impl Supervisor {
    /// systemd when it runs here (`/run/systemd/system`, as `sd_booted(3)` decides).
    #[must_use]
    pub fn of(host: &HostRoot) -> Self {
        if host.exists("/run/systemd/system") {
            Self::Systemd
        } else {
            Self::Detached
        }
    }
}

/// The SR's unit name.
#[must_use]
pub fn unit(sr: &SrId) -> String {
    format!("nvmetcp-initiator@{sr}.service")
}

/// Why the daemon could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// systemctl or the supervisor failed.
    #[error("cannot {what} the userspace initiator of SR {sr}: {source}")]
    Command {
        /// `start` or `stop`.
        what: &'static str,
        /// The SR.
        sr: String,
        /// The runner's error.
        #[source]
        source: Box<CmdError>,
    },
    /// The supervisor does not go away.
    #[error("the userspace initiator supervisor of SR {sr} (pid {pid}) did not stop within {seconds} s")]
    Stuck {
        /// The SR.
        sr: String,
        /// Its pid.
        pid: u32,
        /// How long was waited.
        seconds: u64,
    },
}

/// Where the supervised daemons' logs are kept (root-only).
pub const LOG_DIR: &str = "/var/log/nvmetcp";

/// A log larger than this is moved to `<log>.1` when a supervisor starts.
const LOG_ROTATE_BYTES: u64 = 4 << 20;

/// `/var/log/nvmetcp/initiator-<sr>.log`: the supervisor's and the daemon's
/// stderr where systemd does not run.
#[must_use]
pub fn log_file(sr: &SrId) -> String {
    format!("{LOG_DIR}/initiator-{sr}.log")
}

/// Opens the SR's initiator log for appending, root-only (its directory
/// `0700`, the file `0600`), first moving a log grown past 4 MiB to
/// `<log>.1` so it stays bounded.
///
/// # Errors
/// The directory or the file cannot be made.
pub fn open_log(host: &HostRoot, sr: &SrId) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = host.path(LOG_DIR);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = host.path(&log_file(sr));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let mut old = path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&path, old)?;
    }
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// The last `lines` lines of the SR's initiator log (empty if there is none).
#[must_use]
pub fn log_tail(host: &HostRoot, sr: &SrId, lines: usize) -> String {
    let text = std::fs::read(host.path(&log_file(sr))).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `/run/nvmetcp/initiator/<sr>.supervisor`.
fn pid_file(sr: &SrId) -> String {
    format!("{RUN_DIR}/{sr}.supervisor")
}

/// The supervisor of `sr`, if one is alive: the recorded pid still runs
/// `--initiator-supervise <sr>` (a recycled pid is not ours).
fn live_supervisor(host: &HostRoot, sr: &SrId) -> Option<u32> {
    let pid: u32 = host.read_trimmed(&pid_file(sr)).ok()?.parse().ok()?;
    let cmdline = std::fs::read(host.path(&format!("/proc/{pid}/cmdline"))).ok()?;
    let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = words.windows(2).any(|w| w[0] == b"--initiator-supervise" && w[1] == sr.as_str().as_bytes());
    let stat = host.read_trimmed(&format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    (ours && !zombie).then_some(pid)
}

/// Starts the daemon of `sr` unless it runs already.
///
/// # Errors
/// [`ServiceError`] when systemctl or the supervisor cannot be started.
pub fn start(host: &HostRoot, runner: &dyn Runner, sr: &SrId) -> Result<Supervisor, ServiceError> {
    let error = |source| ServiceError::Command { what: "start", sr: sr.to_string(), source: Box::new(source) };
    let supervisor = Supervisor::of(host);
    match supervisor {
        Supervisor::Systemd => {
            runner.run(&Command::new(Program::Systemctl).args(["start", &unit(sr)])).map_err(error)?;
        }
        Supervisor::Detached => {
            if let Some(pid) = live_supervisor(host, sr) {
                tracing::debug!(sr = %sr, pid, "the initiator's supervisor runs already");
            } else {
                let command = Command::new(Program::Plugin).args(["--initiator-supervise", sr.as_str()]);
                let pid = runner.start_detached(&command).map_err(error)?;
                tracing::info!(sr = %sr, pid, "started the initiator's supervisor (no systemd here)");
            }
        }
    }
    Ok(supervisor)
}

/// How long a stopped supervisor may take to go away.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops the daemon of `sr` (and its supervisor); nothing running is fine.
///
/// # Errors
/// [`ServiceError`] when systemctl fails or the supervisor stays.
pub fn stop(host: &HostRoot, runner: &dyn Runner, sr: &SrId) -> Result<(), ServiceError> {
    match Supervisor::of(host) {
        Supervisor::Systemd => {
            runner.run(&Command::new(Program::Systemctl).args(["stop", &unit(sr)])).map_err(|source| {
                ServiceError::Command { what: "stop", sr: sr.to_string(), source: Box::new(source) }
            })?;
        }
        Supervisor::Detached => {
            if let Some(pid) = live_supervisor(host, sr) {
                // The supervisor leads its process group, the daemon is in it.
                let group = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
                let _ = killpg(group, Signal::SIGTERM);
                let deadline = Instant::now() + STOP_TIMEOUT;
                while live_supervisor(host, sr).is_some() {
                    if Instant::now() >= deadline {
                        let _ = killpg(group, Signal::SIGKILL);
                        std::thread::sleep(Duration::from_millis(200));
                        if live_supervisor(host, sr).is_some() {
                            return Err(ServiceError::Stuck {
                                sr: sr.to_string(),
                                pid,
                                seconds: STOP_TIMEOUT.as_secs(),
                            });
                        }
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let _ = std::fs::remove_file(host.path(&pid_file(sr)));
        }
    }
    Ok(())
}

/// The supervisor's life (`--initiator-supervise <sr>`): records its pid,
/// then runs the daemon until it exits successfully (its device was
/// disconnected), restarting it a second after every failure, as the
/// unit's `Restart=always`, `RestartSec=1` do. The daemon inherits the
/// supervisor's stderr, which is the SR's log file ([`open_log`]) when
/// started detached.
///
/// # Errors
/// The pid file cannot be written or the daemon cannot be started at all.
pub fn supervise(host: &HostRoot, sr: &SrId) -> Result<(), String> {
    host.write_atomically(&pid_file(sr), format!("{}\n", std::process::id()).as_bytes(), 0o644)
        .map_err(|e| format!("cannot write {}: {e}", pid_file(sr)))?;
    let daemon = Command::new(Program::Plugin).args(["--initiator-daemon", sr.as_str()]);
    let result = crate::cmd::supervise(&crate::cmd::SystemRunner::new(), &daemon, Duration::from_secs(1));
    let _ = std::fs::remove_file(host.path(&pid_file(sr)));
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::FakeRunner;
    use crate::nvme::sysfs::fixture::SysfsTree;

    const SR: &str = "0c9b6a43-6f3e-4bd4-9c3e-5e0d0c1a2b3c";

    #[test]
    fn with_systemd_the_template_unit_is_started_and_stopped() {
        let tree = SysfsTree::new();
        tree.write("/run/systemd/system/.keep", "");
        let runner = FakeRunner::new().then_stdout("").then_stdout("");
        let sr = SrId::parse(SR).unwrap();
        assert_eq!(start(&tree.host(), &runner, &sr).unwrap(), Supervisor::Systemd);
        stop(&tree.host(), &runner, &sr).unwrap();
        let shown: Vec<String> = runner.calls().into_iter().map(|c| c.shown).collect();
        assert_eq!(
            shown,
            [
                format!("systemctl start nvmetcp-initiator@{SR}.service"),
                format!("systemctl stop nvmetcp-initiator@{SR}.service")
            ]
        );
    }

    #[test]
    fn without_systemd_one_supervisor_is_started_detached_and_a_recycled_pid_is_not_ours() {
        let tree = SysfsTree::new();
        let runner = FakeRunner::new();
        let sr = SrId::parse(SR).unwrap();
        assert_eq!(start(&tree.host(), &runner, &sr).unwrap(), Supervisor::Detached);
        assert_eq!(runner.calls()[0].shown, format!("nvmetcp-plugin --initiator-supervise {SR} &"));
        // It runs: not started twice.
        tree.write(&pid_file(&sr), "4242\n");
        tree.write(
            "/proc/4242/cmdline",
            &format!("/usr/libexec/nvmetcp/nvmetcp-plugin\0--initiator-supervise\0{SR}\0"),
        );
        tree.write("/proc/4242/stat", "4242 (nvmetcp-plugin) S 1 4242");
        start(&tree.host(), &runner, &sr).unwrap();
        assert_eq!(runner.calls().len(), 1);
        // A zombie, or a pid now running something else, is not a supervisor.
        tree.write("/proc/4242/stat", "4242 (nvmetcp-plugin) Z 1 4242");
        assert_eq!(live_supervisor(&tree.host(), &sr), None);
        tree.write("/proc/4242/stat", "4242 (bash) S 1 4242");
        tree.write("/proc/4242/cmdline", "bash\0");
        assert_eq!(live_supervisor(&tree.host(), &sr), None);
        start(&tree.host(), &runner, &sr).unwrap();
        assert_eq!(runner.calls().len(), 2);
        // Nothing of ours runs: stopping only removes the pid file.
        stop(&tree.host(), &runner, &sr).unwrap();
        assert!(!tree.host().exists(&pid_file(&sr)));
    }

    #[test]
    fn the_log_is_root_only_appended_and_bounded() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let tree = SysfsTree::new();
        let host = tree.host();
        let sr = SrId::parse(SR).unwrap();
        assert_eq!(log_tail(&host, &sr, 5), "");
        let mode = |path: &str| std::fs::metadata(host.path(path)).unwrap().permissions().mode() & 0o777;
        writeln!(open_log(&host, &sr).unwrap(), "first").unwrap();
        writeln!(open_log(&host, &sr).unwrap(), "second\nthird").unwrap();
        assert_eq!((mode(LOG_DIR), mode(&log_file(&sr))), (0o700, 0o600));
        assert_eq!(log_tail(&host, &sr, 2), "second\nthird");
        assert_eq!(log_tail(&host, &sr, 9), "first\nsecond\nthird");
        std::fs::write(host.path(&log_file(&sr)), vec![b'x'; 5 << 20]).unwrap();
        writeln!(open_log(&host, &sr).unwrap(), "after").unwrap();
        assert_eq!(log_tail(&host, &sr, 9), "after");
        assert!(host.exists(&format!("{}.1", log_file(&sr))));
    }
}
