//! The one NVMe/TCP PDU codec of the project (NVMe/TCP transport
//! specification; the kernel's `include/linux/nvme-tcp.h`): framing,
//! header and data digests (CRC32C), and the bounds a hostile peer cannot
//! push past. All multi-byte fields are little-endian.
//!
//! Receiving is split in two so the data path can land payload straight in
//! its destination: [`PduReader::next_pdu`] reads and checks one PDU's header
//! (with its digest), then [`PduReader::read_data`] reads its data (with its
//! digest) into a buffer the caller chooses.

use std::io::{self, Read};

/// PDU types.
pub mod kind {
    /// Initialize Connection Request (host to controller).
    pub const IC_REQ: u8 = 0x00;
    /// Initialize Connection Response.
    pub const IC_RESP: u8 = 0x01;
    /// Host to controller termination request.
    pub const H2C_TERM: u8 = 0x02;
    /// Controller to host termination request.
    pub const C2H_TERM: u8 = 0x03;
    /// Command capsule.
    pub const CAPSULE_CMD: u8 = 0x04;
    /// Response capsule.
    pub const CAPSULE_RESP: u8 = 0x05;
    /// Host to controller data.
    pub const H2C_DATA: u8 = 0x06;
    /// Controller to host data.
    pub const C2H_DATA: u8 = 0x07;
    /// Ready to transfer.
    pub const R2T: u8 = 0x09;
}

/// Header digest present.
pub const FLAG_HDGST: u8 = 0x01;
/// Data digest present.
pub const FLAG_DDGST: u8 = 0x02;
/// Last data PDU of a command.
pub const FLAG_LAST: u8 = 0x04;
/// C2HData: the command succeeded and no response capsule follows.
pub const FLAG_SUCCESS: u8 = 0x08;

/// Length of ICReq/ICResp.
pub const IC_LEN: usize = 128;
/// Header length of a command capsule (8 + 64-byte SQE).
pub const CMD_HLEN: usize = 72;
/// Header length of a response capsule, data PDUs, R2T and TermReq.
pub const SHORT_HLEN: usize = 24;

/// What went wrong reading or decoding a PDU.
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    /// The connection broke or timed out.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer sent something the protocol does not allow.
    #[error("{0}")]
    Protocol(String),
    /// The peer ended the connection with a termination request.
    #[error("the target terminated the connection (fatal error status {fes:#x})")]
    Terminated {
        /// Fatal error status.
        fes: u16,
    },
}

fn protocol(detail: impl Into<String>) -> PduError {
    PduError::Protocol(detail.into())
}

/// Which digests the connection negotiated at ICReq/ICResp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    /// CRC32C over each PDU header.
    pub header: bool,
    /// CRC32C over each PDU's data.
    pub data: bool,
}

impl Digests {
    /// Bytes of header digest.
    #[must_use]
    pub fn hdgst_len(self) -> usize {
        if self.header {
            4
        } else {
            0
        }
    }
}

/// One received PDU header.
#[derive(Debug, Clone)]
pub struct Received {
    /// PDU type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// The PDU-specific header (after the 8-byte common header, before any digest).
    pub psh: Vec<u8>,
    /// Bytes of data still to read with [`PduReader::read_data`] (digest excluded).
    pub data_len: usize,
    data_digest: bool,
}

impl Received {
    /// Whether a data digest follows the data (read and checked by
    /// [`PduReader::read_data`]).
    #[must_use]
    pub fn has_data_digest(&self) -> bool {
        self.data_digest
    }

    /// A little-endian u16 of the specific header at `at` (offset in the whole PDU).
    #[must_use]
    pub fn u16_at(&self, at: usize) -> u16 {
        let i = at - 8;
        u16::from_le_bytes([self.psh[i], self.psh[i + 1]])
    }

    /// A little-endian u32 of the specific header at `at` (offset in the whole PDU).
    #[must_use]
    pub fn u32_at(&self, at: usize) -> u32 {
        let i = at - 8;
        u32::from_le_bytes([self.psh[i], self.psh[i + 1], self.psh[i + 2], self.psh[i + 3]])
    }
}

