//! One NBD connection, server side: read requests from the kernel, submit
//! them to the block device without waiting (many in flight per
//! connection), and write each reply when its completion arrives, in
//! whatever order completions come. A request larger than the device's
//! largest transfer is split and its parts joined. A request the kernel
//! sends again (after its timeout, on another connection) supersedes its
//! old copy ([`super::resend`]).

use std::io::{self, BufRead, IoSlice, Read};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use super::budget::{Budget, Lease};
use super::proto::{self, Command, ProtocolError, RequestHeader, REQUEST_LEN};
use super::resend::Resends;
use crate::block::{BlockDevice, Completion, Geometry, IoError, Outcome, Payload, ReadSink, Request, Ticket};
use crate::splice::{self, Held, MoveError};
use crate::stages::{self, Stage};
use crate::{buffers, vectored};

/// The largest request the kernel sends (its `max_hw_sectors`, 65536
/// sectors, in `drivers/block/nbd.c` `nbd_dev_add`); more is a broken stream.
pub const MAX_REQUEST_BYTES: u32 = 32 << 20;

/// Counters of one export, shared by its connections.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests received.
    pub requests: AtomicU64,
    /// Requests answered with an error.
    pub errors: AtomicU64,
    /// Requests submitted and not yet answered.
    pub in_flight: AtomicU64,
    /// Bytes read from the device.
    pub bytes_read: AtomicU64,
    /// Bytes written to the device.
    pub bytes_written: AtomicU64,
    /// Requests the kernel sent again that superseded an unanswered old copy.
    pub superseded: AtomicU64,
    /// Reads whose reply went out straight from the controller's socket.
    pub delivered: AtomicU64,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    /// The kernel sent NBD_CMD_DISC (the device is being disconnected).
    #[error("the kernel disconnected the device")]
    Disconnected,
    /// The kernel closed or shut down its end (it marked the connection dead).
    #[error("the kernel closed the connection")]
    Closed,
    /// The stream broke.
    #[error("connection I/O failed: {0}")]
    Io(io::Error),
    /// The kernel sent something that is not NBD.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// A request larger than any the kernel sends.
    #[error("request of {0} bytes is larger than the kernel ever sends ({MAX_REQUEST_BYTES})")]
    Oversized(u32),
}

/// A reply on its way to the kernel, with the memory it holds.
struct Reply {
    handle: u64,
    error: u32,
    data: Vec<u8>,
    _lease: Option<Lease>,
}

/// Replies with at most this much data are written by the thread that
/// completed them (no hand-over to another thread, no wake-up); larger ones
/// go to the connection's reply thread, so a completing NVMe queue never
/// waits while the kernel drains a large reply.
const DIRECT_REPLY: usize = 64 * 1024;

/// The write side of one connection, shared by the threads that complete
/// its requests and its reply thread.
struct ReplyOut {
    stream: Mutex<(UnixStream, bool)>,
    counters: Arc<Counters>,
}

