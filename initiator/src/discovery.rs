//! The NVMe/TCP discovery client and the pre-connect probe, on the crate's
//! PDU codec and queue.
//!
//! Why userspace rather than the kernel (a discovery controller created
//! through `/dev/nvme-fabrics`, then a Get Log Page ioctl): no `unsafe`
//! ioctl, no kernel controller left behind, the same on every kernel, and
//! bounded. Each exchange with one endpoint (connect, ICReq/ICResp, Connect,
//! enable, log reads) has **one deadline**: a peer that drips one byte at a
//! time, or splits data into endless PDUs, cannot stretch it. Referrals are
//! followed to a bounded depth and a bounded number of endpoints.
//!
//! The exchange, as the NVMe/TCP and fabrics specifications define it:
//! ICReq → ICResp; Fabrics Connect to the well-known discovery NQN with this
//! host's NQN and ID (targets filter the log by host); Property Set CC.EN and
//! wait for CSTS.RDY; Get Log Page 0x70 (header, entries, header again,
//! retried while the generation counter moves); close.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::command::{self, property, DISCOVERY_NQN};
use crate::config::HostIdentity;
use crate::pdu::{Digests, PduError};
use crate::queue::{self, Queue, QueueError, QueueParams};

/// Default deadline of one exchange with one endpoint.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many referral hops are followed.
const MAX_REFERRAL_DEPTH: usize = 4;
/// How many endpoints one discovery visits at most (the given ones and referrals).
pub const MAX_ENDPOINTS: usize = 16;
/// How often the log is re-read while its generation counter changes.
const MAX_LOG_RETRIES: usize = 6;
/// Largest log read per command.
const LOG_CHUNK: usize = 16 * 1024;
/// Most data PDUs accepted for one discovery command.
pub const MAX_PDUS_PER_COMMAND: u32 = 64;
/// Most log entries read from one controller.
const MAX_ENTRIES: usize = 1024;

/// Why discovery failed at one endpoint.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No TCP connection.
    #[error("discovery controller {portal} is unreachable")]
    Unreachable {
        /// The endpoint.
        portal: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke or timed out mid-exchange.
    #[error("discovery at {portal} failed while {step}")]
    Io {
        /// The endpoint.
        portal: SocketAddr,
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
        portal: SocketAddr,
        /// What we were doing.
        step: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The target returned an NVMe error status.
    #[error("discovery at {portal} failed while {step}: NVMe status {status:#x}{hint}")]
    Status {
        /// The endpoint.
        portal: SocketAddr,
        /// What we were doing.
        step: &'static str,
        /// Status field (SCT << 8 | SC).
        status: u16,
        /// What it likely means.
        hint: &'static str,
    },
}

/// A transport named by a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trtype {
    /// NVMe/RDMA.
    Rdma,
    /// NVMe/TCP.
    Tcp,
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
    /// The entry's transport, when it is one nvmetcp uses.
    #[must_use]
    pub fn transport(&self) -> Option<Trtype> {
        match self.trtype {
            1 => Some(Trtype::Rdma),
            3 => Some(Trtype::Tcp),
            _ => None,
        }
    }

    /// The entry's address and port.
    #[must_use]
    pub fn portal(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.traddr.parse::<IpAddr>().ok()?, self.trsvcid.parse().ok()?))
    }
}

/// An NVM subsystem and every port that lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredSubsystem {
    /// Its NQN.
    pub nqn: String,
    /// Its I/O ports, sorted, without duplicates.
    pub ports: Vec<(Trtype, SocketAddr)>,
}

/// Everything found from a set of discovery endpoints.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Subsystems by NQN.
    pub subsystems: Vec<DiscoveredSubsystem>,
    /// Endpoints that failed (with why); discovery goes on past them.
    pub failures: Vec<DiscoveryError>,
    /// Referrals not followed because the endpoint limit was reached.
    pub referrals_dropped: usize,
}

