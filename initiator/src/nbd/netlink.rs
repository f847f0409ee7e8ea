//! Generic-netlink messages for the kernel's NBD family, encoded and decoded
//! without a socket so every byte is unit-tested.
//!
//! Sources: the family and its attributes, `include/uapi/linux/nbd-netlink.h`
//! (present since Linux 4.12); what the kernel does with them,
//! `drivers/block/nbd.c` (`nbd_genl_connect`, `nbd_genl_reconfigure`,
//! `nbd_genl_disconnect`, `nbd_genl_status`, `nbd_connect_reply`); the framing,
//! `include/uapi/linux/netlink.h` (nlmsghdr, nlattr, NLMSG_ERROR) and
//! `include/uapi/linux/genetlink.h` (genlmsghdr, the `nlctrl` family and
//! CTRL_CMD_GETFAMILY). Attributes the running kernel does not know (4.19
//! lacks NBD_ATTR_BACKEND_IDENTIFIER) are ignored by its non-strict parser
//! (the NBD operations are GENL_DONT_VALIDATE_STRICT on newer kernels).

/// The NBD family's name, resolved to its id through `nlctrl`.
pub const NBD_FAMILY_NAME: &str = "nbd";
const NBD_GENL_VERSION: u8 = 1;

/// Netlink message types and flags (`netlink.h`).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
/// The nested and byte-order bits of an attribute type.
const NLA_TYPE_MASK: u16 = !((1 << 15) | (1 << 14));

/// The controller family (`genetlink.h`).
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// NBD commands (`nbd-netlink.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NbdCommand {
    /// Set a device up with its sockets.
    Connect = 1,
    /// Tear a device down.
    Disconnect = 2,
    /// Replace dead sockets, change timeouts.
    Reconfigure = 3,
    /// Which devices exist and whether they are connected.
    Status = 5,
}

/// NBD attributes (`nbd-netlink.h`).
mod attr {
    pub const INDEX: u16 = 1;
    pub const SIZE_BYTES: u16 = 2;
    pub const BLOCK_SIZE_BYTES: u16 = 3;
    pub const TIMEOUT: u16 = 4;
    pub const SERVER_FLAGS: u16 = 5;
    pub const CLIENT_FLAGS: u16 = 6;
    pub const SOCKETS: u16 = 7;
    pub const DEAD_CONN_TIMEOUT: u16 = 8;
    pub const DEVICE_LIST: u16 = 9;
    pub const BACKEND_IDENTIFIER: u16 = 10;
    pub const SOCK_ITEM: u16 = 1;
    pub const SOCK_FD: u16 = 1;
    pub const DEVICE_ITEM: u16 = 1;
    pub const DEVICE_INDEX: u16 = 1;
    pub const DEVICE_CONNECTED: u16 = 2;
}

/// A value the kernel would take but must not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The block size the kernel accepts: a power of two from 512 to 4096.
    #[error("block size {0} is not a power of two from 512 to 4096")]
    BlockSize(u64),
    /// The size must be a whole number of blocks, and not zero.
    #[error("device size {size} bytes is not a non-zero multiple of the block size {block}")]
    Size {
        /// Bytes.
        size: u64,
        /// Block size.
        block: u64,
    },
    /// At least one socket, at most a sane number.
    #[error("{0} sockets: between 1 and 64 are allowed")]
    Sockets(usize),
    /// The identifier the kernel checks on reconfigure.
    #[error("backend identifier {0:?} must be 1 to 200 printable ASCII characters")]
    Backend(String),
}

/// What NBD_CMD_CONNECT sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSpec {
    /// Ask for this index; `None` lets the kernel pick a free device.
    pub index: Option<u32>,
    /// Device size in bytes.
    pub size_bytes: u64,
    /// Logical block size (the namespace's).
    pub block_size: u64,
    /// Seconds before a request is retried on another connection (0: never).
    pub timeout_secs: u64,
    /// Seconds requests wait for a dead connection to be replaced.
    pub dead_conn_timeout_secs: u64,
    /// Transmission flags (see `proto::server_flags`).
    pub server_flags: u64,
    /// Who serves the device (the SR); newer kernels show it in
    /// `/sys/block/nbdN/backend` and refuse a reconfigure that names another.
    pub backend: String,
    /// The kernel's ends of the socket pairs, one per connection.
    pub socket_fds: Vec<u32>,
}