/// Reads PDUs from a byte stream.
pub struct PduReader<R> {
    inner: R,
    digests: Digests,
    max_data: usize,
    scratch: Vec<u8>,
}

impl<R: Read> PduReader<R> {
    /// A reader accepting at most `max_data` bytes of data per PDU.
    pub fn new(inner: R, max_data: usize) -> Self {
        Self { inner, digests: Digests::default(), max_data, scratch: Vec::new() }
    }

    /// Turns on the digests negotiated at ICResp.
    pub fn set_digests(&mut self, digests: Digests) {
        self.digests = digests;
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Reads one PDU header and checks its length fields and header digest.
    /// A termination request is returned as [`PduError::Terminated`].
    ///
    /// # Errors
    /// [`PduError`] on a broken connection or a malformed header.
    pub fn next_pdu(&mut self) -> Result<Received, PduError> {
        let mut ch = [0u8; 8];
        self.inner.read_exact(&mut ch)?;
        let (kind, flags, hlen, pdo) = (ch[0], ch[1], usize::from(ch[2]), usize::from(ch[3]));
        let plen = usize::try_from(u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]])).unwrap_or(usize::MAX);
        let expected_hlen = match kind {
            kind::IC_RESP | kind::IC_REQ => IC_LEN,
            kind::CAPSULE_CMD => CMD_HLEN,
            kind::CAPSULE_RESP | kind::C2H_DATA | kind::H2C_DATA | kind::R2T | kind::C2H_TERM | kind::H2C_TERM => {
                SHORT_HLEN
            }
            other => return Err(protocol(format!("unknown PDU type {other:#x}"))),
        };
        if hlen != expected_hlen {
            return Err(protocol(format!("PDU type {kind:#x} with header length {hlen}, expected {expected_hlen}")));
        }
        let header_digest = self.digests.header && flags & FLAG_HDGST != 0 && kind != kind::IC_RESP;
        if self.digests.header && kind != kind::IC_RESP && kind != kind::C2H_TERM && !header_digest {
            return Err(protocol(format!("PDU type {kind:#x} without the negotiated header digest")));
        }
        let hdgst = if header_digest { 4 } else { 0 };
        if plen < hlen + hdgst || plen > hlen + hdgst + self.max_data + 8 + 255 {
            return Err(protocol(format!("PDU length {plen} out of range")));
        }
        let mut rest = vec![0u8; hlen - 8 + hdgst];
        self.inner.read_exact(&mut rest)?;
        if header_digest {
            let mut crc = crc32c::crc32c(&ch);
            crc = crc32c::crc32c_append(crc, &rest[..hlen - 8]);
            let got = u32::from_le_bytes([rest[hlen - 8], rest[hlen - 7], rest[hlen - 6], rest[hlen - 5]]);
            if got != crc {
                return Err(protocol(format!("header digest mismatch on PDU type {kind:#x}")));
            }
        }
        rest.truncate(hlen - 8);
        let mut received = Received { kind, flags, psh: rest, data_len: 0, data_digest: false };
        if kind == kind::C2H_TERM {
            let fes = received.u16_at(8);
            return Err(PduError::Terminated { fes });
        }
        let consumed = hlen + hdgst;
        if plen > consumed {
            // Data follows, at the data offset (after any alignment padding).
            if pdo < consumed || pdo > plen {
                return Err(protocol(format!("PDU data offset {pdo} out of range (header ends at {consumed})")));
            }
            let data_digest = self.digests.data && flags & FLAG_DDGST != 0;
            let ddgst = if data_digest { 4 } else { 0 };
            let data_len = plen.checked_sub(pdo + ddgst).ok_or_else(|| protocol("PDU shorter than its data digest"))?;
            if data_len > self.max_data {
                return Err(protocol(format!("PDU data of {data_len} bytes exceeds the limit {}", self.max_data)));
            }
            self.skip(pdo - consumed)?;
            received.data_len = data_len;
            received.data_digest = data_digest;
        }
        Ok(received)
    }

    /// Reads the data of `received` into `dst`, which must be exactly
    /// `received.data_len` bytes, and checks its digest.
    ///
    /// # Errors
    /// [`PduError`] on a broken connection or a digest mismatch.
    pub fn read_data(&mut self, received: &Received, dst: &mut [u8]) -> Result<(), PduError> {
        debug_assert_eq!(dst.len(), received.data_len);
        self.inner.read_exact(dst)?;
        if received.data_digest {
            let mut digest = [0u8; 4];
            self.inner.read_exact(&mut digest)?;
            if u32::from_le_bytes(digest) != crc32c::crc32c(dst) {
                return Err(protocol("data digest mismatch"));
            }
        }
        Ok(())
    }

    /// Reads and discards the data of `received` (still checking its digest).
    ///
    /// # Errors
    /// [`PduError`] on a broken connection or a digest mismatch.
    pub fn discard_data(&mut self, received: &Received) -> Result<(), PduError> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(received.data_len, 0);
        let result = self.read_data(received, &mut buf);
        self.scratch = buf;
        result
    }

    fn skip(&mut self, n: usize) -> Result<(), PduError> {
        let mut pad = [0u8; 256];
        let pad = pad.get_mut(..n).ok_or_else(|| protocol("PDU padding too long"))?;
        self.inner.read_exact(pad)?;
        Ok(())
    }
}

