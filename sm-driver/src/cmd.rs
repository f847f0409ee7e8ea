//! Every external program the driver runs goes through this module.
//!
//! Storage plugins fail in the field because of their environment more often
//! than because of their logic: a `PATH` without `/usr/sbin`, a locale that
//! translates lvm2's messages, a command that hangs on a dead path, a secret
//! that ends up in a log. So one type owns all of it:
//!
//! * [`Program`] is a closed list of the tools the driver may run; each is
//!   resolved to an absolute path from fixed directories, never from `PATH`;
//! * the child gets a pinned environment (`LC_ALL=C`, a fixed `PATH`) and its
//!   own process group, stdout and stderr are captured concurrently, and every
//!   run has a deadline after which the whole group is killed;
//! * argv is logged at debug level before the run, with secret arguments
//!   redacted, and secrets never appear in errors either: they travel on
//!   stdin ([`Command::secret_stdin`]) or as redacted arguments;
//! * a [`CmdError`] says which command failed and how, with its stderr, which
//!   is what an administrator reading SMlog needs.
//!
//! [`SystemRunner`] is the real implementation; `FakeRunner` (tests and the
//! `testing` feature only) records calls
//! and replays scripted outputs for unit tests. `std::process::Command::new`
//! is banned elsewhere by clippy (`disallowed-methods`).

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

/// Directories searched for programs, in order. Never `PATH`.
pub const SEARCH_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// `PATH` given to children (lvm2 runs helpers of its own).
const CHILD_PATH: &str = "/usr/sbin:/sbin:/usr/bin:/bin";

/// Deadline of a command unless the caller chooses another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of a command's output an error keeps.
const OUTPUT_KEPT_IN_ERRORS: usize = 4096;

/// What secret arguments are replaced with in logs and errors.
const REDACTED: &str = "<redacted>";

/// The external programs the driver may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Program {
    /// lvm2's multi-call binary (`lvm version`, `lvm vgs`, …).
    Lvm,
    /// nvme-cli; the driver reports it but never parses its human output.
    Nvme,
    /// kmod's modprobe, to load the fabrics transport modules.
    Modprobe,
    /// util-linux blkid, to see whether a namespace holds a signature.
    Blkid,
    /// iproute2, for `nvmetcp doctor` (routes and addresses, never changed).
    Ip,
    /// iputils ping, for `nvmetcp doctor`'s don't-fragment MTU check.
    Ping,
    /// procps sysctl, for `nvmetcp host-setup --apply`.
    Sysctl,
    /// device-mapper's dmsetup, to remove a volume's mapping when no path
    /// is live (LVM itself would block reading the unreachable device).
    Dmsetup,
    /// blktap's control tool, the tapdisk datapath engine (`crate::engine::tapdisk`).
    TapCtl,
    /// QEMU's image tool: qcow2 layers (create, measure, check, commit, rebase).
    QemuImg,
    /// QEMU's storage daemon, the datapath engine where tapdisk is absent
    /// (`crate::engine::qsd`, the test bed).
    QemuStorageDaemon,
    /// nbd-client, connecting the storage daemon's NBD export to a kernel device.
    NbdClient,
    /// systemd's systemctl: the userspace initiator's `nvmetcp-initiator@<sr>` unit.
    Systemctl,
    /// This very binary (`nvmetcp-plugin`), resolved from `/proc/self/exe`:
    /// the userspace initiator's daemon and, where systemd does not run, its
    /// supervisor.
    Plugin,
}

impl Program {
    /// The executable's file name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Lvm => "lvm",
            Self::Nvme => "nvme",
            Self::Modprobe => "modprobe",
            Self::Blkid => "blkid",
            Self::Ip => "ip",
            Self::Ping => "ping",
            Self::Sysctl => "sysctl",
            Self::Dmsetup => "dmsetup",
            Self::TapCtl => "tap-ctl",
            Self::QemuImg => "qemu-img",
            Self::QemuStorageDaemon => "qemu-storage-daemon",
            Self::NbdClient => "nbd-client",
            Self::Systemctl => "systemctl",
            Self::Plugin => "nvmetcp-plugin",
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One argument: shown in logs, or redacted.
#[derive(Clone, PartialEq, Eq)]
enum Arg {
    Plain(String),
    Secret(String),
}

/// A command to run: program, arguments, optional secret stdin, deadline.
#[derive(Clone)]
pub struct Command {
    program: Program,
    args: Vec<Arg>,
    stdin: Option<String>,
    timeout: Duration,
}

impl Command {
    /// A command running `program` with no arguments and the default deadline.
    #[must_use]
    pub fn new(program: Program) -> Self {
        Self { program, args: Vec::new(), stdin: None, timeout: DEFAULT_TIMEOUT }
    }

