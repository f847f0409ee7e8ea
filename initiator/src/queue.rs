//! One NVMe/TCP queue: one TCP connection, a bounded set of command slots,
//! and a reader thread that matches what the controller sends (C2HData,
//! R2T, CapsuleResp) to the slot of its command identifier.
//!
//! Submitters block when every slot is taken, so a queue never holds more
//! than its depth of commands and buffers. When the connection breaks or the
//! controller sends something the protocol does not allow, the queue dies:
//! every command in it completes with [`QueueError::Transport`] (the
//! multipath layer retries those on another path) and later submissions fail
//! at once.

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::block::{Payload, ReadSink};
use crate::buffers;
use crate::command::{self, Sqe};
use crate::pdu::{self, kind, Digests, PduError, PduReader, Received, FLAG_LAST, FLAG_SUCCESS};
use crate::stages::{self, Stage};
use crate::vectored;

/// How a queue failed a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The connection is gone or the controller broke the protocol; the
    /// command may be retried on another path.
    #[error("{0}")]
    Transport(String),
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What a finished command gives back: its completion (or why none came),
/// and its buffers, so the caller can reuse or resend them.
#[derive(Debug)]
pub struct Finished {
    /// The controller's completion.
    pub outcome: Result<pdu::Completion, QueueError>,
    /// Data the controller returned (reads), `expect` bytes.
    pub data_in: Vec<u8>,
    /// Data the host sent (writes), whole, to be sent again on a retry.
    pub data_out: Payload,
}

/// Called once when a command finishes, on the queue's reader thread (or the
/// submitter's, when the queue is already dead).
pub type OnFinish = Box<dyn FnOnce(Finished) + Send>;

/// Negotiated parameters of a connected queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueParams {
    /// Queue ID (0: admin).
    pub qid: u16,
    /// Commands in flight at most.
    pub slots: u16,
    /// Digests negotiated at ICResp.
    pub digests: Digests,
    /// Controller PDU data alignment (bytes).
    pub cpda: usize,
    /// Largest H2CData payload.
    pub maxh2cdata: u32,
    /// Largest in-capsule data for a command.
    pub in_capsule: usize,
    /// Largest data of one command (bounds the reader's allocations).
    pub max_data: usize,
    /// Most data PDUs the controller may send for one command before the
    /// queue is declared broken: a target that splits data absurdly finely
    /// cannot keep the reader busy forever.
    pub max_pdus: u32,
}

struct Pending {
    sqe: Sqe,
    /// Shared with a writer sending it (in the capsule or on R2T) without
    /// holding the slot lock and without a copy.
    data_out: Arc<Payload>,
    /// Bytes to read back (the data buffer is taken when the first byte
    /// comes, and never when the data goes to `sink`).
    expect: usize,
    data_in: Vec<u8>,
    /// Where the data may go straight from the socket.
    sink: Option<Arc<dyn ReadSink>>,
    received: usize,
    pdus: u32,
    r2t_ok: bool,
    started: Instant,
    /// When its H2CData went out (for [`stages`]).
    data_sent: Option<Instant>,
    done: OnFinish,
}

struct Slots {
    free: Vec<u16>,
    pending: Vec<Option<Pending>>,
    dead: Option<String>,
    /// Submitters waiting for a free slot: only then does a completion
    /// wake anyone (a wake is a system call, on every command otherwise).
    waiting: usize,
}

struct Shared {
    portal: SocketAddr,
    params: QueueParams,
    writer: Mutex<(TcpStream, Vec<u8>)>,
    /// A handle on the socket to shut it down while a writer blocks.
    control: TcpStream,
    slots: Mutex<Slots>,
    space: Condvar,
    /// Told once, when the queue dies: whoever owns the queue learns of its
    /// death when it happens, without polling [`Queue::dead`].
    on_death: Mutex<Option<OnDeath>>,
}

