//! Moving bytes from one socket to another without copying them through
//! this process: `splice(2)` from the source into a pipe, then from the pipe
//! into the sink, so the kernel hands the pages on instead of copying them
//! out to user memory and back (Linux 2.6.17; sockets as the sink through
//! `sendpage` on 4.19, `MSG_SPLICE_PAGES` since 6.5, both for TCP and
//! AF_UNIX). A read's data goes this way from the controller's TCP
//! connection into the NBD connection: the kernel initiator copies a read's
//! data once (socket to bio), and so does this path then (the kernel's NBD
//! driver, socket to bio), instead of three times.
//!
//! A write's data goes the other way: [`hold`] splices it from the NBD
//! connection into a pipe of its own, where it stays until the command is
//! answered, and [`Held::send`] `tee(2)`s it into the thread's pipe and on
//! into the controller's socket, leaving the held copy whole: a write
//! retried on another path after its first path died mid-H2CData sends the
//! same bytes again. The daemon never copies the data (the kernel initiator
//! does not either).

use std::cell::RefCell;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, splice, tee, FcntlArg, OFlag, SpliceFFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{send, MsgFlags};

use crate::block::Payload;
use crate::buffers;

/// How a move failed.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// Reading the source failed: its stream is out of step (some of the
    /// bytes were not taken).
    #[error("reading the source: {0}")]
    Source(io::Error),
    /// Writing the sink failed; every byte of the source was still taken
    /// (and dropped), so the source's stream stays in step.
    #[error("writing the sink: {0}")]
    Sink(io::Error),
}

/// The pipe's capacities asked for, in turn. A pipe counts slots, not
/// bytes: the kernel's NBD driver sends a write one page per `sendmsg`, so a
/// 1 MiB write is 256 segments of its AF_UNIX socket, one slot each, and
/// the bytes read with the request's header take one more. Twice 1 MiB
/// needs `CAP_SYS_RESOURCE` past `/proc/sys/fs/pipe-max-size`; without it,
/// 1 MiB, then the default, and a write that overflows its pipe goes on
/// into another ([`MAX_PIPES`]).
const PIPE_BYTES: [i32; 2] = [2 << 20, 1 << 20];

/// Most pipes one held write fills (two descriptors each): a page-per-call
/// 1 MiB write takes two 1 MiB pipes (seventeen of the 64 KiB default: that
/// one is copied).
const MAX_PIPES: usize = 8;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        Self::sized(&PIPE_BYTES)
    }

    /// A pipe of the first of `sizes` the kernel grants, else the default
    /// (larger than /proc/sys/fs/pipe-max-size needs `CAP_SYS_RESOURCE`;
    /// a smaller pipe only means more rounds, or more pipes).
    fn sized(sizes: &[i32]) -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let capacity = sizes
            .iter()
            .find_map(|&bytes| fcntl(write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(bytes)).ok())
            .map_or_else(|| fcntl(write.as_raw_fd(), FcntlArg::F_GETPIPE_SZ), Ok)
            .map_err(io::Error::from)?;
        Ok(Self { read, write, capacity: usize::try_from(capacity).unwrap_or(4096).max(4096) })
    }
}

thread_local! {
    /// One pipe per thread that moves bytes (the queues' reader threads),
    /// empty between moves.
    static PIPE: RefCell<Option<Pipe>> = const { RefCell::new(None) };
    /// The pipes a thread copies held data into to send it (one per pipe
    /// of the held write), empty between sends.
    static COPIES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// `MSG_MORE` (`include/linux/socket.h`, Linux 2.4), which nix does not
/// name: the PDU head waits for its data in the same segment.
const MSG_MORE: MsgFlags = MsgFlags::from_bits_retain(0x8000);

/// A write's data held in pipes, in the kernel's pages: sent as often as
/// needed without ever being copied into this process.
pub struct Held {
    /// Each pipe with the bytes it holds, in the data's order.
    pipes: Vec<(Pipe, usize)>,
    len: usize,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({} bytes in {} pipes)", self.len, self.pipes.len())
    }
}