    /// Appends an argument that may be logged.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(Arg::Plain(arg.into()));
        self
    }

    /// Appends arguments that may be logged.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(|a| Arg::Plain(a.into())));
        self
    }

    /// Appends an argument that is redacted in logs and errors. Prefer
    /// [`Command::secret_stdin`] when the tool can read the secret there.
    #[must_use]
    pub fn secret_arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(Arg::Secret(arg.into()));
        self
    }

    /// Feeds `data` to the child's stdin; it is never logged.
    #[must_use]
    pub fn secret_stdin(mut self, data: impl Into<String>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Sets the deadline after which the command is killed.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The program to run.
    #[must_use]
    pub fn program(&self) -> Program {
        self.program
    }

    /// The arguments as given, secrets included: for the runner only.
    fn raw_args(&self) -> impl Iterator<Item = &str> {
        self.args.iter().map(|a| match a {
            Arg::Plain(s) | Arg::Secret(s) => s.as_str(),
        })
    }

    /// Every secret the command carries, to scrub from captured output.
    fn secrets(&self) -> impl Iterator<Item = &str> {
        self.args
            .iter()
            .filter_map(|a| match a {
                Arg::Secret(s) => Some(s.as_str()),
                Arg::Plain(_) => None,
            })
            .chain(self.stdin.as_deref().map(str::trim))
            .filter(|s| !s.is_empty())
    }

    /// Replaces every secret of this command found in `text`.
    fn scrub(&self, text: &str) -> String {
        self.secrets().fold(text.to_owned(), |acc, secret| acc.replace(secret, REDACTED))
    }
}

/// The command line as logged: program and arguments, secrets redacted.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program.name())?;
        for arg in &self.args {
            match arg {
                Arg::Plain(s) if s.is_empty() || s.contains(char::is_whitespace) => write!(f, " {s:?}")?,
                Arg::Plain(s) => write!(f, " {s}")?,
                Arg::Secret(_) => write!(f, " {REDACTED}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({self})")
    }
}

/// What a successful command printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Captured stdout (lossy UTF-8), secrets scrubbed.
    pub stdout: String,
    /// Captured stderr (lossy UTF-8), secrets scrubbed.
    pub stderr: String,
}