impl ReplyOut {
    fn write(&self, mut reply: Reply) {
        {
            let mut out = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
            let (stream, broken) = &mut *out;
            // A broken stream: the kernel declared the connection dead and
            // will not read the reply.
            if !*broken {
                let header = proto::encode_reply(reply.handle, reply.error);
                let data = if reply.error == 0 { reply.data.as_slice() } else { &[] };
                *broken = vectored::write_all(stream, &mut [IoSlice::new(&header), IoSlice::new(data)]).is_err();
            }
        }
        // Written (copied into the socket): the buffer can serve again.
        buffers::give(std::mem::take(&mut reply.data));
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ReplyOut {
    /// Writes a successful read's reply with its data taken straight from
    /// `from` ([`crate::splice`]). A connection that breaks half-way is
    /// shut down, so the kernel never reads a partial reply as a whole one:
    /// it declares the connection dead and sends the request again.
    fn deliver(&self, handle: u64, head: &[u8], from: BorrowedFd<'_>, len: usize) -> io::Result<()> {
        let mut out = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        let (stream, broken) = &mut *out;
        let rest = len - head.len();
        if !*broken {
            let header = proto::encode_reply(handle, 0);
            if vectored::write_all(stream, &mut [IoSlice::new(&header), IoSlice::new(head)]).is_err() {
                *broken = true;
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        if *broken {
            return splice::drain(from, rest);
        }
        match splice::move_bytes(from, stream.as_fd(), rest) {
            Ok(()) => Ok(()),
            Err(MoveError::Sink(_)) => {
                *broken = true;
                let _ = stream.shutdown(Shutdown::Both);
                Ok(())
            }
            Err(MoveError::Source(error)) => {
                *broken = true;
                let _ = stream.shutdown(Shutdown::Both);
                Err(error)
            }
        }
    }
}

/// A read whose reply goes out straight from the controller's socket.
struct ReadReply {
    out: Arc<ReplyOut>,
    handle: u64,
    delivered: AtomicBool,
}

impl ReadSink for ReadReply {
    fn deliver(&self, head: &[u8], from: BorrowedFd<'_>, len: usize) -> io::Result<()> {
        // Taken before the bytes: a half-written reply is never written again.
        self.delivered.store(true, Ordering::SeqCst);
        self.out.deliver(self.handle, head, from, len)
    }

    fn delivered(&self) -> bool {
        self.delivered.load(Ordering::SeqCst)
    }
}

/// Where a completion sends its reply.
#[derive(Clone)]
struct ReplyTo {
    out: Arc<ReplyOut>,
    large: Sender<Reply>,
}

impl ReplyTo {
    fn send(&self, reply: Reply) {
        if reply.data.len() <= DIRECT_REPLY {
            self.out.write(reply);
        } else if let Err(mpsc::SendError(reply)) = self.large.send(reply) {
            // The reply thread is gone only when the connection is.
            self.out.write(reply);
        }
    }
}

/// Serves one connection until it ends; replies still owed are written as
/// their completions arrive, after this returns.
pub fn serve(
    device: &Arc<dyn BlockDevice>,
    stream: UnixStream,
    budget: &Arc<Budget>,
    counters: &Arc<Counters>,
    resends: &Arc<Resends>,
) -> ConnectionEnd {
    let writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(error) => return ConnectionEnd::Io(error),
    };
    let out = Arc::new(ReplyOut { stream: Mutex::new((writer, false)), counters: Arc::clone(counters) });
    let (large, queue) = mpsc::channel::<Reply>();
    let for_thread = Arc::clone(&out);
    let spawned = std::thread::Builder::new().name("nbd-reply".into()).spawn(move || {
        while let Ok(reply) = queue.recv() {
            for_thread.write(reply);
        }
    });
    if let Err(error) = spawned {
        return ConnectionEnd::Io(error);
    }
    read_loop(device, stream, budget, counters, resends, &ReplyTo { out, large })
}

fn read_loop(
    device: &Arc<dyn BlockDevice>,
    stream: UnixStream,
    budget: &Arc<Budget>,
    counters: &Arc<Counters>,
    resends: &Arc<Resends>,
    replies: &ReplyTo,
) -> ConnectionEnd {
    // Many request headers per read system call when the kernel queues several.
    let mut stream = io::BufReader::with_capacity(64 * 1024, stream);
    let geometry = device.geometry();
    loop {
        let mut raw = [0u8; REQUEST_LEN];
        let waited = stages::now();
        match stream.read_exact(&mut raw) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return ConnectionEnd::Closed,
            Err(error) => return ConnectionEnd::Io(error),
        }
        let header = match RequestHeader::decode(&raw) {
            Ok(header) => header,
            Err(error) => return error.into(),
        };
        if header.command == Command::Disconnect {
            return ConnectionEnd::Disconnected;
        }
        if header.len > MAX_REQUEST_BYTES && matches!(header.command, Command::Read | Command::Write) {
            return ConnectionEnd::Oversized(header.len);
        }
        // A write's lease and data are its payload stage.
        let taking = stages::now();
        if header.command == Command::Write {
            stages::WRITES.record(Stage::HeaderWait, waited);
        }
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let len = usize::try_from(header.len).unwrap_or(usize::MAX);
        let lease = matches!(header.command, Command::Read | Command::Write).then(|| budget.lease(len));
        // A large write's data stays in the kernel's pages, in a pipe.
        let mut held = None;
        let request = match header.command {
            Command::Read => Request::Read { offset: header.offset, len: header.len },
            Command::Write => {
                let taken = if device.holds_writes(len) {
                    let mut socket = stream.get_ref();
                    let head = stream.buffer().len().min(len);
                    let taken = splice::hold(&stream.buffer()[..head], &mut socket, len);
                    stream.consume(head);
                    taken
                } else {
                    let mut data = buffers::take(len);
                    stream.read_exact(&mut data).map(|()| Payload::Bytes(data))
                };
                stages::WRITES.record(Stage::Payload, taking);
                let data = match taken {
                    Ok(Payload::Bytes(data)) => data,
                    Ok(Payload::Held(data)) => {
                        held = Some(data);
                        Vec::new()
                    }
                    Err(error) => {
                        counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                        return ConnectionEnd::Io(error);
                    }
                };
                Request::Write { offset: header.offset, data, fua: header.fua }
            }
            Command::Flush => Request::Flush,
            Command::Trim => Request::Discard { offset: header.offset, len: u64::from(header.len) },
            Command::WriteZeroes => Request::WriteZeroes { offset: header.offset, len: u64::from(header.len) },
            Command::Disconnect => return ConnectionEnd::Disconnected,
        };
        let reply_to = replies.clone();
        let counted = Arc::clone(counters);
        let handle = header.handle;
        let (ticket, older) = resends.arrive(handle);
        let table = Arc::clone(resends);
        let mine = Arc::clone(&ticket);
        // A read sent for the first time may have its reply written straight
        // from the network; a re-sent one takes the buffered way.
        let sink = (header.command == Command::Read && older.is_none())
            .then(|| Arc::new(ReadReply { out: Arc::clone(&replies.out), handle, delivered: AtomicBool::new(false) }));
        let delivered = sink.clone();
        let done = move |outcome: Outcome| {
            table.complete(handle, &mine);
            // A newer copy waiting for this one to land goes out now.
            mine.finish();
            if delivered.as_ref().is_some_and(|d| d.delivered()) {
                // The reply is out already.
                if outcome.is_ok() {
                    counted.bytes_read.fetch_add(u64::from(header.len), Ordering::Relaxed);
                    counted.delivered.fetch_add(1, Ordering::Relaxed);
                }
                counted.in_flight.fetch_sub(1, Ordering::Relaxed);
                drop(lease);
                return;
            }
            let reply = match outcome {
                Ok(data) => {
                    match header.command {
                        Command::Read => counted.bytes_read.fetch_add(data.len() as u64, Ordering::Relaxed),
                        Command::Write => counted.bytes_written.fetch_add(u64::from(header.len), Ordering::Relaxed),
                        _ => 0,
                    };
                    Reply { handle, error: 0, data, _lease: lease }
                }
                Err(error) => {
                    counted.errors.fetch_add(1, Ordering::Relaxed);
                    Reply { handle, error: proto::error_value(&error), data: Vec::new(), _lease: lease }
                }
            };
            let replying = stages::now();
            reply_to.send(reply);
            if header.command == Command::Write {
                stages::WRITES.record(Stage::Reply, replying);
            }
        };
        let done: Completion = Box::new(done);
        if let Err(error) = check(&geometry, &request, held.as_ref()) {
            done(Err(error));
            continue;
        }
        match older {
            None => match (request, sink) {
                (Request::Read { offset, len }, Some(sink)) => {
                    device.submit_read_into(offset, len, sink, &ticket, done)
                }
                (request, _) => submit_any(device, &geometry, request, held, &ticket, done),
            },
            Some(older) => {
                counters.superseded.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(handle, "the kernel sent a request again; its old copy will not be written after it");
                let device = Arc::clone(device);
                // Off this thread: when the old copy is in flight, the new one
                // is sent from the old one's completion, which must not block.
                older.supersede(Box::new(move || {
                    let spawned = std::thread::Builder::new().name("nbd-resend".into()).spawn(move || {
                        submit_any(&device, &geometry, request, held, &ticket, done);
                    });
                    if let Err(error) = spawned {
                        tracing::error!(%error, "cannot start a thread to send a re-sent request");
                    }
                }));
            }
        }
    }
}

/// Submits a request whose write data may be held in a pipe (`held`,
/// then the request's own data is empty).
fn submit_any(
    device: &Arc<dyn BlockDevice>,
    geometry: &Geometry,
    request: Request,
    held: Option<Held>,
    ticket: &Arc<Ticket>,
    done: Completion,
) {
    match (request, held) {
        (Request::Write { offset, fua, .. }, Some(held)) => {
            device.submit_write(offset, Payload::Held(held), fua, ticket, done);
        }
        (request, _) => submit_split(device, geometry, request, ticket, done),
    }
}

/// Range and alignment, before anything reaches the device.
fn check(geometry: &Geometry, request: &Request, held: Option<&Held>) -> Result<(), IoError> {
    let (offset, len) = match request {
        Request::Read { offset, len } => (*offset, u64::from(*len)),
        Request::Write { offset, data, .. } => (*offset, held.map_or(data.len(), Held::len) as u64),
        Request::Discard { offset, len } | Request::WriteZeroes { offset, len } => (*offset, *len),
        Request::Flush => return Ok(()),
    };
    let block = u64::from(geometry.block_size.max(1));
    if offset % block != 0 || len % block != 0 {
        return Err(IoError::Invalid(format!("{len} bytes at {offset} not aligned to {block}-byte blocks")));
    }
    if offset.checked_add(len).is_none_or(|end| end > geometry.size_bytes()) {
        return Err(IoError::Invalid(format!("{len} bytes at {offset} past the end ({})", geometry.size_bytes())));
    }
    Ok(())
}

/// The largest piece the device takes, in whole blocks.
fn piece_len(geometry: &Geometry) -> u32 {
    let block = geometry.block_size.max(1);
    match geometry.max_transfer {
        0 => u32::MAX,
        max => (max / block).max(1) * block,
    }
}

/// Submits a request, split into pieces the device accepts; the completion
/// sees one outcome (the first error, or the joined data of a read).
fn submit_split(
    device: &Arc<dyn BlockDevice>,
    geometry: &Geometry,
    request: Request,
    ticket: &Arc<Ticket>,
    done: Completion,
) {
    let piece = piece_len(geometry);
    match request {
        Request::Read { offset, len } if len > piece => {
            let parts = len.div_ceil(piece);
            let join = Join::new(parts, Some(len), done);
            for part in 0..parts {
                let start = part * piece;
                let this = piece.min(len - start);
                let join = Arc::clone(&join);
                device.submit_ticketed(
                    Request::Read { offset: offset + u64::from(start), len: this },
                    ticket,
                    Box::new(move |outcome| join.part(start, outcome)),
                );
            }
        }
        Request::Write { offset, data, fua } if data.len() > piece as usize => {
            let chunks: Vec<Vec<u8>> = data
                .chunks(piece as usize)
                .map(|chunk| {
                    let mut part = buffers::take(chunk.len());
                    part.copy_from_slice(chunk);
                    part
                })
                .collect();
            buffers::give(data);
            let join = Join::new(u32::try_from(chunks.len()).unwrap_or(u32::MAX), None, done);
            let mut start = 0u64;
            for chunk in chunks {
                let len = chunk.len() as u64;
                let join = Arc::clone(&join);
                device.submit_ticketed(
                    Request::Write { offset: offset + start, data: chunk, fua },
                    ticket,
                    Box::new(move |outcome| join.part(0, outcome.map(|_| Vec::new()))),
                );
                start += len;
            }
        }
        request => device.submit_ticketed(request, ticket, done),
    }
}

/// Joins the completions of a split request.
struct Join {
    state: Mutex<JoinState>,
}

struct JoinState {
    left: u32,
    data: Option<Vec<u8>>,
    error: Option<IoError>,
    done: Option<Box<dyn FnOnce(Outcome) + Send>>,
}

impl Join {
    fn new(parts: u32, read_len: Option<u32>, done: Box<dyn FnOnce(Outcome) + Send>) -> Arc<Self> {
        let data = read_len.map(|len| buffers::take(len as usize));
        Arc::new(Self { state: Mutex::new(JoinState { left: parts, data, error: None, done: Some(done) }) })
    }

    fn part(&self, start: u32, outcome: Outcome) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(bytes) => {
                if let Some(data) = state.data.as_mut() {
                    let start = start as usize;
                    let end = (start + bytes.len()).min(data.len());
                    data[start..end].copy_from_slice(&bytes[..end - start]);
                }
                buffers::give(bytes);
            }
            Err(error) => {
                state.error.get_or_insert(error);
            }
        }
        state.left -= 1;
        if state.left == 0 {
            let outcome = match state.error.take() {
                Some(error) => Err(error),
                None => Ok(state.data.take().unwrap_or_default()),
            };
            if let Some(done) = state.done.take() {
                drop(state);
                done(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryDevice;
    use std::io::Write;

    fn header(command: Command, handle: u64, offset: u64, len: u32) -> [u8; REQUEST_LEN] {
        RequestHeader { command, fua: false, handle, offset, len }.encode()
    }

    fn reply(stream: &mut UnixStream) -> (u64, u32) {
        let mut raw = [0u8; proto::REPLY_LEN];
        stream.read_exact(&mut raw).unwrap();
        proto::decode_reply(&raw).unwrap()
    }

    fn start(device: Arc<dyn BlockDevice>, budget: usize) -> (UnixStream, std::thread::JoinHandle<ConnectionEnd>) {
        let (client, server) = UnixStream::pair().unwrap();
        let budget = Budget::new(budget);
        let counters = Arc::new(Counters::default());
        let thread = std::thread::spawn(move || serve(&device, server, &budget, &counters, &Resends::new()));
        (client, thread)
    }

    #[test]
    fn writes_read_back_and_disc_ends_the_connection() {
        let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(512, 64, 1024));
        let (mut client, thread) = start(device, 1 << 20);
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&header(Command::Write, 1, 1024, 4096)).unwrap();
        client.write_all(&data).unwrap();
        assert_eq!(reply(&mut client), (1, 0));
        // Read of 4096 with a 1024-byte max transfer: split in four, joined.
        client.write_all(&header(Command::Read, 2, 1024, 4096)).unwrap();
        assert_eq!(reply(&mut client), (2, 0));
        let mut back = vec![0u8; 4096];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, data);
        client.write_all(&header(Command::Flush, 3, 0, 0)).unwrap();
        assert_eq!(reply(&mut client), (3, 0));
        client.write_all(&header(Command::Disconnect, 4, 0, 0)).unwrap();
        assert!(matches!(thread.join().unwrap(), ConnectionEnd::Disconnected));
    }

    #[test]
    fn out_of_range_and_misaligned_requests_get_einval_and_the_stream_stays_in_step() {
        let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(512, 8, 0));
        let (mut client, thread) = start(device, 1 << 20);
        client.write_all(&header(Command::Write, 1, 4096, 512)).unwrap();
        client.write_all(&[0u8; 512]).unwrap();
        assert_eq!(reply(&mut client), (1, proto::errno::EINVAL));
        client.write_all(&header(Command::Read, 2, 100, 512)).unwrap();
        assert_eq!(reply(&mut client), (2, proto::errno::EINVAL));
        client.write_all(&header(Command::Trim, 3, 0, 1024)).unwrap();
        assert_eq!(reply(&mut client), (3, 0));
        drop(client);
        assert!(matches!(thread.join().unwrap(), ConnectionEnd::Closed));
    }

