//! Validated values that end up in the kernel's fabrics option string.
//!
//! The kernel parses `/dev/nvme-fabrics` input as `key=value` tokens separated
//! by `,` or newlines. A value carrying a `,` or a newline would therefore
//! smuggle in another option (`nqn=a,hostnqn=…`), so every value is checked
//! here, in its type, before it can reach the renderer: NQNs and interface
//! names from a strict character set, addresses parsed into `IpAddr` (host
//! names resolved first: the kernel only takes numeric addresses), ports as
//! numbers, and DH-HMAC-CHAP keys in their exact `DHHC-1:` format.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// Why a value was rejected; the message names the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is not valid: {why}")]
pub struct InvalidValue {
    /// What kind of value (e.g. "subsystem NQN").
    pub what: &'static str,
    /// The value, or `<redacted>` for secrets.
    pub value: String,
    /// What is wrong and what is allowed.
    pub why: String,
}

fn invalid(what: &'static str, value: &str, why: impl Into<String>) -> InvalidValue {
    InvalidValue { what, value: value.to_owned(), why: why.into() }
}

/// An NVMe Qualified Name (subsystem or host), at most 223 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nqn(String);

impl Nqn {
    /// The well-known NQN of discovery controllers.
    pub const DISCOVERY: &'static str = "nqn.2014-08.org.nvmexpress.discovery";

    /// The NQN as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Nqn {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "NQN";
        if !s.starts_with("nqn.") {
            return Err(invalid(WHAT, s, "an NQN starts with \"nqn.\" (e.g. nqn.2014-08.org.example:array1)"));
        }
        if s.len() > 223 {
            return Err(invalid(WHAT, s, "an NQN is at most 223 bytes"));
        }
        if let Some(bad) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || ".:-_+@/".contains(*c))) {
            return Err(invalid(WHAT, s, format!("{bad:?} is not allowed (letters, digits and . : - _ + @ / only)")));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for Nqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host ID: a UUID, never all zeros (QEMU and cloned hosts produce those).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostId(String);

impl HostId {
    /// The UUID in lower-case dashed form.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HostId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "host ID";
        let lower = s.trim().to_ascii_lowercase();
        if !crate::ids::is_uuid(&lower) {
            return Err(invalid(WHAT, s, "a host ID is a UUID like 1b4e28ba-2fa1-11d2-883f-0016d3cca427"));
        }
        if lower.bytes().all(|b| b == b'0' || b == b'-') {
            return Err(invalid(WHAT, s, "the all-zero UUID is not a host identity"));
        }
        Ok(Self(lower))
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fabrics transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// NVMe/TCP (`nvme_tcp`).
    Tcp,
    /// NVMe/RDMA (`nvme_rdma`): RoCE, iWARP, InfiniBand.
    Rdma,
}

impl Transport {
    /// The option-string and sysfs spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Rdma => "rdma",
        }
    }

    /// The kernel module implementing the transport.
    #[must_use]
    pub const fn module(self) -> &'static str {
        match self {
            Self::Tcp => "nvme_tcp",
            Self::Rdma => "nvme_rdma",
        }
    }
}

impl FromStr for Transport {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "rdma" => Ok(Self::Rdma),
            other => Err(invalid("transport", other, "use tcp or rdma")),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transport address and port, resolved to a numeric IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Portal {
    /// The address (the kernel takes numeric addresses only).
    pub addr: IpAddr,
    /// The service id (TCP port).
    pub port: u16,
}

impl Portal {
    /// The NVMe/TCP I/O port by convention.
    pub const IO_PORT: u16 = 4420;
    /// The discovery port by convention.
    pub const DISCOVERY_PORT: u16 = 8009;

    /// Parses a numeric `address[:port]` (`[v6]:port` for IPv6); no name
    /// lookup happens here (see [`Portal::resolve`]). `default_port` applies
    /// when none is given.
    ///
    /// # Errors
    /// [`InvalidValue`] naming the text and the expected form; a host name is
    /// refused here.
    pub fn parse(text: &str, default_port: u16) -> Result<Self, InvalidValue> {
        let (host, port) = split_portal(text, default_port)?;
        match host.parse::<IpAddr>() {
            Ok(addr) => Ok(Self { addr, port }),
            Err(_) => Err(invalid(
                "portal",
                text.trim(),
                format!("{host:?} is not an IP address (host names are resolved by Portal::resolve); {PORTAL_FORM}"),
            )),
        }
    }

