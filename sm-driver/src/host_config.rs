//! Host-local settings: what differs from host to host and so cannot live in
//! device-config, which xapi copies to every host of the pool.
//!
//! * `/etc/nvmetcp/host.conf` — `key = value` lines (`#` comments):
//!   `host_iface = eth1` binds every NVMe connection of this host to that
//!   interface; `host_traddr = 10.0.0.5` to that source address;
//!   `initiator = kernel|userspace` chooses the NVMe/TCP initiator (default:
//!   the kernel's when `nvme_tcp` can be loaded, see [`crate::initiator`]);
//!   `datapath = auto|blkback|engine` chooses how the pool master hands plain
//!   (never snapshotted) volumes to VMs: `auto` (the default) through
//!   tapdisk (`aio:`) when this host's blktap opens qcow2, as XCP-ng's own
//!   SRs do, so a running VM's disk can be snapshotted without an offline
//!   snapshot first, and blkback on the LV otherwise; `blkback` always;
//!   `engine` through whatever engine the host has, qemu-storage-daemon
//!   included (see [`crate::snapshot::served::plain_datapath`]).
//! * `/etc/nvmetcp/dhchap/<subsystem NQN>.key` and `.ctrl-key` — this host's
//!   DH-HMAC-CHAP key for a subsystem, and the controller's key for
//!   bidirectional authentication. They must be readable by root only; a
//!   file readable by others is refused, never used.
//!
//! Missing files mean "no such setting".

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;

use crate::host::HostRoot;
use crate::nvme::names::{DhchapKey, InterfaceName, Nqn};
use crate::nvme::options::Authentication;

/// The host settings file.
pub const HOST_CONF: &str = "/etc/nvmetcp/host.conf";
/// The directory of DH-HMAC-CHAP key files.
pub const KEY_DIR: &str = "/etc/nvmetcp/dhchap";

/// A host-local setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostConfigError {
    /// A line of host.conf is wrong.
    #[error("{HOST_CONF} line {line}: {why}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong and what is allowed.
        why: String,
    },
    /// A key file is readable by others than root.
    #[error("{path} is readable by other users (mode {mode:o}); run chmod 600 {path}")]
    KeyFileExposed {
        /// The file.
        path: String,
        /// Its mode.
        mode: u32,
    },
    /// A key file does not hold a key.
    #[error("{path} does not hold a DH-HMAC-CHAP key ({why}); generate one with nvme gen-dhchap-key")]
    BadKey {
        /// The file.
        path: String,
        /// What is wrong (never the key).
        why: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// This host's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Interface to bind connections to.
    pub host_iface: Option<InterfaceName>,
    /// Source address to bind connections to.
    pub host_traddr: Option<IpAddr>,
    /// The NVMe/TCP initiator this host must use; `None`: chosen by the kernel's abilities.
    pub initiator: Option<crate::initiator::InitiatorKind>,
    /// How plain volumes are handed to VMs; `None`: [`PlainDatapath::Auto`].
    pub datapath: Option<PlainDatapath>,
}

/// How a host hands a plain (never snapshotted) volume to a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainDatapath {
    /// tapdisk when this host's blktap opens qcow2, else blkback (the default).
    Auto,
    /// Kernel blkback on the volume's LV (`vbd`).
    Blkback,
    /// The host's datapath engine, `aio:` on the LV (`vbd3`).
    Engine,
}

impl std::str::FromStr for PlainDatapath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "blkback" => Ok(Self::Blkback),
            "engine" => Ok(Self::Engine),
            other => Err(format!("datapath {other:?}: expected auto, blkback or engine")),
        }
    }
}

fn read_optional(host: &HostRoot, path: &str) -> Result<Option<String>, HostConfigError> {
    match std::fs::read_to_string(host.path(path)) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostConfigError::Io { path: path.to_owned(), source }),
    }
}

impl HostConfig {
    /// Reads `/etc/nvmetcp/host.conf`.
    ///
    /// # Errors
    /// [`HostConfigError`] naming the line that is wrong.
    pub fn load(host: &HostRoot) -> Result<Self, HostConfigError> {
        let mut config = Self::default();
        let Some(text) = read_optional(host, HOST_CONF)? else { return Ok(config) };
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let (key, value) = content
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| HostConfigError::Line { line, why: format!("{content:?} is not key = value") })?;
            match key {
                "host_iface" => {
                    config.host_iface = Some(value.parse().map_err(|e: crate::nvme::names::InvalidValue| {
                        HostConfigError::Line { line, why: e.to_string() }
                    })?);
                }
                "host_traddr" => {
                    config.host_traddr = Some(value.parse().map_err(|_| HostConfigError::Line {
                        line,
                        why: format!("host_traddr {value:?} is not an IP address"),
                    })?);
                }
                "initiator" => {
                    config.initiator = Some(value.parse().map_err(|why| HostConfigError::Line { line, why })?);
                }
                "datapath" => {
                    config.datapath = Some(value.parse().map_err(|why| HostConfigError::Line { line, why })?);
                }
                other => {
                    return Err(HostConfigError::Line {
                        line,
                        why: format!("unknown setting {other:?}; known: host_iface, host_traddr, initiator, datapath"),
                    })
                }
            }
        }
        Ok(config)
    }
}