/// Takes a write's data: `head` (bytes already read from `from`), then
/// `len - head.len()` bytes of `from`, into pipes: when one is full (its
/// capacity counts the socket's segments, not bytes), into the next. When
/// no more pipes can be had, the data is read into a buffer instead;
/// either way every byte is taken.
///
/// # Errors
/// Reading `from` failed (its stream is out of step).
pub fn hold<S: Read + AsFd>(head: &[u8], from: &mut S, len: usize) -> io::Result<Payload> {
    hold_in(head, from, len, &PIPE_BYTES)
}

fn hold_in<S: Read + AsFd>(head: &[u8], from: &mut S, len: usize, sizes: &[i32]) -> io::Result<Payload> {
    let head = &head[..head.len().min(len)];
    let mut pipes: Vec<(Pipe, usize)> = Vec::new();
    // The next pipe, non-blocking on its side: a full pipe says so instead
    // of waiting for a reader that is this thread. None: out of pipes (or
    // descriptors, two per pipe).
    let next = |pipes: &mut Vec<(Pipe, usize)>| -> io::Result<bool> {
        if pipes.len() == MAX_PIPES {
            return Ok(false);
        }
        let Ok(pipe) = Pipe::sized(sizes) else { return Ok(false) };
        fcntl(pipe.write.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
        pipes.push((pipe, 0));
        Ok(true)
    };
    let mut full = !next(&mut pipes)?;
    let mut put = 0;
    while put < head.len() && !full {
        let Some((pipe, held)) = pipes.last_mut() else { break };
        match retry(|| nix::unistd::write(&pipe.write, &head[put..])) {
            Ok(n) => {
                put += n;
                *held += n;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => full = !next(&mut pipes)?,
            Err(error) => return Err(error),
        }
    }
    let mut got = put;
    if put == head.len() && !full {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        let mut waited = false;
        while got < len {
            let Some((pipe, held)) = pipes.last_mut() else { break };
            match retry(|| splice(from.as_fd(), None, pipe.write.as_fd(), None, len - got, flags)) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed in the middle of data",
                    ))
                }
                Ok(n) => {
                    got += n;
                    *held += n;
                    waited = false;
                }
                // Nothing to read yet, or the pipe is full: after a wait
                // for the socket, only the latter (then the next pipe).
                Err(error) if error.kind() == io::ErrorKind::WouldBlock && !waited => {
                    let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
                    retry(|| poll(&mut fds, PollTimeout::NONE))?;
                    waited = true;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if !next(&mut pipes)? {
                        break;
                    }
                    waited = false;
                }
                Err(error) => return Err(error),
            }
        }
        if got == len {
            pipes.retain(|(_, held)| *held > 0);
            return Ok(Payload::Held(Held { pipes, len }));
        }
    }
    // Out of pipes: what they hold, then the rest, into a buffer (when
    // the head did not fit, nothing was spliced after it).
    let mut data = buffers::take(len);
    let mut at = 0;
    for (pipe, held) in &pipes {
        read_pipe(pipe, &mut data[at..at + held])?;
        at += held;
    }
    let tail = head.len() - put;
    data[got..got + tail].copy_from_slice(&head[put..]);
    from.read_exact(&mut data[got + tail..])?;
    Ok(Payload::Bytes(data))
}

fn read_pipe(pipe: &Pipe, into: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    while at < into.len() {
        match retry(|| nix::unistd::read(pipe.read.as_raw_fd(), &mut into[at..]))? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a held pipe ran dry")),
            n => at += n,
        }
    }
    Ok(())
}

