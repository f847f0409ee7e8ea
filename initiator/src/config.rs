//! What the serving side gives the NVMe/TCP side: one namespace of one
//! subsystem, the portals to reach it, this host's identity and keys, and the
//! transport timers, with the kernel's names and meanings
//! (`nvme connect` options; `drivers/nvme/host/fabrics.c`).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid initiator configuration: {field}: {why}")]
pub struct ConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong and how to fix it.
    pub why: String,
}

fn invalid(field: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError { field, why: why.into() }
}

/// This host as the array sees it: the host's usual `/etc/nvme/hostnqn` and
/// `/etc/nvme/hostid`, so allow-lists need no change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    /// Host NQN (at most 223 bytes).
    pub nqn: String,
    /// Host ID, a UUID in its 16 binary bytes.
    pub id: [u8; 16],
}

impl HostIdentity {
    /// Builds an identity from the texts of `hostnqn` and `hostid`.
    ///
    /// # Errors
    /// [`ConfigError`] naming `host_nqn` or `host_id`.
    pub fn parse(nqn: &str, id: &str) -> Result<Self, ConfigError> {
        let nqn = nqn.trim();
        check_nqn("host_nqn", nqn)?;
        Ok(Self { nqn: nqn.to_owned(), id: parse_uuid("host_id", id.trim())? })
    }
}

/// A DH-HMAC-CHAP secret in its `DHHC-1:hh:base64:` text form, as nvme-cli
/// generates it and the kernel takes it. Never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct DhchapSecret(String);

impl DhchapSecret {
    /// Wraps a secret after checking its outer form.
    ///
    /// # Errors
    /// [`ConfigError`] naming `field` (the secret itself is never quoted).
    pub fn new(field: &'static str, text: &str) -> Result<Self, ConfigError> {
        let text = text.trim();
        let mut parts = text.split(':');
        let ok = parts.next() == Some("DHHC-1")
            && parts.next().is_some_and(|h| matches!(h, "00" | "01" | "02" | "03"))
            && parts.next().is_some_and(|b| !b.is_empty())
            && parts.next() == Some("")
            && parts.next().is_none();
        if !ok {
            return Err(invalid(
                field,
                "not a DHHC-1 secret (expected DHHC-1:<hh>:<base64>:, see nvme gen-dhchap-key)",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The secret's text, for the authentication code only.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DhchapSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DhchapSecret(<redacted>)")
    }
}

/// DH-HMAC-CHAP keys: the host's, and the controller's for bidirectional
/// authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKeys {
    /// The host key (`dhchap_secret`).
    pub host: DhchapSecret,
    /// The controller key (`dhchap_ctrl_secret`), if the host authenticates the controller too.
    pub ctrl: Option<DhchapSecret>,
}

/// Which namespace of the subsystem, and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceIdentity {
    /// Namespace ID.
    pub nsid: u32,
    /// The namespace's UUID (Identify descriptor), when known: a namespace that
    /// answers with another one is refused, never used.
    pub uuid: Option<[u8; 16]>,
}

/// How I/O is spread over the optimized paths (the kernel's `iopolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoPolicy {
    /// The first optimized path (the kernel's default).
    #[default]
    Numa,
    /// Each request to the next optimized path in turn.
    RoundRobin,
    /// The optimized path with the fewest commands in flight.
    QueueDepth,
}

impl IoPolicy {
    /// Parses the kernel's names: `numa`, `round-robin`, `queue-depth`.
    ///
    /// # Errors
    /// [`ConfigError`] naming `iopolicy`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        match text {
            "numa" => Ok(Self::Numa),
            "round-robin" => Ok(Self::RoundRobin),
            "queue-depth" => Ok(Self::QueueDepth),
            other => Err(invalid("iopolicy", format!("{other:?}: expected numa, round-robin or queue-depth"))),
        }
    }
}

/// Transport timers and sizes, with the kernel's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOptions {
    /// Keep-alive timeout sent at Connect; Keep Alive is sent at half of it.
    pub keep_alive_tmo: Duration,
    /// Time between reconnection attempts of a failed path.
    pub reconnect_delay: Duration,
    /// A path that has not come back after this long is given up; `None`: never (`-1`).
    pub ctrl_loss_tmo: Option<Duration>,
    /// With no live path, I/O waits this long before failing; `None`: until
    /// every path is given up (the kernel's `-1`, its default).
    pub fast_io_fail_tmo: Option<Duration>,
    /// I/O queues per path; `None`: one per host CPU, capped by the controller.
    pub nr_io_queues: Option<u16>,
    /// Commands in flight per I/O queue (bounded memory: one buffer each).
    pub queue_size: u16,
    /// CRC32C header digest.
    pub hdr_digest: bool,
    /// CRC32C data digest.
    pub data_digest: bool,
    /// Time to establish a TCP connection and finish one admin exchange.
    pub connect_timeout: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            keep_alive_tmo: Duration::from_secs(5),
            reconnect_delay: Duration::from_secs(10),
            ctrl_loss_tmo: Some(Duration::from_secs(600)),
            fast_io_fail_tmo: None,
            nr_io_queues: None,
            queue_size: 128,
            hdr_digest: false,
            data_digest: false,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything needed to open one multipath namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipathConfig {
    /// The NVM subsystem's NQN.
    pub subsystem_nqn: String,
    /// The namespace.
    pub namespace: NamespaceIdentity,
    /// Every NVMe/TCP portal of the subsystem; each becomes one path.
    pub portals: Vec<SocketAddr>,
    /// This host.
    pub host: HostIdentity,
    /// DH-HMAC-CHAP keys, when the array requires authentication.
    pub auth: Option<AuthKeys>,
    /// Path selection.
    pub iopolicy: IoPolicy,
    /// Timers, queues, digests.
    pub transport: TransportOptions,
}