fn check_backend(backend: &str) -> Result<(), SpecError> {
    if backend.is_empty() || backend.len() > 200 || !backend.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SpecError::Backend(backend.to_owned()));
    }
    Ok(())
}

fn check_sockets(count: usize) -> Result<(), SpecError> {
    if count == 0 || count > 64 {
        return Err(SpecError::Sockets(count));
    }
    Ok(())
}

impl ConnectSpec {
    /// Checks every value before anything reaches the kernel.
    ///
    /// # Errors
    /// The first value out of range.
    pub fn validate(&self) -> Result<(), SpecError> {
        let block = self.block_size;
        if !block.is_power_of_two() || !(512..=4096).contains(&block) {
            return Err(SpecError::BlockSize(block));
        }
        if self.size_bytes == 0 || self.size_bytes % block != 0 {
            return Err(SpecError::Size { size: self.size_bytes, block });
        }
        check_sockets(self.socket_fds.len())?;
        check_backend(&self.backend)
    }
}

/// Attribute payload builder (each attribute padded to 4 bytes).
#[derive(Debug, Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn raw(&mut self, kind: u16, payload: &[u8]) {
        let len = NLA_HDRLEN + payload.len();
        self.0.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.0.resize(align4(self.0.len()), 0);
    }
    fn u32(&mut self, kind: u16, value: u32) {
        self.raw(kind, &value.to_ne_bytes());
    }
    fn u64(&mut self, kind: u16, value: u64) {
        self.raw(kind, &value.to_ne_bytes());
    }
    fn string(&mut self, kind: u16, value: &str) {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.raw(kind, &bytes);
    }
    fn nested(&mut self, kind: u16, inner: &Attrs) {
        self.raw(kind, &inner.0);
    }
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn sockets(fds: &[u32]) -> Attrs {
    let mut list = Attrs::default();
    for fd in fds {
        let mut item = Attrs::default();
        item.u32(attr::SOCK_FD, *fd);
        list.nested(attr::SOCK_ITEM, &item);
    }
    list
}

/// One generic-netlink request: a header, the genl header, the attributes.
fn request(family: u16, seq: u32, cmd: u8, version: u8, attrs: &Attrs) -> Vec<u8> {
    let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.0.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    out.extend_from_slice(&family.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    out.push(cmd);
    out.push(version);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&attrs.0);
    out
}

/// CTRL_CMD_GETFAMILY for a family name.
#[must_use]
pub fn get_family(seq: u32, name: &str) -> Vec<u8> {
    let mut attrs = Attrs::default();
    attrs.string(CTRL_ATTR_FAMILY_NAME, name);
    request(GENL_ID_CTRL, seq, CTRL_CMD_GETFAMILY, 1, &attrs)
}

/// NBD_CMD_CONNECT.
///
/// # Errors
/// A value out of range (nothing is encoded).
pub fn connect(family: u16, seq: u32, spec: &ConnectSpec) -> Result<Vec<u8>, SpecError> {
    spec.validate()?;
    let mut attrs = Attrs::default();
    if let Some(index) = spec.index {
        attrs.u32(attr::INDEX, index);
    }
    attrs.u64(attr::SIZE_BYTES, spec.size_bytes);
    attrs.u64(attr::BLOCK_SIZE_BYTES, spec.block_size);
    attrs.u64(attr::TIMEOUT, spec.timeout_secs);
    attrs.u64(attr::DEAD_CONN_TIMEOUT, spec.dead_conn_timeout_secs);
    attrs.u64(attr::SERVER_FLAGS, spec.server_flags);
    // No DESTROY_ON_DISCONNECT, no DISCONNECT_ON_CLOSE: the device outlives
    // the daemon, so a restarted daemon picks it back up.
    attrs.u64(attr::CLIENT_FLAGS, 0);
    attrs.nested(attr::SOCKETS, &sockets(&spec.socket_fds));
    attrs.string(attr::BACKEND_IDENTIFIER, &spec.backend);
    Ok(request(family, seq, NbdCommand::Connect as u8, NBD_GENL_VERSION, &attrs))
}

