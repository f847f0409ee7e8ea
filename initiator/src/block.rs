//! The seam between the NVMe/TCP side and the serving side: a block device
//! that takes requests and completes them asynchronously, so one NBD
//! connection can keep many commands in flight on one NVMe I/O queue.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// What a device is and what it can do, read once after it is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size in bytes (512 or 4096 for real namespaces).
    pub block_size: u32,
    /// Size of the device in logical blocks.
    pub blocks: u64,
    /// Largest single transfer in bytes the device accepts (from MDTS).
    pub max_transfer: u32,
    /// Flush is meaningful (a volatile write cache is present).
    pub flush: bool,
    /// Forced unit access on writes.
    pub fua: bool,
    /// Discard (Dataset Management, deallocate).
    pub discard: bool,
    /// Write Zeroes.
    pub write_zeroes: bool,
}

impl Geometry {
    /// Size of the device in bytes.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}

/// One request; offsets and lengths are in bytes and multiples of the block size.
#[derive(Debug)]
pub enum Request {
    /// Read `len` bytes at `offset`.
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u32,
    },
    /// Write `data` at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// The bytes to write.
        data: Vec<u8>,
        /// Forced unit access.
        fua: bool,
    },
    /// Make completed writes durable.
    Flush,
    /// Deallocate a range.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u64,
    },
    /// Write zeroes over a range.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u64,
    },
}

/// A write's data: in memory, or held in a pipe ([`crate::splice::hold`])
/// until the command is answered, so a retry on another path sends it
/// again.
#[derive(Debug)]
pub enum Payload {
    /// In this process's memory.
    Bytes(Vec<u8>),
    /// In the kernel's pages, never copied into this process.
    Held(crate::splice::Held),
}