    /// Like [`Portal::parse`], and resolves a host name to its first address:
    /// the one explicit DNS step.
    ///
    /// # Errors
    /// [`InvalidValue`] naming the text, or the resolution failure.
    pub fn resolve(text: &str, default_port: u16) -> Result<Self, InvalidValue> {
        const WHAT: &str = "portal";
        let (host, port) = split_portal(text, default_port)?;
        if let Ok(addr) = host.parse::<IpAddr>() {
            return Ok(Self { addr, port });
        }
        let text = text.trim();
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(invalid(
                WHAT,
                text,
                format!("{host:?} is neither an IP address nor a host name; {PORTAL_FORM}"),
            ));
        }
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| invalid(WHAT, text, format!("cannot resolve {host}: {e}")))?
            .map(|a| a.ip())
            .next()
            .ok_or_else(|| invalid(WHAT, text, format!("{host} resolves to no address")))?;
        Ok(Self { addr, port })
    }

    /// The socket address.
    #[must_use]
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// IPv4 or IPv6, as the kernel's `adrfam`.
    #[must_use]
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

const PORTAL_FORM: &str = "use address[:port], e.g. 10.0.0.1:4420 or [fd00::1]:4420";

/// `address[:port]` split into the host part and the port.
fn split_portal(text: &str, default_port: u16) -> Result<(&str, u16), InvalidValue> {
    const WHAT: &str = "portal";
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| invalid(WHAT, text, PORTAL_FORM))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| invalid(WHAT, text, PORTAL_FORM))?),
        };
        (host, port)
    } else if text.matches(':').count() > 1 {
        (text, None) // a bare IPv6 address
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => {
            p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| invalid(WHAT, text, "the port must be 1-65535"))?
        }
    };
    if host.is_empty() {
        return Err(invalid(WHAT, text, PORTAL_FORM));
    }
    Ok((host, port))
}

/// A comma-separated list of portals (`a[:p],[v6]:p,…`), each resolved with
/// [`Portal::resolve`], duplicates dropped, in order: the one portal-list
/// parser of device-config, the host plugin and the admin command.
///
/// # Errors
/// The first item's [`InvalidValue`] (its `value` is the item).
pub fn portal_list(text: &str, default_port: u16) -> Result<Vec<Portal>, InvalidValue> {
    let mut portals = Vec::new();
    for item in split_list(text) {
        let portal = Portal::resolve(item, default_port)?;
        if !portals.contains(&portal) {
            portals.push(portal);
        }
    }
    Ok(portals)
}