    #[test]
    fn many_requests_in_flight_complete_out_of_order_within_the_budget() {
        // The device completes requests in reverse order of arrival, in batches
        // of four; a budget of two 4 KiB buffers still lets every request through.
        let device = Arc::new(MemoryDevice::new(512, 256, 0).holding(4));
        let (mut client, thread) = start(device.clone(), 8192 * 4);
        for handle in 0..16u64 {
            client.write_all(&header(Command::Read, handle, handle * 4096, 4096)).unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..16 {
            let (handle, error) = reply(&mut client);
            assert_eq!(error, 0);
            let mut data = vec![0u8; 4096];
            client.read_exact(&mut data).unwrap();
            seen.push(handle);
        }
        assert_ne!(seen, (0..16).collect::<Vec<_>>(), "completions must be allowed out of order");
        seen.sort_unstable();
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
        client.write_all(&header(Command::Disconnect, 99, 0, 0)).unwrap();
        assert!(matches!(thread.join().unwrap(), ConnectionEnd::Disconnected));
    }

    #[test]
    #[allow(clippy::cast_possible_truncation)] // test offsets and bytes are small and known
    fn read_replies_go_straight_from_the_controllers_socket_when_it_sends_the_data_whole() {
        use crate::fake_target::{config, FakeTarget, Script};
        use crate::multipath::Multipath;
        // Whole C2HData with SUCCESS (Linux nvmet): spliced. Split data, a
        // status in a response capsule, or data digests: buffered.
        for (name, script, digests, straight) in [
            ("whole", Script { whole_c2h: true, blocks: 4096, ..Script::default() }, false, true),
            ("split", Script { c2h_piece: 4096, reorder: true, blocks: 4096, ..Script::default() }, false, false),
            ("digests", Script { whole_c2h: true, blocks: 4096, ..Script::default() }, true, false),
        ] {
            let target = FakeTarget::start(script);
            let data: Vec<u8> = (0..4096 * 512).map(|i: usize| (i * 13 % 251) as u8).collect();
            target.disk.lock().unwrap().copy_from_slice(&data);
            let mut cfg = config(&[&target]);
            cfg.transport.hdr_digest = digests;
            cfg.transport.data_digest = digests;
            let device: Arc<dyn BlockDevice> = Arc::new(Multipath::open(cfg).unwrap());
            let (mut client, server) = UnixStream::pair().unwrap();
            let counters = Arc::new(Counters::default());
            let thread = {
                let counters = Arc::clone(&counters);
                std::thread::spawn(move || serve(&device, server, &Budget::new(4 << 20), &counters, &Resends::new()))
            };
            // Many at once, of every size up to the 128 KiB MDTS and past it
            // (split and joined), so replies of one connection interleave.
            let reads: Vec<(u64, u64, u32)> = (0..24u64)
                .map(|h| (h, (h * 37 % 1500) * 512, [512u32, 4096, 65536, 131_072, 262_144][h as usize % 5]))
                .collect();
            for (handle, offset, len) in &reads {
                client.write_all(&header(Command::Read, *handle, *offset, *len)).unwrap();
            }
            for _ in &reads {
                let (handle, error) = reply(&mut client);
                assert_eq!(error, 0, "{name}");
                let (_, offset, len) = reads[handle as usize];
                let mut back = vec![0u8; len as usize];
                client.read_exact(&mut back).unwrap();
                assert!(back[..] == data[offset as usize..offset as usize + len as usize], "{name}: read {handle}");
            }
            let delivered = counters.delivered.load(Ordering::Relaxed);
            if straight {
                assert!(delivered >= 19, "{name}: {delivered} of the 19 unsplit reads went straight");
            } else {
                assert_eq!(delivered, 0, "{name}");
            }
            client.write_all(&header(Command::Disconnect, 99, 0, 0)).unwrap();
            assert!(matches!(thread.join().unwrap(), ConnectionEnd::Disconnected), "{name}");
        }
    }

    #[test]
    #[allow(clippy::cast_possible_truncation)] // test offsets and bytes are small and known
    fn large_writes_are_held_in_a_pipe_and_sent_whole_again_after_a_path_died_mid_h2cdata() {
        use crate::fake_target::{config, FakeTarget, Script};
        use crate::multipath::Multipath;
        // Two paths to one disk; the first (numa: always used while live)
        // drops its connection once the data of a write starts to come.
        let disk = Arc::new(Mutex::new(vec![0u8; 4096 * 512]));
        let dying = FakeTarget::start(Script {
            die_mid_h2c: true,
            blocks: 4096,
            disk: Some(Arc::clone(&disk)),
            ..Script::default()
        });
        let good = FakeTarget::start(Script { blocks: 4096, disk: Some(Arc::clone(&disk)), ..Script::default() });
        let device: Arc<dyn BlockDevice> = Arc::new(Multipath::open(config(&[&dying, &good])).unwrap());
        assert!(device.holds_writes(128 * 1024) && !device.holds_writes(4096), "held: larger than 64 KiB only");
        let (mut client, server) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || {
            serve(&device, server, &Budget::new(4 << 20), &Arc::new(Counters::default()), &Resends::new())
        });
        // Writes of 128 KiB (the MDTS: held, one R2T), written in pieces so
        // the head and the rest of each arrive apart, then a small one.
        let writes: Vec<(u64, u64, Vec<u8>)> = (0..6u64)
            .map(|h| (h, h * 131_072, (0..131_072usize).map(|i| ((i + h as usize * 7) % 253) as u8).collect()))
            .chain(std::iter::once((6, 6 * 131_072, vec![9u8; 4096])))
            .collect();
        for (handle, offset, data) in &writes {
            client.write_all(&header(Command::Write, *handle, *offset, data.len() as u32)).unwrap();
            for piece in data.chunks(50_000) {
                client.write_all(piece).unwrap();
            }
        }
        let mut answered: Vec<u64> = (0..writes.len())
            .map(|_| reply(&mut client))
            .map(|(h, e)| {
                assert_eq!(e, 0, "write {h} failed");
                h
            })
            .collect();
        answered.sort_unstable();
        assert_eq!(answered, (0..writes.len() as u64).collect::<Vec<_>>());
        assert!(dying.io_commands.load(Ordering::SeqCst) >= 1, "the first path was sent a write");
        assert!(dying.writes.lock().unwrap().is_empty(), "no data landed through the dying path");
        let disk = disk.lock().unwrap();
        for (handle, offset, data) in &writes {
            assert!(
                disk[*offset as usize..*offset as usize + data.len()] == data[..],
                "write {handle} is whole on disk"
            );
        }
        drop(disk);
        client.write_all(&header(Command::Disconnect, 99, 0, 0)).unwrap();
        assert!(matches!(thread.join().unwrap(), ConnectionEnd::Disconnected));
    }

    #[test]
    fn garbage_ends_the_connection() {
        let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(512, 8, 0));
        let (mut client, thread) = start(device, 1 << 20);
        client.write_all(&[0xffu8; REQUEST_LEN]).unwrap();
        assert!(matches!(thread.join().unwrap(), ConnectionEnd::Protocol(ProtocolError::Magic(_))));
        let (mut client, thread) = {
            let device: Arc<dyn BlockDevice> = Arc::new(MemoryDevice::new(512, 8, 0));
            start(device, 1 << 20)
        };
        client.write_all(&header(Command::Write, 1, 0, MAX_REQUEST_BYTES + 512)).unwrap();
        assert!(matches!(thread.join().unwrap(), ConnectionEnd::Oversized(_)));
    }
}
