//! The generic-netlink socket to the kernel's NBD driver: resolve the family
//! through `nlctrl`, then connect, reconfigure, disconnect and ask status.
//! Requests are synchronous: the kernel runs the command in the sender's
//! context (so the socket fds it is given are looked up in this process) and
//! answers with the reply, if any, and then an acknowledgement.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};
use nix::sys::time::TimeVal;

use super::netlink::{self, ConnectSpec, DecodeError, DeviceStatus, Reply, SpecError};

/// How long a request waits for the kernel's answer.
const ANSWER_TIMEOUT_SECS: i64 = 30;

/// What went wrong talking to the kernel's NBD driver.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened or used.
    #[error("generic-netlink socket ({op}): {errno}")]
    Socket {
        /// What was being done.
        op: &'static str,
        /// The system's error.
        errno: Errno,
    },
    /// The `nbd` family is not registered.
    #[error("the kernel has no 'nbd' generic-netlink family: load the NBD driver (modprobe nbd)")]
    FamilyMissing,
    /// The kernel refused the request.
    #[error("NBD {op} refused by the kernel: {errno} ({hint})")]
    Kernel {
        /// The NBD command.
        op: &'static str,
        /// The kernel's errno.
        errno: Errno,
        /// What it usually means.
        hint: &'static str,
    },
    /// A value that must not be sent.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The kernel's answer could not be read.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// No answer in time.
    #[error("NBD {0}: no answer from the kernel in {ANSWER_TIMEOUT_SECS} s")]
    Timeout(&'static str),
}

fn hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM => "CAP_SYS_ADMIN is needed: run as root",
        Errno::EBUSY => "that nbd device is already in use",
        Errno::EINVAL => "the device is unknown, going down or not configured by netlink, or a value was refused",
        Errno::ENOSPC => "no dead connection to replace",
        _ => "see the kernel log (dmesg) for the nbd driver's message",
    }
}

/// An open, resolved channel to the NBD family.
#[derive(Debug)]
pub struct NbdNetlink {
    socket: OwnedFd,
    family: u16,
    seq: AtomicU32,
}

impl NbdNetlink {
    /// Opens a generic-netlink socket and resolves the `nbd` family.
    ///
    /// # Errors
    /// No socket, or no `nbd` family (the module is not loaded).
    pub fn open() -> Result<Self, NetlinkError> {
        let socket =
            socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkGeneric)
                .map_err(|errno| NetlinkError::Socket { op: "socket", errno })?;
        bind(socket.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(|errno| NetlinkError::Socket { op: "bind", errno })?;
        setsockopt(&socket.as_fd(), sockopt::ReceiveTimeout, &TimeVal::new(ANSWER_TIMEOUT_SECS, 0))
            .map_err(|errno| NetlinkError::Socket { op: "SO_RCVTIMEO", errno })?;
        let mut this = Self { socket, family: 0, seq: AtomicU32::new(1) };
        let seq = this.next_seq();
        let answers = match this.transact("family lookup", seq, &netlink::get_family(seq, netlink::NBD_FAMILY_NAME)) {
            Err(NetlinkError::Kernel { errno: Errno::ENOENT, .. }) => return Err(NetlinkError::FamilyMissing),
            other => other?,
        };
        let attrs = answers.first().ok_or(DecodeError("no family answer"))?;
        this.family = netlink::family_id(attrs)?;
        Ok(this)
    }

    fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends one request and returns the attributes of its data answers.
    fn transact(&self, op: &'static str, seq: u32, message: &[u8]) -> Result<Vec<Vec<u8>>, NetlinkError> {
        let fd = self.socket.as_raw_fd();
        send(fd, message, MsgFlags::empty()).map_err(|errno| NetlinkError::Socket { op: "send", errno })?;
        let mut answers = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match recv(fd, &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Err(NetlinkError::Timeout(op)),
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(NetlinkError::Socket { op: "recv", errno }),
            };
            for reply in netlink::decode_replies(&buf[..n])? {
                if reply.seq() != seq {
                    continue; // a late answer to an earlier, timed-out request
                }
                match reply {
                    Reply::Ack { .. } => return Ok(answers),
                    Reply::Error { errno, .. } => {
                        let errno = Errno::from_raw(errno);
                        return Err(NetlinkError::Kernel { op, errno, hint: hint(errno) });
                    }
                    Reply::Data { attrs, .. } => answers.push(attrs),
                    Reply::Other { .. } => {}
                }
            }
        }
    }

    /// NBD_CMD_CONNECT: returns the index of the device set up (`nbdN`).
    ///
    /// # Errors
    /// A bad value, or the kernel refused.
    pub fn connect(&self, spec: &ConnectSpec) -> Result<u32, NetlinkError> {
        let seq = self.next_seq();
        let answers = self.transact("connect", seq, &netlink::connect(self.family, seq, spec)?)?;
        let attrs = answers.first().ok_or(DecodeError("connect answered without a device index"))?;
        Ok(netlink::connected_index(attrs)?)
    }

    /// NBD_CMD_RECONFIGURE: the kernel puts each socket in place of a dead
    /// connection (it ignores sockets beyond the dead ones).
    ///
    /// # Errors
    /// A bad value, or the kernel refused (wrong backend, not set up by netlink).
    pub fn reconfigure(
        &self,
        index: u32,
        backend: &str,
        dead_conn_timeout_secs: u64,
        fds: &[u32],
    ) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let message = netlink::reconfigure(self.family, seq, index, backend, dead_conn_timeout_secs, fds)?;
        self.transact("reconfigure", seq, &message).map(drop)
    }

    /// NBD_CMD_DISCONNECT: outstanding requests fail, the device empties.
    ///
    /// # Errors
    /// The kernel refused.
    pub fn disconnect(&self, index: u32) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        self.transact("disconnect", seq, &netlink::disconnect(self.family, seq, index)).map(drop)
    }

    /// NBD_CMD_STATUS.
    ///
    /// # Errors
    /// The kernel refused, or a malformed answer.
    pub fn status(&self, index: Option<u32>) -> Result<Vec<DeviceStatus>, NetlinkError> {
        let seq = self.next_seq();
        let answers = self.transact("status", seq, &netlink::status(self.family, seq, index))?;
        let mut out = Vec::new();
        for attrs in &answers {
            out.extend(netlink::device_list(attrs)?);
        }
        Ok(out)
    }
}
