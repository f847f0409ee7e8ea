//! Moving bytes from one socket to another without copying them through
//! this process: `splice(2)` from the source into a pipe, then from the pipe
//! into the sink, so the kernel hands the pages on instead of copying them
//! out to user memory and back (Linux 2.6.17; sockets as the sink through
//! `sendpage` on 4.19, `MSG_SPLICE_PAGES` since 6.5, both for TCP and
//! AF_UNIX). A read's data goes this way from the controller's TCP
//! connection into the NBD connection: the kernel initiator copies a read's
//! data once (socket to bio), and so does this path then (the kernel's NBD
//! driver, socket to bio), instead of three times.

use std::cell::RefCell;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};

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

/// The pipe's capacity asked for: a whole 1 MiB command's data per round.
const PIPE_BYTES: i32 = 1 << 20;

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        // Larger than /proc/sys/fs/pipe-max-size needs root; the default
        // (64 KiB) only means more rounds.
        let capacity = fcntl(write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_BYTES))
            .or_else(|_| fcntl(write.as_raw_fd(), FcntlArg::F_GETPIPE_SZ))
            .map_err(io::Error::from)?;
        Ok(Self { read, write, capacity: usize::try_from(capacity).unwrap_or(4096).max(4096) })
    }
}

thread_local! {
    /// One pipe per thread that moves bytes (the queues' reader threads),
    /// empty between moves.
    static PIPE: RefCell<Option<Pipe>> = const { RefCell::new(None) };
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
