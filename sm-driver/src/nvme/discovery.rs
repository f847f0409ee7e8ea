//! A small userspace NVMe/TCP discovery client.
//!
//! Why userspace rather than the kernel (a discovery controller created
//! through `/dev/nvme-fabrics`, then a Get Log Page ioctl): it needs no
//! `unsafe` ioctl, creates no kernel controller that could be left behind or
//! collide with another tool's, works the same on every kernel that can run
//! the I/O paths, and can be bounded by plain socket timeouts. Discovery over
//! RDMA is not offered: with `transport=rdma`, portals are configured as
//! `portals`.
//!
//! One exchange, as the NVMe/TCP and fabrics specifications define it: ICReq
//! → ICResp; Fabrics Connect to the well-known discovery NQN with this host's
//! NQN and ID (targets filter the log by host); Property Set CC.EN and wait
//! for CSTS.RDY; Get Log Page 0x70 (header, entries, header again, retried
//! while the generation counter moves); close. Referrals to other discovery
//! controllers are followed, depth-limited, and every NVM subsystem entry is
//! collected with all the ports listing it. All fields are little-endian.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::names::{Nqn, Portal, Transport};
use super::options::HostIdentity;

/// Per-operation socket timeout.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many referral hops are followed.
const MAX_REFERRAL_DEPTH: usize = 4;
/// How often the log is re-read while its generation counter changes.
const MAX_LOG_RETRIES: usize = 6;
/// Largest log read per command.
const LOG_CHUNK: usize = 16 * 1024;
/// Largest PDU accepted from a target (bounds memory on hostile input).
const MAX_PDU: usize = 1 << 20;

/// Why discovery failed at one endpoint.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No TCP connection.
    #[error("discovery controller {portal} is unreachable: {source}")]
    Unreachable {
        /// The endpoint.
        portal: Portal,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke or timed out mid-exchange.
    #[error("discovery at {portal} failed while {step}: {source}")]
    Io {
        /// The endpoint.
        portal: Portal,
        /// What we were doing.
        step: &'static str,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The target answered something the protocol does not allow.
    #[error("discovery at {portal} failed while {step}: {detail}")]
    Protocol {
        /// The endpoint.
        portal: Portal,
        /// What we were doing.
        step: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The target returned an NVMe error status.
    #[error("discovery at {portal} failed while {step}: NVMe status {status:#x}{hint}")]
    Status {
        /// The endpoint.
        portal: Portal,
        /// What we were doing.
        step: &'static str,
        /// Status field (SCT << 8 | SC).
        status: u16,
        /// What it likely means.
        hint: &'static str,
    },
}

/// One entry of a discovery log page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// 1 rdma, 3 tcp, …
    pub trtype: u8,
    /// 1 IPv4, 2 IPv6.
    pub adrfam: u8,
    /// 1 referral, 2 NVM subsystem, 3 current discovery subsystem.
    pub subtype: u8,
    /// Target port id.
    pub portid: u16,
    /// Port, as text.
    pub trsvcid: String,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Address, as text.
    pub traddr: String,
}

const SUBTYPE_REFERRAL: u8 = 1;
const SUBTYPE_NVM: u8 = 2;

impl LogEntry {
    fn transport(&self) -> Option<Transport> {
        match self.trtype {
            1 => Some(Transport::Rdma),
            3 => Some(Transport::Tcp),
            _ => None,
        }
    }

    fn portal(&self) -> Option<Portal> {
        Some(Portal { addr: self.traddr.parse().ok()?, port: self.trsvcid.parse().ok()? })
    }
}

/// An NVM subsystem and every port that lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredSubsystem {
    /// Its NQN.
    pub nqn: String,
    /// Its I/O ports (transport, portal), sorted, without duplicates.
    pub ports: Vec<(Transport, Portal)>,
}

/// Everything found from a set of discovery endpoints.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Subsystems by NQN.
    pub subsystems: Vec<DiscoveredSubsystem>,
    /// Endpoints that failed (with why); discovery goes on past them.
    pub failures: Vec<DiscoveryError>,
}

