//! The NBD transmission phase as the kernel's client speaks it: a 28-byte
//! request header (with the payload after it for writes), a 16-byte simple
//! reply (with the payload after it for reads). Big-endian throughout.
//!
//! Sources: the protocol, `NetworkBlockDevice/nbd doc/proto.md` ("Transmission
//! phase", "Request message", "Simple reply message"); the kernel's client,
//! `drivers/block/nbd.c` (`nbd_send_cmd` packs the command flags into the high
//! half of the 32-bit type word, `NBD_CMD_FLAG_FUA` is `1 << 16` there), and
//! `include/uapi/linux/nbd.h`. The kernel never negotiates structured replies,
//! so only simple replies exist here.

use crate::block::{Geometry, IoError};

/// Magic of every request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of every simple reply.
pub const REPLY_MAGIC: u32 = 0x6744_6698;
/// Size of a request header on the wire.
pub const REQUEST_LEN: usize = 28;
/// Size of a simple reply header on the wire.
pub const REPLY_LEN: usize = 16;

/// Transmission flags the server announces (NBD_ATTR_SERVER_FLAGS).
pub mod flags {
    /// The flags field is meaningful.
    pub const HAS_FLAGS: u64 = 1 << 0;
    /// The export is read-only.
    pub const READ_ONLY: u64 = 1 << 1;
    /// NBD_CMD_FLUSH is understood.
    pub const SEND_FLUSH: u64 = 1 << 2;
    /// NBD_CMD_FLAG_FUA is understood.
    pub const SEND_FUA: u64 = 1 << 3;
    /// NBD_CMD_TRIM is understood.
    pub const SEND_TRIM: u64 = 1 << 5;
    /// NBD_CMD_WRITE_ZEROES is understood (ignored by kernels that lack it).
    pub const SEND_WRITE_ZEROES: u64 = 1 << 6;
    /// Several connections see one consistent export (flush covers all).
    pub const CAN_MULTI_CONN: u64 = 1 << 8;
}

/// The server flags for a device: flush, FUA, trim and write-zeroes exactly
/// where the device does them, and multi-connection (one namespace behind all
/// connections, so a flush on one covers writes completed on any).
#[must_use]
pub fn server_flags(geometry: &Geometry) -> u64 {
    let mut value = flags::HAS_FLAGS | flags::CAN_MULTI_CONN;
    if geometry.flush {
        value |= flags::SEND_FLUSH;
        // The kernel honours FUA only together with a write cache (flush).
        if geometry.fua {
            value |= flags::SEND_FUA;
        }
    }
    if geometry.discard {
        value |= flags::SEND_TRIM;
    }
    if geometry.write_zeroes {
        value |= flags::SEND_WRITE_ZEROES;
    }
    value
}

/// The command of a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// NBD_CMD_READ.
    Read,
    /// NBD_CMD_WRITE (payload follows the header).
    Write,
    /// NBD_CMD_DISC: the client is going away; no reply.
    Disconnect,
    /// NBD_CMD_FLUSH.
    Flush,
    /// NBD_CMD_TRIM.
    Trim,
    /// NBD_CMD_WRITE_ZEROES.
    WriteZeroes,
}

impl Command {
    fn from_wire(value: u16) -> Option<Self> {
        Some(match value {
            0 => Self::Read,
            1 => Self::Write,
            2 => Self::Disconnect,
            3 => Self::Flush,
            4 => Self::Trim,
            6 => Self::WriteZeroes,
            _ => return None,
        })
    }

    /// The wire value.
    #[must_use]
    pub fn to_wire(self) -> u16 {
        match self {
            Self::Read => 0,
            Self::Write => 1,
            Self::Disconnect => 2,
            Self::Flush => 3,
            Self::Trim => 4,
            Self::WriteZeroes => 6,
        }
    }
}

/// Command flag: forced unit access (bit 0 of the 16-bit flags field).
const CMD_FLAG_FUA: u16 = 1 << 0;

/// One request header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// What to do.
    pub command: Command,
    /// Forced unit access (writes).
    pub fua: bool,
    /// The client's opaque handle, echoed in the reply.
    pub handle: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte count (payload length for writes).
    pub len: u32,
}

/// A header the server cannot accept: the connection is broken beyond repair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not a request (the stream is out of step).
    #[error("bad request magic {0:#010x} (expected {REQUEST_MAGIC:#010x})")]
    Magic(u32),
    /// A command this server does not know.
    #[error("unknown NBD command {0}")]
    Command(u16),
}

impl RequestHeader {
    /// Decodes a request header.
    ///
    /// # Errors
    /// A wrong magic or an unknown command.
    pub fn decode(bytes: &[u8; REQUEST_LEN]) -> Result<Self, ProtocolError> {
        let magic = be_u32(&bytes[0..4]);
        if magic != REQUEST_MAGIC {
            return Err(ProtocolError::Magic(magic));
        }
        let flags = be_u16(&bytes[4..6]);
        let kind = be_u16(&bytes[6..8]);
        let command = Command::from_wire(kind).ok_or(ProtocolError::Command(kind))?;
        Ok(Self {
            command,
            fua: flags & CMD_FLAG_FUA != 0,
            handle: be_u64(&bytes[8..16]),
            offset: be_u64(&bytes[16..24]),
            len: be_u32(&bytes[24..28]),
        })
    }