impl MultipathConfig {
    /// Checks the configuration as a whole.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field at fault and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_nqn("subsystem_nqn", &self.subsystem_nqn)?;
        check_nqn("host_nqn", &self.host.nqn)?;
        if self.namespace.nsid == 0 || self.namespace.nsid == u32::MAX {
            return Err(invalid("nsid", "must be between 1 and 0xfffffffe"));
        }
        if self.portals.is_empty() {
            return Err(invalid("portals", "at least one portal is needed"));
        }
        for (i, p) in self.portals.iter().enumerate() {
            if self.portals[..i].contains(p) {
                return Err(invalid("portals", format!("{p} is listed twice")));
            }
        }
        let t = &self.transport;
        if t.keep_alive_tmo < Duration::from_secs(1) {
            return Err(invalid("keep_alive_tmo", "must be at least 1 s"));
        }
        if t.reconnect_delay < Duration::from_secs(1) {
            return Err(invalid("reconnect_delay", "must be at least 1 s"));
        }
        if t.nr_io_queues == Some(0) {
            return Err(invalid("nr_io_queues", "must be at least 1 (or unset for one per CPU)"));
        }
        if !(2..=1024).contains(&t.queue_size) {
            return Err(invalid("queue_size", "must be between 2 and 1024"));
        }
        Ok(())
    }
}

fn check_nqn(field: &'static str, nqn: &str) -> Result<(), ConfigError> {
    if nqn.is_empty() || nqn.len() > 223 || !nqn.starts_with("nqn.") || nqn.bytes().any(|b| b <= b' ' || b > b'~') {
        return Err(invalid(field, "expected an NQN (nqn.…, printable, at most 223 bytes)"));
    }
    Ok(())
}

/// Parses a dashed UUID into its 16 bytes.
///
/// # Errors
/// [`ConfigError`] naming `field`.
pub fn parse_uuid(field: &'static str, text: &str) -> Result<[u8; 16], ConfigError> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 || text.len() != 36 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid(field, format!("{text:?} is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")));
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok()).unwrap_or(0);
        out[i] = digit(pair[0]) << 4 | digit(pair[1]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{DhchapSecret, HostIdentity, IoPolicy, MultipathConfig, NamespaceIdentity, TransportOptions};

    fn config() -> MultipathConfig {
        MultipathConfig {
            subsystem_nqn: "nqn.2024-01.io.example:array".into(),
            namespace: NamespaceIdentity { nsid: 1, uuid: None },
            portals: vec!["10.0.0.1:4420".parse().unwrap(), "10.0.0.2:4420".parse().unwrap()],
            host: HostIdentity::parse(
                "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            )
            .unwrap(),
            auth: None,
            iopolicy: IoPolicy::default(),
            transport: TransportOptions::default(),
        }
    }

    #[test]
    fn a_sound_configuration_validates_and_bad_fields_are_named() {
        config().validate().unwrap();
        let mut c = config();
        c.portals.push(c.portals[0]);
        assert_eq!(c.validate().unwrap_err().field, "portals");
        let mut c = config();
        c.namespace.nsid = 0;
        assert_eq!(c.validate().unwrap_err().field, "nsid");
        let mut c = config();
        c.subsystem_nqn = "array".into();
        assert_eq!(c.validate().unwrap_err().field, "subsystem_nqn");
        assert_eq!(HostIdentity::parse("nqn.x", "nope").unwrap_err().field, "host_id");
        assert_eq!(HostIdentity::parse("nqn.x", "1b4e28ba-2fa1-11d2-883f-0016d3cca427").unwrap().id[0], 0x1b);
        assert_eq!(IoPolicy::parse("round-robin").unwrap(), IoPolicy::RoundRobin);
        assert_eq!(IoPolicy::parse("rr").unwrap_err().field, "iopolicy");
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        let s =
            DhchapSecret::new("dhchap_secret", "DHHC-1:00:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTIzNDU2:").unwrap();
        assert!(!format!("{s:?}").contains("c2Vj"));
        let e = DhchapSecret::new("dhchap_secret", "hunter2").unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }
}
