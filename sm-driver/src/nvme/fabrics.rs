//! `/dev/nvme-fabrics`: the kernel's interface for creating fabrics controllers.
//!
//! One option string is written in a single `write(2)` on a fresh descriptor;
//! on success the kernel answers `instance=N,cntlid=M` on the same descriptor,
//! and the controller is `/sys/class/nvme/nvmeN`. `EALREADY` means a
//! controller for exactly this path exists already: that is success for us.
//! Reading the device without writing lists the option tokens the kernel
//! understands, which tells whether it has DH-HMAC-CHAP at all.
//!
//! [`Fabrics`] is a trait so unit tests can stand in for the kernel; it is
//! `Sync` so one call can connect several paths at once.

use std::io::{Read, Write};

use crate::host::HostRoot;

use super::options::OptionString;

/// The fabrics character device.
pub const FABRICS_DEVICE: &str = "/dev/nvme-fabrics";

/// errno `EALREADY`: "a controller for this path exists".
const EALREADY: i32 = 114;

/// Why the kernel did not create a controller.
#[derive(Debug, thiserror::Error)]
pub enum FabricsError {
    /// A controller for exactly this path exists already.
    #[error("a controller for this path exists already")]
    AlreadyConnected,
    /// `/dev/nvme-fabrics` is missing: `nvme_fabrics` is not loaded.
    #[error("{FABRICS_DEVICE} is missing (the nvme_fabrics module is not loaded)")]
    NoDevice(#[source] std::io::Error),
    /// The kernel refused the connect.
    #[error("{}", describe_errno(*.errno))]
    Refused {
        /// The errno.
        errno: i32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel's answer was not `instance=N,cntlid=M`.
    #[error("unexpected answer from {FABRICS_DEVICE}: {0:?}")]
    BadReply(String),
}

/// What each errno means for an administrator, and what to do.
fn describe_errno(errno: i32) -> &'static str {
    match errno {
        111 => {
            "connection refused: nothing serves NVMe at that address and port (wrong port, or the target port is down)"
        }
        110 | 113 | 101 => "the portal is unreachable from this host: check the storage network, routes and firewall",
        5 => {
            "the target refused the connection: check that the subsystem NQN exists there and that this host's NQN is \
             allowed to access it"
        }
        126 => "authentication failed: the target requires DH-HMAC-CHAP and no key, or no valid key, was given",
        129 | 13 | 1 => {
            "authentication failed: the target rejected this host's DH-HMAC-CHAP key (or we rejected its key)"
        }
        22 => "the kernel rejected the connect options (see dmesg); it may lack an option such as DH-HMAC-CHAP",
        _ => "the kernel could not create the controller (see dmesg)",
    }
}

/// A controller the kernel created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    /// `N` in `nvmeN`.
    pub instance: u32,
}

/// Creates fabrics controllers.
pub trait Fabrics: Send + Sync {
    /// Writes `options` and returns the new controller's instance.
    ///
    /// # Errors
    /// [`FabricsError`], with [`FabricsError::AlreadyConnected`] for `EALREADY`.
    fn create_controller(&self, options: &OptionString) -> Result<Created, FabricsError>;

    /// The option tokens the kernel supports, if it says (`None` on kernels
    /// that do not list them).
    fn supported_options(&self) -> Option<Vec<String>>;
}

/// The real kernel, through `/dev/nvme-fabrics` under a [`HostRoot`].
#[derive(Debug, Clone)]
pub struct KernelFabrics {
    host: HostRoot,
}

impl KernelFabrics {
    /// Uses `host`'s `/dev/nvme-fabrics`.
    #[must_use]
    pub fn new(host: HostRoot) -> Self {
        Self { host }
    }

    fn open(&self) -> Result<std::fs::File, FabricsError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.host.path(FABRICS_DEVICE))
            .map_err(FabricsError::NoDevice)
    }
}

impl Fabrics for KernelFabrics {
    fn create_controller(&self, options: &OptionString) -> Result<Created, FabricsError> {
        let mut device = self.open()?;
        let text = options.expose().as_bytes();
        match device.write(text) {
            Ok(n) if n == text.len() => {}
            Ok(n) => return Err(FabricsError::BadReply(format!("short write of {n} of {} bytes", text.len()))),
            Err(e) if e.raw_os_error() == Some(EALREADY) => return Err(FabricsError::AlreadyConnected),
            Err(source) => return Err(FabricsError::Refused { errno: source.raw_os_error().unwrap_or(0), source }),
        }
        let mut reply = String::new();
        device.read_to_string(&mut reply).map_err(|e| FabricsError::BadReply(e.to_string()))?;
        parse_reply(&reply)
    }

    fn supported_options(&self) -> Option<Vec<String>> {
        let mut reply = String::new();
        self.open().ok()?.read_to_string(&mut reply).ok()?;
        parse_supported_options(&reply)
    }
}

/// Parses `instance=N,cntlid=M`.
fn parse_reply(reply: &str) -> Result<Created, FabricsError> {
    reply
        .trim()
        .split(',')
        .find_map(|field| field.strip_prefix("instance="))
        .and_then(|n| n.parse().ok())
        .map(|instance| Created { instance })
        .ok_or_else(|| FabricsError::BadReply(reply.to_owned()))
}

/// Parses the token list of a read without a prior write.
fn parse_supported_options(reply: &str) -> Option<Vec<String>> {
    let rest = reply.trim().strip_prefix("instance=-1,cntlid=-1,")?;
    Some(rest.split(',').map(|t| t.split('=').next().unwrap_or_default().to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::{parse_reply, parse_supported_options, FabricsError};

    #[test]
    fn replies_are_parsed() {
        assert_eq!(parse_reply("instance=2,cntlid=3\n").unwrap().instance, 2);
        assert!(matches!(parse_reply("cntlid=3"), Err(FabricsError::BadReply(_))));
        // captured from a 6.12 kernel
        let tokens = parse_supported_options(
            "instance=-1,cntlid=-1,transport=%s,traddr=%s,trsvcid=%s,nqn=%s,queue_size=%d,nr_io_queues=%d,\
             reconnect_delay=%d,ctrl_loss_tmo=%d,keep_alive_tmo=%d,hostnqn=%s,host_traddr=%s,host_iface=%s,hostid=%s,\
             duplicate_connect,disable_sqflow,hdr_digest,data_digest,nr_write_queues=%d,nr_poll_queues=%d,tos=%d,\
             keyring=%d,tls_key=%d,fast_io_fail_tmo=%d,discovery,dhchap_secret=%s,dhchap_ctrl_secret=%s,tls\n",
        )
        .unwrap();
        assert!(tokens.iter().any(|t| t == "dhchap_secret") && tokens.iter().any(|t| t == "host_iface"));
        assert_eq!(parse_supported_options("Invalid argument"), None);
    }

    #[test]
    fn errors_tell_the_administrator_what_to_check() {
        let refused = |errno| FabricsError::Refused { errno, source: std::io::Error::from_raw_os_error(errno) };
        assert!(refused(111).to_string().starts_with("connection refused: nothing serves NVMe"));
        assert!(refused(5).to_string().contains("this host's NQN is allowed"));
        assert!(refused(126).to_string().contains("DH-HMAC-CHAP"));
        assert!(refused(113).to_string().contains("unreachable"));
    }
}