    /// Encodes a request header (the client's side; used by tests).
    #[must_use]
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        let flags = if self.fua { CMD_FLAG_FUA } else { 0 };
        out[4..6].copy_from_slice(&flags.to_be_bytes());
        out[6..8].copy_from_slice(&self.command.to_wire().to_be_bytes());
        out[8..16].copy_from_slice(&self.handle.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset.to_be_bytes());
        out[24..28].copy_from_slice(&self.len.to_be_bytes());
        out
    }
}

/// NBD error values (errno numbers, as the protocol defines them).
pub mod errno {
    /// Input/output error.
    pub const EIO: u32 = 5;
    /// Invalid argument.
    pub const EINVAL: u32 = 22;
    /// Not supported.
    pub const ENOTSUP: u32 = 95;
    /// Shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// The error value a failed request is answered with.
#[must_use]
pub fn error_value(error: &IoError) -> u32 {
    match error {
        IoError::Invalid(_) => errno::EINVAL,
        IoError::NotSupported(_) => errno::ENOTSUP,
        IoError::Media(_) | IoError::NoPath(_) => errno::EIO,
        IoError::Closing => errno::ESHUTDOWN,
        // Answers an old copy on a connection the kernel already declared
        // dead (it ignores the reply: its cookie is stale).
        IoError::Superseded => errno::EIO,
    }
}

/// Encodes a simple reply header.
#[must_use]
pub fn encode_reply(handle: u64, error: u32) -> [u8; REPLY_LEN] {
    let mut out = [0u8; REPLY_LEN];
    out[0..4].copy_from_slice(&REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&handle.to_be_bytes());
    out
}

/// Decodes a simple reply header: (handle, error), or `None` for a wrong magic.
#[must_use]
pub fn decode_reply(bytes: &[u8; REPLY_LEN]) -> Option<(u64, u32)> {
    (be_u32(&bytes[0..4]) == REPLY_MAGIC).then(|| (be_u64(&bytes[8..16]), be_u32(&bytes[4..8])))
}

fn be_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_write_with_fua_decodes() {
        // As nbd_send_cmd builds it: type = NBD_CMD_WRITE | NBD_CMD_FLAG_FUA (1 << 16).
        let mut wire = Vec::new();
        wire.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        wire.extend_from_slice(&(1u32 | (1 << 16)).to_be_bytes());
        wire.extend_from_slice(&0x0000_0001_0000_002au64.to_be_bytes());
        wire.extend_from_slice(&(4096u64 * 3).to_be_bytes());
        wire.extend_from_slice(&8192u32.to_be_bytes());
        let header = RequestHeader::decode(wire.as_slice().try_into().unwrap()).unwrap();
        assert_eq!(
            header,
            RequestHeader { command: Command::Write, fua: true, handle: 0x1_0000_002a, offset: 12288, len: 8192 }
        );
        assert_eq!(header.encode().as_slice(), wire.as_slice());
    }

    #[test]
    fn every_command_round_trips() {
        for command in
            [Command::Read, Command::Write, Command::Disconnect, Command::Flush, Command::Trim, Command::WriteZeroes]
        {
            let header = RequestHeader { command, fua: false, handle: 7, offset: 0, len: 0 };
            assert_eq!(RequestHeader::decode(&header.encode()).unwrap(), header);
        }
    }

    #[test]
    fn a_bad_magic_or_command_is_refused() {
        let mut wire = RequestHeader { command: Command::Read, fua: false, handle: 1, offset: 0, len: 512 }.encode();
        wire[7] = 5; // NBD_CMD_CACHE: never sent by the kernel, not announced
        assert_eq!(RequestHeader::decode(&wire), Err(ProtocolError::Command(5)));
        wire[0] = 0;
        assert!(matches!(RequestHeader::decode(&wire), Err(ProtocolError::Magic(_))));
    }

    #[test]
    fn replies_are_magic_error_handle() {
        let reply = encode_reply(0x0102_0304_0506_0708, errno::EIO);
        assert_eq!(reply, [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(decode_reply(&reply), Some((0x0102_0304_0506_0708, 5)));
    }

    #[test]
    fn flags_follow_the_device() {
        let mut geometry = Geometry {
            block_size: 4096,
            blocks: 1,
            max_transfer: 1 << 20,
            flush: false,
            fua: true,
            discard: false,
            write_zeroes: false,
        };
        assert_eq!(server_flags(&geometry), flags::HAS_FLAGS | flags::CAN_MULTI_CONN);
        geometry.flush = true;
        geometry.discard = true;
        geometry.write_zeroes = true;
        assert_eq!(server_flags(&geometry), 0x16d);
    }

    #[test]
    fn errors_map_to_errno_values() {
        assert_eq!(error_value(&IoError::NoPath("x".into())), 5);
        assert_eq!(error_value(&IoError::Invalid("x".into())), 22);
        assert_eq!(error_value(&IoError::NotSupported("trim")), 95);
    }
}
