//! The smallest HTTP/1.1 that XAPI needs: one `POST` per connection, a
//! `Content-Length` (or chunked) body back. Every read is bounded — header
//! lines, header count, body size and total time — so a hostile or broken
//! peer costs a bounded amount of memory and time.
//!
//! The head reader is public because the test emulator serves requests with
//! it.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

/// The largest body read (XAPI replies for big pools are a few MiB).
pub const MAX_BODY: usize = 64 << 20;
const MAX_LINE: usize = 8 << 10;
const MAX_HEADERS: usize = 100;

/// An HTTP-level failure.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The whole exchange took longer than allowed.
    #[error("no complete reply within {0:?}")]
    Timeout(Duration),
    /// Not HTTP, or beyond the limits.
    #[error("malformed HTTP: {0}")]
    Malformed(String),
}

/// A start line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `HTTP/1.1 200 OK` or `POST / HTTP/1.1`, split on spaces (at most 3).
    pub start: Vec<String>,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header named `name` (lower case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The headers.
    pub head: Head,
    /// The body.
    pub body: Vec<u8>,
}

/// A reader that fails once a deadline has passed, so a peer that drips
/// bytes cannot hold a call open forever.
pub struct DeadlineReader<R> {
    inner: R,
    deadline: Instant,
    limit: Duration,
}

impl<R: Read> DeadlineReader<R> {
    /// Wraps `inner` with `limit` from now.
    pub fn new(inner: R, limit: Duration) -> Self {
        Self { inner, deadline: Instant::now() + limit, limit }
    }
}

impl<R: Read> Read for DeadlineReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("deadline of {:?}", self.limit)));
        }
        self.inner.read(buf)
    }
}

