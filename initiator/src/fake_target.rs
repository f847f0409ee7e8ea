//! A scripted NVMe/TCP target on loopback, for unit tests: it serves a
//! discovery log and one namespace on an in-memory disk, and can be told to
//! misbehave in the ways the kernel target cannot be made to (drip bytes,
//! split data into many PDUs, reorder completions, send a garbage PDU).

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, clippy::expect_used)] // test fixture: sizes here are small and known

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{HostIdentity, IoPolicy, MultipathConfig, NamespaceIdentity, TransportOptions};
use crate::pdu::{self, kind, Digests, PduReader, FLAG_LAST, FLAG_SUCCESS};

/// A multipath configuration for namespace 1 of `targets`: two I/O queues
/// of 8 slots per path, reconnected every second.
pub fn config(targets: &[&FakeTarget]) -> MultipathConfig {
    MultipathConfig {
        subsystem_nqn: "nqn.2024-01.io.example:fake".into(),
        namespace: NamespaceIdentity { nsid: 1, uuid: Some([7; 16]) },
        portals: targets.iter().map(|t| t.addr).collect(),
        host: HostIdentity::parse(
            "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        )
        .unwrap(),
        auth: None,
        iopolicy: IoPolicy::Numa,
        transport: TransportOptions {
            nr_io_queues: Some(2),
            queue_size: 8,
            reconnect_delay: Duration::from_secs(1),
            ..TransportOptions::default()
        },
    }
}

/// How the target behaves.
#[derive(Clone)]
pub struct Script {
    /// Send ICResp one byte at a time, this far apart.
    pub drip: Option<Duration>,
    /// Split C2H data into pieces of this many bytes (0: one PDU).
    pub c2h_piece: usize,
    /// Ask for write data with one R2T per this many bytes (0: one R2T).
    pub r2t_piece: usize,
    /// In-capsule data the I/O queues accept, in bytes.
    pub in_capsule: u32,
    /// Answer I/O commands in pairs, the second first.
    pub reorder: bool,
    /// Drop the connection once an H2CData header has come, before taking
    /// its data: a path that dies in the middle of a write's data.
    pub die_mid_h2c: bool,
    /// Send a read's data in one C2HData PDU with SUCCESS, as Linux nvmet
    /// does when SQ flow control is off.
    pub whole_c2h: bool,
    /// After this many I/O commands, answer with a PDU of unknown type.
    pub bad_pdu_after: Option<usize>,
    /// Discovery log: referral entries to 127.0.0.1 ports 1.. .
    pub referrals: usize,
    /// Discovery log: this many C2H PDUs of 4 bytes for every log read.
    pub tiny_log_pdus: bool,
    /// Logical block size (log2).
    pub lbads: u8,
    /// Blocks.
    pub blocks: u64,
    /// ANA state reported for group 1 (1 optimized, 2 non-optimized, 3 inaccessible).
    pub ana_state: Arc<Mutex<u8>>,
    /// Namespace UUID.
    pub uuid: [u8; 16],
    /// Refuse Connect with this status.
    pub refuse: Option<u16>,
    /// A disk shared with another target (two paths to one namespace).
    pub disk: Option<Arc<Mutex<Vec<u8>>>>,
    /// Once set, another namespace sits at the NSID: Identify shows this
    /// UUID, and a held Asynchronous Event Request completes with a
    /// namespace-attribute notice at the next admin command.
    pub swapped_uuid: Arc<Mutex<Option<[u8; 16]>>>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            drip: None,
            c2h_piece: 0,
            r2t_piece: 0,
            in_capsule: 8192,
            reorder: false,
            die_mid_h2c: false,
            whole_c2h: false,
            bad_pdu_after: None,
            referrals: 0,
            tiny_log_pdus: false,
            lbads: 9,
            blocks: 2048,
            ana_state: Arc::new(Mutex::new(1)),
            uuid: [7; 16],
            refuse: None,
            disk: None,
            swapped_uuid: Arc::new(Mutex::new(None)),
        }
    }
}