/// Queries every endpoint (and the referrals they list) and merges what they
/// report. An endpoint that fails is recorded, not fatal: the caller decides
/// whether the remaining answers suffice.
#[must_use]
pub fn discover(endpoints: &[Portal], host: &HostIdentity, timeout: Duration) -> Discovery {
    let mut pending: Vec<(Portal, usize)> = endpoints.iter().map(|p| (*p, 0)).collect();
    let mut visited: Vec<Portal> = Vec::new();
    let mut merged: BTreeMap<String, Vec<(Transport, Portal)>> = BTreeMap::new();
    let mut result = Discovery::default();
    while let Some((portal, depth)) = pending.pop() {
        if visited.contains(&portal) {
            continue;
        }
        visited.push(portal);
        let entries = match read_log(portal, host, timeout) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(%portal, %error, "discovery endpoint failed");
                result.failures.push(error);
                continue;
            }
        };
        tracing::debug!(%portal, entries = entries.len(), "discovery log read");
        for entry in entries {
            let (Some(transport), Some(port)) = (entry.transport(), entry.portal()) else { continue };
            match entry.subtype {
                SUBTYPE_NVM => {
                    let ports = merged.entry(entry.subnqn.clone()).or_default();
                    if !ports.contains(&(transport, port)) {
                        ports.push((transport, port));
                    }
                }
                SUBTYPE_REFERRAL if transport == Transport::Tcp && depth < MAX_REFERRAL_DEPTH => {
                    pending.push((port, depth + 1));
                }
                _ => {}
            }
        }
    }
    result.subsystems = merged
        .into_iter()
        .map(|(nqn, mut ports)| {
            ports.sort_by_key(|(t, p)| (t.as_str(), *p));
            DiscoveredSubsystem { nqn, ports }
        })
        .collect();
    result
}

/// Checks that `portal` answers as an NVMe/TCP port: connects and exchanges
/// ICReq/ICResp, then closes. Before asking the kernel to connect, this fails
/// fast (the kernel may wait far longer) and says when something other than
/// NVMe/TCP listens there; unlike a bare TCP connect closed at once, it does
/// not make the target log a failed queue.
///
/// # Errors
/// [`DiscoveryError::Unreachable`] when no TCP connection is made; another
/// [`DiscoveryError`] when the port does not answer as NVMe/TCP.
pub fn probe(portal: Portal, timeout: Duration) -> Result<(), DiscoveryError> {
    let stream = TcpStream::connect_timeout(&portal.socket_addr(), timeout)
        .map_err(|source| DiscoveryError::Unreachable { portal, source })?;
    let mut session = Session { stream, portal, next_cid: 0 };
    session.configure(timeout)?;
    session.initialize()
}

/// Reads the discovery log of one discovery controller.
///
/// # Errors
/// [`DiscoveryError`] naming the endpoint and the step that failed.
pub fn read_log(portal: Portal, host: &HostIdentity, timeout: Duration) -> Result<Vec<LogEntry>, DiscoveryError> {
    let stream = TcpStream::connect_timeout(&portal.socket_addr(), timeout)
        .map_err(|source| DiscoveryError::Unreachable { portal, source })?;
    let mut session = Session { stream, portal, next_cid: 0 };
    session.configure(timeout)?;
    session.initialize()?;
    session.connect(host)?;
    session.enable(timeout)?;
    let mut entries = None;
    for _ in 0..MAX_LOG_RETRIES {
        let header = session.get_log(0, 1024)?;
        let (generation, count) =
            parse_log_header(&header).ok_or_else(|| session.protocol("reading the log", "short log header"))?;
        let count = usize::try_from(count).unwrap_or(usize::MAX).min(4096);
        let mut body = Vec::with_capacity(count * 1024);
        while body.len() < count * 1024 {
            let want = (count * 1024 - body.len()).min(LOG_CHUNK);
            body.extend(session.get_log(1024 + body.len(), want)?);
        }
        let again = session.get_log(0, 1024)?;
        if parse_log_header(&again).map(|(g, _)| g) == Some(generation) {
            entries = Some(body.chunks_exact(1024).map(parse_log_entry).collect());
            break;
        }
    }
    entries.ok_or_else(|| session.protocol("reading the log", "the log kept changing (generation counter moved)"))
}

struct Session {
    stream: TcpStream,
    portal: Portal,
    next_cid: u16,
}

/// PDU types.
const PDU_IC_REQ: u8 = 0x00;
const PDU_IC_RESP: u8 = 0x01;
const PDU_C2H_TERM: u8 = 0x03;
const PDU_CAPSULE_CMD: u8 = 0x04;
const PDU_CAPSULE_RESP: u8 = 0x05;
const PDU_C2H_DATA: u8 = 0x07;
/// C2HData flag: no CapsuleResp follows.
const FLAG_SUCCESS: u8 = 0x08;
/// Fabrics command opcode and types.
const OPC_FABRICS: u8 = 0x7f;
const FCTYPE_PROPERTY_SET: u8 = 0x00;
const FCTYPE_CONNECT: u8 = 0x01;
const FCTYPE_PROPERTY_GET: u8 = 0x04;
const OPC_GET_LOG_PAGE: u8 = 0x02;
/// SGL descriptor types: in-capsule data block; transport data block (0x5, subtype 0xA).
const SGL_IN_CAPSULE: u8 = 0x01;
const SGL_TRANSPORT: u8 = 0x5a;

