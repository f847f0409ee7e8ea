//! Kernel uevents that wake the agent before its next poll: a netlink socket
//! on the kernel's uevent group (`NETLINK_KOBJECT_UEVENT`, group 1, every
//! Linux the agent runs on, 4.19 included).
//!
//! The kernel announces an NVMe controller or namespace that appears or goes
//! (`add`/`remove`), a controller that (re)connects (`change` with
//! `NVME_EVENT=connected`, `drivers/nvme/host/core.c` `nvme_start_ctrl`),
//! asynchronous events (`NVME_AEN=…`) and NBD devices coming and going; it
//! sends nothing when a controller goes from `live` to `connecting` and
//! `state` is not pollable, so the poll stays for those. An event is only a
//! hint to look again now: what the agent publishes is always read from
//! sysfs, so a spoofed or missed event changes nothing but timing.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

/// The kernel's uevent multicast group.
const KERNEL_GROUP: u32 = 1;

/// A uevent listener; `None` inside when the socket cannot be had (the agent
/// then just polls).
#[derive(Debug)]
pub struct Uevents {
    socket: Option<OwnedFd>,
}

impl Uevents {
    /// Opens the listener; a failure is logged and leaves polling only.
    #[must_use]
    pub fn open() -> Self {
        let opened = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .and_then(|fd| bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP)).map(|()| fd));
        match opened {
            Ok(fd) => Self { socket: Some(fd) },
            Err(e) => {
                tracing::warn!(error = %e, "no kernel uevents; paths are polled only");
                Self { socket: None }
            }
        }
    }

    /// Whether uevents are received.
    #[must_use]
    pub fn listening(&self) -> bool {
        self.socket.is_some()
    }

    /// Waits up to `timeout` for a uevent about NVMe or NBD devices; `true`
    /// when one came (every pending event is consumed).
    pub fn wait(&self, timeout: Duration) -> bool {
        let Some(fd) = &self.socket else {
            std::thread::sleep(timeout);
            return false;
        };
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(_) => {
                std::thread::sleep(timeout);
                return false;
            }
        }
        let mut buffer = vec![0u8; 8192];
        let mut relevant = false;
        while let Ok(length) = recv(fd.as_raw_fd(), &mut buffer, MsgFlags::MSG_DONTWAIT) {
            if length == 0 {
                break;
            }
            relevant |= buffer.get(..length).is_some_and(is_storage_event);
        }
        relevant
    }
}

/// Whether a kernel uevent (`action@devpath\0KEY=value\0…`) is about an
/// NVMe controller, subsystem or namespace, or an NBD device.
#[must_use]
pub fn is_storage_event(message: &[u8]) -> bool {
    let mut fields = message.split(|b| *b == 0).filter_map(|f| std::str::from_utf8(f).ok());
    let Some(header) = fields.next() else { return false };
    if !header.contains('@') {
        return false; // udev's own messages go to another group; not a kernel event
    }
    fields.any(|field| match field.split_once('=') {
        Some(("SUBSYSTEM", s)) => s == "nvme" || s == "nvme-subsystem",
        Some(("DEVNAME", name)) => {
            let name = name.trim_start_matches("/dev/");
            name.starts_with("nvme") || name.starts_with("nbd")
        }
        Some(("NVME_EVENT" | "NVME_AEN", _)) => true,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::is_storage_event;

    fn event(fields: &[&str]) -> Vec<u8> {
        fields.join("\0").into_bytes()
    }

    #[test]
    fn nvme_and_nbd_events_wake_the_agent_others_do_not() {
        // A controller reconnecting, as nvme_start_ctrl announces it.
        assert!(is_storage_event(&event(&[
            "change@/devices/virtual/nvme-fabrics/ctl/nvme1",
            "ACTION=change",
            "DEVPATH=/devices/virtual/nvme-fabrics/ctl/nvme1",
            "SUBSYSTEM=nvme",
            "NVME_EVENT=connected",
            "MAJOR=238",
            "MINOR=1",
            "DEVNAME=nvme1",
            "SEQNUM=4242",
        ])));
        assert!(is_storage_event(&event(&[
            "remove@/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1",
            "ACTION=remove",
            "SUBSYSTEM=block",
            "DEVNAME=nvme0n1",
            "DEVTYPE=disk",
        ])));
        assert!(is_storage_event(&event(&[
            "change@/devices/virtual/block/nbd1",
            "ACTION=change",
            "SUBSYSTEM=block",
            "DEVNAME=nbd1",
        ])));
        assert!(!is_storage_event(&event(&[
            "add@/devices/virtual/net/vif3.0",
            "ACTION=add",
            "SUBSYSTEM=net",
            "INTERFACE=vif3.0",
        ])));
        assert!(!is_storage_event(&event(&["change@/devices/virtual/block/dm-0", "SUBSYSTEM=block", "DEVNAME=dm-0"])));
        // libudev's messages start with "libudev", not action@devpath.
        assert!(!is_storage_event(b"libudev\0\xfe\xed\xca\xfe SUBSYSTEM=nvme"));
        assert!(!is_storage_event(b""));
    }
}