/// This host's DH-HMAC-CHAP keys for `nqn`, from its key files.
///
/// # Errors
/// [`HostConfigError`] for a key file readable by others or not holding a key.
pub fn authentication(host: &HostRoot, nqn: &Nqn) -> Result<Authentication, HostConfigError> {
    let key = |suffix: &str| -> Result<Option<DhchapKey>, HostConfigError> {
        let path = format!("{KEY_DIR}/{nqn}.{suffix}");
        let Some(text) = read_optional(host, &path)? else { return Ok(None) };
        let mode = std::fs::metadata(host.path(&path))
            .map_err(|source| HostConfigError::Io { path: path.clone(), source })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(HostConfigError::KeyFileExposed { path, mode: mode & 0o777 });
        }
        text.trim()
            .parse()
            .map(Some)
            .map_err(|e: crate::nvme::names::InvalidValue| HostConfigError::BadKey { path, why: e.why })
    };
    Ok(Authentication { host_key: key("key")?, ctrl_key: key("ctrl-key")? })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::{authentication, HostConfig, HostConfigError};
    use crate::host::HostRoot;

    const KEY: &str = "DHHC-1:00:ia6zGodOr5SEG2U6ZlzCNX3CoGKlUcO+aHF2Ypw6lSGGKBUq:";

    fn host() -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::at(dir.path());
        std::fs::create_dir_all(host.path("/etc/nvmetcp/dhchap")).unwrap();
        (dir, host)
    }

    #[test]
    fn host_conf_is_optional_and_checked_line_by_line() {
        let (_dir, host) = host();
        assert_eq!(HostConfig::load(&host).unwrap(), HostConfig::default());
        std::fs::write(
            host.path("/etc/nvmetcp/host.conf"),
            "# storage NIC\nhost_iface = eth1\n\nhost_traddr=10.0.0.5 # source\n",
        )
        .unwrap();
        let config = HostConfig::load(&host).unwrap();
        assert_eq!(config.host_iface.unwrap().as_str(), "eth1");
        assert_eq!(config.host_traddr.unwrap().to_string(), "10.0.0.5");
        std::fs::write(host.path("/etc/nvmetcp/host.conf"), "host_iface = eth1\nhost_ifcae = eth2\n").unwrap();
        let err = HostConfig::load(&host).unwrap_err();
        assert!(err.to_string().starts_with("/etc/nvmetcp/host.conf line 2: unknown setting \"host_ifcae\""), "{err}");
        std::fs::write(host.path("/etc/nvmetcp/host.conf"), "initiator = userspace\n").unwrap();
        assert_eq!(HostConfig::load(&host).unwrap().initiator, Some(crate::initiator::InitiatorKind::Userspace));
        std::fs::write(host.path("/etc/nvmetcp/host.conf"), "initiator = spdk\n").unwrap();
        let err = HostConfig::load(&host).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("kernel or userspace"), "{err}");
        std::fs::write(host.path("/etc/nvmetcp/host.conf"), "datapath = engine\n").unwrap();
        assert_eq!(HostConfig::load(&host).unwrap().datapath, Some(super::PlainDatapath::Engine));
        std::fs::write(host.path("/etc/nvmetcp/host.conf"), "datapath = auto\n").unwrap();
        assert_eq!(HostConfig::load(&host).unwrap().datapath, Some(super::PlainDatapath::Auto));
        std::fs::write(host.path("/etc/nvmetcp/host.conf"), "datapath = tapdisk\n").unwrap();
        let err = HostConfig::load(&host).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("auto, blkback or engine"), "{err}");
        std::fs::write(host.path("/etc/nvmetcp/host.conf"), "host_iface = eth1,nqn=x\n").unwrap();
        assert!(matches!(HostConfig::load(&host), Err(HostConfigError::Line { line: 1, .. })));
    }

    #[test]
    fn key_files_must_be_private_and_hold_keys() {
        let (_dir, host) = host();
        let nqn = "nqn.2024-01.io.example:array".parse().unwrap();
        assert_eq!(authentication(&host, &nqn).unwrap(), Default::default());
        let path = host.path("/etc/nvmetcp/dhchap/nqn.2024-01.io.example:array.key");
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = authentication(&host, &nqn).unwrap_err();
        assert!(err.to_string().contains("readable by other users (mode 644)"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(authentication(&host, &nqn).unwrap().host_key.is_some());
        std::fs::write(&path, "not a key").unwrap();
        let err = authentication(&host, &nqn).unwrap_err().to_string();
        assert!(err.contains("does not hold a DH-HMAC-CHAP key") && !err.contains("not a key\""), "{err}");
    }
}