/// NBD_CMD_RECONFIGURE: hand the kernel new sockets for its dead ones.
///
/// # Errors
/// A value out of range (nothing is encoded).
pub fn reconfigure(
    family: u16,
    seq: u32,
    index: u32,
    backend: &str,
    dead_conn_timeout_secs: u64,
    fds: &[u32],
) -> Result<Vec<u8>, SpecError> {
    check_sockets(fds.len())?;
    check_backend(backend)?;
    let mut attrs = Attrs::default();
    attrs.u32(attr::INDEX, index);
    attrs.u64(attr::DEAD_CONN_TIMEOUT, dead_conn_timeout_secs);
    attrs.nested(attr::SOCKETS, &sockets(fds));
    attrs.string(attr::BACKEND_IDENTIFIER, backend);
    Ok(request(family, seq, NbdCommand::Reconfigure as u8, NBD_GENL_VERSION, &attrs))
}

/// NBD_CMD_DISCONNECT.
#[must_use]
pub fn disconnect(family: u16, seq: u32, index: u32) -> Vec<u8> {
    let mut attrs = Attrs::default();
    attrs.u32(attr::INDEX, index);
    request(family, seq, NbdCommand::Disconnect as u8, NBD_GENL_VERSION, &attrs)
}

/// NBD_CMD_STATUS of one device, or of all with `None`.
#[must_use]
pub fn status(family: u16, seq: u32, index: Option<u32>) -> Vec<u8> {
    let mut attrs = Attrs::default();
    if let Some(index) = index {
        attrs.u32(attr::INDEX, index);
    }
    request(family, seq, NbdCommand::Status as u8, NBD_GENL_VERSION, &attrs)
}

/// A message the kernel sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// NLMSG_ERROR with 0: the request was done.
    Ack {
        /// Sequence number of the request.
        seq: u32,
    },
    /// NLMSG_ERROR with an errno.
    Error {
        /// Sequence number of the request.
        seq: u32,
        /// The positive errno.
        errno: i32,
    },
    /// A generic-netlink message carrying attributes.
    Data {
        /// Sequence number of the request.
        seq: u32,
        /// The genl command.
        cmd: u8,
        /// The raw attributes.
        attrs: Vec<u8>,
    },
    /// NLMSG_DONE or anything else without meaning here.
    Other {
        /// Sequence number.
        seq: u32,
    },
}

impl Reply {
    /// The sequence number it answers.
    #[must_use]
    pub fn seq(&self) -> u32 {
        match self {
            Self::Ack { seq } | Self::Error { seq, .. } | Self::Data { seq, .. } | Self::Other { seq } => *seq,
        }
    }
}