/// Called once with the reason when a queue dies.
pub type OnDeath = Box<dyn FnOnce(String) + Send>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The reader side of a queue: buffered, so one system call brings in
/// several small PDUs (responses, R2Ts, data headers).
type Reader = PduReader<io::BufReader<TcpStream>>;

/// Bytes the reader asks the socket for at once.
const READ_BUFFER: usize = 64 * 1024;

/// The write data back from a finished command. Only a writer sending it
/// shares it, and only under the writer lock, which a dying queue waits
/// for ([`Shared::fail`]): a sender still holding it is about to let go.
fn unshare(mut data: Arc<Payload>) -> Payload {
    loop {
        match Arc::try_unwrap(data) {
            Ok(data) => return data,
            Err(shared) => {
                data = shared;
                std::thread::yield_now();
            }
        }
    }
}

/// One H2CData PDU to send: its head in the writer's buffer, its part of
/// the command's data, its data digest.
type H2cPiece = (std::ops::Range<usize>, std::ops::Range<usize>, Option<[u8; 4]>);

/// The bytes of a payload in memory (a held one is sent from its pipe).
fn bytes(data: &Payload) -> &[u8] {
    match data {
        Payload::Bytes(data) => data,
        Payload::Held(_) => &[],
    }
}

/// Where a C2HData PDU's data goes.
enum Destination {
    /// Into the command's buffer.
    Buffer(Vec<u8>),
    /// Straight from the socket to the command's sink.
    Sink(Arc<dyn ReadSink>),
}

/// A connected queue; dropping it closes the connection.
pub struct Queue {
    shared: Arc<Shared>,
}

/// Opens a TCP connection within `deadline`.
///
/// # Errors
/// The socket error.
pub fn connect_tcp(portal: SocketAddr, deadline: Instant) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&portal, remaining(deadline)?)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Exchanges ICReq/ICResp within `deadline` (one deadline for the whole
/// exchange: a peer sending one byte at a time cannot stretch it).
///
/// # Errors
/// [`PduError`] naming what failed.
pub fn initialize(stream: &TcpStream, digests: Digests, deadline: Instant) -> Result<pdu::IcResp, PduError> {
    let mut timed = DeadlineStream { stream, deadline };
    timed.write_all(&pdu::ic_req(digests, 0))?;
    let mut reader = PduReader::new(&mut timed, 0);
    let received = reader.next_pdu()?;
    let resp = pdu::parse_ic_resp(&received, digests)?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    Ok(resp)
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "the exchange's deadline passed"));
    }
    Ok(left)
}

/// A stream whose every read and write is bounded by one fixed deadline.
pub struct DeadlineStream<'a> {
    /// The socket.
    pub stream: &'a TcpStream,
    /// When the exchange must be over.
    pub deadline: Instant,
}

impl Read for DeadlineStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(remaining(self.deadline)?))?;
        let mut s = self.stream;
        s.read(buf)
    }
}