/// Appends a PDU: common header, specific header `psh`, header digest, data
/// (aligned to `pda` bytes from the start when given), data digest.
pub fn encode(out: &mut Vec<u8>, kind: u8, flags: u8, psh: &[u8], data: &[u8], digests: Digests, pda: usize) {
    let data_digest = frame(out, kind, flags, psh, data, digests, pda);
    out.extend_from_slice(data);
    if let Some(digest) = data_digest {
        out.extend_from_slice(&digest);
    }
}

/// Appends everything of a PDU that comes before its data (common header,
/// `psh`, header digest, padding to the data offset) and returns the data
/// digest that must follow the data, if one is negotiated: the data itself
/// can then be sent from where it lies, without a copy.
pub fn frame(
    out: &mut Vec<u8>,
    kind: u8,
    flags: u8,
    psh: &[u8],
    data: &[u8],
    digests: Digests,
    pda: usize,
) -> Option<[u8; 4]> {
    frame_head(out, kind, flags, psh, data.len(), digests, pda);
    let with_data_digest = digests.data && !data.is_empty();
    with_data_digest.then(|| crc32c::crc32c(data).to_le_bytes())
}

/// [`frame`] for `data_len` bytes of data sent from elsewhere (a pipe):
/// everything before the data. The caller sends the data digest, if
/// one is negotiated.
pub fn frame_head(out: &mut Vec<u8>, kind: u8, flags: u8, psh: &[u8], data_len: usize, digests: Digests, pda: usize) {
    let hlen = 8 + psh.len();
    let hdgst = digests.hdgst_len();
    let mut flags = flags;
    if digests.header {
        flags |= FLAG_HDGST;
    }
    let with_data_digest = digests.data && data_len > 0;
    if with_data_digest {
        flags |= FLAG_DDGST;
    }
    let mut pdo = 0;
    if data_len > 0 {
        pdo = hlen + hdgst;
        if pda > 1 {
            pdo = pdo.div_ceil(pda) * pda;
        }
    }
    let plen = if data_len == 0 { hlen + hdgst } else { pdo + data_len + if with_data_digest { 4 } else { 0 } };
    let start = out.len();
    out.extend_from_slice(&[kind, flags, u8::try_from(hlen).unwrap_or(u8::MAX), u8::try_from(pdo).unwrap_or(0)]);
    out.extend_from_slice(&u32::try_from(plen).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(psh);
    if digests.header {
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    if data_len > 0 {
        out.resize(start + pdo, 0);
    }
}

/// The 128-byte ICReq: PDU format version 0, host PDU data alignment
/// `hpda` (0's based dwords), requested digests, MAXR2T 0 (one R2T at a time).
#[must_use]
pub fn ic_req(digests: Digests, hpda: u8) -> Vec<u8> {
    let mut psh = [0u8; IC_LEN - 8];
    psh[2] = hpda;
    psh[3] = u8::from(digests.header) | u8::from(digests.data) << 1;
    let mut out = Vec::with_capacity(IC_LEN);
    encode(&mut out, kind::IC_REQ, 0, &psh, &[], Digests::default(), 0);
    out
}

/// What the controller answered at ICResp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcResp {
    /// Controller PDU data alignment in bytes.
    pub cpda_bytes: usize,
    /// Digests the controller turned on.
    pub digests: Digests,
    /// Largest H2CData payload the controller accepts.
    pub maxh2cdata: u32,
}

/// Decodes an ICResp header read by [`PduReader::next_pdu`].
///
/// # Errors
/// [`PduError::Protocol`] when it is not an ICResp or its fields are unusable.
pub fn parse_ic_resp(received: &Received, asked: Digests) -> Result<IcResp, PduError> {
    if received.kind != kind::IC_RESP {
        return Err(protocol(format!("expected ICResp, got PDU type {:#x}", received.kind)));
    }
    if received.u16_at(8) != 0 {
        return Err(protocol(format!("unsupported PDU format version {}", received.u16_at(8))));
    }
    let cpda = received.psh[2];
    let dgst = received.psh[3];
    let digests = Digests { header: dgst & 1 != 0, data: dgst & 2 != 0 };
    if (digests.header && !asked.header) || (digests.data && !asked.data) {
        return Err(protocol("the controller turned on a digest the host did not ask for"));
    }
    let maxh2cdata = received.u32_at(12);
    if maxh2cdata < 4096 || maxh2cdata % 4 != 0 {
        return Err(protocol(format!("MAXH2CDATA {maxh2cdata} is below 4096 or not dword-aligned")));
    }
    Ok(IcResp { cpda_bytes: (usize::from(cpda) + 1) * 4, digests, maxh2cdata })
}

/// A 16-byte completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Command specific result, dword 0.
    pub result: u32,
    /// Dword 1.
    pub result_hi: u32,
    /// Command identifier.
    pub cid: u16,
    /// Status field (phase bit removed): SC bits 0-7, SCT bits 8-10, DNR bit 14.
    pub status: u16,
}