impl Held {
    /// Bytes held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The data, read out of the pipes into a buffer (for a use that needs
    /// it in memory: in-capsule data, a data digest, part of it).
    ///
    /// # Errors
    /// Reading a pipe failed.
    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        let mut data = buffers::take(self.len);
        let mut at = 0;
        for (pipe, held) in &self.pipes {
            read_pipe(pipe, &mut data[at..at + held])?;
            at += held;
        }
        Ok(data)
    }

    /// Sends `pieces` to the socket `to`, each a PDU head (written as is)
    /// followed by the next that many bytes of the held data, which stays
    /// held. Returns `Ok(false)`, having sent nothing, when this thread's
    /// pipes cannot take a copy of it all.
    ///
    /// # Errors
    /// Writing the socket failed (part of it may have been sent).
    pub fn send(&self, pieces: &[(&[u8], usize)], to: BorrowedFd<'_>) -> io::Result<bool> {
        COPIES.with(|cell| {
            let mut copies = cell.borrow_mut();
            while copies.len() < self.pipes.len() {
                copies.push(Pipe::new()?);
            }
            let result = self.send_through(&copies, pieces, to);
            if !matches!(result, Ok(true)) {
                // A partial copy is garbage for the next move.
                copies.clear();
            }
            result
        })
    }

    fn send_through(&self, copies: &[Pipe], pieces: &[(&[u8], usize)], to: BorrowedFd<'_>) -> io::Result<bool> {
        let total: usize = pieces.iter().map(|(_, n)| n).sum();
        if total != self.len {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the pieces do not cover the held data"));
        }
        // Every pipe is copied before a byte is sent. A tee starts from the
        // first byte held: one call must copy each pipe whole.
        let flags = SpliceFFlags::SPLICE_F_NONBLOCK;
        for ((pipe, held), copy) in self.pipes.iter().zip(copies) {
            match retry(|| tee(pipe.read.as_fd(), copy.write.as_fd(), *held, flags)) {
                Ok(n) if n == *held => {}
                Ok(_) => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        let more = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_MORE;
        let mut copied = self.pipes.iter().map(|(_, held)| *held).zip(copies);
        let mut current: Option<(usize, &Pipe)> = None;
        let mut after = total;
        for (head, n) in pieces {
            let mut at = 0;
            while at < head.len() {
                at += retry(|| send(to.as_raw_fd(), &head[at..], MSG_MORE | MsgFlags::MSG_NOSIGNAL))?;
            }
            let mut left = *n;
            while left > 0 {
                let (in_copy, copy) = match current.take() {
                    Some((in_copy, copy)) if in_copy > 0 => (in_copy, copy),
                    _ => copied.next().ok_or(io::ErrorKind::UnexpectedEof)?,
                };
                let step = left.min(in_copy);
                let flags = if after > step { more } else { SpliceFFlags::SPLICE_F_MOVE };
                let gave = retry(|| splice(copy.read.as_fd(), None, to, None, step, flags))?;
                if gave == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                left -= gave;
                after -= gave;
                current = Some((in_copy - gave, copy));
            }
        }
        Ok(true)
    }
}

fn retry<T>(mut call: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(nix::errno::Errno::EINTR) => {}
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Moves exactly `len` bytes from the socket `from` to the socket `to`.
///
/// # Errors
/// [`MoveError`], saying which side failed.
pub fn move_bytes(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> Result<(), MoveError> {
    if len == 0 {
        return Ok(());
    }
    PIPE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Pipe::new().map_err(MoveError::Source)?);
        }
        let Some(pipe) = slot.as_ref() else { return Err(MoveError::Source(io::ErrorKind::Other.into())) };
        let result = rounds(pipe, from, to, len);
        if result.is_err() {
            // Whatever is left in the pipe is garbage for the next move.
            *slot = None;
        }
        result
    })
}

/// Fills the (empty) pipe from the source, then empties it into the sink,
/// until `len` bytes went through: the pipe is never full when the source
/// is spliced into it, so that splice never waits for this thread.
fn rounds(pipe: &Pipe, from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> Result<(), MoveError> {
    let mut left = len;
    while left > 0 {
        let more = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_MORE;
        let took = retry(|| splice(from, None, pipe.write.as_fd(), None, left.min(pipe.capacity), more))
            .map_err(MoveError::Source)?;
        if took == 0 {
            return Err(MoveError::Source(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed in the middle of data",
            )));
        }
        left -= took;
        let mut held = took;
        while held > 0 {
            let flags = if left > 0 { more } else { SpliceFFlags::SPLICE_F_MOVE };
            match retry(|| splice(pipe.read.as_fd(), None, to, None, held, flags)) {
                Ok(0) => return Err(sink_failed(from, left, io::ErrorKind::WriteZero.into())),
                Ok(gave) => held -= gave,
                Err(error) => return Err(sink_failed(from, left, error)),
            }
        }
    }
    Ok(())
}

/// The sink failed: the rest of the source's bytes are read and dropped,
/// so its stream stays in step.
fn sink_failed(from: BorrowedFd<'_>, left: usize, error: io::Error) -> MoveError {
    match drain(from, left) {
        Ok(()) => MoveError::Sink(error),
        Err(source) => MoveError::Source(source),
    }
}