impl Write for DeadlineStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(remaining(self.deadline)?))?;
        let mut s = self.stream;
        s.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Queue {
    /// Starts a queue on an initialized connection; its reader thread runs
    /// until the connection ends.
    ///
    /// # Errors
    /// An I/O error if the socket cannot be duplicated or the thread not started.
    pub fn start(portal: SocketAddr, stream: TcpStream, params: QueueParams) -> io::Result<Self> {
        let reader = stream.try_clone()?;
        let control = stream.try_clone()?;
        let slots = params.slots.max(1);
        let shared = Arc::new(Shared {
            portal,
            params,
            writer: Mutex::new((stream, Vec::new())),
            control,
            slots: Mutex::new(Slots {
                free: (0..slots).rev().collect(),
                pending: (0..slots).map(|_| None).collect(),
                dead: None,
                waiting: 0,
            }),
            space: Condvar::new(),
            on_death: Mutex::new(None),
        });
        let for_thread = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("nvme-q{}-{portal}", params.qid))
            .spawn(move || for_thread.read_loop(reader))?;
        Ok(Self { shared })
    }

    /// The queue's parameters.
    #[must_use]
    pub fn params(&self) -> QueueParams {
        self.shared.params
    }

    /// Why the queue died, if it did.
    #[must_use]
    pub fn dead(&self) -> Option<String> {
        lock(&self.shared.slots).dead.clone()
    }

    /// Commands in flight now.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        let slots = lock(&self.shared.slots);
        slots.pending.len() - slots.free.len()
    }

    /// Age of the oldest command in flight that is not in `except` (opcodes
    /// that legitimately wait forever, like Asynchronous Event Requests).
    #[must_use]
    pub fn oldest(&self, except: u8) -> Option<Duration> {
        let slots = lock(&self.shared.slots);
        slots.pending.iter().flatten().filter(|p| p.sqe[0] != except).map(|p| p.started.elapsed()).max()
    }

    /// Has `then` called once with the reason when the queue dies (at once,
    /// if it is dead already).
    pub fn on_death(&self, then: OnDeath) {
        let mut slot = lock(&self.shared.on_death);
        let dead = lock(&self.shared.slots).dead.clone();
        match dead {
            Some(why) => {
                drop(slot);
                then(why);
            }
            None => *slot = Some(then),
        }
    }

    /// Kills the queue: the connection is shut down and every command in it
    /// fails with [`QueueError::Transport`] carrying `why`.
    pub fn kill(&self, why: &str) {
        self.shared.fail(why.to_owned());
    }

    /// Submits a command: `data_out` is sent in the capsule when it fits,
    /// else on R2T; `expect` bytes are read back by C2HData. Blocks while
    /// every slot is taken.
    pub fn submit(&self, sqe: Sqe, data_out: Vec<u8>, expect: usize, done: OnFinish) {
        self.submit_into(sqe, data_out.into(), expect, None, done);
    }

    /// [`Self::submit`], with a read's data handed to `sink` straight from
    /// the socket when the controller sends it all in one C2HData PDU with
    /// the SUCCESS flag (so the status is known before the data) and no
    /// data digest; the finished command then carries no data. Otherwise
    /// the data comes back in [`Finished::data_in`] as usual.
    pub fn submit_into(
        &self,
        mut sqe: Sqe,
        data_out: Payload,
        expect: usize,
        sink: Option<Arc<dyn ReadSink>>,
        done: OnFinish,
    ) {
        let shared = &self.shared;
        let submitting = stages::now();
        let is_write = !data_out.is_empty();
        let in_capsule = is_write && data_out.len() <= shared.params.in_capsule;
        // In-capsule data goes out with its command, from memory.
        let data_out = match data_out {
            Payload::Held(held) if in_capsule => match held.into_bytes() {
                Ok(data) => Payload::Bytes(data),
                Err(e) => {
                    let why = format!("reading a held write's data: {e}");
                    done(Finished {
                        outcome: Err(QueueError::Transport(why)),
                        data_in: Vec::new(),
                        data_out: Vec::new().into(),
                    });
                    return;
                }
            },
            other => other,
        };
        let length = u32::try_from(data_out.len().max(expect)).unwrap_or(u32::MAX);
        if in_capsule {
            command::set_sgl_in_capsule(&mut sqe, length);
        } else if length > 0 {
            command::set_sgl_transport(&mut sqe, length);
        }
        let cid = {
            let mut slots = lock(&shared.slots);
            loop {
                if let Some(why) = &slots.dead {
                    let why = why.clone();
                    drop(slots);
                    done(Finished { outcome: Err(QueueError::Transport(why)), data_in: Vec::new(), data_out });
                    return;
                }
                if let Some(cid) = slots.free.pop() {
                    break cid;
                }
                slots.waiting += 1;
                slots = shared.space.wait(slots).unwrap_or_else(PoisonError::into_inner);
                slots.waiting -= 1;
            }
        };
        command::set_cid(&mut sqe, cid);
        let data_out = Arc::new(data_out);
        let capsule_data = if in_capsule { Arc::clone(&data_out) } else { Arc::new(Payload::Bytes(Vec::new())) };
        let mut writer = lock(&shared.writer);
        let (stream, buf) = &mut *writer;
        buf.clear();
        let digest = pdu::frame(
            buf,
            kind::CAPSULE_CMD,
            0,
            &sqe,
            bytes(&capsule_data),
            shared.params.digests,
            shared.params.cpda,
        );
        {
            let mut slots = lock(&shared.slots);
            if slots.dead.is_some() {
                slots.free.push(cid);
                drop(slots);
                drop(writer);
                drop(capsule_data);
                self.submit_after_death(unshare(data_out), done);
                return;
            }
            slots.pending[usize::from(cid)] = Some(Pending {
                sqe,
                data_out,
                expect,
                data_in: if sink.is_some() { Vec::new() } else { buffers::take(expect) },
                sink,
                received: 0,
                pdus: 0,
                r2t_ok: !in_capsule && length > 0 && expect == 0,
                started: Instant::now(),
                data_sent: None,
                done,
            });
            if is_write && submitting.is_some() {
                stages::WRITES.beside(slots.pending.len() - slots.free.len());
            }
        }
        let digest = digest.unwrap_or_default();
        let mut slices = [IoSlice::new(buf), IoSlice::new(bytes(&capsule_data)), IoSlice::new(&digest[..])];
        let tail = if shared.params.digests.data && !capsule_data.is_empty() { 3 } else { 2 };
        let sent = vectored::write_all(stream, &mut slices[..tail]);
        // Let go of the data before the writer lock (see `unshare`).
        drop(capsule_data);
        drop(writer);
        if is_write {
            stages::WRITES.record(Stage::Submit, submitting);
        }
        if let Err(e) = sent {
            shared.fail(format!("sending a command to {}: {e}", shared.portal));
        }
    }

    fn submit_after_death(&self, data_out: Payload, done: OnFinish) {
        let why = self.dead().unwrap_or_default();
        done(Finished { outcome: Err(QueueError::Transport(why)), data_in: Vec::new(), data_out });
    }

    /// Runs one command and waits for it, at most until `deadline`; the queue
    /// is killed when the deadline passes.
    ///
    /// # Errors
    /// [`QueueError`] when the queue died or the deadline passed.
    pub fn call(
        &self,
        sqe: Sqe,
        data_out: Vec<u8>,
        expect: usize,
        deadline: Instant,
    ) -> Result<(pdu::Completion, Vec<u8>), QueueError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            sqe,
            data_out,
            expect,
            Box::new(move |finished| {
                let _ = tx.send(finished);
            }),
        );
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(finished) => finished.outcome.map(|c| (c, finished.data_in)),
            Err(_) => {
                self.kill("a command timed out");
                Err(QueueError::Timeout(wait))
            }
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.shared.fail("the queue was closed".to_owned());
    }
}