/// The kernel's answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed netlink reply: {0}")]
pub struct DecodeError(pub &'static str);

fn ne_u16(bytes: &[u8]) -> u16 {
    u16::from_ne_bytes([bytes[0], bytes[1]])
}

fn ne_u32(bytes: &[u8]) -> u32 {
    u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Splits one datagram into its messages.
///
/// # Errors
/// A length that runs past the buffer.
pub fn decode_replies(mut buf: &[u8]) -> Result<Vec<Reply>, DecodeError> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = usize::try_from(ne_u32(&buf[0..4])).map_err(|_| DecodeError("length"))?;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(DecodeError("message length out of bounds"));
        }
        let kind = ne_u16(&buf[4..6]);
        let seq = ne_u32(&buf[8..12]);
        let body = &buf[NLMSG_HDRLEN..len];
        out.push(match kind {
            NLMSG_ERROR => {
                if body.len() < 4 {
                    return Err(DecodeError("short error message"));
                }
                let code = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                if code == 0 {
                    Reply::Ack { seq }
                } else {
                    Reply::Error { seq, errno: code.saturating_neg() }
                }
            }
            NLMSG_DONE => Reply::Other { seq },
            _ if body.len() >= GENL_HDRLEN => Reply::Data { seq, cmd: body[0], attrs: body[GENL_HDRLEN..].to_vec() },
            _ => Reply::Other { seq },
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// Iterates over attributes: (type without flag bits, payload).
fn attributes(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    while buf.len() >= NLA_HDRLEN {
        let len = usize::from(ne_u16(&buf[0..2]));
        if len < NLA_HDRLEN || len > buf.len() {
            return Err(DecodeError("attribute length out of bounds"));
        }
        out.push((ne_u16(&buf[2..4]) & NLA_TYPE_MASK, &buf[NLA_HDRLEN..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

fn find(attrs: &[u8], kind: u16) -> Result<Option<&[u8]>, DecodeError> {
    Ok(attributes(attrs)?.into_iter().find(|(k, _)| *k == kind).map(|(_, v)| v))
}

/// The family id in a CTRL_CMD_GETFAMILY answer.
///
/// # Errors
/// No id attribute, or a malformed one.
pub fn family_id(attrs: &[u8]) -> Result<u16, DecodeError> {
    match find(attrs, CTRL_ATTR_FAMILY_ID)? {
        Some(value) if value.len() >= 2 => Ok(ne_u16(value)),
        _ => Err(DecodeError("no family id")),
    }
}

/// The device index in an NBD_CMD_CONNECT answer.
///
/// # Errors
/// No index attribute, or a malformed one.
pub fn connected_index(attrs: &[u8]) -> Result<u32, DecodeError> {
    match find(attrs, attr::INDEX)? {
        Some(value) if value.len() >= 4 => Ok(ne_u32(value)),
        _ => Err(DecodeError("no device index")),
    }
}

/// One device of an NBD_CMD_STATUS answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStatus {
    /// `nbdN`'s N.
    pub index: u32,
    /// Whether it has a live configuration.
    pub connected: bool,
}

/// The devices in an NBD_CMD_STATUS answer.
///
/// # Errors
/// Malformed attributes.
pub fn device_list(attrs: &[u8]) -> Result<Vec<DeviceStatus>, DecodeError> {
    let Some(list) = find(attrs, attr::DEVICE_LIST)? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (kind, item) in attributes(list)? {
        if kind != attr::DEVICE_ITEM {
            continue;
        }
        let index = match find(item, attr::DEVICE_INDEX)? {
            Some(value) if value.len() >= 4 => ne_u32(value),
            _ => return Err(DecodeError("device item without index")),
        };
        let connected = find(item, attr::DEVICE_CONNECTED)?.is_some_and(|v| v.first().is_some_and(|b| *b != 0));
        out.push(DeviceStatus { index, connected });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ConnectSpec {
        ConnectSpec {
            index: None,
            size_bytes: 1 << 30,
            block_size: 4096,
            timeout_secs: 30,
            dead_conn_timeout_secs: 120,
            server_flags: 0x16d,
            backend: "nvmetcp:sr-1".into(),
            socket_fds: vec![7, 9],
        }
    }

    fn u16s(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    #[test]
    fn get_family_is_a_ctrl_request_with_the_name() {
        let msg = get_family(5, "nbd");
        // nlmsghdr: len 16 + genl 4 + attr (4 + "nbd\0") = 28
        assert_eq!(msg.len(), 28);
        assert_eq!(&msg[0..4], &28u32.to_ne_bytes());
        assert_eq!(&msg[4..6], &u16s(0x10));
        assert_eq!(&msg[6..8], &u16s(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(&msg[8..12], &5u32.to_ne_bytes());
        assert_eq!(&msg[16..20], &[3, 1, 0, 0]);
        assert_eq!(&msg[20..22], &u16s(8));
        assert_eq!(&msg[22..24], &u16s(2));
        assert_eq!(&msg[24..28], b"nbd\0");
    }

    #[test]
    fn connect_carries_every_attribute_and_nested_sockets() {
        let msg = connect(0x1b, 1, &spec()).unwrap();
        assert_eq!(&msg[4..6], &u16s(0x1b));
        assert_eq!(&msg[16..18], &[1, 1]);
        let attrs = attributes(&msg[20..]).unwrap();
        let kinds: Vec<u16> = attrs.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [2, 3, 4, 8, 5, 6, 7, 10]);
        assert_eq!(attrs[0].1, (1u64 << 30).to_ne_bytes());
        assert_eq!(attrs[1].1, 4096u64.to_ne_bytes());
        assert_eq!(attrs[2].1, 30u64.to_ne_bytes());
        assert_eq!(attrs[3].1, 120u64.to_ne_bytes());
        assert_eq!(attrs[4].1, 0x16du64.to_ne_bytes());
        assert_eq!(attrs[5].1, 0u64.to_ne_bytes());
        // [SOCKETS [SOCK_ITEM [SOCK_FD 7]] [SOCK_ITEM [SOCK_FD 9]]]
        let items = attributes(attrs[6].1).unwrap();
        assert_eq!(items.len(), 2);
        for ((kind, item), fd) in items.iter().zip([7u32, 9]) {
            assert_eq!(*kind, 1);
            assert_eq!(attributes(item).unwrap(), vec![(1, &fd.to_ne_bytes()[..])]);
        }
        assert_eq!(attrs[7].1, b"nvmetcp:sr-1\0");
        assert_eq!(msg.len() % 4, 0);
        assert_eq!(usize::try_from(ne_u32(&msg[0..4])).unwrap(), msg.len());
    }

    #[test]
    fn connect_asks_for_an_index_only_when_told() {
        let msg = connect(0x1b, 1, &ConnectSpec { index: Some(3), ..spec() }).unwrap();
        assert_eq!(attributes(&msg[20..]).unwrap()[0], (1, &3u32.to_ne_bytes()[..]));
    }

    #[test]
    fn bad_values_never_reach_the_kernel() {
        for bad in [
            ConnectSpec { block_size: 1000, ..spec() },
            ConnectSpec { block_size: 8192, ..spec() },
            ConnectSpec { size_bytes: 4097, ..spec() },
            ConnectSpec { size_bytes: 0, ..spec() },
            ConnectSpec { socket_fds: vec![], ..spec() },
            ConnectSpec { backend: "sr 1".into(), ..spec() },
            ConnectSpec { backend: String::new(), ..spec() },
        ] {
            assert!(connect(0x1b, 1, &bad).is_err(), "{bad:?}");
        }
        assert!(reconfigure(0x1b, 1, 0, "x\n", 60, &[3]).is_err());
    }

    #[test]
    fn reconfigure_disconnect_and_status_name_the_device() {
        let msg = reconfigure(0x1b, 2, 4, "nvmetcp:sr-1", 120, &[11]).unwrap();
        assert_eq!(msg[16], 3);
        let kinds: Vec<u16> = attributes(&msg[20..]).unwrap().iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [1, 8, 7, 10]);
        let msg = disconnect(0x1b, 3, 4);
        assert_eq!(msg[16], 2);
        assert_eq!(attributes(&msg[20..]).unwrap(), vec![(1, &4u32.to_ne_bytes()[..])]);
        let msg = status(0x1b, 4, None);
        assert_eq!((msg[16], msg.len()), (5, 20));
    }

    fn reply(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + body.len();
        let mut out = Vec::new();
        out.extend_from_slice(&u32::try_from(len).unwrap().to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&77u32.to_ne_bytes());
        out.extend_from_slice(body);
        out.resize(align4(out.len()), 0);
        out
    }

    #[test]
    fn acks_errors_and_data_decode() {
        let mut datagram = Vec::new();
        let mut attrs = Attrs::default();
        attrs.u32(attr::INDEX, 6);
        let mut body = vec![1, 1, 0, 0];
        body.extend_from_slice(&attrs.0);
        datagram.extend(reply(0x1b, 9, &body));
        datagram.extend(reply(NLMSG_ERROR, 9, &[0; 20]));
        datagram.extend(reply(NLMSG_ERROR, 10, &(-16i32).to_ne_bytes()));
        let replies = decode_replies(&datagram).unwrap();
        assert_eq!(replies.len(), 3);
        let Reply::Data { seq: 9, cmd: 1, attrs } = &replies[0] else { panic!("{replies:?}") };
        assert_eq!(connected_index(attrs).unwrap(), 6);
        assert_eq!(replies[1], Reply::Ack { seq: 9 });
        assert_eq!(replies[2], Reply::Error { seq: 10, errno: 16 });
        assert!(decode_replies(&datagram[..20]).is_err());
    }

    #[test]
    fn family_id_and_device_list_decode() {
        let mut attrs = Attrs::default();
        attrs.string(CTRL_ATTR_FAMILY_NAME, "nbd");
        attrs.raw(CTRL_ATTR_FAMILY_ID, &0x22u16.to_ne_bytes());
        assert_eq!(family_id(&attrs.0).unwrap(), 0x22);

        let mut list = Attrs::default();
        for (index, connected) in [(0u32, 1u8), (1, 0)] {
            let mut item = Attrs::default();
            item.u32(attr::DEVICE_INDEX, index);
            item.raw(attr::DEVICE_CONNECTED, &[connected]);
            list.nested(attr::DEVICE_ITEM, &item);
        }
        let mut top = Attrs::default();
        // The kernel marks nests with NLA_F_NESTED: it must be masked off.
        top.raw(attr::DEVICE_LIST | (1 << 15), &list.0);
        assert_eq!(
            device_list(&top.0).unwrap(),
            vec![DeviceStatus { index: 0, connected: true }, DeviceStatus { index: 1, connected: false }]
        );
    }
}