fn line(reader: &mut impl BufRead) -> Result<Option<String>, HttpError> {
    let mut bytes = Vec::new();
    let read = reader.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut bytes)?;
    if read == 0 {
        return Ok(None);
    }
    if bytes.len() > MAX_LINE || !bytes.ends_with(b"\n") {
        return Err(HttpError::Malformed("a header line is too long or cut short".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| HttpError::Malformed("a header line is not UTF-8".into()))?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
}

/// Reads a start line and headers; `None` on a clean end of stream before
/// any byte (a client that closed a kept-alive connection).
///
/// # Errors
/// [`HttpError`] for I/O failures and malformed or oversized heads.
pub fn read_head(reader: &mut impl BufRead) -> Result<Option<Head>, HttpError> {
    let Some(start) = line(reader)? else { return Ok(None) };
    let start: Vec<String> = start.splitn(3, ' ').map(str::to_owned).collect();
    if start.len() < 2 {
        return Err(HttpError::Malformed(format!("bad start line {:?}", start.join(" "))));
    }
    let mut headers = Vec::new();
    loop {
        let text = line(reader)?.ok_or_else(|| HttpError::Malformed("headers cut short".into()))?;
        if text.is_empty() {
            return Ok(Some(Head { start, headers }));
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::Malformed("too many headers".into()));
        }
        let (name, value) =
            text.split_once(':').ok_or_else(|| HttpError::Malformed(format!("bad header line {text:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// Reads the body that `head` announces: `Content-Length`, chunked, or (for
/// a reply) everything up to the end of the stream.
///
/// # Errors
/// [`HttpError`] for I/O failures, bad framing, or more than [`MAX_BODY`].
pub fn read_body(reader: &mut impl BufRead, head: &Head, until_eof: bool) -> Result<Vec<u8>, HttpError> {
    let too_big = || HttpError::Malformed(format!("body larger than {MAX_BODY} bytes"));
    if head.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let size_line = line(reader)?.ok_or_else(|| HttpError::Malformed("chunk cut short".into()))?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| HttpError::Malformed(format!("bad chunk size {size_line:?}")))?;
            if body.len() + size > MAX_BODY {
                return Err(too_big());
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            line(reader)?;
            if size == 0 {
                return Ok(body);
            }
        }
    }
    if let Some(length) = head.header("content-length") {
        let length: usize = length.parse().map_err(|_| HttpError::Malformed(format!("bad length {length:?}")))?;
        if length > MAX_BODY {
            return Err(too_big());
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if until_eof {
        reader.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
        if body.len() > MAX_BODY {
            return Err(too_big());
        }
    }
    Ok(body)
}

/// Sends one `POST` and reads the reply, all within `limit`.
///
/// # Errors
/// [`HttpError`] for I/O failures, timeouts and malformed replies.
pub fn post<S: Read + Write>(
    stream: S,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    limit: Duration,
) -> Result<Response, HttpError> {
    let mut reader = BufReader::new(DeadlineReader::new(stream, limit));
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: nvmetcp-xapi-client/{}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (name, value) in headers {
        // Names and values are this crate's constants; a line break in one
        // would split the request, so refuse it rather than send it.
        if [name, value].iter().any(|t| t.contains(['\r', '\n'])) {
            return Err(HttpError::Malformed(format!("header {name:?} holds a line break")));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let stream = reader.get_mut();
    let timed_out = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => HttpError::Timeout(limit),
        _ => HttpError::Io(e),
    };
    stream.inner.write_all(head.as_bytes()).map_err(timed_out)?;
    stream.inner.write_all(body).map_err(timed_out)?;
    stream.inner.flush().map_err(timed_out)?;
    let exchange = |reader: &mut BufReader<DeadlineReader<S>>| -> Result<Response, HttpError> {
        let head = read_head(reader)?.ok_or_else(|| HttpError::Malformed("the peer closed without a reply".into()))?;
        if !head.start[0].starts_with("HTTP/1.") {
            return Err(HttpError::Malformed(format!("not an HTTP reply: {:?}", head.start[0])));
        }
        let status = head.start[1].parse().map_err(|_| HttpError::Malformed("bad status code".into()))?;
        let reason = head.start.get(2).cloned().unwrap_or_default();
        let body = read_body(reader, &head, true)?;
        Ok(Response { status, reason, head, body })
    };
    exchange(&mut reader).map_err(|e| match e {
        HttpError::Io(io) => timed_out(io),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read, Write};
    use std::time::Duration;

    use super::{post, HttpError, MAX_BODY};

    /// A stream whose reads come from a script and whose writes are kept.
    struct Scripted {
        reply: Cursor<Vec<u8>>,
        sent: Vec<u8>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reply.read(buf)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn exchange(reply: &[u8]) -> Result<super::Response, HttpError> {
        let stream = Scripted { reply: Cursor::new(reply.to_vec()), sent: Vec::new() };
        post(stream, "h", "/", &[("Content-Type", "text/xml")], b"<x/>", Duration::from_secs(5))
    }

    #[test]
    fn length_chunked_and_eof_framed_bodies() {
        let r = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/xml\r\n\r\nhelloEXTRA").unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.head.header("content-type")),
            (200, &b"hello"[..], Some("text/xml"))
        );
        let r = exchange(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(r.body, b"hello");
        let r = exchange(b"HTTP/1.0 500 Internal Error\r\n\r\n<html>oops</html>").unwrap();
        assert_eq!(
            (r.status, r.reason.as_str(), r.body.as_slice()),
            (500, "Internal Error", &b"<html>oops</html>"[..])
        );
    }

    #[test]
    fn oversized_and_malformed_replies_are_errors() {
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(matches!(exchange(huge.as_bytes()), Err(HttpError::Malformed(_))));
        let long_line = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(10_000));
        assert!(matches!(exchange(long_line.as_bytes()), Err(HttpError::Malformed(_))));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: y\r\n".repeat(101));
        assert!(matches!(exchange(many.as_bytes()), Err(HttpError::Malformed(_))));
        assert!(matches!(exchange(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(HttpError::Malformed(_))));
        assert!(matches!(exchange(b""), Err(HttpError::Malformed(_))));
        assert!(matches!(exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"), Err(HttpError::Io(_))));
        assert!(matches!(
            exchange(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn the_request_is_one_post_with_its_length() {
        let mut stream =
            Scripted { reply: Cursor::new(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()), sent: Vec::new() };
        post(&mut stream, "xapi", "/RPC2", &[("Content-Type", "text/xml")], b"<body/>", Duration::from_secs(1))
            .unwrap();
        let sent = String::from_utf8(stream.sent).unwrap();
        assert!(sent.starts_with("POST /RPC2 HTTP/1.1\r\nHost: xapi\r\n"), "{sent}");
        assert!(sent.contains("Content-Length: 7\r\n") && sent.ends_with("\r\n\r\n<body/>"), "{sent}");
    }
}