/// Reads and drops `len` bytes of `from`.
///
/// # Errors
/// The socket's error, or `UnexpectedEof`.
pub fn drain(from: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let mut file = std::fs::File::from(from.try_clone_to_owned()?);
    let mut scratch = vec![0u8; len.min(64 * 1024)];
    let mut left = len;
    while left > 0 {
        let n = left.min(scratch.len());
        file.read_exact(&mut scratch[..n])?;
        left -= n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;

    fn may_pass_pipe_max_size() -> bool {
        let (_read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        fcntl(write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_BYTES[0])).is_ok()
    }

    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn bytes_go_from_a_tcp_socket_into_a_unix_socket_exactly_and_in_order() {
        let (mut sender, source) = tcp_pair();
        let (sink, mut reader) = UnixStream::pair().unwrap();
        let data: Vec<u8> = (0..3 * (1 << 20) + 12345).map(|i: usize| u8::try_from(i * 7 % 251).unwrap_or(0)).collect();
        let after = b"the next PDU".to_vec();
        let sent = {
            let (data, after) = (data.clone(), after.clone());
            std::thread::spawn(move || {
                // In small pieces, so the move spans many segments and rounds.
                for chunk in data.chunks(70_001) {
                    sender.write_all(chunk).unwrap();
                }
                sender.write_all(&after).unwrap();
                sender
            })
        };
        let received = std::thread::spawn(move || {
            let mut got = vec![0u8; 3 * (1 << 20) + 12345];
            reader.read_exact(&mut got).unwrap();
            got
        });
        move_bytes(source.as_fd(), sink.as_fd(), data.len()).unwrap();
        assert!(received.join().unwrap() == data, "every byte, in order");
        // Not a byte more was taken from the source.
        let mut next = vec![0u8; after.len()];
        (&source).read_exact(&mut next).unwrap();
        assert_eq!(next, after);
        drop(sent.join().unwrap());
    }

    #[test]
    fn held_data_is_sent_as_often_as_asked_with_its_heads_and_stays_whole() {
        let (mut nbd, source) = UnixStream::pair().unwrap();
        let data: Vec<u8> = (0..(1 << 20)).map(|i: usize| u8::try_from(i * 11 % 251).unwrap_or(0)).collect();
        let writer = {
            let data = data.clone();
            std::thread::spawn(move || {
                for chunk in data[1000..].chunks(30_000) {
                    nbd.write_all(chunk).unwrap();
                }
                nbd.write_all(b"next request").unwrap();
                nbd
            })
        };
        // The first 1000 bytes came with the request's header (already read).
        let mut socket = &source;
        let Payload::Held(held) = hold(&data[..1000], &mut socket, data.len()).unwrap() else {
            panic!("1 MiB in pieces fits in a held pipe");
        };
        assert_eq!(held.len(), data.len());
        let mut next = [0u8; 12];
        (&source).read_exact(&mut next).unwrap();
        assert_eq!(&next, b"next request", "not a byte more was taken");
        // Sent twice (a retry on another path), in two PDUs each time.
        for round in 0..2 {
            let (to, mut from) = tcp_pair();
            let reader = std::thread::spawn(move || {
                let mut got = vec![0u8; 8 + (1 << 20)];
                from.read_exact(&mut got).unwrap();
                got
            });
            let half = data.len() / 2;
            assert!(held.send(&[(b"head", half), (b"tail", data.len() - half)], to.as_fd()).unwrap());
            drop(to);
            let got = reader.join().unwrap();
            assert_eq!(&got[..4], b"head", "round {round}");
            assert!(got[4..4 + half] == data[..half], "round {round}: first half");
            assert_eq!(&got[4 + half..8 + half], b"tail", "round {round}");
            assert!(got[8 + half..] == data[half..], "round {round}: second half");
        }
        assert!(held.into_bytes().unwrap() == data, "still whole after two sends");
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_1_mib_write_sent_a_page_per_call_as_the_nbd_driver_does_is_held_whole() {
        // drivers/block/nbd.c sends a request's data one bio segment (a
        // page) per sendmsg, so an AF_UNIX socket holds 256 segments, each
        // a pipe slot when spliced; the bytes that came with the header
        // take one more.
        let (mut nbd, source) = UnixStream::pair().unwrap();
        let data: Vec<u8> = (0..(1 << 20)).map(|i: usize| u8::try_from(i * 13 % 251).unwrap_or(0)).collect();
        let head = 4096 - 28;
        let writer = {
            let data = data.clone();
            std::thread::spawn(move || {
                nbd.write_all(&data[head..4096]).unwrap();
                for page in data[4096..].chunks(4096) {
                    nbd.write_all(page).unwrap();
                }
                nbd
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut socket = &source;
        let taken = hold(&data[..head], &mut socket, data.len()).unwrap();
        // Held whether or not this process may pass pipe-max-size (CI's
        // root may not): a full pipe goes on into the next.
        let Payload::Held(held) = taken else { panic!("a page-per-call 1 MiB write was copied, not held") };
        let pipes = if may_pass_pipe_max_size() { 1 } else { 2 };
        assert_eq!(held.pipes.len(), pipes, "{held:?}");
        assert!(held.into_bytes().unwrap() == data, "every byte, in order");
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_write_held_in_several_pipes_is_sent_whole_again_after_a_send_died_half_way() {
        use nix::sys::socket::{setsockopt, sockopt};
        // 1 MiB a page per call into 256 KiB pipes (64 slots): five pipes.
        let (mut nbd, source) = UnixStream::pair().unwrap();
        let len = 1 << 20;
        let data: Vec<u8> = (0..len).map(|i: usize| u8::try_from(i * 17 % 251).unwrap_or(0)).collect();
        let head = 1000;
        let writer = {
            let data = data.clone();
            std::thread::spawn(move || {
                for page in data[head..].chunks(4096) {
                    nbd.write_all(page).unwrap();
                }
                nbd.write_all(b"next request").unwrap();
                nbd
            })
        };
        let mut socket = &source;
        let Payload::Held(held) = hold_in(&data[..head], &mut socket, len, &[256 << 10]).unwrap() else {
            panic!("1 MiB fits in eight 256 KiB pipes");
        };
        assert!(held.pipes.len() > 1, "{held:?}");
        let mut next = [0u8; 12];
        (&source).read_exact(&mut next).unwrap();
        assert_eq!(&next, b"next request", "not a byte more was taken");
        let third = len / 3;
        let pieces: [(&[u8], usize); 2] = [(b"head", third), (b"tail", len - third)];
        // The first path dies after 100 KiB of the data (small buffers, so
        // the send is still under way then).
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        setsockopt(&listener, sockopt::RcvBuf, &4096).unwrap();
        let to = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        setsockopt(&to, sockopt::SndBuf, &4096).unwrap();
        let (mut from, _) = listener.accept().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 100 * 1024];
            from.read_exact(&mut got).unwrap();
        });
        assert!(held.send(&pieces, to.as_fd()).is_err(), "the send to a closed connection fails");
        reader.join().unwrap();
        drop(to);
        // Sent again, on another path: every byte, in two PDUs.
        let (to, mut from) = tcp_pair();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 8 + len];
            from.read_exact(&mut got).unwrap();
            got
        });
        assert!(held.send(&pieces, to.as_fd()).unwrap());
        drop(to);
        let got = reader.join().unwrap();
        assert_eq!(&got[..4], b"head");
        assert!(got[4..4 + third] == data[..third], "first piece");
        assert_eq!(&got[4 + third..8 + third], b"tail");
        assert!(got[8 + third..] == data[third..], "second piece, across the pipes");
        assert!(held.into_bytes().unwrap() == data, "still whole");
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_closed_sink_still_takes_every_byte_of_the_source_and_a_short_source_is_an_error() {
        let (mut sender, source) = tcp_pair();
        let (sink, reader) = UnixStream::pair().unwrap();
        drop(reader);
        sender.write_all(&vec![5u8; 200_000]).unwrap();
        sender.write_all(b"next").unwrap();
        let error = move_bytes(source.as_fd(), sink.as_fd(), 200_000).unwrap_err();
        assert!(matches!(error, MoveError::Sink(_)), "{error}");
        let mut next = [0u8; 4];
        (&source).read_exact(&mut next).unwrap();
        assert_eq!(&next, b"next", "the source's stream stays in step");

        let (sink, _reader) = UnixStream::pair().unwrap();
        sender.write_all(&[1u8; 1000]).unwrap();
        drop(sender);
        let error = move_bytes(source.as_fd(), sink.as_fd(), 5000).unwrap_err();
        assert!(matches!(error, MoveError::Source(_)), "{error}");
    }
}