impl Shared {
    fn fail(&self, why: String) {
        let (pending, first) = {
            let mut slots = lock(&self.slots);
            let first = slots.dead.is_none();
            if first {
                slots.dead = Some(why.clone());
            }
            let taken: Vec<Pending> = slots.pending.iter_mut().filter_map(Option::take).collect();
            (taken, first)
        };
        let _ = self.control.shutdown(Shutdown::Both);
        // A sender in the middle of a command's data fails now that the
        // socket is shut; once it has let go, the data is whole again for
        // the retry (`unshare`).
        drop(lock(&self.writer));
        self.space.notify_all();
        if first {
            // Taken under its own lock after `dead` is set: `on_death` either
            // sees the death or leaves its hook for this to call.
            if let Some(then) = lock(&self.on_death).take() {
                then(why.clone());
            }
        }
        for p in pending {
            (p.done)(Finished {
                outcome: Err(QueueError::Transport(why.clone())),
                data_in: p.data_in,
                data_out: unshare(p.data_out),
            });
        }
    }

    fn read_loop(self: Arc<Self>, stream: TcpStream) {
        let mut reader =
            PduReader::new(io::BufReader::with_capacity(READ_BUFFER, stream), self.params.max_data.max(4096));
        reader.set_digests(self.params.digests);
        loop {
            let step = reader.next_pdu().and_then(|received| self.handle(&mut reader, &received));
            if let Err(e) = step {
                let why = match e {
                    PduError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        format!("the connection to {} was closed", self.portal)
                    }
                    other => format!("queue {} to {}: {other}", self.params.qid, self.portal),
                };
                self.fail(why);
                return;
            }
        }
    }

    fn protocol(detail: impl Into<String>) -> PduError {
        PduError::Protocol(detail.into())
    }

    /// Takes the pending command `cid` out of its slot (for completion).
    fn take(&self, cid: u16) -> Option<Pending> {
        let mut slots = lock(&self.slots);
        let p = slots.pending.get_mut(usize::from(cid))?.take()?;
        slots.free.push(cid);
        let waiting = slots.waiting > 0;
        drop(slots);
        if waiting {
            self.space.notify_one();
        }
        Some(p)
    }

    fn handle(&self, reader: &mut Reader, received: &Received) -> Result<(), PduError> {
        match received.kind {
            kind::CAPSULE_RESP => {
                let cqe = pdu::parse_completion(received);
                let p = self.take(cqe.cid).ok_or_else(|| {
                    Self::protocol(format!("a completion for command {} that is not in flight", cqe.cid))
                })?;
                // A read's buffer may hold an earlier request's data (it is
                // reused): it is handed on only once every byte came.
                if self.params.qid > 0 && cqe.code() == 0 && p.received != p.expect {
                    let why = format!(
                        "a successful completion of command {} after {} of its {} bytes",
                        cqe.cid, p.received, p.expect
                    );
                    (p.done)(Finished {
                        outcome: Err(QueueError::Transport(why.clone())),
                        data_in: Vec::new(),
                        data_out: unshare(p.data_out),
                    });
                    return Err(Self::protocol(why));
                }
                stages::WRITES.record(Stage::CompletionWait, p.data_sent);
                (p.done)(Finished { outcome: Ok(cqe), data_in: p.data_in, data_out: unshare(p.data_out) });
                Ok(())
            }
            kind::C2H_DATA => self.c2h_data(reader, received),
            kind::R2T => self.r2t(received),
            other => Err(Self::protocol(format!("unexpected PDU type {other:#x} from the controller"))),
        }
    }

    fn c2h_data(&self, reader: &mut Reader, received: &Received) -> Result<(), PduError> {
        let header = pdu::parse_data_header(received);
        let (offset, length) = (header.offset as usize, header.length as usize);
        if length != received.data_len {
            return Err(Self::protocol(format!("C2HData announces {length} bytes but carries {}", received.data_len)));
        }
        let last = received.flags & FLAG_LAST != 0;
        let success = received.flags & FLAG_SUCCESS != 0;
        // Take the buffer (or the sink) out of the slot while reading into
        // it, so the slot lock is not held across a socket read.
        let taken = {
            let mut slots = lock(&self.slots);
            let p =
                slots.pending.get_mut(usize::from(header.cid)).and_then(Option::as_mut).ok_or_else(|| {
                    Self::protocol(format!("C2HData for command {} that is not in flight", header.cid))
                })?;
            p.pdus += 1;
            if p.pdus > self.params.max_pdus {
                return Err(Self::protocol(format!("more than {} data PDUs for one command", self.params.max_pdus)));
            }
            if offset != p.received || offset + length > p.expect {
                return Err(Self::protocol(format!(
                    "C2HData at {offset}+{length} for a command of {} bytes ({} received)",
                    p.expect, p.received
                )));
            }
            if success && !(last && offset + length == p.expect) {
                return Err(Self::protocol("C2HData with SUCCESS before all the data"));
            }
            // All of it, its status known (SUCCESS), no digest to check:
            // straight to the sink. Anything else is read into a buffer.
            let whole = success && offset == 0 && !received.has_data_digest();
            match p.sink.as_ref().filter(|_| whole && p.data_in.is_empty()) {
                Some(sink) => Destination::Sink(Arc::clone(sink)),
                None => {
                    if p.data_in.len() != p.expect {
                        p.data_in = buffers::take(p.expect);
                    }
                    Destination::Buffer(std::mem::take(&mut p.data_in))
                }
            }
        };
        let buffer = match taken {
            Destination::Buffer(mut buffer) => {
                let read = reader.read_data(received, &mut buffer[offset..offset + length]);
                let mut slots = lock(&self.slots);
                let p = slots.pending.get_mut(usize::from(header.cid)).and_then(Option::as_mut);
                let Some(p) = p else { return Err(Self::protocol("a command vanished while its data was read")) };
                p.data_in = buffer;
                read?;
                p.received += length;
                None
            }
            Destination::Sink(sink) => Some(sink),
        };
        if let Some(sink) = buffer {
            let stream = reader.get_mut();
            let head = stream.buffer().len().min(length);
            sink.deliver(&stream.buffer()[..head], stream.get_ref().as_fd(), length).map_err(PduError::Io)?;
            stream.consume(head);
            let mut slots = lock(&self.slots);
            let p = slots.pending.get_mut(usize::from(header.cid)).and_then(Option::as_mut);
            let Some(p) = p else { return Err(Self::protocol("a command vanished while its data was sent on")) };
            p.received += length;
        }
        if success {
            let p = self.take(header.cid).ok_or_else(|| Self::protocol("a command vanished"))?;
            let cqe = pdu::Completion { result: 0, result_hi: 0, cid: header.cid, status: 0 };
            (p.done)(Finished { outcome: Ok(cqe), data_in: p.data_in, data_out: unshare(p.data_out) });
        }
        Ok(())
    }

    /// Answers an R2T with the data it asks for, counting the time the
    /// send took and when it ended ([`stages`]).
    fn r2t(&self, received: &Received) -> Result<(), PduError> {
        let sending = stages::now();
        self.send_r2t_data(received)?;
        if sending.is_some() {
            stages::WRITES.record(Stage::DataSend, sending);
            let cid = pdu::parse_data_header(received).cid;
            if let Some(p) = lock(&self.slots).pending.get_mut(usize::from(cid)).and_then(Option::as_mut) {
                p.data_sent = stages::now();
            }
        }
        Ok(())
    }

    fn send_r2t_data(&self, received: &Received) -> Result<(), PduError> {
        let header = pdu::parse_data_header(received);
        let maxh2c = (self.params.maxh2cdata as usize).max(1);
        let (offset, length) = (header.offset as usize, header.length as usize);
        let mut writer = lock(&self.writer);
        let data = {
            let mut slots = lock(&self.slots);
            let p = slots
                .pending
                .get_mut(usize::from(header.cid))
                .and_then(Option::as_mut)
                .ok_or_else(|| Self::protocol(format!("R2T for command {} that is not in flight", header.cid)))?;
            if offset == 0 && stages::now().is_some() {
                stages::WRITES.record(Stage::R2tWait, Some(p.started));
            }
            if !p.r2t_ok || length == 0 || offset + length > p.data_out.len() {
                return Err(Self::protocol(format!(
                    "R2T for {offset}+{length} of a command with {} bytes to send",
                    if p.r2t_ok { p.data_out.len() } else { 0 }
                )));
            }
            // Held data goes out from its pipe when the R2T asks for all of
            // it and no data digest is wanted; otherwise it is read into
            // memory once, here (under the slot lock: a dying queue must
            // find it whole), and sent from there.
            let whole = offset == 0 && length == p.data_out.len() && !self.params.digests.data;
            if matches!(*p.data_out, Payload::Held(_)) && !whole {
                let Some(Payload::Held(held)) =
                    Arc::get_mut(&mut p.data_out).map(|d| std::mem::replace(d, Payload::Bytes(Vec::new())))
                else {
                    return Err(Self::protocol("a held write's data is shared"));
                };
                p.data_out = Arc::new(Payload::Bytes(held.into_bytes().map_err(PduError::Io)?));
            }
            // Shared, not copied: the slot lock is not held while sending.
            Arc::clone(&p.data_out)
        };
        let (stream, buf) = &mut *writer;
        buf.clear();
        // Every H2CData header (and data digest) first, then one vectored
        // write of headers and data where it lies.
        let mut pieces = Vec::new();
        let mut sent = 0;
        while sent < length {
            let n = (length - sent).min(maxh2c);
            let piece = offset + sent..offset + sent + n;
            let psh = pdu::h2c_data_psh(pdu::DataHeader {
                cid: header.cid,
                ttag: header.ttag,
                offset: u32::try_from(piece.start).unwrap_or(u32::MAX),
                length: u32::try_from(n).unwrap_or(u32::MAX),
            });
            let flags = if sent + n == length { FLAG_LAST } else { 0 };
            let start = buf.len();
            let digest = match &*data {
                Payload::Bytes(bytes) => pdu::frame(
                    buf,
                    kind::H2C_DATA,
                    flags,
                    &psh,
                    &bytes[piece.clone()],
                    self.params.digests,
                    self.params.cpda,
                ),
                Payload::Held(_) => {
                    pdu::frame_head(buf, kind::H2C_DATA, flags, &psh, n, self.params.digests, self.params.cpda);
                    None
                }
            };
            pieces.push((start..buf.len(), piece, digest));
            sent += n;
        }
        match &*data {
            Payload::Held(held) => {
                let heads: Vec<(&[u8], usize)> =
                    pieces.iter().map(|(head, piece, _)| (&buf[head.clone()], piece.len())).collect();
                if held.send(&heads, stream.as_fd())? {
                    return Ok(());
                }
                // This thread's pipe cannot take a copy: nothing was sent.
                drop(heads);
                drop(data);
                let mut slots = lock(&self.slots);
                let p = slots.pending.get_mut(usize::from(header.cid)).and_then(Option::as_mut);
                let Some(p) = p else { return Err(Self::protocol("a command vanished while its data was sent")) };
                let Some(Payload::Held(held)) =
                    Arc::get_mut(&mut p.data_out).map(|d| std::mem::replace(d, Payload::Bytes(Vec::new())))
                else {
                    return Err(Self::protocol("a held write's data is shared"));
                };
                p.data_out = Arc::new(Payload::Bytes(held.into_bytes().map_err(PduError::Io)?));
                let data = Arc::clone(&p.data_out);
                drop(slots);
                Self::send_pieces(stream, buf, &pieces, bytes(&data))
            }
            Payload::Bytes(bytes) => Self::send_pieces(stream, buf, &pieces, bytes),
        }
    }

    /// One vectored write of every H2CData head, its data and its digest.
    fn send_pieces(stream: &mut TcpStream, buf: &[u8], pieces: &[H2cPiece], data: &[u8]) -> Result<(), PduError> {
        let mut slices = Vec::with_capacity(pieces.len() * 3);
        for (head, piece, digest) in pieces {
            slices.push(IoSlice::new(&buf[head.clone()]));
            slices.push(IoSlice::new(&data[piece.clone()]));
            if let Some(digest) = digest {
                slices.push(IoSlice::new(digest));
            }
        }
        vectored::write_all(stream, &mut slices)?;
        Ok(())
    }
}
