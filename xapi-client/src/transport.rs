//! Where XAPI is and how to reach it: the dom0 unix socket, plain HTTP (tests
//! only), or HTTPS verified against the system roots, pinned to a SHA-256
//! certificate fingerprint, or — only when asked — unverified.
//!
//! Each call is one connection with `Connection: close`: XAPI calls are few
//! and a fresh connection never carries state from a failed call.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::http::{post, HttpError, Response};

/// The dom0 socket; calls on it are root without a password, and a pool
/// member forwards them to the master.
pub const DOM0_SOCKET: &str = "/var/lib/xcp/xapi";

/// A SHA-256 certificate fingerprint, in XAPI's colon-separated hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl std::str::FromStr for Fingerprint {
    type Err = crate::Error;

    /// Accepts `AB:CD:…` (as XAPI and `openssl x509 -fingerprint` print it),
    /// plain hex, and an optional `sha256:` or `sha-256:` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            crate::Error::Usage(format!(
                "{s:?} is not a SHA-256 fingerprint: give 32 hex bytes, e.g. as printed by `openssl x509 -noout \
                 -fingerprint -sha256 -in /etc/xensource/xapi-ssl.pem`"
            ))
        };
        let lower = s.trim().to_ascii_lowercase();
        let hex: String = lower
            .strip_prefix("sha-256:")
            .or_else(|| lower.strip_prefix("sha256:"))
            .unwrap_or(&lower)
            .chars()
            .filter(|c| *c != ':')
            .collect();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&hex.join(":"))
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// How the server certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsVerify {
    /// A chain to the system's trusted roots, for the host name.
    SystemRoots,
    /// Exactly this leaf certificate (XAPI's default certificate is
    /// self-signed, so this is the usual choice).
    Fingerprint(Fingerprint),
    /// No check at all. Only on explicit request, for labs.
    Insecure,
}

/// One XAPI endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket (normally [`DOM0_SOCKET`]).
    Unix(PathBuf),
    /// Plain HTTP, for tests and emulators.
    Http {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// HTTPS.
    Https {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// The certificate check.
        verify: TlsVerify,
    },
}

impl Endpoint {
    /// The dom0 unix socket.
    #[must_use]
    pub fn dom0() -> Self {
        Self::Unix(PathBuf::from(DOM0_SOCKET))
    }

    /// Parses `unix:/path`, `/path`, `http://host[:port]` or
    /// `https://host[:port]` (verified with `verify`).
    ///
    /// # Errors
    /// [`crate::Error::Usage`] for anything else.
    pub fn parse(text: &str, verify: TlsVerify) -> Result<Self, crate::Error> {
        if let Some(path) = text.strip_prefix("unix:").or(text.starts_with('/').then_some(text)) {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            crate::Error::Usage(format!("{text:?} is not an XAPI address: use https://host, http://host or unix:/path"))
        })?;
        let authority = rest.split('/').next().unwrap_or_default();
        let default_port = if scheme == "https" { 443 } else { 80 };
        let (host, port) = split_host_port(authority, default_port)
            .ok_or_else(|| crate::Error::Usage(format!("{text:?} has no valid host[:port]")))?;
        match scheme {
            "http" => Ok(Self::Http { host, port }),
            "https" => Ok(Self::Https { host, port, verify }),
            _ => Err(crate::Error::Usage(format!("{text:?}: the scheme must be https, http or unix"))),
        }
    }

    /// The same endpoint kind and port on another host (the pool master);
    /// `pin` replaces a pinned fingerprint when the member vouched for the
    /// master's certificate.
    #[must_use]
    pub fn on_host(&self, new_host: &str, pin: Option<Fingerprint>) -> Self {
        match self {
            Self::Unix(path) => Self::Unix(path.clone()),
            Self::Http { port, .. } => Self::Http { host: new_host.to_owned(), port: *port },
            Self::Https { port, verify, .. } => {
                let verify = match (verify, pin) {
                    (TlsVerify::Fingerprint(_), Some(pin)) => TlsVerify::Fingerprint(pin),
                    (other, _) => other.clone(),
                };
                Self::Https { host: new_host.to_owned(), port: *port, verify }
            }
        }
    }

    /// Whether this endpoint is the network (where `HOST_IS_SLAVE` can occur).
    #[must_use]
    pub fn is_network(&self) -> bool {
        !matches!(self, Self::Unix(_))
    }

    fn host_header(&self) -> String {
        match self {
            Self::Unix(_) => "localhost".to_owned(),
            Self::Http { host, port } | Self::Https { host, port, .. } => bracketed(host, *port),
        }
    }
}