/// A running fake target.
#[allow(dead_code)] // read by the queue tests
pub struct FakeTarget {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The disk.
    pub disk: Arc<Mutex<Vec<u8>>>,
    /// I/O commands served.
    pub io_commands: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Every write that reached the disk: its byte offset and its first byte.
    pub writes: Arc<Mutex<Vec<(usize, u8)>>>,
    /// While set, the target is unreachable: connections are closed at once.
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    listener: Option<TcpListener>,
}

impl FakeTarget {
    /// Starts serving `script`.
    pub fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let disk = script
            .disk
            .clone()
            .unwrap_or_else(|| Arc::new(Mutex::new(vec![0u8; (script.blocks << script.lbads) as usize])));
        let io_commands = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let l = listener.try_clone().unwrap();
        let (d, n, c) = (Arc::clone(&disk), Arc::clone(&io_commands), Arc::clone(&connections));
        let (w, is_down, o) = (Arc::clone(&writes), Arc::clone(&down), Arc::clone(&open));
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(stream) = stream else { return };
                if is_down.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                c.fetch_add(1, Ordering::SeqCst);
                o.lock().unwrap().push(stream.try_clone().unwrap());
                let (script, d, n, w) = (script.clone(), Arc::clone(&d), Arc::clone(&n), Arc::clone(&w));
                std::thread::spawn(move || {
                    let _ = Conn {
                        stream,
                        script,
                        disk: d,
                        io: n,
                        writes: w,
                        digests: Digests::default(),
                        qid: 0,
                        held: None,
                        aer: None,
                        sqflow_disabled: false,
                        backlog: std::collections::VecDeque::new(),
                    }
                    .serve();
                });
            }
        });
        Self { addr, disk, io_commands, connections, writes, down, open, listener: Some(listener) }
    }

    /// Cuts every connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for FakeTarget {
    fn drop(&mut self) {
        // Unblock the accept loop: connect once after closing the listener.
        drop(self.listener.take());
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

struct Conn {
    stream: TcpStream,
    script: Script,
    disk: Arc<Mutex<Vec<u8>>>,
    io: Arc<AtomicUsize>,
    writes: Arc<Mutex<Vec<(usize, u8)>>>,
    digests: Digests,
    qid: u16,
    held: Option<Vec<u8>>,
    /// The Asynchronous Event Request held (admin queue).
    aer: Option<[u8; 64]>,
    sqflow_disabled: bool,
    /// Commands that arrived while the data of another was being collected
    /// (a host may send capsules between its H2CData PDUs).
    backlog: std::collections::VecDeque<([u8; 64], Vec<u8>)>,
}

type R = std::io::Result<()>;

impl Conn {
    fn serve(&mut self) -> R {
        let mut icreq = [0u8; 128];
        self.stream.read_exact(&mut icreq)?;
        self.digests = Digests { header: icreq[11] & 1 != 0, data: icreq[11] & 2 != 0 };
        let mut psh = [0u8; 120];
        psh[3] = icreq[11];
        psh[4..8].copy_from_slice(&8192u32.to_le_bytes());
        let mut resp = Vec::new();
        pdu::encode(&mut resp, kind::IC_RESP, 0, &psh, &[], Digests::default(), 0);
        if let Some(gap) = self.script.drip {
            for b in resp {
                self.stream.write_all(&[b])?;
                std::thread::sleep(gap);
            }
        } else {
            self.stream.write_all(&resp)?;
        }
        let mut reader = PduReader::new(self.stream.try_clone()?, 1 << 21);
        reader.set_digests(self.digests);
        loop {
            if let Some((sqe, data)) = self.backlog.pop_front() {
                self.command(&mut reader, &sqe, data)?;
                continue;
            }
            let Ok(r) = reader.next_pdu() else { return Ok(()) };
            if r.kind != kind::CAPSULE_CMD {
                return Ok(());
            }
            let mut sqe = [0u8; 64];
            sqe.copy_from_slice(&r.psh[..64]);
            let mut data = vec![0u8; r.data_len];
            if reader.read_data(&r, &mut data).is_err() {
                return Ok(());
            }
            self.command(&mut reader, &sqe, data)?;
        }
    }

    fn send(&mut self, kind: u8, flags: u8, psh: &[u8], data: &[u8]) -> R {
        let mut out = Vec::new();
        pdu::encode(&mut out, kind, flags, psh, data, self.digests, 0);
        self.stream.write_all(&out)
    }

    fn respond(&mut self, sqe: &[u8; 64], status: u16, dw0: u32) -> R {
        let mut cqe = [0u8; 16];
        cqe[0..4].copy_from_slice(&dw0.to_le_bytes());
        cqe[8..10].copy_from_slice(&self.qid.to_le_bytes());
        cqe[12..14].copy_from_slice(&sqe[2..4]);
        cqe[14..16].copy_from_slice(&(status << 1).to_le_bytes());
        let mut out = Vec::new();
        pdu::encode(&mut out, kind::CAPSULE_RESP, 0, &cqe, &[], self.digests, 0);
        if self.script.reorder && self.qid > 0 && status == 0 && sqe[0] <= 0x02 {
            if let Some(first) = self.held.take() {
                self.stream.write_all(&out)?;
                return self.stream.write_all(&first);
            }
            self.held = Some(out);
            return Ok(());
        }
        self.stream.write_all(&out)
    }

    fn c2h(&mut self, sqe: &[u8; 64], data: &[u8], piece: usize) -> R {
        let piece = if piece == 0 { data.len().max(1) } else { piece };
        let mut offset = 0;
        while offset < data.len() {
            let n = piece.min(data.len() - offset);
            let mut psh = [0u8; 16];
            psh[0..2].copy_from_slice(&sqe[2..4]);
            psh[4..8].copy_from_slice(&(offset as u32).to_le_bytes());
            psh[8..12].copy_from_slice(&(n as u32).to_le_bytes());
            let flags = if offset + n == data.len() { FLAG_LAST } else { 0 };
            self.send(kind::C2H_DATA, flags, &psh, &data[offset..offset + n])?;
            offset += n;
        }
        Ok(())
    }

    fn command(&mut self, reader: &mut PduReader<TcpStream>, sqe: &[u8; 64], data: Vec<u8>) -> R {
        let u32_at = |at: usize| u32::from_le_bytes(sqe[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(sqe[at..at + 8].try_into().unwrap());
        let length = u32_at(32) as usize;
        if self.qid == 0 && self.script.swapped_uuid.lock().unwrap().is_some() {
            if let Some(aer) = self.aer.take() {
                // Notice (type 2), namespace attribute changed (info 0), log page 04h.
                self.respond(&aer, 0, 0x0004_0002)?;
            }
        }
        match (sqe[0], sqe[4]) {
            (0x7f, 0x01) => {
                self.qid = u16::from_le_bytes([sqe[42], sqe[43]]);
                self.sqflow_disabled = sqe[46] & 0x04 != 0;
                if let Some(status) = self.script.refuse {
                    return self.respond(sqe, status, 0);
                }
                self.respond(sqe, 0, 1)
            }
            (0x7f, 0x04) => {
                let dw0 = match u32_at(44) {
                    0x1c => 1,     // CSTS.RDY
                    0x00 => 0x3ff, // CAP: MQES 1023, TO 0
                    _ => 0,
                };
                self.respond(sqe, 0, dw0)
            }
            (0x7f, _) | (0x18, _) => self.respond(sqe, 0, 0),
            (0x09, _) if self.qid == 0 => self.respond(sqe, 0, 0x0003_0003), // 4 queues of each
            (0x0c, _) => {
                self.aer = Some(*sqe); // held until an event
                Ok(())
            }
            (0x06, _) => {
                let page = self.identify(u32_at(40) as u8);
                self.c2h(sqe, &page[..length.min(4096)], self.script.c2h_piece)?;
                self.respond(sqe, 0, 0)
            }
            (0x02, _) if self.qid == 0 => {
                let lid = (u32_at(40) & 0xff) as u8;
                let offset = u64_at(48) as usize;
                let page = if lid == 0x70 { self.discovery_log() } else { self.ana_log() };
                let mut data = page.get(offset..).unwrap_or(&[]).to_vec();
                data.resize(length, 0);
                let piece = if self.script.tiny_log_pdus { 4 } else { self.script.c2h_piece };
                self.c2h(sqe, &data, piece)?;
                self.respond(sqe, 0, 0)
            }
            (op, _) => self.io(reader, sqe, op, data),
        }
    }

    fn io(&mut self, reader: &mut PduReader<TcpStream>, sqe: &[u8; 64], op: u8, data: Vec<u8>) -> R {
        let n = self.io.fetch_add(1, Ordering::SeqCst) + 1;
        if self.script.bad_pdu_after.is_some_and(|after| n > after) {
            return self
                .stream
                .write_all(&[0x42, 0, 24, 0, 24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        let lba = u64::from_le_bytes(sqe[40..48].try_into().unwrap()) as usize;
        let count = (u32::from_le_bytes(sqe[48..52].try_into().unwrap()) & 0xffff) as usize + 1;
        let bs = 1usize << self.script.lbads;
        let (start, len) = (lba * bs, count * bs);
        match op {
            0x02 => {
                let bytes = self.disk.lock().unwrap()[start..start + len].to_vec();
                if self.sqflow_disabled && self.script.whole_c2h {
                    let mut psh = [0u8; 16];
                    psh[0..2].copy_from_slice(&sqe[2..4]);
                    psh[8..12].copy_from_slice(&(len as u32).to_le_bytes());
                    return self.send(kind::C2H_DATA, FLAG_LAST | FLAG_SUCCESS, &psh, &bytes);
                }
                if self.sqflow_disabled && !self.script.reorder {
                    // The last C2HData carries SUCCESS; no response capsule follows.
                    let (head, last) = bytes.split_at(len - bs);
                    self.c2h(sqe, head, self.script.c2h_piece)?;
                    let mut psh = [0u8; 16];
                    psh[0..2].copy_from_slice(&sqe[2..4]);
                    psh[4..8].copy_from_slice(&(head.len() as u32).to_le_bytes());
                    psh[8..12].copy_from_slice(&(bs as u32).to_le_bytes());
                    return self.send(kind::C2H_DATA, FLAG_LAST | FLAG_SUCCESS, &psh, last);
                }
                self.c2h(sqe, &bytes, self.script.c2h_piece)?;
                self.respond(sqe, 0, 0)
            }
            0x01 => {
                let data = if data.is_empty() { self.collect_r2t(reader, sqe, len)? } else { data };
                self.disk.lock().unwrap()[start..start + len].copy_from_slice(&data[..len]);
                self.writes.lock().unwrap().push((start, data[0]));
                self.respond(sqe, 0, 0)
            }
            0x08 => {
                self.disk.lock().unwrap()[start..start + len].fill(0);
                self.respond(sqe, 0, 0)
            }
            0x09 => {
                let data = if data.is_empty() { self.collect_r2t(reader, sqe, 16)? } else { data };
                let blocks = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
                let slba = u64::from_le_bytes(data[8..16].try_into().unwrap()) as usize;
                self.disk.lock().unwrap()[slba * bs..(slba + blocks) * bs].fill(0);
                self.respond(sqe, 0, 0)
            }
            0x00 => self.respond(sqe, 0, 0),
            _ => self.respond(sqe, 0x01, 0),
        }
    }

    fn collect_r2t(
        &mut self,
        reader: &mut PduReader<TcpStream>,
        sqe: &[u8; 64],
        len: usize,
    ) -> std::io::Result<Vec<u8>> {
        let piece = if self.script.r2t_piece == 0 { len } else { self.script.r2t_piece };
        let mut out = vec![0u8; len];
        let mut offset = 0;
        let mut ttag = 0u16;
        while offset < len {
            let n = piece.min(len - offset);
            ttag += 1;
            let mut psh = [0u8; 16];
            psh[0..2].copy_from_slice(&sqe[2..4]);
            psh[2..4].copy_from_slice(&ttag.to_le_bytes());
            psh[4..8].copy_from_slice(&(offset as u32).to_le_bytes());
            psh[8..12].copy_from_slice(&(n as u32).to_le_bytes());
            self.send(kind::R2T, 0, &psh, &[])?;
            let mut got = 0;
            while got < n {
                let r = reader.next_pdu().map_err(|e| std::io::Error::other(e.to_string()))?;
                if r.kind == kind::CAPSULE_CMD {
                    let mut sqe = [0u8; 64];
                    sqe.copy_from_slice(&r.psh[..64]);
                    let mut data = vec![0u8; r.data_len];
                    reader.read_data(&r, &mut data).map_err(|e| std::io::Error::other(e.to_string()))?;
                    self.backlog.push_back((sqe, data));
                    continue;
                }
                assert_eq!(r.kind, kind::H2C_DATA);
                if self.script.die_mid_h2c {
                    let _ = self.stream.shutdown(std::net::Shutdown::Both);
                    return Err(std::io::Error::other("dropped in the middle of H2CData"));
                }
                let h = pdu::parse_data_header(&r);
                assert_eq!(h.ttag, ttag);
                let at = h.offset as usize;
                reader
                    .read_data(&r, &mut out[at..at + r.data_len])
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                got += r.data_len;
            }
            offset += n;
        }
        Ok(out)
    }

    fn identify(&self, cns: u8) -> Vec<u8> {
        let mut page = vec![0u8; 4096];
        match cns {
            1 => {
                page[76] = 1 << 3; // CMIC: ANA reporting
                page[77] = 5; // MDTS: 2^5 pages = 128 KiB
                page[78..80].copy_from_slice(&1u16.to_le_bytes());
                page[92..96].copy_from_slice(&(1u32 << 11 | 1 << 8).to_le_bytes());
                page[343] = 10;
                page[344] = 0x1f;
                page[345..349].copy_from_slice(&1u32.to_le_bytes());
                page[516..520].copy_from_slice(&1u32.to_le_bytes());
                page[520..522].copy_from_slice(&(1u16 << 2 | 1 << 3).to_le_bytes());
                page[525] = 1;
                let nqn = b"nqn.2024-01.io.example:fake";
                page[768..768 + nqn.len()].copy_from_slice(nqn);
                let ioccsz = (self.script.in_capsule + 64) / 16;
                page[1792..1796].copy_from_slice(&ioccsz.to_le_bytes());
                page[1796..1800].copy_from_slice(&1u32.to_le_bytes());
            }
            0 => {
                page[0..8].copy_from_slice(&self.script.blocks.to_le_bytes());
                page[8..16].copy_from_slice(&self.script.blocks.to_le_bytes());
                page[26] = 0;
                page[130] = self.script.lbads;
                page[92..96].copy_from_slice(&1u32.to_le_bytes());
            }
            2 => page[0..4].copy_from_slice(&1u32.to_le_bytes()),
            3 => {
                page[0] = 3;
                page[1] = 16;
                let uuid = self.script.swapped_uuid.lock().unwrap().unwrap_or(self.script.uuid);
                page[4..20].copy_from_slice(&uuid);
            }
            _ => {}
        }
        page
    }

    fn discovery_log(&self) -> Vec<u8> {
        let n = 1 + self.script.referrals;
        let mut page = vec![0u8; 1024 * (n + 1)];
        page[0..8].copy_from_slice(&1u64.to_le_bytes());
        page[8..16].copy_from_slice(&(n as u64).to_le_bytes());
        let mut put = |i: usize, subtype: u8, port: &str, nqn: &str| {
            let e = &mut page[1024 * (i + 1)..1024 * (i + 2)];
            e[0] = 3;
            e[1] = 1;
            e[2] = subtype;
            e[32..32 + port.len()].copy_from_slice(port.as_bytes());
            e[256..256 + nqn.len()].copy_from_slice(nqn.as_bytes());
            e[512..521].copy_from_slice(b"127.0.0.1");
        };
        put(0, 2, "4420", "nqn.2024-01.io.example:array");
        for i in 0..self.script.referrals {
            put(i + 1, 1, &(i + 1).to_string(), "nqn.2014-08.org.nvmexpress.discovery");
        }
        page
    }

    fn ana_log(&self) -> Vec<u8> {
        let mut page = vec![0u8; 64];
        page[0..8].copy_from_slice(&1u64.to_le_bytes());
        page[8..10].copy_from_slice(&1u16.to_le_bytes());
        page[16..20].copy_from_slice(&1u32.to_le_bytes());
        page[20..24].copy_from_slice(&1u32.to_le_bytes());
        page[32] = *self.script.ana_state.lock().unwrap();
        page[48..52].copy_from_slice(&1u32.to_le_bytes());
        page
    }
}