impl Payload {
    /// Bytes of data.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Bytes(data) => data.len(),
            Self::Held(held) => held.len(),
        }
    }

    /// Whether there is no data.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data in memory (read out of its pipe when it is held).
    ///
    /// # Errors
    /// Reading the pipe failed.
    pub fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Bytes(data) => Ok(data),
            Self::Held(held) => held.into_bytes(),
        }
    }

    /// Gives the memory back (a buffer to the pool; a pipe is closed).
    pub fn release(self) {
        if let Self::Bytes(data) = self {
            crate::buffers::give(data);
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(data: Vec<u8>) -> Self {
        Self::Bytes(data)
    }
}

/// Why a request failed, as the kernel's block layer will see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The range is outside the device or not block-aligned.
    #[error("request out of range or misaligned: {0}")]
    Invalid(String),
    /// The device does not do this kind of request.
    #[error("not supported by this device: {0}")]
    NotSupported(&'static str),
    /// A media or controller error the NVMe status reported (status code field).
    #[error("the controller failed the command: {0}")]
    Media(String),
    /// No live path answered within the fail-fast time.
    #[error("no live path to the namespace: {0}")]
    NoPath(String),
    /// The device is shutting down.
    #[error("the device is closing")]
    Closing,
    /// A newer copy of the request replaced this one before it was sent.
    #[error("superseded by a newer copy of the same request")]
    Superseded,
}

/// The completion of a request: the data read for `Read`, empty otherwise.
pub type Outcome = Result<Vec<u8>, IoError>;

/// Called exactly once per request, possibly from another thread.
pub type Completion = Box<dyn FnOnce(Outcome) + Send + 'static>;

/// A block device with asynchronous completion.
pub trait BlockDevice: Send + Sync {
    /// What the device is.
    fn geometry(&self) -> Geometry;
    /// Starts a request; `done` is called exactly once when it completes.
    fn submit(&self, request: Request, done: Completion);
    /// Starts a request that a newer copy may supersede through `ticket`.
    /// A device that may hold requests before sending them (the multipath
    /// device, while no path is live) asks [`Ticket::start`] before each
    /// send and completes the request with [`IoError::Superseded`] when it
    /// says no; a device that sends at once needs no more than `submit`.
    fn submit_ticketed(&self, request: Request, ticket: &Arc<Ticket>, done: Completion) {
        let _ = ticket;
        self.submit(request, done);
    }

    /// Starts a read (as [`Self::submit_ticketed`]) whose data may be
    /// handed to `sink` straight from the network instead of being returned:
    /// then `done` gets `Ok` with no data and [`ReadSink::delivered`] is
    /// true. A device that cannot do that returns the data as usual.
    fn submit_read_into(&self, offset: u64, len: u32, sink: Arc<dyn ReadSink>, ticket: &Arc<Ticket>, done: Completion) {
        let _ = sink;
        self.submit_ticketed(Request::Read { offset, len }, ticket, done);
    }

    /// Whether a write of `len` bytes is best taken as a [`Payload::Held`]
    /// (sent on from its pipe without a copy) for [`Self::submit_write`].
    fn holds_writes(&self, len: usize) -> bool {
        let _ = len;
        false
    }

    /// Starts a write (as [`Self::submit_ticketed`]) whose data may be
    /// held in a pipe. A device that cannot send from a pipe reads the data
    /// out of it first.
    fn submit_write(&self, offset: u64, data: Payload, fua: bool, ticket: &Arc<Ticket>, done: Completion) {
        match data.into_bytes() {
            Ok(data) => self.submit_ticketed(Request::Write { offset, data, fua }, ticket, done),
            Err(error) => done(Err(IoError::Media(format!("reading a held write's data: {error}")))),
        }
    }
}

/// Where a successful read's data can be written straight from the
/// network, without passing through this process's memory
/// ([`crate::splice`]): the NBD connection the read's reply goes to.
pub trait ReadSink: Send + Sync {
    /// Writes the whole reply of a successful read: `head` (data already
    /// read), then `len - head.len()` bytes taken from `from`. Whatever
    /// happens to the sink, every byte is taken from `from`.
    ///
    /// # Errors
    /// Only when reading `from` failed (its stream is then out of step).
    fn deliver(&self, head: &[u8], from: std::os::fd::BorrowedFd<'_>, len: usize) -> std::io::Result<()>;

    /// Whether [`Self::deliver`] ran (the reply is out; none is owed).
    fn delivered(&self) -> bool;
}

/// Where a request stands, for ordering it against a newer copy of itself.
///
/// The kernel's NBD driver re-sends a request that timed out on another
/// connection (with the same tag). If the old copy is still held in the
/// device (every path down), sending both could let the old copy reach the
/// disk after the new one, putting stale data back. With a ticket per copy,
/// the new copy [`Ticket::supersede`]s the old: an old copy that was never
/// sent is dropped, and one that was sent is waited for before the new copy
/// goes out, so the old copy can never land after the new one.
pub struct Ticket {
    state: Mutex<TicketState>,
    /// When the first copy of the request arrived: a re-sent copy keeps
    /// its original's, so `fast_io_fail_tmo` counts from the first.
    since: Instant,
}

impl Default for Ticket {
    fn default() -> Self {
        Self { state: Mutex::default(), since: Instant::now() }
    }
}

type After = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct TicketState {
    sent: bool,
    superseded: bool,
    finished: bool,
    after: Vec<After>,
}

impl Ticket {
    fn state(&self) -> std::sync::MutexGuard<'_, TicketState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The device is about to send (or resend) the request: `false` when a
    /// newer copy superseded it, and it must not be sent.
    #[must_use]
    pub fn start(&self) -> bool {
        let mut state = self.state();
        if state.superseded {
            return false;
        }
        state.sent = true;
        true
    }

    /// The request completed (whatever its outcome): whatever waited for it runs.
    pub fn finish(&self) {
        let after = {
            let mut state = self.state();
            state.finished = true;
            std::mem::take(&mut state.after)
        };
        for then in after {
            then();
        }
    }

    /// A newer copy replaces this request: it will not be sent from now on,
    /// and `then` (which sends the newer copy) runs at once if this one was
    /// never sent or has finished, else when it finishes.
    pub fn supersede(&self, then: After) {
        let now = {
            let mut state = self.state();
            state.superseded = true;
            if state.sent && !state.finished {
                state.after.push(then);
                None
            } else {
                Some(then)
            }
        };
        if let Some(then) = now {
            then();
        }
    }

    /// Whether a newer copy superseded this one.
    #[must_use]
    pub fn superseded(&self) -> bool {
        self.state().superseded
    }

    /// The ticket of a newer copy of this request: it keeps the time the
    /// first copy arrived.
    #[must_use]
    pub fn next_copy(&self) -> Self {
        Self { state: Mutex::default(), since: self.since }
    }

    /// When the first copy of the request arrived.
    #[must_use]
    pub fn since(&self) -> Instant {
        self.since
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("Ticket")
            .field("sent", &state.sent)
            .field("superseded", &state.superseded)
            .field("finished", &state.finished)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Geometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} blocks of {} bytes", self.blocks, self.block_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, After) {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        (
            ran,
            Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    #[test]
    fn a_copy_never_sent_is_dropped_and_the_new_one_goes_at_once() {
        let old = Ticket::default();
        let (ran, then) = counter();
        old.supersede(then);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert!(!old.start(), "the old copy must not be sent any more");
    }

    #[test]
    fn a_copy_in_flight_is_waited_for_and_never_resent() {
        let old = Ticket::default();
        assert!(old.start());
        let (ran, then) = counter();
        old.supersede(then);
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the new copy waits while the old one is in flight");
        assert!(!old.start(), "a retry of the old copy is not sent");
        old.finish();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_finished_copy_does_not_hold_the_new_one() {
        let old = Ticket::default();
        assert!(old.start());
        old.finish();
        let (ran, then) = counter();
        old.supersede(then);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
