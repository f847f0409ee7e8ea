//! A block device exported to the host as `/dev/nbdN`: one socket pair per
//! connection, the kernel's ends handed over with NBD_CMD_CONNECT, a serving
//! thread per connection. A connection the kernel declares dead (its
//! request timed out, or the previous daemon died) is replaced with a new
//! socket through NBD_CMD_RECONFIGURE; requests wait for it meanwhile (the
//! dead-connection timeout), so the host sees no I/O error.
//!
//! Kernel behaviour this relies on (`drivers/block/nbd.c`): a request whose
//! connection died is requeued when its timeout fires (`nbd_xmit_timeout`;
//! on 4.19 only with more than one connection, hence at least two here),
//! then waits up to the dead-connection timeout for a live connection
//! (`wait_for_reconnect`); `nbd_reconnect_socket` puts a new socket in a
//! dead slot; the device keeps its configuration and the pid of the process
//! that connected it (`/sys/block/nbdN/pid`) until NBD_CMD_DISCONNECT.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::budget::Budget;
use super::kernel::{NbdNetlink, NetlinkError};
use super::netlink::ConnectSpec;
use super::proto;
use super::resend::Resends;
use super::server::{self, ConnectionEnd, Counters};
use crate::block::BlockDevice;

/// How a device is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Who serves it: `nvmetcp:<SR uuid>`; shown by newer kernels in
    /// `/sys/block/nbdN/backend` and checked by them on reconfigure.
    pub backend: String,
    /// Connections (one per I/O queue); at least 2.
    pub connections: usize,
    /// Seconds before the kernel retries a request on another connection.
    pub io_timeout_secs: u64,
    /// Seconds requests wait for a dead connection to be replaced.
    pub dead_conn_timeout_secs: u64,
    /// Bytes of request data held at once, all connections together.
    pub memory_limit: usize,
}

impl ExportConfig {
    /// The defaults for an SR: 2 connections, 10 s I/O timeout (a request
    /// the previous daemon took is resent after it), 120 s for a restarted
    /// daemon to come back, 32 MiB of buffers.
    #[must_use]
    pub fn for_backend(backend: &str) -> Self {
        Self {
            backend: backend.to_owned(),
            connections: 2,
            io_timeout_secs: 10,
            dead_conn_timeout_secs: 120,
            memory_limit: 32 << 20,
        }
    }
}

/// Why an export could not be set up or picked back up.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Netlink refused or failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// Socket pairs or threads could not be made.
    #[error("cannot set up NBD connection {what}: {error}")]
    Setup {
        /// What was being made.
        what: &'static str,
        /// The system's error.
        error: std::io::Error,
    },
    /// Fewer than two connections.
    #[error("{0} NBD connections asked for: at least 2 are needed (with one, Linux 4.19 fails requests whose connection died instead of retrying them)")]
    TooFewConnections(usize),
    /// The device at that index is not the one this SR set up.
    #[error("/dev/nbd{index} is not this SR's device: {reason}")]
    NotOurs {
        /// The index.
        index: u32,
        /// What did not match.
        reason: String,
    },
}

/// What `nvmetcp status` and diagnostics show of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportStats {
    /// `nbdN`'s N.
    pub index: u32,
    /// Connections configured.
    pub connections: usize,
    /// Connections being served now.
    pub live: usize,
    /// Dead connections replaced since start.
    pub replaced: u64,
    /// Requests received.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Bytes of buffers held.
    pub buffer_bytes: usize,
    /// Their bound.
    pub buffer_limit: usize,
}

struct Shared {
    index: u32,
    config: ExportConfig,
    device: Arc<dyn BlockDevice>,
    netlink: Mutex<NbdNetlink>,
    budget: Arc<Budget>,
    counters: Arc<Counters>,
    resends: Arc<Resends>,
    stopping: AtomicBool,
    live: AtomicUsize,
    replaced: AtomicU64,
}

/// A device being served as `/dev/nbdN`.
pub struct Export {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export").field("index", &self.shared.index).finish_non_exhaustive()
    }
}