/// Splits at commas outside `[…]`, trimming and dropping empty items.
fn split_list(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in value.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(value[start..].trim());
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

impl fmt::Display for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// A network interface name for `host_iface` (at most 15 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InterfaceName {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 15
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && s != "."
            && s != "..";
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(invalid("interface name", s, "1-15 letters, digits, '.', '_' or '-' (e.g. eth1, xenbr1)"))
        }
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Values kept in state files (a [`PathKey`](super::options::PathKey), an
/// SR's state) are written as their text and read back through their one
/// parser, so a damaged file cannot bring in a value the parser refuses.
macro_rules! serde_as_text {
    ($($name:ident),*) => {$(
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        /// Test fixtures write literals; a bad one fails the test.
        #[cfg(test)]
        impl From<&str> for $name {
            #[allow(clippy::expect_used)] // a test's own literal
            fn from(text: &str) -> Self {
                text.parse().expect("a valid literal")
            }
        }
    )*};
}

serde_as_text!(Nqn, Transport, InterfaceName);

/// A DH-HMAC-CHAP secret in the `DHHC-1:<hash>:<base64>:` representation.
/// Never printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct DhchapKey(String);

impl DhchapKey {
    /// The secret itself, for the option string only.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for DhchapKey {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |why: &str| invalid("DH-HMAC-CHAP key", "<redacted>", why);
        let s = s.trim();
        let rest =
            s.strip_prefix("DHHC-1:").ok_or_else(|| fail("it must start with DHHC-1: (see nvme gen-dhchap-key)"))?;
        let (hash, rest) = rest.split_once(':').ok_or_else(|| fail("expected DHHC-1:<hash>:<base64 key>:"))?;
        if !matches!(hash, "00" | "01" | "02" | "03") {
            return Err(fail("the hash field must be 00, 01, 02 or 03"));
        }
        let key = rest.strip_suffix(':').ok_or_else(|| fail("it must end with ':'"))?;
        let base64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
        let body = key.trim_end_matches('=');
        if key.len() < 48 || key.len() % 4 != 0 || !body.chars().all(base64) || key.len() - body.len() > 2 {
            return Err(fail("the key must be base64 of a 32, 48 or 64-byte secret plus its CRC"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for DhchapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DhchapKey(<redacted>)")
    }
}

impl fmt::Display for DhchapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::{DhchapKey, HostId, InterfaceName, Nqn, Portal, Transport};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn nqns_are_checked_character_by_character() {
        for good in [
            "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "nqn.1992-08.com.netapp:sn.1a2b:subsystem.vol_1",
        ] {
            assert_eq!(good.parse::<Nqn>().unwrap().as_str(), good);
        }
        for bad in ["", "iqn.2001-04.com.example", "nqn.x,hostnqn=evil", "nqn.x\nnqn=y", "nqn.x y", "nqn.a=b", "nqn.é"]
        {
            assert!(bad.parse::<Nqn>().is_err(), "{bad:?}");
        }
        assert!(format!("nqn.{}", "a".repeat(220)).parse::<Nqn>().is_err());
        let err = "nqn.x,traddr=1".parse::<Nqn>().unwrap_err();
        assert!(err.to_string().contains("',' is not allowed"), "{err}");
    }

    #[test]
    fn host_ids_are_uuids_and_never_zero() {
        assert_eq!(
            "1B4E28BA-2FA1-11D2-883F-0016D3CCA427".parse::<HostId>().unwrap().as_str(),
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
        );
        for bad in [
            "00000000-0000-0000-0000-000000000000",
            "1b4e28ba2fa111d2883f0016d3cca427",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca42g",
            "x,y",
        ] {
            assert!(bad.parse::<HostId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn portals_parse_v4_v6_ports_and_names() {
        let v4 = Portal::parse("10.0.0.1", 4420).unwrap();
        assert_eq!((v4.addr, v4.port), (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 4420));
        assert_eq!(Portal::parse(" 10.0.0.1:8009 ", 4420).unwrap().port, 8009);
        let v6 = Portal::parse("[fd00::1]:4421", 4420).unwrap();
        assert_eq!((v6.addr, v6.port), ("fd00::1".parse::<IpAddr>().unwrap(), 4421));
        assert_eq!(Portal::parse("fd00::2", 4420).unwrap().addr, IpAddr::V6("fd00::2".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(v6.to_string(), "[fd00::1]:4421");
        assert!(Portal::parse("localhost:4420", 1).is_err(), "parsing does no name lookup");
        assert!(Portal::resolve("localhost:4420", 1).unwrap().addr.is_loopback(), "resolving does");
        let list = super::portal_list(" 10.0.0.1, [fd00::1]:4421,,10.0.0.1:4420 ", 4420).unwrap();
        assert_eq!(list.len(), 2, "split outside brackets, empties and duplicates dropped: {list:?}");
        assert_eq!(super::portal_list("10.0.0.1,10.0.0.300", 4420).unwrap_err().value, "10.0.0.300");
        for bad in [
            "",
            ":4420",
            "10.0.0.1:0",
            "10.0.0.1:70000",
            "10.0.0.1:x",
            "[fd00::1",
            "[fd00::1]x",
            "10.0.0.1,nqn=x",
            "a b",
        ] {
            assert!(Portal::parse(bad, 4420).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interface_names_and_transports() {
        assert!("eth1".parse::<InterfaceName>().is_ok());
        for bad in ["", "a,b", "averyveryverylongname", "..", "eth0\n"] {
            assert!(bad.parse::<InterfaceName>().is_err(), "{bad:?}");
        }
        assert_eq!("rdma".parse::<Transport>().unwrap().module(), "nvme_rdma");
        assert!("fc".parse::<Transport>().is_err());
    }

    #[test]
    fn dhchap_keys_are_validated_and_never_shown() {
        let key = "DHHC-1:00:ia6zGodOr5SEG2U6ZlzCNX3CoGKlUcO+aHF2Ypw6lSGGKBUq:";
        let parsed: DhchapKey = key.parse().unwrap();
        assert_eq!(parsed.expose(), key);
        assert_eq!(format!("{parsed} {parsed:?}"), "<redacted> DhchapKey(<redacted>)");
        for bad in [
            "",
            "DHHC-1:04:abc:",
            "DHHC-1:00:short:",
            "DHHC-1:00:ia6zGodOr5SEG2U6ZlzCNX3CoGKlUcO+aHF2Ypw6lSGGKBUq",
            "DHHC-1:00:ia6zGodOr5SEG2U6,lzCNX3CoGKlUcO+aHF2Ypw6lSGGKBUq:",
        ] {
            let err = bad.parse::<DhchapKey>().unwrap_err();
            assert!(!err.to_string().contains("ia6z"), "the key leaked: {err}");
        }
    }
}