/// Queries every endpoint (and the referrals they list, at most
/// [`MAX_ENDPOINTS`] in all) and merges what they report. An endpoint that
/// fails is recorded, not fatal. Each exchange gets `timeout`.
#[must_use]
pub fn discover(endpoints: &[SocketAddr], host: &HostIdentity, timeout: Duration) -> Discovery {
    let mut pending: Vec<(SocketAddr, usize)> = endpoints.iter().rev().map(|p| (*p, 0)).collect();
    let mut visited: Vec<SocketAddr> = Vec::new();
    let mut merged: BTreeMap<String, Vec<(Trtype, SocketAddr)>> = BTreeMap::new();
    let mut result = Discovery::default();
    while let Some((portal, depth)) = pending.pop() {
        if visited.contains(&portal) {
            continue;
        }
        if visited.len() >= MAX_ENDPOINTS {
            result.referrals_dropped += 1;
            continue;
        }
        visited.push(portal);
        let entries = match read_log(portal, host, timeout) {
            Ok(entries) => entries,
            Err(error) => {
                result.failures.push(error);
                continue;
            }
        };
        for entry in entries {
            let (Some(transport), Some(port)) = (entry.transport(), entry.portal()) else { continue };
            match entry.subtype {
                SUBTYPE_NVM => {
                    let ports = merged.entry(entry.subnqn.clone()).or_default();
                    if !ports.contains(&(transport, port)) {
                        ports.push((transport, port));
                    }
                }
                SUBTYPE_REFERRAL
                    if transport == Trtype::Tcp
                        && depth < MAX_REFERRAL_DEPTH
                        && !visited.contains(&port)
                        && !pending.iter().any(|(p, _)| *p == port) =>
                {
                    pending.insert(0, (port, depth + 1));
                }
                _ => {}
            }
        }
    }
    result.subsystems = merged
        .into_iter()
        .map(|(nqn, mut ports)| {
            ports.sort();
            DiscoveredSubsystem { nqn, ports }
        })
        .collect();
    result
}

/// Checks that `portal` answers as an NVMe/TCP port: connects and exchanges
/// ICReq/ICResp within `timeout` in all, then closes.
///
/// # Errors
/// [`DiscoveryError::Unreachable`] when no TCP connection is made; another
/// [`DiscoveryError`] when the port does not answer as NVMe/TCP in time.
pub fn probe(portal: SocketAddr, timeout: Duration) -> Result<(), DiscoveryError> {
    let deadline = Instant::now() + timeout;
    initialize(portal, deadline).map(|_| ())
}

fn initialize(portal: SocketAddr, deadline: Instant) -> Result<Queue, DiscoveryError> {
    let step = "waiting for ICResp";
    let stream =
        queue::connect_tcp(portal, deadline).map_err(|source| DiscoveryError::Unreachable { portal, source })?;
    let resp = queue::initialize(&stream, Digests::default(), deadline).map_err(|e| match e {
        PduError::Io(source) => DiscoveryError::Io { portal, step, source },
        other => DiscoveryError::Protocol { portal, step, detail: other.to_string() },
    })?;
    let params = QueueParams {
        qid: 0,
        slots: 4,
        digests: resp.digests,
        cpda: resp.cpda_bytes,
        maxh2cdata: resp.maxh2cdata,
        in_capsule: 8192,
        max_data: LOG_CHUNK,
        max_pdus: MAX_PDUS_PER_COMMAND,
    };
    Queue::start(portal, stream, params).map_err(|source| DiscoveryError::Io { portal, step, source })
}

/// Reads the discovery log of one discovery controller, all within `timeout`.
///
/// # Errors
/// [`DiscoveryError`] naming the endpoint and the step that failed.
pub fn read_log(portal: SocketAddr, host: &HostIdentity, timeout: Duration) -> Result<Vec<LogEntry>, DiscoveryError> {
    let deadline = Instant::now() + timeout;
    let queue = initialize(portal, deadline)?;
    let session = Session { queue: &queue, portal, deadline };
    session.enable(host, DISCOVERY_NQN, "connecting to the discovery controller")?;
    for _ in 0..MAX_LOG_RETRIES {
        let header = session.get_log(0, 1024)?;
        let (generation, count) =
            parse_log_header(&header).ok_or_else(|| session.protocol("reading the log", "short log header"))?;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > MAX_ENTRIES {
            return Err(
                session.protocol("reading the log", format!("{count} entries (at most {MAX_ENTRIES} are read)"))
            );
        }
        let mut body = Vec::with_capacity(count * 1024);
        while body.len() < count * 1024 {
            let want = (count * 1024 - body.len()).min(LOG_CHUNK);
            body.extend(session.get_log(1024 + body.len(), want)?);
        }
        let again = session.get_log(0, 1024)?;
        if parse_log_header(&again).map(|(g, _)| g) == Some(generation) {
            return Ok(body.chunks_exact(1024).map(parse_log_entry).collect());
        }
    }
    Err(session.protocol("reading the log", "the log kept changing (generation counter moved)"))
}