impl Session {
    fn protocol(&self, step: &'static str, detail: impl Into<String>) -> DiscoveryError {
        DiscoveryError::Protocol { portal: self.portal, step, detail: detail.into() }
    }

    fn io(&self, step: &'static str) -> impl Fn(std::io::Error) -> DiscoveryError + '_ {
        move |source| DiscoveryError::Io { portal: self.portal, step, source }
    }

    fn configure(&mut self, timeout: Duration) -> Result<(), DiscoveryError> {
        let io = self.io("configuring the socket");
        self.stream.set_read_timeout(Some(timeout)).map_err(&io)?;
        self.stream.set_write_timeout(Some(timeout)).map_err(&io)?;
        self.stream.set_nodelay(true).map_err(&io)
    }

    fn initialize(&mut self) -> Result<(), DiscoveryError> {
        let mut request = [0u8; 128];
        request[0] = PDU_IC_REQ;
        request[2] = 128;
        request[4..8].copy_from_slice(&128u32.to_le_bytes());
        self.stream.write_all(&request).map_err(self.io("sending ICReq"))?;
        let (kind, _, _, body) = self.read_pdu("waiting for ICResp")?;
        if kind != PDU_IC_RESP || body.len() < 120 {
            return Err(
                self.protocol("waiting for ICResp", format!("got PDU type {kind:#x} of {} bytes", body.len() + 8))
            );
        }
        if u16::from_le_bytes([body[0], body[1]]) != 0 {
            return Err(self.protocol("initializing", "unsupported PDU format version"));
        }
        Ok(())
    }

    fn connect(&mut self, host: &HostIdentity) -> Result<(), DiscoveryError> {
        let mut data = [0u8; 1024];
        data[..16].copy_from_slice(&uuid_bytes(host.id.as_str()));
        data[16..18].copy_from_slice(&0xffffu16.to_le_bytes());
        put_str(&mut data[256..512], Nqn::DISCOVERY);
        put_str(&mut data[512..768], host.nqn.as_str());
        let mut sqe = self.sqe(OPC_FABRICS);
        sqe[4] = FCTYPE_CONNECT;
        set_sgl(&mut sqe, SGL_IN_CAPSULE, 1024);
        sqe[44..46].copy_from_slice(&31u16.to_le_bytes()); // sqsize, 0's based
        self.execute("connecting to the discovery controller", &sqe, &data, 0)?;
        Ok(())
    }

    fn enable(&mut self, timeout: Duration) -> Result<(), DiscoveryError> {
        let mut set = self.sqe(OPC_FABRICS);
        set[4] = FCTYPE_PROPERTY_SET;
        set_sgl(&mut set, SGL_TRANSPORT, 0);
        set[44..48].copy_from_slice(&0x14u32.to_le_bytes()); // CC
        set[48..56].copy_from_slice(&0x0046_0001u64.to_le_bytes()); // EN, IOSQES 6, IOCQES 4
        self.execute("enabling the controller", &set, &[], 0)?;
        let deadline = Instant::now() + timeout;
        loop {
            let mut get = self.sqe(OPC_FABRICS);
            get[4] = FCTYPE_PROPERTY_GET;
            set_sgl(&mut get, SGL_TRANSPORT, 0);
            get[44..48].copy_from_slice(&0x1cu32.to_le_bytes()); // CSTS
            let (csts, _) = self.execute("waiting for the controller to be ready", &get, &[], 0)?;
            if csts & 0b10 != 0 {
                return Err(self.protocol("waiting for the controller to be ready", "controller fatal status"));
            }
            if csts & 1 == 1 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.protocol("waiting for the controller to be ready", "CSTS.RDY never set"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn get_log(&mut self, offset: usize, length: usize) -> Result<Vec<u8>, DiscoveryError> {
        let mut sqe = self.sqe(OPC_GET_LOG_PAGE);
        let dwords = u32::try_from(length / 4).unwrap_or(0).saturating_sub(1);
        let cdw10 = 0x70 | ((dwords & 0xffff) << 16);
        sqe[40..44].copy_from_slice(&cdw10.to_le_bytes());
        sqe[44..48].copy_from_slice(&(dwords >> 16).to_le_bytes());
        let offset = u64::try_from(offset).unwrap_or(0);
        sqe[48..56].copy_from_slice(&offset.to_le_bytes()); // LPOL, LPOU
        set_sgl(&mut sqe, SGL_TRANSPORT, u32::try_from(length).unwrap_or(0));
        let (_, data) = self.execute("reading the discovery log", &sqe, &[], length)?;
        Ok(data)
    }

    /// A 64-byte submission queue entry with opcode, SGL flag and a fresh CID.
    fn sqe(&mut self, opcode: u8) -> [u8; 64] {
        let mut sqe = [0u8; 64];
        sqe[0] = opcode;
        sqe[1] = 0x40; // PSDT: SGL
        self.next_cid = self.next_cid.wrapping_add(1);
        sqe[2..4].copy_from_slice(&self.next_cid.to_le_bytes());
        sqe
    }

    /// Sends a command capsule (with optional in-capsule data) and collects
    /// returned data up to `expect` bytes and the completion's result dword.
    fn execute(
        &mut self,
        step: &'static str,
        sqe: &[u8; 64],
        data: &[u8],
        expect: usize,
    ) -> Result<(u32, Vec<u8>), DiscoveryError> {
        let total = 72 + data.len();
        let mut pdu = Vec::with_capacity(total);
        pdu.extend_from_slice(&[PDU_CAPSULE_CMD, 0, 72, if data.is_empty() { 0 } else { 72 }]);
        pdu.extend_from_slice(&u32::try_from(total).unwrap_or(0).to_le_bytes());
        pdu.extend_from_slice(sqe);
        pdu.extend_from_slice(data);
        self.stream.write_all(&pdu).map_err(self.io(step))?;
        let cid = [sqe[2], sqe[3]];
        let mut received = vec![0u8; expect];
        loop {
            let (kind, flags, data_offset, body) = self.read_pdu(step)?;
            match kind {
                PDU_C2H_DATA => {
                    let (offset, length) =
                        parse_c2h_data(&body).ok_or_else(|| self.protocol(step, "short C2HData header"))?;
                    let start = data_offset.saturating_sub(8).max(16);
                    let payload = body
                        .get(start..start + length)
                        .ok_or_else(|| self.protocol(step, "C2HData shorter than announced"))?;
                    let slot = received
                        .get_mut(offset..offset + length)
                        .ok_or_else(|| self.protocol(step, "C2HData outside the requested range"))?;
                    slot.copy_from_slice(payload);
                    if flags & FLAG_SUCCESS != 0 {
                        return Ok((0, received));
                    }
                }
                PDU_CAPSULE_RESP => {
                    let cqe = body.get(..16).ok_or_else(|| self.protocol(step, "short completion"))?;
                    if cqe[12..14] != cid {
                        return Err(self.protocol(step, "completion for another command"));
                    }
                    let status = u16::from_le_bytes([cqe[14], cqe[15]]) >> 1 & 0x7ff;
                    if status != 0 {
                        let hint = match status {
                            0x182 | 0x184 => ": the target refused this host (check its allow-list for our host NQN)",
                            0x002 => ": the target rejected a field of the request",
                            _ => "",
                        };
                        return Err(DiscoveryError::Status { portal: self.portal, step, status, hint });
                    }
                    let result = u32::from_le_bytes([cqe[0], cqe[1], cqe[2], cqe[3]]);
                    return Ok((result, received));
                }
                PDU_C2H_TERM => return Err(self.protocol(step, "the target terminated the connection")),
                other => return Err(self.protocol(step, format!("unexpected PDU type {other:#x}"))),
            }
        }
    }

    /// Reads one PDU: returns its type, flags, data offset and everything
    /// after the 8-byte common header.
    fn read_pdu(&mut self, step: &'static str) -> Result<(u8, u8, usize, Vec<u8>), DiscoveryError> {
        let mut header = [0u8; 8];
        self.stream.read_exact(&mut header).map_err(self.io(step))?;
        let length = usize::try_from(u32::from_le_bytes([header[4], header[5], header[6], header[7]])).unwrap_or(0);
        if !(8..=MAX_PDU).contains(&length) {
            return Err(self.protocol(step, format!("PDU length {length} out of range")));
        }
        let mut body = vec![0u8; length - 8];
        self.stream.read_exact(&mut body).map_err(self.io(step))?;
        Ok((header[0], header[1], usize::from(header[3]), body))
    }
}

/// Sets the SQE's data pointer as an SGL descriptor.
fn set_sgl(sqe: &mut [u8; 64], kind: u8, length: u32) {
    sqe[32..36].copy_from_slice(&length.to_le_bytes());
    sqe[39] = kind;
}

/// `(data offset, data length)` of a C2HData PDU body (after the common header).
fn parse_c2h_data(body: &[u8]) -> Option<(usize, usize)> {
    let offset = u32::from_le_bytes(body.get(4..8)?.try_into().ok()?);
    let length = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?);
    Some((usize::try_from(offset).ok()?, usize::try_from(length).ok()?))
}

/// `(generation counter, number of records)` of a log page header.
fn parse_log_header(header: &[u8]) -> Option<(u64, u64)> {
    Some((
        u64::from_le_bytes(header.get(0..8)?.try_into().ok()?),
        u64::from_le_bytes(header.get(8..16)?.try_into().ok()?),
    ))
}

/// Decodes one 1024-byte log entry; strings are fixed-width, NUL or space padded.
fn parse_log_entry(entry: &[u8]) -> LogEntry {
    let text = |range: std::ops::Range<usize>| {
        let raw = &entry[range];
        let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(&raw[..end]).trim().to_owned()
    };
    LogEntry {
        trtype: entry[0],
        adrfam: entry[1],
        subtype: entry[2],
        portid: u16::from_le_bytes([entry[4], entry[5]]),
        trsvcid: text(32..64),
        subnqn: text(256..512),
        traddr: text(512..768),
    }
}

fn put_str(field: &mut [u8], text: &str) {
    let bytes = text.as_bytes();
    let n = bytes.len().min(field.len() - 1);
    field[..n].copy_from_slice(&bytes[..n]);
}

/// The 16 bytes of a dashed UUID (validated by `HostId`).
fn uuid_bytes(uuid: &str) -> [u8; 16] {
    let hex: Vec<u8> = uuid.bytes().filter(u8::is_ascii_hexdigit).collect();
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).take(16).enumerate() {
        let digit = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok()).unwrap_or(0);
        out[i] = digit(pair[0]) << 4 | digit(pair[1]);
    }
    out
}

#[cfg(test)]
mod fake_target;

#[cfg(test)]
mod tests {
    use super::{parse_c2h_data, parse_log_entry, parse_log_header, uuid_bytes, LogEntry};