/// Send buffer of each end of a connection: room for a whole 1 MiB request
/// or reply (the default, about 200 KiB, makes the writer and the reader
/// take turns five times per request, each turn a wake-up).
const SOCKET_BUFFER: usize = 2 << 20;

fn pairs(count: usize) -> Result<(Vec<UnixStream>, Vec<OwnedFd>), ExportError> {
    let mut ours = Vec::with_capacity(count);
    let mut kernels = Vec::with_capacity(count);
    for _ in 0..count {
        let (server, kernel) = UnixStream::pair().map_err(|error| ExportError::Setup { what: "socketpair", error })?;
        grow_send_buffer(&server);
        grow_send_buffer(&kernel);
        ours.push(server);
        kernels.push(OwnedFd::from(kernel));
    }
    Ok((ours, kernels))
}

/// Past `net.core.wmem_max` when the daemon may (root: SO_SNDBUFFORCE), else
/// up to it; a smaller buffer only costs speed.
fn grow_send_buffer(stream: &UnixStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(stream, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        if let Err(error) = setsockopt(stream, sockopt::SndBuf, &SOCKET_BUFFER) {
            tracing::debug!(%error, "cannot grow an NBD socket's send buffer");
        }
    }
}

fn raw_fds(fds: &[OwnedFd]) -> Vec<u32> {
    fds.iter().map(|fd| u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)).collect()
}

impl Export {
    /// Sets a new device up (NBD_CMD_CONNECT) and starts serving it.
    ///
    /// # Errors
    /// Too few connections, no socket pairs, or the kernel refused.
    pub fn create(device: Arc<dyn BlockDevice>, config: ExportConfig) -> Result<Self, ExportError> {
        if config.connections < 2 {
            return Err(ExportError::TooFewConnections(config.connections));
        }
        let netlink = NbdNetlink::open()?;
        let geometry = device.geometry();
        let (ours, kernels) = pairs(config.connections)?;
        let spec = ConnectSpec {
            index: None,
            size_bytes: geometry.size_bytes(),
            block_size: u64::from(geometry.block_size),
            timeout_secs: config.io_timeout_secs,
            dead_conn_timeout_secs: config.dead_conn_timeout_secs,
            server_flags: proto::server_flags(&geometry),
            backend: config.backend.clone(),
            socket_fds: raw_fds(&kernels),
        };
        let index = netlink.connect(&spec)?;
        // The kernel holds its own references to its ends now.
        drop(kernels);
        tracing::info!(index, connections = config.connections, backend = %config.backend, "NBD device connected");
        Self::serve(index, device, config, netlink, ours)
    }

    /// Picks a device back up after the serving process was restarted:
    /// checks it is ours, then hands the kernel new sockets for its dead
    /// connections (NBD_CMD_RECONFIGURE). Requests that waited meanwhile go on.
    ///
    /// # Errors
    /// The device is not ours, or the kernel refused.
    pub fn adopt(
        device: Arc<dyn BlockDevice>,
        config: ExportConfig,
        index: u32,
        expected_pid: u32,
        sys: &Path,
    ) -> Result<Self, ExportError> {
        if config.connections < 2 {
            return Err(ExportError::TooFewConnections(config.connections));
        }
        verify(sys, index, expected_pid, &config.backend, device.geometry().size_bytes())?;
        let netlink = NbdNetlink::open()?;
        let (ours, kernels) = pairs(config.connections)?;
        netlink.reconfigure(index, &config.backend, config.dead_conn_timeout_secs, &raw_fds(&kernels))?;
        drop(kernels);
        tracing::info!(index, backend = %config.backend, "NBD device picked back up");
        Self::serve(index, device, config, netlink, ours)
    }