/// The active namespace list (Identify CNS 02h) that subsystem `nqn` at
/// `portal` reports to this host, in NSID order, all within `timeout`: what
/// the kernel's namespace scan of a controller for this host will find. The
/// admin queue is closed again at once; a target that requires DH-HMAC-CHAP
/// refuses the Identify (the caller then has no list).
///
/// # Errors
/// [`DiscoveryError`] naming the portal and the step that failed.
pub fn active_namespaces(
    portal: SocketAddr,
    nqn: &str,
    host: &HostIdentity,
    timeout: Duration,
) -> Result<Vec<u32>, DiscoveryError> {
    let deadline = Instant::now() + timeout;
    let queue = initialize(portal, deadline)?;
    let session = Session { queue: &queue, portal, deadline };
    session.enable(host, nqn, "connecting to the subsystem")?;
    let (_, page) = session.run("reading the active namespace list", command::identify(2, 0), Vec::new(), 4096)?;
    Ok(parse_namespace_list(&page))
}

/// The NSIDs of an Identify active namespace list: ascending, ended by the
/// first zero entry.
fn parse_namespace_list(page: &[u8]) -> Vec<u32> {
    page.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).take_while(|&nsid| nsid != 0).collect()
}

struct Session<'a> {
    queue: &'a Queue,
    portal: SocketAddr,
    deadline: Instant,
}

