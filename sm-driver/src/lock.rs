//! Host-wide file locks with a deadline.
//!
//! xapi runs plugin calls concurrently and nothing bounds how long a call may
//! take, so every lock the driver takes is an exclusive `flock` on a file in
//! `/run/nvmetcp`, polled with back-off until a deadline: a call waits its
//! turn but never forever. The lock is released when the value is dropped
//! (or the process dies).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::host::HostRoot;

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else held it past the deadline.
    #[error("{path} was held by another call for more than {timeout:?}")]
    Timeout {
        /// The lock file.
        path: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The lock file could not be created.
    #[error("cannot open the lock file {path}")]
    Io {
        /// The lock file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on a file, held while alive.
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Locks `path` (created 0600, its directory 0700), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockError`] if the file cannot be opened or the wait times out.
    pub fn acquire(host: &HostRoot, path: &str, timeout: Duration) -> Result<Self, LockError> {
        let io = |source| LockError::Io { path: path.to_owned(), source };
        if let Some(dir) = host.path(path).parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(host.path(path))
            .map_err(io)?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Self { _lock: lock }),
                Err((returned, _)) if Instant::now() < deadline => {
                    file = returned;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(_) => return Err(LockError::Timeout { path: path.to_owned(), timeout }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{FileLock, LockError};
    use crate::host::HostRoot;

    #[test]
    fn a_held_lock_times_out_and_is_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        let held = FileLock::acquire(&host, "/run/nvmetcp/x.lock", Duration::from_secs(1)).unwrap();
        let err = FileLock::acquire(&host, "/run/nvmetcp/x.lock", Duration::from_millis(50)).err().unwrap();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        drop(held);
        FileLock::acquire(&host, "/run/nvmetcp/x.lock", Duration::from_millis(50)).unwrap();
    }
}