    fn serve(
        index: u32,
        device: Arc<dyn BlockDevice>,
        config: ExportConfig,
        netlink: NbdNetlink,
        ours: Vec<UnixStream>,
    ) -> Result<Self, ExportError> {
        let shared = Arc::new(Shared {
            index,
            budget: Budget::new(config.memory_limit),
            config,
            device,
            netlink: Mutex::new(netlink),
            counters: Arc::new(Counters::default()),
            resends: Resends::new(),
            stopping: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            replaced: AtomicU64::new(0),
        });
        let mut threads = Vec::new();
        for (slot, stream) in ours.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let thread = std::thread::Builder::new()
                .name(format!("nbd{index}.{slot}"))
                .spawn(move || connection(&shared, slot, stream))
                .map_err(|error| ExportError::Setup { what: "thread", error })?;
            threads.push(thread);
        }
        Ok(Self { shared, threads })
    }

    /// `nbdN`'s N.
    #[must_use]
    pub fn index(&self) -> u32 {
        self.shared.index
    }

    /// Counters for status and diagnostics.
    #[must_use]
    pub fn stats(&self) -> ExportStats {
        let s = &self.shared;
        ExportStats {
            index: s.index,
            connections: s.config.connections,
            live: s.live.load(Ordering::Relaxed),
            replaced: s.replaced.load(Ordering::Relaxed),
            requests: s.counters.requests.load(Ordering::Relaxed),
            errors: s.counters.errors.load(Ordering::Relaxed),
            in_flight: s.counters.in_flight.load(Ordering::Relaxed),
            buffer_bytes: s.budget.in_use(),
            buffer_limit: s.budget.limit(),
        }
    }

    /// Tears the device down (NBD_CMD_DISCONNECT) and waits for the
    /// connections to end.
    ///
    /// # Errors
    /// The kernel refused.
    pub fn disconnect(self) -> Result<(), ExportError> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.netlink.lock().unwrap_or_else(PoisonError::into_inner).disconnect(self.shared.index)?;
        self.wait();
        Ok(())
    }

    /// Whether every connection has ended for good (the device was
    /// disconnected).
    #[must_use]
    pub fn finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Blocks until every connection has ended for good (the device was
    /// disconnected, by this process or by another).
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Serves one connection slot, replacing its socket whenever the kernel
/// declares it dead, until the device is disconnected.
fn connection(shared: &Arc<Shared>, slot: usize, first: UnixStream) {
    let mut stream = Some(first);
    let mut backoff = Duration::from_millis(50);
    loop {
        if let Some(current) = stream.take() {
            shared.live.fetch_add(1, Ordering::Relaxed);
            let end = server::serve(&shared.device, current, &shared.budget, &shared.counters, &shared.resends);
            shared.live.fetch_sub(1, Ordering::Relaxed);
            match end {
                ConnectionEnd::Disconnected => {
                    tracing::info!(index = shared.index, slot, "NBD connection disconnected by the kernel");
                    return;
                }
                end => tracing::warn!(index = shared.index, slot, %end, "NBD connection lost; replacing it"),
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(2));
        match replace(shared) {
            Ok(Some(next)) => {
                shared.replaced.fetch_add(1, Ordering::Relaxed);
                backoff = Duration::from_millis(50);
                stream = Some(next);
            }
            Ok(None) => return, // the device is gone: disconnected elsewhere
            Err(error) => tracing::warn!(index = shared.index, slot, %error, "replacing an NBD connection failed"),
        }
    }
}

/// One new socket through NBD_CMD_RECONFIGURE. If the kernel had no dead
/// slot to put it in, it drops its end and the new connection ends at once;
/// the caller then tries again.
fn replace(shared: &Shared) -> Result<Option<UnixStream>, ExportError> {
    let (mut ours, kernels) = pairs(1)?;
    let netlink = shared.netlink.lock().unwrap_or_else(PoisonError::into_inner);
    match netlink.reconfigure(
        shared.index,
        &shared.config.backend,
        shared.config.dead_conn_timeout_secs,
        &raw_fds(&kernels),
    ) {
        Ok(()) => Ok(ours.pop()),
        Err(NetlinkError::Kernel { errno: nix::errno::Errno::EINVAL, .. }) if !configured(shared.index) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

fn configured(index: u32) -> bool {
    Path::new(&format!("/sys/block/nbd{index}/pid")).exists()
}

/// The files that say who owns `/dev/nbdN`.
#[must_use]
pub fn sys_block(sys: &Path, index: u32) -> PathBuf {
    sys.join("block").join(format!("nbd{index}"))
}

/// Checks that `/dev/nbdN` is the device this SR's daemon set up: it is
/// configured, by the process recorded (`pid`), for this backend where the
/// kernel shows one (`backend`, Linux 5.14 and later), and of the size.
///
/// # Errors
/// The first thing that does not match.
pub fn verify(sys: &Path, index: u32, expected_pid: u32, backend: &str, size_bytes: u64) -> Result<(), ExportError> {
    let dir = sys_block(sys, index);
    let not_ours = |reason: String| ExportError::NotOurs { index, reason };
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).map(|s| s.trim().to_owned());
    let pid = read("pid").map_err(|_| not_ours("it is not configured (no pid file)".into()))?;
    if pid != expected_pid.to_string() {
        return Err(not_ours(format!("it was set up by pid {pid}, not by the recorded {expected_pid}")));
    }
    if let Ok(shown) = read("backend") {
        if shown != backend {
            return Err(not_ours(format!("its backend is {shown:?}, not {backend:?}")));
        }
    }
    let sectors: u64 = read("size").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    if sectors.saturating_mul(512) != size_bytes {
        return Err(not_ours(format!("it has {} bytes, the namespace {size_bytes}", sectors.saturating_mul(512))));
    }
    Ok(())
}

/// Caps the kernel's request size at what the device takes in one transfer
/// (`queue/max_sectors_kb`), so requests need no splitting; best effort.
pub fn limit_request_size(sys: &Path, index: u32, max_transfer: u32) {
    if max_transfer < 4096 {
        return;
    }
    let path = sys_block(sys, index).join("queue/max_sectors_kb");
    if let Err(error) = std::fs::write(&path, format!("{}\n", max_transfer / 1024)) {
        tracing::warn!(path = %path.display(), %error, "could not cap the NBD request size");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysfs(pid: &str, backend: Option<&str>, sectors: u64) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = sys_block(root.path(), 3);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pid"), format!("{pid}\n")).unwrap();
        std::fs::write(dir.join("size"), format!("{sectors}\n")).unwrap();
        if let Some(backend) = backend {
            std::fs::write(dir.join("backend"), format!("{backend}\n")).unwrap();
        }
        root
    }

    #[test]
    fn our_device_is_recognised_by_pid_backend_and_size() {
        let root = sysfs("4242", Some("nvmetcp:sr-1"), 2048);
        verify(root.path(), 3, 4242, "nvmetcp:sr-1", 1 << 20).unwrap();
        // 4.19 has no backend file: pid and size decide.
        let root = sysfs("4242", None, 2048);
        verify(root.path(), 3, 4242, "nvmetcp:sr-1", 1 << 20).unwrap();
    }

    #[test]
    fn another_device_is_never_taken() {
        let root = sysfs("4242", Some("nvmetcp:sr-2"), 2048);
        let error = verify(root.path(), 3, 4242, "nvmetcp:sr-1", 1 << 20).unwrap_err().to_string();
        assert!(error.contains("backend"), "{error}");
        let root = sysfs("999", None, 2048);
        let error = verify(root.path(), 3, 4242, "nvmetcp:sr-1", 1 << 20).unwrap_err().to_string();
        assert!(error.contains("pid 999"), "{error}");
        let root = sysfs("4242", None, 4096);
        assert!(verify(root.path(), 3, 4242, "nvmetcp:sr-1", 1 << 20).is_err());
        let error = verify(root.path(), 5, 4242, "nvmetcp:sr-1", 1 << 20).unwrap_err().to_string();
        assert!(error.contains("not configured"), "{error}");
    }

    #[test]
    fn one_connection_is_refused() {
        let device: Arc<dyn BlockDevice> = Arc::new(crate::testing::MemoryDevice::new(512, 8, 0));
        let config = ExportConfig { connections: 1, ..ExportConfig::for_backend("nvmetcp:x") };
        assert!(matches!(Export::create(device, config), Err(ExportError::TooFewConnections(1))));
    }
}