impl Session<'_> {
    fn protocol(&self, step: &'static str, detail: impl Into<String>) -> DiscoveryError {
        DiscoveryError::Protocol { portal: self.portal, step, detail: detail.into() }
    }

    /// Connects the admin queue to `nqn` (dynamic controller, no keep-alive)
    /// and enables the controller.
    fn enable(&self, host: &HostIdentity, nqn: &str, step: &'static str) -> Result<(), DiscoveryError> {
        let data = command::connect_data(&host.id, 0xffff, nqn, &host.nqn);
        self.run(step, command::connect(0, 32, 0, false), data, 0)?;
        self.run("enabling the controller", command::property_set(property::CC, 0x0046_0001), Vec::new(), 0)?;
        loop {
            let (csts, _) = self.run(
                "waiting for the controller to be ready",
                command::property_get(property::CSTS, false),
                Vec::new(),
                0,
            )?;
            if csts & 0b10 != 0 {
                return Err(self.protocol("waiting for the controller to be ready", "controller fatal status"));
            }
            if csts & 1 == 1 {
                return Ok(());
            }
            if Instant::now() >= self.deadline {
                return Err(self.protocol("waiting for the controller to be ready", "CSTS.RDY never set"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn run(
        &self,
        step: &'static str,
        sqe: command::Sqe,
        data: Vec<u8>,
        expect: usize,
    ) -> Result<(u32, Vec<u8>), DiscoveryError> {
        let portal = self.portal;
        let (cqe, data) = self.queue.call(sqe, data, expect, self.deadline).map_err(|e| match e {
            QueueError::Timeout(_) => DiscoveryError::Io {
                portal,
                step,
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "the exchange's deadline passed"),
            },
            QueueError::Transport(detail) => DiscoveryError::Protocol { portal, step, detail },
        })?;
        let status = cqe.code();
        if status != 0 {
            let hint = match status {
                0x182 | 0x184 => ": the target refused this host (check its allow-list for our host NQN)",
                0x002 => ": the target rejected a field of the request",
                _ => "",
            };
            return Err(DiscoveryError::Status { portal, step, status, hint });
        }
        Ok((cqe.result, data))
    }

    fn get_log(&self, offset: usize, length: usize) -> Result<Vec<u8>, DiscoveryError> {
        let sqe =
            command::get_log_page(0x70, 0, 0, u64::try_from(offset).unwrap_or(0), u32::try_from(length).unwrap_or(0));
        Ok(self.run("reading the discovery log", sqe, Vec::new(), length)?.1)
    }
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

#[cfg(test)]
mod tests {
    use super::{parse_log_entry, parse_log_header, LogEntry};

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
        assert_eq!(parse_log_entry(&raw).portal().unwrap().to_string(), "10.0.0.1:4420");
    }

    #[test]
    fn a_namespace_list_ends_at_its_first_zero() {
        let mut page = vec![0u8; 4096];
        for (i, nsid) in [1u32, 2, 7].iter().enumerate() {
            page[i * 4..i * 4 + 4].copy_from_slice(&nsid.to_le_bytes());
        }
        page[20..24].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(super::parse_namespace_list(&page), [1, 2, 7]);
        assert!(super::parse_namespace_list(&[0u8; 4096]).is_empty());
    }

    #[test]
    fn log_headers_are_bounds_checked() {
        let mut header = vec![0u8; 1024];
        header[0..8].copy_from_slice(&5u64.to_le_bytes());
        header[8..16].copy_from_slice(&2u64.to_le_bytes());
        assert_eq!(parse_log_header(&header), Some((5, 2)));
        assert_eq!(parse_log_header(&header[..10]), None);
    }

    mod against_the_fake_target {
        use std::time::{Duration, Instant};

        use super::super::{active_namespaces, discover, probe, read_log, DiscoveryError, MAX_ENDPOINTS};
        use crate::config::HostIdentity;
        use crate::fake_target::{FakeTarget, Script};

        fn host() -> HostIdentity {
            HostIdentity::parse(
                "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            )
            .unwrap()
        }

        #[test]
        fn the_active_namespace_list_is_read() {
            let target = FakeTarget::start(Script::default());
            let nsids = active_namespaces(target.addr, "nqn.2024-01.io.example:fake", &host(), Duration::from_secs(5));
            assert_eq!(nsids.unwrap(), [1]);
        }

        #[test]
        fn the_log_is_read() {
            let target = FakeTarget::start(Script::default());
            let entries = read_log(target.addr, &host(), Duration::from_secs(5)).unwrap();
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].subnqn, "nqn.2024-01.io.example:array");
        }

        #[test]
        fn a_byte_dripping_peer_cannot_stretch_the_deadline() {
            let target = FakeTarget::start(Script { drip: Some(Duration::from_millis(40)), ..Script::default() });
            let start = Instant::now();
            let err = probe(target.addr, Duration::from_secs(1)).unwrap_err();
            assert!(start.elapsed() < Duration::from_millis(2500), "took {:?}", start.elapsed());
            assert!(matches!(err, DiscoveryError::Io { .. }), "{err}");
            let start = Instant::now();
            assert!(read_log(target.addr, &host(), Duration::from_secs(1)).is_err());
            assert!(start.elapsed() < Duration::from_millis(2500), "took {:?}", start.elapsed());
        }

        #[test]
        fn data_split_into_endless_pdus_is_refused() {
            let target = FakeTarget::start(Script { tiny_log_pdus: true, ..Script::default() });
            let err = read_log(target.addr, &host(), Duration::from_secs(5)).unwrap_err();
            assert!(err.to_string().contains("more than 64 data PDUs for one command"), "{err}");
        }

        #[test]
        fn referrals_are_followed_to_a_bounded_number_of_endpoints() {
            let target = FakeTarget::start(Script { referrals: 40, ..Script::default() });
            let found = discover(&[target.addr], &host(), Duration::from_secs(2));
            assert_eq!(found.subsystems.len(), 1);
            assert_eq!(found.failures.len(), MAX_ENDPOINTS - 1, "the referred ports do not answer");
            assert_eq!(found.referrals_dropped, 40 - (MAX_ENDPOINTS - 1));
        }

        #[test]
        fn a_refused_host_is_told_to_check_the_allow_list() {
            let target = FakeTarget::start(Script { refuse: Some(0x184), ..Script::default() });
            let err = read_log(target.addr, &host(), Duration::from_secs(5)).unwrap_err();
            assert!(err.to_string().contains("check its allow-list for our host NQN"), "{err}");
        }
    }
}