impl Completion {
    /// Status code and type, without the retry bits.
    #[must_use]
    pub fn code(&self) -> u16 {
        self.status & 0x7ff
    }

    /// Do Not Retry.
    #[must_use]
    pub fn dnr(&self) -> bool {
        self.status & 0x4000 != 0
    }
}

/// Decodes the CQE of a CapsuleResp.
#[must_use]
pub fn parse_completion(received: &Received) -> Completion {
    Completion {
        result: received.u32_at(8),
        result_hi: received.u32_at(12),
        cid: received.u16_at(20),
        status: received.u16_at(22) >> 1,
    }
}

/// The fields of a C2HData, H2CData or R2T header: command id, transfer tag,
/// offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Command identifier.
    pub cid: u16,
    /// Transfer tag (R2T and H2CData).
    pub ttag: u16,
    /// Offset of this piece in the command's data.
    pub offset: u32,
    /// Length of this piece.
    pub length: u32,
}

/// Decodes a C2HData or R2T header.
#[must_use]
pub fn parse_data_header(received: &Received) -> DataHeader {
    DataHeader {
        cid: received.u16_at(8),
        ttag: received.u16_at(10),
        offset: received.u32_at(12),
        length: received.u32_at(16),
    }
}

/// The specific header of an H2CData PDU.
#[must_use]
pub fn h2c_data_psh(header: DataHeader) -> [u8; 16] {
    let mut psh = [0u8; 16];
    psh[0..2].copy_from_slice(&header.cid.to_le_bytes());
    psh[2..4].copy_from_slice(&header.ttag.to_le_bytes());
    psh[4..8].copy_from_slice(&header.offset.to_le_bytes());
    psh[8..12].copy_from_slice(&header.length.to_le_bytes());
    psh
}