fn bracketed(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            _ => (authority, None),
        }
    };
    let port = port.map_or(Some(default_port), |p| p.parse().ok())?;
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Http { host, port } => write!(f, "http://{}", bracketed(host, *port)),
            Self::Https { host, port, .. } => write!(f, "https://{}", bracketed(host, *port)),
        }
    }
}

/// Time limits of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open the connection (and finish the TLS handshake).
    pub connect: Duration,
    /// For the whole request and reply.
    pub call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(10), call: Duration::from_secs(120) }
    }
}

/// Why one exchange failed, before it is tied to a method.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    Connect(std::io::Error),
    Tls(String),
    Http(HttpError),
}

fn connect_tcp(host: &str, port: u16, limit: Duration) -> Result<TcpStream, ExchangeError> {
    let addrs: Vec<_> = (host, port).to_socket_addrs().map_err(ExchangeError::Connect)?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} has no address"));
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, limit) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(ExchangeError::Connect(last))
}

fn set_timeouts<S>(stream: &S, set: impl Fn(&S, Option<Duration>) -> std::io::Result<()>, limit: Duration) {
    // Failing to set a timeout is not worth failing the call for: the
    // deadline reader still bounds the exchange.
    let _ = set(stream, Some(limit));
}

/// Posts `body` to `path` on `endpoint` and returns the reply.
pub(crate) fn exchange(
    endpoint: &Endpoint,
    path: &str,
    content_type: &str,
    extra_header: Option<(&str, &str)>,
    body: &[u8],
    timeouts: Timeouts,
) -> Result<Response, ExchangeError> {
    let host = endpoint.host_header();
    let mut headers = vec![("Content-Type", content_type)];
    headers.extend(extra_header);
    let run = |stream: &mut dyn ReadWrite| post(stream, &host, path, &headers, body, timeouts.call);
    match endpoint {
        Endpoint::Unix(socket) => {
            let mut stream = UnixStream::connect(socket).map_err(ExchangeError::Connect)?;
            set_timeouts(&stream, UnixStream::set_read_timeout, timeouts.call);
            set_timeouts(&stream, UnixStream::set_write_timeout, timeouts.call);
            run(&mut stream).map_err(ExchangeError::Http)
        }
        Endpoint::Http { host, port } => {
            let mut stream = connect_tcp(host, *port, timeouts.connect)?;
            set_timeouts(&stream, TcpStream::set_read_timeout, timeouts.call);
            set_timeouts(&stream, TcpStream::set_write_timeout, timeouts.call);
            run(&mut stream).map_err(ExchangeError::Http)
        }
        #[cfg(feature = "tls")]
        Endpoint::Https { host, port, verify } => {
            let stream = connect_tcp(host, *port, timeouts.connect)?;
            set_timeouts(&stream, TcpStream::set_read_timeout, timeouts.connect);
            set_timeouts(&stream, TcpStream::set_write_timeout, timeouts.connect);
            let mut tls = crate::tls::handshake(stream, host, verify).map_err(ExchangeError::Tls)?;
            set_timeouts(tls.get_ref(), TcpStream::set_read_timeout, timeouts.call);
            set_timeouts(tls.get_ref(), TcpStream::set_write_timeout, timeouts.call);
            run(&mut tls).map_err(ExchangeError::Http)
        }
        #[cfg(not(feature = "tls"))]
        Endpoint::Https { .. } => Err(ExchangeError::Tls("this build has no TLS support (feature `tls`)".into())),
    }
}

/// A byte stream in both directions.
pub(crate) trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
