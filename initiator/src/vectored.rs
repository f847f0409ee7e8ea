//! One vectored write of many slices, as `write_all` does for one: header
//! and data go out where they lie, in as few system calls as the socket
//! allows.

use std::io::{self, IoSlice, Write};

/// Writes every slice, in order.
///
/// # Errors
/// The socket's error, or `WriteZero` when it takes nothing.
pub fn write_all<W: Write>(writer: &mut W, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match writer.write_vectored(slices) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the socket took no bytes")),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most 3 bytes per call, so every slice boundary is crossed.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_byte_goes_out_in_order_however_little_each_call_takes() {
        let mut out = Trickle(Vec::new());
        let (a, b, c) = (b"header".to_vec(), b"".to_vec(), b"data!".to_vec());
        write_all(&mut out, &mut [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&c)]).unwrap();
        assert_eq!(out.0, b"headerdata!");
    }
}
