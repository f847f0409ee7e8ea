//! The host's filesystem view: sysfs, procfs, `/dev` and `/etc`, through a root
//! that tests can point at a tree built in a temporary directory.
//!
//! Nothing in the driver opens `/sys/...` or `/etc/...` directly; it asks a
//! [`HostRoot`] for the path, so unit tests can reproduce any kernel layout
//! (several controllers, multipath on or off, a 4.19 dom0 without `nvme_tcp`)
//! without root and without NVMe hardware.

use std::path::{Path, PathBuf};

/// Why reading the host's state failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path, as the driver saw it.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The root under which absolute host paths are resolved (`/` in production).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

impl Default for HostRoot {
    fn default() -> Self {
        Self::system()
    }
}

impl HostRoot {
    /// The real host: paths are used as they are.
    #[must_use]
    pub fn system() -> Self {
        Self { root: PathBuf::from("/") }
    }

    /// A host whose `/` is `root` (a test tree).
    #[must_use]
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where the absolute host path `absolute` really is.
    #[must_use]
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// Whether `absolute` exists.
    #[must_use]
    pub fn exists(&self, absolute: &str) -> bool {
        self.path(absolute).exists()
    }

    /// The contents of a small text file (a sysfs attribute, a config file),
    /// with surrounding whitespace removed.
    ///
    /// # Errors
    /// [`HostError::Read`] naming the path.
    pub fn read_trimmed(&self, absolute: &str) -> Result<String, HostError> {
        let path = self.path(absolute);
        std::fs::read_to_string(&path).map(|s| s.trim().to_owned()).map_err(|source| HostError::Read { path, source })
    }

    /// The names in a directory, sorted.
    ///
    /// # Errors
    /// [`HostError::Read`] naming the directory.
    pub fn list_dir(&self, absolute: &str) -> Result<Vec<String>, HostError> {
        let path = self.path(absolute);
        let read_error = |source| HostError::Read { path: path.clone(), source };
        let mut names = std::fs::read_dir(&path)
            .map_err(read_error)?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_error)?;
        names.sort();
        Ok(names)
    }

    /// Replaces the file at `absolute` with `data` atomically: a temporary
    /// file beside it, fsync, rename. Its directory is created if missing;
    /// `mode` applies to the file. A crash leaves the old or the new content.
    ///
    /// # Errors
    /// The I/O error of whichever step failed.
    pub fn write_atomically(&self, absolute: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path(absolute);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut temporary = path.clone().into_os_string();
        temporary.push(".nvmetcp-tmp");
        let mut file =
            std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(mode).open(&temporary)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    }

    /// The root itself.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::HostRoot;

    #[test]
    fn paths_resolve_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        std::fs::create_dir_all(host.path("/sys/module/nvme_core/parameters")).unwrap();
        std::fs::write(host.path("/sys/module/nvme_core/parameters/multipath"), "Y\n").unwrap();
        assert_eq!(host.read_trimmed("/sys/module/nvme_core/parameters/multipath").unwrap(), "Y");
        assert_eq!(host.list_dir("/sys/module").unwrap(), ["nvme_core"]);
        let err = host.read_trimmed("/etc/nvme/hostnqn").unwrap_err();
        assert!(err.to_string().contains("etc/nvme/hostnqn"), "{err}");
        assert_eq!(HostRoot::system().path("/sys/class"), std::path::Path::new("/sys/class"));
        host.write_atomically("/run/x/state.json", b"new", 0o600).unwrap();
        assert_eq!(host.read_trimmed("/run/x/state.json").unwrap(), "new");
        assert_eq!(host.list_dir("/run/x").unwrap(), ["state.json"], "no temporary file left");
    }
}