/// How a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The program is in none of the search directories.
    #[error("{program} is not installed (looked in {searched}); install the package that provides it")]
    NotFound {
        /// The program.
        program: Program,
        /// The directories searched.
        searched: String,
    },
    /// The program could not be started.
    #[error("cannot run '{command}'")]
    Spawn {
        /// The command line, secrets redacted.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for or talking to the child failed.
    #[error("lost track of '{command}'")]
    Io {
        /// The command line, secrets redacted.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The deadline passed; the command was killed.
    #[error("'{command}' did not finish within {timeout:?} and was killed{}", stderr_suffix(.stderr))]
    TimedOut {
        /// The command line, secrets redacted.
        command: String,
        /// The deadline.
        timeout: Duration,
        /// What it printed on stderr before it was killed.
        stderr: String,
    },
    /// The command ran and reported failure.
    #[error("'{command}' failed ({status}){}", stderr_suffix(.stderr))]
    Failed {
        /// The command line, secrets redacted.
        command: String,
        /// `exit status N` or `killed by signal N`.
        status: String,
        /// The exit code, when it exited (not when it was killed).
        code: Option<i32>,
        /// Its stdout (trimmed to the last few KiB).
        stdout: String,
        /// Its stderr (trimmed to the last few KiB).
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Keeps the end of `text`, where tools put the reason they failed.
fn tail(text: &str) -> String {
    if text.len() <= OUTPUT_KEPT_IN_ERRORS {
        return text.to_owned();
    }
    let mut start = text.len() - OUTPUT_KEPT_IN_ERRORS;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// Runs commands. Implemented by [`SystemRunner`] and, for tests, `FakeRunner`.
pub trait Runner: Send + Sync {
    /// Runs `command` to completion within its deadline.
    ///
    /// # Errors
    /// [`CmdError`] if the program is missing, cannot start, exceeds its
    /// deadline or exits with a non-zero status.
    fn run(&self, command: &Command) -> Result<Output, CmdError>;

    /// The absolute path `program` would run from.
    ///
    /// # Errors
    /// [`CmdError::NotFound`] if it is not installed.
    fn resolve(&self, program: Program) -> Result<PathBuf, CmdError>;

    /// Starts `command` detached: in a process group of its own, with no
    /// stdin, stdout or stderr (a caller's stdout is the protocol, and
    /// xapi-storage-script waits for it to close), not waited for. Returns
    /// its pid. For long-lived helpers only (the initiator's supervisor).
    ///
    /// # Errors
    /// [`CmdError`] if the program is missing or cannot start.
    fn start_detached(&self, command: &Command) -> Result<u32, CmdError>;
}

/// Runs real programs.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    search_dirs: Vec<PathBuf>,
}

impl Default for SystemRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemRunner {
    /// A runner searching the fixed system directories ([`SEARCH_DIRS`]).
    #[must_use]
    pub fn new() -> Self {
        Self::with_search_dirs(SEARCH_DIRS.iter().map(PathBuf::from).collect())
    }

    /// A runner searching `dirs` instead: for tests that stand in a program.
    #[must_use]
    pub fn with_search_dirs(search_dirs: Vec<PathBuf>) -> Self {
        Self { search_dirs }
    }
}

impl Runner for SystemRunner {
    fn resolve(&self, program: Program) -> Result<PathBuf, CmdError> {
        if program == Program::Plugin {
            return std::env::current_exe()
                .map_err(|_| CmdError::NotFound { program, searched: "/proc/self/exe".to_owned() });
        }
        self.search_dirs.iter().map(|dir| dir.join(program.name())).find(|path| is_executable(path)).ok_or_else(|| {
            CmdError::NotFound {
                program,
                searched: self.search_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            }
        })
    }

    fn start_detached(&self, command: &Command) -> Result<u32, CmdError> {
        let (mut child, shown) = self.child(command)?;
        tracing::debug!(command = %shown, "starting detached");
        let child = child.process_group(0).spawn().map_err(|source| CmdError::Spawn { command: shown, source })?;
        // Not waited for: once this short-lived process exits, init reaps it.
        Ok(child.id())
    }

    fn run(&self, command: &Command) -> Result<Output, CmdError> {
        let (mut child, shown) = self.child(command)?;
        tracing::debug!(command = %shown, "running");
        let started = Instant::now();
        child
            .process_group(0)
            .stdin(if command.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = child.spawn().map_err(|source| CmdError::Spawn { command: shown.clone(), source })?;

        let stdin_writer = child.stdin.take().map(|mut pipe| {
            let data = command.stdin.clone().unwrap_or_default();
            // A child that exits without reading its stdin is not our error.
            thread::spawn(move || drop(pipe.write_all(data.as_bytes())))
        });
        let stdout_reader = child.stdout.take().map(spawn_reader);
        let stderr_reader = child.stderr.take().map(spawn_reader);

        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let exited = Arc::new((Mutex::new(false), Condvar::new()));
        let watchdog = {
            let exited = Arc::clone(&exited);
            let timeout = command.timeout;
            thread::spawn(move || kill_after_deadline(&exited, pid, timeout))
        };

        // Wait without reaping, so the pid cannot be reused while the watchdog
        // may still signal it; only once it is told, reap.
        let waited = wait_without_reaping(pid);
        {
            let (lock, wake) = &*exited;
            *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
            wake.notify_all();
        }
        let killed = watchdog.join().unwrap_or(false);
        let status = child.wait();
        if let Some(writer) = stdin_writer {
            drop(writer.join());
        }
        let stdout = command.scrub(&join_reader(stdout_reader));
        let stderr = command.scrub(&join_reader(stderr_reader));
        let status = waited.and(status).map_err(|source| CmdError::Io { command: shown.clone(), source })?;
        let elapsed_ms = started.elapsed().as_millis();

        if killed {
            tracing::debug!(command = %shown, elapsed_ms, "killed at its deadline");
            return Err(CmdError::TimedOut { command: shown, timeout: command.timeout, stderr: tail(&stderr) });
        }
        tracing::debug!(command = %shown, elapsed_ms, status = %describe_status(status), "finished");
        if status.success() {
            Ok(Output { stdout, stderr })
        } else {
            Err(CmdError::Failed {
                command: shown,
                status: describe_status(status),
                code: status.code(),
                stdout: tail(&stdout),
                stderr: tail(&stderr),
            })
        }
    }
}

impl SystemRunner {
    fn child(&self, command: &Command) -> Result<(std::process::Command, String), CmdError> {
        let path = self.resolve(command.program)?;
        #[allow(clippy::disallowed_methods)] // this module is the one place allowed to spawn
        let mut child = std::process::Command::new(&path);
        child.args(command.raw_args()).env_clear().env("PATH", CHILD_PATH).env("LC_ALL", "C").env("LANG", "C");
        child.current_dir("/").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        Ok((child, command.to_string()))
    }
}

/// Runs `command` again and again, as systemd's `Restart=always` with
/// `RestartSec=restart_delay` would, until it exits successfully; for hosts
/// where systemd does not run (the initiator daemon's supervisor). The
/// child stays in the caller's process group, so signalling the group stops
/// both, and writes its stderr to the caller's (the initiator's log file).
///
/// # Errors
/// [`CmdError`] if the program is missing or cannot start at all.
pub fn supervise(runner: &SystemRunner, command: &Command, restart_delay: Duration) -> Result<(), CmdError> {
    loop {
        let (mut child, shown) = runner.child(command)?;
        let mut child = child
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| CmdError::Spawn { command: shown.clone(), source })?;
        let status = child.wait().map_err(|source| CmdError::Io { command: shown.clone(), source })?;
        if status.success() {
            tracing::info!(command = %shown, "finished; not restarted");
            return Ok(());
        }
        tracing::warn!(command = %shown, status = %describe_status(status), ?restart_delay, "exited; restarting");
        thread::sleep(restart_delay);
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buffer = Vec::new();
        // A read error ends the capture; what was read so far is kept.
        drop(pipe.read_to_end(&mut buffer));
        buffer
    })
}

fn join_reader(reader: Option<thread::JoinHandle<Vec<u8>>>) -> String {
    reader.and_then(|r| r.join().ok()).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
}

/// Blocks until the child has exited, leaving it unreaped.
fn wait_without_reaping(pid: Pid) -> std::io::Result<()> {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(std::io::Error::from(errno)),
        }
    }
}

/// Waits until the child is reported exited or `timeout` passes; in the
/// latter case kills its process group. Returns whether it killed.
fn kill_after_deadline(exited: &(Mutex<bool>, Condvar), pid: Pid, timeout: Duration) -> bool {
    let (lock, wake) = exited;
    let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
    let (guard, _) = wake.wait_timeout_while(guard, timeout, |done| !*done).unwrap_or_else(PoisonError::into_inner);
    if *guard {
        return false;
    }
    // The child is unreaped while `done` is false and we hold the lock, so
    // its pid (and group id) still names it.
    // ESRCH (already gone) is the only expected error, and harmless.
    let _ = killpg(pid, Signal::SIGKILL);
    true
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown status".to_owned(),
    }
}

#[cfg(any(test, feature = "testing"))]
mod fake;
#[cfg(test)]
pub(crate) use self::fake::{args_of, DeviceSubstitute};
#[cfg(any(test, feature = "testing"))]
pub use self::fake::{FakeResponse, FakeRunner, RecordedCall, FAKE_DETACHED_PID};

#[cfg(test)]
mod tests;