    /// A log entry laid out as nvmet formats it.
    fn entry(trtype: u8, subtype: u8, port: &str, nqn: &str, addr: &str) -> Vec<u8> {
        let mut e = vec![0u8; 1024];
        e[0] = trtype;
        e[1] = 1;
        e[2] = subtype;
        e[4..6].copy_from_slice(&7u16.to_le_bytes());
        e[32..32 + port.len()].copy_from_slice(port.as_bytes());
        for b in &mut e[32 + port.len()..64] {
            *b = b' ';
        }
        e[256..256 + nqn.len()].copy_from_slice(nqn.as_bytes());
        e[512..512 + addr.len()].copy_from_slice(addr.as_bytes());
        e
    }

    #[test]
    fn log_entries_decode_with_padding_trimmed() {
        let raw = entry(3, 2, "4420", "nqn.2024-01.io.example:array", "10.0.0.1");
        assert_eq!(
            parse_log_entry(&raw),
            LogEntry {
                trtype: 3,
                adrfam: 1,
                subtype: 2,
                portid: 7,
                trsvcid: "4420".into(),
                subnqn: "nqn.2024-01.io.example:array".into(),
                traddr: "10.0.0.1".into()
            }
        );
        let entry = parse_log_entry(&raw);
        assert_eq!(entry.portal().unwrap().to_string(), "10.0.0.1:4420");
    }

    #[test]
    fn headers_and_pdus_are_bounds_checked() {
        let mut header = vec![0u8; 1024];
        header[0..8].copy_from_slice(&5u64.to_le_bytes());
        header[8..16].copy_from_slice(&2u64.to_le_bytes());
        assert_eq!(parse_log_header(&header), Some((5, 2)));
        assert_eq!(parse_log_header(&header[..10]), None);
        let mut c2h = vec![0u8; 16];
        c2h[4..8].copy_from_slice(&1024u32.to_le_bytes());
        c2h[8..12].copy_from_slice(&512u32.to_le_bytes());
        assert_eq!(parse_c2h_data(&c2h), Some((1024, 512)));
        assert_eq!(parse_c2h_data(&c2h[..6]), None);
    }

    #[test]
    fn host_ids_are_sent_as_binary_uuids() {
        assert_eq!(
            uuid_bytes("1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
            [0x1b, 0x4e, 0x28, 0xba, 0x2f, 0xa1, 0x11, 0xd2, 0x88, 0x3f, 0x00, 0x16, 0xd3, 0xcc, 0xa4, 0x27]
        );
    }
}