#[cfg(test)]
mod tests {
    use super::{encode, kind, parse_completion, parse_data_header, Digests, PduError, PduReader, FLAG_LAST};

    fn c2h(digests: Digests, pda: usize, payload: &[u8]) -> Vec<u8> {
        let mut psh = [0u8; 16];
        psh[0..2].copy_from_slice(&7u16.to_le_bytes());
        psh[8..12].copy_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        let mut out = Vec::new();
        encode(&mut out, kind::C2H_DATA, FLAG_LAST, &psh, payload, digests, pda);
        out
    }

    #[test]
    fn data_pdus_round_trip_with_digests_and_alignment() {
        for digests in [Digests::default(), Digests { header: true, data: true }] {
            for pda in [0, 128] {
                let wire = c2h(digests, pda, b"hello world!");
                if pda == 128 {
                    assert_eq!(wire[3], 128, "data offset aligned");
                }
                let mut reader = PduReader::new(wire.as_slice(), 4096);
                reader.set_digests(digests);
                let r = reader.next_pdu().unwrap();
                assert_eq!(parse_data_header(&r).cid, 7);
                let mut data = vec![0u8; r.data_len];
                reader.read_data(&r, &mut data).unwrap();
                assert_eq!(data, b"hello world!");
            }
        }
    }

    #[test]
    fn corrupted_digests_and_lengths_are_refused() {
        let digests = Digests { header: true, data: true };
        let mut wire = c2h(digests, 0, b"payload!");
        let last = wire.len() - 5;
        wire[last] ^= 1;
        let mut reader = PduReader::new(wire.as_slice(), 4096);
        reader.set_digests(digests);
        let r = reader.next_pdu().unwrap();
        let mut data = vec![0u8; r.data_len];
        assert!(reader.read_data(&r, &mut data).unwrap_err().to_string().contains("data digest mismatch"));

        let mut wire = c2h(digests, 0, b"payload!");
        wire[10] ^= 1;
        let mut reader = PduReader::new(wire.as_slice(), 4096);
        reader.set_digests(digests);
        assert!(reader.next_pdu().unwrap_err().to_string().contains("header digest mismatch"));

        let wire = c2h(Digests::default(), 0, &[0u8; 8192]);
        let err = PduReader::new(wire.as_slice(), 4096).next_pdu().unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");

        let huge = [kind::CAPSULE_RESP, 0, 24, 0, 0xff, 0xff, 0xff, 0xff];
        let err = PduReader::new(huge.as_slice(), 4096).next_pdu().unwrap_err();
        assert!(err.to_string().contains("PDU length 4294967295 out of range"), "{err}");

        let wrong_hlen = [kind::CAPSULE_RESP, 0, 72, 0, 72, 0, 0, 0];
        assert!(matches!(PduReader::new(wrong_hlen.as_slice(), 4096).next_pdu(), Err(PduError::Protocol(_))));
    }

    #[test]
    fn completions_decode_status_without_the_phase_bit() {
        let mut psh = [0u8; 16];
        psh[0..4].copy_from_slice(&5u32.to_le_bytes());
        psh[12..14].copy_from_slice(&9u16.to_le_bytes());
        psh[14..16].copy_from_slice(&((0x4000u16 | 0x184) << 1 | 1).to_le_bytes());
        let mut wire = Vec::new();
        encode(&mut wire, kind::CAPSULE_RESP, 0, &psh, &[], Digests::default(), 0);
        let r = PduReader::new(wire.as_slice(), 0).next_pdu().unwrap();
        let c = parse_completion(&r);
        assert_eq!((c.result, c.cid, c.code(), c.dnr()), (5, 9, 0x184, true));
    }
}
